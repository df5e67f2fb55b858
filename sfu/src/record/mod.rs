//! Recording: each recorded track's packets leave the media worker's packet path as one message
//! on a channel (a reference-counted payload, no copy) to a recorder thread of its own, which
//! reorders them, rebuilds frames ([`track::TrackRecorder`], pure) and writes one WebM file per
//! track ([`file::TrackFile`]). Nothing on the forwarding path waits for it: when the recorder
//! falls [`MAX_BACKLOG`] packets behind, the worker drops the recording's packets (counted) and
//! the recorder asks for a keyframe once it catches up.
//!
//! On disk, one directory per recording and segment (this SFU's part of the recording; a failover
//! makes another on the new SFU): `{dir}/{recording}/{segment}/NNN-{kind}.webm`, and when the
//! segment ends `segment.json` (see [`SegmentSummary`]), written last.

pub mod file;
pub mod recover;
pub mod track;
pub mod upload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use file::TrackFile;
use track::{RecCodec, RecOutput, RecPacket, RecStats, TrackClock, TrackRecorder};

/// Packets queued for the recorder thread at most; more are dropped (and counted).
pub const MAX_BACKLOG: usize = 8_192;

/// The wall clock, µs since the Unix epoch.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What the recorder thread is told, in order.
#[derive(Debug)]
pub enum RecMsg {
    /// Record track `key` (unique on this SFU) of `participant` for `recording` in `room`.
    Track {
        key: u64,
        recording: String,
        room: String,
        participant: String,
        kind: &'static str,
        codec: RecCodec,
    },
    /// One of its packets (as forwarded), arrived at `at_us` (wall clock).
    Packet {
        key: u64,
        at_us: u64,
        pkt: RecPacket,
    },
    /// An RTCP sender report of its publisher for source `source` of it, arrived at `at_us`
    /// (wall clock): the sender's clock (NTP µs) when its RTP clock read `rtp_ts` (as forwarded
    /// to the recorder).
    SenderReport {
        key: u64,
        at_us: u64,
        ntp_us: u64,
        rtp_ts: u32,
        source: u32,
    },
    /// Its packets come from source `source` from now on (the forwarder switched layers).
    Source { key: u64, source: u32 },
    /// Its file ends.
    EndTrack { key: u64 },
    /// Packets of it were held back upstream (a host stopped it): what comes next may refer to
    /// frames the recorder never saw.
    Gap { key: u64 },
    /// This SFU's part of `recording` in `room` ends: `segment.json` is written.
    End { recording: String, room: String },
    /// Finish everything (the SFU stops).
    Stop,
}

pub use edgemeet_shared::recording::{SegmentSummary, TrackSummary};

/// Called on the recorder thread with each segment written (its `segment.json` and contents).
pub type SegmentDone = Box<dyn Fn(&Path, &SegmentSummary) + Send>;

/// The media worker's side: sends, counts the backlog.
pub struct RecorderHandle {
    tx: mpsc::Sender<RecMsg>,
    backlog: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RecorderHandle {
    /// A packet for the recorder, unless it is too far behind (then false: dropped).
    pub fn packet(&self, key: u64, at_us: u64, pkt: RecPacket) -> bool {
        if self.backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
            return false;
        }
        self.backlog.fetch_add(1, Ordering::Relaxed);
        self.tx.send(RecMsg::Packet { key, at_us, pkt }).is_ok()
    }

    /// A control message (never dropped).
    pub fn send(&self, msg: RecMsg) {
        let _ = self.tx.send(msg);
    }

    /// Finishes every file and segment, and waits for the thread.
    pub fn stop(mut self) {
        let _ = self.tx.send(RecMsg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Recorded {
    recording: String,
    room: String,
    participant: String,
    kind: &'static str,
    rec: TrackRecorder,
    file: Option<TrackFile>,
    name: String,
    dir: PathBuf,
    failed: bool,
    /// What `segment.part.json` says (written with the segment's first file): a segment a
    /// killed SFU leaves is recovered from it at the next start.
    head: recover::SegmentHead,
}

struct Segment {
    name: String,
    dir: PathBuf,
    started_us: u64,
    next_file: u32,
    tracks: Vec<TrackSummary>,
    /// `tracks[i]`'s clock, aligned when the segment ends.
    clocks: Vec<TrackClock>,
}

/// The recorder thread's state.
struct Recorder {
    dir: PathBuf,
    sfu: String,
    tracks: HashMap<u64, Recorded>,
    /// (recording, room) → this SFU's segment of it.
    segments: HashMap<(String, String), Segment>,
    backlog: Arc<AtomicUsize>,
    /// Asks the worker for a keyframe of a recorded track.
    keyframe: Box<dyn Fn(u64) + Send>,
    /// Told of each segment written (its `segment.json` path and contents).
    done: SegmentDone,
    /// The worker's clock: packets' arrival times and this thread's deadlines are on one time
    /// line (the wall clock when the worker started, plus a monotonic clock since).
    epoch: Instant,
    wall_epoch_us: u64,
}

/// Starts a recorder thread writing under `dir`. `keyframe(key)` is called (on that thread)
/// when a track needs a keyframe; `done` when a segment is complete on disk.
pub fn spawn(
    dir: PathBuf,
    sfu: String,
    clock: (Instant, u64),
    keyframe: Box<dyn Fn(u64) + Send>,
    done: SegmentDone,
) -> std::io::Result<RecorderHandle> {
    let (tx, rx) = mpsc::channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    let mut r = Recorder {
        dir,
        sfu,
        tracks: HashMap::new(),
        segments: HashMap::new(),
        backlog: backlog.clone(),
        keyframe,
        done,
        epoch: clock.0,
        wall_epoch_us: clock.1,
    };
    let thread = std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || r.run(rx))?;
    Ok(RecorderHandle {
        tx,
        backlog,
        thread: Some(thread),
    })
}

fn codec_name(c: RecCodec) -> &'static str {
    match c {
        RecCodec::Opus => "opus",
        RecCodec::Vp8 => "vp8",
    }
}

/// A name safe as one path component (ids come from the edge, signed, but still).
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect()
}

/// `{file}.json` beside a track's file: what a restart after kill -9 needs to finish it.
fn write_sidecar(t: &Recorded) -> std::io::Result<()> {
    let clock = t.rec.clock();
    let side = recover::TrackHead {
        participant: t.participant.clone(),
        kind: t.kind.to_string(),
        codec: codec_name(t.rec.codec()).to_string(),
        start_us: t.rec.start_us().unwrap_or(0),
        capture_us: clock.capture_us,
        min_offset_us: clock.min_offset_us,
    };
    let path = t.dir.join(format!("{}.json", t.name));
    let tmp = t.dir.join(format!("{}.json.tmp", t.name));
    std::fs::write(&tmp, serde_json::to_vec(&side)?)?;
    std::fs::rename(&tmp, &path)
}

impl Recorder {
    /// Now, on the worker's time line (µs).
    fn now(&self) -> u64 {
        self.wall_epoch_us + self.epoch.elapsed().as_micros() as u64
    }

    fn run(&mut self, rx: mpsc::Receiver<RecMsg>) {
        loop {
            let wait = self
                .tracks
                .values()
                .filter_map(|t| t.rec.poll_timeout())
                .min()
                .map(|t| Duration::from_micros(t.saturating_sub(self.now())))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            match rx.recv_timeout(wait) {
                Ok(RecMsg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.stop_all();
                    return;
                }
                Ok(msg) => self.handle(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = self.now();
            let due: Vec<u64> = self
                .tracks
                .iter()
                .filter(|(_, t)| t.rec.poll_timeout().is_some_and(|d| d <= now))
                .map(|(k, _)| *k)
                .collect();
            for key in due {
                if let Some(t) = self.tracks.get_mut(&key) {
                    t.rec.handle_timeout(now);
                }
                self.drain(key);
            }
        }
    }

    fn handle(&mut self, msg: RecMsg) {
        match msg {
            RecMsg::Track {
                key,
                recording,
                room,
                participant,
                kind,
                codec,
            } => {
                let now = self.now();
                let seg_key = (recording.clone(), room.clone());
                let seg = self.segments.entry(seg_key).or_insert_with(|| {
                    let name = format!("{}-{}", safe(&self.sfu), now / 1_000);
                    let dir = self.dir.join(safe(&recording)).join(&name);
                    Segment {
                        name,
                        dir,
                        started_us: now,
                        next_file: 1,
                        tracks: Vec::new(),
                        clocks: Vec::new(),
                    }
                });
                let name = format!("{:03}-{}.webm", seg.next_file, safe(kind));
                seg.next_file += 1;
                let dir = seg.dir.clone();
                let head = recover::SegmentHead {
                    recording: recording.clone(),
                    room: room.clone(),
                    segment: seg.name.clone(),
                    sfu: self.sfu.clone(),
                    started_us: seg.started_us,
                };
                if let Some(old) = self.tracks.remove(&key) {
                    self.finish_track(key, old);
                }
                self.tracks.insert(
                    key,
                    Recorded {
                        recording,
                        room,
                        participant,
                        kind,
                        rec: TrackRecorder::new(codec),
                        file: None,
                        name,
                        dir,
                        failed: false,
                        head,
                    },
                );
            }
            RecMsg::Packet { key, at_us, pkt } => {
                self.backlog.fetch_sub(1, Ordering::Relaxed);
                if let Some(t) = self.tracks.get_mut(&key) {
                    t.rec.handle_packet(at_us, pkt);
                    self.drain(key);
                }
            }
            RecMsg::SenderReport {
                key,
                at_us,
                ntp_us,
                rtp_ts,
                source,
            } => {
                if let Some(t) = self.tracks.get_mut(&key) {
                    let before = t.rec.clock();
                    t.rec.handle_sender_report(at_us, ntp_us, rtp_ts, source);
                    // A restart after kill -9 aligns by what the sidecar says.
                    if t.file.is_some() && t.rec.clock() != before {
                        if let Err(e) = write_sidecar(t) {
                            tracing::warn!(file = %t.name, error = %e, "updating a recording's sidecar failed");
                        }
                    }
                }
            }
            RecMsg::Source { key, source } => {
                if let Some(t) = self.tracks.get_mut(&key) {
                    t.rec.handle_source(source);
                }
            }
            RecMsg::Gap { key } => {
                let now = self.now();
                if let Some(t) = self.tracks.get_mut(&key) {
                    t.rec.mark_gap(now);
                }
                self.drain(key);
            }
            RecMsg::EndTrack { key } => {
                if let Some(t) = self.tracks.remove(&key) {
                    self.finish_track(key, t);
                }
            }
            RecMsg::End { recording, room } => self.end_segment(&recording, &room),
            RecMsg::Stop => {}
        }
    }

    /// Performs what a track's recorder asked for: frames into its file, keyframe requests.
    fn drain(&mut self, key: u64) {
        let Some(t) = self.tracks.get_mut(&key) else {
            return;
        };
        while let Some(out) = t.rec.poll_output() {
            match out {
                RecOutput::KeyframeWanted => (self.keyframe)(key),
                RecOutput::Frame(f) if !t.failed => {
                    let written = match t.file.as_mut() {
                        Some(file) => file.add(&f),
                        None => std::fs::create_dir_all(&t.dir)
                            .and_then(|()| {
                                // What a restart needs to finish this file if the SFU is killed.
                                let part = t.dir.join(recover::PART_FILE);
                                if !part.exists() {
                                    std::fs::write(&part, serde_json::to_vec(&t.head)?)?;
                                }
                                write_sidecar(t)
                            })
                            .map_err(|e| file::FileError::Create(t.dir.clone(), e))
                            .and_then(|()| {
                                TrackFile::create(&t.dir.join(&t.name), t.rec.codec(), &f)
                            })
                            .and_then(|mut file| {
                                file.add(&f)?;
                                t.file = Some(file);
                                Ok(())
                            }),
                    };
                    if let Err(e) = written {
                        tracing::error!(file = %t.name, error = %e, "recording a track failed");
                        t.failed = true;
                    }
                }
                RecOutput::Frame(_) => {}
            }
        }
    }

    fn finish_track(&mut self, key: u64, mut t: Recorded) {
        t.rec.finish(self.now());
        self.tracks.insert(key, t);
        self.drain(key);
        let t = self.tracks.remove(&key).expect("just put back");
        let Some(file) = t.file else {
            return; // not one frame: no file
        };
        if let Err(e) = file.finish() {
            tracing::error!(file = %t.name, error = %e, "finishing a recorded file failed");
            return;
        }
        let stats: RecStats = t.rec.stats;
        let arrived_us = t.rec.start_us().unwrap_or(0);
        let summary = TrackSummary {
            file: t.name,
            participant: t.participant,
            kind: t.kind.to_string(),
            codec: codec_name(t.rec.codec()).to_string(),
            start_us: arrived_us,
            clock: track::StartClock::Arrival.name().into(),
            arrived_us,
            sender_start_us: None, // set with the segment's other tracks (`set_starts`)
            duration_ms: t.rec.duration_ns() / 1_000_000,
            frames: stats.frames,
            bytes: stats.bytes,
            lost_packets: stats.lost_packets,
            dropped_frames: stats.dropped_frames,
        };
        if let Some(seg) = self.segments.get_mut(&(t.recording, t.room)) {
            seg.tracks.push(summary);
            seg.clocks.push(t.rec.clock());
        }
    }

    fn end_segment(&mut self, recording: &str, room: &str) {
        let keys: Vec<u64> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.recording == recording && t.room == room)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(t) = self.tracks.remove(&key) {
                self.finish_track(key, t);
            }
        }
        let Some(mut seg) = self
            .segments
            .remove(&(recording.to_string(), room.to_string()))
        else {
            return;
        };
        track::set_starts(&mut seg.tracks, &seg.clocks);
        for t in &seg.tracks {
            // Why a track was placed by its arrival, not its sender's clock: no report of its
            // first frame's source, or a start too far from the arrival (`track::align`) — the
            // two starts `align` judged, side by side.
            if t.clock != track::StartClock::SenderReports.name() {
                tracing::info!(
                    recording, room, file = %t.file, participant = %t.participant,
                    arrived_us = t.arrived_us, sender_start_us = ?t.sender_start_us,
                    "recorded track placed by its arrival"
                );
            }
        }
        let summary = SegmentSummary {
            recording: recording.into(),
            room: room.into(),
            segment: seg.name,
            sfu: self.sfu.clone(),
            started_us: seg.started_us,
            ended_us: self.now(),
            tracks: seg.tracks,
        };
        let path = seg.dir.join("segment.json");
        let written = std::fs::create_dir_all(&seg.dir).and_then(|()| {
            let tmp = seg.dir.join("segment.json.tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec_pretty(&summary).unwrap_or_default(),
            )?;
            std::fs::rename(&tmp, &path)
        });
        match written {
            Ok(()) => {
                tracing::info!(
                    recording,
                    room,
                    segment = %summary.segment,
                    files = summary.tracks.len(),
                    "recording segment written"
                );
                (self.done)(&path, &summary);
            }
            Err(e) => tracing::error!(recording, room, error = %e, "writing segment.json failed"),
        }
    }

    fn stop_all(&mut self) {
        let segs: Vec<(String, String)> = self.segments.keys().cloned().collect();
        for (recording, room) in segs {
            self.end_segment(&recording, &room);
        }
    }
}
