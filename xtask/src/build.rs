//! Builds the three tiers: client (Trunk → dist/), edge (worker-build → edge/build/), SFU (native).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{path_with, run};
use crate::setup::Tools;
use crate::step::{note, step, Result};

/// How the SFU is built: `Fast` is the debug build `cargo test` already made (the test stack carries
/// a handful of streams, and a second optimised build of webrtc-rs would cost CI minutes);
/// `Optimised` is the `sfu` profile, for `dev`, `bench` and deployment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SfuBuild {
    Fast,
    Optimised,
}

pub fn build_all(tools: &Tools, sfu_build: SfuBuild) -> Result<PathBuf> {
    step("build client (Leptos → wasm, Trunk)", || {
        build_client(tools)
    })?;
    step(
        "build edge worker (workers-rs → wasm, worker-build)",
        || build_edge(tools),
    )?;
    let sfu = match sfu_build {
        SfuBuild::Optimised => step("build SFU (native, profile `sfu`)", || build_sfu(tools))?,
        SfuBuild::Fast => step(
            "build SFU (native, debug: as `cargo test` built it)",
            || build_sfu_debug(tools),
        )?,
    };
    step("dev secrets (edge/.dev.vars)", || {
        crate::secrets::dev_vars(&tools.paths.root).map(|_| ())
    })?;
    Ok(sfu)
}

pub fn build_client(tools: &Tools) -> Result<()> {
    let p = &tools.paths;
    let mut cmd = Command::new(p.tool("trunk"));
    cmd.args(["build", "--release"])
        .current_dir(&p.root)
        // Trunk takes wasm-opt and wasm-bindgen from PATH when their versions match Trunk.toml.
        .env("PATH", path_with(&[&p.npm_bin(), &p.cargo_bin]))
        .env("NO_COLOR", "true");
    tools.wasm.apply(p, &mut cmd)?;
    run(
        "build client",
        &mut cmd,
        "read Trunk's error above; `cargo xtask setup` reinstalls the pinned tools",
    )?;
    for wasm in files_with_ext(&p.root.join("dist"), "wasm") {
        report_size(&wasm);
    }
    Ok(())
}

pub fn build_edge(tools: &Tools) -> Result<()> {
    let p = &tools.paths;
    let mut cmd = Command::new(p.tool("worker-build"));
    cmd.arg("--release")
        .current_dir(p.root.join("edge"))
        // worker-build downloads these from outside unless given local binaries.
        .env("WASM_BINDGEN_BIN", p.tool("wasm-bindgen"))
        .env("WASM_OPT_BIN", p.wasm_opt())
        .env("ESBUILD_BIN", p.esbuild())
        .env("PATH", path_with(&[&p.cargo_bin]));
    tools.wasm.apply(p, &mut cmd)?;
    run(
        "build edge",
        &mut cmd,
        "read worker-build's error above; `cargo xtask setup` reinstalls the pinned tools",
    )?;
    for wasm in files_with_ext(&p.root.join("edge/build"), "wasm") {
        report_size(&wasm);
    }
    Ok(())
}

pub fn build_sfu(tools: &Tools) -> Result<PathBuf> {
    let p = &tools.paths;
    run(
        "build SFU",
        Command::new("cargo")
            .args(["build", "--package", "edgemeet-sfu", "--profile", "sfu"])
            .current_dir(&p.root),
        "read the compiler error above",
    )?;
    Ok(p.target().join("sfu/edgemeet-sfu"))
}

pub fn build_sfu_debug(tools: &Tools) -> Result<PathBuf> {
    let p = &tools.paths;
    run(
        "build SFU",
        Command::new("cargo")
            .args(["build", "--package", "edgemeet-sfu"])
            .current_dir(&p.root),
        "read the compiler error above",
    )?;
    Ok(p.target().join("debug/edgemeet-sfu"))
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_with_ext(&p, ext));
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
    out
}

/// Prints a file's raw and gzipped size.
pub fn report_size(path: &Path) {
    let raw = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let gz = crate::cmd::output(
        Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -9 -c '{}' | wc -c", path.display())),
    )
    .and_then(|s| s.parse::<u64>().ok())
    .unwrap_or(0);
    note(format!(
        "{}: {:.0} KB raw, {:.0} KB gzipped",
        path.display(),
        raw as f64 / 1024.0,
        gz as f64 / 1024.0
    ));
}
