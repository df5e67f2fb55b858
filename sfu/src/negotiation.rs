//! One participant's SFU-initiated renegotiation, pure: one offer in flight at a time, and tracks
//! that change meanwhile queue exactly one more (made when the answer comes). An offer the edge
//! could not take goes again with backoff ([`crate::outbox::backoff`]) while it is still the
//! offer this session waits on, up to [`OFFER_GIVE_UP_AFTER`]; giving up starts the queued one.
//!
//! Held per session by the [`crate::sfu_core::SfuCore`], which calls [`Negotiation::begin`] when
//! a session's tracks change (an offer is made only while none is being made or awaits its
//! answer), hears from the shell that the offer was made ([`Negotiation::offer_ready`]), taken by
//! the edge ([`Negotiation::delivered`]) or not ([`Negotiation::delivery_failed`], which also sets
//! the resend time: [`Negotiation::poll_timeout`] / [`Negotiation::handle_timeout`]), and answered.

use std::time::{Duration, Instant};

use crate::outbox::backoff;
pub use crate::outbox::OFFER_GIVE_UP_AFTER;

#[derive(Debug, Default)]
pub struct Negotiation {
    /// The shell is making an offer (create, set as local description, gather).
    making: bool,
    /// We sent an offer and wait for its answer.
    awaiting_answer: bool,
    /// Tracks changed meanwhile: offer again once answered.
    again: bool,
    /// Numbers our offers: a resend is only for the newest.
    generation: u64,
    /// The newest offer is not yet taken by the edge: since when, and how often it failed.
    delivery: Option<(Instant, u32)>,
    /// When to send it again after a failed delivery.
    resend_at: Option<Instant>,
}

/// What to do when tracks changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Make an offer now.
    Offer,
    /// One is being made or in flight: another is made after its answer.
    Queued,
}

/// What to do after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// The same offer goes again after this long ([`Negotiation::poll_timeout`] says when).
    Retry(Duration),
    /// Stop; `start_queued`: tracks changed meanwhile, make a new offer now.
    GiveUp { start_queued: bool },
}

impl Negotiation {
    pub fn begin(&mut self) -> Begin {
        if self.awaiting_answer || self.making {
            self.again = true;
            Begin::Queued
        } else {
            self.making = true;
            Begin::Offer
        }
    }

    /// Making the offer failed (nothing was sent): back to stable; returns whether tracks changed
    /// while it was being made (make one for them now).
    pub fn offer_failed(&mut self) -> bool {
        self.making = false;
        self.awaiting_answer = false;
        std::mem::take(&mut self.again)
    }

    /// Our offer is our local description and goes to the edge now; returns its generation.
    pub fn offer_ready(&mut self, now: Instant) -> u64 {
        self.making = false;
        self.awaiting_answer = true;
        self.generation += 1;
        self.delivery = Some((now, 0));
        self.resend_at = None;
        self.generation
    }

    /// The edge took offer `generation`.
    pub fn delivered(&mut self, generation: u64) {
        if generation == self.generation {
            self.delivery = None;
            self.resend_at = None;
        }
    }

    /// When the pending offer is due to be sent again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.resend_at
    }

    /// The generation to send again now, if its resend is due and it is still pending.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<u64> {
        if self.resend_at.is_some_and(|t| t <= now) {
            self.resend_at = None;
            return self
                .still_pending(self.generation)
                .then_some(self.generation);
        }
        None
    }

    /// The edge did not take offer `generation`; `worth_retrying`: the failure may pass (and the
    /// participant is still here).
    pub fn delivery_failed(
        &mut self,
        now: Instant,
        generation: u64,
        worth_retrying: bool,
    ) -> AfterFailure {
        let Some((since, attempts)) = self
            .delivery
            .as_mut()
            .filter(|_| generation == self.generation && self.awaiting_answer)
        else {
            // Answered meanwhile, or a newer offer is on its way: nothing to do for this one.
            return AfterFailure::GiveUp {
                start_queued: false,
            };
        };
        if worth_retrying && now.saturating_duration_since(*since) < OFFER_GIVE_UP_AFTER {
            let delay = backoff(*attempts);
            *attempts += 1;
            self.resend_at = Some(now + delay);
            return AfterFailure::Retry(delay);
        }
        self.delivery = None;
        self.resend_at = None;
        self.awaiting_answer = false;
        AfterFailure::GiveUp {
            start_queued: std::mem::take(&mut self.again),
        }
    }

    /// Is offer `generation` still the one this session waits on, and not yet taken?
    pub fn still_pending(&self, generation: u64) -> bool {
        self.awaiting_answer && generation == self.generation && self.delivery.is_some()
    }

    /// The number of our newest offer (0: none made yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// An answer may be applied now (an offer of ours waits for one).
    pub fn awaiting_answer(&self) -> bool {
        self.awaiting_answer
    }

    /// The answer could not be applied: no offer waits any more; returns whether tracks changed
    /// meanwhile (offer again now).
    pub fn answer_failed(&mut self) -> bool {
        self.answer_applied()
    }

    /// The answer was applied; returns whether tracks changed meanwhile (offer again now).
    pub fn answer_applied(&mut self) -> bool {
        self.awaiting_answer = false;
        self.delivery = None;
        self.resend_at = None;
        std::mem::take(&mut self.again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_offer_in_flight_and_changes_meanwhile_queue_one_more() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        assert!(!n.awaiting_answer());
        assert_eq!(n.begin(), Begin::Offer);
        assert_eq!(n.begin(), Begin::Queued, "one is being made");
        let g = n.offer_ready(t0);
        n.delivered(g);
        assert_eq!(n.begin(), Begin::Queued);
        assert_eq!(n.begin(), Begin::Queued, "still one more, not two");
        assert!(n.awaiting_answer());
        assert!(n.answer_applied(), "offer again now");
        assert!(!n.awaiting_answer());
        assert_eq!(n.begin(), Begin::Offer);
        n.offer_ready(t0);
        assert!(!n.answer_applied(), "nothing changed meanwhile");
        // A bad answer: stable again, and a change made meanwhile is not lost.
        n.offer_ready(t0);
        n.begin();
        assert!(n.answer_failed());
        assert_eq!(n.begin(), Begin::Offer);
    }

    #[test]
    fn a_failed_delivery_is_retried_with_backoff_then_given_up_starting_the_queued_offer() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        n.begin();
        let g = n.offer_ready(t0);
        assert_eq!(
            n.delivery_failed(t0, g, true),
            AfterFailure::Retry(Duration::from_millis(100))
        );
        assert!(n.still_pending(g));
        // Sent again when its time comes, once.
        let at = n.poll_timeout().unwrap();
        assert_eq!(at, t0 + Duration::from_millis(100));
        assert_eq!(n.handle_timeout(at - Duration::from_millis(1)), None);
        assert_eq!(n.handle_timeout(at), Some(g));
        assert_eq!(n.handle_timeout(at), None);
        assert_eq!(
            n.delivery_failed(t0, g, true),
            AfterFailure::Retry(Duration::from_millis(200))
        );
        n.begin(); // tracks changed meanwhile
        let late = t0 + OFFER_GIVE_UP_AFTER;
        assert_eq!(
            n.delivery_failed(late, g, true),
            AfterFailure::GiveUp { start_queued: true }
        );
        assert!(!n.still_pending(g));
        assert_eq!(n.begin(), Begin::Offer, "stable again");
    }

    #[test]
    fn a_refusal_or_a_gone_participant_ends_it_at_once() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        let g = n.offer_ready(t0);
        assert_eq!(
            n.delivery_failed(t0, g, false),
            AfterFailure::GiveUp {
                start_queued: false
            }
        );
        assert!(!n.awaiting_answer());
    }

    #[test]
    fn an_answer_or_a_newer_offer_ends_the_resends_of_an_older_one() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        let g1 = n.offer_ready(t0);
        // The edge did take it, but the post timed out; the answer comes anyway.
        assert!(matches!(
            n.delivery_failed(t0, g1, true),
            AfterFailure::Retry(_)
        ));
        n.answer_applied();
        assert!(!n.still_pending(g1), "answered: not sent again");
        assert_eq!(n.poll_timeout(), None);
        assert_eq!(
            n.delivery_failed(t0, g1, true),
            AfterFailure::GiveUp {
                start_queued: false
            }
        );
        let g2 = n.offer_ready(t0);
        assert!(!n.still_pending(g1), "a newer offer replaced it");
        assert!(n.still_pending(g2));
        n.delivered(g1);
        assert!(
            n.still_pending(g2),
            "a late outcome of the old one changes nothing"
        );
        n.delivered(g2);
        assert!(!n.still_pending(g2));
    }
}
