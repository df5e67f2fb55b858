//! The pre-join network check (issue 17), pure: the wire types of a probe, and what the page
//! measured on each path to the room's SFU put into plain words.
//!
//! How a check runs (the page: `client/src/netcheck.rs`; the edge: `POST /api/rooms/{room}/probe`;
//! the SFU: `POST /v1/probe`): the page makes one PeerConnection per path — direct (no ICE servers:
//! UDP straight to the SFU), relay over UDP and relay over TCP (`iceTransportPolicy: "relay"` with
//! only the TURN URLs of that transport) — each offering one send-only video section, and sends the
//! offers together. The edge picks the SFU a join would get (the room's, or the nearest), asks it
//! for a throwaway session per offer (no room, nothing forwarded, closed after
//! [`PROBE_LIFETIME_SECS`]) and answers with the SFU's answers and TURN credentials valid for
//! [`PROBE_TURN_TTL_SECS`]. Each path that connects within [`PATH_TIMEOUT_MS`] gives its round-trip
//! time (ICE's STUN checks); then a video track goes over the path the call would take for
//! [`UPLOAD_WINDOW_MS`] and the browser's own bandwidth estimate (`availableOutgoingBitrate`,
//! from the SFU's transport-wide congestion feedback) is the upload figure. [`verdict`] words it.
//!
//! Direct TCP (ICE-TCP) is not offered by this SFU: a network without UDP reaches it through the
//! relay over TCP, and the check says so.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, WireError};
use crate::media::CAMERA_SIMULCAST;

/// Offers in one probe: direct, relay over UDP, relay over TCP.
pub const MAX_PROBE_OFFERS: usize = 3;
/// A probe's offer is one media section: anything bigger is not ours.
pub const MAX_PROBE_SDP_BYTES: usize = 16 * 1024;
/// The SFU closes a probe session this long after making it, whatever the page does.
pub const PROBE_LIFETIME_SECS: u64 = 20;
/// TURN credentials handed out with a probe live this long (a member's live an hour).
pub const PROBE_TURN_TTL_SECS: u64 = 120;
/// A path not connected after this long counts as blocked.
pub const PATH_TIMEOUT_MS: u32 = 6_000;
/// How long video goes over the chosen path for the upload estimate.
pub const UPLOAD_WINDOW_MS: u32 = 3_000;
/// A round trip above this to the SFU is felt in a conversation.
pub const SLOW_RTT_MS: u32 = 250;

/// The upload all three camera layers need together.
pub fn upload_full_kbps() -> u32 {
    CAMERA_SIMULCAST
        .iter()
        .map(|l| l.max_bitrate_bps / 1000)
        .sum()
}

/// The upload the two lower layers need: below it others see only the smallest picture.
pub fn upload_low_kbps() -> u32 {
    CAMERA_SIMULCAST[..2]
        .iter()
        .map(|l| l.max_bitrate_bps / 1000)
        .sum()
}

/// Browser → edge, and edge → SFU (`POST /v1/probe`): one offer per path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    pub offers: Vec<String>,
}

/// SFU → edge: an answer per offer, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeAnswers {
    pub answers: Vec<String>,
}

/// Edge → browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReply {
    pub answers: Vec<String>,
    /// `RTCIceServer`s: the TURN URLs with short-lived credentials (empty without TURN).
    pub ice_servers: serde_json::Value,
    /// The SFU's region, as the registry names it.
    pub region: String,
}

/// Refuses a probe that is not 1–3 plausible offers before anyone spends work on it.
pub fn check_probe(req: &ProbeRequest) -> Result<(), WireError> {
    if req.offers.is_empty() || req.offers.len() > MAX_PROBE_OFFERS {
        return Err(WireError {
            code: ErrorCode::BadRequest,
            message: format!(
                "a connection check sends 1 to {MAX_PROBE_OFFERS} offers, not {}",
                req.offers.len()
            ),
        });
    }
    for sdp in &req.offers {
        if sdp.len() > MAX_PROBE_SDP_BYTES {
            return Err(WireError {
                code: ErrorCode::BadSdp,
                message: format!(
                    "a connection check's offer is at most {MAX_PROBE_SDP_BYTES} bytes"
                ),
            });
        }
        crate::protocol::check_sdp(sdp)?;
    }
    Ok(())
}

/// The three ways a page can reach the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// UDP straight to the SFU.
    Direct,
    /// Through the TURN relay, UDP to it.
    RelayUdp,
    /// Through the TURN relay, TCP to it.
    RelayTcp,
}

impl PathKind {
    pub const ALL: [PathKind; 3] = [PathKind::Direct, PathKind::RelayUdp, PathKind::RelayTcp];

    /// Its name in the details.
    pub fn label(self) -> &'static str {
        match self {
            PathKind::Direct => "Direct (UDP)",
            PathKind::RelayUdp => "Relay over UDP",
            PathKind::RelayTcp => "Relay over TCP",
        }
    }
}

/// What one path did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PathOutcome {
    /// Connected (ICE and DTLS); the round trip of its STUN checks when the browser had one.
    Works { rtt_ms: Option<u32> },
    /// Did not connect within [`PATH_TIMEOUT_MS`].
    Blocked,
    /// Not tried: the server has no relay of that transport.
    NotSetUp,
}

impl PathOutcome {
    pub fn works(&self) -> bool {
        matches!(self, PathOutcome::Works { .. })
    }
}

/// Everything a check measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub region: String,
    pub direct: PathOutcome,
    pub relay_udp: PathOutcome,
    pub relay_tcp: PathOutcome,
    /// The browser's upload estimate over the chosen path, kbit/s (None: not measured).
    pub upload_kbps: Option<u32>,
}

impl Observed {
    pub fn outcome(&self, path: PathKind) -> &PathOutcome {
        match path {
            PathKind::Direct => &self.direct,
            PathKind::RelayUdp => &self.relay_udp,
            PathKind::RelayTcp => &self.relay_tcp,
        }
    }

    /// The path the call takes: as the browser's ICE prefers them (a direct pair over a relayed
    /// one, UDP to the relay over TCP).
    pub fn chosen(&self) -> Option<PathKind> {
        PathKind::ALL.into_iter().find(|p| self.outcome(*p).works())
    }
}

/// How it looks, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// Video will work well.
    Good,
    /// It works, with less: lower quality or more delay.
    Fair,
    /// Only through the relay.
    Relayed,
    /// Nothing connects.
    Blocked,
}

/// The check in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub grade: Grade,
    pub headline: String,
    /// The path the call will take.
    pub path: Option<PathKind>,
    /// One line per finding, for "Details".
    pub details: Vec<String>,
}

/// `2.4 Mbit/s`, `650 kbit/s`.
pub fn rate_words(kbps: u32) -> String {
    if kbps >= 1000 {
        format!("{:.1} Mbit/s", kbps as f64 / 1000.0)
    } else {
        format!("{kbps} kbit/s")
    }
}

/// `3 ms`; a round trip the browser rounds to 0 (loopback) is `under 1 ms`.
pub fn rtt_words(ms: u32) -> String {
    if ms == 0 {
        "under 1 ms".into()
    } else {
        format!("{ms} ms")
    }
}

/// What a check measured, in plain words.
pub fn verdict(o: &Observed) -> Verdict {
    let path = o.chosen();
    let rtt = path.and_then(|p| match o.outcome(p) {
        PathOutcome::Works { rtt_ms } => *rtt_ms,
        _ => None,
    });
    let upload = o.upload_kbps;
    let (grade, headline) = match path {
        None => {
            let no_relay = o.relay_udp == PathOutcome::NotSetUp && o.relay_tcp == PathOutcome::NotSetUp;
            (
                Grade::Blocked,
                if no_relay {
                    "Your network blocks the connection to the media server, and this server has no relay: audio and video will not connect from here. Try another network.".to_string()
                } else {
                    "Your network blocks the call: audio and video will not connect from here. Try another network, or ask its administrator to allow UDP.".to_string()
                },
            )
        }
        // UDP is known blocked only if the relay over UDP was tried.
        Some(PathKind::RelayTcp) if o.relay_udp == PathOutcome::NotSetUp => (
            Grade::Relayed,
            "Direct connections are blocked: we will relay your call over TCP, expect more delay."
                .to_string(),
        ),
        Some(PathKind::RelayTcp) => (
            Grade::Relayed,
            "UDP is blocked: we will relay your call over TCP, expect more delay.".to_string(),
        ),
        Some(PathKind::RelayUdp) => (
            Grade::Relayed,
            "Direct connections are blocked: we will relay your call, expect more delay."
                .to_string(),
        ),
        Some(PathKind::Direct) => match (rtt, upload) {
            (Some(r), _) if r > SLOW_RTT_MS => (
                Grade::Fair,
                format!("Your connection to the media server is slow ({r} ms there and back): expect some delay."),
            ),
            (_, Some(u)) if u < upload_low_kbps() => (
                Grade::Fair,
                format!("Your upload is slow ({}): others may see you only in low quality. Audio will work.", rate_words(u)),
            ),
            (_, Some(u)) if u < upload_full_kbps() => (
                Grade::Fair,
                format!("Video will work, in lower quality: your upload reached {} in the test.", rate_words(u)),
            ),
            (_, Some(_)) => (Grade::Good, "Video will work well.".to_string()),
            (_, None) => (
                Grade::Good,
                "Your connection reaches the media server directly.".to_string(),
            ),
        },
    };
    let mut details = vec![format!("Media server: {}", o.region)];
    for p in PathKind::ALL {
        let line = match o.outcome(p) {
            PathOutcome::Works { rtt_ms: Some(r) } => {
                format!("{}: works, {} there and back", p.label(), rtt_words(*r))
            }
            PathOutcome::Works { rtt_ms: None } => format!("{}: works", p.label()),
            PathOutcome::Blocked => format!("{}: blocked", p.label()),
            PathOutcome::NotSetUp => format!("{}: this server has no relay for it", p.label()),
        };
        details.push(line);
        if p == PathKind::Direct {
            details.push(if o.relay_tcp.works() {
                "Direct (TCP): this server offers none; the relay over TCP stands in".into()
            } else {
                "Direct (TCP): this server offers none".into()
            });
        }
    }
    details.push(match upload {
        Some(u) => format!(
            "Upload: at least {} (the browser's estimate after {} s of video; all three camera layers need {})",
            rate_words(u),
            UPLOAD_WINDOW_MS / 1000,
            rate_words(upload_full_kbps())
        ),
        None => "Upload: not measured".into(),
    });
    if let Some(p) = path {
        details.push(format!(
            "Your call will go: {}",
            match p {
                PathKind::Direct => "straight to the media server over UDP",
                PathKind::RelayUdp => "through the relay, over UDP",
                PathKind::RelayTcp => "through the relay, over TCP",
            }
        ));
    }
    Verdict {
        grade,
        headline,
        path,
        details,
    }
}

/// Which of a probe's TURN URLs a relay path uses: `transport=udp` (or none given: UDP is TURN's
/// default) for [`PathKind::RelayUdp`]; `transport=tcp` or `turns:` for [`PathKind::RelayTcp`].
pub fn urls_for(path: PathKind, urls: &[String]) -> Vec<String> {
    urls.iter()
        .filter(|u| {
            let lower = u.to_ascii_lowercase();
            if !(lower.starts_with("turn:") || lower.starts_with("turns:")) {
                return false;
            }
            let tcp = lower.starts_with("turns:") || lower.contains("transport=tcp");
            match path {
                PathKind::Direct => false,
                PathKind::RelayUdp => !tcp,
                PathKind::RelayTcp => tcp,
            }
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn works(rtt: u32) -> PathOutcome {
        PathOutcome::Works { rtt_ms: Some(rtt) }
    }

    fn observed(
        direct: PathOutcome,
        udp: PathOutcome,
        tcp: PathOutcome,
        up: Option<u32>,
    ) -> Observed {
        Observed {
            region: "eu-west".into(),
            direct,
            relay_udp: udp,
            relay_tcp: tcp,
            upload_kbps: up,
        }
    }

    #[test]
    fn a_direct_path_with_room_for_every_layer_works_well() {
        let v = verdict(&observed(works(3), works(5), works(6), Some(5_900)));
        assert_eq!(v.grade, Grade::Good);
        assert_eq!(v.headline, "Video will work well.");
        assert_eq!(v.path, Some(PathKind::Direct));
        assert!(v
            .details
            .contains(&"Direct (UDP): works, 3 ms there and back".to_string()));
        assert!(v
            .details
            .contains(&"Relay over TCP: works, 6 ms there and back".to_string()));
        let loopback = verdict(&observed(works(0), works(1), works(1), Some(5_900)));
        assert!(loopback
            .details
            .contains(&"Direct (UDP): works, under 1 ms there and back".to_string()));
        assert!(
            v.details
                .iter()
                .any(|d| d.starts_with("Upload: at least 5.9 Mbit/s")),
            "{:?}",
            v.details
        );
        assert_eq!(
            v.details.last().unwrap(),
            "Your call will go: straight to the media server over UDP"
        );
    }

    #[test]
    fn without_udp_to_the_server_the_call_is_relayed_and_the_words_say_which_way() {
        // UDP blocked altogether: only the relay over TCP connects.
        let v = verdict(&observed(
            PathOutcome::Blocked,
            PathOutcome::Blocked,
            works(40),
            Some(1_000),
        ));
        assert_eq!(v.grade, Grade::Relayed);
        assert_eq!(
            v.headline,
            "UDP is blocked: we will relay your call over TCP, expect more delay."
        );
        assert_eq!(v.path, Some(PathKind::RelayTcp));
        // Only the SFU unreachable directly (a relay-only policy, a firewall allowing the relay).
        let v = verdict(&observed(
            PathOutcome::Blocked,
            works(8),
            works(9),
            Some(3_000),
        ));
        assert_eq!(v.grade, Grade::Relayed);
        assert!(v.headline.contains("relay your call"), "{}", v.headline);
        assert_eq!(v.path, Some(PathKind::RelayUdp));
        assert!(v.details.contains(&"Direct (UDP): blocked".to_string()));
        // Relay over UDP never tried (the server has none): UDP is not known to be blocked.
        let v = verdict(&observed(
            PathOutcome::Blocked,
            PathOutcome::NotSetUp,
            works(30),
            Some(3_000),
        ));
        assert_eq!(
            v.headline,
            "Direct connections are blocked: we will relay your call over TCP, expect more delay."
        );
        // Without a working relay over TCP, the details do not promise one.
        let v = verdict(&observed(works(3), works(4), PathOutcome::Blocked, None));
        assert!(v
            .details
            .contains(&"Direct (TCP): this server offers none".to_string()));
    }

    #[test]
    fn nothing_connecting_says_so_and_whether_a_relay_was_there_to_try() {
        let v = verdict(&observed(
            PathOutcome::Blocked,
            PathOutcome::Blocked,
            PathOutcome::Blocked,
            None,
        ));
        assert_eq!(v.grade, Grade::Blocked);
        assert!(v.headline.contains("blocks the call"), "{}", v.headline);
        assert_eq!(v.path, None);
        let v = verdict(&observed(
            PathOutcome::Blocked,
            PathOutcome::NotSetUp,
            PathOutcome::NotSetUp,
            None,
        ));
        assert!(v.headline.contains("has no relay"), "{}", v.headline);
        assert!(v
            .details
            .contains(&"Relay over UDP: this server has no relay for it".to_string()));
    }

    #[test]
    fn a_slow_upload_or_a_long_round_trip_is_fair_with_the_figure_in_words() {
        let full = upload_full_kbps();
        let low = upload_low_kbps();
        assert_eq!((full, low), (2_350, 650));
        let v = verdict(&observed(works(3), works(4), works(4), Some(full - 1)));
        assert_eq!(v.grade, Grade::Fair);
        assert_eq!(
            v.headline,
            "Video will work, in lower quality: your upload reached 2.3 Mbit/s in the test."
        );
        let v = verdict(&observed(works(3), works(4), works(4), Some(300)));
        assert_eq!(v.headline, "Your upload is slow (300 kbit/s): others may see you only in low quality. Audio will work.");
        let v = verdict(&observed(
            works(SLOW_RTT_MS + 1),
            works(4),
            works(4),
            Some(full),
        ));
        assert_eq!(v.grade, Grade::Fair);
        assert!(
            v.headline.contains("251 ms there and back"),
            "{}",
            v.headline
        );
        // Not measured: no claim about video.
        let v = verdict(&observed(works(3), works(4), works(4), None));
        assert_eq!(v.grade, Grade::Good);
        assert!(!v.headline.contains("Video"), "{}", v.headline);
        assert!(v.details.contains(&"Upload: not measured".to_string()));
    }

    #[test]
    fn relay_paths_take_only_their_transports_urls() {
        let urls: Vec<String> = [
            "turn:127.0.0.1:3478?transport=udp",
            "turn:127.0.0.1:3478?transport=tcp",
            "turn:relay.example:3478",
            "turns:relay.example:5349",
            "stun:127.0.0.1:3478",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            urls_for(PathKind::RelayUdp, &urls),
            [
                "turn:127.0.0.1:3478?transport=udp",
                "turn:relay.example:3478"
            ]
        );
        assert_eq!(
            urls_for(PathKind::RelayTcp, &urls),
            [
                "turn:127.0.0.1:3478?transport=tcp",
                "turns:relay.example:5349"
            ]
        );
        assert!(urls_for(PathKind::Direct, &urls).is_empty());
    }

    #[test]
    fn a_probe_is_one_to_three_offers_of_sdp() {
        let sdp =
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n".to_string();
        assert!(check_probe(&ProbeRequest {
            offers: vec![sdp.clone()]
        })
        .is_ok());
        assert!(check_probe(&ProbeRequest {
            offers: vec![sdp.clone(); 3]
        })
        .is_ok());
        for bad in [
            vec![],
            vec![sdp.clone(); 4],
            vec!["hello".to_string()],
            vec![format!("{sdp}{}", "a=x\r\n".repeat(4000))],
        ] {
            let e = check_probe(&ProbeRequest {
                offers: bad.clone(),
            })
            .unwrap_err();
            assert!(
                !e.message.is_empty()
                    && matches!(e.code, ErrorCode::BadRequest | ErrorCode::BadSdp),
                "{bad:?}"
            );
        }
        // Unknown fields are refused (a typo is an error, not an empty probe).
        assert!(serde_json::from_str::<ProbeRequest>(r#"{"offers":[],"x":1}"#).is_err());
    }
}
