//! The controller itself, sans-IO: [`Controller::step`] takes the time and a [`Snapshot`] and
//! returns the cycle's [`Orders`] (and, when asked, the [`Explanation`]). It keeps the history
//! that anti-flap needs (tunnel health, transit shedding, the orders in force) between steps,
//! and nothing else: no clock, no sockets, no threads.
//!
//! Determinism: every list that reaches the output is built in name order (datacenters,
//! gateways, tunnels ranked with the tunnel id as the last key), never in input order. Hash
//! maps hold state looked up by name; they are never iterated to build output.
//!
//! A cycle runs in phases, one module each, every phase taking what the earlier ones worked
//! out and returning typed results:
//!
//! 1. `members`: datacenters and gateways in name order, duplicates and limits refused.
//! 2. `transits`: transit endpoints, their usage, shedding and commit state.
//! 3. `pairs`: per datacenter pair, its policy and demand; per datacenter, its prefixes.
//! 4. `tunnels`: usable tunnel reports with their state (`paths`), health, rank, grouped
//!    by (local gateway, remote datacenter).
//! 5. `fill`: capacity fill pair by pair, then move limits and quantised weights.
//! 6. `emit`: versioned gateway and bgpctl orders.
//! 7. `explaining`: why, when asked.

use std::collections::BTreeMap;

use super::explain::Explanation;
use super::inputs::{InputIssue, Snapshot, Time};
use super::orders::{Authority, BgpctlOrder, Election, GatewayOrder, Orders, Reply};
use super::policy::Policy;
use super::rank::CommitState;

mod cycle;
mod emit;
mod explaining;
mod fill;
mod members;
mod pairs;
mod paths;
mod transits;
mod tunnels;

use cycle::View;
use paths::PathTable;
use transits::TransitState;

/// A fast hash map. Hash maps here only look state up by name; nothing that reaches the output
/// is ever built by iterating one, so their order cannot leak into the orders.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

fn map<K, V>() -> HashMap<K, V> {
    HashMap::with_hasher(foldhash::fast::FixedState::default())
}

/// Limits on what one snapshot may hold (far above any real deployment): state and work grow
/// with gateways x datacenters, so a malformed snapshot must not make them explode. The
/// excess (last in name order) is ignored and reported.
pub const MAX_GATEWAYS: usize = 4096;
pub const MAX_DATACENTERS: usize = 512;

/// One cycle's output.
#[derive(Clone, Debug, PartialEq)]
pub struct Cycle {
    pub orders: Orders,
    pub authority: Authority,
    /// Present when [`Controller::set_explain`] is on.
    pub explanation: Option<Explanation>,
    /// Records ignored this cycle, sorted.
    pub input_issues: Vec<InputIssue>,
}

/// The decision engine. One per controller process.
#[derive(Debug)]
pub struct Controller {
    policy: Policy,
    election: Election,
    explain: bool,
    cycle: u64,
    /// Per tunnel: health history and weight in force.
    paths: PathTable,
    transits: BTreeMap<(String, String), TransitState>,
    commits: BTreeMap<(String, String), CommitState>,
    gateway_orders: BTreeMap<String, GatewayOrder>,
    bgpctl_orders: BTreeMap<String, BgpctlOrder>,
    /// Last version issued per recipient, kept when a recipient leaves so that a returning
    /// one never sees a version go backwards.
    gateway_versions: BTreeMap<String, u64>,
    bgpctl_versions: BTreeMap<String, u64>,
    acked: BTreeMap<String, u64>,
}

impl Controller {
    pub fn new(id: impl Into<String>, policy: Policy) -> Controller {
        Controller {
            policy,
            election: Election::new(id),
            explain: false,
            cycle: 0,
            paths: PathTable::default(),
            transits: BTreeMap::new(),
            commits: BTreeMap::new(),
            gateway_orders: BTreeMap::new(),
            bgpctl_orders: BTreeMap::new(),
            gateway_versions: BTreeMap::new(),
            bgpctl_versions: BTreeMap::new(),
            acked: BTreeMap::new(),
        }
    }

    /// Build an [`Explanation`] with every cycle (costs time at scale; off by default).
    pub fn set_explain(&mut self, on: bool) {
        self.explain = on;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the policy; history (health, orders in force) is kept.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn id(&self) -> &str {
        self.election.id()
    }

    /// Feeds a receiver's reply to an order: acks are recorded, refusals naming a newer
    /// epoch fence this controller.
    pub fn on_reply(&mut self, recipient: &str, reply: &Reply) {
        self.election.on_reply(reply);
        if let Reply::Ack { version, .. } = reply {
            let e = self.acked.entry(recipient.to_string()).or_insert(0);
            *e = (*e).max(*version);
        }
    }

    /// The highest version `recipient` acknowledged.
    pub fn acked(&self, recipient: &str) -> Option<u64> {
        self.acked.get(recipient).copied()
    }

    /// Takes `orders` as the orders in force (e.g. what gateways hold when this controller
    /// starts), so incumbency, move limits and versions continue from them.
    pub fn adopt(&mut self, orders: &Orders) {
        for (gw, o) in &orders.gateways {
            let v = self.gateway_versions.entry(gw.clone()).or_insert(0);
            *v = (*v).max(o.version);
            self.gateway_orders.insert(gw.clone(), o.clone());
            for tw in o.remotes.values().flatten() {
                self.paths.adopt_weight(gw, &tw.tunnel, tw.weight);
            }
        }
        for (dc, o) in &orders.bgpctl {
            let v = self.bgpctl_versions.entry(dc.clone()).or_insert(0);
            *v = (*v).max(o.version);
            self.bgpctl_orders.insert(dc.clone(), o.clone());
        }
    }

    /// One decision cycle at `now`: the phases in order, each on what the earlier ones
    /// returned; the history they update is this controller's.
    pub fn step(&mut self, now: Time, snap: &Snapshot) -> Cycle {
        self.cycle += 1;
        let cycle = self.cycle;
        let authority = self.election.observe(&snap.membership);
        let mut issues: Vec<InputIssue> = Vec::new();
        let policy = &self.policy;

        let members = members::members(snap, &mut issues);
        let mut endpoints = transits::endpoints(&members, policy, &snap.transit_usage, &mut issues);
        transits::judge(
            &mut endpoints,
            &members,
            policy,
            &mut self.transits,
            &mut self.commits,
        );
        let pairs = pairs::pairs(&members, policy, snap, &mut issues);
        let mut rows = tunnels::rows(
            snap,
            &members,
            &endpoints,
            &mut self.paths,
            cycle,
            now,
            &mut issues,
        );
        tunnels::assess(
            &mut rows,
            &members,
            &endpoints,
            &pairs,
            policy,
            &mut self.paths,
            now,
        );
        self.paths.sweep(cycle, now);
        let groups = tunnels::Groups::new(&rows, members.gateways.len(), members.ndc());
        let view = View {
            policy,
            members: &members,
            endpoints: &endpoints,
            pairs: &pairs,
            rows: &rows,
            groups: &groups,
        };

        let alloc = fill::allocate(&view);
        let weights = fill::weights(&view, &alloc);

        let epoch = authority.epoch.clone();
        let gateway_orders = emit::gateway_orders(
            &view,
            &weights,
            &epoch,
            &self.gateway_orders,
            &mut self.gateway_versions,
        );
        self.paths.record_weights(&rows, &weights.per_row, now);
        let bgpctl_orders = emit::bgpctl_orders(
            &view,
            &gateway_orders,
            &epoch,
            &self.bgpctl_orders,
            &mut self.bgpctl_versions,
        );

        let explanation = self
            .explain
            .then(|| explaining::explain(now, &view, &alloc, &weights, &issues));

        self.gateway_orders = gateway_orders.clone();
        self.bgpctl_orders = bgpctl_orders.clone();
        issues.sort();
        issues.dedup();
        Cycle {
            orders: Orders {
                controller: self.election.id().to_string(),
                epoch,
                authoritative: authority.authoritative,
                gateways: gateway_orders,
                bgpctl: bgpctl_orders,
                shortfalls: alloc.shortfalls,
            },
            authority,
            explanation,
            input_issues: issues,
        }
    }
}
