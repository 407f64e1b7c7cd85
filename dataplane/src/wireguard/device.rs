//! Several tunnels behind one static key and one socket: dispatch by receiver index.
//!
//! Local indices carry their tunnel's slot in the low 16 bits, so responses, cookie replies
//! and data find their tunnel without a table lookup. Initiations carry no receiver index:
//! the device checks mac1 (and mac2 under load) once, decrypts the initiator's static key
//! with one Diffie-Hellman, and hands the rest to the tunnel configured for that key (the one
//! whose endpoint is the datagram's source when several share a key, as gatewan's tunnels
//! between two gateways over different transits do).

use core::net::SocketAddr;
use rand_core::CryptoRngCore;
use std::sync::Arc;

use super::aead::{Aead, RingChaCha20Poly1305};
use super::cookie::{CookieChecker, LoadMonitor, MacVerdict};
use super::error::DropReason;
use super::messages::{self, Initiation, MessageType};
use super::noise::{self, StaticIdentity};
use super::sessions::{self, SessionTable};
use super::time::Instant;
use super::tunnel::{Action, Encapsulated, PeerConfig, Tunnel, DEFAULT_UNDER_LOAD_THRESHOLD};
use super::Error;

/// Identifies a tunnel of a [`Device`]; also the low 16 bits of its local indices.
pub use crate::tunnel_id::TunnelId;

struct Entry<A: Aead> {
    tunnel: Tunnel<A>,
    endpoint: Option<SocketAddr>,
}

/// A set of tunnels sharing a static identity.
pub struct Device<A: Aead = RingChaCha20Poly1305> {
    identity: Arc<StaticIdentity>,
    checker: CookieChecker,
    load: LoadMonitor,
    rng: Box<dyn CryptoRngCore + Send>,
    tunnels: Vec<Option<Entry<A>>>,
    drops: [u64; DropReason::COUNT],
}

impl<A: Aead> Device<A> {
    pub fn new(private_key: [u8; 32], rng: Box<dyn CryptoRngCore + Send>) -> Self {
        let identity = Arc::new(StaticIdentity::new(private_key));
        Self {
            checker: CookieChecker::new(identity.public_key()),
            load: LoadMonitor::new(DEFAULT_UNDER_LOAD_THRESHOLD),
            identity,
            rng,
            tunnels: Vec::new(),
            drops: [0; DropReason::COUNT],
        }
    }

    pub fn public_key(&self) -> &[u8; 32] {
        self.identity.public_key()
    }

    /// Adds a tunnel in the first free slot; `endpoint` tells tunnels with the same peer key
    /// apart.
    pub fn add_tunnel(
        &mut self,
        config: PeerConfig,
        endpoint: Option<SocketAddr>,
        rng: Box<dyn CryptoRngCore + Send>,
    ) -> Result<TunnelId, Error> {
        let free = self
            .tunnels
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.tunnels.len());
        let slot = u16::try_from(free).map_err(|_| Error::UnknownTunnel)?;
        self.add_tunnel_at(TunnelId(slot), config, endpoint, rng)
    }

    /// Adds a tunnel with the id the caller chose (a gateway gives a tunnel the same number
    /// in its device as in its route tables); `UnknownTunnel` if that id is taken.
    pub fn add_tunnel_at(
        &mut self,
        id: TunnelId,
        config: PeerConfig,
        endpoint: Option<SocketAddr>,
        rng: Box<dyn CryptoRngCore + Send>,
    ) -> Result<TunnelId, Error> {
        let slot = usize::from(id.0);
        if self.tunnels.get(slot).is_some_and(Option::is_some) {
            return Err(Error::UnknownTunnel);
        }
        let tunnel = Tunnel::with_identity(self.identity.clone(), config, id.0, rng)?;
        if self.tunnels.len() <= slot {
            self.tunnels.resize_with(slot + 1, || None);
        }
        if let Some(e) = self.tunnels.get_mut(slot) {
            *e = Some(Entry { tunnel, endpoint });
        }
        Ok(id)
    }

    /// Removes a tunnel (its keys are dropped and wiped).
    pub fn remove_tunnel(&mut self, id: TunnelId) -> Option<Tunnel<A>> {
        self.tunnels
            .get_mut(usize::from(id.0))?
            .take()
            .map(|e| e.tunnel)
    }

    pub fn tunnel(&self, id: TunnelId) -> Option<&Tunnel<A>> {
        self.tunnels
            .get(usize::from(id.0))?
            .as_ref()
            .map(|e| &e.tunnel)
    }

    pub fn tunnel_mut(&mut self, id: TunnelId) -> Option<&mut Tunnel<A>> {
        self.tunnels
            .get_mut(usize::from(id.0))?
            .as_mut()
            .map(|e| &mut e.tunnel)
    }

    /// Updates the endpoint used to pick among tunnels sharing a peer key.
    pub fn set_endpoint(&mut self, id: TunnelId, endpoint: Option<SocketAddr>) {
        if let Some(Some(e)) = self.tunnels.get_mut(usize::from(id.0)) {
            e.endpoint = endpoint;
        }
    }

    /// Where tunnel `id` sends: its configured endpoint, or the last one the peer proved.
    pub fn endpoint(&self, id: TunnelId) -> Option<SocketAddr> {
        self.tunnels.get(usize::from(id.0))?.as_ref()?.endpoint
    }

    /// Ids of all tunnels.
    pub fn ids(&self) -> impl Iterator<Item = TunnelId> + '_ {
        self.tunnels
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .filter_map(|(i, _)| u16::try_from(i).ok().map(TunnelId))
    }

    /// Drops counted before a datagram reached a tunnel.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// Demands cookies on every tunnel for the next second.
    pub fn set_under_load(&mut self, now: Instant) {
        self.load.force(now);
        for e in self.tunnels.iter_mut().flatten() {
            e.tunnel.set_under_load(now);
        }
    }

    /// Handles a datagram from `src`; returns the tunnel it concerned (if any was found)
    /// and the outcome, as [`Tunnel::handle_datagram`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &mut [u8],
        out: &mut [u8],
    ) -> (Option<TunnelId>, Result<Action, Error>) {
        let kind = match messages::message_type(datagram) {
            Ok(kind) => kind,
            Err(e) => return (None, Err(self.count(e))),
        };
        if kind != MessageType::Initiation {
            let Some(index) = messages::receiver_index(datagram) else {
                let e = Error::BadLength {
                    kind: datagram.first().copied().unwrap_or(0),
                    len: datagram.len(),
                };
                return (None, Err(self.count(e)));
            };
            let id = TunnelId::of_index(index);
            let Some(t) = self.tunnel_mut(id) else {
                return (None, Err(self.count(Error::UnknownIndex(index))));
            };
            return (Some(id), t.handle_datagram(now, src, datagram, out));
        }
        match self.dispatch_initiation(now, src, datagram, out) {
            Ok((id, action)) => (id, Ok(action)),
            Err((id, e)) => {
                let e = match id.and_then(|id| self.tunnel_mut(id)) {
                    // The tunnel counted it.
                    Some(_) => e,
                    None => self.count(e),
                };
                (id, Err(e))
            }
        }
    }

    fn dispatch_initiation(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<(Option<TunnelId>, Action), (Option<TunnelId>, Error)> {
        let msg = Initiation::parse(datagram).map_err(|e| (None, e))?;
        let under_load = self.load.is_under_load(now);
        let verdict = self
            .checker
            .verify(now, &mut *self.rng, datagram, src, under_load)
            .map_err(|e| (None, e))?;
        self.load.record(now);
        if verdict == MacVerdict::NeedCookie {
            let n = self
                .checker
                .write_reply(now, &mut *self.rng, datagram, msg.sender, src, out)
                .map_err(|e| (None, e))?;
            return Ok((None, Action::SendCookieReply(n)));
        }
        let partial = noise::open_initiation_static(&self.identity, &msg).map_err(|e| (None, e))?;
        let mut candidates = self.tunnels.iter().enumerate().filter_map(|(i, e)| {
            e.as_ref()
                .filter(|e| e.tunnel.config().public_key == partial.peer_public)
                .map(|e| (i, e.endpoint == Some(src)))
        });
        let first = candidates.next();
        let chosen = first
            .filter(|(_, by_endpoint)| *by_endpoint)
            .or_else(|| candidates.find(|(_, by_endpoint)| *by_endpoint))
            .or(first)
            .and_then(|(i, _)| u16::try_from(i).ok())
            .map(TunnelId);
        let Some(id) = chosen else {
            return Err((None, Error::UnknownPeer));
        };
        let Some(t) = self.tunnel_mut(id) else {
            return Err((None, Error::UnknownPeer));
        };
        t.count_handshake_dh();
        match t.answer_initiation(now, partial, &msg, out) {
            Ok(a) => Ok((Some(id), a)),
            Err(e) => {
                t.count_error(&e);
                Err((Some(id), e))
            }
        }
    }

    /// Encapsulates for tunnel `id` (see [`Tunnel::encapsulate`]).
    pub fn encapsulate(
        &mut self,
        now: Instant,
        id: TunnelId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Encapsulated, Error> {
        match self.tunnel_mut(id) {
            Some(t) => t.encapsulate(now, buf, len),
            None => Err(self.count(Error::UnknownTunnel)),
        }
    }

    /// Ticks every tunnel; returns the first datagram to send and its tunnel. Call until
    /// `None`.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<(TunnelId, usize)>, Error> {
        for (i, e) in self.tunnels.iter_mut().enumerate() {
            let Some(e) = e else { continue };
            if let Some(n) = e.tunnel.tick(now, out)? {
                let id = u16::try_from(i).map_err(|_| Error::UnknownTunnel)?;
                return Ok(Some((TunnelId(id), n)));
            }
        }
        Ok(None)
    }

    /// The earliest timer deadline over all tunnels.
    /// Feeds every tunnel's timers with what workers did on its sessions (see
    /// [`Tunnel::absorb`]). [`Device::tick`] does this too.
    pub fn absorb(&mut self, now: Instant) {
        for e in self.tunnels.iter_mut().flatten() {
            e.tunnel.absorb(now);
        }
    }

    /// A snapshot of every tunnel's sessions and endpoint for the workers.
    pub fn session_table(&self) -> SessionTable<A> {
        let mut table = SessionTable::with_capacity(self.tunnels.len());
        for (i, e) in self.tunnels.iter().enumerate() {
            let (Some(e), Ok(id)) = (e, u16::try_from(i)) else {
                continue;
            };
            let config = e.tunnel.config();
            table.insert(
                TunnelId(id),
                e.tunnel.keypairs(),
                e.endpoint,
                config.mtu,
                config.limits,
            );
        }
        table
    }

    /// Changes whenever [`Device::session_table`] would build a different table.
    pub fn sessions_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (i, e) in self.tunnels.iter().enumerate() {
            if let (Some(e), Ok(id)) = (e, u16::try_from(i)) {
                sessions::fingerprint(&mut h, TunnelId(id), e.tunnel.session_indices(), e.endpoint);
            }
        }
        std::hash::Hasher::finish(&h)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.tunnels
            .iter()
            .flatten()
            .filter_map(|e| e.tunnel.next_deadline())
            .min()
    }

    fn count(&mut self, e: Error) -> Error {
        if let Some(c) = self.drops.get_mut(e.reason() as usize) {
            *c = c.saturating_add(1);
        }
        e
    }
}
