//! gatewan's gateway against Debian wireguard-go, in namespaces from the test bed: handshakes
//! from either side, traffic both ways (pings from the wireguard-go side to gatewan's inner
//! addresses, gatewan's ICMP probes to wireguard-go's), with and without a pre-shared key,
//! over IPv4 and IPv6 underlays, and a peer with the wrong key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gatewan_testbed::{require, Need, Testbed, WgKeys, WgPeer, WireguardGo};

const GATEWAN: &str = env!("CARGO_BIN_EXE_gatewan");

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
    gateway: gatewan_testbed::ProcessId,
    socket: PathBuf,
}

fn start(setup: Setup) -> Running {
    require(&[Need::Root, Need::Tool("wireguard-go"), Need::Tool("wg")]);
    let mut tb = Testbed::new().expect("test bed");
    let gw_ns = tb.add_netns("gatewan").expect("netns");
    let peer_ns = tb.add_netns("wggo").expect("netns");
    let (gw_link, peer_link) = tb.add_veth(&gw_ns, &peer_ns, 1).expect("veth");
    let (gw_ip, peer_ip) = if setup.v6_underlay {
        ("fd99::1", "fd99::2")
    } else {
        ("10.99.0.1", "10.99.0.2")
    };
    let plen = if setup.v6_underlay { 64 } else { 30 };
    gw_link.add_addr(&format!("{gw_ip}/{plen}")).expect("addr");
    peer_link
        .add_addr(&format!("{peer_ip}/{plen}"))
        .expect("addr");
    let sock = |ip: &str, port: u16| -> std::net::SocketAddr {
        let ip: std::net::IpAddr = ip.parse().expect("ip");
        std::net::SocketAddr::new(ip, port)
    };

    let gw_keys = WgKeys::generate().expect("keys");
    let psk = setup.psk.then(|| WgKeys::generate().expect("psk").private);
    let peer = tb
        .add_wireguard_go(&peer_ns, 51821, &["10.77.0.1/31", "fd77::1/127"])
        .expect("wireguard-go");
    peer.set_peer(&WgPeer {
        public_key: &gw_keys.public,
        preshared_key: psk.as_deref(),
        endpoint: (setup.initiator == Initiator::WireguardGo).then(|| sock(gw_ip, 51820)),
        allowed_ips: &["10.77.0.0/32", "fd77::/128"],
        persistent_keepalive: None,
    })
    .expect("configure wireguard-go");

    let peer_key = if setup.wrong_key {
        WgKeys::generate().expect("keys").public
    } else {
        peer.keys.public.clone()
    };
    let socket = tb.dir().join("gateway.sock");
    let mut config = format!(
        "name: gw-test\ndatacenter: lab\nprivate_key: {}\ncontrol_socket: {}\n\
         transits:\n  - name: transit-a\n    listen: \"{}\"\nprobe:\n  interval: 100ms\n  window: 20\n\
         tunnels:\n  - name: wg0\n    transit: transit-a\n    peer: wireguard-go\n    peer_datacenter: lab\n\
         \x20   peer_public_key: {}\n    address_v4: 10.77.0.0/31\n    peer_address_v4: 10.77.0.1\n\
         \x20   address_v6: fd77::/127\n    peer_address_v6: fd77::1\n",
        gw_keys.private,
        socket.display(),
        sock(gw_ip, 51820),
        peer_key,
    );
    if setup.initiator == Initiator::Gatewan {
        config.push_str(&format!(
            "    peer_endpoint: \"{}\"\n",
            sock(peer_ip, 51821)
        ));
    }
    if let Some(psk) = &psk {
        config.push_str(&format!("    preshared_key: {psk}\n"));
    }
    let config_path = tb.dir().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let gateway = tb
        .spawn(
            &gw_ns,
            GATEWAN,
            ["gateway", "--config", config_path.to_str().expect("utf-8")],
        )
        .expect("gatewan");
    wait_for(&mut tb, gateway, || socket.exists(), "the control socket");
    Running {
        tb,
        peer,
        gateway,
        socket,
    }
}

/// Polls `ok` until it holds; a deadline only guards against hanging forever.
fn wait_for(
    tb: &mut Testbed,
    gateway: gatewan_testbed::ProcessId,
    mut ok: impl FnMut() -> bool,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(
            tb.is_running(gateway),
            "gatewan exited while waiting for {what}:\n{}",
            tb.log(gateway)
        );
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}:\n{}",
            tb.log(gateway)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(socket: &Path) -> serde_json::Value {
    let out = Command::new(GATEWAN)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .expect("gatewan status");
    assert!(
        out.status.success(),
        "gatewan status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tunnels: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    tunnels[0].clone()
}

fn established_with_probes(run: &mut Running) -> serde_json::Value {
    let socket = run.socket.clone();
    let mut last = serde_json::Value::Null;
    wait_for(
        &mut run.tb,
        run.gateway,
        || {
            last = status(&socket);
            last["state"] == "Established"
                && last["probe"]["measurements"].as_u64().unwrap_or(0) >= 10
        },
        "an established tunnel with 10 probe measurements",
    );
    last
}

fn ping_gatewan_from_wireguard_go(run: &Running) {
    for target in ["10.77.0.0", "fd77::"] {
        run.peer
            .netns
            .exec("ping", ["-c", "3", "-i", "0.1", "-W", "5", target])
            .unwrap_or_else(|e| panic!("ping {target}: {e}"));
    }
}

fn check_traffic_both_ways(setup: Setup) {
    let mut run = start(setup);
    // From the wireguard-go side into gatewan (gatewan answers ICMP and ICMPv6 echo) ...
    ping_gatewan_from_wireguard_go(&run);
    // ... and gatewan's probes (ICMP echo, wireguard-go has no STAMP reflector) back.
    let tunnel = established_with_probes(&mut run);
    assert_eq!(tunnel["probe"]["method"], "icmp");
    assert_eq!(tunnel["probe"]["loss"], "0.0%", "{tunnel:#}");
    assert_ne!(tunnel["probe"]["latency"], "-");
    assert!(
        tunnel["counters"]["rx_packets"].as_u64().unwrap_or(0) >= 6,
        "{tunnel:#}"
    );
    assert!(run.peer.latest_handshake(&run.peer.keys.public).is_ok());
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
    let mut drops = Default::default();
    wait_for(
        &mut run.tb,
        run.gateway,
        || {
            let response = runtime
                .block_on(gatewan_control::gateway::control::request(
                    &socket,
                    &gatewan_control::gateway::control::Request::Status,
                ))
                .expect("status");
            if let gatewan_control::gateway::control::Response::Status { drops: d, .. } = response {
                drops = d;
            }
            drops.get("UnknownPeer").copied().unwrap_or(0) > 0
        },
        "the unknown peer's initiations to be counted",
    );
    let tunnel = status(&socket);
    assert_ne!(tunnel["state"], "Established", "{tunnel:#}");
    assert_eq!(tunnel["counters"]["handshakes_completed"], 0);
    assert!(run.tb.is_running(run.gateway));
}
