//! The gateway's mesh tunnels at scale: 200 remote gateways in 10 datacenters with three
//! transits each, seen from a gateway with three transits: 200 x 3 x 3 = 1,800 tunnels.
//!
//! `cargo bench -p gatewan-bench --bench mesh -- --warm-up-time 1 --measurement-time 3`
//!
//! - `planner`: the tunnel planner alone (names, identities, inner addresses) — the baseline;
//! - `full recompute`: what the gateway does on every mesh view: the view's members checked
//!   and taken in, every datacenter's prefix list checked for overlaps (200 prefixes a
//!   datacenter, 2,000 in all), and the plan with each tunnel's settings.
//!
//! The memory a gateway holds for those tunnels is measured on a running gateway by
//! `cargo xtask mesh-scale` (docs/mesh.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use gatewan_bench::ratio::Ledger;
use gatewan_control::gateway::config::GatewayConfig;
use gatewan_control::gateway::mesh_tunnels::MeshTunnels;
use gatewan_control::gateway::planner::{self, RemoteGateway};
use gatewan_control::mesh::prefixes::{AppliedList, PrefixList};
use gatewan_control::mesh::tags::{GatewayMeta, Role, TransitMeta};
use gatewan_control::mesh::view::{GatewayEntry, GatewayStatus, MeshSnapshot};

const REMOTES: u32 = 200;
const DATACENTERS: u32 = 10;
const PREFIXES_PER_DC: u32 = 200;

fn config() -> GatewayConfig {
    let yaml = r#"
name: gw0
datacenter: dc-home
private_key: YNqHwpcAmVj0lVzPOkkAAP1hmgYPEtTy0aLaGJD8PW4=
transits:
  - {name: lumen, listen: "192.0.2.1:51820"}
  - {name: ntt, listen: "192.0.2.1:51821"}
  - {name: telstra, listen: "192.0.2.1:51822"}
fabric:
  vtep: 10.0.0.1
  router_mac: "02:00:00:00:00:01"
  vni: 100
  local_routes:
    - {prefix: 10.0.0.0/16, vtep: 10.0.0.2, router_mac: "02:00:00:00:00:02"}
mesh:
  id: 1
  bind: [{transit: lumen, address: "192.0.2.1:7946"}]
  keys: ["AAAAAAAAAAAAAAAAAAAAAA=="]
  rpc_auth: x
  state_dir: /nonexistent-gatewan-bench
  pools: {v4: 100.64.0.0/12, v6: "fd00:5d::/64"}
"#;
    match GatewayConfig::parse(yaml, std::path::Path::new("bench.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("bench configuration: {e}"),
    }
}

fn remote(i: u32) -> (GatewayEntry, RemoteGateway) {
    let dc = format!("dc{}", i % DATACENTERS);
    let transits: Vec<TransitMeta> = ["cogent", "gtt", "zayo"]
        .iter()
        .enumerate()
        .map(|(t, name)| TransitMeta {
            name: (*name).into(),
            public_key: [(i % 251) as u8 + 1; 32],
            endpoints: vec![SocketAddr::from((
                [198, 18, (i / 250) as u8, (i % 250) as u8],
                51820 + t as u16,
            ))],
        })
        .collect();
    let d = i % DATACENTERS;
    let prefixes = PrefixList::new((0..PREFIXES_PER_DC).map(|p| {
        let net: ipnet::IpNet = format!("10.{}.{}.0/24", 100 + d, p % 256)
            .parse()
            .unwrap_or_else(|_| panic!("prefix"));
        net
    }));
    let meta = GatewayMeta {
        role: Role::Gateway,
        datacenter: dc.clone(),
        transits: transits.clone(),
        echo_port: Some(7054),
        prefix_list: None,
        id: Some(i + 2),
        api: None,
        lead: None,
    };
    let name = format!("gw{}", i + 2);
    let entry = GatewayEntry {
        name: name.clone(),
        addr: SocketAddr::from(([198, 18, (i / 250) as u8, (i % 250) as u8], 7946)),
        status: GatewayStatus::Alive,
        meta: Some(meta),
        meta_error: None,
        prefixes: Some(AppliedList {
            origin: name.clone(),
            version: 1,
            digest: [0; 32],
            prefixes: Arc::new(prefixes),
        }),
        tags: BTreeMap::new(),
    };
    let remote = RemoteGateway {
        name,
        id: i + 2,
        datacenter: dc,
        echo_port: Some(7054),
        transits,
    };
    (entry, remote)
}

fn bench(c: &mut Criterion) {
    let config = config();
    let (entries, remotes): (Vec<_>, Vec<_>) = (0..REMOTES).map(remote).unzip();
    let snapshot = MeshSnapshot {
        local: "gw0".into(),
        agent_connected: true,
        members: entries.into_iter().map(|e| (e.name.clone(), e)).collect(),
        counters: Default::default(),
    };
    let now = Instant::now();
    let mut tunnels = MeshTunnels::new(&config, 1, std::time::Duration::from_secs(60), 4096);
    let (local, pools) = (tunnels.local().clone(), *tunnels.pools());
    tunnels.handle_view(&snapshot, now);
    let (orders, status) = tunnels.plan(now);
    assert_eq!(orders.len(), 1800, "{status:?}");
    assert_eq!(
        planner::plan(&local, &remotes, &pools, &[]).tunnels.len(),
        1800
    );

    let ledger = Ledger::new();
    let mut group = c.benchmark_group("mesh tunnels, 200 gateways x 3x3 transits");
    group.bench_function("planner", |b| {
        ledger.iter(b, "planner", || {
            planner::plan(&local, &remotes, &pools, &[])
        })
    });
    group.bench_function("full recompute", |b| {
        ledger.iter(b, "full recompute", || {
            tunnels.handle_view(&snapshot, now);
            tunnels.plan(now)
        })
    });
    group.finish();
    ledger.report(
        "mesh tunnels per full plan of 1,800 (ns per plan)",
        "planner",
        1,
        None,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
