//! The datacenter's own routes for the tunnel -> fabric direction, sans-IO. bgpctl learns
//! them from the fabric (the leaves' RT-5 routes: prefix, leaf VTEP, router MAC, VNI) and
//! sends them to every gateway of its datacenter over the orders channel; the gateway uses
//! them in its route tables and publishes their prefixes in the mesh as the datacenter's.
//!
//! - **Who may send.** Only a bgpctl: the certificate must name the sender, the message must
//!   be for our datacenter, and once the mesh has answered, the sender must be a live bgpctl
//!   member of our datacenter.
//! - **Several bgpctls.** Each one's latest set is kept; the routes in force are the union
//!   over the live ones (the first by name wins a prefix they disagree on). With none live,
//!   the sets held stay (fail-static); before any, the static `fabric.local_routes`.
//! - **Order.** A bgpctl numbers its sets by (generation: when it started, version): an older
//!   one is refused, so a delayed message cannot undo a newer one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gatewan_dataplane::route::LocalRoute;
use gatewan_dataplane::wire::ethernet::MacAddr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::channel::{Identity, MemberRole};

/// One fabric route as bgpctl imported it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FabricRoute {
    pub prefix: IpNet,
    /// The leaf's VTEP.
    pub vtep: IpAddr,
    pub router_mac: MacAddr,
    pub vni: u32,
}

/// What bgpctl sends (`PUT /v1/local-routes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRoutes {
    pub bgpctl: String,
    pub datacenter: String,
    /// When this bgpctl started (Unix ms): with `version`, orders its sets across restarts.
    pub generation: u64,
    pub version: u64,
    pub routes: Vec<FabricRoute>,
}

/// What `gatewan orders` and the report show about the local routes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRoutesStatus {
    /// `static` (gateway.yaml) or `bgpctl`.
    pub source: String,
    /// The bgpctls whose sets are in force, with (generation, version).
    pub from: BTreeMap<String, (u64, u64)>,
    pub routes: usize,
    pub accepted: u64,
    pub refused: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
}

/// The gateway's book of local routes (see the module's documentation).
#[derive(Debug)]
pub struct LocalRouteBook {
    datacenter: String,
    max_routes: usize,
    statics: Vec<(IpNet, LocalRoute)>,
    sets: BTreeMap<String, LocalRoutes>,
    /// Live bgpctls of our datacenter; None until the mesh answers.
    live: Option<BTreeSet<String>>,
    accepted: u64,
    refused: u64,
    last_refusal: Option<String>,
}

impl LocalRouteBook {
    pub fn new(
        datacenter: &str,
        statics: Vec<(IpNet, LocalRoute)>,
        max_routes: usize,
    ) -> LocalRouteBook {
        LocalRouteBook {
            datacenter: datacenter.to_owned(),
            max_routes,
            statics,
            sets: BTreeMap::new(),
            live: None,
            accepted: 0,
            refused: 0,
            last_refusal: None,
        }
    }

    /// The live bgpctls of our datacenter in a new mesh view; true when the routes in force
    /// change.
    pub fn handle_bgpctls(&mut self, live: BTreeSet<String>) -> bool {
        let before = self.routes();
        self.live = Some(live);
        before != self.routes()
    }

    /// A set from `peer` (authenticated by the channel). Ok(true) when the routes in force
    /// change.
    pub fn offer(&mut self, set: LocalRoutes, peer: &Identity) -> Result<bool, String> {
        let checked = self.check(&set, peer);
        match checked {
            Ok(()) => {
                self.accepted += 1;
                let before = self.routes();
                self.sets.insert(set.bgpctl.clone(), set);
                Ok(before != self.routes())
            }
            Err(problem) => {
                self.refused += 1;
                tracing::warn!(%peer, %problem, "local routes refused");
                self.last_refusal = Some(problem.clone());
                Err(problem)
            }
        }
    }

    fn check(&self, set: &LocalRoutes, peer: &Identity) -> Result<(), String> {
        if peer.role != MemberRole::Bgpctl || peer.name != set.bgpctl {
            return Err(format!(
                "{peer} may not send local routes as {:?}",
                set.bgpctl
            ));
        }
        if set.datacenter != self.datacenter {
            return Err(format!(
                "routes for {:?}, this gateway is in {:?}",
                set.datacenter, self.datacenter
            ));
        }
        if let Some(live) = &self.live {
            if !live.contains(&set.bgpctl) {
                return Err(format!(
                    "{} is not a live bgpctl of {} in the mesh",
                    set.bgpctl, self.datacenter
                ));
            }
        }
        if let Some(held) = self.sets.get(&set.bgpctl) {
            if (set.generation, set.version) < (held.generation, held.version) {
                return Err(format!(
                    "set {}.{} is older than the {}.{} held",
                    set.generation, set.version, held.generation, held.version
                ));
            }
        }
        if set.routes.len() > self.max_routes {
            return Err(format!(
                "{} routes, at most {} are taken",
                set.routes.len(),
                self.max_routes
            ));
        }
        let mut seen = BTreeSet::new();
        for r in &set.routes {
            if r.prefix != r.prefix.trunc() {
                return Err(format!("{} has host bits set", r.prefix));
            }
            if !seen.insert(r.prefix) {
                return Err(format!("{} is listed twice", r.prefix));
            }
            if r.vtep.is_unspecified() || r.vtep.is_multicast() {
                return Err(format!(
                    "{}: VTEP {} is not a unicast address",
                    r.prefix, r.vtep
                ));
            }
            if !r.router_mac.is_unicast() {
                return Err(format!(
                    "{}: router MAC {} is not unicast",
                    r.prefix, r.router_mac
                ));
            }
            if r.vni == 0 || r.vni > 0x00ff_ffff {
                return Err(format!("{}: {} is not a VNI", r.prefix, r.vni));
            }
        }
        Ok(())
    }

    /// The sets in force: from the live bgpctls, or all held when none is live.
    fn in_force(&self) -> impl Iterator<Item = &LocalRoutes> {
        let any_live = self
            .sets
            .keys()
            .any(|b| self.live.as_ref().is_none_or(|l| l.contains(b)));
        self.sets.iter().filter_map(move |(b, set)| {
            let live = self.live.as_ref().is_none_or(|l| l.contains(b));
            (live || !any_live).then_some(set)
        })
    }

    /// Whether a bgpctl's routes are in force (else the static ones).
    pub fn from_bgpctl(&self) -> bool {
        !self.sets.is_empty()
    }

    /// The routes in force, sorted by prefix.
    pub fn routes(&self) -> Vec<(IpNet, LocalRoute)> {
        if !self.from_bgpctl() {
            return self.statics.clone();
        }
        let mut out: BTreeMap<IpNet, LocalRoute> = BTreeMap::new();
        for set in self.in_force() {
            for r in &set.routes {
                out.entry(r.prefix).or_insert(LocalRoute {
                    vtep: r.vtep,
                    router_mac: r.router_mac,
                    vni: r.vni,
                });
            }
        }
        out.into_iter().collect()
    }

    pub fn status(&self) -> LocalRoutesStatus {
        LocalRoutesStatus {
            source: if self.from_bgpctl() {
                "bgpctl"
            } else {
                "static"
            }
            .into(),
            from: self
                .in_force()
                .map(|s| (s.bgpctl.clone(), (s.generation, s.version)))
                .collect(),
            routes: self.routes().len(),
            accepted: self.accepted,
            refused: self.refused,
            last_refusal: self.last_refusal.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bgpctl(name: &str) -> Identity {
        Identity::new(MemberRole::Bgpctl, name).unwrap()
    }

    fn set(name: &str, generation: u64, version: u64, prefixes: &[&str]) -> LocalRoutes {
        LocalRoutes {
            bgpctl: name.into(),
            datacenter: "dc-a".into(),
            generation,
            version,
            routes: prefixes
                .iter()
                .map(|p| FabricRoute {
                    prefix: p.parse().unwrap(),
                    vtep: "10.0.0.7".parse().unwrap(),
                    router_mac: "02:00:00:00:00:07".parse().unwrap(),
                    vni: 100,
                })
                .collect(),
        }
    }

    fn statics() -> Vec<(IpNet, LocalRoute)> {
        vec![(
            "10.9.0.0/16".parse().unwrap(),
            LocalRoute {
                vtep: "10.0.0.9".parse().unwrap(),
                router_mac: "02:00:00:00:00:09".parse().unwrap(),
                vni: 100,
            },
        )]
    }

    fn prefixes(book: &LocalRouteBook) -> Vec<String> {
        book.routes().iter().map(|(p, _)| p.to_string()).collect()
    }

    #[test]
    fn static_routes_until_a_bgpctl_speaks_then_its_routes() {
        let mut b = LocalRouteBook::new("dc-a", statics(), 100);
        assert_eq!(prefixes(&b), ["10.9.0.0/16"]);
        assert_eq!(b.status().source, "static");
        assert!(b
            .offer(set("bgp-a", 1, 1, &["10.1.0.0/16"]), &bgpctl("bgp-a"))
            .unwrap());
        assert_eq!(prefixes(&b), ["10.1.0.0/16"]);
        // The same set again changes nothing.
        assert!(!b
            .offer(set("bgp-a", 1, 1, &["10.1.0.0/16"]), &bgpctl("bgp-a"))
            .unwrap());
        assert_eq!(b.status().source, "bgpctl");
    }

    #[test]
    fn only_a_live_bgpctl_of_our_datacenter_may_send_and_never_an_older_set() {
        let mut b = LocalRouteBook::new("dc-a", statics(), 2);
        b.handle_bgpctls(["bgp-a".to_string()].into());
        let gw = Identity::new(MemberRole::Gateway, "bgp-a").unwrap();
        for (s, peer, want) in [
            (set("bgp-a", 1, 1, &["10.1.0.0/16"]), gw, "may not"),
            (
                set("bgp-a", 1, 1, &["10.1.0.0/16"]),
                bgpctl("bgp-b"),
                "may not",
            ),
            (
                set("bgp-b", 1, 1, &["10.1.0.0/16"]),
                bgpctl("bgp-b"),
                "not a live",
            ),
            (
                LocalRoutes {
                    datacenter: "dc-b".into(),
                    ..set("bgp-a", 1, 1, &[])
                },
                bgpctl("bgp-a"),
                "this gateway is in",
            ),
            (
                set(
                    "bgp-a",
                    1,
                    1,
                    &["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"],
                ),
                bgpctl("bgp-a"),
                "at most 2",
            ),
            (
                set("bgp-a", 1, 1, &["10.1.0.1/16"]),
                bgpctl("bgp-a"),
                "host bits",
            ),
        ] {
            let err = b.offer(s, &peer).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        assert_eq!(prefixes(&b), ["10.9.0.0/16"], "refusals change nothing");
        b.offer(set("bgp-a", 2, 5, &["10.1.0.0/16"]), &bgpctl("bgp-a"))
            .unwrap();
        let err = b
            .offer(set("bgp-a", 2, 4, &["10.4.0.0/16"]), &bgpctl("bgp-a"))
            .unwrap_err();
        assert!(err.contains("older"), "{err}");
        // A restarted bgpctl (newer generation) starts its versions again.
        b.offer(set("bgp-a", 3, 1, &["10.4.0.0/16"]), &bgpctl("bgp-a"))
            .unwrap();
        assert_eq!(prefixes(&b), ["10.4.0.0/16"]);
        assert_eq!(b.status().refused, 7);
    }

    #[test]
    fn several_bgpctls_are_merged_and_a_gone_one_stays_only_when_alone() {
        let mut b = LocalRouteBook::new("dc-a", statics(), 100);
        b.handle_bgpctls(["bgp-1".to_string(), "bgp-2".to_string()].into());
        b.offer(set("bgp-1", 1, 1, &["10.1.0.0/16"]), &bgpctl("bgp-1"))
            .unwrap();
        b.offer(set("bgp-2", 1, 1, &["10.2.0.0/16"]), &bgpctl("bgp-2"))
            .unwrap();
        assert_eq!(prefixes(&b), ["10.1.0.0/16", "10.2.0.0/16"]);
        assert!(b.handle_bgpctls(["bgp-2".to_string()].into()));
        assert_eq!(prefixes(&b), ["10.2.0.0/16"]);
        // No bgpctl left: fail-static on what was held.
        assert!(b.handle_bgpctls(BTreeSet::new()));
        assert_eq!(prefixes(&b), ["10.1.0.0/16", "10.2.0.0/16"]);
    }
}
