//! The `gatewan` binary: parses the command line and hands each subcommand to gatewan-control.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gatewan_control::cli;
use gatewan_dataplane::xdp::AttachMode;

/// gatewan: an SD-WAN linking datacenters over internet transit with WireGuard tunnels.
#[derive(Debug, Parser)]
#[command(name = "gatewan", version, about, long_about = None)]
struct Args {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `gatewan_control=debug`.
    #[arg(long, global = true, env = "GATEWAN_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report what this machine and build support (AF_XDP and why not, the backend to use).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Run a gateway: its tunnels, their probes and the local control endpoint.
    Gateway {
        /// The gateway configuration (docs/configuration.md).
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
    /// Show every tunnel of the running gateway (state, probes, usage, endpoints).
    Status {
        /// The gateway's control socket (`control_socket` in gateway.yaml).
        #[arg(long, short, default_value = "/run/gatewan/gateway.sock")]
        socket: std::path::PathBuf,
        #[arg(long)]
        json: bool,
        /// Show the gateway itself (backend, workers, gateway-wide counters), not its tunnels.
        #[arg(long)]
        gateway: bool,
    },
    /// Show the controller's order in force at the running gateway: version, epoch, age,
    /// weights per remote datacenter, and the tunnels local repair holds out.
    Orders {
        #[arg(long, short, default_value = "/run/gatewan/gateway.sock")]
        socket: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Start a new handshake on a tunnel of the running gateway now (a forced rekey).
    Rekey {
        /// The tunnel's name (`interface` in `gatewan status`).
        tunnel: String,
        #[arg(long, short, default_value = "/run/gatewan/gateway.sock")]
        socket: std::path::PathBuf,
    },
    /// The controller: `plan` (what-if), `simulate` (scenarios), or the daemon (`--config`).
    Controller(cli::controller::ControllerArgs),
    /// Certificates for the orders channel: the deployment's CA and each member's.
    Pki(cli::pki::PkiArgs),
    /// Show the mesh (gateways, status, metadata, prefix lists) through a local Serf agent.
    Members {
        /// A gateway.yaml: talk to that gateway's own agent (its mesh.rpc_addr and
        /// mesh.rpc_auth), unless --rpc-addr / --rpc-auth say otherwise.
        #[arg(long, short)]
        config: Option<std::path::PathBuf>,
        /// The Serf agent's RPC address (default 127.0.0.1:7373).
        #[arg(long, env = "GATEWAN_SERF_RPC_ADDR")]
        rpc_addr: Option<std::net::SocketAddr>,
        /// The agent's RPC auth key (rpc_auth).
        #[arg(long, env = "GATEWAN_SERF_RPC_AUTH", hide_env_values = true)]
        rpc_auth: Option<String>,
        #[arg(long)]
        json: bool,
        /// Members and metadata only; do not fetch prefix lists.
        #[arg(long)]
        no_prefixes: bool,
        /// Seconds to spend fetching prefix lists.
        #[arg(long, default_value_t = 5.0, value_parser = parse_interval)]
        timeout: f64,
    },
    /// Attach gatewan's XDP program to an interface and print its counters until stopped.
    XdpWatch {
        /// Interface to attach to (in the current network namespace).
        #[arg(long, short)]
        interface: String,
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// Seconds between reports.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// Stop after this many reports.
        #[arg(long)]
        count: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Run the BGP EVPN speaker (imports local prefixes, exports remote ones as RT-5).
    Bgpctl {
        /// Configuration file (YAML; see docs/bgp.md). SIGHUP reloads its export set.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show bgpctl's sessions, imported and exported routes.
    Routes {
        /// The daemon's control socket (`control_socket` in its configuration).
        #[arg(long, env = "GATEWAN_BGPCTL_SOCKET", default_value = gatewan_control::bgp::config::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.01..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.01 and 3600"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&args.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: invalid value {:?} for '--log': {e}", args.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match args.command {
        Command::Doctor { json } => cli::doctor::run(json),
        Command::Gateway { config } => cli::gateway::run(&config),
        Command::Orders { socket, json } => cli::status::orders(&socket, json),
        Command::Rekey { tunnel, socket } => cli::status::rekey(&socket, &tunnel),
        Command::Status {
            socket,
            json,
            gateway,
        } => cli::status::run(&socket, json, gateway),
        Command::Controller(args) => cli::controller::run(args),
        Command::Pki(args) => cli::pki::run(args),
        Command::Members {
            config,
            rpc_addr,
            rpc_auth,
            json,
            no_prefixes,
            timeout,
        } => cli::members::agent_of(config.as_deref(), rpc_addr, rpc_auth.as_deref()).and_then(
            |(rpc_addr, rpc_auth)| {
                cli::members::run(cli::members::Options {
                    rpc_addr,
                    rpc_auth,
                    json,
                    no_prefixes,
                    timeout: Duration::from_secs_f64(timeout),
                })
            },
        ),
        Command::XdpWatch {
            interface,
            mode,
            interval,
            count,
            json,
        } => cli::xdp_watch::run(cli::xdp_watch::Options {
            interface,
            mode: match mode {
                Mode::Auto => AttachMode::Auto,
                Mode::Native => AttachMode::Native,
                Mode::Generic => AttachMode::Generic,
            },
            interval: Duration::from_secs_f64(interval),
            count,
            json,
        }),
        Command::Bgpctl { config } => cli::bgpctl::run(cli::bgpctl::Options { config }),
        Command::Routes { socket, json } => cli::routes::run(cli::routes::Options { socket, json }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewan: {}", cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
