//! `cargo xtask fuzz`: builds the libFuzzer targets in `fuzz/` with coverage instrumentation (the
//! flags cargo-fuzz passes; no sanitizer, so the machine's one stable toolchain builds them) and
//! runs each for a bounded time, printing executions, coverage and findings. The corpus seeds
//! live in `fuzz/corpus/<target>`; what a run learns goes to `target/fuzz/corpus/<target>`, a
//! crash to `target/fuzz/artifacts/<target>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::setup::Paths;
use crate::step::{fail, note, Result};

/// Every target in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 7] = [
    "client_message",
    "room",
    "rtp",
    "sdp",
    "token",
    "selectors",
    "srtp_crypto",
];

const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers";

/// One target's run.
pub struct Figures {
    pub target: &'static str,
    pub runs: u64,
    pub secs: f64,
    pub coverage: u64,
    pub corpus: u64,
    /// A crash, timeout or leak: the artifact and the end of the fuzzer's output.
    pub finding: Option<String>,
}

fn host_triple() -> Result<String> {
    let out = crate::cmd::output(Command::new("rustc").arg("-vV"))
        .ok_or_else(|| fail("fuzz", "`rustc -vV` failed", "is rustc on PATH?"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| fail("fuzz", "no host triple in `rustc -vV`", ""))
}

/// Builds the targets; returns the directory holding their binaries (under `target`, cargo's
/// target directory).
pub fn build(root: &Path, target: &Path) -> Result<PathBuf> {
    let triple = host_triple()?;
    // libfuzzer-sys compiles libFuzzer (C++).
    if crate::cmd::output(Command::new("c++").arg("--version")).is_none() {
        crate::setup::apt_install("fuzz", &["g++"])?;
    }
    // An explicit --target keeps the instrumentation off build scripts and proc macros.
    crate::cmd::run(
        "build fuzz targets",
        Command::new("cargo")
            .args([
                "build",
                "--profile",
                "fuzz",
                "-p",
                "edgemeet-fuzz",
                "--bins",
                "--target",
            ])
            .arg(&triple)
            .env("RUSTFLAGS", RUSTFLAGS)
            .current_dir(root),
        "see the compiler's message above",
    )?;
    Ok(target.join(triple).join("fuzz"))
}

/// Runs `target` for `secs` seconds.
pub fn run(
    root: &Path,
    target_dir: &Path,
    bins: &Path,
    target: &'static str,
    secs: u64,
) -> Result<Figures> {
    let work = target_dir.join("fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let seeds = root.join("fuzz/corpus").join(target);
    for d in [&corpus, &artifacts, &seeds] {
        std::fs::create_dir_all(d)
            .map_err(|e| fail("fuzz", format!("cannot create {}: {e}", d.display()), ""))?;
    }
    let started = Instant::now();
    let out = Command::new(bins.join(target))
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args([
            "-print_final_stats=1",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=8192",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail("fuzz", format!("cannot run the {target} target: {e}"), ""))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| -> u64 {
        log.lines()
            .filter_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    // "#1234	DONE   cov: 567 ft: ... corp: 89/..." — the last status line.
    let field = |key: &str| -> u64 {
        log.lines()
            .rev()
            .find_map(|l| {
                let rest = l.split(key).nth(1)?;
                rest.split(|c: char| !c.is_ascii_digit())
                    .find(|s| !s.is_empty())?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    let finding = (!out.status.success()).then(|| {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{target}: the fuzzer stopped with {} (artifacts in {})\n{}",
            out.status,
            artifacts.display(),
            tail.join("\n")
        )
    });
    Ok(Figures {
        target,
        runs: stat("number_of_executed_units"),
        secs: started.elapsed().as_secs_f64(),
        coverage: field(" cov: "),
        corpus: field(" corp: "),
        finding,
    })
}

/// Builds and runs `targets` for `secs` each; prints a line per target; fails on any finding.
pub fn fuzz(paths: &Paths, targets: &[&'static str], secs: u64) -> Result<Vec<Figures>> {
    let (root, target_dir) = (&paths.root, paths.target());
    let bins = build(root, &target_dir)?;
    let mut all = Vec::new();
    for &t in targets {
        note(format!("fuzzing {t} for {secs} s"));
        let f = run(root, &target_dir, &bins, t, secs)?;
        note(format!(
            "{:<15} {:>11} runs in {:>4.0} s ({:>7.0}/s), coverage {:>5}, corpus {:>5}, findings {}",
            f.target,
            f.runs,
            f.secs,
            f.runs as f64 / f.secs.max(0.001),
            f.coverage,
            f.corpus,
            if f.finding.is_some() { 1 } else { 0 }
        ));
        all.push(f);
    }
    let findings: Vec<&str> = all.iter().filter_map(|f| f.finding.as_deref()).collect();
    if !findings.is_empty() {
        return Err(fail(
            "fuzz",
            findings.join("\n\n"),
            "reproduce with the target binary and the artifact file; fix, then keep the artifact in fuzz/corpus/<target>",
        ));
    }
    Ok(all)
}
