//! Worker counters: plain integers owned by the worker, published now and then into a slot
//! other threads read (as [`crate::drop::PublishedDrops`] does for drops alone).
//!
//! One flat array per worker keeps publishing a single loop of relaxed stores and reading a
//! single loop of loads, whatever the number of tunnels.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::drop::{DropCounters, DropReason};

/// Per-tunnel counters a worker keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum TunnelCounter {
    /// Data messages opened (keepalives excluded) and their inner bytes.
    RxPackets,
    RxBytes,
    /// Data messages sealed and their inner bytes.
    TxPackets,
    TxBytes,
    KeepalivesReceived,
    /// Inner packets sent on to the fabric.
    ToFabric,
}

const TUNNEL_FIELDS: usize = 6 + DropReason::COUNT;

/// Gateway-wide counters a worker keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum WorkerCounter {
    /// VXLAN packets from the fabric routed into a tunnel.
    FromFabric,
    /// Datagrams handed to the owner (handshakes, packets for the gateway, packets waiting
    /// for a session).
    HandedToOwner,
    /// ... and those dropped because the owner's queue was full.
    OwnerQueueFull,
    /// ICMP "fragmentation needed" / "packet too big" sent to the fabric.
    TooBigSent,
    /// Receive batches (the average batch is packets / batches).
    RxBatches,
    RxPackets,
    /// Datagrams the kernel refused to send (full buffers, unreachable peers).
    TxFailed,
    /// Sends that carried several datagrams at once (UDP GSO).
    GsoSends,
    /// Frames the kernel dropped before an AF_XDP worker saw them (RX ring full, fill ring
    /// empty): the worker fell behind.
    XskRxDropped,
    /// Datagrams the owner made (handshake messages, keepalives, probes, replies) that an
    /// AF_XDP worker transmitted for it.
    OwnerSent,
}

const WORKER_FIELDS: usize = 10;

fn tunnel_slot(tunnel: usize, field: usize) -> usize {
    WORKER_FIELDS + DropReason::COUNT + tunnel * TUNNEL_FIELDS + field
}

fn len(tunnels: usize) -> usize {
    WORKER_FIELDS + DropReason::COUNT + tunnels * TUNNEL_FIELDS
}

/// A worker's own counters.
#[derive(Clone, Debug)]
pub struct WorkerStats {
    values: Vec<u64>,
}

impl WorkerStats {
    pub fn new(tunnels: usize) -> Self {
        Self {
            values: vec![0; len(tunnels)],
        }
    }

    #[inline]
    fn add_at(&mut self, i: usize, n: u64) {
        if let Some(v) = self.values.get_mut(i) {
            *v = v.wrapping_add(n);
        }
    }

    #[inline]
    pub fn add(&mut self, c: WorkerCounter, n: u64) {
        self.add_at(c as usize, n);
    }

    /// Sets a counter the kernel keeps for us (a running total read now and then).
    pub fn set(&mut self, c: WorkerCounter, n: u64) {
        if let Some(v) = self.values.get_mut(c as usize) {
            *v = n;
        }
    }

    /// A gateway-wide drop (the tunnel is not known, or the packet never reached one).
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.add_at(WORKER_FIELDS + reason as usize, 1);
    }

    #[inline]
    pub fn tunnel(&mut self, tunnel: usize, c: TunnelCounter, n: u64) {
        self.add_at(tunnel_slot(tunnel, c as usize), n);
    }

    #[inline]
    pub fn tunnel_drop(&mut self, tunnel: usize, reason: DropReason) {
        self.add_at(tunnel_slot(tunnel, 6 + reason as usize), 1);
    }

    pub fn get(&self, c: WorkerCounter) -> u64 {
        self.values.get(c as usize).copied().unwrap_or(0)
    }

    pub fn get_tunnel(&self, tunnel: usize, c: TunnelCounter) -> u64 {
        self.values
            .get(tunnel_slot(tunnel, c as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Gateway-wide drops.
    pub fn drops(&self) -> DropCounters {
        let mut out = DropCounters::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            out.add(*r, self.values.get(WORKER_FIELDS + i).copied().unwrap_or(0));
        }
        out
    }

    /// Drops counted against one tunnel.
    pub fn tunnel_drops(&self, tunnel: usize) -> DropCounters {
        let mut out = DropCounters::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            let v = self
                .values
                .get(tunnel_slot(tunnel, 6 + i))
                .copied()
                .unwrap_or(0);
            out.add(*r, v);
        }
        out
    }

    /// Tunnel slot `tunnel`'s counters, for [`WorkerStats::subtract_tunnel`] later.
    pub fn tunnel_values(&self, tunnel: usize) -> Vec<u64> {
        let start = tunnel_slot(tunnel, 0);
        self.values
            .get(start..start + TUNNEL_FIELDS)
            .map_or_else(|| vec![0; TUNNEL_FIELDS], <[u64]>::to_vec)
    }

    /// Takes `base` (an earlier [`WorkerStats::tunnel_values`]) off tunnel slot `tunnel`:
    /// a slot reused by a new tunnel starts from zero.
    pub fn subtract_tunnel(&mut self, tunnel: usize, base: &[u64]) {
        let start = tunnel_slot(tunnel, 0);
        if let Some(values) = self.values.get_mut(start..start + TUNNEL_FIELDS) {
            for (v, b) in values.iter_mut().zip(base) {
                *v = v.wrapping_sub(*b);
            }
        }
    }

    /// Adds another worker's counters (same number of tunnels) to these.
    pub fn merge(&mut self, other: &WorkerStats) {
        for (a, b) in self.values.iter_mut().zip(&other.values) {
            *a = a.wrapping_add(*b);
        }
    }
}

/// Where a worker publishes its counters; padded so workers' slots do not share cache lines.
#[repr(align(128))]
#[derive(Debug)]
pub struct PublishedStats {
    values: Vec<AtomicU64>,
}

impl PublishedStats {
    pub fn new(tunnels: usize) -> Self {
        Self {
            values: (0..len(tunnels)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Stores the worker's running totals, the gateway-wide ones and those of the first
    /// `tunnels` tunnel slots (the ones the current map uses: the rest stay as they were).
    /// Only the owning worker calls this.
    pub fn publish(&self, local: &WorkerStats, tunnels: usize) {
        let n = len(tunnels);
        for (slot, v) in self.values.iter().zip(&local.values).take(n) {
            slot.store(*v, Ordering::Relaxed);
        }
    }

    /// Tunnel slot `tunnel`'s counters as last published (as [`WorkerStats::tunnel_values`]).
    pub fn tunnel_values(&self, tunnel: usize) -> Vec<u64> {
        let start = tunnel_slot(tunnel, 0);
        (start..start + TUNNEL_FIELDS)
            .map(|i| self.values.get(i).map_or(0, |v| v.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            values: self
                .values
                .iter()
                .map(|v| v.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_land_in_their_own_slots_and_publish() {
        let mut s = WorkerStats::new(3);
        s.add(WorkerCounter::HandedToOwner, 2);
        s.drop(DropReason::WrongVni);
        s.tunnel(2, TunnelCounter::TxBytes, 1400);
        s.tunnel_drop(1, DropReason::Replay);
        s.tunnel_drop(1, DropReason::Replay);
        // Out of range is ignored, never a panic.
        s.tunnel(9, TunnelCounter::TxBytes, 1);
        let p = PublishedStats::new(3);
        p.publish(&s, 3);
        let mut total = p.snapshot();
        total.merge(&s);
        assert_eq!(total.get(WorkerCounter::HandedToOwner), 4);
        assert_eq!(total.drops().get(DropReason::WrongVni), 2);
        assert_eq!(total.drops().total(), 2);
        assert_eq!(total.get_tunnel(2, TunnelCounter::TxBytes), 2800);
        assert_eq!(total.get_tunnel(1, TunnelCounter::TxBytes), 0);
        assert_eq!(total.tunnel_drops(1).get(DropReason::Replay), 4);
        assert_eq!(total.tunnel_drops(0).total(), 0);
    }

    #[test]
    fn publishing_fewer_slots_leaves_the_rest_and_a_reused_slot_starts_from_its_base() {
        let mut s = WorkerStats::new(4);
        s.tunnel(1, TunnelCounter::RxPackets, 5);
        s.tunnel(3, TunnelCounter::RxPackets, 7);
        let p = PublishedStats::new(4);
        p.publish(&s, 2);
        let seen = p.snapshot();
        assert_eq!(seen.get_tunnel(1, TunnelCounter::RxPackets), 5);
        assert_eq!(seen.get_tunnel(3, TunnelCounter::RxPackets), 0);
        let base = seen.tunnel_values(1);
        assert_eq!(
            p.tunnel_values(1),
            base,
            "read in place, the same as from a snapshot"
        );
        s.tunnel(1, TunnelCounter::RxPackets, 2);
        p.publish(&s, 4);
        let mut now = p.snapshot();
        now.subtract_tunnel(1, &base);
        assert_eq!(now.get_tunnel(1, TunnelCounter::RxPackets), 2);
        assert_eq!(now.get_tunnel(3, TunnelCounter::RxPackets), 7);
    }
}
