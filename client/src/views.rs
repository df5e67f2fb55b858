//! Telling the SFU how big each remote video is shown, so it forwards the smallest simulcast layer
//! that fills it (and nothing for a hidden one).

use std::cell::RefCell;
use std::rc::Rc;

use edgemeet_shared::protocol::{ClientMessage, Source, TileView};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;

/// How often tile sizes are measured; a change is sent at most this often (debounce).
const VIEWS_EVERY_MS: i32 = 300;

/// Measures every remote video (`video[data-publisher]`) and sends the list when it changed, or
/// when a new media session is connected (`session()`: the current PeerConnection's number while it
/// is connected; a new SFU session must learn the sizes too). A tile counts as hidden (height 0) when it is not displayed, scrolled out of the viewport,
/// or the page is hidden.
pub fn report_views(send: Rc<dyn Fn(ClientMessage)>, session: Rc<dyn Fn() -> Option<u64>>) {
    let last = Rc::new(RefCell::new(String::new()));
    let tick = Closure::<dyn FnMut()>::new(move || {
        // Only to a connected session: before that the SFU does not know us yet.
        let Some(session) = session() else {
            return;
        };
        let views = measure();
        let key = format!("{session}|{views:?}");
        if *last.borrow() == key {
            return;
        }
        *last.borrow_mut() = key;
        send(ClientMessage::Views { views });
    });
    let _ = window().set_interval_with_callback_and_timeout_and_arguments_0(
        tick.as_ref().unchecked_ref(),
        VIEWS_EVERY_MS,
    );
    tick.forget();
}

fn measure() -> Vec<TileView> {
    let doc = document();
    let hidden_page = doc.hidden();
    let dpr = window().device_pixel_ratio().max(1.0);
    let vh = window()
        .inner_height()
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let vw = window()
        .inner_width()
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let Ok(list) = doc.query_selector_all("video[data-publisher]") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..list.length() {
        let Some(el) = list
            .item(i)
            .and_then(|n| n.dyn_into::<web_sys::Element>().ok())
        else {
            continue;
        };
        let Some(publisher) = el.get_attribute("data-publisher") else {
            continue;
        };
        let source = match el.get_attribute("data-source").as_deref() {
            Some("screen") => Source::Screen,
            _ => Source::Camera,
        };
        let r = el.get_bounding_client_rect();
        let on_screen = r.bottom() > 0.0 && r.right() > 0.0 && r.top() < vh && r.left() < vw;
        let height = if hidden_page || !on_screen || r.width() < 1.0 {
            0
        } else {
            (r.height() * dpr).round() as u32
        };
        out.push(TileView {
            publisher,
            source,
            height,
        });
    }
    out.sort_by(|a, b| (&a.publisher, a.source as u8).cmp(&(&b.publisher, b.source as u8)));
    out
}
