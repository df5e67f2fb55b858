//! The engine's demultiplexer (`sfu/src/demux.rs`) under any sequence of sessions coming and
//! going, datagrams (any bytes, or STUN checks signed with the right or a wrong password) from
//! a handful of addresses, and our own sends: it never panics, a datagram only ever goes to a
//! registered session, a check that fails integrity never moves an address, and the table stays
//! consistent (every address in its session's list, at most 16 per session).
#![no_main]
use std::net::SocketAddr;

use arbitrary::Arbitrary;
use edgemeet_sfu::demux::{stun_check_ufrag, stun_integrity_ok, Demux};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha1::Sha1;

#[derive(Arbitrary, Debug)]
enum Step {
    Add {
        slot: u8,
        ufrag: u8,
    },
    Remove {
        slot: u8,
    },
    /// Any bytes from address `from`.
    Raw {
        from: u8,
        bytes: Vec<u8>,
    },
    /// A binding request naming ufrag `ufrag`, signed with its password or not.
    Check {
        from: u8,
        ufrag: u8,
        signed: bool,
        extra: Vec<u8>,
    },
    SentTo {
        to: u8,
        slot: u8,
    },
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i % 32], 5000 + (i / 32) as u16))
}

fn ufrag(i: u8) -> String {
    format!("uf{}", i % 8)
}

/// A STUN binding request: USERNAME `ufrag:x`, `extra` as an unknown attribute, then
/// MESSAGE-INTEGRITY with `key` (RFC 5389 15.4).
fn check(ufrag: &str, extra: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let attr = |t: u16, v: &[u8], body: &mut Vec<u8>| {
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    };
    attr(0x0006, format!("{ufrag}:x").as_bytes(), &mut body);
    let extra = &extra[..extra.len().min(64)];
    attr(0x8022, extra, &mut body);
    let mut header = vec![0x00, 0x01];
    header.extend_from_slice(&((body.len() + 24) as u16).to_be_bytes());
    header.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    header.extend_from_slice(&[7; 12]);
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap();
    mac.update(&header);
    mac.update(&body);
    let tag = mac.finalize().into_bytes();
    attr(0x0008, &tag, &mut body);
    header.extend_from_slice(&body);
    header
}

fuzz_target!(|steps: Vec<Step>| {
    let mut d = Demux::default();
    for step in steps {
        match step {
            Step::Add { slot, ufrag: u } => {
                let u = ufrag(u);
                d.add(slot as usize % 16, &u, &format!("pw-{u}"));
            }
            Step::Remove { slot } => d.remove(slot as usize % 16),
            Step::Raw { from, bytes } => {
                let _ = stun_check_ufrag(&bytes);
                let _ = stun_integrity_ok(&bytes, b"pw-uf0");
                if let Some(s) = d.route(addr(from), &bytes) {
                    assert!(d.has(s), "routed to {s}, which is no session");
                }
            }
            Step::Check {
                from,
                ufrag: u,
                signed,
                extra,
            } => {
                let u = ufrag(u);
                let key = if signed {
                    format!("pw-{u}")
                } else {
                    "wrong".into()
                };
                let c = check(&u, &extra, key.as_bytes());
                assert_eq!(stun_check_ufrag(&c), Some(u.as_str()));
                assert!(stun_integrity_ok(&c, key.as_bytes()));
                let before = d.route(addr(from), b"\x80");
                let got = d.route(addr(from), &c);
                if let Some(s) = got {
                    assert!(d.has(s));
                }
                if !signed {
                    // A forged check moves nothing.
                    assert_eq!(d.route(addr(from), b"\x80"), before);
                }
            }
            Step::SentTo { to, slot } => d.sent_to(addr(to), slot as usize % 16),
        }
        assert!(d.consistent());
    }
});
