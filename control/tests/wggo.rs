//! gatewan's gateway against Debian wireguard-go, in namespaces from the test bed: handshakes
//! from either side, traffic both ways (pings from the wireguard-go side to gatewan's inner
//! addresses, gatewan's ICMP probes to wireguard-go's), with and without a pre-shared key,
//! over IPv4 and IPv6 underlays, a forced rekey under traffic, and a peer with the wrong key.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::{
    counter, established, rekey_under_probes, start_gateway, tunnel_status, wait_for, TunnelSpec,
};
use gatewan_control::gateway::control::{request, Request, Response};
use gatewan_testbed::{require, Need, ProcessId, Testbed, WgKeys, WgPeer, WireguardGo};

#[derive(Clone, Copy, PartialEq)]
enum Initiator {
    Gatewan,
    WireguardGo,
}

struct Setup {
    initiator: Initiator,
    psk: bool,
    v6_underlay: bool,
    /// gatewan is told the wrong public key for wireguard-go.
    wrong_key: bool,
}

struct Running {
    tb: Testbed,
    peer: WireguardGo,
    gateway: ProcessId,
    socket: PathBuf,
}

fn start(setup: Setup) -> Running {
    require(&[Need::Root, Need::Tool("wireguard-go"), Need::Tool("wg")]);
    let mut tb = Testbed::new().expect("test bed");
    let gw_ns = tb.add_netns("gatewan").expect("netns");
    let peer_ns = tb.add_netns("wggo").expect("netns");
    let (gw_link, peer_link) = tb.add_veth(&gw_ns, &peer_ns, 1).expect("veth");
    let (gw_ip, peer_ip, plen) = if setup.v6_underlay {
        ("fd99::1", "fd99::2", 64)
    } else {
        ("10.99.0.1", "10.99.0.2", 30)
    };
    gw_link.add_addr(&format!("{gw_ip}/{plen}")).expect("addr");
    peer_link
        .add_addr(&format!("{peer_ip}/{plen}"))
        .expect("addr");
    let at = |ip: &str, port: u16| SocketAddr::new(ip.parse().expect("ip"), port);

    let gw_keys = WgKeys::generate().expect("keys");
    let psk = setup.psk.then(|| WgKeys::generate().expect("psk").private);
    let peer = tb
        .add_wireguard_go(&peer_ns, 51821, &["10.77.0.1/31", "fd77::1/127"])
        .expect("wireguard-go");
    peer.set_peer(&WgPeer {
        public_key: &gw_keys.public,
        preshared_key: psk.as_deref(),
        endpoint: (setup.initiator == Initiator::WireguardGo).then(|| at(gw_ip, 51820)),
        allowed_ips: &["10.77.0.0/32", "fd77::/128"],
        persistent_keepalive: None,
    })
    .expect("configure wireguard-go");

    let peer_key = if setup.wrong_key {
        WgKeys::generate().expect("keys").public
    } else {
        peer.keys.public.clone()
    };
    let (gateway, socket) = start_gateway(
        &mut tb,
        &gw_ns,
        "gw-test",
        &gw_keys.private,
        at(gw_ip, 51820),
        "20ms",
        &[TunnelSpec {
            name: "wg0",
            peer_public_key: &peer_key,
            peer_endpoint: (setup.initiator == Initiator::Gatewan).then(|| at(peer_ip, 51821)),
            preshared_key: psk.as_deref(),
            v4: ("10.77.0.0/31", "10.77.0.1"),
            v6: ("fd77::/127", "fd77::1"),
            echo_port: 7054,
            // wireguard-go's host has no STAMP reflector: gatewan probes it with ICMP echo.
            peer_echo_port: None,
        }],
    );
    Running {
        tb,
        peer,
        gateway,
        socket,
    }
}

fn check_traffic_both_ways(setup: Setup) {
    let mut run = start(setup);
    // From the wireguard-go side into gatewan (gatewan answers ICMP and ICMPv6 echo) ...
    for target in ["10.77.0.0", "fd77::"] {
        run.peer
            .netns
            .exec("ping", ["-c", "3", "-i", "0.1", "-W", "5", target])
            .unwrap_or_else(|e| panic!("ping {target}: {e}"));
    }
    // ... and gatewan's probes back.
    let tunnel = established(&mut run.tb, run.gateway, &run.socket, 20);
    assert_eq!(tunnel["probe"]["method"], "icmp");
    assert_eq!(tunnel["probe"]["loss"], "0.0%", "{tunnel:#}");
    assert_ne!(tunnel["probe"]["latency"], "-");
    assert!(counter(&tunnel, "rx_packets") >= 6, "{tunnel:#}");
    let dump = run.peer.dump().expect("wg dump");
    let transfer: Vec<u64> = dump
        .lines()
        .nth(1)
        .map(|l| {
            l.split('\t')
                .skip(5)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        transfer.len() == 2 && transfer[0] > 0 && transfer[1] > 0,
        "wireguard-go saw no transfer: {dump}"
    );

    // A forced rekey under 50 probes a second: wireguard-go answers it and not one probe is lost.
    let tunnel = rekey_under_probes(&mut run.tb, run.gateway, &run.socket, "wg0", 150);
    assert_eq!(tunnel["state"], "Established", "{tunnel:#}");
    assert!(counter(&tunnel, "handshakes_completed") >= 2, "{tunnel:#}");
    assert_eq!(
        counter(&tunnel, "probes_lost"),
        0,
        "probes lost across the rekey: {tunnel:#}"
    );
}

#[test]
fn wggo_gatewan_initiates_over_ipv4() {
    check_traffic_both_ways(Setup {
        initiator: Initiator::Gatewan,
        psk: false,
        v6_underlay: false,
        wrong_key: false,
    });
}

#[test]
fn wggo_wireguard_go_initiates_over_ipv4() {
    check_traffic_both_ways(Setup {
        initiator: Initiator::WireguardGo,
        psk: false,
        v6_underlay: false,
        wrong_key: false,
    });
}

#[test]
fn wggo_gatewan_initiates_with_psk_over_ipv6() {
    check_traffic_both_ways(Setup {
        initiator: Initiator::Gatewan,
        psk: true,
        v6_underlay: true,
        wrong_key: false,
    });
}

#[test]
fn wggo_wireguard_go_initiates_with_psk_over_ipv6() {
    check_traffic_both_ways(Setup {
        initiator: Initiator::WireguardGo,
        psk: true,
        v6_underlay: true,
        wrong_key: false,
    });
}

/// wireguard-go initiates towards a gatewan that does not know its key: every initiation is
/// refused and counted, no session comes up, and gatewan keeps running.
#[test]
fn wggo_unknown_peer_is_rejected_and_counted() {
    let mut run = start(Setup {
        initiator: Initiator::WireguardGo,
        psk: false,
        v6_underlay: false,
        wrong_key: true,
    });
    let out = run
        .peer
        .netns
        .output("ping", ["-c", "2", "-i", "0.2", "-W", "1", "10.77.0.0"])
        .expect("ping");
    assert!(
        !out.status.success(),
        "a ping got through a tunnel with the wrong key"
    );
    let socket = run.socket.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    wait_for(
        &mut run.tb,
        run.gateway,
        || match runtime.block_on(request(&socket, &Request::Status)) {
            Ok(Response::Status { drops, .. }) => {
                drops.get("unknown_peer").copied().unwrap_or(0) > 0
            }
            other => panic!("unexpected answer {other:?}"),
        },
        "the unknown peer's initiations to be counted",
    );
    let tunnel = tunnel_status(&socket);
    assert_ne!(tunnel["state"], "Established", "{tunnel:#}");
    assert_eq!(counter(&tunnel, "handshakes_completed"), 0);
    assert!(run.tb.is_running(run.gateway));
}

/// A UDP relay between gatewan and wireguard-go that can replay the last data message
/// wireguard-go sent: a real captured packet, replayed on the wire.
struct Relay {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    replay: std::sync::Arc<std::sync::atomic::AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Listens for gatewan on `front`, talks to `peer` from `back`, and forwards what comes
    /// back to `gatewan`.
    fn start(
        netns: &gatewan_testbed::Netns,
        front: SocketAddr,
        back: SocketAddr,
        peer: SocketAddr,
        gatewan: SocketAddr,
    ) -> Relay {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let replay = std::sync::Arc::new(AtomicU32::new(0));
        let (stop2, replay2, netns) = (stop.clone(), replay.clone(), netns.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            netns
                .enter_current_thread()
                .expect("enter the relay's namespace");
            let front_sock = std::net::UdpSocket::bind(front).expect("bind front");
            let back_sock = std::net::UdpSocket::bind(back).expect("bind back");
            for s in [&front_sock, &back_sock] {
                s.set_read_timeout(Some(std::time::Duration::from_millis(5)))
                    .expect("timeout");
            }
            ready_tx.send(()).expect("ready");
            let mut buf = [0u8; 2048];
            let mut last_data: Option<Vec<u8>> = None;
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, _)) = front_sock.recv_from(&mut buf) {
                    let _ = back_sock.send_to(&buf[..n], peer);
                }
                if let Ok((n, _)) = back_sock.recv_from(&mut buf) {
                    // Type 4 with a payload: a transport data message carrying a packet.
                    if n > 32 && buf[0] == 4 {
                        last_data = Some(buf[..n].to_vec());
                    }
                    let _ = front_sock.send_to(&buf[..n], gatewan);
                }
                let times = replay2.swap(0, Ordering::Relaxed);
                if let Some(data) = last_data.as_ref().filter(|_| times > 0) {
                    for _ in 0..times {
                        let _ = front_sock.send_to(data, gatewan);
                    }
                }
            }
        });
        ready_rx.recv().expect("relay ready");
        Relay {
            stop,
            replay,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A data message from wireguard-go, captured on the wire and sent again: gatewan refuses it
/// as a replay, counts it, and the tunnel carries on.
#[test]
fn wggo_replayed_data_message_is_rejected_and_counted() {
    require(&[Need::Root, Need::Tool("wireguard-go"), Need::Tool("wg")]);
    let mut tb = Testbed::new().expect("test bed");
    let gw_ns = tb.add_netns("gatewan").expect("netns");
    let peer_ns = tb.add_netns("wggo").expect("netns");
    let (gw_link, peer_link) = tb.add_veth(&gw_ns, &peer_ns, 1).expect("veth");
    gw_link.add_addr("10.99.0.1/30").expect("addr");
    peer_link.add_addr("10.99.0.2/30").expect("addr");
    let at = |ip: &str, port: u16| SocketAddr::new(ip.parse().expect("ip"), port);
    let gw_keys = WgKeys::generate().expect("keys");
    let peer = tb
        .add_wireguard_go(&peer_ns, 51821, &["10.77.0.1/31"])
        .expect("wireguard-go");
    peer.set_peer(&WgPeer {
        public_key: &gw_keys.public,
        allowed_ips: &["10.77.0.0/32"],
        ..Default::default()
    })
    .expect("configure wireguard-go");
    let relay = Relay::start(
        &gw_ns,
        at("10.99.0.1", 60000),
        at("10.99.0.1", 60001),
        at("10.99.0.2", 51821),
        at("10.99.0.1", 51820),
    );
    let (gateway, socket) = start_gateway(
        &mut tb,
        &gw_ns,
        "gw-test",
        &gw_keys.private,
        at("10.99.0.1", 51820),
        "20ms",
        &[TunnelSpec {
            name: "wg0",
            peer_public_key: &peer.keys.public,
            peer_endpoint: Some(at("10.99.0.1", 60000)),
            preshared_key: None,
            v4: ("10.77.0.0/31", "10.77.0.1"),
            v6: ("fd77::/127", "fd77::1"),
            echo_port: 7054,
            peer_echo_port: None,
        }],
    );
    established(&mut tb, gateway, &socket, 20);
    relay.replay.store(5, std::sync::atomic::Ordering::Relaxed);
    let mut last = serde_json::Value::Null;
    wait_for(
        &mut tb,
        gateway,
        || {
            last = tunnel_status(&socket);
            last["counters"]["drops"]["replay"].as_u64().unwrap_or(0) >= 5
        },
        "five replays to be refused",
    );
    assert_eq!(last["state"], "Established", "{last:#}");
    let before = counter(&last, "probes_sent");
    let mut after = serde_json::Value::Null;
    wait_for(
        &mut tb,
        gateway,
        || {
            after = tunnel_status(&socket);
            counter(&after, "probes_sent") >= before + 50
        },
        "50 more probes",
    );
    assert_eq!(after["state"], "Established", "{after:#}");
    assert_eq!(
        counter(&after, "probes_lost"),
        0,
        "the tunnel carried on: {after:#}"
    );
    drop(relay);
}
