//! The gateway's side of the controller's orders (the design's routingctl), sans-IO: which
//! orders it accepts, the order in force, and the weights each tunnel group gets from it,
//! with fast local repair.
//!
//! - **Who may order.** Only a controller: the certificate must name the epoch's controller,
//!   that controller must be live in our mesh view, and its term must not be beyond our
//!   membership clock (an election takes its term from that clock, so a higher one was made
//!   up). When the controller holding our epoch is gone from the mesh, the epoch is released:
//!   a bad term it left behind does not lock its successor out.
//! - **Fail-static.** The order in force stays, with or without controllers, and across
//!   restarts (the caller keeps it on disk and [`OrderBook::restore`]s it).
//! - **Weights.** Per remote datacenter, the order's tunnels and weights. Before any order,
//!   and for datacenters the order does not name, equal weights over alive tunnels.
//! - **Local repair.** A tunnel the prober declares dead leaves every group at once; its
//!   weight goes to the order's remaining tunnels, and with none left to any alive tunnel to
//!   that datacenter. It comes back by a newer order, or, when no controller is in the mesh,
//!   after it has been alive again for the hold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use gatewan_dataplane::wireguard::TunnelId;
use serde::{Deserialize, Serialize};

use crate::channel::Identity;
use crate::controller::orders::{Epoch, GatewayOrder, Receiver, RefuseReason, Reply};

pub use crate::controller::orders::{ControllerView, TERM_SLACK};

/// One tunnel as the book sees it.
#[derive(Clone, Copy, Debug)]
pub struct TunnelLife<'a> {
    pub slot: TunnelId,
    /// The tunnel's id, as orders name it.
    pub id: &'a str,
    pub alive: bool,
}

/// What `gatewan orders` and the report show.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderStatus {
    /// The order in force (none before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<GatewayOrder>,
    /// The fencing epoch held (can differ from the order's after a release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
    /// When the order in force was accepted (RFC 3339), and whether from disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    #[serde(default)]
    pub age_s: f64,
    #[serde(default)]
    pub restored: bool,
    /// Tunnels local repair holds out of the order, by id.
    #[serde(default)]
    pub repaired: Vec<String>,
    /// What the route tables carry now, per remote datacenter: each group's tunnels and
    /// weights (the order's, after local repair).
    #[serde(default)]
    pub in_force: BTreeMap<String, Vec<crate::controller::orders::TunnelWeight>>,
    pub acked: u64,
    pub refused: u64,
    pub repairs: u64,
    pub returns: u64,
    pub epoch_releases: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
}

/// A tunnel local repair took out: since when it is alive again.
#[derive(Clone, Copy, Debug)]
struct Repaired {
    alive_since: Option<Instant>,
}

/// The order book (see the module's documentation).
#[derive(Debug)]
pub struct OrderBook {
    receiver: Receiver<GatewayOrder>,
    controllers: ControllerView,
    repaired: BTreeMap<String, Repaired>,
    /// Tunnels seen alive at the last liveness check.
    alive: BTreeSet<String>,
    hold: Duration,
    applied_at: Option<SystemTime>,
    restored: bool,
    status: OrderStatus,
}

impl OrderBook {
    pub fn new(gateway: &str, hold: Duration) -> OrderBook {
        OrderBook {
            receiver: Receiver::new(gateway),
            controllers: ControllerView::default(),
            repaired: BTreeMap::new(),
            alive: BTreeSet::new(),
            hold,
            applied_at: None,
            restored: false,
            status: OrderStatus::default(),
        }
    }

    /// The order in force.
    pub fn current(&self) -> Option<&GatewayOrder> {
        self.receiver.current()
    }

    /// Puts back the order kept on disk (it was accepted before; only its recipient is
    /// checked).
    pub fn restore(&mut self, order: GatewayOrder, saved_at: SystemTime) -> bool {
        let ok = matches!(self.receiver.offer(order, |_| Ok(())), Reply::Ack { .. });
        if ok {
            self.applied_at = Some(saved_at);
            self.restored = true;
        }
        ok
    }

    /// The controllers of a new mesh view.
    pub fn handle_controllers(&mut self, view: ControllerView) {
        self.controllers = view;
    }

    fn refuse(&mut self, reason: RefuseReason) -> Reply {
        let reply = self.receiver.refusal(reason);
        self.count(&reply);
        reply
    }

    fn count(&mut self, reply: &Reply) {
        match reply {
            Reply::Ack { .. } => self.status.acked += 1,
            Reply::Refuse { reason, .. } => {
                self.status.refused += 1;
                self.status.last_refusal = Some(format!("{reason:?}"));
                tracing::warn!(?reason, "order refused");
            }
        }
    }

    /// An order from `peer` (authenticated by the channel). A new version accepted clears
    /// local repair: the controller has seen the tunnels since.
    pub fn offer(&mut self, order: GatewayOrder, peer: &Identity, wall: SystemTime) -> Reply {
        match self.receiver.admit(&order, peer, &self.controllers) {
            Err(reason) => return self.refuse(reason),
            Ok(true) => self.status.epoch_releases += 1,
            Ok(false) => {}
        }
        let before = self
            .receiver
            .current()
            .map(|o| (o.epoch.clone(), o.version));
        let reply = self.receiver.offer(order, validate);
        self.count(&reply);
        if matches!(reply, Reply::Ack { .. })
            && before
                != self
                    .receiver
                    .current()
                    .map(|o| (o.epoch.clone(), o.version))
        {
            self.repaired.clear();
            self.applied_at = Some(wall);
            self.restored = false;
        }
        reply
    }

    /// Whether a controller is in the mesh (else repaired tunnels return after the hold).
    fn controller_present(&self) -> bool {
        !self.controllers.known || !self.controllers.live.is_empty()
    }

    /// Feeds the tunnels' liveness; true when the groups change.
    pub fn handle_liveness(&mut self, tunnels: &[TunnelLife<'_>], now: Instant) -> bool {
        let mut changed = false;
        let ordered: BTreeSet<&str> = self
            .receiver
            .current()
            .map(|o| {
                o.remotes
                    .values()
                    .flatten()
                    .filter(|w| w.weight > 0)
                    .map(|w| w.tunnel.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for t in tunnels {
            if t.alive != self.alive.contains(t.id) {
                changed = true;
                if t.alive {
                    self.alive.insert(t.id.to_owned());
                } else {
                    self.alive.remove(t.id);
                    if ordered.contains(t.id) && !self.repaired.contains_key(t.id) {
                        tracing::warn!(tunnel = t.id, "tunnel dead: local repair takes it out");
                        self.repaired
                            .insert(t.id.to_owned(), Repaired { alive_since: None });
                        self.status.repairs += 1;
                    }
                }
            }
            if let Some(r) = self.repaired.get_mut(t.id) {
                r.alive_since = match (t.alive, r.alive_since) {
                    (true, None) => Some(now),
                    (true, since) => since,
                    (false, _) => None,
                };
            }
        }
        // Gone tunnels leave the books.
        let present: BTreeSet<&str> = tunnels.iter().map(|t| t.id).collect();
        self.alive.retain(|id| present.contains(id.as_str()));
        self.repaired.retain(|id, _| present.contains(id.as_str()));
        if !self.controller_present() {
            let hold = self.hold;
            let back: Vec<String> = self
                .repaired
                .iter()
                .filter(|(_, r)| {
                    r.alive_since
                        .is_some_and(|s| now.saturating_duration_since(s) >= hold)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in back {
                tracing::info!(tunnel = %id, "no controller: tunnel back after the hold");
                self.repaired.remove(&id);
                self.status.returns += 1;
                changed = true;
            }
        }
        changed
    }

    /// When the next hold ends (to be woken for it).
    pub fn next_return(&self) -> Option<Instant> {
        if self.controller_present() {
            return None;
        }
        self.repaired
            .values()
            .filter_map(|r| r.alive_since)
            .min()
            .map(|s| s + self.hold)
    }

    /// The members and weights of a group of `candidates` towards `datacenter`: every
    /// candidate is a member (the dataplane accepts a datacenter's sources from any of its
    /// tunnels), those that carry no traffic with weight 0.
    pub fn members(&self, datacenter: &str, candidates: &[TunnelLife<'_>]) -> Vec<(TunnelId, u32)> {
        let picked = self.picked(datacenter, candidates);
        candidates
            .iter()
            .map(|t| {
                let w = picked
                    .iter()
                    .find(|(slot, _)| *slot == t.slot)
                    .map_or(0, |(_, w)| *w);
                (t.slot, w)
            })
            .collect()
    }

    /// The candidates that carry traffic, with their weights.
    fn picked(&self, datacenter: &str, candidates: &[TunnelLife<'_>]) -> Vec<(TunnelId, u32)> {
        let usable = |t: &TunnelLife<'_>| t.alive && !self.repaired.contains_key(t.id);
        if let Some(weights) = self
            .receiver
            .current()
            .and_then(|o| o.remotes.get(datacenter))
        {
            let ordered: Vec<(TunnelId, u32)> = weights
                .iter()
                .filter(|w| w.weight > 0)
                .filter_map(|w| {
                    candidates
                        .iter()
                        .find(|t| t.id == w.tunnel && usable(t))
                        .map(|t| (t.slot, w.weight))
                })
                .collect();
            if !ordered.is_empty() {
                return ordered;
            }
        }
        let alive: Vec<(TunnelId, u32)> = candidates
            .iter()
            .filter(|t| t.alive)
            .map(|t| (t.slot, 1))
            .collect();
        if !alive.is_empty() {
            return alive;
        }
        // Nothing alive (starting, or all down): every tunnel, so the first packets start
        // the handshakes and nothing is dropped for want of a route.
        candidates.iter().map(|t| (t.slot, 1)).collect()
    }

    /// What `gatewan orders` shows.
    pub fn status(&self, wall: SystemTime) -> OrderStatus {
        OrderStatus {
            order: self.receiver.current().cloned(),
            epoch: self.receiver.epoch().cloned(),
            applied_at: self.applied_at.map(super::status::format_time),
            age_s: self
                .applied_at
                .and_then(|t| wall.duration_since(t).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
            restored: self.restored,
            repaired: self.repaired.keys().cloned().collect(),
            ..self.status.clone()
        }
    }
}

/// What only the shape of an order can tell: no tunnel twice in a datacenter.
fn validate(order: &GatewayOrder) -> Result<(), String> {
    for (dc, weights) in &order.remotes {
        let mut seen = BTreeSet::new();
        for w in weights {
            if !seen.insert(&w.tunnel) {
                return Err(format!("tunnel {} listed twice for {dc}", w.tunnel));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::channel::MemberRole;
    use crate::controller::orders::TunnelWeight;

    fn ctl(name: &str) -> Identity {
        Identity::new(MemberRole::Controller, name).unwrap()
    }

    fn order(term: u64, controller: &str, version: u64, weights: &[(&str, u32)]) -> GatewayOrder {
        GatewayOrder {
            gateway: "gw-a1".into(),
            epoch: Epoch {
                term,
                controller: controller.into(),
            },
            version,
            remotes: [(
                "b".to_string(),
                weights
                    .iter()
                    .map(|(t, w)| TunnelWeight {
                        tunnel: (*t).into(),
                        weight: *w,
                    })
                    .collect(),
            )]
            .into(),
        }
    }

    fn view(clock: u64, live: &[&str]) -> ControllerView {
        ControllerView {
            known: true,
            clock,
            live: live.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn lives<'a>(alive: &[(&'a str, bool)]) -> Vec<TunnelLife<'a>> {
        alive
            .iter()
            .enumerate()
            .map(|(i, (id, alive))| TunnelLife {
                slot: TunnelId(i as u16),
                id,
                alive: *alive,
            })
            .collect()
    }

    /// The members that carry traffic.
    fn carrying(book: &OrderBook, lives: &[TunnelLife<'_>]) -> Vec<(TunnelId, u32)> {
        let all = book.members("b", lives);
        assert_eq!(all.len(), lives.len(), "every candidate is a member");
        all.into_iter().filter(|(_, w)| *w > 0).collect()
    }

    fn acked(r: &Reply) -> bool {
        matches!(r, Reply::Ack { .. })
    }

    #[test]
    fn only_the_epochs_authenticated_live_controller_with_a_plausible_term_orders() {
        let mut book = OrderBook::new("gw-a1", Duration::from_secs(30));
        let wall = SystemTime::now();
        book.handle_controllers(view(100, &["ctl-a", "ctl-b"]));
        // Someone with ctl-b's certificate cannot speak for ctl-a.
        let r = book.offer(order(90, "ctl-a", 1, &[("t1", 1)]), &ctl("ctl-b"), wall);
        assert!(
            matches!(
                r,
                Reply::Refuse {
                    reason: RefuseReason::Unauthorized { .. },
                    ..
                }
            ),
            "{r:?}"
        );
        let gw = Identity::new(MemberRole::Gateway, "ctl-a").unwrap();
        assert!(!acked(&book.offer(
            order(90, "ctl-a", 1, &[("t1", 1)]),
            &gw,
            wall
        )));
        // A forged term far beyond the membership clock is refused and locks nobody out.
        let r = book.offer(
            order(u64::MAX, "ctl-b", 1, &[("t1", 1)]),
            &ctl("ctl-b"),
            wall,
        );
        assert!(
            matches!(
                r,
                Reply::Refuse {
                    reason: RefuseReason::TermAhead { .. },
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(acked(&book.offer(
            order(90, "ctl-a", 1, &[("t1", 1)]),
            &ctl("ctl-a"),
            wall
        )));
        // Not a live controller in our view.
        let r = book.offer(order(95, "ctl-c", 1, &[("t1", 1)]), &ctl("ctl-c"), wall);
        assert!(
            matches!(
                r,
                Reply::Refuse {
                    reason: RefuseReason::NotAController { .. },
                    ..
                }
            ),
            "{r:?}"
        );
        // A stale epoch is fenced while its holder lives.
        book.handle_controllers(view(120, &["ctl-a", "ctl-b"]));
        assert!(acked(&book.offer(
            order(110, "ctl-b", 1, &[("t2", 1)]),
            &ctl("ctl-b"),
            wall
        )));
        let r = book.offer(order(90, "ctl-a", 2, &[("t1", 1)]), &ctl("ctl-a"), wall);
        assert!(
            matches!(
                r,
                Reply::Refuse {
                    reason: RefuseReason::StaleEpoch,
                    ..
                }
            ),
            "{r:?}"
        );
        // ctl-b (holding a term near the clock's edge) leaves: ctl-a may order again, even
        // with a lower term.
        book.handle_controllers(view(130, &["ctl-a"]));
        assert!(acked(&book.offer(
            order(100, "ctl-a", 3, &[("t1", 1)]),
            &ctl("ctl-a"),
            wall
        )));
        assert_eq!(book.status(wall).epoch_releases, 1);
        assert_eq!(book.current().unwrap().version, 3);
    }

    #[test]
    fn local_repair_moves_weight_at_once_and_tunnels_return_by_order_or_after_the_hold() {
        let mut book = OrderBook::new("gw-a1", Duration::from_secs(30));
        let (t0, wall) = (Instant::now(), SystemTime::now());
        // Before any order: equal weights over alive tunnels; nothing alive, everything.
        let all = lives(&[("t1", false), ("t2", false), ("t3", false)]);
        assert_eq!(carrying(&book, &all).len(), 3);
        let up = lives(&[("t1", true), ("t2", true), ("t3", false)]);
        book.handle_liveness(&up, t0);
        assert_eq!(
            carrying(&book, &up),
            vec![(TunnelId(0), 1), (TunnelId(1), 1)]
        );
        book.handle_controllers(view(10, &["ctl-a"]));
        assert!(acked(&book.offer(
            order(5, "ctl-a", 1, &[("t1", 700), ("t2", 300)]),
            &ctl("ctl-a"),
            wall
        )));
        assert_eq!(
            carrying(&book, &up),
            vec![(TunnelId(0), 700), (TunnelId(1), 300)]
        );
        // t1 dies: out at once, t2 carries everything.
        let t1_dead = lives(&[("t1", false), ("t2", true), ("t3", false)]);
        assert!(book.handle_liveness(&t1_dead, t0 + Duration::from_secs(1)));
        assert_eq!(carrying(&book, &t1_dead), vec![(TunnelId(1), 300)]);
        // Back alive, it stays out while a controller is there and no new order came.
        book.handle_liveness(&up, t0 + Duration::from_secs(2));
        assert_eq!(carrying(&book, &up), vec![(TunnelId(1), 300)]);
        // Both ordered tunnels dead: any alive tunnel to the datacenter.
        let only_t3 = lives(&[("t1", false), ("t2", false), ("t3", true)]);
        book.handle_liveness(&only_t3, t0 + Duration::from_secs(3));
        assert_eq!(carrying(&book, &only_t3), vec![(TunnelId(2), 1)]);
        // A new order brings them back.
        book.handle_liveness(&up, t0 + Duration::from_secs(4));
        assert!(acked(&book.offer(
            order(5, "ctl-a", 2, &[("t1", 500), ("t2", 500)]),
            &ctl("ctl-a"),
            wall
        )));
        assert_eq!(
            carrying(&book, &up),
            vec![(TunnelId(0), 500), (TunnelId(1), 500)]
        );
        // Without a controller, a repaired tunnel returns after the hold.
        book.handle_controllers(view(20, &[]));
        book.handle_liveness(&t1_dead, t0 + Duration::from_secs(5));
        book.handle_liveness(&up, t0 + Duration::from_secs(6));
        assert_eq!(carrying(&book, &up), vec![(TunnelId(1), 500)]);
        assert_eq!(book.next_return(), Some(t0 + Duration::from_secs(36)));
        assert!(!book.handle_liveness(&up, t0 + Duration::from_secs(35)));
        assert!(book.handle_liveness(&up, t0 + Duration::from_secs(36)));
        assert_eq!(carrying(&book, &up).len(), 2);
        let s = book.status(wall);
        assert_eq!((s.repairs, s.returns), (3, 1));
    }

    #[test]
    fn a_restored_order_is_in_force_before_any_controller_speaks() {
        let mut book = OrderBook::new("gw-a1", Duration::from_secs(30));
        assert!(book.restore(order(5, "ctl-a", 7, &[("t1", 1)]), SystemTime::now()));
        assert!(book.status(SystemTime::now()).restored);
        let up = lives(&[("t1", true), ("t2", true)]);
        assert_eq!(carrying(&book, &up), vec![(TunnelId(0), 1)]);
        // Someone else's order is not restored.
        let mut other = OrderBook::new("gw-b1", Duration::from_secs(30));
        assert!(!other.restore(order(5, "ctl-a", 7, &[("t1", 1)]), SystemTime::now()));
    }
}
