//! STAMP test packets (RFC 8762, unauthenticated mode) as zero-copy views, and the stateful
//! Session-Reflector gatewan runs on every tunnel's echo port.
//!
//! Session-Sender packet (44 octets): sequence number (4), timestamp (8), error estimate (2),
//! MBZ (30; RFC 8972 reuses its first two octets as the SSID, which gatewan leaves zero).
//! Session-Reflector packet (44 octets): sequence number (4), timestamp (8), error estimate (2),
//! MBZ (2), receive timestamp (8), session-sender sequence number (4), timestamp (8) and error
//! estimate (2), MBZ (2), session-sender TTL (1), MBZ (3).
//! Longer packets (padding or RFC 8972 TLVs) are accepted; the reflector answers with the same
//! length, as RFC 8762 asks, zero-filling what it does not interpret.

use std::collections::HashMap;
use std::hash::Hash;

use thiserror::Error;

use super::ntp::{ErrorEstimate, NtpTimestamp};

/// Size of both packets in unauthenticated mode.
pub const PACKET_LEN: usize = 44;

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum StampError {
    #[error("STAMP packet of {0} octets is shorter than {PACKET_LEN}")]
    Truncated(usize),
    #[error("output buffer of {have} octets cannot hold a {need}-octet reply")]
    BufferTooSmall { have: usize, need: usize },
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(bytes)
}

/// A Session-Sender test packet; the constructor checks the length, so accessors cannot fail.
#[derive(Clone, Copy, Debug)]
pub struct SenderPacket<'a>(&'a [u8]);

impl<'a> SenderPacket<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, StampError> {
        if bytes.len() < PACKET_LEN {
            return Err(StampError::Truncated(bytes.len()));
        }
        Ok(SenderPacket(bytes))
    }

    pub fn sequence(&self) -> u32 {
        be_u32(self.0, 0)
    }

    pub fn timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be_u64(self.0, 4))
    }

    pub fn error_estimate(&self) -> ErrorEstimate {
        ErrorEstimate(be_u16(self.0, 12))
    }

    /// Writes a 44-octet sender packet into `out`; returns its length.
    pub fn build(
        out: &mut [u8],
        sequence: u32,
        timestamp: NtpTimestamp,
    ) -> Result<usize, StampError> {
        let have = out.len();
        let out = out
            .get_mut(..PACKET_LEN)
            .ok_or(StampError::BufferTooSmall {
                have,
                need: PACKET_LEN,
            })?;
        out.fill(0);
        out[0..4].copy_from_slice(&sequence.to_be_bytes());
        out[4..12].copy_from_slice(&timestamp.0.to_be_bytes());
        out[12..14].copy_from_slice(&ErrorEstimate::UNSYNCHRONISED.0.to_be_bytes());
        Ok(PACKET_LEN)
    }
}

/// A Session-Reflector test packet.
#[derive(Clone, Copy, Debug)]
pub struct ReflectorPacket<'a>(&'a [u8]);

impl<'a> ReflectorPacket<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, StampError> {
        if bytes.len() < PACKET_LEN {
            return Err(StampError::Truncated(bytes.len()));
        }
        Ok(ReflectorPacket(bytes))
    }

    /// The reflector's own sequence number (per session: it counts the replies it sent).
    pub fn sequence(&self) -> u32 {
        be_u32(self.0, 0)
    }

    /// When the reflector sent this reply (its clock).
    pub fn timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be_u64(self.0, 4))
    }

    /// When the reflector received the test packet (its clock).
    pub fn receive_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be_u64(self.0, 16))
    }

    pub fn sender_sequence(&self) -> u32 {
        be_u32(self.0, 24)
    }

    pub fn sender_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be_u64(self.0, 28))
    }

    pub fn sender_error_estimate(&self) -> ErrorEstimate {
        ErrorEstimate(be_u16(self.0, 36))
    }

    pub fn sender_ttl(&self) -> u8 {
        self.0[40]
    }

    /// How long the packet stayed in the reflector, from the reflector's own two timestamps
    /// (so the clocks need not be synchronised). `None` if its clock stepped backwards.
    pub fn residence(&self) -> Option<std::time::Duration> {
        self.timestamp().since(self.receive_timestamp())
    }
}

/// The stateful Session-Reflector (RFC 8762 section 4.3.2): one sequence counter per session.
/// `K` identifies a session, e.g. (tunnel, sender address and port).
pub struct Reflector<K> {
    sessions: HashMap<K, u32>,
    max_sessions: usize,
    /// Test packets too short to be STAMP, answered with nothing.
    pub malformed: u64,
    pub reflected: u64,
}

impl<K: Hash + Eq> Reflector<K> {
    /// A reflector that remembers at most `max_sessions` sessions; beyond that it starts over,
    /// so a flood of spoofed senders cannot grow its memory.
    pub fn new(max_sessions: usize) -> Self {
        Reflector {
            sessions: HashMap::new(),
            max_sessions: max_sessions.max(1),
            malformed: 0,
            reflected: 0,
        }
    }

    /// Builds the reply to `request` in `out` and returns its length (that of the request).
    /// `received` is when the request arrived, `sending` when the reply leaves (both wall
    /// clock); `ttl` is the request's IP TTL or hop limit as received.
    pub fn reflect(
        &mut self,
        session: K,
        request: &[u8],
        received: NtpTimestamp,
        sending: NtpTimestamp,
        ttl: u8,
        out: &mut [u8],
    ) -> Result<usize, StampError> {
        let sender = match SenderPacket::new_checked(request) {
            Ok(sender) => sender,
            Err(e) => {
                self.malformed += 1;
                return Err(e);
            }
        };
        let len = request.len();
        let have = out.len();
        let out = out
            .get_mut(..len)
            .ok_or(StampError::BufferTooSmall { have, need: len })?;
        if self.sessions.len() >= self.max_sessions && !self.sessions.contains_key(&session) {
            self.sessions.clear();
        }
        let counter = self.sessions.entry(session).or_insert(0);
        let sequence = *counter;
        *counter = counter.wrapping_add(1);
        out.fill(0);
        out[0..4].copy_from_slice(&sequence.to_be_bytes());
        out[4..12].copy_from_slice(&sending.0.to_be_bytes());
        out[12..14].copy_from_slice(&ErrorEstimate::UNSYNCHRONISED.0.to_be_bytes());
        out[16..24].copy_from_slice(&received.0.to_be_bytes());
        out[24..28].copy_from_slice(&sender.sequence().to_be_bytes());
        out[28..36].copy_from_slice(&sender.timestamp().0.to_be_bytes());
        out[36..38].copy_from_slice(&sender.error_estimate().0.to_be_bytes());
        out[40] = ttl;
        self.reflected += 1;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ts(secs: u64, micros: u64) -> NtpTimestamp {
        NtpTimestamp::from_system_time(
            std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
        )
    }

    #[test]
    fn sender_packet_layout() {
        let mut buf = [0xaa; 64];
        let len = SenderPacket::build(&mut buf, 0x0102_0304, NtpTimestamp(0x1122_3344_5566_7788))
            .expect("fits");
        assert_eq!(len, 44);
        assert_eq!(&buf[0..4], &[1, 2, 3, 4]);
        assert_eq!(
            &buf[4..12],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(
            u16::from_be_bytes([buf[12], buf[13]]),
            ErrorEstimate::UNSYNCHRONISED.0
        );
        assert!(buf[14..44].iter().all(|&b| b == 0), "MBZ must be zero");
        let view = SenderPacket::new_checked(&buf[..len]).expect("valid");
        assert_eq!(view.sequence(), 0x0102_0304);
        assert_eq!(view.timestamp(), NtpTimestamp(0x1122_3344_5566_7788));
        assert_eq!(
            SenderPacket::build(&mut [0u8; 43], 1, NtpTimestamp(0)),
            Err(StampError::BufferTooSmall { have: 43, need: 44 })
        );
    }

    #[test]
    fn reflector_echoes_the_sender_fields_and_counts_per_session() {
        let mut reflector = Reflector::new(16);
        let mut request = [0u8; 44];
        SenderPacket::build(&mut request, 77, ts(100, 0)).expect("fits");
        let mut reply = [0xffu8; 44];
        let (rx, tx) = (ts(100, 40_000), ts(100, 40_250));
        for expected_seq in 0..3u32 {
            let len = reflector
                .reflect("tunnel-a", &request, rx, tx, 61, &mut reply)
                .expect("reflect");
            assert_eq!(len, 44);
            let view = ReflectorPacket::new_checked(&reply).expect("valid");
            assert_eq!(
                view.sequence(),
                expected_seq,
                "stateful: the reflector counts its replies"
            );
            assert_eq!(view.sender_sequence(), 77);
            assert_eq!(view.sender_timestamp(), ts(100, 0));
            assert_eq!(view.sender_error_estimate(), ErrorEstimate::UNSYNCHRONISED);
            assert_eq!(view.receive_timestamp(), rx);
            assert_eq!(view.timestamp(), tx);
            assert_eq!(view.sender_ttl(), 61);
            let residence = view.residence().expect("forward");
            assert!((residence.as_nanos() as i64 - 250_000).abs() <= 1);
            assert_eq!(&reply[14..16], &[0, 0]);
            assert_eq!(&reply[38..40], &[0, 0]);
            assert_eq!(&reply[41..44], &[0, 0, 0]);
        }
        let other = reflector
            .reflect("tunnel-b", &request, rx, tx, 64, &mut reply)
            .expect("reflect");
        assert_eq!(other, 44);
        assert_eq!(
            ReflectorPacket::new_checked(&reply)
                .expect("valid")
                .sequence(),
            0,
            "separate session"
        );
    }

    #[test]
    fn reflector_answers_longer_packets_with_the_same_length_and_rejects_short_ones() {
        let mut reflector = Reflector::new(4);
        let mut request = [0x5au8; 60];
        SenderPacket::build(&mut request, 1, ts(1, 0)).expect("fits");
        let mut reply = [0xffu8; 128];
        assert_eq!(
            reflector.reflect(1u8, &request, ts(1, 1), ts(1, 2), 64, &mut reply),
            Ok(60)
        );
        assert!(reply[44..60].iter().all(|&b| b == 0));
        assert_eq!(
            reflector.reflect(1u8, &request[..43], ts(1, 1), ts(1, 2), 64, &mut reply),
            Err(StampError::Truncated(43))
        );
        assert_eq!(reflector.malformed, 1);
        assert_eq!(
            reflector.reflect(1u8, &request, ts(1, 1), ts(1, 2), 64, &mut reply[..50]),
            Err(StampError::BufferTooSmall { have: 50, need: 60 })
        );
    }

    #[test]
    fn reflector_memory_is_bounded() {
        let mut reflector = Reflector::new(8);
        let mut request = [0u8; 44];
        SenderPacket::build(&mut request, 1, ts(1, 0)).expect("fits");
        let mut reply = [0u8; 44];
        for session in 0..1000u32 {
            reflector
                .reflect(session, &request, ts(1, 0), ts(1, 0), 64, &mut reply)
                .expect("reflect");
            assert!(reflector.sessions.len() <= 8);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut reflector = Reflector::new(4);
        let mut reply = [0u8; 256];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = reflector.reflect(0u8, &bytes, ts(1, 0), ts(1, 0), 1, &mut reply);
            if let Ok(view) = ReflectorPacket::new_checked(&bytes) {
                let _ = (
                    view.residence(),
                    view.sender_error_estimate().error(),
                    view.sender_ttl(),
                );
            }
        }
    }
}
