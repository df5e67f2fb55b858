//! The browser's media session with the room's SFU: one RTCPeerConnection that publishes the camera
//! and microphone and receives everyone else's tracks.
//!
//! Negotiation: the browser offers once per PeerConnection (its own tracks, sendonly); after that
//! the SFU offers whenever tracks to receive come or go, and the browser answers — all through the
//! room WebSocket. Signaling messages are applied strictly in order (a queue), so an SFU offer can
//! never overtake the answer to our own offer.
//!
//! Remote tracks arrive in streams whose id is the publisher's participant id; the room view shows
//! each stream in that participant's tile.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

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
    /// Number of the last offer sent; only its answer is applied (an older one belongs to a
    /// PeerConnection since replaced, e.g. during a failover).
    offer_id: Cell<u64>,
    /// `RTCConfiguration.iceServers` (TURN with credentials from `/api/ice-servers`).
    ice_servers: RefCell<JsValue>,
    queue: RefCell<VecDeque<ServerMessage>>,
    busy: Cell<bool>,
    send: SendFn,
    remote: RemoteStreams,
    on_state: Rc<dyn Fn(String)>,
}

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
            offer_id: Cell::new(0),
            ice_servers: RefCell::new(Array::new().into()),
            queue: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            send: Rc::new(send),
            remote,
            on_state: Rc::new(on_state),
        }))
    }

    /// TURN servers for the next PeerConnection: the JSON array from `/api/ice-servers`.
    pub fn set_ice_servers(&self, servers: JsValue) {
        *self.0.ice_servers.borrow_mut() = servers;
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
                self.prepare(local).await?;
                match self.0.prepared.borrow_mut().take() {
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
        let config = web_sys::RtcConfiguration::new();
        config.set_ice_servers(&self.0.ice_servers.borrow());
        let pc = RtcPeerConnection::new_with_configuration(&config).map_err(err)?;
        // Tests and the stats panel read this.
        let _ = Reflect::set(&window(), &"edgemeetPc".into(), &pc);
        let streams = Array::new();
        if let Some(s) = &local {
            streams.push(s);
        }
        for kind in ["audio", "video"] {
            let init = RtcRtpTransceiverInit::new();
            init.set_direction(RtcRtpTransceiverDirection::Sendonly);
            init.set_streams(&streams);
            let track = local.as_ref().and_then(|s| {
                let list = if kind == "audio" {
                    s.get_audio_tracks()
                } else {
                    s.get_video_tracks()
                };
                list.get(0).dyn_into::<web_sys::MediaStreamTrack>().ok()
            });
            match track {
                Some(t) => {
                    pc.add_transceiver_with_media_stream_track_and_init(&t, &init);
                }
                None => {
                    pc.add_transceiver_with_str_and_init(kind, &init);
                }
            }
        }
        let remote = self.0.remote;
        let ontrack = Closure::<dyn FnMut(RtcTrackEvent)>::new(move |ev: RtcTrackEvent| {
            let Ok(stream) = ev.streams().get(0).dyn_into::<MediaStream>() else {
                return;
            };
            let id = stream.id();
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
        let init = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        init.set_sdp(&sdp);
        JsFuture::from(pc.set_local_description(&init))
            .await
            .map_err(err)?;
        wait_for_candidates(&pc).await;
        let sdp = pc.local_description().map(|d| d.sdp()).unwrap_or(sdp);
        // Replaced meanwhile (devices changed, or a restart)? Then this one is moot.
        if self.0.generation.get() == generation {
            *self.0.prepared.borrow_mut() = Some((key, sdp));
        }
        Ok(())
    }

    pub fn stop(&self) {
        self.0.prepared.borrow_mut().take();
        if let Some(pc) = self.0.pc.borrow_mut().take() {
            pc.close();
        }
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
            ServerMessage::Offer { sdp } => {
                let init = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
                init.set_sdp(&sdp);
                JsFuture::from(pc.set_remote_description(&init))
                    .await
                    .map_err(err)?;
                let answer = JsFuture::from(pc.create_answer()).await.map_err(err)?;
                let sdp = Reflect::get(&answer, &"sdp".into())
                    .ok()
                    .and_then(|s| s.as_string())
                    .unwrap_or_default();
                let init = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
                init.set_sdp(&sdp);
                JsFuture::from(pc.set_local_description(&init))
                    .await
                    .map_err(err)?;
                let sdp = pc.local_description().map(|d| d.sdp()).unwrap_or(sdp);
                (self.0.send)(ClientMessage::Answer { sdp });
            }
            _ => {}
        }
        Ok(())
    }

    /// Turns sending of one kind on or off at the encoder (`active`), so a muted microphone or a
    /// camera turned off costs no bitrate.
    pub fn set_sending(&self, kind: &str, on: bool) {
        let Some(pc) = self.peer_connection() else {
            return;
        };
        for sender in pc.get_senders().iter() {
            let Ok(sender) = sender.dyn_into::<web_sys::RtcRtpSender>() else {
                continue;
            };
            if sender.track().map(|t| t.kind()) != Some(kind.to_string()) {
                continue;
            }
            let sender_js: &JsValue = sender.as_ref();
            let Ok(get) = Reflect::get(sender_js, &"getParameters".into())
                .and_then(|f| f.dyn_into::<js_sys::Function>())
            else {
                continue;
            };
            let Ok(params) = get.call0(sender_js) else {
                continue;
            };
            if let Ok(encodings) = Reflect::get(&params, &"encodings".into()) {
                for enc in Array::from(&encodings).iter() {
                    let _ = Reflect::set(&enc, &"active".into(), &JsValue::from_bool(on));
                }
            }
            if let Ok(set) = Reflect::get(sender_js, &"setParameters".into())
                .and_then(|f| f.dyn_into::<js_sys::Function>())
            {
                if let Ok(p) = set.call1(sender_js, &params) {
                    if let Ok(p) = p.dyn_into::<js_sys::Promise>() {
                        wasm_bindgen_futures::spawn_local(async move {
                            if let Err(e) = JsFuture::from(p).await {
                                web_sys::console::warn_1(
                                    &format!("setParameters: {}", err(e)).into(),
                                );
                            }
                        });
                    }
                }
            }
        }
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
        let Some(pc) = self.peer_connection() else {
            return;
        };
        for t in pc.get_transceivers().iter() {
            let Ok(t) = t.dyn_into::<web_sys::RtcRtpTransceiver>() else {
                continue;
            };
            let kind = t.receiver().track().kind();
            let list = if kind == "audio" {
                local.get_audio_tracks()
            } else {
                local.get_video_tracks()
            };
            let Ok(track) = list.get(0).dyn_into::<web_sys::MediaStreamTrack>() else {
                continue;
            };
            let sender = t.sender();
            if sender.track().map(|old| old.id()) == Some(track.id()) {
                continue;
            }
            let p = sender.replace_track(Some(&track));
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = JsFuture::from(p).await {
                    web_sys::console::warn_1(&format!("replaceTrack: {}", err(e)).into());
                }
            });
        }
    }

    /// A participant left: forget their stream.
    pub fn forget(&self, id: &str) {
        self.0.remote.update(|m| {
            m.remove(id);
        });
    }
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
