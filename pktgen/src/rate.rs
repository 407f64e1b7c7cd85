//! A token bucket for the generator's rate, fed by the caller's clock (sans-IO: tests drive
//! it with simulated nanoseconds).
//!
//! Credit is kept in exact integer units of packet·nanoseconds-per-second (one packet =
//! 10^9 units, and `dt` ns at `rate` pps adds `dt * rate` units), so no float drift
//! accumulates over a long run. The bucket holds at most `burst` packets, so a sender that
//! was descheduled does not catch up with a burst larger than one batch.

const UNIT: u128 = 1_000_000_000;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_pps: u64,
    burst: u64,
    credit: u128,
    last_ns: u64,
}

impl TokenBucket {
    /// A bucket filling at `rate_pps` packets per second, holding at most `burst` packets,
    /// starting empty at `now_ns`. A rate of 0 means unlimited.
    pub fn new(rate_pps: u64, burst: u64, now_ns: u64) -> Self {
        Self {
            rate_pps,
            burst: burst.max(1),
            credit: 0,
            last_ns: now_ns,
        }
    }

    pub fn rate_pps(&self) -> u64 {
        self.rate_pps
    }

    fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = u128::from(self.burst) * UNIT;
        self.credit = (self.credit + u128::from(dt) * u128::from(self.rate_pps)).min(cap);
    }

    /// Takes up to `want` packets of credit at `now_ns`; returns how many may be sent now.
    pub fn grant(&mut self, now_ns: u64, want: u64) -> u64 {
        if self.rate_pps == 0 {
            return want;
        }
        self.refill(now_ns);
        let n = (self.credit / UNIT).min(u128::from(want)) as u64;
        self.credit -= u128::from(n) * UNIT;
        n
    }

    /// Nanoseconds from `now_ns` until `packets` packets of credit are there (0 when they
    /// already are, or when unlimited). Asking for more than the burst waits for the burst.
    pub fn wait_ns(&self, now_ns: u64, packets: u64) -> u64 {
        if self.rate_pps == 0 {
            return 0;
        }
        let dt = u128::from(now_ns.saturating_sub(self.last_ns));
        let cap = u128::from(self.burst) * UNIT;
        let credit = (self.credit + dt * u128::from(self.rate_pps)).min(cap);
        let need = u128::from(packets.min(self.burst)) * UNIT;
        if credit >= need {
            return 0;
        }
        // Round up: after this long the credit is there.
        let rate = u128::from(self.rate_pps);
        u64::try_from((need - credit).div_ceil(rate)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn unlimited_grants_everything() {
        let mut b = TokenBucket::new(0, 64, 0);
        assert_eq!(b.grant(0, 64), 64);
        assert_eq!(b.wait_ns(0, 64), 0);
    }

    #[test]
    fn steady_rate_over_simulated_second() {
        // 1 Mpps, batches of 64, the sender polls every 10 µs of simulated time.
        let mut b = TokenBucket::new(1_000_000, 64, 0);
        let mut sent = 0u64;
        let mut now = 0u64;
        while now < SEC {
            now += 10_000;
            sent += b.grant(now, 64);
            // Never ahead of the rate (credit started at zero).
            assert!(sent <= now / 1_000, "sent {sent} at {now} ns");
        }
        assert_eq!(sent, 1_000_000);
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        // 3 pps polled every 1 ms: 1/3 packet per 111 ms is not a whole number of ns.
        let mut b = TokenBucket::new(3, 4, 0);
        let mut sent = 0;
        for ms in 1..=10_000u64 {
            sent += b.grant(ms * 1_000_000, 1);
        }
        assert_eq!(sent, 30);
    }

    #[test]
    fn burst_caps_catch_up_after_a_stall() {
        let mut b = TokenBucket::new(1_000_000, 64, 0);
        // A 1 s stall earns only one burst.
        assert_eq!(b.grant(SEC, 1_000), 64);
        assert_eq!(b.grant(SEC, 1_000), 0);
    }

    #[test]
    fn wait_arithmetic() {
        let mut b = TokenBucket::new(1_000, 64, 0);
        // 1 packet every 1 ms.
        assert_eq!(b.wait_ns(0, 1), 1_000_000);
        assert_eq!(b.wait_ns(0, 10), 10_000_000);
        // More than the burst waits for the burst.
        assert_eq!(b.wait_ns(0, 1_000), 64_000_000);
        assert_eq!(b.wait_ns(400_000, 1), 600_000);
        assert_eq!(b.grant(999_999, 1), 0);
        assert_eq!(b.wait_ns(999_999, 1), 1);
        assert_eq!(b.grant(1_000_000, 1), 1);
        assert_eq!(b.wait_ns(1_000_000, 1), 1_000_000);
        // A clock that steps back neither panics nor mints credit.
        assert_eq!(b.grant(500_000, 1), 0);
        assert_eq!(b.grant(2_000_000, 5), 1);
        // 3 pps: rounds the wait up so the credit is really there when it ends.
        let mut c = TokenBucket::new(3, 1, 0);
        let w = c.wait_ns(0, 1);
        assert_eq!(w, 333_333_334);
        assert_eq!(c.grant(w - 1, 1), 0);
        assert_eq!(c.grant(w, 1), 1);
    }
}
