//! Seed 000: slugs, memberships with TTL, the CSV history, percentage segments.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, HOUR, START, TestApp, open_store, serve_on};

/// Every example of seed 000, in the seed's order and with its responses.
pub async fn seed_000_examples(app: &TestApp) {
    // Create new segment: 201, Location, the segment.
    let reply = app.create_slug("AVITO_VOICE_MESSAGES").await;
    assert_eq!(reply.body, json!({"id": 1, "slug": "AVITO_VOICE_MESSAGES", "is_deleted": false}));
    let reply = app.create_slug("AVITO_RED_BUTTON").await;
    assert_eq!(reply.body, json!({"id": 2, "slug": "AVITO_RED_BUTTON", "is_deleted": false}));
    assert_eq!(reply.header("location"), Some(app.url("/segments/AVITO_RED_BUTTON").as_str()));
    assert!(reply.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(reply.header("x-served-by"), Some("segments"));

    // Get all existing segments.
    let reply = app.get("/segments").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!([{"id":1,"slug":"AVITO_VOICE_MESSAGES","is_deleted":false},{"id":2,"slug":"AVITO_RED_BUTTON","is_deleted":false}])
    );

    // Get segment by slug.
    let reply = app.get("/segments/AVITO_VOICE_MESSAGES").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"id":1,"slug":"AVITO_VOICE_MESSAGES","is_deleted":false}));

    // The CSV example: RED_BUTTON added at 17:36:28, then the seed's change at 17:38:11.
    app.create_slug("AVITO_RESEARCH_AMOGUS").await;
    app.create_slug("AVITO_CHINESE_MARKET").await;
    let reply = app.post("/segments/users", &json!({"id": 73234, "add": [{"slug": "AVITO_RED_BUTTON"}]})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"segments": [{"slug": "AVITO_RED_BUTTON"}]}));
    app.set_now(START + 103_000); // 2023-08-30T17:38:11Z

    // Change user segments.
    let reply = app
        .post(
            "/segments/users",
            &json!({"id":73234,"add":[{"slug":"AVITO_RESEARCH_AMOGUS","expired":"2025-01-02T15:04:06Z"},{"slug":"AVITO_CHINESE_MARKET"}],"remove":[{"slug":"AVITO_RED_BUTTON"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"segments":[{"slug":"AVITO_RESEARCH_AMOGUS"},{"slug":"AVITO_CHINESE_MARKET"}]}));

    // Get user segments.
    let reply = app.get("/segments/users/73234").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!([{"slug":"AVITO_RESEARCH_AMOGUS"},{"slug":"AVITO_CHINESE_MARKET"}]));

    // Get user history: the link, then the CSV behind it.
    let reply = app.get("/segments/users/73234/history?from=2023-08-30&to=2023-08-31").await;
    assert_eq!(reply.status, StatusCode::OK);
    let link = reply.body["link"].as_str().unwrap();
    let unsigned = app.url("/history/73234/2023-08-30/2023-08-31/history.csv");
    assert!(link.starts_with(&format!("{unsigned}?expires=")), "the seed's link, signed: {link}");
    assert_eq!(reply.body.as_object().unwrap().len(), 1, "{}", reply.text);
    let csv = app.history_csv("73234", "2023-08-30", "2023-08-31").await;
    assert_eq!(
        csv,
        "73234,AVITO_RED_BUTTON,add,2023-08-30T17:36:28Z\n\
         73234,AVITO_RED_BUTTON,remove,2023-08-30T17:38:11Z\n\
         73234,AVITO_RESEARCH_AMOGUS,add,2023-08-30T17:38:11Z\n\
         73234,AVITO_CHINESE_MARKET,add,2023-08-30T17:38:11Z\n"
    );
    // Another range holds none of it.
    assert_eq!(app.history_csv("73234", "2023-08-31", "2023-09-30").await, "");

    // Delete segment: 204, then listed as deleted, and gone from its members.
    let reply = app.delete("/segments/AVITO_VOICE_MESSAGES").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.text.is_empty());
    let reply = app.get("/segments").await;
    assert_eq!(reply.body[0], json!({"id":1,"slug":"AVITO_VOICE_MESSAGES","is_deleted":true}));
    // By slug, a deleted segment reads as the seed's store reads it: deleted.
    let reply = app.get("/segments/AVITO_VOICE_MESSAGES").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"id":1,"slug":"AVITO_VOICE_MESSAGES","is_deleted":true}));
    // Deleting it again changes nothing.
    assert_eq!(app.delete("/segments/AVITO_VOICE_MESSAGES").await.status, StatusCode::NO_CONTENT);
    // Its slug taken again, the slug names the live segment.
    let reply = app.create_slug("AVITO_VOICE_MESSAGES").await;
    let id = reply.body["id"].clone();
    assert_ne!(id, 1);
    let reply = app.get("/segments/AVITO_VOICE_MESSAGES").await;
    assert_eq!(reply.body, json!({"id": id, "slug": "AVITO_VOICE_MESSAGES", "is_deleted": false}));
}

/// Every refusal is a 4xx in the chatmesh error body, and a refused change changes nothing.
pub async fn legacy_errors_change_nothing(app: &TestApp) {
    app.create_slug("LIVE").await;
    app.create_slug("GONE").await;
    assert_eq!(app.delete("/segments/GONE").await.status, StatusCode::NO_CONTENT);
    let reply = app.post("/segments/users", &json!({"id": 7, "add": [{"slug": "LIVE"}]})).await;
    assert_eq!(reply.status, StatusCode::OK);
    let history_before = app.history_csv("7", "2023-08-01", "2023-09-01").await;

    let cases = [
        (json!({"id": 7, "add": [{"slug": "NOPE"}], "remove": [{"slug": "LIVE"}]}), StatusCode::NOT_FOUND),
        (json!({"id": 7, "add": [{"slug": "GONE"}], "remove": [{"slug": "LIVE"}]}), StatusCode::NOT_FOUND),
        (json!({"id": 7, "remove": [{"slug": "LIVE"}, {"slug": "NOPE"}]}), StatusCode::NOT_FOUND),
        (json!({"id": 7, "add": [{"slug": "LIVE", "expired": "tomorrow"}]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"id": 1.5, "add": []}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"id": "", "add": []}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"add": [{"slug": "LIVE"}]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"id": 7, "add": [{"expired": "2030-01-01T00:00:00Z"}]}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in cases {
        let reply = app.post("/segments/users", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert!(!reply.error_code().is_empty(), "{}", reply.text);
        assert_eq!(app.user_slugs("7").await, ["LIVE"], "{body} changed the user's segments");
    }
    assert_eq!(app.history_csv("7", "2023-08-01", "2023-09-01").await, history_before);

    // A slug both removed and added ends up added (removes apply first); an expiry already
    // past ends the membership at once.
    let both = json!({"id": 7, "add": [{"slug": "LIVE"}], "remove": [{"slug": "LIVE"}]});
    assert_eq!(app.post("/segments/users", &both).await.body, json!({"segments": [{"slug": "LIVE"}]}));
    let twice = json!({"id": 7, "add": [{"slug": "LIVE", "expired": "2020-01-01T00:00:00Z"}, {"slug": "LIVE"}]});
    assert_eq!(
        app.post("/segments/users", &twice).await.body,
        json!({"segments": [{"slug": "LIVE"}]}),
        "the last entry wins"
    );
    let past = json!({"id": 7, "add": [{"slug": "LIVE", "expired": "2020-01-01T00:00:00Z"}]});
    assert_eq!(app.post("/segments/users", &past).await.body, json!({"segments": []}));
    assert!(app.user_slugs("7").await.is_empty());

    let reply = app.get("/segments/NOPE").await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    assert_eq!(app.delete("/segments/NOPE").await.status, StatusCode::NOT_FOUND);
    let reply = app.post("/segments", &json!({"slug": "LIVE"})).await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::CONFLICT, "CONFLICT"));
    // A deleted slug can be created again: a new segment, the old one stays listed.
    let reply = app.post("/segments", &json!({"slug": "GONE"})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["is_deleted"], false);
    assert_eq!(app.get("/segments").await.body.as_array().unwrap().len(), 3);
    for body in [
        json!({"slug": "has space"}),
        json!({"slug": ""}),
        json!({"slug": "users"}),
        json!({"slug": "x".repeat(201)}),
        json!({"slug": 5}),
        json!({}),
        json!({"slug": "P", "percent": 101}),
        json!({"slug": "P", "percent": -1}),
    ] {
        let reply = app.post("/segments", &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", reply.text);
        assert_eq!(reply.error_code(), "VALIDATION_FAILED");
    }
    let reply = app.send_raw(Method::POST, "/segments", "application/json", "{\"slug\":", app.admin_bearer()).await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::BAD_REQUEST, "BAD_REQUEST"));
    let reply = app.send_raw(Method::POST, "/segments", "text/plain", "{\"slug\":\"T\"}", app.admin_bearer()).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for query in ["from=2023-13-01&to=2023-12-01", "from=yesterday"] {
        let reply = app.get(&format!("/segments/users/7/history?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
    }
    // A range whose end is before its start is empty, not an error.
    assert_eq!(app.get("/segments/users/7/history?from=2023-09-02&to=2023-09-01").await.status, StatusCode::OK);
    assert_eq!(app.history_csv("7", "2023-09-02", "2023-09-01").await, "");
    assert_eq!(app.get("/history/7/2023-01-01/nope/history.csv").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/segments/users").await.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A membership with `expired` leaves the user's segments the moment it expires (no sweep
/// needed), and the history shows its expiry as a `remove` at the expiry time.
pub async fn ttl_expiry_without_sleeping(app: &TestApp) {
    app.create_slug("TRIAL").await;
    app.create_slug("FOREVER").await;
    let expiry = START + HOUR;
    let body = json!({"id": "u-1", "add": [{"slug": "TRIAL", "expired": helpers_at(expiry)}, {"slug": "FOREVER"}]});
    let reply = app.post("/segments/users", &body).await;
    assert_eq!(reply.body, json!({"segments": [{"slug": "TRIAL"}, {"slug": "FOREVER"}]}));

    app.set_now(expiry - 1);
    assert_eq!(app.user_slugs("u-1").await, ["TRIAL", "FOREVER"]);
    app.set_now(expiry);
    assert_eq!(app.user_slugs("u-1").await, ["FOREVER"], "expired at once, not at the next sweep");
    assert!(!app.evaluate("u-1", json!({})).await.contains(&"TRIAL".to_owned()));

    let csv = app.history_csv("u-1", "2023-08-30", "2023-08-30").await;
    assert_eq!(
        csv,
        format!(
            "u-1,TRIAL,add,{start}\nu-1,FOREVER,add,{start}\nu-1,TRIAL,remove,{end}\n",
            start = helpers_at(START),
            end = helpers_at(expiry)
        )
    );
    // The sweep finds nothing left to write, and reading again writes nothing twice.
    assert_eq!(app.state.sweep_expired().await.unwrap(), 0);
    assert_eq!(app.history_csv("u-1", "2023-08-30", "2023-08-30").await, csv);

    // The sweep writes expiries of users nobody asked about.
    app.post(
        "/segments/users",
        &json!({"id": "u-2", "add": [{"slug": "TRIAL", "expired": helpers_at(expiry + HOUR)}]}),
    )
    .await;
    app.set_now(expiry + 2 * HOUR);
    assert_eq!(app.state.sweep_expired().await.unwrap(), 1);
    assert!(
        app.history_csv("u-2", "2023-08-30", "2023-08-30")
            .await
            .ends_with(&format!("u-2,TRIAL,remove,{}\n", helpers_at(expiry + HOUR)))
    );
}

/// Re-adding refreshes the TTL (no new `add` line); re-adding after expiry is a new membership.
pub async fn ttl_refresh_and_expired_re_add(app: &TestApp) {
    app.create_slug("PROMO").await;
    let add = |expiry: i64| json!({"id": 42, "add": [{"slug": "PROMO", "expired": helpers_at(expiry)}]});
    app.post("/segments/users", &add(START + HOUR)).await;
    app.set_now(START + HOUR / 2);
    let reply = app.post("/segments/users", &add(START + 3 * HOUR)).await;
    assert_eq!(reply.body, json!({"segments": [{"slug": "PROMO"}]}));
    app.set_now(START + 2 * HOUR);
    assert_eq!(app.user_slugs("42").await, ["PROMO"], "the refreshed TTL holds past the first expiry");
    app.set_now(START + 3 * HOUR);
    assert!(app.user_slugs("42").await.is_empty());
    // Re-added after it expired: the expiry is written first, then a new add.
    app.set_now(START + 4 * HOUR);
    app.post("/segments/users", &json!({"id": 42, "add": [{"slug": "PROMO"}]})).await;
    // Re-adding without `expired` makes it permanent.
    app.set_now(START + 5 * HOUR);
    app.post("/segments/users", &add(START + 6 * HOUR)).await;
    app.post("/segments/users", &json!({"id": 42, "add": [{"slug": "PROMO"}]})).await;
    app.set_now(START + 10 * HOUR);
    assert_eq!(app.user_slugs("42").await, ["PROMO"]);
    let csv = app.history_csv("42", "2023-08-30", "2023-08-31").await;
    assert_eq!(
        csv,
        format!(
            "42,PROMO,add,{}\n42,PROMO,remove,{}\n42,PROMO,add,{}\n",
            helpers_at(START),
            helpers_at(START + 3 * HOUR),
            helpers_at(START + 4 * HOUR)
        )
    );
}

pub async fn deleting_a_segment_ends_its_memberships(app: &TestApp) {
    app.create_slug("OLD").await;
    app.create_slug("KEEP").await;
    app.post("/segments/users", &json!({"id": 5, "add": [{"slug": "OLD"}, {"slug": "KEEP"}]})).await;
    app.post("/segments/users", &json!({"id": 6, "add": [{"slug": "OLD", "expired": helpers_at(START + HOUR)}]})).await;
    app.set_now(START + 2 * HOUR);
    assert_eq!(app.delete("/segments/OLD").await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.user_slugs("5").await, ["KEEP"]);
    let csv = app.history_csv("5", "2023-08-30", "2023-08-30").await;
    assert!(csv.ends_with(&format!("5,OLD,remove,{}\n", helpers_at(START + 2 * HOUR))), "{csv}");
    // A membership that had expired before the delete is removed at its expiry, not later.
    let csv = app.history_csv("6", "2023-08-30", "2023-08-30").await;
    assert!(csv.ends_with(&format!("6,OLD,remove,{}\n", helpers_at(START + HOUR))), "{csv}");
    // Removing a deleted segment from a user is allowed and changes nothing.
    let reply = app.post("/segments/users", &json!({"id": 5, "remove": [{"slug": "OLD"}]})).await;
    assert_eq!(reply.body, json!({"segments": [{"slug": "KEEP"}]}));
}

/// `percent` puts that share of all users, present and future, in the segment: the same
/// users every time, as murmur3("{slug}:{userId}") % 100 + 1 <= percent says.
pub async fn percent_assignment_is_stable_and_proportional(app: &TestApp) {
    let reply = app.post("/segments", &json!({"slug": "ROLLOUT_30", "percent": 30})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["percent"], 30);
    app.post("/segments", &json!({"slug": "NOBODY", "percent": 0})).await;
    app.post("/segments", &json!({"slug": "EVERYBODY", "percent": 100})).await;
    let mut inside = 0;
    for user in 0..300 {
        let id = user.to_string();
        let slugs = app.user_slugs(&id).await;
        let expected = segments::percent::bucket("ROLLOUT_30", &id) <= 30;
        assert_eq!(slugs.contains(&"ROLLOUT_30".to_owned()), expected, "user {id}");
        assert!(slugs.contains(&"EVERYBODY".to_owned()) && !slugs.contains(&"NOBODY".to_owned()));
        inside += usize::from(expected);
        if user % 50 == 0 {
            assert_eq!(app.user_slugs(&id).await, slugs, "stable");
        }
    }
    assert!((60..=120).contains(&inside), "{inside} of 300 users in a 30% segment");
    // Evaluation gives the percentage as the reason, with the bucket.
    let user = (0..).map(|u: u32| u.to_string()).find(|u| segments::percent::bucket("ROLLOUT_30", u) <= 30).unwrap();
    let reply =
        app.v1(Method::POST, "/api/v1/segments/evaluate", Some(&json!({"userId": user, "attributes": {}}))).await;
    let rollout =
        reply.body["data"].as_array().unwrap().iter().find(|s| s["attributes"]["key"] == "ROLLOUT_30").cloned();
    let reason = &rollout.expect("in the rollout")["attributes"]["reason"];
    assert_eq!(reason["kind"], "PERCENTAGE");
    assert_eq!(reason["percent"], 30);
    // A user explicitly added is in for that reason, whatever the bucket.
    app.post("/segments/users", &json!({"id": "late", "add": [{"slug": "NOBODY"}]})).await;
    assert_eq!(app.user_slugs("late").await[0], "NOBODY");
}

/// Unleash's published vectors, through the API: normalizedValue("123", "gr1") = 73 and
/// normalizedValue("999", "groupX") = 25.
pub async fn unleash_vectors_through_http(app: &TestApp) {
    app.post("/segments", &json!({"slug": "gr1", "percent": 73})).await;
    app.post("/segments", &json!({"slug": "groupX", "percent": 24})).await;
    assert_eq!(app.user_slugs("123").await, ["gr1"], "bucket 73 is inside 73%");
    assert!(!app.user_slugs("999").await.contains(&"groupX".to_owned()), "bucket 25 is outside 24%");
    let reply = app.v1(Method::POST, "/api/v1/segments/evaluate", Some(&json!({"userId": "123"}))).await;
    assert_eq!(reply.body["data"][0]["attributes"]["reason"]["bucket"], 73);
}

pub async fn bad_input_is_never_a_500(app: &TestApp) {
    app.create_slug("S").await;
    let long = "u".repeat(192);
    let paths = [
        format!("/segments/users/{long}"),
        format!("/segments/users/{long}/history"),
        "/segments/users/%F0%9F%98%80".to_owned(),
        "/segments/users/a%2Fb/history?from=2023-01-01&to=2023-01-02".to_owned(),
        "/segments/users/x/history?from=%ZZ".to_owned(),
        "/segments/%00".to_owned(),
        "/history/x/0000-00-00/2023-01-01/history.csv".to_owned(),
    ];
    for path in &paths {
        let reply = app.get(path).await;
        assert!(!reply.status.is_server_error(), "{path}: {}", reply.status);
    }
    for body in ["[]", "null", "{\"id\":{},\"add\":{}}", "{\"id\":1,\"add\":[1]}", "\"x\""] {
        let reply = app.send_raw(Method::POST, "/segments/users", "application/json", body, app.admin_bearer()).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.status);
    }
    // A user id with characters that need quoting or encoding survives the round trip.
    let odd = "a,b \"c\"/d";
    let reply = app.post("/segments/users", &json!({"id": odd, "add": [{"slug": "S"}]})).await;
    assert_eq!(reply.status, StatusCode::OK);
    let encoded = "a%2Cb%20%22c%22%2Fd";
    assert_eq!(app.user_slugs(encoded).await, ["S"]);
    let csv = app.history_csv(encoded, "2023-08-30", "2023-08-30").await;
    assert_eq!(csv, format!("\"a,b \"\"c\"\"/d\",S,add,{}\n", helpers_at(START)));
}

/// Lists longer than one SQL statement takes are read in chunks, still all or nothing; lists
/// over the cap are a 422 that says the cap, never a 503.
pub async fn long_change_lists(app: &TestApp) {
    let slugs: Vec<String> = (0..1000).map(|i| format!("S{i}")).collect();
    for slug in &slugs {
        app.create_slug(slug).await;
    }
    let items = |slugs: &[String]| slugs.iter().map(|slug| json!({"slug": slug})).collect::<Vec<_>>();

    // One slug unknown, far past the first chunk: 404 naming it, and nothing changed.
    let mut with_unknown = slugs.clone();
    with_unknown[750] = "NOPE".to_owned();
    let reply = app.post("/segments/users", &json!({"id": 9, "add": items(&with_unknown)})).await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"), "{}", reply.text);
    assert_eq!(reply.body["error"]["message"], "no live segment with slug NOPE; nothing changed");
    assert!(app.user_slugs("9").await.is_empty());

    // 1000 adds, in order, then 1000 removes.
    let reply = app.post("/segments/users", &json!({"id": 9, "add": items(&slugs)})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"segments": items(&slugs)}));
    let reply = app.post("/segments/users", &json!({"id": 9, "remove": items(&slugs)})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"segments": []}));
    assert_eq!(app.history_csv("9", "2023-08-30", "2023-08-30").await.lines().count(), 2000);

    // Many unknown slugs: the message names the first ten and counts the rest.
    let unknown: Vec<String> = (0..1000).map(|i| format!("NOPE{i}")).collect();
    let reply = app.post("/segments/users", &json!({"id": 9, "remove": items(&unknown)})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("no segment with slug NOPE0, NOPE1,") && message.ends_with("and 990 more; nothing changed")
    );

    // Over the cap (40,000 items is well under the 1 MB body limit): 422 with the cap.
    let many: Vec<String> = (0..40_000).map(|i| format!("S{}", i % 1000)).collect();
    for field in ["add", "remove"] {
        let reply = app.post("/segments/users", &json!({"id": 9, field: items(&many)})).await;
        assert_eq!((reply.status, reply.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"));
        assert_eq!(
            reply.body["error"]["message"],
            format!("{field} holds 40000 items; at most 1000 are taken in one request"),
        );
    }
    let reply = app.post("/segments/users", &json!({"id": 9, "add": items(&many[..1001])})).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    assert!(app.user_slugs("9").await.is_empty());
}

/// A path segment that is not UTF-8 once percent-decoded is a JSON 400 in the chatmesh error
/// body, on every legacy route that takes one.
pub async fn invalid_utf8_paths_are_json_errors(app: &TestApp) {
    let cases = [
        (Method::GET, "/segments/%FF", "slug"),
        (Method::DELETE, "/segments/%FF", "slug"),
        (Method::GET, "/segments/users/%FF", "id"),
        (Method::GET, "/segments/users/%FF/history?from=2023-08-30&to=2023-08-31", "id"),
        (Method::GET, "/history/%FF/2023-08-30/2023-08-31/history.csv", "id"),
        (Method::GET, "/history/7/2023-08-30/%C3%28/history.csv", "to"),
    ];
    for (method, path, parameter) in cases {
        let reply = app.send(method.clone(), path, None, app.admin_bearer()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", reply.text);
        assert!(reply.header("content-type").unwrap_or("").starts_with("application/json"), "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"error": {
                "code": "BAD_REQUEST",
                "message": format!("the {parameter} in the path is not valid UTF-8 once percent-decoded"),
            }}),
            "{method} {path}"
        );
    }
}

/// A history line keeps the slug it had when it happened: renaming a key (PATCH
/// /api/v1/segments/:id) leaves the past alone, and an expiry that passed under the old key is
/// written under it.
pub async fn history_keeps_the_slug_of_its_time(app: &TestApp) {
    let sale = app.create_segment(json!({"key": "spring-sale", "name": "Sale"})).await;
    let promo = app.create_segment(json!({"key": "promo", "name": "Promo"})).await;
    let add =
        json!({"id": 77, "add": [{"slug": "spring-sale"}, {"slug": "promo", "expired": helpers_at(START + HOUR)}]});
    assert_eq!(app.post("/segments/users", &add).await.status, StatusCode::OK);

    // Both renamed after promo expired (an expiry nobody has written to the history yet).
    app.set_now(START + 2 * HOUR);
    for (id, key) in [(&sale, "summer-sale"), (&promo, "promo-2")] {
        let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{id}"), Some(&json!({"key": key}))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    app.set_now(START + 3 * HOUR);
    let reply = app.post("/segments/users", &json!({"id": 77, "remove": [{"slug": "summer-sale"}]})).await;
    assert_eq!(reply.body, json!({"segments": []}));
    // A delete writes its removes under the key the segment has then.
    app.post("/segments/users", &json!({"id": 77, "add": [{"slug": "promo-2"}]})).await;
    app.set_now(START + 4 * HOUR);
    assert_eq!(app.delete("/segments/promo-2").await.status, StatusCode::NO_CONTENT);

    let csv = app.history_csv("77", "2023-08-30", "2023-08-30").await;
    let line =
        |slug: &str, action: &str, hours: i64| format!("77,{slug},{action},{}\n", helpers_at(START + hours * HOUR));
    assert_eq!(
        csv,
        [
            line("spring-sale", "add", 0),
            line("promo", "add", 0),
            line("promo", "remove", 1),
            line("summer-sale", "remove", 3),
            line("promo-2", "add", 3),
            line("promo-2", "remove", 4),
        ]
        .concat()
    );
}

/// History written before lines kept their slug takes, on upgrade, the key its segment has.
pub async fn history_from_before_the_slug_column(backend: Backend) {
    let test = "history_from_before_the_slug_column";
    let Some(store) = open_store(backend, test).await else { return };
    store.db.migrate("segments", &segments::store::MIGRATIONS[..1]).await.expect("first migration");
    let pool = store.db.pool();
    sqlx::query(
        "INSERT INTO segments (uuid, seg_key, live_key, name, rule_type, version, deleted, created_at, updated_at) \
         VALUES ('550e8400-e29b-41d4-a716-446655440001', 'OLD_TIMER', 'OLD_TIMER', 'OLD_TIMER', 'SIMPLE', 1, 0, ?, ?)",
    )
    .bind(START)
    .bind(START)
    .execute(pool)
    .await
    .expect("segment");
    for (action, at) in [("add", START), ("remove", START + HOUR)] {
        sqlx::query("INSERT INTO segment_history (user_id, segment_id, action, at) VALUES ('5', 1, ?, ?)")
            .bind(action)
            .bind(at)
            .execute(pool)
            .await
            .expect("history line");
    }
    let app = serve_on(store, Some("upgrade-admin".to_owned())).await;
    assert_eq!(
        app.history_csv("5", "2023-08-30", "2023-08-30").await,
        format!("5,OLD_TIMER,add,{}\n5,OLD_TIMER,remove,{}\n", helpers_at(START), helpers_at(START + HOUR))
    );
    // New lines go on beside them.
    app.set_now(START + 2 * HOUR);
    let reply = app.post("/segments/users", &json!({"id": 5, "add": [{"slug": "OLD_TIMER"}]})).await;
    assert_eq!(reply.body, json!({"segments": [{"slug": "OLD_TIMER"}]}));
    assert!(app.history_csv("5", "2023-08-30", "2023-08-30").await.ends_with(&format!(
        "5,OLD_TIMER,remove,{}\n5,OLD_TIMER,add,{}\n",
        helpers_at(START + HOUR),
        helpers_at(START + 2 * HOUR)
    )));
}

fn helpers_at(millis: i64) -> String {
    crate::helpers::at(millis)
}
