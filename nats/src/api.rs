//! The voiyd API protocol over NATS request/reply, and a typed client for it.
//!
//! A request goes to `voiyd.api.v1.<kind>.<verb>` with a protobuf body; every
//! voiyd-server serves these subjects in one queue group. A success reply carries the
//! protobuf answer. An error reply has an empty body and the NATS service-framework
//! headers `Nats-Service-Error` (a message for people) and `Nats-Service-Error-Code`
//! (an HTTP-like code, see [`ErrorCode`]).

use crate::{chunks, names};
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use voiyd_messages::v1::{
    DeleteReply, DeleteRequest, EventList, EventsRequest, GetRequest, ListRequest, PatchRequest,
    Task, TaskActionRequest,
};
use voiyd_messages::{Kind, Resource};

/// Largest request body a server accepts.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Error codes carried in `Nats-Service-Error-Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or fails validation.
    Invalid = 400,
    /// The named resource does not exist.
    NotFound = 404,
    /// The resource exists already, or changed since it was read.
    Conflict = 409,
    /// The request body is over [`MAX_REQUEST_BYTES`].
    TooLarge = 413,
    /// The server failed.
    Internal = 500,
    /// The server could not reach its store.
    Unavailable = 503,
}

impl ErrorCode {
    /// Maps a numeric code back; unknown codes become [`ErrorCode::Internal`].
    pub fn from_code(code: usize) -> ErrorCode {
        match code {
            400 => ErrorCode::Invalid,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::TooLarge,
            503 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// Why an API call failed, as seen by a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is invalid; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A conflicting write: the resource exists, or changed since it was read.
    #[error("{0}")]
    Conflict(String),
    /// The request was too large.
    #[error("{0}")]
    TooLarge(String),
    /// The server failed or could not reach its store.
    #[error("server error: {0}")]
    Server(String),
    /// No voiyd-server subscribes to the API subject.
    #[error("no voiyd-server is answering on {subject}: start voiyd-server, or point --server at a NATS where one runs")]
    NoServer {
        /// The subject the request went to.
        subject: String,
    },
    /// No reply came in time.
    #[error("no reply from voiyd-server on {subject} within {timeout:?}: the server may be overloaded or cut off from NATS")]
    Timeout {
        /// The subject the request went to.
        subject: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// NATS itself failed.
    #[error("NATS request on {subject} failed: {reason}")]
    Transport {
        /// The subject the request went to.
        subject: String,
        /// What NATS said.
        reason: String,
    },
    /// The reply could not be decoded.
    #[error("undecodable reply on {subject}: {reason} (are voiydctl and voiyd-server the same version?)")]
    Decode {
        /// The subject the request went to.
        subject: String,
        /// The decoder's message.
        reason: String,
    },
}

impl ApiError {
    /// The code a server would send for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Invalid(_) => ErrorCode::Invalid,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::TooLarge(_) => ErrorCode::TooLarge,
            _ => ErrorCode::Internal,
        }
    }
}

/// Builds the service-framework error a server replies with.
pub fn service_error(
    code: ErrorCode,
    message: impl Into<String>,
) -> async_nats::service::error::Error {
    // Headers are single-line: fold any newline a message may carry.
    let status = message.into().replace(['\r', '\n'], " ");
    async_nats::service::error::Error {
        status,
        code: code as usize,
    }
}

/// Turns a raw reply into a decoded answer or the [`ApiError`] it carries.
pub fn decode_reply<T: Message + Default>(
    subject: &str,
    msg: &async_nats::Message,
) -> Result<T, ApiError> {
    if let Some(headers) = &msg.headers {
        if let Some(code) = headers.get(NATS_SERVICE_ERROR_CODE) {
            let code: usize = code.as_str().parse().unwrap_or(500);
            let text = headers
                .get(NATS_SERVICE_ERROR)
                .map(|v| v.as_str().to_string())
                .unwrap_or_else(|| format!("error {code}"));
            return Err(match ErrorCode::from_code(code) {
                ErrorCode::Invalid => ApiError::Invalid(text),
                ErrorCode::NotFound => ApiError::NotFound(text),
                ErrorCode::Conflict => ApiError::Conflict(text),
                ErrorCode::TooLarge => ApiError::TooLarge(text),
                ErrorCode::Internal | ErrorCode::Unavailable => ApiError::Server(text),
            });
        }
    }
    T::decode(msg.payload.clone()).map_err(|e| ApiError::Decode {
        subject: subject.to_string(),
        reason: e.to_string(),
    })
}

/// A typed client of the voiyd API.
#[derive(Clone)]
pub struct ApiClient {
    client: async_nats::Client,
    timeout: Duration,
}

impl ApiClient {
    /// Wraps a connected NATS client. Requests time out after 10 s.
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets how long a request waits for its reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    /// Sends one request and decodes its reply.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        kind: &str,
        verb: &str,
        req: &Req,
    ) -> Result<Resp, ApiError> {
        let subject = names::api_subject(kind, verb);
        self.call_raw(&subject, Bytes::from(req.encode_to_vec()))
            .await
    }

    /// Sends raw bytes to a subject and decodes the reply.
    pub async fn call_raw<Resp: Message + Default>(
        &self,
        subject: &str,
        body: Bytes,
    ) -> Result<Resp, ApiError> {
        let span = tracing::info_span!("call", otel.name = %format!("call {subject}"));
        let mut request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(self.timeout));
        // The server's handling joins the caller's trace.
        if let Some(tp) = span.in_scope(voiyd_telemetry::traceparent) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(voiyd_telemetry::TRACEPARENT, tp.as_str());
            request = request.headers(headers);
        }
        let msg = tracing::Instrument::instrument(
            self.client.send_request(subject.to_string(), request),
            span,
        )
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => ApiError::NoServer {
                subject: subject.to_string(),
            },
            async_nats::RequestErrorKind::TimedOut => ApiError::Timeout {
                subject: subject.to_string(),
                timeout: self.timeout,
            },
            async_nats::RequestErrorKind::MaxPayloadExceeded => ApiError::TooLarge(format!(
                "request to {subject} is larger than the NATS server's max_payload"
            )),
            _ => ApiError::Transport {
                subject: subject.to_string(),
                reason: e.to_string(),
            },
        })?;
        decode_reply(subject, &msg)
    }

    /// Creates a resource; fails with [`ApiError::Conflict`] if it exists.
    pub async fn create<R: Resource>(&self, resource: &R) -> Result<R, ApiError> {
        self.call(R::KIND.plural(), "create", resource).await
    }

    /// Replaces a resource's spec. A non-zero `meta.resource_version` must match the
    /// stored one, or the update fails with [`ApiError::Conflict`].
    pub async fn update<R: Resource>(&self, resource: &R) -> Result<R, ApiError> {
        self.call(R::KIND.plural(), "update", resource).await
    }

    /// Applies a JSON merge patch to a resource.
    pub async fn patch<R: Resource>(
        &self,
        name: &str,
        merge_patch: &str,
        resource_version: u64,
    ) -> Result<R, ApiError> {
        let req = PatchRequest {
            name: name.to_string(),
            merge_patch: merge_patch.to_string(),
            resource_version,
        };
        self.call(R::KIND.plural(), "patch", &req).await
    }

    /// Reads one resource, with its status.
    pub async fn get<R: Resource>(&self, name: &str) -> Result<R, ApiError> {
        self.call(
            R::KIND.plural(),
            "get",
            &GetRequest {
                name: name.to_string(),
            },
        )
        .await
    }

    /// Lists the resources matching a label selector ("" for all).
    pub async fn list<R: Resource>(&self, selector: &str) -> Result<Vec<R>, ApiError> {
        let req = ListRequest {
            selector: selector.to_string(),
            ..Default::default()
        };
        self.list_with(&req).await
    }

    /// Lists the resources matching a label and a field selector, of any size.
    pub async fn list_with<R: Resource>(&self, req: &ListRequest) -> Result<Vec<R>, ApiError> {
        self.call_list(R::KIND.plural(), req).await
    }

    /// Sends a list request and collects every chunk of its reply (see [`crate::chunks`]).
    /// Each chunk must arrive within the timeout of the one before.
    async fn call_list<Req: Message, Item: Message + Default + std::fmt::Debug>(
        &self,
        kind: &str,
        req: &Req,
    ) -> Result<Vec<Item>, ApiError> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct List<Item: Message + Default + std::fmt::Debug> {
            #[prost(message, repeated, tag = "1")]
            items: Vec<Item>,
        }
        let subject = names::api_subject(kind, "list");
        let transport = |e: &dyn std::fmt::Display| ApiError::Transport {
            subject: subject.clone(),
            reason: e.to_string(),
        };
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| transport(&e))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(chunks::ACCEPT_CHUNKS, "1");
        self.client
            .publish_with_reply_and_headers(
                subject.clone(),
                inbox,
                headers,
                Bytes::from(req.encode_to_vec()),
            )
            .await
            .map_err(|e| match e.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => ApiError::TooLarge(
                    format!("request to {subject} is larger than the NATS server's max_payload"),
                ),
                _ => transport(&e),
            })?;
        let mut items = Vec::new();
        let mut next = 0usize;
        loop {
            let msg = match tokio::time::timeout(self.timeout, replies.next()).await {
                Err(_) => {
                    return Err(ApiError::Timeout {
                        subject,
                        timeout: self.timeout,
                    })
                }
                Ok(None) => return Err(transport(&"the reply subscription closed")),
                Ok(Some(m)) => m,
            };
            if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                return Err(ApiError::NoServer { subject });
            }
            let list: List<Item> = decode_reply(&subject, &msg)?;
            let (index, count) = match msg.headers.as_ref().and_then(|h| h.get(chunks::CHUNK)) {
                None => (0, 1),
                Some(v) => chunks::parse_header(v.as_str())
                    .ok_or_else(|| transport(&format!("bad {} header `{v}`", chunks::CHUNK)))?,
            };
            if index != next {
                // Chunks come from one server connection and arrive in order; a gap means
                // one was dropped (this client was too slow), and the list would be short.
                return Err(transport(&format!(
                    "reply chunk {} of {count} arrived when {} was due: retry",
                    index + 1,
                    next + 1
                )));
            }
            items.extend(list.items);
            next += 1;
            if next == count {
                return Ok(items);
            }
        }
    }

    /// Deletes a resource.
    pub async fn delete(&self, kind: Kind, req: &DeleteRequest) -> Result<DeleteReply, ApiError> {
        self.call(kind.plural(), "delete", req).await
    }

    /// Starts, stops or kills a task (`verb` is start, stop or kill).
    pub async fn task_action(&self, verb: &str, name: &str, force: bool) -> Result<Task, ApiError> {
        let req = TaskActionRequest {
            name: name.to_string(),
            force,
        };
        self.call(Kind::Task.plural(), verb, &req).await
    }

    /// Reads events from the event stream.
    pub async fn events(&self, req: &EventsRequest) -> Result<EventList, ApiError> {
        Ok(EventList {
            items: self.call_list("events", req).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in [
            ErrorCode::Invalid,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::TooLarge,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ] {
            assert_eq!(ErrorCode::from_code(c as usize), c);
        }
        assert_eq!(service_error(ErrorCode::Invalid, "a\nb").status, "a b");
    }
}
