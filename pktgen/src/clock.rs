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

    /// Another process's CPU time (all its threads), from `/proc/<pid>/stat`: how the
    /// benchmark charges a gateway or a peer running as its own process. Clock-tick
    /// resolution (usually 10 ms), so measure over seconds.
    pub fn of_pid(pid: u32) -> std::io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Self::parse_proc_stat(&stat).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected /proc/<pid>/stat",
            )
        })
    }

    /// utime and stime (fields 14 and 15, in clock ticks) of a `/proc/<pid>/stat` line. The
    /// command name (field 2) may hold spaces and parentheses, so fields count from the last
    /// `)`.
    fn parse_proc_stat(stat: &str) -> Option<Self> {
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let tick_ns = 1_000_000_000 / u64::try_from(hz).ok().filter(|h| *h > 0)?;
        Some(Self {
            user_ns: utime.saturating_mul(tick_ns),
            system_ns: stime.saturating_mul(tick_ns),
        })
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
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn proc_stat_parsing() {
        // SAFETY: sysconf has no preconditions.
        let tick = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let line = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 1 0";
        assert_eq!(
            CpuTime::parse_proc_stat(line),
            Some(CpuTime {
                user_ns: 250 * tick,
                system_ns: 30 * tick
            })
        );
        assert_eq!(CpuTime::parse_proc_stat("4242 (x) S 1 2"), None);
        assert_eq!(CpuTime::parse_proc_stat("no parenthesis"), None);
        // Our own process reads back, and never more than getrusage says (ticks round down).
        let mine = CpuTime::of_pid(std::process::id()).unwrap();
        let ru = CpuTime::process();
        assert!(
            mine.total_ns() <= ru.total_ns() + 2 * tick,
            "{mine:?} vs {ru:?}"
        );
        assert!(CpuTime::of_pid(u32::MAX).is_err());
    }
}
