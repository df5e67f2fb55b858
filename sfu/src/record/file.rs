//! One track's WebM file, written by libwebm's muxer (the `webm` crate): the muxer the WebM project
//! maintains, used by Chromium's MediaRecorder. In its file mode, finalising a seekable file writes
//! the Cues (one per keyframe cluster), the Duration and the SeekHead, so every browser seeks in it.
//! One file per track: libwebm wants frames in time order across a file's tracks, and a track's
//! frames leave the reorder buffer in order while tracks do not wait for each other.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use thiserror::Error;
use webm::mux::{AudioCodecId, Segment, SegmentBuilder, SegmentMode, Track, VideoCodecId, Writer};

use super::track::{Frame, RecCodec};

#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("the WebM muxer refused {0}: {1:?}")]
    Mux(&'static str, webm::mux::Error),
    #[error("the first video frame must be a keyframe with a picture size")]
    NoPictureSize,
    #[error("the WebM muxer could not finish {0}")]
    Finalize(PathBuf),
}

/// `OpusHead` (RFC 7845 §5.1) for a WebRTC Opus stream: 2 channels, 48 kHz, no pre-skip or gain,
/// channel mapping family 0.
const OPUS_HEAD: [u8; 19] = [
    b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0,
];

pub struct TrackFile {
    path: PathBuf,
    segment: Segment<BufWriter<File>>,
    track: u64,
    frames: u64,
}

impl TrackFile {
    /// Creates the file for a track whose first frame is `first` (for video, a keyframe: its
    /// picture size goes into the track header).
    pub fn create(path: &Path, codec: RecCodec, first: &Frame) -> Result<TrackFile, FileError> {
        let file = File::create(path).map_err(|e| FileError::Create(path.to_path_buf(), e))?;
        let builder = SegmentBuilder::new(Writer::new(BufWriter::new(file)))
            .and_then(|b| b.set_mode(SegmentMode::File))
            .and_then(|b| b.set_writing_app("edgemeet-sfu"))
            .map_err(|e| FileError::Mux("the segment", e))?;
        let (segment, track) = match codec {
            RecCodec::Vp8 => {
                let (w, h) = first.size.ok_or(FileError::NoPictureSize)?;
                let (b, t) = builder
                    .add_video_track(w, h, VideoCodecId::VP8, None)
                    .map_err(|e| FileError::Mux("the video track", e))?;
                (b.build(), t.track_number())
            }
            RecCodec::Opus => {
                let (b, t) = builder
                    .add_audio_track(48_000, 2, AudioCodecId::Opus, None)
                    .map_err(|e| FileError::Mux("the audio track", e))?;
                let b = b
                    .set_codec_private(t, &OPUS_HEAD)
                    .map_err(|e| FileError::Mux("OpusHead", e))?;
                (b.build(), t.track_number())
            }
        };
        Ok(TrackFile {
            path: path.to_path_buf(),
            segment,
            track,
            frames: 0,
        })
    }

    pub fn add(&mut self, f: &Frame) -> Result<(), FileError> {
        self.segment
            .add_frame(self.track, &f.data, f.pts_ns, f.keyframe)
            .map_err(|e| FileError::Mux("a frame", e))?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the cues, duration and seek head, and closes the file.
    pub fn finish(self) -> Result<PathBuf, FileError> {
        let path = self.path;
        let writer = self
            .segment
            .finalize(None)
            .map_err(|_| FileError::Finalize(path.clone()))?;
        let mut out = writer.into_inner();
        std::io::Write::flush(&mut out).map_err(|e| FileError::Create(path.clone(), e))?;
        Ok(path)
    }
}
