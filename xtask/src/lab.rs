//! `cargo xtask lab`: the README's main job. Until the two-datacenter SD-WAN exists, it runs the
//! most complete gatewan topology that works and says what it shows.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use gatewan_testbed::{Need, Testbed};

use crate::{run_cmd, setup};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    Need::Root
        .check()
        .context("the lab builds network namespaces")?;
    println!("lab: building gatewan (release)");
    run_cmd(
        Command::new("cargo")
            .args(["build", "--release", "--quiet", "--bin", "gatewan"])
            .env("GATEWAN_REQUIRE_EBPF", "1"),
    )?;
    let gatewan = std::env::current_dir()?.join("target/release/gatewan");

    println!("\nlab: gatewan doctor");
    run_cmd(Command::new(&gatewan).arg("doctor"))?;

    let mut tb = Testbed::new()?;
    let fabric = tb.add_netns("fabric")?;
    let gateway = tb.add_netns("gateway")?;
    let (leaf, gw_if) = tb.add_veth(&fabric, &gateway, 2)?;
    leaf.add_addr("10.200.0.1/30")?;
    gw_if.add_addr("10.200.0.2/30")?;
    println!(
        "\nlab: namespaces {} (a fabric leaf) and {} (a gateway), veth {} <-> {} with 2 queues",
        fabric.name(),
        gateway.name(),
        leaf.name,
        gw_if.name
    );
    println!(
        "lab: gatewan xdp-watch on {} in the gateway namespace; the leaf pings it",
        gw_if.name
    );
    let watch = tb.spawn(
        &gateway,
        gatewan.to_str().context("non-UTF-8 path")?,
        [
            "--log",
            "warn",
            "xdp-watch",
            "--interface",
            &gw_if.name,
            "--interval",
            "1",
            "--count",
            "4",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let ping = fabric.exec("ping", ["-c", "30", "-i", "0.1", "10.200.0.2"])?;
    if let Some(summary) = ping.lines().find(|l| l.contains("packets transmitted")) {
        println!("lab: leaf ping: {summary}");
    }
    while tb.is_running(watch) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("\nlab: what the gateway's XDP program counted (per verdict, summed over CPUs):");
    print!("{}", tb.log(watch));
    println!("\nlab: done; the namespaces are torn down. What works today is listed in README.md.");
    Ok(())
}
