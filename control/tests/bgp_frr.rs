//! bgpctl against an FRR 8.4 leaf (Debian `frr`): L3VNI 100 in the default VRF over a kernel
//! VXLAN device, eBGP. Test names carry `frr_`: they need root and FRR (vtysh, zebra, bgpd).
//!
//! Namespace `leaf` runs zebra and bgpd (10.99.0.1/30, VTEP 10.99.7.3, bridge br100 with
//! router MAC 02:00:00:00:00:03, vxlan100), namespace `gw` runs bgpctl (10.99.0.2/30).

mod bgp_common;

use std::time::{Duration, Instant};

use gatewan_control::bgp::config::{
    Config, ExportConfig, GatewayConfig, ImportConfig, PeerConfig, PrefixConfig,
};
use gatewan_control::bgp::rib::ImportedRoute;
use gatewan_control::bgp::speaker::{self, BgpHandle};
use gatewan_testbed::frr::Frr;
use gatewan_testbed::{require, Need, Netns, Testbed};

const WAIT: Duration = Duration::from_secs(60);
struct Leaf {
    tb: Testbed,
    leaf: Netns,
    gw: Netns,
    frr: Frr,
}

impl Leaf {
    fn new() -> Leaf {
        require(&[Need::Root, Need::Tool("vtysh"), Need::Tool("bridge")]);
        let mut tb = Testbed::new().expect("test bed");
        let leaf = tb.add_netns("leaf").expect("netns leaf");
        let gw = tb.add_netns("gw").expect("netns gw");
        let (l_leaf, l_gw) = tb.add_veth(&leaf, &gw, 1).expect("veth");
        l_leaf.add_addr("10.99.0.1/30").expect("addr leaf");
        l_gw.add_addr("10.99.0.2/30").expect("addr gw");
        // The leaf's VTEP, its L3VNI (bridge = SVI, whose MAC is the router MAC) and a
        // prefix of its own to advertise.
        let ip = |args: &[&str]| leaf.ip(args).expect("ip");
        ip(&["addr", "add", "10.99.7.3/32", "dev", "lo"]);
        ip(&["link", "add", "br100", "type", "bridge"]);
        ip(&["link", "set", "br100", "address", "02:00:00:00:00:03"]);
        ip(&[
            "link",
            "add",
            "vxlan100",
            "type",
            "vxlan",
            "id",
            "100",
            "local",
            "10.99.7.3",
            "dstport",
            "4789",
            "nolearning",
        ]);
        ip(&["link", "set", "vxlan100", "master", "br100"]);
        ip(&["link", "set", "vxlan100", "up"]);
        ip(&["link", "set", "br100", "up"]);
        ip(&["route", "add", "blackhole", "10.50.0.0/16"]);
        // The gateways' VTEPs are reached through the gateway namespace.
        ip(&["route", "add", "10.184.84.0/24", "via", "10.99.0.2"]);

        let conf = gatewan_testbed::config::FrrLeaf {
            hostname: "leaf".into(),
            asn: 65003,
            router_id: "10.99.8.3".into(),
            vni: 100,
            neighbors: vec![("10.99.0.2".into(), 65010)],
            networks: vec!["10.50.0.0/16".into()],
        };
        // zebra handles VNIs once bgpd asks for them (advertise-all-vni).
        let frr = Frr::start(&mut tb, &leaf, &conf.zebra_conf(), &conf.bgpd_conf())
            .expect("FRR on the leaf");
        let l = Leaf { tb, leaf, gw, frr };
        l.wait_vtysh("show interface vxlan100", "vxlan100");
        l.wait_vtysh("show evpn vni 100", "Type: L3");
        l.wait_vtysh("show bgp l2vpn evpn route type prefix", "10.50.0.0");
        l
    }

    fn vtysh(&self, cmd: &str) -> String {
        self.frr.vtysh(cmd)
    }

    fn wait_vtysh(&self, cmd: &str, want: &str) {
        self.frr.wait_vtysh(cmd, want, WAIT).expect("vtysh");
    }

    fn config(&self) -> Config {
        let gw = |vtep: &str, mac: &str| GatewayConfig {
            vtep: vtep.parse().expect("vtep"),
            router_mac: mac.parse().expect("mac"),
            rd: None,
        };
        Config {
            local_as: 65010,
            router_id: "10.99.0.2".parse().expect("id"),
            listen: None,
            control_socket: self.tb.dir().join("bgpctl.sock"),
            hold_time: 9,
            connect_retry: 0.5,
            connect_retry_max: 2.0,
            graceful_restart: Default::default(),
            peers: vec![PeerConfig {
                address: "10.99.0.1".parse().expect("leaf"),
                port: 179,
                remote_as: 65003,
                passive: false,
                local_address: None,
                hold_time: None,
                md5_password: None,
            }],
            // FRR derives its L3VNI route targets as AS:VNI.
            import: ImportConfig {
                route_targets: vec!["*:100".parse().expect("rt")],
            },
            export: Some(ExportConfig {
                vni: 100,
                route_targets: vec!["65003:100".parse().expect("rt")],
                gateways: [
                    ("gw1".to_owned(), gw("10.184.84.44", "70:5b:83:6b:72:a9")),
                    ("gw2".to_owned(), gw("10.184.84.45", "70:5b:83:6b:72:aa")),
                ]
                .into(),
                prefixes: vec![PrefixConfig {
                    prefix: "10.188.0.0/14".parse().expect("prefix"),
                    gateways: vec!["gw1".into(), "gw2".into()],
                }],
            }),
            sdwan: None,
        }
    }

    fn with_speaker<F>(&self, body: F)
    where
        F: AsyncFnOnce(BgpHandle) + Send,
    {
        let config = self.config();
        self.gw
            .run(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let (h, task) = speaker::spawn(config).await.expect("speaker");
                    body(h.clone()).await;
                    h.shutdown(None).await;
                    let _ = task.await;
                });
            })
            .expect("run in gw namespace");
    }

    fn kernel(&self, args: &[&str]) -> String {
        self.leaf.ip(args).unwrap_or_default()
    }

    /// The next hop of FRR's best path for `prefix`.
    fn best_next_hop(&self, prefix: &str) -> String {
        let out = self.vtysh(&format!("show bgp ipv4 unicast {prefix} json"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("vtysh json");
        v["paths"]
            .as_array()
            .and_then(|paths| {
                paths
                    .iter()
                    .find(|p| p["bestpath"]["overall"] == true)
                    .and_then(|p| p["nexthops"][0]["ip"].as_str())
            })
            .unwrap_or_else(|| panic!("no best path for {prefix}: {out}"))
            .to_owned()
    }
}

async fn local_prefixes(h: &BgpHandle, n: usize) -> Vec<ImportedRoute> {
    let mut rx = h.local_prefixes();
    let t = match tokio::time::timeout(WAIT, rx.wait_for(|t| t.len() == n)).await {
        Ok(t) => t.expect("speaker running").as_ref().clone(),
        Err(_) => panic!(
            "never {n} local prefixes: {:?}",
            h.local_prefixes().borrow()
        ),
    };
    t
}

async fn wait_async(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn frr_leaf_installs_bgpctl_routes_in_the_kernel_and_its_own_rt5_is_imported() {
    let leaf = Leaf::new();
    leaf.with_speaker(async |h| {
        // FRR's own RT-5 (vector 4 of the captures): its VTEP, SVI MAC and L3VNI.
        let routes = local_prefixes(&h, 1).await;
        let r = &routes[0];
        assert_eq!(r.prefix.to_string(), "10.50.0.0/16");
        assert_eq!(r.vtep.to_string(), "10.99.7.3");
        assert_eq!(r.router_mac.to_string(), "02:00:00:00:00:03");
        assert_eq!(r.vni, 100);
        assert_eq!(r.rd.to_string(), "10.99.8.3:1");

        // Ours, as FRR installs them: an ECMP route over both gateways' VTEPs through the
        // L3VNI's SVI, a neighbour entry for each router MAC, and VXLAN fdb entries.
        wait_async("the kernel route over both gateways", || {
            let r = leaf.kernel(&["route", "show", "10.188.0.0/14"]);
            r.contains("via 10.184.84.44 dev br100") && r.contains("via 10.184.84.45 dev br100")
        })
        .await;
        let neigh = leaf.kernel(&["neigh", "show", "dev", "br100"]);
        assert!(
            neigh.contains("10.184.84.44 lladdr 70:5b:83:6b:72:a9"),
            "{neigh}"
        );
        assert!(
            neigh.contains("10.184.84.45 lladdr 70:5b:83:6b:72:aa"),
            "{neigh}"
        );
        let fdb = leaf
            .leaf
            .exec("bridge", ["fdb", "show", "dev", "vxlan100"])
            .expect("bridge fdb");
        assert!(fdb.contains("70:5b:83:6b:72:a9 dst 10.184.84.44"), "{fdb}");
        assert!(fdb.contains("70:5b:83:6b:72:aa dst 10.184.84.45"), "{fdb}");
        let evpn = leaf.vtysh("show bgp l2vpn evpn route type prefix");
        assert!(evpn.contains("Rmac:70:5b:83:6b:72:a9"), "{evpn}");

        // Unequal shares (3:1) as Link Bandwidth communities.
        let mut c = leaf.config();
        let mut set = c.export_set();
        set.prefixes[0].gateways[0].weight = Some(3);
        set.prefixes[0].gateways[1].weight = Some(1);
        h.set_exports(set).await.expect("exports");
        // FRR 8.4 reads them on the EVPN routes it imports (the VRF route copies the
        // parent's attributes) and installs weighted next hops, bandwidth x 100 / total.
        wait_async("weighted next hops 75/25", || {
            let r = leaf.kernel(&["route", "show", "10.188.0.0/14"]);
            r.contains("via 10.184.84.44 dev br100 weight 75")
                && r.contains("via 10.184.84.45 dev br100 weight 25")
        })
        .await;
        let bgp = leaf.vtysh("show bgp ipv4 unicast 10.188.0.0/14");
        assert!(bgp.contains("LB:65010:375000 (3.000 Mbps)"), "{bgp}");

        // Each gateway's anchor host route is installed like the others.
        wait_async("both anchors in the kernel", || {
            leaf.kernel(&["route", "show", "root", "240.0.0.0/4"])
                .lines()
                .count()
                == 2
        })
        .await;

        // The gateway of FRR's best path stops serving the prefix. FRR deletes and adds the
        // route again, and its zebra would drop the remaining gateway's neighbour and fdb
        // entries (docs/bgp.md) but for that gateway's anchor.
        let best = leaf.best_next_hop("10.188.0.0/14");
        let gws = [
            ("gw1", "10.184.84.44", "70:5b:83:6b:72:a9"),
            ("gw2", "10.184.84.45", "70:5b:83:6b:72:aa"),
        ];
        let (gone, stay) = if best == gws[0].1 {
            (gws[0], gws[1])
        } else {
            (gws[1], gws[0])
        };
        if let Some(e) = c.export.as_mut() {
            e.prefixes[0].gateways = vec![stay.0.into()];
        }
        let t = Instant::now();
        h.set_exports(c.export_set()).await.expect("exports");
        wait_async("the route via the withdrawn gateway removed", || {
            let r = leaf.kernel(&["route", "show", "10.188.0.0/14"]);
            r.contains(stay.1) && !r.contains(gone.1)
        })
        .await;
        let reachable = || {
            let neigh = leaf.kernel(&["neigh", "show", "dev", "br100"]);
            let fdb = leaf
                .leaf
                .exec("bridge", ["fdb", "show", "dev", "vxlan100"])
                .unwrap_or_default();
            neigh.contains(&format!("{} lladdr {}", stay.1, stay.2))
                && fdb.contains(&format!("{} dst {}", stay.2, stay.1))
        };
        let mut missing = 0;
        while t.elapsed() < Duration::from_secs(2) {
            missing += usize::from(!reachable());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "best path ({}) withdrawn: {}'s neighbour and fdb entries missing in {missing} \
             of the samples taken every 20 ms for 2 s",
            gone.0, stay.0,
        );
        assert_eq!(
            missing,
            0,
            "{} unreachable at the leaf: {} / {}",
            stay.0,
            leaf.kernel(&["neigh", "show", "dev", "br100"]),
            leaf.leaf
                .exec("bridge", ["fdb", "show", "dev", "vxlan100"])
                .unwrap_or_default()
        );
        // The gone gateway's anchor went with its last route.
        wait_async("the gone gateway's anchor withdrawn", || {
            leaf.kernel(&["route", "show", "root", "240.0.0.0/4"])
                .lines()
                .count()
                == 1
        })
        .await;
        let st = h.status().await.expect("status");
        // FRR sends our routes back over eBGP; they are recognised as ours and not imported.
        assert_eq!(st.imported.len(), 1);
    });
}
