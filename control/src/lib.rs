//! gatewan's control plane: the mesh (Serf), tunnel probing, the controller, bgpctl and the
//! gateway agent that ties them to the dataplane. The `gatewan` binary only wires its
//! subcommands to this crate. See docs/architecture.md.

pub mod bgp;
pub mod channel;
pub mod cli;
pub mod controller;
pub mod gateway;
pub mod mesh;
pub mod probe;
