//! Recordings after the meeting, pure: what an SFU reports of its part of a recording (a segment:
//! one WebM file per track, `segment.json`), the manifest the player and the download read (every
//! segment of a recording, tracks aligned on one clock), who may watch, and the `Range` requests
//! the player seeks with. The edge moves the bytes (R2, D1); the SFU writes the files.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Millis;

/// One file of a segment: one track of one participant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSummary {
    pub file: String,
    pub participant: String,
    /// "audio", "video", "screen" or "screen_audio".
    pub kind: String,
    /// "opus" or "vp8".
    pub codec: String,
    /// Wall-clock µs (the SFU's clock) of its first frame: tracks are aligned by it.
    pub start_us: u64,
    /// How `start_us` was found: "sender-reports" (its capture time from the publisher's RTCP
    /// sender reports, one offset for all of the publisher's tracks: they play as captured) or
    /// "arrival" (when its first frame reached the SFU).
    #[serde(default = "arrival")]
    pub clock: String,
    /// When its first frame reached the SFU (µs), whichever clock `start_us` is on.
    #[serde(default)]
    pub arrived_us: u64,
    /// Where its publisher's sender reports put its first frame (µs, the SFU's clock), when it
    /// had reports: set with either `clock`, so a track placed by its arrival shows why (this
    /// too far from `arrived_us`, or another of the publisher's tracks without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_start_us: Option<i64>,
    pub duration_ms: u64,
    pub frames: u64,
    pub bytes: u64,
    #[serde(default)]
    pub lost_packets: u64,
    #[serde(default)]
    pub dropped_frames: u64,
}

fn arrival() -> String {
    "arrival".into()
}

/// `segment.json`: one SFU's part of a recording (a failover starts another on the new SFU).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    pub recording: String,
    pub room: String,
    pub segment: String,
    pub sfu: String,
    pub started_us: u64,
    pub ended_us: u64,
    pub tracks: Vec<TrackSummary>,
}

/// The most files one segment may list (a meeting of 100 people with camera, microphone and a
/// screen each, coming and going a few times).
pub const MAX_SEGMENT_FILES: usize = 2_000;

/// A recording as the player reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub recording: String,
    pub room: String,
    /// Milliseconds since the epoch.
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub by: String,
    /// The recording's time line, from the first track's start to the last track's end.
    pub start_us: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// In time order; each track's `start_us` places it on the recording's time line.
    pub segments: Vec<SegmentSummary>,
    /// Who is who: participant id (as the files name them) → name.
    #[serde(default)]
    pub names: std::collections::BTreeMap<String, String>,
}

/// The manifest of a recording from its segments (any order; a segment reported twice counts
/// once).
pub fn manifest(
    recording: &str,
    room: &str,
    started_at: Millis,
    ended_at: Option<Millis>,
    by: &str,
    mut segments: Vec<SegmentSummary>,
) -> Manifest {
    segments.sort_by(|a, b| (a.started_us, &a.segment).cmp(&(b.started_us, &b.segment)));
    segments.dedup_by(|a, b| a.segment == b.segment);
    let tracks = || segments.iter().flat_map(|s| s.tracks.iter());
    let start_us = tracks().map(|t| t.start_us).min().unwrap_or(0);
    let end_us = tracks()
        .map(|t| t.start_us + t.duration_ms * 1_000)
        .max()
        .unwrap_or(start_us);
    Manifest {
        recording: recording.into(),
        room: room.into(),
        started_at,
        ended_at,
        by: by.into(),
        start_us,
        duration_ms: (end_us - start_us) / 1_000,
        bytes: tracks().map(|t| t.bytes).sum(),
        segments,
        names: Default::default(),
    }
}

/// One file as the player places it on the recording's time line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackTrack {
    /// Where the edge serves it.
    pub url: String,
    pub participant: String,
    pub kind: String,
    /// Milliseconds from the recording's start to the file's first frame.
    pub offset_ms: u64,
    pub duration_ms: u64,
}

impl PlaybackTrack {
    pub fn is_video(&self) -> bool {
        self.kind == "video" || self.kind == "screen"
    }

    /// Where in its file the player should be at `at_ms` of the recording (seconds), if the file
    /// plays then.
    pub fn position(&self, at_ms: u64) -> Option<f64> {
        (at_ms >= self.offset_ms && at_ms < self.offset_ms + self.duration_ms)
            .then(|| (at_ms - self.offset_ms) as f64 / 1_000.0)
    }
}

/// Every file of a recording, placed on its time line.
pub fn playback_tracks(m: &Manifest) -> Vec<PlaybackTrack> {
    m.segments
        .iter()
        .flat_map(|s| {
            s.tracks.iter().map(move |t| PlaybackTrack {
                url: format!("/api/recordings/{}/{}/{}", m.recording, s.segment, t.file),
                participant: m
                    .names
                    .get(&t.participant)
                    .cloned()
                    .unwrap_or_else(|| t.participant.clone()),
                kind: t.kind.clone(),
                offset_ms: t.start_us.saturating_sub(m.start_us) / 1_000,
                duration_ms: t.duration_ms,
            })
        })
        .collect()
}

/// `m:ss` (or `h:mm:ss`) for a time line position.
pub fn clock(ms: u64) -> String {
    let s = ms / 1_000;
    match (s / 3_600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

/// What a segment report was refused for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SegmentError {
    #[error("the segment names another recording")]
    WrongRecording,
    #[error("a segment or file name is 1 to 100 letters, digits, '.', '-' or '_' (not starting with '.')")]
    BadName,
    #[error("a segment lists at most {MAX_SEGMENT_FILES} files")]
    TooManyFiles,
    #[error("a segment ends before it starts")]
    BadTimes,
}

/// A segment or file name: one safe path component.
pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks an SFU's `segment.json` for `recording` before it is stored.
pub fn check_segment(recording: &str, s: &SegmentSummary) -> Result<(), SegmentError> {
    if s.recording != recording {
        return Err(SegmentError::WrongRecording);
    }
    if !valid_name(&s.segment) || s.tracks.iter().any(|t| !valid_name(&t.file)) {
        return Err(SegmentError::BadName);
    }
    if s.tracks.len() > MAX_SEGMENT_FILES {
        return Err(SegmentError::TooManyFiles);
    }
    if s.ended_us < s.started_us {
        return Err(SegmentError::BadTimes);
    }
    Ok(())
}

/// What someone may do with a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Watch, download and delete it: the browser that started it, the meeting's owner.
    Manage,
    /// Watch and download it: the people the meeting's owner invited (named as co-hosts, signed
    /// in with that address).
    Watch,
}

/// What `browser`/`user` may do with a recording `started_by_browser` of a meeting owned by
/// `meeting_owner`; `invited` says the signed-in user's address is one the meeting names (an
/// address is as trusted as the meeting's co-host role already makes it: see ARCHITECTURE.md).
/// Nobody else may do anything with it.
pub fn access(
    started_by_browser: Option<&str>,
    meeting_owner: Option<&str>,
    invited: bool,
    browser: Option<&str>,
    user: Option<&str>,
) -> Option<Access> {
    let same = |a: Option<&str>, b: Option<&str>| matches!((a, b), (Some(a), Some(b)) if a == b);
    if same(started_by_browser, browser) || same(meeting_owner, user) {
        Some(Access::Manage)
    } else if invited && user.is_some() && meeting_owner.is_some() {
        Some(Access::Watch)
    } else {
        None
    }
}

/// What D1 keeps of a browser's identity (its cookie): a SHA-256, never the identity itself.
#[cfg(feature = "auth")]
pub fn browser_key(identity: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        format!("recording-browser:{identity}").as_bytes(),
    ))
}

/// A `Range: bytes=…` request the edge cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    #[error("range not satisfiable")]
    NotSatisfiable,
}

/// The byte range (`start..=end`) a `Range` header asks of an object of `size` bytes: `None` for
/// the whole object (no header, or one this does not read: several ranges, another unit — served
/// whole, as RFC 9110 allows).
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, RangeError> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last `suffix` bytes.
        let Ok(suffix) = b.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 || size == 0 {
            return Err(RangeError::NotSatisfiable);
        }
        (size.saturating_sub(suffix), size - 1)
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            None
        } else {
            match b.parse::<u64>() {
                Ok(e) => Some(e),
                Err(_) => return Ok(None),
            }
        };
        if start >= size {
            return Err(RangeError::NotSatisfiable);
        }
        let end = end.map_or(size - 1, |e| e.min(size - 1));
        if end < start {
            return Ok(None);
        }
        (start, end)
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(file: &str, start_us: u64, duration_ms: u64) -> TrackSummary {
        TrackSummary {
            file: file.into(),
            participant: "p".into(),
            kind: "video".into(),
            codec: "vp8".into(),
            start_us,
            duration_ms,
            frames: 1,
            bytes: 100,
            ..Default::default()
        }
    }

    #[test]
    fn a_segment_from_an_sfu_without_sender_report_alignment_reads_as_aligned_by_arrival() {
        let t: TrackSummary = serde_json::from_str(
            r#"{"file":"001-audio.webm","participant":"p","kind":"audio","codec":"opus",
                "start_us":5,"duration_ms":1,"frames":1,"bytes":1}"#,
        )
        .unwrap();
        assert_eq!((t.clock.as_str(), t.arrived_us), ("arrival", 0));
    }

    fn segment(name: &str, started_us: u64, tracks: Vec<TrackSummary>) -> SegmentSummary {
        SegmentSummary {
            recording: "rec".into(),
            room: "r".into(),
            segment: name.into(),
            sfu: "sfu".into(),
            started_us,
            ended_us: started_us + 1,
            tracks,
        }
    }

    #[test]
    fn a_manifest_orders_segments_and_spans_every_track() {
        // A failover: the second SFU's segment reported first, the first one twice.
        let a = segment(
            "a",
            1_000_000,
            vec![track("001-video.webm", 1_000_000, 4_000)],
        );
        let b = segment(
            "b",
            6_000_000,
            vec![
                track("001-audio.webm", 6_100_000, 3_000),
                track("002-video.webm", 6_000_000, 2_000),
            ],
        );
        let m = manifest("rec", "r", 5, Some(9), "Ada", vec![b, a.clone(), a]);
        assert_eq!(
            m.segments
                .iter()
                .map(|s| s.segment.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(m.start_us, 1_000_000);
        assert_eq!(m.duration_ms, 8_100); // to 9.1 s
        assert_eq!(m.bytes, 300);
        let empty = manifest("rec", "r", 5, None, "Ada", Vec::new());
        assert_eq!((empty.duration_ms, empty.bytes), (0, 0));
    }

    #[test]
    fn the_player_places_each_file_on_the_recordings_time_line() {
        let a = segment(
            "a",
            1_000_000,
            vec![track("001-video.webm", 1_000_000, 4_000)],
        );
        let mut audio = track("002-audio.webm", 1_500_000, 3_000);
        audio.kind = "audio".into();
        let b = segment("b", 6_000_000, vec![audio]);
        let m = manifest("rec", "r", 5, None, "Ada", vec![a, b]);
        let t = playback_tracks(&m);
        assert_eq!(t[0].url, "/api/recordings/rec/a/001-video.webm");
        assert_eq!((t[0].offset_ms, t[1].offset_ms), (0, 500));
        assert!(t[0].is_video() && !t[1].is_video());
        assert_eq!(t[1].position(400), None);
        assert_eq!(t[1].position(1_500), Some(1.0));
        assert_eq!(t[1].position(3_500), None);
        assert_eq!(
            (clock(65_000), clock(3_725_000)),
            ("1:05".into(), "1:02:05".into())
        );
    }

    #[test]
    fn segments_with_bad_names_or_another_recording_are_refused() {
        let ok = segment("sfu-1-17", 1, vec![track("001-audio.webm", 1, 1)]);
        assert_eq!(check_segment("rec", &ok), Ok(()));
        assert_eq!(
            check_segment("other", &ok),
            Err(SegmentError::WrongRecording)
        );
        for bad in ["../x", ".hidden", "a/b", "", "a b"] {
            let s = segment("s", 1, vec![track(bad, 1, 1)]);
            assert_eq!(
                check_segment("rec", &s),
                Err(SegmentError::BadName),
                "{bad}"
            );
        }
        let mut s = ok.clone();
        s.ended_us = 0;
        s.started_us = 5;
        assert_eq!(check_segment("rec", &s), Err(SegmentError::BadTimes));
    }

    #[test]
    fn the_starter_and_the_owner_manage_invited_people_watch_nobody_else_may() {
        use Access::*;
        assert_eq!(
            access(Some("b1"), None, false, Some("b1"), None),
            Some(Manage)
        );
        assert_eq!(access(Some("b1"), None, false, Some("b2"), None), None);
        assert_eq!(
            access(None, Some("u1"), false, None, Some("u1")),
            Some(Manage)
        );
        assert_eq!(
            access(None, Some("u1"), false, Some("b1"), Some("u2")),
            None
        );
        assert_eq!(access(None, None, false, None, None), None);
        // Invited (the shell found the user's address among the meeting's): watch, not delete.
        assert_eq!(
            access(None, Some("u1"), true, Some("b2"), Some("u2")),
            Some(Watch)
        );
        // The owner is the owner even when also named.
        assert_eq!(
            access(None, Some("u1"), true, None, Some("u1")),
            Some(Manage)
        );
        // Only signed in, and only for a scheduled meeting's recording.
        assert_eq!(access(None, Some("u1"), true, Some("b2"), None), None);
        assert_eq!(access(Some("b1"), None, true, Some("b2"), Some("u2")), None);
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let r = |h: &str| parse_range(Some(h), 1_000);
        assert_eq!(parse_range(None, 1_000), Ok(None));
        assert_eq!(r("bytes=0-"), Ok(Some((0, 999))));
        assert_eq!(r("bytes=100-199"), Ok(Some((100, 199))));
        assert_eq!(r("bytes=900-5000"), Ok(Some((900, 999))));
        assert_eq!(r("bytes=-100"), Ok(Some((900, 999))));
        assert_eq!(r("bytes=-5000"), Ok(Some((0, 999))));
        assert_eq!(r("bytes=1000-"), Err(RangeError::NotSatisfiable));
        assert_eq!(r("bytes=-0"), Err(RangeError::NotSatisfiable));
        // Served whole: several ranges, another unit, nonsense, an inverted range.
        for whole in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=x-",
            "bytes=5-1",
            "bytes=1-x",
        ] {
            assert_eq!(r(whole), Ok(None), "{whole}");
        }
    }
}
