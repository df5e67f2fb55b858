//! Prometheus metrics (`GET /metrics`, OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::Config;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Bucket bounds of `forward_delay_seconds`: fine below the 1 ms the SFU-engine issue asks for.
pub const FORWARD_DELAY_BUCKETS: [f64; 14] = [
    25e-6, 50e-6, 100e-6, 200e-6, 300e-6, 500e-6, 750e-6, 1e-3, 1.5e-3, 2e-3, 5e-3, 10e-3, 20e-3,
    50e-3,
];

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
    pub forward_delay: Histogram,
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
            dropped_packets: Counter::default(),
            forwarded_bytes: Counter::default(),
            keyframe_requests: Counter::default(),
            dynacast_updates: Counter::default(),
            layer_switches: Counter::default(),
            retransmitted_packets: Counter::default(),
            forward_delay: Histogram::new(FORWARD_DELAY_BUCKETS.iter().copied()),
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
            "forward_delay_seconds",
            "Per batch of media sent to a subscriber: from the arrival of its oldest packet at the SFU's socket to the batch handed to the kernel (sans-IO engine)",
            m.forward_delay.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
