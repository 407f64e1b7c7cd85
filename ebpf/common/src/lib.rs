//! Map layouts shared by the XDP programs (`ebpf/xdp`, built for the BPF target) and the
//! userspace loader in `gatewan-dataplane`, so the two sides cannot disagree about a slot.
//! docs/afxdp.md describes the program's rules and how userspace drives these maps.
#![no_std]

/// Name of the XDP program inside the object file.
pub const XDP_PROGRAM: &str = "gatewan_xdp";

/// Per-CPU array of `u64` counters, indexed by [`slot`].
pub const COUNTERS_MAP: &str = "GW_COUNTERS";

/// Hash map [`EndpointKey`] -> `u32` ([`SteerKind`] discriminant): the (address, UDP port)
/// pairs whose packets go to an AF_XDP socket.
pub const ENDPOINTS_MAP: &str = "GW_ENDPOINTS";

/// XSKMAP: receive queue index -> AF_XDP socket bound to that queue.
pub const XSKS_MAP: &str = "GW_XSKS";

/// Capacity of [`ENDPOINTS_MAP`]: VTEP addresses and transit (address, port) pairs of one
/// gateway; a handful in practice.
pub const MAX_ENDPOINTS: u32 = 1024;

/// Capacity of [`XSKS_MAP`]: the highest receive queue index a socket can serve, plus one.
pub const MAX_QUEUES: u32 = 256;

/// The default VXLAN UDP port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// What the XDP program decided for a packet. The discriminant is part of the map layout.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handed to the kernel stack (BGP, Serf, SSH, ARP/ND, everything not ours).
    Pass = 0,
    /// Dropped in XDP. The program never drops today; the slot stays for a future filter.
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

/// Which of gatewan's flows a steered endpoint carries. The discriminant is the value stored in
/// [`ENDPOINTS_MAP`]; zero is never used so an all-zero value cannot be mistaken for a kind.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SteerKind {
    /// VXLAN from the fabric to one of our VTEP addresses.
    Vxlan = 1,
    /// WireGuard from transit to one of our tunnel endpoints.
    Wireguard = 2,
}

impl SteerKind {
    pub const ALL: [SteerKind; 2] = [SteerKind::Vxlan, SteerKind::Wireguard];

    pub const fn from_u32(value: u32) -> Option<SteerKind> {
        match value {
            1 => Some(SteerKind::Vxlan),
            2 => Some(SteerKind::Wireguard),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            SteerKind::Vxlan => "vxlan",
            SteerKind::Wireguard => "wireguard",
        }
    }
}

/// Every counter the program keeps. Each packet adds to exactly one verdict counter
/// (`Pass`..`Aborted`) and to at most one of the detail counters after them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Pass = 0,
    Drop = 1,
    Redirect = 2,
    Aborted = 3,
    /// Redirected VXLAN (a subset of `Redirect`).
    Vxlan = 4,
    /// Redirected WireGuard (a subset of `Redirect`).
    Wireguard = 5,
    /// Matched a steered endpoint but no socket serves the receive queue, so passed (a subset of
    /// `Pass`).
    NoSocket = 6,
    /// Truncated or inconsistent Ethernet/VLAN/IP/UDP headers, passed for the kernel to judge
    /// and count (a subset of `Pass`).
    Malformed = 7,
}

impl Counter {
    pub const ALL: [Counter; 8] = [
        Counter::Pass,
        Counter::Drop,
        Counter::Redirect,
        Counter::Aborted,
        Counter::Vxlan,
        Counter::Wireguard,
        Counter::NoSocket,
        Counter::Malformed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::Pass => "pass",
            Counter::Drop => "drop",
            Counter::Redirect => "redirect",
            Counter::Aborted => "aborted",
            Counter::Vxlan => "vxlan",
            Counter::Wireguard => "wireguard",
            Counter::NoSocket => "no_socket",
            Counter::Malformed => "malformed",
        }
    }

    pub const fn from_verdict(verdict: Verdict) -> Counter {
        match verdict {
            Verdict::Pass => Counter::Pass,
            Verdict::Drop => Counter::Drop,
            Verdict::Redirect => Counter::Redirect,
            Verdict::Aborted => Counter::Aborted,
        }
    }

    pub const fn from_kind(kind: SteerKind) -> Counter {
        match kind {
            SteerKind::Vxlan => Counter::Vxlan,
            SteerKind::Wireguard => Counter::Wireguard,
        }
    }
}

/// Packets and bytes are counted separately for each counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    Packets = 0,
    Bytes = 1,
}

/// Number of slots in [`COUNTERS_MAP`].
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32 * 2;

/// Slot of a counter in [`COUNTERS_MAP`].
#[inline(always)]
pub const fn slot(counter: Counter, kind: CounterKind) -> u32 {
    counter as u32 * 2 + kind as u32
}

/// Slot of a verdict's counter in [`COUNTERS_MAP`].
#[inline(always)]
pub const fn counter_slot(verdict: Verdict, kind: CounterKind) -> u32 {
    slot(Counter::from_verdict(verdict), kind)
}

/// Address family tags in [`EndpointKey::family`].
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// Key of [`ENDPOINTS_MAP`]: a destination address and UDP port. Every byte is a named field,
/// so there is no padding for either side to leave uninitialised (the kernel hashes all 20
/// bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Always zero.
    pub pad: u8,
    /// UDP destination port, in network byte order as it is on the wire.
    pub port_be: u16,
    /// The address as on the wire; IPv4 uses the first four bytes, the rest stay zero.
    pub addr: [u8; 16],
}

impl EndpointKey {
    pub const fn ipv4(addr: [u8; 4], port: u16) -> EndpointKey {
        EndpointKey {
            family: FAMILY_IPV4,
            pad: 0,
            port_be: port.to_be(),
            addr: [
                addr[0], addr[1], addr[2], addr[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        }
    }

    pub const fn ipv6(addr: [u8; 16], port: u16) -> EndpointKey {
        EndpointKey {
            family: FAMILY_IPV6,
            pad: 0,
            port_be: port.to_be(),
            addr,
        }
    }

    /// The UDP port in host byte order.
    pub const fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), only integer fields, no padding (1 + 1 + 2 + 16 bytes): every bit pattern
    // is valid and every byte is initialised.
    unsafe impl aya::Pod for super::EndpointKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_and_dense() {
        let mut seen = [false; COUNTER_SLOTS as usize];
        for counter in Counter::ALL {
            for kind in [CounterKind::Packets, CounterKind::Bytes] {
                let s = slot(counter, kind) as usize;
                assert!(!seen[s], "{counter:?} {kind:?} reuses slot {s}");
                seen[s] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        for verdict in Verdict::ALL {
            assert_eq!(
                counter_slot(verdict, CounterKind::Bytes),
                slot(Counter::from_verdict(verdict), CounterKind::Bytes)
            );
        }
    }

    #[test]
    fn endpoint_key_has_no_padding_and_keeps_the_wire_order() {
        assert_eq!(core::mem::size_of::<EndpointKey>(), 20);
        let key = EndpointKey::ipv4([192, 0, 2, 1], 4789);
        assert_eq!(key.port(), 4789);
        assert_eq!(key.port_be.to_ne_bytes(), 4789u16.to_be_bytes());
        assert_eq!(&key.addr[..4], &[192, 0, 2, 1]);
        assert!(key.addr[4..].iter().all(|b| *b == 0));
        for kind in SteerKind::ALL {
            assert_eq!(SteerKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(SteerKind::from_u32(0), None);
    }
}
