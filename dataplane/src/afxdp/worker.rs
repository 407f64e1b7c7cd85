//! [`XskWorker`]: one UMEM and the AF_XDP sockets ("ports") one worker thread drives.

use std::num::NonZeroU32;
use std::os::fd::{BorrowedFd, RawFd};

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::sys::{self, Kick, Mapping};
use super::{
    errno, Action, AfXdpError, BindMode, BusyPollState, Frame, KernelXskStats, PortId, PortInfo,
    XskConfig, XskStats, KERNEL_HEADROOM,
};
use crate::ifname;

/// Ports per worker: one per interface it serves (fabric and transit, in practice).
pub const MAX_PORTS: usize = u8::MAX as usize;

/// How long [`XskWorker::add_port`] waits for a queue another socket is still releasing
/// (measured: under 100 ms on veth).
const BIND_BUSY_RETRIES: u32 = 100;
const BIND_BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// xdpilone's UMEM handle: its only non-`Send` part is the pointer to our own mapping, which
/// it never dereferences after registration (frames are located by [`XskWorker`] itself).
struct UmemHandle(Umem);

// SAFETY: see above; the registration's socket descriptor and bookkeeping (an Arc'd spin lock)
// are thread-safe, and the worker is used by one thread at a time (&mut self).
unsafe impl Send for UmemHandle {}

/// Where a worker's frames are at one moment; they always add up to [`XskWorker::frames`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameAccounting {
    /// In the free list.
    pub free: u64,
    /// Posted to fill rings and not received yet.
    pub fill: u64,
    /// On TX rings or being sent, not completed yet.
    pub tx_in_flight: u64,
    /// Waiting for room on a TX ring.
    pub staged: u64,
}

impl FrameAccounting {
    pub fn total(&self) -> u64 {
        self.free + self.fill + self.tx_in_flight + self.staged
    }
}

/// Everything one worker thread owns: a UMEM of `frames` chunks and one AF_XDP socket (port)
/// per (interface, queue) it serves, all sharing the UMEM. Frames received on any port can be
/// transmitted on any port without a copy.
///
/// Create it, and add its ports, in the network namespace of the interfaces; then move it to
/// its thread. If [`XskWorker::add_port`] fails, drop the worker and start again.
pub struct XskWorker {
    // Field order is drop order: rings and sockets go before the UMEM registration, which goes
    // before the memory it registered.
    rx: Vec<RingRx>,
    tx: Vec<RingTx>,
    devices: Vec<DeviceQueue>,
    umem: UmemHandle,
    area: Mapping,
    info: Vec<PortInfo>,
    stats: Vec<XskStats>,
    /// Descriptors bound for each port's TX ring, flushed once per batch. Capacity ring_size,
    /// never grown.
    stage: Vec<Vec<XdpDesc>>,
    /// Chunk addresses owned by userspace and unused. Capacity `frames`, never grown.
    free: Vec<u64>,
    /// Frames posted to each port's fill ring and not received yet.
    in_fill: Vec<u64>,
    busy: Vec<bool>,
    pollfds: Vec<libc::pollfd>,
    config: XskConfig,
    frame_mask: u64,
}

impl XskWorker {
    /// Maps and registers the UMEM. Needs CAP_NET_RAW, and CAP_IPC_LOCK when the UMEM is
    /// larger than the memlock limit.
    pub fn new(config: XskConfig) -> Result<Self, AfXdpError> {
        config.validate()?;
        let bytes = config.frames as usize * config.frame_size as usize;
        let area = Mapping::new(bytes).map_err(|source| AfXdpError::Mmap { bytes, source })?;
        let umem_config = UmemConfig {
            fill_size: config.ring_size,
            complete_size: config.ring_size,
            frame_size: config.frame_size,
            headroom: config.headroom,
            flags: 0,
        };
        // SAFETY: the area is page-aligned (mmap), `bytes` long, and outlives the Umem: the
        // worker drops `umem` before `area`.
        let umem = unsafe { Umem::new(umem_config, area.as_slice_ptr()) }
            .map_err(|e| AfXdpError::Umem(errno(e)))?;
        let mut free = Vec::with_capacity(config.frames as usize);
        // Hand out high addresses last: frames near the start are reused first.
        free.extend(
            (0..u64::from(config.frames))
                .rev()
                .map(|i| i * u64::from(config.frame_size)),
        );
        Ok(XskWorker {
            rx: Vec::new(),
            tx: Vec::new(),
            devices: Vec::new(),
            umem: UmemHandle(umem),
            area,
            info: Vec::new(),
            stats: Vec::new(),
            stage: Vec::new(),
            free,
            in_fill: Vec::new(),
            busy: Vec::new(),
            pollfds: Vec::new(),
            frame_mask: u64::from(config.frame_size) - 1,
            config,
        })
    }

    /// Opens an AF_XDP socket on (`interface`, `queue`) sharing this worker's UMEM and fills
    /// its fill ring. The first port decides the mode (zero-copy or copy, need_wakeup) for all:
    /// the kernel gives sockets sharing a UMEM the mode of its owner.
    ///
    /// Register [`XskWorker::fd`] in the interface's XDP program (XSKMAP slot `queue`) for
    /// packets to arrive.
    pub fn add_port(&mut self, interface: &str, queue: u32) -> Result<PortId, AfXdpError> {
        if self.devices.len() >= MAX_PORTS {
            return Err(AfXdpError::TooManyPorts(MAX_PORTS));
        }
        let id = PortId(self.devices.len() as u8);
        let if_index = ifname::index(interface)?;
        let fail = |step: &'static str| {
            move |e: xdpilone::Errno| AfXdpError::Socket {
                interface: interface.to_owned(),
                queue,
                step,
                source: errno(e),
            }
        };
        let mut info = IfInfo::invalid();
        info.from_ifindex(if_index)
            .map_err(fail("resolving the interface"))?;
        info.set_queue(queue);
        let first = self.devices.is_empty();
        // The first port lives on the UMEM's own socket; later ones get a socket of their own
        // bound with XDP_SHARED_UMEM (and, on another device or queue, their own fill and
        // completion rings).
        let socket = if first {
            Socket::with_shared(&info, &self.umem.0)
        } else {
            Socket::new(&info)
        }
        .map_err(fail("creating the socket"))?;
        let device = self
            .umem
            .0
            .fq_cq(&socket)
            .map_err(fail("setting up the fill and completion rings"))?;
        // The kernel refuses mode flags on a shared-UMEM bind: they come from the first socket.
        let mut bind_flags = 0;
        if first {
            if self.config.need_wakeup {
                bind_flags |= SocketConfig::XDP_BIND_NEED_WAKEUP;
            }
            bind_flags |= match self.config.bind {
                BindMode::Auto => 0,
                BindMode::ZeroCopy => SocketConfig::XDP_BIND_ZEROCOPY,
                BindMode::Copy => SocketConfig::XDP_BIND_COPY,
            };
        }
        let rings = SocketConfig {
            rx_size: NonZeroU32::new(self.config.ring_size),
            tx_size: NonZeroU32::new(self.config.ring_size),
            bind_flags,
        };
        let user = self
            .umem
            .0
            .rx_tx(&socket, &rings)
            .map_err(fail("setting up the RX and TX rings"))?;
        let rx = user.map_rx().map_err(fail("mapping the RX ring"))?;
        let tx = user.map_tx().map_err(fail("mapping the TX ring"))?;
        let fd = device.as_raw_fd();
        let busy_poll = self.set_busy_poll(fd);
        self.bind(&user).map_err(fail("binding"))?;
        let zero_copy = sys::is_zero_copy(fd).map_err(|source| AfXdpError::Socket {
            interface: interface.to_owned(),
            queue,
            step: "reading the bound mode",
            source,
        })?;
        let need_wakeup = match self.info.first() {
            Some(owner) => owner.need_wakeup,
            None => self.config.need_wakeup,
        };
        if !first
            && self
                .info
                .first()
                .is_some_and(|owner| owner.zero_copy != zero_copy)
        {
            tracing::warn!(
                interface,
                queue,
                "port bound in a different mode than the UMEM's owner"
            );
        }
        tracing::debug!(
            interface,
            queue,
            zero_copy,
            ?busy_poll,
            "AF_XDP socket bound"
        );
        self.busy.push(busy_poll == BusyPollState::On);
        self.info.push(PortInfo {
            interface: interface.to_owned(),
            if_index,
            queue,
            zero_copy,
            need_wakeup,
            busy_poll,
        });
        self.rx.push(rx);
        self.tx.push(tx);
        self.devices.push(device);
        self.stats.push(XskStats::default());
        self.stage
            .push(Vec::with_capacity(self.config.ring_size as usize));
        self.in_fill.push(0);
        self.pollfds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        self.refill();
        Ok(id)
    }

    /// Binds, waiting out a queue still held by a socket closed just before: the kernel
    /// releases a socket's queue in deferred work, so an immediate rebind (a restarted worker)
    /// can see EBUSY for a few milliseconds.
    fn bind(&self, user: &User) -> Result<(), xdpilone::Errno> {
        let mut tries = 0;
        loop {
            match self.umem.0.bind(user) {
                Err(e) if e.get_raw() == libc::EBUSY && tries < BIND_BUSY_RETRIES => {
                    tries += 1;
                    std::thread::sleep(BIND_BUSY_PAUSE);
                }
                other => return other,
            }
        }
    }

    fn set_busy_poll(&self, fd: RawFd) -> BusyPollState {
        let Some(busy) = self.config.busy_poll else {
            return BusyPollState::Off;
        };
        let options = [
            ("SO_PREFER_BUSY_POLL", libc::SO_PREFER_BUSY_POLL, 1),
            (
                "SO_BUSY_POLL",
                libc::SO_BUSY_POLL,
                i32::try_from(busy.usecs).unwrap_or(i32::MAX),
            ),
            (
                "SO_BUSY_POLL_BUDGET",
                libc::SO_BUSY_POLL_BUDGET,
                i32::from(busy.budget),
            ),
        ];
        for (name, option, value) in options {
            if let Err(e) = sys::set_int_option(fd, option, value) {
                // EOPNOTSUPP on kernels without it, EPERM above the sysctl limits without
                // CAP_NET_ADMIN: run on need_wakeup instead.
                tracing::info!(option = name, error = %e, "busy polling unavailable");
                return BusyPollState::Refused(format!("{name}: {e}"));
            }
        }
        BusyPollState::On
    }

    /// The socket of `port`, to register in the XDP program's XSKMAP.
    pub fn fd(&self, port: PortId) -> Result<BorrowedFd<'_>, AfXdpError> {
        let device = self
            .devices
            .get(port.index())
            .ok_or(AfXdpError::NoPort(port))?;
        // SAFETY: the descriptor stays open as long as `device`, which the borrow outlives not.
        Ok(unsafe { BorrowedFd::borrow_raw(device.as_raw_fd()) })
    }

    pub fn ports(&self) -> impl Iterator<Item = (PortId, &PortInfo)> {
        self.info
            .iter()
            .enumerate()
            .map(|(i, info)| (PortId(i as u8), info))
    }

    pub fn port_info(&self, port: PortId) -> Option<&PortInfo> {
        self.info.get(port.index())
    }

    /// The worker's counters for `port`.
    pub fn stats(&self, port: PortId) -> Option<XskStats> {
        self.stats.get(port.index()).copied()
    }

    /// The kernel's counters for `port` (one getsockopt; not for the packet path).
    pub fn kernel_stats(&self, port: PortId) -> Result<KernelXskStats, AfXdpError> {
        let device = self
            .devices
            .get(port.index())
            .ok_or(AfXdpError::NoPort(port))?;
        let info = self
            .info
            .get(port.index())
            .ok_or(AfXdpError::NoPort(port))?;
        let s = device.statistics_v2().map_err(|e| AfXdpError::Socket {
            interface: info.interface.clone(),
            queue: info.queue,
            step: "reading XDP_STATISTICS",
            source: errno(e),
        })?;
        Ok(KernelXskStats {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            tx_ring_empty: s.tx_ring_empty_descs,
        })
    }

    pub fn config(&self) -> &XskConfig {
        &self.config
    }

    /// Frames in the UMEM.
    pub fn frames(&self) -> u32 {
        self.config.frames
    }

    /// Where the frames are now. Frames the kernel received into a ring but the worker has not
    /// read yet count as `fill`.
    pub fn frame_accounting(&self) -> FrameAccounting {
        let tx_in_flight = self
            .stats
            .iter()
            .map(|s| s.tx_packets - s.tx_completed)
            .sum();
        FrameAccounting {
            free: self.free.len() as u64,
            fill: self.in_fill.iter().sum(),
            tx_in_flight,
            staged: self.stage.iter().map(|s| s.len() as u64).sum(),
        }
    }

    /// One round over all ports: recycle completed transmissions, top up the fill rings,
    /// receive a batch per port and hand each frame to `f`, then put what `f` chose to send on
    /// the TX rings and wake the kernel where it asks for it. Returns the frames received.
    pub fn poll<F>(&mut self, mut f: F) -> usize
    where
        F: FnMut(&mut Frame<'_>) -> Action,
    {
        self.reap_all();
        self.refill();
        let mut received = 0;
        for port in 0..self.rx.len() {
            let n = self.receive(port, &mut f);
            if n == 0 {
                self.kick_rx(port);
            }
            received += n;
        }
        self.flush();
        received
    }

    /// Takes a free frame for a packet the worker originates (a handshake reply from the
    /// control side, say): `f` writes it (e.g. `set_len` then `data_mut`, packet data starts at
    /// the usual receive offset) and says where it goes. It is transmitted by the next
    /// [`XskWorker::flush`] or [`XskWorker::poll`]. Returns false, without calling `f`, when
    /// no frame is free.
    pub fn send<F>(&mut self, f: F) -> bool
    where
        F: FnOnce(&mut Frame<'_>) -> Action,
    {
        let Some(base) = self.free.pop() else {
            return false;
        };
        let offset = (self.config.headroom + KERNEL_HEADROOM) as usize;
        // SAFETY: `base` came from the free list, so it is a chunk inside the mapping that
        // neither the kernel nor any other Frame uses.
        let chunk = unsafe { self.chunk(base) };
        let mut frame = Frame::new(chunk, offset, 0, None);
        let action = f(&mut frame);
        let (offset, len) = (frame.offset(), frame.len());
        Dispatch {
            stage: &mut self.stage,
            free: &mut self.free,
            stats: &mut self.stats,
        }
        .dispatch(action, base, offset, len, None);
        true
    }

    /// Makes [`XskWorker::wait`] return when `fd` is readable too (a doorbell from the
    /// control side). The caller keeps `fd` open as long as this worker.
    pub fn watch(&mut self, fd: RawFd) {
        self.pollfds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }

    /// Blocks until a port has something to receive or `timeout_ms` passes: for a worker with
    /// nothing to do. A busy-polling worker spins on [`XskWorker::poll`] instead.
    pub fn wait(&mut self, timeout_ms: i32) -> Result<usize, std::io::Error> {
        sys::wait_readable(&mut self.pollfds, timeout_ms)
    }

    /// # Safety
    ///
    /// `base` must be a chunk address inside the mapping that userspace owns and that no
    /// other live reference covers.
    unsafe fn chunk<'a>(&self, base: u64) -> &'a mut [u8] {
        let size = self.config.frame_size as usize;
        // SAFETY: the caller guarantees base + size lies in the mapping and is exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(self.area.base().add(base as usize), size) }
    }

    fn receive<F>(&mut self, port: usize, f: &mut F) -> usize
    where
        F: FnMut(&mut Frame<'_>) -> Action,
    {
        let frame_size = u64::from(self.config.frame_size);
        let area_len = self.area.len() as u64;
        let base_ptr = self.area.base();
        let Some(ring) = self.rx.get_mut(port) else {
            return 0;
        };
        let mut dispatch = Dispatch {
            stage: &mut self.stage,
            free: &mut self.free,
            stats: &mut self.stats,
        };
        let rx_port = Some(PortId(port as u8));
        let mut reader = ring.receive(self.config.batch);
        let mut received = 0u64;
        let mut bytes = 0u64;
        let mut bad = 0u64;
        while let Some(desc) = reader.read() {
            received += 1;
            let base = desc.addr & !self.frame_mask;
            let offset = desc.addr & self.frame_mask;
            let len = u64::from(desc.len);
            if base + frame_size > area_len {
                // Not ours to touch or recycle.
                bad += 1;
                continue;
            }
            if offset + len > frame_size {
                bad += 1;
                dispatch.recycle(base);
                continue;
            }
            bytes += len;
            // SAFETY: the chunk lies inside the mapping (checked above) and the kernel handed
            // it to us through the RX ring: it does not touch it until we give it back, and no
            // other Frame covers it.
            let chunk = unsafe {
                std::slice::from_raw_parts_mut(base_ptr.add(base as usize), frame_size as usize)
            };
            let mut frame = Frame::new(chunk, offset as usize, len as usize, rx_port);
            let action = f(&mut frame);
            let (offset, len) = (frame.offset(), frame.len());
            dispatch.dispatch(action, base, offset, len, rx_port);
        }
        reader.release();
        drop(reader);
        if let Some(stats) = self.stats.get_mut(port) {
            stats.rx_packets += received - bad;
            stats.rx_bytes += bytes;
            stats.bad_descriptors += bad;
        }
        if let Some(in_fill) = self.in_fill.get_mut(port) {
            *in_fill = in_fill.saturating_sub(received);
        }
        received as usize
    }

    fn kick_rx(&mut self, port: usize) {
        let (Some(device), Some(stats)) = (self.devices.get(port), self.stats.get_mut(port)) else {
            return;
        };
        let busy = self.busy.get(port).copied().unwrap_or(false);
        let asked = self.config.need_wakeup && device.needs_wakeup();
        if busy || asked {
            stats.wakeups += 1;
            if sys::kick_rx(device.as_raw_fd()) == Kick::Failed {
                stats.wakeup_errors += 1;
            }
        }
    }

    /// Recycles the frames the kernel has finished transmitting, without receiving anything:
    /// for a transmit-only user (a traffic generator) that never calls [`XskWorker::poll`].
    pub fn reap_completed(&mut self) {
        self.reap_all();
    }

    /// Recycles the frames every port's kernel side has finished transmitting.
    fn reap_all(&mut self) {
        for port in 0..self.devices.len() {
            self.reap(port);
        }
    }

    fn reap(&mut self, port: usize) {
        let (Some(device), Some(stats)) = (self.devices.get_mut(port), self.stats.get_mut(port))
        else {
            return;
        };
        let mut reader = device.complete(self.config.ring_size);
        let mut completed = 0;
        while let Some(addr) = reader.read() {
            completed += 1;
            let base = addr & !self.frame_mask;
            if base + u64::from(self.config.frame_size) <= self.area.len() as u64
                && self.free.len() < self.free.capacity()
            {
                self.free.push(base);
            } else {
                stats.bad_descriptors += 1;
            }
        }
        reader.release();
        stats.tx_completed += completed;
    }

    /// Tops up every port's fill ring from the free list, sharing what is free evenly.
    fn refill(&mut self) {
        let ports = self.devices.len();
        for (i, device) in self.devices.iter_mut().enumerate() {
            let share = self.free.len() / (ports - i);
            if share == 0 {
                continue;
            }
            let mut writer = device.fill(share as u32);
            let n = writer.capacity() as usize;
            if n == 0 {
                continue;
            }
            let start = self.free.len() - n;
            // Exactly `n` items for `n` reserved slots: the writer consumes them all.
            writer.insert(self.free.drain(start..));
            writer.commit();
            if let Some(in_fill) = self.in_fill.get_mut(i) {
                *in_fill += n as u64;
            }
        }
    }

    /// Puts staged frames on their TX rings and wakes the kernel where it needs it.
    pub fn flush(&mut self) {
        for port in 0..self.tx.len() {
            self.flush_port(port);
        }
    }

    fn flush_port(&mut self, port: usize) {
        let (Some(tx), Some(stage)) = (self.tx.get_mut(port), self.stage.get_mut(port)) else {
            return;
        };
        if !stage.is_empty() {
            let mut writer = tx.transmit(stage.len() as u32);
            let n = writer.capacity() as usize;
            if n > 0 {
                let mut bytes = 0u64;
                // Exactly `n` descriptors for `n` reserved slots.
                writer.insert(stage.drain(..n).inspect(|d| bytes += u64::from(d.len)));
                writer.commit();
                if let Some(stats) = self.stats.get_mut(port) {
                    stats.tx_packets += n as u64;
                    stats.tx_bytes += bytes;
                }
            }
        }
        // Copy mode transmits from the wakeup itself, a bounded number of frames per call
        // (32 by default): call again while the kernel says it stopped early, recycling
        // completions in between so their ring has room.
        let max_kicks = self.config.ring_size / 32 + 2;
        for _ in 0..max_kicks {
            let Some(tx) = self.tx.get(port) else {
                return;
            };
            if tx.pending() == 0 || (self.config.need_wakeup && !tx.needs_wakeup()) {
                return;
            }
            let kick = sys::kick_tx(tx.as_raw_fd());
            if let Some(stats) = self.stats.get_mut(port) {
                stats.wakeups += 1;
                if kick == Kick::Failed {
                    stats.wakeup_errors += 1;
                }
            }
            if kick != Kick::Again {
                return;
            }
            self.reap(port);
        }
    }
}

/// The parts of the worker a frame's fate touches, borrowed apart from the rings.
struct Dispatch<'a> {
    stage: &'a mut Vec<Vec<XdpDesc>>,
    free: &'a mut Vec<u64>,
    stats: &'a mut Vec<XskStats>,
}

impl Dispatch<'_> {
    fn recycle(&mut self, base: u64) {
        // The free list has room for every frame; a full one would mean a frame counted twice.
        if self.free.len() < self.free.capacity() {
            self.free.push(base);
        }
    }

    fn dispatch(
        &mut self,
        action: Action,
        base: u64,
        offset: usize,
        len: usize,
        rx_port: Option<PortId>,
    ) {
        let Action::Transmit(to) = action else {
            self.recycle(base);
            return;
        };
        let Some(stage) = self.stage.get_mut(to.index()) else {
            // A port that does not exist: the packet code's mistake, counted where it came from.
            if let Some(stats) = rx_port.and_then(|p| self.stats.get_mut(p.index())) {
                stats.tx_ring_full += 1;
            }
            self.recycle(base);
            return;
        };
        // The kernel never completes a zero-length descriptor: it would leak the frame.
        if len == 0 || stage.len() == stage.capacity() {
            if let Some(stats) = self.stats.get_mut(to.index()) {
                stats.tx_ring_full += u64::from(len != 0);
            }
            self.recycle(base);
            return;
        }
        stage.push(XdpDesc {
            addr: base + offset as u64,
            len: len as u32,
            options: 0,
        });
    }
}
