//! VXLAN (RFC 7348 §5): an 8-byte header after UDP (destination port 4789).
//!
//! ```text
//! |R|R|R|R|I|R|R|R|            Reserved (24)            |
//! |            VXLAN Network Identifier (24)            | Reserved (8) |
//! ```
//! The I flag must be set for a valid VNI; the other flag bits and the reserved fields "MUST
//! be set to zero on transmission and ignored on receipt", so the parser ignores them.

use super::field::{set_array, set_u32, slice, slice_mut, u32_at, u8_at};
use super::{need, BufferTooSmall};
use crate::drop::DropReason;

pub const HEADER_LEN: usize = 8;
/// IANA-assigned VXLAN UDP port.
pub const PORT: u16 = 4789;
const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A zero-copy view of a VXLAN header and the inner Ethernet frame after it.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::VxlanTruncated);
        }
        if u8_at(b, 0) & FLAG_I == 0 {
            return Err(DropReason::VxlanMalformed);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn flags(&self) -> u8 {
        u8_at(self.buffer.as_ref(), 0)
    }

    pub fn vni(&self) -> u32 {
        u32_at(self.buffer.as_ref(), 4) >> 8
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        slice(b, HEADER_LEN, b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_vni(&mut self, vni: u32) {
        set_u32(self.buffer.as_mut(), 4, (vni & MAX_VNI) << 8);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        slice_mut(b, HEADER_LEN, len)
    }
}

/// What a VXLAN header says, for building one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// 24-bit VNI; higher bits are dropped on emit.
    pub vni: u32,
}

impl Repr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        need(buf.len(), HEADER_LEN)?;
        set_array(buf, 0, [FLAG_I, 0, 0, 0]);
        set_u32(buf, 4, (self.vni & MAX_VNI) << 8);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0xffu8; 20];
        Repr { vni: 0x00ab_cdef }.emit(&mut buf).unwrap();
        assert_eq!(&buf[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.vni(), 0x00ab_cdef);
        assert_eq!(p.payload().len(), 12);
        p.set_vni(10);
        assert_eq!(p.vni(), 10);
        p.payload_mut()[0] = 1;
        assert_eq!(buf[8], 1);
        // VNIs wider than 24 bits are truncated, never spilling into the reserved byte.
        Repr { vni: 0x0100_0001 }.emit(&mut buf).unwrap();
        assert_eq!(&buf[4..8], &[0, 0, 1, 0]);
    }

    #[test]
    fn reserved_bits_ignored_on_receipt() {
        let buf = [0xff, 0xff, 0xff, 0xff, 0, 0, 7, 0xff];
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.vni(), 7);
    }

    #[test]
    fn malformed_and_truncated() {
        assert_eq!(
            Packet::new_checked(&[0x08u8; 7][..]).unwrap_err(),
            DropReason::VxlanTruncated
        );
        assert_eq!(
            Packet::new_checked(&[0xf7u8, 0, 0, 0, 0, 0, 1, 0][..]).unwrap_err(),
            DropReason::VxlanMalformed
        );
        assert!(Repr { vni: 1 }.emit(&mut [0u8; 7]).is_err());
    }
}
