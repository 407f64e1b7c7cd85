//! The lock-free path from the workers to the owner (the one thread that runs handshakes,
//! timers and the gateway's own services) for the few packets workers do not finish:
//! WireGuard handshake messages, inner packets addressed to the gateway (echo, STAMP, probe
//! replies), and packets that found no session yet (the owner stages them and starts a
//! handshake).
//!
//! Parcels travel in fixed buffers taken from a pool, so nothing is allocated per packet; when
//! the pool or the queue is empty the packet is dropped and counted, which also bounds the
//! work an initiation flood can push onto the owner.

use super::Egress;
use core::net::SocketAddr;
use crossbeam_queue::ArrayQueue;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest datagram a parcel carries (a handshake or an inner packet of a 1420-byte tunnel,
/// with room to spare).
pub const PARCEL_LEN: usize = 2048;

/// What the owner should do with a parcel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParcelKind {
    /// A WireGuard message other than data, received on `transit` from `src`.
    Handshake,
    /// A decrypted inner packet for the gateway itself, from route tunnel `tunnel`.
    Local,
    /// An inner packet for route tunnel `tunnel` that found no session.
    Stage,
    /// A finished UDP payload to `src` out of this side, whose next hop the worker does not
    /// know yet: the owner sends it through the kernel, which resolves the neighbour.
    Send(Egress),
    /// A worker learned that `src`'s IP address is behind the MAC address in the bytes on
    /// this side (from a frame it received): the owner publishes it to every worker, since
    /// a peer's frames may all arrive on another worker's queue.
    Neighbour(Egress),
}

pub struct Parcel {
    pub kind: ParcelKind,
    pub transit: usize,
    pub tunnel: u32,
    /// The peer: where a received packet came from, or where a `Send*` parcel goes.
    pub src: SocketAddr,
    pub len: usize,
    pub buf: Box<[u8; PARCEL_LEN]>,
}

impl Parcel {
    pub fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(..self.len).unwrap_or_default()
    }
}

/// The queues and their buffer pool; shared by all workers and the owner. Parcels go to the
/// owner on one queue and, for backends that transmit frames themselves (AF_XDP), datagrams
/// the owner made (handshake replies, keepalives, probes) come back on the other, to leave by
/// the same path as the data.
pub struct Handoff {
    queue: ArrayQueue<Parcel>,
    back: ArrayQueue<Parcel>,
    pool: ArrayQueue<Box<[u8; PARCEL_LEN]>>,
    waker: atomic_waker::AtomicWaker,
}

impl Handoff {
    /// A queue of `capacity` parcels, with as many buffers allocated up front.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let pool = ArrayQueue::new(capacity);
        for _ in 0..capacity {
            let _ = pool.push(Box::new([0u8; PARCEL_LEN]));
        }
        Self {
            queue: ArrayQueue::new(capacity),
            back: ArrayQueue::new(capacity),
            pool,
            waker: atomic_waker::AtomicWaker::new(),
        }
    }

    /// Copies `bytes` into a parcel for the owner. False when the queue or the pool is
    /// exhausted (the caller counts the drop) or the packet is too large.
    pub fn send(
        &self,
        kind: ParcelKind,
        transit: usize,
        tunnel: u32,
        src: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let sent = self.push(&self.queue, kind, transit, tunnel, src, bytes);
        if sent {
            self.waker.wake();
        }
        sent
    }

    /// Copies a finished UDP payload for `to` out of `egress` into a parcel for the workers
    /// (ring their [`Doorbell`]s after). False when the queue or the pool is exhausted: the
    /// owner then sends it through the kernel.
    pub fn send_back(&self, egress: Egress, to: SocketAddr, bytes: &[u8]) -> bool {
        self.push(&self.back, ParcelKind::Send(egress), 0, 0, to, bytes)
    }

    /// Whether the owner gave the workers something to send (one atomic load).
    pub fn has_back(&self) -> bool {
        !self.back.is_empty()
    }

    /// The next datagram the owner gave the workers to send, if any. Give its buffer back
    /// with [`Handoff::recycle`].
    pub fn recv_back(&self) -> Option<Parcel> {
        self.back.pop()
    }

    fn push(
        &self,
        queue: &ArrayQueue<Parcel>,
        kind: ParcelKind,
        transit: usize,
        tunnel: u32,
        src: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Some(mut buf) = self.pool.pop() else {
            return false;
        };
        let Some(dst) = buf.get_mut(..bytes.len()) else {
            let _ = self.pool.push(buf);
            return false;
        };
        dst.copy_from_slice(bytes);
        let parcel = Parcel {
            kind,
            transit,
            tunnel,
            src,
            len: bytes.len(),
            buf,
        };
        match queue.push(parcel) {
            Ok(()) => true,
            Err(p) => {
                let _ = self.pool.push(p.buf);
                false
            }
        }
    }

    /// The next parcel, if any. Give its buffer back with [`Handoff::recycle`].
    pub fn recv(&self) -> Option<Parcel> {
        self.queue.pop()
    }

    pub fn recycle(&self, parcel: Parcel) {
        let _ = self.pool.push(parcel.buf);
    }

    /// For an async owner: ready when a parcel is queued (registers the waker first, so a
    /// parcel sent in between is not missed).
    pub fn poll_ready(&self, cx: &mut core::task::Context<'_>) -> core::task::Poll<()> {
        self.waker.register(cx.waker());
        if self.queue.is_empty() {
            core::task::Poll::Pending
        } else {
            core::task::Poll::Ready(())
        }
    }
}

/// Wakes a worker sleeping in `poll(2)` (an eventfd among the descriptors it waits on): the
/// owner rings it after putting a datagram on the way back.
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd. A full counter
        // (EAGAIN) means it is already rung.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Silences it (after waking): the worker then looks at the queue.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from our eventfd; EAGAIN (not
        // rung) is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parcels_round_trip_and_a_full_queue_refuses() {
        let h = Handoff::new(2);
        let src: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        assert!(h.send(ParcelKind::Handshake, 1, 0, src, &[1, 2, 3]));
        assert!(h.send(ParcelKind::Local, 0, 7, src, &[4]));
        assert!(!h.send(ParcelKind::Local, 0, 7, src, &[5]), "pool empty");
        assert!(!h.send(ParcelKind::Local, 0, 7, src, &[0; PARCEL_LEN + 1]));
        let p = h.recv().unwrap();
        assert_eq!(
            (p.kind, p.transit, p.bytes()),
            (ParcelKind::Handshake, 1, &[1u8, 2, 3][..])
        );
        h.recycle(p);
        assert!(h.send(ParcelKind::Stage, 0, 3, src, &[6, 6]));
        let p = h.recv().unwrap();
        assert_eq!(
            (p.kind, p.tunnel, p.bytes()),
            (ParcelKind::Local, 7, &[4u8][..])
        );
        let p2 = h.recv().unwrap();
        assert_eq!(p2.bytes(), &[6, 6]);
        assert!(h.recv().is_none());
    }

    #[test]
    fn datagrams_come_back_on_their_own_queue_from_the_same_pool() {
        let h = Handoff::new(2);
        let to: SocketAddr = "192.0.2.9:51820".parse().unwrap();
        assert!(h.send_back(Egress::Transit(1), to, &[9, 9]));
        assert!(h.recv().is_none(), "not on the owner's queue");
        assert!(h.send(ParcelKind::Local, 0, 0, to, &[1]));
        assert!(
            !h.send_back(Egress::Transit(0), to, &[8]),
            "the pool is shared"
        );
        let p = h.recv_back().unwrap();
        assert_eq!(
            (p.kind, p.src, p.bytes()),
            (ParcelKind::Send(Egress::Transit(1)), to, &[9u8, 9][..])
        );
        h.recycle(p);
        assert!(h.recv_back().is_none());
        assert!(h.send_back(Egress::Transit(0), to, &[8]));
    }

    #[test]
    fn a_doorbell_wakes_poll_until_cleared() {
        let bell = Doorbell::new().unwrap();
        let readable = |bell: &Doorbell| {
            let mut fds = [libc::pollfd {
                fd: bell.fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd; a zero timeout does not block.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) == 1 }
        };
        assert!(!readable(&bell));
        bell.ring();
        bell.ring();
        assert!(readable(&bell));
        bell.clear();
        assert!(!readable(&bell), "one clear silences every ring before it");
    }
}
