//! The clock the WireGuard core is fed with.
//!
//! The core never reads a clock: every call takes an [`Instant`]. One value serves both uses:
//! timers only look at differences, and TAI64N handshake timestamps need wall-clock time. So an
//! `Instant` counts nanoseconds since the Unix epoch *as advanced by a monotonic clock*: an
//! adapter reads the wall clock once at start-up and adds the monotonic time elapsed since.
//! Wall-clock steps then never move timers, and timestamps still grow across restarts.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time: nanoseconds since the Unix epoch, advanced monotonically by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// An instant from nanoseconds since the Unix epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// An instant from whole seconds since the Unix epoch (handy in tests).
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the Unix epoch.
    pub const fn since_unix_epoch(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Whether at least `period` has passed from `since` to `self`.
    pub fn has_elapsed(self, since: Instant, period: Duration) -> bool {
        self.saturating_duration_since(since) >= period
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;

    fn sub(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_secs(10);
        assert_eq!(
            t + Duration::from_millis(1500),
            Instant::from_nanos(11_500_000_000)
        );
        assert_eq!(Instant::from_secs(3) - t, Duration::ZERO);
        assert_eq!(t - Instant::from_secs(3), Duration::from_secs(7));
        assert_eq!(
            Instant::from_nanos(u64::MAX) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
        assert!(t.has_elapsed(Instant::from_secs(5), Duration::from_secs(5)));
        assert!(!t.has_elapsed(Instant::from_secs(6), Duration::from_secs(5)));
    }
}
