//! `GET /api/v1/events`: the events stream, as a JSON list or, with
//! `Accept: text/event-stream` (or `?watch=true`), as Server-Sent Events that follow it.
//!
//! Query: `kind`, `name` (as `voiydctl events`), `since=SEQ` (first sequence, inclusive)
//! or `last=N` (from the N-th newest event of the whole stream), `limit` (lists only). Each SSE message carries the event's stream sequence as its
//! `id`, so a client that reconnects with `Last-Event-ID` (browsers' EventSource do)
//! resumes right after the last event it saw: none skipped, none twice. Without
//! either, a watch starts with the next event. The stream opens with a comment
//! (`: following events after SEQ`) once the watch is in place.

use super::{json_response, HttpError, HttpState};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use voiyd_messages::v1::{Event, EventsRequest};
use voiyd_messages::Kind;
use voiyd_nats::names;

/// Events queued for one slow SSE client before its stream is ended (it resumes from
/// its `Last-Event-ID` on reconnecting).
const SSE_BUFFER: usize = 1024;

/// The handler.
pub async fn events(
    State(st): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let kind = match q.get("kind").map(String::as_str) {
        None | Some("") => String::new(),
        Some(k) => Kind::parse(k)
            .map(|k| k.singular().to_string())
            .ok_or_else(|| {
                HttpError::bad_request(format!("?kind={k}: use task, node, volume, set or job"))
            })?,
    };
    let name = q.get("name").cloned().unwrap_or_default();
    let number = |key: &str| -> Result<Option<u64>, HttpError> {
        q.get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| HttpError::bad_request(format!("?{key}={v}: give a whole number")))
            })
            .transpose()
    };
    // `last=N`: the N newest events first (a page showing recent history, then live).
    let since = match number("last")? {
        Some(n) => Some((last_sequence(&st).await? + 1).saturating_sub(n).max(1)),
        None => number("since")?,
    };
    let watch = super::resources::flag_value(q.get("watch").map(String::as_str), "watch")?
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    if !watch {
        let req = EventsRequest {
            since_seq: since.unwrap_or(0),
            limit: number("limit")?.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
            kind,
            name,
        };
        let list = st
            .ctx
            .events
            .list(&req)
            .await
            .map_err(|e| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
        let body = serde_json::json!({ "items": list.items }).to_string();
        return Ok(json_response(StatusCode::OK, body));
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                HttpError::bad_request(format!(
                    "Last-Event-ID {v}: give an event's id (a sequence)"
                ))
            })
        })
        .transpose()?;
    let last = match (resume, since) {
        (Some(id), _) => id,
        (None, Some(s)) => s.saturating_sub(1),
        (None, None) => last_sequence(&st).await?,
    };
    let filter = names::event_filter(
        (!kind.is_empty()).then_some(kind.as_str()),
        (!name.is_empty()).then_some(name.as_str()),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(SSE_BUFFER);
    let overflow = Arc::new(tokio::sync::Notify::new());
    let (nats, link) = (st.ctx.client.clone(), st.link.clone());
    let closed = tx.clone();
    let full = overflow.clone();
    tokio::spawn(async move {
        let emit = |e: Event| {
            if tx.try_send(e).is_err() {
                full.notify_one();
            }
        };
        let interrupted = |why: &str, last: u64| {
            tracing::debug!(why, last, "SSE event follow interrupted; resuming");
        };
        tokio::select! {
            _ = voiyd_nats::events::follow(&nats, &link, &filter, last, emit, interrupted) => {}
            () = closed.closed() => {}
            () = overflow.notified() => tracing::debug!("SSE client too slow; ending its stream"),
        }
    });
    // A first comment says the watch is in place (and after which sequence), so a
    // client knows from when on it sees everything.
    let hello = SseEvent::default().comment(format!("following events after {last}"));
    let stream = futures::stream::once(async move { hello })
        .chain(tokio_stream_from(rx).map(|e| {
            let data = serde_json::to_string(&e).unwrap_or_default();
            SseEvent::default().id(e.seq.to_string()).data(data)
        }))
        .map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The stream's last sequence (a watch without a start begins after it).
async fn last_sequence(st: &HttpState) -> Result<u64, HttpError> {
    let unavailable = |e: String| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e);
    let mut stream = st
        .ctx
        .cluster
        .js
        .get_stream(names::STREAM_EVENTS)
        .await
        .map_err(|e| unavailable(format!("cannot open the events stream: {e}")))?;
    let info = stream
        .info()
        .await
        .map_err(|e| unavailable(format!("cannot read the events stream: {e}")))?;
    Ok(info.state.last_sequence)
}

/// The receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
