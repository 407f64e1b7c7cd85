//! Route lookup at 100k prefixes per family, tunnel pick, and the flow hash.
//!
//! `cargo bench -p gatewan-bench --bench route -- --warm-up-time 1 --measurement-time 3`
//!
//! LPM: gatewan's `Ipv4Lpm`/`Ipv6Lpm` (a compiled poptrie) against two crates, the tree
//! bitmap of `ip_network_table` (the baseline) and `prefix-trie`, on the same prefixes and the
//! same addresses (half inside a random prefix, half random), after checking all three agree.
//! Three tables: IPv4 shaped like a routing table, IPv6 spread over 2000::/3, and IPv6 packed
//! under one /32. Route decision: lookup + flow hash + tunnel pick through `RouteTables`.
//! Flow hash: gatewan's against foldhash (fixed seed) and std's SipHash.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use gatewan_bench::ratio::Ledger;
use gatewan_dataplane::route::{FlowHasher, Ipv4Lpm, Ipv6Lpm, RouteTables, TunnelId};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const PREFIXES: usize = 100_000;
const LOOKUPS: usize = 4096;

/// splitmix64: deterministic inputs, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// IPv4 prefixes shaped like a routing table: mostly /24, some /16-/23, some longer.
fn v4_prefixes(rng: &mut Rng) -> Vec<Ipv4Net> {
    let mut seen = HashSet::new();
    while seen.len() < PREFIXES {
        let r = rng.next();
        let len = match r % 100 {
            0..=59 => 24,
            60..=69 => 22 + (r >> 8) as u8 % 2,
            70..=84 => 16 + (r >> 8) as u8 % 6,
            _ => 25 + (r >> 8) as u8 % 8,
        };
        let net = Ipv4Net::new(Ipv4Addr::from((r >> 32) as u32), len)
            .expect("len <= 32")
            .trunc();
        seen.insert(net);
    }
    let mut v: Vec<_> = seen.into_iter().collect();
    v.sort();
    v
}

/// IPv6 prefixes in 2000::/3: mostly /48, some /32-/47, /56 and /64.
fn v6_prefixes(rng: &mut Rng) -> Vec<Ipv6Net> {
    let mut seen = HashSet::new();
    while seen.len() < PREFIXES {
        let r = rng.next();
        let len = match r % 100 {
            0..=59 => 48,
            60..=74 => 32 + (r >> 8) as u8 % 16,
            75..=89 => 56,
            _ => 64,
        };
        let a = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3 | (1u128 << 125);
        let net = Ipv6Net::new(Ipv6Addr::from(a), len)
            .expect("len <= 128")
            .trunc();
        seen.insert(net);
    }
    let mut v: Vec<_> = seen.into_iter().collect();
    v.sort();
    v
}

fn v4_probes(rng: &mut Rng, p: &[Ipv4Net]) -> Vec<Ipv4Addr> {
    (0..LOOKUPS)
        .map(|i| {
            let r = rng.next();
            if i % 2 == 0 {
                let n = p[(r as usize) % p.len()];
                Ipv4Addr::from(n.network().to_bits() | ((r >> 32) as u32 & n.hostmask().to_bits()))
            } else {
                Ipv4Addr::from((r >> 32) as u32)
            }
        })
        .collect()
}

fn v6_probes(rng: &mut Rng, p: &[Ipv6Net]) -> Vec<Ipv6Addr> {
    (0..LOOKUPS)
        .map(|i| {
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            if i % 2 == 0 {
                let n = p[(rng.next() as usize) % p.len()];
                Ipv6Addr::from(n.network().to_bits() | (r & n.hostmask().to_bits()))
            } else {
                Ipv6Addr::from(r >> 3 | (1u128 << 125))
            }
        })
        .collect()
}

/// One LPM candidate's lookups over `probes`, summing values so nothing is optimised away.
macro_rules! lookups {
    ($probes:expr, |$a:ident| $e:expr) => {
        || {
            $probes
                .iter()
                .fold(0u32, |s, $a| s.wrapping_add($e.unwrap_or(0)))
        }
    };
}

/// Defines a function that builds the three candidates over the same prefixes of one family,
/// checks they agree on every probe, and measures them in one group.
macro_rules! compare {
    ($name:ident, $net:ty, $addr:ty, $lpm:ty, $network:path, $longest:ident) => {
        fn $name(c: &mut Criterion, title: &str, p: &[$net], probes: &[$addr]) {
            let t0 = Instant::now();
            let ours: $lpm = p.iter().enumerate().map(|(i, n)| (*n, i as u32)).collect();
            let built = t0.elapsed();
            let mut pt = prefix_trie::PrefixMap::<$net, u32>::new();
            let mut tbm = ip_network_table::IpNetworkTable::<u32>::new();
            for (i, n) in p.iter().enumerate() {
                pt.insert(*n, i as u32);
                tbm.insert(
                    <$network>::new(n.network(), n.prefix_len()).expect("canonical"),
                    i as u32,
                );
            }
            for a in probes {
                let want = tbm.$longest(*a).map(|(_, v)| *v);
                assert_eq!(ours.lookup(*a).copied(), want);
                assert_eq!(pt.get_lpm(&<$net>::from(*a)).map(|(_, v)| *v), want);
            }
            println!(
                "{title}: gatewan poptrie built in {built:?}, {} KiB",
                ours.memory_bytes() / 1024
            );
            let ledger = Ledger::new();
            let mut g = c.benchmark_group(title);
            g.bench_function("treebitmap", |b| {
                ledger.iter(
                    b,
                    "ip_network_table treebitmap",
                    lookups!(probes, |a| tbm.$longest(*a).map(|(_, v)| *v)),
                )
            });
            g.bench_function("prefix_trie", |b| {
                ledger.iter(
                    b,
                    "prefix-trie",
                    lookups!(probes, |a| pt.get_lpm(&<$net>::from(*a)).map(|(_, v)| *v)),
                )
            });
            g.bench_function("gatewan_poptrie", |b| {
                ledger.iter(
                    b,
                    "gatewan poptrie",
                    lookups!(probes, |a| ours.lookup(*a).copied()),
                )
            });
            g.finish();
            ledger.report(title, "ip_network_table treebitmap", LOOKUPS as u64, None);
        }
    };
}

compare!(
    compare_v4,
    Ipv4Net,
    Ipv4Addr,
    Ipv4Lpm<u32>,
    ip_network::Ipv4Network,
    longest_match_ipv4
);
compare!(
    compare_v6,
    Ipv6Net,
    Ipv6Addr,
    Ipv6Lpm<u32>,
    ip_network::Ipv6Network,
    longest_match_ipv6
);

/// 100k prefixes packed under one /32 (a datacenter's /48s and /64s): deep, full nodes.
fn v6_dense_prefixes(rng: &mut Rng) -> Vec<Ipv6Net> {
    let base: u128 = 0xfd05_0001u128 << 96;
    let mut seen = HashSet::new();
    while seen.len() < PREFIXES {
        let r = rng.next();
        let len = if r.is_multiple_of(4) { 48 } else { 64 };
        // 18 bits of variety below the /32 keeps the prefixes near each other.
        let a = base | (u128::from(r >> 46) << 64);
        seen.insert(
            Ipv6Net::new(Ipv6Addr::from(a), len)
                .expect("len <= 128")
                .trunc(),
        );
    }
    let mut v: Vec<_> = seen.into_iter().collect();
    v.sort();
    v
}

fn lpm(c: &mut Criterion) {
    let mut rng = Rng(0x0067_6174_6577_616e);
    let p4 = v4_prefixes(&mut rng);
    let p6 = v6_prefixes(&mut rng);
    let a4 = v4_probes(&mut rng, &p4);
    let a6 = v6_probes(&mut rng, &p6);
    compare_v4(c, "lpm_v4_100k", &p4, &a4);
    compare_v6(c, "lpm_v6_100k", &p6, &a6);
    let d6 = v6_dense_prefixes(&mut rng);
    let ad6 = v6_probes(&mut rng, &d6);
    compare_v6(c, "lpm_v6_dense_100k", &d6, &ad6);

    // The whole route decision as a worker makes it: table lookup + tunnel pick, with 64
    // tunnel groups of 4 tunnels each.
    let mut b = RouteTables::builder();
    let groups: Vec<_> = (0..64u16)
        .map(|g| {
            b.add_group_weights(
                &(0..4u16)
                    .map(|t| (TunnelId(g * 4 + t), 1 + u32::from(t)))
                    .collect::<Vec<_>>(),
            )
            .expect("valid group")
        })
        .collect();
    for (i, n) in p4.iter().enumerate() {
        b.add_remote(IpNet::V4(*n), groups[i % 64]).expect("unique");
    }
    for (i, n) in p6.iter().enumerate() {
        b.add_remote(IpNet::V6(*n), groups[i % 64]).expect("unique");
    }
    let tables = b.build();
    let hasher = FlowHasher::new(0x5eed);
    let ledger = Ledger::new();
    let mut g = c.benchmark_group("route_pick_100k");
    g.bench_function("v4_lookup_only", |bch| {
        ledger.iter(bch, "v4 lookup", || {
            a4.iter().fold(0usize, |s, a| {
                s + tables.remote_v4(*a).map_or(0, |g| g.members().len())
            })
        })
    });
    g.bench_function("v4_lookup_hash_pick", |bch| {
        ledger.iter(bch, "v4 lookup+hash+pick", || {
            a4.iter().fold(0u32, |s, a| {
                let h = hasher.hash_v4(0x0a01_0005, a.to_bits(), 6, 40000, 443);
                s.wrapping_add(tables.pick(IpAddr::V4(*a), h).map_or(0, |t| u32::from(t.0)))
            })
        })
    });
    g.bench_function("v6_lookup_hash_pick", |bch| {
        ledger.iter(bch, "v6 lookup+hash+pick", || {
            a6.iter().fold(0u32, |s, a| {
                let h = hasher.hash_v6(1, a.to_bits(), 6, 40000, 443);
                s.wrapping_add(tables.pick(IpAddr::V6(*a), h).map_or(0, |t| u32::from(t.0)))
            })
        })
    });
    g.finish();
    ledger.report(
        "Route decision, 100k prefixes per family",
        "v4 lookup",
        LOOKUPS as u64,
        None,
    );
}

fn flow_hash(c: &mut Criterion) {
    let mut rng = Rng(7);
    let tuples: Vec<(u32, u32, u16, u16)> = (0..LOOKUPS)
        .map(|_| {
            let r = rng.next();
            let s = rng.next();
            (r as u32, (r >> 32) as u32, s as u16, (s >> 16) as u16)
        })
        .collect();
    let tuples6: Vec<(u128, u128, u16, u16)> = tuples
        .iter()
        .map(|(s, d, sp, dp)| {
            (
                u128::from(*s) << 64 | 0x2001,
                u128::from(*d) << 80 | 0xfd05,
                *sp,
                *dp,
            )
        })
        .collect();
    let ours = FlowHasher::new(0x5eed);
    let fold = foldhash::fast::FixedState::with_seed(0x5eed);
    let sip = std::hash::RandomState::new();
    let ledger = Ledger::new();
    let mut g = c.benchmark_group("flow_hash");
    g.bench_function("siphash_v4", |b| {
        ledger.iter(b, "v4 std SipHash", || {
            tuples
                .iter()
                .fold(0u64, |s, t| s ^ sip.hash_one((t.0, t.1, 6u8, t.2, t.3)))
        })
    });
    g.bench_function("foldhash_v4", |b| {
        ledger.iter(b, "v4 foldhash", || {
            tuples
                .iter()
                .fold(0u64, |s, t| s ^ fold.hash_one((t.0, t.1, 6u8, t.2, t.3)))
        })
    });
    g.bench_function("gatewan_v4", |b| {
        ledger.iter(b, "v4 gatewan", || {
            tuples
                .iter()
                .fold(0u32, |s, t| s ^ ours.hash_v4(t.0, t.1, 6, t.2, t.3))
        })
    });
    g.bench_function("foldhash_v6", |b| {
        ledger.iter(b, "v6 foldhash", || {
            tuples6
                .iter()
                .fold(0u64, |s, t| s ^ fold.hash_one((t.0, t.1, 6u8, t.2, t.3)))
        })
    });
    g.bench_function("gatewan_v6", |b| {
        ledger.iter(b, "v6 gatewan", || {
            tuples6
                .iter()
                .fold(0u32, |s, t| s ^ ours.hash_v6(t.0, t.1, 6, t.2, t.3))
        })
    });
    g.finish();
    ledger.report("Flow hash", "v4 std SipHash", LOOKUPS as u64, None);
}

criterion_group!(benches, lpm, flow_hash);
criterion_main!(benches);
