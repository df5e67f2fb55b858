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
/// on the forwarding path). A new SSRC or a jump of more than [`REBASE_JUMP`] (an encoder
/// restarted) starts the count again from there.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqCount {
    ssrc: u32,
    first: u64,
    highest: Option<u64>,
    received: u64,
    /// (expected, received) of this count at the last [`SeqCount::take`].
    taken: (u64, u64),
    /// Not yet taken of counts before a restart.
    carry: (u64, u64),
}

/// A sequence number this far from the highest one is a new stream, not loss.
pub const REBASE_JUMP: u64 = 3_000;

impl SeqCount {
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) {
        let Some(h) = self.highest.filter(|_| self.ssrc == ssrc) else {
            self.start(ssrc, seq);
            return;
        };
        // The unwrapped number nearest the highest so far (numbers start one cycle up, so one
        // from before a wrap right after the first still has a place below).
        let cycle = h & !0xffff;
        let ext = [cycle - 0x1_0000, cycle, cycle + 0x1_0000]
            .into_iter()
            .map(|c| c + seq as u64)
            .min_by_key(|e| e.abs_diff(h))
            .unwrap_or(h);
        if ext.abs_diff(h) > REBASE_JUMP {
            self.start(ssrc, seq);
            return;
        }
        self.received += 1;
        if ext > h {
            self.highest = Some(ext);
        } else if ext < self.first {
            // Reordered before the first one seen.
            self.first = ext;
        }
    }

    /// Counting starts again at `seq`; what the old count had not given is carried.
    fn start(&mut self, ssrc: u32, seq: u16) {
        let (e, r) = self.since_taken();
        self.carry = (self.carry.0 + e, self.carry.1 + r);
        self.ssrc = ssrc;
        self.first = 0x1_0000 + seq as u64;
        self.highest = Some(self.first);
        self.received = 1;
        self.taken = (0, 0);
    }

    fn since_taken(&self) -> (u64, u64) {
        let expected = self.highest.map_or(0, |h| h - self.first + 1);
        (
            expected.saturating_sub(self.taken.0),
            self.received.saturating_sub(self.taken.1),
        )
    }

    /// Packets expected and received since the last call (received never above expected: a
    /// retransmission counts once).
    pub fn take(&mut self) -> (u64, u64) {
        let (e, r) = self.since_taken();
        let d = (e + self.carry.0, r + self.carry.1);
        self.taken = (
            self.highest.map_or(0, |h| h - self.first + 1),
            self.received,
        );
        self.carry = (0, 0);
        (d.0, d.1.min(d.0))
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
    /// Its media session connected (ICE and DTLS): nothing is judged before.
    connected: bool,
    /// The downlink window last judged (when it closed).
    down_judged: Option<u64>,
}

impl QualityWatch {
    /// What the participant's published streams brought since the last call (see
    /// [`SeqCount::take`]).
    pub fn on_uplink(&mut self, expected: u64, received: u64) {
        self.up.0 += expected;
        self.up.1 += received;
    }

    /// Its media session's ICE state: connected and answering, or not answering.
    pub fn on_link(&mut self, up: bool) {
        self.down = !up;
        self.connected |= up;
    }

    /// The band the room was told last.
    pub fn told(&self) -> Option<Quality> {
        self.told
    }

    /// A judgement (once per [`EVERY_MS`]): `down`, the downlink's last window (when it closed,
    /// its loss) if it closed lately. Judged only on evidence — a new downlink window, or at least
    /// [`MIN_EXPECTED`] uplink packets (fewer wait for the next judgement) — or a session not
    /// answering (lost); nothing before the session connected. Returns a band new to the room
    /// once the last [`HOLD`] judgements agree it is at least that bad (or that good).
    pub fn evaluate(&mut self, down: Option<(u64, f64)>) -> Option<Quality> {
        if !self.connected {
            self.up = (0, 0);
            return None;
        }
        let fresh_down = down.filter(|(at, _)| self.down_judged != Some(*at));
        let (expected, received) = self.up;
        let up_loss = (expected >= MIN_EXPECTED).then(|| {
            self.up = (0, 0);
            1.0 - (received.min(expected) as f64 / expected as f64)
        });
        // Told lost and answering again: that is news enough (it may send and receive nothing
        // to judge by, and must not stay lost).
        let back = !self.down && self.told == Some(Quality::Lost);
        if !self.down && !back && up_loss.is_none() && fresh_down.is_none() {
            return None; // nothing new to judge by
        }
        if let Some((at, _)) = fresh_down {
            self.down_judged = Some(at);
        }
        // Back from lost, the latest window stands in for fresh ones (they come every few
        // seconds on a thin stream; judging the seconds between as clean would flap and never
        // hold a band).
        let down_loss = if back { down } else { fresh_down }.map_or(0.0, |(_, l)| l);
        let stats = LinkStats {
            loss: up_loss.unwrap_or(0.0).max(down_loss),
            silent_ms: if self.down { f64::INFINITY } else { 0.0 },
            ..LinkStats::default()
        };
        let band = score(&stats).1;
        self.seen.push(band);
        if self.seen.len() > HOLD {
            self.seen.remove(0);
        }
        if self.seen.len() < HOLD {
            return None;
        }
        // Hysteresis: a worse band is told once every judgement of the last [`HOLD`] was at
        // least that bad (the best of them), a better one once every one was at least that good
        // (the worst of them). A link at a band's edge — 10 % loss scores 40, the poor/good line,
        // and windows read 8–12 % — then settles on one band instead of never holding any.
        let best = self.seen.iter().copied().max_by_key(|q| q.rank())?;
        let worst = self.seen.iter().copied().min_by_key(|q| q.rank())?;
        let tell = match self.told {
            None => Some(best),
            Some(t) if best.rank() < t.rank() => Some(best),
            Some(t) if worst.rank() > t.rank() => Some(worst),
            Some(_) => None,
        };
        if let Some(q) = tell {
            self.told = Some(q);
        }
        tell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_what_it_expected_and_got_across_the_wrap_and_reordering() {
        let mut c = SeqCount::default();
        for s in [65_530u16, 65_531, 65_533, 65_532, 65_535, 0, 2, 3] {
            c.on_packet(7, s);
        }
        // 65,530 … 3 is 10 numbers; 65,534 and 1 never came.
        assert_eq!(c.take(), (10, 8));
        assert_eq!(c.take(), (0, 0), "each call counts from the last");
        c.on_packet(7, 4);
        c.on_packet(7, 3); // a retransmission: never more received than expected
        assert_eq!(c.take(), (1, 1));
        // One reordered before the first seen widens the span, across a wrap too.
        let mut c = SeqCount::default();
        c.on_packet(7, 2);
        c.on_packet(7, 65_535);
        assert_eq!(c.take(), (4, 2));
    }

    #[test]
    fn a_new_ssrc_or_an_encoder_restart_starts_the_count_again_without_made_up_loss() {
        let mut c = SeqCount::default();
        for s in 100u16..110 {
            c.on_packet(7, s);
        }
        // The layer comes back under another SSRC, numbered anywhere.
        for s in 40_000u16..40_005 {
            c.on_packet(8, s);
        }
        assert_eq!(c.take(), (15, 15));
        // The same SSRC jumping back (a restarted encoder): counted from there, nothing lost.
        for s in 5u16..10 {
            c.on_packet(8, s);
        }
        assert_eq!(c.take(), (5, 5));
    }

    /// `n` judgements with this uplink (expected, received) and a new downlink window each time;
    /// the bands told.
    fn judge(w: &mut QualityWatch, n: usize, up: (u64, u64), down: Option<f64>) -> Vec<Quality> {
        (0..n)
            .filter_map(|_| {
                w.on_uplink(up.0, up.1);
                let at = w.down_judged.map_or(1, |a| a + 1);
                w.evaluate(down.map(|l| (at, l)))
            })
            .collect()
    }

    fn connected() -> QualityWatch {
        let mut w = QualityWatch::default();
        w.on_link(true);
        w
    }

    #[test]
    fn a_band_is_told_once_it_held_three_seconds_and_again_only_when_it_changes() {
        let mut w = connected();
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
    }

    #[test]
    fn only_evidence_is_judged_and_nothing_before_the_session_connects() {
        let mut w = QualityWatch::default();
        // Answered but never connected: no band at all (not "excellent").
        assert_eq!(judge(&mut w, 5, (0, 0), None), vec![]);
        w.on_link(true);
        // Connected, but nothing sent or received yet: still nothing to say.
        assert_eq!(judge(&mut w, 5, (0, 0), None), vec![]);
        // Too few uplink packets wait for more (10 + 10 = 20 make a judgement).
        w.on_uplink(10, 5);
        assert_eq!(w.evaluate(None), None);
        assert_eq!(w.seen, vec![]);
        w.on_uplink(10, 10);
        assert_eq!(w.evaluate(None), None);
        // 15 of 20: 25 % lost, 100 − 150 → 0, poor.
        assert_eq!(w.seen, vec![Quality::Poor]);
    }

    #[test]
    fn a_link_at_the_edge_of_two_bands_settles_on_one() {
        let mut w = connected();
        assert_eq!(
            judge(&mut w, 3, (100, 100), Some(0.0)),
            vec![Quality::Excellent]
        );
        // 10 % loss read as 9 % (good) and 11 % (poor) by turns: good, and it stays there.
        let mut told = Vec::new();
        for k in 0..10 {
            told.extend(judge(
                &mut w,
                1,
                (100, 100),
                Some(if k % 2 == 0 { 0.09 } else { 0.11 }),
            ));
        }
        assert_eq!(told, vec![Quality::Good]);
        // All three poor: poor. Then all three clean: excellent again.
        assert_eq!(
            judge(&mut w, 3, (100, 100), Some(0.11)),
            vec![Quality::Poor]
        );
        assert_eq!(
            judge(&mut w, 3, (100, 100), Some(0.0)),
            vec![Quality::Excellent]
        );
    }

    #[test]
    fn one_downlink_window_is_judged_once() {
        let mut w = connected();
        // A 3-s window's 10 % loss, offered on three judgements: one judgement, nothing told.
        for _ in 0..3 {
            assert_eq!(w.evaluate(Some((5_000, 0.10))), None);
        }
        assert_eq!(w.seen, vec![Quality::Poor]);
    }

    #[test]
    fn a_session_that_stops_answering_is_lost_and_comes_back() {
        let mut w = connected();
        assert_eq!(judge(&mut w, 3, (100, 100), None), vec![Quality::Excellent]);
        w.on_link(false);
        assert_eq!(judge(&mut w, 3, (0, 0), None), vec![Quality::Lost]);
        w.on_link(true);
        assert_eq!(judge(&mut w, 3, (100, 100), None), vec![Quality::Excellent]);
        // Back from lost with nothing to judge by (camera and microphone off, no video to
        // receive): not lost any more.
        w.on_link(false);
        assert_eq!(judge(&mut w, 3, (0, 0), None), vec![Quality::Lost]);
        w.on_link(true);
        assert_eq!(judge(&mut w, 3, (0, 0), None), vec![Quality::Excellent]);
        assert_eq!(judge(&mut w, 3, (0, 0), None), vec![], "then nothing more");
        // Back from lost on a lossy link whose windows close every other second: poor, not
        // lost for ever (nor flapping through "excellent" in between).
        w.on_link(false);
        assert_eq!(judge(&mut w, 3, (0, 0), None), vec![Quality::Lost]);
        w.on_link(true);
        let mut told = Vec::new();
        for second in 0..8u64 {
            let window = (10_000 + second / 2 * 2_000, 0.30);
            told.extend(w.evaluate(Some(window)));
        }
        assert_eq!(told, vec![Quality::Poor]);
    }
}
