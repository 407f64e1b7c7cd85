//! The mesh: gateways find each other over Serf and exchange metadata and prefix lists.
//! See docs/mesh.md.

pub mod agent;
pub mod node;
pub mod prefixes;
pub mod rpc;
pub mod tags;
pub mod view;
