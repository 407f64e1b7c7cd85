//! A compiled, read-only longest-prefix-match table after Poptrie (Asai & Ohara, SIGCOMM 2015):
//! a direct-indexed first level of [`DIRECT_BITS`] bits, then 64-ary nodes whose children and
//! leaves are compressed with popcount over two 64-bit bitmaps, and leaf pushing, so a lookup is
//! one array read plus one node per further 6 bits, with no backtracking.
//!
//! Why hand-written: gatewan's tables are built whole by the control side and swapped in, never
//! updated in place, so a structure compiled for lookups fits, and the crates measured
//! (bench/benches/route.rs, docs/routing.md) walk 5-bit tree-bitmap levels from the root with
//! backtracking, which missed the per-packet budget at 100k prefixes.
//!
//! Keys are addresses left-aligned in a `u128` (IPv4 in the top 32 bits), so one
//! implementation serves both families.

/// Bits resolved by the direct-indexed first level (65536 entries).
pub const DIRECT_BITS: u32 = 16;
const STRIDE: u32 = 6;
/// Marks a direct entry as a leaf (value index in the low bits) rather than a node index.
const LEAF: u32 = 1 << 31;
/// "No route" value index.
const NONE: u32 = LEAF - 1;
/// Marks a node as a compressed single prefix (in `base1`).
const SINGLE: u32 = 1 << 31;
/// Marks a node as a skip over bits every prefix below shares (in `base1`).
const SKIP: u32 = 1 << 30;

/// A 64-ary node, or one of two path-compression nodes (flag in `base1`), so chains of
/// one-child nodes cost one comparison instead of one node per 6 bits:
/// - `SINGLE`: the subtree holds a single prefix, stored inline as its bits below this level;
/// - `SKIP`: every prefix below shares the next `base0` bits and none ends inside them; compare
///   them and continue at the one child.
#[derive(Clone, Copy, Debug, Default)]
struct Node {
    /// Bit i: position i has a child node. Single: the prefix's next 64 bits.
    vector: u64,
    /// Bit i: position i starts a run of equal leaves (only leaf positions count).
    /// Single: value index << 32 | default value index. Skip: child << 32 | default.
    leafvec: u64,
    /// First leaf of this node in `leaves`. Single: prefix bits left to compare (1..=64).
    /// Skip: bits skipped (STRIDE..=64).
    base0: u32,
    /// First child of this node in `nodes`, or `SINGLE` or `SKIP`.
    base1: u32,
}

/// `STRIDE` bits of `key` starting at bit `off` (from the top), zero past the end.
#[inline(always)]
fn chunk(key: u128, off: u32, len: u32) -> usize {
    (key.checked_shl(off).unwrap_or(0) >> (128 - len)) as usize
}

/// 64 bits of `key` starting at bit `off` (from the top), zero past the end.
#[inline(always)]
fn bits64(key: u128, off: u32) -> u64 {
    (key.checked_shl(off).unwrap_or(0) >> 64) as u64
}

/// Mask of bits 0..=i.
#[inline(always)]
fn upto(i: usize) -> u64 {
    (2u64 << i).wrapping_sub(1)
}

/// A compiled table from prefixes to values of type `V`.
#[derive(Clone, Debug)]
pub struct Poptrie<V> {
    direct: Box<[u32]>,
    nodes: Vec<Node>,
    leaves: Vec<u32>,
    values: Vec<V>,
}

/// (key left-aligned, prefix length, value index)
type Entry = (u128, u8, u32);

impl<V> Poptrie<V> {
    /// Compiles `prefixes` (key left-aligned in a u128, length, value). Keys must have their
    /// host bits cleared and be unique per length; the caller (the LPM wrappers) ensures it.
    pub fn build(prefixes: Vec<(u128, u8, V)>) -> Self {
        let mut entries: Vec<Entry> = Vec::with_capacity(prefixes.len());
        let mut values = Vec::with_capacity(prefixes.len());
        for (i, (k, l, v)) in prefixes.into_iter().enumerate() {
            entries.push((k, l.min(128), i as u32));
            values.push(v);
        }
        entries.sort_unstable();
        let mut t = Self {
            direct: vec![LEAF | NONE; 1 << DIRECT_BITS].into_boxed_slice(),
            nodes: Vec::new(),
            leaves: Vec::new(),
            values,
        };
        t.build_direct(&entries);
        t.nodes.shrink_to_fit();
        t.leaves.shrink_to_fit();
        t
    }

    fn build_direct(&mut self, entries: &[Entry]) {
        // Paint prefixes no longer than the direct level, shortest first, so longer ones win.
        let mut locals: Vec<&Entry> = entries
            .iter()
            .filter(|e| u32::from(e.1) <= DIRECT_BITS)
            .collect();
        locals.sort_by_key(|e| e.1);
        let mut paint = vec![NONE; 1 << DIRECT_BITS];
        for (k, l, v) in locals {
            let first = chunk(*k, 0, DIRECT_BITS);
            let span = 1usize << (DIRECT_BITS - u32::from(*l));
            if let Some(s) = paint.get_mut(first..first + span) {
                s.fill(*v);
            }
        }
        // Deeper prefixes, grouped by their first DIRECT_BITS bits (entries are sorted).
        let deep: Vec<Entry> = entries
            .iter()
            .filter(|e| u32::from(e.1) > DIRECT_BITS)
            .copied()
            .collect();
        let same = |a: &Entry, b: &Entry| chunk(a.0, 0, DIRECT_BITS) == chunk(b.0, 0, DIRECT_BITS);
        for group in deep.chunk_by(same) {
            let pos = group.first().map_or(0, |e| chunk(e.0, 0, DIRECT_BITS));
            let default = paint.get(pos).copied().unwrap_or(NONE);
            let at = self.nodes.len();
            self.nodes.push(Node::default());
            self.build_node(at, group, DIRECT_BITS, default);
            if let Some(d) = self.direct.get_mut(pos) {
                *d = at as u32;
            }
        }
        for (d, p) in self.direct.iter_mut().zip(paint) {
            if *d & LEAF != 0 {
                *d = LEAF | p;
            }
        }
    }

    /// Fills node `at`, covering bits `off..off+STRIDE`, from `entries` (all longer than
    /// `off`, all inside this node's range, sorted); `default` is the value inherited from
    /// shorter prefixes.
    fn build_node(&mut self, at: usize, entries: &[Entry], off: u32, default: u32) {
        if let [(k, l, v)] = entries {
            let rest = u32::from(*l) - off;
            if rest <= 64 {
                if let Some(n) = self.nodes.get_mut(at) {
                    *n = Node {
                        vector: bits64(*k, off),
                        leafvec: (u64::from(*v) << 32) | u64::from(default),
                        base0: rest,
                        base1: SINGLE,
                    };
                }
                return;
            }
        }
        // Bits all entries share below `off`, up to the shortest entry's end: a skip over them
        // replaces that many levels of one-child nodes.
        let shared = entries.iter().fold(64u32, |acc, e| {
            let first = entries.first().map_or(0, |f| f.0);
            let common = (bits64(e.0, off) ^ bits64(first, off)).leading_zeros();
            acc.min(common).min(u32::from(e.1) - off)
        });
        // An entry ending exactly at off + shared must be painted by a real node, so stop one
        // bit short of the shortest entry's end.
        let min_rest = entries
            .iter()
            .map(|e| u32::from(e.1) - off)
            .min()
            .unwrap_or(0);
        let skip = shared.min(min_rest.saturating_sub(1));
        if skip >= STRIDE && !entries.is_empty() {
            let child = self.nodes.len();
            self.nodes.push(Node::default());
            if let Some(n) = self.nodes.get_mut(at) {
                *n = Node {
                    vector: entries.first().map_or(0, |f| bits64(f.0, off)),
                    leafvec: ((child as u64) << 32) | u64::from(default),
                    base0: skip,
                    base1: SKIP,
                };
            }
            self.build_node(child, entries, off + skip, default);
            return;
        }
        let end = off + STRIDE;
        let mut paint = [default; 64];
        let mut locals: Vec<&Entry> = entries.iter().filter(|e| u32::from(e.1) <= end).collect();
        locals.sort_by_key(|e| e.1);
        for (k, l, v) in locals {
            let first = chunk(*k, off, STRIDE);
            let span = 1usize << (end - u32::from(*l));
            if let Some(s) = paint.get_mut(first..first + span) {
                s.fill(*v);
            }
        }
        // Child ranges: deeper entries grouped by position (entries are sorted).
        let deep: Vec<Entry> = entries
            .iter()
            .filter(|e| u32::from(e.1) > end)
            .copied()
            .collect();
        let same = |a: &Entry, b: &Entry| chunk(a.0, off, STRIDE) == chunk(b.0, off, STRIDE);
        let groups: Vec<(usize, &[Entry])> = deep
            .chunk_by(same)
            .map(|g| (g.first().map_or(0, |e| chunk(e.0, off, STRIDE)), g))
            .collect();
        let mut node = Node {
            base0: self.leaves.len() as u32,
            base1: self.nodes.len() as u32,
            ..Node::default()
        };
        for (pos, _) in &groups {
            node.vector |= 1 << pos;
        }
        let mut last: Option<u32> = None;
        for (pos, v) in paint.iter().enumerate() {
            if node.vector & (1 << pos) != 0 {
                continue;
            }
            if last != Some(*v) {
                node.leafvec |= 1 << pos;
                self.leaves.push(*v);
                last = Some(*v);
            }
        }
        // Children are contiguous: reserve them all, then fill each.
        let first_child = self.nodes.len();
        self.nodes
            .extend(std::iter::repeat_n(Node::default(), groups.len()));
        if let Some(n) = self.nodes.get_mut(at) {
            *n = node;
        }
        for (c, (pos, group)) in groups.into_iter().enumerate() {
            let d = paint.get(pos).copied().unwrap_or(default);
            self.build_node(first_child + c, group, end, d);
        }
    }

    /// The value of the longest prefix containing `key`.
    #[inline]
    pub fn lookup(&self, key: u128) -> Option<&V> {
        let idx = self.lookup_index(key);
        self.values.get(idx as usize)
    }

    #[inline]
    fn lookup_index(&self, key: u128) -> u32 {
        let Some(&e) = self.direct.get(chunk(key, 0, DIRECT_BITS)) else {
            return NONE;
        };
        if e & LEAF != 0 {
            return e & !LEAF;
        }
        let mut node = match self.nodes.get(e as usize) {
            Some(n) => n,
            None => return NONE,
        };
        let mut off = DIRECT_BITS;
        loop {
            if node.base1 == SKIP {
                // skip is STRIDE..=64, so the shift is 0..=58.
                let diff = bits64(key, off) ^ node.vector;
                if diff >> (64 - node.base0.clamp(1, 64)) != 0 {
                    return node.leafvec as u32;
                }
                off += node.base0;
                node = match self.nodes.get((node.leafvec >> 32) as usize) {
                    Some(n) => n,
                    None => return NONE,
                };
                continue;
            }
            if node.base1 == SINGLE {
                // rest is 1..=64, so the shift is 0..=63.
                let diff = bits64(key, off) ^ node.vector;
                let hit = diff >> (64 - node.base0.clamp(1, 64)) == 0;
                return if hit {
                    (node.leafvec >> 32) as u32
                } else {
                    node.leafvec as u32
                };
            }
            let pos = chunk(key, off, STRIDE);
            let mask = upto(pos);
            if node.vector & (1 << pos) != 0 {
                let i = node.base1 as usize + (node.vector & mask).count_ones() as usize - 1;
                node = match self.nodes.get(i) {
                    Some(n) => n,
                    None => return NONE,
                };
                off += STRIDE;
            } else {
                let i = node.base0 as usize + (node.leafvec & mask).count_ones() as usize - 1;
                return self.leaves.get(i).copied().unwrap_or(NONE);
            }
        }
    }

    pub fn values(&self) -> &[V] {
        &self.values
    }

    /// Bytes used by the lookup structure (not counting values).
    pub fn memory_bytes(&self) -> usize {
        self.direct.len() * 4
            + self.nodes.len() * std::mem::size_of::<Node>()
            + self.leaves.len() * 4
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: u32) -> u128 {
        u128::from(a) << 96
    }

    fn p4(a: [u8; 4], l: u8) -> (u128, u8) {
        (v4(u32::from_be_bytes(a)), l)
    }

    #[test]
    fn small_table() {
        let t = Poptrie::build(vec![
            (p4([0, 0, 0, 0], 0).0, 0, "default"),
            (p4([10, 0, 0, 0], 8).0, 8, "10/8"),
            (p4([10, 176, 0, 0], 14).0, 14, "10.176/14"),
            (p4([10, 177, 3, 0], 24).0, 24, "10.177.3/24"),
            (p4([10, 177, 3, 7], 32).0, 32, "host"),
            (p4([10, 177, 3, 64], 26).0, 26, "/26"),
        ]);
        let q = |a: [u8; 4]| *t.lookup(v4(u32::from_be_bytes(a))).unwrap();
        assert_eq!(q([10, 177, 3, 7]), "host");
        assert_eq!(q([10, 177, 3, 6]), "10.177.3/24");
        assert_eq!(q([10, 177, 3, 8]), "10.177.3/24");
        assert_eq!(q([10, 177, 3, 65]), "/26");
        assert_eq!(q([10, 177, 3, 128]), "10.177.3/24");
        assert_eq!(q([10, 178, 0, 1]), "10.176/14");
        assert_eq!(q([10, 180, 0, 1]), "10/8");
        assert_eq!(q([192, 0, 2, 1]), "default");
        let empty: Poptrie<u8> = Poptrie::build(vec![]);
        assert_eq!(empty.lookup(v4(1)), None);
        let host_only = Poptrie::build(vec![(v4(0xffff_ffff), 32, 1u8)]);
        assert_eq!(host_only.lookup(v4(0xffff_ffff)), Some(&1));
        assert_eq!(host_only.lookup(v4(0xffff_fffe)), None);
        let v6_host = Poptrie::build(vec![(u128::MAX, 128, 1u8), (0, 1, 2)]);
        assert_eq!(v6_host.lookup(u128::MAX), Some(&1));
        assert_eq!(v6_host.lookup(u128::MAX - 1), None);
        assert_eq!(v6_host.lookup(5), Some(&2));
    }

    fn naive(prefixes: &[(u128, u8)], k: u128) -> Option<usize> {
        prefixes
            .iter()
            .enumerate()
            .filter(|(_, (p, l))| *l == 0 || (k ^ p) >> (128 - u32::from(*l)) == 0)
            .max_by_key(|(_, (_, l))| *l)
            .map(|(i, _)| i)
    }

    fn canon(k: u128, l: u8) -> u128 {
        if l == 0 {
            0
        } else {
            k & (u128::MAX << (128 - u32::from(l)))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn matches_linear_scan(
            raw in proptest::collection::vec((any::<u128>(), 0u8..=128), 1..80),
            probes in proptest::collection::vec((any::<u128>(), 0u32..128), 1..80),
            cluster in prop_oneof![Just(0u32), 1u32..100],
        ) {
            // Clustered: all keys share their top `cluster` bits (and most prefixes are longer
            // than that), so nodes get deep and full and skips get long.
            let top = 0xfd05_f00d_cafe_0000_1234_5678_9abc_def0u128;
            let mut prefixes: Vec<(u128, u8)> = Vec::new();
            for (k, l) in raw {
                let k = match cluster {
                    0 => k,
                    c => (top & (u128::MAX << (128 - c))) | (k >> c),
                };
                let p = (canon(k, l), l);
                if !prefixes.contains(&p) { prefixes.push(p); }
            }
            let t = Poptrie::build(prefixes.iter().enumerate().map(|(i, (k, l))| (*k, *l, i)).collect());
            for (n, (r, shift)) in probes.iter().enumerate() {
                // Probe near a prefix: flip some low bits of its key.
                let base = prefixes[n % prefixes.len()].0;
                let k = base ^ (r.checked_shr(*shift).unwrap_or(0));
                prop_assert_eq!(t.lookup(k).copied(), naive(&prefixes, k), "key {:x}", k);
                prop_assert_eq!(t.lookup(base).copied(), naive(&prefixes, base));
            }
        }
    }
}
