//! Simulcast layer selection for one subscriber of one publisher's camera (sans-IO).
//!
//! The subscriber wants at most some layer (from its tile size and downlink, see
//! `edgemeet_shared::media`); the publisher sends whichever layers Chrome keeps flowing (it pauses
//! the top ones under low bandwidth or CPU). The selector forwards one layer:
//! - it only moves *up* to a layer that has been flowing for [`UPGRADE_AFTER_MS`];
//! - it moves *down* at once when the current layer stops flowing or is no longer wanted;
//! - it never targets a layer that is not flowing;
//! - it switches only on a keyframe of the target layer, asking for one (PLI) at most every
//!   [`KEYFRAME_REQUEST_INTERVAL_MS`] until it arrives. The `forward::Rewriter` keeps the
//!   subscriber's sequence numbers and timestamps continuous across the switch.

pub type Millis = u64;

pub const LAYERS: usize = 3;
/// A layer with no packet for this long is not flowing.
pub const FLOW_TIMEOUT_MS: Millis = 1_000;
/// How long a layer must have been flowing before the selector moves up to it.
pub const UPGRADE_AFTER_MS: Millis = 1_500;
pub const KEYFRAME_REQUEST_INTERVAL_MS: Millis = 500;

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// First packet of a new layer (a keyframe): forward; the source changed.
    Switch,
    Drop,
}

#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    since: Millis,
    last: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    flows: [Option<Flow>; LAYERS],
    /// Highest layer the subscriber wants; `None` = nothing (hidden tile).
    want: Option<usize>,
    current: Option<usize>,
    /// The last keyframe request: for which layer, when.
    last_keyframe_request: Option<(usize, Millis)>,
}

impl LayerSelector {
    pub fn new(want: Option<usize>) -> LayerSelector {
        LayerSelector {
            want: want.map(|w| w.min(LAYERS - 1)),
            ..LayerSelector::default()
        }
    }

    /// The subscriber's wish changed (tile resized or hidden, downlink estimate moved).
    pub fn set_want(&mut self, want: Option<usize>) {
        self.want = want.map(|w| w.min(LAYERS - 1));
        if self.want.is_none() {
            self.current = None; // stop at once: a hidden tile costs nothing
        }
    }

    pub fn current(&self) -> Option<usize> {
        self.current
    }

    fn flowing(&self, layer: usize, now: Millis) -> bool {
        self.flows[layer].is_some_and(|f| now.saturating_sub(f.last) < FLOW_TIMEOUT_MS)
    }

    /// The layer to be on now (see the module docs).
    pub fn target(&self, now: Millis) -> Option<usize> {
        let want = self.want?;
        (0..=want).rev().find(|&l| {
            let Some(f) = self.flows[l].filter(|_| self.flowing(l, now)) else {
                return false;
            };
            let is_upgrade = self.current.is_none_or(|c| l > c)
                && self.current.is_some_and(|c| self.flowing(c, now));
            !is_upgrade || now.saturating_sub(f.since) >= UPGRADE_AFTER_MS
        })
    }

    /// A packet of `layer` arrived that this subscriber cannot take yet (not negotiated or not
    /// connected): only note that the layer is flowing.
    pub fn observe(&mut self, layer: usize, now: Millis) {
        if layer >= LAYERS {
            return;
        }
        let flowing = self.flowing(layer, now);
        let f = self.flows[layer].get_or_insert(Flow {
            since: now,
            last: now,
        });
        if !flowing {
            f.since = now; // resumed after a pause: the upgrade clock starts again
        }
        f.last = now;
    }

    /// The highest layer the subscriber wants.
    pub fn want(&self) -> Option<usize> {
        self.want
    }

    /// Its state at `now`, for the control API's room description: the layer forwarded, the
    /// one it moves to, each layer's last packet and flowing time (ms ago), the last keyframe
    /// asked for.
    pub fn describe(&self, now: Millis) -> serde_json::Value {
        let flows: Vec<serde_json::Value> = self
            .flows
            .iter()
            .map(|f| match f {
                Some(f) => serde_json::json!({
                    "last_ms_ago": now.saturating_sub(f.last),
                    "since_ms_ago": now.saturating_sub(f.since),
                }),
                None => serde_json::Value::Null,
            })
            .collect();
        serde_json::json!({
            "current": self.current,
            "target": self.target(now),
            "flows": flows,
            "keyframe_asked": self
                .last_keyframe_request
                .map(|(l, t)| serde_json::json!({"layer": l, "ms_ago": now.saturating_sub(t)})),
        })
    }

    /// A packet of `layer` arrived; `keyframe` if it starts a keyframe.
    pub fn on_packet(&mut self, layer: usize, keyframe: bool, now: Millis) -> Verdict {
        if layer >= LAYERS {
            return Verdict::Drop;
        }
        self.observe(layer, now);
        let target = self.target(now);
        if Some(layer) == self.current && target == self.current {
            return Verdict::Forward;
        }
        if Some(layer) == target && keyframe {
            self.current = target;
            self.last_keyframe_request = None;
            return Verdict::Switch;
        }
        // Keep the old layer flowing until the target's keyframe arrives (no freeze meanwhile).
        if Some(layer) == self.current && self.want.is_some() {
            return Verdict::Forward;
        }
        Verdict::Drop
    }

    /// Returns the layer to request a keyframe (PLI) for, when a switch is waiting on one: at
    /// once for a new target, then at most every [`KEYFRAME_REQUEST_INTERVAL_MS`] until it comes.
    pub fn tick(&mut self, now: Millis) -> Option<usize> {
        let target = self.target(now)?;
        if Some(target) == self.current {
            return None;
        }
        if self.last_keyframe_request.is_some_and(|(layer, t)| {
            layer == target && now.saturating_sub(t) < KEYFRAME_REQUEST_INTERVAL_MS
        }) {
            return None;
        }
        self.last_keyframe_request = Some((target, now));
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends 30 fps of each layer in `layers` from `from` to `to`; keyframes where `kf(layer, t)`.
    /// Returns, per layer, the verdicts given.
    fn stream(
        s: &mut LayerSelector,
        from: Millis,
        to: Millis,
        layers: &[usize],
        kf: impl Fn(usize, Millis) -> bool,
    ) -> Vec<(Millis, usize, Verdict)> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            for &l in layers {
                out.push((t, l, s.on_packet(l, kf(l, t), t)));
            }
            t += 33;
        }
        out
    }

    fn forwarded_layers(v: &[(Millis, usize, Verdict)]) -> Vec<usize> {
        let mut ls: Vec<usize> = v
            .iter()
            .filter(|x| x.2 != Verdict::Drop)
            .map(|x| x.1)
            .collect();
        ls.dedup();
        ls
    }

    #[test]
    fn starts_on_a_keyframe_of_the_wanted_layer_and_forwards_only_it() {
        let mut s = LayerSelector::new(Some(1));
        let v = stream(&mut s, 0, 100, &[0, 1, 2], |_, _| false);
        assert!(
            v.iter().all(|x| x.2 == Verdict::Drop),
            "nothing before a keyframe"
        );
        assert_eq!(s.tick(100), Some(1), "asks for a keyframe of layer 1");
        assert_eq!(s.tick(200), None, "rate-limited");
        s.set_want(Some(0));
        assert_eq!(s.tick(250), Some(0), "a new target is asked for at once");
        s.set_want(Some(1));
        assert_eq!(s.tick(300), Some(1), "…and so is the old one again");
        assert_eq!(s.tick(400), None);
        assert_eq!(s.tick(800), Some(1));
        let v = stream(&mut s, 800, 1_700, &[0, 1, 2], |l, t| l == 1 && t == 833);
        assert_eq!(forwarded_layers(&v), [1]);
        assert!(v.contains(&(833, 1, Verdict::Switch)));
        assert_eq!(s.tick(1_700), None);
    }

    #[test]
    fn upgrades_wait_until_the_layer_has_been_flowing() {
        let mut s = LayerSelector::new(Some(2));
        // Only q flows at first (Chrome ramping up).
        stream(&mut s, 0, 2_000, &[0], |_, t| t == 0);
        assert_eq!(s.current(), Some(0));
        // f starts at t=2000: no upgrade before it has flowed 1.5 s, even with keyframes.
        let v = stream(&mut s, 2_000, 3_400, &[0, 2], |l, _| l == 2);
        assert_eq!(forwarded_layers(&v), [0]);
        // After that, the first keyframe of f switches.
        let v = stream(&mut s, 3_400, 4_000, &[0, 2], |l, t| l == 2 && t >= 3_600);
        assert_eq!(forwarded_layers(&v), [0, 2]);
        assert_eq!(s.current(), Some(2));
    }

    #[test]
    fn a_paused_layer_falls_back_to_a_flowing_one_and_is_never_targeted() {
        let mut s = LayerSelector::new(Some(2));
        // A keyframe about every second, as a publisher answering PLIs sends them.
        stream(&mut s, 0, 3_000, &[0, 1, 2], |_, t| t % 990 == 0);
        assert_eq!(s.current(), Some(2));
        // Chrome pauses f. After the flow timeout the target drops to h, switching on h's keyframe.
        let v = stream(&mut s, 3_000, 3_900, &[0, 1], |_, _| false);
        assert!(v.iter().all(|x| x.2 == Verdict::Drop));
        assert_eq!(s.target(3_900), Some(2), "still within the flow timeout");
        assert_eq!(s.target(4_100), Some(1));
        assert_eq!(s.tick(4_100), Some(1));
        let v = stream(&mut s, 4_100, 4_500, &[0, 1], |l, t| l == 1 && t == 4_166);
        assert_eq!(forwarded_layers(&v), [1]);
        // f comes back: it must flow 1.5 s again before being used.
        stream(&mut s, 4_500, 5_500, &[0, 1, 2], |_, _| true);
        assert_eq!(s.current(), Some(1));
        stream(&mut s, 5_500, 6_500, &[0, 1, 2], |_, _| true);
        assert_eq!(s.current(), Some(2));
    }

    #[test]
    fn shrinking_the_tile_moves_down_without_a_gap() {
        let mut s = LayerSelector::new(Some(2));
        stream(&mut s, 0, 3_000, &[0, 1, 2], |_, t| t % 990 == 0);
        assert_eq!(s.current(), Some(2));
        s.set_want(Some(0));
        // Until q's keyframe, f keeps flowing (no freeze); then only q.
        let v = stream(&mut s, 3_000, 3_500, &[0, 1, 2], |l, t| {
            l == 0 && t == 3_198
        });
        assert_eq!(forwarded_layers(&v), [2, 0]);
        assert!(v
            .iter()
            .filter(|x| x.0 < 3_198)
            .any(|x| x.1 == 2 && x.2 == Verdict::Forward));
        assert!(v
            .iter()
            .filter(|x| x.0 > 3_198)
            .all(|x| x.1 == 0 || x.2 == Verdict::Drop));
    }

    #[test]
    fn a_hidden_tile_receives_nothing_until_shown_again() {
        let mut s = LayerSelector::new(Some(1));
        stream(&mut s, 0, 1_000, &[0, 1], |_, t| t == 0);
        s.set_want(None);
        let v = stream(&mut s, 1_000, 2_000, &[0, 1], |_, _| true);
        assert!(v.iter().all(|x| x.2 == Verdict::Drop));
        assert_eq!(s.tick(2_000), None);
        s.set_want(Some(1));
        assert_eq!(s.tick(2_000), Some(1));
        let v = stream(&mut s, 2_000, 2_100, &[0, 1], |l, _| l == 1);
        assert_eq!(forwarded_layers(&v), [1]);
    }

    #[test]
    fn the_description_names_the_layer_forwarded_the_target_and_each_flow() {
        let mut s = LayerSelector::new(Some(2));
        stream(&mut s, 0, 1_000, &[0, 1], |l, t| l == 1 && t == 99);
        assert_eq!(s.tick(1_000), None);
        let d = s.describe(1_500);
        assert_eq!(d["current"], 1, "{d}");
        assert_eq!(d["target"], 1, "{d}");
        assert_eq!(d["flows"][0]["since_ms_ago"], 1_500, "{d}");
        assert_eq!(d["flows"][1]["last_ms_ago"], 510, "{d}"); // its last packet at 990
        assert!(d["flows"][2].is_null(), "{d}");
        // Layer 1 stops: after the flow timeout the target is q, asked for at once.
        stream(&mut s, 1_000, 2_100, &[0], |_, _| false);
        assert_eq!(s.tick(2_100), Some(0));
        let d = s.describe(2_200);
        assert_eq!(d["current"], 1, "{d}");
        assert_eq!(d["target"], 0, "{d}");
        assert_eq!(d["keyframe_asked"]["layer"], 0, "{d}");
        assert_eq!(d["keyframe_asked"]["ms_ago"], 100, "{d}");
    }

    #[test]
    fn unknown_layers_are_dropped() {
        let mut s = LayerSelector::new(Some(2));
        assert_eq!(s.on_packet(7, true, 0), Verdict::Drop);
    }

    /// Selector and rewriter together, as the shell uses them: three layers with their own SSRCs,
    /// sequence numbers and timestamp bases; the subscriber goes f → q. What it receives is one
    /// stream: sequence numbers +1 each packet, timestamps never going back, the first packet of
    /// the new layer a keyframe.
    #[test]
    fn a_switch_looks_like_one_continuous_stream_to_the_subscriber() {
        use crate::forward::{Negotiated, Rewriter};
        let mut s = LayerSelector::new(Some(2));
        let mut rw = Rewriter::new(
            0xABCD,
            90_000,
            Negotiated::new().map_all_payload_types_to(96),
        );
        let ssrc = [111u32, 222, 333];
        let seq0 = [65_500u16, 1_000, 30_000]; // q wraps during the run
        let ts0 = [5u32, 4_000_000_000, 77_777];
        let mut out: Vec<(u16, u32, usize, bool)> = Vec::new();
        let mut t = 0;
        let mut i = 0u32;
        while t < 6_000 {
            if t >= 3_000 && s.want() == Some(2) {
                s.set_want(Some(0));
            }
            for l in 0..3 {
                let kf = (t % 990) < 33 || (l == 0 && t == 3_300);
                let v = s.on_packet(l, kf, t);
                if v == Verdict::Drop {
                    continue;
                }
                let m = rw
                    .map(
                        96,
                        seq0[l].wrapping_add(i as u16),
                        ts0[l].wrapping_add(i * 3_000),
                        ssrc[l],
                        t * 1_000,
                    )
                    .unwrap();
                assert_eq!(m.ssrc, 0xABCD);
                out.push((m.seq, m.timestamp, l, kf));
            }
            t += 33;
            i += 1;
        }
        // q flows first (it starts the stream at once), f after it has flowed 1.5 s, then q again
        // after the tile shrank, each time on a keyframe.
        assert_eq!(forwarded(&out), [0, 2, 0]);
        for w in out.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "no gap: {w:?}");
            let dt = w[1].1.wrapping_sub(w[0].1);
            assert!(
                dt > 0 && dt < 90_000,
                "timestamps move forward a little: {w:?}"
            );
        }
        for w in out.windows(2).filter(|w| w[0].2 != w[1].2) {
            assert!(w[1].3, "a switch lands on a keyframe: {w:?}");
        }
        assert!(out[0].3, "the stream starts on a keyframe");
    }

    fn forwarded(v: &[(u16, u32, usize, bool)]) -> Vec<usize> {
        let mut ls: Vec<usize> = v.iter().map(|x| x.2).collect();
        ls.dedup();
        ls
    }
}
