//! The room state machine (first cut): who is in the room, their media state, and what to tell whom.
//!
//! Sans-IO: the Room Durable Object feeds it [`Input`]s with the current time and performs the
//! [`Effect`]s it returns (send a frame to one connection, broadcast, close a connection). It never
//! touches a socket or a clock, so every ordering (duplicate joins, reconnects, leaves) is a unit test.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::{
    parse_client_message, ClientMessage, ErrorCode, ParticipantInfo, RoomSnapshot, ServerMessage, PROTOCOL_VERSION,
};
use crate::region::SfuChoice;
use crate::token::{Claims, Role};
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send { conn: ConnId, msg: ServerMessage },
    /// To every open connection of the room except `except`.
    Broadcast { except: Option<ConnId>, msg: ServerMessage },
    Close { conn: ConnId, code: u16, reason: String },
    /// Call `Input::Tick` at (or after) this time.
    WakeAt { at: Millis },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    info: ParticipantInfo,
    conn: ConnId,
    joined_at: Millis,
    /// Since when the connection is gone (dropped, not closed), if it is.
    #[serde(default)]
    away_since: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    name: String,
    members: BTreeMap<String, Member>,
    sfu: Option<SfuChoice>,
    /// The first member to join hosts; when the host leaves, the longest-present member does.
    host: Option<String>,
}

impl Room {
    pub fn new(name: impl Into<String>) -> Room {
        Room { name: name.into(), members: BTreeMap::new(), sfu: None, host: None }
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
        let mut participants: Vec<ParticipantInfo> = self.members.values().map(|m| m.info.clone()).collect();
        participants.sort_by(|a, b| a.id.cmp(&b.id));
        RoomSnapshot { name: self.name.clone(), participants, sfu: self.sfu.as_ref().map(|c| c.id.clone()), host: self.host.clone() }
    }

    fn member_by_conn(&self, conn: &str) -> Option<&String> {
        self.members.iter().find(|(_, m)| m.conn == conn).map(|(id, _)| id)
    }

    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        match input {
            Input::Connect { conn, claims } => self.connect(now, conn, claims),
            Input::Frame { conn, text } => self.frame(conn, &text),
            Input::Disconnect { conn, clean } => match self.member_by_conn(&conn).cloned() {
                Some(id) if clean => self.remove(&id),
                Some(id) => {
                    let m = self.members.get_mut(&id).expect("found above");
                    m.away_since = Some(now);
                    m.info.away = true;
                    vec![
                        Effect::Broadcast { except: Some(conn), msg: ServerMessage::ParticipantAway { id } },
                        Effect::WakeAt { at: now + RECONNECT_GRACE_MS },
                    ]
                }
                None => Vec::new(),
            },
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
                    out.push(Effect::WakeAt { at: next + RECONNECT_GRACE_MS });
                }
                out
            }
        }
    }

    fn connect(&mut self, now: Millis, conn: ConnId, claims: Claims) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(m) = self.members.get_mut(&claims.sub) {
            // Same participant again (reconnect, or a second tab): the new connection takes over and
            // the session resumes; nobody else sees a leave or a join.
            let old = std::mem::replace(&mut m.conn, conn.clone());
            if m.away_since.take().is_some() {
                m.info.away = false;
                out.push(Effect::Broadcast { except: Some(conn.clone()), msg: ServerMessage::ParticipantBack { id: claims.sub.clone() } });
            } else {
                out.push(Effect::Close { conn: old, code: CLOSE_REPLACED, reason: "replaced by a newer connection".into() });
            }
        } else {
            let becomes_host = self.host.is_none();
            if becomes_host {
                self.host = Some(claims.sub.clone());
            }
            let info = ParticipantInfo {
                id: claims.sub.clone(),
                name: claims.name.clone(),
                role: if becomes_host { Role::Host } else { claims.role },
                audio_muted: false,
                video_muted: false,
                away: false,
            };
            // To everyone else: the newcomer learns about itself from the snapshot.
            out.push(Effect::Broadcast {
                except: Some(conn.clone()),
                msg: ServerMessage::ParticipantJoined { participant: info.clone() },
            });
            self.members.insert(claims.sub.clone(), Member { info, conn: conn.clone(), joined_at: now, away_since: None });
        }
        out.push(Effect::Send { conn, msg: ServerMessage::Snapshot { you: claims.sub, room: self.snapshot() } });
        out
    }

    fn frame(&mut self, conn: ConnId, text: &str) -> Vec<Effect> {
        let Some(id) = self.member_by_conn(&conn).cloned() else {
            return vec![Effect::Close { conn, code: 4403, reason: "not a member of this room".into() }];
        };
        let msg = match parse_client_message(text) {
            Ok(m) => m,
            Err(e) => return vec![Effect::Send { conn, msg: ServerMessage::Error { code: e.code, message: e.message } }],
        };
        match msg {
            ClientMessage::Hello { version } if version != PROTOCOL_VERSION => vec![Effect::Send {
                conn,
                msg: ServerMessage::Error {
                    code: ErrorCode::UnsupportedVersion,
                    message: format!("this server speaks protocol version {PROTOCOL_VERSION}, not {version}"),
                },
            }],
            ClientMessage::Hello { .. } => Vec::new(),
            ClientMessage::Ping { nonce } => vec![Effect::Send { conn, msg: ServerMessage::Pong { nonce } }],
            ClientMessage::SetMedia { audio_muted, video_muted } => {
                let m = self.members.get_mut(&id).expect("member found above");
                if (m.info.audio_muted, m.info.video_muted) == (audio_muted, video_muted) {
                    return Vec::new();
                }
                m.info.audio_muted = audio_muted;
                m.info.video_muted = video_muted;
                vec![Effect::Broadcast { except: None, msg: ServerMessage::MediaChanged { id, audio_muted, video_muted } }]
            }
            ClientMessage::Leave {} => {
                let mut out = self.remove(&id);
                out.push(Effect::Close { conn, code: 1000, reason: "left".into() });
                out
            }
        }
    }

    fn remove(&mut self, id: &str) -> Vec<Effect> {
        if self.members.remove(id).is_none() {
            return Vec::new();
        }
        let mut out = vec![Effect::Broadcast { except: None, msg: ServerMessage::ParticipantLeft { id: id.to_string() } }];
        if self.host.as_deref() == Some(id) {
            // Hand over to the longest-present member (ties: smallest id), or to nobody.
            self.host = self.members.iter().min_by_key(|(mid, m)| (m.joined_at, (*mid).clone())).map(|(mid, _)| mid.clone());
            if let Some(new) = &self.host {
                if let Some(m) = self.members.get_mut(new) {
                    m.info.role = Role::Host;
                }
                out.push(Effect::Broadcast { except: None, msg: ServerMessage::HostChanged { id: new.clone() } });
            }
        }
        out
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
        room.handle(0, Input::Connect { conn: conn.into(), claims: claims(id) })
    }

    #[test]
    fn joining_sends_a_snapshot_and_tells_the_others() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let fx = connect(&mut r, "b", "c2");
        assert!(matches!(&fx[0], Effect::Broadcast { except: Some(c), msg: ServerMessage::ParticipantJoined { participant } }
            if participant.id == "b" && c == "c2"));
        match &fx[1] {
            Effect::Send { conn, msg: ServerMessage::Snapshot { you, room } } => {
                assert_eq!(conn, "c2");
                assert_eq!(you, "b");
                let ids: Vec<_> = room.participants.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(ids, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_joiner_hosts_and_hands_over_to_the_longest_present() {
        let mut r = Room::new("r");
        r.handle(0, Input::Connect { conn: "c1".into(), claims: claims("a") });
        r.handle(10, Input::Connect { conn: "c3".into(), claims: claims("c") });
        r.handle(20, Input::Connect { conn: "c2".into(), claims: claims("b") });
        let snap = r.snapshot();
        assert_eq!(snap.host.as_deref(), Some("a"));
        assert_eq!(snap.participants[0].role, Role::Host);
        assert_eq!(snap.participants[1].role, Role::Participant);
        // A non-host leaving changes nothing about hosting.
        let fx = r.handle(30, Input::Disconnect { conn: "c2".into(), clean: true });
        assert_eq!(fx.len(), 1);
        // The host leaving hands over to c (joined at 10), not to whoever sorts first.
        r.handle(31, Input::Connect { conn: "c2".into(), claims: claims("b") });
        let fx = r.handle(40, Input::Disconnect { conn: "c1".into(), clean: true });
        assert_eq!(fx[1], Effect::Broadcast { except: None, msg: ServerMessage::HostChanged { id: "c".into() } });
        assert_eq!(r.host(), Some("c"));
        assert_eq!(r.role_of("c"), Some(Role::Host));
        // The last one out leaves a room with no host; the next first joiner hosts.
        r.handle(50, Input::Disconnect { conn: "c3".into(), clean: true });
        r.handle(51, Input::Disconnect { conn: "c2".into(), clean: true });
        assert_eq!(r.host(), None);
        r.handle(60, Input::Connect { conn: "c9".into(), claims: claims("z") });
        assert_eq!(r.host(), Some("z"));
    }

    #[test]
    fn a_dropped_connection_that_comes_back_in_time_resumes_silently() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        r.handle(100, Input::Frame { conn: "c2".into(), text: r#"{"type":"set_media","audio_muted":true,"video_muted":false}"#.into() });
        let fx = r.handle(1_000, Input::Disconnect { conn: "c2".into(), clean: false });
        assert_eq!(
            fx,
            vec![
                Effect::Broadcast { except: Some("c2".into()), msg: ServerMessage::ParticipantAway { id: "b".into() } },
                Effect::WakeAt { at: 1_000 + RECONNECT_GRACE_MS },
            ],
            "the others learn b is away, not gone"
        );
        assert_eq!(r.snapshot().participants.len(), 2);
        assert!(r.snapshot().participants[1].away);
        // An early alarm removes nobody.
        assert_eq!(r.handle(5_000, Input::Tick), vec![Effect::WakeAt { at: 1_000 + RECONNECT_GRACE_MS }]);
        // Back within the grace period: only the snapshot, no join broadcast, state kept.
        let fx = r.handle(9_000, Input::Connect { conn: "c2b".into(), claims: claims("b") });
        assert_eq!(fx[0], Effect::Broadcast { except: Some("c2b".into()), msg: ServerMessage::ParticipantBack { id: "b".into() } });
        assert!(matches!(&fx[1..], [Effect::Send { conn, msg: ServerMessage::Snapshot { .. } }] if conn == "c2b"), "{fx:?}");
        assert!(!r.snapshot().participants[1].away);
        assert!(r.snapshot().participants.iter().find(|p| p.id == "b").unwrap().audio_muted);
        // The alarm that was set finds nobody away.
        assert!(r.handle(11_000, Input::Tick).is_empty());
        // The old connection's late close changes nothing.
        assert!(r.handle(11_001, Input::Disconnect { conn: "c2".into(), clean: true }).is_empty());
        assert_eq!(r.snapshot().participants.len(), 2);
    }

    #[test]
    fn a_dropped_connection_that_stays_away_leaves_after_the_grace_period() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        r.handle(1_000, Input::Disconnect { conn: "c1".into(), clean: false });
        let fx = r.handle(1_000 + RECONNECT_GRACE_MS, Input::Tick);
        assert_eq!(fx[0], Effect::Broadcast { except: None, msg: ServerMessage::ParticipantLeft { id: "a".into() } });
        assert_eq!(fx[1], Effect::Broadcast { except: None, msg: ServerMessage::HostChanged { id: "b".into() } });
        assert_eq!(fx.len(), 2, "nobody else is away: no further alarm");
        // Coming back later is a clean rejoin: everyone sees a join.
        let fx = r.handle(20_000, Input::Connect { conn: "c1b".into(), claims: claims("a") });
        assert!(matches!(&fx[0], Effect::Broadcast { msg: ServerMessage::ParticipantJoined { .. }, .. }));
        assert_eq!(r.host(), Some("b"));
    }

    #[test]
    fn the_alarm_follows_the_earliest_remaining_absence() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        connect(&mut r, "c", "c3");
        r.handle(1_000, Input::Disconnect { conn: "c1".into(), clean: false });
        r.handle(4_000, Input::Disconnect { conn: "c2".into(), clean: false });
        let fx = r.handle(1_000 + RECONNECT_GRACE_MS, Input::Tick);
        assert!(fx.contains(&Effect::Broadcast { except: None, msg: ServerMessage::ParticipantLeft { id: "a".into() } }));
        assert_eq!(fx.last(), Some(&Effect::WakeAt { at: 4_000 + RECONNECT_GRACE_MS }));
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
        assert_eq!(fx[0], Effect::Close { conn: "c1".into(), code: CLOSE_REPLACED, reason: "replaced by a newer connection".into() });
        assert_eq!(r.snapshot().participants.len(), 1);
        // The old connection closing afterwards must not remove the participant.
        assert!(r.handle(1, Input::Disconnect { conn: "c1".into(), clean: true }).is_empty());
        assert_eq!(r.snapshot().participants.len(), 1);
    }

    #[test]
    fn mute_is_broadcast_once_per_change() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let set = |r: &mut Room| r.handle(1, Input::Frame { conn: "c1".into(), text: r#"{"type":"set_media","audio_muted":true,"video_muted":false}"#.into() });
        let fx = set(&mut r);
        assert_eq!(fx, vec![Effect::Broadcast { except: None, msg: ServerMessage::MediaChanged { id: "a".into(), audio_muted: true, video_muted: false } }]);
        assert!(set(&mut r).is_empty());
        assert!(r.snapshot().participants[0].audio_muted);
    }

    #[test]
    fn leave_and_disconnect_remove_and_tell_everyone() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        connect(&mut r, "b", "c2");
        let fx = r.handle(1, Input::Frame { conn: "c1".into(), text: r#"{"type":"leave"}"#.into() });
        assert_eq!(fx[0], Effect::Broadcast { except: None, msg: ServerMessage::ParticipantLeft { id: "a".into() } });
        assert_eq!(fx[1], Effect::Broadcast { except: None, msg: ServerMessage::HostChanged { id: "b".into() } });
        assert!(matches!(&fx[2], Effect::Close { code: 1000, .. }));
        let fx = r.handle(2, Input::Disconnect { conn: "c2".into(), clean: true });
        assert_eq!(fx.len(), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn bad_frames_get_an_error_and_change_nothing() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let before = r.clone();
        for bad in ["garbage", r#"{"type":"set_media"}"#, r#"{"type":"hello","version":99}"#] {
            let fx = r.handle(1, Input::Frame { conn: "c1".into(), text: bad.into() });
            assert!(matches!(&fx[..], [Effect::Send { msg: ServerMessage::Error { .. }, .. }]), "{bad}: {fx:?}");
        }
        assert_eq!(r, before);
    }

    #[test]
    fn frames_from_unknown_connections_close_them() {
        let mut r = Room::new("r");
        let fx = r.handle(1, Input::Frame { conn: "x".into(), text: r#"{"type":"ping","nonce":1}"#.into() });
        assert!(matches!(&fx[..], [Effect::Close { code: 4403, .. }]));
    }

    #[test]
    fn ping_is_answered_and_state_survives_serialization() {
        let mut r = Room::new("r");
        connect(&mut r, "a", "c1");
        let fx = r.handle(1, Input::Frame { conn: "c1".into(), text: r#"{"type":"ping","nonce":7}"#.into() });
        assert_eq!(fx, vec![Effect::Send { conn: "c1".into(), msg: ServerMessage::Pong { nonce: 7 } }]);
        let back: Room = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
