//! Next hops from the kernel in a namespace of our own: a host with two uplinks, each to its
//! own router port, the second chosen by source address (a rule and a table of its own, as a
//! multihomed gateway has), asked over rtnetlink for IPv4 and IPv6.

use std::net::IpAddr;

use gatewan_dataplane::neigh::{self, Question};
use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_testbed::{require, Need, Testbed};

#[test]
fn netns_next_hops_follow_source_routing_per_uplink_for_both_families() {
    require(&[Need::Root, Need::Tool("ip")]);
    let mut tb = Testbed::new().expect("test bed");
    let host = tb.add_netns("host").expect("netns");
    let router = tb.add_netns("router").expect("netns");
    let (up0, r0) = tb.add_veth(&host, &router, 1).expect("veth");
    let (up1, r1) = tb.add_veth(&host, &router, 1).expect("veth");
    for (link, addr) in [
        (&up0, "172.31.0.1/24"),
        (&r0, "172.31.0.2/24"),
        (&up1, "172.31.1.1/24"),
        (&r1, "172.31.1.2/24"),
        (&up0, "fd31::1/64"),
        (&r0, "fd31::2/64"),
    ] {
        link.add_addr(addr).expect("addr");
    }
    let (mac0, mac1) = (r0.mac().expect("mac"), r1.mac().expect("mac"));
    up0.add_neighbor("172.31.0.2", &mac0).expect("neigh");
    up1.add_neighbor("172.31.1.2", &mac1).expect("neigh");
    up0.add_neighbor("fd31::2", &mac0).expect("neigh");
    // The far network: through router port 0 by default, through port 1 from uplink 1.
    host.route("10.200.0.0/16", "via 172.31.0.2")
        .expect("route");
    host.ip(["rule", "add", "from", "172.31.1.1", "table", "101"])
        .expect("rule");
    host.route("10.200.0.0/16", "via 172.31.1.2 table 101")
        .expect("route");
    host.route("fd99::/64", "via fd31::2").expect("route");

    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let (n0, n1) = (up0.name.clone(), up1.name.clone());
    let found = host
        .run(move || {
            neigh::resolve(&[
                Question {
                    interface: &n0,
                    src: Some(ip("172.31.0.1")),
                    dst: ip("10.200.1.1"),
                },
                Question {
                    interface: &n1,
                    src: Some(ip("172.31.1.1")),
                    dst: ip("10.200.1.1"),
                },
                // Only the rule's table leads out of uplink 1; without its source, no
                // answer (the caller then sends through the kernel).
                Question {
                    interface: &n1,
                    src: None,
                    dst: ip("10.200.1.1"),
                },
                Question {
                    interface: &n0,
                    src: Some(ip("fd31::1")),
                    dst: ip("fd99::7"),
                },
                // A directly connected neighbour.
                Question {
                    interface: &n0,
                    src: None,
                    dst: ip("fd31::2"),
                },
            ])
        })
        .expect("enter");
    let mac = |s: &str| s.parse::<MacAddr>().expect("mac");
    assert_eq!(
        found,
        vec![
            (0, mac(&mac0)),
            (1, mac(&mac1)),
            (3, mac(&mac0)),
            (4, mac(&mac0)),
        ]
    );
}
