//! The room state machine (first cut): who is in the room, their media state, and what to tell whom.
//!
//! Sans-IO: the Room Durable Object feeds it [`Input`]s with the current time and performs the
//! [`Effect`]s it returns (send a frame to one connection, broadcast, close a connection). It never
//! touches a socket or a clock, so every ordering (duplicate joins, reconnects, leaves) is a unit test.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::{
    check_sdp, parse_client_message, ClientMessage, ErrorCode, ParticipantInfo, RoomSnapshot,
    ServerMessage, SfuEvent, TileView, MAX_SCREEN_SHARERS, MAX_VIEWS, PROTOCOL_VERSION,
};
use crate::region::SfuChoice;
use crate::token::{Claims, Grants, Role};
use crate::Millis;

/// Identifies one WebSocket connection (the DO makes these up and tags sockets with them).
pub type ConnId = String;

/// Close code for a connection replaced by a newer one of the same participant.
pub const CLOSE_REPLACED: u16 = 4000;
/// Close code for a client that sent a frame over the size limit (RFC 6455 "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// A participant whose connection dropped (not closed cleanly) stays in the room this long, so a
/// reconnect resumes the session without anyone seeing them leave and join again.
pub const RECONNECT_GRACE_MS: Millis = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A participant with verified `claims` opened connection `conn`.
    Connect { conn: ConnId, claims: Claims },
    /// A text frame arrived on `conn`.
    Frame { conn: ConnId, text: String },
    /// `conn` closed. `clean`: closed on purpose (1000 normal, 1001 going away: tab closed or
    /// navigated away) — the participant leaves now. Otherwise the connection dropped: they stay
    /// for [`RECONNECT_GRACE_MS`] in case they come back.
    Disconnect { conn: ConnId, clean: bool },
    /// Time passed (the DO's alarm): participants away longer than the grace period leave.
    Tick,
    /// The SFU answered `participant`'s offer.
    SfuAnswer {
        participant: String,
        sdp: String,
        id: u64,
    },
    /// The SFU offers `participant` a new session description (tracks came or went).
    SfuOffer { participant: String, sdp: String },
    /// The room's SFU may be gone (a member's media stopped, or a control call could not reach
    /// it): check it, unless a check is already under way.
    SfuSuspect,
    /// The check found the SFU alive.
    SfuHealthy,
    /// The check found the SFU alive but without this room's media (it restarted): everyone sets
    /// media up again on it.
    SfuRestarted,
    /// The check found it gone (or draining): the room's media moves to `choice`.
    SfuReplaced { choice: SfuChoice },
    /// The SFU reported something about the room (dynacast layers, active speaker).
    SfuEvent(SfuEvent),
    /// A call to the SFU for `participant` failed; tell them (and only them).
    SfuFailed {
        participant: String,
        code: ErrorCode,
        message: String,
    },
}

/// What the DO must ask the room's SFU, on behalf of one participant.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuCall {
    /// Answer this offer (creates the participant's PeerConnection on first use).
    Offer { sdp: String, id: u64 },
    /// Here is the answer to the SFU's last offer.
    Answer { sdp: String },
    /// The participant left: free their PeerConnection and tracks.
    Leave,
    /// How big the participant shows each remote video now (fire and forget).
    Views { views: Vec<TileView> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        conn: ConnId,
        msg: ServerMessage,
    },
    /// To every open connection of the room except `except`.
    Broadcast {
        except: Option<ConnId>,
        msg: ServerMessage,
    },
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// Call `Input::Tick` at (or after) this time.
    WakeAt {
        at: Millis,
    },
    /// Check the room's SFU `sfu` (is it alive and not draining?); feed back `SfuHealthy` or, with
    /// a replacement, `SfuReplaced`.
    CheckSfu {
        sfu: String,
    },
    /// Call the room's SFU for `participant`; feed its outcome back as `SfuAnswer` / `SfuFailed`.
    Sfu {
        participant: String,
        call: SfuCall,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    info: ParticipantInfo,
    conn: ConnId,
    joined_at: Millis,
    /// Since when the connection is gone (dropped, not closed), if it is.
    #[serde(default)]
    away_since: Option<Millis>,
    #[serde(default)]
    grants: Grants,
    /// The SFU's latest offer not yet answered, kept to hand over again after a reconnect.
    #[serde(default)]
    pending_offer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    name: String,
    members: BTreeMap<String, Member>,
    sfu: Option<SfuChoice>,
    /// The first member to join hosts; when the host leaves, the longest-present member does.
    host: Option<String>,
    /// Since when a check of the SFU is under way (dedupes reports from many members).
    #[serde(default)]
    sfu_check_since: Option<Millis>,
    /// Who the SFU last said is speaking.
    #[serde(default)]
    speaker: Option<String>,
    /// Host setting: how many may share a screen at once.
    #[serde(default = "crate::protocol::default_max_screen_sharers")]
    max_screen_sharers: u32,
}

/// A check of the SFU older than this is considered lost; a new report starts another.
pub const SFU_CHECK_TIMEOUT_MS: Millis = 5_000;

impl Room {
    pub fn new(name: impl Into<String>) -> Room {
        Room {
            name: name.into(),
            members: BTreeMap::new(),
            sfu: None,
            host: None,
            sfu_check_since: None,
            speaker: None,
            max_screen_sharers: crate::protocol::default_max_screen_sharers(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn set_sfu(&mut self, sfu: Option<SfuChoice>) {
        self.sfu = sfu;
    }

    /// The SFU carrying this room's media, and why it was chosen.
    pub fn sfu(&self) -> Option<&SfuChoice> {
        self.sfu.as_ref()
    }

    pub fn snapshot(&self) -> RoomSnapshot {
        let mut participants: Vec<ParticipantInfo> =
            self.members.values().map(|m| m.info.clone()).collect();
        participants.sort_by(|a, b| a.id.cmp(&b.id));
        RoomSnapshot {
            name: self.name.clone(),
            participants,
            sfu: self.sfu.as_ref().map(|c| c.id.clone()),
            host: self.host.clone(),
            speaker: self.speaker.clone(),
            max_screen_sharers: self.max_screen_sharers,
        }
    }

    fn member_by_conn(&self, conn: &str) -> Option<&String> {
        self.members
            .iter()
            .find(|(_, m)| m.conn == conn)
            .map(|(id, _)| id)
    }

    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        match input {
            Input::Connect { conn, claims } => self.connect(now, conn, claims),
            Input::Frame { conn, text } => self.frame(now, conn, &text),
            Input::Disconnect { conn, clean } => match self.member_by_conn(&conn).cloned() {
                Some(id) if clean => self.remove(&id),
                Some(id) => {
                    let m = self.members.get_mut(&id).expect("found above");
                    m.away_since = Some(now);
                    m.info.away = true;
                    vec![
                        Effect::Broadcast {
                            except: Some(conn),
                            msg: ServerMessage::ParticipantAway { id },
                        },
                        Effect::WakeAt {
                            at: now + RECONNECT_GRACE_MS,
                        },
                    ]
                }
                None => Vec::new(),
            },
            Input::SfuAnswer {
                participant,
                sdp,
                id,
            } => self.to_member(&participant, ServerMessage::Answer { sdp, id }),
            Input::SfuOffer { participant, sdp } => match self.members.get_mut(&participant) {
                Some(m) => {
                    m.pending_offer = Some(sdp.clone());
                    if m.away_since.is_some() {
                        Vec::new() // handed over when they are back
                    } else {
                        vec![Effect::Send {
                            conn: m.conn.clone(),
                            msg: ServerMessage::Offer { sdp },
                        }]
                    }
                }
                None => Vec::new(),
            },
            Input::SfuFailed {
                participant,
                code,
                message,
            } => self.to_member(&participant, ServerMessage::Error { code, message }),
            Input::SfuSuspect => self.suspect(now),
            Input::SfuEvent(SfuEvent::PublishLayers {
                participant,
                active,
                ..
            }) => {
                if active.len() > 8 {
                    return Vec::new();
                }
                self.to_member(&participant, ServerMessage::PublishLayers { active })
            }
            Input::SfuEvent(SfuEvent::ActiveSpeaker { participant, .. }) => {
                let known = participant
                    .as_ref()
                    .is_none_or(|p| self.members.contains_key(p));
                if !known || self.speaker == participant {
                    return Vec::new();
                }
                self.speaker = participant.clone();
                vec![Effect::Broadcast {
                    except: None,
                    msg: ServerMessage::ActiveSpeaker { id: participant },
                }]
            }
            Input::SfuHealthy => {
                self.sfu_check_since = None;
                Vec::new()
            }
            Input::SfuRestarted => {
                self.sfu_check_since = Some(now); // as after a replacement: let everyone arrive
                let Some(c) = self.sfu.clone() else {
                    return Vec::new();
                };
                for m in self.members.values_mut() {
                    m.pending_offer = None;
                }
                vec![Effect::Broadcast {
                    except: None,
                    msg: ServerMessage::SfuChanged {
                        sfu: c.id,
                        reason: "the media server restarted".into(),
                    },
                }]
            }
            Input::SfuReplaced { choice } => {
                // Everyone is moving now; reports from the old connections still on their way
                // must not start a check of the new SFU before the room reached it (that check
                // would find the room unknown there and restart everyone's media once more).
                self.sfu_check_since = Some(now);
                if self.sfu.as_ref().is_some_and(|c| c.id == choice.id) {
                    return Vec::new();
                }
                let msg = ServerMessage::SfuChanged {
                    sfu: choice.id.clone(),
                    reason: choice.reason.clone(),
                };
                self.sfu = Some(choice);
                // Offers from the old SFU mean nothing now.
                for m in self.members.values_mut() {
                    m.pending_offer = None;
                }
                vec![Effect::Broadcast { except: None, msg }]
            }
            Input::Tick => {
                let gone: Vec<String> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.away_since.is_some_and(|t| now >= t + RECONNECT_GRACE_MS))
                    .map(|(id, _)| id.clone())
                    .collect();
                let mut out: Vec<Effect> = gone.iter().flat_map(|id| self.remove(id)).collect();
                // Still someone away: wake again when their grace ends.
                if let Some(next) = self.members.values().filter_map(|m| m.away_since).min() {
                    out.push(Effect::WakeAt {
                        at: next + RECONNECT_GRACE_MS,
                    });
                }
                out
            }
        }
    }

    fn connect(&mut self, now: Millis, conn: ConnId, claims: Claims) -> Vec<Effect> {
        let mut out = Vec::new();
        let resumed = self.members.contains_key(&claims.sub);
        if let Some(m) = self.members.get_mut(&claims.sub) {
            // Same participant again (reconnect, or a second tab): the new connection takes over and
            // the session resumes; nobody else sees a leave or a join.
            let old = std::mem::replace(&mut m.conn, conn.clone());
            m.grants = claims.grants;
            if let Some(sdp) = m.pending_offer.clone() {
                // The SFU's offer may have been lost with the old connection: hand it over again
                // (after the snapshot, below).
                out.push(Effect::Send {
                    conn: conn.clone(),
                    msg: ServerMessage::Offer { sdp },
                });
            }
            if m.away_since.take().is_some() {
                m.info.away = false;
                out.push(Effect::Broadcast {
                    except: Some(conn.clone()),
                    msg: ServerMessage::ParticipantBack {
                        id: claims.sub.clone(),
                    },
                });
            } else {
                out.push(Effect::Close {
                    conn: old,
                    code: CLOSE_REPLACED,
                    reason: "replaced by a newer connection".into(),
                });
            }
        } else {
            let becomes_host = self.host.is_none();
            if becomes_host {
                self.host = Some(claims.sub.clone());
            }
            let info = ParticipantInfo {
                id: claims.sub.clone(),
                name: claims.name.clone(),
                role: if becomes_host {
                    Role::Host
                } else {
                    claims.role
                },
                audio_muted: false,
                video_muted: false,
                away: false,
                screen: false,
            };
            // To everyone else: the newcomer learns about itself from the snapshot.
            out.push(Effect::Broadcast {
                except: Some(conn.clone()),
                msg: ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
            });
            self.members.insert(
                claims.sub.clone(),
                Member {
                    info,
                    conn: conn.clone(),
                    joined_at: now,
                    away_since: None,
                    grants: claims.grants,
                    pending_offer: None,
                },
            );
        }
        // The snapshot goes first to the newcomer: anything queued for them above follows it.
        let pos = out
            .iter()
            .position(|e| matches!(e, Effect::Send { .. }))
            .unwrap_or(out.len());
        out.insert(
            pos,
            Effect::Send {
                conn,
                msg: ServerMessage::Snapshot {
                    you: claims.sub,
                    room: self.snapshot(),
                    resumed,
                },
            },
        );
        out
    }

    fn frame(&mut self, now: Millis, conn: ConnId, text: &str) -> Vec<Effect> {
        let Some(id) = self.member_by_conn(&conn).cloned() else {
            return vec![Effect::Close {
                conn,
                code: 4403,
                reason: "not a member of this room".into(),
            }];
        };
        let msg = match parse_client_message(text) {
            Ok(m) => m,
            Err(e) => {
                return vec![Effect::Send {
                    conn,
                    msg: ServerMessage::Error {
                        code: e.code,
                        message: e.message,
                    },
                }]
            }
        };
        match msg {
            ClientMessage::Hello { version } if version != PROTOCOL_VERSION => vec![Effect::Send {
                conn,
                msg: ServerMessage::Error {
                    code: ErrorCode::UnsupportedVersion,
                    message: format!(
                        "this server speaks protocol version {PROTOCOL_VERSION}, not {version}"
                    ),
                },
            }],
            ClientMessage::Hello { .. } => Vec::new(),
            ClientMessage::Ping { nonce } => vec![Effect::Send {
                conn,
                msg: ServerMessage::Pong { nonce },
            }],
            ClientMessage::SetMedia {
                audio_muted,
                video_muted,
            } => {
                let m = self.members.get_mut(&id).expect("member found above");
                if (m.info.audio_muted, m.info.video_muted) == (audio_muted, video_muted) {
                    return Vec::new();
                }
                m.info.audio_muted = audio_muted;
                m.info.video_muted = video_muted;
                vec![Effect::Broadcast {
                    except: None,
                    msg: ServerMessage::MediaChanged {
                        id,
                        audio_muted,
                        video_muted,
                    },
                }]
            }
            ClientMessage::Offer { sdp, .. } | ClientMessage::Answer { sdp }
                if self.sfu.is_none() =>
            {
                let _ = sdp;
                vec![Effect::Send {
                    conn,
                    msg: ServerMessage::Error {
                        code: ErrorCode::NoMediaServer,
                        message: "this room has no media server yet".into(),
                    },
                }]
            }
            ClientMessage::Offer { sdp, id: offer_id } => {
                let m = self.members.get(&id).expect("member found above");
                if !m.grants.publish && !m.grants.subscribe {
                    return vec![Effect::Send {
                        conn,
                        msg: ServerMessage::Error {
                            code: ErrorCode::Forbidden,
                            message: "your token grants neither publish nor subscribe".into(),
                        },
                    }];
                }
                if let Err(e) = check_sdp(&sdp) {
                    return vec![Effect::Send {
                        conn,
                        msg: ServerMessage::Error {
                            code: e.code,
                            message: e.message,
                        },
                    }];
                }
                vec![Effect::Sfu {
                    participant: id,
                    call: SfuCall::Offer { sdp, id: offer_id },
                }]
            }
            ClientMessage::Answer { sdp } => {
                if let Err(e) = check_sdp(&sdp) {
                    return vec![Effect::Send {
                        conn,
                        msg: ServerMessage::Error {
                            code: e.code,
                            message: e.message,
                        },
                    }];
                }
                let m = self.members.get_mut(&id).expect("member found above");
                if m.pending_offer.take().is_none() {
                    return vec![Effect::Send {
                        conn,
                        msg: ServerMessage::Error {
                            code: ErrorCode::BadMessage,
                            message: "no offer is waiting for an answer".into(),
                        },
                    }];
                }
                vec![Effect::Sfu {
                    participant: id,
                    call: SfuCall::Answer { sdp },
                }]
            }
            ClientMessage::MediaFailed {} => self.suspect(now),
            ClientMessage::Views { views } => {
                let m = self.members.get(&id).expect("member found above");
                if views.len() > MAX_VIEWS {
                    return vec![Effect::Send {
                        conn,
                        msg: ServerMessage::Error {
                            code: ErrorCode::BadMessage,
                            message: format!("at most {MAX_VIEWS} views"),
                        },
                    }];
                }
                if self.sfu.is_none() || !m.grants.subscribe {
                    return Vec::new();
                }
                vec![Effect::Sfu {
                    participant: id,
                    call: SfuCall::Views { views },
                }]
            }
            ClientMessage::SetScreen { sharing } => {
                let m = self.members.get(&id).expect("member found above");
                if m.info.screen == sharing {
                    return Vec::new();
                }
                let refuse = |message: String| {
                    vec![Effect::Send {
                        conn: conn.clone(),
                        msg: ServerMessage::Error {
                            code: ErrorCode::Forbidden,
                            message,
                        },
                    }]
                };
                if sharing && !m.grants.screen {
                    return refuse("your token does not allow screen sharing".into());
                }
                let sharers = self.members.values().filter(|m| m.info.screen).count() as u32;
                if sharing && sharers >= self.max_screen_sharers {
                    return refuse(format!(
                        "{} already sharing; the host allows {} at a time",
                        if sharers == 1 {
                            "someone is"
                        } else {
                            "others are"
                        },
                        self.max_screen_sharers
                    ));
                }
                self.members.get_mut(&id).expect("found above").info.screen = sharing;
                vec![Effect::Broadcast {
                    except: None,
                    msg: ServerMessage::ScreenChanged { id, sharing },
                }]
            }
            ClientMessage::SetRoomOptions { max_screen_sharers } => {
                if self.host.as_deref() != Some(id.as_str()) {
                    return vec![Effect::Send {
                        conn,
                        msg: ServerMessage::Error {
                            code: ErrorCode::Forbidden,
                            message: "only the host can change the room's options".into(),
                        },
                    }];
                }
                if !(1..=MAX_SCREEN_SHARERS).contains(&max_screen_sharers) {
                    return vec![Effect::Send {
                        conn,
                        msg: ServerMessage::Error {
                            code: ErrorCode::BadRequest,
                            message: format!("screen sharers must be 1 to {MAX_SCREEN_SHARERS}"),
                        },
                    }];
                }
                self.max_screen_sharers = max_screen_sharers;
                vec![Effect::Broadcast {
                    except: None,
                    msg: ServerMessage::RoomOptions { max_screen_sharers },
                }]
            }
            ClientMessage::Leave {} => {
                let mut out = self.remove(&id);
                out.push(Effect::Close {
                    conn,
                    code: 1000,
                    reason: "left".into(),
                });
                out
            }
        }
    }

    fn remove(&mut self, id: &str) -> Vec<Effect> {
        if self.members.remove(id).is_none() {
            return Vec::new();
        }
        if self.speaker.as_deref() == Some(id) {
            self.speaker = None; // everyone drops the leaver's tile anyway
        }
        let mut out = vec![Effect::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantLeft { id: id.to_string() },
        }];
        if self.sfu.is_some() {
            out.push(Effect::Sfu {
                participant: id.to_string(),
                call: SfuCall::Leave,
            });
        }
        if self.host.as_deref() == Some(id) {
            // Hand over to the longest-present member (ties: smallest id), or to nobody.
            self.host = self
                .members
                .iter()
                .min_by_key(|(mid, m)| (m.joined_at, (*mid).clone()))
                .map(|(mid, _)| mid.clone());
            if let Some(new) = &self.host {
                if let Some(m) = self.members.get_mut(new) {
                    m.info.role = Role::Host;
                }
                out.push(Effect::Broadcast {
                    except: None,
                    msg: ServerMessage::HostChanged { id: new.clone() },
                });
            }
        }
        out
    }

    /// Someone thinks the SFU is gone: check it (once at a time).
    fn suspect(&mut self, now: Millis) -> Vec<Effect> {
        let Some(sfu) = self.sfu.as_ref().map(|c| c.id.clone()) else {
            return Vec::new();
        };
        if self
            .sfu_check_since
            .is_some_and(|t| now < t + SFU_CHECK_TIMEOUT_MS)
        {
            return Vec::new();
        }
        self.sfu_check_since = Some(now);
        vec![Effect::CheckSfu { sfu }]
    }

    fn to_member(&self, id: &str, msg: ServerMessage) -> Vec<Effect> {
        match self.members.get(id) {
            Some(m) if m.away_since.is_none() => vec![Effect::Send {
                conn: m.conn.clone(),
                msg,
            }],
            _ => Vec::new(),
        }
    }

    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The role of a member, if present.
    pub fn role_of(&self, id: &str) -> Option<Role> {
        self.members.get(id).map(|m| m.info.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Grants;

    fn claims(id: &str) -> Claims {
        Claims {
            sub: id.into(),
            name: format!("name-{id}"),
            room: "r".into(),
            role: Role::Participant,
            grants: Grants::max_for(Role::Participant),
            sfu: None,
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: id.into(),
        }
    }

    fn connect(room: &mut Room, id: &str, conn: &str) -> Vec<Effect> {
        room.handle(
            0,
            Input::Connect {
                conn: conn.into(),
                claims: claims(id),
            },
        )
    }

    #[test]
    fn joining_sends_a_snapshot_and_tells_the_others() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let fx = connect(&mut r, "b", "c2");
        assert!(
            matches!(&fx[0], Effect::Broadcast { except: Some(c), msg: ServerMessage::ParticipantJoined { participant } }
            if participant.id == "b" && c == "c2")
        );
        match &fx[1] {
            Effect::Send {
                conn,
                msg: ServerMessage::Snapshot { you, room, resumed },
            } => {
                assert_eq!(conn, "c2");
                assert_eq!(you, "b");
                assert!(!resumed, "a first join is a fresh session");
                let ids: Vec<_> = room.participants.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(ids, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_joiner_hosts_and_hands_over_to_the_longest_present() {
        let mut r = Room::new("r");
        r.handle(
            0,
            Input::Connect {
                conn: "c1".into(),
                claims: claims("a"),
            },
        );
        r.handle(
            10,
            Input::Connect {
                conn: "c3".into(),
                claims: claims("c"),
            },
        );
        r.handle(
            20,
            Input::Connect {
                conn: "c2".into(),
                claims: claims("b"),
            },
        );
        let snap = r.snapshot();
        assert_eq!(snap.host.as_deref(), Some("a"));
        assert_eq!(snap.participants[0].role, Role::Host);
        assert_eq!(snap.participants[1].role, Role::Participant);
        // A non-host leaving changes nothing about hosting.
        let fx = r.handle(
            30,
            Input::Disconnect {
                conn: "c2".into(),
                clean: true,
            },
        );
        assert_eq!(fx.len(), 1);
        // The host leaving hands over to c (joined at 10), not to whoever sorts first.
        r.handle(
            31,
            Input::Connect {
                conn: "c2".into(),
                claims: claims("b"),
            },
        );
        let fx = r.handle(
            40,
            Input::Disconnect {
                conn: "c1".into(),
                clean: true,
            },
        );
        assert_eq!(
            fx[1],
            Effect::Broadcast {
                except: None,
                msg: ServerMessage::HostChanged { id: "c".into() }
            }
        );
        assert_eq!(r.host(), Some("c"));
        assert_eq!(r.role_of("c"), Some(Role::Host));
        // The last one out leaves a room with no host; the next first joiner hosts.
        r.handle(
            50,
            Input::Disconnect {
                conn: "c3".into(),
                clean: true,
            },
        );
        r.handle(
            51,
            Input::Disconnect {
                conn: "c2".into(),
                clean: true,
            },
        );
        assert_eq!(r.host(), None);
        r.handle(
            60,
            Input::Connect {
                conn: "c9".into(),
                claims: claims("z"),
            },
        );
        assert_eq!(r.host(), Some("z"));
    }

    #[test]
    fn a_dropped_connection_that_comes_back_in_time_resumes_silently() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        r.handle(
            100,
            Input::Frame {
                conn: "c2".into(),
                text: r#"{"type":"set_media","audio_muted":true,"video_muted":false}"#.into(),
            },
        );
        let fx = r.handle(
            1_000,
            Input::Disconnect {
                conn: "c2".into(),
                clean: false,
            },
        );
        assert_eq!(
            fx,
            vec![
                Effect::Broadcast {
                    except: Some("c2".into()),
                    msg: ServerMessage::ParticipantAway { id: "b".into() }
                },
                Effect::WakeAt {
                    at: 1_000 + RECONNECT_GRACE_MS
                },
            ],
            "the others learn b is away, not gone"
        );
        assert_eq!(r.snapshot().participants.len(), 2);
        assert!(r.snapshot().participants[1].away);
        // An early alarm removes nobody.
        assert_eq!(
            r.handle(5_000, Input::Tick),
            vec![Effect::WakeAt {
                at: 1_000 + RECONNECT_GRACE_MS
            }]
        );
        // Back within the grace period: only the snapshot, no join broadcast, state kept.
        let fx = r.handle(
            9_000,
            Input::Connect {
                conn: "c2b".into(),
                claims: claims("b"),
            },
        );
        assert_eq!(
            fx[0],
            Effect::Broadcast {
                except: Some("c2b".into()),
                msg: ServerMessage::ParticipantBack { id: "b".into() }
            }
        );
        assert!(
            matches!(&fx[1..], [Effect::Send { conn, msg: ServerMessage::Snapshot { .. } }] if conn == "c2b"),
            "{fx:?}"
        );
        assert!(!r.snapshot().participants[1].away);
        assert!(
            r.snapshot()
                .participants
                .iter()
                .find(|p| p.id == "b")
                .unwrap()
                .audio_muted
        );
        // The alarm that was set finds nobody away.
        assert!(r.handle(11_000, Input::Tick).is_empty());
        // The old connection's late close changes nothing.
        assert!(r
            .handle(
                11_001,
                Input::Disconnect {
                    conn: "c2".into(),
                    clean: true
                }
            )
            .is_empty());
        assert_eq!(r.snapshot().participants.len(), 2);
    }

    #[test]
    fn a_dropped_connection_that_stays_away_leaves_after_the_grace_period() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        r.handle(
            1_000,
            Input::Disconnect {
                conn: "c1".into(),
                clean: false,
            },
        );
        let fx = r.handle(1_000 + RECONNECT_GRACE_MS, Input::Tick);
        assert_eq!(
            fx[0],
            Effect::Broadcast {
                except: None,
                msg: ServerMessage::ParticipantLeft { id: "a".into() }
            }
        );
        assert_eq!(
            fx[1],
            Effect::Broadcast {
                except: None,
                msg: ServerMessage::HostChanged { id: "b".into() }
            }
        );
        assert_eq!(fx.len(), 2, "nobody else is away: no further alarm");
        // Coming back later is a clean rejoin: everyone sees a join.
        let fx = r.handle(
            20_000,
            Input::Connect {
                conn: "c1b".into(),
                claims: claims("a"),
            },
        );
        assert!(matches!(
            &fx[0],
            Effect::Broadcast {
                msg: ServerMessage::ParticipantJoined { .. },
                ..
            }
        ));
        assert_eq!(r.host(), Some("b"));
    }

    #[test]
    fn the_alarm_follows_the_earliest_remaining_absence() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        connect(&mut r, "c", "c3");
        r.handle(
            1_000,
            Input::Disconnect {
                conn: "c1".into(),
                clean: false,
            },
        );
        r.handle(
            4_000,
            Input::Disconnect {
                conn: "c2".into(),
                clean: false,
            },
        );
        let fx = r.handle(1_000 + RECONNECT_GRACE_MS, Input::Tick);
        assert!(fx.contains(&Effect::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantLeft { id: "a".into() }
        }));
        assert_eq!(
            fx.last(),
            Some(&Effect::WakeAt {
                at: 4_000 + RECONNECT_GRACE_MS
            })
        );
    }

    #[test]
    fn a_reconnecting_host_stays_host() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        connect(&mut r, "a", "c1b");
        assert_eq!(r.host(), Some("a"));
        assert_eq!(r.role_of("a"), Some(Role::Host));
    }

    #[test]
    fn a_duplicate_join_replaces_the_old_connection_without_a_second_member() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let fx = connect(&mut r, "a", "c2");
        assert_eq!(
            fx[0],
            Effect::Close {
                conn: "c1".into(),
                code: CLOSE_REPLACED,
                reason: "replaced by a newer connection".into()
            }
        );
        assert_eq!(r.snapshot().participants.len(), 1);
        // The old connection closing afterwards must not remove the participant.
        assert!(r
            .handle(
                1,
                Input::Disconnect {
                    conn: "c1".into(),
                    clean: true
                }
            )
            .is_empty());
        assert_eq!(r.snapshot().participants.len(), 1);
    }

    #[test]
    fn mute_is_broadcast_once_per_change() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let set = |r: &mut Room| {
            r.handle(
                1,
                Input::Frame {
                    conn: "c1".into(),
                    text: r#"{"type":"set_media","audio_muted":true,"video_muted":false}"#.into(),
                },
            )
        };
        let fx = set(&mut r);
        assert_eq!(
            fx,
            vec![Effect::Broadcast {
                except: None,
                msg: ServerMessage::MediaChanged {
                    id: "a".into(),
                    audio_muted: true,
                    video_muted: false
                }
            }]
        );
        assert!(set(&mut r).is_empty());
        assert!(r.snapshot().participants[0].audio_muted);
    }

    #[test]
    fn leave_and_disconnect_remove_and_tell_everyone() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        let fx = r.handle(
            1,
            Input::Frame {
                conn: "c1".into(),
                text: r#"{"type":"leave"}"#.into(),
            },
        );
        assert_eq!(
            fx[0],
            Effect::Broadcast {
                except: None,
                msg: ServerMessage::ParticipantLeft { id: "a".into() }
            }
        );
        assert_eq!(
            fx[1],
            Effect::Broadcast {
                except: None,
                msg: ServerMessage::HostChanged { id: "b".into() }
            }
        );
        assert!(matches!(&fx[2], Effect::Close { code: 1000, .. }));
        let fx = r.handle(
            2,
            Input::Disconnect {
                conn: "c2".into(),
                clean: true,
            },
        );
        assert_eq!(fx.len(), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn bad_frames_get_an_error_and_change_nothing() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let before = r.clone();
        for bad in [
            "garbage",
            r#"{"type":"set_media"}"#,
            r#"{"type":"hello","version":99}"#,
        ] {
            let fx = r.handle(
                1,
                Input::Frame {
                    conn: "c1".into(),
                    text: bad.into(),
                },
            );
            assert!(
                matches!(
                    &fx[..],
                    [Effect::Send {
                        msg: ServerMessage::Error { .. },
                        ..
                    }]
                ),
                "{bad}: {fx:?}"
            );
        }
        assert_eq!(r, before);
    }

    #[test]
    fn frames_from_unknown_connections_close_them() {
        let mut r = Room::new("r");
        let fx = r.handle(
            1,
            Input::Frame {
                conn: "x".into(),
                text: r#"{"type":"ping","nonce":1}"#.into(),
            },
        );
        assert!(matches!(&fx[..], [Effect::Close { code: 4403, .. }]));
    }

    #[test]
    fn ping_is_answered_and_state_survives_serialization() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let fx = r.handle(
            1,
            Input::Frame {
                conn: "c1".into(),
                text: r#"{"type":"ping","nonce":7}"#.into(),
            },
        );
        assert_eq!(
            fx,
            vec![Effect::Send {
                conn: "c1".into(),
                msg: ServerMessage::Pong { nonce: 7 }
            }]
        );
        let back: Room = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    const SDP: &str =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

    fn with_sfu(id: &str) -> Room {
        let mut r = Room::new("r");
        r.set_sfu(Some(SfuChoice {
            id: "sfu-1".into(),
            region: "eu-west".into(),
            url: "http://127.0.0.1:1".into(),
            distance_km: None,
            score: 0.0,
            reason: "test".into(),
        }));
        connect(&mut r, id, "c1");
        r
    }

    fn frame(r: &mut Room, conn: &str, msg: &ClientMessage) -> Vec<Effect> {
        r.handle(
            1,
            Input::Frame {
                conn: conn.into(),
                text: serde_json::to_string(msg).unwrap(),
            },
        )
    }

    #[test]
    fn an_offer_goes_to_the_sfu_and_its_answer_back_to_the_sender_only() {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        let fx = frame(
            &mut r,
            "c1",
            &ClientMessage::Offer {
                sdp: SDP.into(),
                id: 7,
            },
        );
        assert_eq!(
            fx,
            vec![Effect::Sfu {
                participant: "a".into(),
                call: SfuCall::Offer {
                    sdp: SDP.into(),
                    id: 7
                }
            }]
        );
        let fx = r.handle(
            2,
            Input::SfuAnswer {
                participant: "a".into(),
                sdp: "answer".into(),
                id: 7,
            },
        );
        assert_eq!(
            fx,
            vec![Effect::Send {
                conn: "c1".into(),
                msg: ServerMessage::Answer {
                    sdp: "answer".into(),
                    id: 7,
                }
            }]
        );
    }

    #[test]
    fn garbage_sdp_is_refused_to_its_sender_without_calling_the_sfu() {
        let mut r = with_sfu("a");
        let before = r.clone();
        let fx = frame(
            &mut r,
            "c1",
            &ClientMessage::Offer {
                sdp: "hello".into(),
                id: 1,
            },
        );
        assert!(
            matches!(&fx[..], [Effect::Send { conn, msg: ServerMessage::Error { code: ErrorCode::BadSdp, .. } }] if conn == "c1"),
            "{fx:?}"
        );
        assert_eq!(r, before);
    }

    #[test]
    fn an_offer_without_a_media_server_is_a_clear_error() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let fx = frame(
            &mut r,
            "c1",
            &ClientMessage::Offer {
                sdp: SDP.into(),
                id: 1,
            },
        );
        assert!(
            matches!(
                &fx[..],
                [Effect::Send {
                    msg: ServerMessage::Error {
                        code: ErrorCode::NoMediaServer,
                        ..
                    },
                    ..
                }]
            ),
            "{fx:?}"
        );
    }

    #[test]
    fn a_token_without_media_grants_cannot_offer() {
        let mut r = with_sfu("a");
        let mut c = claims("v");
        c.grants = Grants::default();
        r.handle(
            0,
            Input::Connect {
                conn: "c9".into(),
                claims: c,
            },
        );
        let fx = frame(
            &mut r,
            "c9",
            &ClientMessage::Offer {
                sdp: SDP.into(),
                id: 1,
            },
        );
        assert!(
            matches!(
                &fx[..],
                [Effect::Send {
                    msg: ServerMessage::Error {
                        code: ErrorCode::Forbidden,
                        ..
                    },
                    ..
                }]
            ),
            "{fx:?}"
        );
    }

    #[test]
    fn sfu_offers_are_relayed_answered_once_and_replayed_after_a_reconnect() {
        let mut r = with_sfu("a");
        // An answer nobody asked for is refused.
        let fx = frame(&mut r, "c1", &ClientMessage::Answer { sdp: SDP.into() });
        assert!(
            matches!(
                &fx[..],
                [Effect::Send {
                    msg: ServerMessage::Error {
                        code: ErrorCode::BadMessage,
                        ..
                    },
                    ..
                }]
            ),
            "{fx:?}"
        );

        // The socket drops; the SFU's offer arrives meanwhile and is held.
        r.handle(
            2,
            Input::Disconnect {
                conn: "c1".into(),
                clean: false,
            },
        );
        assert_eq!(
            r.handle(
                3,
                Input::SfuOffer {
                    participant: "a".into(),
                    sdp: "o1".into()
                }
            ),
            vec![]
        );
        // Back within the grace period: snapshot first, then the held offer.
        let fx = r.handle(
            4,
            Input::Connect {
                conn: "c3".into(),
                claims: claims("a"),
            },
        );
        let sends: Vec<&ServerMessage> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Send { conn, msg } if conn == "c3" => Some(msg),
                _ => None,
            })
            .collect();
        assert!(
            matches!(
                sends[..],
                [
                    ServerMessage::Snapshot { resumed: true, .. },
                    ServerMessage::Offer { .. }
                ]
            ),
            "{sends:?}"
        );
        let fx = frame(&mut r, "c3", &ClientMessage::Answer { sdp: SDP.into() });
        assert_eq!(
            fx,
            vec![Effect::Sfu {
                participant: "a".into(),
                call: SfuCall::Answer { sdp: SDP.into() }
            }]
        );
        // Answered: nothing is replayed on the next reconnect.
        r.handle(
            5,
            Input::Disconnect {
                conn: "c3".into(),
                clean: false,
            },
        );
        let fx = r.handle(
            6,
            Input::Connect {
                conn: "c4".into(),
                claims: claims("a"),
            },
        );
        assert!(
            !fx.iter().any(|e| matches!(
                e,
                Effect::Send {
                    msg: ServerMessage::Offer { .. },
                    ..
                }
            )),
            "{fx:?}"
        );
    }

    #[test]
    fn leaving_frees_the_participant_on_the_sfu_and_late_sfu_messages_go_nowhere() {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        let fx = frame(&mut r, "c2", &ClientMessage::Leave {});
        assert!(
            fx.contains(&Effect::Sfu {
                participant: "b".into(),
                call: SfuCall::Leave
            }),
            "{fx:?}"
        );
        assert_eq!(
            r.handle(
                3,
                Input::SfuOffer {
                    participant: "b".into(),
                    sdp: "o".into()
                }
            ),
            vec![]
        );
        assert_eq!(
            r.handle(
                3,
                Input::SfuAnswer {
                    participant: "b".into(),
                    sdp: "a".into(),
                    id: 1,
                }
            ),
            vec![]
        );
        // A dropped participant whose grace runs out is freed too.
        r.handle(
            4,
            Input::Disconnect {
                conn: "c1".into(),
                clean: false,
            },
        );
        let fx = r.handle(4 + RECONNECT_GRACE_MS, Input::Tick);
        assert!(
            fx.contains(&Effect::Sfu {
                participant: "a".into(),
                call: SfuCall::Leave
            }),
            "{fx:?}"
        );
    }

    #[test]
    fn sfu_failures_reach_only_the_participant_concerned() {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        let fx = r.handle(
            2,
            Input::SfuFailed {
                participant: "b".into(),
                code: ErrorCode::BadSdp,
                message: "m".into(),
            },
        );
        assert_eq!(
            fx,
            vec![Effect::Send {
                conn: "c2".into(),
                msg: ServerMessage::Error {
                    code: ErrorCode::BadSdp,
                    message: "m".into()
                }
            }]
        );
    }

    fn choice(id: &str) -> SfuChoice {
        SfuChoice {
            id: id.into(),
            region: id.into(),
            url: format!("http://{id}"),
            distance_km: None,
            score: 0.0,
            reason: "test".into(),
        }
    }

    #[test]
    fn media_failures_check_the_sfu_once_and_a_replacement_reaches_everyone() {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        let fx = frame(&mut r, "c1", &ClientMessage::MediaFailed {});
        assert_eq!(
            fx,
            vec![Effect::CheckSfu {
                sfu: "sfu-1".into()
            }]
        );
        // A second report while the check runs changes nothing.
        assert_eq!(frame(&mut r, "c2", &ClientMessage::MediaFailed {}), vec![]);
        // The SFU is gone: the room moves, everyone hears, and the old SFU's offer is forgotten.
        r.handle(
            2,
            Input::SfuOffer {
                participant: "b".into(),
                sdp: "old".into(),
            },
        );
        let fx = r.handle(
            3,
            Input::SfuReplaced {
                choice: choice("sfu-2"),
            },
        );
        assert!(
            matches!(&fx[..], [Effect::Broadcast { except: None, msg: ServerMessage::SfuChanged { sfu, .. } }] if sfu == "sfu-2"),
            "{fx:?}"
        );
        assert_eq!(r.sfu().unwrap().id, "sfu-2");
        assert_eq!(r.snapshot().sfu.as_deref(), Some("sfu-2"));
        let fx = frame(&mut r, "c2", &ClientMessage::Answer { sdp: SDP.into() });
        assert!(
            matches!(
                &fx[..],
                [Effect::Send {
                    msg: ServerMessage::Error {
                        code: ErrorCode::BadMessage,
                        ..
                    },
                    ..
                }]
            ),
            "{fx:?}"
        );
        // Members, host and mute state are untouched.
        assert_eq!(r.snapshot().participants.len(), 2);
        assert_eq!(r.host(), Some("a"));
        // Reports still on their way from the old connections do not check the new SFU before
        // everyone could reach it; a report after that does.
        assert_eq!(frame(&mut r, "c1", &ClientMessage::MediaFailed {}), vec![]);
        assert_eq!(
            r.handle(1_000_000, Input::SfuSuspect),
            vec![Effect::CheckSfu {
                sfu: "sfu-2".into()
            }]
        );
    }

    #[test]
    fn a_restarted_sfu_makes_everyone_set_media_up_again_on_it() {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        r.handle(1, Input::SfuSuspect);
        let fx = r.handle(2, Input::SfuRestarted);
        assert!(
            matches!(&fx[..], [Effect::Broadcast { except: None, msg: ServerMessage::SfuChanged { sfu, .. } }] if sfu == "sfu-1"),
            "{fx:?}"
        );
        assert_eq!(r.sfu().unwrap().id, "sfu-1");
        assert_eq!(
            r.handle(3, Input::SfuSuspect).len(),
            0,
            "everyone is still arriving"
        );
        assert_eq!(
            r.handle(2 + SFU_CHECK_TIMEOUT_MS, Input::SfuSuspect).len(),
            1,
            "the check is over"
        );
    }

    #[test]
    fn a_healthy_sfu_ends_the_check_and_a_lost_check_is_retried() {
        let mut r = with_sfu("a");
        assert_eq!(r.handle(0, Input::SfuSuspect).len(), 1);
        assert_eq!(r.handle(100, Input::SfuHealthy), vec![]);
        assert_eq!(
            r.handle(200, Input::SfuSuspect).len(),
            1,
            "checked again after a healthy answer"
        );
        // No answer to that check: after the timeout a report starts a new one.
        assert_eq!(r.handle(300, Input::SfuSuspect), vec![]);
        assert_eq!(
            r.handle(200 + SFU_CHECK_TIMEOUT_MS, Input::SfuSuspect)
                .len(),
            1
        );
        // Replacing with the same SFU is no change.
        assert_eq!(
            r.handle(
                9_000,
                Input::SfuReplaced {
                    choice: choice("sfu-1")
                }
            ),
            vec![]
        );
    }

    #[test]
    fn views_go_to_the_sfu_and_too_many_are_refused() {
        let mut r = with_sfu("a");
        let views = vec![TileView {
            publisher: "b".into(),
            source: crate::protocol::Source::Camera,
            height: 180,
        }];
        let fx = frame(
            &mut r,
            "c1",
            &ClientMessage::Views {
                views: views.clone(),
            },
        );
        assert_eq!(
            fx,
            vec![Effect::Sfu {
                participant: "a".into(),
                call: SfuCall::Views { views }
            }]
        );
        let many = vec![
            TileView {
                publisher: "b".into(),
                source: crate::protocol::Source::Screen,
                height: 0,
            };
            MAX_VIEWS + 1
        ];
        let fx = frame(&mut r, "c1", &ClientMessage::Views { views: many });
        assert!(matches!(
            &fx[..],
            [Effect::Send {
                msg: ServerMessage::Error {
                    code: ErrorCode::BadMessage,
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn sfu_events_reach_the_publisher_or_everyone() {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        let fx = r.handle(
            5,
            Input::SfuEvent(SfuEvent::PublishLayers {
                room: "r".into(),
                participant: "b".into(),
                active: vec![true, false, false],
            }),
        );
        assert_eq!(
            fx,
            vec![Effect::Send {
                conn: "c2".into(),
                msg: ServerMessage::PublishLayers {
                    active: vec![true, false, false]
                }
            }]
        );
        let speaker = |p: Option<&str>| {
            Input::SfuEvent(SfuEvent::ActiveSpeaker {
                room: "r".into(),
                participant: p.map(String::from),
            })
        };
        let fx = r.handle(6, speaker(Some("b")));
        assert_eq!(
            fx,
            vec![Effect::Broadcast {
                except: None,
                msg: ServerMessage::ActiveSpeaker {
                    id: Some("b".into())
                }
            }]
        );
        assert_eq!(r.snapshot().speaker.as_deref(), Some("b"));
        assert_eq!(r.handle(7, speaker(Some("b"))), vec![], "no repeat");
        assert_eq!(r.handle(8, speaker(Some("zed"))), vec![], "not a member");
        // The speaker leaving clears it.
        frame(&mut r, "c2", &ClientMessage::Leave {});
        assert_eq!(r.snapshot().speaker, None);
    }

    #[test]
    fn screen_sharing_follows_the_hosts_limit() {
        let mut r = with_sfu("a"); // a hosts
        connect(&mut r, "b", "c2");
        connect(&mut r, "c", "c3");
        let share = |on| ClientMessage::SetScreen { sharing: on };
        let fx = frame(&mut r, "c2", &share(true));
        assert_eq!(
            fx,
            vec![Effect::Broadcast {
                except: None,
                msg: ServerMessage::ScreenChanged {
                    id: "b".into(),
                    sharing: true
                }
            }]
        );
        let refused = frame(&mut r, "c3", &share(true));
        assert!(
            matches!(&refused[..], [Effect::Send { conn, msg: ServerMessage::Error { code: ErrorCode::Forbidden, .. } }] if conn == "c3"),
            "{refused:?}"
        );
        // Only the host may raise the limit.
        let fx = frame(
            &mut r,
            "c3",
            &ClientMessage::SetRoomOptions {
                max_screen_sharers: 2,
            },
        );
        assert!(matches!(
            &fx[..],
            [Effect::Send {
                msg: ServerMessage::Error {
                    code: ErrorCode::Forbidden,
                    ..
                },
                ..
            }]
        ));
        let fx = frame(
            &mut r,
            "c1",
            &ClientMessage::SetRoomOptions {
                max_screen_sharers: 0,
            },
        );
        assert!(matches!(
            &fx[..],
            [Effect::Send {
                msg: ServerMessage::Error {
                    code: ErrorCode::BadRequest,
                    ..
                },
                ..
            }]
        ));
        frame(
            &mut r,
            "c1",
            &ClientMessage::SetRoomOptions {
                max_screen_sharers: 2,
            },
        );
        assert_eq!(r.snapshot().max_screen_sharers, 2);
        assert_eq!(frame(&mut r, "c3", &share(true)).len(), 1);
        assert!(
            r.snapshot()
                .participants
                .iter()
                .filter(|p| p.screen)
                .count()
                == 2
        );
        // Stopping twice is a no-op.
        assert_eq!(frame(&mut r, "c2", &share(false)).len(), 1);
        assert_eq!(frame(&mut r, "c2", &share(false)), vec![]);
    }
}
