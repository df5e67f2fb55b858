//! The SFU's multi-buffer HMAC-SHA1 (`hmac_x16`, sixteen messages at once with AVX-512 where
//! the CPU has it) against RustCrypto's `hmac` + `sha1` for any group of keys, messages and
//! rollover counters: every tag identical, in order, whatever the mix of lengths.
#![no_main]
use arbitrary::Arbitrary;
use edgemeet_sfu::hmac_x16::{self, HmacKey, Job};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Message {
    key: Vec<u8>,
    data: Vec<u8>,
    roc: u32,
}

fuzz_target!(|messages: Vec<Message>| {
    let messages = &messages[..messages.len().min(40)];
    let keys: Vec<HmacKey> = messages.iter().map(|m| HmacKey::new(&m.key)).collect();
    let jobs: Vec<Job<'_>> = messages
        .iter()
        .zip(&keys)
        .map(|(m, key)| Job {
            key,
            data: &m.data,
            roc: m.roc,
        })
        .collect();
    let mut out = vec![[0u8; hmac_x16::TAG_LEN]; jobs.len()];
    hmac_x16::tags(&jobs, &mut out);
    for (m, tag) in messages.iter().zip(&out) {
        let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&m.key).expect("any length");
        mac.update(&m.data);
        mac.update(&m.roc.to_be_bytes());
        assert_eq!(&mac.finalize().into_bytes()[..], &tag[..]);
    }
});
