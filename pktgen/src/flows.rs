//! Per-flow sequence accounting for the sink: received, duplicates, reordered, and loss
//! estimated from sequence gaps. Sans-IO: fed (flow, sequence) pairs, no clock.
//!
//! Each flow keeps the highest sequence seen and a 256-bit window of which of the 256
//! sequences below it have arrived. An arrival above the highest is in order (a jump counts
//! the skipped sequences as a gap); one below it is reordered, or a duplicate if its window
//! bit is already set. An arrival older than the window is counted as reordered: it cannot be
//! told from a duplicate, and so may overstate `unique` by the duplicates among such stale
//! arrivals (a sender that duplicates 256 packets late is not what gatewan is).

use serde::Serialize;

/// Sequences below the highest that duplicate detection remembers.
pub const WINDOW: u64 = 256;
const WORDS: usize = (WINDOW / 64) as usize;

/// What one arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next sequence expected, or the first of the flow.
    InOrder,
    /// Above the next expected: `missing` sequences were skipped (perhaps only delayed).
    Jump { missing: u64 },
    /// Below the highest seen and not seen before (or too old to tell).
    Reordered,
    /// Seen before.
    Duplicate,
}

/// One flow's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    highest: Option<u64>,
    /// Bit i: sequence `highest - i` arrived.
    window: [u64; WORDS],
    pub latency_samples: u64,
    pub latency_min_ns: u64,
    pub latency_max_ns: u64,
    pub latency_sum_ns: u128,
}

impl FlowState {
    /// The highest sequence seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Distinct sequences received (duplicates not counted).
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Sequences up to the highest seen that never arrived: the loss estimate from gaps
    /// (a tail lost after the last arrival is invisible to it).
    pub fn gap_lost(&self) -> u64 {
        let expected = self.highest.map_or(0, |h| u128::from(h) + 1);
        u64::try_from(expected.saturating_sub(u128::from(self.unique()))).unwrap_or(u64::MAX)
    }

    fn shift_window(&mut self, by: u64) {
        if by >= WINDOW {
            self.window = [0; WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        for i in (0..WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.and_then(|s| self.window.get(s)).copied().unwrap_or(0);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .and_then(|s| self.window.get(s))
                .copied()
                .unwrap_or(0);
            let v = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
            if let Some(w) = self.window.get_mut(i) {
                *w = v;
            }
        }
    }

    fn bit(&mut self, back: u64) -> Option<(&mut u64, u64)> {
        if back >= WINDOW {
            return None;
        }
        let w = self.window.get_mut((back / 64) as usize)?;
        Some((w, 1u64 << (back % 64)))
    }

    /// Accounts one arrival of `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        self.received += 1;
        let jump = match self.highest {
            None => Some(seq),
            Some(h) if seq > h => {
                self.shift_window(seq - h);
                Some(seq - h - 1)
            }
            Some(_) => None,
        };
        if let Some(missing) = jump {
            if let Some((w, m)) = self.bit(0) {
                *w |= m;
            }
            self.highest = Some(seq);
            return if missing == 0 {
                Arrival::InOrder
            } else {
                Arrival::Jump { missing }
            };
        }
        let back = self.highest.unwrap_or(0) - seq;
        match self.bit(back) {
            Some((w, m)) if *w & m != 0 => {
                self.duplicates += 1;
                Arrival::Duplicate
            }
            Some((w, m)) => {
                *w |= m;
                self.reordered += 1;
                Arrival::Reordered
            }
            None => {
                self.reordered += 1;
                Arrival::Reordered
            }
        }
    }

    pub fn record_latency(&mut self, ns: u64) {
        self.latency_min_ns = if self.latency_samples == 0 {
            ns
        } else {
            self.latency_min_ns.min(ns)
        };
        self.latency_samples += 1;
        self.latency_max_ns = self.latency_max_ns.max(ns);
        self.latency_sum_ns += u128::from(ns);
    }

    /// Folds another receiver thread's view of the same flow into this one. Windows cannot be
    /// merged exactly; a flow normally lands on one thread (the sender hashes it to one outer
    /// source port, and REUSEPORT hashes that to one socket).
    pub fn merge(&mut self, o: &FlowState) {
        if o.received == 0 {
            return;
        }
        if self.received == 0 {
            *self = o.clone();
            return;
        }
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.highest = self.highest.max(o.highest);
        if o.latency_samples > 0 {
            self.latency_min_ns = if self.latency_samples == 0 {
                o.latency_min_ns
            } else {
                self.latency_min_ns.min(o.latency_min_ns)
            };
        }
        self.latency_samples += o.latency_samples;
        self.latency_max_ns = self.latency_max_ns.max(o.latency_max_ns);
        self.latency_sum_ns += o.latency_sum_ns;
    }
}

/// A flow's line in a sink report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FlowReport {
    pub flow: u32,
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Loss estimated from sequence gaps.
    pub gap_lost: u64,
    pub highest_seq: Option<u64>,
    /// Sent by the generator, once its report is known.
    pub sent: Option<u64>,
    /// `sent - unique`, once the generator's report is known.
    pub lost: Option<u64>,
    pub latency_min_ns: u64,
    pub latency_mean_ns: u64,
    pub latency_max_ns: u64,
}

impl FlowReport {
    pub fn new(flow: u32, s: &FlowState) -> Self {
        Self {
            flow,
            received: s.received,
            duplicates: s.duplicates,
            reordered: s.reordered,
            gap_lost: s.gap_lost(),
            highest_seq: s.highest(),
            sent: None,
            lost: None,
            latency_min_ns: s.latency_min_ns,
            latency_mean_ns: if s.latency_samples == 0 {
                0
            } else {
                u64::try_from(s.latency_sum_ns / u128::from(s.latency_samples)).unwrap_or(u64::MAX)
            },
            latency_max_ns: s.latency_max_ns,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> (FlowState, Vec<Arrival>) {
        let mut f = FlowState::default();
        let a = seqs.iter().map(|s| f.record(*s)).collect();
        (f, a)
    }

    #[test]
    fn in_order() {
        let (f, a) = run(&[0, 1, 2, 3]);
        assert!(a.iter().all(|x| *x == Arrival::InOrder));
        assert_eq!(
            (f.received, f.duplicates, f.reordered, f.gap_lost()),
            (4, 0, 0, 0)
        );
        assert_eq!(f.highest(), Some(3));
    }

    #[test]
    fn crafted_sequence() {
        // 0 1 3 2 (reordered) 2 (duplicate) 6 (jump over 4, 5) 4 (late) 9 (jump over 7, 8) 9 (dup)
        let (f, a) = run(&[0, 1, 3, 2, 2, 6, 4, 9, 9]);
        use Arrival::*;
        assert_eq!(
            a,
            [
                InOrder,
                InOrder,
                Jump { missing: 1 },
                Reordered,
                Duplicate,
                Jump { missing: 2 },
                Reordered,
                Jump { missing: 2 },
                Duplicate
            ]
        );
        assert_eq!(f.received, 9);
        assert_eq!(f.duplicates, 2);
        assert_eq!(f.reordered, 2);
        assert_eq!(f.unique(), 7);
        // 5, 7 and 8 never came.
        assert_eq!(f.gap_lost(), 3);
        let r = FlowReport::new(4, &f);
        assert_eq!((r.flow, r.gap_lost, r.highest_seq), (4, 3, Some(9)));
    }

    #[test]
    fn first_arrival_not_zero_is_a_jump() {
        let (f, a) = run(&[5]);
        assert_eq!(a, [Arrival::Jump { missing: 5 }]);
        assert_eq!(f.gap_lost(), 5);
    }

    #[test]
    fn window_edges() {
        // Sequence 0 stays remembered exactly WINDOW - 1 arrivals later, then falls out.
        let mut f = FlowState::default();
        for s in 0..WINDOW {
            f.record(s);
        }
        assert_eq!(f.record(0), Arrival::Duplicate);
        f.record(WINDOW);
        assert_eq!(f.record(0), Arrival::Reordered, "beyond the window");
        // Shifts across word boundaries keep the right bits.
        let mut g = FlowState::default();
        g.record(0);
        g.record(70); // shift by 70: bit for 0 moves to 70
        assert_eq!(g.record(0), Arrival::Duplicate);
        assert_eq!(g.record(1), Arrival::Reordered);
        assert_eq!(g.record(1), Arrival::Duplicate);
        g.record(1000); // far jump clears the window
        assert_eq!(g.record(999), Arrival::Reordered);
        assert_eq!(g.record(999), Arrival::Duplicate);
    }

    #[test]
    fn huge_sequences_do_not_overflow() {
        let (f, _) = run(&[u64::MAX - 1, u64::MAX, u64::MAX]);
        assert_eq!(f.duplicates, 1);
        assert_eq!(f.highest(), Some(u64::MAX));
    }

    #[test]
    fn merge_and_latency() {
        let mut a = FlowState::default();
        a.record(0);
        a.record_latency(10);
        let mut b = FlowState::default();
        b.record(1);
        b.record_latency(30);
        b.record(1);
        a.merge(&b);
        assert_eq!((a.received, a.duplicates, a.highest()), (3, 1, Some(1)));
        assert_eq!((a.latency_min_ns, a.latency_max_ns), (10, 30));
        let mut empty = FlowState::default();
        empty.merge(&a);
        assert_eq!(empty, a);
    }
}
