//! Types and pure logic shared by every tier of edgemeet.
//!
//! Everything here is sans-IO: functions take their inputs and the current time (`now_ms`,
//! milliseconds since the Unix epoch) and return values or effects. No clock reads, no sockets,
//! so the same code runs in the browser (wasm32), in the edge worker (wasm32) and in the SFU.

pub mod client_room;
pub mod control;
pub mod media;
pub mod protocol;
pub mod region;
pub mod room;
pub mod token;
pub mod turn;

/// Milliseconds since the Unix epoch. Every pure function takes the time as an argument.
pub type Millis = u64;
