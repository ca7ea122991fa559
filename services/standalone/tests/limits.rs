//! No client can hold the server: slow heads and bodies are cut off, oversized heads refused,
//! idle connections closed, and past the connection cap new connections wait — over real
//! sockets against the standalone server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatmesh_e2e::sockets::{get, get_with_padded_head, idle_connections, sorted_latencies, status_of, trickle};
use shared::http::ServeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn spawn(limits: ServeLimits) -> chatmesh::testing::Standalone {
    chatmesh::testing::spawn(|config| config.http = limits).await
}

/// How long after connecting the server closed a trickled request (see [`trickle`]).
async fn cut_off(
    addr: SocketAddr,
    head: Vec<u8>,
    slow: Vec<u8>,
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    trickle(addr, head, slow, every, give_up).await.map(|(took, _)| took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// With the default limits: 150 clients trickling a request head and 50 trickling a body, one
/// byte every 10 s, are all cut off within 75 s, while 800 idle connections and those 200 do
/// not slow `/healthz` down, and the server still answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_are_cut_off_and_idle_ones_do_not_slow_the_server() {
    let server = spawn(ServeLimits::default()).await;
    let addr = server.addr;
    let every = Duration::from_secs(10);
    let give_up = Duration::from_secs(75);

    let idle = idle_connections(addr, 800).await;
    let mut heads = Vec::new();
    for _ in 0..150 {
        let slow_head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".to_vec();
        heads.push(tokio::spawn(cut_off(addr, Vec::new(), slow_head, every, give_up)));
    }
    let mut bodies = Vec::new();
    for _ in 0..50 {
        let head = b"POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n".to_vec();
        bodies.push(tokio::spawn(cut_off(addr, head, b"{\"name\":\"".to_vec(), every, give_up)));
    }

    // /healthz on a new connection each time while all of them are open (the idle ones are
    // closed by the head timeout after 30 s).
    let latencies = sorted_latencies(addr, "/healthz", Duration::from_secs(20), Duration::from_millis(40)).await;
    let p99 = percentile(&latencies, 0.99);
    println!(
        "/healthz beside 800 idle and 200 trickling connections: {} requests, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        p99,
        latencies.last().unwrap()
    );
    assert!(p99 < Duration::from_millis(200), "p99 {p99:?}");

    let cut = |name: &str, times: Vec<Option<Duration>>| {
        let still_open = times.iter().filter(|t| t.is_none()).count();
        assert_eq!(still_open, 0, "{still_open} {name} trickles still open after {give_up:?}");
        let times: Vec<Duration> = times.into_iter().flatten().collect();
        println!(
            "{name}: {} cut off after {:?} to {:?}",
            times.len(),
            times.iter().min().unwrap(),
            times.iter().max().unwrap()
        );
    };
    let mut head_times = Vec::new();
    for task in heads {
        head_times.push(task.await.unwrap());
    }
    cut("heads", head_times);
    let mut body_times = Vec::new();
    for task in bodies {
        body_times.push(task.await.unwrap());
    }
    cut("bodies", body_times);

    let mut closed = 0;
    for mut connection in idle {
        let mut buf = [0u8; 16];
        if matches!(
            tokio::time::timeout(Duration::from_millis(100), connection.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    assert_eq!(closed, 800, "idle connections are closed by the head timeout");
    assert_eq!(get(addr, "/healthz").await.0, 200, "the server is still up");
}

/// A head over 64 KiB is answered 431; one just under it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_64_kib_are_refused() {
    let server = spawn(ServeLimits::default()).await;
    for (padding, expected) in [(60 * 1024, 200), (65 * 1024, 431), (1024 * 1024, 431)] {
        let response = get_with_padded_head(server.addr, "/healthz", padding).await;
        assert_eq!(status_of(&response), expected, "{padding} bytes of header: {}", String::from_utf8_lossy(&response));
    }
    let (status, _) = get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
}

/// An idle keep-alive connection and a connection that never sends anything are closed after
/// the head timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_head_timeout() {
    let limits = ServeLimits { http_head_timeout_ms: 500, ..ServeLimits::default() };
    let server = spawn(limits).await;
    let mut kept_alive = TcpStream::connect(server.addr).await.unwrap();
    kept_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let read = kept_alive.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..read]), 200);
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    for mut connection in [kept_alive, silent] {
        let closed = tokio::time::timeout(Duration::from_secs(5), connection.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "closed: {closed:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// Past the connection cap a new connection waits (in the kernel's backlog) and is served as
/// soon as another closes; the ones already open are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_wait_their_turn() {
    let limits = ServeLimits { http_max_connections: 4, ..ServeLimits::default() };
    let server = spawn(limits).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(status_of(&buf[..read]), 200);
        open.push(stream);
    }
    let waiting = tokio::spawn(get(server.addr, "/healthz"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a fifth connection is not served while four are open");

    let mut first = open.remove(0);
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(status_of(&buf[..read]), 200, "an open connection is still served");
    drop(first);
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("served once one closed").unwrap();
    assert_eq!(status, 200);
}
