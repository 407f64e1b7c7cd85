//! The protocol's constants and the per-tunnel timers, as deadlines on the caller's clock.
//!
//! Timers are plain `Option<Instant>` deadlines: the tunnel arms and disarms them on events,
//! and [`Tunnel::tick`](super::Tunnel::tick) fires the expired ones. Nothing sleeps.

use core::time::Duration;
use rand_core::CryptoRngCore;

use super::time::Instant;

/// An initiator starts a new handshake when its session is this old (on sending).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A session is not used for sending or receiving past this age.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Retries of a handshake stop after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Delay before retrying an unanswered initiation (plus jitter); also the minimum gap
/// between two initiations.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to REKEY_TIMEOUT-based timers.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(334);
/// A keepalive is sent this long after receiving data if nothing was sent back.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Initiations from one peer are not processed more often than this (50 per second).
pub const INITIATION_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// Keys are wiped when no new session was derived for this long.
pub const ZERO_KEYS_AFTER: Duration = Duration::from_secs(3 * 180);
/// An initiator whose received-on session is this old rekeys once ("last minute").
pub const REKEY_AFTER_TIME_RECEIVING: Duration = Duration::from_secs(180 - 10 - 5);
/// A session is renewed after this many messages sent (2^60).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// A session refuses to send or receive counter values from here on (2^64 - 2^13 - 1).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// Random jitter in `[0, REKEY_TIMEOUT_JITTER_MAX)`, at millisecond grain.
pub fn jitter(rng: &mut dyn CryptoRngCore) -> Duration {
    let max = REKEY_TIMEOUT_JITTER_MAX.as_millis() as u32;
    Duration::from_millis(u64::from(rng.next_u32() % max))
}

/// The deadlines of one tunnel (see the table in docs/wireguard.md).
#[derive(Debug, Clone, Default)]
pub struct Timers {
    /// Resend the initiation: REKEY_TIMEOUT + jitter after sending one.
    pub retransmit_handshake: Option<Instant>,
    /// Send a keepalive: KEEPALIVE_TIMEOUT after receiving data with nothing sent back.
    pub send_keepalive: Option<Instant>,
    /// Another keepalive is owed once the pending one fires.
    pub need_another_keepalive: bool,
    /// Start a handshake: KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter after sending data
    /// with nothing received since.
    pub new_handshake: Option<Instant>,
    /// Wipe every key: ZERO_KEYS_AFTER after the last session was derived.
    pub zero_key_material: Option<Instant>,
    /// Persistent keepalive: interval after the last authenticated packet either way.
    pub persistent_keepalive: Option<Instant>,
}

impl Timers {
    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Takes a deadline out if it has passed.
pub(crate) fn expired(slot: &mut Option<Instant>, now: Instant) -> bool {
    match slot {
        Some(at) if *at <= now => {
            *slot = None;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn constants_match_the_protocol() {
        assert_eq!(
            u128::from(REJECT_AFTER_MESSAGES),
            (1u128 << 64) - (1 << 13) - 1
        );
        assert_eq!(REKEY_AFTER_MESSAGES, 1u64 << 60);
        assert_eq!(
            REKEY_AFTER_TIME_RECEIVING,
            REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        );
        assert_eq!(ZERO_KEYS_AFTER, REJECT_AFTER_TIME * 3);
    }

    #[test]
    fn jitter_is_bounded_and_varies() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let js: Vec<Duration> = (0..200).map(|_| jitter(&mut rng)).collect();
        assert!(js.iter().all(|j| *j < REKEY_TIMEOUT_JITTER_MAX));
        assert!(js.iter().any(|j| *j != js[0]));
    }

    #[test]
    fn deadlines() {
        let mut t = Timers::default();
        assert_eq!(t.next_deadline(), None);
        t.new_handshake = Some(Instant::from_secs(20));
        t.send_keepalive = Some(Instant::from_secs(10));
        assert_eq!(t.next_deadline(), Some(Instant::from_secs(10)));
        assert!(!expired(&mut t.send_keepalive, Instant::from_secs(9)));
        assert!(expired(&mut t.send_keepalive, Instant::from_secs(10)));
        assert_eq!(t.send_keepalive, None);
    }
}
