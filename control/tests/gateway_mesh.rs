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
mod mesh_common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::GATEWAN;
use gatewan_testbed::{require, Need, Netns, ProcessId};
use mesh_common::*;

/// The gateways of these tests: (name, datacenter, mesh id).
const PLAN: [(&str, &str, u8); 5] = [
    ("a1", "dc-a", 1),
    ("a2", "dc-a", 2),
    ("b1", "dc-b", 3),
    ("b2", "dc-b", 4),
    ("c1", "dc-c", 5),
];

#[test]
fn netns_serf_gateways_build_tunnels_from_the_mesh() {
    require(&[
        Need::Root,
        Need::Tool("serf"),
        Need::Tool("wg"),
        Need::Tool("ethtool"),
    ]);
    let mut mesh = build(&PLAN, &Options::default());
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

    // It leaves gracefully: its tunnels are gone within 5 s wherever the agent saw the leave.
    // Serf gossips the leave intent a few times only (twice per node with the `local`
    // profile), so an agent can miss it and see the member fail instead: that gateway keeps
    // the tunnels for the grace period, as for any failure (docs/mesh.md).
    let t0 = Instant::now();
    mesh.stop("c1", false);
    println!("c1 stopped in {:.1} s", t0.elapsed().as_secs_f64());
    let saw_leave = |g: &str| mesh.log(g).contains(r#"member=c1 status="left""#);
    let stopped = Instant::now();
    for g in ["a1", "b1"] {
        while mesh_tunnels_to(&mesh.gw(g).socket, "c1") > 0 {
            let limit = if saw_leave(g) {
                Duration::from_secs(5)
            } else {
                GRACE + Duration::from_secs(5)
            };
            assert!(
                stopped.elapsed() < limit,
                "c1's tunnels at {g}: still there {:?} after its leave (its agent saw it {})",
                stopped.elapsed(),
                if saw_leave(g) { "leave" } else { "fail" }
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "c1 left: tunnels removed at {g} {:.1} s after it stopped (its agent saw it {})",
            stopped.elapsed().as_secs_f64(),
            if saw_leave(g) { "leave" } else { "fail" }
        );
    }

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
    let mut mesh = build(&PLAN, &Options::default());
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
