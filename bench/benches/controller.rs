//! One controller cycle at scale: 50 datacenters x 4 gateways x 3 transits, every tunnel of
//! the full mesh reported from both sides (176,400 WireGuard sessions, 352,800 reports), on
//! one core. The baseline, measured in the same run, is the least any deterministic
//! controller must do with such inputs: sort the tunnel reports by (gateway, id).
//!
//! Run: `cargo bench -p gatewan-bench --bench controller -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gatewan_control::controller::inputs::{Snapshot, Time};
use gatewan_control::controller::sim::{scenario_policy, synthetic};
use gatewan_control::controller::Controller;

const DCS: usize = 50;
const GATEWAYS: usize = 4;
const TRANSITS: usize = 3;

fn warm(snap: &Snapshot) -> (Controller, Time) {
    let mut c = Controller::new("bench", scenario_policy());
    let mut t = Time::from_secs(5);
    // Two cycles first: the measured ones run with incumbents and history, as in service.
    for _ in 0..2 {
        black_box(c.step(t, snap));
        t = t + Duration::from_secs(5);
    }
    (c, t)
}

fn sort_reports(snap: &Snapshot) -> usize {
    let mut v: Vec<(&str, &str)> = snap
        .tunnels
        .iter()
        .map(|t| (t.local.gateway.as_str(), t.id.as_str()))
        .collect();
    v.sort_unstable();
    v.len()
}

fn bench(c: &mut Criterion) {
    let snap = synthetic(DCS, GATEWAYS, TRANSITS, 7);
    let (mut ctl, mut t) = warm(&snap);
    let orders: usize = ctl
        .step(t, &snap)
        .orders
        .gateways
        .values()
        .map(|g| g.remotes.values().map(Vec::len).sum::<usize>())
        .sum();

    let mut g = c.benchmark_group("controller");
    g.sample_size(10);
    g.bench_function("baseline_sort_reports", |b| {
        b.iter(|| black_box(sort_reports(black_box(&snap))))
    });
    g.bench_function("cycle_50dc_4gw_3transit", |b| {
        b.iter(|| {
            t = t + Duration::from_secs(5);
            black_box(ctl.step(t, black_box(&snap)))
        })
    });
    g.finish();

    // The figure, and the ratio to the baseline, measured here the same way.
    let runs = 5;
    let start = Instant::now();
    for _ in 0..runs {
        black_box(sort_reports(black_box(&snap)));
    }
    let base = start.elapsed() / runs;
    let start = Instant::now();
    for _ in 0..runs {
        t = t + Duration::from_secs(5);
        black_box(ctl.step(t, black_box(&snap)));
    }
    let cycle = start.elapsed() / runs;
    println!(
        "controller: {} reports, {} tunnels in orders; one cycle {:.1} ms on one core; \
         baseline (sort the reports) {:.1} ms; ratio {:.1}x",
        snap.tunnels.len(),
        orders,
        cycle.as_secs_f64() * 1e3,
        base.as_secs_f64() * 1e3,
        cycle.as_secs_f64() / base.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
