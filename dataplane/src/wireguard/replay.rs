//! The receive-side sliding window over transport counters, safe to share between workers.
//!
//! A counter is accepted once, and only if it is within [`WINDOW`] of the greatest counter
//! accepted so far (or ahead of it). Several workers open messages of one session at once
//! (receive queues and reuse-port sockets spread a peer's packets by flow), so the window is
//! lock-free: a ring of 64-bit slots, each holding a 32-bit block tag (which 32 counters it
//! covers) and a 32-bit bitmap of the ones received. Accepting a counter is one
//! compare-and-swap on its slot; a slot still tagged with an older block is simply taken
//! over (that block is outside the window), and a slot already tagged with a newer block
//! means the counter fell out of the window. The tag wraps at 2^32 blocks (2^37 counters),
//! far beyond what a session carries before its 120-second rekey.

use core::sync::atomic::{AtomicU64, Ordering};

/// Number of counters the window spans: the greatest accepted one and the 8191 before it,
/// at least as large as the Linux implementation's window.
pub const WINDOW: u64 = 8192;
const BLOCK_BITS: u64 = 32;
/// One block more than the window needs, so the block of the greatest counter and all the
/// blocks the window reaches back into have their own slots.
const SLOTS: usize = (WINDOW / BLOCK_BITS) as usize + 1;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Already received.
    Duplicate,
    /// Too far behind the greatest counter received.
    TooOld,
    /// At or past the limit of messages per session.
    Exhausted,
}

/// A replay window. The state before any counter is "nothing seen".
pub struct ReplayWindow {
    slots: [AtomicU64; SLOTS],
    /// Greatest accepted counter + 1; 0 before the first one.
    next: AtomicU64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Where a counter lives: its slot, the tag its block carries, its bit.
fn place(counter: u64) -> (usize, u32, u64) {
    let block = counter / BLOCK_BITS;
    let tag = (block as u32).wrapping_add(1);
    let slot = (block % SLOTS as u64) as usize;
    (slot, tag, 1u64 << (counter % BLOCK_BITS))
}

/// How a slot's block compares with a counter's block (wrapping, see the module comment).
fn age(word: u64, tag: u32) -> core::cmp::Ordering {
    if word == 0 {
        // Never used: older than anything.
        return core::cmp::Ordering::Greater;
    }
    let held = (word >> 32) as u32;
    (tag.wrapping_sub(held) as i32).cmp(&0)
}

impl ReplayWindow {
    pub fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicU64::new(0),
        }
    }

    fn window_check(&self, counter: u64, limit: u64) -> Result<(), Refusal> {
        if counter >= limit {
            return Err(Refusal::Exhausted);
        }
        let next = self.next.load(Ordering::Acquire);
        if next > counter && next - counter > WINDOW {
            return Err(Refusal::TooOld);
        }
        Ok(())
    }

    /// Whether `counter` would be accepted, without recording it. Lets the data path drop
    /// replays before spending a decryption on them.
    pub fn check(&self, counter: u64, limit: u64) -> Result<(), Refusal> {
        self.window_check(counter, limit)?;
        let (slot, tag, bit) = place(counter);
        let word = self
            .slots
            .get(slot)
            .map_or(0, |s| s.load(Ordering::Acquire));
        match age(word, tag) {
            core::cmp::Ordering::Greater => Ok(()),
            core::cmp::Ordering::Equal if word & bit == 0 => Ok(()),
            core::cmp::Ordering::Equal => Err(Refusal::Duplicate),
            core::cmp::Ordering::Less => Err(Refusal::TooOld),
        }
    }

    /// Records `counter` if acceptable. Call only after the message authenticated. Of
    /// several workers recording the same counter at once, exactly one succeeds.
    pub fn accept(&self, counter: u64, limit: u64) -> Result<(), Refusal> {
        self.window_check(counter, limit)?;
        let (slot, tag, bit) = place(counter);
        let Some(cell) = self.slots.get(slot) else {
            return Err(Refusal::TooOld);
        };
        let mut word = cell.load(Ordering::Acquire);
        loop {
            let new = match age(word, tag) {
                core::cmp::Ordering::Greater => (u64::from(tag) << 32) | bit,
                core::cmp::Ordering::Equal if word & bit == 0 => word | bit,
                core::cmp::Ordering::Equal => return Err(Refusal::Duplicate),
                core::cmp::Ordering::Less => return Err(Refusal::TooOld),
            };
            match cell.compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => word = seen,
            }
        }
        self.next.fetch_max(counter + 1, Ordering::AcqRel);
        Ok(())
    }

    /// Greatest accepted counter, if any.
    pub fn greatest(&self) -> Option<u64> {
        self.next.load(Ordering::Acquire).checked_sub(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: u64 = u64::MAX - (1 << 13);

    #[test]
    fn in_order_and_duplicates() {
        let w = ReplayWindow::new();
        for c in 0..1000 {
            assert_eq!(w.accept(c, LIMIT), Ok(()));
        }
        assert_eq!(w.accept(999, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.accept(0, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.greatest(), Some(999));
    }

    #[test]
    fn first_counter_may_be_anything() {
        let w = ReplayWindow::new();
        assert_eq!(w.greatest(), None);
        assert_eq!(w.accept(5000, LIMIT), Ok(()));
        assert_eq!(w.accept(4999, LIMIT), Ok(()));
        assert_eq!(w.accept(0, LIMIT), Ok(()), "0 is within 8192 of 5000");
        assert_eq!(w.accept(0, LIMIT), Err(Refusal::Duplicate));
    }

    #[test]
    fn window_edge_is_exactly_8192() {
        let w = ReplayWindow::new();
        w.accept(10_000, LIMIT).unwrap();
        // The window holds 8192 counters: the greatest and the 8191 before it.
        assert_eq!(w.check(10_000 - (WINDOW - 1), LIMIT), Ok(()));
        assert_eq!(w.check(10_000 - WINDOW, LIMIT), Err(Refusal::TooOld));
        assert_eq!(w.accept(10_000 - (WINDOW - 1), LIMIT), Ok(()));
        assert_eq!(
            w.accept(10_000 - (WINDOW - 1), LIMIT),
            Err(Refusal::Duplicate)
        );
        // Every counter of the window can be received once, in any order.
        for c in (10_000 - (WINDOW - 2))..10_000 {
            assert_eq!(w.accept(c, LIMIT), Ok(()), "{c}");
        }
    }

    #[test]
    fn far_ahead_then_old() {
        let w = ReplayWindow::new();
        for c in 0..100 {
            w.accept(c, LIMIT).unwrap();
        }
        // Jump far ahead: everything before the new window is refused as too old, and the
        // counters of the old window are not mistaken for received ones in the new one.
        w.accept(1_000_000, LIMIT).unwrap();
        assert_eq!(w.accept(50, LIMIT), Err(Refusal::TooOld));
        for c in (1_000_000 - 8000)..1_000_000 {
            assert_eq!(w.accept(c, LIMIT), Ok(()), "{c}");
        }
    }

    #[test]
    fn slide_by_more_than_the_window_clears_everything() {
        let w = ReplayWindow::new();
        for c in 0..8192 {
            w.accept(c, LIMIT).unwrap();
        }
        let jump = 8191 + WINDOW + 32 * 3 + 7;
        w.accept(jump, LIMIT).unwrap();
        // Counters that alias the old bits (same ring positions) are fresh.
        for c in (jump - 8191)..jump {
            assert_eq!(w.check(c, LIMIT), Ok(()), "{c}");
        }
    }

    #[test]
    fn slide_by_less_than_a_word_keeps_recent_bits() {
        let w = ReplayWindow::new();
        w.accept(100, LIMIT).unwrap();
        w.accept(90, LIMIT).unwrap();
        w.accept(130, LIMIT).unwrap();
        assert_eq!(w.accept(90, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.accept(100, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.accept(129, LIMIT), Ok(()));
    }

    #[test]
    fn limit() {
        let w = ReplayWindow::new();
        assert_eq!(w.accept(LIMIT, LIMIT), Err(Refusal::Exhausted));
        assert_eq!(w.accept(LIMIT - 1, LIMIT), Ok(()));
        assert_eq!(w.accept(u64::MAX, LIMIT), Err(Refusal::Exhausted));
    }

    #[test]
    fn concurrent_workers_accept_each_counter_exactly_once() {
        let w = std::sync::Arc::new(ReplayWindow::new());
        let accepted: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let w = &w;
                    scope.spawn(move || {
                        // Every worker sees every counter (a replay storm), in its own order.
                        let mut mine = Vec::new();
                        for i in 0..50_000u64 {
                            let c = if t % 2 == 0 { i } else { i ^ 7 };
                            if w.accept(c, LIMIT).is_ok() {
                                mine.push(c);
                            }
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<u64> = accepted.into_iter().flatten().collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a counter was accepted twice");
        // The first worker to reach a counter is at most 14 behind the greatest, well inside
        // the window, so every counter is accepted by exactly one worker.
        assert_eq!(n, 50_000);
        assert_eq!(w.greatest(), Some(49_999));
    }

    /// A naive model: a set of seen counters and the greatest.
    fn model_accept(seen: &mut std::collections::BTreeSet<u64>, c: u64) -> bool {
        let greatest = seen.iter().next_back().copied();
        if let Some(g) = greatest {
            if c < g && g + 1 - c > WINDOW {
                return false;
            }
        }
        seen.insert(c)
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(steps in proptest::collection::vec((0u64..3, 0u64..20_000), 1..400)) {
            let w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut base = 0u64;
            for (kind, x) in steps {
                // Mix small moves, jumps and old counters.
                let c = match kind {
                    0 => base + x % 200,
                    1 => { base += x; base }
                    _ => base.saturating_sub(x),
                };
                let ours = w.accept(c, LIMIT).is_ok();
                prop_assert_eq!(ours, model_accept(&mut seen, c), "counter {}", c);
            }
        }
    }
}
