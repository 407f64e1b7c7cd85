//! A two-datacenter gatewan SD-WAN in namespaces: what `cargo xtask lab` runs and what the
//! end-to-end tests check.
//!
//! ```text
//!  leaf-a (10.1.0.1)                                                   leaf-b (10.2.0.1)
//!  kernel VXLAN, VNI 100                                               kernel VXLAN, VNI 100
//!     | 10.0.1.0/24 (fabric)                              (fabric) 10.0.2.0/24 |
//!  gw-a  --- 172.16.1.0/24 ---  transit (routes)  --- 172.16.2.0/24 ---  gw-b
//!         one WireGuard tunnel per pair of transits (gw-a's x gw-b's)
//!                                      |
//!                               172.16.9.0/24 --- ctl (controller ctl-a)
//! ```
//!
//! Each leaf routes the other datacenter's prefix to its gateway the way an EVPN RT5 route
//! installs it: a route via the gateway's VTEP address on the VXLAN device, a permanent
//! neighbour entry with the gateway's router MAC, and an fdb entry sending that MAC to the
//! gateway's VTEP.
//!
//! The gateways are configured with their own keys, transits and fabric and one seed (gw-b
//! joins gw-a's Serf agent over the transit): every tunnel is built from the mesh. A
//! controller joins the mesh too, pulls the gateways' reports and pushes their orders over
//! the orders channel (mutual TLS, certificates made with `gatewan pki` in the lab's
//! directory).

use std::path::{Path, PathBuf};

pub mod failover;

use crate::{Netns, ProcessId, Result, Testbed, TestbedError, WgKeys};

/// One datacenter of the lab.
pub struct Site {
    pub name: &'static str,
    /// The host prefix behind the leaf and the host address on the leaf.
    pub prefix: &'static str,
    pub host: &'static str,
    pub leaf: Netns,
    pub gateway: Netns,
    pub gateway_process: ProcessId,
    /// The gateway's control socket (for `gatewan status --socket`).
    pub socket: PathBuf,
    pub config: PathBuf,
    /// Its transits, by name, each impairable on its own in the transit namespace (both
    /// share the gateway's uplink: a transit is its address and WireGuard port there).
    pub transits: Vec<(&'static str, crate::impair::EndpointImpairment)>,
}

pub struct Lab {
    pub tb: Testbed,
    pub transit: Netns,
    pub a: Site,
    pub b: Site,
    /// Tunnels per gateway: transits x transits.
    pub tunnels: usize,
    pub controller: Controller,
}

/// The lab's controller, in its own namespace behind the transit.
pub struct Controller {
    pub name: &'static str,
    pub netns: Netns,
    pub process: ProcessId,
    /// For `gatewan controller status --socket`.
    pub socket: PathBuf,
}

/// The lab controller's policy: one-second cycles, a 10 Mbit/s floor per datacenter pair.
const LAB_POLICY: &str = "cycle_period_s: 1
sla_classes:
  - { name: bulk, max_loss_pct: 2, max_latency_ms: 400, max_jitter_ms: 100 }
pairs:
  default: { sla: bulk, capacity: { demand: { margin_pct: 50, min: 10M } }, min_tunnels: 2 }
health: { min_measurements: 10, blackhole_lost_in_a_row: 3, recovery_hold_s: 20 }
anti_flap: { min_dwell_s: 5 }
";

/// The deployment's CA and a certificate for each member (`gatewan pki`).
fn pki(gatewan: &Path, dir: &Path, members: &[(&str, &str)]) -> Result<()> {
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

struct Plan {
    name: &'static str,
    dc: &'static str,
    index: u8,
    prefix: &'static str,
    host: &'static str,
    transits: &'static [&'static str],
}

const PLANS: [Plan; 2] = [
    Plan {
        name: "gw-a",
        dc: "dc-a",
        index: 1,
        prefix: "10.1.0.0/16",
        host: "10.1.0.1",
        transits: &["lumen", "telstra"],
    },
    Plan {
        name: "gw-b",
        dc: "dc-b",
        index: 2,
        prefix: "10.2.0.0/16",
        host: "10.2.0.1",
        transits: &["cogent", "ntt"],
    },
];

/// Inner MTU of the leaves' VXLAN devices: what a WireGuard tunnel carries (1420).
pub const LEAF_MTU: u32 = 1420;

impl Lab {
    /// Builds the topology and starts both gateways (`gatewan` is the binary to run), each
    /// with `transits` transits (1 or 2) and probes every `probe_interval` (e.g. `100ms`).
    pub fn start(gatewan: &Path, transits: usize, probe_interval: &str) -> Result<Lab> {
        Self::start_with(gatewan, transits, probe_interval, "auto")
    }

    /// [`Lab::start`] with the gateways' `dataplane.backend` (`auto`, `socket` or `afxdp`).
    pub fn start_with(
        gatewan: &Path,
        transits: usize,
        probe_interval: &str,
        backend: &str,
    ) -> Result<Lab> {
        let transits = transits.clamp(1, 2);
        let mut tb = Testbed::new()?;
        let transit = tb.add_netns("transit")?;
        transit.sysctl("net.ipv4.ip_forward", "1")?;
        let keys = [WgKeys::generate()?, WgKeys::generate()?];
        let serf_key = crate::run_checked(std::process::Command::new("serf").arg("keygen"))?
            .trim()
            .to_owned();
        let pki_dir = tb.dir().join("pki");
        pki(
            gatewan,
            &pki_dir,
            &[
                ("gateway", "gw-a"),
                ("gateway", "gw-b"),
                ("controller", "ctl-a"),
            ],
        )?;

        // Underlay: each gateway to the transit namespace, and to its leaf, with a queue per
        // core so an AF_XDP gateway runs a worker on each (as the socket backend does).
        let queues = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u32;
        let mut built = Vec::new();
        for plan in &PLANS {
            let i = plan.index;
            let leaf = tb.add_netns(&format!("leaf-{}", &plan.name[3..]))?;
            let gateway = tb.add_netns(plan.name)?;
            let (gw_up, transit_side) = tb.add_veth(&gateway, &transit, queues)?;
            gw_up.add_addr(&format!("172.16.{i}.1/24"))?;
            transit_side.add_addr(&format!("172.16.{i}.2/24"))?;
            gateway.route("172.16.0.0/16", &format!("via 172.16.{i}.2"))?;
            let (leaf_side, gw_down) = tb.add_veth(&leaf, &gateway, queues)?;
            leaf_side.add_addr(&format!("10.0.{i}.2/24"))?;
            gw_down.add_addr(&format!("10.0.{i}.1/24"))?;
            built.push((leaf, gateway));
        }

        // The leaves: a VXLAN device routing the other site's prefix to the local gateway.
        for (plan, (leaf, _)) in PLANS.iter().zip(&built) {
            let i = plan.index;
            let other = &PLANS[usize::from(2 - i)];
            let (leaf_mac, gw_mac) = (
                format!("02:00:0a:00:0{i}:02"),
                format!("02:00:0a:00:0{i}:01"),
            );
            let vtep = format!("10.0.{i}.1");
            for key in ["all", "default"] {
                leaf.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
            }
            leaf.add_vxlan(
                "vx0",
                100,
                &format!("10.0.{i}.2"),
                &leaf_mac,
                Some(LEAF_MTU),
            )?;
            // Over veth nothing would ever complete an offloaded inner checksum (a leaf switch
            // sends complete ones), so the kernel must compute them before encapsulating.
            leaf.exec("ethtool", ["-K", "vx0", "tx", "off"])?;
            leaf.ip(["addr", "add", &format!("{}/32", plan.host), "dev", "lo"])?;
            leaf.vxlan_remote("vx0", &vtep, &gw_mac)?;
            leaf.ip([
                "route",
                "add",
                other.prefix,
                "via",
                &vtep,
                "dev",
                "vx0",
                "onlink",
                "src",
                plan.host,
            ])?;
        }

        // The gateways' configurations and processes.
        let mut sites = Vec::new();
        for (n, (plan, (leaf, gateway))) in PLANS.iter().zip(built).enumerate() {
            let config = gateway_yaml(
                &tb,
                plan,
                &keys[n].private,
                &serf_key,
                Knobs {
                    transits,
                    interval: probe_interval,
                    backend,
                },
            );
            let config_path = tb.dir().join(format!("{}.yaml", plan.name));
            std::fs::write(&config_path, config)?;
            let socket = tb.dir().join(format!("{}.sock", plan.name));
            let process = tb.spawn_until_exists(
                &gateway,
                gatewan.to_str().unwrap_or_default(),
                &[
                    "gateway",
                    "--config",
                    config_path.to_str().unwrap_or_default(),
                ],
                &socket,
            )?;
            let mut impairable = Vec::new();
            for (t, name) in plan.transits.iter().take(transits).enumerate() {
                let addr = format!("172.16.{}.1", plan.index)
                    .parse()
                    .map_err(|_| TestbedError::Other("transit address".into()))?;
                let tag = format!("{}_{name}", plan.name.replace('-', ""));
                impairable.push((
                    *name,
                    crate::impair::EndpointImpairment::new(&transit, &tag, addr, 51820 + t as u16)?,
                ));
            }
            sites.push(Site {
                name: plan.name,
                transits: impairable,
                prefix: plan.prefix,
                host: plan.host,
                leaf,
                gateway,
                gateway_process: process,
                socket,
                config: config_path,
            });
        }
        let controller = start_controller(&mut tb, &transit, gatewan, &serf_key, &pki_dir)?;
        let b = sites
            .pop()
            .ok_or(TestbedError::Io(std::io::ErrorKind::NotFound.into()))?;
        let a = sites
            .pop()
            .ok_or(TestbedError::Io(std::io::ErrorKind::NotFound.into()))?;
        Ok(Lab {
            tb,
            transit,
            a,
            b,
            tunnels: transits * transits,
            controller,
        })
    }
}

/// The controller's namespace (172.16.9.1 behind the transit), its configuration and process.
fn start_controller(
    tb: &mut Testbed,
    transit: &Netns,
    gatewan: &Path,
    serf_key: &str,
    pki_dir: &Path,
) -> Result<Controller> {
    let netns = tb.add_netns("ctl")?;
    let (up, transit_side) = tb.add_veth(&netns, transit, 1)?;
    up.add_addr("172.16.9.1/24")?;
    transit_side.add_addr("172.16.9.2/24")?;
    netns.route("172.16.0.0/16", "via 172.16.9.2")?;
    let dir = tb.dir().to_path_buf();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, LAB_POLICY)?;
    let (config, socket) = (dir.join("ctl-a.yaml"), dir.join("ctl-a.sock"));
    std::fs::write(
        &config,
        format!(
            "# ctl-a: generated by gatewan's lab\nname: ctl-a\npolicy: {policy}\ncontrol_socket: {sock}\n\
             snapshot_dir: {snaps}\nkeep_snapshots: 20\n\
             mesh:\n  bind: \"172.16.9.1:7946\"\n  seeds: [\"172.16.1.1:7946\"]\n  keys: [\"{serf_key}\"]\n\
             \x20 rpc_auth: gatewan-lab\n  state_dir: {state}\n  profile: local\n\
             api:\n  ca: {pki}/ca.pem\n  cert: {pki}/ctl-a.controller.pem\n  key: {pki}/ctl-a.controller.key\n",
            policy = policy.display(),
            sock = socket.display(),
            snaps = dir.join("ctl-a-cycles").display(),
            state = dir.join("ctl-a-state").display(),
            pki = pki_dir.display(),
        ),
    )?;
    let process = tb.spawn_until_exists(
        &netns,
        gatewan.to_str().unwrap_or_default(),
        &[
            "controller",
            "--config",
            config.to_str().unwrap_or_default(),
        ],
        &socket,
    )?;
    Ok(Controller {
        name: "ctl-a",
        netns,
        process,
        socket,
    })
}

/// What the lab varies between gateways' configurations.
#[derive(Clone, Copy)]
struct Knobs<'a> {
    transits: usize,
    interval: &'a str,
    backend: &'a str,
}

fn gateway_yaml(
    tb: &Testbed,
    plan: &Plan,
    private: &str,
    serf_key: &str,
    knobs: Knobs<'_>,
) -> String {
    let Knobs {
        transits,
        interval,
        backend,
    } = knobs;
    let i = plan.index;
    let mut y = format!(
        "# {name}: generated by gatewan's lab\nname: {name}\ndatacenter: {dc}\nprivate_key: {private}\n\
         control_socket: {sock}\nprobe:\n  interval: {interval}\n  window: 100\ntransits:\n",
        name = plan.name,
        dc = plan.dc,
        sock = tb.dir().join(format!("{}.sock", plan.name)).display(),
    );

    for (t, transit) in plan.transits.iter().take(transits).enumerate() {
        y.push_str(&format!(
            "  - name: {transit}\n    listen: \"172.16.{i}.1:{}\"\n    capacity: 1Gbps\n",
            51820 + t
        ));
    }
    // The mesh rides the first transit; gw-a's agent is the seed.
    let seeds = if i == 1 {
        String::new()
    } else {
        "\"172.16.1.1:7946\"".to_owned()
    };
    y.push_str(&format!(
        "mesh:\n  id: {i}\n  bind: [{{transit: {first}, address: \"172.16.{i}.1:7946\"}}]\n\
         \x20 seeds: [{seeds}]\n  keys: [\"{serf_key}\"]\n  rpc_auth: gatewan-lab\n\
         \x20 state_dir: {state}\n  profile: local\n\
         \x20 pools: {{v4: 100.64.0.0/16, v6: \"fd00:5d::/64\"}}\n  echo_port: {echo}\n",
        first = plan.transits[0],
        state = tb.dir().join(format!("{}-state", plan.name)).display(),
        echo = 7054 + u16::from(i),
    ));
    y.push_str(&format!(
        "fabric:\n  vtep: 10.0.{i}.1\n  router_mac: \"02:00:0a:00:0{i}:01\"\n  vni: 100\n  local_routes:\n\
         \x20   - prefix: {prefix}\n      vtep: 10.0.{i}.2\n      router_mac: \"02:00:0a:00:0{i}:02\"\n",
        prefix = plan.prefix
    ));
    y.push_str(&format!(
        "dataplane:
  backend: {backend}
"
    ));
    let pki = tb.dir().join("pki");
    y.push_str(&format!(
        "api:\n  listen: \"172.16.{i}.1:7443\"\n  ca: {pki}/ca.pem\n  cert: {pki}/{name}.gateway.pem\n  key: {pki}/{name}.gateway.key\n",
        pki = pki.display(),
        name = plan.name,
    ));
    y
}
