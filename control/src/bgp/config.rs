//! bgpctl's YAML configuration (see docs/bgp.md for a commented example).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::rib::{ExportPrefix, ExportSet, Gateway, RtMatch};
use super::session::SessionConfig;
use super::wire::evpn::RouteDistinguisher;
use super::wire::extcomm::RouteTarget;
use super::wire::MacAddr;

pub const DEFAULT_CONTROL_SOCKET: &str = "/run/gatewan/bgpctl.sock";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Where to accept peers' connections, e.g. `0.0.0.0:179`; none when omitted.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The control endpoint `gatewan routes` reads.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Hold time offered to peers, seconds (0, or at least 3).
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// First wait before reconnecting, seconds; doubles per failure up to `connect_retry_max`.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: f64,
    #[serde(default = "default_connect_retry_max")]
    pub connect_retry_max: f64,
    pub peers: Vec<PeerConfig>,
    /// RFC 4724 on every session: peers that support it for EVPN keep bgpctl's routes
    /// while it restarts (`gatewan bgpctl` on SIGUSR1, or a crash).
    #[serde(default)]
    pub graceful_restart: GracefulRestartConfig,
    #[serde(default)]
    pub import: ImportConfig,
    #[serde(default)]
    pub export: Option<ExportConfig>,
    /// bgpctl in the SD-WAN: a mesh member that takes the controller's orders and hands the
    /// fabric's routes to its datacenter's gateways (docs/bgp.md, "In the loop").
    #[serde(default)]
    pub sdwan: Option<SdwanFile>,
}

/// `graceful_restart:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GracefulRestartConfig {
    pub enabled: bool,
    /// How long peers keep the routes of a restarting bgpctl, seconds (at most 4095).
    pub restart_time: u16,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            restart_time: 120,
        }
    }
}

/// `sdwan:` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdwanFile {
    /// Its mesh member name, and its certificate's (`NAME.bgpctl.gatewan`).
    pub name: String,
    pub datacenter: String,
    pub mesh: crate::controller::daemon::config::MemberMeshFile,
    /// The orders channel: where controllers send orders (`api.order_file` keeps the one in
    /// force across restarts; `repair_hold` is the gateway's and unused here).
    pub api: crate::gateway::api_config::ApiFile,
    /// How often the fabric's routes are sent again to every gateway (they are also sent
    /// on every change and to every gateway that joins).
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(5)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    pub remote_as: u32,
    /// Wait for the peer to connect instead of connecting.
    #[serde(default)]
    pub passive: bool,
    /// Source address of our connections.
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// TCP MD5 signature key (RFC 2385), up to 80 bytes.
    #[serde(default, skip_serializing)]
    pub md5_password: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Route targets of routes to import: `ASN:N`, `IPv4:N`, `ASN4:N`, or `*:N`.
    #[serde(default)]
    pub route_targets: Vec<RtMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    pub vni: u32,
    pub route_targets: Vec<RouteTarget>,
    /// Per gateway: its VTEP, router MAC and RD. With `sdwan:`, the orders carry the VTEP
    /// and MAC; an entry here only sets the RD.
    #[serde(default)]
    pub gateways: BTreeMap<String, GatewayConfig>,
    #[serde(default)]
    pub prefixes: Vec<PrefixConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub vtep: IpAddr,
    pub router_mac: MacAddr,
    #[serde(default)]
    pub rd: Option<RouteDistinguisher>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    pub prefix: IpNet,
    pub gateways: Vec<String>,
}

fn default_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}
fn default_hold_time() -> u16 {
    90
}
fn default_connect_retry() -> f64 {
    1.0
}
fn default_connect_retry_max() -> f64 {
    60.0
}
fn default_port() -> u16 {
    179
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config =
            serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                path: PathBuf::from("<text>"),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.router_id.is_unspecified() {
            return bad("router_id must not be 0.0.0.0".into());
        }
        for hold in
            std::iter::once(self.hold_time).chain(self.peers.iter().filter_map(|p| p.hold_time))
        {
            if hold == 1 || hold == 2 {
                return bad(format!("hold time {hold}: must be 0 or at least 3 seconds"));
            }
        }
        let retry_ok = |v: f64| v.is_finite() && (0.01..=3600.0).contains(&v);
        if !retry_ok(self.connect_retry)
            || !retry_ok(self.connect_retry_max)
            || self.connect_retry > self.connect_retry_max
        {
            return bad("connect_retry and connect_retry_max: 0.01 to 3600 seconds, initial not above maximum".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.peers {
            if !seen.insert(p.address) {
                return bad(format!("peer {} is listed twice", p.address));
            }
            if p.md5_password
                .as_ref()
                .is_some_and(|k| k.is_empty() || k.len() > super::md5::MAX_KEY_LEN)
            {
                return bad(format!(
                    "peer {}: md5_password must be 1 to 80 bytes",
                    p.address
                ));
            }
        }
        if let Some(sd) = &self.sdwan {
            crate::channel::identity::check_name(&sd.name)
                .map_err(|e| ConfigError::Invalid(format!("sdwan.name: {e}")))?;
            if self.export.is_none() {
                return bad(
                    "sdwan: needs export: (vni and route_targets of the routes the orders become)"
                        .into(),
                );
            }
            if self.export.as_ref().is_some_and(|e| !e.prefixes.is_empty()) {
                return bad(
                    "sdwan: the orders give the exported prefixes; export.prefixes must be empty"
                        .into(),
                );
            }
            if sd.refresh < Duration::from_millis(500) || sd.refresh > Duration::from_secs(3600) {
                return bad("sdwan.refresh: 500ms to 1h".into());
            }
        }
        if let Some(e) = &self.export {
            for p in &e.prefixes {
                for g in &p.gateways {
                    if !e.gateways.contains_key(g) {
                        return bad(format!("prefix {}: unknown gateway {g:?}", p.prefix));
                    }
                }
            }
            self.export_set()
                .routes()
                .map_err(|err| ConfigError::Invalid(format!("export: {err}")))?;
        }
        Ok(())
    }

    /// The desired export set the file describes (empty without an `export` section).
    /// The keys of `new` that differ from this running configuration and take effect only
    /// after a restart (a reload applies `import` and `export` alone).
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |changed: bool, key: &'static str| {
            if changed {
                keys.push(key);
            }
        };
        check(self.local_as != new.local_as, "local_as");
        check(self.router_id != new.router_id, "router_id");
        check(self.listen != new.listen, "listen");
        check(self.control_socket != new.control_socket, "control_socket");
        check(self.hold_time != new.hold_time, "hold_time");
        check(self.connect_retry != new.connect_retry, "connect_retry");
        check(
            self.connect_retry_max != new.connect_retry_max,
            "connect_retry_max",
        );
        check(self.peers != new.peers, "peers");
        check(
            self.graceful_restart != new.graceful_restart,
            "graceful_restart",
        );
        check(self.sdwan != new.sdwan, "sdwan");
        keys
    }

    pub fn export_set(&self) -> ExportSet {
        let Some(e) = &self.export else {
            return ExportSet::default();
        };
        ExportSet {
            vni: e.vni,
            route_targets: e.route_targets.clone(),
            prefixes: e
                .prefixes
                .iter()
                .map(|p| ExportPrefix {
                    prefix: p.prefix,
                    gateways: p
                        .gateways
                        .iter()
                        .filter_map(|name| {
                            e.gateways.get(name).map(|g| Gateway {
                                name: name.clone(),
                                vtep: g.vtep,
                                router_mac: g.router_mac,
                                rd: g.rd,
                                weight: None,
                            })
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn session_config(&self, peer: &PeerConfig) -> SessionConfig {
        SessionConfig {
            local_as: self.local_as,
            local_id: self.router_id,
            peer_as: peer.remote_as,
            hold_time: peer.hold_time.unwrap_or(self.hold_time),
            passive: peer.passive,
            connect_retry: Duration::from_secs_f64(self.connect_retry),
            connect_retry_max: Duration::from_secs_f64(self.connect_retry_max),
            graceful_restart: self
                .graceful_restart
                .enabled
                .then_some(self.graceful_restart.restart_time),
        }
    }
}

impl PeerConfig {
    /// How the peer is named in routes, logs and events.
    pub fn name(&self) -> String {
        SocketAddr::new(self.address, self.port).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = include_str!("../../../docs/bgpctl.example.yaml");

    #[test]
    fn a_reload_names_every_key_that_needs_a_restart() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert!(c.restart_needed(&c).is_empty());
        let mut n = c.clone();
        n.hold_time += 3;
        n.connect_retry *= 2.0;
        n.connect_retry_max += 1.0;
        n.import.route_targets.clear();
        assert_eq!(
            c.restart_needed(&n),
            ["hold_time", "connect_retry", "connect_retry_max"]
        );
        n.peers.pop();
        n.router_id = "10.9.9.9".parse().unwrap();
        assert_eq!(c.restart_needed(&n).len(), 5);
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.local_as, 65000);
        assert_eq!(c.peers.len(), 2);
        let set = c.export_set();
        let routes = set.routes().unwrap();
        assert_eq!(routes.values().filter(|r| !r.is_anchor()).count(), 3);
        assert!(routes
            .values()
            .any(|r| r.route.rd.to_string() == "28763:2204857001"));
    }

    #[test]
    fn invalid_configurations_are_refused_with_a_reason() {
        let base = "local_as: 65000\nrouter_id: 10.0.0.1\npeers: [{address: 10.0.0.2, remote_as: 65000}]\n";
        assert!(Config::parse(base).is_ok());
        for (extra, want) in [
            ("hold_time: 2\n", "hold time"),
            ("connect_retry: 0\n", "connect_retry"),
            (
                "export: {vni: 5, route_targets: ['65000:5'], gateways: {}, prefixes: [{prefix: 10.0.0.0/8, gateways: [nope]}]}\n",
                "unknown gateway",
            ),
            (
                "export: {vni: 16777216, route_targets: [], gateways: {a: {vtep: 10.0.0.1, router_mac: '02:00:00:00:00:01'}}, prefixes: [{prefix: 10.0.0.0/8, gateways: [a]}]}\n",
                "24-bit",
            ),
        ] {
            let err = Config::parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
        let err = Config::parse(&format!("{base}bogus: 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let twice = "local_as: 1\nrouter_id: 10.0.0.1\npeers: [{address: 10.0.0.2, remote_as: 1}, {address: 10.0.0.2, remote_as: 1}]\n";
        assert!(Config::parse(twice).is_err());
    }
}
