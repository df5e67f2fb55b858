//! Cost of the forwarding core per packet per subscriber: `cargo bench -p edgemeet-sfu --bench forward`.
//! Prints figures; it is not a pass/fail test. The DESIGN budget for the whole hot path (this plus
//! SRTP and the UDP send) is 2 µs per forwarded packet per subscriber.

use std::hint::black_box;
use std::time::Instant;

use edgemeet_sfu::forward::{Negotiated, Rewriter};
use edgemeet_sfu::layers::LayerSelector;
use edgemeet_sfu::rtp_out::{write_header, CaptureExt};

/// A 1,200-byte VP8-sized packet with three one-byte header extensions.
fn packet(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[
        0xBE, 0xDE, 0x00, 0x03, 0x10, 0xAA, 0x22, 0x01, 0x02, 0x32, 0x01, 0x02, 0x03, 0x00, 0x00,
        0x00,
    ]);
    p.resize(1_200, 0x42);
    p
}

fn main() {
    let negotiated = Negotiated::new()
        .map_payload_type(96, 98)
        .map_extension(2, 3)
        .map_extension(3, 4);
    let subscribers = 50;
    let packets = 200_000u32;
    let source: Vec<Vec<u8>> = (0..1_000u32)
        .map(|i| packet(0xA, i as u16, i * 3_000))
        .collect();
    let mut rewriters: Vec<Rewriter> = (0..subscribers)
        .map(|s| Rewriter::new(1_000 + s, 90_000, negotiated.clone()))
        .collect();
    let mut out = vec![0u8; 1_500];

    // Warm up, then measure copy + rewrite for every subscriber (what the hot path does per packet).
    for round in 0..2 {
        let start = Instant::now();
        for i in 0..packets {
            let src = &source[(i % 1_000) as usize];
            // Same seq/ts pattern as a live stream: rewrite sequence keeps advancing.
            for r in rewriters.iter_mut() {
                let buf = &mut out[..src.len()];
                buf.copy_from_slice(src);
                buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                black_box(r.rewrite(buf, i as u64 * 1_000).ok());
            }
        }
        let per = start.elapsed().as_nanos() as f64 / (packets as f64 * subscribers as f64);
        if round == 1 {
            println!("in-place copy + rewrite of a 1200-byte packet (Rewriter::rewrite, for the sans-IO engine to come; the SFU does not run it yet): {per:.1} ns per packet per subscriber");
            println!(
                "  ({} packets x {} subscribers; budget for the whole hot path: 2000 ns)",
                packets, subscribers
            );
        }
    }

    // SRTP for one subscriber (what the sans-IO engine adds per packet per subscriber, with the
    // UDP send: see `cargo xtask load --floor` for the send's cost on this machine).
    let provider = rtc::crypto::default_provider().expect("webrtc-rs is built with ring");
    for (profile, name) in [
        (
            rtc::srtp::protection_profile::ProtectionProfile::AeadAes128Gcm,
            "AEAD_AES_128_GCM",
        ),
        (
            rtc::srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
            "AES128_CM_HMAC_SHA1_80",
        ),
    ] {
        let key = vec![7u8; profile.key_len()];
        let salt = vec![9u8; profile.salt_len()];
        let mut ctx =
            rtc::srtp::context::Context::new(&key, &salt, profile, None, None, provider.crypto())
                .expect("SRTP context");
        let n = 400_000u32;
        let mut buf = source[0].clone();
        let start = Instant::now();
        for i in 0..n {
            buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            black_box(ctx.encrypt_rtp(&buf).ok());
        }
        let per = start.elapsed().as_nanos() as f64 / n as f64;
        println!("SRTP {name} of a 1200-byte packet (rtc-srtp, ring): {per:.0} ns per packet per subscriber");
    }

    // The SRTP tag alone (AES-CM + HMAC-SHA1, Chrome's default profile), a fan-out's 1,200-byte
    // copies under 100 subscribers' keys: RustCrypto's `hmac` one copy at a time (what
    // srtp_out.rs ran before) against `hmac_x16::tags` (16 lanes with AVX-512, else 4 with SHA-NI).
    {
        use edgemeet_sfu::hmac_x16::{self, HmacKey, Job};
        use hmac::{Hmac, Mac};
        let subs = 100usize;
        let keys: Vec<Vec<u8>> = (0..subs).map(|i| vec![i as u8; 20]).collect();
        let macs: Vec<Hmac<sha1::Sha1>> = keys
            .iter()
            .map(|k| <Hmac<sha1::Sha1> as Mac>::new_from_slice(k).expect("any length"))
            .collect();
        let hkeys: Vec<HmacKey> = keys.iter().map(|k| HmacKey::new(k)).collect();
        let copies: Vec<Vec<u8>> = (0..subs).map(|i| packet(i as u32, 1, 2)).collect();
        let rounds = 4_000usize;
        let mut figures = [0f64; 2];
        for _ in 0..2 {
            let start = Instant::now();
            for r in 0..rounds {
                for (m, c) in macs.iter().zip(&copies) {
                    let mut m = m.clone();
                    m.update(c);
                    m.update(&(r as u32).to_be_bytes());
                    black_box(m.finalize().into_bytes());
                }
            }
            figures[0] = start.elapsed().as_nanos() as f64 / (rounds * subs) as f64;
            let mut out = vec![[0u8; hmac_x16::TAG_LEN]; subs];
            let start = Instant::now();
            for r in 0..rounds {
                let jobs: [Job<'_>; 100] = std::array::from_fn(|i| Job {
                    key: &hkeys[i],
                    data: &copies[i],
                    roc: r as u32,
                });
                hmac_x16::tags(&jobs, &mut out);
                black_box(&out);
            }
            figures[1] = start.elapsed().as_nanos() as f64 / (rounds * subs) as f64;
        }
        println!(
            "HMAC-SHA1 tag of a 1200-byte packet: {:.0} ns one at a time (RustCrypto hmac), {:.0} ns in groups of 16 (hmac_x16: 16 lanes if AVX-512 ({}), else 4 interleaved with SHA-NI)",
            figures[0],
            figures[1],
            hmac_x16::multi_buffer()
        );
    }

    // The AES-CM keystream of a 1,200-byte copy under 100 subscribers' keys: RustCrypto's
    // `aes` (counter blocks written out, one call per packet, then XORed: what srtp_out.rs
    // ran before) against `aes_ctr::xor` (VAES, one pass; AVX-512 or AVX2), when this CPU has VAES.
    {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        use edgemeet_sfu::aes_ctr::{self, RoundKeys};
        let subs = 100usize;
        let keys: Vec<[u8; 16]> = (0..subs).map(|i| [i as u8 ^ 0x5a; 16]).collect();
        let crates: Vec<aes::Aes128> = keys
            .iter()
            .map(|k| aes::Aes128::new_from_slice(k).expect("16 bytes"))
            .collect();
        let fast: Vec<Option<Box<RoundKeys>>> = keys.iter().map(|k| RoundKeys::new(k)).collect();
        let mut copies: Vec<Vec<u8>> = (0..subs).map(|i| packet(i as u32, 1, 2)).collect();
        let rounds = 4_000usize;
        let mut figures = [f64::NAN; 2];
        for _ in 0..2 {
            let start = Instant::now();
            for r in 0..rounds {
                for (c, copy) in crates.iter().zip(copies.iter_mut()) {
                    let mut iv = [0u8; 16];
                    iv[8..12].copy_from_slice(&(r as u32).to_be_bytes());
                    let data = &mut copy[12..];
                    // As srtp_out's `ctr_xor`: only the blocks needed written, none zeroed.
                    let mut blocks = [const { std::mem::MaybeUninit::<aes::Block>::uninit() }; 96];
                    let needed = data.len().div_ceil(16);
                    for (n, b) in blocks.iter_mut().take(needed).enumerate() {
                        let mut block = iv;
                        block[14..].copy_from_slice(&(n as u16).to_be_bytes());
                        b.write(aes::Block::from(block));
                    }
                    // SAFETY: the first `needed` were written just above; same layout.
                    let blocks = unsafe {
                        std::slice::from_raw_parts_mut(
                            blocks.as_mut_ptr().cast::<aes::Block>(),
                            needed,
                        )
                    };
                    c.encrypt_blocks(blocks);
                    for (d, k) in data.chunks_mut(16).zip(blocks.iter()) {
                        if d.len() == 16 {
                            let x = u128::from_ne_bytes(d[..].try_into().expect("16 bytes"))
                                ^ u128::from_ne_bytes(k[..].try_into().expect("16 bytes"));
                            d.copy_from_slice(&x.to_ne_bytes());
                        } else {
                            for (d, k) in d.iter_mut().zip(k.iter()) {
                                *d ^= k;
                            }
                        }
                    }
                    black_box(&copy);
                }
            }
            figures[0] = start.elapsed().as_nanos() as f64 / (rounds * subs) as f64;
            if fast.iter().all(Option::is_some) {
                let start = Instant::now();
                for r in 0..rounds {
                    for (k, copy) in fast.iter().flatten().zip(copies.iter_mut()) {
                        let mut iv = [0u8; 16];
                        iv[8..12].copy_from_slice(&(r as u32).to_be_bytes());
                        aes_ctr::xor(k, iv, &mut copy[12..]);
                        black_box(&copy);
                    }
                }
                figures[1] = start.elapsed().as_nanos() as f64 / (rounds * subs) as f64;
            }
        }
        println!(
            "AES-128-CM keystream of a 1200-byte packet: {:.0} ns with RustCrypto aes (counter blocks in memory), {:.0} ns with aes_ctr (VAES, one pass, {}; NaN: no VAES here)",
            figures[0],
            figures[1],
            match RoundKeys::best_width() {
                Some(aes_ctr::Width::Zmm) => "512-bit registers",
                Some(aes_ctr::Width::Ymm) => "256-bit registers",
                None => "none",
            }
        );
    }

    // What media.rs runs per packet per subscriber today: the header values for the subscriber
    // (Rewriter::map); the packet itself is rebuilt around the shared payload and handed to
    // webrtc-rs, whose write path is most of the cost (see ARCHITECTURE.md).
    let mut r = Rewriter::new(1, 90_000, Negotiated::new().map_all_payload_types_to(96));
    let n = 5_000_000u32;
    let start = Instant::now();
    for i in 0..n {
        black_box(
            r.map(96, i as u16, i.wrapping_mul(3_000), 100, i as u64 * 1_000)
                .ok(),
        );
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "forwarding core as the SFU runs it (Rewriter::map): {per:.1} ns per packet per subscriber"
    );

    // Layer switch: a new source every 100 packets.
    let mut r = Rewriter::new(1, 90_000, negotiated);
    let switches = 100_000u32;
    let start = Instant::now();
    for i in 0..switches {
        let mut p = source[(i % 1_000) as usize].clone();
        p[8..12].copy_from_slice(&(i / 100).to_be_bytes());
        black_box(r.rewrite(&mut p, i as u64 * 1_000).ok());
    }
    let per = start.elapsed().as_nanos() as f64 / switches as f64;
    println!("  with a source switch every 100 packets (incl. a 1200-byte clone each): {per:.1} ns per packet");

    // Layer selection: three layers arriving, one subscriber's decision per packet.
    let mut sel = LayerSelector::new(Some(2));
    let n = 3_000_000u64;
    let start = Instant::now();
    for i in 0..n {
        let layer = (i % 3) as usize;
        black_box(sel.on_packet(layer, i % 900 < 3, i / 3 * 11));
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!("layer selection: {per:.1} ns per packet per subscriber");

    // Layer switch: every packet comes from another layer and is a keyframe, so each one is a
    // switch (selector decision + the rewriter's new offsets).
    let mut r = Rewriter::new(1, 90_000, Negotiated::new().map_all_payload_types_to(96));
    let switches = 3_000_000u32;
    let start = Instant::now();
    for i in 0..switches {
        let layer = i % 2;
        black_box(
            r.map(
                96,
                i as u16,
                i.wrapping_mul(3_000),
                100 + layer,
                i as u64 * 1_000,
            )
            .ok(),
        );
    }
    let per = start.elapsed().as_nanos() as f64 / switches as f64;
    println!("layer switch (header rewrite onto a new source): {per:.1} ns per switch");

    // The header the engine writes for each subscriber, with and without the one extension it
    // forwards (absolute capture time, two-byte id: what Chromium's offers leave room for), the
    // payload copied after it into a send queue that keeps its capacity (cleared every 64).
    let payload = vec![0x42u8; 1_188];
    let capture = (
        15u8,
        CaptureExt::new(&[1, 2, 3, 4, 5, 6, 7, 8]).expect("8 bytes"),
    );
    let mut queue: Vec<u8> = Vec::with_capacity(64 * 1_300);
    let n = 3_000_000u32;
    let mut figures = [0f64; 2];
    for round in 0..2 {
        for (k, ext) in [None, Some(&capture)].into_iter().enumerate() {
            let start = Instant::now();
            for i in 0..n {
                if i % 64 == 0 {
                    queue.clear();
                }
                let h = write_header(&mut queue, i as u16, i * 3_000, false, 96, 7, ext);
                queue.extend_from_slice(&payload);
                black_box(h);
            }
            figures[k] = start.elapsed().as_nanos() as f64 / n as f64;
        }
        black_box(round);
    }
    println!(
        "header + payload into the send queue: {:.1} ns per packet; with the capture-time extension {:.1} ns (+{:.1} ns)",
        figures[0],
        figures[1],
        figures[1] - figures[0]
    );
}
