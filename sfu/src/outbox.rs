//! What the SFU tells the edge about its rooms (dynacast layers, active speaker), pure: events go
//! out one at a time in the order they happened, each with a version that rises with every event
//! (µs of the SFU's wall clock, strictly increasing), and one the edge did not take is sent again
//! with backoff. A newer event about the same thing (see [`SfuEvent::key`]) supersedes a queued
//! one, so the queue holds at most one event per publisher and room. The room applies an event
//! only if it is newer than the last it applied, so a repeat changes nothing.
//!
//! The shell (`media.rs`) feeds it: [`Outbox::push`] when something happens, [`Outbox::poll_send`]
//! for the next event to post, [`Outbox::sent`] with the outcome, and sleeps until
//! [`Outbox::poll_timeout`] or the next push.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use edgemeet_shared::protocol::SfuEvent;

/// The first retry's delay; each further one doubles it, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
pub const MAX_RETRY: Duration = Duration::from_secs(5);
/// An event the edge has not taken for this long is dropped (the room has moved on or is gone).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// At most this many events wait (one per publisher and room; more only with that many rooms).
pub const MAX_QUEUED: usize = 4_096;

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
    /// The edge answered that it will never take it (a 4xx other than 408/429): not sent again.
    Refused,
    /// Unreachable, timed out, or a 5xx / 408 / 429: sent again later.
    Failed,
}

#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<SfuEvent>,
    last_version: u64,
    /// The head is being posted.
    in_flight: bool,
    /// Failed tries of the head, when its first try was, and when it may go again.
    attempts: u32,
    first_try: Option<Instant>,
    retry_at: Option<Instant>,
    /// Events dropped (superseded ones are not counted: nothing was lost).
    pub dropped: u64,
}

impl Outbox {
    /// Queues `event` with the next version (`unix_us`: the SFU's wall clock now).
    pub fn push(&mut self, unix_us: u64, mut event: SfuEvent) {
        let version = unix_us.max(self.last_version + 1);
        self.last_version = version;
        event.set_version(version);
        // A queued event about the same thing is superseded (not the one being posted).
        let key = event.key();
        let keep_head = usize::from(self.in_flight);
        let mut i = 0;
        self.queue.retain(|e| {
            i += 1;
            i <= keep_head || e.key() != key
        });
        if self.queue.len() >= MAX_QUEUED {
            // The oldest not being posted goes.
            if self.queue.remove(keep_head).is_some() {
                self.dropped += 1;
                if keep_head == 0 {
                    self.reset_head();
                }
            }
        }
        self.queue.push_back(event);
    }

    /// The next event to post now, if any (then nothing more until [`Outbox::sent`]).
    pub fn poll_send(&mut self, now: Instant) -> Option<SfuEvent> {
        if self.in_flight || self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        let e = self.queue.front()?.clone();
        self.in_flight = true;
        self.first_try.get_or_insert(now);
        Some(e)
    }

    /// The post of the event [`Outbox::poll_send`] gave ended with `outcome`.
    pub fn sent(&mut self, now: Instant, outcome: Outcome) {
        if !self.in_flight {
            return;
        }
        self.in_flight = false;
        let given_up = self
            .first_try
            .is_some_and(|t| now.saturating_duration_since(t) >= GIVE_UP_AFTER);
        match outcome {
            Outcome::Delivered => {
                self.queue.pop_front();
                self.reset_head();
            }
            Outcome::Refused => {
                self.queue.pop_front();
                self.dropped += 1;
                self.reset_head();
            }
            Outcome::Failed if given_up => {
                self.queue.pop_front();
                self.dropped += 1;
                self.reset_head();
            }
            Outcome::Failed => {
                self.retry_at = Some(now + backoff(self.attempts));
                self.attempts += 1;
            }
        }
    }

    /// When to call [`Outbox::poll_send`] again without a push (`None`: only after a push or
    /// [`Outbox::sent`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight || self.queue.is_empty() {
            return None;
        }
        self.retry_at
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn reset_head(&mut self) {
        self.attempts = 0;
        self.first_try = None;
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker(room: &str, who: &str) -> SfuEvent {
        SfuEvent::ActiveSpeaker {
            room: room.into(),
            participant: Some(who.into()),
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
        }
    }

    #[test]
    fn events_go_out_one_at_a_time_in_order_with_rising_versions() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1_000, speaker("r", "a"));
        o.push(1_000, layers("r", "a", true)); // same clock reading: still a higher version
        o.push(900, layers("r", "b", false)); // the clock went back: still higher
        let mut seen = Vec::new();
        while let Some(e) = o.poll_send(t0) {
            assert_eq!(o.poll_send(t0), None, "one in flight at a time");
            seen.push((who(&e), e.version().unwrap()));
            o.sent(t0, Outcome::Delivered);
        }
        assert_eq!(
            seen,
            [
                ("a".to_string(), 1_000),
                ("a:true".to_string(), 1_001),
                ("b:false".to_string(), 1_002)
            ]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn a_failed_post_is_retried_with_backoff_and_later_events_wait_their_turn() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut o = Outbox::default();
        o.push(1, speaker("r", "a"));
        let first = o.poll_send(t0).unwrap();
        o.push(2, layers("r", "a", true));
        o.sent(t0, Outcome::Failed);
        assert_eq!(o.poll_timeout(), Some(ms(100)));
        assert_eq!(o.poll_send(ms(99)), None, "not before the backoff");
        let again = o.poll_send(ms(100)).unwrap();
        assert_eq!(again, first, "the same event, same version");
        o.sent(ms(100), Outcome::Failed);
        assert_eq!(o.poll_timeout(), Some(ms(300)), "doubled");
        assert_eq!(o.poll_send(ms(300)), Some(first));
        o.sent(ms(300), Outcome::Delivered);
        assert_eq!(o.poll_timeout(), None, "the next goes at once");
        assert_eq!(who(&o.poll_send(ms(300)).unwrap()), "a:true");
    }

    #[test]
    fn a_newer_event_about_the_same_thing_supersedes_a_queued_one_not_the_one_in_flight() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1, layers("r", "a", true));
        let in_flight = o.poll_send(t0).unwrap();
        o.push(2, layers("r", "a", false));
        o.push(3, speaker("r", "x"));
        o.push(4, layers("r", "a", true));
        o.push(5, speaker("r", "y"));
        o.push(6, speaker("q", "z")); // another room: its own key
        assert_eq!(
            o.len(),
            4,
            "in flight + newest a-layers + newest r-speaker + q-speaker"
        );
        o.sent(t0, Outcome::Delivered);
        let rest: Vec<_> = std::iter::from_fn(|| {
            let e = o.poll_send(t0)?;
            o.sent(t0, Outcome::Delivered);
            Some((who(&e), e.version().unwrap()))
        })
        .collect();
        assert_eq!(who(&in_flight), "a:true");
        assert_eq!(
            rest,
            [
                ("a:true".to_string(), 4),
                ("y".to_string(), 5),
                ("z".to_string(), 6)
            ]
        );
    }

    #[test]
    fn refused_or_too_old_events_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(1, speaker("r", "a"));
        o.poll_send(t0).unwrap();
        o.sent(t0, Outcome::Refused);
        assert!(o.is_empty());
        assert_eq!(o.dropped, 1);

        o.push(2, speaker("r", "b"));
        let mut now = t0;
        let mut tries = 0;
        while o.poll_send(now).is_some() {
            tries += 1;
            o.sent(now, Outcome::Failed);
            match o.poll_timeout() {
                Some(t) => now = t,
                None => break,
            }
        }
        assert!(o.is_empty(), "given up");
        assert_eq!(o.dropped, 2);
        assert!(
            now.duration_since(t0) >= GIVE_UP_AFTER && tries < 20,
            "gave up after {:?} and {tries} tries",
            now.duration_since(t0)
        );
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
        // The newest are kept.
        let mut last = None;
        while let Some(e) = o.poll_send(t0) {
            last = Some(e.room().to_string());
            o.sent(t0, Outcome::Delivered);
        }
        assert_eq!(last.as_deref(), Some(&*format!("room{}", MAX_QUEUED + 9)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), MAX_RETRY);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }
}
