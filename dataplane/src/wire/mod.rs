//! Zero-copy views of the headers gatewan forwards, one module per header.
//!
//! Every view is a typed wrapper over a byte buffer (`T: AsRef<[u8]>`, mutable when
//! `T: AsMut<[u8]>`), in the style of smoltcp's `wire` module: `new_checked` validates lengths
//! and the fields that decide where the next header starts, and fails with the
//! [`DropReason`](crate::drop::DropReason) the packet is counted under; accessors then read
//! fields in place. Builders (`Repr::emit` and friends) write headers in place into a caller
//! buffer, with correct checksums, and never allocate. Nothing here panics on any input: field
//! reads go through the bounds-checked helpers below, and a proptest feeds random bytes through
//! every parser. See docs/wire.md.

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod udp;
pub mod vxlan;
pub mod wireguard;

/// IP protocol numbers used by gatewan.
pub mod ip_proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NO_NEXT: u8 = 59;
    pub const IPV6_DEST_OPTS: u8 = 60;
    pub const SCTP: u8 = 132;
}

/// Field access that cannot panic. Views check lengths in `new_checked`, so the fallbacks
/// (0 on read, no-op on write) are unreachable for a checked view; they exist so that no input
/// and no misuse can turn a field access into a panic.
pub(crate) mod field {
    #[inline(always)]
    pub fn u8_at(b: &[u8], off: usize) -> u8 {
        b.get(off).copied().unwrap_or(0)
    }

    #[inline(always)]
    pub fn u16_at(b: &[u8], off: usize) -> u16 {
        b.get(off..)
            .and_then(|s| s.first_chunk::<2>())
            .map_or(0, |a| u16::from_be_bytes(*a))
    }

    #[inline(always)]
    pub fn u32_at(b: &[u8], off: usize) -> u32 {
        b.get(off..)
            .and_then(|s| s.first_chunk::<4>())
            .map_or(0, |a| u32::from_be_bytes(*a))
    }

    #[inline(always)]
    pub fn u32_le_at(b: &[u8], off: usize) -> u32 {
        b.get(off..)
            .and_then(|s| s.first_chunk::<4>())
            .map_or(0, |a| u32::from_le_bytes(*a))
    }

    #[inline(always)]
    pub fn u64_le_at(b: &[u8], off: usize) -> u64 {
        b.get(off..)
            .and_then(|s| s.first_chunk::<8>())
            .map_or(0, |a| u64::from_le_bytes(*a))
    }

    #[inline(always)]
    pub fn array_at<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
        b.get(off..)
            .and_then(|s| s.first_chunk::<N>())
            .copied()
            .unwrap_or([0; N])
    }

    #[inline(always)]
    pub fn set_u8(b: &mut [u8], off: usize, v: u8) {
        if let Some(x) = b.get_mut(off) {
            *x = v;
        }
    }

    #[inline(always)]
    pub fn set_u16(b: &mut [u8], off: usize, v: u16) {
        set_array(b, off, v.to_be_bytes());
    }

    #[inline(always)]
    pub fn set_u32(b: &mut [u8], off: usize, v: u32) {
        set_array(b, off, v.to_be_bytes());
    }

    #[inline(always)]
    pub fn set_array<const N: usize>(b: &mut [u8], off: usize, v: [u8; N]) {
        if let Some(s) = b.get_mut(off..).and_then(|s| s.first_chunk_mut::<N>()) {
            *s = v;
        }
    }

    /// `b[from..to]`, or empty when out of range.
    #[inline(always)]
    pub fn slice(b: &[u8], from: usize, to: usize) -> &[u8] {
        b.get(from..to).unwrap_or(&[])
    }

    /// `b[from..to]`, or empty when out of range.
    #[inline(always)]
    pub fn slice_mut(b: &mut [u8], from: usize, to: usize) -> &mut [u8] {
        match b.get_mut(from..to) {
            Some(s) => s,
            None => &mut [],
        }
    }
}

/// A builder was handed a buffer too small for what it must write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("buffer too small: need {need} bytes, have {have}")]
pub struct BufferTooSmall {
    pub need: usize,
    pub have: usize,
}

#[inline]
pub(crate) fn need(buf_len: usize, need: usize) -> Result<(), BufferTooSmall> {
    if buf_len < need {
        Err(BufferTooSmall {
            need,
            have: buf_len,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod fuzz;
