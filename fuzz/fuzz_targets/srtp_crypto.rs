//! The SFU's own SRTP crypto against RustCrypto's for any input:
//! - the multi-buffer HMAC-SHA1 (`hmac_x16`, sixteen messages at once with AVX-512 where the
//!   CPU has it) against `hmac` + `sha1` for any group of keys, messages and rollover
//!   counters: every tag identical, in order, whatever the mix of lengths;
//! - the AES-CM keystream (`aes_ctr`, VAES at each width the CPU has) against `aes` block by block
//!   for any key of 16 or 32 bytes, counter block and packet up to 2,048 bytes.
#![no_main]
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use arbitrary::Arbitrary;
use edgemeet_sfu::aes_ctr::{self, RoundKeys};
use edgemeet_sfu::hmac_x16::{self, HmacKey, Job};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Message {
    key: Vec<u8>,
    data: Vec<u8>,
    roc: u32,
    iv: [u8; 14],
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
    for m in messages {
        let key = &m.key[..if m.key.len() >= 32 {
            32
        } else {
            m.key.len().min(16)
        }];
        if !matches!(key.len(), 16 | 32) {
            // `RoundKeys` refuses it (the unit tests check that).
            continue;
        }
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&m.iv);
        let data = &m.data[..m.data.len().min(2_048)];
        let mut want = data.to_vec();
        for (n, chunk) in want.chunks_mut(16).enumerate() {
            let mut block = iv;
            block[14..].copy_from_slice(&(n as u16).to_be_bytes());
            let mut b = aes::Block::from(block);
            if key.len() == 16 {
                aes::Aes128::new_from_slice(key)
                    .expect("16 bytes")
                    .encrypt_block(&mut b);
            } else {
                aes::Aes256::new_from_slice(key)
                    .expect("32 bytes")
                    .encrypt_block(&mut b);
            }
            for (d, k) in chunk.iter_mut().zip(b.iter()) {
                *d ^= k;
            }
        }
        // Each register width this CPU runs (none without VAES).
        for width in [aes_ctr::Width::Zmm, aes_ctr::Width::Ymm] {
            let Some(round_keys) = RoundKeys::with_width(key, width) else {
                continue;
            };
            let mut got = data.to_vec();
            aes_ctr::xor(&round_keys, iv, &mut got);
            assert_eq!(
                got,
                want,
                "{width:?}, {}-byte key, {} bytes",
                key.len(),
                data.len()
            );
            // Appended from the source into a buffer that already holds a header.
            let mut appended = m.iv[..m.iv[0] as usize % 15].to_vec();
            let header = appended.len();
            aes_ctr::xor_append(&round_keys, iv, data, &mut appended);
            assert_eq!(&appended[..header], &m.iv[..header]);
            assert_eq!(
                &appended[header..],
                &want[..],
                "{width:?}, appended, {} bytes",
                data.len()
            );
        }
    }
});
