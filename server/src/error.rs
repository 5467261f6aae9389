//! The error every server operation returns, mapped to an API error code.
//!
//! [`ServerError`] is typed rather than a code and a string because its callers decide
//! by kind: the API picks the reply's code and whether to warn, controllers skip a task
//! that is gone ([`ServerError::NotFound`]) and retry a store that is away
//! ([`ServerError::code`] is [`ErrorCode::Unavailable`]). Failures caused by another
//! error (the store, a NATS call, a decoder) keep it as their
//! [`source`](std::error::Error::source), so a log can show the whole chain, while the
//! user sees only [`ServerError::message`], one line that says what is wrong and what to
//! do.

use voiyd_nats::api::ErrorCode;
use voiyd_nats::store::StoreError;

/// Any error a failed call of the server's dependencies can return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed operation. Its [`Display`](std::fmt::Display) is the message the user
/// sees ([`ServerError::message`]); [`ServerError::code`] is the API code it is
/// answered with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request is malformed or fails validation (400).
    #[error("{0}")]
    Invalid(String),
    /// The named resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already, changed since it was read, or is in use (409).
    #[error("{0}")]
    Conflict(String),
    /// The request or its reply is over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The server cannot serve the request yet, or has run out of something (503).
    #[error("{0}")]
    Unavailable(String),
    /// The server failed (500).
    #[error("{0}")]
    Internal(String),
    /// A resource store failed; the code follows the [`StoreError`]'s class. (Not
    /// `transparent`: the store error itself is the source.)
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The request body is not a valid message of the expected type (400).
    #[error("malformed request body: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The status store could not do `op` (503): a caller may retry.
    #[error("status store: {op} failed: {source}")]
    StatusStore {
        /// The operation ("get", "create", "update").
        op: &'static str,
        /// What NATS said.
        #[source]
        source: BoxError,
    },
    /// Something the server relies on (a NATS call, a bucket, an encoder) failed while
    /// it was doing `context` (500).
    #[error("{context}: {source}")]
    Failed {
        /// What the server was doing, e.g. "cannot write work <key>".
        context: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl ServerError {
    /// 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }
    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::TooLarge(message.into())
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
    /// 500, caused by `source`: the message is "`context`: `source`".
    pub fn failed(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Failed {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The API error code the request is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) | Self::Decode(_) => ErrorCode::Invalid,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::Unavailable(_) | Self::StatusStore { .. } => ErrorCode::Unavailable,
            Self::Internal(_) | Self::Failed { .. } => ErrorCode::Internal,
            Self::Store(e) => e.api_code(),
        }
    }

    /// The message the user sees (the reply's status): one line that says what is wrong
    /// and what to do. The same text as [`Display`](std::fmt::Display).
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Shows a [`ServerError`] for a log line as the message followed by its code, as in
/// "status store: update failed: timed out (503)".
#[derive(Debug)]
pub struct WithCode(pub ServerError);

impl std::fmt::Display for WithCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0, self.0.code() as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::error::Error;

    fn store_errors() -> Vec<(StoreError, ErrorCode)> {
        let (kind, name) = ("task".to_string(), "web".to_string());
        vec![
            (
                StoreError::NotFound {
                    kind: kind.clone(),
                    name: name.clone(),
                },
                ErrorCode::NotFound,
            ),
            (
                StoreError::AlreadyExists {
                    kind: kind.clone(),
                    name: name.clone(),
                },
                ErrorCode::Conflict,
            ),
            (
                StoreError::Conflict {
                    kind,
                    name,
                    expected: 7,
                },
                ErrorCode::Conflict,
            ),
            (
                StoreError::Decode {
                    key: "task.web".into(),
                    reason: "bad wire type".into(),
                },
                ErrorCode::Internal,
            ),
            (
                StoreError::Nats {
                    op: "get",
                    reason: "timed out".into(),
                },
                ErrorCode::Unavailable,
            ),
        ]
    }

    fn decode_error() -> prost::DecodeError {
        // A length-delimited field that claims 5 bytes and has none.
        String::decode(&[0x0a, 0x05][..]).unwrap_err()
    }

    #[test]
    fn store_errors_keep_their_class_message_and_source() {
        for (store, code) in store_errors() {
            let text = store.to_string();
            let e = ServerError::from(store.clone());
            assert_eq!(e.code(), code, "{store:?}");
            assert_eq!(e.message(), text);
            let source = e.source().expect("a store error keeps its cause");
            assert_eq!(source.downcast_ref::<StoreError>(), Some(&store));
        }
    }

    #[test]
    fn a_malformed_body_is_invalid_and_keeps_the_decoder_error() {
        let d = decode_error();
        let e = ServerError::from(d.clone());
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert_eq!(e.message(), format!("malformed request body: {d}"));
        let source = e.source().expect("a decode error keeps its cause");
        assert_eq!(source.downcast_ref::<prost::DecodeError>(), Some(&d));
    }

    #[test]
    fn plain_errors_carry_their_message_and_code() {
        let cases = [
            (ServerError::invalid("bad"), ErrorCode::Invalid),
            (ServerError::not_found("gone"), ErrorCode::NotFound),
            (ServerError::conflict("taken"), ErrorCode::Conflict),
            (ServerError::too_large("big"), ErrorCode::TooLarge),
            (ServerError::unavailable("wait"), ErrorCode::Unavailable),
            (ServerError::internal("oops"), ErrorCode::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code);
            assert!(e.source().is_none());
        }
        assert_eq!(ServerError::invalid("bad").message(), "bad");
        assert_eq!(
            WithCode(ServerError::not_found("gone")).to_string(),
            "gone (404)"
        );
    }

    #[test]
    fn caused_errors_show_context_and_cause() {
        let e = ServerError::failed("cannot write work node.a.web", decode_error());
        assert_eq!(e.code(), ErrorCode::Internal);
        assert_eq!(
            e.message(),
            format!("cannot write work node.a.web: {}", decode_error())
        );
        assert!(e.source().unwrap().is::<prost::DecodeError>());
        let e = ServerError::StatusStore {
            op: "update",
            source: "timed out".into(),
        };
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert_eq!(e.message(), "status store: update failed: timed out");
        assert_eq!(e.source().unwrap().to_string(), "timed out");
    }
}
