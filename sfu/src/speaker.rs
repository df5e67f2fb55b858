//! Active-speaker detection (sans-IO) from RFC 6464 audio levels.
//!
//! Each audio packet's level (0 = loudest, 127 = silence, in -dBov) feeds a per-participant
//! loudness smoothed over [`SMOOTHING_MS`]. On [`SpeakerDetector::tick`] the loudest participant above
//! [`SPEECH_THRESHOLD`] becomes the candidate; it replaces the current speaker only after leading
//! continuously for [`SWITCH_AFTER_MS`] and by at least [`SWITCH_MARGIN`] — a cough, a laugh or a
//! short overlap does not flap the speaker view. Silence keeps the last speaker.

use std::collections::HashMap;

pub type Millis = u64;

/// Time constant of the loudness smoothing.
pub const SMOOTHING_MS: f64 = 300.0;
/// Smoothed loudness (0–1) above which someone counts as speaking (≈ −55 dBov sustained).
pub const SPEECH_THRESHOLD: f64 = 0.55;
/// How long a new speaker must lead before the speaker changes.
pub const SWITCH_AFTER_MS: Millis = 600;
/// How much louder (ratio) the candidate must be than a still-speaking current speaker.
pub const SWITCH_MARGIN: f64 = 1.15;

#[derive(Debug, Clone, Copy)]
struct Loudness {
    value: f64,
    at: Millis,
}

impl Loudness {
    /// Decays toward `sample` over the time since the last update.
    fn update(&mut self, sample: f64, now: Millis) {
        let dt = now.saturating_sub(self.at) as f64;
        let keep = (-dt / SMOOTHING_MS).exp();
        self.value = self.value * keep + sample * (1.0 - keep);
        self.at = now;
    }

    fn at(&self, now: Millis) -> f64 {
        // No packets (muted, or DTX silence) decays toward silence.
        self.value * (-(now.saturating_sub(self.at) as f64) / SMOOTHING_MS).exp()
    }
}

#[derive(Debug, Default)]
pub struct SpeakerDetector {
    loudness: HashMap<String, Loudness>,
    current: Option<String>,
    /// The participant leading since when.
    candidate: Option<(String, Millis)>,
}

impl SpeakerDetector {
    pub fn new() -> SpeakerDetector {
        SpeakerDetector::default()
    }

    /// One audio packet's RFC 6464 level (0..=127, lower is louder) from `id`.
    pub fn observe(&mut self, id: &str, level: u8, now: Millis) {
        let sample = (127 - level.min(127)) as f64 / 127.0;
        match self.loudness.get_mut(id) {
            Some(l) => l.update(sample, now),
            None => {
                self.loudness.insert(
                    id.to_string(),
                    Loudness {
                        value: sample * 0.2,
                        at: now,
                    },
                );
            }
        }
    }

    /// A participant left: forget them (and, if they were speaking, let someone else take over).
    pub fn remove(&mut self, id: &str) -> Option<Option<String>> {
        self.loudness.remove(id);
        if self.candidate.as_ref().is_some_and(|(c, _)| c == id) {
            self.candidate = None;
        }
        if self.current.as_deref() == Some(id) {
            self.current = None;
            return Some(None);
        }
        None
    }

    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Re-evaluates at `now`; returns the new speaker when it changes.
    pub fn tick(&mut self, now: Millis) -> Option<String> {
        let best = self
            .loudness
            .iter()
            .map(|(id, l)| (id, l.at(now)))
            .filter(|(_, v)| *v >= SPEECH_THRESHOLD)
            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)));
        let Some((best_id, best_v)) = best.map(|(id, v)| (id.clone(), v)) else {
            self.candidate = None; // silence: keep the last speaker
            return None;
        };
        if self.current.as_deref() == Some(best_id.as_str()) {
            self.candidate = None;
            return None;
        }
        let current_v = self
            .current
            .as_ref()
            .and_then(|c| self.loudness.get(c))
            .map_or(0.0, |l| l.at(now));
        let clearly_louder = current_v < SPEECH_THRESHOLD || best_v >= current_v * SWITCH_MARGIN;
        let since = match &self.candidate {
            Some((c, since)) if *c == best_id => *since,
            _ => {
                self.candidate = Some((best_id.clone(), now));
                now
            }
        };
        if clearly_louder && now.saturating_sub(since) >= SWITCH_AFTER_MS {
            self.current = Some(best_id.clone());
            self.candidate = None;
            return Some(best_id);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEECH: u8 = 30; // −30 dBov
    const SILENCE: u8 = 127;

    /// Feeds 20 ms audio packets from `talkers` (id, level) between `from` and `to`, ticking every
    /// 100 ms; returns the speaker changes with their times.
    fn run(
        d: &mut SpeakerDetector,
        from: Millis,
        to: Millis,
        talkers: &[(&str, u8)],
    ) -> Vec<(Millis, String)> {
        let mut changes = Vec::new();
        let mut t = from;
        while t < to {
            for (id, level) in talkers {
                d.observe(id, *level, t);
            }
            if t.is_multiple_of(100) {
                if let Some(s) = d.tick(t) {
                    changes.push((t, s));
                }
            }
            t += 20;
        }
        changes
    }

    #[test]
    fn a_steady_talker_becomes_the_speaker_within_a_second() {
        let mut d = SpeakerDetector::new();
        let changes = run(&mut d, 0, 2_000, &[("a", SPEECH), ("b", SILENCE)]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1, "a");
        assert!(changes[0].0 <= 1_000, "took {} ms", changes[0].0);
    }

    #[test]
    fn a_cough_does_not_take_the_speaker_view() {
        let mut d = SpeakerDetector::new();
        run(&mut d, 0, 2_000, &[("a", SPEECH), ("b", SILENCE)]);
        // b coughs loudly for 300 ms while a pauses.
        let changes = run(&mut d, 2_000, 2_300, &[("a", SILENCE), ("b", 10)]);
        assert!(changes.is_empty(), "{changes:?}");
        let changes = run(&mut d, 2_300, 4_000, &[("a", SPEECH), ("b", SILENCE)]);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(d.current(), Some("a"));
    }

    #[test]
    fn a_new_talker_takes_over_when_they_keep_talking() {
        let mut d = SpeakerDetector::new();
        run(&mut d, 0, 2_000, &[("a", SPEECH), ("b", SILENCE)]);
        let changes = run(&mut d, 2_000, 5_000, &[("a", SILENCE), ("b", SPEECH)]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, "b");
        assert!(
            changes[0].0 - 2_000 <= 1_500,
            "switch took {} ms",
            changes[0].0 - 2_000
        );
    }

    #[test]
    fn two_people_talking_at_once_do_not_flap() {
        let mut d = SpeakerDetector::new();
        run(&mut d, 0, 2_000, &[("a", SPEECH), ("b", SILENCE)]);
        // Both talk at nearly the same level, alternating the louder one every 200 ms.
        let mut changes = Vec::new();
        for i in 0..20u64 {
            let (la, lb) = if i % 2 == 0 { (30, 28) } else { (28, 30) };
            changes.extend(run(
                &mut d,
                2_000 + i * 200,
                2_200 + i * 200,
                &[("a", la), ("b", lb)],
            ));
        }
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn silence_keeps_the_last_speaker_and_leaving_clears_it() {
        let mut d = SpeakerDetector::new();
        run(&mut d, 0, 2_000, &[("a", SPEECH)]);
        assert!(run(&mut d, 2_000, 10_000, &[("a", SILENCE)]).is_empty());
        assert_eq!(d.current(), Some("a"));
        assert_eq!(d.remove("a"), Some(None));
        assert_eq!(d.current(), None);
        assert_eq!(d.remove("nobody"), None);
    }

    #[test]
    fn muted_participants_decay_to_silence() {
        let mut d = SpeakerDetector::new();
        run(&mut d, 0, 2_000, &[("a", SPEECH)]);
        // a stops sending (muted); b talks: b takes over even though a's last level was loud.
        let changes = run(&mut d, 2_000, 4_000, &[("b", SPEECH)]);
        assert_eq!(changes.last().map(|c| c.1.as_str()), Some("b"));
    }
}
