//! Seed 002: `/api/v1/segments`, its errors, tokens and permissions, SIMPLE rules, evaluation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{JsonApiReply, START, TestApp, at, spawn_with};

const PREMIUM_RULE: &str =
    r#"{"operator":"AND","conditions":[{"attribute":"plan","operator":"eq","value":"premium"}]}"#;
const PREMIUM_V2_RULE: &str = r#"{"operator":"OR","conditions":[{"attribute":"plan","operator":"eq","value":"premium"},{"attribute":"plan","operator":"eq","value":"enterprise"}]}"#;

/// Every request example of seed 002 with its documented response.
pub async fn seed_002_examples(app: &TestApp) {
    // Criar Segmento.
    let body = json!({
        "key": "premium-users",
        "name": "Premium Users",
        "description": "Usuários com plano premium",
        "ruleType": "SIMPLE",
        "ruleContent": PREMIUM_RULE
    });
    let reply = app.v1(Method::POST, "/api/v1/segments", Some(&body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(reply.header("content-type").unwrap().starts_with("application/vnd.api+json"));
    let id = reply.body["data"]["id"].as_str().unwrap().to_owned();
    assert!(segments::api::is_uuid(&id));
    assert_eq!(reply.header("location"), Some(format!("/api/v1/segments/{id}").as_str()));
    let created = json!({
        "type": "segments",
        "id": id,
        "attributes": {
            "key": "premium-users",
            "name": "Premium Users",
            "description": "Usuários com plano premium",
            "ruleType": "SIMPLE",
            "ruleContent": PREMIUM_RULE,
            "createdAt": at(START),
            "updatedAt": at(START)
        },
        "meta": {"version": 1},
        "links": {"self": format!("/api/v1/segments/{id}")}
    });
    assert_eq!(reply.body["data"], created);

    // Listar Segmentos.
    let beta = app
        .create_segment(json!({
            "key": "beta-testers",
            "name": "Beta Testers",
            "ruleType": "SIMPLE",
            "ruleContent": r#"{"conditions":[{"attribute":"userId","operator":"in","value":["user-1","user-2","user-3"]}]}"#
        }))
        .await;
    let reply = app.v1(Method::GET, "/api/v1/segments", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body["data"],
        json!([
            {"type": "segments", "id": id, "attributes": {"key": "premium-users", "name": "Premium Users", "ruleType": "SIMPLE"}, "links": {"self": format!("/api/v1/segments/{id}")}},
            {"type": "segments", "id": beta, "attributes": {"key": "beta-testers", "name": "Beta Testers", "ruleType": "SIMPLE"}, "links": {"self": format!("/api/v1/segments/{beta}")}}
        ])
    );
    assert_eq!(reply.body["meta"], json!({"totalItems": 2, "totalPages": 1, "currentPage": 1}));
    assert_eq!(reply.body["links"]["self"], "/api/v1/segments?page[number]=1&page[size]=20");

    // Obter Segmento.
    let reply = app.v1(Method::GET, &format!("/api/v1/segments/{id}"), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"], created);

    // Atualizar Segmento: the update invalidates membership at once.
    assert_eq!(app.evaluate("u9", json!({"plan": "enterprise"})).await, Vec::<String>::new());
    app.advance(30 * 60 * 1000);
    let patch = json!({"name": "Premium Users v2", "ruleContent": PREMIUM_V2_RULE});
    let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{id}"), Some(&patch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let attributes = &reply.body["data"]["attributes"];
    assert_eq!(attributes["key"], "premium-users");
    assert_eq!(attributes["name"], "Premium Users v2");
    assert_eq!(attributes["ruleContent"], PREMIUM_V2_RULE);
    assert_eq!(attributes["description"], "Usuários com plano premium");
    assert_eq!(attributes["createdAt"], at(START));
    assert_eq!(attributes["updatedAt"], at(START + 30 * 60 * 1000));
    assert_eq!(reply.body["data"]["meta"]["version"], 2);
    assert_eq!(app.evaluate("u9", json!({"plan": "enterprise"})).await, ["premium-users"]);
    let reply = app.v1(Method::GET, &format!("/api/v1/segments/{id}"), None).await;
    assert_eq!(reply.body["data"]["attributes"]["name"], "Premium Users v2");

    // Excluir Segmento: 204 without a body, then 404.
    let reply = app.v1(Method::DELETE, &format!("/api/v1/segments/{id}"), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.text.is_empty());
    let reply = app.v1(Method::GET, &format!("/api/v1/segments/{id}"), None).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    assert_eq!(app.evaluate("u9", json!({"plan": "enterprise"})).await, Vec::<String>::new());
    // The legacy list shows every segment of the one store, the deleted one included.
    let legacy = app.get("/segments").await;
    assert_eq!(legacy.body[0]["slug"], "premium-users");
    assert_eq!(legacy.body[0]["is_deleted"], true);
}

/// "Exemplos de Segmentos": each example is accepted and means what it says.
pub async fn seed_002_rule_examples(app: &TestApp) {
    for example in [
        json!({"key": "brazil-users", "name": "Brazil Users", "ruleType": "SIMPLE",
               "ruleContent": r#"{"conditions":[{"attribute":"country","operator":"eq","value":"BR"}]}"#}),
        json!({"key": "high-score-users", "name": "High Score Users", "ruleType": "SIMPLE",
               "ruleContent": r#"{"conditions":[{"attribute":"creditScore","operator":"gte","value":700}]}"#}),
        json!({"key": "premium-active", "name": "Premium and Active", "ruleType": "SIMPLE",
               "ruleContent": r#"{"operator":"AND","conditions":[{"attribute":"plan","operator":"eq","value":"premium"},{"attribute":"status","operator":"eq","value":"active"}]}"#}),
        json!({"key": "vip-users", "name": "VIP Users", "ruleType": "SIMPLE",
               "ruleContent": r#"{"operator":"OR","conditions":[{"attribute":"plan","operator":"eq","value":"enterprise"},{"attribute":"totalSpent","operator":"gte","value":10000}]}"#}),
        json!({"key": "beta-testers", "name": "Beta Testers", "ruleType": "SIMPLE",
               "ruleContent": r#"{"conditions":[{"attribute":"userId","operator":"in","value":["user-1","user-2","user-3"]}]}"#}),
    ] {
        app.create_segment(example).await;
    }
    #[cfg(feature = "dmn")]
    app.create_segment(
        json!({"key": "complex-eligibility", "name": "Complex Eligibility", "ruleType": "DMN",
               "ruleContent": crate::helpers::dmn_table("eligibility", "FIRST", &[("creditScore", "number")], &[("", "boolean")],
                   &[(&[">= 650"], &["true"]), (&["-"], &["false"])])})
    )
    .await;
    let cases: [(&str, Value, &[&str]); 6] = [
        ("user-1", json!({"country": "BR"}), &["brazil-users", "beta-testers"]),
        ("user-9", json!({"creditScore": 720}), &["high-score-users", "complex-eligibility"]),
        ("user-9", json!({"creditScore": 660}), &["complex-eligibility"]),
        ("user-9", json!({"plan": "premium", "status": "active"}), &["premium-active"]),
        ("user-9", json!({"plan": "premium", "status": "blocked", "totalSpent": 10000}), &["vip-users"]),
        ("user-3", json!({"plan": "enterprise"}), &["vip-users", "beta-testers"]),
    ];
    for (user, attributes, expected) in cases {
        let expected: Vec<&str> =
            expected.iter().copied().filter(|key| cfg!(feature = "dmn") || *key != "complex-eligibility").collect();
        assert_eq!(app.evaluate(user, attributes.clone()).await, expected, "{user} {attributes}");
    }
}

/// 401 without a valid token, 403 without the permission; each permission opens its routes.
pub async fn authentication_and_permissions(app: &TestApp) {
    let id = app.create_segment(json!({"key": "k", "name": "K"})).await;
    let path = format!("/api/v1/segments/{id}");
    let body = json!({"key": "k2", "name": "K2"});
    for token in [None, Some("wrong"), Some(""), Some("cmsk_0000")] {
        let reply = app.send(Method::GET, "/api/v1/segments", None, token).await;
        assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{token:?}");
        assert!(reply.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert_eq!(reply.body["errors"][0]["status"], "401");
    }
    // Basic auth is not a bearer token.
    let basic = app.http.get(app.url("/api/v1/segments")).basic_auth("admin", Some(&app.admin)).send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    // A bad body is not looked at before the token.
    let reply = app.send_raw(Method::POST, "/api/v1/segments", "application/json", "{", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    use segments::auth::{Permission, Permissions, mint_key};
    let mint = |permissions: &[Permission]| {
        let db = app.state.db().clone();
        let permissions = Permissions::from_list(permissions);
        async move { mint_key(&db, "test", permissions).await.unwrap().token }
    };
    let reader = mint(&[Permission::SegmentsRead]).await;
    let creator = mint(&[Permission::SegmentsCreate]).await;
    let updater = mint(&[Permission::SegmentsUpdate]).await;
    let deleter = mint(&[Permission::SegmentsDelete]).await;

    let routes: [(Method, &str, Option<&Value>, &str); 6] = [
        (Method::GET, "/api/v1/segments", None, "SEGMENTS_READ"),
        (Method::GET, &path, None, "SEGMENTS_READ"),
        (Method::POST, "/api/v1/segments/evaluate", Some(&json!({"userId": "u"})), "SEGMENTS_READ"),
        (Method::POST, "/api/v1/segments", Some(&body), "SEGMENTS_CREATE"),
        (Method::PATCH, &path, Some(&json!({"name": "New"})), "SEGMENTS_UPDATE"),
        (Method::DELETE, &path, None, "SEGMENTS_DELETE"),
    ];
    for (method, route, body, needed) in routes {
        for (token, holds) in [
            (&reader, "SEGMENTS_READ"),
            (&creator, "SEGMENTS_CREATE"),
            (&updater, "SEGMENTS_UPDATE"),
            (&deleter, "SEGMENTS_DELETE"),
        ] {
            let reply = app.send(method.clone(), route, body, Some(token)).await;
            if holds == needed {
                assert!(reply.status.is_success(), "{method} {route} with {holds}: {}", reply.text);
            } else {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {route} with {holds}");
                assert_eq!(reply.jsonapi_code(), "FORBIDDEN");
                assert!(reply.body["errors"][0]["detail"].as_str().unwrap().contains(needed));
            }
        }
    }
    // The legacy routes take the same keys (their own scenarios are in `access`).
    assert_eq!(app.send(Method::GET, "/segments", None, Some(&reader)).await.status, StatusCode::OK);
    assert_eq!(app.send(Method::GET, "/segments", None, Some(&creator)).await.status, StatusCode::FORBIDDEN);
}

/// Without an admin token every /api/v1 request is a 401; minted keys still work.
pub async fn minted_keys_without_an_admin_token(app: &TestApp) {
    let Some(app) = spawn_with(app.backend, "minted_keys_without_an_admin_token", None).await else { return };
    for token in [None, Some(""), Some("admin")] {
        let reply = app.send(Method::GET, "/api/v1/segments", None, token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let key = segments::auth::mint_key(app.state.db(), "ops", segments::auth::Permissions::all()).await.unwrap();
    let reply =
        app.send(Method::POST, "/api/v1/segments", Some(&json!({"key": "a", "name": "A"})), Some(&key.token)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(app.send(Method::GET, "/api/v1/segments", None, Some(&key.token)).await.status, StatusCode::OK);
    // The legacy routes too: closed to everyone without a key.
    assert_eq!(app.get("/segments").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.send(Method::GET, "/segments", None, Some(&key.token)).await.status, StatusCode::OK);
}

/// The error table of seed 002: VALIDATION 400, NOT_FOUND 404, CONFLICT 409 (key taken; the
/// in-use case is in the flags scenarios), each in a JSON:API `errors` array.
pub async fn validation_errors(app: &TestApp) {
    let invalid: [(Value, &[&str]); 13] = [
        (json!({}), &["/key", "/name"]),
        (json!({"key": "has space", "name": "N"}), &["/key"]),
        (json!({"key": "k", "name": "   "}), &["/name"]),
        (json!({"key": "k", "name": "n".repeat(201)}), &["/name"]),
        (json!({"key": "k", "name": "N", "description": "d".repeat(1001)}), &["/description"]),
        (json!({"key": 5, "name": ["N"]}), &["/key", "/name"]),
        (json!({"key": "k", "name": "N", "ruleType": "FANCY"}), &["/ruleType"]),
        (json!({"key": "k", "name": "N", "ruleContent": "{not json"}), &["/ruleContent"]),
        (
            json!({"key": "k", "name": "N", "ruleContent": r#"{"conditions":[{"attribute":"a","operator":"like","value":1}]}"#}),
            &["/ruleContent"],
        ),
        (
            json!({"key": "k", "name": "N", "ruleContent": r#"{"conditions":[{"attribute":"age","operator":"gt","value":"18"}]}"#}),
            &["/ruleContent"],
        ),
        (json!({"key": "k", "name": "N", "ruleType": "DMN"}), &["/ruleContent"]),
        (json!({"key": "k", "name": "N", "decisionId": "550e8400-e29b-41d4-a716-446655440099"}), &["/decisionId"]),
        (json!({"data": {"type": "segments", "attributes": {"key": "k k", "name": "N"}}}), &["/data/attributes/key"]),
    ];
    for (body, pointers) in invalid {
        let reply = app.v1(Method::POST, "/api/v1/segments", Some(&body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        let errors = reply.body["errors"].as_array().unwrap_or_else(|| panic!("{}", reply.text));
        assert!(errors.iter().all(|e| e["code"] == "VALIDATION" && e["status"] == "400"), "{}", reply.text);
        let seen: Vec<&str> = errors.iter().filter_map(|e| e["source"]["pointer"].as_str()).collect();
        assert_eq!(seen, pointers, "{body}");
    }
    let reply = app
        .v1(
            Method::POST,
            "/api/v1/segments",
            Some(&json!({"key": "k", "name": "N", "ruleContent": "{\"conditions\":[]}"})),
        )
        .await;
    assert!(reply.body["errors"][0]["detail"].as_str().unwrap().contains("must not be empty"), "{}", reply.text);

    // The JSON:API form of a document is accepted as well as the seed's flat one.
    let reply = app
        .v1(
            Method::POST,
            "/api/v1/segments",
            Some(&json!({"data": {"type": "segments", "attributes": {"key": "k", "name": "N"}}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["data"]["id"].as_str().unwrap().to_owned();
    let reply = app.v1(Method::POST, "/api/v1/segments", Some(&json!({"key": "k", "name": "Again"}))).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::CONFLICT, "CONFLICT"));
    assert_eq!(reply.body["errors"][0]["status"], "409");
    let other = app.create_segment(json!({"key": "other", "name": "O"})).await;
    let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{other}"), Some(&json!({"key": "k"}))).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{other}"), Some(&json!({"name": null}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{other}"), Some(&json!({"ruleType": "DMN"}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a DMN segment needs a model");
    let reply = app
        .v1(Method::PATCH, &format!("/api/v1/segments/{other}"), Some(&json!({"description": null, "key": "other-2"})))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["attributes"]["key"], "other-2");

    for path in
        ["/api/v1/segments/550e8400-e29b-41d4-a716-446655440001".to_owned(), "/api/v1/segments/not-a-uuid".to_owned()]
    {
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let body = json!({"name": "x"});
            let reply = app.v1(method.clone(), &path, (method == Method::PATCH).then_some(&body)).await;
            assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"), "{method} {path}");
        }
    }
    let post = |content_type: &'static str, body: &'static str| {
        app.send_raw(Method::POST, "/api/v1/segments", content_type, body, Some(&app.admin))
    };
    let reply = post("application/json", "{\"key\":").await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::BAD_REQUEST, "VALIDATION"));
    let reply = post("application/json", "[1,2]").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = post("text/plain", "{}").await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"));
    let reply = post("application/vnd.api+json", "{\"key\":\"vnd\",\"name\":\"V\"}").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = app.v1(Method::POST, "/api/v1/segments/evaluate", Some(&json!({"attributes": {}}))).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::BAD_REQUEST, "VALIDATION"));
    let reply =
        app.v1(Method::POST, "/api/v1/segments/evaluate", Some(&json!({"userId": "u", "attributes": [1]}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let _ = id;
}

pub async fn pagination(app: &TestApp) {
    for i in 0..45 {
        app.create_segment(json!({"key": format!("seg-{i:02}"), "name": format!("Segment {i}")})).await;
    }
    let page = |query: &'static str| app.v1(Method::GET, query, None);
    let reply = page("/api/v1/segments").await;
    assert_eq!(reply.body["data"].as_array().unwrap().len(), 20);
    assert_eq!(reply.body["meta"], json!({"totalItems": 45, "totalPages": 3, "currentPage": 1}));
    assert_eq!(reply.body["links"]["next"], "/api/v1/segments?page[number]=2&page[size]=20");
    assert!(reply.body["links"].get("prev").is_none());
    let reply = page("/api/v1/segments?page[number]=3&page[size]=20").await;
    let keys: Vec<&str> =
        reply.body["data"].as_array().unwrap().iter().map(|d| d["attributes"]["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["seg-40", "seg-41", "seg-42", "seg-43", "seg-44"]);
    assert_eq!(reply.body["links"]["prev"], "/api/v1/segments?page[number]=2&page[size]=20");
    assert!(reply.body["links"].get("next").is_none());
    // Brackets may come percent-encoded, as browsers send them.
    let reply = page("/api/v1/segments?page%5Bnumber%5D=2&page%5Bsize%5D=100").await;
    assert_eq!(reply.body["data"].as_array().unwrap().len(), 0);
    assert_eq!(reply.body["meta"], json!({"totalItems": 45, "totalPages": 1, "currentPage": 2}));
    let reply = page("/api/v1/segments?page[size]=100").await;
    assert_eq!(reply.body["data"].as_array().unwrap().len(), 45);
    for query in [
        "/api/v1/segments?page[size]=101",
        "/api/v1/segments?page[size]=0",
        "/api/v1/segments?page[number]=0",
        "/api/v1/segments?page[number]=-1",
        "/api/v1/segments?page[number]=two",
    ] {
        let reply = page(query).await;
        assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::BAD_REQUEST, "VALIDATION"), "{query}");
        assert!(reply.body["errors"][0]["source"]["parameter"].as_str().unwrap().starts_with("page["));
    }
}

/// Every operator of the seed's table, each with a matching, a non-matching and a
/// type-mismatched value (a mismatch is a non-match, never an error).
pub async fn every_simple_operator(app: &TestApp) {
    let cases: [(&str, Value, Value, Value, Value); 11] = [
        ("eq", json!("premium"), json!("premium"), json!("free"), json!(1)),
        ("neq", json!("blocked"), json!("active"), json!("blocked"), json!(true)),
        ("gt", json!(18), json!(19), json!(18), json!("19")),
        ("gte", json!(700), json!(700), json!(699.5), json!("700")),
        ("lt", json!(3), json!(2), json!(3), json!([2])),
        ("lte", json!(0), json!(-10.5), json!(0.01), json!(null)),
        ("in", json!(["BR", "US"]), json!("US"), json!("DE"), json!(1)),
        ("notIn", json!(["blocked", "pending"]), json!("active"), json!("pending"), json!(5)),
        ("contains", json!("@gmail"), json!("ana@gmail.com"), json!("ana@yahoo.com"), json!({"a": "@gmail"})),
        ("startsWith", json!("John"), json!("Johnny"), json!("Mary John"), json!(42)),
        ("endsWith", json!(".com"), json!("a@b.com"), json!("a@b.org"), json!(false)),
    ];
    for (operator, value, _, _, _) in &cases {
        let rule = json!({"conditions": [{"attribute": "field", "operator": operator, "value": value}]});
        app.create_segment(json!({"key": format!("op-{operator}"), "name": operator, "ruleContent": rule.to_string()}))
            .await;
    }
    for (operator, _, matching, not_matching, mismatched) in cases {
        let key = format!("op-{operator}");
        let member = |segments: Vec<String>| segments.contains(&key);
        assert!(member(app.evaluate("u", json!({"field": matching})).await), "{operator} {matching}");
        assert!(!member(app.evaluate("u", json!({"field": not_matching})).await), "{operator} {not_matching}");
        assert!(!member(app.evaluate("u", json!({"field": mismatched})).await), "{operator} {mismatched}");
        assert!(!member(app.evaluate("u", json!({})).await), "{operator} without the attribute");
    }
    // contains on a list attribute looks for an element; numbers compare as numbers.
    app.create_segment(json!({"key": "tagged", "name": "T",
        "ruleContent": r#"{"conditions":[{"attribute":"tags","operator":"contains","value":"beta"}]}"#}))
        .await;
    assert!(app.evaluate("u", json!({"tags": ["alpha", "beta"]})).await.contains(&"tagged".to_owned()));
    assert!(!app.evaluate("u", json!({"tags": ["alpha"]})).await.contains(&"tagged".to_owned()));
    assert!(app.evaluate("u", json!({"field": 19.0})).await.contains(&"op-gt".to_owned()));
}

pub async fn userid_groups_and_missing_attributes(app: &TestApp) {
    // A AND (B OR C), with the special userId attribute.
    let rule = json!({"operator": "AND", "conditions": [
        {"attribute": "userId", "operator": "startsWith", "value": "emp-"},
        {"operator": "OR", "conditions": [
            {"attribute": "country", "operator": "eq", "value": "BR"},
            {"operator": "AND", "conditions": [
                {"attribute": "age", "operator": "gte", "value": 18},
                {"attribute": "age", "operator": "lt", "value": 65}
            ]}
        ]}
    ]});
    app.create_segment(json!({"key": "nested", "name": "Nested", "ruleContent": rule.to_string()})).await;
    // The rule may be sent as an object too.
    app.create_segment(json!({"key": "as-object", "name": "Obj", "ruleContent": {"conditions": [{"attribute": "userId", "operator": "eq", "value": "emp-1"}]}})).await;
    let nested = |user: &'static str, attributes: Value| async move {
        app.evaluate(user, attributes).await.contains(&"nested".to_owned())
    };
    assert!(nested("emp-1", json!({"country": "BR"})).await);
    assert!(nested("emp-1", json!({"country": "DE", "age": 30})).await);
    assert!(!nested("emp-1", json!({"country": "DE", "age": 70})).await);
    assert!(!nested("cust-1", json!({"country": "BR"})).await, "userId comes from the context");
    assert!(!nested("cust-1", json!({"country": "BR", "userId": "emp-1"})).await, "an attribute cannot fake it");
    assert!(!nested("emp-1", json!({})).await);
    assert_eq!(app.evaluate("emp-1", json!({})).await, ["as-object"]);
    let reply = app.v1(Method::GET, "/api/v1/segments", None).await;
    let stored = reply.body["data"][1]["id"].as_str().unwrap().to_owned();
    let reply = app.v1(Method::GET, &format!("/api/v1/segments/{stored}"), None).await;
    assert!(reply.body["data"]["attributes"]["ruleContent"].is_string());
}

/// Evaluation names the reason of each segment; a PATCH changes the answer at once.
pub async fn evaluation_reasons_and_patch_applies_at_once(app: &TestApp) {
    let rule = app
        .create_segment(json!({"key": "adults", "name": "Adults",
            "ruleContent": r#"{"conditions":[{"attribute":"age","operator":"gte","value":18}]}"#}))
        .await;
    app.create_segment(json!({"key": "manual", "name": "Manual"})).await;
    app.create_segment(json!({"key": "everyone", "name": "Everyone", "percent": 100})).await;
    let expiry = START + 3_600_000;
    let reply =
        app.post("/segments/users", &json!({"id": "u-7", "add": [{"slug": "manual", "expired": at(expiry)}]})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let body = json!({"userId": "u-7", "attributes": {"age": 30}});
    let reply = app.v1(Method::POST, "/api/v1/segments/evaluate", Some(&body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reasons: Vec<(String, Value)> = reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["attributes"]["key"].as_str().unwrap().to_owned(), s["attributes"]["reason"].clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("adults".to_owned(), json!({"kind": "RULE", "ruleType": "SIMPLE"})),
            ("manual".to_owned(), json!({"kind": "EXPLICIT", "expiresAt": at(expiry)})),
            (
                "everyone".to_owned(),
                json!({"kind": "PERCENTAGE", "percent": 100, "bucket": segments::percent::bucket("everyone", "u-7")})
            ),
        ]
    );
    assert_eq!(reply.body["meta"], json!({"userId": "u-7", "evaluatedSegments": 3, "matchedSegments": 3}));

    let patch = json!({"ruleContent": r#"{"conditions":[{"attribute":"age","operator":"gte","value":40}]}"#});
    let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{rule}"), Some(&patch)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app.evaluate("u-7", json!({"age": 30})).await, ["manual", "everyone"]);
    let patch = json!({"percent": 0, "ruleContent": null});
    app.v1(Method::PATCH, &format!("/api/v1/segments/{rule}"), Some(&patch)).await;
    app.set_now(expiry);
    assert_eq!(app.evaluate("u-7", json!({"age": 50})).await, ["everyone"], "rule cleared, membership expired");
    // Legacy slugs and v1 keys are one namespace: the v1 segment is seen by the legacy routes.
    assert_eq!(app.get("/segments/adults").await.body["slug"], "adults");
}

/// A path segment that is not UTF-8 once percent-decoded is a JSON:API 400 `VALIDATION` naming
/// the parameter, on every `/api/v1` route that takes one; the token is still checked first.
pub async fn invalid_utf8_paths_are_json_api_errors(app: &TestApp) {
    let patch = json!({"name": "x"});
    let evaluation = json!({"userId": "u1"});
    let cases = [
        (Method::GET, "/api/v1/segments/%FF", None),
        (Method::PATCH, "/api/v1/segments/%FF", Some(&patch)),
        (Method::DELETE, "/api/v1/segments/%FF", None),
        (Method::GET, "/api/v1/flags/%FF", None),
        (Method::PATCH, "/api/v1/flags/%FF", Some(&patch)),
        (Method::DELETE, "/api/v1/flags/%FF", None),
        (Method::POST, "/api/v1/flags/%FF/evaluate", Some(&evaluation)),
        (Method::GET, "/api/v1/decisions/%FF", None),
    ];
    for (method, path, body) in cases {
        let reply = app.v1(method.clone(), path, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", reply.text);
        assert!(reply.header("content-type").unwrap_or("").starts_with("application/vnd.api+json"));
        assert_eq!(
            reply.body,
            json!({"errors": [{
                "status": "400",
                "code": "VALIDATION",
                "detail": "the id in the path is not valid UTF-8 once percent-decoded",
                "source": {"parameter": "id"},
            }]}),
            "{method} {path}"
        );
        let reply = app.send(method.clone(), path, body, None).await;
        assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{method} {path}");
    }
}

/// `users` is the legacy route `/segments/users`: neither create nor a key change may take it,
/// or a legacy client could never read or delete that segment.
pub async fn the_reserved_key_is_refused(app: &TestApp) {
    let detail = "key \"users\" is reserved: /segments/users is a legacy route";
    let expected = |pointer: &str| json!({"errors": [{"status": "400", "code": "VALIDATION", "detail": detail, "source": {"pointer": pointer}}]});
    let reply = app.v1(Method::POST, "/api/v1/segments", Some(&json!({"key": "users", "name": "Users"}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.body, expected("/key"));
    let document = json!({"data": {"type": "segments", "attributes": {"key": "users", "name": "Users"}}});
    let reply = app.v1(Method::POST, "/api/v1/segments", Some(&document)).await;
    assert_eq!((reply.status, &reply.body), (StatusCode::BAD_REQUEST, &expected("/data/attributes/key")));

    let id = app.create_segment(json!({"key": "members", "name": "Members"})).await;
    let path = format!("/api/v1/segments/{id}");
    let reply = app.v1(Method::PATCH, &path, Some(&json!({"key": "users"}))).await;
    assert_eq!((reply.status, &reply.body), (StatusCode::BAD_REQUEST, &expected("/key")));
    assert_eq!(app.v1(Method::GET, &path, None).await.body["data"]["attributes"]["key"], "members");
    let reply = app.get("/segments").await;
    assert_eq!(reply.body, json!([{"id": 1, "slug": "members", "is_deleted": false}]), "no segment took the key");
}

/// A patch may leave the name out but not blank it, as a create may not.
pub async fn a_patch_cannot_blank_the_name(app: &TestApp) {
    let id = app.create_segment(json!({"key": "named", "name": "Named"})).await;
    let path = format!("/api/v1/segments/{id}");
    for (body, pointer) in [
        (json!({"name": ""}), "/name"),
        (json!({"name": "   "}), "/name"),
        (json!({"name": "\t\n", "description": "d"}), "/name"),
        (json!({"data": {"type": "segments", "attributes": {"name": " "}}}), "/data/attributes/name"),
    ] {
        let reply = app.v1(Method::PATCH, &path, Some(&body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!(
            reply.body,
            json!({"errors": [{
                "status": "400",
                "code": "VALIDATION",
                "detail": "name must not be blank",
                "source": {"pointer": pointer},
            }]}),
            "{body}"
        );
    }
    let reply = app.v1(Method::GET, &path, None).await;
    assert_eq!(reply.body["data"]["attributes"]["name"], "Named");
    assert_eq!(reply.body["data"]["attributes"]["description"], Value::Null);
    assert_eq!(reply.body["data"]["meta"]["version"], 1, "a refused patch changes nothing");
    let reply = app.v1(Method::PATCH, &path, Some(&json!({"name": " Renamed "}))).await;
    assert_eq!((reply.status, &reply.body["data"]["attributes"]["name"]), (StatusCode::OK, &json!(" Renamed ")));
}

/// Under `/api/v1` an unknown path is a JSON:API 404 and a method a route does not take a
/// JSON:API 405 with `Allow`; the legacy routes keep the chatmesh error body for both.
pub async fn v1_fallbacks_are_json_api(app: &TestApp) {
    let not_found = json!({"errors": [{"status": "404", "code": "NOT_FOUND", "detail": "no such route"}]});
    let body = json!({"key": "k", "name": "N"});
    for (method, path) in [
        (Method::GET, "/api/v1"),
        (Method::GET, "/api/v1/"),
        (Method::GET, "/api/v1/nothing"),
        (Method::GET, "/api/v1/segments/x/y"),
        (Method::POST, "/api/v1/nothing"),
        (Method::DELETE, "/api/v1/flags/x/y/z"),
    ] {
        let reply = app.v1(method.clone(), path, (method == Method::POST).then_some(&body)).await;
        assert_eq!((reply.status, &reply.body), (StatusCode::NOT_FOUND, &not_found), "{method} {path}: {}", reply.text);
        assert!(reply.header("content-type").unwrap_or("").starts_with("application/vnd.api+json"));
        assert_eq!(reply.header("x-served-by"), Some("segments"));
    }
    let not_allowed = json!({"errors": [{"status": "405", "code": "METHOD_NOT_ALLOWED", "detail": "method not allowed on this route"}]});
    for (method, path, allow) in [
        (Method::PUT, "/api/v1/segments/x", "GET,HEAD,PATCH,DELETE"),
        (Method::DELETE, "/api/v1/segments", "GET,HEAD,POST"),
        (Method::GET, "/api/v1/segments/evaluate", "POST"),
        (Method::PUT, "/api/v1/flags/x", "GET,HEAD,PATCH,DELETE"),
        (Method::GET, "/api/v1/decisions", "POST"),
    ] {
        let reply = app.v1(method.clone(), path, None).await;
        assert_eq!(
            (reply.status, &reply.body),
            (StatusCode::METHOD_NOT_ALLOWED, &not_allowed),
            "{method} {path}: {}",
            reply.text
        );
        assert!(reply.header("content-type").unwrap_or("").starts_with("application/vnd.api+json"));
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    // The legacy routes and everything else outside /api/v1 keep the chatmesh error body.
    let reply = app.get("/nothing").await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"), "{}", reply.text);
    let reply = app.send(Method::PUT, "/segments", None, None).await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"));
    assert_eq!(reply.header("allow"), Some("GET,HEAD,POST"));
}
