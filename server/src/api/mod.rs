//! The API: one NATS service endpoint per (kind, verb), all in one queue group so that
//! any number of servers share the requests. A handler only decodes the request, calls
//! a [`crate::service`] operation and encodes the reply.

mod lists;

use crate::context::Ctx;
use crate::error::ServerError;
use crate::service::resources::{self, Change};
use crate::service::{leases, nodes, secrets, tasks, tokens, volumes};
use crate::store::managed::Managed;
use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use std::sync::Arc;
use tokio::sync::Semaphore;
use voiyd_messages::v1::{ContainerSet, DeleteRequest, Job, Node, Task, Volume};
use voiyd_messages::Kind;
use voiyd_nats::api::{service_error, ErrorCode, MAX_REQUEST_BYTES};
use voiyd_nats::{chunks, names};

/// The verbs every managed kind answers.
const CRUD: &[&str] = &["create", "get", "list", "update", "patch", "delete", "plan"];

/// Every (kind, verb) the API serves.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    let mut r = Vec::new();
    for kind in [
        Kind::Task,
        Kind::Node,
        Kind::Volume,
        Kind::ContainerSet,
        Kind::Job,
    ] {
        for verb in CRUD {
            r.push((kind.plural(), *verb));
        }
    }
    for verb in ["start", "stop", "kill"] {
        r.push((Kind::Task.plural(), verb));
    }
    for verb in ["create", "get", "list", "update", "delete"] {
        r.push((Kind::Secret.plural(), verb));
    }
    r.push((Kind::Lease.plural(), "get"));
    r.push((Kind::Lease.plural(), "list"));
    r.push(("events", "list"));
    r.push(("tokens", "create"));
    r.push((voiyd_nats::auth::JOIN_KIND, voiyd_nats::auth::JOIN_VERB));
    r
}

/// The (kind, verb) of this server's readiness endpoint ([`names::api_ready_subject`]).
const READY: (&str, &str) = ("server", "ready");

/// How many requests one server handles at once.
const MAX_IN_FLIGHT: usize = 256;

/// Serves the API until the NATS connection closes.
pub async fn serve(
    client: async_nats::Client,
    ctx: Ctx,
    server_id: String,
) -> Result<(), async_nats::Error> {
    let service = client
        .service_builder()
        .description("voiyd control-plane API")
        .start(names::API_SERVICE, env!("CARGO_PKG_VERSION"))
        .await?;
    let mut endpoints = Vec::new();
    for (kind, verb) in routes() {
        let ep = service
            .endpoint_builder()
            .name(format!("{kind}-{verb}"))
            .add(names::api_subject(kind, verb))
            .await?;
        endpoints.push(ep.map(move |req| (kind, verb, req)).boxed());
    }
    // Last, so that an answer here means every endpoint above is subscribed.
    let ready = service
        .endpoint_builder()
        .name("server-ready")
        .add(names::api_ready_subject(&server_id))
        .await?;
    endpoints.push(ready.map(|req| (READY.0, READY.1, req)).boxed());
    let mut all = futures::stream::select_all(endpoints);
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    tracing::info!(subjects = %format!("{}.>", names::API_PREFIX), "API ready");
    while let Some((kind, verb, req)) = all.next().await {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let ctx = ctx.clone();
        tokio::spawn(async move {
            respond(&ctx, kind, verb, req).await;
            drop(permit);
        });
    }
    Ok(())
}

async fn respond(ctx: &Ctx, kind: &str, verb: &str, req: Request) {
    // One span per request, in the caller's trace when its headers name one.
    let span = tracing::info_span!("api", otel.name = %format!("api {kind}.{verb}"));
    if let Some(tp) = req
        .message
        .headers
        .as_ref()
        .and_then(|h| h.get(voiyd_telemetry::TRACEPARENT))
    {
        voiyd_telemetry::continue_from(&span, tp.as_str());
    }
    tracing::Instrument::instrument(respond_in_span(ctx, kind, verb, req), span).await
}

async fn respond_in_span(ctx: &Ctx, kind: &str, verb: &str, req: Request) {
    let started = std::time::Instant::now();
    let body = req.message.payload.clone();
    let result = if body.len() > MAX_REQUEST_BYTES {
        Err(ServerError::too_large(format!(
            "request is {} bytes, more than the limit of {MAX_REQUEST_BYTES}: split it up",
            body.len()
        )))
    } else if (kind, verb) == READY {
        Ok(vec![Bytes::new()])
    } else if verb == "list" {
        lists::list(ctx, kind, body).await
    } else {
        handle(ctx, kind, verb, body).await.map(|b| vec![b])
    };
    let result = result.and_then(|chunks| {
        if chunks.len() > 1 && !accepts_chunks(&req) {
            return Err(ServerError::too_large(format!(
                "the {kind} list needs {} replies and this client reads only one: upgrade it, or narrow the list with a selector",
                chunks.len()
            )));
        }
        Ok(chunks)
    });
    let code = result
        .as_ref()
        .map(|_| 200)
        .unwrap_or_else(|f| f.code() as u16);
    crate::metrics::record_request(kind, verb, code, started.elapsed());
    let sent = match result {
        Ok(chunks) if chunks.len() > 1 => send_chunks(ctx, &req, chunks).await,
        Ok(mut chunks) => req.respond(Ok(chunks.pop().unwrap_or_default())).await,
        Err(f) => {
            let code = f.code();
            if code == ErrorCode::Internal || code == ErrorCode::Unavailable {
                tracing::warn!(kind, verb, error = %f.message(), "request failed");
            } else {
                tracing::debug!(kind, verb, error = %f.message(), "request refused");
            }
            req.respond(Err(service_error(code, f.message()))).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(kind, verb, error = %e, "cannot send reply");
    }
}

fn accepts_chunks(req: &Request) -> bool {
    req.message
        .headers
        .as_ref()
        .and_then(|h| h.get(chunks::ACCEPT_CHUNKS))
        .is_some_and(|v| v.as_str() == "1")
}

/// Publishes a list's chunks to the request's reply subject, in order, from this one
/// connection (so they arrive in order). A client that went away costs nothing more:
/// NATS drops messages to a subject nobody listens on.
async fn send_chunks(
    ctx: &Ctx,
    req: &Request,
    chunks: Vec<Bytes>,
) -> Result<(), async_nats::PublishError> {
    let Some(reply) = req.message.reply.clone() else {
        return Ok(());
    };
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(chunks::CHUNK, chunks::header_value(i, count).as_str());
        ctx.client
            .publish_with_headers(reply.clone(), headers, chunk)
            .await?;
    }
    Ok(())
}

fn encode<M: Message>(m: M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

fn decode<M: Message + Default>(body: Bytes) -> Result<M, ServerError> {
    Ok(M::decode(body)?)
}

/// An update or a patch, decoded.
fn change<R: Managed>(verb: &str, body: Bytes) -> Result<Change<R>, ServerError> {
    Ok(match verb {
        "patch" => Change::Patch(decode(body)?),
        _ => Change::Replace(decode(body)?),
    })
}

/// Dispatches one request: decode, call the service, encode.
pub(crate) async fn handle(
    ctx: &Ctx,
    kind: &str,
    verb: &str,
    body: Bytes,
) -> Result<Bytes, ServerError> {
    match kind {
        "tasks" => match verb {
            "start" | "stop" | "kill" => tasks::action(ctx, verb, &decode(body)?).await.map(encode),
            "create" => tasks::create(ctx, decode(body)?).await.map(encode),
            "update" | "patch" => tasks::update(ctx, change(verb, body)?).await.map(encode),
            "delete" => tasks::delete(ctx, &decode(body)?).await.map(encode),
            _ => crud::<Task>(ctx, verb, body).await,
        },
        "nodes" if verb == "delete" => nodes::delete(ctx, &decode(body)?).await.map(encode),
        "nodes" if verb == voiyd_nats::auth::JOIN_VERB => {
            tokens::join(ctx, &decode(body)?).await.map(encode)
        }
        "nodes" => crud::<Node>(ctx, verb, body).await,
        "tokens" if verb == "create" => tokens::create_token(ctx, &decode(body)?).await.map(encode),
        "volumes" => match verb {
            "update" | "patch" => volumes::update(ctx, change(verb, body)?).await.map(encode),
            "delete" => volumes::delete(ctx, &decode(body)?).await.map(encode),
            _ => crud::<Volume>(ctx, verb, body).await,
        },
        "sets" => crud::<ContainerSet>(ctx, verb, body).await,
        "jobs" => crud::<Job>(ctx, verb, body).await,
        "secrets" => match verb {
            "create" => secrets::create(ctx, decode(body)?).await.map(encode),
            "get" => secrets::get(ctx, &decode(body)?).await.map(encode),
            "update" => secrets::update(ctx, decode(body)?).await.map(encode),
            "delete" => secrets::delete(ctx, &decode(body)?).await.map(encode),
            _ => Err(ServerError::invalid(format!(
                "unknown verb `{verb}` for secrets: create, get, list, update, delete"
            ))),
        },
        "leases" if verb == "get" => leases::get(ctx, &decode(body)?).await.map(encode),
        _ => Err(ServerError::invalid(format!("unknown API kind `{kind}`"))),
    }
}

async fn crud<R: Managed>(ctx: &Ctx, verb: &str, body: Bytes) -> Result<Bytes, ServerError> {
    match verb {
        "plan" => crate::service::plan::plan::<R>(ctx, decode(body)?)
            .await
            .map(encode),
        "create" => resources::create::<R>(ctx, decode(body)?).await.map(encode),
        "get" => resources::get::<R>(ctx, &decode(body)?).await.map(encode),
        "update" => resources::update::<R>(ctx, decode(body)?).await.map(encode),
        "patch" => resources::patch::<R>(ctx, &decode(body)?).await.map(encode),
        "delete" => {
            let req: DeleteRequest = decode(body)?;
            resources::delete::<R>(ctx, &req)
                .await
                .map(|_| encode(resources::deleted(&req.name)))
        }
        _ => Err(ServerError::invalid(format!(
            "unknown verb `{verb}` for {}",
            R::KIND.plural()
        ))),
    }
}
