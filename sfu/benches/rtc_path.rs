//! What webrtc-rs's sans-IO `rtc` PeerConnection costs per RTP packet once connected, apart from
//! sockets, tasks and channels: `cargo bench -p edgemeet-sfu --bench rtc_path` (also run by
//! `cargo xtask bench`). Two PeerConnections are connected in memory (ICE, DTLS, SRTP for real,
//! datagrams handed from one to the other), then one sends 1,200-byte video packets.
//!
//! It answers the SFU-engine issue's question "drive `rtc` directly, or only take its keys?": the
//! send path here (`handle_write` + `poll_write`: interceptors, SRTP, the datagram) is what a
//! forwarded packet would cost per subscriber on top of the UDP send, if the engine wrote every
//! packet through each subscriber's `RTCPeerConnection`; `protect_rtp` is what the engine's own
//! path costs instead (marshal into a reused buffer + SRTP with the session's context). Prints
//! figures; not pass/fail.

#[path = "../tests/rtc_pair/mod.rs"]
mod rtc_pair;

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc_pair::{connect, packet};

const PACKETS: u32 = 100_000;

fn run(label: &str, profile: SrtpProtectionProfile, interceptors: bool) {
    let (mut a, mut b, track) = connect(profile, interceptors);
    let payload = Bytes::from(vec![0x42u8; 1_188]);
    let mut sent: Vec<BytesMut> = Vec::with_capacity(PACKETS as usize);
    // Send path: what each subscriber's PeerConnection would cost per forwarded packet.
    let now = Instant::now();
    let start = Instant::now();
    for i in 0..PACKETS {
        a.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(track.clone(), packet(i as u16, &payload)),
        })
        .unwrap();
        while let Some(d) = a.pc.poll_write() {
            sent.push(black_box(d.message));
        }
    }
    let send_ns = start.elapsed().as_nanos() as f64 / f64::from(PACKETS);
    // Receive path: what a publisher's packet costs the SFU before the fan-out.
    let start = Instant::now();
    let mut received = 0u32;
    for d in sent.drain(..) {
        let _ = b.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: b.addr,
                peer_addr: a.addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d,
        });
        while let Some(m) = b.pc.poll_read() {
            if matches!(m.message, RTCMessage::RtpPacket(..)) {
                received += 1;
            }
        }
    }
    let recv_ns = start.elapsed().as_nanos() as f64 / f64::from(PACKETS);
    assert!(
        received >= PACKETS * 99 / 100,
        "only {received} of {PACKETS} packets arrived"
    );
    // The engine's path instead: the packet built into a reused buffer, protected with the
    // session's SRTP context (`protect_rtp`, vendor/rtc patch 3), nothing else.
    let mut buf = BytesMut::with_capacity(1_500);
    let start = Instant::now();
    for i in PACKETS..2 * PACKETS {
        let p = packet(i as u16, &payload);
        buf.clear();
        buf.resize(p.marshal_size(), 0);
        p.marshal_to(&mut buf).unwrap();
        sent.push(black_box(a.pc.protect_rtp(&buf).unwrap()));
    }
    let own_ns = start.elapsed().as_nanos() as f64 / f64::from(PACKETS);
    let mut received = 0u32;
    for d in sent.drain(..) {
        received += rtc_pair::receive(&mut b, &a, d).len() as u32;
    }
    assert!(
        received >= PACKETS * 99 / 100,
        "only {received} of {PACKETS} self-protected packets arrived"
    );
    println!(
        "  {label:<46} send {send_ns:>6.0}   protect_rtp {own_ns:>5.0}   receive {recv_ns:>6.0} ns/packet"
    );
}

fn main() {
    println!(
        "webrtc-rs rtc (sans-IO) per 1,200-byte RTP packet, connected, no sockets ({PACKETS} packets):"
    );
    run(
        "AES-128-GCM, default interceptors",
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        true,
    );
    run(
        "AES-128-GCM, no interceptors",
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        false,
    );
    run(
        "AES-128-CM + HMAC-SHA1-80, default interceptors",
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        true,
    );
}
