//! The mesh: gateways find each other over Serf and exchange metadata and prefix lists.
//! See docs/mesh.md.

pub mod rpc;
