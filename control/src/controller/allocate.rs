//! Capacity fill: for one directed datacenter pair, which tunnels each source gateway takes
//! and with what share, charging projected load to both ends' transits and detouring around
//! transits at their watermark; then the per-cycle move limit and weight quantisation.
//!
//! Works on indices only; the engine maps names to indices and back.

/// Load on one transit endpoint (a gateway's port to one provider), per direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Load {
    pub capacity: f64,
    /// Traffic that is not gatewan's: the controller cannot move it.
    pub background_tx: f64,
    pub background_rx: f64,
    /// Fraction of capacity gatewan may fill up to: the high watermark, or the low one while
    /// the transit is shedding.
    pub limit: f64,
    /// Capacity reserved for gatewan so far this cycle (required capacity, margin included).
    pub projected_tx: f64,
    pub projected_rx: f64,
}

impl Load {
    fn headroom_tx(&self) -> f64 {
        self.limit * self.capacity - self.background_tx - self.projected_tx
    }

    fn headroom_rx(&self) -> f64 {
        self.limit * self.capacity - self.background_rx - self.projected_rx
    }
}

/// Transit loads with an undo journal, so a pair's tentative fill can be rolled back exactly.
#[derive(Debug, Default)]
pub struct Loads {
    pub v: Vec<Load>,
    journal: Vec<(u32, f64, f64)>,
}

impl Loads {
    pub fn new(v: Vec<Load>) -> Loads {
        Loads {
            v,
            journal: Vec::new(),
        }
    }

    fn get(&self, i: u32) -> Option<&Load> {
        self.v.get(i as usize)
    }

    fn charge(&mut self, local: u32, remote: u32, reserved: f64) {
        for (ep, tx) in [(local, true), (remote, false)] {
            if let Some(l) = self.v.get_mut(ep as usize) {
                self.journal.push((ep, l.projected_tx, l.projected_rx));
                if tx {
                    l.projected_tx += reserved;
                } else {
                    l.projected_rx += reserved;
                }
            }
        }
    }

    fn mark(&self) -> usize {
        self.journal.len()
    }

    fn rollback(&mut self, mark: usize) {
        while self.journal.len() > mark {
            if let Some((ep, tx, rx)) = self.journal.pop() {
                if let Some(l) = self.v.get_mut(ep as usize) {
                    l.projected_tx = tx;
                    l.projected_rx = rx;
                }
            }
        }
    }

    fn commit(&mut self) {
        self.journal.clear();
    }
}

/// One eligible tunnel of a gateway, in rank order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cand {
    /// Local and remote transit endpoints (indices into [`Loads::v`]).
    pub local: u32,
    pub remote: u32,
    pub remote_gateway: u32,
    /// Rank key without incumbency: candidates with the same class rank as equals, and the
    /// spare tunnels that `min_tunnels` asks for are picked among equals for diversity.
    pub class: RankClass,
    /// Carries weight in the orders in force.
    pub incumbent: bool,
    /// Incumbent younger than the minimum dwell: kept even when not needed.
    pub pinned: bool,
}

/// The part of a rank key that says how good a tunnel is (not who holds the place).
pub type RankClass = (u16, u32, u64, u32);

/// What happened to one candidate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Taken because the capacity (or the tunnel minimum) was not met yet.
    Taken { grant: f64 },
    /// Not needed, but an incumbent kept within the keep margin or the minimum dwell.
    Kept { grant: f64, dwell: bool },
    /// Taken although its transit is at the watermark: nothing better was left.
    Forced { endpoint: u32, rx: bool },
    /// Skipped: this endpoint's transit is at its watermark.
    Watermark { endpoint: u32, rx: bool },
    /// Left out: the capacity was met.
    NotNeeded,
}

impl Verdict {
    pub fn taken(&self) -> bool {
        matches!(
            self,
            Verdict::Taken { .. } | Verdict::Kept { .. } | Verdict::Forced { .. }
        )
    }

    fn grant(&self) -> f64 {
        match self {
            Verdict::Taken { grant } | Verdict::Kept { grant, .. } => *grant,
            _ => 0.0,
        }
    }
}

/// Fill parameters of one pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairNeed {
    /// Required capacity (never below the measured demand): reserved on the transits, so a
    /// demand margin is headroom kept free below the watermarks.
    pub required: f64,
    pub min_tunnels: u32,
    /// Fraction: incumbents are kept while the offer is below required x (1 + keep).
    pub keep_margin: f64,
}

/// One gateway's fill.
#[derive(Clone, Debug, PartialEq)]
pub struct Fill {
    /// Parallel to the candidates.
    pub verdicts: Vec<Verdict>,
    /// Shares of the gateway's traffic per candidate (sum 1 when anything is taken).
    pub shares: Vec<f64>,
    /// Capacity the taken tunnels offer.
    pub offered: f64,
}

impl Fill {
    pub fn taken_count(&self) -> usize {
        self.verdicts.iter().filter(|v| v.taken()).count()
    }
}

/// Takes tunnels in rank order until `target` capacity is met, each granted what its tighter
/// end's headroom allows (up to `target`); keeps incumbents within the keep margin or the
/// minimum dwell; then adds spares up to `need.min_tunnels`, picked among the best remaining
/// class for diversity (fewest shared ports and remote gateways).
///
/// A grant is what a tunnel adds given the tunnels taken before it (two tunnels over one
/// port share its headroom). Weights follow each taken tunnel's own usable capacity (its
/// headroom before this gateway's fill, capped at the target), so tunnels that could each
/// carry the whole target share it equally whatever order they were taken in. Each tunnel's
/// transits are charged its weighted part of the target (its grant when the target is not
/// met).
fn fill_gateway(cands: &[Cand], loads: &mut Loads, target: f64, need: &PairNeed) -> Fill {
    let min_grant = 0.01 * target;
    let mut verdicts = vec![Verdict::NotNeeded; cands.len()];
    let mut offered = 0.0;
    let mut count = 0u32;
    let mark = loads.mark();
    // The grant `c` would get now, or the endpoint that blocks it.
    let grant_of = |c: &Cand, loads: &Loads| -> Result<f64, (u32, bool)> {
        let (Some(l), Some(r)) = (loads.get(c.local), loads.get(c.remote)) else {
            return Err((u32::MAX, false));
        };
        let (htx, hrx) = (l.headroom_tx(), r.headroom_rx());
        let (h, endpoint, rx) = if htx <= hrx {
            (htx, c.local, false)
        } else {
            (hrx, c.remote, true)
        };
        let grant = h.min(target);
        if h <= 0.0 || (target > 0.0 && grant < min_grant) {
            Err((endpoint, rx))
        } else {
            Ok(grant)
        }
    };
    // Capacity: in rank order until the target is met.
    for (i, c) in cands.iter().enumerate() {
        if offered >= target {
            break;
        }
        match grant_of(c, loads) {
            Err((endpoint, rx)) => verdicts[i] = Verdict::Watermark { endpoint, rx },
            Ok(grant) => {
                loads.charge(c.local, c.remote, grant);
                offered += grant;
                count += 1;
                verdicts[i] = Verdict::Taken { grant };
            }
        }
    }
    // Spares: the gateway fails over on its own between cycles, so it needs more than one.
    while count < need.min_tunnels {
        let open = |i: usize| verdicts[i] == Verdict::NotNeeded;
        let Some(best) = (0..cands.len()).find(|&i| open(i)) else {
            break;
        };
        let class = cands[best].class;
        let overlap = |c: &Cand| {
            cands
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v.taken())
                .map(|(t, _)| {
                    u32::from(t.local == c.local)
                        + u32::from(t.remote == c.remote)
                        + u32::from(t.remote_gateway == c.remote_gateway)
                })
                .sum::<u32>()
        };
        let Some(pick) = (0..cands.len())
            .filter(|&i| open(i) && cands[i].class == class)
            .min_by_key(|&i| (overlap(&cands[i]), i))
        else {
            break;
        };
        match grant_of(&cands[pick], loads) {
            Err((endpoint, rx)) => verdicts[pick] = Verdict::Watermark { endpoint, rx },
            Ok(grant) => {
                loads.charge(cands[pick].local, cands[pick].remote, grant);
                offered += grant;
                count += 1;
                verdicts[pick] = Verdict::Taken { grant };
            }
        }
    }
    // Incumbents left out: kept while the offer is within the keep margin of the target (so
    // a requirement hovering at a boundary does not add and drop a tunnel every cycle), or
    // while younger than the minimum dwell.
    for (i, c) in cands.iter().enumerate() {
        if !c.incumbent || verdicts[i] != Verdict::NotNeeded {
            continue;
        }
        let margin = offered < target * (1.0 + need.keep_margin);
        if !margin && !c.pinned {
            continue;
        }
        if let Ok(grant) = grant_of(c, loads) {
            loads.charge(c.local, c.remote, grant);
            offered += grant;
            count += 1;
            verdicts[i] = Verdict::Kept {
                grant,
                dwell: !margin,
            };
        }
    }
    // Every transit full: the best possible is still to carry the traffic, over the best
    // ranked tunnels, rather than to send nothing.
    if count == 0 && !cands.is_empty() {
        let n = (need.min_tunnels as usize).clamp(1, cands.len());
        for v in verdicts.iter_mut().take(n) {
            let (endpoint, rx) = match *v {
                Verdict::Watermark { endpoint, rx } => (endpoint, rx),
                _ => (u32::MAX, false),
            };
            *v = Verdict::Forced { endpoint, rx };
        }
    }
    // Replace the tentative charges (whole grants) by each tunnel's part of the target.
    loads.rollback(mark);
    let taken: Vec<usize> = (0..verdicts.len())
        .filter(|&i| verdicts[i].taken())
        .collect();
    let usable = |c: &Cand| -> f64 {
        match (loads.get(c.local), loads.get(c.remote)) {
            (Some(l), Some(r)) => l.headroom_tx().min(r.headroom_rx()).clamp(0.0, target),
            _ => 0.0,
        }
    };
    let basis: Vec<f64> = (0..cands.len())
        .map(|i| {
            if verdicts[i].taken() {
                usable(&cands[i])
            } else {
                0.0
            }
        })
        .collect();
    let total_basis: f64 = basis.iter().sum();
    let total: f64 = taken.iter().map(|&i| verdicts[i].grant()).sum();
    let mut shares = vec![0.0; cands.len()];
    for &i in &taken {
        shares[i] = if total_basis > 0.0 {
            basis[i] / total_basis
        } else {
            1.0 / taken.len() as f64
        };
        // Short of the target, each tunnel is full up to its grant; forced tunnels carry
        // their share whatever the watermark says.
        let reserved = if total >= target || total <= 0.0 {
            target * shares[i]
        } else {
            verdicts[i].grant()
        };
        loads.charge(cands[i].local, cands[i].remote, reserved);
    }
    Fill {
        verdicts,
        shares,
        offered,
    }
}

/// A pair's allocation.
#[derive(Clone, Debug, PartialEq)]
pub struct PairFill {
    /// Per source gateway (same order as given): its fill, or None when not selected to
    /// attract the pair's traffic.
    pub gateways: Vec<Option<Fill>>,
    /// Capacity the selection offers, given that the fabric spreads traffic equally over the
    /// selected gateways (so the weakest one limits the pair).
    pub met: f64,
}

/// Allocates one pair over its source gateways' ranked candidates (gateways with no
/// candidates are never selected). The fabric's ECMP spreads the pair's traffic equally over
/// the gateways that attract it, so each selected gateway must offer required / k.
pub fn allocate_pair(gateways: &[&[Cand]], loads: &mut Loads, need: &PairNeed) -> PairFill {
    let usable: Vec<usize> = (0..gateways.len())
        .filter(|&i| !gateways[i].is_empty())
        .collect();
    let mut out = PairFill {
        gateways: vec![None; gateways.len()],
        met: 0.0,
    };
    if usable.is_empty() {
        return out;
    }
    loads.commit();
    let mark = loads.mark();
    let fill_set = |set: &[usize], loads: &mut Loads, out: &mut PairFill| {
        let k = set.len() as f64;
        let mut weakest = f64::INFINITY;
        for &g in set {
            let fill = fill_gateway(gateways[g], loads, need.required / k, need);
            weakest = weakest.min(fill.offered);
            out.gateways[g] = Some(fill);
        }
        out.met = (weakest * k).min(need.required);
    };
    fill_set(&usable, loads, &mut out);
    if out.met + 1e-6 * need.required.max(1.0) >= need.required || usable.len() == 1 {
        loads.commit();
        return out;
    }
    // Short: the weakest gateway limits the pair. Find what each could offer alone and keep
    // the k best that maximise k x (k-th best offer); ties keep more gateways.
    loads.rollback(mark);
    let mut alone: Vec<(usize, f64)> = Vec::with_capacity(usable.len());
    for &g in &usable {
        let fill = fill_gateway(gateways[g], loads, need.required, need);
        alone.push((g, fill.offered));
        loads.rollback(mark);
    }
    alone.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut best_k = alone.len();
    let mut best = f64::NEG_INFINITY;
    for (i, (_, offer)) in alone.iter().enumerate() {
        let k = i + 1;
        let v = (offer * k as f64).min(need.required);
        if v >= best {
            best = v;
            best_k = k;
        }
    }
    let mut set: Vec<usize> = alone.iter().take(best_k).map(|(g, _)| *g).collect();
    set.sort_unstable();
    out = PairFill {
        gateways: vec![None; gateways.len()],
        met: 0.0,
    };
    fill_set(&set, loads, &mut out);
    loads.commit();
    out
}

/// Limits how much of a gateway's weight moves in one cycle. `old` and `target` are shares
/// over the same candidate list (old may include tunnels no longer candidates; the caller
/// maps them), `failed[i]` marks old tunnels that failed: their weight follows the target at
/// once. Returns the shares to send and whether anything voluntary moved beyond the deadband.
pub fn limit_moves(
    old: &[f64],
    target: &[f64],
    failed: &[bool],
    max_move: f64,
    deadband: f64,
) -> Vec<f64> {
    let n = target.len();
    let old_total: f64 = old.iter().sum();
    if old_total <= 0.0 {
        return target.to_vec();
    }
    let failed_share: f64 = (0..n)
        .filter(|&i| failed.get(i).copied().unwrap_or(false))
        .map(|i| old.get(i).copied().unwrap_or(0.0))
        .sum::<f64>()
        / old_total;
    // Start from the old weights with the failed weight already sent where the target says.
    let start: Vec<f64> = (0..n)
        .map(|i| {
            let o = if failed.get(i).copied().unwrap_or(false) {
                0.0
            } else {
                old.get(i).copied().unwrap_or(0.0) / old_total
            };
            o + failed_share * target[i]
        })
        .collect();
    let moved: f64 = (0..n).map(|i| (target[i] - start[i]).abs()).sum::<f64>() / 2.0;
    let same_set = (0..n).all(|i| (start[i] > 0.0) == (target[i] > 0.0));
    if failed_share == 0.0 && same_set && moved <= deadband {
        return start;
    }
    if moved <= max_move {
        return target.to_vec();
    }
    let k = max_move / moved;
    (0..n)
        .map(|i| start[i] + (target[i] - start[i]) * k)
        .collect()
}

/// Quantises shares to integers summing to `scale` (largest remainder; ties to the earlier
/// index, which callers keep in rank order). Zero shares stay zero.
pub fn quantise(shares: &[f64], scale: u32) -> Vec<u32> {
    let total: f64 = shares.iter().filter(|s| **s > 0.0).sum();
    if total <= 0.0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<f64> = shares
        .iter()
        .map(|s| {
            if *s > 0.0 {
                s / total * f64::from(scale)
            } else {
                0.0
            }
        })
        .collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let given: u32 = out.iter().sum();
    let mut order: Vec<usize> = (0..shares.len()).filter(|&i| shares[i] > 0.0).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order
        .iter()
        .cycle()
        .take(scale.saturating_sub(given) as usize)
    {
        out[i] += 1;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const G: f64 = 1e9;

    fn load(cap: f64) -> Load {
        Load {
            capacity: cap,
            limit: 0.8,
            ..Load::default()
        }
    }

    fn need(required: f64) -> PairNeed {
        PairNeed {
            required,
            min_tunnels: 2,
            keep_margin: 0.2,
        }
    }

    fn cand(local: u32, remote: u32) -> Cand {
        Cand {
            local,
            remote,
            remote_gateway: remote,
            class: (0, 0, 0, 0),
            incumbent: false,
            pinned: false,
        }
    }

    #[test]
    fn takes_the_minimum_when_capacity_is_ample_and_reserves_the_requirement() {
        // Endpoints 0,1 local; 2,3 remote; all 10G.
        let mut loads = Loads::new(vec![load(10.0 * G); 4]);
        let cands = [cand(0, 2), cand(1, 3), cand(0, 3)];
        let fill = allocate_pair(&[&cands], &mut loads, &need(3.0 * G));
        let g = fill.gateways[0].as_ref().unwrap();
        assert_eq!(g.taken_count(), 2);
        assert_eq!(g.verdicts[2], Verdict::NotNeeded);
        assert_eq!(g.shares, vec![0.5, 0.5, 0.0]);
        assert!((loads.v[0].projected_tx - 1.5 * G).abs() < 1.0);
        assert!((loads.v[3].projected_rx - 1.5 * G).abs() < 1.0);
        assert_eq!(fill.met, 3.0 * G);
    }

    #[test]
    fn more_tunnels_as_the_requirement_grows_and_detours_past_full_transits() {
        let mut loads = Loads::new(vec![load(10.0 * G); 6]);
        // Endpoint 2 (remote) is full of background traffic.
        loads.v[2].background_rx = 8.5 * G;
        let cands = [cand(0, 2), cand(0, 3), cand(1, 4), cand(1, 5)];
        let fill = allocate_pair(&[&cands], &mut loads, &need(20.0 * G));
        let g = fill.gateways[0].as_ref().unwrap();
        assert_eq!(
            g.verdicts[0],
            Verdict::Watermark {
                endpoint: 2,
                rx: true
            }
        );
        assert!(g.verdicts[1].taken() && g.verdicts[2].taken());
        // Local 0 gives 8G to the tunnel via 3; local 1 gives 8G shared by 4 and 5: 16G of 20G.
        assert!((fill.met - 16.0 * G).abs() < 1e3, "{}", fill.met / G);
        // Nothing reserved past a watermark.
        for (i, l) in loads.v.iter().enumerate() {
            assert!(
                l.projected_tx + l.background_tx <= 8.0 * G + 1.0,
                "{i}: {l:?}"
            );
            assert!(
                l.projected_rx + l.background_rx <= 8.0 * G + 1.0 || i == 2,
                "{i}: {l:?}"
            );
        }
    }

    #[test]
    fn everything_full_still_gives_the_best_ranked_tunnels() {
        let mut loads = Loads::new(vec![load(10.0 * G); 4]);
        loads.v[0].background_tx = 9.0 * G;
        loads.v[1].background_tx = 9.0 * G;
        let cands = [cand(0, 2), cand(1, 3)];
        let fill = allocate_pair(&[&cands], &mut loads, &need(4.0 * G));
        let g = fill.gateways[0].as_ref().unwrap();
        assert!(matches!(
            g.verdicts[0],
            Verdict::Forced {
                endpoint: 0,
                rx: false
            }
        ));
        assert_eq!(g.shares, vec![0.5, 0.5]);
        assert_eq!(fill.met, 0.0);
    }

    #[test]
    fn a_weak_gateway_is_dropped_when_that_raises_what_the_pair_gets() {
        // Gateway A: two 10G ports; gateway B: one port nearly full.
        let mut loads = Loads::new(vec![
            load(10.0 * G),
            load(10.0 * G),
            load(10.0 * G),
            load(100.0 * G),
        ]);
        loads.v[2].background_tx = 7.9 * G;
        let a = [cand(0, 3), cand(1, 3)];
        let b = [cand(2, 3)];
        let fill = allocate_pair(&[&a, &b], &mut loads, &need(12.0 * G));
        assert!(fill.gateways[0].is_some());
        assert!(fill.gateways[1].is_none(), "{fill:?}");
        assert!(fill.met >= 12.0 * G - 1.0);
    }

    #[test]
    fn incumbents_are_kept_within_the_margin_and_when_pinned() {
        let mut loads = Loads::new(vec![load(10.0 * G); 4]);
        let mut c = [cand(0, 2), cand(1, 3), cand(0, 3)];
        c[1].incumbent = true;
        c[2].incumbent = true;
        c[2].pinned = true;
        let mut n = need(1.0 * G);
        n.min_tunnels = 1;
        let fill = allocate_pair(&[&c], &mut loads, &n);
        let g = fill.gateways[0].as_ref().unwrap();
        assert_eq!(g.taken_count(), 3);
        assert!(matches!(g.verdicts[1], Verdict::Kept { dwell: false, .. }));
        assert!(matches!(g.verdicts[2], Verdict::Kept { dwell: true, .. }));
    }

    #[test]
    fn spares_are_picked_among_equals_for_diversity() {
        // Local 0,1; remote ports 2,3 on remote gateway 10, 4 on remote gateway 11.
        let mut loads = Loads::new(vec![load(10.0 * G); 5]);
        let mut c = [cand(0, 2), cand(0, 3), cand(1, 2), cand(1, 4), cand(0, 4)];
        c[0].remote_gateway = 10;
        c[1].remote_gateway = 10;
        c[2].remote_gateway = 10;
        c[3].remote_gateway = 11;
        c[4].remote_gateway = 11;
        c[4].class = (0, 0, 0, 1);
        let fill = allocate_pair(&[&c], &mut loads, &need(1.0 * G));
        let g = fill.gateways[0].as_ref().unwrap();
        // First by rank, then the one sharing nothing with it.
        assert!(
            g.verdicts[0].taken() && g.verdicts[3].taken(),
            "{:?}",
            g.verdicts
        );
        assert_eq!(g.taken_count(), 2);
        // Diversity never reaches into a worse class.
        let mut c2 = c;
        c2[3].class = (0, 0, 0, 1);
        let mut loads = Loads::new(vec![load(10.0 * G); 5]);
        let fill = allocate_pair(&[&c2], &mut loads, &need(1.0 * G));
        let g = fill.gateways[0].as_ref().unwrap();
        assert!(
            g.verdicts[0].taken() && g.verdicts[1].taken(),
            "{:?}",
            g.verdicts
        );
        assert!(!g.verdicts[3].taken());
    }

    #[test]
    fn move_limit_spares_failures_and_caps_voluntary_moves() {
        // Voluntary: all weight wants to move from 0 to 1; only 25% moves.
        let s = limit_moves(&[1.0, 0.0], &[0.0, 1.0], &[false, false], 0.25, 0.05);
        assert!(
            (s[0] - 0.75).abs() < 1e-9 && (s[1] - 0.25).abs() < 1e-9,
            "{s:?}"
        );
        // Failure: tunnel 0 failed, its weight goes to the target at once.
        let s = limit_moves(
            &[0.5, 0.5, 0.0],
            &[0.0, 0.5, 0.5],
            &[true, false, false],
            0.25,
            0.05,
        );
        assert!(
            (s[0]).abs() < 1e-9 && (s[1] - 0.5).abs() < 1e-9 && (s[2] - 0.5).abs() < 1e-9,
            "{s:?}"
        );
        // Small voluntary change within the deadband: the old weights stay.
        let s = limit_moves(&[0.5, 0.5], &[0.52, 0.48], &[false, false], 0.25, 0.05);
        assert_eq!(s, vec![0.5, 0.5]);
        // Nothing before: the target at once.
        let s = limit_moves(&[0.0, 0.0], &[0.3, 0.7], &[false, false], 0.25, 0.05);
        assert_eq!(s, vec![0.3, 0.7]);
    }

    #[test]
    fn quantised_weights_sum_to_the_scale() {
        assert_eq!(quantise(&[1.0, 1.0, 1.0], 1000), vec![334, 333, 333]);
        assert_eq!(quantise(&[0.5, 0.0, 0.5], 1000), vec![500, 0, 500]);
        assert_eq!(quantise(&[0.0, 0.0], 1000), vec![0, 0]);
        let q = quantise(&[0.123, 0.456, 0.421], 100);
        assert_eq!(q.iter().sum::<u32>(), 100);
    }
}
