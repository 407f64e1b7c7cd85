//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The ones' complement sum does not depend on byte order (RFC 1071 §2(B)), so [`sum`] adds
//! the data as native-endian 32-bit words into 64-bit accumulators (no carry handling in the
//! loop, which the compiler vectorises) and swaps once at the end. A packet needs
//! 2^32 words before an accumulator could overflow, far beyond any IP length.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a 64-bit ones' complement accumulator to 16 bits (end-around carry).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Ones' complement sum of `data` as big-endian 16-bit words, folded to 16 bits (not
/// complemented). An odd trailing byte is padded with a zero, as RFC 1071 says.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let (words, rest) = data.as_chunks::<4>();
    // Four independent accumulators keep the adds from chaining on one register.
    let mut acc = [0u64; 4];
    let (quads, tail) = words.as_chunks::<4>();
    for q in quads {
        for (a, w) in acc.iter_mut().zip(q.iter()) {
            *a += u64::from(u32::from_ne_bytes(*w));
        }
    }
    let mut s = acc.iter().sum::<u64>();
    for w in tail {
        s += u64::from(u32::from_ne_bytes(*w));
    }
    let (pairs, last) = rest.as_chunks::<2>();
    for p in pairs {
        s += u64::from(u16::from_ne_bytes(*p));
    }
    if let Some(b) = last.first() {
        // A lone byte is the high half of a big-endian word; in native order it sits where
        // its first byte would.
        s += u64::from(u16::from_ne_bytes([*b, 0]));
    }
    // Native-order words summed to a native-order result; bring it back to big-endian.
    u16::from_be(fold(s))
}

/// A running ones' complement sum over several pieces (pseudo-header, header, payload).
///
/// Each piece passed to [`Checksum::add_bytes`] must start at an even offset of the
/// checksummed data: only the last piece may have an odd length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    acc: u64,
}

impl Checksum {
    pub const fn new() -> Self {
        Self { acc: 0 }
    }

    #[inline]
    pub fn add_u16(&mut self, v: u16) -> &mut Self {
        self.acc += u64::from(v);
        self
    }

    #[inline]
    pub fn add_u32(&mut self, v: u32) -> &mut Self {
        self.acc += u64::from(v >> 16) + u64::from(v & 0xffff);
        self
    }

    #[inline]
    pub fn add_bytes(&mut self, data: &[u8]) -> &mut Self {
        self.acc += u64::from(sum(data));
        self
    }

    /// The folded sum, not complemented. A region that includes a correct checksum field
    /// sums to `0xffff`.
    #[inline]
    pub fn sum(&self) -> u16 {
        fold(self.acc)
    }

    /// The checksum field value: the complement of the folded sum.
    #[inline]
    pub fn finish(&self) -> u16 {
        !self.sum()
    }
}

/// IPv4 pseudo-header (RFC 768 / RFC 793) for an upper-layer checksum.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add_u32(src.to_bits())
        .add_u32(dst.to_bits())
        .add_u16(u16::from(protocol))
        .add_u16(len);
    c
}

/// IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer checksum.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> Checksum {
    let mut c = Checksum::new();
    for w in src.segments().into_iter().chain(dst.segments()) {
        c.add_u16(w);
    }
    c.add_u32(len).add_u16(u16::from(next_header));
    c
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changes from
/// `old` to `new`: `HC' = ~(~HC + ~m + m')`. This form never produces the -0 (0xffff→0x0000)
/// ambiguity of RFC 1141's `HC' = HC + m - m'`.
#[inline]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let s = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(s)
}

/// RFC 1624 update for a 32-bit field (e.g. an IPv4 address), as two 16-bit words.
#[inline]
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let s = u64::from(!check)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from(new >> 16)
        + u64::from(new as u16);
    !fold(s)
}

/// The straightforward RFC 1071 loop, kept as the reference for tests and the baseline the
/// checksum benchmark reports its ratio against.
pub fn sum_reference(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    let mut it = data.chunks(2);
    for c in &mut it {
        let hi = u32::from(c.first().copied().unwrap_or(0));
        let lo = u32::from(c.get(1).copied().unwrap_or(0));
        s += (hi << 8) | lo;
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(sum_reference(&data), 0xddf2);
        assert_eq!(Checksum::new().add_bytes(&data).finish(), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic sample header; its checksum field (0xb861) is correct.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(sum(&hdr), 0xffff);
        let mut z = hdr;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(Checksum::new().add_bytes(&z).finish(), 0xb861);
    }

    #[test]
    fn odd_lengths_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn ttl_decrement_matches_full_recompute() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        for _ in 0..0x40 {
            let old = u16::from_be_bytes([hdr[8], hdr[9]]);
            hdr[8] -= 1;
            let new = u16::from_be_bytes([hdr[8], hdr[9]]);
            let c = update_u16(u16::from_be_bytes([hdr[10], hdr[11]]), old, new);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(sum(&hdr), 0xffff, "ttl {}", hdr[8]);
        }
    }

    proptest! {
        #[test]
        fn fast_sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            // End-around carry never turns a non-zero sum into +0, so both agree exactly.
            prop_assert_eq!(sum(&data), sum_reference(&data));
        }

        #[test]
        fn split_sums_add_up(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            let cut = (cut * 2).min(data.len() & !1);
            let mut c = Checksum::new();
            c.add_bytes(&data[..cut]).add_bytes(&data[cut..]);
            // Equal as ones' complement numbers (0x0000 and 0xffff both mean zero).
            let whole = Checksum::new().add_bytes(&data).sum();
            prop_assert_eq!(c.sum() % 0xffff, whole % 0xffff);
        }

        #[test]
        fn incremental_update_matches_recompute(
            data in proptest::collection::vec(any::<u8>(), 2..200),
            idx in 0usize..100,
            new16 in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            let mut data = data;
            if data.len() % 2 == 1 { data.push(0); }
            let words = data.len() / 2;
            let i = (idx % words) * 2;
            let check = Checksum::new().add_bytes(&data).finish();
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new16.to_be_bytes());
            let upd = update_u16(check, old, new16);
            let full = Checksum::new().add_bytes(&data).finish();
            // Both must verify: the data plus the checksum word sums to 0xffff (-0).
            prop_assert_eq!(fold(u64::from(sum(&data)) + u64::from(upd)), 0xffff);
            prop_assert_eq!(fold(u64::from(sum(&data)) + u64::from(full)), 0xffff);

            if data.len() >= 4 {
                let j = (idx % (data.len() / 4)) * 4;
                let check = Checksum::new().add_bytes(&data).finish();
                let old = u32::from_be_bytes(data[j..j + 4].try_into().unwrap());
                data[j..j + 4].copy_from_slice(&new32.to_be_bytes());
                let upd = update_u32(check, old, new32);
                prop_assert_eq!(fold(u64::from(sum(&data)) + u64::from(upd)), 0xffff);
            }
        }
    }
}
