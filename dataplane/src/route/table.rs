//! The route tables workers read, how the control side builds them, and how they reach the
//! workers without a lock on the packet path.
//!
//! The control side builds a complete [`RouteTables`] with [`RouteTablesBuilder`] and
//! installs it through its [`RouteHandle`]; this publishes an `Arc` in an `ArcSwap`. Each
//! worker owns a [`RouteReader`] and calls [`RouteReader::load`] once per batch: a pointer
//! comparison when nothing changed, one refcount update when something did. Workers never
//! block, and never see half a table.
//!
//! Freeing a table of 100k prefixes takes milliseconds, which must not happen on a worker.
//! So the handle keeps every replaced table in a retired list and frees it on the control
//! thread ([`RouteHandle::reclaim`], also run by every install) once no worker still holds
//! it: the last `Arc` a worker drops is never the last one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::group::{GroupError, TunnelGroup, TunnelId};
use super::lpm::{Ipv4Lpm, Ipv6Lpm};
use crate::wire::ethernet::MacAddr;
use crate::wire::vxlan;

/// Index of a tunnel group in one [`RouteTables`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

/// Where a local (own datacenter) prefix lives: the leaf VTEP to send VXLAN to, the leaf's
/// router MAC for the inner Ethernet header, and the VNI. What bgpctl learns from EVPN RT5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalRoute {
    pub vtep: IpAddr,
    pub router_mac: MacAddr,
    pub vni: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("prefix {0} has host bits set (did you mean {1}?)")]
    HostBitsSet(IpNet, IpNet),
    #[error("prefix {0} is already in the {1} table")]
    Duplicate(IpNet, &'static str),
    #[error("unknown tunnel group {0:?}")]
    UnknownGroup(GroupId),
    #[error("VNI {0} does not fit in 24 bits")]
    BadVni(u32),
    #[error("router MAC {0} is not a unicast address")]
    BadRouterMac(MacAddr),
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// A complete, immutable set of route tables, as the workers read it.
#[derive(Debug, Default)]
pub struct RouteTables {
    generation: u64,
    groups: Vec<TunnelGroup>,
    remote_v4: Ipv4Lpm<GroupId>,
    remote_v6: Ipv6Lpm<GroupId>,
    local_v4: Ipv4Lpm<LocalRoute>,
    local_v6: Ipv6Lpm<LocalRoute>,
}

impl RouteTables {
    /// No routes at all: every lookup misses.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn builder() -> RouteTablesBuilder {
        RouteTablesBuilder::default()
    }

    /// Set by [`RouteHandle::install`]: 0 for the initial tables, then 1, 2, ...
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The tunnel group for a remote IPv4 destination.
    #[inline]
    pub fn remote_v4(&self, dst: Ipv4Addr) -> Option<&TunnelGroup> {
        self.remote_v4.lookup(dst).and_then(|g| self.group(*g))
    }

    /// The tunnel group for a remote IPv6 destination.
    #[inline]
    pub fn remote_v6(&self, dst: Ipv6Addr) -> Option<&TunnelGroup> {
        self.remote_v6.lookup(dst).and_then(|g| self.group(*g))
    }

    pub fn remote(&self, dst: IpAddr) -> Option<&TunnelGroup> {
        match dst {
            IpAddr::V4(a) => self.remote_v4(a),
            IpAddr::V6(a) => self.remote_v6(a),
        }
    }

    /// Route lookup and tunnel pick in one: the tunnel for a flow to `dst`.
    #[inline]
    pub fn pick(&self, dst: IpAddr, flow_hash: u32) -> Option<TunnelId> {
        self.remote(dst).and_then(|g| g.pick(flow_hash))
    }

    /// The leaf for a local IPv4 destination.
    #[inline]
    pub fn local_v4(&self, dst: Ipv4Addr) -> Option<&LocalRoute> {
        self.local_v4.lookup(dst)
    }

    /// The leaf for a local IPv6 destination.
    #[inline]
    pub fn local_v6(&self, dst: Ipv6Addr) -> Option<&LocalRoute> {
        self.local_v6.lookup(dst)
    }

    pub fn local(&self, dst: IpAddr) -> Option<&LocalRoute> {
        match dst {
            IpAddr::V4(a) => self.local_v4(a),
            IpAddr::V6(a) => self.local_v6(a),
        }
    }

    pub fn group(&self, id: GroupId) -> Option<&TunnelGroup> {
        self.groups.get(id.0 as usize)
    }

    pub fn groups(&self) -> &[TunnelGroup] {
        &self.groups
    }

    /// Every remote route, IPv4 then IPv6, for inspection (`gatewan routes`).
    pub fn remote_routes(&self) -> impl Iterator<Item = (IpNet, GroupId)> + '_ {
        self.remote_v4
            .iter()
            .map(|(p, g)| (IpNet::V4(p), *g))
            .chain(self.remote_v6.iter().map(|(p, g)| (IpNet::V6(p), *g)))
    }

    /// Every local route, IPv4 then IPv6, for inspection.
    pub fn local_routes(&self) -> impl Iterator<Item = (IpNet, &LocalRoute)> + '_ {
        self.local_v4
            .iter()
            .map(|(p, r)| (IpNet::V4(p), r))
            .chain(self.local_v6.iter().map(|(p, r)| (IpNet::V6(p), r)))
    }

    /// (remote v4, remote v6, local v4, local v6) prefix counts.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.remote_v4.len(),
            self.remote_v6.len(),
            self.local_v4.len(),
            self.local_v6.len(),
        )
    }
}

/// Builds a [`RouteTables`] on the control side. Validates as it goes, so an installed table
/// is always consistent (every route's group exists, prefixes are canonical and unique);
/// [`RouteTablesBuilder::build`] compiles the lookup structures.
#[derive(Debug, Default)]
pub struct RouteTablesBuilder {
    groups: Vec<TunnelGroup>,
    remote_v4: BTreeMap<Ipv4Net, GroupId>,
    remote_v6: BTreeMap<Ipv6Net, GroupId>,
    local_v4: BTreeMap<Ipv4Net, LocalRoute>,
    local_v6: BTreeMap<Ipv6Net, LocalRoute>,
}

fn canonical(p: IpNet) -> Result<IpNet, RouteError> {
    if p.trunc() != p {
        return Err(RouteError::HostBitsSet(p, p.trunc()));
    }
    Ok(p)
}

fn insert_new<K: Ord, V>(m: &mut BTreeMap<K, V>, k: K, v: V) -> bool {
    match m.entry(k) {
        Entry::Occupied(_) => false,
        Entry::Vacant(e) => {
            e.insert(v);
            true
        }
    }
}

impl RouteTablesBuilder {
    /// Adds a tunnel group.
    pub fn add_group(&mut self, group: TunnelGroup) -> GroupId {
        let id = GroupId(self.groups.len() as u32);
        self.groups.push(group);
        id
    }

    /// Adds a tunnel group built from (tunnel, weight) pairs.
    pub fn add_group_weights(
        &mut self,
        members: &[(TunnelId, u32)],
    ) -> Result<GroupId, RouteError> {
        Ok(self.add_group(TunnelGroup::new(members)?))
    }

    /// Routes a remote prefix to a tunnel group.
    pub fn add_remote(&mut self, prefix: IpNet, group: GroupId) -> Result<&mut Self, RouteError> {
        let prefix = canonical(prefix)?;
        if group.0 as usize >= self.groups.len() {
            return Err(RouteError::UnknownGroup(group));
        }
        let new = match prefix {
            IpNet::V4(p) => insert_new(&mut self.remote_v4, p, group),
            IpNet::V6(p) => insert_new(&mut self.remote_v6, p, group),
        };
        if !new {
            return Err(RouteError::Duplicate(prefix, "remote"));
        }
        Ok(self)
    }

    /// Routes a local prefix to a leaf.
    pub fn add_local(&mut self, prefix: IpNet, route: LocalRoute) -> Result<&mut Self, RouteError> {
        let prefix = canonical(prefix)?;
        if route.vni > vxlan::MAX_VNI {
            return Err(RouteError::BadVni(route.vni));
        }
        if !route.router_mac.is_unicast() {
            return Err(RouteError::BadRouterMac(route.router_mac));
        }
        let new = match prefix {
            IpNet::V4(p) => insert_new(&mut self.local_v4, p, route),
            IpNet::V6(p) => insert_new(&mut self.local_v6, p, route),
        };
        if !new {
            return Err(RouteError::Duplicate(prefix, "local"));
        }
        Ok(self)
    }

    /// Compiles the lookup structures (some 20 ms per 100k prefixes, on the control thread).
    pub fn build(self) -> RouteTables {
        RouteTables {
            generation: 0,
            groups: self.groups,
            remote_v4: Ipv4Lpm::build(self.remote_v4),
            remote_v6: Ipv6Lpm::build(self.remote_v6),
            local_v4: Ipv4Lpm::build(self.local_v4),
            local_v6: Ipv6Lpm::build(self.local_v6),
        }
    }
}

/// The control side's end: installs new tables, hands out readers, frees old tables.
#[derive(Debug)]
pub struct RouteHandle {
    shared: Arc<ArcSwap<RouteTables>>,
    retired: Vec<Arc<RouteTables>>,
    generation: u64,
}

impl RouteHandle {
    pub fn new(initial: RouteTables) -> Self {
        let mut initial = initial;
        initial.generation = 0;
        Self {
            shared: Arc::new(ArcSwap::from_pointee(initial)),
            retired: Vec::new(),
            generation: 0,
        }
    }

    /// A reader for one worker.
    pub fn reader(&self) -> RouteReader {
        RouteReader {
            cache: Cache::new(Arc::clone(&self.shared)),
        }
    }

    /// Publishes `tables` to every worker (each sees it at its next `load`), stamps and
    /// returns its generation, and frees replaced tables no worker holds any more.
    pub fn install(&mut self, tables: RouteTables) -> u64 {
        let mut tables = tables;
        self.generation += 1;
        tables.generation = self.generation;
        let old = self.shared.swap(Arc::new(tables));
        self.retired.push(old);
        self.reclaim();
        self.generation
    }

    /// The tables workers currently get.
    pub fn current(&self) -> Arc<RouteTables> {
        self.shared.load_full()
    }

    /// Frees retired tables that no worker holds; returns how many are still held. Call it
    /// now and then (install does); a worker lets go of an old table at its next `load`.
    pub fn reclaim(&mut self) -> usize {
        // strong_count == 1: only this list holds it, and nothing can take a new reference
        // since it is no longer published.
        self.retired.retain(|t| Arc::strong_count(t) > 1);
        self.retired.len()
    }
}

/// A worker's end: cheap to load once per batch, never blocks. Clone one per worker.
#[derive(Clone)]
pub struct RouteReader {
    cache: Cache<Arc<ArcSwap<RouteTables>>, Arc<RouteTables>>,
}

impl RouteReader {
    /// The current tables. Call once per batch and use the reference for the whole batch.
    #[inline]
    pub fn load(&mut self) -> &RouteTables {
        self.cache.load()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T1: TunnelId = TunnelId(1);
    const T2: TunnelId = TunnelId(2);

    fn leaf(n: u8) -> LocalRoute {
        LocalRoute {
            vtep: IpAddr::V4(Ipv4Addr::new(10, 184, 84, n)),
            router_mac: MacAddr([0x70, 0x5b, 0x83, 0x6b, 0x72, n]),
            vni: 5000,
        }
    }

    fn tables() -> RouteTables {
        let mut b = RouteTables::builder();
        let g1 = b.add_group_weights(&[(T1, 1), (T2, 1)]).unwrap();
        let g2 = b.add_group_weights(&[(T2, 1)]).unwrap();
        b.add_remote("10.188.0.0/14".parse().unwrap(), g1).unwrap();
        b.add_remote("10.188.4.0/24".parse().unwrap(), g2).unwrap();
        b.add_remote("fd05::/16".parse().unwrap(), g1).unwrap();
        b.add_local("10.1.11.0/24".parse().unwrap(), leaf(1))
            .unwrap();
        b.add_local("fd06:1::/48".parse().unwrap(), leaf(2))
            .unwrap();
        b.build()
    }

    #[test]
    fn lookups() {
        let t = tables();
        assert_eq!(t.counts(), (2, 1, 1, 1));
        let g = t.remote_v4("10.188.4.1".parse().unwrap()).unwrap();
        assert_eq!(g.members(), &[(T2, 1)]);
        assert_eq!(t.pick("10.188.4.1".parse().unwrap(), 12345), Some(T2));
        let g = t.remote_v4("10.189.0.1".parse().unwrap()).unwrap();
        assert_eq!(g.members().len(), 2);
        assert!(t.remote_v6("fd05:1::1".parse().unwrap()).is_some());
        assert!(t.remote("192.0.2.1".parse().unwrap()).is_none());
        assert_eq!(t.local("10.1.11.200".parse().unwrap()), Some(&leaf(1)));
        assert_eq!(t.local("fd06:1:0:1::7".parse().unwrap()), Some(&leaf(2)));
        assert_eq!(t.local("10.1.12.1".parse().unwrap()), None);
        assert_eq!(t.remote_routes().count(), 3);
        assert_eq!(t.local_routes().count(), 2);
        assert!(RouteTables::empty()
            .pick("10.0.0.1".parse().unwrap(), 1)
            .is_none());
    }

    #[test]
    fn builder_validates() {
        let mut b = RouteTables::builder();
        let g = b.add_group(TunnelGroup::empty());
        assert!(matches!(
            b.add_remote("10.0.0.1/8".parse().unwrap(), g),
            Err(RouteError::HostBitsSet(_, _))
        ));
        assert_eq!(
            b.add_remote("10.0.0.0/8".parse().unwrap(), GroupId(9))
                .unwrap_err(),
            RouteError::UnknownGroup(GroupId(9))
        );
        b.add_remote("10.0.0.0/8".parse().unwrap(), g).unwrap();
        assert!(matches!(
            b.add_remote("10.0.0.0/8".parse().unwrap(), g),
            Err(RouteError::Duplicate(_, "remote"))
        ));
        let mut bad = leaf(1);
        bad.vni = 1 << 24;
        assert_eq!(
            b.add_local("10.1.0.0/16".parse().unwrap(), bad)
                .unwrap_err(),
            RouteError::BadVni(1 << 24)
        );
        let mut bad = leaf(1);
        bad.router_mac = MacAddr::BROADCAST;
        assert!(matches!(
            b.add_local("10.1.0.0/16".parse().unwrap(), bad),
            Err(RouteError::BadRouterMac(_))
        ));
        assert!(matches!(
            b.add_group_weights(&[(T1, 1), (T1, 1)]),
            Err(RouteError::Group(_))
        ));
        // An empty group routes but picks nothing: the pipeline counts NoTunnel.
        let t = b.build();
        assert!(t.remote_v4("10.9.9.9".parse().unwrap()).unwrap().is_empty());
    }

    #[test]
    fn install_reaches_readers_and_old_tables_are_freed_off_the_worker() {
        let mut h = RouteHandle::new(RouteTables::empty());
        let mut r1 = h.reader();
        let mut r2 = r1.clone();
        assert_eq!(r1.load().generation(), 0);
        assert!(r1.load().remote("10.188.0.1".parse().unwrap()).is_none());

        assert_eq!(h.install(tables()), 1);
        // r1 sees it at its next load; r2 has not loaded yet but will.
        assert_eq!(r1.load().generation(), 1);
        assert!(r1.load().remote("10.188.0.1".parse().unwrap()).is_some());
        // Generation 0 is still held by r2's cache, so it is retired, not freed.
        assert_eq!(h.reclaim(), 1);
        assert_eq!(r2.load().generation(), 1);
        // Now nobody holds generation 0: the handle frees it here, on the control side.
        assert_eq!(h.reclaim(), 0);

        let gen1 = h.current();
        assert_eq!(gen1.generation(), 1);
        assert_eq!(h.install(RouteTables::empty()), 2);
        // `gen1` (and both readers' caches) still hold generation 1.
        assert_eq!(h.reclaim(), 1);
        drop(gen1);
        r1.load();
        r2.load();
        assert_eq!(h.reclaim(), 0);
        assert_eq!(r1.load().generation(), 2);
    }

    #[test]
    fn readers_on_threads_see_every_install_eventually() {
        let mut h = RouteHandle::new(RouteTables::empty());
        let mut reader = h.reader();
        let worker = std::thread::spawn(move || {
            // Busy-poll like a worker: one load per "batch" until the final generation.
            let mut seen = Vec::new();
            loop {
                let g = reader.load().generation();
                if seen.last() != Some(&g) {
                    seen.push(g);
                }
                if g == 50 {
                    return seen;
                }
                std::hint::spin_loop();
            }
        });
        for _ in 0..50 {
            h.install(tables());
        }
        let seen = worker.join().unwrap();
        // Generations only move forward, and the last one arrives.
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&50));
        // The worker's reader is gone with its thread: every old table is freed.
        assert_eq!(h.reclaim(), 0);
    }
}
