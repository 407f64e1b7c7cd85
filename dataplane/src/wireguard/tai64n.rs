//! TAI64N timestamps (12 bytes: big-endian 2^62 + 10 + Unix seconds, then big-endian
//! nanoseconds), carried encrypted in handshake initiations so a responder can refuse a
//! replayed initiation. Hand-written: it is two integers, and the protocol needs the
//! nanoseconds rounded down (below) which a general TAI64 crate would not do.

use super::time::Instant;

/// Length of a TAI64N label.
pub const TAI64N_LEN: usize = 12;

/// Nanoseconds are rounded down to a multiple of 2^24 ns (about 16.8 ms), the largest power of
/// two below the 20 ms between two initiations the protocol allows: precise enough to order
/// initiations, coarse enough not to leak fine timer values to an observer of the peer.
const NANOS_GRANULARITY: u32 = 1 << 24;

/// Offset of the Unix epoch in TAI64 labels (2^62) plus the 10 s TAI-UTC difference in 1970.
const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;

/// A TAI64N label. Byte order is big endian, so byte-wise order is time order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tai64N(pub [u8; TAI64N_LEN]);

impl Tai64N {
    /// The (rounded) label of an instant.
    pub fn from_instant(now: Instant) -> Self {
        let since = now.since_unix_epoch();
        let secs = TAI64_EPOCH.wrapping_add(since.as_secs());
        let nanos = since.subsec_nanos() & !(NANOS_GRANULARITY - 1);
        let mut out = [0u8; TAI64N_LEN];
        out[..8].copy_from_slice(&secs.to_be_bytes());
        out[8..].copy_from_slice(&nanos.to_be_bytes());
        Tai64N(out)
    }

    /// The raw 12 bytes.
    pub fn as_bytes(&self) -> &[u8; TAI64N_LEN] {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn layout_and_rounding() {
        let t = Instant::from_secs(1_700_000_000) + Duration::from_nanos(123_456_789);
        let l = Tai64N::from_instant(t);
        assert_eq!(
            &l.0[..8],
            &(0x4000_0000_0000_000au64 + 1_700_000_000).to_be_bytes()
        );
        let nanos = u32::from_be_bytes([l.0[8], l.0[9], l.0[10], l.0[11]]);
        assert_eq!(nanos, 123_456_789 & !((1 << 24) - 1));
        assert_eq!(nanos % (1 << 24), 0);
    }

    #[test]
    fn order_follows_time() {
        let a = Tai64N::from_instant(Instant::from_secs(100));
        let b = Tai64N::from_instant(Instant::from_secs(100) + Duration::from_millis(20));
        let c = Tai64N::from_instant(Instant::from_secs(101));
        assert!(a < b && b < c);
        // Two instants within one granule give the same label.
        let d = Tai64N::from_instant(Instant::from_secs(100) + Duration::from_millis(10));
        assert_eq!(a, d);
    }
}
