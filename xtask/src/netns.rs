//! A network namespace of the test's own, for the bad-network tests: `ip netns add edgemeet-…`,
//! its loopback up (and a veth pair inside it, for a non-loopback address), and xtask's main thread moved into it (`setns`), so that the stack, Node and
//! Chromium started from here live there. Loss, delay and rate caps (`cargo xtask impair`) then
//! touch only that namespace's loopback; the machine's own network is never touched. Leaving
//! (drop) moves the thread back, kills what is still running in the namespace and deletes it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use crate::impair::NETNS_PREFIX;
use crate::setup::IP;
use crate::step::{fail, note, Result};

pub struct Netns {
    pub name: String,
    home: File,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(IP)
        .args(args)
        .output()
        .map_err(|e| fail("network namespace", format!("ip: {e}"), ""))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            "network namespace",
            format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "the bad-network tests need root (CAP_NET_ADMIN) to make a network namespace",
        ))
    }
}

/// Namespaces an earlier run left behind (its xtask died): named `edgemeet-<label>-<pid>` with no
/// such process any more.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            kill_inside(&name);
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

fn kill_inside(name: &str) {
    if let Ok(out) = Command::new(IP).args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Netns {
    /// Makes `edgemeet-<label>-<pid>` and moves this thread into it.
    pub fn enter(label: &str) -> Result<Netns> {
        if unsafe { libc::geteuid() } != 0 {
            return Err(fail(
                "network namespace",
                "the bad-network tests make a network namespace, which needs root",
                "run the tests as root (CI does)",
            ));
        }
        remove_stale();
        let name = format!("{NETNS_PREFIX}{label}-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let undo = |e| {
            let _ = ip(&["netns", "del", &name]);
            e
        };
        ip(&["-n", &name, "link", "set", "lo", "up"]).map_err(undo)?;
        // A LAN address besides loopback (a veth pair with both ends in the namespace): Chromium
        // gathers no host candidate on loopback, and with nothing else would relay all media
        // through TURN.
        ip(&[
            "-n", &name, "link", "add", "em0", "type", "veth", "peer", "name", "em1",
        ])
        .map_err(undo)?;
        ip(&["-n", &name, "addr", "add", "10.99.0.1/24", "dev", "em0"]).map_err(undo)?;
        ip(&["-n", &name, "link", "set", "em0", "up"]).map_err(undo)?;
        ip(&["-n", &name, "link", "set", "em1", "up"]).map_err(undo)?;
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| undo(fail("network namespace", e.to_string(), "")))?;
        let target = File::open(format!("/run/netns/{name}"))
            .map_err(|e| undo(fail("network namespace", e.to_string(), "")))?;
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(undo(fail("network namespace", format!("setns: {e}"), "")));
        }
        note(format!(
            "in network namespace {name} (loopback only; the tests shape its traffic)"
        ));
        Ok(Netns { name, home })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        unsafe {
            libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET);
        }
        kill_inside(&self.name);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
