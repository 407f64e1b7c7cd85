//! A gateway's presence in the mesh: the I/O adapter that drives the sans-IO view from its
//! Serf agent (supervised or attached).
//!
//! One task owns the state. Each session with the agent starts the same way, whether it is
//! the first, one after the agent was restarted, or one after the RPC connection dropped:
//! connect, subscribe to member events, list-chunk events and pull queries, set our tags,
//! join seeds if alone, reconcile the whole view from `members`, then publish our list.
//! Between sessions the view marks alive members suspect (nothing is observed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use super::agent::{AgentConfig, AgentError, AgentSupervisor, AgentTags, SupervisorOptions};
use super::prefixes::{
    encode, encode_delta, next_version, parse_pull_request, pull_request, AppliedList, EncodeError,
    EncodedList, PrefixList, SyncConfig, EVENT_NAME, MAX_CHUNK_LEN,
};
use super::rpc::{Connect, Event, QueryParams, QueryRecord, RpcClient, RpcError, RpcOptions};
use super::tags::{GatewayMeta, ListTag, TagError};
use super::view::{MeshChange, MeshSnapshot, MeshView};

/// The event filter of a node's stream.
const STREAM_FILTER: &str =
    "member-join,member-leave,member-failed,member-update,member-reap,user:gw-pl,query:gw-pl";
/// Names per pull query (the query itself must fit Serf's 1 KB query limit).
const PULL_NODES_PER_QUERY: usize = 32;

#[derive(Debug, Error)]
pub enum MeshError {
    #[error(transparent)]
    Tags(#[from] TagError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the mesh node has stopped")]
    Stopped,
}

/// How a node behaves.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Our Serf node name.
    pub node_name: String,
    /// What we publish (its `prefix_list` is filled in by the node).
    pub meta: GatewayMeta,
    pub prefixes: PrefixList,
    pub rpc: RpcOptions,
    /// Members to join when our agent knows no one else (attached agents; supervised
    /// agents also get them as `retry_join`).
    pub join: Vec<String>,
    /// How often to check for lists to repair.
    pub tick: Duration,
    /// How often to re-read `members` even without a gap: member events can be dropped
    /// by the agent when its stream buffer overflows.
    pub reconcile_interval: Duration,
    pub repair_after: Duration,
    pub repair_deadline: Duration,
    pub pull_interval: Duration,
    pub query_timeout: Duration,
    pub chunk_len: usize,
    /// Pull queries in flight at once.
    pub max_pulls: usize,
}

impl MeshConfig {
    pub fn new(node_name: impl Into<String>, meta: GatewayMeta, prefixes: PrefixList) -> Self {
        MeshConfig {
            node_name: node_name.into(),
            meta,
            prefixes,
            rpc: RpcOptions::default(),
            join: Vec::new(),
            tick: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(30),
            repair_after: Duration::from_secs(2),
            repair_deadline: Duration::from_secs(10),
            pull_interval: Duration::from_secs(10),
            query_timeout: Duration::from_secs(5),
            chunk_len: MAX_CHUNK_LEN,
            max_pulls: 8,
        }
    }
}

enum Command {
    SetPrefixes(PrefixList, oneshot::Sender<Result<ListTag, MeshError>>),
    SetMeta(GatewayMeta, oneshot::Sender<Result<(), MeshError>>),
    Leave(oneshot::Sender<Result<(), MeshError>>),
}

/// A running mesh node. Dropping it without [`MeshNode::leave`] is a crash as far as the
/// mesh can tell: a supervised agent is killed and will be seen as failed.
pub struct MeshNode {
    name: String,
    cmd: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<MeshSnapshot>>,
    changes: broadcast::Sender<MeshChange>,
    rpc: RpcClient,
    supervisor: Option<AgentSupervisor>,
    task: Option<JoinHandle<()>>,
}

impl MeshNode {
    /// Starts the node. With `agent`, it writes the agent's configuration (tags included)
    /// and supervises it; without, it attaches to the agent `connector` reaches.
    pub fn start(
        cfg: MeshConfig,
        connector: impl Connect,
        agent: Option<(AgentConfig, SupervisorOptions)>,
    ) -> Result<MeshNode, MeshError> {
        let version = next_version(None, unix_ms());
        let encoded = encode(&cfg.prefixes, &cfg.node_name, version, cfg.chunk_len)?;
        let tags = with_list(&cfg.meta, &encoded).to_tags()?;
        let supervisor = match agent {
            Some((mut agent_cfg, options)) => {
                agent_cfg.tags = tags;
                Some(AgentSupervisor::start(agent_cfg, options)?)
            }
            None => None,
        };
        let rpc = RpcClient::new(connector, cfg.rpc.clone());
        let mut sync = SyncConfig::new(cfg.node_name.clone());
        sync.repair_after = cfg.repair_after;
        sync.repair_deadline = cfg.repair_deadline;
        sync.pull_interval = cfg.pull_interval;
        let view = MeshView::new(sync);
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(view.snapshot()));
        let (changes, _) = broadcast::channel(4096);
        let (cmd, cmd_rx) = mpsc::channel(16);
        let (pull_tx, pull_rx) = mpsc::channel(4096);
        let state = State {
            local_list: applied(&cfg.node_name, &encoded, &cfg.prefixes),
            pulls: Arc::new(Semaphore::new(cfg.max_pulls.max(1))),
            cfg: cfg.clone(),
            encoded,
            view,
            rpc: rpc.clone(),
            agent_tags: supervisor.as_ref().map(AgentSupervisor::tags_handle),
            snapshot_tx,
            changes: changes.clone(),
            pull_tx,
            announced: false,
            delta: None,
        };
        let task = tokio::spawn(state.run(cmd_rx, pull_rx));
        Ok(MeshNode {
            name: cfg.node_name,
            cmd,
            snapshot,
            changes,
            rpc,
            supervisor,
            task: Some(task),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current view; `changed()` wakes on every update.
    pub fn view(&self) -> watch::Receiver<Arc<MeshSnapshot>> {
        self.snapshot.clone()
    }

    /// Every change, in order (a slow receiver may lag; then re-read the view).
    pub fn subscribe(&self) -> broadcast::Receiver<MeshChange> {
        self.changes.subscribe()
    }

    /// The RPC client of our agent (for operators' tools and tests).
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// The supervised agent's PID.
    pub fn agent_pid(&self) -> Option<u32> {
        self.supervisor.as_ref().and_then(AgentSupervisor::pid)
    }

    /// How often the supervised agent was started.
    pub fn agent_starts(&self) -> u64 {
        self.supervisor
            .as_ref()
            .map(|s| s.status().borrow().starts)
            .unwrap_or(0)
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, MeshError>>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| MeshError::Stopped)?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Publishes a new prefix list (a new version); returns what our tags now announce.
    /// If the agent is unreachable, it goes out when it is back.
    pub async fn set_prefixes(&self, list: PrefixList) -> Result<ListTag, MeshError> {
        self.command(|tx| Command::SetPrefixes(list, tx)).await
    }

    /// A handle that publishes prefix lists from another task.
    pub fn prefix_publisher(&self) -> PrefixPublisher {
        PrefixPublisher {
            cmd: self.cmd.clone(),
        }
    }

    /// Publishes new metadata (checked against the tag budget first).
    pub async fn set_meta(&self, meta: GatewayMeta) -> Result<(), MeshError> {
        self.command(|tx| Command::SetMeta(meta, tx)).await
    }

    /// Leaves the mesh gracefully (seen as `left`) and stops the agent.
    pub async fn leave(mut self) -> Result<(), MeshError> {
        if let Some(s) = &self.supervisor {
            s.hold();
        }
        let result = self.command(Command::Leave).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(s) = self.supervisor.take() {
            s.stop().await;
        }
        result
    }
}

/// Publishes our prefix list while the node runs (see [`MeshNode::prefix_publisher`]).
#[derive(Clone, Debug)]
pub struct PrefixPublisher {
    cmd: mpsc::Sender<Command>,
}

impl PrefixPublisher {
    /// As [`MeshNode::set_prefixes`].
    pub async fn set_prefixes(&self, list: PrefixList) -> Result<ListTag, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::SetPrefixes(list, tx))
            .await
            .map_err(|_| MeshError::Stopped)?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn with_list(meta: &GatewayMeta, encoded: &EncodedList) -> GatewayMeta {
    let mut m = meta.clone();
    m.prefix_list = Some(encoded.tag());
    m
}

fn applied(origin: &str, encoded: &EncodedList, list: &PrefixList) -> AppliedList {
    AppliedList {
        origin: origin.to_owned(),
        version: encoded.version,
        digest: encoded.digest,
        prefixes: Arc::new(list.clone()),
    }
}

struct State {
    cfg: MeshConfig,
    encoded: EncodedList,
    local_list: AppliedList,
    view: MeshView,
    rpc: RpcClient,
    agent_tags: Option<AgentTags>,
    snapshot_tx: watch::Sender<Arc<MeshSnapshot>>,
    changes: broadcast::Sender<MeshChange>,
    pull_tx: mpsc::Sender<(String, Vec<u8>)>,
    pulls: Arc<Semaphore>,
    /// Our current version was announced to the mesh in this session, so members likely
    /// hold it and a change can travel as a delta from it.
    announced: bool,
    /// The delta message for the last list change, until sent.
    delta: Option<Vec<u8>>,
}

/// How a session with the agent ended.
enum SessionEnd {
    Lost(String),
    Left,
}

impl State {
    fn emit(&mut self, changes: Vec<MeshChange>) {
        if changes.is_empty() {
            return;
        }
        for c in changes {
            tracing::debug!(node = %self.cfg.node_name, change = ?c, "mesh change");
            let _ = self.changes.send(c);
        }
        self.snapshot_tx
            .send_replace(Arc::new(self.view.snapshot()));
    }

    fn tags(&self) -> Result<BTreeMap<String, String>, TagError> {
        with_list(&self.cfg.meta, &self.encoded).to_tags()
    }

    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut pull_rx: mpsc::Receiver<(String, Vec<u8>)>,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&mut cmd_rx, &mut pull_rx).await {
                SessionEnd::Left => return,
                SessionEnd::Lost(reason) => {
                    tracing::info!(node = %self.cfg.node_name, %reason, "serf agent session ended");
                    let changes = self.view.agent_lost();
                    self.emit(changes);
                }
            }
            // Wait before dialling again, still serving commands.
            let wake = tokio::time::sleep(backoff);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = &mut wake => break,
                    cmd = cmd_rx.recv() => match cmd {
                        None => return,
                        Some(Command::Leave(reply)) => {
                            let _ = reply.send(Err(MeshError::Rpc(RpcError::ConnectionLost(
                                "agent unreachable".into(),
                            ))));
                            return;
                        }
                        Some(cmd) => { self.offline_command(cmd); }
                    },
                }
            }
            backoff = backoff.saturating_mul(2).min(Duration::from_secs(2));
            if self.rpc.reconnect().await.is_ok() {
                backoff = Duration::from_millis(100);
            }
        }
    }

    /// Applies a command while the agent is unreachable; it is published next session.
    fn offline_command(&mut self, cmd: Command) {
        match cmd {
            Command::SetPrefixes(list, reply) => {
                self.announced = false;
                let _ = reply.send(self.update_list(list));
            }
            Command::SetMeta(meta, reply) => {
                let _ = reply.send(self.update_meta(meta));
            }
            Command::Leave(reply) => {
                let _ = reply.send(Err(MeshError::Stopped));
            }
        }
    }

    fn update_list(&mut self, list: PrefixList) -> Result<ListTag, MeshError> {
        let version = next_version(Some(self.encoded.version), unix_ms());
        let encoded = encode(&list, &self.cfg.node_name, version, self.cfg.chunk_len)?;
        let tags = with_list(&self.cfg.meta, &encoded).to_tags()?;
        // A small change goes out as one delta from the version everyone should hold; a
        // large one is pushed whole; offline, it is only announced (next session's tags)
        // and pulled by everyone.
        self.delta = if !self.announced {
            None
        } else {
            encode_delta(
                &self.cfg.prefixes,
                &list,
                &self.cfg.node_name,
                self.encoded.version,
                version,
                &encoded.digest,
            )
        };
        self.local_list = applied(&self.cfg.node_name, &encoded, &list);
        self.encoded = encoded;
        self.cfg.prefixes = list;
        if let Some(t) = &self.agent_tags {
            t.set(tags);
        }
        let changes = self.view.set_local_prefixes(self.local_list.clone());
        self.emit(changes);
        Ok(self.encoded.tag())
    }

    fn update_meta(&mut self, meta: GatewayMeta) -> Result<(), MeshError> {
        let tags = with_list(&meta, &self.encoded).to_tags()?;
        self.cfg.meta = meta;
        if let Some(t) = &self.agent_tags {
            t.set(tags);
        }
        Ok(())
    }

    async fn push_tags(&mut self) -> Result<(), MeshError> {
        let tags = self.tags()?;
        let delete: Vec<String> = self
            .view
            .get(&self.cfg.node_name)
            .map(|e| {
                e.tags
                    .keys()
                    .filter(|k| !tags.contains_key(*k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        self.rpc.set_tags(&tags, &delete).await?;
        Ok(())
    }

    async fn publish_chunks(&self) -> Result<(), RpcError> {
        for chunk in &self.encoded.chunks {
            self.rpc.user_event(EVENT_NAME, chunk, false).await?;
        }
        Ok(())
    }

    async fn reconcile(&mut self) -> Result<(), RpcError> {
        let members = self.rpc.members().await?;
        let mut changes = self.view.reconcile(&members, Instant::now());
        changes.extend(self.view.set_local_prefixes(self.local_list.clone()));
        self.emit(changes);
        Ok(())
    }

    async fn session(
        &mut self,
        cmd_rx: &mut mpsc::Receiver<Command>,
        pull_rx: &mut mpsc::Receiver<(String, Vec<u8>)>,
    ) -> SessionEnd {
        let mut events = match self.rpc.stream(STREAM_FILTER).await {
            Ok(s) => s,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        if let Err(e) = self.start_session().await {
            return SessionEnd::Lost(e.to_string());
        }
        // Zero periods would make tokio panic: configuration is input too.
        let floor = Duration::from_millis(10);
        let mut tick = tokio::time::interval(self.cfg.tick.max(floor));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval_at(
            tokio::time::Instant::now() + self.cfg.reconcile_interval.max(floor),
            self.cfg.reconcile_interval.max(floor),
        );
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(e) => return SessionEnd::Lost(e.to_string()),
                },
                cmd = cmd_rx.recv() => {
                    let Some(cmd) = cmd else { return SessionEnd::Left };
                    if let Some(end) = self.on_command(cmd).await {
                        return end;
                    }
                }
                Some((from, payload)) = pull_rx.recv() => {
                    let (_, changes) = self.view.chunk(&payload, Some(&from), Instant::now());
                    self.emit(changes);
                }
                _ = tick.tick() => {
                    self.start_pulls();
                    // Counters move without changes (rejected payloads): refresh them.
                    if self.snapshot_tx.borrow().counters.list != *self.view.counters() {
                        self.snapshot_tx.send_replace(Arc::new(self.view.snapshot()));
                    }
                }
                _ = reconcile.tick() => {
                    if let Err(e) = self.reconcile().await {
                        return SessionEnd::Lost(e.to_string());
                    }
                }
            }
        }
    }

    async fn start_session(&mut self) -> Result<(), MeshError> {
        let members = self.rpc.members().await?;
        if members.len() <= 1 && !self.cfg.join.is_empty() {
            match self.rpc.join(&self.cfg.join, false).await {
                Ok(n) => tracing::info!(node = %self.cfg.node_name, joined = n, "joined the mesh"),
                Err(e) => tracing::warn!(node = %self.cfg.node_name, error = %e, "join failed"),
            }
        }
        self.reconcile().await?;
        self.push_tags().await?;
        self.reconcile().await?;
        // Our list is not pushed here: the tags announce it and every member that lacks it
        // pulls it (a few small queries and direct answers cost far less gossip bandwidth
        // than pushing every chunk to everyone, which matters when many gateways start or
        // rejoin at once).
        self.announced = true;
        Ok(())
    }

    async fn on_command(&mut self, cmd: Command) -> Option<SessionEnd> {
        match cmd {
            Command::SetPrefixes(list, reply) => {
                let result = match self.update_list(list) {
                    Ok(tag) => {
                        // Chunks first: receivers may apply them before our tags change.
                        let sent = match self.delta.take() {
                            Some(delta) => self.rpc.user_event(EVENT_NAME, &delta, false).await,
                            None => self.publish_chunks().await,
                        };
                        let tagged = self.push_tags().await;
                        match (sent, tagged) {
                            (Ok(()), Ok(())) => Ok(tag),
                            (Err(e), _) => Err(MeshError::Rpc(e)),
                            (_, Err(e)) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                let lost = matches!(&result, Err(MeshError::Rpc(e)) if e.is_connection());
                let _ = reply.send(result);
                lost.then(|| SessionEnd::Lost("publishing failed".into()))
            }
            Command::SetMeta(meta, reply) => {
                let result = match self.update_meta(meta) {
                    Ok(()) => self.push_tags().await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
                None
            }
            Command::Leave(reply) => {
                let _ = reply.send(self.rpc.leave().await.map_err(MeshError::Rpc));
                Some(SessionEnd::Left)
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Member { kind, members } => {
                let changes = self.view.member_event(kind, &members, now);
                self.emit(changes);
            }
            Event::User { name, payload, .. } if name == EVENT_NAME => {
                let (result, changes) = self.view.chunk(&payload, None, now);
                if let Err(reason) = result {
                    tracing::trace!(%reason, "list chunk not used");
                }
                self.emit(changes);
            }
            Event::Query {
                id, name, payload, ..
            } if name == EVENT_NAME => {
                let chunk = parse_pull_request(&payload)
                    .and_then(|i| self.encoded.chunks.get(usize::from(i)))
                    .cloned();
                if let Some(chunk) = chunk {
                    let rpc = self.rpc.clone();
                    tokio::spawn(async move {
                        if let Err(e) = rpc.respond(id, &chunk).await {
                            tracing::debug!(error = %e, "pull answer not sent");
                        }
                    });
                }
            }
            _ => {}
        }
    }

    fn start_pulls(&mut self) {
        for pull in self.view.poll(Instant::now()) {
            for nodes in pull.nodes.chunks(PULL_NODES_PER_QUERY) {
                let params = QueryParams {
                    name: EVENT_NAME.into(),
                    payload: pull_request(pull.index).to_vec(),
                    filter_nodes: nodes.to_vec(),
                    timeout: Some(self.cfg.query_timeout),
                    ..QueryParams::default()
                };
                let rpc = self.rpc.clone();
                let tx = self.pull_tx.clone();
                let permits = self.pulls.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    let Ok(mut answers) = rpc.query(&params).await else {
                        return;
                    };
                    // Done once every asked node answered; dropping the stream lets
                    // the permit go before the query's timeout.
                    let mut waiting: Vec<String> = params.filter_nodes.clone();
                    while let Ok(Some(rec)) = answers.next().await {
                        if let QueryRecord::Response { from, payload } = rec {
                            waiting.retain(|n| *n != from);
                            let _ = tx.send((from, payload)).await;
                            if waiting.is_empty() {
                                break;
                            }
                        }
                    }
                });
            }
        }
    }
}
