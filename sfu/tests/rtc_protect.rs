//! The SFU engine's media path outside webrtc-rs's sender pipeline: an RTP packet the application
//! built, protected with a connected session's own SRTP context (`RTCPeerConnection::protect_rtp`,
//! vendor/rtc patch 3), is read by the other end exactly as sent — with either SRTP profile a
//! browser may choose. So is one the engine protects in its own buffer with the session's
//! exported keys (`local_srtp_keys`, patch 4, and `edgemeet_sfu::srtp_out`), across a
//! sequence-number wrap.

mod rtc_pair;

use bytes::{Bytes, BytesMut};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::marshal::{Marshal, MarshalSize};

use rtc_pair::{connect, packet, receive};

fn marshal(p: &rtc::rtp::Packet) -> BytesMut {
    let mut buf = BytesMut::zeroed(p.marshal_size());
    p.marshal_to(&mut buf).unwrap();
    buf
}

#[test]
fn a_packet_protected_with_the_sessions_context_arrives_as_sent() {
    for profile in [
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    ] {
        let (mut a, mut b, _) = connect(profile, true);
        for seq in 1_000..1_050u16 {
            let payload = Bytes::from(vec![(seq % 251) as u8; 900]);
            let sent = packet(seq, &payload);
            let datagram = a.pc.protect_rtp(&marshal(&sent)).unwrap();
            assert_ne!(
                &datagram[12..40],
                &payload[..28],
                "{profile:?}: the payload goes out encrypted"
            );
            let got = receive(&mut b, &a, datagram);
            assert_eq!(got.len(), 1, "{profile:?}: packet {seq} was not read");
            assert_eq!(got[0].header.sequence_number, seq);
            assert_eq!(got[0].header.ssrc, rtc_pair::SSRC);
            assert_eq!(got[0].payload, payload, "{profile:?}: payload of {seq}");
        }
        // Tampered on the way: refused, not delivered.
        let mut bad =
            a.pc.protect_rtp(&marshal(&packet(2_000, &Bytes::from_static(&[7; 100]))))
                .unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(
            receive(&mut b, &a, bad).is_empty(),
            "{profile:?}: a forged packet was read"
        );
    }
}

#[test]
fn a_packet_the_engine_protects_in_place_arrives_as_sent_across_a_wrap() {
    use edgemeet_sfu::srtp_out::{Roc, SrtpOut};
    for profile in [
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    ] {
        let (a, mut b, _) = connect(profile, true);
        let out = SrtpOut::new(a.pc.local_srtp_keys().expect("keys after DTLS")).unwrap();
        let mut roc = Roc::default();
        let mut buf = Vec::new();
        for seq in (65_500..=65_535u16).chain(0..40) {
            let payload = Bytes::from(vec![(seq % 251) as u8; 1_000 + (seq % 7) as usize]);
            buf.clear();
            buf.extend_from_slice(&[0xaa; 3]);
            buf.extend_from_slice(&marshal(&packet(seq, &payload)));
            out.protect(&mut buf, 3, 12, roc.for_seq(seq));
            let got = receive(&mut b, &a, BytesMut::from(&buf[3..]));
            assert_eq!(got.len(), 1, "{profile:?}: packet {seq} was not read");
            assert_eq!(got[0].header.sequence_number, seq);
            assert_eq!(got[0].payload, payload, "{profile:?}: payload of {seq}");
        }
    }
}

#[test]
fn before_dtls_there_is_nothing_to_protect_with() {
    let now = std::time::Instant::now();
    let mut e = rtc_pair::end(
        "10.0.0.9:9000",
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        true,
        now,
    );
    let p = packet(1, &Bytes::from_static(&[1; 10]));
    assert!(e.pc.protect_rtp(&marshal(&p)).is_err());
    assert!(e.pc.local_srtp_keys().is_none());
}
