//! One controller cycle end to end at scale, over the real orders channel: 50 datacenters x
//! 4 gateways x 3 transits (9 transit pairs per gateway pair), the 200 gateways simulated in
//! process as HTTP/2 + mutual-TLS servers on loopback, each serving its share of the
//! synthetic snapshot as its report (about 1,760 tunnels each) and acking orders. A cycle:
//! pull every report in parallel, check and merge them, run the engine, push every order.
//! The baseline, measured in the same run, is the engine's step alone on the merged snapshot;
//! the ratio is what the channel adds. Memory: the process's peak resident set.
//!
//! Run: `cargo bench -p gatewan-bench --bench controller_cycle`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gatewan_control::channel::http::{self, Answer, Call, Client, Handler};
use gatewan_control::channel::{pki, Identity, MemberRole, TlsFiles, TlsSetup};
use gatewan_control::controller::daemon::{self, inputs, Target};
use gatewan_control::controller::inputs::{
    GatewayReport, Membership, Snapshot, Time, REPORT_VERSION,
};
use gatewan_control::controller::orders::{Epoch, Reply};
use gatewan_control::controller::sim::{scenario_policy, synthetic};
use gatewan_control::controller::Controller;

const DCS: usize = 50;
const GATEWAYS: usize = 4;
const TRANSITS: usize = 3;

/// Each gateway's report, cut out of the synthetic snapshot.
fn reports(snap: &Snapshot) -> Vec<GatewayReport> {
    snap.gateways
        .iter()
        .map(|g| GatewayReport {
            version: REPORT_VERSION,
            gateway: g.clone(),
            tunnels: snap
                .tunnels
                .iter()
                .filter(|t| t.local.gateway == g.id)
                .cloned()
                .collect(),
            transit_usage: snap
                .transit_usage
                .iter()
                .filter(|u| u.gateway == g.id)
                .cloned()
                .collect(),
            // The datacenter's demand, reported once by its first gateway.
            demand: if snap
                .gateways
                .iter()
                .find(|x| x.datacenter == g.datacenter)
                .map(|x| &x.id)
                == Some(&g.id)
            {
                snap.demand
                    .iter()
                    .filter(|d| d.from == g.datacenter)
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            },
            prefixes: snap
                .prefixes
                .iter()
                .filter(|p| p.datacenter == g.datacenter)
                .flat_map(|p| p.prefixes.clone())
                .collect(),
            order: None,
        })
        .collect()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Bed {
    runtime: tokio::runtime::Runtime,
    client: Client,
    targets: Vec<Target>,
    bytes: usize,
}

#[allow(clippy::expect_used)]
fn bed(reports: Vec<GatewayReport>) -> Bed {
    let dir = std::env::temp_dir().join(format!("gatewan-bench-cycle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    pki::init(&dir, 30).expect("CA");
    let files = |id: &Identity| {
        let (cert, key) = pki::issue(&dir, id, &dir, 30).expect("certificate");
        TlsFiles {
            ca: dir.join(pki::CA_CERT),
            cert,
            key,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ctl = Identity::new(MemberRole::Controller, "bench").expect("identity");
    let client = Client::new(
        TlsSetup::load(&files(&ctl), ctl).expect("client TLS"),
        Duration::from_secs(30),
    );
    let mut targets = Vec::new();
    let mut bytes = 0;
    for r in reports {
        let id = Identity::new(MemberRole::Gateway, &r.gateway.id).expect("identity");
        let tls = TlsSetup::load(&files(&id), id).expect("server TLS");
        let body = Arc::new(serde_json::to_vec(&r).expect("report"));
        bytes += body.len();
        let handler: Handler = Arc::new(move |call: Call| {
            let body = Arc::clone(&body);
            Box::pin(async move {
                if call.path == "/v1/report" {
                    Answer {
                        status: http::StatusCode::OK,
                        body: body.to_vec(),
                    }
                } else {
                    Answer::json(
                        http::StatusCode::OK,
                        &Reply::Ack {
                            epoch: Epoch::default(),
                            version: 0,
                        },
                    )
                }
            })
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("listener");
        let api = listener.local_addr().expect("address");
        runtime.spawn(async move { http::serve(listener, &tls, handler).await });
        targets.push(Target {
            name: r.gateway.id.clone(),
            datacenter: r.gateway.datacenter.clone(),
            api,
            holds: None,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Bed {
        runtime,
        client,
        targets,
        bytes,
    }
}

/// Pull, merge, step, push: the phases' durations.
fn cycle(bed: &mut Bed, ctl: &mut Controller, t: Time) -> [Duration; 4] {
    let start = Instant::now();
    let mut targets = bed.targets.clone();
    let pulled = bed
        .runtime
        .block_on(daemon::pull(&bed.client, &mut targets));
    let pulled_at = Instant::now();
    let (snap, issues) = inputs::build(Membership::default(), pulled);
    assert!(issues.is_empty(), "{:?}", issues.first());
    let built = Instant::now();
    let c = ctl.step(t, &snap);
    let stepped = Instant::now();
    let mut recipients = BTreeMap::new();
    bed.runtime.block_on(daemon::push(
        &bed.client,
        ctl,
        &c.orders,
        &targets,
        &[],
        &mut recipients,
    ));
    let pushed = Instant::now();
    black_box(recipients);
    [
        pulled_at - start,
        built - pulled_at,
        stepped - built,
        pushed - stepped,
    ]
}

fn bench(c: &mut Criterion) {
    let snap = synthetic(DCS, GATEWAYS, TRANSITS, 7);
    let rss_before = peak_rss_kib();
    let mut bed = bed(reports(&snap));
    let mut ctl = Controller::new("bench", scenario_policy());
    let mut t = Time::from_secs(5);
    cycle(&mut bed, &mut ctl, t);
    let mut g = c.benchmark_group("controller_cycle");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("baseline_step_only", |b| {
        b.iter(|| {
            t = t + Duration::from_secs(5);
            black_box(ctl.step(t, black_box(&snap)))
        })
    });
    g.bench_function("pull_step_push_50dc", |b| {
        b.iter(|| {
            t = t + Duration::from_secs(5);
            black_box(cycle(&mut bed, &mut ctl, t))
        })
    });
    g.finish();

    let runs = 3;
    let mut phases = [Duration::ZERO; 4];
    for _ in 0..runs {
        t = t + Duration::from_secs(5);
        for (p, d) in phases.iter_mut().zip(cycle(&mut bed, &mut ctl, t)) {
            *p += d / runs;
        }
    }
    let total: Duration = phases.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "controller cycle end to end, {} gateways, {} tunnel reports, {:.1} MB of reports: \
         {:.0} ms (pull {:.0} ms, merge {:.0} ms, engine {:.0} ms, push {:.0} ms); \
         ratio to the engine alone {:.1}x; peak RSS {} MiB (reports and servers included, {} MiB before)",
        bed.targets.len(),
        snap.tunnels.len(),
        bed.bytes as f64 / 1e6,
        ms(total),
        ms(phases[0]),
        ms(phases[1]),
        ms(phases[2]),
        ms(phases[3]),
        total.as_secs_f64() / phases[2].as_secs_f64().max(1e-9),
        peak_rss_kib() / 1024,
        rss_before / 1024,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
