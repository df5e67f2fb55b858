//! Two webrtc-rs sans-IO PeerConnections connected in memory — real ICE, DTLS and SRTP, datagrams
//! handed from one to the other, no sockets — for `tests/rtc_protect.rs`, `tests/rtc_renegotiation.rs`
//! and `benches/rtc_path.rs`.
// Included by a test and a bench that each use part of it: what one leaves unused is not dead.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::CandidateConfig;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{RTCIceCandidate, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

pub const SSRC: u32 = 0x1234_5678;

pub struct End {
    pub pc: RTCPeerConnection,
    pub addr: SocketAddr,
    pub connected: bool,
}

pub fn end(addr: &str, profile: SrtpProtectionProfile, interceptors: bool, now: Instant) -> End {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let registry = if interceptors {
        register_default_interceptors(Registry::new(), &mut me).unwrap()
    } else {
        Registry::new()
    };
    let pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                .with_srtp_protection_profiles(vec![profile])
                .build(),
        )
        .with_interceptor_registry(registry)
        .build(now)
        .unwrap();
    End {
        pc,
        addr: addr.parse().unwrap(),
        connected: false,
    }
}

pub fn add_candidate(e: &mut End) {
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: e.addr.ip().to_string(),
            port: e.addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    let init: RTCIceCandidateInit = RTCIceCandidate::from(&host).to_json().unwrap();
    e.pc.add_local_candidate(init).unwrap();
    e.pc.add_local_candidate(RTCIceCandidateInit::default())
        .unwrap();
}

/// Hands `from`'s datagrams to `to`; returns how many.
pub fn deliver(from: &mut End, to: &mut End, now: Instant) -> usize {
    let mut n = 0;
    while let Some(d) = from.pc.poll_write() {
        n += 1;
        let _ = to.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: to.addr,
                peer_addr: from.addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d.message,
        });
    }
    n
}

pub fn events(e: &mut End) {
    while let Some(ev) = e.pc.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
            e.connected = s == RTCPeerConnectionState::Connected;
        }
    }
    while e.pc.poll_read().is_some() {}
}

pub fn connect(profile: SrtpProtectionProfile, interceptors: bool) -> (End, End, String) {
    let now = Instant::now();
    let mut a = end("10.0.0.1:1000", profile, interceptors, now);
    let mut b = end("10.0.0.2:2000", profile, interceptors, now);
    let track = MediaStreamTrack::new(
        "cam-stream".into(),
        "cam".into(),
        "cam".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(SSRC),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                ..Default::default()
            },
            ..Default::default()
        }],
    );
    a.pc.add_track(track).unwrap();
    let offer = a.pc.create_offer(None).unwrap();
    a.pc.set_local_description(now, offer).unwrap();
    add_candidate(&mut a);
    let offer = a.pc.local_description().unwrap();
    b.pc.set_remote_description(now, offer).unwrap();
    let answer = b.pc.create_answer(None).unwrap();
    b.pc.set_local_description(now, answer).unwrap();
    add_candidate(&mut b);
    let answer = b.pc.local_description().unwrap();
    a.pc.set_remote_description(now, answer).unwrap();
    let start = Instant::now();
    while !(a.connected && b.connected) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the two PeerConnections did not connect"
        );
        let now = Instant::now();
        for e in [&mut a, &mut b] {
            if e.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = e.pc.handle_timeout(now);
            }
        }
        let moved = deliver(&mut a, &mut b, now) + deliver(&mut b, &mut a, now);
        events(&mut a);
        events(&mut b);
        if moved == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (a, b, "cam".into())
}

pub fn packet(seq: u16, payload: &Bytes) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3_000,
            ssrc: SSRC,
            ..Default::default()
        },
        payload: payload.clone(),
    }
}

/// Hands one datagram from `from` to `to`; returns the RTP packets `to` read from it.
pub fn receive(to: &mut End, from: &End, datagram: bytes::BytesMut) -> Vec<rtp::Packet> {
    let _ = to.pc.handle_read(TaggedBytesMut {
        now: Instant::now(),
        transport: TransportContext {
            local_addr: to.addr,
            peer_addr: from.addr,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: datagram,
    });
    let mut out = Vec::new();
    while let Some(m) = to.pc.poll_read() {
        if let rtc::peer_connection::message::RTCMessage::RtpPacket(_, p) = m.message {
            out.push(p);
        }
    }
    out
}
