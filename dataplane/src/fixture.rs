//! A forwarding fixture for tests and benchmarks (feature `fixture`): two gateways, A and B,
//! each a WireGuard device with one tunnel to the other (session established) and a forwarding
//! [`engine::Worker`] with route tables that send 10.1.0.0/16 (A's datacenter) and 10.2.0.0/16
//! (B's) across the tunnel. Packets go through exactly the code the gateway's workers run.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::drop::DropReason;
use crate::engine::{self, Engine, EngineTunnel, Handoff, Verdict};
use crate::pipeline::Fabric;
use crate::route::{FlowHasher, LocalRoute, RouteHandle, RouteTables, TunnelGroup, TunnelId};
use crate::wire::ethernet::{self, ethertype, MacAddr};
use crate::wire::{ip_proto, ipv4, udp, vxlan};
use crate::wireguard::{public_key, Action, Device, Instant, PeerConfig};

const A_KEY: [u8; 32] = [0x11; 32];
const B_KEY: [u8; 32] = [0x22; 32];
pub const A_MAC: MacAddr = MacAddr([0x02, 0, 0x0a, 0, 1, 1]);
pub const B_MAC: MacAddr = MacAddr([0x02, 0, 0x0a, 0, 2, 1]);
const LEAF_MAC: MacAddr = MacAddr([0x02, 0, 0x0a, 0, 1, 2]);
/// Buffer size that fits every packet the fixture makes, with the engine's head- and tailroom.
pub const BUF: usize = 2048 + engine::HEADROOM + engine::TAILROOM;

/// Both gateways' state: the devices (the owners' side) and a worker each.
pub struct Pair {
    pub a: engine::Worker,
    pub b: engine::Worker,
    pub device_a: Device,
    pub device_b: Device,
    pub now: Instant,
    pub peer: SocketAddr,
    /// The owners' ends of the route tables (the workers hold readers).
    pub routes_a: RouteHandle,
    pub routes_b: RouteHandle,
}

fn tables(remote: &str, local: &str, vtep: [u8; 4]) -> RouteTables {
    let mut b = RouteTables::builder();
    let group = TunnelGroup::new(&[(TunnelId(0), 1)]).map(|g| b.add_group(g));
    if let (Ok(group), Ok(remote), Ok(local)) = (group, remote.parse(), local.parse()) {
        let _ = b.add_remote(remote, group);
        let _ = b.add_local(
            local,
            LocalRoute {
                vtep: Ipv4Addr::from(vtep).into(),
                router_mac: LEAF_MAC,
                vni: 100,
            },
        );
    }
    b.build()
}

/// A's tables: 10.2.0.0/16 through tunnel 0, 10.1.0.0/16 local.
pub fn tables_a() -> RouteTables {
    tables("10.2.0.0/16", "10.1.0.0/16", [10, 0, 1, 2])
}

/// B's tables: 10.1.0.0/16 through tunnel 0, 10.2.0.0/16 local.
pub fn tables_b() -> RouteTables {
    tables("10.1.0.0/16", "10.2.0.0/16", [10, 0, 2, 2])
}

/// A and B with a confirmed session, at a fixed instant.
pub fn pair() -> Result<Pair, crate::wireguard::Error> {
    let now = Instant::from_secs(1_764_000_000);
    let peer = SocketAddr::from(([192, 0, 2, 1], 51820));
    let device = |mine: [u8; 32], theirs: [u8; 32], seed| {
        let mut d: Device = Device::new(mine, Box::new(ChaCha20Rng::seed_from_u64(seed)));
        let rng = Box::new(ChaCha20Rng::seed_from_u64(seed + 10));
        d.add_tunnel(PeerConfig::new(public_key(&theirs)), Some(peer), rng)
            .map(|id| (d, id))
    };
    let ((mut device_a, id_a), (mut device_b, id_b)) =
        (device(A_KEY, B_KEY, 1)?, device(B_KEY, A_KEY, 2)?);
    let (mut out, mut scratch) = (vec![0u8; BUF], vec![0u8; BUF]);
    if let Some(t) = device_a.tunnel_mut(id_a) {
        t.initiate_handshake(now);
    }
    let n = device_a.tick(now, &mut out)?.map_or(0, |(_, n)| n);
    let mut init = out[..n].to_vec();
    if let (_, Ok(Action::SendResponse(n))) =
        device_b.handle_datagram(now, peer, &mut init, &mut out)
    {
        let mut response = out[..n].to_vec();
        let _ = device_a.handle_datagram(now, peer, &mut response, &mut scratch);
    }
    // A's first data message (a keepalive) confirms the session on B's side.
    if let Some((_, n)) = device_a.tick(now, &mut out)? {
        let mut keepalive = out[..n].to_vec();
        let _ = device_b.handle_datagram(now, peer, &mut keepalive, &mut scratch);
    }
    let worker = |device: &Device, id, mac, tables: RouteTables| {
        let fabric = Fabric {
            vni: 100,
            router_mac: mac,
            tunnel_mtu: 1420,
        };
        let tunnels = vec![EngineTunnel {
            transit: 0,
            wg: id,
            local: [None, None],
        }];
        let vtep = Ipv4Addr::new(10, 0, 0, 1).into();
        let engine = Engine::new(
            Some((fabric, vtep)),
            tunnels,
            1,
            FlowHasher::new(1),
            Arc::new(Handoff::new(64)),
        );
        engine.publish_sessions(0, device.session_table());
        let routes = RouteHandle::new(tables);
        (
            engine::Worker::new(Arc::new(engine), routes.reader()),
            routes,
        )
    };
    let (a, routes_a) = worker(&device_a, id_a, A_MAC, tables_a());
    let (b, routes_b) = worker(&device_b, id_b, B_MAC, tables_b());
    Ok(Pair {
        a,
        b,
        device_a,
        device_b,
        now,
        peer,
        routes_a,
        routes_b,
    })
}

/// A VXLAN payload from A's leaf: an IPv4/UDP packet of `inner_len` bytes (at least 28) from
/// 10.1.0.5 to 10.2.0.9, for A's router MAC.
pub fn vxlan_payload(inner_len: usize) -> Vec<u8> {
    let inner_len = inner_len.max(28);
    let mut buf = vec![0u8; vxlan::HEADER_LEN + 14 + inner_len];
    let (src, dst) = (Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 2, 0, 9));
    let _ = vxlan::Repr { vni: 100 }.emit(&mut buf);
    let _ = ethernet::Repr {
        dst: A_MAC,
        src: LEAF_MAC,
        vlan: None,
        ethertype: ethertype::IPV4,
    }
    .emit(&mut buf[8..]);
    let ip = &mut buf[22..];
    let data = inner_len - 28;
    let _ = udp::Repr {
        src_port: 40000,
        dst_port: 5001,
        payload_len: data,
    }
    .emit(&mut ip[20..], udp::ChecksumMode::V4 { src, dst });
    let _ = ipv4::Repr {
        src,
        dst,
        protocol: ip_proto::UDP,
        payload_len: 8 + data,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
    }
    .emit(ip);
    buf
}

/// Fabric to transit on A: the VXLAN payload at `buf[payload]` is decapsulated, routed and
/// sealed in place. Returns where the WireGuard datagram now lies in `buf`.
pub fn fabric_to_transit(
    p: &mut Pair,
    buf: &mut [u8],
    payload: Range<usize>,
) -> Result<Range<usize>, DropReason> {
    match p.a.from_fabric(p.now, buf, payload) {
        Verdict::Transit { range, .. } => Ok(range),
        Verdict::Dropped(reason) => Err(reason),
        _ => Err(DropReason::NoSession),
    }
}

/// Transit to fabric on B: the datagram at `buf[datagram]` is opened and encapsulated for B's
/// leaf in place. Returns where the VXLAN payload now lies in `buf`.
pub fn transit_to_fabric(
    p: &mut Pair,
    buf: &mut [u8],
    datagram: Range<usize>,
) -> Result<Range<usize>, DropReason> {
    match p.b.from_transit(p.now, 0, p.peer, buf, datagram) {
        Verdict::Fabric { range, .. } => Ok(range),
        Verdict::Dropped(reason) => Err(reason),
        _ => Err(DropReason::BadAuth),
    }
}

/// Copies `payload` into `buf` after the engine's headroom, as a backend receives it.
pub fn receive(buf: &mut [u8], payload: &[u8]) -> Range<usize> {
    let start = engine::HEADROOM;
    let end = start + payload.len();
    if let Some(dst) = buf.get_mut(start..end) {
        dst.copy_from_slice(payload);
    }
    start..end
}
