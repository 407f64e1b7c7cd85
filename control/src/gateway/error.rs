//! What stops a gateway from starting or running.

use std::net::SocketAddr;

use gatewan_dataplane::wireguard as wg;
use thiserror::Error;

use super::control::ControlError;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("{what}: binding UDP {addr}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mesh: {0}")]
    Mesh(String),
    #[error("orders channel: {0}")]
    Api(String),
    #[error("route tables: {0}")]
    Routes(String),
    #[error("tunnel {tunnel}: {source}")]
    Tunnel { tunnel: String, source: wg::Error },
    #[error("control endpoint")]
    Control(#[from] ControlError),
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("AF_XDP backend: {0}")]
    Afxdp(String),
    #[error("starting forwarding worker {index}")]
    Spawn {
        index: usize,
        source: std::io::Error,
    },
}
