//! A tunnel group: the tunnels chosen for one remote datacenter, with weights, and the slot
//! table that spreads flows over them.
//!
//! The group is a table of [`TunnelGroup::SLOTS`] slots, each naming a tunnel; a tunnel gets a
//! share of slots proportional to its weight (largest-remainder rounding, and at least one
//! slot for any positive weight). A flow's hash picks a slot, so one flow always takes the same
//! tunnel and is never reordered across tunnels. When weights or members change,
//! [`TunnelGroup::rebalanced`] keeps every slot whose tunnel still has room and reassigns only
//! the surplus, so the fewest flows move (the minimum possible for the new shares).

use std::collections::HashMap;

pub use crate::tunnel_id::TunnelId;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("{0} appears twice in the tunnel group")]
    DuplicateTunnel(TunnelId),
    #[error("a tunnel group holds at most {max} tunnels, got {got}")]
    TooManyTunnels { got: usize, max: usize },
}

/// The tunnels for one destination, with weights, and the flow-to-tunnel slot table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelGroup {
    members: Box<[(TunnelId, u32)]>,
    /// Empty when no member has a positive weight; otherwise exactly `SLOTS` entries.
    slots: Box<[TunnelId]>,
}

impl TunnelGroup {
    /// Slot table size: weight resolution is 1/1024, and 4 KiB per group stays in cache.
    pub const SLOTS: usize = 1024;

    /// A group with no tunnel: `pick` returns `None`.
    pub fn empty() -> Self {
        Self {
            members: Box::new([]),
            slots: Box::new([]),
        }
    }

    /// Builds the slot table for `members` (tunnel, weight). Weight 0 keeps a member listed
    /// but gives it no traffic.
    pub fn new(members: &[(TunnelId, u32)]) -> Result<Self, GroupError> {
        Self::build(members, None)
    }

    /// The group for new `members`, moving as few slots (flows) as possible from `self`.
    pub fn rebalanced(&self, members: &[(TunnelId, u32)]) -> Result<Self, GroupError> {
        Self::build(members, Some(&self.slots))
    }

    /// The tunnel for a flow. Stable for a given hash as long as the group is unchanged.
    #[inline]
    pub fn pick(&self, flow_hash: u32) -> Option<TunnelId> {
        // Multiply-shift maps the hash onto the slots using its high bits (Lemire's fast range).
        let i = ((u64::from(flow_hash) * self.slots.len() as u64) >> 32) as usize;
        self.slots.get(i).copied()
    }

    /// (tunnel, weight) as given.
    pub fn members(&self) -> &[(TunnelId, u32)] {
        &self.members
    }

    /// No tunnel can be picked.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// How many slots `tunnel` holds (its share of flows, out of `SLOTS`).
    pub fn slot_count(&self, tunnel: TunnelId) -> usize {
        self.slots.iter().filter(|t| **t == tunnel).count()
    }

    /// The slot table, for inspection.
    pub fn slots(&self) -> &[TunnelId] {
        &self.slots
    }

    fn build(
        members: &[(TunnelId, u32)],
        previous: Option<&[TunnelId]>,
    ) -> Result<Self, GroupError> {
        if members.len() > Self::SLOTS {
            return Err(GroupError::TooManyTunnels {
                got: members.len(),
                max: Self::SLOTS,
            });
        }
        let mut index = HashMap::with_capacity(members.len());
        for (i, (t, _)) in members.iter().enumerate() {
            if index.insert(*t, i).is_some() {
                return Err(GroupError::DuplicateTunnel(*t));
            }
        }
        let quotas = quotas(members, Self::SLOTS);
        if quotas.iter().all(|q| *q == 0) {
            return Ok(Self {
                members: members.into(),
                slots: Box::new([]),
            });
        }

        // Keep what we can of the previous table.
        let mut kept = vec![0usize; members.len()];
        let mut slots: Vec<Option<usize>> = vec![None; Self::SLOTS];
        if let Some(prev) = previous.filter(|p| p.len() == Self::SLOTS) {
            for (slot, t) in slots.iter_mut().zip(prev.iter()) {
                if let Some(&i) = index.get(t) {
                    if let (Some(k), Some(q)) = (kept.get_mut(i), quotas.get(i)) {
                        if *k < *q {
                            *k += 1;
                            *slot = Some(i);
                        }
                    }
                }
            }
        }

        // Fill the free slots with each member's deficit, interleaved by smooth weighted
        // round-robin so a member's new slots spread over the table. Over one cycle of
        // `total` picks SWRR picks each member exactly its deficit times.
        let deficit: Vec<i64> = quotas
            .iter()
            .zip(kept.iter())
            .map(|(q, k)| (*q - *k) as i64)
            .collect();
        let total: i64 = deficit.iter().sum();
        let mut current = vec![0i64; members.len()];
        for slot in slots.iter_mut().filter(|s| s.is_none()) {
            let mut best = 0usize;
            let mut best_v = i64::MIN;
            for (i, (c, d)) in current.iter_mut().zip(deficit.iter()).enumerate() {
                *c += *d;
                if *d > 0 && *c > best_v {
                    best = i;
                    best_v = *c;
                }
            }
            if let Some(c) = current.get_mut(best) {
                *c -= total;
            }
            *slot = Some(best);
        }

        let slots = slots
            .into_iter()
            .map(|s| members.get(s.unwrap_or(0)).map_or(TunnelId(0), |(t, _)| *t))
            .collect();
        Ok(Self {
            members: members.into(),
            slots,
        })
    }
}

/// Slots per member: proportional to weight, largest remainder, ties to the earlier member;
/// then every positive weight gets at least one slot, taken from the largest share.
fn quotas(members: &[(TunnelId, u32)], slots: usize) -> Vec<usize> {
    let total: u64 = members.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return vec![0; members.len()];
    }
    let s = slots as u64;
    let mut q: Vec<usize> = Vec::with_capacity(members.len());
    let mut rem: Vec<(u64, usize)> = Vec::with_capacity(members.len());
    for (i, (_, w)) in members.iter().enumerate() {
        let exact = u64::from(*w) * s;
        q.push((exact / total) as usize);
        rem.push((exact % total, i));
    }
    let assigned: usize = q.iter().sum();
    // Largest remainder first; among equal remainders, the earlier member.
    rem.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rem.iter().take(slots - assigned) {
        if let Some(x) = q.get_mut(*i) {
            *x += 1;
        }
    }
    for i in 0..members.len() {
        let positive = members.get(i).is_some_and(|(_, w)| *w > 0);
        if positive && q.get(i) == Some(&0) {
            let donor = (0..q.len()).max_by_key(|j| (q.get(*j).copied(), std::cmp::Reverse(*j)));
            if let Some(d) = donor {
                if let Some(x) = q.get_mut(d) {
                    *x -= 1;
                }
                if let Some(x) = q.get_mut(i) {
                    *x += 1;
                }
            }
        }
    }
    q
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: TunnelId = TunnelId(1);
    const B: TunnelId = TunnelId(2);
    const C: TunnelId = TunnelId(3);

    #[test]
    fn equal_weights_split_evenly_and_picks_are_stable() {
        let g = TunnelGroup::new(&[(A, 1), (B, 1)]).unwrap();
        assert_eq!(g.slot_count(A), 512);
        assert_eq!(g.slot_count(B), 512);
        for h in [0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            assert_eq!(g.pick(h), g.pick(h));
            assert!(g.pick(h).is_some());
        }
        // Picks cover both tunnels and follow the slot table.
        let mut seen = [0usize; 2];
        for i in 0..4096u32 {
            let t = g.pick(i.wrapping_mul(0x9e37_79b9)).unwrap();
            seen[(t.0 - 1) as usize] += 1;
        }
        assert!(seen[0] > 1500 && seen[1] > 1500, "{seen:?}");
    }

    #[test]
    fn weights_are_honoured() {
        let g = TunnelGroup::new(&[(A, 3), (B, 1), (C, 0)]).unwrap();
        assert_eq!(g.slot_count(A), 768);
        assert_eq!(g.slot_count(B), 256);
        assert_eq!(g.slot_count(C), 0);
        assert_eq!(g.members().len(), 3);
        // Tiny weights still get one slot.
        let g = TunnelGroup::new(&[(A, 1_000_000), (B, 1)]).unwrap();
        assert_eq!(g.slot_count(B), 1);
        assert_eq!(g.slot_count(A), 1023);
    }

    #[test]
    fn empty_groups_pick_nothing() {
        assert_eq!(TunnelGroup::empty().pick(5), None);
        assert_eq!(TunnelGroup::new(&[]).unwrap().pick(5), None);
        let g = TunnelGroup::new(&[(A, 0)]).unwrap();
        assert!(g.is_empty());
        assert_eq!(g.pick(5), None);
    }

    #[test]
    fn errors() {
        assert_eq!(
            TunnelGroup::new(&[(A, 1), (A, 2)]).unwrap_err(),
            GroupError::DuplicateTunnel(A)
        );
        let many: Vec<_> = (0..1025).map(|i| (TunnelId(i), 1)).collect();
        assert!(matches!(
            TunnelGroup::new(&many).unwrap_err(),
            GroupError::TooManyTunnels { got: 1025, .. }
        ));
    }

    #[test]
    fn adding_a_tunnel_moves_only_its_share() {
        let g = TunnelGroup::new(&[(A, 1), (B, 1)]).unwrap();
        let g2 = g.rebalanced(&[(A, 1), (B, 1), (C, 2)]).unwrap();
        assert_eq!(g2.slot_count(C), 512);
        let moved = g
            .slots()
            .iter()
            .zip(g2.slots())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(moved, 512, "only the slots C takes over move");
        // Removing C gives back exactly its slots; A and B slots stay put.
        let g3 = g2.rebalanced(&[(A, 1), (B, 1)]).unwrap();
        for (old, new) in g2.slots().iter().zip(g3.slots()) {
            if *old != C {
                assert_eq!(old, new);
            }
        }
        // A fresh build for the same members would move more: the rebuild is not just `new`.
        let fresh = TunnelGroup::new(&[(A, 1), (B, 1), (C, 2)]).unwrap();
        let moved_fresh = g
            .slots()
            .iter()
            .zip(fresh.slots())
            .filter(|(a, b)| a != b)
            .count();
        assert!(moved_fresh >= moved);
    }

    #[test]
    fn unchanged_weights_move_nothing() {
        let g = TunnelGroup::new(&[(A, 5), (B, 3), (C, 1)]).unwrap();
        assert_eq!(
            g.rebalanced(&[(C, 1), (A, 5), (B, 3)]).unwrap().slots(),
            g.slots()
        );
    }

    proptest! {
        #[test]
        fn shares_exact_and_moves_minimal(
            w1 in proptest::collection::vec(0u32..50, 1..8),
            w2 in proptest::collection::vec(0u32..50, 1..8),
            hashes in proptest::collection::vec(any::<u32>(), 1..50),
        ) {
            let m1: Vec<_> = w1.iter().enumerate().map(|(i, w)| (TunnelId(i as u16), *w)).collect();
            // The second set shares some ids with the first.
            let m2: Vec<_> = w2.iter().enumerate().map(|(i, w)| (TunnelId(i as u16 + 2), *w)).collect();
            let g1 = TunnelGroup::new(&m1).unwrap();
            let g2 = g1.rebalanced(&m2).unwrap();
            for (g, m) in [(&g1, &m1), (&g2, &m2)] {
                let total: u64 = m.iter().map(|(_, w)| u64::from(*w)).sum();
                if total == 0 { prop_assert!(g.is_empty()); continue; }
                let mut sum = 0;
                for (t, w) in m.iter() {
                    let c = g.slot_count(*t);
                    sum += c;
                    let ideal = f64::from(*w) * 1024.0 / total as f64;
                    prop_assert!((c as f64 - ideal).abs() < m.len() as f64 + 1.0, "{t}: {c} vs {ideal}");
                    prop_assert_eq!(c == 0, *w == 0);
                }
                prop_assert_eq!(sum, 1024);
                for h in &hashes {
                    let t = g.pick(*h).unwrap();
                    prop_assert!(m.iter().any(|(x, w)| *x == t && *w > 0));
                }
            }
            if !g1.is_empty() && !g2.is_empty() {
                // Minimal movement: a slot moves only if its old tunnel had more slots than its
                // new share, so moved == sum of surpluses.
                let moved = g1.slots().iter().zip(g2.slots()).filter(|(a, b)| a != b).count();
                let surplus: usize = m1.iter().map(|(t, _)| g1.slot_count(*t).saturating_sub(g2.slot_count(*t))).sum();
                prop_assert_eq!(moved, surplus);
            }
        }
    }
}
