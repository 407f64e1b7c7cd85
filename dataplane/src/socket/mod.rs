//! The portable UDP-socket backend: the forwarding engine behind ordinary UDP sockets, for
//! hosts where AF_XDP is not available (or not wanted).
//!
//! VXLAN is UDP 4789 and WireGuard is UDP, so both sides are plain sockets. Each worker thread
//! owns its own socket on every address (the fabric VTEP and each transit), all bound with
//! `SO_REUSEPORT`: the kernel spreads flows over the workers by 4-tuple hash, so one flow stays
//! on one worker (no reordering) and workers share nothing but the published tables. A worker
//! is pinned to its core, sleeps in `poll` when idle, and when woken drains each ready socket
//! in batches: one `recvmmsg`, the engine on every datagram in place, one `sendmmsg` per output
//! socket (with UDP GSO for runs of equal-size datagrams to one peer). No allocation, lock or
//! system call per packet.

pub mod mmsg;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::engine::{self, Clock, PublishedStats, Verdict, WorkerCounter};
use mmsg::{RxBatch, TxQueue};

/// One worker's sockets: one per transit (in transit order) and the fabric's.
pub struct SocketSet {
    pub transits: Vec<UdpSocket>,
    pub fabric: Option<UdpSocket>,
}

/// Binds a non-blocking UDP socket that shares its address with the other workers'.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Bursts arrive faster than a busy worker drains them; larger buffers absorb them. The
    // kernel caps these at net.core.[rw]mem_max, which is fine.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds one worker's sockets.
pub fn bind_worker(transits: &[SocketAddr], fabric: Option<SocketAddr>) -> io::Result<SocketSet> {
    Ok(SocketSet {
        transits: transits
            .iter()
            .map(|a| bind_reuseport(*a))
            .collect::<io::Result<_>>()?,
        fabric: fabric.map(bind_reuseport).transpose()?,
    })
}

/// How a worker runs.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    /// Datagrams per receive batch.
    pub batch: usize,
    /// The core to pin the worker to.
    pub core: Option<usize>,
    /// Send runs of equal-size datagrams with UDP GSO.
    pub gso: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            core: None,
            gso: true,
        }
    }
}

#[derive(Clone, Copy)]
enum Port {
    Transit(usize),
    Fabric,
}

/// A forwarding worker on UDP sockets.
pub struct SocketWorker {
    worker: engine::Worker,
    sockets: SocketSet,
    rx: RxBatch,
    tx_transit: Vec<TxQueue>,
    tx_fabric: TxQueue,
    clock: Clock,
    published: Arc<PublishedStats>,
    config: WorkerConfig,
}

/// How long an idle worker sleeps before looking at its stop flag again.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often counters are published while busy.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);
/// Batches taken from one socket before the others get their turn.
const BATCHES_PER_TURN: usize = 8;

impl SocketWorker {
    pub fn new(
        worker: engine::Worker,
        sockets: SocketSet,
        clock: Clock,
        published: Arc<PublishedStats>,
        config: WorkerConfig,
    ) -> Self {
        let batch = config.batch.max(1);
        Self {
            tx_transit: sockets
                .transits
                .iter()
                .map(|_| TxQueue::new(batch, config.gso))
                .collect(),
            // VXLAN to the leaves goes to many VTEPs: GSO rarely finds a run there.
            tx_fabric: TxQueue::new(batch, config.gso),
            rx: RxBatch::new(batch),
            worker,
            sockets,
            clock,
            published,
            config,
        }
    }

    /// Forwards until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        if let Some(core) = self.config.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(core, "could not pin the worker to its core");
            }
        }
        let ports: Vec<Port> = (0..self.sockets.transits.len())
            .map(Port::Transit)
            .chain(self.sockets.fabric.iter().map(|_| Port::Fabric))
            .collect();
        let mut fds: Vec<libc::pollfd> = self
            .sockets
            .transits
            .iter()
            .chain(self.sockets.fabric.iter())
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut published_at = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `fds` is a live array of `fds.len()` pollfd structures.
            let ready = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    IDLE_POLL.as_millis() as i32,
                )
            };
            if ready > 0 {
                for (fd, port) in fds.iter().zip(&ports) {
                    if fd.revents & (libc::POLLIN | libc::POLLERR) != 0 {
                        self.drain(*port);
                    }
                }
            }
            if published_at.elapsed() >= PUBLISH_EVERY || ready <= 0 {
                self.publish();
                published_at = Instant::now();
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        let slots = self.worker.tunnel_slots();
        self.published.publish(&self.worker.stats, slots);
    }

    /// Takes what one socket has, a few batches at most.
    fn drain(&mut self, port: Port) {
        let Self {
            worker,
            sockets,
            rx,
            tx_transit,
            tx_fabric,
            clock,
            ..
        } = self;
        let socket = match port {
            Port::Transit(t) => sockets.transits.get(t),
            Port::Fabric => sockets.fabric.as_ref(),
        };
        let Some(socket) = socket else { return };
        for _ in 0..BATCHES_PER_TURN {
            let n = match rx.recv(socket.as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    // ICMP errors surface here (a peer's port unreachable): not fatal.
                    tracing::trace!(error = %e, "receive");
                    0
                }
            };
            if n == 0 {
                break;
            }
            worker.stats.add(WorkerCounter::RxBatches, 1);
            worker.stats.add(WorkerCounter::RxPackets, n as u64);
            let now = clock.now();
            for i in 0..n {
                let Some((buf, range, from)) = rx.get(i) else {
                    continue;
                };
                let verdict = match (port, from) {
                    (Port::Transit(t), Some(src)) => worker.from_transit(now, t, src, buf, range),
                    (Port::Fabric, _) => worker.from_fabric(now, buf, range),
                    (Port::Transit(_), None) => continue,
                };
                match verdict {
                    Verdict::Transit { transit, to, range } => {
                        if let Some(q) = tx_transit.get_mut(transit) {
                            q.push(i, range, to);
                        }
                    }
                    Verdict::Fabric { to, range } => tx_fabric.push(i, range, to),
                    Verdict::Consumed | Verdict::Dropped(_) => {}
                }
            }
            for (q, s) in tx_transit.iter_mut().zip(&sockets.transits) {
                if !q.is_empty() {
                    flush(q, s, rx, worker);
                }
            }
            if let Some(s) = &sockets.fabric {
                if !tx_fabric.is_empty() {
                    flush(tx_fabric, s, rx, worker);
                }
            }
            if n < rx.capacity() {
                break;
            }
        }
    }
}

fn flush(q: &mut TxQueue, socket: &UdpSocket, rx: &RxBatch, worker: &mut engine::Worker) {
    let (failed, gso) = (q.failed, q.gso_sends);
    q.flush(socket.as_fd(), rx);
    worker
        .stats
        .add(WorkerCounter::TxFailed, q.failed.wrapping_sub(failed));
    worker
        .stats
        .add(WorkerCounter::GsoSends, q.gso_sends.wrapping_sub(gso));
}
