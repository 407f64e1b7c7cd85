//! How [`Lab::start`] builds one datacenter (its namespaces, links, leaf, FRR and the
//! daemons' configurations) and a controller's configuration, from the typed configurations
//! in [`crate::config`].

use std::time::Duration;

use super::{
    config, controller_name, gateway_mac, leaf_mac, other, Daemon, Gateway, Lab, Site, Transit,
    TransitPath, BGPCTL_AS, DCS, LAB_POLICY, LEAF_MTU, RPC_AUTH, VNI,
};
use crate::config::ToYaml as _;
use crate::frr::Frr;
use crate::impair::{EndpointImpairment, ImpairedLink};
use crate::{Netns, Result, WgKeys};

/// What wrote the configurations (their first line).
const BY: &str = "gatewan's lab";

impl Lab {
    /// Everyone's seed: a1's agent on its first transit.
    fn seeds(&self, n: u8) -> Vec<String> {
        if n == 1 {
            Vec::new()
        } else {
            vec!["172.16.1.1:7946".into()]
        }
    }

    /// A member's `mesh:` section (controllers, bgpctls) at `addr`.
    fn member(&self, name: &str, addr: &str) -> Result<config::Member> {
        Ok(config::Member {
            bind: format!("{addr}:7946"),
            seeds: self.seeds(0),
            keys: vec![self.serf_key.clone()],
            rpc_auth: Some(RPC_AUTH.into()),
            state_dir: self.dir().join(format!("{name}-state")),
            profile: Some("local".into()),
        })
    }

    /// A namespace with an uplink to the transit namespace: 172.16.`net`.1/24, the transit
    /// .2, which routes the whole 172.16/16 between its uplinks.
    fn uplinked(&mut self, role: &str, net: u8, queues: u32) -> Result<Netns> {
        let ns = self.tb.add_netns(role)?;
        let (up, transit_side) = self.tb.add_veth(&ns, &self.transit, queues)?;
        up.add_addr(&format!("172.16.{net}.1/24"))?;
        transit_side.add_addr(&format!("172.16.{net}.2/24"))?;
        ns.route("172.16.0.0/16", &format!("via 172.16.{net}.2"))?;
        Ok(ns)
    }

    /// Gateway `n`'s namespace with one uplink for all its transits (172.16.n.1, a WireGuard
    /// port each), impaired as endpoints.
    fn shared(
        &mut self,
        name: &str,
        n: u8,
        names: [&'static str; 2],
        queues: u32,
    ) -> Result<(Netns, Vec<Transit>)> {
        let netns = self.uplinked(name, n, queues)?;
        let mut transits = Vec::new();
        for (t, tname) in names.iter().take(self.plan.transits).enumerate() {
            let addr = format!("172.16.{n}.1").parse().map_err(other)?;
            let port = 51820 + t as u16;
            transits.push(Transit {
                name: tname,
                listen: format!("172.16.{n}.1:{port}"),
                path: TransitPath::Shared(EndpointImpairment::new(
                    &self.transit,
                    &format!("{name}_{tname}"),
                    addr,
                    port,
                )?),
            });
        }
        Ok((netns, transits))
    }

    /// Gateway `n`'s namespace with a link of its own per transit, through a delay line in
    /// the transit namespace: transit t at 172.16.(20+20t+n).1, its datagrams routed out of
    /// its own link by source address (a table per transit, as a multihomed host does). The
    /// mesh and the orders channel keep the plain uplink (172.16.n.1), so impairing a transit
    /// touches only its tunnels.
    fn linked(
        &mut self,
        name: &str,
        n: u8,
        names: [&'static str; 2],
        queues: u32,
    ) -> Result<(Netns, Vec<Transit>)> {
        let netns = self.uplinked(name, n, queues)?;
        let mut transits = Vec::new();
        for (t, tname) in names.iter().take(self.plan.transits).enumerate() {
            let net = 20 + 20 * t as u8 + n;
            let link = ImpairedLink::build(&mut self.tb, &netns, &self.transit)?;
            link.inner.add_addr(&format!("172.16.{net}.1/24"))?;
            link.edge.add_addr(&format!("172.16.{net}.2/24"))?;
            let table = (100 + t).to_string();
            netns.ip([
                "rule",
                "add",
                "from",
                &format!("172.16.{net}.1"),
                "table",
                &table,
            ])?;
            netns.ip([
                "route",
                "add",
                "172.16.0.0/16",
                "via",
                &format!("172.16.{net}.2"),
                "table",
                &table,
            ])?;
            transits.push(Transit {
                name: tname,
                listen: format!("172.16.{net}.1:{}", 51820 + t),
                path: TransitPath::Own(link),
            });
        }
        Ok((netns, transits))
    }

    /// Datacenter `d` (1-based): its leaf, gateways and (with FRR) its bgpctl, configured
    /// and, for FRR, started; the daemons start in [`Lab::start`].
    pub(super) fn build_site(&mut self, d: u8) -> Result<Site> {
        let dc = &DCS[usize::from(d - 1)];
        let (prefix, host) = (format!("10.{d}0.0.0/16"), format!("10.{d}0.0.1"));
        let leaf = self.tb.add_netns(&format!("leaf-{}", dc.letter))?;
        for key in ["all", "default"] {
            leaf.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
        }
        // Flows spread over the gateways by port too, as a leaf switch hashes them.
        leaf.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        leaf.ip(["addr", "add", &format!("10.{d}.0.2/32"), "dev", "lo"])?;
        leaf.ip(["addr", "add", &format!("{host}/32"), "dev", "lo"])?;

        // A queue per core on the gateways' links, so an AF_XDP gateway runs a worker on each
        // (as the socket backend does).
        let queues = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u32;
        let mut gateways = Vec::new();
        for g in 1..=self.plan.gateways {
            let n = (d - 1) * self.plan.gateways + g;
            let name = format!("{}{g}", dc.letter);
            let (netns, transits) = if d <= self.plan.own_links {
                self.linked(&name, n, dc.transits, queues)?
            } else {
                self.shared(&name, n, dc.transits, queues)?
            };
            let (leaf_side, gw_side) = self.tb.add_veth(&leaf, &netns, queues)?;
            leaf_side.add_addr(&format!("10.{d}.{n}.2/24"))?;
            gw_side.add_addr(&format!("10.{d}.{n}.1/24"))?;
            netns.route(&format!("10.{d}.0.2/32"), &format!("via 10.{d}.{n}.2"))?;
            let daemon = Daemon {
                config: self.dir().join(format!("{name}.yaml")),
                socket: self.dir().join(format!("{name}.sock")),
                name,
                netns,
                process: None,
            };
            let gw = Gateway {
                daemon,
                n,
                vtep: format!("10.{d}.{n}.1"),
                transits,
            };
            self.gateway_config(d, &gw, &prefix)?
                .write(&gw.daemon.config, BY)?;
            gateways.push(gw);
        }
        let (frr, bgpctl) = if self.plan.frr {
            let (frr, b) = self.fabric(d, &leaf, &prefix)?;
            (Some(frr), Some(b))
        } else {
            self.static_leaf(d, &leaf, &host, &gateways[0])?;
            (None, None)
        };
        Ok(Site {
            dc: dc.name,
            d,
            prefix,
            host,
            leaf,
            gateways,
            frr,
            bgpctl,
        })
    }

    fn gateway_config(&self, d: u8, gw: &Gateway, prefix: &str) -> Result<config::Gateway> {
        let dc = &DCS[usize::from(d - 1)];
        let n = gw.n;
        let name = gw.daemon.name.as_str();
        let local_routes = if self.plan.frr {
            // From bgpctl only.
            Vec::new()
        } else {
            vec![config::LocalRoute {
                prefix: prefix.into(),
                vtep: format!("10.{d}.0.2"),
                router_mac: leaf_mac(d),
            }]
        };
        Ok(config::Gateway {
            name: name.into(),
            datacenter: dc.name.into(),
            private_key: WgKeys::generate()?.private,
            control_socket: gw.daemon.socket.clone(),
            probe: Some(config::Probe {
                interval: self.plan.probe_interval.clone(),
                window: Some(100),
                timeout: None,
            }),
            transits: gw
                .transits
                .iter()
                .map(|t| config::Transit {
                    name: t.name.into(),
                    listen: t.listen.clone(),
                    capacity: Some("1Gbps".into()),
                })
                .collect(),
            tunnels: Vec::new(),
            mesh: Some(config::GatewayMesh {
                id: n.into(),
                // The mesh rides the gateway's uplink (the first transit's, or the plain one
                // beside transits with links of their own).
                bind: vec![config::Bind {
                    transit: dc.transits[0].into(),
                    address: format!("172.16.{n}.1:7946"),
                }],
                seeds: self.seeds(n),
                keys: vec![self.serf_key.clone()],
                rpc_auth: Some(RPC_AUTH.into()),
                state_dir: self.dir().join(format!("{name}-state")),
                profile: Some("local".into()),
                failed_grace: None,
                pools: config::Pools::lab(),
                echo_port: Some(7054 + u16::from(n)),
            }),
            fabric: Some(config::Fabric {
                vtep: gw.vtep.clone(),
                router_mac: gateway_mac(n),
                vni: VNI,
                local_routes,
            }),
            dataplane: Some(config::Dataplane {
                backend: self.plan.backend.clone(),
                ..Default::default()
            }),
            api: Some(config::Api {
                listen: format!("172.16.{n}.1:7443"),
                tls: config::Tls::issued(&self.pki_dir(), "gateway", name),
                repair_hold: None,
            }),
        })
    }

    /// Without FRR: the leaf routes every other datacenter's prefix to `first` as an RT-5
    /// route would install it.
    fn static_leaf(&self, d: u8, leaf: &Netns, host: &str, first: &Gateway) -> Result<()> {
        leaf.add_vxlan(
            "vx0",
            VNI,
            &format!("10.{d}.0.2"),
            &leaf_mac(d),
            Some(LEAF_MTU),
        )?;
        // Over veth nothing would ever complete an offloaded inner checksum (a leaf switch
        // sends complete ones), so the kernel must compute them before encapsulating.
        leaf.exec("ethtool", ["-K", "vx0", "tx", "off"])?;
        leaf.vxlan_remote("vx0", &first.vtep, &gateway_mac(first.n))?;
        for e in (1..=self.plan.datacenters).filter(|&e| e != d) {
            leaf.ip([
                "route",
                "add",
                &format!("10.{e}0.0.0/16"),
                "via",
                &first.vtep,
                "dev",
                "vx0",
                "onlink",
                "src",
                host,
            ])?;
        }
        Ok(())
    }

    /// With FRR: the leaf's SVI and VXLAN device, FRR peering with the datacenter's bgpctl
    /// (in its own namespace: 10.d.9.1 towards the leaf, 172.16.(60+d).1 on the mesh), and
    /// bgpctl's configuration.
    fn fabric(&mut self, d: u8, leaf: &Netns, prefix: &str) -> Result<(Frr, Daemon)> {
        let dc = &DCS[usize::from(d - 1)];
        crate::frr::add_l3vni(
            leaf,
            VNI,
            &format!("10.{d}.0.2"),
            &leaf_mac(d),
            &format!("02:00:0a:00:{d:02x}:f2"),
            LEAF_MTU,
            prefix,
        )?;

        let name = format!("bgp-{}", dc.name);
        let mesh_addr = format!("172.16.{}.1", 60 + d);
        let netns = self.uplinked(&name, 60 + d, 1)?;
        let (l, b) = self.tb.add_veth(leaf, &netns, 1)?;
        let (own, leaf_side) = (format!("10.{d}.9.1"), format!("10.{d}.9.2"));
        l.add_addr(&format!("{leaf_side}/30"))?;
        b.add_addr(&format!("{own}/30"))?;
        let leaf_as = 65000 + u32::from(d);
        let frr_conf = config::FrrLeaf {
            hostname: format!("leaf-{}", dc.letter),
            asn: leaf_as,
            router_id: format!("10.{d}.0.2"),
            vni: VNI,
            neighbors: vec![(own.clone(), BGPCTL_AS)],
            networks: vec![prefix.into()],
        };
        let frr = Frr::start(
            &mut self.tb,
            leaf,
            &frr_conf.zebra_conf(),
            &frr_conf.bgpd_conf(),
        )?;
        frr.wait_vtysh("show evpn vni 100", "Type: L3", Duration::from_secs(60))?;

        let daemon = Daemon {
            config: self.dir().join(format!("{name}.yaml")),
            socket: self.dir().join(format!("{name}.sock")),
            name: name.clone(),
            netns,
            process: None,
        };
        config::Bgpctl {
            local_as: BGPCTL_AS,
            router_id: own,
            listen: None,
            control_socket: daemon.socket.clone(),
            hold_time: Some(9),
            connect_retry: Some(0.5),
            connect_retry_max: Some(2.0),
            peers: vec![config::Peer {
                address: leaf_side,
                remote_as: leaf_as,
                passive: false,
            }],
            import: Some(config::Import {
                route_targets: vec![format!("*:{VNI}")],
            }),
            export: Some(config::Export {
                vni: VNI,
                route_targets: vec![format!("{leaf_as}:{VNI}")],
                ..Default::default()
            }),
            sdwan: Some(config::Sdwan {
                name: name.clone(),
                datacenter: dc.name.into(),
                refresh: Some("2s".into()),
                mesh: self.member(&name, &mesh_addr)?,
                api: config::Api {
                    listen: format!("{mesh_addr}:7443"),
                    tls: config::Tls::issued(&self.pki_dir(), "bgpctl", &name),
                    repair_hold: None,
                },
            }),
        }
        .write(&daemon.config, BY)?;
        Ok((frr, daemon))
    }

    /// Controller `k` (1-based) in its own namespace at 172.16.(100+k).1: its policy and
    /// configuration.
    pub(super) fn configure_controller(&mut self, k: u8) -> Result<Daemon> {
        let name = controller_name(k);
        let addr = format!("172.16.{}.1", 100 + k);
        let netns = self.uplinked(&name, 100 + k, 1)?;
        let policy = self.dir().join("policy.yaml");
        std::fs::write(&policy, LAB_POLICY)?;
        let daemon = Daemon {
            config: self.dir().join(format!("{name}.yaml")),
            socket: self.dir().join(format!("{name}.sock")),
            name: name.clone(),
            netns,
            process: None,
        };
        config::Controller {
            name: name.clone(),
            policy,
            control_socket: daemon.socket.clone(),
            deadline: None,
            snapshot_dir: Some(self.dir().join(format!("{name}-cycles"))),
            keep_snapshots: Some(20),
            mesh: self.member(&name, &addr)?,
            api: config::Tls::issued(&self.pki_dir(), "controller", &name),
        }
        .write(&daemon.config, BY)?;
        Ok(daemon)
    }
}
