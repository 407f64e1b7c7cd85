//! Route tables: longest-prefix match for remote prefixes (to a weighted tunnel group) and
//! local prefixes (to a leaf VTEP), a per-flow hash to pick the tunnel, and the lock-free
//! hand-over of whole tables from the control side to the workers. See docs/routing.md.
//!
//! - [`lpm`]: IPv4 and IPv6 longest-prefix match, over the `prefix-trie` crate.
//! - [`group`]: a tunnel group's weighted, per-flow-stable slot table.
//! - [`flow`]: the 5-tuple flow hash of inner packets.
//! - [`table`]: [`RouteTables`] (what workers read), its builder, and the
//!   [`RouteHandle`] / [`RouteReader`] pair that swaps tables into workers.

pub mod flow;
pub mod group;
pub mod lpm;
pub mod poptrie;
pub mod table;

pub use flow::{FlowHasher, FlowKey};
pub use group::{GroupError, TunnelGroup, TunnelId};
pub use lpm::{Ipv4Lpm, Ipv6Lpm};
pub use table::{
    GroupId, LocalRoute, RouteError, RouteHandle, RouteReader, RouteTables, RouteTablesBuilder,
};
