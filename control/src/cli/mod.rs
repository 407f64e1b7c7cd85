//! The subcommands of the `gatewan` binary.

pub mod bgpctl;
pub mod doctor;
pub mod routes;
pub mod xdp_watch;
