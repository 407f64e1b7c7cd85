//! The gateway's event loop on tokio (the portable socket adapter around the sans-IO cores).
//!
//! One task per transit owns that transit's UDP socket and a WireGuard [`Device`] holding
//! every tunnel on it, plus each tunnel's prober and STAMP reflector: no state is shared
//! between tasks, so nothing is locked. Each task wakes on a datagram or on the earliest
//! deadline (WireGuard timers, the next probe, the next status snapshot), and publishes a
//! status snapshot per second for the control endpoint.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gatewan_dataplane::wireguard::{
    self as wg, Action, Device, Encapsulated, PeerConfig, TunnelId, DATA_HEADER_LEN,
};
use rand_core::OsRng;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::config::{GatewayConfig, Key32, Transit, Tunnel};
use super::control::{self, ControlError, Request, Response};
use super::inner::{self, Inner, InnerAddrs, ProbeMethod};
use super::status::{self, Counters, EndpointInfo, Meta, ProbeStatus, TunnelState, TunnelStatus};
use crate::probe::ntp::NtpTimestamp;
use crate::probe::{Prober, Reflector};

/// How often each transit task refreshes its tunnels' status (and their rates).
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// Receive and transmit buffers: the largest UDP datagram.
const BUF_LEN: usize = 65_536;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("transit {transit}: binding UDP {addr}")]
    Bind {
        transit: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
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
struct TunnelCtx {
    id: TunnelId,
    config: Tunnel,
    addrs: InnerAddrs,
    prober: Prober,
    reflector: Reflector<IpAddr>,
    started_at: SystemTime,
    uuid: String,
    /// Inner packets dropped or ignored by the gateway itself, by counter name.
    drops: BTreeMap<&'static str, u64>,
    probes_sent: u64,
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

struct TransitTask {
    gateway: Arc<GatewayInfo>,
    transit: Transit,
    socket: UdpSocket,
    device: Device,
    tunnels: Vec<TunnelCtx>,
    clock: Clock,
    status: Arc<Mutex<TransitSnapshot>>,
    commands: mpsc::UnboundedReceiver<Command>,
}

/// What the control endpoint asks of a transit task.
#[derive(Debug)]
enum Command {
    Rekey(TunnelId),
}

/// What a transit task last published.
#[derive(Default)]
struct TransitSnapshot {
    tunnels: Vec<TunnelStatus>,
    drops: BTreeMap<String, u64>,
}

struct GatewayInfo {
    public_key: Key32,
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

/// Runs the gateway until `stop` completes (it must also flip `stopped` to true).
pub async fn run_until(
    config: GatewayConfig,
    stopped: watch::Receiver<bool>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let clock = Clock::new();
    let gateway = Arc::new(GatewayInfo {
        public_key: super::config::public_key_of(&config.private_key),
    });
    let mut slots = Vec::new();
    let mut tasks = Vec::new();
    // Tunnel name -> (its transit task's command queue, its id there).
    let mut by_name = BTreeMap::new();
    for (index, transit) in config.transits.iter().enumerate() {
        let socket =
            UdpSocket::bind(transit.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    transit: transit.name.clone(),
                    addr: transit.listen,
                    source,
                })?;
        let mut device = Device::new(config.private_key.0, Box::new(OsRng));
        let mut tunnels = Vec::new();
        for t in config.tunnels.iter().filter(|t| t.transit == index) {
            let mut peer = PeerConfig::new(t.peer_public_key.0);
            peer.preshared_key = t.preshared_key.map(|k| k.0);
            peer.persistent_keepalive = t.persistent_keepalive;
            let id = device
                .add_tunnel(peer, t.peer_endpoint, Box::new(OsRng))
                .map_err(|source| GatewayError::Tunnel {
                    tunnel: t.name.clone(),
                    source,
                })?;
            tunnels.push(new_ctx(id, t, &config, &gateway, transit));
        }
        let (command_tx, commands) = mpsc::unbounded_channel();
        for ctx in &tunnels {
            by_name.insert(ctx.config.name.clone(), (command_tx.clone(), ctx.id));
        }
        tracing::info!(transit = %transit.name, listen = %transit.listen, tunnels = tunnels.len(), "transit up");
        let status = Arc::new(Mutex::new(TransitSnapshot::default()));
        slots.push(Arc::clone(&status));
        let task = TransitTask {
            gateway: Arc::clone(&gateway),
            transit: transit.clone(),
            socket,
            device,
            tunnels,
            clock,
            status,
            commands,
        };
        tasks.push(tokio::spawn(task.run(stopped.clone())));
    }
    let (name, datacenter) = (config.name.clone(), config.datacenter.clone());
    let socket_path = config.control_socket.clone();
    let control = tokio::spawn(async move {
        control::serve(&socket_path, move |request| {
            if let Request::Rekey { tunnel } = request {
                return match by_name.get(&tunnel) {
                    Some((queue, id)) if queue.send(Command::Rekey(*id)).is_ok() => Response::Done,
                    Some(_) => Response::Error {
                        message: format!("tunnel {tunnel} is stopping"),
                    },
                    None => Response::Error {
                        message: format!("no tunnel named {tunnel:?}"),
                    },
                };
            }
            let mut tunnels = Vec::new();
            let mut drops = BTreeMap::new();
            for slot in &slots {
                // A poisoned slot only means a task panicked mid-copy; its last snapshot is
                // still the best answer.
                let guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                tunnels.extend(guard.tunnels.iter().cloned());
                for (reason, n) in &guard.drops {
                    *drops.entry(reason.clone()).or_insert(0) += n;
                }
            }
            Response::Status {
                gateway: name.clone(),
                datacenter: datacenter.clone(),
                tunnels,
                drops,
            }
        })
        .await
    });
    tracing::info!(gateway = %config.name, socket = %config.control_socket.display(), "gateway running");
    stop.await;
    for task in tasks {
        let _ = task.await;
    }
    control.abort();
    let _ = std::fs::remove_file(&config.control_socket);
    Ok(())
}

fn new_ctx(
    id: TunnelId,
    t: &Tunnel,
    config: &GatewayConfig,
    gateway: &GatewayInfo,
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
        gateway.public_key.to_hex(),
        t.peer_public_key.to_hex(),
        transit.name,
        t.peer_transit.as_deref().unwrap_or("")
    );
    TunnelCtx {
        id,
        config: t.clone(),
        addrs,
        // The configuration was validated, so this cannot fail; fall back to defaults anyway.
        prober: Prober::new(config.probe, now)
            .or_else(|_| Prober::new(Default::default(), now))
            .unwrap_or_else(|_| unreachable_prober(now)),
        reflector: Reflector::new(64),
        started_at: SystemTime::now(),
        uuid: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes()).to_string(),
        drops: BTreeMap::new(),
        probes_sent: 0,
        last: (now, 0, 0),
        rx_bps: 0,
        tx_bps: 0,
        state: TunnelState::Connecting,
        rekey_at: None,
    }
}

#[allow(clippy::expect_used)]
fn unreachable_prober(now: Instant) -> Prober {
    Prober::new(crate::probe::ProbeConfig::default(), now)
        .expect("the default probe configuration is valid")
}

impl TransitTask {
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
            if let Some(deadline) = self.device.next_deadline() {
                wake = wake.min(self.clock.mono(deadline));
            }
            for ctx in &self.tunnels {
                wake = wake.min(ctx.prober.next_wakeup());
                if let Some(at) = ctx.rekey_at {
                    wake = wake.min(at);
                }
            }
            let received = tokio::select! {
                _ = stopped.changed() => break,
                r = self.socket.recv_from(&mut rx) => Some(r),
                Some(command) = self.commands.recv() => {
                    self.on_command(command);
                    None
                }
                _ = tokio::time::sleep_until(wake.max(now).into()) => None,
            };
            match received {
                Some(Ok((n, src))) => self.on_datagram(&mut rx[..n], src, &mut tx).await,
                Some(Err(e)) => tracing::warn!(transit = %self.transit.name, error = %e, "receive"),
                None => {}
            }
        }
        tracing::info!(transit = %self.transit.name, "transit stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Rekey(id) => {
                // WireGuard sends at most one initiation per REKEY_TIMEOUT; one asked for
                // sooner would be dropped, so it waits until then.
                let now = Instant::now();
                let at = self
                    .device
                    .tunnel(id)
                    .and_then(|t| t.last_handshake())
                    .map(|t| {
                        self.clock.mono(t) + wg::timers::REKEY_TIMEOUT + Duration::from_millis(100)
                    })
                    .map_or(now, |earliest| earliest.max(now));
                tracing::info!(transit = %self.transit.name, tunnel = id.0, in_ms = at.saturating_duration_since(now).as_millis() as u64, "forced rekey");
                if let Some(ctx) = self.ctx(id) {
                    ctx.rekey_at = Some(at);
                }
            }
        }
    }

    fn ctx(&mut self, id: TunnelId) -> Option<&mut TunnelCtx> {
        self.tunnels.iter_mut().find(|c| c.id == id)
    }

    /// Sends one datagram. Takes `&mut self` so that no shared borrow of the (not `Sync`)
    /// device is held across the await.
    async fn send(&mut self, datagram: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(datagram, to).await {
            tracing::debug!(transit = %self.transit.name, %to, error = %e, "send");
        }
    }

    async fn on_datagram(&mut self, datagram: &mut [u8], src: SocketAddr, tx: &mut [u8]) {
        let now = Instant::now();
        let (id, result) = self
            .device
            .handle_datagram(self.clock.wg(now), src, datagram, tx);
        let action = match result {
            Ok(action) => action,
            Err(e) => {
                // Counted by the device or the tunnel; `gatewan status` shows the counters.
                tracing::trace!(transit = %self.transit.name, %src, error = %e, "datagram dropped");
                return;
            }
        };
        if let Some(id) = id.filter(|_| action.peer_authenticated()) {
            // The peer proved itself from `src`: follow it there (roaming, NAT rebinding).
            if self.device.endpoint(id) != Some(src) {
                tracing::info!(transit = %self.transit.name, tunnel = id.0, %src, "peer endpoint");
                self.device.set_endpoint(id, Some(src));
            }
        }
        match action {
            Action::SendResponse(n) | Action::SendCookieReply(n) => {
                if let Some(reply) = tx.get(..n) {
                    self.send(reply, src).await;
                }
            }
            Action::Deliver { offset, len } => {
                if let (Some(id), Some(packet)) = (id, datagram.get(offset..offset + len)) {
                    self.on_inner(id, packet, tx).await;
                }
            }
            Action::Accepted | Action::CookieStored => {}
        }
    }

    async fn on_inner(&mut self, id: TunnelId, packet: &[u8], tx: &mut [u8]) {
        let now = Instant::now();
        let Some(ctx) = self.ctx(id) else { return };
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
            Ok(Inner::Reply(len)) => self.encapsulate_and_send(id, tx, len).await,
            Ok(Inner::ProbeReply { seq, residence }) => {
                ctx.prober.on_reply(now, seq, residence);
            }
            Ok(Inner::IcmpProbeReply { seq16 }) => {
                ctx.prober.on_reply_seq16(now, seq16, None);
            }
            Ok(Inner::NotForUs) => ctx.count("inner_not_for_gateway"),
            Err(drop) => ctx.count(drop.name()),
        }
    }

    async fn encapsulate_and_send(&mut self, id: TunnelId, buf: &mut [u8], len: usize) {
        let now = self.clock.wg(Instant::now());
        match self.device.encapsulate(now, id, buf, len) {
            Ok(Encapsulated::Ready(n)) => {
                if let (Some(to), Some(datagram)) = (self.device.endpoint(id), buf.get(..n)) {
                    self.send(datagram, to).await;
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
            let mut due = Vec::new();
            if let Some(ctx) = self.tunnels.get_mut(i) {
                while let Some(seq) = ctx.prober.poll_probe(now) {
                    due.push(seq);
                }
                ctx.probes_sent += due.len() as u64;
            }
            for seq in due {
                let Some(ctx) = self.tunnels.get(i) else {
                    break;
                };
                let (id, addrs) = (ctx.id, ctx.addrs);
                let Some(body) = tx.get_mut(DATA_HEADER_LEN..) else {
                    break;
                };
                match inner::build_probe(&addrs, seq, NtpTimestamp::now(), body) {
                    Ok(Some(len)) => self.encapsulate_and_send(id, tx, len).await,
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
                let id = ctx.id;
                if let Some(tunnel) = self.device.tunnel_mut(id) {
                    tunnel.initiate_handshake(wg_now);
                }
            }
        }
        loop {
            match self.device.tick(wg_now, tx) {
                Ok(Some((id, n))) => match (self.device.endpoint(id), tx.get(..n)) {
                    (Some(to), Some(datagram)) => self.send(datagram, to).await,
                    // A tunnel that only answers has nowhere to send its own handshakes.
                    _ => {
                        if let Some(ctx) = self.ctx(id) {
                            ctx.count("no_endpoint");
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

    fn publish(&mut self, now: Instant) {
        let wg_now = self.clock.wg(now);
        let mut snapshot = Vec::with_capacity(self.tunnels.len());
        for i in 0..self.tunnels.len() {
            let Some(ctx) = self.tunnels.get(i) else {
                continue;
            };
            let Some(tunnel) = self.device.tunnel(ctx.id) else {
                continue;
            };
            let stats = tunnel.stats().clone();
            let wg_state = tunnel.state(wg_now);
            let endpoint = self.device.endpoint(ctx.id);
            let last_handshake = tunnel.last_handshake();
            let probe = ctx.prober.stats(now);
            let Some(ctx) = self.tunnels.get_mut(i) else {
                continue;
            };
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
                    sdwan_local_transit: self.transit.name.clone(),
                    sdwan_peer_transit: opt(c.peer_transit.clone()),
                },
                usage: status::format_usage(self.transit.capacity_bps, ctx.rx_bps, ctx.tx_bps),
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
                    public_endpoint: self.transit.public_endpoint.to_string(),
                    local_address_v4: opt(ctx.addrs.v4.map(|a| a.to_string())),
                    local_address_v6: opt(ctx.addrs.v6.map(|a| a.to_string())),
                    public_key: self.gateway.public_key.to_hex(),
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
                    drops,
                },
            });
        }
        let drops = wg::DropReason::ALL
            .iter()
            .map(|&r| (format!("{r:?}"), self.device.drops(r)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut slot = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = TransitSnapshot {
            tunnels: snapshot,
            drops,
        };
    }
}
