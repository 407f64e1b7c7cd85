//! The controller itself, sans-IO: [`Controller::step`] takes the time and a [`Snapshot`] and
//! returns the cycle's [`Orders`] (and, when asked, the [`Explanation`]). It keeps the history
//! that anti-flap needs (tunnel health, transit shedding, the orders in force) between steps,
//! and nothing else: no clock, no sockets, no threads.
//!
//! Determinism: every list that reaches the output is built in name order (datacenters,
//! gateways, tunnels ranked with the tunnel id as the last key), never in input order. Hash
//! maps hold state looked up by name; they are never iterated to build output.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::allocate::{self, Cand, Load, Loads, PairNeed, Verdict};
use super::dampening::{Eligibility, PathHealth};
use super::explain::{
    Decision, Explanation, GatewayExplanation, PairExplanation, TransitExplanation,
    TunnelExplanation,
};
use super::gate::{classify, Bad};
use super::inputs::{Gateway, InputIssue, Rate, Snapshot, Time, TunnelReport};
use super::orders::{
    AttractingGateway, Authority, BgpctlOrder, Election, GatewayOrder, Orders, PrefixRoute, Reply,
    Shortfall, TunnelWeight,
};
use super::policy::{Capacity, PairPolicy, Policy};
use super::rank::{rank_key, unit_price, CommitState, RankInput, RankKey};

/// A fast hash map. Hash maps here only look state up by name; nothing that reaches the output
/// is ever built by iterating one, so their order cannot leak into the orders.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

fn map<K, V>() -> HashMap<K, V> {
    HashMap::with_hasher(foldhash::fast::FixedState::default())
}

/// Limits on what one snapshot may hold (far above any real deployment): state and work grow
/// with gateways x datacenters, so a malformed snapshot must not make them explode. The
/// excess (last in name order) is ignored and reported.
pub const MAX_GATEWAYS: usize = 4096;
pub const MAX_DATACENTERS: usize = 512;

/// State of a tunnel not reported for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// One cycle's output.
#[derive(Clone, Debug, PartialEq)]
pub struct Cycle {
    pub orders: Orders,
    pub authority: Authority,
    /// Present when [`Controller::set_explain`] is on.
    pub explanation: Option<Explanation>,
    /// Records ignored this cycle, sorted.
    pub input_issues: Vec<InputIssue>,
}

#[derive(Debug)]
struct PathState {
    gateway: String,
    tunnel: String,
    health: PathHealth,
    /// In the orders in force since then (None: carries no weight).
    in_order_since: Option<Time>,
    /// Its weight in the orders in force.
    weight: u32,
    seen_cycle: u64,
    last_seen: Time,
    /// Row of this cycle's tunnel table.
    row: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct TransitState {
    shedding: bool,
}

/// The decision engine. One per controller process.
#[derive(Debug)]
pub struct Controller {
    policy: Policy,
    election: Election,
    explain: bool,
    cycle: u64,
    path_index: HashMap<String, HashMap<String, u32>>,
    paths: Vec<Option<PathState>>,
    free: Vec<u32>,
    transits: BTreeMap<(String, String), TransitState>,
    commits: BTreeMap<(String, String), CommitState>,
    gateway_orders: BTreeMap<String, GatewayOrder>,
    bgpctl_orders: BTreeMap<String, BgpctlOrder>,
    /// Last version issued per recipient, kept when a recipient leaves so that a returning
    /// one never sees a version go backwards.
    gateway_versions: BTreeMap<String, u64>,
    bgpctl_versions: BTreeMap<String, u64>,
    acked: BTreeMap<String, u64>,
    /// Weights adopted from outside for tunnels not seen yet: (gateway, tunnel) -> weight.
    pending_weights: HashMap<(String, String), u32>,
}

/// One usable tunnel report in this cycle.
struct Row<'a> {
    report: &'a TunnelReport,
    lgw: u32,
    rgw: u32,
    lep: u32,
    rep: u32,
    ddc: u32,
    /// Weight in the orders in force.
    old_weight: u32,
    slot: u32,
    dup: bool,
    elig: Eligibility,
    key: RankKey,
    incumbent: bool,
    pinned: bool,
}

/// One transit endpoint (gateway port to a provider).
struct Ep<'a> {
    gw: u32,
    name: &'a str,
    capacity: f64,
    usage: Option<(f64, f64, f64, f64)>,
    preference: u32,
    price: f64,
    high: f64,
    low: f64,
    shedding: bool,
}

impl Controller {
    pub fn new(id: impl Into<String>, policy: Policy) -> Controller {
        Controller {
            policy,
            election: Election::new(id),
            explain: false,
            cycle: 0,
            path_index: map(),
            paths: Vec::new(),
            free: Vec::new(),
            transits: BTreeMap::new(),
            commits: BTreeMap::new(),
            gateway_orders: BTreeMap::new(),
            bgpctl_orders: BTreeMap::new(),
            gateway_versions: BTreeMap::new(),
            bgpctl_versions: BTreeMap::new(),
            acked: BTreeMap::new(),
            pending_weights: map(),
        }
    }

    /// Build an [`Explanation`] with every cycle (costs time at scale; off by default).
    pub fn set_explain(&mut self, on: bool) {
        self.explain = on;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the policy; history (health, orders in force) is kept.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn id(&self) -> &str {
        self.election.id()
    }

    /// Feeds a receiver's reply to an order: acks are recorded, refusals naming a newer
    /// epoch fence this controller.
    pub fn on_reply(&mut self, recipient: &str, reply: &Reply) {
        self.election.on_reply(reply);
        if let Reply::Ack { version, .. } = reply {
            let e = self.acked.entry(recipient.to_string()).or_insert(0);
            *e = (*e).max(*version);
        }
    }

    /// The highest version `recipient` acknowledged.
    pub fn acked(&self, recipient: &str) -> Option<u64> {
        self.acked.get(recipient).copied()
    }

    /// Takes `orders` as the orders in force (e.g. what gateways hold when this controller
    /// starts), so incumbency, move limits and versions continue from them.
    pub fn adopt(&mut self, orders: &Orders) {
        for (gw, o) in &orders.gateways {
            let v = self.gateway_versions.entry(gw.clone()).or_insert(0);
            *v = (*v).max(o.version);
            self.gateway_orders.insert(gw.clone(), o.clone());
            for tw in o.remotes.values().flatten() {
                let slot = self
                    .path_index
                    .get(gw)
                    .and_then(|m| m.get(&tw.tunnel))
                    .copied();
                match slot.and_then(|s| self.paths.get_mut(s as usize)) {
                    Some(Some(ps)) => ps.weight = tw.weight,
                    _ => {
                        self.pending_weights
                            .insert((gw.clone(), tw.tunnel.clone()), tw.weight);
                    }
                }
            }
        }
        for (dc, o) in &orders.bgpctl {
            let v = self.bgpctl_versions.entry(dc.clone()).or_insert(0);
            *v = (*v).max(o.version);
            self.bgpctl_orders.insert(dc.clone(), o.clone());
        }
    }

    /// One decision cycle at `now`.
    pub fn step(&mut self, now: Time, snap: &Snapshot) -> Cycle {
        self.cycle += 1;
        let cycle = self.cycle;
        let authority = self.election.observe(&snap.membership);
        let mut issues: Vec<InputIssue> = Vec::new();
        let policy = self.policy.clone();
        let health_cfg = policy.health().clone();
        let damp_cfg = policy.anti_flap().dampening.clone();
        let min_dwell = Duration::from_secs_f64(policy.anti_flap().min_dwell_s);

        // --- Datacenters and gateways, in name order.
        let mut gw_list: Vec<&Gateway> = snap.gateways.iter().collect();
        gw_list.sort_by(|a, b| a.id.cmp(&b.id));
        let mut dup_gw: BTreeSet<&str> = BTreeSet::new();
        for w in gw_list.windows(2) {
            if w[0].id == w[1].id {
                dup_gw.insert(&w[0].id);
            }
        }
        for id in &dup_gw {
            issues.push(InputIssue::new(
                "gateway",
                *id,
                "reported more than once; all copies ignored",
            ));
        }
        gw_list.retain(|g| !dup_gw.contains(g.id.as_str()) && g.live);
        gw_list.retain(|g| {
            if g.id.is_empty() || g.datacenter.is_empty() {
                issues.push(InputIssue::new("gateway", &g.id, "empty id or datacenter"));
                false
            } else {
                true
            }
        });
        let mut dc_names: BTreeSet<&str> =
            snap.datacenters.iter().map(|d| d.name.as_str()).collect();
        dc_names.extend(gw_list.iter().map(|g| g.datacenter.as_str()));
        dc_names.remove("");
        let mut dcs: Vec<&str> = dc_names.into_iter().collect();
        if dcs.len() > MAX_DATACENTERS {
            for d in &dcs[MAX_DATACENTERS..] {
                issues.push(InputIssue::new(
                    "datacenter",
                    *d,
                    format!("more than {MAX_DATACENTERS} datacenters; ignored with its gateways"),
                ));
            }
            dcs.truncate(MAX_DATACENTERS);
            let kept: BTreeSet<&str> = dcs.iter().copied().collect();
            gw_list.retain(|g| kept.contains(g.datacenter.as_str()));
        }
        if gw_list.len() > MAX_GATEWAYS {
            for g in &gw_list[MAX_GATEWAYS..] {
                issues.push(InputIssue::new(
                    "gateway",
                    &g.id,
                    format!("more than {MAX_GATEWAYS} gateways; ignored"),
                ));
            }
            gw_list.truncate(MAX_GATEWAYS);
        }
        let ndc = dcs.len();
        let dc_idx: HashMap<&str, u32> = dcs
            .iter()
            .enumerate()
            .map(|(i, d)| (*d, i as u32))
            .collect();
        let gw_idx: HashMap<&str, u32> = gw_list
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.as_str(), i as u32))
            .collect();
        let gw_dc: Vec<u32> = gw_list
            .iter()
            .map(|g| dc_idx.get(g.datacenter.as_str()).copied().unwrap_or(0))
            .collect();
        let mut gws_by_dc: Vec<Vec<u32>> = vec![Vec::new(); ndc];
        for (i, d) in gw_dc.iter().enumerate() {
            if let Some(v) = gws_by_dc.get_mut(*d as usize) {
                v.push(i as u32);
            }
        }

        // --- Transit endpoints: per gateway, its transits in name order.
        let mut eps: Vec<Ep> = Vec::new();
        let mut ep_range: Vec<(u32, u32)> = Vec::with_capacity(gw_list.len());
        for (gi, g) in gw_list.iter().enumerate() {
            let start = eps.len() as u32;
            let mut ts: Vec<_> = g.transits.iter().collect();
            ts.sort_by(|a, b| a.name.cmp(&b.name));
            for (i, t) in ts.iter().enumerate() {
                // A transit listed twice is refused whole: which copy came first must not
                // decide anything.
                let twice = |j: usize| ts.get(j).is_some_and(|o| o.name == t.name);
                if (i > 0 && twice(i - 1)) || twice(i + 1) {
                    if !(i > 0 && twice(i - 1)) {
                        issues.push(InputIssue::new(
                            "gateway",
                            &g.id,
                            format!("transit {} listed twice; it is ignored", t.name),
                        ));
                    }
                    continue;
                }
                let tp = policy.transit(&g.datacenter, &t.name);
                eps.push(Ep {
                    gw: gi as u32,
                    name: &t.name,
                    capacity: t.capacity.as_bps(),
                    usage: None,
                    preference: tp.preference,
                    price: 0.0,
                    high: tp.high_watermark,
                    low: tp.low_watermark,
                    shedding: false,
                });
            }
            ep_range.push((start, eps.len() as u32));
        }
        let find_ep = |gw: u32, name: &str, eps: &[Ep]| -> Option<u32> {
            let (s, e) = ep_range.get(gw as usize).copied()?;
            (s..e).find(|&i| eps.get(i as usize).is_some_and(|ep| ep.name == name))
        };
        let mut usage_seen: BTreeMap<u32, u32> = BTreeMap::new();
        for u in &snap.transit_usage {
            let Some(gi) = gw_idx.get(u.gateway.as_str()).copied() else {
                continue;
            };
            let Some(ei) = find_ep(gi, &u.transit, &eps) else {
                issues.push(InputIssue::new(
                    "transit_usage",
                    format!("{}/{}", u.gateway, u.transit),
                    "no such transit on this gateway",
                ));
                continue;
            };
            *usage_seen.entry(ei).or_insert(0) += 1;
            if let Some(ep) = eps.get_mut(ei as usize) {
                ep.usage = Some((
                    u.tx.as_bps(),
                    u.rx.as_bps(),
                    u.sdwan_tx.as_bps(),
                    u.sdwan_rx.as_bps(),
                ));
            }
        }
        let mut dup_usage: Vec<u32> = usage_seen
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(e, _)| e)
            .collect();
        dup_usage.sort_unstable();
        for ei in dup_usage {
            if let Some(ep) = eps.get_mut(ei as usize) {
                ep.usage = None;
                let gw = gw_list.get(ep.gw as usize).map_or("", |g| g.id.as_str());
                issues.push(InputIssue::new(
                    "transit_usage",
                    format!("{gw}/{}", ep.name),
                    "reported more than once; all copies ignored",
                ));
            }
        }
        // A port whose usage is unknown fails closed: it takes no new load.
        for ep in &eps {
            if ep.usage.is_none() {
                let gw = gw_list.get(ep.gw as usize).map_or("", |g| g.id.as_str());
                issues.push(InputIssue::new(
                    "transit_usage",
                    format!("{gw}/{}", ep.name),
                    "no usage known; the port takes no new load",
                ));
            }
        }
        // Shedding (watermark hysteresis) and commit state. A commit is judged on the traffic
        // that is not gatewan's: judged on gatewan's own traffic, moving it away would put the
        // transit back under the commit and invite it back, every other cycle.
        let mut commit_usage: BTreeMap<(&str, &str), (f64, f64)> = BTreeMap::new();
        for ep in &eps {
            let dc = dcs
                .get(gw_dc.get(ep.gw as usize).copied().unwrap_or(0) as usize)
                .copied()
                .unwrap_or("");
            let (tx, rx) = ep
                .usage
                .map_or((0.0, 0.0), |u| ((u.0 - u.2).max(0.0), (u.1 - u.3).max(0.0)));
            let e = commit_usage.entry((dc, ep.name)).or_insert((0.0, 0.0));
            e.0 += tx;
            e.1 += rx;
        }
        let mut live_transits: BTreeSet<(String, String)> = BTreeSet::new();
        for ep in eps.iter_mut() {
            let gw = gw_list.get(ep.gw as usize).map_or("", |g| g.id.as_str());
            let key = (gw.to_string(), ep.name.to_string());
            let st = self.transits.entry(key.clone()).or_default();
            if let Some((tx, rx, _, _)) = ep.usage {
                let util = if ep.capacity > 0.0 {
                    tx.max(rx) / ep.capacity
                } else {
                    1.0
                };
                if util > ep.high {
                    st.shedding = true;
                } else if util < ep.low {
                    st.shedding = false;
                }
            }
            ep.shedding = st.shedding;
            live_transits.insert(key);
            let dc = dcs
                .get(gw_dc.get(ep.gw as usize).copied().unwrap_or(0) as usize)
                .copied()
                .unwrap_or("");
            let tp = policy.transit(dc, ep.name);
            let over = match &tp.cost {
                super::policy::Cost::Commit { rate: commit, .. } => {
                    let (tx, rx) = commit_usage
                        .get(&(dc, ep.name))
                        .copied()
                        .unwrap_or((0.0, 0.0));
                    let cs = self
                        .commits
                        .entry((dc.to_string(), ep.name.to_string()))
                        .or_default();
                    cs.update(tx.max(rx), commit.as_bps());
                    cs.over
                }
                super::policy::Cost::PerGb(_) => false,
            };
            ep.price = unit_price(&tp.cost, over);
        }
        self.transits.retain(|k, _| live_transits.contains(k));

        // --- Pair settings, demand, prefixes.
        let mut pair_pol: Vec<PairPolicy> = Vec::with_capacity(ndc * ndc);
        for s in &dcs {
            for d in &dcs {
                pair_pol.push(policy.pair(s, d));
            }
        }
        let mut demand: BTreeMap<(u32, u32), f64> = BTreeMap::new();
        let mut demand_dup: BTreeSet<(u32, u32)> = BTreeSet::new();
        for d in &snap.demand {
            let (Some(s), Some(t)) = (dc_idx.get(d.from.as_str()), dc_idx.get(d.to.as_str()))
            else {
                issues.push(InputIssue::new(
                    "demand",
                    format!("{}->{}", d.from, d.to),
                    "unknown datacenter",
                ));
                continue;
            };
            if demand.insert((*s, *t), d.rate.as_bps()).is_some() {
                demand_dup.insert((*s, *t));
            }
        }
        for k in &demand_dup {
            demand.remove(k);
            let name = |i: u32| dcs.get(i as usize).copied().unwrap_or("");
            issues.push(InputIssue::new(
                "demand",
                format!("{}->{}", name(k.0), name(k.1)),
                "reported more than once; all copies ignored",
            ));
        }
        let mut prefixes: Vec<Vec<ipnet::IpNet>> = vec![Vec::new(); ndc];
        let mut prefix_seen: BTreeMap<u32, u32> = BTreeMap::new();
        for p in &snap.prefixes {
            if let Some(d) = dc_idx.get(p.datacenter.as_str()) {
                *prefix_seen.entry(*d).or_insert(0) += 1;
                if let Some(v) = prefixes.get_mut(*d as usize) {
                    v.extend(p.prefixes.iter().map(|n| n.trunc()));
                }
            }
        }
        for (d, n) in prefix_seen {
            if let Some(v) = prefixes.get_mut(d as usize) {
                if n > 1 {
                    v.clear();
                    issues.push(InputIssue::new(
                        "prefixes",
                        dcs.get(d as usize).copied().unwrap_or(""),
                        "reported more than once; all copies ignored",
                    ));
                }
                v.sort();
                v.dedup();
            }
        }

        // --- Tunnels: validate, find their state, drop duplicates.
        let all_gateways: BTreeSet<&str> = snap.gateways.iter().map(|g| g.id.as_str()).collect();
        let mut rows: Vec<Row> = Vec::with_capacity(snap.tunnels.len());
        for t in &snap.tunnels {
            let (Some(lgw), Some(rgw)) = (
                gw_idx.get(t.local.gateway.as_str()).copied(),
                gw_idx.get(t.remote.gateway.as_str()).copied(),
            ) else {
                // A gateway that is down or gone: its tunnels do not count. Unknown names
                // in a live snapshot are reported.
                if !all_gateways.contains(t.local.gateway.as_str())
                    || !all_gateways.contains(t.remote.gateway.as_str())
                {
                    issues.push(InputIssue::new(
                        "tunnel",
                        format!("{}@{}", t.id, t.local.gateway),
                        "unknown gateway",
                    ));
                }
                continue;
            };
            let (Some(lep), Some(rep)) = (
                find_ep(lgw, &t.local.transit, &eps),
                find_ep(rgw, &t.remote.transit, &eps),
            ) else {
                issues.push(InputIssue::new(
                    "tunnel",
                    format!("{}@{}", t.id, t.local.gateway),
                    "unknown transit",
                ));
                continue;
            };
            let sdc = gw_dc.get(lgw as usize).copied().unwrap_or(0);
            let ddc = gw_dc.get(rgw as usize).copied().unwrap_or(0);
            if sdc == ddc {
                issues.push(InputIssue::new(
                    "tunnel",
                    format!("{}@{}", t.id, t.local.gateway),
                    "both ends in the same datacenter",
                ));
                continue;
            }
            if t.id.is_empty() {
                issues.push(InputIssue::new(
                    "tunnel",
                    format!("@{}", t.local.gateway),
                    "empty id",
                ));
                continue;
            }
            if let Some(p) = t.probe.problem() {
                issues.push(InputIssue::new(
                    "tunnel",
                    format!("{}@{}", t.id, t.local.gateway),
                    p,
                ));
                continue;
            }
            let row_idx = rows.len() as u32;
            let slot = self.slot(&t.local.gateway, &t.id, now);
            let mut dup = false;
            if let Some(Some(ps)) = self.paths.get_mut(slot as usize) {
                if ps.seen_cycle == cycle {
                    dup = true;
                    if let Some(first) = rows.get_mut(ps.row as usize) {
                        first.dup = true;
                    }
                } else {
                    ps.seen_cycle = cycle;
                    ps.row = row_idx;
                }
            }
            rows.push(Row {
                report: t,
                lgw,
                rgw,
                lep,
                rep,
                ddc,
                slot,
                dup,
                elig: Eligibility::Eligible,
                key: RankKey::default(),
                incumbent: false,
                pinned: false,
                old_weight: 0,
            });
        }
        let mut dups: BTreeSet<(String, String)> = BTreeSet::new();
        for r in rows.iter().filter(|r| r.dup) {
            dups.insert((r.report.id.clone(), r.report.local.gateway.clone()));
        }
        for (id, gw) in dups {
            issues.push(InputIssue::new(
                "tunnel",
                format!("{id}@{gw}"),
                "reported more than once; all copies ignored",
            ));
        }

        // --- Health and rank of each tunnel.
        let window = Duration::from_secs_f64(health_cfg.latency_baseline_window_s);
        let classes = policy.sla_classes();
        for r in rows.iter_mut().filter(|r| !r.dup) {
            let Some(Some(ps)) = self.paths.get_mut(r.slot as usize) else {
                continue;
            };
            let sdc = gw_dc.get(r.lgw as usize).copied().unwrap_or(0) as usize;
            let pp = pair_pol.get(sdc * ndc + r.ddc as usize);
            let floor = pp.map_or(classes.len().saturating_sub(1), |p| p.sla);
            let Some(class) = classes.get(floor) else {
                continue;
            };
            let baseline = ps.health.baseline.get(now, window);
            let cond = classify(r.report, &health_cfg, baseline, class);
            ps.health.observe(
                now,
                &cond,
                r.report.probe.latency_ms,
                &health_cfg,
                &damp_cfg,
            );
            ps.last_seen = now;
            r.elig = ps.health.eligibility(now, &cond, &health_cfg);
            r.old_weight = ps.weight;
            r.incumbent = ps.weight > 0;
            r.pinned = ps.in_order_since.is_some_and(|s| now.since(s) < min_dwell);
            if r.elig.is_eligible() {
                let (Some(l), Some(rm)) = (eps.get(r.lep as usize), eps.get(r.rep as usize)) else {
                    continue;
                };
                r.key = rank_key(
                    &policy,
                    &RankInput {
                        probe: &r.report.probe,
                        floor,
                        preference: l.preference + rm.preference,
                        price_per_gb: l.price + rm.price,
                        incumbent: r.incumbent,
                    },
                );
            }
        }
        // Tunnels not reported this cycle: their clean stretch ends; long gone, forgotten.
        for slot in 0..self.paths.len() {
            let Some(Some(ps)) = self.paths.get_mut(slot) else {
                continue;
            };
            if ps.seen_cycle == cycle {
                continue;
            }
            ps.health.absent();
            ps.in_order_since = None;
            ps.weight = 0;
            if now.since(ps.last_seen) > FORGET_AFTER {
                let (gw, id) = (ps.gateway.clone(), ps.tunnel.clone());
                if let Some(m) = self.path_index.get_mut(&gw) {
                    m.remove(&id);
                    if m.is_empty() {
                        self.path_index.remove(&gw);
                    }
                }
                if let Some(p) = self.paths.get_mut(slot) {
                    *p = None;
                }
                self.free.push(slot as u32);
            }
        }

        // --- Group by (local gateway, remote datacenter); eligible first in rank order.
        let ngroups = gw_list.len() * ndc;
        let group_of = |r: &Row| r.lgw as usize * ndc + r.ddc as usize;
        let mut offsets = vec![0u32; ngroups + 1];
        for r in rows.iter().filter(|r| !r.dup) {
            if let Some(o) = offsets.get_mut(group_of(r) + 1) {
                *o += 1;
            }
        }
        for i in 0..ngroups {
            offsets[i + 1] += offsets[i];
        }
        let mut members = vec![0u32; offsets.last().copied().unwrap_or(0) as usize];
        let mut fill_pos = offsets.clone();
        for (i, r) in rows.iter().enumerate().filter(|(_, r)| !r.dup) {
            let g = group_of(r);
            if let Some(p) = fill_pos.get_mut(g) {
                if let Some(m) = members.get_mut(*p as usize) {
                    *m = i as u32;
                }
                *p += 1;
            }
        }
        for g in 0..ngroups {
            let (s, e) = (offsets[g] as usize, offsets[g + 1] as usize);
            if let Some(slice) = members.get_mut(s..e) {
                slice.sort_unstable_by(|&a, &b| {
                    let (ra, rb) = (&rows[a as usize], &rows[b as usize]);
                    let (ea, eb) = (ra.elig.is_eligible(), rb.elig.is_eligible());
                    eb.cmp(&ea)
                        .then_with(|| {
                            if ea && eb {
                                ra.key.cmp(&rb.key)
                            } else {
                                std::cmp::Ordering::Equal
                            }
                        })
                        // Then by endpoints (indices in name order), the id only for two
                        // tunnels between the same ports.
                        .then(ra.rep.cmp(&rb.rep))
                        .then(ra.lep.cmp(&rb.lep))
                        .then_with(|| ra.report.id.cmp(&rb.report.id))
                });
            }
        }
        let group = |g: usize| -> &[u32] {
            match (offsets.get(g), offsets.get(g + 1)) {
                (Some(&s), Some(&e)) => members.get(s as usize..e as usize).unwrap_or(&[]),
                _ => &[],
            }
        };

        // --- Allocation, pair by pair: priority first, then names.
        let mut loads = Loads::new(
            eps.iter()
                .map(|e| {
                    // Unknown usage: as if the port were at its watermark already.
                    let full = e.capacity * if e.shedding { e.low } else { e.high };
                    let (btx, brx) = e.usage.map_or((full, full), |(tx, rx, stx, srx)| {
                        ((tx - stx).max(0.0), (rx - srx).max(0.0))
                    });
                    Load {
                        capacity: e.capacity,
                        background_tx: btx,
                        background_rx: brx,
                        limit: if e.shedding { e.low } else { e.high },
                        projected_tx: 0.0,
                        projected_rx: 0.0,
                    }
                })
                .collect(),
        );
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for s in 0..ndc as u32 {
            for d in 0..ndc as u32 {
                if s != d {
                    pairs.push((s, d));
                }
            }
        }
        pairs.sort_by_key(|&(s, d)| {
            let pr = pair_pol
                .get(s as usize * ndc + d as usize)
                .map_or(0, |p| p.priority);
            (std::cmp::Reverse(pr), s, d)
        });
        // Per group: the target shares (aligned with the group's members) and verdicts.
        let mut target: Vec<Option<Vec<f64>>> = vec![None; ngroups];
        let mut verdicts: Vec<Option<Vec<Verdict>>> = vec![None; ngroups];
        let mut last_resort: Vec<bool> = vec![false; ngroups];
        let mut shares_of_pair: Vec<(f64, f64, f64, f64)> = vec![(0.0, 0.0, 0.0, 0.0); ndc * ndc];
        let mut shortfalls: Vec<Shortfall> = Vec::new();
        let keep_margin = policy.anti_flap().keep_margin_pct / 100.0;
        for &(s, d) in &pairs {
            let srcs = gws_by_dc.get(s as usize).map_or(&[][..], |v| v.as_slice());
            if srcs.is_empty() || gws_by_dc.get(d as usize).is_none_or(|v| v.is_empty()) {
                continue;
            }
            let Some(pp) = pair_pol.get(s as usize * ndc + d as usize) else {
                continue;
            };
            let measured = demand.get(&(s, d)).copied();
            let required = match &pp.capacity {
                Capacity::Fixed(r) => r.as_bps(),
                Capacity::Demand { margin_pct, min } => {
                    (measured.unwrap_or(0.0) * (1.0 + margin_pct / 100.0)).max(min.as_bps())
                }
            };
            let traffic = measured.unwrap_or(match &pp.capacity {
                Capacity::Fixed(r) => r.as_bps(),
                Capacity::Demand { .. } => 0.0,
            });
            // Never plan for less than the traffic that is there.
            let required = required.max(traffic);
            let need = PairNeed {
                required,
                min_tunnels: pp.min_tunnels,
                keep_margin,
            };
            let gidx: Vec<usize> = srcs
                .iter()
                .map(|&g| g as usize * ndc + d as usize)
                .collect();
            let mut cands: Vec<Vec<Cand>> = gidx
                .iter()
                .map(|&g| {
                    group(g)
                        .iter()
                        .map(|&i| &rows[i as usize])
                        .filter(|r| r.elig.is_eligible())
                        .map(|r| Cand {
                            local: r.lep,
                            remote: r.rep,
                            remote_gateway: r.rgw,
                            class: (
                                r.key.sla_tier,
                                r.key.preference,
                                r.key.cost_micro,
                                r.key.latency_bucket,
                            ),
                            incumbent: r.incumbent,
                            pinned: r.pinned,
                        })
                        .collect()
                })
                .collect();
            let mut degraded = false;
            // Per gateway: positions in its group of the candidates handed to allocation.
            let mut positions: Vec<Vec<usize>> = gidx
                .iter()
                .map(|&g| {
                    group(g)
                        .iter()
                        .enumerate()
                        .filter(|(_, &i)| rows[i as usize].elig.is_eligible())
                        .map(|(p, _)| p)
                        .collect()
                })
                .collect();
            if cands.iter().all(|c| c.is_empty()) {
                // Nothing meets the SLA: the least bad tunnels that still carry packets.
                degraded = true;
                for (k, &g) in gidx.iter().enumerate() {
                    let mut pos: Vec<usize> = group(g)
                        .iter()
                        .enumerate()
                        .filter(|(_, &i)| carries_packets(&rows[i as usize].elig))
                        .map(|(p, _)| p)
                        .collect();
                    let members_g = group(g);
                    pos.sort_by(|&a, &b| {
                        let (ra, rb) = (&rows[members_g[a] as usize], &rows[members_g[b] as usize]);
                        ra.report
                            .probe
                            .loss_pct
                            .total_cmp(&rb.report.probe.loss_pct)
                            .then(
                                ra.report
                                    .probe
                                    .latency_ms
                                    .total_cmp(&rb.report.probe.latency_ms),
                            )
                            .then_with(|| ra.report.id.cmp(&rb.report.id))
                    });
                    cands[k] = pos
                        .iter()
                        .map(|&p| {
                            let r = &rows[members_g[p] as usize];
                            Cand {
                                local: r.lep,
                                remote: r.rep,
                                remote_gateway: r.rgw,
                                class: (0, 0, 0, 0),
                                incumbent: false,
                                pinned: false,
                            }
                        })
                        .collect();
                    positions[k] = pos;
                }
            }
            let slices: Vec<&[Cand]> = cands.iter().map(|c| c.as_slice()).collect();
            let fill = allocate::allocate_pair(&slices, &mut loads, &need);
            let selected = fill.gateways.iter().filter(|f| f.is_some()).count();
            for (k, f) in fill.gateways.into_iter().enumerate() {
                let g = gidx[k];
                let n = group(g).len();
                let mut t = vec![0.0; n];
                let mut v = vec![Verdict::NotNeeded; n];
                if let Some(f) = f {
                    for (ci, &p) in positions[k].iter().enumerate() {
                        if let (Some(ts), Some(vs)) = (t.get_mut(p), v.get_mut(p)) {
                            *ts = f.shares.get(ci).copied().unwrap_or(0.0);
                            *vs = f.verdicts.get(ci).copied().unwrap_or(Verdict::NotNeeded);
                        }
                    }
                    target[g] = Some(t);
                }
                verdicts[g] = Some(v);
                last_resort[g] = degraded;
            }
            let per_gw = if selected > 0 {
                required / selected as f64
            } else {
                0.0
            };
            shares_of_pair[s as usize * ndc + d as usize] =
                (measured.unwrap_or(0.0), required, fill.met, per_gw);
            let missing = required - fill.met;
            if selected == 0 || degraded || missing > 1e-6 * required.max(1.0) {
                shortfalls.push(Shortfall {
                    from: dcs[s as usize].to_string(),
                    to: dcs[d as usize].to_string(),
                    required: Rate::bps(required),
                    met: Rate::bps(fill.met),
                    missing: Rate::bps(missing.max(0.0)),
                    cause: if selected == 0 {
                        "unreachable"
                    } else if degraded {
                        "degraded"
                    } else {
                        "capacity"
                    }
                    .to_string(),
                });
            }
        }
        shortfalls.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));

        // --- Move limits against the orders in force, quantised weights.
        let scale = policy.weight_scale();
        let max_move = policy.anti_flap().max_move_pct / 100.0;
        let deadband = policy.anti_flap().weight_deadband_pct / 100.0;
        let mut finals: Vec<Option<Vec<u32>>> = vec![None; ngroups];
        let mut final_w: Vec<u32> = vec![0; rows.len()];
        for gi in 0..gw_list.len() {
            for d in 0..ndc {
                let g = gi * ndc + d;
                let Some(tgt) = target[g].as_ref() else {
                    continue;
                };
                let m = group(g);
                // Tunnels of the old order that are gone from the inputs count as failed:
                // their weight is simply not carried over.
                let old: Vec<f64> = m
                    .iter()
                    .map(|&i| f64::from(rows[i as usize].old_weight))
                    .collect();
                // Weight leaves failed tunnels at once; in last-resort mode only those that
                // no longer carry packets count as failed.
                let failed: Vec<bool> = m
                    .iter()
                    .map(|&i| {
                        let e = &rows[i as usize].elig;
                        if last_resort[g] {
                            !carries_packets(e)
                        } else {
                            e.is_failure()
                        }
                    })
                    .collect();
                let shares = allocate::limit_moves(&old, tgt, &failed, max_move, deadband);
                let kept_old = old.iter().any(|w| *w > 0.0)
                    && shares
                        .iter()
                        .zip(&old)
                        .all(|(s, o)| (*s > 0.0) == (*o > 0.0))
                    && {
                        let total: f64 = old.iter().sum();
                        shares
                            .iter()
                            .zip(&old)
                            .all(|(s, o)| (s - o / total).abs() < 1e-12)
                    };
                // Unchanged: resend the old integers, not a requantisation of them.
                let q = if kept_old {
                    old.iter().map(|w| *w as u32).collect()
                } else {
                    allocate::quantise(&shares, scale)
                };
                for (&i, w) in m.iter().zip(&q) {
                    if let Some(f) = final_w.get_mut(i as usize) {
                        *f = *w;
                    }
                }
                finals[g] = Some(q);
            }
        }

        // --- Gateway orders.
        let epoch = authority.epoch.clone();
        let mut gateway_orders: BTreeMap<String, GatewayOrder> = BTreeMap::new();
        for (gi, gw) in gw_list.iter().enumerate() {
            let mut remotes: BTreeMap<String, Vec<TunnelWeight>> = BTreeMap::new();
            for (d, dc) in dcs.iter().enumerate() {
                let g = gi * ndc + d;
                let Some(q) = finals[g].as_ref() else {
                    continue;
                };
                let m = group(g);
                let mut ts: Vec<TunnelWeight> = m
                    .iter()
                    .zip(q)
                    .filter(|(_, w)| **w > 0)
                    .map(|(&i, w)| TunnelWeight {
                        tunnel: rows[i as usize].report.id.clone(),
                        weight: *w,
                    })
                    .collect();
                if ts.is_empty() {
                    continue;
                }
                ts.sort();
                remotes.insert(dc.to_string(), ts);
            }
            let prev = self.gateway_orders.get(&gw.id);
            let last = self.gateway_versions.get(&gw.id).copied().unwrap_or(0);
            let version = match prev {
                Some(p) if p.remotes == remotes && last == p.version => p.version,
                _ => last + 1,
            };
            self.gateway_versions.insert(gw.id.clone(), version);
            gateway_orders.insert(
                gw.id.clone(),
                GatewayOrder {
                    gateway: gw.id.clone(),
                    epoch: epoch.clone(),
                    version,
                    remotes,
                },
            );
        }
        // Weights in force and incumbency for the next cycle (in input order: the state
        // slots were created in that order, so this walks them mostly sequentially).
        for (r, w) in rows.iter().zip(&final_w) {
            if r.dup {
                continue;
            }
            if let Some(Some(ps)) = self.paths.get_mut(r.slot as usize) {
                ps.weight = *w;
                if *w > 0 {
                    ps.in_order_since.get_or_insert(now);
                } else {
                    ps.in_order_since = None;
                }
            }
        }

        // --- bgpctl orders: per datacenter, remote prefixes and the local gateways that
        // must attract them.
        let mut bgpctl_orders: BTreeMap<String, BgpctlOrder> = BTreeMap::new();
        for (s, src) in dcs.iter().enumerate() {
            if gws_by_dc.get(s).is_none_or(|v| v.is_empty()) {
                continue;
            }
            let mut routes: Vec<PrefixRoute> = Vec::new();
            for (d, dst) in dcs.iter().enumerate() {
                if d == s {
                    continue;
                }
                let attracting: Vec<AttractingGateway> = gws_by_dc[s]
                    .iter()
                    .filter_map(|&gi| gw_list.get(gi as usize))
                    .filter(|g| {
                        gateway_orders
                            .get(&g.id)
                            .is_some_and(|o| o.remotes.contains_key(*dst))
                    })
                    .map(|g| AttractingGateway {
                        gateway: g.id.clone(),
                        vtep: g.vtep,
                        router_mac: g.router_mac,
                    })
                    .collect();
                if attracting.is_empty() {
                    continue;
                }
                for p in prefixes.get(d).map_or(&[][..], |v| v.as_slice()) {
                    routes.push(PrefixRoute {
                        prefix: *p,
                        datacenter: dst.to_string(),
                        gateways: attracting.clone(),
                    });
                }
            }
            routes.sort_by(|a, b| (a.prefix, &a.datacenter).cmp(&(b.prefix, &b.datacenter)));
            let prev = self.bgpctl_orders.get(*src);
            let last = self.bgpctl_versions.get(*src).copied().unwrap_or(0);
            let version = match prev {
                Some(p) if p.routes == routes && last == p.version => p.version,
                _ => last + 1,
            };
            self.bgpctl_versions.insert(src.to_string(), version);
            bgpctl_orders.insert(
                src.to_string(),
                BgpctlOrder {
                    datacenter: src.to_string(),
                    epoch: epoch.clone(),
                    version,
                    routes,
                },
            );
        }

        // --- Explanation.
        let explanation = self.explain.then(|| {
            let mut pairs_out = Vec::new();
            let mut sorted_pairs = pairs.clone();
            sorted_pairs.sort_unstable();
            for (s, d) in sorted_pairs {
                let srcs = gws_by_dc.get(s as usize).map_or(&[][..], |v| v.as_slice());
                if srcs.is_empty() || gws_by_dc.get(d as usize).is_none_or(|v| v.is_empty()) {
                    continue;
                }
                let (dem, req, met, per_gw) = shares_of_pair[s as usize * ndc + d as usize];
                let pp = pair_pol.get(s as usize * ndc + d as usize);
                let sla = pp.and_then(|p| classes.get(p.sla)).map_or(String::new(), |c| c.name.clone());
                let mut gws_out = Vec::new();
                for &gi in srcs {
                    let g = gi as usize * ndc + d as usize;
                    let m = group(g);
                    let selected = target[g].is_some();
                    let mut rank = 0u32;
                    let mut tunnels = Vec::with_capacity(m.len());
                    for (p, &i) in m.iter().enumerate() {
                        let r = &rows[i as usize];
                        let w = finals[g].as_ref().and_then(|q| q.get(p)).copied().unwrap_or(0);
                        let v = verdicts[g].as_ref().and_then(|v| v.get(p)).copied().unwrap_or(Verdict::NotNeeded);
                        let eligible = r.elig.is_eligible();
                        if eligible {
                            rank += 1;
                        }
                        let ep_name = |e: u32| -> String {
                            eps.get(e as usize)
                                .map(|ep| format!("{}/{}", gw_list.get(ep.gw as usize).map_or("", |g| g.id.as_str()), ep.name))
                                .unwrap_or_default()
                        };
                        let (decision, reason, detail) = if last_resort[g] && v.taken() {
                            (Decision::LastResort, r.elig.code().to_string(), format!("no tunnel meets the SLA; least bad left: {}", r.elig.detail()))
                        } else if !eligible {
                            (Decision::Skipped, r.elig.code().to_string(), r.elig.detail())
                        } else {
                            match v {
                                Verdict::Taken { grant } => (Decision::Taken, "rank".into(), format!("rank {rank}, offers {}", Rate::bps(grant))),
                                Verdict::Kept { grant, dwell } => (
                                    Decision::Kept,
                                    if dwell { "dwell" } else { "keep_margin" }.into(),
                                    format!("incumbent kept, offers {}", Rate::bps(grant)),
                                ),
                                Verdict::Forced { endpoint, rx } => (
                                    Decision::Forced,
                                    "watermark".into(),
                                    format!("{} {} at its watermark, but nothing better is left", ep_name(endpoint), if rx { "rx" } else { "tx" }),
                                ),
                                Verdict::Watermark { endpoint, rx } => (
                                    Decision::Skipped,
                                    "watermark".into(),
                                    format!("{} {} is at its watermark (detour)", ep_name(endpoint), if rx { "rx" } else { "tx" }),
                                ),
                                Verdict::NotNeeded if selected => (Decision::NotNeeded, "capacity_met".into(), "better-ranked tunnels meet the capacity".into()),
                                Verdict::NotNeeded => (Decision::NotNeeded, "gateway_not_selected".into(), "this gateway does not attract the pair's traffic".into()),
                            }
                        };
                        let decision = if w > 0 && !v.taken() { Decision::Draining } else { decision };
                        let (reason, detail) = if decision == Decision::Draining {
                            ("move_limit".to_string(), format!("still carrying weight under the per-cycle move limit ({reason}: {detail})"))
                        } else {
                            (reason, detail)
                        };
                        let rt = eps.get(r.rep as usize).map(|e| e.name).unwrap_or("");
                        tunnels.push(TunnelExplanation {
                            tunnel: r.report.id.clone(),
                            via: format!("{} -> {}/{}", r.report.local.transit, r.report.remote.gateway, rt),
                            rank: eligible.then_some(rank),
                            key: eligible.then_some(r.key),
                            decision,
                            reason,
                            detail,
                            weight: w,
                            latency_ms: r.report.probe.latency_ms,
                            loss_pct: r.report.probe.loss_pct,
                        });
                    }
                    gws_out.push(GatewayExplanation {
                        gateway: gw_list.get(gi as usize).map_or(String::new(), |g| g.id.clone()),
                        selected,
                        share: Rate::bps(if selected { per_gw } else { 0.0 }),
                        tunnels,
                    });
                }
                let short = req - met;
                pairs_out.push(PairExplanation {
                    from: dcs[s as usize].to_string(),
                    to: dcs[d as usize].to_string(),
                    sla,
                    demand: Rate::bps(dem),
                    required: Rate::bps(req),
                    met: Rate::bps(met),
                    shortfall: (short > 1e-6 * req.max(1.0)).then(|| Rate::bps(short)),
                    gateways: gws_out,
                });
            }
            let transits = eps
                .iter()
                .zip(&loads.v)
                .map(|(e, l)| TransitExplanation {
                    gateway: gw_list.get(e.gw as usize).map_or(String::new(), |g| g.id.clone()),
                    transit: e.name.to_string(),
                    capacity: Rate::bps(e.capacity),
                    background_tx: Rate::bps(l.background_tx),
                    background_rx: Rate::bps(l.background_rx),
                    projected_tx: Rate::bps(l.projected_tx),
                    projected_rx: Rate::bps(l.projected_rx),
                    limit_pct: l.limit * 100.0,
                    shedding: e.shedding,
                })
                .collect();
            let mut iss = issues.clone();
            iss.sort();
            Explanation {
                at: now,
                pairs: pairs_out,
                transits,
                input_issues: iss,
            }
        });

        self.gateway_orders = gateway_orders.clone();
        self.bgpctl_orders = bgpctl_orders.clone();
        issues.sort();
        issues.dedup();
        Cycle {
            orders: Orders {
                controller: self.election.id().to_string(),
                epoch,
                authoritative: authority.authoritative,
                gateways: gateway_orders,
                bgpctl: bgpctl_orders,
                shortfalls,
            },
            authority,
            explanation,
            input_issues: issues,
        }
    }

    /// The state slot of (gateway, tunnel), created if new.
    fn slot(&mut self, gateway: &str, tunnel: &str, now: Time) -> u32 {
        if let Some(&s) = self.path_index.get(gateway).and_then(|m| m.get(tunnel)) {
            return s;
        }
        let weight = if self.pending_weights.is_empty() {
            0
        } else {
            self.pending_weights
                .remove(&(gateway.to_string(), tunnel.to_string()))
                .unwrap_or(0)
        };
        let ps = PathState {
            gateway: gateway.to_string(),
            tunnel: tunnel.to_string(),
            health: PathHealth::default(),
            // Adopted orders: in force since an unknown time, so past any dwell.
            in_order_since: (weight > 0).then_some(Time::ZERO),
            weight,
            seen_cycle: 0,
            last_seen: now,
            row: 0,
        };
        let s = match self.free.pop() {
            Some(s) => {
                if let Some(p) = self.paths.get_mut(s as usize) {
                    *p = Some(ps);
                }
                s
            }
            None => {
                self.paths.push(Some(ps));
                (self.paths.len() - 1) as u32
            }
        };
        self.path_index
            .entry(gateway.to_string())
            .or_default()
            .insert(tunnel.to_string(), s);
        s
    }
}

/// Established, measured and not blackholed: a last resort can still carry packets.
fn carries_packets(e: &Eligibility) -> bool {
    match e {
        Eligibility::Eligible | Eligibility::Recovering { .. } | Eligibility::Dampened { .. } => {
            true
        }
        Eligibility::Bad { bad } => matches!(
            bad,
            Bad::BrownoutLoss { .. } | Bad::BrownoutLatency { .. } | Bad::Sla { .. }
        ),
        Eligibility::Unmeasured { .. } => false,
    }
}
