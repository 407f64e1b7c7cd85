//! Phase 7 (when asked): the [`Explanation`] of the cycle, from what the earlier phases
//! decided. It decides nothing itself.

use super::cycle::View;
use super::fill::{Allocation, Weights};
use super::tunnels::Row;
use crate::controller::allocate::Verdict;
use crate::controller::explain::{
    Decision, Explanation, GatewayExplanation, PairExplanation, TransitExplanation,
    TunnelExplanation,
};
use crate::controller::inputs::{InputIssue, Rate, Time};

/// Explains the cycle at `now`: every pair with gateways at both ends (in name order), each
/// transit's projected load, and `issues` (sorted, duplicates kept).
pub(super) fn explain(
    now: Time,
    v: &View<'_, '_>,
    alloc: &Allocation,
    weights: &Weights,
    issues: &[InputIssue],
) -> Explanation {
    let ndc = v.members.ndc();
    let mut pairs_out = Vec::new();
    for s in 0..ndc as u32 {
        for d in 0..ndc as u32 {
            if s != d && v.members.pair_reachable(s, d) {
                pairs_out.push(pair(v, alloc, weights, s, d));
            }
        }
    }
    let transits = v
        .endpoints
        .eps
        .iter()
        .zip(&alloc.loads.v)
        .map(|(e, l)| TransitExplanation {
            gateway: v.members.gateway_id(e.gw).to_string(),
            transit: e.name.to_string(),
            capacity: Rate::bps(e.capacity),
            background_tx: Rate::bps(l.background_tx),
            background_rx: Rate::bps(l.background_rx),
            projected_tx: Rate::bps(l.projected_tx),
            projected_rx: Rate::bps(l.projected_rx),
            limit_pct: l.limit * 100.0,
            shedding: e.shedding,
        })
        .collect();
    let mut iss = issues.to_vec();
    iss.sort();
    Explanation {
        at: now,
        pairs: pairs_out,
        transits,
        input_issues: iss,
    }
}

/// Pair (s, d): its numbers and, per source gateway, its tunnels.
fn pair(
    v: &View<'_, '_>,
    alloc: &Allocation,
    weights: &Weights,
    s: u32,
    d: u32,
) -> PairExplanation {
    let ndc = v.members.ndc();
    let share = alloc.shares[s as usize * ndc + d as usize];
    let classes = v.policy.sla_classes();
    let sla = v
        .pairs
        .policy(s, d, ndc)
        .and_then(|p| classes.get(p.sla))
        .map_or(String::new(), |c| c.name.clone());
    let mut gws_out = Vec::new();
    for &gi in v.members.gateways_in(s) {
        let g = gi as usize * ndc + d as usize;
        let selected = alloc.target[g].is_some();
        let mut rank = 0u32;
        let m = v.group(g);
        let mut tunnels = Vec::with_capacity(m.len());
        for (p, &i) in m.iter().enumerate() {
            let r = &v.rows[i as usize];
            let w = weights.finals[g]
                .as_ref()
                .and_then(|q| q.get(p))
                .copied()
                .unwrap_or(0);
            let verdict = alloc.verdicts[g]
                .as_ref()
                .and_then(|vs| vs.get(p))
                .copied()
                .unwrap_or(Verdict::NotNeeded);
            let eligible = r.elig.is_eligible();
            if eligible {
                rank += 1;
            }
            let (decision, reason, detail) = decide(
                v,
                r,
                verdict,
                w,
                alloc.last_resort[g],
                selected,
                eligible.then_some(rank),
            );
            let rt = v
                .endpoints
                .eps
                .get(r.rep as usize)
                .map(|e| e.name)
                .unwrap_or("");
            tunnels.push(TunnelExplanation {
                tunnel: r.report.id.clone(),
                via: format!(
                    "{} -> {}/{}",
                    r.report.local.transit, r.report.remote.gateway, rt
                ),
                rank: eligible.then_some(rank),
                key: eligible.then_some(r.key),
                decision,
                reason,
                detail,
                weight: w,
                latency_ms: r.report.probe.latency_ms,
                loss_pct: r.report.probe.loss_pct,
            });
        }
        gws_out.push(GatewayExplanation {
            gateway: v.members.gateway_id(gi).to_string(),
            selected,
            share: Rate::bps(if selected { share.per_gateway } else { 0.0 }),
            tunnels,
        });
    }
    let (req, met) = (share.required, share.met);
    let short = req - met;
    PairExplanation {
        from: v.members.dcs[s as usize].to_string(),
        to: v.members.dcs[d as usize].to_string(),
        sla,
        demand: Rate::bps(share.demand),
        required: Rate::bps(req),
        met: Rate::bps(met),
        shortfall: (short > 1e-6 * req.max(1.0)).then(|| Rate::bps(short)),
        gateways: gws_out,
    }
}

/// What happened to tunnel `r` and why: its verdict from the fill, read against its
/// eligibility (`rank` when eligible), last-resort mode, whether its gateway was selected,
/// and the weight `w` it still carries.
fn decide(
    v: &View<'_, '_>,
    r: &Row<'_>,
    verdict: Verdict,
    w: u32,
    last_resort: bool,
    selected: bool,
    rank: Option<u32>,
) -> (Decision, String, String) {
    let ep_name = |e: u32| -> String {
        v.endpoints
            .eps
            .get(e as usize)
            .map(|ep| format!("{}/{}", v.members.gateway_id(ep.gw), ep.name))
            .unwrap_or_default()
    };
    let direction = |rx: bool| if rx { "rx" } else { "tx" };
    let (decision, reason, detail) = if last_resort && verdict.taken() {
        (
            Decision::LastResort,
            r.elig.code().to_string(),
            format!(
                "no tunnel meets the SLA; least bad left: {}",
                r.elig.detail()
            ),
        )
    } else if let Some(rank) = rank {
        match verdict {
            Verdict::Taken { grant } => (
                Decision::Taken,
                "rank".into(),
                format!("rank {rank}, offers {}", Rate::bps(grant)),
            ),
            Verdict::Kept { grant, dwell } => (
                Decision::Kept,
                if dwell { "dwell" } else { "keep_margin" }.into(),
                format!("incumbent kept, offers {}", Rate::bps(grant)),
            ),
            Verdict::Forced { endpoint, rx } => (
                Decision::Forced,
                "watermark".into(),
                format!(
                    "{} {} at its watermark, but nothing better is left",
                    ep_name(endpoint),
                    direction(rx)
                ),
            ),
            Verdict::Watermark { endpoint, rx } => (
                Decision::Skipped,
                "watermark".into(),
                format!(
                    "{} {} is at its watermark (detour)",
                    ep_name(endpoint),
                    direction(rx)
                ),
            ),
            Verdict::NotNeeded if selected => (
                Decision::NotNeeded,
                "capacity_met".into(),
                "better-ranked tunnels meet the capacity".into(),
            ),
            Verdict::NotNeeded => (
                Decision::NotNeeded,
                "gateway_not_selected".into(),
                "this gateway does not attract the pair's traffic".into(),
            ),
        }
    } else {
        (
            Decision::Skipped,
            r.elig.code().to_string(),
            r.elig.detail(),
        )
    };
    // Not taken but still weighted: the move limit is draining it.
    if w > 0 && !verdict.taken() {
        (
            Decision::Draining,
            "move_limit".to_string(),
            format!("still carrying weight under the per-cycle move limit ({reason}: {detail})"),
        )
    } else {
        (decision, reason, detail)
    }
}
