//! The receive-side sliding window over transport counters (RFC 6479's bitmap scheme).
//!
//! A counter is accepted once, and only if it is within [`WINDOW`] of the greatest counter
//! accepted so far (or ahead of it). The bitmap is a ring of 64-bit words, one word more than
//! the window needs, so moving the window clears whole words and never shifts bits.

/// Number of counters the window spans: the greatest accepted one and the 8191 before it,
/// at least as large as the Linux implementation's window.
pub const WINDOW: u64 = 8192;
const WORD_BITS: u64 = 64;
const WORDS: usize = (WINDOW / WORD_BITS) as usize + 1;

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
#[derive(Clone)]
pub struct ReplayWindow {
    bitmap: [u64; WORDS],
    /// Greatest accepted counter + 1; 0 before the first one.
    next: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    pub const fn new() -> Self {
        Self {
            bitmap: [0; WORDS],
            next: 0,
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        let word = ((counter / WORD_BITS) % WORDS as u64) as usize;
        (word, 1u64 << (counter % WORD_BITS))
    }

    /// Whether `counter` would be accepted, without recording it. Lets the data path drop
    /// replays before spending a decryption on them.
    pub fn check(&self, counter: u64, limit: u64) -> Result<(), Refusal> {
        if counter >= limit {
            return Err(Refusal::Exhausted);
        }
        if counter >= self.next {
            return Ok(());
        }
        if self.next - counter > WINDOW {
            return Err(Refusal::TooOld);
        }
        let (word, bit) = Self::slot(counter);
        match self.bitmap.get(word) {
            Some(w) if w & bit == 0 => Ok(()),
            _ => Err(Refusal::Duplicate),
        }
    }

    /// Records `counter` if acceptable. Call only after the message authenticated.
    pub fn accept(&mut self, counter: u64, limit: u64) -> Result<(), Refusal> {
        self.check(counter, limit)?;
        if counter >= self.next {
            // Clear the words the window slides over (all of them if it jumps that far).
            let current = if self.next == 0 {
                None
            } else {
                Some((self.next - 1) / WORD_BITS)
            };
            let target = counter / WORD_BITS;
            match current {
                Some(cur) if target - cur < WORDS as u64 => {
                    for i in cur + 1..=target {
                        if let Some(w) = self.bitmap.get_mut((i % WORDS as u64) as usize) {
                            *w = 0;
                        }
                    }
                }
                _ => self.bitmap = [0; WORDS],
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        if let Some(w) = self.bitmap.get_mut(word) {
            *w |= bit;
        }
        Ok(())
    }

    /// Greatest accepted counter, if any.
    pub fn greatest(&self) -> Option<u64> {
        self.next.checked_sub(1)
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
        let mut w = ReplayWindow::new();
        for c in 0..1000 {
            assert_eq!(w.accept(c, LIMIT), Ok(()));
        }
        assert_eq!(w.accept(999, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.accept(0, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.greatest(), Some(999));
    }

    #[test]
    fn first_counter_may_be_anything() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.greatest(), None);
        assert_eq!(w.accept(5000, LIMIT), Ok(()));
        assert_eq!(w.accept(4999, LIMIT), Ok(()));
        assert_eq!(w.accept(0, LIMIT), Ok(()), "0 is within 8192 of 5000");
        assert_eq!(w.accept(0, LIMIT), Err(Refusal::Duplicate));
    }

    #[test]
    fn window_edge_is_exactly_8192() {
        let mut w = ReplayWindow::new();
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
        let mut w = ReplayWindow::new();
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
        let mut w = ReplayWindow::new();
        for c in 0..8192 {
            w.accept(c, LIMIT).unwrap();
        }
        let jump = 8191 + WINDOW + 64 * 3 + 7;
        w.accept(jump, LIMIT).unwrap();
        // Counters that alias the old bits (same ring positions) are fresh.
        for c in (jump - 8191)..jump {
            assert_eq!(w.check(c, LIMIT), Ok(()), "{c}");
        }
    }

    #[test]
    fn slide_by_less_than_a_word_keeps_recent_bits() {
        let mut w = ReplayWindow::new();
        w.accept(100, LIMIT).unwrap();
        w.accept(90, LIMIT).unwrap();
        w.accept(130, LIMIT).unwrap();
        assert_eq!(w.accept(90, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.accept(100, LIMIT), Err(Refusal::Duplicate));
        assert_eq!(w.accept(129, LIMIT), Ok(()));
    }

    #[test]
    fn limit() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(LIMIT, LIMIT), Err(Refusal::Exhausted));
        assert_eq!(w.accept(LIMIT - 1, LIMIT), Ok(()));
        assert_eq!(w.accept(u64::MAX, LIMIT), Err(Refusal::Exhausted));
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
            let mut w = ReplayWindow::new();
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
