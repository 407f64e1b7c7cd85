//! One WireGuard peer as a sans-IO state machine: fed datagrams, inner packets and the time,
//! it returns datagrams to send and inner packets to deliver.
//!
//! Calling pattern for an adapter:
//! * a datagram arrives: [`Tunnel::handle_datagram`], act on the [`Action`];
//! * an inner packet must go out: [`Tunnel::encapsulate`] (in place, no copy, no allocation
//!   when a session is up);
//! * after either, and whenever [`Tunnel::next_deadline`] passes: call [`Tunnel::tick`] until
//!   it returns `None`, sending every datagram it writes (initiations, keepalives, packets
//!   that waited for a handshake).

use core::net::SocketAddr;
use core::time::Duration;
use rand_core::CryptoRngCore;
use std::collections::VecDeque;
use std::sync::Arc;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::aead::{Aead, RingChaCha20Poly1305};
use super::cookie::{CookieChecker, CookieMaker, LoadMonitor, MacVerdict};
use super::error::DropReason;
use super::messages::{
    self, CookieReply, DataMut, Initiation, MessageType, Response, DATA_HEADER_LEN, INITIATION_LEN,
    RESPONSE_LEN,
};
use super::noise::{self, InitiationStatic, InitiatorState, PeerKeys, StaticIdentity};
use super::session::{Keypair, Keypairs, Limits, Slot};
use super::tai64n::Tai64N;
use super::time::Instant;
use super::timers::{
    self, expired, Timers, INITIATION_MIN_INTERVAL, KEEPALIVE_TIMEOUT, REKEY_AFTER_TIME_RECEIVING,
    REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, ZERO_KEYS_AFTER,
};
use super::transport;
use super::Error;

/// Default tunnel MTU: inner packets are padded up to it, never beyond.
pub const DEFAULT_MTU: usize = 1420;
/// Default number of inner packets kept while waiting for a handshake.
pub const DEFAULT_MAX_STAGED: usize = 128;
/// Default number of handshake messages per second above which cookies are demanded.
pub const DEFAULT_UNDER_LOAD_THRESHOLD: u32 = 16;

/// Per-peer configuration.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    /// Send a keepalive after this long without any authenticated packet either way.
    pub persistent_keepalive: Option<Duration>,
    pub mtu: usize,
    pub max_staged: usize,
    pub under_load_threshold: u32,
    pub limits: Limits,
}

impl PeerConfig {
    /// A peer with the protocol's defaults.
    pub fn new(public_key: [u8; 32]) -> Self {
        Self {
            public_key,
            preshared_key: None,
            persistent_keepalive: None,
            mtu: DEFAULT_MTU,
            max_staged: DEFAULT_MAX_STAGED,
            under_load_threshold: DEFAULT_UNDER_LOAD_THRESHOLD,
            limits: Limits::default(),
        }
    }
}

/// What to do with a datagram that was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Authenticated and consumed (keepalive, handshake response): nothing to deliver.
    /// Call [`Tunnel::tick`]: a completed handshake releases waiting packets.
    Accepted,
    /// A cookie reply was taken; the next initiation will carry mac2.
    CookieStored,
    /// An authenticated initiation: send `out[..len]` (our response) to its source.
    SendResponse(usize),
    /// We are under load and the handshake message had no valid mac2: send `out[..len]` (a
    /// cookie reply) to its source. The source is not authenticated.
    SendCookieReply(usize),
    /// A decrypted inner IP packet at `datagram[offset..offset + len]`.
    Deliver { offset: usize, len: usize },
}

impl Action {
    /// Whether the datagram proved to come from the peer (an adapter may then update the
    /// peer's endpoint to its source address).
    pub fn peer_authenticated(&self) -> bool {
        matches!(
            self,
            Action::Accepted | Action::SendResponse(_) | Action::Deliver { .. }
        )
    }
}

/// Result of [`Tunnel::encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// `buf[..len]` is a data message ready to send.
    Ready(usize),
    /// No session yet: the packet was copied aside and a handshake requested; `tick` sends
    /// it once the session is up.
    Staged,
}

/// Handshake state of a tunnel, as operators read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// Never connected, nothing in progress.
    Idle,
    /// No usable session; a handshake is in progress.
    Connecting,
    /// A session can send.
    Established,
    /// Had a session or tried to, and has none now (expired, wiped, or gave up).
    Expired,
}

/// Counters of one tunnel. Every refused datagram or packet is counted with its reason.
#[derive(Debug, Clone, Default)]
pub struct TunnelStats {
    pub tx_packets: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    pub rx_packets: u64,
    /// Inner bytes received.
    pub rx_bytes: u64,
    pub keepalives_sent: u64,
    pub keepalives_received: u64,
    pub initiations_sent: u64,
    pub responses_sent: u64,
    pub handshakes_completed: u64,
    pub cookie_replies_sent: u64,
    pub cookie_replies_received: u64,
    /// Handshake messages that got as far as Diffie-Hellman.
    pub handshake_dh: u64,
    drops: [u64; DropReason::COUNT],
}

impl TunnelStats {
    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// All drop counters with their reasons.
    pub fn all_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .copied()
            .zip(self.drops.iter().copied())
    }

    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    fn count_drop(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason as usize) {
            *c = c.saturating_add(1);
        }
    }
}

/// Inner packets waiting for a session, in preallocated buffers reused across handshakes.
struct Staged {
    queue: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    max: usize,
}

impl Staged {
    fn new(max: usize) -> Self {
        Self {
            queue: VecDeque::with_capacity(max),
            free: Vec::new(),
            max,
        }
    }

    /// Copies a packet in; returns true if the oldest had to make room.
    fn push(&mut self, packet: &[u8]) -> bool {
        let mut overflow = false;
        if self.queue.len() >= self.max.max(1) {
            if let Some(old) = self.queue.pop_front() {
                self.free.push(old);
            }
            overflow = true;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.queue.push_back(buf);
        overflow
    }

    fn front_len(&self) -> Option<usize> {
        self.queue.front().map(Vec::len)
    }

    fn pop_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let buf = self.queue.pop_front()?;
        let len = buf.len();
        if let Some(dst) = out.get_mut(..len) {
            dst.copy_from_slice(&buf);
        }
        self.free.push(buf);
        Some(len)
    }

    /// Empties the queue; returns how many packets were dropped.
    fn purge(&mut self) -> usize {
        let n = self.queue.len();
        self.free.extend(self.queue.drain(..));
        n
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A WireGuard peer: handshake, sessions, timers, cookies, replay protection.
pub struct Tunnel<A: Aead = RingChaCha20Poly1305> {
    identity: Arc<StaticIdentity>,
    peer: PeerKeys,
    config: PeerConfig,
    slot: u16,
    rng: Box<dyn CryptoRngCore + Send>,
    checker: CookieChecker,
    maker: CookieMaker,
    load: LoadMonitor,
    /// Our initiation in flight.
    handshake: Option<InitiatorState>,
    keypairs: Keypairs<A>,
    latest_timestamp: Option<Tai64N>,
    last_initiation_consumed: Option<Instant>,
    last_sent_handshake: Option<Instant>,
    /// Start of the current series of handshake attempts (for REKEY_ATTEMPT_TIME).
    attempts_started: Option<Instant>,
    sent_lastminute_handshake: bool,
    timers: Timers,
    pending_initiation: bool,
    pending_keepalive: bool,
    rearm_keepalive: bool,
    gave_up: bool,
    staged: Staged,
    last_handshake: Option<Instant>,
    stats: TunnelStats,
    /// Session activity already fed to the timers (see [`Tunnel::absorb`]).
    seen: Seen,
}

/// The latest receive, data receive and send times the timers have taken into account.
#[derive(Default, Clone, Copy)]
struct Seen {
    rx: Option<Instant>,
    rx_data: Option<Instant>,
    tx: Option<Instant>,
}

impl<A: Aead> Tunnel<A> {
    /// A tunnel with its own identity. `slot` fills the low 16 bits of every local index so a
    /// dispatcher can find the tunnel from a receiver index (use 0 for a lone tunnel).
    pub fn new(
        private_key: [u8; 32],
        config: PeerConfig,
        slot: u16,
        rng: Box<dyn CryptoRngCore + Send>,
    ) -> Result<Self, Error> {
        Self::with_identity(
            Arc::new(StaticIdentity::new(private_key)),
            config,
            slot,
            rng,
        )
    }

    /// A tunnel sharing an identity with others (see [`Device`](super::Device)).
    pub fn with_identity(
        identity: Arc<StaticIdentity>,
        config: PeerConfig,
        slot: u16,
        rng: Box<dyn CryptoRngCore + Send>,
    ) -> Result<Self, Error> {
        let peer = PeerKeys::new(&identity, config.public_key, config.preshared_key)?;
        let mut timers = Timers::default();
        // Persistent keepalive starts at once, so a configured tunnel comes up by itself.
        if config.persistent_keepalive.is_some() {
            timers.persistent_keepalive = Some(Instant::default());
        }
        Ok(Self {
            checker: CookieChecker::new(identity.public_key()),
            maker: CookieMaker::new(&config.public_key),
            load: LoadMonitor::new(config.under_load_threshold),
            staged: Staged::new(config.max_staged),
            identity,
            peer,
            config,
            slot,
            rng,
            handshake: None,
            keypairs: Keypairs::default(),
            latest_timestamp: None,
            last_initiation_consumed: None,
            last_sent_handshake: None,
            attempts_started: None,
            sent_lastminute_handshake: false,
            timers,
            pending_initiation: false,
            pending_keepalive: false,
            rearm_keepalive: false,
            gave_up: false,
            last_handshake: None,
            stats: TunnelStats::default(),
            seen: Seen::default(),
        })
    }

    // ----- inputs -----

    /// Handles one datagram from `src`. Data messages are decrypted in place; handshake
    /// answers are written to `out` (at least [`RESPONSE_LEN`] bytes). Errors are counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &mut [u8],
        out: &mut [u8],
    ) -> Result<Action, Error> {
        let r = match messages::message_type(datagram) {
            Ok(MessageType::Data) => self.handle_data(now, datagram),
            Ok(MessageType::Initiation) => self.handle_initiation(now, src, datagram, out),
            Ok(MessageType::Response) => self.handle_response(now, src, datagram, out),
            Ok(MessageType::CookieReply) => self.handle_cookie_reply(now, datagram),
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            self.stats.count_drop(e.reason());
        }
        r
    }

    /// Encrypts an inner packet in place: `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]`
    /// holds it, and `buf` must have room for padding and tag
    /// ([`transport::sealed_len`]). Without a session the packet is staged instead.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Encapsulated, Error> {
        let r = self.encapsulate_inner(now, buf, len);
        if let Err(e) = &r {
            self.stats.count_drop(e.reason());
        }
        r
    }

    /// Copying convenience around [`Tunnel::encapsulate`]: `inner` is copied to
    /// `out[DATA_HEADER_LEN..]` first.
    pub fn encapsulate_from(
        &mut self,
        now: Instant,
        inner: &[u8],
        out: &mut [u8],
    ) -> Result<Encapsulated, Error> {
        let need = transport::sealed_len(inner.len(), self.config.mtu);
        let have = out.len();
        let Some(dst) = out.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + inner.len()) else {
            self.stats.count_drop(DropReason::BufferTooSmall);
            return Err(Error::BufferTooSmall { need, have });
        };
        dst.copy_from_slice(inner);
        self.encapsulate(now, out, inner.len())
    }

    /// Runs expired timers, then writes the next datagram to send into `out` (at least
    /// [`INITIATION_LEN`] bytes, and enough for a staged packet). Call until `None`.
    pub fn tick(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<usize>, Error> {
        self.absorb(now);
        self.run_timers(now);
        let r = self.flush(now, out);
        if let Err(e) = &r {
            self.stats.count_drop(e.reason());
        }
        r
    }

    /// Starts a handshake now (subject to the REKEY_TIMEOUT rate limit): a forced rekey.
    pub fn initiate_handshake(&mut self, now: Instant) {
        self.request_handshake(now, false);
    }

    /// Demands cookies from handshake messages for the next second (an adapter whose
    /// handshake queue is filling up calls this).
    pub fn set_under_load(&mut self, now: Instant) {
        self.load.force(now);
    }

    /// Feeds the timers with what workers did on this tunnel's sessions since the last call:
    /// data sealed and opened through a [`SessionTable`](super::SessionTable) never passes
    /// through the tunnel, so the owner calls this (and [`Tunnel::tick`] does) to keep
    /// keepalives, handshake timeouts, rekeys and key confirmation as if it had.
    pub fn absorb(&mut self, now: Instant) {
        if self
            .keypairs
            .next
            .as_ref()
            .is_some_and(|k| k.last_received().is_some())
        {
            // The initiator sent on our responder session: key confirmed.
            self.keypairs.confirm_next();
            self.on_handshake_complete(now);
        }
        let all = [
            &self.keypairs.previous,
            &self.keypairs.current,
            &self.keypairs.retired,
        ];
        let latest = |f: fn(&Keypair<A>) -> Option<Instant>| {
            all.iter().filter_map(|k| k.as_deref()).filter_map(f).max()
        };
        let rx = latest(|k| k.last_received());
        let rx_data = latest(|k| k.last_received_data.load());
        let tx = latest(|k| k.last_sent.load());
        if rx > self.seen.rx {
            self.seen.rx = rx;
            self.keep_key_fresh_on_receive(now);
            self.timers.new_handshake = None;
            self.on_traversal(now);
        }
        if let Some(at) = rx_data.filter(|_| rx_data > self.seen.rx_data) {
            self.seen.rx_data = rx_data;
            if self.timers.send_keepalive.is_none() {
                self.timers.send_keepalive = Some(at + KEEPALIVE_TIMEOUT);
            } else {
                self.timers.need_another_keepalive = true;
            }
        }
        if let Some(at) = tx.filter(|_| tx > self.seen.tx) {
            self.seen.tx = tx;
            self.on_traversal(now);
            if tx > rx_data {
                // We spoke after the peer last did: no passive keepalive owed.
                self.on_authenticated_sent();
            }
            if tx > rx && self.timers.new_handshake.is_none() {
                self.timers.new_handshake =
                    Some(at + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + timers::jitter(&mut *self.rng));
            }
            let limits = self.config.limits;
            if self
                .keypairs
                .current
                .as_ref()
                .is_some_and(|k| k.wants_rekey_on_send(now, &limits))
            {
                self.request_handshake(now, false);
            }
        }
    }

    /// The sessions workers may use: every receivable keypair, and the current one for sending.
    pub(crate) fn keypairs(&self) -> &Keypairs<A> {
        &self.keypairs
    }

    // ----- observation -----

    /// The earliest timer deadline; call [`Tunnel::tick`] then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub fn state(&self, now: Instant) -> TunnelState {
        if self
            .keypairs
            .current
            .as_ref()
            .is_some_and(|k| k.can_send(now, &self.config.limits))
        {
            TunnelState::Established
        } else if !self.gave_up && (self.handshake.is_some() || self.pending_initiation) {
            TunnelState::Connecting
        } else if self.last_handshake.is_some() || self.gave_up {
            TunnelState::Expired
        } else {
            TunnelState::Idle
        }
    }

    pub fn stats(&self) -> &TunnelStats {
        &self.stats
    }

    /// When the last handshake completed.
    pub fn last_handshake(&self) -> Option<Instant> {
        self.last_handshake
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    pub fn local_public_key(&self) -> &[u8; 32] {
        self.identity.public_key()
    }

    /// The slot in the low 16 bits of this tunnel's local indices.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The current session's local index and send counter, if any.
    pub fn current_session(&self) -> Option<(u32, u64)> {
        self.keypairs
            .current
            .as_ref()
            .map(|k| (k.local_index, k.send_counter()))
    }

    /// Local indices of the (previous, current, next, retired) sessions.
    pub fn session_indices(&self) -> [Option<u32>; 4] {
        [
            self.keypairs.previous.as_ref().map(|k| k.local_index),
            self.keypairs.current.as_ref().map(|k| k.local_index),
            self.keypairs.next.as_ref().map(|k| k.local_index),
            self.keypairs.retired.as_ref().map(|k| k.local_index),
        ]
    }

    /// Whether any key material (sessions or a handshake in flight) is held.
    pub fn has_key_material(&self) -> bool {
        self.handshake.is_some() || self.session_indices().iter().any(Option::is_some)
    }

    /// The timers, for inspection.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// Whether a cookie from the peer is held for mac2.
    pub fn has_cookie(&self, now: Instant) -> bool {
        self.maker.has_cookie(now)
    }

    pub fn is_under_load(&self, now: Instant) -> bool {
        self.load.is_under_load(now)
    }

    // ----- receive paths -----

    fn handle_data(&mut self, now: Instant, datagram: &mut [u8]) -> Result<Action, Error> {
        let limits = self.config.limits;
        let mut msg = DataMut::parse(datagram)?;
        let Some((slot, kp)) = self.keypairs.find(msg.receiver) else {
            return Err(Error::UnknownIndex(msg.receiver));
        };
        if !kp.can_receive(now) {
            return Err(Error::SessionExpired);
        }
        let padded = kp.open(now, &mut msg, &limits)?;

        self.seen.rx = Some(now);
        if padded > 0 {
            self.seen.rx_data = Some(now);
        }
        if slot == Slot::Next {
            self.keypairs.confirm_next();
            self.on_handshake_complete(now);
        }
        self.keep_key_fresh_on_receive(now);
        self.timers.new_handshake = None;
        self.on_traversal(now);

        if padded == 0 {
            self.stats.keepalives_received += 1;
            return Ok(Action::Accepted);
        }
        let plain = datagram
            .get(DATA_HEADER_LEN..DATA_HEADER_LEN + padded)
            .ok_or(Error::InvalidInnerPacket)?;
        let len = transport::inner_packet_len(plain)?;
        if self.timers.send_keepalive.is_none() {
            self.timers.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.timers.need_another_keepalive = true;
        }
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += len as u64;
        Ok(Action::Deliver {
            offset: DATA_HEADER_LEN,
            len,
        })
    }

    /// Checks macs; `Some(action)` when a cookie reply was written instead.
    fn check_macs(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        sender: u32,
        out: &mut [u8],
    ) -> Result<Option<Action>, Error> {
        let under_load = self.load.is_under_load(now);
        let verdict = self
            .checker
            .verify(now, &mut *self.rng, datagram, src, under_load)?;
        self.load.record(now);
        if verdict == MacVerdict::NeedCookie {
            let n = self
                .checker
                .write_reply(now, &mut *self.rng, datagram, sender, src, out)?;
            self.stats.cookie_replies_sent += 1;
            return Ok(Some(Action::SendCookieReply(n)));
        }
        Ok(None)
    }

    fn handle_initiation(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Action, Error> {
        let msg = Initiation::parse(datagram)?;
        if out.len() < RESPONSE_LEN {
            return Err(Error::BufferTooSmall {
                need: RESPONSE_LEN,
                have: out.len(),
            });
        }
        if let Some(cookie) = self.check_macs(now, src, datagram, msg.sender, out)? {
            return Ok(cookie);
        }
        self.stats.handshake_dh += 1;
        let partial = noise::open_initiation_static(&self.identity, &msg)?;
        self.answer_initiation(now, partial, &msg, out)
    }

    /// Second half of an initiation whose static key named this tunnel's peer (also the
    /// entry point of a [`Device`](super::Device) that did the first half).
    pub(crate) fn answer_initiation(
        &mut self,
        now: Instant,
        partial: InitiationStatic,
        msg: &Initiation<'_>,
        out: &mut [u8],
    ) -> Result<Action, Error> {
        let have = out.len();
        let Some(out) = out.first_chunk_mut::<RESPONSE_LEN>() else {
            return Err(Error::BufferTooSmall {
                need: RESPONSE_LEN,
                have,
            });
        };
        let consumed = noise::open_initiation_timestamp(partial, &self.peer, msg)?;
        if self
            .latest_timestamp
            .is_some_and(|latest| consumed.timestamp <= latest)
        {
            return Err(Error::ReplayedInitiation);
        }
        if self
            .last_initiation_consumed
            .is_some_and(|last| !now.has_elapsed(last, INITIATION_MIN_INTERVAL))
        {
            return Err(Error::InitiationFlood);
        }
        self.latest_timestamp = Some(consumed.timestamp);
        self.last_initiation_consumed = Some(now);

        let local_index = self.new_index();
        let ephemeral = self.new_ephemeral();
        let keys = noise::create_response(consumed, &self.peer, ephemeral, local_index, out)?;
        self.maker.stamp(now, out)?;
        let kp = Keypair::new(&keys, now)?;
        self.keypairs.insert_responder(Arc::new(kp));

        self.timers.zero_key_material = Some(now + ZERO_KEYS_AFTER);
        self.timers.new_handshake = None;
        self.on_traversal(now);
        self.on_authenticated_sent();
        self.stats.responses_sent += 1;
        Ok(Action::SendResponse(RESPONSE_LEN))
    }

    fn handle_response(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Action, Error> {
        let msg = Response::parse(datagram)?;
        if self
            .handshake
            .as_ref()
            .is_none_or(|h| h.local_index != msg.receiver)
        {
            return Err(Error::UnexpectedHandshake);
        }
        if let Some(cookie) = self.check_macs(now, src, datagram, msg.sender, out)? {
            return Ok(cookie);
        }
        self.stats.handshake_dh += 1;
        let Some(state) = self.handshake.as_ref() else {
            return Err(Error::UnexpectedHandshake);
        };
        let keys = noise::consume_response(state, &self.identity, &self.peer, &msg)?;
        let kp = Keypair::new(&keys, now)?;
        self.handshake = None;
        self.keypairs.insert_initiator(Arc::new(kp));

        self.timers.zero_key_material = Some(now + ZERO_KEYS_AFTER);
        self.on_handshake_complete(now);
        self.timers.new_handshake = None;
        self.on_traversal(now);
        // Confirm the session to the responder at once: with staged packets if any, else a
        // keepalive.
        self.pending_keepalive = true;
        Ok(Action::Accepted)
    }

    fn handle_cookie_reply(&mut self, now: Instant, datagram: &[u8]) -> Result<Action, Error> {
        let msg = CookieReply::parse(datagram)?;
        let ours = self
            .handshake
            .as_ref()
            .is_some_and(|h| h.local_index == msg.receiver)
            || self
                .keypairs
                .next
                .as_ref()
                .is_some_and(|k| k.local_index == msg.receiver);
        if !ours {
            return Err(Error::UnexpectedHandshake);
        }
        self.maker.consume_reply(now, &msg)?;
        self.stats.cookie_replies_received += 1;
        Ok(Action::CookieStored)
    }

    // ----- send paths -----

    fn encapsulate_inner(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Encapsulated, Error> {
        let limits = self.config.limits;
        let mtu = self.config.mtu;
        if let Some(kp) = self.keypairs.sendable(now, &limits) {
            let n = kp.seal(now, buf, len, mtu, &limits)?;
            let rekey = kp.wants_rekey_on_send(now, &limits);
            self.on_data_sent(now, len);
            if rekey {
                self.request_handshake(now, false);
            }
            return Ok(Encapsulated::Ready(n));
        }
        let Some(packet) = buf.get(DATA_HEADER_LEN..DATA_HEADER_LEN + len) else {
            return Err(Error::BufferTooSmall {
                need: DATA_HEADER_LEN + len,
                have: buf.len(),
            });
        };
        if self.staged.push(packet) {
            self.stats.count_drop(DropReason::StagedOverflow);
        }
        self.request_handshake(now, false);
        Ok(Encapsulated::Staged)
    }

    fn flush(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<usize>, Error> {
        if self.pending_initiation {
            self.pending_initiation = false;
            let limited = self
                .last_sent_handshake
                .is_some_and(|last| !now.has_elapsed(last, REKEY_TIMEOUT));
            if !limited {
                return self.send_initiation(now, out).map(Some);
            }
        }
        let limits = self.config.limits;
        let mtu = self.config.mtu;
        let Some(kp) = self.keypairs.sendable(now, &limits) else {
            return Ok(None);
        };
        if let Some(len) = self.staged.front_len() {
            let need = transport::sealed_len(len, mtu);
            if out.len() < need {
                return Err(Error::BufferTooSmall {
                    need,
                    have: out.len(),
                });
            }
            let _ = self
                .staged
                .pop_into(out.get_mut(DATA_HEADER_LEN..).unwrap_or_default());
            let n = kp.seal(now, out, len, mtu, &limits)?;
            let rekey = kp.wants_rekey_on_send(now, &limits);
            self.pending_keepalive = false;
            self.on_data_sent(now, len);
            if rekey {
                self.request_handshake(now, false);
            }
            return Ok(Some(n));
        }
        if self.pending_keepalive {
            let n = kp.seal(now, out, 0, mtu, &limits)?;
            self.pending_keepalive = false;
            self.stats.keepalives_sent += 1;
            self.on_traversal(now);
            self.on_authenticated_sent();
            if std::mem::take(&mut self.rearm_keepalive) {
                self.timers.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
            }
            return Ok(Some(n));
        }
        Ok(None)
    }

    fn send_initiation(&mut self, now: Instant, out: &mut [u8]) -> Result<usize, Error> {
        let have = out.len();
        let Some(out) = out.first_chunk_mut::<INITIATION_LEN>() else {
            return Err(Error::BufferTooSmall {
                need: INITIATION_LEN,
                have,
            });
        };
        let local_index = self.new_index();
        let ephemeral = self.new_ephemeral();
        let state = noise::create_initiation(
            &self.identity,
            &self.peer,
            ephemeral,
            local_index,
            Tai64N::from_instant(now),
            out,
        )?;
        self.maker.stamp(now, out)?;
        self.handshake = Some(state);
        self.last_sent_handshake = Some(now);
        self.gave_up = false;
        self.on_traversal(now);
        self.on_authenticated_sent();
        self.timers.retransmit_handshake =
            Some(now + REKEY_TIMEOUT + timers::jitter(&mut *self.rng));
        self.stats.initiations_sent += 1;
        Ok(INITIATION_LEN)
    }

    /// Asks for an initiation at the next flush. A fresh request (not a retry) restarts the
    /// REKEY_ATTEMPT_TIME budget, as traffic waiting for a session keeps it trying.
    fn request_handshake(&mut self, now: Instant, retry: bool) {
        if !retry {
            self.attempts_started = Some(now);
        }
        self.pending_initiation = true;
    }

    /// A keepalive to send: now if a session can carry it, else staged behind a handshake.
    fn queue_keepalive(&mut self, now: Instant) {
        if self.keypairs.sendable(now, &self.config.limits).is_some() {
            self.pending_keepalive = true;
        } else {
            if self.staged.is_empty() {
                self.staged.push(&[]);
            }
            self.request_handshake(now, false);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        if expired(&mut self.timers.retransmit_handshake, now) {
            let budget_spent = self
                .attempts_started
                .is_none_or(|start| now.has_elapsed(start, REKEY_ATTEMPT_TIME));
            if budget_spent {
                // Give up: drop what waited, keep no keepalive, wipe keys later.
                self.gave_up = true;
                self.timers.send_keepalive = None;
                self.pending_keepalive = false;
                for _ in 0..self.staged.purge() {
                    self.stats.count_drop(DropReason::StagedOverflow);
                }
                if self.timers.zero_key_material.is_none() {
                    self.timers.zero_key_material = Some(now + ZERO_KEYS_AFTER);
                }
            } else {
                self.request_handshake(now, true);
            }
        }
        if expired(&mut self.timers.send_keepalive, now) {
            self.rearm_keepalive = std::mem::take(&mut self.timers.need_another_keepalive);
            self.queue_keepalive(now);
        }
        if expired(&mut self.timers.new_handshake, now) {
            self.request_handshake(now, false);
        }
        if expired(&mut self.timers.zero_key_material, now) {
            self.handshake = None;
            self.keypairs.clear();
            self.pending_keepalive = false;
            self.pending_initiation = false;
            self.timers.retransmit_handshake = None;
            self.timers.new_handshake = None;
            self.timers.send_keepalive = None;
            for _ in 0..self.staged.purge() {
                self.stats.count_drop(DropReason::StagedOverflow);
            }
        }
        if expired(&mut self.timers.persistent_keepalive, now)
            && self.config.persistent_keepalive.is_some()
        {
            self.queue_keepalive(now);
        }
    }

    // ----- timer hooks (named after the events of the protocol) -----

    fn on_handshake_complete(&mut self, now: Instant) {
        self.timers.retransmit_handshake = None;
        self.attempts_started = None;
        self.sent_lastminute_handshake = false;
        self.gave_up = false;
        self.last_handshake = Some(now);
        self.stats.handshakes_completed += 1;
    }

    fn on_traversal(&mut self, now: Instant) {
        if let Some(interval) = self.config.persistent_keepalive {
            self.timers.persistent_keepalive = Some(now + interval);
        }
    }

    fn on_authenticated_sent(&mut self) {
        self.timers.send_keepalive = None;
    }

    fn on_data_sent(&mut self, now: Instant, len: usize) {
        if len > 0 {
            self.seen.tx = Some(now);
        }
        self.on_traversal(now);
        self.on_authenticated_sent();
        if len == 0 {
            self.stats.keepalives_sent += 1;
            return;
        }
        if self.timers.new_handshake.is_none() {
            self.timers.new_handshake =
                Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + timers::jitter(&mut *self.rng));
        }
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
    }

    fn keep_key_fresh_on_receive(&mut self, now: Instant) {
        if self.sent_lastminute_handshake {
            return;
        }
        let old =
            self.keypairs.current.as_ref().is_some_and(|k| {
                k.initiator && now.has_elapsed(k.created, REKEY_AFTER_TIME_RECEIVING)
            });
        if old {
            self.sent_lastminute_handshake = true;
            self.request_handshake(now, false);
        }
    }

    // ----- helpers -----

    /// A fresh local index: random high half, this tunnel's slot in the low half, unused by
    /// our other sessions.
    fn new_index(&mut self) -> u32 {
        let mut index = 0;
        for _ in 0..8 {
            index = (self.rng.next_u32() & 0xffff_0000) | u32::from(self.slot);
            let in_flight = self
                .handshake
                .as_ref()
                .is_some_and(|h| h.local_index == index);
            if !in_flight && !self.keypairs.uses_index(index) {
                break;
            }
        }
        index
    }

    fn new_ephemeral(&mut self) -> StaticSecret {
        let mut bytes = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(&mut bytes[..]);
        StaticSecret::from(*bytes)
    }
}

impl<A: Aead> Tunnel<A> {
    pub(crate) fn count_handshake_dh(&mut self) {
        self.stats.handshake_dh += 1;
    }

    pub(crate) fn count_error(&mut self, e: &Error) {
        self.stats.count_drop(e.reason());
    }
}

#[cfg(test)]
impl<A: Aead> Tunnel<A> {
    pub(crate) fn maker_for_tests(&mut self) -> &mut CookieMaker {
        &mut self.maker
    }
}
