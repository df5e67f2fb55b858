//! `edgemeet-load`: the SFU under a measured load (run it with `cargo xtask load`).
//!
//! For each point of the sweep: a fresh SFU process (the real binary, pinned to one core) with a
//! fake edge, P publishers and S subscribers per room (webrtc-rs peers on 127.0.0.1, this process
//! pinned to the other core). Publishers loop pre-encoded VP8 clips and Opus-sized frames, every
//! payload carrying its send time; subscribers count packets, gaps and latency without decoding.
//! Prints per point: forwarded packets/s, SFU CPU µs per forwarded packet (the SFU process's CPU
//! clock), streams per core, loss, forwarding latency p50/p99, SFU memory per participant, and this
//! tool's own CPU (a saturated load tool shows there). Bounded: every point ends after its window.

mod clip;
mod edge;
mod floor;
mod peer;
mod sans;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use edgemeet_shared::protocol::{Source, TileView};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use thiserror::Error;

use crate::edge::FakeEdge;
use crate::peer::{Ctx, Peer, TrackStats};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the clip: {0}")]
    Clip(String),
    #[error("the SFU: {0}")]
    Sfu(String),
    #[error("a load peer: {0}")]
    Peer(String),
    #[error("bad point {0:?}: write PxS, PxS@R (R rooms) or PxS+sim (simulcast with tile sizes)")]
    Point(String),
}

const SECRET: &str = "load-test-secret-load-test-secret-0123";

#[derive(Parser)]
#[command(
    name = "edgemeet-load",
    about = "Measure the SFU under P publishers × S subscribers"
)]
struct Args {
    /// The SFU binary to measure.
    #[arg(long)]
    sfu: PathBuf,
    /// Where the clips are made and kept.
    #[arg(long, default_value = "target/edgemeet-load")]
    clips: PathBuf,
    /// Where each point's SFU log goes.
    #[arg(long, default_value = "target/edgemeet-logs/load")]
    logs: PathBuf,
    /// Points: `PxS` (one room), `PxS@R` (R rooms), `+sim` (simulcast, every viewer shows each
    /// camera in a tile: one at 720p, the rest at 180p). Default: the sweep.
    points: Vec<String>,
    /// One point (1x50), a short window.
    #[arg(long)]
    quick: bool,
    /// Runs of each point (a fresh SFU each time); with more than one, the median µs/pkt is
    /// printed too (runs differ by ±15 % on a shared machine).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Seconds measured per point (after a warm-up).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Only print this machine's floor: the CPU one UDP send of a forwarded packet costs here.
    #[arg(long)]
    floor: bool,
    /// The core the SFU is pinned to (this tool takes the others).
    #[arg(long, default_value_t = 0)]
    sfu_cpu: usize,
    /// SRTP profiles the load peers offer: `chrome` offers only AES-CM + HMAC-SHA1-80, as
    /// Chromium does by default (what the SFU pays for a browser); `gcm` prefers AES-GCM.
    #[arg(long, value_enum, default_value_t = Srtp::Chrome)]
    srtp: Srtp,
    /// Record every room (every published track) while measuring: the SFU's CPU with recording,
    /// to compare with the same point without.
    #[arg(long)]
    record: bool,
    /// Let the SFU's sends wake the subscribers' thread (a blocking read), as before: on loopback
    /// the SFU is then charged for waking it, which a network never bills the sender for. By
    /// default the thread drains its socket and sleeps on its own timer (see `sans::Receive`).
    #[arg(long)]
    wake_receivers: bool,
    /// Keep the SFU's core out of idle while a point is measured: a thread on that core at
    /// `SCHED_IDLE` spins, so it only ever takes what the SFU leaves and is not the SFU's CPU.
    /// Measured at 5–15 % of a core, an SFU on this VM is woken from a halted vCPU ~250 times a
    /// second and starts every turn cold; a core forwarding the 3,000 streams `streams/cpu`
    /// extrapolates to would never halt. Each point measured so is labelled `busy`.
    #[arg(long)]
    busy_core: bool,
    /// Also print a tab-separated line per run: `result`, the point as given, µs/pkt, this
    /// tool's CPU and the SFU's (shares of a core), the SFU's forwarding delay p50 and p99 (µs),
    /// the loss (%) and the video streams that never arrived: what `cargo xtask load --against`
    /// reads. The floors (the machine's first, each point's replay after its window) are left
    /// out: a replay on the SFUs' core would fall into the other tool's window.
    #[arg(long)]
    results: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Srtp {
    Chrome,
    Gcm,
}

impl Srtp {
    fn profiles(self) -> Vec<SrtpProtectionProfile> {
        match self {
            Srtp::Chrome => vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80],
            Srtp::Gcm => vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ],
        }
    }
}

#[derive(Clone, Debug)]
struct Point {
    label: String,
    publishers: usize,
    subscribers: usize,
    rooms: usize,
    simulcast: bool,
}

fn parse_point(s: &str) -> Result<Point, LoadError> {
    let bad = || LoadError::Point(s.to_string());
    let (rest, simulcast) = match s.strip_suffix("+sim") {
        Some(r) => (r, true),
        None => (s, false),
    };
    let (ps, rooms) = match rest.split_once('@') {
        Some((ps, r)) => (ps, r.parse().map_err(|_| bad())?),
        None => (rest, 1),
    };
    let (p, s2) = ps.split_once(['x', '×']).ok_or_else(bad)?;
    let (publishers, subscribers): (usize, usize) = (
        p.parse().map_err(|_| bad())?,
        s2.parse().map_err(|_| bad())?,
    );
    if publishers == 0 || rooms == 0 || (publishers + subscribers).saturating_mul(rooms) > 1_000 {
        return Err(bad());
    }
    Ok(Point {
        label: s.to_string(),
        publishers,
        subscribers,
        rooms,
        simulcast,
    })
}

pub const SWEEP: [&str; 6] = ["1x10", "1x50", "1x100", "4x50", "10x0@2+sim", "1x300"];

struct Sfu {
    child: Child,
    base: String,
}
impl Drop for Sfu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A free run of `n` UDP ports on 127.0.0.1 (the SFU takes one per participant). The search
/// starts at a place this process's id picks, so two load tools run side by side (an A/B run
/// of two SFU binaries under the same machine conditions) do not both find the same free run.
fn free_udp_range(n: u16) -> u16 {
    let first = std::process::id() as usize;
    'next: for k in 0..40 {
        let start = 20_000 + ((first + k) % 40) as u16 * 997;
        for p in start..start + n {
            if std::net::UdpSocket::bind(("127.0.0.1", p)).is_err() {
                continue 'next;
            }
        }
        return start;
    }
    20_000
}

fn start_sfu(args: &Args, edge: &FakeEdge, point: &Point, peers: usize) -> Result<Sfu, LoadError> {
    let port = free_port();
    let udp = free_udp_range(peers as u16 + 20);
    std::fs::create_dir_all(&args.logs)
        .map_err(|e| LoadError::Io(args.logs.display().to_string(), e))?;
    let log_path = args
        .logs
        .join(format!("sfu-{}.log", point.label.replace(['@', '+'], "_")));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| LoadError::Io(log_path.display().to_string(), e))?;
    let child = Command::new("taskset")
        .args(["-c", &args.sfu_cpu.to_string()])
        .arg(&args.sfu)
        .args([
            "--id",
            "load-1",
            "--region",
            "load",
            "--latitude",
            "0",
            "--longitude",
            "0",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--edge-url", &format!("http://{}", edge.addr)])
        .args(["--media-ip", "127.0.0.1"])
        .args(["--udp-port-min", &udp.to_string()])
        .args(["--udp-port-max", &(udp + peers as u16 + 19).to_string()])
        .args(["--capacity", "100000"])
        // (`--record`: the files stay there; the fake edge takes no uploads.)
        .arg("--record-dir")
        .arg(args.logs.join("recordings"))
        .env("EDGEMEET_SFU_CONTROL_SECRET", SECRET)
        .env(
            "EDGEMEET_LOG",
            std::env::var("EDGEMEET_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(
            log.try_clone()
                .map_err(|e| LoadError::Io(log_path.display().to_string(), e))?,
        )
        .stderr(log)
        .spawn()
        .map_err(|e| LoadError::Io(format!("start {} under taskset", args.sfu.display()), e))?;
    Ok(Sfu {
        child,
        base: format!("http://127.0.0.1:{port}"),
    })
}

/// The CPU time a process has used (its process CPU clock: exact, unlike /proc's ticks).
fn cpu_time(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain libc calls writing into the locals above.
    unsafe {
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0
            || libc::clock_gettime(clock, &mut ts) != 0
        {
            return Duration::ZERO;
        }
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

async fn sfu_metric(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
}

/// The SFU's forwarding delay histogram (sans-IO engine).
const DELAY: &str = "edgemeet_sfu_forward_delay_seconds";
const TURNS: &str = "edgemeet_sfu_engine_turns_total";

/// A histogram's buckets from the SFU's /metrics: (upper bound, cumulative count), in order.
async fn sfu_histogram(http: &reqwest::Client, base: &str, name: &str) -> Vec<(f64, f64)> {
    let Some(text) = async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }
    .await
    else {
        return Vec::new();
    };
    parse_buckets(&text, name)
}

fn parse_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of what a histogram counted between two readings, interpolated within its
/// bucket as Prometheus's `histogram_quantile` does (NaN when nothing was counted).
fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - was)
        })
        .collect();
    let Some(&(_, total)) = counts.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &counts {
        if n >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = (rank - lower.1) / (n - lower.1).max(1e-9);
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, n);
    }
    lower.0
}

struct Figures {
    label: String,
    peers: usize,
    streams: usize,
    pps: f64,
    /// The SFU engine's wake-ups per second (`edgemeet_sfu_engine_turns_total`).
    turns_per_s: Option<f64>,
    us_per_packet: f64,
    sfu_cpu: f64,
    streams_per_core: f64,
    loss_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The SFU's own forwarding delay (socket → a subscriber's copy sent), p50 and p99, µs.
    sfu_delay_us: (f64, f64),
    rss_per_peer_mb: f64,
    load_cpu: f64,
    first_video_ms: (f64, f64),
    missing: usize,
    /// The SFU's sends to the subscribers in the window, as their socket read them (skbs), and
    /// the datagrams in them.
    sends: u64,
    datagrams: u64,
    /// The kernel's CPU for those same sends replayed (`floor::mix_floor`), per datagram: what
    /// this point costs here with no SFU at all.
    floor_us: Option<f64>,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i])
}

fn take_all(ctx: &Ctx) -> Vec<TrackStats> {
    ctx.tracks
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.lock().unwrap().take())
        .collect()
}

async fn run_point(
    args: &Args,
    point: &Point,
    clips: Arc<Vec<clip::Clip>>,
) -> Result<Figures, LoadError> {
    let edge = FakeEdge::start(SECRET)
        .await
        .map_err(|e| LoadError::Io("fake edge".into(), e))?;
    let per_room = point.publishers + point.subscribers;
    let peers = per_room * point.rooms;
    let sfu = start_sfu(args, &edge, point, peers)?;
    let pid = sfu.child.id();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("{}/healthz", sfu.base))
        .send()
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err(LoadError::Sfu("did not start in 20 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_idle = rss_bytes(pid);
    let tracks = peer::Tracks::default();
    let ctxs: Vec<Ctx> = (0..point.rooms)
        .map(|r| Ctx {
            base: sfu.base.clone(),
            room: format!("load-{r}"),
            secret: edge.secret().to_vec(),
            http: http.clone(),
            tracks: tracks.clone(),
            srtp: args.srtp.profiles(),
        })
        .collect();

    if args.record {
        for (r, ctx) in ctxs.iter().enumerate() {
            let path = format!("/v1/rooms/{}/recording", ctx.room);
            let body = format!(r#"{{"version":1,"recording":"load-{r}"}}"#);
            let (status, text) = peer::control_call(ctx, "POST", &path, body).await?;
            if status != 204 {
                return Err(LoadError::Sfu(format!("recording: {status} {text}")));
            }
        }
    }
    // Subscribers first, then publishers (each new camera reaches everyone in one renegotiation).
    // Subscribers are sans-IO PeerConnections on one thread and socket (`sans.rs`): far cheaper
    // per packet than the SFU, so the tool is not what limits a point.
    let host = Arc::new(sans::Host::start(
        tracks.clone(),
        if args.wake_receivers {
            sans::Receive::Wake
        } else {
            sans::Receive::Poll
        },
    )?);
    let mut subs: Vec<(usize, sans::SubPeer)> = Vec::new();
    let mut pubs: Vec<(usize, Peer)> = Vec::new();
    let mut n = 0u32;
    for publish in [false, true] {
        for (r, ctx) in ctxs.iter().enumerate() {
            let count = if publish {
                point.publishers
            } else {
                point.subscribers
            };
            let ids: Vec<(String, u32)> = (0..count)
                .map(|i| {
                    n += 1;
                    // Unique across rooms: the fake edge finds a peer by its id.
                    (
                        format!("{}{i}-r{r}", if publish { "pub" } else { "sub" }),
                        n,
                    )
                })
                .collect();
            for chunk in ids.chunks(8) {
                if publish {
                    let joins = chunk
                        .iter()
                        .map(|(id, n)| Peer::join(ctx, &edge, id, *n, true, point.simulcast));
                    for p in futures_join(joins).await {
                        pubs.push((r, p?));
                    }
                } else {
                    let joins = chunk.iter().map(|(id, n)| host.join(ctx, &edge, id, *n));
                    for p in futures_join(joins).await {
                        subs.push((r, p?));
                    }
                }
            }
        }
    }
    let publishing = Instant::now();
    let mut senders = Vec::new();
    for (_, p) in &pubs {
        let layers = edge.layers(&p.id);
        senders.extend(p.publish(clips.clone(), point.simulcast, layers));
    }
    if point.simulcast {
        // Every viewer shows one camera large (720p tile) and the others small (180p tiles).
        let viewers = subs
            .iter()
            .map(|(r, s)| (*r, s.id.as_str()))
            .chain(pubs.iter().map(|(r, p)| (*r, p.id.as_str())));
        for (r, viewer) in viewers {
            let views: Vec<TileView> = pubs
                .iter()
                .filter(|(r2, q)| *r2 == r && q.id != viewer)
                .enumerate()
                .map(|(i, (_, q))| TileView {
                    publisher: q.id.clone(),
                    source: Source::Camera,
                    height: if i == 0 { 720 } else { 180 },
                })
                .collect();
            peer::post_views(&ctxs[r], viewer, views).await?;
        }
    }

    // Everyone receives every camera in their room before the clock starts.
    let want_video: usize = point.rooms
        * (point.subscribers * point.publishers + point.publishers * (point.publishers - 1));
    let deadline =
        Instant::now() + Duration::from_secs(20) + Duration::from_millis(30 * peers as u64);
    let video_now = || {
        tracks
            .lock()
            .unwrap()
            .iter()
            .filter(|t| {
                let t = t.lock().unwrap();
                t.video && t.first_at.is_some()
            })
            .count()
    };
    while video_now() < want_video && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing = want_video.saturating_sub(video_now());
    // Warm-up: long enough for the SFU's per-stream retransmission rings (512 packets, ~3.2 s
    // of a 720p layer) and send queues to fill, so the window measures the steady state and not
    // the first touch of their memory (on this VM a fresh 2 MB page costs ~0.1 ms to zero).
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The window.
    let _ = take_all(&ctxs[0]);
    let fwd0 = sfu_metric(&http, &sfu.base, "edgemeet_sfu_forwarded_packets_total").await;
    let turns0 = sfu_metric(&http, &sfu.base, TURNS).await;
    let delay0 = sfu_histogram(&http, &sfu.base, DELAY).await;
    let busy = args.busy_core.then(|| floor::BusyCore::start(args.sfu_cpu));
    let (cpu0, me0, t0) = (cpu_time(pid), cpu_time(std::process::id()), Instant::now());
    let mix0 = floor::READS.snapshot();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let (cpu1, me1, t1) = (cpu_time(pid), cpu_time(std::process::id()), Instant::now());
    let mix = floor::READS.snapshot().since(&mix0);
    // The spinner is this tool's CPU but not its work: left out of `load cpu`.
    let spun = busy.map(floor::BusyCore::stop).unwrap_or_default();
    let fwd1 = sfu_metric(&http, &sfu.base, "edgemeet_sfu_forwarded_packets_total").await;
    let turns1 = sfu_metric(&http, &sfu.base, TURNS).await;
    let delay1 = sfu_histogram(&http, &sfu.base, DELAY).await;
    let stats = take_all(&ctxs[0]);
    let rss = rss_bytes(pid);

    for s in senders {
        s.abort();
    }
    let failed = pubs
        .iter()
        .map(|(_, p)| &p.failed)
        .chain(subs.iter().map(|(_, s)| &s.failed))
        .filter(|f| f.load(std::sync::atomic::Ordering::Relaxed))
        .count();
    if failed > 0 {
        eprintln!("  {failed} load peers lost their connection during the window");
    }
    futures_join(pubs.iter().map(|(_, p)| p.pc.close())).await;
    drop(host);
    drop(sfu);

    let wall = (t1 - t0).as_secs_f64();
    let (Some(fwd0), Some(fwd1)) = (fwd0, fwd1) else {
        return Err(LoadError::Sfu(
            "its /metrics did not answer during the window".into(),
        ));
    };
    let forwarded = fwd1 - fwd0;
    // Everything is stopped now: the window's sends again, with nothing but the kernel on the
    // SFU's core. Per datagram replayed: the SFU's sends to its publishers (webrtc-rs peers,
    // not this socket) are in `forwarded` but not in the mix. No subscriber (a 10x0 point):
    // nothing to replay.
    let floor_us = if mix.sends() == 0 || args.results {
        None
    } else {
        match floor::mix_floor(&mix, args.sfu_cpu) {
            Ok((cpu_us, delivered)) if delivered >= 99.0 => {
                Some(cpu_us / mix.datagrams().max(1) as f64)
            }
            Ok((_, delivered)) => {
                eprintln!("  the floor's replay delivered only {delivered:.1} %: not printed");
                None
            }
            Err(e) => {
                eprintln!("  the floor's replay failed: {e}");
                None
            }
        }
    };
    let sfu_cpu = cpu1.saturating_sub(cpu0).as_secs_f64() / wall;
    let us_per_packet = cpu1.saturating_sub(cpu0).as_secs_f64() * 1e6 / forwarded.max(1.0);
    let received: u64 = stats.iter().map(|s| s.packets).sum();
    let gaps: u64 = stats.iter().map(|s| s.gaps).sum();
    let late: u64 = stats.iter().map(|s| s.late).sum();
    let lost = gaps.saturating_sub(late);
    let mut lat: Vec<u32> = stats
        .iter()
        .flat_map(|s| s.latency_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let mut firsts: Vec<u32> = stats
        .iter()
        .filter(|s| s.video)
        .filter_map(|s| {
            let ready = s.connected_at?.max(publishing);
            Some(s.first_at?.saturating_duration_since(ready).as_millis() as u32)
        })
        .collect();
    firsts.sort_unstable();
    Ok(Figures {
        label: if args.busy_core {
            format!("{} busy", point.label)
        } else {
            point.label.clone()
        },
        peers,
        streams: want_video,
        pps: forwarded / wall,
        // The async engine has no turns: it counts none.
        turns_per_s: turns0
            .zip(turns1)
            .map(|(a, b)| (b - a) / wall)
            .filter(|t| *t > 0.0),
        us_per_packet,
        sfu_cpu,
        streams_per_core: want_video as f64 / sfu_cpu.max(1e-9),
        loss_pct: 100.0 * lost as f64 / (received + lost).max(1) as f64,
        p50_ms: percentile(&lat, 0.5) / 1000.0,
        p99_ms: percentile(&lat, 0.99) / 1000.0,
        sfu_delay_us: (
            histogram_quantile(&delay0, &delay1, 0.5) * 1e6,
            histogram_quantile(&delay0, &delay1, 0.99) * 1e6,
        ),
        rss_per_peer_mb: rss.saturating_sub(rss_idle) as f64 / peers as f64 / 1_048_576.0,
        load_cpu: me1.saturating_sub(me0).saturating_sub(spun).as_secs_f64() / wall,
        first_video_ms: (
            percentile(&firsts, 0.5),
            firsts.last().copied().unwrap_or(0) as f64,
        ),
        missing,
        sends: mix.sends(),
        datagrams: mix.datagrams(),
        floor_us,
    })
}

/// Runs futures concurrently on this task and returns their results in order.
async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    // Polled together: each join is mostly waiting on the network.
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The machine the figures are from, in one line: the CPU's model, its cores, and the features
/// the SFU's crypto picks its path by (`hmac_x16`: AVX-512 + BW, else SHA-NI; `aes_ctr`: VAES).
/// This VM has been an Intel Xeon on some days and an AMD EPYC on others, and runs of one binary
/// are only comparable on the same CPU.
fn machine(cpuinfo: &str) -> String {
    // Counted here, not from the affinity mask: the tool runs under `taskset -c 1`.
    let cores = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let features: Vec<&str> = ["avx512f", "avx512bw", "sha_ni", "vaes"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    format!(
        "machine: {model}, {cores} cores, {}",
        if features.is_empty() {
            "none of avx512f/avx512bw/sha_ni/vaes".to_string()
        } else {
            features.join(" ")
        }
    )
}

async fn run(mut args: Args) -> Result<(), LoadError> {
    // The kernel's mitigation on AMD Zen ("Safe RET" puts every return in the kernel through a
    // thunk) weighs on each syscall, so on the per-datagram send cost the floor shows.
    let srso =
        std::fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    let srso = if srso.is_empty() || srso == "Not affected" {
        String::new()
    } else {
        format!("; kernel SRSO mitigation: {srso}")
    };
    println!(
        "{}{srso}",
        machine(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    );
    // The machine's floor first: what the kernel alone charges for one forwarded packet here.
    if args.results && !args.floor {
        // Side by side with another tool (`--against`): no replay in its window.
    } else if let Err(e) = floor::run(args.sfu_cpu) {
        eprintln!("the UDP floor could not be measured: {e}");
    }
    if args.floor {
        return Ok(());
    }
    let names: Vec<String> = if args.quick {
        args.secs = args.secs.min(5);
        vec!["1x50".into()]
    } else if args.points.is_empty() {
        SWEEP.iter().map(|s| s.to_string()).collect()
    } else {
        args.points.clone()
    };
    let points = names
        .iter()
        .map(|s| parse_point(s))
        .collect::<Result<Vec<_>, _>>()?;
    let clips = Arc::new(clip::clips(&args.clips)?);
    for (l, c) in clip::LAYERS.iter().zip(clips.iter()) {
        eprintln!(
            "clip {}: {}x{}, {} frames, {:.0} kbit/s as sent",
            l.rid,
            l.width,
            l.height,
            c.frames.len(),
            c.bytes_per_loop as f64 * 8.0 / (c.frames.len() as f64 / clip::FPS as f64) / 1000.0
        );
    }
    println!(
        "SRTP: {}",
        match args.srtp {
            Srtp::Chrome => "AES-CM + HMAC-SHA1-80, the only profile Chromium offers by default (--srtp gcm: AES-GCM)",
            Srtp::Gcm => "AES-GCM (--srtp chrome: AES-CM + HMAC-SHA1-80, as Chromium)",
        }
    );
    println!(
        "{:<12} {:>5} {:>7} {:>9} {:>8} {:>6} {:>6} {:>7} {:>7} {:>10} {:>7} {:>12} {:>13} {:>11} {:>9} {:>12}",
        "point",
        "peers",
        "streams",
        "fwd pkt/s",
        "µs/pkt",
        "floor",
        "d/send",
        "turns/s",
        "SFU cpu",
        "streams/cpu",
        "loss %",
        "lat p50/p99",
        "SFU p50/p99",
        "MB/peer",
        "load cpu",
        "1st video"
    );
    for (p, name) in points.iter().zip(&names) {
        let mut per_packet = Vec::new();
        for _ in 0..args.runs.max(1) {
            let f = run_point(&args, p, clips.clone()).await?;
            per_packet.push(f.us_per_packet);
            if args.results {
                println!(
                    "result\t{name}\t{:.4}\t{:.4}\t{:.4}\t{:.0}\t{:.0}\t{:.3}\t{}",
                    f.us_per_packet,
                    f.load_cpu,
                    f.sfu_cpu,
                    f.sfu_delay_us.0,
                    f.sfu_delay_us.1,
                    f.loss_pct,
                    f.missing
                );
            }
            println!(
            "{:<12} {:>5} {:>7} {:>9.0} {:>8.2} {:>6} {:>6.2} {:>7} {:>6.1}% {:>10} {:>7.3} {:>5.2}/{:<5.2}ms {:>5.0}/{:<5.0}µs {:>11.2} {:>8.1}% {:>5.0}/{:<5.0}ms{}",
            f.label,
            f.peers,
            f.streams,
            f.pps,
            f.us_per_packet,
            f.floor_us.map_or("-".to_string(), |u| format!("{u:.2}")),
            f.datagrams as f64 / f.sends.max(1) as f64,
            f.turns_per_s.map_or("-".to_string(), |t| format!("{t:.0}")),
            f.sfu_cpu * 100.0,
            // Only when every stream flowed: otherwise the figure would flatter the SFU.
            if f.missing == 0 {
                format!("{:.0}", f.streams_per_core)
            } else {
                "-".to_string()
            },
            f.loss_pct,
            f.p50_ms,
            f.p99_ms,
            f.sfu_delay_us.0,
            f.sfu_delay_us.1,
            f.rss_per_peer_mb,
            f.load_cpu * 100.0,
            f.first_video_ms.0,
            f.first_video_ms.1,
            if f.missing > 0 {
                format!("  ({} video streams never arrived)", f.missing)
            } else {
                String::new()
            }
        );
        }
        if per_packet.len() > 1 {
            per_packet.sort_by(f64::total_cmp);
            println!(
                "{:<12} µs/pkt over {} runs: median {:.2}, min {:.2}, max {:.2}",
                p.label,
                per_packet.len(),
                per_packet[per_packet.len() / 2],
                per_packet[0],
                per_packet[per_packet.len() - 1]
            );
        }
    }
    println!(
        "streams: camera streams forwarded (publisher → viewer, with its microphone); µs/pkt: SFU CPU \
         time / forwarded packets (audio and video); streams/cpu: streams one fully used core would \
         forward at this cost; floor: the kernel's CPU for the very sends (skbs) the subscribers \
         read in the window, replayed afterwards from one socket with nothing else on the SFU's \
         core, per datagram — what this point costs here before any SFU work; d/send: \
         datagrams per send (UDP GSO puts a frame's packets to one subscriber in one); turns/s: the \
         SFU engine's turns a second, each a wake-up of its thread; lat: a packet's send stamp in \
         the publisher (before its webrtc-rs send path) → its arrival in the subscriber's socket \
         (the kernel's receive stamp: not the tool's own wait and work on the subscriber side; \
         the 10x0 points' publishing viewers are stamped when their track hands it over); \
         SFU: the SFU's own forwarding delay as each subscriber sees it, a packet's arrival at the \
         SFU's socket (kernel time) → its copy handed to the kernel (the oldest of each batch; sans \
         engine); 1st video: connection → first camera packet, p50/max"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_names_the_cpu_and_the_crypto_features() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu aes avx2 avx512f avx512bw sha_ni vaes\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n";
        assert_eq!(
            machine(info),
            "machine: AMD EPYC, 2 cores, avx512f avx512bw sha_ni vaes"
        );
        let old = "processor : 0\nmodel name : Intel(R) Xeon(R) CPU\nflags : fpu aes avx2 sha_ni\nprocessor : 1\nprocessor : 2\nprocessor : 3\n";
        assert_eq!(
            machine(old),
            "machine: Intel(R) Xeon(R) CPU, 4 cores, sha_ni"
        );
        assert_eq!(
            machine(""),
            "machine: unknown CPU, 0 cores, none of avx512f/avx512bw/sha_ni/vaes"
        );
    }

    #[test]
    fn a_histogram_quantile_counts_only_the_window() {
        let text = |counts: [u32; 4]| {
            format!(
                "x_bucket{{le=\"0.0001\"}} {}\nx_bucket{{le=\"0.001\"}} {}\nx_bucket{{le=\"0.01\"}} {}\nx_bucket{{le=\"+Inf\"}} {}\nx_count {}\n",
                counts[0], counts[1], counts[2], counts[3], counts[3]
            )
        };
        let before = parse_buckets(&text([50, 50, 50, 50]), "x");
        assert_eq!(before.len(), 4);
        // In the window: 100 between 0.1 and 1 ms.
        let after = parse_buckets(&text([50, 150, 150, 150]), "x");
        let p50 = histogram_quantile(&before, &after, 0.5);
        assert!((p50 - 0.00055).abs() < 1e-9, "{p50}");
        assert!(histogram_quantile(&before, &before, 0.5).is_nan());
        assert!(histogram_quantile(&[], &[], 0.5).is_nan());
    }

    #[test]
    fn points_parse() {
        let p = parse_point("4x50").unwrap();
        assert_eq!(
            (p.publishers, p.subscribers, p.rooms, p.simulcast),
            (4, 50, 1, false)
        );
        let p = parse_point("10x0@2+sim").unwrap();
        assert_eq!(
            (p.publishers, p.subscribers, p.rooms, p.simulcast),
            (10, 0, 2, true)
        );
        for bad in ["", "x", "0x10", "1x", "1x10@0", "1x2000", "ax1"] {
            assert!(parse_point(bad).is_err(), "{bad}");
        }
        for s in SWEEP {
            parse_point(s).unwrap();
        }
    }
}
