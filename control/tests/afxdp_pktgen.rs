//! The AF_XDP backend end to end, both directions at once, on 2-queue veths with one worker
//! per queue: pktgen plays each datacenter's leaf (VXLAN to its gateway), a sink plays the
//! other datacenter's leaf, and every packet sent is counted by the gateways and the sink.
//! Each gateway has two uplinks (one per transit provider, each behind its own router port,
//! source-routed as a multihomed host is), so flows spread over four tunnels and every
//! datagram must leave by its own uplink towards that uplink's router.
//!
//! leaf-a --veth-- gw-a ==2 veths== transit ==2 veths== gw-b --veth-- leaf-b

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{wait_for, GATEWAN};
use gatewan_control::gateway::control::{request, Request, Response};
use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_pktgen::gen::{GenConfig, Generator, Limits};
use gatewan_pktgen::sink::{Sink, SinkConfig, SinkMode};
use gatewan_pktgen::validate::Expect;
use gatewan_pktgen::TrafficSpec;
use gatewan_testbed::{require, Need, Testbed, WgKeys};

const VNI: u32 = 100;
const UPLINKS: u8 = 2;
const PACKETS: u64 = 4000;
const FLOWS: u32 = 32;

fn router_mac(i: u8) -> MacAddr {
    MacAddr([0x02, 0, 0x0a, 0, i, 0x01])
}

/// The MAC gateway `i` writes as inner destination for its leaf.
fn leaf_router_mac(i: u8) -> MacAddr {
    MacAddr([0x02, 0, 0x0a, 0, i, 0x02])
}

fn status(socket: &Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(request(socket, &Request::Status)) {
        Ok(Response::Status {
            tunnels,
            drops,
            dataplane,
            ..
        }) => (
            tunnels
                .iter()
                .map(|t| serde_json::to_value(t).expect("json"))
                .collect(),
            serde_json::json!({ "drops": drops, "dataplane": dataplane }),
        ),
        other => panic!("unexpected status answer: {other:?}"),
    }
}

/// Gateway `i`'s address on uplink `u`.
fn uplink_addr(i: u8, u: u8) -> String {
    format!("172.16.{}.1", 10 * u + i)
}

fn gateway_config(
    tb: &Testbed,
    i: u8,
    private: &str,
    peer_public: &str,
) -> gatewan_testbed::config::Gateway {
    use gatewan_testbed::config;
    let other = 3 - i;
    let mut tunnels = Vec::new();
    for mine in 0..UPLINKS {
        for theirs in 0..UPLINKS {
            // Tunnel k joins gw-1's uplink a and gw-2's uplink b, seen alike from both ends.
            let (a, b) = if i == 1 {
                (mine, theirs)
            } else {
                (theirs, mine)
            };
            let k = a * UPLINKS + b;
            tunnels.push(config::Tunnel {
                name: format!("wan{k}"),
                transit: format!("uplink{mine}"),
                peer: format!("gw-{other}"),
                peer_datacenter: format!("dc-{other}"),
                peer_transit: Some(format!("uplink{theirs}")),
                peer_public_key: peer_public.into(),
                peer_endpoint: Some(format!("{}:51820", uplink_addr(other, theirs))),
                address_v4: Some(format!("10.255.{k}.{}/31", i - 1)),
                peer_address_v4: Some(format!("10.255.{k}.{}", 2 - i)),
                peer_echo_port: Some(7054),
                networks: vec![format!("10.{other}.0.0/16")],
                ..Default::default()
            });
        }
    }
    config::Gateway {
        name: format!("gw-{i}"),
        datacenter: format!("dc-{i}"),
        private_key: private.into(),
        control_socket: tb.dir().join(format!("gw{i}.sock")),
        probe: Some(config::Probe {
            interval: "200ms".into(),
            ..Default::default()
        }),
        transits: (0..UPLINKS)
            .map(|u| config::Transit {
                name: format!("uplink{u}"),
                listen: format!("{}:51820", uplink_addr(i, u)),
                capacity: None,
            })
            .collect(),
        tunnels,
        fabric: Some(config::Fabric {
            vtep: format!("10.0.{i}.1"),
            router_mac: router_mac(i).to_string(),
            vni: VNI,
            local_routes: vec![config::LocalRoute {
                prefix: format!("10.{i}.0.0/16"),
                vtep: format!("10.0.{i}.2"),
                router_mac: leaf_router_mac(i).to_string(),
            }],
        }),
        dataplane: Some(config::Dataplane {
            backend: "afxdp".into(),
            workers: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn traffic(from: u8) -> TrafficSpec {
    let to = 3 - from;
    TrafficSpec {
        vni: VNI,
        router_mac: router_mac(from),
        src_prefix: format!("10.{from}.0.0/24").parse().expect("prefix"),
        dst_prefix: format!("10.{to}.0.0/24").parse().expect("prefix"),
        src_addrs: 4,
        flows: FLOWS,
        size: 512,
        ..TrafficSpec::default()
    }
}

/// Packets the warm-up sends each way, before the counted run.
const WARM_UP: u64 = 200;

/// (packets the gateway took from its leaf, packets it delivered to its leaf).
fn counted(socket: &Path) -> (u64, u64) {
    let (t, gw) = status(socket);
    counted_in(&t, &gw)
}

/// [`counted`] from one status answer.
fn counted_in(t: &[serde_json::Value], gw: &serde_json::Value) -> (u64, u64) {
    let delivered: u64 = t
        .iter()
        .map(|t| t["counters"]["forwarded_to_fabric"].as_u64().unwrap_or(0))
        .sum();
    let taken = gw["drops"]["forwarded_from_fabric"].as_u64().unwrap_or(0);
    (taken, delivered)
}

#[test]
fn netns_xdp_afxdp_gateways_forward_pktgen_traffic_both_ways_and_count_it() {
    require(&[Need::Root, Need::Tool("ethtool")]);
    let mut tb = Testbed::new().expect("test bed");
    let transit = tb.add_netns("transit").expect("netns");
    transit
        .sysctl("net.ipv4.ip_forward", "1")
        .expect("forwarding");
    let keys = [
        WgKeys::generate().expect("keys"),
        WgKeys::generate().expect("keys"),
    ];
    let mut sites = Vec::new();
    for i in 1..=2u8 {
        let leaf = tb.add_netns(&format!("leaf{i}")).expect("netns");
        let gw = tb.add_netns(&format!("gw{i}")).expect("netns");
        for u in 0..UPLINKS {
            let (up, tr) = tb.add_veth(&gw, &transit, 2).expect("veth");
            let net = 10 * u + i;
            up.add_addr(&format!("172.16.{net}.1/24")).expect("addr");
            tr.add_addr(&format!("172.16.{net}.2/24")).expect("addr");
            // The first uplink is the main table's way out; each other one is taken by
            // what is sent from its address.
            let via = format!("via 172.16.{net}.2");
            if u == 0 {
                gw.route("172.16.0.0/16", &via).expect("route");
            } else {
                let table = (100 + u).to_string();
                gw.ip(["rule", "add", "from", &uplink_addr(i, u), "table", &table])
                    .expect("rule");
                gw.route("172.16.0.0/16", &format!("{via} table {table}"))
                    .expect("route");
            }
        }
        let (leaf_side, down) = tb.add_veth(&leaf, &gw, 2).expect("veth");
        leaf_side.add_addr(&format!("10.0.{i}.2/24")).expect("addr");
        down.add_addr(&format!("10.0.{i}.1/24")).expect("addr");
        sites.push((leaf, gw));
    }
    let mut gateways = Vec::new();
    for (n, (_, gw)) in sites.iter().enumerate() {
        let i = n as u8 + 1;
        use gatewan_testbed::config::ToYaml as _;
        let config = gateway_config(&tb, i, &keys[n].private, &keys[1 - n].public);
        let socket = config.control_socket.clone();
        let path = tb.dir().join(format!("gw{i}.yaml"));
        config.write(&path, "afxdp_pktgen.rs").expect("config");
        let process = tb
            .spawn(
                gw,
                GATEWAN,
                ["gateway", "--config", path.to_str().expect("utf-8")],
            )
            .expect("gatewan gateway");
        wait_for(&mut tb, process, || socket.exists(), "the control socket");
        gateways.push((process, socket));
    }
    for (process, socket) in &gateways {
        wait_for(
            &mut tb,
            *process,
            || {
                let (t, _) = status(socket);
                t.len() == usize::from(UPLINKS * UPLINKS)
                    && t.iter().all(|t| t["state"] == "Established")
            },
            "every tunnel to be established",
        );
        let (_, gw) = status(socket);
        assert_eq!(gw["dataplane"]["backend"], "afxdp", "{gw:#}");
        assert_eq!(
            gw["dataplane"]["workers"], 3,
            "two queue workers and the socket worker"
        );
    }

    // A generator on each leaf towards the other datacenter, `count` packets each.
    let generate = |count: u64| {
        let mut generators = Vec::new();
        for (n, (leaf, _)) in sites.iter().enumerate() {
            let i = n as u8 + 1;
            let config = GenConfig {
                traffic: traffic(i),
                dst: SocketAddr::new(format!("10.0.{i}.1").parse().expect("ip"), 4789),
                sockets: 4,
                threads: 1,
                limits: Limits {
                    // Paced: this test counts packets; cargo xtask bench measures speed.
                    rate_pps: 10_000,
                    count: Some(count),
                    duration: None,
                    batch: 32,
                },
                ..GenConfig::default()
            };
            generators.push(
                leaf.run(move || {
                    std::thread::spawn(move || Generator::new(&config).map(|g| g.run()))
                })
                .expect("enter"),
            );
        }
        generators
    };
    // Warm-up, before anything is counted: the first datagrams towards a next hop the
    // workers have not learned yet go out through the kernel while the owner resolves it, and
    // later ones sent directly can overtake them (a known limitation, README "Not yet"). The
    // counted run below starts with every next hop known.
    for g in generate(WARM_UP) {
        let _ = g.join().expect("warm-up generator thread");
    }
    for (process, socket) in &gateways {
        wait_for(
            &mut tb,
            *process,
            || counted(socket) == (WARM_UP, WARM_UP),
            "the warm-up counted",
        );
    }

    // A sink on each leaf, then a generator on each leaf towards the other datacenter.
    let mut sinks = Vec::new();
    for (n, (leaf, _)) in sites.iter().enumerate() {
        let i = n as u8 + 1;
        let config = SinkConfig {
            listen: "0.0.0.0:4789".parse().expect("addr"),
            mode: SinkMode::Vxlan,
            expect: Expect {
                vni: Some(VNI),
                inner_dst_mac: Some(leaf_router_mac(i)),
                flows: FLOWS,
            },
            duration: Some(Duration::from_secs(60)),
            ..SinkConfig::default()
        };
        sinks.push(
            leaf.run(move || Sink::spawn(config))
                .expect("enter")
                .expect("sink"),
        );
    }
    let generators = generate(PACKETS);
    let sent: Vec<_> = generators
        .into_iter()
        .map(|g| g.join().expect("generator thread").expect("generator"))
        .collect();
    let gateway_state: Vec<serde_json::Value> = gateways
        .iter()
        .map(|(_, socket)| status(socket).1)
        .collect();
    for (n, sink) in sinks.into_iter().enumerate() {
        // Leaf n receives what the other leaf sent.
        let from = &sent[1 - n];
        assert_eq!(from.packets, PACKETS, "{from}");
        sink.wait_received(PACKETS, Duration::from_secs(30));
        let mut report = sink.stop();
        report.reconcile(&from.flows_sent);
        println!("leaf {}: {report}", n + 1);
        assert_eq!(report.invalid, 0, "{:?}", report.invalid_by_reason);
        assert_eq!(
            report.received,
            PACKETS,
            "leaf {}; gateways: {gateway_state:#?}",
            n + 1
        );
        assert_eq!((report.duplicates, report.reordered), (0, 0));
        assert_eq!(report.lost, Some(0));
    }
    // Each gateway counted every packet it took from its leaf and every one it delivered.
    for (n, (process, socket)) in gateways.iter().enumerate() {
        let mut last = serde_json::Value::Null;
        wait_for(
            &mut tb,
            *process,
            || {
                let (t, gw) = status(socket);
                let done = counted_in(&t, &gw) == (PACKETS + WARM_UP, PACKETS + WARM_UP);
                last = serde_json::json!({ "tunnels": t, "gateway": gw });
                done
            },
            "the gateway's counters to match what pktgen sent",
        );
        // The gateway's own datagrams (probes, their replies, keepalives) left by the AF_XDP
        // workers, as the data does, once the next hops were known.
        let owner_sent = last["gateway"]["drops"]["owner_sent_by_workers"]
            .as_u64()
            .unwrap_or(0);
        assert!(owner_sent > 0, "{last:#}");
        // Flows spread over the tunnels: each uplink carried some of them.
        for u in 0..UPLINKS {
            let uplink = format!("uplink{u}");
            let sent: u64 = last["tunnels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["meta"]["sdwan_local_transit"] == uplink.as_str())
                .map(|t| t["counters"]["tx_packets"].as_u64().unwrap_or(0))
                .sum();
            assert!(sent > 0, "gw-{} sent nothing on {uplink}: {last:#}", n + 1);
        }
        let workers: Vec<u64> = last["gateway"]["dataplane"]["worker_rx_packets"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default();
        println!("gw-{}: datagrams per worker {workers:?}", n + 1);
        // Both directions cross every gateway: its queue workers carried them.
        let queues: u64 = workers.iter().take(2).sum();
        assert!(queues >= 2 * PACKETS, "{last:#}");
    }

    // The gateways detach their XDP programs when told to stop: gw-1 by SIGINT, gw-2 by
    // SIGTERM.
    let xdp_attached = |gw: &gatewan_testbed::Netns| {
        gw.exec("ip", ["-o", "link", "show"])
            .expect("ip link")
            .contains(" xdp")
    };
    for (n, (process, _)) in gateways.iter().enumerate() {
        let gw = &sites[n].1;
        assert!(xdp_attached(gw), "gw-{} runs with XDP", n + 1);
        let signal = if n == 0 { libc::SIGINT } else { libc::SIGTERM };
        // SAFETY: signalling the gateway this test started, by its PID.
        unsafe { libc::kill(process.0 as i32, signal) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tb.is_running(*process) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !tb.is_running(*process),
            "gw-{} stopped on signal {signal}",
            n + 1
        );
        assert!(
            !xdp_attached(gw),
            "gw-{} left its XDP program attached",
            n + 1
        );
    }
}
