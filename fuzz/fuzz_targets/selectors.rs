//! The SFU's per-subscriber layer selector and the active-speaker detector under any sequence of
//! packets, wishes, departures and clock steps: no panic; a layer switch only ever lands on a
//! keyframe of the layer switched to, never above what the subscriber wants; the speaker is always
//! someone still present.
#![no_main]
use arbitrary::Arbitrary;
use edgemeet_sfu::layers::{LayerSelector, Verdict};
use edgemeet_sfu::speaker::SpeakerDetector;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    Packet { layer: u8, keyframe: bool, dt: u8 },
    Want { layer: Option<u8> },
    Tick { dt: u16 },
    Level { who: u8, level: u8, dt: u8 },
    Leave { who: u8 },
    SpeakerTick { dt: u16 },
}

fuzz_target!(|steps: Vec<Step>| {
    let mut sel = LayerSelector::new(Some(2));
    let mut speaker = SpeakerDetector::new();
    let mut present = [false; 4];
    let mut now = 0u64;
    for step in steps.into_iter().take(5_000) {
        match step {
            Step::Packet {
                layer,
                keyframe,
                dt,
            } => {
                now += dt as u64;
                let layer = layer as usize % 4; // 3 is not a layer
                let v = sel.on_packet(layer, keyframe, now);
                if v == Verdict::Switch {
                    assert!(keyframe, "switched to layer {layer} without a keyframe");
                    assert!(sel.want().is_some_and(|w| layer <= w), "above the wish");
                    assert_eq!(sel.current(), Some(layer));
                }
                if v != Verdict::Drop {
                    assert!(sel.want().is_some(), "forwarded to a hidden tile");
                }
            }
            Step::Want { layer } => sel.set_want(layer.map(|l| l as usize)),
            Step::Tick { dt } => {
                now += dt as u64;
                if let Some(l) = sel.tick(now) {
                    assert!(l < 3);
                }
            }
            Step::Level { who, level, dt } => {
                now += dt as u64;
                let who = who as usize % 4;
                present[who] = true;
                speaker.observe(&format!("s{who}"), level & 0x7f, now);
            }
            Step::Leave { who } => {
                let who = who as usize % 4;
                present[who] = false;
                let _ = speaker.remove(&format!("s{who}"));
            }
            Step::SpeakerTick { dt } => {
                now += dt as u64;
                let _ = speaker.tick(now);
            }
        }
        if let Some(s) = speaker.current() {
            let i: usize = s[1..].parse().expect("one of ours");
            assert!(present[i], "the speaker {s} left");
        }
    }
});
