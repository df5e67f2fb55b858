//! What the SFU tells the edge about its rooms (dynacast layers, active speaker), pure. Each event
//! has a key — what it is about ([`SfuEvent::key`]: a publisher's layers, a room's speaker) — and a
//! version that rises with every event (µs of the SFU's wall clock, strictly increasing). Per key,
//! only the newest event matters, and events go out in order: one post per key at a time; a newer
//! event waits for the post in flight and supersedes any older one still waiting. Different keys
//! go out side by side (up to [`MAX_IN_FLIGHT`]), so one room whose Durable Object is slow holds
//! up no other room. A post the edge did not take is sent again with backoff, for as long as the
//! room is here ([`Outbox::forget_room`] when it leaves): the newest state must arrive, or the
//! publisher's encoders and the SFU disagree until something else changes. An answer that refuses
//! the event for what it is (a 4xx other than 408/429) is final. The room applies an event only
//! if it is newer than the last it applied, so a repeat changes nothing.
//!
//! The shell (`media.rs`) feeds it: [`Outbox::push`] when something happens,
//! [`Outbox::poll_send`] for the next event to post (repeatedly), [`Outbox::sent`] with each
//! outcome, and sleeps until [`Outbox::poll_timeout`] or the next push or outcome.

use std::time::{Duration, Instant};

use edgemeet_shared::protocol::SfuEvent;

/// The first retry's delay; each further one doubles it, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
pub const MAX_RETRY: Duration = Duration::from_secs(5);
/// Posts in flight at once (each for another key).
pub const MAX_IN_FLIGHT: usize = 4;
/// At most this many keys wait (one per publisher and room; the oldest waiting one goes beyond).
pub const MAX_QUEUED: usize = 4_096;
/// An SFU offer the edge could not take is sent again for this long (see `media.rs`).
pub const OFFER_GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// The delay before retry number `attempt` (0 = the first retry).
pub fn backoff(attempt: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(MAX_RETRY)
}

/// What became of a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The edge answered that it will never take it: not sent again.
    Refused,
    /// Unreachable, timed out, or a 5xx / 408 / 429: sent again later.
    Failed,
}

#[derive(Debug)]
struct Entry {
    key: String,
    event: SfuEvent,
    in_flight: bool,
    /// A newer event for the key, come while `event` was in flight.
    next: Option<SfuEvent>,
    /// The room left while in flight: gone once the post ends.
    forgotten: bool,
    attempts: u32,
    retry_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Outbox {
    /// In arrival order of their keys.
    entries: Vec<Entry>,
    last_version: u64,
    /// Events dropped: refused, or pushed out of a full queue (superseded ones are not counted:
    /// nothing was lost).
    pub dropped: u64,
}

impl Outbox {
    /// Queues `event` with the next version (`unix_us`: the SFU's wall clock now).
    pub fn push(&mut self, unix_us: u64, mut event: SfuEvent) {
        let version = unix_us.max(self.last_version + 1);
        self.last_version = version;
        event.set_version(version);
        let key = event.key();
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            if e.in_flight {
                e.next = Some(event);
                e.forgotten = false;
            } else {
                // New content: goes at once, whatever the older one's backoff was.
                e.event = event;
                e.attempts = 0;
                e.retry_at = None;
            }
            return;
        }
        if self.entries.len() >= MAX_QUEUED {
            if let Some(i) = self.entries.iter().position(|e| !e.in_flight) {
                self.entries.remove(i);
                self.dropped += 1;
            }
        }
        self.entries.push(Entry {
            key,
            event,
            in_flight: false,
            next: None,
            forgotten: false,
            attempts: 0,
            retry_at: None,
        });
    }

    /// The next event to post now, if any: call until `None`.
    pub fn poll_send(&mut self, now: Instant) -> Option<SfuEvent> {
        if self.entries.iter().filter(|e| e.in_flight).count() >= MAX_IN_FLIGHT {
            return None;
        }
        // Layers and speakers first (they change what people see now); connection judgements,
        // which come in bursts (everyone's first one a few seconds after a failover), take one
        // post in flight, at most half of them.
        let ready = |e: &Entry| !e.in_flight && e.retry_at.is_none_or(|t| t <= now);
        let judging = |e: &Entry| matches!(e.event, SfuEvent::Quality { .. });
        let judgements_out = self
            .entries
            .iter()
            .filter(|e| e.in_flight && judging(e))
            .count();
        let other = || self.entries.iter().position(|e| ready(e) && !judging(e));
        let judgement = || {
            (judgements_out < MAX_IN_FLIGHT / 2)
                .then(|| self.entries.iter().position(|e| ready(e) && judging(e)))
                .flatten()
        };
        // With no judgement in flight, one goes into the next free slot first (a steady flow of
        // layers and speakers must not starve them).
        let i = if judgements_out == 0 {
            judgement().or_else(other)
        } else {
            other().or_else(judgement)
        }?;
        let e = &mut self.entries[i];
        e.in_flight = true;
        Some(e.event.clone())
    }

    /// The post of `event` (as [`Outbox::poll_send`] gave it) ended with `outcome`.
    pub fn sent(&mut self, now: Instant, event: &SfuEvent, outcome: Outcome) {
        let key = event.key();
        let Some(i) = self
            .entries
            .iter()
            .position(|e| e.key == key && e.in_flight)
        else {
            return;
        };
        let e = &mut self.entries[i];
        e.in_flight = false;
        if let Some(newer) = e.next.take() {
            // Whatever became of the older one, the newer one goes next, at once.
            e.event = newer;
            e.attempts = 0;
            e.retry_at = None;
            return;
        }
        match outcome {
            _ if e.forgotten => {
                self.entries.remove(i);
            }
            Outcome::Delivered => {
                self.entries.remove(i);
            }
            Outcome::Refused => {
                self.entries.remove(i);
                self.dropped += 1;
            }
            Outcome::Failed => {
                e.retry_at = Some(now + backoff(e.attempts));
                e.attempts += 1;
            }
        }
    }

    /// The room left this SFU: its events are not sent any more.
    pub fn forget_room(&mut self, room: &str) {
        self.entries.retain_mut(|e| {
            if e.event.room() != room {
                return true;
            }
            if e.in_flight {
                e.next = None;
                e.forgotten = true;
                return true;
            }
            false
        });
    }

    /// When to call [`Outbox::poll_send`] again without a push or an outcome: the earliest retry
    /// after `now` (`None`: nothing waits on time). One due already but held back by the posts in
    /// flight goes when one of them ends (an outcome), not by a timer that would fire at once.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| !e.in_flight)
            .filter_map(|e| e.retry_at)
            .filter(|t| *t > now)
            .min()
    }

    /// Keys waiting or in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker(room: &str, who: &str) -> SfuEvent {
        SfuEvent::ActiveSpeaker {
            room: room.into(),
            participant: Some(who.into()),
            scope: 0,
            sfu: Some("s".into()),
            version: None,
        }
    }

    fn layers(room: &str, who: &str, top: bool) -> SfuEvent {
        SfuEvent::PublishLayers {
            room: room.into(),
            participant: who.into(),
            active: vec![true, top],
            sfu: Some("s".into()),
            version: None,
        }
    }

    fn who(e: &SfuEvent) -> String {
        match e {
            SfuEvent::ActiveSpeaker { participant, .. } => participant.clone().unwrap_or_default(),
            SfuEvent::PublishLayers {
                participant,
                active,
                ..
            } => format!("{participant}:{}", active[1]),
            SfuEvent::Quality {
                participant,
                quality,
                ..
            } => format!("{participant}:{quality:?}"),
        }
    }

    /// Posts everything that can go now, each with `outcome`; returns (who, version) in order.
    fn deliver_all(o: &mut Outbox, now: Instant, outcome: Outcome) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Some(e) = o.poll_send(now) {
            out.push((who(&e), e.version().unwrap()));
            o.sent(now, &e, outcome);
        }
        out
    }

    #[test]
    fn events_go_out_in_order_with_strictly_rising_versions() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1_000, speaker("r", "a"));
        o.push(1_000, layers("r", "a", true)); // same clock reading: still a higher version
        o.push(900, layers("r", "b", false)); // the clock went back: still higher
        assert_eq!(
            deliver_all(&mut o, t0, Outcome::Delivered),
            [
                ("a".to_string(), 1_000),
                ("a:true".to_string(), 1_001),
                ("b:false".to_string(), 1_002)
            ]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn one_post_per_key_at_a_time_the_newest_waits_and_goes_next() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1, layers("r", "a", true));
        let first = o.poll_send(t0).unwrap();
        o.push(2, layers("r", "a", false));
        o.push(3, layers("r", "a", true));
        assert_eq!(o.poll_send(t0), None, "the key's post is in flight");
        // However the first one ended, the newest goes next (never the superseded one).
        o.sent(t0, &first, Outcome::Failed);
        let next = o.poll_send(t0).unwrap();
        assert_eq!(
            (who(&next), next.version()),
            ("a:true".to_string(), Some(3))
        );
        o.sent(t0, &next, Outcome::Delivered);
        assert!(o.is_empty());
    }

    #[test]
    fn layers_and_speakers_go_before_a_burst_of_connection_judgements() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let judged = |who: &str| SfuEvent::Quality {
            room: "r".into(),
            participant: who.into(),
            quality: edgemeet_shared::health::Quality::Excellent,
            sfu: Some("s".into()),
            version: None,
        };
        for i in 0..10 {
            o.push(i, judged(&format!("p{i}")));
        }
        o.push(20, layers("r", "a", true));
        o.push(21, speaker("r", "b"));
        // In flight at once: one judgement (its own slot), the layers, the speaker, then a second
        // judgement (half the posts at most).
        let mut out = Vec::new();
        while let Some(e) = o.poll_send(t0) {
            out.push(who(&e));
        }
        assert_eq!(out, ["p0:Excellent", "a:true", "b", "p1:Excellent"]);
        // A steady flow of layer events never starves them: with one judgement out and
        // layers ready, the next free slot after it goes to a judgement again.
        let p0 = judged("p0");
        o.sent(t0, &p0, Outcome::Delivered);
        o.sent(t0, &judged("p1"), Outcome::Delivered);
        o.push(30, layers("r", "c", true));
        let next = o.poll_send(t0).unwrap();
        assert_eq!(who(&next), "p2:Excellent");
    }

    #[test]
    fn different_keys_go_side_by_side_up_to_the_limit() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        for i in 0..6 {
            o.push(i, speaker(&format!("room{i}"), "a"));
        }
        let mut in_flight = Vec::new();
        while let Some(e) = o.poll_send(t0) {
            in_flight.push(e);
        }
        assert_eq!(
            in_flight.len(),
            MAX_IN_FLIGHT,
            "a slow room holds up no other room"
        );
        o.sent(t0, &in_flight[0], Outcome::Delivered);
        assert_eq!(o.poll_send(t0).unwrap().room(), "room4");
    }

    #[test]
    fn a_failed_post_is_retried_with_backoff_for_as_long_as_it_takes() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut o = Outbox::default();
        o.push(1, speaker("r", "a"));
        let first = o.poll_send(t0).unwrap();
        o.sent(t0, &first, Outcome::Failed);
        assert_eq!(o.poll_timeout(t0), Some(ms(100)));
        assert_eq!(o.poll_send(ms(99)), None, "not before the backoff");
        let again = o.poll_send(ms(100)).unwrap();
        assert_eq!(again, first, "the same event, same version");
        o.sent(ms(100), &again, Outcome::Failed);
        assert_eq!(o.poll_timeout(ms(100)), Some(ms(300)), "doubled");
        // Minutes of failures: still there, retried every MAX_RETRY.
        let mut now = ms(300);
        for _ in 0..100 {
            let e = o.poll_send(now).unwrap();
            o.sent(now, &e, Outcome::Failed);
            now = o.poll_timeout(now).unwrap();
        }
        assert!(now.duration_since(t0) > Duration::from_secs(300));
        assert_eq!(
            o.poll_timeout(now),
            None,
            "due now: the next poll_send takes it"
        );
        let e = o.poll_send(now).unwrap();
        o.sent(now, &e, Outcome::Delivered);
        assert!(o.is_empty());
        assert_eq!(o.dropped, 0);
    }

    #[test]
    fn a_newer_event_replacing_one_in_backoff_goes_at_once() {
        // Found in review: the newer event inherited the older one's backoff.
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1, speaker("r", "a"));
        let e = o.poll_send(t0).unwrap();
        o.sent(t0, &e, Outcome::Failed);
        o.push(2, speaker("r", "b"));
        let e = o.poll_send(t0).expect("no backoff for new content");
        assert_eq!(who(&e), "b");
    }

    #[test]
    fn refused_events_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1, speaker("r", "a"));
        assert_eq!(deliver_all(&mut o, t0, Outcome::Refused).len(), 1);
        assert!(o.is_empty());
        assert_eq!(o.dropped, 1);
    }

    #[test]
    fn a_room_that_left_is_forgotten_even_mid_post() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1, speaker("r", "a"));
        o.push(2, layers("q", "b", true));
        let in_flight = o.poll_send(t0).unwrap();
        o.push(3, speaker("r", "c")); // waits behind the post in flight
        o.forget_room("r");
        o.sent(t0, &in_flight, Outcome::Failed);
        assert_eq!(
            deliver_all(&mut o, t0, Outcome::Delivered),
            [("b:true".to_string(), 2)]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        for i in 0..(MAX_QUEUED + 10) {
            o.push(i as u64, layers(&format!("room{i}"), "a", true));
        }
        assert_eq!(o.len(), MAX_QUEUED);
        assert_eq!(o.dropped, 10);
        let sent = deliver_all(&mut o, t0, Outcome::Delivered);
        assert_eq!(sent.len(), MAX_QUEUED, "the newest are kept");
        // Versions are 1, 2, … here (the clock reads 0, 1, …: each is above the last).
        assert_eq!(sent.last().unwrap().1, (MAX_QUEUED + 10) as u64);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), MAX_RETRY);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }
}
