//! The room core under any sequence of inputs: joins, connects (waiting or not, any door, any
//! browser), every client message with ids from the room or not, raw text frames, drops, clean
//! leaves, SFU replies, hashed passwords, report batches written or not, time passing and
//! evictions (scheduled meetings' joins too). After every input: no panic,
//! at most one host and they are a member, nobody both waiting and in the room, and the rows the
//! core asked to store rebuild exactly the room in memory.
#![no_main]
use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use edgemeet_shared::health::Quality;
use edgemeet_shared::protocol::{
    BreakoutEdit, ClientMessage, MediaKind, RoomSettings, SfuEvent, Source, TileView,
};
use edgemeet_shared::region::SfuChoice;
use edgemeet_shared::room::{
    Changes, HttpReply, Input, JoinAsk, Output, PasswordCheck, Room, ScheduledAsk, SfuCallKind,
    MAX_OUTBOX,
};
use edgemeet_shared::schedule::MeetingRole;
use edgemeet_shared::token::{Claims, Grants, Role};
use libfuzzer_sys::fuzz_target;

const PEOPLE: u8 = 6;

fn id(who: u8) -> String {
    format!("p{}", who % (PEOPLE + 1)) // one more than ever connects: an unknown id
}

fn message(u: &mut Unstructured) -> arbitrary::Result<ClientMessage> {
    let who = id(u.arbitrary()?);
    let kind = *u.choose(&[MediaKind::Audio, MediaKind::Video, MediaKind::Screen])?;
    Ok(match u.int_in_range(0..=36u8)? {
        0 => ClientMessage::Hello {
            version: u.int_in_range(0..=3)?,
        },
        1 => ClientMessage::Ping {
            nonce: u.arbitrary()?,
        },
        2 => ClientMessage::SetMedia {
            audio_muted: u.arbitrary()?,
            video_muted: u.arbitrary()?,
        },
        3 => ClientMessage::Leave {},
        4 => ClientMessage::Offer {
            sdp: if u.arbitrary()? {
                "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".into()
            } else {
                u.arbitrary()?
            },
            id: u.arbitrary()?,
        },
        5 => ClientMessage::Answer {
            sdp: u.arbitrary()?,
            generation: u.arbitrary()?,
        },
        6 => ClientMessage::MediaFailed {},
        7 => ClientMessage::Views {
            views: vec![TileView {
                publisher: who,
                source: Source::Camera,
                height: u.arbitrary()?,
            }],
        },
        8 => ClientMessage::SetScreen {
            sharing: u.arbitrary()?,
        },
        9 => ClientMessage::SetRoomOptions {
            max_screen_sharers: u.int_in_range(0..=6)?,
        },
        10 => ClientMessage::Chat {
            text: u.arbitrary()?,
            to: if u.arbitrary()? { Some(who) } else { None },
            client_id: format!("m{}", u.int_in_range(0..=9u8)?),
        },
        11 => ClientMessage::DeleteChat {
            id: u.int_in_range(0..=12)?,
        },
        12 => ClientMessage::React {
            emoji: (*u.choose(&["👍", "🎉", "x", ""])?).into(),
        },
        13 => ClientMessage::Hand {
            raised: u.arbitrary()?,
        },
        14 => ClientMessage::LowerHand { id: who },
        15 => ClientMessage::Admit { id: who },
        16 => ClientMessage::Deny { id: who },
        17 => ClientMessage::AdmitAll {},
        18 => ClientMessage::Remove { id: who },
        19 => ClientMessage::Stop {
            id: who,
            what: kind,
            lock: u.arbitrary()?,
        },
        20 => ClientMessage::MuteAll {
            lock: u.arbitrary()?,
        },
        21 => ClientMessage::AskUnmute { id: who },
        22 => ClientMessage::SetCohost {
            id: who,
            cohost: u.arbitrary()?,
        },
        24 => ClientMessage::CreatePoll {
            question: u.arbitrary()?,
            options: u.arbitrary()?,
            multiple: u.arbitrary()?,
            anonymous: u.arbitrary()?,
        },
        25 => ClientMessage::Vote {
            poll: u.int_in_range(0..=3)?,
            choices: u.arbitrary()?,
        },
        26 => ClientMessage::SharePollResults {
            poll: u.int_in_range(0..=3)?,
        },
        27 => ClientMessage::EndPoll {
            poll: u.int_in_range(0..=3)?,
        },
        28 => ClientMessage::SetBreakouts {
            rooms: (0..u.int_in_range(0..=3)?)
                .map(|i| format!("room {i}"))
                .collect(),
            assigned: (0..u.int_in_range(0..=4)?)
                .map(|_| Ok((id(u.arbitrary()?), u.int_in_range(0..=4)?)))
                .collect::<arbitrary::Result<_>>()?,
            let_choose: u.arbitrary()?,
        },
        29 => ClientMessage::OpenBreakouts {
            minutes: u.arbitrary()?,
        },
        30 => ClientMessage::CloseBreakouts {
            seconds: u.int_in_range(0..=40)?,
        },
        31 => ClientMessage::JoinBreakout {
            room: u.int_in_range(0..=4)?,
        },
        32 => ClientMessage::BreakoutMessage {
            text: u.arbitrary()?,
        },
        23 => ClientMessage::UpdateSettings {
            settings: RoomSettings {
                waiting_room: u.arbitrary()?,
                locked: u.arbitrary()?,
                has_password: u.arbitrary()?,
                password_skips_waiting: u.arbitrary()?,
                may_share_screen: u.arbitrary()?,
                may_unmute: u.arbitrary()?,
                may_chat: u.arbitrary()?,
                may_react: u.arbitrary()?,
                cohosts_may_record: u.arbitrary()?,
            },
        },
        35 => {
            // Mostly names the rooms have ("Room N" from AddRoom, "room N" from SetBreakouts).
            let room = |u: &mut Unstructured| -> arbitrary::Result<String> {
                Ok(match u.int_in_range(0..=2u8)? {
                    0 => format!("Room {}", u.int_in_range(1..=4u8)?),
                    1 => format!("room {}", u.int_in_range(0..=3u8)?),
                    _ => u.arbitrary()?,
                })
            };
            ClientMessage::EditBreakouts {
                edit: match u.int_in_range(0..=5u8)? {
                    0 => BreakoutEdit::AddRoom,
                    1 => BreakoutEdit::RenameRoom {
                        room: room(u)?,
                        name: room(u)?,
                    },
                    2 => BreakoutEdit::RemoveRoom { room: room(u)? },
                    3 => BreakoutEdit::Assign {
                        participant: who,
                        room: if u.arbitrary()? { Some(room(u)?) } else { None },
                    },
                    4 => BreakoutEdit::AssignEvenly,
                    _ => BreakoutEdit::LetChoose { on: u.arbitrary()? },
                },
            }
        }
        33 => ClientMessage::SetRecording { on: u.arbitrary()? },
        34 => ClientMessage::Quality {
            quality: *u.choose(&[
                edgemeet_shared::health::Quality::Excellent,
                edgemeet_shared::health::Quality::Good,
                edgemeet_shared::health::Quality::Poor,
                edgemeet_shared::health::Quality::Lost,
            ])?,
        },
        _ => {
            if u.arbitrary()? {
                ClientMessage::SetPassword {
                    password: Some(u.arbitrary()?),
                }
            } else {
                ClientMessage::EndMeeting {}
            }
        }
    })
}

#[derive(Debug)]
struct Msg(ClientMessage);

impl<'a> Arbitrary<'a> for Msg {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        message(u).map(Msg)
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    Join {
        browser: u8,
        password: u8,
    },
    Connect {
        who: u8,
        browser: u8,
        waiting: bool,
        admitted: bool,
        door: u8,
        role: u8,
        conn: u8,
    },
    Frame {
        conn: u8,
        msg: Msg,
    },
    Raw {
        conn: u8,
        text: String,
    },
    Disconnect {
        conn: u8,
        clean: bool,
    },
    Later {
        ms: u16,
    },
    LongLater {
        minutes: u8,
    },
    Evict {
        keep: u8,
    },
    SfuReply {
        who: u8,
        status: u16,
        offer: bool,
    },
    Hashed {
        ok: bool,
    },
    /// The outcome of the last report batch the room handed out.
    ReportWritten {
        ok: bool,
    },
    /// The room's media moving: an SFU (1–3) draining, the registry's answer (a replacement or
    /// none), or a probe's outcome.
    Media {
        sfu: u8,
        what: u8,
    },
    /// An event from an SFU (the room's or another), about someone: a connection judgement, a
    /// publisher's layers or a speaker; any version.
    SfuEvent {
        who: u8,
        kind: u8,
        version: u8,
        other_sfu: bool,
    },
    /// An SFU offer (numbered near the SFU clock's µs, or 0), from the room's SFU or another.
    SfuOffer {
        who: u8,
        generation: u8,
        far_back: bool,
        other_sfu: bool,
    },
}

/// The rows the core asked to store, as the DO keeps them.
#[derive(Default)]
struct Rows {
    meta: Option<String>,
    members: BTreeMap<String, String>,
    revoked: BTreeMap<String, u64>,
    chat: BTreeMap<u64, String>,
    polls: BTreeMap<u64, String>,
    report: BTreeMap<u64, String>,
    /// The last report batch handed out (not a stored row).
    report_upto: Option<u64>,
}

impl Rows {
    fn apply(&mut self, c: Changes) {
        if let Some(m) = c.meta {
            self.meta = Some(m);
        }
        for (k, v) in c.members {
            match v {
                Some(v) => self.members.insert(k, v),
                None => self.members.remove(&k),
            };
        }
        for (k, v) in c.revoked {
            match v {
                Some(v) => self.revoked.insert(k, v),
                None => self.revoked.remove(&k),
            };
        }
        for (k, v) in c.chat {
            match v {
                Some(v) => self.chat.insert(k, v),
                None => self.chat.remove(&k),
            };
        }
        for (k, v) in c.polls {
            match v {
                Some(v) => self.polls.insert(k, v),
                None => self.polls.remove(&k),
            };
        }
        for (k, v) in c.report {
            match v {
                Some(v) => self.report.insert(k, v),
                None => self.report.remove(&k),
            };
        }
    }

    fn restore(&self, name: &str) -> Room {
        let (mut room, errors) = Room::restore(
            name,
            self.meta.as_deref(),
            self.members.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.revoked.iter().map(|(k, v)| (k.as_str(), *v)),
            self.chat.values().map(String::as_str),
            self.polls.values().map(String::as_str),
        );
        assert!(errors.is_empty(), "stored rows unreadable: {errors:?}");
        let errors = room.restore_report_outbox(self.report.values().map(String::as_str));
        assert!(
            errors.is_empty(),
            "stored report rows unreadable: {errors:?}"
        );
        room
    }
}

fn run(room: &mut Room, rows: &mut Rows, open: &mut Vec<String>, now: u64, input: Input) {
    room.handle_input(now, input);
    while let Some(o) = room.poll_output() {
        match o {
            Output::Persist(c) => rows.apply(c),
            Output::Close { conn, .. } => open.retain(|c| *c != conn),
            Output::WriteReport { upto, rows: batch } => {
                assert!(
                    !batch.is_empty() && batch.len() <= 100,
                    "a batch of {}",
                    batch.len()
                );
                assert!(
                    batch.windows(2).all(|w| w[0].seq() < w[1].seq()),
                    "in order"
                );
                rows.report_upto = Some(upto);
            }
            _ => {}
        }
    }
    // Invariants.
    assert!(
        room.report_outbox().count() <= MAX_OUTBOX + 8,
        "the report outbox grew past its bound"
    );
    let snap = room.snapshot();
    let hosts = snap
        .participants
        .iter()
        .filter(|p| p.role == Role::Host)
        .count();
    assert!(hosts <= 1, "{hosts} hosts: {snap:?}");
    if let Some(h) = room.host() {
        assert!(
            snap.participants.iter().any(|p| p.id == h),
            "host {h} is not in the room"
        );
    }
    if let Some(h) = room.host() {
        for w in room.snapshot_for(h).waiting {
            assert!(
                !snap.participants.iter().any(|p| p.id == w.id),
                "{} both waiting and in the room",
                w.id
            );
        }
    }
    // Breakout rooms: everyone is in one that exists, and in the main room while they are closed.
    for p in &snap.participants {
        assert!(
            p.scope as usize <= snap.breakouts.rooms.len(),
            "{} in room {} of {}",
            p.id,
            p.scope,
            snap.breakouts.rooms.len()
        );
        assert!(
            snap.breakouts.open || p.scope == 0,
            "{} in room {} with the rooms closed",
            p.id,
            p.scope
        );
    }
    assert_eq!(
        rows.restore(room.name()),
        *room,
        "the stored rows must rebuild the room"
    );
}

fuzz_target!(|steps: Vec<Step>| {
    if std::env::var_os("FUZZ_SHOW").is_some() {
        eprintln!("{steps:#?}");
    }
    let mut room = Room::new("r");
    let mut rows = Rows::default();
    let mut open: Vec<String> = Vec::new();
    let mut now: u64 = 1_000_000;
    let choice = SfuChoice {
        id: "sfu-1".into(),
        region: "sfu-1".into(),
        url: "http://sfu-1".into(),
        distance_km: None,
        score: 0.0,
        reason: "fuzz".into(),
    };
    run(
        &mut room,
        &mut rows,
        &mut open,
        now,
        Input::SfuChosen { choice },
    );
    for step in steps.into_iter().take(300) {
        let input = match step {
            Step::Join { browser, password } => Input::Join(JoinAsk {
                name: format!("N{browser}"),
                identity: format!("b{}", browser % 4),
                addr: format!("198.51.100.{}", browser % 3),
                password: match password % 4 {
                    0 => PasswordCheck::NotGiven,
                    1 => PasswordCheck::Correct,
                    2 => PasswordCheck::Wrong,
                    _ => PasswordCheck::New("$argon2id$fuzz".into()),
                },
                // Half the time a scheduled meeting's join (owner, co-host or guest).
                scheduled: (password & 8 != 0).then(|| ScheduledAsk {
                    meeting: "mtg".into(),
                    role: [Some(MeetingRole::Owner), Some(MeetingRole::Cohost), None]
                        [browser as usize % 3],
                    signed_in: browser % 3 != 2,
                    only_signed_in: false,
                    waiting_room: password & 16 != 0,
                    has_password: false,
                }),
            }),
            Step::Connect {
                who,
                browser,
                waiting,
                admitted,
                door,
                role,
                conn,
            } => {
                let secs = now / 1000;
                let role =
                    [Role::Participant, Role::Viewer, Role::Cohost, Role::Host][role as usize % 4];
                let claims = Claims {
                    sub: id(who % PEOPLE),
                    name: format!("N{who}"),
                    room: "r".into(),
                    role,
                    grants: if waiting {
                        Grants::default()
                    } else {
                        Grants::max_for(role)
                    },
                    sfu: None,
                    exp: secs + 900,
                    nbf: secs,
                    iat: secs,
                    jti: format!("j{who}"),
                    waiting,
                    bid: Some(format!("b{}", browser % 4)),
                    door: (door % 3) as u32,
                    admitted,
                };
                let conn = format!("c{}", conn % 8);
                if !open.contains(&conn) {
                    open.push(conn.clone());
                }
                Input::Connect { conn, claims }
            }
            Step::Frame { conn, msg } => Input::Frame {
                conn: format!("c{}", conn % 8),
                text: serde_json::to_string(&msg.0).expect("encodes"),
            },
            Step::Raw { conn, text } => Input::Frame {
                conn: format!("c{}", conn % 8),
                text,
            },
            Step::Disconnect { conn, clean } => {
                let conn = format!("c{}", conn % 8);
                open.retain(|c| *c != conn);
                Input::Disconnect { conn, clean }
            }
            Step::Later { ms } => {
                now += ms as u64;
                Input::Timeout
            }
            Step::LongLater { minutes } => {
                now += minutes as u64 * 60_000;
                Input::Timeout
            }
            Step::Evict { keep } => {
                // Rebuilt from storage; some sockets survived.
                room = rows.restore(room.name());
                open = open
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep & (1 << (i % 8)) != 0)
                    .map(|(_, c)| c.clone())
                    .collect();
                Input::Restored { open: open.clone() }
            }
            Step::SfuReply { who, status, offer } => Input::SfuReply {
                sfu: "sfu-1".into(),
                participant: id(who),
                call: if offer {
                    SfuCallKind::Offer {
                        id: 1,
                        block: Default::default(),
                        scope: status as u32 % 3,
                    }
                } else if status % 2 == 0 {
                    SfuCallKind::Block
                } else {
                    SfuCallKind::Scopes {
                        version: status as u64 % 4,
                    }
                },
                reply: match status % 5 {
                    0 => HttpReply::Unreachable {
                        reason: "refused".into(),
                    },
                    1 => HttpReply::Answered {
                        status: 200,
                        body: r#"{"sdp":"a"}"#.into(),
                    },
                    2 => HttpReply::Answered {
                        status: 404,
                        body: "{}".into(),
                    },
                    3 => HttpReply::Answered {
                        status: 500,
                        body: "x".into(),
                    },
                    _ => HttpReply::Answered {
                        status: 200,
                        body: "not json".into(),
                    },
                },
            },
            Step::Hashed { ok } => Input::PasswordHashed {
                hash: ok.then(|| "$argon2id$new".into()),
            },
            Step::ReportWritten { ok } => Input::ReportWritten {
                upto: rows.report_upto.unwrap_or(0),
                ok,
            },
            Step::Media { sfu, what } => {
                let name = format!("sfu-{}", sfu % 3 + 1);
                match what % 4 {
                    0 => Input::SfuDraining { sfu: name },
                    1 => Input::SfuFound {
                        result: Ok(SfuChoice {
                            id: name.clone(),
                            region: name.clone(),
                            url: format!("http://{name}"),
                            distance_km: None,
                            score: 0.0,
                            reason: "fuzz".into(),
                        }),
                    },
                    2 => Input::SfuFound {
                        result: Err("none".into()),
                    },
                    _ => Input::Probed {
                        sfu: name,
                        reply: HttpReply::Unreachable {
                            reason: "refused".into(),
                        },
                    },
                }
            }
            Step::SfuOffer {
                who,
                generation,
                far_back,
                other_sfu,
            } => Input::SfuOffer {
                participant: id(who),
                sdp: "v=0\r\n".into(),
                sfu: Some(if other_sfu {
                    "sfu-9".to_string()
                } else {
                    room.sfu()
                        .map_or_else(|| "sfu-1".to_string(), |c| c.id.clone())
                }),
                generation: match (generation, far_back) {
                    (0, _) => 0,
                    (g, false) => 1_764_000_000_000_000 + g as u64,
                    (g, true) => 1_000_000_000_000 + g as u64,
                },
            },
            Step::SfuEvent {
                who,
                kind,
                version,
                other_sfu,
            } => {
                let sfu = Some(if other_sfu { "sfu-9" } else { "sfu-1" }.to_string());
                let version = Some(version as u64);
                let participant = id(who);
                Input::SfuEvent(match kind % 3 {
                    0 => SfuEvent::Quality {
                        room: "r".into(),
                        participant,
                        quality: [
                            Quality::Excellent,
                            Quality::Good,
                            Quality::Poor,
                            Quality::Lost,
                        ][(kind / 3 % 4) as usize],
                        sfu,
                        version,
                    },
                    1 => SfuEvent::PublishLayers {
                        room: "r".into(),
                        participant,
                        active: vec![true, kind % 2 == 0, false],
                        sfu,
                        version,
                    },
                    _ => SfuEvent::ActiveSpeaker {
                        room: "r".into(),
                        participant: (kind % 2 == 0).then_some(participant),
                        scope: (kind / 2 % 3) as u32,
                        sfu,
                        version,
                    },
                })
            }
        };
        now += 1;
        run(&mut room, &mut rows, &mut open, now, input);
    }
});
