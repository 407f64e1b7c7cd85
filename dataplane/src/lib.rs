//! gatewan's dataplane: wire formats, WireGuard, route tables, the forwarding pipeline and its
//! I/O backends. It knows nothing of the control plane; `gatewan-control` drives it through
//! the handles exposed here. See docs/architecture.md for where each piece lives.

pub mod afxdp;
pub mod drop;
pub mod engine;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod ifname;
pub mod neigh;
pub mod pipeline;
pub mod route;
pub mod socket;
pub mod support;
pub mod tunnel_id;
pub mod wire;
pub mod wireguard;
pub mod xdp;
