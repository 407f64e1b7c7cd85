//! Phase 5: capacity fill, pair by pair (priority first, then names), over each source
//! gateway's ranked tunnels; then the per-cycle move limit against the orders in force and
//! quantised weights. The arithmetic is [`crate::controller::allocate`]'s; this maps the
//! cycle's groups onto it and back.

use super::cycle::View;
use super::transits::Ep;
use crate::controller::allocate::{self, Cand, Load, Loads, PairNeed, Verdict};
use crate::controller::dampening::Eligibility;
use crate::controller::gate::Bad;
use crate::controller::inputs::Rate;
use crate::controller::orders::Shortfall;
use crate::controller::policy::{Capacity, PairPolicy};

/// What the fill made of one pair, for the explanation.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PairShare {
    /// Measured demand (0 when none).
    pub demand: f64,
    pub required: f64,
    pub met: f64,
    /// What each selected source gateway had to offer.
    pub per_gateway: f64,
}

/// The fill of one cycle; per-group vectors are indexed like [`super::tunnels::Groups`].
pub(super) struct Allocation {
    /// Transit loads projected after the fill.
    pub loads: Loads,
    /// Per group: target shares, parallel to its members (None: gateway not selected).
    pub target: Vec<Option<Vec<f64>>>,
    /// Per group: what happened to each member (None: the pair was not allocated).
    pub verdicts: Vec<Option<Vec<Verdict>>>,
    /// Per group: nothing met the SLA; the least bad tunnels were handed out.
    pub last_resort: Vec<bool>,
    /// Per pair, at `from * ndc + to`.
    pub shares: Vec<PairShare>,
    /// Pairs not fully served, by (from, to).
    pub shortfalls: Vec<Shortfall>,
}

/// Fills every pair in priority order; earlier pairs' load counts against later ones.
pub(super) fn allocate(v: &View<'_, '_>) -> Allocation {
    let ndc = v.members.ndc();
    let ngroups = v.members.gateways.len() * ndc;
    let mut out = Allocation {
        loads: initial_loads(&v.endpoints.eps),
        target: vec![None; ngroups],
        verdicts: vec![None; ngroups],
        last_resort: vec![false; ngroups],
        shares: vec![PairShare::default(); ndc * ndc],
        shortfalls: Vec::new(),
    };
    let keep_margin = v.policy.anti_flap().keep_margin_pct / 100.0;
    for (s, d) in v.pairs.by_priority(ndc) {
        if !v.members.pair_reachable(s, d) {
            continue;
        }
        let Some(pp) = v.pairs.policy(s, d, ndc) else {
            continue;
        };
        allocate_pair(v, s, d, pp, keep_margin, &mut out);
    }
    out.shortfalls
        .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    out
}

/// Each endpoint's load before the fill: the traffic that is not gatewan's, and the limit it
/// may be filled to.
fn initial_loads(eps: &[Ep<'_>]) -> Loads {
    Loads::new(
        eps.iter()
            .map(|e| {
                // Unknown usage: as if the port were at its watermark already.
                let full = e.capacity * if e.shedding { e.low } else { e.high };
                let (btx, brx) = e.usage.map_or((full, full), |(tx, rx, stx, srx)| {
                    ((tx - stx).max(0.0), (rx - srx).max(0.0))
                });
                Load {
                    capacity: e.capacity,
                    background_tx: btx,
                    background_rx: brx,
                    limit: if e.shedding { e.low } else { e.high },
                    projected_tx: 0.0,
                    projected_rx: 0.0,
                }
            })
            .collect(),
    )
}

/// The capacity (s, d) must be given: the fixed capacity, or the measured demand with its
/// margin and minimum; never less than the traffic that is there.
fn required(pp: &PairPolicy, measured: Option<f64>) -> f64 {
    let required = match &pp.capacity {
        Capacity::Fixed(r) => r.as_bps(),
        Capacity::Demand { margin_pct, min } => {
            (measured.unwrap_or(0.0) * (1.0 + margin_pct / 100.0)).max(min.as_bps())
        }
    };
    let traffic = measured.unwrap_or(match &pp.capacity {
        Capacity::Fixed(r) => r.as_bps(),
        Capacity::Demand { .. } => 0.0,
    });
    required.max(traffic)
}

/// Fills pair (s, d) over its source gateways, writing their groups' targets and verdicts,
/// the pair's shares and, when short, its shortfall into `out`.
fn allocate_pair(
    v: &View<'_, '_>,
    s: u32,
    d: u32,
    pp: &PairPolicy,
    keep_margin: f64,
    out: &mut Allocation,
) {
    let ndc = v.members.ndc();
    let measured = v.pairs.demand.get(&(s, d)).copied();
    let required = required(pp, measured);
    let need = PairNeed {
        required,
        min_tunnels: pp.min_tunnels,
        keep_margin,
    };
    let gidx: Vec<usize> = v
        .members
        .gateways_in(s)
        .iter()
        .map(|&g| g as usize * ndc + d as usize)
        .collect();
    // Per gateway: the candidates handed to allocation and their positions in its group.
    let (mut cands, mut positions): (Vec<Vec<Cand>>, Vec<Vec<usize>>) =
        gidx.iter().map(|&g| eligible(v, g)).unzip();
    let mut degraded = false;
    if cands.iter().all(|c| c.is_empty()) {
        // Nothing meets the SLA: the least bad tunnels that still carry packets.
        degraded = true;
        (cands, positions) = gidx.iter().map(|&g| least_bad(v, g)).unzip();
    }
    let slices: Vec<&[Cand]> = cands.iter().map(|c| c.as_slice()).collect();
    let fill = allocate::allocate_pair(&slices, &mut out.loads, &need);
    let selected = fill.gateways.iter().filter(|f| f.is_some()).count();
    for (k, f) in fill.gateways.into_iter().enumerate() {
        let g = gidx[k];
        let n = v.group(g).len();
        let mut t = vec![0.0; n];
        let mut vs = vec![Verdict::NotNeeded; n];
        if let Some(f) = f {
            for (ci, &p) in positions[k].iter().enumerate() {
                if let (Some(ts), Some(vp)) = (t.get_mut(p), vs.get_mut(p)) {
                    *ts = f.shares.get(ci).copied().unwrap_or(0.0);
                    *vp = f.verdicts.get(ci).copied().unwrap_or(Verdict::NotNeeded);
                }
            }
            out.target[g] = Some(t);
        }
        out.verdicts[g] = Some(vs);
        out.last_resort[g] = degraded;
    }
    let per_gateway = if selected > 0 {
        required / selected as f64
    } else {
        0.0
    };
    out.shares[s as usize * ndc + d as usize] = PairShare {
        demand: measured.unwrap_or(0.0),
        required,
        met: fill.met,
        per_gateway,
    };
    let missing = required - fill.met;
    if selected == 0 || degraded || missing > 1e-6 * required.max(1.0) {
        out.shortfalls.push(Shortfall {
            from: v.members.dcs[s as usize].to_string(),
            to: v.members.dcs[d as usize].to_string(),
            required: Rate::bps(required),
            met: Rate::bps(fill.met),
            missing: Rate::bps(missing.max(0.0)),
            cause: if selected == 0 {
                "unreachable"
            } else if degraded {
                "degraded"
            } else {
                "capacity"
            }
            .to_string(),
        });
    }
}

/// Group `g`'s eligible tunnels in rank order, as candidates, with their positions in the
/// group.
fn eligible(v: &View<'_, '_>, g: usize) -> (Vec<Cand>, Vec<usize>) {
    let members = v.group(g);
    let cands = members
        .iter()
        .map(|&i| &v.rows[i as usize])
        .filter(|r| r.elig.is_eligible())
        .map(|r| Cand {
            local: r.lep,
            remote: r.rep,
            remote_gateway: r.rgw,
            class: (
                r.key.sla_tier,
                r.key.preference,
                r.key.cost_micro,
                r.key.latency_bucket,
            ),
            incumbent: r.incumbent,
            pinned: r.pinned,
        })
        .collect();
    let positions = members
        .iter()
        .enumerate()
        .filter(|(_, &i)| v.rows[i as usize].elig.is_eligible())
        .map(|(p, _)| p)
        .collect();
    (cands, positions)
}

/// Last resort for group `g`: the tunnels that still carry packets, least loss first, then
/// least latency, all ranking as equals and none incumbent; with their positions in the
/// group.
fn least_bad(v: &View<'_, '_>, g: usize) -> (Vec<Cand>, Vec<usize>) {
    let members = v.group(g);
    let mut pos: Vec<usize> = members
        .iter()
        .enumerate()
        .filter(|(_, &i)| carries_packets(&v.rows[i as usize].elig))
        .map(|(p, _)| p)
        .collect();
    pos.sort_by(|&a, &b| {
        let (ra, rb) = (&v.rows[members[a] as usize], &v.rows[members[b] as usize]);
        ra.report
            .probe
            .loss_pct
            .total_cmp(&rb.report.probe.loss_pct)
            .then(
                ra.report
                    .probe
                    .latency_ms
                    .total_cmp(&rb.report.probe.latency_ms),
            )
            .then_with(|| ra.report.id.cmp(&rb.report.id))
    });
    let cands = pos
        .iter()
        .map(|&p| {
            let r = &v.rows[members[p] as usize];
            Cand {
                local: r.lep,
                remote: r.rep,
                remote_gateway: r.rgw,
                class: (0, 0, 0, 0),
                incumbent: false,
                pinned: false,
            }
        })
        .collect();
    (cands, pos)
}

/// The weights ordered this cycle.
pub(super) struct Weights {
    /// Per group: weights parallel to its members (None: gateway not selected).
    pub finals: Vec<Option<Vec<u32>>>,
    /// Per row: its weight (0 when not in a selected group).
    pub per_row: Vec<u32>,
}

/// Moves each selected group from the weights in force toward its target, within the move
/// limit, and quantises the result.
pub(super) fn weights(v: &View<'_, '_>, alloc: &Allocation) -> Weights {
    let policy = v.policy;
    let ndc = v.members.ndc();
    let scale = policy.weight_scale();
    let max_move = policy.anti_flap().max_move_pct / 100.0;
    let deadband = policy.anti_flap().weight_deadband_pct / 100.0;
    let mut finals: Vec<Option<Vec<u32>>> = vec![None; v.members.gateways.len() * ndc];
    let mut per_row: Vec<u32> = vec![0; v.rows.len()];
    for gi in 0..v.members.gateways.len() {
        for d in 0..ndc {
            let g = gi * ndc + d;
            let Some(tgt) = alloc.target[g].as_ref() else {
                continue;
            };
            let m = v.group(g);
            // Tunnels of the old order that are gone from the inputs count as failed:
            // their weight is simply not carried over.
            let old: Vec<f64> = m
                .iter()
                .map(|&i| f64::from(v.rows[i as usize].old_weight))
                .collect();
            // Weight leaves failed tunnels at once; in last-resort mode only those that
            // no longer carry packets count as failed.
            let failed: Vec<bool> = m
                .iter()
                .map(|&i| {
                    let e = &v.rows[i as usize].elig;
                    if alloc.last_resort[g] {
                        !carries_packets(e)
                    } else {
                        e.is_failure()
                    }
                })
                .collect();
            let shares = allocate::limit_moves(&old, tgt, &failed, max_move, deadband);
            let q = if kept_old(&old, &shares) {
                // Unchanged: resend the old integers, not a requantisation of them.
                old.iter().map(|w| *w as u32).collect()
            } else {
                allocate::quantise(&shares, scale)
            };
            for (&i, w) in m.iter().zip(&q) {
                if let Some(f) = per_row.get_mut(i as usize) {
                    *f = *w;
                }
            }
            finals[g] = Some(q);
        }
    }
    Weights { finals, per_row }
}

/// `shares` are the old weights, normalised: same tunnels, same proportions.
fn kept_old(old: &[f64], shares: &[f64]) -> bool {
    old.iter().any(|w| *w > 0.0)
        && shares
            .iter()
            .zip(old)
            .all(|(s, o)| (*s > 0.0) == (*o > 0.0))
        && {
            let total: f64 = old.iter().sum();
            shares
                .iter()
                .zip(old)
                .all(|(s, o)| (s - o / total).abs() < 1e-12)
        }
}

/// Established, measured and not blackholed: a last resort can still carry packets.
fn carries_packets(e: &Eligibility) -> bool {
    match e {
        Eligibility::Eligible | Eligibility::Recovering { .. } | Eligibility::Dampened { .. } => {
            true
        }
        Eligibility::Bad { bad } => matches!(
            bad,
            Bad::BrownoutLoss { .. } | Bad::BrownoutLatency { .. } | Bad::Sla { .. }
        ),
        Eligibility::Unmeasured { .. } => false,
    }
}
