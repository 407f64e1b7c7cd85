//! The flow hash: a seeded hash of an inner packet's 5-tuple (addresses, protocol, ports),
//! so every packet of a flow picks the same tunnel.
//!
//! The mixer is the folded 64×64→128-bit multiply of wyhash/foldhash: two multiplies for an
//! IPv4 tuple, four for IPv6, no table, no branch on data. The seed is per gateway so that
//! gatewan's choice is not correlated with the fabric's own ECMP hash.
//!
//! Ports are read for TCP, UDP, UDP-Lite, SCTP and DCCP (the first 4 bytes of all of them).
//! Fragments (first or not) hash without ports, so all fragments of one datagram take one
//! tunnel; ICMP and other protocols hash on addresses and protocol.

use std::net::IpAddr;

use crate::wire::field::{u16_at, u32_at, u8_at};
use crate::wire::{ip_proto, ipv4, ipv6};

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;
const K3: u64 = 0x082e_fa98_ec4e_6c89;

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

#[inline(always)]
fn finish(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

#[inline(always)]
fn l4_word(proto: u8, sport: u16, dport: u16) -> u64 {
    (u64::from(proto) << 32) | (u64::from(sport) << 16) | u64::from(dport)
}

/// The addresses, protocol and ports of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl FlowKey {
    /// The key of an IP packet (v4 or v6 by its version nibble); `None` when it does not parse.
    pub fn from_ip(packet: &[u8]) -> Option<FlowKey> {
        match u8_at(packet, 0) >> 4 {
            4 => {
                let p = ipv4::Packet::new_checked(packet).ok()?;
                let (sp, dp) = ports(p.protocol(), !p.is_fragment(), p.payload());
                Some(FlowKey {
                    src: p.src_addr().into(),
                    dst: p.dst_addr().into(),
                    protocol: p.protocol(),
                    src_port: sp,
                    dst_port: dp,
                })
            }
            6 => {
                let p = ipv6::Packet::new_checked(packet).ok()?;
                let (proto, sp, dp) = v6_l4(&p);
                Some(FlowKey {
                    src: p.src_addr().into(),
                    dst: p.dst_addr().into(),
                    protocol: proto,
                    src_port: sp,
                    dst_port: dp,
                })
            }
            _ => None,
        }
    }
}

fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP | 33 /* DCCP */ | 136 /* UDP-Lite */
    )
}

#[inline]
fn ports(proto: u8, whole: bool, l4: &[u8]) -> (u16, u16) {
    if whole && has_ports(proto) && l4.len() >= 4 {
        (u16_at(l4, 0), u16_at(l4, 2))
    } else {
        (0, 0)
    }
}

#[inline]
fn v6_l4<T: AsRef<[u8]>>(p: &ipv6::Packet<T>) -> (u8, u16, u16) {
    match p.upper_layer() {
        Ok(u) => {
            let whole = u.fragment.is_none();
            let l4 = crate::wire::field::slice(p.packet(), u.offset, p.total_len());
            let (sp, dp) = ports(u.protocol, whole, l4);
            (u.protocol, sp, dp)
        }
        Err(_) => (p.next_header(), 0, 0),
    }
}

/// A seeded 5-tuple hasher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHasher {
    seed: u64,
}

impl FlowHasher {
    pub const fn new(seed: u64) -> Self {
        Self { seed }
    }

    #[inline]
    pub fn hash_v4(&self, src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> u32 {
        let a = (u64::from(src) << 32) | u64::from(dst);
        let h = fold_mul(a ^ self.seed ^ K0, l4_word(proto, sport, dport) ^ K1);
        finish(fold_mul(h ^ K2, self.seed ^ K3))
    }

    #[inline]
    pub fn hash_v6(&self, src: u128, dst: u128, proto: u8, sport: u16, dport: u16) -> u32 {
        let h = fold_mul((src as u64) ^ self.seed ^ K0, ((src >> 64) as u64) ^ K1);
        let h = fold_mul((dst as u64) ^ h, ((dst >> 64) as u64) ^ K2);
        let h = fold_mul(h ^ l4_word(proto, sport, dport), self.seed ^ K3);
        finish(fold_mul(h ^ K0, K1))
    }

    pub fn hash_key(&self, k: &FlowKey) -> u32 {
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.hash_v4(s.to_bits(), d.to_bits(), k.protocol, k.src_port, k.dst_port)
            }
            (s, d) => self.hash_v6(
                to_v6_bits(s),
                to_v6_bits(d),
                k.protocol,
                k.src_port,
                k.dst_port,
            ),
        }
    }

    /// Hashes an IPv4 packet already parsed by the caller.
    #[inline]
    pub fn hash_ipv4<T: AsRef<[u8]>>(&self, p: &ipv4::Packet<T>) -> u32 {
        let proto = p.protocol();
        let (sp, dp) = ports(proto, !p.is_fragment(), p.payload());
        let b = p.header();
        self.hash_v4(u32_at(b, 12), u32_at(b, 16), proto, sp, dp)
    }

    /// Hashes an IPv6 packet already parsed by the caller.
    #[inline]
    pub fn hash_ipv6<T: AsRef<[u8]>>(&self, p: &ipv6::Packet<T>) -> u32 {
        let (proto, sp, dp) = v6_l4(p);
        self.hash_v6(
            p.src_addr().to_bits(),
            p.dst_addr().to_bits(),
            proto,
            sp,
            dp,
        )
    }

    /// Hashes a raw IP packet (v4 or v6 by version nibble). Malformed packets hash to 0; the
    /// pipeline drops them before it gets here.
    pub fn hash_ip(&self, packet: &[u8]) -> u32 {
        match u8_at(packet, 0) >> 4 {
            4 => ipv4::Packet::new_checked(packet).map_or(0, |p| self.hash_ipv4(&p)),
            6 => ipv6::Packet::new_checked(packet).map_or(0, |p| self.hash_ipv6(&p)),
            _ => 0,
        }
    }
}

fn to_v6_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::udp;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut b = vec![0u8; 20 + 8 + 4];
        ipv4::Repr {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            protocol: ip_proto::UDP,
            payload_len: 12,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: false,
        }
        .emit(&mut b)
        .unwrap();
        b[6..8].copy_from_slice(&frag.to_be_bytes());
        udp::Repr {
            src_port: sport,
            dst_port: dport,
            payload_len: 4,
        }
        .emit(&mut b[20..], udp::ChecksumMode::None)
        .unwrap();
        b
    }

    #[test]
    fn key_and_packet_hash_agree_v4() {
        let h = FlowHasher::new(42);
        let pkt = v4_udp([10, 1, 0, 5], [10, 2, 0, 9], 5000, 443, 0);
        let k = FlowKey::from_ip(&pkt).unwrap();
        assert_eq!((k.protocol, k.src_port, k.dst_port), (17, 5000, 443));
        assert_eq!(h.hash_key(&k), h.hash_ip(&pkt));
        // Another port is another flow; another seed is another hash.
        let other = v4_udp([10, 1, 0, 5], [10, 2, 0, 9], 5001, 443, 0);
        assert_ne!(h.hash_ip(&pkt), h.hash_ip(&other));
        assert_ne!(h.hash_ip(&pkt), FlowHasher::new(43).hash_ip(&pkt));
        // Payload and TTL do not matter.
        let mut same = pkt.clone();
        same[8] = 3;
        same[31] = 0xee;
        assert_eq!(h.hash_ip(&pkt), h.hash_ip(&same));
    }

    #[test]
    fn fragments_hash_without_ports() {
        let h = FlowHasher::new(1);
        let first = v4_udp([10, 1, 0, 5], [10, 2, 0, 9], 5000, 443, 0x2000);
        let later = v4_udp([10, 1, 0, 5], [10, 2, 0, 9], 0x1234, 0x5678, 0x0004);
        assert_eq!(h.hash_ip(&first), h.hash_ip(&later));
        let k = FlowKey::from_ip(&first).unwrap();
        assert_eq!((k.src_port, k.dst_port), (0, 0));
    }

    #[test]
    fn v6_with_extension_headers() {
        let h = FlowHasher::new(7);
        let src: Ipv6Addr = "fd00:a::5".parse().unwrap();
        let dst: Ipv6Addr = "fd00:b::9".parse().unwrap();
        let mut b = vec![0u8; 40 + 8 + 8];
        ipv6::Repr {
            src,
            dst,
            next_header: ip_proto::IPV6_DEST_OPTS,
            payload_len: 16,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut b)
        .unwrap();
        b[40] = ip_proto::TCP;
        b[48..50].copy_from_slice(&40000u16.to_be_bytes());
        b[50..52].copy_from_slice(&22u16.to_be_bytes());
        let k = FlowKey::from_ip(&b).unwrap();
        assert_eq!(
            (k.protocol, k.src_port, k.dst_port),
            (ip_proto::TCP, 40000, 22)
        );
        assert_eq!(h.hash_ip(&b), h.hash_key(&k));
        assert_eq!(
            h.hash_ip(&b),
            h.hash_v6(src.to_bits(), dst.to_bits(), ip_proto::TCP, 40000, 22)
        );
    }

    #[test]
    fn garbage_hashes_to_zero() {
        let h = FlowHasher::new(7);
        assert_eq!(h.hash_ip(&[]), 0);
        assert_eq!(h.hash_ip(&[0x45, 0, 0]), 0);
        assert_eq!(FlowKey::from_ip(&[0x10; 40]), None);
    }

    #[test]
    fn spreads_evenly_over_slots() {
        // 64k flows differing only in source port land evenly on 16 buckets (high bits, as the
        // tunnel group uses them): every bucket within 10% of the mean.
        let h = FlowHasher::new(0x5eed);
        let mut buckets = [0u32; 16];
        for port in 0..=u16::MAX {
            let x = h.hash_v4(0x0a01_0005, 0x0a02_0009, 6, port, 443);
            buckets[(x >> 28) as usize] += 1;
        }
        let mean = 65536 / 16;
        for b in buckets {
            assert!(b.abs_diff(mean) < mean / 10, "{buckets:?}");
        }
        // And a single-bit change in any input flips about half the output bits.
        let base = h.hash_v4(0x0a01_0005, 0x0a02_0009, 6, 1000, 443);
        let mut flips = 0;
        for bit in 0..32 {
            flips += (base ^ h.hash_v4(0x0a01_0005 ^ (1 << bit), 0x0a02_0009, 6, 1000, 443))
                .count_ones();
        }
        let avg = f64::from(flips) / 32.0;
        assert!((12.0..=20.0).contains(&avg), "avalanche {avg}");
    }
}
