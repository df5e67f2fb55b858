//! Types and pure logic shared by every tier of edgemeet.
//!
//! Everything here is sans-IO: functions take their inputs and the current time (`now_ms`,
//! milliseconds since the Unix epoch) and return values or effects. No clock reads, no sockets,
//! so the same code runs in the browser (wasm32), in the edge worker (wasm32) and in the SFU.
//!
//! Feature `auth` (on by default; the browser builds without it) adds signing and verifying: room
//! tokens, control-plane signatures and TURN credentials. Feature `calendar` (on by default; the
//! browser builds without it) adds scheduled meetings' time zones, recurrence and `.ics`.

pub mod account;
pub mod client_room;
#[cfg(feature = "auth")]
pub mod control;
pub mod error;
pub mod health;
pub mod layout;
pub mod media;
pub mod netcheck;
pub mod protocol;
pub mod recording;
pub mod region;
pub mod report;
pub mod room;
pub mod schedule;
pub mod session;
pub mod token;
#[cfg(feature = "auth")]
pub mod turn;

/// Milliseconds since the Unix epoch. Every pure function takes the time as an argument.
pub type Millis = u64;
