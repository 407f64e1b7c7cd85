//! `gateway.yaml`: what a gateway is and which static tunnels it keeps. Parsing is strict
//! (unknown fields are errors) and every semantic error names the field it is about, e.g.
//! `tunnels[1].peer_public_key: ...`. docs/configuration.md documents every field.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use gatewan_dataplane::route::LocalRoute;
use gatewan_dataplane::wire::ethernet::MacAddr;

use super::mesh_config::{Mesh, MeshFile};
use crate::probe::ProbeConfig;

/// A WireGuard key (private, public or pre-shared): 32 bytes, written in base64 as `wg` does.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key32(pub [u8; 32]);

impl Key32 {
    pub fn from_base64(s: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()?;
        Some(Key32(bytes.try_into().ok()?))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Lower-case hex, as `gatewan status` prints public keys.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for Key32 {
    // Never print key material by accident (private and pre-shared keys share this type).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(..)")
    }
}

/// The configuration file as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub name: String,
    pub datacenter: String,
    /// base64 private key, or `private_key_file`.
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    pub transits: Vec<TransitFile>,
    #[serde(default)]
    pub probe: ProbeConfig,
    #[serde(default)]
    pub tunnels: Vec<TunnelFile>,
    /// The datacenter side: VXLAN to and from the leaves. Without it the gateway keeps its
    /// tunnels and probes them but forwards nothing.
    #[serde(default)]
    pub fabric: Option<FabricFile>,
    #[serde(default)]
    pub dataplane: Dataplane,
    /// The Serf mesh: tunnels to every remote gateway are built from it.
    #[serde(default)]
    pub mesh: Option<MeshFile>,
    /// The orders channel: reports to the controller, its orders to us (needs `mesh`).
    #[serde(default)]
    pub api: Option<super::api_config::ApiFile>,
}

/// Which I/O backend the forwarding workers use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// AF_XDP where it can run, the socket backend otherwise (with a log line saying why).
    #[default]
    Auto,
    /// UDP sockets (recvmmsg/sendmmsg, GSO): runs anywhere.
    Socket,
    /// AF_XDP; the gateway refuses to start where it cannot run.
    Afxdp,
}

/// How packets are forwarded: the backend, worker threads and their batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    #[serde(default)]
    pub backend: Backend,
    /// Forwarding workers, one per core; default: one for every core this process may use.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Datagrams per receive batch (1..=1024, default 64).
    #[serde(default)]
    pub batch: Option<usize>,
    /// Send runs of equal-size datagrams to one peer as one UDP GSO send (default true).
    #[serde(default)]
    pub gso: Option<bool>,
    /// AF_XDP: ask the kernel for busy polling on the workers' sockets (SO_PREFER_BUSY_POLL,
    /// SO_BUSY_POLL), where it allows it (default false).
    #[serde(default)]
    pub busy_poll: Option<bool>,
}

impl Dataplane {
    /// The number of workers: as configured, or one per available core.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(64)
    }

    pub fn gso(&self) -> bool {
        self.gso.unwrap_or(true)
    }

    pub fn busy_poll(&self) -> bool {
        self.busy_poll.unwrap_or(false)
    }

    fn check(self) -> Result<Self, ConfigError> {
        if let Some(w) = self.workers {
            if !(1..=1024).contains(&w) {
                return Err(field(
                    "dataplane.workers",
                    format!("{w}: must be 1 to 1024"),
                ));
            }
        }
        if let Some(b) = self.batch {
            if !(1..=1024).contains(&b) {
                return Err(field("dataplane.batch", format!("{b}: must be 1 to 1024")));
            }
        }
        Ok(self)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FabricFile {
    /// Our VTEP address: VXLAN (UDP 4789) from the leaves arrives here.
    pub vtep: IpAddr,
    /// Our router MAC (the inner destination MAC leaves use for us).
    pub router_mac: String,
    /// The L3 VNI.
    pub vni: u32,
    /// Local prefixes and where they live, until bgpctl learns them from the fabric.
    #[serde(default)]
    pub local_routes: Vec<LocalRouteFile>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRouteFile {
    pub prefix: IpNet,
    /// The leaf VTEP that serves it.
    pub vtep: IpAddr,
    /// The leaf's router MAC.
    pub router_mac: String,
    /// Defaults to the fabric's VNI.
    #[serde(default)]
    pub vni: Option<u32>,
}

fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/gatewan/gateway.sock")
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransitFile {
    /// Provider name, e.g. `lumen`.
    pub name: String,
    /// Address and UDP port WireGuard listens on for this transit.
    pub listen: SocketAddr,
    /// What peers connect to, when it differs from `listen` (NAT, 0.0.0.0).
    #[serde(default)]
    pub public_endpoint: Option<SocketAddr>,
    /// Contracted capacity, e.g. `1Gbps`, `500Mbps`.
    #[serde(default)]
    pub capacity: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelFile {
    /// Interface-style name shown by `gatewan status`, e.g. `sdwan52`.
    pub name: String,
    /// Which of our transits carries it.
    pub transit: String,
    /// The peer gateway's name, datacenter and transit (for status and the controller).
    pub peer: String,
    pub peer_datacenter: String,
    #[serde(default)]
    pub peer_transit: Option<String>,
    pub peer_public_key: String,
    #[serde(default)]
    pub preshared_key: Option<String>,
    #[serde(default)]
    pub preshared_key_file: Option<PathBuf>,
    /// Where to send handshakes; without it the tunnel only answers (the peer initiates).
    #[serde(default)]
    pub peer_endpoint: Option<SocketAddr>,
    /// Our inner addresses with their prefix (a /31 and a /127 in the design).
    #[serde(default)]
    pub address_v4: Option<Ipv4Net>,
    #[serde(default)]
    pub address_v6: Option<Ipv6Net>,
    #[serde(default)]
    pub peer_address_v4: Option<Ipv4Addr>,
    #[serde(default)]
    pub peer_address_v6: Option<Ipv6Addr>,
    /// Our STAMP reflector's UDP port on the inner addresses.
    #[serde(default = "default_echo_port")]
    pub echo_port: u16,
    /// The peer's STAMP reflector port; without it gatewan probes with ICMP echo.
    #[serde(default)]
    pub peer_echo_port: Option<u16>,
    #[serde(default, with = "humantime_serde")]
    pub persistent_keepalive: Option<Duration>,
    /// Remote prefixes reached through this tunnel.
    #[serde(default)]
    pub networks: Vec<IpNet>,
}

fn default_echo_port() -> u16 {
    7054
}

/// A checked configuration, ready for the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub name: String,
    pub datacenter: String,
    pub private_key: Key32,
    pub control_socket: PathBuf,
    pub transits: Vec<Transit>,
    pub probe: ProbeConfig,
    pub tunnels: Vec<Tunnel>,
    pub fabric: Option<Fabric>,
    pub dataplane: Dataplane,
    pub mesh: Option<Mesh>,
    pub api: Option<super::api_config::Api>,
}

/// The checked fabric side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fabric {
    pub vtep: IpAddr,
    pub router_mac: MacAddr,
    pub vni: u32,
    pub local_routes: Vec<(IpNet, LocalRoute)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transit {
    pub name: String,
    pub listen: SocketAddr,
    pub public_endpoint: SocketAddr,
    /// Bits per second.
    pub capacity_bps: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Tunnel {
    pub name: String,
    /// Index into [`GatewayConfig::transits`].
    pub transit: usize,
    pub peer: String,
    pub peer_datacenter: String,
    pub peer_transit: Option<String>,
    pub peer_public_key: Key32,
    pub preshared_key: Option<Key32>,
    pub peer_endpoint: Option<SocketAddr>,
    pub address_v4: Option<Ipv4Net>,
    pub address_v6: Option<Ipv6Net>,
    pub peer_address_v4: Option<Ipv4Addr>,
    pub peer_address_v6: Option<Ipv6Addr>,
    pub echo_port: u16,
    pub peer_echo_port: Option<u16>,
    pub persistent_keepalive: Option<Duration>,
    pub networks: Vec<IpNet>,
}

impl Tunnel {
    /// The address probes go to: the peer's inner IPv4 address, else its IPv6 one.
    pub fn probe_target(&self) -> Option<IpAddr> {
        self.peer_address_v4
            .map(IpAddr::V4)
            .or(self.peer_address_v6.map(IpAddr::V6))
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

impl GatewayConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` is for messages and relative key files.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: GatewayFile = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.into(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        file.check(base)
    }
}

/// A secret given inline or in a file (relative to the configuration file), trimmed.
pub(super) fn read_secret(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    name: &str,
    base: &Path,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(field(
            name,
            format!("set either {name} or {name}_file, not both"),
        )),
        (Some(text), None) => Ok(Some(text.trim().to_owned())),
        (None, Some(path)) => {
            let path = base.join(path);
            std::fs::read_to_string(&path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|e| {
                    field(
                        format!("{name}_file"),
                        format!("reading {}: {e}", path.display()),
                    )
                })
        }
        (None, None) => Ok(None),
    }
}

fn read_key(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    name: &str,
    base: &Path,
) -> Result<Option<Key32>, ConfigError> {
    let Some(text) = read_secret(inline, file, name, base)? else {
        return Ok(None);
    };
    Key32::from_base64(&text).map(Some).ok_or_else(|| {
        field(
            name,
            "not a WireGuard key (32 bytes in base64, as `wg genkey` prints)",
        )
    })
}

/// Parses `1Gbps`, `500Mbps`, `10Gbit`, `100000bps` into bits per second.
pub fn parse_bitrate(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "bps" | "bit" | "" => 1.0,
        "kbps" | "kbit" => 1e3,
        "mbps" | "mbit" => 1e6,
        "gbps" | "gbit" => 1e9,
        "tbps" | "tbit" => 1e12,
        _ => return None,
    };
    let bps = number * scale;
    (1.0..1e15).contains(&bps).then_some(bps as u64)
}

fn check_name(value: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(field(
            name,
            format!("{value:?} must be 1-63 characters of letters, digits, '-', '_' or '.'"),
        ))
    }
}

impl GatewayFile {
    fn check(self, base: &Path) -> Result<GatewayConfig, ConfigError> {
        check_name(&self.name, "name")?;
        check_name(&self.datacenter, "datacenter")?;
        let private_key = read_key(
            &self.private_key,
            &self.private_key_file,
            "private_key",
            base,
        )?
        .ok_or_else(|| {
            field(
                "private_key",
                "missing: set private_key or private_key_file",
            )
        })?;
        self.probe
            .validate()
            .map_err(|e| field("probe", e.to_string()))?;
        if self.transits.is_empty() {
            return Err(field("transits", "at least one transit is needed"));
        }
        let mut transits = Vec::with_capacity(self.transits.len());
        let mut seen = HashSet::new();
        for (i, t) in self.transits.iter().enumerate() {
            let at = |f: &str| format!("transits[{i}].{f}");
            check_name(&t.name, &at("name"))?;
            if !seen.insert(t.name.as_str()) {
                return Err(field(
                    at("name"),
                    format!("transit {:?} is listed twice", t.name),
                ));
            }
            if t.listen.port() == 0 {
                return Err(field(at("listen"), "needs a UDP port"));
            }
            let public_endpoint = t.public_endpoint.unwrap_or(t.listen);
            if public_endpoint.ip().is_unspecified() || public_endpoint.port() == 0 {
                return Err(field(
                    at("public_endpoint"),
                    "needed when listen is a wildcard address or port 0",
                ));
            }
            let capacity_bps = match &t.capacity {
                None => None,
                Some(c) => Some(parse_bitrate(c).ok_or_else(|| {
                    field(
                        at("capacity"),
                        format!("{c:?} is not a bitrate such as 1Gbps"),
                    )
                })?),
            };
            transits.push(Transit {
                name: t.name.clone(),
                listen: t.listen,
                public_endpoint,
                capacity_bps,
            });
        }
        let mut tunnels = Vec::with_capacity(self.tunnels.len());
        let mut names = HashSet::new();
        let mut peers = HashSet::new();
        for (i, t) in self.tunnels.iter().enumerate() {
            let at = |f: &str| format!("tunnels[{i}].{f}");
            check_name(&t.name, &at("name"))?;
            if t.name.len() > 15 {
                return Err(field(
                    at("name"),
                    "at most 15 characters (it is shown as an interface name)",
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(field(
                    at("name"),
                    format!("tunnel {:?} is listed twice", t.name),
                ));
            }
            check_name(&t.peer, &at("peer"))?;
            check_name(&t.peer_datacenter, &at("peer_datacenter"))?;
            let transit = transits
                .iter()
                .position(|x| x.name == t.transit)
                .ok_or_else(|| {
                    field(
                        at("transit"),
                        format!("no transit named {:?} in transits", t.transit),
                    )
                })?;
            let peer_public_key = Key32::from_base64(&t.peer_public_key).ok_or_else(|| {
                field(
                    at("peer_public_key"),
                    "not a WireGuard public key (32 bytes in base64)",
                )
            })?;
            if peer_public_key == public_key_of(&private_key) {
                return Err(field(
                    at("peer_public_key"),
                    "is this gateway's own public key",
                ));
            }
            // On one transit, tunnels to the same peer key (the remote gateway's transits) are
            // told apart by the endpoint the peer sends from: each needs its own.
            if !peers.insert((transit, peer_public_key, t.peer_endpoint))
                || (t.peer_endpoint.is_none()
                    && peers
                        .iter()
                        .filter(|(tr, k, _)| *tr == transit && *k == peer_public_key)
                        .count()
                        > 1)
            {
                return Err(field(
                    at("peer_public_key"),
                    "another tunnel on this transit has the same peer key; give each a distinct peer_endpoint",
                ));
            }
            let preshared_key = read_key(
                &t.preshared_key,
                &t.preshared_key_file,
                &at("preshared_key"),
                base,
            )?;
            if let Some(ep) = t.peer_endpoint {
                if ep.ip().is_unspecified() || ep.port() == 0 {
                    return Err(field(
                        at("peer_endpoint"),
                        "must be a concrete address and port",
                    ));
                }
                if ep.is_ipv4() != transits[transit].listen.is_ipv4()
                    && !transits[transit].listen.ip().is_unspecified()
                {
                    return Err(field(
                        at("peer_endpoint"),
                        "address family differs from the transit's listen address",
                    ));
                }
            }
            if t.address_v4.is_none() && t.address_v6.is_none() {
                return Err(field(
                    at("address_v4"),
                    "a tunnel needs an inner address (address_v4 and/or address_v6)",
                ));
            }
            match (t.address_v4, t.peer_address_v4) {
                (Some(net), Some(peer)) if !net.contains(&peer) || net.addr() == peer => {
                    return Err(field(
                        at("peer_address_v4"),
                        format!("{peer} must be another address inside {net}"),
                    ));
                }
                (None, Some(_)) => return Err(field(at("peer_address_v4"), "set address_v4 too")),
                _ => {}
            }
            match (t.address_v6, t.peer_address_v6) {
                (Some(net), Some(peer)) if !net.contains(&peer) || net.addr() == peer => {
                    return Err(field(
                        at("peer_address_v6"),
                        format!("{peer} must be another address inside {net}"),
                    ));
                }
                (None, Some(_)) => return Err(field(at("peer_address_v6"), "set address_v6 too")),
                _ => {}
            }
            for (n, net) in t.networks.iter().enumerate() {
                if *net != net.trunc() {
                    return Err(field(
                        format!("tunnels[{i}].networks[{n}]"),
                        format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                    ));
                }
            }
            if t.echo_port == 0 {
                return Err(field(at("echo_port"), "must not be 0"));
            }
            if t.peer_echo_port == Some(0) {
                return Err(field(at("peer_echo_port"), "must not be 0"));
            }
            if let Some(ka) = t.persistent_keepalive {
                if ka.is_zero() || ka > Duration::from_secs(65535) {
                    return Err(field(
                        at("persistent_keepalive"),
                        "between 1s and 65535s, or absent",
                    ));
                }
            }
            tunnels.push(Tunnel {
                name: t.name.clone(),
                transit,
                peer: t.peer.clone(),
                peer_datacenter: t.peer_datacenter.clone(),
                peer_transit: t.peer_transit.clone(),
                peer_public_key,
                preshared_key,
                peer_endpoint: t.peer_endpoint,
                address_v4: t.address_v4,
                address_v6: t.address_v6,
                peer_address_v4: t.peer_address_v4,
                peer_address_v6: t.peer_address_v6,
                echo_port: t.echo_port,
                peer_echo_port: t.peer_echo_port,
                persistent_keepalive: t.persistent_keepalive,
                networks: t.networks.clone(),
            });
        }
        let fabric = match &self.fabric {
            None => None,
            Some(f) => Some(check_fabric(f)?),
        };
        let mesh = match &self.mesh {
            None => None,
            Some(m) => Some(m.check(&transits, base)?),
        };
        if mesh.is_some() {
            // Mesh tunnels are named sdwan<number>: a static one must not take such a name.
            for (i, t) in tunnels.iter().enumerate() {
                let numbered = t
                    .name
                    .strip_prefix("sdwan")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if numbered {
                    return Err(field(
                        format!("tunnels[{i}].name"),
                        "sdwan<number> names belong to mesh tunnels; pick another",
                    ));
                }
            }
        }
        let api = match (&self.api, &mesh) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(field(
                    "api",
                    "needs a mesh: controllers find the gateway through it",
                ))
            }
            (Some(a), Some(m)) => Some(a.check(&self.name, base, &m.state_dir)?),
        };
        Ok(GatewayConfig {
            api,
            mesh,
            fabric,
            dataplane: self.dataplane.check()?,
            name: self.name,
            datacenter: self.datacenter,
            private_key,
            control_socket: self.control_socket,
            transits,
            probe: self.probe,
            tunnels,
        })
    }
}

fn check_mac(text: &str, name: &str) -> Result<MacAddr, ConfigError> {
    let mac: MacAddr = text
        .parse()
        .map_err(|_| field(name, format!("{text:?} is not a MAC address")))?;
    if !mac.is_unicast() {
        return Err(field(name, format!("{mac} is not a unicast MAC address")));
    }
    Ok(mac)
}

fn check_vni(vni: u32, name: &str) -> Result<u32, ConfigError> {
    if vni == 0 || vni > 0x00ff_ffff {
        return Err(field(name, format!("{vni} is not a VNI (1 to 16777215)")));
    }
    Ok(vni)
}

fn check_fabric(f: &FabricFile) -> Result<Fabric, ConfigError> {
    let router_mac = check_mac(&f.router_mac, "fabric.router_mac")?;
    let vni = check_vni(f.vni, "fabric.vni")?;
    if f.vtep.is_unspecified() {
        return Err(field("fabric.vtep", "must be a concrete address"));
    }
    let mut local_routes = Vec::with_capacity(f.local_routes.len());
    let mut seen = HashSet::new();
    for (i, r) in f.local_routes.iter().enumerate() {
        let at = |x: &str| format!("fabric.local_routes[{i}].{x}");
        if r.prefix != r.prefix.trunc() {
            return Err(field(
                at("prefix"),
                format!(
                    "{} has host bits set (did you mean {}?)",
                    r.prefix,
                    r.prefix.trunc()
                ),
            ));
        }
        if !seen.insert(r.prefix) {
            return Err(field(at("prefix"), format!("{} is listed twice", r.prefix)));
        }
        let route = LocalRoute {
            vtep: r.vtep,
            router_mac: check_mac(&r.router_mac, &at("router_mac"))?,
            vni: check_vni(r.vni.unwrap_or(vni), &at("vni"))?,
        };
        local_routes.push((r.prefix, route));
    }
    Ok(Fabric {
        vtep: f.vtep,
        router_mac,
        vni,
        local_routes,
    })
}

/// The WireGuard public key of a private key.
pub fn public_key_of(private: &Key32) -> Key32 {
    Key32(gatewan_dataplane::wireguard::public_key(&private.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "YNqHwpcAmVj0lVzPOkkAAP1hmgYPEtTy0aLaGJD8PW4=";
    const KEY_B: &str = "kBbdsOAbrgSWJPf5HHXRS+w4IRtsTEL3lFZK7tVUgX8=";

    fn peer_pub() -> String {
        public_key_of(&Key32::from_base64(KEY_B).expect("key")).to_base64()
    }

    fn sample() -> String {
        format!(
            r#"
name: gw-a1
datacenter: dc-a
private_key: {KEY_A}
control_socket: /tmp/gw-a1.sock
transits:
  - name: lumen
    listen: 192.0.2.1:51820
    capacity: 1Gbps
probe:
  interval: 200ms
tunnels:
  - name: sdwan1
    transit: lumen
    peer: gw-b1
    peer_datacenter: dc-b
    peer_transit: telstra
    peer_public_key: {}
    peer_endpoint: 198.51.100.7:51820
    address_v4: 10.13.76.135/31
    peer_address_v4: 10.13.76.134
    address_v6: fd05:1:0:2:5::87/127
    peer_address_v6: fd05:1:0:2:5::86
    peer_echo_port: 7117
    persistent_keepalive: 25s
    networks: [10.2.0.0/16, fd02::/48]
fabric:
  vtep: 192.0.2.100
  router_mac: 02:00:00:00:0a:01
  vni: 100
  local_routes:
    - prefix: 10.1.0.0/16
      vtep: 192.0.2.101
      router_mac: 02:00:00:00:0b:01
dataplane:
  workers: 2
  batch: 32
"#,
            peer_pub()
        )
    }

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse(text, Path::new("gateway.yaml"))
    }

    #[test]
    fn sample_parses() {
        let config = parse(&sample()).expect("valid");
        assert_eq!(config.transits[0].capacity_bps, Some(1_000_000_000));
        assert_eq!(
            config.transits[0].public_endpoint,
            "192.0.2.1:51820".parse().expect("addr")
        );
        assert_eq!(config.probe.interval, Duration::from_millis(200));
        let t = &config.tunnels[0];
        assert_eq!(t.echo_port, 7054, "default echo port");
        assert_eq!(t.persistent_keepalive, Some(Duration::from_secs(25)));
        assert_eq!(
            t.probe_target(),
            Some("10.13.76.134".parse().expect("addr"))
        );
        assert_eq!(t.networks.len(), 2);
        assert_eq!(
            (
                config.dataplane.workers(),
                config.dataplane.batch(),
                config.dataplane.gso()
            ),
            (2, 32, true)
        );
    }

    /// Each mutation of the sample must fail with a message naming `field`.
    #[test]
    fn errors_name_the_field() {
        let good = sample();
        let cases: &[(&str, &str, &str)] = &[
            (
                "private_key: YNqH",
                "private_key: not-base64",
                "private_key",
            ),
            ("capacity: 1Gbps", "capacity: fast", "transits[0].capacity"),
            ("workers: 2", "workers: 0", "dataplane.workers"),
            ("batch: 32", "batch: 5000", "dataplane.batch"),
            ("transit: lumen", "transit: cogent", "tunnels[0].transit"),
            (
                "peer_address_v4: 10.13.76.134",
                "peer_address_v4: 10.13.76.10",
                "tunnels[0].peer_address_v4",
            ),
            (
                "peer_address_v6: fd05:1:0:2:5::86",
                "peer_address_v6: fd05:1:0:2:5::87",
                "tunnels[0].peer_address_v6",
            ),
            (
                "name: sdwan1",
                "name: this-name-is-too-long",
                "tunnels[0].name",
            ),
            (
                "peer_echo_port: 7117",
                "peer_echo_port: 0",
                "tunnels[0].peer_echo_port",
            ),
            (
                "persistent_keepalive: 25s",
                "persistent_keepalive: 0s",
                "tunnels[0].persistent_keepalive",
            ),
            ("interval: 200ms", "interval: 0ms", "probe"),
            (
                "peer_endpoint: 198.51.100.7:51820",
                "peer_endpoint: 0.0.0.0:51820",
                "tunnels[0].peer_endpoint",
            ),
            (
                "peer_endpoint: 198.51.100.7:51820",
                "peer_endpoint: '[2001:db8::1]:51820'",
                "tunnels[0].peer_endpoint",
            ),
            ("datacenter: dc-a", "datacenter: 'dc a'", "datacenter"),
            (
                "    listen: 192.0.2.1:51820",
                "    listen: 0.0.0.0:51820",
                "transits[0].public_endpoint",
            ),
        ];
        for (from, to, field) in cases {
            assert!(good.contains(from), "sample lacks {from:?}");
            let text = good.replacen(from, to, 1);
            let err = parse(&text).expect_err(to).to_string();
            assert!(
                err.starts_with(field),
                "{to:?}: expected an error about {field}, got {err:?}"
            );
        }
    }

    #[test]
    fn own_key_duplicates_and_unknown_fields_are_rejected() {
        let own = public_key_of(&Key32::from_base64(KEY_A).expect("key")).to_base64();
        let err = parse(&sample().replace(&peer_pub(), &own))
            .expect_err("own key")
            .to_string();
        assert!(err.contains("own public key"), "{err}");

        let text = sample();
        let (start, end) = (
            text.find("  - name: sdwan1").expect("tunnel"),
            text.find("fabric:").expect("fabric"),
        );
        let tunnel = text[start..end].replace("sdwan1", "sdwan2");
        let twice = format!("{}{tunnel}{}", &text[..end], &text[end..]);
        let err = parse(&twice).expect_err("same peer twice").to_string();
        assert!(err.starts_with("tunnels[1].peer_public_key"), "{err}");

        let err = parse(&sample().replace("    peer: gw-b1", "    peer: gw-b1\n    colour: blue"))
            .expect_err("unknown");
        assert!(
            matches!(err, ConfigError::Syntax { .. }) && err.to_string().contains("colour"),
            "{err}"
        );
        let err = parse("name: [").expect_err("syntax");
        assert!(err.to_string().starts_with("gateway.yaml:"), "{err}");
    }

    #[test]
    fn keys_from_files_relative_to_the_config() {
        let dir = std::env::temp_dir().join(format!("gatewan-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.key"), format!("{KEY_A}\n")).expect("write");
        let text = sample().replace(&format!("private_key: {KEY_A}"), "private_key_file: a.key");
        let config = GatewayConfig::parse(&text, &dir.join("gateway.yaml")).expect("valid");
        assert_eq!(config.private_key, Key32::from_base64(KEY_A).expect("key"));
        let both = sample().replace(
            &format!("private_key: {KEY_A}"),
            &format!("private_key: {KEY_A}\nprivate_key_file: a.key"),
        );
        assert!(GatewayConfig::parse(&both, &dir.join("gateway.yaml"))
            .expect_err("both")
            .to_string()
            .contains("not both"));
        let missing = GatewayConfig::parse(&text, Path::new("/nonexistent/gateway.yaml"))
            .expect_err("no file");
        assert!(
            missing.to_string().starts_with("private_key_file"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bitrates() {
        assert_eq!(parse_bitrate("1Gbps"), Some(1_000_000_000));
        assert_eq!(parse_bitrate("2.5 Gbit"), Some(2_500_000_000));
        assert_eq!(parse_bitrate("500Mbps"), Some(500_000_000));
        assert_eq!(parse_bitrate("64000"), Some(64_000));
        for bad in ["", "fast", "1Xbps", "-1Gbps", "1e400Gbps", "0bps"] {
            assert_eq!(parse_bitrate(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_debug_never_shows_material() {
        let key = Key32::from_base64(KEY_A).expect("key");
        assert_eq!(format!("{key:?}"), "Key32(..)");
        assert_eq!(key.to_base64(), KEY_A);
        assert_eq!(key.to_hex().len(), 64);
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// docs/examples/gateway.yaml must stay a valid configuration.
    #[test]
    fn the_documented_example_parses() {
        let dir = std::env::temp_dir().join(format!("gatewan-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("gateway.key"),
            "YNqHwpcAmVj0lVzPOkkAAP1hmgYPEtTy0aLaGJD8PW4=",
        )
        .expect("key");
        let text = include_str!("../../../docs/examples/gateway.yaml");
        let config =
            GatewayConfig::parse(text, &dir.join("gateway.yaml")).expect("the example is valid");
        assert_eq!(config.transits.len(), 2);
        assert_eq!(config.tunnels[0].peer_echo_port, Some(7117));
        let fabric = config.fabric.expect("the example has a fabric section");
        assert_eq!((fabric.vni, fabric.local_routes.len()), (2204857, 1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
