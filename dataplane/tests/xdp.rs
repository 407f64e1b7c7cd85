//! The embedded XDP program on a veth in a namespace. Names starting with `xdp_` need root and
//! a build with the eBPF toolchain (`cargo xtask test` provides both in CI).

use gatewan_dataplane::xdp::{self, AttachMode, AttachedXdp, XdpError};
use gatewan_ebpf_common::Verdict;
use gatewan_testbed::{require, Need, Testbed};

/// ICMP echo of 56 data bytes: 14 Ethernet + 20 IPv4 + 8 ICMP + 56.
const PING_FRAME: u64 = 98;

#[test]
fn xdp_program_counts_exactly_the_packets_a_veth_receives() {
    require(&[Need::Root]);
    xdp::object().expect("this build must embed the XDP program");
    let mut tb = Testbed::new().expect("test bed");
    let a = tb.add_netns("a").expect("netns");
    let b = tb.add_netns("b").expect("netns");
    for ns in [&a, &b] {
        // Nothing but our pings may cross the link: no IPv6 chatter, no ARP.
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            .expect("sysctl");
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
            .expect("sysctl");
    }
    let (la, lb) = tb.add_veth(&a, &b, 1).expect("veth");
    la.add_addr("10.98.0.1/30").expect("addr");
    lb.add_addr("10.98.0.2/30").expect("addr");
    la.add_neighbor("10.98.0.2", &lb.mac().expect("mac"))
        .expect("neigh");
    lb.add_neighbor("10.98.0.1", &la.mac().expect("mac"))
        .expect("neigh");

    let name = lb.name.clone();
    let attached = b
        .run(move || AttachedXdp::attach(&name, AttachMode::Native))
        .expect("enter netns")
        .expect("attach");
    let before = attached.count(Verdict::Pass).expect("counters");
    assert_eq!(before.packets, 0);

    const PINGS: u64 = 7;
    a.exec(
        "ping",
        [
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.02",
            "-W",
            "5",
            "10.98.0.2",
        ],
    )
    .expect("ping through XDP");
    let after = attached.count(Verdict::Pass).expect("counters");
    assert_eq!(after.packets, PINGS, "one pass per echo request received");
    assert_eq!(after.bytes, PINGS * PING_FRAME);
    for verdict in [Verdict::Drop, Verdict::Redirect, Verdict::Aborted] {
        assert_eq!(
            attached.count(verdict).expect("counters").packets,
            0,
            "{verdict:?}"
        );
    }
    assert!(lb
        .netns
        .ip(["link", "show", &lb.name])
        .expect("link")
        .contains("xdp"));

    drop(attached);
    let shown = lb.netns.ip(["link", "show", &lb.name]).expect("link");
    assert!(
        !shown.contains("xdp"),
        "program still attached after drop: {shown}"
    );
}

#[test]
fn attaching_to_a_bad_interface_name_is_an_error_not_a_panic() {
    for bad in ["", "has\0nul", "much-too-long-interface", "a/b"] {
        match AttachedXdp::attach(bad, AttachMode::Auto) {
            Err(XdpError::Interface(_)) | Err(XdpError::NotEmbedded(_)) => {}
            Err(other) => panic!("{bad:?}: unexpected error {other}"),
            Ok(_) => panic!("{bad:?} attached"),
        }
    }
}

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use gatewan_dataplane::afxdp::{Action, XskConfig, XskWorker};
use gatewan_dataplane::xdp::{Counter, SteerKind};
use support::{
    eth, ipv4_udp, ipv6, mac, raw_sender, send_raw, udp, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP,
    ETH_P_IPV6,
};

const A4: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 1);
const B4: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 2);
const A6: [u8; 16] = [0xfd, 0x98, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0xfd, 0x98, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const WG_PORT: u16 = 51820;

fn recv_all(socket: &UdpSocket, n: usize) -> usize {
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while got < n {
        match socket.recv(&mut buf) {
            Ok(_) => got += 1,
            Err(_) => break,
        }
    }
    got
}

/// Nothing more is waiting on `socket` (the kernel did not get what XDP redirected).
fn nothing_queued(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    let empty = socket.recv(&mut buf).is_err();
    socket.set_nonblocking(false).expect("blocking");
    empty
}

/// Polls `worker` until it has received `n` frames (or a generous deadline passes, so a broken
/// build fails instead of hanging); returns the UDP destination ports of what it received,
/// keyed by (ethertype after the tags, port).
fn drain_worker(worker: &mut XskWorker, n: usize) -> HashMap<(u16, u16), usize> {
    let mut seen = HashMap::new();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < n && Instant::now() < deadline {
        let received = worker.poll(|frame| {
            let data = frame.data();
            let mut l3 = 14;
            let mut ethertype = u16::from_be_bytes([data[12], data[13]]);
            while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
                ethertype = u16::from_be_bytes([data[l3 + 2], data[l3 + 3]]);
                l3 += 4;
            }
            let l4 = match ethertype {
                ETH_P_IP => l3 + usize::from(data[l3] & 0x0f) * 4,
                _ => l3 + 40,
            };
            let port = u16::from_be_bytes([data[l4 + 2], data[l4 + 3]]);
            *seen.entry((ethertype, port)).or_insert(0) += 1;
            Action::Drop
        });
        got += received;
        if received == 0 {
            worker.wait(10).expect("poll");
        }
    }
    seen
}

#[test]
fn xdp_steering_passes_the_control_plane_and_redirects_only_steered_endpoints() {
    require(&[Need::Root, Need::Tool("ping")]);
    let mut tb = Testbed::new().expect("test bed");
    let a = tb.add_netns("a").expect("netns");
    let b = tb.add_netns("b").expect("netns");
    let (la, lb) = tb.add_veth(&a, &b, 1).expect("veth");
    la.add_addr("10.98.1.1/24").expect("addr");
    lb.add_addr("10.98.1.2/24").expect("addr");
    la.add_addr("fd98:1::1/64").expect("addr");
    lb.add_addr("fd98:1::2/64").expect("addr");
    let (mac_a, mac_b) = (mac(&la.mac().expect("mac")), mac(&lb.mac().expect("mac")));

    let name = lb.name.clone();
    let mut xdp = b
        .run(move || AttachedXdp::attach(&name, AttachMode::Native))
        .expect("enter netns")
        .expect("attach");

    // ARP: no static neighbour, so this ping needs an ARP exchange through the program.
    a.exec("ping", ["-c", "2", "-i", "0.05", "-W", "5", "10.98.1.2"])
        .expect("ping through XDP");
    let neigh = a.ip(["neigh", "show", "10.98.1.2"]).expect("neigh");
    assert!(
        neigh.contains(&lb.mac().expect("mac")),
        "ARP did not resolve: {neigh}"
    );

    // BGP's TCP port 179: a session opens and carries bytes both ways.
    let listener = b
        .run(|| TcpListener::bind("10.98.1.2:179"))
        .expect("netns")
        .expect("listen on 179");
    let mut client = a
        .run(|| {
            let addr: SocketAddr = "10.98.1.2:179".parse().expect("addr");
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.write_all(b"OPEN")?;
            Ok::<_, std::io::Error>(s)
        })
        .expect("netns")
        .expect("connect to 179");
    let (mut server, _) = listener.accept().expect("accept");
    let mut buf = [0u8; 9];
    server.read_exact(&mut buf[..4]).expect("read");
    assert_eq!(&buf[..4], b"OPEN");
    server.write_all(b"KEEPALIVE").expect("write");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"KEEPALIVE");

    let c = xdp.counters().expect("counters");
    // At least: the ARP request, two echo requests, SYN, ACK, data, ACK of the reply.
    assert!(c.get(Counter::Pass).packets >= 7, "{c:?}");
    for counter in [
        Counter::Redirect,
        Counter::NoSocket,
        Counter::Malformed,
        Counter::Drop,
    ] {
        assert_eq!(c.get(counter).packets, 0, "{counter:?}: {c:?}");
    }

    // Steered endpoints, configured while attached.
    let vtep: SocketAddr = "10.98.1.2:4789".parse().expect("addr");
    let wg: SocketAddr = SocketAddr::from((B6, WG_PORT));
    xdp.add_endpoint(vtep, SteerKind::Vxlan).expect("endpoint");
    xdp.add_endpoint(wg, SteerKind::Wireguard)
        .expect("endpoint");
    assert_eq!(
        xdp.endpoints().expect("endpoints"),
        HashMap::from([(vtep, SteerKind::Vxlan), (wg, SteerKind::Wireguard)])
    );

    let sink4 = b
        .run(|| UdpSocket::bind(vtep))
        .expect("netns")
        .expect("bind");
    let sink6 = b.run(|| UdpSocket::bind(wg)).expect("netns").expect("bind");
    let other = b
        .run(|| UdpSocket::bind("10.98.1.2:4790"))
        .expect("netns")
        .expect("bind");
    for s in [&sink4, &sink6, &other] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
    }
    let src4 = a
        .run(|| UdpSocket::bind("10.98.1.1:0"))
        .expect("netns")
        .expect("bind");
    let src6 = a
        .run(|| UdpSocket::bind(SocketAddr::from((A6, 0))))
        .expect("netns")
        .expect("bind");

    // No socket serves the queue yet: steered packets fall back to the kernel.
    const K: usize = 5;
    for _ in 0..K {
        src4.send_to(b"vxlan", vtep).expect("send");
        src6.send_to(b"wireguard", wg).expect("send");
    }
    assert_eq!(recv_all(&sink4, K), K);
    assert_eq!(recv_all(&sink6, K), K);
    let c = xdp.counters().expect("counters");
    assert_eq!(c.get(Counter::NoSocket).packets, 2 * K as u64, "{c:?}");
    assert_eq!(c.get(Counter::Redirect).packets, 0, "{c:?}");

    // With a socket in the queue's slot they are redirected, and only they.
    let name = lb.name.clone();
    let mut worker = b
        .run(move || {
            let mut w = XskWorker::new(XskConfig {
                frames: 512,
                ring_size: 256,
                ..XskConfig::default()
            })?;
            let port = w.add_port(&name, 0)?;
            Ok::<_, gatewan_dataplane::afxdp::AfXdpError>((w, port))
        })
        .expect("netns")
        .expect("AF_XDP socket");
    let (ref mut worker, port) = worker;
    xdp.register_xsk(0, &worker.fd(port).expect("fd"))
        .expect("register");
    let before = xdp.counters().expect("counters");
    for _ in 0..K {
        src4.send_to(b"vxlan", vtep).expect("send");
        src6.send_to(b"wireguard", wg).expect("send");
        src4.send_to(b"other", "10.98.1.2:4790").expect("send");
    }
    assert_eq!(recv_all(&other, K), K, "unsteered port reaches the kernel");

    // Frames the kernel stack never sees, sent raw: VLAN tags, a fragment, an IPv6 extension
    // header, truncated headers.
    let name = la.name.clone();
    let raw = a.run(move || raw_sender(&name)).expect("netns");
    let to_vtep = ipv4_udp(A4, B4, 0, &[], 40000, 4789, b"tagged");
    let mut frame = eth(mac_b, mac_a, &[(ETH_P_8021Q, 100)], ETH_P_IP);
    frame.extend_from_slice(&to_vtep);
    send_raw(&raw, &frame); // one tag: redirected
    let mut frame = eth(
        mac_b,
        mac_a,
        &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 20)],
        ETH_P_IP,
    );
    frame.extend_from_slice(&to_vtep);
    send_raw(&raw, &frame); // two tags: redirected
    let mut frame = eth(mac_b, mac_a, &[], ETH_P_IP);
    frame.extend_from_slice(&ipv4_udp(A4, B4, 0, &[1, 1, 1, 0], 40000, 4789, b"opts"));
    send_raw(&raw, &frame); // IHL 6: redirected
    let mut frame = eth(mac_b, mac_a, &[], ETH_P_IP);
    frame.extend_from_slice(&ipv4_udp(A4, B4, 0x2000, &[], 40000, 4789, b"frag"));
    send_raw(&raw, &frame); // first fragment: passed
    let mut hop_by_hop = vec![17, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&udp(40000, WG_PORT, b"ext"));
    let mut frame = eth(mac_b, mac_a, &[], ETH_P_IPV6);
    frame.extend_from_slice(&ipv6(A6, B6, 0, &hop_by_hop));
    send_raw(&raw, &frame); // extension header: passed
    let mut frame = eth(mac_b, mac_a, &[], ETH_P_IP);
    frame.extend_from_slice(&to_vtep[..24]);
    send_raw(&raw, &frame); // UDP header cut short: malformed, passed
    let mut frame = eth(mac_b, mac_a, &[(ETH_P_8021Q, 100)], ETH_P_IPV6);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    send_raw(&raw, &frame); // IPv6 header cut short: malformed, passed

    const REDIRECTED_RAW: usize = 3;
    let seen = drain_worker(worker, 2 * K + REDIRECTED_RAW);
    assert_eq!(
        seen,
        HashMap::from([
            ((ETH_P_IP, 4789), K + REDIRECTED_RAW),
            ((ETH_P_IPV6, WG_PORT), K),
        ]),
        "what reached the AF_XDP socket"
    );
    let c = xdp.counters().expect("counters");
    let delta = |counter| c.get(counter).packets - before.get(counter).packets;
    assert_eq!(
        delta(Counter::Redirect),
        (2 * K + REDIRECTED_RAW) as u64,
        "{c:?}"
    );
    assert_eq!(delta(Counter::Vxlan), (K + REDIRECTED_RAW) as u64, "{c:?}");
    assert_eq!(delta(Counter::Wireguard), K as u64, "{c:?}");
    assert_eq!(delta(Counter::NoSocket), 0, "{c:?}");
    assert_eq!(delta(Counter::Malformed), 2, "{c:?}");
    assert!(delta(Counter::Pass) >= K as u64 + 4, "{c:?}");
    assert!(
        nothing_queued(&sink4),
        "a redirected packet also reached the kernel"
    );
    assert!(
        nothing_queued(&sink6),
        "a redirected packet also reached the kernel"
    );
    let stats = worker.stats(port).expect("stats");
    assert_eq!(stats.rx_packets, (2 * K + REDIRECTED_RAW) as u64);
    let first = c.get(Counter::Redirect).bytes - before.get(Counter::Redirect).bytes;
    assert_eq!(
        stats.rx_bytes, first,
        "the socket got exactly the bytes XDP redirected"
    );

    // Removing an endpoint hands its traffic back to the kernel at once.
    assert!(xdp.remove_endpoint(vtep).expect("remove"));
    assert!(!xdp.remove_endpoint(vtep).expect("remove twice"));
    src4.send_to(b"vxlan", vtep).expect("send");
    assert_eq!(recv_all(&sink4, 1), 1);
    xdp.unregister_xsk(0).expect("unregister");
    src6.send_to(b"wireguard", wg).expect("send");
    assert_eq!(recv_all(&sink6, 1), 1);
    let after = xdp.counters().expect("counters");
    assert_eq!(after.get(Counter::Redirect), c.get(Counter::Redirect));
    assert_eq!(
        after.get(Counter::NoSocket).packets,
        c.get(Counter::NoSocket).packets + 1
    );
}
