//! The lab's failover steps: a transit blackholed, then healed (recovery after the
//! controller's hold), then another browned out, each measured with constant-rate UDP flows
//! between the datacenters' hosts and with the orders in force at the gateways.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Lab, Site};
use crate::flows;
use crate::impair::Impairment;
use crate::{Result, TestbedError};

/// `gatewan ARGS SOCKET` parsed as JSON.
fn gatewan_json(gatewan: &Path, args: &[&str], socket: &Path) -> Result<serde_json::Value> {
    let out = crate::run_checked(std::process::Command::new(gatewan).args(args).arg(socket))?;
    serde_json::from_str(&out)
        .map_err(|e| TestbedError::Other(format!("gatewan {}: {e}", args.join(" "))))
}

/// UDP flows dc-a -> dc-b during each step (one datagram per flow every 5 ms).
const FLOWS: u16 = 4;

/// What the steps measured, for the summary, and the run as time series for the plot.
#[derive(Debug, Default)]
pub struct Figures {
    pub blackhole_loss_ms: Option<f64>,
    pub recovery_s: Option<f64>,
    pub brownout_reaction_s: Option<f64>,
    pub timeline: Timeline,
}

/// The failover run over time, seconds since the flows started.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Per tunnel of gw-a (`local transit -> peer transit`): datagrams it sent per second.
    pub tunnels: BTreeMap<String, Vec<(f64, f64)>>,
    /// Percent of the flows' datagrams lost, per 100 ms.
    pub loss: Vec<(f64, f64)>,
    /// What happened when.
    pub events: Vec<(f64, String)>,
}

/// Samples the tx counters of `site`'s tunnels every second (the gateway publishes its
/// counters once a second) until `stop`.
fn sample_tunnels(
    gatewan: PathBuf,
    socket: PathBuf,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut last: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let t = started.elapsed().as_secs_f64();
        if let Ok(all) = gatewan_json(&gatewan, &["status", "--json", "--socket"], &socket) {
            for tun in all.as_array().into_iter().flatten() {
                let label = format!(
                    "{} -> {}",
                    tun["meta"]["sdwan_local_transit"].as_str().unwrap_or("?"),
                    tun["meta"]["sdwan_peer_transit"].as_str().unwrap_or("?")
                );
                let Some(tx) = tun["counters"]["tx_packets"].as_u64() else {
                    continue;
                };
                if let Some((t0, tx0)) = last.insert(label.clone(), (t, tx)) {
                    if t > t0 {
                        let rate = tx.saturating_sub(tx0) as f64 / (t - t0);
                        out.entry(label).or_default().push((t, rate));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    out
}

/// The local transit of each tunnel of `site`, by tunnel id.
fn transit_of(gatewan: &Path, site: &Site) -> Result<BTreeMap<String, String>> {
    let all = gatewan_json(gatewan, &["status", "--json", "--socket"], &site.socket)?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["id"].as_str()?.to_owned(),
                t["meta"]["sdwan_local_transit"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// The weight the order in force at `site` gives, in all, to tunnels over `transit`.
pub fn ordered_weight(gatewan: &Path, site: &Site, transit: &str) -> Result<u64> {
    let of = transit_of(gatewan, site)?;
    let o = gatewan_json(gatewan, &["orders", "--json", "--socket"], &site.socket)?;
    Ok(o["in_force"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, ws)| ws.as_array().cloned().unwrap_or_default())
        .filter(|w| {
            w["tunnel"]
                .as_str()
                .is_some_and(|id| of.get(id).map(String::as_str) == Some(transit))
        })
        .filter_map(|w| w["weight"].as_u64())
        .sum())
}

/// Polls `ok` every 100 ms for at most `limit`; how long it took.
fn until(limit: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn set(site: &Site, t: usize, imp: &Impairment) -> Result<&'static str> {
    let (name, endpoint) = site
        .transits
        .get(t)
        .ok_or_else(|| TestbedError::Other(format!("{} has no transit {t}", site.name)))?;
    endpoint.set(imp)?;
    Ok(name)
}

/// Runs the steps on `lab` (`gatewan`: the binary whose CLI reads the gateways), printing
/// each with what to look at and what it measured.
pub fn run(lab: &Lab, gatewan: &Path) -> Result<Figures> {
    let mut fig = Figures::default();
    if lab.a.transits.len() < 2 {
        println!("\nlab: one transit per gateway: no failover to show");
        return Ok(fig);
    }
    let a = &lab.a;
    let flows = flows::start(&a.leaf, a.host, &lab.b.leaf, lab.b.host, FLOWS)?;
    let started = flows.started();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (g, s, stop) = (gatewan.to_path_buf(), a.socket.clone(), Arc::clone(&stop));
        std::thread::spawn(move || sample_tunnels(g, s, started, stop))
    };
    let mut events = Vec::new();
    let mut event = |what: String| {
        events.push((started.elapsed().as_secs_f64(), what));
        started.elapsed()
    };
    let steps = steps(lab, gatewan, &mut fig, &mut event);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let stats = flows.stop();
    fig.timeline.tunnels = sampler.join().unwrap_or_default();
    fig.timeline.loss = stats.loss_series(Duration::from_millis(100));
    fig.timeline.events = events;
    let blackholed = steps?;
    let window = stats.longest_silence(blackholed, blackholed + Duration::from_secs(5));
    fig.blackhole_loss_ms = Some(window.as_secs_f64() * 1000.0);
    println!(
        "\nlab: blackhole loss window {:.0} ms (the longest any flow received nothing after it); \
         {} of {} datagrams lost over the whole run",
        window.as_secs_f64() * 1000.0,
        stats.total_lost(),
        stats.sent.iter().sum::<u64>()
    );
    Ok(fig)
}

/// The steps; returns when the blackhole began (since the flows started).
fn steps(
    lab: &Lab,
    gatewan: &Path,
    fig: &mut Figures,
    event: &mut impl FnMut(String) -> Duration,
) -> Result<Duration> {
    let a = &lab.a;
    std::thread::sleep(Duration::from_secs(2));

    // A transit blackholed: the gateway's local repair moves the flows to the tunnels of
    // its other transit, before the controller's next order.
    let name = set(
        a,
        0,
        &Impairment {
            blackhole: true,
            ..Impairment::default()
        },
    )?;
    let blackholed = event(format!("{name} blackholed"));
    println!(
        "\nlab: {name} (a transit of {}) blackholed, both ways, while {FLOWS} UDP flows run dc-a -> dc-b",
        a.name
    );
    println!(
        "     look at: the longest gap at the receiving host, and where the order sends traffic"
    );
    std::thread::sleep(Duration::from_secs(5));
    let other = a.transits[1].0;
    println!(
        "  order in force at {}: weight {} on {name}, {} on {other}",
        a.name,
        ordered_weight(gatewan, a, name)?,
        ordered_weight(gatewan, a, other)?
    );

    // Healed: the tunnels come back once the probes are clean again and the controller's
    // recovery hold has passed.
    set(a, 0, &Impairment::default())?;
    event(format!("{name} healed"));
    println!(
        "\nlab: {name} healed; look at: when the order uses it again (after the recovery hold)"
    );
    match until(Duration::from_secs(90), || {
        ordered_weight(gatewan, a, name).is_ok_and(|w| w > 0)
    }) {
        Some(d) => {
            fig.recovery_s = Some(d.as_secs_f64());
            event(format!("{name} back in the order"));
            println!("  {name} back in the order after {:.1} s", d.as_secs_f64());
        }
        None => println!("  {name} not back in the order within 90 s"),
    }

    // The other transit browned out: 5% loss each way breaks the 2% SLA; the controller
    // moves the order off it.
    std::thread::sleep(Duration::from_secs(2));
    let name = set(
        a,
        1,
        &Impairment {
            loss_pct: 5.0,
            ..Impairment::default()
        },
    )?;
    event(format!("{name} browned out (5%)"));
    println!("\nlab: {name} browned out (5% loss each way); look at: when the order moves off it");
    match until(Duration::from_secs(60), || {
        ordered_weight(gatewan, a, name).is_ok_and(|w| w == 0)
    }) {
        Some(d) => {
            fig.brownout_reaction_s = Some(d.as_secs_f64());
            event(format!("order off {name}"));
            println!(
                "  the order moved off {name} after {:.1} s",
                d.as_secs_f64()
            );
        }
        None => println!("  the order still uses {name} after 60 s"),
    }
    std::thread::sleep(Duration::from_secs(2));
    set(a, 1, &Impairment::default())?;
    Ok(blackholed)
}
