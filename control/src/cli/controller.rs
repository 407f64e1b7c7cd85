//! `gatewan controller`: the controller's operator tools.
//!
//! - `gatewan controller plan --policy P --snapshot S [--current O] [--json]`: what-if. Runs
//!   one decision cycle on a snapshot and prints the orders and why, touching nothing.
//! - `gatewan controller simulate SCENARIO [--seed N] [--json] [--snapshot-at T]`: runs a
//!   simulator scenario and prints how the orders moved (or the inputs at one cycle, to feed
//!   `plan`).
//! - `gatewan controller --config C`: the daemon on the mesh (`controller::daemon`); a
//!   configuration with `replay:` instead replays snapshot files, one per cycle, and writes
//!   each cycle's orders as JSON lines.
//! - `gatewan controller status` and `gatewan controller explain FROM TO`: the running
//!   daemon's live state, through its control socket.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::controller::explain::Explanation;
use crate::controller::inputs::{InputIssue, Snapshot, Time};
use crate::controller::sim::{self, Sim};
use crate::controller::{Controller, Orders, Policy};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControllerArgs {
    /// Run the controller daemon from this YAML config (see docs/controller.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<ControllerCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ControllerCommand {
    /// What-if: the orders and their explanation for a snapshot, without touching anything.
    Plan {
        #[arg(long)]
        policy: PathBuf,
        /// Inputs as JSON (the controller's Snapshot type).
        #[arg(long)]
        snapshot: PathBuf,
        /// Orders in force (JSON), so incumbency and move limits apply as they would live.
        #[arg(long)]
        current: Option<PathBuf>,
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// The running controller's state: last cycle and its duration, input issues, per
    /// gateway the version sent and whether it was acked or refused, shortfalls.
    Status {
        #[arg(long, short, default_value = "/run/gatewan/controller.sock")]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Why the running controller serves the datacenter pair FROM -> TO as it does.
    Explain {
        from: String,
        to: String,
        #[arg(long, short, default_value = "/run/gatewan/controller.sock")]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run a simulator scenario and show how the orders moved.
    Simulate {
        /// Scenario name; `list` lists them.
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the controller's inputs at the first cycle at or after this many seconds
        /// (JSON, usable as `plan --snapshot`) instead of the timeline.
        #[arg(long)]
        snapshot_at: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

/// What `plan` prints.
#[derive(Debug, Serialize)]
pub struct PlanOutput {
    pub orders: Orders,
    pub explanation: Option<Explanation>,
    pub input_issues: Vec<InputIssue>,
}

/// One what-if cycle.
pub fn plan(
    policy_yaml: &str,
    snapshot_json: &str,
    current_json: Option<&str>,
) -> anyhow::Result<PlanOutput> {
    let policy = Policy::from_yaml(policy_yaml)?;
    let snap = Snapshot::from_json(snapshot_json)?;
    let mut c = Controller::new("plan", policy);
    c.set_explain(true);
    if let Some(cur) = current_json {
        c.adopt(&orders_in_force(cur)?);
    }
    let cycle = c.step(Time::ZERO, &snap);
    Ok(PlanOutput {
        orders: cycle.orders,
        explanation: cycle.explanation,
        input_issues: cycle.input_issues,
    })
}

/// The orders in force: `Orders` as the daemon saves them, or what `plan --json` prints
/// (its `orders`).
fn orders_in_force(text: &str) -> anyhow::Result<Orders> {
    let value: serde_json::Value =
        serde_json::from_str(text).context("orders in force: not JSON")?;
    let inner = match value.get("orders") {
        Some(o) if value.get("controller").is_none() => o.clone(),
        _ => value,
    };
    serde_json::from_value(inner).context("orders in force")
}

fn render<T: Serialize>(v: &T, json: bool) -> anyhow::Result<String> {
    Ok(if json {
        let mut s = serde_json::to_string_pretty(v)?;
        s.push('\n');
        s
    } else {
        serde_yaml_ng::to_string(v)?
    })
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// One change in a simulation's timeline.
#[derive(Debug, Serialize)]
pub struct SimChange {
    pub at_s: f64,
    /// Per gateway that got a new order: per remote datacenter, `tunnel=weight`.
    pub gateways: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    pub shortfalls: Vec<String>,
}

/// What `simulate` prints.
#[derive(Debug, Serialize)]
pub struct SimReport {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub duration_s: u64,
    pub cycles: usize,
    /// Cycles whose orders differ from the previous cycle's.
    pub changes: Vec<SimChange>,
    pub cycles_with_shortfall: usize,
    /// Highest port load seen at a cycle, in percent of capacity.
    pub max_port_load_pct: f64,
}

pub fn simulate(name: &str, seed: u64) -> anyhow::Result<SimReport> {
    let Some(mut sc) = sim::scenario(name) else {
        bail!("no scenario {name:?}; known: {}", scenario_names());
    };
    sc.seed = seed;
    let mut s = Sim::new(sc);
    s.run();
    let mut changes = Vec::new();
    let mut prev: Option<&Orders> = None;
    let mut max_load: f64 = 0.0;
    for r in &s.trace {
        let mut gateways = BTreeMap::new();
        for (gw, o) in &r.orders.gateways {
            if prev.is_some_and(|p| p.gateways.get(gw).is_some_and(|q| q.remotes == o.remotes)) {
                continue;
            }
            let remotes = o
                .remotes
                .iter()
                .map(|(dc, ts)| {
                    (
                        dc.clone(),
                        ts.iter()
                            .map(|t| format!("{}={}", t.tunnel, t.weight))
                            .collect(),
                    )
                })
                .collect();
            gateways.insert(gw.clone(), remotes);
        }
        let shortfalls: Vec<String> = r
            .orders
            .shortfalls
            .iter()
            .map(|f| {
                format!(
                    "{} -> {}: {} of {} ({})",
                    f.from, f.to, f.met, f.required, f.cause
                )
            })
            .collect();
        let prev_causes = prev.map(|p| {
            p.shortfalls
                .iter()
                .map(|f| (&f.from, &f.to, &f.cause))
                .collect::<Vec<_>>()
        });
        let causes: Vec<_> = r
            .orders
            .shortfalls
            .iter()
            .map(|f| (&f.from, &f.to, &f.cause))
            .collect();
        if !gateways.is_empty() || prev_causes.as_ref() != Some(&causes) {
            changes.push(SimChange {
                at_s: r.at.as_secs_f64(),
                gateways,
                shortfalls,
            });
        }
        for (tx, rx) in r.usage.values() {
            max_load = max_load.max(tx.max(*rx) / 1e10 * 100.0);
        }
        prev = Some(&r.orders);
    }
    let sc = s.scenario();
    Ok(SimReport {
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        seed,
        duration_s: sc.duration_s,
        cycles: s.trace.len(),
        changes,
        cycles_with_shortfall: s
            .trace
            .iter()
            .filter(|r| !r.orders.shortfalls.is_empty())
            .count(),
        max_port_load_pct: (max_load * 10.0).round() / 10.0,
    })
}

fn scenario_names() -> String {
    sim::SCENARIOS
        .iter()
        .map(|s| s.0)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The inputs of the first cycle at or after `at_s` in a scenario.
pub fn scenario_snapshot(name: &str, seed: u64, at_s: u64) -> anyhow::Result<Snapshot> {
    let Some(mut sc) = sim::scenario(name) else {
        bail!("no scenario {name:?}; known: {}", scenario_names());
    };
    sc.seed = seed;
    let mut s = Sim::new(sc);
    s.record_snapshots(true);
    s.run_until(at_s + s.scenario().policy.cycle_period().as_secs().max(1));
    s.trace
        .iter()
        .find(|r| r.at >= Time::from_secs(at_s))
        .and_then(|r| r.snapshot.clone())
        .context("the scenario ends before that time")
}

/// The daemon's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// This controller's id in the mesh (the election picks the lowest live id).
    pub id: String,
    /// Policy file, relative to the config file.
    pub policy: PathBuf,
    pub replay: Replay,
    /// Where to append each cycle's orders as JSON lines (default: standard output).
    #[serde(default)]
    pub output: Option<PathBuf>,
}

/// Snapshots to replay until the mesh delivers live inputs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Snapshot files, or directories whose `*.json` files are taken in name order.
    pub snapshots: Vec<PathBuf>,
    /// Wait the policy's cycle period between cycles (false: as fast as possible, with the
    /// same simulated clock).
    #[serde(default)]
    pub realtime: bool,
}

fn snapshot_files(base: &Path, entries: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in entries {
        let p = base.join(e);
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|d| d.ok().map(|d| d.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// Runs the daemon from `config`; returns after the last snapshot.
pub fn daemon(config: &Path) -> anyhow::Result<()> {
    let text = read(config)?;
    let cfg: DaemonConfig =
        serde_yaml_ng::from_str(&text).with_context(|| format!("config {}", config.display()))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let policy = Policy::from_yaml(&read(&base.join(&cfg.policy))?)?;
    let period = policy.cycle_period();
    let mut ctl = Controller::new(cfg.id.clone(), policy);
    let files = snapshot_files(base, &cfg.replay.snapshots)?;
    if files.is_empty() {
        bail!("config {}: no snapshots to replay", config.display());
    }
    let mut out: Box<dyn Write> = match &cfg.output {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(base.join(p))
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut now = Time::ZERO;
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            now = now + period;
            if cfg.replay.realtime {
                std::thread::sleep(period);
            }
        }
        let snap = match read(f).and_then(|t| Snapshot::from_json(&t).map_err(Into::into)) {
            Ok(s) => s,
            Err(e) => {
                // A bad snapshot skips a cycle; the orders in force stay (fail-static).
                tracing::warn!("skipping {}: {e:#}", f.display());
                continue;
            }
        };
        let cycle = ctl.step(now, &snap);
        for issue in &cycle.input_issues {
            tracing::warn!(kind = %issue.kind, id = %issue.id, "input ignored: {}", issue.problem);
        }
        for s in &cycle.orders.shortfalls {
            tracing::warn!(from = %s.from, to = %s.to, "shortfall: {} of {} ({})", s.met, s.required, s.cause);
        }
        tracing::info!(
            snapshot = %f.display(),
            authoritative = cycle.authority.authoritative,
            term = cycle.authority.epoch.term,
            "cycle at {now}"
        );
        serde_json::to_writer(&mut out, &cycle.orders)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// The live daemon until SIGINT or SIGTERM.
fn live(config: &Path) -> anyhow::Result<()> {
    let config = crate::controller::daemon::config::ControllerConfig::load(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatewan-ctl")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        };
        crate::controller::daemon::run(config, stop).await
    })
}

fn ask(
    socket: &Path,
    request: &crate::controller::daemon::status::Request,
) -> anyhow::Result<crate::controller::daemon::status::Response> {
    use crate::controller::daemon::status::Request;
    // An explanation comes with the next cycle: the daemon bounds that wait itself.
    let wait = match request {
        Request::Explain { .. } => std::time::Duration::from_secs(3700),
        Request::Status => std::time::Duration::from_secs(10),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(crate::gateway::control::request_within(
            socket, request, wait,
        ))
        .with_context(|| {
            format!(
                "asking the controller at {} (is `gatewan controller --config` running?)",
                socket.display()
            )
        })
}

pub fn run(args: ControllerArgs) -> anyhow::Result<()> {
    use crate::controller::daemon::status::{Request, Response};
    match (args.config, args.command) {
        (Some(config), _) => {
            let text = read(&config)?;
            let replay = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
                .ok()
                .is_some_and(|v| v.get("replay").is_some());
            if replay {
                daemon(&config)
            } else {
                live(&config)
            }
        }
        (None, Some(ControllerCommand::Status { socket, json })) => {
            let Response::Status(status) = ask(&socket, &Request::Status)? else {
                bail!("the controller answered something other than its status");
            };
            print!("{}", render(&status, json)?);
            Ok(())
        }
        (
            None,
            Some(ControllerCommand::Explain {
                from,
                to,
                socket,
                json,
            }),
        ) => {
            let Response::Explain(pair) = ask(&socket, &Request::Explain { from, to })? else {
                bail!("the controller answered something other than an explanation");
            };
            print!("{}", render(&pair, json)?);
            Ok(())
        }
        (
            None,
            Some(ControllerCommand::Plan {
                policy,
                snapshot,
                current,
                json,
            }),
        ) => {
            let cur = current.as_deref().map(read).transpose()?;
            let out = plan(&read(&policy)?, &read(&snapshot)?, cur.as_deref())?;
            print!("{}", render(&out, json)?);
            Ok(())
        }
        (
            None,
            Some(ControllerCommand::Simulate {
                scenario,
                seed,
                snapshot_at,
                json,
            }),
        ) => {
            if scenario == "list" {
                let list: BTreeMap<&str, &str> = sim::SCENARIOS.iter().copied().collect();
                print!("{}", render(&list, json)?);
                return Ok(());
            }
            match snapshot_at {
                Some(t) => {
                    let s = scenario_snapshot(&scenario, seed, t)?;
                    println!("{}", s.to_canonical_json()?);
                }
                None => print!("{}", render(&simulate(&scenario, seed)?, json)?),
            }
            Ok(())
        }
        (None, None) => bail!("give --config (daemon), or a subcommand: plan, simulate"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const POLICY: &str = include_str!("../../../docs/examples/policy.yaml");
    const SNAPSHOT: &str = include_str!("../../../docs/examples/snapshot.json");

    #[test]
    fn plan_on_the_examples_gives_orders_and_reasons() {
        let out = plan(POLICY, SNAPSHOT, None).unwrap();
        assert!(out.input_issues.is_empty(), "{:?}", out.input_issues);
        assert_eq!(out.orders.gateways.len(), 4);
        for o in out.orders.gateways.values() {
            assert!(!o.remotes.is_empty(), "{o:?}");
        }
        let e = out.explanation.unwrap();
        let p = e
            .pairs
            .iter()
            .find(|p| p.from == "sg1" && p.to == "hk1")
            .unwrap();
        // The example policy's override: realtime SLA, 8 Gbps fixed.
        assert_eq!(p.sla, "realtime");
        assert_eq!(p.required.as_bps(), 8e9);
        // The snapshot was taken during a blackhole of sg1-gw1's lumen port.
        let gw1 = p.gateways.iter().find(|g| g.gateway == "sg1-gw1").unwrap();
        assert!(gw1
            .tunnels
            .iter()
            .filter(|t| t.via.starts_with("lumen"))
            .all(|t| t.reason == "blackhole" && t.weight == 0));
        assert!(gw1.tunnels.iter().any(|t| t.weight > 0));
    }

    #[test]
    fn plan_with_the_orders_in_force_keeps_versions_and_incumbents() {
        let first = plan(POLICY, SNAPSHOT, None).unwrap();
        let cur = serde_json::to_string(&first.orders).unwrap();
        let again = plan(POLICY, SNAPSHOT, Some(&cur)).unwrap();
        assert_eq!(again.orders.gateways, first.orders.gateways);
    }

    #[test]
    fn plan_takes_as_current_what_plan_json_prints() {
        let first = plan(POLICY, SNAPSHOT, None).unwrap();
        let printed = render(&first, true).unwrap();
        let again = plan(POLICY, SNAPSHOT, Some(&printed)).unwrap();
        assert_eq!(again.orders.gateways, first.orders.gateways);
        assert!(plan(POLICY, SNAPSHOT, Some("{\"orders\": 3}")).is_err());
    }

    #[test]
    fn plan_reports_policy_errors_by_field() {
        let err = plan("anti_flap: { max_move_pct: 0 }", SNAPSHOT, None).unwrap_err();
        assert!(err.to_string().contains("anti_flap.max_move_pct"), "{err}");
        let err = plan(POLICY, "{\"tunnels\": 3}", None).unwrap_err();
        assert!(err.to_string().contains("tunnels"), "{err}");
    }

    #[test]
    fn every_scenario_runs_and_unknown_ones_are_named() {
        let r = simulate("blackhole", 1).unwrap();
        assert!(r.changes.len() >= 2);
        assert!(r.changes.iter().any(|c| c.at_s == 120.0));
        let err = simulate("nope", 1).unwrap_err().to_string();
        assert!(err.contains("blackhole"), "{err}");
        let s = scenario_snapshot("blackhole", 1, 130).unwrap();
        assert_eq!(s.gateways.len(), 4);
    }

    #[test]
    fn the_example_snapshot_is_what_the_simulator_gives() {
        // docs/examples/snapshot.json comes from
        // `gatewan controller simulate blackhole --snapshot-at 130`.
        let s = scenario_snapshot("blackhole", 1, 130).unwrap();
        assert_eq!(s.to_canonical_json().unwrap().trim(), SNAPSHOT.trim());
    }

    #[test]
    fn the_daemon_replays_snapshots_into_json_lines() {
        let dir = std::env::temp_dir().join(format!("gatewan-ctl-daemon-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("snaps")).unwrap();
        std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
        for t in [100, 125, 130] {
            let s = scenario_snapshot("blackhole", 1, t).unwrap();
            std::fs::write(
                dir.join(format!("snaps/{t:04}.json")),
                s.to_canonical_json().unwrap(),
            )
            .unwrap();
        }
        std::fs::write(dir.join("snaps/9999.json"), "not json").unwrap();
        std::fs::write(
            dir.join("ctl.yaml"),
            "id: ctl-1\npolicy: policy.yaml\nreplay: { snapshots: [snaps] }\noutput: orders.jsonl\n",
        )
        .unwrap();
        daemon(&dir.join("ctl.yaml")).unwrap();
        let lines: Vec<Orders> = std::fs::read_to_string(dir.join("orders.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Three cycles; the bad file was skipped.
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|o| o.authoritative && o.controller == "ctl-1"));
        // The blackhole (from 120 s) bumped sg1-gw1's version.
        assert_eq!(lines[0].gateways["sg1-gw1"].version, 1);
        assert_eq!(lines[2].gateways["sg1-gw1"].version, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
