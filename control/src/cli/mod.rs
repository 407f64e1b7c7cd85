//! The subcommands of the `gatewan` binary.

pub mod doctor;
pub mod xdp_watch;
