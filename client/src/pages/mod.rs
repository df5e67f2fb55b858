//! The app's pages: pre-join and the room. Which one shows is the meeting's `screen`.

pub mod prejoin;
pub mod room;
pub mod waiting;
