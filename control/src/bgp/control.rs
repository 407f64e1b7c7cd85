//! The control endpoint of the bgpctl daemon: a Unix stream socket (path set by
//! `control_socket` in the configuration, default /run/gatewan/bgpctl.sock). A client writes
//! one request line, `status`, and reads one JSON document, [`Status`], after which the
//! daemon closes the connection. `gatewan routes` is such a client.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::rib::{ImportStats, ImportedRoute};
use super::session::{State, Stats};
use super::wire::evpn::RouteDistinguisher;
use super::wire::extcomm::RouteTarget;
use super::wire::MacAddr;

/// Bumped when [`Status`] changes incompatibly.
pub const STATUS_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub peers: Vec<PeerStatus>,
    /// Local prefixes learned from the fabric.
    pub imported: Vec<ImportedRoute>,
    /// What bgpctl advertises (the desired set; each Established peer was sent all of it).
    pub exported: Vec<ExportedRoute>,
    pub import_stats: ImportStats,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Address and port.
    pub name: String,
    pub remote_as: u32,
    pub ibgp: bool,
    pub passive: bool,
    pub state: State,
    /// Seconds since the session reached Established.
    pub established_secs: Option<u64>,
    pub peer_id: Option<Ipv4Addr>,
    pub hold_time: Option<u16>,
    /// RT-5 routes held from this peer, and how many of them are local prefixes now.
    pub routes_received: usize,
    pub routes_imported: usize,
    /// Routes this peer was sent and has not had withdrawn.
    pub routes_sent: usize,
    pub stats: Stats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedRoute {
    pub prefix: IpNet,
    pub gateway: String,
    pub rd: RouteDistinguisher,
    pub next_hop: IpAddr,
    pub router_mac: MacAddr,
    pub vni: u32,
    pub route_targets: Vec<RouteTarget>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {path}: {source} (is `gatewan bgpctl` running, and is this its control_socket?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon answered something unexpected: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
}

/// Asks the daemon for its status; returns the JSON text and the decoded value.
pub async fn query(path: &Path) -> Result<(String, Status), ClientError> {
    let limit = Duration::from_secs(10);
    let work = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        s.write_all(b"status\n").await?;
        let mut text = String::new();
        BufReader::new(s).read_line(&mut text).await?;
        let status: Status = serde_json::from_str(&text)?;
        Ok((text, status))
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| ClientError::Timeout(limit))?
}
