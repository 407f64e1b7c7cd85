//! Running the gateway's own `serf agent`: its generated configuration and a supervisor
//! that starts it as a child, restarts it when it dies, and stops it (with a leave, or
//! abruptly) on request. The mesh node notices a restart through its RPC connection and
//! re-subscribes and reconciles by itself (see `mesh::node`), which also covers agents it
//! merely attaches to.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::tags::{check_size, TagError};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Tags(#[from] TagError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// Serf's timing profiles. Gateways talk over the internet: `wan` is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Wan,
    Lan,
    /// Fast failure detection for a single host (test beds).
    Local,
}

/// What gatewan writes into the agent's configuration file.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node name, unique in the mesh (the gateway's name).
    pub node_name: String,
    /// Gossip address on the transit side.
    pub bind: SocketAddr,
    /// The address other members should use, if not `bind` (NAT).
    pub advertise: Option<SocketAddr>,
    /// RPC listener; keep it on loopback.
    pub rpc_addr: SocketAddr,
    /// RPC auth key required of every client.
    pub rpc_auth: String,
    /// Where the agent keeps its keyring. Written from `initial_keys` only when absent:
    /// afterwards the agent maintains it through key rotations.
    pub keyring_file: PathBuf,
    /// Base64 AES keys (16, 24 or 32 bytes), the first one primary.
    pub initial_keys: Vec<String>,
    /// Snapshot file, so a restarted agent rejoins by itself and does not replay events.
    pub snapshot_file: PathBuf,
    pub profile: Profile,
    /// Members to join (`host:port`), retried until one answers.
    pub retry_join: Vec<String>,
    pub retry_interval: Duration,
    pub tags: BTreeMap<String, String>,
    pub log_level: String,
    /// The generated JSON configuration file.
    pub config_file: PathBuf,
}

impl AgentConfig {
    fn validate(&self) -> Result<(), AgentError> {
        if self.node_name.is_empty() || self.node_name.len() > 64 {
            return Err(AgentError::Config("node name must be 1 to 64 bytes".into()));
        }
        if self.rpc_auth.is_empty() {
            return Err(AgentError::Config("an RPC auth key is required".into()));
        }
        if self.initial_keys.is_empty() && !self.keyring_file.exists() {
            return Err(AgentError::Config(
                "the mesh is encrypted: give at least one key or an existing keyring file".into(),
            ));
        }
        for key in &self.initial_keys {
            let raw = B64
                .decode(key)
                .map_err(|_| AgentError::Config("encryption key is not base64".into()))?;
            if ![16, 24, 32].contains(&raw.len()) {
                return Err(AgentError::Config(
                    "encryption key must be 16, 24 or 32 bytes".into(),
                ));
            }
        }
        check_size(&self.tags)?;
        Ok(())
    }

    /// The agent's JSON configuration.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "node_name": self.node_name,
            "bind": self.bind.to_string(),
            "rpc_addr": self.rpc_addr.to_string(),
            "rpc_auth": self.rpc_auth,
            "keyring_file": self.keyring_file.display().to_string(),
            "snapshot_path": self.snapshot_file.display().to_string(),
            "profile": self.profile,
            "retry_join": self.retry_join,
            "retry_interval": format!("{}ms", self.retry_interval.as_millis().max(1)),
            "tags": self.tags,
            "log_level": self.log_level,
            // A gateway restarted after a clean leave must come back into the mesh.
            "rejoin_after_leave": true,
        });
        if let (Some(adv), Some(obj)) = (self.advertise, v.as_object_mut()) {
            obj.insert("advertise".into(), adv.to_string().into());
        }
        v
    }

    /// Writes the keyring (if absent) and the configuration file, both private.
    pub fn write_files(&self) -> Result<(), AgentError> {
        self.validate()?;
        if !self.keyring_file.exists() {
            let body = serde_json::to_vec(&self.initial_keys)
                .map_err(|e| AgentError::Config(e.to_string()))?;
            write_private(&self.keyring_file, &body)?;
        }
        let body = serde_json::to_vec_pretty(&self.to_json())
            .map_err(|e| AgentError::Config(e.to_string()))?;
        write_private(&self.config_file, &body)
    }
}

fn write_private(path: &Path, body: &[u8]) -> Result<(), AgentError> {
    let err = |source| AgentError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(body).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// How the supervisor runs the agent.
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// The `serf` binary.
    pub program: PathBuf,
    /// A command the agent runs under, e.g. `ip vrf exec transit` or
    /// `ip netns exec <name>`; empty for none. It must exec the program (keep its PID).
    pub launcher: Vec<String>,
    /// First restart delay, doubled after each quick death up to `restart_max`.
    pub restart_min: Duration,
    pub restart_max: Duration,
    /// An agent that ran this long resets the restart delay.
    pub healthy_after: Duration,
    /// Where the agent's output goes; `None` sends it to the log at debug level.
    pub log_file: Option<PathBuf>,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            program: PathBuf::from("serf"),
            launcher: Vec::new(),
            restart_min: Duration::from_millis(200),
            restart_max: Duration::from_secs(10),
            healthy_after: Duration::from_secs(30),
            log_file: None,
        }
    }
}

/// What the supervisor reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    /// The running agent's PID.
    pub pid: Option<u32>,
    /// How many times the agent was started.
    pub starts: u64,
    /// How the last agent ended, if one did.
    pub last_exit: Option<String>,
}

/// Supervises one `serf agent` child.
pub struct AgentSupervisor {
    config: Arc<Mutex<AgentConfig>>,
    hold: Arc<std::sync::atomic::AtomicBool>,
    status: watch::Receiver<AgentStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AgentSupervisor {
    /// Writes the configuration and starts the agent; restarts it whenever it exits.
    pub fn start(config: AgentConfig, options: SupervisorOptions) -> Result<Self, AgentError> {
        config.write_files()?;
        let mut child = spawn(&config, &options)?;
        let pid = child.id();
        let (status_tx, status) = watch::channel(AgentStatus {
            pid,
            starts: 1,
            last_exit: None,
        });
        let config = Arc::new(Mutex::new(config));
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let cfg = config.clone();
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = hold.clone();
        let task = tokio::spawn(async move {
            let mut delay = options.restart_min;
            loop {
                let started = tokio::time::Instant::now();
                tokio::select! {
                    exit = child.wait() => {
                        let how = match exit {
                            Ok(s) => s.to_string(),
                            Err(e) => e.to_string(),
                        };
                        let node = lock(&cfg).node_name.clone();
                        tracing::warn!(%node, exit = %how, "serf agent exited; restarting");
                        status_tx.send_modify(|s| {
                            s.pid = None;
                            s.last_exit = Some(how);
                        });
                    }
                    _ = &mut stop_rx => {
                        stop_child(&mut child).await;
                        status_tx.send_modify(|s| s.pid = None);
                        return;
                    }
                }
                if started.elapsed() >= options.healthy_after {
                    delay = options.restart_min;
                }
                // Restart, backing off while the agent keeps dying or cannot start.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut stop_rx => return,
                    }
                    delay = delay.saturating_mul(2).min(options.restart_max);
                    if held.load(std::sync::atomic::Ordering::Acquire) {
                        // Leaving: the agent exits on purpose; wait for `stop`.
                        continue;
                    }
                    let current = lock(&cfg).clone();
                    match current
                        .write_files()
                        .and_then(|()| spawn(&current, &options))
                    {
                        Ok(c) => {
                            child = c;
                            status_tx.send_modify(|s| {
                                s.pid = child.id();
                                s.starts += 1;
                            });
                            break;
                        }
                        Err(e) => tracing::error!(error = %e, "cannot restart serf agent"),
                    }
                }
            }
        });
        Ok(AgentSupervisor {
            config,
            hold,
            status,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Status updates (PID, starts, last exit).
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// The running agent's PID.
    pub fn pid(&self) -> Option<u32> {
        self.status.borrow().pid
    }

    /// Tags to put in the configuration of the next start (the running agent gets them
    /// over RPC).
    pub fn set_tags(&self, tags: BTreeMap<String, String>) {
        lock(&self.config).tags = tags;
    }

    /// Stops restarting the agent when it exits (before a graceful leave, after which the
    /// agent shuts itself down).
    pub fn hold(&self) {
        self.hold.store(true, std::sync::atomic::Ordering::Release);
    }

    /// A handle that updates the tags of the next start.
    pub fn tags_handle(&self) -> AgentTags {
        AgentTags(self.config.clone())
    }

    /// Stops the agent (SIGTERM, then SIGKILL) and the supervision. A graceful leave, if
    /// wanted, is the caller's RPC `leave` before this.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Updates the tags a supervised agent starts with.
#[derive(Clone)]
pub struct AgentTags(Arc<Mutex<AgentConfig>>);

impl AgentTags {
    pub fn set(&self, tags: BTreeMap<String, String>) {
        lock(&self.0).tags = tags;
    }
}

impl Drop for AgentSupervisor {
    fn drop(&mut self) {
        // Dropping without `stop` is a crash as far as the mesh can tell: the child is
        // killed (kill_on_drop) with the aborted task.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock(m: &Mutex<AgentConfig>) -> std::sync::MutexGuard<'_, AgentConfig> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn(config: &AgentConfig, options: &SupervisorOptions) -> Result<Child, AgentError> {
    let program = options.program.display().to_string();
    let mut argv: Vec<String> = options.launcher.clone();
    argv.push(program.clone());
    argv.push("agent".into());
    argv.push(format!("-config-file={}", config.config_file.display()));
    let (first, rest) = argv
        .split_first()
        .ok_or_else(|| AgentError::Config("empty command".into()))?;
    let mut cmd = Command::new(first);
    cmd.args(rest).stdin(Stdio::null()).kill_on_drop(true);
    match &options.log_file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AgentError::Write {
                    path: path.clone(),
                    source,
                })?;
            let f2 = f.try_clone().map_err(|source| AgentError::Write {
                path: path.clone(),
                source,
            })?;
            cmd.stdout(f).stderr(f2);
        }
        None => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    // SAFETY: prctl is async-signal-safe; it only sets the child's parent-death signal, so
    // the agent never outlives a gatewan that was killed outright.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| AgentError::Spawn {
        program: program.clone(),
        source,
    })?;
    let node = config.node_name.clone();
    if let Some(out) = child.stdout.take() {
        let node = node.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "serf", %node, "{line}");
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "serf", %node, "{line}");
            }
        });
    }
    tracing::info!(node = %config.node_name, pid = ?child.id(), "serf agent started");
    Ok(child)
}

async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> AgentConfig {
        AgentConfig {
            node_name: "gw1-sg1".into(),
            bind: "203.0.113.5:7946".parse().unwrap(),
            advertise: Some("198.51.100.5:7946".parse().unwrap()),
            rpc_addr: "127.0.0.1:7373".parse().unwrap(),
            rpc_auth: "secret".into(),
            keyring_file: dir.join("keyring.json"),
            initial_keys: vec!["EPaT8geoOsfWlZRQSz+RqU0veFxQNVXyCo7XT16AuE4=".into()],
            snapshot_file: dir.join("snapshot"),
            profile: Profile::Wan,
            retry_join: vec!["203.0.113.6:7946".into()],
            retry_interval: Duration::from_secs(5),
            tags: BTreeMap::from([("dc".to_string(), "sg1".to_string())]),
            log_level: "info".into(),
            config_file: dir.join("agent.json"),
        }
    }

    #[test]
    fn generated_config_has_what_the_agent_needs() {
        let dir = std::env::temp_dir().join(format!("gw-agentcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = config(&dir);
        c.write_files().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&c.config_file).unwrap()).unwrap();
        assert_eq!(v["node_name"], "gw1-sg1");
        assert_eq!(v["bind"], "203.0.113.5:7946");
        assert_eq!(v["advertise"], "198.51.100.5:7946");
        assert_eq!(v["profile"], "wan");
        assert_eq!(v["rpc_auth"], "secret");
        assert_eq!(v["retry_interval"], "5000ms");
        assert_eq!(v["tags"]["dc"], "sg1");
        assert!(v.get("encrypt_key").is_none(), "keyring file only");
        let keyring: Vec<String> =
            serde_json::from_slice(&std::fs::read(&c.keyring_file).unwrap()).unwrap();
        assert_eq!(keyring, c.initial_keys);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&c.config_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "config holds the RPC key: private");

        // The keyring is the agent's once written: a second write keeps it.
        std::fs::write(&c.keyring_file, b"[\"rotated\"]").unwrap();
        c.write_files().unwrap();
        assert_eq!(std::fs::read(&c.keyring_file).unwrap(), b"[\"rotated\"]");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_configs_are_refused() {
        let dir = std::env::temp_dir().join(format!("gw-agentbad-{}", std::process::id()));
        let mut c = config(&dir);
        c.initial_keys = vec!["c2hvcnQ=".into()];
        assert!(matches!(c.validate(), Err(AgentError::Config(_))));
        let mut c = config(&dir);
        c.rpc_auth.clear();
        assert!(matches!(c.validate(), Err(AgentError::Config(_))));
        let mut c = config(&dir);
        c.tags.insert("big".into(), "x".repeat(600));
        assert!(matches!(c.validate(), Err(AgentError::Tags(_))));
    }
}
