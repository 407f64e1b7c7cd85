//! Phase 1: who takes part this cycle. Datacenters and live gateways in name order, with
//! duplicates, empty names and the excess over the limits refused and reported.

use std::collections::BTreeSet;

use super::{HashMap, MAX_DATACENTERS, MAX_GATEWAYS};
use crate::controller::inputs::{Gateway, InputIssue, Snapshot};

/// Datacenters and gateways of one cycle, as indices in name order; the later phases work on
/// the indices only. `'a` is the snapshot's lifetime.
pub(super) struct Members<'a> {
    /// Live gateways, by id.
    pub gateways: Vec<&'a Gateway>,
    /// Datacenter names, sorted.
    pub dcs: Vec<&'a str>,
    pub dc_idx: HashMap<&'a str, u32>,
    pub gw_idx: HashMap<&'a str, u32>,
    /// Per gateway: its datacenter.
    pub gw_dc: Vec<u32>,
    /// Per datacenter: its gateways, in name order.
    pub gws_by_dc: Vec<Vec<u32>>,
}

impl<'a> Members<'a> {
    pub fn ndc(&self) -> usize {
        self.dcs.len()
    }

    /// The datacenter of gateway `gw`.
    pub fn dc_of(&self, gw: u32) -> u32 {
        self.gw_dc.get(gw as usize).copied().unwrap_or(0)
    }

    /// The name of datacenter `dc` ("" when out of range).
    pub fn dc_name(&self, dc: u32) -> &'a str {
        self.dcs.get(dc as usize).copied().unwrap_or("")
    }

    /// The id of gateway `gw` ("" when out of range).
    pub fn gateway_id(&self, gw: u32) -> &'a str {
        self.gateways.get(gw as usize).map_or("", |g| g.id.as_str())
    }

    /// The gateways of datacenter `dc`.
    pub fn gateways_in(&self, dc: u32) -> &[u32] {
        self.gws_by_dc
            .get(dc as usize)
            .map_or(&[][..], |v| v.as_slice())
    }

    /// Both ends of the pair have a gateway: only then is there anything to route.
    pub fn pair_reachable(&self, s: u32, d: u32) -> bool {
        !self.gateways_in(s).is_empty() && !self.gateways_in(d).is_empty()
    }
}

/// The cycle's members from `snap`; what is refused goes to `issues`.
pub(super) fn members<'a>(snap: &'a Snapshot, issues: &mut Vec<InputIssue>) -> Members<'a> {
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
    let mut dc_names: BTreeSet<&str> = snap.datacenters.iter().map(|d| d.name.as_str()).collect();
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
    Members {
        gateways: gw_list,
        dcs,
        dc_idx,
        gw_idx,
        gw_dc,
        gws_by_dc,
    }
}
