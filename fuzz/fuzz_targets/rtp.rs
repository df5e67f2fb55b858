//! The forwarding core: RTP parse and in-place rewrite of any bytes (padding, header extensions,
//! CSRCs, truncation), and the sequence numbers a subscriber sees for any order of packets from
//! two sources — late, duplicate, padding-only, across the 16-bit wrap: two different packets
//! never get the same number. VP8 picture numbering: read and written in place on any bytes, and
//! renumbered across switches, always within its field's width.
#![no_main]
use std::collections::{HashMap, VecDeque};

use arbitrary::Arbitrary;
use edgemeet_sfu::codec::{vp8_ids, vp8_set_ids, Vp8Ids};
use edgemeet_sfu::forward::{parse, Negotiated, Rewriter};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    /// A packet of source 0 or 1, `delta` from that source's previous sequence number.
    Packet {
        source: bool,
        delta: i8,
        padding: bool,
        ts_delta: u16,
    },
    /// The shell starts the subscriber afresh (a tile shown again, a layer switch).
    Restart,
    /// The rewriter's negotiated payload types / extensions change.
    Renegotiate { pt: u8, ext_from: u8, ext_to: u8 },
}

#[derive(Arbitrary, Debug)]
struct Case {
    raw: Vec<u8>,
    start: [u16; 2],
    steps: Vec<Step>,
}

fuzz_target!(|case: Case| {
    if std::env::var_os("FUZZ_SHOW").is_some() {
        eprintln!("{case:#?}");
    }
    let negotiated = Negotiated::new()
        .map_payload_type(96, 98)
        .map_extension(3, 2);
    // Any bytes: parse and rewrite in place never panic nor change the length.
    let mut raw = case.raw.clone();
    let mut r = Rewriter::new(9, 90_000, negotiated.clone());
    let len = raw.len();
    let parsed = parse(&raw).is_ok();
    let rewritten = r.rewrite(&mut raw, 0);
    assert_eq!(raw.len(), len);
    if rewritten.is_ok() {
        assert!(parsed, "rewrite accepted what parse refused");
    }

    // Any bytes as a VP8 payload: the numbering read back in unchanged is a no-op.
    let ids = vp8_ids(&case.raw);
    let mut p = case.raw.clone();
    vp8_set_ids(&mut p, &ids);
    assert_eq!(
        p, case.raw,
        "writing back what was read changed the payload"
    );

    let mut r = Rewriter::new(9, 90_000, negotiated);
    let ssrcs = [0x1111_1111u32, 0x2222_2222];
    let mut seq = case.start;
    let mut ts = [0u32; 2];
    // Output number → the (source, input number) it was given to.
    // Only recent ones: after 2^16 outputs a number is legitimately given again.
    let mut given: HashMap<u16, (usize, u16)> = HashMap::new();
    let mut order: VecDeque<u16> = VecDeque::new();
    let mut now = 0u64;
    for step in case.steps.iter().take(2_000) {
        match *step {
            Step::Packet {
                source,
                delta,
                padding,
                ts_delta,
            } => {
                let s = source as usize;
                seq[s] = seq[s].wrapping_add(delta as i16 as u16);
                ts[s] = ts[s].wrapping_add(ts_delta as u32);
                now += 1_000;
                if padding {
                    r.skip(ssrcs[s], seq[s]);
                    continue;
                }
                // The shell switches sources only when it decides to; model a switch whenever
                // the other source sends (the worst case for numbering).
                if let Ok(m) = r.map(96, seq[s], ts[s], ssrcs[s], now) {
                    let wide = seq[s] & 1 == 0;
                    let pid = if wide { seq[s] & 0x7fff } else { seq[s] & 0x7f };
                    let out = r.map_vp8(Vp8Ids {
                        picture_id: Some((pid, wide)),
                        tl0_pic_idx: Some(ts[s] as u8),
                        key_idx: Some((ts[s] >> 8) as u8 & 0x1f),
                    });
                    let (p, w) = out.picture_id.expect("a picture id stays");
                    assert!(w == wide && p <= 0x7fff, "picture id {p} (wide {w})");
                    assert!(out.key_idx.expect("keyidx stays") <= 0x1f);
                    if let Some(&(was_s, was_seq)) = given.get(&m.seq) {
                        // The same packet again (a duplicate) may get its number again.
                        assert!(
                            was_s == s && was_seq == seq[s],
                            "output {} given to {:?} and now to {:?}",
                            m.seq,
                            (was_s, was_seq),
                            (s, seq[s])
                        );
                    }
                    if given.insert(m.seq, (s, seq[s])).is_none() {
                        order.push_back(m.seq);
                        if order.len() > 4_096 {
                            let old = order.pop_front().expect("not empty");
                            given.remove(&old);
                        }
                    }
                }
            }
            Step::Restart => r.restart(),
            Step::Renegotiate {
                pt,
                ext_from,
                ext_to,
            } => {
                r.set_negotiated(
                    Negotiated::new()
                        .map_payload_type(96, pt & 0x7f)
                        .map_extension(ext_from & 0x0f, ext_to & 0x0f),
                );
            }
        }
    }
});
