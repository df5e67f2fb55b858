//! Running commands with their output shown, and with clear errors when they fail.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::step::{fail, Result};

/// Runs `cmd` to completion with output passed through; a non-zero exit fails `step`.
pub fn run(step: &str, cmd: &mut Command, fix: &str) -> Result<()> {
    let shown = show(cmd);
    crate::step::note(format!("$ {shown}"));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| fail(step, format!("could not start `{shown}`: {e}"), fix))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(step, format!("`{shown}` exited with {status}"), fix))
    }
}

/// Runs `cmd` and returns its stdout if it succeeded; `None` if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if let Some(dir) = cmd.get_current_dir() {
        s = format!("(cd {} && {s})", dir.display());
    }
    s
}

/// `PATH` with `dirs` in front.
pub fn path_with(dirs: &[&Path]) -> String {
    let mut parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if let Ok(p) = std::env::var("PATH") {
        parts.push(p);
    }
    parts.join(":")
}
