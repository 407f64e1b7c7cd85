//! Why a packet was dropped, and per-worker counters of every reason.
//!
//! Every parser in [`crate::wire`] fails with a [`DropReason`], so a malformed packet is never
//! a panic, only a counted drop. Names are stable (`snake_case`) because counters are exported
//! under them (`gatewan status`, metrics); add reasons at the end, never rename one.
//!
//! Counting is split in two so the hot path stays free of atomics: each worker owns a
//! [`DropCounters`] (plain `u64`s, `&mut self`), and now and then (once per batch is cheap
//! enough) publishes it into its own slot of [`PublishedDrops`] with plain relaxed stores. Readers
//! take [`PublishedDrops::snapshot`]s and sum them across workers.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*) => {
        /// Why a packet was dropped. `name()` is the stable counter name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons; the length of a counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable name counters are exported under.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }

            /// The reason with this stable name.
            pub fn from_name(name: &str) -> Option<DropReason> {
                match name {
                    $($name => Some(DropReason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (with its VLAN tags).
    EthTruncated = "eth_truncated",
    /// An EtherType gatewan does not forward (neither IPv4 nor IPv6), or too many VLAN tags.
    EthUnsupported = "eth_unsupported",
    /// The destination MAC is not ours (outer frame, or inner frame of VXLAN: not our router MAC).
    WrongMac = "wrong_mac",
    /// Shorter than an IPv4 header or than its own length fields say.
    Ipv4Truncated = "ipv4_truncated",
    /// IPv4 header fields that cannot be valid (version, IHL, total length).
    Ipv4Malformed = "ipv4_malformed",
    /// IPv4 header checksum mismatch.
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// An IPv4 fragment where gatewan needs a whole datagram.
    Ipv4Fragment = "ipv4_fragment",
    /// Shorter than an IPv6 header, its payload length or an extension header.
    Ipv6Truncated = "ipv6_truncated",
    /// IPv6 header fields that cannot be valid (version).
    Ipv6Malformed = "ipv6_malformed",
    /// An IPv6 fragment where gatewan needs a whole datagram.
    Ipv6Fragment = "ipv6_fragment",
    /// An IPv6 extension header chain gatewan will not walk (too long).
    Ipv6ExtHeader = "ipv6_ext_header",
    /// An IP protocol gatewan does not handle at this point (not UDP where UDP is expected).
    UnsupportedProtocol = "unsupported_protocol",
    /// Shorter than a UDP header or than its length field says.
    UdpTruncated = "udp_truncated",
    /// A UDP length field shorter than the header.
    UdpMalformed = "udp_malformed",
    /// UDP checksum mismatch (or a zero checksum over IPv6).
    UdpBadChecksum = "udp_bad_checksum",
    /// Not a port gatewan listens on.
    WrongPort = "wrong_port",
    /// Shorter than a VXLAN header.
    VxlanTruncated = "vxlan_truncated",
    /// VXLAN header without the I (valid VNI) flag.
    VxlanMalformed = "vxlan_malformed",
    /// A VNI this gateway does not serve.
    WrongVni = "wrong_vni",
    /// Shorter than the ICMP header it claims to be.
    IcmpTruncated = "icmp_truncated",
    /// Length wrong for the WireGuard message type (handshakes have fixed sizes, data messages
    /// at least a header and a tag).
    WgBadLength = "wg_bad_length",
    /// Not a WireGuard message type (or non-zero reserved bytes).
    WgUnknownType = "wg_unknown_type",
    /// No session with this receiver index.
    WgUnknownReceiver = "wg_unknown_receiver",
    /// Counter already seen or too old for the replay window.
    Replay = "replay",
    /// AEAD authentication failed.
    BadAuth = "bad_auth",
    /// The session's keys are expired or not yet confirmed.
    NoSession = "no_session",
    /// Inner source address not allowed on the tunnel it arrived on.
    SourceNotAllowed = "source_not_allowed",
    /// No route for the inner destination.
    UnknownPrefix = "unknown_prefix",
    /// The route's tunnel group has no usable tunnel.
    NoTunnel = "no_tunnel",
    /// TTL or hop limit would reach zero.
    TtlExceeded = "ttl_exceeded",
    /// Inner packet larger than the path allows (an ICMP error is sent when allowed).
    TooBig = "too_big",
    /// No room in the transmit ring or buffer pool.
    NoBuffer = "no_buffer",
    /// A decrypted WireGuard payload that is not an IPv4 or IPv6 packet.
    WgBadInner = "wg_bad_inner",
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for DropReason {}

/// One worker's drop counters: plain integers, owned by the worker, no atomics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl Default for DropCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl DropCounters {
    pub const fn new() -> Self {
        Self {
            counts: [0; DropReason::COUNT],
        }
    }

    /// Counts one drop.
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        self.add(reason, 1);
    }

    /// Counts `n` drops.
    #[inline]
    pub fn add(&mut self, reason: DropReason, n: u64) {
        // `reason as usize` < COUNT by construction of the enum; `get_mut` keeps it panic-free.
        if let Some(c) = self.counts.get_mut(reason as usize) {
            *c = c.wrapping_add(n);
        }
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts.get(reason as usize).copied().unwrap_or(0)
    }

    /// Sum of all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.wrapping_add(*c))
    }

    /// (reason, count) for every reason, zeros included, in stable order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
    }

    /// (reason, count) for reasons that were counted at least once.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        self.iter().filter(|(_, c)| *c != 0)
    }
}

impl std::ops::AddAssign<&DropCounters> for DropCounters {
    fn add_assign(&mut self, rhs: &DropCounters) {
        for (a, b) in self.counts.iter_mut().zip(rhs.counts.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

impl<'a> std::iter::Sum<&'a DropCounters> for DropCounters {
    fn sum<I: Iterator<Item = &'a DropCounters>>(iter: I) -> Self {
        let mut total = DropCounters::new();
        for c in iter {
            total += c;
        }
        total
    }
}

impl std::iter::Sum<DropCounters> for DropCounters {
    fn sum<I: Iterator<Item = DropCounters>>(iter: I) -> Self {
        let mut total = DropCounters::new();
        for c in iter {
            total += &c;
        }
        total
    }
}

/// A worker's published copy of its counters, readable from other threads.
///
/// Only the owning worker writes (plain relaxed stores of its running totals, no
/// read-modify-write), so publishing costs a few stores per batch; padding keeps workers'
/// slots on separate cache lines.
#[repr(align(128))]
#[derive(Debug)]
pub struct PublishedDrops {
    counts: [AtomicU64; DropReason::COUNT],
}

impl Default for PublishedDrops {
    fn default() -> Self {
        Self::new()
    }
}

impl PublishedDrops {
    pub fn new() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Stores the worker's running totals. Call from the owning worker only.
    pub fn publish(&self, local: &DropCounters) {
        for (slot, v) in self.counts.iter().zip(local.counts.iter()) {
            slot.store(*v, Ordering::Relaxed);
        }
    }

    /// A copy of the last published totals; sum snapshots of all workers for the gateway total.
    pub fn snapshot(&self) -> DropCounters {
        let mut out = DropCounters::new();
        for (o, slot) in out.counts.iter_mut().zip(self.counts.iter()) {
            *o = slot.load(Ordering::Relaxed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
            assert_eq!(
                DropReason::ALL[*r as usize],
                *r,
                "index order matches discriminants"
            );
            assert!(r
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert_eq!(DropReason::from_name("no_such_reason"), None);
    }

    #[test]
    fn stable_names_do_not_move() {
        // Exported counter names are an interface: these must never change.
        assert_eq!(DropReason::WrongVni.name(), "wrong_vni");
        assert_eq!(DropReason::UnknownPrefix.name(), "unknown_prefix");
        assert_eq!(DropReason::Replay.name(), "replay");
        assert_eq!(DropReason::WrongMac.to_string(), "wrong_mac");
    }

    #[test]
    fn counters_count_publish_and_sum() {
        let mut w1 = DropCounters::new();
        let mut w2 = DropCounters::new();
        w1.count(DropReason::WrongVni);
        w1.count(DropReason::WrongVni);
        w1.add(DropReason::Replay, 5);
        w2.count(DropReason::WrongVni);
        w2.count(DropReason::TooBig);
        assert_eq!(w1.get(DropReason::WrongVni), 2);
        assert_eq!(w1.total(), 7);

        let p1 = PublishedDrops::new();
        let p2 = PublishedDrops::new();
        p1.publish(&w1);
        p2.publish(&w2);
        // Later local counts are not visible until published again.
        w1.count(DropReason::BadAuth);
        let total: DropCounters = [p1.snapshot(), p2.snapshot()].into_iter().sum();
        assert_eq!(total.get(DropReason::WrongVni), 3);
        assert_eq!(total.get(DropReason::Replay), 5);
        assert_eq!(total.get(DropReason::TooBig), 1);
        assert_eq!(total.get(DropReason::BadAuth), 0);
        assert_eq!(total.total(), 9);
        let nz: Vec<_> = total.nonzero().map(|(r, _)| r).collect();
        assert_eq!(
            nz,
            vec![DropReason::WrongVni, DropReason::Replay, DropReason::TooBig]
        );
        p1.publish(&w1);
        assert_eq!(p1.snapshot().get(DropReason::BadAuth), 1);
    }
}
