//! Clocks: CLOCK_MONOTONIC for packet timestamps, and CPU time for cost per packet.
//!
//! The generator stamps packets with CLOCK_MONOTONIC and the sink subtracts that from its own
//! CLOCK_MONOTONIC reading. Network namespaces share that clock (only time namespaces would
//! offset it), so a generator and a sink on one machine measure one-way latency directly;
//! across machines the number means nothing. `Instant` reads the same clock but hides the
//! value, hence `clock_gettime` here.

use serde::Serialize;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer. The clocks used here
    // always exist on Linux, so the call cannot fail; on failure `ts` stays zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC in nanoseconds (a vDSO call, no system call).
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time the calling thread has used, in nanoseconds (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// User and system CPU time, from getrusage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuTime {
    pub user_ns: u64,
    pub system_ns: u64,
}

impl CpuTime {
    fn rusage(who: libc::c_int) -> Self {
        // SAFETY: rusage is plain data; all-zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one rusage through a valid pointer.
        if unsafe { libc::getrusage(who, &mut ru) } != 0 {
            return Self::default();
        }
        let ns = |tv: libc::timeval| {
            (tv.tv_sec as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add((tv.tv_usec as u64).saturating_mul(1000))
        };
        Self {
            user_ns: ns(ru.ru_utime),
            system_ns: ns(ru.ru_stime),
        }
    }

    /// The calling thread's CPU time (RUSAGE_THREAD).
    pub fn thread() -> Self {
        Self::rusage(libc::RUSAGE_THREAD)
    }

    /// The whole process's CPU time (RUSAGE_SELF).
    pub fn process() -> Self {
        Self::rusage(libc::RUSAGE_SELF)
    }

    pub fn total_ns(&self) -> u64 {
        self.user_ns.saturating_add(self.system_ns)
    }

    /// CPU time spent since `earlier`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            system_ns: self.system_ns.saturating_sub(earlier.system_ns),
        }
    }

    pub fn add(&self, other: &CpuTime) -> CpuTime {
        CpuTime {
            user_ns: self.user_ns.saturating_add(other.user_ns),
            system_ns: self.system_ns.saturating_add(other.system_ns),
        }
    }
}

/// CPU spent on a run, as reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuUsage {
    pub user_s: f64,
    pub system_s: f64,
    pub total_s: f64,
    /// Total CPU nanoseconds per packet handled (0 when no packet was).
    pub ns_per_packet: f64,
}

impl CpuUsage {
    pub fn new(cpu: CpuTime, packets: u64) -> Self {
        let total = cpu.total_ns();
        Self {
            user_s: cpu.user_ns as f64 / 1e9,
            system_s: cpu.system_ns as f64 / 1e9,
            total_s: total as f64 / 1e9,
            ns_per_packet: if packets == 0 {
                0.0
            } else {
                total as f64 / packets as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance_and_cpu_adds_up() {
        let t0 = monotonic_ns();
        let c0 = thread_cpu_ns();
        let r0 = CpuTime::thread();
        // Burn some CPU so thread time must move.
        let mut x = 0u64;
        while thread_cpu_ns() < c0 + 5_000_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(monotonic_ns() > t0);
        let used = CpuTime::thread().since(&r0);
        assert!(used.total_ns() > 0, "{used:?}");
        assert!(CpuTime::process().total_ns() >= used.total_ns());
        let u = CpuUsage::new(
            CpuTime {
                user_ns: 3_000,
                system_ns: 1_000,
            },
            4,
        );
        assert_eq!(u.ns_per_packet, 1000.0);
        assert_eq!(u.total_s, 4e-6);
        assert_eq!(CpuUsage::new(CpuTime::default(), 0).ns_per_packet, 0.0);
    }
}
