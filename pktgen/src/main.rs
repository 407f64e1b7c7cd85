//! `gatewan-pktgen`: the generator (`gen`) and the sink (`sink`) as a command. See
//! docs/pktgen.md.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_dataplane::wire::vxlan;
use gatewan_pktgen::gen::{GenConfig, Generator, Limits};
use gatewan_pktgen::sink::{Sink, SinkConfig, SinkMode};
use gatewan_pktgen::validate::Expect;
use gatewan_pktgen::XskTx;
use gatewan_pktgen::{InnerProto, TrafficSpec};
use ipnet::IpNet;

#[derive(Parser)]
#[command(
    name = "gatewan-pktgen",
    version,
    about = "gatewan's fabric traffic generator and sink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send VXLAN fabric traffic to a gateway's VTEP, as a leaf would.
    Gen(GenArgs),
    /// Receive, validate and measure traffic, as the far leaf would.
    Sink(SinkArgs),
}

/// The inner traffic, shared by `gen` and (for what it checks) `sink`.
#[derive(Args)]
struct TrafficArgs {
    /// L3 VNI.
    #[arg(long, default_value_t = 100)]
    vni: u32,
    /// Inner destination MAC: the gateway's router MAC.
    #[arg(long, default_value = "02:00:00:00:00:01")]
    router_mac: MacAddr,
    /// Inner source MAC: the leaf's.
    #[arg(long, default_value = "02:00:00:00:00:02")]
    leaf_mac: MacAddr,
    /// Inner source addresses come from this prefix.
    #[arg(long, default_value = "10.1.0.0/16")]
    src_prefix: IpNet,
    /// Inner destination addresses come from this prefix.
    #[arg(long, default_value = "10.2.0.0/16")]
    dst_prefix: IpNet,
    /// Distinct inner source addresses.
    #[arg(long, default_value_t = 1)]
    src_addrs: u32,
    /// Distinct inner destination addresses.
    #[arg(long, default_value_t = 1)]
    dst_addrs: u32,
    /// First inner source port.
    #[arg(long, default_value_t = 10_000)]
    src_port: u16,
    /// Inner destination port.
    #[arg(long, default_value_t = 9_000)]
    dst_port: u16,
    /// Number of flows (distinct inner 5-tuples).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Inner IP packet size in bytes.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Inner transport.
    #[arg(long, value_enum, default_value_t = InnerProto::Udp)]
    proto: InnerProto,
}

impl TrafficArgs {
    fn spec(&self) -> TrafficSpec {
        TrafficSpec {
            vni: self.vni,
            router_mac: self.router_mac,
            leaf_mac: self.leaf_mac,
            src_prefix: self.src_prefix,
            dst_prefix: self.dst_prefix,
            src_addrs: self.src_addrs,
            dst_addrs: self.dst_addrs,
            src_port: self.src_port,
            dst_port: self.dst_port,
            flows: self.flows,
            size: self.size,
            proto: self.proto,
        }
    }
}

#[derive(Args)]
struct GenArgs {
    /// The gateway's VTEP: ADDR or ADDR:PORT (port 4789 when left out).
    #[arg(long, value_parser = vtep)]
    dst: SocketAddr,
    /// Outer source address (ADDR or ADDR:PORT; a port is the first of consecutive ones).
    #[arg(long, value_parser = vtep_any_port)]
    bind: Option<SocketAddr>,
    #[command(flatten)]
    traffic: TrafficArgs,
    /// Sockets (outer source ports) per thread that flows spread over.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Sending threads; each owns a disjoint share of the flows.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Packets per sendmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Packets per second in all; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Stop after this many packets.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 10s, 500ms). Default 10s when no --count.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// SO_SNDBUF in bytes (0: system default).
    #[arg(long, default_value_t = 0)]
    sndbuf: usize,
    /// Send whole frames through AF_XDP on this interface (thread t on queue t) instead of
    /// sendmmsg; needs --bind for the outer source address.
    #[arg(long, value_name = "INTERFACE")]
    afxdp: Option<String>,
    /// With --afxdp: the next hop's MAC (default: from the kernel's ARP table).
    #[arg(long, requires = "afxdp")]
    dst_mac: Option<MacAddr>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct SinkArgs {
    /// Where to listen: ADDR or ADDR:PORT (port 4789 when left out).
    #[arg(long, value_parser = vtep, default_value = "0.0.0.0:4789")]
    listen: SocketAddr,
    /// Receive bare inner UDP payloads (a kernel VXLAN device in front) instead of VXLAN.
    #[arg(long)]
    plain: bool,
    /// Expected VNI (not checked when left out).
    #[arg(long)]
    vni: Option<u32>,
    /// Expected inner destination MAC (not checked when left out).
    #[arg(long)]
    inner_dst_mac: Option<MacAddr>,
    /// Flows the generator sends; higher flow ids are invalid.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Receiving threads, one REUSEPORT socket each.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Datagrams per recvmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Stop after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop once nothing has come for this long, after the first packet.
    #[arg(long, value_parser = humantime::parse_duration)]
    idle: Option<Duration>,
    /// SO_RCVBUF in bytes (forced when privileged; 0: system default).
    #[arg(long, default_value_t = 8 << 20)]
    rcvbuf: usize,
    /// Receive buffer per datagram in bytes.
    #[arg(long, default_value_t = 9216)]
    max_packet: usize,
    /// The generator's JSON report: loss is then counted against what it sent.
    #[arg(long)]
    sent: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn vtep(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, vxlan::PORT))
        .map_err(|_| format!("{s:?} is neither ADDR nor ADDR:PORT"))
}

fn vtep_any_port(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{s:?} is neither ADDR nor ADDR:PORT"))
}

/// A flag set by SIGINT or SIGTERM.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing a signal handler")?;
    }
    Ok(stop)
}

fn write_json<T: serde::Serialize>(path: &PathBuf, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn gen(a: GenArgs) -> Result<()> {
    let duration = match (a.count, a.duration) {
        (None, None) => Some(Duration::from_secs(10)),
        (_, d) => d,
    };
    let config = GenConfig {
        traffic: a.traffic.spec(),
        dst: a.dst,
        bind: a.bind,
        sockets: a.sockets,
        threads: a.threads,
        limits: Limits {
            rate_pps: a.rate,
            count: a.count,
            duration,
            batch: a.batch,
        },
        send_buffer: a.sndbuf,
    };
    let stop = stop_on_signals()?;
    let report = match &a.afxdp {
        Some(interface) => {
            let Some(bind) = a.bind else {
                bail!("--afxdp needs --bind: the outer source address of the frames");
            };
            let outer = XskTx::outer(interface, bind.ip(), a.dst, a.dst_mac)?;
            let ports = (0..a.threads.max(1) as u32)
                .map(|queue| XskTx::open(interface, queue, outer))
                .collect::<Result<Vec<_>, _>>()?;
            Generator::with_ports(config.traffic, ports, config.limits)?.run_until(&stop)
        }
        None => Generator::new(&config)?.run_until(&stop),
    };
    println!("{report}");
    if let Some(path) = &a.json {
        write_json(path, &report)?;
    }
    if report.packets == 0 {
        if let Some(e) = &report.last_error {
            bail!("nothing sent: {e}");
        }
    }
    Ok(())
}

fn sink(a: SinkArgs) -> Result<()> {
    let sent = match &a.sent {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            let Some(flows) = v.get("flows_sent").and_then(|f| f.as_array()) else {
                bail!(
                    "{} has no flows_sent: not a generator report",
                    path.display()
                );
            };
            Some(
                flows
                    .iter()
                    .map(|x| x.as_u64().unwrap_or(0))
                    .collect::<Vec<u64>>(),
            )
        }
        None => None,
    };
    let config = SinkConfig {
        listen: a.listen,
        mode: if a.plain {
            SinkMode::Plain
        } else {
            SinkMode::Vxlan
        },
        expect: Expect {
            vni: a.vni,
            inner_dst_mac: a.inner_dst_mac,
            flows: a.flows,
        },
        threads: a.threads,
        batch: a.batch,
        duration: a.duration,
        idle_timeout: a.idle,
        recv_buffer: a.rcvbuf,
        max_packet: a.max_packet,
    };
    let stop = stop_on_signals()?;
    let handle = Sink::spawn(config)?;
    tracing::info!(listen = %handle.local_addr(), "sink receiving");
    while !handle.is_finished() && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut report = handle.stop();
    if let Some(sent) = &sent {
        report.reconcile(sent);
    }
    println!("{report}");
    if let Some(path) = &a.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Gen(a) => gen(a),
        Command::Sink(a) => sink(a),
    }
}
