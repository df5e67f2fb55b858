//! Room tokens: the JWT the edge issues at join and checks on every room connection.
//!
//! This module holds what a token says (roles, grants, claims), which the room core and the browser
//! use; signing and verifying ([`TokenKey`], feature `auth`) stay out of the browser bundle.
//!
//! The edge signs, everyone else only verifies. The algorithm is pinned by the key, never taken from
//! the token, so `alg=none` and algorithm confusion fail. Time checks (`exp`, `nbf`) are done with
//! the caller's `now`, not by reading a clock, with [`LEEWAY_SECS`] of leeway.

use serde::{Deserialize, Serialize};

#[cfg(feature = "auth")]
mod key;
#[cfg(feature = "auth")]
pub use key::{TokenError, TokenKey};

/// Clock skew tolerated on `exp` and `nbf`. Room tokens are signed and checked by the edge alone
/// (one platform clock), so a small margin is enough; DESIGN allows at most 60 s.
pub const LEEWAY_SECS: u64 = 10;
/// The longest a room token lives (the edge issues 15 minutes; members get fresh ones before then).
pub const MAX_TOKEN_TTL_SECS: u64 = 15 * 60;

/// What a participant is in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Host,
    Cohost,
    Participant,
    Viewer,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Grants {
    pub publish: bool,
    pub subscribe: bool,
    pub screen: bool,
    pub admin: bool,
}

impl Grants {
    /// The most a role may be granted.
    pub fn max_for(role: Role) -> Grants {
        match role {
            Role::Host | Role::Cohost => Grants {
                publish: true,
                subscribe: true,
                screen: true,
                admin: true,
            },
            Role::Participant => Grants {
                publish: true,
                subscribe: true,
                screen: true,
                admin: false,
            },
            Role::Viewer => Grants {
                publish: false,
                subscribe: true,
                screen: false,
                admin: false,
            },
        }
    }

    /// True when every grant in `self` is also in `other`.
    pub fn is_subset_of(&self, other: &Grants) -> bool {
        (!self.publish || other.publish)
            && (!self.subscribe || other.subscribe)
            && (!self.screen || other.screen)
            && (!self.admin || other.admin)
    }
}

/// The claims of a room token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Participant id.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// Room name (normalized).
    pub room: String,
    pub role: Role,
    pub grants: Grants,
    /// Assigned SFU id, once the room has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sfu: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Token id, for revocation (kicked participants).
    pub jti: String,
    /// A waiting-room token: it allows waiting and nothing else until a host lets them in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
    /// The browser's identity the edge issued (a cookie): a removed person cannot come back with
    /// a new token from the same browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid: Option<String>,
    /// The room's door generation when this token was let in: a token from before the host
    /// tightened the door (lock, waiting room, password) or ended the meeting brings nobody new in.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub door: u32,
    /// Let in from the waiting room by a host: it gets in while the meeting is locked (the door
    /// generation still applies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admitted: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
