//! The datacenter fabric of the mesh test bed with [`super::Options::frr`]: per datacenter an
//! FRR leaf (bgpd + zebra; L3VNI 100 in the default VRF over kernel VXLAN, its bridge the SVI
//! whose MAC is the router MAC) with a host prefix of its own, and a bgpctl in its own
//! namespace, peering with the leaf over eBGP and on the router's bridge for the mesh.
//!
//! ```text
//!   host 10.d0.0.1 ── leaf d (FRR, VTEP 10.d.0.2) ── gateways' VTEPs 10.d.<id>.1
//!                        └── 10.d.9.2 ── 10.d.9.1 bgpctl bgp-<dc> 172.16.0.(60+d) ── router
//! ```

use std::path::PathBuf;
use std::time::Duration;

use gatewan_testbed::frr::Frr;
use gatewan_testbed::{Netns, ProcessId, Testbed};

use super::{Gw, Mesh};

/// A leaf's namespace with its VTEP (10.d.0.2) and a link to each gateway of `dc` (leaf
/// 10.d.<id>.2, the gateway's VTEP 10.d.<id>.1, which routes the leaf's VTEP over it).
pub fn leaf_links(tb: &mut Testbed, gws: &[Gw], dc: &str, d: u8) -> Netns {
    let leaf = tb.add_netns(&format!("leaf{d}")).expect("leaf namespace");
    for key in ["all", "default"] {
        leaf.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")
            .expect("rp_filter");
    }
    leaf.ip(["addr", "add", &format!("10.{d}.0.2/32"), "dev", "lo"])
        .expect("leaf vtep");
    for g in gws.iter().filter(|g| g.dc == dc) {
        let (leaf_side, gw_side) = tb.add_veth(&leaf, &g.netns, 1).expect("fabric link");
        leaf_side
            .add_addr(&format!("10.{d}.{}.2/24", g.id))
            .expect("leaf address");
        gw_side
            .add_addr(&format!("10.{d}.{}.1/24", g.id))
            .expect("gateway vtep");
        g.netns
            .route(&format!("10.{d}.0.2/32"), &format!("via 10.{d}.{}.2", g.id))
            .expect("route to the leaf vtep");
    }
    leaf
}

/// The FRR leaf's namespace: [`leaf_links`], the SVI and VXLAN device, and the host; no
/// route to anywhere else (BGP brings them).
pub fn leaf(tb: &mut Testbed, gws: &[Gw], dc: &str, d: u8) -> Netns {
    let leaf = leaf_links(tb, gws, dc, d);
    let ip = |args: &[&str]| leaf.ip(args).expect("ip");
    ip(&["link", "add", "br100", "type", "bridge"]);
    ip(&[
        "link",
        "set",
        "br100",
        "address",
        &format!("02:00:0a:00:{d:02x}:02"),
    ]);
    leaf.add_vxlan(
        "vxlan100",
        100,
        &format!("10.{d}.0.2"),
        &format!("02:00:0a:00:{d:02x}:f2"),
        Some(1420),
    )
    .expect("vxlan");
    ip(&["link", "set", "vxlan100", "master", "br100"]);
    ip(&["link", "set", "br100", "mtu", "1420", "up"]);
    // Checksums in software: the gateways forward these frames from userspace.
    for dev in ["vxlan100", "br100"] {
        leaf.exec("ethtool", ["-K", dev, "tx", "off"])
            .expect("ethtool");
    }
    ip(&["addr", "add", &format!("10.{d}0.0.1/32"), "dev", "lo"]);
    ip(&["route", "add", "blackhole", &format!("10.{d}0.0.0/16")]);
    leaf
}

/// One datacenter's FRR leaf and bgpctl.
pub struct Fabric {
    pub dc: &'static str,
    pub d: u8,
    pub frr: Frr,
    pub bgp_netns: Netns,
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub process: Option<ProcessId>,
}

impl Fabric {
    /// Starts the leaf's FRR and writes bgpctl's configuration (started by
    /// [`Mesh::start_bgpctl`]).
    pub fn start(mesh: &mut Mesh, dc: &'static str, d: u8) -> Fabric {
        let leaf = mesh.leaves[usize::from(d - 1)].clone();
        let bgp_netns = mesh
            .tb
            .add_netns(&format!("bgp{d}"))
            .expect("bgpctl namespace");
        let (l, b) = mesh
            .tb
            .add_veth(&leaf, &bgp_netns, 1)
            .expect("leaf to bgpctl");
        l.add_addr(&format!("10.{d}.9.2/30")).expect("leaf side");
        b.add_addr(&format!("10.{d}.9.1/30")).expect("bgpctl side");
        let (up, router_side) = mesh
            .tb
            .add_veth(&bgp_netns, &mesh.router, 1)
            .expect("bgpctl uplink");
        up.add_addr(&format!("172.16.0.{}/24", 60 + d))
            .expect("uplink address");
        mesh.router
            .ip(["link", "set", &router_side.name, "master", "br0"])
            .expect("into the bridge");
        let zebra = "hostname leaf\nvrf default\n vni 100\nexit-vrf\n";
        let bgpd = format!(
            "hostname leaf{d}
router bgp 6500{d}
 bgp router-id 10.{d}.0.2
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 10.{d}.9.1 remote-as 65100
 neighbor 10.{d}.9.1 timers 3 9
 address-family ipv4 unicast
  network 10.{d}0.0.0/16
 exit-address-family
 address-family l2vpn evpn
  neighbor 10.{d}.9.1 activate
  advertise-all-vni
  advertise ipv4 unicast
 exit-address-family
"
        );
        let frr = Frr::start(&mut mesh.tb, &leaf, zebra, &bgpd).expect("FRR on the leaf");
        frr.wait_vtysh("show evpn vni 100", "Type: L3", Duration::from_secs(60))
            .expect("the L3VNI");
        let name = format!("bgp-{dc}");
        let (cert, key) = mesh.issue("bgpctl", &name);
        let dir = mesh.tb.dir().to_path_buf();
        let (config, socket) = (
            dir.join(format!("{name}.yaml")),
            dir.join(format!("{name}.sock")),
        );
        let y = format!(
            "local_as: 65100\nrouter_id: 10.{d}.9.1\ncontrol_socket: {sock}\nhold_time: 9\n\
             connect_retry: 0.5\nconnect_retry_max: 2\n\
             peers: [{{address: 10.{d}.9.2, remote_as: 6500{d}}}]\n\
             import: {{route_targets: [\"*:100\"]}}\n\
             export: {{vni: 100, route_targets: [\"6500{d}:100\"]}}\n\
             sdwan:\n  name: {name}\n  datacenter: {dc}\n  refresh: 2s\n\
             \x20 mesh:\n    bind: \"172.16.0.{addr}:7946\"\n    seeds: [\"{seed}\"]\n    keys: [\"{serf}\"]\n\
             \x20   rpc_auth: test-rpc-secret\n    state_dir: {state}\n    profile: local\n\
             \x20 api:\n    listen: \"172.16.0.{addr}:7443\"\n    ca: {ca}\n    cert: {cert}\n    key: {key}\n",
            sock = socket.display(),
            addr = 60 + d,
            seed = mesh.seed,
            serf = mesh.serf_key,
            state = dir.join(format!("{name}-state")).display(),
            ca = mesh.pki.join("ca.pem").display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(&config, y).expect("bgpctl configuration");
        Fabric {
            dc,
            d,
            frr,
            bgp_netns,
            name,
            config,
            socket,
            process: None,
        }
    }
}

impl Mesh {
    pub fn fabric(&self, dc: &str) -> &Fabric {
        self.fabrics
            .iter()
            .find(|f| f.dc == dc)
            .expect("a fabric of the test")
    }

    fn fabric_pos(&self, dc: &str) -> usize {
        self.fabrics
            .iter()
            .position(|f| f.dc == dc)
            .expect("a fabric of the test")
    }

    pub fn start_bgpctl(&mut self, dc: &str) {
        let pos = self.fabric_pos(dc);
        let f = &self.fabrics[pos];
        let (netns, config, socket, name) = (
            f.bgp_netns.clone(),
            f.config.clone(),
            f.socket.clone(),
            f.name.clone(),
        );
        let p = self.spawn_until_socket(&netns, "bgpctl", &config, &socket, &name);
        self.fabrics[pos].process = Some(p);
    }

    pub fn stop_bgpctl(&mut self, dc: &str, crash: bool) {
        let pos = self.fabric_pos(dc);
        let p = self.fabrics[pos].process.take();
        self.end(p, crash);
    }

    pub fn bgpctl_log(&self, dc: &str) -> String {
        self.fabric(dc)
            .process
            .map(|p| self.tb.log(p))
            .unwrap_or_default()
    }

    /// `ip route show PREFIX` at the leaf of `dc`.
    pub fn leaf_route(&self, dc: &str, prefix: &str) -> String {
        let f = self.fabric(dc);
        f.frr
            .netns()
            .ip(["route", "show", prefix])
            .unwrap_or_default()
    }
}
