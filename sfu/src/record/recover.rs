//! What a killed SFU left: a segment whose files were never finished (no cues, no duration, maybe
//! a cut-off last cluster) and no `segment.json`. At its next start the uploader finds it by its
//! `segment.part.json` (written when the segment began) and each file's `.json` sidecar (written
//! with the file's first frame), reads back every whole frame the file holds, writes them again
//! through libwebm as a finished file, and writes the `segment.json` the upload needs. The
//! recording then has this segment too, up to the last cluster on disk: the manifest stitches it
//! to the one the room's next SFU recorded.
//!
//! The reader knows exactly what our writer (libwebm, file mode) puts in a file: an EBML header,
//! a Segment of unknown size, then SeekHead/Void, Info, Tracks and Clusters (the last one maybe of
//! unknown size); a Cluster holds its Timecode and SimpleBlocks of one track, unlaced. Anything
//! cut off or unreadable ends the file there.

use std::path::{Path, PathBuf};

use edgemeet_shared::recording::{SegmentSummary, TrackSummary};
use serde::{Deserialize, Serialize};

use super::file::TrackFile;
use super::track::{set_starts, vp8_size, Frame, RecCodec, StartClock, TrackClock};

/// Written when a segment begins (what `segment.json` will say, less its tracks and end).
pub const PART_FILE: &str = "segment.part.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentHead {
    pub recording: String,
    pub room: String,
    pub segment: String,
    pub sfu: String,
    pub started_us: u64,
}

/// Written beside a track's file with its first frame (`{file}.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackHead {
    pub participant: String,
    pub kind: String,
    pub codec: String,
    /// Its first frame's arrival (µs, the SFU's clock).
    pub start_us: u64,
    /// From the publisher's sender reports, once there are some (see [`super::track::align`]):
    /// the sidecar is written again as they come.
    #[serde(default)]
    pub capture_us: Option<i64>,
    #[serde(default)]
    pub min_offset_us: Option<i64>,
}

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const CLUSTER: u32 = 0x1F43_B675;
const CUES: u32 = 0x1C53_BB6B;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const TIMECODE: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;

/// An element ID (its length marker kept, as Matroska writes IDs) at `i`: (id, bytes).
fn read_id(b: &[u8], i: usize) -> Option<(u32, usize)> {
    let first = *b.get(i)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return None;
    }
    let bytes = b.get(i..i + len)?;
    Some((
        bytes.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x)),
        len,
    ))
}

/// A size at `i`: (value, bytes); `None` value for "unknown" (all value bits set).
fn read_size(b: &[u8], i: usize) -> Option<(Option<u64>, usize)> {
    let first = *b.get(i)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = b.get(i..i + len)?;
    let mask = if len == 8 { 0 } else { 0xFFu8 >> len };
    let mut v = u64::from(first & mask);
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
    }
    let all_ones = (1u64 << (7 * len)) - 1;
    Some(((v != all_ones).then_some(v), len))
}

fn read_uint(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0u64, |a, x| (a << 8) | u64::from(*x))
}

/// Every whole frame in a file our writer left unfinished, in order (pts from the file's own
/// time codes).
pub fn read_frames(b: &[u8], codec: RecCodec) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut scale: u64 = 1_000_000;
    let mut i = 0;
    while let Some((id, id_len)) = read_id(b, i) {
        let Some((size, size_len)) = read_size(b, i + id_len) else {
            break;
        };
        let body = i + id_len + size_len;
        match id {
            // The Segment's children follow (its size may be unknown).
            SEGMENT => i = body,
            INFO => {
                let end = size.map_or(b.len(), |s| (body as u64 + s).min(b.len() as u64) as usize);
                let mut j = body;
                while let Some((cid, cl)) = read_id(b, j) {
                    let Some((Some(cs), csl)) = read_size(b, j + cl) else {
                        break;
                    };
                    let cb = j + cl + csl;
                    let ce = cb + cs as usize;
                    if ce > end {
                        break;
                    }
                    if cid == TIMECODE_SCALE {
                        scale = read_uint(&b[cb..ce]).max(1);
                    }
                    j = ce;
                }
                i = end;
            }
            CLUSTER => {
                let end = size.map_or(b.len(), |s| (body as u64 + s).min(b.len() as u64) as usize);
                let mut cluster_tc = 0u64;
                let mut j = body;
                while let Some((cid, cl)) = read_id(b, j) {
                    // A cluster of unknown size ends where the next one (or the cues) begins.
                    if size.is_none() && matches!(cid, CLUSTER | CUES) {
                        break;
                    }
                    let Some((Some(cs), csl)) = read_size(b, j + cl) else {
                        j = end;
                        break;
                    };
                    let cb = j + cl + csl;
                    let ce = cb + cs as usize;
                    if ce > end || ce > b.len() {
                        j = end; // cut off here
                        break;
                    }
                    match cid {
                        TIMECODE => cluster_tc = read_uint(&b[cb..ce]),
                        SIMPLE_BLOCK => {
                            if let Some(f) = block(&b[cb..ce], cluster_tc, scale, codec) {
                                frames.push(f);
                            }
                        }
                        _ => {}
                    }
                    j = ce;
                }
                i = if size.is_some() { end } else { j };
                if i >= b.len() {
                    break;
                }
            }
            _ => match size {
                Some(s) if body as u64 + s <= b.len() as u64 => i = body + s as usize,
                _ => break,
            },
        }
        if id == EBML && size.is_none() {
            break;
        }
    }
    frames
}

/// One SimpleBlock: track number, a signed 16-bit time code relative to its cluster's, flags,
/// then the frame (our writer never laces).
fn block(b: &[u8], cluster_tc: u64, scale: u64, codec: RecCodec) -> Option<Frame> {
    let (_, tl) = read_size(b, 0)?;
    let rel = i16::from_be_bytes([*b.get(tl)?, *b.get(tl + 1)?]);
    let flags = *b.get(tl + 2)?;
    if flags & 0x06 != 0 {
        return None; // laced: not ours
    }
    let data = b.get(tl + 3..)?.to_vec();
    if data.is_empty() {
        return None;
    }
    // (Garbage time codes saturate rather than overflow.)
    let tc = cluster_tc.saturating_add_signed(i64::from(rel));
    let keyframe = match codec {
        RecCodec::Opus => true,
        RecCodec::Vp8 => data[0] & 1 == 0,
    };
    let size = (codec == RecCodec::Vp8 && keyframe)
        .then(|| vp8_size(&data))
        .flatten();
    Some(Frame {
        pts_ns: tc.saturating_mul(scale),
        keyframe,
        size,
        data,
    })
}

fn codec_of(name: &str) -> Option<RecCodec> {
    match name {
        "opus" => Some(RecCodec::Opus),
        "vp8" => Some(RecCodec::Vp8),
        _ => None,
    }
}

/// Finishes a segment a killed SFU left (see the module docs): its `segment.json`, or `None` when
/// there is nothing to recover (then the directory can go).
pub fn recover_segment(dir: &Path) -> Recovered {
    let Some(head) = std::fs::read(dir.join(PART_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<SegmentHead>(&b).ok())
    else {
        return Recovered::Failed("segment.part.json unreadable".into());
    };
    let mut tracks = Vec::new();
    let mut clocks = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "webm"))
            .collect(),
        Err(e) => return Recovered::Failed(e.to_string()),
    };
    files.sort();
    for path in files {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let side = dir.join(format!("{name}.json"));
        let Some(t) = std::fs::read(&side)
            .ok()
            .and_then(|b| serde_json::from_slice::<TrackHead>(&b).ok())
        else {
            continue;
        };
        let Some(codec) = codec_of(&t.codec) else {
            continue;
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Kept for the next start (a full disk, say): never lost for a passing error.
            Err(e) => return Recovered::Failed(format!("{}: {e}", path.display())),
        };
        let frames = read_frames(&bytes, codec);
        drop(bytes);
        let Some(first) = frames.first() else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let tmp = dir.join(format!("{name}.recovered"));
        // A frame the muxer refuses (a corrupt time code near the cut) ends the file there.
        let mut kept = 0;
        let written = TrackFile::create(&tmp, codec, first).and_then(|mut f| {
            for fr in &frames {
                if f.add(fr).is_err() {
                    break;
                }
                kept += 1;
            }
            f.finish()
        });
        if let Err(e) = written.and_then(|_| {
            std::fs::rename(&tmp, &path)
                .map_err(|e| super::file::FileError::Create(path.clone(), e))
        }) {
            let _ = std::fs::remove_file(&tmp);
            return Recovered::Failed(format!("{}: {e}", path.display()));
        }
        let frames = &frames[..kept];
        let last = frames.last().map_or(0, |f| f.pts_ns);
        clocks.push(TrackClock {
            arrived_us: Some(t.start_us),
            capture_us: t.capture_us,
            min_offset_us: t.min_offset_us,
        });
        tracks.push(TrackSummary {
            file: name,
            participant: t.participant,
            kind: t.kind,
            codec: t.codec,
            start_us: t.start_us,
            clock: StartClock::Arrival.name().into(),
            arrived_us: t.start_us,
            sender_start_us: None, // set below with the others (`set_starts`)
            duration_ms: last / 1_000_000,
            frames: frames.len() as u64,
            bytes: frames.iter().map(|f| f.data.len() as u64).sum(),
            lost_packets: 0,
            dropped_frames: 0,
        });
    }
    if tracks.is_empty() {
        return Recovered::Nothing;
    }
    set_starts(&mut tracks, &clocks);
    let ended_us = tracks
        .iter()
        .map(|t| t.start_us + t.duration_ms * 1_000)
        .max()
        .unwrap_or(head.started_us)
        .max(head.started_us);
    let summary = SegmentSummary {
        recording: head.recording,
        room: head.room,
        segment: head.segment,
        sfu: head.sfu,
        started_us: head.started_us,
        ended_us,
        tracks,
    };
    let path = dir.join("segment.json");
    let tmp = dir.join("segment.json.tmp");
    let written = serde_json::to_vec_pretty(&summary)
        .map_err(std::io::Error::from)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        return Recovered::Failed(format!("segment.json: {e}"));
    }
    tracing::info!(segment = %dir.display(), files = summary.tracks.len(), "recovered a segment a stopped SFU left unfinished");
    Recovered::Segment(path)
}

/// What [`recover_segment`] made of a directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Its `segment.json`, ready to upload.
    Segment(PathBuf),
    /// Not one frame in any file: the directory can go.
    Nothing,
    /// Something failed (disk full, unreadable): everything stays for the next start.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8_frame(i: u64, key: bool) -> Frame {
        let mut data = if key {
            vec![0x00, 0, 0, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
        } else {
            vec![0x01, 0, 0]
        };
        data.extend(std::iter::repeat_n(i as u8, 300));
        Frame {
            pts_ns: i * 33_333_333,
            keyframe: key,
            size: key.then_some((320, 240)),
            data,
        }
    }

    #[test]
    fn the_frames_of_an_unfinished_file_are_read_back_and_written_as_a_finished_one() {
        let dir = std::env::temp_dir().join(format!("edgemeet-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let frames: Vec<Frame> = (0..200).map(|i| vp8_frame(i, i % 30 == 0)).collect();
        // A finished file reads back whole, pts to the millisecond.
        let done = dir.join("done.webm");
        let mut f = TrackFile::create(&done, RecCodec::Vp8, &frames[0]).unwrap();
        for fr in &frames {
            f.add(fr).unwrap();
        }
        f.finish().unwrap();
        let back = read_frames(&std::fs::read(&done).unwrap(), RecCodec::Vp8);
        assert_eq!(back.len(), 200);
        assert_eq!(
            back[30].pts_ns, 999_000_000,
            "1,000 ms at the file's 1 ms time scale"
        );
        assert!(back[30].keyframe && !back[31].keyframe);
        assert_eq!(back[7].data, frames[7].data);
        // Killed mid-file: never finished, and cut short in the middle of a block.
        let bytes = std::fs::read(&done).unwrap();
        let cut = bytes.len() * 2 / 3;
        let part = read_frames(&bytes[..cut], RecCodec::Vp8);
        assert!(
            part.len() > 100 && part.len() < 200,
            "{} frames",
            part.len()
        );
        assert!(part.iter().zip(&frames).all(|(a, b)| a.data == b.data));

        // A segment dir as the recorder leaves it when killed: recovered into a segment.json.
        let seg = dir.join("rec").join("sfu-1-5");
        std::fs::create_dir_all(&seg).unwrap();
        let head = SegmentHead {
            recording: "rec".into(),
            room: "r".into(),
            segment: "sfu-1-5".into(),
            sfu: "sfu-1".into(),
            started_us: 5_000,
        };
        std::fs::write(seg.join(PART_FILE), serde_json::to_vec(&head).unwrap()).unwrap();
        std::fs::write(seg.join("001-video.webm"), &bytes[..cut]).unwrap();
        let side = TrackHead {
            participant: "p1".into(),
            kind: "video".into(),
            codec: "vp8".into(),
            start_us: 6_000,
            // Sender reports had come: captured on the sender's clock at 1,000, offset 4,000.
            capture_us: Some(1_000),
            min_offset_us: Some(4_000),
        };
        std::fs::write(
            seg.join("001-video.webm.json"),
            serde_json::to_vec(&side).unwrap(),
        )
        .unwrap();
        // A file with no frame at all is dropped.
        std::fs::write(seg.join("002-audio.webm"), &bytes[..40]).unwrap();
        let side = TrackHead {
            codec: "opus".into(),
            kind: "audio".into(),
            ..side
        };
        std::fs::write(
            seg.join("002-audio.webm.json"),
            serde_json::to_vec(&side).unwrap(),
        )
        .unwrap();
        let Recovered::Segment(summary_path) = recover_segment(&seg) else {
            panic!("recovered")
        };
        let s: SegmentSummary =
            serde_json::from_slice(&std::fs::read(summary_path).unwrap()).unwrap();
        assert_eq!(s.tracks.len(), 1);
        assert_eq!(s.tracks[0].frames, part.len() as u64);
        assert_eq!(s.tracks[0].participant, "p1");
        assert_eq!(s.tracks[0].arrived_us, 6_000);
        assert_eq!(
            (s.tracks[0].start_us, s.tracks[0].clock.as_str()),
            (5_000, "sender-reports")
        );
        // The rewritten file reads back finished: every frame, and cues now.
        let fixed = std::fs::read(seg.join("001-video.webm")).unwrap();
        assert_eq!(read_frames(&fixed, RecCodec::Vp8).len(), part.len());
        assert!(fixed.windows(4).any(|w| w == [0x1c, 0x53, 0xbb, 0x6b]));
        // Garbage reads as nothing, never a panic.
        for junk in [
            &[][..],
            &[0xff; 64][..],
            &[0x1a, 0x45, 0xdf, 0xa3, 0x01][..],
            &bytes[..7],
        ] {
            let _ = read_frames(junk, RecCodec::Opus);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
