//! The forwarding steps between the fabric (VXLAN) and the tunnels (WireGuard), independent of
//! how packets arrive: the socket backend and the AF_XDP backend call the same functions.
//! Sans-IO, in place, no allocation: each step checks, rewrites and says where the packet goes,
//! or names the reason it is dropped.
//!
//! fabric -> transit ([`from_fabric`]): the VXLAN payload of a datagram to our VTEP; VNI and
//! inner destination MAC (our router MAC) are checked, the inner TTL or hop limit decremented,
//! the destination looked up among remote prefixes and a tunnel of its group picked by flow hash
//! (one flow, one tunnel: no reordering). The caller then encrypts the inner packet.
//!
//! transit -> fabric ([`to_fabric`]): a decrypted inner packet; its source must be a prefix
//! routed through the tunnel it arrived on, its destination a local prefix; TTL decremented,
//! then VXLAN and Ethernet headers (the leaf's router MAC, the route's VNI) are written in front
//! of it for the leaf VTEP.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use crate::drop::DropReason;
use crate::route::{FlowHasher, RouteTables, TunnelId};
use crate::wire::ethernet::{self, ethertype, MacAddr};
use crate::wire::{icmp, ipv4, ipv6, vxlan};

/// Our side of the fabric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fabric {
    /// The L3 VNI traffic from the fabric must carry.
    pub vni: u32,
    /// Our router MAC: the inner destination of what the leaves send us, and the inner source
    /// of what we send them.
    pub router_mac: MacAddr,
    /// Largest inner packet a tunnel carries (WireGuard's default MTU).
    pub tunnel_mtu: usize,
}

/// Where a packet from the fabric goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToTunnel {
    pub tunnel: TunnelId,
    /// The inner IP packet within the datagram's payload.
    pub inner: Range<usize>,
}

/// Decapsulates and routes one VXLAN payload (`payload` = the UDP payload, VXLAN header
/// first). The inner TTL is decremented in place.
pub fn from_fabric(
    fabric: &Fabric,
    tables: &RouteTables,
    hasher: &FlowHasher,
    payload: &mut [u8],
) -> Result<ToTunnel, DropReason> {
    let vx = vxlan::Packet::new_checked(&*payload)?;
    if vx.vni() != fabric.vni {
        return Err(DropReason::WrongVni);
    }
    let frame = ethernet::Frame::new_checked(vx.payload())?;
    if frame.dst() != fabric.router_mac {
        return Err(DropReason::WrongMac);
    }
    let start = vxlan::HEADER_LEN + frame.header_len();
    let kind = frame.ethertype();
    let ip = payload.get_mut(start..).ok_or(DropReason::EthTruncated)?;
    let (len, dst) = decrement(kind, ip)?;
    if len > fabric.tunnel_mtu {
        return Err(DropReason::TooBig);
    }
    let inner = ip.get(..len).ok_or(DropReason::Ipv4Truncated)?;
    let group = tables.remote(dst).ok_or(DropReason::UnknownPrefix)?;
    let tunnel = group
        .pick(hasher.hash_ip(inner))
        .ok_or(DropReason::NoTunnel)?;
    Ok(ToTunnel {
        tunnel,
        inner: start..start + len,
    })
}

/// Checks, decrements the TTL of, and measures the IP packet at the start of `ip` (Ethernet
/// padding after it is ignored). Returns its length and destination.
fn decrement(kind: u16, ip: &mut [u8]) -> Result<(usize, IpAddr), DropReason> {
    match kind {
        ethertype::IPV4 => {
            let mut p = ipv4::Packet::new_checked(ip)?;
            p.decrement_ttl()?;
            Ok((p.total_len(), IpAddr::V4(p.dst_addr())))
        }
        ethertype::IPV6 => {
            let mut p = ipv6::Packet::new_checked(ip)?;
            p.decrement_hop_limit()?;
            Ok((p.total_len(), IpAddr::V6(p.dst_addr())))
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

fn addrs(ip: &[u8]) -> Result<(u16, IpAddr, IpAddr), DropReason> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let p = ipv4::Packet::new_checked(ip)?;
            Ok((
                ethertype::IPV4,
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
            ))
        }
        Some(6) => {
            let p = ipv6::Packet::new_checked(ip)?;
            Ok((
                ethertype::IPV6,
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
            ))
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// Bytes [`to_fabric`] writes in front of the inner packet.
pub const FABRIC_HEADROOM: usize = vxlan::HEADER_LEN + 14;

/// Routes a decrypted inner packet from `tunnel` to the fabric: `buf[FABRIC_HEADROOM..][..len]`
/// holds it; VXLAN and Ethernet headers are written into the headroom. Returns the VXLAN
/// payload's length (from `buf[0]`) and the leaf VTEP to send it to (UDP 4789).
pub fn to_fabric(
    fabric: &Fabric,
    tables: &RouteTables,
    tunnel: TunnelId,
    buf: &mut [u8],
    len: usize,
) -> Result<(usize, SocketAddr), DropReason> {
    let ip = buf
        .get_mut(FABRIC_HEADROOM..FABRIC_HEADROOM + len)
        .ok_or(DropReason::NoBuffer)?;
    let (kind, src, dst) = addrs(ip)?;
    // The peer may only send from the prefixes routed through this very tunnel.
    let allowed = tables
        .remote(src)
        .is_some_and(|g| g.members().iter().any(|(t, _)| *t == tunnel));
    if !allowed {
        return Err(DropReason::SourceNotAllowed);
    }
    if tables.local(dst).is_none() {
        return Err(DropReason::UnknownPrefix);
    }
    let (ip_len, _) = decrement(kind, ip)?;
    encapsulate_for_leaf(fabric, tables, buf, ip_len.min(len), kind, dst)
}

/// Writes VXLAN and Ethernet headers in front of the IP packet at `buf[FABRIC_HEADROOM..]`
/// for the leaf serving `dst`.
fn encapsulate_for_leaf(
    fabric: &Fabric,
    tables: &RouteTables,
    buf: &mut [u8],
    ip_len: usize,
    kind: u16,
    dst: IpAddr,
) -> Result<(usize, SocketAddr), DropReason> {
    let local = *tables.local(dst).ok_or(DropReason::UnknownPrefix)?;
    vxlan::Repr { vni: local.vni }
        .emit(buf)
        .map_err(|_| DropReason::NoBuffer)?;
    let eth = buf
        .get_mut(vxlan::HEADER_LEN..)
        .ok_or(DropReason::NoBuffer)?;
    ethernet::Repr {
        dst: local.router_mac,
        src: fabric.router_mac,
        vlan: None,
        ethertype: kind,
    }
    .emit(eth)
    .map_err(|_| DropReason::NoBuffer)?;
    Ok((
        FABRIC_HEADROOM + ip_len,
        SocketAddr::new(local.vtep, vxlan::PORT),
    ))
}

/// The inner IP packet of a VXLAN payload (without Ethernet padding), if it parses.
pub fn fabric_inner(payload: &[u8]) -> Option<&[u8]> {
    let vx = vxlan::Packet::new_checked(payload).ok()?;
    let frame = ethernet::Frame::new_checked(vx.payload()).ok()?;
    let (kind, start) = (frame.ethertype(), vxlan::HEADER_LEN + frame.header_len());
    let ip = payload.get(start..)?;
    let len = match kind {
        ethertype::IPV4 => ipv4::Packet::new_checked(ip).ok()?.total_len(),
        ethertype::IPV6 => ipv6::Packet::new_checked(ip).ok()?.total_len(),
        _ => return None,
    };
    ip.get(..len)
}

/// For an inner packet refused as too big for the tunnels ([`DropReason::TooBig`]): writes,
/// for the sender's leaf, the ICMP "fragmentation needed" (IPv4, only with DF set) or ICMPv6
/// "packet too big" carrying the tunnel MTU, from `gateway` (an address of ours of the same
/// family). Returns the VXLAN payload's length and the leaf VTEP, as [`to_fabric`].
pub fn too_big_reply(
    fabric: &Fabric,
    tables: &RouteTables,
    gateway: IpAddr,
    offending: &[u8],
    buf: &mut [u8],
) -> Result<(usize, SocketAddr), DropReason> {
    let mtu = fabric.tunnel_mtu;
    let room = buf.get_mut(FABRIC_HEADROOM..).ok_or(DropReason::NoBuffer)?;
    let (len, kind, dst) = match (addrs(offending)?, gateway) {
        ((ethertype::IPV4, IpAddr::V4(sender), _), IpAddr::V4(ours)) => {
            if !ipv4::Packet::new_checked(offending)?.dont_frag() {
                // Fragmenting is not done here; without DF there is no error to send.
                return Err(DropReason::TooBig);
            }
            let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
            let n =
                icmp::frag_needed_v4(room, offending, ours, mtu).map_err(|_| DropReason::TooBig)?;
            (n, ethertype::IPV4, IpAddr::V4(sender))
        }
        ((ethertype::IPV6, IpAddr::V6(sender), _), IpAddr::V6(ours)) => {
            let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
            let n = icmp::packet_too_big_v6(room, offending, ours, mtu)
                .map_err(|_| DropReason::TooBig)?;
            (n, ethertype::IPV6, IpAddr::V6(sender))
        }
        _ => return Err(DropReason::TooBig),
    };
    encapsulate_for_leaf(fabric, tables, buf, len, kind, dst)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::route::{LocalRoute, TunnelGroup};
    use crate::wire::{ip_proto, udp};
    use std::net::Ipv4Addr;

    const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const LEAF_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

    fn fabric() -> Fabric {
        Fabric {
            vni: 100,
            router_mac: OUR_MAC,
            tunnel_mtu: 1420,
        }
    }

    fn tables() -> RouteTables {
        let mut b = RouteTables::builder();
        let both = b.add_group(TunnelGroup::new(&[(TunnelId(0), 1), (TunnelId(1), 1)]).unwrap());
        let only0 = b.add_group(TunnelGroup::new(&[(TunnelId(0), 1)]).unwrap());
        b.add_remote("10.2.0.0/16".parse().unwrap(), both).unwrap();
        b.add_remote("10.3.0.0/16".parse().unwrap(), only0).unwrap();
        b.add_local(
            "10.1.0.0/16".parse().unwrap(),
            LocalRoute {
                vtep: "192.0.2.10".parse().unwrap(),
                router_mac: LEAF_MAC,
                vni: 100,
            },
        )
        .unwrap();
        b.build()
    }

    /// A VXLAN payload carrying UDP from `src` to `dst` with `data` bytes, TTL `ttl`.
    fn vxlan_udp(
        vni: u32,
        dst_mac: MacAddr,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        ttl: u8,
        data: usize,
    ) -> Vec<u8> {
        let ip_len = 20 + 8 + data;
        let mut buf = vec![0u8; 8 + 14 + ip_len];
        vxlan::Repr { vni }.emit(&mut buf).unwrap();
        ethernet::Repr {
            dst: dst_mac,
            src: LEAF_MAC,
            vlan: None,
            ethertype: ethertype::IPV4,
        }
        .emit(&mut buf[8..])
        .unwrap();
        let ip = &mut buf[22..];
        udp::Repr {
            src_port: sport,
            dst_port: 5001,
            payload_len: data,
        }
        .emit(&mut ip[20..], udp::ChecksumMode::V4 { src, dst })
        .unwrap();
        ipv4::Repr {
            src,
            dst,
            protocol: ip_proto::UDP,
            payload_len: 8 + data,
            ttl,
            tos: 0,
            ident: 1,
            dont_frag: true,
        }
        .emit(ip)
        .unwrap();
        buf
    }

    #[test]
    fn fabric_to_tunnel_decrements_ttl_and_keeps_each_flow_on_one_tunnel() {
        let (f, t, h) = (fabric(), tables(), FlowHasher::new(7));
        let mut seen = [0usize; 2];
        for sport in 0..200u16 {
            let mut first = None;
            for _ in 0..3 {
                let mut pkt = vxlan_udp(
                    100,
                    OUR_MAC,
                    "10.1.0.5".parse().unwrap(),
                    "10.2.0.9".parse().unwrap(),
                    sport,
                    64,
                    100,
                );
                let hit = from_fabric(&f, &t, &h, &mut pkt).unwrap();
                assert_eq!(hit.inner, 22..22 + 128);
                let ip = ipv4::Packet::new_checked(&pkt[hit.inner.clone()]).unwrap();
                assert_eq!(ip.ttl(), 63);
                assert!(ip.verify_checksum());
                assert!(
                    *first.get_or_insert(hit.tunnel) == hit.tunnel,
                    "a flow moved between tunnels"
                );
            }
            seen[first.unwrap().0 as usize] += 1;
        }
        assert!(
            seen[0] > 50 && seen[1] > 50,
            "flows are spread over both tunnels: {seen:?}"
        );
    }

    #[test]
    fn fabric_drops_are_counted_under_their_own_reason() {
        let (f, t, h) = (fabric(), tables(), FlowHasher::new(7));
        let (src, dst) = ("10.1.0.5".parse().unwrap(), "10.2.0.9".parse().unwrap());
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (
                vxlan_udp(101, OUR_MAC, src, dst, 1, 64, 10),
                DropReason::WrongVni,
            ),
            (
                vxlan_udp(100, LEAF_MAC, src, dst, 1, 64, 10),
                DropReason::WrongMac,
            ),
            (
                vxlan_udp(100, OUR_MAC, src, "10.9.0.1".parse().unwrap(), 1, 64, 10),
                DropReason::UnknownPrefix,
            ),
            (
                vxlan_udp(100, OUR_MAC, src, dst, 1, 1, 10),
                DropReason::TtlExceeded,
            ),
            (
                vxlan_udp(100, OUR_MAC, src, dst, 1, 64, 1500),
                DropReason::TooBig,
            ),
            (
                vxlan_udp(100, OUR_MAC, src, dst, 1, 64, 10)[..30].to_vec(),
                DropReason::Ipv4Truncated,
            ),
            (vec![0u8; 4], DropReason::VxlanTruncated),
        ];
        for (mut pkt, reason) in cases {
            assert_eq!(from_fabric(&f, &t, &h, &mut pkt).map(|_| ()), Err(reason));
        }
    }

    #[test]
    fn tunnel_to_fabric_checks_the_source_and_builds_vxlan_for_the_leaf() {
        let (f, t) = (fabric(), tables());
        let mut buf = vec![0u8; 2048];
        let pkt = vxlan_udp(
            100,
            OUR_MAC,
            "10.2.0.9".parse().unwrap(),
            "10.1.0.5".parse().unwrap(),
            9,
            64,
            50,
        );
        let inner = &pkt[22..];
        buf[FABRIC_HEADROOM..FABRIC_HEADROOM + inner.len()].copy_from_slice(inner);
        let (len, to) = to_fabric(&f, &t, TunnelId(1), &mut buf, inner.len()).unwrap();
        assert_eq!(to, "192.0.2.10:4789".parse().unwrap());
        assert_eq!(len, FABRIC_HEADROOM + inner.len());
        let vx = vxlan::Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(vx.vni(), 100);
        let frame = ethernet::Frame::new_checked(vx.payload()).unwrap();
        assert_eq!(
            (frame.dst(), frame.src(), frame.ethertype()),
            (LEAF_MAC, OUR_MAC, ethertype::IPV4)
        );
        let ip = ipv4::Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(ip.ttl(), 63);
        assert!(ip.verify_checksum());

        // 10.3/16 is routed through tunnel 0 only: tunnel 1 may not send from it.
        let pkt = vxlan_udp(
            100,
            OUR_MAC,
            "10.3.0.9".parse().unwrap(),
            "10.1.0.5".parse().unwrap(),
            9,
            64,
            50,
        );
        buf[FABRIC_HEADROOM..FABRIC_HEADROOM + pkt.len() - 22].copy_from_slice(&pkt[22..]);
        assert_eq!(
            to_fabric(&f, &t, TunnelId(1), &mut buf, pkt.len() - 22),
            Err(DropReason::SourceNotAllowed)
        );
        // Nowhere to go in this datacenter.
        let pkt = vxlan_udp(
            100,
            OUR_MAC,
            "10.2.0.9".parse().unwrap(),
            "10.8.0.1".parse().unwrap(),
            9,
            64,
            50,
        );
        buf[FABRIC_HEADROOM..FABRIC_HEADROOM + pkt.len() - 22].copy_from_slice(&pkt[22..]);
        assert_eq!(
            to_fabric(&f, &t, TunnelId(0), &mut buf, pkt.len() - 22),
            Err(DropReason::UnknownPrefix)
        );
    }

    #[test]
    fn too_big_packets_get_fragmentation_needed_with_the_tunnel_mtu() {
        let (f, t, h) = (fabric(), tables(), FlowHasher::new(7));
        let src: Ipv4Addr = "10.1.0.5".parse().unwrap();
        let mut pkt = vxlan_udp(100, OUR_MAC, src, "10.2.0.9".parse().unwrap(), 1, 64, 1500);
        assert_eq!(
            from_fabric(&f, &t, &h, &mut pkt).map(|_| ()),
            Err(DropReason::TooBig)
        );
        let offending = fabric_inner(&pkt).unwrap();
        assert_eq!(offending.len(), 1528);
        let mut buf = vec![0u8; 2048];
        let (len, to) =
            too_big_reply(&f, &t, "192.0.2.1".parse().unwrap(), offending, &mut buf).unwrap();
        assert_eq!(
            to,
            "192.0.2.10:4789".parse().unwrap(),
            "back to the sender's leaf"
        );
        let vx = vxlan::Packet::new_checked(&buf[..len]).unwrap();
        let frame = ethernet::Frame::new_checked(vx.payload()).unwrap();
        assert_eq!(frame.dst(), LEAF_MAC);
        let ip = ipv4::Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.protocol()),
            ("192.0.2.1".parse().unwrap(), src, ip_proto::ICMP)
        );
        let msg = icmp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (msg.msg_type(), msg.code(), msg.next_hop_mtu_v4()),
            (3, 4, 1420)
        );
        assert!(msg.verify_checksum_v4());
        // Without DF nothing is sent back.
        let mut no_df = offending.to_vec();
        no_df[6] &= !0x40;
        assert_eq!(
            too_big_reply(&f, &t, "192.0.2.1".parse().unwrap(), &no_df, &mut buf),
            Err(DropReason::TooBig)
        );
    }
}
