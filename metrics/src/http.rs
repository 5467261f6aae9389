//! `/metrics` (the [`global`](crate::global) registry, after the collector ran) and
//! `/healthz`, served by axum on the `--metrics-addr` listener.

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::registry::{global, Collector};

/// The exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors starting the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}; pick another --metrics-addr")]
pub struct ListenError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// The endpoint's routes.
pub fn router(collect: Collector) -> Router {
    routes(collect)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /metrics\n").into_response() })
}

/// `/metrics` and `/healthz` without a fallback, to merge into another router.
pub fn routes(collect: Collector) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let collect = collect.clone();
                async move {
                    collect().await;
                    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], global().render())
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Binds `addr` and serves [`router`] until the returned task is aborted. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    collect: Collector,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { addr, source })?;
    tracing::info!(addr = %bound, "metrics at /metrics");
    let app = router(collect);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        resp
    }

    #[tokio::test]
    async fn serves_metrics_health_and_not_found_over_http() {
        global().inc("voiyd_test_hits_total", "Test.", &[], 1.0);
        let collect: Collector = Arc::new(|| {
            Box::pin(async {
                global().set("voiyd_test_collected", "Set at scrape.", &[], 7.0);
            })
        });
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), collect)
            .await
            .unwrap();
        let resp = get(addr, "/metrics").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(
            resp.to_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{resp}"
        );
        assert!(resp.contains("voiyd_test_hits_total 1\n"), "{resp}");
        assert!(resp.contains("voiyd_test_collected 7\n"), "{resp}");
        assert!(get(addr, "/healthz").await.ends_with("\r\n\r\nok\n"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }

    #[tokio::test]
    async fn a_taken_port_says_to_pick_another() {
        let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = held.local_addr().unwrap();
        let collect: Collector = Arc::new(|| Box::pin(async {}));
        let e = serve(addr, collect).await.unwrap_err();
        assert!(
            e.to_string().ends_with("pick another --metrics-addr"),
            "{e}"
        );
    }
}
