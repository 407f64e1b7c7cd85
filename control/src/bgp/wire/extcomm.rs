//! Extended communities (RFC 4360): Route Target (2-octet AS, IPv4 and 4-octet AS forms,
//! RFC 4360 and RFC 5668), BGP Encapsulation (RFC 9012 section 4.1; VXLAN is tunnel type 8)
//! the EVPN Router's MAC (RFC 9135 section 8.1) and the Link Bandwidth community (RFC 10005:
//! non-transitive two-octet AS specific, sub-type 4, bandwidth in bytes per second as an IEEE
//! float). Anything else is kept as its 8 octets.

use std::fmt;
use std::net::Ipv4Addr;

use thiserror::Error;

use super::MacAddr;

/// Tunnel type of VXLAN in the BGP Tunnel Encapsulation registry (RFC 8365 section 5.1.3).
pub const TUNNEL_VXLAN: u16 = 8;

const TYPE_AS2: u8 = 0x00;
const TYPE_IPV4: u8 = 0x01;
const TYPE_AS4: u8 = 0x02;
const TYPE_OPAQUE: u8 = 0x03;
const TYPE_EVPN: u8 = 0x06;
const SUB_ROUTE_TARGET: u8 = 0x02;
const SUB_ENCAPSULATION: u8 = 0x0c;
const SUB_ROUTER_MAC: u8 = 0x03;
const TYPE_AS2_NON_TRANSITIVE: u8 = 0x40;
const SUB_LINK_BANDWIDTH: u8 = 0x04;

/// A Route Target in one of its three transitive forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// Type 0x00: 2-octet AS, 4-octet value.
    As2 { asn: u16, value: u32 },
    /// Type 0x01: IPv4 address, 2-octet value.
    Ipv4 { addr: Ipv4Addr, value: u16 },
    /// Type 0x02: 4-octet AS, 2-octet value.
    As4 { asn: u32, value: u16 },
}

impl RouteTarget {
    /// The local administrator (the part after the colon).
    pub fn value(&self) -> u32 {
        match *self {
            Self::As2 { value, .. } => value,
            Self::Ipv4 { value, .. } | Self::As4 { value, .. } => u32::from(value),
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::As2 { asn, value } => write!(f, "{asn}:{value}"),
            Self::Ipv4 { addr, value } => write!(f, "{addr}:{value}"),
            // The "L" suffix tells a 4-octet-AS form apart when the AS would fit in 2 octets.
            Self::As4 { asn, value } if *asn <= u32::from(u16::MAX) => {
                write!(f, "{asn}L:{value}")
            }
            Self::As4 { asn, value } => write!(f, "{asn}:{value}"),
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not a route target or distinguisher (ASN:N, IPv4:N or ASN4:N, e.g. 65000:100)")]
pub struct BadRouteTarget(pub String);

/// Parses `ADMIN:VALUE`. ADMIN is an IPv4 address, an AS number (4-octet form when it does not
/// fit 2 octets, or when written with an `L` suffix), and VALUE must fit the form chosen.
/// Shared by route targets and route distinguishers, which have the same three forms.
pub(crate) fn parse_admin_value(s: &str) -> Result<(Admin, u32), BadRouteTarget> {
    let bad = || BadRouteTarget(s.to_owned());
    let (admin, value) = s.rsplit_once(':').ok_or_else(bad)?;
    let value: u32 = value.parse().map_err(|_| bad())?;
    if admin.contains('.') {
        let addr: Ipv4Addr = admin.parse().map_err(|_| bad())?;
        return Ok((Admin::Ipv4(addr), value));
    }
    let (digits, long) = match admin.strip_suffix(['L', 'l']) {
        Some(d) => (d, true),
        None => (admin, false),
    };
    let asn: u32 = digits.parse().map_err(|_| bad())?;
    match u16::try_from(asn) {
        Ok(a) if !long => Ok((Admin::As2(a), value)),
        _ => Ok((Admin::As4(asn), value)),
    }
}

pub(crate) enum Admin {
    As2(u16),
    Ipv4(Ipv4Addr),
    As4(u32),
}

/// `FromStr` ("asn:value", "a.b.c.d:value", "asnL:value") and string serde for the types
/// written in the (administrator, assigned number) form of RFC 4360: route targets and route
/// distinguishers, both with the variants `As2 { asn: u16, value: u32 }`,
/// `Ipv4 { addr, value: u16 }` and `As4 { asn: u32, value: u16 }`.
macro_rules! admin_value_text {
    ($ty:ty) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::bgp::wire::extcomm::BadRouteTarget;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                use $crate::bgp::wire::extcomm::{parse_admin_value, Admin, BadRouteTarget};
                let bad = || BadRouteTarget(s.to_owned());
                match parse_admin_value(s)? {
                    (Admin::As2(asn), value) => Ok(Self::As2 { asn, value }),
                    (Admin::Ipv4(addr), value) => Ok(Self::Ipv4 {
                        addr,
                        value: u16::try_from(value).map_err(|_| bad())?,
                    }),
                    (Admin::As4(asn), value) => Ok(Self::As4 {
                        asn,
                        value: u16::try_from(value).map_err(|_| bad())?,
                    }),
                }
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use admin_value_text;

admin_value_text!(RouteTarget);

/// One extended community.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExtCommunity {
    RouteTarget(RouteTarget),
    /// BGP Encapsulation, with the tunnel type (RFC 9012 section 4.1).
    Encapsulation(u16),
    /// EVPN Router's MAC (RFC 9135 section 8.1).
    RouterMac(MacAddr),
    /// Link Bandwidth (RFC 10005): the AS and the bandwidth in bytes per second, kept as the
    /// float's bits so the community stays `Eq` and `Ord`.
    LinkBandwidth {
        asn: u16,
        bytes_per_sec_bits: u32,
    },
    /// Any other community, or a known one with non-zero reserved octets, kept as is.
    Other([u8; 8]),
}

impl ExtCommunity {
    /// A Link Bandwidth community of `bytes_per_sec` from `asn` (AS_TRANS when it does not
    /// fit two octets, as RFC 10005 says for four-octet ASes).
    pub fn link_bandwidth(asn: u32, bytes_per_sec: f32) -> Self {
        Self::LinkBandwidth {
            asn: u16::try_from(asn).unwrap_or(23456),
            bytes_per_sec_bits: bytes_per_sec.to_bits(),
        }
    }

    pub fn from_bytes(b: [u8; 8]) -> Self {
        let [t, sub, a, c, d, e, f, g] = b;
        match (t, sub) {
            (TYPE_AS2, SUB_ROUTE_TARGET) => Self::RouteTarget(RouteTarget::As2 {
                asn: u16::from_be_bytes([a, c]),
                value: u32::from_be_bytes([d, e, f, g]),
            }),
            (TYPE_IPV4, SUB_ROUTE_TARGET) => Self::RouteTarget(RouteTarget::Ipv4 {
                addr: Ipv4Addr::new(a, c, d, e),
                value: u16::from_be_bytes([f, g]),
            }),
            (TYPE_AS4, SUB_ROUTE_TARGET) => Self::RouteTarget(RouteTarget::As4 {
                asn: u32::from_be_bytes([a, c, d, e]),
                value: u16::from_be_bytes([f, g]),
            }),
            (TYPE_OPAQUE, SUB_ENCAPSULATION) if [a, c, d, e] == [0; 4] => {
                Self::Encapsulation(u16::from_be_bytes([f, g]))
            }
            (TYPE_EVPN, SUB_ROUTER_MAC) => Self::RouterMac(MacAddr([a, c, d, e, f, g])),
            (TYPE_AS2_NON_TRANSITIVE, SUB_LINK_BANDWIDTH) => Self::LinkBandwidth {
                asn: u16::from_be_bytes([a, c]),
                bytes_per_sec_bits: u32::from_be_bytes([d, e, f, g]),
            },
            _ => Self::Other(b),
        }
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        match *self {
            Self::RouteTarget(RouteTarget::As2 { asn, value }) => {
                let [a, c] = asn.to_be_bytes();
                let [d, e, f, g] = value.to_be_bytes();
                [TYPE_AS2, SUB_ROUTE_TARGET, a, c, d, e, f, g]
            }
            Self::RouteTarget(RouteTarget::Ipv4 { addr, value }) => {
                let [a, c, d, e] = addr.octets();
                let [f, g] = value.to_be_bytes();
                [TYPE_IPV4, SUB_ROUTE_TARGET, a, c, d, e, f, g]
            }
            Self::RouteTarget(RouteTarget::As4 { asn, value }) => {
                let [a, c, d, e] = asn.to_be_bytes();
                let [f, g] = value.to_be_bytes();
                [TYPE_AS4, SUB_ROUTE_TARGET, a, c, d, e, f, g]
            }
            Self::Encapsulation(tunnel) => {
                let [f, g] = tunnel.to_be_bytes();
                [TYPE_OPAQUE, SUB_ENCAPSULATION, 0, 0, 0, 0, f, g]
            }
            Self::RouterMac(MacAddr([a, c, d, e, f, g])) => {
                [TYPE_EVPN, SUB_ROUTER_MAC, a, c, d, e, f, g]
            }
            Self::LinkBandwidth {
                asn,
                bytes_per_sec_bits,
            } => {
                let [a, c] = asn.to_be_bytes();
                let [d, e, f, g] = bytes_per_sec_bits.to_be_bytes();
                [
                    TYPE_AS2_NON_TRANSITIVE,
                    SUB_LINK_BANDWIDTH,
                    a,
                    c,
                    d,
                    e,
                    f,
                    g,
                ]
            }
            Self::Other(b) => b,
        }
    }
}

impl fmt::Display for ExtCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RouteTarget(rt) => write!(f, "rt:{rt}"),
            Self::Encapsulation(TUNNEL_VXLAN) => f.write_str("encap:vxlan"),
            Self::Encapsulation(t) => write!(f, "encap:{t}"),
            Self::RouterMac(mac) => write!(f, "router-mac:{mac}"),
            Self::LinkBandwidth {
                asn,
                bytes_per_sec_bits,
            } => write!(
                f,
                "lb:{asn}:{} bytes/s",
                f32::from_bits(*bytes_per_sec_bits)
            ),
            Self::Other(b) => write!(f, "0x{}", hex::encode(b)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_communities_round_trip_through_bytes() {
        let cases: [([u8; 8], ExtCommunity); 7] = [
            (
                [0x00, 0x02, 0xfd, 0xe8, 0x00, 0x21, 0xa4, 0xb9],
                ExtCommunity::RouteTarget(RouteTarget::As2 {
                    asn: 65000,
                    value: 2204857,
                }),
            ),
            (
                [0x01, 0x02, 10, 184, 84, 44, 0, 5],
                ExtCommunity::RouteTarget(RouteTarget::Ipv4 {
                    addr: Ipv4Addr::new(10, 184, 84, 44),
                    value: 5,
                }),
            ),
            (
                [0x02, 0x02, 0xfa, 0x56, 0xea, 0x01, 0x00, 0x64],
                ExtCommunity::RouteTarget(RouteTarget::As4 {
                    asn: 4_200_000_001,
                    value: 100,
                }),
            ),
            (
                [0x03, 0x0c, 0, 0, 0, 0, 0, 8],
                ExtCommunity::Encapsulation(TUNNEL_VXLAN),
            ),
            (
                [0x06, 0x03, 0x70, 0x5b, 0x83, 0x6b, 0x72, 0xa9],
                ExtCommunity::RouterMac(MacAddr([0x70, 0x5b, 0x83, 0x6b, 0x72, 0xa9])),
            ),
            // 1 Gbit/s from AS 65003: 125e6 bytes/s as an IEEE float.
            (
                [0x40, 0x04, 0xfd, 0xeb, 0x4c, 0xee, 0x6b, 0x28],
                ExtCommunity::link_bandwidth(65003, 125e6),
            ),
            // Encapsulation with non-zero reserved octets stays opaque, so it re-encodes as is.
            (
                [0x03, 0x0c, 0, 1, 0, 0, 0, 8],
                ExtCommunity::Other([0x03, 0x0c, 0, 1, 0, 0, 0, 8]),
            ),
        ];
        for (bytes, community) in cases {
            assert_eq!(ExtCommunity::from_bytes(bytes), community);
            assert_eq!(community.to_bytes(), bytes);
        }
    }

    #[test]
    fn route_targets_parse_in_all_three_forms() {
        assert_eq!(
            "65000:2204857".parse::<RouteTarget>().unwrap(),
            RouteTarget::As2 {
                asn: 65000,
                value: 2204857
            }
        );
        assert_eq!(
            "10.0.0.1:7".parse::<RouteTarget>().unwrap(),
            RouteTarget::Ipv4 {
                addr: Ipv4Addr::new(10, 0, 0, 1),
                value: 7
            }
        );
        assert_eq!(
            "4200000001:100".parse::<RouteTarget>().unwrap(),
            RouteTarget::As4 {
                asn: 4_200_000_001,
                value: 100
            }
        );
        let long: RouteTarget = "65000L:100".parse().unwrap();
        assert_eq!(
            long,
            RouteTarget::As4 {
                asn: 65000,
                value: 100
            }
        );
        assert_eq!(long.to_string(), "65000L:100");
        for bad in [
            "65000",
            "4200000001:70000",
            "10.0.0.1:70000",
            "x:1",
            "1:x",
            "65000:4294967296",
        ] {
            assert!(bad.parse::<RouteTarget>().is_err(), "{bad}");
        }
    }
}
