//! Unit tests of the room core, including whole sequences in simulated time. Every input goes
//! through [`Sim`], which applies the room's [`Output::Persist`] rows to a fake store and checks
//! that the room rebuilt from the store equals the live one: no change escapes persistence.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use super::*;
use crate::protocol::SfuEvent;
use crate::protocol::CHAT_HISTORY;
use crate::protocol::CLOSE_ENDED;
use crate::token::Grants;

/// A room and its store.
struct Sim {
    room: Room,
    meta: Option<String>,
    members: BTreeMap<String, String>,
    revoked: BTreeMap<String, u64>,
    chat: BTreeMap<u64, String>,
    polls: BTreeMap<u64, String>,
    report: BTreeMap<u64, String>,
    warnings: Vec<String>,
}

impl Deref for Sim {
    type Target = Room;
    fn deref(&self) -> &Room {
        &self.room
    }
}

impl DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut Room {
        &mut self.room
    }
}

impl Sim {
    fn new(name: &str) -> Sim {
        Sim {
            room: Room::new(name),
            meta: None,
            members: BTreeMap::new(),
            revoked: BTreeMap::new(),
            chat: BTreeMap::new(),
            polls: BTreeMap::new(),
            report: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Feeds `input`; returns the outputs other than persistence and log lines.
    fn run(&mut self, now: Millis, input: Input) -> Vec<Output> {
        self.room.handle_input(now, input);
        let out = self.drain();
        assert_eq!(
            self.restored(),
            self.room,
            "the stored rows must rebuild the room"
        );
        out
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.room.poll_output() {
            match o {
                Output::Persist(c) => self.apply(c),
                Output::Warn(w) => self.warnings.push(w),
                o => out.push(o),
            }
        }
        out
    }

    fn apply(&mut self, c: Changes) {
        if let Some(m) = c.meta {
            self.meta = Some(m);
        }
        for (id, row) in c.members {
            match row {
                Some(json) => self.members.insert(id, json),
                None => self.members.remove(&id),
            };
        }
        for (id, until) in c.revoked {
            match until {
                Some(u) => self.revoked.insert(id, u),
                None => self.revoked.remove(&id),
            };
        }
        for (n, row) in c.chat {
            match row {
                Some(json) => self.chat.insert(n, json),
                None => self.chat.remove(&n),
            };
        }
        for (n, row) in c.polls {
            match row {
                Some(json) => self.polls.insert(n, json),
                None => self.polls.remove(&n),
            };
        }
        for (n, row) in c.report {
            match row {
                Some(json) => self.report.insert(n, json),
                None => self.report.remove(&n),
            };
        }
    }

    fn restored(&self) -> Room {
        let (mut room, errors) = Room::restore(
            self.room.name(),
            self.meta.as_deref(),
            self.members.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.revoked.iter().map(|(k, v)| (k.as_str(), *v)),
            self.chat.values().map(String::as_str),
            self.polls.values().map(String::as_str),
        );
        assert_eq!(errors, vec![]);
        let errors = room.restore_report_outbox(self.report.values().map(String::as_str));
        assert_eq!(errors, vec![]);
        room
    }

    /// The object is evicted and rebuilt from storage; `open` connections survived (hibernation).
    fn evict(&mut self, now: Millis, open: &[&str]) -> Vec<Output> {
        self.room = self.restored();
        self.run(
            now,
            Input::Restored {
                open: open.iter().map(|c| c.to_string()).collect(),
            },
        )
    }
}

/// The block an offer carries for someone nothing was stopped of who is not sharing a screen.
fn not_sharing() -> crate::protocol::BlockBody {
    crate::protocol::BlockBody {
        screen: true,
        ..Default::default()
    }
}

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
        waiting: false,
        bid: None,
        door: 0,
        admitted: false,
    }
}

fn connect(room: &mut Sim, id: &str, conn: &str) -> Vec<Output> {
    room.run(
        0,
        Input::Connect {
            conn: conn.into(),
            claims: claims(id),
        },
    )
}

#[test]
fn joining_sends_a_snapshot_and_tells_the_others() {
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    let fx = connect(&mut r, "b", "c2");
    assert!(
        matches!(&fx[0], Output::Broadcast { except: Some(c), msg: ServerMessage::ParticipantJoined { participant } }
        if participant.id == "b" && c == "c2")
    );
    match &fx[1] {
        Output::Send {
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
    let mut r = Sim::new("r");
    r.run(
        0,
        Input::Connect {
            conn: "c1".into(),
            claims: claims("a"),
        },
    );
    r.run(
        10,
        Input::Connect {
            conn: "c3".into(),
            claims: claims("c"),
        },
    );
    r.run(
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
    let fx = r.run(
        30,
        Input::Disconnect {
            conn: "c2".into(),
            clean: true,
        },
    );
    assert_eq!(fx.len(), 1);
    // The host leaving hands over to c (joined at 10), not to whoever sorts first.
    r.run(
        31,
        Input::Connect {
            conn: "c2".into(),
            claims: claims("b"),
        },
    );
    let fx = r.run(
        40,
        Input::Disconnect {
            conn: "c1".into(),
            clean: true,
        },
    );
    assert_eq!(
        fx[1],
        Output::Broadcast {
            except: None,
            msg: ServerMessage::HostChanged { id: "c".into() }
        }
    );
    assert_eq!(r.host(), Some("c"));
    assert_eq!(r.role_of("c"), Some(Role::Host));
    // The last one out leaves a room with no host; the next first joiner hosts.
    r.run(
        50,
        Input::Disconnect {
            conn: "c3".into(),
            clean: true,
        },
    );
    r.run(
        51,
        Input::Disconnect {
            conn: "c2".into(),
            clean: true,
        },
    );
    assert_eq!(r.host(), None);
    r.run(
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
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    connect(&mut r, "b", "c2");
    r.run(
        100,
        Input::Frame {
            conn: "c2".into(),
            text: r#"{"type":"set_media","audio_muted":true,"video_muted":false}"#.into(),
        },
    );
    let fx = r.run(
        1_000,
        Input::Disconnect {
            conn: "c2".into(),
            clean: false,
        },
    );
    assert_eq!(
        fx,
        vec![Output::Broadcast {
            except: Some("c2".into()),
            msg: ServerMessage::ParticipantAway { id: "b".into() }
        },],
        "the others learn b is away, not gone"
    );
    assert_eq!(r.poll_timeout(), Some(1_000 + RECONNECT_GRACE_MS));
    assert_eq!(r.snapshot().participants.len(), 2);
    assert!(r.snapshot().participants[1].away);
    // An early alarm removes nobody.
    assert_eq!(r.run(5_000, Input::Timeout), vec![]);
    assert_eq!(r.poll_timeout(), Some(1_000 + RECONNECT_GRACE_MS));
    // Back within the grace period: only the snapshot, no join broadcast, state kept.
    let fx = r.run(
        9_000,
        Input::Connect {
            conn: "c2b".into(),
            claims: claims("b"),
        },
    );
    assert_eq!(
        fx[0],
        Output::Broadcast {
            except: Some("c2b".into()),
            msg: ServerMessage::ParticipantBack { id: "b".into() }
        }
    );
    assert!(
        matches!(&fx[1..], [Output::Send { conn, msg: ServerMessage::Snapshot { .. } }] if conn == "c2b"),
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
    assert!(r.run(11_000, Input::Timeout).is_empty());
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
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    connect(&mut r, "b", "c2");
    r.run(
        1_000,
        Input::Disconnect {
            conn: "c1".into(),
            clean: false,
        },
    );
    let fx = r.run(1_000 + RECONNECT_GRACE_MS, Input::Timeout);
    assert_eq!(
        fx[0],
        Output::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantLeft { id: "a".into() }
        }
    );
    assert_eq!(
        fx[1],
        Output::Broadcast {
            except: None,
            msg: ServerMessage::HostChanged { id: "b".into() }
        }
    );
    assert_eq!(fx.len(), 2, "nobody else is away: no further alarm");
    // Coming back later is a clean rejoin: everyone sees a join.
    let fx = r.run(
        20_000,
        Input::Connect {
            conn: "c1b".into(),
            claims: claims("a"),
        },
    );
    assert!(matches!(
        &fx[0],
        Output::Broadcast {
            msg: ServerMessage::ParticipantJoined { .. },
            ..
        }
    ));
    assert_eq!(r.host(), Some("b"));
}

#[test]
fn the_alarm_follows_the_earliest_remaining_absence() {
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    connect(&mut r, "b", "c2");
    connect(&mut r, "c", "c3");
    r.run(
        1_000,
        Input::Disconnect {
            conn: "c1".into(),
            clean: false,
        },
    );
    r.run(
        4_000,
        Input::Disconnect {
            conn: "c2".into(),
            clean: false,
        },
    );
    let fx = r.run(1_000 + RECONNECT_GRACE_MS, Input::Timeout);
    assert!(fx.contains(&Output::Broadcast {
        except: None,
        msg: ServerMessage::ParticipantLeft { id: "a".into() }
    }));
    assert_eq!(r.poll_timeout(), Some(4_000 + RECONNECT_GRACE_MS));
}

#[test]
fn a_reconnecting_host_stays_host() {
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    connect(&mut r, "b", "c2");
    connect(&mut r, "a", "c1b");
    assert_eq!(r.host(), Some("a"));
    assert_eq!(r.role_of("a"), Some(Role::Host));
}

#[test]
fn a_duplicate_join_replaces_the_old_connection_without_a_second_member() {
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    let fx = connect(&mut r, "a", "c2");
    assert_eq!(
        fx[0],
        Output::Close {
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
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    let set = |r: &mut Sim| {
        r.run(
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
        vec![Output::Broadcast {
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
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    connect(&mut r, "b", "c2");
    let fx = r.run(
        1,
        Input::Frame {
            conn: "c1".into(),
            text: r#"{"type":"leave"}"#.into(),
        },
    );
    assert_eq!(
        fx[0],
        Output::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantLeft { id: "a".into() }
        }
    );
    assert_eq!(
        fx[1],
        Output::Broadcast {
            except: None,
            msg: ServerMessage::HostChanged { id: "b".into() }
        }
    );
    assert!(matches!(&fx[2], Output::Close { code: 1000, .. }));
    let fx = r.run(
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
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    let before = r.room.clone();
    for bad in [
        "garbage",
        r#"{"type":"set_media"}"#,
        r#"{"type":"hello","version":99}"#,
    ] {
        let fx = r.run(
            1,
            Input::Frame {
                conn: "c1".into(),
                text: bad.into(),
            },
        );
        assert!(
            matches!(
                &fx[..],
                [Output::Send {
                    msg: ServerMessage::Error { .. },
                    ..
                }]
            ),
            "{bad}: {fx:?}"
        );
    }
    assert_eq!(r.room, before);
}

#[test]
fn frames_from_unknown_connections_make_them_reconnect() {
    // A socket the room has no member for (its join was never stored) reconnects: joining again
    // is how it becomes a member, or is refused.
    let mut r = Sim::new("r");
    let fx = r.run(
        1,
        Input::Frame {
            conn: "x".into(),
            text: r#"{"type":"ping","nonce":1}"#.into(),
        },
    );
    assert!(matches!(
        &fx[..],
        [Output::Close {
            code: CLOSE_RECONNECT,
            ..
        }]
    ));
    // The same after a restore: a surviving socket nobody is stored for.
    connect(&mut r, "a", "c1");
    let fx = r.evict(10, &["c1", "orphan"]);
    assert_eq!(
        fx,
        vec![Output::Close {
            conn: "orphan".into(),
            code: CLOSE_RECONNECT,
            reason: "please reconnect".into()
        }]
    );
}

#[test]
fn ping_is_answered_and_state_survives_serialization() {
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    let fx = r.run(
        1,
        Input::Frame {
            conn: "c1".into(),
            text: r#"{"type":"ping","nonce":7}"#.into(),
        },
    );
    assert_eq!(
        fx,
        vec![Output::Send {
            conn: "c1".into(),
            msg: ServerMessage::Pong { nonce: 7 }
        }]
    );
    assert_eq!(r.restored(), r.room);
}

const SDP: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

fn choice(id: &str) -> SfuChoice {
    SfuChoice {
        id: id.into(),
        region: id.into(),
        url: format!("http://{id}"),
        distance_km: None,
        score: 0.0,
        reason: format!("test choice {id}"),
    }
}

/// A room on SFU `sfu-1` with `id` connected on `c1`.
fn with_sfu(id: &str) -> Sim {
    let mut r = Sim::new("r");
    r.run(
        0,
        Input::SfuChosen {
            choice: choice("sfu-1"),
        },
    );
    connect(&mut r, id, "c1");
    r
}

fn frame(r: &mut Sim, conn: &str, msg: &ClientMessage) -> Vec<Output> {
    frame_at(r, 1, conn, msg)
}

fn frame_at(r: &mut Sim, now: Millis, conn: &str, msg: &ClientMessage) -> Vec<Output> {
    r.run(
        now,
        Input::Frame {
            conn: conn.into(),
            text: serde_json::to_string(msg).unwrap(),
        },
    )
}

fn call(sfu: &str, participant: &str, call: SfuCall) -> Output {
    Output::Sfu {
        sfu: choice(sfu),
        participant: participant.into(),
        call,
    }
}

fn answered(status: u16, body: &str) -> HttpReply {
    HttpReply::Answered {
        status,
        body: body.into(),
    }
}

fn gone() -> HttpReply {
    HttpReply::Unreachable {
        reason: "connection refused".into(),
    }
}

fn is_error(fx: &[Output], code: ErrorCode) -> bool {
    matches!(fx, [Output::Send { msg: ServerMessage::Error { code: c, .. }, .. }] if *c == code)
}

fn moved_to(fx: &[Output]) -> Option<String> {
    fx.iter().find_map(|o| match o {
        Output::Broadcast {
            except: None,
            msg: ServerMessage::SfuChanged { sfu, .. },
        } => Some(sfu.clone()),
        _ => None,
    })
}

fn finds(fx: &[Output]) -> Option<(String, Vec<String>)> {
    fx.iter().find_map(|o| match o {
        Output::FindSfu { failed, exclude } => Some((failed.clone(), exclude.clone())),
        _ => None,
    })
}

fn probes(fx: &[Output]) -> Option<String> {
    fx.iter().find_map(|o| match o {
        Output::ProbeSfu { sfu } => Some(sfu.id.clone()),
        _ => None,
    })
}

#[test]
fn an_offer_goes_to_the_sfu_and_its_answer_back_to_the_sender_only() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    let offer = SfuCall::Offer {
        sdp: SDP.into(),
        id: 7,
        block: not_sharing(),
        scope: 0,
    };
    let fx = frame(
        &mut r,
        "c1",
        &ClientMessage::Offer {
            sdp: SDP.into(),
            id: 7,
        },
    );
    assert_eq!(fx, vec![call("sfu-1", "a", offer.clone())]);
    let fx = r.run(
        2,
        Input::SfuReply {
            sfu: "sfu-1".into(),
            participant: "a".into(),
            call: offer.kind(),
            reply: answered(200, r#"{"sdp":"answer"}"#),
        },
    );
    assert_eq!(
        fx,
        vec![Output::Send {
            conn: "c1".into(),
            msg: ServerMessage::Answer {
                sdp: "answer".into(),
                id: 7,
            }
        }]
    );
    // An unreadable answer is an error for that participant, in words.
    let fx = r.run(
        3,
        Input::SfuReply {
            sfu: "sfu-1".into(),
            participant: "a".into(),
            call: offer.kind(),
            reply: answered(200, "not json"),
        },
    );
    assert!(is_error(&fx, ErrorCode::MediaServerError), "{fx:?}");
}

#[test]
fn garbage_sdp_is_refused_to_its_sender_without_calling_the_sfu() {
    let mut r = with_sfu("a");
    let before = r.room.clone();
    let fx = frame(
        &mut r,
        "c1",
        &ClientMessage::Offer {
            sdp: "hello".into(),
            id: 1,
        },
    );
    assert!(
        matches!(&fx[..], [Output::Send { conn, msg: ServerMessage::Error { code: ErrorCode::BadSdp, .. } }] if conn == "c1"),
        "{fx:?}"
    );
    assert_eq!(r.room, before);
}

#[test]
fn an_offer_without_a_media_server_is_a_clear_error() {
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    let fx = frame(
        &mut r,
        "c1",
        &ClientMessage::Offer {
            sdp: SDP.into(),
            id: 1,
        },
    );
    assert!(is_error(&fx, ErrorCode::NoMediaServer), "{fx:?}");
}

#[test]
fn a_token_without_media_grants_cannot_offer() {
    let mut r = with_sfu("a");
    let mut c = claims("v");
    c.grants = Grants::default();
    r.run(
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
    assert!(is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
}

#[test]
fn sfu_offers_are_relayed_answered_once_and_replayed_after_a_reconnect() {
    let mut r = with_sfu("a");
    // An answer nobody asked for is refused.
    let fx = frame(
        &mut r,
        "c1",
        &ClientMessage::Answer {
            sdp: SDP.into(),
            generation: 0,
        },
    );
    assert!(is_error(&fx, ErrorCode::BadMessage), "{fx:?}");

    // The socket drops; the SFU's offer arrives meanwhile and is held — and stored: `Sim` checks
    // that the stored rows rebuild the room after every input, held offer included.
    r.run(
        2,
        Input::Disconnect {
            conn: "c1".into(),
            clean: false,
        },
    );
    assert_eq!(
        r.run(
            3,
            Input::SfuOffer {
                participant: "a".into(),
                sdp: "o1".into(),
                sfu: None,
                generation: 7,
            }
        ),
        vec![]
    );
    assert!(r.members["a"].contains("o1"), "the held offer is stored");
    // Back within the grace period: snapshot first, then the held offer.
    let fx = r.run(
        4,
        Input::Connect {
            conn: "c3".into(),
            claims: claims("a"),
        },
    );
    let sends: Vec<&ServerMessage> = fx
        .iter()
        .filter_map(|e| match e {
            Output::Send { conn, msg } if conn == "c3" => Some(msg),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            sends[..],
            [
                ServerMessage::Snapshot { resumed: true, .. },
                ServerMessage::Offer { generation: 7, .. }
            ]
        ),
        "{sends:?}"
    );
    // An answer to an older offer (the page had number 6 before): not the one held, which
    // stays held for the page's next answer; nothing to tell anyone.
    let fx = frame(
        &mut r,
        "c3",
        &ClientMessage::Answer {
            sdp: SDP.into(),
            generation: 6,
        },
    );
    assert_eq!(fx, vec![]);
    assert!(r.members["a"].contains("o1"), "still held");
    let fx = frame(
        &mut r,
        "c3",
        &ClientMessage::Answer {
            sdp: SDP.into(),
            generation: 7,
        },
    );
    assert_eq!(
        fx,
        vec![call(
            "sfu-1",
            "a",
            SfuCall::Answer {
                sdp: SDP.into(),
                generation: 7,
            }
        )]
    );
    // A second answer to it (the page had a copy too): passed on to nobody, no error.
    let fx = frame(
        &mut r,
        "c3",
        &ClientMessage::Answer {
            sdp: SDP.into(),
            generation: 7,
        },
    );
    assert_eq!(fx, vec![]);
    // Answered: nothing is replayed on the next reconnect.
    r.run(
        5,
        Input::Disconnect {
            conn: "c3".into(),
            clean: false,
        },
    );
    let fx = r.run(
        6,
        Input::Connect {
            conn: "c4".into(),
            claims: claims("a"),
        },
    );
    assert!(
        !fx.iter().any(|e| matches!(
            e,
            Output::Send {
                msg: ServerMessage::Offer { .. },
                ..
            }
        )),
        "{fx:?}"
    );
}

#[test]
fn a_late_post_of_an_older_sfu_offer_is_dropped_until_the_room_moves() {
    // Offers are numbered by the SFU's clock in µs; the SFU's posts to the edge may cross.
    const G: u64 = 1_764_000_000_000_000;
    let mut r = with_sfu("a");
    let offer = |sdp: &str, generation: u64, sfu: &str| Input::SfuOffer {
        participant: "a".into(),
        sdp: sdp.into(),
        sfu: Some(sfu.into()),
        generation,
    };
    let handed = |fx: &[Output]| -> Vec<u64> {
        fx.iter()
            .filter_map(|e| match e {
                Output::Send {
                    msg: ServerMessage::Offer { generation, .. },
                    ..
                } => Some(*generation),
                _ => None,
            })
            .collect()
    };
    assert_eq!(handed(&r.run(2, offer("o2", G + 2, "sfu-1"))), vec![G + 2]);
    // The post of the offer before it arrives late: not held, not handed to the page (it would
    // take the page back to an older description).
    let fx = r.run(3, offer("o1", G + 1, "sfu-1"));
    assert_eq!(handed(&fx), Vec::<u64>::new());
    assert_eq!(fx, vec![]);
    assert!(
        r.warnings.last().is_some_and(|w| w.contains("is newer")),
        "{:?}",
        r.warnings
    );
    assert!(r.members["a"].contains("o2"), "the newer one is still held");
    // Answered: still the newest number from this SFU, so an older post is still dropped, and a
    // copy of the same offer (the SFU never had the answer) is handed over again.
    let fx = frame(
        &mut r,
        "c1",
        &ClientMessage::Answer {
            sdp: SDP.into(),
            generation: G + 2,
        },
    );
    assert_eq!(fx.len(), 1, "{fx:?}");
    assert_eq!(
        handed(&r.run(4, offer("o1", G + 1, "sfu-1"))),
        Vec::<u64>::new()
    );
    assert_eq!(handed(&r.run(5, offer("o2", G + 2, "sfu-1"))), vec![G + 2]);
    // An offer older by more than the window: the SFU restarted with its clock set back.
    let back = G + 2 - LATE_OFFER_WINDOW_US - 1;
    assert_eq!(handed(&r.run(6, offer("o0", back, "sfu-1"))), vec![back]);
    assert_eq!(handed(&r.run(7, offer("o3", G + 3, "sfu-1"))), vec![G + 3]);
    // The room moves to another SFU: its numbers (its own clock, 5 s behind) start afresh.
    r.run(
        8_000,
        Input::SfuDraining {
            sfu: "sfu-1".into(),
        },
    );
    let fx = r.run(
        8_100,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-2"));
    let n1 = G - 5_000_000;
    assert_eq!(handed(&r.run(8_200, offer("n1", n1, "sfu-2"))), vec![n1]);
    // A new PeerConnection (the page's own offer) drops the offer held for the old one and
    // forgets the numbers too: an SFU restarted with its clock a second behind stalls nobody.
    let fx = frame_at(
        &mut r,
        8_300,
        "c1",
        &ClientMessage::Offer {
            sdp: SDP.into(),
            id: 2,
        },
    );
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Output::Sfu {
                call: SfuCall::Offer { .. },
                ..
            }
        )),
        "{fx:?}"
    );
    assert!(
        !r.members["a"].contains("n1"),
        "the old session's offer is not held"
    );
    let n2 = n1 - 1_000_000;
    assert_eq!(handed(&r.run(8_400, offer("n2", n2, "sfu-2"))), vec![n2]);
    // An SFU from before numbered each session's offers from 1: never compared.
    assert_eq!(handed(&r.run(8_500, offer("s4", 4, "sfu-2"))), vec![4]);
    assert_eq!(handed(&r.run(8_600, offer("s1", 1, "sfu-2"))), vec![1]);
}

#[test]
fn leaving_frees_the_participant_on_the_sfu_and_late_sfu_messages_go_nowhere() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    let fx = frame(&mut r, "c2", &ClientMessage::Leave {});
    assert!(fx.contains(&call("sfu-1", "b", SfuCall::Leave)), "{fx:?}");
    assert_eq!(
        r.run(
            3,
            Input::SfuOffer {
                participant: "b".into(),
                sdp: "o".into(),
                sfu: None,
                generation: 0,
            }
        ),
        vec![]
    );
    assert_eq!(
        r.run(
            3,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: "b".into(),
                call: SfuCallKind::Offer {
                    id: 1,
                    block: not_sharing(),
                    scope: 0,
                },
                reply: answered(200, r#"{"sdp":"a"}"#),
            }
        ),
        vec![]
    );
    // A dropped participant whose grace runs out is freed too.
    r.run(
        4,
        Input::Disconnect {
            conn: "c1".into(),
            clean: false,
        },
    );
    let fx = r.run(4 + RECONNECT_GRACE_MS, Input::Timeout);
    assert!(fx.contains(&call("sfu-1", "a", SfuCall::Leave)), "{fx:?}");
}

#[test]
fn someone_who_leaves_while_the_room_checks_its_sfu_is_freed_there_too() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    connect(&mut r, "c", "c3");
    // b says media stopped: the room checks its SFU.
    let fx = frame_at(&mut r, 1_000, "c2", &ClientMessage::MediaFailed {});
    assert_eq!(probes(&fx).as_deref(), Some("sfu-1"));
    // c leaves meanwhile. A check that finds the SFU well moves nobody, so this is the only
    // time the SFU hears of it (a page that keeps its connection would go on receiving).
    let fx = frame_at(&mut r, 1_100, "c3", &ClientMessage::Leave {});
    assert!(fx.contains(&call("sfu-1", "c", SfuCall::Leave)), "{fx:?}");
    let ok = r#"{"known":true,"participants":3,"draining":false}"#;
    r.run(
        1_200,
        Input::Probed {
            sfu: "sfu-1".into(),
            reply: answered(200, ok),
        },
    );
    // While it looks for another SFU, the gone one is not called.
    let fx = frame_at(&mut r, 1_300, "c2", &ClientMessage::MediaFailed {});
    assert_eq!(probes(&fx).as_deref(), Some("sfu-1"));
    let fx = r.run(
        1_400,
        Input::Probed {
            sfu: "sfu-1".into(),
            reply: gone(),
        },
    );
    assert!(finds(&fx).is_some(), "{fx:?}");
    let fx = frame_at(&mut r, 1_500, "c2", &ClientMessage::Leave {});
    assert!(
        !fx.iter().any(|o| matches!(o, Output::Sfu { .. })),
        "{fx:?}"
    );
}

#[test]
fn sfu_refusals_reach_only_the_participant_concerned() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    let fx = r.run(
        2,
        Input::SfuReply {
            sfu: "sfu-1".into(),
            participant: "b".into(),
            call: SfuCallKind::Offer {
                id: 1,
                block: not_sharing(),
                scope: 0,
            },
            reply: answered(400, r#"{"code":"bad_sdp","message":"m"}"#),
        },
    );
    assert_eq!(
        fx,
        vec![Output::Send {
            conn: "c2".into(),
            msg: ServerMessage::Error {
                code: ErrorCode::BadSdp,
                message: "m".into()
            }
        }]
    );
    // Tile sizes for a session the SFU does not know yet are no error for anyone.
    let fx = r.run(
        3,
        Input::SfuReply {
            sfu: "sfu-1".into(),
            participant: "b".into(),
            call: SfuCallKind::Views,
            reply: answered(404, "{}"),
        },
    );
    assert_eq!(fx, vec![]);
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
    assert_eq!(fx, vec![call("sfu-1", "a", SfuCall::Views { views })]);
    let many = vec![
        TileView {
            publisher: "b".into(),
            source: crate::protocol::Source::Screen,
            height: 0,
        };
        MAX_VIEWS + 1
    ];
    let fx = frame(&mut r, "c1", &ClientMessage::Views { views: many });
    assert!(is_error(&fx, ErrorCode::BadMessage), "{fx:?}");
}

#[test]
fn everyone_sees_the_worse_of_a_pages_own_report_and_the_sfus_judgement() {
    use crate::health::Quality;
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    let sfu_says = |quality, version: u64, sfu: &str| {
        Input::SfuEvent(SfuEvent::Quality {
            room: "r".into(),
            participant: "b".into(),
            quality,
            sfu: Some(sfu.into()),
            version: Some(version),
        })
    };
    let told = |fx: &[Output]| -> Vec<Option<Quality>> {
        fx.iter()
            .filter_map(|o| match o {
                Output::Broadcast {
                    msg: ServerMessage::QualityChanged { id, quality },
                    ..
                } if id == "b" => Some(*quality),
                _ => None,
            })
            .collect()
    };
    let page =
        |r: &mut Sim, at, quality| frame_at(r, at, "c2", &ClientMessage::Quality { quality });
    // Bob's page says excellent (its sending is fine), the SFU sees his downlink lose 10 %: poor,
    // for everyone, whatever his page keeps saying.
    assert_eq!(
        told(&page(&mut r, 1_000, Quality::Excellent)),
        vec![Some(Quality::Excellent)]
    );
    assert_eq!(
        told(&r.run(2_000, sfu_says(Quality::Poor, 10, "sfu-1"))),
        vec![Some(Quality::Poor)]
    );
    assert!(
        told(&page(&mut r, 3_000, Quality::Good)).is_empty(),
        "still the SFU's poor"
    );
    // A repeat or an older judgement changes nothing; one from an SFU the room is not on neither.
    assert!(told(&r.run(3_100, sfu_says(Quality::Excellent, 9, "sfu-1"))).is_empty());
    assert!(told(&r.run(3_200, sfu_says(Quality::Excellent, 50, "sfu-old"))).is_empty());
    // The SFU sees him recover: his page's own band (good) shows again.
    assert_eq!(
        told(&r.run(4_000, sfu_says(Quality::Excellent, 11, "sfu-1"))),
        vec![Some(Quality::Good)]
    );
    // Now his page is the worse one.
    assert_eq!(
        told(&page(&mut r, 5_000, Quality::Poor)),
        vec![Some(Quality::Poor)]
    );
    // Someone not here: nothing.
    let fx = r.run(
        6_000,
        Input::SfuEvent(SfuEvent::Quality {
            room: "r".into(),
            participant: "nobody".into(),
            quality: Quality::Lost,
            sfu: Some("sfu-1".into()),
            version: Some(12),
        }),
    );
    assert!(fx.iter().all(|o| !matches!(
        o,
        Output::Broadcast {
            msg: ServerMessage::QualityChanged { .. },
            ..
        }
    )));
    let b = r
        .snapshot()
        .participants
        .into_iter()
        .find(|p| p.id == "b")
        .unwrap();
    assert_eq!(b.quality, Some(Quality::Poor));
    // Ada's page never said anything; the SFU judges her lost.
    let fx = r.run(
        6_500,
        Input::SfuEvent(SfuEvent::Quality {
            room: "r".into(),
            participant: "a".into(),
            quality: Quality::Lost,
            sfu: Some("sfu-1".into()),
            version: Some(13),
        }),
    );
    assert!(
        meeting::broadcasts(&fx).contains(&&ServerMessage::QualityChanged {
            id: "a".into(),
            quality: Some(Quality::Lost)
        })
    );
    // The SFU (sfu-1) judges him lost, then dies: the room moves, and the dead SFU's judgement
    // goes with it — his page's own band shows until the new SFU judges him.
    assert_eq!(
        told(&page(&mut r, 7_000, Quality::Good)),
        vec![Some(Quality::Good)]
    );
    assert_eq!(
        told(&r.run(7_100, sfu_says(Quality::Lost, 20, "sfu-1"))),
        vec![Some(Quality::Lost)]
    );
    r.run(
        8_000,
        Input::SfuDraining {
            sfu: "sfu-1".into(),
        },
    );
    let fx = r.run(
        8_100,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-2"));
    assert_eq!(told(&fx), vec![Some(Quality::Good)]);
    // Ada: nobody says anything of her now — everyone is told so (no stale "lost").
    assert!(
        meeting::broadcasts(&fx).contains(&&ServerMessage::QualityChanged {
            id: "a".into(),
            quality: None
        })
    );
    assert_eq!(
        told(&r.run(9_000, sfu_says(Quality::Excellent, 1, "sfu-2"))),
        vec![]
    );
}

#[test]
fn a_repeated_or_overtaken_sfu_event_changes_nothing() {
    // The SFU sends an event until the edge took it: the same one may come twice, and an older
    // one after a newer (a retry that overtook nothing, or one the edge answered late).
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    let layers = |active: Vec<bool>, version: u64, sfu: &str| {
        Input::SfuEvent(SfuEvent::PublishLayers {
            room: "r".into(),
            participant: "b".into(),
            active,
            sfu: Some(sfu.into()),
            version: Some(version),
        })
    };
    let speaker = |p: &str, version: u64| {
        Input::SfuEvent(SfuEvent::ActiveSpeaker {
            room: "r".into(),
            scope: 0,
            participant: Some(p.into()),
            sfu: Some("sfu-1".into()),
            version: Some(version),
        })
    };
    let sent = |fx: &[Output]| {
        fx.iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Send {
                        msg: ServerMessage::PublishLayers { .. },
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(
        sent(&r.run(5, layers(vec![true, true, false], 100, "sfu-1"))),
        1
    );
    assert_eq!(
        sent(&r.run(6, layers(vec![true, true, false], 100, "sfu-1"))),
        0,
        "a repeat"
    );
    assert_eq!(
        sent(&r.run(7, layers(vec![true, false, false], 90, "sfu-1"))),
        0,
        "an older one"
    );
    assert_eq!(
        sent(&r.run(8, layers(vec![true, false, false], 101, "sfu-1"))),
        1,
        "a newer one"
    );
    // Speaker events have their own versions: an older layers event does not hold them back.
    let fx = r.run(9, speaker("b", 50));
    assert!(
        fx.iter().any(|o| matches!(o, Output::Broadcast { .. })),
        "{fx:?}"
    );
    assert_eq!(
        r.run(10, speaker("a", 40)),
        vec![],
        "an overtaken speaker change"
    );
    assert_eq!(r.snapshot().speaker.as_deref(), Some("b"));
    // The versions survive eviction: a late repeat after a restore changes nothing either.
    r.evict(11, &["c1", "c2"]);
    assert_eq!(r.run(12, speaker("a", 40)), vec![]);
    assert_eq!(
        sent(&r.run(13, layers(vec![true, true, true], 101, "sfu-1"))),
        0
    );
}

#[test]
fn sfu_events_reach_the_publisher_or_everyone() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    let fx = r.run(
        5,
        Input::SfuEvent(SfuEvent::PublishLayers {
            room: "r".into(),
            participant: "b".into(),
            active: vec![true, false, false],
            sfu: None,
            version: None,
        }),
    );
    assert_eq!(
        fx,
        vec![Output::Send {
            conn: "c2".into(),
            msg: ServerMessage::PublishLayers {
                active: vec![true, false, false]
            }
        }]
    );
    let speaker = |p: Option<&str>| {
        Input::SfuEvent(SfuEvent::ActiveSpeaker {
            room: "r".into(),
            scope: 0,
            participant: p.map(String::from),
            sfu: None,
            version: None,
        })
    };
    let fx = r.run(6, speaker(Some("b")));
    assert_eq!(
        fx,
        vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::ActiveSpeaker {
                id: Some("b".into())
            }
        }]
    );
    assert_eq!(r.snapshot().speaker.as_deref(), Some("b"));
    assert_eq!(r.run(7, speaker(Some("b"))), vec![], "no repeat");
    assert_eq!(r.run(8, speaker(Some("zed"))), vec![], "not a member");
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
        vec![
            // The SFU now forwards b's screen tracks.
            call(
                "sfu-1",
                "b",
                SfuCall::Block {
                    audio: false,
                    video: false,
                    screen: false
                }
            ),
            Output::Broadcast {
                except: None,
                msg: ServerMessage::ScreenChanged {
                    id: "b".into(),
                    sharing: true
                }
            },
        ]
    );
    let refused = frame(&mut r, "c3", &share(true));
    assert!(
        matches!(&refused[..], [Output::Send { conn, msg: ServerMessage::Error { code: ErrorCode::Forbidden, .. } }] if conn == "c3"),
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
    assert!(is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
    let fx = frame(
        &mut r,
        "c1",
        &ClientMessage::SetRoomOptions {
            max_screen_sharers: 0,
        },
    );
    assert!(is_error(&fx, ErrorCode::BadRequest), "{fx:?}");
    frame(
        &mut r,
        "c1",
        &ClientMessage::SetRoomOptions {
            max_screen_sharers: 2,
        },
    );
    assert_eq!(r.snapshot().max_screen_sharers, 2);
    assert_eq!(frame(&mut r, "c3", &share(true)).len(), 2);
    assert!(
        r.snapshot()
            .participants
            .iter()
            .filter(|p| p.screen)
            .count()
            == 2
    );
    // Stopping twice is a no-op.
    assert_eq!(frame(&mut r, "c2", &share(false)).len(), 2);
    assert_eq!(frame(&mut r, "c2", &share(false)), vec![]);
}

// ---- The room's SFU: health, failover, drain (simulated time) ----

#[test]
fn media_failures_probe_once_and_a_dead_sfu_is_replaced() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    let fx = frame_at(&mut r, 1_000, "c1", &ClientMessage::MediaFailed {});
    assert_eq!(
        fx,
        vec![Output::ProbeSfu {
            sfu: choice("sfu-1")
        }]
    );
    // A second report while the probe runs changes nothing.
    assert_eq!(
        frame_at(&mut r, 1_100, "c2", &ClientMessage::MediaFailed {}),
        vec![]
    );
    // An SFU offer from before the failure is held for b (who has not answered it).
    r.run(
        1_150,
        Input::SfuOffer {
            participant: "b".into(),
            sdp: "old".into(),
            sfu: None,
            generation: 0,
        },
    );
    // No answer: the SFU is reported down (no new room goes there) and a replacement is sought.
    let fx = r.run(
        1_200,
        Input::Probed {
            sfu: "sfu-1".into(),
            reply: gone(),
        },
    );
    assert!(
        fx.contains(&Output::SfuDown {
            sfu: "sfu-1".into(),
            reason: "connection refused".into()
        }),
        "{fx:?}"
    );
    assert_eq!(
        finds(&fx),
        Some(("sfu-1".into(), vec!["sfu-1".to_string()]))
    );
    let fx = r.run(
        1_300,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-2"));
    assert_eq!(r.sfu().unwrap().id, "sfu-2");
    assert_eq!(r.snapshot().sfu.as_deref(), Some("sfu-2"));
    // The old SFU's offer is forgotten: an answer to it is refused.
    let fx = frame_at(
        &mut r,
        1_400,
        "c2",
        &ClientMessage::Answer {
            sdp: SDP.into(),
            generation: 0,
        },
    );
    assert!(is_error(&fx, ErrorCode::BadMessage), "{fx:?}");
    // Members, host and mute state are untouched.
    assert_eq!(r.snapshot().participants.len(), 2);
    assert_eq!(r.host(), Some("a"));
    // Reports still on their way from the old connections do not probe the new SFU before
    // everyone could reach it; a report after that does.
    assert_eq!(
        frame_at(
            &mut r,
            1_300 + SETTLE_MS - 1,
            "c1",
            &ClientMessage::MediaFailed {}
        ),
        vec![]
    );
    let fx = frame_at(
        &mut r,
        1_300 + SETTLE_MS,
        "c1",
        &ClientMessage::MediaFailed {},
    );
    assert_eq!(probes(&fx).as_deref(), Some("sfu-2"));
}

#[test]
fn a_restarted_sfu_makes_everyone_set_media_up_again_on_it() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    frame_at(&mut r, 1_000, "c1", &ClientMessage::MediaFailed {});
    let fx = r.run(
        1_010,
        Input::Probed {
            sfu: "sfu-1".into(),
            reply: answered(200, r#"{"known":false,"participants":0,"draining":false}"#),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-1"));
    assert_eq!(r.sfu().unwrap().id, "sfu-1");
    assert_eq!(
        frame_at(&mut r, 1_020, "c2", &ClientMessage::MediaFailed {}),
        vec![],
        "everyone is still arriving"
    );
    let fx = frame_at(
        &mut r,
        1_010 + SETTLE_MS,
        "c2",
        &ClientMessage::MediaFailed {},
    );
    assert_eq!(
        probes(&fx).as_deref(),
        Some("sfu-1"),
        "settled: checked again"
    );
}

#[test]
fn a_healthy_answer_ends_the_check_and_a_lost_probe_is_sent_again() {
    let mut r = with_sfu("a");
    assert_eq!(r.poll_timeout(), None, "nothing to wait for");
    let fx = frame_at(&mut r, 100, "c1", &ClientMessage::MediaFailed {});
    assert!(probes(&fx).is_some());
    assert_eq!(r.poll_timeout(), Some(100 + PROBE_LOST_MS));
    let ok = r#"{"known":true,"participants":1,"draining":false}"#;
    assert_eq!(
        r.run(
            150,
            Input::Probed {
                sfu: "sfu-1".into(),
                reply: answered(200, ok)
            }
        ),
        vec![]
    );
    assert_eq!(r.poll_timeout(), None);
    let fx = frame_at(&mut r, 200, "c1", &ClientMessage::MediaFailed {});
    assert!(
        probes(&fx).is_some(),
        "checked again after a healthy answer"
    );
    // The answer to that probe never comes (the object was evicted while waiting): at the
    // deadline the room probes again by itself.
    assert_eq!(r.run(300, Input::Timeout), vec![]);
    let fx = r.run(200 + PROBE_LOST_MS, Input::Timeout);
    assert_eq!(probes(&fx).as_deref(), Some("sfu-1"));
    // A late answer about another SFU changes nothing.
    assert_eq!(
        r.run(
            9_000,
            Input::Probed {
                sfu: "sfu-9".into(),
                reply: gone()
            }
        ),
        vec![]
    );
}

/// CI went red on exactly this: the room moved at once (its first SFU had just been killed), the
/// drain notice for the new SFU came 4 s later, inside the "ignore reports after a move" window,
/// and was dropped; the SFU exited with the call on it.
#[test]
fn a_drain_notice_right_after_a_move_still_moves_the_room() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    // The first SFU is dead: the first offer cannot reach it.
    let fx = r.run(
        1_000,
        Input::SfuReply {
            sfu: "sfu-1".into(),
            participant: "a".into(),
            call: SfuCallKind::Offer {
                id: 1,
                block: not_sharing(),
                scope: 0,
            },
            reply: gone(),
        },
    );
    assert!(fx.contains(&Output::SfuDown {
        sfu: "sfu-1".into(),
        reason: "connection refused".into()
    }));
    assert_eq!(probes(&fx).as_deref(), Some("sfu-1"));
    let fx = r.run(
        1_500,
        Input::Probed {
            sfu: "sfu-1".into(),
            reply: gone(),
        },
    );
    assert!(finds(&fx).is_some());
    let fx = r.run(
        1_600,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-2"));
    assert!(
        !fx.iter().any(|o| matches!(o, Output::Sfu { .. })),
        "nothing to ask a dead SFU: {fx:?}"
    );
    // 4 s later sfu-2 is told to stop and names the room.
    let fx = r.run(
        5_600,
        Input::SfuDraining {
            sfu: "sfu-2".into(),
        },
    );
    let (failed, exclude) = finds(&fx).expect("a drain notice always looks for a new SFU");
    assert_eq!(failed, "sfu-2");
    assert_eq!(exclude, vec!["sfu-1".to_string(), "sfu-2".to_string()]);
    let fx = r.run(
        5_650,
        Input::SfuFound {
            result: Ok(choice("sfu-3")),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-3"));
    assert_eq!(r.sfu().unwrap().id, "sfu-3");
    // The draining SFU is still up: the room's sessions there end now (it waits for them).
    for p in ["a", "b"] {
        assert!(
            fx.contains(&call("sfu-2", p, SfuCall::Leave)),
            "{p}: {fx:?}"
        );
    }
}

#[test]
fn kill_then_drain_while_the_search_is_out_never_lands_on_the_draining_sfu() {
    let mut r = with_sfu("a");
    frame_at(&mut r, 1_000, "c1", &ClientMessage::MediaFailed {});
    let fx = r.run(
        1_100,
        Input::Probed {
            sfu: "sfu-1".into(),
            reply: answered(502, "bad gateway"),
        },
    );
    assert!(finds(&fx).is_some());
    // While the registry is asked, sfu-2 announces it is draining (the room is not on it yet).
    assert_eq!(
        r.run(
            1_150,
            Input::SfuDraining {
                sfu: "sfu-2".into()
            }
        ),
        vec![]
    );
    // The registry (not yet aware) offers sfu-2: refused, asked again shortly.
    let fx = r.run(
        1_200,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    assert_eq!(moved_to(&fx), None);
    assert_eq!(r.sfu().unwrap().id, "sfu-1");
    assert_eq!(r.poll_timeout(), Some(1_200 + FIND_RETRY_MS));
    let fx = r.run(1_200 + FIND_RETRY_MS, Input::Timeout);
    let (_, exclude) = finds(&fx).expect("asked again");
    assert!(exclude.contains(&"sfu-2".to_string()) && exclude.contains(&"sfu-1".to_string()));
    let fx = r.run(
        3_300,
        Input::SfuFound {
            result: Ok(choice("sfu-3")),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-3"));
}

#[test]
fn a_drain_with_no_sfu_to_go_to_is_retried_until_one_is_there() {
    let mut r = with_sfu("a");
    let fx = r.run(
        1_000,
        Input::SfuDraining {
            sfu: "sfu-1".into(),
        },
    );
    assert!(finds(&fx).is_some());
    let mut now = 1_010;
    for _ in 0..3 {
        let fx = r.run(
            now,
            Input::SfuFound {
                result: Err("no media server is available right now".into()),
            },
        );
        assert_eq!(fx, vec![]);
        let at = r.poll_timeout().expect("the room asks again");
        assert_eq!(at, now + FIND_RETRY_MS);
        assert!(finds(&r.run(at, Input::Timeout)).is_some());
        now = at + 10;
    }
    let fx = r.run(
        now,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    assert_eq!(moved_to(&fx).as_deref(), Some("sfu-2"));
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn the_search_survives_eviction() {
    let mut r = with_sfu("a");
    r.run(
        1_000,
        Input::SfuDraining {
            sfu: "sfu-1".into(),
        },
    );
    // Evicted while the registry was being asked: the answer is lost with the old object, but
    // the alarm (poll_timeout) brings the search back.
    r.evict(1_500, &["c1"]);
    let at = r.poll_timeout().expect("a deadline survives eviction");
    assert!(at <= 1_000 + sfu::FIND_LOST_MS);
    assert!(finds(&r.run(at, Input::Timeout)).is_some());
}

#[test]
fn a_drain_notice_for_an_sfu_the_room_left_changes_nothing() {
    let mut r = with_sfu("a");
    assert_eq!(
        r.run(
            1_000,
            Input::SfuDraining {
                sfu: "sfu-7".into()
            }
        ),
        vec![]
    );
    assert_eq!(r.sfu().unwrap().id, "sfu-1");
}

#[test]
fn an_unreachable_call_right_after_a_move_checks_the_new_sfu() {
    let mut r = with_sfu("a");
    r.run(
        1_000,
        Input::SfuDraining {
            sfu: "sfu-1".into(),
        },
    );
    r.run(
        1_100,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    // A member's report now would be from an old connection and is ignored...
    assert_eq!(
        frame_at(&mut r, 1_200, "c1", &ClientMessage::MediaFailed {}),
        vec![]
    );
    // ...but the new SFU refusing a connection is its own failure.
    let fx = r.run(
        1_300,
        Input::SfuReply {
            sfu: "sfu-2".into(),
            participant: "a".into(),
            call: SfuCallKind::Offer {
                id: 2,
                block: not_sharing(),
                scope: 0,
            },
            reply: gone(),
        },
    );
    assert_eq!(probes(&fx).as_deref(), Some("sfu-2"));
    // And a failure of the old SFU reports it down without touching the room.
    let fx = r.run(
        1_400,
        Input::SfuReply {
            sfu: "sfu-1".into(),
            participant: "a".into(),
            call: SfuCallKind::Leave,
            reply: gone(),
        },
    );
    assert!(
        matches!(&fx[..], [Output::SfuDown { sfu, .. }] if sfu == "sfu-1"),
        "{fx:?}"
    );
}

#[test]
fn a_joiner_gets_the_rooms_sfu_and_an_empty_room_chooses_afresh() {
    let mut r = Sim::new("r");
    assert_eq!(r.sfu_for_join(0), None, "a new room asks the registry");
    r.run(
        0,
        Input::SfuChosen {
            choice: choice("sfu-1"),
        },
    );
    // A second joiner asking before the first connected gets the same SFU.
    assert_eq!(r.sfu_for_join(10).map(|c| c.id), Some("sfu-1".into()));
    r.run(
        20,
        Input::SfuChosen {
            choice: choice("sfu-2"),
        },
    );
    assert_eq!(r.sfu().unwrap().id, "sfu-1", "the first choice stands");
    connect(&mut r, "a", "c1");
    assert_eq!(
        r.sfu_for_join(1_000_000).map(|c| c.id),
        Some("sfu-1".into()),
        "kept while anyone is in the room"
    );
    frame_at(&mut r, 1_000_000, "c1", &ClientMessage::Leave {});
    assert_eq!(
        r.sfu_for_join(1_000_000 + sfu::ASSIGN_HOLD_MS),
        None,
        "an empty room chooses afresh"
    );
    // A drained SFU is not kept even for a fresh joiner.
    r.run(
        2_000_000,
        Input::SfuChosen {
            choice: choice("sfu-3"),
        },
    );
    r.run(
        2_000_001,
        Input::SfuDraining {
            sfu: "sfu-3".into(),
        },
    );
    assert_eq!(r.sfu_for_join(2_000_002), None);
}

// ---- The alarm, eviction, tokens ----

/// The old shell set the alarm from the latest batch of effects: a member away at t=0 left only
/// when the alarm for another, away at t=5 s, rang.
#[test]
fn the_alarm_is_the_soonest_thing_the_room_waits_for() {
    let mut r = Sim::new("r");
    connect(&mut r, "a", "c1");
    connect(&mut r, "b", "c2");
    connect(&mut r, "c", "c3");
    r.run(
        0,
        Input::Disconnect {
            conn: "c1".into(),
            clean: false,
        },
    );
    r.run(
        5_000,
        Input::Disconnect {
            conn: "c2".into(),
            clean: false,
        },
    );
    assert_eq!(r.poll_timeout(), Some(RECONNECT_GRACE_MS));
    let fx = r.run(RECONNECT_GRACE_MS, Input::Timeout);
    assert!(fx.contains(&Output::Broadcast {
        except: None,
        msg: ServerMessage::ParticipantLeft { id: "a".into() }
    }));
    assert_eq!(r.poll_timeout(), Some(5_000 + RECONNECT_GRACE_MS));
}

#[test]
fn eviction_keeps_members_host_and_held_offers_and_finds_who_is_gone() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    connect(&mut r, "c", "c3");
    frame(
        &mut r,
        "c2",
        &ClientMessage::SetMedia {
            audio_muted: true,
            video_muted: false,
        },
    );
    // c's socket drops; an SFU offer for c is held.
    r.run(
        10,
        Input::Disconnect {
            conn: "c3".into(),
            clean: false,
        },
    );
    r.run(
        11,
        Input::SfuOffer {
            participant: "c".into(),
            sdp: "held".into(),
            sfu: None,
            generation: 0,
        },
    );
    let before = r.snapshot();
    // The object is evicted; a's and c's sockets are gone with it (b's survived hibernation).
    let fx = r.evict(20, &["c2"]);
    assert_eq!(
        fx,
        vec![Output::Broadcast {
            except: None,
            msg: ServerMessage::ParticipantAway { id: "a".into() }
        }],
        "a is away from now on (c already was)"
    );
    let after = r.snapshot();
    assert_eq!(after.host, before.host);
    assert_eq!(after.sfu, before.sfu);
    assert!(after
        .participants
        .iter()
        .any(|p| p.id == "b" && p.audio_muted));
    // c comes back in time: the held offer follows the snapshot.
    let fx = r.run(
        30,
        Input::Connect {
            conn: "c3b".into(),
            claims: claims("c"),
        },
    );
    assert!(
        fx.iter().any(|o| matches!(o, Output::Send { conn, msg: ServerMessage::Offer { sdp, .. } } if conn == "c3b" && sdp == "held")),
        "{fx:?}"
    );
    // a never comes back: gone after the grace period, and the host role moves on.
    let fx = r.run(20 + RECONNECT_GRACE_MS, Input::Timeout);
    assert!(fx.contains(&Output::Broadcast {
        except: None,
        msg: ServerMessage::ParticipantLeft { id: "a".into() }
    }));
    assert_eq!(r.host(), Some("b"));
}

fn timed_claims(id: &str, iat: u64, life: u64) -> Claims {
    Claims {
        iat,
        nbf: iat,
        exp: iat + life,
        ..claims(id)
    }
}

#[test]
fn members_get_a_fresh_token_before_theirs_expires() {
    let mut r = Sim::new("r");
    r.run(
        0,
        Input::Connect {
            conn: "c1".into(),
            claims: timed_claims("a", 0, 900),
        },
    );
    // Refreshed with a third of its 15 minutes left.
    assert_eq!(r.poll_timeout(), Some(600_000));
    assert_eq!(r.run(599_999, Input::Timeout), vec![]);
    let fx = r.run(600_000, Input::Timeout);
    match &fx[..] {
        [Output::IssueToken { conn, claims }] => {
            assert_eq!(conn, "c1");
            assert_eq!((claims.iat, claims.exp), (600, 1_500));
            assert_eq!(claims.jti, "a~1");
            assert_eq!((claims.sub.as_str(), claims.room.as_str()), ("a", "r"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.poll_timeout(), Some(1_200_000));
    // A member who is away is not sent one.
    r.run(
        700_000,
        Input::Disconnect {
            conn: "c1".into(),
            clean: false,
        },
    );
    assert_eq!(r.poll_timeout(), Some(700_000 + RECONNECT_GRACE_MS));
    // Back with the fresh token: nothing more to send until its own refresh time.
    let mut fresh = timed_claims("a", 600, 900);
    fresh.jti = "a~1".into();
    let fx = r.run(
        705_000,
        Input::Connect {
            conn: "c2".into(),
            claims: fresh,
        },
    );
    assert!(
        !fx.iter().any(|o| matches!(o, Output::IssueToken { .. })),
        "{fx:?}"
    );
    assert_eq!(r.poll_timeout(), Some(1_200_000));
    let fx = r.run(1_200_000, Input::Timeout);
    assert!(
        matches!(&fx[..], [Output::IssueToken { conn, claims }] if conn == "c2" && claims.jti == "a~2"),
        "{fx:?}"
    );
    // Back with an older token than the room last issued: that one never arrived (the socket
    // dropped as it was sent), so another is issued at once, after the snapshot — the older one
    // expires at 900 s, before the next refresh would have come.
    r.run(
        1_300_000,
        Input::Disconnect {
            conn: "c2".into(),
            clean: false,
        },
    );
    let mut older = timed_claims("a", 600, 900);
    older.jti = "a~1".into();
    let fx = r.run(
        1_301_000,
        Input::Connect {
            conn: "c3".into(),
            claims: older,
        },
    );
    match &fx[..] {
        [.., Output::Send {
            msg: ServerMessage::Snapshot { .. },
            ..
        }, Output::IssueToken { conn, claims }] => {
            assert_eq!(conn, "c3");
            assert_eq!(
                (claims.jti.as_str(), claims.iat, claims.exp),
                ("a~3", 1_301, 2_201)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn revoked_tokens_are_refused_until_they_expire() {
    let mut r = Sim::new("r");
    r.run(
        0,
        Input::Connect {
            conn: "c1".into(),
            claims: timed_claims("a", 0, 900),
        },
    );
    r.run(600_000, Input::Timeout); // a~1 issued
    r.revoke("a", 600_000);
    assert!(r.is_revoked("a") && r.is_revoked("a~1"));
    // The revocation is stored at once.
    assert_eq!(r.drain(), vec![]);
    assert!(r.restored().is_revoked("a~1"));
    frame_at(&mut r, 600_001, "c1", &ClientMessage::Leave {});
    // Someone no longer in the room: revoked until any token they could hold has expired.
    r.revoke("gone", 600_002);
    r.drain();
    assert!(r.restored().is_revoked("gone"));
    r.run(
        (600 + MAX_TOKEN_TTL_SECS + LEEWAY_SECS - 1) * 1_000,
        Input::Timeout,
    );
    assert!(r.is_revoked("gone"));
    for (jti, sub) in [("a", "a"), ("a~1", "a"), ("x", "a")] {
        let mut c = timed_claims(sub, 600, 900);
        c.jti = jti.into();
        let fx = r.run(
            600_002,
            Input::Connect {
                conn: "c9".into(),
                claims: c,
            },
        );
        assert!(
            matches!(
                &fx[..],
                [
                    Output::Send {
                        msg: ServerMessage::Error {
                            code: ErrorCode::Forbidden,
                            ..
                        },
                        ..
                    },
                    Output::Close {
                        code: CLOSE_FORBIDDEN,
                        ..
                    }
                ]
            ),
            "{jti}: {fx:?}"
        );
    }
    assert!(r.is_empty());
    // Forgotten once the newest token has expired (and its leeway passed).
    r.run((1_500 + LEEWAY_SECS + 2) * 1_000, Input::Timeout);
    assert!(!r.is_revoked("a~1"));
}

#[test]
fn a_token_for_another_room_is_refused() {
    let mut r = Sim::new("r");
    let mut c = claims("a");
    c.room = "other".into();
    let fx = r.run(
        0,
        Input::Connect {
            conn: "c1".into(),
            claims: c,
        },
    );
    assert!(
        matches!(
            &fx[..],
            [
                _,
                Output::Close {
                    code: CLOSE_FORBIDDEN,
                    ..
                }
            ]
        ),
        "{fx:?}"
    );
    assert!(r.is_empty());
}

#[test]
fn an_unreadable_row_loses_only_itself() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    // The room's own row is unreadable: members stay, the longest present hosts, the row is
    // written afresh.
    let (room, errors) = Room::restore(
        "r",
        Some("{not json"),
        r.members.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        [],
        [],
        [],
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(room.snapshot().participants.len(), 2);
    assert_eq!(room.host(), Some("a"));
    assert_eq!(room.role_of("a"), Some(Role::Host));
    let mut room = room;
    room.handle_input(5, Input::Timeout);
    assert!(std::iter::from_fn(|| room.poll_output())
        .any(|o| matches!(o, Output::Persist(c) if c.meta.is_some())));
    // A member row is unreadable: that member is gone, the rest stay.
    let (room, errors) = Room::restore(
        "r",
        r.meta.as_deref(),
        [("a", r.members["a"].as_str()), ("b", "garbage")],
        [],
        [],
        [],
    );
    assert!(matches!(&errors[..], [RestoreError::Member { id, .. }] if id == "b"));
    assert_eq!(room.snapshot().participants.len(), 1);
}

#[test]
fn a_room_restored_without_its_name_takes_it_from_its_members() {
    // The alarm does not know the room's name; with the room's row unreadable, the members'
    // tokens name it, so the row written back is not nameless (which would refuse every token).
    let r = with_sfu("a");
    let (room, _) = Room::restore(
        "",
        Some("{broken"),
        r.members.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        [],
        [],
        [],
    );
    assert_eq!(room.name(), "r");
    let mut room = room;
    room.handle_input(1, Input::Timeout);
    let meta = std::iter::from_fn(|| room.poll_output()).find_map(|o| match o {
        Output::Persist(c) => c.meta,
        _ => None,
    });
    assert!(meta.is_some_and(|m| m.contains("\"name\":\"r\"")));
    // Nobody to ask: nothing is written.
    let (mut empty, _) = Room::restore("", Some("{broken"), [], [], [], []);
    empty.handle_input(1, Input::Timeout);
    assert!(!std::iter::from_fn(|| empty.poll_output()).any(|o| matches!(o, Output::Persist(_))));
}

#[test]
fn offers_and_events_from_an_sfu_the_room_left_are_ignored() {
    let mut r = with_sfu("a");
    connect(&mut r, "b", "c2");
    r.run(
        1_000,
        Input::SfuDraining {
            sfu: "sfu-1".into(),
        },
    );
    r.run(
        1_010,
        Input::SfuFound {
            result: Ok(choice("sfu-2")),
        },
    );
    // The new SFU's offer reaches b and is held for the answer.
    let fx = r.run(
        1_100,
        Input::SfuOffer {
            participant: "b".into(),
            sdp: "new".into(),
            sfu: Some("sfu-2".into()),
            generation: 0,
        },
    );
    assert_eq!(fx.len(), 1);
    // The draining SFU renegotiates as its old sessions end: nothing reaches b, and the new
    // SFU's offer is still the one b's answer is for.
    let fx = r.run(
        1_200,
        Input::SfuOffer {
            participant: "b".into(),
            sdp: "old".into(),
            sfu: Some("sfu-1".into()),
            generation: 0,
        },
    );
    assert_eq!(fx, vec![]);
    assert!(r.members["b"].contains("\"new\""));
    let fx = r.run(
        1_300,
        Input::SfuEvent(SfuEvent::PublishLayers {
            room: "r".into(),
            participant: "b".into(),
            active: vec![false, false, false],
            sfu: Some("sfu-1".into()),
            version: None,
        }),
    );
    assert_eq!(
        fx,
        vec![],
        "the old SFU's dynacast must not switch off b's new encoders"
    );
}

// ---- Running the meeting: roles, waiting room, password, lock, remove, stop, chat, hands, end ----

mod meeting {
    use super::*;
    use crate::protocol::{MediaKind, RoomSettings};

    pub(super) fn claims_with(id: &str, bid: &str, waiting: bool) -> Claims {
        Claims {
            bid: Some(bid.into()),
            waiting,
            grants: if waiting {
                Grants::default()
            } else {
                Grants::max_for(Role::Participant)
            },
            ..claims(id)
        }
    }

    /// Host a (c1), participants b (c2) and c (c3), on sfu-1.
    fn room() -> Sim {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        connect(&mut r, "c", "c3");
        r
    }

    pub(super) fn send(r: &mut Sim, conn: &str, msg: ClientMessage) -> Vec<Output> {
        frame_at(r, 100, conn, &msg)
    }

    fn ask(name: &str, bid: &str, password: PasswordCheck) -> Input {
        Input::Join(JoinAsk {
            name: name.into(),
            identity: bid.into(),
            addr: "198.51.100.7".into(),
            password,
            scheduled: None,
        })
    }

    fn answer(fx: &[Output]) -> Admission {
        fx.iter()
            .find_map(|o| match o {
                Output::JoinAnswer(a) => Some(a.clone()),
                _ => None,
            })
            .expect("an answer")
    }

    fn sent_to<'a>(fx: &'a [Output], conn: &str) -> Vec<&'a ServerMessage> {
        fx.iter()
            .filter_map(|o| match o {
                Output::Send { conn: c, msg } if c == conn => Some(msg),
                _ => None,
            })
            .collect()
    }

    pub(super) fn broadcasts(fx: &[Output]) -> Vec<&ServerMessage> {
        fx.iter()
            .filter_map(|o| match o {
                Output::Broadcast { msg, .. } => Some(msg),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_host_action_from_a_participant_is_forbidden_and_changes_nothing() {
        let mut r = room();
        r.run(
            100,
            Input::Frame {
                conn: "c1".into(),
                text: serde_json::to_string(&ClientMessage::Chat {
                    text: "hi".into(),
                    to: None,
                    client_id: "m1".into(),
                })
                .unwrap(),
            },
        );
        let actions = [
            ClientMessage::DeleteChat { id: 1 },
            ClientMessage::LowerHand { id: "a".into() },
            ClientMessage::Admit { id: "x".into() },
            ClientMessage::Deny { id: "x".into() },
            ClientMessage::AdmitAll {},
            ClientMessage::Remove { id: "c".into() },
            ClientMessage::Stop {
                id: "c".into(),
                what: MediaKind::Audio,
                lock: true,
            },
            ClientMessage::MuteAll { lock: true },
            ClientMessage::AskUnmute { id: "c".into() },
            ClientMessage::SetCohost {
                id: "c".into(),
                cohost: true,
            },
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    locked: true,
                    ..Default::default()
                },
            },
            ClientMessage::SetPassword {
                password: Some("secret".into()),
            },
            ClientMessage::EndMeeting {},
            ClientMessage::CreatePoll {
                question: "Lunch?".into(),
                options: vec!["Yes".into(), "No".into()],
                multiple: false,
                anonymous: false,
            },
            ClientMessage::SharePollResults { poll: 1 },
            ClientMessage::EndPoll { poll: 1 },
        ];
        for msg in actions {
            let before = r.room.clone();
            let fx = send(&mut r, "c2", msg.clone());
            assert!(is_error(&fx, ErrorCode::Forbidden), "{msg:?}: {fx:?}");
            assert_eq!(r.room, before, "{msg:?} changed the room");
        }
    }

    #[test]
    fn co_hosts_moderate_but_only_the_host_ends_the_meeting_and_names_co_hosts() {
        let mut r = room();
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::SetCohost {
                id: "b".into(),
                cohost: true,
            },
        );
        assert!(broadcasts(&fx).contains(&&ServerMessage::RoleChanged {
            id: "b".into(),
            role: Role::Cohost
        }));
        assert!(r.is_moderator("b"));
        // A co-host moderates...
        let fx = send(
            &mut r,
            "c2",
            ClientMessage::Stop {
                id: "c".into(),
                what: MediaKind::Video,
                lock: false,
            },
        );
        assert!(fx.iter().any(|o| matches!(o, Output::Sfu { call: SfuCall::Block { video: true, .. }, participant, .. } if participant == "c")), "{fx:?}");
        // ...but does not end the meeting, name co-hosts, or remove the host.
        assert!(is_error(
            &send(&mut r, "c2", ClientMessage::EndMeeting {}),
            ErrorCode::Forbidden
        ));
        assert!(is_error(
            &send(
                &mut r,
                "c2",
                ClientMessage::SetCohost {
                    id: "c".into(),
                    cohost: true
                }
            ),
            ErrorCode::Forbidden
        ));
        assert!(is_error(
            &send(&mut r, "c2", ClientMessage::Remove { id: "a".into() }),
            ErrorCode::Forbidden
        ));
        // The host takes it back.
        send(
            &mut r,
            "c1",
            ClientMessage::SetCohost {
                id: "b".into(),
                cohost: false,
            },
        );
        assert!(!r.is_moderator("b"));
        // Nonsense is refused with a reason: removing yourself, an unknown participant.
        assert!(is_error(
            &send(&mut r, "c1", ClientMessage::Remove { id: "a".into() }),
            ErrorCode::BadRequest
        ));
        assert!(is_error(
            &send(
                &mut r,
                "c1",
                ClientMessage::Stop {
                    id: "zz".into(),
                    what: MediaKind::Audio,
                    lock: false
                }
            ),
            ErrorCode::BadRequest
        ));
    }

    #[test]
    fn the_waiting_room_holds_joiners_until_a_host_lets_them_in() {
        let mut r = room();
        // Off: straight in.
        assert!(matches!(
            answer(&r.run(200, ask("Dee", "bd", PasswordCheck::NotGiven))),
            Admission::Enter { .. }
        ));
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        assert_eq!(
            answer(&r.run(300, ask("Dee", "bd", PasswordCheck::NotGiven))),
            Admission::Wait
        );
        // Dee connects with a waiting token: told she waits; the host and only the host hears.
        let fx = r.run(
            400,
            Input::Connect {
                conn: "c4".into(),
                claims: claims_with("d", "bd", true),
            },
        );
        assert_eq!(
            sent_to(&fx, "c4"),
            vec![&ServerMessage::Waiting { room: "r".into() }]
        );
        assert!(
            matches!(sent_to(&fx, "c1")[..], [ServerMessage::WaitingList { waiting }] if waiting.len() == 1 && waiting[0].name == "name-d")
        );
        assert!(sent_to(&fx, "c2").is_empty(), "participants are not told");
        assert!(broadcasts(&fx).is_empty(), "nobody sees her join");
        assert_eq!(r.snapshot().participants.len(), 3);
        // While waiting she can ping, nothing else (no chat, no media).
        assert!(is_error(
            &send(
                &mut r,
                "c4",
                ClientMessage::Chat {
                    text: "let me in".into(),
                    to: None,
                    client_id: "x".into()
                }
            ),
            ErrorCode::Forbidden
        ));
        assert!(is_error(
            &send(
                &mut r,
                "c4",
                ClientMessage::Offer {
                    sdp: SDP.into(),
                    id: 1
                }
            ),
            ErrorCode::Forbidden
        ));
        // She is stored: an eviction keeps her waiting.
        r.evict(450, &["c1", "c2", "c3", "c4"]);
        assert_eq!(r.snapshot_for("a").waiting.len(), 1);
        assert_eq!(
            r.snapshot_for("b").waiting.len(),
            0,
            "only hosts see the waiting list"
        );
        // Let in: a token with grants, and her waiting socket reconnects with it.
        let fx = send(&mut r, "c1", ClientMessage::Admit { id: "d".into() });
        let admitted = match &fx[..] {
            [Output::Send {
                conn,
                msg: ServerMessage::WaitingList { waiting },
            }, Output::IssueToken { conn: tc, claims }, Output::Close {
                conn: cc,
                code: CLOSE_RECONNECT,
                ..
            }] => {
                assert_eq!(
                    (conn.as_str(), tc.as_str(), cc.as_str()),
                    ("c1", "c4", "c4")
                );
                assert!(waiting.is_empty());
                assert!(!claims.waiting && claims.grants.publish && claims.grants.subscribe);
                claims.clone()
            }
            other => panic!("{other:?}"),
        };
        // A token handed out before the waiting room was turned on brings nobody in.
        let early = r.run(
            450,
            Input::Connect {
                conn: "c9".into(),
                claims: claims_with("e", "be", false),
            },
        );
        assert!(
            matches!(&early[..], [Output::Send { msg: ServerMessage::Error { code: ErrorCode::Forbidden, message }, .. }, Output::Close { code: CLOSE_FORBIDDEN, .. }] if message.contains("Join again")),
            "{early:?}"
        );
        let fx = r.run(
            500,
            Input::Connect {
                conn: "c5".into(),
                claims: admitted,
            },
        );
        assert!(broadcasts(&fx).iter().any(|m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.id == "d")));
        assert_eq!(r.snapshot().participants.len(), 4);
    }

    #[test]
    fn arriving_while_no_host_is_there_is_no_way_past_the_waiting_room() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        // The host's connection dropped: still the host, away.
        r.run(
            200,
            Input::Disconnect {
                conn: "c1".into(),
                clean: false,
            },
        );
        assert_eq!(
            answer(&r.run(300, ask("Eve", "be", PasswordCheck::NotGiven))),
            Admission::Wait
        );
        // Turned away: told in words, closed for good.
        r.run(
            400,
            Input::Connect {
                conn: "c1b".into(),
                claims: claims("a"),
            },
        );
        r.run(
            410,
            Input::Connect {
                conn: "c5".into(),
                claims: claims_with("e", "be", true),
            },
        );
        let fx = send(&mut r, "c1b", ClientMessage::Deny { id: "e".into() });
        assert!(
            fx.iter().any(
                |o| matches!(o, Output::Close { conn, code: CLOSE_FORBIDDEN, .. } if conn == "c5")
            ),
            "{fx:?}"
        );
        assert!(r.snapshot_for("a").waiting.is_empty());
    }

    #[test]
    fn a_password_is_asked_for_checked_rate_limited_and_can_skip_the_waiting_room() {
        let mut r = Sim::new("r");
        // Created with a password: it is the room's, and the waiting room is on.
        assert!(matches!(
            answer(&r.run(0, ask("Ann", "ba", PasswordCheck::New("hash".into())))),
            Admission::Enter { .. }
        ));
        assert!(r.snapshot().settings.has_password && r.snapshot().settings.waiting_room);
        r.run(
            10,
            Input::Connect {
                conn: "c1".into(),
                claims: claims_with("a", "ba", false),
            },
        );
        assert_eq!(r.host(), Some("a"));
        let refused = |a: Admission| match a {
            Admission::Refused {
                code,
                message,
                retry_after_ms,
            } => (code, message, retry_after_ms),
            other => panic!("{other:?}"),
        };
        let (code, msg, _) = refused(answer(
            &r.run(20, ask("Bob", "bb", PasswordCheck::NotGiven)),
        ));
        assert_eq!(
            (code, msg.as_str()),
            (
                ErrorCode::PasswordRequired,
                "This meeting needs a password."
            )
        );
        for i in 0..WRONG_PASSWORDS_PER_MINUTE as u64 {
            let (code, _, _) = refused(answer(
                &r.run(30 + i, ask("Bob", "bb", PasswordCheck::Wrong)),
            ));
            assert_eq!(code, ErrorCode::WrongPassword);
        }
        // Five wrong in a minute: even the right one waits.
        let (code, msg, retry) = refused(answer(
            &r.run(1_000, ask("Bob", "bb", PasswordCheck::Correct)),
        ));
        assert_eq!(code, ErrorCode::TooManyRequests);
        assert!(msg.contains("Try again in 60 s"), "{msg}");
        assert_eq!(retry, Some(59_030));
        // A minute later: right, but the waiting room still holds (the host did not let passwords skip it).
        assert_eq!(
            answer(&r.run(61_000, ask("Bob", "bb", PasswordCheck::Correct))),
            Admission::Wait
        );
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    password_skips_waiting: true,
                    has_password: false,
                    ..Default::default()
                },
            },
        );
        assert!(
            r.snapshot().settings.has_password,
            "has_password is not a setting to change"
        );
        assert!(matches!(
            answer(&r.run(62_000, ask("Bob", "bb", PasswordCheck::Correct))),
            Admission::Enter { .. }
        ));
        // The host changes the password (hashed by the shell) or clears it.
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::SetPassword {
                password: Some("new one".into()),
            },
        );
        assert_eq!(
            fx,
            vec![Output::HashPassword {
                password: "new one".into()
            }]
        );
        r.run(
            63_000,
            Input::PasswordHashed {
                hash: Some("hash2".into()),
            },
        );
        assert!(r.meta.as_deref().unwrap().contains("hash2"));
        send(&mut r, "c1", ClientMessage::SetPassword { password: None });
        assert!(!r.snapshot().settings.has_password);
    }

    #[test]
    fn a_locked_meeting_lets_nobody_new_in_but_keeps_who_is_there() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    locked: true,
                    ..Default::default()
                },
            },
        );
        assert!(
            matches!(answer(&r.run(200, ask("Dee", "bd", PasswordCheck::NotGiven))), Admission::Refused { code: ErrorCode::Forbidden, message, .. } if message == "This meeting is locked.")
        );
        // b drops and comes back: resumes.
        r.run(
            300,
            Input::Disconnect {
                conn: "c2".into(),
                clean: false,
            },
        );
        let fx = r.run(
            400,
            Input::Connect {
                conn: "c2b".into(),
                claims: claims("b"),
            },
        );
        assert!(matches!(
            sent_to(&fx, "c2b")[..],
            [ServerMessage::Snapshot { resumed: true, .. }]
        ));
    }

    #[test]
    fn remove_is_a_ban_that_survives_eviction() {
        let mut r = with_sfu("a");
        r.run(
            0,
            Input::Connect {
                conn: "c2".into(),
                claims: claims_with("b", "browser-b", false),
            },
        );
        let fx = send(&mut r, "c1", ClientMessage::Remove { id: "b".into() });
        assert!(
            matches!(sent_to(&fx, "c2")[..], [ServerMessage::Error { code: ErrorCode::Forbidden, message }] if message == "You were removed from this meeting.")
        );
        assert!(fx.iter().any(
            |o| matches!(o, Output::Close { conn, code: CLOSE_FORBIDDEN, .. } if conn == "c2")
        ));
        assert!(
            fx.contains(&call("sfu-1", "b", SfuCall::Leave)),
            "their SFU session ends at once"
        );
        assert!(broadcasts(&fx).contains(&&ServerMessage::ParticipantLeft { id: "b".into() }));
        r.evict(200, &["c1"]);
        // The same browser asking again: refused in words; their old token: refused.
        assert!(
            matches!(answer(&r.run(300, ask("Bob again", "browser-b", PasswordCheck::NotGiven))), Admission::Refused { message, .. } if message == "You were removed from this meeting.")
        );
        let fx = r.run(
            310,
            Input::Connect {
                conn: "c9".into(),
                claims: claims_with("b", "browser-b", false),
            },
        );
        assert!(
            matches!(
                &fx[..],
                [
                    _,
                    Output::Close {
                        code: CLOSE_FORBIDDEN,
                        ..
                    }
                ]
            ),
            "{fx:?}"
        );
        assert!(r.snapshot().participants.iter().all(|p| p.id != "b"));
    }

    #[test]
    fn a_host_stops_media_the_sfu_enforces_it_and_nobody_unmutes_anyone_else() {
        let mut r = room();
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::Stop {
                id: "b".into(),
                what: MediaKind::Audio,
                lock: false,
            },
        );
        assert!(fx.contains(&call(
            "sfu-1",
            "b",
            SfuCall::Block {
                audio: true,
                video: false,
                screen: true
            }
        )));
        assert!(matches!(
            sent_to(&fx, "c2")[..],
            [ServerMessage::StoppedByHost {
                what: MediaKind::Audio,
                locked: false,
                ..
            }]
        ));
        assert!(r
            .snapshot()
            .participants
            .iter()
            .any(|p| p.id == "b" && p.audio_muted));
        // Asking is all a host can do; b decides.
        let fx = send(&mut r, "c1", ClientMessage::AskUnmute { id: "b".into() });
        assert!(matches!(
            sent_to(&fx, "c2")[..],
            [ServerMessage::UnmuteRequested { .. }]
        ));
        let fx = send(
            &mut r,
            "c2",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        assert!(
            fx.contains(&call(
                "sfu-1",
                "b",
                SfuCall::Block {
                    audio: false,
                    video: false,
                    screen: true
                }
            )),
            "{fx:?}"
        );
        // Mute all, locked: nobody but hosts may unmute.
        let fx = send(&mut r, "c1", ClientMessage::MuteAll { lock: true });
        for p in ["b", "c"] {
            assert!(
                fx.contains(&call(
                    "sfu-1",
                    p,
                    SfuCall::Block {
                        audio: true,
                        video: false,
                        screen: true
                    }
                )),
                "{p}"
            );
        }
        assert!(
            !fx.contains(&call(
                "sfu-1",
                "a",
                SfuCall::Block {
                    audio: true,
                    video: false,
                    screen: false
                }
            )),
            "not the host"
        );
        assert!(!r.snapshot().settings.may_unmute);
        let before = r.room.clone();
        let fx = send(
            &mut r,
            "c3",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        // Refused, nothing changes, and the page is told again that its microphone stays off
        // (it may have shown it on).
        assert!(
            matches!(&fx[..], [Output::Send { msg: ServerMessage::Error { code: ErrorCode::Forbidden, .. }, .. }, Output::Send { conn, msg: ServerMessage::StoppedByHost { what: MediaKind::Audio, locked: true, .. } }] if conn == "c3"),
            "{fx:?}"
        );
        assert_eq!(r.room, before);
        // The host lets people unmute again.
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings::default(),
            },
        );
        let fx = send(
            &mut r,
            "c3",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        assert!(fx.contains(&call(
            "sfu-1",
            "c",
            SfuCall::Block {
                audio: false,
                video: false,
                screen: true
            }
        )));
        // A stopped screen share: the sharer stops, and may not share again while locked.
        send(&mut r, "c2", ClientMessage::SetScreen { sharing: true });
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::Stop {
                id: "b".into(),
                what: MediaKind::Screen,
                lock: true,
            },
        );
        assert!(broadcasts(&fx).contains(&&ServerMessage::ScreenChanged {
            id: "b".into(),
            sharing: false
        }));
        assert!(is_error(
            &send(&mut r, "c2", ClientMessage::SetScreen { sharing: true }),
            ErrorCode::Forbidden
        ));
    }

    fn chat(
        r: &mut Sim,
        now: Millis,
        conn: &str,
        text: &str,
        to: Option<&str>,
        client_id: &str,
    ) -> Vec<Output> {
        frame_at(
            r,
            now,
            conn,
            &ClientMessage::Chat {
                text: text.into(),
                to: to.map(String::from),
                client_id: client_id.into(),
            },
        )
    }

    #[test]
    fn chat_reaches_everyone_private_messages_only_their_addressee_and_late_joiners_see_history() {
        let mut r = room();
        let fx = chat(
            &mut r,
            1_000,
            "c1",
            "<img src=x onerror=alert(1)>",
            None,
            "m1",
        );
        match broadcasts(&fx)[..] {
            [ServerMessage::ChatMessage { message }] => {
                assert_eq!(
                    message.text, "<img src=x onerror=alert(1)>",
                    "text is stored as text"
                );
                assert_eq!(
                    (message.from.as_str(), message.name.as_str(), message.id),
                    ("a", "name-a", 1)
                );
            }
            _ => panic!("{fx:?}"),
        }
        let fx = chat(&mut r, 1_001, "c1", "just for you", Some("b"), "m2");
        assert!(broadcasts(&fx).is_empty());
        assert_eq!(sent_to(&fx, "c2").len(), 1);
        assert_eq!(sent_to(&fx, "c1").len(), 1, "the sender sees it too");
        assert!(sent_to(&fx, "c3").is_empty(), "nobody else");
        // Sent again after a reconnect (same page id): appears once. The sender gets it back
        // (their page may have missed it) and a `duplicate` frame; nobody else hears of it.
        let before = r.room.clone();
        let fx = chat(
            &mut r,
            1_002,
            "c1",
            "<img src=x onerror=alert(1)>",
            None,
            "m1",
        );
        assert!(
            matches!(&fx[..], [Output::Send { conn: c, msg: ServerMessage::ChatMessage { message } }, Output::Send { conn: e, msg: ServerMessage::Error { code: ErrorCode::Duplicate, .. } }] if c == "c1" && e == "c1" && message.id == 1),
            "{fx:?}"
        );
        assert_eq!(r.room, before);
        // A late joiner sees the public history, not the private message.
        let fx = connect(&mut r, "d", "c4");
        match sent_to(&fx, "c4")[..] {
            [ServerMessage::Snapshot { room, .. }] => {
                assert_eq!(room.chat.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1])
            }
            _ => panic!("{fx:?}"),
        }
        // b's history has both.
        assert_eq!(r.snapshot_for("b").chat.len(), 2);
        // Bad input: empty, too long, an unknown addressee — an error, nothing stored.
        let before = r.room.clone();
        assert!(is_error(
            &chat(&mut r, 1_010, "c2", "   ", None, "x1"),
            ErrorCode::BadRequest
        ));
        assert!(is_error(
            &chat(&mut r, 1_011, "c2", &"x".repeat(2_001), None, "x2"),
            ErrorCode::BadRequest
        ));
        assert!(is_error(
            &chat(&mut r, 1_012, "c2", "hi", Some("nobody"), "x3"),
            ErrorCode::BadRequest
        ));
        assert_eq!(r.room, before);
        // The host deletes a message for everyone.
        let fx = send(&mut r, "c1", ClientMessage::DeleteChat { id: 1 });
        assert_eq!(broadcasts(&fx), vec![&ServerMessage::ChatDeleted { id: 1 }]);
        assert!(r.snapshot_for("c").chat.is_empty());
    }

    #[test]
    fn chat_is_rate_limited_bounded_ordered_and_survives_eviction() {
        let mut r = room();
        for i in 0..5 {
            assert_eq!(
                broadcasts(&chat(&mut r, 2_000, "c2", "hi", None, &format!("b{i}"))).len(),
                1
            );
        }
        assert!(is_error(
            &chat(&mut r, 2_500, "c2", "too fast", None, "b5"),
            ErrorCode::TooManyRequests
        ));
        // A second later: fine again.
        assert_eq!(
            broadcasts(&chat(&mut r, 3_000, "c2", "ok", None, "b6")).len(),
            1
        );
        // 250 messages over time: the room keeps the last 200, in order.
        for i in 0..250u64 {
            chat(
                &mut r,
                10_000 + i * 1_000,
                "c3",
                &format!("n{i}"),
                None,
                &format!("c{i}"),
            );
        }
        let history = r.snapshot_for("a").chat;
        assert_eq!(history.len(), CHAT_HISTORY);
        assert!(history.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(history.last().unwrap().text, "n249");
        r.evict(400_000, &["c1", "c2", "c3"]);
        assert_eq!(r.snapshot_for("a").chat, history);
    }

    #[test]
    fn a_page_reports_its_own_connection_quality_and_everyone_learns_it_on_change_only() {
        use crate::health::Quality;
        let mut r = room();
        let q = |quality| ClientMessage::Quality { quality };
        let fx = frame_at(&mut r, 1_000, "c2", &q(Quality::Excellent));
        assert_eq!(
            broadcasts(&fx),
            vec![&ServerMessage::QualityChanged {
                id: "b".into(),
                quality: Some(Quality::Excellent)
            }]
        );
        // The same again: nothing. A change within the second after the last: dropped quietly.
        assert!(frame_at(&mut r, 1_500, "c2", &q(Quality::Excellent)).is_empty());
        assert!(frame_at(&mut r, 1_600, "c2", &q(Quality::Poor)).is_empty());
        let fx = frame_at(&mut r, 2_100, "c2", &q(Quality::Poor));
        assert_eq!(broadcasts(&fx).len(), 1);
        // A joiner learns it with the room.
        let b = r
            .snapshot()
            .participants
            .into_iter()
            .find(|p| p.id == "b")
            .unwrap();
        assert_eq!(b.quality, Some(Quality::Poor));
    }

    #[test]
    fn raised_hands_keep_their_order_and_hosts_lower_them() {
        let mut r = room();
        frame_at(&mut r, 500, "c3", &ClientMessage::Hand { raised: true });
        frame_at(&mut r, 600, "c2", &ClientMessage::Hand { raised: true });
        let hands: Vec<(String, u64)> = r
            .snapshot()
            .participants
            .iter()
            .filter_map(|p| p.hand.map(|t| (p.id.clone(), t)))
            .collect();
        assert_eq!(hands, vec![("b".into(), 600), ("c".into(), 500)]);
        assert!(is_error(
            &send(&mut r, "c2", ClientMessage::LowerHand { id: "c".into() }),
            ErrorCode::Forbidden
        ));
        let fx = send(&mut r, "c1", ClientMessage::LowerHand { id: "c".into() });
        assert_eq!(
            broadcasts(&fx),
            vec![&ServerMessage::HandChanged {
                id: "c".into(),
                raised_at: None
            }]
        );
        // Reactions: only those on offer, not too fast, not stored.
        assert!(is_error(
            &send(
                &mut r,
                "c2",
                ClientMessage::React {
                    emoji: "💩".into()
                }
            ),
            ErrorCode::BadRequest
        ));
        for _ in 0..3 {
            assert_eq!(
                broadcasts(&send(
                    &mut r,
                    "c2",
                    ClientMessage::React {
                        emoji: "👍".into()
                    }
                ))
                .len(),
                1
            );
        }
        assert!(is_error(
            &send(
                &mut r,
                "c2",
                ClientMessage::React {
                    emoji: "👍".into()
                }
            ),
            ErrorCode::TooManyRequests
        ));
    }

    #[test]
    fn ending_the_meeting_lets_everyone_go_and_starts_the_room_over() {
        let mut r = room();
        chat(&mut r, 1_000, "c1", "bye", None, "m1");
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        r.run(
            1_100,
            Input::Connect {
                conn: "c4".into(),
                claims: claims_with("d", "bd", true),
            },
        );
        let fx = send(&mut r, "c1", ClientMessage::EndMeeting {});
        assert!(broadcasts(&fx).contains(&&ServerMessage::MeetingEnded {}));
        for c in ["c1", "c2", "c3", "c4"] {
            assert!(
                fx.iter().any(
                    |o| matches!(o, Output::Close { conn, code: CLOSE_ENDED, .. } if conn == c)
                ),
                "{c}"
            );
        }
        for p in ["a", "b", "c"] {
            assert!(fx.contains(&call("sfu-1", p, SfuCall::Leave)), "{p}");
        }
        assert!(r.is_empty());
        assert_eq!(r.snapshot().settings, RoomSettings::default());
        assert!(r.snapshot_for("a").chat.is_empty() && r.snapshot_for("a").waiting.is_empty());
        assert!(
            r.members.is_empty() && r.chat.is_empty(),
            "the stored rows are gone too"
        );
        // A token of the ended meeting brings nobody into the next one (an away page that
        // reconnects is told the meeting ended).
        let fx = connect(&mut r, "a", "c8");
        assert!(
            matches!(
                &fx[..],
                [
                    Output::Send {
                        msg: ServerMessage::MeetingEnded {},
                        ..
                    },
                    Output::Close {
                        code: CLOSE_ENDED,
                        ..
                    }
                ]
            ),
            "{fx:?}"
        );
        assert!(r.is_empty());
        // A later join starts a new meeting: the first joiner hosts again.
        let Admission::Enter { door, .. } =
            answer(&r.run(9_000, ask("Zed", "bz", PasswordCheck::NotGiven)))
        else {
            panic!("a new meeting lets the first one in");
        };
        r.run(
            9_001,
            Input::Connect {
                conn: "c9".into(),
                claims: Claims {
                    door,
                    ..claims_with("z", "bz", false)
                },
            },
        );
        assert_eq!(r.host(), Some("z"));
    }

    // ---- Found by review: ways around the host that the first version left open ----

    /// Asks to join as `name` from browser `bid` at `now` and, let in, connects on `conn` with
    /// the token the edge would sign (the door it was let in under).
    fn join_as(r: &mut Sim, now: Millis, id: &str, bid: &str, conn: &str) -> Vec<Output> {
        match answer(&r.run(now, ask(id, bid, PasswordCheck::NotGiven))) {
            Admission::Enter { door, .. } => r.run(
                now,
                Input::Connect {
                    conn: conn.into(),
                    claims: Claims {
                        door,
                        ..claims_with(id, bid, false)
                    },
                },
            ),
            other => panic!("{id} was not let in: {other:?}"),
        }
    }

    fn offer_block(fx: &[Output], who: &str) -> Option<crate::protocol::BlockBody> {
        fx.iter().find_map(|o| match o {
            Output::Sfu {
                participant,
                call: SfuCall::Offer { block, .. },
                ..
            } if participant == who => Some(*block),
            _ => None,
        })
    }

    fn offer(r: &mut Sim, conn: &str) -> Vec<Output> {
        send(
            r,
            conn,
            ClientMessage::Offer {
                sdp: SDP.into(),
                id: 9,
            },
        )
    }

    #[test]
    fn a_new_media_session_or_a_rejoin_does_not_undo_a_hosts_mute() {
        let mut r = room();
        join_as(&mut r, 50, "p", "bp", "c5");
        send(
            &mut r,
            "c1",
            ClientMessage::Stop {
                id: "p".into(),
                what: MediaKind::Audio,
                lock: true,
            },
        );
        // A fresh PeerConnection (a modified page, or a media restart): the SFU's new session
        // starts with the microphone blocked.
        let fx = offer(&mut r, "c5");
        assert_eq!(
            offer_block(&fx, "p"),
            Some(crate::protocol::BlockBody {
                audio: true,
                video: false,
                screen: true
            })
        );
        // The others' offers block nothing but the screen they do not share.
        assert_eq!(offer_block(&offer(&mut r, "c2"), "b"), Some(not_sharing()));
        // A block for someone the SFU does not know yet is no error for them: the offer carries it.
        let fx = r.run(
            120,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: "p".into(),
                call: SfuCallKind::Block,
                reply: answered(
                    404,
                    r#"{"code":"not_found","message":"unknown participant"}"#,
                ),
            },
        );
        assert!(
            fx.iter().all(|o| !matches!(o, Output::Send { .. })),
            "{fx:?}"
        );
        // Leaving and joining again from the same browser: still muted, still locked, told so,
        // and their media starts blocked.
        send(&mut r, "c5", ClientMessage::Leave {});
        let fx = join_as(&mut r, 200, "p2", "bp", "c6");
        assert!(r
            .snapshot()
            .participants
            .iter()
            .any(|p| p.id == "p2" && p.audio_muted));
        assert!(
            sent_to(&fx, "c6").iter().any(|m| matches!(
                m,
                ServerMessage::StoppedByHost {
                    what: MediaKind::Audio,
                    locked: true,
                    ..
                }
            )),
            "{fx:?}"
        );
        assert_eq!(
            offer_block(&offer(&mut r, "c6"), "p2").map(|b| b.audio),
            Some(true)
        );
        let fx = send(
            &mut r,
            "c6",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        assert!(sent_to(&fx, "c6").iter().any(|m| matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        )));
        // Another browser is not affected.
        join_as(&mut r, 300, "q", "bq", "c7");
        assert!(r
            .snapshot()
            .participants
            .iter()
            .any(|p| p.id == "q" && !p.audio_muted));
    }

    #[test]
    fn a_stop_made_while_someone_is_away_reaches_them_when_they_are_back() {
        let mut r = room();
        r.run(
            100,
            Input::Disconnect {
                conn: "c2".into(),
                clean: false,
            },
        );
        send(
            &mut r,
            "c1",
            ClientMessage::Stop {
                id: "b".into(),
                what: MediaKind::Video,
                lock: false,
            },
        );
        let fx = r.run(
            2_000,
            Input::Connect {
                conn: "c2b".into(),
                claims: claims("b"),
            },
        );
        assert!(
            sent_to(&fx, "c2b").iter().any(|m| matches!(
                m,
                ServerMessage::StoppedByHost {
                    what: MediaKind::Video,
                    locked: false,
                    ..
                }
            )),
            "{fx:?}"
        );
    }

    #[test]
    fn in_a_meeting_where_people_may_not_unmute_newcomers_arrive_muted() {
        let mut r = room();
        send(&mut r, "c1", ClientMessage::MuteAll { lock: true });
        let fx = join_as(&mut r, 200, "n", "bn", "c5");
        assert!(r
            .snapshot()
            .participants
            .iter()
            .any(|p| p.id == "n" && p.audio_muted));
        assert!(sent_to(&fx, "c5").iter().any(|m| matches!(
            m,
            ServerMessage::StoppedByHost {
                what: MediaKind::Audio,
                locked: true,
                ..
            }
        )));
        assert_eq!(
            offer_block(&offer(&mut r, "c5"), "n").map(|b| b.audio),
            Some(true)
        );
        // Asked by a host, they may unmute after all (only the microphone, only them).
        send(&mut r, "c1", ClientMessage::AskUnmute { id: "n".into() });
        let fx = send(
            &mut r,
            "c5",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        assert!(
            fx.contains(&call(
                "sfu-1",
                "n",
                SfuCall::Block {
                    audio: false,
                    video: false,
                    screen: true
                }
            )),
            "{fx:?}"
        );
        assert!(r
            .snapshot()
            .participants
            .iter()
            .any(|p| p.id == "n" && !p.audio_muted));
        // Others, not asked, still may not.
        let fx = send(
            &mut r,
            "c2",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        assert!(sent_to(&fx, "c2").iter().any(|m| matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        )));
    }

    #[test]
    fn letting_people_unmute_again_lifts_the_lock_of_someone_away_too() {
        let mut r = room();
        join_as(&mut r, 100, "n", "bn", "c5");
        send(&mut r, "c1", ClientMessage::MuteAll { lock: true });
        // n leaves while locked: the stop is kept for their browser's return.
        send(&mut r, "c5", ClientMessage::Leave {});
        // The host lets everyone unmute again; then n comes back.
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings::default(),
            },
        );
        join_as(&mut r, 100, "n2", "bn", "c6");
        let fx = send(
            &mut r,
            "c6",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        assert!(
            !sent_to(&fx, "c6")
                .iter()
                .any(|m| matches!(m, ServerMessage::Error { .. })),
            "{fx:?}"
        );
        assert!(r
            .snapshot()
            .participants
            .iter()
            .any(|p| p.id == "n2" && !p.audio_muted));
    }

    #[test]
    fn tokens_from_before_the_door_was_shut_bring_nobody_in_but_members_resume() {
        let mut r = Sim::new("r");
        r.run(
            0,
            Input::SfuChosen {
                choice: choice("sfu-1"),
            },
        );
        join_as(&mut r, 10, "h", "bh", "c1");
        // Two people get tokens while the meeting is open; one connects, one waits.
        let Admission::Enter { door, .. } =
            answer(&r.run(20, ask("Early", "be", PasswordCheck::NotGiven)))
        else {
            panic!()
        };
        join_as(&mut r, 30, "m", "bm", "c2");
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    locked: true,
                    ..Default::default()
                },
            },
        );
        let fx = r.run(
            200,
            Input::Connect {
                conn: "c3".into(),
                claims: Claims {
                    door,
                    ..claims_with("early", "be", false)
                },
            },
        );
        assert!(
            matches!(&fx[..], [Output::Send { msg: ServerMessage::Error { message, .. }, .. }, Output::Close { code: CLOSE_FORBIDDEN, .. }] if message == "This meeting is locked."),
            "{fx:?}"
        );
        // A member who drops briefly resumes.
        r.run(
            300,
            Input::Disconnect {
                conn: "c2".into(),
                clean: false,
            },
        );
        let fx = r.run(
            400,
            Input::Connect {
                conn: "c2b".into(),
                claims: Claims {
                    door,
                    ..claims_with("m", "bm", false)
                },
            },
        );
        assert!(
            matches!(
                sent_to(&fx, "c2b")[..],
                [ServerMessage::Snapshot { resumed: true, .. }, ..]
            ),
            "{fx:?}"
        );
        // Unlocked, the old token is still from before the door changed: join again.
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings::default(),
            },
        );
        let fx = r.run(
            500,
            Input::Connect {
                conn: "c4".into(),
                claims: Claims {
                    door,
                    ..claims_with("early", "be", false)
                },
            },
        );
        assert!(
            matches!(
                &fx[..],
                [
                    _,
                    Output::Close {
                        code: CLOSE_FORBIDDEN,
                        ..
                    }
                ]
            ),
            "{fx:?}"
        );
        // A new token gets in.
        join_as(&mut r, 600, "late", "bl", "c5");
        assert_eq!(r.snapshot().participants.len(), 3);
    }

    #[test]
    fn with_the_host_gone_the_waiting_room_holds_until_the_host_is_back() {
        let mut r = Sim::new("r");
        r.run(
            0,
            Input::SfuChosen {
                choice: choice("sfu-1"),
            },
        );
        join_as(&mut r, 10, "h", "bh", "c1");
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        send(&mut r, "c1", ClientMessage::Leave {});
        assert!(r.is_empty());
        // A stranger arriving in the empty room waits (nobody let them in).
        assert_eq!(
            answer(&r.run(200, ask("G", "bg", PasswordCheck::NotGiven))),
            Admission::Wait
        );
        r.run(
            210,
            Input::Connect {
                conn: "c2".into(),
                claims: claims_with("g", "bg", true),
            },
        );
        // The host's browser comes back: in, hosting, and shown who waits.
        let fx = join_as(&mut r, 300, "h2", "bh", "c3");
        assert_eq!(r.host(), Some("h2"));
        assert!(
            matches!(sent_to(&fx, "c3")[..], [ServerMessage::Snapshot { ref room, .. }] if room.waiting.len() == 1),
            "{fx:?}"
        );
        // A hand-over while someone waits: the new host is shown the list.
        send(&mut r, "c3", ClientMessage::Admit { id: "g".into() });
        let fx = r.run(
            400,
            Input::Connect {
                conn: "c4".into(),
                claims: Claims {
                    door: r.room.meta.door,
                    ..claims_with("g", "bg", false)
                },
            },
        );
        assert!(fx.iter().any(|o| matches!(
            o,
            Output::Broadcast {
                msg: ServerMessage::ParticipantJoined { .. },
                ..
            }
        )));
        assert_eq!(
            answer(&r.run(500, ask("K", "bk", PasswordCheck::NotGiven))),
            Admission::Wait
        );
        r.run(
            510,
            Input::Connect {
                conn: "c5".into(),
                claims: claims_with("k", "bk", true),
            },
        );
        let fx = send(&mut r, "c3", ClientMessage::Leave {});
        assert_eq!(r.host(), Some("g"));
        assert!(
            sent_to(&fx, "c4")
                .iter()
                .any(|m| matches!(m, ServerMessage::WaitingList { waiting } if waiting.len() == 1)),
            "{fx:?}"
        );
    }

    #[test]
    fn a_meeting_left_empty_for_an_hour_starts_over_for_the_next_person() {
        let mut r = Sim::new("r");
        join_as(&mut r, 10, "h", "bh", "c1");
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        frame_at(&mut r, 1_000, "c1", &ClientMessage::Leave {});
        assert_eq!(
            answer(&r.run(
                1_000 + IDLE_END_MS - 1,
                ask("G", "bg", PasswordCheck::NotGiven)
            )),
            Admission::Wait
        );
        join_as(&mut r, 1_000 + IDLE_END_MS, "n", "bn", "c2");
        assert_eq!(r.host(), Some("n"));
        assert_eq!(r.snapshot().settings, RoomSettings::default());
    }

    #[test]
    fn a_share_refused_for_the_limit_does_not_lift_a_hosts_stop() {
        let mut r = room();
        send(&mut r, "c2", ClientMessage::SetScreen { sharing: true });
        send(
            &mut r,
            "c1",
            ClientMessage::Stop {
                id: "b".into(),
                what: MediaKind::Screen,
                lock: false,
            },
        );
        send(&mut r, "c3", ClientMessage::SetScreen { sharing: true });
        let before = r.room.clone();
        let fx = send(&mut r, "c2", ClientMessage::SetScreen { sharing: true });
        assert!(is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
        assert_eq!(r.room, before, "still stopped");
        send(&mut r, "c3", ClientMessage::SetScreen { sharing: false });
        let fx = send(&mut r, "c2", ClientMessage::SetScreen { sharing: true });
        assert!(
            fx.contains(&call(
                "sfu-1",
                "b",
                SfuCall::Block {
                    audio: false,
                    video: false,
                    screen: false
                }
            )),
            "the block is lifted when the share goes ahead: {fx:?}"
        );
    }

    #[test]
    fn wrong_passwords_are_counted_across_evictions_and_per_ipv6_network() {
        let mut r = room();
        r.run(
            90,
            Input::PasswordHashed {
                hash: Some("$argon2id$x".into()),
            },
        );
        let from = |addr: &str| {
            Input::Join(JoinAsk {
                name: "X".into(),
                identity: "bx".into(),
                addr: addr.into(),
                password: PasswordCheck::Wrong,
                scheduled: None,
            })
        };
        for (i, addr) in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"]
            .iter()
            .enumerate()
        {
            r.run(100 + i as Millis, from(addr));
        }
        r.evict(200, &["c1", "c2", "c3"]);
        r.run(300, from("2001:db8:1:2::c"));
        r.run(301, from("2001:db8:1:2::d"));
        let a = answer(&r.run(302, from("2001:db8:1:2::e")));
        assert!(
            matches!(
                a,
                Admission::Refused {
                    code: ErrorCode::TooManyRequests,
                    ..
                }
            ),
            "{a:?}"
        );
        // Another network is not held back.
        let a = answer(&r.run(303, from("2001:db8:9:9::1")));
        assert!(
            matches!(
                a,
                Admission::Refused {
                    code: ErrorCode::WrongPassword,
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(address_key("::ffff:198.51.100.7"), "198.51.100.7");
    }

    #[test]
    fn denied_is_final_and_remove_takes_every_tab_of_that_browser() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        r.run(
            200,
            Input::Connect {
                conn: "c4".into(),
                claims: claims_with("w", "bw", true),
            },
        );
        send(&mut r, "c1", ClientMessage::Deny { id: "w".into() });
        let fx = r.run(
            300,
            Input::Connect {
                conn: "c4b".into(),
                claims: claims_with("w", "bw", true),
            },
        );
        assert!(
            matches!(
                &fx[..],
                [
                    _,
                    Output::Close {
                        code: CLOSE_FORBIDDEN,
                        ..
                    }
                ]
            ),
            "a reload does not put them back: {fx:?}"
        );
        assert!(r.snapshot_for("a").waiting.is_empty());
        // Two tabs of one browser in the meeting; removing one removes both.
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings::default(),
            },
        );
        join_as(&mut r, 400, "t1", "btabs", "c5");
        join_as(&mut r, 401, "t2", "btabs", "c6");
        let fx = send(&mut r, "c1", ClientMessage::Remove { id: "t1".into() });
        for c in ["c5", "c6"] {
            assert!(
                fx.iter().any(
                    |o| matches!(o, Output::Close { conn, code: CLOSE_FORBIDDEN, .. } if conn == c)
                ),
                "{c}: {fx:?}"
            );
        }
        assert!(!r
            .snapshot()
            .participants
            .iter()
            .any(|p| p.id.starts_with('t')));
    }

    #[test]
    fn deleting_a_private_message_is_for_its_two_people_only() {
        let mut r = room();
        let sent = send(
            &mut r,
            "c2",
            ClientMessage::Chat {
                text: "psst".into(),
                to: Some("c".into()),
                client_id: "p1".into(),
            },
        );
        let id = sent_to(&sent, "c3")
            .iter()
            .find_map(|m| match m {
                ServerMessage::ChatMessage { message } => Some(message.id),
                _ => None,
            })
            .expect("c hears it");
        // The host is not in it: cannot see it, cannot delete it.
        assert!(is_error(
            &send(&mut r, "c1", ClientMessage::DeleteChat { id }),
            ErrorCode::BadRequest
        ));
        // Made a co-host, c (who received it) can; only b and c hear of it.
        send(
            &mut r,
            "c1",
            ClientMessage::SetCohost {
                id: "c".into(),
                cohost: true,
            },
        );
        let fx = send(&mut r, "c3", ClientMessage::DeleteChat { id });
        assert!(broadcasts(&fx).is_empty(), "{fx:?}");
        assert_eq!(sent_to(&fx, "c2"), vec![&ServerMessage::ChatDeleted { id }]);
        assert_eq!(sent_to(&fx, "c3"), vec![&ServerMessage::ChatDeleted { id }]);
        assert!(sent_to(&fx, "c1").is_empty());
    }

    #[test]
    fn a_joiners_snapshot_carries_the_newest_chat_that_fits_one_websocket_message() {
        let mut r = room();
        let long = "😀".repeat(crate::protocol::MAX_CHAT_CHARS);
        for i in 0..CHAT_HISTORY as Millis {
            chat(&mut r, 1_000 * i, "c2", &long, None, &format!("m{i}"));
        }
        let fx = connect(&mut r, "late", "c9");
        let json = fx
            .iter()
            .find_map(|o| match o {
                Output::Send {
                    conn,
                    msg: m @ ServerMessage::Snapshot { .. },
                } if conn == "c9" => Some(serde_json::to_string(m).unwrap()),
                _ => None,
            })
            .expect("a snapshot");
        assert!(json.len() < 1024 * 1024, "{} bytes", json.len());
        let snap = r.snapshot_for("late");
        assert!(!snap.chat.is_empty());
        assert_eq!(
            snap.chat.last().map(|m| m.client_id.as_str()),
            Some("m199"),
            "the newest"
        );
        assert!(snap.chat.windows(2).all(|w| w[0].id < w[1].id), "in order");
    }

    // ---- Found by the second review ----

    fn lock(r: &mut Sim, conn: &str, waiting_room: bool) {
        send(
            r,
            conn,
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    locked: true,
                    waiting_room,
                    ..Default::default()
                },
            },
        );
    }

    fn refused(fx: &[Output], conn: &str) -> bool {
        fx.iter().any(|o| {
            matches!(o, Output::Close { conn: c, code, .. } if c == conn && *code == CLOSE_FORBIDDEN)
        })
    }

    #[test]
    fn an_idle_meeting_is_new_already_when_the_edge_asks_before_the_password() {
        let mut r = Sim::new("r");
        join_as(&mut r, 10, "h", "bh", "c1");
        lock(&mut r, "c1", false);
        frame_at(&mut r, 1_000, "c1", &ClientMessage::Leave {});
        let before = r.pre_join(1_000 + IDLE_END_MS - 1, "bn", "198.51.100.9");
        assert!(before.refused.is_some(), "still locked: {before:?}");
        let after = r.pre_join(1_000 + IDLE_END_MS, "bn", "198.51.100.9");
        assert!(
            after.refused.is_none() && after.fresh && after.hash.is_none(),
            "{after:?}"
        );
        // The newcomer's password (hashed because the room said "new") becomes the new meeting's.
        let fx = r.run(
            1_000 + IDLE_END_MS,
            ask("N", "bn", PasswordCheck::New("$argon2id$new".into())),
        );
        assert!(matches!(answer(&fx), Admission::Enter { .. }), "{fx:?}");
        assert!(r.snapshot().settings.has_password);
    }

    #[test]
    fn a_remove_never_bans_the_hosts_browser_nor_the_removers_own() {
        let mut r = Sim::new("r");
        r.run(
            0,
            Input::SfuChosen {
                choice: choice("sfu-1"),
            },
        );
        join_as(&mut r, 10, "h", "bh", "c1");
        join_as(&mut r, 20, "k", "bk", "c2");
        join_as(&mut r, 30, "h2", "bh", "c3"); // the host's second tab
        join_as(&mut r, 40, "k2", "bk", "c4"); // the co-host's second tab
        join_as(&mut r, 50, "p", "bp", "c5");
        join_as(&mut r, 60, "p2", "bp", "c6"); // the other co-host's second tab
        for id in ["k", "p"] {
            send(
                &mut r,
                "c1",
                ClientMessage::SetCohost {
                    id: id.into(),
                    cohost: true,
                },
            );
        }
        let before = r.room.clone();
        let tries = [
            ("c2", "h2", ErrorCode::Forbidden), // a co-host, the host's other tab
            ("c1", "h2", ErrorCode::BadRequest), // the host, their own other tab
            ("c2", "k2", ErrorCode::BadRequest), // a co-host, their own other tab
            ("c2", "p", ErrorCode::Forbidden),  // a co-host, another co-host
            // ...nor through that co-host's other tab (a participant there): the ban would take
            // the co-host too.
            ("c2", "p2", ErrorCode::Forbidden),
        ];
        for (conn, target, code) in tries {
            let fx = send(&mut r, conn, ClientMessage::Remove { id: target.into() });
            assert!(is_error(&fx, code), "{conn} removing {target}: {fx:?}");
            assert_eq!(r.room, before, "{conn} removing {target} changed the room");
        }
        // The host may remove a co-host.
        let fx = send(&mut r, "c1", ClientMessage::Remove { id: "p".into() });
        assert!(refused(&fx, "c5"), "{fx:?}");
    }

    #[test]
    fn someone_let_in_while_the_meeting_is_locked_gets_in() {
        let mut r = Sim::new("r");
        r.run(
            0,
            Input::SfuChosen {
                choice: choice("sfu-1"),
            },
        );
        join_as(&mut r, 10, "h", "bh", "c1");
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        r.run(
            200,
            Input::Connect {
                conn: "w1".into(),
                claims: claims_with("g", "bg", true),
            },
        );
        lock(&mut r, "c1", true);
        let fx = send(&mut r, "c1", ClientMessage::Admit { id: "g".into() });
        let token = fx
            .iter()
            .find_map(|o| match o {
                Output::IssueToken { claims, .. } => Some(claims.clone()),
                _ => None,
            })
            .expect("a token for the admitted guest");
        assert!(token.admitted && !token.waiting);
        let fx = r.run(
            300,
            Input::Connect {
                conn: "c2".into(),
                claims: token.clone(),
            },
        );
        assert!(!refused(&fx, "c2"), "{fx:?}");
        assert!(r.snapshot().participants.iter().any(|p| p.id == "g"));
        // Someone new (not let in) with a token of the same door is still turned away.
        let fx = r.run(
            400,
            Input::Connect {
                conn: "c3".into(),
                claims: Claims {
                    door: token.door,
                    ..claims_with("x", "bx", false)
                },
            },
        );
        assert!(refused(&fx, "c3"), "{fx:?}");
    }

    #[test]
    fn the_waiting_room_holds_at_most_its_limit_of_sockets() {
        let mut r = Sim::new("r");
        join_as(&mut r, 10, "h", "bh", "c1");
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: RoomSettings {
                    waiting_room: true,
                    ..Default::default()
                },
            },
        );
        for i in 0..MAX_WAITING {
            let fx = r.run(
                200,
                Input::Connect {
                    conn: format!("w{i}"),
                    claims: claims_with(&format!("g{i}"), &format!("b{i}"), true),
                },
            );
            assert!(!refused(&fx, &format!("w{i}")), "{i}");
        }
        let fx = r.run(
            300,
            Input::Connect {
                conn: "full".into(),
                claims: claims_with("late", "bl", true),
            },
        );
        assert!(refused(&fx, "full"), "{fx:?}");
        assert!(sent_to(&fx, "full").iter().any(|m| matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        )));
        // Someone already waiting may still reconnect.
        let fx = r.run(
            300,
            Input::Connect {
                conn: "w0b".into(),
                claims: claims_with("g0", "b0", true),
            },
        );
        assert!(!refused(&fx, "w0b"), "{fx:?}");
    }

    #[test]
    fn another_tab_of_a_muted_browser_arrives_muted() {
        let mut r = room();
        join_as(&mut r, 50, "p", "bp", "c5");
        send(
            &mut r,
            "c1",
            ClientMessage::Stop {
                id: "p".into(),
                what: MediaKind::Audio,
                lock: true,
            },
        );
        join_as(&mut r, 60, "p2", "bp", "c6");
        assert!(r
            .snapshot()
            .participants
            .iter()
            .any(|x| x.id == "p2" && x.audio_muted));
        assert_eq!(
            offer_block(&offer(&mut r, "c6"), "p2").map(|b| b.audio),
            Some(true)
        );
        let fx = send(
            &mut r,
            "c6",
            ClientMessage::SetMedia {
                audio_muted: false,
                video_muted: false,
            },
        );
        assert!(
            !r.snapshot()
                .participants
                .iter()
                .any(|x| x.id == "p2" && !x.audio_muted),
            "{fx:?}"
        );
    }

    fn block_to(fx: &[Output], who: &str) -> Option<(bool, bool, bool)> {
        fx.iter().find_map(|o| match o {
            Output::Sfu {
                participant,
                call:
                    SfuCall::Block {
                        audio,
                        video,
                        screen,
                    },
                ..
            } if participant == who => Some((*audio, *video, *screen)),
            _ => None,
        })
    }

    #[test]
    fn screen_tracks_are_forwarded_only_while_the_room_lets_someone_share() {
        let mut r = room();
        // Not sharing: a new session forwards nothing from the screen's places in the offer (a
        // modified page putting its microphone there gets nothing through).
        assert_eq!(offer_block(&offer(&mut r, "c2"), "b"), Some(not_sharing()));
        let fx = send(&mut r, "c2", ClientMessage::SetScreen { sharing: true });
        assert_eq!(block_to(&fx, "b"), Some((false, false, false)), "{fx:?}");
        // A share refused (one at a time) opens nothing.
        let fx = send(&mut r, "c3", ClientMessage::SetScreen { sharing: true });
        assert!(is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
        let fx = send(&mut r, "c2", ClientMessage::SetScreen { sharing: false });
        assert_eq!(block_to(&fx, "b"), Some((false, false, true)), "{fx:?}");
    }

    #[test]
    fn a_stop_made_while_an_offer_is_on_its_way_reaches_the_new_session() {
        let mut r = room();
        let fx = offer(&mut r, "c2");
        let block = offer_block(&fx, "b").expect("an offer");
        send(
            &mut r,
            "c1",
            ClientMessage::Stop {
                id: "b".into(),
                what: MediaKind::Audio,
                lock: false,
            },
        );
        // The block went to no session (404); then the new session answers.
        r.run(
            150,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: "b".into(),
                call: SfuCallKind::Block,
                reply: answered(404, "{}"),
            },
        );
        let fx = r.run(
            160,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: "b".into(),
                call: SfuCallKind::Offer {
                    id: 9,
                    block,
                    scope: 0,
                },
                reply: answered(200, r#"{"sdp":"a"}"#),
            },
        );
        assert_eq!(block_to(&fx, "b"), Some((true, false, true)), "{fx:?}");
        // Nothing changed in between: no extra call.
        let fx = r.run(
            170,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: "b".into(),
                call: SfuCallKind::Offer {
                    id: 10,
                    block: r.block_of("b"),
                    scope: 0,
                },
                reply: answered(200, r#"{"sdp":"a"}"#),
            },
        );
        assert_eq!(block_to(&fx, "b"), None, "{fx:?}");
    }

    #[test]
    fn a_message_resent_after_the_reconnect_grace_is_posted_once() {
        let mut r = room();
        chat(&mut r, 100, "c2", "hello", None, "m1");
        r.run(
            200,
            Input::Disconnect {
                conn: "c2".into(),
                clean: false,
            },
        );
        r.run(200 + RECONNECT_GRACE_MS, Input::Timeout);
        assert!(
            !r.snapshot().participants.iter().any(|p| p.id == "b"),
            "b is gone"
        );
        r.run(
            30_000,
            Input::Connect {
                conn: "c2b".into(),
                claims: claims("b"),
            },
        );
        let fx = chat(&mut r, 30_100, "c2b", "hello", None, "m1");
        assert!(
            sent_to(&fx, "c2b").iter().any(|m| matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::Duplicate,
                    ..
                }
            )),
            "{fx:?}"
        );
        assert_eq!(r.snapshot_for("b").chat.len(), 1);
    }

    #[test]
    fn lowering_ones_own_hand_counts_toward_the_hand_limit() {
        let mut r = room();
        let mut refused = 0;
        for i in 0..8 {
            let msg = if i % 2 == 0 {
                ClientMessage::Hand { raised: true }
            } else {
                ClientMessage::LowerHand { id: "b".into() }
            };
            if is_error(
                &frame_at(&mut r, 100 + i, "c2", &msg),
                ErrorCode::TooManyRequests,
            ) {
                refused += 1;
            }
        }
        let limit = crate::room::meeting::REACTIONS_PER_SECOND;
        assert_eq!(refused, 8 - limit, "a toggle limit of {limit}/s");
    }

    // ---- Floods ----

    /// Sends `n` pings from `conn` spread evenly over [from, from + 1000) ms; counts what came back.
    fn pings(r: &mut Sim, conn: &str, from: Millis, n: u64) -> (usize, usize, bool) {
        let (mut pongs, mut errors, mut closed) = (0, 0, false);
        for i in 0..n {
            let fx = frame_at(
                r,
                from + i * 1_000 / n,
                conn,
                &ClientMessage::Ping { nonce: i },
            );
            for o in &fx {
                match o {
                    Output::Send {
                        msg: ServerMessage::Pong { .. },
                        ..
                    } => pongs += 1,
                    Output::Send {
                        msg:
                            ServerMessage::Error {
                                code: ErrorCode::TooManyRequests,
                                ..
                            },
                        ..
                    } => errors += 1,
                    Output::Close { code, .. } if *code == CLOSE_FLOOD => closed = true,
                    _ => {}
                }
            }
            if closed {
                break;
            }
        }
        (pongs, errors, closed)
    }

    #[test]
    fn a_socket_flooding_the_room_is_throttled_then_closed_and_nobody_else_notices() {
        let mut r = room();
        let before = r.snapshot();
        // 1,000 frames in a second: 50 answered, one error, closed at the 200th.
        let (pongs, errors, closed) = pings(&mut r, "c2", 1_000, 1_000);
        assert_eq!((pongs, errors, closed), (50, 2, true));
        assert_eq!(r.snapshot(), before, "no room state harmed");
        // What it still sends before the close lands is dropped quietly.
        assert_eq!(pings(&mut r, "c2", 1_500, 10), (0, 0, false));
        // Someone else in the same second is answered as usual.
        let (pongs, errors, closed) = pings(&mut r, "c3", 1_000, 40);
        assert_eq!((pongs, errors, closed), (40, 0, false));
        // A busy but honest page (40 a second for ten seconds) is never throttled.
        for s in 0..10 {
            assert_eq!(
                pings(&mut r, "c1", 10_000 + s * 1_000, 40),
                (40, 0, false),
                "second {s}"
            );
        }
    }

    #[test]
    fn a_socket_over_the_limit_three_seconds_running_is_closed() {
        let mut r = room();
        let mut closed_in = None;
        for s in 0..5 {
            let (pongs, _, closed) = pings(&mut r, "c2", 1_000 + s * 1_000, 60);
            assert_eq!(pongs, 50, "second {s}");
            if closed {
                closed_in = Some(s);
                break;
            }
        }
        assert_eq!(closed_in, Some(2));
    }

    // ---- Found by fuzzing (fuzz/fuzz_targets/room.rs) ----

    #[test]
    fn nobody_is_both_waiting_and_in_the_room() {
        let mut r = Sim::new("r");
        r.run(
            0,
            Input::SfuChosen {
                choice: choice("sfu-1"),
            },
        );
        // A waiting pass and a room token for the same person, in either order.
        r.run(
            10,
            Input::Connect {
                conn: "w".into(),
                claims: claims_with("p0", "b1", true),
            },
        );
        let fx = r.run(
            20,
            Input::Connect {
                conn: "c".into(),
                claims: claims_with("p0", "b0", false),
            },
        );
        assert!(r.snapshot().participants.iter().any(|p| p.id == "p0"));
        assert!(r.snapshot_for("p0").waiting.is_empty(), "{fx:?}");
        let fx = r.run(
            30,
            Input::Connect {
                conn: "w2".into(),
                claims: claims_with("p0", "b1", true),
            },
        );
        assert!(refused(&fx, "w2"), "{fx:?}");
        assert!(r.snapshot_for("p0").waiting.is_empty());
    }

    #[test]
    fn a_token_claiming_to_be_host_makes_nobody_a_second_host() {
        let mut r = room(); // a hosts
        let fx = r.run(
            50,
            Input::Connect {
                conn: "c9".into(),
                claims: Claims {
                    role: Role::Host,
                    ..claims_with("z", "bz", false)
                },
            },
        );
        assert!(!fx.is_empty());
        let hosts: Vec<_> = r
            .snapshot()
            .participants
            .into_iter()
            .filter(|p| p.role == Role::Host)
            .map(|p| p.id)
            .collect();
        assert_eq!(hosts, ["a"]);
    }

    #[test]
    fn only_members_in_good_standing_get_a_media_relay() {
        let mut r = room();
        join_as(&mut r, 50, "p", "bp", "c5");
        let member = Claims {
            door: r.room.meta.door,
            ..claims_with("p", "bp", false)
        };
        assert!(r.may_relay(&member));
        assert!(
            !r.may_relay(&claims_with("w", "bw", true)),
            "a waiting pass"
        );
        assert!(
            !r.may_relay(&Claims {
                room: "other".into(),
                ..member.clone()
            }),
            "another room"
        );
        send(&mut r, "c1", ClientMessage::Remove { id: "p".into() });
        assert!(!r.may_relay(&member), "removed");
        assert!(
            !r.may_relay(&claims_with("p2", "bp", false)),
            "another token of a banned browser"
        );
        frame_at(&mut r, 200, "c1", &ClientMessage::EndMeeting {});
        assert!(
            !r.may_relay(&claims("c")),
            "a token from the meeting that ended"
        );
    }
}

mod polls {
    use super::meeting::{claims_with, send};
    use super::*;
    use crate::protocol::{PollView, MAX_POLLS};

    fn poll(question: &str, options: &[&str], multiple: bool, anonymous: bool) -> ClientMessage {
        ClientMessage::CreatePoll {
            question: question.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            multiple,
            anonymous,
        }
    }

    fn vote(poll: u64, choices: &[u32]) -> ClientMessage {
        ClientMessage::Vote {
            poll,
            choices: choices.to_vec(),
        }
    }

    /// The poll views sent to `conn`.
    fn views(fx: &[Output], conn: &str) -> Vec<PollView> {
        fx.iter()
            .filter_map(|o| match o {
                Output::Send {
                    conn: c,
                    msg: ServerMessage::Poll { poll },
                } if c == conn => Some(poll.clone()),
                _ => None,
            })
            .collect()
    }

    fn error_text(fx: &[Output]) -> Option<(ErrorCode, String)> {
        fx.iter().find_map(|o| match o {
            Output::Send {
                msg: ServerMessage::Error { code, message },
                ..
            } => Some((*code, message.clone())),
            _ => None,
        })
    }

    /// Host a (c1), participants b (c2) and c (c3), each in a browser of their own.
    fn room() -> Sim {
        let mut r = Sim::new("r");
        for (id, conn) in [("a", "c1"), ("b", "c2"), ("c", "c3")] {
            r.run(
                0,
                Input::Connect {
                    conn: conn.into(),
                    claims: claims_with(id, &format!("browser-{id}"), false),
                },
            );
        }
        r
    }

    #[test]
    fn a_poll_is_launched_voted_once_shared_and_ended() {
        let mut r = room();
        let fx = send(
            &mut r,
            "c1",
            poll("Lunch at noon?", &["Yes", "No", "Later"], false, false),
        );
        for conn in ["c1", "c2", "c3"] {
            let v = views(&fx, conn);
            assert_eq!(v.len(), 1, "{conn} is told of the new poll");
            assert_eq!(v[0].id, 1);
            assert_eq!(v[0].question, "Lunch at noon?");
            assert_eq!(v[0].by, "name-a");
            assert!(v[0].open && !v[0].voted);
            // Only the host sees results (none yet).
            assert_eq!(v[0].results.is_some(), conn == "c1", "{conn}");
        }
        // b votes: b's page learns it voted (no results), the host sees the count, c hears nothing.
        let fx = send(&mut r, "c2", vote(1, &[2]));
        let b = views(&fx, "c2");
        assert!(b[0].voted && b[0].results.is_none());
        assert_eq!(b[0].my_choices, vec![2]);
        let a = views(&fx, "c1");
        let res = a[0].results.as_ref().unwrap();
        assert_eq!(res.counts, vec![0, 0, 1]);
        assert_eq!(res.voters, 1);
        assert_eq!(res.names[2], vec!["name-b".to_string()]);
        assert!(views(&fx, "c3").is_empty());
        // A second vote is refused and changes nothing.
        let before = r.room.clone();
        let fx = send(&mut r, "c2", vote(1, &[0]));
        assert_eq!(
            error_text(&fx),
            Some((
                ErrorCode::AlreadyVoted,
                "You have already voted in this poll.".into()
            ))
        );
        assert_eq!(r.room, before);
        // Shared: everyone sees the results, live.
        let fx = send(&mut r, "c1", ClientMessage::SharePollResults { poll: 1 });
        assert_eq!(
            views(&fx, "c3")[0].results.as_ref().unwrap().counts,
            vec![0, 0, 1]
        );
        let fx = send(&mut r, "c3", vote(1, &[0]));
        assert_eq!(
            views(&fx, "c2")[0].results.as_ref().unwrap().counts,
            vec![1, 0, 1]
        );
        // Ended: everyone is told; a vote now is refused.
        let fx = send(&mut r, "c1", ClientMessage::EndPoll { poll: 1 });
        assert!(["c1", "c2", "c3"].iter().all(|c| !views(&fx, c)[0].open));
        let fx = send(&mut r, "c1", vote(1, &[1]));
        assert_eq!(
            error_text(&fx),
            Some((ErrorCode::BadRequest, "This poll has ended.".into()))
        );
        // The ended poll and its results stay for the meeting.
        let kept = r.room.polls_for("a");
        assert_eq!(kept[0].results.as_ref().unwrap().counts, vec![1, 0, 1]);
    }

    #[test]
    fn bad_polls_and_bad_votes_are_refused_in_words_and_change_nothing() {
        let mut r = room();
        let long = "x".repeat(1000);
        let refused = [
            (poll("  ", &["a", "b"], false, false), "Write a question."),
            (
                poll("Q", &["a"], false, false),
                "A poll has 2 to 10 options.",
            ),
            (
                poll(
                    "Q",
                    &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"],
                    false,
                    false,
                ),
                "A poll has 2 to 10 options.",
            ),
            (
                poll("Q", &["a", " "], false, false),
                "Every option needs some text.",
            ),
            (
                poll("Q", &["Yes", "yes"], false, false),
                "Two options say the same: \"yes\".",
            ),
            (
                poll(&long, &[&"y".repeat(30), "b"], false, false),
                "A poll's question and options are at most 1024 bytes together.",
            ),
        ];
        for (msg, words) in refused {
            let before = r.room.clone();
            let fx = send(&mut r, "c1", msg.clone());
            assert_eq!(
                error_text(&fx),
                Some((ErrorCode::BadRequest, words.into())),
                "{msg:?}"
            );
            assert_eq!(r.room, before);
        }
        send(&mut r, "c1", poll("One?", &["a", "b", "c"], false, false));
        send(&mut r, "c1", poll("Many?", &["a", "b", "c"], true, false));
        let bad_votes = [
            (
                vote(1, &[0, 1]),
                ErrorCode::BadRequest,
                "Choose one option.",
            ),
            (vote(1, &[]), ErrorCode::BadRequest, "Choose one option."),
            (
                vote(2, &[]),
                ErrorCode::BadRequest,
                "Choose at least one option.",
            ),
            (
                vote(1, &[3]),
                ErrorCode::BadRequest,
                "That option is not in the poll.",
            ),
            (vote(9, &[0]), ErrorCode::NotFound, "There is no such poll."),
        ];
        for (msg, code, words) in bad_votes {
            let before = r.room.clone();
            let fx = send(&mut r, "c2", msg.clone());
            assert_eq!(error_text(&fx), Some((code, words.into())), "{msg:?}");
            assert_eq!(r.room, before);
        }
        // Several choices where allowed; a choice named twice counts once.
        let fx = send(&mut r, "c2", vote(2, &[2, 0, 2]));
        assert_eq!(
            views(&fx, "c1")[0].results.as_ref().unwrap().counts,
            vec![1, 0, 1]
        );
        // Participants launch, share and end nothing.
        for msg in [
            poll("Mine?", &["a", "b"], false, false),
            ClientMessage::SharePollResults { poll: 1 },
            ClientMessage::EndPoll { poll: 1 },
        ] {
            let fx = send(&mut r, "c3", msg);
            assert!(is_error(&fx, ErrorCode::Forbidden));
        }
        assert!(r.room.polls_for("c").iter().all(|p| p.open && !p.shared));
    }

    #[test]
    fn a_meeting_keeps_at_most_128_polls() {
        let mut r = room();
        for i in 0..MAX_POLLS {
            // (Paced: the room refuses more than 50 frames a second.)
            let msg = poll(&format!("Q{i}"), &["a", "b"], false, false);
            let fx = frame_at(&mut r, 100 + i as u64 * 100, "c1", &msg);
            assert!(error_text(&fx).is_none());
        }
        let msg = poll("One more?", &["a", "b"], false, false);
        let fx = frame_at(&mut r, 20_000, "c1", &msg);
        assert_eq!(
            error_text(&fx),
            Some((
                ErrorCode::BadRequest,
                "This meeting has 128 polls, the most it can keep.".into()
            ))
        );
        // A joiner's snapshot carries them all (they fit), oldest first.
        let fx = r.run(
            20_100,
            Input::Connect {
                conn: "c4".into(),
                claims: claims_with("d", "browser-d", false),
            },
        );
        let snap = fx.iter().find_map(|o| match o {
            Output::Send {
                msg: ServerMessage::Snapshot { room, .. },
                ..
            } => Some(room.clone()),
            _ => None,
        });
        let polls = snap.unwrap().polls;
        assert_eq!(polls.len(), MAX_POLLS);
        assert_eq!(polls[0].question, "Q0");
    }

    #[test]
    fn an_anonymous_poll_keeps_no_ones_choice_not_even_in_storage() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            poll("Secret?", &["Alpha", "Beta"], false, true),
        );
        let fx = send(&mut r, "c2", vote(1, &[1]));
        let b = &views(&fx, "c2")[0];
        assert!(b.voted && b.my_choices.is_empty());
        let host = &views(&fx, "c1")[0];
        let res = host.results.as_ref().unwrap();
        assert_eq!(res.counts, vec![0, 1]);
        assert!(res.names.is_empty());
        let row = &r.polls[&1];
        assert!(!row.contains("name-b"), "{row}");
        assert!(!row.contains("\"choices\""), "{row}");
        // Still once per person.
        let fx = send(&mut r, "c2", vote(1, &[0]));
        assert!(is_error(&fx, ErrorCode::AlreadyVoted));
    }

    #[test]
    fn one_vote_per_browser_also_from_a_second_tab_or_after_coming_back() {
        let mut r = room();
        send(&mut r, "c1", poll("Q?", &["a", "b"], false, false));
        send(&mut r, "c2", vote(1, &[0]));
        // Another tab of b's browser: a member of its own, the same browser.
        let fx = r.run(
            200,
            Input::Connect {
                conn: "c5".into(),
                claims: claims_with("b2", "browser-b", false),
            },
        );
        let snap = fx.iter().find_map(|o| match o {
            Output::Send {
                conn,
                msg: ServerMessage::Snapshot { room, .. },
            } if conn == "c5" => Some(room.clone()),
            _ => None,
        });
        let p = &snap.unwrap().polls[0];
        assert!(
            p.voted,
            "the late joiner sees the open poll, already voted from this browser"
        );
        assert_eq!(p.my_choices, vec![0]);
        let fx = send(&mut r, "c5", vote(1, &[1]));
        assert!(is_error(&fx, ErrorCode::AlreadyVoted));
    }

    #[test]
    fn polls_survive_eviction_follow_roles_and_go_with_the_meeting() {
        let mut r = room();
        send(&mut r, "c1", poll("Q?", &["a", "b"], false, false));
        send(&mut r, "c2", vote(1, &[1]));
        r.evict(300, &["c1", "c2", "c3"]);
        assert_eq!(
            r.room.polls_for("a")[0].results.as_ref().unwrap().counts,
            vec![0, 1]
        );
        // Numbers go on after eviction.
        let fx = send(&mut r, "c1", poll("Next?", &["a", "b"], false, false));
        assert_eq!(views(&fx, "c1")[0].id, 2);
        // c becomes a co-host: the results come with the role, and go with it.
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::SetCohost {
                id: "c".into(),
                cohost: true,
            },
        );
        let c = views(&fx, "c3");
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|p| p.results.is_some()));
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::SetCohost {
                id: "c".into(),
                cohost: false,
            },
        );
        assert!(views(&fx, "c3").iter().all(|p| p.results.is_none()));
        // The meeting ends: its polls go (rows deleted), the next meeting starts at 1.
        send(&mut r, "c1", ClientMessage::EndMeeting {});
        assert!(r.polls.is_empty());
        assert!(r.room.polls_for("a").is_empty());
    }
}

mod breakouts {
    use super::meeting::send;
    use super::*;
    use crate::protocol::{BreakoutEdit, BreakoutView, REACTIONS};
    use crate::room::breakout::SCOPES_RETRY_MS;

    /// Host a (c1), participants b (c2), c (c3), d (c4), on sfu-1.
    fn room() -> Sim {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        connect(&mut r, "c", "c3");
        connect(&mut r, "d", "c4");
        r
    }

    const CONNS: [&str; 4] = ["c1", "c2", "c3", "c4"];

    /// The connections `msg` (as `pick` finds it) reaches.
    fn reached(fx: &[Output], pick: impl Fn(&ServerMessage) -> bool) -> Vec<String> {
        let mut to: Vec<String> = fx
            .iter()
            .flat_map(|o| match o {
                Output::Broadcast { except, msg } if pick(msg) => CONNS
                    .iter()
                    .filter(|c| except.as_deref() != Some(**c))
                    .map(|c| c.to_string())
                    .collect(),
                Output::Send { conn, msg } if pick(msg) => vec![conn.clone()],
                _ => Vec::new(),
            })
            .collect();
        to.sort();
        to.dedup();
        to
    }

    fn error(fx: &[Output]) -> Option<(ErrorCode, String)> {
        fx.iter().find_map(|o| match o {
            Output::Send {
                msg: ServerMessage::Error { code, message },
                ..
            } => Some((*code, message.clone())),
            _ => None,
        })
    }

    /// Where everyone is as the last scopes call to the SFU said (breakout rooms only), if one
    /// was made.
    fn scope_calls(fx: &[Output]) -> Option<BTreeMap<String, u32>> {
        let calls: Vec<_> = fx
            .iter()
            .filter_map(|o| match o {
                Output::Sfu {
                    call: SfuCall::Scopes { scopes, .. },
                    ..
                } => Some(scopes.clone()),
                _ => None,
            })
            .collect();
        assert!(calls.len() <= 1, "one call per change: {calls:?}");
        calls.into_iter().next()
    }

    fn version(fx: &[Output]) -> u64 {
        fx.iter()
            .find_map(|o| match o {
                Output::Sfu {
                    call: SfuCall::Scopes { version, .. },
                    ..
                } => Some(*version),
                _ => None,
            })
            .expect("a scopes call")
    }

    fn plan(rooms: &[&str], assigned: &[(&str, u32)], let_choose: bool) -> ClientMessage {
        ClientMessage::SetBreakouts {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            assigned: assigned.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
            let_choose,
        }
    }

    fn chat(text: &str, client_id: &str) -> ClientMessage {
        ClientMessage::Chat {
            text: text.into(),
            to: None,
            client_id: client_id.into(),
        }
    }

    /// Two rooms of two: a and b in "Red", c and d in "Blue"; open.
    fn opened() -> Sim {
        let mut r = room();
        send(
            &mut r,
            "c1",
            plan(
                &["Red", "Blue"],
                &[("a", 1), ("b", 1), ("c", 2), ("d", 2)],
                false,
            ),
        );
        send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        r
    }

    #[test]
    fn only_hosts_plan_and_a_plan_is_checked() {
        let mut r = room();
        let before = r.room.clone();
        let fx = send(&mut r, "c2", plan(&["One"], &[], false));
        assert_eq!(
            error(&fx),
            Some((
                ErrorCode::Forbidden,
                "Only hosts and co-hosts can plan breakout rooms.".into()
            ))
        );
        for (bad, says) in [
            (
                plan(&["One", " "], &[], false),
                "Every breakout room needs a name.",
            ),
            (
                plan(&["One", "one"], &[], false),
                "Two rooms are called \"one\".",
            ),
            (
                plan(&["One"], &[("b", 2)], false),
                "There is no such breakout room.",
            ),
            (
                plan(&["One"], &[("b", 0)], false),
                "There is no such breakout room.",
            ),
        ] {
            let fx = send(&mut r, "c1", bad);
            assert_eq!(error(&fx).map(|e| e.1).as_deref(), Some(says));
        }
        let fx = send(&mut r, "c2", ClientMessage::OpenBreakouts { minutes: None });
        assert_eq!(error(&fx).map(|e| e.0), Some(ErrorCode::Forbidden));
        let fx = send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        assert_eq!(
            error(&fx).map(|e| e.1).as_deref(),
            Some("Add at least one breakout room first.")
        );
        assert_eq!(r.room, before, "refusals change nothing");
        // A good plan reaches everyone; nobody moves before the rooms open.
        let fx = send(&mut r, "c1", plan(&["One", "Two"], &[("b", 2)], true));
        assert_eq!(
            reached(&fx, |m| matches!(m, ServerMessage::Breakouts { .. })),
            CONNS
        );
        assert_eq!(scope_calls(&fx), None);
        assert_eq!(r.scope_of("b"), 0);
    }

    fn edit(edit: BreakoutEdit) -> ClientMessage {
        ClientMessage::EditBreakouts { edit }
    }

    fn assign(p: &str, room: Option<&str>) -> ClientMessage {
        edit(BreakoutEdit::Assign {
            participant: p.into(),
            room: room.map(String::from),
        })
    }

    fn rename(room: &str, name: &str) -> ClientMessage {
        edit(BreakoutEdit::RenameRoom {
            room: room.into(),
            name: name.into(),
        })
    }

    fn remove(room: &str) -> ClientMessage {
        edit(BreakoutEdit::RemoveRoom { room: room.into() })
    }

    /// The host (on c1) makes `id` a co-host.
    fn make_cohost(r: &mut Sim, id: &str) {
        send(
            r,
            "c1",
            ClientMessage::SetCohost {
                id: id.into(),
                cohost: true,
            },
        );
    }

    #[test]
    fn edits_in_a_row_all_count_each_applied_to_the_plan_the_room_has() {
        // A page that sends changes faster than the room's answers come back (or two hosts at
        // once): every edit lands. Before, each change was a whole plan built from the page's
        // last answer, so a third pick sent before the second's answer dropped the second.
        let mut r = room();
        send(&mut r, "c1", edit(BreakoutEdit::AddRoom));
        send(&mut r, "c1", edit(BreakoutEdit::AddRoom));
        for (from, to) in [("Room 1", "Red"), ("Room 2", "Blue")] {
            let fx = send(&mut r, "c1", rename(from, to));
            assert_eq!(error(&fx), None);
        }
        for (p, n) in [("b", "Red"), ("c", "Blue"), ("d", "Blue")] {
            let fx = send(&mut r, "c1", assign(p, Some(n)));
            // Everyone hears the whole new plan.
            assert_eq!(
                reached(&fx, |m| matches!(m, ServerMessage::Breakouts { .. })),
                CONNS
            );
        }
        // Another host's change in between counts too.
        make_cohost(&mut r, "b");
        send(&mut r, "c2", edit(BreakoutEdit::LetChoose { on: true }));
        let b = r.room.meta.breakouts.clone();
        assert_eq!(b.rooms, ["Red", "Blue"]);
        assert_eq!(
            b.assigned,
            BTreeMap::from([("b".into(), 1), ("c".into(), 2), ("d".into(), 2)])
        );
        assert!(b.let_choose);
        // Opening then moves all three; an assignment while open moves that person at once.
        send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        assert_eq!(
            (r.scope_of("b"), r.scope_of("c"), r.scope_of("d")),
            (1, 2, 2)
        );
        let fx = send(&mut r, "c1", assign("d", Some("Red")));
        assert_eq!(scope_calls(&fx).map(|s| s.get("d").copied()), Some(Some(1)));
        let fx = send(&mut r, "c1", assign("c", None));
        assert_eq!(scope_calls(&fx).map(|s| s.contains_key("c")), Some(false));
        assert_eq!(r.scope_of("c"), 0);
    }

    #[test]
    fn an_edit_names_the_room_it_saw_so_a_late_one_never_lands_on_the_room_that_moved_up() {
        let mut r = room();
        for _ in 0..4 {
            send(&mut r, "c1", edit(BreakoutEdit::AddRoom));
        }
        send(&mut r, "c1", assign("b", Some("Room 3")));
        send(&mut r, "c1", assign("c", Some("Room 4")));
        // A double click on "Remove" of room 2: the second finds it gone and changes nothing
        // (by number it would have removed room 3 and unassigned b).
        send(&mut r, "c1", remove("Room 2"));
        let fx = send(&mut r, "c1", remove("Room 2"));
        assert_eq!(error(&fx), None);
        assert!(fx.is_empty(), "nothing to do: {fx:?}");
        assert_eq!(r.room.meta.breakouts.rooms, ["Room 1", "Room 3", "Room 4"]);
        // A second host, who had not heard of the removal, renames "Room 3" and gives d "Room 4":
        // the rooms they saw, now numbers 2 and 3.
        make_cohost(&mut r, "b");
        send(&mut r, "c2", rename("Room 3", "Green"));
        send(&mut r, "c2", assign("d", Some("Room 4")));
        let b = r.room.meta.breakouts.clone();
        assert_eq!(b.rooms, ["Room 1", "Green", "Room 4"]);
        assert_eq!(
            b.assigned,
            BTreeMap::from([("b".into(), 2), ("c".into(), 3), ("d".into(), 3)])
        );
        // One made for a room renamed meanwhile is refused, in words, and changes nothing.
        let before = r.room.meta.breakouts.clone();
        for late in [assign("d", Some("Room 3")), rename("Room 3", "Teal")] {
            let fx = send(&mut r, "c1", late);
            assert_eq!(
                error(&fx),
                Some((
                    ErrorCode::NotFound,
                    "There is no such breakout room.".into()
                ))
            );
        }
        assert_eq!(r.room.meta.breakouts, before);
    }

    #[test]
    fn edits_are_checked_like_a_plan_and_a_refused_one_changes_nothing() {
        let mut r = room();
        let fx = send(&mut r, "c2", edit(BreakoutEdit::AddRoom));
        assert_eq!(
            error(&fx),
            Some((
                ErrorCode::Forbidden,
                "Only hosts and co-hosts can plan breakout rooms.".into()
            ))
        );
        let fx = send(&mut r, "c2", remove("Room 1"));
        assert_eq!(error(&fx).map(|e| e.0), Some(ErrorCode::Forbidden));
        let fx = send(&mut r, "c1", edit(BreakoutEdit::AssignEvenly));
        assert_eq!(
            error(&fx).map(|e| e.1).as_deref(),
            Some("Add at least one breakout room first.")
        );
        for _ in 0..3 {
            send(&mut r, "c1", edit(BreakoutEdit::AddRoom));
        }
        // Names: the first "Room N" not taken, N counted from the number of rooms with it.
        send(&mut r, "c1", rename("Room 3", "Room 4"));
        send(&mut r, "c1", edit(BreakoutEdit::AddRoom));
        assert_eq!(
            r.room.meta.breakouts.rooms,
            ["Room 1", "Room 2", "Room 4", "Room 5"]
        );
        let before = r.room.meta.breakouts.clone();
        for (bad, code, says) in [
            (
                rename("Room 2", "room 1"),
                ErrorCode::BadRequest,
                "Two rooms are called \"room 1\".",
            ),
            (
                rename("Room 2", "  "),
                ErrorCode::BadRequest,
                "Every breakout room needs a name.",
            ),
            (
                rename("Room 2", &"x".repeat(65)),
                ErrorCode::BadRequest,
                "A room's name is at most 64 characters.",
            ),
            (
                rename("room 2", "X"),
                ErrorCode::NotFound,
                "There is no such breakout room.",
            ),
            (
                rename("", "X"),
                ErrorCode::NotFound,
                "There is no such breakout room.",
            ),
            (
                assign("b", Some("Room 3")),
                ErrorCode::NotFound,
                "There is no such breakout room.",
            ),
            (
                assign("zz", Some("Room 1")),
                ErrorCode::NotFound,
                "That person is no longer in the meeting.",
            ),
        ] {
            let fx = send(&mut r, "c1", bad.clone());
            assert_eq!(error(&fx), Some((code, says.into())), "{bad:?}");
            assert_eq!(r.room.meta.breakouts, before, "{bad:?} changed the plan");
        }
        // Removing a room: its people are unassigned, later rooms' people keep their room.
        send(&mut r, "c1", assign("b", Some("Room 1")));
        send(&mut r, "c1", assign("c", Some("Room 2")));
        send(&mut r, "c1", assign("d", Some("Room 5")));
        send(&mut r, "c1", remove("Room 2"));
        let b = r.room.meta.breakouts.clone();
        assert_eq!(b.rooms, ["Room 1", "Room 4", "Room 5"]);
        assert_eq!(
            b.assigned,
            BTreeMap::from([("b".into(), 1), ("d".into(), 3)])
        );
        // Assign evenly: everyone but the host, in the order they joined.
        send(&mut r, "c1", remove("Room 5"));
        send(&mut r, "c1", edit(BreakoutEdit::AssignEvenly));
        assert_eq!(
            r.room.meta.breakouts.assigned,
            BTreeMap::from([("b".into(), 1), ("c".into(), 2), ("d".into(), 1)])
        );
        // While open, no room can be removed.
        send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        let fx = send(&mut r, "c1", remove("Room 1"));
        assert_eq!(
            error(&fx).map(|e| e.1).as_deref(),
            Some("Close the rooms before removing one.")
        );
        assert_eq!(r.room.meta.breakouts.rooms.len(), 2);
    }

    #[test]
    fn an_edit_travels_as_json_with_the_change_named() {
        let m = assign("b", Some("Blue"));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"type":"edit_breakouts","edit":{"assign":{"participant":"b","room":"Blue"}}}"#
        );
        assert_eq!(serde_json::from_str::<ClientMessage>(&json).unwrap(), m);
        let off = r#"{"type":"edit_breakouts","edit":{"assign":{"participant":"b","room":null}}}"#;
        assert_eq!(
            serde_json::from_str::<ClientMessage>(off).unwrap(),
            assign("b", None)
        );
        let add = r#"{"type":"edit_breakouts","edit":"add_room"}"#;
        assert_eq!(
            serde_json::from_str::<ClientMessage>(add).unwrap(),
            edit(BreakoutEdit::AddRoom)
        );
        assert!(serde_json::from_str::<ClientMessage>(
            r#"{"type":"edit_breakouts","edit":{"remove_room":{"room":"Blue","x":1}}}"#
        )
        .is_err());
    }

    #[test]
    fn opening_moves_everyone_assigned_and_each_room_keeps_its_chat_reactions_and_speaker() {
        let mut r = opened();
        for (p, n) in [("a", 1), ("b", 1), ("c", 2), ("d", 2)] {
            assert_eq!(r.scope_of(p), n);
        }
        // The moves reached the SFU: checked on a fresh open below. Chat in Blue stays in Blue.
        let fx = send(&mut r, "c3", chat("hi blue", "m1"));
        assert_eq!(
            reached(&fx, |m| matches!(m, ServerMessage::ChatMessage { .. })),
            ["c3", "c4"]
        );
        assert_eq!(r.chat_for("d").len(), 1);
        assert!(r.chat_for("a").is_empty(), "Red does not read Blue's chat");
        // A private message crosses rooms.
        let fx = send(
            &mut r,
            "c2",
            ClientMessage::Chat {
                text: "psst".into(),
                to: Some("c".into()),
                client_id: "m2".into(),
            },
        );
        assert_eq!(
            reached(&fx, |m| matches!(m, ServerMessage::ChatMessage { .. })),
            ["c2", "c3"]
        );
        // A host cannot delete a message of a room they are not in.
        let fx = send(&mut r, "c1", ClientMessage::DeleteChat { id: 0 });
        assert_eq!(
            error(&fx).map(|e| e.1).as_deref(),
            Some("There is no such message.")
        );
        let fx = send(
            &mut r,
            "c2",
            ClientMessage::React {
                emoji: REACTIONS[0].into(),
            },
        );
        assert_eq!(
            reached(&fx, |m| matches!(m, ServerMessage::Reaction { .. })),
            ["c1", "c2"]
        );
        // The SFU's speaker of Blue is told in Blue only; one naming someone not in Blue is
        // ignored.
        let speaker = |p: &str, scope: u32| {
            Input::SfuEvent(SfuEvent::ActiveSpeaker {
                room: "r".into(),
                participant: Some(p.into()),
                scope,
                sfu: None,
                version: None,
            })
        };
        let fx = r.run(200, speaker("d", 2));
        assert_eq!(
            reached(&fx, |m| matches!(m, ServerMessage::ActiveSpeaker { .. })),
            ["c3", "c4"]
        );
        assert!(r.run(201, speaker("a", 2)).is_empty());
        assert_eq!(r.snapshot_for("c").speaker.as_deref(), Some("d"));
        assert_eq!(r.snapshot_for("a").speaker, None);
        // A newcomer lands in the main room and sees the plan and where everyone is.
        let fx = connect(&mut r, "e", "c5");
        let snap = fx
            .iter()
            .find_map(|o| match o {
                Output::Send {
                    msg: ServerMessage::Snapshot { room, .. },
                    ..
                } => Some(room.clone()),
                _ => None,
            })
            .unwrap();
        assert!(snap.breakouts.open);
        assert_eq!(snap.breakouts.rooms, ["Red", "Blue"]);
        let scope = |id: &str| snap.participants.iter().find(|p| p.id == id).unwrap().scope;
        assert_eq!((scope("e"), scope("b"), scope("d")), (0, 1, 2));
        assert!(snap.chat.is_empty());
        // Screens are shared per room: Red sharing does not stop Blue (one sharer allowed).
        send(&mut r, "c2", ClientMessage::SetScreen { sharing: true });
        let fx = send(&mut r, "c3", ClientMessage::SetScreen { sharing: true });
        assert_eq!(error(&fx), None);
        let fx = send(&mut r, "c4", ClientMessage::SetScreen { sharing: true });
        assert_eq!(error(&fx).map(|e| e.0), Some(ErrorCode::Forbidden));
    }

    #[test]
    fn a_move_tells_everyone_gives_the_mover_the_rooms_chat_and_tells_the_sfu() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            plan(&["Red", "Blue"], &[("b", 1), ("c", 2)], false),
        );
        let fx = send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        assert_eq!(
            scope_calls(&fx),
            Some(BTreeMap::from([("b".into(), 1), ("c".into(), 2)]))
        );
        assert_eq!(
            reached(
                &fx,
                |m| matches!(m, ServerMessage::ParticipantMoved { id, .. } if id == "b")
            ),
            CONNS
        );
        assert_eq!(
            reached(&fx, |m| matches!(m, ServerMessage::Moved { scope: 1, .. })),
            ["c2"]
        );
        // d was not assigned: stays in the main room, may not pick a room, may not message.
        let fx = send(&mut r, "c4", ClientMessage::JoinBreakout { room: 1 });
        assert_eq!(
            error(&fx),
            Some((
                ErrorCode::Forbidden,
                "The host assigns the breakout rooms in this meeting.".into()
            ))
        );
        let fx = send(
            &mut r,
            "c4",
            ClientMessage::BreakoutMessage { text: "hi".into() },
        );
        assert_eq!(error(&fx).map(|e| e.0), Some(ErrorCode::Forbidden));
        // b goes back to the main room on their own; the host visits Blue.
        let fx = send(&mut r, "c2", ClientMessage::JoinBreakout { room: 0 });
        assert_eq!(scope_calls(&fx), Some(BTreeMap::from([("c".into(), 2)])));
        // ... and may go back to the room they were given, though not choose another.
        send(&mut r, "c2", ClientMessage::JoinBreakout { room: 1 });
        assert_eq!(r.scope_of("b"), 1);
        let fx = send(&mut r, "c2", ClientMessage::JoinBreakout { room: 2 });
        assert_eq!(error(&fx).map(|e| e.0), Some(ErrorCode::Forbidden));
        send(&mut r, "c2", ClientMessage::JoinBreakout { room: 0 });
        send(&mut r, "c1", ClientMessage::JoinBreakout { room: 2 });
        assert_eq!(r.scope_of("a"), 2);
        let fx = send(&mut r, "c1", ClientMessage::JoinBreakout { room: 3 });
        assert_eq!(error(&fx).map(|e| e.0), Some(ErrorCode::NotFound));
        // Let people choose: d picks Red.
        send(
            &mut r,
            "c1",
            plan(&["Red", "Blue"], &[("b", 1), ("c", 2)], true),
        );
        send(&mut r, "c4", ClientMessage::JoinBreakout { room: 1 });
        assert_eq!(r.scope_of("d"), 1);
        // A new assignment while open moves that person now; rooms cannot be removed.
        let fx = send(
            &mut r,
            "c1",
            plan(&["Red", "Blue"], &[("b", 1), ("c", 1)], true),
        );
        assert_eq!(
            scope_calls(&fx),
            Some(BTreeMap::from([
                ("a".into(), 2),
                ("c".into(), 1),
                ("d".into(), 1)
            ]))
        );
        let fx = send(&mut r, "c1", plan(&["Red"], &[], true));
        assert_eq!(
            error(&fx).map(|e| e.1).as_deref(),
            Some("Close the rooms before removing one.")
        );
        // The host's message reaches every room.
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::BreakoutMessage {
                text: "Five minutes left".into(),
            },
        );
        assert_eq!(
            reached(
                &fx,
                |m| matches!(m, ServerMessage::Breakouts { breakouts } if breakouts.message.as_ref().is_some_and(|n| n.text == "Five minutes left" && n.from == "name-a"))
            ),
            CONNS
        );
        // A joiner sees it too (it stays until the rooms close).
        assert!(r.snapshot_for("b").breakouts.message.is_some());
    }

    #[test]
    fn the_timer_ends_the_rooms_sooner_than_a_longer_countdown_a_host_started() {
        let mut r = room();
        send(&mut r, "c1", plan(&["Red"], &[("b", 1)], false));
        send(
            &mut r,
            "c1",
            ClientMessage::OpenBreakouts { minutes: Some(1) },
        );
        let ends = 100 + 60_000;
        // A host asks for a 10-minute countdown: the 1-minute timer still ends the rooms first.
        frame_at(
            &mut r,
            1_000,
            "c1",
            &ClientMessage::CloseBreakouts { seconds: 600 },
        );
        assert_eq!(r.room.meta.breakouts.closing_at, Some(601_000));
        assert_eq!(
            r.poll_timeout(),
            Some(ends),
            "the timer's end is waited for"
        );
        r.run(ends, Input::Timeout);
        let closing = ends + 30_000;
        assert_eq!(
            r.room.meta.breakouts.closing_at,
            Some(closing),
            "the timer's countdown is sooner"
        );
        assert_eq!(r.room.meta.breakouts.ends_at, None);
        assert_eq!(r.poll_timeout(), Some(closing));
        r.run(closing, Input::Timeout);
        assert!(!r.room.meta.breakouts.open);
        assert_eq!(r.scope_of("b"), 0);
        // A host's countdown that ends sooner than the timer's would is kept when the timer ends.
        let t = closing + 1;
        frame_at(
            &mut r,
            t,
            "c1",
            &ClientMessage::OpenBreakouts { minutes: Some(1) },
        );
        frame_at(
            &mut r,
            t + 50_000,
            "c1",
            &ClientMessage::CloseBreakouts { seconds: 20 },
        );
        let host_closing = t + 70_000;
        assert_eq!(r.poll_timeout(), Some(t + 60_000));
        r.run(t + 60_000, Input::Timeout);
        assert_eq!(r.room.meta.breakouts.closing_at, Some(host_closing));
        assert!(r.room.meta.breakouts.open);
        r.run(host_closing, Input::Timeout);
        assert!(!r.room.meta.breakouts.open);
    }

    #[test]
    fn the_timer_starts_a_countdown_that_brings_everyone_back() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            plan(&["Red", "Blue"], &[("b", 1), ("c", 2), ("d", 2)], false),
        );
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::OpenBreakouts { minutes: Some(0) },
        );
        assert_eq!(
            error(&fx).map(|e| e.1).as_deref(),
            Some("A timer runs 1 to 1440 minutes.")
        );
        // Opened at 100 ms for 2 minutes.
        send(
            &mut r,
            "c1",
            ClientMessage::OpenBreakouts { minutes: Some(2) },
        );
        let ends = 100 + 120_000;
        assert_eq!(r.room.meta.breakouts.ends_at, Some(ends));
        assert_eq!(r.poll_timeout(), Some(ends));
        r.run(ends - 1, Input::Timeout);
        assert_eq!(
            r.room.meta.breakouts.closing_at, None,
            "not before the time"
        );
        // Time is up: a 30 s countdown everyone sees.
        let fx = r.run(ends, Input::Timeout);
        let closing = ends + 30_000;
        assert_eq!(
            reached(
                &fx,
                |m| matches!(m, ServerMessage::Breakouts { breakouts: BreakoutView { closing_at: Some(c), open: true, .. } } if *c == closing)
            ),
            CONNS
        );
        assert_eq!(r.poll_timeout(), Some(closing));
        assert_eq!(r.scope_of("c"), 2, "still in Blue during the countdown");
        // A later countdown asked for does not postpone it; a sooner one brings it forward.
        frame_at(
            &mut r,
            ends + 1,
            "c1",
            &ClientMessage::CloseBreakouts { seconds: 60 },
        );
        assert_eq!(r.room.meta.breakouts.closing_at, Some(closing));
        // The countdown ends (also after an eviction: the plan and scopes are stored).
        let mut back = r.restored();
        assert_eq!(back.poll_timeout().map(|t| t >= closing), Some(true));
        back.handle_input(closing, Input::Timeout);
        let fx = r.run(closing, Input::Timeout);
        assert_eq!(
            scope_calls(&fx),
            Some(BTreeMap::new()),
            "everyone in the main room"
        );
        assert!(["a", "b", "c", "d"].iter().all(|p| r.scope_of(p) == 0));
        assert!(!r.room.meta.breakouts.open);
        assert_eq!(
            r.room.meta.breakouts.rooms,
            ["Red", "Blue"],
            "the plan stays"
        );
        assert!(["a", "b", "c", "d"].iter().all(|p| back.scope_of(p) == 0));
        // Closing now: at once.
        send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        assert_eq!(r.scope_of("b"), 1);
        send(&mut r, "c1", ClientMessage::CloseBreakouts { seconds: 0 });
        assert_eq!(r.scope_of("b"), 0);
        let fx = send(&mut r, "c1", ClientMessage::CloseBreakouts { seconds: 0 });
        assert_eq!(
            error(&fx).map(|e| e.1).as_deref(),
            Some("The breakout rooms are not open.")
        );
    }

    #[test]
    fn a_new_media_session_starts_in_its_room_and_a_move_during_the_offer_is_sent_again() {
        let mut r = opened();
        let fx = send(
            &mut r,
            "c3",
            ClientMessage::Offer {
                sdp: SDP.into(),
                id: 4,
            },
        );
        assert!(fx.iter().any(|o| matches!(
            o,
            Output::Sfu {
                call: SfuCall::Offer { scope: 2, .. },
                ..
            }
        )));
        send(&mut r, "c1", ClientMessage::CloseBreakouts { seconds: 0 });
        let fx = r.run(
            150,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: "c".into(),
                call: SfuCallKind::Offer {
                    id: 4,
                    block: r.block_of("c"),
                    scope: 2,
                },
                reply: answered(200, r#"{"sdp":"a"}"#),
            },
        );
        assert_eq!(scope_calls(&fx), Some(BTreeMap::new()));
    }

    #[test]
    fn the_sfu_gets_every_change_once_in_order_and_again_until_it_took_it() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            plan(&["Red", "Blue"], &[("b", 1), ("c", 2)], true),
        );
        let fx = send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        let v1 = version(&fx);
        let fx = send(&mut r, "c4", ClientMessage::JoinBreakout { room: 2 });
        let v2 = version(&fx);
        assert!(v2 > v1, "each change a newer version");
        let reply = |version, reply| Input::SfuReply {
            sfu: "sfu-1".into(),
            participant: String::new(),
            call: SfuCallKind::Scopes { version },
            reply,
        };
        // The newer one is taken; the older one failing after it changes nothing.
        r.run(200, reply(v2, answered(204, "")));
        r.run(201, reply(v1, answered(500, "{}")));
        assert_eq!(r.room.meta.scopes.retry_at(), None);
        // A move whose call fails is sent again (the latest state) a second later, until taken.
        let fx = frame_at(&mut r, 300, "c4", &ClientMessage::JoinBreakout { room: 1 });
        let v3 = version(&fx);
        r.run(310, reply(v3, answered(503, "{}")));
        assert_eq!(r.room.meta.scopes.retry_at(), Some(310 + SCOPES_RETRY_MS));
        assert!(r.poll_timeout().is_some_and(|t| t <= 310 + SCOPES_RETRY_MS));
        let fx = r.run(310 + SCOPES_RETRY_MS, Input::Timeout);
        assert_eq!(
            scope_calls(&fx),
            Some(BTreeMap::from([
                ("b".into(), 1),
                ("c".into(), 2),
                ("d".into(), 1)
            ]))
        );
        assert_eq!(version(&fx), v3);
        // The object is evicted before the SFU took it: it is sent again on restore.
        let fx = r.evict(2_000, &["c1", "c2", "c3", "c4"]);
        assert_eq!(version(&fx), v3);
        r.run(2_100, reply(v3, answered(204, "")));
        let fx = r.evict(3_000, &["c1", "c2", "c3", "c4"]);
        assert_eq!(scope_calls(&fx), None, "taken: not sent again");
        // An SFU that refuses the call for good (a 4xx other than 408/429) is not asked again
        // each second; a timeout or "too many" is.
        let fx = frame_at(
            &mut r,
            3_100,
            "c4",
            &ClientMessage::JoinBreakout { room: 2 },
        );
        let v4 = version(&fx);
        r.run(3_110, reply(v4, answered(429, "{}")));
        assert_eq!(r.room.meta.scopes.retry_at(), Some(3_110 + SCOPES_RETRY_MS));
        r.run(3_120, reply(v4, answered(404, "{}")));
        assert_eq!(r.room.meta.scopes.retry_at(), None);
        assert!(r.poll_timeout().is_none_or(|t| t > 3_120 + SCOPES_RETRY_MS));
        // Nobody left: nothing is owed to the SFU (the next joiner's offer says where they are).
        let fx = frame_at(
            &mut r,
            3_200,
            "c4",
            &ClientMessage::JoinBreakout { room: 1 },
        );
        let v5 = version(&fx);
        r.run(3_210, reply(v5, answered(503, "{}")));
        assert!(r.room.meta.scopes.retry_at().is_some());
        for c in ["c1", "c2", "c3", "c4"] {
            r.run(
                3_300,
                Input::Disconnect {
                    conn: c.into(),
                    clean: true,
                },
            );
        }
        assert_eq!(r.room.meta.scopes.retry_at(), None);
    }

    #[test]
    fn a_speaker_who_leaves_a_room_is_no_longer_its_speaker_and_its_chat_ends_with_it() {
        let mut r = opened();
        let fx = r.run(
            200,
            Input::SfuEvent(SfuEvent::ActiveSpeaker {
                room: "r".into(),
                participant: Some("c".into()),
                scope: 2,
                sfu: None,
                version: None,
            }),
        );
        assert_eq!(
            reached(&fx, |m| matches!(
                m,
                ServerMessage::ActiveSpeaker { id: Some(_) }
            )),
            ["c3", "c4"]
        );
        send(&mut r, "c3", chat("blue only", "m1"));
        let fx = send(&mut r, "c3", ClientMessage::JoinBreakout { room: 0 });
        assert_eq!(error(&fx).map(|e| e.1), None);
        assert_eq!(
            reached(&fx, |m| matches!(
                m,
                ServerMessage::ActiveSpeaker { id: None }
            )),
            ["c4"],
            "Blue has no speaker now"
        );
        assert_eq!(r.snapshot_for("d").speaker, None);
        // Closing ends the rooms' chats: the next group in Blue starts with an empty one.
        assert_eq!(r.chat_for("d").len(), 1);
        send(&mut r, "c1", ClientMessage::CloseBreakouts { seconds: 0 });
        assert!(r.room.chat.is_empty());
        send(&mut r, "c1", ClientMessage::OpenBreakouts { minutes: None });
        assert!(r.chat_for("d").is_empty());
    }

    #[test]
    fn even_split_spreads_people_over_rooms() {
        let people: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let s = even_split(&people, 2);
        let sizes = |n| s.values().filter(|v| **v == n).count();
        assert_eq!((sizes(1), sizes(2)), (3, 2));
        assert!(even_split(&people, 0).is_empty());
        assert_eq!(even_split(&people, 9).values().max(), Some(&5));
    }
}

/// Scheduled meetings: the owner hosts whenever they come, named co-hosts are co-hosts, being
/// first makes nobody host, others wait while the waiting room is on, and the meeting's
/// sign-in rule and password are the room's to enforce.
mod scheduled {
    use super::meeting::claims_with;
    use super::*;
    use crate::room::meeting::ScheduledAsk;
    use crate::schedule::MeetingRole;

    fn ask(
        bid: &str,
        role: Option<MeetingRole>,
        signed_in: bool,
        password: PasswordCheck,
    ) -> Input {
        Input::Join(JoinAsk {
            name: bid.into(),
            identity: bid.into(),
            addr: "198.51.100.9".into(),
            password,
            scheduled: Some(ScheduledAsk {
                meeting: "mtg1".into(),
                role,
                signed_in,
                only_signed_in: false,
                waiting_room: true,
                has_password: false,
            }),
        })
    }

    fn answer(fx: &[Output]) -> Admission {
        fx.iter()
            .find_map(|o| match o {
                Output::JoinAnswer(a) => Some(a.clone()),
                _ => None,
            })
            .expect("an answer")
    }

    fn enter(r: &mut Sim, now: Millis, id: &str, conn: &str) -> Vec<Output> {
        r.run(
            now,
            Input::Connect {
                conn: conn.into(),
                claims: claims_with(id, &format!("b-{id}"), false),
            },
        )
    }

    fn role(r: &Sim, id: &str) -> Role {
        r.room
            .snapshot_for(id)
            .participants
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.role)
            .expect("present")
    }

    #[test]
    fn the_owner_hosts_whenever_they_come_and_being_first_makes_nobody_host() {
        let mut r = Sim::new("r");
        // A guest first: the meeting's waiting room holds them (no first-joiner host here).
        let fx = r.run(10, ask("b-guest", None, false, PasswordCheck::NotGiven));
        assert_eq!(answer(&fx), Admission::Wait);
        // A named co-host comes in and is a co-host, not the host.
        let fx = r.run(
            20,
            ask(
                "b-co",
                Some(MeetingRole::Cohost),
                true,
                PasswordCheck::NotGiven,
            ),
        );
        assert!(matches!(answer(&fx), Admission::Enter { .. }), "{fx:?}");
        enter(&mut r, 21, "co", "c-co");
        assert_eq!(role(&r, "co"), Role::Cohost);
        assert_eq!(r.room.snapshot_for("co").host, None, "nobody hosts yet");
        // The owner comes: host.
        let fx = r.run(
            30,
            ask(
                "b-own",
                Some(MeetingRole::Owner),
                true,
                PasswordCheck::NotGiven,
            ),
        );
        assert!(matches!(answer(&fx), Admission::Enter { .. }));
        enter(&mut r, 31, "own", "c-own");
        assert_eq!(role(&r, "own"), Role::Host);
        // The owner leaves: the longest present hosts meanwhile…
        r.run(
            40,
            Input::Disconnect {
                conn: "c-own".into(),
                clean: true,
            },
        );
        assert_eq!(role(&r, "co"), Role::Host);
        // …until the owner is back: host again, the co-host a co-host again, everyone told.
        r.run(
            50,
            ask(
                "b-own",
                Some(MeetingRole::Owner),
                true,
                PasswordCheck::NotGiven,
            ),
        );
        let fx = enter(&mut r, 51, "own", "c-own2");
        assert_eq!(role(&r, "own"), Role::Host);
        assert_eq!(role(&r, "co"), Role::Cohost);
        assert!(fx.iter().any(|o| matches!(o, Output::Broadcast { msg: ServerMessage::RoleChanged { id, role: Role::Cohost }, .. } if id == "co")), "{fx:?}");
        assert!(fx.iter().any(|o| matches!(o, Output::Broadcast { msg: ServerMessage::HostChanged { id }, .. } if id == "own")), "{fx:?}");
        // A guest with a token claiming to host is a participant.
        r.run(
            60,
            Input::Frame {
                conn: "c-own2".into(),
                text: serde_json::to_string(&ClientMessage::UpdateSettings {
                    settings: crate::protocol::RoomSettings {
                        waiting_room: false,
                        ..Default::default()
                    },
                })
                .unwrap(),
            },
        );
        let fx = r.run(70, ask("b-late", None, false, PasswordCheck::NotGiven));
        assert!(
            matches!(answer(&fx), Admission::Enter { .. }),
            "waiting room off: in"
        );
        r.run(
            71,
            Input::Connect {
                conn: "c-late".into(),
                claims: Claims {
                    role: Role::Host,
                    ..claims_with("late", "b-late", false)
                },
            },
        );
        assert_eq!(role(&r, "late"), Role::Participant);
        // All of it survives an eviction: the owner's browser still hosts when it comes back.
        r.run(
            80,
            Input::Disconnect {
                conn: "c-own2".into(),
                clean: true,
            },
        );
        r.evict(90, &["c-co", "c-late"]);
        r.run(
            100,
            ask(
                "b-own",
                Some(MeetingRole::Owner),
                true,
                PasswordCheck::NotGiven,
            ),
        );
        enter(&mut r, 101, "own", "c-own3");
        assert_eq!(role(&r, "own"), Role::Host);
    }

    #[test]
    fn a_guest_never_hosts_a_scheduled_meeting_and_a_role_ends_with_its_session() {
        let mut r = Sim::new("r");
        r.run(
            10,
            ask(
                "b-own",
                Some(MeetingRole::Owner),
                true,
                PasswordCheck::NotGiven,
            ),
        );
        enter(&mut r, 11, "own", "c-own");
        // Waiting room off; a guest comes in first, a co-host after.
        r.run(
            12,
            Input::Frame {
                conn: "c-own".into(),
                text: serde_json::to_string(&ClientMessage::UpdateSettings {
                    settings: crate::protocol::RoomSettings {
                        waiting_room: false,
                        ..Default::default()
                    },
                })
                .unwrap(),
            },
        );
        r.run(13, ask("b-guest", None, false, PasswordCheck::NotGiven));
        enter(&mut r, 14, "guest", "c-guest");
        r.run(
            15,
            ask(
                "b-co",
                Some(MeetingRole::Cohost),
                true,
                PasswordCheck::NotGiven,
            ),
        );
        enter(&mut r, 16, "co", "c-co");
        // The owner leaves: the co-host stands in, not the guest who came first.
        r.run(
            20,
            Input::Disconnect {
                conn: "c-own".into(),
                clean: true,
            },
        );
        assert_eq!(role(&r, "co"), Role::Host);
        assert_eq!(role(&r, "guest"), Role::Participant);
        // The co-host leaves too: nobody hosts (not the guest), also after an eviction.
        r.run(
            30,
            Input::Disconnect {
                conn: "c-co".into(),
                clean: true,
            },
        );
        assert_eq!(r.room.snapshot_for("guest").host, None);
        r.evict(40, &["c-guest"]);
        assert_eq!(r.room.snapshot_for("guest").host, None);
        assert_eq!(role(&r, "guest"), Role::Participant);
        // A browser whose session no longer names it (signed out, or no longer a co-host) loses
        // the role it had.
        r.run(50, ask("b-co", None, false, PasswordCheck::NotGiven));
        enter(&mut r, 51, "co", "c-co2");
        assert_eq!(role(&r, "co"), Role::Participant);
        // The meeting's password is its schedule's: not set from inside the room.
        r.run(
            60,
            ask(
                "b-own",
                Some(MeetingRole::Owner),
                true,
                PasswordCheck::NotGiven,
            ),
        );
        enter(&mut r, 61, "own", "c-own2");
        assert_eq!(role(&r, "own"), Role::Host);
        let fx = r.run(
            62,
            Input::Frame {
                conn: "c-own2".into(),
                text: serde_json::to_string(&ClientMessage::SetPassword {
                    password: Some("x".into()),
                })
                .unwrap(),
            },
        );
        assert!(is_error(&fx, ErrorCode::BadRequest), "{fx:?}");
        // The owner's second tab does not take the host from the first.
        r.run(
            63,
            Input::Connect {
                conn: "c-own-tab2".into(),
                claims: claims_with("own-tab2", "b-own", false),
            },
        );
        assert_eq!(r.room.snapshot_for("own").host.as_deref(), Some("own"));
    }

    #[test]
    fn the_sign_in_rule_and_the_password_are_enforced_by_the_room() {
        let mut r = Sim::new("r");
        let with = |bid: &str, role, signed_in, only, has_password, password| {
            Input::Join(JoinAsk {
                name: bid.into(),
                identity: bid.into(),
                addr: "198.51.100.10".into(),
                password,
                scheduled: Some(ScheduledAsk {
                    meeting: "mtg2".into(),
                    role,
                    signed_in,
                    only_signed_in: only,
                    waiting_room: false,
                    has_password,
                }),
            })
        };
        let fx = r.run(
            10,
            with("b1", None, false, true, false, PasswordCheck::NotGiven),
        );
        assert!(
            matches!(answer(&fx), Admission::Refused { code: ErrorCode::Unauthorized, ref message, .. } if message.contains("signed in")),
            "{fx:?}"
        );
        let fx = r.run(
            11,
            with("b1", None, true, true, false, PasswordCheck::NotGiven),
        );
        assert!(
            matches!(answer(&fx), Admission::Enter { .. }),
            "signed in: in (waiting room off)"
        );
        let fx = r.run(
            12,
            with("b2", None, true, false, true, PasswordCheck::NotGiven),
        );
        assert!(matches!(
            answer(&fx),
            Admission::Refused {
                code: ErrorCode::PasswordRequired,
                ..
            }
        ));
        let fx = r.run(
            13,
            with("b2", None, true, false, true, PasswordCheck::Wrong),
        );
        assert!(matches!(
            answer(&fx),
            Admission::Refused {
                code: ErrorCode::WrongPassword,
                ..
            }
        ));
        let fx = r.run(
            14,
            with("b2", None, true, false, true, PasswordCheck::Correct),
        );
        assert!(matches!(answer(&fx), Admission::Enter { .. }));
        // The owner needs no password to their own meeting.
        let fx = r.run(
            15,
            with(
                "b3",
                Some(MeetingRole::Owner),
                true,
                false,
                true,
                PasswordCheck::NotGiven,
            ),
        );
        assert!(matches!(answer(&fx), Admission::Enter { .. }));
        // A password the edge hashed for an ad-hoc room is not taken by a scheduled one.
        let fx = r.run(
            16,
            with(
                "b4",
                None,
                true,
                false,
                false,
                PasswordCheck::New("$argon2id$x".into()),
            ),
        );
        assert!(matches!(answer(&fx), Admission::Enter { .. }));
        assert!(r.room.pre_join(17, "b5", "198.51.100.11").hash.is_none());
    }
}

mod report {
    use super::meeting::claims_with;
    use super::*;
    use crate::report::ReportRow;
    use crate::room::meeting::ScheduledAsk;
    use crate::room::report::{MAX_STINTS, REPORT_WRITE_TIMEOUT_MS};
    use crate::schedule::MeetingRole;

    /// `bid` asks to join the scheduled meeting "mtg1" (waiting room off), then connects as `id`.
    fn come(r: &mut Sim, now: Millis, id: &str, owner: bool) {
        let bid = format!("b-{id}");
        let fx = r.run(
            now,
            Input::Join(JoinAsk {
                name: id.into(),
                identity: bid.clone(),
                addr: "198.51.100.9".into(),
                password: PasswordCheck::NotGiven,
                scheduled: Some(ScheduledAsk {
                    meeting: "mtg1".into(),
                    role: owner.then_some(MeetingRole::Owner),
                    signed_in: owner,
                    only_signed_in: false,
                    waiting_room: false,
                    has_password: false,
                }),
            }),
        );
        let door = fx
            .iter()
            .find_map(|o| match o {
                Output::JoinAnswer(Admission::Enter { door, .. }) => Some(*door),
                _ => None,
            })
            .expect("let in");
        r.run(
            now,
            Input::Connect {
                conn: format!("c-{id}"),
                claims: Claims {
                    name: format!("Name {id}"),
                    door,
                    ..claims_with(id, &bid, false)
                },
            },
        );
    }

    fn writes(fx: &[Output]) -> Vec<(u64, Vec<ReportRow>)> {
        fx.iter()
            .filter_map(|o| match o {
                Output::WriteReport { upto, rows } => Some((*upto, rows.clone())),
                _ => None,
            })
            .collect()
    }

    type Came = (u32, bool, Millis);
    type Totals = (Option<Millis>, u32);

    /// (person, joined, at) of the attendance rows; and the totals rows' (ended, chat).
    fn summary(rows: &[ReportRow]) -> (Vec<Came>, Vec<Totals>) {
        let mut att = Vec::new();
        let mut totals = Vec::new();
        for r in rows {
            match r {
                ReportRow::Attendance {
                    person, joined, at, ..
                } => att.push((*person, *joined, *at)),
                ReportRow::Run { ended, chat, .. } => totals.push((*ended, *chat)),
            }
        }
        (att, totals)
    }

    fn chat(r: &mut Sim, now: Millis, id: &str, n: u32) {
        frame_at(
            r,
            now,
            &format!("c-{id}"),
            &ClientMessage::Chat {
                text: "hello".into(),
                to: None,
                client_id: format!("m{n}"),
            },
        );
    }

    #[test]
    fn a_scheduled_meeting_writes_who_came_and_went_in_batches_retried_and_kept_through_an_eviction(
    ) {
        let mut r = Sim::new("r");
        come(&mut r, 1_000, "own", true);
        // Nothing goes out at once: rows gather for a second.
        assert!(r
            .poll_timeout()
            .is_some_and(|t| t <= 1_000 + REPORT_BATCH_MS));
        assert!(writes(&r.run(1_500, Input::Timeout)).is_empty());
        come(&mut r, 1_500, "g", false);
        chat(&mut r, 1_800, "g", 1);
        chat(&mut r, 1_900, "own", 2);
        let w = writes(&r.run(2_000, Input::Timeout));
        assert_eq!(w.len(), 1, "one batch");
        let (upto, rows) = &w[0];
        let (att, totals) = summary(rows);
        assert_eq!(att, vec![(0, true, 1_000), (1, true, 1_500)]);
        // The totals once, the newest (two chat messages): the older ones were superseded.
        assert_eq!(totals, vec![(None, 2)]);
        assert_eq!(*upto, rows.last().unwrap().seq());
        assert!(
            matches!(&rows[0], ReportRow::Attendance { meeting, started: 1_000, .. } if meeting == "mtg1")
        );
        // One batch at a time: nothing more goes while it is out.
        chat(&mut r, 2_100, "g", 3);
        assert!(writes(&r.run(3_500, Input::Timeout)).is_empty());
        r.run(
            3_600,
            Input::ReportWritten {
                upto: *upto,
                ok: true,
            },
        );
        assert_eq!(
            r.report_outbox().count(),
            0,
            "the newer totals are made with the batch"
        );
        let w = writes(&r.run(3_600, Input::Timeout));
        assert_eq!(summary(&w[0].1).1, vec![(None, 3)]);
        r.run(
            3_700,
            Input::ReportWritten {
                upto: w[0].0,
                ok: true,
            },
        );
        assert_eq!(r.report_outbox().count(), 0);
        // The guest's connection drops and never comes back: they left when it dropped.
        r.run(
            4_000,
            Input::Disconnect {
                conn: "c-g".into(),
                clean: false,
            },
        );
        assert!(r.report_outbox().next().is_none(), "away is not gone");
        r.run(4_000 + RECONNECT_GRACE_MS, Input::Timeout);
        r.run(
            15_000,
            Input::Disconnect {
                conn: "c-own".into(),
                clean: true,
            },
        );
        let w = writes(&r.run(16_000, Input::Timeout));
        let (att, totals) = summary(&w[0].1);
        assert_eq!(att, vec![(1, false, 4_000), (0, false, 15_000)]);
        assert_eq!(
            totals,
            vec![(Some(15_000), 3)],
            "the last one out ends the run"
        );
        // D1 fails: tried again after 1 s, then 2 s…
        r.run(
            16_100,
            Input::ReportWritten {
                upto: w[0].0,
                ok: false,
            },
        );
        assert_eq!(r.poll_timeout(), Some(17_100));
        assert!(writes(&r.run(17_000, Input::Timeout)).is_empty());
        let again = writes(&r.run(17_100, Input::Timeout));
        assert_eq!(again, w, "the same rows again");
        r.run(
            17_200,
            Input::ReportWritten {
                upto: w[0].0,
                ok: false,
            },
        );
        assert_eq!(r.poll_timeout(), Some(19_200));
        // Evicted meanwhile: the rows are stored, and go again when the retry is due (the backoff
        // is kept too).
        r.evict(18_000, &[]);
        assert_eq!(r.report_outbox().count(), 3);
        assert_eq!(r.poll_timeout(), Some(19_200));
        let after = writes(&r.run(19_200, Input::Timeout));
        assert_eq!(after[0].1, w[0].1);
        // A late outcome from before the eviction changes nothing; the new one does.
        r.run(
            19_250,
            Input::ReportWritten {
                upto: w[0].0 + 100,
                ok: true,
            },
        );
        assert_eq!(r.report_outbox().count(), 3);
        r.run(
            19_300,
            Input::ReportWritten {
                upto: w[0].0,
                ok: true,
            },
        );
        assert_eq!(r.report_outbox().count(), 0);
        assert_eq!(r.poll_timeout(), None, "nothing left to do");
        // A write that never answers counts as failed after a while, and goes again.
        come(&mut r, 30_000, "own", true);
        let w = writes(&r.run(31_000, Input::Timeout));
        assert_eq!(w.len(), 1);
        assert_eq!(r.poll_timeout(), Some(31_000 + REPORT_WRITE_TIMEOUT_MS));
        let again = writes(&r.run(31_000 + REPORT_WRITE_TIMEOUT_MS, Input::Timeout));
        assert!(again.is_empty(), "first the wait after a failure");
        let again = writes(&r.run(32_000 + REPORT_WRITE_TIMEOUT_MS, Input::Timeout));
        assert_eq!(again[0].1, w[0].1);
    }

    #[test]
    fn someone_coming_and_going_in_a_loop_stops_adding_rows_and_the_last_one_out_still_ends_the_run(
    ) {
        let mut r = Sim::new("r");
        come(&mut r, 1_000, "own", true);
        let mut t = 2_000;
        let mut rows = Vec::new();
        for k in 0..(MAX_STINTS + 20) {
            let id = format!("g{k}");
            r.run(
                t,
                Input::Connect {
                    conn: format!("c-{id}"),
                    claims: claims_with(&id, "b-loop", false),
                },
            );
            r.run(
                t + 1,
                Input::Disconnect {
                    conn: format!("c-{id}"),
                    clean: true,
                },
            );
            t += 10;
            // The outbox is written as it goes.
            for (upto, batch) in writes(&r.run(t, Input::Timeout)) {
                rows.extend(batch);
                r.run(t, Input::ReportWritten { upto, ok: true });
            }
        }
        r.run(
            t,
            Input::Disconnect {
                conn: "c-own".into(),
                clean: true,
            },
        );
        for _ in 0..10 {
            t += 2_000;
            for (upto, batch) in writes(&r.run(t, Input::Timeout)) {
                rows.extend(batch);
                r.run(t, Input::ReportWritten { upto, ok: true });
            }
        }
        assert_eq!(
            summary(&rows).1.last(),
            Some(&(Some(t - 20_000), 0)),
            "ended"
        );
        assert!(
            summary(&rows).0.contains(&(0, false, t - 20_000)),
            "the owner's departure"
        );
        let looped = summary(&rows)
            .0
            .iter()
            .filter(|(p, j, _)| *p == 1 && *j)
            .count();
        assert_eq!(
            looped, MAX_STINTS as usize,
            "arrivals recorded for the looping browser"
        );
        let gone = summary(&rows)
            .0
            .iter()
            .filter(|(p, j, _)| *p == 1 && !*j)
            .count();
        assert_eq!(gone, looped, "each recorded arrival's departure, no other");
    }

    #[test]
    fn ending_the_meeting_closes_the_run_with_its_polls_and_the_next_person_starts_another() {
        let mut r = Sim::new("r");
        come(&mut r, 1_000, "own", true);
        come(&mut r, 1_100, "g", false);
        // A second tab of the guest's browser is the same person.
        r.run(
            1_200,
            Input::Connect {
                conn: "c-g2".into(),
                claims: claims_with("g2", "b-g", false),
            },
        );
        frame_at(
            &mut r,
            1_300,
            "c-own",
            &ClientMessage::CreatePoll {
                question: "Lunch?".into(),
                options: vec!["Yes".into(), "No".into()],
                multiple: false,
                anonymous: true,
            },
        );
        frame_at(
            &mut r,
            1_400,
            "c-g",
            &ClientMessage::Vote {
                poll: 1,
                choices: vec![0],
            },
        );
        let fx = frame_at(&mut r, 5_000, "c-own", &ClientMessage::EndMeeting {});
        assert!(
            writes(&fx).is_empty(),
            "written on the timer, not with the meeting's end"
        );
        let w = writes(&r.run(6_000, Input::Timeout));
        let rows = &w[0].1;
        let (att, totals) = summary(rows);
        assert_eq!(
            att,
            vec![
                (0, true, 1_000),
                (1, true, 1_100),
                (1, true, 1_200),
                // (Everyone in leaves with the meeting's end: g, g2, own.)
                (1, false, 5_000),
                (1, false, 5_000),
                (0, false, 5_000),
            ]
        );
        assert_eq!(totals, vec![(Some(5_000), 0)]);
        let polls = rows
            .iter()
            .find_map(|r| match r {
                ReportRow::Run { polls, .. } => Some(polls.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(polls.len(), 1);
        assert_eq!((polls[0].counts.clone(), polls[0].voters), (vec![1, 0], 1));
        assert!(polls[0].open, "still open when the meeting ended");
        // The next person starts a new run, numbered on (rows of the old one may still wait).
        let last = w[0].0;
        r.run(
            6_100,
            Input::ReportWritten {
                upto: last,
                ok: true,
            },
        );
        come(&mut r, 9_000, "g", false);
        let w2 = writes(&r.run(10_000, Input::Timeout));
        assert!(w2[0].1.iter().all(|row| row.seq() > last));
        assert!(w2[0].1.iter().all(|row| row.run() == ("mtg1", 9_000)));
        assert_eq!(summary(&w2[0].1).0, vec![(0, true, 9_000)]);
    }

    #[test]
    fn the_run_ends_with_its_latest_departure_not_with_the_last_one_the_room_removed() {
        let mut r = Sim::new("r");
        come(&mut r, 1_000, "own", true);
        come(&mut r, 1_100, "g", false);
        // The owner's connection drops at 2,000; the guest leaves at 2,500; the owner's grace
        // ends later and they are removed, dated 2,000.
        r.run(
            2_000,
            Input::Disconnect {
                conn: "c-own".into(),
                clean: false,
            },
        );
        r.run(
            2_500,
            Input::Disconnect {
                conn: "c-g".into(),
                clean: true,
            },
        );
        let mut rows = Vec::new();
        for t in [2_000 + RECONNECT_GRACE_MS, 20_000, 30_000] {
            for (upto, batch) in writes(&r.run(t, Input::Timeout)) {
                rows.extend(batch);
                r.run(t, Input::ReportWritten { upto, ok: true });
            }
        }
        let (att, totals) = summary(&rows);
        assert!(
            att.contains(&(0, false, 2_000)) && att.contains(&(1, false, 2_500)),
            "{att:?}"
        );
        assert_eq!(totals.last(), Some(&(Some(2_500), 0)));
    }

    #[test]
    fn an_ad_hoc_room_writes_no_report() {
        let mut r = Sim::new("r");
        r.run(
            1_000,
            Input::Connect {
                conn: "c1".into(),
                claims: claims_with("a", "b-a", false),
            },
        );
        frame_at(
            &mut r,
            1_100,
            "c1",
            &ClientMessage::Chat {
                text: "x".into(),
                to: None,
                client_id: "z".into(),
            },
        );
        assert_eq!(r.report_outbox().count(), 0);
        assert!(writes(&r.run(5_000, Input::Timeout)).is_empty());
    }
}

mod recording {
    use super::meeting::send;
    use super::*;
    use crate::protocol::RecordingView;
    use crate::room::recording::MINT_WAIT_MS;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    /// Host a (c1), participant b (c2), on sfu-1.
    fn room() -> Sim {
        let mut r = with_sfu("a");
        connect(&mut r, "b", "c2");
        r
    }

    fn record_calls(fx: &[Output]) -> Vec<(String, u64, Option<String>)> {
        fx.iter()
            .filter_map(|o| match o {
                Output::Sfu {
                    sfu,
                    call: SfuCall::Record { version, recording },
                    ..
                } => Some((sfu.id.clone(), *version, recording.clone())),
                _ => None,
            })
            .collect()
    }

    fn states(fx: &[Output]) -> Vec<Option<RecordingView>> {
        fx.iter()
            .filter_map(|o| match o {
                Output::Broadcast {
                    msg: ServerMessage::Recording { recording },
                    ..
                } => Some(recording.clone()),
                _ => None,
            })
            .collect()
    }

    fn notices(fx: &[Output]) -> Vec<String> {
        fx.iter()
            .filter_map(|o| match o {
                Output::Broadcast {
                    msg: ServerMessage::ChatMessage { message },
                    ..
                } if message.notice => Some(message.text.clone()),
                _ => None,
            })
            .collect()
    }

    fn start(r: &mut Sim) -> Vec<Output> {
        let fx = send(r, "c1", ClientMessage::SetRecording { on: true });
        assert_eq!(fx, vec![Output::MintRecordingId]);
        r.run(200, Input::RecordingMinted { id: ID.into() })
    }

    #[test]
    fn an_empty_room_stops_telling_an_unreachable_sfu_after_a_minute() {
        use crate::room::recording::EMPTY_RECORD_RETRY_MS;
        let mut r = room();
        start(&mut r);
        // Everyone leaves: the stop goes to the SFU, which cannot be reached any more.
        frame_at(&mut r, 1_000, "c2", &ClientMessage::Leave {});
        let fx = frame_at(&mut r, 1_000, "c1", &ClientMessage::Leave {});
        let (_, version, recording) = record_calls(&fx).pop().expect("a stop call");
        assert_eq!(recording, None);
        let fail = |r: &mut Sim, now: Millis| {
            r.run(
                now,
                Input::SfuReply {
                    sfu: "sfu-1".into(),
                    participant: String::new(),
                    call: SfuCallKind::Record { version },
                    reply: gone(),
                },
            );
        };
        fail(&mut r, 1_000);
        // Sent again every second while the SFU may still hold the room's recording...
        let mut now = 1_000;
        let mut calls = 0;
        while let Some(at) = r.poll_timeout() {
            assert!(at <= 1_000 + EMPTY_RECORD_RETRY_MS + 1_000, "still at {at}");
            now = at;
            let fx = r.run(now, Input::Timeout);
            if !record_calls(&fx).is_empty() {
                calls += 1;
                fail(&mut r, now);
            }
        }
        // ...then no more: the alarm is free (before, every second for as long as it was empty).
        assert!((50..=61).contains(&calls), "{calls} calls");
        assert!(now >= 1_000 + EMPTY_RECORD_RETRY_MS);
        // The next recording is unaffected: it goes to the SFU again.
        let t = now + 1_000;
        r.run(
            t,
            Input::Connect {
                conn: "c3".into(),
                claims: claims("a"),
            },
        );
        let fx = frame_at(&mut r, t, "c3", &ClientMessage::SetRecording { on: true });
        assert_eq!(fx, vec![Output::MintRecordingId]);
        let fx = r.run(t, Input::RecordingMinted { id: ID.into() });
        assert_eq!(record_calls(&fx).len(), 1, "{fx:?}");
    }

    #[test]
    fn a_start_called_off_before_its_id_comes_is_stored_so() {
        // (Found by the fuzzer: the harness checks after every step that the stored rows rebuild
        // the room; a start waiting for its id, then a stop, left the stored row behind.)
        let mut r = room();
        let fx = send(&mut r, "c1", ClientMessage::SetRecording { on: true });
        assert_eq!(fx, vec![Output::MintRecordingId]);
        send(&mut r, "c1", ClientMessage::SetRecording { on: false });
        // The id that comes later starts nothing.
        r.run(300, Input::RecordingMinted { id: ID.into() });
        assert_eq!(r.room.recording(), None);
    }

    #[test]
    fn co_hosts_record_unless_the_host_says_no_and_only_the_host_says_it() {
        let mut r = room();
        send(
            &mut r,
            "c1",
            ClientMessage::SetCohost {
                id: "b".into(),
                cohost: true,
            },
        );
        // The host says co-hosts may not record; a co-host cannot say otherwise.
        let mut no = r.room.meta.settings.clone();
        no.cohosts_may_record = false;
        let fx = send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings {
                settings: no.clone(),
            },
        );
        assert!(!is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
        assert!(!r.room.meta.settings.cohosts_may_record);
        let mut yes = no.clone();
        yes.cohosts_may_record = true;
        let fx = send(
            &mut r,
            "c2",
            ClientMessage::UpdateSettings { settings: yes },
        );
        assert!(fx.is_empty(), "{fx:?}");
        assert!(!r.room.meta.settings.cohosts_may_record);
        // The co-host may still change the other settings, even from a page that had not heard
        // of the host's change yet: the host's word stands.
        let mut chat_off = no.clone();
        chat_off.may_chat = false;
        chat_off.cohosts_may_record = true;
        let fx = send(
            &mut r,
            "c2",
            ClientMessage::UpdateSettings { settings: chat_off },
        );
        assert!(!is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
        assert!(!r.room.meta.settings.may_chat);
        assert!(!r.room.meta.settings.cohosts_may_record);
        // Refused to record; the host records, and the co-host may not stop it either.
        let fx = send(&mut r, "c2", ClientMessage::SetRecording { on: true });
        assert!(is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
        start(&mut r);
        let fx = send(&mut r, "c2", ClientMessage::SetRecording { on: false });
        assert!(is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
        assert!(r.room.recording().is_some());
        // Allowed again: the co-host stops it.
        let mut yes = r.room.meta.settings.clone();
        yes.cohosts_may_record = true;
        send(
            &mut r,
            "c1",
            ClientMessage::UpdateSettings { settings: yes },
        );
        send(&mut r, "c2", ClientMessage::SetRecording { on: false });
        assert_eq!(r.room.recording(), None);

        // A co-host's start whose id comes after the host said no does not start.
        let fx = send(&mut r, "c2", ClientMessage::SetRecording { on: true });
        assert_eq!(fx, vec![Output::MintRecordingId]);
        let mut no = r.room.meta.settings.clone();
        no.cohosts_may_record = false;
        send(&mut r, "c1", ClientMessage::UpdateSettings { settings: no });
        r.run(300, Input::RecordingMinted { id: ID.into() });
        assert_eq!(r.room.recording(), None);
    }

    #[test]
    fn only_hosts_and_cohosts_record_and_everyone_is_told_in_the_room_and_the_chat() {
        let mut r = room();
        let fx = send(&mut r, "c2", ClientMessage::SetRecording { on: true });
        assert!(is_error(&fx, ErrorCode::Forbidden), "{fx:?}");
        assert_eq!(r.room.recording(), None);

        let fx = start(&mut r);
        let view = RecordingView {
            started_at: 200,
            by: "name-a".into(),
        };
        assert_eq!(states(&fx), vec![Some(view.clone())]);
        assert_eq!(notices(&fx), vec!["name-a started recording the meeting."]);
        assert_eq!(
            record_calls(&fx),
            vec![("sfu-1".into(), 1, Some(ID.into()))]
        );
        assert!(fx.iter().any(|o| matches!(o,
            Output::RecordingStarted(row) if row.id == ID && row.room == "r" && row.by == "name-a")));
        // A joiner learns it with the room; a second start changes nothing.
        let fx = connect(&mut r, "c", "c3");
        let snap = fx
            .iter()
            .find_map(|o| match o {
                Output::Send {
                    msg: ServerMessage::Snapshot { room, .. },
                    ..
                } => Some(room.recording.as_deref().cloned()),
                _ => None,
            })
            .expect("a snapshot");
        assert_eq!(snap, Some(view.clone()));
        let fx = send(&mut r, "c1", ClientMessage::SetRecording { on: true });
        assert!(record_calls(&fx).is_empty() && !fx.contains(&Output::MintRecordingId));

        // A participant cannot stop it; the host can.
        let fx = send(&mut r, "c2", ClientMessage::SetRecording { on: false });
        assert!(is_error(&fx, ErrorCode::Forbidden));
        let fx = r.run(
            9_000,
            Input::Frame {
                conn: "c1".into(),
                text: serde_json::to_string(&ClientMessage::SetRecording { on: false }).unwrap(),
            },
        );
        assert_eq!(states(&fx), vec![None]);
        assert_eq!(notices(&fx), vec!["name-a stopped the recording."]);
        assert_eq!(record_calls(&fx), vec![("sfu-1".into(), 2, None)]);
        // Who was in it, by the ids its files carry (c joined while it ran).
        let names: BTreeMap<String, String> = ["a", "b", "c"]
            .iter()
            .map(|p| (p.to_string(), format!("name-{p}")))
            .collect();
        assert!(fx.iter().any(|o| matches!(o,
            Output::RecordingStopped { row, ended_at: 9_000, names: n } if row.id == ID && *n == names)));
        // The notices are in the chat for who comes later.
        assert_eq!(
            r.room.chat.iter().filter(|m| m.notice).count(),
            2,
            "{:?}",
            r.room.chat
        );
    }

    #[test]
    fn a_start_waits_for_its_id_and_a_host_who_lost_the_role_meanwhile_starts_nothing() {
        let mut r = room();
        let fx = send(&mut r, "c1", ClientMessage::SetRecording { on: true });
        assert_eq!(fx, vec![Output::MintRecordingId]);
        // A second click before the id: no second id.
        assert!(send(&mut r, "c1", ClientMessage::SetRecording { on: true }).is_empty());
        // A bad id from the shell is refused (logged), and starts nothing.
        let fx = r.run(150, Input::RecordingMinted { id: "../x".into() });
        assert!(states(&fx).is_empty());
        assert_eq!(r.room.recording(), None);
        // An id nobody asked for starts nothing either.
        assert!(r
            .run(160, Input::RecordingMinted { id: ID.into() })
            .is_empty());
        // An id that never comes: a later click asks again (after the wait), not before.
        let fx = frame_at(&mut r, 200, "c1", &ClientMessage::SetRecording { on: true });
        assert_eq!(fx, vec![Output::MintRecordingId]);
        assert!(frame_at(&mut r, 300, "c1", &ClientMessage::SetRecording { on: true }).is_empty());
        let fx = frame_at(
            &mut r,
            200 + MINT_WAIT_MS,
            "c1",
            &ClientMessage::SetRecording { on: true },
        );
        assert_eq!(
            fx,
            vec![Output::MintRecordingId],
            "{:?}",
            r.room.meta.recording
        );
    }

    #[test]
    fn the_sfu_gets_it_until_it_took_it_after_an_eviction_and_on_the_sfu_it_moves_to() {
        let mut r = room();
        let fx = start(&mut r);
        let (call, v) = (
            SfuCall::Record {
                version: 1,
                recording: Some(ID.into()),
            },
            1,
        );
        assert_eq!(record_calls(&fx).len(), v);
        // Unreachable: sent again a second later.
        let fx = r.run(
            300,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: String::new(),
                call: call.kind(),
                reply: HttpReply::Unreachable {
                    reason: "refused".into(),
                },
            },
        );
        assert!(record_calls(&fx).is_empty());
        assert_eq!(r.room.poll_timeout(), Some(1_300));
        let fx = r.run(1_300, Input::Timeout);
        assert_eq!(
            record_calls(&fx),
            vec![("sfu-1".into(), 1, Some(ID.into()))]
        );
        // Evicted before the SFU answered: the state goes again.
        let fx = r.evict(1_400, &["c1", "c2"]);
        assert_eq!(
            record_calls(&fx),
            vec![("sfu-1".into(), 1, Some(ID.into()))]
        );
        // Taken: nothing more.
        r.run(
            1_500,
            Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: String::new(),
                call: call.kind(),
                reply: answered(204, ""),
            },
        );
        assert!(record_calls(&r.evict(1_600, &["c1", "c2"])).is_empty());
        // The SFU drains: the room moves, and the new SFU records from now on (a new version).
        let fx = r.run(
            2_000,
            Input::SfuDraining {
                sfu: "sfu-1".into(),
            },
        );
        let mut all = fx;
        if !all.iter().any(|o| {
            matches!(
                o,
                Output::Broadcast {
                    msg: ServerMessage::SfuChanged { .. },
                    ..
                }
            )
        }) {
            all.extend(r.run(
                2_100,
                Input::SfuFound {
                    result: Ok(choice("sfu-2")),
                },
            ));
        }
        assert_eq!(
            record_calls(&all),
            vec![("sfu-2".into(), 2, Some(ID.into()))]
        );
    }

    #[test]
    fn the_recording_ends_when_the_last_person_leaves_or_the_meeting_ends() {
        let mut r = room();
        start(&mut r);
        send(&mut r, "c2", ClientMessage::Leave {});
        assert!(r.room.recording().is_some(), "one is still in");
        let fx = send(&mut r, "c1", ClientMessage::Leave {});
        assert!(fx
            .iter()
            .any(|o| matches!(o, Output::RecordingStopped { .. })));
        assert_eq!(r.room.recording(), None);

        let mut r = room();
        start(&mut r);
        let fx = send(&mut r, "c1", ClientMessage::EndMeeting {});
        assert!(fx
            .iter()
            .any(|o| matches!(o, Output::RecordingStopped { .. })));
        // The next meeting's recording counts on from this one's version (the SFU keeps the
        // last it applied for the room).
        assert_eq!(r.room.meta.recording.sync.version(), 2);
        assert_eq!(r.room.recording(), None);
    }
}
