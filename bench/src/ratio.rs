//! Ratios against a baseline measured in the same criterion run.
//!
//! Benchmarks time their routine through [`Ledger::iter`], which hands criterion the elapsed
//! time (as `iter_custom` does) and also records it, so after the group has run,
//! [`Ledger::report`] prints each routine's mean time per item and its ratio to the baseline
//! from the very samples criterion measured.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Bencher;

/// Accumulated (iterations, elapsed) per routine name.
#[derive(Default)]
pub struct Ledger {
    runs: Mutex<BTreeMap<String, (u64, Duration)>>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `routine` `iters` times for criterion and records the time under `name`.
    pub fn iter<O, F: FnMut() -> O>(&self, b: &mut Bencher<'_>, name: &str, mut routine: F) {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(routine());
            }
            let elapsed = start.elapsed();
            if let Ok(mut runs) = self.runs.lock() {
                let e = runs.entry(name.to_string()).or_default();
                e.0 += iters;
                e.1 += elapsed;
            }
            elapsed
        });
    }

    /// Mean nanoseconds per iteration of `name`, if it ran.
    pub fn ns_per_iter(&self, name: &str) -> Option<f64> {
        let runs = self.runs.lock().ok()?;
        let (iters, elapsed) = runs.get(name)?;
        (*iters > 0).then(|| elapsed.as_nanos() as f64 / *iters as f64)
    }

    /// Prints, for every routine, ns per item (an iteration covers `items_per_iter` items),
    /// optional Gbit/s (when an item is `bytes_per_item` bytes), and the speed ratio against
    /// `baseline` (>1: faster than the baseline).
    pub fn report(
        &self,
        title: &str,
        baseline: &str,
        items_per_iter: u64,
        bytes_per_item: Option<u64>,
    ) {
        let Some(base) = self.ns_per_iter(baseline) else {
            println!("{title}: baseline {baseline} did not run");
            return;
        };
        let names: Vec<String> = match self.runs.lock() {
            Ok(r) => r.keys().cloned().collect(),
            Err(_) => return,
        };
        println!("\n== {title} (baseline: {baseline}) ==");
        for name in names {
            let Some(ns) = self.ns_per_iter(&name) else {
                continue;
            };
            let per_item = ns / items_per_iter as f64;
            let gbps = bytes_per_item
                .map(|b| format!("{:8.2} Gbit/s", (b * 8) as f64 / per_item))
                .unwrap_or_default();
            println!(
                "{name:<28} {per_item:9.2} ns/item {gbps}  x{:.2} vs baseline",
                base / ns
            );
        }
    }
}
