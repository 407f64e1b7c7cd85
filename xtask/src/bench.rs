//! `cargo xtask bench`: gatewan's forwarding benchmark, end to end through two gateways.
//!
//! ```text
//!  gen ns           gwa ns                  tr ns                    gwb ns                 sink ns
//!  pktgen gen --veth-- gateway A --veth per transit-- router --veth per transit-- gateway B --veth-- pktgen sink
//!  10.0.1.2   10.0.1.1 (VTEP)  172.16.1t.1   172.16.1t.2 | 172.16.2t.2   172.16.2t.1  10.0.2.1 (VTEP)  10.0.2.2
//! ```
//!
//! The generator sends VXLAN as a leaf does (inner 10.1.0.0/16 -> 10.2.0.0/16) to gateway A's
//! VTEP; A carries it through WireGuard over the transit router to B; B's local route sends it
//! as VXLAN to the sink's VTEP with the sink's router MAC, and the sink checks every packet.
//! Three forwarders take the gateways' place in turn, each in a fresh topology: gatewan with
//! `backend: afxdp`, gatewan with `backend: socket`, and Debian wireguard-go behind kernel
//! VXLAN devices (the peer baseline). See docs/benchmarks.md.
//!
//! The generator and sink are the release `gatewan-pktgen` binary started in their namespaces
//! (`ip netns exec`): xtask itself is a debug build, and a debug generator would measure itself.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::ValueEnum;
use gatewan_testbed::{Link, Need, Netns, ProcessId, Testbed, WgKeys, WgPeer};
use serde::{Deserialize, Serialize};

use crate::{run_cmd, setup};

/// The L3 VNI of both fabrics.
pub const VNI: u32 = 100;
/// The generator's (leaf A's) VTEP and router MAC.
pub const GEN_VTEP: &str = "10.0.1.2";
pub const GEN_MAC: &str = "02:00:0a:00:01:02";
/// The sink's (leaf B's) VTEP and router MAC: what gateway B's local route writes.
pub const SINK_VTEP: &str = "10.0.2.2";
pub const SINK_MAC: &str = "02:00:0a:00:02:02";
/// Behind leaf A (inner sources) and behind leaf B (inner destinations).
pub const SRC_PREFIX: &str = "10.1.0.0/16";
pub const DST_PREFIX: &str = "10.2.0.0/16";
/// Inner addresses the flows spread over, on each side.
const INNER_ADDRS: u32 = 8;
/// First WireGuard port; transit `t` of a gateway listens on `WG_PORT + t`.
const WG_PORT: u16 = 51820;
/// Wait after the generator stops before stopping the sink: what is still in flight lands.
const DRAIN: Duration = Duration::from_millis(300);
/// Trials per case with --search (each halves the range the loss-free rate lies in).
const SEARCH_STEPS: usize = 6;
/// How long a gateway's published counters can lag (its status period, and some).
const STATUS_REFRESH: Duration = Duration::from_millis(1100);

/// One forwarder under test: a column of the table.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Column {
    /// gatewan, `dataplane.backend: afxdp`.
    Afxdp,
    /// gatewan, `dataplane.backend: socket`.
    Socket,
    /// Debian wireguard-go with kernel VXLAN devices in front.
    Wggo,
}

impl Column {
    pub const ALL: [Column; 3] = [Column::Afxdp, Column::Socket, Column::Wggo];

    pub fn as_str(self) -> &'static str {
        match self {
            Column::Afxdp => "afxdp",
            Column::Socket => "socket",
            Column::Wggo => "wggo",
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `cargo xtask bench` options.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Inner IPv4 packet sizes in bytes (inner IP header to the end of the payload).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 512, 1420])]
    pub sizes: Vec<usize>,
    /// Queue counts (veth queues = gateway workers = generator and sink threads).
    /// Default: 1 and the number of cores.
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<u32>,
    /// Measured time per case, e.g. 3s or 1500ms.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Traffic before each measurement (not counted), e.g. 500ms.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Which forwarders to measure.
    #[arg(long, value_delimiter = ',', default_values_t = Column::ALL)]
    pub only: Vec<Column>,
    /// Distinct inner 5-tuples.
    #[arg(long, default_value_t = 64)]
    pub flows: u32,
    /// Transits per gatewan gateway; tunnels = transits x transits (1 or 2).
    #[arg(long, default_value_t = 2)]
    pub transits: usize,
    /// Offered packets per second; 0 = as fast as the generator can send.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// A previous run's JSON: print this run's rates and CPU against it.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Use the release binaries already in target/release.
    #[arg(long)]
    pub no_build: bool,
    /// For the afxdp column, attach gatewan's XDP program (passing everything) to the veth
    /// ends facing the gateways too (generator, router, sink), with `gatewan xdp-watch`:
    /// XDP_REDIRECT or XDP_TX into a veth needs a program on its peer; AF_XDP copy-mode
    /// transmission does not (docs/afxdp.md).
    #[arg(long)]
    pub peer_xdp: bool,
    /// Run gatewan's socket backend without UDP GSO (`dataplane.gso: false`): its
    /// one-datagram-per-message batches, as AF_XDP sends them.
    #[arg(long)]
    pub no_gso: bool,
    /// Ask for busy polling on gatewan's AF_XDP sockets (`dataplane.busy_poll: true`).
    #[arg(long)]
    pub busy_poll: bool,
    /// The generator sends through AF_XDP (`gatewan-pktgen gen --afxdp`) instead of
    /// sendmmsg: less of the machine goes to making traffic, more to forwarding it.
    #[arg(long)]
    pub gen_afxdp: bool,
    /// Report each case's throughput as the highest offered rate carried with at most
    /// --max-loss percent lost (RFC 2544 style, by bisection below the overload rate)
    /// instead of what gets through when the generator sends flat out.
    #[arg(long)]
    pub search: bool,
    /// The loss a --search trial may have and still pass, in percent.
    #[arg(long, default_value_t = 0.1)]
    pub max_loss: f64,
}

/// What one case runs with (the parts of [`BenchArgs`] the runner needs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub queues: Vec<u32>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub flows: u32,
    pub transits: usize,
    pub rate_pps: u64,
    #[serde(default)]
    pub peer_xdp: bool,
    #[serde(default)]
    pub no_gso: bool,
    #[serde(default)]
    pub busy_poll: bool,
    #[serde(default)]
    pub gen_afxdp: bool,
    #[serde(default)]
    pub search: bool,
    #[serde(default)]
    pub max_loss_pct: f64,
}

impl Options {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }
}

/// Accepts `3`, `3s`, `1.5s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 3s or 500ms"))?;
    if !value.is_finite() || value <= 0.0 || value * scale > 3600.0 {
        return Err(format!("{s:?}: must be above 0 and at most an hour"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// The two gateways (and the leaves they serve).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn index(self) -> u8 {
        match self {
            Side::A => 1,
            Side::B => 2,
        }
    }
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    fn letter(self) -> char {
        match self {
            Side::A => 'a',
            Side::B => 'b',
        }
    }
    pub fn name(self) -> String {
        format!("bench-{}", self.letter())
    }
    /// The gateway's VTEP address on its fabric veth.
    pub fn vtep(self) -> String {
        format!("10.0.{}.1", self.index())
    }
    /// The gateway's router MAC: the inner destination MAC its leaf sends to.
    pub fn router_mac(self) -> String {
        format!("02:00:0a:00:0{}:01", self.index())
    }
    /// The gateway's address on the veth of its transit `t` (one veth per transit: the AF_XDP
    /// backend wants one interface per configured address).
    pub fn transit_addr(self, t: usize) -> String {
        format!("172.16.{}.1", self.transit_subnet(t))
    }
    /// The transit router's address facing this gateway's transit `t`.
    fn router_addr(self, t: usize) -> String {
        format!("172.16.{}.2", self.transit_subnet(t))
    }
    fn transit_subnet(self, t: usize) -> usize {
        usize::from(self.index()) * 10 + t
    }
    /// The prefix behind this gateway's leaf.
    pub fn local_prefix(self) -> &'static str {
        match self {
            Side::A => SRC_PREFIX,
            Side::B => DST_PREFIX,
        }
    }
    fn leaf_vtep(self) -> &'static str {
        match self {
            Side::A => GEN_VTEP,
            Side::B => SINK_VTEP,
        }
    }
    fn leaf_mac(self) -> &'static str {
        match self {
            Side::A => GEN_MAC,
            Side::B => SINK_MAC,
        }
    }
    fn transit_name(self, t: usize) -> String {
        format!("t{}{t}", self.letter())
    }
}

/// Everything one gatewan gateway's configuration depends on.
pub struct GatewayPlan<'a> {
    pub side: Side,
    pub private_key: &'a str,
    pub peer_public_key: &'a str,
    /// 1 or 2; the gateways keep transits x transits tunnels.
    pub transits: usize,
    /// `afxdp` or `socket`.
    pub backend: &'a str,
    pub workers: u32,
    /// UDP GSO on the socket backend.
    pub gso: bool,
    /// Busy polling on the AF_XDP sockets.
    pub busy_poll: bool,
    pub control_socket: &'a Path,
}

/// gateway.yaml for one side: its transits on the transit veth (one port each), a tunnel per
/// pair of transits carrying the other side's prefix, and a fabric whose local route sends
/// this side's prefix to its leaf (the generator's VTEP on A, the sink's on B).
pub fn gateway_yaml(p: &GatewayPlan<'_>) -> String {
    use gatewan_testbed::config::{self, ToYaml as _};
    let (me, peer) = (p.side, p.side.other());
    let transits = p.transits.clamp(1, 2);
    let mut tunnels = Vec::new();
    for t in 0..transits {
        for pt in 0..transits {
            // Tunnel k joins A's transit a and B's transit b, and has the same name and
            // addresses seen from either side.
            let (a, b) = match me {
                Side::A => (t, pt),
                Side::B => (pt, t),
            };
            let k = a * transits + b;
            let (mine, theirs) = match me {
                Side::A => (0, 1),
                Side::B => (1, 0),
            };
            tunnels.push(config::Tunnel {
                name: format!("bench{k}"),
                transit: me.transit_name(t),
                peer: peer.name(),
                peer_datacenter: format!("dc-{}", peer.letter()),
                peer_transit: Some(peer.transit_name(pt)),
                peer_public_key: p.peer_public_key.into(),
                peer_endpoint: Some(format!("{}:{}", peer.transit_addr(pt), WG_PORT + pt as u16)),
                address_v4: Some(format!("10.255.{k}.{mine}/31")),
                peer_address_v4: Some(format!("10.255.{k}.{theirs}")),
                echo_port: Some(7054 + u16::from(me.index())),
                peer_echo_port: Some(7054 + u16::from(peer.index())),
                networks: vec![peer.local_prefix().to_string()],
                ..Default::default()
            });
        }
    }
    let gateway = config::Gateway {
        name: me.name(),
        datacenter: format!("dc-{}", me.letter()),
        private_key: p.private_key.into(),
        control_socket: p.control_socket.to_path_buf(),
        probe: Some(config::Probe {
            interval: "100ms".into(),
            window: Some(100),
            timeout: None,
        }),
        transits: (0..transits)
            .map(|t| config::Transit {
                name: me.transit_name(t),
                listen: format!("{}:{}", me.transit_addr(t), WG_PORT + t as u16),
                capacity: Some("100Gbps".into()),
            })
            .collect(),
        tunnels,
        fabric: Some(config::Fabric {
            vtep: me.vtep().to_string(),
            router_mac: me.router_mac().to_string(),
            vni: VNI,
            local_routes: vec![config::LocalRoute {
                prefix: me.local_prefix().to_string(),
                vtep: me.leaf_vtep().to_string(),
                router_mac: me.leaf_mac().to_string(),
            }],
        }),
        dataplane: Some(config::Dataplane {
            backend: p.backend.into(),
            workers: Some(p.workers.max(1)),
            gso: Some(p.gso),
            busy_poll: Some(p.busy_poll),
        }),
        ..Default::default()
    };
    format!(
        "# {}: generated by cargo xtask bench\n{}",
        me.name(),
        gateway.to_yaml()
    )
}

/// What the generator sends in one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    pub size: usize,
    pub flows: u32,
    pub threads: u32,
    pub rate_pps: u64,
    pub duration: Duration,
    /// Send through AF_XDP on this interface (the generator's veth end).
    pub afxdp: Option<String>,
}

/// `gatewan-pktgen gen` arguments: VXLAN from leaf A to gateway A's VTEP, inner destination
/// MAC = A's router MAC, inner IPv4 UDP from [`SRC_PREFIX`] to [`DST_PREFIX`].
pub fn gen_args(t: &Traffic, json: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["gen".into()];
    let mut add = |k: &str, v: String| {
        args.push(format!("--{k}"));
        args.push(v);
    };
    add("dst", Side::A.vtep());
    add("vni", VNI.to_string());
    add("router-mac", Side::A.router_mac());
    add("leaf-mac", GEN_MAC.into());
    add("src-prefix", SRC_PREFIX.into());
    add("dst-prefix", DST_PREFIX.into());
    add("src-addrs", INNER_ADDRS.to_string());
    add("dst-addrs", INNER_ADDRS.to_string());
    add("flows", t.flows.to_string());
    add("size", t.size.to_string());
    add("proto", "udp".into());
    add("threads", t.threads.max(1).to_string());
    add("rate", t.rate_pps.to_string());
    add("duration", format!("{}ms", t.duration.as_millis().max(1)));
    add("json", json.display().to_string());
    if let Some(interface) = &t.afxdp {
        // The next hop (A's fabric end) comes from the generator's permanent ARP entry.
        add("afxdp", interface.clone());
        add("bind", GEN_VTEP.into());
    }
    args
}

/// `gatewan-pktgen sink` arguments: VXLAN on 4789 at the sink's VTEP, checking the VNI and
/// that the inner destination MAC is the one gateway B's local route writes.
pub fn sink_args(flows: u32, threads: u32, json: &Path) -> Vec<String> {
    [
        "sink",
        "--listen",
        &format!("{SINK_VTEP}:4789"),
        "--vni",
        &VNI.to_string(),
        "--inner-dst-mac",
        SINK_MAC,
        "--flows",
        &flows.to_string(),
        "--threads",
        &threads.max(1).to_string(),
        // An upper bound only: the runner stops the sink once the generator is done.
        "--duration",
        "600s",
        "--json",
        &json.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The release (or, in tests, debug) binaries the bench runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub gatewan: PathBuf,
    pub pktgen: PathBuf,
}

/// The five namespaces and their veths, torn down when dropped.
pub struct Topology {
    pub tb: Testbed,
    pub gen: Netns,
    pub gwa: Netns,
    pub gwb: Netns,
    pub sink: Netns,
    /// The generator's veth end (for `--gen-afxdp`).
    pub gen_if: String,
    /// The veth ends facing a gateway that belong to no gateway: the generator's, the sink's
    /// and the router's.
    pub peers: Vec<Link>,
}

impl Topology {
    /// gen -- gwa -- tr -- gwb -- sink, with one gateway-router veth per transit, every veth
    /// with `queues` queues, permanent neighbour entries on every link (no ARP on the measured
    /// path), the transit router forwarding. A gateway with two transits sends from each
    /// transit's address through that transit's veth (source routing, as a multihomed host).
    pub fn build(queues: u32, transits: usize) -> anyhow::Result<Topology> {
        let transits = transits.clamp(1, 2);
        let mut tb = Testbed::new()?;
        let gen = tb.add_netns("gen")?;
        let gwa = tb.add_netns("gwa")?;
        let tr = tb.add_netns("tr")?;
        let gwb = tb.add_netns("gwb")?;
        let sink = tb.add_netns("sink")?;
        tr.sysctl("net.ipv4.ip_forward", "1")?;

        let (gen_if, gwa_fabric) = tb.add_veth(&gen, &gwa, queues)?;
        let gen_name = gen_if.name.clone();
        let (gwb_fabric, sink_if) = tb.add_veth(&gwb, &sink, queues)?;
        // (gateway end, its address, peer end, its address)
        let mut pairs: Vec<(Link, String, Link, String)> = vec![
            (gwa_fabric, Side::A.vtep(), gen_if, GEN_VTEP.into()),
            (gwb_fabric, Side::B.vtep(), sink_if, SINK_VTEP.into()),
        ];
        for (side, ns) in [(Side::A, &gwa), (Side::B, &gwb)] {
            for t in 0..transits {
                let (gw_end, tr_end) = tb.add_veth(ns, &tr, queues)?;
                pairs.push((gw_end, side.transit_addr(t), tr_end, side.router_addr(t)));
            }
        }
        for (x, x_addr, y, y_addr) in &pairs {
            x.add_addr(&format!("{x_addr}/24"))?;
            y.add_addr(&format!("{y_addr}/24"))?;
            x.add_neighbor(y_addr, &y.mac()?)?;
            y.add_neighbor(x_addr, &x.mac()?)?;
        }
        for (side, ns) in [(Side::A, &gwa), (Side::B, &gwb)] {
            ns.route("172.16.0.0/16", &format!("via {}", side.router_addr(0)))?;
            for t in 1..transits {
                let table = (100 + t).to_string();
                ns.ip([
                    "rule",
                    "add",
                    "from",
                    &side.transit_addr(t),
                    "table",
                    &table,
                ])?;
                ns.route(
                    "172.16.0.0/16",
                    &format!("via {} table {table}", side.router_addr(t)),
                )?;
            }
        }
        let peers: Vec<Link> = pairs.into_iter().map(|(_, _, peer, _)| peer).collect();
        // Datagrams sent from a socket over veth carry a partial checksum that nothing would
        // finish for an AF_XDP receiver (docs/afxdp.md): the generator and the router compute
        // them in full instead, as a NIC would.
        for link in &peers {
            link.netns
                .exec("ethtool", ["-K", &link.name, "tx", "off"])
                .with_context(|| format!("ethtool -K {} tx off", link.name))?;
        }
        Ok(Topology {
            tb,
            gen,
            gwa,
            gwb,
            sink,
            gen_if: gen_name,
            peers,
        })
    }

    fn gateway_ns(&self, side: Side) -> &Netns {
        match side {
            Side::A => &self.gwa,
            Side::B => &self.gwb,
        }
    }
}

/// The processes forwarding between the two leaves: whose CPU is charged.
struct Forwarder {
    processes: Vec<ProcessId>,
    labels: Vec<String>,
    /// gatewan's control sockets, by gateway label: their gateway-wide counters say where a
    /// case lost what it lost.
    status: Vec<(String, PathBuf)>,
}

/// Starts gatewan on both gateways with `backend` and waits until every tunnel is
/// established. A gateway that exits (an unavailable backend) gives its last log line.
fn start_gatewan(
    topo: &mut Topology,
    bins: &Binaries,
    backend: Column,
    queues: u32,
    transits: usize,
    gso: bool,
    busy_poll: bool,
) -> anyhow::Result<Forwarder> {
    let keys = [WgKeys::generate()?, WgKeys::generate()?];
    let mut processes = Vec::new();
    let mut sockets = Vec::new();
    for (n, side) in [Side::A, Side::B].into_iter().enumerate() {
        let socket = topo.tb.dir().join(format!("{}.sock", side.name()));
        let yaml = gateway_yaml(&GatewayPlan {
            side,
            private_key: &keys[n].private,
            peer_public_key: &keys[1 - n].public,
            transits,
            backend: backend.as_str(),
            workers: queues,
            gso,
            busy_poll,
            control_socket: &socket,
        });
        let path = topo.tb.dir().join(format!("{}.yaml", side.name()));
        std::fs::write(&path, yaml)?;
        let ns = topo.gateway_ns(side).clone();
        let id = topo.tb.spawn(
            &ns,
            &bins.gatewan.display().to_string(),
            ["gateway", "--config", &path.display().to_string()],
        )?;
        processes.push(id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if !topo.tb.is_running(id) {
                bail!(
                    "gateway {} exited: {}",
                    side.name(),
                    last_line(&topo.tb.log(id))
                );
            }
            if Instant::now() > deadline {
                bail!("gateway {} did not come up in 30 s", side.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if backend == Column::Afxdp {
            // A gateway that runs sockets is not an AF_XDP measurement, whatever it was asked.
            if let Some(started) = started_backend(&topo.tb.log(id)) {
                if started != "afxdp" {
                    bail!(
                        "backend: afxdp asked for, but gateway {} started the {started} backend",
                        side.name()
                    );
                }
            }
        }
        sockets.push(socket);
    }
    let tunnels = transits.clamp(1, 2).pow(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    for ((socket, &id), side) in sockets.iter().zip(&processes).zip([Side::A, Side::B]) {
        loop {
            if !topo.tb.is_running(id) {
                bail!(
                    "gateway {} exited: {}",
                    side.name(),
                    last_line(&topo.tb.log(id))
                );
            }
            if established(&bins.gatewan, socket)? == tunnels {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the tunnels of gateway {} did not come up in 30 s: {}",
                    side.name(),
                    last_line(&topo.tb.log(id))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Forwarder {
        processes,
        labels: vec!["gatewan A".into(), "gatewan B".into()],
        status: ["A", "B"]
            .into_iter()
            .map(String::from)
            .zip(sockets)
            .collect(),
    })
}

/// Attaches gatewan's XDP program, with no endpoint configured (so it passes everything), in
/// native mode to every peer veth end, each held by a `gatewan xdp-watch` process.
fn attach_peer_xdp(topo: &mut Topology, bins: &Binaries) -> anyhow::Result<()> {
    for link in topo.peers.clone() {
        let id = topo.tb.spawn(
            &link.netns,
            &bins.gatewan.display().to_string(),
            [
                "xdp-watch",
                "--interface",
                &link.name,
                "--mode",
                "native",
                "--interval",
                "3600",
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !topo.tb.log(id).contains("XDP program attached") {
            if !topo.tb.is_running(id) || Instant::now() > deadline {
                bail!(
                    "attaching an XDP program to peer {}: {}",
                    link.name,
                    last_line(&topo.tb.log(id))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The backend a gateway says it started its forwarding workers on: `backend=NAME` in the
/// "forwarding workers started" line, or "socket" for builds that only had that backend.
pub fn started_backend(log: &str) -> Option<String> {
    let line = log
        .lines()
        .map(log_message)
        .find(|l| l.contains("forwarding workers started"))?;
    if line.contains("socket backend:") {
        return Some("socket".into());
    }
    let value = line.split("backend=").nth(1)?;
    let name: String = value
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// How many tunnels `gatewan status` shows as established (0 while the socket does not answer).
fn established(gatewan: &Path, socket: &Path) -> anyhow::Result<usize> {
    let out = Command::new(gatewan)
        .arg("status")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .output()?;
    if !out.status.success() {
        return Ok(0);
    }
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(all.as_array().map_or(0, |t| {
        t.iter().filter(|t| t["state"] == "Established").count()
    }))
}

/// wireguard-go on both gateways (one peer each, `GOMAXPROCS` = queues) with a kernel VXLAN
/// device in front: A's decapsulates the generator's traffic (its MAC is A's router MAC) and
/// the kernel routes it into the tunnel; B's encapsulates it towards the sink with the sink's
/// router MAC, as an EVPN RT5 route installs it (neighbour + fdb entries).
fn start_wggo(topo: &mut Topology, queues: u32) -> anyhow::Result<Forwarder> {
    for tool in ["wireguard-go", "wg"] {
        Need::Tool(tool).check()?;
    }
    let procs = queues.max(1).to_string();
    let env = [("GOMAXPROCS", procs.as_str())];
    let (gwa, gwb) = (topo.gwa.clone(), topo.gwb.clone());
    let wa = topo
        .tb
        .add_wireguard_go_env(&gwa, WG_PORT, &["10.255.0.0/31"], &env)?;
    let wb = topo
        .tb
        .add_wireguard_go_env(&gwb, WG_PORT, &["10.255.0.1/31"], &env)?;
    let a_endpoint = format!("{}:{WG_PORT}", Side::A.transit_addr(0)).parse()?;
    let b_endpoint = format!("{}:{WG_PORT}", Side::B.transit_addr(0)).parse()?;
    wa.set_peer(&WgPeer {
        public_key: &wb.keys.public,
        endpoint: Some(b_endpoint),
        allowed_ips: &[DST_PREFIX, "10.255.0.1/32"],
        ..WgPeer::default()
    })?;
    wb.set_peer(&WgPeer {
        public_key: &wa.keys.public,
        endpoint: Some(a_endpoint),
        allowed_ips: &[SRC_PREFIX, "10.255.0.0/32"],
        ..WgPeer::default()
    })?;
    for (side, ns) in [(Side::A, &gwa), (Side::B, &gwb)] {
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        for key in ["all", "default"] {
            ns.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
        }
        ns.add_vxlan("vx0", VNI, &side.vtep(), &side.router_mac(), None)?;
        ns.sysctl("net.ipv4.conf.vx0.rp_filter", "0")?;
    }
    gwa.route(DST_PREFIX, &format!("dev {}", wa.ifname))?;
    gwb.vxlan_remote("vx0", SINK_VTEP, SINK_MAC)?;
    gwb.route(DST_PREFIX, &format!("via {SINK_VTEP} dev vx0 onlink"))?;
    // The first ping makes the handshake.
    let deadline = Instant::now() + Duration::from_secs(15);
    while gwa
        .exec("ping", ["-c", "1", "-W", "1", "10.255.0.1"])
        .is_err()
    {
        if Instant::now() > deadline {
            bail!(
                "wireguard-go tunnel did not come up: {}",
                last_line(&topo.tb.log(wa.process))
            );
        }
    }
    Ok(Forwarder {
        processes: vec![wa.process, wb.process],
        labels: vec!["wireguard-go A".into(), "wireguard-go B".into()],
        status: Vec::new(),
    })
}

/// One measured case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Packets the generator sent, and distinct packets the sink received valid.
    pub sent: u64,
    pub delivered: u64,
    pub invalid: u64,
    #[serde(default)]
    pub invalid_by_reason: BTreeMap<String, u64>,
    pub reordered: u64,
    pub duplicates: u64,
    /// What the generator offered.
    pub offered_mpps: f64,
    /// Delivered: distinct valid packets over the sink's first-to-last time.
    pub mpps: f64,
    /// Inner IP bits delivered per second.
    pub gbps: f64,
    pub loss_pct: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU time of the forwarding processes (both gateways) during the generator's run.
    pub cpu_s: f64,
    pub cpu_ns_per_packet: f64,
    /// What each gatewan gateway counted during the case (`gatewan status --gateway`
    /// counters that moved): forwarded totals and drops by reason, so a loss has a place.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// With --search: what got through with the generator flat out (Mpps), and the trials
    /// (offered Mpps, loss %) the bisection ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload_mpps: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<(f64, f64)>,
}

/// One cell of the table: a forwarder, a size, a queue count; measured, or why not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub column: Column,
    pub size: usize,
    pub queues: u32,
    #[serde(default)]
    pub measure: Option<Measure>,
    #[serde(default)]
    pub error: Option<String>,
    /// Delivered Mpps over the socket backend's and over wireguard-go's in the same case.
    #[serde(default)]
    pub vs_socket: Option<f64>,
    #[serde(default)]
    pub vs_wggo: Option<f64>,
}

/// A whole run, as written to target/bench/.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub started: String,
    #[serde(default)]
    pub commit: Option<String>,
    pub cores: usize,
    pub kernel: String,
    pub options: Options,
    pub results: Vec<CaseResult>,
}

/// Measures one forwarder at one queue count over every size, in a topology of its own. A
/// forwarder that cannot start gives every one of its cases its error; so does a failed case
/// after which the forwarder is no longer running.
pub fn run_column(
    bins: &Binaries,
    column: Column,
    queues: u32,
    opts: &Options,
    progress: &mut dyn FnMut(&CaseResult),
) -> Vec<CaseResult> {
    let failed = |error: String| -> Vec<CaseResult> {
        opts.sizes
            .iter()
            .map(|&size| CaseResult {
                column,
                size,
                queues,
                measure: None,
                error: Some(error.clone()),
                vs_socket: None,
                vs_wggo: None,
            })
            .collect()
    };
    let mut topo = match Topology::build(queues, opts.transits) {
        Ok(t) => t,
        Err(e) => return failed(format!("topology: {e:#}")),
    };
    if column == Column::Afxdp && opts.peer_xdp {
        if let Err(e) = attach_peer_xdp(&mut topo, bins) {
            return failed(format!("{e:#}"));
        }
    }
    let started = match column {
        Column::Afxdp | Column::Socket => start_gatewan(
            &mut topo,
            bins,
            column,
            queues,
            opts.transits,
            !opts.no_gso,
            opts.busy_poll,
        ),
        Column::Wggo => start_wggo(&mut topo, queues),
    };
    let forwarder = match started {
        Ok(f) => f,
        Err(e) => {
            let results = failed(format!("{e:#}"));
            results.iter().for_each(&mut *progress);
            return results;
        }
    };
    let mut results = Vec::new();
    for &size in &opts.sizes {
        let measured = run_case(&mut topo, bins, &forwarder, size, queues, opts);
        let result = CaseResult {
            column,
            size,
            queues,
            error: measured.as_ref().err().map(|e| format!("{e:#}")),
            measure: measured.ok(),
            vs_socket: None,
            vs_wggo: None,
        };
        progress(&result);
        results.push(result);
    }
    results
}

fn run_case(
    topo: &mut Topology,
    bins: &Binaries,
    fwd: &Forwarder,
    size: usize,
    queues: u32,
    opts: &Options,
) -> anyhow::Result<Measure> {
    let gen_if = opts.gen_afxdp.then(|| topo.gen_if.clone());
    let at_rate = |duration, rate_pps| Traffic {
        size,
        flows: opts.flows,
        threads: queues,
        rate_pps,
        duration,
        afxdp: gen_if.clone(),
    };
    let traffic = |duration| at_rate(duration, opts.rate_pps);
    let dir = topo.tb.dir().to_path_buf();
    // Warm-up: the same traffic into a sink of its own, which must see some of it.
    let (warm, _) = send_and_sink(
        topo,
        bins,
        fwd,
        &traffic(opts.warmup()),
        queues,
        &dir.join(format!("warm-{size}")),
    )?;
    if warm["unique"].as_u64().unwrap_or(0) == 0 {
        bail!(
            "no packet crossed during the warm-up; {}",
            forwarder_logs(topo, fwd)
        );
    }
    let snapshot = || -> Vec<BTreeMap<String, u64>> {
        fwd.status
            .iter()
            .map(|(_, socket)| gateway_counters(&bins.gatewan, socket))
            .collect()
    };
    let before = snapshot();
    let (sink, (gen, cpu_ns)) = send_and_sink(
        topo,
        bins,
        fwd,
        &traffic(opts.duration()),
        queues,
        &dir.join(format!("run-{size}")),
    )?;
    for &id in &fwd.processes {
        if !topo.tb.is_running(id) {
            bail!("a forwarder exited; {}", forwarder_logs(topo, fwd));
        }
    }
    let mut m = measure(&gen, &sink, cpu_ns);
    if !fwd.status.is_empty() {
        // The gateways publish their counters once a second.
        std::thread::sleep(STATUS_REFRESH);
        for (((label, _), before), after) in fwd.status.iter().zip(&before).zip(snapshot()) {
            m.counters
                .insert(label.clone(), counter_deltas(before, &after));
        }
    }
    if !opts.search {
        return Ok(m);
    }
    // Bisection between half of what got through flat out and what the generator offered,
    // starting from what got through: loss-free rates sit a little below it.
    let mut rate = (m.mpps * 1e6).min(m.offered_mpps * 1e6);
    let (mut lo, mut hi) = (rate / 2.0, m.offered_mpps * 1e6);
    let mut best: Option<Measure> = None;
    let mut trials = Vec::new();
    for step in 0..SEARCH_STEPS {
        if rate < f64::from(queues.max(1)) {
            break;
        }
        let (sink, (gen, cpu_ns)) = send_and_sink(
            topo,
            bins,
            fwd,
            &at_rate(opts.duration(), rate as u64),
            queues,
            &dir.join(format!("search-{size}-{step}")),
        )?;
        let trial = measure(&gen, &sink, cpu_ns);
        trials.push((trial.offered_mpps, trial.loss_pct));
        if trial.loss_pct <= opts.max_loss_pct {
            lo = rate;
            if best.as_ref().is_none_or(|b| trial.mpps > b.mpps) {
                best = Some(trial);
            }
        } else {
            hi = rate;
        }
        rate = (lo + hi) / 2.0;
    }
    let Some(mut best) = best else {
        bail!(
            "no rate tried lost at most {} % (offered Mpps, loss %: {trials:?})",
            opts.max_loss_pct
        );
    };
    best.overload_mpps = Some(m.mpps);
    best.trials = trials;
    Ok(best)
}

/// Starts a sink, runs the generator to completion, stops the sink. Returns the sink's and
/// the generator's JSON reports and the forwarders' CPU nanoseconds over the generator's run.
fn send_and_sink(
    topo: &mut Topology,
    bins: &Binaries,
    fwd: &Forwarder,
    traffic: &Traffic,
    threads: u32,
    stem: &Path,
) -> anyhow::Result<(serde_json::Value, (serde_json::Value, u64))> {
    let sink_json = stem.with_extension("sink.json");
    let gen_json = stem.with_extension("gen.json");
    let pktgen = bins.pktgen.display().to_string();
    let sink_ns = topo.sink.clone();
    let sink = topo.tb.spawn(
        &sink_ns,
        &pktgen,
        sink_args(traffic.flows, threads, &sink_json),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !topo.tb.log(sink).contains("sink receiving") {
        if !topo.tb.is_running(sink) || Instant::now() > deadline {
            bail!("the sink did not start: {}", last_line(&topo.tb.log(sink)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids: Vec<u32> = fwd.processes.iter().map(|p| p.0).collect();
    let before = cpu_ns(&pids)?;
    let out = topo
        .gen
        .output(&pktgen, gen_args(traffic, &gen_json))
        .context("running the generator")?;
    let after = cpu_ns(&pids)?;
    std::thread::sleep(DRAIN);
    topo.tb.stop(sink, Duration::from_secs(5));
    if !out.status.success() {
        bail!(
            "the generator failed ({}): {}",
            out.status,
            last_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let read = |path: &Path| -> anyhow::Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    Ok((
        read(&sink_json)?,
        (read(&gen_json)?, after.saturating_sub(before)),
    ))
}

/// The table's figures from the generator's and the sink's reports.
pub fn measure(gen: &serde_json::Value, sink: &serde_json::Value, cpu_ns: u64) -> Measure {
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let sent = u(&gen["packets"]);
    let delivered = u(&sink["unique"]);
    let elapsed = f(&sink["elapsed_s"]);
    let mpps = if elapsed > 0.0 {
        delivered as f64 / elapsed / 1e6
    } else {
        0.0
    };
    let invalid_by_reason = sink["invalid_by_reason"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), u(v))).collect())
        .unwrap_or_default();
    Measure {
        sent,
        delivered,
        invalid: u(&sink["invalid"]),
        invalid_by_reason,
        reordered: u(&sink["reordered"]),
        duplicates: u(&sink["duplicates"]),
        offered_mpps: f(&gen["pps"]) / 1e6,
        mpps,
        gbps: f(&sink["gbps_inner"]),
        loss_pct: if sent == 0 {
            0.0
        } else {
            sent.saturating_sub(delivered) as f64 * 100.0 / sent as f64
        },
        p50_us: f(&sink["latency"]["p50_ns"]) / 1e3,
        p99_us: f(&sink["latency"]["p99_ns"]) / 1e3,
        cpu_s: cpu_ns as f64 / 1e9,
        cpu_ns_per_packet: if delivered == 0 {
            0.0
        } else {
            cpu_ns as f64 / delivered as f64
        },
        counters: BTreeMap::new(),
        overload_mpps: None,
        trials: Vec::new(),
    }
}

/// The gateway-wide counters of the gateway behind `socket` (empty when it does not answer).
fn gateway_counters(gatewan: &Path, socket: &Path) -> BTreeMap<String, u64> {
    let Ok(out) = Command::new(gatewan)
        .args(["status", "--gateway", "--json", "--socket"])
        .arg(socket)
        .output()
    else {
        return BTreeMap::new();
    };
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all["counters"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The counters that moved from `before` to `after`.
pub fn counter_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, &v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// CPU nanoseconds (user + system, every thread) the processes have used so far.
fn cpu_ns(pids: &[u32]) -> anyhow::Result<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tick_ns = 1_000_000_000 / u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100);
    let mut total = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        let ticks = proc_stat_ticks(&stat).context("unexpected /proc/<pid>/stat")?;
        total = total.saturating_add(ticks.saturating_mul(tick_ns));
    }
    Ok(total)
}

/// utime + stime (fields 14 and 15, clock ticks) of a /proc/<pid>/stat line. The command name
/// may hold spaces and parentheses, so fields count from the last `)`.
pub fn proc_stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

fn forwarder_logs(topo: &Topology, fwd: &Forwarder) -> String {
    fwd.processes
        .iter()
        .zip(&fwd.labels)
        .map(|(&id, label)| format!("{label}: {}", last_line(&topo.tb.log(id))))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The last non-empty line of a log, as [`log_message`] gives it.
pub fn last_line(log: &str) -> String {
    log.lines()
        .map(log_message)
        .rfind(|l| !l.is_empty())
        .unwrap_or_else(|| "(no output)".into())
}

/// A log line without terminal colours and without tracing's leading timestamp, so that the
/// same error from two runs reads the same.
pub fn log_message(line: &str) -> String {
    let line = strip_ansi(line);
    let mut parts = line.splitn(2, char::is_whitespace);
    let first = parts.next().unwrap_or_default();
    let is_timestamp = first.len() >= 20
        && first.ends_with('Z')
        && first.as_bytes().get(4) == Some(&b'-')
        && first.contains('T');
    if is_timestamp {
        parts.next().unwrap_or_default().trim().to_owned()
    } else {
        line
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), as tracing writes colours to log files.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// Fills each measured case's ratios against the socket backend and wireguard-go measured in
/// the same run with the same size and queues.
pub fn fill_ratios(results: &mut [CaseResult]) {
    let base = |results: &[CaseResult], column, size, queues| -> Option<f64> {
        results
            .iter()
            .find(|r| r.column == column && r.size == size && r.queues == queues)
            .and_then(|r| r.measure.as_ref())
            .map(|m| m.mpps)
            .filter(|&m| m > 0.0)
    };
    let bases: Vec<(Option<f64>, Option<f64>)> = results
        .iter()
        .map(|r| {
            (
                base(results, Column::Socket, r.size, r.queues),
                base(results, Column::Wggo, r.size, r.queues),
            )
        })
        .collect();
    for (r, (socket, wggo)) in results.iter_mut().zip(bases) {
        let mpps = r.measure.as_ref().map(|m| m.mpps);
        r.vs_socket = mpps.zip(socket).map(|(m, b)| m / b);
        r.vs_wggo = mpps.zip(wggo).map(|(m, b)| m / b);
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The results as a Markdown table (what docs/benchmarks.md quotes), then the reasons for the
/// cases that could not be measured, numbered.
pub fn table(results: &[CaseResult]) -> String {
    let mut out = String::from(
        "| inner size | queues | forwarder | Mpps | Gbit/s | loss % | p50 µs | p99 µs | CPU ns/pkt | vs socket | vs wg-go |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut notes: Vec<String> = Vec::new();
    let mut sorted: Vec<&CaseResult> = results.iter().collect();
    sorted.sort_by_key(|r| (r.queues, r.size, r.column));
    for r in sorted {
        let _ = write!(out, "| {} B | {} | {} |", r.size, r.queues, r.column);
        match (&r.measure, &r.error) {
            (Some(m), _) => {
                let _ = writeln!(
                    out,
                    " {:.3} | {:.3} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {} |",
                    m.mpps,
                    m.gbps,
                    m.loss_pct,
                    m.p50_us,
                    m.p99_us,
                    m.cpu_ns_per_packet,
                    ratio(r.vs_socket),
                    ratio(r.vs_wggo)
                );
            }
            (None, error) => {
                let error = error.clone().unwrap_or_else(|| "not measured".into());
                let n = match notes.iter().position(|e| *e == error) {
                    Some(i) => i + 1,
                    None => {
                        notes.push(error);
                        notes.len()
                    }
                };
                let _ = writeln!(out, " unavailable [{n}] | | | | | | | |");
            }
        }
    }
    for (i, note) in notes.iter().enumerate() {
        let _ = writeln!(out, "\n[{}] {note}", i + 1);
    }
    out
}

/// This run against an older one: delivered Mpps and CPU per packet, new over old, for the
/// cases both measured.
pub fn compare(old: &Report, new: &Report) -> String {
    let mut out = String::from(
        "| inner size | queues | forwarder | Mpps now | Mpps then | now/then | CPU ns/pkt now/then |\n\
         |---:|---:|---|---:|---:|---:|---:|\n",
    );
    let mut any = false;
    for r in &new.results {
        let Some(m) = &r.measure else { continue };
        let Some(o) = old
            .results
            .iter()
            .find(|o| o.column == r.column && o.size == r.size && o.queues == r.queues)
            .and_then(|o| o.measure.as_ref())
        else {
            continue;
        };
        any = true;
        let div = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
        let _ = writeln!(
            out,
            "| {} B | {} | {} | {:.3} | {:.3} | {} | {} |",
            r.size,
            r.queues,
            r.column,
            m.mpps,
            o.mpps,
            ratio(div(m.mpps, o.mpps)),
            ratio(div(m.cpu_ns_per_packet, o.cpu_ns_per_packet))
        );
    }
    if !any {
        out.push_str("(no case was measured in both runs)\n");
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC), for file names that sort by time.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after H. Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    setup::run()?;
    Need::Root
        .check()
        .context("the bench builds network namespaces")?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut queues = if args.queues.is_empty() {
        vec![1, cores as u32]
    } else {
        args.queues.clone()
    };
    queues.retain(|&q| q > 0);
    queues.dedup();
    anyhow::ensure!(
        !queues.is_empty() && !args.sizes.is_empty() && !args.only.is_empty(),
        "nothing to measure"
    );
    let mut only = args.only.clone();
    only.sort();
    only.dedup();
    let opts = Options {
        sizes: args.sizes.clone(),
        queues: queues.clone(),
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        flows: args.flows.max(1),
        transits: args.transits.clamp(1, 2),
        rate_pps: args.rate,
        peer_xdp: args.peer_xdp,
        no_gso: args.no_gso,
        busy_poll: args.busy_poll,
        gen_afxdp: args.gen_afxdp,
        search: args.search,
        max_loss_pct: args.max_loss.max(0.0),
    };
    let old = match &args.compare {
        Some(path) => Some(read_report(path)?),
        None => None,
    };

    if !args.no_build {
        println!("bench: building gatewan and gatewan-pktgen (release)");
        run_cmd(
            Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--bin",
                    "gatewan",
                    "--bin",
                    "gatewan-pktgen",
                ])
                .env("GATEWAN_REQUIRE_EBPF", "1"),
        )?;
    }
    let root = std::env::current_dir()?;
    let bins = Binaries {
        gatewan: root.join("target/release/gatewan"),
        pktgen: root.join("target/release/gatewan-pktgen"),
    };
    for b in [&bins.gatewan, &bins.pktgen] {
        anyhow::ensure!(b.is_file(), "{} is missing", b.display());
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let started = utc_stamp(now);
    println!(
        "bench: {} sizes x {} queue counts x {} forwarders, {:.1} s each after {:.1} s of warm-up, {} flows, {} cores",
        opts.sizes.len(),
        queues.len(),
        only.len(),
        opts.duration_s,
        opts.warmup_s,
        opts.flows,
        cores
    );
    if opts.search {
        println!(
            "bench: --search: each case reports the highest offered rate lost at most {} % ({SEARCH_STEPS} trials after the flat-out one)",
            opts.max_loss_pct
        );
    }
    let t0 = Instant::now();
    let mut results = Vec::new();
    for &q in &queues {
        for &column in &only {
            println!("bench: {column}, {q} queue(s): setting up");
            let mut progress = |r: &CaseResult| match (&r.measure, &r.error) {
                (Some(m), _) => {
                    println!(
                        "bench: {} {} B q={}: {:.3} Mpps delivered of {:.3} offered, {:.3} Gbit/s, loss {:.1} %, p50 {:.0} µs, p99 {:.0} µs, {:.0} CPU ns/pkt{}",
                        r.column, r.size, r.queues, m.mpps, m.offered_mpps, m.gbps, m.loss_pct,
                        m.p50_us, m.p99_us, m.cpu_ns_per_packet,
                        if m.invalid > 0 { format!(", {} INVALID {:?}", m.invalid, m.invalid_by_reason) } else { String::new() }
                    );
                    if let Some(flat_out) = m.overload_mpps {
                        let trials: Vec<String> = m
                            .trials
                            .iter()
                            .map(|(offered, loss)| format!("{offered:.3}:{loss:.1}%"))
                            .collect();
                        println!(
                            "bench:   loss-free rate above; flat out {flat_out:.3} Mpps got through; trials (offered Mpps:loss) {}",
                            trials.join(" ")
                        );
                    }
                    for (gateway, counters) in &m.counters {
                        let line: Vec<String> =
                            counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        println!("bench:   gateway {gateway}: {}", line.join(" "));
                    }
                }
                (None, e) => println!(
                    "bench: {} {} B q={}: unavailable: {}",
                    r.column,
                    r.size,
                    r.queues,
                    e.as_deref().unwrap_or("?")
                ),
            };
            results.extend(run_column(&bins, column, q, &opts, &mut progress));
        }
    }
    fill_ratios(&mut results);
    let report = Report {
        started: started.clone(),
        commit: git_commit(),
        cores,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        options: opts,
        results,
    };
    println!(
        "\nbench: done in {:.0} s ({} cores, kernel {})\n",
        t0.elapsed().as_secs_f64(),
        cores,
        report.kernel
    );
    print!("{}", table(&report.results));

    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let text = serde_json::to_string_pretty(&report)? + "\n";
    let path = dir.join(format!("{started}.json"));
    std::fs::write(&path, &text)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    println!(
        "\nbench: wrote {} and target/bench/latest.json",
        path.strip_prefix(&root).unwrap_or(&path).display()
    );
    if let (Some(old), Some(path)) = (old, &args.compare) {
        println!("\nbench: against {} ({})\n", path.display(), old.started);
        print!("{}", compare(&old, &report));
    }
    Ok(())
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a bench report", path.display()))
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use clap::Parser;
    use gatewan_control::gateway::config::{Backend, GatewayConfig};
    use serde_json::json;

    use super::*;

    const KEY_A: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    const KEY_B: &str = "ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";

    fn config(side: Side, transits: usize, backend: &str, workers: u32) -> GatewayConfig {
        let socket = PathBuf::from(format!("/tmp/{}.sock", side.name()));
        let (mine, theirs) = match side {
            Side::A => (KEY_A, KEY_B),
            Side::B => (KEY_B, KEY_A),
        };
        let yaml = gateway_yaml(&GatewayPlan {
            side,
            private_key: mine,
            peer_public_key: theirs,
            transits,
            backend,
            workers,
            gso: true,
            busy_poll: false,
            control_socket: &socket,
        });
        GatewayConfig::parse(&yaml, Path::new("gateway.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    /// The value after `flag` in an argument list.
    fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
        &args[i + 1]
    }

    #[test]
    fn gateway_configs_parse_and_mirror_each_other() {
        for transits in [1, 2] {
            let a = config(Side::A, transits, "afxdp", 2);
            let b = config(Side::B, transits, "socket", 1);
            assert_eq!(a.dataplane.backend, Backend::Afxdp);
            assert_eq!(a.dataplane.workers(), 2);
            assert_eq!(b.dataplane.backend, Backend::Socket);
            assert_eq!(b.dataplane.workers(), 1);
            assert_eq!(a.transits.len(), transits);
            assert_eq!(a.tunnels.len(), transits * transits);
            assert_eq!(b.tunnels.len(), transits * transits);
            assert_eq!(a.control_socket, Path::new("/tmp/bench-a.sock"));

            // Each tunnel exists on both sides under one name, with swapped addresses, and
            // points at a transit the other side listens on.
            let listens = |c: &GatewayConfig| -> Vec<SocketAddr> {
                c.transits.iter().map(|t| t.listen).collect()
            };
            let b_tunnels: HashMap<&str, _> =
                b.tunnels.iter().map(|t| (t.name.as_str(), t)).collect();
            for ta in &a.tunnels {
                let tb = b_tunnels[ta.name.as_str()];
                assert_eq!(ta.peer_address_v4, tb.address_v4.map(|n| n.addr()));
                assert_eq!(tb.peer_address_v4, ta.address_v4.map(|n| n.addr()));
                assert!(listens(&b).contains(&ta.peer_endpoint.unwrap()));
                assert!(listens(&a).contains(&tb.peer_endpoint.unwrap()));
                // The transit a tunnel runs on is the one the peer names as its peer transit.
                assert_eq!(
                    tb.peer_transit.as_deref(),
                    Some(a.transits[ta.transit].name.as_str())
                );
                assert_eq!(ta.networks, vec![DST_PREFIX.parse().unwrap()]);
                assert_eq!(tb.networks, vec![SRC_PREFIX.parse().unwrap()]);
            }
            // All tunnels distinct: (our transit, peer transit) pairs cover the product.
            let mut pairs: Vec<(usize, Option<String>)> = a
                .tunnels
                .iter()
                .map(|t| (t.transit, t.peer_transit.clone()))
                .collect();
            pairs.sort();
            pairs.dedup();
            assert_eq!(pairs.len(), transits * transits);
        }
    }

    #[test]
    fn generator_and_sink_agree_with_the_gateways() {
        let a = config(Side::A, 2, "socket", 1);
        let b = config(Side::B, 2, "socket", 1);
        let fa = a.fabric.as_ref().unwrap();
        let fb = b.fabric.as_ref().unwrap();

        let gen = gen_args(
            &Traffic {
                size: 1420,
                flows: 64,
                threads: 2,
                rate_pps: 0,
                duration: Duration::from_millis(2500),
                afxdp: None,
            },
            Path::new("/tmp/g.json"),
        );
        assert_eq!(gen[0], "gen");
        // The generator sends to A's VTEP, with A's router MAC and the fabric's VNI.
        assert_eq!(flag(&gen, "--dst"), fa.vtep.to_string());
        assert_eq!(flag(&gen, "--router-mac"), fa.router_mac.to_string());
        assert_eq!(flag(&gen, "--vni"), fa.vni.to_string());
        assert_eq!(flag(&gen, "--size"), "1420");
        assert_eq!(flag(&gen, "--threads"), "2");
        assert_eq!(flag(&gen, "--rate"), "0");
        assert_eq!(flag(&gen, "--duration"), "2500ms");
        // A's local route leads back to the generator, B's to the sink.
        let (prefix, route) = &fa.local_routes[0];
        assert_eq!(prefix.to_string(), flag(&gen, "--src-prefix"));
        assert_eq!(route.vtep.to_string(), GEN_VTEP);
        assert_eq!(route.router_mac.to_string(), flag(&gen, "--leaf-mac"));

        let sink = sink_args(64, 2, Path::new("/tmp/s.json"));
        assert_eq!(sink[0], "sink");
        let (prefix, route) = &fb.local_routes[0];
        assert_eq!(prefix.to_string(), flag(&gen, "--dst-prefix"));
        assert_eq!(flag(&sink, "--listen"), format!("{}:4789", route.vtep));
        // The sink checks the MAC and VNI that B's local route writes.
        assert_eq!(flag(&sink, "--inner-dst-mac"), route.router_mac.to_string());
        assert_eq!(flag(&sink, "--vni"), route.vni.to_string());
        assert_eq!(flag(&sink, "--flows"), flag(&gen, "--flows"));
        assert_eq!(flag(&sink, "--json"), "/tmp/s.json");
    }

    #[test]
    fn measure_charges_cpu_to_delivered_packets() {
        let gen = json!({ "packets": 1000, "pps": 500000.0 });
        let sink = json!({
            "unique": 800, "invalid": 3, "invalid_by_reason": { "vni_mismatch": 3 },
            "reordered": 5, "duplicates": 0, "elapsed_s": 0.002, "gbps_inner": 1.5,
            "latency": { "p50_ns": 12000, "p99_ns": 90000 }
        });
        let m = measure(&gen, &sink, 4_000_000);
        assert_eq!(
            (m.sent, m.delivered, m.invalid, m.reordered),
            (1000, 800, 3, 5)
        );
        assert_eq!(m.invalid_by_reason["vni_mismatch"], 3);
        assert!((m.mpps - 0.4).abs() < 1e-9, "{}", m.mpps);
        assert!((m.offered_mpps - 0.5).abs() < 1e-9);
        assert!((m.loss_pct - 20.0).abs() < 1e-9);
        assert!((m.p50_us - 12.0).abs() < 1e-9 && (m.p99_us - 90.0).abs() < 1e-9);
        assert!((m.cpu_ns_per_packet - 5000.0).abs() < 1e-9);
        assert!((m.cpu_s - 0.004).abs() < 1e-12);

        // Nothing delivered: no division by zero, all lost.
        let m = measure(&gen, &json!({}), 1);
        assert_eq!((m.mpps, m.cpu_ns_per_packet, m.loss_pct), (0.0, 0.0, 100.0));
    }

    fn case(column: Column, size: usize, queues: u32, mpps: Option<f64>) -> CaseResult {
        CaseResult {
            column,
            size,
            queues,
            measure: mpps.map(|mpps| Measure {
                sent: 10,
                delivered: 10,
                invalid: 0,
                invalid_by_reason: BTreeMap::new(),
                reordered: 0,
                duplicates: 0,
                offered_mpps: mpps,
                mpps,
                gbps: mpps * 4.0,
                loss_pct: 0.0,
                p50_us: 10.0,
                p99_us: 20.0,
                cpu_s: 1.0,
                cpu_ns_per_packet: 1000.0 / mpps,
                counters: BTreeMap::new(),
                overload_mpps: None,
                trials: Vec::new(),
            }),
            error: mpps.is_none().then(|| "backend unavailable".to_owned()),
            vs_socket: None,
            vs_wggo: None,
        }
    }

    #[test]
    fn ratios_compare_within_the_same_size_and_queues() {
        let mut r = vec![
            case(Column::Afxdp, 64, 1, Some(0.9)),
            case(Column::Socket, 64, 1, Some(0.3)),
            case(Column::Wggo, 64, 1, Some(0.1)),
            case(Column::Afxdp, 64, 2, None),
            case(Column::Socket, 64, 2, Some(0.5)),
            case(Column::Socket, 512, 1, Some(0.2)),
        ];
        fill_ratios(&mut r);
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(close(r[0].vs_socket, 3.0) && close(r[0].vs_wggo, 9.0));
        assert!(close(r[1].vs_socket, 1.0) && close(r[1].vs_wggo, 3.0));
        assert!(close(r[2].vs_wggo, 1.0));
        assert_eq!((r[3].vs_socket, r[3].vs_wggo), (None, None));
        // No wireguard-go at 2 queues or at 512 B: no ratio rather than a wrong one.
        assert!(close(r[4].vs_socket, 1.0) && r[4].vs_wggo.is_none());
        assert!(close(r[5].vs_socket, 1.0) && r[5].vs_wggo.is_none());

        let t = table(&r);
        assert!(
            t.contains(
                "| 64 B | 1 | afxdp | 0.900 | 3.600 | 0.0 | 10 | 20 | 1111 | 3.00x | 9.00x |"
            ),
            "{t}"
        );
        assert!(t.contains("| 64 B | 2 | afxdp | unavailable [1] |"), "{t}");
        assert!(t.contains("[1] backend unavailable"), "{t}");
        // Ordered by queues, then size, then forwarder.
        let at = |s: &str| t.find(s).unwrap();
        assert!(at("| 64 B | 1 | wggo") < at("| 512 B | 1 | socket"));
        assert!(at("| 512 B | 1 | socket") < at("| 64 B | 2 | afxdp"));
    }

    fn report(results: Vec<CaseResult>) -> Report {
        Report {
            started: utc_stamp(0),
            commit: Some("abc1234".into()),
            cores: 2,
            kernel: "6.18".into(),
            options: Options {
                sizes: vec![64],
                queues: vec![1, 2],
                duration_s: 3.0,
                warmup_s: 0.5,
                flows: 64,
                transits: 2,
                rate_pps: 0,
                peer_xdp: false,
                no_gso: false,
                busy_poll: false,
                gen_afxdp: false,
                search: false,
                max_loss_pct: 0.1,
            },
            results,
        }
    }

    #[test]
    fn reports_round_trip_and_compare() {
        let old = report(vec![
            case(Column::Socket, 64, 1, Some(0.2)),
            case(Column::Wggo, 64, 1, Some(0.1)),
        ]);
        let text = serde_json::to_string_pretty(&old).unwrap();
        assert!(text.contains("\"column\": \"socket\""));
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, old);

        let new = report(vec![
            case(Column::Socket, 64, 1, Some(0.3)),
            case(Column::Wggo, 64, 1, None),
            case(Column::Afxdp, 64, 1, Some(0.9)),
        ]);
        let c = compare(&old, &new);
        assert!(
            c.contains("| 64 B | 1 | socket | 0.300 | 0.200 | 1.50x | 0.67x |"),
            "{c}"
        );
        assert!(!c.contains("wggo") && !c.contains("afxdp"), "{c}");
        assert!(compare(&old, &report(vec![])).contains("no case"));
    }

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_700_000_000), "20231114T221320Z");
        // 2100 is not a leap year.
        assert_eq!(utc_stamp(4_107_542_399), "21000228T235959Z");
        assert_eq!(utc_stamp(4_107_542_400), "21000301T000000Z");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "0s", "-1s", "fast", "2h", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_options_parse() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let d = Cli::try_parse_from(["bench"]).unwrap().bench;
        assert_eq!(d.sizes, vec![64, 512, 1420]);
        assert_eq!(d.only, Column::ALL.to_vec());
        assert!(d.queues.is_empty());
        assert_eq!(d.duration, Duration::from_secs(3));
        let a = Cli::try_parse_from([
            "bench",
            "--only",
            "socket,wggo",
            "--sizes",
            "64",
            "--queues",
            "1,2",
            "--duration",
            "1500ms",
            "--compare",
            "old.json",
        ])
        .unwrap()
        .bench;
        assert_eq!(a.only, vec![Column::Socket, Column::Wggo]);
        assert_eq!((a.sizes, a.queues), (vec![64], vec![1, 2]));
        assert_eq!(a.duration, Duration::from_millis(1500));
        assert_eq!(a.compare, Some(PathBuf::from("old.json")));
        assert!(Cli::try_parse_from(["bench", "--only", "kernel"]).is_err());
    }

    #[test]
    fn proc_stat_fields_count_from_the_last_parenthesis() {
        let stat = "4242 (gate) (wan x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(proc_stat_ticks(stat), Some(325));
        assert_eq!(proc_stat_ticks("4242 (x) S 1"), None);
        assert_eq!(proc_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn log_lines_lose_their_colours_and_timestamps() {
        let log = "first\n\u{1b}[2m2026-11-24T15:03:29.778513Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m AF_XDP: unavailable\n\n";
        assert_eq!(last_line(log), "ERROR AF_XDP: unavailable");
        assert_eq!(
            last_line("gatewan: no such file\n"),
            "gatewan: no such file"
        );
        assert_eq!(last_line(""), "(no output)");
    }

    #[test]
    fn the_started_backend_is_read_from_the_gateway_log() {
        let old = "2026-11-24T15:03:29.778513Z  INFO gatewan_control::gateway::runtime: socket backend: forwarding workers started workers=1 batch=64 gso=true";
        assert_eq!(started_backend(old).as_deref(), Some("socket"));
        let new = "x\n\u{1b}[2m2026-11-24T15:03:29Z\u{1b}[0m INFO gatewan_control::gateway::runtime: forwarding workers started backend=\"afxdp\" workers=2 batch=64\n";
        assert_eq!(started_backend(new).as_deref(), Some("afxdp"));
        let plain = "INFO x: forwarding workers started backend=socket workers=2";
        assert_eq!(started_backend(plain).as_deref(), Some("socket"));
        assert_eq!(started_backend("INFO fabric up"), None);
    }

    /// Binaries built in this test's profile (debug), so the smoke test runs today's code.
    fn debug_binaries() -> Binaries {
        let exe = std::env::current_exe().expect("test executable");
        // target/<profile>/deps/xtask-<hash>
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .current_dir(root)
            .args([
                "build",
                "--quiet",
                "--bin",
                "gatewan",
                "--bin",
                "gatewan-pktgen",
            ])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building gatewan and gatewan-pktgen");
        Binaries {
            gatewan: profile.join("gatewan"),
            pktgen: profile.join("gatewan-pktgen"),
        }
    }

    #[test]
    fn counter_deltas_keep_what_moved() {
        let before: BTreeMap<String, u64> = [("a".to_owned(), 5), ("b".to_owned(), 7)]
            .into_iter()
            .collect();
        let after: BTreeMap<String, u64> = [
            ("a".to_owned(), 9),
            ("b".to_owned(), 7),
            ("c".to_owned(), 2),
        ]
        .into_iter()
        .collect();
        let d = counter_deltas(&before, &after);
        assert_eq!(d.get("a"), Some(&4));
        assert_eq!(d.get("b"), None, "unchanged counters are left out");
        assert_eq!(d.get("c"), Some(&2), "a new counter counts from zero");
        // A gateway restarted in between: counters that went down are not negative.
        assert!(counter_deltas(&after, &before).is_empty());
    }

    /// The socket column end to end for one size: the whole runner (topology, gateways,
    /// warm-up, generator, sink, CPU accounting, the gateways' counters) at a modest rate,
    /// for about a second, with the generator on sendmmsg and then on AF_XDP.
    #[test]
    fn netns_bench_socket_column_delivers_valid_packets() {
        gatewan_testbed::require(&[
            Need::Root,
            Need::Tool("ip"),
            Need::Tool("ethtool"),
            Need::Tool("wg"),
        ]);
        let bins = debug_binaries();
        for gen_afxdp in [false, true] {
            let opts = Options {
                sizes: vec![512],
                queues: vec![1],
                duration_s: 1.0,
                warmup_s: 0.2,
                flows: 16,
                transits: 1,
                rate_pps: 20_000,
                peer_xdp: false,
                no_gso: false,
                busy_poll: false,
                gen_afxdp,
                search: false,
                max_loss_pct: 0.1,
            };
            let results = run_column(&bins, Column::Socket, 1, &opts, &mut |_| {});
            assert_eq!(results.len(), 1);
            let r = &results[0];
            let m = r
                .measure
                .as_ref()
                .unwrap_or_else(|| panic!("not measured ({gen_afxdp}): {:?}", r.error));
            assert!(m.delivered > 0, "{m:?}");
            assert_eq!(m.invalid, 0, "{:?}", m.invalid_by_reason);
            assert!(m.sent >= m.delivered, "{m:?}");
            assert!(m.cpu_s > 0.0, "the gateways' CPU was charged: {m:?}");
            assert!(m.p50_us > 0.0 && m.p99_us >= m.p50_us, "{m:?}");
            // Gateway A took at least what reached the sink from the fabric in the run.
            let taken = m
                .counters
                .get("A")
                .and_then(|c| c.get("forwarded_from_fabric"));
            assert!(taken.is_some_and(|&n| n >= m.delivered), "{m:?}");
        }
    }
}
