//! UPDATE messages (RFC 4271 section 4.3) with MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760),
//! decoded under the revised error handling of RFC 7606.
//!
//! [`UpdateView`] and [`AttrIter`] frame an UPDATE without copying. [`decode`] builds an
//! owned [`Update`] and says what RFC 7606 makes of it: fine, some attributes discarded,
//! treat-as-withdraw, or session reset (an `Err` carrying the NOTIFICATION to send).
//! [`Update::encode`] writes any decoded UPDATE back; for attributes bgpctl decodes it keeps
//! their order and flags, so captured UPDATEs re-encode byte for byte. The builders
//! ([`rt5_announcements`], [`rt5_withdrawals`]) produce what bgpctl exports.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

use super::evpn::{self, EvpnRoute, IpPrefixRoute, NlriOverrun};
use super::extcomm::ExtCommunity;
use super::notification::{code, update_subcode as sub};
use super::{
    encode_message, MessageType, Notification, Reader, AFI_L2VPN, AS_TRANS, HEADER_LEN,
    MAX_MESSAGE_LEN, SAFI_EVPN,
};

/// Path attribute type codes.
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
}

/// Attribute flag bits.
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// What decoding needs to know of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Both sides sent the 4-octet AS capability: AS_PATH carries 4-octet numbers.
    pub four_octet_as: bool,
    /// Internal peer: LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST are expected.
    pub ibgp: bool,
}

/// The three parts of an UPDATE body, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateView<'a> {
    pub withdrawn: &'a [u8],
    pub attributes: &'a [u8],
    pub nlri: &'a [u8],
}

impl<'a> UpdateView<'a> {
    /// Splits an UPDATE body. Lengths that do not add up leave nothing to treat as withdrawn,
    /// so they reset the session (RFC 7606 section 4, Malformed Attribute List).
    pub fn parse(body: &'a [u8]) -> Result<Self, Notification> {
        let mut r = Reader::new(body);
        let bad = || Notification::new(code::UPDATE_MESSAGE, sub::MALFORMED_ATTRIBUTE_LIST);
        let wlen = r.u16().ok_or_else(bad)?;
        let withdrawn = r.take(usize::from(wlen)).ok_or_else(bad)?;
        let alen = r.u16().ok_or_else(bad)?;
        let attributes = r.take(usize::from(alen)).ok_or_else(bad)?;
        Ok(Self {
            withdrawn,
            attributes,
            nlri: r.rest(),
        })
    }

    pub fn attributes(&self) -> AttrIter<'a> {
        AttrIter {
            r: Reader::new(self.attributes),
            done: false,
        }
    }
}

/// One path attribute, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttr<'a> {
    pub flags: u8,
    pub type_code: u8,
    pub value: &'a [u8],
    /// Flags, type, length and value as received (NOTIFICATION data wants it).
    pub whole: &'a [u8],
}

/// The attribute list ended inside an attribute (RFC 7606 section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrOverrun;

/// Walks path attributes; stops after the first framing error.
pub struct AttrIter<'a> {
    r: Reader<'a>,
    done: bool,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<RawAttr<'a>, AttrOverrun>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.r.is_empty() {
            return None;
        }
        let start = self.r.rest();
        let item = (|| {
            let flags = self.r.u8()?;
            let type_code = self.r.u8()?;
            let len = if flags & flag::EXTENDED_LENGTH != 0 {
                usize::from(self.r.u16()?)
            } else {
                usize::from(self.r.u8()?)
            };
            let value = self.r.take(len)?;
            let used = start.len() - self.r.remaining();
            Some(RawAttr {
                flags,
                type_code,
                value,
                whole: start.get(..used)?,
            })
        })();
        if item.is_none() {
            self.done = true;
        }
        Some(item.ok_or(AttrOverrun))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// RFC 7606 section 7.2: unknown segment type, empty segment, overrun or a stray octet
    /// make the whole path malformed.
    fn decode(value: &[u8], four_octet: bool) -> Option<Self> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = match r.u8()? {
                1 => SegmentType::Set,
                2 => SegmentType::Sequence,
                3 => SegmentType::ConfedSequence,
                4 => SegmentType::ConfedSet,
                _ => return None,
            };
            let count = r.u8()?;
            if count == 0 {
                return None;
            }
            let mut asns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                asns.push(if four_octet {
                    r.u32()?
                } else {
                    u32::from(r.u16()?)
                });
            }
            segments.push(AsSegment { kind, asns });
        }
        Some(Self { segments })
    }

    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for seg in &self.segments {
            // Segments hold at most 255 numbers; longer ones are split.
            for chunk in seg.asns.chunks(255) {
                out.push(seg.kind as u8);
                out.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                for &asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        let two = u16::try_from(asn).unwrap_or(AS_TRANS);
                        out.extend_from_slice(&two.to_be_bytes());
                    }
                }
            }
        }
    }

    fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|&a| a > u32::from(u16::MAX)))
    }
}

/// An MP_REACH_NLRI next hop.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// Global and link-local (RFC 2545).
    V6LinkLocal(Ipv6Addr, Ipv6Addr),
    /// Next hop of an address family bgpctl does not decode.
    Raw(Vec<u8>),
}

impl NextHop {
    /// The VTEP address: IPv4, or IPv6 unless it is an IPv4-mapped address (as FRR sends
    /// for some EVPN routes), which is read as the IPv4 address it maps.
    pub fn vtep(&self) -> Option<IpAddr> {
        match self {
            Self::V4(a) => Some(IpAddr::V4(*a)),
            Self::V6(a) | Self::V6LinkLocal(a, _) => {
                Some(a.to_ipv4_mapped().map_or(IpAddr::V6(*a), IpAddr::V4))
            }
            Self::Raw(_) => None,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            Self::V6(a) => {
                out.push(16);
                out.extend_from_slice(&a.octets());
            }
            Self::V6LinkLocal(a, b) => {
                out.push(32);
                out.extend_from_slice(&a.octets());
                out.extend_from_slice(&b.octets());
            }
            Self::Raw(b) => {
                out.push(u8::try_from(b.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(&b[..b.len().min(255)]);
            }
        }
    }
}

impl From<IpAddr> for NextHop {
    fn from(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(a) => Self::V4(a),
            IpAddr::V6(a) => Self::V6(a),
        }
    }
}

/// NLRI of an MP attribute: EVPN decoded, anything else kept as bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MpNlri {
    Evpn(Vec<EvpnRoute>),
    Raw(Vec<u8>),
}

impl MpNlri {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Evpn(routes) => routes.iter().for_each(|r| r.encode(out)),
            Self::Raw(b) => out.extend_from_slice(b),
        }
    }

    pub fn evpn(&self) -> &[EvpnRoute] {
        match self {
            Self::Evpn(r) => r,
            Self::Raw(_) => &[],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpReach {
    pub afi: u16,
    pub safi: u8,
    pub next_hop: NextHop,
    /// The reserved octet (once the SNPA count), kept so the attribute re-encodes as received.
    pub reserved: u8,
    pub nlri: MpNlri,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    pub afi: u16,
    pub safi: u8,
    pub nlri: MpNlri,
}

impl MpReach {
    pub fn is_evpn(&self) -> bool {
        self.afi == AFI_L2VPN && self.safi == SAFI_EVPN
    }
}

impl MpUnreach {
    pub fn is_evpn(&self) -> bool {
        self.afi == AFI_L2VPN && self.safi == SAFI_EVPN
    }
}

/// A path attribute's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttrValue {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator {
        asn: u32,
        addr: Ipv4Addr,
    },
    Communities(Vec<u32>),
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    MpReach(MpReach),
    MpUnreach(MpUnreach),
    ExtCommunities(Vec<ExtCommunity>),
    As4Path(AsPath),
    As4Aggregator {
        asn: u32,
        addr: Ipv4Addr,
    },
    /// An optional attribute bgpctl does not decode.
    Unknown {
        type_code: u8,
        data: Vec<u8>,
    },
}

impl AttrValue {
    pub fn type_code(&self) -> u8 {
        use attr_type as t;
        match self {
            Self::Origin(_) => t::ORIGIN,
            Self::AsPath(_) => t::AS_PATH,
            Self::NextHop(_) => t::NEXT_HOP,
            Self::MultiExitDisc(_) => t::MULTI_EXIT_DISC,
            Self::LocalPref(_) => t::LOCAL_PREF,
            Self::AtomicAggregate => t::ATOMIC_AGGREGATE,
            Self::Aggregator { .. } => t::AGGREGATOR,
            Self::Communities(_) => t::COMMUNITIES,
            Self::OriginatorId(_) => t::ORIGINATOR_ID,
            Self::ClusterList(_) => t::CLUSTER_LIST,
            Self::MpReach(_) => t::MP_REACH_NLRI,
            Self::MpUnreach(_) => t::MP_UNREACH_NLRI,
            Self::ExtCommunities(_) => t::EXTENDED_COMMUNITIES,
            Self::As4Path(_) => t::AS4_PATH,
            Self::As4Aggregator { .. } => t::AS4_AGGREGATOR,
            Self::Unknown { type_code, .. } => *type_code,
        }
    }

    /// The flags RFC 4271/4760/4360/6793 give the attribute when bgpctl originates it.
    pub fn default_flags(&self) -> u8 {
        use attr_type as t;
        match self.type_code() {
            t::MULTI_EXIT_DISC
            | t::ORIGINATOR_ID
            | t::CLUSTER_LIST
            | t::MP_REACH_NLRI
            | t::MP_UNREACH_NLRI => flag::OPTIONAL,
            t::AGGREGATOR
            | t::COMMUNITIES
            | t::EXTENDED_COMMUNITIES
            | t::AS4_PATH
            | t::AS4_AGGREGATOR => flag::OPTIONAL | flag::TRANSITIVE,
            _ => flag::TRANSITIVE,
        }
    }

    fn encode_value(&self, ctx: Context, out: &mut Vec<u8>) {
        match self {
            Self::Origin(o) => out.push(*o as u8),
            Self::AsPath(p) => p.encode(ctx.four_octet_as, out),
            Self::NextHop(a) | Self::OriginatorId(a) => out.extend_from_slice(&a.octets()),
            Self::MultiExitDisc(v) | Self::LocalPref(v) => out.extend_from_slice(&v.to_be_bytes()),
            Self::AtomicAggregate => {}
            Self::Aggregator { asn, addr } => {
                if ctx.four_octet_as {
                    out.extend_from_slice(&asn.to_be_bytes());
                } else {
                    out.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
                out.extend_from_slice(&addr.octets());
            }
            Self::As4Aggregator { asn, addr } => {
                out.extend_from_slice(&asn.to_be_bytes());
                out.extend_from_slice(&addr.octets());
            }
            Self::Communities(c) => c
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_be_bytes())),
            Self::ClusterList(c) => c.iter().for_each(|a| out.extend_from_slice(&a.octets())),
            Self::MpReach(m) => {
                out.extend_from_slice(&m.afi.to_be_bytes());
                out.push(m.safi);
                m.next_hop.encode(out);
                out.push(m.reserved);
                m.nlri.encode(out);
            }
            Self::MpUnreach(m) => {
                out.extend_from_slice(&m.afi.to_be_bytes());
                out.push(m.safi);
                m.nlri.encode(out);
            }
            Self::ExtCommunities(c) => c.iter().for_each(|e| out.extend_from_slice(&e.to_bytes())),
            Self::As4Path(p) => p.encode(true, out),
            Self::Unknown { data, .. } => out.extend_from_slice(data),
        }
    }
}

/// A path attribute: its flags as received (or [`AttrValue::default_flags`]) and value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathAttribute {
    pub flags: u8,
    pub value: AttrValue,
}

impl PathAttribute {
    pub fn new(value: AttrValue) -> Self {
        Self {
            flags: value.default_flags(),
            value,
        }
    }

    /// Appends flags, type, length and value. The extended-length bit is set when the value
    /// needs it and kept when the flags already had it (some speakers always set it).
    pub fn encode(&self, ctx: Context, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        self.value.encode_value(ctx, &mut value);
        let len = value.len().min(usize::from(u16::MAX));
        let mut flags = self.flags;
        if len > 255 {
            flags |= flag::EXTENDED_LENGTH;
        }
        out.push(flags);
        out.push(self.value.type_code());
        if flags & flag::EXTENDED_LENGTH != 0 {
            out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        } else {
            out.push(u8::try_from(len).unwrap_or(u8::MAX));
        }
        out.extend_from_slice(&value[..len]);
    }
}

/// An UPDATE message, owned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Update {
    /// IPv4 unicast withdrawn routes (bgpctl does not negotiate IPv4 unicast; kept for logs).
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    pub fn get(&self, type_code: u8) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .map(|a| &a.value)
            .find(|v| v.type_code() == type_code)
    }

    pub fn mp_reach(&self) -> Option<&MpReach> {
        match self.get(attr_type::MP_REACH_NLRI) {
            Some(AttrValue::MpReach(m)) => Some(m),
            _ => None,
        }
    }

    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        match self.get(attr_type::MP_UNREACH_NLRI) {
            Some(AttrValue::MpUnreach(m)) => Some(m),
            _ => None,
        }
    }

    pub fn ext_communities(&self) -> &[ExtCommunity] {
        match self.get(attr_type::EXTENDED_COMMUNITIES) {
            Some(AttrValue::ExtCommunities(c)) => c,
            _ => &[],
        }
    }

    pub fn as_path(&self) -> Option<&AsPath> {
        match self.get(attr_type::AS_PATH) {
            Some(AttrValue::AsPath(p)) => Some(p),
            _ => None,
        }
    }

    pub fn originator_id(&self) -> Option<Ipv4Addr> {
        match self.get(attr_type::ORIGINATOR_ID) {
            Some(AttrValue::OriginatorId(a)) => Some(*a),
            _ => None,
        }
    }

    /// Whether this is an End-of-RIB marker (RFC 4724): an empty UPDATE, or one holding only
    /// an MP_UNREACH_NLRI without NLRI.
    pub fn is_end_of_rib(&self) -> bool {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return false;
        }
        match self.attributes.as_slice() {
            [] => true,
            [PathAttribute {
                value: AttrValue::MpUnreach(m),
                ..
            }] => match &m.nlri {
                MpNlri::Evpn(r) => r.is_empty(),
                MpNlri::Raw(r) => r.is_empty(),
            },
            _ => false,
        }
    }

    /// The UPDATE body (after the header).
    pub fn encode_body(&self, ctx: Context, out: &mut Vec<u8>) {
        let prefixes = |list: &[Ipv4Net]| {
            let mut b = Vec::new();
            for p in list {
                b.push(p.prefix_len());
                let bytes = usize::from(p.prefix_len()).div_ceil(8);
                b.extend_from_slice(&p.addr().octets()[..bytes]);
            }
            b
        };
        let withdrawn = prefixes(&self.withdrawn);
        let mut attrs = Vec::new();
        for a in &self.attributes {
            a.encode(ctx, &mut attrs);
        }
        out.extend_from_slice(
            &u16::try_from(withdrawn.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&withdrawn);
        out.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&attrs);
        out.extend_from_slice(&prefixes(&self.nlri));
    }

    /// The whole message, or an error when it would exceed 4096 bytes.
    pub fn encode(&self, ctx: Context) -> Result<Vec<u8>, super::TooLong> {
        let mut body = Vec::new();
        self.encode_body(ctx, &mut body);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        encode_message(MessageType::Update, &body, &mut out)?;
        Ok(out)
    }
}

/// RFC 7606 approaches, weakest first, so `max` picks the one to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approach {
    AttributeDiscard,
    TreatAsWithdraw,
    SessionReset,
}

impl fmt::Display for Approach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AttributeDiscard => "attribute discard",
            Self::TreatAsWithdraw => "treat-as-withdraw",
            Self::SessionReset => "session reset",
        })
    }
}

/// One error found in an UPDATE, with the approach RFC 7606 prescribes for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateError {
    /// Attribute type code, or 0 for errors not tied to one attribute.
    pub type_code: u8,
    pub approach: Approach,
    pub reason: &'static str,
}

/// A decoded UPDATE that did not need a session reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The UPDATE without the attributes that were discarded or malformed.
    pub update: Update,
    /// RFC 7606 treat-as-withdraw: every route the UPDATE advertises is to be withdrawn.
    pub treat_as_withdraw: bool,
    pub errors: Vec<UpdateError>,
}

/// An UPDATE that resets the session: the NOTIFICATION to send and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionReset {
    pub notification: Notification,
    pub reason: &'static str,
}

fn reset(subcode: u8, data: &[u8], reason: &'static str) -> SessionReset {
    SessionReset {
        notification: Notification::with_data(code::UPDATE_MESSAGE, subcode, data.to_vec()),
        reason,
    }
}

fn decode_prefixes(mut bytes: &[u8]) -> Option<Vec<Ipv4Net>> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        if len > 32 {
            return None;
        }
        let n = usize::from(len).div_ceil(8);
        let addr = rest.get(..n)?;
        let mut octets = [0u8; 4];
        octets[..n].copy_from_slice(addr);
        out.push(Ipv4Net::new(Ipv4Addr::from(octets), len).ok()?);
        bytes = rest.get(n..)?;
    }
    Some(out)
}

/// Expected (optional, transitive) bits of the attributes bgpctl decodes.
fn expected_flags(type_code: u8) -> Option<(bool, bool)> {
    use attr_type as t;
    Some(match type_code {
        t::ORIGIN | t::AS_PATH | t::NEXT_HOP | t::LOCAL_PREF | t::ATOMIC_AGGREGATE => (false, true),
        t::MULTI_EXIT_DISC
        | t::ORIGINATOR_ID
        | t::CLUSTER_LIST
        | t::MP_REACH_NLRI
        | t::MP_UNREACH_NLRI => (true, false),
        t::AGGREGATOR
        | t::COMMUNITIES
        | t::EXTENDED_COMMUNITIES
        | t::AS4_PATH
        | t::AS4_AGGREGATOR => (true, true),
        _ => return None,
    })
}

type AttrResult = Result<AttrValue, (Approach, &'static str)>;

fn decode_mp_reach(v: &[u8]) -> Result<MpReach, &'static str> {
    let mut r = Reader::new(v);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err("MP_REACH_NLRI shorter than 5 octets");
    };
    let nh = r
        .take(usize::from(nh_len))
        .ok_or("MP_REACH_NLRI next hop overruns")?;
    let reserved = r
        .u8()
        .ok_or("MP_REACH_NLRI ends before the reserved octet")?;
    if afi != AFI_L2VPN || safi != SAFI_EVPN {
        return Ok(MpReach {
            afi,
            safi,
            next_hop: NextHop::Raw(nh.to_vec()),
            reserved,
            nlri: MpNlri::Raw(r.rest().to_vec()),
        });
    }
    let mut nr = Reader::new(nh);
    let next_hop = match nh.len() {
        4 => NextHop::V4(nr.ipv4().ok_or("next hop")?),
        16 => NextHop::V6(nr.ipv6().ok_or("next hop")?),
        32 => NextHop::V6LinkLocal(nr.ipv6().ok_or("next hop")?, nr.ipv6().ok_or("next hop")?),
        // RFC 7606 section 7.11: the NLRI cannot be located reliably.
        _ => return Err("EVPN next hop length is not 4, 16 or 32"),
    };
    let routes = evpn::decode_nlri(r.rest())
        .map_err(|NlriOverrun { .. }| "EVPN NLRI overruns MP_REACH_NLRI")?;
    Ok(MpReach {
        afi,
        safi,
        next_hop,
        reserved,
        nlri: MpNlri::Evpn(routes),
    })
}

fn decode_mp_unreach(v: &[u8]) -> Result<MpUnreach, &'static str> {
    let mut r = Reader::new(v);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err("MP_UNREACH_NLRI shorter than 3 octets");
    };
    let nlri = if afi == AFI_L2VPN && safi == SAFI_EVPN {
        MpNlri::Evpn(evpn::decode_nlri(r.rest()).map_err(|_| "EVPN NLRI overruns MP_UNREACH_NLRI")?)
    } else {
        MpNlri::Raw(r.rest().to_vec())
    };
    Ok(MpUnreach { afi, safi, nlri })
}

fn decode_attr(a: &RawAttr<'_>, ctx: Context) -> AttrResult {
    use attr_type as t;
    use Approach::{AttributeDiscard as Discard, TreatAsWithdraw as Taw};
    let v = a.value;
    let mut r = Reader::new(v);
    let exact = |n: usize| v.len() == n;
    match a.type_code {
        t::ORIGIN => match (exact(1), r.u8()) {
            (true, Some(0)) => Ok(AttrValue::Origin(Origin::Igp)),
            (true, Some(1)) => Ok(AttrValue::Origin(Origin::Egp)),
            (true, Some(2)) => Ok(AttrValue::Origin(Origin::Incomplete)),
            _ => Err((Taw, "malformed ORIGIN")),
        },
        t::AS_PATH => AsPath::decode(v, ctx.four_octet_as)
            .map(AttrValue::AsPath)
            .ok_or((Taw, "malformed AS_PATH")),
        t::NEXT_HOP => match (exact(4), r.ipv4()) {
            (true, Some(a)) => Ok(AttrValue::NextHop(a)),
            _ => Err((Taw, "NEXT_HOP length is not 4")),
        },
        t::MULTI_EXIT_DISC => match (exact(4), r.u32()) {
            (true, Some(m)) => Ok(AttrValue::MultiExitDisc(m)),
            _ => Err((Taw, "MULTI_EXIT_DISC length is not 4")),
        },
        t::LOCAL_PREF if !ctx.ibgp => Err((Discard, "LOCAL_PREF from an external peer")),
        t::LOCAL_PREF => match (exact(4), r.u32()) {
            (true, Some(p)) => Ok(AttrValue::LocalPref(p)),
            _ => Err((Taw, "LOCAL_PREF length is not 4")),
        },
        t::ATOMIC_AGGREGATE if v.is_empty() => Ok(AttrValue::AtomicAggregate),
        t::ATOMIC_AGGREGATE => Err((Discard, "ATOMIC_AGGREGATE length is not 0")),
        t::AGGREGATOR => {
            let asn = if ctx.four_octet_as {
                r.u32()
            } else {
                r.u16().map(u32::from)
            };
            match (asn, r.ipv4(), r.is_empty()) {
                (Some(asn), Some(addr), true) => Ok(AttrValue::Aggregator { asn, addr }),
                _ => Err((Discard, "malformed AGGREGATOR")),
            }
        }
        t::COMMUNITIES if !v.is_empty() && v.len().is_multiple_of(4) => Ok(AttrValue::Communities(
            v.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )),
        t::COMMUNITIES => Err((Taw, "COMMUNITIES length is not a non-zero multiple of 4")),
        t::ORIGINATOR_ID if !ctx.ibgp => Err((Discard, "ORIGINATOR_ID from an external peer")),
        t::ORIGINATOR_ID => match (exact(4), r.ipv4()) {
            (true, Some(a)) => Ok(AttrValue::OriginatorId(a)),
            _ => Err((Taw, "ORIGINATOR_ID length is not 4")),
        },
        t::CLUSTER_LIST if !ctx.ibgp => Err((Discard, "CLUSTER_LIST from an external peer")),
        t::CLUSTER_LIST if !v.is_empty() && v.len().is_multiple_of(4) => {
            Ok(AttrValue::ClusterList(
                v.chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect(),
            ))
        }
        t::CLUSTER_LIST => Err((Taw, "CLUSTER_LIST length is not a non-zero multiple of 4")),
        t::MP_REACH_NLRI => decode_mp_reach(v)
            .map(AttrValue::MpReach)
            .map_err(|e| (Approach::SessionReset, e)),
        t::MP_UNREACH_NLRI => decode_mp_unreach(v)
            .map(AttrValue::MpUnreach)
            .map_err(|e| (Approach::SessionReset, e)),
        t::EXTENDED_COMMUNITIES if !v.is_empty() && v.len().is_multiple_of(8) => {
            Ok(AttrValue::ExtCommunities(
                v.chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        ExtCommunity::from_bytes(b)
                    })
                    .collect(),
            ))
        }
        t::EXTENDED_COMMUNITIES => Err((
            Taw,
            "EXTENDED_COMMUNITIES length is not a non-zero multiple of 8",
        )),
        // RFC 6793 section 6: a 4-octet speaker discards AS4_PATH/AS4_AGGREGATOR from another
        // 4-octet speaker, and discards them when malformed.
        t::AS4_PATH | t::AS4_AGGREGATOR if ctx.four_octet_as => {
            Err((Discard, "AS4 attribute from a 4-octet-AS peer"))
        }
        t::AS4_PATH => AsPath::decode(v, true)
            .map(AttrValue::As4Path)
            .ok_or((Discard, "malformed AS4_PATH")),
        t::AS4_AGGREGATOR => match (r.u32(), r.ipv4(), r.is_empty()) {
            (Some(asn), Some(addr), true) => Ok(AttrValue::As4Aggregator { asn, addr }),
            _ => Err((Discard, "malformed AS4_AGGREGATOR")),
        },
        type_code => Ok(AttrValue::Unknown {
            type_code,
            data: v.to_vec(),
        }),
    }
}

/// Decodes an UPDATE body under RFC 7606. `Err` means session reset with its NOTIFICATION;
/// `Ok` may still be treat-as-withdraw or have discarded attributes (see [`Decoded`]).
pub fn decode(body: &[u8], ctx: Context) -> Result<Decoded, SessionReset> {
    let view = UpdateView::parse(body).map_err(|notification| SessionReset {
        notification,
        reason: "withdrawn routes or attribute lengths exceed the message",
    })?;
    // The NLRI fields cannot be parsed around an error, so errors there reset (RFC 7606 5.3).
    let withdrawn = decode_prefixes(view.withdrawn).ok_or_else(|| {
        reset(
            sub::INVALID_NETWORK_FIELD,
            &[],
            "malformed withdrawn routes",
        )
    })?;
    let nlri = decode_prefixes(view.nlri)
        .ok_or_else(|| reset(sub::INVALID_NETWORK_FIELD, &[], "malformed NLRI"))?;

    let mut seen = [false; 256];
    let mut attributes = Vec::new();
    let mut errors = Vec::new();
    let mut others_than_unreach = false;
    for item in view.attributes() {
        let Ok(raw) = item else {
            // RFC 7606 section 4: treat-as-withdraw, NLRI found through the total length.
            errors.push(UpdateError {
                type_code: 0,
                approach: Approach::TreatAsWithdraw,
                reason: "attribute overruns the path attributes",
            });
            others_than_unreach = true;
            break;
        };
        let tc = raw.type_code;
        if tc != attr_type::MP_UNREACH_NLRI {
            others_than_unreach = true;
        }
        let is_mp = tc == attr_type::MP_REACH_NLRI || tc == attr_type::MP_UNREACH_NLRI;
        if seen[usize::from(tc)] {
            if is_mp {
                return Err(reset(
                    sub::MALFORMED_ATTRIBUTE_LIST,
                    &[],
                    "repeated MP_REACH_NLRI or MP_UNREACH_NLRI",
                ));
            }
            errors.push(UpdateError {
                type_code: tc,
                approach: Approach::AttributeDiscard,
                reason: "repeated attribute",
            });
            continue;
        }
        seen[usize::from(tc)] = true;
        let optional = raw.flags & flag::OPTIONAL != 0;
        let transitive = raw.flags & flag::TRANSITIVE != 0;
        match expected_flags(tc) {
            None if !optional => {
                return Err(reset(
                    sub::UNRECOGNIZED_WELL_KNOWN,
                    raw.whole,
                    "unrecognized well-known attribute",
                ));
            }
            Some(expected) if expected != (optional, transitive) => {
                if is_mp {
                    return Err(reset(
                        sub::ATTRIBUTE_FLAGS,
                        raw.whole,
                        "MP attribute with wrong flags",
                    ));
                }
                let approach = if tc == attr_type::AS4_PATH || tc == attr_type::AS4_AGGREGATOR {
                    Approach::AttributeDiscard
                } else {
                    Approach::TreatAsWithdraw
                };
                errors.push(UpdateError {
                    type_code: tc,
                    approach,
                    reason: "attribute flags conflict with the attribute type",
                });
                continue;
            }
            _ => {}
        }
        match decode_attr(&raw, ctx) {
            Ok(value) => attributes.push(PathAttribute {
                flags: raw.flags,
                value,
            }),
            Err((Approach::SessionReset, reason)) => {
                return Err(reset(sub::OPTIONAL_ATTRIBUTE, raw.whole, reason));
            }
            Err((approach, reason)) => errors.push(UpdateError {
                type_code: tc,
                approach,
                reason,
            }),
        }
    }

    let update = Update {
        withdrawn,
        attributes,
        nlri,
    };
    let reachable = !update.nlri.is_empty() || update.mp_reach().is_some();
    if reachable {
        // RFC 7606 section 3(d): a missing well-known mandatory attribute is treat-as-withdraw.
        // Only count it missing if it was not already reported as malformed.
        let mut missing = |tc: u8, reason| {
            if !seen[usize::from(tc)] {
                errors.push(UpdateError {
                    type_code: tc,
                    approach: Approach::TreatAsWithdraw,
                    reason,
                });
            }
        };
        missing(attr_type::ORIGIN, "ORIGIN missing");
        missing(attr_type::AS_PATH, "AS_PATH missing");
        if !update.nlri.is_empty() {
            missing(attr_type::NEXT_HOP, "NEXT_HOP missing");
        }
    }
    let worst = errors.iter().map(|e| e.approach).max();
    if worst == Some(Approach::TreatAsWithdraw) && !reachable && others_than_unreach {
        // RFC 7606 section 5.2: attributes but no reachable NLRI, so there is nothing to treat
        // as withdrawn and the NLRI may not have been found at all.
        return Err(reset(
            sub::MALFORMED_ATTRIBUTE_LIST,
            &[],
            "malformed attributes in an UPDATE without reachable NLRI",
        ));
    }
    Ok(Decoded {
        update,
        treat_as_withdraw: worst == Some(Approach::TreatAsWithdraw),
        errors,
    })
}

/// The EVPN RT-5 changes an UPDATE makes, after RFC 7606 and RFC 9136 rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rt5Changes {
    pub announced: Vec<IpPrefixRoute>,
    pub withdrawn: Vec<IpPrefixRoute>,
    /// Routes dropped: malformed RT-5 NLRI (no key to withdraw) and other EVPN route types.
    pub ignored: usize,
    /// RT-5 with label 0 and no overlay index, treated as withdrawn (RFC 9136 section 3.1).
    pub label_zero: usize,
}

impl Decoded {
    pub fn rt5_changes(&self) -> Rt5Changes {
        let mut out = Rt5Changes::default();
        let sort = |routes: &[EvpnRoute], withdraw: bool, out: &mut Rt5Changes| {
            for r in routes {
                match r {
                    EvpnRoute::IpPrefix(p) if withdraw => out.withdrawn.push(*p),
                    EvpnRoute::IpPrefix(p) if p.label.raw() == 0 && !p.has_overlay_index() => {
                        out.label_zero += 1;
                        out.withdrawn.push(*p);
                    }
                    EvpnRoute::IpPrefix(p) => out.announced.push(*p),
                    EvpnRoute::Malformed { .. } | EvpnRoute::Other { .. } => out.ignored += 1,
                }
            }
        };
        if let Some(m) = self.update.mp_unreach().filter(|m| m.is_evpn()) {
            sort(m.nlri.evpn(), true, &mut out);
        }
        if let Some(m) = self.update.mp_reach().filter(|m| m.is_evpn()) {
            sort(m.nlri.evpn(), self.treat_as_withdraw, &mut out);
        }
        out
    }
}

/// The attributes bgpctl puts on its RT-5 routes besides MP_REACH_NLRI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rt5Attributes {
    pub next_hop: IpAddr,
    pub origin: Origin,
    pub as_path: AsPath,
    /// Sent to internal peers only.
    pub local_pref: Option<u32>,
    pub ext_communities: Vec<ExtCommunity>,
}

fn mp_reach_attr(next_hop: IpAddr, routes: &[IpPrefixRoute]) -> PathAttribute {
    PathAttribute::new(AttrValue::MpReach(MpReach {
        afi: AFI_L2VPN,
        safi: SAFI_EVPN,
        next_hop: next_hop.into(),
        reserved: 0,
        nlri: MpNlri::Evpn(routes.iter().copied().map(EvpnRoute::IpPrefix).collect()),
    }))
}

/// UPDATE messages announcing `routes` with `attrs`, as many routes per message as fit in
/// 4096 bytes. MP_REACH_NLRI comes first (RFC 7606 section 5.1), the rest in type order.
pub fn rt5_announcements(
    attrs: &Rt5Attributes,
    routes: &[IpPrefixRoute],
    ctx: Context,
) -> Vec<Vec<u8>> {
    let mut rest = vec![
        PathAttribute::new(AttrValue::Origin(attrs.origin)),
        PathAttribute::new(AttrValue::AsPath(attrs.as_path.clone())),
    ];
    if !ctx.four_octet_as && attrs.as_path.needs_four_octets() {
        // RFC 6793 section 4.2.2: a 2-octet peer gets AS_TRANS and the real path in AS4_PATH.
        rest.push(PathAttribute::new(AttrValue::As4Path(
            attrs.as_path.clone(),
        )));
    }
    if let Some(lp) = attrs.local_pref {
        rest.push(PathAttribute::new(AttrValue::LocalPref(lp)));
    }
    if !attrs.ext_communities.is_empty() {
        rest.push(PathAttribute::new(AttrValue::ExtCommunities(
            attrs.ext_communities.clone(),
        )));
    }
    rest.sort_by_key(|a| a.value.type_code());
    let mut rest_bytes = Vec::new();
    for a in &rest {
        a.encode(ctx, &mut rest_bytes);
    }
    let empty_mp = {
        let mut b = Vec::new();
        mp_reach_attr(attrs.next_hop, &[]).encode(ctx, &mut b);
        b.len()
    };
    pack(
        routes,
        HEADER_LEN + 4 + rest_bytes.len() + empty_mp + 2,
        |chunk| {
            let mut body = Vec::new();
            let mut attr_bytes = Vec::new();
            mp_reach_attr(attrs.next_hop, chunk).encode(ctx, &mut attr_bytes);
            attr_bytes.extend_from_slice(&rest_bytes);
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(
                &u16::try_from(attr_bytes.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            body.extend_from_slice(&attr_bytes);
            body
        },
    )
}

/// UPDATE messages withdrawing `routes` (MP_UNREACH_NLRI only, full RT-5 NLRI as GoBGP wants).
pub fn rt5_withdrawals(routes: &[IpPrefixRoute]) -> Vec<Vec<u8>> {
    let ctx = Context {
        four_octet_as: true,
        ibgp: true,
    };
    pack(routes, HEADER_LEN + 4 + 4 + 3, |chunk| {
        let update = Update {
            attributes: vec![PathAttribute::new(AttrValue::MpUnreach(MpUnreach {
                afi: AFI_L2VPN,
                safi: SAFI_EVPN,
                nlri: MpNlri::Evpn(chunk.iter().copied().map(EvpnRoute::IpPrefix).collect()),
            }))],
            ..Update::default()
        };
        let mut body = Vec::new();
        update.encode_body(ctx, &mut body);
        body
    })
}

/// Splits `routes` into messages of at most 4096 bytes; `overhead` is what a message costs
/// besides its routes (counting the 2 extra octets an extended attribute length may need).
fn pack(
    routes: &[IpPrefixRoute],
    overhead: usize,
    body: impl Fn(&[IpPrefixRoute]) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < routes.len() {
        let mut size = overhead;
        let mut end = start;
        while let Some(r) = routes.get(end) {
            if size + r.encoded_len() > MAX_MESSAGE_LEN {
                break;
            }
            size += r.encoded_len();
            end += 1;
        }
        // A single route always fits (at most 60 bytes); guard against a stall anyway.
        let end = end.max(start + 1).min(routes.len());
        let mut msg = Vec::with_capacity(size);
        let chunk = routes.get(start..end).unwrap_or_default();
        if encode_message(MessageType::Update, &body(chunk), &mut msg).is_ok() {
            out.push(msg);
        }
        start = end;
    }
    out
}
