//! The `api:` section of gateway.yaml: where the gateway serves the orders channel (its
//! report and the controller's orders), its certificate, where the order in force is kept,
//! and local repair's hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{field, ConfigError};
use crate::channel::{identity, TlsFiles};

/// As written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    /// Where to listen (HTTPS, HTTP/2, client certificates required).
    pub listen: SocketAddr,
    /// The address published in the mesh (tag `api`), when `listen` is a wildcard.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The deployment's CA, this gateway's certificate and key (`gatewan pki`).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The order in force, kept across restarts (default: `mesh.state_dir`/order.json).
    #[serde(default)]
    pub order_file: Option<PathBuf>,
    /// With no controller in the mesh, how long a tunnel taken out by local repair must be
    /// alive again before it carries traffic again.
    #[serde(default = "default_repair_hold", with = "humantime_serde")]
    pub repair_hold: Duration,
}

fn default_repair_hold() -> Duration {
    Duration::from_secs(30)
}

/// Checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub tls: TlsFiles,
    pub order_file: PathBuf,
    pub repair_hold: Duration,
}

impl ApiFile {
    /// `base` resolves relative paths (the configuration's directory); `state_dir` is the
    /// mesh's.
    pub fn check(&self, name: &str, base: &Path, state_dir: &Path) -> Result<Api, ConfigError> {
        identity::check_name(name).map_err(|e| {
            field(
                "name",
                format!("{e} (api: it names the gateway's certificate)"),
            )
        })?;
        let advertise = self.advertise.unwrap_or(self.listen);
        if advertise.ip().is_unspecified() || advertise.port() == 0 {
            return Err(field(
                "api.advertise",
                "set the address controllers reach (listen is a wildcard or port 0)",
            ));
        }
        if self.repair_hold > Duration::from_secs(3600) {
            return Err(field("api.repair_hold", "at most 1h"));
        }
        let path = |p: &Path| base.join(p);
        Ok(Api {
            listen: self.listen,
            advertise,
            tls: TlsFiles {
                ca: path(&self.ca),
                cert: path(&self.cert),
                key: path(&self.key),
            },
            order_file: self
                .order_file
                .as_deref()
                .map_or_else(|| state_dir.join("order.json"), path),
            repair_hold: self.repair_hold,
        })
    }
}
