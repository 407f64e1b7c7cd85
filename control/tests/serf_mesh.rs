//! The mesh with real Serf agents: gateways in several datacenters, each supervising its own
//! agent in its own namespace, all on one bridge.
#![allow(clippy::unwrap_used)]

#[path = "serf_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, gateway_specs, prefixes, GwSpec, LogsOnFailure, RPC_AUTH};
use gatewan_control::mesh::node::MeshNode;
use gatewan_control::mesh::prefixes::{PrefixList, Reject};
use gatewan_control::mesh::view::{GatewayStatus, MeshSnapshot};
use gatewan_testbed::{require, Need, Testbed};

const KEY1: &str = "EPaT8geoOsfWlZRQSz+RqU0veFxQNVXyCo7XT16AuE4=";
const KEY2: &str = "PpVPsJaXcPcYLzIXRqgVQCo+D5T+Rik96xN6S7twzsQ=";
const WRONG_KEY: &str = "jGqz4cfxOykZrnxZB51VKgleMiJxJOfifxKA7bBUEa8=";
const DEADLINE: Duration = Duration::from_secs(90);

fn needs() {
    require(&[Need::Root, Need::Tool("serf")]);
}

fn snap(node: &MeshNode) -> Arc<MeshSnapshot> {
    node.view().borrow().clone()
}

/// Whether `node` sees every gateway in `expect` with that status, metadata and list.
fn sees(
    node: &MeshNode,
    specs: &[GwSpec],
    expect: &BTreeMap<String, (GatewayStatus, PrefixList)>,
) -> bool {
    let s = snap(node);
    s.agent_connected
        && expect.iter().all(|(name, (status, list))| {
            let Some(e) = s.members.get(name) else {
                return false;
            };
            let spec = specs.iter().find(|g| &g.name == name).unwrap();
            let meta_ok = e.meta.as_ref().is_some_and(|m| {
                m.datacenter == spec.meta.datacenter
                    && m.transits == spec.meta.transits
                    && m.echo_port == spec.meta.echo_port
            });
            e.status == *status
                && meta_ok
                && e.prefixes_current()
                && e.prefixes.as_ref().is_some_and(|p| *p.prefixes == *list)
        })
}

async fn converge(
    what: &str,
    nodes: &[(&str, &MeshNode)],
    specs: &[GwSpec],
    expect: &BTreeMap<String, (GatewayStatus, PrefixList)>,
) -> Duration {
    let t0 = Instant::now();
    for (name, node) in nodes {
        eventually(&format!("{what} (seen by {name})"), DEADLINE, || async {
            sees(node, specs, expect).then_some(())
        })
        .await;
    }
    t0.elapsed()
}

fn no_bad_payloads(node: &MeshNode) {
    let c = snap(node).counters.clone();
    for r in [
        Reject::Truncated,
        Reject::Oversized,
        Reject::MalformedBody,
        Reject::DigestMismatch,
        Reject::TagMismatch,
        Reject::Conflict,
        Reject::OriginMismatch,
    ] {
        assert_eq!(c.list.rejected(r), 0, "{}: {r:?} in {c:?}", node.name());
    }
    assert_eq!(c.bad_tags, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_mesh_five_gateways_in_three_datacenters() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let specs = gateway_specs(
        &mut tb,
        &[
            ("gw1", "sg1"),
            ("gw2", "sg1"),
            ("gw3", "fr1"),
            ("gw4", "fr1"),
            ("gw5", "us1"),
        ],
        &[KEY1],
    );
    let _logs = LogsOnFailure(specs.iter().map(GwSpec::log).collect());
    let mut lists: Vec<PrefixList> = (0..5u16).map(|i| prefixes(i + 1, 2000, 0)).collect();
    assert!(lists.iter().all(|l| l.len() == 2000));

    let t_start = Instant::now();
    let mut nodes: Vec<Option<MeshNode>> = specs
        .iter()
        .zip(&lists)
        .map(|(s, l)| Some(s.start(l.clone())))
        .collect();
    let expect = |lists: &[PrefixList], status: &[GatewayStatus]| {
        specs
            .iter()
            .zip(lists)
            .zip(status)
            .map(|((s, l), st)| (s.name.clone(), (*st, l.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let alive = [GatewayStatus::Alive; 5];
    {
        let live: Vec<(&str, &MeshNode)> = nodes
            .iter()
            .zip(&specs)
            .filter_map(|(n, s)| n.as_ref().map(|n| (s.name.as_str(), n)))
            .collect();
        let took = converge("initial mesh", &live, &specs, &expect(&lists, &alive)).await;
        println!(
            "mesh of 5 gateways x {} prefixes converged in {:?} (from agent start: {:?})",
            lists[0].len(),
            took,
            t_start.elapsed()
        );
    }
    let chunks = snap(nodes[0].as_ref().unwrap()).members[&specs[0].name]
        .meta
        .as_ref()
        .unwrap()
        .prefix_list
        .unwrap()
        .chunks;
    println!("a list of 2,000 prefixes travels in {chunks} chunks");

    // `serf members` against any agent lists every gateway with its tags.
    for spec in [&specs[0], &specs[3]] {
        let out = spec
            .netns
            .exec(
                "serf",
                [
                    "members",
                    &format!("-rpc-addr={}", spec.rpc_addr()),
                    &format!("-rpc-auth={RPC_AUTH}"),
                    "-format=json",
                ],
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let members = v["members"].as_array().unwrap();
        assert_eq!(members.len(), 5, "{out}");
        for s in &specs {
            let m = members
                .iter()
                .find(|m| m["name"] == s.name.as_str())
                .unwrap();
            assert_eq!(m["status"], "alive");
            assert_eq!(m["tags"]["dc"], s.meta.datacenter.as_str());
            assert_eq!(m["tags"]["role"], "gateway");
            assert!(m["tags"]["t.lumen"].as_str().unwrap().contains(":6152"));
            assert!(m["tags"]["pl"].as_str().unwrap().contains('.'));
        }
    }

    // `gatewan members` against a gateway's agent: the typed view, with every list pulled
    // and verified.
    let spec = &specs[2];
    let t0 = Instant::now();
    let out = spec
        .netns
        .exec(
            env!("CARGO_BIN_EXE_gatewan"),
            [
                "members",
                "--json",
                &format!("--rpc-addr={}", spec.rpc_addr()),
                &format!("--rpc-auth={RPC_AUTH}"),
                "--timeout=30",
            ],
        )
        .unwrap();
    println!("gatewan members --json took {:?}", t0.elapsed());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["local"], spec.name.as_str());
    for (s, list) in specs.iter().zip(&lists) {
        let m = &v["members"][s.name.as_str()];
        assert_eq!(m["status"], "alive", "{}", s.name);
        assert_eq!(m["meta"]["datacenter"], s.meta.datacenter.as_str());
        assert_eq!(m["meta"]["role"], "gateway");
        assert_eq!(m["meta"]["transits"].as_array().unwrap().len(), 2);
        let got: Vec<String> = m["prefixes"]["prefixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = list.iter().map(|p| p.to_string()).collect();
        assert_eq!(got, want, "{}", s.name);
    }
    let table = spec
        .netns
        .exec(
            env!("CARGO_BIN_EXE_gatewan"),
            [
                "members",
                &format!("--rpc-addr={}", spec.rpc_addr()),
                &format!("--rpc-auth={RPC_AUTH}"),
                "--timeout=30",
            ],
        )
        .unwrap();
    println!("{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" alive ")).count(), 5);
    assert_eq!(
        table.matches("2000 (v4 1000, v6 1000)").count(),
        5,
        "{table}"
    );

    // Right after a mass start the gossip queues are still busy with the initial pulls;
    // GATEWAN_TEST_SETTLE_SECS lets the mesh go quiet first, to measure steady state.
    if let Some(secs) = std::env::var("GATEWAN_TEST_SETTLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    // A change on gw2 reaches every other gateway; measure how long it takes.
    let mut changed = prefixes(2, 2000, 0).as_slice()[10..].to_vec();
    changed.extend(prefixes(2, 20, 3000).iter().take(10).copied());
    lists[1] = PrefixList::new(changed);
    assert_eq!(lists[1].len(), 2000);
    let t0 = Instant::now();
    let tag = nodes[1]
        .as_ref()
        .unwrap()
        .set_prefixes(lists[1].clone())
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if i == 1 {
            continue;
        }
        let n = n.as_ref().unwrap();
        eventually("changed list everywhere", DEADLINE, || async {
            let s = snap(n);
            let e = &s.members[&specs[1].name];
            e.prefixes
                .as_ref()
                .is_some_and(|p| p.version == tag.version && *p.prefixes == lists[1])
                .then_some(())
        })
        .await;
        arrivals.push((specs[i].name.clone(), t0.elapsed()));
    }
    println!(
        "prefix change (2,000 prefixes, 10 replaced) on {} reached:",
        specs[1].name
    );
    for (name, t) in &arrivals {
        println!("  {name}: {t:?}");
    }
    println!(
        "PROPAGATION: prefix change reached every gateway in {:?}",
        arrivals.iter().map(|a| a.1).max().unwrap()
    );

    // gw4 crashes: the others see it failed.
    let t0 = Instant::now();
    drop(nodes[3].take());
    for (i, n) in nodes.iter().enumerate() {
        let Some(n) = n else { continue };
        eventually(
            &format!("{} sees gw4 failed", specs[i].name),
            DEADLINE,
            || async {
                (snap(n).members[&specs[3].name].status == GatewayStatus::Failed).then_some(())
            },
        )
        .await;
    }
    println!(
        "crashed gateway seen as failed everywhere after {:?}",
        t0.elapsed()
    );

    // It restarts with a different list: it rejoins, and the others get its current one.
    lists[3] = prefixes(4, 2000, 7);
    let t0 = Instant::now();
    nodes[3] = Some(specs[3].start(lists[3].clone()));
    {
        let live: Vec<(&str, &MeshNode)> = nodes
            .iter()
            .zip(&specs)
            .filter_map(|(n, s)| n.as_ref().map(|n| (s.name.as_str(), n)))
            .collect();
        converge("restarted gw4", &live, &specs, &expect(&lists, &alive)).await;
    }
    println!(
        "restarted gateway back with its new list everywhere after {:?}",
        t0.elapsed()
    );

    // gw5 leaves cleanly: seen as left.
    let t0 = Instant::now();
    nodes[4].take().unwrap().leave().await.unwrap();
    for (i, n) in nodes.iter().enumerate() {
        let Some(n) = n else { continue };
        eventually(
            &format!("{} sees gw5 left", specs[i].name),
            DEADLINE,
            || async {
                (snap(n).members[&specs[4].name].status == GatewayStatus::Left).then_some(())
            },
        )
        .await;
    }
    println!(
        "clean leave seen as left everywhere after {:?}",
        t0.elapsed()
    );

    for n in nodes.iter().flatten() {
        no_bad_payloads(n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_mesh_supervisor_restarts_a_killed_agent_and_resubscribes() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let specs = gateway_specs(&mut tb, &[("gw1", "sg1"), ("gw2", "fr1")], &[KEY1]);
    let _logs = LogsOnFailure(specs.iter().map(GwSpec::log).collect());
    let mut lists = vec![prefixes(1, 300, 0), prefixes(2, 300, 0)];
    let a = specs[0].start(lists[0].clone());
    let b = specs[1].start(lists[1].clone());
    let expect = |lists: &[PrefixList]| {
        specs
            .iter()
            .zip(lists)
            .map(|(s, l)| (s.name.clone(), (GatewayStatus::Alive, l.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    converge(
        "two gateways",
        &[("gw1", &a), ("gw2", &b)],
        &specs,
        &expect(&lists),
    )
    .await;
    assert_eq!(a.agent_starts(), 1);
    let mut changes = a.subscribe();

    // Kill gw1's agent outright; change gw2's list while gw1's agent is down.
    let pid = a.agent_pid().unwrap();
    // SAFETY: signalling the agent process the supervisor started.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    eventually("gw1 notices its agent is gone", DEADLINE, || async {
        (!snap(&a).agent_connected).then_some(())
    })
    .await;
    lists[1] = prefixes(2, 300, 99);
    b.set_prefixes(lists[1].clone()).await.unwrap();

    // The supervisor restarts it; the node re-subscribes, reconciles and catches up.
    converge(
        "after agent restart",
        &[("gw1", &a), ("gw2", &b)],
        &specs,
        &expect(&lists),
    )
    .await;
    assert_eq!(a.agent_starts(), 2);
    assert_ne!(a.agent_pid(), Some(pid));
    let mut saw_down = false;
    let mut saw_up = false;
    while let Ok(c) = changes.try_recv() {
        use gatewan_control::mesh::view::MeshChange;
        match c {
            MeshChange::AgentLink { connected: false } => saw_down = true,
            MeshChange::AgentLink { connected: true } if saw_down => saw_up = true,
            _ => {}
        }
    }
    assert!(saw_down && saw_up, "change notifications cover the gap");
    // Events flow on the new subscription.
    lists[0] = prefixes(1, 300, 5);
    a.set_prefixes(lists[0].clone()).await.unwrap();
    converge("after change", &[("gw2", &b)], &specs, &expect(&lists)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_mesh_node_attaches_to_an_existing_agent() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let specs = gateway_specs(&mut tb, &[("gw1", "sg1"), ("gw2", "fr1")], &[KEY1]);
    let _logs = LogsOnFailure(specs.iter().map(GwSpec::log).collect());
    // gw2's agent is started by someone else; its node only attaches to it.
    let raw = common::start_raw_agent(
        &mut tb,
        &specs[1].netns,
        &common::RawAgentSpec {
            name: &specs[1].name,
            bind: specs[1].bind(),
            rpc_port: specs[1].rpc_port,
            auth: Some(RPC_AUTH),
            keys: &[KEY1],
            tags: &[],
        },
    );
    let lists = [prefixes(1, 500, 0), prefixes(2, 500, 0)];
    let a = specs[0].start(lists[0].clone());
    let mut cfg = gatewan_control::mesh::node::MeshConfig::new(
        specs[1].name.clone(),
        specs[1].meta.clone(),
        lists[1].clone(),
    );
    cfg.rpc = raw.options();
    cfg.join = vec![specs[0].bind().to_string()];
    cfg.tick = Duration::from_millis(250);
    cfg.repair_after = Duration::from_secs(2);
    cfg.pull_interval = Duration::from_secs(2);
    let b = MeshNode::start(cfg, raw.connector(), None).unwrap();
    let expect: BTreeMap<_, _> = specs
        .iter()
        .zip(&lists)
        .map(|(s, l)| (s.name.clone(), (GatewayStatus::Alive, l.clone())))
        .collect();
    converge("attached", &[("gw1", &a), ("gw2", &b)], &specs, &expect).await;
    assert_eq!(b.agent_pid(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_mesh_key_rotation_wrong_key_and_malformed_payloads() {
    needs();
    let mut tb = Testbed::new().unwrap();
    let specs = gateway_specs(
        &mut tb,
        &[
            ("gw1", "sg1"),
            ("gw2", "fr1"),
            ("gw3", "us1"),
            ("intruder", "xx1"),
        ],
        &[KEY1],
    );
    let _logs = LogsOnFailure(specs.iter().map(GwSpec::log).collect());
    let (mesh, intruder) = specs.split_at(3);
    let mut lists: Vec<PrefixList> = (0..3u16).map(|i| prefixes(i + 1, 400, 0)).collect();
    let nodes: Vec<MeshNode> = mesh
        .iter()
        .zip(&lists)
        .map(|(s, l)| s.start(l.clone()))
        .collect();
    let expect = |lists: &[PrefixList]| {
        mesh.iter()
            .zip(lists)
            .map(|(s, l)| (s.name.clone(), (GatewayStatus::Alive, l.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let all: Vec<(&str, &MeshNode)> = nodes.iter().map(|n| (n.name(), n)).collect();
    converge("3 gateways", &all, mesh, &expect(&lists)).await;
    let rpc = nodes[0].rpc().clone();

    // Rotate: install, use, remove; after each step the mesh still carries a change.
    let step = |n: u32| prefixes(3, 400, n * 500);
    let r = rpc.install_key(KEY2).await.unwrap();
    assert_eq!((r.num_nodes, r.num_resp, r.num_err), (3, 3, 0));
    lists[2] = step(1);
    nodes[2].set_prefixes(lists[2].clone()).await.unwrap();
    converge("after install-key", &all, mesh, &expect(&lists)).await;

    let r = rpc.use_key(KEY2).await.unwrap();
    assert_eq!((r.num_resp, r.num_err), (3, 0));
    lists[2] = step(2);
    nodes[2].set_prefixes(lists[2].clone()).await.unwrap();
    converge("after use-key", &all, mesh, &expect(&lists)).await;

    let r = rpc.remove_key(KEY1).await.unwrap();
    assert_eq!((r.num_resp, r.num_err), (3, 0));
    let keys = rpc.list_keys().await.unwrap();
    assert_eq!(keys.keys, BTreeMap::from([(KEY2.to_string(), 3)]));
    lists[2] = step(3);
    nodes[2].set_prefixes(lists[2].clone()).await.unwrap();
    converge("after remove-key", &all, mesh, &expect(&lists)).await;
    // Every agent persisted the rotation in its keyring file.
    for s in mesh {
        let ring: Vec<String> =
            serde_json::from_slice(&std::fs::read(s.dir.join("keyring.json")).unwrap()).unwrap();
        assert_eq!(ring, vec![KEY2.to_string()], "{}", s.name);
    }

    // A restarted agent comes back with the rotated keyring from its file.
    let pid = nodes[1].agent_pid().unwrap();
    // SAFETY: signalling the agent process the supervisor started.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    eventually("gw2's agent restarted", DEADLINE, || async {
        (nodes[1].agent_starts() == 2).then_some(())
    })
    .await;
    lists[0] = step(4);
    nodes[0].set_prefixes(lists[0].clone()).await.unwrap();
    converge(
        "after a restart with the new key",
        &all,
        mesh,
        &expect(&lists),
    )
    .await;

    // An agent with a wrong key cannot get in.
    let bad = common::start_raw_agent(
        &mut tb,
        &intruder[0].netns,
        &common::RawAgentSpec {
            name: "intruder",
            bind: intruder[0].bind(),
            rpc_port: 7600,
            auth: None,
            keys: &[WRONG_KEY],
            tags: &[("role", "gateway"), ("dc", "xx1")],
        },
    );
    let bad_rpc = bad.client().await;
    let err = bad_rpc
        .join(&[mesh[0].bind().to_string()], false)
        .await
        .unwrap_err();
    println!("join with a wrong key: {err}");
    // Its forged list chunks go nowhere either.
    let forged = gatewan_control::mesh::prefixes::encode(
        &prefixes(9, 100, 0),
        &mesh[1].name,
        u64::MAX - 1,
        448,
    )
    .unwrap();
    for c in &forged.chunks {
        bad_rpc.user_event("gw-pl", c, false).await.unwrap();
    }
    // A plain member's agent (right key) injecting malformed payloads: rejected, counted.
    let mut garbage: Vec<Vec<u8>> = vec![vec![0xff; 40], vec![1, 0], vec![1, 5, b'g', b'w']];
    let mut corrupt = gatewan_control::mesh::prefixes::encode(
        &prefixes(8, 60, 0),
        &mesh[2].name,
        u64::MAX - 2,
        448,
    )
    .unwrap()
    .chunks;
    let last = corrupt[0].len() - 3;
    corrupt[0][last] ^= 0x80; // still parseable entries? may be malformed or digest-bad
    garbage.extend(corrupt);
    for g in &garbage {
        rpc.user_event("gw-pl", g, false).await.unwrap();
    }
    // Oversized payloads never leave: the agent refuses them (typed error).
    assert!(rpc.user_event("gw-pl", &[1u8; 600], false).await.is_err());
    // Every gateway (the sender's own included: its agent delivers events locally too)
    // refuses and counts them; the corrupted list names gw3, which ignores it as its own.
    for n in &nodes {
        let want = if n.name() == mesh[2].name { 3 } else { 4 };
        eventually("malformed payloads counted", DEADLINE, || async {
            let c = snap(n).counters.list.clone();
            let bad = c.rejected(Reject::Truncated)
                + c.rejected(Reject::UnknownFormat)
                + c.rejected(Reject::BadOrigin)
                + c.rejected(Reject::MalformedBody)
                + c.rejected(Reject::DigestMismatch);
            (bad >= want).then_some(())
        })
        .await;
    }
    // Nothing changed in the view: no intruder, every list as it was.
    for n in &nodes {
        let s = snap(n);
        assert!(!s.members.contains_key("intruder"), "{}", n.name());
        assert_eq!(s.members.len(), 3);
    }
    converge("unchanged after attacks", &all, mesh, &expect(&lists)).await;
    let members = bad_rpc.members().await.unwrap();
    assert_eq!(members.len(), 1, "the intruder stays alone");
}
