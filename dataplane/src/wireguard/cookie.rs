//! MAC1/MAC2 and cookie replies: WireGuard's defence against handshake floods.
//!
//! * mac1 = MAC(HASH("mac1----" || S_receiver.pub), message up to mac1): anyone who knows the
//!   receiver's public key can make it, so it only proves the sender targeted us, but it is
//!   checked with one BLAKE2s before any Diffie-Hellman.
//! * Under load, a handshake message must also carry mac2 = MAC(cookie, message up to mac2),
//!   where cookie = MAC(R, source IP || source port) and R is a random secret renewed every
//!   two minutes. Without a valid mac2 the message gets a cookie reply instead of any DH:
//!   the cookie, encrypted with XChaCha20-Poly1305 under HASH("cookie--" || S_responder.pub),
//!   with the rejected message's mac1 as associated data and a random 24-byte nonce.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::crypto::{hash, mac, mac_eq, KEY_LEN, MAC_LEN, TAG_LEN};
use super::messages::{self, CookieReply, Writer, COOKIE_NONCE_LEN, COOKIE_REPLY_LEN};
use super::time::Instant;
use super::Error;

/// Label of the mac1 key derivation.
pub const LABEL_MAC1: &[u8; 8] = b"mac1----";
/// Label of the cookie encryption key derivation.
pub const LABEL_COOKIE: &[u8; 8] = b"cookie--";
/// Lifetime of the responder's cookie secret, and of a cookie at the initiator.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// An initiator stops using a cookie this long before the responder would renew its secret.
pub const COOKIE_SECRET_LATENCY: Duration = Duration::from_secs(5);
/// How long "under load" lasts once switched on.
pub const UNDER_LOAD_TIME: Duration = Duration::from_secs(1);

/// The bytes a cookie binds: source IP address then port (big endian).
#[derive(Clone, Copy)]
pub struct SourceBytes {
    buf: [u8; 18],
    len: usize,
}

impl SourceBytes {
    pub fn new(src: SocketAddr) -> Self {
        let mut buf = [0u8; 18];
        let len = match src.ip() {
            IpAddr::V4(ip) => {
                buf[..4].copy_from_slice(&ip.octets());
                4
            }
            IpAddr::V6(ip) => {
                buf[..16].copy_from_slice(&ip.octets());
                16
            }
        };
        buf[len..len + 2].copy_from_slice(&src.port().to_be_bytes());
        Self { buf, len: len + 2 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

/// Outcome of checking the macs of a handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacVerdict {
    /// mac1 is good and no cookie was asked for (not under load).
    Valid,
    /// mac1 and mac2 are good: process even under load.
    ValidWithCookie,
    /// mac1 is good but we are under load and mac2 is missing or stale: send a cookie reply.
    NeedCookie,
}

/// The responder side: checks macs of incoming handshake messages, mints cookie replies.
pub struct CookieChecker {
    mac1_key: [u8; KEY_LEN],
    cookie_key: Zeroizing<[u8; KEY_LEN]>,
    secret: Zeroizing<[u8; KEY_LEN]>,
    secret_born: Option<Instant>,
}

impl CookieChecker {
    /// For messages sent to `local_public`.
    pub fn new(local_public: &[u8; KEY_LEN]) -> Self {
        Self {
            mac1_key: hash(&[LABEL_MAC1, local_public]),
            cookie_key: Zeroizing::new(hash(&[LABEL_COOKIE, local_public])),
            secret: Zeroizing::new([0; KEY_LEN]),
            secret_born: None,
        }
    }

    fn cookie(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRngCore,
        src: &SourceBytes,
    ) -> [u8; MAC_LEN] {
        let fresh = self
            .secret_born
            .is_some_and(|born| !now.has_elapsed(born, COOKIE_SECRET_MAX_AGE));
        if !fresh {
            rng.fill_bytes(&mut self.secret[..]);
            self.secret_born = Some(now);
        }
        mac(&self.secret[..], &[src.as_bytes()])
    }

    /// Checks mac1 (always) and mac2 (when `under_load`) of a handshake message.
    /// `msg` is the whole message; its last 32 bytes are mac1 and mac2.
    pub fn verify(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRngCore,
        msg: &[u8],
        src: SocketAddr,
        under_load: bool,
    ) -> Result<MacVerdict, Error> {
        let bad = Error::BadLength {
            kind: msg.first().copied().unwrap_or(0),
            len: msg.len(),
        };
        let (head, mac2) = msg.split_last_chunk::<MAC_LEN>().ok_or(bad)?;
        let (body, mac1) = head.split_last_chunk::<MAC_LEN>().ok_or(bad)?;
        if !mac_eq(&mac(&self.mac1_key, &[body]), mac1) {
            return Err(Error::InvalidMac1);
        }
        if !under_load {
            return Ok(MacVerdict::Valid);
        }
        let cookie = self.cookie(now, rng, &SourceBytes::new(src));
        if mac_eq(&mac(&cookie, &[head]), mac2) {
            Ok(MacVerdict::ValidWithCookie)
        } else {
            Ok(MacVerdict::NeedCookie)
        }
    }

    /// Writes a cookie reply to a handshake message `msg` (whose mac1 was valid) from `src`,
    /// addressed to `receiver` (the message's sender index). Returns its length.
    pub fn write_reply(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRngCore,
        msg: &[u8],
        receiver: u32,
        src: SocketAddr,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let have = out.len();
        let short = Error::BufferTooSmall {
            need: COOKIE_REPLY_LEN,
            have,
        };
        let bad = Error::BadLength {
            kind: msg.first().copied().unwrap_or(0),
            len: msg.len(),
        };
        let (head, _mac2) = msg.split_last_chunk::<MAC_LEN>().ok_or(bad)?;
        let (_, mac1) = head.split_last_chunk::<MAC_LEN>().ok_or(bad)?;
        let cookie = self.cookie(now, rng, &SourceBytes::new(src));

        let mut w = Writer::new(out);
        *w.take::<4>().ok_or(short)? = messages::header(messages::TYPE_COOKIE_REPLY);
        *w.take::<4>().ok_or(short)? = receiver.to_le_bytes();
        let nonce = w.take::<COOKIE_NONCE_LEN>().ok_or(short)?;
        let sealed = w.take::<{ MAC_LEN + TAG_LEN }>().ok_or(short)?;
        rng.fill_bytes(nonce);
        let (body, tag_out) = sealed.split_at_mut(MAC_LEN);
        body.copy_from_slice(&cookie);
        let tag = XChaCha20Poly1305::new((&*self.cookie_key).into())
            .encrypt_in_place_detached((&*nonce).into(), mac1, body)
            .map_err(|_| Error::Aead)?;
        tag_out.copy_from_slice(&tag);
        Ok(COOKIE_REPLY_LEN)
    }
}

/// The initiator side, one per peer: stamps mac1 (and mac2 once it holds a cookie) on the
/// handshake messages it sends, and takes cookies from the peer's cookie replies.
pub struct CookieMaker {
    mac1_key: [u8; KEY_LEN],
    cookie_key: Zeroizing<[u8; KEY_LEN]>,
    cookie: Option<(Zeroizing<[u8; MAC_LEN]>, Instant)>,
    /// mac1 of our last handshake message: a cookie reply must carry it as associated data.
    last_mac1: Option<[u8; MAC_LEN]>,
}

impl CookieMaker {
    /// For messages sent to `peer_public`.
    pub fn new(peer_public: &[u8; KEY_LEN]) -> Self {
        Self {
            mac1_key: hash(&[LABEL_MAC1, peer_public]),
            cookie_key: Zeroizing::new(hash(&[LABEL_COOKIE, peer_public])),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills mac1 and mac2 (the last 32 bytes of `msg`).
    pub fn stamp(&mut self, now: Instant, msg: &mut [u8]) -> Result<(), Error> {
        let bad = Error::BadLength {
            kind: msg.first().copied().unwrap_or(0),
            len: msg.len(),
        };
        let (head, mac2) = msg.split_last_chunk_mut::<MAC_LEN>().ok_or(bad)?;
        let (body, mac1) = head.split_last_chunk_mut::<MAC_LEN>().ok_or(bad)?;
        *mac1 = mac(&self.mac1_key, &[body]);
        self.last_mac1 = Some(*mac1);
        let usable = COOKIE_SECRET_MAX_AGE.saturating_sub(COOKIE_SECRET_LATENCY);
        *mac2 = match &self.cookie {
            Some((cookie, at)) if !now.has_elapsed(*at, usable) => mac(&cookie[..], &[&head[..]]),
            _ => [0; MAC_LEN],
        };
        Ok(())
    }

    /// Decrypts a cookie reply to our last handshake message and keeps the cookie.
    pub fn consume_reply(&mut self, now: Instant, reply: &CookieReply<'_>) -> Result<(), Error> {
        let Some(mac1) = self.last_mac1 else {
            return Err(Error::UnexpectedHandshake);
        };
        let mut cookie = Zeroizing::new([0u8; MAC_LEN]);
        let (body, tag) = reply.encrypted_cookie.split_at(MAC_LEN);
        cookie.copy_from_slice(body);
        XChaCha20Poly1305::new((&*self.cookie_key).into())
            .decrypt_in_place_detached(reply.nonce.into(), &mac1, &mut cookie[..], tag.into())
            .map_err(|_| Error::HandshakeDecrypt)?;
        self.cookie = Some((cookie, now));
        // One reply per message: a second, replayed reply finds no mac1 to match.
        self.last_mac1 = None;
        Ok(())
    }

    /// Whether a usable cookie is held (for tests and status).
    pub fn has_cookie(&self, now: Instant) -> bool {
        let usable = COOKIE_SECRET_MAX_AGE.saturating_sub(COOKIE_SECRET_LATENCY);
        matches!(&self.cookie, Some((_, at)) if !now.has_elapsed(*at, usable))
    }
}

/// Decides when handshake processing is "under load": when the caller says so, or when more
/// than `threshold` handshake messages with a valid mac1 arrived within one second. Load then
/// lasts [`UNDER_LOAD_TIME`] after the last trigger.
#[derive(Debug, Clone)]
pub struct LoadMonitor {
    threshold: u32,
    window_start: Instant,
    count: u32,
    until: Option<Instant>,
}

impl LoadMonitor {
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            window_start: Instant::default(),
            count: 0,
            until: None,
        }
    }

    /// Counts one handshake message; returns whether we are now under load.
    pub fn record(&mut self, now: Instant) -> bool {
        if now.has_elapsed(self.window_start, Duration::from_secs(1)) {
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.threshold {
            self.until = Some(now + UNDER_LOAD_TIME);
        }
        self.is_under_load(now)
    }

    /// Forces load on until `now + UNDER_LOAD_TIME` (an adapter seeing its queues fill).
    pub fn force(&mut self, now: Instant) {
        self.until = Some(now + UNDER_LOAD_TIME);
    }

    pub fn is_under_load(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wireguard::messages::INITIATION_LEN;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_bytes() {
        assert_eq!(
            SourceBytes::new(addr("1.2.3.4:258")).as_bytes(),
            &[1, 2, 3, 4, 1, 2]
        );
        assert_eq!(SourceBytes::new(addr("[::1]:1")).as_bytes().len(), 18);
    }

    #[test]
    fn cookie_round_trip_and_mac2() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let responder_pub = [7u8; 32];
        let mut checker = CookieChecker::new(&responder_pub);
        let mut maker = CookieMaker::new(&responder_pub);
        let src = addr("192.0.2.1:51820");
        let now = Instant::from_secs(1000);

        let mut msg = [1u8; INITIATION_LEN];
        msg[1..4].copy_from_slice(&[0, 0, 0]);
        maker.stamp(now, &mut msg).unwrap();
        assert_eq!(&msg[132..], &[0u8; 16], "no cookie yet: mac2 is zero");
        assert_eq!(
            checker.verify(now, &mut rng, &msg, src, false),
            Ok(MacVerdict::Valid)
        );
        assert_eq!(
            checker.verify(now, &mut rng, &msg, src, true),
            Ok(MacVerdict::NeedCookie)
        );

        let mut reply = [0u8; COOKIE_REPLY_LEN];
        checker
            .write_reply(now, &mut rng, &msg, 42, src, &mut reply)
            .unwrap();
        let parsed = CookieReply::parse(&reply).unwrap();
        assert_eq!(parsed.receiver, 42);
        maker.consume_reply(now, &parsed).unwrap();
        assert!(maker.has_cookie(now));
        // The same reply again is refused: it answered one message only.
        assert!(maker.consume_reply(now, &parsed).is_err());

        maker.stamp(now, &mut msg).unwrap();
        assert_ne!(&msg[132..], &[0u8; 16]);
        assert_eq!(
            checker.verify(now, &mut rng, &msg, src, true),
            Ok(MacVerdict::ValidWithCookie)
        );
        // The cookie is bound to the source address and port.
        assert_eq!(
            checker.verify(now, &mut rng, &msg, addr("192.0.2.1:51821"), true),
            Ok(MacVerdict::NeedCookie)
        );
        // A forged mac1 is refused outright, under load or not.
        msg[116] ^= 1;
        assert_eq!(
            checker.verify(now, &mut rng, &msg, src, false),
            Err(Error::InvalidMac1)
        );
        assert_eq!(
            checker.verify(now, &mut rng, &msg, src, true),
            Err(Error::InvalidMac1)
        );
    }

    #[test]
    fn cookies_expire_and_secrets_rotate() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let pk = [9u8; 32];
        let mut checker = CookieChecker::new(&pk);
        let mut maker = CookieMaker::new(&pk);
        let src = addr("[2001:db8::1]:4000");
        let t0 = Instant::from_secs(50);
        let mut msg = [0u8; INITIATION_LEN];
        msg[0] = 1;
        maker.stamp(t0, &mut msg).unwrap();
        let mut reply = [0u8; COOKIE_REPLY_LEN];
        checker
            .write_reply(t0, &mut rng, &msg, 1, src, &mut reply)
            .unwrap();
        maker
            .consume_reply(t0, &CookieReply::parse(&reply).unwrap())
            .unwrap();

        // 114 s later the cookie is still used; 115 s later (120 - 5) it is not.
        assert!(maker.has_cookie(t0 + Duration::from_secs(114)));
        assert!(!maker.has_cookie(t0 + Duration::from_secs(115)));
        // After 120 s the responder's secret changes, so an old cookie no longer verifies.
        let t1 = t0 + Duration::from_secs(100);
        maker.stamp(t1, &mut msg).unwrap();
        assert_eq!(
            checker.verify(t1, &mut rng, &msg, src, true),
            Ok(MacVerdict::ValidWithCookie)
        );
        let t2 = t0 + Duration::from_secs(121);
        assert_eq!(
            checker.verify(t2, &mut rng, &msg, src, true),
            Ok(MacVerdict::NeedCookie)
        );
    }

    #[test]
    fn reply_with_wrong_aad_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let pk = [3u8; 32];
        let mut checker = CookieChecker::new(&pk);
        let mut maker = CookieMaker::new(&pk);
        let src = addr("10.0.0.1:1");
        let now = Instant::from_secs(1);
        let mut msg = [0u8; INITIATION_LEN];
        msg[0] = 1;
        maker.stamp(now, &mut msg).unwrap();
        let mut other = msg;
        other[10] = 1;
        maker.stamp(now, &mut other).unwrap();
        // The reply answers `msg`, but the maker's last message was `other`.
        let mut reply = [0u8; COOKIE_REPLY_LEN];
        checker
            .write_reply(now, &mut rng, &msg, 1, src, &mut reply)
            .unwrap();
        assert_eq!(
            maker.consume_reply(now, &CookieReply::parse(&reply).unwrap()),
            Err(Error::HandshakeDecrypt)
        );
    }

    #[test]
    fn load_monitor() {
        let mut m = LoadMonitor::new(3);
        let t = Instant::from_secs(10);
        assert!(!m.record(t));
        assert!(!m.record(t));
        assert!(!m.record(t));
        assert!(m.record(t), "the fourth within a second switches load on");
        assert!(m.is_under_load(t + Duration::from_millis(999)));
        assert!(!m.is_under_load(t + Duration::from_secs(1)));
        let t2 = t + Duration::from_secs(5);
        assert!(!m.record(t2));
        m.force(t2);
        assert!(m.is_under_load(t2));
    }
}
