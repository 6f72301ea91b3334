//! Phase timers for `RESID_TIMINGS=1`: seconds spent in each phase of the
//! per-tensor analysis, summed over workers, printed to stderr at the end of
//! a run, so a slow analysis can be attributed without a profiler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The phases timed, in the order printed.
pub const PHASES: [&str; 11] = [
    "read, R and moments",
    "entropy+sparsity scan",
    "entropy gaussian null",
    "gram/pr",
    "lowfreq",
    "kmeans residual",
    "kmeans shuffled",
    "kmeans gaussian null",
    "interlayer",
    "figures",
    "kmeans same-cov null",
];

static NANOS: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];

/// Whether `RESID_TIMINGS` is set to something other than 0 or empty.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("RESID_TIMINGS").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Runs `f`, adding its wall time to phase `i` when timings are enabled.
pub fn time<T>(i: usize, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let r = f();
    NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// Prints the phase totals to stderr (when enabled) and resets them.
pub fn report() {
    if !enabled() {
        return;
    }
    let total: u64 = NANOS.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    eprintln!("resid analyze phase times (seconds, summed over workers):");
    for (name, a) in PHASES.iter().zip(&NANOS) {
        let n = a.swap(0, Ordering::Relaxed);
        eprintln!(
            "  {name:<22} {:>9.2}  {:>5.1}%",
            n as f64 * 1e-9,
            100.0 * n as f64 / total.max(1) as f64
        );
    }
}
