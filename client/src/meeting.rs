//! The meeting's shared state and the shell around the session core.
//!
//! [`Meeting`] is provided as context to every page and region: the room as this browser knows it,
//! the local camera/microphone, remote streams, the media session ([`Call`]). It drives
//! `edgemeet_shared::session::Session`, which decides everything about the session: it is fed what
//! happens (socket events, the media connection's state, received packet counts, the person's
//! actions) and its [`Action`]s are performed here — open a socket, send, set media up, show a
//! notice. A timer follows the session's `poll_timeout`.

use std::time::Duration;

use edgemeet_shared::client_room::ClientRoom;
use edgemeet_shared::protocol::{ClientMessage, MediaKind, ServerMessage};
use edgemeet_shared::session::{Action, PcState, Session, SessionInput};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MediaStream, MessageEvent, WebSocket};

use crate::call::{Call, RemoteStreams};
use crate::media;

/// Which page is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    PreJoin,
    /// Joined, in the waiting room: a host lets them in.
    Waiting,
    Room,
}

/// The meeting, shared by the pages (cheap to copy: signals and handles).
#[derive(Clone, Copy)]
pub struct Meeting {
    pub screen: RwSignal<Screen>,
    /// The room as this browser knows it.
    pub model: RwSignal<ClientRoom>,
    pub reconnecting: RwSignal<bool>,
    pub media_state: RwSignal<Option<PcState>>,
    /// The latest error from the room, in words (cleared by a fresh snapshot).
    pub error: RwSignal<Option<String>>,
    /// Why the person is back on the pre-join page ("You left the meeting.").
    pub notice: RwSignal<Option<String>>,
    pub toasts: RwSignal<Vec<(u64, String)>>,
    pub mic_on: RwSignal<bool>,
    pub cam_on: RwSignal<bool>,
    pub sharing: RwSignal<bool>,
    /// Camera and microphone.
    pub stream: RwSignal<Option<MediaStream>, LocalStorage>,
    pub remote: RemoteStreams,
    pub call: StoredValue<Option<Call>, LocalStorage>,
    /// The chosen audio output (where the browser lets pages choose).
    pub speaker_out: RwSignal<Option<String>>,
    /// Reactions being shown: (key, participant, emoji), each for a few seconds.
    pub reactions: RwSignal<Vec<(u64, String, String)>>,
    /// A host asked this person to unmute (their name), until they answer.
    pub unmute_request: RwSignal<Option<String>>,
    /// The newest chat message this person has seen (the chat panel was open).
    pub chat_seen: RwSignal<u64>,
    /// Per remote video (and this page itself: `health::ME`): latency, size, quality band.
    pub health: crate::health::Health,
    session: StoredValue<Session, LocalStorage>,
    socket: StoredValue<Option<(u64, WebSocket)>, LocalStorage>,
    timer: StoredValue<Option<i32>>,
    /// What the timer calls: one function for the page's lifetime (`feed(Timeout)`).
    on_timer: StoredValue<Option<js_sys::Function>, LocalStorage>,
    screen_capture: StoredValue<Option<MediaStream>, LocalStorage>,
    /// TURN credentials being fetched: a media session about to start waits for them.
    ice_fetch: StoredValue<Option<js_sys::Promise>, LocalStorage>,
}

fn now() -> u64 {
    js_sys::Date::now() as u64
}

impl Meeting {
    /// Creates the meeting and its background work (media session, tile-size reports, the media
    /// watchdog's packet sampling, keyboard shortcuts).
    pub fn new() -> Meeting {
        let m = Meeting {
            screen: RwSignal::new(Screen::PreJoin),
            model: RwSignal::new(ClientRoom::default()),
            reconnecting: RwSignal::new(false),
            media_state: RwSignal::new(None),
            error: RwSignal::new(None),
            notice: RwSignal::new(None),
            toasts: RwSignal::new(Vec::new()),
            mic_on: RwSignal::new(true),
            cam_on: RwSignal::new(true),
            sharing: RwSignal::new(false),
            stream: RwSignal::new_local(None),
            remote: RwSignal::new_local(std::collections::HashMap::new()),
            call: StoredValue::new_local(None),
            speaker_out: RwSignal::new(None),
            reactions: RwSignal::new(Vec::new()),
            unmute_request: RwSignal::new(None),
            chat_seen: RwSignal::new(0),
            health: RwSignal::new(std::collections::HashMap::new()),
            session: StoredValue::new_local(Session::new()),
            socket: StoredValue::new_local(None),
            timer: StoredValue::new(None),
            on_timer: StoredValue::new_local(None),
            screen_capture: StoredValue::new_local(None),
            ice_fetch: StoredValue::new_local(None),
        };
        let tick = Closure::<dyn FnMut()>::new(move || {
            m.timer.set_value(None);
            m.feed(SessionInput::Timeout);
        });
        m.on_timer
            .set_value(Some(tick.into_js_value().unchecked_into()));
        m.call.set_value(Some(Call::new(
            move |msg| m.send(&msg),
            m.remote,
            move |state| m.feed(SessionInput::MediaState(PcState::parse(&state))),
        )));
        crate::views::report_views(
            std::rc::Rc::new(move |msg| m.send(&msg)),
            std::rc::Rc::new(move || {
                m.call.with_value(|c| {
                    let c = c.as_ref()?;
                    let pc = c.peer_connection()?;
                    (pc.connection_state() == web_sys::RtcPeerConnectionState::Connected)
                        .then(|| c.generation())
                })
            }),
        );
        m.sample_packets();
        m.shortcuts();
        m.follow_local_media();
        m.prepare_media();
        m
    }

    pub fn in_room(&self) -> bool {
        self.session.with_value(Session::in_room)
    }

    /// Feeds the session one input and performs what it decides.
    pub fn feed(&self, input: SessionInput) {
        let t = now();
        let actions: Vec<Action> = self
            .session
            .try_update_value(|s| {
                s.handle_input(t, input);
                std::iter::from_fn(|| s.poll_action()).collect()
            })
            .unwrap_or_default();
        for a in actions {
            self.perform(a);
        }
        self.sync();
    }

    /// Mirrors the session into the signals the pages read, and re-arms the timer.
    fn sync(&self) {
        let (room, in_room, waiting, reconnecting, media, next) = self.session.with_value(|s| {
            (
                s.room().clone(),
                s.in_room(),
                s.waiting(),
                s.reconnecting(),
                s.media_state(),
                s.poll_timeout(),
            )
        });
        if self.model.with_untracked(|r| *r != room) {
            self.model.set(room);
        }
        if self.reconnecting.get_untracked() != reconnecting {
            self.reconnecting.set(reconnecting);
        }
        if self.media_state.get_untracked() != media {
            self.media_state.set(media);
        }
        let screen = if in_room {
            Screen::Room
        } else if waiting {
            Screen::Waiting
        } else {
            Screen::PreJoin
        };
        if self.screen.get_untracked() != screen {
            self.screen.set(screen);
        }
        if let Some(h) = self.timer.get_value() {
            window().clear_timeout_with_handle(h);
        }
        let handle = next.and_then(|at| {
            self.on_timer.with_value(|f| {
                window()
                    .set_timeout_with_callback_and_timeout_and_arguments_0(
                        f.as_ref()?,
                        at.saturating_sub(now()).min(i32::MAX as u64) as i32,
                    )
                    .ok()
            })
        });
        self.timer.set_value(handle);
    }

    fn perform(&self, action: Action) {
        match action {
            Action::OpenSocket { socket, path } => self.open_socket(socket, &path),
            Action::Send(msg) => self.send(&msg),
            Action::StartMedia { mic, cam } => {
                let Some(call) = self.call.get_value() else {
                    return;
                };
                let local = self.stream.get_untracked();
                let ice = self.ice_fetch.get_value();
                spawn_local(async move {
                    // Let in from the waiting room a moment ago: TURN credentials first.
                    if let Some(p) = ice {
                        let _ = wasm_bindgen_futures::JsFuture::from(p).await;
                    }
                    if let Err(e) = call.start(local).await {
                        web_sys::console::error_1(&format!("media: {e}").into());
                    }
                    call.set_sending("audio", mic);
                    call.set_sending("video", cam);
                });
            }
            Action::StopMedia => {
                self.stop_sharing();
                self.call.with_value(|c| {
                    if let Some(c) = c {
                        c.stop()
                    }
                });
                if let Some((_, ws)) = self.socket.get_value() {
                    let _ = ws.close_with_code(1000);
                }
                self.socket.set_value(None);
            }
            Action::Signal(msg) => self.call.with_value(|c| {
                if let Some(c) = c {
                    c.signal(msg)
                }
            }),
            Action::PublishLayers(active) => self.call.with_value(|c| {
                if let Some(c) = c {
                    c.set_publish_layers(active)
                }
            }),
            Action::Forget { id } => self.call.with_value(|c| {
                if let Some(c) = c {
                    c.forget(&id)
                }
            }),
            Action::Toast(text) => self.toast(text),
            // In the room an error is a notice; on the pre-join page it stays under the form.
            Action::Error(Some(e)) if self.in_room() => self.toast(e),
            Action::Error(e) => self.error.set(e),
            Action::Ended { message } => {
                self.notice.set(Some(message));
                self.error.set(None);
                self.unmute_request.set(None);
            }
            Action::Reaction { id, emoji } => {
                let key = js_sys::Date::now() as u64 ^ (js_sys::Math::random() * 1e9) as u64;
                self.reactions.update(|r| r.push((key, id, emoji)));
                let reactions = self.reactions;
                set_timeout(
                    move || reactions.update(|r| r.retain(|(k, _, _)| *k != key)),
                    Duration::from_secs(4),
                );
            }
            Action::Stopped { what } => match what {
                MediaKind::Audio => self.mic_on.set(false),
                MediaKind::Video => self.cam_on.set(false),
                MediaKind::Screen => self.stop_sharing(),
            },
            Action::UnmuteRequested { by } => self.unmute_request.set(Some(by)),
            Action::NewToken { token, ice_path } => self.refresh_ice_servers(ice_path, token),
        }
    }

    /// Sends a message on the room socket, if it is open (nothing is queued).
    pub fn send(&self, msg: &ClientMessage) {
        let _ = self.try_send(msg);
    }

    /// [`Meeting::send`], saying whether it went.
    pub fn try_send(&self, msg: &ClientMessage) -> bool {
        let Ok(text) = serde_json::to_string(msg) else {
            return false;
        };
        self.socket.with_value(|s| {
            s.as_ref()
                .filter(|(_, ws)| ws.ready_state() == WebSocket::OPEN)
                .is_some_and(|(_, ws)| ws.send_with_str(&text).is_ok())
        })
    }

    /// Shows `text` for 4 s.
    pub fn toast(&self, text: String) {
        let id = js_sys::Date::now() as u64 ^ (js_sys::Math::random() * 1e9) as u64;
        self.toasts.update(|t| t.push((id, text)));
        let toasts = self.toasts;
        set_timeout(
            move || toasts.update(|t| t.retain(|(i, _)| *i != id)),
            Duration::from_secs(4),
        );
    }

    /// Opens room socket number `socket`; its events go to the session.
    fn open_socket(&self, socket: u64, path: &str) {
        let loc = window().location();
        let scheme = if loc.protocol().unwrap_or_default() == "https:" {
            "wss"
        } else {
            "ws"
        };
        let url = format!("{scheme}://{}{path}", loc.host().unwrap_or_default());
        let me = *self;
        let Ok(ws) = WebSocket::new(&url) else {
            self.error
                .set(Some("Could not open the room connection.".into()));
            return;
        };
        let onopen =
            Closure::<dyn FnMut()>::new(move || me.feed(SessionInput::SocketOpened { socket }));
        ws.set_onopen(Some(onopen.as_ref().unchecked_ref()));
        onopen.forget();
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else {
                return;
            };
            if let Ok(msg) = serde_json::from_str::<ServerMessage>(&text) {
                me.feed(SessionInput::SocketMessage { socket, msg });
            }
        });
        ws.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        onmessage.forget();
        let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
            me.feed(SessionInput::SocketClosed {
                socket,
                code: ev.code(),
            })
        });
        ws.set_onclose(Some(onclose.as_ref().unchecked_ref()));
        onclose.forget();
        // Tests read (and drop) it.
        let _ = js_sys::Reflect::set(&window(), &"edgemeetWs".into(), &ws);
        // One room socket at a time: an older one still open is closed (its events are ignored).
        if let Some((_, old)) = self.socket.get_value() {
            if old.ready_state() == WebSocket::OPEN || old.ready_state() == WebSocket::CONNECTING {
                let _ = old.close_with_code(1000);
            }
        }
        self.socket.set_value(Some((socket, ws)));
    }

    /// TURN servers for this member's PeerConnections (`iceServers` JSON; empty or null: none).
    pub fn set_ice_servers(&self, servers: &serde_json::Value) {
        let usable = servers.as_array().is_some_and(|a| !a.is_empty());
        let js = js_sys::JSON::parse(&servers.to_string()).ok();
        if let (true, Some(js), Some(c)) = (usable, js, self.call.get_value()) {
            c.set_ice_servers(js);
        }
    }

    /// Fresh TURN credentials with a fresh room token (for the PeerConnections still to come: a
    /// failover an hour in needs them).
    fn refresh_ice_servers(&self, path: String, token: String) {
        let me = *self;
        let fetch = wasm_bindgen_futures::future_to_promise(async move {
            let res = gloo_net::http::Request::get(&path)
                .header("authorization", &format!("Bearer {token}"))
                .send()
                .await;
            if let Ok(res) = res.as_ref() {
                if res.ok() {
                    if let Ok(v) = res.json::<serde_json::Value>().await {
                        me.set_ice_servers(&v["ice_servers"]);
                    }
                }
            }
            me.ice_fetch.set_value(None);
            Ok(JsValue::UNDEFINED)
        });
        self.ice_fetch.set_value(Some(fetch));
    }

    /// Joined: the session takes over. Closing the tab or navigating away is leaving.
    pub fn joined(&self, ws_path: String) {
        self.notice.set(None);
        self.feed(SessionInput::Joined { ws_path });
        let me = *self;
        let cb = Closure::<dyn FnMut()>::new(move || {
            if me.in_room() {
                me.feed(SessionInput::Leave)
            }
        });
        let _ = window().add_event_listener_with_callback("pagehide", cb.as_ref().unchecked_ref());
        cb.forget();
    }

    pub fn leave(&self) {
        self.feed(SessionInput::Leave);
    }

    /// The watchdog's view of remote media: packets received, sampled every 250 ms in the room.
    fn sample_packets(&self) {
        let me = *self;
        let _ = set_interval_with_handle(
            move || {
                if !me.in_room() {
                    return;
                }
                let Some(c) = me.call.get_value() else { return };
                spawn_local(async move {
                    if let Some(total) = c.inbound_packets().await {
                        me.feed(SessionInput::InboundPackets(total));
                    }
                });
            },
            Duration::from_millis(250),
        );
    }

    /// Ctrl+D microphone, Ctrl+E camera (as in other meeting apps), on every page.
    fn shortcuts(&self) {
        let (mic, cam) = (self.mic_on, self.cam_on);
        let keys = window_event_listener(leptos::ev::keydown, move |ev| {
            if !ev.ctrl_key() || ev.alt_key() || ev.meta_key() {
                return;
            }
            match ev.key().to_ascii_lowercase().as_str() {
                "d" => {
                    ev.prevent_default();
                    mic.update(|v| *v = !*v);
                }
                "e" => {
                    ev.prevent_default();
                    cam.update(|v| *v = !*v);
                }
                _ => {}
            }
        });
        std::mem::forget(keys); // for the page's lifetime
    }

    /// Microphone and camera switches: the tracks, the encoders (off means nothing is sent) and the
    /// room (through the session) follow them.
    fn follow_local_media(&self) {
        let me = *self;
        Effect::new(move |_| {
            let (cam, mic) = (me.cam_on.get(), me.mic_on.get());
            me.stream.with(|s| {
                if let Some(s) = s {
                    media::set_enabled(s, "video", cam);
                    media::set_enabled(s, "audio", mic);
                }
            });
            me.call.with_value(|c| {
                if let Some(c) = c {
                    c.set_sending("video", cam);
                    c.set_sending("audio", mic);
                }
            });
            me.feed(SessionInput::Local { mic, cam });
        });
    }

    /// TURN servers first, then — while the person looks at the preview — the media session is made
    /// ready, so joining only sends the offer. A stream that changes in the room (the camera
    /// answered late, another device was picked) goes into the existing senders.
    fn prepare_media(&self) {
        let me = *self;
        // TURN credentials come with the join (only members get a relay): the offer prepared here
        // uses the machine's own addresses, and is made again with TURN when they come.
        let ice_ready = RwSignal::new(true);
        Effect::new(move |_| {
            let s = me.stream.get();
            if !ice_ready.get() {
                return;
            }
            let Some(c) = me.call.get_value() else {
                return;
            };
            match s {
                Some(local) if me.in_room() => c.replace_tracks(&local),
                Some(_) => spawn_local(async move {
                    if let Err(e) = c.prepare(s).await {
                        web_sys::console::warn_1(&format!("media: {e}").into());
                    }
                }),
                None => {}
            }
        });
    }

    /// Starts sharing a screen (the browser asks which), or says why it could not.
    pub fn start_sharing(&self) {
        let me = *self;
        spawn_local(async move {
            match media::capture_screen().await {
                Ok(s) => {
                    // The browser's own "Stop sharing" ends the track.
                    if let Ok(t) = s
                        .get_video_tracks()
                        .get(0)
                        .dyn_into::<web_sys::MediaStreamTrack>()
                    {
                        let cb = Closure::<dyn FnMut()>::new(move || me.stop_sharing());
                        t.set_onended(Some(cb.as_ref().unchecked_ref()));
                        cb.forget();
                    }
                    me.screen_capture.set_value(Some(s.clone()));
                    me.call.with_value(|c| {
                        if let Some(c) = c {
                            c.share_screen(Some(s.clone()))
                        }
                    });
                    me.sharing.set(true);
                    me.feed(SessionInput::Sharing(true));
                }
                Err(e) => me.toast(e),
            }
        });
    }

    pub fn stop_sharing(&self) {
        if let Some(s) = self.screen_capture.get_value() {
            media::stop(&s);
        }
        self.screen_capture.set_value(None);
        self.call.with_value(|c| {
            if let Some(c) = c {
                c.share_screen(None)
            }
        });
        if self.sharing.get_untracked() {
            self.sharing.set(false);
        }
        self.feed(SessionInput::Sharing(false));
    }
}

impl Default for Meeting {
    fn default() -> Self {
        Meeting::new()
    }
}

/// The meeting provided by the app.
pub fn use_meeting() -> Meeting {
    expect_context::<Meeting>()
}
