//! EVPN NLRI (RFC 7432 section 7) and the IP Prefix route, Route Type 5 (RFC 9136 section 3.1),
//! whose 24-bit label field carries the VNI for VXLAN (RFC 8365 section 5.1.3).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use thiserror::Error;

use super::{MacAddr, Reader};

pub const ROUTE_TYPE_IP_PREFIX: u8 = 5;
/// RFC 9136: an RT-5 NLRI is exactly 34 (IPv4) or 58 (IPv6) octets.
pub const RT5_LEN_V4: usize = 34;
pub const RT5_LEN_V6: usize = 58;

/// Route Distinguisher (RFC 4364 section 4.2): types 0, 1 and 2; others kept as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteDistinguisher {
    As2 { asn: u16, value: u32 },
    Ipv4 { addr: Ipv4Addr, value: u16 },
    As4 { asn: u32, value: u16 },
    Other([u8; 8]),
}

impl RouteDistinguisher {
    pub fn from_bytes(b: [u8; 8]) -> Self {
        let [t0, t1, a, c, d, e, f, g] = b;
        match u16::from_be_bytes([t0, t1]) {
            0 => Self::As2 {
                asn: u16::from_be_bytes([a, c]),
                value: u32::from_be_bytes([d, e, f, g]),
            },
            1 => Self::Ipv4 {
                addr: Ipv4Addr::new(a, c, d, e),
                value: u16::from_be_bytes([f, g]),
            },
            2 => Self::As4 {
                asn: u32::from_be_bytes([a, c, d, e]),
                value: u16::from_be_bytes([f, g]),
            },
            _ => Self::Other(b),
        }
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        match *self {
            Self::As2 { asn, value } => {
                out[2..4].copy_from_slice(&asn.to_be_bytes());
                out[4..].copy_from_slice(&value.to_be_bytes());
            }
            Self::Ipv4 { addr, value } => {
                out[1] = 1;
                out[2..6].copy_from_slice(&addr.octets());
                out[6..].copy_from_slice(&value.to_be_bytes());
            }
            Self::As4 { asn, value } => {
                out[1] = 2;
                out[2..6].copy_from_slice(&asn.to_be_bytes());
                out[6..].copy_from_slice(&value.to_be_bytes());
            }
            Self::Other(b) => out = b,
        }
        out
    }

    /// The default RD of a gateway: type 0 with the router MAC's first two octets as the
    /// administrator and its last four as the value, so each gateway's routes stay distinct
    /// routes in the fabric (GoBGP then shows e.g. `28763:2204857001` for 70:5b:83:6b:72:a9).
    pub fn from_router_mac(mac: MacAddr) -> Self {
        let [a, b, c, d, e, f] = mac.0;
        Self::As2 {
            asn: u16::from_be_bytes([a, b]),
            value: u32::from_be_bytes([c, d, e, f]),
        }
    }
}

impl fmt::Display for RouteDistinguisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::As2 { asn, value } => write!(f, "{asn}:{value}"),
            Self::Ipv4 { addr, value } => write!(f, "{addr}:{value}"),
            Self::As4 { asn, value } if *asn <= u32::from(u16::MAX) => {
                write!(f, "{asn}L:{value}")
            }
            Self::As4 { asn, value } => write!(f, "{asn}:{value}"),
            Self::Other(b) => write!(f, "0x{}", hex::encode(b)),
        }
    }
}

super::extcomm::admin_value_text!(RouteDistinguisher);

/// Ethernet Segment Identifier (RFC 7432 section 5); all zero for a single-homed site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Esi(pub [u8; 10]);

impl Esi {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 10]
    }
}

/// The 3-octet label field, kept raw. RFC 8365 puts a VXLAN VNI in all 24 bits; an MPLS
/// label uses the high 20 bits (RFC 7432).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(u32);

impl Label {
    pub const MAX: u32 = 0x00ff_ffff;

    /// A label field holding a VNI, or `None` when the VNI does not fit 24 bits.
    pub fn from_vni(vni: u32) -> Option<Self> {
        (vni <= Self::MAX).then_some(Self(vni))
    }

    pub fn raw(self) -> u32 {
        self.0
    }

    pub fn vni(self) -> u32 {
        self.0
    }

    pub fn mpls_label(self) -> u32 {
        self.0 >> 4
    }
}

/// An EVPN IP Prefix route (Route Type 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefixRoute {
    pub rd: RouteDistinguisher,
    pub esi: Esi,
    pub ethernet_tag: u32,
    /// Prefix as sent; host bits are kept so the route re-encodes byte for byte.
    pub prefix: IpNet,
    /// The gateway IP overlay index; the unspecified address of the prefix's family when unused.
    pub gateway: IpAddr,
    pub label: Label,
}

/// The parts RFC 9136 makes the route key: routes with equal keys replace each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rt5Key {
    pub rd: RouteDistinguisher,
    pub ethernet_tag: u32,
    pub prefix: IpNet,
}

/// Why an RT-5 NLRI was refused. The NLRI framing is intact in every case, so the route
/// alone is dropped (see docs/bgp.md, RFC 7606 choices).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum Rt5Error {
    #[error("route type 5 length {0} is neither 34 nor 58")]
    BadLength(usize),
    #[error("prefix length {len} too long for the address family")]
    BadPrefixLength { len: u8 },
}

impl IpPrefixRoute {
    pub fn key(&self) -> Rt5Key {
        Rt5Key {
            rd: self.rd,
            ethernet_tag: self.ethernet_tag,
            prefix: self.prefix,
        }
    }

    /// Whether the route carries an overlay index (RFC 9136 section 3.2): an ESI or a gateway IP.
    pub fn has_overlay_index(&self) -> bool {
        !self.esi.is_zero() || !self.gateway.is_unspecified()
    }

    /// Decodes the value of an RT-5 NLRI (after the route type and length octets).
    pub fn decode(body: &[u8]) -> Result<Self, Rt5Error> {
        let v6 = match body.len() {
            RT5_LEN_V4 => false,
            RT5_LEN_V6 => true,
            n => return Err(Rt5Error::BadLength(n)),
        };
        let mut r = Reader::new(body);
        // The length was checked above, so the reads below cannot run short; fall back to
        // a length error rather than trust that.
        let short = Rt5Error::BadLength(body.len());
        let rd = RouteDistinguisher::from_bytes(r.array().ok_or(short)?);
        let esi = Esi(r.array().ok_or(short)?);
        let ethernet_tag = r.u32().ok_or(short)?;
        let len = r.u8().ok_or(short)?;
        let (addr, gateway) = if v6 {
            (
                IpAddr::V6(r.ipv6().ok_or(short)?),
                IpAddr::V6(r.ipv6().ok_or(short)?),
            )
        } else {
            (
                IpAddr::V4(r.ipv4().ok_or(short)?),
                IpAddr::V4(r.ipv4().ok_or(short)?),
            )
        };
        let label = Label(r.u24().ok_or(short)?);
        let prefix = IpNet::new(addr, len).map_err(|_| Rt5Error::BadPrefixLength { len })?;
        Ok(Self {
            rd,
            esi,
            ethernet_tag,
            prefix,
            gateway,
            label,
        })
    }

    /// Appends route type, length and value. A gateway of the other family than the prefix
    /// cannot be expressed and is written as the unspecified address of the prefix's family.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let v6 = matches!(self.prefix, IpNet::V6(_));
        out.push(ROUTE_TYPE_IP_PREFIX);
        out.push(if v6 {
            RT5_LEN_V6 as u8
        } else {
            RT5_LEN_V4 as u8
        });
        out.extend_from_slice(&self.rd.to_bytes());
        out.extend_from_slice(&self.esi.0);
        out.extend_from_slice(&self.ethernet_tag.to_be_bytes());
        out.push(self.prefix.prefix_len());
        match (self.prefix.addr(), self.gateway) {
            (IpAddr::V4(p), IpAddr::V4(g)) => {
                out.extend_from_slice(&p.octets());
                out.extend_from_slice(&g.octets());
            }
            (IpAddr::V4(p), IpAddr::V6(_)) => {
                out.extend_from_slice(&p.octets());
                out.extend_from_slice(&Ipv4Addr::UNSPECIFIED.octets());
            }
            (IpAddr::V6(p), IpAddr::V6(g)) => {
                out.extend_from_slice(&p.octets());
                out.extend_from_slice(&g.octets());
            }
            (IpAddr::V6(p), IpAddr::V4(_)) => {
                out.extend_from_slice(&p.octets());
                out.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
            }
        }
        out.extend_from_slice(&self.label.0.to_be_bytes()[1..]);
    }

    /// Encoded size, route type and length octets included.
    pub fn encoded_len(&self) -> usize {
        2 + if matches!(self.prefix, IpNet::V6(_)) {
            RT5_LEN_V6
        } else {
            RT5_LEN_V4
        }
    }
}

/// One EVPN NLRI: a decoded RT-5, an RT-5 refused by [`IpPrefixRoute::decode`], or another
/// route type kept as bytes (bgpctl uses only type 5; RFC 7606 section 5.4 lets it ignore them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EvpnRoute {
    IpPrefix(IpPrefixRoute),
    Malformed {
        route_type: u8,
        body: Vec<u8>,
        error: Rt5Error,
    },
    Other {
        route_type: u8,
        body: Vec<u8>,
    },
}

impl EvpnRoute {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::IpPrefix(r) => r.encode(out),
            Self::Malformed {
                route_type, body, ..
            }
            | Self::Other { route_type, body } => {
                out.push(*route_type);
                out.push(u8::try_from(body.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(&body[..body.len().min(255)]);
            }
        }
    }
}

/// The NLRI field of an EVPN MP_REACH/MP_UNREACH overran its attribute: NLRI framing is lost,
/// which RFC 7606 section 5.3 answers with a session reset.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("EVPN NLRI overruns its attribute at offset {offset}")]
pub struct NlriOverrun {
    pub offset: usize,
}

/// Walks EVPN NLRI without copying: yields (route type, value) pairs.
pub struct EvpnNlriIter<'a> {
    r: Reader<'a>,
    total: usize,
    failed: bool,
}

impl<'a> EvpnNlriIter<'a> {
    pub fn new(nlri: &'a [u8]) -> Self {
        Self {
            r: Reader::new(nlri),
            total: nlri.len(),
            failed: false,
        }
    }
}

impl<'a> Iterator for EvpnNlriIter<'a> {
    type Item = Result<(u8, &'a [u8]), NlriOverrun>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let offset = self.total - self.r.remaining();
        let item = (|| {
            let route_type = self.r.u8()?;
            let len = self.r.u8()?;
            let body = self.r.take(usize::from(len))?;
            Some((route_type, body))
        })();
        match item {
            Some(x) => Some(Ok(x)),
            None => {
                self.failed = true;
                Some(Err(NlriOverrun { offset }))
            }
        }
    }
}

/// Decodes a whole EVPN NLRI field.
pub fn decode_nlri(nlri: &[u8]) -> Result<Vec<EvpnRoute>, NlriOverrun> {
    EvpnNlriIter::new(nlri)
        .map(|item| {
            let (route_type, body) = item?;
            Ok(if route_type == ROUTE_TYPE_IP_PREFIX {
                match IpPrefixRoute::decode(body) {
                    Ok(r) => EvpnRoute::IpPrefix(r),
                    Err(error) => EvpnRoute::Malformed {
                        route_type,
                        body: body.to_vec(),
                        error,
                    },
                }
            } else {
                EvpnRoute::Other {
                    route_type,
                    body: body.to_vec(),
                }
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rd_forms_round_trip_and_print() {
        let rd = RouteDistinguisher::from_router_mac("70:5b:83:6b:72:a9".parse().unwrap());
        assert_eq!(rd.to_string(), "28763:2204857001");
        assert_eq!(rd.to_bytes(), [0, 0, 0x70, 0x5b, 0x83, 0x6b, 0x72, 0xa9]);
        for s in [
            "28763:2204857001",
            "10.184.84.44:5",
            "4200000001:7",
            "65000L:7",
        ] {
            let rd: RouteDistinguisher = s.parse().unwrap();
            assert_eq!(rd.to_string(), s);
            assert_eq!(RouteDistinguisher::from_bytes(rd.to_bytes()), rd);
        }
        let odd = [0, 9, 1, 2, 3, 4, 5, 6];
        assert_eq!(RouteDistinguisher::from_bytes(odd).to_bytes(), odd);
    }

    #[test]
    fn label_holds_a_vni_or_an_mpls_label() {
        assert_eq!(Label::from_vni(2204857).unwrap().raw(), 0x21a4b9);
        assert!(Label::from_vni(1 << 24).is_none());
        // FRR's static "label 50": 50 << 4 | bottom of stack.
        assert_eq!(Label(0x000321).mpls_label(), 50);
    }

    #[test]
    fn rt5_refuses_bad_lengths_and_prefix_lengths() {
        assert_eq!(
            IpPrefixRoute::decode(&[0; 33]),
            Err(Rt5Error::BadLength(33))
        );
        let mut v4 = [0u8; 34];
        v4[22] = 33;
        assert_eq!(
            IpPrefixRoute::decode(&v4),
            Err(Rt5Error::BadPrefixLength { len: 33 })
        );
        let mut v6 = [0u8; 58];
        v6[22] = 129;
        assert!(IpPrefixRoute::decode(&v6).is_err());
        v6[22] = 128;
        assert!(IpPrefixRoute::decode(&v6).is_ok());
    }

    #[test]
    fn nlri_iterator_stops_at_an_overrun() {
        let mut nlri = vec![1, 2, 0xaa, 0xbb, 5, 34];
        nlri.extend_from_slice(&[0; 10]);
        let items: Vec<_> = EvpnNlriIter::new(&nlri).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], Ok((1, &[0xaa, 0xbb][..])));
        assert_eq!(items[1], Err(NlriOverrun { offset: 4 }));
        assert!(decode_nlri(&nlri).is_err());
    }
}
