//! Phase 3: per directed datacenter pair its policy and measured demand, per datacenter its
//! prefixes; records reported twice are refused whole.

use std::collections::{BTreeMap, BTreeSet};

use super::members::Members;
use crate::controller::inputs::{InputIssue, Snapshot};
use crate::controller::policy::{PairPolicy, Policy};

/// Pair settings of one cycle, by datacenter index.
pub(super) struct Pairs {
    /// Per (from, to): the policy, at `from * ndc + to`.
    pub policy: Vec<PairPolicy>,
    /// Measured demand per (from, to), bit/s.
    pub demand: BTreeMap<(u32, u32), f64>,
    /// Per datacenter: its prefixes, sorted and deduplicated.
    pub prefixes: Vec<Vec<ipnet::IpNet>>,
}

/// The pairs of `members` with their policy, and the demand and prefixes `snap` reports.
pub(super) fn pairs(
    members: &Members<'_>,
    policy: &Policy,
    snap: &Snapshot,
    issues: &mut Vec<InputIssue>,
) -> Pairs {
    let dcs = &members.dcs;
    let ndc = members.ndc();
    let mut pair_pol: Vec<PairPolicy> = Vec::with_capacity(ndc * ndc);
    for s in dcs {
        for d in dcs {
            pair_pol.push(policy.pair(s, d));
        }
    }
    let mut demand: BTreeMap<(u32, u32), f64> = BTreeMap::new();
    let mut demand_dup: BTreeSet<(u32, u32)> = BTreeSet::new();
    for d in &snap.demand {
        let (Some(s), Some(t)) = (
            members.dc_idx.get(d.from.as_str()),
            members.dc_idx.get(d.to.as_str()),
        ) else {
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
        issues.push(InputIssue::new(
            "demand",
            format!("{}->{}", members.dc_name(k.0), members.dc_name(k.1)),
            "reported more than once; all copies ignored",
        ));
    }
    let mut prefixes: Vec<Vec<ipnet::IpNet>> = vec![Vec::new(); ndc];
    let mut prefix_seen: BTreeMap<u32, u32> = BTreeMap::new();
    for p in &snap.prefixes {
        if let Some(d) = members.dc_idx.get(p.datacenter.as_str()) {
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
                    members.dc_name(d),
                    "reported more than once; all copies ignored",
                ));
            }
            v.sort();
            v.dedup();
        }
    }
    Pairs {
        policy: pair_pol,
        demand,
        prefixes,
    }
}

impl Pairs {
    /// The policy of (from, to).
    pub fn policy(&self, from: u32, to: u32, ndc: usize) -> Option<&PairPolicy> {
        self.policy.get(from as usize * ndc + to as usize)
    }

    /// Every directed pair of distinct datacenters, in the order capacity is handed out:
    /// priority first, then names.
    pub fn by_priority(&self, ndc: usize) -> Vec<(u32, u32)> {
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for s in 0..ndc as u32 {
            for d in 0..ndc as u32 {
                if s != d {
                    pairs.push((s, d));
                }
            }
        }
        pairs.sort_by_key(|&(s, d)| {
            let pr = self.policy(s, d, ndc).map_or(0, |p| p.priority);
            (std::cmp::Reverse(pr), s, d)
        });
        pairs
    }
}
