//! `cargo xtask lab`: the README's main job. A two-datacenter gatewan SD-WAN in network
//! namespaces on this machine (see `gatewan_testbed::lab`): each datacenter a leaf with a
//! kernel VXLAN device and a gatewan gateway with two transits, four WireGuard tunnels between
//! the gateways through a transit namespace. It sends traffic between hosts of the two
//! datacenters, shows `gatewan status` on both gateways, blackholes a transit, heals it and
//! browns out the other (`failover`), writes `target/lab/summary.json`, and tears everything
//! down.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use gatewan_testbed::lab::Lab;
use gatewan_testbed::Need;

use crate::{run_cmd, setup};
use gatewan_testbed::lab::failover;

/// What `cargo xtask lab` was asked for.
pub struct Options {
    pub backend: String,
    /// `steady` (traffic and every part's status) or `failover`; both when none.
    pub scenario: Option<String>,
    /// Leave everything running after the tour, until SIGINT/SIGTERM or `lab down`.
    pub keep: bool,
}

/// Where a kept lab writes its PID, for `cargo xtask lab down`.
const PID_FILE: &str = "target/lab/lab.pid";

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let backend = opts.backend.as_str();
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

    println!("lab: starting two datacenters (leaf + gateway each) and a transit between them");
    let started = Instant::now();
    let mut lab = Lab::start_with(&gatewan, 2, "100ms", backend)?;
    println!(
        "lab: dc-a: host {} behind leaf {}, gateway {}\nlab: dc-b: host {} behind leaf {}, gateway {}",
        lab.a.host,
        lab.a.leaf.name(),
        lab.a.gateway.name(),
        lab.b.host,
        lab.b.leaf.name(),
        lab.b.gateway.name()
    );
    wait_established(&mut lab, &gatewan)?;
    let bootstrap_s = started.elapsed().as_secs_f64();
    wait_ordered(&lab, &gatewan)?;

    let wanted = |s: &str| opts.scenario.as_deref().is_none_or(|w| w == s);
    let tcp_gbps = if wanted("steady") {
        steady(&mut lab, &gatewan)?
    } else {
        None
    };
    let fig = if wanted("failover") {
        failover::run(&lab, &gatewan)?
    } else {
        failover::Figures::default()
    };
    let established = count_established(&lab, &gatewan);
    let summary = serde_json::json!({
        "bootstrap_s": bootstrap_s,
        "blackhole_loss_ms": fig.blackhole_loss_ms,
        "recovery_s": fig.recovery_s,
        "brownout_reaction_s": fig.brownout_reaction_s,
        "tcp_gbps": tcp_gbps,
        "tunnels_established": established,
        "tunnels_expected": lab.tunnels * 2,
    });
    let dir = std::env::current_dir()?.join("target/lab");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    println!("\nlab: summary");
    for (k, v) in summary.as_object().into_iter().flatten() {
        println!("  {k:<22} {v}");
    }
    println!("lab: written to {}", path.display());
    match crate::lab_plot::write(&fig.timeline, &dir) {
        Ok(paths) => {
            for p in paths {
                println!("lab: plot of the failover run: {}", p.display());
            }
        }
        Err(e) => println!("lab: no plot: {e:#}"),
    }
    if opts.keep {
        explore(&lab, &gatewan)?;
    }
    println!("lab: done; the namespaces are torn down. See README.md for what works today.");
    Ok(())
}

/// Traffic between the hosts and every part's status; the TCP rate, Gbit/s.
fn steady(lab: &mut Lab, gatewan: &Path) -> anyhow::Result<Option<f64>> {
    let gatewan = gatewan.to_path_buf();
    println!("\nlab: ping dc-a host -> dc-b host (VXLAN -> WireGuard -> VXLAN)");
    let ping = lab.a.leaf.exec(
        "ping",
        ["-c", "5", "-i", "0.2", "-I", lab.a.host, lab.b.host],
    )?;
    for line in ping
        .lines()
        .filter(|l| l.contains("bytes from") || l.contains("transmitted") || l.contains("rtt"))
    {
        println!("  {line}");
    }
    println!("\nlab: iperf3, 4 TCP flows dc-a -> dc-b for 3 s (flows spread over the tunnels the order weights)");
    let server = lab
        .tb
        .spawn(&lab.b.leaf, "iperf3", ["-s", "-B", lab.b.host])?;
    std::thread::sleep(Duration::from_millis(300));
    let iperf = lab.a.leaf.exec(
        "iperf3",
        [
            "-c", lab.b.host, "-B", lab.a.host, "-t", "3", "-P", "4", "-J",
        ],
    )?;
    let iperf: serde_json::Value = serde_json::from_str(&iperf)?;
    let tcp_gbps = iperf["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9);
    println!(
        "  received {:.2} Gbit/s, {} retransmits",
        tcp_gbps.unwrap_or(0.0),
        iperf["end"]["sum_sent"]["retransmits"]
    );
    lab.tb.stop(server, Duration::from_secs(1));
    // Let a status period pass so the rates reflect the transfer.
    std::thread::sleep(Duration::from_millis(1100));

    for site in [&lab.a, &lab.b] {
        println!(
            "\nlab: gatewan status on {} (first tunnel; all {} with --json)",
            site.name, lab.tunnels
        );
        let out = status(&gatewan, &site.socket, false)?;
        // The first tunnel's entry, as operators read it.
        let first: Vec<&str> = out
            .lines()
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.starts_with("- "))
            .map(|(_, l)| l)
            .collect();
        for line in first {
            println!("  {line}");
        }
        let all: serde_json::Value = serde_json::from_str(&status(&gatewan, &site.socket, true)?)?;
        for t in all.as_array().into_iter().flatten() {
            println!(
                "  {} {} -> {}/{}: {} latency {} loss {} tx {} pkts, rx {} pkts",
                t["interface"].as_str().unwrap_or("?"),
                t["meta"]["sdwan_local_transit"].as_str().unwrap_or("?"),
                t["peer"].as_str().unwrap_or("?"),
                t["meta"]["sdwan_peer_transit"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                t["probe"]["latency"].as_str().unwrap_or("?"),
                t["probe"]["loss"].as_str().unwrap_or("?"),
                t["counters"]["tx_packets"],
                t["counters"]["rx_packets"],
            );
        }
        println!("lab: gatewan status --gateway on {}", site.name);
        for line in status_with(&gatewan, &site.socket, &["--gateway"])?.lines() {
            println!("  {line}");
        }
    }
    println!(
        "\nlab: gatewan controller status ({} in its own namespace, over the mesh)",
        lab.controller.name
    );
    let st: serde_json::Value = serde_json::from_str(&run_gatewan(
        &gatewan,
        &["controller", "status", "--json", "--socket"],
        &lab.controller.socket,
    )?)?;
    println!(
        "  authoritative {} epoch {}/{}, {} cycles, last {} ms (pull {} ms), {} of {} gateways reached, {} input issues",
        st["authoritative"],
        st["epoch"]["controller"].as_str().unwrap_or("?"),
        st["epoch"]["term"],
        st["cycles"],
        st["last_cycle_ms"],
        st["pull_ms"],
        st["gateways_reached"],
        st["gateways_in_mesh"],
        st["input_issues"].as_array().map_or(0, Vec::len),
    );
    for (gw, r) in st["recipients"].as_object().into_iter().flatten() {
        println!(
            "  {gw}: order version {} {}",
            r["version"],
            r["result"].as_str().unwrap_or("?")
        );
    }
    for site in [&lab.a, &lab.b] {
        println!("lab: gatewan orders on {}", site.name);
        let o: serde_json::Value = serde_json::from_str(&run_gatewan(
            &gatewan,
            &["orders", "--json", "--socket"],
            &site.socket,
        )?)?;
        println!(
            "  version {} from {} (term {}), applied {:.1} s ago",
            o["order"]["version"],
            o["epoch"]["controller"].as_str().unwrap_or("?"),
            o["epoch"]["term"],
            o["age_s"].as_f64().unwrap_or(0.0)
        );
        for (dc, ws) in o["in_force"].as_object().into_iter().flatten() {
            let list: Vec<String> = ws
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    format!(
                        "{}={}",
                        w["tunnel"].as_str().unwrap_or("?").get(..8).unwrap_or("?"),
                        w["weight"]
                    )
                })
                .collect();
            println!("  towards {dc}: {}", list.join(" "));
        }
    }
    Ok(tcp_gbps)
}

/// Established tunnels on both gateways together.
fn count_established(lab: &Lab, gatewan: &Path) -> usize {
    [&lab.a, &lab.b]
        .iter()
        .filter_map(|site| status(gatewan, &site.socket, true).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .flat_map(|all| all.as_array().cloned().unwrap_or_default())
        .filter(|t| t["state"] == "Established")
        .count()
}

/// `gatewan ARGS SOCKET`, its standard output.
fn run_gatewan(gatewan: &Path, args: &[&str], socket: &Path) -> anyhow::Result<String> {
    let out = Command::new(gatewan).args(args).arg(socket).output()?;
    anyhow::ensure!(
        out.status.success(),
        "gatewan {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until both gateways hold an order of the controller.
fn wait_ordered(lab: &Lab, gatewan: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    for site in [&lab.a, &lab.b] {
        loop {
            let o = run_gatewan(gatewan, &["orders", "--json", "--socket"], &site.socket)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            if o.is_some_and(|o| o["order"]["version"].as_u64().is_some()) {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "{} got no order from the controller:\n{}",
                site.name,
                lab.tb.log(lab.controller.process)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!(
        "lab: the controller's orders applied on both gateways {:.1} s after the tunnels were up",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn status(gatewan: &Path, socket: &Path, json: bool) -> anyhow::Result<String> {
    status_with(gatewan, socket, if json { &["--json"] } else { &[] })
}

fn status_with(gatewan: &Path, socket: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(gatewan);
    cmd.arg("status").arg("--socket").arg(socket).args(args);
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "gatewan status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_established(lab: &mut Lab, gatewan: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    for site in [&lab.a, &lab.b] {
        loop {
            let all: serde_json::Value =
                serde_json::from_str(&status(gatewan, &site.socket, true)?)?;
            let tunnels = all.as_array().cloned().unwrap_or_default();
            // Built from the mesh: established, and routing the other datacenter's prefixes
            // once its list has arrived.
            let routed = |t: &serde_json::Value| {
                t["state"] == "Established" && t["networks"].as_str().is_some_and(|n| !n.is_empty())
            };
            if tunnels.len() == lab.tunnels && tunnels.iter().all(routed) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the tunnels of {} did not come up:\n{}",
                site.name,
                lab.tb.log(site.gateway_process)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!(
        "lab: all {} tunnels built from the mesh, established and routed on both gateways after {:.1} s",
        lab.tunnels,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Leaves the lab running: how to look around, then waits for SIGINT or SIGTERM (what
/// `cargo xtask lab down` sends, by the PID in [`PID_FILE`]).
fn explore(lab: &Lab, gatewan: &Path) -> anyhow::Result<()> {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    std::fs::write(PID_FILE, std::process::id().to_string())?;
    let g = gatewan.display();
    println!("\nlab: kept running. Enter a namespace with `ip netns exec NAME bash`:");
    for site in [&lab.a, &lab.b] {
        println!(
            "  {}: leaf {} (host {}), gateway {}",
            site.name,
            site.leaf.name(),
            site.host,
            site.gateway.name()
        );
        println!("    {g} status --socket {}", site.socket.display());
        println!(
            "    {g} status --gateway --socket {}",
            site.socket.display()
        );
        println!("    {g} orders --socket {}", site.socket.display());
    }
    println!(
        "  controller {} in {}: {g} controller status --socket {}",
        lab.controller.name,
        lab.controller.netns.name(),
        lab.controller.socket.display()
    );
    println!(
        "  from the leaf of dc-a: ping -I {} {}",
        lab.a.host, lab.b.host
    );
    println!("lab: Ctrl-C here, or `cargo xtask lab down`, tears it down");
    while !STOP.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(PID_FILE);
    Ok(())
}

/// `cargo xtask lab down`: stops a kept lab (SIGTERM to the PID it wrote) and removes what a
/// lab that died left behind.
pub fn down() -> anyhow::Result<()> {
    if let Ok(pid) = std::fs::read_to_string(PID_FILE) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: a signal to the PID the kept lab wrote; it may be gone already.
            if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
                println!("lab down: asked the kept lab (PID {pid}) to tear down");
                let start = Instant::now();
                // SAFETY: signal 0 only checks that the process exists.
                while unsafe { libc::kill(pid, 0) } == 0
                    && start.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let _ = std::fs::remove_file(PID_FILE);
    }
    let reaped = gatewan_testbed::reap_stale_namespaces();
    println!("lab down: {reaped} namespaces left by dead labs or tests removed");
    Ok(())
}
