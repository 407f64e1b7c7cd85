//! The gateway's owner, sans-IO: the single writer of everything the workers do not finish.
//!
//! Per transit it keeps the WireGuard [`Device`] (handshakes, cookies, timers), per tunnel its
//! prober and STAMP reflector, the route tables' writing end and the next-hop book. Inputs:
//! the workers' parcels ([`Owner::handle_parcel`]: handshake messages, inner packets for the
//! gateway, packets waiting for a session, neighbours learned, datagrams to send through the
//! kernel), commands from the control endpoint and the mesh ([`Owner::handle_command`]),
//! the kernel's next-hop answers, and the time ([`Owner::handle_timeout`]); every input
//! carries `now`, nothing reads a clock. Outputs: datagrams ([`Owner::poll_transmit`]),
//! when to be called again ([`Owner::poll_timeout`]), the next-hop questions, the status
//! ([`Owner::status`]), and what it publishes to the workers by atomic swap (session tables,
//! tunnel map, route tables, next hops). `gateway::runtime` drives it from a tokio task and
//! does the sending; tests drive it in memory with simulated time.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gatewan_dataplane::engine::{
    Clock, Egress, Engine, EngineTunnel, Parcel, ParcelKind, PublishedStats, TunnelCounter,
    TunnelMap, WorkerCounter, WorkerStats,
};
use gatewan_dataplane::route::{self, RouteHandle, RouteTables, TunnelGroup};
use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_dataplane::wireguard::{
    self as wg, Action, Device, Encapsulated, PeerConfig, TunnelId, DATA_HEADER_LEN,
};
use rand_core::OsRng;

use super::config::{GatewayConfig, Key32, Transit, Tunnel};
use super::error::GatewayError;
use super::inner::{self, Inner, InnerAddrs, ProbeMethod};
use super::local_routes::{LocalRouteBook, LocalRoutes, LocalRoutesStatus};
use super::next_hops::NextHopBook;
use super::orders::{ControllerView, OrderBook, OrderStatus, TunnelLife};
use super::status::{self, Counters, EndpointInfo, Meta, ProbeStatus, TunnelState, TunnelStatus};
use crate::channel::Identity;
use crate::controller::inputs;
use crate::controller::orders::{GatewayOrder, Reply};
use crate::probe::ntp::NtpTimestamp;
use crate::probe::{Prober, Reflector};

/// How often the owner feeds the WireGuard timers with the workers' activity at the latest.
pub const ABSORB_PERIOD: Duration = Duration::from_millis(50);
/// The owner's transmit buffer: the largest datagram it builds.
const BUF_LEN: usize = 4096;
/// Datagrams queued for the adapter at most (more are dropped and counted).
const MAX_QUEUED: usize = 4096;

/// Where a tunnel comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `tunnels:` in gateway.yaml.
    Static,
    /// Planned from the mesh view (`gateway::planner`).
    Mesh,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Static => "static",
            Origin::Mesh => "mesh",
        }
    }
}

/// A tunnel the owner is told to keep: its identity (the same from both ends), where it
/// comes from, and its settings.
#[derive(Clone, Debug)]
pub struct TunnelOrder {
    pub id: String,
    pub origin: Origin,
    pub tunnel: Tunnel,
}

/// One tunnel's companions in the owner.
struct TunnelCtx {
    /// Which of the worker's transits carries it, and its id in that transit's device.
    transit: usize,
    id: TunnelId,
    config: Tunnel,
    addrs: InnerAddrs,
    prober: Prober,
    reflector: Reflector<IpAddr>,
    started_at: SystemTime,
    /// The tunnel's identity, the same from both ends.
    uuid: String,
    origin: Origin,
    /// The workers' counters of this route-table slot when the tunnel took it.
    base: Vec<u64>,
    /// Inner packets dropped or ignored on this tunnel, by counter name.
    drops: BTreeMap<&'static str, u64>,
    probes_sent: u64,
    last: (Instant, u64, u64),
    rx_bps: u64,
    tx_bps: u64,
    state: TunnelState,
    /// A forced rekey waiting for WireGuard's rate limit (one initiation per REKEY_TIMEOUT).
    rekey_at: Option<Instant>,
    /// Established and answering probes (what local repair goes by).
    alive: bool,
}

impl TunnelCtx {
    fn count(&mut self, name: &'static str) {
        *self.drops.entry(name).or_default() += 1;
    }
}

/// A transit and the WireGuard device of its tunnels.
struct TransitIo {
    transit: Transit,
    device: Device,
    /// What the published session table was built from.
    published: Option<u64>,
}

/// The owner's state machine (see the module's documentation).
pub struct Owner {
    public_key: Key32,
    transits: Vec<TransitIo>,
    /// Indexed by the route tables' tunnel ids (slots; `None` where free).
    tunnels: Vec<Option<TunnelCtx>>,
    engine: Arc<Engine>,
    /// The route tables' writing end (the workers hold readers).
    routes: RouteHandle,
    /// The fabric's local routes (the tunnel -> fabric direction): bgpctl's, else static.
    local: LocalRouteBook,
    /// The local prefixes changed since the adapter last asked (to publish in the mesh).
    prefixes_changed: bool,
    probe: crate::probe::ProbeConfig,
    workers: Vec<Arc<PublishedStats>>,
    clock: Clock,
    /// Destinations AF_XDP workers had no next hop for, what the kernel resolved them to,
    /// and when to look again.
    next_hops: NextHopBook,
    /// Whether datagrams may go out through the workers (AF_XDP) once their next hop is known.
    via_workers: bool,
    /// The time of the current input, monotonic and wall clock.
    now: Instant,
    wall: SystemTime,
    transmits: VecDeque<Transmit>,
    /// Buffers of sent transmits, reused.
    spare: Vec<Vec<u8>>,
    transmits_dropped: u64,
    tx: Vec<u8>,
    /// The controller's orders and local repair.
    orders: OrderBook,
    /// The groups last published, by candidate tunnels: rebuilt groups move as few flows
    /// as they can.
    groups: BTreeMap<Vec<TunnelId>, TunnelGroup>,
}

/// A datagram the owner made, for the adapter to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub egress: Egress,
    pub to: SocketAddr,
    /// Through the AF_XDP workers (`Handoff::send_back`), else through the kernel's socket.
    pub via_workers: bool,
    pub bytes: Vec<u8>,
}

/// What an owner is made of.
pub struct OwnerParts<'a> {
    pub config: &'a GatewayConfig,
    pub engine: Arc<Engine>,
    pub routes: RouteHandle,
    pub workers: Vec<Arc<PublishedStats>>,
    pub clock: Clock,
    pub via_workers: bool,
    pub now: Instant,
    pub wall: SystemTime,
    /// The order kept on disk, and when it was saved.
    pub restored_order: Option<(GatewayOrder, SystemTime)>,
}

/// What the control endpoint and the mesh ask of the owner.
#[derive(Debug)]
pub enum Command {
    /// Rekey the tunnel of this name.
    Rekey(String),
    /// Keep exactly these mesh tunnels (static ones are not touched).
    MeshTunnels(Vec<TunnelOrder>),
    /// The controller's order, from an authenticated peer. The reply carries the order to
    /// keep on disk when a new one was accepted.
    Order {
        order: Box<GatewayOrder>,
        from: Identity,
        reply: tokio::sync::oneshot::Sender<(Reply, Option<GatewayOrder>)>,
    },
    /// The controllers of a new mesh view.
    Controllers(ControllerView),
    /// The fabric's routes from a datacenter's bgpctl (authenticated by the channel).
    LocalRoutes {
        routes: Box<LocalRoutes>,
        from: Identity,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// The live bgpctls of our datacenter in a new mesh view.
    Bgpctls(std::collections::BTreeSet<String>),
}

/// What the owner last published.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub tunnels: Vec<TunnelStatus>,
    pub drops: BTreeMap<String, u64>,
    /// Datagrams each worker received.
    pub worker_rx_packets: Vec<u64>,
    /// The order in force and local repair.
    pub orders: OrderStatus,
    /// The local routes in force and where they come from.
    pub local_routes: LocalRoutesStatus,
    /// Their prefixes (the report's and the mesh's).
    pub local_prefixes: Vec<ipnet::IpNet>,
    /// Per tunnel, what the controller's report needs.
    pub report: Vec<ReportTunnel>,
}

/// One tunnel in the gateway's report: the controller's [`inputs::TunnelReport`] without
/// the gateway's own name, and its rates.
#[derive(Clone, Debug)]
pub struct ReportTunnel {
    pub id: String,
    pub transit: String,
    pub peer: String,
    pub peer_transit: String,
    pub datacenter: String,
    pub state: inputs::TunnelState,
    pub probe: inputs::ProbeWindow,
    pub rx_bps: u64,
    pub tx_bps: u64,
}

/// The route tables from the tunnels' `networks` (remote prefixes: one group per set of
/// tunnels sharing a prefix, weighted by the order book) and the fabric's local routes.
/// `previous` holds the groups last published and gets the new ones.
fn build_tables(
    tunnels: &[Option<TunnelCtx>],
    local_routes: &[(ipnet::IpNet, route::LocalRoute)],
    book: &OrderBook,
    previous: &mut BTreeMap<Vec<TunnelId>, TunnelGroup>,
) -> Result<RouteTables, GatewayError> {
    // The slot, which is also the tunnel's id in its WireGuard device.
    let mut candidates: BTreeMap<ipnet::IpNet, Vec<usize>> = BTreeMap::new();
    for (i, ctx) in tunnels.iter().enumerate() {
        if let Some(ctx) = ctx {
            for net in &ctx.config.networks {
                candidates.entry(*net).or_default().push(i);
            }
        }
    }
    let mut builder = RouteTables::builder();
    let mut groups = BTreeMap::new();
    let mut published = BTreeMap::new();
    for (net, slots) in candidates {
        let set: Vec<TunnelId> = slots
            .iter()
            .filter_map(|&i| tunnels.get(i)?.as_ref().map(|c| c.id))
            .collect();
        let group = match groups.get(&set) {
            Some(g) => *g,
            None => {
                let lives: Vec<TunnelLife<'_>> = slots
                    .iter()
                    .filter_map(|&i| tunnels.get(i)?.as_ref())
                    .map(TunnelCtx::life)
                    .collect();
                let dc = slots
                    .first()
                    .and_then(|&i| tunnels.get(i)?.as_ref())
                    .map_or("", |c| c.config.peer_datacenter.as_str());
                let members = book.members(dc, &lives);
                let built = match previous.get(&set) {
                    Some(old) => old.rebalanced(&members),
                    None => TunnelGroup::new(&members),
                }
                .map_err(|e| GatewayError::Routes(e.to_string()))?;
                published.insert(set.clone(), built.clone());
                let g = builder.add_group(built);
                groups.insert(set, g);
                g
            }
        };
        builder
            .add_remote(net, group)
            .map_err(|e| GatewayError::Routes(e.to_string()))?;
    }
    for (net, local) in local_routes {
        builder
            .add_local(*net, *local)
            .map_err(|e| GatewayError::Routes(e.to_string()))?;
    }
    *previous = published;
    Ok(builder.build())
}

/// The tunnel map the workers get: each slot's transit, WireGuard id and inner addresses.
fn tunnel_map(tunnels: &[Option<TunnelCtx>]) -> TunnelMap {
    TunnelMap::new(
        tunnels
            .iter()
            .map(|c| c.as_ref().map(TunnelCtx::engine_tunnel))
            .collect(),
    )
}

/// A static tunnel's identity: stable across restarts, from the two keys and transits.
fn static_id(public_key: &Key32, t: &Tunnel, transits: &[Transit]) -> String {
    let seed = format!(
        "{}/{}/{}/{}",
        public_key.to_hex(),
        t.peer_public_key.to_hex(),
        transits.get(t.transit).map_or("", |x| x.name.as_str()),
        t.peer_transit.as_deref().unwrap_or("")
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes()).to_string()
}

/// Adds the tunnel to its transit's WireGuard device and makes its companions; `base` is its
/// route-table slot's counters so far (a reused slot starts from zero).
fn open_tunnel(
    transits: &mut [TransitIo],
    slot: u16,
    order: TunnelOrder,
    probe: crate::probe::ProbeConfig,
    base: Vec<u64>,
    (now, wall): (Instant, SystemTime),
) -> Result<TunnelCtx, GatewayError> {
    let t = &order.tunnel;
    let Some(io) = transits.get_mut(t.transit) else {
        return Err(GatewayError::Tunnel {
            tunnel: t.name.clone(),
            source: wg::Error::UnknownTunnel,
        });
    };
    let mut peer = PeerConfig::new(t.peer_public_key.0);
    peer.preshared_key = t.preshared_key.map(|k| k.0);
    peer.persistent_keepalive = t.persistent_keepalive;
    let id = io
        .device
        .add_tunnel_at(TunnelId(slot), peer, t.peer_endpoint, Box::new(OsRng))
        .map_err(|source| GatewayError::Tunnel {
            tunnel: t.name.clone(),
            source,
        })?;
    let addrs = InnerAddrs {
        v4: t.address_v4.map(|n| n.addr()),
        v6: t.address_v6.map(|n| n.addr()),
        peer_v4: t.peer_address_v4,
        peer_v6: t.peer_address_v6,
        echo_port: t.echo_port,
        peer_echo_port: t.peer_echo_port,
        icmp_ident: 0x4757 ^ id.0,
    };
    Ok(TunnelCtx {
        transit: t.transit,
        id,
        addrs,
        // The configuration was validated, so this cannot fail; fall back to defaults anyway.
        prober: Prober::new(probe, now).unwrap_or_else(|_| default_prober(now)),
        reflector: Reflector::new(64),
        started_at: wall,
        uuid: order.id,
        origin: order.origin,
        base,
        config: order.tunnel,
        drops: BTreeMap::new(),
        probes_sent: 0,
        last: (now, 0, 0),
        rx_bps: 0,
        tx_bps: 0,
        state: TunnelState::Connecting,
        rekey_at: None,
        alive: false,
    })
}

/// Whether `b` can keep `a`'s WireGuard session: same transit, peer key, pre-shared key and
/// inner addresses.
fn same_session(a: &Tunnel, b: &Tunnel) -> bool {
    a.transit == b.transit
        && a.peer_public_key == b.peer_public_key
        && a.preshared_key == b.preshared_key
        && a.address_v4 == b.address_v4
        && a.address_v6 == b.address_v6
        && a.peer_address_v4 == b.peer_address_v4
        && a.peer_address_v6 == b.peer_address_v6
        && a.echo_port == b.echo_port
        && a.persistent_keepalive == b.persistent_keepalive
}

impl TunnelCtx {
    fn life(&self) -> TunnelLife<'_> {
        TunnelLife {
            slot: self.id,
            id: &self.uuid,
            alive: self.alive,
        }
    }

    fn engine_tunnel(&self) -> EngineTunnel {
        EngineTunnel {
            transit: self.transit,
            wg: self.id,
            local: [self.addrs.v4.map(IpAddr::V4), self.addrs.v6.map(IpAddr::V6)],
        }
    }
}

#[allow(clippy::expect_used)]
fn default_prober(now: Instant) -> Prober {
    Prober::new(crate::probe::ProbeConfig::default(), now)
        .expect("the default probe configuration is valid")
}

impl Owner {
    /// An owner with the configuration's transits and its static tunnels (in the first
    /// route-table slots, in configuration order), published to the workers.
    pub fn new(parts: OwnerParts<'_>) -> Result<Self, GatewayError> {
        let OwnerParts {
            config,
            engine,
            routes,
            workers,
            clock,
            via_workers,
            now,
            wall,
            restored_order,
        } = parts;
        let transits = config
            .transits
            .iter()
            .map(|t| TransitIo {
                transit: t.clone(),
                device: Device::new(config.private_key.0, Box::new(OsRng)),
                published: None,
            })
            .collect();
        let mut owner = Owner {
            public_key: super::config::public_key_of(&config.private_key),
            transits,
            tunnels: Vec::new(),
            engine,
            routes,
            local: LocalRouteBook::new(
                &config.datacenter,
                config
                    .fabric
                    .as_ref()
                    .map(|f| f.local_routes.clone())
                    .unwrap_or_default(),
                config.mesh.as_ref().map_or(4096, |m| m.max_prefixes),
            ),
            prefixes_changed: false,
            probe: config.probe,
            workers,
            clock,
            next_hops: NextHopBook::default(),
            via_workers,
            now,
            wall,
            transmits: VecDeque::new(),
            spare: Vec::new(),
            transmits_dropped: 0,
            tx: vec![0; BUF_LEN],
            orders: OrderBook::new(
                &config.name,
                config
                    .api
                    .as_ref()
                    .map_or(Duration::from_secs(30), |a| a.repair_hold),
            ),
            groups: BTreeMap::new(),
        };
        if let Some((order, saved_at)) = restored_order {
            let version = order.version;
            if owner.orders.restore(order, saved_at) {
                tracing::info!(version, "order restored from disk");
            } else {
                tracing::warn!("the order on disk is not for this gateway: ignored");
            }
        }
        for t in &config.tunnels {
            let order = TunnelOrder {
                id: static_id(&owner.public_key, t, &config.transits),
                origin: Origin::Static,
                tunnel: t.clone(),
            };
            owner.add_tunnel(order)?;
        }
        owner.publish_tables();
        Ok(owner)
    }

    /// A parcel a worker handed over.
    pub fn handle_parcel(&mut self, now: Instant, wall: SystemTime, parcel: &mut Parcel) {
        (self.now, self.wall) = (now, wall);
        let mut tx = std::mem::take(&mut self.tx);
        self.on_parcel(parcel, &mut tx);
        self.tx = tx;
    }

    /// A request of the control endpoint or the mesh.
    pub fn handle_command(&mut self, now: Instant, wall: SystemTime, command: Command) {
        (self.now, self.wall) = (now, wall);
        self.on_command(command);
    }

    /// Runs what is due at `now`: probes, forced rekeys, WireGuard timers (fed with what the
    /// workers did), and republishes sessions that changed.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        (self.now, self.wall) = (now, wall);
        let mut tx = std::mem::take(&mut self.tx);
        self.on_timers(now, &mut tx);
        self.tx = tx;
        self.publish_sessions();
        self.check_liveness(now);
    }

    /// Feeds the order book the tunnels' liveness; local repair republishes the route
    /// tables at once.
    fn check_liveness(&mut self, now: Instant) {
        let wg_now = self.clock.wg(now);
        for ctx in self.tunnels.iter_mut().flatten() {
            let established = self
                .transits
                .get(ctx.transit)
                .and_then(|io| io.device.tunnel(ctx.id))
                .is_some_and(|t| t.state(wg_now) == wg::TunnelState::Established);
            ctx.alive = established && ctx.prober.alive(now);
        }
        let lives: Vec<TunnelLife<'_>> =
            self.tunnels.iter().flatten().map(TunnelCtx::life).collect();
        if self.orders.handle_liveness(&lives, now) {
            self.publish_tables();
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Gives a sent transmit's buffer back for reuse.
    pub fn recycle(&mut self, transmit: Transmit) {
        if self.spare.len() < MAX_QUEUED {
            self.spare.push(transmit.bytes);
        }
    }

    /// When [`Owner::handle_timeout`] must run next (at the latest `now + ABSORB_PERIOD`, so
    /// the timers see the workers' activity).
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let mut wake = now + ABSORB_PERIOD;
        if let Some(at) = self.next_hops.resolve_at() {
            wake = wake.min(at);
        }
        for io in &self.transits {
            if let Some(deadline) = io.device.next_deadline() {
                wake = wake.min(self.clock.mono(deadline));
            }
        }
        if let Some(at) = self.orders.next_return() {
            wake = wake.min(at);
        }
        for ctx in self.tunnels.iter().flatten() {
            wake = wake.min(ctx.prober.next_wakeup());
            if let Some(at) = ctx.rekey_at {
                wake = wake.min(at);
            }
        }
        wake
    }

    /// Republishes each transit's session table if its sessions changed.
    fn publish_sessions(&mut self) {
        for (t, io) in self.transits.iter_mut().enumerate() {
            let fingerprint = io.device.sessions_fingerprint();
            if io.published != Some(fingerprint) {
                self.engine.publish_sessions(t, io.device.session_table());
                io.published = Some(fingerprint);
            }
        }
    }

    fn on_parcel(&mut self, parcel: &mut Parcel, tx: &mut [u8]) {
        let tunnel = parcel.tunnel as usize;
        match parcel.kind {
            ParcelKind::Handshake => {
                let (t, src) = (parcel.transit, parcel.src);
                self.on_handshake(t, parcel.bytes_mut(), src, tx);
            }
            ParcelKind::Local => self.on_local(tunnel, parcel.bytes(), tx),
            ParcelKind::Neighbour(egress) => {
                if let Ok(mac) = <[u8; 6]>::try_from(parcel.bytes()) {
                    self.next_hops.learn(egress, parcel.src.ip(), MacAddr(mac));
                    self.publish_next_hops();
                }
            }
            ParcelKind::Send(egress) => {
                self.next_hops.want(self.now, egress, parcel.src.ip());
                self.transmit(egress, parcel.src, false, parcel.bytes());
            }
            ParcelKind::Stage => {
                let packet = parcel.bytes();
                let Some(room) = tx.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + packet.len()) else {
                    return;
                };
                room.copy_from_slice(packet);
                self.encapsulate_and_send(tunnel, tx, packet.len());
            }
        }
        // A handshake may have made a session: publish it before the next parcel.
        self.publish_sessions();
    }

    /// The next hops workers asked about, when it is time to ask the kernel's tables (the
    /// adapter does, and answers with [`Owner::handle_next_hops`]).
    pub fn poll_next_hop_questions(&self, now: Instant) -> Option<Vec<(Egress, IpAddr)>> {
        self.next_hops
            .resolve_at()
            .is_some_and(|at| at <= now)
            .then(|| self.next_hops.wanted().collect())
    }

    /// What the kernel's tables said: (way out, destination, MAC).
    pub fn handle_next_hops(
        &mut self,
        now: Instant,
        answers: impl IntoIterator<Item = (Egress, IpAddr, MacAddr)>,
    ) {
        self.now = now;
        self.next_hops.resolved(now, answers);
        self.publish_next_hops();
    }

    fn publish_next_hops(&mut self) {
        if let Some(list) = self.next_hops.to_publish() {
            tracing::debug!(next_hops = list.len(), "next hops published to the workers");
            self.engine.publish_neighbours(list);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::MeshTunnels(orders) => self.set_mesh_tunnels(orders),
            Command::Controllers(view) => self.orders.handle_controllers(view),
            Command::Bgpctls(live) => {
                if self.local.handle_bgpctls(live) {
                    self.local_routes_changed();
                }
            }
            Command::LocalRoutes {
                routes,
                from,
                reply,
            } => {
                let answer = self.local.offer(*routes, &from).map(|changed| {
                    if changed {
                        self.local_routes_changed();
                    }
                });
                let _ = reply.send(answer);
            }
            Command::Order { order, from, reply } => {
                let before = self.orders.current().map(|o| (o.epoch.clone(), o.version));
                let answer = self.orders.offer(*order, &from, self.wall);
                let current = self.orders.current();
                let changed = current.map(|o| (o.epoch.clone(), o.version)) != before;
                let keep = changed.then(|| current.cloned()).flatten();
                if keep.is_some() {
                    if let Some(o) = current {
                        tracing::info!(version = o.version, term = o.epoch.term, controller = %o.epoch.controller, "order applied");
                    }
                    self.publish_tables();
                }
                let _ = reply.send((answer, keep));
            }
            Command::Rekey(name) => {
                let now = self.now;
                let Some(i) = self
                    .tunnels
                    .iter()
                    .position(|c| c.as_ref().is_some_and(|c| c.config.name == name))
                else {
                    return;
                };
                let Some(ctx) = self.ctx(i) else {
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
                if let Some(ctx) = self.ctx_mut(i) {
                    ctx.rekey_at = Some(at);
                }
            }
        }
    }

    fn ctx(&self, index: usize) -> Option<&TunnelCtx> {
        self.tunnels.get(index).and_then(Option::as_ref)
    }

    fn ctx_mut(&mut self, index: usize) -> Option<&mut TunnelCtx> {
        self.tunnels.get_mut(index).and_then(Option::as_mut)
    }

    /// Makes the mesh tunnels exactly `orders`: new ones are added, gone ones removed, a
    /// changed key, transit or inner address replaces the tunnel, and a changed endpoint,
    /// echo port or prefix list is applied in place (the session goes on). Then the workers
    /// get the new tunnel map and route tables.
    fn set_mesh_tunnels(&mut self, orders: Vec<TunnelOrder>) {
        let mut wanted: BTreeMap<String, TunnelOrder> = orders
            .into_iter()
            .filter(|o| o.origin == Origin::Mesh)
            .map(|o| (o.tunnel.name.clone(), o))
            .collect();
        let mut changed = false;
        for i in 0..self.tunnels.len() {
            let Some(ctx) = self.tunnels.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if ctx.origin != Origin::Mesh {
                continue;
            }
            let keep = match wanted.get(&ctx.config.name) {
                Some(order) if same_session(&ctx.config, &order.tunnel) && ctx.uuid == order.id => {
                    let t = &order.tunnel;
                    if ctx.config.networks != t.networks {
                        changed = true;
                    }
                    ctx.addrs.peer_echo_port = t.peer_echo_port;
                    let endpoint_moved = ctx.config.peer_endpoint != t.peer_endpoint;
                    ctx.config = t.clone();
                    let (transit, id) = (ctx.transit, ctx.id);
                    if endpoint_moved {
                        if let Some(io) = self.transits.get_mut(transit) {
                            io.device.set_endpoint(id, t.peer_endpoint);
                        }
                    }
                    true
                }
                _ => false,
            };
            if keep {
                wanted.remove(
                    &self
                        .ctx(i)
                        .map(|c| c.config.name.clone())
                        .unwrap_or_default(),
                );
            } else {
                self.close_tunnel(i);
                changed = true;
            }
        }
        for (_, order) in wanted {
            changed = true;
            let name = order.tunnel.name.clone();
            if let Err(e) = self.add_tunnel(order) {
                tracing::warn!(tunnel = %name, error = %e, "mesh tunnel not added");
            }
        }
        if changed {
            self.publish_tables();
        }
    }

    /// Adds a tunnel in the first free route-table slot.
    fn add_tunnel(&mut self, order: TunnelOrder) -> Result<usize, GatewayError> {
        let slot = self
            .tunnels
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.tunnels.len());
        // One number per tunnel: its route-table slot is also its id in its transit's
        // WireGuard device (the low 16 bits of its receiver indices).
        let Some(number) = u16::try_from(slot)
            .ok()
            .filter(|_| slot < self.engine.tunnel_capacity())
        else {
            return Err(GatewayError::Routes(format!(
                "no room for more than {} tunnels (mesh.max_tunnels)",
                self.engine.tunnel_capacity().min(usize::from(u16::MAX))
            )));
        };
        let base = self.worker_slot(slot);
        let (name, peer) = (order.tunnel.name.clone(), order.tunnel.peer.clone());
        let ctx = open_tunnel(
            &mut self.transits,
            number,
            order,
            self.probe,
            base,
            (self.now, self.wall),
        )?;
        tracing::info!(tunnel = %name, %peer, slot, "tunnel added");
        match self.tunnels.get_mut(slot) {
            Some(s) => *s = Some(ctx),
            None => self.tunnels.push(Some(ctx)),
        }
        Ok(slot)
    }

    /// Removes a tunnel: its WireGuard keys go, its slot is free for another.
    fn close_tunnel(&mut self, slot: usize) {
        let Some(ctx) = self.tunnels.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if let Some(io) = self.transits.get_mut(ctx.transit) {
            io.device.remove_tunnel(ctx.id);
        }
        tracing::info!(tunnel = %ctx.config.name, peer = %ctx.config.peer, "tunnel removed");
    }

    /// The workers' counters of one route-table slot so far (only that slot is read).
    fn worker_slot(&self, slot: usize) -> Vec<u64> {
        let mut total: Vec<u64> = Vec::new();
        for w in &self.workers {
            let values = w.tunnel_values(slot);
            if total.is_empty() {
                total = values;
            } else {
                for (t, v) in total.iter_mut().zip(values) {
                    *t = t.wrapping_add(v);
                }
            }
        }
        total
    }

    fn local_routes_changed(&mut self) {
        let st = self.local.status();
        tracing::info!(routes = st.routes, source = %st.source, from = ?st.from, "local routes changed");
        self.prefixes_changed = true;
        self.publish_tables();
    }

    /// The local prefixes, when they changed since the last call (for the mesh).
    pub fn poll_local_prefixes(&mut self) -> Option<Vec<ipnet::IpNet>> {
        std::mem::take(&mut self.prefixes_changed).then(|| self.local_prefixes())
    }

    fn local_prefixes(&self) -> Vec<ipnet::IpNet> {
        self.local.routes().into_iter().map(|(p, _)| p).collect()
    }

    /// Publishes the tunnel map, the sessions and the route tables built from the tunnels.
    fn publish_tables(&mut self) {
        self.engine.publish_tunnels(tunnel_map(&self.tunnels));
        self.publish_sessions();
        match build_tables(
            &self.tunnels,
            &self.local.routes(),
            &self.orders,
            &mut self.groups,
        ) {
            Ok(tables) => {
                let generation = self.routes.install(tables);
                self.routes.reclaim();
                tracing::debug!(generation, "route tables published");
            }
            Err(e) => tracing::warn!(error = %e, "route tables not rebuilt"),
        }
    }

    /// The tunnel index of (transit, device id).
    fn tunnel_index(&self, transit: usize, id: TunnelId) -> Option<usize> {
        self.engine
            .tunnels()
            .route_tunnel(transit, id)
            .map(|i| i as usize)
    }

    /// Queues a datagram the owner made for a transit peer: through the AF_XDP workers, the
    /// way data goes, when they know the next hop; else through the transit's socket.
    fn send_transit(&mut self, transit: usize, datagram: &[u8], to: SocketAddr) {
        let egress = Egress::Transit(transit);
        let via_workers = self.via_workers && self.next_hops.published(egress, to.ip());
        self.transmit(egress, to, via_workers, datagram);
    }

    fn transmit(&mut self, egress: Egress, to: SocketAddr, via_workers: bool, bytes: &[u8]) {
        if self.transmits.len() >= MAX_QUEUED {
            self.transmits_dropped += 1;
            return;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.transmits.push_back(Transmit {
            egress,
            to,
            via_workers,
            bytes: buf,
        });
    }

    /// A WireGuard message other than data, handed over by a worker.
    fn on_handshake(&mut self, t: usize, datagram: &mut [u8], src: SocketAddr, tx: &mut [u8]) {
        let now = self.clock.wg(self.now);
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
                // The peer sends data as soon as it has our response: the workers must know
                // the new session before the response leaves, or they drop that data.
                self.publish_sessions();
                if let Some(reply) = tx.get(..n) {
                    self.send_transit(t, reply, src);
                }
            }
            // Data never comes this way (the workers open it).
            Action::Deliver { .. } | Action::Accepted | Action::CookieStored => {}
        }
    }

    /// A decrypted inner packet for the gateway itself, from tunnel `index`.
    fn on_local(&mut self, index: usize, packet: &[u8], tx: &mut [u8]) {
        let now = self.now;
        let wall = NtpTimestamp::from_system_time(self.wall);
        let Some(ctx) = self.ctx_mut(index) else {
            return;
        };
        let Some(body) = tx.get_mut(DATA_HEADER_LEN..) else {
            return;
        };
        match inner::handle(&ctx.addrs, &mut ctx.reflector, packet, wall, body) {
            Ok(Inner::Reply(len)) => self.encapsulate_and_send(index, tx, len),
            Ok(Inner::ProbeReply { seq, residence }) => {
                ctx.prober.on_reply(now, seq, residence);
            }
            Ok(Inner::IcmpProbeReply { seq16 }) => {
                ctx.prober.on_reply_seq16(now, seq16, None);
            }
            // The workers only hand over packets addressed to the gateway.
            Ok(Inner::NotForUs) => ctx.count("not_for_us"),
            Err(drop) => ctx.count(drop.name()),
        }
    }

    fn encapsulate_and_send(&mut self, index: usize, buf: &mut [u8], len: usize) {
        let now = self.clock.wg(self.now);
        let Some(ctx) = self.ctx(index) else {
            return;
        };
        let (t, id) = (ctx.transit, ctx.id);
        let Some(io) = self.transits.get_mut(t) else {
            return;
        };
        match io.device.encapsulate(now, id, buf, len) {
            Ok(Encapsulated::Ready(n)) => {
                if let (Some(to), Some(datagram)) = (io.device.endpoint(id), buf.get(..n)) {
                    self.send_transit(t, datagram, to);
                }
            }
            // Sent by `tick` once the handshake completes.
            Ok(Encapsulated::Staged) => {}
            Err(e) => tracing::trace!(tunnel = id.0, error = %e, "encapsulate"),
        }
    }

    fn on_timers(&mut self, now: Instant, tx: &mut [u8]) {
        // Probes are ordinary traffic: before a session exists they are staged and start the
        // handshake, as any packet would.
        for i in 0..self.tunnels.len() {
            // One due probe at a time: nothing is collected, nothing allocated.
            while let Some((seq, addrs)) = self.ctx_mut(i).and_then(|ctx| {
                let seq = ctx.prober.poll_probe(now)?;
                ctx.probes_sent += 1;
                Some((seq, ctx.addrs))
            }) {
                let Some(body) = tx.get_mut(DATA_HEADER_LEN..) else {
                    break;
                };
                let wall = NtpTimestamp::from_system_time(self.wall);
                match inner::build_probe(&addrs, seq, wall, body) {
                    Ok(Some(len)) => self.encapsulate_and_send(i, tx, len),
                    Ok(None) => {}
                    Err(drop) => {
                        if let Some(ctx) = self.ctx_mut(i) {
                            ctx.count(drop.name());
                        }
                    }
                }
            }
        }
        let wg_now = self.clock.wg(now);
        for i in 0..self.tunnels.len() {
            let Some(ctx) = self.ctx_mut(i) else {
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
            // `tick` also feeds the timers with what the workers did since the last call.
            while let Some(io) = self.transits.get_mut(t) {
                match io.device.tick(wg_now, tx) {
                    Ok(Some((id, n))) => match (io.device.endpoint(id), tx.get(..n)) {
                        (Some(to), Some(datagram)) => self.send_transit(t, datagram, to),
                        // A tunnel that only answers has nowhere to send its own handshakes.
                        _ => {
                            if let Some(index) = self.tunnel_index(t, id) {
                                if let Some(ctx) = self.ctx_mut(index) {
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

    /// The order book's status with the groups the route tables carry.
    fn in_force(&self) -> OrderStatus {
        let mut status = self.orders.status(self.wall);
        for group in self.groups.values() {
            let mut dc = None;
            let mut weights = Vec::new();
            for &(id, weight) in group.members() {
                let Some(ctx) = self.ctx(usize::from(id.0)) else {
                    continue;
                };
                dc.get_or_insert_with(|| ctx.config.peer_datacenter.clone());
                weights.push(crate::controller::orders::TunnelWeight {
                    tunnel: ctx.uuid.clone(),
                    weight,
                });
            }
            if let Some(dc) = dc {
                weights.sort();
                status.in_force.entry(dc).or_default().extend(weights);
            }
        }
        status
    }

    /// The workers' counters, summed.
    fn worker_totals(&self) -> WorkerStats {
        let mut total = WorkerStats::new(self.engine.tunnel_capacity());
        for w in &self.workers {
            total.merge(&w.snapshot());
        }
        for (i, ctx) in self.tunnels.iter().enumerate() {
            if let Some(ctx) = ctx {
                total.subtract_tunnel(i, &ctx.base);
            }
        }
        total
    }

    /// What `gatewan status` shows now (rates since the last call).
    pub fn status(&mut self, now: Instant) -> Snapshot {
        self.now = now;
        let wg_now = self.clock.wg(now);
        let workers = self.worker_totals();
        let worker_rx_packets = self
            .workers
            .iter()
            .map(|w| w.snapshot().get(WorkerCounter::RxPackets))
            .collect();
        let mut snapshot = Vec::with_capacity(self.tunnels.len());
        let mut report = Vec::with_capacity(self.tunnels.len());
        for (index, ctx) in self.tunnels.iter_mut().enumerate() {
            let Some(ctx) = ctx else {
                continue;
            };
            let Some(io) = self.transits.get(ctx.transit) else {
                continue;
            };
            let Some(tunnel) = io.device.tunnel(ctx.id) else {
                continue;
            };
            let stats = tunnel.stats();
            // The owner's own traffic (handshake-time staging, probes, echo replies) and the
            // workers' forwarding.
            let w = |c| workers.get_tunnel(index, c);
            let rx_packets = stats.rx_packets + w(TunnelCounter::RxPackets);
            let rx_bytes = stats.rx_bytes + w(TunnelCounter::RxBytes);
            let tx_packets = stats.tx_packets + w(TunnelCounter::TxPackets);
            let tx_bytes = stats.tx_bytes + w(TunnelCounter::TxBytes);
            let wg_state = tunnel.state(wg_now);
            let endpoint = io.device.endpoint(ctx.id);
            let last_handshake = tunnel.last_handshake();
            let probe = ctx.prober.stats(now);
            let elapsed = now.saturating_duration_since(ctx.last.0).as_secs_f64();
            if elapsed > 0.0 {
                ctx.rx_bps = ((rx_bytes.saturating_sub(ctx.last.1)) as f64 * 8.0 / elapsed) as u64;
                ctx.tx_bps = ((tx_bytes.saturating_sub(ctx.last.2)) as f64 * 8.0 / elapsed) as u64;
            }
            ctx.last = (now, rx_bytes, tx_bytes);
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
                .map(|(r, n)| (r.name().to_owned(), n))
                .collect();
            for (reason, n) in workers.tunnel_drops(index).nonzero() {
                *drops.entry(reason.name().to_owned()).or_default() += n;
            }
            drops.extend(ctx.drops.iter().map(|(k, v)| ((*k).to_owned(), *v)));
            let (source_addr, target_endpoint) = ctx.addrs.probe_endpoints();
            let c = &ctx.config;
            let opt = |a: Option<String>| a.unwrap_or_else(|| "-".into());
            report.push(report_tunnel(ctx, &io.transit.name, state, &probe));
            snapshot.push(TunnelStatus {
                id: ctx.uuid.clone(),
                origin: ctx.origin.as_str().to_owned(),
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
                    rx_bytes,
                    tx_bytes,
                    rx_packets,
                    tx_packets,
                    rx_bps: ctx.rx_bps,
                    tx_bps: ctx.tx_bps,
                    handshakes_sent: stats.initiations_sent,
                    handshakes_completed: stats.handshakes_completed,
                    probes_sent: ctx.probes_sent,
                    probes_lost: probe.lost_total,
                    seconds_since_handshake: last_handshake
                        .map(|t| self.clock.mono(t))
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                    forwarded_to_fabric: w(TunnelCounter::ToFabric),
                    drops,
                },
            });
        }
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        for io in &self.transits {
            for &reason in wg::DropReason::ALL.iter() {
                let n = io.device.drops(reason);
                if n > 0 {
                    *drops.entry(reason.name().to_owned()).or_default() += n;
                }
            }
        }
        for (reason, n) in workers.drops().nonzero() {
            *drops.entry(reason.name().to_owned()).or_default() += n;
        }
        drops.insert(
            "forwarded_from_fabric".into(),
            workers.get(WorkerCounter::FromFabric),
        );
        drops.insert(
            "icmp_too_big_sent".into(),
            workers.get(WorkerCounter::TooBigSent),
        );
        for (name, c) in [
            ("rx_batches", WorkerCounter::RxBatches),
            ("rx_datagrams", WorkerCounter::RxPackets),
            ("handed_to_owner", WorkerCounter::HandedToOwner),
            ("owner_queue_full", WorkerCounter::OwnerQueueFull),
            ("tx_failed", WorkerCounter::TxFailed),
            ("xsk_rx_dropped", WorkerCounter::XskRxDropped),
            ("owner_sent_by_workers", WorkerCounter::OwnerSent),
        ] {
            let n = workers.get(c);
            if n > 0 {
                drops.insert(name.into(), n);
            }
        }
        if self.next_hops.refused > 0 {
            drops.insert("next_hops_refused".into(), self.next_hops.refused);
        }
        if self.transmits_dropped > 0 {
            drops.insert("owner_transmit_queue_full".into(), self.transmits_dropped);
        }
        Snapshot {
            tunnels: snapshot,
            drops,
            worker_rx_packets,
            orders: self.in_force(),
            local_routes: self.local.status(),
            local_prefixes: self.local_prefixes(),
            report,
        }
    }
}

/// A tunnel's line in the report: WireGuard's state and the probe window as numbers.
fn report_tunnel(
    ctx: &TunnelCtx,
    transit: &str,
    state: TunnelState,
    probe: &crate::probe::ProbeStats,
) -> ReportTunnel {
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    ReportTunnel {
        id: ctx.uuid.clone(),
        transit: transit.to_owned(),
        peer: ctx.config.peer.clone(),
        peer_transit: ctx.config.peer_transit.clone().unwrap_or_default(),
        datacenter: ctx.config.peer_datacenter.clone(),
        state: match state {
            TunnelState::Connecting => inputs::TunnelState::Handshaking,
            TunnelState::Expired => inputs::TunnelState::Down,
            // The probes tell an unreachable tunnel apart; WireGuard's session is up.
            TunnelState::Established | TunnelState::Unreachable => inputs::TunnelState::Established,
        },
        probe: inputs::ProbeWindow {
            measurements: u32::try_from(probe.measurements).unwrap_or(u32::MAX),
            loss_pct: probe.loss * 100.0,
            latency_ms: ms(probe.latency_median),
            latency_p95_ms: ms(probe.latency_p95),
            jitter_ms: ms(probe.jitter),
            reorder_pct: probe.reorder * 100.0,
            lost_in_a_row: probe.lost_in_a_row,
        },
        rx_bps: ctx.rx_bps,
        tx_bps: ctx.tx_bps,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use gatewan_dataplane::engine::{self, Handoff, Verdict, HEADROOM, TAILROOM};
    use gatewan_dataplane::route::FlowHasher;

    const KEY_A: &str = "YNqHwpcAmVj0lVzPOkkAAP1hmgYPEtTy0aLaGJD8PW4=";
    const KEY_B: &str = "kBbdsOAbrgSWJPf5HHXRS+w4IRtsTEL3lFZK7tVUgX8=";

    fn public(private: &str) -> String {
        super::super::config::public_key_of(&Key32::from_base64(private).unwrap()).to_base64()
    }

    /// One gateway: its owner and a worker on the same engine (the workers' side of the
    /// handoff), in memory.
    struct Side {
        owner: Owner,
        worker: engine::Worker,
        engine: Arc<Engine>,
        addr: SocketAddr,
    }

    fn side(name: &str, key: &str, peer_key: &str, me: u8, now: Instant) -> Side {
        let peer = 3 - me;
        let yaml = format!(
            "name: {name}\ndatacenter: dc-{name}\nprivate_key: {key}\n\
             probe: {{interval: 100ms, window: 20, timeout: 1s}}\n\
             transits:\n  - {{name: lumen, listen: \"192.0.2.{me}:51820\"}}\n\
             tunnels:\n  - name: t0\n    transit: lumen\n    peer: gw{peer}\n    peer_datacenter: dc\n\
             \x20   peer_public_key: {}\n    peer_endpoint: \"192.0.2.{peer}:51820\"\n\
             \x20   address_v4: 10.255.0.{}/31\n    peer_address_v4: 10.255.0.{}\n\
             \x20   echo_port: 7054\n    peer_echo_port: 7054\n",
            public(peer_key),
            me - 1,
            peer - 1,
        );
        let config = GatewayConfig::parse(&yaml, std::path::Path::new("gw.yaml")).unwrap();
        let engine = Arc::new(Engine::with_capacity(
            None,
            Vec::new(),
            8,
            1,
            FlowHasher::new(1),
            Arc::new(Handoff::new(64)),
        ));
        let routes = RouteHandle::new(RouteTables::empty());
        let worker = engine::Worker::new(Arc::clone(&engine), routes.reader());
        let owner = Owner::new(OwnerParts {
            restored_order: None,
            config: &config,
            engine: Arc::clone(&engine),
            routes,
            workers: Vec::new(),
            clock: Clock::new(),
            via_workers: false,
            now,
            wall: SystemTime::now(),
        })
        .unwrap();
        Side {
            owner,
            worker,
            engine,
            addr: format!("192.0.2.{me}:51820").parse().unwrap(),
        }
    }

    /// Delivers what `from` queued to `to` the way it arrives: through `to`'s worker (which
    /// opens data and hands the rest to the owner), then `to`'s owner takes the parcels.
    fn deliver(from: &mut Side, to: &mut Side, now: Instant) -> usize {
        let mut n = 0;
        let wall = SystemTime::now();
        while let Some(t) = from.owner.poll_transmit() {
            assert_eq!(t.to, to.addr);
            let mut buf = vec![0u8; HEADROOM + t.bytes.len() + TAILROOM];
            buf[HEADROOM..HEADROOM + t.bytes.len()].copy_from_slice(&t.bytes);
            let clock_now = to.owner.clock.wg(now);
            let verdict = to.worker.from_transit(
                clock_now,
                0,
                from.addr,
                &mut buf,
                HEADROOM..HEADROOM + t.bytes.len(),
            );
            assert!(!matches!(verdict, Verdict::Dropped(_)), "{verdict:?}");
            from.owner.recycle(t);
            while let Some(mut parcel) = to.engine.handoff().recv() {
                to.owner.handle_parcel(now, wall, &mut parcel);
                to.engine.handoff().recycle(parcel);
            }
            n += 1;
        }
        n
    }

    fn run(a: &mut Side, b: &mut Side, start: Instant, for_: Duration) -> Instant {
        let mut now = start;
        while now < start + for_ {
            a.owner.handle_timeout(now, SystemTime::now());
            b.owner.handle_timeout(now, SystemTime::now());
            deliver(a, b, now);
            deliver(b, a, now);
            now += Duration::from_millis(10);
        }
        now
    }

    #[test]
    fn two_owners_handshake_and_probe_each_other_in_simulated_time() {
        let t0 = Instant::now();
        let mut a = side("a", KEY_A, KEY_B, 1, t0);
        let mut b = side("b", KEY_B, KEY_A, 2, t0);
        assert!(a.owner.poll_timeout(t0) <= t0 + ABSORB_PERIOD);
        let now = run(&mut a, &mut b, t0, Duration::from_secs(3));
        for side in [&mut a, &mut b] {
            let status = side.owner.status(now);
            let t = &status.tunnels[0];
            assert_eq!(t.state, TunnelState::Established, "{t:?}");
            assert_eq!(t.origin, "static");
            assert!(t.probe.measurements >= 10, "{:?}", t.probe);
            assert_eq!(t.counters.probes_lost, 0, "{:?}", t.counters);
            assert_eq!(t.counters.handshakes_completed, 1);
        }
        assert_eq!(a.engine.tunnels().iter().count(), 1);
    }

    fn mesh_order(static_of: &Owner, name: &str, endpoint: &str, peer_key: &str) -> TunnelOrder {
        let ctx = static_of.ctx(0).unwrap();
        let mut tunnel = ctx.config.clone();
        tunnel.name = name.into();
        tunnel.peer_endpoint = Some(endpoint.parse().unwrap());
        tunnel.peer_public_key = Key32::from_base64(&public(peer_key)).unwrap();
        tunnel.address_v4 = Some("10.255.1.0/31".parse().unwrap());
        tunnel.peer_address_v4 = Some("10.255.1.1".parse().unwrap());
        tunnel.networks = vec!["10.20.0.0/16".parse().unwrap()];
        TunnelOrder {
            id: format!("id-{name}"),
            origin: Origin::Mesh,
            tunnel,
        }
    }

    #[test]
    fn mesh_tunnels_are_added_changed_in_place_replaced_and_removed_at_run_time() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = side("a", KEY_A, KEY_B, 1, t0);
        let order = mesh_order(&a.owner, "sdwan64", "192.0.2.2:51821", KEY_B);
        a.owner
            .handle_command(t0, wall, Command::MeshTunnels(vec![order.clone()]));
        let map = a.engine.tunnels();
        assert_eq!(map.iter().count(), 2, "the static tunnel and the mesh one");
        let slot = map.iter().find(|(i, _)| *i != 0).map(|(i, _)| i).unwrap();
        let wg_id = map.get(slot).unwrap().wg;
        assert_eq!(
            usize::from(wg_id.0),
            slot,
            "one number: route slot = WireGuard id"
        );
        let status = a.owner.status(t0);
        let mesh = status
            .tunnels
            .iter()
            .find(|t| t.interface == "sdwan64")
            .unwrap();
        assert_eq!(
            (mesh.origin.as_str(), mesh.id.as_str()),
            ("mesh", "id-sdwan64")
        );
        assert_eq!(mesh.networks, "10.20.0.0/16");

        // A new endpoint and prefix list: the same tunnel, slot and WireGuard id.
        let mut moved = order.clone();
        moved.tunnel.peer_endpoint = Some("192.0.2.2:51999".parse().unwrap());
        moved.tunnel.networks = vec!["10.21.0.0/16".parse().unwrap()];
        a.owner
            .handle_command(t0, wall, Command::MeshTunnels(vec![moved]));
        let map = a.engine.tunnels();
        assert_eq!(map.get(slot).map(|t| t.wg), Some(wg_id));
        let io = &a.owner.transits[0];
        assert_eq!(
            io.device.endpoint(wg_id),
            Some("192.0.2.2:51999".parse().unwrap())
        );
        let status = a.owner.status(t0);
        let mesh = status
            .tunnels
            .iter()
            .find(|t| t.interface == "sdwan64")
            .unwrap();
        assert_eq!(mesh.networks, "10.21.0.0/16");

        // A new public key replaces the tunnel.
        let replaced = mesh_order(&a.owner, "sdwan64", "192.0.2.2:51999", KEY_A);
        a.owner
            .handle_command(t0, wall, Command::MeshTunnels(vec![replaced]));
        let io = &a.owner.transits[0];
        let ids: Vec<_> = io.device.ids().collect();
        assert_eq!(ids.len(), 2);
        let map = a.engine.tunnels();
        let (_, now_tunnel) = map.iter().find(|(i, _)| *i != 0).unwrap();
        assert_eq!(
            io.device
                .tunnel(now_tunnel.wg)
                .map(|t| t.config().public_key),
            Some(Key32::from_base64(&public(KEY_A)).unwrap().0)
        );

        // Gone from the orders: removed; the static tunnel stays.
        a.owner
            .handle_command(t0, wall, Command::MeshTunnels(Vec::new()));
        assert_eq!(a.engine.tunnels().iter().count(), 1);
        assert_eq!(a.owner.transits[0].device.ids().count(), 1);
        assert_eq!(a.owner.status(t0).tunnels.len(), 1);
    }
}
