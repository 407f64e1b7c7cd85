//! Two gatewan gateways, each probing the other with STAMP through their tunnel, in namespaces
//! from the test bed: both initiate, with and without a pre-shared key, over IPv4 and IPv6
//! underlays; a forced rekey under continuous probing loses nothing.

mod common;

use common::{counter, established, rekey_under_probes, start_gateway, TunnelSpec};
use gatewan_testbed::{require, Need, Testbed, WgKeys};

fn pair(psk: bool, v6_underlay: bool) {
    require(&[Need::Root, Need::Tool("wg")]);
    let mut tb = Testbed::new().expect("test bed");
    let ns_a = tb.add_netns("gw-a").expect("netns");
    let ns_b = tb.add_netns("gw-b").expect("netns");
    let (la, lb) = tb.add_veth(&ns_a, &ns_b, 1).expect("veth");
    let (ip_a, ip_b, plen) = if v6_underlay {
        ("fd98::1", "fd98::2", 64)
    } else {
        ("10.98.0.1", "10.98.0.2", 30)
    };
    la.add_addr(&format!("{ip_a}/{plen}")).expect("addr");
    lb.add_addr(&format!("{ip_b}/{plen}")).expect("addr");
    let at = |ip: &str| std::net::SocketAddr::new(ip.parse().expect("ip"), 51820);
    let (ka, kb) = (
        WgKeys::generate().expect("keys"),
        WgKeys::generate().expect("keys"),
    );
    let psk = psk.then(|| WgKeys::generate().expect("psk").private);

    let (gw_a, sock_a) = start_gateway(
        &mut tb,
        &ns_a,
        "gw-a",
        &ka.private,
        at(ip_a),
        "20ms",
        &[TunnelSpec {
            name: "to-b",
            peer_public_key: &kb.public,
            peer_endpoint: Some(at(ip_b)),
            preshared_key: psk.as_deref(),
            v4: ("10.66.0.0/31", "10.66.0.1"),
            v6: ("fd66::/127", "fd66::1"),
            echo_port: 7054,
            peer_echo_port: Some(7117),
        }],
    );
    let (gw_b, sock_b) = start_gateway(
        &mut tb,
        &ns_b,
        "gw-b",
        &kb.private,
        at(ip_b),
        "20ms",
        &[TunnelSpec {
            name: "to-a",
            peer_public_key: &ka.public,
            peer_endpoint: Some(at(ip_a)),
            preshared_key: psk.as_deref(),
            v4: ("10.66.0.1/31", "10.66.0.0"),
            v6: ("fd66::1/127", "fd66::"),
            echo_port: 7117,
            peer_echo_port: Some(7054),
        }],
    );

    for (gw, sock) in [(gw_a, &sock_a), (gw_b, &sock_b)] {
        let tunnel = established(&mut tb, gw, sock, 20);
        assert_eq!(tunnel["probe"]["method"], "stamp");
        assert_eq!(tunnel["probe"]["loss"], "0.0%", "{tunnel:#}");
        assert_ne!(tunnel["probe"]["latency"], "-");
        assert_eq!(counter(&tunnel, "probes_lost"), 0);
    }

    // A forced rekey from each side in turn, under 50 probes a second both ways: not one lost.
    for (gw, sock, name) in [(gw_a, &sock_a, "to-b"), (gw_b, &sock_b, "to-a")] {
        rekey_under_probes(&mut tb, gw, sock, name, 150);
    }
    for (gw, sock) in [(gw_a, &sock_a), (gw_b, &sock_b)] {
        let tunnel = common::tunnel_status(sock);
        assert!(tb.is_running(gw));
        assert_eq!(tunnel["state"], "Established", "{tunnel:#}");
        assert!(counter(&tunnel, "handshakes_completed") >= 2, "{tunnel:#}");
        assert_eq!(
            counter(&tunnel, "probes_lost"),
            0,
            "probes lost across the rekeys: {tunnel:#}"
        );
    }
}

#[test]
fn netns_gatewan_pair_over_ipv4() {
    pair(false, false);
}

#[test]
fn netns_gatewan_pair_with_psk_over_ipv6() {
    pair(true, true);
}
