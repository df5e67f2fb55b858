//! Camera and microphone capture (getUserMedia).

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{MediaStream, MediaStreamConstraints, MediaStreamTrack};

/// Opens camera (720p ideal) and microphone. Returns a message a person can act on when refused.
pub async fn open_camera_and_mic() -> Result<MediaStream, String> {
    let devices = web_sys::window()
        .ok_or("no window")?
        .navigator()
        .media_devices()
        .map_err(|_| "This browser cannot capture media here (a secure context is needed).".to_string())?;
    let video = js_sys::Object::new();
    let ideal = |v: f64| {
        let o = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&o, &"ideal".into(), &v.into());
        o
    };
    let _ = js_sys::Reflect::set(&video, &"width".into(), &ideal(1280.0));
    let _ = js_sys::Reflect::set(&video, &"height".into(), &ideal(720.0));
    let constraints = MediaStreamConstraints::new();
    constraints.set_video(&video);
    constraints.set_audio(&JsValue::TRUE);
    let promise = devices.get_user_media_with_constraints(&constraints).map_err(describe)?;
    let stream = JsFuture::from(promise).await.map_err(describe)?;
    stream.dyn_into::<MediaStream>().map_err(|_| "getUserMedia returned no stream".to_string())
}

/// Turns a getUserMedia rejection into a sentence.
fn describe(err: JsValue) -> String {
    let name = js_sys::Reflect::get(&err, &"name".into()).ok().and_then(|n| n.as_string()).unwrap_or_default();
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
