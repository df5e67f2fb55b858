//! The call's health, pure: how old a remote picture is when it shows (glass-to-glass latency,
//! from the absolute-capture-time RTP header extension), and a connection-quality score from what
//! a page measures. The page gathers the numbers (`getStats`, `getSynchronizationSources`); these
//! functions decide what they mean.
//!
//! **Latency.** With `abs-capture-time` negotiated end to end (the page offers it: browsers do
//! not by default; the SFU forwards it under each subscriber's id), a receiver's
//! `getSynchronizationSources()` says, for the last frame it delivered, when it was captured on
//! the sender's clock (`captureTimestamp`, NTP milliseconds) and when it was delivered here
//! (`timestamp`, `performance.timeOrigin + performance.now()`: Unix milliseconds). Their
//! difference is capture → display. The clocks are the two machines' wall clocks: off by their
//! skew between machines (`senderCaptureTimeOffset`, when the browser gives it, corrects the
//! capture system against the sender); on one machine they agree.
//!
//! **Quality.** [`score`] is a MOS-like number from 0 to 100 (the model LiveKit documents: start
//! from 100, take off for loss, jitter and round-trip time, and for freezes and a lower layer than
//! wanted), and [`Quality`] its band: above 80 excellent, above 40 good, else poor; no media for
//! [`LOST_AFTER_MS`] is lost.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The absolute-capture-time RTP header extension's name in SDP.
pub const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Milliseconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET_MS: f64 = 2_208_988_800_000.0;

/// `sdp` with the absolute-capture-time extension offered in every audio and video section that
/// does not offer it yet, under one id no other extension uses (1–14, the one-byte form, or —
/// when the SDP has `a=extmap-allow-mixed` and all fourteen are taken — 15–255). An SDP with no
/// free id is returned as it was.
pub fn with_capture_time(sdp: &str) -> String {
    with_capture_time_as(sdp, None)
}

/// The id `sdp` gives the absolute-capture-time extension, if any.
pub fn capture_time_id(sdp: &str) -> Option<u8> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=extmap:"))
        .find(|e| e.split_whitespace().nth(1) == Some(ABS_CAPTURE_TIME_URI))
        .and_then(|e| e.split([' ', '/']).next()?.parse::<u8>().ok())
}

/// The page's `answer` to an `offer` that offers the absolute-capture-time extension, accepting
/// it under the offer's id in every audio and video section where the browser left it out.
pub fn answer_with_capture_time(offer: &str, answer: &str) -> String {
    match capture_time_id(offer) {
        Some(id) => with_capture_time_as(answer, Some(id)),
        None => answer.to_string(),
    }
}

fn with_capture_time_as(sdp: &str, want: Option<u8>) -> String {
    if !sdp.contains("\nm=") && !sdp.starts_with("m=") {
        return sdp.to_string();
    }
    let used: Vec<u8> = sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=extmap:"))
        .filter_map(|e| e.split([' ', '/']).next()?.parse().ok())
        .collect();
    let existing = capture_time_id(sdp);
    let id = match (existing, want) {
        (Some(e), _) => e,
        // The offer's id, unless the answer uses it for something else.
        (None, Some(w)) if !used.contains(&w) => w,
        (None, Some(_)) => return sdp.to_string(),
        // A one-byte id (1–14) if one is free; else, where the SDP allows mixing in two-byte
        // header extensions (Chromium uses all fourteen and says so), a two-byte one.
        (None, None) => {
            let mixed = sdp.lines().any(|l| l.trim_end() == "a=extmap-allow-mixed");
            let last = if mixed { 255 } else { 14 };
            match (1..=last).find(|i| !used.contains(i)) {
                Some(i) => i,
                None => return sdp.to_string(),
            }
        }
    };
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len() + 256);
    // (Is the current section audio or video, and does it offer the extension already?)
    let mut section: Option<bool> = None;
    let close = |out: &mut String, section: Option<bool>| {
        if section == Some(false) {
            out.push_str(&format!("a=extmap:{id} {ABS_CAPTURE_TIME_URI}{eol}"));
        }
    };
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end();
        if let Some(m) = bare.strip_prefix("m=") {
            close(&mut out, section);
            // Audio and video sections, not rejected ones (port 0).
            let media = m.starts_with("audio") || m.starts_with("video");
            section = (media && m.split_whitespace().nth(1) != Some("0")).then_some(false);
        } else if bare
            .strip_prefix("a=extmap:")
            .is_some_and(|e| e.split_whitespace().nth(1) == Some(ABS_CAPTURE_TIME_URI))
        {
            if let Some(s) = section.as_mut() {
                *s = true;
            }
        }
        out.push_str(line);
        if !line.ends_with('\n') && !bare.is_empty() {
            // The last line had no end of line: give it one before anything is added.
            out.push_str(eol);
        }
    }
    close(&mut out, section);
    out
}

/// Capture → display in milliseconds, from a synchronization source's `timestamp` (Unix ms),
/// `captureTimestamp` (NTP ms) and `senderCaptureTimeOffset` (ms, 0 when absent). `None` when the
/// figures make no sense (negative, or more than a minute: clocks far apart).
pub fn glass_to_glass_ms(
    delivered_unix_ms: f64,
    capture_ntp_ms: f64,
    offset_ms: f64,
) -> Option<f64> {
    let ms = delivered_unix_ms + NTP_UNIX_OFFSET_MS - (capture_ntp_ms + offset_ms);
    (ms.is_finite() && (0.0..=60_000.0).contains(&ms)).then_some(ms)
}

/// How long [`LatencyWindow`] looks back.
pub const LATENCY_WINDOW_MS: f64 = 5_000.0;

/// The last [`LATENCY_WINDOW_MS`] of latency samples of one remote stream, one per delivered
/// frame looked at.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    /// (delivered at, Unix ms; latency ms)
    samples: VecDeque<(f64, f64)>,
}

impl LatencyWindow {
    /// A frame delivered at `delivered_unix_ms`, `latency_ms` old. The same frame seen again
    /// counts once.
    pub fn push(&mut self, delivered_unix_ms: f64, latency_ms: f64) {
        if self
            .samples
            .back()
            .is_some_and(|(at, _)| *at >= delivered_unix_ms)
        {
            return;
        }
        self.samples.push_back((delivered_unix_ms, latency_ms));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| delivered_unix_ms - at > LATENCY_WINDOW_MS)
        {
            self.samples.pop_front();
        }
    }

    /// The median over the window ending `now_unix_ms` (`None`: nothing in it).
    pub fn p50(&self, now_unix_ms: f64) -> Option<f64> {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .filter(|(at, _)| now_unix_ms - at <= LATENCY_WINDOW_MS)
            .map(|(_, l)| *l)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

/// What a page measured of one stream (or of its own connection) over the last few seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Packets lost over packets expected, 0–1.
    pub loss: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Round-trip time to the SFU, ms (0: unknown).
    pub rtt_ms: f64,
    /// Glass-to-glass latency, ms (0: not measured).
    #[serde(default)]
    pub latency_ms: f64,
    /// Share of the time the video was frozen, 0–1.
    pub frozen: f64,
    /// Layers below the one wanted (0: as wanted; the SFU or the sender is short of bandwidth).
    pub layers_short: u8,
    /// The sender says its video is limited by bandwidth or CPU.
    pub limited: bool,
    /// Milliseconds since media last arrived.
    pub silent_ms: f64,
}

/// How many camera layers below the one its tile asks for (`layer_for_tile`) a picture of
/// `received_height` is: the SFU forwards less than wanted (the viewer's downlink is short) or the
/// publisher sends less (its uplink or CPU is). The layers halve the height each, from the
/// tallest picture of that camera seen (`top_height`: a 480p webcam's top layer is its top).
/// 0 when unknown or as wanted.
pub fn layers_short(wanted: Option<usize>, received_height: u32, top_height: u32) -> u8 {
    let (Some(wanted), true) = (wanted, received_height > 0 && top_height >= received_height)
    else {
        return 0;
    };
    let top = crate::media::CAMERA_SIMULCAST.len() - 1;
    let below = (f64::from(top_height) / f64::from(received_height))
        .log2()
        .round() as usize;
    let got = top.saturating_sub(below);
    wanted
        .min(top)
        .saturating_sub(got)
        .min(usize::from(u8::MAX)) as u8
}

/// No media for this long: the connection is lost.
pub const LOST_AFTER_MS: f64 = 4_000.0;

/// A quality band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Excellent,
    Good,
    Poor,
    Lost,
}

impl Quality {
    /// As people read it: "excellent connection".
    pub fn words(self) -> &'static str {
        match self {
            Quality::Excellent => "excellent connection",
            Quality::Good => "good connection",
            Quality::Poor => "poor connection",
            Quality::Lost => "connection lost",
        }
    }
}

impl Quality {
    /// Lost 0 … excellent 3.
    pub fn rank(self) -> u8 {
        match self {
            Quality::Lost => 0,
            Quality::Poor => 1,
            Quality::Good => 2,
            Quality::Excellent => 3,
        }
    }
}

/// A tile's band: the worse of what this page sees of the stream and what its publisher's page
/// says of its own connection (either may be unknown).
pub fn worst(a: Option<Quality>, b: Option<Quality>) -> Option<Quality> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.rank() <= b.rank() { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// What capturing, encoding, decoding and showing a frame take on their own (glass to glass on
/// one machine with nothing between: 28–60 ms measured here): not the network's doing.
pub const LATENCY_BASELINE_MS: f64 = 50.0;
/// A latency this far above half the round trip is the two machines' clocks disagreeing, not
/// delay: the score then goes by the round trip alone.
pub const LATENCY_TRUSTED_OVER_RTT_MS: f64 = 1_000.0;

/// The score, 0–100 (see the module docs), and its band.
pub fn score(s: &LinkStats) -> (f64, Quality) {
    if s.silent_ms >= LOST_AFTER_MS {
        return (0.0, Quality::Lost);
    }
    let clamp01 = |x: f64| {
        if x.is_finite() {
            x.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let pos = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
    // Loss hurts most (10 % is poor by itself), then delay: the network's share of it — half
    // the round trip, or the glass-to-glass latency less what capturing, coding and showing take
    // anyway ([`LATENCY_BASELINE_MS`]) when that is more, unless the two clocks it compares are
    // clearly apart ([`LATENCY_TRUSTED_OVER_RTT_MS`]) — plus twice the jitter, as a jitter buffer
    // holds it: above 100 ms a conversation starts to feel it, at 300 ms it is poor. Then what
    // the picture shows: freezes, a lower layer.
    let half_rtt = pos(s.rtt_ms) / 2.0;
    let latency = pos(s.latency_ms);
    let network = if latency > 0.0 && latency <= half_rtt + LATENCY_TRUSTED_OVER_RTT_MS {
        (latency - LATENCY_BASELINE_MS).max(half_rtt)
    } else {
        half_rtt
    };
    let delay = network + 2.0 * pos(s.jitter_ms);
    let mut score = 100.0;
    score -= 600.0 * clamp01(s.loss);
    score -= (delay - 100.0).max(0.0) / 2.0;
    score -= 150.0 * clamp01(s.frozen);
    score -= 12.0 * f64::from(s.layers_short.min(2));
    if s.limited {
        score -= 5.0;
    }
    let score = score.clamp(0.0, 100.0);
    let band = if score > 80.0 {
        Quality::Excellent
    } else if score > 40.0 {
        Quality::Good
    } else {
        Quality::Poor
    };
    (score, band)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=sendonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:4/sendonly urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    #[test]
    fn the_offer_gets_capture_time_in_each_audio_and_video_section_under_a_free_id() {
        let out = with_capture_time(OFFER);
        let line = format!("a=extmap:3 {ABS_CAPTURE_TIME_URI}\r\n");
        assert_eq!(out.matches(&line).count(), 2, "{out}");
        // In the audio and the video section, not in the data channel's.
        let app = out.find("m=application").unwrap();
        assert!(out.rfind(&line).unwrap() < app);
        assert!(out.find(&line).unwrap() > out.find("m=audio").unwrap());
        // Everything else as it was, line by line.
        let without: String = out.replace(&line, "");
        assert_eq!(without, OFFER);
        // Offering it again changes nothing.
        assert_eq!(with_capture_time(&out), out);
    }

    #[test]
    fn a_section_that_offers_it_keeps_its_id_and_the_others_get_the_same() {
        let sdp =
            format!("m=audio 9 x\nm=video 9 x\na=extmap:9 {ABS_CAPTURE_TIME_URI}\nm=video 9 x");
        let out = with_capture_time(&sdp);
        assert_eq!(
            out.matches(&format!("a=extmap:9 {ABS_CAPTURE_TIME_URI}"))
                .count(),
            3,
            "{out}"
        );
        assert!(out.ends_with('\n'));
        // No free one-byte id: unchanged — unless two-byte ones may be mixed in (Chromium's
        // offers: all fourteen taken, and `a=extmap-allow-mixed`), then the first free one.
        let full: String = (1..=14)
            .map(|i| format!("a=extmap:{i} urn:x:{i}\n"))
            .collect::<String>();
        let sdp = format!("m=audio 9 x\n{full}");
        assert_eq!(with_capture_time(&sdp), sdp);
        let mixed = format!("a=extmap-allow-mixed\n{sdp}");
        let out = with_capture_time(&mixed);
        assert!(
            out.ends_with(&format!("a=extmap:15 {ABS_CAPTURE_TIME_URI}\n")),
            "{out}"
        );
        assert_eq!(capture_time_id(&out), Some(15));
        assert_eq!(with_capture_time("hello"), "hello");
        assert_eq!(with_capture_time(""), "");
    }

    #[test]
    fn an_answer_accepts_it_under_the_offers_id() {
        let offer = with_capture_time(OFFER);
        assert_eq!(capture_time_id(&offer), Some(3));
        let answer = OFFER.replace("a=sendonly", "a=recvonly");
        let out = answer_with_capture_time(&offer, &answer);
        assert_eq!(
            out.matches(&format!("a=extmap:3 {ABS_CAPTURE_TIME_URI}"))
                .count(),
            2
        );
        // An offer without it: the answer as it was; an answer that has it: as it was.
        assert_eq!(answer_with_capture_time(OFFER, &answer), answer);
        assert_eq!(answer_with_capture_time(&offer, &out), out);
        // A rejected section (port 0) gets nothing.
        let rejected = answer.replacen("m=video 9 ", "m=video 0 ", 1);
        let out = answer_with_capture_time(&offer, &rejected);
        assert_eq!(out.matches(ABS_CAPTURE_TIME_URI).count(), 1, "{out}");
        // The answer uses the offer's id for another extension: left alone.
        let clash = answer.replace("a=extmap:2 ", "a=extmap:3 ");
        assert_eq!(answer_with_capture_time(&offer, &clash), clash);
    }

    #[test]
    fn latency_is_delivery_minus_capture_on_one_clock_and_nonsense_is_none() {
        let unix = 1_800_000_000_000.0;
        let capture = unix + NTP_UNIX_OFFSET_MS - 28.0;
        assert_eq!(glass_to_glass_ms(unix, capture, 0.0), Some(28.0));
        assert_eq!(glass_to_glass_ms(unix, capture, 8.0), Some(20.0));
        assert_eq!(
            glass_to_glass_ms(unix, capture + 100.0, 0.0),
            None,
            "captured after shown"
        );
        assert_eq!(glass_to_glass_ms(unix, 0.0, 0.0), None, "no capture time");
        assert_eq!(glass_to_glass_ms(f64::NAN, capture, 0.0), None);
    }

    #[test]
    fn the_window_gives_the_median_of_the_last_five_seconds_each_frame_once() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.p50(0.0), None);
        for (i, l) in [30.0, 10.0, 20.0, 500.0, 25.0].into_iter().enumerate() {
            w.push(1_000.0 + i as f64 * 100.0, l);
        }
        w.push(1_400.0, 9_999.0); // the same frame again: not counted
        assert_eq!(w.p50(1_500.0), Some(25.0));
        // Six seconds later only what came since counts.
        w.push(7_000.0, 40.0);
        assert_eq!(w.p50(7_000.0), Some(40.0));
        assert_eq!(w.p50(13_000.0), None);
    }

    #[test]
    fn scores_band_a_clean_link_excellent_loss_delay_and_freezes_lower_it_silence_is_lost() {
        let clean = LinkStats {
            rtt_ms: 2.0,
            jitter_ms: 3.0,
            ..Default::default()
        };
        assert_eq!(score(&clean), (100.0, Quality::Excellent));
        // A picture 40 ms old on one machine: excellent.
        let local = LinkStats {
            latency_ms: 40.0,
            ..clean
        };
        assert_eq!(score(&local).1, Quality::Excellent);
        // 150 ms more delay on the way down (the picture 190 ms old, the round trip 150): good,
        // no longer excellent.
        let delayed = LinkStats {
            rtt_ms: 150.0,
            jitter_ms: 8.0,
            latency_ms: 190.0,
            ..clean
        };
        assert_eq!(score(&delayed).1, Quality::Good);
        let far = LinkStats {
            latency_ms: 380.0,
            ..delayed
        };
        assert_eq!(score(&far).1, Quality::Poor);
        // A transatlantic round trip (and the picture that far behind) is still excellent.
        let ocean = LinkStats {
            rtt_ms: 160.0,
            jitter_ms: 5.0,
            latency_ms: 130.0,
            ..clean
        };
        assert_eq!(score(&ocean).1, Quality::Excellent);
        // Clocks 3 s apart: the latency is not believed, the round trip decides.
        let skewed = LinkStats {
            latency_ms: 3_000.0,
            ..ocean
        };
        assert_eq!(score(&skewed).1, Quality::Excellent);
        let lossy = LinkStats {
            loss: 0.05,
            ..clean
        };
        assert_eq!(score(&lossy).1, Quality::Good);
        let bad = LinkStats {
            loss: 0.12,
            ..clean
        };
        assert_eq!(score(&bad).1, Quality::Poor);
        let frozen = LinkStats {
            frozen: 0.3,
            layers_short: 2,
            ..clean
        };
        assert_eq!(score(&frozen).1, Quality::Poor);
        let short = LinkStats {
            layers_short: 1,
            limited: true,
            ..clean
        };
        assert_eq!(score(&short).1, Quality::Excellent);
        let silent = LinkStats {
            silent_ms: 5_000.0,
            ..clean
        };
        assert_eq!(score(&silent), (0.0, Quality::Lost));
        // Garbage in: a band, never a panic or NaN.
        let junk = LinkStats {
            loss: f64::NAN,
            jitter_ms: f64::INFINITY,
            rtt_ms: -5.0,
            latency_ms: f64::NAN,
            frozen: 7.0,
            layers_short: 200,
            limited: true,
            silent_ms: f64::NAN,
        };
        let (s, _) = score(&junk);
        assert!(s.is_finite() && (0.0..=100.0).contains(&s));
        assert_eq!(Quality::Poor.words(), "poor connection");
        // A 180-px picture in a tile that asks for 720p is two layers short; as wanted, none.
        assert_eq!(layers_short(Some(2), 180, 720), 2);
        assert_eq!(layers_short(Some(1), 360, 720), 0);
        assert_eq!(layers_short(Some(0), 720, 720), 0);
        assert_eq!(layers_short(None, 180, 720), 0);
        assert_eq!(layers_short(Some(2), 0, 720), 0);
        // A 480p webcam: its top layer is its top, not a short one.
        assert_eq!(layers_short(Some(2), 480, 480), 0);
        assert_eq!(layers_short(Some(2), 240, 480), 1);
        // Nonsense (taller than the tallest seen): nothing.
        assert_eq!(layers_short(Some(2), 720, 360), 0);
        use Quality::*;
        assert_eq!(worst(Some(Excellent), Some(Poor)), Some(Poor));
        assert_eq!(worst(Some(Lost), Some(Good)), Some(Lost));
        assert_eq!(worst(None, Some(Good)), Some(Good));
        assert_eq!(worst(Some(Good), None), Some(Good));
        assert_eq!(worst(None, None), None);
    }
}
