//! The owner's book of next hops for workers that write Ethernet headers themselves (AF_XDP):
//! what the workers asked about, what the kernel's tables answered, and what workers learned
//! from received frames. Workers read one published list; this book decides when it changes.
//!
//! Two sources, because neither is enough alone: the kernel's main table and ARP entries
//! answer before any frame arrives (the far leaf never sends, say) but know nothing of
//! source-routed uplinks; learning from frames covers every uplink and IPv6, but only on the
//! worker whose queue the peer's frames hash to, so it is shared here. The kernel's answer
//! wins where both exist: it is what the operator configured.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use gatewan_dataplane::engine::{Egress, NextHops};
use gatewan_dataplane::wire::ethernet::MacAddr;

/// Learned entries kept at most (every remote gateway endpoint and leaf VTEP fits many times
/// over); more are refused, counted, so a flood of sources cannot grow the book.
pub const MAX_LEARNED: usize = 4096;

/// A new question is put to the kernel's tables at once (a static or known neighbour answers
/// then); one left unanswered is asked again after this, then twice as long each time (the
/// kernel resolves the neighbour while it sends the datagram the worker handed over).
const RETRY: Duration = Duration::from_millis(20);
/// How often the tables are read once everything is answered (a MAC can change).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct NextHopBook {
    wanted: BTreeSet<(Egress, IpAddr)>,
    resolved: BTreeMap<(Egress, IpAddr), MacAddr>,
    learned: BTreeMap<(Egress, IpAddr), MacAddr>,
    published: NextHops,
    resolve_at: Option<Instant>,
    retry: Duration,
    /// Learned entries refused because the book was full.
    pub refused: u64,
}

impl NextHopBook {
    /// A worker had no next hop for `ip` out of `egress`.
    pub fn want(&mut self, now: Instant, egress: Egress, ip: IpAddr) {
        if self.wanted.insert((egress, ip)) || self.resolve_at.is_none() {
            self.resolve_at = Some(now);
            self.retry = RETRY;
        }
    }

    /// A worker saw `ip` behind `mac` on `egress`'s side.
    pub fn learn(&mut self, egress: Egress, ip: IpAddr, mac: MacAddr) {
        let key = (egress, ip);
        if self.learned.len() >= MAX_LEARNED && !self.learned.contains_key(&key) {
            self.refused += 1;
            return;
        }
        self.learned.insert(key, mac);
    }

    /// Whether the workers have a next hop for `ip` out of `egress` (the list last published).
    pub fn published(&self, egress: Egress, ip: IpAddr) -> bool {
        self.published
            .iter()
            .any(|(e, i, _)| *e == egress && *i == ip)
    }

    /// When the kernel's tables should be read next.
    pub fn resolve_at(&self) -> Option<Instant> {
        self.resolve_at
    }

    /// The questions to put to the kernel's tables now.
    pub fn wanted(&self) -> impl Iterator<Item = (Egress, IpAddr)> + '_ {
        self.wanted.iter().copied()
    }

    /// What the kernel's tables answered, at `now`.
    pub fn resolved(
        &mut self,
        now: Instant,
        answers: impl IntoIterator<Item = (Egress, IpAddr, MacAddr)>,
    ) {
        self.resolved = answers
            .into_iter()
            .map(|(egress, ip, mac)| ((egress, ip), mac))
            .collect();
        let unanswered = self
            .wanted
            .iter()
            .any(|k| !self.resolved.contains_key(k) && !self.learned.contains_key(k));
        let wait = if unanswered {
            let wait = self.retry.max(RETRY);
            self.retry = (wait * 2).min(LOOK_AGAIN);
            wait
        } else {
            LOOK_AGAIN
        };
        self.resolve_at = Some(now + wait);
    }

    /// The list workers should read, when it differs from the one they have (then it is
    /// taken as published).
    pub fn to_publish(&mut self) -> Option<NextHops> {
        let mut merged = self.resolved.clone();
        for (key, mac) in &self.learned {
            merged.entry(*key).or_insert(*mac);
        }
        let list: NextHops = merged
            .into_iter()
            .map(|((egress, ip), mac)| (egress, ip, mac))
            .collect();
        if list == self.published {
            return None;
        }
        self.published = list.clone();
        Some(list)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const R1: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
    const R2: MacAddr = MacAddr([2, 0, 0, 0, 2, 2]);

    #[test]
    fn learned_next_hops_are_published_once_and_per_egress() {
        let mut book = NextHopBook::default();
        assert_eq!(book.to_publish(), None, "nothing to say yet");
        book.learn(Egress::Transit(0), ip("172.16.20.1"), R1);
        book.learn(Egress::Transit(1), ip("172.16.20.1"), R2);
        assert_eq!(
            book.to_publish().unwrap(),
            vec![
                (Egress::Transit(0), ip("172.16.20.1"), R1),
                (Egress::Transit(1), ip("172.16.20.1"), R2),
            ]
        );
        assert!(book.published(Egress::Transit(1), ip("172.16.20.1")));
        assert!(!book.published(Egress::Fabric, ip("172.16.20.1")));
        // The same again changes nothing: no republication.
        book.learn(Egress::Transit(0), ip("172.16.20.1"), R1);
        assert_eq!(book.to_publish(), None);
        // A new MAC is.
        book.learn(Egress::Transit(0), ip("172.16.20.1"), R2);
        assert!(book.to_publish().is_some());
    }

    #[test]
    fn the_kernel_answer_wins_and_questions_are_looked_at_soon_then_again() {
        let t0 = Instant::now();
        let mut book = NextHopBook::default();
        assert_eq!(book.resolve_at(), None);
        book.want(t0, Egress::Fabric, ip("10.0.2.2"));
        assert_eq!(
            book.resolve_at(),
            Some(t0),
            "a new question is asked at once"
        );
        assert_eq!(
            book.wanted().collect::<Vec<_>>(),
            vec![(Egress::Fabric, ip("10.0.2.2"))]
        );
        // Unanswered: asked again soon, then less and less often.
        book.resolved(t0, []);
        assert_eq!(book.resolve_at(), Some(t0 + RETRY));
        book.resolved(t0, []);
        assert_eq!(book.resolve_at(), Some(t0 + 2 * RETRY));
        book.learn(Egress::Fabric, ip("10.0.2.2"), R2);
        let later = t0 + RETRY;
        book.resolved(later, [(Egress::Fabric, ip("10.0.2.2"), R1)]);
        assert_eq!(book.resolve_at(), Some(later + LOOK_AGAIN));
        assert_eq!(
            book.to_publish().unwrap(),
            vec![(Egress::Fabric, ip("10.0.2.2"), R1)]
        );
        // When the kernel forgets it, what was learned stands in.
        book.resolved(later, []);
        assert_eq!(
            book.to_publish().unwrap(),
            vec![(Egress::Fabric, ip("10.0.2.2"), R2)]
        );
    }

    #[test]
    fn a_flood_of_sources_cannot_grow_the_book() {
        let mut book = NextHopBook::default();
        for i in 0..MAX_LEARNED as u32 + 10 {
            book.learn(Egress::Fabric, IpAddr::from(i.to_be_bytes()), R1);
        }
        assert_eq!(book.refused, 10);
        assert_eq!(book.to_publish().unwrap().len(), MAX_LEARNED);
        // Known entries still update.
        book.learn(Egress::Fabric, IpAddr::from(0u32.to_be_bytes()), R2);
        assert_eq!(book.refused, 10);
    }
}
