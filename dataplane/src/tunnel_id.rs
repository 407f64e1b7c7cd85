//! The one number a tunnel has inside a gateway: its slot in the route tables, its id in its
//! transit's WireGuard device (the low 16 bits of its receiver indices) and its place in the
//! workers' per-tunnel counters. (Its identity towards the outside, the same at both ends,
//! lives in the control plane.)

/// A tunnel as the dataplane numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(pub u16);

impl TunnelId {
    /// The tunnel a receiver index belongs to.
    pub fn of_index(index: u32) -> Self {
        TunnelId((index & 0xffff) as u16)
    }
}

impl std::fmt::Display for TunnelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tunnel#{}", self.0)
    }
}
