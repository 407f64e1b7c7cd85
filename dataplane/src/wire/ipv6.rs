//! IPv6 (RFC 8200): the fixed header, and a walk over extension headers to the upper layer.
//!
//! Hop-by-hop, routing and destination options headers are skipped (gatewan forwards them
//! untouched); a fragment header is reported in [`UpperLayer::fragment`] so the caller can
//! drop or hash fragments as it wants. The walk stops after [`MAX_EXT_HEADERS`] headers:
//! a long chain is a cheap way to make a router work hard (RFC 7112, RFC 9098), so it is a
//! counted drop (`Ipv6ExtHeader`) instead.

use std::net::Ipv6Addr;

use super::checksum::{self, Checksum};
use super::field::{
    array_at, set_array, set_u16, set_u32, set_u8, slice, slice_mut, u16_at, u32_at, u8_at,
};
use super::{ip_proto, need, BufferTooSmall};
use crate::drop::DropReason;

pub const HEADER_LEN: usize = 40;
/// Extension headers walked before giving up.
pub const MAX_EXT_HEADERS: usize = 8;
/// The minimum link MTU every IPv6 link must carry (RFC 8200 §5).
pub const MIN_MTU: usize = 1280;

mod off {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// A fragment header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in bytes.
    pub offset: usize,
    pub more: bool,
    pub ident: u32,
}

/// Where the upper-layer header starts, after the extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol (e.g. 17 for UDP), or the Next Header of the fragment
    /// header for a non-first fragment.
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Present when the packet is a fragment. When its `offset` is non-zero, the bytes at
    /// `UpperLayer::offset` are not an upper-layer header.
    pub fragment: Option<Fragment>,
}

impl UpperLayer {
    /// The upper-layer header is in this packet (not a fragment other than the first).
    pub fn has_upper_header(&self) -> bool {
        self.fragment.is_none_or(|f| f.offset == 0)
    }
}

/// A zero-copy view of an IPv6 packet. The buffer may extend past the packet; the payload
/// stops at the payload length.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version and payload length against the buffer. Extension headers are checked
    /// by [`Packet::upper_layer`].
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::Ipv6Truncated);
        }
        if u8_at(b, off::VER_TC_FLOW) >> 4 != 6 {
            return Err(DropReason::Ipv6Malformed);
        }
        if b.len() < HEADER_LEN + usize::from(u16_at(b, off::PAYLOAD_LEN)) {
            return Err(DropReason::Ipv6Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn traffic_class(&self) -> u8 {
        (u16_at(self.b(), off::VER_TC_FLOW) >> 4) as u8
    }

    pub fn flow_label(&self) -> u32 {
        u32_at(self.b(), off::VER_TC_FLOW) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> usize {
        usize::from(u16_at(self.b(), off::PAYLOAD_LEN))
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    pub fn next_header(&self) -> u8 {
        u8_at(self.b(), off::NEXT_HEADER)
    }

    pub fn hop_limit(&self) -> u8 {
        u8_at(self.b(), off::HOP_LIMIT)
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array_at::<16>(self.b(), off::SRC))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array_at::<16>(self.b(), off::DST))
    }

    /// Everything after the fixed header, extension headers included.
    pub fn payload(&self) -> &[u8] {
        slice(self.b(), HEADER_LEN, self.total_len())
    }

    /// The packet up to its payload length.
    pub fn packet(&self) -> &[u8] {
        slice(self.b(), 0, self.total_len())
    }

    /// Walks the extension headers to the upper layer.
    pub fn upper_layer(&self) -> Result<UpperLayer, DropReason> {
        let b = self.b();
        let end = self.total_len();
        let mut next = self.next_header();
        let mut at = HEADER_LEN;
        let mut fragment = None;
        for i in 0..MAX_EXT_HEADERS {
            match next {
                ip_proto::HOP_BY_HOP | ip_proto::IPV6_ROUTING | ip_proto::IPV6_DEST_OPTS => {
                    // RFC 8200 §4.3: hop-by-hop only directly after the fixed header.
                    if next == ip_proto::HOP_BY_HOP && i != 0 {
                        return Err(DropReason::Ipv6ExtHeader);
                    }
                    if at + 2 > end {
                        return Err(DropReason::Ipv6Truncated);
                    }
                    next = u8_at(b, at);
                    at += (usize::from(u8_at(b, at + 1)) + 1) * 8;
                    if at > end {
                        return Err(DropReason::Ipv6Truncated);
                    }
                }
                ip_proto::IPV6_FRAGMENT => {
                    if at + 8 > end {
                        return Err(DropReason::Ipv6Truncated);
                    }
                    let off_m = u16_at(b, at + 2);
                    let frag = Fragment {
                        offset: usize::from(off_m & 0xfff8),
                        more: off_m & 1 == 1,
                        ident: u32_at(b, at + 4),
                    };
                    next = u8_at(b, at);
                    at += 8;
                    fragment = Some(frag);
                    if frag.offset != 0 {
                        // What follows is the middle of a datagram, not headers.
                        break;
                    }
                }
                _ => {
                    return Ok(UpperLayer {
                        protocol: next,
                        offset: at,
                        fragment,
                    })
                }
            }
        }
        if fragment.is_some_and(|f| f.offset != 0) {
            return Ok(UpperLayer {
                protocol: next,
                offset: at,
                fragment,
            });
        }
        Err(DropReason::Ipv6ExtHeader)
    }

    /// Pseudo-header sum for an upper-layer checksum of `len` bytes with this source and
    /// destination (RFC 8200 §8.1; a routing header's final destination is not handled,
    /// gatewan does not originate those).
    pub fn pseudo_header(&self, next_header: u8, len: u32) -> Checksum {
        checksum::pseudo_header_v6(&self.src_addr(), &self.dst_addr(), next_header, len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_hop_limit(&mut self, h: u8) {
        set_u8(self.bm(), off::HOP_LIMIT, h);
    }

    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        set_array(self.bm(), off::SRC, a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        set_array(self.bm(), off::DST, a.octets());
    }

    /// Decrements the hop limit (IPv6 has no header checksum). `Err(TtlExceeded)` without
    /// touching the packet when it would reach zero.
    #[inline]
    pub fn decrement_hop_limit(&mut self) -> Result<u8, DropReason> {
        let h = self.hop_limit();
        if h <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        self.set_hop_limit(h - 1);
        Ok(h - 1)
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        slice_mut(self.bm(), HEADER_LEN, end)
    }
}

/// What a fixed IPv6 header says, for building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Repr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Writes the 40-byte header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        need(buf.len(), HEADER_LEN)?;
        let Ok(plen) = u16::try_from(self.payload_len) else {
            return Err(BufferTooSmall {
                need: self.payload_len,
                have: usize::from(u16::MAX),
            });
        };
        let first =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        set_u32(buf, off::VER_TC_FLOW, first);
        set_u16(buf, off::PAYLOAD_LEN, plen);
        set_u8(buf, off::NEXT_HEADER, self.next_header);
        set_u8(buf, off::HOP_LIMIT, self.hop_limit);
        set_array(buf, off::SRC, self.src.octets());
        set_array(buf, off::DST, self.dst.octets());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn repr(next: u8, plen: usize) -> Repr {
        Repr {
            src: "fd05:1:0:2:5::87".parse().unwrap(),
            dst: "fd05:1:0:2:5::86".parse().unwrap(),
            next_header: next,
            payload_len: plen,
            hop_limit: 2,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn round_trip_and_hop_limit() {
        let mut buf = [0u8; 48];
        repr(ip_proto::UDP, 8).emit(&mut buf).unwrap();
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload().len(), 8);
        assert_eq!(
            p.src_addr(),
            "fd05:1:0:2:5::87".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            p.upper_layer().unwrap(),
            UpperLayer {
                protocol: ip_proto::UDP,
                offset: 40,
                fragment: None
            }
        );
        assert_eq!(p.decrement_hop_limit(), Ok(1));
        assert_eq!(p.decrement_hop_limit(), Err(DropReason::TtlExceeded));
        assert_eq!(p.hop_limit(), 1);
    }

    #[test]
    fn skips_extension_headers() {
        // HBH (8 bytes) -> DestOpts (16 bytes) -> Routing (8 bytes) -> UDP (8 bytes)
        let mut buf = vec![0u8; 40 + 8 + 16 + 8 + 8];
        repr(ip_proto::HOP_BY_HOP, 40).emit(&mut buf).unwrap();
        buf[40] = ip_proto::IPV6_DEST_OPTS;
        buf[41] = 0;
        buf[48] = ip_proto::IPV6_ROUTING;
        buf[49] = 1;
        buf[64] = ip_proto::UDP;
        buf[65] = 0;
        let p = Packet::new_checked(&buf[..]).unwrap();
        let u = p.upper_layer().unwrap();
        assert_eq!(u.protocol, ip_proto::UDP);
        assert_eq!(u.offset, 72);
        assert!(u.has_upper_header());
    }

    #[test]
    fn fragments_flagged() {
        let mut buf = vec![0u8; 40 + 8 + 8];
        repr(ip_proto::IPV6_FRAGMENT, 16).emit(&mut buf).unwrap();
        buf[40] = ip_proto::UDP;
        buf[42..44].copy_from_slice(&1u16.to_be_bytes()); // offset 0, M
        buf[44..48].copy_from_slice(&0xdeadbeefu32.to_be_bytes());
        let u = Packet::new_checked(&buf[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(u.protocol, ip_proto::UDP);
        assert_eq!(u.offset, 48);
        assert_eq!(
            u.fragment,
            Some(Fragment {
                offset: 0,
                more: true,
                ident: 0xdeadbeef
            })
        );
        assert!(u.has_upper_header());
        buf[42..44].copy_from_slice(&(1480u16).to_be_bytes()); // offset 1480, last
        let u = Packet::new_checked(&buf[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(u.fragment.unwrap().offset, 1480);
        assert!(!u.fragment.unwrap().more);
        assert!(!u.has_upper_header());
    }

    #[test]
    fn bad_chains() {
        // HBH not first.
        let mut buf = vec![0u8; 40 + 16];
        repr(ip_proto::IPV6_DEST_OPTS, 16).emit(&mut buf).unwrap();
        buf[40] = ip_proto::HOP_BY_HOP;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap().upper_layer(),
            Err(DropReason::Ipv6ExtHeader)
        );
        // Extension header running past the payload.
        buf[40] = ip_proto::UDP;
        buf[41] = 2; // 24 bytes in a 16-byte payload
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap().upper_layer(),
            Err(DropReason::Ipv6Truncated)
        );
        // Too long a chain of destination options.
        let n = MAX_EXT_HEADERS + 1;
        let mut long = vec![0u8; 40 + 8 * n + 8];
        repr(ip_proto::IPV6_DEST_OPTS, 8 * n + 8)
            .emit(&mut long)
            .unwrap();
        for i in 0..n {
            long[40 + 8 * i] = if i + 1 == n {
                ip_proto::UDP
            } else {
                ip_proto::IPV6_DEST_OPTS
            };
        }
        assert_eq!(
            Packet::new_checked(&long[..]).unwrap().upper_layer(),
            Err(DropReason::Ipv6ExtHeader)
        );
        // Empty payload with an extension header announced.
        let mut empty = [0u8; 40];
        repr(ip_proto::IPV6_ROUTING, 0).emit(&mut empty).unwrap();
        assert_eq!(
            Packet::new_checked(&empty[..]).unwrap().upper_layer(),
            Err(DropReason::Ipv6Truncated)
        );
    }

    #[test]
    fn malformed_and_truncated() {
        let mut buf = [0u8; 48];
        repr(ip_proto::UDP, 8).emit(&mut buf).unwrap();
        assert_eq!(
            Packet::new_checked(&buf[..47]).unwrap_err(),
            DropReason::Ipv6Truncated
        );
        assert_eq!(
            Packet::new_checked(&buf[..39]).unwrap_err(),
            DropReason::Ipv6Truncated
        );
        buf[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            DropReason::Ipv6Malformed
        );
        assert!(repr(0, 70_000).emit(&mut buf).is_err());
    }
}
