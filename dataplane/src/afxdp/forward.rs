//! The AF_XDP backend's forwarding worker: the engine behind one queue of every interface.
//!
//! A worker owns an [`XskWorker`] with one port per interface (the fabric's and each
//! transit's), all on the same queue index and sharing one UMEM, so a frame received on the
//! fabric leaves on a transit (and back) by handing its descriptor over: no copy. For each
//! frame it parses the outer Ethernet, IP and UDP headers, runs the engine on the UDP payload
//! in place, then writes new outer headers in front of what the engine produced (the frame's
//! headroom has room) and puts the frame on the output port's TX ring.
//!
//! Next hops: the MAC address to send a datagram to is learned from received frames (the
//! source MAC of frames from that IP address: the transit router for a WireGuard peer, the
//! leaf for a VTEP), in a small fixed table, or from the next hops the owner resolved through
//! the kernel's route and neighbour tables (`crate::neigh`). A datagram for an address known
//! neither way goes to the owner, which sends it through the kernel (which resolves the
//! neighbour) and then publishes what the kernel resolved.

use core::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Action, Frame, PortId, XskWorker};
use crate::drop::DropReason;
use crate::engine::{
    self, Clock, Doorbell, Egress, ParcelKind, PublishedStats, Verdict, WorkerCounter,
};
use crate::wire::ethernet::{self, ethertype, MacAddr};
use crate::wire::{ip_proto, ipv4, ipv6, udp, vxlan};

/// What an interface is to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The fabric side: VXLAN to and from our VTEP address.
    Fabric { vtep: IpAddr },
    /// Transit `index`: WireGuard on `listen`.
    Transit { index: usize, listen: SocketAddr },
}

/// A role played on one port of a forwarding worker (an interface may play several: two
/// transits' addresses on one uplink, say).
#[derive(Clone, Copy, Debug)]
pub struct PortRole {
    pub port: PortId,
    pub mac: MacAddr,
    pub role: Role,
}

impl Role {
    /// The side a datagram sent in this role leaves by.
    fn egress(&self) -> Egress {
        match *self {
            Role::Fabric { .. } => Egress::Fabric,
            Role::Transit { index, .. } => Egress::Transit(index),
        }
    }

    /// Whether a datagram to `dst` is for this role.
    fn serves(&self, dst: SocketAddr) -> bool {
        match *self {
            Role::Fabric { vtep } => dst.ip() == vtep && dst.port() == vxlan::PORT,
            Role::Transit { listen, .. } => dst == listen,
        }
    }
}

/// Learned next hops: (port, IP address) -> MAC, a fixed direct-mapped table (a collision
/// evicts). The port is part of the key: a peer reached over two uplinks is behind a
/// different router on each.
struct Neighbours {
    slots: Box<[Option<(PortId, IpAddr, MacAddr)>; NEIGHBOURS]>,
}

const NEIGHBOURS: usize = 1024;

impl Neighbours {
    fn new() -> Self {
        Self {
            slots: Box::new([None; NEIGHBOURS]),
        }
    }

    fn slot(port: PortId, ip: &IpAddr) -> usize {
        let h = match ip {
            IpAddr::V4(a) => u64::from(u32::from(*a)),
            IpAddr::V6(a) => {
                let b = a.octets();
                u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
            }
        } ^ (u64::from(port.0) << 40);
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % NEIGHBOURS
    }

    /// Returns whether the entry is new or changed.
    fn learn(&mut self, port: PortId, ip: IpAddr, mac: MacAddr) -> bool {
        match self.slots.get_mut(Self::slot(port, &ip)) {
            Some(s) if *s != Some((port, ip, mac)) => {
                *s = Some((port, ip, mac));
                true
            }
            _ => false,
        }
    }

    fn get(&self, port: PortId, ip: &IpAddr) -> Option<MacAddr> {
        match self.slots.get(Self::slot(port, ip)) {
            Some(Some((p, k, mac))) if *p == port && k == ip => Some(*mac),
            _ => None,
        }
    }
}

/// A forwarding worker on AF_XDP.
pub struct XdpForwarder {
    xsk: XskWorker,
    worker: engine::Worker,
    ports: Vec<PortRole>,
    fabric: Option<PortRole>,
    /// Indexed by transit.
    transits: Vec<Option<PortRole>>,
    neighbours: Neighbours,
    clock: Clock,
    published: Arc<PublishedStats>,
    core: Option<usize>,
    /// Rung by the owner when it puts a datagram on the way back.
    doorbell: Option<Arc<Doorbell>>,
}

/// Datagrams from the owner sent per round, at most (they are few: handshakes, keepalives,
/// probes).
const OWNER_SENDS_PER_ROUND: usize = 64;
/// Where an owner's datagram is written in a fresh frame: room in front for the outer
/// Ethernet, IPv6 and UDP headers (62 bytes).
const OWNER_PAYLOAD_AT: usize = 64;

/// How long an idle worker sleeps in `poll` before looking at its stop flag again.
const IDLE_WAIT_MS: i32 = 100;
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// Where the outer headers of a received frame end.
struct Outer {
    src: SocketAddr,
    dst: SocketAddr,
    src_mac: MacAddr,
    /// The UDP payload, relative to the chunk.
    payload: core::ops::Range<usize>,
}

impl XdpForwarder {
    pub fn new(
        xsk: XskWorker,
        worker: engine::Worker,
        ports: Vec<PortRole>,
        clock: Clock,
        published: Arc<PublishedStats>,
        core: Option<usize>,
    ) -> Self {
        let fabric = ports
            .iter()
            .find(|p| matches!(p.role, Role::Fabric { .. }))
            .copied();
        let n = ports
            .iter()
            .filter_map(|p| match p.role {
                Role::Transit { index, .. } => Some(index + 1),
                Role::Fabric { .. } => None,
            })
            .max()
            .unwrap_or(0);
        let mut transits = vec![None; n];
        for p in &ports {
            if let Role::Transit { index, .. } = p.role {
                if let Some(slot) = transits.get_mut(index) {
                    *slot = Some(*p);
                }
            }
        }
        Self {
            xsk,
            worker,
            ports,
            fabric,
            transits,
            neighbours: Neighbours::new(),
            clock,
            published,
            core,
            doorbell: None,
        }
    }

    /// Takes datagrams the owner puts on the way back (`Handoff::send_back`) and sends them
    /// from this worker's ports; `doorbell` wakes it for them when idle.
    pub fn with_doorbell(mut self, doorbell: Arc<Doorbell>) -> Self {
        self.xsk.watch(doorbell.fd());
        self.doorbell = Some(doorbell);
        self
    }

    /// Forwards until `stop` is set: busy-polls while there is traffic, sleeps in `poll(2)`
    /// when a round found nothing.
    pub fn run(mut self, stop: &AtomicBool) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(core, "could not pin the AF_XDP worker to its core");
            }
        }
        let mut published_at = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = self.clock.now();
            if self.doorbell.is_some() && self.worker.engine().handoff().has_back() {
                self.send_for_owner();
            }
            let Self {
                xsk,
                worker,
                ports,
                fabric,
                transits,
                neighbours,
                ..
            } = &mut self;
            let received =
                xsk.poll(|frame| forward(frame, now, worker, ports, fabric, transits, neighbours));
            if received > 0 {
                self.worker.stats.add(WorkerCounter::RxBatches, 1);
                self.worker
                    .stats
                    .add(WorkerCounter::RxPackets, received as u64);
            } else {
                self.publish();
                published_at = Instant::now();
                let _ = self.xsk.wait(IDLE_WAIT_MS);
                if let Some(bell) = &self.doorbell {
                    bell.clear();
                }
                continue;
            }
            if published_at.elapsed() >= PUBLISH_EVERY {
                self.publish();
                published_at = Instant::now();
            }
        }
        self.publish();
    }

    /// Sends what the owner put on the way back: each a UDP payload for a transit peer,
    /// framed like forwarded traffic (the transit's address and port, the next hop's MAC).
    fn send_for_owner(&mut self) {
        let engine = Arc::clone(self.worker.engine());
        let handoff = engine.handoff();
        for _ in 0..OWNER_SENDS_PER_ROUND {
            let Some(parcel) = handoff.recv_back() else {
                break;
            };
            let to = parcel.src;
            let out = match parcel.kind {
                ParcelKind::Send(Egress::Transit(t)) => self.transits.get(t).copied().flatten(),
                _ => None,
            };
            let next_hop = out.and_then(|out| {
                let egress = out.role.egress();
                self.neighbours
                    .get(out.port, &to.ip())
                    .or_else(|| self.worker.published_next_hop(egress, to.ip()))
            });
            let sent = match (out, next_hop) {
                (Some(out), Some(mac)) => self
                    .xsk
                    .send(|frame| frame_for_owner(frame, &out, mac, to, parcel.bytes())),
                _ => false,
            };
            if sent {
                self.worker.stats.add(WorkerCounter::OwnerSent, 1);
            } else {
                self.worker.stats.drop(DropReason::NoBuffer);
            }
            handoff.recycle(parcel);
        }
    }

    fn publish(&mut self) {
        // The kernel's drops for our sockets: one getsockopt per port, per publish.
        // Roles of one port are listed together: count each port once.
        let mut dropped = 0;
        let mut last = None;
        for p in &self.ports {
            if last == Some(p.port) {
                continue;
            }
            last = Some(p.port);
            if let Ok(k) = self.xsk.kernel_stats(p.port) {
                dropped += k.rx_dropped + k.rx_ring_full + k.rx_fill_ring_empty;
            }
        }
        self.worker.stats.set(WorkerCounter::XskRxDropped, dropped);
        let slots = self.worker.tunnel_slots();
        self.published.publish(&self.worker.stats, slots);
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    frame: &mut Frame<'_>,
    now: crate::wireguard::Instant,
    worker: &mut engine::Worker,
    ports: &[PortRole],
    fabric: &Option<PortRole>,
    transits: &[Option<PortRole>],
    neighbours: &mut Neighbours,
) -> Action {
    let Some(rx_port) = frame.rx_port() else {
        return Action::Drop;
    };
    let start = frame.offset();
    let outer = match parse_outer(frame.data(), start) {
        Ok(o) => o,
        Err(reason) => {
            worker.stats.drop(reason);
            return Action::Drop;
        }
    };
    let Some(rx) = ports
        .iter()
        .find(|p| p.port == rx_port && p.role.serves(outer.dst))
    else {
        // The XDP program only steers our endpoints here; anything else is a stale steer.
        worker.stats.drop(DropReason::WrongPort);
        return Action::Drop;
    };
    if neighbours.learn(rx_port, outer.src.ip(), outer.src_mac) {
        share_neighbour(worker, rx.role, outer.src.ip(), outer.src_mac);
    }
    let verdict = match rx.role {
        Role::Fabric { .. } => worker.from_fabric(now, frame.chunk_mut(), outer.payload),
        Role::Transit { index, .. } => {
            worker.from_transit(now, index, outer.src, frame.chunk_mut(), outer.payload)
        }
    };
    let (out, to, range) = match verdict {
        Verdict::Transit { transit, to, range } => match transits.get(transit).copied().flatten() {
            Some(p) => (p, to, range),
            None => return Action::Drop,
        },
        Verdict::Fabric { to, range } => match fabric {
            Some(p) => (*p, to, range),
            None => return Action::Drop,
        },
        Verdict::Consumed | Verdict::Dropped(_) => return Action::Drop,
    };
    let from = match out.role {
        Role::Fabric { vtep } => SocketAddr::new(vtep, entropy_port(frame.chunk(), &range)),
        Role::Transit { listen, .. } => listen,
    };
    let egress = out.role.egress();
    let known = neighbours.get(out.port, &to.ip()).or_else(|| {
        let mac = worker.published_next_hop(egress, to.ip())?;
        neighbours.learn(out.port, to.ip(), mac);
        Some(mac)
    });
    let Some(next_hop) = known else {
        // Not learned yet: the kernel sends this one and resolves the neighbour.
        let bytes = frame.chunk().get(range).unwrap_or_default();
        worker.tell_owner(ParcelKind::Send(egress), 0, 0, to, bytes);
        return Action::Drop;
    };
    match write_outer(frame.chunk_mut(), &range, out.mac, next_hop, from, to) {
        Some(head) => {
            let len = range.end - head;
            if frame.set_range(head, len).is_err() {
                worker.stats.drop(DropReason::NoBuffer);
                return Action::Drop;
            }
            Action::Transmit(out.port)
        }
        None => {
            worker.stats.drop(DropReason::NoBuffer);
            Action::Drop
        }
    }
}

/// Writes the owner's UDP payload for `to` into a fresh frame behind outer headers from
/// `out`'s transit address to `next_hop`.
fn frame_for_owner(
    frame: &mut Frame<'_>,
    out: &PortRole,
    next_hop: MacAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Action {
    let Role::Transit { listen, .. } = out.role else {
        return Action::Drop;
    };
    let at = frame.offset() + OWNER_PAYLOAD_AT;
    let range = at..at + payload.len();
    let Some(room) = frame.chunk_mut().get_mut(range.clone()) else {
        return Action::Drop;
    };
    room.copy_from_slice(payload);
    let Some(head) = write_outer(frame.chunk_mut(), &range, out.mac, next_hop, listen, to) else {
        return Action::Drop;
    };
    match frame.set_range(head, range.end - head) {
        Ok(()) => Action::Transmit(out.port),
        Err(_) => Action::Drop,
    }
}

/// Tells the owner about a neighbour this worker learned, unless every worker knows it already:
/// the other workers may never receive a frame from it (all its frames hashed to this queue)
/// yet send to it.
fn share_neighbour(worker: &mut engine::Worker, role: Role, ip: IpAddr, mac: MacAddr) {
    let egress = role.egress();
    if worker.published_next_hop(egress, ip) == Some(mac) {
        return;
    }
    worker.tell_owner(
        ParcelKind::Neighbour(egress),
        0,
        0,
        SocketAddr::new(ip, 0),
        &mac.0,
    );
}

/// Parses Ethernet (with VLAN tags), IPv4 or IPv6, and UDP at `data`, which starts at chunk
/// offset `start`.
fn parse_outer(data: &[u8], start: usize) -> Result<Outer, DropReason> {
    let eth = ethernet::Frame::new_checked(data)?;
    let l3 = eth.header_len();
    let ip_bytes = data.get(l3..).ok_or(DropReason::EthTruncated)?;
    let (src, dst, l4, udp_len) = match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(ip_bytes)?;
            if ip.is_fragment() {
                return Err(DropReason::Ipv4Fragment);
            }
            if ip.protocol() != ip_proto::UDP {
                return Err(DropReason::UnsupportedProtocol);
            }
            let h = ip.header_len();
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                l3 + h,
                ip.total_len().saturating_sub(h),
            )
        }
        ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(ip_bytes)?;
            if ip.next_header() != ip_proto::UDP {
                return Err(DropReason::UnsupportedProtocol);
            }
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                l3 + ipv6::HEADER_LEN,
                ip.total_len().saturating_sub(ipv6::HEADER_LEN),
            )
        }
        _ => return Err(DropReason::EthUnsupported),
    };
    let udp_bytes = data.get(l4..l4 + udp_len).ok_or(DropReason::UdpTruncated)?;
    let u = udp::Packet::new_checked(udp_bytes)?;
    let payload_start = start + l4 + udp::HEADER_LEN;
    let payload_len = u.len().saturating_sub(udp::HEADER_LEN);
    Ok(Outer {
        src: SocketAddr::new(src, u.src_port()),
        dst: SocketAddr::new(dst, u.dst_port()),
        src_mac: eth.src(),
        payload: payload_start..payload_start + payload_len,
    })
}

/// Writes Ethernet, IP and UDP headers in front of `chunk[payload]`; returns where the frame
/// now starts. IPv4 carries no UDP checksum (allowed, and what VXLAN asks for; WireGuard's
/// AEAD protects its own payload); IPv6 always does.
fn write_outer(
    chunk: &mut [u8],
    payload: &core::ops::Range<usize>,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    from: SocketAddr,
    to: SocketAddr,
) -> Option<usize> {
    let len = payload.len();
    let (ip_len, kind) = match to.ip() {
        IpAddr::V4(_) => (ipv4::MIN_HEADER_LEN, ethertype::IPV4),
        IpAddr::V6(_) => (ipv6::HEADER_LEN, ethertype::IPV6),
    };
    let udp_at = payload.start.checked_sub(udp::HEADER_LEN)?;
    let ip_at = udp_at.checked_sub(ip_len)?;
    let eth_at = ip_at.checked_sub(ethernet::HEADER_LEN)?;
    let udp_repr = udp::Repr {
        src_port: from.port(),
        dst_port: to.port(),
        payload_len: len,
    };
    match (from.ip(), to.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            udp_repr
                .emit(chunk.get_mut(udp_at..payload.end)?, udp::ChecksumMode::None)
                .ok()?;
            ipv4::Repr {
                src,
                dst,
                protocol: ip_proto::UDP,
                payload_len: udp::HEADER_LEN + len,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: true,
            }
            .emit(chunk.get_mut(ip_at..udp_at)?)
            .ok()?;
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            udp_repr
                .emit(
                    chunk.get_mut(udp_at..payload.end)?,
                    udp::ChecksumMode::V6 { src, dst },
                )
                .ok()?;
            ipv6::Repr {
                src,
                dst,
                next_header: ip_proto::UDP,
                payload_len: udp::HEADER_LEN + len,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(chunk.get_mut(ip_at..udp_at)?)
            .ok()?;
        }
        // A peer of the other family than our address on that interface.
        _ => return None,
    }
    ethernet::Repr {
        dst: dst_mac,
        src: src_mac,
        vlan: None,
        ethertype: kind,
    }
    .emit(chunk.get_mut(eth_at..ip_at)?)
    .ok()?;
    Some(eth_at)
}

/// A VXLAN source port from the inner headers (RFC 7348 §5: entropy for the fabric's ECMP),
/// in the dynamic range.
fn entropy_port(chunk: &[u8], vxlan_payload: &core::ops::Range<usize>) -> u16 {
    // Inner Ethernet (14) + the first 40 bytes of the inner IP packet hold the addresses and
    // ports of every flow.
    let from = vxlan_payload.start + vxlan::HEADER_LEN + ethernet::HEADER_LEN;
    let bytes = chunk
        .get(from..(from + 40).min(vxlan_payload.end))
        .unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    49152 + (h % 16384) as u16
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn outer_headers_round_trip_for_both_families() {
        for (from, to) in [
            ("192.0.2.1:51820", "198.51.100.7:40000"),
            ("[2001:db8::1]:51820", "[2001:db8:1::7]:40000"),
        ] {
            let (from, to): (SocketAddr, SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
            let mut chunk = vec![0u8; 2048];
            let payload = 300..400;
            chunk[payload.clone()].fill(0xab);
            let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
            let head = write_outer(&mut chunk, &payload, a, b, from, to).unwrap();
            let outer = parse_outer(&chunk[head..payload.end], head).unwrap();
            assert_eq!((outer.src, outer.dst, outer.src_mac), (from, to, a));
            assert_eq!(outer.payload, payload);
            let eth = ethernet::Frame::new_checked(&chunk[head..]).unwrap();
            assert_eq!(eth.dst(), b);
            if to.ip().is_ipv6() {
                let u = udp::Packet::new_checked(&chunk[head + 54..payload.end]).unwrap();
                let (IpAddr::V6(s), IpAddr::V6(d)) = (from.ip(), to.ip()) else {
                    unreachable!()
                };
                assert!(u.verify_checksum_v6(&s, &d));
            }
        }
    }

    #[test]
    fn malformed_outer_headers_are_reasons_not_panics() {
        let mut chunk = vec![0u8; 512];
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let (from, to) = (
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        );
        let head = write_outer(&mut chunk, &(100..140), a, b, from, to).unwrap();
        let frame = chunk[head..140].to_vec();
        for cut in 0..frame.len() {
            let _ = parse_outer(&frame[..cut], 0);
        }
        assert_eq!(
            parse_outer(&frame[..10], 0).err(),
            Some(DropReason::EthTruncated)
        );
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_outer(&arp, 0).err(), Some(DropReason::EthUnsupported));
        // No room in front of the payload for the headers.
        assert!(write_outer(&mut chunk, &(10..20), a, b, from, to).is_none());
    }

    #[test]
    fn neighbours_learn_and_evict_by_slot() {
        let mut n = Neighbours::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let port = PortId(0);
        assert_eq!(n.get(port, &ip), None);
        n.learn(port, ip, MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(n.get(port, &ip), Some(MacAddr([2, 0, 0, 0, 0, 9])));
        n.learn(port, ip, MacAddr([2, 0, 0, 0, 0, 8]));
        assert_eq!(n.get(port, &ip), Some(MacAddr([2, 0, 0, 0, 0, 8])));
        assert_eq!(n.get(port, &"10.0.0.2".parse().unwrap()), None);
    }

    #[test]
    fn one_peer_has_a_next_hop_per_port() {
        // The same remote gateway seen through two uplinks, behind two routers.
        let mut n = Neighbours::new();
        let ip: IpAddr = "172.16.20.1".parse().unwrap();
        let (r1, r2) = (MacAddr([2, 0, 0, 0, 1, 1]), MacAddr([2, 0, 0, 0, 2, 2]));
        n.learn(PortId(1), ip, r1);
        n.learn(PortId(2), ip, r2);
        assert_eq!(n.get(PortId(1), &ip), Some(r1));
        assert_eq!(n.get(PortId(2), &ip), Some(r2));
        assert_eq!(n.get(PortId(3), &ip), None);
    }
}
