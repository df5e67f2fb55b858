//! Prometheus metrics (`GET /metrics`, OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Bucket bounds of `forward_delay_seconds`: fine below the 1 ms the SFU-engine issue asks for.
/// Between 1 and 5 ms every half millisecond or so, where a fan-out's tail lies at 50–100
/// subscribers: a quantile is interpolated within its bucket, and with 2–5 ms one bucket the
/// load tool's p99 said little more than "somewhere in 2–5 ms".
pub const FORWARD_DELAY_BUCKETS: [f64; BUCKETS] = [
    25e-6, 50e-6, 100e-6, 200e-6, 300e-6, 500e-6, 750e-6, 1e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 4e-3,
    5e-3, 10e-3, 20e-3, 50e-3,
];

const BUCKETS: usize = 17;

/// What one media worker thread counted since it last added to the shared metrics: plain
/// numbers, so the per-packet path does no atomic operation on a cache line another thread
/// writes; the worker adds them to [`Metrics`] once per turn of its loop ([`Metrics::add`]).
#[derive(Debug, Default, Clone)]
pub struct LocalCounts {
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_packets: u64,
    pub retransmitted_packets: u64,
    pub layer_switches: u64,
    pub recorded_packets: u64,
    pub record_dropped: u64,
    /// Turns of the worker's loop: each a wake-up from `epoll_wait` (or a poll with work left).
    pub turns: u64,
    pub forward_delay: LocalHistogram,
}

/// A histogram filled by one thread, added to a [`SharedHistogram`] now and then.
#[derive(Debug, Default, Clone)]
pub struct LocalHistogram {
    /// Per bucket of [`FORWARD_DELAY_BUCKETS`] (not cumulative), and one past the last.
    counts: [u64; BUCKETS + 1],
    sum: f64,
    count: u64,
}

impl LocalHistogram {
    pub fn observe(&mut self, v: f64) {
        let i = FORWARD_DELAY_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(BUCKETS);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// The sum of every thread's [`LocalHistogram`], encoded as an OpenMetrics histogram.
#[derive(Debug, Default)]
pub struct SharedHistogram {
    counts: [AtomicU64; BUCKETS + 1],
    /// Nanoseconds.
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl SharedHistogram {
    fn add(&self, local: &LocalHistogram) {
        for (c, n) in self.counts.iter().zip(local.counts) {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum_ns
            .fetch_add((local.sum * 1e9) as u64, Ordering::Relaxed);
        self.count.fetch_add(local.count, Ordering::Relaxed);
    }

    /// Appends the histogram named `name` (with the registry's prefix) to OpenMetrics text.
    fn encode(&self, name: &str, help: &str, out: &mut String) {
        // Buckets first, and the count is their total: a scrape during a worker's `add` may
        // miss part of that turn, but never shows a count that disagrees with the buckets.
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {total}");
        let mut cumulative = 0;
        for (i, c) in counts.into_iter().enumerate() {
            cumulative += c;
            match FORWARD_DELAY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub participants: Gauge,
    pub rooms: Gauge,
    pub draining: Gauge,
    pub heartbeats: Family<ResultLabel, Counter>,
    pub forwarded_packets: Counter,
    pub dropped_packets: Counter,
    pub forwarded_bytes: Counter,
    pub keyframe_requests: Counter,
    pub dynacast_updates: Counter,
    pub layer_switches: Counter,
    pub retransmitted_packets: Counter,
    pub recorded_packets: Counter,
    pub record_dropped: Counter,
    /// Turns of the sans-IO engine's worker loops ([`LocalCounts::turns`]).
    pub engine_turns: Counter,
    pub record_uploaded_bytes: Counter,
    pub record_upload_ms: Counter,
    /// Connection checks' sessions made (pre-join network check).
    pub probes: Counter,
    /// Connection checks' sessions open now.
    pub probe_sessions: Gauge,
    /// Filled by the sans-IO engine's workers ([`LocalCounts`]); encoded by [`Metrics::encode`].
    pub forward_delay: SharedHistogram,
}

impl Metrics {
    pub fn new(config: &Config) -> Metrics {
        let mut registry = Registry::with_prefix("edgemeet_sfu");
        let m = Metrics {
            registry: Registry::default(),
            participants: Gauge::default(),
            rooms: Gauge::default(),
            draining: Gauge::default(),
            heartbeats: Family::default(),
            forwarded_packets: Counter::default(),
            engine_turns: Counter::default(),
            dropped_packets: Counter::default(),
            forwarded_bytes: Counter::default(),
            keyframe_requests: Counter::default(),
            dynacast_updates: Counter::default(),
            layer_switches: Counter::default(),
            retransmitted_packets: Counter::default(),
            recorded_packets: Counter::default(),
            record_dropped: Counter::default(),
            record_uploaded_bytes: Counter::default(),
            record_upload_ms: Counter::default(),
            probes: Counter::default(),
            probe_sessions: Gauge::default(),
            forward_delay: SharedHistogram::default(),
        };
        registry.register(
            "build",
            "This SFU's identity and version",
            Info::new(vec![
                ("id", config.id.clone()),
                ("region", config.region.clone()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        registry.register(
            "participants",
            "Participants connected to this SFU",
            m.participants.clone(),
        );
        registry.register("rooms", "Rooms with media on this SFU", m.rooms.clone());
        registry.register(
            "draining",
            "1 while this SFU is draining (takes no new rooms)",
            m.draining.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats sent to the edge, by result",
            m.heartbeats.clone(),
        );
        registry.register(
            "engine_turns",
            "Turns of the media engine's worker loops (sans-IO engine): each a wake-up of its thread, or a poll without waiting when a socket's turn left datagrams; a packet's share of them is this over forwarded packets",
            m.engine_turns.clone(),
        );
        registry.register(
            "forwarded_packets",
            "RTP packets forwarded to subscribers",
            m.forwarded_packets.clone(),
        );
        registry.register(
            "dropped_packets",
            "RTP packets dropped (unknown sender or track)",
            m.dropped_packets.clone(),
        );
        registry.register(
            "forwarded_bytes",
            "RTP bytes (header and payload) forwarded to subscribers",
            m.forwarded_bytes.clone(),
        );
        registry.register(
            "keyframe_requests",
            "Keyframe requests (PLI) sent to publishers",
            m.keyframe_requests.clone(),
        );
        registry.register(
            "dynacast_updates",
            "Times a publisher was told which simulcast layers to encode",
            m.dynacast_updates.clone(),
        );
        registry.register(
            "layer_switches",
            "Simulcast layer switches (a subscriber moved to another layer)",
            m.layer_switches.clone(),
        );
        registry.register(
            "retransmitted_packets",
            "Packets sent again to a subscriber that NACKed them (sans-IO engine)",
            m.retransmitted_packets.clone(),
        );
        registry.register(
            "recorded_packets",
            "RTP packets handed to the recorder",
            m.recorded_packets.clone(),
        );
        registry.register(
            "record_dropped_packets",
            "RTP packets not recorded: the recorder was too far behind",
            m.record_dropped.clone(),
        );
        registry.register(
            "record_uploaded_bytes",
            "Bytes of recorded segments the edge took (files and segment.json)",
            m.record_uploaded_bytes.clone(),
        );
        registry.register(
            "record_upload_milliseconds",
            "Time spent uploading the segments the edge took: uploaded bytes over it is the upload throughput",
            m.record_upload_ms.clone(),
        );
        registry.register(
            "probes",
            "Connection checks' throwaway sessions made (a pre-join check makes one per path)",
            m.probes.clone(),
        );
        registry.register(
            "probe_sessions",
            "Connection checks' sessions open now (each closes within 20 s)",
            m.probe_sessions.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        // The histogram the workers sum into goes before the end marker.
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        let tail = out.split_off(eof);
        self.forward_delay.encode(
            "edgemeet_sfu_forward_delay_seconds",
            "Per batch of media sent to a subscriber: from the arrival of its oldest packet at the SFU's socket to the batch handed to the kernel (sans-IO engine)",
            &mut out,
        );
        out.push_str(&tail);
        out
    }

    /// Adds what a worker thread counted, and zeroes it.
    pub fn add(&self, local: &mut LocalCounts) {
        let l = std::mem::take(local);
        let add = |c: &Counter, n: u64| {
            if n > 0 {
                c.inc_by(n);
            }
        };
        add(&self.forwarded_packets, l.forwarded_packets);
        add(&self.forwarded_bytes, l.forwarded_bytes);
        add(&self.dropped_packets, l.dropped_packets);
        add(&self.retransmitted_packets, l.retransmitted_packets);
        add(&self.layer_switches, l.layer_switches);
        add(&self.recorded_packets, l.recorded_packets);
        add(&self.record_dropped, l.record_dropped);
        add(&self.engine_turns, l.turns);
        if l.forward_delay.count > 0 {
            self.forward_delay.add(&l.forward_delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_threads_count_adds_up_in_the_exported_text() {
        let m = Metrics::new(&crate::config::Config {
            id: "sfu-a".into(),
            region: "eu-west".into(),
            location: edgemeet_shared::region::GeoPoint { lat: 0.0, lon: 0.0 },
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: "http://127.0.0.1".into(),
            media_ip: "127.0.0.1".parse().unwrap(),
            udp_ports: (40_000, 40_100),
            capacity: 10,
            edge_url: None,
            control_secret: "x".repeat(32),
            engine: crate::config::EngineKind::default(),
            record_dir: std::env::temp_dir(),
        });
        let mut a = LocalCounts {
            forwarded_packets: 5,
            forwarded_bytes: 6_000,
            ..LocalCounts::default()
        };
        a.forward_delay.observe(0.000_04);
        a.forward_delay.observe(0.003);
        let mut b = LocalCounts {
            forwarded_packets: 2,
            turns: 3,
            ..LocalCounts::default()
        };
        b.forward_delay.observe(1.0);
        m.add(&mut a);
        m.add(&mut b);
        assert_eq!(a.forwarded_packets, 0, "added once only");
        m.add(&mut a);
        let text = m.encode();
        assert!(
            text.contains("edgemeet_sfu_engine_turns_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("edgemeet_sfu_forwarded_packets_total 7\n"),
            "{text}"
        );
        assert!(text.contains("edgemeet_sfu_forwarded_bytes_total 6000\n"));
        assert!(
            text.contains("edgemeet_sfu_forward_delay_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("edgemeet_sfu_forward_delay_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("edgemeet_sfu_forward_delay_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("edgemeet_sfu_forward_delay_seconds_count 3\n"));
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
