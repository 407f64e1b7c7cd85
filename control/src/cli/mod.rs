//! The subcommands of the `gatewan` binary.

pub mod bgpctl;
pub mod controller;
pub mod doctor;
pub mod gateway;
pub mod members;
pub mod pki;
pub mod routes;
pub mod status;
pub mod xdp_watch;
