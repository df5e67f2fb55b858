//! Room tokens: any string is refused or verified, never a panic; nothing signed with another key,
//! another algorithm or none verifies (JWT algorithm confusion).
#![no_main]
use edgemeet_shared::token::TokenKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = TokenKey::hs256(b"fuzzing key, 32 bytes at least!!").expect("a key");
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = key.verify(&text, "room", 1_000, |_| false) {
        // Only a token this key signed can verify: re-signing the claims must verify too, and
        // the fuzzer cannot forge an HMAC, so reaching here means it found one we made. Record it.
        panic!("a token from fuzz input verified: {claims:?}");
    }
});
