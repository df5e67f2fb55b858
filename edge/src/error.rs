//! The edge's error type: every failure becomes `{code, message}` JSON with the matching status.

use edgemeet_shared::account::AccountError;
use edgemeet_shared::control::ControlAuthError;
use edgemeet_shared::protocol::{ErrorCode, WireError};
use edgemeet_shared::schedule::ScheduleError;
use edgemeet_shared::token::TokenError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EdgeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("control request refused: {0}")]
    Control(#[from] ControlAuthError),
    #[error("server misconfigured: {0}")]
    Config(String),
    #[error("{0}")]
    NoMediaServer(String),
    /// Could not be done now; the caller should try again.
    #[error("{0}")]
    Unavailable(String),
    /// The room said no (removed, locked, a password needed or wrong, too many tries).
    #[error("{message}")]
    Refused {
        code: ErrorCode,
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// An error answered by one of our Durable Objects, passed on as it is.
    #[error("{}", .0.message)]
    Upstream(WireError),
    /// An account action refused (edgemeet_shared::account's rules).
    #[error("{0}")]
    Account(#[from] AccountError),
    /// A scheduled meeting refused (edgemeet_shared::schedule's rules).
    #[error("{0}")]
    Schedule(#[from] ScheduleError),
    #[error("internal error: {0}")]
    Worker(#[from] worker::Error),
}

impl EdgeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EdgeError::BadRequest(_) => ErrorCode::BadRequest,
            EdgeError::NotFound(_) => ErrorCode::NotFound,
            EdgeError::Token(e) => e.code(),
            EdgeError::Control(_) => ErrorCode::Unauthorized,
            EdgeError::NoMediaServer(_) => ErrorCode::NoMediaServer,
            EdgeError::Unavailable(_) => ErrorCode::Unavailable,
            EdgeError::Refused { code, .. } => *code,
            EdgeError::Upstream(e) => e.code,
            EdgeError::Account(e) => e.code(),
            EdgeError::Schedule(e) => e.code(),
            EdgeError::Config(_) | EdgeError::Worker(_) => ErrorCode::Internal,
        }
    }

    pub fn into_response(self) -> worker::Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            worker::console_error!("{self}");
        }
        let retry = match &self {
            EdgeError::Refused {
                retry_after_secs: Some(s),
                ..
            } => Some(*s),
            EdgeError::Account(e) => e.retry_after_secs(),
            _ => None,
        };
        // The runtime's own errors (D1's carry SQL and stack traces) stay in the log.
        let message = match &self {
            EdgeError::Worker(_) => "Something went wrong on our side. Try again.".to_string(),
            _ => self.to_string(),
        };
        let body = WireError { code, message };
        worker::Response::from_json(&body)
            .map(|r| r.with_status(code.http_status()))
            .inspect(|r| {
                if let Some(s) = retry {
                    let _ = r.headers().set("retry-after", &s.to_string());
                }
            })
            .unwrap_or_else(|_| {
                worker::Response::error("internal error", 500).expect("plain response builds")
            })
    }
}

pub type EdgeResult<T> = std::result::Result<T, EdgeError>;
