//! Phase 6: the orders. Per gateway its tunnel weights per remote datacenter; per datacenter
//! the remote prefixes and the local gateways that must attract them. A recipient's version
//! moves only when its order changes.

use std::collections::BTreeMap;

use super::cycle::View;
use super::fill::Weights;
use crate::controller::orders::{
    AttractingGateway, BgpctlOrder, Epoch, GatewayOrder, PrefixRoute, TunnelWeight,
};

/// The version of an order: the previous one's if the content is unchanged and it is the
/// last issued, else one past the last issued.
fn version(prev: Option<(u64, bool)>, last: u64) -> u64 {
    match prev {
        Some((v, same)) if same && last == v => v,
        _ => last + 1,
    }
}

/// Every gateway's order (a gateway with no weights gets an empty one). `prev` is the orders
/// in force; `versions`, the last version issued per gateway, is updated.
pub(super) fn gateway_orders(
    v: &View<'_, '_>,
    weights: &Weights,
    epoch: &Epoch,
    prev: &BTreeMap<String, GatewayOrder>,
    versions: &mut BTreeMap<String, u64>,
) -> BTreeMap<String, GatewayOrder> {
    let ndc = v.members.ndc();
    let mut gateway_orders: BTreeMap<String, GatewayOrder> = BTreeMap::new();
    for (gi, gw) in v.members.gateways.iter().enumerate() {
        let mut remotes: BTreeMap<String, Vec<TunnelWeight>> = BTreeMap::new();
        for (d, dc) in v.members.dcs.iter().enumerate() {
            let g = gi * ndc + d;
            let Some(q) = weights.finals[g].as_ref() else {
                continue;
            };
            let mut ts: Vec<TunnelWeight> = v
                .group(g)
                .iter()
                .zip(q)
                .filter(|(_, w)| **w > 0)
                .map(|(&i, w)| TunnelWeight {
                    tunnel: v.rows[i as usize].report.id.clone(),
                    weight: *w,
                })
                .collect();
            if ts.is_empty() {
                continue;
            }
            ts.sort();
            remotes.insert(dc.to_string(), ts);
        }
        let p = prev.get(&gw.id).map(|p| (p.version, p.remotes == remotes));
        let last = versions.get(&gw.id).copied().unwrap_or(0);
        let version = version(p, last);
        versions.insert(gw.id.clone(), version);
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
    gateway_orders
}

/// Every datacenter's bgpctl order (datacenters with no gateway get none): per remote
/// datacenter with a route, its prefixes via the local gateways whose order reaches it.
/// `prev` is the orders in force; `versions` is updated as for gateways.
pub(super) fn bgpctl_orders(
    v: &View<'_, '_>,
    gateway_orders: &BTreeMap<String, GatewayOrder>,
    epoch: &Epoch,
    prev: &BTreeMap<String, BgpctlOrder>,
    versions: &mut BTreeMap<String, u64>,
) -> BTreeMap<String, BgpctlOrder> {
    let m = v.members;
    let mut bgpctl_orders: BTreeMap<String, BgpctlOrder> = BTreeMap::new();
    for (s, src) in m.dcs.iter().enumerate() {
        if m.gws_by_dc.get(s).is_none_or(|g| g.is_empty()) {
            continue;
        }
        let mut routes: Vec<PrefixRoute> = Vec::new();
        for (d, dst) in m.dcs.iter().enumerate() {
            if d == s {
                continue;
            }
            let attracting: Vec<AttractingGateway> = m.gws_by_dc[s]
                .iter()
                .filter_map(|&gi| m.gateways.get(gi as usize))
                .filter(|g| {
                    gateway_orders
                        .get(&g.id)
                        .is_some_and(|o| o.remotes.contains_key(*dst))
                })
                .map(|g| AttractingGateway {
                    gateway: g.id.clone(),
                    vtep: g.vtep,
                    router_mac: g.router_mac,
                    weight: 1,
                })
                .collect();
            if attracting.is_empty() {
                continue;
            }
            for p in v.pairs.prefixes.get(d).map_or(&[][..], |p| p.as_slice()) {
                routes.push(PrefixRoute {
                    prefix: *p,
                    datacenter: dst.to_string(),
                    gateways: attracting.clone(),
                });
            }
        }
        routes.sort_by(|a, b| (a.prefix, &a.datacenter).cmp(&(b.prefix, &b.datacenter)));
        let p = prev.get(*src).map(|p| (p.version, p.routes == routes));
        let last = versions.get(*src).copied().unwrap_or(0);
        let version = version(p, last);
        versions.insert(src.to_string(), version);
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
    bgpctl_orders
}
