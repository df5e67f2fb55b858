//! `cargo xtask impair` — a bad network for one UDP flow, inside a network namespace made for a test.
//!
//! This kernel has no `netem`, so impairment is built from what it has (checked in
//! `../shared/TOOLCHAIN.md`): random **loss** with iptables' `statistic` match, a total **outage**
//! with a plain DROP, a **rate** cap with an HTB class (and a short byte FIFO, a router's buffer) on
//! `lo`, and **delay/jitter** by holding packets in userspace: an iptables `NFQUEUE` rule hands
//! each matching packet to this process, which gives its verdict (accept) once the packet's delay is
//! up. Packets keep their order (jitter varies the delay, never reorders).
//!
//! The flow is picked by UDP port (`--sport`, `--dport`, or both), as the packets arrive (the
//! INPUT hook, so loss, outage and delay apply once per packet) and, for the rate cap, as they leave
//! (`lo`'s egress). The impairment lasts as long as the process: rules go in, "impairing: …" is
//! printed, and on SIGTERM/SIGINT or when stdin closes the rules come out again.
//!
//! It refuses to run anywhere but in a network namespace a test made (`edgemeet-…`): the
//! machine's own network is never touched.

use std::collections::VecDeque;
use std::io::Read;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::setup::{IPTABLES, TC};
use crate::step::{fail, Result};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Impairment {
    /// Match UDP packets from this port.
    #[arg(long)]
    pub sport: Option<u16>,
    /// Match UDP packets to this port.
    #[arg(long)]
    pub dport: Option<u16>,
    /// Drop this percentage of matching packets at random (0–100).
    #[arg(long)]
    pub loss: Option<f64>,
    /// Drop every matching packet (a total outage).
    #[arg(long)]
    pub outage: bool,
    /// Hold each matching packet this many milliseconds.
    #[arg(long)]
    pub delay: Option<u64>,
    /// Vary the delay by up to ± this many milliseconds (uniformly; order is kept).
    #[arg(long, default_value_t = 0)]
    pub jitter: u64,
    /// Cap matching packets to this many kbit/s (a 250 ms buffer; what does not fit is dropped).
    /// One rate cap at a time per namespace (it owns `lo`'s root qdisc).
    #[arg(long)]
    pub rate: Option<u64>,
}

/// The prefix of the namespaces the tests make (`ip netns add edgemeet-…`).
pub const NETNS_PREFIX: &str = "edgemeet-";

/// Refuses to run anywhere but in a namespace a test made (`/run/netns/edgemeet-…`): never in the
/// machine's own network.
fn in_test_namespace() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/net")
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let made = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(NETNS_PREFIX))
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| Some((m.dev(), m.ino())) == own);
    if made {
        Ok(())
    } else {
        Err(fail(
            "impair",
            "refusing to impair a network namespace no test made",
            format!("run it inside one (`ip netns add {NETNS_PREFIX}<name>`, then `ip netns exec {NETNS_PREFIX}<name> …`)"),
        ))
    }
}

fn sh(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| fail("impair", format!("{what}: {e}"), ""))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            "impair",
            format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            "",
        ))
    }
}

/// What was put in, so it can be taken out (also when setting up fails half-way).
struct Installed {
    chain: String,
    hooked: bool,
    tc: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let ipt = |args: &[&str]| {
            let _ = Command::new(IPTABLES).args(args).output();
        };
        if self.hooked {
            ipt(&["-D", "INPUT", "-j", &self.chain]);
        }
        ipt(&["-F", &self.chain]);
        ipt(&["-X", &self.chain]);
        if self.tc {
            let _ = Command::new(TC)
                .args(["qdisc", "del", "dev", "lo", "root"])
                .output();
        }
    }
}

/// Applies `imp` until `interrupted()` (SIGTERM/SIGINT, through xtask's handler) or stdin closes.
pub fn run(imp: &Impairment, interrupted: &dyn Fn() -> bool) -> Result<()> {
    in_test_namespace()?;
    if imp.sport.is_none() && imp.dport.is_none() {
        return Err(fail(
            "impair",
            "no flow named",
            "pass --sport and/or --dport",
        ));
    }
    if let Some(l) = imp.loss {
        if !(0.0..=100.0).contains(&l) {
            return Err(fail("impair", format!("loss {l} % is not 0–100"), ""));
        }
    }
    let mut matcher: Vec<String> = vec!["-p".into(), "udp".into()];
    if let Some(p) = imp.sport {
        matcher.extend(["--sport".into(), p.to_string()]);
    }
    if let Some(p) = imp.dport {
        matcher.extend(["--dport".into(), p.to_string()]);
    }
    let pid = std::process::id();
    let mut installed = Installed {
        chain: format!("EM-IMPAIR-{pid}"),
        hooked: false,
        tc: false,
    };
    let chain = installed.chain.clone();
    let rule = |extra: &[&str]| -> Result<()> {
        sh(
            "iptables",
            Command::new(IPTABLES)
                .args(["-A", &chain])
                .args(&matcher)
                .args(extra),
        )
    };
    sh("iptables", Command::new(IPTABLES).args(["-N", &chain]))?;
    if imp.outage {
        rule(&["-j", "DROP"])?;
    }
    if let Some(l) = imp.loss.filter(|l| *l > 0.0) {
        let p = format!("{:.4}", l / 100.0);
        rule(&[
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ])?;
    }
    // One queue per helper process, so two flows can be delayed at once.
    let queue = (pid % 60_000) as u16 + 1;
    let delayed = imp.delay.is_some_and(|d| d > 0) || imp.jitter > 0;
    let mut q = if delayed {
        let mut q = nfq::Queue::open().map_err(|e| fail("impair", format!("NFQUEUE: {e}"), ""))?;
        q.bind(queue)
            .map_err(|e| fail("impair", format!("NFQUEUE bind {queue}: {e}"), ""))?;
        let _ = q.set_queue_max_len(queue, 20_000);
        let _ = q.set_copy_range(queue, 64);
        q.set_nonblocking(true);
        let qs = queue.to_string();
        rule(&["-j", "NFQUEUE", "--queue-num", &qs, "--queue-bypass"])?;
        Some(q)
    } else {
        None
    };
    sh(
        "iptables",
        Command::new(IPTABLES).args(["-I", "INPUT", "-j", &chain]),
    )?;
    installed.hooked = true;
    if let Some(kbit) = imp.rate {
        installed.tc = true;
        // Everything else on lo goes through an uncapped class; the flow through a capped one with
        // a 250 ms byte FIFO (at least three full packets).
        let limit = ((kbit * 1000 / 8) / 4).max(4500);
        let tc = |args: &[&str]| sh("tc", Command::new(TC).args(args));
        tc(&[
            "qdisc", "replace", "dev", "lo", "root", "handle", "1:", "htb", "default", "10", "r2q",
            "1000",
        ])?;
        tc(&[
            "class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate",
            "10gbit", "quantum", "60000",
        ])?;
        tc(&[
            "class",
            "add",
            "dev",
            "lo",
            "parent",
            "1:",
            "classid",
            "1:20",
            "htb",
            "rate",
            &format!("{kbit}kbit"),
            "ceil",
            &format!("{kbit}kbit"),
            "burst",
            "4kb",
            "quantum",
            "1500",
        ])?;
        tc(&[
            "qdisc",
            "add",
            "dev",
            "lo",
            "parent",
            "1:20",
            "handle",
            "20:",
            "bfifo",
            "limit",
            &limit.to_string(),
        ])?;
        let mut f: Vec<String> =
            "filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff"
                .split(' ')
                .map(String::from)
                .collect();
        if let Some(p) = imp.sport {
            f.extend(["match", "ip", "sport", &p.to_string(), "0xffff"].map(String::from));
        }
        if let Some(p) = imp.dport {
            f.extend(["match", "ip", "dport", &p.to_string(), "0xffff"].map(String::from));
        }
        f.extend(["flowid", "1:20"].map(String::from));
        sh("tc", Command::new(TC).args(&f))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        // Stdin closing (the test that started us went away) ends the impairment too.
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while !matches!(stdin.read(&mut buf), Ok(0) | Err(_)) {}
            stop.store(true, Ordering::SeqCst);
        });
    }
    println!(
        "impairing: udp{}{}{}{}{}{}",
        imp.sport
            .map(|p| format!(" from port {p}"))
            .unwrap_or_default(),
        imp.dport
            .map(|p| format!(" to port {p}"))
            .unwrap_or_default(),
        if imp.outage { ", outage" } else { "" },
        imp.loss
            .map(|l| format!(", {l} % loss"))
            .unwrap_or_default(),
        if delayed {
            format!(", {} ± {} ms delay", imp.delay.unwrap_or(0), imp.jitter)
        } else {
            String::new()
        },
        imp.rate
            .map(|r| format!(", {r} kbit/s"))
            .unwrap_or_default(),
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut rng = Lcg(u64::from(pid) | 1);
    let mut passed = 0u64;
    while !stop.load(Ordering::SeqCst) && !interrupted() {
        let Some(q) = q.as_mut() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let now = Instant::now();
        loop {
            match q.recv() {
                Ok(mut msg) => {
                    msg.set_verdict(nfq::Verdict::Accept);
                    let base = imp.delay.unwrap_or(0) as i64;
                    let j = imp.jitter as i64;
                    let ms = if j > 0 {
                        base + (rng.next() % (2 * j as u64 + 1)) as i64 - j
                    } else {
                        base
                    }
                    .max(0) as u64;
                    let mut at = now + Duration::from_millis(ms);
                    if let Some((last, _)) = held.back() {
                        at = at.max(*last);
                    }
                    held.push_back((at, msg));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    eprintln!("impair: NFQUEUE receive: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(at, _)| *at <= now) {
            let (_, msg) = held.pop_front().expect("front checked");
            if let Err(e) = q.verdict(msg) {
                eprintln!("impair: NFQUEUE verdict: {e}");
            }
            passed += 1;
        }
        let wait = held
            .front()
            .map(|(at, _)| at.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(1))
            .min(Duration::from_millis(1));
        std::thread::sleep(wait);
    }
    // Rules out first (nothing new is queued), then every packet held or still queued goes:
    // the queue closing would drop them.
    drop(installed);
    if let Some(q) = q.as_mut() {
        while let Ok(mut msg) = q.recv() {
            msg.set_verdict(nfq::Verdict::Accept);
            held.push_back((Instant::now(), msg));
        }
        for (_, msg) in held.drain(..) {
            let _ = q.verdict(msg);
        }
    }
    if delayed {
        eprintln!("impair: {passed} packets delayed");
    }
    Ok(())
}

/// A small xorshift-style generator for jitter (no need for a crate: not security-relevant).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
