//! Flags: targeting rules on segments, their evaluation, and the 409 on deleting a segment a
//! rule uses (seed 002's error table).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{JsonApiReply, TestApp};

async fn flag_value(app: &TestApp, flag: &str, user: &str, attributes: serde_json::Value) -> (bool, String) {
    let reply = app
        .v1(
            Method::POST,
            &format!("/api/v1/flags/{flag}/evaluate"),
            Some(&json!({"userId": user, "attributes": attributes})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let attributes = &reply.body["data"]["attributes"];
    (attributes["value"].as_bool().unwrap(), attributes["reason"].as_str().unwrap().to_owned())
}

pub async fn flags_target_segments(app: &TestApp) {
    let premium = app
        .create_segment(json!({"key": "premium", "name": "Premium",
            "ruleContent": r#"{"conditions":[{"attribute":"plan","operator":"eq","value":"premium"}]}"#}))
        .await;
    app.create_segment(json!({"key": "blocked", "name": "Blocked",
        "ruleContent": r#"{"conditions":[{"attribute":"status","operator":"eq","value":"blocked"}]}"#}))
        .await;
    let body = json!({
        "key": "new-checkout",
        "name": "New checkout",
        "enabled": true,
        "defaultVariation": false,
        "rules": [{"segmentKey": "blocked", "variation": false}, {"segmentId": premium, "variation": true}]
    });
    let reply = app.v1(Method::POST, "/api/v1/flags", Some(&body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flag = reply.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.body["data"]["attributes"]["rules"][1],
        json!({"segmentId": premium, "segmentKey": "premium", "variation": true})
    );
    assert_eq!(reply.header("location"), Some(format!("/api/v1/flags/{flag}").as_str()));

    assert_eq!(flag_value(app, &flag, "u", json!({"plan": "premium"})).await, (true, "TARGETING_MATCH".into()));
    assert_eq!(
        flag_value(app, &flag, "u", json!({"plan": "premium", "status": "blocked"})).await,
        (false, "TARGETING_MATCH".into())
    );
    assert_eq!(
        flag_value(app, "new-checkout", "u", json!({"plan": "free"})).await,
        (false, "DEFAULT".into()),
        "by key too"
    );
    let reply = app
        .v1(Method::PATCH, &format!("/api/v1/flags/{flag}"), Some(&json!({"enabled": false, "defaultVariation": true})))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        flag_value(app, &flag, "u", json!({"plan": "premium", "status": "blocked"})).await,
        (true, "DISABLED".into())
    );

    let reply = app.v1(Method::GET, "/api/v1/flags", None).await;
    assert_eq!(reply.body["meta"]["totalItems"], 1);
    assert_eq!(reply.body["data"][0]["attributes"]["key"], "new-checkout");
    let reply = app.v1(Method::GET, &format!("/api/v1/flags/{flag}"), None).await;
    assert_eq!(reply.body["data"]["attributes"]["enabled"], false);
    assert_eq!(app.v1(Method::DELETE, &format!("/api/v1/flags/{flag}"), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.v1(Method::GET, &format!("/api/v1/flags/{flag}"), None).await.status, StatusCode::NOT_FOUND);
}

/// "Segmento em uso por targeting rules (ao excluir)": 409 CONFLICT on both route families,
/// until no rule uses the segment.
pub async fn deleting_a_segment_in_use_is_a_conflict(app: &TestApp) {
    let segment = app.create_segment(json!({"key": "in-use", "name": "In use"})).await;
    let reply = app
        .v1(
            Method::POST,
            "/api/v1/flags",
            Some(&json!({"key": "f", "enabled": true, "rules": [{"segmentId": segment, "variation": true}]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let flag = reply.body["data"]["id"].as_str().unwrap().to_owned();

    let reply = app.v1(Method::DELETE, &format!("/api/v1/segments/{segment}"), None).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::CONFLICT, "CONFLICT"));
    assert_eq!(reply.body["errors"][0]["status"], "409");
    let reply = app.delete("/segments/in-use").await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::CONFLICT, "CONFLICT"));
    assert_eq!(app.v1(Method::GET, &format!("/api/v1/segments/{segment}"), None).await.status, StatusCode::OK);

    let reply = app.v1(Method::PATCH, &format!("/api/v1/flags/{flag}"), Some(&json!({"rules": []}))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["attributes"]["rules"], json!([]));
    assert_eq!(
        app.v1(Method::DELETE, &format!("/api/v1/segments/{segment}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    // A deleted segment cannot be targeted: the body conflicts with the store's state.
    let reply = app
        .v1(Method::PATCH, &format!("/api/v1/flags/{flag}"), Some(&json!({"rules": [{"segmentId": segment}]})))
        .await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::CONFLICT, "CONFLICT"));
}

pub async fn flag_validation_and_permissions(app: &TestApp) {
    for body in [
        json!({}),
        json!({"key": "bad key"}),
        json!({"key": "k", "enabled": "yes"}),
        json!({"key": "k", "rules": {}}),
        json!({"key": "k", "rules": [{"variation": true}]}),
    ] {
        let reply = app.v1(Method::POST, "/api/v1/flags", Some(&body)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "VALIDATION", &body.to_string());
    }
    // A rule naming no live segment conflicts with the store's state: 409, pointing at it.
    for body in [
        json!({"key": "k", "rules": [{"segmentKey": "missing"}]}),
        json!({"key": "k", "rules": [{"segmentId": "550e8400-e29b-41d4-a716-446655440001"}]}),
    ] {
        let reply = app.v1(Method::POST, "/api/v1/flags", Some(&body)).await;
        assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::CONFLICT, "CONFLICT"), "{body}: {}", reply.text);
        assert_eq!(reply.body["errors"][0]["source"]["pointer"], "/rules/0/segmentId");
    }
    assert_eq!(app.v1(Method::POST, "/api/v1/flags", Some(&json!({"key": "k"}))).await.status, StatusCode::CREATED);
    let reply = app.v1(Method::POST, "/api/v1/flags", Some(&json!({"key": "k"}))).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::CONFLICT, "CONFLICT"));
    let reply = app.v1(Method::POST, "/api/v1/flags/nope/evaluate", Some(&json!({"userId": "u"}))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    use segments::auth::{Permission, Permissions, mint_key};
    let segments_only =
        mint_key(app.state.db(), "s", Permissions::from_list(&[Permission::SegmentsRead, Permission::SegmentsCreate]))
            .await
            .unwrap()
            .token;
    let flags_reader =
        mint_key(app.state.db(), "f", Permissions::from_list(&[Permission::FlagsRead])).await.unwrap().token;
    assert_eq!(app.send(Method::GET, "/api/v1/flags", None, Some(&segments_only)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.send(Method::GET, "/api/v1/flags", None, Some(&flags_reader)).await.status, StatusCode::OK);
    let evaluate = json!({"userId": "u"});
    assert_eq!(
        app.send(Method::POST, "/api/v1/flags/k/evaluate", Some(&evaluate), Some(&flags_reader)).await.status,
        StatusCode::OK
    );
    let reply = app.send(Method::POST, "/api/v1/flags", Some(&json!({"key": "x"})), Some(&flags_reader)).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    assert_eq!(
        app.send(Method::DELETE, "/api/v1/flags/k", None, Some(&flags_reader)).await.status,
        StatusCode::FORBIDDEN
    );
}
