//! The gateway's own requests to its upstreams (health checks, OpenAPI documents): one `GET` on
//! a fresh connection with hyper's HTTP/1 client, bounded by a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `GET path` from `addr` on a fresh connection (closed after it), all within `timeout`. With
/// `max_body`, the body is read whole (more than `max_body` bytes is an error); without, only
/// the status is waited for. Errors are short texts for the log: `connect: ...`,
/// `no answer within ...`.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
    max_body: Option<usize>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("connect: {e}"))?;
        let mut request = Request::get(path)
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "chatmesh-gateway")
            .header(header::CONNECTION, "close");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| format!("request: {e}"))?;
        let exchange = async move {
            let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let Some(max_body) = max_body else { return Ok((status, Bytes::new())) };
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| format!("read: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        // The connection is driven alongside the exchange, and dropped (closed) with it.
        tokio::pin!(connection);
        tokio::select! {
            outcome = exchange => outcome,
            Err(error) = &mut connection => Err(format!("connection: {error}")),
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers one request on `listener` with `response`.
    pub(crate) async fn serve_once(listener: &TcpListener, response: &'static str) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await.unwrap();
        socket.write_all(response.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_within_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(500);
        let limit = Some(16);

        let server = serve_once(&listener, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}");
        let (outcome, ()) = tokio::join!(get(addr, "/x", None, limit, timeout), server);
        assert_eq!(outcome.unwrap(), (StatusCode::OK, Bytes::from_static(b"{\"a\":1}")));

        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":2}\r\n0\r\n\r\n";
        let server = serve_once(&listener, chunked);
        let (outcome, ()) = tokio::join!(get(addr, "/x", None, limit, timeout), server);
        assert_eq!(outcome.unwrap().1, Bytes::from_static(b"{\"a\":2}"));

        let server = serve_once(&listener, "HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"a\":\"0123456789ab\"}");
        let (outcome, ()) = tokio::join!(get(addr, "/x", None, limit, timeout), server);
        assert!(outcome.unwrap_err().starts_with("read"), "over the limit");

        let server = serve_once(&listener, "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}");
        let (outcome, ()) = tokio::join!(get(addr, "/x", None, limit, timeout), server);
        assert_eq!(outcome.unwrap().0, StatusCode::NOT_FOUND);
    }
}
