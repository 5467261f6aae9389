//! The one error type of voiydctl: every variant renders as one line that says what
//! went wrong and what to do about it.

use std::path::PathBuf;
use voiyd_nats::api::ApiError;

/// Why a voiydctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line is wrong in a way clap cannot see (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What voiydctl was doing ("cannot read").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is malformed or names something that is not there.
    #[error("{0}")]
    Config(String),
    /// A manifest or edited document is malformed or invalid.
    #[error("{0}")]
    Invalid(String),
    /// Connecting to NATS failed.
    #[error("{0}")]
    Connect(String),
    /// The API answered with an error.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// A watched state was not reached, or the task failed.
    #[error("{0}")]
    Wait(String),
    /// The task's process exited non-zero and will not run again: its exit code
    /// becomes voiydctl's.
    #[error("{message}")]
    TaskExited {
        /// What happened, one line.
        message: String,
        /// The task's exit code.
        code: i32,
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
    /// `diff` found differences (exit code 1; the diff itself is the output).
    #[error("{0} resource(s) differ")]
    Differs(usize),
}

impl CtlError {
    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) => 2,
            // Exit codes are 0-255; a code outside (or 0) still says failure.
            CtlError::TaskExited { code, .. } => match *code {
                1..=255 => *code,
                _ => 1,
            },
            _ => 1,
        }
    }

    /// An [`CtlError::Io`] error.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CtlError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result alias of voiydctl.
pub type Result<T, E = CtlError> = std::result::Result<T, E>;
