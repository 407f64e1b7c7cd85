//! Next hops from the kernel's tables, for backends that write Ethernet headers themselves
//! (AF_XDP): which MAC address a datagram to an address goes to when it leaves through a given
//! interface from a given source. A gateway with one uplink per transit reaches the same peer
//! through each, by a different router: the interface is part of the question.
//!
//! The kernel is asked over rtnetlink ([`netlink`]): a route lookup per question, as
//! `ip route get DST from SRC oif IF` makes it (policy routing honoured, IPv4 and IPv6), and
//! the neighbour tables. Where rtnetlink cannot be opened, IPv4 questions fall back to
//! `/proc/net/route` (the main table only: longest prefix match among that interface's
//! routes, the gateway if the route has one) and `/proc/net/arp` (complete entries on that
//! interface). Both are read in the calling thread's namespace. A question with no answer
//! leaves the caller sending through the kernel. Parsing is strict and never panics: a line
//! that does not parse is skipped.

pub mod netlink;

use std::net::{IpAddr, Ipv4Addr};

use crate::wire::ethernet::MacAddr;

/// One IPv4 route: interface, destination, mask, gateway (unspecified when directly
/// connected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route4 {
    pub iface: String,
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
                iface: (*f.first()?).to_owned(),
                dest: proc_addr(f.get(1)?)?,
                gateway: proc_addr(f.get(2)?)?,
                mask: proc_addr(f.get(7)?)?,
            })
        })
        .collect()
}

/// One complete neighbour entry: address, MAC, interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arp {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub iface: String,
}

/// Complete entries of `/proc/net/arp` text (flag ATF_COM).
pub fn parse_arp(text: &str) -> Vec<Arp> {
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
            Some(Arp {
                ip,
                mac,
                iface: (*f.get(5)?).to_owned(),
            })
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

/// The IPv4 next hop for `dst` out of `iface`: the gateway of the longest matching route
/// through that interface, or `dst` itself when that route is directly connected.
pub fn next_hop(routes: &[Route4], iface: &str, dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let d = u32::from(dst);
    routes
        .iter()
        .filter(|r| r.iface == iface)
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

/// One question: the MAC of the next hop for `dst`, sent from `src` out of `interface`.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    pub interface: &'a str,
    pub src: Option<IpAddr>,
    pub dst: IpAddr,
}

/// Resolves each of `wanted` through the kernel's tables, read now. Returns the index into
/// `wanted` of each one resolved, with its MAC.
pub fn resolve(wanted: &[Question<'_>]) -> Vec<(usize, MacAddr)> {
    match netlink::Rtnl::open().and_then(|mut rtnl| resolve_netlink(&mut rtnl, wanted)) {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "rtnetlink unavailable: reading /proc (IPv4, main table)");
            resolve_proc(wanted.iter().map(|q| (q.interface, q.dst)))
        }
    }
}

fn resolve_netlink(
    rtnl: &mut netlink::Rtnl,
    wanted: &[Question<'_>],
) -> std::io::Result<Vec<(usize, MacAddr)>> {
    let mut hops = Vec::with_capacity(wanted.len());
    for (i, q) in wanted.iter().enumerate() {
        let Ok(ifindex) = crate::ifname::index(q.interface) else {
            continue;
        };
        // No route out of that interface is no answer, not a failure.
        if let Ok(Some(hop)) = rtnl.next_hop(q.dst, q.src, ifindex) {
            hops.push((i, ifindex, hop));
        }
    }
    if hops.is_empty() {
        return Ok(Vec::new());
    }
    let neighbours = rtnl.neighbours()?;
    Ok(hops
        .into_iter()
        .filter_map(|(i, ifindex, hop)| {
            let n = neighbours
                .iter()
                .find(|n| n.ifindex == ifindex && n.ip == hop)?;
            Some((i, n.mac))
        })
        .collect())
}

/// The `/proc` fallback: IPv4 only, main table only.
fn resolve_proc<'a>(wanted: impl IntoIterator<Item = (&'a str, IpAddr)>) -> Vec<(usize, MacAddr)> {
    // The calling thread's namespace: `/proc/net` follows the process's main thread, which
    // can be in another one (a thread that entered a namespace with setns).
    let (Ok(routes), Ok(arp)) = (
        std::fs::read_to_string("/proc/thread-self/net/route"),
        std::fs::read_to_string("/proc/thread-self/net/arp"),
    ) else {
        return Vec::new();
    };
    let (routes, arp) = (parse_routes(&routes), parse_arp(&arp));
    wanted
        .into_iter()
        .enumerate()
        .filter_map(|(i, (iface, ip))| {
            let IpAddr::V4(v4) = ip else { return None };
            let hop = next_hop(&routes, iface, v4)?;
            let entry = arp.iter().find(|a| a.ip == hop && a.iface == iface)?;
            Some((i, entry.mac))
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
eth1\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t0000000A\t0102A8C0\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0
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
        assert_eq!(r.len(), 5, "the down route and the junk line are skipped");
        assert_eq!(r[2].iface, "vx0");
        assert_eq!(r[1].dest, Ipv4Addr::new(192, 168, 1, 0));
        assert_eq!(r[1].mask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(r[0].gateway, Ipv4Addr::new(192, 168, 1, 1));
    }

    #[test]
    fn next_hop_is_the_longest_match_gateway_or_the_destination() {
        let r = parse_routes(ROUTES);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            next_hop(&r, "eth0", ip("192.168.1.7")),
            Some(ip("192.168.1.7"))
        );
        assert_eq!(next_hop(&r, "vx0", ip("10.0.5.5")), Some(ip("10.0.0.2")));
        assert_eq!(next_hop(&r, "eth0", ip("8.8.8.8")), Some(ip("192.168.1.1")));
        assert_eq!(next_hop(&[], "eth0", ip("8.8.8.8")), None);
    }

    #[test]
    fn the_same_destination_has_a_next_hop_per_interface() {
        let r = parse_routes(ROUTES);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        // 10.0.5.5 goes through vx0's gateway or eth1's, as asked; eth0 only by default.
        assert_eq!(next_hop(&r, "vx0", ip("10.0.5.5")), Some(ip("10.0.0.2")));
        assert_eq!(
            next_hop(&r, "eth1", ip("10.0.5.5")),
            Some(ip("192.168.2.1"))
        );
        assert_eq!(
            next_hop(&r, "eth0", ip("10.0.5.5")),
            Some(ip("192.168.1.1"))
        );
        // An interface with no route there has no answer (the kernel sends instead).
        assert_eq!(next_hop(&r, "down", ip("10.0.5.5")), None);
        assert_eq!(next_hop(&r, "eth9", ip("10.0.5.5")), None);
        // Neighbour entries count only on their own interface.
        let arp = parse_arp(ARP);
        assert!(arp
            .iter()
            .any(|a| a.ip == ip("10.0.0.2") && a.iface == "vx0"));
        assert!(!arp
            .iter()
            .any(|a| a.ip == ip("10.0.0.2") && a.iface == "eth0"));
    }

    #[test]
    fn only_complete_arp_entries_with_valid_macs_count() {
        let a = parse_arp(ARP);
        let entry = |ip, mac, iface: &str| Arp {
            ip,
            mac,
            iface: iface.to_owned(),
        };
        assert_eq!(
            a,
            vec![
                entry(
                    Ipv4Addr::new(192, 168, 1, 1),
                    MacAddr([2, 0, 0, 0, 0, 1]),
                    "eth0"
                ),
                entry(
                    Ipv4Addr::new(10, 0, 0, 2),
                    MacAddr([2, 0, 0, 0, 0, 2]),
                    "vx0"
                ),
            ]
        );
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
    }
}
