//! AF_XDP workers on veths in namespaces: echo on a two-queue veth with one worker per queue,
//! and forwarding from one interface to another through a shared UMEM. Names start with
//! `xdp_`: they need root and a build with the eBPF toolchain.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gatewan_dataplane::afxdp::{
    Action, AfXdpError, BindMode, BusyPoll, BusyPollState, Frame, PortId, XskConfig, XskWorker,
    KERNEL_HEADROOM,
};
use gatewan_dataplane::xdp::{AttachMode, AttachedXdp, Counter, SteerKind};
use gatewan_testbed::{require, Need, Netns, Testbed};
use support::{allowed_cpus, eth, ipv4_udp, mac, pin_to_cpu, ETH_P_IP};

const VXLAN_PORT: u16 = 4789;
/// Datagrams in flight per sender: the test waits for a window's replies before sending the
/// next, so no ring can overflow however slowly the workers get scheduled.
const WINDOW: usize = 32;

fn small_config() -> XskConfig {
    XskConfig {
        frames: 1024,
        ring_size: 256,
        batch: 32,
        ..XskConfig::default()
    }
}

fn new_worker(ns: &Netns, config: XskConfig, ports: &[(&str, u32)]) -> (XskWorker, Vec<PortId>) {
    let ports: Vec<(String, u32)> = ports.iter().map(|(i, q)| (i.to_string(), *q)).collect();
    ns.run(move || {
        let mut worker = XskWorker::new(config)?;
        let mut ids = Vec::new();
        for (interface, queue) in &ports {
            ids.push(worker.add_port(interface, *queue)?);
        }
        Ok::<_, AfXdpError>((worker, ids))
    })
    .expect("enter netns")
    .expect("AF_XDP worker")
}

/// Runs `worker` on its own thread until `stop`, then lets the kernel complete what is still
/// on the TX rings and hands the worker back with its counters.
fn spawn_worker<F>(mut worker: XskWorker, stop: Arc<AtomicBool>, mut f: F) -> JoinHandle<XskWorker>
where
    F: FnMut(&mut Frame<'_>) -> Action + Send + 'static,
{
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if worker.poll(&mut f) == 0 {
                worker.wait(5).expect("poll(2)");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while worker.frame_accounting().tx_in_flight > 0 && Instant::now() < deadline {
            worker.poll(&mut f);
            worker.wait(1).expect("poll(2)");
        }
        worker
    })
}

/// Sends the datagram back where it came from: MACs, IPv4 addresses and UDP ports swapped
/// (the checksums stay valid), out of the port it arrived on.
fn reflect(frame: &mut Frame<'_>) -> Action {
    let Some(port) = frame.rx_port() else {
        return Action::Drop;
    };
    let d = frame.data_mut();
    if d.len() < 42 || d[12..14] != ETH_P_IP.to_be_bytes() || d[14] != 0x45 {
        return Action::Drop;
    }
    for i in 0..6 {
        d.swap(i, 6 + i);
    }
    for i in 0..4 {
        d.swap(26 + i, 30 + i);
    }
    for i in 0..2 {
        d.swap(34 + i, 36 + i);
    }
    // A veth hands XDP the sender's datagram with its checksum still partial (offloaded):
    // drop the checksum, which UDP over IPv4 allows, rather than forward a wrong one.
    d[40..42].copy_from_slice(&[0, 0]);
    Action::Transmit(port)
}

fn recv_window(
    socket: &UdpSocket,
    n: usize,
    buf: &mut [u8],
    mut check: impl FnMut(&[u8], SocketAddr),
) {
    for _ in 0..n {
        let (len, from) = socket.recv_from(buf).expect("a reply within the timeout");
        check(&buf[..len], from);
    }
}

#[test]
fn xdp_afxdp_echo_on_two_queues_answers_every_datagram() {
    require(&[Need::Root]);
    let mut tb = Testbed::new().expect("test bed");
    let a = tb.add_netns("a").expect("netns");
    let b = tb.add_netns("b").expect("netns");
    let (la, lb) = tb.add_veth(&a, &b, 2).expect("veth");
    la.add_addr("10.98.2.1/24").expect("addr");
    lb.add_addr("10.98.2.2/24").expect("addr");
    la.add_neighbor("10.98.2.2", &lb.mac().expect("mac"))
        .expect("neigh");
    lb.add_neighbor("10.98.2.1", &la.mac().expect("mac"))
        .expect("neigh");

    // A veth delivers to the peer's receive queue with the index of the transmit queue it was
    // sent on. Map each transmit queue to one CPU (XPS) and pin one sender to each CPU: then
    // the receive queue is known exactly.
    let cpus = allowed_cpus();
    let senders = 2usize;
    let sender_cpu = |i: usize| cpus[i % cpus.len()];
    for q in 0..2 {
        let mask = format!("{:x}", 1u64 << sender_cpu(q));
        let path = format!("/sys/class/net/{}/queues/tx-{q}/xps_cpus", la.name);
        a.exec("sh", ["-c", &format!("echo {mask} > {path}")])
            .expect("XPS");
    }

    let name = lb.name.clone();
    let mut xdp = b
        .run(move || AttachedXdp::attach(&name, AttachMode::Native))
        .expect("netns")
        .expect("attach");
    let vtep: SocketAddr = "10.98.2.2:4789".parse().expect("addr");
    xdp.add_endpoint(vtep, SteerKind::Vxlan).expect("endpoint");

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for queue in 0..2 {
        let (worker, ports) = new_worker(&b, small_config(), &[(&lb.name, queue)]);
        let info = worker.port_info(ports[0]).expect("port").clone();
        eprintln!(
            "queue {queue}: zero-copy {}, need_wakeup {}",
            info.zero_copy, info.need_wakeup
        );
        xdp.register_xsk(queue, &worker.fd(ports[0]).expect("fd"))
            .expect("register");
        workers.push((spawn_worker(worker, Arc::clone(&stop), reflect), ports[0]));
    }

    const PER_SENDER: usize = 256;
    let handles: Vec<_> = (0..senders)
        .map(|i| {
            let a = a.clone();
            let cpu = sender_cpu(i);
            thread::spawn(move || {
                pin_to_cpu(cpu);
                a.enter_current_thread().expect("netns");
                let socket = UdpSocket::bind(("10.98.2.1", 20000 + i as u16)).expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut seen = BTreeSet::new();
                let mut buf = [0u8; 2048];
                for window in 0..PER_SENDER / WINDOW {
                    for j in 0..WINDOW {
                        let seq = (window * WINDOW + j) as u32;
                        let mut payload = [0u8; 64];
                        payload[0] = i as u8;
                        payload[1..5].copy_from_slice(&seq.to_be_bytes());
                        socket.send_to(&payload, vtep).expect("send");
                    }
                    recv_window(&socket, WINDOW, &mut buf, |reply, from| {
                        assert_eq!(from, vtep, "the reply comes from the VTEP");
                        assert_eq!(reply.len(), 64);
                        assert_eq!(reply[0], i as u8, "a reply to another sender");
                        seen.insert(u32::from_be_bytes([reply[1], reply[2], reply[3], reply[4]]));
                    });
                }
                seen
            })
        })
        .collect();
    for handle in handles {
        let seen = handle.join().expect("sender");
        assert_eq!(
            seen.len(),
            PER_SENDER,
            "every datagram answered exactly once"
        );
    }
    stop.store(true, Ordering::Relaxed);

    let total = (senders * PER_SENDER) as u64;
    let mut rx = Vec::new();
    for (handle, port) in workers {
        let worker = handle.join().expect("worker");
        let stats = worker.stats(port).expect("stats");
        assert_eq!(stats.tx_packets, stats.rx_packets, "every frame reflected");
        assert_eq!(
            stats.tx_completed, stats.tx_packets,
            "every transmission completed"
        );
        assert_eq!(stats.tx_ring_full, 0);
        let frames = worker.frame_accounting();
        assert_eq!(
            frames.total(),
            u64::from(worker.frames()),
            "no frame lost: {frames:?}"
        );
        assert_eq!(frames.tx_in_flight + frames.staged, 0, "{frames:?}");
        rx.push(stats.rx_packets);
    }
    assert_eq!(rx.iter().sum::<u64>(), total, "per queue: {rx:?}");
    if cpus.len() >= 2 {
        assert_eq!(
            rx,
            vec![PER_SENDER as u64; 2],
            "XPS put each sender on its own queue"
        );
    }
    let c = xdp.counters().expect("counters");
    assert_eq!(c.get(Counter::Redirect).packets, total, "{c:?}");
    assert_eq!(c.get(Counter::Vxlan).packets, total, "{c:?}");
    assert_eq!(c.get(Counter::NoSocket).packets, 0, "{c:?}");
}

/// Outer Ethernet + IPv4 + UDP written in front of the received frame: a stand-in for the
/// pipeline's encapsulation, growing the packet into the frame's headroom.
const OUTER: usize = 14 + 20 + 8;

struct Outer {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
}

impl Outer {
    fn wrap(&self, frame: &mut Frame<'_>) -> bool {
        let inner_len = frame.len();
        let Ok(packet) = frame.push_front(OUTER) else {
            return false;
        };
        let header = {
            let mut h = eth(self.dst_mac, self.src_mac, &[], ETH_P_IP);
            let ip_udp = ipv4_udp(self.src, self.dst, 0, &[], VXLAN_PORT, self.dport, &[]);
            h.extend_from_slice(&ip_udp);
            // Lengths of the real payload, and the IPv4 checksum over them.
            let ip_total = (20 + 8 + inner_len) as u16;
            h[16..18].copy_from_slice(&ip_total.to_be_bytes());
            h[24..26].copy_from_slice(&[0, 0]);
            let csum = support::ipv4_checksum(&h[14..34]);
            h[24..26].copy_from_slice(&csum.to_be_bytes());
            h[38..40].copy_from_slice(&((8 + inner_len) as u16).to_be_bytes());
            h
        };
        packet[..OUTER].copy_from_slice(&header);
        true
    }
}

#[test]
fn xdp_afxdp_forwards_between_interfaces_through_a_shared_umem() {
    require(&[Need::Root]);
    let mut tb = Testbed::new().expect("test bed");
    let src = tb.add_netns("src").expect("netns");
    let gw = tb.add_netns("gw").expect("netns");
    let dst = tb.add_netns("dst").expect("netns");
    let (src_l, gw_a) = tb.add_veth(&src, &gw, 1).expect("veth");
    let (gw_b, dst_l) = tb.add_veth(&gw, &dst, 1).expect("veth");
    src_l.add_addr("10.98.3.1/24").expect("addr");
    gw_a.add_addr("10.98.3.2/24").expect("addr");
    gw_b.add_addr("10.98.4.1/24").expect("addr");
    dst_l.add_addr("10.98.4.2/24").expect("addr");
    src_l
        .add_neighbor("10.98.3.2", &gw_a.mac().expect("mac"))
        .expect("neigh");

    let name = gw_a.name.clone();
    let mut xdp = attach_in(&gw, &name);
    let vtep: SocketAddr = "10.98.3.2:4789".parse().expect("addr");
    xdp.add_endpoint(vtep, SteerKind::Vxlan).expect("endpoint");

    // Busy polling on both sockets (root may set it; the worker then polls the sockets
    // instead of waiting to be woken).
    let config = XskConfig {
        busy_poll: Some(BusyPoll::default()),
        ..small_config()
    };
    let (mut worker, ports) = new_worker(&gw, config, &[(&gw_a.name, 0), (&gw_b.name, 0)]);
    let (port_a, port_b) = (ports[0], ports[1]);
    for port in [port_a, port_b] {
        let info = worker.port_info(port).expect("port");
        assert_eq!(info.busy_poll, BusyPollState::On, "{info:?}");
        assert!(!info.zero_copy, "a veth has no zero-copy AF_XDP: {info:?}");
    }
    xdp.register_xsk(0, &worker.fd(port_a).expect("fd"))
        .expect("register");
    let outer = Outer {
        dst_mac: mac(&dst_l.mac().expect("mac")),
        src_mac: mac(&gw_b.mac().expect("mac")),
        src: Ipv4Addr::new(10, 98, 4, 1),
        dst: Ipv4Addr::new(10, 98, 4, 2),
        dport: 5555,
    };
    let sink = dst
        .run(|| UdpSocket::bind("10.98.4.2:5555"))
        .expect("netns")
        .expect("bind");
    sink.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    // A frame the worker originates: written into a free frame, sent out of port B.
    let hello = b"originated by the worker";
    assert!(worker.send(|frame| {
        frame.set_len(hello.len()).expect("room");
        frame.data_mut().copy_from_slice(hello);
        if outer.wrap(frame) {
            Action::Transmit(port_b)
        } else {
            Action::Drop
        }
    }));
    worker.flush();
    let mut buf = [0u8; 2048];
    let (len, _) = sink.recv_from(&mut buf).expect("the originated datagram");
    assert_eq!(&buf[..len], hello);

    // More than copy mode transmits per wakeup (32), in one flush: it wakes the kernel until
    // the ring is empty.
    const BURST: usize = 100;
    for seq in 0..BURST as u32 {
        assert!(worker.send(|frame| {
            frame.set_len(4).expect("room");
            frame.data_mut().copy_from_slice(&seq.to_be_bytes());
            assert!(outer.wrap(frame));
            Action::Transmit(port_b)
        }));
    }
    worker.flush();
    let mut burst = BTreeSet::new();
    recv_window(&sink, BURST, &mut buf, |payload, _| {
        burst.insert(u32::from_be_bytes(payload.try_into().expect("4 bytes")));
    });
    assert_eq!(burst.len(), BURST);
    let originated = (1 + BURST) as u64;
    let originated_bytes = (OUTER + hello.len() + BURST * (OUTER + 4)) as u64;

    let expected_offset = (worker.config().headroom + KERNEL_HEADROOM) as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_worker(worker, Arc::clone(&stop), move |frame| {
        // Received data starts right after the kernel's headroom: room for the outer headers.
        if frame.rx_port() != Some(port_a) || frame.offset() != expected_offset {
            return Action::Drop;
        }
        if outer.wrap(frame) {
            Action::Transmit(port_b)
        } else {
            Action::Drop
        }
    });

    const N: usize = 512;
    let sender = src
        .run(|| UdpSocket::bind("10.98.3.1:30000"))
        .expect("netns")
        .expect("bind");
    let mut seen = BTreeSet::new();
    for window in 0..N / WINDOW {
        for j in 0..WINDOW {
            let seq = (window * WINDOW + j) as u32;
            let mut payload = [0u8; 100];
            payload[..4].copy_from_slice(&seq.to_be_bytes());
            sender.send_to(&payload, vtep).expect("send");
        }
        recv_window(&sink, WINDOW, &mut buf, |inner, from| {
            assert_eq!(from, "10.98.4.1:4789".parse().expect("addr"));
            // The whole frame as it arrived on interface A: Ethernet, IPv4, UDP to the VTEP.
            assert_eq!(inner.len(), 14 + 20 + 8 + 100);
            assert_eq!(&inner[30..34], &[10, 98, 3, 2]);
            assert_eq!(&inner[36..38], &VXLAN_PORT.to_be_bytes());
            seen.insert(u32::from_be_bytes([
                inner[42], inner[43], inner[44], inner[45],
            ]));
        });
    }
    stop.store(true, Ordering::Relaxed);
    let worker = handle.join().expect("worker");
    assert_eq!(seen.len(), N, "every frame forwarded exactly once");

    let a = worker.stats(port_a).expect("stats");
    let b = worker.stats(port_b).expect("stats");
    assert_eq!(a.rx_packets, N as u64, "{a:?}");
    assert_eq!(a.tx_packets, 0, "{a:?}");
    assert_eq!(b.tx_packets, N as u64 + originated, "{b:?}");
    assert_eq!(b.tx_completed, b.tx_packets, "{b:?}");
    assert_eq!(
        b.tx_bytes,
        a.rx_bytes + (N * OUTER) as u64 + originated_bytes
    );
    let frames = worker.frame_accounting();
    assert_eq!(
        frames.total(),
        u64::from(worker.frames()),
        "no frame lost: {frames:?}"
    );
    assert_eq!(
        xdp.counter(Counter::Vxlan).expect("counter").packets,
        N as u64
    );
}

fn attach_in(ns: &Netns, interface: &str) -> AttachedXdp {
    let name = interface.to_owned();
    ns.run(move || AttachedXdp::attach(&name, AttachMode::Native))
        .expect("netns")
        .expect("attach")
}

#[test]
fn xdp_afxdp_zero_copy_is_refused_on_veth_and_auto_binds_in_copy_mode() {
    require(&[Need::Root]);
    let mut tb = Testbed::new().expect("test bed");
    let a = tb.add_netns("a").expect("netns");
    let b = tb.add_netns("b").expect("netns");
    let (_, lb) = tb.add_veth(&a, &b, 1).expect("veth");
    let name = lb.name.clone();
    let forced = b
        .run(move || {
            let mut worker = XskWorker::new(XskConfig {
                bind: BindMode::ZeroCopy,
                ..small_config()
            })?;
            worker.add_port(&name, 0)
        })
        .expect("netns");
    match forced {
        Err(AfXdpError::Socket { step, source, .. }) => {
            assert_eq!(step, "binding");
            assert_eq!(source.raw_os_error(), Some(libc::EOPNOTSUPP), "{source}");
        }
        other => panic!("zero-copy on a veth: {other:?}"),
    }
    // Auto asks the kernel for zero-copy and takes copy mode where the driver has none.
    let (worker, ports) = new_worker(&b, small_config(), &[(&lb.name, 0)]);
    let info = worker.port_info(ports[0]).expect("port");
    assert!(!info.zero_copy, "{info:?}");
    assert!(info.need_wakeup);
    drop(worker); // frees the queue for the next socket
    let (worker, ports) = new_worker(
        &b,
        XskConfig {
            bind: BindMode::Copy,
            ..small_config()
        },
        &[(&lb.name, 0)],
    );
    assert!(!worker.port_info(ports[0]).expect("port").zero_copy);
    drop(worker);
    // A queue the veth does not have.
    let name = lb.name.clone();
    let missing = b
        .run(move || XskWorker::new(small_config())?.add_port(&name, 7))
        .expect("netns");
    assert!(
        matches!(
            missing,
            Err(AfXdpError::Socket {
                step: "binding",
                ..
            })
        ),
        "{missing:?}"
    );
}
