//! `mesh:` in gateway.yaml: how the gateway joins the Serf mesh and numbers the tunnels it
//! builds from it. Checked like the rest of the file: every error names its field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::config::{field, read_secret, ConfigError, Transit};
use crate::mesh::agent::Profile;

/// `mesh:` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFile {
    /// This gateway's mesh id, unique in the mesh (1 to 65535): it numbers its tunnels.
    pub id: u32,
    /// The `serf` binary.
    #[serde(default = "default_serf")]
    pub serf: PathBuf,
    /// A command the agent runs under that execs it (`ip vrf exec transit`).
    #[serde(default)]
    pub launcher: Vec<String>,
    /// Where the agent gossips, per transit: the mesh rides the transits, never the tunnels.
    pub bind: Vec<BindFile>,
    /// Members to join (`host:port`), over several transits.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Serf encryption keys (base64 of 16, 24 or 32 bytes), the first one primary. May be
    /// left out once the agent's keyring exists in `state_dir`.
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default = "default_rpc_addr")]
    pub rpc_addr: SocketAddr,
    #[serde(default)]
    pub rpc_auth: Option<String>,
    #[serde(default)]
    pub rpc_auth_file: Option<PathBuf>,
    /// The agent's keyring and snapshot, and the last mesh view (bootstrap without seeds).
    pub state_dir: PathBuf,
    pub pools: PoolsFile,
    /// How long a failed member keeps its tunnels (its WireGuard sessions have their own
    /// liveness: a short Serf suspicion must not tear them down).
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub failed_grace: Duration,
    /// The most prefixes accepted from one member.
    #[serde(default = "default_max_prefixes")]
    pub max_prefixes: usize,
    /// Room for mesh tunnels in the dataplane (per-tunnel counter slots).
    #[serde(default = "default_max_tunnels")]
    pub max_tunnels: usize,
    /// Serf's timing profile: `wan` (default), `lan`, or `local` (test beds).
    #[serde(default)]
    pub profile: Profile,
    /// Our STAMP reflector's port on the mesh tunnels' inner addresses.
    #[serde(default = "default_echo_port")]
    pub echo_port: u16,
}

fn default_echo_port() -> u16 {
    7054
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindFile {
    pub transit: String,
    pub address: SocketAddr,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolsFile {
    /// Cut into /31s, one per tunnel.
    #[serde(default)]
    pub v4: Option<Ipv4Net>,
    /// Cut into /127s, one per tunnel.
    #[serde(default)]
    pub v6: Option<Ipv6Net>,
}

fn default_serf() -> PathBuf {
    PathBuf::from("serf")
}

fn default_rpc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7373))
}

fn default_grace() -> Duration {
    Duration::from_secs(60)
}

fn default_max_prefixes() -> usize {
    4096
}

fn default_max_tunnels() -> usize {
    2048
}

/// The checked `mesh:` section.
#[derive(Clone, Debug)]
pub struct Mesh {
    pub id: u32,
    pub serf: PathBuf,
    pub launcher: Vec<String>,
    /// Where the agent binds; `advertise` is what members are told when it differs.
    pub bind: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub keys: Vec<String>,
    pub rpc_addr: SocketAddr,
    pub rpc_auth: String,
    pub state_dir: PathBuf,
    pub pool_v4: Option<Ipv4Net>,
    pub pool_v6: Option<Ipv6Net>,
    pub failed_grace: Duration,
    pub max_prefixes: usize,
    pub max_tunnels: usize,
    pub profile: Profile,
    pub echo_port: u16,
}

impl Mesh {
    /// The agent's keyring file (it owns it after the first start).
    pub fn keyring_file(&self) -> PathBuf {
        self.state_dir.join("serf.keyring")
    }

    /// The last mesh view, kept for a start without seeds.
    pub fn cache_file(&self) -> PathBuf {
        self.state_dir.join("mesh-view.json")
    }
}

impl MeshFile {
    pub fn check(&self, transits: &[Transit], base: &Path) -> Result<Mesh, ConfigError> {
        if !(1..=65535).contains(&self.id) {
            return Err(field("mesh.id", format!("{}: must be 1 to 65535", self.id)));
        }
        let Some(first) = self.bind.first() else {
            return Err(field(
                "mesh.bind",
                "give at least one transit address for the agent",
            ));
        };
        for (i, b) in self.bind.iter().enumerate() {
            if !transits.iter().any(|t| t.name == b.transit) {
                return Err(field(
                    format!("mesh.bind[{i}].transit"),
                    format!("no transit named {:?} in transits", b.transit),
                ));
            }
            if b.address.ip().is_unspecified() || b.address.port() == 0 {
                return Err(field(
                    format!("mesh.bind[{i}].address"),
                    "must be a concrete address and port on that transit",
                ));
            }
        }
        // Serf gossips from one socket: with several transits it listens on all of them and
        // tells members the first.
        let (bind, advertise) = if self.bind.len() == 1 {
            (first.address, None)
        } else {
            let any: std::net::IpAddr = if first.address.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            (
                SocketAddr::new(any, first.address.port()),
                Some(first.address),
            )
        };
        let agent = AgentFile {
            seeds: &self.seeds,
            keys: &self.keys,
            rpc_addr: self.rpc_addr,
            rpc_auth: &self.rpc_auth,
            rpc_auth_file: &self.rpc_auth_file,
            state_dir: &self.state_dir,
        };
        let (state_dir, rpc_auth) = agent.check(base)?;
        let (pool_v4, pool_v6) = (self.pools.v4, self.pools.v6);
        if pool_v4.is_none() && pool_v6.is_none() {
            return Err(field(
                "mesh.pools",
                "give a v4 pool (cut into /31s) and/or a v6 pool (cut into /127s)",
            ));
        }
        if let Some(p) = pool_v4 {
            if p != p.trunc() || p.prefix_len() > 30 {
                return Err(field(
                    "mesh.pools.v4",
                    format!("{p}: a network of /30 or larger, without host bits"),
                ));
            }
        }
        if let Some(p) = pool_v6 {
            if p != p.trunc() || p.prefix_len() > 126 {
                return Err(field(
                    "mesh.pools.v6",
                    format!("{p}: a network of /126 or larger, without host bits"),
                ));
            }
        }
        if self.failed_grace > Duration::from_secs(24 * 3600) {
            return Err(field("mesh.failed_grace", "at most 24h"));
        }
        if !(1..=1_000_000).contains(&self.max_prefixes) {
            return Err(field("mesh.max_prefixes", "must be 1 to 1000000"));
        }
        if self.echo_port == 0 {
            return Err(field("mesh.echo_port", "must not be 0"));
        }
        if !(1..=65_535).contains(&self.max_tunnels) {
            return Err(field("mesh.max_tunnels", "must be 1 to 65535"));
        }
        Ok(Mesh {
            id: self.id,
            serf: self.serf.clone(),
            launcher: self.launcher.clone(),
            bind,
            advertise,
            seeds: self.seeds.clone(),
            keys: self.keys.iter().map(|k| k.trim().to_owned()).collect(),
            rpc_addr: self.rpc_addr,
            rpc_auth,
            state_dir,
            pool_v4,
            pool_v6,
            failed_grace: self.failed_grace,
            max_prefixes: self.max_prefixes,
            max_tunnels: self.max_tunnels,
            profile: self.profile,
            echo_port: self.echo_port,
        })
    }
}

/// The agent's part of a `mesh:` section, shared by gateway.yaml and controller.yaml.
pub struct AgentFile<'a> {
    pub seeds: &'a [String],
    pub keys: &'a [String],
    pub rpc_addr: SocketAddr,
    pub rpc_auth: &'a Option<String>,
    pub rpc_auth_file: &'a Option<PathBuf>,
    pub state_dir: &'a Path,
}

impl AgentFile<'_> {
    /// Checks seeds, keys (the mesh is always encrypted) and the agent's RPC (loopback, with
    /// a key); returns the state directory and the RPC key.
    pub fn check(&self, base: &Path) -> Result<(PathBuf, String), ConfigError> {
        for (i, seed) in self.seeds.iter().enumerate() {
            if seed.trim().is_empty() || !seed.contains(':') {
                return Err(field(
                    format!("mesh.seeds[{i}]"),
                    format!("{seed:?} is not host:port"),
                ));
            }
        }
        let state_dir = base.join(self.state_dir);
        for (i, key) in self.keys.iter().enumerate() {
            let ok = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .is_ok_and(|k| [16, 24, 32].contains(&k.len()));
            if !ok {
                return Err(field(
                    format!("mesh.keys[{i}]"),
                    "not a Serf key (base64 of 16, 24 or 32 bytes, as `serf keygen` prints)",
                ));
            }
        }
        if self.keys.is_empty() && !state_dir.join("serf.keyring").exists() {
            return Err(field(
                    "mesh.keys",
                    "the mesh is always encrypted: give a key (serf keygen), or keep the agent's keyring in state_dir",
                ));
        }
        let rpc_auth = read_secret(self.rpc_auth, self.rpc_auth_file, "mesh.rpc_auth", base)?
            .ok_or_else(|| {
                field(
                    "mesh.rpc_auth",
                    "missing: the agent's RPC must require a key (rpc_auth or rpc_auth_file)",
                )
            })?;
        if rpc_auth.is_empty() {
            return Err(field("mesh.rpc_auth", "must not be empty"));
        }
        if !self.rpc_addr.ip().is_loopback() {
            return Err(field("mesh.rpc_addr", "keep the agent's RPC on loopback"));
        }
        Ok((state_dir, rpc_auth))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::config::GatewayConfig;

    const BASE: &str = r#"
name: a1
datacenter: dc-a
private_key: YNqHwpcAmVj0lVzPOkkAAP1hmgYPEtTy0aLaGJD8PW4=
transits:
  - name: lumen
    listen: "192.0.2.1:51820"
  - name: telstra
    listen: "[2001:db8::1]:51820"
"#;

    const MESH: &str = r#"mesh:
  id: 7
  bind: [{transit: lumen, address: "192.0.2.1:7946"}, {transit: telstra, address: "[2001:db8::1]:7946"}]
  seeds: ["192.0.2.9:7946"]
  keys: ["AAAAAAAAAAAAAAAAAAAAAA=="]
  rpc_auth: secret
  state_dir: /nonexistent-gatewan-state
  pools: {v4: 100.64.0.0/16, v6: "fd00:5d::/64"}
"#;

    fn parse(extra: &str) -> Result<GatewayConfig, String> {
        GatewayConfig::parse(&format!("{BASE}{extra}"), std::path::Path::new("gw.yaml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_mesh_section_parses_with_its_defaults() {
        let c = parse(MESH).unwrap();
        let m = c.mesh.unwrap();
        assert_eq!(m.id, 7);
        // Two transits: the agent listens on all and advertises the first.
        assert_eq!(m.bind, "0.0.0.0:7946".parse().unwrap());
        assert_eq!(m.advertise, Some("192.0.2.1:7946".parse().unwrap()));
        assert_eq!(m.failed_grace, std::time::Duration::from_secs(60));
        assert_eq!(
            (m.max_prefixes, m.max_tunnels, m.echo_port),
            (4096, 2048, 7054)
        );
        assert_eq!(m.rpc_addr, "127.0.0.1:7373".parse().unwrap());
    }

    #[test]
    fn mesh_errors_name_their_field() {
        let cases = [
            (MESH.replace("id: 7", "id: 0"), "mesh.id"),
            (
                MESH.replace("transit: lumen", "transit: cogent"),
                "mesh.bind[0].transit",
            ),
            (
                MESH.replace("keys: [\"AAAAAAAAAAAAAAAAAAAAAA==\"]", "keys: []"),
                "mesh.keys: the mesh is always encrypted",
            ),
            (
                MESH.replace("AAAAAAAAAAAAAAAAAAAAAA==", "short"),
                "mesh.keys[0]",
            ),
            (MESH.replace("  rpc_auth: secret\n", ""), "mesh.rpc_auth"),
            (
                MESH.replace(
                    "rpc_auth: secret",
                    "rpc_auth: secret\n  rpc_addr: \"192.0.2.1:7373\"",
                ),
                "mesh.rpc_addr",
            ),
            (
                MESH.replace(
                    "pools: {v4: 100.64.0.0/16, v6: \"fd00:5d::/64\"}",
                    "pools: {}",
                ),
                "mesh.pools",
            ),
            (
                MESH.replace("100.64.0.0/16", "100.64.0.1/16"),
                "mesh.pools.v4",
            ),
            (
                MESH.replace("seeds: [\"192.0.2.9:7946\"]", "seeds: [\"nohost\"]"),
                "mesh.seeds[0]",
            ),
        ];
        for (yaml, field) in cases {
            let err = parse(&yaml).unwrap_err();
            assert!(err.starts_with(field), "{field}: got {err}");
        }
    }

    #[test]
    fn static_tunnels_may_not_take_mesh_names() {
        let tunnel = r#"tunnels:
  - name: sdwan64
    transit: lumen
    peer: b1
    peer_datacenter: dc-b
    peer_public_key: kBbdsOAbrgSWJPf5HHXRS+w4IRtsTEL3lFZK7tVUgX8=
    address_v4: 10.255.0.0/31
"#;
        assert!(parse(tunnel).is_ok(), "allowed without a mesh");
        let err = parse(&format!("{tunnel}{MESH}")).unwrap_err();
        assert!(err.starts_with("tunnels[0].name"), "{err}");
    }
}
