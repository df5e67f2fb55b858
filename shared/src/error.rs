//! Wire errors: every error that crosses the network is `{code, message}` — the code for programs,
//! the message for people. A leaf module: protocol, tokens and the room core all use it.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. Every error on the wire is `{code, message}`; the message is for
/// people, the code is for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    UnsupportedVersion,
    Unauthorized,
    Forbidden,
    NotFound,
    BadRequest,
    NoMediaServer,
    /// A session description that could not be used (not SDP, or not one the SFU can answer).
    BadSdp,
    /// The media server failed or did not answer in time.
    MediaServerError,
    /// Not possible right now; try again shortly.
    Unavailable,
    /// The meeting has a password and none was given.
    PasswordRequired,
    /// The password given is not the meeting's.
    WrongPassword,
    /// Too many requests (wrong passwords, chat messages, reactions): slow down.
    TooManyRequests,
    /// Already done (a chat message sent again with the same client id): nothing changed.
    Duplicate,
    /// A second vote in a poll (one per person): refused, the first one stands.
    AlreadyVoted,
    /// An account with this email address already exists.
    AccountExists,
    /// Not possible in the thing's current state (a cancelled meeting changed).
    Conflict,
    /// Gone for good (a deleted recording): do not send it again.
    Gone,
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with this code when it is an HTTP answer.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadMessage | ErrorCode::BadRequest | ErrorCode::UnsupportedVersion => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::NoMediaServer => 503,
            ErrorCode::BadSdp => 400,
            ErrorCode::MediaServerError => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::PasswordRequired | ErrorCode::WrongPassword => 401,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Duplicate
            | ErrorCode::AlreadyVoted
            | ErrorCode::AccountExists
            | ErrorCode::Conflict => 409,
            ErrorCode::Gone => 410,
            ErrorCode::Internal => 500,
        }
    }
}

/// The body of every HTTP error answer from the edge and the SFU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}
