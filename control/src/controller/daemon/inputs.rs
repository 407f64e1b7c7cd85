//! From what the mesh and the gateways' reports say to the engine's [`Snapshot`], checking
//! what can be checked: a report must be from the gateway the channel authenticated, about
//! that gateway's own tunnels, transits and traffic, in the datacenter its tags name.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::controller::inputs::{
    Datacenter, DatacenterPrefixes, GatewayReport, InputIssue, Membership, Snapshot, REPORT_VERSION,
};

/// A gateway's answer this cycle: its member name, the datacenter its tags name, the report
/// or why there is none, and the records of it that could not be read.
pub struct Pulled {
    pub member: String,
    pub datacenter: String,
    pub report: Result<GatewayReport, String>,
    pub issues: Vec<InputIssue>,
}

/// A report as it arrives: its records kept raw, so one that cannot be read (a number out of
/// range, a field of the wrong type) costs that record only, never the report or the cycle.
#[derive(serde::Deserialize)]
struct RawReport {
    version: u32,
    gateway: crate::controller::inputs::Gateway,
    #[serde(default)]
    tunnels: Vec<serde_json::Value>,
    #[serde(default)]
    transit_usage: Vec<serde_json::Value>,
    #[serde(default)]
    demand: Vec<serde_json::Value>,
    #[serde(default)]
    prefixes: Vec<serde_json::Value>,
    #[serde(default)]
    order: Option<(crate::controller::orders::Epoch, u64)>,
}

/// Reads each record on its own; unreadable ones are listed by kind and content.
fn records<T: serde::de::DeserializeOwned>(
    kind: &str,
    raw: Vec<serde_json::Value>,
    issues: &mut Vec<InputIssue>,
) -> Vec<T> {
    raw.into_iter()
        .filter_map(|v| match serde_json::from_value::<T>(v.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                let id = v
                    .get("id")
                    .or_else(|| v.get("transit"))
                    .or_else(|| v.get("to"))
                    .map_or_else(
                        || v.to_string().chars().take(64).collect(),
                        |x| x.to_string(),
                    );
                issues.push(InputIssue::new(kind, id, format!("unreadable: {e}")));
                None
            }
        })
        .collect()
}

/// Parses a gateway's report body: the report, and the records left out.
pub fn parse_report(body: &[u8]) -> Result<(GatewayReport, Vec<InputIssue>), String> {
    let raw: RawReport = serde_json::from_slice(body).map_err(|e| format!("report: {e}"))?;
    let mut issues = Vec::new();
    let report = GatewayReport {
        version: raw.version,
        tunnels: records("tunnel", raw.tunnels, &mut issues),
        transit_usage: records("transit_usage", raw.transit_usage, &mut issues),
        demand: records("demand", raw.demand, &mut issues),
        prefixes: records("prefixes", raw.prefixes, &mut issues),
        gateway: raw.gateway,
        order: raw.order,
    };
    Ok((report, issues))
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
        issues.extend(p.issues);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_bad_record_costs_that_record_only() {
        let body = br#"{"version":1,
            "gateway":{"id":"gw1","datacenter":"a","vtep":"10.0.0.1","router_mac":"02:00:00:00:00:01","transits":[]},
            "tunnels":[
              {"id":"t1","local":{"gateway":"gw1","transit":"x"},"remote":{"gateway":"gw2","transit":"y"},"state":"established"},
              {"id":"t2","local":{"gateway":"gw1","transit":"x"},"remote":{"gateway":"gw2","transit":"y"},"state":"established","probe":{"loss_pct":"lots"}}],
            "transit_usage":[{"gateway":"gw1","transit":"x","rx":-5,"tx":0}],
            "demand":[{"from":"a","to":"b","rate":"1G"}]}"#;
        let (report, issues) = parse_report(body).unwrap();
        assert_eq!(report.tunnels.len(), 1);
        assert!(report.transit_usage.is_empty());
        assert_eq!(report.demand.len(), 1);
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues
            .iter()
            .any(|i| i.kind == "tunnel" && i.id.contains("t2")));
        let pulled = vec![Pulled {
            member: "gw1".into(),
            datacenter: "a".into(),
            report: Ok(report),
            issues,
        }];
        let (snap, issues) = build(Membership::default(), pulled);
        assert_eq!(snap.tunnels.len(), 1);
        assert_eq!(issues.len(), 2);
        // A report naming someone else is refused whole.
        assert!(parse_report(b"[]").is_err());
    }
}
