//! The page's side of the pre-join network check (`edgemeet_shared::netcheck` says what it is and
//! words the result): one PeerConnection per path to the SFU a join would get — direct, relay over
//! UDP, relay over TCP —, their offers sent together to `POST /api/rooms/{room}/probe`, each path's
//! connection and round trip read from `getStats()`, then a few seconds of video from a canvas over
//! the path the call would take and the browser's `availableOutgoingBitrate` read as the upload.
//! Every PeerConnection and the canvas's timer end with the check, or when it is called off (the
//! person joins meanwhile).

use std::cell::Cell;
use std::rc::Rc;

use edgemeet_shared::netcheck::{
    urls_for, verdict, Observed, PathKind, PathOutcome, ProbeReply, ProbeRequest, Verdict,
    PATH_TIMEOUT_MS, UPLOAD_WINDOW_MS,
};
use edgemeet_shared::protocol::WireError;
use js_sys::{Array, Function, Object, Reflect};
use leptos::prelude::window;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    RtcPeerConnection, RtcPeerConnectionState, RtcRtpSender, RtcRtpTransceiverDirection,
    RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit,
};

/// The upload probe's video: a canvas this big, drawn this often.
const CANVAS: (u32, u32) = (640, 360);
const FRAME_MS: i32 = 66;
/// What the probe's video may use (above every camera layer together, so the estimate can show it).
const PROBE_MAX_BITRATE: f64 = 4_000_000.0;

/// Called off when set: the check stops at its next step and closes everything.
#[derive(Clone, Default)]
pub struct Cancel(Rc<Cell<bool>>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.set(true);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.get()
    }
    fn is_set(&self) -> bool {
        self.0.get()
    }
}

/// What is open while a check runs; closed when dropped, whichever way the check ends.
#[derive(Default)]
struct Open {
    pcs: Vec<RtcPeerConnection>,
    timer: Option<i32>,
    track: Option<web_sys::MediaStreamTrack>,
    _draw: Option<Closure<dyn FnMut()>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        for pc in &self.pcs {
            pc.close();
        }
        if let Some(t) = self.timer {
            window().clear_interval_with_handle(t);
        }
        if let Some(t) = &self.track {
            t.stop();
        }
    }
}

fn call(target: &JsValue, method: &str, args: &[JsValue]) -> Result<JsValue, String> {
    let f: Function = Reflect::get(target, &method.into())
        .map_err(js_err)?
        .dyn_into()
        .map_err(|_| format!("{method} is not available in this browser"))?;
    f.apply(target, &args.iter().collect::<Array>())
        .map_err(js_err)
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(&e, &"message".into()).ok()?.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn sleep(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

fn num(o: &JsValue, k: &str) -> Option<f64> {
    Reflect::get(o, &k.into()).ok().and_then(|v| v.as_f64())
}

fn text(o: &JsValue, k: &str) -> Option<String> {
    Reflect::get(o, &k.into()).ok().and_then(|v| v.as_string())
}

/// The stats of `pc`'s selected candidate pair (its transport's, else the nominated one).
async fn selected_pair(pc: &RtcPeerConnection) -> Option<JsValue> {
    let report = JsFuture::from(pc.get_stats()).await.ok()?;
    let values = call(&report, "values", &[]).ok()?;
    let stats: Vec<JsValue> = js_sys::try_iter(&values).ok()??.flatten().collect();
    let chosen = stats
        .iter()
        .find(|s| text(s, "type").as_deref() == Some("transport"))
        .and_then(|t| text(t, "selectedCandidatePairId"));
    stats.into_iter().find(|s| {
        text(s, "type").as_deref() == Some("candidate-pair")
            && match &chosen {
                Some(id) => text(s, "id").as_deref() == Some(id),
                None => {
                    text(s, "state").as_deref() == Some("succeeded")
                        && Reflect::get(s, &"nominated".into())
                            .ok()
                            .and_then(|v| v.as_bool())
                            .unwrap_or(false)
                }
            }
    })
}

/// The round trip of a pair's STUN checks, ms.
fn rtt_ms(pair: &JsValue) -> Option<u32> {
    num(pair, "currentRoundTripTime")
        .or_else(|| {
            let total = num(pair, "totalRoundTripTime")?;
            let n = num(pair, "responsesReceived").filter(|n| *n > 0.0)?;
            Some(total / n)
        })
        .map(|s| (s * 1000.0).round().max(0.0) as u32)
}

/// A check of the paths to the SFU `room`'s join would get. `upload`: also estimate the upload.
pub async fn run(room: &str, upload: bool, cancel: Cancel) -> Result<(Observed, Verdict), String> {
    let mut open = Open::default();
    let mut senders = Vec::new();
    let mut offers = Vec::new();
    for path in PathKind::ALL {
        let config = Object::new();
        if path != PathKind::Direct {
            let _ = Reflect::set(&config, &"iceTransportPolicy".into(), &"relay".into());
        }
        let pc =
            RtcPeerConnection::new_with_configuration(config.unchecked_ref()).map_err(js_err)?;
        open.pcs.push(pc.clone());
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Sendonly);
        senders.push(
            pc.add_transceiver_with_str_and_init("video", &init)
                .sender(),
        );
        let offer = JsFuture::from(pc.create_offer()).await.map_err(js_err)?;
        offers.push(text(&offer, "sdp").unwrap_or_default());
    }
    if cancel.is_set() {
        return Err("called off".into());
    }
    let res = gloo_net::http::Request::post(&format!("/api/rooms/{room}/probe"))
        .json(&ProbeRequest {
            offers: offers.clone(),
        })
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| format!("Cannot reach the server: {e}"))?;
    if !res.ok() {
        let status = res.status();
        return Err(res
            .json::<WireError>()
            .await
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("The connection check failed ({status}).")));
    }
    let reply: ProbeReply = res.json().await.map_err(|e| e.to_string())?;
    if cancel.is_set() {
        return Err("called off".into());
    }
    if reply.answers.len() != PathKind::ALL.len() {
        return Err(
            "The media server answered the check in a way this page does not understand.".into(),
        );
    }
    let servers: Vec<serde_json::Value> = reply.ice_servers.as_array().cloned().unwrap_or_default();
    let mut outcome: Vec<Option<PathOutcome>> = vec![None; PathKind::ALL.len()];
    for (i, path) in PathKind::ALL.into_iter().enumerate() {
        let pc = &open.pcs[i];
        if path != PathKind::Direct {
            // This path's relay: only the TURN URLs of its transport, with the check's credentials.
            let mine: Vec<serde_json::Value> = servers
                .iter()
                .filter_map(|s| {
                    let urls: Vec<String> = s["urls"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|u| u.as_str().map(String::from))
                                .collect()
                        })
                        .or_else(|| s["urls"].as_str().map(|u| vec![u.to_string()]))
                        .unwrap_or_default();
                    let kept = urls_for(path, &urls);
                    (!kept.is_empty()).then(|| {
                        let mut s = s.clone();
                        s["urls"] = serde_json::json!(kept);
                        s
                    })
                })
                .collect();
            if mine.is_empty() {
                outcome[i] = Some(PathOutcome::NotSetUp);
                pc.close();
                continue;
            }
            let config = Object::new();
            let ice =
                js_sys::JSON::parse(&serde_json::Value::Array(mine).to_string()).map_err(js_err)?;
            let _ = Reflect::set(&config, &"iceServers".into(), &ice);
            let _ = Reflect::set(&config, &"iceTransportPolicy".into(), &"relay".into());
            call(pc, "setConfiguration", &[config.into()])?;
        }
        let local = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        local.set_sdp(&offers[i]);
        JsFuture::from(pc.set_local_description(&local))
            .await
            .map_err(js_err)?;
        let remote = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
        remote.set_sdp(&reply.answers[i]);
        JsFuture::from(pc.set_remote_description(&remote))
            .await
            .map_err(js_err)?;
    }
    // Each path: connected (and its round trip) or not within the limit.
    let started = js_sys::Date::now();
    let mut connected_at: Vec<Option<f64>> = vec![None; PathKind::ALL.len()];
    loop {
        if cancel.is_set() {
            return Err("called off".into());
        }
        let now = js_sys::Date::now();
        for i in 0..PathKind::ALL.len() {
            if outcome[i].is_some() {
                continue;
            }
            let pc = &open.pcs[i];
            match pc.connection_state() {
                RtcPeerConnectionState::Connected => {
                    let at = *connected_at[i].get_or_insert(now);
                    let rtt = selected_pair(pc).await.as_ref().and_then(rtt_ms);
                    // The first STUN answer may not be counted yet: up to a second more for it.
                    if rtt.is_some() || now - at > 1_000.0 {
                        outcome[i] = Some(PathOutcome::Works { rtt_ms: rtt });
                    }
                }
                RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed => {
                    outcome[i] = Some(PathOutcome::Blocked)
                }
                _ if now - started > PATH_TIMEOUT_MS as f64 => {
                    outcome[i] = Some(PathOutcome::Blocked)
                }
                _ => {}
            }
        }
        if outcome.iter().all(Option::is_some) {
            break;
        }
        sleep(100).await;
    }
    let mut observed = Observed {
        region: reply.region,
        direct: outcome[0].clone().unwrap_or(PathOutcome::Blocked),
        relay_udp: outcome[1].clone().unwrap_or(PathOutcome::Blocked),
        relay_tcp: outcome[2].clone().unwrap_or(PathOutcome::Blocked),
        upload_kbps: None,
    };
    if let (true, Some(path)) = (upload, observed.chosen()) {
        let i = PathKind::ALL.iter().position(|p| *p == path).unwrap_or(0);
        for (k, pc) in open.pcs.iter().enumerate() {
            if k != i {
                pc.close();
            }
        }
        observed.upload_kbps = upload_estimate(&mut open, i, &senders[i], &cancel).await?;
    }
    let v = verdict(&observed);
    Ok((observed, v))
}

/// Video from a canvas over PeerConnection `i` for [`UPLOAD_WINDOW_MS`]; the browser's estimate of
/// what it can send (the median of the last second's readings), kbit/s.
async fn upload_estimate(
    open: &mut Open,
    i: usize,
    sender: &RtcRtpSender,
    cancel: &Cancel,
) -> Result<Option<u32>, String> {
    let doc = window().document().ok_or("no document")?;
    let canvas = doc.create_element("canvas").map_err(js_err)?;
    let _ = Reflect::set(&canvas, &"width".into(), &CANVAS.0.into());
    let _ = Reflect::set(&canvas, &"height".into(), &CANVAS.1.into());
    let ctx = call(&canvas, "getContext", &["2d".into()])?;
    let stream = call(&canvas, "captureStream", &[15.into()])?;
    let track: web_sys::MediaStreamTrack = call(&stream, "getVideoTracks", &[])?
        .dyn_into::<Array>()
        .map_err(js_err)?
        .get(0)
        .dyn_into()
        .map_err(js_err)?;
    open.track = Some(track.clone());
    // A picture that changes every frame, so the encoder has something to send.
    let frame = Rc::new(Cell::new(0u32));
    let draw = Closure::<dyn FnMut()>::new(move || {
        let n = frame.get();
        frame.set(n + 1);
        let _ = Reflect::set(
            &ctx,
            &"fillStyle".into(),
            &format!("hsl({}, 60%, 45%)", n * 7 % 360).into(),
        );
        let _ = call(
            &ctx,
            "fillRect",
            &[0.into(), 0.into(), CANVAS.0.into(), CANVAS.1.into()],
        );
        let _ = Reflect::set(&ctx, &"fillStyle".into(), &"#fff".into());
        let x = (n * 13 % CANVAS.0) as f64;
        let _ = call(
            &ctx,
            "fillRect",
            &[x.into(), 120.into(), 80.into(), 80.into()],
        );
    });
    open.timer = window()
        .set_interval_with_callback_and_timeout_and_arguments_0(
            draw.as_ref().unchecked_ref(),
            FRAME_MS,
        )
        .ok();
    open._draw = Some(draw);
    JsFuture::from(sender.replace_track(Some(&track)))
        .await
        .map_err(js_err)?;
    if let Ok(params) = call(sender, "getParameters", &[]) {
        if let Some(enc) = Reflect::get(&params, &"encodings".into())
            .ok()
            .and_then(|e| e.dyn_into::<Array>().ok())
            .map(|a| a.get(0))
            .filter(|e| e.is_object())
        {
            let _ = Reflect::set(&enc, &"maxBitrate".into(), &PROBE_MAX_BITRATE.into());
            if let Ok(p) = call(sender, "setParameters", &[params]) {
                let _ = JsFuture::from(js_sys::Promise::from(p)).await;
            }
        }
    }
    let pc = open.pcs[i].clone();
    let started = js_sys::Date::now();
    let mut last_second = Vec::new();
    while js_sys::Date::now() - started < UPLOAD_WINDOW_MS as f64 {
        sleep(250).await;
        if cancel.is_set() {
            return Err("called off".into());
        }
        if pc.connection_state() != RtcPeerConnectionState::Connected {
            return Ok(None);
        }
        if js_sys::Date::now() - started < UPLOAD_WINDOW_MS as f64 - 1_000.0 {
            continue;
        }
        if let Some(bps) = selected_pair(&pc)
            .await
            .and_then(|p| num(&p, "availableOutgoingBitrate"))
        {
            last_second.push(bps);
        }
    }
    last_second.sort_by(f64::total_cmp);
    Ok(last_second
        .get(last_second.len() / 2)
        .map(|bps| (bps / 1000.0).round() as u32))
}
