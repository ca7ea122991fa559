//! Seed 001, "the eye": sessions, events accepted with 202 and validated by the consumer,
//! errors, filters, pages, updates, idempotent retries and concurrent writers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use shared::clock::Clock;

use crate::helpers::{self, TestApp, pageview, pairs, reasons, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_example_requests() {
    let app = spawn_app().await;

    // POST /sessions/ as the seed's curl sends it: no content type, empty body.
    let created = app.post_raw("/sessions/", None, "").await;
    assert_eq!(created.headers["x-served-by"], "events");
    let session = created.expect(StatusCode::CREATED);
    let id = session["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is a UUID");
    let sessions = app.get("/sessions/").await.expect(StatusCode::OK);
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_eq!(sessions[0]["id"], id.as_str());
    assert_eq!(app.get(&format!("/sessions/{id}/")).await.expect(StatusCode::OK)["id"], id.as_str());

    // POST /events/ with the seed's body: 202 at once, stored by the consumer.
    let accepted = app.post("/events/", &pageview(&id, "2021-06-15 00:00:00")).await.expect(StatusCode::ACCEPTED);
    let event_id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&format!("/events/{event_id}/")).await.status, StatusCode::NOT_FOUND, "not validated yet");
    let report = app.drain().await;
    assert_eq!((report.stored, report.rejected), (1, 0));

    let listed = app.get("/events/").await.expect(StatusCode::OK);
    assert_eq!(
        listed,
        json!([{
            "id": event_id,
            "session": {"id": id},
            "category": "page interaction",
            "name": "pageview",
            "data": {"host": "www.consumeraffairs.com", "path": "/"},
            "timestamp": "2021-06-15T00:00:00.000Z",
            "client_event_id": null,
            "received_at": listed[0]["received_at"],
            "updated_at": listed[0]["updated_at"],
        }])
    );
    // The seed's filters: by session, by category, by timestamp range.
    for path in [
        format!("/events/?session={id}"),
        "/events/?category=page%20interaction".to_owned(),
        "/events/?timestamp__lte=2021-07-01T03:31:27.425713Z&timestamp__gte=2021-06-01".to_owned(),
    ] {
        assert_eq!(app.get(&path).await.expect(StatusCode::OK), listed, "{path}");
    }
    assert_eq!(app.get(&format!("/events/{event_id}/")).await.expect(StatusCode::OK), listed[0]);
    assert_eq!(app.get(&format!("/events/{event_id}")).await.expect(StatusCode::OK), listed[0], "no trailing slash");
    assert_eq!(app.get("/errors/").await.expect(StatusCode::OK), json!([]));
}

/// Posts `event`, drains, and returns its error record (asserting no event was stored).
async fn refused(app: &TestApp, event: &Value) -> Value {
    let id = app.post_event(event).await;
    app.drain().await;
    assert_eq!(app.get(&format!("/events/{id}/")).await.status, StatusCode::NOT_FOUND, "{event} was stored");
    let error = app.get(&format!("/errors/{id}/")).await.expect(StatusCode::OK);
    assert_eq!(error["id"], id.as_str());
    assert_eq!(&error["payload"], event, "the raw payload is kept");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_failure_lands_in_errors_with_its_reasons() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let in_a_day = shared::rfc3339_millis(app.clock.now_millis() + 86_400_000);

    let cases: Vec<(Value, Vec<(String, String)>)> = vec![
        (
            json!({"session": {"id": session}, "category": "page interaction", "name": "pageview", "data": {}, "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("data_empty", "/data")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c", "name": "n", "data": "{\"host\": 1}", "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("data_not_object", "/data")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c", "name": "n", "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("missing_field", "/data")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": in_a_day}),
            pairs(&[("timestamp_in_future", "/timestamp")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "15/06/2021"}),
            pairs(&[("timestamp_invalid", "/timestamp")]),
        ),
        (
            json!({"session": {"id": "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058"}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("session_unknown", "/session/id")]),
        ),
        (
            json!({"category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("missing_field", "/session")]),
        ),
        (
            json!({"session": {"id": session}, "category": "page interaction", "name": "pageview", "data": {"host": "h"}, "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("schema_violation", "/data/path")]),
        ),
        (
            json!({"session": {"id": session}, "category": "page interaction", "name": "cta click", "data": {"host": "h", "path": "/"}, "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("schema_violation", "/data/element")]),
        ),
        (
            json!({"session": {"id": session}, "category": "form interaction", "name": "submit", "data": {"host": "h", "path": "/", "form": "John"}, "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[("schema_violation", "/data/form")]),
        ),
        (json!([1, 2]), pairs(&[("not_an_object", "")])),
        (json!(null), pairs(&[("not_an_object", "")])),
        (
            json!({"session": {"id": "  "}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15"}),
            pairs(&[("blank", "/session/id")]),
        ),
        (
            json!({"session": 42, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15"}),
            pairs(&[("invalid_type", "/session")]),
        ),
        (
            json!({"session": {}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15"}),
            pairs(&[("missing_field", "/session/id")]),
        ),
        (
            json!({"session": {"id": session}, "data": {"k": 1}, "timestamp": "2021-06-15"}),
            pairs(&[("missing_field", "/category"), ("missing_field", "/name")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c".repeat(201), "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15", "client_event_id": "x".repeat(201)}),
            pairs(&[("too_long", "/category"), ("too_long", "/client_event_id")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"k": 1}}),
            pairs(&[("missing_field", "/timestamp")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": 1_623_715_200}),
            pairs(&[("invalid_type", "/timestamp")]),
        ),
        (
            json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-02-30 10:00:00"}),
            pairs(&[("timestamp_invalid", "/timestamp")]),
        ),
        // Every reason at once, not just the first.
        (
            json!({"session": {"id": 5}, "category": "", "name": "pageview", "data": [], "timestamp": in_a_day, "client_event_id": 7}),
            pairs(&[
                ("blank", "/category"),
                ("data_not_object", "/data"),
                ("invalid_type", "/client_event_id"),
                ("invalid_type", "/session/id"),
                ("timestamp_in_future", "/timestamp"),
            ]),
        ),
        (
            json!({"session": {"id": "no-such-session"}, "category": "page interaction", "name": "pageview", "data": {"path": 3}, "timestamp": "2021-06-15 00:00:00"}),
            pairs(&[
                ("schema_violation", "/data/host"),
                ("schema_violation", "/data/path"),
                ("session_unknown", "/session/id"),
            ]),
        ),
    ];
    for (event, expected) in &cases {
        let error = refused(&app, event).await;
        assert_eq!(&reasons(&error), expected, "{event}");
        for reason in error["reasons"].as_array().unwrap() {
            assert!(!reason["message"].as_str().unwrap().is_empty());
        }
    }
    let (errors, _) = app.all_pages("/errors/?limit=5").await;
    assert_eq!(errors.len(), cases.len());
    let of_session = cases.iter().filter(|(event, _)| helpers::session_id(event) == Some(session.as_str())).count();
    assert_eq!(of_session, 13);
    let (listed, _) = app.all_pages(&format!("/errors/?session={session}&limit=4")).await;
    assert_eq!(listed.len(), of_session);
    assert!(listed.iter().all(|error| error["session"] == session.as_str()));
    assert_eq!(app.get("/events/").await.expect(StatusCode::OK), json!([]));
    assert_eq!(app.get("/errors/no-such-id/").await.expect_status_code(StatusCode::NOT_FOUND), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_with_or_without_zone_and_the_future_by_the_clock() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let naive = app.post_event(&pageview(&session, "2021-06-15 02:00:00")).await;
    let zoned = app.post_event(&pageview(&session, "2021-06-15T04:00:00+02:00")).await;
    let fraction = app.post_event(&pageview(&session, "2021-06-15T02:00:00.250Z")).await;
    // A little ahead of the clock is within the tolerance; an hour is the future.
    let now = app.clock.now_millis();
    let soon = app.post_event(&pageview(&session, &shared::rfc3339_millis(now + 1_000))).await;
    let later = app.post_event(&pageview(&session, &shared::rfc3339_millis(now + 3_600_000))).await;
    app.drain().await;
    for (id, expected) in [
        (&naive, "2021-06-15T02:00:00.000Z"),
        (&zoned, "2021-06-15T02:00:00.000Z"),
        (&fraction, "2021-06-15T02:00:00.250Z"),
        (&soon, shared::rfc3339_millis(now + 1_000).as_str()),
    ] {
        assert_eq!(app.get(&format!("/events/{id}/")).await.expect(StatusCode::OK)["timestamp"], expected);
    }
    assert_eq!(
        app.get(&format!("/errors/{later}/")).await.expect(StatusCode::OK)["reasons"][0]["code"],
        "timestamp_in_future"
    );
}

/// An event the filters test posted.
struct Posted {
    id: String,
    day: u32,
    session: String,
    category: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_keyset_pagination() {
    let app = spawn_app().await;
    let first = app.create_session().await;
    let second = app.create_session().await;
    let mut posted = Vec::new();
    for day in 1..=12 {
        let session = if day % 2 == 0 { &second } else { &first };
        let (category, name, data) = match day % 3 {
            0 => ("page interaction", "pageview", json!({"host": "h", "path": format!("/{day}")})),
            1 => {
                ("page interaction", "cta click", json!({"host": "h", "path": "/", "element": format!("button-{day}")}))
            }
            _ => ("form interaction", "submit", json!({"host": "h", "path": "/", "form": {"day": day}})),
        };
        let event = json!({"session": {"id": session}, "category": category, "name": name, "data": data,
                           "timestamp": format!("2021-06-{day:02} 12:00:00")});
        posted.push(Posted { id: app.post_event(&event).await, day, session: session.clone(), category });
    }
    // Two events at the same instant: the cursor still separates them.
    let same_instant = pageview(&first, "2021-06-05 12:00:00");
    posted.push(Posted {
        id: app.post_event(&same_instant).await,
        day: 5,
        session: first.clone(),
        category: "page interaction",
    });
    app.drain().await;

    let ids = |items: &[Value]| items.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let expected = |keep: &dyn Fn(&Posted) -> bool| {
        let mut kept: Vec<String> = posted.iter().filter(|p| keep(p)).map(|p| p.id.clone()).collect();
        kept.sort();
        kept
    };

    // Every page of 3 follows the Link header; together they are every event once, in time order.
    let (all, pages) = app.all_pages("/events/?limit=3").await;
    assert_eq!(pages, 5);
    let mut sorted = ids(&all);
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), posted.len());
    let times: Vec<&str> = all.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "ordered by timestamp: {times:?}");

    let (by_session, _) = app.all_pages(&format!("/events/?session={second}&limit=2")).await;
    let mut got = ids(&by_session);
    got.sort();
    assert_eq!(got, expected(&|p| p.session == second));
    assert!(by_session.windows(2).all(|w| w[0]["timestamp"].as_str() <= w[1]["timestamp"].as_str()));

    let (by_category, _) = app.all_pages("/events/?category=page%20interaction&limit=4").await;
    let mut got = ids(&by_category);
    got.sort();
    assert_eq!(got, expected(&|p| p.category == "page interaction"));
    assert!(posted.iter().any(|p| p.day == 5 && p.category == "page interaction"));
    assert!(by_category.iter().all(|e| e["category"] == "page interaction"));

    let (by_name, _) = app.all_pages("/events/?category=page%20interaction&name=cta%20click").await;
    assert_eq!(by_name.len(), 4);
    assert!(by_name.iter().all(|e| e["name"] == "cta click"));

    let (window, _) = app
        .all_pages("/events/?timestamp__gte=2021-06-03T12:00:00Z&timestamp__lte=2021-06-06%2012:00:00&limit=2")
        .await;
    assert_eq!(window.len(), 5, "days 3, 4, 5 (twice) and 6");

    let (combined, _) =
        app.all_pages(&format!("/events/?session={first}&timestamp__gte=2021-06-05&name=pageview")).await;
    assert_eq!(ids(&combined).len(), 2, "day 9 and the extra day-5 pageview");

    for bad in ["/events/?limit=0", "/events/?limit=x", "/events/?timestamp__gte=yesterday", "/events/?after=nope"] {
        assert_eq!(app.get(bad).await.expect_status_code(StatusCode::BAD_REQUEST), "BAD_REQUEST", "{bad}");
    }
    assert_eq!(app.get("/events/?category=nothing").await.expect(StatusCode::OK), json!([]));

    // Sessions page too.
    let (sessions, pages) = app.all_pages("/sessions/?limit=1").await;
    assert_eq!((sessions.len(), pages), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_patch_delete_by_id_with_updates_validated_again() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let other_session = app.create_session().await;
    let id = app.post_event(&pageview(&session, "2021-06-15 00:00:00")).await;
    app.drain().await;
    let path = format!("/events/{id}/");

    let replaced = app
        .put(
            &path,
            &json!({"session": {"id": other_session}, "category": "form interaction", "name": "submit",
                    "data": {"host": "h", "path": "/signup", "form": {"email": "a@b.c"}}, "timestamp": "2021-06-16T10:00:00Z"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(replaced["session"]["id"], other_session.as_str());
    assert_eq!(replaced["data"]["form"]["email"], "a@b.c");
    assert_eq!(replaced["timestamp"], "2021-06-16T10:00:00.000Z");
    assert_eq!(app.get(&path).await.expect(StatusCode::OK), replaced);

    // An invalid update answers 422 with every reason and changes nothing.
    let refused = app
        .put(
            &path,
            &json!({"session": {"id": "nope"}, "category": "c", "name": "n", "data": {}, "timestamp": "2021-06-16"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(reasons(&refused.body["error"]), pairs(&[("data_empty", "/data"), ("session_unknown", "/session/id")]));
    assert_eq!(app.get(&path).await.expect(StatusCode::OK), replaced);

    // PATCH changes only what it names, and the result must still pass its schema.
    let patched = app.patch(&path, &json!({"timestamp": "2021-06-17 08:00:00"})).await.expect(StatusCode::OK);
    assert_eq!(patched["timestamp"], "2021-06-17T08:00:00.000Z");
    assert_eq!(patched["data"], replaced["data"]);
    let refused = app.patch(&path, &json!({"data": {"host": "h", "path": "/"}})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reasons(&refused.body["error"]), pairs(&[("schema_violation", "/data/form")]));
    let refused =
        app.patch(&path, &json!({"timestamp": shared::rfc3339_millis(app.clock.now_millis() + 86_400_000)})).await;
    assert_eq!(reasons(&refused.body["error"]), pairs(&[("timestamp_in_future", "/timestamp")]));
    assert_eq!(
        app.patch(&path, &json!([1])).await.expect_status_code(StatusCode::UNPROCESSABLE_ENTITY),
        "VALIDATION_FAILED"
    );
    assert_eq!(app.get(&path).await.expect(StatusCode::OK), patched);

    // Bad bodies are 400 / 415, unknown ids 404; never a 500.
    let malformed =
        app.client.put(app.at(&path)).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let text = app.client.patch(app.at(&path)).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for answer in [
        app.put("/events/no-such-event/", &pageview(&session, "2021-06-15")).await,
        // An unknown id is a 404 before the body is judged.
        app.put("/events/no-such-event/", &json!({"data": {}})).await,
        app.patch("/events/no-such-event/", &json!({"name": "x"})).await,
        app.delete("/events/no-such-event/").await,
        app.get("/events/no-such-event/").await,
    ] {
        assert_eq!(answer.expect_status_code(StatusCode::NOT_FOUND), "NOT_FOUND");
    }

    assert_eq!(app.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&path).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_event_id_makes_retries_idempotent() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let other = app.create_session().await;
    let mut event = pageview(&session, "2021-06-15 00:00:00");
    event["client_event_id"] = json!("click-42");
    let first = app.post_event(&event).await;
    assert_eq!(app.post_event(&event).await, first, "a retry gets the same id");
    app.drain().await;
    assert_eq!(app.post_event(&event).await, first, "also after it was stored");
    let batch = app.post("/events/batch", &json!([event, event])).await.expect(StatusCode::ACCEPTED);
    assert_eq!(batch["items"][0]["id"], first.as_str());
    assert_eq!(batch["items"][1]["id"], first.as_str());
    // The same client id in another session is another event.
    let mut elsewhere = event.clone();
    elsewhere["session"]["id"] = json!(other);
    let second = app.post_event(&elsewhere).await;
    assert_ne!(second, first);
    app.drain().await;

    let all = app.get("/events/").await.expect(StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(app.get(&format!("/events/{first}/")).await.expect(StatusCode::OK)["client_event_id"], "click-42");

    // A redelivered queue message (the consumer crashed before its ack) stores nothing twice.
    let payload: Box<serde_json::value::RawValue> =
        serde_json::value::to_raw_value(&pageview(&session, "2021-06-20")).unwrap();
    let queued = events::ingest::QueuedEvents {
        received_at: app.clock.now_millis(),
        items: vec![events::ingest::QueuedEvent {
            id: "00000000-0000-4000-8000-000000000001".into(),
            payload: &payload,
            rejected: None,
        }],
    };
    events::ingest::publish(&app.state, &queued).await.unwrap();
    events::ingest::publish(&app.state, &queued).await.unwrap();
    let report = app.drain().await;
    assert_eq!((report.messages, report.stored), (2, 1));
    assert_eq!(app.get("/events/").await.expect(StatusCode::OK).as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_session() {
    let app = std::sync::Arc::new(spawn_app().await);
    let session = app.create_session().await;

    // Eight writers post to one session while the consumer runs beside them.
    let (trigger, shutdown) = shared::shutdown::channel();
    let consumer = events::consumer::Consumer::new(app.state.clone(), Default::default()).await.unwrap();
    let running = tokio::spawn(consumer.run(shutdown));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let app = app.clone();
            let session = session.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let mut event = pageview(&session, "2021-06-15 00:00:00");
                    event["data"]["path"] = json!(format!("/{writer}/{n}"));
                    // Every writer also retries one shared client id: it must land once.
                    if n == 0 {
                        event["client_event_id"] = json!("shared");
                    }
                    app.post_event(&event).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    trigger.trigger();
    running.await.unwrap();
    app.drain().await;
    let (stored, _) = app.all_pages(&format!("/events/?session={session}&limit=500")).await;
    assert_eq!(stored.len(), 8 * 24 + 1);

    // Two writers patch different fields of one event at once: neither loses the other's change.
    let id = stored[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/events/{id}/");
    let timestamps = {
        let (app, path) = (app.clone(), path.clone());
        tokio::spawn(async move {
            for hour in 0..20 {
                let body = json!({"timestamp": format!("2021-06-16T{hour:02}:00:00Z")});
                app.patch(&path, &body).await.expect(StatusCode::OK);
            }
        })
    };
    let data = {
        let (app, path) = (app.clone(), path.clone());
        tokio::spawn(async move {
            for n in 0..20 {
                let body = json!({"data": {"host": "h", "path": format!("/patched/{n}")}});
                app.patch(&path, &body).await.expect(StatusCode::OK);
            }
        })
    };
    timestamps.await.unwrap();
    data.await.unwrap();
    let last = app.get(&path).await.expect(StatusCode::OK);
    assert_eq!(last["timestamp"], "2021-06-16T19:00:00.000Z");
    assert_eq!(last["data"]["path"], "/patched/19");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_4xx_never_500() {
    let app = spawn_app().await;
    let cases = [
        (app.post_raw("/events/", Some("application/json"), "{\"session\": ").await, StatusCode::BAD_REQUEST),
        (app.post_raw("/events/", Some("text/plain"), "{}").await, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (app.post_raw("/events/", None, "{}").await, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            app.post_raw("/events/", Some("application/json"), format!("{{\"data\": \"{}\"}}", "x".repeat(70_000)))
                .await,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (app.get("/no-such-route").await, StatusCode::NOT_FOUND),
        (app.delete("/sessions/").await, StatusCode::METHOD_NOT_ALLOWED),
        (app.get("/sessions/?limit=-3").await, StatusCode::BAD_REQUEST),
        (app.get("/sessions/?after=x").await, StatusCode::BAD_REQUEST),
        (app.get("/sessions/nope/").await, StatusCode::NOT_FOUND),
        (app.get("/errors/?limit=1000").await, StatusCode::BAD_REQUEST),
        (app.get("/events/?after=%0B").await, StatusCode::BAD_REQUEST),
    ];
    for (answer, status) in cases {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert!(answer.body["error"]["code"].is_string(), "{}", answer.body);
    }
    // An empty cursor or limit means none.
    for path in ["/sessions/?after=", "/errors/?after=&limit=", "/events/?after="] {
        assert_eq!(app.get(path).await.expect(StatusCode::OK), json!([]), "{path}");
    }
    // Anything that is JSON is accepted: what is wrong with it is the consumer's to record.
    let id = app.post_event(&json!("just a string")).await;
    app.drain().await;
    assert_eq!(app.get(&format!("/errors/{id}/")).await.expect(StatusCode::OK)["payload"], "just a string");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_record_serves_the_payload_text_as_sent() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    // Unsorted keys, a trailing zero and an integer beyond f64: re-serialising would change all
    // three. `data` is empty, so the event is refused.
    let raw = format!(
        r#"{{"session":{{"id":"{session}"}},"zeta":1,"category":"c","name":"n","price":1.10,"big":123456789012345678901234567890,"data":{{}},"timestamp":"2021-06-15 00:00:00"}}"#
    );
    let id = app.post_raw("/events/", Some("application/json"), raw.clone()).await.expect(StatusCode::ACCEPTED);
    let id = id["id"].as_str().unwrap().to_owned();
    app.drain().await;

    let (status, body) = app.get_text(&format!("/errors/{id}/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!(r#""payload":{raw}"#)), "the payload is not the text sent: {body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reasons(&error), pairs(&[("data_empty", "/data")]));
    let (status, listed) = app.get_text(&format!("/errors/?session={session}")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert!(listed.contains(&format!(r#""payload":{raw}"#)), "the listed payload is not the text sent: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_data_is_stored_and_served_as_the_text_sent() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    // An integer beyond u64, a trailing zero and unsorted keys: re-serialising a parsed value
    // would change all three.
    let data = r#"{"order_id":123456789012345678901234567890,"price":19.90,"zeta":1,"alpha":2}"#;
    let event = |name: &str, data: &str| {
        format!(
            r#"{{"session":{{"id":"{session}"}},"category":"c","name":"{name}","data":{data},"timestamp":"2021-06-11T00:00:00Z"}}"#
        )
    };
    let single =
        app.post_raw("/events/", Some("application/json"), event("single", data)).await.expect(StatusCode::ACCEPTED);
    let batch = app
        .post_raw("/events/batch", Some("application/json"), format!("[{}]", event("batch", data)))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(batch["accepted"], 1, "{batch}");
    assert_eq!(app.drain().await.stored, 2);

    let served = format!(r#""data":{data}"#);
    for id in [&single["id"], &batch["items"][0]["id"]] {
        let id = id.as_str().unwrap();
        let (status, body) = app.get_text(&format!("/events/{id}/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(r#""order_id":123456789012345678901234567890"#), "{body}");
        assert!(body.contains(r#""price":19.90"#), "{body}");
        assert!(body.find(r#""zeta""#) < body.find(r#""alpha""#), "{body}");
        assert!(body.contains(&served), "data is not the text sent: {body}");
    }
    let (status, listed) = app.get_text(&format!("/events/?session={session}")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed.matches(&served).count(), 2, "listed data is not the text sent: {listed}");

    // PUT stores its data as sent; a PATCH that leaves data alone keeps the stored text, one
    // that names data replaces it with its text.
    let path = format!("/events/{}/", single["id"].as_str().unwrap());
    let replaced = r#"{"z":1.50,"a":18446744073709551616}"#;
    let (status, body) = app.send_text(reqwest::Method::PUT, &path, event("put", replaced)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!(r#""data":{replaced}"#)), "{body}");
    let (status, body) =
        app.send_text(reqwest::Method::PATCH, &path, r#"{"timestamp":"2021-06-12T00:00:00Z"}"#.to_owned()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!(r#""data":{replaced}"#)), "{body}");
    let patched = r#"{"y":2.50,"b":99999999999999999999}"#;
    let (status, body) = app.send_text(reqwest::Method::PATCH, &path, format!(r#"{{"data":{patched}}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!(r#""data":{patched}"#)), "{body}");
    let (status, body) = app.get_text(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!(r#""data":{patched}"#)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_curl_commands_as_written() {
    let app = spawn_app().await;
    let cookie = "csrftoken=h6LZNrhpUQrxgd4GzjMbGhSN0FqBU9tHsX5roYes5A7zGfruy0frBM01N3NXctry";
    // `curl --request POST --header 'Cookie: ...' --data-raw ''`: a form content type, no body.
    let as_curl_sends = |request: reqwest::RequestBuilder| {
        request.header("cookie", cookie).header("content-type", "application/x-www-form-urlencoded").body("").send()
    };
    let created = as_curl_sends(app.client.post(app.at("/sessions/"))).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let session: Value = created.json().await.unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    // `curl --request GET ... --data-raw ''`, with and without a JSON content type.
    let listed = as_curl_sends(app.client.get(app.at("/sessions/"))).await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(listed.json::<Value>().await.unwrap()[0]["id"], id.as_str());

    let body = format!(
        r#"{{
"session": {{"id": "{id}"}},
"category": "page interaction",
"name": "pageview",
"data": {{
"host": "www.consumeraffairs.com",
"path": "/"
}},
"timestamp": "2021-06-15 00:00:00"
}}"#
    );
    let accepted = app.post_raw("/events/", Some("application/json"), body).await.expect(StatusCode::ACCEPTED);
    assert_eq!(accepted["status"], "queued");
    app.drain().await;
    let get_json = |path: String| {
        let request =
            app.client.get(app.at(&path)).header("content-type", "application/json").header("cookie", cookie).body("");
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let all = get_json("/events/".to_owned()).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["id"], accepted["id"]);
    assert_eq!(all[0]["timestamp"], "2021-06-15T00:00:00.000Z");
    for path in [
        format!("/events/?session={id}"),
        "/events/?category=page%20interaction".to_owned(),
        "/events/?timestamp__lte=2021-07-01T03:31:27.425713Z&timestamp__gte=2021-06-15T00:00:00Z".to_owned(),
    ] {
        assert_eq!(get_json(path).await, all);
    }
    // Windows that exclude it, on either side.
    for path in [
        "/events/?session=f006fdcc-b20b-46f0-bbb9-142a7ca0757c",
        "/events/?category=form%20interaction",
        "/events/?timestamp__lte=2021-06-14T23:59:59.999Z",
        "/events/?timestamp__gte=2021-06-15T00:00:00.001Z",
    ] {
        assert_eq!(get_json(path.to_owned()).await, json!([]), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_json_answers_and_never_stalls_the_consumer() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let deep = format!("{{\"data\": {}{}}}", "[".repeat(300), "]".repeat(300));
    let surrogate = format!(
        r#"{{"session": {{"id": "{session}"}}, "category": "c\ud800", "name": "n", "data": {{"a": 1}}, "timestamp": "2021-06-15"}}"#
    );
    let huge_number = format!(
        r#"{{"session": {{"id": "{session}"}}, "category": "c", "name": "n", "data": {{"a": 1e400}}, "timestamp": "2021-06-15"}}"#
    );
    let mut not_utf8 = br#"{"category": ""#.to_vec();
    not_utf8.extend([0xff, 0xfe]);
    not_utf8.extend(br#""}"#);
    for (path, body) in [
        ("/events/", deep.clone().into_bytes()),
        ("/events/", surrogate.clone().into_bytes()),
        ("/events/", huge_number.clone().into_bytes()),
        ("/events/", not_utf8.clone()),
        ("/events/batch", format!("[{deep}]").into_bytes()),
        ("/events/batch", format!("[{surrogate}]").into_bytes()),
        ("/events/batch", format!("[{huge_number}]").into_bytes()),
        ("/user/batches", format!("[{deep}]").into_bytes()),
        ("/user/batches", [b"[".as_slice(), &not_utf8, b"]"].concat()),
        ("/events/batch", [b"[".as_slice(), &not_utf8, b"]"].concat()),
        ("/schemas/", surrogate.clone().into_bytes()),
    ] {
        let answer = app.post_raw(path, Some("application/json"), body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {}", answer.body);
        assert_eq!(answer.error_code(), "BAD_REQUEST");
    }
    for path in [
        "/events/%FF/",
        "/errors/%FF%FE/",
        "/events/?category=%FF",
        "/events/?after=9223372036854775807_9223372036854775807",
        "/events/?after=99999999999999999999_1",
        "/events/?timestamp__gte=9999-12-31&timestamp__lte=0001-01-01",
        "/user/last-events?days=36500&as_of=0001-01-01",
        "/user/last-events?days=99999999999999999999",
        "/user/last-sessions-user?user_id=%00",
    ] {
        let answer = app.get(path).await;
        assert!(answer.status.is_success() || answer.status.is_client_error(), "{path}: {}", answer.status);
        if answer.status.is_client_error() {
            assert!(answer.body["error"]["code"].is_string(), "{path}: {}", answer.body);
        }
    }

    // Odd but valid content goes through the queue to the store, on either backend: NUL and
    // four-byte characters, the longest labels, the oldest and latest timestamps.
    let odd = [
        json!({"session": {"id": session}, "category": "c\u{0}", "name": "😀 ".repeat(50), "data": {"a": "\u{0}", "b": "😀"}, "timestamp": "0001-01-01 00:00:00"}),
        json!({"session": {"id": session}, "category": "é".repeat(200), "name": "n", "data": {"nested": {"deep": [1, {"x": null}]}}, "timestamp": "1970-01-01T00:00:00Z", "client_event_id": "ü".repeat(200)}),
        json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "-262144-01-01T00:00:00Z"}),
        json!({"session": {"id": "😀".repeat(300)}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15"}),
        json!({"session": {"id": format!("{session}\u{0}")}, "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2021-06-15"}),
    ];
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for event in &odd {
            ids.push(app.post_event(event).await);
        }
        ids
    };
    let batch = app.post("/events/batch", &Value::Array(odd.to_vec())).await.expect(StatusCode::ACCEPTED);
    let report = app.drain().await;
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    // Stored: the first two, and the batch's first (its second repeats a client event id).
    assert_eq!((report.stored, report.rejected), (3, 6), "{report:?}");
    for (index, id) in ids.iter().enumerate() {
        let stored = app.get(&format!("/events/{id}/")).await;
        if index < 2 {
            let event = stored.expect(StatusCode::OK);
            assert_eq!(event["category"], odd[index]["category"]);
            assert_eq!(event["name"], odd[index]["name"]);
            assert_eq!(event["data"], odd[index]["data"]);
        } else {
            assert_eq!(stored.status, StatusCode::NOT_FOUND);
            let error = app.get(&format!("/errors/{id}/")).await.expect(StatusCode::OK);
            assert_eq!(error["payload"], odd[index]);
        }
    }
    assert_eq!(
        app.get("/events/?timestamp__lte=0001-01-01T00:00:00Z").await.expect(StatusCode::OK)[0]["id"],
        ids[0].as_str()
    );
    let items = batch["items"].as_array().unwrap();
    let statuses: Vec<&str> = items.iter().map(|item| item["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["accepted", "accepted", "rejected", "rejected", "accepted"], "{batch}");
    assert_eq!(items[1]["id"], ids[1].as_str(), "the same client event id, the same event");
    // The session with a trailing NUL is another (unknown) session, on either backend.
    let error = app.get(&format!("/errors/{}/", ids[4])).await.expect(StatusCode::OK);
    assert_eq!(reasons(&error), pairs(&[("session_unknown", "/session/id")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_id_with_trailing_spaces_is_another_session_on_every_backend() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let padded = format!("{session}  ");
    let id = app.post_event(&pageview(&padded, "2021-06-15")).await;
    let stored = app.post_event(&pageview(&session, "2021-06-15")).await;
    let report = app.drain().await;
    assert_eq!((report.stored, report.rejected, report.dead_lettered), (1, 1, 0), "{report:?}");
    let error = app.get(&format!("/errors/{id}/")).await.expect(StatusCode::OK);
    assert_eq!(reasons(&error), pairs(&[("session_unknown", "/session/id")]));

    let path = format!("/events/{stored}/");
    let refused = app.patch(&path, &json!({"session": {"id": padded}})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(reasons(&refused.body["error"]), pairs(&[("session_unknown", "/session/id")]));
    assert_eq!(app.get(&path).await.expect(StatusCode::OK)["session"]["id"], session.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_spelling_of_a_sessions_uuid_names_that_session() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let upper = session.to_uppercase();
    let braced_bare = format!("{{{}}}", session.replace('-', ""));

    let stored = app.post_event(&pageview(&upper, "2021-06-15")).await;
    let mut refused = pageview(&braced_bare, "2021-06-15");
    refused["data"] = json!({});
    let refused = app.post_event(&refused).await;
    let report = app.drain().await;
    assert_eq!((report.stored, report.rejected), (1, 1), "{report:?}");
    let event = app.get(&format!("/events/{stored}/")).await.expect(StatusCode::OK);
    assert_eq!(event["session"]["id"], session.as_str());
    let error = app.get(&format!("/errors/{refused}/")).await.expect(StatusCode::OK);
    assert_eq!(reasons(&error), pairs(&[("data_empty", "/data")]), "the session is known");
    assert_eq!(error["session"], session.as_str());

    for spelling in [&upper, &braced_bare] {
        let found = app.get(&format!("/sessions/{spelling}/")).await.expect(StatusCode::OK);
        assert_eq!(found["id"], session.as_str(), "{spelling}");
        let events = app.get(&format!("/events/?session={spelling}")).await.expect(StatusCode::OK);
        assert_eq!(events.as_array().unwrap().len(), 1, "{spelling}");
        let errors = app.get(&format!("/errors/?session={spelling}")).await.expect(StatusCode::OK);
        assert_eq!(errors.as_array().unwrap().len(), 1, "{spelling}");
    }
    let replaced = app.put(&format!("/events/{stored}/"), &pageview(&braced_bare, "2021-06-16")).await;
    assert_eq!(replaced.expect(StatusCode::OK)["session"]["id"], session.as_str());
    // What is not a UUID stays as sent, and unknown.
    assert_eq!(app.get(&format!("/sessions/{session}x/")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_filter_value_is_no_filter() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    app.post_event(&pageview(&session, "2021-06-15")).await;
    let mut refused = pageview(&session, "2021-06-15");
    refused["data"] = json!({});
    app.post_event(&refused).await;
    app.drain().await;
    let events = app.get("/events/").await.expect(StatusCode::OK);
    assert_eq!(events.as_array().unwrap().len(), 1);
    let errors = app.get("/errors/").await.expect(StatusCode::OK);
    assert_eq!(errors.as_array().unwrap().len(), 1);

    for path in ["/events/?session=", "/events/?category=&name=", "/events/?session=&category=&name=&limit=&after="] {
        assert_eq!(app.get(path).await.expect(StatusCode::OK), events, "{path}");
    }
    // A timestamp filter is declared a date-time: an empty one is refused, not ignored.
    for path in ["/events/?timestamp__gte=", "/events/?timestamp__lte="] {
        app.get(path).await.expect(StatusCode::BAD_REQUEST);
    }
    assert_eq!(app.get("/errors/?session=").await.expect(StatusCode::OK), errors);
    let sessions = app.get("/sessions/").await.expect(StatusCode::OK);
    assert_eq!(app.get("/sessions/?limit=&after=").await.expect(StatusCode::OK), sessions);
    // An empty filter is not carried into the next page's link either.
    app.post_event(&pageview(&session, "2021-06-16")).await;
    app.drain().await;
    let first = app.get("/events/?session=&category=&limit=1").await;
    let link = first.next_link().expect("a second page");
    assert!(!link.contains("session=") && !link.contains("category="), "{link}");
}
