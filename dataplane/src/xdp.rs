//! The XDP program embedded at build time (see build.rs) and its userspace side: loading,
//! attaching, reading the per-verdict counters, detaching on drop.

use aya::maps::PerCpuArray;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use gatewan_ebpf_common::{counter_slot, CounterKind, Verdict, COUNTERS_MAP, XDP_PROGRAM};
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
    #[error("XDP counters map")]
    Map(#[from] aya::maps::MapError),
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

/// Packets and bytes for one verdict, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictCount {
    pub packets: u64,
    pub bytes: u64,
}

/// The XDP program attached to one interface; dropping it detaches the program.
pub struct AttachedXdp {
    ebpf: Ebpf,
    interface: String,
}

impl AttachedXdp {
    /// Loads the embedded program and attaches it to `interface` in the calling thread's network
    /// namespace.
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
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Current counters for `verdict`, summed over all CPUs.
    pub fn count(&self, verdict: Verdict) -> Result<VerdictCount, XdpError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(XdpError::Missing(COUNTERS_MAP))?;
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let sum = |kind| -> Result<u64, XdpError> {
            Ok(counters.get(&counter_slot(verdict, kind), 0)?.iter().sum())
        };
        Ok(VerdictCount {
            packets: sum(CounterKind::Packets)?,
            bytes: sum(CounterKind::Bytes)?,
        })
    }
}
