//! Generator to sink over real sockets: loopback (no privileges) and across a veth pair
//! between two network namespaces (`netns_`, root), sending with sendmmsg or through AF_XDP.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use gatewan_pktgen::gen::{GenConfig, GenReport, Generator, Limits};
use gatewan_pktgen::sink::{Sink, SinkConfig, SinkHandle, SinkMode, SinkReport};
use gatewan_pktgen::validate::Expect;
use gatewan_pktgen::{InnerProto, TrafficSpec, XskTx};
use gatewan_testbed::{require, Link, Need, Netns, Testbed};

/// Waits until the sink has `n` valid packets (or a generous deadline passes: a failure
/// then shows in the counts, not as a hang), then stops it.
fn collect(sink: SinkHandle, n: u64) -> SinkReport {
    sink.wait_received(n, Duration::from_secs(20));
    sink.stop()
}

fn assert_clean(gen: &GenReport, mut sink: SinkReport, n: u64) {
    println!("{gen}");
    sink.reconcile(&gen.flows_sent);
    println!("{sink}");
    assert_eq!(gen.packets, n, "{gen:?}");
    assert_eq!(gen.send_errors, 0, "{:?}", gen.last_error);
    assert_eq!(sink.invalid, 0, "{:?}", sink.invalid_by_reason);
    assert_eq!(sink.received, n);
    assert_eq!(sink.unique, n);
    assert_eq!(sink.duplicates, 0);
    assert_eq!(sink.reordered, 0);
    assert_eq!(sink.gap_lost, 0);
    assert_eq!(sink.sent, Some(n));
    assert_eq!(sink.lost, Some(0));
    for f in &sink.flows {
        assert!(f.received > 0, "flow {} got nothing", f.flow);
        assert_eq!(f.lost, Some(0));
        assert_eq!(f.highest_seq, Some(f.received - 1));
    }
    let l = &sink.latency;
    assert_eq!(l.samples, n);
    assert!(l.min_ns > 0);
    assert!(l.min_ns <= l.p50_ns && l.p50_ns <= l.p90_ns && l.p90_ns <= l.p99_ns);
    assert!(l.p99_ns <= l.max_ns, "{l:?}");
    assert!(sink.cpu.total_s > 0.0 || sink.cpu.ns_per_packet >= 0.0);
    // The report is what the benchmark writes as JSON.
    let json = serde_json::to_value(&sink).expect("serialises");
    assert_eq!(json["received"], n);
    assert_eq!(json["latency"]["samples"], n);
    let json = serde_json::to_value(gen).expect("serialises");
    assert_eq!(json["packets"], n);
}

fn traffic(v6: bool, proto: InnerProto, flows: u32, size: usize) -> TrafficSpec {
    let (s, d) = if v6 {
        ("fd00:1::/64", "fd00:2::/64")
    } else {
        ("10.1.0.0/16", "10.2.0.0/16")
    };
    TrafficSpec {
        vni: 5001,
        src_prefix: s.parse().expect("prefix"),
        dst_prefix: d.parse().expect("prefix"),
        src_addrs: 2,
        flows,
        size,
        proto,
        ..TrafficSpec::default()
    }
}

fn sink_config(listen: SocketAddr, t: &TrafficSpec, threads: usize) -> SinkConfig {
    SinkConfig {
        listen,
        mode: SinkMode::Vxlan,
        expect: Expect {
            vni: Some(t.vni),
            inner_dst_mac: Some(t.router_mac),
            flows: t.flows,
        },
        threads,
        duration: Some(Duration::from_secs(60)),
        ..SinkConfig::default()
    }
}

fn gen_config(dst: SocketAddr, t: TrafficSpec, n: u64, threads: usize) -> GenConfig {
    GenConfig {
        traffic: t,
        dst,
        bind: None,
        sockets: 4,
        threads,
        limits: Limits {
            // Paced so the receive buffers never overflow on a busy 2-core machine: the test
            // is about counting, not speed.
            rate_pps: 20_000,
            count: Some(n),
            duration: None,
            batch: 32,
        },
        send_buffer: 0,
    }
}

#[test]
fn loopback_counts_every_packet() {
    let t = traffic(false, InnerProto::Udp, 8, 256);
    let sink = Sink::spawn(sink_config("127.0.0.1:0".parse().expect("addr"), &t, 1)).expect("sink");
    let gen = Generator::new(&gen_config(sink.local_addr(), t, 1000, 1))
        .expect("generator")
        .run();
    let report = collect(sink, 1000);
    assert_clean(&gen, report, 1000);
}

#[test]
fn loopback_sink_counts_invalid_by_reason() {
    let t = traffic(false, InnerProto::Udp, 2, 128);
    let sink = Sink::spawn(sink_config("127.0.0.1:0".parse().expect("addr"), &t, 1)).expect("sink");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.local_addr()).expect("connect");
    // A short datagram, one without the I flag, one for another VNI.
    tx.send(&[0x08, 0, 0]).expect("send");
    tx.send(&[0, 0, 0, 0, 0, 0x13, 0x89, 0, 1, 2])
        .expect("send");
    tx.send(&[0x08, 0, 0, 0, 0, 0, 1, 0, 1, 2]).expect("send");
    // Then one valid packet: loopback keeps order, so once it is counted the rest are too.
    let b = gatewan_pktgen::PacketBuilder::new(t, gatewan_pktgen::Encap::Vxlan).expect("builder");
    let mut p = b.build(1);
    p.stamp(0, gatewan_pktgen::clock::monotonic_ns());
    tx.send(p.bytes()).expect("send");
    let report = collect(sink, 1);
    assert_eq!(report.received, 1);
    assert_eq!(report.invalid, 3, "{:?}", report.invalid_by_reason);
    assert_eq!(report.invalid_by_reason.get("vxlan_truncated"), Some(&1));
    assert_eq!(report.invalid_by_reason.get("vxlan_flags"), Some(&1));
    assert_eq!(report.invalid_by_reason.get("vni_mismatch"), Some(&1));
}

#[test]
fn loopback_plain_mode() {
    // Plain mode receives bare payloads: feed it the payload of generated packets.
    let t = traffic(false, InnerProto::Udp, 3, 100);
    let mut cfg = sink_config("127.0.0.1:0".parse().expect("addr"), &t, 1);
    cfg.mode = SinkMode::Plain;
    let sink = Sink::spawn(cfg).expect("sink");
    let b = gatewan_pktgen::PacketBuilder::new(t, gatewan_pktgen::Encap::Vxlan).expect("builder");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.local_addr()).expect("connect");
    for seq in 0..10 {
        for flow in 0..3 {
            let mut p = b.build(flow);
            p.stamp(seq, gatewan_pktgen::clock::monotonic_ns());
            tx.send(&p.bytes()[b.layout().payload..]).expect("send");
        }
    }
    let mut r = collect(sink, 30);
    r.reconcile(&[10, 10, 10]);
    assert_eq!((r.received, r.invalid, r.reordered), (30, 0, 0));
    assert_eq!(r.lost, Some(0));
    assert_eq!(r.mode, SinkMode::Plain);
}

/// A leaf and a far namespace joined by a veth pair with `threads` queues, addressed in the
/// outer family asked for, with neighbour entries both ways (no ARP/ND in the way of the first
/// packets), and a sink listening on the far side.
struct Pair {
    _bed: Testbed,
    leaf: Netns,
    a: Link,
    b: Link,
    src: IpAddr,
    dst: SocketAddr,
    sink: SinkHandle,
}

fn veth_pair(outer_v6: bool, threads: usize, t: &TrafficSpec) -> Pair {
    require(&[Need::Root]);
    let mut bed = Testbed::new().expect("test bed");
    let leaf = bed.add_netns("leaf").expect("netns");
    let far = bed.add_netns("far").expect("netns");
    let (a, b) = bed.add_veth(&leaf, &far, threads as u32).expect("veth");
    let (addr_a, addr_b, plen, listen) = if outer_v6 {
        ("fd77::1", "fd77::2", 64, "[::]:4789")
    } else {
        ("10.77.0.1", "10.77.0.2", 24, "0.0.0.0:4789")
    };
    a.add_addr(&format!("{addr_a}/{plen}")).expect("addr");
    b.add_addr(&format!("{addr_b}/{plen}")).expect("addr");
    a.add_neighbor(addr_b, &b.mac().expect("mac"))
        .expect("neigh");
    b.add_neighbor(addr_a, &a.mac().expect("mac"))
        .expect("neigh");
    let sink_cfg = sink_config(listen.parse().expect("addr"), t, threads);
    let sink = far
        .run(move || Sink::spawn(sink_cfg))
        .expect("enter")
        .expect("sink");
    Pair {
        _bed: bed,
        leaf,
        a,
        b,
        src: addr_a.parse().expect("addr"),
        dst: SocketAddr::new(addr_b.parse().expect("addr"), 4789),
        sink,
    }
}

/// Generator in one namespace, sink in another, across a veth pair.
fn netns_run(outer_v6: bool, inner_v6: bool, proto: InnerProto, size: usize, threads: usize) {
    let n = 3000;
    let t = traffic(inner_v6, proto, 16, size);
    let pair = veth_pair(outer_v6, threads, &t);
    let gen_cfg = gen_config(pair.dst, t, n, threads);
    let gen = pair
        .leaf
        .run(move || Generator::new(&gen_cfg).map(|g| g.run()))
        .expect("enter")
        .expect("generator");
    let report = collect(pair.sink, n);
    assert_clean(&gen, report, n);
}

#[test]
fn netns_veth_ipv4_inner_udp() {
    netns_run(false, false, InnerProto::Udp, 512, 1);
}

#[test]
fn netns_veth_ipv6_inner_tcp_two_threads() {
    netns_run(true, true, InnerProto::Tcp, 1420, 2);
}

#[test]
fn netns_veth_ipv6_inner_udp_over_ipv4() {
    netns_run(false, true, InnerProto::Udp, 128, 1);
}

/// AF_XDP transmit: whole frames on each queue of the leaf's veth (one thread per queue),
/// received by the far side's kernel and sink as any VXLAN datagram. The next hop's MAC comes
/// from the kernel's tables, or is given (as `--dst-mac` does).
fn netns_afxdp_run(outer_v6: bool, threads: usize, given_mac: bool) {
    let n = 3000;
    let t = traffic(false, InnerProto::Udp, 16, 512);
    let pair = veth_pair(outer_v6, threads, &t);
    let (src, dst) = (pair.src, pair.dst);
    let interface = pair.a.name.clone();
    let limits = gen_config(dst, t.clone(), n, threads).limits;
    let dst_mac = given_mac.then(|| pair.b.mac().expect("mac").parse().expect("a MAC"));
    let gen = pair
        .leaf
        .run(move || -> Result<GenReport, String> {
            let outer = XskTx::outer(&interface, src, dst, dst_mac).map_err(|e| chain(&e))?;
            let ports = (0..threads as u32)
                .map(|q| XskTx::open(&interface, q, outer))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| chain(&e))?;
            let generator = Generator::with_ports(t, ports, limits).map_err(|e| chain(&e))?;
            Ok(generator.run())
        })
        .expect("enter")
        .expect("AF_XDP generator");
    let report = collect(pair.sink, n);
    assert_clean(&gen, report, n);
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    out
}

#[test]
fn netns_afxdp_transmit_two_queues_ipv4() {
    netns_afxdp_run(false, 2, false);
}

#[test]
fn netns_afxdp_transmit_ipv6_next_hop_from_the_kernel() {
    netns_afxdp_run(true, 1, false);
}

#[test]
fn netns_afxdp_transmit_with_a_given_next_hop() {
    netns_afxdp_run(false, 1, true);
}
