//! The forwarding engine: what every worker does to a packet, whichever backend (UDP sockets
//! or AF_XDP) brought it.
//!
//! The [`Engine`] is shared by all workers and built once by the gateway: the fabric settings,
//! which WireGuard tunnel each route-table tunnel is, the route tables (published RCU-style,
//! see [`crate::route::RouteHandle`]) and, per transit, the device's [`SessionTable`]
//! (republished by the owner whenever sessions change). Each worker holds a [`Worker`]: its
//! own cached readers and counters, so a packet costs no lock, no allocation and no system
//! call. Packets are rewritten in place inside the caller's buffer, which must have
//! [`HEADROOM`] bytes free in front of the received datagram and [`TAILROOM`] after it.
//!
//! * fabric -> transit: [`Worker::from_fabric`] decapsulates and routes
//!   ([`pipeline::from_fabric`]), then seals the inner packet where it lies: the WireGuard
//!   header goes over the VXLAN and Ethernet headers it replaces.
//! * transit -> fabric: [`Worker::from_transit`] opens the data message in place, then either
//!   hands the inner packet to the owner (it is addressed to the gateway) or writes VXLAN and
//!   Ethernet headers over the WireGuard header ([`pipeline::to_fabric`]).
//!
//! Handshake messages and packets that found no session go to the owner through the
//! [`Handoff`] queue.

pub mod clock;
pub mod handoff;
pub mod stats;

use core::net::{IpAddr, SocketAddr};
use core::ops::Range;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use crate::drop::DropReason;
use crate::pipeline::{self, Fabric, FABRIC_HEADROOM};
use crate::route::{FlowHasher, RouteReader, TunnelId as RouteTunnel};
use crate::wire::ethernet::MacAddr;
use crate::wire::{ipv4, ipv6};
use crate::wireguard::{
    self as wg,
    messages::{self, MessageType},
    SessionTable, DATA_HEADER_LEN,
};
pub use clock::Clock;
pub use handoff::{Doorbell, Handoff, Parcel, ParcelKind, PARCEL_LEN};
pub use stats::{PublishedStats, TunnelCounter, WorkerCounter, WorkerStats};

/// Bytes a receive buffer must keep free before the datagram: WireGuard -> VXLAN grows the
/// packet by 6 bytes, and the AF_XDP backend prepends outer Ethernet, IP and UDP headers.
pub const HEADROOM: usize = 128;
/// Bytes a receive buffer must keep free after the datagram: sealing pads the inner packet
/// to 16 bytes and appends a 16-byte tag.
pub const TAILROOM: usize = 64;

/// The cores this process may run on, for pinning one worker to each.
pub fn usable_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .filter(|ids: &Vec<usize>| !ids.is_empty())
        .unwrap_or_else(|| vec![0])
}

/// A tunnel as the workers know it; its slot in the [`TunnelMap`] is its id in the route
/// tables (and in the workers' per-tunnel counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineTunnel {
    /// Index of the transit (and of its session table) that carries it.
    pub transit: usize,
    /// Its id in that transit's WireGuard device.
    pub wg: wg::TunnelId,
    /// The gateway's own inner addresses on this tunnel: packets to them go to the owner.
    pub local: [Option<IpAddr>; 2],
}

/// Every tunnel the workers know, by route-table id (a slot; `None` where free), and the
/// reverse map from (transit, WireGuard tunnel) to that id. The owner builds a new map when
/// tunnels come and go and publishes it whole; workers load it per packet from their cache
/// (one atomic read, no lock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelMap {
    slots: Vec<Option<EngineTunnel>>,
    /// [transit][WireGuard tunnel id] -> slot.
    by_wg: Vec<Vec<Option<u32>>>,
}

impl TunnelMap {
    /// A map of `slots` (index = route-table id).
    pub fn new(slots: Vec<Option<EngineTunnel>>) -> Self {
        let mut by_wg: Vec<Vec<Option<u32>>> = Vec::new();
        for (i, t) in slots.iter().enumerate() {
            let (Some(t), Ok(i)) = (t, u32::try_from(i)) else {
                continue;
            };
            if by_wg.len() <= t.transit {
                by_wg.resize(t.transit + 1, Vec::new());
            }
            if let Some(map) = by_wg.get_mut(t.transit) {
                let slot = usize::from(t.wg.0);
                if map.len() <= slot {
                    map.resize(slot + 1, None);
                }
                if let Some(s) = map.get_mut(slot) {
                    *s = Some(i);
                }
            }
        }
        Self { slots, by_wg }
    }

    /// The tunnel in route-table slot `index`.
    #[inline]
    pub fn get(&self, index: usize) -> Option<EngineTunnel> {
        self.slots.get(index).copied().flatten()
    }

    /// The route tunnel carried by (transit, WireGuard tunnel).
    #[inline]
    pub fn route_tunnel(&self, transit: usize, wg: wg::TunnelId) -> Option<u32> {
        self.by_wg
            .get(transit)
            .and_then(|m| m.get(usize::from(wg.0)))
            .copied()
            .flatten()
    }

    /// One past the highest slot (used or free): the per-tunnel counters workers publish.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The tunnels in use, with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, EngineTunnel)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (i, t)))
    }
}

/// What to do with a packet after a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[range]` as a UDP payload from `transit`'s address to `to`.
    Transit {
        transit: usize,
        to: SocketAddr,
        range: Range<usize>,
    },
    /// Send `buf[range]` as a UDP payload from our VTEP to `to` (a leaf).
    Fabric { to: SocketAddr, range: Range<usize> },
    /// Finished here: a keepalive, or handed to the owner.
    Consumed,
    /// Dropped and counted.
    Dropped(DropReason),
}

/// State shared by every worker.
pub struct Engine {
    fabric: Option<Fabric>,
    /// Our VTEP address: the source of ICMP errors sent into the fabric.
    vtep: Option<IpAddr>,
    tunnels: Arc<ArcSwap<TunnelMap>>,
    /// Route-table slots the workers count for: a map may use no more.
    tunnel_capacity: usize,
    sessions: Vec<Arc<ArcSwap<SessionTable>>>,
    hasher: FlowHasher,
    handoff: Arc<Handoff>,
    /// Next hops the owner resolved through the kernel's tables (for backends that write
    /// Ethernet headers), by way out and destination.
    neighbours: Arc<ArcSwap<NextHops>>,
}

/// Which side a datagram leaves by: the same destination can have a different next hop on
/// each (one uplink, one router, per transit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Egress {
    Fabric,
    Transit(usize),
}

/// (way out, destination) -> next-hop MAC, as the owner resolved them.
pub type NextHops = Vec<(Egress, IpAddr, MacAddr)>;

impl Engine {
    /// `transits` session tables in transit order; `tunnels` in route-table order, and room
    /// for that many tunnels.
    pub fn new(
        fabric: Option<(Fabric, IpAddr)>,
        tunnels: Vec<EngineTunnel>,
        transits: usize,
        hasher: FlowHasher,
        handoff: Arc<Handoff>,
    ) -> Self {
        let capacity = tunnels.len();
        Self::with_capacity(fabric, tunnels, capacity, transits, hasher, handoff)
    }

    /// As [`Engine::new`], with room for `capacity` tunnels published later
    /// ([`Engine::publish_tunnels`]).
    pub fn with_capacity(
        fabric: Option<(Fabric, IpAddr)>,
        tunnels: Vec<EngineTunnel>,
        capacity: usize,
        transits: usize,
        hasher: FlowHasher,
        handoff: Arc<Handoff>,
    ) -> Self {
        let map = TunnelMap::new(tunnels.into_iter().map(Some).collect());
        Self {
            fabric: fabric.map(|(f, _)| f),
            vtep: fabric.map(|(_, v)| v),
            tunnel_capacity: capacity.max(map.slots()),
            tunnels: Arc::new(ArcSwap::from_pointee(map)),
            sessions: (0..transits)
                .map(|_| Arc::new(ArcSwap::from_pointee(SessionTable::default())))
                .collect(),
            hasher,
            handoff,
            neighbours: Arc::new(ArcSwap::from_pointee(Vec::new())),
        }
    }

    /// Publishes the next hops the owner resolved (destination -> MAC).
    pub fn publish_neighbours(&self, neighbours: NextHops) {
        self.neighbours.store(Arc::new(neighbours));
    }

    /// The published next hops.
    pub fn neighbours(&self) -> Arc<NextHops> {
        self.neighbours.load_full()
    }

    /// Publishes a transit's new session table (the owner calls this when it changed).
    pub fn publish_sessions(&self, transit: usize, table: SessionTable) {
        if let Some(slot) = self.sessions.get(transit) {
            slot.store(Arc::new(table));
        }
    }

    /// Publishes a new tunnel map; refused (false) if it uses more slots than the engine
    /// has room for.
    pub fn publish_tunnels(&self, map: TunnelMap) -> bool {
        if map.slots() > self.tunnel_capacity {
            return false;
        }
        self.tunnels.store(Arc::new(map));
        true
    }

    /// The published tunnel map.
    pub fn tunnels(&self) -> Arc<TunnelMap> {
        self.tunnels.load_full()
    }

    /// How many route-table slots tunnels may use.
    pub fn tunnel_capacity(&self) -> usize {
        self.tunnel_capacity
    }

    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// The route tunnel carried by (transit, WireGuard tunnel), in the published map.
    pub fn route_tunnel(&self, transit: usize, wg: wg::TunnelId) -> Option<u32> {
        self.tunnels.load().route_tunnel(transit, wg)
    }
}

/// One worker's view of the engine.
pub struct Worker {
    engine: Arc<Engine>,
    routes: RouteReader,
    tunnels: Cache<Arc<ArcSwap<TunnelMap>>, Arc<TunnelMap>>,
    sessions: Vec<Cache<Arc<ArcSwap<SessionTable>>, Arc<SessionTable>>>,
    neighbours: Cache<Arc<ArcSwap<NextHops>>, Arc<NextHops>>,
    /// Where an oversize packet waits while the ICMP error is written over it.
    scratch: Box<[u8; PARCEL_LEN]>,
    pub stats: WorkerStats,
}

impl Worker {
    pub fn new(engine: Arc<Engine>, routes: RouteReader) -> Self {
        let sessions = engine
            .sessions
            .iter()
            .map(|s| Cache::new(Arc::clone(s)))
            .collect();
        let stats = WorkerStats::new(engine.tunnel_capacity);
        let neighbours = Cache::new(Arc::clone(&engine.neighbours));
        let tunnels = Cache::new(Arc::clone(&engine.tunnels));
        Self {
            engine,
            routes,
            tunnels,
            sessions,
            neighbours,
            scratch: Box::new([0; PARCEL_LEN]),
            stats,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The per-tunnel counter slots of the current map: what [`PublishedStats::publish`]
    /// needs to copy.
    pub fn tunnel_slots(&mut self) -> usize {
        self.tunnels.load().slots()
    }

    /// The MAC the owner resolved for `dst` out of `egress` through the kernel, if any (a
    /// short list: the destinations workers asked about).
    pub fn published_next_hop(&mut self, egress: Egress, dst: IpAddr) -> Option<MacAddr> {
        self.neighbours
            .load()
            .iter()
            .find(|(e, ip, _)| *e == egress && *ip == dst)
            .map(|(.., mac)| *mac)
    }

    /// A VXLAN datagram from a leaf at `buf[payload]` (the UDP payload).
    pub fn from_fabric(
        &mut self,
        now: wg::Instant,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Verdict {
        let engine = &*self.engine;
        let Some(fabric) = &engine.fabric else {
            return self.drop(DropReason::WrongPort);
        };
        let tables = self.routes.load();
        let start = payload.start;
        let Some(vxlan) = buf.get_mut(payload) else {
            self.stats.drop(DropReason::NoBuffer);
            return Verdict::Dropped(DropReason::NoBuffer);
        };
        let hit = match pipeline::from_fabric(fabric, tables, &engine.hasher, vxlan) {
            Ok(hit) => hit,
            Err(DropReason::TooBig) => {
                self.stats.drop(DropReason::TooBig);
                return self.too_big(start, buf);
            }
            Err(reason) => return self.drop(reason),
        };
        let index = hit.tunnel.0 as usize;
        let Some(tunnel) = self.tunnels.load().get(index) else {
            return self.drop(DropReason::NoTunnel);
        };
        let len = hit.inner.len();
        // The WireGuard header goes over the VXLAN and Ethernet headers in front of the inner
        // packet (22 or more bytes, 16 needed).
        let Some(wg_start) = (start + hit.inner.start).checked_sub(DATA_HEADER_LEN) else {
            return self.drop(DropReason::NoBuffer);
        };
        let Some(table) = self.sessions.get_mut(tunnel.transit).map(|c| c.load()) else {
            return self.drop(DropReason::NoTunnel);
        };
        let Some(room) = buf.get_mut(wg_start..) else {
            return self.drop(DropReason::NoBuffer);
        };
        self.stats.add(WorkerCounter::FromFabric, 1);
        match table.seal(now, tunnel.wg, room, len) {
            Ok((n, to)) => {
                self.stats.tunnel(index, TunnelCounter::TxPackets, 1);
                self.stats.tunnel(index, TunnelCounter::TxBytes, len as u64);
                Verdict::Transit {
                    transit: tunnel.transit,
                    to,
                    range: wg_start..wg_start + n,
                }
            }
            Err(wg::Error::NoSession) => {
                let inner = wg_start + DATA_HEADER_LEN;
                let packet = buf.get(inner..inner + len).unwrap_or_default();
                self.hand_over(
                    ParcelKind::Stage,
                    tunnel.transit,
                    index,
                    UNSPECIFIED,
                    packet,
                )
            }
            Err(e) => {
                let reason = drop_reason(&e);
                self.stats.tunnel_drop(index, reason);
                Verdict::Dropped(reason)
            }
        }
    }

    /// A datagram from a transit peer at `buf[datagram]` (the UDP payload).
    pub fn from_transit(
        &mut self,
        now: wg::Instant,
        transit: usize,
        src: SocketAddr,
        buf: &mut [u8],
        datagram: Range<usize>,
    ) -> Verdict {
        let start = datagram.start;
        let Some(bytes) = buf.get_mut(datagram) else {
            return self.drop(DropReason::NoBuffer);
        };
        match messages::message_type(bytes) {
            Ok(MessageType::Data) => {}
            Ok(_) => {
                // Handshakes and cookie replies: the owner's business.
                let bytes: &[u8] = bytes;
                return self.hand_over(ParcelKind::Handshake, transit, 0, src, bytes);
            }
            Err(e) => return self.drop(drop_reason(&e)),
        }
        let Some(table) = self.sessions.get_mut(transit).map(|c| c.load()) else {
            return self.drop(DropReason::WrongPort);
        };
        let opened = table.open(now, bytes);
        let (wg_tunnel, len) = match opened {
            Ok(o) => (o.tunnel, o.len),
            Err(e) => {
                let reason = drop_reason(&e);
                // Failures after the index lookup belong to a tunnel.
                let index = messages::receiver_index(bytes)
                    .map(wg::TunnelId::of_index)
                    .and_then(|id| self.tunnels.load().route_tunnel(transit, id));
                match (index, e) {
                    (_, wg::Error::UnknownIndex(_)) | (None, _) => self.stats.drop(reason),
                    (Some(i), _) => self.stats.tunnel_drop(i as usize, reason),
                }
                return Verdict::Dropped(reason);
            }
        };
        let map = self.tunnels.load();
        let Some((index, local)) = map
            .route_tunnel(transit, wg_tunnel)
            .and_then(|i| Some((i as usize, map.get(i as usize)?.local)))
        else {
            return self.drop(DropReason::NoTunnel);
        };
        if len == 0 {
            self.stats
                .tunnel(index, TunnelCounter::KeepalivesReceived, 1);
            return Verdict::Consumed;
        }
        self.stats.tunnel(index, TunnelCounter::RxPackets, 1);
        self.stats.tunnel(index, TunnelCounter::RxBytes, len as u64);
        let inner = start + DATA_HEADER_LEN;
        let packet = buf.get(inner..inner + len).unwrap_or_default();
        if let Some(dst) = destination(packet) {
            if local.contains(&Some(dst)) {
                return self.hand_over(ParcelKind::Local, transit, index, src, packet);
            }
        }
        let engine = &*self.engine;
        let Some(fabric) = &engine.fabric else {
            self.stats.tunnel_drop(index, DropReason::UnknownPrefix);
            return Verdict::Dropped(DropReason::UnknownPrefix);
        };
        let tables = self.routes.load();
        // VXLAN and Ethernet headers go over the WireGuard header (16 bytes, 22 needed: the
        // other 6 come from the headroom).
        let Some(frame) = inner.checked_sub(FABRIC_HEADROOM) else {
            return self.drop(DropReason::NoBuffer);
        };
        let room = buf.get_mut(frame..).unwrap_or_default();
        let Ok(number) = u16::try_from(index) else {
            return self.drop(DropReason::NoTunnel);
        };
        match pipeline::to_fabric(fabric, tables, RouteTunnel(number), room, len) {
            Ok((n, to)) => {
                self.stats.tunnel(index, TunnelCounter::ToFabric, 1);
                Verdict::Fabric {
                    to,
                    range: frame..frame + n,
                }
            }
            Err(reason) => {
                self.stats.tunnel_drop(index, reason);
                Verdict::Dropped(reason)
            }
        }
    }

    /// Answers an oversize packet from the fabric with the ICMP error a router sends, written
    /// over the packet itself (the offending packet is copied inside the buffer first).
    fn too_big(&mut self, start: usize, buf: &mut [u8]) -> Verdict {
        let engine = &*self.engine;
        let (Some(fabric), Some(vtep)) = (&engine.fabric, engine.vtep) else {
            return Verdict::Dropped(DropReason::TooBig);
        };
        let tables = self.routes.load();
        // The reply is written where the offending packet lies: move the packet aside first
        // (rare, and bounded by the datagram size).
        let Some(payload) = buf.get(start..) else {
            return Verdict::Dropped(DropReason::TooBig);
        };
        let Some(inner) = pipeline::fabric_inner(payload) else {
            return Verdict::Dropped(DropReason::TooBig);
        };
        let Some(aside) = self.scratch.get_mut(..inner.len()) else {
            return Verdict::Dropped(DropReason::TooBig);
        };
        aside.copy_from_slice(inner);
        let offending = &*aside;
        let Some(out) = buf.get_mut(start..) else {
            return Verdict::Dropped(DropReason::TooBig);
        };
        match pipeline::too_big_reply(fabric, tables, vtep, offending, out) {
            Ok((n, to)) => {
                self.stats.add(WorkerCounter::TooBigSent, 1);
                Verdict::Fabric {
                    to,
                    range: start..start + n,
                }
            }
            Err(_) => Verdict::Dropped(DropReason::TooBig),
        }
    }

    fn hand_over(
        &mut self,
        kind: ParcelKind,
        transit: usize,
        tunnel: usize,
        src: SocketAddr,
        bytes: &[u8],
    ) -> Verdict {
        let tunnel = u32::try_from(tunnel).unwrap_or(u32::MAX);
        if self.tell_owner(kind, transit, tunnel, src, bytes) {
            Verdict::Consumed
        } else {
            self.drop(DropReason::NoBuffer)
        }
    }

    /// Hands a parcel to the owner, counted as handed over or as refused by a full queue.
    pub fn tell_owner(
        &mut self,
        kind: ParcelKind,
        transit: usize,
        tunnel: u32,
        src: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let sent = self.engine.handoff.send(kind, transit, tunnel, src, bytes);
        let counter = if sent {
            WorkerCounter::HandedToOwner
        } else {
            WorkerCounter::OwnerQueueFull
        };
        self.stats.add(counter, 1);
        sent
    }

    fn drop(&mut self, reason: DropReason) -> Verdict {
        self.stats.drop(reason);
        Verdict::Dropped(reason)
    }
}

const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED), 0);

/// The destination address of an IP packet, if it parses.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => ipv4::Packet::new_checked(packet)
            .ok()
            .map(|p| IpAddr::V4(p.dst_addr())),
        Some(6) => ipv6::Packet::new_checked(packet)
            .ok()
            .map(|p| IpAddr::V6(p.dst_addr())),
        _ => None,
    }
}

/// The counter a WireGuard refusal on the data path is filed under.
pub fn drop_reason(e: &wg::Error) -> DropReason {
    match e {
        wg::Error::BadLength { .. } => DropReason::WgBadLength,
        wg::Error::UnknownType(_) => DropReason::WgUnknownType,
        wg::Error::UnknownIndex(_) => DropReason::WgUnknownReceiver,
        wg::Error::Replay(_) => DropReason::Replay,
        wg::Error::SessionExpired | wg::Error::NoSession | wg::Error::CounterExhausted => {
            DropReason::NoSession
        }
        wg::Error::InvalidInnerPacket => DropReason::WgBadInner,
        wg::Error::BufferTooSmall { .. } => DropReason::NoBuffer,
        wg::Error::UnknownTunnel => DropReason::NoTunnel,
        _ => DropReason::BadAuth,
    }
}
