//! The lab's failover tour: a transit of dc-a blackholed, then healed (recovery after the
//! controller's hold), a transit slowed, one browned out, a gateway killed, the leading controller
//! killed. Constant-rate UDP flows run between the hosts of every pair of datacenters
//! throughout (dc-a -> dc-b, dc-c -> dc-a, dc-b -> dc-c); each step is measured at the
//! receiving hosts, in the orders in force at the gateways and at the leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Gateway, Lab};
use crate::flows::{self, FlowStats, Flows};
use crate::impair::Impairment;
use crate::{Result, TestbedError};

/// `gatewan ARGS SOCKET` parsed as JSON.
pub fn gatewan_json(gatewan: &Path, args: &[&str], socket: &Path) -> Result<serde_json::Value> {
    let out = crate::run_checked(std::process::Command::new(gatewan).args(args).arg(socket))?;
    serde_json::from_str(&out)
        .map_err(|e| TestbedError::Other(format!("gatewan {}: {e}", args.join(" "))))
}

/// UDP flows per pair of datacenters (one datagram per flow every 5 ms): enough that the
/// leaf's hash gives each of its gateways some.
const FLOWS: u16 = 8;

/// What the steps measured, for the summary, and the run as time series for the plot.
#[derive(Debug, Default)]
pub struct Figures {
    pub blackhole_loss_ms: Option<f64>,
    pub recovery_s: Option<f64>,
    pub brownout_reaction_s: Option<f64>,
    /// Until the order moved off a transit given 40 ms of latency (±5 ms) each way.
    pub latency_reaction_s: Option<f64>,
    /// The longest time a flow through dc-a received nothing after a gateway of dc-a was
    /// killed.
    pub gateway_kill_loss_ms: Option<f64>,
    /// Until dc-a's leaf routed no remote prefix via the killed gateway (its RT-5 routes
    /// withdrawn).
    pub rt5_withdrawn_s: Option<f64>,
    /// Until the standby controller led and every gateway held its order.
    pub controller_takeover_s: Option<f64>,
    /// Datagrams lost, all flows, from the leading controller's death until the takeover.
    pub controller_kill_lost: Option<u64>,
    /// Datagrams lost over the whole run by the flows no event touches (dc-b -> dc-c).
    pub untouched_lost: Option<u64>,
    /// One-way latency at the receiving host per flow set (`dc-a -> dc-b`): median, 99th
    /// percentile and maximum over the run, ms.
    pub udp_latency_ms: BTreeMap<String, [f64; 3]>,
    /// Datagrams sent in all, and lost, over the whole run.
    pub sent: u64,
    pub lost: u64,
    pub timeline: Timeline,
}

/// The failover run over time, seconds since the flows started.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Per gateway of dc-a and transit (`a1 lumen`): datagrams its tunnels over that transit
    /// sent per second.
    pub tunnels: BTreeMap<String, Vec<(f64, f64)>>,
    /// Percent of all flows' datagrams lost, per 100 ms.
    pub loss: Vec<(f64, f64)>,
    /// What happened when.
    pub events: Vec<(f64, String)>,
}

/// Samples the tx counters of the gateways' tunnels by local transit every second (a
/// gateway publishes its counters once a second) until `stop`.
fn sample_tunnels(
    gatewan: PathBuf,
    gateways: Vec<(String, PathBuf)>,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut last: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let t = started.elapsed().as_secs_f64();
        for (name, socket) in &gateways {
            let Ok(all) = gatewan_json(&gatewan, &["status", "--json", "--socket"], socket) else {
                continue;
            };
            let mut by_transit: BTreeMap<String, u64> = BTreeMap::new();
            for tun in all.as_array().into_iter().flatten() {
                let transit = tun["meta"]["sdwan_local_transit"].as_str().unwrap_or("?");
                let tx = tun["counters"]["tx_packets"].as_u64().unwrap_or(0);
                *by_transit.entry(format!("{name} {transit}")).or_default() += tx;
            }
            for (label, tx) in by_transit {
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

/// The local transit of each tunnel of `gw`, by tunnel id.
fn transit_of(gatewan: &Path, gw: &Gateway) -> Result<BTreeMap<String, String>> {
    let all = gatewan_json(
        gatewan,
        &["status", "--json", "--socket"],
        &gw.daemon.socket,
    )?;
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

/// Which weights of a gateway's `gatewan orders` to read.
#[derive(Clone, Copy)]
pub enum Weights {
    /// The controller's order: what it decided.
    Order,
    /// What the gateway forwards by: the order after local repair (or, where the order
    /// gives this gateway nothing towards a datacenter, every alive tunnel).
    InForce,
}

/// The weight `gw`'s order (or what is in force there) gives, in all, to tunnels over
/// `transit`.
pub fn weight_on(gatewan: &Path, gw: &Gateway, transit: &str, which: Weights) -> Result<u64> {
    let of = transit_of(gatewan, gw)?;
    let o = gatewan_json(
        gatewan,
        &["orders", "--json", "--socket"],
        &gw.daemon.socket,
    )?;
    let remotes = match which {
        Weights::Order => &o["order"]["remotes"],
        Weights::InForce => &o["in_force"],
    };
    Ok(remotes
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

/// The weight the controller's order gives `gw`'s tunnels over `transit`.
pub fn ordered_weight(gatewan: &Path, gw: &Gateway, transit: &str) -> Result<u64> {
    weight_on(gatewan, gw, transit, Weights::Order)
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

/// The gateway of dc-a and its transit that the order gives the most weight (a1's first on
/// a tie): where dc-a's traffic is, so where an impairment shows.
fn busiest<'a>(lab: &'a Lab, gatewan: &Path) -> Result<(&'a Gateway, usize)> {
    let mut best: Option<(&Gateway, usize, u64)> = None;
    for gw in &lab.sites[0].gateways {
        for (t, transit) in gw.transits.iter().enumerate() {
            let w = ordered_weight(gatewan, gw, transit.name).unwrap_or(0);
            if best.is_none_or(|(.., b)| w > b) {
                best = Some((gw, t, w));
            }
        }
    }
    best.map(|(gw, t, _)| (gw, t))
        .ok_or_else(|| TestbedError::Other("dc-a has no gateway with a transit".into()))
}

fn set(gw: &Gateway, t: usize, imp: &Impairment) -> Result<&'static str> {
    let transit = gw
        .transits
        .get(t)
        .ok_or_else(|| TestbedError::Other(format!("{} has no transit {t}", gw.daemon.name)))?;
    transit.set(imp)?;
    Ok(transit.name)
}

/// One set of flows between two datacenters' hosts.
struct FlowSet {
    label: String,
    /// Whether an event of the tour touches it (it enters or leaves dc-a).
    touched: bool,
    flows: Flows,
}

/// Its results.
struct FlowResult {
    label: String,
    touched: bool,
    stats: FlowStats,
}

/// The datacenter pairs the flows run between, by site index: every pair once, dc-a's in
/// both directions when there are only two.
fn pairs(sites: usize) -> Vec<(usize, usize)> {
    if sites >= 3 {
        vec![(0, 1), (2, 0), (1, 2)]
    } else {
        vec![(0, 1), (1, 0)]
    }
}

fn start_flows(lab: &Lab) -> Result<Vec<FlowSet>> {
    let mut sets = Vec::new();
    for (from, to) in pairs(lab.sites.len()) {
        let (f, t) = (&lab.sites[from], &lab.sites[to]);
        sets.push(FlowSet {
            label: format!("{} -> {}", f.dc, t.dc),
            touched: from == 0 || to == 0,
            flows: flows::start(&f.leaf, &f.host, &t.leaf, &t.host, FLOWS)?,
        });
    }
    Ok(sets)
}

/// What happened when, as instants; turned into seconds since the flows started at the end.
#[derive(Default)]
struct Events {
    list: Vec<(Instant, String)>,
}

impl Events {
    fn mark(&mut self, what: impl Into<String>) -> Instant {
        let now = Instant::now();
        self.list.push((now, what.into()));
        now
    }

    /// Waits (at most `limit`) until `ok` holds, then marks `event` and says after how long;
    /// the seconds it took, or None (said too) if it did not happen.
    fn wait_for(
        &mut self,
        limit: Duration,
        event: String,
        ok: impl FnMut() -> bool,
    ) -> Option<f64> {
        match until(limit, ok) {
            Some(d) => {
                self.mark(event.clone());
                println!("  {event} after {:.1} s", d.as_secs_f64());
                Some(d.as_secs_f64())
            }
            None => {
                println!("  {event}: not within {} s", limit.as_secs());
                None
            }
        }
    }
}

/// When each measured event began, for the loss windows.
#[derive(Default)]
struct Marks {
    blackholed: Option<Instant>,
    gateway_killed: Option<(Instant, Instant)>,
    controller_killed: Option<(Instant, Instant)>,
}

/// The tour's steps, by the name `cargo xtask lab --scenario` takes (the blackhole includes
/// the recovery after it).
pub const STEPS: [&str; 5] = [
    "blackhole",
    "latency",
    "brownout",
    "gateway-kill",
    "controller-kill",
];

/// Runs the tour on `lab` (`gatewan`: the binary whose CLI reads the daemons), printing each
/// step with what to look at and what it measured; `only` one of [`STEPS`], or all.
pub fn run(lab: &mut Lab, gatewan: &Path, only: Option<&str>) -> Result<Figures> {
    if let Some(step) = only.filter(|s| !STEPS.contains(s)) {
        return Err(TestbedError::Other(format!(
            "no step {step:?} in the tour (steps: {})",
            STEPS.join(", ")
        )));
    }
    let mut fig = Figures::default();
    if lab.plan.transits < 2 {
        println!("\nlab: one transit per gateway: no failover to show");
        return Ok(fig);
    }
    let sets = start_flows(lab)?;
    let started = sets
        .first()
        .map(|s| s.flows.started())
        .unwrap_or_else(Instant::now);
    println!(
        "\nlab: {FLOWS} UDP flows each way {} (one datagram per flow every 5 ms)",
        sets.iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let gws = lab.sites[0]
            .gateways
            .iter()
            .map(|g| (g.daemon.name.clone(), g.daemon.socket.clone()))
            .collect();
        let (g, stop) = (gatewan.to_path_buf(), Arc::clone(&stop));
        std::thread::spawn(move || sample_tunnels(g, gws, started, stop))
    };
    let mut events = Events::default();
    let mut marks = Marks::default();
    let steps = steps(lab, gatewan, only, &mut fig, &mut events, &mut marks);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<FlowResult> = sets
        .into_iter()
        .map(|s| FlowResult {
            label: s.label,
            touched: s.touched,
            stats: s.flows.stop(),
        })
        .collect();
    fig.timeline.tunnels = sampler.join().unwrap_or_default();
    fig.timeline.events = events
        .list
        .iter()
        .map(|(at, what)| {
            (
                at.saturating_duration_since(started).as_secs_f64(),
                what.clone(),
            )
        })
        .collect();
    steps?;
    measure(&mut fig, &results, &marks, started);
    Ok(fig)
}

/// The loss windows and counts from the flows' results.
fn measure(fig: &mut Figures, results: &[FlowResult], marks: &Marks, started: Instant) {
    // Each flow set's own origin, for windows given as instants.
    let since = |r: &FlowResult, at: Instant| at.saturating_duration_since(r.stats.started);
    let silence = |from: Instant, to: Instant| {
        results
            .iter()
            .filter(|r| r.touched)
            .map(|r| r.stats.longest_silence(since(r, from), since(r, to)))
            .max()
            .unwrap_or_default()
    };
    // Per flow set, for the operator: which direction the window was in.
    let per_set = |what: &str, from: Instant, to: Instant| {
        let gaps: Vec<String> = results
            .iter()
            .filter(|r| r.touched)
            .map(|r| {
                let gap = r.stats.longest_silence(since(r, from), since(r, to));
                format!("{} {:.0} ms", r.label, gap.as_secs_f64() * 1000.0)
            })
            .collect();
        println!(
            "lab: {what}: the longest gap per direction: {}",
            gaps.join(", ")
        );
    };
    if let Some(at) = marks.blackholed {
        let to = at + Duration::from_secs(5);
        per_set("blackhole", at, to);
        fig.blackhole_loss_ms = Some(silence(at, to).as_secs_f64() * 1000.0);
    }
    if let Some((from, to)) = marks.gateway_killed {
        per_set("gateway killed", from, to);
        fig.gateway_kill_loss_ms = Some(silence(from, to).as_secs_f64() * 1000.0);
    }
    if let Some((from, to)) = marks.controller_killed {
        fig.controller_kill_lost = Some(
            results
                .iter()
                .map(|r| r.stats.lost_between(since(r, from), since(r, to)))
                .sum(),
        );
    }
    fig.untouched_lost = results
        .iter()
        .filter(|r| !r.touched)
        .map(|r| r.stats.total_lost())
        .reduce(|a, b| a + b);
    fig.sent = results
        .iter()
        .map(|r| r.stats.sent.iter().sum::<u64>())
        .sum();
    fig.lost = results.iter().map(|r| r.stats.total_lost()).sum();
    fig.timeline.loss = combined_loss(results, started);
    for r in results {
        if let Some((p50, p99, max)) = r.stats.latency() {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            fig.udp_latency_ms
                .insert(r.label.clone(), [ms(p50), ms(p99), ms(max)]);
            println!(
                "lab: one-way latency {}: median {:.2} ms, p99 {:.2} ms, max {:.1} ms",
                r.label,
                ms(p50),
                ms(p99),
                ms(max)
            );
        }
    }
    println!(
        "\nlab: over the whole run {} of {} datagrams lost; {} by the flows no event touches",
        fig.lost,
        fig.sent,
        fig.untouched_lost
            .map_or("none measured".into(), |l| l.to_string())
    );
}

/// All flows' loss per 100 ms, on the first set's clock.
fn combined_loss(results: &[FlowResult], started: Instant) -> Vec<(f64, f64)> {
    let mut sent: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for r in results {
        let offset = r
            .stats
            .started
            .saturating_duration_since(started)
            .as_secs_f64();
        for (t, pct, n) in r.stats.loss_counts(Duration::from_millis(100)) {
            let key = ((t + offset) * 10.0).round() as i64;
            let e = sent.entry(key).or_default();
            e.0 += n;
            e.1 += n * pct / 100.0;
        }
    }
    sent.into_iter()
        .map(|(k, (n, lost))| {
            (
                k as f64 / 10.0,
                if n > 0.0 { lost * 100.0 / n } else { 0.0 },
            )
        })
        .collect()
}

/// The steps (all, or `only` one), each printed with what it shows.
fn steps(
    lab: &mut Lab,
    gatewan: &Path,
    only: Option<&str>,
    fig: &mut Figures,
    events: &mut Events,
    marks: &mut Marks,
) -> Result<()> {
    let wanted = |s: &str| only.is_none_or(|o| o == s);
    std::thread::sleep(Duration::from_secs(2));
    if wanted("blackhole") {
        blackhole_and_heal(lab, gatewan, fig, events, marks)?;
    }
    // Latency before the brownout: a browned-out transit sits out the recovery hold after
    // it heals, and the latency step needs the other transit to move to.
    if wanted("latency") {
        latency(lab, gatewan, fig, events)?;
    }
    if wanted("brownout") {
        brownout(lab, gatewan, fig, events)?;
    }
    if wanted("gateway-kill") && lab.plan.gateways >= 2 {
        kill_gateway(lab, fig, events, marks)?;
    }
    if wanted("controller-kill") && lab.controllers.len() >= 2 {
        kill_controller(lab, gatewan, fig, events, marks)?;
    }
    restore(lab, gatewan, events)
}

fn blackhole_and_heal(
    lab: &Lab,
    gatewan: &Path,
    fig: &mut Figures,
    events: &mut Events,
    marks: &mut Marks,
) -> Result<()> {
    // Where dc-a's traffic is. The gateway's local repair moves that traffic to the tunnels of its other transit, before the
    // controller's next order.
    let (gw, t) = busiest(lab, gatewan)?;
    let g = gw.daemon.name.as_str();
    let name = set(
        gw,
        t,
        &Impairment {
            blackhole: true,
            ..Impairment::default()
        },
    )?;
    marks.blackholed = Some(events.mark(format!("{name} of {g} blackholed")));
    println!(
        "\nlab: step 1: {name} (a transit of {g}, the one dc-a's order weights most) blackholed, both ways"
    );
    println!(
        "     look at: the longest gap at the receiving hosts, and where the order sends traffic"
    );
    std::thread::sleep(Duration::from_secs(5));
    let other = gw.transits[1 - t].name;
    println!(
        "  in force at {g} (the order after local repair): weight {} on {name}, {} on {other}",
        weight_on(gatewan, gw, name, Weights::InForce)?,
        weight_on(gatewan, gw, other, Weights::InForce)?
    );

    // The tunnels come back once the probes are clean again and the controller's recovery
    // hold has passed.
    set(gw, t, &Impairment::default())?;
    events.mark(format!("{name} healed"));
    println!(
        "\nlab: step 2: {name} healed; look at: when the order uses it again (after the recovery hold)"
    );
    fig.recovery_s = events.wait_for(
        Duration::from_secs(90),
        format!("{name} back in the order"),
        || ordered_weight(gatewan, gw, name).is_ok_and(|w| w > 0),
    );
    Ok(())
}

/// A transit of dc-a browned out: 5% loss each way breaks the 2% SLA; the controller moves
/// the order off it.
fn brownout(lab: &Lab, gatewan: &Path, fig: &mut Figures, events: &mut Events) -> Result<()> {
    let imp = Impairment {
        loss_pct: 5.0,
        ..Impairment::default()
    };
    fig.brownout_reaction_s = order_moves_off(
        lab,
        gatewan,
        events,
        &imp,
        "step 4: {name} browned out (5% loss each way); look at: when the order moves off it",
    )?;
    Ok(())
}

/// A transit of dc-a slowed: 40 ms ± 5 ms more each way (on its own link, through the delay
/// line). Within the SLA, but the controller ranks by latency (10 ms buckets): the order
/// moves to the other transit.
fn latency(lab: &Lab, gatewan: &Path, fig: &mut Figures, events: &mut Events) -> Result<()> {
    let (gw, t) = busiest(lab, gatewan)?;
    if !gw.transits[t].has_own_link() {
        println!("\nlab: the latency step needs a transit with a link of its own: skipped");
        return Ok(());
    }
    let imp = Impairment {
        latency: Duration::from_millis(40),
        jitter: Duration::from_millis(5),
        ..Impairment::default()
    };
    fig.latency_reaction_s = order_moves_off(
        lab,
        gatewan,
        events,
        &imp,
        "step 3: {name} slowed by 40 ms ± 5 ms each way; look at: the probes' latency in gatewan status, when the order moves off it",
    )?;
    Ok(())
}

/// Impairs the transit of dc-a the order weights most ([`busiest`]) with `imp` (`what` says so, `{name}` being
/// the transit), waits until the order gives it no weight (at most 60 s), heals it; the wait.
fn order_moves_off(
    lab: &Lab,
    gatewan: &Path,
    events: &mut Events,
    imp: &Impairment,
    what: &str,
) -> Result<Option<f64>> {
    std::thread::sleep(Duration::from_secs(2));
    let (gw, t) = busiest(lab, gatewan)?;
    let name = set(gw, t, imp)?;
    events.mark(format!("{name} of {}: {}", gw.daemon.name, imp.describe()));
    println!("\nlab: {}", what.replace("{name}", name));
    let took = events.wait_for(Duration::from_secs(60), format!("order off {name}"), || {
        ordered_weight(gatewan, gw, name).is_ok_and(|w| w == 0)
    });
    std::thread::sleep(Duration::from_secs(2));
    set(gw, t, &Impairment::default())?;
    events.mark(format!("{name} healed"));
    Ok(took)
}

/// Whether dc-a's leaf routes some remote prefix via `vtep`.
fn leaf_routes_via(lab: &Lab, vtep: &str) -> bool {
    let via = format!("via {vtep} ");
    lab.sites.iter().skip(1).any(|remote| {
        lab.sites[0]
            .leaf
            .ip(["route", "show", &remote.prefix])
            .is_ok_and(|r| r.contains(&via))
    })
}

/// A gateway of dc-a that the leaf sends to (a1 if it does) crashes: bgpctl withdraws its
/// RT-5 routes (the controller's order drops it once the mesh sees it fail), the leaf stops
/// sending to it, the remote gateways stop using their tunnels to it.
fn kill_gateway(
    lab: &mut Lab,
    fig: &mut Figures,
    events: &mut Events,
    marks: &mut Marks,
) -> Result<()> {
    std::thread::sleep(Duration::from_secs(2));
    let with_frr = lab.plan.frr;
    // The gateway dc-a's leaf sends to (the orders may have left a1 out by now).
    let (name, vtep) = lab.sites[0]
        .gateways
        .iter()
        .find(|g| !with_frr || leaf_routes_via(lab, &g.vtep))
        .or(lab.sites[0].gateways.first())
        .map(|g| (g.daemon.name.clone(), g.vtep.clone()))
        .ok_or_else(|| TestbedError::Other("dc-a has no gateway".into()))?;
    lab.kill_gateway(&name)?;
    let killed = events.mark(format!("{name} killed"));
    println!(
        "\nlab: step 5: {name} killed (SIGKILL); look at: dc-a's leaf's next hops ({}), the gap at the receiving hosts",
        lab.sites
            .get(1)
            .map_or(String::new(), |s| format!("ip route show {}", s.prefix))
    );
    if with_frr {
        fig.rt5_withdrawn_s = events.wait_for(
            Duration::from_secs(30),
            format!("{name}'s RT-5 routes withdrawn"),
            || !leaf_routes_via(lab, &vtep),
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    marks.gateway_killed = Some((killed, Instant::now()));
    Ok(())
}

/// The name of the controller that leads now, if one does.
fn leader(lab: &Lab, gatewan: &Path) -> Option<String> {
    lab.controllers.iter().find_map(|c| {
        let st = gatewan_json(
            gatewan,
            &["controller", "status", "--json", "--socket"],
            &c.socket,
        )
        .ok()?;
        (st["authoritative"] == true).then(|| c.name.clone())
    })
}

/// Whether every running gateway holds an order from `controller`.
fn ordered_by(lab: &Lab, gatewan: &Path, controller: &str) -> bool {
    lab.gateways()
        .filter(|g| g.daemon.process.is_some())
        .all(|g| {
            gatewan_json(gatewan, &["orders", "--json", "--socket"], &g.daemon.socket)
                .is_ok_and(|o| o["epoch"]["controller"] == controller)
        })
}

fn kill_controller(
    lab: &mut Lab,
    gatewan: &Path,
    fig: &mut Figures,
    events: &mut Events,
    marks: &mut Marks,
) -> Result<()> {
    let Some(leading) = leader(lab, gatewan) else {
        println!("\nlab: step 6 skipped: no controller leads");
        return Ok(());
    };
    let standby = lab
        .controllers
        .iter()
        .find(|c| c.name != leading)
        .map(|c| c.name.clone())
        .unwrap_or_default();
    lab.kill_controller(&leading);
    let killed = events.mark(format!("{leading} killed"));
    println!(
        "\nlab: step 6: the leading controller {leading} killed (SIGKILL); look at: {standby} taking over (gatewan controller status), traffic unaffected"
    );
    fig.controller_takeover_s = events.wait_for(
        Duration::from_secs(45),
        format!("{standby} leads, its orders held"),
        || {
            leader(lab, gatewan).as_deref() == Some(standby.as_str())
                && ordered_by(lab, gatewan, &standby)
        },
    );
    marks.controller_killed = Some((killed, Instant::now()));
    Ok(())
}

/// Starts what the steps killed again, so a kept lab is whole.
fn restore(lab: &mut Lab, gatewan: &Path, events: &mut Events) -> Result<()> {
    let dead: Vec<String> = lab
        .gateways()
        .filter(|g| g.daemon.process.is_none())
        .map(|g| g.daemon.name.clone())
        .collect();
    for name in &dead {
        lab.start_gateway(name)?;
        events.mark(format!("{name} restarted"));
    }
    let stopped: Vec<String> = lab
        .controllers
        .iter()
        .filter(|c| c.process.is_none())
        .map(|c| c.name.clone())
        .collect();
    for name in &stopped {
        lab.start_controller(name)?;
        events.mark(format!("{name} restarted"));
    }
    if !dead.is_empty() || !stopped.is_empty() {
        println!(
            "\nlab: {} started again (the lab is whole for --keep)",
            dead.iter()
                .chain(&stopped)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        let want = lab.tunnels_per_gateway();
        for name in &dead {
            let Some(g) = lab.gateway(name) else { continue };
            let back = until(Duration::from_secs(60), || {
                gatewan_json(gatewan, &["status", "--json", "--socket"], &g.daemon.socket)
                    .is_ok_and(|all| {
                        all.as_array()
                            .into_iter()
                            .flatten()
                            .filter(|t| t["state"] == "Established")
                            .count()
                            == want
                    })
            });
            match back {
                Some(d) => println!(
                    "  {name}: all {want} tunnels up again after {:.1} s",
                    d.as_secs_f64()
                ),
                None => println!("  {name}: not all {want} tunnels up within 60 s"),
            }
        }
    }
    Ok(())
}
