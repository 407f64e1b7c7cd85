//! The subcommands of the `gatewan` binary.

pub mod doctor;
pub mod gateway;
pub mod status;
pub mod xdp_watch;
