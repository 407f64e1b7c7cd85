//! Gateways on the mesh, with real `serf agent`s in namespaces and transits through a router
//! namespace: each gateway is configured with only its own keys, transits, fabric and one
//! seed, and builds a WireGuard tunnel to every remote gateway for every pair of transits.
//!
//! ```text
//!   leaf-a ── a1, a2 (dc-a)  ──┐                 ┌── b1, b2 (dc-b) ── leaf-b
//!                              ├── router (ns) ──┤
//!                              └── c1 (dc-c) ────┘
//! ```
//!
//! Timings are printed; the deadlines are the issue's (60 s to a full mesh, 30 s for a
//! newcomer, 5 s after a clean leave, 10 s from the cache), wide for a loaded 2-core machine
//! since Serf runs its `local` profile here.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::GATEWAN;
use gatewan_control::gateway::control::{request, Request, Response};
use gatewan_testbed::{require, Need, Netns, ProcessId, Testbed, WgKeys};

/// The failed member's grace period in these tests.
const GRACE: Duration = Duration::from_secs(12);

struct Gw {
    name: &'static str,
    dc: &'static str,
    /// Mesh id and the last octet of its addresses.
    id: u8,
    netns: Netns,
    keys: WgKeys,
    config: PathBuf,
    socket: PathBuf,
    process: Option<ProcessId>,
}

fn statuses(socket: &Path) -> Option<(Vec<serde_json::Value>, serde_json::Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    match runtime.block_on(request(socket, &Request::Status)) {
        Ok(Response::Status {
            tunnels, dataplane, ..
        }) => Some((
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
fn established_by_peer(socket: &Path) -> BTreeMap<String, usize> {
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
fn routed(socket: &Path) -> bool {
    statuses(socket)
        .map(|s| s.0)
        .unwrap_or_default()
        .iter()
        .all(|t| t["origin"] != "mesh" || t["networks"].as_str().is_some_and(|n| !n.is_empty()))
}

fn mesh_tunnels_to(socket: &Path, peer: &str) -> usize {
    statuses(socket)
        .map(|s| s.0)
        .unwrap_or_default()
        .iter()
        .filter(|t| t["origin"] == "mesh" && t["peer"] == peer)
        .count()
}

/// Waits until `ok` holds, at most `limit`; returns how long it took.
fn within(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

struct Mesh {
    tb: Testbed,
    gws: Vec<Gw>,
    serf_key: String,
    seed: String,
    leaves: Vec<Netns>,
}

impl Mesh {
    fn gw(&self, name: &str) -> &Gw {
        self.gws
            .iter()
            .find(|g| g.name == name)
            .expect("a gateway of the test")
    }

    fn write_config(&self, g: &Gw, seeds: &[String]) {
        self.write_config_with(g, seeds, &self.serf_key, &[]);
    }

    /// `serf_key` for the agent, and `extra_prefixes` published beside the datacenter's own.
    fn write_config_with(&self, g: &Gw, seeds: &[String], serf_key: &str, extra_prefixes: &[&str]) {
        let i = g.id;
        let dc_index = match g.dc {
            "dc-a" => 1,
            "dc-b" => 2,
            _ => 3,
        };
        let state = self.tb.dir().join(format!("{}-state", g.name));
        let mut y = format!(
            "name: {name}\ndatacenter: {dc}\nprivate_key: {key}\ncontrol_socket: {sock}\n\
             probe:\n  interval: 200ms\n  window: 50\ntransits:\n\
             \x20 - name: lumen\n    listen: \"172.16.0.{i}:51820\"\n\
             \x20 - name: telstra\n    listen: \"172.16.0.{i}:51821\"\n\
             dataplane:\n  backend: socket\n  workers: 1\n\
             mesh:\n  id: {i}\n  bind:\n    - transit: lumen\n      address: \"172.16.0.{i}:7946\"\n\
             \x20 seeds: [{seeds}]\n  keys: [\"{serf_key}\"]\n  rpc_auth: test-rpc-secret\n\
             \x20 state_dir: {state}\n  profile: local\n  failed_grace: {grace}s\n\
             \x20 pools:\n    v4: 100.64.0.0/16\n    v6: \"fd00:5d::/64\"\n",
            name = g.name,
            dc = g.dc,
            key = g.keys.private,
            sock = g.socket.display(),
            seeds = seeds
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            serf_key = serf_key,
            state = state.display(),
            grace = GRACE.as_secs(),
        );
        if dc_index <= 2 {
            y.push_str(&format!(
                "fabric:\n  vtep: 10.{dc_index}.{i}.1\n  router_mac: \"02:00:0a:00:00:{i:02x}\"\n  vni: 100\n\
                 \x20 local_routes:\n    - prefix: 10.{dc_index}0.0.0/16\n      vtep: 10.{dc_index}.0.2\n\
                 \x20     router_mac: \"02:00:0a:00:{dc_index:02x}:02\"\n"
            ));
            for p in extra_prefixes {
                y.push_str(&format!(
                    "    - prefix: {p}\n      vtep: 10.{dc_index}.0.2\n      router_mac: \"02:00:0a:00:{dc_index:02x}:02\"\n"
                ));
            }
        } else if !extra_prefixes.is_empty() {
            // dc-c has no leaf: a fabric on the uplink address, only to publish prefixes.
            y.push_str(&format!(
                "fabric:\n  vtep: 172.16.0.{i}\n  router_mac: \"02:00:0a:00:00:{i:02x}\"\n  vni: 100\n\
                 \x20 local_routes:\n"
            ));
            for p in ["10.30.0.0/16"].iter().chain(extra_prefixes) {
                y.push_str(&format!(
                    "    - prefix: {p}\n      vtep: 172.16.0.254\n      router_mac: \"02:00:0a:00:03:02\"\n"
                ));
            }
        }
        std::fs::write(&g.config, y).expect("write the gateway configuration");
    }

    fn start(&mut self, name: &str) {
        let pos = self
            .gws
            .iter()
            .position(|g| g.name == name)
            .expect("gateway");
        let g = &self.gws[pos];
        let _ = std::fs::remove_file(&g.socket);
        let process = self
            .tb
            .spawn(
                &g.netns,
                GATEWAN,
                [
                    "gateway",
                    "--config",
                    g.config.to_str().expect("utf-8 path"),
                ],
            )
            .expect("start gatewan gateway");
        let socket = g.socket.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                self.tb.is_running(process) && Instant::now() < deadline,
                "{name} did not come up:\n{}",
                self.tb.log(process)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.gws[pos].process = Some(process);
    }

    fn stop(&mut self, name: &str, crash: bool) {
        let pos = self
            .gws
            .iter()
            .position(|g| g.name == name)
            .expect("gateway");
        if let Some(p) = self.gws[pos].process.take() {
            if crash {
                self.tb.kill(p);
            } else {
                self.tb.stop(p, Duration::from_secs(10));
            }
        }
    }

    fn log(&self, name: &str) -> String {
        self.gw(name)
            .process
            .map(|p| self.tb.log(p))
            .unwrap_or_default()
    }
}

/// The router, the gateways (one address each on a /24 of the router: both transits use it,
/// on two ports), and one leaf per datacenter behind both of its gateways.
fn random_serf_key() -> String {
    let mut key = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut key);
    }
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn build() -> Mesh {
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
    let plan: [(&'static str, &'static str, u8); 5] = [
        ("a1", "dc-a", 1),
        ("a2", "dc-a", 2),
        ("b1", "dc-b", 3),
        ("b2", "dc-b", 4),
        ("c1", "dc-c", 5),
    ];
    let mut gws = Vec::new();
    for (name, dc, id) in plan {
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
        let leaf = tb.add_netns(&format!("leaf{d}")).expect("leaf namespace");
        for key in ["all", "default"] {
            leaf.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")
                .expect("rp_filter");
        }
        leaf.ip(["addr", "add", &format!("10.{d}.0.2/32"), "dev", "lo"])
            .expect("leaf vtep");
        for g in gws.iter().filter(|g| g.dc == dc) {
            let (leaf_side, gw_side) = tb.add_veth(&leaf, &g.netns, 1).expect("fabric link");
            leaf_side
                .add_addr(&format!("10.{d}.{}.2/24", g.id))
                .expect("leaf address");
            gw_side
                .add_addr(&format!("10.{d}.{}.1/24", g.id))
                .expect("gateway vtep");
            g.netns
                .route(&format!("10.{d}.0.2/32"), &format!("via 10.{d}.{}.2", g.id))
                .expect("route to the leaf vtep");
        }
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
    let mut mesh = Mesh {
        tb,
        gws: Vec::new(),
        serf_key,
        seed: "172.16.0.1:7946".into(),
        leaves,
    };
    mesh.gws = gws;
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

#[test]
fn netns_serf_gateways_build_tunnels_from_the_mesh() {
    require(&[
        Need::Root,
        Need::Tool("serf"),
        Need::Tool("wg"),
        Need::Tool("ethtool"),
    ]);
    let mut mesh = build();
    let start = Instant::now();
    for name in ["a1", "a2", "b1", "b2"] {
        mesh.start(name);
    }
    // Every gateway: 2 remote gateways x 2 x 2 transit pairs, all Established.
    let full = |m: &Mesh, name: &str, peers: &[&str], per_peer: usize| {
        let by_peer = established_by_peer(&m.gw(name).socket);
        peers
            .iter()
            .all(|p| by_peer.get(*p).copied() == Some(per_peer))
            && routed(&m.gw(name).socket)
    };
    let took = within(Duration::from_secs(60), "the full mesh", || {
        full(&mesh, "a1", &["b1", "b2"], 4)
            && full(&mesh, "a2", &["b1", "b2"], 4)
            && full(&mesh, "b1", &["a1", "a2"], 4)
            && full(&mesh, "b2", &["a1", "a2"], 4)
    });
    println!(
        "full mesh (4 gateways x 8 tunnels Established): {:.1} s after start",
        took.as_secs_f64()
    );
    println!(
        "  from the first gateway's start: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // `gatewan members --config` finds the gateway's own agent (address and RPC key).
    let a1 = mesh.gw("a1");
    let members = a1
        .netns
        .exec(
            GATEWAN,
            [
                "members",
                "--config",
                a1.config.to_str().expect("utf-8 path"),
                "--json",
            ],
        )
        .expect("gatewan members --config");
    let members: serde_json::Value = serde_json::from_str(&members).expect("members JSON");
    for name in ["a1", "a2", "b1", "b2"] {
        assert_eq!(
            members["members"][name]["status"], "alive",
            "{name} in {members:#}"
        );
    }
    assert!(
        members["members"]["b1"]["prefixes"].is_object(),
        "{members:#}"
    );
    // Both ends derived the same identity for each tunnel.
    let ids = |name: &str| -> std::collections::BTreeSet<String> {
        statuses(&mesh.gw(name).socket)
            .map(|s| s.0)
            .unwrap_or_default()
            .iter()
            .filter(|t| t["origin"] == "mesh")
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect()
    };
    let (a1, b1) = (ids("a1"), ids("b1"));
    assert_eq!(
        a1.intersection(&b1).count(),
        4,
        "a1 and b1 share 4 tunnel ids"
    );

    // Traffic between the leaves, both ways, through the mesh-built tunnels (the return
    // path spreads over the tunnels of both of the other datacenter's gateways).
    let (leaf_a, leaf_b) = (&mesh.leaves[0], &mesh.leaves[1]);
    leaf_a
        .exec(
            "ping",
            [
                "-c",
                "20",
                "-i",
                "0.05",
                "-W",
                "5",
                "-I",
                "10.10.0.1",
                "10.20.0.1",
            ],
        )
        .unwrap_or_else(|e| {
            let tunnels = statuses(&mesh.gw("a1").socket).map(|s| s.0);
            panic!(
                "ping dc-a -> dc-b: {e}\na1's tunnels: {tunnels:#?}\n{}",
                mesh.log("a1")
            )
        });
    leaf_b
        .exec(
            "ping",
            [
                "-c",
                "20",
                "-i",
                "0.05",
                "-W",
                "5",
                "-I",
                "10.20.0.1",
                "10.10.0.1",
            ],
        )
        .expect("ping dc-b -> dc-a");

    // A third datacenter's gateway joins: tunnels to it everywhere within 30 s.
    mesh.start("c1");
    let joined = within(Duration::from_secs(30), "tunnels to c1", || {
        ["a1", "a2", "b1", "b2"]
            .iter()
            .all(|g| established_by_peer(&mesh.gw(g).socket).get("c1") == Some(&4))
    });
    println!(
        "c1 joined: tunnels Established everywhere after {:.1} s",
        joined.as_secs_f64()
    );

    // It leaves gracefully: its tunnels are gone within 5 s.
    let t0 = Instant::now();
    mesh.stop("c1", false);
    println!("c1 stopped in {:.1} s", t0.elapsed().as_secs_f64());
    let left = within(
        Duration::from_secs(5),
        "c1's tunnels removed after its leave",
        || {
            ["a1", "b1"]
                .iter()
                .all(|g| mesh_tunnels_to(&mesh.gw(g).socket, "c1") == 0)
        },
    );
    println!("c1 left: tunnels removed after {:.1} s", left.as_secs_f64());

    // Back, then killed: its tunnels stay for the grace period, then go.
    mesh.start("c1");
    within(Duration::from_secs(30), "c1 back", || {
        established_by_peer(&mesh.gw("a1").socket).get("c1") == Some(&4)
    });
    mesh.stop("c1", true);
    let killed = Instant::now();
    within(Duration::from_secs(30), "c1 seen failed", || {
        statuses(&mesh.gw("a1").socket)
            .and_then(|s| s.1["mesh"]["members"]["failed"].as_u64())
            .unwrap_or(0)
            >= 1
    });
    assert_eq!(
        mesh_tunnels_to(&mesh.gw("a1").socket, "c1"),
        4,
        "a failed member keeps its tunnels during the grace period"
    );
    let gone = within(
        GRACE + Duration::from_secs(20),
        "c1's tunnels after the grace",
        || mesh_tunnels_to(&mesh.gw("a1").socket, "c1") == 0,
    );
    let after = killed.elapsed();
    assert!(
        after >= GRACE,
        "c1's tunnels went {after:?} after the kill, before the {GRACE:?} grace"
    );
    println!(
        "c1 killed: tunnels removed {:.1} s after the kill (grace {} s)",
        after.as_secs_f64(),
        GRACE.as_secs()
    );
    println!("  (removal seen {:.1} s into the wait)", gone.as_secs_f64());

    // a2 crashes and comes back with its seed down (a1 stopped): its cached view brings its
    // tunnels to dc-b back at once, before any mesh answer.
    mesh.stop("a2", true);
    mesh.stop("a1", false);
    let restart = Instant::now();
    mesh.start("a2");
    let cached = within(
        Duration::from_secs(10),
        "a2's tunnels from its cache",
        || {
            let by_peer = established_by_peer(&mesh.gw("a2").socket);
            by_peer.get("b1") == Some(&4) && by_peer.get("b2") == Some(&4)
        },
    );
    println!(
        "a2 restarted with its seed down: 8 tunnels Established from the cache after {:.1} s",
        cached.as_secs_f64()
    );
    println!(
        "  ({:.1} s from the restart)",
        restart.elapsed().as_secs_f64()
    );
    let (_, dataplane) = statuses(&mesh.gw("a2").socket).expect("a2 status");
    assert!(dataplane["mesh"]["node"] == "a2", "{dataplane}");
    for name in ["a2", "b1", "b2"] {
        mesh.stop(name, false);
    }
}

/// `gatewan status --gateway`'s mesh section of a gateway.
fn mesh_status(socket: &Path) -> serde_json::Value {
    statuses(socket)
        .map(|s| s.1["mesh"].clone())
        .unwrap_or_default()
}

/// A bare agent that joins the mesh with the right key but tags no gateway can use.
fn start_garbage_agent(mesh: &mut Mesh, netns: &Netns, bind: &str) -> ProcessId {
    let dir = mesh.tb.dir().join("garbage-agent");
    std::fs::create_dir_all(&dir).expect("agent dir");
    let keyring = dir.join("keyring.json");
    std::fs::write(&keyring, format!("[\"{}\"]", mesh.serf_key)).expect("keyring");
    let config = serde_json::json!({
        "node_name": "x1",
        "bind": bind,
        "rpc_addr": "127.0.0.1:7373",
        "profile": "local",
        "keyring_file": keyring.display().to_string(),
        "start_join": [mesh.seed],
        "tags": {"role": "gateway", "dc": "dc-x", "id": "9", "t.lumen": "not-a-key,nowhere"},
    });
    let path = dir.join("agent.json");
    std::fs::write(&path, config.to_string()).expect("agent config");
    mesh.tb
        .spawn(
            netns,
            "serf",
            ["agent", &format!("-config-file={}", path.display())],
        )
        .expect("serf agent")
}

#[test]
fn netns_serf_wrong_keys_garbage_tags_captured_prefixes_and_a_short_serf_outage() {
    require(&[
        Need::Root,
        Need::Tool("serf"),
        Need::Tool("wg"),
        Need::Tool("ethtool"),
        Need::Tool("nft"),
    ]);
    let mut mesh = build();
    let seeds = vec![mesh.seed.clone()];
    for name in ["a1", "b1", "b2"] {
        mesh.start(name);
    }
    let (a1, b1) = (mesh.gw("a1").socket.clone(), mesh.gw("b1").socket.clone());
    within(
        Duration::from_secs(60),
        "the tunnels between dc-a and dc-b",
        || {
            let by_peer = established_by_peer(&a1);
            by_peer.get("b1") == Some(&4)
                && by_peer.get("b2") == Some(&4)
                && routed(&a1)
                && established_by_peer(&b1).get("a1") == Some(&4)
                && routed(&b1)
        },
    );
    mesh.leaves[0]
        .exec(
            "ping",
            [
                "-c",
                "5",
                "-i",
                "0.1",
                "-W",
                "2",
                "-I",
                "10.10.0.1",
                "10.20.0.1",
            ],
        )
        .expect("ping dc-a -> dc-b");
    let ids = |socket: &Path| -> Vec<String> {
        statuses(socket)
            .map(|s| s.0)
            .unwrap_or_default()
            .iter()
            .filter(|t| t["peer"] != "c1")
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect()
    };
    let ids_before = ids(&a1);

    // A gateway whose agent has another key never gets a tunnel, either way.
    mesh.write_config_with(mesh.gw("c1"), &seeds, &random_serf_key(), &[]);
    mesh.start("c1");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(mesh_tunnels_to(&a1, "c1"), 0);
    assert_eq!(mesh_tunnels_to(&b1, "c1"), 0);
    assert_eq!(
        statuses(&mesh.gw("c1").socket)
            .map(|s| s.0.len())
            .unwrap_or(usize::MAX),
        0,
        "the outsider built no tunnel"
    );
    println!("a gateway with another Serf key: no tunnel after 8 s");
    mesh.stop("c1", false);

    // With the right key, c1 also claims a prefix inside dc-a's 10.10.0.0/16: it gets its
    // tunnels, that prefix is refused and shown, its own is routed, nothing else changes.
    let _ = std::fs::remove_dir_all(mesh.tb.dir().join("c1-state"));
    mesh.write_config_with(mesh.gw("c1"), &seeds, &mesh.serf_key, &["10.10.5.0/24"]);
    mesh.start("c1");
    within(Duration::from_secs(30), "c1's tunnels, routed", || {
        established_by_peer(&a1).get("c1") == Some(&4) && routed(&a1)
    });
    let st = mesh_status(&a1);
    let refused = st["refused_prefixes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        refused
            .iter()
            .any(|r| r["member"] == "c1" && r["prefix"] == "10.10.5.0/24"),
        "{st:#}"
    );
    let (tunnels, _) = statuses(&a1).expect("a1 status");
    for t in tunnels.iter().filter(|t| t["origin"] == "mesh") {
        let want = if t["peer"] == "c1" {
            "10.30.0.0/16"
        } else {
            "10.20.0.0/16"
        };
        assert_eq!(t["networks"], want, "{t:#}");
    }
    assert_eq!(ids(&a1), ids_before, "the other tunnels are untouched");
    println!("c1's prefix inside dc-a's: refused at a1 and shown, its own routed");
    mesh.stop("c1", false);
    within(Duration::from_secs(10), "c1 gone", || {
        mesh_tunnels_to(&a1, "c1") == 0
    });

    // A member with garbage tags: counted and shown, nothing else changes.
    let netns = mesh.gw("c1").netns.clone();
    let garbage = start_garbage_agent(&mut mesh, &netns, "172.16.0.5:7946");
    within(Duration::from_secs(30), "the garbage member seen", || {
        mesh_status(&a1)["members"]["alive"].as_u64() == Some(4)
    });
    within(Duration::from_secs(10), "its tags refused", || {
        mesh_status(&a1)["bad_tags"].as_u64().unwrap_or(0) >= 1
    });
    let ids_after = ids(&a1);
    assert_eq!(ids_before, ids_after, "the garbage member changed nothing");
    assert_eq!(mesh_tunnels_to(&a1, "x1"), 0);
    println!(
        "a member with garbage tags: counted as bad tags, {} tunnels unchanged",
        ids_after.len()
    );
    mesh.tb.stop(garbage, Duration::from_secs(5));

    // b1's Serf traffic alone is blocked for less than the grace period: it is seen failed,
    // its tunnels stay, and traffic through them loses nothing.
    let b1_ns = mesh.gw("b1").netns.clone();
    b1_ns
        .exec(
            "nft",
            ["add table inet serfblock; \
                 add chain inet serfblock in { type filter hook input priority 0; }; \
                 add chain inet serfblock out { type filter hook output priority 0; }; \
                 add rule inet serfblock in udp dport 7946 drop; \
                 add rule inet serfblock in tcp dport 7946 drop; \
                 add rule inet serfblock out udp sport 7946 drop; \
                 add rule inet serfblock out tcp sport 7946 drop"],
        )
        .expect("block b1's Serf traffic");
    let blocked = Instant::now();
    // -W bounds each reply; a lost packet shows in the summary, asserted below.
    let ping = mesh.leaves[0]
        .output(
            "ping",
            [
                "-c",
                "160",
                "-i",
                "0.05",
                "-W",
                "2",
                "-q",
                "-I",
                "10.10.0.1",
                "10.20.0.1",
            ],
        )
        .expect("ping through the outage");
    let ping = String::from_utf8_lossy(&ping.stdout).into_owned();
    let failed_seen = mesh_status(&a1)["members"]["failed"].as_u64().unwrap_or(0);
    let kept = mesh_tunnels_to(&a1, "b1");
    let outage = blocked.elapsed();
    b1_ns
        .exec("nft", ["delete table inet serfblock"])
        .expect("unblock");
    println!(
        "b1's Serf blocked {:.1} s: failed at a1: {}, its tunnels kept: {kept}; {}",
        outage.as_secs_f64(),
        failed_seen >= 1,
        ping.lines()
            .find(|l| l.contains("packet loss"))
            .unwrap_or("")
    );
    assert!(outage < GRACE, "the outage outlasted the grace period");
    assert!(failed_seen >= 1, "a1 saw b1 failed during the outage");
    assert_eq!(kept, 4, "b1's tunnels stay through a short Serf outage");
    assert!(
        ping.contains(" 0% packet loss"),
        "packets lost through the outage: {ping}"
    );
    for name in ["a1", "b1", "b2"] {
        mesh.stop(name, false);
    }
}
