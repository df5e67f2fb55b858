//! What the SFU reads from a browser's offer besides what webrtc-rs uses (pure, unit-tested):
//! which track carries what, the id of the audio-level header extension, and the ids of the
//! absolute-capture-time extension (in an offer: what the browser sends; in its answer to ours:
//! what we may send it).
//!
//! The browser's publishing offer has its m-lines in a fixed order (see `client/src/call.rs`):
//! microphone, camera, screen, screen audio. A track is named by the track id of its `a=msid` line,
//! which is what webrtc-rs reports as the remote track's id.

/// What a published track is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Mic,
    Camera,
    Screen,
    ScreenAudio,
}

impl TrackKind {
    pub fn name(self) -> &'static str {
        match self {
            TrackKind::Mic => "audio",
            TrackKind::Camera => "video",
            TrackKind::Screen => "screen",
            TrackKind::ScreenAudio => "screen_audio",
        }
    }

    pub fn is_audio(self) -> bool {
        matches!(self, TrackKind::Mic | TrackKind::ScreenAudio)
    }

    /// The stream (tile) the track belongs to on subscribers: the camera and microphone share
    /// the publisher's id; the screen has its own.
    pub fn stream_id(self, publisher: &str) -> String {
        match self {
            TrackKind::Mic | TrackKind::Camera => publisher.to_string(),
            TrackKind::Screen | TrackKind::ScreenAudio => format!("{publisher}~screen"),
        }
    }
}

/// The absolute-capture-time RTP header extension (capture time on the sender's clock, per
/// frame): forwarded as it came, so a receiver can tell how old a frame is when it shows it.
pub use edgemeet_shared::health::ABS_CAPTURE_TIME_URI;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferLayout {
    /// `a=extmap` id of RFC 6464 audio levels in the first audio section.
    pub audio_level_id: Option<u8>,
    /// `a=extmap` id of [`ABS_CAPTURE_TIME_URI`] in the audio and in the video sections (None
    /// when absent, or when two sections disagree: then it is not used).
    pub capture_ids: [Option<u8>; 2],
    /// (msid track id, kind) per sending m-line.
    pub tracks: Vec<(String, TrackKind)>,
}

impl OfferLayout {
    /// The kind of the track with this id; otherwise by media kind (a peer with another layout).
    pub fn kind_of(&self, track_id: &str, audio: bool) -> TrackKind {
        self.tracks
            .iter()
            .find(|(t, _)| t == track_id)
            .map(|(_, k)| *k)
            .unwrap_or(if audio {
                TrackKind::Mic
            } else {
                TrackKind::Camera
            })
    }
}

pub fn parse(sdp: &str) -> OfferLayout {
    let mut out = OfferLayout::default();
    let mut index = 0usize;
    let mut section: Option<(bool, Option<String>)> = None; // (audio, msid track)
                                                            // Per kind (audio, video): the id seen, and whether sections disagreed.
    let mut capture: [(Option<u8>, bool); 2] = [(None, false); 2];
    let finish = |s: Option<(bool, Option<String>)>, index: &mut usize, out: &mut OfferLayout| {
        if let Some((audio, track)) = s {
            let kind = match (*index, audio) {
                (2, false) => TrackKind::Screen,
                (3, true) => TrackKind::ScreenAudio,
                (_, true) => TrackKind::Mic,
                (_, false) => TrackKind::Camera,
            };
            if let Some(t) = track {
                out.tracks.push((t, kind));
            }
            *index += 1;
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            finish(section.take(), &mut index, &mut out);
            section = Some((m.starts_with("audio"), None));
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            if let Some(s) = section.as_mut() {
                s.1 = msid.split_whitespace().nth(1).map(String::from);
            }
        } else if let Some(ext) = line.strip_prefix("a=extmap:") {
            let audio = section.as_ref().is_some_and(|s| s.0);
            let mut parts = ext.split_whitespace();
            let id = parts
                .next()
                .and_then(|i| i.split('/').next()?.parse::<u8>().ok());
            match parts.next() {
                Some("urn:ietf:params:rtp-hdrext:ssrc-audio-level")
                    if audio && out.audio_level_id.is_none() =>
                {
                    out.audio_level_id = id.filter(|i| (1..=14).contains(i));
                }
                // One-byte (1–14) or two-byte (15–255) ids: the engine writes either form.
                Some(ABS_CAPTURE_TIME_URI) if section.is_some() => {
                    let id = id.filter(|i| *i >= 1);
                    let c = &mut capture[usize::from(!audio)];
                    match (c.0, id) {
                        (None, Some(i)) if !c.1 => c.0 = Some(i),
                        (Some(a), Some(b)) if a == b => {}
                        _ => *c = (None, true),
                    }
                }
                _ => {}
            }
        }
    }
    finish(section.take(), &mut index, &mut out);
    out.capture_ids = [capture[0].0, capture[1].0];
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendonly\r\na=msid:s1 mic-1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=msid:s1 cam-1\r\n\
a=rid:q send\r\na=simulcast:send q;h;f\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:- scr-1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=msid:- scra-1\r\n";

    #[test]
    fn reads_the_tracks_and_the_audio_level_id() {
        let l = parse(OFFER);
        assert_eq!(l.audio_level_id, Some(1));
        assert_eq!(
            l.tracks,
            vec![
                ("mic-1".to_string(), TrackKind::Mic),
                ("cam-1".to_string(), TrackKind::Camera),
                ("scr-1".to_string(), TrackKind::Screen),
                ("scra-1".to_string(), TrackKind::ScreenAudio),
            ]
        );
        assert_eq!(l.kind_of("scr-1", false), TrackKind::Screen);
        assert_eq!(l.kind_of("unknown", false), TrackKind::Camera);
        assert_eq!(l.kind_of("unknown", true), TrackKind::Mic);
    }

    #[test]
    fn reads_the_capture_time_ids_per_kind_and_drops_ones_sections_disagree_on() {
        let ext = |id: u8| format!("a=extmap:{id} {ABS_CAPTURE_TIME_URI}\r\n");
        let sdp = format!(
            "m=audio 9 x\r\n{}m=video 9 x\r\n{}m=video 9 x\r\n{}m=audio 9 x\r\n",
            ext(7),
            ext(9),
            ext(9)
        );
        assert_eq!(parse(&sdp).capture_ids, [Some(7), Some(9)]);
        // The audio sections disagree (7, then 8): not used for audio.
        let sdp = format!("m=audio 9 x\r\n{}m=audio 9 x\r\n{}", ext(7), ext(8));
        assert_eq!(parse(&sdp).capture_ids, [None, None]);
        // A two-byte id is used; one before any section, or 0, is not.
        let sdp = format!("{}m=video 9 x\r\n{}", ext(3), ext(15));
        assert_eq!(parse(&sdp).capture_ids, [None, Some(15)]);
        let sdp = format!("m=video 9 x\r\n{}", ext(0));
        assert_eq!(parse(&sdp).capture_ids, [None, None]);
        assert_eq!(parse(OFFER).capture_ids, [None, None]);
    }

    #[test]
    fn junk_gives_an_empty_layout() {
        assert_eq!(parse("hello"), OfferLayout::default());
        let l = parse("m=audio 9 x\r\na=extmap:99 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n");
        assert_eq!(l.audio_level_id, None, "ids above 14 are not one-byte ids");
    }
}
