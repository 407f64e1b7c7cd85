//! The mesh test bed: gateways with real `serf agent`s in namespaces, transits through a
//! router namespace, a leaf per datacenter with kernel VXLAN, optionally the orders channel
//! (certificates from `gatewan pki`) and controllers. One typed plan builds it; the tests
//! drive it.
//!
//! ```text
//!   leaf1 ── a1, a2 (dc-a)  ──┐                 ┌── b1, b2 (dc-b) ── leaf2
//!                             ├── router (ns) ──┤
//!                             └── c1 (dc-c), controllers
//! ```

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatewan_control::gateway::control::{request, ControlAnswer, Request, Response};
use gatewan_testbed::config::{self, ToYaml as _};
use gatewan_testbed::{Netns, ProcessId, Testbed, WgKeys};

use crate::common::GATEWAN;

pub mod fabric;

/// The failed member's grace period in these tests.
pub const GRACE: Duration = Duration::from_secs(12);

pub struct Gw {
    pub name: &'static str,
    pub dc: &'static str,
    /// Mesh id and the last octet of its addresses.
    pub id: u8,
    pub netns: Netns,
    pub keys: WgKeys,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub process: Option<ProcessId>,
}

/// One request to a control socket (a gateway's or a controller's); None if it fails.
pub fn ask<Q: serde::Serialize, R: ControlAnswer>(socket: &Path, q: &Q) -> Option<R> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(request(socket, q)).ok()
}

pub fn statuses(socket: &Path) -> Option<(Vec<serde_json::Value>, serde_json::Value)> {
    match ask(socket, &Request::Status)? {
        Response::Status {
            tunnels, dataplane, ..
        } => Some((
            tunnels
                .iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect(),
            serde_json::to_value(&dataplane).ok()?,
        )),
        _ => None,
    }
}

/// Mesh tunnels Established, by peer.
pub fn established_by_peer(socket: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for t in statuses(socket).map(|s| s.0).unwrap_or_default() {
        if t["origin"] == "mesh" && t["state"] == "Established" {
            *out.entry(t["peer"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    out
}

/// Whether every mesh tunnel routes its peer datacenter's prefixes (their lists arrived).
pub fn routed(socket: &Path) -> bool {
    statuses(socket)
        .map(|s| s.0)
        .unwrap_or_default()
        .iter()
        .all(|t| t["origin"] != "mesh" || t["networks"].as_str().is_some_and(|n| !n.is_empty()))
}

pub fn mesh_tunnels_to(socket: &Path, peer: &str) -> usize {
    statuses(socket)
        .map(|s| s.0)
        .unwrap_or_default()
        .iter()
        .filter(|t| t["origin"] == "mesh" && t["peer"] == peer)
        .count()
}

/// Waits until `ok` holds, at most `limit`; returns how long it took.
pub fn within(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

pub struct Mesh {
    pub tb: Testbed,
    pub gws: Vec<Gw>,
    pub serf_key: String,
    pub seed: String,
    pub leaves: Vec<Netns>,
    pub router: Netns,
    pub options: Options,
    /// The deployment's CA and every member's certificate, with the orders channel.
    pub pki: PathBuf,
    pub controllers: Vec<Ctl>,
    /// With [`Options::frr`]: per datacenter, its leaf's FRR and its bgpctl.
    pub fabrics: Vec<fabric::Fabric>,
}

/// How the test bed is built.
#[derive(Clone, Debug)]
pub struct Options {
    /// Gateways serve the orders channel (`api:`), with certificates from `gatewan pki`.
    pub api: bool,
    pub probe_interval_ms: u32,
    /// FRR leaves (bgpd + zebra, EVPN L3VNI 100) and bgpctls per datacenter
    /// ([`fabric`]): no static route anywhere. Needs `api`.
    pub frr: bool,
    /// With `frr`: how many bgpctls each datacenter runs.
    pub bgpctls: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api: false,
            probe_interval_ms: 200,
            frr: false,
            bgpctls: 1,
        }
    }
}

/// A controller of the test bed, in its own namespace on the router's bridge.
pub struct Ctl {
    pub name: String,
    pub netns: Netns,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub process: Option<ProcessId>,
}

/// The controllers' policy in these tests: one-second cycles, short holds.
pub const TEST_POLICY: &str = "cycle_period_s: 1
sla_classes:
  - { name: bulk, max_loss_pct: 2, max_latency_ms: 400, max_jitter_ms: 100 }
pairs:
  default: { sla: bulk, capacity: { demand: { margin_pct: 50, min: 10M } }, min_tunnels: 2 }
health:
  min_measurements: 10
  blackhole_lost_in_a_row: 3
  brownout_loss_pct: 2
  recovery_hold_s: 20
anti_flap:
  min_dwell_s: 5
  dampening: { flaps: 10, window_s: 60, hold_s: 30 }
";

/// The Serf RPC secret of the test bed's agents.
pub const RPC_AUTH: &str = "test-rpc-secret";

impl Mesh {
    /// The `mesh:` section of a member that is not a gateway (controller, bgpctl) at `addr`.
    pub fn member(&self, name: &str, addr: &str) -> config::Member {
        config::Member {
            bind: format!("{addr}:7946"),
            seeds: vec![self.seed.clone()],
            keys: vec![self.serf_key.clone()],
            rpc_auth: Some(RPC_AUTH.into()),
            state_dir: self.tb.dir().join(format!("{name}-state")),
            profile: Some("local".into()),
        }
    }

    /// A member's certificate and key (issued once).
    pub fn issue(&self, role: &str, name: &str) -> (PathBuf, PathBuf) {
        use gatewan_control::channel::{pki, Identity};
        let (cert, key) = (
            self.pki.join(format!("{name}.{role}.pem")),
            self.pki.join(format!("{name}.{role}.key")),
        );
        if !cert.exists() {
            let id = Identity::new(role.parse().expect("a role"), name).expect("an identity");
            pki::issue(&self.pki, &id, &self.pki, 30).expect("a certificate");
        }
        (cert, key)
    }

    /// A controller in its own namespace at 172.16.0.(100 + n), seeded with a1's agent.
    pub fn add_controller(&mut self, name: &str, n: u8) {
        let netns = self.tb.add_netns(name).expect("controller namespace");
        let (up, router_side) = self.tb.add_veth(&netns, &self.router, 1).expect("uplink");
        up.add_addr(&format!("172.16.0.{}/24", 100 + n))
            .expect("address");
        self.router
            .ip(["link", "set", &router_side.name, "master", "br0"])
            .expect("into the bridge");
        let (cert, key) = self.issue("controller", name);
        let dir = self.tb.dir().to_path_buf();
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, TEST_POLICY).expect("policy");
        let (config, socket) = (
            dir.join(format!("{name}.yaml")),
            dir.join(format!("{name}.sock")),
        );
        let y = config::Controller {
            name: name.into(),
            policy,
            control_socket: socket.clone(),
            deadline: Some("900ms".into()),
            snapshot_dir: Some(dir.join(format!("{name}-snapshots"))),
            keep_snapshots: Some(20),
            mesh: self.member(name, &format!("172.16.0.{}", 100 + n)),
            api: config::Tls {
                ca: self.pki.join("ca.pem"),
                cert,
                key,
            },
        };
        y.write(&config, "the mesh tests")
            .expect("controller configuration");
        self.controllers.push(Ctl {
            name: name.to_owned(),
            netns,
            config,
            socket,
            process: None,
        });
    }

    pub fn ctl(&self, name: &str) -> &Ctl {
        self.controllers
            .iter()
            .find(|c| c.name == name)
            .expect("a controller of the test")
    }

    pub fn start_controller(&mut self, name: &str) {
        let pos = self
            .controllers
            .iter()
            .position(|c| c.name == name)
            .expect("controller");
        let c = &self.controllers[pos];
        let (netns, config, socket) = (c.netns.clone(), c.config.clone(), c.socket.clone());
        let process = self.spawn_until_socket(&netns, "controller", &config, &socket, name);
        self.controllers[pos].process = Some(process);
    }

    /// Starts `gatewan <what> --config <config>` in `netns` and waits for its control socket.
    pub fn spawn_until_socket(
        &mut self,
        netns: &Netns,
        what: &str,
        config: &Path,
        socket: &Path,
        name: &str,
    ) -> ProcessId {
        let _ = std::fs::remove_file(socket);
        let args = [what, "--config", config.to_str().expect("utf-8 path")];
        self.tb
            .spawn_until_exists(netns, GATEWAN, &args, socket)
            .unwrap_or_else(|e| panic!("{name} did not come up: {e}"))
    }

    pub fn stop_controller(&mut self, name: &str, crash: bool) {
        let pos = self
            .controllers
            .iter()
            .position(|c| c.name == name)
            .expect("controller");
        let process = self.controllers[pos].process.take();
        self.end(process, crash);
    }

    /// Stops a process of the bed: SIGKILL (`crash`) or SIGTERM with 10 s of grace.
    pub fn end(&mut self, process: Option<ProcessId>, crash: bool) {
        match process {
            Some(p) if crash => self.tb.kill(p),
            Some(p) => self.tb.stop(p, Duration::from_secs(10)),
            None => {}
        }
    }

    /// `gatewan controller status --json`, or Null when it does not answer.
    pub fn controller_status(&self, name: &str) -> serde_json::Value {
        use gatewan_control::controller::daemon::status::{Request, Response};
        match ask(&self.ctl(name).socket, &Request::Status) {
            Some(Response::Status(s)) => serde_json::to_value(&s).unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    /// `gatewan controller explain FROM TO` on `ctl`, or Null.
    pub fn explain(&self, ctl: &str, from: &str, to: &str) -> serde_json::Value {
        use gatewan_control::controller::daemon::status::{Request, Response};
        let q = Request::Explain {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        match ask(&self.ctl(ctl).socket, &q) {
            Some(Response::Explain(v)) => v,
            _ => serde_json::Value::Null,
        }
    }

    /// The gateway's order status (`gatewan orders --json`), or Null.
    pub fn orders(&self, name: &str) -> serde_json::Value {
        match ask(&self.gw(name).socket, &Request::Orders) {
            Some(Response::Orders {
                orders,
                local_routes,
            }) => {
                let mut v = serde_json::to_value(&orders).unwrap_or_default();
                v["local_routes"] = serde_json::to_value(&local_routes).unwrap_or_default();
                v
            }
            _ => serde_json::Value::Null,
        }
    }

    pub fn ctl_log(&self, name: &str) -> String {
        self.ctl(name)
            .process
            .map(|p| self.tb.log(p))
            .unwrap_or_default()
    }

    pub fn gw(&self, name: &str) -> &Gw {
        self.gws
            .iter()
            .find(|g| g.name == name)
            .expect("a gateway of the test")
    }

    pub fn write_config(&self, g: &Gw, seeds: &[String]) {
        self.write_config_with(g, seeds, &self.serf_key, &[]);
    }

    /// `serf_key` for the agent, and `extra_prefixes` published beside the datacenter's own.
    pub fn write_config_with(
        &self,
        g: &Gw,
        seeds: &[String],
        serf_key: &str,
        extra_prefixes: &[&str],
    ) {
        let i = g.id;
        let dc_index = match g.dc {
            "dc-a" => 1,
            "dc-b" => 2,
            _ => 3,
        };
        let fabric = |vtep: String, routes: Vec<config::LocalRoute>| config::Fabric {
            vtep,
            router_mac: format!("02:00:0a:00:00:{i:02x}"),
            vni: 100,
            local_routes: routes,
        };
        let route = |prefix: &str, vtep: &str, mac: String| config::LocalRoute {
            prefix: prefix.into(),
            vtep: vtep.into(),
            router_mac: mac,
        };
        let fabric = if dc_index <= 2 && self.options.frr {
            // The fabric's routes come from bgpctl only.
            Some(fabric(format!("10.{dc_index}.{i}.1"), Vec::new()))
        } else if dc_index <= 2 {
            let (leaf, mac) = (
                format!("10.{dc_index}.0.2"),
                format!("02:00:0a:00:{dc_index:02x}:02"),
            );
            let own = format!("10.{dc_index}0.0.0/16");
            let routes = std::iter::once(own.as_str())
                .chain(extra_prefixes.iter().copied())
                .map(|p| route(p, &leaf, mac.clone()))
                .collect();
            Some(fabric(format!("10.{dc_index}.{i}.1"), routes))
        } else if !extra_prefixes.is_empty() {
            // dc-c has no leaf: a fabric on the uplink address, only to publish prefixes.
            let routes = std::iter::once("10.30.0.0/16")
                .chain(extra_prefixes.iter().copied())
                .map(|p| route(p, "172.16.0.254", "02:00:0a:00:03:02".into()))
                .collect();
            Some(fabric(format!("172.16.0.{i}"), routes))
        } else {
            None
        };
        let api = self.options.api.then(|| {
            let (cert, key) = self.issue("gateway", g.name);
            config::Api {
                listen: format!("172.16.0.{i}:7443"),
                tls: config::Tls {
                    ca: self.pki.join("ca.pem"),
                    cert,
                    key,
                },
                repair_hold: Some("20s".into()),
            }
        });
        let y = config::Gateway {
            name: g.name.into(),
            datacenter: g.dc.into(),
            private_key: g.keys.private.clone(),
            control_socket: g.socket.clone(),
            probe: Some(config::Probe {
                interval: format!("{}ms", self.options.probe_interval_ms),
                window: Some(50),
                timeout: None,
            }),
            transits: ["lumen", "telstra"]
                .iter()
                .enumerate()
                .map(|(t, name)| config::Transit {
                    name: (*name).into(),
                    listen: format!("172.16.0.{i}:{}", 51820 + t),
                    capacity: Some("1Gbps".into()),
                })
                .collect(),
            tunnels: Vec::new(),
            mesh: Some(config::GatewayMesh {
                id: i.into(),
                bind: vec![config::Bind {
                    transit: "lumen".into(),
                    address: format!("172.16.0.{i}:7946"),
                }],
                seeds: seeds.to_vec(),
                keys: vec![serf_key.into()],
                rpc_auth: Some(RPC_AUTH.into()),
                state_dir: self.tb.dir().join(format!("{}-state", g.name)),
                profile: Some("local".into()),
                failed_grace: Some(format!("{}s", GRACE.as_secs())),
                pools: config::Pools::lab(),
                echo_port: None,
            }),
            fabric,
            dataplane: Some(config::Dataplane {
                backend: "socket".into(),
                workers: Some(1),
                ..Default::default()
            }),
            api,
        };
        y.write(&g.config, "the mesh tests")
            .expect("write the gateway configuration");
    }

    pub fn start(&mut self, name: &str) {
        let pos = self
            .gws
            .iter()
            .position(|g| g.name == name)
            .expect("gateway");
        let g = &self.gws[pos];
        let (netns, config, socket) = (g.netns.clone(), g.config.clone(), g.socket.clone());
        let process = self.spawn_until_socket(&netns, "gateway", &config, &socket, name);
        self.gws[pos].process = Some(process);
    }

    pub fn stop(&mut self, name: &str, crash: bool) {
        let pos = self
            .gws
            .iter()
            .position(|g| g.name == name)
            .expect("gateway");
        let process = self.gws[pos].process.take();
        self.end(process, crash);
    }

    pub fn log(&self, name: &str) -> String {
        self.gw(name)
            .process
            .map(|p| self.tb.log(p))
            .unwrap_or_default()
    }
}

/// The router, the gateways (one address each on a /24 of the router: both transits use it,
/// on two ports), and one leaf per datacenter behind both of its gateways.
pub fn random_serf_key() -> String {
    let mut key = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut key);
    }
    base64::engine::general_purpose::STANDARD.encode(key)
}

pub fn build(plan: &[(&'static str, &'static str, u8)], options: &Options) -> Mesh {
    let mut tb = Testbed::new().expect("test bed");
    let router = tb.add_netns("router").expect("router namespace");
    router
        .sysctl("net.ipv4.ip_forward", "1")
        .expect("forwarding");
    router
        .ip(["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    router.ip(["link", "set", "br0", "up"]).expect("bridge up");
    router
        .ip(["addr", "add", "172.16.0.254/24", "dev", "br0"])
        .expect("bridge address");
    let serf_key = random_serf_key();
    let mut gws = Vec::new();
    for &(name, dc, id) in plan {
        let netns = tb.add_netns(name).expect("gateway namespace");
        let (up, router_side) = tb.add_veth(&netns, &router, 1).expect("uplink");
        up.add_addr(&format!("172.16.0.{id}/24")).expect("address");
        router
            .ip(["link", "set", &router_side.name, "master", "br0"])
            .expect("into the bridge");
        gws.push(Gw {
            name,
            dc,
            id,
            socket: tb.dir().join(format!("{name}.sock")),
            config: tb.dir().join(format!("{name}.yaml")),
            netns,
            keys: WgKeys::generate().expect("keys"),
            process: None,
        });
    }
    // Each leaf: kernel VXLAN towards its datacenter's gateways, the other datacenter's
    // prefix routed via its first gateway, a host address in its own prefix.
    let mut leaves = Vec::new();
    for (dc, d) in [("dc-a", 1u8), ("dc-b", 2u8)] {
        if options.frr {
            leaves.push(fabric::leaf(&mut tb, &gws, dc, d));
            continue;
        }
        let leaf = fabric::leaf_links(&mut tb, &gws, dc, d);
        leaf.add_vxlan(
            "vx0",
            100,
            &format!("10.{d}.0.2"),
            &format!("02:00:0a:00:{d:02x}:02"),
            Some(1420),
        )
        .expect("vxlan");
        leaf.exec("ethtool", ["-K", "vx0", "tx", "off"])
            .expect("ethtool");
        leaf.ip(["addr", "add", &format!("10.{d}0.0.1/32"), "dev", "lo"])
            .expect("host");
        let first = gws.iter().find(|g| g.dc == dc).expect("a gateway");
        let vtep = format!("10.{d}.{}.1", first.id);
        leaf.vxlan_remote("vx0", &vtep, &format!("02:00:0a:00:00:{:02x}", first.id))
            .expect("fdb");
        let other = 3 - d;
        leaf.ip([
            "route",
            "add",
            &format!("10.{other}0.0.0/16"),
            "via",
            &vtep,
            "dev",
            "vx0",
            "onlink",
            "src",
            &format!("10.{d}0.0.1"),
        ])
        .expect("route to the other datacenter");
        leaves.push(leaf);
    }
    let pki = tb.dir().join("pki");
    if options.api {
        gatewan_control::channel::pki::init(&pki, 30).expect("the test CA");
    }
    let mut mesh = Mesh {
        tb,
        gws: Vec::new(),
        serf_key,
        seed: "172.16.0.1:7946".into(),
        leaves,
        router,
        options: options.clone(),
        pki,
        controllers: Vec::new(),
        fabrics: Vec::new(),
    };
    mesh.gws = gws;
    if options.frr {
        for (dc, d) in [("dc-a", 1u8), ("dc-b", 2u8)] {
            let f = fabric::Fabric::start(&mut mesh, dc, d, options.bgpctls);
            mesh.fabrics.push(f);
        }
    }
    for g in &mesh.gws {
        // One seed each: a1's agent (a1 itself has none).
        let seeds = if g.name == "a1" {
            Vec::new()
        } else {
            vec![mesh.seed.clone()]
        };
        mesh.write_config(g, &seeds);
    }
    mesh
}
