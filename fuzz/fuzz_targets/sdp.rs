//! Offer parsing in the SFU (which m-line is which track) and the edge's SDP check: any text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = edgemeet_shared::protocol::check_sdp(&text);
    let layout = edgemeet_sfu::offer::parse(&text);
    let _ = format!("{layout:?}");
});
