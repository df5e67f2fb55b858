//! The engine's outgoing RTP header as bytes (pure, no allocation once the buffer is warm): the
//! fixed 12 bytes, and the one header extension the SFU forwards — the publisher's absolute
//! capture time (`abs-capture-time`), under the subscriber's id, in RFC 8285's one-byte form (ids
//! 1–14) or two-byte form (15–255; Chromium's offers use all fourteen one-byte ids).

/// An absolute-capture-time extension's element data (8 bytes, or 16 with the clock offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureExt {
    len: u8,
    data: [u8; 16],
}

impl CaptureExt {
    /// The capture timestamp of an extension as a publisher sent it. Its estimated clock offset
    /// (the 16-byte form) is the capture system's against the *publisher's* clock; receivers read
    /// it against their sender's — this SFU, whose offset to the publisher is not known here — so
    /// it is not passed on: the short form goes (the offset unknown, as the extension allows).
    pub fn new(b: &[u8]) -> Option<CaptureExt> {
        if b.len() != 8 && b.len() != 16 {
            return None;
        }
        let mut data = [0; 16];
        data[..8].copy_from_slice(&b[..8]);
        Some(CaptureExt { len: 8, data })
    }
}

/// Appends an RTP header (no CSRC) to `buf`, with `capture` as its one header extension when
/// given (its id, the element); returns the header's length (what SRTP leaves in the clear).
pub fn write_header(
    buf: &mut Vec<u8>,
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    ssrc: u32,
    capture: Option<&(u8, CaptureExt)>,
) -> usize {
    let start = buf.len();
    buf.push(if capture.is_some() { 0x90 } else { 0x80 });
    buf.push(((marker as u8) << 7) | (payload_type & 0x7f));
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&timestamp.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
    let Some((id, c)) = capture else {
        return 12;
    };
    // RFC 8285: the profile (0xBEDE one-byte form for ids 1–14, 0x1000 two-byte form above), the
    // length in 32-bit words, the element, zero padding.
    let len = usize::from(c.len);
    let (profile, element) = if *id <= 14 {
        ([0xBE, 0xDE], 1 + len)
    } else {
        ([0x10, 0x00], 2 + len)
    };
    let words = element.div_ceil(4);
    buf.extend_from_slice(&[profile[0], profile[1], 0, words as u8]);
    if *id <= 14 {
        buf.push((id << 4) | (c.len - 1));
    } else {
        buf.extend_from_slice(&[*id, c.len]);
    }
    buf.extend_from_slice(&c.data[..len]);
    buf.resize(start + 16 + words * 4, 0);
    16 + words * 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp;
    use rtc::shared::marshal::Unmarshal;

    #[test]
    fn the_capture_time_goes_under_the_subscribers_id_in_either_form_and_reads_back() {
        for (id, data) in [
            (11u8, &[1u8, 2, 3, 4, 5, 6, 7, 8][..]),
            // The 16-byte form goes on as the 8-byte one: its clock offset is the publisher's.
            (11, &[9u8; 16][..]),
            // Two-byte ids.
            (15, &[7u8; 8][..]),
            (200, &[5u8; 16][..]),
        ] {
            let c = (id, CaptureExt::new(data).unwrap());
            let mut buf = vec![0xFF; 3]; // what the queue held before
            let header = write_header(&mut buf, 7, 90_000, true, 96, 0x1234, Some(&c));
            assert_eq!(header % 4, 0);
            assert_eq!(buf.len() - 3, header);
            buf.extend_from_slice(&[0xAA; 20]);
            let back = rtp::Packet::unmarshal(&mut &buf[3..]).unwrap();
            assert_eq!(back.header.get_extension(id).as_deref(), Some(&data[..8]));
            assert_eq!(
                (
                    back.header.sequence_number,
                    back.header.ssrc,
                    back.header.marker
                ),
                (7, 0x1234, true)
            );
            assert_eq!(back.payload.as_ref(), &[0xAA; 20]);
        }
        // Without one: the plain 12-byte header.
        let mut buf = Vec::new();
        assert_eq!(write_header(&mut buf, 1, 0, false, 111, 1, None), 12);
        assert_eq!(buf[0], 0x80);
        assert!(CaptureExt::new(&[0; 5]).is_none());
    }
}
