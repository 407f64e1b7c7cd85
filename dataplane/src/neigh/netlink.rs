//! Next hops from the kernel over rtnetlink: a route lookup for each question, as
//! `ip route get DST from SRC oif IF` makes it (so policy routing, e.g. one table per uplink
//! chosen by source address, is honoured, and IPv6 works), then one dump of the neighbour
//! tables of both families for the next hop's MAC on that interface.
//!
//! The messages are built and parsed by `netlink-packet-route`; this module only asks and
//! picks answers. Every reply is bounded by what the kernel sent; nothing here panics on it.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::wire::ethernet::MacAddr;

/// Replies are read in chunks this large (a neighbour dump spans several).
const RECV_BUFFER: usize = 64 * 1024;
/// Most messages read for one request: a dump of a huge neighbour table stops there.
const MAX_MESSAGES: usize = 65_536;

/// One usable neighbour entry: interface index, address, MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// An rtnetlink socket in the calling thread's network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Where a datagram to `dst` from `src` out of interface `oif` goes next: the route's
    /// gateway, or `dst` itself on a directly connected route. `None` when no route leaves
    /// by that interface.
    pub fn next_hop(
        &mut self,
        dst: IpAddr,
        src: Option<IpAddr>,
        oif: u32,
    ) -> io::Result<Option<IpAddr>> {
        let mut msg = RouteMessage::default();
        let (family, bits) = match dst {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        msg.header.address_family = family;
        msg.header.destination_prefix_length = bits;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        if let Some(src) = src.filter(|s| s.is_ipv4() == dst.is_ipv4()) {
            msg.header.source_prefix_length = bits;
            msg.attributes
                .push(RouteAttribute::Source(RouteAddress::from(src)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        let mut answer = None;
        self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST, |reply| {
            if let RouteNetlinkMessage::NewRoute(route) = reply {
                answer = Some(route_next_hop(&route, dst, oif));
            }
        })?;
        Ok(answer.flatten())
    }

    /// Every complete neighbour entry (IPv4 and IPv6) with a 6-byte link-layer address.
    pub fn neighbours(&mut self) -> io::Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        self.request(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
            |reply| {
                if let RouteNetlinkMessage::NewNeighbour(n) = reply {
                    out.extend(usable_neighbour(&n));
                }
            },
        )?;
        Ok(out)
    }

    /// Sends one request and hands each reply message to `each` until the answer is complete
    /// (one message, or the end of a dump). A kernel error comes back as an `io::Error`.
    fn request(
        &mut self,
        body: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(body));
        req.finalize();
        let mut bytes = vec![0; req.buffer_len()];
        req.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        let dump = flags & NLM_F_DUMP != 0;
        let mut seen = 0;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let Some(bytes) = self.buf.get(at..n) else {
                    break;
                };
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                seen += 1;
                if msg.header.sequence_number == self.seq {
                    match msg.payload {
                        NetlinkPayload::InnerMessage(inner) => {
                            each(inner);
                            if !dump {
                                return Ok(());
                            }
                        }
                        NetlinkPayload::Done(_) => return Ok(()),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                                None => Ok(()),
                            };
                        }
                        _ => {}
                    }
                }
                if len == 0 || seen >= MAX_MESSAGES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "an endless or malformed netlink reply",
                    ));
                }
                at += len;
            }
        }
    }
}

/// The next hop a route reply gives for `dst` out of `oif`.
fn route_next_hop(route: &RouteMessage, dst: IpAddr, oif: u32) -> Option<IpAddr> {
    let mut gateway = None;
    let mut out = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => out = Some(*i),
            _ => {}
        }
    }
    // The kernel may pick another interface than asked when none of that one's routes
    // match: that is no answer for this way out.
    (out == Some(oif)).then_some(gateway.unwrap_or(dst))
}

/// A neighbour entry the workers can send to: resolved (not incomplete or failed) with an
/// Ethernet address.
fn usable_neighbour(n: &NeighbourMessage) -> Option<Neighbour> {
    if matches!(
        n.header.state,
        NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
    ) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                ip = Some(IpAddr::V4(*a));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a));
            }
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr);
            }
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: n.header.ifindex,
        ip: ip?,
        mac: mac.filter(|m| m.0 != [0; 6])?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.attributes = attrs;
        r
    }

    #[test]
    fn a_route_reply_gives_its_gateway_or_the_destination_on_the_asked_interface() {
        let dst: IpAddr = "172.16.21.1".parse().unwrap();
        let via = RouteAddress::Inet("172.16.11.2".parse().unwrap());
        let r = route(vec![RouteAttribute::Gateway(via), RouteAttribute::Oif(7)]);
        assert_eq!(
            route_next_hop(&r, dst, 7),
            Some("172.16.11.2".parse().unwrap())
        );
        assert_eq!(route_next_hop(&r, dst, 8), None, "another interface");
        let direct = route(vec![RouteAttribute::Oif(7)]);
        assert_eq!(route_next_hop(&direct, dst, 7), Some(dst));
        assert_eq!(route_next_hop(&route(vec![]), dst, 7), None);
    }

    #[test]
    fn only_resolved_entries_with_ethernet_addresses_are_usable() {
        let entry = |state, mac: Vec<u8>| {
            let mut n = NeighbourMessage::default();
            n.header.ifindex = 3;
            n.header.state = state;
            n.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                    "fe80::1".parse().unwrap(),
                )));
            n.attributes.push(NeighbourAttribute::LinkLayerAddress(mac));
            n
        };
        let mac = vec![2, 0, 0, 0, 0, 1];
        assert_eq!(
            usable_neighbour(&entry(NeighbourState::Reachable, mac.clone())),
            Some(Neighbour {
                ifindex: 3,
                ip: "fe80::1".parse().unwrap(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
            })
        );
        assert!(usable_neighbour(&entry(NeighbourState::Stale, mac.clone())).is_some());
        assert!(usable_neighbour(&entry(NeighbourState::Permanent, mac.clone())).is_some());
        assert!(usable_neighbour(&entry(NeighbourState::Incomplete, mac.clone())).is_none());
        assert!(usable_neighbour(&entry(NeighbourState::Failed, mac)).is_none());
        assert!(usable_neighbour(&entry(NeighbourState::Reachable, vec![1, 2, 3])).is_none());
        assert!(usable_neighbour(&entry(NeighbourState::Reachable, vec![0; 6])).is_none());
    }

    #[test]
    fn the_kernel_answers_for_loopback() {
        // Every namespace has lo; a route lookup to 127.0.0.1 out of lo is direct.
        let mut rtnl = Rtnl::open().unwrap();
        let lo = crate::ifname::index("lo").unwrap();
        let dst: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(rtnl.next_hop(dst, None, lo).unwrap(), Some(dst));
        // A dump completes (loopback has no neighbours with Ethernet addresses).
        assert!(rtnl.neighbours().unwrap().iter().all(|n| n.ifindex != lo));
    }
}
