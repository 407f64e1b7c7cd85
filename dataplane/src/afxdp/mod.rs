//! AF_XDP sockets for the dataplane's workers, on top of xdpilone (pure Rust: no libbpf or
//! libxdp to build, and as fast as the C-backed alternative here; see docs/afxdp.md).
//!
//! One [`XskWorker`] is everything one worker thread owns: one UMEM and, for each interface it
//! serves, the AF_XDP socket of its queue on that interface (a *port*). All ports of a worker
//! share the UMEM (`XDP_SHARED_UMEM` across devices, each port with its own fill and
//! completion rings), so a frame received on the fabric interface is transmitted on the
//! transit interface by handing its descriptor over: no copy. A gateway with N queues runs N
//! workers, each with its own UMEM; nothing is shared between threads.
//!
//! Per packet there is no allocation, no lock and no system call: frames cycle between a
//! preallocated free list, the fill rings, the packet code and the TX rings; the kernel is
//! woken once per batch when it asks for it (need_wakeup), or polled when busy polling.

pub mod forward;
mod frame;
mod sys;
mod worker;

use std::io;

use thiserror::Error;

use crate::ifname::IfNameError;

pub use forward::{PortRole, Role, XdpForwarder};
pub use frame::{Frame, FrameRangeError};
pub use worker::{FrameAccounting, XskWorker, MAX_PORTS};

/// The kernel's own headroom in front of every received packet (XDP_PACKET_HEADROOM): received
/// data starts `UmemConfig::headroom + KERNEL_HEADROOM` bytes into its chunk.
pub const KERNEL_HEADROOM: u32 = 256;

/// How to bind: let the kernel pick (zero-copy when the driver supports it, copy otherwise),
/// or insist on one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMode {
    #[default]
    Auto,
    ZeroCopy,
    Copy,
}

/// Busy polling for the worker's sockets (SO_PREFER_BUSY_POLL, SO_BUSY_POLL,
/// SO_BUSY_POLL_BUDGET).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusyPoll {
    /// How long one busy poll may spin, in microseconds.
    pub usecs: u32,
    /// Packets the driver may process per busy poll.
    pub budget: u16,
}

impl Default for BusyPoll {
    fn default() -> Self {
        BusyPoll {
            usecs: 20,
            budget: 64,
        }
    }
}

/// Sizes and modes of one worker's UMEM and rings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per frame: a power of two from 2048 to the page size (aligned chunk mode).
    pub frame_size: u32,
    /// Frames in the UMEM, shared by all ports of the worker. Must cover every port's fill
    /// ring plus the frames in flight on the TX rings.
    pub frames: u32,
    /// Extra headroom reserved in front of received packets, on top of [`KERNEL_HEADROOM`].
    pub headroom: u32,
    /// Entries of each ring (fill, completion, RX, TX), a power of two.
    pub ring_size: u32,
    /// Most descriptors taken from a ring per call.
    pub batch: u32,
    pub bind: BindMode,
    /// Bind with XDP_USE_NEED_WAKEUP: the kernel says when it needs a syscall, so none is made
    /// while it is running anyway.
    pub need_wakeup: bool,
    /// Busy-poll options; `None` leaves the sockets interrupt-driven.
    pub busy_poll: Option<BusyPoll>,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: 4096,
            frames: 4096,
            headroom: 0,
            ring_size: 1024,
            batch: 64,
            bind: BindMode::Auto,
            need_wakeup: true,
            busy_poll: None,
        }
    }
}

impl XskConfig {
    pub(crate) fn validate(&self) -> Result<(), AfXdpError> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = u32::try_from(page).unwrap_or(4096);
        if !self.frame_size.is_power_of_two() || self.frame_size < 2048 || self.frame_size > page {
            return Err(AfXdpError::Config(
                "frame_size must be a power of two from 2048 to the page size",
            ));
        }
        if !self.ring_size.is_power_of_two() {
            return Err(AfXdpError::Config("ring_size must be a power of two"));
        }
        if self.batch == 0 || self.batch > self.ring_size {
            return Err(AfXdpError::Config("batch must be from 1 to ring_size"));
        }
        if self.frames < self.ring_size {
            return Err(AfXdpError::Config(
                "frames must at least fill one port's fill ring",
            ));
        }
        if u64::from(self.headroom) + u64::from(KERNEL_HEADROOM) + 1500 > u64::from(self.frame_size)
        {
            return Err(AfXdpError::Config(
                "headroom leaves no room for a 1500-byte packet",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum AfXdpError {
    #[error("AF_XDP configuration: {0}")]
    Config(&'static str),
    #[error(transparent)]
    Interface(#[from] IfNameError),
    #[error("mapping {bytes} bytes of UMEM")]
    Mmap { bytes: usize, source: io::Error },
    #[error("registering the UMEM (memlock limit? needs CAP_IPC_LOCK beyond it)")]
    Umem(#[source] io::Error),
    #[error("AF_XDP socket on {interface} queue {queue}: {step}")]
    Socket {
        interface: String,
        queue: u32,
        step: &'static str,
        source: io::Error,
    },
    #[error("a worker serves at most {0} ports")]
    TooManyPorts(usize),
    #[error("no port {0:?}")]
    NoPort(PortId),
}

/// One AF_XDP socket of a worker: its index among the worker's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub(crate) u8);

impl PortId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What to do with a frame after the packet code has seen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Recycle the frame.
    Drop,
    /// Put `frame.data()` on this port's TX ring (the port it came from, or another).
    Transmit(PortId),
}

/// How busy polling turned out on a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusyPollState {
    /// Not asked for.
    Off,
    /// All three options set.
    On,
    /// The kernel refused (EOPNOTSUPP, EPERM, ...); the worker runs on need_wakeup alone.
    Refused(String),
}

/// What a port is and how it was bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub interface: String,
    pub if_index: u32,
    pub queue: u32,
    /// Zero-copy (the driver DMAs into the UMEM) or copy mode (veth, generic XDP).
    pub zero_copy: bool,
    pub need_wakeup: bool,
    pub busy_poll: BusyPollState,
}

/// Counters of one port kept by the worker (no syscall to read them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames put on this port's TX ring.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Transmitted frames the kernel has completed.
    pub tx_completed: u64,
    /// Frames dropped because this port's TX ring was full.
    pub tx_ring_full: u64,
    /// Wakeup and busy-poll syscalls made for this port.
    pub wakeups: u64,
    /// Wakeups the kernel refused (device down).
    pub wakeup_errors: u64,
    /// Descriptors from the kernel outside the UMEM (never seen; counted, not trusted).
    pub bad_descriptors: u64,
}

/// The kernel's counters of one socket (XDP_STATISTICS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelXskStats {
    /// Packets the kernel dropped for this socket (any reason).
    pub rx_dropped: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Dropped because the fill ring was empty.
    pub rx_fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub tx_ring_empty: u64,
}

pub(crate) fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_the_kernel_would_refuse_are_errors() {
        assert!(XskConfig::default().validate().is_ok());
        let bad = [
            XskConfig {
                frame_size: 3000,
                ..XskConfig::default()
            },
            XskConfig {
                frame_size: 1024,
                ..XskConfig::default()
            },
            XskConfig {
                ring_size: 1000,
                ..XskConfig::default()
            },
            XskConfig {
                batch: 0,
                ..XskConfig::default()
            },
            XskConfig {
                batch: 2048,
                ..XskConfig::default()
            },
            XskConfig {
                frames: 512,
                ..XskConfig::default()
            },
            XskConfig {
                headroom: 3000,
                ..XskConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(AfXdpError::Config(_))),
                "{config:?}"
            );
        }
    }
}
