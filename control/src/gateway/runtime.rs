//! The gateway's event loop on tokio (the portable socket adapter around the sans-IO cores).
//!
//! One worker task owns everything the packets touch: per transit a UDP socket and a WireGuard
//! [`Device`] holding every tunnel on that transit; each tunnel's prober and STAMP reflector;
//! the fabric's VXLAN socket and the route tables. Nothing is shared with other tasks, so
//! nothing is locked. The worker polls all its sockets at once, wakes on a datagram or on the
//! earliest deadline (WireGuard timers, the next probe, the next status snapshot), and
//! publishes a status snapshot per second for the control endpoint.
//!
//! Forwarding: VXLAN from a leaf goes through [`pipeline::from_fabric`] (checks, TTL, route,
//! tunnel pick) and is encrypted in place into the picked tunnel; a decrypted packet that is
//! not for the gateway itself goes through [`pipeline::to_fabric`] to the leaf's VTEP.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gatewan_dataplane::drop::{DropCounters, DropReason};
use gatewan_dataplane::pipeline::{self, FABRIC_HEADROOM};
use gatewan_dataplane::route::{self, FlowHasher, RouteTables, TunnelGroup};
use gatewan_dataplane::wireguard::{
    self as wg, Action, Device, Encapsulated, PeerConfig, TunnelId, DATA_HEADER_LEN,
};
use rand_core::OsRng;
use thiserror::Error;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::config::{GatewayConfig, Key32, Transit, Tunnel};
use super::control::{self, ControlError, Request, Response};
use super::inner::{self, Inner, InnerAddrs, ProbeMethod};
use super::status::{self, Counters, EndpointInfo, Meta, ProbeStatus, TunnelState, TunnelStatus};
use crate::probe::ntp::NtpTimestamp;
use crate::probe::{Prober, Reflector};

/// How often the worker refreshes its tunnels' status (and their rates).
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// Receive and transmit buffers: the largest UDP datagram.
const BUF_LEN: usize = 65_536;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("{what}: binding UDP {addr}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("static routes: {0}")]
    Routes(String),
    #[error("tunnel {tunnel}: {source}")]
    Tunnel { tunnel: String, source: wg::Error },
    #[error("control endpoint")]
    Control(#[from] ControlError),
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
}

/// The WireGuard core's clock: wall-clock time read once at start, advanced by the monotonic
/// clock (so timers never jump and handshake timestamps still grow across restarts).
#[derive(Clone, Copy, Debug)]
struct Clock {
    wall_base_ns: u64,
    mono_base: Instant,
}

impl Clock {
    fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            wall_base_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
            mono_base: Instant::now(),
        }
    }

    fn wg(&self, mono: Instant) -> wg::Instant {
        let since = u64::try_from(mono.saturating_duration_since(self.mono_base).as_nanos())
            .unwrap_or(u64::MAX);
        wg::Instant::from_nanos(self.wall_base_ns.saturating_add(since))
    }

    fn mono(&self, t: wg::Instant) -> Instant {
        self.mono_base + Duration::from_nanos(t.as_nanos().saturating_sub(self.wall_base_ns))
    }
}

/// One tunnel's companions in the transit task.
/// One tunnel's companions in the worker.
struct TunnelCtx {
    /// Which of the worker's transits carries it, and its id in that transit's device.
    transit: usize,
    id: TunnelId,
    config: Tunnel,
    addrs: InnerAddrs,
    prober: Prober,
    reflector: Reflector<IpAddr>,
    started_at: SystemTime,
    uuid: String,
    /// Inner packets dropped or ignored on this tunnel, by counter name.
    drops: BTreeMap<&'static str, u64>,
    probes_sent: u64,
    forwarded_to_fabric: u64,
    last: (Instant, u64, u64),
    rx_bps: u64,
    tx_bps: u64,
    state: TunnelState,
    /// A forced rekey waiting for WireGuard's rate limit (one initiation per REKEY_TIMEOUT).
    rekey_at: Option<Instant>,
}

impl TunnelCtx {
    fn count(&mut self, name: &'static str) {
        *self.drops.entry(name).or_default() += 1;
    }
}

/// A transit and the WireGuard device of its tunnels. Its socket lives in
/// [`Worker::sockets`] at the same index: the device is not `Sync`, so the sockets, which are
/// polled across awaits, are kept apart from it.
struct TransitIo {
    transit: Transit,
    device: Device,
}

/// The fabric side: the VXLAN socket on our VTEP.
struct FabricIo {
    socket: UdpSocket,
    fabric: pipeline::Fabric,
    /// Our VTEP address: the source of the ICMP errors we send into the fabric.
    vtep: IpAddr,
    /// ICMP "fragmentation needed" / "packet too big" sent for oversize packets.
    too_big_sent: u64,
}

/// Where a datagram came from.
#[derive(Clone, Copy)]
enum Port {
    Transit(usize),
    Fabric,
}

struct Worker {
    public_key: Key32,
    transits: Vec<TransitIo>,
    sockets: Vec<UdpSocket>,
    fabric: Option<FabricIo>,
    /// Indexed by the route tables' tunnel ids.
    tunnels: Vec<TunnelCtx>,
    tables: RouteTables,
    hasher: FlowHasher,
    /// Forwarding drops that no tunnel owns (from the fabric side), by reason.
    fabric_drops: DropCounters,
    forwarded_to_tunnels: u64,
    clock: Clock,
    status: Arc<Mutex<Snapshot>>,
    commands: mpsc::UnboundedReceiver<Command>,
}

/// What the control endpoint asks of the worker.
#[derive(Debug)]
enum Command {
    Rekey(usize),
}

/// What the worker last published.
#[derive(Default)]
struct Snapshot {
    tunnels: Vec<TunnelStatus>,
    drops: BTreeMap<String, u64>,
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(config: GatewayConfig) -> Result<(), GatewayError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(GatewayError::Signals)?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(GatewayError::Signals)?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
            _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = stop_tx.send(true);
    };
    run_until(config, stop_rx, stop).await
}

/// The static route tables: each tunnel's `networks` as remote prefixes (one group per set of
/// tunnels sharing a prefix, equal weights), and the fabric's local routes.
fn static_tables(config: &GatewayConfig) -> Result<RouteTables, GatewayError> {
    let mut members: BTreeMap<ipnet::IpNet, Vec<(route::TunnelId, u32)>> = BTreeMap::new();
    for (i, t) in config.tunnels.iter().enumerate() {
        for net in &t.networks {
            members
                .entry(*net)
                .or_default()
                .push((route::TunnelId(i as u32), 1));
        }
    }
    let mut builder = RouteTables::builder();
    let mut groups = BTreeMap::new();
    for (net, tunnels) in members {
        let group = match groups.get(&tunnels) {
            Some(g) => *g,
            None => {
                let g = builder.add_group(
                    TunnelGroup::new(&tunnels).map_err(|e| GatewayError::Routes(e.to_string()))?,
                );
                groups.insert(tunnels, g);
                g
            }
        };
        builder
            .add_remote(net, group)
            .map_err(|e| GatewayError::Routes(e.to_string()))?;
    }
    if let Some(fabric) = &config.fabric {
        for (net, local) in &fabric.local_routes {
            builder
                .add_local(*net, *local)
                .map_err(|e| GatewayError::Routes(e.to_string()))?;
        }
    }
    Ok(builder.build())
}

/// Runs the gateway until `stop` completes (it must also flip `stopped` to true).
pub async fn run_until(
    config: GatewayConfig,
    stopped: watch::Receiver<bool>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let clock = Clock::new();
    let public_key = super::config::public_key_of(&config.private_key);
    let mut transits = Vec::new();
    let mut sockets = Vec::new();
    let mut tunnels: Vec<TunnelCtx> = Vec::new();
    for transit in &config.transits {
        let socket =
            UdpSocket::bind(transit.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    what: format!("transit {}", transit.name),
                    addr: transit.listen,
                    source,
                })?;
        let device = Device::new(config.private_key.0, Box::new(OsRng));
        transits.push(TransitIo {
            transit: transit.clone(),
            device,
        });
        sockets.push(socket);
        tracing::info!(transit = %transit.name, listen = %transit.listen, "transit up");
    }
    // Tunnels in configuration order: their index is their id in the route tables.
    for t in &config.tunnels {
        let Some(io) = transits.get_mut(t.transit) else {
            continue;
        };
        let mut peer = PeerConfig::new(t.peer_public_key.0);
        peer.preshared_key = t.preshared_key.map(|k| k.0);
        peer.persistent_keepalive = t.persistent_keepalive;
        let id = io
            .device
            .add_tunnel(peer, t.peer_endpoint, Box::new(OsRng))
            .map_err(|source| GatewayError::Tunnel {
                tunnel: t.name.clone(),
                source,
            })?;
        tunnels.push(new_ctx(t.transit, id, t, &config, &public_key, &io.transit));
    }
    let fabric = match &config.fabric {
        None => None,
        Some(f) => {
            let addr = SocketAddr::new(f.vtep, gatewan_dataplane::wire::vxlan::PORT);
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind {
                    what: "fabric VXLAN".into(),
                    addr,
                    source,
                })?;
            tracing::info!(vtep = %f.vtep, vni = f.vni, local_routes = f.local_routes.len(), "fabric up");
            Some(FabricIo {
                socket,
                vtep: f.vtep,
                too_big_sent: 0,
                fabric: pipeline::Fabric {
                    vni: f.vni,
                    router_mac: f.router_mac,
                    tunnel_mtu: wg::tunnel::DEFAULT_MTU,
                },
            })
        }
    };
    let tables = static_tables(&config)?;
    let by_name: BTreeMap<String, usize> = tunnels
        .iter()
        .enumerate()
        .map(|(i, c)| (c.config.name.clone(), i))
        .collect();
    let (command_tx, commands) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(Snapshot::default()));
    let worker = Worker {
        public_key,
        transits,
        sockets,
        fabric,
        tunnels,
        tables,
        hasher: FlowHasher::new(0x6761_7465_7761_6e21),
        fabric_drops: DropCounters::default(),
        forwarded_to_tunnels: 0,
        clock,
        status: Arc::clone(&status),
        commands,
    };
    let task = tokio::spawn(worker.run(stopped));

    let (name, datacenter) = (config.name.clone(), config.datacenter.clone());
    let socket_path = config.control_socket.clone();
    let control = tokio::spawn(async move {
        control::serve(&socket_path, move |request| {
            if let Request::Rekey { tunnel } = request {
                return match by_name.get(&tunnel) {
                    Some(i) if command_tx.send(Command::Rekey(*i)).is_ok() => Response::Done,
                    Some(_) => Response::Error {
                        message: format!("tunnel {tunnel} is stopping"),
                    },
                    None => Response::Error {
                        message: format!("no tunnel named {tunnel:?}"),
                    },
                };
            }
            // A poisoned lock only means the worker panicked mid-copy; its last snapshot is
            // still the best answer.
            let guard = status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Response::Status {
                gateway: name.clone(),
                datacenter: datacenter.clone(),
                tunnels: guard.tunnels.clone(),
                drops: guard.drops.clone(),
            }
        })
        .await
    });
    tracing::info!(gateway = %config.name, socket = %config.control_socket.display(), "gateway running");
    stop.await;
    let _ = task.await;
    control.abort();
    let _ = std::fs::remove_file(&config.control_socket);
    Ok(())
}

fn new_ctx(
    transit_index: usize,
    id: TunnelId,
    t: &Tunnel,
    config: &GatewayConfig,
    public_key: &Key32,
    transit: &Transit,
) -> TunnelCtx {
    let now = Instant::now();
    let addrs = InnerAddrs {
        v4: t.address_v4.map(|n| n.addr()),
        v6: t.address_v6.map(|n| n.addr()),
        peer_v4: t.peer_address_v4,
        peer_v6: t.peer_address_v6,
        echo_port: t.echo_port,
        peer_echo_port: t.peer_echo_port,
        icmp_ident: 0x4757 ^ id.0,
    };
    // Stable across restarts: the same two keys and transits name the same tunnel.
    let seed = format!(
        "{}/{}/{}/{}",
        public_key.to_hex(),
        t.peer_public_key.to_hex(),
        transit.name,
        t.peer_transit.as_deref().unwrap_or("")
    );
    TunnelCtx {
        transit: transit_index,
        id,
        config: t.clone(),
        addrs,
        // The configuration was validated, so this cannot fail; fall back to defaults anyway.
        prober: Prober::new(config.probe, now).unwrap_or_else(|_| default_prober(now)),
        reflector: Reflector::new(64),
        started_at: SystemTime::now(),
        uuid: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes()).to_string(),
        drops: BTreeMap::new(),
        probes_sent: 0,
        forwarded_to_fabric: 0,
        last: (now, 0, 0),
        rx_bps: 0,
        tx_bps: 0,
        state: TunnelState::Connecting,
        rekey_at: None,
    }
}

#[allow(clippy::expect_used)]
fn default_prober(now: Instant) -> Prober {
    Prober::new(crate::probe::ProbeConfig::default(), now)
        .expect("the default probe configuration is valid")
}

/// Receives one datagram from whichever socket has one, into `buf`.
fn poll_sockets(
    transits: &[UdpSocket],
    fabric: &Option<FabricIo>,
    buf: &mut [u8],
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(Port, std::io::Result<(usize, SocketAddr)>)> {
    use std::task::Poll;
    let sockets = transits
        .iter()
        .enumerate()
        .map(|(i, socket)| (Port::Transit(i), socket))
        .chain(fabric.iter().map(|f| (Port::Fabric, &f.socket)));
    for (port, socket) in sockets {
        let mut read = ReadBuf::new(buf);
        match socket.poll_recv_from(cx, &mut read) {
            Poll::Ready(Ok(src)) => return Poll::Ready((port, Ok((read.filled().len(), src)))),
            Poll::Ready(Err(e)) => return Poll::Ready((port, Err(e))),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

impl Worker {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut rx = vec![0u8; BUF_LEN];
        let mut tx = vec![0u8; BUF_LEN];
        let mut next_status = Instant::now();
        loop {
            let now = Instant::now();
            self.on_timers(now, &mut tx).await;
            if now >= next_status {
                self.publish(now);
                next_status = now + STATUS_PERIOD;
            }
            let mut wake = next_status;
            for io in &self.transits {
                if let Some(deadline) = io.device.next_deadline() {
                    wake = wake.min(self.clock.mono(deadline));
                }
            }
            for ctx in &self.tunnels {
                wake = wake.min(ctx.prober.next_wakeup());
                if let Some(at) = ctx.rekey_at {
                    wake = wake.min(at);
                }
            }
            let (sockets, fabric, commands) = (&self.sockets, &self.fabric, &mut self.commands);
            let received = tokio::select! {
                _ = stopped.changed() => break,
                r = std::future::poll_fn(|cx| poll_sockets(sockets, fabric, &mut rx, cx)) => Some(r),
                Some(command) = commands.recv() => {
                    self.on_command(command);
                    None
                }
                _ = tokio::time::sleep_until(wake.max(now).into()) => None,
            };
            match received {
                Some((Port::Transit(t), Ok((n, src)))) => {
                    if let Some(datagram) = rx.get_mut(..n) {
                        self.on_transit(t, datagram, src, &mut tx).await;
                    }
                }
                Some((Port::Fabric, Ok((n, _src)))) => {
                    if let Some(payload) = rx.get_mut(..n) {
                        self.on_fabric(payload, &mut tx).await;
                    }
                }
                Some((_, Err(e))) => tracing::debug!(error = %e, "receive"),
                None => {}
            }
        }
        tracing::info!("worker stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Rekey(i) => {
                let now = Instant::now();
                let Some(ctx) = self.tunnels.get(i) else {
                    return;
                };
                // WireGuard sends at most one initiation per REKEY_TIMEOUT; one asked for
                // sooner would be dropped, so it waits until then.
                let at = self
                    .transits
                    .get(ctx.transit)
                    .and_then(|io| io.device.tunnel(ctx.id))
                    .and_then(|t| t.last_handshake())
                    .map(|t| {
                        self.clock.mono(t) + wg::timers::REKEY_TIMEOUT + Duration::from_millis(100)
                    })
                    .map_or(now, |earliest| earliest.max(now));
                tracing::info!(tunnel = %ctx.config.name, in_ms = at.saturating_duration_since(now).as_millis() as u64, "forced rekey");
                if let Some(ctx) = self.tunnels.get_mut(i) {
                    ctx.rekey_at = Some(at);
                }
            }
        }
    }

    /// The tunnel index of (transit, device id).
    fn tunnel_index(&self, transit: usize, id: TunnelId) -> Option<usize> {
        self.tunnels
            .iter()
            .position(|c| c.transit == transit && c.id == id)
    }

    async fn send_transit(&mut self, transit: usize, datagram: &[u8], to: SocketAddr) {
        if let Some(socket) = self.sockets.get(transit) {
            if let Err(e) = socket.send_to(datagram, to).await {
                tracing::debug!(transit, %to, error = %e, "send");
            }
        }
    }

    async fn on_transit(&mut self, t: usize, datagram: &mut [u8], src: SocketAddr, tx: &mut [u8]) {
        let now = self.clock.wg(Instant::now());
        let Some(io) = self.transits.get_mut(t) else {
            return;
        };
        let (id, result) = io.device.handle_datagram(now, src, datagram, tx);
        let action = match result {
            Ok(action) => action,
            Err(e) => {
                // Counted by the device or the tunnel; `gatewan status` shows the counters.
                tracing::trace!(transit = %io.transit.name, %src, error = %e, "datagram dropped");
                return;
            }
        };
        if let Some(id) = id.filter(|_| action.peer_authenticated()) {
            // The peer proved itself from `src`: follow it there (roaming, NAT rebinding).
            if io.device.endpoint(id) != Some(src) {
                tracing::info!(transit = %io.transit.name, tunnel = id.0, %src, "peer endpoint");
                io.device.set_endpoint(id, Some(src));
            }
        }
        match action {
            Action::SendResponse(n) | Action::SendCookieReply(n) => {
                if let Some(reply) = tx.get(..n) {
                    self.send_transit(t, reply, src).await;
                }
            }
            Action::Deliver { offset, len } => {
                let index = id.and_then(|id| self.tunnel_index(t, id));
                if let (Some(index), Some(packet)) = (index, datagram.get(offset..offset + len)) {
                    self.on_inner(index, packet, tx).await;
                }
            }
            Action::Accepted | Action::CookieStored => {}
        }
    }

    /// A decrypted inner packet from tunnel `index`: for the gateway itself, or for the fabric.
    async fn on_inner(&mut self, index: usize, packet: &[u8], tx: &mut [u8]) {
        let now = Instant::now();
        let Some(ctx) = self.tunnels.get_mut(index) else {
            return;
        };
        let Some(body) = tx.get_mut(DATA_HEADER_LEN..) else {
            return;
        };
        match inner::handle(
            &ctx.addrs,
            &mut ctx.reflector,
            packet,
            NtpTimestamp::now(),
            body,
        ) {
            Ok(Inner::Reply(len)) => self.encapsulate_and_send(index, tx, len).await,
            Ok(Inner::ProbeReply { seq, residence }) => {
                ctx.prober.on_reply(now, seq, residence);
            }
            Ok(Inner::IcmpProbeReply { seq16 }) => {
                ctx.prober.on_reply_seq16(now, seq16, None);
            }
            Ok(Inner::NotForUs) => self.forward_to_fabric(index, packet, tx).await,
            Err(drop) => ctx.count(drop.name()),
        }
    }

    async fn forward_to_fabric(&mut self, index: usize, packet: &[u8], tx: &mut [u8]) {
        let Some(fabric) = &self.fabric else {
            if let Some(ctx) = self.tunnels.get_mut(index) {
                ctx.count("no_fabric");
            }
            return;
        };
        // One copy, into room for the VXLAN and Ethernet headers in front.
        let Some(room) = tx.get_mut(FABRIC_HEADROOM..FABRIC_HEADROOM + packet.len()) else {
            return;
        };
        room.copy_from_slice(packet);
        let result = pipeline::to_fabric(
            &fabric.fabric,
            &self.tables,
            route::TunnelId(index as u32),
            tx,
            packet.len(),
        );
        match result {
            Ok((len, vtep)) => {
                if let Some(payload) = tx.get(..len) {
                    if let Err(e) = fabric.socket.send_to(payload, vtep).await {
                        tracing::debug!(%vtep, error = %e, "fabric send");
                    }
                }
                if let Some(ctx) = self.tunnels.get_mut(index) {
                    ctx.forwarded_to_fabric += 1;
                }
            }
            Err(reason) => {
                if let Some(ctx) = self.tunnels.get_mut(index) {
                    ctx.count(reason.name());
                }
            }
        }
    }

    /// A VXLAN payload from a leaf: route it into a tunnel.
    async fn on_fabric(&mut self, payload: &mut [u8], tx: &mut [u8]) {
        let Some(fabric) = &mut self.fabric else {
            return;
        };
        let hit = match pipeline::from_fabric(&fabric.fabric, &self.tables, &self.hasher, payload) {
            Ok(hit) => hit,
            Err(reason) => {
                self.fabric_drops.count(reason);
                if reason == DropReason::TooBig {
                    // Tell the sender the tunnel MTU (path MTU discovery), as a router would.
                    let offending = pipeline::fabric_inner(payload).unwrap_or_default();
                    if let Ok((len, leaf)) = pipeline::too_big_reply(
                        &fabric.fabric,
                        &self.tables,
                        fabric.vtep,
                        offending,
                        tx,
                    ) {
                        if let Some(reply) = tx.get(..len) {
                            if fabric.socket.send_to(reply, leaf).await.is_ok() {
                                fabric.too_big_sent += 1;
                            }
                        }
                    }
                }
                return;
            }
        };
        let index = hit.tunnel.0 as usize;
        let Some(inner) = payload.get(hit.inner.clone()) else {
            return;
        };
        let Some(room) = tx.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + inner.len()) else {
            self.fabric_drops.count(DropReason::NoBuffer);
            return;
        };
        room.copy_from_slice(inner);
        self.forwarded_to_tunnels += 1;
        self.encapsulate_and_send(index, tx, inner.len()).await;
    }

    async fn encapsulate_and_send(&mut self, index: usize, buf: &mut [u8], len: usize) {
        let now = self.clock.wg(Instant::now());
        let Some(ctx) = self.tunnels.get(index) else {
            return;
        };
        let (t, id) = (ctx.transit, ctx.id);
        let Some(io) = self.transits.get_mut(t) else {
            return;
        };
        match io.device.encapsulate(now, id, buf, len) {
            Ok(Encapsulated::Ready(n)) => {
                if let (Some(to), Some(datagram)) = (io.device.endpoint(id), buf.get(..n)) {
                    self.send_transit(t, datagram, to).await;
                }
            }
            // Sent by `tick` once the handshake completes.
            Ok(Encapsulated::Staged) => {}
            Err(e) => tracing::trace!(tunnel = id.0, error = %e, "encapsulate"),
        }
    }

    async fn on_timers(&mut self, now: Instant, tx: &mut [u8]) {
        // Probes are ordinary traffic: before a session exists they are staged and start the
        // handshake, as any packet would.
        for i in 0..self.tunnels.len() {
            // One due probe at a time: nothing is collected, nothing allocated.
            while let Some((seq, addrs)) = self.tunnels.get_mut(i).and_then(|ctx| {
                let seq = ctx.prober.poll_probe(now)?;
                ctx.probes_sent += 1;
                Some((seq, ctx.addrs))
            }) {
                let Some(body) = tx.get_mut(DATA_HEADER_LEN..) else {
                    break;
                };
                match inner::build_probe(&addrs, seq, NtpTimestamp::now(), body) {
                    Ok(Some(len)) => self.encapsulate_and_send(i, tx, len).await,
                    Ok(None) => {}
                    Err(drop) => {
                        if let Some(ctx) = self.tunnels.get_mut(i) {
                            ctx.count(drop.name());
                        }
                    }
                }
            }
        }
        let wg_now = self.clock.wg(now);
        for i in 0..self.tunnels.len() {
            let Some(ctx) = self.tunnels.get_mut(i) else {
                continue;
            };
            if ctx.rekey_at.is_some_and(|at| at <= now) {
                ctx.rekey_at = None;
                let (t, id) = (ctx.transit, ctx.id);
                if let Some(tunnel) = self
                    .transits
                    .get_mut(t)
                    .and_then(|io| io.device.tunnel_mut(id))
                {
                    tunnel.initiate_handshake(wg_now);
                }
            }
        }
        for t in 0..self.transits.len() {
            while let Some(io) = self.transits.get_mut(t) {
                match io.device.tick(wg_now, tx) {
                    Ok(Some((id, n))) => match (io.device.endpoint(id), tx.get(..n)) {
                        (Some(to), Some(datagram)) => self.send_transit(t, datagram, to).await,
                        // A tunnel that only answers has nowhere to send its own handshakes.
                        _ => {
                            if let Some(index) = self.tunnel_index(t, id) {
                                if let Some(ctx) = self.tunnels.get_mut(index) {
                                    ctx.count("no_endpoint");
                                }
                            }
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::trace!(error = %e, "tick");
                        break;
                    }
                }
            }
        }
    }

    fn publish(&mut self, now: Instant) {
        let wg_now = self.clock.wg(now);
        let mut snapshot = Vec::with_capacity(self.tunnels.len());
        for ctx in &mut self.tunnels {
            let Some(io) = self.transits.get(ctx.transit) else {
                continue;
            };
            let Some(tunnel) = io.device.tunnel(ctx.id) else {
                continue;
            };
            let stats = tunnel.stats().clone();
            let wg_state = tunnel.state(wg_now);
            let endpoint = io.device.endpoint(ctx.id);
            let last_handshake = tunnel.last_handshake();
            let probe = ctx.prober.stats(now);
            let elapsed = now.saturating_duration_since(ctx.last.0).as_secs_f64();
            if elapsed > 0.0 {
                ctx.rx_bps =
                    ((stats.rx_bytes.saturating_sub(ctx.last.1)) as f64 * 8.0 / elapsed) as u64;
                ctx.tx_bps =
                    ((stats.tx_bytes.saturating_sub(ctx.last.2)) as f64 * 8.0 / elapsed) as u64;
            }
            ctx.last = (now, stats.rx_bytes, stats.tx_bytes);
            let state = match wg_state {
                wg::TunnelState::Idle | wg::TunnelState::Connecting => TunnelState::Connecting,
                wg::TunnelState::Expired => TunnelState::Expired,
                wg::TunnelState::Established
                    if !probe.alive
                        && probe.measurements >= ctx.prober.config().dead_after as usize =>
                {
                    TunnelState::Unreachable
                }
                wg::TunnelState::Established => TunnelState::Established,
            };
            if state != ctx.state {
                tracing::info!(tunnel = %ctx.config.name, peer = %ctx.config.peer, from = ?ctx.state, to = ?state, "tunnel state");
                ctx.state = state;
            }
            let mut drops: BTreeMap<String, u64> = stats
                .all_drops()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (format!("{r:?}"), n))
                .collect();
            drops.extend(ctx.drops.iter().map(|(k, v)| ((*k).to_owned(), *v)));
            let (source_addr, target_endpoint) = ctx.addrs.probe_endpoints();
            let c = &ctx.config;
            let opt = |a: Option<String>| a.unwrap_or_else(|| "-".into());
            snapshot.push(TunnelStatus {
                id: ctx.uuid.clone(),
                networks: c
                    .networks
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                meta: Meta {
                    datacenter: c.peer_datacenter.clone(),
                    sdwan_local_transit: io.transit.name.clone(),
                    sdwan_peer_transit: opt(c.peer_transit.clone()),
                },
                usage: status::format_usage(io.transit.capacity_bps, ctx.rx_bps, ctx.tx_bps),
                probe: ProbeStatus {
                    source_addr,
                    target_endpoint,
                    method: match ctx.addrs.probe_method() {
                        ProbeMethod::Stamp => "stamp".into(),
                        ProbeMethod::Icmp => "icmp".into(),
                    },
                    measurements: probe.measurements,
                    loss: status::format_ratio(probe.loss),
                    latency: status::format_duration(probe.latency_median),
                    latency_p95: status::format_duration(probe.latency_p95),
                    jitter: status::format_duration(probe.jitter),
                    reorder: status::format_ratio(probe.reorder),
                },
                peer: c.peer.clone(),
                state,
                target_datacenter: c.peer_datacenter.clone(),
                interface: c.name.clone(),
                started_at: status::format_time(ctx.started_at),
                local_info: EndpointInfo {
                    public_endpoint: io.transit.public_endpoint.to_string(),
                    local_address_v4: opt(ctx.addrs.v4.map(|a| a.to_string())),
                    local_address_v6: opt(ctx.addrs.v6.map(|a| a.to_string())),
                    public_key: self.public_key.to_hex(),
                    echo_port: ctx.addrs.echo_port.to_string(),
                },
                peer_info: EndpointInfo {
                    public_endpoint: opt(endpoint.map(|e| e.to_string())),
                    local_address_v4: opt(ctx.addrs.peer_v4.map(|a| a.to_string())),
                    local_address_v6: opt(ctx.addrs.peer_v6.map(|a| a.to_string())),
                    public_key: c.peer_public_key.to_hex(),
                    echo_port: opt(ctx.addrs.peer_echo_port.map(|p| p.to_string())),
                },
                counters: Counters {
                    rx_bytes: stats.rx_bytes,
                    tx_bytes: stats.tx_bytes,
                    rx_packets: stats.rx_packets,
                    tx_packets: stats.tx_packets,
                    rx_bps: ctx.rx_bps,
                    tx_bps: ctx.tx_bps,
                    handshakes_sent: stats.initiations_sent,
                    handshakes_completed: stats.handshakes_completed,
                    probes_sent: ctx.probes_sent,
                    probes_lost: probe.lost_total,
                    seconds_since_handshake: last_handshake
                        .map(|t| self.clock.mono(t))
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                    forwarded_to_fabric: ctx.forwarded_to_fabric,
                    drops,
                },
            });
        }
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        for io in &self.transits {
            for &reason in wg::DropReason::ALL.iter() {
                let n = io.device.drops(reason);
                if n > 0 {
                    *drops.entry(format!("{reason:?}")).or_default() += n;
                }
            }
        }
        for reason in DropReason::ALL.iter().copied() {
            let n = self.fabric_drops.get(reason);
            if n > 0 {
                drops.insert(reason.name().to_owned(), n);
            }
        }
        drops.insert("forwarded_from_fabric".into(), self.forwarded_to_tunnels);
        if let Some(fabric) = &self.fabric {
            drops.insert("icmp_too_big_sent".into(), fabric.too_big_sent);
        }
        let mut slot = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Snapshot {
            tunnels: snapshot,
            drops,
        };
    }
}
