//! SFU configuration: a TOML file (optional), overridden by flags and `EDGEMEET_SFU_*` environment
//! variables, validated into a [`Config`] with errors that say what to change.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use edgemeet_shared::region::GeoPoint;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("`{0}` is required (set it in the config file, as --{1} or as EDGEMEET_SFU_{2})")]
    Missing(&'static str, &'static str, &'static str),
    #[error("id '{0}' must be 1-64 characters of a-z, 0-9, '-', '_'")]
    BadId(String),
    #[error("latitude {0} is outside -90..90")]
    BadLatitude(f64),
    #[error("longitude {0} is outside -180..180")]
    BadLongitude(f64),
    #[error("public_url '{0}' must start with http:// or https://")]
    BadPublicUrl(String),
    #[error("edge_url '{0}' must start with http:// or https://")]
    BadEdgeUrl(String),
    #[error("UDP port range {0}-{1} is empty or includes port 0")]
    BadPortRange(u16, u16),
    #[error("capacity must be at least 1")]
    BadCapacity,
    #[error("control secret must be at least 32 bytes (it is {0})")]
    WeakSecret(usize),
    #[error("media_ip {0} is not an address browsers can reach: set media_ip (--media-ip) to this SFU's public address")]
    UnspecifiedMediaIp(IpAddr),
}

/// Flags and environment. Every field is optional here; [`load`] merges them over the file.
#[derive(Debug, Default, Parser)]
#[command(name = "edgemeet-sfu", version, about = "edgemeet regional SFU")]
pub struct Args {
    /// TOML config file; flags and environment override what it says.
    #[arg(long, env = "EDGEMEET_SFU_CONFIG")]
    pub config: Option<PathBuf>,
    /// SFU id, unique across the deployment (e.g. eu-west-1).
    #[arg(long, env = "EDGEMEET_SFU_ID")]
    pub id: Option<String>,
    /// Region name reported to the edge (e.g. eu-west).
    #[arg(long, env = "EDGEMEET_SFU_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "EDGEMEET_SFU_LATITUDE", allow_hyphen_values = true)]
    pub latitude: Option<f64>,
    #[arg(long, env = "EDGEMEET_SFU_LONGITUDE", allow_hyphen_values = true)]
    pub longitude: Option<f64>,
    /// Address the HTTP control API listens on.
    #[arg(long, env = "EDGEMEET_SFU_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// URL the edge uses to reach this SFU's control API.
    #[arg(long, env = "EDGEMEET_SFU_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// IP address announced in ICE candidates for media.
    #[arg(long, env = "EDGEMEET_SFU_MEDIA_IP")]
    pub media_ip: Option<IpAddr>,
    #[arg(long, env = "EDGEMEET_SFU_UDP_PORT_MIN")]
    pub udp_port_min: Option<u16>,
    #[arg(long, env = "EDGEMEET_SFU_UDP_PORT_MAX")]
    pub udp_port_max: Option<u16>,
    /// Most participants this SFU accepts.
    #[arg(long, env = "EDGEMEET_SFU_CAPACITY")]
    pub capacity: Option<u32>,
    /// Base URL of the edge to heartbeat to; none means run standalone.
    #[arg(long, env = "EDGEMEET_SFU_EDGE_URL")]
    pub edge_url: Option<String>,
    /// Secret shared with the edge for signed control requests.
    #[arg(long, env = "EDGEMEET_SFU_CONTROL_SECRET", hide_env_values = true)]
    pub control_secret: Option<String>,
    /// Which media engine forwards packets (see ARCHITECTURE.md): `sans` (sans-IO sessions on one
    /// worker thread, the default) or `async` (webrtc-rs's async PeerConnections, the engine
    /// before it).
    #[arg(long, env = "EDGEMEET_SFU_ENGINE", value_enum)]
    pub engine: Option<EngineKind>,
    /// Where recordings are written while they run (default: `edgemeet-recordings/{id}` in the
    /// system's temporary directory).
    #[arg(long, env = "EDGEMEET_SFU_RECORD_DIR")]
    pub record_dir: Option<PathBuf>,
}

/// The media engine (see [`Args::engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Async,
    #[default]
    Sans,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<String>,
    region: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    media_ip: Option<IpAddr>,
    udp_port_min: Option<u16>,
    udp_port_max: Option<u16>,
    capacity: Option<u32>,
    edge_url: Option<String>,
    control_secret: Option<String>,
    engine: Option<EngineKind>,
    record_dir: Option<PathBuf>,
}

#[derive(Clone, PartialEq)]
pub struct Config {
    pub id: String,
    pub region: String,
    pub location: GeoPoint,
    pub listen: SocketAddr,
    pub public_url: String,
    pub media_ip: IpAddr,
    pub udp_ports: (u16, u16),
    pub capacity: u32,
    pub edge_url: Option<String>,
    pub control_secret: String,
    pub engine: EngineKind,
    pub record_dir: PathBuf,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("region", &self.region)
            .field("location", &self.location)
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("media_ip", &self.media_ip)
            .field("udp_ports", &self.udp_ports)
            .field("capacity", &self.capacity)
            .field("edge_url", &self.edge_url)
            .field("control_secret", &"<redacted>")
            .field("engine", &self.engine)
            .field("record_dir", &self.record_dir)
            .finish()
    }
}

/// Reads the file named by `args.config` (if any) and merges `args` over it.
pub fn load(args: Args) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.clone(),
                source,
            })?
        }
        None => FileConfig::default(),
    };
    merge(args, file)
}

fn merge(a: Args, f: FileConfig) -> Result<Config, ConfigError> {
    let id =
        a.id.or(f.id)
            .ok_or(ConfigError::Missing("id", "id", "ID"))?;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(ConfigError::BadId(id));
    }
    let region = a
        .region
        .or(f.region)
        .ok_or(ConfigError::Missing("region", "region", "REGION"))?;
    let lat = a
        .latitude
        .or(f.latitude)
        .ok_or(ConfigError::Missing("latitude", "latitude", "LATITUDE"))?;
    let lon = a.longitude.or(f.longitude).ok_or(ConfigError::Missing(
        "longitude",
        "longitude",
        "LONGITUDE",
    ))?;
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(ConfigError::BadLatitude(lat));
    }
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(ConfigError::BadLongitude(lon));
    }
    let listen = a
        .listen
        .or(f.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7000)));
    let public_url = a
        .public_url
        .or(f.public_url)
        .unwrap_or_else(|| format!("http://{listen}"));
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        return Err(ConfigError::BadPublicUrl(public_url));
    }
    let media_ip = a.media_ip.or(f.media_ip).unwrap_or(listen.ip());
    let engine = a.engine.or(f.engine).unwrap_or_default();
    // The sans-IO engine announces exactly this address in its ICE candidates (the async one
    // gathered every interface's when it was unspecified).
    if media_ip.is_unspecified() && engine == EngineKind::Sans {
        return Err(ConfigError::UnspecifiedMediaIp(media_ip));
    }
    let lo = a.udp_port_min.or(f.udp_port_min).unwrap_or(40_000);
    let hi = a.udp_port_max.or(f.udp_port_max).unwrap_or(40_999);
    if lo == 0 || lo > hi {
        return Err(ConfigError::BadPortRange(lo, hi));
    }
    let capacity = a.capacity.or(f.capacity).unwrap_or(500);
    if capacity == 0 {
        return Err(ConfigError::BadCapacity);
    }
    let edge_url = a
        .edge_url
        .or(f.edge_url)
        .map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &edge_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(ConfigError::BadEdgeUrl(u.clone()));
        }
    }
    let control_secret = a
        .control_secret
        .or(f.control_secret)
        .ok_or(ConfigError::Missing(
            "control_secret",
            "control-secret",
            "CONTROL_SECRET",
        ))?;
    if control_secret.len() < 32 {
        return Err(ConfigError::WeakSecret(control_secret.len()));
    }
    // One directory per SFU: two on one machine never take each other's leftovers.
    let record_dir = a
        .record_dir
        .or(f.record_dir)
        .unwrap_or_else(|| std::env::temp_dir().join("edgemeet-recordings").join(&id));
    Ok(Config {
        id,
        region,
        location: GeoPoint { lat, lon },
        listen,
        public_url: public_url.trim_end_matches('/').to_string(),
        media_ip,
        udp_ports: (lo, hi),
        capacity,
        edge_url,
        control_secret,
        engine,
        record_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn args() -> Args {
        Args {
            id: Some("eu-west".into()),
            region: Some("eu-west".into()),
            latitude: Some(50.1),
            longitude: Some(8.7),
            control_secret: Some(SECRET.into()),
            ..Args::default()
        }
    }

    #[test]
    fn the_example_config_reads() {
        let f: FileConfig = toml::from_str(include_str!("../sfu.example.toml")).unwrap();
        let c = merge(
            Args {
                control_secret: Some(SECRET.into()),
                ..Args::default()
            },
            f,
        )
        .unwrap();
        assert_eq!(c.id, "eu-west-1");
        assert_eq!(
            c.record_dir,
            PathBuf::from("/var/lib/edgemeet-sfu/recordings")
        );
        // Without it: a directory of this SFU's own.
        let c = merge(args(), FileConfig::default()).unwrap();
        assert!(c.record_dir.ends_with("edgemeet-recordings/eu-west"));
    }

    #[test]
    fn defaults_fill_the_rest() {
        let c = merge(args(), FileConfig::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.public_url, "http://127.0.0.1:7000");
        assert_eq!(c.udp_ports, (40_000, 40_999));
        assert_eq!(c.engine, EngineKind::Sans);
        assert!(
            !format!("{c:?}").contains(SECRET),
            "secret must not be logged"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig = toml::from_str("id = \"file-id\"\nregion = \"x\"\nlatitude = 1.0\nlongitude = 2.0\ncapacity = 7\ncontrol_secret = \"0123456789abcdef0123456789abcdef\"").unwrap();
        let c = merge(
            Args {
                id: Some("flag-id".into()),
                ..Args::default()
            },
            file,
        )
        .unwrap();
        assert_eq!(c.id, "flag-id");
        assert_eq!(c.capacity, 7);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("idd = \"x\"").is_err());
    }

    #[test]
    fn invalid_values_say_what_is_wrong() {
        let cases: Vec<(Args, &str)> = vec![
            (Args { id: None, ..args() }, "`id` is required"),
            (
                Args {
                    id: Some("Bad Id".into()),
                    ..args()
                },
                "id 'Bad Id'",
            ),
            (
                Args {
                    latitude: Some(91.0),
                    ..args()
                },
                "latitude 91",
            ),
            (
                Args {
                    longitude: Some(-181.0),
                    ..args()
                },
                "longitude -181",
            ),
            (
                Args {
                    public_url: Some("ftp://x".into()),
                    ..args()
                },
                "public_url",
            ),
            (
                Args {
                    edge_url: Some("localhost:8787".into()),
                    ..args()
                },
                "edge_url",
            ),
            (
                Args {
                    udp_port_min: Some(50_000),
                    udp_port_max: Some(40_000),
                    ..args()
                },
                "port range",
            ),
            (
                Args {
                    capacity: Some(0),
                    ..args()
                },
                "capacity",
            ),
            (
                Args {
                    listen: Some("0.0.0.0:7000".parse().unwrap()),
                    ..args()
                },
                "media_ip 0.0.0.0",
            ),
            (
                Args {
                    control_secret: Some("short".into()),
                    ..args()
                },
                "at least 32 bytes",
            ),
        ];
        for (a, want) in cases {
            let e = merge(a, FileConfig::default()).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }
}
