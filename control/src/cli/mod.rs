//! The subcommands of the `gatewan` binary.

pub mod doctor;
pub mod members;
pub mod xdp_watch;
