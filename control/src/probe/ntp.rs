//! NTP 64-bit timestamps (RFC 5905: seconds since 1900 and a 32-bit fraction) and the STAMP
//! Error Estimate field (RFC 4656 section 4.1.2, Z bit from RFC 8186).
//!
//! Wall-clock time only travels on the wire for interoperability; gatewan computes round-trip
//! times from the monotonic clock, so a clock step never distorts a measurement.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp as carried in STAMP packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// The wall-clock time `t` (times before 1970 map to the epoch).
    pub fn from_system_time(t: SystemTime) -> Self {
        let since_unix = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp((secs << 32) | frac)
    }

    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// `self - earlier`, or `None` when `earlier` is later (a clock step on the far side).
    /// Era wrap-around is handled by the modular difference.
    pub fn since(self, earlier: NtpTimestamp) -> Option<Duration> {
        let diff = self.0.wrapping_sub(earlier.0);
        // More than half the era apart means "earlier" is in fact in the future.
        if diff >= 1 << 63 {
            return None;
        }
        let secs = diff >> 32;
        let nanos = ((diff & 0xffff_ffff) * 1_000_000_000) >> 32;
        Some(Duration::new(secs, nanos as u32))
    }
}

/// The Error Estimate field: S (clock synchronised to UTC), Z (0 = NTP format), and the error
/// as `multiplier * 2^(scale - 32)` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEstimate(pub u16);

impl ErrorEstimate {
    /// Unsynchronised NTP-format clock with an error of about 1 ms (multiplier 1, scale 22),
    /// what a gateway without external time sync honestly claims.
    pub const UNSYNCHRONISED: ErrorEstimate = ErrorEstimate::new(false, false, 22, 1);

    pub const fn new(synchronized: bool, ptp: bool, scale: u8, multiplier: u8) -> Self {
        let s = if synchronized { 0x8000 } else { 0 };
        let z = if ptp { 0x4000 } else { 0 };
        ErrorEstimate(s | z | (((scale & 0x3f) as u16) << 8) | multiplier as u16)
    }

    pub fn synchronized(self) -> bool {
        self.0 & 0x8000 != 0
    }

    /// Whether timestamps are in PTPv2 truncated format rather than NTP.
    pub fn ptp(self) -> bool {
        self.0 & 0x4000 != 0
    }

    /// The estimated error. The RFC forbids a zero multiplier; it reads as "unknown" (None).
    pub fn error(self) -> Option<Duration> {
        let multiplier = u64::from(self.0 & 0xff);
        if multiplier == 0 {
            return None;
        }
        let scale = i32::from((self.0 >> 8) & 0x3f);
        Some(Duration::from_secs_f64(
            multiplier as f64 * 2f64.powi(scale - 32),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_is_ntp_2208988800() {
        assert_eq!(
            NtpTimestamp::from_system_time(UNIX_EPOCH).0,
            NTP_UNIX_OFFSET << 32
        );
        let half = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(
            NtpTimestamp::from_system_time(half).0,
            ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31)
        );
    }

    #[test]
    fn differences_are_exact_enough_and_reject_negative_spans() {
        let t1 = NtpTimestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(1_000_000));
        let t2 =
            NtpTimestamp::from_system_time(UNIX_EPOCH + Duration::from_micros(1_000_000_000_250));
        let d = t2.since(t1).expect("forward");
        assert!((d.as_nanos() as i128 - 250_000).abs() <= 1, "{d:?}");
        assert_eq!(t1.since(t2), None);
        // Across the era boundary (2036): still a small positive difference.
        let before = NtpTimestamp(0xffff_ffff_0000_0000);
        let after = NtpTimestamp(0x0000_0001_0000_0000);
        assert_eq!(after.since(before), Some(Duration::from_secs(2)));
    }

    #[test]
    fn error_estimate_fields() {
        let e = ErrorEstimate::new(true, false, 22, 1);
        assert!(e.synchronized() && !e.ptp());
        let err = e.error().expect("non-zero multiplier");
        assert!((err.as_secs_f64() - 2f64.powi(-10)).abs() < 1e-9);
        assert_eq!(ErrorEstimate(0x0100).error(), None);
        assert!(ErrorEstimate(0x4001).ptp());
    }
}
