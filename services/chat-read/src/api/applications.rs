//! `/api/applications` and `/api/applications/:token`.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use chat::model::{self, ApplicationBody, ApplicationPatch, ApplicationPath, ApplicationView};
use shared::ApiError;
use shared::http::{JsonBody, PathParams, QueryParams};
use shared::openapi::ErrorResponses;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, Edit, PageParams, application_not_found, page_answer};
use crate::ChatRead;
use crate::store::{self, Page};

pub fn routes() -> OpenApiRouter<ChatRead> {
    let one = routes!(show_application, replace_application, update_application);
    OpenApiRouter::default().routes(routes!(list_applications, create_application)).routes(one)
}

/// 128 random bits, written like a UUID so clients that expect one keep working.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Create an application
#[utoipa::path(
    post, path = "/api/applications", tag = "applications", request_body = ApplicationBody,
    responses(
        (status = 201, description = "Create an application", body = ApplicationView, links(
            ("CreateChat" = (operation_id = "create_chat", parameters(("token" = "$response.body#/application_token")))),
            ("ListChats" = (operation_id = "list_chats", parameters(("token" = "$response.body#/application_token")))),
            ("ShowApplication" = (operation_id = "show_application", parameters(("token" = "$response.body#/application_token")))),
        )),
        ErrorResponses,
    )
)]
async fn create_application(
    State(state): State<ChatRead>,
    JsonBody(body): JsonBody<ApplicationBody>,
) -> Result<(StatusCode, Json<ApplicationView>), ApiError> {
    let name = model::required_text("application_name", &body.application_name, model::MAX_NAME_CHARS)?;
    let view = store::insert_application(&state.db, &new_token(), &name, shared::now_millis()).await?;
    tracing::info!(application_token = %view.application_token, "application created");
    Ok((StatusCode::CREATED, Json(view)))
}

/// List every application with its token (the admin token only)
///
/// An operator's call: the admin token as bearer. An application's own token is no answer
/// here, and the refusal names no token.
#[utoipa::path(
    get, path = "/api/applications", tag = "applications", security(("adminToken" = [])),
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 100 (default 50)", minimum = 1, maximum = 100),
        ("after" = Option<String>, Query, description = "Keyset cursor: the token of the application the page starts after (empty: no cursor; an unknown token is 404)", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"),
        ("before" = Option<String>, Query, description = "Keyset cursor: the token of the application the page ends before (with after: the applications between the two; empty: no cursor; an unknown token is 404)", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"),
    ),
    responses((status = 200, description = "List applications", body = Vec<ApplicationView>), ErrorResponses)
)]
async fn list_applications(
    _: Admin,
    State(state): State<ChatRead>,
    OriginalUri(uri): OriginalUri,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<(HeaderMap, Json<Vec<ApplicationView>>), ApiError> {
    let page = Page {
        limit: params.limit()? + 1,
        after: cursor(&state, &params.after).await?,
        before: cursor(&state, &params.before).await?,
    };
    let rows = store::list_applications(&state.db, page).await?;
    Ok(page_answer(uri.path(), &params, &page, rows, |a| a.application_token.clone()))
}

/// Show an application
#[utoipa::path(
    get, path = "/api/applications/{token}", tag = "applications", params(ApplicationPath),
    responses((status = 200, description = "Show an application", body = ApplicationView), ErrorResponses)
)]
async fn show_application(
    State(state): State<ChatRead>,
    PathParams(ApplicationPath { token }): PathParams<ApplicationPath>,
) -> Result<Json<ApplicationView>, ApiError> {
    let (_, view) = store::get_application(&state.db, &token).await?.ok_or_else(application_not_found)?;
    Ok(Json(view))
}

/// Rename an application
#[utoipa::path(
    put, path = "/api/applications/{token}", tag = "applications", params(ApplicationPath), request_body = ApplicationBody,
    responses((status = 200, description = "Rename an application", body = ApplicationView), ErrorResponses)
)]
async fn replace_application(edit: Edit<ApplicationPath, ApplicationBody>) -> Result<Json<ApplicationView>, ApiError> {
    rename(&edit.state, &edit.path.token, Some(edit.body.application_name)).await
}

/// Update an application
#[utoipa::path(
    patch, path = "/api/applications/{token}", tag = "applications", params(ApplicationPath), request_body = ApplicationPatch,
    responses((status = 200, description = "Update an application", body = ApplicationView), ErrorResponses)
)]
async fn update_application(edit: Edit<ApplicationPath, ApplicationPatch>) -> Result<Json<ApplicationView>, ApiError> {
    rename(&edit.state, &edit.path.token, edit.body.application_name).await
}

async fn rename(state: &ChatRead, token: &str, name: Option<String>) -> Result<Json<ApplicationView>, ApiError> {
    let (id, _) = store::get_application(&state.db, token).await?.ok_or_else(application_not_found)?;
    if let Some(name) = name {
        let name = model::required_text("application_name", &name, model::MAX_NAME_CHARS)?;
        store::rename_application(&state.db, id, &name, shared::now_millis()).await?;
    }
    let (_, view) = store::get_application(&state.db, token).await?.ok_or_else(application_not_found)?;
    Ok(Json(view))
}

/// Whether `text` has the shape of an application token (8-4-4-4-12 hex digits).
fn is_token_shaped(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The internal id behind a cursor token; clients only ever see tokens.
async fn cursor(state: &ChatRead, raw: &Option<String>) -> Result<Option<i64>, ApiError> {
    match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(token) if !is_token_shaped(token) => Err(ApiError::bad_request("the cursor is not an application token")),
        Some(token) => match store::get_application(&state.db, token).await? {
            Some((id, _)) => Ok(Some(id)),
            // A well-formed cursor naming an application that does not exist, like an unknown
            // token in a path.
            None => Err(ApiError::not_found("the cursor names no application")),
        },
    }
}
