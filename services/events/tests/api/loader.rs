//! `events load FILE`: the `.jsonl` loader, run as the binary against the test's store.

use std::io::Write;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// `events` with the test app's store and queue.
fn events_command(app: &TestApp) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_events"));
    command
        .env("CHATMESH_DATA_DIR", app.dir.path())
        .env("CHATMESH_NAMESPACE", &app.config.serve.backends.namespace)
        .env("RUST_LOG", "warn");
    match &app.config.serve.backends.database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    match &app.config.serve.backends.amqp_url {
        Some(url) => command.env("AMQP_URL", url),
        None => command.env_remove("AMQP_URL"),
    };
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_stores_a_jsonl_file_and_sums_it_up() {
    let app = spawn_app().await;
    let path = app.dir.path().join("assignment_data.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    for n in 0..3 {
        writeln!(file, r#"{{"user_id": "loaded", "country": "IT", "event": "start", "session_id": "l{n}", "ts": "2021-06-1{n}T10:00:00"}}"#).unwrap();
        writeln!(
            file,
            r#"{{"user_id": "loaded", "event": "end", "session_id": "l{n}", "ts": "2021-06-1{n}T10:30:00"}}"#
        )
        .unwrap();
    }
    writeln!(file, r#"{{"user_id": "loaded", "event": "end", "session_id": "l0", "ts": "2021-06-10T10:30:00"}}"#)
        .unwrap();
    writeln!(file).unwrap();
    writeln!(file, "not json").unwrap();
    writeln!(file, r#"{{"user_id": "loaded", "event": "pause", "session_id": "l9", "ts": "2021-06-10"}}"#).unwrap();
    drop(file);

    let output = events_command(&app)
        .args(["load", path.to_str().unwrap(), "--json", "--no-progress", "--batch-size", "4"])
        .output()
        .expect("events load runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(
        (&summary["lines"], &summary["accepted"], &summary["duplicates"], &summary["rejected"]),
        (&Value::from(9), &Value::from(6), &Value::from(1), &Value::from(2))
    );
    let rejected_lines: Vec<u64> =
        summary["first_rejections"].as_array().unwrap().iter().map(|r| r[0].as_u64().unwrap()).collect();
    assert_eq!(rejected_lines, [9, 10]);

    let sessions = app.get("/user/last-sessions-user?user_id=loaded").await.expect(StatusCode::OK);
    assert_eq!(sessions.as_array().unwrap().len(), 3);

    // Loading the same file again stores nothing new.
    let again =
        events_command(&app).args(["load", path.to_str().unwrap(), "--json", "--no-progress"]).output().unwrap();
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((&summary["accepted"], &summary["duplicates"]), (&Value::from(0), &Value::from(7)));

    let missing = events_command(&app).args(["load", "/no/such/file.jsonl", "--no-progress"]).output().unwrap();
    assert!(!missing.status.success());
}

#[test]
fn the_binary_explains_itself() {
    let help = Command::new(env!("CARGO_BIN_EXE_events")).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for expected in ["load", "serve", "--listen", "DATABASE_URL", "AMQP_URL"] {
        assert!(text.contains(expected), "--help mentions {expected}: {text}");
    }
}
