//! Regions and routing: the SFU registry's pure core and the choice of a room's SFU.
//!
//! SFUs heartbeat every [`HEARTBEAT_INTERVAL_MS`]; one not heard from for [`STALE_AFTER_MS`] is not
//! healthy. A room's SFU is the healthy, non-draining SFU under capacity that minimises great-circle
//! distance to the client plus a load penalty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Millis;

pub const HEARTBEAT_INTERVAL_MS: u64 = 2_000;
pub const STALE_AFTER_MS: u64 = 6_000;
/// Records not heard from for this long are forgotten entirely.
pub const FORGET_AFTER_MS: u64 = 5 * 60_000;
/// An SFU a room found failing (or that announced it is draining) is out of new rooms' choices at
/// once; only a heartbeat received at least this long after that brings it back (heartbeats
/// already on their way when it failed do not).
pub const SUSPEND_HOLD_MS: u64 = 2_000;
/// Distance penalty (km) added for an SFU at 100 % load: load matters, but never sends a user
/// across an ocean when a nearby SFU has room.
pub const FULL_LOAD_PENALTY_KM: f64 = 2_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// Great-circle distance in km (haversine, mean Earth radius).
pub fn distance_km(a: GeoPoint, b: GeoPoint) -> f64 {
    const R: f64 = 6_371.0;
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SfuLoad {
    pub participants: u32,
    pub forwarded_bitrate_bps: u64,
    /// 0.0 – 1.0 of the SFU's CPU budget.
    pub cpu: f64,
}

/// What an SFU says of itself every couple of seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SfuHeartbeat {
    pub id: String,
    pub region: String,
    /// Base URL of the SFU's HTTP control API, as the edge should reach it.
    pub url: String,
    pub location: GeoPoint,
    /// Most participants this SFU takes.
    pub capacity: u32,
    pub load: SfuLoad,
    pub draining: bool,
    pub version: String,
}

/// One SFU as the registry reports it (`/api/health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SfuStatus {
    #[serde(flatten)]
    pub heartbeat: SfuHeartbeat,
    pub last_seen_ms_ago: u64,
    pub healthy: bool,
}

#[derive(Debug, Error, PartialEq)]
pub enum RegistryError {
    #[error("SFU id must be 1-64 characters of a-z, 0-9, '-', '_'")]
    BadId,
    #[error("SFU region must be 1-64 characters")]
    BadRegion,
    #[error("SFU url must start with http:// or https://")]
    BadUrl,
    #[error("SFU location is not a valid latitude/longitude")]
    BadLocation,
    #[error("SFU cpu load must be between 0 and 1")]
    BadLoad,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RoutingError {
    #[error("no media server is available right now")]
    NoHealthySfu,
}

/// Where the routing decision came from, for logs and room info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SfuChoice {
    pub id: String,
    pub region: String,
    pub url: String,
    pub distance_km: Option<f64>,
    pub score: f64,
    pub reason: String,
}

/// Why an SFU is out of new rooms' choices before its heartbeats say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Suspension {
    /// A room's call or probe could not reach it.
    Down,
    /// It announced it is draining (its rooms are moving away).
    Draining,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    heartbeat: SfuHeartbeat,
    seen: Millis,
    suspended: Option<(Suspension, Millis)>,
}

/// The registry's state: the latest heartbeat of each SFU, when it came, and whether a room or
/// the SFU itself said it is failing or draining since.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    sfus: BTreeMap<String, Record>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Records a heartbeat received at `now`, after validating it.
    pub fn heartbeat(&mut self, hb: SfuHeartbeat, now: Millis) -> Result<(), RegistryError> {
        let id_ok = !hb.id.is_empty()
            && hb.id.len() <= 64
            && hb
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !id_ok {
            return Err(RegistryError::BadId);
        }
        if hb.region.is_empty() || hb.region.len() > 64 {
            return Err(RegistryError::BadRegion);
        }
        if !(hb.url.starts_with("http://") || hb.url.starts_with("https://")) {
            return Err(RegistryError::BadUrl);
        }
        if !hb.location.is_valid() {
            return Err(RegistryError::BadLocation);
        }
        if !(hb.load.cpu.is_finite() && (0.0..=1.0).contains(&hb.load.cpu)) {
            return Err(RegistryError::BadLoad);
        }
        // A suspension ends with a heartbeat sent well after it began.
        let suspended = self
            .sfus
            .get(&hb.id)
            .and_then(|r| r.suspended)
            .filter(|(_, since)| now < since + SUSPEND_HOLD_MS);
        self.sfus.insert(
            hb.id.clone(),
            Record {
                heartbeat: hb,
                seen: now,
                suspended,
            },
        );
        self.sfus
            .retain(|_, r| now.saturating_sub(r.seen) < FORGET_AFTER_MS);
        Ok(())
    }

    /// A room found `id` failing (a call or a probe did not reach it), or `id` said it is
    /// draining: no new room goes there until a later heartbeat (see [`SUSPEND_HOLD_MS`]). Unknown
    /// ids are ignored.
    pub fn suspend(&mut self, id: &str, why: Suspension, now: Millis) {
        if let Some(r) = self.sfus.get_mut(id) {
            r.suspended = Some((why, now));
        }
    }

    pub fn status(&self, now: Millis) -> Vec<SfuStatus> {
        self.sfus
            .values()
            .map(|r| {
                let age = now.saturating_sub(r.seen);
                let mut heartbeat = r.heartbeat.clone();
                let why = r.suspended.map(|(why, _)| why);
                if why == Some(Suspension::Draining) {
                    heartbeat.draining = true;
                }
                SfuStatus {
                    heartbeat,
                    last_seen_ms_ago: age,
                    healthy: age < STALE_AFTER_MS && why != Some(Suspension::Down),
                }
            })
            .collect()
    }

    /// The SFU for a new room whose first joiner is at `client` (unknown location: least loaded).
    pub fn choose(&self, client: Option<GeoPoint>, now: Millis) -> Result<SfuChoice, RoutingError> {
        choose_sfu(&self.status(now), client)
    }

    /// A new SFU for a room whose SFU (`dead`) failed: never `dead` nor one in `exclude` (SFUs
    /// the room itself found gone or draining), and nearest to where `dead` was (the room's people
    /// are near it), unless the room's location is known.
    pub fn replace(
        &self,
        dead: &str,
        exclude: &[String],
        client: Option<GeoPoint>,
        now: Millis,
    ) -> Result<SfuChoice, RoutingError> {
        let status = self.status(now);
        let near = client.or_else(|| {
            status
                .iter()
                .find(|s| s.heartbeat.id == dead)
                .map(|s| s.heartbeat.location)
        });
        let others: Vec<SfuStatus> = status
            .into_iter()
            .filter(|s| s.heartbeat.id != dead && !exclude.contains(&s.heartbeat.id))
            .collect();
        let mut choice = choose_sfu(&others, near)?;
        choice.reason = format!("replaces {dead}: {}", choice.reason);
        Ok(choice)
    }
}

/// Picks the SFU for a room among `sfus` (see the module docs for the rule).
pub fn choose_sfu(sfus: &[SfuStatus], client: Option<GeoPoint>) -> Result<SfuChoice, RoutingError> {
    let client = client.filter(GeoPoint::is_valid);
    let mut best: Option<SfuChoice> = None;
    for s in sfus {
        let hb = &s.heartbeat;
        if !s.healthy || hb.draining || hb.load.participants >= hb.capacity {
            continue;
        }
        let occupancy = (hb.load.participants as f64 / hb.capacity.max(1) as f64).max(hb.load.cpu);
        let distance = client.map(|c| distance_km(c, hb.location));
        let score = distance.unwrap_or(0.0) + occupancy * FULL_LOAD_PENALTY_KM;
        // Ties go to the lexically smaller id, so the choice is deterministic.
        if best.as_ref().is_none_or(|b| score < b.score) {
            let reason = match distance {
                Some(d) => format!(
                    "nearest healthy SFU: {d:.0} km away, {:.0}% loaded",
                    occupancy * 100.0
                ),
                None => format!(
                    "client location unknown: least loaded healthy SFU ({:.0}%)",
                    occupancy * 100.0
                ),
            };
            best = Some(SfuChoice {
                id: hb.id.clone(),
                region: hb.region.clone(),
                url: hb.url.clone(),
                distance_km: distance,
                score,
                reason,
            });
        }
    }
    best.ok_or(RoutingError::NoHealthySfu)
}

/// Header a browser (or test) may send to fake its location in local dev: `"<lat>,<lon>"`.
pub const DEV_LOCATION_HEADER: &str = "x-edgemeet-dev-location";

/// Where a client is, for routing: the runtime's idea (`request.cf`), unless this is a dev deployment
/// (`allow_override`) and the request carries [`DEV_LOCATION_HEADER`]. A deployed worker never sets
/// `allow_override`, so the header is ignored there.
pub fn client_location(
    cf: Option<GeoPoint>,
    override_header: Option<&str>,
    allow_override: bool,
) -> Option<GeoPoint> {
    if allow_override {
        if let Some(p) = override_header.and_then(parse_location) {
            return Some(p);
        }
    }
    cf.filter(GeoPoint::is_valid)
}

fn parse_location(s: &str) -> Option<GeoPoint> {
    let (lat, lon) = s.split_once(',')?;
    let p = GeoPoint {
        lat: lat.trim().parse().ok()?,
        lon: lon.trim().parse().ok()?,
    };
    p.is_valid().then_some(p)
}

/// The three regions the local dev stack stands up (id, region, lat, lon).
pub const DEV_REGIONS: [(&str, &str, f64, f64); 3] = [
    ("us-east", "us-east", 39.04, -77.49),  // Ashburn
    ("eu-west", "eu-west", 50.11, 8.68),    // Frankfurt
    ("ap-south", "ap-south", 1.35, 103.82), // Singapore
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, lat: f64, lon: f64) -> SfuHeartbeat {
        SfuHeartbeat {
            id: id.into(),
            region: id.into(),
            url: format!("http://127.0.0.1/{id}"),
            location: GeoPoint { lat, lon },
            capacity: 100,
            load: SfuLoad::default(),
            draining: false,
            version: "test".into(),
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        for (id, _, lat, lon) in DEV_REGIONS {
            r.heartbeat(hb(id, lat, lon), 0).unwrap();
        }
        r
    }

    const FRANKFURT: GeoPoint = GeoPoint {
        lat: 50.1,
        lon: 8.7,
    };
    const SINGAPORE: GeoPoint = GeoPoint {
        lat: 1.3,
        lon: 103.8,
    };
    const AUSTIN: GeoPoint = GeoPoint {
        lat: 30.27,
        lon: -97.74,
    };

    #[test]
    fn distance_is_great_circle() {
        let d = distance_km(
            GeoPoint {
                lat: 51.5,
                lon: -0.13,
            },
            GeoPoint {
                lat: 40.71,
                lon: -74.0,
            },
        );
        assert!((d - 5_570.0).abs() < 30.0, "London-New York {d}");
        assert!(distance_km(FRANKFURT, FRANKFURT) < 1e-9);
    }

    #[test]
    fn a_failed_sfu_is_replaced_by_the_one_nearest_to_it() {
        let r = registry();
        // us-east (Ashburn) dies: eu-west (Frankfurt) is nearer to it than ap-south (Singapore).
        let c = r.replace("us-east", &[], None, 1000).unwrap();
        assert_eq!(c.id, "eu-west");
        assert!(c.reason.starts_with("replaces us-east"), "{}", c.reason);
        // Never the dead one, even when it is nearest to the room's known location.
        assert_eq!(
            r.replace("eu-west", &[], Some(FRANKFURT), 1000).unwrap().id,
            "us-east"
        );
        // Nothing else alive: no media server.
        let mut lone = Registry::new();
        lone.heartbeat(hb("us-east", 39.0, -77.5), 0).unwrap();
        assert!(lone.replace("us-east", &[], None, 1000).is_err());
    }

    #[test]
    fn an_sfu_a_room_found_failing_is_out_at_once_and_back_with_a_later_heartbeat() {
        let mut r = registry();
        assert_eq!(r.choose(Some(AUSTIN), 1_000).unwrap().id, "us-east");
        r.suspend("us-east", Suspension::Down, 1_000);
        // Out at once, not after STALE_AFTER_MS of silence.
        assert_eq!(r.choose(Some(AUSTIN), 1_001).unwrap().id, "eu-west");
        // A heartbeat that was already on its way does not bring it back...
        r.heartbeat(hb("us-east", 39.04, -77.49), 1_500).unwrap();
        assert_eq!(r.choose(Some(AUSTIN), 1_500).unwrap().id, "eu-west");
        // ...one sent later (it restarted, or the failure was passing) does.
        r.heartbeat(hb("us-east", 39.04, -77.49), 1_000 + SUSPEND_HOLD_MS)
            .unwrap();
        assert_eq!(
            r.choose(Some(AUSTIN), 1_000 + SUSPEND_HOLD_MS).unwrap().id,
            "us-east"
        );
        // A draining notice works the same way and shows as draining.
        r.suspend("eu-west", Suspension::Draining, 5_000);
        let eu = r
            .status(5_000)
            .into_iter()
            .find(|s| s.heartbeat.id == "eu-west")
            .unwrap();
        assert!(eu.heartbeat.draining && eu.healthy);
        assert_eq!(r.choose(Some(FRANKFURT), 5_000).unwrap().id, "us-east");
        // Unknown ids are ignored.
        r.suspend("nope", Suspension::Down, 5_000);
        assert_eq!(r.status(5_000).len(), 3);
    }

    #[test]
    fn a_replacement_never_is_an_sfu_the_room_excludes() {
        let r = registry();
        let c = r
            .replace("us-east", &["eu-west".to_string()], None, 1_000)
            .unwrap();
        assert_eq!(c.id, "ap-south");
        assert!(r
            .replace(
                "us-east",
                &["eu-west".to_string(), "ap-south".to_string()],
                None,
                1_000
            )
            .is_err());
    }

    #[test]
    fn nearest_healthy_sfu_wins() {
        let r = registry();
        assert_eq!(r.choose(Some(FRANKFURT), 1000).unwrap().id, "eu-west");
        assert_eq!(r.choose(Some(SINGAPORE), 1000).unwrap().id, "ap-south");
        assert_eq!(r.choose(Some(AUSTIN), 1000).unwrap().id, "us-east");
        assert!(r
            .choose(Some(FRANKFURT), 1000)
            .unwrap()
            .reason
            .contains("km away"));
    }

    #[test]
    fn stale_draining_and_full_sfus_are_skipped() {
        let mut r = registry();
        // eu-west stops heartbeating; the others carry on.
        r.heartbeat(hb("us-east", 39.04, -77.49), 5_000).unwrap();
        r.heartbeat(hb("ap-south", 1.35, 103.82), 5_000).unwrap();
        assert_eq!(r.choose(Some(FRANKFURT), 5_999).unwrap().id, "eu-west");
        assert_eq!(
            r.choose(Some(FRANKFURT), STALE_AFTER_MS).unwrap().id,
            "us-east"
        );
        let mut d = hb("us-east", 39.04, -77.49);
        d.draining = true;
        r.heartbeat(d, 6_000).unwrap();
        assert_eq!(r.choose(Some(FRANKFURT), 6_000).unwrap().id, "ap-south");
        let mut full = hb("ap-south", 1.35, 103.82);
        full.load.participants = 100;
        r.heartbeat(full, 6_000).unwrap();
        assert_eq!(
            r.choose(Some(FRANKFURT), 6_000),
            Err(RoutingError::NoHealthySfu)
        );
    }

    #[test]
    fn load_penalty_can_outweigh_a_short_distance() {
        let mut r = Registry::new();
        let mut near = hb("near", 50.0, 8.0);
        near.load.cpu = 0.95;
        r.heartbeat(near, 0).unwrap();
        r.heartbeat(hb("far", 48.85, 2.35), 0).unwrap(); // Paris, ~480 km from Frankfurt
        assert_eq!(r.choose(Some(FRANKFURT), 0).unwrap().id, "far");
    }

    #[test]
    fn unknown_location_picks_least_loaded() {
        let mut r = registry();
        let mut busy = hb("us-east", 39.04, -77.49);
        busy.load.participants = 50;
        r.heartbeat(busy, 0).unwrap();
        let c = r.choose(None, 0).unwrap();
        assert_ne!(c.id, "us-east");
        assert!(c.reason.contains("unknown"));
        // An invalid location counts as unknown.
        assert!(r
            .choose(
                Some(GeoPoint {
                    lat: 200.0,
                    lon: 0.0
                }),
                0
            )
            .unwrap()
            .distance_km
            .is_none());
    }

    #[test]
    fn bad_heartbeats_are_refused_and_change_nothing() {
        let mut r = registry();
        let before = r.status(0);
        let mut b = hb("Bad Id", 0.0, 0.0);
        assert_eq!(r.heartbeat(b.clone(), 0), Err(RegistryError::BadId));
        b.id = "ok".into();
        b.url = "ftp://x".into();
        assert_eq!(r.heartbeat(b.clone(), 0), Err(RegistryError::BadUrl));
        b.url = "http://x".into();
        b.location.lat = f64::NAN;
        assert_eq!(r.heartbeat(b.clone(), 0), Err(RegistryError::BadLocation));
        b.location.lat = 0.0;
        b.load.cpu = 2.0;
        assert_eq!(r.heartbeat(b, 0), Err(RegistryError::BadLoad));
        assert_eq!(r.status(0), before);
    }

    #[test]
    fn the_dev_location_override_is_honoured_only_when_allowed() {
        let cf = Some(AUSTIN);
        assert_eq!(
            client_location(cf, Some("50.1, 8.7"), true),
            Some(FRANKFURT)
        );
        assert_eq!(
            client_location(cf, Some("50.1,8.7"), false),
            cf,
            "a deployed worker ignores the header"
        );
        assert_eq!(client_location(cf, Some("garbage"), true), cf);
        assert_eq!(client_location(cf, Some("91,0"), true), cf);
        assert_eq!(client_location(None, None, true), None);
        assert_eq!(
            client_location(
                Some(GeoPoint {
                    lat: f64::NAN,
                    lon: 0.0
                }),
                None,
                false
            ),
            None
        );
    }

    #[test]
    fn long_silent_sfus_are_forgotten() {
        let mut r = registry();
        r.heartbeat(hb("us-east", 39.04, -77.49), FORGET_AFTER_MS)
            .unwrap();
        let ids: Vec<_> = r
            .status(FORGET_AFTER_MS)
            .into_iter()
            .map(|s| s.heartbeat.id)
            .collect();
        assert_eq!(ids, ["us-east"]);
    }
}
