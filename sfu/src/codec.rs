//! What the forwarding core needs to know about codec payloads (pure): does this RTP payload start
//! a keyframe? A subscriber's forwarding starts on one, so its decoder never begins mid-stream.

/// Video codecs the SFU forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    /// From an SDP/webrtc MIME type such as `video/VP8` (case-insensitive).
    pub fn from_mime(mime: &str) -> Option<VideoCodec> {
        let m = mime.to_ascii_lowercase();
        match m.as_str() {
            "video/vp8" => Some(VideoCodec::Vp8),
            "video/h264" => Some(VideoCodec::H264),
            _ => None,
        }
    }
}

/// Does `payload` (an RTP payload, header already removed) begin a keyframe?
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::H264 => h264_starts_keyframe(payload),
    }
}

/// RFC 7741: payload descriptor, then (on the first packet of a partition 0) the VP8 payload
/// header whose lowest bit is the inverse key frame flag.
fn vp8_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        // X: extension byte I L T K follows.
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits (M bit).
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

/// The picture numbering in a VP8 payload descriptor (RFC 7741 §4.2). Each simulcast layer numbers
/// its pictures on its own, so a subscriber moved to another layer must see them renumbered to
/// follow on: a receiver takes a jump in PictureID or TL0PICIDX for lost pictures and holds later
/// frames back waiting for them (Chromium until its 3 s "no frame" timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Ids {
    /// PictureID and whether it is 15 bits wide (else 7).
    pub picture_id: Option<(u16, bool)>,
    pub tl0_pic_idx: Option<u8>,
    /// KEYIDX (5 bits).
    pub key_idx: Option<u8>,
}

/// Where each field of [`Vp8Ids`] sits in the descriptor: (picture id, tl0, tid/keyidx byte).
fn vp8_layout(p: &[u8]) -> (Option<(usize, bool)>, Option<usize>, Option<usize>) {
    let none = (None, None, None);
    let Some(&b0) = p.first() else { return none };
    if b0 & 0x80 == 0 {
        return none;
    }
    let Some(&x) = p.get(1) else { return none };
    let mut i = 2;
    let mut pid = None;
    if x & 0x80 != 0 {
        let Some(&m) = p.get(i) else { return none };
        let wide = m & 0x80 != 0;
        if wide && p.len() < i + 2 {
            return none;
        }
        pid = Some((i, wide));
        i += if wide { 2 } else { 1 };
    }
    let mut tl0 = None;
    if x & 0x40 != 0 {
        if p.len() <= i {
            return none;
        }
        tl0 = Some(i);
        i += 1;
    }
    let mut key = None;
    if x & 0x10 != 0 {
        if p.len() <= i {
            return none;
        }
        key = Some(i);
    }
    (pid, tl0, key)
}

/// Reads the numbering of a VP8 payload (all `None` if it has none, or is truncated).
pub fn vp8_ids(p: &[u8]) -> Vp8Ids {
    let (pid, tl0, key) = vp8_layout(p);
    Vp8Ids {
        picture_id: pid.map(|(i, wide)| {
            if wide {
                (u16::from_be_bytes([p[i], p[i + 1]]) & 0x7fff, true)
            } else {
                ((p[i] & 0x7f) as u16, false)
            }
        }),
        tl0_pic_idx: tl0.map(|i| p[i]),
        key_idx: key.map(|i| p[i] & 0x1f),
    }
}

/// Writes `ids` into a VP8 payload whose descriptor has the same fields (as read by [`vp8_ids`]);
/// fields it lacks are left alone, and the widths never change.
pub fn vp8_set_ids(p: &mut [u8], ids: &Vp8Ids) {
    let (pid, tl0, key) = vp8_layout(p);
    if let (Some((i, wide)), Some((v, _))) = (pid, ids.picture_id) {
        if wide {
            let b = (0x8000 | (v & 0x7fff)).to_be_bytes();
            p[i..i + 2].copy_from_slice(&b);
        } else {
            p[i] = (v & 0x7f) as u8;
        }
    }
    if let (Some(i), Some(v)) = (tl0, ids.tl0_pic_idx) {
        p[i] = v;
    }
    if let (Some(i), Some(v)) = (key, ids.key_idx) {
        p[i] = (p[i] & 0xe0) | (v & 0x1f);
    }
}

/// RFC 6184: an IDR slice or SPS, alone, first in a STAP-A, or at the start of an FU-A.
fn h264_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let is_key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1f {
        24 => {
            // STAP-A: 16-bit size, then a NAL unit, repeated.
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if is_key(p[i + 2] & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_are_recognised_with_and_without_extensions() {
        // S=1, PID=0, no X; payload header bit P=0 → keyframe.
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x10, 0x00, 0x9d, 0x01, 0x2a]
        ));
        // P=1 → interframe.
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
        // X with I (15-bit picture id), L, T: descriptor is 1 + 1 + 2 + 1 + 1 bytes.
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x00]
        ));
        assert!(!starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x01]
        ));
        // Truncated packets are not keyframes and do not panic.
        for n in 0..6 {
            let _ = starts_keyframe(VideoCodec::Vp8, &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40][..n]);
        }
    }

    #[test]
    fn vp8_numbering_is_read_and_written_in_place() {
        // X, I (15-bit 0x0123), L (tl0 5), T+K (tid 1, keyidx 9).
        let mut p = [0x90, 0xf0, 0x81, 0x23, 0x05, 0x49, 0x00];
        let ids = vp8_ids(&p);
        assert_eq!(ids.picture_id, Some((0x123, true)));
        assert_eq!(ids.tl0_pic_idx, Some(5));
        assert_eq!(ids.key_idx, Some(9));
        vp8_set_ids(
            &mut p,
            &Vp8Ids {
                picture_id: Some((0x7ffe, true)),
                tl0_pic_idx: Some(200),
                key_idx: Some(31),
            },
        );
        assert_eq!(p, [0x90, 0xf0, 0xff, 0xfe, 200, 0x5f, 0x00]);
        // 7-bit picture id stays 7 bits.
        let mut q = [0x90, 0x80, 0x05, 0x00];
        assert_eq!(vp8_ids(&q).picture_id, Some((5, false)));
        vp8_set_ids(
            &mut q,
            &Vp8Ids {
                picture_id: Some((0x1ff, true)),
                ..Default::default()
            },
        );
        assert_eq!(q, [0x90, 0x80, 0x7f, 0x00]);
        // T without K: the TID byte is there but carries no KEYIDX; K without T: it does.
        let t_only = [0x90, 0xa0, 0x81, 0x23, 0x40, 0x00];
        assert_eq!(vp8_ids(&t_only).key_idx, None);
        assert_eq!(vp8_ids(&t_only).picture_id, Some((0x123, true)));
        let k_only = [0x90, 0x90, 0x05, 0x07, 0x00];
        assert_eq!(vp8_ids(&k_only).picture_id, Some((5, false)));
        assert_eq!(vp8_ids(&k_only).key_idx, Some(7));
        // L without I: TL0PICIDX right after the X byte.
        let l_only = [0x90, 0x40, 0x2a, 0x00];
        assert_eq!(
            vp8_ids(&l_only),
            Vp8Ids {
                tl0_pic_idx: Some(0x2a),
                ..Default::default()
            }
        );
        // No extension: nothing to read or write.
        assert_eq!(vp8_ids(&[0x10, 0x00]), Vp8Ids::default());
        // Truncated descriptors: nothing read, nothing written, no panic.
        let full = [0x90u8, 0xf0, 0x81, 0x23, 0x05, 0x49];
        for n in 0..full.len() {
            let mut t = full[..n].to_vec();
            assert_eq!(vp8_ids(&t), Vp8Ids::default(), "{n} bytes");
            vp8_set_ids(&mut t, &ids);
            assert_eq!(t, full[..n]);
        }
    }

    #[test]
    fn h264_idr_in_single_stap_a_and_fu_a() {
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A with SPS first.
        assert!(starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        // FU-A start of an IDR, and a middle fragment.
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[]));
    }

    #[test]
    fn mime_types_are_case_insensitive() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), Some(VideoCodec::Vp8));
        assert_eq!(VideoCodec::from_mime("video/h264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::from_mime("audio/opus"), None);
    }
}
