//! A receiver's stream across a renegotiation, on two webrtc-rs sans-IO PeerConnections connected
//! in memory (`rtc_pair`): what the receiver learned from the stream's first packet survives the
//! next offer/answer (vendor/rtc patch 6).

mod rtc_pair;

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::RTCPeerConnection;
use rtc::shared::marshal::{Marshal, MarshalSize};

use rtc_pair::{connect, packet, receive, End, SSRC};

fn send(from: &mut End, to: &mut End, seq: u16) -> usize {
    let p = packet(seq, &Bytes::from(vec![7u8; 300]));
    let mut buf = BytesMut::zeroed(p.marshal_size());
    p.marshal_to(&mut buf).unwrap();
    let datagram = from.pc.protect_rtp(&buf).unwrap();
    receive(to, from, datagram).len()
}

/// The codec `pc`'s receivers know for [`SSRC`], if any.
fn codec_of(pc: &mut RTCPeerConnection) -> Option<String> {
    let ids: Vec<_> = pc.get_receivers().collect();
    ids.into_iter().find_map(|id| {
        pc.rtp_receiver(id)?
            .track()
            .codec(SSRC)
            .map(|c| c.mime_type.clone())
    })
}

/// The SFU offers to a publisher whenever someone joins or leaves. Before patch 6, applying the
/// publisher's answer rebuilt each receiver's track with no codec, until the stream's next packet
/// taught it again; `webrtc`'s driver, which copies a new track's codec once and outside the
/// core's lock, could copy it in that window, and the async engine then saw a track with no codec
/// and never forwarded it (`the_async_engine_forwards_the_same` failed on it in CI).
#[test]
fn a_renegotiation_keeps_the_codec_a_receiver_learned_from_the_first_packet() {
    let (mut a, mut b, _) = connect(SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80, true);
    assert_eq!(codec_of(&mut b.pc), None, "nothing learned before a packet");
    assert_eq!(send(&mut a, &mut b, 1), 1, "the first packet is read");
    assert_eq!(codec_of(&mut b.pc).as_deref(), Some("video/VP8"));

    // The receiving end offers again (as the SFU does), the sender answers.
    let now = Instant::now();
    let offer = b.pc.create_offer(None).unwrap();
    b.pc.set_local_description(now, offer).unwrap();
    let offer = b.pc.local_description().unwrap();
    a.pc.set_remote_description(now, offer).unwrap();
    let answer = a.pc.create_answer(None).unwrap();
    a.pc.set_local_description(now, answer).unwrap();
    let answer = a.pc.local_description().unwrap();
    b.pc.set_remote_description(now, answer).unwrap();

    assert_eq!(
        codec_of(&mut b.pc).as_deref(),
        Some("video/VP8"),
        "the codec is still known right after the answer, before another packet"
    );
    for seq in 2..10 {
        assert_eq!(send(&mut a, &mut b, seq), 1, "packet {seq} is read");
    }
    assert_eq!(codec_of(&mut b.pc).as_deref(), Some("video/VP8"));
}
