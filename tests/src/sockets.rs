//! Raw client sockets for the tests that check what a server lets a client hold: a request
//! trickled a byte at a time, and one request on a connection of its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` at once, then `trickle` one byte every `every`; how long after connecting the
/// server closed the connection, with what it answered, or `None` if still open at `give_up`.
pub async fn trickle(
    addr: SocketAddr,
    head: Vec<u8>,
    trickle: Vec<u8>,
    every: Duration,
    give_up: Duration,
) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&head).await.expect("head");
    let mut bytes = trickle.iter().cycle();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut next_byte = Instant::now();
    while started.elapsed() < give_up {
        if Instant::now() >= next_byte {
            if stream.write_all(&[*bytes.next().unwrap()]).await.is_err() {
                return Some((started.elapsed(), String::from_utf8_lossy(&answer).into_owned()));
            }
            next_byte += every;
        }
        let wait = next_byte.saturating_duration_since(Instant::now()).min(give_up.saturating_sub(started.elapsed()));
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some((started.elapsed(), String::from_utf8_lossy(&answer).into_owned())),
            Ok(Ok(read)) => answer.extend_from_slice(&buf[..read]),
            Err(_) => {}
        }
    }
    None
}

/// One request on a new connection, closed after it: the status and how long it took.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("an answer in time").unwrap();
    (status_of(&response), started.elapsed())
}

/// `count` connections that send nothing, held open until dropped.
pub async fn idle_connections(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(TcpStream::connect(addr).await.expect("idle connection"));
    }
    idle
}

/// `GET path` on a new connection every `pause` for `during`, each answering 200: how long
/// each took, shortest first.
pub async fn sorted_latencies(addr: SocketAddr, path: &str, during: Duration, pause: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let measuring = Instant::now();
    while measuring.elapsed() < during {
        let (status, took) = get(addr, path).await;
        assert_eq!(status, 200, "GET {path}");
        latencies.push(took);
        tokio::time::sleep(pause).await;
    }
    latencies.sort();
    latencies
}

/// `GET path` with a header of `padding` bytes on a new connection, closed after it: the whole
/// answer. The server may close before a large head is all written; what it answered counts.
pub async fn get_with_padded_head(addr: SocketAddr, path: &str, padding: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\nConnection: close\r\n\r\n", "a".repeat(padding));
    let _closed_early = stream.write_all(head.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.expect("in time");
    response
}

pub fn status_of(response: &[u8]) -> u16 {
    std::str::from_utf8(response.get(9..12).unwrap_or_default()).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}
