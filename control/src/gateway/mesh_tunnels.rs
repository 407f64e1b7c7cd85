//! The gateway's mesh tunnels, sans-IO: mesh snapshots (or the cached view) and the time in,
//! the tunnels to keep and what operators see out.
//!
//! Which members get tunnels: alive, suspect (our own agent is not observing) and failed ones
//! until `failed_grace` has passed since they were first seen failed (their WireGuard sessions
//! have their own liveness, and a short Serf suspicion must not drop them); leaving, left and
//! reaped members lose theirs at once. Members known only from the cached view (not yet in the
//! agent's) keep their tunnels for `failed_grace` after the agent first answered, so a gateway
//! can start with every seed down.
//!
//! What a member says is checked before use: tags that do not parse, a gateway without a mesh
//! id, a list longer than `max_prefixes`, a prefix overlapping our datacenter's or one that
//! two remote datacenters both claim: each is refused, counted and shown, and nothing else
//! changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::config::{GatewayConfig, Key32};
use super::planner::{self, LocalGateway, LocalTransit, Pools, RemoteGateway, StaticTunnelKey};
use super::runtime::{Origin, TunnelOrder};
use crate::mesh::tags::{Role, TransitMeta};
use crate::mesh::view::{GatewayStatus, MeshSnapshot};

/// A remote gateway as the cache keeps it (and as the planner needs it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedMember {
    pub name: String,
    /// Gossip address: joined at start when the seeds do not answer.
    pub addr: SocketAddr,
    pub id: u32,
    pub datacenter: String,
    pub echo_port: Option<u16>,
    pub transits: Vec<CachedTransit>,
    pub prefixes: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedTransit {
    pub name: String,
    /// base64
    pub public_key: String,
    pub endpoints: Vec<SocketAddr>,
}

/// The cache file's body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cache {
    pub members: Vec<CachedMember>,
}

/// A member that gets no tunnels, or a prefix that is not routed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<IpNet>,
    pub reason: String,
}

/// The mesh as `gatewan status --gateway` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshStatus {
    pub node: String,
    pub id: u32,
    pub agent_connected: bool,
    /// Members by status (`alive`, `failed`, ...), every role.
    pub members: BTreeMap<String, usize>,
    /// Remote gateways with tunnels, and how many of those are known only from the cache.
    pub gateways_with_tunnels: usize,
    pub from_cache: usize,
    pub tunnels: usize,
    /// Members whose tags did not parse (counted by the view).
    pub bad_tags: u64,
    pub refused_members: Vec<Refused>,
    pub refused_prefixes: Vec<Refused>,
    /// Refusals since start, members and prefixes.
    pub refusals_total: u64,
}

struct Known {
    member: CachedMember,
    status: GatewayStatus,
    /// When it was first seen failed (in this failure).
    failed_since: Option<Instant>,
    /// Known from the cache only, not (yet) from the agent.
    cached: bool,
}

/// The state machine.
pub struct MeshTunnels {
    local: LocalGateway,
    transit_index: BTreeMap<String, usize>,
    echo_port: u16,
    pools: Pools,
    statics: Vec<StaticTunnelKey>,
    /// Our datacenter's prefixes as we know them ourselves (the fabric's local routes), not
    /// as our datacenter's other gateways publish them: one of them claiming a remote
    /// datacenter's prefix must not cut our routes to it.
    own_prefixes: Vec<IpNet>,
    grace: Duration,
    max_prefixes: usize,
    known: BTreeMap<String, Known>,
    /// Until when members known only from the cache keep their tunnels.
    cache_until: Option<Instant>,
    agent_connected: bool,
    members: BTreeMap<String, usize>,
    bad_tags: u64,
    refused_members: Vec<Refused>,
    refusals_total: u64,
    last_refusals: Vec<Refused>,
}

impl MeshTunnels {
    /// Our datacenter's prefixes changed (bgpctl's routes replaced the static ones).
    pub fn set_own_prefixes(&mut self, prefixes: Vec<IpNet>) {
        self.own_prefixes = prefixes;
    }

    pub fn new(config: &GatewayConfig, mesh_id: u32, grace: Duration, max_prefixes: usize) -> Self {
        let public_key = super::config::public_key_of(&config.private_key);
        let local = LocalGateway {
            name: config.name.clone(),
            id: mesh_id,
            datacenter: config.datacenter.clone(),
            public_key: public_key.0,
            transits: config
                .transits
                .iter()
                .map(|t| LocalTransit {
                    name: t.name.clone(),
                    endpoints: vec![t.public_endpoint],
                })
                .collect(),
        };
        let statics = config
            .tunnels
            .iter()
            .filter_map(|t| {
                Some(StaticTunnelKey {
                    local_transit: config.transits.get(t.transit)?.name.clone(),
                    peer_public_key: t.peer_public_key.0,
                    peer_endpoint: t.peer_endpoint,
                })
            })
            .collect();
        let mesh = config.mesh.as_ref();
        let local_prefixes: Vec<IpNet> = config
            .fabric
            .as_ref()
            .map(|f| f.local_routes.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        MeshTunnels {
            transit_index: config
                .transits
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            local,
            echo_port: mesh.map_or(7054, |m| m.echo_port),
            pools: Pools {
                v4: mesh.and_then(|m| m.pool_v4),
                v6: mesh.and_then(|m| m.pool_v6),
            },
            statics,
            own_prefixes: local_prefixes,
            grace,
            max_prefixes,
            known: BTreeMap::new(),
            cache_until: None,
            agent_connected: false,
            members: BTreeMap::new(),
            bad_tags: 0,
            refused_members: Vec::new(),
            refusals_total: 0,
            last_refusals: Vec::new(),
        }
    }

    /// This gateway as the planner sees it.
    pub fn local(&self) -> &LocalGateway {
        &self.local
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Starts from the last view kept on disk: its members get tunnels at once.
    pub fn restore(&mut self, cache: Cache) {
        for member in cache.members {
            if member.name == self.local.name || self.known.contains_key(&member.name) {
                continue;
            }
            self.known.insert(
                member.name.clone(),
                Known {
                    member,
                    status: GatewayStatus::Suspect,
                    failed_since: None,
                    cached: true,
                },
            );
        }
    }

    /// Gossip addresses of the cached members, to join when no seed answers.
    pub fn cached_addresses(&self) -> Vec<String> {
        self.known
            .values()
            .filter(|k| !k.member.addr.ip().is_unspecified())
            .map(|k| k.member.addr.to_string())
            .collect()
    }

    /// A new snapshot of the agent's view.
    pub fn handle_view(&mut self, snap: &MeshSnapshot, now: Instant) {
        self.agent_connected = snap.agent_connected;
        if snap.agent_connected && self.cache_until.is_none() {
            self.cache_until = Some(now + self.grace);
        }
        self.bad_tags = snap.counters.bad_tags;
        self.members.clear();
        let mut refused = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, entry) in &snap.members {
            *self
                .members
                .entry(entry.status.as_str().to_owned())
                .or_default() += 1;
            if *name == self.local.name {
                continue;
            }
            let Some(meta) = &entry.meta else {
                continue;
            };
            if meta.role != Role::Gateway {
                continue;
            }
            if meta.datacenter == self.local.datacenter {
                continue;
            }
            let prefixes: Vec<IpNet> = entry
                .prefixes
                .as_ref()
                .map(|l| l.prefixes.as_slice().to_vec())
                .unwrap_or_default();
            let Some(id) = meta.id else {
                refused.push(refusal(name, None, "no mesh id in its tags"));
                continue;
            };
            seen.insert(name.clone());
            let previous = self.known.get(name);
            // A list not pulled yet: keep what we had (cache or earlier view).
            let prefixes = match (&entry.prefixes, previous) {
                (None, Some(p)) => p.member.prefixes.clone(),
                _ => prefixes,
            };
            if previous.map(|p| p.status) != Some(entry.status) {
                tracing::info!(member = %name, status = entry.status.as_str(), "mesh member");
            }
            let failed_since = match entry.status {
                GatewayStatus::Failed => previous.and_then(|p| p.failed_since).or(Some(now)),
                _ => None,
            };
            let member = CachedMember {
                name: name.clone(),
                addr: entry.addr,
                id,
                datacenter: meta.datacenter.clone(),
                echo_port: meta.echo_port,
                transits: meta
                    .transits
                    .iter()
                    .map(|t| CachedTransit {
                        name: t.name.clone(),
                        public_key: B64.encode(t.public_key),
                        endpoints: t.endpoints.clone(),
                    })
                    .collect(),
                prefixes,
            };
            self.known.insert(
                name.clone(),
                Known {
                    member,
                    status: entry.status,
                    failed_since,
                    cached: false,
                },
            );
        }
        // Members the agent no longer lists (reaped), unless only cached so far.
        self.known.retain(|name, k| k.cached || seen.contains(name));
        // Counted by `plan`, once per new refusal.
        self.refused_members = refused;
    }

    /// When a failed member's grace, or the cache's, ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let failed = self
            .known
            .values()
            .filter_map(|k| k.failed_since.map(|t| t + self.grace));
        let cache = self
            .known
            .values()
            .any(|k| k.cached)
            .then_some(self.cache_until)
            .flatten();
        failed.chain(cache).min()
    }

    /// Drops what has expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let cache_over = self.cache_until.is_some_and(|t| t <= now);
        self.known.retain(|_, k| !(k.cached && cache_over));
    }

    fn keeps_tunnels(&self, k: &Known, now: Instant) -> bool {
        match k.status {
            GatewayStatus::Alive | GatewayStatus::Suspect => true,
            GatewayStatus::Failed => k.failed_since.is_none_or(|t| now < t + self.grace),
            GatewayStatus::Leaving | GatewayStatus::Left => false,
        }
    }

    /// The members that get tunnels, and the cache to keep.
    pub fn cache(&self) -> Cache {
        Cache {
            members: self.known.values().map(|k| k.member.clone()).collect(),
        }
    }

    /// The mesh tunnels to keep now, and what operators see.
    pub fn plan(&mut self, now: Instant) -> (Vec<TunnelOrder>, MeshStatus) {
        let mut refused_members = self.refused_members.clone();
        let mut remotes = Vec::new();
        let mut lists: Vec<(&str, &str, &[IpNet])> = Vec::new();
        for k in self.known.values() {
            if !self.keeps_tunnels(k, now) {
                continue;
            }
            let m = &k.member;
            let mut transits = Vec::new();
            let mut bad = None;
            for t in &m.transits {
                match Key32::from_base64(&t.public_key) {
                    Some(key) => transits.push(TransitMeta {
                        name: t.name.clone(),
                        public_key: key.0,
                        endpoints: t.endpoints.clone(),
                    }),
                    None => bad = Some(format!("transit {}: bad public key", t.name)),
                }
            }
            if let Some(reason) = bad {
                refused_members.push(refusal(&m.name, None, &reason));
                continue;
            }
            if m.prefixes.len() > self.max_prefixes {
                refused_members.push(refusal(
                    &m.name,
                    None,
                    &format!(
                        "publishes {} prefixes, more than mesh.max_prefixes ({})",
                        m.prefixes.len(),
                        self.max_prefixes
                    ),
                ));
            } else {
                lists.push((&m.name, &m.datacenter, &m.prefixes));
            }
            remotes.push(RemoteGateway {
                name: m.name.clone(),
                id: m.id,
                datacenter: m.datacenter.clone(),
                echo_port: m.echo_port,
                transits,
            });
        }
        let (networks, refused_prefixes) =
            datacenter_prefixes(&self.local.datacenter, &self.own_prefixes, &lists);
        let plan = planner::plan(&self.local, &remotes, &self.pools, &self.statics);
        for r in &plan.refused {
            refused_members.push(refusal(&r.peer, None, &r.reason));
        }
        let mut orders = Vec::with_capacity(plan.tunnels.len());
        for t in plan.tunnels {
            let Some(&transit) = self.transit_index.get(&t.local_transit) else {
                continue;
            };
            orders.push(TunnelOrder {
                id: t.id,
                origin: Origin::Mesh,
                tunnel: super::config::Tunnel {
                    name: t.name,
                    transit,
                    networks: networks
                        .get(&t.peer_datacenter)
                        .cloned()
                        .unwrap_or_default(),
                    peer: t.peer,
                    peer_datacenter: t.peer_datacenter,
                    peer_transit: Some(t.peer_transit),
                    peer_public_key: Key32(t.peer_public_key),
                    preshared_key: None,
                    peer_endpoint: Some(t.peer_endpoint),
                    address_v4: t.address_v4,
                    address_v6: t.address_v6,
                    peer_address_v4: t.peer_address_v4,
                    peer_address_v6: t.peer_address_v6,
                    echo_port: self.echo_port,
                    peer_echo_port: t.peer_echo_port,
                    persistent_keepalive: None,
                },
            });
        }
        let new_refusals: Vec<Refused> = refused_members
            .iter()
            .chain(&refused_prefixes)
            .filter(|r| !self.last_refusals.contains(r))
            .cloned()
            .collect();
        for r in &new_refusals {
            tracing::warn!(member = %r.member, prefix = ?r.prefix, reason = %r.reason, "refused");
        }
        self.refusals_total += new_refusals.len() as u64;
        self.last_refusals = refused_members
            .iter()
            .chain(&refused_prefixes)
            .cloned()
            .collect();
        let peers: std::collections::BTreeSet<&str> =
            orders.iter().map(|o| o.tunnel.peer.as_str()).collect();
        let status = MeshStatus {
            node: self.local.name.clone(),
            id: self.local.id,
            agent_connected: self.agent_connected,
            members: self.members.clone(),
            gateways_with_tunnels: peers.len(),
            from_cache: self
                .known
                .values()
                .filter(|k| k.cached && peers.contains(k.member.name.as_str()))
                .count(),
            tunnels: orders.len(),
            bad_tags: self.bad_tags,
            refused_members,
            refused_prefixes,
            refusals_total: self.refusals_total,
        };
        (orders, status)
    }
}

fn refusal(member: &str, prefix: Option<IpNet>, reason: &str) -> Refused {
    Refused {
        member: member.to_owned(),
        prefix,
        reason: reason.to_owned(),
    }
}

/// Each remote datacenter's routed prefixes (the union of its gateways' lists), less what a
/// buggy or hostile member could capture traffic with: a prefix overlapping our datacenter's
/// (either way), one that two remote datacenters both claim (both refused), and one inside
/// another remote datacenter's prefix (the more specific is refused). `lists`: (member,
/// datacenter, prefixes).
pub fn datacenter_prefixes<'a>(
    local_dc: &'a str,
    own: &[IpNet],
    lists: &[(&'a str, &'a str, &'a [IpNet])],
) -> (BTreeMap<String, Vec<IpNet>>, Vec<Refused>) {
    // One claim per (prefix, datacenter): a datacenter's gateways publish the same list.
    let mut claims: BTreeMap<(IpNet, &'a str), &'a str> = BTreeMap::new();
    for &(member, dc, prefixes) in lists {
        for p in prefixes {
            claims.entry((p.trunc(), dc)).or_insert(member);
        }
    }
    let mut remote: Vec<Claim<'a>> = claims.iter().map(|(&(p, dc), &m)| (p, dc, m)).collect();
    let mut why: BTreeMap<(IpNet, &'a str), (&'a str, String)> = BTreeMap::new();
    // First against ours: a remote prefix overlapping it in either direction goes.
    let mut with_ours: Vec<Claim<'a>> = own.iter().map(|p| (p.trunc(), local_dc, "")).collect();
    with_ours.extend(remote.iter().copied());
    for_each_overlap(&mut with_ours, |outer, inner| {
        for (x, other) in [(inner, outer), (outer, inner)] {
            if x.1 != local_dc && other.1 == local_dc {
                why.entry((x.0, x.1))
                    .or_insert_with(|| (x.2, format!("overlaps our datacenter {local_dc}")));
            }
        }
    });
    remote.retain(|c| !why.contains_key(&(c.0, c.1)));
    // Then between remote datacenters.
    let mut between = Vec::new();
    for_each_overlap(&mut remote, |outer, inner| {
        if outer.1 == inner.1 {
            return;
        }
        between.push((inner, format!("also claimed by datacenter {}", outer.1)));
        if outer.0 == inner.0 {
            between.push((outer, format!("also claimed by datacenter {}", inner.1)));
        }
    });
    for (c, reason) in between {
        why.entry((c.0, c.1)).or_insert_with(|| (c.2, reason));
    }
    let mut out: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for (_, dc, _) in lists {
        out.entry((*dc).to_owned()).or_default();
    }
    // `claims` is sorted by prefix: each datacenter's list comes out sorted and unique.
    for &(p, dc) in claims.keys() {
        if !why.contains_key(&(p, dc)) {
            if let Some(v) = out.get_mut(dc) {
                v.push(p);
            }
        }
    }
    let refused = why
        .into_iter()
        .map(|((prefix, _), (member, reason))| Refused {
            member: member.to_owned(),
            prefix: Some(prefix),
            reason,
        })
        .collect();
    (out, refused)
}

/// (prefix, datacenter, member)
type Claim<'a> = (IpNet, &'a str, &'a str);

/// Calls `f(outer, inner)` for every pair where `outer` contains `inner` (equal prefixes
/// included), in O(n log n): sorted by family, first address and length, a prefix comes
/// right after all the prefixes that contain it, which form a stack.
fn for_each_overlap<'a>(claims: &mut [Claim<'a>], mut f: impl FnMut(Claim<'a>, Claim<'a>)) {
    // IpAddr orders IPv4 before IPv6.
    claims.sort_by_key(|c| (c.0.network(), c.0.prefix_len()));
    let mut stack: Vec<Claim<'a>> = Vec::new();
    for &c in claims.iter() {
        while stack.last().is_some_and(|q| !q.0.contains(&c.0)) {
            stack.pop();
        }
        for &q in &stack {
            f(q, c);
        }
        stack.push(c);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|p| p.parse().unwrap()).collect()
    }

    use std::sync::Arc;

    use crate::mesh::prefixes::{AppliedList, PrefixList};
    use crate::mesh::tags::GatewayMeta;
    use crate::mesh::view::GatewayEntry;

    const GRACE: Duration = Duration::from_secs(10);

    fn config() -> GatewayConfig {
        let yaml = r#"
name: a1
datacenter: dc-a
private_key: YNqHwpcAmVj0lVzPOkkAAP1hmgYPEtTy0aLaGJD8PW4=
transits:
  - name: lumen
    listen: "192.0.2.1:51820"
fabric:
  vtep: 10.1.0.1
  router_mac: "02:00:00:00:00:01"
  vni: 100
  local_routes:
    - prefix: 10.10.0.0/16
      vtep: 10.1.0.2
      router_mac: "02:00:00:00:00:02"
mesh:
  id: 1
  bind: [{transit: lumen, address: "192.0.2.1:7946"}]
  keys: ["AAAAAAAAAAAAAAAAAAAAAA=="]
  rpc_auth: x
  state_dir: /nonexistent-gatewan-state
  pools: {v4: 100.64.0.0/16}
  failed_grace: 10s
"#;
        GatewayConfig::parse(yaml, std::path::Path::new("gateway.yaml")).unwrap()
    }

    fn entry(
        name: &str,
        id: Option<u32>,
        status: GatewayStatus,
        prefixes: &[&str],
    ) -> GatewayEntry {
        let meta = GatewayMeta {
            role: Role::Gateway,
            datacenter: "dc-b".into(),
            transits: vec![TransitMeta {
                name: "ntt".into(),
                public_key: [9; 32],
                endpoints: vec!["192.0.2.9:51820".parse().unwrap()],
            }],
            echo_port: Some(7054),
            prefix_list: None,
            id,
            api: None,
            lead: None,
        };
        GatewayEntry {
            name: name.into(),
            addr: "192.0.2.9:7946".parse().unwrap(),
            status,
            meta: Some(meta),
            meta_error: None,
            prefixes: Some(AppliedList {
                origin: name.into(),
                version: 1,
                digest: [0; 32],
                prefixes: Arc::new(PrefixList::new(nets(prefixes))),
            }),
            tags: BTreeMap::new(),
        }
    }

    fn snapshot(entries: Vec<GatewayEntry>) -> MeshSnapshot {
        MeshSnapshot {
            local: "a1".into(),
            agent_connected: true,
            members: entries.into_iter().map(|e| (e.name.clone(), e)).collect(),
            counters: Default::default(),
        }
    }

    fn machine() -> MeshTunnels {
        MeshTunnels::new(&config(), 1, GRACE, 100)
    }

    #[test]
    fn a_failed_member_keeps_its_tunnels_for_the_grace_period_a_leaving_one_not_at_all() {
        let mut m = machine();
        let t0 = Instant::now();
        m.handle_view(
            &snapshot(vec![entry(
                "b1",
                Some(3),
                GatewayStatus::Alive,
                &["10.20.0.0/16"],
            )]),
            t0,
        );
        let (orders, _) = m.plan(t0);
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].tunnel.networks, nets(&["10.20.0.0/16"]));
        assert_eq!(orders[0].tunnel.peer, "b1");

        let t1 = t0 + Duration::from_secs(1);
        m.handle_view(
            &snapshot(vec![entry(
                "b1",
                Some(3),
                GatewayStatus::Failed,
                &["10.20.0.0/16"],
            )]),
            t1,
        );
        assert_eq!(m.poll_timeout(), Some(t1 + GRACE));
        // Seen failed again later: the grace still counts from the first time.
        m.handle_view(
            &snapshot(vec![entry(
                "b1",
                Some(3),
                GatewayStatus::Failed,
                &["10.20.0.0/16"],
            )]),
            t1 + Duration::from_secs(5),
        );
        assert_eq!(m.plan(t1 + GRACE - Duration::from_millis(1)).0.len(), 1);
        assert_eq!(m.plan(t1 + GRACE).0.len(), 0);
        // Alive again: back, and the failure clock is reset.
        let t2 = t1 + GRACE + Duration::from_secs(1);
        m.handle_view(
            &snapshot(vec![entry(
                "b1",
                Some(3),
                GatewayStatus::Alive,
                &["10.20.0.0/16"],
            )]),
            t2,
        );
        assert_eq!(m.plan(t2).0.len(), 1);
        assert_eq!(m.poll_timeout(), None);
        for gone in [GatewayStatus::Leaving, GatewayStatus::Left] {
            m.handle_view(
                &snapshot(vec![entry("b1", Some(3), gone, &["10.20.0.0/16"])]),
                t2,
            );
            assert_eq!(m.plan(t2).0.len(), 0, "{gone:?}");
        }
    }

    #[test]
    fn the_cached_view_gives_tunnels_before_the_agent_answers_and_expires_if_never_confirmed() {
        let mut first = machine();
        let t0 = Instant::now();
        first.handle_view(
            &snapshot(vec![entry(
                "b1",
                Some(3),
                GatewayStatus::Alive,
                &["10.20.0.0/16"],
            )]),
            t0,
        );
        let cache: Cache =
            serde_json::from_str(&serde_json::to_string(&first.cache()).unwrap()).unwrap();

        let mut m = machine();
        m.restore(cache);
        assert_eq!(m.cached_addresses(), vec!["192.0.2.9:7946".to_owned()]);
        let (orders, status) = m.plan(t0);
        assert_eq!(orders.len(), 1, "tunnels from the cache alone");
        assert_eq!(orders[0].tunnel.networks, nets(&["10.20.0.0/16"]));
        assert_eq!(status.from_cache, 1);
        // The agent answers but knows no one (every seed down): kept for the grace period.
        m.handle_view(&snapshot(Vec::new()), t0);
        assert_eq!(m.poll_timeout(), Some(t0 + GRACE));
        m.handle_timeout(t0 + GRACE - Duration::from_millis(1));
        assert_eq!(m.plan(t0).0.len(), 1);
        m.handle_timeout(t0 + GRACE);
        assert_eq!(m.plan(t0 + GRACE).0.len(), 0);
    }

    #[test]
    fn what_a_member_says_is_checked_and_refusals_are_shown() {
        let mut m = machine();
        let t0 = Instant::now();
        let mut too_many: Vec<String> = (0..101).map(|i| format!("10.30.{i}.0/24")).collect();
        too_many.sort();
        let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
        let mut noisy = entry("b3", Some(5), GatewayStatus::Alive, &too_many);
        noisy.addr = "192.0.2.10:7946".parse().unwrap();
        m.handle_view(
            &snapshot(vec![
                // Overlaps our 10.10.0.0/16: that prefix is refused, the other routed.
                entry(
                    "b1",
                    Some(3),
                    GatewayStatus::Alive,
                    &["10.20.0.0/16", "10.10.5.0/24"],
                ),
                entry("b2", None, GatewayStatus::Alive, &["10.21.0.0/16"]),
                noisy,
            ]),
            t0,
        );
        let (orders, status) = m.plan(t0);
        let b1: Vec<_> = orders.iter().filter(|o| o.tunnel.peer == "b1").collect();
        assert_eq!(b1.len(), 1);
        assert_eq!(b1[0].tunnel.networks, nets(&["10.20.0.0/16"]));
        assert!(
            orders.iter().all(|o| o.tunnel.peer != "b2"),
            "no id, no tunnel"
        );
        assert!(status
            .refused_prefixes
            .iter()
            .any(|r| r.member == "b1" && r.prefix == Some("10.10.5.0/24".parse().unwrap())));
        assert!(status.refused_members.iter().any(|r| r.member == "b2"));
        assert!(status
            .refused_members
            .iter()
            .any(|r| r.member == "b3" && r.reason.contains("max_prefixes")));
        let total = status.refusals_total;
        assert!(total >= 3);
        // The same view again counts nothing new.
        assert_eq!(m.plan(t0).1.refusals_total, total);
    }

    #[test]
    fn overlaps_with_our_datacenter_or_between_remote_ones_are_refused() {
        let owned = [
            ("b1", "dcb", nets(&["10.2.0.0/16", "10.1.5.0/24"])),
            ("b2", "dcb", nets(&["10.2.0.0/16", "fd02::/48"])),
            ("c1", "dcc", nets(&["10.3.0.0/16", "0.0.0.0/0"])),
            ("d1", "dcd", nets(&["10.4.0.0/16", "10.4.1.0/24"])),
            ("e1", "dce", nets(&["10.4.1.0/24"])),
        ];
        let lists: Vec<(&str, &str, &[IpNet])> = owned
            .iter()
            .map(|(m, d, p)| (*m, *d, p.as_slice()))
            .collect();
        let (routed, refused) = datacenter_prefixes("dca", &nets(&["10.1.0.0/16"]), &lists);
        assert_eq!(routed["dcb"], nets(&["10.2.0.0/16", "fd02::/48"]));
        // 0.0.0.0/0 overlaps everything: refused; its other prefix stays.
        assert_eq!(routed["dcc"], nets(&["10.3.0.0/16"]));
        // 10.4.1.0/24 is claimed by two remote datacenters: neither gets it; the /16 that
        // contains it stays with its datacenter.
        assert_eq!(routed["dcd"], nets(&["10.4.0.0/16"]));
        assert!(routed["dce"].is_empty());
        let refused_prefixes: Vec<_> = refused.iter().filter_map(|r| r.prefix).collect();
        assert!(refused_prefixes.contains(&"10.1.5.0/24".parse().unwrap()));
        assert!(refused_prefixes.contains(&"0.0.0.0/0".parse().unwrap()));
        let ours = refused
            .iter()
            .find(|r| r.prefix == Some("10.1.5.0/24".parse().unwrap()))
            .unwrap();
        assert_eq!(ours.member, "b1");
        assert!(ours.reason.contains("our datacenter"));
    }
}
