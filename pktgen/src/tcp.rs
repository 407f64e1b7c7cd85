//! A minimal TCP header (RFC 9293 §3.1) for the "TCP-like" traffic mode: a 20-byte header with
//! no options, written and checked here because the dataplane forwards TCP without parsing it
//! and so has no TCP view. The generator does not speak TCP; it only shapes packets like an
//! established connection's data segments (ACK set, sequence advancing by the payload length).

use std::net::{Ipv4Addr, Ipv6Addr};

use gatewan_dataplane::wire::checksum::{self, Checksum};
use gatewan_dataplane::wire::ip_proto;

pub const HEADER_LEN: usize = 20;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

pub mod off {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// What a 20-byte TCP header says, for building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

impl Repr {
    /// Writes the header at the start of `buf` with a zero checksum field (the caller fills it
    /// once the payload is in place). False when `buf` is shorter than the header.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(h) = buf.first_chunk_mut::<HEADER_LEN>() else {
            return false;
        };
        h[off::SRC_PORT..off::DST_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        h[off::DST_PORT..off::SEQ].copy_from_slice(&self.dst_port.to_be_bytes());
        h[off::SEQ..off::ACK].copy_from_slice(&self.seq.to_be_bytes());
        h[off::ACK..off::DATA_OFF].copy_from_slice(&self.ack.to_be_bytes());
        h[off::DATA_OFF] = ((HEADER_LEN / 4) as u8) << 4;
        h[off::FLAGS] = self.flags;
        h[off::WINDOW..off::CHECKSUM].copy_from_slice(&self.window.to_be_bytes());
        h[off::CHECKSUM..off::URGENT].copy_from_slice(&[0, 0]);
        h[off::URGENT..HEADER_LEN].copy_from_slice(&[0, 0]);
        true
    }
}

/// A checked view of a TCP segment (header and payload, up to the end of the IP payload).
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    buf: &'a [u8],
    header_len: usize,
}

/// The segment is shorter than its header, or its data offset is below 5 words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl<'a> Segment<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Malformed> {
        let h = buf.first_chunk::<HEADER_LEN>().ok_or(Malformed)?;
        let header_len = usize::from(h[off::DATA_OFF] >> 4) * 4;
        if header_len < HEADER_LEN || buf.len() < header_len {
            return Err(Malformed);
        }
        Ok(Self { buf, header_len })
    }

    fn u16_at(&self, o: usize) -> u16 {
        self.buf
            .get(o..)
            .and_then(|s| s.first_chunk::<2>())
            .map_or(0, |a| u16::from_be_bytes(*a))
    }

    fn u32_at(&self, o: usize) -> u32 {
        self.buf
            .get(o..)
            .and_then(|s| s.first_chunk::<4>())
            .map_or(0, |a| u32::from_be_bytes(*a))
    }

    pub fn src_port(&self) -> u16 {
        self.u16_at(off::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(off::DST_PORT)
    }
    pub fn seq(&self) -> u32 {
        self.u32_at(off::SEQ)
    }
    pub fn ack(&self) -> u32 {
        self.u32_at(off::ACK)
    }
    pub fn flags(&self) -> u8 {
        self.buf.get(off::FLAGS).copied().unwrap_or(0)
    }
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.header_len..).unwrap_or(&[])
    }

    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let Ok(len) = u16::try_from(self.buf.len()) else {
            return false;
        };
        let mut c = checksum::pseudo_header_v4(src, dst, ip_proto::TCP, len);
        c.add_bytes(self.buf).sum() == 0xffff
    }

    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let Ok(len) = u32::try_from(self.buf.len()) else {
            return false;
        };
        let mut c = checksum::pseudo_header_v6(src, dst, ip_proto::TCP, len);
        c.add_bytes(self.buf).sum() == 0xffff
    }
}

/// The checksum field value for `segment` (whose checksum field must be zero) under `pseudo`.
pub fn checksum(mut pseudo: Checksum, segment: &[u8]) -> u16 {
    pseudo.add_bytes(segment).finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn emit_and_verify() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut seg = [0u8; 28];
        let r = Repr {
            src_port: 1000,
            dst_port: 80,
            seq: 0xdead_beef,
            ack: 1,
            flags: flags::ACK,
            window: 0xffff,
        };
        assert!(r.emit(&mut seg));
        seg[20..].copy_from_slice(b"abcdefgh");
        let c = checksum(
            checksum::pseudo_header_v4(src, dst, ip_proto::TCP, 28),
            &seg,
        );
        seg[off::CHECKSUM..off::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        let s = Segment::new_checked(&seg[..]).expect("valid");
        assert_eq!((s.src_port(), s.dst_port()), (1000, 80));
        assert_eq!((s.seq(), s.ack(), s.flags()), (0xdead_beef, 1, flags::ACK));
        assert_eq!(s.payload(), b"abcdefgh");
        assert!(s.verify_checksum_v4(src, dst));
        assert!(!s.verify_checksum_v4(dst, Ipv4Addr::new(10, 0, 0, 3)));
        seg[25] ^= 1;
        assert!(!Segment::new_checked(&seg[..])
            .expect("valid")
            .verify_checksum_v4(src, dst));
    }

    #[test]
    fn malformed() {
        assert_eq!(Segment::new_checked(&[0u8; 19]).unwrap_err(), Malformed);
        let mut h = [0u8; 20];
        h[off::DATA_OFF] = 4 << 4;
        assert_eq!(Segment::new_checked(&h).unwrap_err(), Malformed);
        h[off::DATA_OFF] = 6 << 4; // 24-byte header in 20 bytes
        assert_eq!(Segment::new_checked(&h).unwrap_err(), Malformed);
        assert!(!Repr {
            src_port: 1,
            dst_port: 2,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 0
        }
        .emit(&mut [0u8; 19]));
    }
}
