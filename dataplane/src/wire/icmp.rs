//! ICMP (RFC 792) and ICMPv6 (RFC 4443): a view for both, echo request/reply, and builders
//! for the errors gatewan sends as a router: "fragmentation needed" (RFC 1191), "packet too
//! big" (RFC 4443 §3.2) and "time exceeded".
//!
//! Both versions share the 8-byte header layout (type, code, checksum, 4 bytes of
//! message-specific data). ICMPv4's checksum covers the message only; ICMPv6's adds the IPv6
//! pseudo-header.
//!
//! The error builders write a complete IP packet (header + ICMP) into the caller's buffer,
//! quoting as much of the offending packet as the RFCs allow (576 bytes in all for IPv4,
//! RFC 1812 §4.3.2.3; 1280 for IPv6, RFC 4443 §2.4(c)), and refuse (`BuildError::Suppressed`)
//! where the RFCs forbid an error: about an ICMP error, a non-first fragment, or a packet whose
//! source is not a single unicast host (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{self, Checksum};
use super::field::{set_u16, set_u32, set_u8, slice, slice_mut, u16_at, u32_at, u8_at};
use super::{ip_proto, ipv4, ipv6, need, BufferTooSmall};
use crate::drop::DropReason;

pub const HEADER_LEN: usize = 8;
/// Hop limit / TTL of the errors gatewan originates.
pub const ERROR_TTL: u8 = 64;
/// Largest IPv4 ICMP error datagram (RFC 1812 §4.3.2.3).
pub const V4_ERROR_MAX: usize = 576;
/// Largest ICMPv6 error packet (RFC 4443 §2.4(c)): the IPv6 minimum MTU.
pub const V6_ERROR_MAX: usize = ipv6::MIN_MTU;

/// ICMPv4 types and codes.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    /// Code of DEST_UNREACHABLE: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = 4;
    /// Code of TIME_EXCEEDED: TTL exceeded in transit.
    pub const CODE_TTL_EXCEEDED: u8 = 0;

    /// Types that are errors (never answered with an error).
    pub const fn is_error(t: u8) -> bool {
        matches!(t, 3 | 4 | 5 | 11 | 12)
    }
}

/// ICMPv6 types and codes.
pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;

    /// Error messages have types 0..=127 (RFC 4443 §2.1).
    pub const fn is_error(t: u8) -> bool {
        t < 128
    }
}

/// A zero-copy view of an ICMP or ICMPv6 message.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::IcmpTruncated);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn msg_type(&self) -> u8 {
        u8_at(self.b(), 0)
    }

    pub fn code(&self) -> u8 {
        u8_at(self.b(), 1)
    }

    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        u16_at(self.b(), 6)
    }

    /// Next-hop MTU of an ICMPv4 "fragmentation needed" (RFC 1191 §4).
    pub fn next_hop_mtu_v4(&self) -> u16 {
        u16_at(self.b(), 6)
    }

    /// MTU of an ICMPv6 "packet too big".
    pub fn mtu_v6(&self) -> u32 {
        u32_at(self.b(), 4)
    }

    /// Data after the 8-byte header (echo data, or the quoted packet of an error).
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        slice(b, HEADER_LEN, b.len())
    }

    /// ICMPv4 checksum (over the message).
    pub fn verify_checksum_v4(&self) -> bool {
        checksum::sum(self.b()) == 0xffff
    }

    /// ICMPv6 checksum (pseudo-header + message).
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let len = self.b().len() as u32;
        checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, len)
            .add_bytes(self.b())
            .sum()
            == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        slice_mut(b, HEADER_LEN, len)
    }

    pub fn fill_checksum_v4(&mut self) {
        set_u16(self.buffer.as_mut(), 2, 0);
        let c = Checksum::new().add_bytes(self.buffer.as_ref()).finish();
        set_u16(self.buffer.as_mut(), 2, c);
    }

    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        set_u16(self.buffer.as_mut(), 2, 0);
        let len = self.buffer.as_ref().len() as u32;
        let c = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, len)
            .add_bytes(self.buffer.as_ref())
            .finish();
        set_u16(self.buffer.as_mut(), 2, c);
    }
}

/// An echo request or reply, for building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoRepr {
    pub reply: bool,
    pub ident: u16,
    pub seq: u16,
    /// Bytes of echo data already in place after the 8-byte header.
    pub data_len: usize,
}

impl EchoRepr {
    fn write(&self, buf: &mut [u8], msg_type: u8) -> Result<usize, BufferTooSmall> {
        let len = HEADER_LEN + self.data_len;
        need(buf.len(), len)?;
        set_u8(buf, 0, msg_type);
        set_u8(buf, 1, 0);
        set_u16(buf, 2, 0);
        set_u16(buf, 4, self.ident);
        set_u16(buf, 6, self.seq);
        Ok(len)
    }

    /// Writes an ICMPv4 echo header with its checksum; returns the message length.
    pub fn emit_v4(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let t = if self.reply {
            v4::ECHO_REPLY
        } else {
            v4::ECHO_REQUEST
        };
        let len = self.write(buf, t)?;
        Packet {
            buffer: slice_mut(buf, 0, len),
        }
        .fill_checksum_v4();
        Ok(len)
    }

    /// Writes an ICMPv6 echo header with its checksum; returns the message length.
    pub fn emit_v6(
        &self,
        buf: &mut [u8],
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) -> Result<usize, BufferTooSmall> {
        let t = if self.reply {
            v6::ECHO_REPLY
        } else {
            v6::ECHO_REQUEST
        };
        let len = self.write(buf, t)?;
        Packet {
            buffer: slice_mut(buf, 0, len),
        }
        .fill_checksum_v6(src, dst);
        Ok(len)
    }
}

/// Why an ICMP error was not built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    BufferTooSmall(#[from] BufferTooSmall),
    /// The RFCs forbid an error about this packet.
    #[error("no ICMP error may be sent about this packet")]
    Suppressed,
    /// The offending packet does not parse.
    #[error("offending packet is malformed: {0}")]
    Malformed(DropReason),
}

/// May an ICMPv4 error be sent about this packet? (RFC 1812 §4.3.2.7)
pub fn v4_error_allowed<T: AsRef<[u8]>>(p: &ipv4::Packet<T>) -> bool {
    let src = p.src_addr();
    let dst = p.dst_addr();
    if !p.has_upper_header() {
        return false; // not the first fragment
    }
    if src.is_unspecified()
        || src.is_loopback()
        || src.is_broadcast()
        || src.is_multicast()
        || src.octets()[0] >= 240
        || dst.is_broadcast()
        || dst.is_multicast()
    {
        return false;
    }
    if p.protocol() == ip_proto::ICMP {
        // About an ICMP error (or a truncated ICMP header): never.
        match p.payload().first() {
            Some(t) if !v4::is_error(*t) => {}
            _ => return false,
        }
    }
    true
}

/// May an ICMPv6 error be sent about this packet? (RFC 4443 §2.4(e)). Packet Too Big is
/// allowed towards a multicast destination, so `to_multicast_ok` says which error this is.
pub fn v6_error_allowed<T: AsRef<[u8]>>(p: &ipv6::Packet<T>, to_multicast_ok: bool) -> bool {
    let src = p.src_addr();
    if src.is_unspecified() || src.is_multicast() || src.is_loopback() {
        return false;
    }
    if p.dst_addr().is_multicast() && !to_multicast_ok {
        return false;
    }
    match p.upper_layer() {
        Ok(u) if !u.has_upper_header() => false,
        Ok(u) if u.protocol == ip_proto::ICMPV6 => {
            let b = p.packet();
            match b.get(u.offset) {
                Some(t) => !v6::is_error(*t),
                None => false,
            }
        }
        Ok(_) => true,
        // A chain we cannot walk: still a unicast source, answering is allowed and useful.
        Err(_) => true,
    }
}

/// Builds IPv4 + ICMPv4 "fragmentation needed and DF set" (type 3 code 4) with the next-hop
/// MTU (RFC 1191), from `src` (an address of this gateway) to the offending packet's source.
/// Returns the length written.
pub fn frag_needed_v4(
    buf: &mut [u8],
    offending: &[u8],
    src: Ipv4Addr,
    mtu: u16,
) -> Result<usize, BuildError> {
    error_v4(
        buf,
        offending,
        src,
        v4::DEST_UNREACHABLE,
        v4::CODE_FRAG_NEEDED,
        u32::from(mtu),
    )
}

/// Builds IPv4 + ICMPv4 "time exceeded in transit" (type 11 code 0).
pub fn time_exceeded_v4(
    buf: &mut [u8],
    offending: &[u8],
    src: Ipv4Addr,
) -> Result<usize, BuildError> {
    error_v4(
        buf,
        offending,
        src,
        v4::TIME_EXCEEDED,
        v4::CODE_TTL_EXCEEDED,
        0,
    )
}

fn error_v4(
    buf: &mut [u8],
    offending: &[u8],
    src: Ipv4Addr,
    msg_type: u8,
    code: u8,
    rest: u32,
) -> Result<usize, BuildError> {
    let p = ipv4::Packet::new_checked(offending).map_err(BuildError::Malformed)?;
    if !v4_error_allowed(&p) {
        return Err(BuildError::Suppressed);
    }
    let quoted = p.packet();
    let room = V4_ERROR_MAX - ipv4::MIN_HEADER_LEN - HEADER_LEN;
    let quoted = slice(quoted, 0, quoted.len().min(room));
    let icmp_len = HEADER_LEN + quoted.len();
    let total = ipv4::MIN_HEADER_LEN + icmp_len;
    need(buf.len(), total)?;
    ipv4::Repr {
        src,
        dst: p.src_addr(),
        protocol: ip_proto::ICMP,
        payload_len: icmp_len,
        ttl: ERROR_TTL,
        tos: 0xc0, // precedence "internetwork control", as routers send errors
        ident: 0,
        dont_frag: false,
    }
    .emit(buf)?;
    let icmp = slice_mut(buf, ipv4::MIN_HEADER_LEN, total);
    set_u8(icmp, 0, msg_type);
    set_u8(icmp, 1, code);
    set_u16(icmp, 2, 0);
    set_u32(icmp, 4, rest);
    slice_mut(icmp, HEADER_LEN, icmp_len).copy_from_slice(quoted);
    Packet { buffer: icmp }.fill_checksum_v4();
    Ok(total)
}

/// Builds IPv6 + ICMPv6 "packet too big" (type 2) with `mtu`, from `src` (an address of this
/// gateway) to the offending packet's source. Returns the length written.
pub fn packet_too_big_v6(
    buf: &mut [u8],
    offending: &[u8],
    src: Ipv6Addr,
    mtu: u32,
) -> Result<usize, BuildError> {
    error_v6(buf, offending, src, v6::PACKET_TOO_BIG, 0, mtu)
}

/// Builds IPv6 + ICMPv6 "hop limit exceeded in transit" (type 3 code 0).
pub fn time_exceeded_v6(
    buf: &mut [u8],
    offending: &[u8],
    src: Ipv6Addr,
) -> Result<usize, BuildError> {
    error_v6(
        buf,
        offending,
        src,
        v6::TIME_EXCEEDED,
        v6::CODE_HOP_LIMIT_EXCEEDED,
        0,
    )
}

fn error_v6(
    buf: &mut [u8],
    offending: &[u8],
    src: Ipv6Addr,
    msg_type: u8,
    code: u8,
    rest: u32,
) -> Result<usize, BuildError> {
    let p = ipv6::Packet::new_checked(offending).map_err(BuildError::Malformed)?;
    if !v6_error_allowed(&p, msg_type == v6::PACKET_TOO_BIG) {
        return Err(BuildError::Suppressed);
    }
    let quoted = p.packet();
    let room = V6_ERROR_MAX - ipv6::HEADER_LEN - HEADER_LEN;
    let quoted = slice(quoted, 0, quoted.len().min(room));
    let icmp_len = HEADER_LEN + quoted.len();
    let total = ipv6::HEADER_LEN + icmp_len;
    need(buf.len(), total)?;
    let dst = p.src_addr();
    ipv6::Repr {
        src,
        dst,
        next_header: ip_proto::ICMPV6,
        payload_len: icmp_len,
        hop_limit: ERROR_TTL,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(buf)?;
    let icmp = slice_mut(buf, ipv6::HEADER_LEN, total);
    set_u8(icmp, 0, msg_type);
    set_u8(icmp, 1, code);
    set_u16(icmp, 2, 0);
    set_u32(icmp, 4, rest);
    slice_mut(icmp, HEADER_LEN, icmp_len).copy_from_slice(quoted);
    Packet { buffer: icmp }.fill_checksum_v6(&src, &dst);
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::udp;

    fn udp_v4(len: usize, src: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0xabu8; 20 + 8 + len];
        ipv4::Repr {
            src,
            dst: Ipv4Addr::new(10, 2, 0, 9),
            protocol: ip_proto::UDP,
            payload_len: 8 + len,
            ttl: 1,
            tos: 0,
            ident: 7,
            dont_frag: true,
        }
        .emit(&mut b)
        .unwrap();
        udp::Repr {
            src_port: 5000,
            dst_port: 6000,
            payload_len: len,
        }
        .emit(&mut b[20..], udp::ChecksumMode::None)
        .unwrap();
        b
    }

    fn udp_v6(len: usize, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut b = vec![0xcdu8; 40 + 8 + len];
        ipv6::Repr {
            src,
            dst,
            next_header: ip_proto::UDP,
            payload_len: 8 + len,
            hop_limit: 1,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut b)
        .unwrap();
        udp::Repr {
            src_port: 5000,
            dst_port: 6000,
            payload_len: len,
        }
        .emit(&mut b[40..], udp::ChecksumMode::V6 { src, dst })
        .unwrap();
        b
    }

    #[test]
    fn echo_v4_round_trip() {
        let mut buf = [0u8; 8 + 16];
        buf[8..].copy_from_slice(b"0123456789abcdef");
        let n = EchoRepr {
            reply: false,
            ident: 0x1234,
            seq: 9,
            data_len: 16,
        }
        .emit_v4(&mut buf)
        .unwrap();
        assert_eq!(n, 24);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (v4::ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 9));
        assert_eq!(p.payload(), b"0123456789abcdef");
        assert!(p.verify_checksum_v4());
        buf[9] ^= 1;
        assert!(!Packet::new_checked(&buf[..]).unwrap().verify_checksum_v4());
    }

    #[test]
    fn echo_v6_round_trip() {
        let src: Ipv6Addr = "fd05::1".parse().unwrap();
        let dst: Ipv6Addr = "fd05::2".parse().unwrap();
        let mut buf = [7u8; 8 + 5];
        EchoRepr {
            reply: true,
            ident: 1,
            seq: 2,
            data_len: 5,
        }
        .emit_v6(&mut buf, &src, &dst)
        .unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.msg_type(), v6::ECHO_REPLY);
        assert!(p.verify_checksum_v6(&src, &dst));
        assert!(!p.verify_checksum_v6(&src, &"fd05::3".parse().unwrap()));
    }

    #[test]
    fn frag_needed_v4_quotes_and_checksums() {
        let me = Ipv4Addr::new(10, 13, 76, 135);
        let host = Ipv4Addr::new(10, 1, 0, 5);
        let off = udp_v4(1400, host);
        let mut buf = [0u8; 1500];
        let n = frag_needed_v4(&mut buf, &off, me, 1380).unwrap();
        assert_eq!(n, V4_ERROR_MAX, "quote truncated to 576 bytes in all");
        let ip = ipv4::Packet::new_checked(&buf[..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), me);
        assert_eq!(ip.dst_addr(), host);
        assert_eq!(ip.protocol(), ip_proto::ICMP);
        let icmp = Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum_v4());
        assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
        assert_eq!(icmp.next_hop_mtu_v4(), 1380);
        assert_eq!(icmp.payload(), &off[..icmp.payload().len()]);
        assert_eq!(u16_at(icmp.into_inner(), 4), 0, "unused field is zero");

        // A small packet is quoted whole.
        let small = udp_v4(10, host);
        let n = time_exceeded_v4(&mut buf, &small, me).unwrap();
        assert_eq!(n, 20 + 8 + small.len());
        let ip = ipv4::Packet::new_checked(&buf[..n]).unwrap();
        let icmp = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((icmp.msg_type(), icmp.code()), (11, 0));
        assert!(icmp.verify_checksum_v4());
        assert_eq!(icmp.payload(), &small[..]);
    }

    #[test]
    fn v4_errors_suppressed_where_rfc_forbids() {
        let me = Ipv4Addr::new(10, 0, 0, 1);
        let mut buf = [0u8; 600];
        for src in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 5),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(240, 0, 0, 1),
        ] {
            let off = udp_v4(10, src);
            assert_eq!(
                frag_needed_v4(&mut buf, &off, me, 1400),
                Err(BuildError::Suppressed),
                "{src}"
            );
        }
        // Non-first fragment.
        let mut frag = udp_v4(10, Ipv4Addr::new(10, 1, 0, 5));
        frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        assert_eq!(
            frag_needed_v4(&mut buf, &frag, me, 1400),
            Err(BuildError::Suppressed)
        );
        // An ICMP error about an ICMP error.
        let n = time_exceeded_v4(&mut buf, &udp_v4(10, Ipv4Addr::new(10, 1, 0, 5)), me).unwrap();
        let err = buf[..n].to_vec();
        // (its destination is 10.1.0.5, a unicast host; still suppressed for being an error)
        assert_eq!(
            time_exceeded_v4(&mut buf, &err, me),
            Err(BuildError::Suppressed)
        );
        // An echo request is answered.
        let mut echo = udp_v4(10, Ipv4Addr::new(10, 1, 0, 5));
        echo[9] = ip_proto::ICMP;
        echo[20] = v4::ECHO_REQUEST;
        let mut p = ipv4::Packet::new_checked(&mut echo[..]).unwrap();
        p.fill_checksum();
        assert!(time_exceeded_v4(&mut buf, &echo, me).is_ok());
        // Malformed and too-small buffers.
        assert!(matches!(
            frag_needed_v4(&mut buf, &[0x45, 0, 0], me, 1400),
            Err(BuildError::Malformed(DropReason::Ipv4Truncated))
        ));
        let off = udp_v4(10, Ipv4Addr::new(10, 1, 0, 5));
        assert!(matches!(
            frag_needed_v4(&mut buf[..40], &off, me, 1400),
            Err(BuildError::BufferTooSmall(_))
        ));
    }

    #[test]
    fn packet_too_big_v6_quotes_and_checksums() {
        let me: Ipv6Addr = "fd05:1:0:2:5::87".parse().unwrap();
        let host: Ipv6Addr = "fd00:a::5".parse().unwrap();
        let off = udp_v6(1452, host, "fd00:b::9".parse().unwrap());
        let mut buf = [0u8; 1600];
        let n = packet_too_big_v6(&mut buf, &off, me, 1420).unwrap();
        assert_eq!(n, V6_ERROR_MAX);
        let ip = ipv6::Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(ip.src_addr(), me);
        assert_eq!(ip.dst_addr(), host);
        assert_eq!(ip.next_header(), ip_proto::ICMPV6);
        let icmp = Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum_v6(&me, &host));
        assert_eq!((icmp.msg_type(), icmp.code()), (2, 0));
        assert_eq!(icmp.mtu_v6(), 1420);
        assert_eq!(icmp.payload(), &off[..1280 - 48]);

        let small = udp_v6(4, host, "fd00:b::9".parse().unwrap());
        let n = time_exceeded_v6(&mut buf, &small, me).unwrap();
        let ip = ipv6::Packet::new_checked(&buf[..n]).unwrap();
        let icmp = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), v6::TIME_EXCEEDED);
        assert!(icmp.verify_checksum_v6(&me, &host));
        assert_eq!(icmp.payload(), &small[..]);
    }

    #[test]
    fn v6_errors_suppressed_where_rfc_forbids() {
        let me: Ipv6Addr = "fd05::1".parse().unwrap();
        let host: Ipv6Addr = "fd00:a::5".parse().unwrap();
        let mcast: Ipv6Addr = "ff02::1".parse().unwrap();
        let mut buf = [0u8; 1400];
        let to_mcast = udp_v6(8, host, mcast);
        // Packet too big may answer a multicast destination; time exceeded may not.
        assert!(packet_too_big_v6(&mut buf, &to_mcast, me, 1400).is_ok());
        assert_eq!(
            time_exceeded_v6(&mut buf, &to_mcast, me),
            Err(BuildError::Suppressed)
        );
        let from_unspec = udp_v6(8, Ipv6Addr::UNSPECIFIED, host);
        assert_eq!(
            packet_too_big_v6(&mut buf, &from_unspec, me, 1400),
            Err(BuildError::Suppressed)
        );
        // About an ICMPv6 error.
        let n = time_exceeded_v6(&mut buf, &udp_v6(8, host, me), me).unwrap();
        let err = buf[..n].to_vec();
        assert_eq!(
            packet_too_big_v6(&mut buf, &err, me, 1400),
            Err(BuildError::Suppressed)
        );
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Packet::new_checked(&[0u8; 7][..]).unwrap_err(),
            DropReason::IcmpTruncated
        );
        assert!(EchoRepr {
            reply: false,
            ident: 0,
            seq: 0,
            data_len: 1
        }
        .emit_v4(&mut [0u8; 8])
        .is_err());
    }
}
