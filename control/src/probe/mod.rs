//! Tunnel probing: STAMP (RFC 8762) test packets through each tunnel to the peer's echo port,
//! and the sliding-window figures operators and the controller read (loss, latency, jitter,
//! reorder). Sans-IO: the gateway's adapter moves the bytes and passes the clocks in.
//!
//! - [`ntp`]: the 64-bit NTP timestamps and error estimates STAMP carries on the wire;
//! - [`stamp`]: zero-copy views and builders of the two packets, and the stateful reflector;
//! - [`prober`]: per-tunnel sender state and the sliding-window statistics.

pub mod ntp;
pub mod prober;
pub mod stamp;

pub use prober::{ProbeConfig, ProbeStats, Prober, ReplyOutcome};
pub use stamp::{Reflector, StampError};
