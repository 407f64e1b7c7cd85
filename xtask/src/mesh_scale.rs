//! `cargo xtask mesh-scale`: what a gateway holding many mesh tunnels costs, measured on the
//! release binary in a network namespace.
//!
//! The gateway (three transits) starts from a cached mesh view of N remote gateways with three
//! transits each (N x 9 tunnels; none of the peers exist, so every tunnel stays Connecting and
//! keeps retrying its handshake, the worst case for the owner). Measured: the time from start
//! until `gatewan status` lists every tunnel (planning and applying them all), and the
//! gateway's resident memory then, against the same gateway with an empty view in the same
//! run. The planning step alone is also a criterion bench (`cargo bench -p gatewan-bench
//! --bench mesh`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gatewan_testbed::config::{self, ToYaml as _};
use gatewan_testbed::{Need, Netns, ProcessId, Testbed, WgKeys};

use crate::{run_cmd, setup};

/// Transits of every gateway in the run: 3 x 3 tunnels per remote gateway.
const TRANSITS: usize = 3;

pub fn run(remotes: usize) -> anyhow::Result<()> {
    setup::run()?;
    Need::Root
        .check()
        .context("mesh-scale runs a gateway in a network namespace")?;
    println!("mesh-scale: building gatewan (release)");
    run_cmd(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "gatewan"]))?;
    let gatewan = std::env::current_dir()?.join("target/release/gatewan");
    println!("mesh-scale: generating {remotes} remote gateways' keys");
    let keys: Vec<String> = (0..remotes)
        .map(|_| WgKeys::generate().map(|k| k.public))
        .collect::<Result<_, _>>()?;
    let mut tb = Testbed::new()?;
    let ns = tb.add_netns("scale")?;
    // The remote endpoints lead into a namespace that forwards nothing: handshakes go out
    // and are never answered.
    let void = tb.add_netns("void")?;
    let (up, down) = tb.add_veth(&ns, &void, 1)?;
    up.add_addr("192.0.2.1/24")?;
    down.add_addr("192.0.2.254/24")?;
    ns.route("198.18.0.0/15", "via 192.0.2.254")?;

    let mut rows = Vec::new();
    for members in [0, remotes] {
        let (rss_kb, took) = measure(&mut tb, &ns, &gatewan, &keys[..members])?;
        println!(
            "mesh-scale: {members} remote gateways, {} tunnels: all listed after {:.2} s, RSS {:.1} MiB",
            members * TRANSITS * TRANSITS,
            took.as_secs_f64(),
            rss_kb as f64 / 1024.0
        );
        rows.push((members, rss_kb, took));
    }
    if let [(_, base, _), (n, full, took)] = rows[..] {
        let tunnels = n * TRANSITS * TRANSITS;
        println!("\n| remote gateways | tunnels | start to all listed | RSS | RSS over the empty view | per tunnel |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| {n} | {tunnels} | {:.2} s | {:.1} MiB | {:.1} MiB ({:.2}x) | {:.1} KiB |",
            took.as_secs_f64(),
            full as f64 / 1024.0,
            full.saturating_sub(base) as f64 / 1024.0,
            full as f64 / base.max(1) as f64,
            full.saturating_sub(base) as f64 / tunnels.max(1) as f64
        );
    }
    Ok(())
}

/// Starts the gateway on a cached view of `keys.len()` remote gateways; returns its RSS (KiB)
/// once every tunnel is listed, and how long that took.
fn measure(
    tb: &mut Testbed,
    ns: &Netns,
    gatewan: &Path,
    keys: &[String],
) -> anyhow::Result<(u64, Duration)> {
    let dir = tb.dir().join(format!("scale-{}", keys.len()));
    std::fs::create_dir_all(&dir)?;
    let members: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 1);
            let transits: Vec<serde_json::Value> = ["cogent", "gtt", "zayo"]
                .iter()
                .enumerate()
                .map(|(t, name)| {
                    serde_json::json!({
                        "name": name,
                        "public_key": key,
                        "endpoints": [format!("198.18.{hi}.{lo}:{}", 51820 + t)],
                    })
                })
                .collect();
            serde_json::json!({
                "name": format!("remote{i}"),
                "addr": format!("198.18.{hi}.{lo}:7946"),
                "id": i + 2,
                "datacenter": format!("dc{}", i % 10),
                "echo_port": 7054,
                "transits": transits,
                "prefixes": [format!("10.{}.{}.0/24", 100 + i % 10, i / 10)],
            })
        })
        .collect();
    std::fs::write(
        dir.join("mesh-view.json"),
        serde_json::json!({ "members": members }).to_string(),
    )?;
    let socket = dir.join("gateway.sock");
    let config = dir.join("gateway.yaml");
    let private = WgKeys::generate()?.private;
    config::Gateway {
        name: "scale".into(),
        datacenter: "dc-home".into(),
        private_key: private,
        control_socket: socket.clone(),
        transits: ["lumen", "ntt", "telstra"]
            .iter()
            .enumerate()
            .map(|(t, name)| config::Transit {
                name: (*name).into(),
                listen: format!("192.0.2.1:{}", 51820 + t),
                capacity: None,
            })
            .collect(),
        dataplane: Some(config::Dataplane {
            backend: "socket".into(),
            workers: Some(1),
            ..Default::default()
        }),
        mesh: Some(config::GatewayMesh {
            id: 1,
            bind: vec![config::Bind {
                transit: "lumen".into(),
                address: "192.0.2.1:7946".into(),
            }],
            keys: vec!["AAAAAAAAAAAAAAAAAAAAAA==".into()],
            rpc_auth: Some("mesh-scale".into()),
            state_dir: dir.to_path_buf(),
            profile: Some("local".into()),
            pools: config::Pools {
                v4: Some("100.64.0.0/12".into()),
                v6: Some("fd00:5d::/64".into()),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
    .write(&config, "cargo xtask mesh-scale")?;
    let expected = keys.len() * TRANSITS * TRANSITS;
    let start = Instant::now();
    let process = tb.spawn(
        ns,
        gatewan.to_str().unwrap_or_default(),
        ["gateway", "--config", config.to_str().unwrap_or_default()],
    )?;
    let took = loop {
        if !tb.is_running(process) {
            bail!("the gateway exited:\n{}", tb.log(process));
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("{expected} tunnels not listed after 120 s");
        }
        if socket.exists() && listed(gatewan, &socket) == Some(expected) {
            break start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let the first round of handshakes and probes allocate what they will.
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kb(process).context("reading the gateway's VmRSS")?;
    tb.stop(process, Duration::from_secs(10));
    Ok((rss, took))
}

fn listed(gatewan: &Path, socket: &Path) -> Option<usize> {
    let out = Command::new(gatewan)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .ok()?;
    let tunnels: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    tunnels.as_array().map(Vec::len)
}

fn rss_kb(process: ProcessId) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.0)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
