//! `cargo xtask test`: the README's test command.
//!
//! Tests declare what they need by their name: a test whose name contains one of the markers
//! below runs only where the need is met. Where it is not, the test is not started and is
//! reported as skipped, with the reason printed here; the test itself also calls
//! `gatewan_testbed::require`, so run any other way it fails loudly instead of passing.

use std::process::Command;

use gatewan_testbed::Need;

use crate::{run_cmd, setup};

/// (marker in the test name, what tests carrying it need).
const MARKERS: &[(&str, &[Need])] = &[
    ("netns_", &[Need::Root, Need::Tool("ip")]),
    ("xdp_", &[Need::Root]),
    (
        "wggo_",
        &[Need::Root, Need::Tool("wireguard-go"), Need::Tool("wg")],
    ),
    (
        "gobgp_",
        &[Need::Root, Need::Tool("gobgpd"), Need::Tool("gobgp")],
    ),
    ("serf_", &[Need::Root, Need::Tool("serf")]),
    ("frr_", &[Need::Root, Need::Tool("vtysh")]),
];

pub fn run(nextest_args: &[String]) -> anyhow::Result<()> {
    setup::run()?;

    println!("test: cargo fmt --check");
    run_cmd(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    run_cmd(Command::new("cargo").args([
        "fmt",
        "--check",
        "--manifest-path",
        "ebpf/xdp/Cargo.toml",
    ]))?;

    // The toolchain is installed by now, so a build without the XDP program is an error here.
    println!("test: cargo clippy --workspace --all-targets -- -D warnings");
    run_cmd(
        Command::new("cargo")
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env("GATEWAN_REQUIRE_EBPF", "1"),
    )?;

    without_ebpf()?;

    println!("test: doc tests");
    run_cmd(
        Command::new("cargo")
            .args(["test", "--workspace", "--doc", "--quiet"])
            .env("GATEWAN_REQUIRE_EBPF", "1"),
    )?;

    let mut excluded = Vec::new();
    for (marker, needs) in MARKERS {
        let unmet: Vec<String> = needs
            .iter()
            .filter_map(|n| n.check().err())
            .map(|u| u.need)
            .collect();
        if !unmet.is_empty() {
            println!(
                "test: skipping tests named *{marker}*: this machine lacks {}",
                unmet.join(" and ")
            );
            excluded.push(format!("not test(/{marker}/)"));
        }
    }
    let filter = if excluded.is_empty() {
        "all()".to_owned()
    } else {
        excluded.join(" and ")
    };

    // The lab's tour test runs the binary `cargo xtask lab` runs: its reaction times are
    // the release build's, not the debug build's on a loaded machine.
    println!("test: building the lab's gatewan (release)");
    let lab_bin = crate::lab::build_gatewan()?;

    println!("test: cargo nextest run --workspace (filter: {filter})");
    run_cmd(
        Command::new("cargo")
            .args([
                "nextest",
                "run",
                "--workspace",
                "--profile",
                "ci",
                "-E",
                &filter,
            ])
            .args(nextest_args)
            .env("GATEWAN_REQUIRE_EBPF", "1")
            .env("GATEWAN_LAB_BIN", &lab_bin),
    )
}

/// A build without the eBPF toolchain must succeed, and its binary must say why AF_XDP is
/// unavailable. Built in its own target directory so the main build keeps its XDP program.
fn without_ebpf() -> anyhow::Result<()> {
    println!("test: a build without the XDP program reports why AF_XDP is unavailable");
    run_cmd(
        Command::new("cargo")
            .args([
                "build",
                "--quiet",
                "--bin",
                "gatewan",
                "--target-dir",
                "target/no-ebpf",
            ])
            .env("GATEWAN_NO_EBPF", "1")
            .env_remove("GATEWAN_REQUIRE_EBPF"),
    )?;
    let out = Command::new("target/no-ebpf/debug/gatewan")
        .arg("doctor")
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success()
            && said.contains("AF_XDP: unavailable")
            && said.contains("without its XDP program"),
        "gatewan doctor built without eBPF did not explain itself:\n{said}"
    );
    if let Some(line) = said.lines().find(|l| l.contains("without its XDP program")) {
        println!("test: ok:{line}");
    }
    Ok(())
}
