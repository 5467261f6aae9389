//! The error a request handler returns, mapped to an API error code.

use voiyd_nats::api::ErrorCode;
use voiyd_nats::store::StoreError;

/// A failed request: the code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The API error code.
    pub code: ErrorCode,
    /// One line that says what is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code as u16)
    }
}

impl Failure {
    /// 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Invalid,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::NotFound,
            message: message.into(),
        }
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Conflict,
            message: message.into(),
        }
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => ErrorCode::Conflict,
            StoreError::Decode { .. } => ErrorCode::Internal,
            _ => ErrorCode::Unavailable,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<prost::DecodeError> for Failure {
    fn from(e: prost::DecodeError) -> Self {
        Failure::invalid(format!("malformed request body: {e}"))
    }
}
