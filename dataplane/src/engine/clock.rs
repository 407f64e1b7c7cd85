//! The clock the WireGuard core, its owner and the workers share.

use core::time::Duration;
use std::time::{Instant, SystemTime};

use crate::wireguard as wg;

/// Wall-clock time read once at start, advanced by the monotonic clock: timers never jump,
/// and handshake timestamps still grow across restarts. `Copy`, so every worker has its own;
/// reading it is a vDSO call, no system call.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_base_ns: u64,
    mono_base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            wall_base_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
            mono_base: Instant::now(),
        }
    }

    /// The WireGuard instant of a monotonic instant.
    pub fn wg(&self, mono: Instant) -> wg::Instant {
        let since = u64::try_from(mono.saturating_duration_since(self.mono_base).as_nanos())
            .unwrap_or(u64::MAX);
        wg::Instant::from_nanos(self.wall_base_ns.saturating_add(since))
    }

    /// The monotonic instant of a WireGuard instant.
    pub fn mono(&self, t: wg::Instant) -> Instant {
        self.mono_base + Duration::from_nanos(t.as_nanos().saturating_sub(self.wall_base_ns))
    }

    pub fn now(&self) -> wg::Instant {
        self.wg(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_advances() {
        let c = Clock::new();
        let m = Instant::now();
        let t = c.wg(m);
        assert_eq!(c.mono(t), m);
        assert!(c.wg(m + Duration::from_secs(3)) == t + Duration::from_secs(3));
    }
}
