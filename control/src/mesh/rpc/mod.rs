//! A Serf RPC client on tokio.
//!
//! One TCP connection per client, requests pipelined by sequence number: callers write whole
//! requests under a short write lock and wait on their own oneshot; a single reader task
//! frames the agent's msgpack stream ([`codec::Framer`]) and hands each response, stream
//! record or query record to the waiter registered under its `Seq`. When the connection
//! drops, every waiter gets [`RpcError::ConnectionLost`], every stream ends with it, and the
//! next call dials again (handshake and auth included); [`RpcClient::generation`] tells
//! callers that streams must be re-subscribed.

pub mod codec;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use codec::{
    AuthRequest, EventRequest, Framer, HandshakeRequest, JoinRequest, JoinResponse, KeyRequest,
    MembersResponse, MonitorRequest, QueryRequest, RespondRequest, ResponseHeader, StopRequest,
    StreamRequest, TagsRequest, WireEventRecord, WireKeyResponse, WireLogRecord, WireQueryRecord,
};
pub use codec::{
    Event, KeyResponse, Member, MemberEventKind, MemberFilter, MemberStatus, QueryRecord,
};

/// How many times a keyring command is sent when members miss its deadline (see `key_op`).
const KEY_OP_ATTEMPTS: u32 = 3;

/// Everything that can go wrong talking to an agent. Agent-side errors keep the agent's
/// message; the well-known ones get their own variant.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RpcError {
    #[error("cannot connect to the Serf agent: {0}")]
    Connect(String),
    #[error("connection to the Serf agent lost: {0}")]
    ConnectionLost(String),
    #[error("Serf agent does not speak IPC version {}", codec::IPC_VERSION)]
    UnsupportedVersion,
    #[error("handshake already performed")]
    DuplicateHandshake,
    #[error("Serf agent requires the handshake first")]
    HandshakeRequired,
    #[error("Serf agent requires RPC authentication (rpc_auth)")]
    AuthRequired,
    #[error("Serf agent rejected the RPC auth key")]
    AuthFailed,
    #[error("Serf agent does not support command {command:?}")]
    UnsupportedCommand { command: &'static str },
    #[error("invalid event filter")]
    InvalidFilter,
    #[error("a stream with this sequence number exists")]
    StreamExists,
    #[error("a monitor already exists on this connection")]
    MonitorExists,
    #[error("no pending query with this id (expired or already answered)")]
    UnknownQuery,
    #[error("keyring operation failed: {message} ({} of {} nodes answered, {} errors)", response.num_resp, response.num_nodes, response.num_err)]
    Keyring {
        message: String,
        response: KeyResponse,
    },
    #[error("Serf agent: {command}: {message}")]
    Agent {
        command: &'static str,
        message: String,
    },
    #[error("malformed {what} from the Serf agent: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("cannot encode {command} request: {detail}")]
    Encode {
        command: &'static str,
        detail: String,
    },
    #[error("no answer to {command} within {timeout:?}")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
}

impl RpcError {
    /// Whether the error is about the connection (retrying on a new one may succeed).
    pub fn is_connection(&self) -> bool {
        matches!(self, RpcError::Connect(_) | RpcError::ConnectionLost(_))
    }

    fn from_agent(command: &'static str, message: String) -> Self {
        match message.as_str() {
            codec::AUTH_REQUIRED => RpcError::AuthRequired,
            codec::INVALID_AUTH_TOKEN => RpcError::AuthFailed,
            codec::HANDSHAKE_REQUIRED => RpcError::HandshakeRequired,
            codec::UNSUPPORTED_COMMAND => RpcError::UnsupportedCommand { command },
            codec::UNSUPPORTED_IPC_VERSION => RpcError::UnsupportedVersion,
            codec::DUPLICATE_HANDSHAKE => RpcError::DuplicateHandshake,
            codec::MONITOR_EXISTS => RpcError::MonitorExists,
            codec::INVALID_FILTER => RpcError::InvalidFilter,
            codec::STREAM_EXISTS => RpcError::StreamExists,
            codec::INVALID_QUERY_ID => RpcError::UnknownQuery,
            _ => RpcError::Agent { command, message },
        }
    }
}

/// How to reach the agent. A plain socket address for the usual case; anything else (an
/// agent in another network namespace, say) implements this.
pub trait Connect: Send + Sync + 'static {
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + '_>>;
}

impl Connect for SocketAddr {
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + '_>> {
        Box::pin(TcpStream::connect(*self))
    }
}

/// Client options.
#[derive(Clone, Debug)]
pub struct RpcOptions {
    /// The agent's `rpc_auth` key, if it has one.
    pub auth_key: Option<String>,
    /// How long a request may wait for its answer. Keyring operations and joins run
    /// cluster-wide and take longest.
    pub timeout: Duration,
    /// Records buffered per stream before further records are dropped (and counted).
    pub stream_buffer: usize,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            auth_key: None,
            timeout: Duration::from_secs(30),
            stream_buffer: 8192,
        }
    }
}

/// Parameters of a query.
#[derive(Clone, Debug, Default)]
pub struct QueryParams {
    pub name: String,
    pub payload: Vec<u8>,
    /// Only these nodes answer; empty means all.
    pub filter_nodes: Vec<String>,
    /// Only nodes whose tags match these regular expressions answer.
    pub filter_tags: BTreeMap<String, String>,
    pub request_ack: bool,
    /// Extra nodes that relay each response (Serf's reliability knob; 0 = direct only).
    pub relay_factor: u8,
    /// `None` lets the agent derive it from the cluster size.
    pub timeout: Option<Duration>,
}

/// A Serf RPC client. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Box<dyn Connect>,
    options: RpcOptions,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client that dials on first use (and again after every loss).
    pub fn new(connector: impl Connect, options: RpcOptions) -> RpcClient {
        RpcClient {
            inner: Arc::new(Inner {
                connector: Box::new(connector),
                options,
                conn: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Connects (handshake and auth included) and returns the client.
    pub async fn connect(
        connector: impl Connect,
        options: RpcOptions,
    ) -> Result<RpcClient, RpcError> {
        let client = RpcClient::new(connector, options);
        client.connection().await?;
        Ok(client)
    }

    /// Counts connections made so far; a change means streams must be re-subscribed.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Resolves when the current connection (if any) is lost, with the reason.
    pub async fn disconnected(&self) -> String {
        let conn = self.inner.conn.lock().await.clone();
        match conn {
            Some(conn) => {
                let mut rx = conn.closed.clone();
                loop {
                    if let Some(reason) = rx.borrow_and_update().clone() {
                        return reason;
                    }
                    if rx.changed().await.is_err() {
                        return "connection dropped".into();
                    }
                }
            }
            None => "not connected".into(),
        }
    }

    /// Ensures a live connection, dialling again if the last one was lost.
    pub async fn reconnect(&self) -> Result<(), RpcError> {
        self.connection().await.map(drop)
    }

    /// Drops the connection; the next call dials again.
    pub async fn close(&self) {
        if let Some(conn) = self.inner.conn.lock().await.take() {
            conn.shutdown("closed by client");
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, RpcError> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
        }
        let stream = self
            .inner
            .connector
            .connect()
            .await
            .map_err(|e| RpcError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let conn = Conn::start(stream, self.inner.options.stream_buffer);
        let timeout = self.inner.options.timeout;
        conn.call(
            "handshake",
            Some(&HandshakeRequest {
                version: codec::IPC_VERSION,
            }),
            false,
            timeout,
        )
        .await?
        .into_result("handshake")?;
        if let Some(key) = &self.inner.options.auth_key {
            conn.call("auth", Some(&AuthRequest { auth_key: key }), false, timeout)
                .await?
                .into_result("auth")?;
        }
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn call<B: Serialize>(
        &self,
        command: &'static str,
        body: Option<&B>,
        expects_body: bool,
    ) -> Result<Reply, RpcError> {
        let conn = self.connection().await?;
        conn.call(command, body, expects_body, self.inner.options.timeout)
            .await
    }

    async fn call_decode<B: Serialize, R: DeserializeOwned>(
        &self,
        command: &'static str,
        body: Option<&B>,
    ) -> Result<R, RpcError> {
        let reply = self.call(command, body, true).await?;
        let raw = reply.into_body(command)?;
        decode(command, &raw)
    }

    /// All known members, including failed and left ones.
    pub async fn members(&self) -> Result<Vec<Member>, RpcError> {
        let resp: MembersResponse = self.call_decode("members", None::<&()>).await?;
        Ok(resp
            .members
            .unwrap_or_default()
            .into_iter()
            .map(Member::from)
            .collect())
    }

    /// Members matching regular-expression filters on tags, status and name.
    pub async fn members_filtered(&self, filter: &MemberFilter) -> Result<Vec<Member>, RpcError> {
        let resp: MembersResponse = self.call_decode("members-filtered", Some(filter)).await?;
        Ok(resp
            .members
            .unwrap_or_default()
            .into_iter()
            .map(Member::from)
            .collect())
    }

    /// Joins the agent to others (`host:port`); returns how many were contacted.
    pub async fn join(&self, addrs: &[String], replay: bool) -> Result<u32, RpcError> {
        let reply = self
            .call(
                "join",
                Some(&JoinRequest {
                    existing: addrs,
                    replay,
                }),
                true,
            )
            .await?;
        let raw = reply.into_body("join")?;
        let resp: JoinResponse = decode("join", &raw)?;
        Ok(u32::try_from(resp.num).unwrap_or(0))
    }

    /// Leaves the cluster gracefully; the agent shuts down afterwards.
    pub async fn leave(&self) -> Result<(), RpcError> {
        self.call("leave", None::<&()>, false)
            .await?
            .into_result("leave")
    }

    /// Sets (and deletes) this agent's tags. The agent rejects tags whose encoding exceeds
    /// 512 bytes; gatewan checks before sending (see `mesh::tags`).
    pub async fn set_tags(
        &self,
        tags: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), RpcError> {
        self.call(
            "tags",
            Some(&TagsRequest {
                tags,
                delete_tags: delete,
            }),
            false,
        )
        .await?
        .into_result("tags")
    }

    /// Broadcasts a user event. The agent refuses name + payload above its
    /// `user_event_size_limit` (512 bytes by default).
    pub async fn user_event(
        &self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<(), RpcError> {
        self.call(
            "event",
            Some(&EventRequest {
                name,
                payload,
                coalesce,
            }),
            false,
        )
        .await?
        .into_result("event")
    }

    /// Subscribes to events. `filter` is Serf's syntax, e.g.
    /// `member-join,member-failed,user:gw-pl,query:gw-pl` or `*`.
    pub async fn stream(&self, filter: &str) -> Result<EventStream, RpcError> {
        let inner = self
            .open_stream("stream", &StreamRequest { kind: filter })
            .await?;
        Ok(EventStream { inner })
    }

    /// Streams the agent's log at `level` and above.
    pub async fn monitor(&self, level: &str) -> Result<LogStream, RpcError> {
        let inner = self
            .open_stream("monitor", &MonitorRequest { log_level: level })
            .await?;
        Ok(LogStream { inner })
    }

    /// Starts a query; acks and responses arrive on the returned stream until it ends.
    pub async fn query(&self, params: &QueryParams) -> Result<QueryStream, RpcError> {
        let timeout_ns = params
            .timeout
            .map(|t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let inner = self
            .open_stream(
                "query",
                &QueryRequest {
                    filter_nodes: &params.filter_nodes,
                    filter_tags: &params.filter_tags,
                    request_ack: params.request_ack,
                    relay_factor: params.relay_factor,
                    timeout: timeout_ns,
                    name: &params.name,
                    payload: &params.payload,
                },
            )
            .await?;
        Ok(QueryStream { inner, spurious: 0 })
    }

    /// Opens a streaming command on the current connection.
    async fn open_stream<B: Serialize>(
        &self,
        command: &'static str,
        body: &B,
    ) -> Result<StreamInner, RpcError> {
        let conn = self.connection().await?;
        let (seq, rx) = conn
            .open_stream(command, body, self.inner.options.timeout)
            .await?;
        Ok(StreamInner { conn, seq, rx })
    }

    /// Answers a query received on an event stream of this client.
    pub async fn respond(&self, id: u64, payload: &[u8]) -> Result<(), RpcError> {
        self.call("respond", Some(&RespondRequest { id, payload }), false)
            .await?
            .into_result("respond")
    }

    /// A keyring command, repeated while some members did not answer in time and none
    /// refused. Serf runs key changes as a query with a deadline, so on a busy mesh an answer
    /// can arrive too late; every keyring command is idempotent (installing, using or removing
    /// a key twice leaves the same keyring), so asking again is safe and completes the change.
    async fn key_op(
        &self,
        command: &'static str,
        key: Option<&str>,
    ) -> Result<KeyResponse, RpcError> {
        let mut attempt = 1;
        loop {
            match self.key_op_once(command, key).await {
                Err(RpcError::Keyring { response, .. })
                    if response.num_err == 0
                        && response.num_resp < response.num_nodes
                        && attempt < KEY_OP_ATTEMPTS =>
                {
                    tracing::debug!(
                        command,
                        attempt,
                        answered = response.num_resp,
                        members = response.num_nodes,
                        "keyring change not answered by every member; asking again"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn key_op_once(
        &self,
        command: &'static str,
        key: Option<&str>,
    ) -> Result<KeyResponse, RpcError> {
        let reply = match key {
            Some(key) => self.call(command, Some(&KeyRequest { key }), true).await?,
            None => self.call(command, None::<&()>, true).await?,
        };
        let response: KeyResponse = match &reply.body {
            Some(raw) => decode::<WireKeyResponse>(command, raw)?.into(),
            None => KeyResponse::default(),
        };
        if reply.error.is_empty() {
            Ok(response)
        } else if reply.body.is_some() {
            Err(RpcError::Keyring {
                message: reply.error,
                response,
            })
        } else {
            Err(RpcError::from_agent(command, reply.error))
        }
    }

    /// Installs a new encryption key (base64) on every member.
    pub async fn install_key(&self, key: &str) -> Result<KeyResponse, RpcError> {
        self.key_op("install-key", Some(key)).await
    }

    /// Makes an installed key the primary (encrypting) key on every member.
    pub async fn use_key(&self, key: &str) -> Result<KeyResponse, RpcError> {
        self.key_op("use-key", Some(key)).await
    }

    /// Removes a (non-primary) key from every member.
    pub async fn remove_key(&self, key: &str) -> Result<KeyResponse, RpcError> {
        self.key_op("remove-key", Some(key)).await
    }

    /// Lists the keys installed across the cluster, with how many nodes hold each.
    pub async fn list_keys(&self) -> Result<KeyResponse, RpcError> {
        self.key_op("list-keys", None).await
    }

    /// The agent's statistics, section by section.
    pub async fn stats(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, RpcError> {
        self.call_decode("stats", None::<&()>).await
    }

    /// The mesh's membership Lamport clock as this agent knows it (`stats` serf.member_time):
    /// it moves on every join, leave and failure, mesh-wide.
    pub async fn member_clock(&self) -> Result<u64, RpcError> {
        let stats = self.stats().await?;
        Ok(stats
            .get("serf")
            .and_then(|s| s.get("member_time"))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }
}

fn decode<R: DeserializeOwned>(command: &'static str, raw: &[u8]) -> Result<R, RpcError> {
    rmp_serde::from_slice(raw).map_err(|e| RpcError::Decode {
        what: command,
        detail: e.to_string(),
    })
}

/// A response: the header's error string and the body, if one followed.
#[derive(Debug)]
struct Reply {
    error: String,
    body: Option<Vec<u8>>,
}

impl Reply {
    fn into_result(self, command: &'static str) -> Result<(), RpcError> {
        if self.error.is_empty() {
            Ok(())
        } else {
            Err(RpcError::from_agent(command, self.error))
        }
    }

    fn into_body(self, command: &'static str) -> Result<Vec<u8>, RpcError> {
        if !self.error.is_empty() {
            return Err(RpcError::from_agent(command, self.error));
        }
        self.body.ok_or(RpcError::Decode {
            what: command,
            detail: "response has no body".into(),
        })
    }
}

/// What the reader task delivers on a stream.
#[derive(Debug)]
enum StreamItem {
    Record(Vec<u8>),
    /// A query's `done` record.
    Done,
    Lost(String),
}

enum Pending {
    Once {
        body: bool,
        tx: Option<oneshot::Sender<Result<Reply, RpcError>>>,
    },
    Stream {
        ack: Option<oneshot::Sender<Result<(), RpcError>>>,
        tx: mpsc::Sender<StreamItem>,
        is_query: bool,
    },
    /// A stream its owner dropped: records may still arrive and are discarded.
    Draining,
}

#[derive(Default)]
struct Shared {
    pending: HashMap<u64, Pending>,
    closed: Option<String>,
}

struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Mutex<Shared>>,
    next_seq: AtomicU64,
    closed: watch::Receiver<Option<String>>,
    closer: Arc<watch::Sender<Option<String>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    stream_buffer: usize,
    /// Records dropped because a stream's consumer fell behind.
    dropped: Arc<AtomicU64>,
}

impl Conn {
    fn start(stream: TcpStream, stream_buffer: usize) -> Arc<Conn> {
        let (read, write) = stream.into_split();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (closer, closed) = watch::channel(None);
        let closer = Arc::new(closer);
        let dropped = Arc::new(AtomicU64::new(0));
        let reader = tokio::spawn(reader_task(
            read,
            shared.clone(),
            closer.clone(),
            dropped.clone(),
        ));
        Arc::new(Conn {
            writer: tokio::sync::Mutex::new(write),
            shared,
            next_seq: AtomicU64::new(1),
            closed,
            closer,
            reader: Mutex::new(Some(reader)),
            stream_buffer: stream_buffer.max(1),
            dropped,
        })
    }

    fn is_closed(&self) -> bool {
        // The shared state is marked before any waiter learns of the loss, so a caller
        // woken by it never picks this connection again.
        lock(&self.shared).closed.is_some() || self.closed.borrow().is_some()
    }

    fn shutdown(&self, reason: &str) {
        if let Ok(mut guard) = self.reader.lock() {
            if let Some(task) = guard.take() {
                task.abort();
            }
        }
        fail_all(&self.shared, &self.closer, reason.to_owned());
    }

    async fn send(&self, bytes: &[u8]) -> Result<(), RpcError> {
        let mut writer = self.writer.lock().await;
        if let Err(e) = writer.write_all(bytes).await {
            drop(writer);
            let reason = format!("write failed: {e}");
            self.shutdown(&reason);
            return Err(RpcError::ConnectionLost(reason));
        }
        Ok(())
    }

    fn register(&self, pending: Pending) -> Result<u64, RpcError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut shared = lock(&self.shared);
        if let Some(reason) = &shared.closed {
            return Err(RpcError::ConnectionLost(reason.clone()));
        }
        shared.pending.insert(seq, pending);
        Ok(seq)
    }

    async fn call<B: Serialize>(
        &self,
        command: &'static str,
        body: Option<&B>,
        expects_body: bool,
        timeout: Duration,
    ) -> Result<Reply, RpcError> {
        let (tx, rx) = oneshot::channel();
        let seq = self.register(Pending::Once {
            body: expects_body,
            tx: Some(tx),
        })?;
        let bytes = codec::encode_request(command, seq, body).map_err(|e| {
            lock(&self.shared).pending.remove(&seq);
            RpcError::Encode {
                command,
                detail: e.to_string(),
            }
        })?;
        self.send(&bytes).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::ConnectionLost("reader stopped".into())),
            // The entry stays registered so the late answer is still consumed in order.
            Err(_) => Err(RpcError::Timeout { command, timeout }),
        }
    }

    async fn open_stream<B: Serialize>(
        self: &Arc<Self>,
        command: &'static str,
        body: &B,
        timeout: Duration,
    ) -> Result<(u64, mpsc::Receiver<StreamItem>), RpcError> {
        let (ack_tx, ack_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel(self.stream_buffer);
        let seq = self.register(Pending::Stream {
            ack: Some(ack_tx),
            tx,
            is_query: command == "query",
        })?;
        let bytes = codec::encode_request(command, seq, Some(body)).map_err(|e| {
            lock(&self.shared).pending.remove(&seq);
            RpcError::Encode {
                command,
                detail: e.to_string(),
            }
        })?;
        self.send(&bytes).await?;
        match tokio::time::timeout(timeout, ack_rx).await {
            Ok(Ok(Ok(()))) => Ok((seq, rx)),
            Ok(Ok(Err(RpcError::Agent { message, .. }))) => {
                Err(RpcError::from_agent(command, message))
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(RpcError::ConnectionLost("reader stopped".into())),
            Err(_) => {
                self.abandon_stream(seq);
                Err(RpcError::Timeout { command, timeout })
            }
        }
    }

    /// Marks a stream as dropped and asks the agent to stop it.
    fn abandon_stream(self: &Arc<Self>, seq: u64) {
        let was_query = {
            let mut shared = lock(&self.shared);
            match shared.pending.get(&seq) {
                Some(Pending::Stream { is_query, .. }) => {
                    let q = *is_query;
                    shared.pending.insert(seq, Pending::Draining);
                    q
                }
                _ => return,
            }
        };
        // Queries end by themselves; event streams and monitors need a `stop`.
        if was_query || self.is_closed() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let conn = self.clone();
        handle.spawn(async move {
            let _ = conn
                .call(
                    "stop",
                    Some(&StopRequest { stop: seq }),
                    false,
                    Duration::from_secs(5),
                )
                .await;
        });
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shutdown("connection dropped");
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding this lock leaves consistent data (plain map updates).
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn fail_all(shared: &Mutex<Shared>, closer: &watch::Sender<Option<String>>, reason: String) {
    let pending = {
        let mut shared = lock(shared);
        if shared.closed.is_some() {
            return;
        }
        shared.closed = Some(reason.clone());
        std::mem::take(&mut shared.pending)
    };
    let _ = closer.send(Some(reason.clone()));
    for (_, p) in pending {
        match p {
            Pending::Once { tx: Some(tx), .. } => {
                let _ = tx.send(Err(RpcError::ConnectionLost(reason.clone())));
            }
            Pending::Stream { ack, tx, .. } => {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(RpcError::ConnectionLost(reason.clone())));
                }
                let _ = tx.try_send(StreamItem::Lost(reason.clone()));
            }
            _ => {}
        }
    }
}

/// Where the next value in the agent's byte stream belongs.
enum Expect {
    Header,
    /// The body of a one-shot response whose header carried `error`.
    OnceBody {
        seq: u64,
        error: String,
    },
    /// A stream record (events, log lines, query records).
    Record {
        seq: u64,
    },
}

async fn reader_task(
    mut read: tokio::net::tcp::OwnedReadHalf,
    shared: Arc<Mutex<Shared>>,
    closer: Arc<watch::Sender<Option<String>>>,
    dropped: Arc<AtomicU64>,
) {
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut expect = Expect::Header;
    let reason = 'outer: loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => break "agent closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("read failed: {e}"),
        };
        framer.push(buf.get(..n).unwrap_or_default());
        loop {
            let value = match framer.next_value() {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(e) => break 'outer format!("malformed stream: {e}"),
            };
            match dispatch(
                &shared,
                &dropped,
                std::mem::replace(&mut expect, Expect::Header),
                value,
            ) {
                Ok(next) => expect = next,
                Err(e) => break 'outer e,
            }
        }
    };
    tracing::debug!(%reason, "serf rpc connection closed");
    fail_all(&shared, &closer, reason);
}

/// Routes one msgpack value; returns what the next value will be.
fn dispatch(
    shared: &Mutex<Shared>,
    dropped: &AtomicU64,
    expect: Expect,
    value: &[u8],
) -> Result<Expect, String> {
    match expect {
        Expect::OnceBody { seq, error } => {
            // An agent error may come without its body: if this value is the next header,
            // complete the call without one and handle the header in its own right.
            if !error.is_empty() && codec::looks_like_header(value) {
                complete_once(shared, seq, Reply { error, body: None });
                return dispatch(shared, dropped, Expect::Header, value);
            }
            complete_once(
                shared,
                seq,
                Reply {
                    error,
                    body: Some(value.to_vec()),
                },
            );
            Ok(Expect::Header)
        }
        Expect::Record { seq } => {
            let mut guard = lock(shared);
            let mut finished = false;
            if let Some(Pending::Stream { tx, is_query, .. }) = guard.pending.get(&seq) {
                let item = if *is_query && is_done_record(value) {
                    finished = true;
                    StreamItem::Done
                } else {
                    StreamItem::Record(value.to_vec())
                };
                if tx.try_send(item).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            } else if let Some(Pending::Draining) = guard.pending.get(&seq) {
                finished = is_done_record(value);
            }
            if finished {
                guard.pending.remove(&seq);
            }
            Ok(Expect::Header)
        }
        Expect::Header => {
            let header: ResponseHeader = rmp_serde::from_slice(value)
                .map_err(|e| format!("malformed response header: {e}"))?;
            let error = header.error.unwrap_or_default();
            let seq = header.seq;
            let mut guard = lock(shared);
            match guard.pending.get_mut(&seq) {
                Some(Pending::Once { body, .. }) => {
                    if *body && !codec::error_suppresses_body(&error) {
                        Ok(Expect::OnceBody { seq, error })
                    } else {
                        drop(guard);
                        complete_once(shared, seq, Reply { error, body: None });
                        Ok(Expect::Header)
                    }
                }
                Some(Pending::Stream { ack, .. }) if ack.is_some() => {
                    let ack = ack.take();
                    if !error.is_empty() {
                        guard.pending.remove(&seq);
                    }
                    drop(guard);
                    if let Some(ack) = ack {
                        let _ = ack.send(if error.is_empty() {
                            Ok(())
                        } else {
                            Err(RpcError::Agent {
                                command: "stream",
                                message: error,
                            })
                        });
                    }
                    Ok(Expect::Header)
                }
                Some(Pending::Stream { .. }) | Some(Pending::Draining) => {
                    Ok(Expect::Record { seq })
                }
                None => Err(format!("response for unknown sequence number {seq}")),
            }
        }
    }
}

fn complete_once(shared: &Mutex<Shared>, seq: u64, reply: Reply) {
    if let Some(Pending::Once { tx: Some(tx), .. }) = lock(shared).pending.remove(&seq) {
        let _ = tx.send(Ok(reply));
    }
}

fn is_done_record(raw: &[u8]) -> bool {
    rmp_serde::from_slice::<WireQueryRecord>(raw).is_ok_and(|r| r.kind == "done")
}

struct StreamInner {
    conn: Arc<Conn>,
    seq: u64,
    rx: mpsc::Receiver<StreamItem>,
}

impl StreamInner {
    async fn next_raw(&mut self) -> Option<Result<Vec<u8>, RpcError>> {
        match self.rx.recv().await {
            Some(StreamItem::Record(raw)) => Some(Ok(raw)),
            Some(StreamItem::Done) => None,
            Some(StreamItem::Lost(reason)) => Some(Err(RpcError::ConnectionLost(reason))),
            None => Some(Err(RpcError::ConnectionLost("stream closed".into()))),
        }
    }
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        self.conn.abandon_stream(self.seq);
    }
}

/// Events from `stream`. Ends with an error when the connection is lost.
pub struct EventStream {
    inner: StreamInner,
}

impl EventStream {
    /// The next event. Records the client cannot decode are skipped and logged.
    pub async fn next(&mut self) -> Result<Event, RpcError> {
        loop {
            let raw = match self.inner.next_raw().await {
                Some(r) => r?,
                None => return Err(RpcError::ConnectionLost("stream ended".into())),
            };
            match rmp_serde::from_slice::<WireEventRecord>(&raw)
                .map_err(|e| e.to_string())
                .and_then(|r| Event::try_from(r).map_err(|e| e.to_string()))
            {
                Ok(event) => return Ok(event),
                Err(e) => tracing::warn!(error = %e, "skipping undecodable serf event record"),
            }
        }
    }

    /// Records dropped on this connection because a consumer fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner.conn.dropped.load(Ordering::Relaxed)
    }
}

/// Responses to one query; `next` returns `Ok(None)` when the query's time is up.
pub struct QueryStream {
    inner: StreamInner,
    spurious: u64,
}

impl QueryStream {
    /// Records skipped because they named no sender.
    pub fn spurious(&self) -> u64 {
        self.spurious
    }

    pub async fn next(&mut self) -> Result<Option<QueryRecord>, RpcError> {
        loop {
            let raw = match self.inner.next_raw().await {
                Some(r) => r?,
                None => return Ok(None),
            };
            let rec: WireQueryRecord = decode("query", &raw)?;
            // After a query's deadline the agent may emit a burst of ack/response records
            // with no sender and no payload before its `done` (it keeps reading the closed
            // response channels until its own timer fires); they carry nothing: skip them.
            if rec.kind != "done" && rec.from.as_deref().unwrap_or_default().is_empty() {
                self.spurious += 1;
                continue;
            }
            match rec.kind.as_str() {
                "ack" => {
                    return Ok(Some(QueryRecord::Ack {
                        from: rec.from.unwrap_or_default(),
                    }))
                }
                "response" => {
                    return Ok(Some(QueryRecord::Response {
                        from: rec.from.unwrap_or_default(),
                        payload: rec.payload.map(|p| p.into_vec()).unwrap_or_default(),
                    }))
                }
                "done" => return Ok(None),
                other => tracing::warn!(kind = other, "skipping unknown serf query record"),
            }
        }
    }
}

/// Log lines from `monitor`.
pub struct LogStream {
    inner: StreamInner,
}

impl LogStream {
    pub async fn next(&mut self) -> Result<String, RpcError> {
        let raw = match self.inner.next_raw().await {
            Some(r) => r?,
            None => return Err(RpcError::ConnectionLost("stream ended".into())),
        };
        let rec: WireLogRecord = decode("monitor", &raw)?;
        Ok(rec.log)
    }
}
