//! `cargo xtask setup`: installs exactly what is missing and says what it did.

use std::process::Command;

use anyhow::{bail, Context};

use crate::run_cmd;

/// The eBPF crate's toolchain (ebpf/xdp/rust-toolchain.toml) and the bpf-linker built against
/// its LLVM (see docs/toolchain.md).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";
const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages: the real peers the tests talk to, and the tools that build topologies.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "procps",
    "ethtool",
    "jq",
    "iperf3",
    "wireguard-go",
    "wireguard-tools",
    "gobgpd",
    "frr",
    "serf",
    "nftables",
    "fonts-dejavu-core",
];

/// What setup found and did.
pub struct Outcome {
    pub installed: Vec<String>,
    /// Debian packages that are missing and could not be installed (not root).
    pub unavailable: Vec<String>,
}

pub fn run() -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        installed: Vec::new(),
        unavailable: Vec::new(),
    };
    debian_packages(&mut outcome)?;
    rustup_components(&mut outcome)?;
    ebpf_toolchain(&mut outcome)?;
    cargo_tools(&mut outcome)?;
    if outcome.installed.is_empty() {
        println!("setup: nothing to do, everything was already installed");
    } else {
        println!("setup: installed {}", outcome.installed.join(", "));
    }
    if !outcome.unavailable.is_empty() {
        println!(
            "setup: could not install {} (needs root); tests that need them will be skipped",
            outcome.unavailable.join(", ")
        );
    }
    Ok(outcome)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn debian_packages(outcome: &mut Outcome) -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        outcome
            .unavailable
            .extend(missing.iter().map(|p| p.to_string()));
        return Ok(());
    }
    println!("setup: installing Debian packages {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-q"])).context("apt-get update")?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install")?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get finished but {} are still not installed",
            still.join(", ")
        );
    }
    outcome
        .installed
        .extend(missing.iter().map(|p| format!("deb:{p}")));
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ii"))
}

fn rustup_components(outcome: &mut Outcome) -> anyhow::Result<()> {
    let installed = capture(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for component in ["clippy", "rustfmt"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            println!("setup: adding rustup component {component}");
            run_cmd(Command::new("rustup").args(["component", "add", component]))?;
            outcome.installed.push(format!("rustup:{component}"));
        }
    }
    Ok(())
}

fn ebpf_toolchain(outcome: &mut Outcome) -> anyhow::Result<()> {
    let toolchains = capture(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with(EBPF_TOOLCHAIN)) {
        println!("setup: installing the eBPF toolchain {EBPF_TOOLCHAIN}");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        outcome.installed.push(format!("rustup:{EBPF_TOOLCHAIN}"));
    }
    let components = capture(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: adding rust-src to {EBPF_TOOLCHAIN}");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ]))?;
        outcome
            .installed
            .push(format!("rustup:{EBPF_TOOLCHAIN}/rust-src"));
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    let current = linker
        .as_ref()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !current {
        println!("setup: installing bpf-linker {BPF_LINKER_VERSION}");
        run_cmd(Command::new("cargo").args([
            "+stable",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ]))?;
        outcome
            .installed
            .push(format!("cargo:bpf-linker@{BPF_LINKER_VERSION}"));
    }
    Ok(())
}

fn cargo_tools(outcome: &mut Outcome) -> anyhow::Result<()> {
    if Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    println!("setup: installing cargo-nextest");
    run_cmd(Command::new("cargo").args(["install", "cargo-nextest", "--locked"]))?;
    outcome.installed.push("cargo:cargo-nextest".into());
    Ok(())
}

fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
