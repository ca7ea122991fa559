//! `segments mint-key`: the key it prints (once) opens /api/v1 with the permissions chosen.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

pub async fn mint_key_subcommand(app: &TestApp) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_segments"));
    command
        .args(["mint-key", "--name", "ci reader", "--permission", "SEGMENTS_READ,FLAGS_READ"])
        .arg("--data-dir")
        .arg(&app.data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("CHATMESH_CONFIG");
    if let Some(url) = &app.database_url {
        command.env("DATABASE_URL", url);
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run segments mint-key");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("cmsk_") && token.len() == 69, "{token}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("SEGMENTS_READ,FLAGS_READ"));

    assert_eq!(app.send(Method::GET, "/api/v1/segments", None, Some(&token)).await.status, StatusCode::OK);
    assert_eq!(app.send(Method::GET, "/api/v1/flags", None, Some(&token)).await.status, StatusCode::OK);
    let reply = app.send(Method::POST, "/api/v1/segments", Some(&json!({"key": "k", "name": "K"})), Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Only the hash is stored: the token itself appears nowhere in the store.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT key_hash FROM segment_api_keys").fetch_all(app.state.db().pool()).await.unwrap();
    assert_eq!(stored, [segments::auth::hash_token(&token)]);

    // An unknown permission is refused and mints nothing.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_segments"));
    command.args(["mint-key", "--permission", "EVERYTHING"]).arg("--data-dir").arg(&app.data_dir);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    assert!(!output.status.success());
}
