//! Longest-prefix match for IPv4 and IPv6: typed wrappers over the compiled [`Poptrie`].
//!
//! Tables are built whole from a prefix list (the control side rebuilds and swaps them; see
//! [`super::table`]) and then only read, so lookups need `&self` and no lock. Why a
//! hand-written structure rather than a crate: docs/routing.md, measured by
//! bench/benches/route.rs.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::poptrie::Poptrie;

/// Longest-prefix match over IPv4 prefixes.
#[derive(Clone)]
pub struct Ipv4Lpm<V> {
    /// Values stored with their prefix, in prefix order.
    trie: Poptrie<(Ipv4Net, V)>,
}

/// Longest-prefix match over IPv6 prefixes.
#[derive(Clone)]
pub struct Ipv6Lpm<V> {
    trie: Poptrie<(Ipv6Net, V)>,
}

#[inline(always)]
fn key4(a: Ipv4Addr) -> u128 {
    u128::from(a.to_bits()) << 96
}

#[inline(always)]
fn key6(a: Ipv6Addr) -> u128 {
    a.to_bits()
}

macro_rules! lpm_impl {
    ($name:ident, $net:ty, $addr:ty, $key:ident) => {
        impl<V> Default for $name<V> {
            fn default() -> Self {
                Self::build(std::iter::empty())
            }
        }

        impl<V> $name<V> {
            /// Compiles the table. Host bits of each prefix are cleared; when a prefix comes
            /// twice, the last value wins.
            pub fn build(prefixes: impl IntoIterator<Item = ($net, V)>) -> Self {
                let map: BTreeMap<$net, V> =
                    prefixes.into_iter().map(|(p, v)| (p.trunc(), v)).collect();
                let entries = map
                    .into_iter()
                    .map(|(p, v)| ($key(p.network()), p.prefix_len(), (p, v)))
                    .collect();
                Self {
                    trie: Poptrie::build(entries),
                }
            }

            /// The value of the longest prefix containing `addr`.
            #[inline]
            pub fn lookup(&self, addr: $addr) -> Option<&V> {
                self.trie.lookup($key(addr)).map(|(_, v)| v)
            }

            /// The longest prefix containing `addr`, and its value.
            #[inline]
            pub fn lookup_prefix(&self, addr: $addr) -> Option<($net, &V)> {
                self.trie.lookup($key(addr)).map(|(p, v)| (*p, v))
            }

            /// Exact match.
            pub fn get(&self, prefix: &$net) -> Option<&V> {
                let p = prefix.trunc();
                let vals = self.trie.values();
                vals.binary_search_by(|(q, _)| q.cmp(&p))
                    .ok()
                    .and_then(|i| vals.get(i))
                    .map(|(_, v)| v)
            }

            pub fn len(&self) -> usize {
                self.trie.values().len()
            }

            pub fn is_empty(&self) -> bool {
                self.trie.values().is_empty()
            }

            /// Every (prefix, value), in prefix order.
            pub fn iter(&self) -> impl Iterator<Item = ($net, &V)> + '_ {
                self.trie.values().iter().map(|(p, v)| (*p, v))
            }

            /// Bytes of the lookup structure (values not counted).
            pub fn memory_bytes(&self) -> usize {
                self.trie.memory_bytes()
            }
        }

        impl<V> FromIterator<($net, V)> for $name<V> {
            fn from_iter<I: IntoIterator<Item = ($net, V)>>(iter: I) -> Self {
                Self::build(iter)
            }
        }

        impl<V: std::fmt::Debug> std::fmt::Debug for $name<V> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map().entries(self.iter()).finish()
            }
        }
    };
}

lpm_impl!(Ipv4Lpm, Ipv4Net, Ipv4Addr, key4);
lpm_impl!(Ipv6Lpm, Ipv6Net, Ipv6Addr, key6);

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
        let t: Ipv4Lpm<u8> = [
            (n4("0.0.0.0/0"), 0),
            (n4("10.0.0.0/8"), 8),
            (n4("10.176.0.0/14"), 14),
            (n4("10.177.3.0/24"), 24),
            (n4("10.177.3.7/32"), 32),
        ]
        .into_iter()
        .collect();
        assert_eq!(t.lookup("10.177.3.7".parse().unwrap()), Some(&32));
        assert_eq!(t.lookup("10.177.3.8".parse().unwrap()), Some(&24));
        assert_eq!(t.lookup("10.178.0.1".parse().unwrap()), Some(&14));
        assert_eq!(t.lookup("10.180.0.1".parse().unwrap()), Some(&8));
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), Some(&0));
        assert_eq!(
            t.lookup_prefix("10.178.0.1".parse().unwrap()).unwrap().0,
            n4("10.176.0.0/14")
        );
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(&n4("10.176.0.0/14")), Some(&14));
        assert_eq!(t.get(&n4("10.176.0.0/15")), None);
        let order: Vec<Ipv4Net> = t.iter().map(|(p, _)| p).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }

    #[test]
    fn host_bits_cleared_and_last_duplicate_wins() {
        let t = Ipv4Lpm::build([(n4("10.177.3.99/24"), 1), (n4("10.177.3.0/24"), 2)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&n4("10.177.3.0/24")), Some(&2));
        assert_eq!(t.lookup("10.177.3.1".parse().unwrap()), Some(&2));
        let empty: Ipv4Lpm<u8> = Ipv4Lpm::default();
        assert!(empty.is_empty());
        assert_eq!(empty.lookup(Ipv4Addr::BROADCAST), None);
    }

    #[test]
    fn longest_wins_v6() {
        let t = Ipv6Lpm::build([
            ("fd05::/16".parse().unwrap(), 16),
            ("fd05:1:0:2::/64".parse().unwrap(), 64),
            ("fd05:1:0:2:5::86/127".parse().unwrap(), 127),
            ("::/0".parse().unwrap(), 0),
        ]);
        assert_eq!(t.lookup("fd05:1:0:2:5::87".parse().unwrap()), Some(&127));
        assert_eq!(t.lookup("fd05:1:0:2:5::88".parse().unwrap()), Some(&64));
        assert_eq!(t.lookup("fd05:1:0:3::1".parse().unwrap()), Some(&16));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(&0));
        assert_eq!(t.iter().count(), 4);
    }

    /// Reference: linear scan for the longest containing prefix.
    fn naive4(prefixes: &[Ipv4Net], a: Ipv4Addr) -> Option<Ipv4Net> {
        prefixes
            .iter()
            .filter(|p| p.contains(&a))
            .max_by_key(|p| p.prefix_len())
            .copied()
    }

    fn naive6(prefixes: &[Ipv6Net], a: Ipv6Addr) -> Option<Ipv6Net> {
        prefixes
            .iter()
            .filter(|p| p.contains(&a))
            .max_by_key(|p| p.prefix_len())
            .copied()
    }

    proptest! {
        #[test]
        fn v4_matches_linear_scan(
            raw in proptest::collection::vec((any::<u32>(), 0u8..=32), 1..60),
            probes in proptest::collection::vec((any::<u32>(), 0u32..32), 1..60),
        ) {
            let prefixes: Vec<Ipv4Net> = raw.iter().map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(*a), *l).unwrap().trunc()).collect();
            let t: Ipv4Lpm<Ipv4Net> = prefixes.iter().map(|p| (*p, *p)).collect();
            for (k, (r, s)) in probes.iter().enumerate() {
                let a = Ipv4Addr::from(prefixes[k % prefixes.len()].network().to_bits() ^ (r >> s));
                prop_assert_eq!(t.lookup(a).copied(), naive4(&prefixes, a));
            }
        }

        #[test]
        fn v6_matches_linear_scan(
            raw in proptest::collection::vec((any::<u128>(), 0u8..=128), 1..60),
            probes in proptest::collection::vec((any::<u128>(), 0u32..128), 1..60),
        ) {
            let prefixes: Vec<Ipv6Net> = raw.iter().map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(*a), *l).unwrap().trunc()).collect();
            let t: Ipv6Lpm<Ipv6Net> = prefixes.iter().map(|p| (*p, *p)).collect();
            for (k, (r, s)) in probes.iter().enumerate() {
                let a = Ipv6Addr::from(prefixes[k % prefixes.len()].network().to_bits() ^ (r >> s));
                prop_assert_eq!(t.lookup(a).copied(), naive6(&prefixes, a));
            }
        }
    }
}
