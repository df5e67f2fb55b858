//! One participant's SFU-initiated renegotiation, pure: one offer in flight at a time, and tracks
//! that change meanwhile queue exactly one more (made when the answer comes). An offer the edge
//! could not take goes again with backoff ([`crate::outbox::backoff`]) while it is still the
//! offer this session waits on, up to [`OFFER_GIVE_UP_AFTER`]; giving up starts the queued one.
//! The edge may have taken it after all (its reply was what got lost): while that offer is still
//! our local description (no newer one made, no answer applied), the page's answer to it is
//! applied ([`Negotiation::answers_given_up`]) rather than ignored, which would leave the session
//! in have-local-offer and the tracks it added unforwarded until some other change.
//!
//! Held per session by the [`crate::sfu_core::SfuCore`], which calls [`Negotiation::begin`] when
//! a session's tracks change (an offer is made only while none is being made or awaits its
//! answer), hears from the shell that the offer was made ([`Negotiation::offer_ready`]), taken by
//! the edge ([`Negotiation::delivered`]) or not ([`Negotiation::delivery_failed`], which also sets
//! the resend time: [`Negotiation::poll_timeout`] / [`Negotiation::handle_timeout`]), and answered.
//!
//! An offer the edge took but nobody answered (the page never had it, its answer was lost on the
//! way, or applying it failed there) goes again, the same offer under the same generation, after
//! [`ANSWER_WAIT`], then after twice as long each time up to [`ANSWER_WAIT_MAX`], at most
//! [`ANSWER_COPIES`] times: whichever copy the page answers fits our local description (an answer
//! names its offer's generation: a second answer to it is ignored, never applied to a later
//! offer), and the room's Durable Object, which holds an offer for a member who is reconnecting,
//! just holds the same one again. A copy the edge cannot take never ends the wait (the page may
//! have the offer already): the next copy is timed as if it had been taken.

use std::time::{Duration, Instant};

use crate::outbox::backoff;
pub use crate::outbox::OFFER_GIVE_UP_AFTER;

/// How long an offer the edge took waits for its answer before it is sent again (an answer
/// takes well under a second: the page sets two descriptions).
pub const ANSWER_WAIT: Duration = Duration::from_secs(8);
/// The longest wait between two copies of an offer nobody answers.
pub const ANSWER_WAIT_MAX: Duration = Duration::from_secs(60);
/// Most copies of one offer (8 + 16 + 32 + 60 + 60 s: about three minutes); then the session
/// waits as it did before any copy (a page that cannot apply the offer would only fail again).
pub const ANSWER_COPIES: u32 = 5;

/// Why an offer goes again ([`Negotiation::handle_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// The edge did not take it: offer `0` again.
    Delivery(u64),
    /// The edge took it and no answer came: copy number `copy` of offer `generation`.
    Unanswered { generation: u64, copy: u32 },
}

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
    /// Taken by the edge, not answered: when to send it again.
    answer_due: Option<Instant>,
    /// How often it was sent again for want of an answer.
    unanswered: u32,
    /// The offer whose delivery was given up, while it is still our local description.
    given_up: Option<u64>,
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
    /// A copy the edge could not take: the offer itself was taken before, so its answer is
    /// still waited for; the next copy is timed ([`Negotiation::poll_timeout`]).
    StillAwaited,
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

    /// Our offer, number `generation` (the caller's numbering: [`crate::sfu_core::SfuCore::offer_made`]),
    /// is our local description and goes to the edge now.
    pub fn offer_ready(&mut self, now: Instant, generation: u64) {
        self.making = false;
        self.awaiting_answer = true;
        self.generation = generation;
        self.delivery = Some((now, 0));
        self.resend_at = None;
        self.answer_due = None;
        self.unanswered = 0;
        self.given_up = None;
    }

    /// The edge took offer `generation`: its answer is awaited until [`Self::poll_timeout`].
    pub fn delivered(&mut self, now: Instant, generation: u64) {
        if generation == self.generation && self.delivery.is_some() {
            self.delivery = None;
            self.resend_at = None;
            self.arm_answer_wait(now);
        }
    }

    /// Times the next copy of the offer waited on, unless it had all its copies.
    fn arm_answer_wait(&mut self, now: Instant) {
        if self.awaiting_answer && self.unanswered < ANSWER_COPIES {
            let wait = ANSWER_WAIT
                .saturating_mul(1u32 << self.unanswered.min(16))
                .min(ANSWER_WAIT_MAX);
            self.answer_due = Some(now + wait);
        }
    }

    /// When the pending offer is due to be sent again (its delivery failed, or it waits too
    /// long for an answer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.resend_at.into_iter().chain(self.answer_due).min()
    }

    /// The offer to send again now, if a resend is due and it is still the offer waited on:
    /// after a failed delivery, or taken by the edge and not answered in time (then it is on
    /// its way again: [`Self::delivered`] or [`Self::delivery_failed`] follow).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Resend> {
        if self.resend_at.is_some_and(|t| t <= now) {
            self.resend_at = None;
            return self
                .still_pending(self.generation)
                .then_some(Resend::Delivery(self.generation));
        }
        if self.answer_due.is_some_and(|t| t <= now) {
            self.answer_due = None;
            if self.awaiting_answer && self.delivery.is_none() {
                self.unanswered += 1;
                self.delivery = Some((now, 0));
                return Some(Resend::Unanswered {
                    generation: self.generation,
                    copy: self.unanswered,
                });
            }
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
        if self.unanswered > 0 {
            // A copy: the edge took the offer before, the page may have it and answer yet.
            self.delivery = None;
            self.resend_at = None;
            self.arm_answer_wait(now);
            return AfterFailure::StillAwaited;
        }
        self.delivery = None;
        self.resend_at = None;
        self.answer_due = None;
        self.awaiting_answer = false;
        self.given_up = Some(self.generation);
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

    /// Whether an answer numbered `generation` (0: not numbered) answers the offer whose
    /// delivery was given up, which is still our local description: the edge took it after all
    /// and the page answered, so it is applied. No offer is awaited then.
    pub fn answers_given_up(&self, generation: u64) -> bool {
        !self.awaiting_answer
            && self
                .given_up
                .is_some_and(|g| generation == 0 || generation == g)
    }

    /// The answer could not be applied: no offer waits any more; returns whether tracks changed
    /// meanwhile (offer again now).
    pub fn answer_failed(&mut self) -> bool {
        self.answer_applied()
    }

    /// The answer was applied; returns whether tracks changed meanwhile (offer again now).
    pub fn answer_applied(&mut self) -> bool {
        self.awaiting_answer = false;
        self.given_up = None;
        self.delivery = None;
        self.resend_at = None;
        self.answer_due = None;
        std::mem::take(&mut self.again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes the next offer, numbered one above the last (the core numbers them by its clock).
    fn ready(n: &mut Negotiation, now: Instant) -> u64 {
        let g = n.generation() + 1;
        n.offer_ready(now, g);
        g
    }

    #[test]
    fn one_offer_in_flight_and_changes_meanwhile_queue_one_more() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        assert!(!n.awaiting_answer());
        assert_eq!(n.begin(), Begin::Offer);
        assert_eq!(n.begin(), Begin::Queued, "one is being made");
        let g = ready(&mut n, t0);
        n.delivered(t0, g);
        assert_eq!(n.begin(), Begin::Queued);
        assert_eq!(n.begin(), Begin::Queued, "still one more, not two");
        assert!(n.awaiting_answer());
        assert!(n.answer_applied(), "offer again now");
        assert!(!n.awaiting_answer());
        assert_eq!(n.begin(), Begin::Offer);
        ready(&mut n, t0);
        assert!(!n.answer_applied(), "nothing changed meanwhile");
        // A bad answer: stable again, and a change made meanwhile is not lost.
        ready(&mut n, t0);
        n.begin();
        assert!(n.answer_failed());
        assert_eq!(n.begin(), Begin::Offer);
    }

    #[test]
    fn a_failed_delivery_is_retried_with_backoff_then_given_up_starting_the_queued_offer() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        n.begin();
        let g = ready(&mut n, t0);
        assert_eq!(
            n.delivery_failed(t0, g, true),
            AfterFailure::Retry(Duration::from_millis(100))
        );
        assert!(n.still_pending(g));
        // Sent again when its time comes, once.
        let at = n.poll_timeout().unwrap();
        assert_eq!(at, t0 + Duration::from_millis(100));
        assert_eq!(n.handle_timeout(at - Duration::from_millis(1)), None);
        assert_eq!(n.handle_timeout(at), Some(Resend::Delivery(g)));
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
    fn the_answer_to_an_offer_given_up_is_applied_while_it_is_still_the_local_description() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        let g = ready(&mut n, t0);
        assert!(!n.answers_given_up(g), "awaited: an ordinary answer");
        assert!(matches!(
            n.delivery_failed(t0, g, true),
            AfterFailure::Retry(_)
        ));
        assert_eq!(
            n.delivery_failed(t0 + OFFER_GIVE_UP_AFTER, g, true),
            AfterFailure::GiveUp {
                start_queued: false
            }
        );
        assert!(!n.awaiting_answer());
        // The edge had taken it (its reply was lost): the page's answer comes.
        assert!(n.answers_given_up(g));
        assert!(n.answers_given_up(0), "not numbered: the only one out");
        assert!(!n.answers_given_up(g + 7), "a number never given");
        assert!(!n.answer_applied(), "nothing queued");
        assert!(!n.answers_given_up(g), "applied: a second answer is stale");
        // A newer offer replaces the given-up one as our local description.
        let g2 = ready(&mut n, t0);
        assert_eq!(
            n.delivery_failed(t0, g2, false),
            AfterFailure::GiveUp {
                start_queued: false
            }
        );
        assert!(n.answers_given_up(g2));
        let g3 = ready(&mut n, t0);
        assert!(!n.answers_given_up(g2), "a newer offer is out");
        assert!(!n.answers_given_up(g3), "awaited: an ordinary answer");
    }

    #[test]
    fn a_refusal_or_a_gone_participant_ends_it_at_once() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        let g = ready(&mut n, t0);
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
        let g1 = ready(&mut n, t0);
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
        let g2 = ready(&mut n, t0);
        assert!(!n.still_pending(g1), "a newer offer replaced it");
        assert!(n.still_pending(g2));
        n.delivered(t0, g1);
        assert!(
            n.still_pending(g2),
            "a late outcome of the old one changes nothing"
        );
        n.delivered(t0, g2);
        assert!(!n.still_pending(g2));
    }

    #[test]
    fn an_offer_taken_but_not_answered_goes_again_with_growing_waits_until_answered() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        n.begin();
        let g = ready(&mut n, t0);
        assert_eq!(n.poll_timeout(), None, "not yet taken: nothing to time");
        n.delivered(t0, g);
        let mut at = t0;
        for (k, wait) in [8u64, 16, 32, 60, 60].into_iter().enumerate() {
            let due = at + Duration::from_secs(wait);
            assert_eq!(n.poll_timeout(), Some(due), "copy {k}");
            assert_eq!(n.handle_timeout(due - Duration::from_millis(1)), None);
            assert_eq!(
                n.handle_timeout(due),
                Some(Resend::Unanswered {
                    generation: g,
                    copy: k as u32 + 1
                }),
                "the same offer, the same generation"
            );
            assert_eq!(n.handle_timeout(due), None, "once");
            assert!(n.still_pending(g), "on its way again");
            at = due + Duration::from_millis(50);
            n.delivered(at, g);
        }
        assert_eq!(
            n.poll_timeout(),
            None,
            "all its copies: it waits as before, untimed"
        );
        assert!(n.awaiting_answer());
        // A change queued meanwhile is made once the answer (to any copy) comes.
        assert_eq!(n.begin(), Begin::Queued);
        assert!(n.answer_applied());
        assert_eq!(n.poll_timeout(), None);
        assert_eq!(n.handle_timeout(at + ANSWER_WAIT_MAX), None);
        // The next offer waits the first wait again.
        let g2 = ready(&mut n, at);
        n.delivered(at, g2);
        assert_eq!(n.poll_timeout(), Some(at + ANSWER_WAIT));
    }

    #[test]
    fn a_copy_the_edge_cannot_take_is_retried_and_never_ends_the_wait() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        let g = ready(&mut n, t0);
        n.delivered(t0, g);
        let due = t0 + ANSWER_WAIT;
        let copy1 = Some(Resend::Unanswered {
            generation: g,
            copy: 1,
        });
        assert_eq!(n.handle_timeout(due), copy1);
        assert!(matches!(
            n.delivery_failed(due, g, true),
            AfterFailure::Retry(_)
        ));
        let retry = n.poll_timeout().unwrap();
        assert_eq!(n.handle_timeout(retry), Some(Resend::Delivery(g)));
        // The edge is down for good (or refuses): the page may still have the offer from
        // before, so its answer is still waited for, and the next copy is timed.
        let late = due + OFFER_GIVE_UP_AFTER;
        assert_eq!(n.delivery_failed(late, g, true), AfterFailure::StillAwaited);
        assert!(n.awaiting_answer());
        assert_eq!(n.poll_timeout(), Some(late + ANSWER_WAIT * 2));
        assert_eq!(
            n.handle_timeout(late + ANSWER_WAIT * 2),
            Some(Resend::Unanswered {
                generation: g,
                copy: 2
            })
        );
        assert_eq!(
            n.delivery_failed(late + ANSWER_WAIT * 2, g, false),
            AfterFailure::StillAwaited,
            "refused: the same"
        );
        assert!(!n.answer_applied());
        assert!(!n.awaiting_answer());
        assert_eq!(n.poll_timeout(), None, "answered: nothing is timed");
    }

    #[test]
    fn a_late_delivery_report_of_an_answered_offer_starts_no_wait() {
        let t0 = Instant::now();
        let mut n = Negotiation::default();
        let g = ready(&mut n, t0);
        // The answer overtook the edge's reply to our post.
        n.answer_applied();
        n.delivered(t0, g);
        assert_eq!(n.poll_timeout(), None);
        assert_eq!(n.handle_timeout(t0 + ANSWER_WAIT_MAX), None);
    }
}
