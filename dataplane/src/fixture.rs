//! A forwarding fixture for tests and benchmarks (feature `fixture`): two gateways' worth of
//! state, A and B, with an established WireGuard session and route tables that send
//! 10.1.0.0/16 (A's datacenter) and 10.2.0.0/16 (B's) across the tunnel.

use std::net::{Ipv4Addr, SocketAddr};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::drop::DropReason;
use crate::pipeline::{self, Fabric, FABRIC_HEADROOM};
use crate::route::{LocalRoute, RouteTables, TunnelGroup, TunnelId};
use crate::wire::ethernet::{self, ethertype, MacAddr};
use crate::wire::{ip_proto, ipv4, udp, vxlan};
use crate::wireguard::{
    public_key, Action, Encapsulated, Instant, PeerConfig, Tunnel, DATA_HEADER_LEN,
};

const A_KEY: [u8; 32] = [0x11; 32];
const B_KEY: [u8; 32] = [0x22; 32];
pub const A_MAC: MacAddr = MacAddr([0x02, 0, 0x0a, 0, 1, 1]);
pub const B_MAC: MacAddr = MacAddr([0x02, 0, 0x0a, 0, 2, 1]);
const LEAF_MAC: MacAddr = MacAddr([0x02, 0, 0x0a, 0, 1, 2]);
/// Buffer size that fits every packet the fixture makes.
pub const BUF: usize = 2048;

/// Both gateways' state.
pub struct Pair {
    pub a: Tunnel,
    pub b: Tunnel,
    pub now: Instant,
    pub fabric_a: Fabric,
    pub fabric_b: Fabric,
    pub tables_a: RouteTables,
    pub tables_b: RouteTables,
    pub peer: SocketAddr,
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
    let tunnel = |mine: [u8; 32], theirs: [u8; 32], slot, seed| {
        Tunnel::new(
            mine,
            PeerConfig::new(public_key(&theirs)),
            slot,
            Box::new(ChaCha20Rng::seed_from_u64(seed)),
        )
    };
    let (mut a, mut b) = (tunnel(A_KEY, B_KEY, 1, 1)?, tunnel(B_KEY, A_KEY, 2, 2)?);
    let now = Instant::from_secs(1_764_000_000);
    let peer = SocketAddr::from(([192, 0, 2, 1], 51820));
    let (mut out, mut scratch) = (vec![0u8; BUF], vec![0u8; BUF]);
    a.initiate_handshake(now);
    let n = a.tick(now, &mut out)?.unwrap_or(0);
    let mut init = out[..n].to_vec();
    if let Action::SendResponse(n) = b.handle_datagram(now, peer, &mut init, &mut out)? {
        let mut response = out[..n].to_vec();
        a.handle_datagram(now, peer, &mut response, &mut scratch)?;
    }
    // A's first data message (a keepalive) confirms the session on B's side.
    if let Some(n) = a.tick(now, &mut out)? {
        let mut keepalive = out[..n].to_vec();
        b.handle_datagram(now, peer, &mut keepalive, &mut scratch)?;
    }
    let fabric = |mac| Fabric {
        vni: 100,
        router_mac: mac,
        tunnel_mtu: 1420,
    };
    Ok(Pair {
        a,
        b,
        now,
        fabric_a: fabric(A_MAC),
        fabric_b: fabric(B_MAC),
        tables_a: tables_a(),
        tables_b: tables_b(),
        peer,
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

/// Fabric to transit on A: decapsulate and route `payload`, encrypt into `tx`. Returns the
/// datagram's length.
pub fn fabric_to_transit(
    p: &mut Pair,
    payload: &mut [u8],
    tx: &mut [u8],
) -> Result<usize, DropReason> {
    let hit = pipeline::from_fabric(
        &p.fabric_a,
        &p.tables_a,
        &crate::route::FlowHasher::new(1),
        payload,
    )?;
    let inner = payload.get(hit.inner).ok_or(DropReason::NoBuffer)?;
    tx.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + inner.len())
        .ok_or(DropReason::NoBuffer)?
        .copy_from_slice(inner);
    match p.a.encapsulate(p.now, tx, inner.len()) {
        Ok(Encapsulated::Ready(n)) => Ok(n),
        _ => Err(DropReason::NoSession),
    }
}

/// Transit to fabric on B: decrypt `datagram` in place and encapsulate for B's leaf into
/// `out`. Returns the VXLAN payload's length.
pub fn transit_to_fabric(
    p: &mut Pair,
    datagram: &mut [u8],
    out: &mut [u8],
) -> Result<usize, DropReason> {
    let mut none = [0u8; 0];
    let (offset, len) = match p.b.handle_datagram(p.now, p.peer, datagram, &mut none) {
        Ok(Action::Deliver { offset, len }) => (offset, len),
        _ => return Err(DropReason::BadAuth),
    };
    let inner = datagram
        .get(offset..offset + len)
        .ok_or(DropReason::NoBuffer)?;
    out.get_mut(FABRIC_HEADROOM..FABRIC_HEADROOM + len)
        .ok_or(DropReason::NoBuffer)?
        .copy_from_slice(inner);
    pipeline::to_fabric(&p.fabric_b, &p.tables_b, TunnelId(0), out, len).map(|(n, _)| n)
}
