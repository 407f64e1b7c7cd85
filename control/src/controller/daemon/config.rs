//! controller.yaml: the daemon's name, policy, cycle, mesh membership and channel
//! credentials. Checked like gateway.yaml: every error names its field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::{identity, TlsFiles};
use crate::gateway::config::{field, ConfigError};
use crate::gateway::mesh_config::AgentFile;
use crate::mesh::agent::Profile;

/// As written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerFile {
    /// The controller's name: its Serf node name, its certificate's name, its epochs'.
    pub name: String,
    /// Where it runs (a tag; controllers carry no traffic).
    #[serde(default = "default_datacenter")]
    pub datacenter: String,
    /// The policy (docs/controller.md).
    pub policy: PathBuf,
    /// Time between cycles (default: the policy's `cycle_period`).
    #[serde(default, with = "humantime_serde")]
    pub cycle: Option<Duration>,
    /// How long a cycle waits for reports, and for acks.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub deadline: Duration,
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Each cycle's inputs and orders are written here (`plan --snapshot/--current`).
    #[serde(default)]
    pub snapshot_dir: Option<PathBuf>,
    /// How many cycles `snapshot_dir` keeps.
    #[serde(default = "default_keep")]
    pub keep_snapshots: usize,
    pub mesh: MemberMeshFile,
    pub api: ControllerApiFile,
}

/// `mesh:`: the Serf agent of a member that carries no traffic (a controller, bgpctl).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemberMeshFile {
    #[serde(default = "default_serf")]
    pub serf: PathBuf,
    #[serde(default)]
    pub launcher: Vec<String>,
    pub bind: SocketAddr,
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    #[serde(default)]
    pub seeds: Vec<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default = "default_rpc_addr")]
    pub rpc_addr: SocketAddr,
    #[serde(default)]
    pub rpc_auth: Option<String>,
    #[serde(default)]
    pub rpc_auth_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    #[serde(default)]
    pub profile: Profile,
}

/// `api:`: the controller's certificate (`gatewan pki issue --role controller`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerApiFile {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_datacenter() -> String {
    "controllers".into()
}
fn default_deadline() -> Duration {
    Duration::from_millis(1500)
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/gatewan/controller.sock")
}
fn default_keep() -> usize {
    100
}
fn default_serf() -> PathBuf {
    PathBuf::from("serf")
}
fn default_rpc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7373))
}

/// Checked.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub name: String,
    pub datacenter: String,
    pub policy: PathBuf,
    pub cycle: Option<Duration>,
    pub deadline: Duration,
    pub control_socket: PathBuf,
    pub snapshot_dir: Option<PathBuf>,
    pub keep_snapshots: usize,
    pub mesh: MemberMesh,
    pub tls: TlsFiles,
}

#[derive(Clone, Debug)]
pub struct MemberMesh {
    pub serf: PathBuf,
    pub launcher: Vec<String>,
    pub bind: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub keys: Vec<String>,
    pub rpc_addr: SocketAddr,
    pub rpc_auth: String,
    pub state_dir: PathBuf,
    pub profile: Profile,
}

impl ControllerConfig {
    pub fn load(path: &Path) -> Result<ControllerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let file: ControllerFile =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        file.check(path.parent().unwrap_or(Path::new(".")))
    }
}

impl ControllerFile {
    pub fn check(self, base: &Path) -> Result<ControllerConfig, ConfigError> {
        identity::check_name(&self.name).map_err(|e| field("name", e.to_string()))?;
        if let Some(c) = self.cycle {
            if c < Duration::from_millis(100) || c > Duration::from_secs(3600) {
                return Err(field("cycle", "must be 100ms to 1h"));
            }
        }
        if self.deadline < Duration::from_millis(50) || self.deadline > Duration::from_secs(60) {
            return Err(field("deadline", "must be 50ms to 60s"));
        }
        if !(1..=100_000).contains(&self.keep_snapshots) {
            return Err(field("keep_snapshots", "must be 1 to 100000"));
        }
        let mesh = self.mesh.check(base)?;
        Ok(ControllerConfig {
            policy: base.join(&self.policy),
            cycle: self.cycle,
            deadline: self.deadline,
            control_socket: self.control_socket,
            snapshot_dir: self.snapshot_dir.map(|d| base.join(d)),
            keep_snapshots: self.keep_snapshots,
            mesh,
            tls: TlsFiles {
                ca: base.join(&self.api.ca),
                cert: base.join(&self.api.cert),
                key: base.join(&self.api.key),
            },
            name: self.name,
            datacenter: self.datacenter,
        })
    }
}

impl MemberMeshFile {
    /// Checked; `base` resolves relative paths.
    pub fn check(&self, base: &Path) -> Result<MemberMesh, ConfigError> {
        let m = self;
        if m.bind.ip().is_unspecified() && m.advertise.is_none() || m.bind.port() == 0 {
            return Err(field(
                "mesh.bind",
                "a concrete address and port (or set mesh.advertise)",
            ));
        }
        let (state_dir, rpc_auth) = AgentFile {
            seeds: &m.seeds,
            keys: &m.keys,
            rpc_addr: m.rpc_addr,
            rpc_auth: &m.rpc_auth,
            rpc_auth_file: &m.rpc_auth_file,
            state_dir: &m.state_dir,
        }
        .check(base)?;
        Ok(MemberMesh {
            serf: m.serf.clone(),
            launcher: m.launcher.clone(),
            bind: m.bind,
            advertise: m.advertise,
            seeds: m.seeds.clone(),
            keys: m.keys.clone(),
            rpc_addr: m.rpc_addr,
            rpc_auth,
            state_dir,
            profile: m.profile,
        })
    }
}
