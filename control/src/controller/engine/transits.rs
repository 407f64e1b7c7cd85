//! Phase 2: transit endpoints (a gateway's port to one provider). Per gateway its transits in
//! name order with their policy and measured usage; then watermark shedding and commit state,
//! which carry over between cycles.

use std::collections::{BTreeMap, BTreeSet};

use super::members::Members;
use crate::controller::inputs::{InputIssue, TransitUsage};
use crate::controller::policy::{Cost, Policy};
use crate::controller::rank::{unit_price, CommitState};

/// A transit's state between cycles.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TransitState {
    shedding: bool,
}

/// One transit endpoint.
pub(super) struct Ep<'a> {
    pub gw: u32,
    pub name: &'a str,
    pub capacity: f64,
    /// (tx, rx, sdwan_tx, sdwan_rx) in bit/s; None when not reported (or reported twice).
    pub usage: Option<(f64, f64, f64, f64)>,
    pub preference: u32,
    pub price: f64,
    pub high: f64,
    pub low: f64,
    pub shedding: bool,
}

/// All endpoints of the cycle, gateway by gateway (each gateway's a contiguous range).
pub(super) struct Endpoints<'a> {
    pub eps: Vec<Ep<'a>>,
    /// Per gateway: its range in `eps`.
    ranges: Vec<(u32, u32)>,
}

impl Endpoints<'_> {
    /// The endpoint of gateway `gw` on transit `name`.
    pub fn find(&self, gw: u32, name: &str) -> Option<u32> {
        let (s, e) = self.ranges.get(gw as usize).copied()?;
        (s..e).find(|&i| self.eps.get(i as usize).is_some_and(|ep| ep.name == name))
    }
}

/// The endpoints of `members`' gateways, with the usage reported for them. Transits listed
/// twice on a gateway, usage for unknown transits or reported twice, and ports with no usage
/// known go to `issues`.
pub(super) fn endpoints<'a>(
    members: &Members<'a>,
    policy: &Policy,
    usage: &[TransitUsage],
    issues: &mut Vec<InputIssue>,
) -> Endpoints<'a> {
    let gw_list = &members.gateways;
    let mut eps: Vec<Ep> = Vec::new();
    let mut ranges: Vec<(u32, u32)> = Vec::with_capacity(gw_list.len());
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
        ranges.push((start, eps.len() as u32));
    }
    let mut endpoints = Endpoints { eps, ranges };
    let mut usage_seen: BTreeMap<u32, u32> = BTreeMap::new();
    for u in usage {
        let Some(gi) = members.gw_idx.get(u.gateway.as_str()).copied() else {
            continue;
        };
        let Some(ei) = endpoints.find(gi, &u.transit) else {
            issues.push(InputIssue::new(
                "transit_usage",
                format!("{}/{}", u.gateway, u.transit),
                "no such transit on this gateway",
            ));
            continue;
        };
        *usage_seen.entry(ei).or_insert(0) += 1;
        if let Some(ep) = endpoints.eps.get_mut(ei as usize) {
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
        if let Some(ep) = endpoints.eps.get_mut(ei as usize) {
            ep.usage = None;
            let gw = members.gateway_id(ep.gw);
            issues.push(InputIssue::new(
                "transit_usage",
                format!("{gw}/{}", ep.name),
                "reported more than once; all copies ignored",
            ));
        }
    }
    // A port whose usage is unknown fails closed: it takes no new load.
    for ep in &endpoints.eps {
        if ep.usage.is_none() {
            let gw = members.gateway_id(ep.gw);
            issues.push(InputIssue::new(
                "transit_usage",
                format!("{gw}/{}", ep.name),
                "no usage known; the port takes no new load",
            ));
        }
    }
    endpoints
}

/// Shedding (watermark hysteresis) and commit state, carried in `transits` and `commits`
/// between cycles; sets each endpoint's `shedding` and `price`. Transits gone from the
/// snapshot lose their shedding state.
///
/// A commit is judged on the traffic that is not gatewan's: judged on gatewan's own traffic,
/// moving it away would put the transit back under the commit and invite it back, every other
/// cycle.
pub(super) fn judge(
    endpoints: &mut Endpoints<'_>,
    members: &Members<'_>,
    policy: &Policy,
    transits: &mut BTreeMap<(String, String), TransitState>,
    commits: &mut BTreeMap<(String, String), CommitState>,
) {
    let dc_of = |gw: u32| members.dc_name(members.dc_of(gw));
    let mut commit_usage: BTreeMap<(&str, &str), (f64, f64)> = BTreeMap::new();
    for ep in &endpoints.eps {
        let dc = dc_of(ep.gw);
        let (tx, rx) = ep
            .usage
            .map_or((0.0, 0.0), |u| ((u.0 - u.2).max(0.0), (u.1 - u.3).max(0.0)));
        let e = commit_usage.entry((dc, ep.name)).or_insert((0.0, 0.0));
        e.0 += tx;
        e.1 += rx;
    }
    let mut live_transits: BTreeSet<(String, String)> = BTreeSet::new();
    for ep in endpoints.eps.iter_mut() {
        let gw = members.gateway_id(ep.gw);
        let key = (gw.to_string(), ep.name.to_string());
        let st = transits.entry(key.clone()).or_default();
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
        let dc = dc_of(ep.gw);
        let tp = policy.transit(dc, ep.name);
        let over = match &tp.cost {
            Cost::Commit { rate: commit, .. } => {
                let (tx, rx) = commit_usage
                    .get(&(dc, ep.name))
                    .copied()
                    .unwrap_or((0.0, 0.0));
                // Every endpoint of the transit in the datacenter updates its (shared)
                // state, with the same usage.
                let cs = commits
                    .entry((dc.to_string(), ep.name.to_string()))
                    .or_default();
                cs.update(tx.max(rx), commit.as_bps());
                cs.over
            }
            Cost::PerGb(_) => false,
        };
        ep.price = unit_price(&tp.cost, over);
    }
    transits.retain(|k, _| live_transits.contains(k));
}
