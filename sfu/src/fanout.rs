//! One subscriber's forwarding of one published track, pure: per packet, whether it goes to this
//! subscriber and with which header (and VP8 picture numbers), which layers a keyframe is wanted
//! of, and when the subscriber's tile size changes what it receives. The shell (`media.rs`) holds
//! one [`SubForward`] per (subscriber, track), feeds it every packet of the track, and only
//! performs what comes out: sends the packet, asks the publisher for keyframes, counts.
//!
//! What it decides, in order, for each packet:
//! - not negotiated yet, or the subscriber's PeerConnection not connected: nothing is sent (a
//!   simulcast selector still learns which layers flow);
//! - simulcast: the [`LayerSelector`] says forward, drop, or switch (a switch restarts the
//!   numbering so the new layer follows on from the last packet sent);
//! - one layer: a hidden tile gets nothing; a video subscriber starts on a keyframe (until then
//!   every packet asks for one);
//! - a padding-only or blocked packet is skipped (its sequence number closes up);
//! - otherwise the [`Rewriter`] maps it, and [`Forwarded`] remembers it for NACKs.

use crate::codec::Vp8Ids;
use crate::downlink::Forwarded;
use crate::forward::{Mapped, Negotiated, Rewriter};
use crate::layers::{LayerSelector, Verdict, KEYFRAME_REQUEST_INTERVAL_MS, LAYERS};

/// What the shell knows about a packet of the published track.
#[derive(Debug, Clone, Copy)]
pub struct PacketIn {
    /// Simulcast layer (0 for a track with one).
    pub layer: usize,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    /// Starts a keyframe (always true for audio).
    pub keyframe: bool,
    /// Nothing to forward: padding only, or stopped by a host.
    pub padding: bool,
    /// The VP8 picture numbers in its payload descriptor (VP8 only).
    pub vp8: Option<Vp8Ids>,
}

/// What to do for this subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Send it with this header; and these VP8 numbers when they differ from the packet's own
    /// (the payload must then be a copy with them written in).
    pub send: Option<(Mapped, Option<Vp8Ids>)>,
    /// Layers to ask the publisher a keyframe of (bit per layer).
    pub keyframe_layers: u8,
    /// A new start: another layer, or the same one after the tile was hidden.
    pub switched: bool,
    /// The packet could not be placed (stale, or a payload type this subscriber did not
    /// negotiate): counted as dropped.
    pub dropped: bool,
}

/// One subscriber's forwarding state for one published track.
#[derive(Debug, Clone)]
pub struct SubForward {
    /// Negotiated with the subscriber (its answer arrived): packets may flow.
    pub ready: bool,
    /// The layer wanted (one-layer track: `Some(0)` = on, `None` = the tile is hidden).
    want: Option<usize>,
    /// Simulcast: which layer to forward and when to switch.
    selector: Option<LayerSelector>,
    /// Video: drop until the first packet of a keyframe, so the decoder starts clean.
    need_keyframe: bool,
    pub rewriter: Rewriter,
    /// The numbers forwarded lately: a NACK for one of them is this downlink's loss.
    pub forwarded: Forwarded,
}

impl SubForward {
    /// `simulcast`: the track comes as layers; `video`: it needs a keyframe to start.
    pub fn new(
        want: Option<usize>,
        simulcast: bool,
        video: bool,
        out_ssrc: u32,
        clock_rate: u32,
    ) -> SubForward {
        SubForward {
            ready: false,
            want,
            selector: simulcast.then(|| LayerSelector::new(want)),
            need_keyframe: video,
            rewriter: Rewriter::new(out_ssrc, clock_rate, Negotiated::new()),
            forwarded: Forwarded::default(),
        }
    }

    pub fn want(&self) -> Option<usize> {
        self.want
    }

    /// The layer being forwarded now (simulcast), if any.
    pub fn current_layer(&self) -> Option<usize> {
        self.selector.as_ref().and_then(|s| s.current())
    }

    /// Its state at `now_us`, for the control API's room description.
    pub fn describe(&self, now_us: u64) -> serde_json::Value {
        serde_json::json!({
            "ready": self.ready,
            "want": self.want,
            "need_keyframe": self.selector.is_none() && self.need_keyframe,
            "layers": self.selector.as_ref().map(|s| s.describe(now_us / 1000)),
        })
    }

    /// The subscriber's tile for this track changed: `want` is the layer it calls for now (`None`:
    /// hidden). Returns whether anything changed.
    pub fn set_want(&mut self, want: Option<usize>) -> bool {
        if self.want == want {
            return false;
        }
        if self.want.is_none() {
            self.need_keyframe = true; // shown again: start clean
        }
        self.want = want;
        if let Some(sel) = self.selector.as_mut() {
            sel.set_want(want);
        }
        true
    }

    /// One packet of the track. `connected`: the subscriber's PeerConnection is up; `asked`: a
    /// keyframe of the layer it receives was asked for (by it, or by someone on its behalf).
    pub fn on_packet(&mut self, p: &PacketIn, connected: bool, asked: bool, now_us: u64) -> Step {
        let now_ms = now_us / 1000;
        let mut step = Step::default();
        if !self.ready || !connected {
            if let Some(sel) = self.selector.as_mut() {
                sel.observe(p.layer, now_ms);
            }
            return step;
        }
        if let Some(sel) = self.selector.as_mut() {
            let verdict = sel.on_packet(p.layer, p.keyframe, now_ms);
            if let Some(l) = sel.tick(now_ms) {
                step.keyframe_layers |= 1 << l;
            }
            if asked {
                if let Some(c) = sel.current() {
                    step.keyframe_layers |= 1 << c;
                }
            }
            match verdict {
                Verdict::Drop => return step,
                Verdict::Switch => {
                    self.rewriter.restart();
                    step.switched = true;
                }
                _ => {}
            }
        } else {
            if self.want.is_none() {
                return step; // hidden tile
            }
            if asked {
                step.keyframe_layers |= 1;
            }
            if self.need_keyframe {
                if !p.keyframe {
                    step.keyframe_layers |= 1;
                    return step;
                }
                self.need_keyframe = false;
                self.rewriter.restart();
                step.switched = true;
            }
        }
        if p.padding {
            self.rewriter.skip(p.ssrc, p.seq);
            return step;
        }
        match self
            .rewriter
            .map(p.payload_type, p.seq, p.timestamp, p.ssrc, now_us)
        {
            Ok(m) => {
                self.forwarded.mark(m.seq, now_ms);
                if p.keyframe {
                    self.forwarded.keyframe_at(m.seq);
                }
                let vp8 = p.vp8.and_then(|ids| {
                    let to = self.rewriter.map_vp8(ids);
                    (to != ids).then_some(to)
                });
                step.send = Some((m, vp8));
            }
            Err(_) => step.dropped = true,
        }
        step
    }
}

/// A video reception gets nothing for this long while it should: said once in the SFU's log.
pub const STALL_AFTER_US: u64 = 4_000_000;

/// Whether a video reception is stalled at `now_us`: negotiated, its tile shown, its subscriber
/// connected, its track's media still arriving in a layer it may get (`track_last_us`: the last
/// such packet's time; padding and held-back packets do not count), and nothing sent to it for
/// [`STALL_AFTER_US`] since the later of its last packet sent (`last_sent_us`) and `since_us`
/// (its last restart: negotiated, reconnected, shown again). Only for the log: a hidden tile,
/// a paused camera or a host's block is not a stall.
pub fn stalled(
    fwd: &SubForward,
    connected: bool,
    since_us: u64,
    last_sent_us: Option<u64>,
    track_last_us: Option<u64>,
    now_us: u64,
) -> bool {
    let from = last_sent_us.map_or(since_us, |t| t.max(since_us));
    fwd.ready
        && connected
        && fwd.want.is_some()
        && track_last_us.is_some_and(|t| now_us.saturating_sub(t) < 1_000_000)
        && now_us.saturating_sub(from) >= STALL_AFTER_US
}

/// Keyframe requests to a publisher's track, paced: at most one per layer every
/// [`KEYFRAME_REQUEST_INTERVAL_MS`]; a wish that comes sooner is kept and asked on a later packet.
#[derive(Debug, Clone, Default)]
pub struct KeyframePacer {
    last: [Option<u64>; LAYERS],
    pending: u8,
}

impl KeyframePacer {
    /// No wish is held back: a packet with no new wish needs no call.
    pub fn idle(&self) -> bool {
        self.pending == 0
    }

    /// `wanted`: layers (bit per layer) a keyframe is wished of with this packet; `known(l)`: the
    /// layer's SSRC is known (a request needs it; a wish for an unknown layer is dropped).
    /// Returns the layers to ask now.
    pub fn on_packet(&mut self, wanted: u8, known: impl Fn(usize) -> bool, now_ms: u64) -> u8 {
        let wanted = wanted | std::mem::take(&mut self.pending);
        let mut ask = 0u8;
        for (l, last) in self.last.iter_mut().enumerate() {
            if wanted & (1 << l) == 0 || !known(l) {
                continue;
            }
            if last.is_some_and(|t| now_ms.saturating_sub(t) < KEYFRAME_REQUEST_INTERVAL_MS) {
                self.pending |= 1 << l; // not yet: kept for a later packet
                continue;
            }
            *last = Some(now_ms);
            ask |= 1 << l;
        }
        ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    fn pkt(layer: usize, seq: u16, keyframe: bool) -> PacketIn {
        PacketIn {
            layer,
            ssrc: 100 + layer as u32,
            seq,
            timestamp: u32::from(seq) * 3_000,
            payload_type: 96,
            keyframe,
            padding: false,
            vp8: None,
        }
    }

    fn ready(mut s: SubForward) -> SubForward {
        s.rewriter
            .set_negotiated(Negotiated::new().map_all_payload_types_to(98));
        s.ready = true;
        s
    }

    fn sent_seq(s: &Step) -> Option<u16> {
        s.send.map(|(m, _)| m.seq)
    }

    #[test]
    fn nothing_goes_before_the_answer_or_the_connection() {
        let mut s = SubForward::new(Some(0), false, true, 7, 90_000);
        assert_eq!(
            s.on_packet(&pkt(0, 1, true), true, false, MS),
            Step::default()
        );
        s = ready(s);
        assert_eq!(
            s.on_packet(&pkt(0, 2, true), false, false, 2 * MS),
            Step::default()
        );
        let st = s.on_packet(&pkt(0, 3, true), true, false, 3 * MS);
        assert_eq!(sent_seq(&st), Some(3));
        assert_eq!(st.send.unwrap().0.ssrc, 7);
        assert_eq!(st.send.unwrap().0.payload_type, 98);
    }

    #[test]
    fn a_video_subscriber_starts_on_a_keyframe_and_asks_for_one_until_then() {
        let mut s = ready(SubForward::new(Some(0), false, true, 7, 90_000));
        for seq in 10..13 {
            let st = s.on_packet(&pkt(0, seq, false), true, false, u64::from(seq) * MS);
            assert_eq!((st.send, st.keyframe_layers), (None, 1), "seq {seq}");
        }
        let st = s.on_packet(&pkt(0, 13, true), true, false, 13 * MS);
        assert!(st.switched);
        let first = sent_seq(&st).unwrap();
        let st = s.on_packet(&pkt(0, 14, false), true, false, 14 * MS);
        assert_eq!(sent_seq(&st), Some(first.wrapping_add(1)));
        assert_eq!(st.keyframe_layers, 0, "started: no more asking");
    }

    #[test]
    fn audio_starts_at_once() {
        let mut s = ready(SubForward::new(Some(0), false, false, 7, 48_000));
        let st = s.on_packet(&pkt(0, 500, false), true, false, MS);
        assert!(st.send.is_some());
    }

    #[test]
    fn a_hidden_tile_gets_nothing_and_shown_again_starts_on_a_keyframe_following_on() {
        let mut s = ready(SubForward::new(Some(0), false, true, 7, 90_000));
        let a = sent_seq(&s.on_packet(&pkt(0, 1, true), true, false, MS)).unwrap();
        assert!(s.set_want(None));
        assert!(!s.set_want(None), "no change");
        for seq in 2..50 {
            let st = s.on_packet(&pkt(0, seq, seq == 20), true, true, u64::from(seq) * MS);
            assert_eq!(
                st,
                Step::default(),
                "hidden: nothing, not even keyframe requests"
            );
        }
        assert!(s.set_want(Some(0)));
        let st = s.on_packet(&pkt(0, 50, false), true, false, 50 * MS);
        assert_eq!(
            (st.send, st.keyframe_layers),
            (None, 1),
            "waits for a keyframe"
        );
        let st = s.on_packet(&pkt(0, 51, true), true, false, 51 * MS);
        assert_eq!(
            sent_seq(&st),
            Some(a.wrapping_add(1)),
            "numbers follow on from the last packet sent, not jump by 50"
        );
    }

    #[test]
    fn a_stall_is_a_shown_connected_reception_of_a_live_track_with_nothing_sent_for_4_s() {
        let s = ready(SubForward::new(Some(2), true, true, 9, 90_000));
        let sec = 1_000_000;
        // Nothing sent since it started 5 s ago, the track live: stalled.
        assert!(stalled(&s, true, 0, None, Some(5 * sec - 10), 5 * sec));
        // Its last packet 3 s ago: not yet.
        assert!(!stalled(&s, true, 0, Some(2 * sec), Some(5 * sec), 5 * sec));
        // Started 3 s ago: not yet.
        assert!(!stalled(&s, true, 2 * sec, None, Some(5 * sec), 5 * sec));
        // The track itself quiet (a paused camera), the subscriber away, the tile hidden, or
        // not negotiated: not a stall.
        assert!(!stalled(&s, true, 0, None, Some(3 * sec), 5 * sec));
        assert!(!stalled(&s, true, 0, None, None, 5 * sec));
        assert!(!stalled(&s, false, 0, None, Some(5 * sec), 5 * sec));
        let mut hidden = s.clone();
        hidden.set_want(None);
        assert!(!stalled(&hidden, true, 0, None, Some(5 * sec), 5 * sec));
        let fresh = SubForward::new(Some(2), true, true, 9, 90_000);
        assert!(!stalled(&fresh, true, 0, None, Some(5 * sec), 5 * sec));
    }

    #[test]
    fn padding_is_skipped_without_a_gap() {
        let mut s = ready(SubForward::new(Some(0), false, true, 7, 90_000));
        let a = sent_seq(&s.on_packet(&pkt(0, 1, true), true, false, MS)).unwrap();
        let mut pad = pkt(0, 2, false);
        pad.padding = true;
        assert_eq!(s.on_packet(&pad, true, false, 2 * MS).send, None);
        let st = s.on_packet(&pkt(0, 3, false), true, false, 3 * MS);
        assert_eq!(sent_seq(&st), Some(a.wrapping_add(1)));
    }

    #[test]
    fn an_asked_keyframe_names_the_layer_received() {
        let mut s = ready(SubForward::new(Some(0), false, true, 7, 90_000));
        s.on_packet(&pkt(0, 1, true), true, false, MS);
        let st = s.on_packet(&pkt(0, 2, false), true, true, 2 * MS);
        assert_eq!(st.keyframe_layers, 1);
        assert!(st.send.is_some(), "and the packet still goes");
    }

    #[test]
    fn simulcast_switches_layers_on_a_keyframe_with_continuous_numbers() {
        // Wants the top layer; layer 0 flows first, then layer 2 joins.
        let mut s = ready(SubForward::new(Some(2), true, true, 7, 90_000));
        let mut now = 0u64;
        let mut last = None;
        let mut seq0 = 0u16;
        let mut seq2 = 30_000u16;
        let mut switches = 0;
        let mut on_top = false;
        let mut asked_top = false;
        let mut key2 = false;
        for i in 0..400u32 {
            now += 10 * MS;
            // Layer 0 every 10 ms (keyframe every 100 packets); layer 2 from 1 s on.
            seq0 = seq0.wrapping_add(1);
            let st = s.on_packet(&pkt(0, seq0, i % 100 == 0), true, false, now);
            if st.keyframe_layers & 0b100 != 0 {
                asked_top = true;
                key2 = true;
            }
            if st.switched {
                switches += 1;
            }
            if let Some(q) = sent_seq(&st) {
                if let Some(l) = last {
                    assert_eq!(q, u16::wrapping_add(l, 1), "continuous at packet {i}");
                }
                last = Some(q);
            }
            if i >= 100 {
                // The publisher answers a keyframe request on its next frame, and sends none
                // unasked: the switch up can only come from the selector's request.
                seq2 = seq2.wrapping_add(1);
                let key = std::mem::take(&mut key2);
                let st = s.on_packet(&pkt(2, seq2, key), true, false, now);
                if st.keyframe_layers & 0b100 != 0 {
                    asked_top = true;
                    key2 = true;
                }
                if st.switched {
                    switches += 1;
                }
                if let Some(q) = sent_seq(&st) {
                    on_top = true;
                    assert_eq!(
                        q,
                        last.unwrap().wrapping_add(1),
                        "continuous across the switch"
                    );
                    last = Some(q);
                }
            }
        }
        assert!(on_top, "moved up to the wanted layer");
        assert_eq!(s.current_layer(), Some(2));
        assert!(asked_top, "asked the top layer for a keyframe to switch on");
        assert_eq!(switches, 2, "start on layer 0, then one switch up");
    }

    #[test]
    fn vp8_numbers_come_out_only_when_they_change() {
        let mut s = ready(SubForward::new(Some(0), false, true, 7, 90_000));
        let mut p = pkt(0, 1, true);
        p.vp8 = Some(Vp8Ids {
            picture_id: Some((5, false)),
            tl0_pic_idx: None,
            key_idx: None,
        });
        let st = s.on_packet(&p, true, false, MS);
        assert_eq!(
            st.send.unwrap().1,
            None,
            "the first source keeps its own numbers"
        );
    }

    #[test]
    fn a_packet_in_an_unnegotiated_payload_type_is_dropped_and_counted() {
        let mut s = SubForward::new(Some(0), false, false, 7, 48_000);
        s.rewriter
            .set_negotiated(Negotiated::new().map_payload_type(111, 111));
        s.ready = true;
        let mut p = pkt(0, 1, true);
        p.payload_type = 96;
        let st = s.on_packet(&p, true, false, MS);
        assert!(st.dropped && st.send.is_none());
    }

    #[test]
    fn keyframe_requests_are_paced_per_layer_and_a_held_wish_goes_later() {
        let mut k = KeyframePacer::default();
        let all = |_| true;
        assert_eq!(
            k.on_packet(0b001, all, 1_000),
            0b001,
            "the first goes at once"
        );
        assert_eq!(k.on_packet(0b001, all, 1_100), 0, "too soon: held");
        assert_eq!(
            k.on_packet(0b100, all, 1_200),
            0b100,
            "another layer has its own pace"
        );
        assert_eq!(k.on_packet(0, all, 1_400), 0, "still too soon for layer 0");
        assert_eq!(
            k.on_packet(0, all, 1_500),
            0b001,
            "the held wish goes on a later packet"
        );
        assert_eq!(k.on_packet(0, all, 3_000), 0, "and only once");
        // A layer whose SSRC is not known yet cannot be asked: the wish is dropped.
        assert_eq!(k.on_packet(0b010, |l| l != 1, 3_000), 0);
        assert_eq!(k.on_packet(0, all, 3_000), 0);
    }
}
