//! `cargo xtask` — edgemeet's own tooling. Every command installs what is missing first.
//!
//! - `cargo xtask dev`   — build everything, start edge + client + 3 SFUs on 127.0.0.1, print the URL
//! - `cargo xtask test`  — every test: unit, SFU integration, wasm builds, edge in workerd, Playwright
//! - `cargo xtask setup` — only install the toolchain pieces
//! - `cargo xtask build` — only build
//! - `cargo xtask deploy`— build and `wrangler deploy` the edge (needs a Cloudflare account)
//! - `cargo xtask bench` — print performance figures (not pass/fail): forwarding core, join time,
//!   failover and drain times, bad networks, fuzzing
//! - `cargo xtask soak`  — a 30-minute call with churn and an SFU kill: memory drift, longest freeze
//! - `cargo xtask load`  — the SFU under P publishers × S subscribers (`load/`): CPU per forwarded
//!   packet, streams per core, loss, latency, memory per participant

mod build;
mod cmd;
mod fuzz;
mod impair;
mod netns;
mod secrets;
mod setup;
mod stack;
mod step;

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::setup::{setup, Needs, Tools};
use crate::stack::{Stack, StackConfig};
use crate::step::{fail, note, step, Result};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "edgemeet's build, dev and test commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (wasm32 target, trunk, wasm-bindgen-cli, worker-build, npm tools, Chromium).
    Setup,
    /// Build client, edge and SFU.
    Build,
    /// Start the whole stack on 127.0.0.1 and print the URL; Ctrl-C stops everything.
    Dev {
        /// Port for the edge (and the app).
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// Run the debug SFU build (the one `cargo test` makes) instead of the optimised one:
        /// starts sooner on a fresh checkout, forwards at a fraction of the speed.
        #[arg(long)]
        fast: bool,
    },
    /// Run every test.
    Test {
        /// Only the bad-network tests (Chromium in a network namespace of their own, with loss,
        /// delay, an outage and a rate cap); needs root.
        #[arg(long)]
        network_only: bool,
    },
    /// Build and deploy the edge worker with wrangler (requires `wrangler login`).
    Deploy,
    /// Print performance figures (SFU forwarding core); not pass/fail.
    Bench,
    /// Build the libFuzzer targets (fuzz/) and run each for a while; fails on any finding.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        secs: u64,
        /// Targets to run (all when none is named).
        targets: Vec<String>,
    },
    /// A long call with churn and an SFU kill halfway: prints memory drift, failures and the
    /// longest freeze (not pass/fail).
    Soak {
        /// How long the call lasts.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// The SFU binary under load (webrtc-rs peers on 127.0.0.1, SFU pinned to one core, the load
    /// to the other): prints CPU µs per forwarded packet, streams per core, loss, latency and
    /// memory per participant for each point (not pass/fail).
    Load {
        /// One point (1x50) with a short window.
        #[arg(long)]
        quick: bool,
        /// Only the machine's floor (the CPU one loopback UDP send costs).
        #[arg(long)]
        floor: bool,
        /// Seconds measured per point.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Runs of each point (the median µs per packet is printed too).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Run in a network namespace of its own whose loopback hands what it receives to the
        /// load tool's core (RPS), so the SFU's CPU no longer includes the subscribers' receiving
        /// kernel path (nor its own ingress: that moves too) (needs root).
        #[arg(long)]
        rps: bool,
        /// SRTP profile the load peers offer: `chrome` (AES-CM + HMAC-SHA1-80, the default, as
        /// Chromium) or `gcm` (AES-GCM).
        #[arg(long)]
        srtp: Option<String>,
        /// Record every room while measuring (compare with the same point without: the SFU's CPU
        /// per recorded track).
        #[arg(long)]
        record: bool,
        /// Let the SFU's sends wake the load's subscriber thread, as before (it waits in a
        /// blocking read): on loopback the SFU is then charged for waking a sleeping receiver,
        /// which a network never bills the sender for. By default that thread drains its socket
        /// and sleeps on its own 0.2 ms timer.
        #[arg(long)]
        wake_receivers: bool,
        /// Keep the SFU's core out of idle while measuring (a spinning thread at SCHED_IDLE on
        /// it, not counted as the SFU's CPU): a vCPU that halts between the SFU's turns wakes
        /// cold; a fully used core, which streams/cpu extrapolates to, never halts.
        #[arg(long)]
        busy_core: bool,
        /// Measure this tree's SFU side by side with another SFU binary (say a build of the
        /// commit before): each run starts two load tools at once, both SFUs on core 0 and both
        /// tools on core 1, so the machine's speed of the moment (a shared VM's runs differ by
        /// ±15 %) is the same for both and cancels out of their ratio. Prints each run's µs per
        /// packet for both and their ratio, then each point's median ratio. Only for points whose
        /// two load tools fit core 1 together (about 1x100 and smaller).
        #[arg(long, value_name = "SFU_BINARY")]
        against: Option<std::path::PathBuf>,
        /// Points: PxS (P publishers, S subscribers in one room), PxS@R (R rooms), +sim
        /// (simulcast with tile sizes). Default: 1x10 1x50 1x100 4x50 10x0@2+sim 1x300.
        points: Vec<String>,
    },
    /// Impair one UDP flow (loss, delay, rate cap, outage) until stopped; only inside a network
    /// namespace made for a test (the bad-network tests use it).
    Impair(impair::Impairment),
}

/// Set by Ctrl-C / SIGTERM while a stack is up; without a stack, the signal ends xtask at once.
static STOP: AtomicBool = AtomicBool::new(false);
static STACK_UP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let _ = ctrlc::set_handler(|| {
        if STACK_UP.load(Ordering::SeqCst) {
            STOP.store(true, Ordering::SeqCst);
        } else {
            eprintln!("\ninterrupted");
            std::process::exit(130);
        }
    });
    let started = Instant::now();
    let result = match Cli::parse().command {
        Cmd::Setup => setup(Needs { browser: true }).map(|_| ()),
        Cmd::Build => setup(Needs { browser: false })
            .and_then(|t| build::build_all(&t, build::SfuBuild::Optimised).map(|_| ())),
        Cmd::Dev { port, fast } => dev(port, fast),
        Cmd::Test { network_only } => {
            if network_only {
                network_only_test()
            } else {
                test()
            }
        }
        Cmd::Deploy => deploy(),
        Cmd::Bench => bench(),
        Cmd::Fuzz { secs, targets } => fuzz_cmd(secs, &targets),
        Cmd::Soak { minutes } => soak(minutes),
        Cmd::Load {
            quick,
            floor,
            secs,
            runs,
            rps,
            srtp,
            record,
            wake_receivers,
            busy_core,
            against,
            points,
        } => load(
            LoadOpts {
                quick,
                floor,
                secs,
                runs,
                rps,
                record,
                wake_receivers,
                busy_core,
                against,
            },
            srtp.as_deref(),
            &points,
        ),
        Cmd::Impair(imp) => {
            // Ctrl-C / SIGTERM end the impairment cleanly (its rules come out).
            STACK_UP.store(true, Ordering::SeqCst);
            impair::run(&imp, &|| STOP.load(Ordering::SeqCst))
        }
    };
    match result {
        Ok(()) => {
            eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\n\x1b[31merror:\x1b[0m {e}");
            ExitCode::FAILURE
        }
    }
}

fn fuzz_cmd(secs: u64, names: &[String]) -> Result<()> {
    let tools = setup(Needs { browser: false })?;
    let targets: Vec<&'static str> = if names.is_empty() {
        fuzz::TARGETS.to_vec()
    } else {
        let mut v = Vec::new();
        for n in names {
            let t = fuzz::TARGETS
                .iter()
                .find(|t| **t == n.as_str())
                .ok_or_else(|| {
                    fail(
                        "fuzz",
                        format!("no fuzz target {n}"),
                        format!("targets: {}", fuzz::TARGETS.join(", ")),
                    )
                })?;
            v.push(*t);
        }
        v
    };
    step("fuzz", || fuzz::fuzz(&tools.paths, &targets, secs)).map(|_| ())
}

fn start_stack(tools: &Tools, sfu_bin: &std::path::Path, cfg: &StackConfig) -> Result<Stack> {
    let secrets = secrets::dev_vars(&tools.paths.root)?;
    STACK_UP.store(true, Ordering::SeqCst);
    step("start stack (wrangler dev + 3 SFUs)", || {
        let mut stack = Stack::start(&tools.paths, sfu_bin, &secrets, cfg)?;
        let health = stack.wait_ready(Duration::from_secs(120))?;
        let regions: Vec<String> = health["sfus"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["region"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        note(format!(
            "edge ready at {}; live SFUs: {}",
            stack.url,
            regions.join(", ")
        ));
        Ok(stack)
    })
}

fn dev(port: u16, fast: bool) -> Result<()> {
    let tools = setup(Needs { browser: false })?;
    let sfu_build = if fast {
        build::SfuBuild::Fast
    } else {
        build::SfuBuild::Optimised
    };
    let sfu_bin = build::build_all(&tools, sfu_build)?;
    let cfg = StackConfig {
        edge_port: port,
        ..StackConfig::dev()
    };
    let mut stack = start_stack(&tools, &sfu_bin, &cfg)?;
    eprintln!("\n\x1b[1;32m  edgemeet is running: {}/\x1b[0m", stack.url);
    eprintln!(
        "  open {}/<room-name> in two tabs to meet; logs in {}",
        stack.url,
        stack.log_dir.display()
    );
    eprintln!("  Ctrl-C stops everything.\n");
    loop {
        if STOP.load(Ordering::SeqCst) {
            eprintln!("\nstopping…");
            stack.stop();
            return Ok(());
        }
        if let Some((name, status)) = stack.exited() {
            stack.stop();
            return Err(fail(
                "dev",
                format!("{name} stopped unexpectedly: {status}"),
                "fix the error above and start again",
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One test suite's outcome, for the summary.
struct Suite {
    name: &'static str,
    ok: bool,
    secs: f64,
}

fn suite(results: &mut Vec<Suite>, name: &'static str, f: impl FnOnce() -> Result<()>) {
    let t = Instant::now();
    let ok = step(name, f).is_ok();
    results.push(Suite {
        name,
        ok,
        secs: t.elapsed().as_secs_f64(),
    });
}

fn test() -> Result<()> {
    let tools = setup(Needs { browser: true })?;
    let p = tools.paths.clone();
    let mut results = Vec::new();

    suite(
        &mut results,
        "unit and SFU integration tests (cargo test)",
        || {
            cmd::run(
                "cargo test",
                Command::new("cargo")
                    .args([
                        "test",
                        "--workspace",
                        "--exclude",
                        "edgemeet-client",
                        "--exclude",
                        "edgemeet-edge",
                        "--exclude",
                        "edgemeet-fuzz",
                    ])
                    .current_dir(&p.root),
                "see the failing test above",
            )
        },
    );
    // Every fuzz target for a minute (`cargo xtask fuzz` runs them longer): any finding fails.
    suite(&mut results, "fuzzing, 60 s per target (libFuzzer)", || {
        fuzz::fuzz(&p, &fuzz::TARGETS, 60).map(|_| ())
    });
    // The wasm builds are tests too: a client or edge that does not build fails here.
    let sfu_bin = build::build_all(&tools, build::SfuBuild::Fast)?;
    let cfg = StackConfig::test();
    let mut stack = start_stack(&tools, &sfu_bin, &cfg)?;
    let secrets = secrets::dev_vars(&p.root)?;
    // Each file's budget (see `node_tests`): the edge's files take seconds, the failover file
    // ~25 s; an end-to-end file holds up to seven browser tests of several pages each (meeting,
    // breakouts, polls: 30–45 s on a quiet machine, and they crossed 60 s on a slower one while
    // every test in them passed), so it gets three minutes.
    const QUICK_FILE_SECS: u64 = 60;
    const BROWSER_FILE_SECS: u64 = 180;
    let node_test = |dir: &str, files: Vec<String>, extra: &[(&str, String)], secs| -> Result<()> {
        node_tests(&p, &stack, &secrets, dir, files, extra, secs)
    };
    suite(
        &mut results,
        "edge integration tests (built worker in workerd)",
        || {
            node_test(
                "edge/tests",
                test_files(&p.root.join("edge/tests")),
                &[],
                QUICK_FILE_SECS,
            )
        },
    );
    let artifacts = [(
        "EDGEMEET_ARTIFACTS",
        p.target().join("playwright").display().to_string(),
    )];
    // The failover file runs on its own, three times in a row: a flaky failover is a bug.
    // So does the bad-network file, in a network namespace of its own (below).
    let (failover, e2e): (Vec<String>, Vec<String>) = test_files(&p.root.join("playwright"))
        .into_iter()
        .partition(|f| f.ends_with("/failover.test.mjs"));
    let (network, e2e): (Vec<String>, Vec<String>) = e2e
        .into_iter()
        .partition(|f| f.ends_with("/network.test.mjs"));
    suite(
        &mut results,
        "end-to-end tests (Playwright + Chromium)",
        || node_test("playwright", e2e, &artifacts, BROWSER_FILE_SECS),
    );
    suite(
        &mut results,
        "failover and drain, three runs in a row (Playwright + Chromium)",
        || {
            for run in 1..=3 {
                note(format!("failover run {run} of 3"));
                node_test("playwright", failover.clone(), &artifacts, QUICK_FILE_SECS)?;
            }
            Ok(())
        },
    );
    stack.stop();
    suite(
        &mut results,
        "bad networks: loss, delay, outage, rate cap (Chromium in a network namespace)",
        || bad_networks(&tools, &sfu_bin, &secrets, network, &artifacts),
    );
    STACK_UP.store(false, Ordering::SeqCst);

    eprintln!("\nsummary:");
    for s in &results {
        eprintln!(
            "  {} {} ({:.0} s)",
            if s.ok {
                "\x1b[32mpass\x1b[0m"
            } else {
                "\x1b[31mFAIL\x1b[0m"
            },
            s.name,
            s.secs
        );
    }
    let failed = results.iter().filter(|s| !s.ok).count();
    println!(
        "suites: {} passed, {} failed",
        results.len() - failed,
        failed
    );
    if failed > 0 {
        return Err(fail(
            "test",
            format!("{failed} suite(s) failed"),
            "see each suite's output above",
        ));
    }
    Ok(())
}

/// `cargo xtask test --network-only`: the bad-network file alone.
fn network_only_test() -> Result<()> {
    let tools = setup(Needs { browser: true })?;
    let p = tools.paths.clone();
    let sfu_bin = build::build_all(&tools, build::SfuBuild::Fast)?;
    let secrets = secrets::dev_vars(&p.root)?;
    let artifacts = [(
        "EDGEMEET_ARTIFACTS",
        p.target().join("playwright").display().to_string(),
    )];
    let files = vec![p
        .root
        .join("playwright/network.test.mjs")
        .display()
        .to_string()];
    let r = step("bad networks (Chromium in a network namespace)", || {
        bad_networks(&tools, &sfu_bin, &secrets, files, &artifacts)
    });
    STACK_UP.store(false, Ordering::SeqCst);
    r
}

/// Runs Node's test runner on `files` against `stack`, each file within `file_secs`.
///
/// Node's `--test-timeout` bounds each *file* as a whole: a file's tests run in one child
/// process, and the runner's timeout is that child's (checked with Node 22: a file of three
/// 1.5 s tests fails at `--test-timeout=2000`). Every wait inside a test carries its own limit,
/// so this is the backstop for a file that hangs, not a measure of any test: give a file of many
/// browser tests room for all of them.
fn node_tests(
    p: &setup::Paths,
    stack: &Stack,
    secrets: &secrets::DevSecrets,
    dir: &str,
    files: Vec<String>,
    extra: &[(&str, String)],
    file_secs: u64,
) -> Result<()> {
    if files.is_empty() {
        return Err(fail(dir, format!("no *.test.mjs files in {dir}"), ""));
    }
    let mut c = Command::new(p.node22());
    c.args([
        "--test",
        "--test-reporter=spec",
        "--test-concurrency=1",
        "--test-force-exit",
    ])
    .arg(format!("--test-timeout={}", file_secs * 1000))
    .args(&files)
    .current_dir(&p.root)
    .env("EDGEMEET_URL", &stack.url)
    .env("EDGEMEET_CONTROL_SECRET", &secrets.control_secret)
    .env("EDGEMEET_CHROMIUM", setup::Paths::chromium())
    .env("EDGEMEET_PYTHON", p.python_venv().join("bin/python"));
    for (k, v) in extra {
        c.env(k, v);
    }
    cmd::run(
        dir,
        &mut c,
        &format!(
            "see the failing test above; stack logs in {}",
            stack.log_dir.display()
        ),
    )
}

/// The bad-network file: in a network namespace made for it, with a stack of its own there, and
/// `cargo xtask impair` (this binary) to shape the traffic of one page.
fn bad_networks(
    tools: &Tools,
    sfu_bin: &std::path::Path,
    secrets: &secrets::DevSecrets,
    files: Vec<String>,
    extra: &[(&str, String)],
) -> Result<()> {
    let _ns = netns::Netns::enter()?;
    let cfg = StackConfig {
        name: "network",
        ..StackConfig::test()
    };
    let mut stack = start_stack(tools, sfu_bin, &cfg)?;
    let exe = std::env::current_exe()
        .map_err(|e| fail("bad networks", e.to_string(), ""))?
        .display()
        .to_string();
    let mut env: Vec<(&str, String)> = extra.to_vec();
    env.push(("EDGEMEET_IMPAIR", exe));
    // Each case waits for layers to settle and measures for 10 s: the file takes about a minute.
    let r = node_tests(
        &tools.paths,
        &stack,
        secrets,
        "playwright",
        files,
        &env,
        240,
    );
    stack.stop();
    r
}

fn test_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn bench() -> Result<()> {
    let tools = setup(Needs { browser: true })?;
    let p = tools.paths.clone();
    step("SFU forwarding core (profile `sfu`)", || {
        cmd::run(
            "bench",
            Command::new("cargo")
                .args([
                    "bench",
                    "--package",
                    "edgemeet-sfu",
                    "--bench",
                    "forward",
                    "--bench",
                    "rtc_path",
                    "--profile",
                    "sfu",
                ])
                .current_dir(&p.root),
            "read the compiler error above",
        )
    })?;
    let sfu_bin = build::build_all(&tools, build::SfuBuild::Optimised)?;
    let cfg = StackConfig::test();
    let mut stack = start_stack(&tools, &sfu_bin, &cfg)?;
    let joined = step(
        "join click → first remote frame (Chromium, 20 joins)",
        || {
            cmd::run(
                "join bench",
                Command::new(p.node22())
                    .arg("bench/join.mjs")
                    .current_dir(&p.root)
                    .env("EDGEMEET_URL", &stack.url)
                    .env("EDGEMEET_CHROMIUM", setup::Paths::chromium()),
                &format!("stack logs in {}", stack.log_dir.display()),
            )
        },
    );
    let moved = step("failover and drain (Chromium, 10 kills + 5 drains)", || {
        cmd::run(
            "failover bench",
            Command::new(p.node22())
                .arg("bench/failover.mjs")
                .current_dir(&p.root)
                .env("EDGEMEET_URL", &stack.url)
                .env("EDGEMEET_CHROMIUM", setup::Paths::chromium()),
            &format!("stack logs in {}", stack.log_dir.display()),
        )
    });
    let layers = step(
        "simulcast: thumbnail vs full-size subscriber (Chromium, 30 s)",
        || {
            cmd::run(
                "layers bench",
                Command::new(p.node22())
                    .arg("bench/layers.mjs")
                    .current_dir(&p.root)
                    .env("EDGEMEET_URL", &stack.url)
                    .env("EDGEMEET_CHROMIUM", setup::Paths::chromium()),
                &format!("stack logs in {}", stack.log_dir.display()),
            )
        },
    );
    let health = step(
        "call health: glass to glass at 720p, 3 people; the pre-join network check",
        || {
            cmd::run(
                "health bench",
                Command::new(p.node22())
                    .arg("bench/health.mjs")
                    .current_dir(&p.root)
                    .env("EDGEMEET_URL", &stack.url)
                    .env("EDGEMEET_CHROMIUM", setup::Paths::chromium()),
                &format!("stack logs in {}", stack.log_dir.display()),
            )
        },
    );
    let meeting = step(
        "meeting controls: password check, chat fan-out to 50, join → admitted",
        || {
            cmd::run(
                "meeting bench",
                Command::new(p.node22())
                    .arg("bench/meeting.mjs")
                    .current_dir(&p.root)
                    .env("EDGEMEET_URL", &stack.url),
                &format!("stack logs in {}", stack.log_dir.display()),
            )
        },
    );
    let abuse = step("abuse: join flood, frame flood", || {
        cmd::run(
            "abuse bench",
            Command::new(p.node22())
                .arg("bench/abuse.mjs")
                .current_dir(&p.root)
                .env("EDGEMEET_URL", &stack.url),
            &format!("stack logs in {}", stack.log_dir.display()),
        )
    });
    stack.stop();
    // Bad networks: the same file the tests run, for its printed figures.
    let secrets = secrets::dev_vars(&p.root)?;
    let networks = step(
        "bad networks: loss + delay, outage, rate cap (Chromium in a network namespace)",
        || {
            let files = vec![p
                .root
                .join("playwright/network.test.mjs")
                .display()
                .to_string()];
            let artifacts = [(
                "EDGEMEET_ARTIFACTS",
                p.target().join("playwright").display().to_string(),
            )];
            bad_networks(&tools, &sfu_bin, &secrets, files, &artifacts)
        },
    );
    STACK_UP.store(false, Ordering::SeqCst);
    // Fuzzing figures: each target for a while (`cargo xtask fuzz` runs them longer).
    let fuzzed = step("fuzzing, 30 s per target", || {
        fuzz::fuzz(&p, &fuzz::TARGETS, 30).map(|_| ())
    });
    joined
        .and(moved)
        .and(layers)
        .and(health)
        .and(meeting)
        .and(abuse)
        .and(networks)
        .and(fuzzed)
}

fn soak(minutes: u64) -> Result<()> {
    let tools = setup(Needs { browser: true })?;
    let p = tools.paths.clone();
    let sfu_bin = build::build_all(&tools, build::SfuBuild::Optimised)?;
    let mut stack = start_stack(&tools, &sfu_bin, &StackConfig::test())?;
    let r = step(
        &format!("soak: {minutes} min, 6 people with churn, an SFU kill halfway (Chromium)"),
        || {
            cmd::run(
                "soak",
                Command::new(p.node22())
                    .arg("bench/soak.mjs")
                    .current_dir(&p.root)
                    .env("EDGEMEET_URL", &stack.url)
                    .env("EDGEMEET_SOAK_MINUTES", minutes.to_string())
                    .env("EDGEMEET_CHROMIUM", setup::Paths::chromium()),
                &format!("stack logs in {}", stack.log_dir.display()),
            )
        },
    );
    stack.stop();
    STACK_UP.store(false, Ordering::SeqCst);
    r
}

/// `cargo xtask load`'s switches.
struct LoadOpts {
    quick: bool,
    floor: bool,
    secs: u64,
    runs: usize,
    rps: bool,
    record: bool,
    wake_receivers: bool,
    busy_core: bool,
    against: Option<std::path::PathBuf>,
}

fn load(o: LoadOpts, srtp: Option<&str>, points: &[String]) -> Result<()> {
    let LoadOpts {
        quick,
        floor,
        secs,
        runs,
        rps,
        record,
        wake_receivers,
        busy_core,
        against,
    } = o;
    if against.is_some() && (rps || floor || quick) {
        return Err(fail(
            "load",
            "--against runs two load tools side by side; not with --rps, --floor or --quick",
            "name the points (e.g. 1x100 1x50) and --runs",
        ));
    }
    let p = setup::Paths::new();
    if cmd::output(Command::new("vpxenc").arg("--help")).is_none() {
        // libvpx's own encoder makes the clips the publishers loop (once, kept in target/).
        setup::apt_install("vpxenc for the load clips", &["vpx-tools"])?;
    }
    step("build SFU and load tool (profile `sfu`)", || {
        cmd::run(
            "build",
            Command::new("cargo")
                .args([
                    "build",
                    "--package",
                    "edgemeet-sfu",
                    "--package",
                    "edgemeet-load",
                    "--profile",
                    "sfu",
                ])
                .current_dir(&p.root),
            "read the compiler error above",
        )
    })?;
    let bin = p.target().join("sfu");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let command = |sfu: &std::path::Path, logs: &str, runs: usize, points: &[String]| {
        let mut c = if cores >= 2 {
            // The SFU on core 0, the load on core 1: each measured alone.
            let mut c = Command::new("taskset");
            c.args(["-c", "1"]).arg(bin.join("edgemeet-load"));
            c
        } else {
            Command::new(bin.join("edgemeet-load"))
        };
        c.arg("--sfu")
            .arg(sfu)
            .arg("--clips")
            .arg(p.target().join("edgemeet-load"))
            .arg("--logs")
            .arg(p.target().join("edgemeet-logs").join(logs))
            .args(["--secs", &secs.to_string()])
            .args(["--runs", &runs.to_string()])
            .args(points)
            .current_dir(&p.root);
        for (on, flag) in [
            (quick, "--quick"),
            (floor, "--floor"),
            (record, "--record"),
            (wake_receivers, "--wake-receivers"),
            (busy_core, "--busy-core"),
        ] {
            if on {
                c.arg(flag);
            }
        }
        if let Some(srtp) = srtp {
            c.args(["--srtp", srtp]);
        }
        c
    };
    if cores < 2 {
        note("one core only: the SFU and the load share it (figures are pessimistic)");
    }
    if let Some(other) = against {
        if cores < 2 {
            return Err(fail(
                "load",
                "--against needs two cores (the SFUs' and the load tools')",
                "run it on a machine with two cores or more",
            ));
        }
        let theirs = std::fs::canonicalize(&other).map_err(|e| {
            fail(
                "load",
                format!("{}: {e}", other.display()),
                "give the path of an edgemeet-sfu binary (e.g. one built at another commit)",
            )
        })?;
        if points.is_empty() {
            return Err(fail(
                "load",
                "--against needs the points to compare",
                "name them, e.g. `cargo xtask load --busy-core --against OTHER --runs 6 1x100 1x50` (points up to ~1x100: both load tools share core 1)",
            ));
        }
        let ours = bin.join("edgemeet-sfu");
        // Each binary starts first equally often.
        let runs = runs.max(2).next_multiple_of(2);
        return step("load side by side (both SFUs on core 0)", || {
            side_by_side(points, runs, |point| {
                let one = [point.to_string()];
                let mut a = command(&ours, "load", 1, &one);
                let mut b = command(&theirs, "load-against", 1, &one);
                a.arg("--results");
                b.arg("--results");
                (a, b)
            })
        });
    }
    let mut c = command(&bin.join("edgemeet-sfu"), "load", runs, points);
    // Left (and deleted) when this returns.
    if rps && cores < 2 {
        note("--rps needs two cores (the load tool's to steer to): measuring without it");
    }
    let _ns = if rps && cores >= 2 {
        let ns = netns::Netns::enter()?;
        // `ip netns exec` mounts the namespace's own /sys for the command, so this writes its
        // loopback's setting and never the machine's.
        cmd::run(
            "receive steering",
            Command::new(setup::IP).args([
                "netns",
                "exec",
                &ns.name,
                "sh",
                "-c",
                "echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus",
            ]),
            "RPS needs a kernel built with CONFIG_RPS",
        )?;
        note("loopback receive processing steered to core 1 (the load tool's): the SFU's CPU leaves out every receiving kernel path, the subscribers' and its own ingress");
        Some(ns)
    } else {
        None
    };
    step("load (SFU pinned to core 0)", || {
        cmd::run(
            "load",
            &mut c,
            &format!(
                "SFU logs in {}",
                p.target().join("edgemeet-logs/load").display()
            ),
        )
    })
}

/// For each point, `runs` runs of two load tools at once (`pair` makes this tree's and the
/// other's command for one point), the one started first alternating; prints each run's µs per
/// packet for both and the ratio, then each point's median ratio. A run where either side lost
/// packets or video, or where either core was nearly full, is shown but not counted.
fn side_by_side(
    points: &[String],
    runs: usize,
    pair: impl Fn(&str) -> (Command, Command),
) -> Result<()> {
    use std::process::{Child, Stdio};
    let spawn = |c: &mut Command| {
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail("load", format!("starting the load tool: {e}"), ""))
    };
    let mut counted_any = false;
    for point in points {
        // (ours, theirs) µs per packet of each counted run.
        let mut counted: Vec<(f64, f64)> = Vec::new();
        for run in 0..runs {
            let (mut a, mut b) = pair(point);
            // Alternate which starts first: the first one's SFU comes up a little sooner.
            let (first, second) = if run % 2 == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let mut x = spawn(first)?;
            let y = match spawn(second) {
                Ok(y) => y,
                Err(e) => {
                    let _ = x.kill();
                    let _ = x.wait();
                    return Err(e);
                }
            };
            let (ours, theirs): (Child, Child) = if run % 2 == 0 { (x, y) } else { (y, x) };
            // Both read at once: neither tool ever waits on a full pipe.
            let theirs = std::thread::spawn(move || theirs.wait_with_output());
            let ours = ours.wait_with_output();
            let theirs = theirs.join().expect("the waiting thread does not panic");
            let mut outs = Vec::new();
            for (out, who, logs) in [
                (ours, "this tree's", "load"),
                (theirs, "the other", "load-against"),
            ] {
                let out = out.map_err(|e| fail("load", e.to_string(), ""))?;
                if !out.status.success() {
                    return Err(fail(
                        "load",
                        format!(
                            "{who} load tool failed at {point}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        ),
                        format!("see its SFU's log under target/edgemeet-logs/{logs}/"),
                    ));
                }
                outs.push(load_results(&out.stdout));
            }
            let find =
                |rs: &[(String, LoadResult)]| rs.iter().find(|(p, _)| p == point).map(|(_, r)| *r);
            let (Some(o), Some(t)) = (find(&outs[0]), find(&outs[1])) else {
                return Err(fail(
                    "load",
                    format!("a load tool printed no result for {point}"),
                    "run `cargo xtask load` on that point alone to see why",
                ));
            };
            let mut why_not = Vec::new();
            if o.load_cpu + t.load_cpu > 0.9 {
                why_not.push(format!(
                    "the load tools took {:.0} % of core 1",
                    (o.load_cpu + t.load_cpu) * 100.0
                ));
            }
            if o.sfu_cpu + t.sfu_cpu > 0.9 {
                why_not.push(format!(
                    "the SFUs took {:.0} % of core 0",
                    (o.sfu_cpu + t.sfu_cpu) * 100.0
                ));
            }
            if o.loss > 0.0 || t.loss > 0.0 || o.missing + t.missing > 0 {
                why_not.push(format!(
                    "loss {:.3} / {:.3} %, video never arrived {} / {}",
                    o.loss, t.loss, o.missing, t.missing
                ));
            }
            println!(
                "run {} {point:<10} this tree {:.2} µs/pkt, the other {:.2}: ratio {:.3}   (SFU delay p50 {:.0} / {:.0} µs, p99 {:.0} / {:.0}){}",
                run + 1,
                o.us,
                t.us,
                o.us / t.us,
                o.p50,
                t.p50,
                o.p99,
                t.p99,
                if why_not.is_empty() {
                    String::new()
                } else {
                    format!("   not counted: {}", why_not.join("; "))
                }
            );
            if why_not.is_empty() {
                counted.push((o.us, t.us));
            }
        }
        if counted.is_empty() {
            note(format!("{point}: no run counted"));
            continue;
        }
        counted_any = true;
        let mut ratios: Vec<f64> = counted.iter().map(|(o, t)| o / t).collect();
        ratios.sort_by(f64::total_cmp);
        let lower = counted.iter().filter(|(o, t)| o < t).count();
        println!(
            "{point:<10} this tree / the other, µs per packet: median {:.3} (min {:.3}, max {:.3}); this tree lower in {lower} of {} runs",
            median(&ratios),
            ratios[0],
            ratios[ratios.len() - 1],
            counted.len()
        );
    }
    if counted_any {
        Ok(())
    } else {
        Err(fail(
            "load",
            "no run could be counted",
            "compare smaller points (both load tools share core 1, both SFUs core 0)",
        ))
    }
}

/// The median of sorted `v` (the mean of the middle two for an even count); `v` not empty.
fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One run's figures, as `edgemeet-load --results` prints them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LoadResult {
    us: f64,
    load_cpu: f64,
    sfu_cpu: f64,
    p50: f64,
    p99: f64,
    loss: f64,
    missing: u64,
}

/// The `result` lines `edgemeet-load --results` prints, by point.
fn load_results(stdout: &[u8]) -> Vec<(String, LoadResult)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 9 || f[0] != "result" {
                return None;
            }
            let num = |i: usize| f[i].parse::<f64>().ok();
            Some((
                f[1].to_string(),
                LoadResult {
                    us: num(2)?,
                    load_cpu: num(3)?,
                    sfu_cpu: num(4)?,
                    p50: num(5)?,
                    p99: num(6)?,
                    loss: num(7)?,
                    missing: f[8].parse().ok()?,
                },
            ))
        })
        .collect()
}

fn deploy() -> Result<()> {
    let tools = setup(Needs { browser: false })?;
    step("build client", || build::build_client(&tools))?;
    step("build edge", || build::build_edge(&tools))?;
    let p = &tools.paths;
    step("D1 migrations (remote)", || {
        cmd::run(
            "D1 migrations (remote)",
            Command::new(p.node22())
                .arg(p.wrangler_js())
                .args(["d1", "migrations", "apply", "DB", "--remote"])
                .current_dir(p.root.join("edge"))
                .env("CI", "true")
                .env("WRANGLER_SEND_METRICS", "false"),
            "create the database first (`wrangler d1 create edgemeet`) and put its database_id in edge/wrangler.toml",
        )
    })?;
    step("wrangler deploy", || {
        cmd::run(
            "wrangler deploy",
            Command::new(p.node22())
                .arg(p.wrangler_js())
                .arg("deploy")
                .current_dir(p.root.join("edge"))
                .env("WRANGLER_SEND_METRICS", "false"),
            "log in with `node node_modules/wrangler/bin/wrangler.js login`, set ROOM_TOKEN_SECRET and CONTROL_SECRET with `wrangler secret put`",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_reads_the_load_tools_result_lines_and_nothing_else() {
        let out = "SRTP: AES-CM\n\
                   point peers ...\n\
                   1x100 busy 101 100 23073 2.60 ...\n\
                   result\t1x100\t2.6012\t0.3000\t0.0600\t459\t1497\t0.000\t0\n\
                   result\t4x50\t2.2700\t0.4990\t0.1100\t516\t2955\t0.010\t2\n\
                   result\tbroken\tx\t0.3\t0.1\t1\t2\t0\t0\n\
                   result\tshort\t2.0\t0.3\n\
                   streams: camera streams forwarded\n";
        let r = load_results(out.as_bytes());
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].0, "1x100");
        assert_eq!(
            r[0].1,
            LoadResult {
                us: 2.6012,
                load_cpu: 0.3,
                sfu_cpu: 0.06,
                p50: 459.0,
                p99: 1497.0,
                loss: 0.0,
                missing: 0
            }
        );
        assert_eq!((r[1].0.as_str(), r[1].1.missing), ("4x50", 2));
    }

    #[test]
    fn a_median_of_an_even_count_is_the_middle_twos_mean() {
        assert_eq!(median(&[1.0, 2.0, 4.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), 3.0);
        assert_eq!(median(&[0.9, 1.1]), 1.0);
    }
}
