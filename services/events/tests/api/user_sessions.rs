//! Seed 003: user-session batches, per-country starts, last complete sessions, retention.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use events::retention::RetentionBasis;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::clock::Clock;

use crate::helpers::{pairs, reasons, spawn_app, spawn_app_with};

fn seed_batch() -> Value {
    json!([
        {"user_id": "d6313e1fb7d247a6a034e2aadc30ab30", "country": "TIN", "event": "start", "session_id": "674606b1-2270-4285-928f-eef4a6b90a60", "ts": "2019-04-16T20:40:50"},
        {"user_id": "d6313e1fb7d247a6a034e2aadc30ab3f", "event": "end", "session_id": "5f933591-8cd5-4147-8736-d6237bef5891", "ts": "2018-11-18T06:24:50"},
        {"user_id": "d6313e1fb7d247a6a034e2aadc30ab3f", "event": "start", "session_id": "5f933591-8cd5-4147-8736-d6237bef5891", "ts": "2018-11-16T18:01:37"},
        {"user_id": "29bb390d9b1b4b4b9ec0d6243da34ec4", "event": "end", "session_id": "ef939180-692a-4845-aef7-afb03524c2da", "ts": "2018-11-13T10:38:09"},
        {"user_id": "a477ecabc3cc455cb1c6d1dab77d8e5c", "country": "GH", "event": "start", "session_id": "4c55263e-66b2-4814-b431-8ca4c1a9dcc8", "ts": "2018-11-29T19:31:43"},
        {"user_id": "1ec36a67785046b3bce1dc432fad9129", "country": "SK", "event": "start", "session_id": "3346a60a-0989-4041-aacc-cf6ff44bd151", "ts": "2018-11-16T05:36:16"},
        {"user_id": "9595af0063e94cb8a76cb6628c6b80eb", "country": "DE", "event": "start", "session_id": "06830030-d091-428b-87d6-53914d3d2a18", "ts": "2018-11-07T01:18:09"},
        {"user_id": "8d0e3cd4a25d4a0895a6c2e13b5bb26a", "event": "end", "session_id": "a78a4889-4bcf-45a7-a4bd-967cc7adf581", "ts": "2018-11-24T02:12:33"}
    ])
}

/// `{country: [session ids]}` of a `last-events` answer.
fn sessions_by_country(answer: &Value) -> BTreeMap<String, Vec<String>> {
    answer
        .as_object()
        .expect("an object by country")
        .iter()
        .map(|(country, starts)| {
            let ids = starts.as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap().to_owned()).collect();
            (country.clone(), ids)
        })
        .collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_example_requests() {
    let app = spawn_app().await;
    let stored = app.post("/user/batches", &seed_batch()).await;
    assert_eq!(stored.headers["x-served-by"], "events");
    assert_eq!(stored.expect(StatusCode::OK), json!({"accepted": 8, "duplicates": 0, "rejected": 0, "errors": []}));

    // Today, the seed's 2018-2019 starts are far outside 170 days: every country, empty.
    let today = app.get("/user/last-events?days=170").await.expect(StatusCode::OK);
    assert_eq!(today, json!({"DE": [], "GH": [], "SK": [], "TIN": []}));

    // As of the day after the last start, 170 days hold them all, one per country; the start
    // without a country is listed under "unknown".
    let then = app.get("/user/last-events?days=170&as_of=2019-04-17T00:00:00").await.expect(StatusCode::OK);
    assert_eq!(
        sessions_by_country(&then),
        BTreeMap::from([
            ("DE".to_owned(), ids(&["06830030-d091-428b-87d6-53914d3d2a18"])),
            ("GH".to_owned(), ids(&["4c55263e-66b2-4814-b431-8ca4c1a9dcc8"])),
            ("SK".to_owned(), ids(&["3346a60a-0989-4041-aacc-cf6ff44bd151"])),
            ("TIN".to_owned(), ids(&["674606b1-2270-4285-928f-eef4a6b90a60"])),
            ("unknown".to_owned(), ids(&["5f933591-8cd5-4147-8736-d6237bef5891"])),
        ])
    );
    assert_eq!(
        then["TIN"][0],
        json!({"user_id": "d6313e1fb7d247a6a034e2aadc30ab30", "country": "TIN", "event": "start",
               "session_id": "674606b1-2270-4285-928f-eef4a6b90a60", "ts": "2019-04-16T20:40:50.000Z"})
    );
    let one_day = app.get("/user/last-events?days=1&as_of=2019-04-17").await.expect(StatusCode::OK);
    assert_eq!(
        sessions_by_country(&one_day),
        BTreeMap::from([
            ("DE".to_owned(), vec![]),
            ("GH".to_owned(), vec![]),
            ("SK".to_owned(), vec![]),
            ("TIN".to_owned(), ids(&["674606b1-2270-4285-928f-eef4a6b90a60"])),
        ])
    );

    // The one complete session (its end came first in the batch), without a country.
    let last =
        app.get("/user/last-sessions-user?user_id=d6313e1fb7d247a6a034e2aadc30ab3f").await.expect(StatusCode::OK);
    assert_eq!(
        last,
        json!([{"session_id": "5f933591-8cd5-4147-8736-d6237bef5891", "user_id": "d6313e1fb7d247a6a034e2aadc30ab3f",
                "country": null, "start_ts": "2018-11-16T18:01:37.000Z", "end_ts": "2018-11-18T06:24:50.000Z",
                "duration_seconds": 130_993.0}])
    );
    let before_its_end = "/user/last-sessions-user?user_id=d6313e1fb7d247a6a034e2aadc30ab3f&as_of=2018-11-17";
    assert_eq!(app.get(before_its_end).await.expect(StatusCode::OK), json!([]));
    let only_a_start = "/user/last-sessions-user?user_id=d6313e1fb7d247a6a034e2aadc30ab30";
    assert_eq!(app.get(only_a_start).await.expect(StatusCode::OK), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_before_start_duplicates_and_the_country_of_the_start() {
    let app = spawn_app().await;
    let end =
        json!({"user_id": "u1", "country": "XX", "event": "end", "session_id": "s1", "ts": "2021-06-15T11:00:00Z"});
    let start =
        json!({"user_id": "u1", "country": "FR", "event": "start", "session_id": "s1", "ts": "2021-06-15T10:00:00Z"});
    let sessions = "/user/last-sessions-user?user_id=u1";

    assert_eq!(app.post("/user/batches", &json!([end])).await.expect(StatusCode::OK)["accepted"], 1);
    assert_eq!(app.get(sessions).await.expect(StatusCode::OK), json!([]), "an end alone is not a session");

    let second = app.post("/user/batches", &json!([start, end])).await.expect(StatusCode::OK);
    assert_eq!((second["accepted"].as_u64(), second["duplicates"].as_u64()), (Some(1), Some(1)));
    let complete = app.get(sessions).await.expect(StatusCode::OK);
    assert_eq!(complete.as_array().unwrap().len(), 1);
    assert_eq!(complete[0]["country"], "FR", "the start's country, not the end's");
    assert_eq!(complete[0]["duration_seconds"], 3600.0);

    // A repeated start (even with another country) and a batch repeating itself are ignored.
    let mut restart = start.clone();
    restart["country"] = json!("DE");
    let third = app.post("/user/batches", &json!([restart, restart, start])).await.expect(StatusCode::OK);
    assert_eq!((third["accepted"].as_u64(), third["duplicates"].as_u64()), (Some(0), Some(3)));
    assert_eq!(app.get(sessions).await.expect(StatusCode::OK), complete);
    let countries = app.get("/user/last-events?days=1&as_of=2021-06-16").await.expect(StatusCode::OK);
    assert_eq!(sessions_by_country(&countries), BTreeMap::from([("FR".to_owned(), ids(&["s1"]))]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_twenty_complete_sessions_newest_first_as_of_any_time() {
    let app = spawn_app().await;
    let mut batch = Vec::new();
    for day in 1..=25 {
        batch.push(json!({"user_id": "u", "event": "start", "session_id": format!("s{day}"), "ts": format!("2021-05-{day:02}T10:00:00Z"), "country": "PT"}));
        batch.push(json!({"user_id": "u", "event": "end", "session_id": format!("s{day}"), "ts": format!("2021-05-{day:02}T11:00:00Z")}));
    }
    batch.push(json!({"user_id": "u", "event": "start", "session_id": "open", "ts": "2021-05-30T10:00:00Z"}));
    batch.push(json!({"user_id": "other", "event": "start", "session_id": "x", "ts": "2021-05-30T10:00:00Z"}));
    batch.push(json!({"user_id": "other", "event": "end", "session_id": "x", "ts": "2021-05-30T10:30:00Z"}));
    assert_eq!(app.post("/user/batches", &Value::Array(batch)).await.expect(StatusCode::OK)["accepted"], 53);

    let last = app.get("/user/last-sessions-user?user_id=u").await.expect(StatusCode::OK);
    let got: Vec<&str> = last.as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    let want: Vec<String> = (6..=25).rev().map(|day| format!("s{day}")).collect();
    assert_eq!(got, want);

    let as_of = app.get("/user/last-sessions-user?user_id=u&as_of=2021-05-10T10:30:00Z").await.expect(StatusCode::OK);
    let got: Vec<&str> = as_of.as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    assert_eq!(got, (1..=9).rev().map(|day| format!("s{day}")).collect::<Vec<_>>(), "s10 had not ended yet");

    let week = app.get("/user/last-events?days=7&as_of=2021-05-25T23:59:59Z").await.expect(StatusCode::OK);
    let starts: Vec<&str> = week["PT"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    assert_eq!(starts, ["s25", "s24", "s23", "s22", "s21", "s20", "s19"], "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_and_queries_are_reported() {
    let app = spawn_app_with(|config| config.settings.max_user_batch_events = 6).await;
    let batch = json!([
        {"user_id": "u", "event": "start", "session_id": "s", "ts": "2021-06-15 10:00:00", "country": ""},
        {"event": "start", "session_id": "s2", "ts": "2021-06-15"},
        {"user_id": "u", "event": "pause", "session_id": "s3", "ts": "2021-06-15"},
        {"user_id": "u", "event": "end", "session_id": "s4", "ts": "at noon", "country": 5},
        [1, 2],
    ]);
    let answer = app.post("/user/batches", &batch).await.expect(StatusCode::OK);
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(1), Some(4)));
    let errors = answer["errors"].as_array().unwrap();
    let indexes: Vec<u64> = errors.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [1, 2, 3, 4]);
    assert_eq!(reasons(&errors[0]), pairs(&[("missing_field", "/user_id")]));
    assert_eq!(reasons(&errors[1]), pairs(&[("invalid_value", "/event")]));
    assert_eq!(reasons(&errors[2]), pairs(&[("invalid_type", "/country"), ("timestamp_invalid", "/ts")]));
    assert_eq!(reasons(&errors[3]), pairs(&[("not_an_object", "")]));

    let seven: Vec<Value> = (0..7)
        .map(|n| json!({"user_id": "u", "event": "end", "session_id": format!("x{n}"), "ts": "2021-06-15"}))
        .collect();
    assert_eq!(app.post("/user/batches", &Value::Array(seven)).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.post("/user/batches", &json!({"user_id": "u"})).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.post_raw("/user/batches", Some("application/json"), "[{").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.post_raw("/user/batches", Some("text/plain"), "[]").await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(app.post("/user/batches", &json!([])).await.expect(StatusCode::OK)["accepted"], 0);

    for path in [
        "/user/last-events",
        "/user/last-events?days=0",
        "/user/last-events?days=abc",
        "/user/last-events?days=1.5",
        "/user/last-events?days=7&as_of=never",
        "/user/last-sessions-user",
        "/user/last-sessions-user?user_id=",
        "/user/last-sessions-user?user_id=u&as_of=2021-13-01",
    ] {
        assert_eq!(app.get(path).await.expect_status_code(StatusCode::BAD_REQUEST), "BAD_REQUEST", "{path}");
    }
    assert_eq!(app.get("/user/last-sessions-user?user_id=nobody").await.expect(StatusCode::OK), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_what_is_older_than_a_year_by_the_clock() {
    let app = spawn_app().await;
    let session = |id: &str| {
        json!([
            {"user_id": "u", "country": "NL", "event": "start", "session_id": id, "ts": "2021-06-15T10:00:00Z"},
            {"user_id": "u", "event": "end", "session_id": id, "ts": "2021-06-15T10:05:00Z"},
        ])
    };
    app.post("/user/batches", &session("old")).await.expect(StatusCode::OK);
    app.clock.advance(Duration::from_secs(200 * 86_400));
    app.post("/user/batches", &session("recent")).await.expect(StatusCode::OK);

    // 200 days on, nothing is a year old yet.
    let report = events::retention::run_once(&app.state).await.unwrap();
    assert_eq!(report.deleted, 0);

    app.clock.advance(Duration::from_secs(200 * 86_400));
    let report = events::retention::run_once(&app.state).await.unwrap();
    assert_eq!(report.deleted, 2, "the start and end received 400 days ago");
    assert_eq!(report.cutoff, app.clock.now_millis() - 365 * 86_400_000);
    let left = app.get("/user/last-sessions-user?user_id=u").await.expect(StatusCode::OK);
    assert_eq!(left.as_array().unwrap().iter().map(|s| s["session_id"].clone()).collect::<Vec<_>>(), [json!("recent")]);
    assert_eq!(events::retention::run_once(&app.state).await.unwrap().deleted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_event_time_when_configured() {
    let app = spawn_app_with(|config| {
        config.settings.retention_basis = RetentionBasis::EventTime;
        config.settings.retention_days = 30;
    })
    .await;
    let now = app.clock.now_millis();
    let at = |days_ago: i64| shared::rfc3339_millis(now - days_ago * 86_400_000);
    let batch = json!([
        {"user_id": "u", "event": "start", "session_id": "a", "ts": at(40)},
        {"user_id": "u", "event": "end", "session_id": "a", "ts": at(39)},
        {"user_id": "u", "event": "start", "session_id": "b", "ts": at(31)},
        {"user_id": "u", "event": "end", "session_id": "b", "ts": at(29)},
    ]);
    app.post("/user/batches", &batch).await.expect(StatusCode::OK);
    assert_eq!(events::retention::run_once(&app.state).await.unwrap().deleted, 3);
    assert_eq!(app.get("/user/last-sessions-user?user_id=u").await.expect(StatusCode::OK), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_complete_each_session_once() {
    let app = Arc::new(spawn_app().await);
    // Ten users with five sessions each; four writers send every event, in different orders
    // and batch splits, at once.
    let mut all = Vec::new();
    for user in 0..10 {
        for n in 0..5 {
            let session = format!("u{user}-s{n}");
            all.push(json!({"user_id": format!("u{user}"), "country": "BE", "event": "start", "session_id": session, "ts": format!("2021-06-{:02}T10:00:00Z", n + 1)}));
            all.push(json!({"user_id": format!("u{user}"), "event": "end", "session_id": session, "ts": format!("2021-06-{:02}T12:00:00Z", n + 1)}));
        }
    }
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let app = app.clone();
            let mut events = all.clone();
            if writer % 2 == 1 {
                events.reverse();
            }
            events.rotate_left(writer * 7);
            tokio::spawn(async move {
                let (mut accepted, mut duplicates) = (0, 0);
                for chunk in events.chunks(9 + writer) {
                    let answer = app.post("/user/batches", &Value::Array(chunk.to_vec())).await.expect(StatusCode::OK);
                    accepted += answer["accepted"].as_u64().unwrap();
                    duplicates += answer["duplicates"].as_u64().unwrap();
                }
                (accepted, duplicates)
            })
        })
        .collect();
    let (mut accepted, mut duplicates) = (0, 0);
    for writer in writers {
        let (a, d) = writer.await.unwrap();
        accepted += a;
        duplicates += d;
    }
    assert_eq!(accepted, 100, "each start and end stored exactly once");
    assert_eq!(duplicates, 300);
    for user in 0..10 {
        let sessions = app.get(&format!("/user/last-sessions-user?user_id=u{user}")).await.expect(StatusCode::OK);
        assert_eq!(sessions.as_array().unwrap().len(), 5, "u{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_country_stays_missing_and_an_end_never_supplies_one() {
    let app = spawn_app().await;
    let batch = json!([
        {"user_id": "u1", "event": "start", "session_id": "s1", "ts": "2021-06-15T10:00:00Z"},
        {"user_id": "u1", "country": "ES", "event": "end", "session_id": "s1", "ts": "2021-06-15T10:10:00Z"},
        {"user_id": "u2", "country": "", "event": "start", "session_id": "s2", "ts": "2021-06-15T11:00:00Z"},
        {"user_id": "u2", "country": null, "event": "end", "session_id": "s2", "ts": "2021-06-15T11:30:00Z"},
        {"user_id": "u3", "country": "  PT ", "event": "start", "session_id": "s3", "ts": "2021-06-15T12:00:00Z"},
    ]);
    let answer = app.post("/user/batches", &batch).await.expect(StatusCode::OK);
    assert_eq!(answer, json!({"accepted": 5, "duplicates": 0, "rejected": 0, "errors": []}));

    for (user, session) in [("u1", "s1"), ("u2", "s2")] {
        let sessions = app.get(&format!("/user/last-sessions-user?user_id={user}")).await.expect(StatusCode::OK);
        assert_eq!(sessions.as_array().unwrap().len(), 1, "{user}");
        assert_eq!(sessions[0]["session_id"], session);
        assert_eq!(sessions[0]["country"], Value::Null, "{user}: the start had none");
    }
    // Starts without a country are listed apart; the end's "ES" is no country seen.
    let starts = app.get("/user/last-events?days=1&as_of=2021-06-16").await.expect(StatusCode::OK);
    assert_eq!(
        sessions_by_country(&starts),
        BTreeMap::from([("PT".to_owned(), ids(&["s3"])), ("unknown".to_owned(), ids(&["s2", "s1"]))])
    );
    assert_eq!(starts["unknown"][0]["country"], Value::Null);
    assert_eq!(starts["PT"][0]["country"], "PT");
    // Outside the window every seen country is still listed, empty; "unknown" is not a country.
    let later = app.get("/user/last-events?days=1&as_of=2021-07-16").await.expect(StatusCode::OK);
    assert_eq!(later, json!({"PT": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_job_runs_on_its_schedule() {
    let app = spawn_app_with(|config| config.settings.retention_days = 1).await;
    let batch = json!([
        {"user_id": "u", "country": "NL", "event": "start", "session_id": "old", "ts": "2021-06-15T10:00:00Z"},
        {"user_id": "u", "event": "end", "session_id": "old", "ts": "2021-06-15T10:05:00Z"},
    ]);
    app.post("/user/batches", &batch).await.expect(StatusCode::OK);
    let sessions = "/user/last-sessions-user?user_id=u";
    assert_eq!(app.get(sessions).await.expect(StatusCode::OK).as_array().unwrap().len(), 1);

    // The default schedule is a valid cron expression: the job starts and stops cleanly.
    let (trigger, shutdown) = shared::shutdown::channel();
    let daily = tokio::spawn(events::retention::run(
        app.state.clone(),
        events::retention::DEFAULT_SCHEDULE.to_owned(),
        shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    trigger.trigger();
    daily.await.unwrap().expect("the daily job starts and stops");
    assert_eq!(app.get(sessions).await.expect(StatusCode::OK).as_array().unwrap().len(), 1, "not due yet");

    // Two days on, a job scheduled every second deletes them without being called.
    app.clock.advance(Duration::from_secs(2 * 86_400));
    let (trigger, shutdown) = shared::shutdown::channel();
    let job = tokio::spawn(events::retention::run(app.state.clone(), "* * * * * *".to_owned(), shutdown));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !app.get(sessions).await.expect(StatusCode::OK).as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the scheduled job did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trigger.trigger();
    job.await.unwrap().expect("the job stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_taken_without_surrounding_spaces_on_every_backend() {
    let app = spawn_app().await;
    let batch = json!([
        {"user_id": "u1", "country": "FR", "event": "start", "session_id": "s1", "ts": "2021-06-15T10:00:00Z"},
        {"user_id": " u1 ", "event": "end", "session_id": "s1  ", "ts": "2021-06-15T10:30:00Z"},
        {"user_id": "u1", "event": "end", "session_id": " s1", "ts": "2021-06-15T10:40:00Z"},
    ]);
    let answer = app.post("/user/batches", &batch).await.expect(StatusCode::OK);
    assert_eq!((answer["accepted"].as_u64(), answer["duplicates"].as_u64()), (Some(2), Some(1)));
    let sessions = app.get("/user/last-sessions-user?user_id=u1").await.expect(StatusCode::OK);
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_eq!(sessions[0]["session_id"], "s1");
    assert_eq!(sessions[0]["duration_seconds"], 1800.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_as_of_timestamps_later_than_the_servers_clock_still_count() {
    let app = spawn_app().await;
    let now = app.clock.now_millis();
    let at = |minutes: i64| shared::rfc3339_millis(now + minutes * 60_000);
    // Clients stamp `ts` with their own clocks, which may run ahead of the server's.
    let batch = json!([
        {"user_id": "u1", "country": "FR", "event": "start", "session_id": "s1", "ts": at(-60)},
        {"user_id": "u1", "event": "end", "session_id": "s1", "ts": at(60)},
        {"user_id": "u2", "country": "FR", "event": "start", "session_id": "s2", "ts": at(120)},
        {"user_id": "u3", "country": "FR", "event": "start", "session_id": "old", "ts": at(-2 * 24 * 60)},
    ]);
    assert_eq!(app.post("/user/batches", &batch).await.expect(StatusCode::OK)["accepted"], 4);

    let sessions = app.get("/user/last-sessions-user?user_id=u1").await.expect(StatusCode::OK);
    assert_eq!(sessions.as_array().unwrap().len(), 1, "both events have arrived: {sessions}");
    assert_eq!(sessions[0]["session_id"], "s1");
    assert_eq!(sessions[0]["end_ts"], at(60));
    assert_eq!(sessions[0]["duration_seconds"], 7200.0);
    let starts = app.get("/user/last-events?days=1").await.expect(StatusCode::OK);
    assert_eq!(sessions_by_country(&starts), BTreeMap::from([("FR".to_owned(), ids(&["s2", "s1"]))]));

    // With `as_of`, both queries stop there, as before.
    let as_of = at(0);
    let by_now = app.get(&format!("/user/last-sessions-user?user_id=u1&as_of={as_of}")).await;
    assert_eq!(by_now.expect(StatusCode::OK), json!([]), "s1 had not ended by then");
    let starts = app.get(&format!("/user/last-events?days=1&as_of={as_of}")).await.expect(StatusCode::OK);
    assert_eq!(sessions_by_country(&starts), BTreeMap::from([("FR".to_owned(), ids(&["s1"]))]));
}
