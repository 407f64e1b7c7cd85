//! The subcommands of the `gatewan` binary.

pub mod controller;
pub mod doctor;
pub mod xdp_watch;
