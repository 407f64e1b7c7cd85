//! The tunnel planner: from the local gateway's facts and the remote gateways the mesh shows,
//! the mesh tunnels this gateway should have. Sans-IO and pure: the same input always gives
//! the same [`Plan`], whatever the order of `remotes`.
//!
//! Both ends of a tunnel derive, without talking to each other, the same identity, the same
//! interface name and the same pair of inner addresses (docs/tunnel-planner.md):
//!
//! - every gateway has a mesh id in `1..=65535`; for a pair of ids `a < b` the pair index is
//!   `p = b(b-1)/2 + a`;
//! - a gateway's transits are ranked by name (byte order): the rank is the transit's slot, at
//!   most [`MAX_TRANSITS`]; the transit pair index is `q = slot_low * 4 + slot_high`, the
//!   low-id gateway's transit first;
//! - the tunnel index is `k = 16p + q`; the tunnel is named `sdwan{k}`, its IPv4 /31 is
//!   `pool_v4 + 2k` and its IPv6 /127 `pool_v6 + 2k`, the low-id gateway taking the even
//!   address, the high-id gateway the odd one;
//! - its identity is the UUID v5 (OID namespace) of
//!   `gatewan-tunnel/{low name}/{low transit}/{high name}/{high transit}`.
//!
//! What cannot be planned is refused with a reason ([`Refusal`]) instead of guessed at.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;
use uuid::Uuid;

use crate::mesh::tags::TransitMeta;

/// Transits per gateway that get mesh tunnels (Serf's 512-byte tag budget fits at most 4).
pub const MAX_TRANSITS: u32 = 4;

/// The largest mesh id.
pub const MAX_GATEWAY_ID: u32 = 65535;

/// Longest tunnel (interface) name the kernel accepts.
pub const MAX_NAME_LEN: usize = gatewan_dataplane::ifname::MAX_LEN;

/// The largest tunnel index whose name `sdwan{k}` fits [`MAX_NAME_LEN`] (ten digits).
pub const MAX_NAMED_INDEX: u64 = 9_999_999_999;

/// Transit pair slots per gateway pair.
const PAIR_SLOTS: u64 = (MAX_TRANSITS as u64) * (MAX_TRANSITS as u64);

fn ser_key<S: serde::Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(key))
}

/// This gateway, as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalGateway {
    /// Its node name in the mesh.
    pub name: String,
    /// Its configured mesh id, `1..=65535`.
    pub id: u32,
    pub datacenter: String,
    /// Its WireGuard public key.
    #[serde(serialize_with = "ser_key")]
    pub public_key: [u8; 32],
    pub transits: Vec<LocalTransit>,
}

/// One of our transits and the public endpoints it is reached at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalTransit {
    pub name: String,
    /// The first one's family is preferred when picking the peer's endpoint.
    pub endpoints: Vec<SocketAddr>,
}

/// A remote gateway, parsed from the mesh by the caller (gateways only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteGateway {
    pub name: String,
    pub id: u32,
    pub datacenter: String,
    pub echo_port: Option<u16>,
    pub transits: Vec<TransitMeta>,
}

/// The inner address pools; either may be absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pools {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

/// What identifies a configured static tunnel, so a mesh tunnel does not duplicate it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticTunnelKey {
    pub local_transit: String,
    #[serde(serialize_with = "ser_key")]
    pub peer_public_key: [u8; 32],
    /// `None` accepts the peer from anywhere, so it shadows every mesh tunnel to that key on
    /// that transit.
    pub peer_endpoint: Option<SocketAddr>,
}

/// One tunnel this gateway should have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedTunnel {
    /// The UUID (hyphenated) both ends compute.
    pub id: String,
    /// The tunnel index `k`.
    pub index: u64,
    /// `sdwan{k}`.
    pub name: String,
    pub local_transit: String,
    pub peer: String,
    pub peer_id: u32,
    pub peer_datacenter: String,
    pub peer_transit: String,
    #[serde(serialize_with = "ser_key")]
    pub peer_public_key: [u8; 32],
    pub peer_endpoint: SocketAddr,
    pub peer_echo_port: Option<u16>,
    /// Our address, prefix length 31.
    pub address_v4: Option<Ipv4Net>,
    pub peer_address_v4: Option<Ipv4Addr>,
    /// Our address, prefix length 127.
    pub address_v6: Option<Ipv6Net>,
    pub peer_address_v6: Option<Ipv6Addr>,
}

/// Something the planner would not plan. `peer` is the remote gateway's name, or our own
/// name for refusals about this gateway itself (an out-of-range id, a transit past the 4th).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Refusal {
    pub peer: String,
    pub reason: String,
}

/// The desired mesh tunnels, sorted by name, and what was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub tunnels: Vec<PlannedTunnel>,
    /// Sorted by (peer, reason).
    pub refused: Vec<Refusal>,
    /// Transit pairs without a common address family (not an error).
    pub skipped_family: usize,
    /// Mesh tunnels a static tunnel already covers.
    pub shadowed_by_static: usize,
}

/// The tunnel index `k = 16p + q`, with `p = b(b-1)/2 + a` for ids `a = low_id < b = high_id`
/// and `q = low_slot * 4 + high_slot`. Meaningful for ids in `1..=65535` and slots below
/// [`MAX_TRANSITS`] (what [`plan`] passes); saturates rather than overflow otherwise.
pub fn tunnel_index(low_id: u32, low_slot: u32, high_id: u32, high_slot: u32) -> u64 {
    let (a, b) = (u64::from(low_id), u64::from(high_id));
    let p = (b.saturating_mul(b.saturating_sub(1)) / 2).saturating_add(a);
    let q = u64::from(low_slot)
        .saturating_mul(u64::from(MAX_TRANSITS))
        .saturating_add(u64::from(high_slot));
    p.saturating_mul(PAIR_SLOTS).saturating_add(q)
}

/// The /31 of tunnel `index` in `pool`: (the low-id end's address, the high-id end's), or
/// `None` if `pool.network() + 2*index + 1` lies outside the pool.
pub fn v4_pair(pool: Ipv4Net, index: u64) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let offset = index.checked_mul(2)?;
    if offset.checked_add(1)? > u64::from(u32::from(pool.hostmask())) {
        return None;
    }
    let offset = u32::try_from(offset).ok()?;
    // The network has no host bits set and the offset has no network bits: or is addition.
    let low = u32::from(pool.network()) | offset;
    Some((Ipv4Addr::from(low), Ipv4Addr::from(low | 1)))
}

/// The /127 of tunnel `index` in `pool`, as [`v4_pair`].
pub fn v6_pair(pool: Ipv6Net, index: u64) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let offset = u128::from(index) * 2;
    if offset + 1 > u128::from(pool.hostmask()) {
        return None;
    }
    let low = u128::from(pool.network()) | offset;
    Some((Ipv6Addr::from(low), Ipv6Addr::from(low | 1)))
}

/// The tunnel name for index `k`.
pub fn tunnel_name(index: u64) -> String {
    format!("sdwan{index}")
}

/// The tunnel identity both ends compute: the low-id gateway's node and transit first.
pub fn tunnel_id(low_name: &str, low_transit: &str, high_name: &str, high_transit: &str) -> String {
    let canonical = format!("gatewan-tunnel/{low_name}/{low_transit}/{high_name}/{high_transit}");
    Uuid::new_v5(&Uuid::NAMESPACE_OID, canonical.as_bytes())
        .hyphenated()
        .to_string()
}

/// The largest index a pool holds, if any.
fn v4_capacity(pool: Ipv4Net) -> Option<u64> {
    let host = u64::from(u32::from(pool.hostmask()));
    host.checked_sub(1).map(|h| h / 2)
}

fn v6_capacity(pool: Ipv6Net) -> Option<u64> {
    let host = u128::from(pool.hostmask());
    host.checked_sub(1)
        .map(|h| u64::try_from(h / 2).unwrap_or(u64::MAX))
}

/// How many gateway ids a pool serves: the largest id `N` such that every pair among ids
/// `1..=N` fits, with all 16 transit pair slots (a tunnel fits when at least one family's pool
/// holds its index and its name fits [`MAX_NAME_LEN`]). To size one family, pass `Pools`
/// with only that pool. `1` means no tunnel fits at all (one gateway has no pairs); at most
/// 35354, where the names reach their 15 characters (below [`MAX_GATEWAY_ID`]).
pub fn max_gateway_id(pools: &Pools) -> u32 {
    let capacity = pools
        .v4
        .and_then(v4_capacity)
        .max(pools.v6.and_then(v6_capacity));
    let Some(capacity) = capacity else {
        return 1;
    };
    let capacity = capacity.min(MAX_NAMED_INDEX);
    // The largest index among ids 1..=n is that of the pair (n-1, n), both on the last slot;
    // it grows with n, so bisect on it.
    let last = MAX_TRANSITS - 1;
    let fits = |n: u32| tunnel_index(n - 1, last, n, last) <= capacity;
    let (mut lo, mut hi) = (1u32, MAX_GATEWAY_ID);
    if fits(hi) {
        return hi;
    }
    // Invariant: lo fits (1 trivially), hi does not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

fn id_valid(id: u32) -> bool {
    (1..=MAX_GATEWAY_ID).contains(&id)
}

/// A gateway's transits ranked by name: those with a slot, and refusal reasons for the rest
/// (past the 4th, or a name listed twice).
fn slots<T>(items: &[T], name: impl Fn(&T) -> &str) -> (Vec<(u32, &T)>, Vec<String>) {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|x, y| name(x).cmp(name(y)));
    let mut slotted: Vec<(u32, &T)> = Vec::new();
    let mut refused = Vec::new();
    let mut rank = 0u32;
    let mut previous: Option<&str> = None;
    for item in sorted {
        let n = name(item);
        if previous == Some(n) {
            refused.push(format!("transit {n:?} is listed twice"));
            continue;
        }
        previous = Some(n);
        if rank < MAX_TRANSITS {
            slotted.push((rank, item));
        } else {
            refused.push(format!(
                "transit {n:?} ranks {} by name; only the first {MAX_TRANSITS} transits get mesh tunnels",
                rank + 1
            ));
        }
        rank += 1;
    }
    (slotted, refused)
}

/// The peer endpoint for a local transit: the remote's first endpoint in the family of our
/// first endpoint, else its first in another family we have.
fn pick_endpoint(local: &[SocketAddr], remote: &[SocketAddr]) -> Option<SocketAddr> {
    let first = local.first()?;
    let in_family = |v4: bool| remote.iter().copied().find(|r| r.is_ipv4() == v4);
    in_family(first.is_ipv4()).or_else(|| {
        let other = !first.is_ipv4();
        if local.iter().any(|l| l.is_ipv4() == other) {
            in_family(other)
        } else {
            None
        }
    })
}

/// A pool pair (low end's, high end's) reordered as (ours, theirs).
fn ours_then_theirs<A>((low, high): (A, A), we_are_low: bool) -> (A, A) {
    if we_are_low {
        (low, high)
    } else {
        (high, low)
    }
}

/// The mesh tunnels `local` should have towards `remotes`. A remote named like `local` is
/// taken to be this gateway itself and ignored.
pub fn plan(
    local: &LocalGateway,
    remotes: &[RemoteGateway],
    pools: &Pools,
    statics: &[StaticTunnelKey],
) -> Plan {
    let mut out = Plan::default();
    let refuse = |out: &mut Plan, peer: &str, reason: String| {
        out.refused.push(Refusal {
            peer: peer.to_owned(),
            reason,
        })
    };
    if !id_valid(local.id) {
        refuse(
            &mut out,
            &local.name,
            format!(
                "our mesh id {} is outside 1..={MAX_GATEWAY_ID}; no mesh tunnels",
                local.id
            ),
        );
        return out;
    }
    let (local_slots, local_refused) = slots(&local.transits, |t| t.name.as_str());
    for reason in local_refused {
        refuse(&mut out, &local.name, reason);
    }

    let remotes: Vec<&RemoteGateway> = remotes.iter().filter(|r| r.name != local.name).collect();
    let mut holders: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for r in &remotes {
        holders.entry(r.id).or_default().push(&r.name);
    }

    for remote in &remotes {
        let peer = remote.name.as_str();
        if !id_valid(remote.id) {
            refuse(
                &mut out,
                peer,
                format!("mesh id {} is outside 1..={MAX_GATEWAY_ID}", remote.id),
            );
            continue;
        }
        if remote.id == local.id {
            refuse(&mut out, peer, format!("has our mesh id {}", remote.id));
            continue;
        }
        if let Some(names) = holders.get(&remote.id).filter(|n| n.len() > 1) {
            let mut others: Vec<&str> = names.iter().copied().filter(|n| *n != peer).collect();
            others.sort_unstable();
            refuse(
                &mut out,
                peer,
                format!(
                    "mesh id {} is also held by {}",
                    remote.id,
                    others.join(", ")
                ),
            );
            continue;
        }
        if let Some(t) = remote
            .transits
            .iter()
            .filter(|t| t.public_key == local.public_key)
            .min_by(|x, y| x.name.cmp(&y.name))
        {
            refuse(
                &mut out,
                peer,
                format!("transit {:?} uses our public key", t.name),
            );
            continue;
        }
        if remote.datacenter == local.datacenter {
            continue;
        }
        let (remote_slots, remote_refused) = slots(&remote.transits, |t| t.name.as_str());
        for reason in remote_refused {
            refuse(&mut out, peer, reason);
        }
        let we_are_low = local.id < remote.id;
        for &(local_slot, lt) in &local_slots {
            for &(remote_slot, rt) in &remote_slots {
                let Some(peer_endpoint) = pick_endpoint(&lt.endpoints, &rt.endpoints) else {
                    out.skipped_family += 1;
                    continue;
                };
                let shadowed = statics.iter().any(|s| {
                    s.local_transit == lt.name
                        && s.peer_public_key == rt.public_key
                        && s.peer_endpoint.is_none_or(|e| e == peer_endpoint)
                });
                if shadowed {
                    out.shadowed_by_static += 1;
                    continue;
                }
                let (low, high) = if we_are_low {
                    (
                        (local.id, local_slot, &local.name, &lt.name),
                        (remote.id, remote_slot, &remote.name, &rt.name),
                    )
                } else {
                    (
                        (remote.id, remote_slot, &remote.name, &rt.name),
                        (local.id, local_slot, &local.name, &lt.name),
                    )
                };
                let index = tunnel_index(low.0, low.1, high.0, high.1);
                let name = tunnel_name(index);
                if name.len() > MAX_NAME_LEN {
                    refuse(
                        &mut out,
                        peer,
                        format!(
                            "tunnel {:?} -> {:?}: index {index} makes the name {name:?} longer than {MAX_NAME_LEN} characters",
                            lt.name, rt.name
                        ),
                    );
                    continue;
                }
                let v4 = pools.v4.and_then(|p| v4_pair(p, index));
                let v6 = pools.v6.and_then(|p| v6_pair(p, index));
                if v4.is_none() && v6.is_none() {
                    refuse(
                        &mut out,
                        peer,
                        format!(
                            "tunnel {name} ({:?} -> {:?}): index {index} beyond the pools",
                            lt.name, rt.name
                        ),
                    );
                    continue;
                }
                let v4 = v4.map(|pair| ours_then_theirs(pair, we_are_low));
                let v6 = v6.map(|pair| ours_then_theirs(pair, we_are_low));
                out.tunnels.push(PlannedTunnel {
                    id: tunnel_id(low.2, low.3, high.2, high.3),
                    index,
                    name,
                    local_transit: lt.name.clone(),
                    peer: remote.name.clone(),
                    peer_id: remote.id,
                    peer_datacenter: remote.datacenter.clone(),
                    peer_transit: rt.name.clone(),
                    peer_public_key: rt.public_key,
                    peer_endpoint,
                    peer_echo_port: remote.echo_port,
                    address_v4: v4.and_then(|(ours, _)| Ipv4Net::new(ours, 31).ok()),
                    peer_address_v4: v4.map(|(_, theirs)| theirs),
                    address_v6: v6.and_then(|(ours, _)| Ipv6Net::new(ours, 127).ok()),
                    peer_address_v6: v6.map(|(_, theirs)| theirs),
                });
            }
        }
    }
    out.tunnels.sort_by(|x, y| x.name.cmp(&y.name));
    out.refused.sort();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    /// A gateway as a test describes it, seen locally or remotely.
    #[derive(Clone, Debug)]
    struct Gw {
        name: String,
        id: u32,
        dc: String,
        key: [u8; 32],
        transits: Vec<(String, Vec<SocketAddr>)>,
    }

    impl Gw {
        fn new(name: &str, id: u32, dc: &str, key: u8, transits: &[(&str, &[&str])]) -> Gw {
            Gw {
                name: name.into(),
                id,
                dc: dc.into(),
                key: [key; 32],
                transits: transits
                    .iter()
                    .map(|(n, eps)| {
                        (
                            (*n).into(),
                            eps.iter().map(|e| e.parse().unwrap()).collect(),
                        )
                    })
                    .collect(),
            }
        }

        fn local(&self) -> LocalGateway {
            LocalGateway {
                name: self.name.clone(),
                id: self.id,
                datacenter: self.dc.clone(),
                public_key: self.key,
                transits: self
                    .transits
                    .iter()
                    .map(|(name, endpoints)| LocalTransit {
                        name: name.clone(),
                        endpoints: endpoints.clone(),
                    })
                    .collect(),
            }
        }

        fn remote(&self) -> RemoteGateway {
            RemoteGateway {
                name: self.name.clone(),
                id: self.id,
                datacenter: self.dc.clone(),
                echo_port: Some(7054),
                transits: self
                    .transits
                    .iter()
                    .map(|(name, endpoints)| TransitMeta {
                        name: name.clone(),
                        public_key: self.key,
                        endpoints: endpoints.clone(),
                    })
                    .collect(),
            }
        }
    }

    fn pools() -> Pools {
        Pools {
            v4: Some("100.64.0.0/12".parse().unwrap()),
            v6: Some("fd00:5d::/64".parse().unwrap()),
        }
    }

    fn plan_from(me: &Gw, all: &[Gw], pools: &Pools, statics: &[StaticTunnelKey]) -> Plan {
        let remotes: Vec<RemoteGateway> = all
            .iter()
            .filter(|g| g.name != me.name)
            .map(Gw::remote)
            .collect();
        plan(&me.local(), &remotes, pools, statics)
    }

    fn dual(n: u8) -> Vec<String> {
        vec![
            format!("203.0.113.{n}:6152"),
            format!("[2001:db8::{n}]:6152"),
        ]
    }

    /// Two datacenters, two gateways each, two dual-stack transits each.
    fn two_by_two() -> Vec<Gw> {
        let mut out = Vec::new();
        for (i, (name, dc)) in [("a1", "sg1"), ("a2", "sg1"), ("b1", "fra1"), ("b2", "fra1")]
            .iter()
            .enumerate()
        {
            let i = u8::try_from(i).unwrap();
            let lumen = dual(10 * i + 1);
            let ntt = dual(10 * i + 2);
            let lumen: Vec<&str> = lumen.iter().map(String::as_str).collect();
            let ntt: Vec<&str> = ntt.iter().map(String::as_str).collect();
            // Listed out of name order on purpose: slots come from the names.
            out.push(Gw::new(
                name,
                u32::from(i) + 1,
                dc,
                i + 1,
                &[("ntt", &ntt), ("lumen", &lumen)],
            ));
        }
        out
    }

    #[test]
    fn formula() {
        assert_eq!(tunnel_index(1, 0, 2, 0), 32);
        assert_eq!(tunnel_index(1, 0, 3, 0), 64);
        assert_eq!(tunnel_index(2, 3, 3, 1), (3 + 2) * 16 + 13);
        let pool: Ipv4Net = "100.64.0.0/12".parse().unwrap();
        assert_eq!(
            v4_pair(pool, 64),
            Some((
                "100.64.0.128".parse().unwrap(),
                "100.64.0.129".parse().unwrap()
            ))
        );
        // A /31 holds index 0 only; a /32 nothing.
        assert!(v4_pair("10.0.0.0/31".parse().unwrap(), 0).is_some());
        assert!(v4_pair("10.0.0.0/31".parse().unwrap(), 1).is_none());
        assert!(v4_pair("10.0.0.0/32".parse().unwrap(), 0).is_none());
        assert!(v4_pair(pool, u64::MAX).is_none());
        let v6: Ipv6Net = "fd00:5d::/64".parse().unwrap();
        assert_eq!(
            v6_pair(v6, 64),
            Some((
                "fd00:5d::80".parse().unwrap(),
                "fd00:5d::81".parse().unwrap()
            ))
        );
        assert!(v6_pair("::/0".parse().unwrap(), u64::MAX).is_some());
        assert!(v6_pair("fd00::/128".parse().unwrap(), 0).is_none());
        // A pool written with host bits counts from its network.
        assert_eq!(
            v4_pair("100.64.3.7/16".parse().unwrap(), 1).unwrap().0,
            "100.64.0.2".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn two_datacenters_of_two_gateways_with_two_transits() {
        let gws = two_by_two();
        let plans: Vec<Plan> = gws
            .iter()
            .map(|g| plan_from(g, &gws, &pools(), &[]))
            .collect();
        for (g, p) in gws.iter().zip(&plans) {
            assert_eq!(p.tunnels.len(), 8, "{}", g.name);
            assert!(p.refused.is_empty());
            assert_eq!((p.skipped_family, p.shadowed_by_static), (0, 0));
            assert!(p.tunnels.iter().all(|t| t.peer_datacenter != g.dc));
            let names: Vec<&str> = p.tunnels.iter().map(|t| t.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted);
        }
        // a1 (id 1) and b1 (id 3): p = 3*2/2 + 1 = 4; lumen is slot 0, ntt slot 1.
        let a1 = &plans[0];
        let t = a1
            .tunnels
            .iter()
            .find(|t| t.peer == "b1" && t.local_transit == "lumen" && t.peer_transit == "lumen")
            .unwrap();
        assert_eq!(t.index, 64);
        assert_eq!(t.name, "sdwan64");
        assert_eq!(t.address_v4, Some("100.64.0.128/31".parse().unwrap()));
        assert_eq!(t.peer_address_v4, Some("100.64.0.129".parse().unwrap()));
        assert_eq!(t.address_v6, Some("fd00:5d::80/127".parse().unwrap()));
        assert_eq!(t.peer_address_v6, Some("fd00:5d::81".parse().unwrap()));
        assert_eq!(t.peer_endpoint, "203.0.113.21:6152".parse().unwrap());
        assert_eq!(t.peer_public_key, [3; 32]);
        assert_eq!((t.peer_id, t.peer_echo_port), (3, Some(7054)));
        assert_eq!(
            t.id,
            Uuid::new_v5(&Uuid::NAMESPACE_OID, b"gatewan-tunnel/a1/lumen/b1/lumen").to_string()
        );
        // The same tunnel from b1: the high end, odd addresses, the same name and identity.
        let b1 = &plans[2];
        let u = b1.tunnels.iter().find(|u| u.id == t.id).unwrap();
        assert_eq!(
            (u.index, u.name.as_str(), u.peer.as_str()),
            (64, "sdwan64", "a1")
        );
        assert_eq!(u.address_v4, Some("100.64.0.129/31".parse().unwrap()));
        assert_eq!(u.peer_address_v4, Some("100.64.0.128".parse().unwrap()));
        // a1's ntt (slot 1) to b1's lumen (slot 0): q = 1*4 + 0, from both sides, low end first
        // in the identity even when computed by the high end.
        let v = b1
            .tunnels
            .iter()
            .find(|v| v.peer == "a1" && v.local_transit == "lumen" && v.peer_transit == "ntt")
            .unwrap();
        assert_eq!(v.index, 68);
        assert_eq!(
            v.id,
            Uuid::new_v5(&Uuid::NAMESPACE_OID, b"gatewan-tunnel/a1/ntt/b1/lumen").to_string()
        );
        assert!(a1.tunnels.iter().any(|w| w.id == v.id && w.index == 68));
    }

    #[test]
    fn same_datacenter_peers_get_no_tunnels() {
        let gws = two_by_two();
        let p = plan_from(&gws[0], &gws[..2], &pools(), &[]);
        assert_eq!(p, Plan::default());
        // A remote carrying our own name is us, not a peer.
        let p = plan(&gws[0].local(), &[gws[0].remote()], &pools(), &[]);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn duplicate_ids_are_refused_for_every_holder() {
        let mut gws = two_by_two();
        gws[3].id = 3; // b2 now shares b1's id
        let p = plan_from(&gws[0], &gws, &pools(), &[]);
        assert!(p.tunnels.is_empty());
        assert_eq!(
            p.refused,
            vec![
                Refusal {
                    peer: "b1".into(),
                    reason: "mesh id 3 is also held by b2".into()
                },
                Refusal {
                    peer: "b2".into(),
                    reason: "mesh id 3 is also held by b1".into()
                },
            ]
        );
        // Remote input order does not matter.
        let mut reversed: Vec<RemoteGateway> = gws[1..].iter().map(Gw::remote).collect();
        reversed.reverse();
        assert_eq!(plan(&gws[0].local(), &reversed, &pools(), &[]), p);
    }

    #[test]
    fn our_own_id_is_refused() {
        let mut gws = two_by_two();
        gws[2].id = 1; // b1 claims a1's id
        let p = plan_from(&gws[0], &gws, &pools(), &[]);
        assert_eq!(
            p.refused,
            vec![Refusal {
                peer: "b1".into(),
                reason: "has our mesh id 1".into()
            }]
        );
        assert_eq!(p.tunnels.len(), 4);
        assert!(p.tunnels.iter().all(|t| t.peer == "b2"));
        // Ids out of range are refused too, ours refusing everything.
        gws[2].id = 0;
        let p = plan_from(&gws[0], &gws, &pools(), &[]);
        assert_eq!(p.refused[0].reason, "mesh id 0 is outside 1..=65535");
        gws[0].id = 70000;
        let p = plan_from(&gws[0], &gws, &pools(), &[]);
        assert!(p.tunnels.is_empty());
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].peer, "a1");
    }

    #[test]
    fn a_peer_using_our_public_key_is_refused() {
        let mut gws = two_by_two();
        gws[2].key = gws[0].key;
        let p = plan_from(&gws[0], &gws, &pools(), &[]);
        assert_eq!(
            p.refused,
            vec![Refusal {
                peer: "b1".into(),
                reason: "transit \"lumen\" uses our public key".into()
            }]
        );
        assert_eq!(p.tunnels.len(), 4);
    }

    #[test]
    fn indexes_beyond_the_pools_are_refused() {
        let a = Gw::new("a", 2, "sg1", 1, &[("lumen", &["203.0.113.1:6152"])]);
        let b = Gw::new("b", 8, "fra1", 2, &[("lumen", &["203.0.113.2:6152"])]);
        let c = Gw::new("c", 1, "fra1", 3, &[("lumen", &["203.0.113.3:6152"])]);
        let all = [a.clone(), b, c];
        // A /24 holds indexes 0..=127: (1, 2) is 32, (2, 8) is (28 + 2) * 16 = 480.
        let small = Pools {
            v4: Some("100.64.0.0/24".parse().unwrap()),
            v6: None,
        };
        let p = plan_from(&a, &all, &small, &[]);
        assert_eq!(p.tunnels.len(), 1);
        assert_eq!(p.tunnels[0].peer, "c");
        assert_eq!(
            p.refused,
            vec![Refusal {
                peer: "b".into(),
                reason: "tunnel sdwan480 (\"lumen\" -> \"lumen\"): index 480 beyond the pools"
                    .into()
            }]
        );
        // With a v6 pool as well, the tunnel is planned with IPv6 only.
        let both = Pools {
            v6: Some("fd00:5d::/64".parse().unwrap()),
            ..small
        };
        let p = plan_from(&a, &all, &both, &[]);
        assert!(p.refused.is_empty());
        let t = p.tunnels.iter().find(|t| t.peer == "b").unwrap();
        assert_eq!((t.address_v4, t.peer_address_v4), (None, None));
        assert_eq!(t.address_v6, Some("fd00:5d::3c0/127".parse().unwrap()));
        // No pools at all: nothing fits.
        let p = plan_from(&a, &all, &Pools::default(), &[]);
        assert!(p.tunnels.is_empty());
        assert_eq!(p.refused.len(), 2);
    }

    #[test]
    fn transits_without_a_common_family_are_skipped() {
        let a = Gw::new(
            "a",
            1,
            "sg1",
            1,
            &[
                ("v4", &["203.0.113.1:6152"]),
                ("v6", &["[2001:db8::1]:6152"]),
                ("v6first", &["[2001:db8::2]:6152", "203.0.113.2:6152"]),
            ],
        );
        let b = Gw::new(
            "b",
            2,
            "fra1",
            2,
            &[
                ("v4", &["203.0.113.9:6152"]),
                ("v6", &["[2001:db8::9]:6152"]),
                ("v4first", &["203.0.113.8:6152", "[2001:db8::8]:6152"]),
            ],
        );
        let all = [a.clone(), b.clone()];
        let p = plan_from(&a, &all, &pools(), &[]);
        // v4-v6 and v6-v4 have nothing in common; everything else does.
        assert_eq!(p.skipped_family, 2);
        assert_eq!(p.tunnels.len(), 7);
        let ep = |l: &str, r: &str| {
            p.tunnels
                .iter()
                .find(|t| t.local_transit == l && t.peer_transit == r)
                .unwrap()
                .peer_endpoint
                .to_string()
        };
        // Our first endpoint's family is preferred, then another family we have.
        assert_eq!(ep("v6first", "v4first"), "[2001:db8::8]:6152");
        assert_eq!(ep("v4", "v4first"), "203.0.113.8:6152");
        assert_eq!(ep("v6", "v4first"), "[2001:db8::8]:6152");
        assert_eq!(ep("v6first", "v4"), "203.0.113.9:6152");
        let q = plan_from(&b, &all, &pools(), &[]);
        assert_eq!((q.skipped_family, q.tunnels.len()), (2, 7));
    }

    #[test]
    fn static_tunnels_shadow_mesh_tunnels() {
        let gws = two_by_two();
        let b1_lumen = "203.0.113.21:6152".parse().unwrap();
        let exact = StaticTunnelKey {
            local_transit: "lumen".into(),
            peer_public_key: [3; 32],
            peer_endpoint: Some(b1_lumen),
        };
        let p = plan_from(&gws[0], &gws, &pools(), std::slice::from_ref(&exact));
        assert_eq!((p.tunnels.len(), p.shadowed_by_static), (7, 1));
        assert!(!p
            .tunnels
            .iter()
            .any(|t| t.local_transit == "lumen" && t.peer_endpoint == b1_lumen));
        // Another endpoint is another tunnel; no endpoint covers the key on that transit.
        let elsewhere = StaticTunnelKey {
            peer_endpoint: Some("198.51.100.1:6152".parse().unwrap()),
            ..exact.clone()
        };
        let p = plan_from(&gws[0], &gws, &pools(), &[elsewhere]);
        assert_eq!((p.tunnels.len(), p.shadowed_by_static), (8, 0));
        let anywhere = StaticTunnelKey {
            peer_endpoint: None,
            ..exact
        };
        let p = plan_from(&gws[0], &gws, &pools(), &[anywhere]);
        assert_eq!((p.tunnels.len(), p.shadowed_by_static), (6, 2));
    }

    #[test]
    fn only_the_first_four_transits_by_name_get_tunnels() {
        let eps = ["203.0.113.1:6152"];
        let five: Vec<(&str, &[&str])> = ["e", "d", "c", "b", "a"]
            .iter()
            .map(|n| (*n, &eps[..]))
            .collect();
        let a = Gw::new("a", 1, "sg1", 1, &five);
        let b = Gw::new("b", 2, "fra1", 2, &five);
        let all = [a.clone(), b];
        let p = plan_from(&a, &all, &pools(), &[]);
        let reason =
            "transit \"e\" ranks 5 by name; only the first 4 transits get mesh tunnels".to_string();
        assert_eq!(
            p.refused,
            vec![
                Refusal {
                    peer: "a".into(),
                    reason: reason.clone()
                },
                Refusal {
                    peer: "b".into(),
                    reason
                },
            ]
        );
        assert_eq!(p.tunnels.len(), 16);
        assert!(p
            .tunnels
            .iter()
            .all(|t| t.local_transit != "e" && t.peer_transit != "e"));
        let indexes: BTreeSet<u64> = p.tunnels.iter().map(|t| t.index).collect();
        assert_eq!(indexes, (32..48).collect());
    }

    #[test]
    fn names_fit_an_interface_name_up_to_the_name_limit() {
        let last = MAX_TRANSITS - 1;
        // The brief hoped every u16 id pair fits ten digits; it does not: (65534, 65535)
        // reaches 34359214079, eleven digits, sixteen characters with the prefix.
        let k = tunnel_index(MAX_GATEWAY_ID - 1, last, MAX_GATEWAY_ID, last);
        assert_eq!(k, 34_359_214_079);
        assert!(tunnel_name(k).len() > MAX_NAME_LEN);
        // Up to id 35354 every name fits.
        let k = tunnel_index(35_353, last, 35_354, last);
        assert!(k <= MAX_NAMED_INDEX);
        assert_eq!(tunnel_name(k).len(), MAX_NAME_LEN);
        assert!(tunnel_index(35_354, last, 35_355, last) > MAX_NAMED_INDEX);
        assert!(tunnel_name(MAX_NAMED_INDEX).len() <= MAX_NAME_LEN);
        assert!(tunnel_name(MAX_NAMED_INDEX + 1).len() > MAX_NAME_LEN);
        // And the planner refuses the longer ones rather than emit a bad name.
        let a = Gw::new("a", 65534, "sg1", 1, &[("lumen", &["203.0.113.1:6152"])]);
        let b = Gw::new("b", 65535, "fra1", 2, &[("lumen", &["203.0.113.2:6152"])]);
        let big = Pools {
            v4: None,
            v6: Some("fd00::/16".parse().unwrap()),
        };
        let p = plan_from(&a, &[a.clone(), b], &big, &[]);
        assert!(p.tunnels.is_empty());
        assert!(
            p.refused[0].reason.contains("longer than 15"),
            "{:?}",
            p.refused
        );
    }

    #[test]
    fn max_gateway_id_per_pool() {
        let v4 = |s: &str| Pools {
            v4: Some(s.parse().unwrap()),
            v6: None,
        };
        // The largest index among ids 1..=N is 16 * (N(N+1)/2 - 1) + 15; a /L v4 pool holds
        // indexes below 2^(31-L), so N(N+1)/2 <= 2^(27-L).
        assert_eq!(max_gateway_id(&v4("100.64.0.0/16")), 63);
        assert_eq!(max_gateway_id(&v4("100.64.0.0/14")), 127);
        assert_eq!(max_gateway_id(&v4("100.64.0.0/12")), 255);
        assert_eq!(max_gateway_id(&v4("100.64.0.0/10")), 511);
        assert_eq!(max_gateway_id(&v4("10.0.0.0/8")), 1023);
        assert_eq!(max_gateway_id(&v4("100.64.0.0/26")), 1);
        assert_eq!(max_gateway_id(&Pools::default()), 1);
        // v6 /64 (and anything past 2^35 addresses) is bounded by the names.
        let v6 = Pools {
            v4: None,
            v6: Some("fd00:5d::/64".parse().unwrap()),
        };
        assert_eq!(max_gateway_id(&v6), 35_354);
        assert_eq!(max_gateway_id(&pools()), 35_354);
        // The bound is tight: the last pair at N fits, the first pair past it does not.
        for pool in ["100.64.0.0/16", "100.64.0.0/12", "10.0.0.0/8"] {
            let p: Ipv4Net = pool.parse().unwrap();
            let n = max_gateway_id(&v4(pool));
            assert!(v4_pair(p, tunnel_index(n - 1, 3, n, 3)).is_some());
            assert!(v4_pair(p, tunnel_index(n, 3, n + 1, 3)).is_none());
        }
    }

    // ---- property: both ends agree, and tunnels never collide ----

    /// (dc, transits as (name, families: 0 v4, 1 v6, 2 v4 then v6, 3 v6 then v4), key).
    type GwSeed = (u8, BTreeSet<String>, Vec<u8>, [u8; 32]);

    /// What one tunnel id stands for: (name, index, /31, /127).
    type Seen<'a> = (&'a str, u64, Option<Ipv4Net>, Option<Ipv6Net>);

    fn arb_gateways() -> impl Strategy<Value = Vec<Gw>> {
        // Ids either all inside what the v4 pool serves, or up to what the names allow (the
        // v4 pool then runs out and such tunnels are IPv6 only).
        let limit = prop_oneof![
            Just(max_gateway_id(&Pools {
                v6: None,
                ..arb_pools()
            })),
            Just(max_gateway_id(&arb_pools())),
        ];
        (limit, 2usize..=9)
            .prop_flat_map(|(limit, n)| {
                let ids = proptest::collection::btree_set(1..=limit, n)
                    .prop_map(|s| s.into_iter().collect::<Vec<u32>>())
                    .prop_shuffle();
                let seeds = proptest::collection::vec(
                    (
                        0u8..3,
                        proptest::collection::btree_set("[a-z]{1,6}", 1..=4),
                        proptest::collection::vec(0u8..4, 4),
                        any::<[u8; 32]>(),
                    ),
                    n,
                );
                (ids, seeds)
            })
            .prop_map(|(ids, seeds): (Vec<u32>, Vec<GwSeed>)| {
                ids.into_iter()
                    .zip(seeds)
                    .enumerate()
                    .map(|(i, (id, (dc, names, families, mut key)))| {
                        let i = u8::try_from(i).unwrap();
                        key[0] = i; // distinct keys
                        let transits = names
                            .into_iter()
                            .zip(families)
                            .enumerate()
                            .map(|(j, (name, fam))| {
                                let j = u8::try_from(j).unwrap();
                                let v4: SocketAddr =
                                    SocketAddr::from(([203, 0, i, j], 6152 + u16::from(j)));
                                let v6: SocketAddr = SocketAddr::from((
                                    [0x2001, 0xdb8, u16::from(i), u16::from(j), 0, 0, 0, 1],
                                    6152,
                                ));
                                let eps = match fam {
                                    0 => vec![v4],
                                    1 => vec![v6],
                                    2 => vec![v4, v6],
                                    _ => vec![v6, v4],
                                };
                                (name, eps)
                            })
                            .collect();
                        Gw {
                            name: format!("gw{i}"),
                            id,
                            dc: format!("dc{dc}"),
                            key,
                            transits,
                        }
                    })
                    .collect()
            })
    }

    fn arb_pools() -> Pools {
        Pools {
            v4: Some("100.64.0.0/16".parse().unwrap()),
            v6: Some("fd00:5d::/64".parse().unwrap()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(192))]

        #[test]
        fn both_ends_agree_and_tunnels_never_collide(gws in arb_gateways()) {
            let pools = arb_pools();
            let (p4, p6) = (pools.v4.unwrap(), pools.v6.unwrap());
            // Every gateway's plan, its own entry included among the remotes.
            let remotes: Vec<RemoteGateway> = gws.iter().map(Gw::remote).collect();
            let plans: HashMap<&str, Plan> = gws
                .iter()
                .map(|g| (g.name.as_str(), plan(&g.local(), &remotes, &pools, &[])))
                .collect();
            let by_name: HashMap<&str, &Gw> = gws.iter().map(|g| (g.name.as_str(), g)).collect();

            for a in &gws {
                let pa = &plans[a.name.as_str()];
                prop_assert!(pa.refused.is_empty(), "{:?}", pa.refused);
                prop_assert_eq!(pa.shadowed_by_static, 0);
                // Every transit pair towards another datacenter is planned or skipped.
                let pairs: usize = gws
                    .iter()
                    .filter(|b| b.dc != a.dc)
                    .map(|b| a.transits.len() * b.transits.len())
                    .sum();
                prop_assert_eq!(pa.tunnels.len() + pa.skipped_family, pairs);
                for t in &pa.tunnels {
                    let b = by_name[t.peer.as_str()];
                    prop_assert_ne!(&b.dc, &a.dc);
                    prop_assert_eq!(t.peer_id, b.id);
                    prop_assert_eq!(t.peer_public_key, b.key);
                    let back: Vec<&PlannedTunnel> = plans[b.name.as_str()]
                        .tunnels
                        .iter()
                        .filter(|u| u.peer == a.name && u.id == t.id)
                        .collect();
                    prop_assert_eq!(back.len(), 1);
                    let u = back[0];
                    prop_assert_eq!(u.index, t.index);
                    prop_assert_eq!(&u.name, &t.name);
                    prop_assert_eq!(&u.local_transit, &t.peer_transit);
                    prop_assert_eq!(&u.peer_transit, &t.local_transit);
                    prop_assert_eq!(u.peer_id, a.id);
                    prop_assert_eq!(u.peer_public_key, a.key);
                    prop_assert_eq!(t.address_v4.map(|n| n.addr()), u.peer_address_v4);
                    prop_assert_eq!(u.address_v4.map(|n| n.addr()), t.peer_address_v4);
                    prop_assert_eq!(t.address_v4.map(|n| n.trunc()), u.address_v4.map(|n| n.trunc()));
                    prop_assert_eq!(t.address_v6.map(|n| n.addr()), u.peer_address_v6);
                    prop_assert_eq!(u.address_v6.map(|n| n.addr()), t.peer_address_v6);
                    prop_assert_eq!(t.address_v6.map(|n| n.trunc()), u.address_v6.map(|n| n.trunc()));
                    // The endpoint picked is one the peer publishes on that transit.
                    let published = &b.transits.iter().find(|(n, _)| *n == t.peer_transit).unwrap().1;
                    prop_assert!(published.contains(&t.peer_endpoint));
                    // The low-id end takes the even address.
                    if let Some(ours) = t.address_v4 {
                        prop_assert_eq!(u32::from(ours.addr()) % 2 == 0, a.id < b.id);
                        prop_assert_eq!(ours.prefix_len(), 31);
                    }
                    if let Some(ours) = t.address_v6 {
                        prop_assert_eq!(u128::from(ours.addr()) % 2 == 0, a.id < b.id);
                        prop_assert_eq!(ours.prefix_len(), 127);
                    }
                    // Names fit; addresses lie in their pools; v6 always fits, v4 when it can.
                    prop_assert!(t.name.len() <= MAX_NAME_LEN);
                    prop_assert!(t.address_v6.is_some());
                    prop_assert_eq!(t.address_v4.is_some(), 2 * t.index < 65536);
                    for addr in t.address_v4.map(|n| n.addr()).into_iter().chain(t.peer_address_v4) {
                        prop_assert!(p4.contains(&addr));
                    }
                    for addr in t.address_v6.map(|n| n.addr()).into_iter().chain(t.peer_address_v6) {
                        prop_assert!(p6.contains(&addr));
                    }
                }
            }

            // Across every gateway's tunnels: one id, one tunnel (name, index, networks), and
            // distinct ids never share any of them.
            let mut by_id: HashMap<&str, Seen> = HashMap::new();
            for t in plans.values().flat_map(|p| &p.tunnels) {
                let seen = (
                    t.name.as_str(),
                    t.index,
                    t.address_v4.map(|n| n.trunc()),
                    t.address_v6.map(|n| n.trunc()),
                );
                let first = *by_id.entry(t.id.as_str()).or_insert(seen);
                prop_assert_eq!(first, seen);
            }
            let (mut names, mut indexes, mut nets4, mut nets6) =
                (HashSet::new(), HashSet::new(), HashSet::new(), HashSet::new());
            for (name, index, v4, v6) in by_id.values() {
                prop_assert!(names.insert(*name));
                prop_assert!(indexes.insert(*index));
                // Same-length aligned networks overlap only if equal.
                if let Some(n) = v4 {
                    prop_assert!(nets4.insert(*n));
                }
                if let Some(n) = v6 {
                    prop_assert!(nets6.insert(*n));
                }
            }
        }
    }
}
