//! Next hops from the kernel's tables, for backends that write Ethernet headers themselves
//! (AF_XDP): which MAC address a datagram to an IPv4 address goes to, from `/proc/net/route`
//! (longest prefix match, the gateway if the route has one) and `/proc/net/arp` (complete
//! entries). Both files are per network namespace. Parsing is strict and never panics: a line
//! that does not parse is skipped.

use std::net::{IpAddr, Ipv4Addr};

use crate::wire::ethernet::MacAddr;

/// One IPv4 route: destination, mask, gateway (unspecified when directly connected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route4 {
    pub dest: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// `/proc/net/route` prints addresses as the hex of the in-memory (network order) u32, read
/// as a little-endian number.
fn proc_addr(hex: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(v.to_le_bytes()))
}

/// The routes of `/proc/net/route` text that are up (flag RTF_UP).
pub fn parse_routes(text: &str) -> Vec<Route4> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            if flags & 1 == 0 {
                return None;
            }
            Some(Route4 {
                dest: proc_addr(f.get(1)?)?,
                gateway: proc_addr(f.get(2)?)?,
                mask: proc_addr(f.get(7)?)?,
            })
        })
        .collect()
}

/// Complete entries of `/proc/net/arp` text (flag ATF_COM).
pub fn parse_arp(text: &str) -> Vec<(Ipv4Addr, MacAddr)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ip: Ipv4Addr = f.first()?.parse().ok()?;
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None;
            }
            let mac = parse_mac(f.get(3)?)?;
            Some((ip, mac))
        })
        .collect()
}

fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(out))
}

/// The IPv4 next hop for `dst`: the gateway of the longest matching route, or `dst` itself
/// when that route is directly connected.
pub fn next_hop(routes: &[Route4], dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let d = u32::from(dst);
    routes
        .iter()
        .filter(|r| d & u32::from(r.mask) == u32::from(r.dest) & u32::from(r.mask))
        .max_by_key(|r| u32::from(r.mask).count_ones())
        .map(|r| {
            if r.gateway.is_unspecified() {
                dst
            } else {
                r.gateway
            }
        })
}

/// Resolves each of `wanted` (IPv4 only) to a MAC through the kernel's tables, read now.
pub fn resolve(wanted: impl IntoIterator<Item = IpAddr>) -> Vec<(IpAddr, MacAddr)> {
    let (Ok(routes), Ok(arp)) = (
        std::fs::read_to_string("/proc/net/route"),
        std::fs::read_to_string("/proc/net/arp"),
    ) else {
        return Vec::new();
    };
    let (routes, arp) = (parse_routes(&routes), parse_arp(&arp));
    wanted
        .into_iter()
        .filter_map(|ip| {
            let IpAddr::V4(v4) = ip else { return None };
            let hop = next_hop(&routes, v4)?;
            let mac = arp.iter().find(|(a, _)| *a == hop)?.1;
            Some((ip, mac))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
vx0\t0000000A\t0200000A\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0
down\t0000000B\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0
junk line
";

    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         02:00:00:00:00:01     *        eth0
10.0.0.2         0x1         0x2         02:00:00:00:00:02     *        vx0
192.168.1.9      0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.9         0x1         0x2         zz:00:00:00:00:02     *        vx0
";

    #[test]
    fn routes_parse_as_the_kernel_prints_them() {
        let r = parse_routes(ROUTES);
        assert_eq!(r.len(), 3, "the down route and the junk line are skipped");
        assert_eq!(r[1].dest, Ipv4Addr::new(192, 168, 1, 0));
        assert_eq!(r[1].mask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(r[0].gateway, Ipv4Addr::new(192, 168, 1, 1));
    }

    #[test]
    fn next_hop_is_the_longest_match_gateway_or_the_destination() {
        let r = parse_routes(ROUTES);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(next_hop(&r, ip("192.168.1.7")), Some(ip("192.168.1.7")));
        assert_eq!(next_hop(&r, ip("10.0.5.5")), Some(ip("10.0.0.2")));
        assert_eq!(next_hop(&r, ip("8.8.8.8")), Some(ip("192.168.1.1")));
        assert_eq!(next_hop(&[], ip("8.8.8.8")), None);
    }

    #[test]
    fn only_complete_arp_entries_with_valid_macs_count() {
        let a = parse_arp(ARP);
        assert_eq!(
            a,
            vec![
                (Ipv4Addr::new(192, 168, 1, 1), MacAddr([2, 0, 0, 0, 0, 1])),
                (Ipv4Addr::new(10, 0, 0, 2), MacAddr([2, 0, 0, 0, 0, 2])),
            ]
        );
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
    }
}
