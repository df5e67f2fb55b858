//! Signaling decode: any bytes a socket may send. Never panics; anything accepted re-encodes and
//! decodes to the same message.
#![no_main]
use edgemeet_shared::protocol::{check_sdp, parse_client_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(msg) = parse_client_message(&text) {
        let again = serde_json::to_string(&msg).expect("a parsed message encodes");
        assert_eq!(parse_client_message(&again).ok(), Some(msg));
    }
    let _ = check_sdp(&text);
});
