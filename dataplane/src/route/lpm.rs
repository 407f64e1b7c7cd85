//! Longest-prefix match for IPv4 and IPv6.
//!
//! A thin wrapper over `prefix_trie::PrefixMap`, a multibit trie, chosen after measuring it
//! against the tree bitmap of `ip_network_table` at 100k prefixes per family
//! (bench/benches/route.rs, docs/routing.md). The wrapper keeps the crate out of the public
//! API so it can be replaced without touching callers. Tables are built once by the control
//! side and then only read, so lookups need `&self` only.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

/// Longest-prefix match over IPv4 prefixes.
#[derive(Clone)]
pub struct Ipv4Lpm<V> {
    map: PrefixMap<Ipv4Net, V>,
}

/// Longest-prefix match over IPv6 prefixes.
#[derive(Clone)]
pub struct Ipv6Lpm<V> {
    map: PrefixMap<Ipv6Net, V>,
}

macro_rules! lpm_impl {
    ($name:ident, $net:ty, $addr:ty, $bits:expr) => {
        impl<V> Default for $name<V> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<V> $name<V> {
            pub fn new() -> Self {
                Self {
                    map: PrefixMap::new(),
                }
            }

            /// Inserts `prefix` (host bits are ignored: the prefix is truncated), returning the
            /// value it replaced.
            pub fn insert(&mut self, prefix: $net, value: V) -> Option<V> {
                self.map.insert(prefix.trunc(), value)
            }

            pub fn remove(&mut self, prefix: &$net) -> Option<V> {
                self.map.remove(&prefix.trunc())
            }

            /// Exact match.
            pub fn get(&self, prefix: &$net) -> Option<&V> {
                self.map.get(&prefix.trunc())
            }

            /// The value of the longest prefix containing `addr`.
            #[inline]
            pub fn lookup(&self, addr: $addr) -> Option<&V> {
                self.lookup_prefix(addr).map(|(_, v)| v)
            }

            /// The longest prefix containing `addr`, and its value.
            #[inline]
            pub fn lookup_prefix(&self, addr: $addr) -> Option<($net, &V)> {
                // A host prefix always constructs; the fallback is unreachable.
                let host = <$net>::new(addr, $bits).ok()?;
                self.map.get_lpm(&host)
            }

            pub fn len(&self) -> usize {
                self.map.len()
            }

            pub fn is_empty(&self) -> bool {
                self.map.len() == 0
            }

            /// Every (prefix, value), in prefix order.
            pub fn iter(&self) -> impl Iterator<Item = ($net, &V)> + '_ {
                self.map.iter()
            }
        }

        impl<V: std::fmt::Debug> std::fmt::Debug for $name<V> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map().entries(self.iter()).finish()
            }
        }
    };
}

lpm_impl!(Ipv4Lpm, Ipv4Net, Ipv4Addr, 32);
lpm_impl!(Ipv6Lpm, Ipv6Net, Ipv6Addr, 128);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn longest_wins_v4() {
        let mut t = Ipv4Lpm::new();
        t.insert(n4("0.0.0.0/0"), 0);
        t.insert(n4("10.0.0.0/8"), 8);
        t.insert(n4("10.176.0.0/14"), 14);
        t.insert(n4("10.177.3.0/24"), 24);
        t.insert(n4("10.177.3.7/32"), 32);
        assert_eq!(t.lookup("10.177.3.7".parse().unwrap()), Some(&32));
        assert_eq!(t.lookup("10.177.3.8".parse().unwrap()), Some(&24));
        assert_eq!(t.lookup("10.178.0.1".parse().unwrap()), Some(&14));
        assert_eq!(t.lookup("10.180.0.1".parse().unwrap()), Some(&8));
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), Some(&0));
        assert_eq!(
            t.lookup_prefix("10.178.0.1".parse().unwrap()).unwrap().0,
            n4("10.176.0.0/14")
        );
        assert_eq!(t.remove(&n4("0.0.0.0/0")), Some(0));
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), None);
        assert_eq!(t.len(), 4);
        // Host bits are cleared on insert.
        assert_eq!(t.insert(n4("10.177.3.99/24"), 25), Some(24));
        assert_eq!(t.get(&n4("10.177.3.0/24")), Some(&25));
    }

    #[test]
    fn longest_wins_v6() {
        let mut t = Ipv6Lpm::new();
        t.insert("fd05::/16".parse().unwrap(), 16);
        t.insert("fd05:1:0:2::/64".parse().unwrap(), 64);
        t.insert("::/0".parse().unwrap(), 0);
        assert_eq!(t.lookup("fd05:1:0:2:5::87".parse().unwrap()), Some(&64));
        assert_eq!(t.lookup("fd05:1:0:3::1".parse().unwrap()), Some(&16));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(&0));
        assert_eq!(t.iter().count(), 3);
    }

    /// Reference: linear scan for the longest containing prefix.
    fn naive(prefixes: &[(u32, u8)], a: u32) -> Option<usize> {
        prefixes
            .iter()
            .enumerate()
            .filter(|(_, (p, l))| *l == 0 || (a ^ p) >> (32 - u32::from(*l)) == 0)
            .max_by_key(|(_, (_, l))| *l)
            .map(|(i, _)| i)
    }

    proptest! {
        #[test]
        fn matches_linear_scan(
            raw in proptest::collection::vec((any::<u32>(), 0u8..=32), 1..60),
            probes in proptest::collection::vec(any::<u32>(), 1..60),
        ) {
            // Canonical, unique prefixes; probes near them so matches are common.
            let mut prefixes: Vec<(u32, u8)> = Vec::new();
            for (a, l) in raw {
                let p = if l == 0 { 0 } else { a & (u32::MAX << (32 - u32::from(l))) };
                if !prefixes.contains(&(p, l)) { prefixes.push((p, l)); }
            }
            let mut t = Ipv4Lpm::new();
            for (i, (p, l)) in prefixes.iter().enumerate() {
                t.insert(Ipv4Net::new(Ipv4Addr::from(*p), *l).unwrap(), i);
            }
            for (k, probe) in probes.iter().enumerate() {
                let a = prefixes[k % prefixes.len()].0 ^ (probe >> (k % 32));
                prop_assert_eq!(t.lookup(Ipv4Addr::from(a)).copied(), naive(&prefixes, a));
            }
        }
    }
}
