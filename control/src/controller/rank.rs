//! Ranking: the order in which one gateway's eligible tunnels to one remote datacenter are
//! taken. The key is, in order: SLA tier, transit preference, cost, latency bucket, incumbent
//! first, tunnel id. Incumbents are judged with the challenger margin in their favour, so a
//! challenger must be clearly better (not better by noise) to overtake one.

use serde::Serialize;

use super::gate::sla_tier;
use super::inputs::ProbeWindow;
use super::policy::{Cost, Policy};

/// Everything a tunnel is ranked by except its id (compared last, by the caller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RankKey {
    pub sla_tier: u16,
    /// Sum of both ends' transit preferences.
    pub preference: u32,
    /// Both ends' marginal price per GB, in millionths.
    pub cost_micro: u64,
    pub latency_bucket: u32,
    /// false sorts first: incumbents before challengers.
    pub challenger: bool,
}

/// Marginal price of one more GB over a transit endpoint. `over_commit` is the datacenter's
/// commit state for commit-billed transits (see [`CommitState`]).
pub fn unit_price(cost: &Cost, over_commit: bool) -> f64 {
    match cost {
        Cost::PerGb(p) => *p,
        // Below the commit the traffic is already paid for.
        Cost::Commit { over_per_gb, .. } => {
            if over_commit {
                *over_per_gb
            } else {
                0.0
            }
        }
    }
}

/// Whether a datacenter's commit-billed transit is over its commit, with hysteresis: it goes
/// over above the commit and back under only below 90% of it, so usage hovering at the
/// commit does not flip the cost tier every cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitState {
    pub over: bool,
}

impl CommitState {
    pub fn update(&mut self, usage_bps: f64, commit_bps: f64) {
        if usage_bps > commit_bps {
            self.over = true;
        } else if usage_bps < 0.9 * commit_bps {
            self.over = false;
        }
    }
}

/// Per-tunnel inputs to [`rank_key`].
pub struct RankInput<'a> {
    pub probe: &'a ProbeWindow,
    /// The pair's SLA class index.
    pub floor: usize,
    pub preference: u32,
    pub price_per_gb: f64,
    pub incumbent: bool,
}

pub fn rank_key(policy: &Policy, t: &RankInput<'_>) -> RankKey {
    let margin = 1.0 + policy.anti_flap().challenger_margin_pct / 100.0;
    let leniency = if t.incumbent { margin } else { 1.0 };
    let tier = sla_tier(t.probe, policy.sla_classes(), t.floor, leniency);
    let latency = t.probe.latency_ms / leniency;
    let bucket = (latency / policy.latency_bucket_ms()).floor();
    RankKey {
        sla_tier: u16::try_from(tier).unwrap_or(u16::MAX),
        preference: t.preference,
        // Float to integer casts saturate; prices are validated non-negative.
        cost_micro: (t.price_per_gb * 1e6).round() as u64,
        latency_bucket: bucket as u32,
        challenger: !t.incumbent,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn probe(latency_ms: f64) -> ProbeWindow {
        ProbeWindow {
            measurements: 100,
            latency_ms,
            ..ProbeWindow::default()
        }
    }

    fn key(p: &Policy, latency: f64, incumbent: bool, pref: u32, price: f64) -> RankKey {
        rank_key(
            p,
            &RankInput {
                probe: &probe(latency),
                floor: p.sla_classes().len() - 1,
                preference: pref,
                price_per_gb: price,
                incumbent,
            },
        )
    }

    #[test]
    fn order_is_preference_then_cost_then_latency_then_incumbent() {
        let p = Policy::default();
        assert!(key(&p, 200.0, false, 0, 0.0) < key(&p, 20.0, false, 1, 0.0));
        assert!(key(&p, 200.0, false, 0, 0.001) < key(&p, 20.0, false, 0, 0.002));
        assert!(key(&p, 20.0, false, 0, 0.0) < key(&p, 35.0, false, 0, 0.0));
        // Same bucket: the incumbent first.
        assert!(key(&p, 25.0, true, 0, 0.0) < key(&p, 21.0, false, 0, 0.0));
    }

    #[test]
    fn a_challenger_needs_the_margin_to_overtake_an_incumbent() {
        let p = Policy::default();
        // Incumbent at 105 ms is judged as 87.5 ms (bucket 8); a challenger at 85 ms (bucket 8)
        // does not pass it, one at 79 ms (bucket 7) does.
        let inc = key(&p, 105.0, true, 0, 0.0);
        assert!(inc < key(&p, 85.0, false, 0, 0.0));
        assert!(key(&p, 79.0, false, 0, 0.0) < inc);
    }

    #[test]
    fn commit_state_has_hysteresis() {
        let mut c = CommitState::default();
        c.update(95.0, 100.0);
        assert!(!c.over);
        c.update(101.0, 100.0);
        assert!(c.over);
        c.update(95.0, 100.0);
        assert!(c.over);
        c.update(89.0, 100.0);
        assert!(!c.over);
        let commit = Cost::Commit {
            rate: crate::controller::inputs::Rate::gbps(1.0),
            over_per_gb: 0.02,
        };
        assert_eq!(unit_price(&commit, false), 0.0);
        assert_eq!(unit_price(&commit, true), 0.02);
    }
}
