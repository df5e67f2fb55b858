//! Progress output: every step says what it does, how long it took, and on failure what to do.

use std::fmt;
use std::time::Instant;

/// A failed step: which step, what failed, what to do about it.
#[derive(Debug)]
pub struct StepError {
    pub step: String,
    pub what: String,
    pub fix: String,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step '{}' failed: {}", self.step, self.what)?;
        if !self.fix.is_empty() {
            write!(f, "\n  what to do: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for StepError {}

pub type Result<T> = std::result::Result<T, StepError>;

/// Builds a [`StepError`].
pub fn fail(step: &str, what: impl Into<String>, fix: impl Into<String>) -> StepError {
    StepError {
        step: step.into(),
        what: what.into(),
        fix: fix.into(),
    }
}

/// Runs `f` as a named step, printing its start, duration and outcome.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("\x1b[1m==>\x1b[0m {name}");
    let t = Instant::now();
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    match &r {
        Ok(_) => eprintln!("\x1b[32m ✓\x1b[0m {name} ({secs:.1} s)"),
        Err(e) => eprintln!("\x1b[31m ✗\x1b[0m {name} ({secs:.1} s): {}", e.what),
    }
    r
}

/// Prints a note under the current step.
pub fn note(msg: impl AsRef<str>) {
    eprintln!("    {}", msg.as_ref());
}
