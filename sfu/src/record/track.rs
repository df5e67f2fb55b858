//! One recorded track, pure (no clock reads, files or threads): RTP packets in, in any order and
//! with losses, whole frames out with their presentation time; a keyframe request out when a loss
//! cannot be repaired. The recorder thread ([`super::Recorder`]) feeds it and writes its frames.
//!
//! - **Reorder.** Packets wait in a buffer keyed by their unwrapped sequence number and leave in
//!   order. A missing one is waited for [`REORDER_WAIT_US`] (long enough for the SFU's NACK to the
//!   publisher and the retransmission to come back) or until [`REORDER_MAX`] packets wait behind it;
//!   then it is lost, and packets older than what already left are late and dropped.
//! - **Frames.** Opus: one packet, one frame. VP8 (RFC 7741): the payload descriptor is stripped by
//!   webrtc-rs's depacketizer, a frame starts with S=1 in partition 0 and ends at the marker (or
//!   when the timestamp changes). A frame that lost a packet, or whose start was lost, is dropped.
//! - **Keyframe wait.** Video starts at a keyframe, and after a loss it cannot repair waits for the
//!   next one (what follows a lost frame would not decode), asking the publisher for it at most
//!   every [`KEYFRAME_RETRY_US`].
//! - **Time.** The RTP timestamp is unwrapped (32 bits) and counted from the first frame written:
//!   a pause (camera off) stays a pause in the file. The wall-clock time of that first frame (its
//!   first packet's arrival, on the clock the shell passes in) is the track's start unless the
//!   publisher's RTCP sender reports say better: a sender report pairs an RTP timestamp with the
//!   sender's wall clock (NTP), so the first frame's *capture* time on the sender's clock is known
//!   ([`TrackRecorder::handle_sender_report`]); [`align`] puts every track of one publisher on
//!   the SFU's clock with one offset, so its microphone and camera line up as they were captured
//!   (lip sync) rather than as they arrived (video comes later: it is encoded, and paced).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use edgemeet_shared::recording::TrackSummary;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

/// How long a missing packet is waited for before it counts as lost.
pub const REORDER_WAIT_US: u64 = 300_000;
/// Most packets waiting behind a missing one.
pub const REORDER_MAX: usize = 512;
/// A keyframe is asked for again after this long without one.
pub const KEYFRAME_RETRY_US: u64 = 1_000_000;
/// A frame larger than this is not a camera's or a screen's: dropped.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// The codecs recorded (what the SFU negotiates with browsers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecCodec {
    Opus,
    Vp8,
}

impl RecCodec {
    pub fn clock_rate(self) -> u32 {
        match self {
            RecCodec::Opus => 48_000,
            RecCodec::Vp8 => 90_000,
        }
    }

    pub fn is_video(self) -> bool {
        self == RecCodec::Vp8
    }
}

/// One RTP packet of the track, as forwarded (sequence numbers and timestamps continuous across
/// simulcast layer switches and publisher reconnects).
#[derive(Debug, Clone)]
pub struct RecPacket {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// A whole frame for the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Nanoseconds from the track's first frame; never less than the frame before.
    pub pts_ns: u64,
    pub keyframe: bool,
    /// A VP8 keyframe's picture size.
    pub size: Option<(u32, u32)>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecOutput {
    Frame(Frame),
    /// Ask the publisher for a keyframe of what is recorded.
    KeyframeWanted,
}

/// What happened to the track's packets, for the manifest and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecStats {
    pub frames: u64,
    pub keyframes: u64,
    pub bytes: u64,
    /// Frames not written: incomplete, or waiting for a keyframe.
    pub dropped_frames: u64,
    pub lost_packets: u64,
    /// Came after their place had been given up on (or twice).
    pub late_packets: u64,
}

#[derive(Debug)]
struct Partial {
    ts: u64,
    keyframe: bool,
    broken: bool,
    data: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct TrackRecorder {
    codec: RecCodec,
    /// Each waiting packet with the source it came from.
    buf: BTreeMap<u64, (RecPacket, u32)>,
    /// The highest sequence number seen, unwrapped.
    highest: Option<u64>,
    /// The next sequence number to leave the buffer.
    next: Option<u64>,
    /// Since when the packet at `next` is missing while later ones wait.
    missing_since: Option<u64>,
    cur: Option<Partial>,
    need_keyframe: bool,
    last_request: Option<u64>,
    last_ts: Option<u64>,
    /// (unwrapped RTP timestamp, wall-clock µs) of the first frame written.
    origin: Option<(u64, u64)>,
    last_pts: u64,
    /// When the packet being processed arrived (the start of a frame begun with it).
    arrived_us: u64,
    frame_arrived_us: u64,
    /// What the recorder gets comes from this source (the SFU's forwarder numbers each layer it
    /// switches to: RTP timestamps map to the sender's clock per source).
    source: u32,
    /// The source of the first frame written, and of the frame being rebuilt.
    origin_source: Option<u32>,
    frame_source: u32,
    /// Sender reports, per source (at most [`MAX_SOURCES`]).
    reports: Vec<SourceReports>,
    out: VecDeque<RecOutput>,
    pub stats: RecStats,
}

/// `x` (16 or 32 bits wide, `bits`) unwrapped to the value nearest `near`.
fn unwrap(x: u64, near: u64, bits: u32) -> u64 {
    let span = 1u64 << bits;
    let base = near & !(span - 1);
    [base.wrapping_sub(span), base, base + span]
        .into_iter()
        .map(|b| b.wrapping_add(x))
        .filter(|c| *c < u64::MAX / 2)
        .min_by_key(|c| c.abs_diff(near))
        .unwrap_or(x)
}

impl TrackRecorder {
    pub fn new(codec: RecCodec) -> TrackRecorder {
        TrackRecorder {
            codec,
            buf: BTreeMap::new(),
            highest: None,
            next: None,
            missing_since: None,
            cur: None,
            need_keyframe: codec.is_video(),
            last_request: None,
            last_ts: None,
            origin: None,
            last_pts: 0,
            arrived_us: 0,
            frame_arrived_us: 0,
            source: 0,
            origin_source: None,
            frame_source: 0,
            reports: Vec::new(),
            out: VecDeque::new(),
            stats: RecStats::default(),
        }
    }

    pub fn codec(&self) -> RecCodec {
        self.codec
    }

    /// Wall-clock µs (the shell's clock) of the first frame written, once there is one.
    pub fn start_us(&self) -> Option<u64> {
        self.origin.map(|(_, wall)| wall)
    }

    /// What follows comes from source `source` (the SFU switched layers: another RTP clock).
    pub fn handle_source(&mut self, source: u32) {
        self.source = source;
    }

    /// An RTCP sender report of source `source`, arrived at `now_us` (the shell's clock): the
    /// sender's clock read `ntp_us` (µs since 1900) when its RTP clock read `rtp_ts` (as
    /// forwarded: in the time line the recorder gets). A source's first report maps its RTP
    /// clock to the sender's; the next ones (up to [`REPORTS_USED`], each consistent with the
    /// first within [`MAX_REPORT_STEP_US`] — a sender whose clock stepped is not believed) only
    /// lower the offset (arrival − sender's clock: its clock's offset plus the least one-way
    /// delay).
    pub fn handle_sender_report(&mut self, now_us: u64, ntp_us: u64, rtp_ts: u32, source: u32) {
        let offset = (now_us as i64).saturating_sub(ntp_us as i64);
        let rate = i64::from(self.codec.clock_rate());
        if let Some(r) = self.reports.iter_mut().find(|r| r.source == source) {
            if r.used >= REPORTS_USED {
                return;
            }
            let ticks = i64::from(rtp_ts.wrapping_sub(r.rtp_ts) as i32);
            let expected = (r.ntp_us as i64).saturating_add(ticks * 1_000_000 / rate);
            if (ntp_us as i64).saturating_sub(expected).abs() > MAX_REPORT_STEP_US {
                return;
            }
            r.used += 1;
            r.min_offset_us = r.min_offset_us.min(offset);
            return;
        }
        if self.reports.len() >= MAX_SOURCES {
            // The oldest that is not the first frame's source makes room.
            let keep = self.origin_source;
            match self.reports.iter().position(|r| Some(r.source) != keep) {
                Some(i) => {
                    self.reports.remove(i);
                }
                None => return,
            }
        }
        self.reports.push(SourceReports {
            source,
            rtp_ts,
            ntp_us,
            min_offset_us: offset,
            used: 1,
        });
    }

    /// What [`align`] needs of this track: the first frame's capture, from its source's reports.
    pub fn clock(&self) -> TrackClock {
        // The first frame's source's reports; failing those (it sent none before the forwarder
        // switched layers — a recording that starts while a camera's top layer is off does), the
        // next source's: the forwarded time line runs on across a switch, to a few ms.
        let reports = self
            .reports
            .iter()
            .find(|r| self.origin_source == Some(r.source))
            .or_else(|| {
                let origin = self.origin_source?;
                self.reports
                    .iter()
                    .filter(|r| r.source.wrapping_sub(origin) < u32::MAX / 2)
                    .min_by_key(|r| r.source.wrapping_sub(origin))
            });
        let capture_us = match (reports, self.origin) {
            (Some(r), Some((origin_ts, _))) => {
                // Within ±2³¹ ticks (6.6 h of video) of the report.
                let ticks = i64::from((origin_ts as u32).wrapping_sub(r.rtp_ts) as i32);
                let us = ticks * 1_000_000 / i64::from(self.codec.clock_rate());
                Some((r.ntp_us as i64).saturating_add(us))
            }
            _ => None,
        };
        TrackClock {
            arrived_us: self.start_us(),
            capture_us,
            min_offset_us: reports.map(|r| r.min_offset_us),
        }
    }

    /// Nanoseconds from the first frame to the last one written.
    pub fn duration_ns(&self) -> u64 {
        self.last_pts
    }

    /// One packet, arrived at `now_us`.
    pub fn handle_packet(&mut self, now_us: u64, p: RecPacket) {
        let seq = match self.highest {
            None => u64::from(p.seq) + (1 << 16), // room to unwrap below the first
            Some(h) => unwrap(u64::from(p.seq), h, 16),
        };
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        let next = *self.next.get_or_insert(seq);
        if seq < next || self.buf.contains_key(&seq) {
            self.stats.late_packets += 1;
            return;
        }
        self.buf.insert(seq, (p, self.source));
        self.arrived_us = now_us;
        self.release(now_us);
    }

    /// Time passed: a packet waited for long enough counts as lost.
    pub fn handle_timeout(&mut self, now_us: u64) {
        self.release(now_us);
    }

    /// When [`TrackRecorder::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.missing_since.map(|t| t + REORDER_WAIT_US)
    }

    pub fn poll_output(&mut self) -> Option<RecOutput> {
        self.out.pop_front()
    }

    /// Packets were held back upstream (a host stopped the track): the frame in progress is
    /// broken, and video waits for a keyframe.
    pub fn mark_gap(&mut self, now_us: u64) {
        self.on_loss(now_us);
    }

    /// The recording stops: what waits is written as far as it goes (a frame still missing its
    /// end is dropped).
    pub fn finish(&mut self, now_us: u64) {
        while !self.buf.is_empty() {
            self.skip_gap(now_us);
            self.release(now_us);
        }
        if let Some(p) = self.cur.take() {
            if self.codec == RecCodec::Opus {
                self.finish_frame(now_us, p);
            } else {
                self.stats.dropped_frames += 1;
            }
        }
    }

    fn release(&mut self, now_us: u64) {
        loop {
            let Some(next) = self.next else { return };
            if let Some((p, source)) = self.buf.remove(&next) {
                self.next = Some(next + 1);
                self.missing_since = None;
                self.process(now_us, p, source);
                continue;
            }
            if self.buf.is_empty() {
                self.missing_since = None;
                return;
            }
            let since = *self.missing_since.get_or_insert(now_us);
            if now_us.saturating_sub(since) >= REORDER_WAIT_US || self.buf.len() > REORDER_MAX {
                self.skip_gap(now_us);
                continue;
            }
            return;
        }
    }

    /// The packets before the first waiting one are lost.
    fn skip_gap(&mut self, now_us: u64) {
        let (Some(next), Some(&first)) = (self.next, self.buf.keys().next()) else {
            return;
        };
        if first > next {
            self.stats.lost_packets += first - next;
            self.next = Some(first);
            self.missing_since = None;
            self.on_loss(now_us);
        }
    }

    fn on_loss(&mut self, now_us: u64) {
        if let Some(p) = self.cur.as_mut() {
            p.broken = true;
        }
        if self.codec.is_video() {
            // What follows a lost piece of a frame refers to it: wait for a keyframe.
            self.need_keyframe = true;
            self.ask_keyframe(now_us);
        }
    }

    fn ask_keyframe(&mut self, now_us: u64) {
        if self
            .last_request
            .is_some_and(|t| now_us.saturating_sub(t) < KEYFRAME_RETRY_US)
        {
            return;
        }
        self.last_request = Some(now_us);
        self.out.push_back(RecOutput::KeyframeWanted);
    }

    fn unwrap_ts(&mut self, ts: u32) -> u64 {
        let t = match self.last_ts {
            None => u64::from(ts) + (1 << 32),
            Some(l) => unwrap(u64::from(ts), l, 32),
        };
        self.last_ts = Some(t);
        t
    }

    fn process(&mut self, now_us: u64, p: RecPacket, source: u32) {
        if p.payload.is_empty() {
            return; // padding
        }
        let ts = self.unwrap_ts(p.timestamp);
        match self.codec {
            RecCodec::Opus => {
                self.frame_arrived_us = self.arrived_us;
                self.frame_source = source;
                let frame = Partial {
                    ts,
                    keyframe: true,
                    broken: false,
                    data: p.payload.to_vec(),
                };
                self.finish_frame(now_us, frame);
            }
            RecCodec::Vp8 => {
                if self.cur.as_ref().is_some_and(|c| c.ts != ts) {
                    // The frame ended without its marker (its last packet was lost, or held
                    // back): it cannot be whole.
                    let mut done = self.cur.take().expect("checked");
                    done.broken = true;
                    self.finish_frame(now_us, done);
                }
                let mut vp8 = Vp8Packet::default();
                let Ok(data) = vp8.depacketize(&p.payload) else {
                    if let Some(c) = self.cur.as_mut() {
                        c.broken = true;
                    }
                    return;
                };
                let cur = self.cur.get_or_insert_with(|| {
                    let start = vp8.s == 1 && vp8.pid == 0;
                    Partial {
                        ts,
                        // RFC 6386 §9.1: the frame tag's lowest bit is 0 on a keyframe.
                        keyframe: start && data.first().is_some_and(|b| b & 1 == 0),
                        // Its start was lost: the rest of it is useless.
                        broken: !start,
                        data: Vec::new(),
                    }
                });
                if cur.data.is_empty() {
                    self.frame_arrived_us = self.arrived_us;
                    self.frame_source = source;
                }
                if cur.data.len() + data.len() > MAX_FRAME_BYTES {
                    cur.broken = true;
                } else if !cur.broken {
                    cur.data.extend_from_slice(&data);
                }
                if p.marker {
                    let done = self.cur.take().expect("just set");
                    self.finish_frame(now_us, done);
                }
            }
        }
    }

    fn finish_frame(&mut self, now_us: u64, f: Partial) {
        if f.broken || f.data.is_empty() {
            self.stats.dropped_frames += 1;
            if self.codec.is_video() {
                // What follows may refer to it: wait for a keyframe.
                self.need_keyframe = true;
                self.ask_keyframe(now_us);
            }
            return;
        }
        let size = if self.codec.is_video() && f.keyframe {
            vp8_size(&f.data)
        } else {
            None
        };
        if self.codec.is_video() {
            if self.need_keyframe && !(f.keyframe && size.is_some()) {
                self.stats.dropped_frames += 1;
                self.ask_keyframe(now_us);
                return;
            }
            if f.keyframe {
                self.need_keyframe = false;
            }
        }
        if self.origin.is_none() {
            self.origin_source = Some(self.frame_source);
        }
        let (origin_ts, _) = *self.origin.get_or_insert((f.ts, self.frame_arrived_us));
        let ticks = f.ts.saturating_sub(origin_ts);
        let pts = (ticks as u128 * 1_000_000_000 / u128::from(self.codec.clock_rate())) as u64;
        // A file's times never go back (a timestamp older than the last frame's is clamped).
        let pts_ns = pts.max(self.last_pts);
        self.last_pts = pts_ns;
        self.stats.frames += 1;
        self.stats.bytes += f.data.len() as u64;
        if f.keyframe && self.codec.is_video() {
            self.stats.keyframes += 1;
        }
        self.out.push_back(RecOutput::Frame(Frame {
            pts_ns,
            keyframe: f.keyframe,
            size,
            data: f.data,
        }));
    }
}

/// Sources whose sender reports a track keeps.
pub const MAX_SOURCES: usize = 8;
/// Sender reports of one source used (a meeting's first ~10 s of video, ~50 s of audio: the
/// offset is the one at the start; a flood of reports costs nothing after).
pub const REPORTS_USED: u32 = 10;
/// How far a report may put the sender's clock from where its source's first report and the RTP
/// clock put it: more, and its clock stepped (the report is not used).
pub const MAX_REPORT_STEP_US: i64 = 20_000;

/// One source's sender reports: its first (RTP timestamp as forwarded, the sender's clock then)
/// and the least offset seen.
#[derive(Debug, Clone, Copy)]
struct SourceReports {
    source: u32,
    rtp_ts: u32,
    ntp_us: u64,
    min_offset_us: i64,
    used: u32,
}

/// When a track's first frame was, as [`align`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackClock {
    /// Its arrival at the SFU (the shell's clock, µs).
    pub arrived_us: Option<u64>,
    /// Its capture on the sender's clock (NTP µs), from a sender report.
    pub capture_us: Option<i64>,
    /// See [`TrackRecorder::handle_sender_report`].
    pub min_offset_us: Option<i64>,
}

/// How far a start from sender reports may be from the first frame's arrival before the sender's
/// clock is not believed (it jumped, or lies): a frame is not captured seconds before it arrives.
pub const MAX_CAPTURE_BEFORE_ARRIVAL_US: i64 = 2_000_000;
/// And after it (a frame cannot arrive before it is captured; this much is measurement noise: the
/// sender's clock read when it sent a report, the SFU's when one arrived).
pub const MAX_CAPTURE_AFTER_ARRIVAL_US: i64 = 50_000;

/// How a track's start was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartClock {
    /// From the publisher's sender reports: capture time, one offset for all its tracks.
    SenderReports,
    /// The first frame's arrival.
    Arrival,
}

impl StartClock {
    pub fn name(self) -> &'static str {
        match self {
            StartClock::SenderReports => "sender-reports",
            StartClock::Arrival => "arrival",
        }
    }
}

/// Each track's start on the SFU's clock (µs), for tracks grouped by publisher (`publisher[i]`
/// names the publisher of `clocks[i]`). A publisher's tracks use its sender reports when every one
/// of them has one and each start stays within [`MAX_CAPTURE_BEFORE_ARRIVAL_US`] before its
/// arrival (and [`MAX_CAPTURE_AFTER_ARRIVAL_US`] after it): then they all share the least offset seen on any of them, so their
/// distances are the sender's. Otherwise all of them start at their arrivals — never a mix, which
/// would shift one against the other by the encoder's delay.
pub fn align<P: PartialEq>(publisher: &[P], clocks: &[TrackClock]) -> Vec<(u64, StartClock)> {
    let mut out: Vec<(u64, StartClock)> = clocks
        .iter()
        .map(|c| (c.arrived_us.unwrap_or(0), StartClock::Arrival))
        .collect();
    let by_reports = sender_starts(publisher, clocks);
    for i in 0..clocks.len() {
        if (0..i).any(|j| publisher[j] == publisher[i]) {
            continue; // its publisher was done
        }
        let mine: Vec<usize> = (i..clocks.len())
            .filter(|&j| publisher[j] == publisher[i])
            .collect();
        let starts: Option<Vec<u64>> = mine
            .iter()
            .map(|&j| {
                let start = by_reports[j]?;
                let arrived = clocks[j].arrived_us? as i64;
                let early = arrived.checked_sub(start)?;
                (-MAX_CAPTURE_AFTER_ARRIVAL_US..=MAX_CAPTURE_BEFORE_ARRIVAL_US)
                    .contains(&early)
                    .then_some(start.max(0) as u64)
            })
            .collect();
        if let Some(starts) = starts {
            for (&j, start) in mine.iter().zip(starts) {
                out[j] = (start, StartClock::SenderReports);
            }
        }
    }
    out
}

/// Each track's start as its publisher's sender reports put it, on the SFU's clock (µs): its
/// first frame's capture plus the least offset seen on any of the publisher's tracks (`None`
/// without a report of its own, or with no offset on any). [`align`] uses these when all of a
/// publisher's tracks have one close enough to their arrivals.
pub fn sender_starts<P: PartialEq>(publisher: &[P], clocks: &[TrackClock]) -> Vec<Option<i64>> {
    (0..clocks.len())
        .map(|i| {
            let offset = (0..clocks.len())
                .filter(|&j| publisher[j] == publisher[i])
                .filter_map(|j| clocks[j].min_offset_us)
                .min()?;
            clocks[i].capture_us?.checked_add(offset)
        })
        .collect()
}

/// Sets each track's `start_us` and `clock` by [`align`] (publishers named by `participant`).
pub fn set_starts(tracks: &mut [TrackSummary], clocks: &[TrackClock]) {
    let (starts, by_reports) = {
        let who: Vec<&str> = tracks.iter().map(|t| t.participant.as_str()).collect();
        (align(&who, clocks), sender_starts(&who, clocks))
    };
    for ((t, (start, how)), by_reports) in tracks.iter_mut().zip(starts).zip(by_reports) {
        t.start_us = start;
        t.clock = how.name().into();
        t.sender_start_us = by_reports;
    }
}

/// A VP8 keyframe's width and height (RFC 6386 §9.1: after the 3-byte frame tag, the start code
/// 9d 01 2a, then 14-bit width and height, little-endian, with 2 bits of scaling each).
pub fn vp8_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff);
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    /// A VP8 packet: descriptor (S bit on the first of a frame), then for the first packet of a
    /// keyframe a frame tag + start code + 640x360; `n` marks the payload.
    fn vp8(seq: u16, ts: u32, first: bool, last: bool, key: bool, n: u8) -> RecPacket {
        let mut b = vec![if first { 0x10 } else { 0x00 }];
        if first {
            let tag = if key { 0x00 } else { 0x01 };
            b.extend_from_slice(&[tag, 0, 0]);
            if key {
                b.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
            }
        }
        b.extend_from_slice(&[n; 4]);
        RecPacket {
            seq,
            timestamp: ts,
            marker: last,
            payload: Bytes::from(b),
        }
    }

    fn opus(seq: u16, ts: u32) -> RecPacket {
        RecPacket {
            seq,
            timestamp: ts,
            marker: false,
            payload: Bytes::from(vec![0xfc, seq as u8]),
        }
    }

    fn drain(r: &mut TrackRecorder) -> (Vec<Frame>, usize) {
        let (mut frames, mut asks) = (Vec::new(), 0);
        while let Some(o) = r.poll_output() {
            match o {
                RecOutput::Frame(f) => frames.push(f),
                RecOutput::KeyframeWanted => asks += 1,
            }
        }
        (frames, asks)
    }

    /// Frame `i` of a 30 fps stream in two packets (a keyframe every `gop`).
    fn frame_packets(i: u16, gop: u16) -> [RecPacket; 2] {
        let ts = 1_000 + u32::from(i) * 3_000;
        let key = i.is_multiple_of(gop);
        [
            vp8(2 * i, ts, true, false, key, i as u8),
            vp8(2 * i + 1, ts, false, true, key, i as u8),
        ]
    }

    #[test]
    fn vp8_frames_in_order_come_out_whole_timed_from_the_first_with_its_size() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        for i in 0..10 {
            for p in frame_packets(i, 5) {
                r.handle_packet(1_000_000 + u64::from(i) * 33 * MS, p);
            }
        }
        let (frames, asks) = drain(&mut r);
        assert_eq!(asks, 0);
        assert_eq!(frames.len(), 10);
        assert_eq!(frames[0].pts_ns, 0);
        assert_eq!(frames[3].pts_ns, 100_000_000); // 9,000 ticks of 90 kHz
        assert_eq!(frames[0].size, Some((640, 360)));
        assert!(frames[0].keyframe && frames[5].keyframe && !frames[1].keyframe);
        // The descriptor is gone: the frame is the two payloads, joined.
        assert_eq!(
            frames[1].data,
            [[0x01, 0, 0].as_slice(), &[1; 4], &[1; 4]].concat()
        );
        assert_eq!(r.start_us(), Some(1_000_000));
        assert_eq!(r.stats.frames, 10);
        assert_eq!(r.stats.keyframes, 2);
    }

    #[test]
    fn video_waits_for_its_first_keyframe_and_asks_for_one_at_most_each_second() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        // Starts mid-GOP: frames 1..11 are deltas, 12 is the next keyframe.
        for i in 1..14 {
            for p in frame_packets(i, 12) {
                r.handle_packet(u64::from(i) * 100 * MS, p);
            }
        }
        let (frames, asks) = drain(&mut r);
        assert_eq!(frames.len(), 2, "frames 12 and 13");
        assert!(frames[0].keyframe);
        assert_eq!(frames[0].pts_ns, 0);
        // Asked at frame 1 (100 ms) and again at frame 11 (1,100 ms), not in between.
        assert_eq!(asks, 2);
        assert_eq!(r.stats.dropped_frames, 11);
        assert_eq!(r.start_us(), Some(1_200 * MS));
    }

    #[test]
    fn reordered_packets_are_put_back_in_order_without_a_loss() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        let mut pkts: Vec<RecPacket> = (0..6).flat_map(|i| frame_packets(i, 30)).collect();
        pkts.swap(2, 3); // frame 1's two packets
        pkts.swap(5, 7); // across frames 2 and 3
        for (n, p) in pkts.into_iter().enumerate() {
            r.handle_packet(n as u64 * 10 * MS, p);
        }
        let (frames, asks) = drain(&mut r);
        assert_eq!((frames.len(), asks), (6, 0));
        assert_eq!(r.stats.lost_packets, 0);
        assert!(frames.windows(2).all(|w| w[0].pts_ns < w[1].pts_ns));
    }

    #[test]
    fn a_lost_packet_is_waited_for_then_its_frame_and_the_rest_up_to_a_keyframe_are_dropped() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        let mut t = 0;
        for i in 0..20u16 {
            for p in frame_packets(i, 10) {
                t += 10 * MS;
                if p.seq == 7 {
                    continue; // frame 3's second packet never comes
                }
                r.handle_packet(t, p);
            }
        }
        // 300 ms after it went missing nothing waited in vain: frames 0..3 and...
        let (frames, asks) = drain(&mut r);
        assert_eq!(r.stats.lost_packets, 1);
        assert_eq!(asks, 1, "one keyframe request for the loss");
        let pts: Vec<u64> = frames.iter().map(|f| f.pts_ns / 1_000_000).collect();
        // Frames 0, 1, 2, then 10..19 (3 is broken, 4..9 refer to it).
        assert_eq!(
            pts,
            [0, 33, 66, 333, 366, 400, 433, 466, 500, 533, 566, 600, 633]
        );
        assert!(frames[3].keyframe);
    }

    #[test]
    fn a_missing_packet_that_comes_back_in_time_repairs_the_frame() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        let pkts: Vec<RecPacket> = (0..4).flat_map(|i| frame_packets(i, 30)).collect();
        let late = pkts[3].clone();
        for (n, p) in pkts.into_iter().enumerate() {
            if n != 3 {
                r.handle_packet(n as u64 * MS, p);
            }
        }
        assert_eq!(r.poll_timeout(), Some(4 * MS + REORDER_WAIT_US));
        r.handle_packet(250 * MS, late); // a retransmission, before the wait ends
        let (frames, asks) = drain(&mut r);
        assert_eq!((frames.len(), asks, r.stats.lost_packets), (4, 0, 0));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn the_wait_ends_by_timeout_and_a_packet_after_that_is_late() {
        let mut r = TrackRecorder::new(RecCodec::Opus);
        r.handle_packet(0, opus(10, 0));
        r.handle_packet(20 * MS, opus(12, 1_920));
        assert_eq!(drain(&mut r).0.len(), 1);
        r.handle_timeout(20 * MS + REORDER_WAIT_US - 1);
        assert_eq!(drain(&mut r).0.len(), 0);
        r.handle_timeout(20 * MS + REORDER_WAIT_US);
        let (frames, asks) = drain(&mut r);
        // Audio asks for nothing: the 20 ms are a gap in the time line.
        assert_eq!((frames.len(), asks), (1, 0));
        assert_eq!(frames[0].pts_ns, 40_000_000);
        r.handle_packet(400 * MS, opus(11, 960));
        assert_eq!(r.stats.late_packets, 1);
        assert_eq!(r.stats.lost_packets, 1);
    }

    #[test]
    fn a_full_buffer_gives_up_on_the_missing_packet_at_once() {
        let mut r = TrackRecorder::new(RecCodec::Opus);
        r.handle_packet(0, opus(0, 0));
        for s in 2..(REORDER_MAX as u16 + 3) {
            r.handle_packet(MS, opus(s, u32::from(s) * 960));
        }
        assert_eq!(r.stats.lost_packets, 1);
        assert_eq!(drain(&mut r).0.len(), REORDER_MAX + 2);
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap() {
        let mut r = TrackRecorder::new(RecCodec::Opus);
        let mut ts = u32::MAX - 960 * 2;
        for i in 0..6u16 {
            r.handle_packet(u64::from(i) * 20 * MS, opus(65_533u16.wrapping_add(i), ts));
            ts = ts.wrapping_add(960);
        }
        let (frames, _) = drain(&mut r);
        let pts: Vec<u64> = frames.iter().map(|f| f.pts_ns / 1_000_000).collect();
        assert_eq!(pts, [0, 20, 40, 60, 80, 100]);
        assert_eq!(r.stats.lost_packets + r.stats.late_packets, 0);
    }

    #[test]
    fn finishing_writes_what_waits_and_drops_a_frame_without_its_end() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        let [a, b] = frame_packets(0, 30);
        let [c, _] = frame_packets(1, 30);
        let [e, f] = frame_packets(2, 30);
        r.handle_packet(0, a);
        r.handle_packet(0, b);
        r.handle_packet(MS, e);
        r.handle_packet(MS, f);
        r.handle_packet(MS, c); // frame 1's end never comes; frame 2 waits behind it
        r.finish(2 * MS);
        let (frames, _) = drain(&mut r);
        // Frame 2 follows a loss and is not a keyframe: only frame 0 is written.
        assert_eq!(frames.len(), 1);
        assert!(r.buf.is_empty());
    }

    #[test]
    fn a_gap_upstream_or_a_frame_without_its_end_makes_video_wait_for_a_keyframe() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        let pkts: Vec<RecPacket> = (0..12).flat_map(|i| frame_packets(i, 10)).collect();
        for p in &pkts[..4] {
            r.handle_packet(0, p.clone());
        }
        // A host stopped the camera for a while: the numbers close up, the gap is told.
        r.mark_gap(MS);
        for p in &pkts[4..] {
            r.handle_packet(2 * MS, p.clone());
        }
        let (frames, asks) = drain(&mut r);
        let keys: Vec<bool> = frames.iter().map(|f| f.keyframe).collect();
        assert_eq!(keys, [true, false, true, false], "frames 0, 1, then 10, 11");
        assert_eq!(asks, 1);
        // A frame whose marker never came (the timestamp moved on) is dropped, and so is what
        // follows until a keyframe.
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        let [a, b] = frame_packets(0, 30);
        let [c, _] = frame_packets(1, 30);
        let mut next = frame_packets(2, 30);
        next[0].seq = 3;
        next[1].seq = 4;
        for p in [a, b, c, next[0].clone(), next[1].clone()] {
            r.handle_packet(0, p);
        }
        let (frames, asks) = drain(&mut r);
        assert_eq!((frames.len(), asks), (1, 1));
    }

    #[test]
    fn garbage_never_panics_and_an_oversized_frame_is_dropped() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        for (i, len) in [0usize, 1, 2, 3, 5, 11].into_iter().enumerate() {
            r.handle_packet(
                i as u64,
                RecPacket {
                    seq: i as u16,
                    timestamp: 7,
                    marker: true,
                    payload: Bytes::from(vec![0xff; len]),
                },
            );
        }
        let [a, _] = frame_packets(0, 1);
        let mut big = a.clone();
        big.seq = 6;
        big.timestamp = 99;
        r.handle_packet(10, big);
        let mut tail = a;
        tail.seq = 7;
        tail.timestamp = 99;
        tail.marker = true;
        tail.payload = Bytes::from([vec![0u8], vec![1; MAX_FRAME_BYTES]].concat());
        r.handle_packet(11, tail);
        assert_eq!(drain(&mut r).0.len(), 0);
        assert_eq!(vp8_size(&[0; 3]), None);
    }

    /// A sender's clock (NTP µs since 1900) this far behind or ahead of the SFU's (µs since 1970).
    const NTP_1970_US: u64 = 2_208_988_800 * 1_000_000;

    #[test]
    fn a_publishers_microphone_and_camera_line_up_by_capture_time_not_by_arrival() {
        // One sender, its clock 3 s behind the SFU's; one-way delay 5 ms. Both captured at the
        // sender's t0 (= SFU's 10 s + 3 s); audio arrives 5 ms later, video (encoded, paced) 45 ms.
        let skew: i64 = 3_000_000;
        let t0_sender: u64 = NTP_1970_US + 10_000_000;
        let sfu = |sender_ntp: u64| (sender_ntp - NTP_1970_US) as i64 + skew;
        let mut audio = TrackRecorder::new(RecCodec::Opus);
        let mut video = TrackRecorder::new(RecCodec::Vp8);
        // Audio: RTP 48 kHz, ts 5_000 at t0; 20-ms packets.
        for i in 0..10u16 {
            let at = sfu(t0_sender) as u64 + 5 * MS + u64::from(i) * 20 * MS;
            audio.handle_packet(at, opus(i, 5_000 + u32::from(i) * 960));
        }
        // Video: RTP 90 kHz, ts 1_000 at t0 (frame_packets' first frame).
        for i in 0..10u16 {
            let at = sfu(t0_sender) as u64 + 45 * MS + u64::from(i) * 33 * MS;
            for p in frame_packets(i, 5) {
                video.handle_packet(at, p);
            }
        }
        drain(&mut audio);
        drain(&mut video);
        // Reports a second later: audio's sent at sender t0+1 s (arrives after 5 ms and after
        // 9 ms), video's at t0+1.2 s (arrives after 7 ms).
        let report = |r: &mut TrackRecorder, after_us: u64, delay_us: u64, rtp: u32| {
            r.handle_sender_report(
                sfu(t0_sender + after_us) as u64 + delay_us,
                t0_sender + after_us,
                rtp,
                0,
            )
        };
        report(&mut audio, 1_000_000, 5_000, 5_000 + 48_000);
        report(&mut audio, 2_000_000, 9_000, 5_000 + 96_000);
        report(&mut video, 1_200_000, 7_000, 1_000 + 108_000);

        let clocks = [audio.clock(), video.clock()];
        let by_arrival = clocks[1].arrived_us.unwrap() - clocks[0].arrived_us.unwrap();
        assert_eq!(by_arrival, 40_000, "video arrived 40 ms after audio");
        let starts = align(&["p1", "p1"], &clocks);
        assert_eq!(starts[0].1, StartClock::SenderReports);
        assert_eq!(starts[1].1, StartClock::SenderReports);
        // Captured together: they start together, 5 ms (the least delay) after the capture.
        assert_eq!(starts[0].0, starts[1].0);
        assert_eq!(starts[0].0, sfu(t0_sender) as u64 + 5_000);
    }

    #[test]
    fn without_a_report_for_every_track_or_with_a_clock_that_lies_a_publisher_starts_at_arrival() {
        let clock = |arrived: u64, capture: Option<i64>, offset: Option<i64>| TrackClock {
            arrived_us: Some(arrived),
            capture_us: capture,
            min_offset_us: offset,
        };
        // p1: both tracks reported, consistent. p2: its camera has no report yet. p3: its clock
        // says the frame was captured 5 s before it arrived. p4: 1 s after it arrived.
        let clocks = [
            clock(10_010_000, Some(7_000_000), Some(3_005_000)),
            clock(10_040_000, Some(7_000_000), Some(3_006_000)),
            clock(20_010_000, Some(1_000), Some(20_000_000)),
            clock(20_050_000, None, None),
            clock(30_000_000, Some(0), Some(25_000_000)),
            clock(40_000_000, Some(0), Some(41_000_000)),
        ];
        let starts = align(&["p1", "p1", "p2", "p2", "p3", "p4"], &clocks);
        assert_eq!(starts[0], (10_005_000, StartClock::SenderReports));
        assert_eq!(starts[1], (10_005_000, StartClock::SenderReports));
        assert_eq!(starts[2], (20_010_000, StartClock::Arrival));
        assert_eq!(starts[3], (20_050_000, StartClock::Arrival));
        assert_eq!(starts[4], (30_000_000, StartClock::Arrival));
        assert_eq!(starts[5], (40_000_000, StartClock::Arrival));
        // What the reports said, shown beside the arrival whichever was used.
        assert_eq!(
            sender_starts(&["p1", "p1", "p2", "p2", "p3", "p4"], &clocks),
            [
                Some(10_005_000),
                Some(10_005_000),
                Some(20_001_000),
                None,
                Some(25_000_000),
                Some(41_000_000)
            ]
        );
        // A track with no frame at all, garbage offsets: no panic.
        let odd = [
            TrackClock::default(),
            clock(5, Some(i64::MAX), Some(i64::MAX)),
            clock(u64::MAX, Some(i64::MIN), Some(i64::MIN)),
        ];
        let starts = align(&["a", "b", "c"], &odd);
        assert!(starts.iter().all(|s| s.1 == StartClock::Arrival));
        assert_eq!(sender_starts(&["a", "b", "c"], &odd), [None, None, None]);
    }

    #[test]
    fn a_report_older_than_the_first_frame_or_across_a_wrap_places_it_right() {
        let mut r = TrackRecorder::new(RecCodec::Opus);
        // The report comes before the first frame (ts 100 at sender 1 s), the frame's ts wraps.
        r.handle_sender_report(2_000_000, 1_000_000, u32::MAX - 47_999, 0);
        r.handle_packet(2_500_000, opus(1, 100));
        drain(&mut r);
        let c = r.clock();
        // u32::MAX - 47_999 → 100 is 48,100 ticks: 1.002083 s later on the sender's clock.
        assert_eq!(c.capture_us, Some(1_000_000 + 1_002_083));
        assert_eq!(c.min_offset_us, Some(1_000_000));
    }

    #[test]
    fn a_frame_held_in_the_reorder_buffer_keeps_the_source_it_came_from() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        r.handle_source(1);
        // The keyframe's second packet is late: the switch to source 2 is announced meanwhile.
        let [a, b] = frame_packets(0, 5);
        r.handle_packet(1_000_000, a);
        r.handle_source(2);
        r.handle_packet(1_010_000, b);
        assert_eq!(drain(&mut r).0.len(), 1);
        assert_eq!(r.origin_source, Some(1));
    }

    #[test]
    fn reports_map_only_the_first_frames_source_and_a_stepped_clock_or_a_flood_is_not_believed() {
        let mut r = TrackRecorder::new(RecCodec::Vp8);
        r.handle_source(1);
        for i in 0..3u16 {
            for p in frame_packets(i, 5) {
                r.handle_packet(1_000_000 + u64::from(i) * 33 * MS, p);
            }
        }
        assert_eq!(drain(&mut r).0.len(), 3);
        // The forwarder switched layers (source 2) before a report came: source 2's RTP clock is
        // another one, its reports do not place the first frame.
        r.handle_source(2);
        r.handle_sender_report(2_000_000, 5_000_000, 91_000, 2);
        assert_eq!(
            r.clock().capture_us,
            Some(4_000_000),
            "the next source's, until the first frame's own comes"
        );
        // Source 1's report does: the first frame (ts 1,000) was captured a second before it.
        r.handle_sender_report(2_100_000, 7_000_000, 91_000, 1);
        let c = r.clock();
        assert_eq!(c.capture_us, Some(6_000_000));
        assert_eq!(c.min_offset_us, Some(2_100_000 - 7_000_000));
        // A report whose clock stepped a second ahead of its RTP clock: not believed.
        r.handle_sender_report(3_100_000, 9_000_000, 181_000, 1);
        assert_eq!(r.clock().min_offset_us, Some(-4_900_000));
        // A flood of consistent reports, each a µs "faster": only the first few count.
        for k in 1..=20u32 {
            r.handle_sender_report(
                2_100_000 + u64::from(k) * 1_000_000 - u64::from(k),
                7_000_000 + u64::from(k) * 1_000_000,
                91_000 + k * 90_000,
                1,
            );
        }
        let used = u64::from(REPORTS_USED) - 1;
        assert_eq!(r.clock().min_offset_us, Some(-4_900_000 - used as i64));
        // Reports of many other sources never push out the first frame's.
        for src in 10..30 {
            r.handle_sender_report(4_000_000, 1, 0, src);
        }
        assert_eq!(r.clock().capture_us, Some(6_000_000));
        assert!(r.reports.len() <= MAX_SOURCES);
    }
}
