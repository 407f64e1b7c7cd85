//! bgpctl in the loop, with real FRR leaves (bgpd + zebra, kernel VXLAN, L3VNI 100), `serf
//! agent`s, gateways, a controller and a bgpctl per datacenter in namespaces: two
//! datacenters x two gateways. No static route anywhere: leaves learn the remote prefixes
//! from bgpctl only, gateways their local routes from bgpctl only, remote prefixes travel
//! over the mesh only.
//!
//! Figures are printed; the deadlines are the (a new prefix routed across within
//! 10 s, a gateway dropped from an order gone from the leaf's next hops within 2 s, no loss
//! through a bgpctl restart: each datacenter runs two).

mod common;
mod mesh_common;

use std::time::{Duration, Instant};

use gatewan_testbed::flows;
use gatewan_testbed::{require, Need, Netns};
use mesh_common::*;

const PLAN: [(&str, &str, u8); 4] = [
    ("a1", "dc-a", 1),
    ("a2", "dc-a", 2),
    ("b1", "dc-b", 3),
    ("b2", "dc-b", 4),
];

/// The remote datacenters `gw`'s order gives tunnels towards.
fn ordered_towards(mesh: &Mesh, gw: &str) -> Vec<String> {
    mesh.orders(gw)["order"]["remotes"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, ts)| {
                    ts.as_array()
                        .is_some_and(|a| a.iter().any(|t| t["weight"].as_u64() > Some(0)))
                })
                .map(|(dc, _)| dc.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `ping` from `src` at `from` reaches `dst` once.
fn pings(from: &Netns, src: &str, dst: &str) -> bool {
    from.output("ping", ["-c", "1", "-W", "1", "-I", src, dst])
        .is_ok_and(|o| o.status.success())
}

/// Datagrams a gateway's workers received so far (fabric and transits).
fn received(mesh: &Mesh, gw: &str) -> u64 {
    statuses(&mesh.gw(gw).socket)
        .and_then(|(_, d)| {
            d["worker_rx_packets"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_u64()).sum())
        })
        .unwrap_or(0)
}

/// Eight constant-rate UDP flows from host A (10.10.0.1) to host B (10.20.0.1).
fn flows_a_to_b(mesh: &Mesh) -> flows::Flows {
    flows::start(
        &mesh.leaves[0],
        "10.10.0.1",
        &mesh.leaves[1],
        "10.20.0.1",
        8,
    )
    .expect("flows")
}

/// Drops on a gateway's tunnels so far, by reason.
fn tunnel_drops(mesh: &Mesh, gw: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for t in statuses(&mesh.gw(gw).socket)
        .map(|s| s.0)
        .unwrap_or_default()
    {
        if let Some(d) = t["drops"].as_object() {
            for (k, v) in d {
                *out.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    out
}

#[test]
fn netns_bgpctl_in_the_loop_with_frr_leaves() {
    require(&[
        Need::Root,
        Need::Tool("serf"),
        Need::Tool("nft"),
        Need::Tool("ethtool"),
        Need::Tool("vtysh"),
        Need::Tool("ping"),
    ]);
    let mut mesh = build(
        &PLAN,
        &Options {
            api: true,
            probe_interval_ms: 100,
            frr: true,
            bgpctls: 2,
        },
    );
    let t0 = Instant::now();
    for name in ["a1", "a2", "b1", "b2"] {
        mesh.start(name);
    }
    mesh.start_bgpctls("dc-a");
    mesh.start_bgpctls("dc-b");
    mesh.add_controller("ctl-a", 1);
    mesh.start_controller("ctl-a");

    // Gateways take their local routes from bgpctl, which imported them from the leaf.
    for (g, dc, prefix) in [
        ("a1", "dc-a", "10.10.0.0/16"),
        ("a2", "dc-a", "10.10.0.0/16"),
        ("b1", "dc-b", "10.20.0.0/16"),
        ("b2", "dc-b", "10.20.0.0/16"),
    ] {
        within(
            Duration::from_secs(60),
            &format!("{g}'s local routes from bgpctl"),
            || {
                let l = &mesh.orders(g)["local_routes"];
                l["source"] == "bgpctl" && l["from"].get(format!("bgp-{dc}")).is_some()
            },
        );
        assert!(
            mesh.orders(g)["local_routes"]["routes"] == 1,
            "{g}: {} ({prefix})",
            mesh.orders(g)["local_routes"]
        );
    }
    // Leaves learn the other datacenter's prefix from their bgpctl, via both local gateways.
    let both = |dc: &str, prefix: &str, vteps: [&str; 2]| {
        let r = mesh.leaf_route(dc, prefix);
        vteps
            .iter()
            .all(|v| r.contains(&format!("via {v} dev br100")))
    };
    within(
        Duration::from_secs(60),
        "leaf A routing dc-b via a1 and a2",
        || both("dc-a", "10.20.0.0/16", ["10.1.1.1", "10.1.2.1"]),
    );
    within(
        Duration::from_secs(30),
        "leaf B routing dc-a via b1 and b2",
        || both("dc-b", "10.10.0.0/16", ["10.2.3.1", "10.2.4.1"]),
    );
    println!(
        "leaves routed from BGP alone {:.1} s after start: {}",
        t0.elapsed().as_secs_f64(),
        mesh.leaf_route("dc-a", "10.20.0.0/16").trim()
    );
    within(Duration::from_secs(30), "host A reaching host B", || {
        pings(&mesh.leaves[0], "10.10.0.1", "10.20.0.1")
    });
    let steady = flows_a_to_b(&mesh);
    std::thread::sleep(Duration::from_secs(3));
    let steady = steady.stop();
    let sent: u64 = steady.sent.iter().sum();
    println!(
        "host to host over the SD-WAN: {} of {sent} packets lost",
        steady.total_lost()
    );
    assert!(sent > 0 && steady.total_lost() * 100 <= sent, "{steady:?}");
    // No local prefix went back into its own fabric.
    assert!(mesh
        .leaf_route("dc-a", "10.10.0.0/16")
        .contains("blackhole"));

    // A new prefix at leaf A: routed by leaf B, and reachable, within 10 s.
    let leaf_a = mesh.leaves[0].clone();
    leaf_a
        .ip(["addr", "add", "10.15.0.1/32", "dev", "lo"])
        .expect("new host");
    leaf_a
        .ip(["route", "add", "blackhole", "10.15.0.0/16"])
        .expect("new prefix");
    let drops_before: Vec<_> = ["a1", "a2", "b1", "b2"]
        .iter()
        .map(|g| tunnel_drops(&mesh, g))
        .collect();
    let announced = Instant::now();
    mesh.fabric("dc-a").frr.configure(&[
        "router bgp 65001",
        "address-family ipv4 unicast",
        "network 10.15.0.0/16",
    ]);
    // Stages, for the record: leaf B routes it (bgpctl-a imported it, the gateways published
    // it in the mesh, the controller ordered it, bgpctl-b exported it), then host B reaches
    // host A (the dc-a gateways have it among their local routes from bgpctl-a).
    let mut routed_at = None;
    let reached = within(
        Duration::from_secs(10),
        "the new prefix reachable from dc-b",
        || {
            if routed_at.is_none() && !mesh.leaf_route("dc-b", "10.15.0.0/16").is_empty() {
                routed_at = Some(announced.elapsed());
            }
            routed_at.is_some() && pings(&mesh.leaves[1], "10.20.0.1", "10.15.0.1")
        },
    );
    println!(
        "new prefix 10.15.0.0/16 at leaf A: routed by leaf B after {:.1} s, reachable from \
         host B {:.1} s after FRR announced it",
        routed_at.unwrap_or_default().as_secs_f64(),
        (announced
            .elapsed()
            .min(reached + Duration::from_millis(100)))
        .as_secs_f64()
    );
    for (g, before) in ["a1", "a2", "b1", "b2"].iter().zip(drops_before) {
        let now = tunnel_drops(&mesh, g);
        let grown: Vec<_> = now
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .collect();
        if !grown.is_empty() {
            println!("  tunnel drops at {g} meanwhile: {grown:?} (before: {before:?})");
        }
    }

    // a2 loses its transits: the controller drops it from its order towards dc-b, bgpctl
    // withdraws its routes, and the leaf stops sending to it.
    let flows = flows_a_to_b(&mesh);
    mesh.gw("a2")
        .netns
        .exec(
            "nft",
            ["add table inet cut; \
              add chain inet cut in { type filter hook input priority 0; }; \
              add rule inet cut in udp dport { 51820, 51821 } drop; \
              add chain inet cut out { type filter hook output priority 0; }; \
              add rule inet cut out udp sport { 51820, 51821 } drop"],
        )
        .expect("cut a2's transits");
    within(
        Duration::from_secs(20),
        "a2 out of the order towards dc-b",
        || !ordered_towards(&mesh, "a2").contains(&"dc-b".to_string()),
    );
    let dropped = Instant::now();
    let gone = within(
        Duration::from_secs(2),
        "leaf A's next hops without a2",
        || {
            let r = mesh.leaf_route("dc-a", "10.20.0.0/16");
            r.contains("10.1.1.1") && !r.contains("10.1.2.1")
        },
    );
    println!(
        "a2 dropped from the order: its route gone from leaf A after {:.0} ms",
        gone.as_secs_f64() * 1000.0
    );
    let cut = flows.stop();
    println!(
        "while a2's transits were cut and until its route left leaf A: {} of {} lost",
        cut.total_lost(),
        cut.sent.iter().sum::<u64>()
    );
    // From then on everything goes through a1: nothing reaches a2, nothing is lost (the
    // anchors keep a1's neighbour and fdb entries at leaf A, docs/bgp.md).
    let flows = flows_a_to_b(&mesh);
    let before = received(&mesh, "a2");
    std::thread::sleep(Duration::from_secs(2));
    let after = received(&mesh, "a2");
    let stats = flows.stop();
    let sent: u64 = stats.sent.iter().sum();
    println!(
        "after a2's withdrawal: a2 received {} datagrams in 2 s; flows lost {} of {sent}",
        after - before,
        stats.total_lost(),
    );
    assert!(
        after - before <= 2,
        "a2 still fed by the fabric: {}",
        after - before
    );
    assert!(
        sent > 0 && stats.total_lost() * 100 <= sent,
        "flows through a1 lost {} of {sent} (leaf A's neighbours: {:?})",
        stats.total_lost(),
        mesh.leaves[0]
            .ip(["neigh", "show", "dev", "br100"])
            .unwrap_or_default()
            .trim()
    );
    assert!(dropped.elapsed() < Duration::from_secs(30));

    // dc-a's two bgpctls restarted in turn while traffic flows: the first crashes (SIGKILL)
    // and starts again, the second restarts gracefully (SIGUSR1: no NOTIFICATION, for the
    // leaves that keep routes through it). FRR 8.4 has no graceful-restart helper for EVPN
    // (docs/bgp.md) and drops the paths of the one away; the other's keep leaf A routed, and
    // its own anchors keep a1's neighbour and fdb entries installed.
    for k in 0..2 {
        let flows = flows_a_to_b(&mesh);
        std::thread::sleep(Duration::from_millis(500));
        let how = if k == 0 {
            mesh.stop_bgpctl("dc-a", k, true);
            "killed"
        } else {
            let p = mesh.bgpctl_process("dc-a", k).expect("bgpctl running");
            // SAFETY: a signal to a child process this test started.
            assert_eq!(unsafe { libc::kill(p.0 as i32, libc::SIGUSR1) }, 0);
            within(Duration::from_secs(10), "bgpctl's graceful exit", || {
                !mesh.tb.is_running(p)
            });
            mesh.stop_bgpctl("dc-a", k, false);
            "restarted gracefully (SIGUSR1)"
        };
        let t = Instant::now();
        let mut unrouted = 0;
        while t.elapsed() < Duration::from_secs(1) {
            unrouted += usize::from(!mesh.leaf_route("dc-a", "10.20.0.0/16").contains("10.1.1.1"));
            std::thread::sleep(Duration::from_millis(50));
        }
        mesh.start_bgpctl("dc-a", k);
        std::thread::sleep(Duration::from_secs(2));
        let stats = flows.stop();
        let sent: u64 = stats.sent.iter().sum();
        println!(
            "bgpctl {} of dc-a {how} and started again: leaf A unrouted in {unrouted} of 20 \
             samples; flows lost {} of {sent}",
            k + 1,
            stats.total_lost()
        );
        assert_eq!(
            unrouted,
            0,
            "leaf A lost its route while bgpctl {} was away",
            k + 1
        );
        assert!(
            sent > 0 && stats.total_lost() * 100 <= sent,
            "flows lost {} of {sent} through bgpctl {}'s restart",
            stats.total_lost(),
            k + 1
        );
    }
    // The gateways kept the fabric's routes throughout (fail-static).
    assert_eq!(mesh.orders("a1")["local_routes"]["routes"], 2);
}
