//! A subscriber's downlink (sans-IO): how many bits per second can reach it, and how to share them
//! between the videos it watches.
//!
//! webrtc-rs gives no send-side bandwidth estimate for forwarded streams (the SFU forwards without
//! transport-wide sequence numbers, and browsers send REMB only with abs-send-time), but every
//! subscriber says what it lost: in its RTCP receiver reports (loss *after* retransmission: a
//! packet that came back on a NACK counts as received) and in its NACKs (loss *before* repair:
//! what the link really dropped). The loss of a report's interval is the larger of the two, the
//! NACKed share counted once per packet ([`NackCount`]). The estimate follows the loss-based half
//! of Google Congestion Control (draft-ietf-rmcat-gcc §6) with its loss taken before repair:
//! above [`LOSS_HIGH`] *in two reports running* (one lossy report is noise: a burst, a busy moment)
//! it drops to what was actually delivered, scaled by the loss; below 2 % it grows 8 % per report
//! (receiver reports come about once a second); in between it holds. It starts optimistic: a
//! subscriber that never loses anything is never held back.
//!
//! Browsers send a receiver report with every NACK, many a second on a lossy link, so the estimate
//! decides once per [`WINDOW_MS`] from everything reported in it. Two more rules keep it from
//! doing harm on links that are lossy but not congested:
//! - **Loss that does not follow the rate is not congestion.** When, after a decrease, the link
//!   still loses more than [`LOSS_HIGH`] while carrying clearly less than got through before it
//!   (under 90 % of the rate sent then times one minus its loss), the loss is the link's own
//!   (radio, a bad cable) and sending less does not help: the estimate holds instead of sliding
//!   to the lowest layer, and each window still losing at least [`LOSS_LOW`] at that lower rate
//!   confirms it. Above [`LOSS_RANDOM_MAX`] it is congestion anyway; the finding lapses after a
//!   hold without confirmation, or after two clean windows running (one lucky window is noise, as
//!   one lossy one is).
//! - **A window holds enough packets to judge.** It closes after [`WINDOW_MS`] once
//!   [`NACK_SAMPLE`] packets a NACK can name (video) went out in it, or after [`MAX_WINDOW_MS`]:
//!   one NACK among a layer-0 stream's ~18 packets a second is not 5.5 % loss.
//! - **A decrease is judged once it reaches what is sent.** A simulcast switch waits for the new
//!   layer's keyframe, so the window after a decrease may still carry the old rate and its loss;
//!   for up to [`SETTLE_MS`] such windows do not decrease again (above [`LOSS_RANDOM_MAX`] they
//!   do: a hard cap should reach the lowest layer fast).
//! - **An outage is not congestion.** After [`OUTAGE_MS`] without a report, the next window is not
//!   counted: the NACKs for everything the outage swallowed would read as 100 % loss.
//! - **A ceiling after congestion.** After a decrease, growth stops at the lowered estimate (or at
//!   what was delivered then, if more) for [`HOLD_MS`] — doubling, up to [`HOLD_MAX_MS`], when
//!   congestion comes back soon after a hold ran out — so a capped link does not climb back into
//!   the loss every few seconds.
//!
//! GCC decreases above 10 %; here it is 5 %, because what the estimate chooses is a simulcast
//! layer, and on a lossy link big frames are what suffer: a 720p frame of ~8 packets needs a
//! retransmission (one round trip of stall) 1 − 0.95⁸ = 34 % of the time at 5 % loss, a 180p frame
//! of 1–2 packets 5–10 %. Measured here (`playwright/network.test.mjs`): at 10 % loss and 100 ms
//! each way, the 720p layer decoded 8 fps; lower layers keep the picture moving.
//!
//! [`camera_cap`] shares the estimate: screen shares first (a shared screen is what people are
//! reading), then the cameras equally; each camera gets the highest simulcast layer its share
//! affords. Under pressure the cameras drop layers before a screen share is touched.

use std::collections::HashMap;

use edgemeet_shared::media::layer_for_bandwidth;

pub type Millis = u64;

pub const INITIAL_BPS: f64 = 10_000_000.0;
pub const MIN_BPS: f64 = 100_000.0;
pub const MAX_BPS: f64 = 50_000_000.0;
/// Above this fraction lost (before repair) the estimate decreases…
pub const LOSS_HIGH: f64 = 0.05;
/// …below this one it increases.
pub const LOSS_LOW: f64 = 0.02;
/// The estimate decides once per window of this many milliseconds…
pub const WINDOW_MS: Millis = 1_000;
/// …once that many packets a NACK can name went out in it (one NACK among a layer-0 stream's
/// ~18 packets a second would read as 5.5 % loss), or [`MAX_WINDOW_MS`] passed.
pub const NACK_SAMPLE: u64 = 50;
pub const MAX_WINDOW_MS: Millis = 3_000;
/// No report for this long is an outage, not congestion: what the subscriber NACKs in the window
/// after it (everything the outage swallowed) does not count.
pub const OUTAGE_MS: Millis = 2_500;
/// Above this loss a link is congested whatever the last decrease did (random loss on a bad
/// radio link stays below it).
pub const LOSS_RANDOM_MAX: f64 = 0.25;
/// After a decrease, what is sent takes up to this long to follow it (a simulcast switch waits
/// for the new layer's keyframe); loss until then is the old rate's and does not decrease again.
pub const SETTLE_MS: Millis = 2_500;
/// After a decrease, growth stops at what was delivered for this long…
pub const HOLD_MS: Millis = 20_000;
/// …doubling while congestion keeps coming back, up to this.
pub const HOLD_MAX_MS: Millis = 160_000;
/// A window with fewer video packets says nothing of the link's loss for the connection's
/// judgement ([`DownlinkEstimator::recent_window`]).
pub const JUDGE_SAMPLE: u64 = 20;
/// What one screen share is budgeted before cameras get anything.
pub const SCREEN_BPS: f64 = 1_500_000.0;

#[derive(Debug, Clone)]
pub struct DownlinkEstimator {
    estimate: f64,
    /// The previous window was lossy (over [`LOSS_HIGH`]).
    lossy: bool,
    /// The previous window was clean (under [`LOSS_LOW`]).
    clean: bool,
    /// Bytes and packets forwarded to the subscriber and packets NACKed when the current window
    /// began, and when.
    last: Option<(u64, u64, u64, Millis)>,
    /// Receiver reports' loss in the current window: sum of fractions (0–255) and count.
    reported: (u32, u32),
    nacks: NackCount,
    /// The loss and rate sent of the window that last decreased the estimate, and when that was
    /// (or last confirmed as the link's own loss); cleared when the link is clean again.
    lowered: Option<(f64, f64, Millis)>,
    /// Growth stops at this rate until this time.
    ceiling: Option<(f64, Millis)>,
    /// The next hold, and when the last decrease was.
    hold: Millis,
    decreased_at: Option<Millis>,
    /// The previous report, and the end of the grace after an outage.
    last_report: Option<Millis>,
    resume_at: Millis,
    last_loss: f64,
    /// The last window that carried video: when it closed and the share of it NACKed (the
    /// link's own loss before repair; what the publisher lost is never forwarded, so never
    /// NACKed here).
    nacked_window: Option<(Millis, f64)>,
}

/// Packets a subscriber NACKed, each counted once: a browser asks again for a packet whose
/// retransmission is late or lost, so per stream only sequence numbers newer than the newest
/// already counted count.
#[derive(Debug, Clone, Default)]
pub struct NackCount {
    total: u64,
    newest: HashMap<u32, u16>,
}

/// The sequence numbers forwarded to one subscriber stream lately (the last [`FORWARDED_SPAN`])
/// and when: fixed arrays, set on the forwarding path (no allocation), asked when a NACK comes.
#[derive(Debug, Clone)]
pub struct Forwarded {
    bits: [u64; FORWARDED_SPAN as usize / 64],
    /// When each was forwarded (ms, truncated to 32 bits: ages are taken modulo 2^32).
    sent_ms: [u32; FORWARDED_SPAN as usize],
    highest: Option<u16>,
    /// The first packet of the last keyframe forwarded.
    keyframe: Option<u16>,
}

/// How many recent numbers [`Forwarded`] remembers.
pub const FORWARDED_SPAN: u16 = 1024;

/// A NACK for a packet forwarded longer ago than this asks for what cannot help in time: the
/// receiver is holding its later frames back for it (after an outage: for hundreds of packets), so
/// a keyframe is what gets its picture moving again. Ordinary repair of a lossy link (a few round
/// trips) stays well under it.
pub const STALE_NACK_MS: u64 = 1000;

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            bits: [0; FORWARDED_SPAN as usize / 64],
            sent_ms: [0; FORWARDED_SPAN as usize],
            highest: None,
            keyframe: None,
        }
    }
}

impl Forwarded {
    fn set(&mut self, seq: u16, on: bool) {
        let i = (seq % FORWARDED_SPAN) as usize;
        if on {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    /// `seq` was forwarded at `now_ms`.
    pub fn mark(&mut self, seq: u16, now_ms: u64) {
        match self.highest {
            None => self.highest = Some(seq),
            Some(h) => {
                let ahead = seq.wrapping_sub(h);
                if ahead == 0 || ahead >= 0x8000 {
                    // A repeat or a late one: keep the highest. One more than a span back has
                    // no slot any more (it would take a newer number's).
                    if h.wrapping_sub(seq) >= FORWARDED_SPAN {
                        return;
                    }
                } else {
                    // Numbers skipped on the way were not forwarded (yet).
                    if ahead >= FORWARDED_SPAN {
                        self.bits = [0; FORWARDED_SPAN as usize / 64];
                    } else {
                        for k in 1..ahead {
                            self.set(h.wrapping_add(k), false);
                        }
                    }
                    self.highest = Some(seq);
                }
            }
        }
        self.set(seq, true);
        self.sent_ms[(seq % FORWARDED_SPAN) as usize] = now_ms as u32;
    }

    /// Whether `seq` was forwarded (among the last [`FORWARDED_SPAN`] numbers).
    pub fn contains(&self, seq: u16) -> bool {
        let Some(h) = self.highest else { return false };
        if h.wrapping_sub(seq) >= FORWARDED_SPAN {
            return false;
        }
        let i = (seq % FORWARDED_SPAN) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// A keyframe starts at `seq` (as forwarded): it repairs everything before it.
    pub fn keyframe_at(&mut self, seq: u16) {
        self.keyframe = Some(seq);
    }

    /// Is `seq` worth sending again when NACKed? Only if it was forwarded and no keyframe was
    /// forwarded after it: the receiver decodes from that keyframe on, and packets from before it
    /// arriving after it (hundreds, after an outage whose NACK crossed the keyframe on the way)
    /// left Chromium holding every later frame undecoded until its own 3-s timeout.
    pub fn worth_resending(&self, seq: u16) -> bool {
        self.contains(seq) && !self.keyframe.is_some_and(|k| seq_before(seq, k))
    }

    /// Does a NACK for `seqs`, arriving at `now_ms`, ask for a packet the subscriber has been
    /// missing for more than [`STALE_NACK_MS`] (see there: it needs a keyframe)? Missing since the
    /// next packet forwarded after it went out — a receiver notices a loss only then — and not
    /// repaired by a keyframe forwarded since.
    pub fn stale_nack(&self, seqs: impl IntoIterator<Item = u16>, now_ms: u64) -> bool {
        let Some(h) = self.highest else { return false };
        seqs.into_iter().any(|q| {
            if !self.contains(q) || self.keyframe.is_some_and(|k| seq_before(q, k)) {
                return false;
            }
            // The next number forwarded after `q` (none yet: nothing showed the loss).
            let Some(next) = (1..h.wrapping_sub(q).wrapping_add(1))
                .map(|k| q.wrapping_add(k))
                .find(|n| self.contains(*n))
            else {
                return false;
            };
            let since = self.sent_ms[(next % FORWARDED_SPAN) as usize];
            // Signed: a packet marked just after `now_ms` was read is not ~49 days old.
            (now_ms as u32).wrapping_sub(since) as i32 > STALE_NACK_MS as i32
        })
    }
}

/// Is `a` before `b` in RTP sequence-number order?
fn seq_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

/// At most this many streams remembered (a subscriber receives a few dozen at most).
const NACK_STREAMS: usize = 256;

/// The sequence numbers one NACK asks for: (packet id, bitmask of the 16 after it) pairs as in
/// RFC 4585.
pub fn nacked_seqs(pairs: impl IntoIterator<Item = (u16, u16)>) -> impl Iterator<Item = u16> {
    pairs.into_iter().flat_map(|(pid, mask)| {
        std::iter::once(pid).chain(
            (0..16u16)
                .filter(move |b| mask & (1 << b) != 0)
                .map(move |b| pid.wrapping_add(b + 1)),
        )
    })
}

/// How far behind the newest counted number a NACKed one may be and still be a repeat; further
/// back, the stream went long without a NACK (or wrapped) and counting starts afresh.
const NACK_REPEAT_SPAN: u16 = 0x2000;

impl NackCount {
    /// A NACK for stream `ssrc` (see [`nacked_seqs`]). Returns how many packets it newly reports
    /// lost.
    pub fn on_nack(&mut self, ssrc: u32, pairs: impl IntoIterator<Item = (u16, u16)>) -> u64 {
        self.on_seqs(ssrc, nacked_seqs(pairs))
    }

    /// Sequence numbers of stream `ssrc` reported lost. Returns how many are new.
    pub fn on_seqs(&mut self, ssrc: u32, seqs: impl IntoIterator<Item = u16>) -> u64 {
        if self.newest.len() >= NACK_STREAMS && !self.newest.contains_key(&ssrc) {
            self.newest.clear();
        }
        let mut newest = self.newest.get(&ssrc).copied();
        let mut new = 0;
        for seq in seqs {
            let fresh = match newest {
                None => true,
                Some(n) => {
                    let ahead = seq.wrapping_sub(n) as i16;
                    ahead > 0 || n.wrapping_sub(seq) > NACK_REPEAT_SPAN
                }
            };
            if fresh {
                newest = Some(seq);
                new += 1;
            }
        }
        if let Some(n) = newest {
            self.newest.insert(ssrc, n);
        }
        self.total += new;
        new
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Default for DownlinkEstimator {
    fn default() -> Self {
        DownlinkEstimator {
            estimate: INITIAL_BPS,
            lossy: false,
            clean: false,
            last: None,
            reported: (0, 0),
            nacks: NackCount::default(),
            lowered: None,
            ceiling: None,
            hold: HOLD_MS,
            decreased_at: None,
            last_report: None,
            resume_at: 0,
            last_loss: 0.0,
            nacked_window: None,
        }
    }
}

impl DownlinkEstimator {
    pub fn new() -> DownlinkEstimator {
        DownlinkEstimator::default()
    }

    pub fn estimate_bps(&self) -> f64 {
        self.estimate
    }

    /// A NACK from the subscriber (see [`NackCount::on_nack`]).
    pub fn on_nack(&mut self, ssrc: u32, pairs: impl IntoIterator<Item = (u16, u16)>) {
        self.nacks.on_nack(ssrc, pairs);
    }

    /// Sequence numbers the subscriber NACKed that were forwarded to it (numbers the SFU never
    /// got from the publisher are the publisher's loss, not this downlink's).
    pub fn on_nacked_seqs(&mut self, ssrc: u32, seqs: impl IntoIterator<Item = u16>) {
        self.nacks.on_seqs(ssrc, seqs);
    }

    /// The loss of the last window that closed (0–1).
    pub fn last_loss(&self) -> f64 {
        self.last_loss
    }

    /// The last window that carried video, if it closed within `within` ms of `now`: when it
    /// closed and the share of it the subscriber NACKed. Receiver reports are left out: their
    /// loss counts what the publisher lost too (the SFU forwards its gaps), which is not this
    /// link's. An older window says nothing of the link now.
    pub fn recent_window(&self, now: Millis, within: Millis) -> Option<(Millis, f64)> {
        self.nacked_window
            .filter(|(at, _)| now.saturating_sub(*at) <= within)
    }

    /// A receiver report: `fraction_lost` as in RTCP (0–255 = 0–100 %), `bytes_sent` the total
    /// forwarded to this subscriber so far and `packets_sent` the total of those a NACK can name
    /// (video: audio is never NACKed, and counting it would dilute the NACKed share). Returns the estimate (it
    /// moves at most once per [`WINDOW_MS`]).
    pub fn on_report(
        &mut self,
        fraction_lost: u8,
        bytes_sent: u64,
        packets_sent: u64,
        now: Millis,
    ) -> f64 {
        if self.last_report.is_some_and(|r| now >= r + OUTAGE_MS) {
            // Back from an outage: the window after it is not counted.
            self.resume_at = now + WINDOW_MS;
            self.lossy = false;
            self.clean = false;
        }
        self.last_report = Some(now);
        if now < self.resume_at {
            self.last = None;
            self.reported = (0, 0);
            return self.estimate;
        }
        let Some((b, p, n, t)) = self.last else {
            self.last = Some((bytes_sent, packets_sent, self.nacks.total(), now));
            return self.estimate;
        };
        self.reported.0 += fraction_lost as u32;
        self.reported.1 += 1;
        if now < t + WINDOW_MS
            || (packets_sent.saturating_sub(p) < NACK_SAMPLE && now < t + MAX_WINDOW_MS)
        {
            return self.estimate;
        }
        // The window closes: its loss is the larger of the reports' mean (after repair) and the
        // NACKed share of what was forwarded (before repair).
        let reported = self.reported.0 as f64 / 256.0 / self.reported.1.max(1) as f64;
        let sent = packets_sent.saturating_sub(p);
        let nacked = if sent > 0 {
            (self.nacks.total().saturating_sub(n) as f64 / sent as f64).min(1.0)
        } else {
            0.0
        };
        let loss = reported.max(nacked);
        self.last_loss = loss;
        // Enough video to judge the link by (a still screen share's ten packets with one NACK
        // are not 10 % loss).
        if sent >= JUDGE_SAMPLE {
            self.nacked_window = Some((now, nacked));
        }
        let sent_bps = bytes_sent.saturating_sub(b) as f64 * 8_000.0 / (now - t) as f64;
        self.last = Some((bytes_sent, packets_sent, self.nacks.total(), now));
        self.reported = (0, 0);

        let lossy = loss > LOSS_HIGH;
        // Sending well under what got through before the last decrease (which is recent enough,
        // or was confirmed since).
        let followed = self
            .lowered
            .is_some_and(|(l, r, at)| now < at + self.hold && sent_bps <= 0.9 * r * (1.0 - l));
        // The last decrease has not reached what is sent yet (a layer switch waits for a
        // keyframe): the loss of the rate before it says nothing new.
        let settling = loss < LOSS_RANDOM_MAX
            && !followed
            && self
                .decreased_at
                .is_some_and(|at| now < at + SETTLE_MS && self.lowered.is_some());
        if followed && (LOSS_LOW..LOSS_RANDOM_MAX).contains(&loss) {
            // Still losing at the lower rate: the finding that this loss is the link's own
            // stands (renewed by every such window, not only by two above [`LOSS_HIGH`] running:
            // loss hovering around it would let the finding lapse, and the next two lossy
            // windows would slide the estimate down a layer after all).
            if let Some(lowered) = self.lowered.as_mut() {
                lowered.2 = now;
            }
        }
        if lossy && self.lossy {
            // The link's own loss: the last decrease cut the rate and the loss stayed.
            let not_congestion = loss < LOSS_RANDOM_MAX && followed;
            if not_congestion || settling {
                // Hold.
            } else {
                self.estimate = sent_bps.min(self.estimate) * (1.0 - 0.5 * loss);
                // Within one episode (the hold still running) the hold stays; congestion back soon
                // after it ran out doubles it; later, it starts over.
                self.hold = match self.decreased_at {
                    Some(at) if now < at + self.hold => self.hold,
                    Some(at) if now < at + self.hold + HOLD_MS => (self.hold * 2).min(HOLD_MAX_MS),
                    _ => HOLD_MS,
                };
                self.decreased_at = Some(now);
                let delivered = sent_bps * (1.0 - loss);
                self.ceiling = Some((delivered.max(self.estimate), now + self.hold));
                self.lowered = Some((loss, sent_bps, now));
            }
        } else if loss < LOSS_LOW {
            // The link is clean again only after two clean windows running, as it is lossy only
            // after two lossy ones: at 10 % random loss a 640 px layer (~55 packets a second)
            // loses at most one packet in ~3 % of windows, and one lucky window would end the
            // "link's own loss" finding, the next two lossy ones sliding the layer down.
            if self.clean {
                self.lowered = None;
            }
            let grown = self.estimate * 1.08;
            self.estimate = match self.ceiling {
                Some((c, until)) if now < until => grown.min(c.max(self.estimate)),
                _ => grown,
            };
        }
        self.lossy = lossy;
        self.clean = loss < LOSS_LOW;
        self.estimate = self.estimate.clamp(MIN_BPS, MAX_BPS);
        self.estimate
    }
}

/// The highest camera layer each of `cameras` watched videos may use when the subscriber's
/// downlink is `estimate_bps` and it also watches `screens` screen shares.
pub fn camera_cap(estimate_bps: f64, screens: usize, cameras: usize) -> usize {
    let left = (estimate_bps - screens as f64 * SCREEN_BPS).max(0.0);
    let each = left / cameras.max(1) as f64;
    layer_for_bandwidth(each as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loss_keeps_the_estimate_high() {
        let mut d = DownlinkEstimator::new();
        for i in 0..10 {
            d.on_report(0, i * 500_000, i * 400, i * 1_000);
        }
        assert!(d.estimate_bps() >= INITIAL_BPS);
        assert!(d.estimate_bps() <= MAX_BPS);
    }

    #[test]
    fn heavy_loss_drops_to_what_was_delivered_and_recovers_slowly() {
        let mut d = DownlinkEstimator::new();
        let start = d.on_report(0, 0, 0, 0);
        // One lossy report is not enough…
        assert_eq!(d.on_report(64, 250_000, 200, 1_000), start);
        // …two running are: 2 Mbit/s forwarded, 25 % lost.
        let e = d.on_report(64, 500_000, 400, 2_000);
        assert!((e - 2_000_000.0 * (1.0 - 0.5 * 0.25)).abs() < 1.0, "{e}");
        // Moderate loss holds it.
        assert_eq!(d.on_report(10, 750_000, 600, 3_000), e);
        // Clean reports: held at the lowered estimate (above the 1.5 M delivered) for the hold…
        let mut t = 3_000;
        let mut bytes = 750_000;
        while t + 1_000 < 2_000 + HOLD_MS {
            t += 1_000;
            bytes += 250_000;
            assert_eq!(d.on_report(0, bytes, bytes / 1_000, t), e, "at {t} ms");
        }
        // …then grown 8 % a report.
        let up = d.on_report(0, bytes + 250_000, bytes / 1_000 + 250, 2_000 + HOLD_MS);
        assert!((up - e * 1.08).abs() < 1.0, "{up}");
    }

    #[test]
    fn an_outage_is_not_taken_for_congestion() {
        let mut d = DownlinkEstimator::new();
        d.on_report(0, 0, 0, 0);
        let e = d.on_report(0, 250_000, 200, 1_000);
        // 3 s without a report; then a report saying most was lost and NACKs for the 450 packets
        // the outage swallowed, a few more in the next half second; then clean reports.
        for (t, lost, nacks) in [
            (4_000u64, 200u8, 450u16),
            (4_300, 0, 40),
            (4_900, 0, 0),
            (6_000, 0, 0),
            (7_000, 0, 0),
        ] {
            d.on_nack(1, (0..nacks).map(|s| (t as u16 + s, 0)));
            let now = d.on_report(lost, 250_000 + t * 250, 200 + t / 5, t);
            assert!(now >= e, "{now} at {t} ms");
        }
    }

    #[test]
    fn forwarded_numbers_are_remembered_and_gaps_are_not() {
        let mut f = Forwarded::default();
        for s in [65_530u16, 65_531, 65_533, 2, 3] {
            f.mark(s, 0);
        }
        // The gaps (the publisher's own loss) across the wrap, and what was never there.
        for s in [65_532u16, 65_534, 65_535, 0, 1, 4, 5] {
            assert!(!f.contains(s), "{s}");
        }
        for s in [65_530u16, 65_531, 65_533, 2, 3] {
            assert!(f.contains(s), "{s}");
        }
        // A late packet fills its gap.
        f.mark(0, 0);
        assert!(f.contains(0));
        // A span later, the old numbers are forgotten, even where a slot is reused.
        f.mark(3 + FORWARDED_SPAN, 0);
        assert!(!f.contains(3));
        assert!(f.contains(3 + FORWARDED_SPAN));
        // A jump of more than a span forgets everything.
        f.mark(3 + 4 * FORWARDED_SPAN, 0);
        assert!(!f.contains(3 + FORWARDED_SPAN));
    }

    #[test]
    fn a_nack_for_a_packet_missing_over_a_second_wants_a_keyframe() {
        let mut f = Forwarded::default();
        // 3 s of packets, 100 per second, then the link comes back (a 3 s outage) at 4,000 ms.
        for i in 0..300u16 {
            f.mark(500 + i, 1_000 + i as u64 * 10);
        }
        // Ordinary repair: the last 200 ms asked for again.
        assert!(!f.stale_nack(780..799, 4_000));
        assert!(!f.stale_nack([798], 3_990 + STALE_NACK_MS));
        assert!(f.stale_nack([798], 3_991 + STALE_NACK_MS));
        // The newest packet: no later one has shown the receiver it is missing.
        assert!(!f.stale_nack([799], 60_000));
        // Everything since the outage began: the oldest went missing 3 s ago.
        assert!(f.stale_nack(500..800, 4_000));
        assert!(f.stale_nack([600], 4_000));
        // Numbers never forwarded (the publisher's own loss) or long forgotten do not count.
        assert!(!f.stale_nack([400, 900], 60_000));
        // A keyframe forwarded since repairs everything before it: asking again is no news.
        f.keyframe_at(700);
        assert!(!f.stale_nack(500..700, 4_000));
        assert!(
            f.stale_nack([700], 4_100),
            "the keyframe itself, missing 1.09 s"
        );
        // A packet marked just after "now" was read is not stale (no wrap to a huge age).
        let mut g = Forwarded::default();
        g.mark(7, 5_000);
        g.mark(8, 5_001);
        assert!(!g.stale_nack([7], 5_000));
        // Ages are taken modulo 2^32 ms: a stream running past 49 days still works.
        let mut g = Forwarded::default();
        g.mark(7, u32::MAX as u64 - 100);
        g.mark(8, u32::MAX as u64 - 100);
        assert!(!g.stale_nack([7], u32::MAX as u64 + 200));
        assert!(g.stale_nack([7], u32::MAX as u64 + 2_000));
    }

    #[test]
    fn what_a_keyframe_forwarded_since_repaired_is_not_sent_again() {
        // A 3-s outage: packets 100..400 went into the void; the link returns, a keyframe asked
        // for by the receiver's own PLI is forwarded from 400 on, and only then does its NACK
        // for the outage arrive (the two crossed on the way).
        let mut f = Forwarded::default();
        for i in 0..420u16 {
            f.mark(i, i as u64 * 10);
        }
        assert!(
            (100..420).all(|q| f.worth_resending(q)),
            "no keyframe yet: all worth it"
        );
        f.keyframe_at(400);
        assert!(
            (100..400).all(|q| !f.worth_resending(q)),
            "before the keyframe: none"
        );
        assert!(
            (400..420).all(|q| f.worth_resending(q)),
            "the keyframe and after: all"
        );
        // Never forwarded (the publisher's own loss) or not yet: nothing to send.
        assert!(!f.worth_resending(420));
        let mut g = Forwarded::default();
        g.mark(65_530, 0);
        g.mark(2, 10);
        g.keyframe_at(65_534);
        assert!(
            !g.worth_resending(65_530),
            "before a keyframe across the wrap"
        );
        assert!(g.worth_resending(2), "after it, past the wrap");
    }

    #[test]
    fn a_late_packet_a_span_back_takes_no_newer_numbers_slot() {
        let mut f = Forwarded::default();
        f.mark(5_000, 100);
        f.mark(5_001, 100);
        // 5,000 − 1,024 shares 5,000's slot: it is too old to be remembered.
        f.mark(5_000 - FORWARDED_SPAN, 9_000);
        assert!(f.contains(5_000));
        assert!(!f.contains(5_000 - FORWARDED_SPAN));
        assert!(!f.stale_nack([5_000], 1_000));
    }

    #[test]
    fn a_nack_long_after_the_last_one_still_counts() {
        let mut n = NackCount::default();
        assert_eq!(n.on_nack(1, [(100, 0)]), 1);
        // 40,000 packets later (wrapped past the half-way mark): a new loss, not a repeat.
        assert_eq!(n.on_nack(1, [(100u16.wrapping_add(40_000), 0)]), 1);
        assert_eq!(n.on_nack(1, [(100u16.wrapping_add(40_001), 0)]), 1);
    }

    #[test]
    fn the_hold_doubles_only_when_congestion_comes_back_after_it() {
        let mut d = DownlinkEstimator::new();
        let (mut t, mut b, mut p) = (0u64, 0u64, 0u64);
        d.on_report(0, 0, 0, 0);
        let mut win = |d: &mut DownlinkEstimator, fraction: u8| {
            t += 1_000;
            b += 250_000;
            p += 250;
            d.on_report(fraction, b, p, t)
        };
        // Two decreases in one episode: the hold stays 20 s.
        for _ in 0..4 {
            win(&mut d, 128);
        }
        assert_eq!(d.hold, HOLD_MS);
        // Clean until the hold ran out, then congested again: 40 s.
        for _ in 0..(HOLD_MS / 1_000) {
            win(&mut d, 0);
        }
        win(&mut d, 128);
        win(&mut d, 128);
        assert_eq!(d.hold, 2 * HOLD_MS);
    }

    #[test]
    fn reports_within_a_window_decide_once() {
        let mut d = DownlinkEstimator::new();
        d.on_report(0, 0, 0, 0);
        // Twenty lossy reports in 400 ms (a browser reports with every NACK): still one window.
        for i in 1..=20u64 {
            assert_eq!(d.on_report(64, i * 10_000, i * 10, i * 20), INITIAL_BPS);
        }
        // Two windows running, lossy: now it moves.
        assert_eq!(d.on_report(64, 250_000, 250, 1_000), INITIAL_BPS);
        assert!(d.on_report(64, 500_000, 500, 2_000) < INITIAL_BPS);
    }

    /// Feeds one window of `secs` at `bps` sent with `loss` (a fraction, as NACKs) and a receiver
    /// report; returns the estimate.
    fn window(
        d: &mut DownlinkEstimator,
        t: &mut u64,
        bytes: &mut u64,
        packets: &mut u64,
        seq: &mut u16,
        bps: f64,
        loss: f64,
    ) -> f64 {
        let n = (bps / 8.0 / 1_000.0) as u64; // 1,000-byte packets a second
        *bytes += n * 1_000;
        *packets += n;
        for _ in 0..((n as f64) * loss).round() as u64 {
            *seq = seq.wrapping_add(1);
            d.on_nack(1, [(*seq, 0)]);
        }
        *t += 1_000;
        d.on_report(0, *bytes, *packets, *t)
    }

    #[test]
    fn loss_that_does_not_follow_the_rate_stops_the_slide() {
        // 10 % random loss at any rate: one decrease (to a layer below the top), then it holds.
        let (mut d, mut t, mut b, mut p, mut s) = (DownlinkEstimator::new(), 0, 0, 0, 0u16);
        d.on_report(0, 0, 0, 0);
        let mut rate = 1_700_000.0;
        let mut seen = vec![];
        for _ in 0..30 {
            let e = window(&mut d, &mut t, &mut b, &mut p, &mut s, rate, 0.10);
            // The sender follows the estimate: the layer that fits sends its bitrate.
            rate = edgemeet_shared::media::CAMERA_SIMULCAST[layer_for_bandwidth(e as u64)]
                .max_bitrate_bps as f64;
            seen.push(layer_for_bandwidth(e as u64));
        }
        assert_eq!(seen.first(), Some(&2), "{seen:?}");
        assert_eq!(
            seen.last(),
            Some(&1),
            "one layer down and held there: {seen:?}"
        );
        assert!(!seen.contains(&0), "it slid to the lowest layer: {seen:?}");
    }

    #[test]
    fn random_loss_hovering_around_the_threshold_does_not_slide_later() {
        // What a window reads hovering around 5 %, rarely above it two windows running (measured
        // when audio, never NACKed, was still counted in what was sent: a lossy viewer moved
        // from 640 to 320 px some 20 s after the first decrease, when the finding had lapsed).
        let (mut d, mut t, mut b, mut p, mut s) = (DownlinkEstimator::new(), 0, 0, 0, 0u16);
        d.on_report(0, 0, 0, 0);
        window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_100_000.0, 0.06);
        let e = window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_100_000.0, 0.06);
        assert!(e < 1_100_000.0, "{e}");
        assert_eq!(layer_for_bandwidth(e as u64), 1);
        for i in 0..40 {
            let loss = if i % 2 == 0 { 0.04 } else { 0.06 };
            let now = window(&mut d, &mut t, &mut b, &mut p, &mut s, 550_000.0, loss);
            assert_eq!(now, e, "window {i}");
        }
        // Two lossy windows running, long after the decrease: still the link's own loss.
        for _ in 0..2 {
            let now = window(&mut d, &mut t, &mut b, &mut p, &mut s, 550_000.0, 0.07);
            assert_eq!(now, e, "slid a layer down after {} s", t / 1_000);
        }
    }

    #[test]
    fn one_lucky_window_does_not_end_the_links_own_loss() {
        // 10 % random loss on a 640 px layer: now and then a window loses at most one packet.
        let (mut d, mut t, mut b, mut p, mut s) = (DownlinkEstimator::new(), 0, 0, 0, 0u16);
        d.on_report(0, 0, 0, 0);
        window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_100_000.0, 0.10);
        let e = window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_100_000.0, 0.10);
        assert_eq!(layer_for_bandwidth(e as u64), 1);
        for _ in 0..5 {
            assert_eq!(
                window(&mut d, &mut t, &mut b, &mut p, &mut s, 550_000.0, 0.10),
                e
            );
        }
        // A lucky window (1 of 68 lost), then the usual loss again.
        let lucky = window(&mut d, &mut t, &mut b, &mut p, &mut s, 550_000.0, 0.015);
        assert!(lucky >= e);
        for i in 0..10 {
            let now = window(&mut d, &mut t, &mut b, &mut p, &mut s, 550_000.0, 0.10);
            assert!(
                layer_for_bandwidth(now as u64) >= 1,
                "window {i} after the lucky one slid to the lowest layer ({now})"
            );
        }
    }

    #[test]
    fn a_sparse_streams_occasional_nack_is_not_congestion() {
        // One layer-0 camera (~18 packets a second) at ~1 % random loss: two NACKs in two
        // seconds running, then none for eight. Per one-second window that read as 5.5 % twice.
        let (mut d, mut t, mut b, mut p, mut s) = (DownlinkEstimator::new(), 0, 0, 0, 0u16);
        d.on_report(0, 0, 0, 0);
        for second in 0..60 {
            let loss = if second % 10 < 2 { 1.0 / 18.0 } else { 0.0 };
            let now = window(&mut d, &mut t, &mut b, &mut p, &mut s, 150_000.0, loss);
            assert!(now >= INITIAL_BPS, "decreased at second {second}: {now}");
        }
    }

    #[test]
    fn a_decrease_is_judged_once_what_is_sent_follows_it() {
        // The layer switch takes a window (keyframe): the window after the decrease still carries
        // the old rate and its loss, and must not count as loss at the lowered estimate.
        let (mut d, mut t, mut b, mut p, mut s) = (DownlinkEstimator::new(), 0, 0, 0, 0u16);
        d.on_report(0, 0, 0, 0);
        window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_200_000.0, 0.07);
        let e = window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_200_000.0, 0.07);
        assert!(e < 1_200_000.0, "{e}");
        let lagging = window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_200_000.0, 0.07);
        assert_eq!(lagging, e, "decreased again before the switch took effect");
        for _ in 0..10 {
            let now = window(&mut d, &mut t, &mut b, &mut p, &mut s, 550_000.0, 0.07);
            assert_eq!(now, e);
        }
        // Still at the old rate after the settling time: that is congestion again.
        let (mut d, mut t, mut b, mut p, mut s) = (DownlinkEstimator::new(), 0, 0, 0, 0u16);
        d.on_report(0, 0, 0, 0);
        let mut last = INITIAL_BPS;
        let mut decreases = 0;
        for _ in 0..8 {
            let now = window(&mut d, &mut t, &mut b, &mut p, &mut s, 1_200_000.0, 0.07);
            decreases += usize::from(now < last);
            last = now;
        }
        assert!(decreases >= 2, "{decreases} decreases");
    }

    #[test]
    fn a_capped_link_is_not_probed_again_until_the_hold_is_over() {
        // 300 kbit/s get through, whatever is sent.
        let cap = 300_000.0;
        let (mut d, mut t, mut b, mut p, mut s) = (DownlinkEstimator::new(), 0, 0, 0, 0u16);
        d.on_report(0, 0, 0, 0);
        let mut rate: f64 = 1_700_000.0;
        let mut layers = vec![];
        for _ in 0..60 {
            let loss = (1.0 - cap / rate).max(0.0);
            let e = window(&mut d, &mut t, &mut b, &mut p, &mut s, rate, loss);
            let layer = layer_for_bandwidth(e as u64);
            rate = edgemeet_shared::media::CAMERA_SIMULCAST[layer].max_bitrate_bps as f64;
            layers.push(layer);
        }
        // Down to the lowest layer within a few seconds…
        let first_low = layers
            .iter()
            .position(|l| *l == 0)
            .expect("never reached the lowest layer");
        assert!(first_low <= 6, "{layers:?}");
        // …and it stays there through the hold (20 s), and after a failed probe for longer still.
        assert!(
            layers[first_low..first_low + 18].iter().all(|l| *l == 0),
            "{layers:?}"
        );
        let ups = layers.windows(2).filter(|w| w[1] > w[0]).count();
        assert!(ups <= 2, "probed {ups} times in a minute: {layers:?}");
    }

    #[test]
    fn the_estimate_stays_within_bounds() {
        let mut d = DownlinkEstimator::new();
        let mut bytes = 0;
        for i in 0..50 {
            bytes += 1_000;
            d.on_report(255, bytes, i, i * 1_000);
        }
        assert_eq!(d.estimate_bps(), MIN_BPS);
    }

    #[test]
    fn loss_before_repair_counts_when_retransmissions_hide_it() {
        // 10 % of 200 packets a second NACKed, but the receiver reports (after retransmission)
        // say 1 %: the link is lossy all the same.
        let mut d = DownlinkEstimator::new();
        let start = d.on_report(0, 0, 0, 0);
        let mut seq = 0u16;
        let mut report = |d: &mut DownlinkEstimator, i: u64| {
            for _ in 0..20 {
                seq = seq.wrapping_add(10);
                d.on_nack(7, [(seq, 0)]);
                // The same packet asked for again (its retransmission was late): counted once.
                d.on_nack(7, [(seq, 0)]);
            }
            d.on_report(3, i * 250_000, i * 200, i * 1_000)
        };
        assert_eq!(report(&mut d, 1), start, "one lossy report is not enough");
        let e = report(&mut d, 2);
        assert!((e - 2_000_000.0 * (1.0 - 0.5 * 0.10)).abs() < 1.0, "{e}");
        // Without NACKs, 4 % reported: held.
        assert_eq!(d.on_report(10, 750_000, 600, 3_000), e);
    }

    #[test]
    fn a_nack_counts_each_lost_packet_once() {
        let mut n = NackCount::default();
        // 100 and the 1st, 3rd and 16th after it.
        assert_eq!(n.on_nack(1, [(100, 0b1000_0000_0000_0101)]), 4);
        assert_eq!(n.on_nack(1, [(100, 0b101)]), 0, "asked again");
        assert_eq!(n.on_nack(1, [(110, 0), (117, 0)]), 1, "only 117 is new");
        // Another stream counts on its own; sequence numbers wrap.
        assert_eq!(n.on_nack(2, [(65_535, 0b1)]), 2);
        assert_eq!(n.on_nack(2, [(1, 0)]), 1);
        assert_eq!(n.total(), 8);
    }

    #[test]
    fn cameras_give_way_before_a_shared_screen() {
        // Plenty: every camera at full resolution.
        assert_eq!(camera_cap(10_000_000.0, 1, 3), 2);
        // 3 Mbit/s with a screen and three cameras: the screen keeps its 1.5 M, the cameras share
        // the rest (500 k each: the middle layer does not fit 85 % of it).
        assert_eq!(camera_cap(3_000_000.0, 1, 3), 0);
        // The same without the screen: the cameras get 1 M each, enough for the middle layer.
        assert_eq!(camera_cap(3_000_000.0, 0, 3), 1);
        // Less than the screen needs: cameras at the lowest layer, never nothing.
        assert_eq!(camera_cap(1_000_000.0, 1, 2), 0);
    }
}
