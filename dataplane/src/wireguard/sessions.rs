//! What the forwarding workers need of a [`Device`](super::Device) to seal and open data
//! messages on every core: a snapshot of each tunnel's keypairs and endpoint.
//!
//! The device stays single-owner (handshakes, cookies, timers run in one place); whenever its
//! sessions change the owner builds a new [`SessionTable`] and publishes it (the gateway swaps
//! it in with arc-swap, as it does route tables). Keypairs are shared, not copied: their
//! counters and replay windows are atomics, so a session is the same session whichever core
//! seals or opens on it. Workers never touch the timers; the owner's
//! [`Tunnel::absorb`](super::Tunnel::absorb) reads the activity they record on the keypairs.

use core::hash::{Hash, Hasher};
use core::net::SocketAddr;
use std::sync::Arc;

use super::aead::{Aead, RingChaCha20Poly1305};
use super::device::TunnelId;
use super::messages::{DataMut, DATA_HEADER_LEN};
use super::session::{Keypair, Limits};
use super::time::Instant;
use super::transport;
use super::Error;

/// A data message opened by [`SessionTable::open`]: the inner packet is at
/// `datagram[DATA_HEADER_LEN..DATA_HEADER_LEN + len]`; `len` 0 is a keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub tunnel: TunnelId,
    pub len: usize,
}

struct TunnelSessions<A> {
    /// previous, current, next, retired: whatever the tunnel would accept.
    receive: [Option<Arc<Keypair<A>>>; 4],
    send: Option<Arc<Keypair<A>>>,
    endpoint: Option<SocketAddr>,
    mtu: usize,
    limits: Limits,
}

/// A device's sessions as the workers see them. Built by the owner, read-only afterwards.
pub struct SessionTable<A: Aead = RingChaCha20Poly1305> {
    /// Indexed by tunnel id, the low 16 bits of every local index.
    tunnels: Vec<Option<TunnelSessions<A>>>,
}

impl<A: Aead> Default for SessionTable<A> {
    fn default() -> Self {
        Self {
            tunnels: Vec::new(),
        }
    }
}

impl<A: Aead> SessionTable<A> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            tunnels: (0..n).map(|_| None).collect(),
        }
    }

    pub(crate) fn insert(
        &mut self,
        id: TunnelId,
        keypairs: &super::session::Keypairs<A>,
        endpoint: Option<SocketAddr>,
        mtu: usize,
        limits: Limits,
    ) {
        let slot = usize::from(id.0);
        if self.tunnels.len() <= slot {
            self.tunnels.resize_with(slot + 1, || None);
        }
        if let Some(entry) = self.tunnels.get_mut(slot) {
            *entry = Some(TunnelSessions {
                receive: [
                    keypairs.previous.clone(),
                    keypairs.current.clone(),
                    keypairs.next.clone(),
                    keypairs.retired.clone(),
                ],
                send: keypairs.current.clone(),
                endpoint,
                mtu,
                limits,
            });
        }
    }

    fn get(&self, id: TunnelId) -> Option<&TunnelSessions<A>> {
        self.tunnels.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    /// Opens a data message in place: receiver index to tunnel and keypair, replay check,
    /// decryption, replay record, inner length. Other message types are the owner's
    /// (`Error::UnknownType` is not returned for them: check the type first).
    pub fn open(&self, now: Instant, datagram: &mut [u8]) -> Result<Opened, Error> {
        let mut msg = DataMut::parse(datagram)?;
        let tunnel = TunnelId::of_index(msg.receiver);
        let entry = self.get(tunnel).ok_or(Error::UnknownIndex(msg.receiver))?;
        let kp = entry
            .receive
            .iter()
            .flatten()
            .find(|k| k.local_index == msg.receiver)
            .ok_or(Error::UnknownIndex(msg.receiver))?;
        if !kp.can_receive(now) {
            return Err(Error::SessionExpired);
        }
        let padded = kp.open(now, &mut msg, &entry.limits)?;
        if padded == 0 {
            return Ok(Opened { tunnel, len: 0 });
        }
        let plain = datagram
            .get(DATA_HEADER_LEN..DATA_HEADER_LEN + padded)
            .ok_or(Error::InvalidInnerPacket)?;
        let len = transport::inner_packet_len(plain)?;
        Ok(Opened { tunnel, len })
    }

    /// Seals the inner packet at `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]` in place on the
    /// tunnel's current session; returns the datagram length and where to send it.
    /// `Error::NoSession` means the owner must carry the packet (it stages it and starts a
    /// handshake).
    pub fn seal(
        &self,
        now: Instant,
        tunnel: TunnelId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<(usize, SocketAddr), Error> {
        let entry = self.get(tunnel).ok_or(Error::UnknownTunnel)?;
        let (Some(kp), Some(to)) = (&entry.send, entry.endpoint) else {
            return Err(Error::NoSession);
        };
        if !kp.can_send(now, &entry.limits) {
            return Err(Error::NoSession);
        }
        let n = kp.seal(now, buf, len, entry.mtu, &entry.limits)?;
        Ok((n, to))
    }

    /// The tunnel's inner MTU (for "packet too big" answers).
    pub fn mtu(&self, tunnel: TunnelId) -> Option<usize> {
        self.get(tunnel).map(|e| e.mtu)
    }
}

/// Hashes what a [`SessionTable`] is built from, so the owner rebuilds only on change.
pub(crate) fn fingerprint(
    state: &mut impl Hasher,
    id: TunnelId,
    indices: [Option<u32>; 4],
    endpoint: Option<SocketAddr>,
) {
    id.hash(state);
    indices.hash(state);
    endpoint.hash(state);
}
