//! Builds one flow's packet once, then rewrites only what changes per packet: the payload
//! header's sequence and timestamp, the TCP sequence number, and the checksums over them.
//!
//! The checksums are updated in O(1): at build time the ones' complement sum of everything a
//! checksum covers is taken with the changing fields and the checksum field itself zeroed
//! (the "base"); per packet the changing fields' 16-bit words are added to the base and the
//! result complemented. This works because every changing field starts at an even offset of
//! the region the checksum covers (RFC 1071 §2: the sum is word-wise and order-free).
//!
//! Two encapsulations: [`Encap::Vxlan`] starts at the VXLAN header, the datagram payload for a
//! UDP socket (the kernel adds the outer UDP, IP and Ethernet headers); [`Encap::Frame`] is a
//! whole Ethernet frame with outer IP and UDP, for a transport that sends frames (AF_XDP).

use std::net::IpAddr;

use gatewan_dataplane::wire::checksum::{self, Checksum};
use gatewan_dataplane::wire::ethernet::{self, ethertype, MacAddr};
use gatewan_dataplane::wire::{ip_proto, ipv4, ipv6, udp, vxlan};

use crate::payload::{self, PayloadHeader};
use crate::spec::{FiveTuple, InnerProto, SpecError, TrafficSpec};
use crate::tcp;

/// Hop limit / TTL of generated packets, inner and outer.
pub const TTL: u8 = 64;

/// The outer headers of a whole frame, as a leaf VTEP would write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OuterSpec {
    pub src_mac: MacAddr,
    /// The next hop's MAC (the gateway's fabric interface).
    pub dst_mac: MacAddr,
    /// The leaf's VTEP address.
    pub src_ip: IpAddr,
    /// The gateway's VTEP address.
    pub dst_ip: IpAddr,
    /// Usually [`vxlan::PORT`].
    pub dst_port: u16,
}

/// Where the packets handed to a transport start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// At the VXLAN header: the payload of a UDP datagram.
    Vxlan,
    /// At the outer Ethernet header: a whole frame.
    Frame(OuterSpec),
}

/// Why a packet cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("outer source {src} and destination {dst} are not the same address family")]
    OuterFamilies { src: IpAddr, dst: IpAddr },
    #[error("a {0}-byte frame is larger than an IP packet can be")]
    TooLarge(usize),
}

/// Offsets shared by every packet of one builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes handed to the transport.
    pub len: usize,
    /// Offset of the VXLAN header.
    pub vxlan: usize,
    /// Offset of the inner IP header.
    pub inner_ip: usize,
    /// Offset of the inner UDP/TCP header.
    pub l4: usize,
    /// Offset of the payload header.
    pub payload: usize,
    /// Offset of the outer UDP header, when the frame has one.
    pub outer_udp: Option<usize>,
    /// The outer UDP checksum is computed (IPv6) rather than zero (IPv4, RFC 7348 §5).
    outer_udp_checksum: bool,
    l4_checksum: usize,
    tcp_seq: Option<usize>,
    /// Bytes of payload after the transport header (for the TCP sequence advance).
    l4_payload_len: usize,
    inner_proto: InnerProto,
}

/// Builds packets for the flows of one [`TrafficSpec`].
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    spec: TrafficSpec,
    encap: Encap,
    layout: Layout,
}

/// One flow's packet, built once and restamped per send.
#[derive(Clone, Debug)]
pub struct FlowPacket {
    flow: u32,
    buf: Box<[u8]>,
    layout: Layout,
    /// Base sums (see the module docs).
    l4_base: u16,
    outer_base: u16,
    tcp_isn: u32,
}

fn put<const N: usize>(buf: &mut [u8], off: usize, v: [u8; N]) {
    if let Some(s) = buf.get_mut(off..).and_then(|s| s.first_chunk_mut::<N>()) {
        *s = v;
    }
}

fn region(buf: &[u8], from: usize) -> &[u8] {
    buf.get(from..).unwrap_or(&[])
}

impl PacketBuilder {
    pub fn new(spec: TrafficSpec, encap: Encap) -> Result<Self, BuildError> {
        spec.validate()?;
        let (outer_len, outer_udp, outer_udp_checksum) = match encap {
            Encap::Vxlan => (0, None, false),
            Encap::Frame(o) => {
                let ip_len = match (o.src_ip, o.dst_ip) {
                    (IpAddr::V4(_), IpAddr::V4(_)) => ipv4::MIN_HEADER_LEN,
                    (IpAddr::V6(_), IpAddr::V6(_)) => ipv6::HEADER_LEN,
                    (src, dst) => return Err(BuildError::OuterFamilies { src, dst }),
                };
                let udp_at = ethernet::HEADER_LEN + ip_len;
                (
                    udp_at + udp::HEADER_LEN,
                    Some(udp_at),
                    ip_len == ipv6::HEADER_LEN,
                )
            }
        };
        let vxlan_at = outer_len;
        let inner_ip = vxlan_at + vxlan::HEADER_LEN + ethernet::HEADER_LEN;
        let l4 = inner_ip + spec.ip_header_len();
        let payload = l4 + spec.l4_header_len();
        let len = inner_ip + spec.size;
        if outer_udp.is_some() && len - ethernet::HEADER_LEN > usize::from(u16::MAX) {
            return Err(BuildError::TooLarge(len));
        }
        let (l4_checksum, tcp_seq) = match spec.proto {
            InnerProto::Udp => (l4 + 6, None),
            InnerProto::Tcp => (l4 + tcp::off::CHECKSUM, Some(l4 + tcp::off::SEQ)),
        };
        let layout = Layout {
            len,
            vxlan: vxlan_at,
            inner_ip,
            l4,
            payload,
            outer_udp,
            outer_udp_checksum,
            l4_checksum,
            tcp_seq,
            l4_payload_len: spec.size - spec.ip_header_len() - spec.l4_header_len(),
            inner_proto: spec.proto,
        };
        Ok(Self {
            spec,
            encap,
            layout,
        })
    }

    pub fn spec(&self) -> &TrafficSpec {
        &self.spec
    }

    pub fn encap(&self) -> Encap {
        self.encap
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Flow `flow`'s packet with sequence 0 and timestamp 0, checksums correct.
    pub fn build(&self, flow: u32) -> FlowPacket {
        let t = self.spec.flow(flow);
        let l = self.layout;
        let mut buf = vec![0u8; l.len].into_boxed_slice();

        // Payload: header (sequence and timestamp zero: the base) and filler.
        if let Some(p) = buf.get_mut(l.payload..) {
            PayloadHeader {
                flow,
                seq: 0,
                timestamp_ns: 0,
            }
            .emit(p);
            for (i, b) in p.iter_mut().enumerate().skip(payload::LEN) {
                *b = payload::filler(i);
            }
        }

        // Inner transport header; checksums are filled by the first stamp below.
        let l4_len = self.spec.size - self.spec.ip_header_len();
        let tcp_isn = t.hash().rotate_left(13);
        if let Some(seg) = buf.get_mut(l.l4..) {
            match self.spec.proto {
                InnerProto::Udp => {
                    let r = udp::Repr {
                        src_port: t.src_port,
                        dst_port: t.dst_port,
                        payload_len: l.l4_payload_len,
                    };
                    let _ = r.emit(seg, udp::ChecksumMode::None);
                }
                InnerProto::Tcp => {
                    tcp::Repr {
                        src_port: t.src_port,
                        dst_port: t.dst_port,
                        seq: 0,
                        ack: t.hash(),
                        flags: tcp::flags::ACK,
                        window: 0xffff,
                    }
                    .emit(seg);
                }
            }
        }
        let proto = match self.spec.proto {
            InnerProto::Udp => ip_proto::UDP,
            InnerProto::Tcp => ip_proto::TCP,
        };
        let mut l4_sum = pseudo_header(&t, proto, l4_len);
        l4_sum.add_bytes(region(&buf, l.l4));
        let l4_base = l4_sum.sum();

        // Inner IP and Ethernet, VXLAN.
        let ethertype = emit_inner_ip(&t, proto, l4_len, region_mut(&mut buf, l.inner_ip));
        let _ = ethernet::Repr {
            dst: self.spec.router_mac,
            src: self.spec.leaf_mac,
            vlan: None,
            ethertype,
        }
        .emit(region_mut(&mut buf, l.inner_ip - ethernet::HEADER_LEN));
        let _ = vxlan::Repr { vni: self.spec.vni }.emit(region_mut(&mut buf, l.vxlan));

        // Outer headers of a whole frame.
        let mut outer_base = 0;
        if let (Encap::Frame(o), Some(udp_at)) = (self.encap, l.outer_udp) {
            let udp_len = l.len - udp_at;
            let r = udp::Repr {
                src_port: t.outer_src_port(),
                dst_port: o.dst_port,
                payload_len: udp_len - udp::HEADER_LEN,
            };
            let _ = r.emit(region_mut(&mut buf, udp_at), udp::ChecksumMode::None);
            if let (IpAddr::V6(s), IpAddr::V6(d)) = (o.src_ip, o.dst_ip) {
                let mut c = checksum::pseudo_header_v6(&s, &d, ip_proto::UDP, udp_len as u32);
                // The inner checksum field is still zero here: it is added per packet.
                c.add_bytes(region(&buf, udp_at));
                outer_base = c.sum();
            }
            let ip = region_mut(&mut buf, ethernet::HEADER_LEN);
            let ethertype = match (o.src_ip, o.dst_ip) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    let _ = ipv4::Repr {
                        src,
                        dst,
                        protocol: ip_proto::UDP,
                        payload_len: udp_len,
                        ttl: TTL,
                        tos: 0,
                        ident: 0,
                        dont_frag: true,
                    }
                    .emit(ip);
                    ethertype::IPV4
                }
                (src, dst) => {
                    let _ = ipv6::Repr {
                        src: v6(src),
                        dst: v6(dst),
                        next_header: ip_proto::UDP,
                        payload_len: udp_len,
                        hop_limit: TTL,
                        traffic_class: 0,
                        flow_label: t.hash() & 0x000f_ffff,
                    }
                    .emit(ip);
                    ethertype::IPV6
                }
            };
            let _ = ethernet::Repr {
                dst: o.dst_mac,
                src: o.src_mac,
                vlan: None,
                ethertype,
            }
            .emit(&mut buf);
        }

        let mut p = FlowPacket {
            flow,
            buf,
            layout: l,
            l4_base,
            outer_base,
            tcp_isn,
        };
        p.stamp(0, 0);
        p
    }
}

fn v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

fn region_mut(buf: &mut [u8], from: usize) -> &mut [u8] {
    match buf.get_mut(from..) {
        Some(s) => s,
        None => &mut [],
    }
}

fn pseudo_header(t: &FiveTuple, proto: u8, l4_len: usize) -> Checksum {
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, proto, l4_len as u16),
        (s, d) => checksum::pseudo_header_v6(&v6(s), &v6(d), proto, l4_len as u32),
    }
}

/// Writes the inner IP header; returns its EtherType.
fn emit_inner_ip(t: &FiveTuple, proto: u8, l4_len: usize, buf: &mut [u8]) -> u16 {
    match (t.src, t.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let _ = ipv4::Repr {
                src,
                dst,
                protocol: proto,
                payload_len: l4_len,
                ttl: TTL,
                tos: 0,
                ident: 0,
                dont_frag: true,
            }
            .emit(buf);
            ethertype::IPV4
        }
        (src, dst) => {
            let _ = ipv6::Repr {
                src: v6(src),
                dst: v6(dst),
                next_header: proto,
                payload_len: l4_len,
                hop_limit: TTL,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(buf);
            ethertype::IPV6
        }
    }
}

impl FlowPacket {
    pub fn flow(&self) -> u32 {
        self.flow
    }

    /// The packet as handed to the transport.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Mutable access, for tests that corrupt packets.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Writes sequence `seq` and send time `timestamp_ns`, and the checksums that cover them.
    /// No allocation, O(1) in the packet size.
    #[inline]
    pub fn stamp(&mut self, seq: u64, timestamp_ns: u64) {
        let l = &self.layout;
        let buf = &mut self.buf[..];
        put(buf, l.payload + payload::off::SEQ, seq.to_be_bytes());
        put(
            buf,
            l.payload + payload::off::TIMESTAMP,
            timestamp_ns.to_be_bytes(),
        );
        let mut changed = Checksum::new();
        changed
            .add_u32((seq >> 32) as u32)
            .add_u32(seq as u32)
            .add_u32((timestamp_ns >> 32) as u32)
            .add_u32(timestamp_ns as u32);
        if let Some(at) = l.tcp_seq {
            // Like a sender's data segments: the sequence advances by the payload length.
            let s = self
                .tcp_isn
                .wrapping_add((seq as u32).wrapping_mul(l.l4_payload_len as u32));
            put(buf, at, s.to_be_bytes());
            changed.add_u32(s);
        }
        let changed = changed.sum();
        let mut l4 = *Checksum::new().add_u16(self.l4_base).add_u16(changed);
        let mut c = l4.finish();
        if c == 0 && l.inner_proto == InnerProto::Udp {
            // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
            c = 0xffff;
        }
        put(buf, l.l4_checksum, c.to_be_bytes());
        if let (Some(udp_at), true) = (l.outer_udp, l.outer_udp_checksum) {
            l4 = *Checksum::new()
                .add_u16(self.outer_base)
                .add_u16(changed)
                .add_u16(c);
            let o = match l4.finish() {
                0 => 0xffff,
                o => o,
            };
            put(buf, udp_at + 6, o.to_be_bytes());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use gatewan_dataplane::wire::ethernet::Frame;

    pub(crate) fn spec(v6: bool, proto: InnerProto, size: usize) -> TrafficSpec {
        let (s, d) = if v6 {
            ("fd00:1::/64", "fd00:2::/64")
        } else {
            ("10.1.0.0/16", "10.2.0.0/16")
        };
        TrafficSpec {
            src_prefix: s.parse().unwrap(),
            dst_prefix: d.parse().unwrap(),
            src_addrs: 3,
            flows: 16,
            size,
            proto,
            vni: 0x1234,
            ..TrafficSpec::default()
        }
    }

    /// Parses an inner Ethernet frame with the dataplane's views and checks every checksum.
    fn check_inner(frame: &[u8], spec: &TrafficSpec, flow: u32, seq: u64, ts: u64) {
        let eth = Frame::new_checked(frame).unwrap();
        assert_eq!(eth.dst(), spec.router_mac);
        assert_eq!(eth.src(), spec.leaf_mac);
        let t = spec.flow(flow);
        let (l4, proto) = if spec.is_ipv6() {
            assert_eq!(eth.ethertype(), ethertype::IPV6);
            let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
            assert_eq!(ip.total_len(), spec.size);
            assert_eq!(IpAddr::V6(ip.src_addr()), t.src);
            assert_eq!(IpAddr::V6(ip.dst_addr()), t.dst);
            (ip.payload().to_vec(), ip.next_header())
        } else {
            assert_eq!(eth.ethertype(), ethertype::IPV4);
            let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.total_len(), spec.size);
            assert_eq!(IpAddr::V4(ip.src_addr()), t.src);
            assert_eq!(IpAddr::V4(ip.dst_addr()), t.dst);
            (ip.payload().to_vec(), ip.protocol())
        };
        let payload = match spec.proto {
            InnerProto::Udp => {
                assert_eq!(proto, ip_proto::UDP);
                let u = udp::Packet::new_checked(&l4[..]).unwrap();
                assert_ne!(u.checksum(), 0);
                let ok = match (t.src, t.dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => u.verify_checksum_v4(s, d),
                    (s, d) => u.verify_checksum_v6(&v6(s), &v6(d)),
                };
                assert!(ok, "udp checksum flow {flow} seq {seq}");
                assert_eq!((u.src_port(), u.dst_port()), (t.src_port, t.dst_port));
                u.payload().to_vec()
            }
            InnerProto::Tcp => {
                assert_eq!(proto, ip_proto::TCP);
                let s = tcp::Segment::new_checked(&l4[..]).unwrap();
                let ok = match (t.src, t.dst) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => s.verify_checksum_v4(a, b),
                    (a, b) => s.verify_checksum_v6(&v6(a), &v6(b)),
                };
                assert!(ok, "tcp checksum flow {flow} seq {seq}");
                assert_eq!(s.flags(), tcp::flags::ACK);
                s.payload().to_vec()
            }
        };
        let h = PayloadHeader::parse(&payload).unwrap();
        assert_eq!(
            h,
            PayloadHeader {
                flow,
                seq,
                timestamp_ns: ts
            }
        );
    }

    #[test]
    fn vxlan_packets_parse_with_dataplane_views() {
        for v6 in [false, true] {
            for proto in [InnerProto::Udp, InnerProto::Tcp] {
                for size in [84, 512, 1420] {
                    let spec = spec(v6, proto, size);
                    let b = PacketBuilder::new(spec.clone(), Encap::Vxlan).unwrap();
                    for flow in [0, 5, 15] {
                        let mut p = b.build(flow);
                        assert_eq!(p.bytes().len(), spec.vxlan_len());
                        for (seq, ts) in [
                            (0, 0),
                            (1, 1_000),
                            (u64::MAX, u64::MAX),
                            (0x1_0000_ffff, 77),
                        ] {
                            p.stamp(seq, ts);
                            let vx = vxlan::Packet::new_checked(p.bytes()).unwrap();
                            assert_eq!(vx.flags(), 0x08);
                            assert_eq!(vx.vni(), 0x1234);
                            check_inner(vx.payload(), &spec, flow, seq, ts);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tcp_sequence_advances_by_payload_length() {
        let spec = spec(false, InnerProto::Tcp, 512);
        let b = PacketBuilder::new(spec, Encap::Vxlan).unwrap();
        let mut p = b.build(1);
        let seg_at = b.layout().l4;
        let seq_of = |p: &FlowPacket| {
            tcp::Segment::new_checked(&p.bytes()[seg_at..])
                .unwrap()
                .seq()
        };
        p.stamp(10, 0);
        let a = seq_of(&p);
        p.stamp(11, 0);
        assert_eq!(seq_of(&p).wrapping_sub(a), 512 - 20 - 20);
    }

    #[test]
    fn whole_frames_parse_with_outer_headers() {
        for outer_v6 in [false, true] {
            let (src_ip, dst_ip): (IpAddr, IpAddr) = if outer_v6 {
                ("fd10::1".parse().unwrap(), "fd10::2".parse().unwrap())
            } else {
                ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
            };
            let o = OuterSpec {
                src_mac: MacAddr([2, 0, 0, 0, 1, 1]),
                dst_mac: MacAddr([2, 0, 0, 0, 1, 2]),
                src_ip,
                dst_ip,
                dst_port: vxlan::PORT,
            };
            let spec = spec(!outer_v6, InnerProto::Udp, 200);
            let b = PacketBuilder::new(spec.clone(), Encap::Frame(o)).unwrap();
            let mut p = b.build(3);
            p.stamp(99, 12345);
            let eth = Frame::new_checked(p.bytes()).unwrap();
            assert_eq!(eth.dst(), o.dst_mac);
            let udp_bytes = if outer_v6 {
                let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
                assert_eq!(ip.next_header(), ip_proto::UDP);
                let u = udp::Packet::new_checked(ip.payload()).unwrap();
                assert!(u.verify_checksum_v6(&ip.src_addr(), &ip.dst_addr()));
                ip.payload().to_vec()
            } else {
                let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
                assert!(ip.verify_checksum());
                let u = udp::Packet::new_checked(ip.payload()).unwrap();
                assert_eq!(u.checksum(), 0, "RFC 7348: zero over IPv4");
                ip.payload().to_vec()
            };
            let u = udp::Packet::new_checked(&udp_bytes[..]).unwrap();
            assert_eq!(u.dst_port(), vxlan::PORT);
            assert_eq!(u.src_port(), spec.flow(3).outer_src_port());
            let vx = vxlan::Packet::new_checked(u.payload()).unwrap();
            check_inner(vx.payload(), &spec, 3, 99, 12345);
        }
        let bad = OuterSpec {
            src_mac: MacAddr([2, 0, 0, 0, 1, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 1, 2]),
            src_ip: "192.0.2.1".parse().unwrap(),
            dst_ip: "fd10::2".parse().unwrap(),
            dst_port: vxlan::PORT,
        };
        assert!(matches!(
            PacketBuilder::new(TrafficSpec::default(), Encap::Frame(bad)),
            Err(BuildError::OuterFamilies { .. })
        ));
    }

    #[test]
    fn minimum_sizes_build() {
        for (v6, proto, min) in [
            (false, InnerProto::Udp, 52),
            (false, InnerProto::Tcp, 64),
            (true, InnerProto::Udp, 72),
            (true, InnerProto::Tcp, 84),
        ] {
            let s = spec(v6, proto, min);
            let b = PacketBuilder::new(s.clone(), Encap::Vxlan).unwrap();
            let mut p = b.build(0);
            p.stamp(3, 4);
            let vx = vxlan::Packet::new_checked(p.bytes()).unwrap();
            check_inner(vx.payload(), &s, 0, 3, 4);
            assert!(PacketBuilder::new(spec(v6, proto, min - 1), Encap::Vxlan).is_err());
        }
    }
}
