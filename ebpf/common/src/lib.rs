//! Map layouts shared by the XDP programs (`ebpf/xdp`, built for the BPF target) and the
//! userspace loader in `gatewan-dataplane`, so the two sides cannot disagree about a slot.
#![no_std]

/// Name of the XDP program inside the object file.
pub const XDP_PROGRAM: &str = "gatewan_xdp";

/// Per-CPU array of `u64` counters, indexed by [`counter_slot`].
pub const COUNTERS_MAP: &str = "GW_COUNTERS";

/// What the XDP program decided for a packet. The discriminant is part of the map layout.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handed to the kernel stack (BGP, Serf, SSH, ARP/ND, everything not ours).
    Pass = 0,
    /// Dropped in XDP (malformed or unauthenticated).
    Drop = 1,
    /// Redirected to an AF_XDP socket.
    Redirect = 2,
    /// The program could not decide (should stay zero).
    Aborted = 3,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Pass,
        Verdict::Drop,
        Verdict::Redirect,
        Verdict::Aborted,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::Redirect => "redirect",
            Verdict::Aborted => "aborted",
        }
    }
}

/// Packets and bytes are counted separately for each verdict.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    Packets = 0,
    Bytes = 1,
}

/// Number of slots in [`COUNTERS_MAP`].
pub const COUNTER_SLOTS: u32 = Verdict::ALL.len() as u32 * 2;

/// Slot of a counter in [`COUNTERS_MAP`].
#[inline(always)]
pub const fn counter_slot(verdict: Verdict, kind: CounterKind) -> u32 {
    verdict as u32 * 2 + kind as u32
}
