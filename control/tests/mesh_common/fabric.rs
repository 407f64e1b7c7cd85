//! The datacenter fabric of the mesh test bed with [`super::Options::frr`]: per datacenter an
//! FRR leaf (bgpd + zebra; L3VNI 100 in the default VRF over kernel VXLAN, its bridge the SVI
//! whose MAC is the router MAC) with a host prefix of its own, and one or more bgpctls, each
//! in its own namespace, peering with the leaf over eBGP and on the router's bridge for the
//! mesh.
//!
//! ```text
//!   host 10.d0.0.1 ── leaf d (FRR, VTEP 10.d.0.2) ── gateways' VTEPs 10.d.<id>.1
//!                        ├── 10.d.9.2 ── 10.d.9.1 bgpctl bgp-<dc> 172.16.0.(60+d) ── router
//!                        └── 10.d.8.2 ── 10.d.8.1 bgpctl bgp-<dc>-2 172.16.0.(70+d) ── router
//! ```

use std::path::PathBuf;
use std::time::Duration;

use gatewan_testbed::config::{self, ToYaml as _};
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
    gatewan_testbed::frr::add_l3vni(
        &leaf,
        100,
        &format!("10.{d}.0.2"),
        &format!("02:00:0a:00:{d:02x}:02"),
        &format!("02:00:0a:00:{d:02x}:f2"),
        1420,
        &format!("10.{d}0.0.0/16"),
    )
    .expect("the L3VNI devices");
    leaf.ip(["addr", "add", &format!("10.{d}0.0.1/32"), "dev", "lo"])
        .expect("host");
    leaf
}

/// One bgpctl of a datacenter, in its own namespace.
pub struct Bgpctl {
    pub netns: Netns,
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub process: Option<ProcessId>,
}

/// One datacenter's FRR leaf and its bgpctls.
pub struct Fabric {
    pub dc: &'static str,
    pub d: u8,
    pub frr: Frr,
    pub bgpctls: Vec<Bgpctl>,
}

/// Instance `k` of datacenter `d`'s bgpctls: its leaf link 10.d.(9-k).0/30 (bgpctl .1, the
/// leaf .2) and its mesh address 172.16.0.(60+d+10k).
fn addrs(d: u8, k: u8) -> (String, String, u8) {
    let net = 9 - k;
    (
        format!("10.{d}.{net}.1"),
        format!("10.{d}.{net}.2"),
        60 + d + 10 * k,
    )
}

impl Fabric {
    /// Starts the leaf's FRR, peering with `count` bgpctls, and writes their configurations
    /// (started by [`Mesh::start_bgpctl`]).
    pub fn start(mesh: &mut Mesh, dc: &'static str, d: u8, count: u8) -> Fabric {
        let leaf = mesh.leaves[usize::from(d - 1)].clone();
        let mut neighbors = Vec::new();
        let mut bgpctls = Vec::new();
        for k in 0..count {
            let (own, leaf_side, mesh_addr) = addrs(d, k);
            let netns = mesh
                .tb
                .add_netns(&format!("bgp{d}{k}"))
                .expect("bgpctl namespace");
            let (l, b) = mesh.tb.add_veth(&leaf, &netns, 1).expect("leaf to bgpctl");
            l.add_addr(&format!("{leaf_side}/30")).expect("leaf side");
            b.add_addr(&format!("{own}/30")).expect("bgpctl side");
            let (up, router_side) = mesh
                .tb
                .add_veth(&netns, &mesh.router, 1)
                .expect("bgpctl uplink");
            up.add_addr(&format!("172.16.0.{mesh_addr}/24"))
                .expect("uplink address");
            mesh.router
                .ip(["link", "set", &router_side.name, "master", "br0"])
                .expect("into the bridge");
            neighbors.push((own.clone(), 65100));
            let name = if k == 0 {
                format!("bgp-{dc}")
            } else {
                format!("bgp-{dc}-{}", k + 1)
            };
            bgpctls.push(Self::configure(
                mesh, dc, d, netns, name, &own, &leaf_side, mesh_addr,
            ));
        }
        let leaf_conf = config::FrrLeaf {
            hostname: format!("leaf{d}"),
            asn: 65000 + u32::from(d),
            router_id: format!("10.{d}.0.2"),
            vni: 100,
            neighbors,
            networks: vec![format!("10.{d}0.0.0/16")],
        };
        let frr = Frr::start(
            &mut mesh.tb,
            &leaf,
            &leaf_conf.zebra_conf(),
            &leaf_conf.bgpd_conf(),
        )
        .expect("FRR on the leaf");
        frr.wait_vtysh("show evpn vni 100", "Type: L3", Duration::from_secs(60))
            .expect("the L3VNI");
        Fabric {
            dc,
            d,
            frr,
            bgpctls,
        }
    }

    /// Writes one bgpctl's configuration.
    #[allow(clippy::too_many_arguments)]
    fn configure(
        mesh: &Mesh,
        dc: &str,
        d: u8,
        netns: Netns,
        name: String,
        own: &str,
        leaf_side: &str,
        mesh_addr: u8,
    ) -> Bgpctl {
        let (cert, key) = mesh.issue("bgpctl", &name);
        let dir = mesh.tb.dir().to_path_buf();
        let (config, socket) = (
            dir.join(format!("{name}.yaml")),
            dir.join(format!("{name}.sock")),
        );
        let y = config::Bgpctl {
            local_as: 65100,
            router_id: own.into(),
            listen: None,
            control_socket: socket.clone(),
            hold_time: Some(9),
            connect_retry: Some(0.5),
            connect_retry_max: Some(2.0),
            peers: vec![config::Peer {
                address: leaf_side.into(),
                remote_as: 65000 + u32::from(d),
                passive: false,
            }],
            import: Some(config::Import {
                route_targets: vec!["*:100".into()],
            }),
            export: Some(config::Export {
                vni: 100,
                route_targets: vec![format!("6500{d}:100")],
                ..Default::default()
            }),
            sdwan: Some(config::Sdwan {
                name: name.clone(),
                datacenter: dc.into(),
                refresh: Some("2s".into()),
                mesh: mesh.member(&name, &format!("172.16.0.{mesh_addr}")),
                api: config::Api {
                    listen: format!("172.16.0.{mesh_addr}:7443"),
                    tls: config::Tls {
                        ca: mesh.pki.join("ca.pem"),
                        cert,
                        key,
                    },
                    repair_hold: None,
                },
            }),
        };
        y.write(&config, "the mesh tests")
            .expect("bgpctl configuration");
        Bgpctl {
            netns,
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

    /// Starts bgpctl `k` of `dc`.
    pub fn start_bgpctl(&mut self, dc: &str, k: usize) {
        let pos = self.fabric_pos(dc);
        let b = &self.fabrics[pos].bgpctls[k];
        let (netns, config, socket, name) = (
            b.netns.clone(),
            b.config.clone(),
            b.socket.clone(),
            b.name.clone(),
        );
        let p = self.spawn_until_socket(&netns, "bgpctl", &config, &socket, &name);
        self.fabrics[pos].bgpctls[k].process = Some(p);
    }

    /// Starts every bgpctl of `dc`.
    pub fn start_bgpctls(&mut self, dc: &str) {
        for k in 0..self.fabric(dc).bgpctls.len() {
            self.start_bgpctl(dc, k);
        }
    }

    pub fn stop_bgpctl(&mut self, dc: &str, k: usize, crash: bool) {
        let pos = self.fabric_pos(dc);
        let p = self.fabrics[pos].bgpctls[k].process.take();
        self.end(p, crash);
    }

    /// bgpctl `k` of `dc`: its process, when running.
    pub fn bgpctl_process(&self, dc: &str, k: usize) -> Option<ProcessId> {
        self.fabric(dc).bgpctls[k].process
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
