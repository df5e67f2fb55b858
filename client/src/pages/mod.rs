//! The app's pages: pre-join and the room (which one shows is the meeting's `screen`), and the
//! account page at `/account`, the meetings page at `/meetings`, the recordings page at `/recordings`.

pub mod account;
pub mod meetings;
pub mod prejoin;
pub mod recordings;
pub mod room;
pub mod waiting;
