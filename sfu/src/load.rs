//! This process's CPU use, for the load it reports to the edge.

use std::time::Instant;

/// Fraction of `cores` used between two samples of process CPU time (seconds). Pure.
pub fn cpu_fraction(
    cpu_secs_before: f64,
    cpu_secs_after: f64,
    wall_secs: f64,
    cores: usize,
) -> f64 {
    if wall_secs <= 0.0 || cores == 0 {
        return 0.0;
    }
    ((cpu_secs_after - cpu_secs_before).max(0.0) / wall_secs / cores as f64).clamp(0.0, 1.0)
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat; `None` where that is missing.
pub fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // The kernel reports clock ticks; USER_HZ is 100 on every Linux we target.
    Some((utime + stime) / 100.0)
}

/// Samples CPU use between successive calls.
pub struct CpuSampler {
    last: Option<(Instant, f64)>,
    cores: usize,
}

impl CpuSampler {
    pub fn new() -> CpuSampler {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        CpuSampler {
            last: process_cpu_secs().map(|c| (Instant::now(), c)),
            cores,
        }
    }

    pub fn sample(&mut self) -> f64 {
        let Some(now_cpu) = process_cpu_secs() else {
            return 0.0;
        };
        let now = Instant::now();
        let frac = match self.last {
            Some((t, c)) => {
                cpu_fraction(c, now_cpu, now.duration_since(t).as_secs_f64(), self.cores)
            }
            None => 0.0,
        };
        self.last = Some((now, now_cpu));
        frac
    }
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fraction_is_per_core_and_clamped() {
        assert_eq!(cpu_fraction(1.0, 2.0, 1.0, 2), 0.5);
        assert_eq!(cpu_fraction(1.0, 9.0, 1.0, 2), 1.0);
        assert_eq!(cpu_fraction(2.0, 1.0, 1.0, 2), 0.0);
        assert_eq!(cpu_fraction(0.0, 1.0, 0.0, 2), 0.0);
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let before = process_cpu_secs().expect("/proc/self/stat is readable on Linux");
        // Busy for 200 ms of wall time: well over the 10 ms tick of the kernel's accounting.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let after = process_cpu_secs().unwrap();
        assert!(
            after - before >= 0.05,
            "cpu time went from {before} to {after}"
        );
    }
}
