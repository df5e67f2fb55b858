//! Capture: camera and microphone (getUserMedia), device lists, the microphone meter, screens
//! (getDisplayMedia).

use js_sys::Reflect;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AnalyserNode, AudioContext, MediaDeviceInfo, MediaDeviceKind, MediaStream,
    MediaStreamConstraints, MediaStreamTrack,
};

/// One capture device, for the pickers.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub label: String,
}

/// Opens camera (720p ideal) and microphone, the given devices if any. Returns a message a person can
/// act on when refused.
pub async fn open_camera_and_mic(
    camera: Option<String>,
    mic: Option<String>,
) -> Result<MediaStream, String> {
    let devices = web_sys::window()
        .ok_or("no window")?
        .navigator()
        .media_devices()
        .map_err(|_| {
            "This browser cannot capture media here (a secure context is needed).".to_string()
        })?;
    let video = js_sys::Object::new();
    let ideal = |v: f64| {
        let o = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&o, &"ideal".into(), &v.into());
        o
    };
    let _ = js_sys::Reflect::set(&video, &"width".into(), &ideal(1280.0));
    let _ = js_sys::Reflect::set(&video, &"height".into(), &ideal(720.0));
    let exact = |id: &str| {
        let o = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&o, &"exact".into(), &id.into());
        o
    };
    if let Some(id) = &camera {
        let _ = js_sys::Reflect::set(&video, &"deviceId".into(), &exact(id));
    }
    let audio: JsValue = match &mic {
        Some(id) => {
            let a = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&a, &"deviceId".into(), &exact(id));
            a.into()
        }
        None => JsValue::TRUE,
    };
    let constraints = MediaStreamConstraints::new();
    constraints.set_video(&video);
    constraints.set_audio(&audio);
    let promise = devices
        .get_user_media_with_constraints(&constraints)
        .map_err(describe)?;
    let stream = JsFuture::from(promise).await.map_err(describe)?;
    stream
        .dyn_into::<MediaStream>()
        .map_err(|_| "getUserMedia returned no stream".to_string())
}

/// Turns a getUserMedia rejection into a sentence.
fn describe(err: JsValue) -> String {
    let name = js_sys::Reflect::get(&err, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .unwrap_or_default();
    match name.as_str() {
        "NotAllowedError" => "Camera and microphone are blocked. Allow them in the browser's address bar, then reload.".into(),
        "NotFoundError" => "No camera or microphone was found.".into(),
        "NotReadableError" => "The camera or microphone is in use by another application.".into(),
        _ => format!("Could not open camera and microphone ({name})."),
    }
}

/// Enables or disables every track of one kind ("audio" / "video").
pub fn set_enabled(stream: &MediaStream, kind: &str, enabled: bool) {
    for t in stream.get_tracks().iter() {
        if let Ok(t) = t.dyn_into::<MediaStreamTrack>() {
            if t.kind() == kind {
                t.set_enabled(enabled);
            }
        }
    }
}

/// Stops every track (frees the camera light and the microphone).
pub fn stop(stream: &MediaStream) {
    for t in stream.get_tracks().iter() {
        if let Ok(t) = t.dyn_into::<MediaStreamTrack>() {
            t.stop();
        }
    }
}

/// The device id behind a stream's track of one kind.
pub fn device_of(stream: &MediaStream, kind: &str) -> Option<String> {
    stream
        .get_tracks()
        .iter()
        .filter_map(|t| t.dyn_into::<MediaStreamTrack>().ok())
        .find(|t| t.kind() == kind)
        .and_then(|t| t.get_settings().get_device_id())
}

/// Cameras and microphones (labels are known once capture was allowed).
/// Cameras, microphones and speakers (audio outputs; empty where the browser does not list them).
pub async fn list_devices() -> (Vec<Device>, Vec<Device>, Vec<Device>) {
    let (mut cams, mut mics, mut speakers) = (Vec::new(), Vec::new(), Vec::new());
    let Some(md) = web_sys::window().and_then(|w| w.navigator().media_devices().ok()) else {
        return (cams, mics, speakers);
    };
    let Ok(p) = md.enumerate_devices() else {
        return (cams, mics, speakers);
    };
    let Ok(list) = JsFuture::from(p).await else {
        return (cams, mics, speakers);
    };
    for d in js_sys::Array::from(&list).iter() {
        let Ok(d) = d.dyn_into::<MediaDeviceInfo>() else {
            continue;
        };
        let n = |v: &Vec<Device>, what: &str| format!("{what} {}", v.len() + 1);
        match d.kind() {
            MediaDeviceKind::Videoinput => {
                let label = if d.label().is_empty() {
                    n(&cams, "Camera")
                } else {
                    d.label()
                };
                cams.push(Device {
                    id: d.device_id(),
                    label,
                })
            }
            MediaDeviceKind::Audioinput => {
                let label = if d.label().is_empty() {
                    n(&mics, "Microphone")
                } else {
                    d.label()
                };
                mics.push(Device {
                    id: d.device_id(),
                    label,
                })
            }
            MediaDeviceKind::Audiooutput => {
                let label = if d.label().is_empty() {
                    n(&speakers, "Speaker")
                } else {
                    d.label()
                };
                speakers.push(Device {
                    id: d.device_id(),
                    label,
                })
            }
            _ => {}
        }
    }
    (cams, mics, speakers)
}

/// Can this browser choose where a media element plays (`HTMLMediaElement.setSinkId`)?
pub fn can_choose_speaker() -> bool {
    let proto = js_sys::Reflect::get(&js_sys::global(), &"HTMLMediaElement".into())
        .and_then(|c| js_sys::Reflect::get(&c, &"prototype".into()));
    proto.is_ok_and(|p| js_sys::Reflect::has(&p, &"setSinkId".into()).unwrap_or(false))
}

/// Plays `el` through the speaker `id` (where the browser allows; errors are logged, not fatal).
pub fn set_speaker(el: &web_sys::HtmlMediaElement, id: &str) {
    let Ok(f) = js_sys::Reflect::get(el, &"setSinkId".into())
        .and_then(|f| f.dyn_into::<js_sys::Function>())
    else {
        return;
    };
    if let Ok(p) = f
        .call1(el, &id.into())
        .and_then(|p| p.dyn_into::<js_sys::Promise>())
    {
        wasm_bindgen_futures::spawn_local(async move {
            if JsFuture::from(p).await.is_err() {
                web_sys::console::warn_1(&"could not switch the speaker".into());
            }
        });
    }
}

/// Microphone level from a Web Audio analyser.
pub struct LevelMeter {
    ctx: AudioContext,
    analyser: AnalyserNode,
    buf: Vec<f32>,
}

impl LevelMeter {
    pub fn new(stream: &MediaStream) -> Option<LevelMeter> {
        let ctx = AudioContext::new().ok()?;
        let src = ctx.create_media_stream_source(stream).ok()?;
        let analyser = ctx.create_analyser().ok()?;
        analyser.set_fft_size(1024);
        src.connect_with_audio_node(&analyser).ok()?;
        let buf = vec![0.0; analyser.fft_size() as usize];
        Some(LevelMeter { ctx, analyser, buf })
    }

    /// 0–100: RMS of the last window, on a rough perceptual scale.
    pub fn level(&mut self) -> u32 {
        if self.ctx.state() == web_sys::AudioContextState::Suspended {
            let _ = self.ctx.resume();
        }
        self.analyser.get_float_time_domain_data(&mut self.buf);
        let rms =
            (self.buf.iter().map(|x| x * x).sum::<f32>() / self.buf.len().max(1) as f32).sqrt();
        ((rms * 300.0).sqrt() * 100.0).clamp(0.0, 100.0) as u32
    }
}

impl Drop for LevelMeter {
    fn drop(&mut self) {
        let _ = self.ctx.close();
    }
}

/// Asks the browser for a screen (window, tab) to share, with its audio when it offers some.
pub async fn capture_screen() -> Result<MediaStream, String> {
    let devices = web_sys::window()
        .ok_or("no window")?
        .navigator()
        .media_devices()
        .map_err(|_| "This browser cannot share a screen.".to_string())?;
    let constraints = js_sys::Object::new();
    let _ = Reflect::set(&constraints, &"video".into(), &JsValue::TRUE);
    let _ = Reflect::set(&constraints, &"audio".into(), &JsValue::TRUE);
    let get = Reflect::get(devices.as_ref(), &"getDisplayMedia".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("This browser cannot share a screen.")?;
    let p = get
        .call1(devices.as_ref(), &constraints)
        .map_err(|_| "Screen sharing was refused.".to_string())?;
    let stream = JsFuture::from(js_sys::Promise::from(p))
        .await
        .map_err(|_| "Screen sharing was cancelled or refused.".to_string())?;
    stream
        .dyn_into::<MediaStream>()
        .map_err(|_| "Screen sharing gave no stream.".to_string())
}
