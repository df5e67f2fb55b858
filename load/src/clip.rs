//! The publishers' media, encoded once: a VP8 clip per simulcast layer made by libvpx's own
//! `vpxenc` (Debian `vpx-tools`) from a synthetic moving picture, cut into RTP payloads by
//! webrtc-rs's VP8 payloader. Publishers loop the payloads; nothing is encoded while the load runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader;

use crate::LoadError;

/// Frames per second of every clip.
pub const FPS: u32 = 30;
/// Frames in a clip (a keyframe starts each loop).
pub const FRAMES: u32 = 90;
/// RTP payload size limit, before the 8-byte send time each packet carries at its end.
pub const MTU: usize = 1_160;
/// Bytes at the end of every payload: the send time (ns since the Unix epoch on the realtime
/// clock, the clock the kernel stamps the subscribers' datagrams with: [`crate::peer::realtime`]).
pub const STAMP: usize = 8;

/// One simulcast layer's clip (`f` is the 720p one every non-simulcast publisher sends).
#[derive(Clone, Copy, Debug)]
pub struct Layer {
    pub rid: &'static str,
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
}

/// The camera layers, as the browser client sends them (`shared::media::CAMERA_SIMULCAST`) — the
/// top one at the 1.5 Mbit/s of the reference load.
pub const LAYERS: [Layer; 3] = [
    Layer {
        rid: "q",
        width: 320,
        height: 180,
        kbps: 150,
    },
    Layer {
        rid: "h",
        width: 640,
        height: 360,
        kbps: 500,
    },
    Layer {
        rid: "f",
        width: 1280,
        height: 720,
        kbps: 1_500,
    },
];

/// A clip cut into RTP payloads, frame by frame.
pub struct Clip {
    pub frames: Vec<Frame>,
    pub bytes_per_loop: usize,
}

pub struct Frame {
    pub keyframe: bool,
    /// VP8 payloads (descriptor + data), each sent with `STAMP` bytes appended.
    pub payloads: Vec<Bytes>,
}

/// Makes (once; kept in `dir`) and loads the clip of each layer.
pub fn clips(dir: &Path) -> Result<Vec<Clip>, LoadError> {
    std::fs::create_dir_all(dir).map_err(|e| LoadError::Io(dir.display().to_string(), e))?;
    LAYERS
        .iter()
        .map(|l| {
            let path = dir.join(format!(
                "{}-{}x{}-{}k.ivf",
                l.rid, l.width, l.height, l.kbps
            ));
            if !path.exists() {
                encode(l, &path)?;
            }
            load(&path)
        })
        .collect()
}

/// A moving picture with detail (so the encoder spends its bit budget as on a camera): a sliding
/// gradient with a drifting textured square.
fn frame_yuv(l: &Layer, n: u32, out: &mut Vec<u8>) {
    let (w, h) = (l.width as usize, l.height as usize);
    out.clear();
    let mut seed = 0x9e37_79b9_u32 ^ n.wrapping_mul(2_654_435_761);
    let (sq, sx, sy) = (
        h / 3,
        (n as usize * 7) % (w - h / 3),
        (n as usize * 3) % (h - h / 3),
    );
    for y in 0..h {
        for x in 0..w {
            let inside = x >= sx && x < sx + sq && y >= sy && y < sy + sq;
            let base = ((x + y + n as usize * 4) % 200) as u8 + 28;
            let v = if inside {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                base.wrapping_add((seed & 0x0f) as u8).wrapping_sub(8)
            } else {
                base
            };
            out.push(v);
        }
    }
    for plane in 0..2u32 {
        for y in 0..h / 2 {
            for x in 0..w / 2 {
                out.push(((x * 2 + plane as usize * 64 + y + n as usize) % 256) as u8);
            }
        }
    }
}

fn encode(l: &Layer, path: &Path) -> Result<(), LoadError> {
    // This process's own part file: two load tools started together (`cargo xtask load
    // --against`) both make a missing clip; each renames its own whole file into place.
    let tmp = PathBuf::from(format!("{}.{}.part", path.display(), std::process::id()));
    let mut child = Command::new("vpxenc")
        .args([
            "--codec=vp8",
            "--ivf",
            "--rt",
            "--cpu-used=8",
            "--end-usage=cbr",
            "--lag-in-frames=0",
            "--error-resilient=1",
            "--undershoot-pct=95",
            "--buf-initial-sz=500",
            "--buf-optimal-sz=600",
            "--buf-sz=1000",
            "--quiet",
        ])
        .arg(format!("--target-bitrate={}", l.kbps))
        .arg(format!("--kf-min-dist={FRAMES}"))
        .arg(format!("--kf-max-dist={FRAMES}"))
        .arg(format!("--limit={FRAMES}"))
        .arg("-o")
        .arg(&tmp)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| LoadError::Io("vpxenc (Debian package vpx-tools)".into(), e))?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let header = format!(
            "YUV4MPEG2 W{} H{} F{FPS}:1 Ip A1:1 C420jpeg\n",
            l.width, l.height
        );
        let mut buf = Vec::new();
        let io = |e| LoadError::Io("writing to vpxenc".into(), e);
        stdin.write_all(header.as_bytes()).map_err(io)?;
        for n in 0..FRAMES {
            frame_yuv(l, n, &mut buf);
            stdin.write_all(b"FRAME\n").map_err(io)?;
            stdin.write_all(&buf).map_err(io)?;
        }
    }
    let status = child
        .wait()
        .map_err(|e| LoadError::Io("vpxenc".into(), e))?;
    if !status.success() {
        return Err(LoadError::Clip(format!("vpxenc exited with {status}")));
    }
    std::fs::rename(&tmp, path).map_err(|e| LoadError::Io(path.display().to_string(), e))
}

fn load(path: &Path) -> Result<Clip, LoadError> {
    let file =
        std::fs::File::open(path).map_err(|e| LoadError::Io(path.display().to_string(), e))?;
    let (mut reader, _header) = IVFReader::new(std::io::BufReader::new(file))
        .map_err(|e| LoadError::Clip(format!("{}: {e}", path.display())))?;
    let mut payloader = Vp8Payloader::default();
    payloader.enable_picture_id = true;
    let mut frames = Vec::new();
    let mut bytes_per_loop = 0;
    while let Ok((frame, _)) = reader.parse_next_frame() {
        let frame = frame.freeze();
        // VP8 frame tag: bit 0 clear = keyframe.
        let keyframe = frame.first().is_some_and(|b| b & 1 == 0);
        let payloads = payloader
            .payload(MTU, &frame)
            .map_err(|e| LoadError::Clip(format!("{}: {e}", path.display())))?;
        bytes_per_loop += payloads.iter().map(|p| p.len() + STAMP).sum::<usize>();
        frames.push(Frame { keyframe, payloads });
    }
    if frames.is_empty() || !frames[0].keyframe {
        return Err(LoadError::Clip(format!(
            "{}: no frames, or the first is not a keyframe",
            path.display()
        )));
    }
    Ok(Clip {
        frames,
        bytes_per_loop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_has_the_size_of_an_i420_picture_and_moves() {
        let l = LAYERS[0];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        frame_yuv(&l, 0, &mut a);
        frame_yuv(&l, 1, &mut b);
        assert_eq!(a.len(), (l.width * l.height * 3 / 2) as usize);
        assert_ne!(a, b);
    }
}
