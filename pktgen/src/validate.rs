//! The sink's packet checks: every way a received packet can be wrong has a reason, and the
//! sink counts invalid packets by reason instead of guessing.

use gatewan_dataplane::drop::DropReason;
use gatewan_dataplane::wire::ethernet::{self, ethertype, MacAddr};
use gatewan_dataplane::wire::{ip_proto, ipv4, ipv6, udp, vxlan};
use serde::{Deserialize, Serialize};

use crate::payload::{PayloadError, PayloadHeader};
use crate::spec::InnerProto;
use crate::tcp;

/// Why a received packet is not a valid generated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Invalid {
    /// The datagram did not fit the receive buffer (MSG_TRUNC).
    Truncated,
    /// Shorter than a VXLAN header.
    VxlanTruncated,
    /// VXLAN flags other than exactly the I flag (RFC 7348 §5: the others are sent as zero).
    VxlanFlags,
    /// Not the expected VNI.
    VniMismatch,
    /// Shorter than an inner Ethernet header.
    EthTruncated,
    /// Inner EtherType neither IPv4 nor IPv6 (or VLAN-tagged).
    EthUnsupported,
    /// Inner destination MAC is not the expected one.
    InnerDstMac,
    /// Inner IPv4 header malformed or truncated.
    Ipv4Malformed,
    /// Inner IPv4 header checksum wrong.
    Ipv4Checksum,
    /// Inner IPv4 fragment (the generator never fragments).
    Ipv4Fragment,
    /// Inner IPv6 header malformed, truncated, or with extension headers.
    Ipv6Malformed,
    /// Inner protocol neither UDP nor TCP.
    L4Protocol,
    /// UDP header malformed or truncated.
    UdpMalformed,
    /// UDP checksum wrong.
    UdpChecksum,
    /// TCP header malformed or truncated.
    TcpMalformed,
    /// TCP checksum wrong.
    TcpChecksum,
    /// Payload shorter than the payload header.
    PayloadShort,
    /// Payload header magic missing.
    BadMagic,
    /// Flow id beyond the configured number of flows.
    UnknownFlow,
}

impl Invalid {
    pub const ALL: [Invalid; 19] = [
        Invalid::Truncated,
        Invalid::VxlanTruncated,
        Invalid::VxlanFlags,
        Invalid::VniMismatch,
        Invalid::EthTruncated,
        Invalid::EthUnsupported,
        Invalid::InnerDstMac,
        Invalid::Ipv4Malformed,
        Invalid::Ipv4Checksum,
        Invalid::Ipv4Fragment,
        Invalid::Ipv6Malformed,
        Invalid::L4Protocol,
        Invalid::UdpMalformed,
        Invalid::UdpChecksum,
        Invalid::TcpMalformed,
        Invalid::TcpChecksum,
        Invalid::PayloadShort,
        Invalid::BadMagic,
        Invalid::UnknownFlow,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            Invalid::Truncated => "truncated",
            Invalid::VxlanTruncated => "vxlan_truncated",
            Invalid::VxlanFlags => "vxlan_flags",
            Invalid::VniMismatch => "vni_mismatch",
            Invalid::EthTruncated => "eth_truncated",
            Invalid::EthUnsupported => "eth_unsupported",
            Invalid::InnerDstMac => "inner_dst_mac",
            Invalid::Ipv4Malformed => "ipv4_malformed",
            Invalid::Ipv4Checksum => "ipv4_checksum",
            Invalid::Ipv4Fragment => "ipv4_fragment",
            Invalid::Ipv6Malformed => "ipv6_malformed",
            Invalid::L4Protocol => "l4_protocol",
            Invalid::UdpMalformed => "udp_malformed",
            Invalid::UdpChecksum => "udp_checksum",
            Invalid::TcpMalformed => "tcp_malformed",
            Invalid::TcpChecksum => "tcp_checksum",
            Invalid::PayloadShort => "payload_short",
            Invalid::BadMagic => "bad_magic",
            Invalid::UnknownFlow => "unknown_flow",
        }
    }
}

/// What the sink expects of every packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The VNI, when it is checked.
    pub vni: Option<u32>,
    /// The inner destination MAC (the far leaf's router MAC), when it is checked.
    pub inner_dst_mac: Option<MacAddr>,
    /// Flow ids must be below this.
    pub flows: u32,
}

/// A valid packet's measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Valid {
    pub header: PayloadHeader,
    /// Inner IP packet length (for plain datagrams: the UDP payload length).
    pub inner_len: usize,
    /// Inner transport (UDP for plain datagrams).
    pub proto: InnerProto,
}

fn payload(p: &[u8], expect: &Expect) -> Result<PayloadHeader, Invalid> {
    let h = PayloadHeader::parse(p).map_err(|e| match e {
        PayloadError::Short => Invalid::PayloadShort,
        PayloadError::BadMagic => Invalid::BadMagic,
    })?;
    if h.flow >= expect.flows {
        return Err(Invalid::UnknownFlow);
    }
    Ok(h)
}

/// Checks a VXLAN datagram payload (what a UDP socket on port 4789 receives).
pub fn check_vxlan(b: &[u8], expect: &Expect) -> Result<Valid, Invalid> {
    let vx = vxlan::Packet::new_checked(b).map_err(|e| match e {
        DropReason::VxlanTruncated => Invalid::VxlanTruncated,
        _ => Invalid::VxlanFlags,
    })?;
    // The dataplane's view ignores reserved bits on receipt, as a receiver must; a sink
    // judging the sender's output holds it to "set to zero on transmission".
    if vx.flags() != 0x08 || b.get(1..4) != Some(&[0, 0, 0]) || b.get(7) != Some(&0) {
        return Err(Invalid::VxlanFlags);
    }
    if expect.vni.is_some_and(|v| v != vx.vni()) {
        return Err(Invalid::VniMismatch);
    }
    check_inner_frame(vx.payload(), expect)
}

/// Checks an inner Ethernet frame (after the VXLAN header).
pub fn check_inner_frame(b: &[u8], expect: &Expect) -> Result<Valid, Invalid> {
    let eth = ethernet::Frame::new_checked(b).map_err(|e| match e {
        DropReason::EthTruncated => Invalid::EthTruncated,
        _ => Invalid::EthUnsupported,
    })?;
    if expect.inner_dst_mac.is_some_and(|m| m != eth.dst()) {
        return Err(Invalid::InnerDstMac);
    }
    if eth.vlan_tags() != 0 {
        return Err(Invalid::EthUnsupported);
    }
    match eth.ethertype() {
        ethertype::IPV4 => check_ipv4(eth.payload(), expect),
        ethertype::IPV6 => check_ipv6(eth.payload(), expect),
        _ => Err(Invalid::EthUnsupported),
    }
}

/// Checks an inner IPv4 packet.
pub fn check_ipv4(b: &[u8], expect: &Expect) -> Result<Valid, Invalid> {
    let ip = ipv4::Packet::new_checked(b).map_err(|_| Invalid::Ipv4Malformed)?;
    if !ip.verify_checksum() {
        return Err(Invalid::Ipv4Checksum);
    }
    if ip.is_fragment() {
        return Err(Invalid::Ipv4Fragment);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let l4 = ip.payload();
    let (header, proto) = match ip.protocol() {
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(l4).map_err(|_| Invalid::UdpMalformed)?;
            if !u.verify_checksum_v4(src, dst) {
                return Err(Invalid::UdpChecksum);
            }
            (payload(u.payload(), expect)?, InnerProto::Udp)
        }
        ip_proto::TCP => {
            let s = tcp::Segment::new_checked(l4).map_err(|_| Invalid::TcpMalformed)?;
            if !s.verify_checksum_v4(src, dst) {
                return Err(Invalid::TcpChecksum);
            }
            (payload(s.payload(), expect)?, InnerProto::Tcp)
        }
        _ => return Err(Invalid::L4Protocol),
    };
    Ok(Valid {
        header,
        inner_len: ip.total_len(),
        proto,
    })
}

/// Checks an inner IPv6 packet (no extension headers: the generator sends none).
pub fn check_ipv6(b: &[u8], expect: &Expect) -> Result<Valid, Invalid> {
    let ip = ipv6::Packet::new_checked(b).map_err(|_| Invalid::Ipv6Malformed)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let l4 = ip.payload();
    let (header, proto) = match ip.next_header() {
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(l4).map_err(|_| Invalid::UdpMalformed)?;
            if !u.verify_checksum_v6(&src, &dst) {
                return Err(Invalid::UdpChecksum);
            }
            (payload(u.payload(), expect)?, InnerProto::Udp)
        }
        ip_proto::TCP => {
            let s = tcp::Segment::new_checked(l4).map_err(|_| Invalid::TcpMalformed)?;
            if !s.verify_checksum_v6(&src, &dst) {
                return Err(Invalid::TcpChecksum);
            }
            (payload(s.payload(), expect)?, InnerProto::Tcp)
        }
        ip_proto::HOP_BY_HOP
        | ip_proto::IPV6_ROUTING
        | ip_proto::IPV6_FRAGMENT
        | ip_proto::IPV6_DEST_OPTS => return Err(Invalid::Ipv6Malformed),
        _ => return Err(Invalid::L4Protocol),
    };
    Ok(Valid {
        header,
        inner_len: ip.total_len(),
        proto,
    })
}

/// Checks a plain UDP datagram payload: what a socket behind a kernel VXLAN device receives
/// once the kernel has taken the headers off. Only the payload header can be checked.
pub fn check_plain(b: &[u8], expect: &Expect) -> Result<Valid, Invalid> {
    Ok(Valid {
        header: payload(b, expect)?,
        inner_len: b.len(),
        proto: InnerProto::Udp,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::packet::{Encap, PacketBuilder};
    use crate::spec::TrafficSpec;

    fn spec(v6: bool, proto: InnerProto) -> TrafficSpec {
        TrafficSpec {
            src_addrs: 1,
            flows: 4,
            vni: 77,
            ..crate::packet::tests::spec(v6, proto, 200)
        }
    }

    fn expect(spec: &TrafficSpec) -> Expect {
        Expect {
            vni: Some(spec.vni),
            inner_dst_mac: Some(spec.router_mac),
            flows: spec.flows,
        }
    }

    fn packet(spec: &TrafficSpec) -> (Vec<u8>, crate::packet::Layout) {
        let b = PacketBuilder::new(spec.clone(), Encap::Vxlan).unwrap();
        let mut p = b.build(2);
        p.stamp(5, 1234);
        (p.bytes().to_vec(), *b.layout())
    }

    /// Fixes the inner IPv4 header checksum after a test edit, so the edit is what fails.
    fn fix_ipv4(p: &mut [u8], at: usize) {
        let mut ip = ipv4::Packet::new_checked(&mut p[at..]).unwrap();
        ip.fill_checksum();
    }

    #[test]
    fn valid_packets_pass() {
        for v6 in [false, true] {
            for proto in [InnerProto::Udp, InnerProto::Tcp] {
                let s = spec(v6, proto);
                let (p, _) = packet(&s);
                let v = check_vxlan(&p, &expect(&s)).unwrap();
                assert_eq!(v.header.flow, 2);
                assert_eq!(v.header.seq, 5);
                assert_eq!(v.header.timestamp_ns, 1234);
                assert_eq!(v.inner_len, 200);
                assert_eq!(v.proto, proto);
            }
        }
    }

    #[test]
    fn each_malformation_has_its_reason() {
        let s4 = spec(false, InnerProto::Udp);
        let e4 = expect(&s4);
        let (good, l) = packet(&s4);
        let ip = l.inner_ip;
        type Edit = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Invalid, Edit)> = vec![
            (Invalid::VxlanTruncated, Box::new(|p| p.truncate(7))),
            (Invalid::VxlanFlags, Box::new(|p| p[0] = 0)),
            (Invalid::VxlanFlags, Box::new(|p| p[0] = 0x0c)),
            (Invalid::VxlanFlags, Box::new(|p| p[7] = 1)),
            (Invalid::VniMismatch, Box::new(|p| p[6] = 0x4e)),
            (Invalid::EthTruncated, Box::new(|p| p.truncate(8 + 13))),
            (Invalid::InnerDstMac, Box::new(|p| p[8] ^= 2)),
            (
                Invalid::EthUnsupported,
                Box::new(|p| p[8 + 12] = 0x08_u8.wrapping_add(1)),
            ),
            (
                Invalid::Ipv4Malformed,
                Box::new(move |p| p.truncate(ip + 19)),
            ),
            (Invalid::Ipv4Malformed, Box::new(move |p| p[ip] = 0x44)),
            (Invalid::Ipv4Checksum, Box::new(move |p| p[ip + 8] = 1)),
            (
                Invalid::Ipv4Fragment,
                Box::new(move |p| {
                    p[ip + 6] = 0x20;
                    fix_ipv4(p, ip);
                }),
            ),
            (
                Invalid::L4Protocol,
                Box::new(move |p| {
                    p[ip + 9] = 47;
                    fix_ipv4(p, ip);
                }),
            ),
            (
                Invalid::UdpMalformed,
                Box::new(move |p| {
                    p[ip + 20 + 4..ip + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
                }),
            ),
            (
                Invalid::UdpChecksum,
                Box::new(|p| *p.last_mut().unwrap() ^= 1),
            ),
            (
                Invalid::PayloadShort,
                Box::new(move |p| {
                    // A UDP datagram carrying 10 bytes, checksum fixed.
                    let total = 20 + 8 + 10;
                    p.truncate(ip + total);
                    p[ip + 2..ip + 4].copy_from_slice(&(total as u16).to_be_bytes());
                    p[ip + 24..ip + 26].copy_from_slice(&18u16.to_be_bytes());
                    fix_ipv4(p, ip);
                    fix_udp4(p, ip);
                }),
            ),
            (
                Invalid::BadMagic,
                Box::new(move |p| {
                    p[l.payload] = b'X';
                    fix_udp4(p, ip);
                }),
            ),
            (
                Invalid::UnknownFlow,
                Box::new(move |p| {
                    p[l.payload + 7] = 9;
                    fix_udp4(p, ip);
                }),
            ),
        ];
        for (want, edit) in cases {
            let mut p = good.clone();
            edit(&mut p);
            assert_eq!(check_vxlan(&p, &e4), Err(want), "{}", want.name());
        }
        // Checks that are off do not fire.
        let mut p = good.clone();
        p[6] = 0x4e;
        p[8] ^= 2;
        let lax = Expect {
            vni: None,
            inner_dst_mac: None,
            flows: 4,
        };
        assert!(check_vxlan(&p, &lax).is_ok());
    }

    fn fix_udp4(p: &mut [u8], ip: usize) {
        let pkt = ipv4::Packet::new_checked(&p[ip..]).unwrap();
        let (s, d) = (pkt.src_addr(), pkt.dst_addr());
        let mut u = udp::Packet::new_checked(&mut p[ip + 20..]).unwrap();
        u.fill_checksum(udp::ChecksumMode::V4 { src: s, dst: d });
    }

    #[test]
    fn ipv6_and_tcp_reasons() {
        let s6 = spec(true, InnerProto::Tcp);
        let e6 = expect(&s6);
        let (good, l) = packet(&s6);
        let ip = l.inner_ip;
        let mut p = good.clone();
        p[ip] = 0x45;
        assert_eq!(check_vxlan(&p, &e6), Err(Invalid::Ipv6Malformed));
        let mut p = good.clone();
        p[ip + 6] = ip_proto::HOP_BY_HOP;
        assert_eq!(check_vxlan(&p, &e6), Err(Invalid::Ipv6Malformed));
        let mut p = good.clone();
        p[ip + 6] = ip_proto::ICMPV6;
        assert_eq!(check_vxlan(&p, &e6), Err(Invalid::L4Protocol));
        let mut p = good.clone();
        p[l.l4 + tcp::off::DATA_OFF] = 0x40;
        assert_eq!(check_vxlan(&p, &e6), Err(Invalid::TcpMalformed));
        let mut p = good.clone();
        p[l.payload + 20] ^= 0x80;
        assert_eq!(check_vxlan(&p, &e6), Err(Invalid::TcpChecksum));
        // UDP over IPv6 with a zero checksum is invalid (RFC 8200 §8.1).
        let s = spec(true, InnerProto::Udp);
        let (mut p, l) = packet(&s);
        p[l.l4 + 6] = 0;
        p[l.l4 + 7] = 0;
        assert_eq!(check_vxlan(&p, &expect(&s)), Err(Invalid::UdpChecksum));
    }

    #[test]
    fn plain_payloads() {
        let e = Expect {
            vni: None,
            inner_dst_mac: None,
            flows: 2,
        };
        let mut b = [0u8; 40];
        PayloadHeader {
            flow: 1,
            seq: 3,
            timestamp_ns: 4,
        }
        .emit(&mut b);
        assert_eq!(check_plain(&b, &e).unwrap().header.seq, 3);
        assert_eq!(check_plain(&b[..23], &e), Err(Invalid::PayloadShort));
        b[7] = 2;
        assert_eq!(check_plain(&b, &e), Err(Invalid::UnknownFlow));
        b[0] = 0;
        assert_eq!(check_plain(&b, &e), Err(Invalid::BadMagic));
    }

    #[test]
    fn reason_names_are_unique_and_match_serde() {
        let mut names: Vec<_> = Invalid::ALL.iter().map(|r| r.name()).collect();
        for r in Invalid::ALL {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
            assert_eq!(Invalid::ALL[r as usize], r);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Invalid::COUNT);
    }
}
