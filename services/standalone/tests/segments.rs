//! The segments routes inside the standalone server: served from the shared store, named in
//! `X-Served-By`, the legacy routes and `/api/v1` behind the admin token from the config.

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_routes_are_merged() {
    let server =
        chatmesh::testing::spawn(|config| config.segments.admin_token = Some("standalone-admin".to_owned())).await;
    let base = &server.url;
    let http = reqwest::Client::new();

    let anonymous = http.post(format!("{base}/segments")).json(&json!({"slug": "AVITO_RED_BUTTON"})).send().await;
    assert_eq!(anonymous.unwrap().status(), 401);
    let created = http
        .post(format!("{base}/segments"))
        .bearer_auth("standalone-admin")
        .json(&json!({"slug": "AVITO_RED_BUTTON"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-served-by"], "segments");
    assert_eq!(created.headers()["location"].to_str().unwrap(), format!("{base}/segments/AVITO_RED_BUTTON"));

    let anonymous = http.get(format!("{base}/api/v1/segments")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let listed = http.get(format!("{base}/api/v1/segments")).bearer_auth("standalone-admin").send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let body: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(body["data"][0]["attributes"]["key"], "AVITO_RED_BUTTON");
    drop(server);
}
