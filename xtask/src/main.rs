//! gatewan's developer commands.
//!
//! - `cargo xtask setup`: installs exactly what is missing (Debian peers, Rust components, the
//!   pinned eBPF toolchain, bpf-linker), idempotently, and says what it did.
//! - `cargo xtask test`: the README's test command: setup, fmt, clippy, then the whole suite.
//! - `cargo xtask lab`: the README's main job, in network namespaces on this machine.
//! - `cargo xtask bench`: gatewan (AF_XDP and socket backends) against wireguard-go, end to end
//!   through two gateways in network namespaces (docs/benchmarks.md).
//! - `cargo xtask mesh-scale`: a gateway holding 1,800 mesh tunnels: time to apply, memory.
//! - `cargo xtask simulate SCENARIO`: a controller simulator scenario (`list` lists them).

mod bench;
mod lab;
mod lab_plot;
mod mesh_scale;
mod setup;
mod simulate;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "gatewan's developer commands")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what gatewan's build and tests need; a second run does nothing.
    Setup,
    /// Set up, check formatting and lints, and run every test (unit, integration, namespaces).
    Test {
        /// Extra arguments for cargo-nextest (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        nextest_args: Vec<String>,
    },
    /// Run the most complete gatewan topology that works today, in network namespaces
    /// (`lab down` stops a kept one and removes what dead labs left).
    Lab {
        /// `down`: stop a lab left running with `--keep`; `impair GATEWAY TRANSIT WHAT...`:
        /// impair a transit of the kept lab now (`latency=40ms jitter=5ms`, `loss=5`,
        /// `rate=20` Mbit/s, `blackhole`, `clear`; latency and rates on dc-a's transits).
        #[arg(value_parser = ["down", "impair"])]
        action: Option<String>,
        /// For `impair`: the gateway, the transit and what to do.
        #[arg(trailing_var_arg = true)]
        words: Vec<String>,
        /// The gateways' `dataplane.backend`.
        #[arg(long, default_value = "auto", value_parser = ["auto", "socket", "afxdp"])]
        backend: String,
        /// Run one part of the tour after the start: `steady` (traffic and status),
        /// `failover` (every step below), or one step: `blackhole` (and the recovery),
        /// `latency`, `brownout`, `gateway-kill`, `controller-kill`.
        #[arg(long, value_parser = ["steady", "failover", "blackhole", "latency", "brownout", "gateway-kill", "controller-kill"])]
        scenario: Option<String>,
        /// Leave everything running after the tour, until Ctrl-C or `lab down`.
        #[arg(long)]
        keep: bool,
    },
    /// Measure forwarding through two gateways: gatewan AF_XDP, gatewan sockets, wireguard-go.
    Bench(bench::BenchArgs),
    /// What a gateway holding many mesh tunnels costs: time to apply them, resident memory.
    MeshScale {
        /// Remote gateways (three transits each, as the gateway: 9 tunnels each).
        #[arg(long, default_value_t = 200)]
        remotes: usize,
    },
    /// Run a controller simulator scenario (`list` lists them; see docs/controller.md).
    Simulate {
        /// Scenario name, then `--seed N`, `--json` or `--snapshot-at SECONDS`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = std::env::set_current_dir(workspace_root())
        .map_err(anyhow::Error::from)
        .and_then(|()| match args.command {
            Command::Setup => setup::run().map(drop),
            Command::Test { nextest_args } => test::run(&nextest_args),
            Command::Lab {
                action: Some(action),
                words,
                ..
            } => match action.as_str() {
                "impair" => lab::impair_kept(&words),
                _ => lab::down(),
            },
            Command::Lab {
                action: None,
                backend,
                scenario,
                keep,
                ..
            } => lab::run(&lab::Options {
                backend,
                scenario,
                keep,
            }),
            Command::Bench(args) => bench::run(args),
            Command::Simulate { args } => simulate::run(&args),
            Command::MeshScale { remotes } => mesh_scale::run(remotes),
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or(manifest)
}

/// Runs a command with inherited output; an error names it if it fails.
pub fn run_cmd(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("could not run {cmd:?}: {e}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}
