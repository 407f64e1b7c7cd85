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
