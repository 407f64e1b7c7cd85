//! bgpctl's side of the controller's orders, sans-IO: which orders it takes (the same
//! fencing as a gateway's: the epoch's controller, authenticated, live in the mesh, its term
//! within the membership clock), and the export set the order in force becomes.
//!
//! Loops and leaks are refused here, whatever the order says:
//! - an order naming a route towards our own datacenter is refused whole (a remote prefix
//!   never reaches its own fabric through us);
//! - a prefix the fabric announces to us (an imported local prefix, or one inside it) is
//!   never exported back into it;
//! - only gateways of our datacenter in the mesh view attract routes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::bgp::config::GatewayConfig;
use crate::bgp::rib::{ExportPrefix, ExportSet, Gateway};
use crate::bgp::wire::extcomm::RouteTarget;
use crate::channel::Identity;
use crate::controller::orders::{BgpctlOrder, ControllerView, Receiver, Reply};

/// What `GET /v1/order` and the logs show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<BgpctlOrder>,
    pub acked: u64,
    pub refused: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
    pub epoch_releases: u64,
    /// From the order file, not yet confirmed by a controller.
    pub restored: bool,
    /// Export entries left out of the last export set, by why.
    pub skipped: BTreeMap<String, u64>,
}

/// What the export set is made with besides the order.
#[derive(Clone, Debug, Default)]
pub struct ExportBase {
    pub vni: u32,
    pub route_targets: Vec<RouteTarget>,
    /// RDs set in the configuration, by gateway.
    pub gateways: BTreeMap<String, GatewayConfig>,
}

/// The intake (see the module's documentation).
#[derive(Debug)]
pub struct OrderIntake {
    datacenter: String,
    receiver: Receiver<BgpctlOrder>,
    controllers: ControllerView,
    /// Gateways of our datacenter in the mesh view (any status); None before the view.
    gateways: Option<BTreeSet<String>>,
    status: IntakeStatus,
}

impl OrderIntake {
    pub fn new(datacenter: &str) -> OrderIntake {
        OrderIntake {
            datacenter: datacenter.to_owned(),
            receiver: Receiver::new(datacenter),
            controllers: ControllerView::default(),
            gateways: None,
            status: IntakeStatus::default(),
        }
    }

    pub fn current(&self) -> Option<&BgpctlOrder> {
        self.receiver.current()
    }

    /// Puts back the order kept on disk.
    pub fn restore(&mut self, order: BgpctlOrder) -> bool {
        let ok = matches!(self.receiver.offer(order, |_| Ok(())), Reply::Ack { .. });
        self.status.restored = ok;
        ok
    }

    pub fn handle_controllers(&mut self, view: ControllerView) {
        self.controllers = view;
    }

    /// Our datacenter's gateways in a new mesh view; true when the set changed.
    pub fn handle_gateways(&mut self, gateways: BTreeSet<String>) -> bool {
        let changed = self.gateways.as_ref() != Some(&gateways);
        self.gateways = Some(gateways);
        changed
    }

    /// An order from `peer`; the second value is true when the order in force changed.
    pub fn offer(
        &mut self,
        order: BgpctlOrder,
        peer: &Identity,
        _wall: SystemTime,
    ) -> (Reply, bool) {
        let before = self.current().map(|o| (o.epoch.clone(), o.version));
        let reply = match self.receiver.admit(&order, peer, &self.controllers) {
            Err(reason) => self.receiver.refusal(reason),
            Ok(released) => {
                if released {
                    self.status.epoch_releases += 1;
                }
                let ours = self.datacenter.clone();
                self.receiver.offer(order, |o| {
                    match o.routes.iter().find(|r| r.datacenter == ours) {
                        Some(r) => Err(format!(
                            "{} is {ours}'s own prefix: it would be exported into its own fabric",
                            r.prefix
                        )),
                        None => Ok(()),
                    }
                })
            }
        };
        match &reply {
            Reply::Ack { .. } => self.status.acked += 1,
            Reply::Refuse { reason, .. } => {
                self.status.refused += 1;
                self.status.last_refusal = Some(format!("{reason:?}"));
                tracing::warn!(?reason, "order refused");
            }
        }
        let changed = self.current().map(|o| (o.epoch.clone(), o.version)) != before;
        if changed {
            self.status.restored = false;
        }
        (reply, changed)
    }

    /// The export set of the order in force, without what would loop: prefixes the fabric
    /// announces (`local`), gateways not of our datacenter. Weights go out only when a
    /// prefix's gateways are weighted unequally.
    pub fn export_set(&mut self, base: &ExportBase, local: &[IpNet]) -> ExportSet {
        let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
        let mut prefixes = Vec::new();
        for r in self
            .receiver
            .current()
            .map_or(&[][..], |o| o.routes.as_slice())
        {
            if local.iter().any(|l| l.contains(&r.prefix)) {
                *skipped.entry("local_prefix".into()).or_default() += 1;
                continue;
            }
            let gateways: Vec<_> = r
                .gateways
                .iter()
                .filter(|g| {
                    let ours = self
                        .gateways
                        .as_ref()
                        .is_none_or(|s| s.contains(&g.gateway));
                    if !ours {
                        *skipped.entry("not_our_gateway".into()).or_default() += 1;
                    }
                    ours
                })
                .collect();
            let unequal = gateways.windows(2).any(|w| w[0].weight != w[1].weight);
            let gateways: Vec<Gateway> = gateways
                .into_iter()
                .map(|g| Gateway {
                    name: g.gateway.clone(),
                    vtep: g.vtep,
                    router_mac: g.router_mac,
                    rd: base.gateways.get(&g.gateway).and_then(|c| c.rd),
                    weight: unequal.then_some(g.weight),
                })
                .collect();
            if !gateways.is_empty() {
                prefixes.push(ExportPrefix {
                    prefix: r.prefix,
                    gateways,
                });
            }
        }
        for (why, n) in &skipped {
            tracing::debug!(why, n, "export entries left out");
        }
        self.status.skipped = skipped;
        ExportSet {
            vni: base.vni,
            route_targets: base.route_targets.clone(),
            prefixes,
        }
    }

    pub fn status(&self) -> IntakeStatus {
        IntakeStatus {
            order: self.current().cloned(),
            ..self.status.clone()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::channel::MemberRole;
    use crate::controller::orders::{AttractingGateway, Epoch, PrefixRoute, RefuseReason};

    fn ctl(name: &str) -> Identity {
        Identity::new(MemberRole::Controller, name).unwrap()
    }

    fn route(prefix: &str, dc: &str, gws: &[(&str, u32)]) -> PrefixRoute {
        PrefixRoute {
            prefix: prefix.parse().unwrap(),
            datacenter: dc.into(),
            gateways: gws
                .iter()
                .enumerate()
                .map(|(i, (g, w))| AttractingGateway {
                    gateway: (*g).into(),
                    vtep: format!("10.0.0.{}", i + 1).parse().unwrap(),
                    router_mac: format!("02:00:00:00:00:0{}", i + 1).parse().unwrap(),
                    weight: *w,
                })
                .collect(),
        }
    }

    fn order(term: u64, version: u64, routes: Vec<PrefixRoute>) -> BgpctlOrder {
        BgpctlOrder {
            datacenter: "dc-a".into(),
            epoch: Epoch {
                term,
                controller: "ctl-a".into(),
            },
            version,
            routes,
        }
    }

    fn live(clock: u64) -> ControllerView {
        ControllerView {
            known: true,
            clock,
            live: ["ctl-a".to_string()].into(),
        }
    }

    fn base() -> ExportBase {
        ExportBase {
            vni: 100,
            route_targets: vec!["65000:100".parse().unwrap()],
            gateways: BTreeMap::new(),
        }
    }

    #[test]
    fn orders_are_fenced_like_a_gateways() {
        let mut i = OrderIntake::new("dc-a");
        i.handle_controllers(live(5));
        let now = SystemTime::now();
        let o = order(5, 1, vec![route("10.2.0.0/16", "dc-b", &[("a1", 1)])]);
        let gw = Identity::new(MemberRole::Gateway, "ctl-a").unwrap();
        let (r, changed) = i.offer(o.clone(), &gw, now);
        assert!(matches!(
            r,
            Reply::Refuse {
                reason: RefuseReason::Unauthorized { .. },
                ..
            }
        ));
        assert!(!changed);
        let (r, _) = i.offer(order(u64::MAX, 1, vec![]), &ctl("ctl-a"), now);
        assert!(matches!(
            r,
            Reply::Refuse {
                reason: RefuseReason::TermAhead { .. },
                ..
            }
        ));
        let (r, changed) = i.offer(o.clone(), &ctl("ctl-a"), now);
        assert!(matches!(r, Reply::Ack { .. }) && changed);
        // The same version again: acked, nothing changes.
        assert!(!i.offer(o, &ctl("ctl-a"), now).1);
        assert_eq!(i.status().refused, 2);
    }

    #[test]
    fn an_order_routing_our_own_prefix_into_our_fabric_is_refused_whole() {
        let mut i = OrderIntake::new("dc-a");
        let bad = order(
            1,
            1,
            vec![
                route("10.2.0.0/16", "dc-b", &[("a1", 1)]),
                route("10.1.0.0/16", "dc-a", &[("a1", 1)]),
            ],
        );
        let (r, changed) = i.offer(bad, &ctl("ctl-a"), SystemTime::now());
        assert!(
            matches!(
                r,
                Reply::Refuse {
                    reason: RefuseReason::Invalid { .. },
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(!changed && i.current().is_none());
    }

    #[test]
    fn the_export_set_leaves_out_local_prefixes_and_foreign_gateways_and_weighs_unequal_shares() {
        let mut i = OrderIntake::new("dc-a");
        i.handle_gateways(["a1".to_string(), "a2".to_string()].into());
        let o = order(
            1,
            1,
            vec![
                route("10.2.0.0/16", "dc-b", &[("a1", 1), ("a2", 1)]),
                route("10.3.0.0/16", "dc-c", &[("a1", 3), ("a2", 1)]),
                // Inside a prefix our fabric announces: never sent back to it.
                route("10.1.5.0/24", "dc-b", &[("a1", 1)]),
                route("10.4.0.0/16", "dc-b", &[("b1", 1)]),
            ],
        );
        i.offer(o, &ctl("ctl-a"), SystemTime::now());
        let set = i.export_set(&base(), &["10.1.0.0/16".parse().unwrap()]);
        type Exported = Vec<(String, Vec<(String, Option<u32>)>)>;
        let got: Exported = set
            .prefixes
            .iter()
            .map(|p| {
                (
                    p.prefix.to_string(),
                    p.gateways
                        .iter()
                        .map(|g| (g.name.clone(), g.weight))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "10.2.0.0/16".into(),
                    vec![("a1".into(), None), ("a2".into(), None)]
                ),
                (
                    "10.3.0.0/16".into(),
                    vec![("a1".into(), Some(3)), ("a2".into(), Some(1))]
                ),
            ]
        );
        let st = i.status();
        assert_eq!(st.skipped.get("local_prefix"), Some(&1));
        assert_eq!(st.skipped.get("not_our_gateway"), Some(&1));
        let routes = set.routes().unwrap();
        assert_eq!(routes.values().filter(|r| !r.is_anchor()).count(), 4);
        assert_eq!(routes.values().filter(|r| r.is_anchor()).count(), 2);
    }
}
