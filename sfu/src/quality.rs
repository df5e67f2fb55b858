//! What the SFU sees of each participant's connection (issue 17), pure: the loss on its uplink
//! (sequence numbers of what it publishes: expected against received, after the NACK repair the
//! SFU asks for), the loss on its downlink (the larger of what its receiver reports say and what
//! it NACKs: [`crate::downlink`]) and whether its media session still answers ICE. Scored with
//! the page's own model ([`edgemeet_shared::health::score`]) into a band the room learns as an
//! [`edgemeet_shared::protocol::SfuEvent::Quality`] once it held [`HOLD`] evaluations, so
//! everyone's badge shows what the SFU sees of everyone — a page that does not (or cannot) say how
//! it fares is still judged — and the room shows the worse of that and the page's own report.

use edgemeet_shared::health::{score, LinkStats, Quality};

/// The band is judged once a second…
pub const EVERY_MS: u64 = 1_000;
/// …and told once it held this many judgements running (a burst is not a bad connection).
pub const HOLD: usize = 3;
/// A window with fewer packets expected says nothing of the uplink's loss.
pub const MIN_EXPECTED: u64 = 20;
/// A downlink loss figure older than this is not the link's state any more (nothing was sent to
/// judge it by).
pub const DOWN_STALE_MS: u64 = 5_000;

/// Packets of one RTP stream: sequence numbers unwrapped, how many came (no allocation: per packet
/// on the forwarding path).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqCount {
    first: u64,
    highest: Option<u64>,
    received: u64,
    /// (expected, received) at the last [`SeqCount::take`].
    taken: (u64, u64),
}

impl SeqCount {
    pub fn on_packet(&mut self, seq: u16) {
        self.received += 1;
        let Some(h) = self.highest else {
            self.first = seq as u64;
            self.highest = Some(seq as u64);
            return;
        };
        // The unwrapped number nearest the highest so far.
        let cycle = h & !0xffff;
        let candidates = [cycle.wrapping_sub(0x1_0000), cycle, cycle + 0x1_0000];
        let ext = candidates
            .into_iter()
            .map(|c| c.wrapping_add(seq as u64))
            .min_by_key(|e| e.abs_diff(h))
            .unwrap_or(h);
        if ext > h {
            self.highest = Some(ext);
        } else if ext < self.first {
            // Reordered before the first one seen.
            self.first = ext;
        }
    }

    /// Packets expected and received since the last call.
    pub fn take(&mut self) -> (u64, u64) {
        let expected = self.highest.map_or(0, |h| h - self.first + 1);
        let now = (expected, self.received);
        let d = (
            now.0.saturating_sub(self.taken.0),
            now.1.saturating_sub(self.taken.1),
        );
        self.taken = now;
        d
    }
}

/// One participant's band as the SFU judges it.
#[derive(Debug, Clone, Default)]
pub struct QualityWatch {
    /// Uplink packets expected and received in the current second.
    up: (u64, u64),
    /// The last judgements, newest last.
    seen: Vec<Quality>,
    /// The band the room was told.
    told: Option<Quality>,
    /// Its media session stopped answering ICE.
    down: bool,
}

impl QualityWatch {
    /// What the participant's published streams brought since the last call (see
    /// [`SeqCount::take`]).
    pub fn on_uplink(&mut self, expected: u64, received: u64) {
        self.up.0 += expected;
        self.up.1 += received;
    }

    /// Its media session's ICE state: answering or not.
    pub fn on_link(&mut self, up: bool) {
        self.down = !up;
    }

    /// The band the room was told last.
    pub fn told(&self) -> Option<Quality> {
        self.told
    }

    /// A judgement (once per [`EVERY_MS`]): `down_loss`, the downlink's recent loss if there is
    /// one. Returns the band when it is new to the room and held [`HOLD`] judgements.
    pub fn evaluate(&mut self, down_loss: Option<f64>) -> Option<Quality> {
        let (expected, received) = std::mem::take(&mut self.up);
        let up_loss = if expected >= MIN_EXPECTED {
            1.0 - (received.min(expected) as f64 / expected as f64)
        } else {
            0.0
        };
        let stats = LinkStats {
            loss: up_loss.max(down_loss.unwrap_or(0.0)),
            silent_ms: if self.down { f64::INFINITY } else { 0.0 },
            ..LinkStats::default()
        };
        let band = score(&stats).1;
        self.seen.push(band);
        if self.seen.len() > HOLD {
            self.seen.remove(0);
        }
        let held = self.seen.len() == HOLD && self.seen.iter().all(|q| *q == band);
        if held && self.told != Some(band) {
            self.told = Some(band);
            return Some(band);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_what_it_expected_and_got_across_the_wrap_and_reordering() {
        let mut c = SeqCount::default();
        for s in [65_530u16, 65_531, 65_533, 65_532, 65_535, 0, 2, 3] {
            c.on_packet(s);
        }
        // 65,530 … 3 is 10 numbers; 65,534 and 1 never came.
        assert_eq!(c.take(), (10, 8));
        assert_eq!(c.take(), (0, 0), "each call counts from the last");
        c.on_packet(4);
        c.on_packet(3); // a retransmission: counted, never more than expected in a judgement
        assert_eq!(c.take(), (1, 2));
        // One reordered before the first seen widens the span.
        let mut c = SeqCount::default();
        c.on_packet(10);
        c.on_packet(9);
        assert_eq!(c.take(), (2, 2));
    }

    /// `n` judgements with this loss; the bands told.
    fn judge(w: &mut QualityWatch, n: usize, up: (u64, u64), down: Option<f64>) -> Vec<Quality> {
        (0..n)
            .filter_map(|_| {
                w.on_uplink(up.0, up.1);
                w.evaluate(down)
            })
            .collect()
    }

    #[test]
    fn a_band_is_told_once_it_held_three_seconds_and_again_only_when_it_changes() {
        let mut w = QualityWatch::default();
        // Clean: excellent after three judgements, not repeated.
        assert_eq!(judge(&mut w, 2, (100, 100), Some(0.0)), vec![]);
        assert_eq!(
            judge(&mut w, 5, (100, 100), Some(0.0)),
            vec![Quality::Excellent]
        );
        // A one-second burst of loss is not a bad connection.
        assert_eq!(judge(&mut w, 1, (100, 70), Some(0.0)), vec![]);
        assert_eq!(judge(&mut w, 3, (100, 100), Some(0.0)), vec![]);
        // 10 % lost on the way down (before repair): 100 − 600 × 0.1 = 40, poor.
        assert_eq!(
            judge(&mut w, 4, (100, 100), Some(0.10)),
            vec![Quality::Poor]
        );
        assert_eq!(w.told(), Some(Quality::Poor));
        // 5 % on the way up: 70, good.
        assert_eq!(judge(&mut w, 3, (100, 95), None), vec![Quality::Good]);
        // Too few packets to judge the uplink by: its loss is not counted.
        assert_eq!(judge(&mut w, 3, (10, 5), None), vec![Quality::Excellent]);
    }

    #[test]
    fn a_session_that_stops_answering_is_lost_and_comes_back() {
        let mut w = QualityWatch::default();
        assert_eq!(judge(&mut w, 3, (100, 100), None), vec![Quality::Excellent]);
        w.on_link(false);
        assert_eq!(judge(&mut w, 3, (0, 0), None), vec![Quality::Lost]);
        w.on_link(true);
        assert_eq!(judge(&mut w, 3, (100, 100), None), vec![Quality::Excellent]);
    }
}
