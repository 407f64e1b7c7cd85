//! What this machine and this build offer the dataplane: whether AF_XDP can be used and, when
//! not, every reason why. `gatewan doctor` prints it; backend selection will act on it.

use crate::xdp;

/// Capabilities AF_XDP needs: (bit in CapEff, name).
const NEEDED_CAPS: [(u32, &str); 5] = [
    (12, "CAP_NET_ADMIN"),
    (13, "CAP_NET_RAW"),
    (14, "CAP_IPC_LOCK"),
    (38, "CAP_PERFMON"),
    (39, "CAP_BPF"),
];

/// The outcome of probing AF_XDP support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpSupport {
    /// Every reason AF_XDP cannot be used; empty when it can.
    pub missing: Vec<String>,
}

impl AfXdpSupport {
    pub fn available(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Probes the build (embedded XDP program), the kernel (an AF_XDP socket) and the process
/// (capabilities).
pub fn af_xdp() -> AfXdpSupport {
    let mut missing = Vec::new();
    if let Err(e) = xdp::object() {
        missing.push(e.to_string());
    }
    // SAFETY: plain socket(2); the descriptor is closed right away.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        missing.push(format!("the kernel refuses AF_XDP sockets: {err}"));
    } else {
        // SAFETY: fd was just returned by socket(2) and is owned here.
        unsafe { libc::close(fd) };
    }
    match effective_caps() {
        Some(caps) => {
            let absent: Vec<&str> = NEEDED_CAPS
                .iter()
                .filter(|(bit, _)| caps & (1u64 << bit) == 0)
                .map(|(_, name)| *name)
                .collect();
            if !absent.is_empty() {
                missing.push(format!("missing capabilities: {}", absent.join(", ")));
            }
        }
        None => {
            missing.push("cannot read this process's capabilities from /proc/self/status".into())
        }
    }
    AfXdpSupport { missing }
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_is_consistent_with_the_build() {
        let support = af_xdp();
        if xdp::object().is_err() {
            assert!(!support.available());
            assert!(support.missing[0].contains("without its XDP program"));
        }
        assert_eq!(support.available(), support.missing.is_empty());
        assert!(effective_caps().is_some());
    }
}
