//! The local stack: the edge under `wrangler dev` (workerd, local Durable Objects) serving the client,
//! and one SFU process per dev region. Each child runs in its own process group, so stopping the
//! stack (Ctrl-C, a failed test, a panic) leaves nothing running.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgemeet_shared::region::DEV_REGIONS;

use crate::secrets::DevSecrets;
use crate::setup::{Paths, TURNSERVER};
use crate::step::{fail, note, Result};

/// The address the SFUs' media sockets use: the only peer coturn relays to.
pub const SFU_MEDIA_IP: &str = "127.0.0.2";

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub edge_port: u16,
    pub inspector_port: u16,
    pub sfu_ports: [u16; 3],
    /// First UDP media port; each SFU gets 100 from here.
    pub udp_base: u16,
    /// coturn's listening port (UDP and TCP); its relay ports are the 100 after `udp_base + 300`.
    pub turn_port: u16,
    /// Print children's output to the terminal (dev) or only to log files (test).
    pub echo: bool,
    pub name: &'static str,
    /// Start an SFU again when it exits (failover tests kill one with SIGKILL, and the tests after
    /// them expect every region back; in dev, a crashed or killed SFU comes back too).
    pub restart_sfus: bool,
}

impl StackConfig {
    pub fn dev() -> StackConfig {
        StackConfig {
            edge_port: 8787,
            inspector_port: 9229,
            sfu_ports: [7101, 7102, 7103],
            udp_base: 40_000,
            turn_port: 3478,
            echo: true,
            name: "dev",
            // Try `kill -9` on an SFU: the call moves, and the SFU comes back.
            restart_sfus: true,
        }
    }

    /// Free ports, so tests run beside a dev stack.
    pub fn test() -> StackConfig {
        StackConfig {
            edge_port: free_port(),
            inspector_port: free_port(),
            sfu_ports: [free_port(), free_port(), free_port()],
            udp_base: TEST_UDP_BASE,
            turn_port: free_port(),
            echo: false,
            name: "test",
            restart_sfus: true,
        }
    }
}

/// Test stacks' ports sit below the kernel's ephemeral range (32768–60999 by default): a port
/// picked from inside it is free only until something else asks the kernel for "any port" — an
/// outgoing connection, or wrangler, which picks its own servers' ports that way while it starts,
/// long before the SFUs bind theirs (a CI run lost an SFU so: "Address already in use" on every
/// restart). The media and relay ports are the 400 from [`TEST_UDP_BASE`]; TCP ports come after.
const TEST_UDP_BASE: u16 = 20_000;
const TEST_TCP_PORTS: std::ops::Range<u16> = 20_500..32_000;

/// A port free on 127.0.0.1 for TCP and UDP now, outside the ephemeral range, and never handed out
/// twice by this process (three SFUs, the edge and coturn each need their own).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u16>().ok())
        })
        .unwrap_or(32_768);
    let (lo, hi) = (TEST_TCP_PORTS.start, TEST_TCP_PORTS.end.min(ephemeral_low));
    if hi <= lo {
        // A machine whose ephemeral range starts this low: let the kernel pick, as before.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
    }
    let span = u32::from(hi - lo);
    // Two test processes at once (a dev stack beside tests has fixed ports) start apart.
    let next = NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        AtomicU32::new(std::process::id().wrapping_mul(7_919).wrapping_add(nanos) % span)
    });
    for _ in 0..span {
        let port = lo + (next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    0
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

pub struct Stack {
    procs: Vec<Proc>,
    pub url: String,
    pub log_dir: PathBuf,
    /// The edge's cron, as the platform would run it (see [`Stack::run_cron`]); false stops it.
    cron: Arc<AtomicBool>,
}

impl Stack {
    pub fn start(
        paths: &Paths,
        sfu_bin: &Path,
        secrets: &DevSecrets,
        cfg: &StackConfig,
    ) -> Result<Stack> {
        let log_dir = paths.target().join("edgemeet-logs").join(cfg.name);
        std::fs::create_dir_all(&log_dir).map_err(|e| fail("start stack", e.to_string(), ""))?;
        let url = format!("http://127.0.0.1:{}", cfg.edge_port);
        let mut stack = Stack {
            procs: Vec::new(),
            url: url.clone(),
            log_dir: log_dir.clone(),
            cron: Arc::new(AtomicBool::new(true)),
        };

        // TURN first: the edge hands out its URLs.
        let relay = cfg.udp_base + 300;
        let mut turn = Command::new(TURNSERVER);
        turn.args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--fingerprint",
            "--simple-log",
            "--log-file=stdout",
        ])
        .arg("--listening-ip=127.0.0.1")
        .arg(format!("--listening-port={}", cfg.turn_port))
        .arg("--relay-ip=127.0.0.1")
        .arg(format!("--min-port={relay}"))
        .arg(format!("--max-port={}", relay + 99))
        .args(["--realm=edgemeet", "--use-auth-secret"])
        .arg(format!("--static-auth-secret={}", secrets.turn_secret))
        // An allocation lives at most 10 min unless refreshed (browsers refresh theirs): the
        // short-lived credentials a connection check hands out cannot hold a relay port for an
        // hour (coturn's default maximum).
        .arg("--max-allocate-lifetime=600")
        // Relay to the SFUs' media only (they send and receive on 127.0.0.2 here, everything
        // else listens on 127.0.0.1): every other peer address — the edge, coturn itself,
        // loopback and private ranges — is refused (the TURN-as-SSRF-proxy class of bug).
        .args(["--allow-loopback-peers", "--no-multicast-peers"])
        .args([
            "--denied-peer-ip=0.0.0.0-255.255.255.255",
            "--denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ])
        .arg(format!("--allowed-peer-ip={SFU_MEDIA_IP}"))
        .arg(format!(
            "--pidfile={}",
            log_dir.join("turnserver.pid").display()
        ));
        stack.spawn("turn", turn, cfg.echo)?;
        let turn_urls = format!(
            "turn:127.0.0.1:{0}?transport=udp,turn:127.0.0.1:{0}?transport=tcp",
            cfg.turn_port
        );

        // The local D1 (accounts) gets every migration in edge/migrations first.
        let persist = paths.target().join("wrangler-state").join(cfg.name);
        crate::cmd::run(
            "D1 migrations (local)",
            Command::new(paths.node22())
                .arg(paths.wrangler_js())
                .args(["d1", "migrations", "apply", "DB", "--local", "--persist-to"])
                .arg(&persist)
                .current_dir(paths.root.join("edge"))
                .env("CI", "true") // no confirmation prompt
                .env("WRANGLER_SEND_METRICS", "false")
                .env("WRANGLER_LOG_PATH", log_dir.join("wrangler-debug"))
                .env("PATH", crate::cmd::path_with(&[&paths.node22_dir()])),
            "read the SQL error above: a migration in edge/migrations does not apply",
        )?;

        let mut wrangler = Command::new(paths.node22());
        wrangler
            .arg(paths.wrangler_js())
            .args([
                "dev",
                "--local",
                "--ip",
                "127.0.0.1",
                "--port",
                &cfg.edge_port.to_string(),
            ])
            .args([
                "--inspector-port",
                &cfg.inspector_port.to_string(),
                "--show-interactive-dev-session=false",
            ])
            // Dev/test only: lets requests fake their location (x-edgemeet-dev-location); a deployed
            // worker has no such var and ignores the header.
            .args(["--var", "DEV_OVERRIDES:true"])
            // wrangler dev never runs the cron triggers itself: `/cdn-cgi/handler/scheduled` runs
            // the scheduled handler, which `run_cron` calls every minute (and tests when they need
            // it now).
            .arg("--test-scheduled")
            .args(["--var", &format!("TURN_URLS:{turn_urls}")])
            .arg("--persist-to")
            .arg(&persist)
            .current_dir(paths.root.join("edge"))
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_LOG_PATH", log_dir.join("wrangler-debug"))
            .env("PATH", crate::cmd::path_with(&[&paths.node22_dir()]));
        stack.spawn("edge", wrangler, cfg.echo)?;
        // SFUs heartbeat from their first second: start them once the edge answers.
        stack.wait_for_edge(Duration::from_secs(90))?;
        stack.run_cron();

        for (i, (id, region, lat, lon)) in DEV_REGIONS.iter().enumerate() {
            let port = cfg.sfu_ports[i];
            let udp = cfg.udp_base + 100 * i as u16;
            let mut sfu = if cfg.restart_sfus {
                // A shell loop in the SFU's process group: stopping the stack signals both. The
                // 3 s pause makes a killed SFU look dead for a while (rooms move), then it is back.
                let mut c = Command::new("sh");
                c.args(["-c", "while :; do \"$0\" \"$@\"; sleep 3; done"])
                    .arg(sfu_bin);
                c
            } else {
                Command::new(sfu_bin)
            };
            sfu.args(["--id", id, "--region", region])
                .args([
                    "--latitude",
                    &lat.to_string(),
                    "--longitude",
                    &lon.to_string(),
                ])
                .args(["--listen", &format!("127.0.0.1:{port}"), "--edge-url", &url])
                .args(["--media-ip", SFU_MEDIA_IP])
                .args([
                    "--udp-port-min",
                    &udp.to_string(),
                    "--udp-port-max",
                    &(udp + 99).to_string(),
                ])
                .env("EDGEMEET_SFU_CONTROL_SECRET", &secrets.control_secret);
            stack.spawn(id, sfu, cfg.echo)?;
        }
        Ok(stack)
    }

    fn spawn(&mut self, name: &str, mut cmd: Command, echo: bool) -> Result<()> {
        let log = self.log_dir.join(format!("{name}.log"));
        let file = Arc::new(Mutex::new(File::create(&log).map_err(|e| {
            fail(
                "start stack",
                format!("cannot create {}: {e}", log.display()),
                "",
            )
        })?));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            fail(
                "start stack",
                format!("cannot start {name}: {e}"),
                "run `cargo xtask setup`",
            )
        })?;
        let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for pipe in pipes {
            let (file, name) = (file.clone(), name.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                    // Every SFU heartbeats every 2 s: keep those request lines in the log file only.
                    if echo && !line.contains("/api/sfu/heartbeat 204") {
                        eprintln!("\x1b[2m[{name}]\x1b[0m {line}");
                    }
                    let _ = writeln!(file.lock().expect("log lock"), "{line}");
                }
            });
        }
        note(format!(
            "started {name} (pid {}, log {})",
            child.id(),
            log.display()
        ));
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    /// The first child that has exited, with its status.
    pub fn exited(&mut self) -> Option<(String, String)> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some((
                    p.name.clone(),
                    format!(
                        "{status}\n--- last lines of {} ---\n{}",
                        p.log.display(),
                        tail(&p.log, 25)
                    ),
                ));
            }
        }
        None
    }

    /// Waits until the edge answers HTTP at all.
    fn wait_for_edge(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((name, status)) = self.exited() {
                return Err(fail(
                    "start stack",
                    format!("{name} exited early: {status}"),
                    "see its log above",
                ));
            }
            if std::net::TcpStream::connect(self.url.trim_start_matches("http://")).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(fail(
                    "start stack",
                    format!("the edge did not listen within {} s", timeout.as_secs()),
                    "see the edge log",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the edge answers and lists every dev region's SFU as live.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let mut last: String;
        loop {
            if let Some((name, status)) = self.exited() {
                return Err(fail(
                    "start stack",
                    format!("{name} exited early: {status}"),
                    "see its log above",
                ));
            }
            match agent.get(&format!("{}/api/health", self.url)).call() {
                Ok(mut res) => match res.body_mut().read_json::<serde_json::Value>() {
                    Ok(h) if h["live_sfus"].as_u64() == Some(DEV_REGIONS.len() as u64) => {
                        return Ok(h)
                    }
                    Ok(h) => {
                        last = format!("{} of {} SFUs live", h["live_sfus"], DEV_REGIONS.len())
                    }
                    Err(e) => last = format!("health is not JSON: {e}"),
                },
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("--- {} ---\n{}", p.log.display(), tail(&p.log, 15)))
                    .collect();
                return Err(fail(
                    "start stack",
                    format!(
                        "not ready after {} s: {last}\n{}",
                        timeout.as_secs(),
                        logs.join("\n")
                    ),
                    "see the logs above",
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the edge's scheduled handler (`[triggers] crons` in wrangler.toml: every minute) the
    /// way the platform does once deployed, at the start of every minute, until the stack stops.
    fn run_cron(&self) {
        let (on, url) = (
            self.cron.clone(),
            format!("{}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*", self.url),
        );
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            while on.load(Ordering::SeqCst) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                // To the next whole minute, in steps short enough to stop soon.
                let mut wait = 60_000 - (now.as_millis() % 60_000) as u64;
                while wait > 0 && on.load(Ordering::SeqCst) {
                    let step = wait.min(500);
                    std::thread::sleep(Duration::from_millis(step));
                    wait -= step;
                }
                if on.load(Ordering::SeqCst) {
                    let _ = agent.get(&url).call();
                }
            }
        });
    }

    /// Stops every child, last started first (SFUs tell the edge they are draining before it goes):
    /// SIGTERM to its process group, SIGKILL after 5 s, and SIGKILL to whatever is left in the group.
    pub fn stop(&mut self) {
        self.cron.store(false, Ordering::SeqCst);
        for p in self.procs.iter_mut().rev() {
            let group = -(p.child.id() as i32);
            unsafe { libc::kill(group, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // workerd and other grandchildren share the group: make sure none is left.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = p.child.wait();
        }
        self.procs.clear();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
