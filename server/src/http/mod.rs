//! The HTTP API (`voiyd-server --http-addr`): JSON over HTTP for every kind and verb of
//! the NATS API, events and task logs as Server-Sent Events, and on the same listener
//! `/metrics`, `/healthz` and the web dashboard at `/` (crate `voiyd-ui`). Each request goes through the same operations as its NATS twin
//! ([`crate::api::handle`]), so validation, errors and effects are the same; any
//! number of servers can serve it, as they share nothing but the store.
//!
//! With `--auth`, every `/api` request needs `Authorization: Bearer TOKEN`, a token
//! from `voiydctl token create --admin` (checked against `voiyd_api_tokens`).

mod events;
mod exec;
mod logs;
mod openapi;
mod resources;
pub mod tls;

use crate::context::Ctx;
use crate::error::ServerError;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use voiyd_nats::api::MAX_REQUEST_BYTES;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The server's operations.
    pub ctx: Ctx,
    /// The server's NATS link (SSE follows the events stream across reconnects).
    pub link: voiyd_nats::Link,
}

/// A failed HTTP request: a status and a one-line message, sent as
/// `{"code": 404, "error": "..."}`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<ServerError> for HttpError {
    fn from(e: ServerError) -> HttpError {
        // The API's codes are HTTP's (400, 404, 409, 413, 500, 503).
        let status =
            StatusCode::from_u16(e.code() as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(error = %e.message(), "HTTP request failed");
        }
        HttpError::new(status, e.message())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.status.as_u16(), "error": self.message});
        let mut r = json_response(self.status, body.to_string());
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// A JSON body with its content type.
fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

/// The API's routes (without `/metrics`).
pub fn router(state: HttpState) -> Router {
    let api = Router::new()
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/tokens", post(resources::create_token))
        .route(
            "/api/v1/{kind}",
            get(resources::list).post(resources::create),
        )
        .route(
            "/api/v1/{kind}/{name}",
            get(resources::get)
                .put(resources::update)
                .patch(resources::patch)
                .delete(resources::delete),
        )
        .route("/api/v1/tasks/{name}/logs", get(logs::logs))
        .route("/api/v1/tasks/{name}/exec", get(exec::exec))
        .route(
            "/api/v1/tasks/{name}/{action}",
            post(resources::task_action),
        )
        .fallback(|| async {
            HttpError::not_found("no such API path: see docs/http-api.md (e.g. GET /api/v1/tasks)")
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        // The NATS API's limit: a bigger body is refused with 413 before it is read.
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES));
    api.with_state(state)
}

/// With `--auth`, refuses `/api` requests without a valid API token (401).
async fn require_token(
    State(state): State<HttpState>,
    req: Request,
    next: Next,
) -> Result<Response, HttpError> {
    if state.ctx.auth.is_none() {
        return Ok(next.run(req).await);
    }
    let refused = |why: &str| {
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            format!("{why}: pass Authorization: Bearer TOKEN with a token from `voiydctl token create --admin`"),
        )
    };
    // Browsers' EventSource cannot send headers: GET requests (streams) may carry the
    // token as `?access_token=` instead.
    let from_query = (req.method() == axum::http::Method::GET)
        .then(|| req.uri().query())
        .flatten()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .map(|t| t.to_string())
        });
    // Over HTTPS, a client certificate the cluster's CA issued to an administrator.
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<tls::Peer>>()
        .and_then(|c| c.0.admin.clone());
    if let Some(admin) = peer {
        tracing::debug!(%admin, "HTTP request by an administrator's certificate");
        return Ok(next.run(req).await);
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or(from_query)
        .ok_or_else(|| refused("no API token"))?;
    if !crate::service::tokens::check_api_token(&state.ctx, &token).await? {
        return Err(refused("the API token is unknown or expired"));
    }
    Ok(next.run(req).await)
}

/// Errors starting the listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address cannot be bound.
    #[error("cannot listen for HTTP on {addr}: {source}; pick another --http-addr")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Binds `addr` and serves the API, the dashboard, `/metrics` and `/healthz` until the
/// returned task is aborted; over TLS with `tls` (PEM certificate chain and key).
/// Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    collect: voiyd_metrics::Collector,
    tls: Option<HttpsFiles<'_>>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let bind = |source| ListenError::Bind { addr, source };
    let config = tls
        .map(|f| tls::server_config(f.cert, f.key, f.ca))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    // The OpenAPI document, like the page, needs no token: it holds no data.
    let app = voiyd_ui::routes()
        .route("/api/v1/openapi.json", axum::routing::get(openapi::openapi))
        .merge(voiyd_metrics::routes(collect))
        .merge(router(state));
    let scheme = if config.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, "HTTP API at {scheme}://{bound}/api/v1");
    let task = match config {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config).map_err(bind)?;
            // Each request learns who is at the other end (its client certificate).
            let app = app.into_make_service_with_connect_info::<tls::Peer>();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(error = %e, "HTTP API stopped");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "HTTP API stopped");
            }
        }),
    };
    Ok((bound, task))
}

/// The files of the HTTPS listener: the server's certificate chain and key, and the
/// CA whose client certificates it accepts.
#[derive(Debug, Clone, Copy)]
pub struct HttpsFiles<'a> {
    /// PEM certificate chain.
    pub cert: &'a std::path::Path,
    /// PEM private key.
    pub key: &'a std::path::Path,
    /// PEM CA certificate(s) for client certificates.
    pub ca: Option<&'a std::path::Path>,
}
