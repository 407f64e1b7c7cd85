//! OPEN messages (RFC 4271 section 4.2) with capabilities (RFC 5492): multiprotocol
//! (RFC 4760), route refresh (RFC 2918), graceful restart (RFC 4724) and 4-octet AS numbers
//! (RFC 6793). Both ways peers
//! pack capabilities are accepted (all in one optional parameter, as GoBGP does, or one per
//! parameter, as FRR does), and so are RFC 9072 extended optional parameters.

use std::net::Ipv4Addr;

use super::notification::{code, open_subcode};
use super::{encode_message, MessageType, Notification, Reader, AS_TRANS, HEADER_LEN};

/// Optional parameter type carrying capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072: a non-extended length of 255 followed by this type announces 2-octet lengths.
const PARAM_EXTENDED: u8 = 255;

pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// One capability. Codes bgpctl does not use are kept as [`Capability::Unknown`] and ignored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    Multiprotocol {
        afi: u16,
        safi: u8,
    },
    RouteRefresh,
    /// RFC 4724 section 3: the Restart State bit, the restart time (seconds, 12 bits) and
    /// the families with their Forwarding State bit.
    GracefulRestart {
        restarted: bool,
        restart_time: u16,
        families: Vec<GrFamily>,
    },
    FourOctetAs(u32),
    Unknown {
        code: u8,
        data: Vec<u8>,
    },
}

/// One family of a graceful restart capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrFamily {
    pub afi: u16,
    pub safi: u8,
    /// Forwarding for these routes was preserved through the restart.
    pub forwarding: bool,
}

/// RFC 4724: the Restart State bit of the Restart Flags, and the 12-bit time.
const GR_RESTART_STATE: u16 = 0x8000;
const GR_TIME_MASK: u16 = 0x0fff;
const GR_FORWARDING: u8 = 0x80;

impl Capability {
    fn decode(code: u8, data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        let known = match (code, data.len()) {
            (cap_code::MULTIPROTOCOL, 4) => match (r.u16(), r.u8(), r.u8()) {
                (Some(afi), Some(0), Some(safi)) => Some(Self::Multiprotocol { afi, safi }),
                _ => None,
            },
            (cap_code::ROUTE_REFRESH, 0) => Some(Self::RouteRefresh),
            (cap_code::FOUR_OCTET_AS, 4) => r.u32().map(Self::FourOctetAs),
            (cap_code::GRACEFUL_RESTART, n) if n >= 2 && (n - 2) % 4 == 0 => {
                let flags_time = r.u16().unwrap_or(0);
                let mut families = Vec::new();
                while let (Some(afi), Some(safi), Some(flags)) = (r.u16(), r.u8(), r.u8()) {
                    families.push(GrFamily {
                        afi,
                        safi,
                        forwarding: flags & GR_FORWARDING != 0,
                    });
                }
                Some(Self::GracefulRestart {
                    restarted: flags_time & GR_RESTART_STATE != 0,
                    restart_time: flags_time & GR_TIME_MASK,
                    families,
                })
            }
            _ => None,
        };
        // A known code with an odd length is kept opaque: it then simply does not count as
        // support for that capability, which is the safe reading.
        known.unwrap_or_else(|| Self::Unknown {
            code,
            data: data.to_vec(),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Multiprotocol { afi, safi } => {
                out.extend_from_slice(&[cap_code::MULTIPROTOCOL, 4]);
                out.extend_from_slice(&afi.to_be_bytes());
                out.extend_from_slice(&[0, *safi]);
            }
            Self::RouteRefresh => out.extend_from_slice(&[cap_code::ROUTE_REFRESH, 0]),
            Self::GracefulRestart {
                restarted,
                restart_time,
                families,
            } => {
                let families = &families[..families.len().min(63)];
                out.push(cap_code::GRACEFUL_RESTART);
                out.push(u8::try_from(2 + 4 * families.len()).unwrap_or(u8::MAX));
                let flags = if *restarted { GR_RESTART_STATE } else { 0 };
                out.extend_from_slice(&(flags | (restart_time & GR_TIME_MASK)).to_be_bytes());
                for f in families {
                    out.extend_from_slice(&f.afi.to_be_bytes());
                    out.push(f.safi);
                    out.push(if f.forwarding { GR_FORWARDING } else { 0 });
                }
            }
            Self::FourOctetAs(asn) => {
                out.extend_from_slice(&[cap_code::FOUR_OCTET_AS, 4]);
                out.extend_from_slice(&asn.to_be_bytes());
            }
            Self::Unknown { code, data } => {
                let len = data.len().min(255);
                out.push(*code);
                out.push(u8::try_from(len).unwrap_or(u8::MAX));
                out.extend_from_slice(&data[..len]);
            }
        }
    }
}

/// An optional parameter of an OPEN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OptParam {
    Capabilities(Vec<Capability>),
    Other { kind: u8, data: Vec<u8> },
}

/// An OPEN message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS when the AS needs 4 octets).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub params: Vec<OptParam>,
}

/// What two speakers agreed on in their OPENs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    /// The smaller of both hold times; 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    pub four_octet_as: bool,
    pub route_refresh: bool,
    /// Both sides advertised graceful restart for EVPN: the peer keeps our routes through a
    /// restart for the restart time (RFC 4724 section 4.2).
    pub graceful_restart: bool,
    /// The peer's capabilities as received, for `gatewan routes`.
    pub peer_capabilities: Vec<Capability>,
}

fn malformed() -> Notification {
    // RFC 4271 has no subcode for a mangled parameter list; 0 is "unspecific".
    Notification::new(code::OPEN_MESSAGE, 0)
}

impl Open {
    /// The OPEN bgpctl sends: EVPN, route refresh and 4-octet AS, all in one parameter.
    pub fn ours(local_as: u32, hold_time: u16, bgp_id: Ipv4Addr) -> Self {
        Self {
            version: 4,
            my_as: u16::try_from(local_as).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            params: vec![OptParam::Capabilities(vec![
                Capability::Multiprotocol {
                    afi: super::AFI_L2VPN,
                    safi: super::SAFI_EVPN,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(local_as),
            ])],
        }
    }

    /// Adds graceful restart for EVPN (RFC 4724): the Restart State bit and the Forwarding
    /// State bit set, since bgpctl is not on the forwarding path (the gateways and leaves
    /// keep forwarding while it restarts), and `restart_time` (at most 4095 s).
    pub fn with_graceful_restart(mut self, restart_time: u16) -> Self {
        let cap = Capability::GracefulRestart {
            restarted: true,
            restart_time: restart_time.min(GR_TIME_MASK),
            families: vec![GrFamily {
                afi: super::AFI_L2VPN,
                safi: super::SAFI_EVPN,
                forwarding: true,
            }],
        };
        match self.params.iter_mut().find_map(|p| match p {
            OptParam::Capabilities(c) => Some(c),
            OptParam::Other { .. } => None,
        }) {
            Some(caps) => caps.push(cap),
            None => self.params.push(OptParam::Capabilities(vec![cap])),
        }
        self
    }

    /// Whether this OPEN offers graceful restart for EVPN.
    pub fn graceful_restart_evpn(&self) -> bool {
        self.capabilities().any(|c| match c {
            Capability::GracefulRestart { families, .. } => families
                .iter()
                .any(|f| f.afi == super::AFI_L2VPN && f.safi == super::SAFI_EVPN),
            _ => false,
        })
    }

    /// All capabilities, whichever way they were packed.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flat_map(|p| match p {
            OptParam::Capabilities(caps) => caps.as_slice(),
            OptParam::Other { .. } => &[],
        })
    }

    /// The sender's AS: the 4-octet AS capability when present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub fn decode(body: &[u8]) -> Result<Self, Notification> {
        let mut r = Reader::new(body);
        let (Some(version), Some(my_as), Some(hold_time), Some(bgp_id), Some(opt_len)) =
            (r.u8(), r.u16(), r.u16(), r.ipv4(), r.u8())
        else {
            return Err(malformed());
        };
        if version != 4 {
            // RFC 4271 6.2: the data is the largest supported version, as 2 octets.
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_subcode::UNSUPPORTED_VERSION,
                4u16.to_be_bytes().to_vec(),
            ));
        }
        let mut extended = false;
        let params_bytes = if opt_len == 255 && r.rest().first() == Some(&PARAM_EXTENDED) {
            // RFC 9072: 255, then type 255, then a 2-octet length of the parameters.
            let _ = r.u8();
            extended = true;
            let len = r.u16().ok_or_else(malformed)?;
            r.take(usize::from(len)).ok_or_else(malformed)?
        } else {
            r.take(usize::from(opt_len)).ok_or_else(malformed)?
        };
        if !r.is_empty() {
            return Err(malformed());
        }
        let mut pr = Reader::new(params_bytes);
        let mut params = Vec::new();
        while !pr.is_empty() {
            let kind = pr.u8().ok_or_else(malformed)?;
            let len = if extended {
                pr.u16().map(usize::from)
            } else {
                pr.u8().map(usize::from)
            }
            .ok_or_else(malformed)?;
            let data = pr.take(len).ok_or_else(malformed)?;
            if kind == PARAM_CAPABILITIES {
                let mut cr = Reader::new(data);
                let mut caps = Vec::new();
                while !cr.is_empty() {
                    let (Some(code), Some(len)) = (cr.u8(), cr.u8()) else {
                        return Err(malformed());
                    };
                    let value = cr.take(usize::from(len)).ok_or_else(malformed)?;
                    caps.push(Capability::decode(code, value));
                }
                params.push(OptParam::Capabilities(caps));
            } else {
                params.push(OptParam::Other {
                    kind,
                    data: data.to_vec(),
                });
            }
        }
        Ok(Self {
            version,
            my_as,
            hold_time,
            bgp_id,
            params,
        })
    }

    /// The whole message, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut params = Vec::new();
        for p in &self.params {
            let (kind, data) = match p {
                OptParam::Capabilities(caps) => {
                    let mut data = Vec::new();
                    for c in caps {
                        c.encode(&mut data);
                    }
                    (PARAM_CAPABILITIES, data)
                }
                OptParam::Other { kind, data } => (*kind, data.clone()),
            };
            let len = data.len().min(255);
            params.push(kind);
            params.push(u8::try_from(len).unwrap_or(u8::MAX));
            params.extend_from_slice(&data[..len]);
        }
        // bgpctl's own parameters are far below 255 octets; longer lists are cut rather than
        // switched to RFC 9072 framing, which older peers refuse.
        params.truncate(255);
        let mut body = Vec::with_capacity(10 + params.len());
        body.push(self.version);
        body.extend_from_slice(&self.my_as.to_be_bytes());
        body.extend_from_slice(&self.hold_time.to_be_bytes());
        body.extend_from_slice(&self.bgp_id.octets());
        body.push(u8::try_from(params.len()).unwrap_or(u8::MAX));
        body.extend_from_slice(&params);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        let _ = encode_message(MessageType::Open, &body, &mut out);
        out
    }

    /// Checks a received OPEN against what we expect of the peer (RFC 4271 section 6.2,
    /// RFC 5492, RFC 6793) and works out what the session uses.
    pub fn negotiate(
        &self,
        ours: &Open,
        expected_peer_as: u32,
    ) -> Result<Negotiated, Notification> {
        if let Some(OptParam::Other { kind, .. }) = self
            .params
            .iter()
            .find(|p| matches!(p, OptParam::Other { .. }))
        {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER,
                vec![*kind],
            ));
        }
        let peer_as = self.asn();
        let four_octet_as = self
            .capabilities()
            .any(|c| matches!(c, Capability::FourOctetAs(_)));
        // RFC 6793: a peer that sends AS_TRANS without the capability cannot be matched.
        if peer_as != expected_peer_as {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_subcode::BAD_PEER_AS,
                self.my_as.to_be_bytes().to_vec(),
            ));
        }
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_subcode::UNACCEPTABLE_HOLD_TIME,
                self.hold_time.to_be_bytes().to_vec(),
            ));
        }
        let ibgp = expected_peer_as == ours.asn();
        // RFC 6286: any non-zero identifier, unique within the AS.
        if self.bgp_id.is_unspecified() || (ibgp && self.bgp_id == ours.bgp_id) {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_subcode::BAD_BGP_IDENTIFIER,
                self.bgp_id.octets().to_vec(),
            ));
        }
        let evpn = Capability::Multiprotocol {
            afi: super::AFI_L2VPN,
            safi: super::SAFI_EVPN,
        };
        if !self.capabilities().any(|c| *c == evpn) {
            // RFC 5492: name the capability we need and the peer lacks.
            let mut data = Vec::new();
            evpn.encode(&mut data);
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_subcode::UNSUPPORTED_CAPABILITY,
                data,
            ));
        }
        Ok(Negotiated {
            peer_as,
            peer_id: self.bgp_id,
            hold_time: self.hold_time.min(ours.hold_time),
            four_octet_as,
            route_refresh: self.capabilities().any(|c| *c == Capability::RouteRefresh),
            graceful_restart: self.graceful_restart_evpn() && ours.graceful_restart_evpn(),
            peer_capabilities: self.capabilities().cloned().collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bgp::wire::{MessageView, AFI_L2VPN, SAFI_EVPN};

    fn body(msg: &[u8]) -> &[u8] {
        let (view, used) = MessageView::parse(msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        assert_eq!(view.kind, MessageType::Open);
        view.body
    }

    use crate::bgp::wire::vectors::unhex;

    #[test]
    fn our_open_round_trips() {
        let open = Open::ours(4_200_000_001, 90, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(open.my_as, AS_TRANS);
        let bytes = open.encode();
        let back = Open::decode(body(&bytes)).unwrap();
        assert_eq!(back, open);
        assert_eq!(back.asn(), 4_200_000_001);
        assert_eq!(back.encode(), bytes);
    }

    /// GoBGP packs every capability into one parameter (RR, FQDN, MP, AS4, extended next hop).
    #[test]
    fn accepts_capabilities_packed_in_one_parameter() {
        let msg = unhex(
            "ffffffffffffffffffffffffffffffff 0041 01 04 fde9 005a 0a000001 24
             02 22
               02 00
               49 0a 03 67 77 31 05 6c 6f 63 61 6c
               01 04 0019 00 46
               41 04 0000fde9
               05 06 0019 0046 0002",
        );
        let open = Open::decode(body(&msg)).unwrap();
        assert_eq!(open.params.len(), 1);
        let caps: Vec<_> = open.capabilities().cloned().collect();
        assert_eq!(caps.len(), 5);
        assert!(caps.contains(&Capability::Multiprotocol {
            afi: AFI_L2VPN,
            safi: SAFI_EVPN
        }));
        assert!(caps.contains(&Capability::RouteRefresh));
        assert!(matches!(caps[1], Capability::Unknown { code: 73, .. }));
        assert_eq!(open.asn(), 65001);
        let ours = Open::ours(65001, 30, Ipv4Addr::new(10, 0, 0, 2));
        let neg = open.negotiate(&ours, 65001).unwrap();
        assert_eq!(neg.hold_time, 30);
        assert!(neg.four_octet_as && neg.route_refresh);
        // Re-encoding keeps the packing and so the bytes.
        assert_eq!(open.encode(), msg);
    }

    /// FRR sends one capability per parameter, including ones bgpctl does not know.
    #[test]
    fn accepts_one_capability_per_parameter() {
        let msg = unhex(
            "ffffffffffffffffffffffffffffffff 003b 01 04 fdeb 00b4 0a630703 1e
             02 06 01 04 0019 0046
             02 02 80 00
             02 02 02 00
             02 06 41 04 0000fdeb
             02 04 40 02 0078",
        );
        let open = Open::decode(body(&msg)).unwrap();
        assert_eq!(open.params.len(), 5);
        let ours = Open::ours(65000, 90, Ipv4Addr::new(10, 0, 0, 2));
        let neg = open.negotiate(&ours, 65003).unwrap();
        assert_eq!(neg.peer_as, 65003);
        assert_eq!(neg.hold_time, 90);
        assert_eq!(open.encode(), msg);
    }

    #[test]
    fn rfc_9072_extended_parameters_decode() {
        // opt len 255, type 255, 2-octet length 9, then (type 2, 2-octet length 6, MP cap).
        let msg = unhex(
            "ffffffffffffffffffffffffffffffff 0029 01 04 fde9 005a 0a000001 ff ff 0009
             02 0006 01 04 0019 00 46",
        );
        let open = Open::decode(body(&msg)).unwrap();
        assert_eq!(
            open.capabilities().collect::<Vec<_>>(),
            vec![&Capability::Multiprotocol {
                afi: AFI_L2VPN,
                safi: SAFI_EVPN
            }]
        );
    }

    #[test]
    fn negotiation_errors_carry_the_right_subcodes() {
        let ours = Open::ours(65000, 90, Ipv4Addr::new(10, 0, 0, 1));
        let peer = Open::ours(65001, 90, Ipv4Addr::new(10, 0, 0, 2));
        let sub = |r: Result<Negotiated, Notification>| {
            let n = r.unwrap_err();
            assert_eq!(n.code, code::OPEN_MESSAGE);
            n.subcode
        };
        assert_eq!(sub(peer.negotiate(&ours, 65002)), open_subcode::BAD_PEER_AS);
        let mut p = peer.clone();
        p.hold_time = 2;
        assert_eq!(
            sub(p.negotiate(&ours, 65001)),
            open_subcode::UNACCEPTABLE_HOLD_TIME
        );
        let mut p = peer.clone();
        p.bgp_id = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            sub(p.negotiate(&ours, 65001)),
            open_subcode::BAD_BGP_IDENTIFIER
        );
        // iBGP peer with our own identifier.
        let p = Open::ours(65000, 90, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            sub(p.negotiate(&ours, 65000)),
            open_subcode::BAD_BGP_IDENTIFIER
        );
        let mut p = peer.clone();
        p.params = vec![OptParam::Capabilities(vec![Capability::RouteRefresh])];
        let n = p.negotiate(&ours, 65001).unwrap_err();
        assert_eq!(n.subcode, open_subcode::UNSUPPORTED_CAPABILITY);
        assert_eq!(n.data, vec![1, 4, 0, 25, 0, 70]);
        let mut p = peer.clone();
        p.params.push(OptParam::Other {
            kind: 1,
            data: vec![0],
        });
        assert_eq!(
            sub(p.negotiate(&ours, 65001)),
            open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER
        );
        // Hold time 0 is fine and wins.
        let mut p = peer.clone();
        p.hold_time = 0;
        assert_eq!(p.negotiate(&ours, 65001).unwrap().hold_time, 0);
    }

    #[test]
    fn malformed_opens_are_refused_with_a_notification() {
        let good = Open::ours(65001, 90, Ipv4Addr::new(10, 0, 0, 2)).encode();
        let b = body(&good).to_vec();
        // Version 3.
        let mut v3 = b.clone();
        v3[0] = 3;
        let n = Open::decode(&v3).unwrap_err();
        assert_eq!((n.subcode, n.data.as_slice()), (1, &[0, 4][..]));
        // Every truncation and every parameter length is an error, never a panic.
        for cut in 0..b.len() {
            assert!(Open::decode(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut long = b.clone();
        long[9] = long[9].wrapping_add(1);
        assert!(Open::decode(&long).is_err());
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(Open::decode(&trailing).is_err());
    }

    #[test]
    fn graceful_restart_capability_round_trips_and_is_negotiated_for_evpn() {
        let ours = Open::ours(65000, 90, Ipv4Addr::new(10, 0, 0, 1)).with_graceful_restart(120);
        let mut cap = Vec::new();
        ours.capabilities()
            .find(|c| matches!(c, Capability::GracefulRestart { .. }))
            .unwrap()
            .encode(&mut cap);
        // Code 64, length 6: R bit and 120 s, then L2VPN EVPN with the F bit.
        assert_eq!(cap, [64, 6, 0x80, 120, 0, 25, 70, 0x80]);
        assert_eq!(
            Capability::decode(64, &cap[2..]),
            Capability::GracefulRestart {
                restarted: true,
                restart_time: 120,
                families: vec![GrFamily {
                    afi: 25,
                    safi: 70,
                    forwarding: true
                }],
            }
        );
        // A helper announcing no family (as FRR does by default), and a bad length.
        assert!(matches!(
            Capability::decode(64, &[0x00, 0x78]),
            Capability::GracefulRestart { ref families, restart_time: 120, .. } if families.is_empty()
        ));
        assert!(matches!(
            Capability::decode(64, &[0, 120, 0]),
            Capability::Unknown { .. }
        ));
        let peer = Open::ours(65001, 90, Ipv4Addr::new(10, 0, 0, 2)).with_graceful_restart(60);
        let bytes = peer.encode();
        let (view, _) = super::super::MessageView::parse(&bytes).unwrap().unwrap();
        let parsed = Open::decode(view.body).unwrap();
        assert!(parsed.negotiate(&ours, 65001).unwrap().graceful_restart);
        let plain = Open::ours(65000, 90, Ipv4Addr::new(10, 0, 0, 1));
        assert!(!parsed.negotiate(&plain, 65001).unwrap().graceful_restart);
    }
}
