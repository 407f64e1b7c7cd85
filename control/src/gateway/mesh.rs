//! The gateway on the mesh, the I/O side: runs the supervised `serf agent` and the
//! [`MeshNode`], publishes our metadata and prefix list, feeds every new view to the sans-IO
//! [`MeshTunnels`], hands the owner the mesh tunnels to keep, and keeps the last view on disk
//! so the next start has tunnels before the mesh answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::GatewayConfig;
use super::mesh_tunnels::{Cache, MeshStatus, MeshTunnels};
use super::runtime::Command;
use crate::mesh::agent::{AgentConfig, SupervisorOptions};
use crate::mesh::node::{MeshConfig, MeshNode};
use crate::mesh::prefixes::PrefixList;
use crate::mesh::rpc::RpcOptions;
use crate::mesh::tags::{GatewayMeta, Role, TransitMeta};
use crate::mesh::view::MeshSnapshot;

/// The running mesh side of a gateway.
pub struct MeshHandle {
    node: Option<MeshNode>,
    status: watch::Receiver<MeshStatus>,
    task: JoinHandle<()>,
}

impl MeshHandle {
    pub fn status(&self) -> watch::Receiver<MeshStatus> {
        self.status.clone()
    }

    /// Leaves the mesh gracefully: the other gateways drop our tunnels at once.
    pub async fn leave(mut self) {
        self.task.abort();
        if let Some(node) = self.node.take() {
            if let Err(e) = node.leave().await {
                tracing::warn!(error = %e, "leaving the mesh");
            }
        }
    }
}

/// What we publish: our transits (one WireGuard key, each transit's public endpoint), the
/// echo port and the mesh id.
pub fn our_meta(config: &GatewayConfig) -> Option<GatewayMeta> {
    let mesh = config.mesh.as_ref()?;
    let key = super::config::public_key_of(&config.private_key);
    Some(GatewayMeta {
        role: Role::Gateway,
        datacenter: config.datacenter.clone(),
        transits: config
            .transits
            .iter()
            .map(|t| TransitMeta {
                name: t.name.clone(),
                public_key: key.0,
                endpoints: vec![t.public_endpoint],
            })
            .collect(),
        echo_port: Some(mesh.echo_port),
        prefix_list: None,
        id: Some(mesh.id),
        api: config.api.as_ref().map(|a| a.advertise),
        lead: None,
    })
}

/// Our datacenter's prefixes as we publish them (the fabric's local routes).
fn our_prefixes(config: &GatewayConfig) -> PrefixList {
    PrefixList::new(
        config
            .fabric
            .iter()
            .flat_map(|f| f.local_routes.iter().map(|(p, _)| *p)),
    )
}

fn read_cache(path: &Path) -> Option<Cache> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(cache) => Some(cache),
        Err(e) => {
            // A damaged cache only costs the head start: the mesh view replaces it.
            tracing::warn!(path = %path.display(), error = %e, "mesh cache ignored");
            None
        }
    }
}

fn write_cache(path: &Path, cache: &Cache) {
    let tmp = path.with_extension("tmp");
    let result = serde_json::to_vec(cache)
        .map_err(std::io::Error::other)
        .and_then(|body| std::fs::write(&tmp, body))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "mesh cache not written");
    }
}

/// The live controllers of a view, for the order book.
pub fn controller_view(snapshot: &MeshSnapshot, clock: u64) -> super::orders::ControllerView {
    super::orders::ControllerView {
        known: true,
        clock,
        live: snapshot
            .controllers()
            .filter(|c| c.status == crate::mesh::view::GatewayStatus::Alive)
            .map(|c| c.name.clone())
            .collect(),
    }
}

/// The live bgpctls of `datacenter` in a view (who may send us local routes).
pub fn bgpctls_of(snapshot: &MeshSnapshot, datacenter: &str) -> std::collections::BTreeSet<String> {
    snapshot
        .bgpctls()
        .filter(|b| b.status == crate::mesh::view::GatewayStatus::Alive)
        .filter(|b| b.meta.as_ref().is_some_and(|m| m.datacenter == datacenter))
        .map(|b| b.name.clone())
        .collect()
}

/// Starts the agent and the node, and the task that turns views into tunnels. `prefixes`
/// brings the local prefixes each time bgpctl's routes change them.
pub fn start(
    config: &GatewayConfig,
    commands: mpsc::UnboundedSender<Command>,
    prefixes: watch::Receiver<Option<Vec<ipnet::IpNet>>>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<MeshHandle> {
    let mesh = config.mesh.as_ref().context("no mesh: section")?;
    let meta = our_meta(config).context("no mesh: section")?;
    std::fs::create_dir_all(&mesh.state_dir)
        .with_context(|| format!("creating {}", mesh.state_dir.display()))?;
    let mut tunnels = MeshTunnels::new(config, mesh.id, mesh.failed_grace, mesh.max_prefixes);
    let cache_file = mesh.cache_file();
    if let Some(cache) = read_cache(&cache_file) {
        tracing::info!(
            members = cache.members.len(),
            "mesh view restored from the cache"
        );
        tunnels.restore(cache);
    }
    // Tunnels to cached peers now, before the agent answers.
    let (orders, status) = tunnels.plan(Instant::now());
    if !orders.is_empty() {
        let _ = commands.send(Command::MeshTunnels(orders));
    }
    let mut join = mesh.seeds.clone();
    // With every seed down, the cached peers are members to join too.
    join.extend(tunnels.cached_addresses());
    let agent = AgentConfig {
        node_name: config.name.clone(),
        bind: mesh.bind,
        advertise: mesh.advertise,
        rpc_addr: mesh.rpc_addr,
        rpc_auth: mesh.rpc_auth.clone(),
        keyring_file: mesh.keyring_file(),
        initial_keys: mesh.keys.clone(),
        snapshot_file: mesh.state_dir.join("serf.snapshot"),
        profile: mesh.profile,
        retry_join: join.clone(),
        retry_interval: std::time::Duration::from_secs(2),
        tags: Default::default(),
        log_level: "warn".into(),
        config_file: mesh.state_dir.join("serf.json"),
    };
    let options = SupervisorOptions {
        program: mesh.serf.clone(),
        launcher: mesh.launcher.clone(),
        log_file: Some(mesh.state_dir.join("serf.log")),
        ..SupervisorOptions::default()
    };
    let mut node_cfg = MeshConfig::new(config.name.clone(), meta, our_prefixes(config));
    node_cfg.rpc = RpcOptions {
        auth_key: Some(mesh.rpc_auth.clone()),
        ..RpcOptions::default()
    };
    node_cfg.join = join;
    let node = MeshNode::start(node_cfg, mesh.rpc_addr, Some((agent, options)))
        .context("starting the mesh agent")?;
    tracing::info!(node = %config.name, id = mesh.id, bind = %mesh.bind, "mesh agent started");
    let (status_tx, status_rx) = watch::channel(status);
    let task = tokio::spawn(run(
        tunnels,
        MeshIo {
            rpc: node.rpc().clone(),
            publisher: node.prefix_publisher(),
            datacenter: config.datacenter.clone(),
            commands,
            status: status_tx,
            cache_file,
        },
        node.view(),
        prefixes,
        stopped,
    ));
    Ok(MeshHandle {
        node: Some(node),
        status: status_rx,
        task,
    })
}

/// What the mesh task talks to.
struct MeshIo {
    rpc: crate::mesh::rpc::RpcClient,
    publisher: crate::mesh::node::PrefixPublisher,
    datacenter: String,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Sender<MeshStatus>,
    cache_file: std::path::PathBuf,
}

async fn run(
    mut tunnels: MeshTunnels,
    io: MeshIo,
    mut view: watch::Receiver<Arc<MeshSnapshot>>,
    mut prefixes: watch::Receiver<Option<Vec<ipnet::IpNet>>>,
    mut stopped: watch::Receiver<bool>,
) {
    let MeshIo {
        rpc,
        publisher,
        datacenter,
        commands,
        status,
        cache_file,
    } = io;
    let mut last_cache = None;
    // `changed()` below marks the value seen: remember that it came.
    let mut new_prefixes = false;
    loop {
        if std::mem::take(&mut new_prefixes) || prefixes.has_changed().unwrap_or(false) {
            let latest = prefixes.borrow_and_update().clone();
            if let Some(list) = latest {
                // Ours from bgpctl now: no other member may claim them, and the mesh learns
                // them as our datacenter's.
                tunnels.set_own_prefixes(list.clone());
                if let Err(e) = publisher.set_prefixes(PrefixList::new(list)).await {
                    tracing::warn!(error = %e, "local prefixes not published");
                }
            }
        }
        let now = Instant::now();
        tunnels.handle_timeout(now);
        let snapshot = Arc::clone(&view.borrow_and_update());
        tunnels.handle_view(&snapshot, now);
        let (orders, st) = tunnels.plan(now);
        if commands.send(Command::MeshTunnels(orders)).is_err() {
            return;
        }
        if snapshot.agent_connected {
            if let Ok(clock) = rpc.member_clock().await {
                let _ = commands.send(Command::Controllers(controller_view(&snapshot, clock)));
            }
            let _ = commands.send(Command::Bgpctls(bgpctls_of(&snapshot, &datacenter)));
        }
        let _ = status.send(st);
        let cache = tunnels.cache();
        let body = serde_json::to_string(&cache).ok();
        if body != last_cache && snapshot.agent_connected {
            write_cache(&cache_file, &cache);
            last_cache = body;
        }
        let wake = tunnels.poll_timeout();
        tokio::select! {
            _ = stopped.changed() => return,
            r = view.changed() => if r.is_err() { return },
            r = prefixes.changed() => {
                if r.is_err() { return }
                new_prefixes = true;
            }
            _ = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.max(now).into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
