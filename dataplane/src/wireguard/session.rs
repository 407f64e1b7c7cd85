//! Sessions (keypairs) and their rotation.
//!
//! A tunnel holds the three keypairs of the reference implementations:
//! * `current`: the one used for sending;
//! * `previous`: the one before, still accepted on receive so packets in flight during a
//!   rekey are not lost;
//! * `next`: a responder's new keypair, not used for sending until the initiator proves it
//!   has it by sending the first data message on it (key confirmation). Then it becomes
//!   `current`, and `current` becomes `previous`.
//!
//! and one more, `retired`: of the keypairs those rules push out, the one that most recently
//! received a message, kept for receiving only. When both ends initiate at the same time each
//! may send on a session the other holds in `previous`, and a rekey would then push out a
//! session the peer still has packets in flight on; the retired slot keeps them deliverable.
//! It expires like any session (REJECT_AFTER_TIME) and is replaced by the next eviction.

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::aead::Aead;
use super::messages::DataMut;
use super::noise::SessionKeys;
use super::replay::{Refusal, ReplayWindow};
use super::time::Instant;
use super::timers::{REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES};
use super::transport;
use super::Error;

/// Message-count limits of a session. The defaults are the protocol's; tests lower them to
/// reach the limits in a few messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub rekey_after_messages: u64,
    pub reject_after_messages: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rekey_after_messages: REKEY_AFTER_MESSAGES,
            reject_after_messages: REJECT_AFTER_MESSAGES,
        }
    }
}

/// An [`Instant`] that workers record and the owner reads: nanoseconds + 1, 0 for never.
#[derive(Default)]
pub(crate) struct AtomicInstant(AtomicU64);

impl AtomicInstant {
    pub(crate) fn store(&self, t: Instant) {
        self.0
            .store(t.as_nanos().saturating_add(1), Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> Option<Instant> {
        self.0
            .load(Ordering::Relaxed)
            .checked_sub(1)
            .map(Instant::from_nanos)
    }
}

/// One session: a sending and a receiving key with their counters.
///
/// Shared by the tunnel that owns it and the workers that seal and open data messages with
/// it (see [`SessionTable`](super::SessionTable)): counters and the replay window are
/// atomics, so sealing and opening take `&self`.
pub struct Keypair<A> {
    /// Our index: data messages for this session carry it as receiver.
    pub local_index: u32,
    /// The peer's index: we put it in the data messages we send.
    pub remote_index: u32,
    /// Whether we initiated the handshake that made this session.
    pub initiator: bool,
    /// When the handshake completed.
    pub created: Instant,
    send: A,
    send_counter: AtomicU64,
    recv: A,
    replay: ReplayWindow,
    last_received: AtomicInstant,
    /// Last data message (not a keepalive) received, and last one sent: the owner's timers
    /// read them (see `Tunnel::absorb`).
    pub(crate) last_received_data: AtomicInstant,
    pub(crate) last_sent: AtomicInstant,
}

impl<A: Aead> Keypair<A> {
    pub fn new(keys: &SessionKeys, now: Instant) -> Result<Self, Error> {
        Ok(Self {
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            initiator: keys.initiator,
            created: now,
            send: A::new(&keys.send)?,
            send_counter: AtomicU64::new(0),
            recv: A::new(&keys.recv)?,
            replay: ReplayWindow::new(),
            last_received: AtomicInstant::default(),
            last_received_data: AtomicInstant::default(),
            last_sent: AtomicInstant::default(),
        })
    }

    /// The counter the next sealed message will carry.
    pub fn send_counter(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    fn fresh(&self, now: Instant) -> bool {
        !now.has_elapsed(self.created, REJECT_AFTER_TIME)
    }

    /// Whether this session may still send.
    pub fn can_send(&self, now: Instant, limits: &Limits) -> bool {
        self.fresh(now) && self.send_counter() < limits.reject_after_messages
    }

    /// Whether this session may still receive.
    pub fn can_receive(&self, now: Instant) -> bool {
        self.fresh(now)
    }

    /// Whether the sender side wants a new session: past REKEY_AFTER_MESSAGES, or (only the
    /// initiator, so both ends do not rekey at once) past REKEY_AFTER_TIME.
    pub fn wants_rekey_on_send(&self, now: Instant, limits: &Limits) -> bool {
        self.send_counter() > limits.rekey_after_messages
            || (self.initiator && now.has_elapsed(self.created, super::timers::REKEY_AFTER_TIME))
    }

    /// Seals an inner packet in place (see [`transport::seal`]), consuming a counter. Workers
    /// sealing at once each get their own counter.
    pub fn seal(
        &self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        mtu: usize,
        limits: &Limits,
    ) -> Result<usize, Error> {
        let counter = self.send_counter.fetch_add(1, Ordering::Relaxed);
        if counter >= limits.reject_after_messages {
            // Keep the counter pinned at the limit rather than creeping towards wrap-around.
            self.send_counter
                .store(limits.reject_after_messages, Ordering::Relaxed);
            return Err(Error::CounterExhausted);
        }
        let n = transport::seal(&self.send, self.remote_index, counter, buf, len, mtu)?;
        if len > 0 {
            self.last_sent.store(now);
        }
        Ok(n)
    }

    /// Opens a data message in place: replay pre-check, decryption, then the counter is
    /// recorded. Returns the padded plaintext length.
    pub fn open(
        &self,
        now: Instant,
        msg: &mut DataMut<'_>,
        limits: &Limits,
    ) -> Result<usize, Error> {
        let limit = limits.reject_after_messages;
        self.replay
            .check(msg.counter, limit)
            .map_err(|r| refusal(r, msg.counter))?;
        let n = transport::open(&self.recv, msg)?;
        self.replay
            .accept(msg.counter, limit)
            .map_err(|r| refusal(r, msg.counter))?;
        self.last_received.store(now);
        if n > 0 {
            self.last_received_data.store(now);
        }
        Ok(n)
    }

    /// When a message was last received on this session.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received.load()
    }
}

fn refusal(r: Refusal, counter: u64) -> Error {
    match r {
        Refusal::Exhausted => Error::SessionExpired,
        Refusal::Duplicate | Refusal::TooOld => Error::Replay(counter),
    }
}

/// Which slot a keypair was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Previous,
    Current,
    Next,
    Retired,
}

/// The keypairs of a tunnel.
pub struct Keypairs<A> {
    pub previous: Option<Arc<Keypair<A>>>,
    pub current: Option<Arc<Keypair<A>>>,
    pub next: Option<Arc<Keypair<A>>>,
    pub retired: Option<Arc<Keypair<A>>>,
}

impl<A> Default for Keypairs<A> {
    fn default() -> Self {
        Self {
            previous: None,
            current: None,
            next: None,
            retired: None,
        }
    }
}

impl<A: Aead> Keypairs<A> {
    /// Keeps an evicted keypair in `retired` if it received more recently than the one there.
    fn retire(&mut self, kp: Option<Arc<Keypair<A>>>) {
        let Some(kp) = kp else { return };
        let better = match &self.retired {
            None => true,
            Some(r) => kp.last_received() >= r.last_received(),
        };
        if better {
            self.retired = Some(kp);
        }
    }

    /// Installs a keypair we derived as initiator: usable at once.
    pub fn insert_initiator(&mut self, kp: Arc<Keypair<A>>) {
        if let Some(next) = self.next.take() {
            // An unconfirmed responder keypair becomes previous (the peer may send on it as
            // soon as it has our response); the old current and previous retire.
            let old_previous = self.previous.replace(next);
            self.retire(old_previous);
            let old_current = self.current.take();
            self.retire(old_current);
        } else {
            let old_previous = self.previous.take();
            self.retire(old_previous);
            self.previous = self.current.take();
        }
        self.current = Some(kp);
    }

    /// Installs a keypair we derived as responder: it waits in `next` for confirmation.
    pub fn insert_responder(&mut self, kp: Arc<Keypair<A>>) {
        let old_next = self.next.replace(kp);
        self.retire(old_next);
        let old_previous = self.previous.take();
        self.retire(old_previous);
    }

    /// Promotes `next` to `current` after the first message received on it.
    pub fn confirm_next(&mut self) {
        if let Some(next) = self.next.take() {
            let old_previous = self.previous.take();
            self.retire(old_previous);
            self.previous = self.current.take();
            self.current = Some(next);
        }
    }

    /// The keypair whose local index is `index`.
    pub fn find(&self, index: u32) -> Option<(Slot, &Arc<Keypair<A>>)> {
        [
            (Slot::Current, &self.current),
            (Slot::Previous, &self.previous),
            (Slot::Next, &self.next),
            (Slot::Retired, &self.retired),
        ]
        .into_iter()
        .find_map(|(slot, kp)| {
            kp.as_ref()
                .filter(|k| k.local_index == index)
                .map(|k| (slot, k))
        })
    }

    /// Whether any keypair uses `index` locally.
    pub fn uses_index(&self, index: u32) -> bool {
        [&self.previous, &self.current, &self.next, &self.retired]
            .into_iter()
            .flatten()
            .any(|k| k.local_index == index)
    }

    /// Drops every keypair.
    pub fn clear(&mut self) {
        self.previous = None;
        self.current = None;
        self.next = None;
        self.retired = None;
    }

    /// The current keypair if it can send now.
    pub fn sendable(&self, now: Instant, limits: &Limits) -> Option<&Arc<Keypair<A>>> {
        self.current.as_ref().filter(|k| k.can_send(now, limits))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wireguard::aead::RingChaCha20Poly1305;
    use zeroize::Zeroizing;

    fn kp(index: u32, initiator: bool) -> Arc<Keypair<RingChaCha20Poly1305>> {
        let keys = SessionKeys {
            send: Zeroizing::new([1; 32]),
            recv: Zeroizing::new([1; 32]),
            local_index: index,
            remote_index: index + 100,
            initiator,
        };
        Arc::new(Keypair::new(&keys, Instant::from_secs(0)).unwrap())
    }

    fn idx(k: &Option<Arc<Keypair<RingChaCha20Poly1305>>>) -> Option<u32> {
        k.as_ref().map(|k| k.local_index)
    }

    fn all(ks: &Keypairs<RingChaCha20Poly1305>) -> [Option<u32>; 4] {
        [
            idx(&ks.previous),
            idx(&ks.current),
            idx(&ks.next),
            idx(&ks.retired),
        ]
    }

    #[test]
    fn retired_slot_keeps_the_most_recently_used_evictee() {
        let mut ks = Keypairs::default();
        // Both ends initiated at once: we hold the peer's session 2 as previous and our 1 as
        // current; the peer sends on 2.
        ks.insert_responder(kp(2, false));
        ks.insert_initiator(kp(1, true));
        assert_eq!(all(&ks), [Some(2), Some(1), None, None]);
        ks.previous
            .as_ref()
            .unwrap()
            .last_received
            .store(Instant::from_secs(5));
        // We rekey: 2 is pushed out of previous but stays receivable as retired.
        ks.insert_initiator(kp(3, true));
        assert_eq!(all(&ks), [Some(1), Some(3), None, Some(2)]);
        assert_eq!(ks.find(2).map(|(s, _)| s), Some(Slot::Retired));
        // An evictee that never received does not displace one that did.
        ks.insert_initiator(kp(4, true));
        assert_eq!(all(&ks), [Some(3), Some(4), None, Some(2)]);
        ks.previous
            .as_ref()
            .unwrap()
            .last_received
            .store(Instant::from_secs(9));
        ks.insert_initiator(kp(5, true));
        assert_eq!(all(&ks), [Some(4), Some(5), None, Some(3)]);
    }

    #[test]
    fn rotation() {
        let mut ks = Keypairs::default();
        ks.insert_initiator(kp(1, true));
        assert_eq!(all(&ks), [None, Some(1), None, None]);
        ks.insert_initiator(kp(2, true));
        assert_eq!(all(&ks), [Some(1), Some(2), None, None]);
        ks.insert_responder(kp(3, false));
        assert_eq!(all(&ks), [None, Some(2), Some(3), Some(1)]);
        assert_eq!(ks.find(3).map(|(s, _)| s), Some(Slot::Next));
        ks.confirm_next();
        assert_eq!(all(&ks), [Some(2), Some(3), None, Some(1)]);
        ks.insert_responder(kp(4, false));
        assert_eq!(all(&ks), [None, Some(3), Some(4), Some(2)]);
        ks.insert_initiator(kp(5, true));
        assert_eq!(all(&ks), [Some(4), Some(5), None, Some(3)]);
        assert!(ks.uses_index(4) && ks.uses_index(3) && !ks.uses_index(2));
        ks.clear();
        assert!(ks.find(5).is_none());
    }

    #[test]
    fn receiving_refuses_counters_at_the_reject_limit() {
        // kp() uses one key both ways, so a keypair opens what it sealed.
        let k = kp(1, true);
        let big = Limits::default();
        let small = Limits {
            rekey_after_messages: 5,
            reject_after_messages: 10,
        };
        let now = Instant::from_secs(0);
        let mut msgs = Vec::new();
        for _ in 0..=10 {
            let mut buf = [0u8; 64];
            let n = k.seal(now, &mut buf, 0, 1420, &big).unwrap();
            msgs.push(buf[..n].to_vec());
        }
        for (counter, mut m) in msgs.into_iter().enumerate() {
            let mut d = DataMut::parse(&mut m).unwrap();
            let r = k.open(now, &mut d, &small);
            if counter < 10 {
                assert_eq!(r, Ok(0), "{counter}");
            } else {
                assert_eq!(r, Err(Error::SessionExpired));
            }
        }
        assert_eq!(k.last_received(), Some(now));
    }

    #[test]
    fn limits_and_ages() {
        let limits = Limits {
            rekey_after_messages: 2,
            reject_after_messages: 4,
        };
        let k = kp(1, true);
        let t0 = Instant::from_secs(0);
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            assert!(!k.wants_rekey_on_send(t0, &limits));
            k.seal(t0, &mut buf, 0, 1420, &limits).unwrap();
        }
        assert!(k.wants_rekey_on_send(t0, &limits), "counter 3 > 2");
        k.seal(t0, &mut buf, 0, 1420, &limits).unwrap();
        assert!(!k.can_send(t0, &limits));
        assert_eq!(
            k.seal(t0, &mut buf, 0, 1420, &limits),
            Err(Error::CounterExhausted)
        );

        let k = kp(1, true);
        let d = Limits::default();
        assert!(!k.wants_rekey_on_send(Instant::from_secs(119), &d));
        assert!(k.wants_rekey_on_send(Instant::from_secs(120), &d));
        assert!(k.can_send(Instant::from_secs(179), &d));
        assert!(!k.can_send(Instant::from_secs(180), &d));
        assert!(!k.can_receive(Instant::from_secs(180),));
        let r = kp(2, false);
        assert!(
            !r.wants_rekey_on_send(Instant::from_secs(150), &d),
            "responders do not rekey on time"
        );
    }
}
