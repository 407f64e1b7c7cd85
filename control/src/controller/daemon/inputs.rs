//! From what the mesh and the gateways' reports say to the engine's [`Snapshot`], checking
//! what can be checked: a report must be from the gateway the channel authenticated, about
//! that gateway's own tunnels, transits and traffic, in the datacenter its tags name.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::controller::inputs::{
    Datacenter, DatacenterPrefixes, GatewayReport, InputIssue, Membership, Snapshot, REPORT_VERSION,
};

/// A gateway's answer this cycle: its member name, the datacenter its tags name, and the
/// report or why there is none.
pub struct Pulled {
    pub member: String,
    pub datacenter: String,
    pub report: Result<GatewayReport, String>,
}

/// The snapshot, and the records left out with why.
pub fn build(membership: Membership, pulled: Vec<Pulled>) -> (Snapshot, Vec<InputIssue>) {
    let mut snap = Snapshot {
        membership,
        ..Snapshot::default()
    };
    let mut issues = Vec::new();
    let mut prefixes: BTreeMap<String, BTreeSet<IpNet>> = BTreeMap::new();
    let mut datacenters = BTreeSet::new();
    for p in pulled {
        let name = p.member;
        let report = match p.report {
            Ok(r) => r,
            Err(e) => {
                issues.push(InputIssue::new("gateway", &name, format!("no report: {e}")));
                continue;
            }
        };
        if report.version != REPORT_VERSION {
            issues.push(InputIssue::new(
                "gateway",
                &name,
                format!(
                    "report version {} (this controller reads {REPORT_VERSION})",
                    report.version
                ),
            ));
            continue;
        }
        if report.gateway.id != name || report.gateway.datacenter != p.datacenter {
            issues.push(InputIssue::new(
                "gateway",
                &name,
                format!(
                    "reports as {} in {} (the mesh says {name} in {})",
                    report.gateway.id, report.gateway.datacenter, p.datacenter
                ),
            ));
            continue;
        }
        let dc = report.gateway.datacenter.clone();
        datacenters.insert(dc.clone());
        for t in report.tunnels {
            if t.local.gateway == name {
                snap.tunnels.push(t);
            } else {
                issues.push(InputIssue::new(
                    "tunnel",
                    &t.id,
                    format!("reported by {name} for {}", t.local.gateway),
                ));
            }
        }
        for u in report.transit_usage {
            if u.gateway == name {
                snap.transit_usage.push(u);
            } else {
                issues.push(InputIssue::new(
                    "transit_usage",
                    format!("{}/{}", u.gateway, u.transit),
                    format!("reported by {name}"),
                ));
            }
        }
        for d in report.demand {
            if d.from == dc {
                snap.demand.push(d);
            } else {
                issues.push(InputIssue::new(
                    "demand",
                    format!("{}->{}", d.from, d.to),
                    format!("reported by {name} of {dc}"),
                ));
            }
        }
        prefixes.entry(dc).or_default().extend(report.prefixes);
        snap.gateways.push(report.gateway);
    }
    // Several gateways of a datacenter each measure part of its demand towards another.
    let mut demand: BTreeMap<(String, String), f64> = BTreeMap::new();
    for d in snap.demand.drain(..) {
        *demand.entry((d.from, d.to)).or_default() += d.rate.as_bps();
    }
    snap.demand = demand
        .into_iter()
        .map(|((from, to), bps)| crate::controller::inputs::Demand {
            from,
            to,
            rate: crate::controller::inputs::Rate::bps(bps),
        })
        .collect();
    snap.datacenters = datacenters
        .into_iter()
        .map(|name| Datacenter { name })
        .collect();
    snap.prefixes = prefixes
        .into_iter()
        .map(|(datacenter, p)| DatacenterPrefixes {
            datacenter,
            prefixes: p.into_iter().collect(),
        })
        .collect();
    issues.sort();
    (snap, issues)
}
