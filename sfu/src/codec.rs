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
