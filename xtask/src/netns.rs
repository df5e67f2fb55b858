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

/// The prefix of the namespaces made here (`edgemeet-net-<pid>`); only those are ever cleaned up.
const OWN_PREFIX: &str = "edgemeet-net-";

/// Namespaces an earlier run left behind (its xtask died): `edgemeet-net-<pid>` with no such
/// process any more, or with this process's own pid (a pid reused in a container).
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(OWN_PREFIX) else {
            continue;
        };
        let pid = rest.parse::<u32>().ok();
        if pid.is_some_and(|p| {
            p == std::process::id() || !std::path::Path::new(&format!("/proc/{p}")).exists()
        }) {
            kill_inside(&name);
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Kills every process in namespace `name` (a few passes: something may fork meanwhile).
fn kill_inside(name: &str) {
    for _ in 0..5 {
        let Ok(out) = Command::new(IP).args(["netns", "pids", name]).output() else {
            return;
        };
        let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| *p != std::process::id() as i32)
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl Netns {
    /// Makes `edgemeet-net-<pid>` and moves this thread into it.
    pub fn enter() -> Result<Netns> {
        if unsafe { libc::geteuid() } != 0 {
            return Err(fail(
                "network namespace",
                "the bad-network tests make a network namespace, which needs root",
                "run the tests as root (CI does)",
            ));
        }
        remove_stale();
        let name = format!("{OWN_PREFIX}{}", std::process::id());
        debug_assert!(name.starts_with(NETNS_PREFIX));
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
        if unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // Still inside: killing what runs there would kill this process too. Deleting the
            // name is safe; the namespace goes when its last process does.
            eprintln!(
                "could not leave network namespace {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        } else {
            kill_inside(&self.name);
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}
