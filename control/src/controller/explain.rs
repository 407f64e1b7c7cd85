//! Why the orders are what they are: for each datacenter pair, each source gateway's tunnels
//! in rank order with what happened to each (taken, kept, draining, skipped and why, left out
//! once the capacity was met), and the load the controller projected on each transit.

use serde::Serialize;

use super::inputs::{InputIssue, Rate, Time};
use super::rank::RankKey;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Explanation {
    pub at: Time,
    pub pairs: Vec<PairExplanation>,
    pub transits: Vec<TransitExplanation>,
    /// Records ignored, and why.
    pub input_issues: Vec<InputIssue>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairExplanation {
    pub from: String,
    pub to: String,
    pub sla: String,
    pub demand: Rate,
    pub required: Rate,
    pub met: Rate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<Rate>,
    pub gateways: Vec<GatewayExplanation>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayExplanation {
    pub gateway: String,
    /// Attracts the pair's traffic (bgpctl exports its routes).
    pub selected: bool,
    /// Capacity this gateway had to offer: required / selected gateways.
    pub share: Rate,
    /// Eligible tunnels first, in rank order, then the ineligible ones by id.
    pub tunnels: Vec<TunnelExplanation>,
}

/// What happened to one tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Needed for the capacity or the tunnel minimum.
    Taken,
    /// Not needed, kept as an incumbent (keep margin or minimum dwell).
    Kept,
    /// Taken over a transit at its watermark: nothing better was left.
    Forced,
    /// Taken although it fails the SLA: no tunnel met it.
    LastResort,
    /// No longer wanted, but still carrying weight because of the per-cycle move limit.
    Draining,
    /// Eligible but not needed: the capacity was met by better-ranked tunnels.
    NotNeeded,
    /// Not usable (see `reason`).
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TunnelExplanation {
    pub tunnel: String,
    /// `lumen -> hk1-gw2/telstra`
    pub via: String,
    /// 1-based rank among the eligible; absent for ineligible tunnels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<RankKey>,
    pub decision: Decision,
    /// A short code: `rank`, `capacity_met`, `keep_margin`, `dwell`, `watermark`, `sla`,
    /// `down`, `blackhole`, `brownout_loss`, `brownout_latency`, `recovering`, `dampened`,
    /// `unmeasured`, `move_limit`.
    pub reason: String,
    pub detail: String,
    /// Weight in the orders sent.
    pub weight: u32,
    pub latency_ms: f64,
    pub loss_pct: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransitExplanation {
    pub gateway: String,
    pub transit: String,
    pub capacity: Rate,
    pub background_tx: Rate,
    pub background_rx: Rate,
    /// gatewan traffic the orders are expected to put on it.
    pub projected_tx: Rate,
    pub projected_rx: Rate,
    pub limit_pct: f64,
    /// Over its high watermark and not yet back below the low one.
    pub shedding: bool,
}
