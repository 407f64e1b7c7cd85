//! The tokio adapter: runs one [`Session`] per configured peer over TCP, the import table and
//! the export diffs, and serves the control endpoint.
//!
//! One task (the core) owns every session and table, so nothing is shared or locked; sockets
//! are read and written by small tasks that talk to the core over channels, tagged with a
//! connection id so that late events from a connection already given up are ignored. The
//! rest of gatewan talks to the core through a [`BgpHandle`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::config::{Config, PeerConfig};
use super::control::{ExportedRoute, PeerStatus, Status, STATUS_VERSION};
use super::rib::{
    AdjRibOut, ExportError, ExportRoute, ExportSet, ImportEvent, ImportPolicy, ImportTable,
    ImportedRoute, RtMatch,
};
use super::session::{Event, Output, Session, State};
use super::wire::evpn::Rt5Key;
use super::wire::notification::{cease_subcode, code};
use super::wire::open::Open;
use super::wire::update::{AttrValue, MpNlri, MpUnreach, PathAttribute, Update};
use super::wire::{MessageType, MessageView, Notification, AFI_L2VPN, SAFI_EVPN};

/// Subscribers that fall this far behind get `Lagged` and should resynchronise from
/// [`BgpHandle::local_prefixes`].
const EVENT_BUFFER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("export set: {0}")]
    Export(#[from] ExportError),
    #[error("the BGP speaker has stopped")]
    Stopped,
}

/// A cheap, clonable handle on a running speaker.
#[derive(Clone)]
pub struct BgpHandle {
    listen_addr: Option<SocketAddr>,
    cmd: mpsc::Sender<Command>,
    events: broadcast::Sender<ImportEvent>,
    table: watch::Receiver<Arc<Vec<ImportedRoute>>>,
}

/// The local prefixes now, and the changes that follow. An event may repeat what the
/// snapshot already holds (both are keyed by RD, Ethernet tag and prefix, so applying it
/// again is harmless).
pub struct Subscription {
    pub snapshot: Vec<ImportedRoute>,
    pub events: broadcast::Receiver<ImportEvent>,
}

enum Command {
    SetExports(ExportSet, oneshot::Sender<Result<(), ExportError>>),
    SetImport(Vec<RtMatch>, oneshot::Sender<()>),
    Status(oneshot::Sender<Status>),
    /// Stop every session: with a Cease and the message, or (`None` inside) without a
    /// NOTIFICATION for a graceful restart.
    Shutdown(Option<Option<String>>, oneshot::Sender<()>),
}

impl BgpHandle {
    /// Where the speaker accepts peers' connections (the bound port when 0 was configured).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// Local prefixes as they change (imported RT-5 routes: prefix, VTEP, router MAC, VNI).
    pub fn subscribe(&self) -> Subscription {
        let events = self.events.subscribe();
        let snapshot = self.table.borrow().as_ref().clone();
        Subscription { snapshot, events }
    }

    /// The whole table of local prefixes, replaced on every change.
    pub fn local_prefixes(&self) -> watch::Receiver<Arc<Vec<ImportedRoute>>> {
        self.table.clone()
    }

    /// Replaces the desired export set; peers get the difference.
    pub async fn set_exports(&self, set: ExportSet) -> Result<(), SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetExports(set, tx)).await?;
        rx.await
            .map_err(|_| SpeakerError::Stopped)?
            .map_err(Into::into)
    }

    /// Replaces the import route targets; received routes are re-evaluated.
    pub async fn set_import_route_targets(&self, rts: Vec<RtMatch>) -> Result<(), SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetImport(rts, tx)).await?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    pub async fn status(&self) -> Result<Status, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx)).await?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Sends every peer a Cease (with `message` as RFC 9003 shutdown communication), waits a
    /// little for it to leave, and stops the speaker.
    pub async fn shutdown(&self, message: Option<String>) {
        let (tx, rx) = oneshot::channel();
        if self
            .send(Command::Shutdown(Some(message), tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Closes every session without a NOTIFICATION and stops: peers that negotiated
    /// graceful restart keep the routes for the restart time (RFC 4724), until the next
    /// bgpctl sends them again and its End-of-RIB.
    pub async fn close_for_restart(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(None, tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, c: Command) -> Result<(), SpeakerError> {
        self.cmd.send(c).await.map_err(|_| SpeakerError::Stopped)
    }
}

enum IoEvent {
    Connected {
        peer: usize,
        id: u64,
        stream: TcpStream,
    },
    ConnectFailed {
        peer: usize,
        id: u64,
        error: std::io::Error,
    },
    Bytes {
        peer: usize,
        id: u64,
        data: Vec<u8>,
    },
    Closed {
        peer: usize,
        id: u64,
        error: Option<std::io::Error>,
    },
    Inbound {
        stream: TcpStream,
        from: SocketAddr,
    },
    /// A colliding inbound connection whose first message was read to learn the peer's
    /// identifier; `received` holds every byte read so far.
    Peeked {
        peer: usize,
        stream: TcpStream,
        received: Vec<u8>,
        peer_id: Option<std::net::Ipv4Addr>,
    },
}

enum WriterCmd {
    Data(Vec<u8>),
    Close,
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<WriterCmd>,
    reader: AbortHandle,
}

struct Peer {
    cfg: PeerConfig,
    name: String,
    session: Session,
    conn: Option<Conn>,
    connecting: Option<(u64, AbortHandle)>,
    adj_out: AdjRibOut,
}

struct Core {
    local_as: u32,
    router_id: std::net::Ipv4Addr,
    peers: Vec<Peer>,
    import: ImportTable,
    export_set: ExportSet,
    desired: BTreeMap<Rt5Key, ExportRoute>,
    events: broadcast::Sender<ImportEvent>,
    table: watch::Sender<Arc<Vec<ImportedRoute>>>,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    next_id: u64,
    /// Writers of closed connections, awaited (briefly) at shutdown so Ceases get out.
    closing: Vec<JoinHandle<()>>,
}

/// Starts the speaker: binds the listener and the control socket (when configured), starts
/// every session. Must run inside a tokio runtime.
pub async fn spawn(config: Config) -> Result<(BgpHandle, JoinHandle<()>), SpeakerError> {
    let export_set = config.export_set();
    spawn_with(config, export_set).await
}

/// [`spawn`] with the export set to send from the first session on (a restarting bgpctl's
/// persisted order: a graceful restart's peers purge what the first End-of-RIB lacks).
pub async fn spawn_with(
    config: Config,
    export_set: ExportSet,
) -> Result<(BgpHandle, JoinHandle<()>), SpeakerError> {
    let desired = export_set.routes_of(config.router_id)?;
    let (io_tx, io_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let (table, table_rx) = watch::channel(Arc::new(Vec::new()));

    let mut background = Vec::new();
    let mut listen_addr = None;
    if let Some(addr) = config.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SpeakerError::Listen { addr, source })?;
        listen_addr = listener.local_addr().ok();
        for p in config.peers.iter() {
            if let Some(key) = &p.md5_password {
                let v6 = addr.is_ipv6();
                if !v6 && p.address.is_ipv6() {
                    tracing::warn!(peer = %p.address, "IPv4 listener: no TCP MD5 key for an IPv6 peer");
                    continue;
                }
                super::md5::set_key(&listener, p.address, v6, key.as_bytes())
                    .map_err(|source| SpeakerError::Listen { addr, source })?;
            }
        }
        tracing::info!(%addr, "listening for BGP peers");
        background.push(tokio::spawn(accept_loop(listener, io_tx.clone())));
    }
    let handle = BgpHandle {
        listen_addr,
        cmd: cmd_tx,
        events: events.clone(),
        table: table_rx,
    };
    let path = config.control_socket.clone();
    if !path.as_os_str().is_empty() {
        let listener = bind_control(&path).map_err(|source| SpeakerError::Control {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), "control endpoint ready");
        background.push(tokio::spawn(control_loop(listener, handle.clone())));
    }

    let peers: Vec<Peer> = config
        .peers
        .iter()
        .map(|p| Peer {
            cfg: p.clone(),
            name: p.name(),
            session: Session::new(config.session_config(p)),
            conn: None,
            connecting: None,
            adj_out: AdjRibOut::default(),
        })
        .collect();
    let policy = ImportPolicy {
        route_targets: config.import.route_targets.clone(),
        local_id: Some(config.router_id),
        local_as: config.local_as,
        own_rds: export_set.rds(),
    };
    let import = ImportTable::new(policy, peers.iter().map(|p| p.name.clone()).collect());
    let mut core = Core {
        local_as: config.local_as,
        router_id: config.router_id,
        peers,
        import,
        export_set,
        desired,
        events,
        table,
        io_tx,
        next_id: 0,
        closing: Vec::new(),
    };
    let task = tokio::spawn(async move {
        core.run(cmd_rx, io_rx).await;
        for b in background {
            b.abort();
        }
        if !path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&path);
        }
    });
    Ok((handle, task))
}

fn bind_control(path: &std::path::Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a daemon that died; a live daemon would still answer on it.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path)
}

async fn accept_loop(listener: TcpListener, tx: mpsc::UnboundedSender<IoEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                if tx.send(IoEvent::Inbound { stream, from }).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("accepting a BGP connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn control_loop(listener: UnixListener, handle: BgpHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // A request is one short line; refuse anything slow or long.
            let mut reader = BufReader::new(read.take(256));
            let read_line = reader.read_line(&mut line);
            if tokio::time::timeout(Duration::from_secs(5), read_line)
                .await
                .is_err()
            {
                return;
            }
            let reply = match line.trim() {
                "status" | "" => match handle.status().await {
                    Ok(s) => serde_json::to_string(&s).unwrap_or_default(),
                    Err(e) => format!("{{\"error\":{:?}}}", e.to_string()),
                },
                other => format!(
                    "{{\"error\":\"unknown request {:?}\"}}",
                    other.escape_default().to_string()
                ),
            };
            let _ = write.write_all(reply.as_bytes()).await;
            let _ = write.write_all(b"\n").await;
            let _ = write.shutdown().await;
        });
    }
}

impl Core {
    async fn run(
        &mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut io_rx: mpsc::UnboundedReceiver<IoEvent>,
    ) {
        let now = Instant::now();
        for i in 0..self.peers.len() {
            self.peers[i].session.handle(now, Event::Start);
            self.drive(i, now);
        }
        loop {
            let deadline = self
                .peers
                .iter()
                .filter_map(|p| p.session.next_deadline())
                .min();
            let sleep = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown(msg, done)) => {
                        self.shutdown(msg.as_ref().map(Option::as_deref)).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c),
                    // Every handle is gone: nobody can use the routes any more.
                    None => {
                        self.shutdown(Some(None)).await;
                        return;
                    }
                },
                Some(ev) = io_rx.recv() => self.io(ev),
                () = sleep => {
                    let now = Instant::now();
                    for i in 0..self.peers.len() {
                        self.peers[i].session.on_timer(now);
                        self.drive(i, now);
                    }
                }
            }
            self.closing.retain(|h| !h.is_finished());
        }
    }

    /// `Some(message)`: a Cease to every peer; `None`: closed for a graceful restart.
    async fn shutdown(&mut self, message: Option<Option<&str>>) {
        let now = Instant::now();
        let event = match message {
            Some(m) => Event::Stop(m),
            None => Event::Abandon,
        };
        for i in 0..self.peers.len() {
            self.peers[i].session.handle(now, event);
            self.drive(i, now);
        }
        let closing = std::mem::take(&mut self.closing);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for h in closing {
                let _ = h.await;
            }
        })
        .await;
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::SetExports(set, reply) => {
                let result = set.routes_of(self.router_id).map(|routes| {
                    tracing::info!(routes = routes.len(), "new export set");
                    self.desired = routes;
                    let mut policy = self.import.policy().clone();
                    policy.own_rds = set.rds();
                    self.export_set = set;
                    let events = self.import.set_policy(policy);
                    self.publish(events);
                    let now = Instant::now();
                    for i in 0..self.peers.len() {
                        self.send_exports(i, now);
                        self.drive(i, now);
                    }
                });
                let _ = reply.send(result);
            }
            Command::SetImport(rts, reply) => {
                let mut policy = self.import.policy().clone();
                policy.route_targets = rts;
                let events = self.import.set_policy(policy);
                self.publish(events);
                let _ = reply.send(());
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Shutdown(..) => {}
        }
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        Status {
            version: STATUS_VERSION,
            local_as: self.local_as,
            router_id: self.router_id,
            peers: self
                .peers
                .iter()
                .map(|p| {
                    let neg = p.session.negotiated();
                    PeerStatus {
                        name: p.name.clone(),
                        remote_as: p.cfg.remote_as,
                        ibgp: p.session.config().ibgp(),
                        passive: p.cfg.passive,
                        state: p.session.state(),
                        established_secs: p
                            .session
                            .established_since()
                            .map(|t| now.saturating_duration_since(t).as_secs()),
                        peer_id: neg.map(|n| n.peer_id),
                        hold_time: neg.map(|n| n.hold_time),
                        routes_received: self.import.received_count(&p.name),
                        routes_imported: self.import.accepted_count(&p.name),
                        routes_sent: p.adj_out.len(),
                        stats: p.session.stats().clone(),
                    }
                })
                .collect(),
            imported: self.import.routes(),
            exported: self
                .desired
                .values()
                .map(|r| ExportedRoute {
                    prefix: r.route.prefix,
                    gateway: r.gateway.clone(),
                    rd: r.route.rd,
                    next_hop: r.next_hop,
                    router_mac: r.router_mac,
                    vni: r.route.label.vni(),
                    route_targets: r.route_targets.clone(),
                })
                .collect(),
            import_stats: self.import.stats.clone(),
        }
    }

    fn io(&mut self, ev: IoEvent) {
        let now = Instant::now();
        match ev {
            IoEvent::Connected { peer, id, stream } => {
                let Some(p) = self.peers.get_mut(peer) else {
                    return;
                };
                if p.connecting.as_ref().map(|c| c.0) != Some(id) {
                    return;
                }
                p.connecting = None;
                if matches!(p.session.state(), State::Connect | State::Active) {
                    tracing::debug!(peer = %p.name, "connected");
                    self.attach(peer, stream);
                    self.peers[peer].session.handle(now, Event::TcpConnected);
                }
            }
            IoEvent::ConnectFailed { peer, id, error } => {
                let Some(p) = self.peers.get_mut(peer) else {
                    return;
                };
                if p.connecting.as_ref().map(|c| c.0) != Some(id) {
                    return;
                }
                tracing::debug!(peer = %p.name, "connect failed: {error}");
                p.connecting = None;
                p.session.handle(now, Event::TcpFailed);
            }
            IoEvent::Bytes { peer, id, data } => {
                let Some(p) = self.peers.get_mut(peer) else {
                    return;
                };
                if p.conn.as_ref().map(|c| c.id) != Some(id) {
                    return;
                }
                p.session.handle(now, Event::Bytes(&data));
            }
            IoEvent::Closed { peer, id, error } => {
                let Some(p) = self.peers.get_mut(peer) else {
                    return;
                };
                if p.conn.as_ref().map(|c| c.id) != Some(id) {
                    return;
                }
                tracing::info!(peer = %p.name, error = ?error.map(|e| e.to_string()), "connection closed");
                if let Some(c) = p.conn.take() {
                    let _ = c.tx.send(WriterCmd::Close);
                }
                p.session.handle(now, Event::TcpFailed);
            }
            IoEvent::Inbound { stream, from } => {
                let ip = from.ip().to_canonical();
                let Some(peer) = self.peers.iter().position(|p| p.cfg.address == ip) else {
                    tracing::info!(%from, "connection from an unknown peer refused");
                    return;
                };
                self.inbound(peer, stream, now);
            }
            IoEvent::Peeked {
                peer,
                stream,
                received,
                peer_id,
            } => self.resolve_collision(peer, stream, &received, peer_id, now),
        }
        for i in 0..self.peers.len() {
            self.drive(i, now);
        }
    }

    fn inbound(&mut self, i: usize, stream: TcpStream, now: Instant) {
        let p = &mut self.peers[i];
        match p.session.state() {
            State::Idle => {
                tracing::debug!(peer = %p.name, "connection refused while Idle");
            }
            State::Connect | State::Active => {
                if let Some((_, h)) = p.connecting.take() {
                    h.abort();
                }
                tracing::debug!(peer = %p.name, "accepted the peer's connection");
                self.attach(i, stream);
                self.peers[i].session.handle(now, Event::TcpConnected);
            }
            // A collision (RFC 4271 section 6.8): learn the identifier from the peer's OPEN on
            // the new connection before choosing. Both sides choose alike, so the session
            // never waits on a connection the other side has set aside.
            State::OpenSent | State::OpenConfirm => {
                tracing::debug!(peer = %p.name, "connection collision: reading the peer's OPEN");
                self.closing
                    .push(tokio::spawn(peek_open(i, stream, self.io_tx.clone())));
            }
            State::Established => {
                tracing::debug!(peer = %p.name, "second connection refused: session Established");
                self.closing.push(reject(stream));
            }
        }
    }

    fn resolve_collision(
        &mut self,
        i: usize,
        stream: TcpStream,
        received: &[u8],
        peer_id: Option<std::net::Ipv4Addr>,
        now: Instant,
    ) {
        let p = &mut self.peers[i];
        let adopt = match (p.session.state(), peer_id) {
            (State::Connect | State::Active, _) => true,
            (State::OpenSent | State::OpenConfirm, Some(id)) => {
                let wins = p.session.inbound_wins_collision(id);
                tracing::info!(
                    peer = %p.name,
                    "connection collision: keeping {}",
                    if wins { "the peer's connection" } else { "ours" }
                );
                if wins {
                    p.session.yield_connection();
                    self.drive(i, now);
                }
                wins
            }
            _ => false,
        };
        if !adopt {
            self.closing.push(reject(stream));
            return;
        }
        let p = &mut self.peers[i];
        if let Some((_, h)) = p.connecting.take() {
            h.abort();
        }
        self.attach(i, stream);
        let s = &mut self.peers[i].session;
        s.handle(now, Event::TcpConnected);
        if !received.is_empty() {
            s.handle(now, Event::Bytes(received));
        }
    }

    fn attach(&mut self, i: usize, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        self.next_id += 1;
        let id = self.next_id;
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<WriterCmd>();
        let writer = tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    WriterCmd::Data(b) => {
                        if write.write_all(&b).await.is_err() {
                            // The reader sees the broken connection and reports it.
                            return;
                        }
                    }
                    WriterCmd::Close => break,
                }
            }
            let _ = write.shutdown().await;
        });
        self.closing.push(writer);
        let io_tx = self.io_tx.clone();
        let reader = tokio::spawn(async move {
            let mut read = read;
            let mut buf = vec![0u8; 65536];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) => {
                        let _ = io_tx.send(IoEvent::Closed {
                            peer: i,
                            id,
                            error: None,
                        });
                        return;
                    }
                    Ok(n) => {
                        let data = buf.get(..n).unwrap_or_default().to_vec();
                        if io_tx.send(IoEvent::Bytes { peer: i, id, data }).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = io_tx.send(IoEvent::Closed {
                            peer: i,
                            id,
                            error: Some(e),
                        });
                        return;
                    }
                }
            }
        });
        let p = &mut self.peers[i];
        if let Some(old) = p.conn.replace(Conn {
            id,
            tx,
            reader: reader.abort_handle(),
        }) {
            let _ = old.tx.send(WriterCmd::Close);
            old.reader.abort();
        }
    }

    fn connect(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if let Some((_, h)) = p.connecting.take() {
            h.abort();
        }
        self.next_id += 1;
        let id = self.next_id;
        let addr = SocketAddr::new(p.cfg.address, p.cfg.port);
        let local = p.cfg.local_address;
        let key = p.cfg.md5_password.clone();
        let tx = self.io_tx.clone();
        let task = tokio::spawn(async move {
            let attempt = async {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                if let Some(local) = local {
                    socket.bind(SocketAddr::new(local, 0))?;
                }
                if let Some(key) = &key {
                    super::md5::set_key(&socket, addr.ip(), addr.is_ipv6(), key.as_bytes())?;
                }
                socket.connect(addr).await
            };
            let ev = match attempt.await {
                Ok(stream) => IoEvent::Connected {
                    peer: i,
                    id,
                    stream,
                },
                Err(error) => IoEvent::ConnectFailed { peer: i, id, error },
            };
            let _ = tx.send(ev);
        });
        p.connecting = Some((id, task.abort_handle()));
    }

    /// Carries out a session's outputs.
    fn drive(&mut self, i: usize, now: Instant) {
        while let Some(out) = self.peers[i].session.poll_output() {
            match out {
                Output::Connect => self.connect(i),
                Output::Send(bytes) => {
                    if let Some(c) = &self.peers[i].conn {
                        let _ = c.tx.send(WriterCmd::Data(bytes));
                    }
                }
                Output::Disconnect => {
                    let p = &mut self.peers[i];
                    if let Some(c) = p.conn.take() {
                        let _ = c.tx.send(WriterCmd::Close);
                        c.reader.abort();
                    }
                    if let Some((_, h)) = p.connecting.take() {
                        h.abort();
                    }
                }
                Output::Established(n) => {
                    tracing::info!(
                        peer = %self.peers[i].name,
                        peer_id = %n.peer_id,
                        hold_time = n.hold_time,
                        "session Established"
                    );
                    self.peers[i].adj_out.clear();
                    self.send_exports(i, now);
                    self.send_end_of_rib(i, now);
                }
                Output::Down(why) => {
                    tracing::warn!(peer = %self.peers[i].name, "session down: {why}");
                    self.peers[i].adj_out.clear();
                    let events = self.import.peer_down(&self.peers[i].name);
                    self.publish(events);
                }
                Output::Update(decoded) => {
                    let events = self.import.apply_update(&self.peers[i].name, &decoded);
                    self.publish(events);
                }
                Output::RouteRefresh(_) => {
                    tracing::info!(peer = %self.peers[i].name, "route refresh: sending all routes");
                    self.peers[i].adj_out.clear();
                    self.send_exports(i, now);
                }
            }
        }
    }

    fn send_exports(&mut self, i: usize, now: Instant) {
        let p = &mut self.peers[i];
        if p.session.state() != State::Established {
            return;
        }
        let diff = p.adj_out.update_to(&self.desired);
        if diff.is_empty() {
            return;
        }
        tracing::info!(
            peer = %p.name,
            announce = diff.announce.len(),
            withdraw = diff.withdraw.len(),
            "sending export changes"
        );
        let ctx = p.session.context();
        for msg in AdjRibOut::messages(&diff, self.local_as, ctx) {
            p.session.send_update(now, msg);
        }
    }

    /// RFC 4724 End-of-RIB for L2VPN EVPN after the initial routes.
    fn send_end_of_rib(&mut self, i: usize, now: Instant) {
        let p = &mut self.peers[i];
        let eor = Update {
            attributes: vec![PathAttribute::new(AttrValue::MpUnreach(MpUnreach {
                afi: AFI_L2VPN,
                safi: SAFI_EVPN,
                nlri: MpNlri::Evpn(Vec::new()),
            }))],
            ..Update::default()
        };
        if let Ok(msg) = eor.encode(p.session.context()) {
            p.session.send_update(now, msg);
        }
    }

    fn publish(&mut self, events: Vec<ImportEvent>) {
        if events.is_empty() {
            return;
        }
        for ev in events {
            match &ev {
                ImportEvent::Add(r) => {
                    tracing::info!(prefix = %r.prefix, vtep = %r.vtep, vni = r.vni, rd = %r.rd, "local prefix added")
                }
                ImportEvent::Withdraw(r) => {
                    tracing::info!(prefix = %r.prefix, rd = %r.rd, "local prefix withdrawn")
                }
            }
            let _ = self.events.send(ev);
        }
        self.table.send_replace(Arc::new(self.import.routes()));
    }
}

/// Reads a colliding connection up to its first message and hands it back to the core.
async fn peek_open(peer: usize, mut stream: TcpStream, tx: mpsc::UnboundedSender<IoEvent>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match MessageView::parse(&received) {
                Ok(Some((view, _))) => {
                    return (view.kind == MessageType::Open)
                        .then(|| Open::decode(view.body).ok().map(|o| o.bgp_id))
                        .flatten();
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => received.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    };
    let peer_id = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .ok()
        .flatten();
    let _ = tx.send(IoEvent::Peeked {
        peer,
        stream,
        received,
        peer_id,
    });
}

/// Refuses a connection with Cease / Connection Collision Resolution.
fn reject(mut stream: TcpStream) -> JoinHandle<()> {
    tokio::spawn(async move {
        let n = Notification::new(code::CEASE, cease_subcode::CONNECTION_COLLISION_RESOLUTION);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = stream.write_all(&n.encode()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    })
}
