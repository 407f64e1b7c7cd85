//! Phase 4: the tunnels. Reports are validated and matched to their state (reported twice:
//! refused whole), judged healthy or not, ranked, and grouped by (local gateway, remote
//! datacenter) with the eligible ones first in rank order.

use std::collections::BTreeSet;
use std::time::Duration;

use super::members::Members;
use super::pairs::Pairs;
use super::paths::PathTable;
use super::transits::Endpoints;
use crate::controller::dampening::Eligibility;
use crate::controller::gate::classify;
use crate::controller::inputs::{InputIssue, Snapshot, Time, TunnelReport};
use crate::controller::policy::Policy;
use crate::controller::rank::{rank_key, RankInput, RankKey};

/// One usable tunnel report in this cycle.
pub(super) struct Row<'a> {
    pub report: &'a TunnelReport,
    /// Local and remote gateways.
    pub lgw: u32,
    pub rgw: u32,
    /// Local and remote endpoints.
    pub lep: u32,
    pub rep: u32,
    /// Remote datacenter.
    pub ddc: u32,
    /// Weight in the orders in force.
    pub old_weight: u32,
    /// Its state in the [`PathTable`].
    pub slot: u32,
    /// Reported more than once: ignored.
    pub dup: bool,
    pub elig: Eligibility,
    pub key: RankKey,
    pub incumbent: bool,
    pub pinned: bool,
}

/// The usable tunnel reports of `snap`, in input order, each with its state slot (created if
/// new, marked seen in `cycle`). Tunnels between gateways that are down are left out; those
/// naming unknown gateways or transits, within one datacenter, with no id, with a bad probe
/// window, or reported twice go to `issues`.
pub(super) fn rows<'a>(
    snap: &'a Snapshot,
    members: &Members<'_>,
    endpoints: &Endpoints<'_>,
    paths: &mut PathTable,
    cycle: u64,
    now: Time,
    issues: &mut Vec<InputIssue>,
) -> Vec<Row<'a>> {
    let all_gateways: BTreeSet<&str> = snap.gateways.iter().map(|g| g.id.as_str()).collect();
    let mut rows: Vec<Row> = Vec::with_capacity(snap.tunnels.len());
    for t in &snap.tunnels {
        let (Some(lgw), Some(rgw)) = (
            members.gw_idx.get(t.local.gateway.as_str()).copied(),
            members.gw_idx.get(t.remote.gateway.as_str()).copied(),
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
            endpoints.find(lgw, &t.local.transit),
            endpoints.find(rgw, &t.remote.transit),
        ) else {
            issues.push(InputIssue::new(
                "tunnel",
                format!("{}@{}", t.id, t.local.gateway),
                "unknown transit",
            ));
            continue;
        };
        let sdc = members.dc_of(lgw);
        let ddc = members.dc_of(rgw);
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
        let slot = paths.slot(&t.local.gateway, &t.id, now);
        let mut dup = false;
        if let Some(ps) = paths.get_mut(slot) {
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
    rows
}

/// Health and rank of each tunnel: feeds this cycle's probe window to its history, then sets
/// the row's eligibility, incumbency, dwell pin and (when eligible) rank key.
pub(super) fn assess(
    rows: &mut [Row<'_>],
    members: &Members<'_>,
    endpoints: &Endpoints<'_>,
    pairs: &Pairs,
    policy: &Policy,
    paths: &mut PathTable,
    now: Time,
) {
    let health_cfg = policy.health();
    let damp_cfg = &policy.anti_flap().dampening;
    let min_dwell = Duration::from_secs_f64(policy.anti_flap().min_dwell_s);
    let window = Duration::from_secs_f64(health_cfg.latency_baseline_window_s);
    let classes = policy.sla_classes();
    let ndc = members.ndc();
    let eps = &endpoints.eps;
    for r in rows.iter_mut().filter(|r| !r.dup) {
        let Some(ps) = paths.get_mut(r.slot) else {
            continue;
        };
        let sdc = members.dc_of(r.lgw);
        let pp = pairs.policy(sdc, r.ddc, ndc);
        let floor = pp.map_or(classes.len().saturating_sub(1), |p| p.sla);
        let Some(class) = classes.get(floor) else {
            continue;
        };
        let baseline = ps.health.baseline.get(now, window);
        let cond = classify(r.report, health_cfg, baseline, class);
        ps.health
            .observe(now, &cond, r.report.probe.latency_ms, health_cfg, damp_cfg);
        ps.last_seen = now;
        r.elig = ps.health.eligibility(now, &cond, health_cfg);
        r.old_weight = ps.weight;
        r.incumbent = ps.weight > 0;
        r.pinned = ps.in_order_since.is_some_and(|s| now.since(s) < min_dwell);
        if r.elig.is_eligible() {
            let (Some(l), Some(rm)) = (eps.get(r.lep as usize), eps.get(r.rep as usize)) else {
                continue;
            };
            r.key = rank_key(
                policy,
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
}

/// The non-duplicate rows grouped by (local gateway, remote datacenter), group
/// `gateway * ndc + datacenter`: eligible first in rank order, then by endpoints.
pub(super) struct Groups {
    /// Group `g` is `members[offsets[g]..offsets[g + 1]]`.
    offsets: Vec<u32>,
    /// Row indices.
    members: Vec<u32>,
}

impl Groups {
    pub fn new(rows: &[Row<'_>], ngateways: usize, ndc: usize) -> Groups {
        let ngroups = ngateways * ndc;
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
        Groups { offsets, members }
    }

    /// The rows of group `g`, best first.
    pub fn get(&self, g: usize) -> &[u32] {
        match (self.offsets.get(g), self.offsets.get(g + 1)) {
            (Some(&s), Some(&e)) => self.members.get(s as usize..e as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}
