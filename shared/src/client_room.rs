//! The room as a browser sees it: a pure reducer over [`ServerMessage`]s, so the UI only renders.

use crate::protocol::{
    BreakoutView, ChatMessage, MediaKind, ParticipantInfo, PollView, RecordingView, RoomSettings,
    ServerMessage, Waiter, CHAT_HISTORY,
};
use crate::token::Role;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientRoom {
    pub me: Option<String>,
    pub name: String,
    /// In join order as the server reported them; `me` included.
    pub participants: Vec<ParticipantInfo>,
    pub host: Option<String>,
    pub sfu: Option<String>,
    /// Who is speaking (drives the speaker layout and the grid highlight).
    pub speaker: Option<String>,
    pub max_screen_sharers: u32,
    pub settings: RoomSettings,
    /// The chat this browser may read, oldest first.
    pub chat: Vec<ChatMessage>,
    /// Who is waiting to be let in (hosts and co-hosts are told).
    pub waiting: Vec<Waiter>,
    /// In the waiting room of this room (not let in yet).
    pub waiting_in: Option<String>,
    /// The meeting's polls as this browser may see them, oldest first.
    pub polls: Vec<PollView>,
    /// The breakout rooms.
    pub breakouts: BreakoutView,
    /// The meeting is being recorded.
    pub recording: Option<RecordingView>,
}

impl ClientRoom {
    /// Applies one message; returns a short notice for people (a toast) when something happened
    /// that they should hear about.
    pub fn apply(&mut self, msg: &ServerMessage) -> Option<String> {
        match msg {
            ServerMessage::Snapshot { you, room, .. } => {
                self.me = Some(you.clone());
                self.name = room.name.clone();
                self.participants = room.participants.clone();
                self.host = room.host.clone();
                self.sfu = room.sfu.clone();
                self.speaker = room.speaker.clone();
                self.max_screen_sharers = room.max_screen_sharers;
                self.settings = room.settings.clone();
                self.chat = room.chat.clone();
                self.waiting = room.waiting.clone();
                self.waiting_in = None;
                self.polls = room.polls.clone();
                self.breakouts = (*room.breakouts).clone();
                self.recording = room.recording.as_deref().cloned();
                None
            }
            ServerMessage::Recording { recording } => {
                let was = std::mem::replace(&mut self.recording, recording.clone());
                match (was.is_some(), recording) {
                    (false, Some(r)) => Some(format!("{} started recording", r.by)),
                    (true, None) => Some("Recording stopped".into()),
                    _ => None,
                }
            }
            ServerMessage::Breakouts { breakouts } => {
                let was = std::mem::replace(&mut self.breakouts, breakouts.clone());
                let scope = self.scope();
                match (was.open, breakouts.open) {
                    (false, true) => Some("Breakout rooms are open".into()),
                    (true, false) => Some("Breakout rooms are closed".into()),
                    (true, true) if was.closing_at.is_none() && breakouts.closing_at.is_some() => {
                        (scope != 0).then(|| "Breakout rooms are closing".into())
                    }
                    _ => None,
                }
            }
            ServerMessage::ParticipantMoved { id, scope } => {
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.scope = *scope;
                let name = p.name.clone();
                if self.is_me(id) {
                    return None; // `moved` says it
                }
                let mine = self.scope();
                if *scope == mine && self.breakouts.open {
                    Some(format!("{name} joined {}", self.room_name(mine)))
                } else {
                    None
                }
            }
            ServerMessage::Moved {
                scope,
                chat,
                speaker,
            } => {
                if let Some(me) = self.me.clone() {
                    if let Some(p) = self.participants.iter_mut().find(|p| p.id == me) {
                        p.scope = *scope;
                    }
                }
                self.chat = chat.clone();
                self.speaker = speaker.clone();
                Some(format!("You are in {}", self.room_name(*scope)))
            }
            ServerMessage::Poll { poll } => {
                let Some(old) = self.polls.iter_mut().find(|p| p.id == poll.id) else {
                    let i = self.polls.partition_point(|p| p.id < poll.id);
                    self.polls.insert(i, poll.clone());
                    return poll
                        .open
                        .then(|| format!("{} started a poll: {}", poll.by, poll.question));
                };
                let notice = match (old.open, poll.open, old.shared, poll.shared) {
                    (true, false, ..) => Some(format!("Poll ended: {}", poll.question)),
                    (_, _, false, true) => Some(format!("Poll results shared: {}", poll.question)),
                    _ => None,
                };
                *old = poll.clone();
                notice
            }
            ServerMessage::Waiting { room } => {
                self.waiting_in = Some(room.clone());
                None
            }
            ServerMessage::WaitingList { waiting } => {
                let new: Vec<&Waiter> = waiting
                    .iter()
                    .filter(|w| !self.waiting.iter().any(|o| o.id == w.id))
                    .collect();
                let notice = match new[..] {
                    [] => None,
                    [w] => Some(format!("{} is waiting to join", w.name)),
                    _ => Some(format!("{} people are waiting to join", new.len())),
                };
                self.waiting = waiting.clone();
                notice
            }
            ServerMessage::ChatMessage { message } => {
                if !self.chat.iter().any(|m| m.id == message.id) {
                    self.chat.push(message.clone());
                    if self.chat.len() > CHAT_HISTORY {
                        self.chat.remove(0);
                    }
                }
                None
            }
            ServerMessage::ChatDeleted { id } => {
                self.chat.retain(|m| m.id != *id);
                None
            }
            ServerMessage::HandChanged { id, raised_at } => {
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.hand = *raised_at;
                let name = p.name.clone();
                match raised_at {
                    Some(_) if !self.is_me(id) => Some(format!("{name} raised their hand")),
                    _ => None,
                }
            }
            ServerMessage::RoleChanged { id, role } => {
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.role = *role;
                let name = p.name.clone();
                let me = self.is_me(id);
                if me && *role == Role::Participant {
                    self.waiting.clear(); // no longer theirs to see
                }
                match (role, me) {
                    (Role::Cohost, true) => Some("You are a co-host now".into()),
                    (Role::Cohost, false) => Some(format!("{name} is a co-host now")),
                    (_, true) => Some("You are no longer a co-host".into()),
                    _ => None,
                }
            }
            ServerMessage::StoppedByHost { what, by, .. } => Some(match what {
                MediaKind::Audio => format!("{by} muted you"),
                MediaKind::Video => format!("{by} turned your camera off"),
                MediaKind::Screen => format!("{by} stopped your screen share"),
            }),
            ServerMessage::UnmuteRequested { by } => Some(format!("{by} asks you to unmute")),
            ServerMessage::Settings { settings } => {
                self.settings = settings.clone();
                None
            }
            ServerMessage::MeetingEnded {} => Some("The host ended the meeting".into()),
            ServerMessage::ParticipantJoined { participant } => {
                if self.participants.iter().any(|p| p.id == participant.id) {
                    return None;
                }
                self.participants.push(participant.clone());
                Some(format!("{} joined", participant.name))
            }
            ServerMessage::ParticipantLeft { id } => {
                let i = self.participants.iter().position(|p| &p.id == id)?;
                let p = self.participants.remove(i);
                if self.speaker.as_ref() == Some(id) {
                    self.speaker = None;
                }
                Some(format!("{} left", p.name))
            }
            ServerMessage::MediaChanged {
                id,
                audio_muted,
                video_muted,
            } => {
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.audio_muted = *audio_muted;
                p.video_muted = *video_muted;
                None
            }
            ServerMessage::QualityChanged { id, quality } => {
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.quality = *quality;
                None
            }
            ServerMessage::HostChanged { id } => {
                self.host = Some(id.clone());
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.role = crate::token::Role::Host;
                if self.me.as_ref() == Some(id) {
                    Some("You are the host now".into())
                } else {
                    Some(format!("{} is the host now", p.name))
                }
            }
            ServerMessage::ParticipantAway { id } | ServerMessage::ParticipantBack { id } => {
                let away = matches!(msg, ServerMessage::ParticipantAway { .. });
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.away = away;
                None
            }
            ServerMessage::SfuChanged { sfu, .. } => {
                self.sfu = Some(sfu.clone());
                Some(format!("Media server changed to {sfu}: reconnecting media"))
            }
            ServerMessage::ScreenChanged { id, sharing } => {
                let p = self.participants.iter_mut().find(|p| &p.id == id)?;
                p.screen = *sharing;
                let name = p.name.clone();
                match (*sharing, self.is_me(id)) {
                    (true, false) => Some(format!("{name} is sharing their screen")),
                    _ => None,
                }
            }
            ServerMessage::RoomOptions { max_screen_sharers } => {
                self.max_screen_sharers = *max_screen_sharers;
                None
            }
            ServerMessage::ActiveSpeaker { id } => {
                self.speaker = id.clone();
                None
            }
            ServerMessage::Pong { .. }
            | ServerMessage::Reaction { .. }
            | ServerMessage::PublishLayers { .. }
            | ServerMessage::Error { .. }
            | ServerMessage::Answer { .. }
            | ServerMessage::Offer { .. }
            | ServerMessage::Token { .. } => None,
        }
    }

    pub fn is_me(&self, id: &str) -> bool {
        self.me.as_deref() == Some(id)
    }

    /// My role, once I am in.
    pub fn my_role(&self) -> Option<Role> {
        self.participants
            .iter()
            .find(|p| self.is_me(&p.id))
            .map(|p| p.role)
    }

    /// I may start and stop a recording (the room's rule: `RoomSettings::may_record`).
    pub fn may_record(&self) -> bool {
        self.my_role()
            .is_some_and(|role| self.settings.may_record(role))
    }

    /// Everyone I see and hear but me (those in my breakout room, or in the main room), in join
    /// order.
    pub fn others(&self) -> Vec<ParticipantInfo> {
        let scope = self.scope();
        self.participants
            .iter()
            .filter(|p| !self.is_me(&p.id) && p.scope == scope)
            .cloned()
            .collect()
    }

    /// Everyone but me, wherever they are, in join order.
    pub fn everyone_else(&self) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .filter(|p| !self.is_me(&p.id))
            .cloned()
            .collect()
    }

    /// The breakout room I am in (0: the main room).
    pub fn scope(&self) -> u32 {
        self.participants
            .iter()
            .find(|p| self.is_me(&p.id))
            .map_or(0, |p| p.scope)
    }

    /// What people call room `scope`: "the main room", or the breakout room's name.
    pub fn room_name(&self, scope: u32) -> String {
        match scope {
            0 => "the main room".into(),
            n => self
                .breakouts
                .rooms
                .get(n as usize - 1)
                .cloned()
                .unwrap_or_else(|| format!("room {n}")),
        }
    }
}

/// Up to two initials of a display name, for a tile without video.
pub fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RoomSnapshot;
    use crate::token::Role;

    fn p(id: &str, name: &str) -> ParticipantInfo {
        ParticipantInfo {
            id: id.into(),
            name: name.into(),
            role: Role::Participant,
            audio_muted: false,
            video_muted: false,
            away: false,
            screen: false,
            hand: None,
            scope: 0,
            quality: None,
        }
    }

    fn room() -> ClientRoom {
        let mut r = ClientRoom::default();
        let snap = RoomSnapshot {
            name: "r".into(),
            participants: vec![p("a", "Ada"), p("b", "Bob")],
            sfu: Some("eu-west".into()),
            host: Some("a".into()),
            speaker: None,
            max_screen_sharers: 1,
            settings: RoomSettings::default(),
            chat: Vec::new(),
            waiting: Vec::new(),
            polls: Vec::new(),
            breakouts: Default::default(),
            recording: None,
        };
        assert_eq!(
            r.apply(&ServerMessage::Snapshot {
                you: "b".into(),
                room: snap,
                resumed: false,
            }),
            None
        );
        r
    }

    #[test]
    fn a_participants_own_quality_is_kept_on_them_quietly() {
        use crate::health::Quality;
        let mut r = room();
        let said = r.apply(&ServerMessage::QualityChanged {
            id: "a".into(),
            quality: Some(Quality::Poor),
        });
        assert_eq!(said, None);
        assert_eq!(r.participants[0].quality, Some(Quality::Poor));
        // Someone unknown: ignored.
        r.apply(&ServerMessage::QualityChanged {
            id: "zz".into(),
            quality: Some(Quality::Good),
        });
        // Nobody says anything of them any more: no band.
        r.apply(&ServerMessage::QualityChanged {
            id: "a".into(),
            quality: None,
        });
        assert_eq!(r.participants[0].quality, None);
    }

    #[test]
    fn record_is_offered_to_the_host_and_to_co_hosts_while_the_host_allows_it() {
        let mut r = room(); // I am b, a participant
        assert!(!r.may_record());
        r.apply(&ServerMessage::RoleChanged {
            id: "b".into(),
            role: Role::Cohost,
        });
        assert!(r.may_record());
        let mut no = r.settings.clone();
        no.cohosts_may_record = false;
        r.apply(&ServerMessage::Settings { settings: no });
        assert!(!r.may_record());
        r.apply(&ServerMessage::RoleChanged {
            id: "b".into(),
            role: Role::Host,
        });
        assert!(r.may_record());
        assert!(!ClientRoom::default().may_record(), "not in yet");
    }

    #[test]
    fn joins_leaves_and_media_changes_update_the_room_with_notices() {
        let mut r = room();
        assert_eq!(r.others().len(), 1);
        assert_eq!(
            r.apply(&ServerMessage::ParticipantJoined {
                participant: p("c", "Cy")
            })
            .as_deref(),
            Some("Cy joined")
        );
        assert_eq!(
            r.apply(&ServerMessage::ParticipantJoined {
                participant: p("c", "Cy")
            }),
            None,
            "no duplicate"
        );
        assert_eq!(r.participants.len(), 3);
        r.apply(&ServerMessage::MediaChanged {
            id: "c".into(),
            audio_muted: true,
            video_muted: true,
        });
        assert!(r.participants[2].audio_muted && r.participants[2].video_muted);
        assert_eq!(
            r.apply(&ServerMessage::ParticipantLeft { id: "c".into() })
                .as_deref(),
            Some("Cy left")
        );
        assert_eq!(
            r.apply(&ServerMessage::ParticipantLeft { id: "c".into() }),
            None
        );
        assert_eq!(r.participants.len(), 2);
    }

    #[test]
    fn host_and_presence_changes() {
        let mut r = room();
        assert_eq!(
            r.apply(&ServerMessage::HostChanged { id: "b".into() })
                .as_deref(),
            Some("You are the host now")
        );
        assert_eq!(r.participants[1].role, Role::Host);
        r.apply(&ServerMessage::ParticipantAway { id: "a".into() });
        assert!(r.participants[0].away);
        r.apply(&ServerMessage::ParticipantBack { id: "a".into() });
        assert!(!r.participants[0].away);
        assert_eq!(
            r.apply(&ServerMessage::MediaChanged {
                id: "zz".into(),
                audio_muted: true,
                video_muted: false
            }),
            None
        );
    }

    #[test]
    fn breakout_rooms_show_only_room_mates_and_say_where_i_am() {
        use crate::protocol::BreakoutView;
        let mut r = room(); // me: b
        r.apply(&ServerMessage::ParticipantJoined {
            participant: p("c", "Cy"),
        });
        let plan = BreakoutView {
            rooms: vec!["Red".into(), "Blue".into()],
            open: true,
            ..Default::default()
        };
        assert_eq!(
            r.apply(&ServerMessage::Breakouts {
                breakouts: plan.clone()
            })
            .as_deref(),
            Some("Breakout rooms are open")
        );
        let moved = |id: &str, scope| ServerMessage::ParticipantMoved {
            id: id.into(),
            scope,
        };
        r.apply(&moved("b", 2));
        assert_eq!(
            r.apply(&ServerMessage::Moved {
                scope: 2,
                chat: Vec::new(),
                speaker: None,
            })
            .as_deref(),
            Some("You are in Blue")
        );
        assert!(r.others().is_empty(), "alone in Blue");
        assert_eq!(r.everyone_else().len(), 2);
        assert_eq!(r.apply(&moved("c", 2)).as_deref(), Some("Cy joined Blue"));
        let ids: Vec<String> = r.others().into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["c"]);
        // A host's message to every room arrives with the plan (shown in the banner, no notice).
        let noted = BreakoutView {
            message: Some(crate::protocol::BreakoutNote {
                from: "Ada".into(),
                text: "Two minutes".into(),
            }),
            ..plan.clone()
        };
        assert_eq!(
            r.apply(&ServerMessage::Breakouts { breakouts: noted }),
            None
        );
        assert_eq!(r.breakouts.message.as_ref().unwrap().text, "Two minutes");
        let closed = BreakoutView {
            open: false,
            ..plan
        };
        assert_eq!(
            r.apply(&ServerMessage::Breakouts { breakouts: closed })
                .as_deref(),
            Some("Breakout rooms are closed")
        );
        assert_eq!(r.room_name(0), "the main room");
    }

    #[test]
    fn initials_for_tiles() {
        assert_eq!(initials("ada lovelace"), "AL");
        assert_eq!(initials("Grace"), "G");
        assert_eq!(initials("  "), "");
        assert_eq!(initials("Jean Claude Van"), "JC");
    }

    #[test]
    fn polls_arrive_in_order_and_changes_are_told_in_words() {
        let mut r = room();
        let poll = |id: u64, open: bool, shared: bool| ServerMessage::Poll {
            poll: crate::protocol::PollView {
                id,
                question: format!("Q{id}?"),
                options: vec!["a".into(), "b".into()],
                multiple: false,
                anonymous: false,
                by: "Ada".into(),
                created_at: 0,
                open,
                shared,
                voted: false,
                my_choices: Vec::new(),
                results: None,
            },
        };
        assert_eq!(
            r.apply(&poll(2, true, false)),
            Some("Ada started a poll: Q2?".into())
        );
        assert_eq!(
            r.apply(&poll(1, false, false)),
            None,
            "an ended poll told late is no news"
        );
        assert_eq!(r.polls.iter().map(|p| p.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(r.apply(&poll(2, true, false)), None, "a vote is no news");
        assert_eq!(
            r.apply(&poll(2, true, true)),
            Some("Poll results shared: Q2?".into())
        );
        assert_eq!(
            r.apply(&poll(2, false, true)),
            Some("Poll ended: Q2?".into())
        );
        assert_eq!(r.polls.len(), 2);
    }
}
