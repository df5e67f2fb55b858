//! Load peers (webrtc-rs PeerConnections on 127.0.0.1): every peer joins through the SFU's signed
//! control API and answers the SFU's offers as the browser client does. A publisher loops the
//! pre-encoded clips (camera, optionally as three simulcast layers, and a microphone); every peer
//! counts what it receives without decoding it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use edgemeet_sfu::rtcp_up::RtcpToApplication;
use edgemeet_shared::control;
use edgemeet_shared::protocol::{AnswerBody, SdpBody, TileView, ViewsBody};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::clip::{Clip, FPS, LAYERS, STAMP};
use crate::edge::{now_ms, FakeEdge};
use crate::LoadError;

/// What one received track saw since the last [`TrackStats::take`].
#[derive(Default, Clone)]
pub struct TrackStats {
    pub video: bool,
    pub packets: u64,
    pub bytes: u64,
    /// Sequence numbers skipped (each later arrival of one of them is counted in `late`).
    pub gaps: u64,
    pub late: u64,
    /// Send → arrival, µs (the send time travels in the payload's last 8 bytes; the arrival is
    /// the kernel's receive stamp where the socket has one).
    pub latency_us: Vec<u32>,
    /// When this track's first packet arrived (for video: the first keyframe), and when its peer
    /// connected.
    pub first_at: Option<Instant>,
    pub connected_at: Option<Instant>,
    last_seq: Option<u16>,
}

impl TrackStats {
    /// Counters for a new received track.
    pub fn new(video: bool) -> TrackStats {
        TrackStats {
            video,
            ..Default::default()
        }
    }

    /// Counts `p`, which arrived at `arrived` ([`realtime`]).
    pub fn on_packet(&mut self, p: &rtp::Packet, arrived: Duration, connected_at: Instant) {
        let now = Instant::now();
        if self.first_at.is_none() {
            self.first_at = Some(now);
            self.connected_at = Some(connected_at);
        }
        self.packets += 1;
        self.bytes += p.payload.len() as u64;
        let seq = p.header.sequence_number;
        match self.last_seq {
            Some(last) => {
                let step = seq.wrapping_sub(last);
                if step == 0 || step > 0x8000 {
                    self.late += 1;
                } else {
                    self.gaps += u64::from(step - 1);
                    self.last_seq = Some(seq);
                }
            }
            None => self.last_seq = Some(seq),
        }
        if p.payload.len() >= STAMP {
            let mut b = [0u8; STAMP];
            b.copy_from_slice(&p.payload[p.payload.len() - STAMP..]);
            let sent = Duration::from_nanos(u64::from_be_bytes(b));
            if let Some(d) = arrived.checked_sub(sent) {
                if d < Duration::from_secs(10) && self.latency_us.len() < 200_000 {
                    self.latency_us.push(d.as_micros() as u32);
                }
            }
        }
    }

    /// What was counted since the last call; the counters start again.
    pub fn take(&mut self) -> TrackStats {
        let out = TrackStats {
            video: self.video,
            packets: self.packets,
            bytes: self.bytes,
            gaps: self.gaps,
            late: self.late,
            latency_us: std::mem::take(&mut self.latency_us),
            first_at: self.first_at,
            connected_at: self.connected_at,
            last_seq: None,
        };
        self.packets = 0;
        self.bytes = 0;
        self.gaps = 0;
        self.late = 0;
        out
    }
}

pub type Tracks = Arc<Mutex<Vec<Arc<Mutex<TrackStats>>>>>;

/// The realtime clock now, since the Unix epoch: the clock of the send stamps and of the kernel's
/// receive stamps (`SO_TIMESTAMPNS`), so a packet's latency needs no conversion between clocks.
/// (A step of the clock during a run, NTP setting it, would skew or drop the latencies around it.)
pub fn realtime() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

struct Handler {
    gathered: mpsc::UnboundedSender<()>,
    connected: mpsc::UnboundedSender<()>,
    failed: Arc<AtomicBool>,
    tracks: Tracks,
    connected_at: Arc<Mutex<Instant>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                *self.connected_at.lock().unwrap() = Instant::now();
                let _ = self.connected.send(());
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                self.failed.store(true, Ordering::Relaxed)
            }
            _ => {}
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let video = track.kind().await == RtpCodecKind::Video;
        let stats = Arc::new(Mutex::new(TrackStats {
            video,
            ..Default::default()
        }));
        self.tracks.lock().unwrap().push(stats.clone());
        let connected_at = *self.connected_at.lock().unwrap();
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                match evt {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        stats
                            .lock()
                            .unwrap()
                            .on_packet(&p, realtime(), connected_at)
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

pub fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

fn local_track(kind: RtpCodecKind, name: &str, ssrcs: &[(u32, &str)]) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{name}-stream"),
        format!(
            "{name}-{}",
            if kind == RtpCodecKind::Audio {
                "mic"
            } else {
                "cam"
            }
        ),
        name.into(),
        kind,
        ssrcs
            .iter()
            .map(|(ssrc, rid)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(*ssrc),
                    rid: rid.to_string(),
                    ..Default::default()
                },
                codec: codec(kind),
                ..Default::default()
            })
            .collect(),
    )))
}

pub struct Peer {
    pub id: String,
    pub pc: Arc<dyn PeerConnection>,
    pub failed: Arc<AtomicBool>,
    mic: Option<Arc<TrackLocalStaticRTP>>,
    cam: Option<Arc<TrackLocalStaticRTP>>,
    /// Simulcast publishers: the ids the SFU's answer gave the MID and RID extensions, and the
    /// camera's mid (sent on every layer's packets, as Chromium does, so the SFU can tell them apart).
    sdes: Option<Sdes>,
    ssrc_base: u32,
}

#[derive(Clone)]
struct Sdes {
    mid_id: u8,
    rid_id: u8,
    mid: Bytes,
}

#[derive(Clone)]
pub struct Ctx {
    pub base: String,
    pub room: String,
    pub secret: Vec<u8>,
    pub http: reqwest::Client,
    pub tracks: Tracks,
    /// SRTP profiles the peers offer (in order).
    pub srtp: Vec<rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile>,
}

/// A signed control call to the SFU: (status, body).
pub async fn control_call(
    ctx: &Ctx,
    method: &str,
    path: &str,
    body: String,
) -> Result<(u16, String), LoadError> {
    let sig = control::sign(&ctx.secret, method, path, body.as_bytes(), now_ms())
        .map_err(|e| LoadError::Sfu(format!("signing: {e}")))?;
    let url = format!("{}{path}", ctx.base);
    let req = match method {
        "POST" => ctx.http.post(url).body(body),
        "DELETE" => ctx.http.delete(url),
        _ => ctx.http.get(url),
    };
    let res = req
        .header(control::SIGNATURE_HEADER, sig)
        .header("content-type", "application/json")
        .send()
        .await
        .map_err(|e| LoadError::Sfu(format!("{method} {path}: {e}")))?;
    let status = res.status().as_u16();
    Ok((status, res.text().await.unwrap_or_default()))
}

/// Offers `sdp` as participant `id` through the SFU's control API; returns the SFU's answer.
pub async fn post_offer(ctx: &Ctx, id: &str, sdp: String) -> Result<SdpBody, LoadError> {
    let body = serde_json::to_string(&SdpBody { sdp }).unwrap_or_default();
    let path = format!("/v1/rooms/{}/participants/{id}/offer", ctx.room);
    let (status, text) = control_call(ctx, "POST", &path, body).await?;
    if status != 200 {
        return Err(LoadError::Sfu(format!("offer for {id}: {status} {text}")));
    }
    serde_json::from_str(&text).map_err(|e| LoadError::Sfu(format!("answer: {e}")))
}

/// Tells the SFU how big participant `id` shows each publisher's camera (device pixels).
pub async fn post_views(ctx: &Ctx, id: &str, views: Vec<TileView>) -> Result<(), LoadError> {
    let body = serde_json::to_string(&ViewsBody { views }).unwrap_or_default();
    let path = format!("/v1/rooms/{}/participants/{id}/views", ctx.room);
    let (status, text) = control_call(ctx, "POST", &path, body).await?;
    if status != 204 {
        return Err(LoadError::Sfu(format!("views for {id}: {status} {text}")));
    }
    Ok(())
}

/// The id the SDP gives the header extension `uri`.
fn ext_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, u) = rest.split_once(' ')?;
        (u.trim() == uri)
            .then(|| id.split('/').next()?.parse().ok())
            .flatten()
    })
}

/// The `a=mid` of the SDP's first video m-line.
fn video_mid(sdp: &str) -> Option<String> {
    let video = &sdp[sdp.find("m=video")?..];
    video
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_string())
}

impl Peer {
    /// Makes the PeerConnection, offers as participant `id`, applies the SFU's answer and waits
    /// until connected. A publisher offers a microphone and a camera (three simulcast layers when
    /// `simulcast`); everyone else offers a microphone it never sends on, as a browser that joined
    /// muted without a camera does.
    pub async fn join(
        ctx: &Ctx,
        edge: &FakeEdge,
        id: &str,
        n: u32,
        publish: bool,
        simulcast: bool,
    ) -> Result<Peer, LoadError> {
        let mut me = MediaEngine::default();
        me.register_default_codecs()
            .map_err(|e| LoadError::Peer(e.to_string()))?;
        let registry = register_default_interceptors(Registry::new(), &mut me)
            .map_err(|e| LoadError::Peer(e.to_string()))?
            .with(Slot::from(14_000), RtcpToApplication::keyframe_requests());
        let (gtx, mut grx) = mpsc::unbounded_channel();
        let (ctx_tx, mut crx) = mpsc::unbounded_channel();
        let failed = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(Handler {
            gathered: gtx,
            connected: ctx_tx,
            failed: failed.clone(),
            tracks: ctx.tracks.clone(),
            connected_at: Arc::new(Mutex::new(Instant::now())),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_srtp_protection_profiles(ctx.srtp.clone())
                    .with_include_loopback_candidate(true)
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .map_err(|e| LoadError::Peer(e.to_string()))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc_base = 0x1000_0000 + n * 16;
        let mic = local_track(RtpCodecKind::Audio, id, &[(ssrc_base, "")]);
        pc.add_track(mic.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| LoadError::Peer(e.to_string()))?;
        let cam = if publish {
            let layers: Vec<(u32, &str)> = if simulcast {
                LAYERS
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (ssrc_base + 1 + i as u32, l.rid))
                    .collect()
            } else {
                vec![(ssrc_base + 3, "")]
            };
            let cam = local_track(RtpCodecKind::Video, id, &layers);
            pc.add_track(cam.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(|e| LoadError::Peer(e.to_string()))?;
            Some(cam)
        } else {
            None
        };
        let inbox = edge.inbox(id);
        let offer = pc
            .create_offer(None)
            .await
            .map_err(|e| LoadError::Peer(e.to_string()))?;
        pc.set_local_description(offer)
            .await
            .map_err(|e| LoadError::Peer(e.to_string()))?;
        let _ = tokio::time::timeout(Duration::from_secs(3), grx.recv()).await;
        let sdp = pc
            .local_description()
            .await
            .ok_or_else(|| LoadError::Peer("no local description".into()))?
            .sdp;
        let answer = post_offer(ctx, id, sdp).await?;
        let local = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default();
        let sdes = match (
            ext_id(&answer.sdp, "urn:ietf:params:rtp-hdrext:sdes:mid"),
            ext_id(&answer.sdp, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
            video_mid(&local),
        ) {
            (Some(mid_id), Some(rid_id), Some(mid)) if simulcast => Some(Sdes {
                mid_id,
                rid_id,
                mid: Bytes::from(mid),
            }),
            _ => None,
        };
        pc.set_remote_description(
            RTCSessionDescription::answer(answer.sdp)
                .map_err(|e| LoadError::Peer(e.to_string()))?,
        )
        .await
        .map_err(|e| LoadError::Peer(e.to_string()))?;
        tokio::time::timeout(Duration::from_secs(20), crx.recv())
            .await
            .map_err(|_| LoadError::Peer(format!("{id}: ICE + DTLS did not connect in 20 s")))?;
        answer_offers(ctx, pc.clone(), id, inbox);
        Ok(Peer {
            id: id.to_string(),
            pc,
            failed,
            mic: publish.then_some(mic),
            cam,
            sdes,
            ssrc_base,
        })
    }

    /// Loops the clips until the task is aborted: the camera at 30 fps (each layer dynacast
    /// leaves on), the microphone every 20 ms. Each payload ends with its send time.
    pub fn publish(
        &self,
        clips: Arc<Vec<Clip>>,
        simulcast: bool,
        mut layers: watch::Receiver<Vec<bool>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(mic) = self.mic.clone() {
            let ssrc = self.ssrc_base;
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let (mut seq, mut ts) = (rand_u16(ssrc), ssrc.wrapping_mul(7));
                loop {
                    tick.tick().await;
                    // An Opus frame's worth of bytes (~32 kbit/s), then the send time.
                    let mut b = BytesMut::with_capacity(80 + STAMP);
                    b.put_u8(0x78);
                    b.put_bytes(0x55, 79);
                    b.put_u64(realtime().as_nanos() as u64);
                    let pkt = packet(111, seq, ts, ssrc, true, b.freeze());
                    if mic.write_rtp(pkt).await.is_err() {
                        return;
                    }
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(960);
                }
            }));
        }
        if let Some(cam) = self.cam.clone() {
            let (base, sdes) = (self.ssrc_base, self.sdes.clone());
            // Keyframe requests are heard beside the send loop, which only looks at a flag.
            let restart = Arc::new(AtomicBool::new(false));
            let (cam2, flag) = (cam.clone(), restart.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    match cam2.poll().await {
                        Some(TrackLocalEvent::OnRtcpPacket(_)) => {
                            flag.store(true, Ordering::Relaxed)
                        }
                        Some(_) => {}
                        // Not bound (yet, or any more): nothing to hear for now.
                        None => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }));
            tasks.push(tokio::spawn(async move {
                let which: Vec<usize> = if simulcast { vec![0, 1, 2] } else { vec![2] };
                let mut seq: Vec<u16> = which.iter().map(|&l| rand_u16(base + l as u32)).collect();
                let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / FPS as u64));
                let mut ts = base.wrapping_mul(13);
                let frames = clips[2].frames.len();
                let mut n = 0usize;
                loop {
                    tick.tick().await;
                    // A keyframe request since the last frame: the clip starts again (its first
                    // frame is one).
                    if restart.swap(false, Ordering::Relaxed) {
                        n = 0;
                    }
                    let active = layers.borrow_and_update().clone();
                    for (k, &l) in which.iter().enumerate() {
                        if simulcast && !active.get(l).copied().unwrap_or(true) {
                            continue;
                        }
                        let clip = &clips[l];
                        let frame = &clip.frames[n % frames.min(clip.frames.len())];
                        let ssrc = if simulcast {
                            base + 1 + l as u32
                        } else {
                            base + 3
                        };
                        let last = frame.payloads.len().saturating_sub(1);
                        for (i, p) in frame.payloads.iter().enumerate() {
                            let mut b = BytesMut::with_capacity(p.len() + STAMP);
                            b.put_slice(p);
                            b.put_u64(realtime().as_nanos() as u64);
                            let mut pkt = packet(96, seq[k], ts, ssrc, i == last, b.freeze());
                            if let Some(sdes) = &sdes {
                                let h = &mut pkt.header;
                                let _ = h.set_extension(sdes.mid_id, sdes.mid.clone());
                                let rid = Bytes::from_static(LAYERS[l].rid.as_bytes());
                                let _ = h.set_extension(sdes.rid_id, rid);
                            }
                            if let Err(e) = cam.write_rtp(pkt).await {
                                eprintln!("camera send stopped: {e}");
                                return;
                            }
                            seq[k] = seq[k].wrapping_add(1);
                        }
                    }
                    ts = ts.wrapping_add(90_000 / FPS);
                    n += 1;
                }
            }));
        }
        tasks
    }
}

fn rand_u16(x: u32) -> u16 {
    (x.wrapping_mul(2_654_435_761) >> 16) as u16
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: Bytes) -> rtp::Packet {
    let header = rtp::header::Header {
        version: 2,
        marker,
        payload_type: pt,
        sequence_number: seq,
        timestamp: ts,
        ssrc,
        ..Default::default()
    };
    rtp::Packet { header, payload }
}

/// Answers every offer the SFU sends `id`, in order, as the browser client does.
fn answer_offers(
    ctx: &Ctx,
    pc: Arc<dyn PeerConnection>,
    id: &str,
    mut rx: mpsc::UnboundedReceiver<(String, u64)>,
) {
    let (id, ctx) = (id.to_string(), ctx.clone());
    tokio::spawn(async move {
        while let Some((sdp, generation)) = rx.recv().await {
            let Ok(offer) = RTCSessionDescription::offer(sdp) else {
                eprintln!("{id}: the SFU's offer does not parse");
                continue;
            };
            if let Err(e) = pc.set_remote_description(offer).await {
                eprintln!("{id}: the SFU's offer was refused: {e}");
                continue;
            }
            let Ok(answer) = pc.create_answer(None).await else {
                continue;
            };
            if pc.set_local_description(answer).await.is_err() {
                continue;
            }
            let Some(local) = pc.local_description().await else {
                continue;
            };
            let body = serde_json::to_string(&AnswerBody {
                sdp: local.sdp,
                generation,
            })
            .unwrap_or_default();
            let path = format!("/v1/rooms/{}/participants/{id}/answer", ctx.room);
            match control_call(&ctx, "POST", &path, body).await {
                Ok((204, _)) => {}
                Ok((s, t)) => eprintln!("{id}: answer refused: {s} {t}"),
                Err(e) => eprintln!("{id}: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, sent_ns: u64) -> rtp::Packet {
        let mut b = BytesMut::new();
        b.put_slice(&[1, 2, 3]);
        b.put_u64(sent_ns);
        packet(96, seq, 0, 1, false, b.freeze())
    }

    #[test]
    fn gaps_late_packets_and_latency_are_counted() {
        let mut s = TrackStats::default();
        for seq in [65_534u16, 65_535, 1, 0, 2] {
            // Sent at 0.999 s, arrived at 1 s and at 1.5 ms past it.
            let arrived = Duration::from_micros(1_000_000 + 1_500 * u64::from(seq % 2));
            s.on_packet(&pkt(seq, 999_000_000), arrived, Instant::now());
        }
        let t = s.take();
        assert_eq!((t.packets, t.gaps, t.late), (5, 1, 1));
        assert_eq!(t.latency_us, [1_000, 2_500, 2_500, 1_000, 1_000]);
        assert_eq!(s.take().packets, 0, "take starts the counters again");
    }

    #[test]
    fn extension_ids_and_the_video_mid_are_read_from_the_sdp() {
        let sdp = "v=0\r\nm=audio 9 x 111\r\na=mid:0\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\na=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\nm=video 9 x 96\r\na=mid:1\r\n";
        let rid = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
        assert_eq!(ext_id(sdp, rid), Some(10));
        assert_eq!(ext_id("v=0\r\n", rid), None);
        assert_eq!(video_mid(sdp).as_deref(), Some("1"));
    }
}
