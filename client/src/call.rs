//! The browser's media session with the room's SFU: one RTCPeerConnection that publishes the camera
//! and microphone and receives everyone else's tracks.
//!
//! Negotiation: the browser offers once per PeerConnection (its own tracks, sendonly); after that
//! the SFU offers whenever tracks to receive come or go, and the browser answers — all through the
//! room WebSocket. Signaling messages are applied strictly in order (a queue), so an SFU offer can
//! never overtake the answer to our own offer.
//!
//! The offer's m-lines are, in this order (the SFU relies on it, see `sfu/src/offer.rs`): microphone,
//! camera (three simulcast encodings from `shared::media::CAMERA_SIMULCAST`), screen, screen audio.
//! The screen transceivers exist from the start without a track: sharing only swaps a track in
//! (`replaceTrack`), so it needs no renegotiation.
//!
//! Remote tracks arrive in streams whose id is the publisher's participant id (camera and
//! microphone) or `{id}~screen` (screen share); the room view shows each stream in its own tile.

use edgemeet_shared::health::{answer_with_capture_time, with_capture_time};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use edgemeet_shared::media::CAMERA_SIMULCAST;
use edgemeet_shared::protocol::{ClientMessage, ServerMessage};
use js_sys::{Array, Reflect};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, RtcIceGatheringState, RtcPeerConnection, RtcPeerConnectionState,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit,
    RtcTrackEvent,
};

/// Longest wait for our ICE candidates before sending the offer anyway.
const GATHER_TIMEOUT_MS: i32 = 1_000;
/// After the first candidate, how long to collect the rest before offering (host candidates of all
/// interfaces arrive together; waiting for "complete" costs ~100 ms more for TCP ones).
const GATHER_SETTLE_MS: i32 = 30;

/// Remote media by publisher id (for the tiles).
pub type RemoteStreams = RwSignal<HashMap<String, MediaStream>, LocalStorage>;

type SendFn = Rc<dyn Fn(ClientMessage)>;

struct Inner {
    pc: RefCell<Option<RtcPeerConnection>>,
    /// An offer made ahead of time (on the pre-join screen) for the stream with this id: joining
    /// then only sends it, saving the PeerConnection set-up and ICE gathering (~100 ms).
    prepared: RefCell<Option<(String, String)>>,
    generation: Cell<u64>,
    /// Bumped when the TURN servers change: an offer gathered with the old ones is not used.
    ice_epoch: Cell<u64>,
    /// Number of the last offer sent; only its answer is applied (an older one belongs to a
    /// PeerConnection since replaced, e.g. during a failover).
    offer_id: Cell<u64>,
    /// `RTCConfiguration.iceServers` (TURN with credentials from the join, then from
    /// `/api/rooms/{room}/ice-servers` with each fresh room token).
    ice_servers: RefCell<JsValue>,
    queue: RefCell<VecDeque<ServerMessage>>,
    busy: Cell<bool>,
    send: SendFn,
    remote: RemoteStreams,
    on_state: Rc<dyn Fn(String)>,
    /// This PeerConnection's transceivers: microphone, camera, screen, screen audio.
    transceivers: RefCell<Vec<web_sys::RtcRtpTransceiver>>,
    /// Dynacast: which camera layers the SFU says anyone receives.
    camera_layers: RefCell<Vec<bool>>,
    camera_on: Cell<bool>,
    mic_on: Cell<bool>,
    /// The screen being shared, if any (kept across a new PeerConnection).
    screen: RefCell<Option<MediaStream>>,
}

/// Index of each transceiver in `Inner::transceivers`.
const MIC: usize = 0;
const CAMERA: usize = 1;
const SCREEN: usize = 2;
const SCREEN_AUDIO: usize = 3;

/// Cheap to clone; all clones are the same session.
#[derive(Clone)]
pub struct Call(Rc<Inner>);

fn err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            Reflect::get(&e, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

impl Call {
    pub fn new(
        send: impl Fn(ClientMessage) + 'static,
        remote: RemoteStreams,
        on_state: impl Fn(String) + 'static,
    ) -> Call {
        Call(Rc::new(Inner {
            pc: RefCell::new(None),
            prepared: RefCell::new(None),
            generation: Cell::new(0),
            ice_epoch: Cell::new(0),
            offer_id: Cell::new(0),
            ice_servers: RefCell::new(Array::new().into()),
            queue: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            send: Rc::new(send),
            remote,
            on_state: Rc::new(on_state),
            transceivers: RefCell::new(Vec::new()),
            camera_layers: RefCell::new(vec![true; CAMERA_SIMULCAST.len()]),
            camera_on: Cell::new(true),
            mic_on: Cell::new(true),
            screen: RefCell::new(None),
        }))
    }

    /// TURN servers for the next PeerConnection (the join's answer, then fresh ones with each room
    /// token). An offer prepared without them, not sent yet, is made again with them.
    pub fn set_ice_servers(&self, servers: JsValue) {
        *self.0.ice_servers.borrow_mut() = servers;
        self.0.ice_epoch.set(self.0.ice_epoch.get() + 1);
        *self.0.prepared.borrow_mut() = None;
    }

    /// Which PeerConnection this is (each `prepare` makes a new one).
    pub fn generation(&self) -> u64 {
        self.0.generation.get()
    }

    pub fn peer_connection(&self) -> Option<RtcPeerConnection> {
        self.0.pc.borrow().clone()
    }

    /// Starts (or restarts) the media session: sends the offer prepared for `local`, or makes a
    /// new PeerConnection publishing `local`'s tracks and sends its offer.
    pub async fn start(&self, local: Option<MediaStream>) -> Result<(), String> {
        let key = local.as_ref().map(|s| s.id()).unwrap_or_default();
        let ready = self
            .0
            .prepared
            .borrow_mut()
            .take()
            .filter(|(k, _)| *k == key);
        let sdp = match ready {
            Some((_, sdp)) if self.peer_connection().is_some() => sdp,
            _ => {
                let mut made = None;
                // Twice at most: TURN servers that arrive while gathering mean gathering again.
                for _ in 0..2 {
                    let epoch = self.0.ice_epoch.get();
                    self.prepare(local.clone()).await?;
                    made = self.0.prepared.borrow_mut().take();
                    if made.is_some() || self.0.ice_epoch.get() == epoch {
                        break;
                    }
                }
                match made {
                    Some((_, sdp)) => sdp,
                    None => return Err("the media session was replaced while starting".into()),
                }
            }
        };
        let id = self.0.offer_id.get() + 1;
        self.0.offer_id.set(id);
        (self.0.send)(ClientMessage::Offer { sdp, id });
        Ok(())
    }

    /// Makes a PeerConnection for `local` and its offer, without sending it (see `start`).
    pub async fn prepare(&self, local: Option<MediaStream>) -> Result<(), String> {
        self.stop();
        let generation = self.0.generation.get() + 1;
        self.0.generation.set(generation);
        let key = local.as_ref().map(|s| s.id()).unwrap_or_default();
        let epoch = self.0.ice_epoch.get();
        let config = web_sys::RtcConfiguration::new();
        config.set_ice_servers(&self.0.ice_servers.borrow());
        let pc = RtcPeerConnection::new_with_configuration(&config).map_err(err)?;
        // Tests and the stats panel read this.
        let _ = Reflect::set(&window(), &"edgemeetPc".into(), &pc);
        let streams = Array::new();
        if let Some(s) = &local {
            streams.push(s);
        }
        let screen = self.0.screen.borrow().clone();
        let screen_streams = Array::new();
        if let Some(s) = &screen {
            screen_streams.push(s);
        }
        let mut transceivers = Vec::new();
        for (i, kind) in ["audio", "video", "video", "audio"].into_iter().enumerate() {
            let init = RtcRtpTransceiverInit::new();
            init.set_direction(RtcRtpTransceiverDirection::Sendonly);
            let source = if i < SCREEN { &local } else { &screen };
            init.set_streams(if i < SCREEN {
                &streams
            } else {
                &screen_streams
            });
            if i == CAMERA {
                let _ = Reflect::set(&init, &"sendEncodings".into(), &camera_encodings());
            }
            let track = source.as_ref().and_then(|s| first_track(s, kind));
            let t = match track {
                Some(t) => pc.add_transceiver_with_media_stream_track_and_init(&t, &init),
                None => pc.add_transceiver_with_str_and_init(kind, &init),
            };
            transceivers.push(t);
        }
        *self.0.transceivers.borrow_mut() = transceivers;
        // A new SFU session: every layer until that SFU says otherwise.
        *self.0.camera_layers.borrow_mut() = vec![true; CAMERA_SIMULCAST.len()];
        // Under CPU pressure keep the resolution and drop frames: a layer that shrinks below
        // its size would make the SFU's layer choice meaningless.
        self.update_camera_encodings();
        let remote = self.0.remote;
        let ontrack = Closure::<dyn FnMut(RtcTrackEvent)>::new(move |ev: RtcTrackEvent| {
            let Ok(stream) = ev.streams().get(0).dyn_into::<MediaStream>() else {
                return;
            };
            let id = stream.id();
            // Breakout rooms: the SFU's offer takes a track off when its owner leaves my room; a
            // stream left with none is forgotten (the tile shows initials, not a black frame), and
            // one that comes back arrives as a new track.
            let (gone_id, gone_stream) = (id.clone(), stream.clone());
            let onremove = Closure::<dyn FnMut()>::new(move || {
                if gone_stream.get_tracks().length() == 0 {
                    remote.update(|m| {
                        let same = m.get(&gone_id).is_some_and(|s| {
                            JsValue::from(s.clone()) == JsValue::from(gone_stream.clone())
                        });
                        if same {
                            m.remove(&gone_id);
                        }
                    });
                }
            });
            stream.set_onremovetrack(Some(onremove.as_ref().unchecked_ref()));
            onremove.forget();
            remote.update(|m| {
                m.insert(id, stream);
            });
        });
        pc.set_ontrack(Some(ontrack.as_ref().unchecked_ref()));
        ontrack.forget();
        let me = self.clone();
        let pc2 = pc.clone();
        let onstate = Closure::<dyn FnMut()>::new(move || {
            let state = pc2.connection_state();
            (me.0.on_state)(format!("{state:?}").to_lowercase());
            if state == RtcPeerConnectionState::Failed {
                web_sys::console::warn_1(&"media connection failed".into());
            }
        });
        pc.set_onconnectionstatechange(Some(onstate.as_ref().unchecked_ref()));
        onstate.forget();
        *self.0.pc.borrow_mut() = Some(pc.clone());

        let offer = JsFuture::from(pc.create_offer()).await.map_err(err)?;
        let sdp = Reflect::get(&offer, &"sdp".into())
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default();
        // Capture times on what we send and receive (glass-to-glass latency): browsers do not
        // offer the extension by themselves. A browser that refuses the edited offer uses its own.
        set_local(&pc, RtcSdpType::Offer, &with_capture_time(&sdp), &sdp).await?;
        wait_for_candidates(&pc).await;
        let sdp = pc.local_description().map(|d| d.sdp()).unwrap_or(sdp);
        // Replaced meanwhile (devices changed, a restart, TURN servers came)? Then this one is moot.
        if self.0.generation.get() == generation && self.0.ice_epoch.get() == epoch {
            *self.0.prepared.borrow_mut() = Some((key, sdp));
        }
        Ok(())
    }

    pub fn stop(&self) {
        self.0.prepared.borrow_mut().take();
        if let Some(pc) = self.0.pc.borrow_mut().take() {
            pc.close();
        }
        self.0.transceivers.borrow_mut().clear();
        self.0.queue.borrow_mut().clear();
        self.0.remote.update(|m| m.clear());
    }

    /// Feeds a signaling message (answer / offer from the SFU); they are applied in order.
    pub fn signal(&self, msg: ServerMessage) {
        if !matches!(
            msg,
            ServerMessage::Answer { .. } | ServerMessage::Offer { .. }
        ) {
            return;
        }
        self.0.queue.borrow_mut().push_back(msg);
        if self.0.busy.replace(true) {
            return;
        }
        let me = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let next = me.next_signal();
                let Some(msg) = next else { break };
                if let Err(e) = me.apply(msg).await {
                    web_sys::console::error_1(&format!("signaling: {e}").into());
                }
            }
            me.0.busy.set(false);
        });
    }

    /// The next message to apply. While our own offer waits for its answer, an SFU offer can
    /// overtake that answer on the way here (they travel separate paths into the room); it waits
    /// until the answer is applied.
    fn next_signal(&self) -> Option<ServerMessage> {
        let mut q = self.0.queue.borrow_mut();
        let waiting_for_answer = self
            .peer_connection()
            .is_some_and(|pc| pc.signaling_state() == web_sys::RtcSignalingState::HaveLocalOffer);
        if waiting_for_answer {
            let i = q
                .iter()
                .position(|m| matches!(m, ServerMessage::Answer { .. }))?;
            q.remove(i)
        } else {
            q.pop_front()
        }
    }

    async fn apply(&self, msg: ServerMessage) -> Result<(), String> {
        let Some(pc) = self.peer_connection() else {
            return Ok(());
        };
        match msg {
            ServerMessage::Answer { id, .. } if id != self.0.offer_id.get() => {
                web_sys::console::info_1(
                    &format!("ignoring the answer to offer {id}: superseded").into(),
                );
            }
            ServerMessage::Answer { sdp, .. } => {
                let init = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
                init.set_sdp(&sdp);
                JsFuture::from(pc.set_remote_description(&init))
                    .await
                    .map_err(err)?;
            }
            ServerMessage::Offer {
                sdp: offer,
                generation,
            } => {
                let init = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
                init.set_sdp(&offer);
                JsFuture::from(pc.set_remote_description(&init))
                    .await
                    .map_err(err)?;
                let answer = JsFuture::from(pc.create_answer()).await.map_err(err)?;
                let sdp = Reflect::get(&answer, &"sdp".into())
                    .ok()
                    .and_then(|s| s.as_string())
                    .unwrap_or_default();
                // Capture times on what we receive (the browser does not take them by itself).
                let edited = answer_with_capture_time(&offer, &sdp);
                set_local(&pc, RtcSdpType::Answer, &edited, &sdp).await?;
                let sdp = pc.local_description().map(|d| d.sdp()).unwrap_or(sdp);
                (self.0.send)(ClientMessage::Answer { sdp, generation });
            }
            _ => {}
        }
        Ok(())
    }

    /// Turns sending of one kind on or off at the encoder (`active`), so a muted microphone or a
    /// camera turned off costs no bitrate.
    pub fn set_sending(&self, kind: &str, on: bool) {
        if kind == "audio" {
            self.0.mic_on.set(on);
            self.set_active(MIC, &[on]);
        } else {
            self.0.camera_on.set(on);
            self.update_camera_encodings();
        }
    }

    /// Dynacast: the SFU says which camera layers anyone receives; encode only those.
    pub fn set_publish_layers(&self, active: Vec<bool>) {
        *self.0.camera_layers.borrow_mut() = active;
        self.update_camera_encodings();
    }

    fn update_camera_encodings(&self) {
        let on = self.0.camera_on.get();
        let layers = self.0.camera_layers.borrow().clone();
        let active: Vec<bool> = (0..CAMERA_SIMULCAST.len())
            .map(|i| on && layers.get(i).copied().unwrap_or(true))
            .collect();
        self.set_active(CAMERA, &active);
    }

    /// Sets `encodings[i].active` on one transceiver's sender (the last value repeats).
    fn set_active(&self, which: usize, active: &[bool]) {
        let Some(t) = self.0.transceivers.borrow().get(which).cloned() else {
            return;
        };
        let sender = t.sender();
        let sender_js: &JsValue = sender.as_ref();
        let Ok(get) = Reflect::get(sender_js, &"getParameters".into())
            .and_then(|f| f.dyn_into::<js_sys::Function>())
        else {
            return;
        };
        let Ok(params) = get.call0(sender_js) else {
            return;
        };
        if let Ok(encodings) = Reflect::get(&params, &"encodings".into()) {
            for (i, enc) in Array::from(&encodings).iter().enumerate() {
                let on = active.get(i).or(active.last()).copied().unwrap_or(true);
                let _ = Reflect::set(&enc, &"active".into(), &JsValue::from_bool(on));
            }
        }
        if which == CAMERA {
            let _ = Reflect::set(
                &params,
                &"degradationPreference".into(),
                &"maintain-resolution".into(),
            );
        }
        let Ok(set) = Reflect::get(sender_js, &"setParameters".into())
            .and_then(|f| f.dyn_into::<js_sys::Function>())
        else {
            return;
        };
        if let Ok(p) = set.call1(sender_js, &params) {
            if let Ok(p) = p.dyn_into::<js_sys::Promise>() {
                wasm_bindgen_futures::spawn_local(async move {
                    if let Err(e) = JsFuture::from(p).await {
                        web_sys::console::warn_1(&format!("setParameters: {}", err(e)).into());
                    }
                });
            }
        }
    }

    /// Starts (`Some`) or stops (`None`) sharing a screen: its tracks go into the screen
    /// transceivers, which were negotiated from the start.
    pub fn share_screen(&self, screen: Option<MediaStream>) {
        for (which, kind) in [(SCREEN, "video"), (SCREEN_AUDIO, "audio")] {
            let track = screen.as_ref().and_then(|s| first_track(s, kind));
            if let Some(t) = &track {
                if kind == "video" {
                    let _ = Reflect::set(t, &"contentHint".into(), &"detail".into());
                }
            }
            self.replace(which, track.as_ref());
        }
        *self.0.screen.borrow_mut() = screen;
    }

    fn replace(&self, which: usize, track: Option<&web_sys::MediaStreamTrack>) {
        let Some(t) = self.0.transceivers.borrow().get(which).cloned() else {
            return;
        };
        let sender = t.sender();
        if sender.track().map(|old| old.id()) == track.map(|t| t.id()) {
            return;
        }
        let p = sender.replace_track(track);
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = JsFuture::from(p).await {
                web_sys::console::warn_1(&format!("replaceTrack: {}", err(e)).into());
            }
        });
    }

    /// RTP packets received so far on all remote tracks (None before media or without stats).
    pub async fn inbound_packets(&self) -> Option<f64> {
        let pc = self.peer_connection()?;
        let report = JsFuture::from(pc.get_stats()).await.ok()?;
        let mut total = 0.0;
        let mut any = false;
        let values = Reflect::get(&report, &"values".into())
            .ok()?
            .dyn_into::<js_sys::Function>()
            .ok()?;
        let iter = values.call0(&report).ok()?;
        for stat in js_sys::try_iter(&iter).ok()??.flatten() {
            if Reflect::get(&stat, &"type".into())
                .ok()
                .and_then(|t| t.as_string())
                .as_deref()
                == Some("inbound-rtp")
            {
                any = true;
                total += Reflect::get(&stat, &"packetsReceived".into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0);
            }
        }
        any.then_some(total)
    }

    /// Our camera/microphone stream changed while in the room (it arrived after Join, or a device
    /// was switched): the existing senders take the new tracks, no renegotiation needed.
    pub fn replace_tracks(&self, local: &MediaStream) {
        for (which, kind) in [(MIC, "audio"), (CAMERA, "video")] {
            if let Some(track) = first_track(local, kind) {
                self.replace(which, Some(&track));
            }
        }
    }

    /// A participant left: forget their stream.
    pub fn forget(&self, id: &str) {
        self.0.remote.update(|m| {
            m.remove(id);
            m.remove(&format!("{id}~screen"));
        });
    }
}

/// Sets `edited` as the local description, or `original` (what the browser made) when the
/// browser refuses the edit.
async fn set_local(
    pc: &RtcPeerConnection,
    kind: RtcSdpType,
    edited: &str,
    original: &str,
) -> Result<(), String> {
    let init = RtcSessionDescriptionInit::new(kind);
    init.set_sdp(edited);
    match JsFuture::from(pc.set_local_description(&init)).await {
        Ok(_) => Ok(()),
        Err(e) if edited != original => {
            web_sys::console::warn_1(
                &format!("the browser refused the capture-time extension: {}", err(e)).into(),
            );
            let init = RtcSessionDescriptionInit::new(kind);
            init.set_sdp(original);
            JsFuture::from(pc.set_local_description(&init))
                .await
                .map(|_| ())
                .map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

fn first_track(stream: &MediaStream, kind: &str) -> Option<web_sys::MediaStreamTrack> {
    let list = if kind == "audio" {
        stream.get_audio_tracks()
    } else {
        stream.get_video_tracks()
    };
    list.get(0).dyn_into::<web_sys::MediaStreamTrack>().ok()
}

/// `sendEncodings` for the camera: one per simulcast layer of the shared preset table.
fn camera_encodings() -> Array {
    let out = Array::new();
    for l in CAMERA_SIMULCAST {
        let e = js_sys::Object::new();
        let _ = Reflect::set(&e, &"rid".into(), &l.rid.into());
        let _ = Reflect::set(
            &e,
            &"scaleResolutionDownBy".into(),
            &l.scale_resolution_down_by.into(),
        );
        let _ = Reflect::set(&e, &"maxBitrate".into(), &(l.max_bitrate_bps as f64).into());
        let _ = Reflect::set(&e, &"maxFramerate".into(), &l.max_framerate.into());
        out.push(&e);
    }
    out
}

/// Resolves when ICE gathering is complete, or after [`GATHER_TIMEOUT_MS`].
async fn wait_for_candidates(pc: &RtcPeerConnection) {
    if pc.ice_gathering_state() == RtcIceGatheringState::Complete {
        return;
    }
    let pc2 = pc.clone();
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let r = resolve.clone();
        let pc3 = pc2.clone();
        let cb = Closure::<dyn FnMut()>::new(move || {
            if pc3.ice_gathering_state() == RtcIceGatheringState::Complete {
                let _ = r.call0(&JsValue::NULL);
            }
        });
        pc2.set_onicegatheringstatechange(Some(cb.as_ref().unchecked_ref()));
        cb.forget();
        let r1 = resolve.clone();
        let first = Rc::new(Cell::new(false));
        let on_candidate = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let has = Reflect::get(&ev, &"candidate".into())
                .map(|c| !c.is_null())
                .unwrap_or(false);
            if has && !first.replace(true) {
                let r = r1.clone();
                let settle = Closure::once_into_js(move || {
                    let _ = r.call0(&JsValue::NULL);
                });
                let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(
                    settle.unchecked_ref(),
                    GATHER_SETTLE_MS,
                );
            }
        });
        pc2.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
        on_candidate.forget();
        let r2 = resolve.clone();
        let timeout = Closure::once_into_js(move || {
            let _ = r2.call0(&JsValue::NULL);
        });
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(
            timeout.unchecked_ref(),
            GATHER_TIMEOUT_MS,
        );
    });
    let _ = JsFuture::from(promise).await;
    pc.set_onicegatheringstatechange(None);
    pc.set_onicecandidate(None);
}
