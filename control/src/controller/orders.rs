//! Orders and the rules around them: full state per gateway and per datacenter's bgpctl, each
//! stamped with a monotonic version and the issuing controller's fencing epoch; how a
//! receiver acknowledges or refuses a version ([`Receiver`]); and how one authoritative
//! controller is picked from membership and a stale one fenced ([`Election`]).
//!
//! Delivery comes with the mesh; these are the types and rules it carries.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::inputs::{MacAddr, Membership, Rate};

/// A controller's fencing epoch: the membership clock at which it became authoritative, and
/// its id. Receivers order epochs by term; two controllers with the same term (which the
/// election never produces from the same view) conflict, and the first one seen is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    pub term: u64,
    pub controller: String,
}

/// One tunnel's share of a gateway's traffic to a remote datacenter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TunnelWeight {
    pub tunnel: String,
    pub weight: u32,
}

/// Everything one gateway must do: per remote datacenter, the tunnels and their weights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayOrder {
    pub gateway: String,
    pub epoch: Epoch,
    pub version: u64,
    /// Tunnels sorted by id; weights sum to the policy's scale.
    pub remotes: BTreeMap<String, Vec<TunnelWeight>>,
}

/// A local gateway bgpctl exports a route through.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttractingGateway {
    pub gateway: String,
    pub vtep: IpAddr,
    pub router_mac: MacAddr,
    /// Its part of the prefix's traffic, relative to the route's other gateways. Unequal
    /// weights go to the leaves as Link Bandwidth communities (weighted ECMP); the fill
    /// assumes equal ECMP over the selected gateways, so today's orders carry 1 each.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A remote prefix and the local gateways that must attract it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixRoute {
    pub prefix: IpNet,
    pub datacenter: String,
    /// Sorted by gateway id.
    pub gateways: Vec<AttractingGateway>,
}

/// Everything one datacenter's bgpctl must export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpctlOrder {
    pub datacenter: String,
    pub epoch: Epoch,
    pub version: u64,
    /// Sorted by prefix.
    pub routes: Vec<PrefixRoute>,
}

/// A pair whose requirement is not met.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    pub from: String,
    pub to: String,
    pub required: Rate,
    pub met: Rate,
    pub missing: Rate,
    /// `capacity` (transits full), `degraded` (only tunnels failing the SLA were left, and
    /// they carry the traffic) or `unreachable` (no tunnel at all).
    pub cause: String,
}

/// One cycle's orders for everyone. Serialising it twice from the same inputs, in whatever
/// order they came, gives the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Orders {
    pub controller: String,
    pub epoch: Epoch,
    /// Only an authoritative controller's orders are sent; others compute them to be ready.
    pub authoritative: bool,
    pub gateways: BTreeMap<String, GatewayOrder>,
    pub bgpctl: BTreeMap<String, BgpctlOrder>,
    /// Sorted by (from, to).
    pub shortfalls: Vec<Shortfall>,
}

impl Orders {
    /// The weight of `tunnel` in `gateway`'s order for `dc` (0 if absent).
    pub fn weight(&self, gateway: &str, dc: &str, tunnel: &str) -> u32 {
        self.gateways
            .get(gateway)
            .and_then(|g| g.remotes.get(dc))
            .and_then(|ts| ts.iter().find(|t| t.tunnel == tunnel))
            .map_or(0, |t| t.weight)
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// What a receiver answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Applied (or already applied: resending a version is harmless).
    Ack { epoch: Epoch, version: u64 },
    Refuse {
        reason: RefuseReason,
        /// What the receiver holds, so a stale controller learns who fenced it.
        current_epoch: Epoch,
        current_version: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefuseReason {
    /// From an older epoch than one already accepted.
    StaleEpoch,
    /// Same term, different controller: the first one stays until a newer term.
    EpochConflict,
    /// Older than the version held, within the same epoch.
    StaleVersion,
    /// Same version as held but different content: a controller bug, never applied.
    VersionReused,
    /// Not for this receiver.
    WrongRecipient { recipient: String },
    /// Does not make sense to the receiver (e.g. unknown tunnels); the previous order stays.
    Invalid { problem: String },
    /// The sender's certificate does not make it the epoch's controller.
    Unauthorized { problem: String },
    /// The epoch's controller is not a live controller in the receiver's mesh view.
    NotAController { controller: String },
    /// The term is beyond the receiver's membership clock: no election produced it.
    TermAhead { term: u64, clock: u64 },
}

/// An order as a receiver sees it.
pub trait Stamped: Clone + PartialEq {
    fn recipient(&self) -> &str;
    fn epoch(&self) -> &Epoch;
    fn version(&self) -> u64;
}

impl Stamped for GatewayOrder {
    fn recipient(&self) -> &str {
        &self.gateway
    }
    fn epoch(&self) -> &Epoch {
        &self.epoch
    }
    fn version(&self) -> u64 {
        self.version
    }
}

impl Stamped for BgpctlOrder {
    fn recipient(&self) -> &str {
        &self.datacenter
    }
    fn epoch(&self) -> &Epoch {
        &self.epoch
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// The receiving side (a gateway, or a datacenter's bgpctl): accepts newer orders, refuses
/// stale ones, and is fail-static: it keeps the last order it accepted for as long as no
/// newer one comes, whether or not any controller is alive.
#[derive(Clone, Debug)]
pub struct Receiver<T: Stamped> {
    id: String,
    current: Option<T>,
    /// The highest epoch accepted, kept even if an order is later refused as invalid.
    epoch: Option<Epoch>,
}

impl<T: Stamped> Receiver<T> {
    pub fn new(id: impl Into<String>) -> Self {
        Receiver {
            id: id.into(),
            current: None,
            epoch: None,
        }
    }

    /// The order in force (fail-static: never expires).
    pub fn current(&self) -> Option<&T> {
        self.current.as_ref()
    }

    /// The highest epoch accepted.
    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// Forgets the fencing epoch, keeping the order in force: the next order is accepted
    /// whatever its term. For when the epoch's controller is gone from the mesh, so that a
    /// bad term it left behind locks nobody out.
    pub fn release_epoch(&mut self) {
        self.epoch = None;
    }

    /// A refusal the caller decided on, with what is held.
    pub fn refusal(&self, reason: RefuseReason) -> Reply {
        self.refuse(reason)
    }

    fn refuse(&self, reason: RefuseReason) -> Reply {
        Reply::Refuse {
            reason,
            current_epoch: self.epoch.clone().unwrap_or_default(),
            current_version: self.current.as_ref().map_or(0, |c| c.version()),
        }
    }

    /// Offers an order; `validate` checks what only the receiver knows (e.g. that the
    /// tunnels exist). Refused orders change nothing.
    pub fn offer(&mut self, order: T, validate: impl FnOnce(&T) -> Result<(), String>) -> Reply {
        if order.recipient() != self.id {
            return self.refuse(RefuseReason::WrongRecipient {
                recipient: order.recipient().to_string(),
            });
        }
        if let Some(cur) = &self.epoch {
            match order.epoch().term.cmp(&cur.term) {
                Ordering::Less => return self.refuse(RefuseReason::StaleEpoch),
                Ordering::Equal if order.epoch().controller != cur.controller => {
                    return self.refuse(RefuseReason::EpochConflict)
                }
                Ordering::Equal => {
                    if let Some(held) = &self.current {
                        if held.epoch() == order.epoch() {
                            match order.version().cmp(&held.version()) {
                                Ordering::Less => return self.refuse(RefuseReason::StaleVersion),
                                Ordering::Equal if *held != order => {
                                    return self.refuse(RefuseReason::VersionReused)
                                }
                                Ordering::Equal => {
                                    return Reply::Ack {
                                        epoch: order.epoch().clone(),
                                        version: order.version(),
                                    }
                                }
                                Ordering::Greater => {}
                            }
                        }
                    }
                }
                Ordering::Greater => {}
            }
        }
        if let Err(problem) = validate(&order) {
            return self.refuse(RefuseReason::Invalid { problem });
        }
        let reply = Reply::Ack {
            epoch: order.epoch().clone(),
            version: order.version(),
        };
        self.epoch = Some(order.epoch().clone());
        self.current = Some(order);
        reply
    }
}

/// How far a term may be ahead of the receiver's membership clock (gossip lags a little).
pub const TERM_SLACK: u64 = 64;

/// The controllers a receiver's mesh view shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerView {
    /// False until the mesh has answered once (or without a mesh): no membership checks.
    pub known: bool,
    /// The mesh's membership clock.
    pub clock: u64,
    pub live: BTreeSet<String>,
}

impl<T: Stamped> Receiver<T> {
    /// Who may order, checked before [`Receiver::offer`]: the sender's certificate must name
    /// the epoch's controller, that controller must be live in `view`, and its term must not
    /// be beyond the membership clock (an election takes its term from that clock, so a
    /// higher one was made up). When the controller holding our epoch is gone from the mesh,
    /// the epoch is released (true returned) so that a bad term it left behind locks nobody
    /// out.
    pub fn admit(
        &mut self,
        order: &T,
        peer: &crate::channel::Identity,
        view: &ControllerView,
    ) -> Result<bool, RefuseReason> {
        let controller = &order.epoch().controller;
        if peer.role != crate::channel::MemberRole::Controller || peer.name != *controller {
            return Err(RefuseReason::Unauthorized {
                problem: format!(
                    "{peer} may not send orders under controller {controller:?}'s epoch"
                ),
            });
        }
        if !view.known {
            return Ok(false);
        }
        if !view.live.contains(controller) {
            return Err(RefuseReason::NotAController {
                controller: controller.clone(),
            });
        }
        let term = order.epoch().term;
        if term > view.clock.saturating_add(TERM_SLACK) {
            return Err(RefuseReason::TermAhead {
                term,
                clock: view.clock,
            });
        }
        let holder_gone = self
            .epoch
            .as_ref()
            .is_some_and(|e| !view.live.contains(&e.controller));
        if holder_gone {
            tracing::info!(held = ?self.epoch, "the controller of our epoch left the mesh: epoch released");
            self.epoch = None;
        }
        Ok(holder_gone)
    }
}

/// Whether this controller may send orders, and under which epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    pub authoritative: bool,
    pub epoch: Epoch,
    /// The controller this one believes authoritative (itself or another), if any.
    pub leader: Option<String>,
}

/// Picks the authoritative controller from membership. Leadership is sticky: a live
/// controller that claims to lead (its `lead` tag) keeps leading, the highest claimed term
/// winning; with no live claim, the live controller with the lowest id takes over. Its
/// epoch's term is the membership clock of the view in which it took over, so a later
/// takeover always has a higher term. A controller told by a receiver that a newer epoch
/// exists stands down until its own view is newer than that epoch.
#[derive(Clone, Debug)]
pub struct Election {
    id: String,
    term: Option<u64>,
    fenced_at: Option<u64>,
    /// Live controllers in the last view: a change while leading refreshes the term, so a
    /// leader cut off by a partition comes back with a term above whoever led meanwhile.
    live: Vec<String>,
}

impl Election {
    pub fn new(id: impl Into<String>) -> Election {
        Election {
            id: id.into(),
            term: None,
            fenced_at: None,
            live: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The strongest claim to lead by another live controller: (term, id), highest term,
    /// then lowest id.
    fn rival_claim<'a>(&self, m: &'a Membership) -> Option<(u64, &'a str)> {
        m.controllers
            .iter()
            .filter(|c| c.live && c.id != self.id)
            .filter_map(|c| Some((c.leading?, c.id.as_str())))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
    }

    /// Updates from a membership view. An empty controller list means no mesh: the
    /// controller runs alone and is authoritative (what-if runs, tests, single deployments).
    pub fn observe(&mut self, m: &Membership) -> Authority {
        let lowest = m
            .controllers
            .iter()
            .filter(|c| c.live)
            .map(|c| c.id.as_str())
            .min();
        let rival = self.rival_claim(m);
        // A rival's claim beats ours when its term is higher, or equal with a lower id.
        let rival_wins = rival.is_some_and(|(t, id)| {
            self.term
                .is_none_or(|mine| t > mine || (t == mine && id < self.id.as_str()))
        });
        // Our own claim counts once the view shows it: then every controller sees it too.
        let claimed = m
            .controllers
            .iter()
            .any(|c| c.live && c.id == self.id && c.leading.is_some());
        let leader = match rival {
            Some((_, id)) if rival_wins => Some(id.to_string()),
            _ if claimed && self.term.is_some() => Some(self.id.clone()),
            _ => lowest.map(str::to_string),
        };
        let me_first = m.controllers.is_empty() || leader.as_deref() == Some(self.id.as_str());
        let fenced = self.fenced_at.is_some_and(|f| m.clock <= f);
        let mut live: Vec<String> = m
            .controllers
            .iter()
            .filter(|c| c.live)
            .map(|c| c.id.clone())
            .collect();
        live.sort();
        live.dedup();
        let changed = live != self.live;
        self.live = live;
        // A takeover's term is above every term claimed before, live or not: a failure does
        // not always move the membership clock.
        let floor = m
            .controllers
            .iter()
            .filter(|c| c.id != self.id)
            .filter_map(|c| c.leading)
            .max()
            .map_or(m.clock, |t| m.clock.max(t.saturating_add(1)));
        if me_first && !fenced {
            if self.term.is_none() || changed {
                // Terms only grow: a view with an older clock (reordered delivery) must not
                // lower the epoch receivers have already accepted from us.
                self.term = Some(self.term.map_or(floor, |t| t.max(m.clock)));
            }
            self.fenced_at = None;
        } else {
            self.term = None;
        }
        Authority {
            authoritative: self.term.is_some(),
            epoch: Epoch {
                term: self.term.unwrap_or(m.clock),
                controller: self.id.clone(),
            },
            leader: if m.controllers.is_empty() {
                Some(self.id.clone())
            } else {
                leader
            },
        }
    }

    /// Feeds a receiver's reply. A refusal naming a newer epoch fences this controller.
    pub fn on_reply(&mut self, reply: &Reply) {
        if let Reply::Refuse {
            reason: RefuseReason::StaleEpoch | RefuseReason::EpochConflict,
            current_epoch,
            ..
        } = reply
        {
            if current_epoch.controller != self.id
                && self.term.is_none_or(|t| current_epoch.term >= t)
            {
                self.term = None;
                self.fenced_at = Some(current_epoch.term.max(self.fenced_at.unwrap_or(0)));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::controller::inputs::ControllerMember;

    fn epoch(term: u64, c: &str) -> Epoch {
        Epoch {
            term,
            controller: c.into(),
        }
    }

    fn order(gw: &str, e: Epoch, version: u64, tunnel: &str) -> GatewayOrder {
        let mut remotes = BTreeMap::new();
        remotes.insert(
            "hk1".to_string(),
            vec![TunnelWeight {
                tunnel: tunnel.into(),
                weight: 1000,
            }],
        );
        GatewayOrder {
            gateway: gw.into(),
            epoch: e,
            version,
            remotes,
        }
    }

    fn ok(_: &GatewayOrder) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn receiver_accepts_newer_versions_and_refuses_older_ones() {
        let mut r = Receiver::new("gw1");
        assert!(matches!(
            r.offer(order("gw1", epoch(5, "c1"), 1, "a"), ok),
            Reply::Ack { version: 1, .. }
        ));
        assert!(matches!(
            r.offer(order("gw1", epoch(5, "c1"), 3, "b"), ok),
            Reply::Ack { version: 3, .. }
        ));
        let reply = r.offer(order("gw1", epoch(5, "c1"), 2, "c"), ok);
        assert!(
            matches!(
                reply,
                Reply::Refuse {
                    reason: RefuseReason::StaleVersion,
                    current_version: 3,
                    ..
                }
            ),
            "{reply:?}"
        );
        // The same version again is acknowledged, changed content under it is refused.
        assert!(matches!(
            r.offer(order("gw1", epoch(5, "c1"), 3, "b"), ok),
            Reply::Ack { .. }
        ));
        assert!(matches!(
            r.offer(order("gw1", epoch(5, "c1"), 3, "z"), ok),
            Reply::Refuse {
                reason: RefuseReason::VersionReused,
                ..
            }
        ));
        assert!(matches!(
            r.offer(order("gw2", epoch(5, "c1"), 9, "z"), ok),
            Reply::Refuse {
                reason: RefuseReason::WrongRecipient { .. },
                ..
            }
        ));
        assert_eq!(r.current().unwrap().remotes["hk1"][0].tunnel, "b");
    }

    #[test]
    fn epochs_fence_stale_controllers() {
        let mut r = Receiver::new("gw1");
        r.offer(order("gw1", epoch(5, "c1"), 40, "a"), ok);
        // A newer epoch wins whatever its version.
        assert!(matches!(
            r.offer(order("gw1", epoch(9, "c2"), 1, "b"), ok),
            Reply::Ack { .. }
        ));
        // The old controller, still sending, is refused and told the current epoch.
        let reply = r.offer(order("gw1", epoch(5, "c1"), 41, "c"), ok);
        match reply {
            Reply::Refuse {
                reason: RefuseReason::StaleEpoch,
                current_epoch,
                ..
            } => assert_eq!(current_epoch, epoch(9, "c2")),
            other => panic!("{other:?}"),
        }
        // Same term from another controller conflicts; the first stays.
        assert!(matches!(
            r.offer(order("gw1", epoch(9, "c3"), 50, "d"), ok),
            Reply::Refuse {
                reason: RefuseReason::EpochConflict,
                ..
            }
        ));
        assert_eq!(r.current().unwrap().remotes["hk1"][0].tunnel, "b");
    }

    #[test]
    fn invalid_orders_are_refused_and_the_last_good_one_stays() {
        let mut r = Receiver::new("gw1");
        r.offer(order("gw1", epoch(1, "c1"), 1, "a"), ok);
        let reply = r.offer(order("gw1", epoch(1, "c1"), 2, "ghost"), |o| {
            if o.remotes["hk1"][0].tunnel == "ghost" {
                Err("unknown tunnel ghost".into())
            } else {
                Ok(())
            }
        });
        assert!(matches!(
            reply,
            Reply::Refuse {
                reason: RefuseReason::Invalid { .. },
                current_version: 1,
                ..
            }
        ));
        assert_eq!(r.current().unwrap().version, 1);
    }

    #[test]
    fn receivers_are_fail_static() {
        let mut r = Receiver::new("gw1");
        r.offer(order("gw1", epoch(1, "c1"), 7, "a"), ok);
        // No controller for as long as you like: nothing expires, nothing to call.
        let held = r.current().cloned();
        assert_eq!(r.current().cloned(), held);
        assert_eq!(r.current().unwrap().version, 7);
    }

    fn view(clock: u64, live: &[(&str, bool)]) -> Membership {
        Membership {
            clock,
            controllers: live
                .iter()
                .map(|(id, live)| ControllerMember {
                    id: id.to_string(),
                    live: *live,
                    leading: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_lowest_live_id_is_authoritative_and_takeovers_raise_the_term() {
        let mut a = Election::new("ctl-a");
        let mut b = Election::new("ctl-b");
        let v1 = view(10, &[("ctl-a", true), ("ctl-b", true)]);
        let aa = a.observe(&v1);
        let ab = b.observe(&v1);
        assert!(aa.authoritative && !ab.authoritative);
        assert_eq!(aa.epoch, epoch(10, "ctl-a"));
        assert_eq!(ab.leader.as_deref(), Some("ctl-a"));
        // The term stays while the live set does, even as the clock moves; a change of the
        // live set refreshes it.
        assert_eq!(
            a.observe(&view(12, &[("ctl-a", true), ("ctl-b", true)]))
                .epoch
                .term,
            10
        );
        assert_eq!(
            a.observe(&view(
                13,
                &[("ctl-a", true), ("ctl-b", true), ("ctl-c", true)]
            ))
            .epoch
            .term,
            13
        );
        // ctl-a fails: ctl-b takes over with a higher term.
        let ab = b.observe(&view(15, &[("ctl-a", false), ("ctl-b", true)]));
        assert!(ab.authoritative);
        assert_eq!(ab.epoch.term, 15);
        // ctl-a comes back: it leads again, with a term above ctl-b's.
        let v = view(17, &[("ctl-a", true), ("ctl-b", true)]);
        assert!(!b.observe(&v).authoritative);
        let aa = a.observe(&v);
        assert!(aa.authoritative);
        assert!(aa.epoch.term > 15);
    }

    #[test]
    fn a_partitioned_leader_is_fenced_by_receivers_and_stands_down() {
        let mut a = Election::new("ctl-a");
        let mut b = Election::new("ctl-b");
        let mut gw = Receiver::new("gw1");
        // a's stale view: it still thinks it leads (term 10).
        let ea = a
            .observe(&view(10, &[("ctl-a", true), ("ctl-b", true)]))
            .epoch;
        // The rest of the mesh saw a fail at clock 15; b leads.
        let eb = b
            .observe(&view(15, &[("ctl-a", false), ("ctl-b", true)]))
            .epoch;
        assert!(matches!(
            gw.offer(order("gw1", eb.clone(), 1, "b"), ok),
            Reply::Ack { .. }
        ));
        let reply = gw.offer(order("gw1", ea, 99, "a"), ok);
        a.on_reply(&reply);
        assert!(
            !a.observe(&view(10, &[("ctl-a", true), ("ctl-b", true)]))
                .authoritative
        );
        // Only a view newer than the fencing term lets it lead again, above b's term.
        let back = a.observe(&view(16, &[("ctl-a", true), ("ctl-b", true)]));
        assert!(back.authoritative);
        assert!(back.epoch.term > eb.term);
        assert!(matches!(
            gw.offer(order("gw1", back.epoch, 1, "a2"), ok),
            Reply::Ack { .. }
        ));
    }

    #[test]
    fn a_live_leaders_claim_is_sticky_and_the_highest_claim_wins() {
        let mut a = Election::new("ctl-a");
        let mut b = Election::new("ctl-b");
        // ctl-b leads (ctl-a was down); ctl-a comes back with the lower id: it stays standby
        // while ctl-b's claim is live.
        let mut v = view(20, &[("ctl-a", true), ("ctl-b", true)]);
        v.controllers[1].leading = Some(15);
        assert!(!a.observe(&v).authoritative);
        assert_eq!(a.observe(&v).leader.as_deref(), Some("ctl-b"));
        b.observe(&view(15, &[("ctl-a", false), ("ctl-b", true)]));
        assert!(b.observe(&v).authoritative);
        // ctl-b dies: its claim goes with it, ctl-a takes over above its term.
        let mut gone = view(30, &[("ctl-a", true), ("ctl-b", false)]);
        gone.controllers[1].leading = Some(15);
        let auth = a.observe(&gone);
        assert!(auth.authoritative && auth.epoch.term == 30);
        // With the clock unmoved by the failure, the term still goes above the dead claim.
        let mut c = Election::new("ctl-c");
        let mut still = view(15, &[("ctl-b", false), ("ctl-c", true)]);
        still.controllers[0].leading = Some(15);
        assert_eq!(c.observe(&still).epoch.term, 16);
        // Two leaders after a partition heals: the higher claimed term wins.
        let mut both = view(40, &[("ctl-a", true), ("ctl-b", true)]);
        both.controllers[0].leading = Some(30);
        both.controllers[1].leading = Some(35);
        assert!(!a.observe(&both).authoritative);
    }

    #[test]
    fn alone_without_a_mesh_the_controller_leads() {
        let mut a = Election::new("solo");
        let auth = a.observe(&Membership::default());
        assert!(auth.authoritative);
        assert_eq!(auth.leader.as_deref(), Some("solo"));
    }
}
