//! IPv4 (RFC 791): header with options, fragment flags, header checksum.
//!
//! `new_checked` accepts fragments and options; it is the caller's choice to drop fragments
//! ([`Packet::is_fragment`], `DropReason::Ipv4Fragment`). The header checksum is verified
//! separately ([`Packet::verify_checksum`]) because a forwarding path that only decrements the
//! TTL may update it incrementally without verifying it (RFC 1812 §5.2.2 lets a router skip
//! the check; gatewan checks on the fabric side, where it costs one pass over 20 bytes).

use std::net::Ipv4Addr;

use super::checksum::{self, Checksum};
use super::field::{set_array, set_u16, set_u8, slice, slice_mut, u16_at, u32_at, u8_at};
use super::{need, BufferTooSmall};
use crate::drop::DropReason;

pub const MIN_HEADER_LEN: usize = 20;
pub const MAX_HEADER_LEN: usize = 60;

mod off {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet. The buffer may extend past the packet (Ethernet
/// padding); [`Packet::payload`] stops at the total length.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version, IHL and total length against the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(DropReason::Ipv4Truncated);
        }
        let vi = u8_at(b, off::VER_IHL);
        if vi >> 4 != 4 {
            return Err(DropReason::Ipv4Malformed);
        }
        let hlen = usize::from(vi & 0x0f) * 4;
        let total = usize::from(u16_at(b, off::LEN));
        if hlen < MIN_HEADER_LEN || total < hlen {
            return Err(DropReason::Ipv4Malformed);
        }
        if b.len() < total {
            return Err(DropReason::Ipv4Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.b(), off::VER_IHL) & 0x0f) * 4
    }

    pub fn dscp(&self) -> u8 {
        u8_at(self.b(), off::TOS) >> 2
    }

    pub fn ecn(&self) -> u8 {
        u8_at(self.b(), off::TOS) & 0x03
    }

    /// The whole TOS / traffic-class byte (DSCP and ECN), copied into outer headers.
    pub fn tos(&self) -> u8 {
        u8_at(self.b(), off::TOS)
    }

    pub fn total_len(&self) -> usize {
        usize::from(u16_at(self.b(), off::LEN))
    }

    pub fn ident(&self) -> u16 {
        u16_at(self.b(), off::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        u16_at(self.b(), off::FLAGS_FRAG) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        u16_at(self.b(), off::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(u16_at(self.b(), off::FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }

    /// Any fragment, first or not. Only the first carries the upper-layer header.
    pub fn is_fragment(&self) -> bool {
        u16_at(self.b(), off::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        u8_at(self.b(), off::TTL)
    }

    pub fn protocol(&self) -> u8 {
        u8_at(self.b(), off::PROTO)
    }

    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), off::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(u32_at(self.b(), off::SRC))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(u32_at(self.b(), off::DST))
    }

    /// Raw options bytes (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        slice(self.b(), MIN_HEADER_LEN, self.header_len())
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        slice(self.b(), 0, self.header_len())
    }

    /// The header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.header()) == 0xffff
    }

    /// The payload up to the total length (trailing link-layer padding excluded).
    pub fn payload(&self) -> &[u8] {
        slice(self.b(), self.header_len(), self.total_len())
    }

    /// The packet up to the total length.
    pub fn packet(&self) -> &[u8] {
        slice(self.b(), 0, self.total_len())
    }

    /// The upper-layer header is in this packet (not a fragment other than the first).
    pub fn has_upper_header(&self) -> bool {
        u16_at(self.b(), off::FLAGS_FRAG) & FRAG_OFFSET_MASK == 0
    }

    /// Pseudo-header sum for an upper-layer checksum over this packet's payload.
    pub fn pseudo_header(&self) -> Checksum {
        let len = u16::try_from(self.payload().len()).unwrap_or(u16::MAX);
        checksum::pseudo_header_v4(self.src_addr(), self.dst_addr(), self.protocol(), len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        set_u8(self.bm(), off::TTL, ttl);
    }

    pub fn set_tos(&mut self, tos: u8) {
        set_u8(self.bm(), off::TOS, tos);
    }

    pub fn set_ident(&mut self, ident: u16) {
        set_u16(self.bm(), off::IDENT, ident);
    }

    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        set_array(self.bm(), off::SRC, a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        set_array(self.bm(), off::DST, a.octets());
    }

    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.bm(), off::CHECKSUM, c);
    }

    /// Recomputes the header checksum over the whole header.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = Checksum::new().add_bytes(self.header()).finish();
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the checksum incrementally (RFC 1624). Returns the new
    /// TTL, or `Err(TtlExceeded)` without touching the packet when it would reach zero
    /// (RFC 1812 §5.3.1: a router drops a packet whose TTL reaches 0 and sends Time Exceeded).
    #[inline]
    pub fn decrement_ttl(&mut self) -> Result<u8, DropReason> {
        let ttl = self.ttl();
        if ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        let proto = self.protocol();
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(c);
        Ok(ttl - 1)
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        slice_mut(self.bm(), h, t)
    }
}

/// What a 20-byte (option-less) IPv4 header says, for building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Length of what follows the header.
    pub payload_len: usize,
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    pub const HEADER_LEN: usize = MIN_HEADER_LEN;

    /// Writes a 20-byte header with its checksum at the start of `buf`. The payload is not
    /// read (the IPv4 checksum covers the header only), so it may be written before or after.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        need(buf.len(), MIN_HEADER_LEN)?;
        let total = MIN_HEADER_LEN + self.payload_len;
        let Ok(total) = u16::try_from(total) else {
            return Err(BufferTooSmall {
                need: total,
                have: usize::from(u16::MAX),
            });
        };
        set_u8(buf, off::VER_IHL, 0x45);
        set_u8(buf, off::TOS, self.tos);
        set_u16(buf, off::LEN, total);
        set_u16(buf, off::IDENT, self.ident);
        set_u16(
            buf,
            off::FLAGS_FRAG,
            if self.dont_frag { FLAG_DF } else { 0 },
        );
        set_u8(buf, off::TTL, self.ttl);
        set_u8(buf, off::PROTO, self.protocol);
        set_u16(buf, off::CHECKSUM, 0);
        set_array(buf, off::SRC, self.src.octets());
        set_array(buf, off::DST, self.dst.octets());
        let c = Checksum::new()
            .add_bytes(slice(buf, 0, MIN_HEADER_LEN))
            .finish();
        set_u16(buf, off::CHECKSUM, c);
        Ok(MIN_HEADER_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::ip_proto;

    fn sample() -> Repr {
        Repr {
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 199),
            protocol: ip_proto::UDP,
            payload_len: 95,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }
    }

    #[test]
    fn emit_matches_known_header() {
        let mut buf = [0u8; 115];
        assert_eq!(sample().emit(&mut buf).unwrap(), 20);
        assert_eq!(
            &buf[..20],
            &[
                0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
                0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7
            ]
        );
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(p.payload().len(), 95);
        assert!(p.dont_frag());
        assert!(!p.is_fragment());
        assert!(p.has_upper_header());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut buf = [0u8; 115];
        let mut r = sample();
        r.ttl = 3;
        r.emit(&mut buf).unwrap();
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.decrement_ttl(), Ok(2));
        assert!(p.verify_checksum());
        assert_eq!(p.decrement_ttl(), Ok(1));
        assert!(p.verify_checksum());
        assert_eq!(p.decrement_ttl(), Err(DropReason::TtlExceeded));
        assert_eq!(p.ttl(), 1, "untouched on error");
        assert!(p.verify_checksum());
    }

    #[test]
    fn options_padding_and_fill_checksum() {
        // IHL 6: one 4-byte option word (NOP NOP NOP EOL); 8 bytes payload; 6 bytes padding.
        let mut buf = [0u8; 38];
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&32u16.to_be_bytes());
        buf[8] = 9;
        buf[9] = ip_proto::ICMP;
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]);
        buf[24..32].copy_from_slice(b"payload!");
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), b"payload!");
        assert_eq!(p.packet().len(), 32);
        p.payload_mut()[0] = b'P';
        assert_eq!(buf[24], b'P');
    }

    #[test]
    fn fragments_flagged() {
        let mut buf = [0u8; 40];
        sample_len(&mut buf, 20);
        buf[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF, offset 0
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.is_fragment() && p.more_frags() && p.has_upper_header());
        buf[6..8].copy_from_slice(&0x0003u16.to_be_bytes()); // last, offset 24
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.is_fragment() && !p.more_frags() && !p.has_upper_header());
        assert_eq!(p.frag_offset(), 24);
    }

    fn sample_len(buf: &mut [u8], payload: usize) {
        let mut r = sample();
        r.payload_len = payload;
        r.emit(buf).unwrap();
    }

    #[test]
    fn malformed_and_truncated() {
        let mut buf = [0u8; 40];
        sample_len(&mut buf, 20);
        assert!(Packet::new_checked(&buf[..]).is_ok());
        assert_eq!(
            Packet::new_checked(&buf[..39]).unwrap_err(),
            DropReason::Ipv4Truncated
        );
        assert_eq!(
            Packet::new_checked(&buf[..19]).unwrap_err(),
            DropReason::Ipv4Truncated
        );
        let mut v6 = buf;
        v6[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&v6[..]).unwrap_err(),
            DropReason::Ipv4Malformed
        );
        let mut ihl = buf;
        ihl[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&ihl[..]).unwrap_err(),
            DropReason::Ipv4Malformed
        );
        let mut short_total = buf;
        short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&short_total[..]).unwrap_err(),
            DropReason::Ipv4Malformed
        );
        let mut long_ihl = buf;
        long_ihl[0] = 0x4f; // 60-byte header in a 40-byte packet
        assert_eq!(
            Packet::new_checked(&long_ihl[..]).unwrap_err(),
            DropReason::Ipv4Malformed
        );
        let mut bad_sum = buf;
        bad_sum[15] ^= 1;
        assert!(!Packet::new_checked(&bad_sum[..]).unwrap().verify_checksum());
    }

    #[test]
    fn emit_rejects_small_buffer_and_huge_payload() {
        let mut small = [0u8; 19];
        assert!(sample().emit(&mut small).is_err());
        let mut buf = [0u8; 20];
        let mut r = sample();
        r.payload_len = 70_000;
        assert!(r.emit(&mut buf).is_err());
    }
}
