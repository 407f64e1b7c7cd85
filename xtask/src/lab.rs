//! `cargo xtask lab`: the README's main job. The [`Plan::tour`] of `gatewan_testbed::lab` in
//! network namespaces on this machine: three datacenters, each an FRR leaf with a host, two
//! gatewan gateways with two transits each and a bgpctl, two controllers, one Serf mesh, a
//! transit namespace between them. It waits for the full mesh (`bootstrap_s`), shows traffic
//! and every part's status (`steady`), runs the failover tour (`failover`), writes
//! `target/lab/summary.json` and the plot, and tears everything down (or, with `--keep`,
//! leaves it running until `cargo xtask lab down`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use gatewan_testbed::lab::failover::{self, gatewan_json};
use gatewan_testbed::lab::{Lab, Plan};
use gatewan_testbed::Need;

use crate::{run_cmd, setup};

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
/// Where a kept lab takes impairments (`cargo xtask lab impair`): a line in, a line out.
const IMPAIR_SOCKET: &str = "target/lab/lab.sock";

pub fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run()?;
    Need::Root
        .check()
        .context("the lab builds network namespaces")?;
    println!("lab: building gatewan (release)");
    let gatewan = build_gatewan()?;

    let plan = Plan::tour(&opts.backend);
    println!(
        "lab: starting {} datacenters ({} gateways with {} transits each, an FRR leaf with a host, a bgpctl), {} controllers, one Serf mesh",
        plan.datacenters, plan.gateways, plan.transits, plan.controllers
    );
    let started = Instant::now();
    let mut lab = Lab::start(&gatewan, plan)?;
    describe(&lab);
    wait_established(&lab, &gatewan)?;
    let bootstrap_s = started.elapsed().as_secs_f64();
    wait_ordered(&lab, &gatewan)?;

    let scenario = opts.scenario.as_deref();
    let tcp = if scenario.is_none_or(|s| s == "steady") {
        steady(&mut lab, &gatewan)?
    } else {
        Default::default()
    };
    // `failover` is every step; a step's name, that one.
    let fig = match scenario {
        None | Some("failover") => failover::run(&mut lab, &gatewan, None)?,
        Some("steady") => failover::Figures::default(),
        Some(step) => failover::run(&mut lab, &gatewan, Some(step))?,
    };
    let tcp_gbps = tcp.values().next().copied();
    let latency: serde_json::Map<String, serde_json::Value> = fig
        .udp_latency_ms
        .iter()
        .map(|(k, [p50, p99, max])| {
            (
                k.clone(),
                serde_json::json!({ "p50": p50, "p99": p99, "max": max }),
            )
        })
        .collect();
    let summary = serde_json::json!({
        "bootstrap_s": bootstrap_s,
        "blackhole_loss_ms": fig.blackhole_loss_ms,
        "recovery_s": fig.recovery_s,
        "brownout_reaction_s": fig.brownout_reaction_s,
        "latency_reaction_s": fig.latency_reaction_s,
        "gateway_kill_loss_ms": fig.gateway_kill_loss_ms,
        "rt5_withdrawn_s": fig.rt5_withdrawn_s,
        "controller_takeover_s": fig.controller_takeover_s,
        "controller_kill_lost": fig.controller_kill_lost,
        "untouched_lost": fig.untouched_lost,
        "datagrams_sent": fig.sent,
        "datagrams_lost": fig.lost,
        "tcp_gbps": tcp_gbps,
        "tcp_gbps_by_pair": tcp,
        "udp_latency_ms": latency,
        "tunnels_established": count_established(&lab, &gatewan),
        "tunnels_expected": lab.tunnels_per_gateway() * lab.gateways().count(),
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

/// Builds the gatewan the lab runs (release, with its XDP program); its path.
pub fn build_gatewan() -> anyhow::Result<std::path::PathBuf> {
    run_cmd(
        Command::new("cargo")
            .args(["build", "--release", "--quiet", "--bin", "gatewan"])
            .env("GATEWAN_REQUIRE_EBPF", "1"),
    )?;
    Ok(std::env::current_dir()?.join("target/release/gatewan"))
}

/// Who is where.
fn describe(lab: &Lab) {
    for s in &lab.sites {
        let gws: Vec<String> = s
            .gateways
            .iter()
            .map(|g| {
                format!(
                    "{} (VTEP {}, transits {})",
                    g.daemon.name,
                    g.vtep,
                    g.transits
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join("+")
                )
            })
            .collect();
        println!(
            "lab: {}: host {} ({}) behind {}, gateways {}{}",
            s.dc,
            s.host,
            s.prefix,
            s.leaf.name(),
            gws.join(", "),
            s.bgpctl
                .as_ref()
                .map_or(String::new(), |b| format!(", {}", b.name))
        );
    }
    let ctls: Vec<&str> = lab.controllers.iter().map(|c| c.name.as_str()).collect();
    println!("lab: controllers {}", ctls.join(", "));
}

/// Prints `out`'s lines indented, at most `max` of them.
fn print_lines(out: &str, max: usize) {
    let lines: Vec<&str> = out.lines().collect();
    for line in lines.iter().take(max) {
        println!("  {line}");
    }
    if lines.len() > max {
        println!("  ... ({} more lines)", lines.len() - max);
    }
}

/// The pairs of datacenters iperf3 runs between (dc-a -> dc-b first: `tcp_gbps`).
fn tcp_pairs(sites: usize) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for from in 0..sites {
        for to in from + 1..sites {
            pairs.push((from, to));
        }
    }
    pairs
}

/// Traffic between the hosts and every part's status; the TCP rate per pair, Gbit/s.
fn steady(
    lab: &mut Lab,
    gatewan: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let a = &lab.sites[0];
    for remote in lab.sites.iter().skip(1) {
        println!(
            "\nlab: ping {} host -> {} host (VXLAN -> WireGuard -> VXLAN)",
            a.dc, remote.dc
        );
        let ping = a.leaf.exec(
            "ping",
            ["-c", "5", "-i", "0.2", "-I", &a.host, &remote.host],
        )?;
        for line in ping
            .lines()
            .filter(|l| l.contains("transmitted") || l.contains("rtt"))
        {
            println!("  {line}");
        }
    }
    let mut tcp = std::collections::BTreeMap::new();
    for (from, to) in tcp_pairs(lab.sites.len()) {
        let (f, t) = (&lab.sites[from], &lab.sites[to]);
        let label = format!("{} -> {}", f.dc, t.dc);
        println!(
            "\nlab: iperf3, 4 TCP flows {label} for 3 s (spread by the leaf over both gateways, by the gateways over the tunnels the order weights)"
        );
        let (f_leaf, f_host, t_leaf, t_host) = (
            f.leaf.clone(),
            f.host.clone(),
            t.leaf.clone(),
            t.host.clone(),
        );
        let server = lab.tb.spawn(&t_leaf, "iperf3", ["-s", "-B", &t_host])?;
        std::thread::sleep(Duration::from_millis(300));
        let iperf = f_leaf.exec(
            "iperf3",
            ["-c", &t_host, "-B", &f_host, "-t", "3", "-P", "4", "-J"],
        );
        lab.tb.stop(server, Duration::from_secs(1));
        let iperf: serde_json::Value = serde_json::from_str(&iperf?)?;
        let gbps = iperf["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9);
        println!(
            "  received {:.2} Gbit/s, {} retransmits",
            gbps.unwrap_or(0.0),
            iperf["end"]["sum_sent"]["retransmits"]
        );
        if let Some(g) = gbps {
            tcp.insert(label, g);
        }
    }
    // Let a status period pass so the rates reflect the transfer.
    std::thread::sleep(Duration::from_millis(1100));

    let a1 = &lab.sites[0].gateways[0];
    let g = gatewan.display().to_string();
    println!(
        "\nlab: gatewan members (the mesh, as {}'s agent sees it)",
        a1.daemon.name
    );
    let members = a1.daemon.netns.exec(
        &g,
        [
            "members",
            "--no-prefixes",
            "--config",
            &a1.daemon.config.display().to_string(),
        ],
    )?;
    print_lines(&members, 20);
    println!(
        "\nlab: gatewan status on {} ({} tunnels: one per remote gateway and pair of transits)",
        a1.daemon.name,
        lab.tunnels_per_gateway()
    );
    let all = gatewan_json(
        gatewan,
        &["status", "--json", "--socket"],
        &a1.daemon.socket,
    )?;
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
    println!("lab: gatewan status --gateway on {}", a1.daemon.name);
    print_lines(
        &run_gatewan(
            gatewan,
            &["status", "--gateway", "--socket"],
            &a1.daemon.socket,
        )?,
        30,
    );
    println!("lab: gatewan orders on {}", a1.daemon.name);
    print_lines(
        &run_gatewan(gatewan, &["orders", "--socket"], &a1.daemon.socket)?,
        30,
    );
    if let Some(bgp) = lab.sites[0].bgpctl.as_ref() {
        println!("\nlab: gatewan routes on {} (sessions, imported fabric prefixes, RT-5 exported per gateway)", bgp.name);
        print_lines(
            &run_gatewan(gatewan, &["routes", "--socket"], &bgp.socket)?,
            40,
        );
        println!(
            "lab: ip route on {} (remote prefixes via the gateways' VTEPs, from BGP only)",
            lab.sites[0].leaf.name()
        );
        for remote in lab.sites.iter().skip(1) {
            print_lines(&lab.sites[0].leaf.ip(["route", "show", &remote.prefix])?, 6);
        }
    }
    for c in &lab.controllers {
        println!("\nlab: gatewan controller status on {}", c.name);
        print_lines(
            &run_gatewan(gatewan, &["controller", "status", "--socket"], &c.socket)?,
            14,
        );
    }
    if let Some(c) = lab.controllers.first() {
        println!(
            "\nlab: gatewan controller explain {} {} (why the order is what it is)",
            lab.sites[0].dc, lab.sites[1].dc
        );
        let out = Command::new(gatewan)
            .args([
                "controller",
                "explain",
                lab.sites[0].dc,
                lab.sites[1].dc,
                "--socket",
            ])
            .arg(&c.socket)
            .output()?;
        print_lines(&String::from_utf8_lossy(&out.stdout), 25);
    }
    Ok(tcp)
}

/// Established tunnels on every gateway together.
fn count_established(lab: &Lab, gatewan: &Path) -> usize {
    lab.gateways()
        .filter_map(|g| {
            gatewan_json(gatewan, &["status", "--json", "--socket"], &g.daemon.socket).ok()
        })
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

/// Waits until every gateway holds an order of a controller.
fn wait_ordered(lab: &Lab, gatewan: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    for g in lab.gateways() {
        loop {
            let o = gatewan_json(gatewan, &["orders", "--json", "--socket"], &g.daemon.socket).ok();
            if o.is_some_and(|o| o["order"]["version"].as_u64().is_some()) {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "{} got no order from a controller:\n{}",
                g.daemon.name,
                lab.controllers
                    .iter()
                    .map(|c| lab.log(c))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!(
        "lab: the controller's orders applied on every gateway {:.1} s after the tunnels were up",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until every gateway has all its tunnels, built from the mesh, established and
/// routing the remote datacenters' prefixes (their lists arrived).
fn wait_established(lab: &Lab, gatewan: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let want = lab.tunnels_per_gateway();
    for g in lab.gateways() {
        loop {
            let tunnels =
                gatewan_json(gatewan, &["status", "--json", "--socket"], &g.daemon.socket)
                    .ok()
                    .and_then(|all| all.as_array().cloned())
                    .unwrap_or_default();
            let routed = |t: &serde_json::Value| {
                t["state"] == "Established" && t["networks"].as_str().is_some_and(|n| !n.is_empty())
            };
            if tunnels.len() == want && tunnels.iter().all(routed) {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(90),
                "the tunnels of {} did not come up ({} of {want}):\n{}",
                g.daemon.name,
                tunnels.iter().filter(|t| routed(t)).count(),
                lab.log(&g.daemon)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!(
        "lab: the full mesh: all {want} tunnels of each of the {} gateways built from the mesh, established and routed after {:.1} s",
        lab.gateways().count(),
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
    for site in &lab.sites {
        println!(
            "  {}: leaf {} (host {})",
            site.dc,
            site.leaf.name(),
            site.host
        );
        for gw in &site.gateways {
            let (n, s) = (gw.daemon.netns.name(), gw.daemon.socket.display());
            println!("    gateway {} in {n}:", gw.daemon.name);
            println!("      {g} status --socket {s}");
            println!("      {g} status --gateway --socket {s}");
            println!("      {g} orders --socket {s}");
            println!(
                "      ip netns exec {n} {g} members --config {}",
                gw.daemon.config.display()
            );
        }
        if let Some(b) = &site.bgpctl {
            println!(
                "    {} in {}: {g} routes --socket {}",
                b.name,
                b.netns.name(),
                b.socket.display()
            );
        }
    }
    for c in &lab.controllers {
        println!(
            "  controller {} in {}: {g} controller status --socket {}",
            c.name,
            c.netns.name(),
            c.socket.display()
        );
    }
    if let (Some(a), Some(b)) = (lab.sites.first(), lab.sites.get(1)) {
        println!(
            "  from dc-a's leaf: ip netns exec {} ping -I {} {}",
            a.leaf.name(),
            a.host,
            b.host
        );
    }
    println!("  configurations and logs: {}", lab.tb.dir().display());
    println!(
        "  impair a transit while traffic flows, from another shell: cargo xtask lab impair a1 lumen latency=40ms jitter=5ms | loss=5 | rate=20 | blackhole | clear"
    );
    println!("lab: Ctrl-C here, or `cargo xtask lab down`, tears it down");
    let _ = std::fs::remove_file(IMPAIR_SOCKET);
    let listener = std::os::unix::net::UnixListener::bind(IMPAIR_SOCKET)?;
    listener.set_nonblocking(true)?;
    while !STOP.load(std::sync::atomic::Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => answer_impair(lab, stream),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let _ = std::fs::remove_file(IMPAIR_SOCKET);
    let _ = std::fs::remove_file(PID_FILE);
    Ok(())
}

/// One `lab impair` request: `GATEWAY TRANSIT WORDS...` (see `Impairment::parse`).
fn answer_impair(lab: &Lab, stream: std::os::unix::net::UnixStream) {
    use std::io::{BufRead as _, Write as _};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(&stream);
    let answer = match reader.read_line(&mut line) {
        Ok(_) => impair(lab, &line).unwrap_or_else(|e| format!("error: {e:#}")),
        Err(e) => format!("error: {e}"),
    };
    println!("lab: impair {}: {answer}", line.trim());
    let mut w = &stream;
    let _ = writeln!(w, "{answer}");
}

fn impair(lab: &Lab, line: &str) -> anyhow::Result<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [gateway, transit, spec @ ..] = words.as_slice() else {
        anyhow::bail!("give a gateway, a transit and what to do");
    };
    let g = lab
        .gateway(gateway)
        .with_context(|| format!("no gateway {gateway} in the lab"))?;
    let t = g
        .transits
        .iter()
        .find(|t| t.name == *transit)
        .with_context(|| {
            let names: Vec<&str> = g.transits.iter().map(|t| t.name).collect();
            format!(
                "{gateway} has no transit {transit} (it has {})",
                names.join(", ")
            )
        })?;
    let imp = gatewan_testbed::impair::Impairment::parse(spec)?;
    t.set(&imp)?;
    Ok(format!("{gateway} {transit}: {}", imp.describe()))
}

/// `cargo xtask lab impair GATEWAY TRANSIT WORDS...`: asks the kept lab to impair a transit.
pub fn impair_kept(words: &[String]) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(IMPAIR_SOCKET).with_context(|| {
        format!("no kept lab answers at {IMPAIR_SOCKET} (start one with `cargo xtask lab --keep`)")
    })?;
    writeln!(stream, "{}", words.join(" "))?;
    let mut answer = String::new();
    std::io::BufReader::new(&stream).read_line(&mut answer)?;
    let answer = answer.trim();
    anyhow::ensure!(!answer.starts_with("error"), "{answer}");
    println!("{answer}");
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
