//! The network checks of probes, from the node to the task's address: a TCP connect, and
//! an HTTP/1.1 GET judged by its status line. The GET is written here (a request line,
//! a few headers, the status line read back) rather than through an HTTP client crate:
//! a probe needs nothing else, as the kubelet's own prober reads only the status.

use crate::decide::probe::Outcome;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a TCP connection to `addr` within `timeout`.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Outcome::Pass,
        Ok(Err(e)) => Outcome::Fail(format!("dial tcp {addr}: {e}")),
        Err(_) => Outcome::Fail(format!(
            "dial tcp {addr}: no answer within {}s",
            timeout.as_secs_f32()
        )),
    }
}

/// GETs `path` from `addr` within `timeout`; a status of 200-399 passes.
pub async fn http(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    match tokio::time::timeout(timeout, get(addr, path, headers)).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Outcome::Pass,
        Ok(Ok(status)) => Outcome::Fail(format!(
            "GET http://{addr}{path}: HTTP probe failed with status code {status}"
        )),
        Ok(Err(e)) => Outcome::Fail(format!("GET http://{addr}{path}: {e}")),
        Err(_) => Outcome::Fail(format!(
            "GET http://{addr}{path}: no answer within {}s",
            timeout.as_secs_f32()
        )),
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: voiyd-probe/1\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            return status_of(&head[..end]).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "not an HTTP response: {}",
                        String::from_utf8_lossy(&head[..end.min(80)])
                    ),
                )
            });
        }
        if head.len() > 4096 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "status line longer than 4 KiB",
            ));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a status line",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// The status code of an HTTP/1.x status line.
fn status_of(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_of(b"SSH-2.0-OpenSSH"), None);
    }

    async fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_passes_on_2xx_3xx_and_fails_otherwise() {
        let ok = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(
            http(ok, "/", &[], Duration::from_secs(2)).await,
            Outcome::Pass
        );
        let bad = serve_once(b"HTTP/1.1 500 Oops\r\n\r\n").await;
        match http(bad, "/x", &[], Duration::from_secs(2)).await {
            Outcome::Fail(m) => assert!(m.contains("500") && m.contains("/x"), "{m}"),
            Outcome::Pass => panic!("500 passed"),
        }
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr");
        match http(addr, "/", &[], Duration::from_millis(200)).await {
            Outcome::Fail(m) => assert!(m.contains("no answer"), "{m}"),
            Outcome::Pass => panic!("silence passed"),
        }
        drop(silent);
        assert!(matches!(
            tcp(addr, Duration::from_secs(1)).await,
            Outcome::Fail(_)
        ));
        let open = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = open.local_addr().expect("addr");
        assert_eq!(tcp(a, Duration::from_secs(1)).await, Outcome::Pass);
    }
}
