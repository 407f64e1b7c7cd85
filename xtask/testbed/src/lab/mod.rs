//! A gatewan SD-WAN in namespaces, built from a [`Plan`]: what `cargo xtask lab` runs (the
//! [`Plan::tour`]: three datacenters) and what the end-to-end tests check.
//!
//! ```text
//!  host 10.d0.0.1 -- leaf-d (VTEP 10.d.0.2; FRR bgpd + zebra, AS 6500d, L3VNI 100)
//!                      |-- 10.d.n.0/24 -- gateway n (VTEP 10.d.n.1) -- 172.16.n.0/24 --+
//!                      |-- 10.d.m.0/24 -- gateway m                 -- 172.16.m.0/24 --+
//!                      `-- 10.d.9.0/30 -- bgp-dc-x (AS 65100)       -- 172.16.6d.0/24 -+
//!                                                                                      |
//!                   ctl-a 172.16.101.0/24, ctl-b 172.16.102.0/24 --------------- transit (routes)
//! ```
//!
//! Datacenter d (1, 2, 3: dc-a, dc-b, dc-c) has a leaf with a host prefix 10.d0.0.0/16 and
//! one or two gateways (numbered n across the lab: a1 = 1, a2 = 2, b1 = 3, ...). Every
//! gateway has two transits of its own (the same uplink address, one WireGuard port each,
//! impairable on their own in the transit namespace) and builds a tunnel to every remote
//! gateway for each pair of transits from the Serf mesh (every member's seed is a1's agent).
//! Controllers pull the gateways' reports and push orders over the orders channel (mutual TLS,
//! certificates made with `gatewan pki` in the lab's directory).
//!
//! With [`Plan::frr`], each leaf runs FRR and a bgpctl peers with it: the leaf's prefix
//! reaches the gateways and the mesh from BGP, and remote prefixes reach the leaf as RT-5
//! routes from bgpctl, one per gateway the controller's order uses; there is no static route
//! anywhere. Without it the leaf routes every remote prefix to its first gateway the way an
//! RT-5 route installs it (a route via the gateway's VTEP on the VXLAN device, a neighbour
//! entry with its router MAC, an fdb entry to its VTEP) and the gateways' local routes are
//! static.

use std::path::{Path, PathBuf};

mod build;
pub mod failover;

use crate::config;
use crate::frr::Frr;
use crate::impair::{EndpointImpairment, ImpairedLink, Impairment};
use crate::{Netns, ProcessId, Result, Testbed, TestbedError};

/// What to build.
#[derive(Clone, Debug)]
pub struct Plan {
    /// 2 or 3.
    pub datacenters: u8,
    /// Gateways per datacenter, 1 or 2.
    pub gateways: u8,
    /// Transits per gateway, 1 or 2.
    pub transits: usize,
    /// How many datacenters, from dc-a on, give each transit a link of its own (an
    /// [`ImpairedLink`]: latency, jitter and rate caps too); the others' transits share the
    /// gateway's uplink (an [`EndpointImpairment`]: blackhole and loss).
    pub own_links: u8,
    /// FRR leaves and a bgpctl per datacenter (else static leaf routes).
    pub frr: bool,
    /// 1 or 2 (the second a standby).
    pub controllers: u8,
    /// The gateways' probe interval, e.g. `100ms`.
    pub probe_interval: String,
    /// The gateways' `dataplane.backend`: `auto`, `socket` or `afxdp`.
    pub backend: String,
}

impl Plan {
    /// The README's tour: three datacenters of two gateways with two transits each, FRR
    /// leaves with bgpctls, two controllers.
    pub fn tour(backend: &str) -> Plan {
        Plan {
            datacenters: 3,
            gateways: 2,
            transits: 2,
            own_links: 1,
            frr: true,
            controllers: 2,
            probe_interval: "100ms".into(),
            backend: backend.into(),
        }
    }

    /// The dataplane's end-to-end tests: two datacenters of one gateway, static leaves, one
    /// controller.
    pub fn pair(backend: &str) -> Plan {
        Plan {
            datacenters: 2,
            gateways: 1,
            transits: 2,
            own_links: 0,
            frr: false,
            controllers: 1,
            probe_interval: "100ms".into(),
            backend: backend.into(),
        }
    }
}

/// A datacenter's names and transits.
struct Dc {
    name: &'static str,
    letter: char,
    transits: [&'static str; 2],
}

const DCS: [Dc; 3] = [
    Dc {
        name: "dc-a",
        letter: 'a',
        transits: ["lumen", "telstra"],
    },
    Dc {
        name: "dc-b",
        letter: 'b',
        transits: ["cogent", "ntt"],
    },
    Dc {
        name: "dc-c",
        letter: 'c',
        transits: ["zayo", "gtt"],
    },
];

/// A daemon of the lab: a gateway, a bgpctl or a controller.
pub struct Daemon {
    pub name: String,
    pub netns: Netns,
    pub config: PathBuf,
    /// Its control socket (`--socket` of the CLI).
    pub socket: PathBuf,
    /// While it runs.
    pub process: Option<ProcessId>,
}

pub struct Gateway {
    pub daemon: Daemon,
    /// Its number across the lab: addresses 172.16.n.1 and 10.d.n.1, mesh id n.
    pub n: u8,
    pub vtep: String,
    /// Its transits, each impairable on its own in the transit namespace.
    pub transits: Vec<Transit>,
}

/// One transit of a gateway.
pub struct Transit {
    pub name: &'static str,
    /// `address:port` of its WireGuard socket.
    pub listen: String,
    pub path: TransitPath,
}

/// How a transit reaches the internet, and so what can be done to it.
pub enum TransitPath {
    /// Sharing the gateway's uplink with its other transits: blackhole and loss.
    Shared(EndpointImpairment),
    /// A link of its own: every knob.
    Own(ImpairedLink),
}

impl Transit {
    /// Applies `imp` now, replacing what was set before (latency and rate caps only on a
    /// link of its own).
    pub fn set(&self, imp: &Impairment) -> Result<()> {
        match &self.path {
            TransitPath::Shared(e) => e.set(imp),
            TransitPath::Own(l) => l.set(imp),
        }
    }

    /// Whether latency and rate caps can be set.
    pub fn has_own_link(&self) -> bool {
        matches!(self.path, TransitPath::Own(_))
    }
}

/// One datacenter of the lab.
pub struct Site {
    pub dc: &'static str,
    pub d: u8,
    /// The host prefix behind the leaf and the host address on the leaf.
    pub prefix: String,
    pub host: String,
    pub leaf: Netns,
    pub gateways: Vec<Gateway>,
    /// With [`Plan::frr`].
    pub frr: Option<Frr>,
    pub bgpctl: Option<Daemon>,
}

pub struct Lab {
    pub tb: Testbed,
    pub plan: Plan,
    pub transit: Netns,
    pub sites: Vec<Site>,
    pub controllers: Vec<Daemon>,
    gatewan: PathBuf,
    /// The mesh's encryption key (`serf keygen`).
    serf_key: String,
}

/// The lab controllers' policy: one-second cycles, a 10 Mbit/s floor per datacenter pair.
const LAB_POLICY: &str = "cycle_period_s: 1
sla_classes:
  - { name: bulk, max_loss_pct: 2, max_latency_ms: 400, max_jitter_ms: 100 }
pairs:
  default: { sla: bulk, capacity: { demand: { margin_pct: 50, min: 10M } }, min_tunnels: 2 }
health: { min_measurements: 10, blackhole_lost_in_a_row: 3, recovery_hold_s: 20 }
anti_flap: { min_dwell_s: 5 }
";

/// Inner MTU of the leaves' VXLAN devices: what a WireGuard tunnel carries (1420).
pub const LEAF_MTU: u32 = 1420;
/// The L3 VNI of every fabric.
const VNI: u32 = 100;
/// The Serf RPC secret of the lab's agents.
const RPC_AUTH: &str = "gatewan-lab";
/// bgpctls' AS (every leaf has its own, 6500d).
const BGPCTL_AS: u32 = 65100;

fn other(e: impl std::fmt::Display) -> TestbedError {
    TestbedError::Other(e.to_string())
}

/// The deployment's CA and a certificate for each member (`gatewan pki`).
fn pki(gatewan: &Path, dir: &Path, members: &[(&str, String)]) -> Result<()> {
    let run = |args: &[&str]| {
        crate::run_checked(std::process::Command::new(gatewan).args(args)).map(drop)
    };
    let d = dir.to_str().unwrap_or_default();
    run(&["pki", "init", "--dir", d, "--days", "30"])?;
    for (role, name) in members {
        run(&[
            "pki", "issue", "--ca", d, "--role", role, "--name", name, "--out", d, "--days", "30",
        ])?;
    }
    Ok(())
}

/// Router MAC of gateway n, and of leaf d (its SVI).
fn gateway_mac(n: u8) -> String {
    format!("02:00:0a:00:00:{n:02x}")
}
fn leaf_mac(d: u8) -> String {
    format!("02:00:0a:00:{d:02x}:02")
}

impl Lab {
    /// Builds the topology of `plan` and starts every daemon (`gatewan` is the binary).
    pub fn start(gatewan: &Path, plan: Plan) -> Result<Lab> {
        let mut plan = plan;
        plan.datacenters = plan.datacenters.clamp(2, 3);
        plan.gateways = plan.gateways.clamp(1, 2);
        plan.transits = plan.transits.clamp(1, 2);
        plan.controllers = plan.controllers.clamp(1, 2);
        let mut tb = Testbed::new()?;
        let transit = tb.add_netns("transit")?;
        transit.sysctl("net.ipv4.ip_forward", "1")?;
        let mut lab = Lab {
            tb,
            plan,
            transit,
            sites: Vec::new(),
            controllers: Vec::new(),
            gatewan: gatewan.to_path_buf(),
            serf_key: crate::run_checked(std::process::Command::new("serf").arg("keygen"))?
                .trim()
                .to_owned(),
        };
        lab.issue_certificates()?;
        for d in 1..=lab.plan.datacenters {
            let site = lab.build_site(d)?;
            lab.sites.push(site);
        }
        for k in 1..=lab.plan.controllers {
            let c = lab.configure_controller(k)?;
            lab.controllers.push(c);
        }
        // a1 first: its agent is everyone's seed.
        for name in lab.gateway_names() {
            lab.start_gateway(&name)?;
        }
        for i in 0..lab.sites.len() {
            if let Some(b) = lab.sites[i].bgpctl.as_mut() {
                b.process = Some(spawn(&mut lab.tb, &lab.gatewan, b, "bgpctl")?);
            }
        }
        for c in &mut lab.controllers {
            c.process = Some(spawn(&mut lab.tb, &lab.gatewan, c, "controller")?);
        }
        Ok(lab)
    }

    fn dir(&self) -> PathBuf {
        self.tb.dir().to_path_buf()
    }

    fn pki_dir(&self) -> PathBuf {
        self.tb.dir().join("pki")
    }

    /// `a1`, `a2`, `b1`, ... in the plan's order.
    fn gateway_names(&self) -> Vec<String> {
        self.gateways().map(|g| g.daemon.name.clone()).collect()
    }

    fn issue_certificates(&self) -> Result<()> {
        let mut members = Vec::new();
        for d in 1..=self.plan.datacenters {
            let dc = &DCS[usize::from(d - 1)];
            for g in 1..=self.plan.gateways {
                members.push(("gateway", format!("{}{g}", dc.letter)));
            }
            if self.plan.frr {
                members.push(("bgpctl", format!("bgp-{}", dc.name)));
            }
        }
        for k in 1..=self.plan.controllers {
            members.push(("controller", controller_name(k)));
        }
        pki(&self.gatewan, &self.pki_dir(), &members)
    }

    /// Every gateway, datacenter by datacenter.
    pub fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        self.sites.iter().flat_map(|s| s.gateways.iter())
    }

    pub fn gateway(&self, name: &str) -> Option<&Gateway> {
        self.gateways().find(|g| g.daemon.name == name)
    }

    fn gateway_mut(&mut self, name: &str) -> Result<&mut Gateway> {
        self.sites
            .iter_mut()
            .flat_map(|s| s.gateways.iter_mut())
            .find(|g| g.daemon.name == name)
            .ok_or_else(|| other(format!("no gateway {name} in the lab")))
    }

    /// Tunnels each gateway has when the mesh is complete.
    pub fn tunnels_per_gateway(&self) -> usize {
        let remote = usize::from(self.plan.gateways) * (self.sites.len().saturating_sub(1));
        remote * self.plan.transits * self.plan.transits
    }

    /// Starts (or restarts) gateway `name` and waits for its control socket.
    pub fn start_gateway(&mut self, name: &str) -> Result<()> {
        let g = self
            .sites
            .iter_mut()
            .flat_map(|s| s.gateways.iter_mut())
            .find(|g| g.daemon.name == name)
            .ok_or_else(|| other(format!("no gateway {name} in the lab")))?;
        g.daemon.process = Some(spawn(&mut self.tb, &self.gatewan, &g.daemon, "gateway")?);
        Ok(())
    }

    /// SIGKILLs gateway `name` (a crash: no goodbye to the mesh or to its peers).
    pub fn kill_gateway(&mut self, name: &str) -> Result<()> {
        if let Some(p) = self.gateway_mut(name)?.daemon.process.take() {
            self.tb.kill(p);
        }
        Ok(())
    }

    pub fn controller(&self, name: &str) -> Option<&Daemon> {
        self.controllers.iter().find(|c| c.name == name)
    }

    /// SIGKILLs controller `name`.
    pub fn kill_controller(&mut self, name: &str) {
        if let Some(c) = self.controllers.iter_mut().find(|c| c.name == name) {
            if let Some(p) = c.process.take() {
                self.tb.kill(p);
            }
        }
    }

    /// Starts controller `name` again after [`Lab::kill_controller`].
    pub fn start_controller(&mut self, name: &str) -> Result<()> {
        let c = self
            .controllers
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| other(format!("no controller {name} in the lab")))?;
        c.process = Some(spawn(&mut self.tb, &self.gatewan, c, "controller")?);
        Ok(())
    }

    /// A daemon's log so far.
    pub fn log(&self, d: &Daemon) -> String {
        d.process.map(|p| self.tb.log(p)).unwrap_or_default()
    }
}

/// Starts `gatewan <what> --config <config>` for `d` and waits for its control socket.
fn spawn(tb: &mut Testbed, gatewan: &Path, d: &Daemon, what: &str) -> Result<ProcessId> {
    let _ = std::fs::remove_file(&d.socket);
    let config = d.config.display().to_string();
    tb.spawn_until_exists(
        &d.netns,
        gatewan.to_str().unwrap_or_default(),
        &[what, "--config", &config],
        &d.socket,
    )
}

fn controller_name(k: u8) -> String {
    format!("ctl-{}", char::from(b'a' + k - 1))
}
