//! No client can hold the gateway: request heads and bodies that trickle are cut off (in the
//! express lane and in pingora-proxy's), oversized heads refused, idle connections do not slow
//! it down, and past the connection cap new connections are refused.

use std::time::{Duration, Instant};

use chatmesh_e2e::sockets::{get, status_of, trickle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{addr, chat_read_gateway, exchange};

/// 150 trickled heads and 50 trickled bodies (half small enough for the express lane, half
/// streamed by pingora-proxy), a byte a second against a 3 s head and 5 s body limit: all cut off
/// soon after their limit, heads with a 408; the gateway still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_heads_and_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gateway) =
        chat_read_gateway(dir.path(), &[("head_timeout_ms", "3000"), ("body_timeout_ms", "5000")]);
    let addr = addr(&gateway);
    let (every, give_up) = (Duration::from_secs(1), Duration::from_secs(20));
    let mut heads = Vec::new();
    for _ in 0..150 {
        let slow =
            b"GET /api/applications HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
        heads.push(tokio::spawn(trickle(addr, Vec::new(), slow, every, give_up)));
    }
    let mut bodies = Vec::new();
    for i in 0..50 {
        // 1000 bytes: the express lane reads it; 300,000: over its limit, pingora-proxy streams it.
        let length = if i % 2 == 0 { 1000 } else { 300_000 };
        let head = format!(
            "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        bodies.push(tokio::spawn(trickle(addr, head.into_bytes(), b"{\"name\":\"".to_vec(), every, give_up)));
    }
    let mut head_times = Vec::new();
    for task in heads {
        let (took, answer) = task.await.unwrap().expect("a trickled head is cut off");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        head_times.push(took);
    }
    let mut body_times = Vec::new();
    for task in bodies {
        let (took, answer) = task.await.unwrap().expect("a trickled body is cut off");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
        body_times.push(took);
    }
    let span = |times: &[Duration]| (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    let (head_span, body_span) = (span(&head_times), span(&body_times));
    println!("heads cut off after {head_span:?}, bodies after {body_span:?}");
    assert!(head_span.0 >= Duration::from_millis(2900) && head_span.1 < Duration::from_secs(6), "{head_span:?}");
    assert!(body_span.0 >= Duration::from_millis(4900) && body_span.1 < Duration::from_secs(8), "{body_span:?}");
    assert_eq!(get(addr, "/healthz").await.0, 200, "the gateway is still up");
}

/// 800 idle connections do not move the p99 of `/healthz` (on new connections) above 200 ms;
/// a head over 64 KiB gets a 431, one under it goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_slow_it_and_large_heads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gateway) = chat_read_gateway(dir.path(), &[]);
    let addr = addr(&gateway);
    let mut idle = Vec::new();
    for _ in 0..800 {
        idle.push(TcpStream::connect(addr).await.expect("idle connection"));
    }
    let mut latencies = Vec::new();
    let measuring = Instant::now();
    while measuring.elapsed() < Duration::from_secs(8) {
        let (status, took) = get(addr, "/healthz").await;
        assert_eq!(status, 200);
        latencies.push(took);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    println!("gateway /healthz beside 800 idle connections: {} requests, p99 {p99:?}", latencies.len());
    assert!(p99 < Duration::from_millis(200), "p99 {p99:?}");

    for (padding, expected) in [(60 * 1024, 200), (65 * 1024, 431), (1024 * 1024, 431)] {
        let head = format!(
            "GET /api/applications HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(padding)
        );
        let (statuses, text) = exchange(addr, head.as_bytes()).await;
        assert_eq!(statuses.first(), Some(&expected), "{padding}: {text}");
    }
    drop(idle);
}

/// Past `max_connections` a new connection is closed at once; the open ones are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gateway) = chat_read_gateway(dir.path(), &[("max_connections", "4")]);
    let addr = addr(&gateway);
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(status_of(&buf[..read]), 200);
        open.push(stream);
    }
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(closed, Ok(0) | Err(_)), "a fifth connection is refused: {closed:?}");

    let first = &mut open[0];
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(status_of(&buf[..read]), 200, "an open connection is still served");
    drop(open);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(addr, "/healthz").await.0, 200, "served again once connections closed");
}
