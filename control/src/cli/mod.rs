//! The subcommands of the `gatewan` binary.

pub mod doctor;
pub mod status;
pub mod xdp_watch;
