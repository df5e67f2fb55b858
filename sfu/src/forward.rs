//! The forwarding core (sans-IO): rewrites a publisher's RTP packet, in place, into what one
//! subscriber's negotiated track accepts, and keeps sequence numbers and timestamps continuous when
//! the source behind a subscriber's track changes (a simulcast layer switch, a publisher reconnect).
//!
//! Hot path rules: no allocation, no locks, no clock reads. The caller passes the packet buffer (its
//! own copy for this subscriber) and the arrival time; the rewriter patches bytes:
//! - SSRC → the subscriber track's SSRC;
//! - payload type → the subscriber's negotiated one (packets of unmapped types are dropped);
//! - header extensions (RFC 8285 one-byte form) → the subscriber's negotiated ids; elements with
//!   no mapping are turned into padding bytes, which receivers skip;
//! - sequence number and timestamp → offset so the subscriber sees one continuous stream.

use thiserror::Error;

use crate::codec::Vp8Ids;

/// Why a packet was not forwarded.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum PacketError {
    #[error("packet shorter than its RTP header")]
    Truncated,
    #[error("not RTP version 2")]
    BadVersion,
    #[error("payload type {0} is not negotiated with this subscriber")]
    UnmappedPayloadType(u8),
    #[error("packet is older than the current source's start")]
    Stale,
}

/// Offsets and lengths of an RTP packet's header parts (RFC 3550 §5.1, RFC 8285).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Byte range of the extension elements (after the 4-byte extension header), if any.
    pub ext: Option<(usize, usize)>,
    /// 0xBEDE (one-byte elements), 0x100x (two-byte), or another profile.
    pub ext_profile: u16,
    pub header_len: usize,
}

pub fn parse(buf: &[u8]) -> Result<RtpHeader, PacketError> {
    if buf.len() < 12 {
        return Err(PacketError::Truncated);
    }
    if buf[0] >> 6 != 2 {
        return Err(PacketError::BadVersion);
    }
    let cc = (buf[0] & 0x0f) as usize;
    let has_ext = buf[0] & 0x10 != 0;
    let mut len = 12 + 4 * cc;
    if buf.len() < len {
        return Err(PacketError::Truncated);
    }
    let (mut ext, mut ext_profile) = (None, 0);
    if has_ext {
        if buf.len() < len + 4 {
            return Err(PacketError::Truncated);
        }
        ext_profile = u16::from_be_bytes([buf[len], buf[len + 1]]);
        let words = u16::from_be_bytes([buf[len + 2], buf[len + 3]]) as usize;
        let start = len + 4;
        let end = start + 4 * words;
        if buf.len() < end {
            return Err(PacketError::Truncated);
        }
        ext = Some((start, end));
        len = end;
    }
    Ok(RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        ext,
        ext_profile,
        header_len: len,
    })
}

/// The header fields one subscriber must see for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Per-subscriber mapping of what was negotiated: payload types and extension ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `pt[incoming] = outgoing`, or `NONE`.
    pt: [u8; 128],
    /// `ext[incoming id] = outgoing id` (1..=14), or 0 to strip.
    ext: [u8; 16],
}

impl Negotiated {
    const NONE: u8 = 0xff;

    pub fn new() -> Negotiated {
        Negotiated {
            pt: [Self::NONE; 128],
            ext: [0; 16],
        }
    }

    pub fn map_payload_type(mut self, from: u8, to: u8) -> Negotiated {
        self.pt[(from & 0x7f) as usize] = to & 0x7f;
        self
    }

    /// Every incoming payload type becomes `to`: for a source already known to carry one codec
    /// (the shell forwards only a track's media SSRC, never its retransmissions).
    pub fn map_all_payload_types_to(mut self, to: u8) -> Negotiated {
        self.pt = [to & 0x7f; 128];
        self
    }

    /// Maps a one-byte header extension id (1..=14); other ids are ignored.
    pub fn map_extension(mut self, from: u8, to: u8) -> Negotiated {
        if (1..=14).contains(&from) && (1..=14).contains(&to) {
            self.ext[from as usize] = to;
        }
        self
    }
}

impl Default for Negotiated {
    fn default() -> Self {
        Self::new()
    }
}

/// Rewrites the packets of whichever source currently feeds one subscriber track.
#[derive(Debug, Clone)]
pub struct Rewriter {
    out_ssrc: u32,
    clock_rate: u32,
    negotiated: Negotiated,
    /// The source currently forwarded, and its offsets.
    source: Option<Source>,
    /// Last packet sent: output seq, output ts, arrival time (µs).
    last: Option<(u16, u32, u64)>,
    /// The current source's most recently skipped input sequence numbers, oldest first: a late
    /// packet from before a skip is mapped with the offset it had before that skip (else it
    /// would take the number of the packet just before it).
    skips: Skips,
    /// VP8 picture numbering carried across source switches.
    vp8: Vp8Numbering,
}

/// Offsets that make a VP8 source's picture numbers follow on from the previous source's.
#[derive(Debug, Clone, Copy, Default)]
struct Vp8Numbering {
    /// Added to the source's PictureID (mod 2^15), TL0PICIDX (mod 2^8), KEYIDX (mod 2^5).
    pid: u16,
    tl0: u8,
    key: u8,
    /// The highest numbers sent so far.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    last_key: Option<u8>,
    /// The next packet is the new source's first: offsets are set from it.
    rebase: bool,
}

fn pid_mask(wide: bool) -> u16 {
    if wide {
        0x7fff
    } else {
        0x7f
    }
}

impl Vp8Numbering {
    fn map(&mut self, ids: Vp8Ids) -> Vp8Ids {
        if self.rebase {
            self.rebase = false;
            if let (Some((p, _)), Some(l)) = (ids.picture_id, self.last_pid) {
                self.pid = l.wrapping_add(1).wrapping_sub(p) & 0x7fff;
            }
            if let (Some(t), Some(l)) = (ids.tl0_pic_idx, self.last_tl0) {
                self.tl0 = l.wrapping_add(1).wrapping_sub(t);
            }
            if let (Some(k), Some(l)) = (ids.key_idx, self.last_key) {
                self.key = l.wrapping_add(1).wrapping_sub(k) & 0x1f;
            }
        }
        let out = Vp8Ids {
            picture_id: ids
                .picture_id
                .map(|(p, wide)| (p.wrapping_add(self.pid) & pid_mask(wide), wide)),
            tl0_pic_idx: ids.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0)),
            key_idx: ids.key_idx.map(|k| k.wrapping_add(self.key) & 0x1f),
        };
        // Only move forward: a late packet must not pull the numbering back.
        if let Some((p, wide)) = out.picture_id {
            // Serial arithmetic in the field's own width (7 or 15 bits).
            let mask = pid_mask(wide);
            if self
                .last_pid
                .is_none_or(|l| (1..=mask / 2).contains(&(p.wrapping_sub(l) & mask)))
            {
                self.last_pid = Some(p);
            }
        }
        if let Some(t) = out.tl0_pic_idx {
            if self
                .last_tl0
                .is_none_or(|l| (1..0x80).contains(&t.wrapping_sub(l)))
            {
                self.last_tl0 = Some(t);
            }
        }
        if let Some(k) = out.key_idx {
            if self
                .last_key
                .is_none_or(|l| (1..0x10).contains(&(k.wrapping_sub(l) & 0x1f)))
            {
                self.last_key = Some(k);
            }
        }
        out
    }
}

/// How many skipped sequence numbers a [`Rewriter`] remembers for late packets.
const SKIPS: usize = 16;
/// How far behind the newest packet a late one may be and still be forwarded (about 4 s of 720p
/// video): older ones are stale. Kept well under half the sequence space, so the arithmetic never
/// wraps however long a stream runs.
const LATE_WINDOW: u16 = 0x1000;

/// A small ring of skipped input sequence numbers (no allocation on the packet path).
#[derive(Debug, Clone, Copy, Default)]
struct Skips {
    seqs: [u16; SKIPS],
    /// Index of the oldest; how many are held.
    head: u8,
    len: u8,
    /// The newest skip that had to be forgotten: a late packet from before it cannot be placed.
    forgotten: Option<u16>,
}

impl Skips {
    fn push(&mut self, seq: u16) {
        if self.len as usize == SKIPS {
            self.forgotten = Some(self.seqs[self.head as usize]);
            self.seqs[self.head as usize] = seq;
            self.head = ((self.head as usize + 1) % SKIPS) as u8;
        } else {
            self.seqs[(self.head as usize + self.len as usize) % SKIPS] = seq;
            self.len += 1;
        }
    }

    /// The newest packet is `highest`: skips (and a forgotten one) older than the late window can
    /// concern no packet any more — and a number comes round again after 2^16 packets.
    fn prune(&mut self, highest: u16) {
        while self.len > 0 && highest.wrapping_sub(self.seqs[self.head as usize]) > LATE_WINDOW {
            self.head = ((self.head as usize + 1) % SKIPS) as u8;
            self.len -= 1;
        }
        if self
            .forgotten
            .is_some_and(|f| highest.wrapping_sub(f) > LATE_WINDOW)
        {
            self.forgotten = None;
        }
    }

    fn each(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.len as usize).map(|i| self.seqs[(self.head as usize + i) % SKIPS])
    }

    /// Was `seq` (within the late window of `highest`) skipped? A media packet claiming a padding
    /// packet's number is a duplicate.
    fn contains(&self, seq: u16, highest: u16) -> bool {
        self.each()
            .any(|k| k == seq && highest.wrapping_sub(k) <= LATE_WINDOW)
    }

    /// How many skips came after the late packet `seq` (and up to `highest`), or `None` if one of
    /// them was forgotten (its number may be given away already). Skips from before `seq`, however
    /// old, do not count.
    fn after(&self, seq: u16, highest: u16) -> Option<u16> {
        let back = highest.wrapping_sub(seq);
        if self
            .forgotten
            .is_some_and(|f| highest.wrapping_sub(f) <= back)
        {
            return None;
        }
        Some(
            self.each()
                .filter(|&k| highest.wrapping_sub(k) < back)
                .count() as u16,
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    first_seq: u16,
    /// Highest incoming sequence number seen from this source.
    highest: u16,
    seq_offset: u16,
    ts_offset: u32,
}

impl Source {
    /// `seq` is the newest packet: the late window moves with it.
    fn advance(&mut self, seq: u16) {
        self.highest = seq;
        if seq.wrapping_sub(self.first_seq) > LATE_WINDOW {
            self.first_seq = seq.wrapping_sub(LATE_WINDOW);
        }
    }
}

/// Is `a` before `b` in RTP sequence-number order (RFC 1982 serial arithmetic)?
fn seq_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

impl Rewriter {
    pub fn new(out_ssrc: u32, clock_rate: u32, negotiated: Negotiated) -> Rewriter {
        Rewriter {
            out_ssrc,
            clock_rate,
            negotiated,
            source: None,
            last: None,
            skips: Skips::default(),
            vp8: Vp8Numbering::default(),
        }
    }

    /// The SSRC this subscriber's track is sent with.
    pub fn out_ssrc(&self) -> u32 {
        self.out_ssrc
    }

    /// Rewrites `buf` in place for this subscriber. `now_us` is the packet's arrival time.
    /// A packet from an SSRC other than the current source switches to it: the caller decides when
    /// (e.g. only on a keyframe of the target layer).
    pub fn rewrite(&mut self, buf: &mut [u8], now_us: u64) -> Result<RtpHeader, PacketError> {
        let h = parse(buf)?;
        let out = self.map(h.payload_type, h.seq, h.timestamp, h.ssrc, now_us)?;
        buf[1] = (buf[1] & 0x80) | out.payload_type;
        buf[2..4].copy_from_slice(&out.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&out.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&out.ssrc.to_be_bytes());
        if let (Some((start, end)), 0xBEDE) = (h.ext, h.ext_profile) {
            self.rewrite_one_byte_extensions(&mut buf[start..end]);
        }
        Ok(h)
    }

    /// The decision behind [`Rewriter::rewrite`] for a packet whose header is already parsed (the
    /// webrtc-rs shell holds parsed packets): the header fields this subscriber must see.
    pub fn map(
        &mut self,
        payload_type: u8,
        seq: u16,
        timestamp: u32,
        ssrc: u32,
        now_us: u64,
    ) -> Result<Mapped, PacketError> {
        let out_pt = self.negotiated.pt[(payload_type & 0x7f) as usize];
        if out_pt == Negotiated::NONE {
            return Err(PacketError::UnmappedPayloadType(payload_type));
        }
        let mut late_skips = 0u16;
        let src = match &mut self.source {
            Some(s) if s.ssrc == ssrc => {
                if seq_before(seq, s.highest) {
                    // Late packet: stale if it lies further back than the source's first packet.
                    if s.highest.wrapping_sub(seq) > s.highest.wrapping_sub(s.first_seq) {
                        return Err(PacketError::Stale);
                    }
                    // Skips after it did not move it: undo them.
                    late_skips = self.skips.after(seq, s.highest).ok_or(PacketError::Stale)?;
                    if self.skips.contains(seq, s.highest) {
                        return Err(PacketError::Stale);
                    }
                } else if seq == s.highest {
                    // A repeat; of a skipped padding packet, it would take its predecessor's
                    // number.
                    if self.skips.contains(seq, s.highest) {
                        return Err(PacketError::Stale);
                    }
                } else {
                    s.advance(seq);
                    self.skips.prune(seq);
                }
                *s
            }
            _ => self.switch_to(ssrc, seq, timestamp, now_us),
        };
        let out_seq = seq.wrapping_add(src.seq_offset).wrapping_add(late_skips);
        let out_ts = timestamp.wrapping_add(src.ts_offset);
        // Only move "last" forward: a late (reordered) packet must not pull it back.
        match self.last {
            Some((ls, _, _)) if seq_before(out_seq, ls) => {}
            _ => self.last = Some((out_seq, out_ts, now_us)),
        }
        Ok(Mapped {
            payload_type: out_pt,
            seq: out_seq,
            timestamp: out_ts,
            ssrc: self.out_ssrc,
        })
    }

    /// Starts forwarding a new source so its first packet follows the last one sent: sequence
    /// number +1, timestamp advanced by the wall-clock time since the last packet (at least 1 tick).
    fn switch_to(&mut self, ssrc: u32, seq: u16, timestamp: u32, now_us: u64) -> Source {
        let (seq_offset, ts_offset) = match self.last {
            None => (0, 0),
            Some((last_seq, last_ts, last_us)) => {
                let elapsed_ticks = (now_us.saturating_sub(last_us) as u128
                    * self.clock_rate as u128
                    / 1_000_000) as u32;
                let want_ts = last_ts.wrapping_add(elapsed_ticks.max(1));
                (
                    last_seq.wrapping_add(1).wrapping_sub(seq),
                    want_ts.wrapping_sub(timestamp),
                )
            }
        };
        let s = Source {
            ssrc,
            first_seq: seq,
            highest: seq,
            seq_offset,
            ts_offset,
        };
        self.source = Some(s);
        self.skips = Skips::default();
        self.vp8.rebase = true;
        s
    }

    fn rewrite_one_byte_extensions(&self, ext: &mut [u8]) {
        let mut i = 0;
        while i < ext.len() {
            let b = ext[i];
            if b == 0 {
                i += 1; // padding
                continue;
            }
            let id = b >> 4;
            if id == 15 {
                break; // reserved: stop parsing (RFC 8285 §4.2)
            }
            let len = (b & 0x0f) as usize + 1;
            let end = (i + 1 + len).min(ext.len());
            match self.negotiated.ext[id as usize] {
                0 => ext[i..end].fill(0),
                out => ext[i] = (out << 4) | (b & 0x0f),
            }
            i = end;
        }
    }

    /// A packet of the current source that is not forwarded — a padding-only packet (the
    /// publisher's bandwidth probe) carries nothing to decode. Later packets close the gap its
    /// sequence number would leave: a subscriber counts gaps as loss (and asks for them again).
    pub fn skip(&mut self, ssrc: u32, seq: u16) {
        if let Some(s) = self.source.as_mut().filter(|s| s.ssrc == ssrc) {
            if seq_before(s.highest, seq) {
                s.seq_offset = s.seq_offset.wrapping_sub(1);
                s.advance(seq);
                self.skips.prune(seq);
                self.skips.push(seq);
            }
        }
    }

    /// The next packet starts afresh (a keyframe after a pause, e.g. a tile shown again, even from
    /// the same source): its numbers follow on from the last packet sent, as after a switch,
    /// instead of jumping by everything not forwarded meanwhile.
    pub fn restart(&mut self) {
        self.source = None;
    }

    /// The VP8 numbering this subscriber must see for the packet just accepted by
    /// [`Rewriter::map`] (call it right after, for every VP8 packet forwarded): the first source
    /// keeps its own numbers; after a switch they continue from the last ones sent. When the result
    /// equals `ids`, the payload can be forwarded as it is.
    pub fn map_vp8(&mut self, ids: Vp8Ids) -> Vp8Ids {
        self.vp8.map(ids)
    }

    /// What the subscriber negotiated changed (or became known).
    pub fn set_negotiated(&mut self, negotiated: Negotiated) {
        self.negotiated = negotiated;
    }

    /// The SSRC currently forwarded, if any.
    pub fn source_ssrc(&self) -> Option<u32> {
        self.source.map(|s| s.ssrc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8-like packet: pt 96, one-byte extensions (id 1 = audio level-ish, id 3 = abs-send-time), 20-byte payload.
    fn packet(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0x90, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        // extension header: 0xBEDE, 2 words
        p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02]);
        // id 1 len 1 (1 byte data), id 3 len 3 (3 bytes data), 2 padding
        p.extend_from_slice(&[0x10, 0xAA, 0x32, 0x01, 0x02, 0x03, 0x00, 0x00]);
        p.extend(std::iter::repeat_n(0x42, 20));
        p
    }

    fn negotiated() -> Negotiated {
        Negotiated::new()
            .map_payload_type(96, 98)
            .map_extension(3, 2)
    }

    #[test]
    fn parses_headers_and_refuses_junk() {
        let p = packet(7, 100, 9000);
        let h = parse(&p).unwrap();
        assert_eq!(
            (h.payload_type, h.seq, h.timestamp, h.ssrc, h.header_len),
            (96, 100, 9000, 7, 24)
        );
        assert_eq!(h.ext, Some((16, 24)));
        assert_eq!(parse(&p[..11]), Err(PacketError::Truncated));
        assert_eq!(parse(&p[..20]), Err(PacketError::Truncated));
        let mut v1 = p.clone();
        v1[0] = 0x50;
        assert_eq!(parse(&v1), Err(PacketError::BadVersion));
        // CSRC count larger than the packet
        let mut cc = p.clone();
        cc[0] = 0x8f;
        cc.truncate(40);
        assert_eq!(parse(&cc), Err(PacketError::Truncated));
    }

    #[test]
    fn rewrites_ssrc_payload_type_and_extension_ids_in_place() {
        let mut r = Rewriter::new(0xABCD, 90_000, negotiated());
        let mut p = packet(7, 100, 9000);
        let payload = p[24..].to_vec();
        r.rewrite(&mut p, 0).unwrap();
        let h = parse(&p).unwrap();
        assert_eq!(
            (h.ssrc, h.payload_type, h.seq, h.timestamp),
            (0xABCD, 98, 100, 9000)
        );
        // id 1 (not negotiated) became padding; id 3 became id 2 with its data intact.
        assert_eq!(
            &p[16..24],
            &[0x00, 0x00, 0x22, 0x01, 0x02, 0x03, 0x00, 0x00]
        );
        assert_eq!(&p[24..], &payload[..], "payload untouched");
    }

    #[test]
    fn the_marker_bit_survives_payload_type_rewriting() {
        let mut r = Rewriter::new(1, 90_000, negotiated());
        let mut p = packet(7, 1, 1);
        p[1] |= 0x80;
        r.rewrite(&mut p, 0).unwrap();
        assert_eq!(p[1], 0x80 | 98);
    }

    #[test]
    fn unnegotiated_payload_types_are_dropped() {
        let mut r = Rewriter::new(1, 90_000, Negotiated::new().map_payload_type(111, 111));
        assert_eq!(
            r.rewrite(&mut packet(7, 1, 1), 0),
            Err(PacketError::UnmappedPayloadType(96))
        );
    }

    #[test]
    fn a_source_switch_continues_sequence_and_timestamps() {
        let mut r = Rewriter::new(1, 90_000, negotiated());
        // Source A: seq 65534.. (wraps), 33 ms apart.
        let mut last = (0u16, 0u32);
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            let mut p = packet(0xA, seq, 1_000 + 3_000 * i as u32);
            r.rewrite(&mut p, 33_333 * i as u64).unwrap();
            let h = parse(&p).unwrap();
            last = (h.seq, h.timestamp);
        }
        assert_eq!(last, (1, 10_000));
        // Switch to source B 40 ms after A's last packet, with unrelated seq/ts bases.
        let mut p = packet(0xB, 5_000, 777_777);
        r.rewrite(&mut p, 3 * 33_333 + 40_000).unwrap();
        let h = parse(&p).unwrap();
        assert_eq!(h.seq, 2, "sequence continues with no gap");
        assert_eq!(
            h.timestamp,
            10_000 + 3_600,
            "timestamp advances by 40 ms at 90 kHz"
        );
        assert_eq!(r.source_ssrc(), Some(0xB));
        // B's next packet keeps B's own spacing.
        let mut p = packet(0xB, 5_001, 777_777 + 3_000);
        r.rewrite(&mut p, 3 * 33_333 + 73_333).unwrap();
        assert_eq!(parse(&p).unwrap().seq, 3);
        assert_eq!(parse(&p).unwrap().timestamp, 10_000 + 3_600 + 3_000);
    }

    fn vp8(pid: u16, tl0: u8, key: u8) -> Vp8Ids {
        Vp8Ids {
            picture_id: Some((pid, true)),
            tl0_pic_idx: Some(tl0),
            key_idx: Some(key),
        }
    }

    #[test]
    fn vp8_picture_numbers_follow_on_across_a_layer_switch() {
        let mut r = Rewriter::new(9, 90_000, negotiated());
        // (source, seq, timestamp, arrival µs, numbers in, numbers out)
        let steps = [
            // The first source keeps its own numbers (its payload is forwarded untouched).
            (1, 10, 1000, 0, vp8(32_765, 254, 29), vp8(32_765, 254, 29)),
            (1, 12, 7000, 66_000, vp8(32_767, 0, 31), vp8(32_767, 0, 31)),
            // A late packet of an earlier picture keeps its number and does not pull "last" back.
            (
                1,
                11,
                4000,
                67_000,
                vp8(32_766, 255, 30),
                vp8(32_766, 255, 30),
            ),
            // Another layer, numbered on its own, starts with a keyframe: its numbers continue
            // from the last sent, across the 15-, 8- and 5-bit wraps.
            (2, 500, 77_000, 66_000, vp8(1234, 17, 3), vp8(0, 1, 0)),
            (2, 501, 80_000, 99_000, vp8(1235, 17, 3), vp8(1, 1, 0)),
            (2, 502, 83_000, 132_000, vp8(1236, 18, 4), vp8(2, 2, 1)),
            // And back to the first layer: again one more than the last.
            (1, 12, 90_000, 165_000, vp8(3, 2, 1), vp8(3, 3, 2)),
            (1, 13, 93_000, 198_000, vp8(4, 2, 1), vp8(4, 3, 2)),
        ];
        for (ssrc, seq, ts, at, ids, want) in steps {
            r.map(96, seq, ts, ssrc, at).unwrap();
            assert_eq!(r.map_vp8(ids), want, "packet {seq} of source {ssrc}");
        }
    }

    #[test]
    fn a_restart_on_the_same_source_follows_on_from_the_last_packet() {
        let mut r = Rewriter::new(9, 90_000, negotiated());
        let m = r.map(96, 100, 10_000, 1, 0).unwrap();
        r.map_vp8(vp8(50, 5, 0));
        // Hidden for 10 s (nothing forwarded), shown again from a keyframe of the same source.
        r.restart();
        let n = r.map(96, 2_600, 910_000, 1, 10_000_000).unwrap();
        assert_eq!(
            n.seq,
            m.seq.wrapping_add(1),
            "no gap of the 2,500 packets not forwarded"
        );
        assert_eq!(
            n.timestamp,
            m.timestamp.wrapping_add(900_000),
            "the wall-clock time since"
        );
        assert_eq!(r.map_vp8(vp8(350, 35, 0)), vp8(51, 6, 1));
        // Packets from before the restart are stale.
        assert_eq!(
            r.map(96, 101, 13_000, 1, 10_000_100),
            Err(PacketError::Stale)
        );
    }

    #[test]
    fn vp8_fields_a_source_lacks_stay_absent() {
        let mut r = Rewriter::new(9, 90_000, negotiated());
        r.map(96, 10, 1000, 1, 0).unwrap();
        let only_pid = Vp8Ids {
            picture_id: Some((100, false)),
            ..Default::default()
        };
        assert_eq!(r.map_vp8(only_pid), only_pid);
        r.map(96, 70, 5000, 2, 40_000).unwrap();
        let out = r.map_vp8(Vp8Ids {
            picture_id: Some((90, false)),
            ..Default::default()
        });
        assert_eq!(out.picture_id, Some((101, false)));
        assert_eq!(out.tl0_pic_idx, None);
        assert_eq!(r.map_vp8(Vp8Ids::default()), Vp8Ids::default());
        // A 7-bit picture id wraps at 128, and the next switch follows on from after the wrap.
        let narrow = |p| Vp8Ids {
            picture_id: Some((p, false)),
            ..Default::default()
        };
        r.map(96, 71, 6000, 2, 80_000).unwrap();
        assert_eq!(r.map_vp8(narrow(116)), narrow(127));
        r.map(96, 72, 7000, 2, 120_000).unwrap();
        assert_eq!(r.map_vp8(narrow(117)), narrow(0));
        r.map(96, 11, 9000, 1, 160_000).unwrap();
        assert_eq!(r.map_vp8(narrow(40)), narrow(1));
    }

    #[test]
    fn packets_from_before_a_switch_are_stale_and_reordering_is_kept() {
        let mut r = Rewriter::new(1, 90_000, negotiated());
        r.rewrite(&mut packet(0xA, 10, 0), 0).unwrap();
        r.rewrite(&mut packet(0xB, 500, 0), 1_000).unwrap();
        assert_eq!(
            r.rewrite(&mut packet(0xB, 499, 0), 2_000),
            Err(PacketError::Stale)
        );
        // Reordered packets after the switch keep their relative order.
        let mut late = packet(0xB, 502, 0);
        let mut early = packet(0xB, 501, 0);
        r.rewrite(&mut late, 3_000).unwrap();
        r.rewrite(&mut early, 3_100).unwrap();
        assert_eq!(parse(&late).unwrap().seq, 13);
        assert_eq!(parse(&early).unwrap().seq, 12);
        // And a later switch continues after the highest sequence sent, not the late one.
        let mut c = packet(0xC, 9, 0);
        r.rewrite(&mut c, 4_000).unwrap();
        assert_eq!(parse(&c).unwrap().seq, 14);
    }

    #[test]
    fn long_streams_keep_flowing_across_sequence_wraps() {
        let mut r = Rewriter::new(1, 90_000, negotiated());
        let mut expected = 100u16;
        for i in 0..140_000u32 {
            let seq = 100u16.wrapping_add(i as u16);
            let mut p = packet(0xA, seq, i * 3_000);
            r.rewrite(&mut p, i as u64 * 1_000)
                .unwrap_or_else(|e| panic!("packet {i}: {e}"));
            assert_eq!(parse(&p).unwrap().seq, expected);
            expected = expected.wrapping_add(1);
        }
        // A packet from just before the source began is still refused after all that.
        let mut r = Rewriter::new(1, 90_000, negotiated());
        r.rewrite(&mut packet(0xA, 1_000, 0), 0).unwrap();
        r.rewrite(&mut packet(0xA, 1_001, 0), 0).unwrap();
        assert_eq!(
            r.rewrite(&mut packet(0xA, 999, 0), 0),
            Err(PacketError::Stale)
        );
        assert!(
            r.rewrite(&mut packet(0xA, 1_000, 0), 0).is_ok(),
            "a retransmitted first packet is fine"
        );
    }

    #[test]
    fn malformed_extensions_never_write_out_of_bounds() {
        let mut r = Rewriter::new(1, 90_000, negotiated());
        let mut p = packet(7, 1, 1);
        // An element claiming 16 bytes inside an 8-byte block.
        p[16] = 0x3F;
        assert!(r.rewrite(&mut p, 0).is_ok());
        assert_eq!(p.len(), 44);
    }

    #[test]
    fn skipped_padding_packets_leave_no_gap() {
        let mut r = Rewriter::new(9, 90_000, negotiated());
        let mut out = Vec::new();
        for seq in 100u16..110 {
            if seq == 103 || seq == 104 || seq == 107 {
                r.skip(7, seq); // padding-only probes
                continue;
            }
            out.push(r.map(96, seq, 1_000, 7, seq as u64).unwrap().seq);
        }
        assert_eq!(out, (100u16..107).collect::<Vec<_>>());
        // A skip from another SSRC, or an old sequence number, changes nothing.
        r.skip(8, 200);
        r.skip(7, 50);
        assert_eq!(r.map(96, 110, 1_000, 7, 110).unwrap().seq, 107);
    }

    /// Feeds `input` (seq, is padding) and returns the output sequence numbers of what was sent.
    fn run(r: &mut Rewriter, input: &[(u16, bool)]) -> Vec<Option<u16>> {
        input
            .iter()
            .map(|&(seq, padding)| {
                if padding {
                    r.skip(7, seq);
                    None
                } else {
                    r.map(96, seq, 1_000, 7, seq as u64).ok().map(|m| m.seq)
                }
            })
            .collect()
    }

    #[test]
    fn a_late_packet_after_a_skipped_padding_packet_keeps_its_own_number() {
        // The known bug: 100, 102, [103 padding], 101, 104 came out 100, 102, 100, 103.
        let mut r = Rewriter::new(9, 90_000, negotiated());
        let out = run(
            &mut r,
            &[
                (100, false),
                (102, false),
                (103, true),
                (101, false),
                (104, false),
            ],
        );
        assert_eq!(out, [Some(100), Some(102), None, Some(101), Some(103)]);
    }

    #[test]
    fn reordered_packets_around_skips_come_out_strictly_continuous_across_the_wrap() {
        // Deterministic shuffles of a window of packets with padding among them, across the
        // 16-bit wrap: every forwarded packet gets its own number and together they are gapless.
        let mut state = 0x2545_f491_u32;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for round in 0..200 {
            let start = 65_500u16.wrapping_add(round);
            let mut input: Vec<(u16, bool)> = (0..80u16)
                .map(|i| (start.wrapping_add(i), i > 0 && rnd() % 5 == 0))
                .collect();
            // Move some media packets up to 6 places later (late arrivals), never the first. (A
            // late padding packet leaves its gap: what was sent cannot be renumbered.)
            for i in 1..input.len() {
                if !input[i].1 && rnd() % 4 == 0 {
                    let j = (i + 1 + (rnd() % 6) as usize).min(input.len() - 1);
                    let p = input.remove(i);
                    input.insert(j, p);
                }
            }
            let mut r = Rewriter::new(9, 90_000, negotiated());
            let sent: Vec<u16> = run(&mut r, &input).into_iter().flatten().collect();
            let mut sorted: Vec<u16> = sent.iter().map(|s| s.wrapping_sub(start)).collect();
            sorted.sort_unstable();
            let want: Vec<u16> = (0..sorted.len() as u16).collect();
            assert_eq!(sorted, want, "round {round}: {input:?} gave {sent:?}");
        }
    }

    #[test]
    fn a_long_stream_keeps_numbering_late_packets_right_long_after_its_skips() {
        // Found in review: skips never aged, so half a cycle later a late packet counted a skip
        // from long ago (a duplicate number), or was refused; and the late window wrapped.
        let mut r = Rewriter::new(9, 90_000, negotiated());
        let mut seq = 1000u16;
        r.map(96, seq, 1_000, 7, 0).unwrap();
        for _ in 0..SKIPS + 1 {
            seq = seq.wrapping_add(1);
            r.skip(7, seq); // some padding early on, more than it remembers
        }
        let offset = 1000u16.wrapping_sub(seq); // out = in + offset from here (1000 + 1 follows 1000)
        for _ in 0..3 {
            // Three cycles of the 16-bit space: in order, and now and then a late packet.
            for _ in 0..65_536 / 8 {
                seq = seq.wrapping_add(8);
                let late = seq.wrapping_sub(3);
                assert_eq!(
                    r.map(96, seq, 1_000, 7, 0).unwrap().seq,
                    seq.wrapping_add(offset)
                );
                assert_eq!(
                    r.map(96, late, 1_000, 7, 0).map(|m| m.seq),
                    Ok(late.wrapping_add(offset)),
                    "late {late} with highest {seq}"
                );
            }
        }
        // Far too late: stale, not misnumbered.
        assert_eq!(
            r.map(96, seq.wrapping_sub(LATE_WINDOW + 1), 1_000, 7, 0),
            Err(PacketError::Stale)
        );
    }

    #[test]
    fn a_media_packet_with_a_skipped_padding_packets_number_is_dropped() {
        let mut r = Rewriter::new(9, 90_000, negotiated());
        let out = run(&mut r, &[(10, false), (11, true), (11, false), (12, false)]);
        assert_eq!(out, [Some(10), None, None, Some(11)]);
    }

    #[test]
    fn a_media_packet_claiming_a_forgotten_skips_number_is_dropped() {
        // Found by the rtp fuzz target: it took the number of the packet before it.
        let mut r = Rewriter::new(9, 90_000, negotiated());
        assert_eq!(r.map(96, 1, 1_000, 7, 0).unwrap().seq, 1);
        for seq in 2..(2 + SKIPS as u16 + 1) {
            r.skip(7, seq); // 2 is forgotten
        }
        assert_eq!(r.map(96, 2, 1_000, 7, 0), Err(PacketError::Stale));
        assert_eq!(r.map(96, 2 + SKIPS as u16 + 1, 1_000, 7, 0).unwrap().seq, 2);
    }

    #[test]
    fn a_late_packet_from_before_forgotten_skips_is_dropped_not_misnumbered() {
        let mut r = Rewriter::new(9, 90_000, negotiated());
        r.map(96, 1, 1_000, 7, 0).unwrap();
        for seq in 3..(3 + SKIPS as u16 + 1) {
            r.skip(7, seq); // more padding than the rewriter remembers
        }
        assert_eq!(r.map(96, 2, 1_000, 7, 0), Err(PacketError::Stale));
        // 2 was lost, not skipped: the next packet follows it.
        assert_eq!(r.map(96, 3 + SKIPS as u16 + 1, 1_000, 7, 0).unwrap().seq, 3);
    }
}
