//! UDP (RFC 768) and its checksum over the IPv4 or IPv6 pseudo-header.
//!
//! Over IPv4 a zero checksum means "none" (RFC 768) and is accepted. Over IPv6 the checksum
//! is mandatory (RFC 8200 §8.1): a zero is a drop. RFC 6935/6936 allow zero-checksum UDP over
//! IPv6 for tunnels, but only by explicit configuration per port, and Linux VXLAN sends
//! checksums over IPv6 by default, so gatewan keeps the strict rule. A computed checksum of
//! zero is sent as 0xffff (RFC 768).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{self, Checksum};
use super::field::{set_u16, slice, slice_mut, u16_at};
use super::{ip_proto, need, BufferTooSmall};
use crate::drop::DropReason;

pub const HEADER_LEN: usize = 8;

mod off {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A zero-copy view of a UDP datagram. The buffer may extend past the datagram; the payload
/// stops at the length field.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::UdpTruncated);
        }
        let len = usize::from(u16_at(b, off::LEN));
        if len < HEADER_LEN {
            return Err(DropReason::UdpMalformed);
        }
        if b.len() < len {
            return Err(DropReason::UdpTruncated);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        u16_at(self.b(), off::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        u16_at(self.b(), off::DST_PORT)
    }

    /// Length field: header plus payload.
    pub fn len(&self) -> usize {
        usize::from(u16_at(self.b(), off::LEN))
    }

    /// Never true for a checked view (the length covers at least the header); here for
    /// clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), off::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        slice(self.b(), HEADER_LEN, self.len())
    }

    fn datagram(&self) -> &[u8] {
        slice(self.b(), 0, self.len())
    }

    /// Checksum over IPv4: a zero field (no checksum) is accepted.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len() as u16; // checked: len <= u16::MAX by construction
        let mut c = checksum::pseudo_header_v4(src, dst, ip_proto::UDP, len);
        c.add_bytes(self.datagram());
        c.sum() == 0xffff
    }

    /// Checksum over IPv6: mandatory, so zero fails.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let mut c = checksum::pseudo_header_v6(src, dst, ip_proto::UDP, self.len() as u32);
        c.add_bytes(self.datagram());
        c.sum() == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_src_port(&mut self, p: u16) {
        set_u16(self.bm(), off::SRC_PORT, p);
    }

    pub fn set_dst_port(&mut self, p: u16) {
        set_u16(self.bm(), off::DST_PORT, p);
    }

    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.bm(), off::CHECKSUM, c);
    }

    /// Computes and writes the checksum as the pseudo-header in `mode` says.
    pub fn fill_checksum(&mut self, mode: ChecksumMode) {
        self.set_checksum(0);
        let len = self.len();
        let c = match mode {
            ChecksumMode::None => 0,
            ChecksumMode::V4 { src, dst } => non_zero(
                checksum::pseudo_header_v4(src, dst, ip_proto::UDP, len as u16),
                self.datagram(),
            ),
            ChecksumMode::V6 { src, dst } => non_zero(
                checksum::pseudo_header_v6(&src, &dst, ip_proto::UDP, len as u32),
                self.datagram(),
            ),
        };
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        slice_mut(self.bm(), HEADER_LEN, len)
    }
}

fn non_zero(mut pseudo: Checksum, datagram: &[u8]) -> u16 {
    match pseudo.add_bytes(datagram).finish() {
        0 => 0xffff,
        c => c,
    }
}

/// Which checksum a built datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumMode {
    /// Zero: "no checksum", allowed over IPv4 only.
    None,
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
    },
}

/// What a UDP header says, for building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Writes the header at the start of `buf`, whose next `payload_len` bytes must already
    /// hold the payload, and the checksum over both. Returns the header length.
    pub fn emit(&self, buf: &mut [u8], mode: ChecksumMode) -> Result<usize, BufferTooSmall> {
        let total = HEADER_LEN + self.payload_len;
        need(buf.len(), total)?;
        let Ok(len) = u16::try_from(total) else {
            return Err(BufferTooSmall {
                need: total,
                have: usize::from(u16::MAX),
            });
        };
        set_u16(buf, off::SRC_PORT, self.src_port);
        set_u16(buf, off::DST_PORT, self.dst_port);
        set_u16(buf, off::LEN, len);
        let mut p = Packet { buffer: buf };
        p.fill_checksum(mode);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::ipv6;

    #[test]
    fn known_v4_checksum() {
        // 10.0.0.1:1234 -> 10.0.0.2:4789, "hello", against a word-by-word sum done by hand.
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut buf = [0u8; 13];
        buf[8..].copy_from_slice(b"hello");
        let r = Repr {
            src_port: 1234,
            dst_port: 4789,
            payload_len: 5,
        };
        r.emit(&mut buf, ChecksumMode::V4 { src, dst }).unwrap();
        // Independently: pseudo (0a00 0001 0a00 0002 0011 000d) + header (04d2 12b5 000d 0000)
        // + "hello" (6865 6c6c 6f00).
        let words: [u32; 15] = [
            0x0a00, 0x0001, 0x0a00, 0x0002, 0x0011, 0x000d, 0x04d2, 0x12b5, 0x000d, 0, 0x6865,
            0x6c6c, 0x6f00, 0, 0,
        ];
        let mut s: u32 = words.iter().sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let expect = !(s as u16);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.checksum(), expect);
        assert!(p.verify_checksum_v4(src, dst));
        assert!(!p.verify_checksum_v4(src, Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(p.payload(), b"hello");
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (1234, 4789, 13));
    }

    #[test]
    fn v4_zero_checksum_allowed_v6_not() {
        let mut buf = [0u8; 12];
        Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 4,
        }
        .emit(&mut buf, ChecksumMode::None)
        .unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.checksum(), 0);
        assert!(p.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
        assert!(!p.verify_checksum_v6(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn v6_checksum_in_a_full_packet() {
        let src: Ipv6Addr = "2620:100:a006::c".parse().unwrap();
        let dst: Ipv6Addr = "2406:2600:a::1".parse().unwrap();
        let mut buf = [0u8; 40 + 8 + 32];
        buf[48..].fill(0x5a);
        ipv6::Repr {
            src,
            dst,
            next_header: ip_proto::UDP,
            payload_len: 40,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut buf)
        .unwrap();
        Repr {
            src_port: 6152,
            dst_port: 6215,
            payload_len: 32,
        }
        .emit(&mut buf[40..], ChecksumMode::V6 { src, dst })
        .unwrap();
        let ip = ipv6::Packet::new_checked(&buf[..]).unwrap();
        let udp = Packet::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum_v6(&src, &dst));
        // Whole-packet property: pseudo-header + datagram sums to 0xffff.
        let mut c = ip.pseudo_header(ip_proto::UDP, 40);
        c.add_bytes(ip.payload());
        assert_eq!(c.sum(), 0xffff);
        // A flipped payload bit is caught.
        buf[60] ^= 0x10;
        let ip = ipv6::Packet::new_checked(&buf[..]).unwrap();
        let udp = Packet::new_checked(ip.payload()).unwrap();
        assert!(!udp.verify_checksum_v6(&src, &dst));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Pick a payload word that makes the sum 0xffff, so the checksum computes to 0.
        let src = Ipv4Addr::new(0, 0, 0, 0);
        let dst = Ipv4Addr::new(0, 0, 0, 0);
        let mut buf = [0u8; 10];
        let r = Repr {
            src_port: 0,
            dst_port: 0,
            payload_len: 2,
        };
        // Pseudo: 0x0011 + 0x000a; header: len 0x000a. Need payload word w with total 0xffff.
        let w: u16 = 0xffff - 0x0011 - 0x000a - 0x000a;
        buf[8..].copy_from_slice(&w.to_be_bytes());
        r.emit(&mut buf, ChecksumMode::V4 { src, dst }).unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum_v4(src, dst));
    }

    #[test]
    fn malformed_and_truncated() {
        let mut buf = [0u8; 16];
        buf[4..6].copy_from_slice(&16u16.to_be_bytes());
        assert!(Packet::new_checked(&buf[..]).is_ok());
        assert_eq!(
            Packet::new_checked(&buf[..15]).unwrap_err(),
            DropReason::UdpTruncated
        );
        assert_eq!(
            Packet::new_checked(&buf[..7]).unwrap_err(),
            DropReason::UdpTruncated
        );
        buf[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            DropReason::UdpMalformed
        );
        let r = Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 9,
        };
        assert!(r.emit(&mut buf, ChecksumMode::None).is_err());
    }
}
