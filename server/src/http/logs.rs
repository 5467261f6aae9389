//! `GET /api/v1/tasks/NAME/logs`: a task's output, read from the node that runs it over
//! NATS (as `voiydctl logs` does): plain text, or with `?follow=true` (or
//! `Accept: text/event-stream`) Server-Sent Events that go on as the task writes. Query:
//! `tail=N`, `stream=stdout|stderr`, `follow`. Each SSE message's data is one line as
//! JSON (`{"time", "stream", "text"}`); an `end` event closes the stream. Without
//! `follow`, a deleted task's output, or that of a task whose node does not answer,
//! comes from the logs stream (header `x-voiyd-logs: stored`).

use super::{HttpError, HttpState};
use crate::service::resources;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use voiyd_messages::v1::{GetRequest, LogChunk, LogRequest, Task};
use voiyd_nats::stream::{ClientStream, StreamError};

/// How long the node has to answer the request.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The handler.
pub async fn logs(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let follow = super::resources::flag_value(q.get("follow").map(String::as_str), "follow")?
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    let tail = q
        .get("tail")
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| HttpError::bad_request(format!("?tail={v}: give a number of lines")))
        })
        .transpose()?;
    let stream = match q.get("stream").map(String::as_str) {
        None | Some("") => String::new(),
        Some(s @ ("stdout" | "stderr")) => s.to_string(),
        Some(s) => {
            return Err(HttpError::bad_request(format!(
                "?stream={s}: give stdout or stderr"
            )))
        }
    };
    let req = LogRequest {
        follow,
        tail,
        since: None,
        stream,
        deliver_to: String::new(),
    };
    let opened = async {
        let task: Task = resources::get(&st.ctx, &GetRequest { name: name.clone() }).await?;
        let node = task
            .status
            .as_ref()
            .map(|s| s.node.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::CONFLICT,
                    format!("task {name} has not run on any node yet, so it has no logs"),
                )
            })?;
        ClientStream::open_logs(&st.ctx.client, &node, &name, &req, OPEN_TIMEOUT)
            .await
            .map_err(unreachable_node)
    };
    let mut logs = match opened.await {
        Ok(logs) => logs,
        // Gone, or its node does not answer: what the cluster stored, if anything.
        Err(e) if !follow => {
            let lines = voiyd_nats::logs::history(&st.ctx.cluster.js, &name, OPEN_TIMEOUT)
                .await
                .map(|b| voiyd_nats::logs::all_lines(voiyd_nats::logs::runs(b)))
                .unwrap_or_default();
            let lines = voiyd_nats::logs::select(lines, &req);
            if lines.is_empty() {
                return Err(e);
            }
            let text: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
            return Ok((
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::HeaderName::from_static("x-voiyd-logs"), "stored"),
                ],
                text,
            )
                .into_response());
        }
        Err(e) => return Err(e),
    };
    if !follow {
        let mut text = String::new();
        loop {
            let chunk: LogChunk = logs.next().await.map_err(unreachable_node)?;
            for l in &chunk.lines {
                text.push_str(&l.text);
                text.push('\n');
            }
            if chunk.end {
                break;
            }
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    // Chunks become SSE messages, one per line, until the stream ends or the client
    // goes (dropping the stream drops the subscription; the node then stops sending).
    let lines = futures::stream::unfold(Some(logs), |state| async move {
        let mut logs = state?;
        match logs.next::<LogChunk>().await {
            Ok(chunk) => {
                let mut out: Vec<SseEvent> = chunk
                    .lines
                    .iter()
                    .map(|l| SseEvent::default().data(serde_json::to_string(l).unwrap_or_default()))
                    .collect();
                if chunk.end {
                    out.push(SseEvent::default().event("end").data(""));
                    return Some((out, None));
                }
                Some((out, Some(logs)))
            }
            Err(e) => Some((
                vec![SseEvent::default().event("end").data(e.to_string())],
                None,
            )),
        }
    })
    .flat_map(futures::stream::iter)
    .map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(lines)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn unreachable_node(e: StreamError) -> HttpError {
    let status = match e {
        StreamError::Refused { code: 404, .. } => StatusCode::NOT_FOUND,
        StreamError::Refused { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    HttpError::new(status, e.to_string())
}
