//! What traffic to generate: the fabric side (VNI, MACs), the inner flows (addresses, ports,
//! protocol, size), and how flows map to 5-tuples. Shared by the generator, which builds the
//! packets, and the sink, which checks them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_dataplane::wire::{ipv4, ipv6, udp, vxlan};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{payload, tcp};

/// Largest inner IP packet the generator builds (a jumbo frame's payload).
pub const MAX_INNER_SIZE: usize = 9000;

/// The inner transport protocol.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum InnerProto {
    #[default]
    Udp,
    /// TCP-shaped segments (ACK set, sequence advancing); no connection behind them.
    Tcp,
}

impl std::fmt::Display for InnerProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InnerProto::Udp => "udp",
            InnerProto::Tcp => "tcp",
        })
    }
}

/// The traffic a leaf sends towards the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSpec {
    /// The L3 VNI.
    pub vni: u32,
    /// Inner destination MAC: the gateway's router MAC.
    pub router_mac: MacAddr,
    /// Inner source MAC: the sending leaf's.
    pub leaf_mac: MacAddr,
    /// Inner source addresses are taken from here...
    pub src_prefix: IpNet,
    /// ...and inner destination addresses from here (same family).
    pub dst_prefix: IpNet,
    /// How many distinct inner source addresses the flows use (at least 1).
    pub src_addrs: u32,
    /// How many distinct inner destination addresses the flows use (at least 1).
    pub dst_addrs: u32,
    /// First inner source port; flows sharing a source address get consecutive ports.
    pub src_port: u16,
    /// Inner destination port (the same for every flow).
    pub dst_port: u16,
    /// Number of flows (distinct inner 5-tuples).
    pub flows: u32,
    /// Inner IP packet size in bytes (IP header included, inner Ethernet excluded).
    pub size: usize,
    pub proto: InnerProto,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        Self {
            vni: 100,
            router_mac: MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]),
            leaf_mac: MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]),
            src_prefix: IpNet::V4("10.1.0.0/16".parse().unwrap_or_default()),
            dst_prefix: IpNet::V4("10.2.0.0/16".parse().unwrap_or_default()),
            src_addrs: 1,
            dst_addrs: 1,
            src_port: 10_000,
            dst_port: 9_000,
            flows: 1,
            size: 512,
            proto: InnerProto::Udp,
        }
    }
}

/// A traffic specification that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("source prefix {src} and destination prefix {dst} are not the same address family")]
    MixedFamilies { src: IpNet, dst: IpNet },
    #[error("inner size {size} is below the minimum {min} for {family} {proto} (IP + {proto} header + {} byte payload header)", payload::LEN)]
    SizeTooSmall {
        size: usize,
        min: usize,
        family: &'static str,
        proto: InnerProto,
    },
    #[error("inner size {size} is above the maximum {max}")]
    SizeTooLarge { size: usize, max: usize },
    #[error("at least one flow is needed")]
    NoFlows,
    #[error("VNI {0} does not fit in 24 bits")]
    Vni(u32),
    #[error("prefix {prefix} has {have} usable addresses, {want} wanted")]
    PrefixTooSmall {
        prefix: IpNet,
        want: u32,
        have: u128,
    },
    #[error("{flows} flows over {addrs} source addresses need source ports {first}..={last}, beyond 65535")]
    PortsExhausted {
        flows: u32,
        addrs: u32,
        first: u16,
        last: u64,
    },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("router MAC {0} and leaf MAC must be unicast")]
    Mac(MacAddr),
}

/// One flow's inner 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: InnerProto,
}

impl FiveTuple {
    /// A hash of the 5-tuple (FNV-1a over its bytes, then an avalanche), the entropy a VTEP puts in the outer
    /// UDP source port (RFC 7348 §5) and that the socket transport spreads flows by.
    pub fn hash(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u32::from(*b);
                h = h.wrapping_mul(0x0100_0193);
            }
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                eat(&s.octets());
                eat(&d.octets());
            }
            (s, d) => {
                eat(&ip6(s).octets());
                eat(&ip6(d).octets());
            }
        }
        eat(&self.src_port.to_be_bytes());
        eat(&self.dst_port.to_be_bytes());
        eat(&[self.proto as u8]);
        // FNV's low bits mix poorly and the port keeps only the low 14: finish with
        // MurmurHash3's fmix32 avalanche.
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }

    /// The outer UDP source port a VTEP would use: the hash folded into the dynamic range
    /// 49152-65535, as RFC 7348 §5 recommends.
    pub fn outer_src_port(&self) -> u16 {
        49152 + (self.hash() % 16384) as u16
    }
}

fn ip6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// First usable address of a prefix and how many follow it. The network address is skipped
/// (and the IPv4 broadcast address), except in /31, /32, /127 and /128 where every address
/// is a host.
fn usable(prefix: &IpNet) -> (u128, u128) {
    match prefix {
        IpNet::V4(n) => {
            let base = u128::from(n.network().to_bits());
            let size = 1u128 << (32 - u32::from(n.prefix_len()));
            if n.prefix_len() >= 31 {
                (base, size)
            } else {
                (base + 1, size - 2)
            }
        }
        IpNet::V6(n) => {
            let base = n.network().to_bits();
            let bits = 128 - u32::from(n.prefix_len());
            let size = if bits >= 128 {
                u128::MAX
            } else {
                1u128 << bits
            };
            if n.prefix_len() >= 127 {
                (base, size)
            } else {
                (base + 1, size - 1)
            }
        }
    }
}

/// The `k`-th usable address of `prefix` (callers check `k` against the count first).
fn host(prefix: &IpNet, k: u32) -> IpAddr {
    let (first, _) = usable(prefix);
    let a = first.wrapping_add(u128::from(k));
    match prefix {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from_bits(a as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from_bits(a)),
    }
}

impl TrafficSpec {
    pub fn is_ipv6(&self) -> bool {
        matches!(self.src_prefix, IpNet::V6(_))
    }

    /// Inner IP header length.
    pub fn ip_header_len(&self) -> usize {
        if self.is_ipv6() {
            ipv6::HEADER_LEN
        } else {
            ipv4::MIN_HEADER_LEN
        }
    }

    /// Inner transport header length.
    pub fn l4_header_len(&self) -> usize {
        match self.proto {
            InnerProto::Udp => udp::HEADER_LEN,
            InnerProto::Tcp => tcp::HEADER_LEN,
        }
    }

    /// The smallest inner size that holds the headers and the payload header.
    pub fn min_size(&self) -> usize {
        self.ip_header_len() + self.l4_header_len() + payload::LEN
    }

    /// Bytes after the outer UDP header: VXLAN, inner Ethernet, inner IP packet.
    pub fn vxlan_len(&self) -> usize {
        vxlan::HEADER_LEN + gatewan_dataplane::wire::ethernet::HEADER_LEN + self.size
    }

    /// Checks everything that could make building fail or flows collide.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.src_prefix.addr().is_ipv6() != self.dst_prefix.addr().is_ipv6() {
            return Err(SpecError::MixedFamilies {
                src: self.src_prefix,
                dst: self.dst_prefix,
            });
        }
        if self.vni > vxlan::MAX_VNI {
            return Err(SpecError::Vni(self.vni));
        }
        for mac in [self.router_mac, self.leaf_mac] {
            if !mac.is_unicast() {
                return Err(SpecError::Mac(mac));
            }
        }
        if self.flows == 0 {
            return Err(SpecError::NoFlows);
        }
        if self.src_addrs == 0 {
            return Err(SpecError::Zero("src_addrs"));
        }
        if self.dst_addrs == 0 {
            return Err(SpecError::Zero("dst_addrs"));
        }
        let min = self.min_size();
        if self.size < min {
            return Err(SpecError::SizeTooSmall {
                size: self.size,
                min,
                family: if self.is_ipv6() { "IPv6" } else { "IPv4" },
                proto: self.proto,
            });
        }
        if self.size > MAX_INNER_SIZE {
            return Err(SpecError::SizeTooLarge {
                size: self.size,
                max: MAX_INNER_SIZE,
            });
        }
        for (prefix, want) in [
            (self.src_prefix, self.src_addrs),
            (self.dst_prefix, self.dst_addrs),
        ] {
            let (_, have) = usable(&prefix);
            if u128::from(want) > have {
                return Err(SpecError::PrefixTooSmall { prefix, want, have });
            }
        }
        let last = u64::from(self.src_port) + u64::from((self.flows - 1) / self.src_addrs);
        if last > u64::from(u16::MAX) {
            return Err(SpecError::PortsExhausted {
                flows: self.flows,
                addrs: self.src_addrs,
                first: self.src_port,
                last,
            });
        }
        Ok(())
    }

    /// Flow `i`'s 5-tuple: source address `i % src_addrs`, destination address
    /// `i % dst_addrs`, source port `src_port + i / src_addrs`. Distinct flows differ in
    /// (source address, source port), so every flow is a distinct 5-tuple.
    pub fn flow(&self, i: u32) -> FiveTuple {
        let src_addrs = self.src_addrs.max(1);
        FiveTuple {
            src: host(&self.src_prefix, i % src_addrs),
            dst: host(&self.dst_prefix, i % self.dst_addrs.max(1)),
            src_port: self.src_port.wrapping_add((i / src_addrs) as u16),
            dst_port: self.dst_port,
            proto: self.proto,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn flows_are_distinct_and_inside_prefixes() {
        let spec = TrafficSpec {
            src_prefix: "10.1.0.0/24".parse().unwrap(),
            dst_prefix: "10.2.0.0/30".parse().unwrap(),
            src_addrs: 7,
            dst_addrs: 2,
            flows: 1000,
            ..TrafficSpec::default()
        };
        spec.validate().unwrap();
        let tuples: HashSet<_> = (0..spec.flows).map(|i| spec.flow(i)).collect();
        assert_eq!(tuples.len(), 1000);
        for t in &tuples {
            assert!(spec.src_prefix.contains(&t.src) && t.src != spec.src_prefix.network());
            assert!(
                t.dst == "10.2.0.1".parse::<IpAddr>().unwrap()
                    || t.dst == "10.2.0.2".parse::<IpAddr>().unwrap()
            );
        }
        assert_eq!(spec.flow(0).src, "10.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(spec.flow(8).src_port, 10_001);
        // Outer ports spread over the dynamic range.
        let ports: HashSet<_> = tuples.iter().map(|t| t.outer_src_port()).collect();
        assert!(ports.len() > 900, "{}", ports.len());
        assert!(ports.iter().all(|p| *p >= 49152));
    }

    #[test]
    fn host_prefixes_and_v6() {
        let spec = TrafficSpec {
            src_prefix: "fd00::5/128".parse().unwrap(),
            dst_prefix: "fd01::/64".parse().unwrap(),
            dst_addrs: 3,
            flows: 10,
            ..TrafficSpec::default()
        };
        spec.validate().unwrap();
        assert_eq!(spec.flow(3).src, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(spec.flow(2).dst, "fd01::3".parse::<IpAddr>().unwrap());
        assert_eq!(spec.min_size(), 40 + 8 + 24);
    }

    #[test]
    fn validation_errors() {
        let ok = TrafficSpec::default();
        ok.validate().unwrap();
        let bad = |f: fn(&mut TrafficSpec)| {
            let mut s = ok.clone();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|s| s.dst_prefix = "fd00::/64".parse().unwrap()),
            SpecError::MixedFamilies { .. }
        ));
        assert!(matches!(
            bad(|s| s.size = 51),
            SpecError::SizeTooSmall { min: 52, .. }
        ));
        assert!(matches!(
            bad(|s| {
                s.proto = InnerProto::Tcp;
                s.src_prefix = "fd00::/64".parse().unwrap();
                s.dst_prefix = "fd01::/64".parse().unwrap();
                s.size = 64;
            }),
            SpecError::SizeTooSmall { min: 84, .. }
        ));
        assert!(matches!(
            bad(|s| s.size = 9001),
            SpecError::SizeTooLarge { .. }
        ));
        assert_eq!(bad(|s| s.flows = 0), SpecError::NoFlows);
        assert_eq!(bad(|s| s.vni = 1 << 24), SpecError::Vni(1 << 24));
        assert!(matches!(
            bad(|s| s.leaf_mac = MacAddr::BROADCAST),
            SpecError::Mac(_)
        ));
        assert!(matches!(
            bad(|s| {
                s.src_prefix = "10.1.0.0/30".parse().unwrap();
                s.src_addrs = 3;
            }),
            SpecError::PrefixTooSmall { have: 2, .. }
        ));
        assert!(matches!(
            bad(|s| {
                s.src_port = 65_000;
                s.flows = 600;
            }),
            SpecError::PortsExhausted { last: 65_599, .. }
        ));
    }
}
