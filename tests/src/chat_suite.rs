//! The chat contract as a client sees it, one function per behaviour. Reads that follow a
//! create use [`Api::get_eventually`], so the suite holds both where reads are immediately
//! consistent (standalone) and where they trail the queue (separate services).

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::Api;

fn assert_status(reply: &crate::client::Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "body: {}", reply.text);
}

/// The applications, the application `token`, its chats, its chat `chat` and that chat's
/// messages: every path that takes a create or an update.
fn collection_paths(token: &str, chat: i64) -> Vec<String> {
    vec![
        "/api/applications".to_owned(),
        format!("/api/applications/{token}"),
        format!("/api/applications/{token}/chats"),
        format!("/api/applications/{token}/chats/{chat}"),
        format!("/api/applications/{token}/chats/{chat}/messages"),
    ]
}

/// Sets `field` of the resource at `path` with a PUT (to `put_value`), then with a PATCH (to
/// "patched"): each answers 200 with the new value, and a later GET shows the PATCHed one.
async fn put_then_patch(api: &Api, path: &str, field: &str, put_value: &str) {
    for (method, value) in [(Method::PUT, put_value), (Method::PATCH, "patched")] {
        let reply = api.send(method, path, Some(&json!({ field: value }))).await;
        assert_status(&reply, StatusCode::OK);
        assert_eq!(reply.body[field], value);
    }
    assert_eq!(api.get(path).await.body[field], "patched");
}

/// Create, read, list, rename (PUT and PATCH) an application, as the seed shows.
pub async fn applications_lifecycle(api: &Api) {
    let created = api.post("/api/applications", &json!({ "application_name": "myname" })).await;
    assert_status(&created, StatusCode::CREATED);
    assert_eq!(created.body["type"], "application");
    assert_eq!(created.body["application_name"], "myname");
    assert_eq!(created.body["chats_count"], 0);
    let token = created.body["application_token"].as_str().unwrap().to_owned();
    let hex: String = token.chars().filter(|c| *c != '-').collect();
    assert!(hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()), "a 128-bit token: {token}");

    let other = api.create_application("another").await;
    assert_ne!(token, other, "tokens are unique");

    let shown = api.get(&format!("/api/applications/{token}")).await;
    assert_status(&shown, StatusCode::OK);
    assert_eq!(shown.body["application_token"], token.as_str());
    assert_eq!(shown.body["application_name"], "myname");

    let listed = api.as_admin().get("/api/applications?limit=100").await;
    assert_status(&listed, StatusCode::OK);
    let tokens: Vec<&str> =
        listed.body.as_array().unwrap().iter().map(|a| a["application_token"].as_str().unwrap()).collect();
    assert!(tokens.contains(&token.as_str()) && tokens.contains(&other.as_str()));

    put_then_patch(api, &format!("/api/applications/{token}"), "application_name", "renamed").await;
    let empty_patch = api.send(Method::PATCH, &format!("/api/applications/{token}"), Some(&json!({}))).await;
    assert_status(&empty_patch, StatusCode::OK);
    assert_eq!(empty_patch.body["application_name"], "patched", "a PATCH without the field changes nothing");
    assert_eq!(api.get(&format!("/api/applications/{token}")).await.body["application_name"], "patched");

    let missing = api.get("/api/applications/00000000-0000-0000-0000-000000000000").await;
    assert_status(&missing, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "NOT_FOUND");
    let put_missing = api.send(Method::PUT, "/api/applications/nope", Some(&json!({ "application_name": "x" }))).await;
    assert_status(&put_missing, StatusCode::NOT_FOUND);
}

/// Bad application bodies: 422 for missing, blank, too long or mistyped names; 400 for
/// malformed JSON; 415 for a non-JSON body.
pub async fn application_validation_errors(api: &Api) {
    for body in [
        json!({}),
        json!({ "application_name": "" }),
        json!({ "application_name": "   " }),
        json!({ "application_name": 5 }),
        json!({ "application_name": null }),
        json!({ "application_name": "x".repeat(256) }),
        json!([1, 2]),
    ] {
        let reply = api.post("/api/applications", &body).await;
        assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.error_code(), "VALIDATION_FAILED", "{body}");
        assert!(reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let longest = api.post("/api/applications", &json!({ "application_name": "é".repeat(255) })).await;
    assert_status(&longest, StatusCode::CREATED);

    let malformed =
        api.send_raw(Method::POST, "/api/applications", "application/json", b"{\"application_name\":".to_vec()).await;
    assert_status(&malformed, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "BAD_REQUEST");
    let not_json = api.send_raw(Method::POST, "/api/applications", "text/plain", b"application_name=x".to_vec()).await;
    assert_status(&not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(not_json.error_code(), "UNSUPPORTED_MEDIA_TYPE");
    let huge = json!({ "application_name": "x".repeat(2 * 1024 * 1024) });
    let too_large =
        api.send_raw(Method::POST, "/api/applications", "application/json", huge.to_string().into_bytes()).await;
    assert_status(&too_large, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.error_code(), "PAYLOAD_TOO_LARGE");
}

/// Chats: numbered from 1 per application, readable, listable with `messages_count`, renamable.
pub async fn chats_lifecycle(api: &Api) {
    let token = api.create_application("chats").await;
    let other = api.create_application("other").await;
    let created = api.post(&format!("/api/applications/{token}/chats"), &json!({ "chat_name": "mychatname" })).await;
    assert_status(&created, StatusCode::CREATED);
    assert_eq!(created.body["type"], "chat");
    assert_eq!(created.body["application_token"], token.as_str());
    assert_eq!(created.body["chat_number"], 1);
    assert_eq!(created.body["chat_name"], "mychatname");
    assert_eq!(api.create_chat(&token, "second").await, 2);
    assert_eq!(api.create_chat(&other, "first elsewhere").await, 1, "numbers are per application");

    let shown = api.get_eventually(&format!("/api/applications/{token}/chats/2")).await;
    assert_status(&shown, StatusCode::OK);
    assert_eq!(shown.body["chat_name"], "second");
    assert_eq!(shown.body["messages_count"], 0);

    let listed = api
        .eventually(&format!("/api/applications/{token}/chats"), |r| r.body.as_array().is_some_and(|a| a.len() == 2))
        .await;
    assert_status(&listed, StatusCode::OK);
    let chats = listed.body.as_array().unwrap();
    assert_eq!(chats.iter().map(|c| c["chat_number"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert!(chats.iter().all(|c| c["messages_count"].is_i64() && c["type"] == "chat"));

    put_then_patch(api, &format!("/api/applications/{token}/chats/1"), "chat_name", "renamed").await;
    let blank =
        api.send(Method::PUT, &format!("/api/applications/{token}/chats/1"), Some(&json!({ "chat_name": " " }))).await;
    assert_status(&blank, StatusCode::UNPROCESSABLE_ENTITY);

    for path in [
        format!("/api/applications/{token}/chats/99"),
        format!("/api/applications/{token}/chats/0"),
        format!("/api/applications/{token}/chats/abc"),
        "/api/applications/unknown/chats/1".to_owned(),
        "/api/applications/unknown/chats".to_owned(),
    ] {
        let reply = api.get(&path).await;
        assert_status(&reply, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code(), "NOT_FOUND", "{path}");
    }
    let unknown_app = api.post("/api/applications/unknown/chats", &json!({ "chat_name": "x" })).await;
    assert_status(&unknown_app, StatusCode::NOT_FOUND);
    let missing_name = api.post(&format!("/api/applications/{token}/chats"), &json!({})).await;
    assert_status(&missing_name, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Messages through the seed's path and the REST alias share one numbering; readable,
/// listable and editable.
pub async fn messages_on_both_create_paths(api: &Api) {
    let token = api.create_application("messages").await;
    let chat = api.create_chat(&token, "room").await;
    let seed_path = api
        .post(&format!("/api/applications/{token}/chats/{chat}"), &json!({ "message_content": "hello world!" }))
        .await;
    assert_status(&seed_path, StatusCode::CREATED);
    assert_eq!(seed_path.body["type"], "message");
    assert_eq!(seed_path.body["application_token"], token.as_str());
    assert_eq!(seed_path.body["chat_number"], chat);
    assert_eq!(seed_path.body["message_number"], 1);
    assert_eq!(seed_path.body["message_content"], "hello world!");
    let alias = api
        .post(&format!("/api/applications/{token}/chats/{chat}/messages"), &json!({ "message_content": "second" }))
        .await;
    assert_status(&alias, StatusCode::CREATED);
    assert_eq!(alias.body["message_number"], 2);

    let shown = api.get_eventually(&format!("/api/applications/{token}/chats/{chat}/messages/2")).await;
    assert_status(&shown, StatusCode::OK);
    assert_eq!(shown.body["message_content"], "second");
    let listed = api
        .eventually(&format!("/api/applications/{token}/chats/{chat}/messages"), |r| {
            r.body.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let numbers: Vec<i64> =
        listed.body.as_array().unwrap().iter().map(|m| m["message_number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2], "GET .../messages lists, it does not create");

    put_then_patch(api, &format!("/api/applications/{token}/chats/{chat}/messages/1"), "message_content", "edited")
        .await;

    for (path, body) in [
        (format!("/api/applications/{token}/chats/{chat}"), json!({})),
        (format!("/api/applications/{token}/chats/{chat}"), json!({ "message_content": "" })),
        (format!("/api/applications/{token}/chats/{chat}"), json!({ "message_content": 7 })),
        (format!("/api/applications/{token}/chats/{chat}/messages"), json!({ "message_content": "x".repeat(10_001) })),
    ] {
        let reply = api.post(&path, &body).await;
        assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // The longest message fits the body limit even with every character sent as a JSON escape
    // (a surrogate pair each, 12 bytes).
    let escaped = format!(r#"{{"message_content":"{}"}}"#, "\\ud83d\\ude00".repeat(10_000));
    let path = format!("/api/applications/{token}/chats/{chat}/messages");
    let longest = api.send_raw(Method::POST, &path, "application/json", escaped.into_bytes()).await;
    assert_status(&longest, StatusCode::CREATED);
    assert_eq!(longest.body["message_content"], "\u{1F600}".repeat(10_000));
    for path in [
        format!("/api/applications/{token}/chats/99"),
        format!("/api/applications/{token}/chats/abc/messages"),
        format!("/api/applications/nope/chats/{chat}"),
    ] {
        let reply = api.post(&path, &json!({ "message_content": "x" })).await;
        assert_status(&reply, StatusCode::NOT_FOUND);
    }
    for path in [
        format!("/api/applications/{token}/chats/{chat}/messages/99"),
        format!("/api/applications/{token}/chats/{chat}/messages/x"),
        format!("/api/applications/{token}/chats/99/messages"),
    ] {
        assert_status(&api.get(&path).await, StatusCode::NOT_FOUND);
    }
}

/// 50 concurrent chat creations get exactly the numbers k+1..k+50.
pub async fn concurrent_chat_creations_get_exact_numbers(api: &Api) {
    let token = api.create_application("concurrent chats").await;
    let k = 3;
    for i in 0..k {
        api.create_chat(&token, &format!("before {i}")).await;
    }
    let numbers = futures::future::join_all((0..50).map(|i| {
        let api = api.clone();
        let token = token.clone();
        async move { api.create_chat(&token, &format!("concurrent {i}")).await }
    }))
    .await;
    let numbers: HashSet<i64> = numbers.into_iter().collect();
    assert_eq!(numbers, (k + 1..=k + 50).collect::<HashSet<_>>());
    let listed = api
        .eventually(&format!("/api/applications/{token}/chats?limit=100"), |r| {
            r.body.as_array().is_some_and(|a| a.len() == 53)
        })
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 53, "every 201 is persisted once");
}

/// 100 concurrent message creations in one chat get exactly 1..100, each persisted once.
pub async fn concurrent_message_creations_get_exact_numbers(api: &Api) {
    let token = api.create_application("concurrent messages").await;
    let chat = api.create_chat(&token, "busy").await;
    let numbers = futures::future::join_all((0..100).map(|i| {
        let api = api.clone();
        let token = token.clone();
        async move { api.create_message(&token, chat, &format!("message {i}")).await }
    }))
    .await;
    let numbers: HashSet<i64> = numbers.into_iter().collect();
    assert_eq!(numbers, (1..=100).collect::<HashSet<_>>());
    let path = format!("/api/applications/{token}/chats/{chat}/messages?limit=100");
    let listed = api.eventually(&path, |r| r.body.as_array().is_some_and(|a| a.len() == 100)).await;
    let persisted: Vec<i64> =
        listed.body.as_array().unwrap().iter().map(|m| m["message_number"].as_i64().unwrap()).collect();
    assert_eq!(persisted, (1..=100).collect::<Vec<_>>(), "every 201 is persisted exactly once");
}

/// A message can be created the moment its chat's 201 arrives.
pub async fn message_right_after_its_chat(api: &Api) {
    let token = api.create_application("eager").await;
    for round in 0..10 {
        let chat = api.create_chat(&token, &format!("chat {round}")).await;
        let first = api.create_message(&token, chat, "first!").await;
        assert_eq!(first, 1);
        let second = api
            .post(&format!("/api/applications/{token}/chats/{chat}/messages"), &json!({ "message_content": "second" }))
            .await;
        assert_eq!(second.body["message_number"], 2);
    }
    let last = api.get_eventually(&format!("/api/applications/{token}/chats/10/messages/2")).await;
    assert_eq!(last.body["message_content"], "second");
}

fn hit_numbers(reply: &crate::client::Reply) -> Vec<i64> {
    reply.body.as_array().map(|a| a.iter().map(|h| h["number"].as_i64().unwrap()).collect()).unwrap_or_default()
}

/// Search: case-insensitive, prefix-matching, scoped to one chat, ranked, follows edits.
pub async fn search_semantics(api: &Api) {
    let token = api.create_application("search").await;
    let chat = api.create_chat(&token, "searched").await;
    let other = api.create_chat(&token, "elsewhere").await;
    for content in ["Hello world!", "hello there", "helicopter", "nothing here", "HELLO again", "hellooo"] {
        api.create_message(&token, chat, content).await;
    }
    api.create_message(&token, other, "hello from the other chat").await;
    let search = |q: &str| format!("/api/applications/{token}/chats/{chat}/search?q={q}");

    let found = api.eventually(&search("HELLO"), |r| hit_numbers(r).len() == 4).await;
    assert_status(&found, StatusCode::OK);
    let numbers = hit_numbers(&found);
    assert_eq!(numbers.len(), 4, "case-insensitive, prefix, one chat: {}", found.text);
    assert_eq!(numbers.last(), Some(&6), "whole-word matches rank above prefix-only ones: {numbers:?}");
    assert_eq!(numbers[..3], [5, 2, 1], "equal relevance, newest first: {numbers:?}");
    let first = &found.body[2];
    assert_eq!(first["content"], "Hello world!");
    assert_eq!(first.as_object().unwrap().len(), 2, "hits are {{number, content}}");

    let mut prefix = hit_numbers(&api.get(&search("hel")).await);
    prefix.sort();
    assert_eq!(prefix, [1, 2, 3, 5, 6]);
    assert_eq!(hit_numbers(&api.get(&search("hello%20wor")).await), [1], "every term must match");
    assert!(hit_numbers(&api.get(&search("ello")).await).is_empty(), "no infix matches");

    let edit = api
        .send(
            Method::PUT,
            &format!("/api/applications/{token}/chats/{chat}/messages/1"),
            Some(&json!({ "message_content": "goodbye moon" })),
        )
        .await;
    assert_status(&edit, StatusCode::OK);
    let edited = api.eventually(&search("goodb"), |r| hit_numbers(r) == [1]).await;
    assert_eq!(hit_numbers(&edited), [1], "new words match");
    assert!(!hit_numbers(&api.get(&search("world")).await).contains(&1), "old words stop matching");
    let limited = api.get(&format!("/api/applications/{token}/chats/{chat}/search?q=hel&limit=2")).await;
    assert_eq!(hit_numbers(&limited).len(), 2);
}

/// The query from a JSON body on GET (the seed's way), `?search_query=` or `?q=`; errors.
pub async fn search_query_sources_and_errors(api: &Api) {
    let token = api.create_application("search sources").await;
    let chat = api.create_chat(&token, "room").await;
    api.create_message(&token, chat, "the quick brown fox").await;
    let path = format!("/api/applications/{token}/chats/{chat}/search");
    let by_body = api.eventually(&path, |_| true).await;
    assert_status(&by_body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(by_body.error_code(), "VALIDATION_FAILED", "a search without a query is a 422");

    let with_body = api.send(Method::GET, &path, Some(&json!({ "search_query": "QUICK" }))).await;
    let with_body = if hit_numbers(&with_body).is_empty() {
        api.eventually(&format!("{path}?q=quick"), |r| !hit_numbers(r).is_empty()).await;
        api.send(Method::GET, &path, Some(&json!({ "search_query": "QUICK" }))).await
    } else {
        with_body
    };
    assert_status(&with_body, StatusCode::OK);
    assert_eq!(with_body.body, json!([{ "number": 1, "content": "the quick brown fox" }]));
    assert_eq!(hit_numbers(&api.get(&format!("{path}?search_query=bro")).await), [1]);
    assert_eq!(hit_numbers(&api.get(&format!("{path}?q=fox")).await), [1]);
    assert_eq!(api.get(&format!("{path}?q=zebra")).await.body, json!([]), "no match is an empty list");

    let blank = api.send(Method::GET, &path, Some(&json!({ "search_query": "  " }))).await;
    assert_status(&blank, StatusCode::UNPROCESSABLE_ENTITY);
    let mistyped = api.send(Method::GET, &path, Some(&json!({ "search_query": 3 }))).await;
    assert_status(&mistyped, StatusCode::UNPROCESSABLE_ENTITY);
    let malformed = api.send_raw(Method::GET, &path, "application/json", b"{\"search_query\"".to_vec()).await;
    assert_status(&malformed, StatusCode::BAD_REQUEST);
    let not_json = api.send_raw(Method::GET, &path, "text/plain", b"quick".to_vec()).await;
    assert_status(&not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let too_long = api.get(&format!("{path}?q={}", "a".repeat(501))).await;
    assert_status(&too_long, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown_chat = api.get(&format!("/api/applications/{token}/chats/42/search?q=x")).await;
    assert_status(&unknown_chat, StatusCode::NOT_FOUND);
}

fn next_link(reply: &crate::client::Reply) -> Option<String> {
    let header = reply.header("link")?;
    header.split(", ").find(|l| l.ends_with("rel=\"next\"")).map(|l| l[1..l.find('>').unwrap()].to_owned())
}

/// The chat numbers of `first` and of every page its `next` links lead to, in order; fails past
/// `most` numbers (paging that does not terminate).
async fn chat_numbers_of_pages(api: &Api, first: String, most: usize) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut next = Some(first);
    while let Some(path) = next {
        let page = api.get(&path).await;
        assert_status(&page, StatusCode::OK);
        seen.extend(page.body.as_array().unwrap().iter().map(|c| c["chat_number"].as_i64().unwrap()));
        next = next_link(&page);
        assert!(seen.len() <= most, "pagination terminates: {seen:?}");
    }
    seen
}

/// Keyset pagination with `?limit=`, `?after=`, `?before=` and RFC 8288 `Link` headers.
pub async fn pagination_and_link_headers(api: &Api) {
    let token = api.create_application("pages").await;
    for i in 0..7 {
        api.create_chat(&token, &format!("chat {i}")).await;
    }
    let all = format!("/api/applications/{token}/chats");
    api.eventually(&all, |r| r.body.as_array().is_some_and(|a| a.len() == 7)).await;

    let seen = chat_numbers_of_pages(api, format!("{all}?limit=3"), 7).await;
    assert_eq!(seen, (1..=7).collect::<Vec<_>>(), "pages cover every chat once, in order");

    let after = api.get(&format!("{all}?limit=2&after=2")).await;
    assert_eq!(
        after.body.as_array().unwrap().iter().map(|c| c["chat_number"].as_i64().unwrap()).collect::<Vec<_>>(),
        [3, 4]
    );
    assert!(after.header("link").unwrap().contains("rel=\"prev\""));
    let before = api.get(&format!("{all}?limit=2&before=6")).await;
    assert_eq!(
        before.body.as_array().unwrap().iter().map(|c| c["chat_number"].as_i64().unwrap()).collect::<Vec<_>>(),
        [4, 5]
    );
    let last = api.get(&format!("{all}?limit=10")).await;
    assert!(next_link(&last).is_none(), "no next link on the last page");

    // Both cursors: the rows strictly between them, and paging stays inside the window.
    let windowed = chat_numbers_of_pages(api, format!("{all}?limit=2&after=1&before=6"), 4).await;
    assert_eq!(windowed, [2, 3, 4, 5], "between after=1 and before=6");

    for bad in ["limit=0", "limit=101", "limit=x", "after=-1", "before=abc"] {
        let reply = api.get(&format!("{all}?{bad}")).await;
        assert_status(&reply, StatusCode::BAD_REQUEST);
        assert_eq!(reply.error_code(), "BAD_REQUEST", "{bad}");
    }

    // Applications page by creation order, with a token as the cursor.
    let mut tokens = Vec::new();
    for i in 0..3 {
        tokens.push(api.create_application(&format!("paged {i}")).await);
    }
    let page = api.as_admin().get(&format!("/api/applications?limit=2&after={}", tokens[0])).await;
    let names: Vec<&str> =
        page.body.as_array().unwrap().iter().map(|a| a["application_token"].as_str().unwrap()).collect();
    assert_eq!(names, [tokens[1].as_str(), tokens[2].as_str()]);
    let bad_cursor = api.as_admin().get("/api/applications?after=not-a-token").await;
    assert_status(&bad_cursor, StatusCode::BAD_REQUEST);

    // Messages too.
    let chat = 1;
    for i in 0..5 {
        api.create_message(&token, chat, &format!("m{i}")).await;
    }
    let path = format!("/api/applications/{token}/chats/{chat}/messages");
    api.eventually(&path, |r| r.body.as_array().is_some_and(|a| a.len() == 5)).await;
    let first = api.get(&format!("{path}?limit=2")).await;
    assert_eq!(first.body.as_array().unwrap().len(), 2);
    let next = next_link(&first).expect("a next link");
    let second = api.get(&next).await;
    assert_eq!(second.body[0]["message_number"], 3);
}

/// `chats_count` and `messages_count` converge to the persisted rows after the count flush.
pub async fn counts_converge(api: &Api) {
    let token = api.create_application("counted").await;
    let busy = api.create_chat(&token, "busy").await;
    api.create_chat(&token, "quiet").await;
    api.create_chat(&token, "third").await;
    for i in 0..12 {
        api.create_message(&token, busy, &format!("m{i}")).await;
    }
    let app = api.eventually(&format!("/api/applications/{token}"), |r| r.body["chats_count"] == 3).await;
    assert_eq!(app.body["chats_count"], 3, "chats_count converges: {}", app.text);
    let chat =
        api.eventually(&format!("/api/applications/{token}/chats/{busy}"), |r| r.body["messages_count"] == 12).await;
    assert_eq!(chat.body["messages_count"], 12, "messages_count converges: {}", chat.text);
    let quiet = api.get(&format!("/api/applications/{token}/chats/2")).await;
    assert_eq!(quiet.body["messages_count"], 0);
    let listed = api.get(&format!("/api/applications/{token}/chats")).await;
    assert_eq!(listed.body[0]["messages_count"], 12, "lists carry the counts too");
}

/// A deleted message is a tombstone: no longer shown, listed, searched or counted, its number
/// never reused, a second DELETE and an edit of it 404s; a message deleted right after its 201
/// (its create possibly still queued) ends deleted too.
pub async fn message_delete_is_a_tombstone(api: &Api) {
    let token = api.create_application("deletes").await;
    let chat = api.create_chat(&token, "room").await;
    let base = format!("/api/applications/{token}/chats/{chat}");
    for content in ["keep one", "remove zebra", "keep three"] {
        api.create_message(&token, chat, content).await;
    }
    api.eventually(&format!("{base}/messages"), |r| r.body.as_array().is_some_and(|a| a.len() == 3)).await;
    let search = format!("{base}/search?q=zebra");
    api.eventually(&search, |r| r.body.as_array().is_some_and(|a| a.len() == 1)).await;

    let deleted = api.send(Method::DELETE, &format!("{base}/messages/2"), None).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    assert_status(&api.get(&format!("{base}/messages/2")).await, StatusCode::NOT_FOUND);
    let again = api.send(Method::DELETE, &format!("{base}/messages/2"), None).await;
    assert_status(&again, StatusCode::NOT_FOUND);
    assert_eq!(again.error_code(), "NOT_FOUND");
    let edit = api.send(Method::PUT, &format!("{base}/messages/2"), Some(&json!({"message_content": "back"}))).await;
    assert_status(&edit, StatusCode::NOT_FOUND);
    let listed = api.get(&format!("{base}/messages")).await;
    let numbers: Vec<i64> =
        listed.body.as_array().unwrap().iter().filter_map(|m| m["message_number"].as_i64()).collect();
    assert_eq!(numbers, vec![1, 3], "the deleted message is not listed");
    let gone = api.eventually(&search, |r| r.body.as_array().is_some_and(|a| a.is_empty())).await;
    assert_eq!(gone.body, json!([]), "the deleted message is not found by search");
    let counted = api.eventually(&base, |r| r.body["messages_count"] == 2).await;
    assert_eq!(counted.body["messages_count"], 2, "messages_count leaves it out: {}", counted.text);
    assert_eq!(api.create_message(&token, chat, "after the delete").await, 4, "its number is not reused");

    // Deleted straight after its 201: applied once its create is stored.
    let quick = api.create_message(&token, chat, "short-lived").await;
    let deleted = api.send(Method::DELETE, &format!("{base}/messages/{quick}"), None).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    let twice = api.send(Method::DELETE, &format!("{base}/messages/{quick}"), None).await;
    assert_status(&twice, StatusCode::NOT_FOUND);
    let listed = api
        .eventually(&format!("{base}/messages"), |r| {
            r.body
                .as_array()
                .is_some_and(|a| a.iter().map(|m| &m["message_number"]).eq([&json!(1), &json!(3), &json!(4)]))
        })
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 3, "{}", listed.text);
    assert_status(&api.get(&format!("{base}/messages/{quick}")).await, StatusCode::NOT_FOUND);

    for path in [format!("{base}/messages/99"), format!("/api/applications/{token}/chats/99/messages/1")] {
        let reply = api.send(Method::DELETE, &path, None).await;
        assert_status(&reply, StatusCode::NOT_FOUND);
    }
    let bad = api.send(Method::DELETE, &format!("{base}/messages/abc"), None).await;
    assert!(bad.status.is_client_error(), "{}", bad.text);
}

/// A user's read position only moves forward, never past the chat's last message; the unread
/// count is the messages above it, deleted ones left out, on its own route and in the chat list.
pub async fn read_positions_and_unread_counts(api: &Api) {
    let token = api.create_application("reads").await;
    let chat = api.create_chat(&token, "room").await;
    let other = api.create_chat(&token, "other").await;
    let base = format!("/api/applications/{token}/chats/{chat}");
    for i in 1..=5 {
        api.create_message(&token, chat, &format!("message {i}")).await;
    }
    api.eventually(&format!("{base}/messages"), |r| r.body.as_array().is_some_and(|a| a.len() == 5)).await;
    api.get_eventually(&format!("/api/applications/{token}/chats/{other}")).await;
    let read_path = format!("{base}/read");
    let read = |number: Value, user: &str| {
        let body = json!({ "user_id": user, "message_number": number });
        let path = read_path.clone();
        async move { api.send(Method::PUT, &path, Some(&body)).await }
    };

    let marked = read(json!(2), "ann").await;
    assert_status(&marked, StatusCode::OK);
    assert_eq!(marked.body, json!({"user_id": "ann", "chat_number": chat, "last_read": 2, "unread": 3}));
    let unread = api.get(&format!("{base}/unread?user_id=ann")).await;
    assert_eq!(unread.body, marked.body);
    // An integer written as 2.0 is an integer (as JSON Schema counts them).
    let same = read(json!(2.0), "ann").await;
    assert_status(&same, StatusCode::OK);
    let back = read(json!(1), "ann").await;
    assert_eq!((back.body["last_read"].as_i64(), back.body["unread"].as_i64()), (Some(2), Some(3)), "never back");

    let deleted = api.send(Method::DELETE, &format!("{base}/messages/4"), None).await;
    assert_status(&deleted, StatusCode::NO_CONTENT);
    let unread = api.eventually(&format!("{base}/unread?user_id=ann"), |r| r.body["unread"] == 2).await;
    assert_eq!(unread.body["unread"], 2, "a deleted message is not unread: {}", unread.text);
    let stranger = api.eventually(&format!("{base}/unread?user_id=bob"), |r| r.body["unread"] == 4).await;
    assert_eq!(stranger.body, json!({"user_id": "bob", "chat_number": chat, "last_read": 0, "unread": 4}));
    // Reading past a deleted message counts only the live ones moved over.
    let past = read(json!(5), "carl").await;
    assert_eq!(past.body["unread"], 0, "{}", past.text);
    let later = api.create_message(&token, chat, "message 6").await;
    let unread = api.eventually(&format!("{base}/unread?user_id=ann"), |r| r.body["unread"] == 3).await;
    assert_eq!(unread.body["unread"], 3, "a new message is unread: {}", unread.text);

    let listed = api.get(&format!("/api/applications/{token}/chats?user_id=ann")).await;
    let counts: Vec<(i64, i64)> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["chat_number"].as_i64().unwrap(), c["unread_count"].as_i64().unwrap()))
        .collect();
    assert_eq!(counts, vec![(chat, 3), (other, 0)], "{}", listed.text);
    let plain = api.get(&format!("/api/applications/{token}/chats")).await;
    assert!(plain.body[0].get("unread_count").is_none(), "only asked for: {}", plain.text);

    for (number, user) in
        [(json!(later + 50), "ann"), (json!(-1), "ann"), (json!("two"), "ann"), (json!(2.5), "ann"), (json!(1), "  ")]
    {
        let reply = read(number.clone(), user).await;
        assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.error_code(), "VALIDATION_FAILED", "{number} {user:?}: {}", reply.text);
    }
    assert_status(&api.get(&format!("{base}/unread")).await, StatusCode::BAD_REQUEST);
    let unknown = api
        .send(
            Method::PUT,
            &format!("/api/applications/{token}/chats/99/read"),
            Some(&json!({"user_id": "ann", "message_number": 1})),
        )
        .await;
    assert_status(&unknown, StatusCode::NOT_FOUND);
}

/// A create sent again with its `Idempotency-Key` answers the first 201, body and all, and
/// creates nothing more, however many retries run at once (on however many chat-write
/// replicas); the key with another body is a 422; keys are per application.
pub async fn idempotent_creates(api: &Api) {
    let token = api.create_application("retries").await;
    let chats = format!("/api/applications/{token}/chats");
    let create = |path: String, body: Value, key: &str| {
        let url = api.url_for(&Method::POST, &path);
        let key = key.to_owned();
        async move {
            let response =
                api.http.post(url).header("Idempotency-Key", key).json(&body).send().await.expect("a create");
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let first = create(chats.clone(), json!({"chat_name": "once"}), "chat-key-1").await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let again = create(chats.clone(), json!({"chat_name": "once"}), "chat-key-1").await;
    assert_eq!(again, first, "the same 201, body and all");
    let chat = first.1["chat_number"].as_i64().unwrap();
    api.get_eventually(&format!("{chats}/{chat}")).await;

    let messages = format!("{chats}/{chat}/messages");
    let sent = futures::future::join_all(
        (0..100).map(|_| create(messages.clone(), json!({"message_content": "exactly once"}), "message-key-1")),
    )
    .await;
    assert!(sent.iter().all(|(status, _)| *status == StatusCode::CREATED), "{:?}", &sent[..3]);
    assert!(sent.iter().all(|reply| reply.1 == sent[0].1), "every retry answers the same 201");
    // The seed's path is the same create: the key holds across both.
    let seed_path =
        create(format!("{chats}/{chat}"), json!({"message_content": "exactly once"}), "message-key-1").await;
    assert_eq!(seed_path.1, sent[0].1);
    let reused = create(messages.clone(), json!({"message_content": "something else"}), "message-key-1").await;
    assert_eq!(reused.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", reused.1);
    assert_eq!(reused.1["error"]["code"], "VALIDATION_FAILED");

    // One process draws one number for a storm of retries; each other chat-write replica they
    // reach may draw one it then skips, as it loses the write of the key's record.
    let next = api.create_message(&token, chat, "no key").await;
    assert!(next > sent[0].1["message_number"].as_i64().unwrap(), "numbers go on above the key's");
    let listed = api.eventually(&messages, |r| r.body.as_array().is_some_and(|a| a.len() == 2)).await;
    let contents: Vec<&str> =
        listed.body.as_array().unwrap().iter().filter_map(|m| m["message_content"].as_str()).collect();
    assert_eq!(contents, vec!["exactly once", "no key"], "one message per key");

    let elsewhere = api.create_application("other retries").await;
    let other =
        create(format!("/api/applications/{elsewhere}/chats"), json!({"chat_name": "once"}), "chat-key-1").await;
    assert_eq!(other.0, StatusCode::CREATED);
    assert_eq!(other.1["application_token"], elsewhere.as_str(), "keys are per application");

    let refused = create(chats.clone(), json!({"chat_name": "x"}), &"k".repeat(256)).await;
    assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{}", refused.1);
}

/// Every error is the JSON error body, never a 5xx for bad input.
pub async fn error_rules(api: &Api) {
    let unknown = api.get("/api/nothing-here").await;
    assert_status(&unknown, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "NOT_FOUND");
    let wrong_method = api.send(Method::DELETE, "/api/applications", None).await;
    assert_status(&wrong_method, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "METHOD_NOT_ALLOWED");

    let token = api.create_application("errors").await;
    let chat = api.create_chat(&token, "room").await;
    for path in &collection_paths(&token, chat) {
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            for (content_type, body) in [
                ("application/json", b"not json".to_vec()),
                ("application/json", b"{\"a\":".to_vec()),
                ("text/plain", b"{}".to_vec()),
                ("application/json", vec![0xff, 0xfe]),
                ("application/json", b"".to_vec()),
            ] {
                let reply = api.send_raw(method.clone(), path, content_type, body).await;
                assert!(
                    reply.status.is_client_error(),
                    "{method} {path} ({content_type}) answered {}: {}",
                    reply.status,
                    reply.text
                );
                assert!(
                    reply.body["error"]["code"].is_string(),
                    "{method} {path}: JSON error body, got {}",
                    reply.text
                );
            }
        }
    }
    // A path segment that does not decode is a JSON error too, on both services.
    for (method, path) in [
        (Method::GET, "/api/applications/%FF".to_owned()),
        (Method::GET, format!("/api/applications/{token}/chats/%FF")),
        (Method::GET, format!("/api/applications/{token}/chats/{chat}/messages/%FF")),
        (Method::POST, "/api/applications/%FF/chats".to_owned()),
        (Method::POST, format!("/api/applications/{token}/chats/%FF")),
    ] {
        let reply = api.send(method.clone(), &path, Some(&json!({"chat_name": "x", "message_content": "x"}))).await;
        assert_status(&reply, StatusCode::BAD_REQUEST);
        assert_eq!(reply.error_code(), "BAD_REQUEST", "{method} {path}: {}", reply.text);
    }

    let huge = vec![b'a'; 300 * 1024];
    let mut body = b"{\"message_content\":\"".to_vec();
    body.extend(huge);
    body.extend(b"\"}");
    let too_large =
        api.send_raw(Method::POST, &format!("/api/applications/{token}/chats/{chat}"), "application/json", body).await;
    assert_status(&too_large, StatusCode::PAYLOAD_TOO_LARGE);
    let mut search_body = b"{\"search_query\":\"".to_vec();
    search_body.extend(vec![b'a'; 300 * 1024]);
    search_body.extend(b"\"}");
    let search_path = format!("/api/applications/{token}/chats/{chat}/search");
    let too_large = api.send_raw(Method::GET, &search_path, "application/json", search_body).await;
    assert_status(&too_large, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.error_code(), "PAYLOAD_TOO_LARGE", "{}", too_large.text);
    let health = api.get("/healthz").await;
    assert_status(&health, StatusCode::OK);
    let ready = api.get("/readyz").await;
    assert_status(&ready, StatusCode::OK);
}

fn find_key(value: &Value, key: &str) -> bool {
    match value {
        Value::Object(map) => map.contains_key(key) || map.values().any(|v| find_key(v, key)),
        Value::Array(items) => items.iter().any(|v| find_key(v, key)),
        _ => false,
    }
}

/// No response carries an internal id.
pub async fn responses_never_carry_internal_ids(api: &Api) {
    let token = api.create_application("ids").await;
    let chat = api.create_chat(&token, "room").await;
    api.create_message(&token, chat, "hello").await;
    let mut paths = collection_paths(&token, chat);
    paths.push(format!("/api/applications/{token}/chats/{chat}/messages/1"));
    paths.push(format!("/api/applications/{token}/chats/{chat}/search?q=hello"));
    let admin = api.as_admin();
    for path in paths {
        let reply = admin.get_eventually(&path).await;
        assert_status(&reply, StatusCode::OK);
        for key in ["id", "application_id", "chat_id"] {
            assert!(!find_key(&reply.body, key), "{path} exposes {key}: {}", reply.text);
        }
    }
}

/// An application's token is its credential, for its own chats and messages alone; listing
/// every application (which shows their tokens) takes the operator's admin token.
pub async fn listing_applications_needs_the_admin_token(api: &Api) {
    let admin_token = api.admin_token.clone().expect("the deployment runs with an admin token");
    let mine = api.create_application("mine").await;
    let theirs = api.create_application("theirs").await;
    api.create_chat(&mine, "only chat").await;
    for name in ["first", "second", "third"] {
        api.create_chat(&theirs, name).await;
    }
    api.get_eventually(&format!("/api/applications/{theirs}/chats/3")).await;

    let refused = [
        ("no credential", api.clone()),
        ("an application's token", api.with_bearer(&mine)),
        ("a wrong token", api.with_bearer("not-the-admin-token")),
        ("the admin token's first half", api.with_bearer(&admin_token[..admin_token.len() / 2])),
    ];
    for (what, client) in refused {
        let reply = client.get("/api/applications").await;
        assert_status(&reply, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error_code(), "UNAUTHORIZED", "{what}: {}", reply.text);
        assert!(reply.body["error"]["message"].is_string(), "{what}: the JSON error body");
        for token in [&mine, &theirs] {
            assert!(!reply.text.contains(token.as_str()), "{what}: the refusal shows a token: {}", reply.text);
        }
        assert!(!reply.text.contains("application_token"), "{what}: {}", reply.text);
        // Nor does a page of the listing open with a cursor.
        let reply = client.get(&format!("/api/applications?after={mine}")).await;
        assert_status(&reply, StatusCode::UNAUTHORIZED);
    }

    let listed = api.as_admin().get("/api/applications?limit=100").await;
    assert_status(&listed, StatusCode::OK);
    let tokens: Vec<&str> =
        listed.body.as_array().unwrap().iter().map(|a| a["application_token"].as_str().unwrap()).collect();
    assert!(tokens.contains(&mine.as_str()) && tokens.contains(&theirs.as_str()), "{}", listed.text);

    // My token opens my application and its chats, and none of theirs: their chat 3 is not mine.
    let chats = api
        .eventually(&format!("/api/applications/{mine}/chats"), |r| r.body.as_array().is_some_and(|a| !a.is_empty()))
        .await;
    assert_status(&chats, StatusCode::OK);
    let names: Vec<&str> = chats.body.as_array().unwrap().iter().map(|c| c["chat_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["only chat"]);
    for path in [
        format!("/api/applications/{mine}/chats/3"),
        format!("/api/applications/{mine}/chats/3/messages"),
        format!("/api/applications/{mine}/chats/2"),
    ] {
        let reply = api.get(&path).await;
        assert_status(&reply, StatusCode::NOT_FOUND);
        assert!(!reply.text.contains(theirs.as_str()));
    }
}
