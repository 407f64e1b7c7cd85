//! Route tables of bgpctl, sans I/O: what was received from each peer (Adj-RIB-In), the
//! local prefixes imported from it by policy, and what each peer was sent (Adj-RIB-Out)
//! against the desired export set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::wire::evpn::{Esi, IpPrefixRoute, Label, RouteDistinguisher, Rt5Key};
use super::wire::extcomm::{ExtCommunity, RouteTarget, TUNNEL_VXLAN};
use super::wire::update::{AsPath, Decoded, Origin, Rt5Attributes};
use super::wire::MacAddr;

/// A route target to import: exact, or `*:N` for any AS-form target with value N (as FRR's
/// auto-derived `AS:VNI` targets differ per leaf AS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RtMatch {
    Exact(RouteTarget),
    AnyAs(u32),
}

impl RtMatch {
    pub fn matches(&self, rt: &RouteTarget) -> bool {
        match self {
            Self::Exact(x) => x == rt,
            Self::AnyAs(v) => {
                matches!(rt, RouteTarget::As2 { .. } | RouteTarget::As4 { .. }) && rt.value() == *v
            }
        }
    }
}

impl FromStr for RtMatch {
    type Err = super::wire::extcomm::BadRouteTarget;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(v) = s.strip_prefix("*:") {
            return v
                .parse()
                .map(Self::AnyAs)
                .map_err(|_| super::wire::extcomm::BadRouteTarget(s.into()));
        }
        s.parse().map(Self::Exact)
    }
}

impl fmt::Display for RtMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(rt) => rt.fmt(f),
            Self::AnyAs(v) => write!(f, "*:{v}"),
        }
    }
}

impl Serialize for RtMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RtMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Which received routes become local prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportPolicy {
    pub route_targets: Vec<RtMatch>,
    /// Our router id and AS: routes we originated, reflected back, are not imported.
    pub local_id: Option<Ipv4Addr>,
    pub local_as: u32,
    /// RDs of our own exports, likewise.
    pub own_rds: BTreeSet<RouteDistinguisher>,
}

/// An RT-5 as received from a peer, with the attributes import looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRoute {
    pub route: IpPrefixRoute,
    pub next_hop: Option<IpAddr>,
    pub ext_communities: Vec<ExtCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    pub as_path: AsPath,
}

/// A local prefix learned from the fabric: where to send its traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImportedRoute {
    pub prefix: IpNet,
    /// The leaf's VTEP: the outer destination of VXLAN packets for this prefix.
    pub vtep: IpAddr,
    /// The inner destination MAC of those packets.
    pub router_mac: MacAddr,
    pub vni: u32,
    pub rd: RouteDistinguisher,
    pub ethernet_tag: u32,
    /// Gateway IP overlay index, when the route carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ip: Option<IpAddr>,
    /// The peer (route reflector) it was chosen from.
    pub peer: String,
}

impl ImportedRoute {
    pub fn key(&self) -> Rt5Key {
        Rt5Key {
            rd: self.rd,
            ethernet_tag: self.ethernet_tag,
            prefix: self.prefix,
        }
    }
}

/// A change to the local prefixes, streamed to subscribers. `Add` also replaces an earlier
/// route with the same key (RD, Ethernet tag, prefix).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ImportEvent {
    Add(ImportedRoute),
    Withdraw(ImportedRoute),
}

/// Why received routes were not imported, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportStats {
    pub no_matching_route_target: u64,
    pub not_vxlan: u64,
    pub no_router_mac: u64,
    pub no_next_hop: u64,
    pub own_route: u64,
    pub as_loop: u64,
    /// Malformed RT-5 NLRI and other EVPN route types (RFC 7606 section 5.4).
    pub ignored_nlri: u64,
    /// RT-5 with label 0 and no overlay index (RFC 9136), treated as withdrawn.
    pub label_zero: u64,
    /// A gateway's anchor host route (another bgpctl's): never a datacenter prefix.
    #[serde(default)]
    pub anchor: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    RouteTarget,
    NotVxlan,
    NoRouterMac,
    NoNextHop,
    Own,
    AsLoop,
    Anchor,
}

/// Adj-RIB-In of every peer and the local prefixes chosen from them.
#[derive(Debug, Default)]
pub struct ImportTable {
    policy: ImportPolicy,
    /// Peer name (its address) -> received routes.
    received: BTreeMap<String, BTreeMap<Rt5Key, ReceivedRoute>>,
    /// Peer names in preference order (configuration order).
    peers: Vec<String>,
    best: BTreeMap<Rt5Key, ImportedRoute>,
    pub stats: ImportStats,
}

impl ImportTable {
    pub fn new(policy: ImportPolicy, peers: Vec<String>) -> Self {
        Self {
            policy,
            peers,
            ..Self::default()
        }
    }

    pub fn policy(&self) -> &ImportPolicy {
        &self.policy
    }

    /// The current local prefixes.
    pub fn routes(&self) -> Vec<ImportedRoute> {
        self.best.values().cloned().collect()
    }

    pub fn received_count(&self, peer: &str) -> usize {
        self.received.get(peer).map_or(0, BTreeMap::len)
    }

    pub fn accepted_count(&self, peer: &str) -> usize {
        self.best.values().filter(|r| r.peer == peer).count()
    }

    /// Applies a decoded UPDATE from `peer`; returns the changes to the local prefixes.
    pub fn apply_update(&mut self, peer: &str, decoded: &Decoded) -> Vec<ImportEvent> {
        let changes = decoded.rt5_changes();
        self.stats.ignored_nlri += changes.ignored as u64;
        self.stats.label_zero += changes.label_zero as u64;
        let u = &decoded.update;
        let next_hop = u.mp_reach().and_then(|m| m.next_hop.vtep());
        let mut touched = BTreeSet::new();
        let table = self.received.entry(peer.to_owned()).or_default();
        for r in &changes.withdrawn {
            table.remove(&r.key());
            touched.insert(r.key());
        }
        for r in &changes.announced {
            table.insert(
                r.key(),
                ReceivedRoute {
                    route: *r,
                    next_hop,
                    ext_communities: u.ext_communities().to_vec(),
                    originator_id: u.originator_id(),
                    as_path: u.as_path().cloned().unwrap_or_default(),
                },
            );
            touched.insert(r.key());
        }
        let mut events = Vec::new();
        for key in touched {
            self.reselect(key, true, &mut events);
        }
        events
    }

    /// Forgets everything `peer` sent (its session went down).
    pub fn peer_down(&mut self, peer: &str) -> Vec<ImportEvent> {
        let keys: Vec<Rt5Key> = self
            .received
            .remove(peer)
            .map(|t| t.into_keys().collect())
            .unwrap_or_default();
        let mut events = Vec::new();
        for key in keys {
            self.reselect(key, false, &mut events);
        }
        events
    }

    /// Replaces the policy and re-evaluates every received route.
    pub fn set_policy(&mut self, policy: ImportPolicy) -> Vec<ImportEvent> {
        self.policy = policy;
        let keys: BTreeSet<Rt5Key> = self
            .received
            .values()
            .flat_map(|t| t.keys().copied())
            .chain(self.best.keys().copied())
            .collect();
        let mut events = Vec::new();
        for key in keys {
            self.reselect(key, false, &mut events);
        }
        events
    }

    fn reselect(&mut self, key: Rt5Key, count: bool, events: &mut Vec<ImportEvent>) {
        let mut chosen = None;
        // Peers in preference order, then any others (not configured any more) by name.
        let order = self
            .peers
            .iter()
            .chain(self.received.keys().filter(|p| !self.peers.contains(p)));
        for peer in order {
            let Some(rx) = self.received.get(peer).and_then(|t| t.get(&key)) else {
                continue;
            };
            match self.policy.evaluate(peer, rx) {
                Ok(route) => {
                    chosen = Some(route);
                    break;
                }
                Err(why) if count => self.stats.count(why),
                Err(_) => {}
            }
        }
        match (self.best.get(&key), chosen) {
            (None, None) => {}
            (Some(old), None) => {
                events.push(ImportEvent::Withdraw(old.clone()));
                self.best.remove(&key);
            }
            (Some(old), Some(new)) if *old == new => {}
            (_, Some(new)) => {
                events.push(ImportEvent::Add(new.clone()));
                self.best.insert(key, new);
            }
        }
    }
}

impl ImportStats {
    fn count(&mut self, why: Refusal) {
        let c = match why {
            Refusal::RouteTarget => &mut self.no_matching_route_target,
            Refusal::NotVxlan => &mut self.not_vxlan,
            Refusal::NoRouterMac => &mut self.no_router_mac,
            Refusal::NoNextHop => &mut self.no_next_hop,
            Refusal::Own => &mut self.own_route,
            Refusal::AsLoop => &mut self.as_loop,
            Refusal::Anchor => &mut self.anchor,
        };
        *c += 1;
    }
}

impl ImportPolicy {
    fn evaluate(&self, peer: &str, rx: &ReceivedRoute) -> Result<ImportedRoute, Refusal> {
        let rts = rx.ext_communities.iter().filter_map(|c| match c {
            ExtCommunity::RouteTarget(rt) => Some(rt),
            _ => None,
        });
        if !rts
            .into_iter()
            .any(|rt| self.route_targets.iter().any(|m| m.matches(rt)))
        {
            return Err(Refusal::RouteTarget);
        }
        // RFC 8365 section 5.1.3: without an Encapsulation community the route is MPLS.
        if !rx
            .ext_communities
            .contains(&ExtCommunity::Encapsulation(TUNNEL_VXLAN))
        {
            return Err(Refusal::NotVxlan);
        }
        let router_mac = rx
            .ext_communities
            .iter()
            .find_map(|c| match c {
                ExtCommunity::RouterMac(m) => Some(*m),
                _ => None,
            })
            .ok_or(Refusal::NoRouterMac)?;
        let vtep = rx.next_hop.ok_or(Refusal::NoNextHop)?;
        if self.own_rds.contains(&rx.route.rd)
            || (rx.originator_id.is_some() && rx.originator_id == self.local_id)
        {
            return Err(Refusal::Own);
        }
        if rx.as_path.contains(self.local_as) {
            return Err(Refusal::AsLoop);
        }
        if is_anchor_prefix(&rx.route.prefix) {
            return Err(Refusal::Anchor);
        }
        let r = &rx.route;
        Ok(ImportedRoute {
            prefix: r.prefix,
            vtep,
            router_mac,
            vni: r.label.vni(),
            rd: r.rd,
            ethernet_tag: r.ethernet_tag,
            gateway_ip: (!r.gateway.is_unspecified()).then_some(r.gateway),
            peer: peer.to_owned(),
        })
    }
}

// ---- export ----

/// A gateway that can attract traffic for remote prefixes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub name: String,
    /// Its VTEP address: the next hop of its routes.
    pub vtep: IpAddr,
    pub router_mac: MacAddr,
    /// Defaults to [`RouteDistinguisher::from_router_mac`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rd: Option<RouteDistinguisher>,
    /// Its share of the prefix's traffic, relative to the prefix's other gateways; carried
    /// as a Link Bandwidth community (one unit = 1 Mbit/s) so that leaves doing weighted
    /// ECMP spread in proportion. None: plain ECMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Gateway {
    pub fn rd(&self) -> RouteDistinguisher {
        self.rd
            .unwrap_or_else(|| RouteDistinguisher::from_router_mac(self.router_mac))
    }
}

/// One remote prefix and the gateways that should attract its traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExportPrefix {
    pub prefix: IpNet,
    pub gateways: Vec<Gateway>,
}

/// What bgpctl should advertise: set by the controller (or the configuration file for now).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExportSet {
    /// The L3 VNI, carried in the label field.
    pub vni: u32,
    pub route_targets: Vec<RouteTarget>,
    pub prefixes: Vec<ExportPrefix>,
}

/// One route bgpctl advertises: an RT-5 and the per-gateway attributes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ExportRoute {
    pub gateway: String,
    pub next_hop: IpAddr,
    pub router_mac: MacAddr,
    #[serde(serialize_with = "ser_route")]
    pub route: IpPrefixRoute,
    pub route_targets: Vec<RouteTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

fn ser_route<S: serde::Serializer>(r: &IpPrefixRoute, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Rt5", 4)?;
    st.serialize_field("rd", &r.rd)?;
    st.serialize_field("prefix", &r.prefix)?;
    st.serialize_field("ethernet_tag", &r.ethernet_tag)?;
    st.serialize_field("vni", &r.label.vni())?;
    st.end()
}

/// A gateway's anchor: a host route that only this gateway is announced for, as long as it
/// attracts any prefix of that family. FRR (8.4 and later) deletes and re-adds a type-5
/// prefix whose best path is withdrawn or changed, and its zebra releases the prefix's hold
/// on each next hop's router-MAC neighbour and fdb entry after the re-add took it again, so
/// the remaining gateways' entries vanish while the kernel route still points at them
/// (docs/bgp.md). A gateway's anchor is never re-selected, so its hold keeps the entries
/// installed. The address is in space that is never routed: 240.0.0.0/4 (reserved) and
/// 100::/64 (RFC 6666 discard-only), from a hash of the gateway's router MAC and VTEP and
/// of the exporting bgpctl's router ID: two bgpctls of a datacenter export distinct anchors,
/// so that either keeps the entries installed while the other restarts.
pub fn anchor_prefix(gw: &Gateway, v6: bool, speaker: Ipv4Addr) -> IpNet {
    // FNV-1a: stable across releases, so a restarted bgpctl announces the same anchors.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let vtep = match gw.vtep {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    for b in gw
        .router_mac
        .0
        .iter()
        .chain(vtep.iter())
        .chain(speaker.octets().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if v6 {
        let addr = (0x0100_u128 << 112) | u128::from(h);
        IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from(addr), 128).unwrap_or_default())
    } else {
        let addr = 0xf000_0000 | (h as u32 & 0x0fff_ffff);
        IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(addr), 32).unwrap_or_default())
    }
}

/// Whether `p` has the form of an [`anchor_prefix`].
pub fn is_anchor_prefix(p: &IpNet) -> bool {
    match p {
        IpNet::V4(n) => n.prefix_len() == 32 && n.addr().octets()[0] >> 4 == 0xf,
        IpNet::V6(n) => n.prefix_len() == 128 && n.addr().segments()[..4] == [0x100, 0, 0, 0],
    }
}

/// An export set that cannot be advertised.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("VNI {0} does not fit the 24-bit label field")]
    Vni(u32),
    #[error("gateways {a} and {b} would advertise {prefix} with the same RD {rd}; give one an explicit rd")]
    DuplicateRd {
        prefix: IpNet,
        rd: RouteDistinguisher,
        a: String,
        b: String,
    },
}

impl ExportSet {
    /// [`ExportSet::routes_of`] a speaker without an identity (checks and tests).
    pub fn routes(&self) -> Result<BTreeMap<Rt5Key, ExportRoute>, ExportError> {
        self.routes_of(Ipv4Addr::UNSPECIFIED)
    }

    /// One RT-5 per (prefix, gateway), keyed by the RFC 9136 route key, and each gateway's
    /// anchor routes as the bgpctl with router ID `speaker` exports them ([`anchor_prefix`]).
    pub fn routes_of(
        &self,
        speaker: Ipv4Addr,
    ) -> Result<BTreeMap<Rt5Key, ExportRoute>, ExportError> {
        let label = Label::from_vni(self.vni).ok_or(ExportError::Vni(self.vni))?;
        let mut out: BTreeMap<Rt5Key, ExportRoute> = BTreeMap::new();
        let mut anchored: BTreeMap<(&str, bool), &Gateway> = BTreeMap::new();
        for p in &self.prefixes {
            // Host bits would make a route no one else can match; advertise the network.
            let prefix = p.prefix.trunc();
            for gw in &p.gateways {
                self.add_route(&mut out, prefix, gw, gw.weight, label)?;
                anchored
                    .entry((gw.name.as_str(), prefix.addr().is_ipv6()))
                    .or_insert(gw);
            }
        }
        for ((_, v6), gw) in anchored {
            self.add_route(&mut out, anchor_prefix(gw, v6, speaker), gw, None, label)?;
        }
        Ok(out)
    }

    fn add_route(
        &self,
        out: &mut BTreeMap<Rt5Key, ExportRoute>,
        prefix: IpNet,
        gw: &Gateway,
        weight: Option<u32>,
        label: Label,
    ) -> Result<(), ExportError> {
        let route = IpPrefixRoute {
            rd: gw.rd(),
            esi: Esi::default(),
            ethernet_tag: 0,
            prefix,
            gateway: match prefix {
                IpNet::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpNet::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
            label,
        };
        if let Some(prev) = out.get(&route.key()) {
            if prev.gateway != gw.name {
                return Err(ExportError::DuplicateRd {
                    prefix,
                    rd: route.rd,
                    a: prev.gateway.clone(),
                    b: gw.name.clone(),
                });
            }
        }
        out.insert(
            route.key(),
            ExportRoute {
                gateway: gw.name.clone(),
                next_hop: gw.vtep,
                router_mac: gw.router_mac,
                route,
                route_targets: self.route_targets.clone(),
                weight,
            },
        );
        Ok(())
    }

    /// RDs used by this set (routes with them are never imported back).
    pub fn rds(&self) -> BTreeSet<RouteDistinguisher> {
        self.prefixes
            .iter()
            .flat_map(|p| p.gateways.iter().map(Gateway::rd))
            .collect()
    }
}

/// One unit of a gateway's weight in its Link Bandwidth community: 1 Mbit/s. Leaves use only
/// the ratios between a prefix's routes.
pub const BYTES_PER_SEC_PER_WEIGHT: f32 = 125_000.0;

impl ExportRoute {
    /// Whether this is a gateway's anchor ([`anchor_prefix`]).
    pub fn is_anchor(&self) -> bool {
        is_anchor_prefix(&self.route.prefix)
    }

    /// Path attributes for this route towards a peer.
    pub fn attributes(&self, local_as: u32, ibgp: bool) -> Rt5Attributes {
        let mut ext: Vec<ExtCommunity> = self
            .route_targets
            .iter()
            .copied()
            .map(ExtCommunity::RouteTarget)
            .collect();
        ext.push(ExtCommunity::Encapsulation(TUNNEL_VXLAN));
        ext.push(ExtCommunity::RouterMac(self.router_mac));
        if let Some(w) = self.weight {
            ext.push(ExtCommunity::link_bandwidth(
                local_as,
                w as f32 * BYTES_PER_SEC_PER_WEIGHT,
            ));
        }
        Rt5Attributes {
            next_hop: self.next_hop,
            origin: Origin::Igp,
            as_path: if ibgp {
                AsPath::default()
            } else {
                AsPath::sequence(vec![local_as])
            },
            local_pref: ibgp.then_some(100),
            ext_communities: ext,
        }
    }
}

/// The difference between what a peer was sent and what it should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportDiff {
    pub announce: Vec<ExportRoute>,
    pub withdraw: Vec<IpPrefixRoute>,
}

impl ExportDiff {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

/// What one peer was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdjRibOut {
    sent: BTreeMap<Rt5Key, ExportRoute>,
}

impl AdjRibOut {
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// Forget everything (session down or route refresh): the next diff sends it all.
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    /// What to send to reach `desired`, and records it as sent.
    pub fn update_to(&mut self, desired: &BTreeMap<Rt5Key, ExportRoute>) -> ExportDiff {
        let mut diff = ExportDiff::default();
        for (key, old) in &self.sent {
            if !desired.contains_key(key) {
                diff.withdraw.push(old.route);
            }
        }
        for (key, new) in desired {
            if self.sent.get(key) != Some(new) {
                diff.announce.push(new.clone());
            }
        }
        self.sent = desired.clone();
        diff
    }

    /// UPDATE messages for a diff: withdrawals first, then announcements grouped by their
    /// attributes (all routes of one gateway share them).
    pub fn messages(
        diff: &ExportDiff,
        local_as: u32,
        ctx: super::wire::update::Context,
    ) -> Vec<Vec<u8>> {
        let mut out = super::wire::update::rt5_withdrawals(&diff.withdraw);
        type Attrs = (IpAddr, MacAddr, Vec<RouteTarget>, Option<u32>);
        let mut groups: BTreeMap<Attrs, Vec<IpPrefixRoute>> = BTreeMap::new();
        for r in &diff.announce {
            groups
                .entry((r.next_hop, r.router_mac, r.route_targets.clone(), r.weight))
                .or_default()
                .push(r.route);
        }
        for routes in groups.values() {
            if let Some(first) = diff
                .announce
                .iter()
                .find(|r| Some(&r.route) == routes.first())
            {
                let attrs = first.attributes(local_as, ctx.ibgp);
                out.extend(super::wire::update::rt5_announcements(&attrs, routes, ctx));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bgp::wire::update::{self, Context};
    use crate::bgp::wire::vectors::{
        unhex, v5_frr_mpls, V1_GOBGP_V4, V2_GOBGP_WITHDRAW, V4_FRR_LEAF,
    };
    use crate::bgp::wire::MessageView;

    const IBGP: Context = Context {
        four_octet_as: true,
        ibgp: true,
    };

    fn decode(msg: &[u8], ctx: Context) -> Decoded {
        let (view, _) = MessageView::parse(msg).unwrap().unwrap();
        update::decode(view.body, ctx).unwrap()
    }

    fn policy(rts: &[&str]) -> ImportPolicy {
        ImportPolicy {
            route_targets: rts.iter().map(|s| s.parse().unwrap()).collect(),
            local_id: Some(Ipv4Addr::new(10, 0, 0, 9)),
            local_as: 65000,
            own_rds: BTreeSet::new(),
        }
    }

    #[test]
    fn matching_routes_are_imported_with_vtep_router_mac_and_vni_and_withdrawn() {
        let mut t = ImportTable::new(policy(&["65000:2204857"]), vec!["rr1".into()]);
        let ev = t.apply_update("rr1", &decode(&unhex(V1_GOBGP_V4), IBGP));
        let expected = ImportedRoute {
            prefix: "10.188.0.0/14".parse().unwrap(),
            vtep: "10.184.84.44".parse().unwrap(),
            router_mac: "70:5b:83:6b:72:a9".parse().unwrap(),
            vni: 2204857,
            rd: "28763:2204857001".parse().unwrap(),
            ethernet_tag: 0,
            gateway_ip: None,
            peer: "rr1".into(),
        };
        assert_eq!(ev, vec![ImportEvent::Add(expected.clone())]);
        assert_eq!(t.routes(), vec![expected.clone()]);
        // The same UPDATE again changes nothing.
        assert!(t
            .apply_update("rr1", &decode(&unhex(V1_GOBGP_V4), IBGP))
            .is_empty());
        let ev = t.apply_update("rr1", &decode(&unhex(V2_GOBGP_WITHDRAW), IBGP));
        assert_eq!(ev, vec![ImportEvent::Withdraw(expected)]);
        assert!(t.routes().is_empty());
    }

    #[test]
    fn route_target_wildcards_match_auto_derived_targets() {
        let ebgp = Context {
            four_octet_as: true,
            ibgp: false,
        };
        let mut t = ImportTable::new(policy(&["*:100"]), vec!["leaf".into()]);
        let ev = t.apply_update("leaf", &decode(&unhex(V4_FRR_LEAF), ebgp));
        match ev.as_slice() {
            [ImportEvent::Add(r)] => {
                assert_eq!(r.vtep, "10.99.7.3".parse::<IpAddr>().unwrap());
                assert_eq!(r.vni, 100);
                assert_eq!(r.router_mac.to_string(), "02:00:00:00:00:03");
            }
            other => panic!("{other:?}"),
        }
        let mut t = ImportTable::new(policy(&["65000:100"]), vec!["leaf".into()]);
        assert!(t
            .apply_update("leaf", &decode(&unhex(V4_FRR_LEAF), ebgp))
            .is_empty());
        assert_eq!(t.stats.no_matching_route_target, 1);
    }

    #[test]
    fn routes_without_vxlan_or_router_mac_or_from_ourselves_are_not_imported() {
        let ebgp = Context {
            four_octet_as: true,
            ibgp: false,
        };
        // Vector 5: MPLS-style, no route target, no encapsulation.
        let mut t = ImportTable::new(policy(&["*:2"]), vec!["p".into()]);
        assert!(t
            .apply_update("p", &decode(&v5_frr_mpls(), ebgp))
            .is_empty());
        assert_eq!(t.stats.no_matching_route_target, 1);
        // Matching RT but our own RD.
        let mut p = policy(&["65000:2204857"]);
        p.own_rds.insert("28763:2204857001".parse().unwrap());
        let mut t = ImportTable::new(p, vec!["p".into()]);
        assert!(t
            .apply_update("p", &decode(&unhex(V1_GOBGP_V4), IBGP))
            .is_empty());
        assert_eq!(t.stats.own_route, 1);
        // Our AS in the path (vector 1 has AS_PATH [65001]).
        let mut p = policy(&["65000:2204857"]);
        p.local_as = 65001;
        let mut t = ImportTable::new(p, vec!["p".into()]);
        assert!(t
            .apply_update("p", &decode(&unhex(V1_GOBGP_V4), IBGP))
            .is_empty());
        assert_eq!(t.stats.as_loop, 1);
    }

    #[test]
    fn two_route_reflectors_one_route_and_peer_down() {
        let mut t = ImportTable::new(policy(&["65000:2204857"]), vec!["rr1".into(), "rr2".into()]);
        let d = decode(&unhex(V1_GOBGP_V4), IBGP);
        assert_eq!(t.apply_update("rr2", &d).len(), 1);
        // rr1 is preferred: the route now comes from it (an Add replacing the rr2 one).
        match t.apply_update("rr1", &d).as_slice() {
            [ImportEvent::Add(r)] => assert_eq!(r.peer, "rr1"),
            other => panic!("{other:?}"),
        }
        match t.peer_down("rr1").as_slice() {
            [ImportEvent::Add(r)] => assert_eq!(r.peer, "rr2"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.peer_down("rr2").as_slice(),
            [ImportEvent::Withdraw(_)]
        ));
        assert!(t.routes().is_empty());
    }

    #[test]
    fn a_new_import_policy_re_evaluates_received_routes() {
        let mut t = ImportTable::new(policy(&["65000:1"]), vec!["rr1".into()]);
        assert!(t
            .apply_update("rr1", &decode(&unhex(V1_GOBGP_V4), IBGP))
            .is_empty());
        assert_eq!(t.received_count("rr1"), 1);
        let ev = t.set_policy(policy(&["65000:2204857"]));
        assert!(matches!(ev.as_slice(), [ImportEvent::Add(_)]));
        let ev = t.set_policy(policy(&["65000:1"]));
        assert!(matches!(ev.as_slice(), [ImportEvent::Withdraw(_)]));
    }

    fn gw(name: &str, vtep: &str, mac: &str) -> Gateway {
        Gateway {
            name: name.into(),
            vtep: vtep.parse().unwrap(),
            router_mac: mac.parse().unwrap(),
            rd: None,
            weight: None,
        }
    }

    #[test]
    fn weighted_gateways_carry_their_share_as_link_bandwidth() {
        let mut a = gw("a", "10.0.0.1", "02:00:00:00:00:01");
        a.weight = Some(3);
        let mut b = gw("b", "10.0.0.2", "02:00:00:00:00:02");
        b.weight = Some(1);
        let routes = set(&[("10.5.0.0/16", &[a, b])]).routes().unwrap();
        let bws: Vec<f32> = routes
            .values()
            .filter(|r| !r.is_anchor())
            .map(|r| {
                r.attributes(65003, false)
                    .ext_communities
                    .iter()
                    .find_map(|c| match c {
                        ExtCommunity::LinkBandwidth {
                            asn: 65003,
                            bytes_per_sec_bits,
                        } => Some(f32::from_bits(*bytes_per_sec_bits)),
                        _ => None,
                    })
                    .unwrap()
            })
            .collect();
        assert_eq!(
            bws,
            vec![3.0 * BYTES_PER_SEC_PER_WEIGHT, BYTES_PER_SEC_PER_WEIGHT]
        );
        // Unweighted: no community.
        let plain = set(&[("10.5.0.0/16", &[gw("a", "10.0.0.1", "02:00:00:00:00:01")])]);
        assert!(plain.routes().unwrap().values().all(|r| !r
            .attributes(65003, false)
            .ext_communities
            .iter()
            .any(|c| matches!(c, ExtCommunity::LinkBandwidth { .. }))));
    }

    fn set(prefixes: &[(&str, &[Gateway])]) -> ExportSet {
        ExportSet {
            vni: 2204857,
            route_targets: vec!["65000:2204857".parse().unwrap()],
            prefixes: prefixes
                .iter()
                .map(|(p, g)| ExportPrefix {
                    prefix: p.parse().unwrap(),
                    gateways: g.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn one_route_per_prefix_and_gateway_with_distinct_rds() {
        let g1 = gw("gw1", "10.184.84.44", "70:5b:83:6b:72:a9");
        let g2 = gw("gw2", "10.184.84.45", "70:5b:83:6b:72:aa");
        let s = set(&[
            ("10.188.0.0/14", &[g1.clone(), g2.clone()]),
            ("fd05::/16", std::slice::from_ref(&g1)),
        ]);
        let routes = s.routes().unwrap();
        assert_eq!(routes.values().filter(|r| !r.is_anchor()).count(), 3);
        // Anchors: gw1 for both families, gw2 for IPv4, each with its own RD.
        let anchors: Vec<(String, String)> = routes
            .values()
            .filter(|r| r.is_anchor())
            .map(|r| (r.gateway.clone(), r.route.prefix.to_string()))
            .collect();
        assert_eq!(anchors.len(), 3, "{anchors:?}");
        assert!(anchors.contains(&(
            "gw1".into(),
            anchor_prefix(&g1, false, Ipv4Addr::UNSPECIFIED).to_string()
        )));
        assert!(anchors.contains(&(
            "gw1".into(),
            anchor_prefix(&g1, true, Ipv4Addr::UNSPECIFIED).to_string()
        )));
        assert!(anchors.contains(&(
            "gw2".into(),
            anchor_prefix(&g2, false, Ipv4Addr::UNSPECIFIED).to_string()
        )));
        assert_ne!(
            anchor_prefix(&g1, false, Ipv4Addr::UNSPECIFIED),
            anchor_prefix(&g2, false, Ipv4Addr::UNSPECIFIED)
        );
        // Another bgpctl exports other anchors for the same gateway.
        let other = Ipv4Addr::new(10, 1, 9, 5);
        assert_ne!(
            anchor_prefix(&g1, false, Ipv4Addr::UNSPECIFIED),
            anchor_prefix(&g1, false, other)
        );
        assert!(is_anchor_prefix(&anchor_prefix(&g1, true, other)));
        assert!(
            anchor_prefix(&g1, false, Ipv4Addr::UNSPECIFIED)
                .to_string()
                .starts_with("24")
                || anchor_prefix(&g1, false, Ipv4Addr::UNSPECIFIED)
                    .to_string()
                    .starts_with("25")
        );
        assert!(anchor_prefix(&g1, true, Ipv4Addr::UNSPECIFIED)
            .to_string()
            .starts_with("100::"));
        let rds: BTreeSet<String> = routes.values().map(|r| r.route.rd.to_string()).collect();
        assert!(rds.contains("28763:2204857001") && rds.contains("28763:2204857002"));
        // The built UPDATE for gw1's v4 route is what GoBGP itself sends for vector 1, with
        // MP_REACH_NLRI first and our eBGP path.
        let r = routes
            .values()
            .find(|r| r.gateway == "gw1" && r.route.prefix.addr().is_ipv4())
            .unwrap();
        let msgs = update::rt5_announcements(
            &r.attributes(65001, false),
            &[r.route],
            Context {
                four_octet_as: true,
                ibgp: false,
            },
        );
        let (view, _) = MessageView::parse(&msgs[0]).unwrap().unwrap();
        let d = update::decode(view.body, IBGP).unwrap();
        let v1 = decode(&unhex(V1_GOBGP_V4), IBGP);
        assert_eq!(d.rt5_changes(), v1.rt5_changes());
        assert_eq!(d.update.ext_communities(), v1.update.ext_communities());
        assert_eq!(d.update.mp_reach(), v1.update.mp_reach());
        // Same MAC twice: refused, naming both gateways.
        let twin = gw("twin", "10.0.0.1", "70:5b:83:6b:72:a9");
        let err = set(&[("10.0.0.0/8", &[g1, twin])]).routes().unwrap_err();
        assert!(matches!(err, ExportError::DuplicateRd { .. }), "{err}");
        assert_eq!(
            ExportSet { vni: 1 << 24, ..s }.routes().unwrap_err(),
            ExportError::Vni(1 << 24)
        );
    }

    #[test]
    fn adj_rib_out_sends_only_differences_and_everything_after_a_clear() {
        let g1 = gw("gw1", "10.184.84.44", "70:5b:83:6b:72:a9");
        let g2 = gw("gw2", "10.184.84.45", "70:5b:83:6b:72:aa");
        let mut out = AdjRibOut::default();
        let a = set(&[
            ("10.1.0.0/16", &[g1.clone(), g2.clone()]),
            ("10.2.0.0/16", std::slice::from_ref(&g1)),
        ])
        .routes()
        .unwrap();
        let d = out.update_to(&a);
        // Three routes and the two gateways' anchors.
        assert_eq!((d.announce.len(), d.withdraw.len()), (5, 0));
        assert!(out.update_to(&a).is_empty());
        // Drop gw2 from 10.1/16, add 10.3/16 on gw2.
        let b = set(&[
            ("10.1.0.0/16", std::slice::from_ref(&g1)),
            ("10.2.0.0/16", std::slice::from_ref(&g1)),
            ("10.3.0.0/16", std::slice::from_ref(&g2)),
        ])
        .routes()
        .unwrap();
        let d = out.update_to(&b);
        assert_eq!(d.announce.len(), 1);
        assert_eq!(d.announce[0].route.prefix.to_string(), "10.3.0.0/16");
        assert_eq!(d.withdraw.len(), 1);
        assert_eq!(d.withdraw[0].prefix.to_string(), "10.1.0.0/16");
        // The messages: one withdrawal, then one announcement.
        let msgs = AdjRibOut::messages(&d, 65000, IBGP);
        assert_eq!(msgs.len(), 2);
        assert_eq!(decode(&msgs[0], IBGP).rt5_changes().withdrawn.len(), 1);
        assert_eq!(decode(&msgs[1], IBGP).rt5_changes().announced.len(), 1);
        // A changed gateway VTEP re-announces its routes.
        let mut g1b = g1.clone();
        g1b.vtep = "10.184.84.99".parse().unwrap();
        let c = set(&[
            ("10.1.0.0/16", &[g1b.clone()]),
            ("10.2.0.0/16", &[g1b]),
            ("10.3.0.0/16", &[g2]),
        ])
        .routes()
        .unwrap();
        // Its two routes, and its anchor, which moves with the VTEP.
        let d = out.update_to(&c);
        assert_eq!((d.announce.len(), d.withdraw.len()), (3, 1));
        out.clear();
        assert_eq!(out.update_to(&c).announce.len(), 5);
    }

    #[test]
    fn ibgp_exports_carry_local_pref_and_an_empty_path() {
        let r = set(&[("10.1.0.0/16", &[gw("g", "10.0.0.1", "02:00:00:00:00:01")])])
            .routes()
            .unwrap();
        let r = r.values().find(|r| !r.is_anchor()).unwrap();
        let a = r.attributes(65000, true);
        assert_eq!(a.local_pref, Some(100));
        assert!(a.as_path.segments.is_empty());
        let a = r.attributes(65000, false);
        assert_eq!(a.local_pref, None);
        assert_eq!(a.as_path, AsPath::sequence(vec![65000]));
    }
}
