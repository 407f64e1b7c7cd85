//! The XDP steering program embedded at build time (see build.rs) and its userspace side:
//! loading, attaching, configuring the steered endpoints and the AF_XDP sockets per receive
//! queue, reading the counters, detaching on drop. docs/afxdp.md describes the program.

use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use gatewan_ebpf_common::{
    slot, CounterKind, EndpointKey, COUNTERS_MAP, ENDPOINTS_MAP, FAMILY_IPV4, FAMILY_IPV6,
    MAX_ENDPOINTS, MAX_QUEUES, XDP_PROGRAM, XSKS_MAP,
};
pub use gatewan_ebpf_common::{Counter, SteerKind, Verdict};
use thiserror::Error;

use crate::ifname::{self, IfNameError};

#[cfg(gatewan_ebpf)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/gatewan-xdp.o"
)));
#[cfg(not(gatewan_ebpf))]
static OBJECT: Option<&[u8]> = None;

/// Why the XDP program is not in this binary (empty when it is).
const UNAVAILABLE: &str = include_str!(concat!(env!("OUT_DIR"), "/ebpf-unavailable.txt"));

#[derive(Debug, Error)]
pub enum XdpError {
    #[error("AF_XDP is unavailable: this gatewan binary was built without its XDP program: {0}")]
    NotEmbedded(&'static str),
    #[error(transparent)]
    Interface(#[from] IfNameError),
    #[error("loading the XDP object")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program or map {0:?} missing from the object")]
    Missing(&'static str),
    #[error("XDP program")]
    Program(#[from] aya::programs::ProgramError),
    #[error("XDP map")]
    Map(#[from] aya::maps::MapError),
    #[error("receive queue {queue} is beyond the {MAX_QUEUES} the XDP program serves")]
    QueueRange { queue: u32 },
    #[error("the XDP program steers at most {MAX_ENDPOINTS} endpoints")]
    TooManyEndpoints,
}

/// The embedded XDP object, or why this build has none.
pub fn object() -> Result<&'static [u8], XdpError> {
    OBJECT.ok_or(XdpError::NotEmbedded(UNAVAILABLE.trim()))
}

/// How to attach: the kernel's choice, driver (native) or generic (skb) mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Generic,
}

impl From<AttachMode> for XdpMode {
    fn from(mode: AttachMode) -> Self {
        match mode {
            AttachMode::Auto => XdpMode::Default,
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }
}

/// Packets and bytes of one counter, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictCount {
    pub packets: u64,
    pub bytes: u64,
}

/// Every counter of the program at one moment, summed over CPUs; index with [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    counts: [VerdictCount; Counter::ALL.len()],
}

impl XdpCounters {
    pub fn get(&self, counter: Counter) -> VerdictCount {
        self.counts
            .get(counter as usize)
            .copied()
            .unwrap_or_default()
    }

    /// (counter, count) for every counter, in layout order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, VerdictCount)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

/// The XDP program attached to one interface; dropping it detaches the program (and with it
/// the maps, so nothing is steered any more).
pub struct AttachedXdp {
    /// Owns the program, its link and its maps: keeping it alive keeps them attached.
    ebpf: Ebpf,
    interface: String,
    if_index: u32,
}

impl AttachedXdp {
    /// Loads the embedded program and attaches it to `interface` in the calling thread's network
    /// namespace. Nothing is steered until endpoints are added and sockets registered.
    pub fn attach(interface: &str, mode: AttachMode) -> Result<Self, XdpError> {
        let if_index = ifname::index(interface)?;
        let mut ebpf = Ebpf::load(object()?)?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(XdpError::Missing(XDP_PROGRAM))?
            .try_into()?;
        program.load()?;
        program.attach_to_if_index(if_index, mode.into())?;
        Ok(AttachedXdp {
            ebpf,
            interface: interface.to_owned(),
            if_index,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn if_index(&self) -> u32 {
        self.if_index
    }

    /// Current counters for `verdict`, summed over all CPUs.
    pub fn count(&self, verdict: Verdict) -> Result<VerdictCount, XdpError> {
        self.counter(Counter::from_verdict(verdict))
    }

    /// One counter, summed over all CPUs.
    pub fn counter(&self, counter: Counter) -> Result<VerdictCount, XdpError> {
        let counters = self.counters_map()?;
        read_counter(&counters, counter)
    }

    /// Every counter, summed over all CPUs.
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        let map = self.counters_map()?;
        let mut all = XdpCounters::default();
        for (slot, counter) in all.counts.iter_mut().zip(Counter::ALL) {
            *slot = read_counter(&map, counter)?;
        }
        Ok(all)
    }

    fn counters_map(&self) -> Result<PerCpuArray<&MapData, u64>, XdpError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(XdpError::Missing(COUNTERS_MAP))?;
        Ok(PerCpuArray::try_from(map)?)
    }

    fn endpoints_mut(&mut self) -> Result<HashMap<&mut MapData, EndpointKey, u32>, XdpError> {
        let map = self
            .ebpf
            .map_mut(ENDPOINTS_MAP)
            .ok_or(XdpError::Missing(ENDPOINTS_MAP))?;
        Ok(HashMap::try_from(map)?)
    }

    fn xsks_mut(&mut self) -> Result<XskMap<&mut MapData>, XdpError> {
        let map = self
            .ebpf
            .map_mut(XSKS_MAP)
            .ok_or(XdpError::Missing(XSKS_MAP))?;
        Ok(XskMap::try_from(map)?)
    }

    /// Steers UDP packets to `endpoint` (destination address and port) into the AF_XDP socket
    /// of their receive queue, tagged as `kind`. Replaces the kind of an existing endpoint.
    /// Takes effect for the next packet; the program is not reloaded.
    pub fn add_endpoint(&mut self, endpoint: SocketAddr, kind: SteerKind) -> Result<(), XdpError> {
        let key = endpoint_key(endpoint);
        let mut map = self.endpoints_mut()?;
        match map.insert(key, kind as u32, 0) {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::E2BIG) => Err(XdpError::TooManyEndpoints),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops steering `endpoint`; its packets reach the kernel again. Returns whether it was
    /// steered.
    pub fn remove_endpoint(&mut self, endpoint: SocketAddr) -> Result<bool, XdpError> {
        let key = endpoint_key(endpoint);
        let mut map = self.endpoints_mut()?;
        match map.remove(&key) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The steered endpoints as the kernel holds them.
    pub fn endpoints(&self) -> Result<StdHashMap<SocketAddr, SteerKind>, XdpError> {
        let map = self
            .ebpf
            .map(ENDPOINTS_MAP)
            .ok_or(XdpError::Missing(ENDPOINTS_MAP))?;
        let map: HashMap<&MapData, EndpointKey, u32> = HashMap::try_from(map)?;
        let mut out = StdHashMap::new();
        for entry in map.iter() {
            let (key, value) = entry?;
            if let (Some(addr), Some(kind)) = (key_endpoint(&key), SteerKind::from_u32(value)) {
                out.insert(addr, kind);
            }
        }
        Ok(out)
    }

    /// Puts the AF_XDP socket `socket` into the slot of receive queue `queue`: steered packets
    /// arriving on that queue go to it. The socket must be bound to this interface and queue,
    /// or the kernel drops what is redirected to it.
    pub fn register_xsk(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueRange { queue });
        }
        self.xsks_mut()?.set(queue, socket.as_raw_fd(), 0)?;
        Ok(())
    }

    /// Empties the slot of receive queue `queue`: steered packets on it reach the kernel again
    /// (counted as [`Counter::NoSocket`]).
    pub fn unregister_xsk(&mut self, queue: u32) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueRange { queue });
        }
        match self.xsks_mut()?.unset(queue) {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn is_errno(error: &aya::maps::MapError, errno: i32) -> bool {
    matches!(error, aya::maps::MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(errno))
}

fn read_counter(
    map: &PerCpuArray<&MapData, u64>,
    counter: Counter,
) -> Result<VerdictCount, XdpError> {
    let sum = |kind| -> Result<u64, XdpError> {
        Ok(map
            .get(&slot(counter, kind), 0)?
            .iter()
            .fold(0u64, |acc, v| acc.wrapping_add(*v)))
    };
    Ok(VerdictCount {
        packets: sum(CounterKind::Packets)?,
        bytes: sum(CounterKind::Bytes)?,
    })
}

/// The map key of an endpoint. IPv4-mapped IPv6 addresses are steered as IPv4: that is how
/// they arrive on the wire.
pub fn endpoint_key(endpoint: SocketAddr) -> EndpointKey {
    let ip = match endpoint.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => EndpointKey::ipv4(v4.octets(), endpoint.port()),
        IpAddr::V6(v6) => EndpointKey::ipv6(v6.octets(), endpoint.port()),
    }
}

fn key_endpoint(key: &EndpointKey) -> Option<SocketAddr> {
    let ip = match key.family {
        FAMILY_IPV4 => {
            let [a, b, c, d, ..] = key.addr;
            IpAddr::from([a, b, c, d])
        }
        FAMILY_IPV6 => IpAddr::from(key.addr),
        _ => return None,
    };
    Some(SocketAddr::new(ip, key.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_round_trip_and_map_v4_in_v6_to_v4() {
        for text in ["192.0.2.7:4789", "[2001:db8::1]:51820"] {
            let addr: SocketAddr = text.parse().expect("addr");
            assert_eq!(key_endpoint(&endpoint_key(addr)), Some(addr));
        }
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4789".parse().expect("addr");
        let plain: SocketAddr = "192.0.2.7:4789".parse().expect("addr");
        assert_eq!(endpoint_key(mapped), endpoint_key(plain));
        let mut bad = endpoint_key(plain);
        bad.family = 5;
        assert_eq!(key_endpoint(&bad), None);
    }
}
