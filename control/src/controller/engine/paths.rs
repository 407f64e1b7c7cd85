//! Per-tunnel state kept between cycles: health history, the weight in force and since when.
//! Slots are reused once a tunnel is forgotten, so the table stays as large as the mesh.

use std::time::Duration;

use super::tunnels::Row;
use super::{map, HashMap};
use crate::controller::dampening::PathHealth;
use crate::controller::inputs::Time;

/// State of a tunnel not reported for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub(super) struct PathState {
    gateway: String,
    tunnel: String,
    pub health: PathHealth,
    /// In the orders in force since then (None: carries no weight).
    pub in_order_since: Option<Time>,
    /// Its weight in the orders in force.
    pub weight: u32,
    pub seen_cycle: u64,
    pub last_seen: Time,
    /// Row of this cycle's tunnel table.
    pub row: u32,
}

/// The state of every tunnel known, by (gateway, tunnel id).
#[derive(Debug)]
pub(super) struct PathTable {
    index: HashMap<String, HashMap<String, u32>>,
    paths: Vec<Option<PathState>>,
    free: Vec<u32>,
    /// Weights adopted from outside for tunnels not seen yet: (gateway, tunnel) -> weight.
    pending_weights: HashMap<(String, String), u32>,
}

impl Default for PathTable {
    fn default() -> PathTable {
        PathTable {
            index: map(),
            paths: Vec::new(),
            free: Vec::new(),
            pending_weights: map(),
        }
    }
}

impl PathTable {
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut PathState> {
        self.paths.get_mut(slot as usize).and_then(|p| p.as_mut())
    }

    /// Sets the weight in force of (gateway, tunnel), kept for later if the tunnel is not
    /// known yet.
    pub fn adopt_weight(&mut self, gateway: &str, tunnel: &str, weight: u32) {
        let slot = self.index.get(gateway).and_then(|m| m.get(tunnel)).copied();
        match slot.and_then(|s| self.paths.get_mut(s as usize)) {
            Some(Some(ps)) => ps.weight = weight,
            _ => {
                self.pending_weights
                    .insert((gateway.to_string(), tunnel.to_string()), weight);
            }
        }
    }

    /// The state slot of (gateway, tunnel), created if new.
    pub fn slot(&mut self, gateway: &str, tunnel: &str, now: Time) -> u32 {
        if let Some(&s) = self.index.get(gateway).and_then(|m| m.get(tunnel)) {
            return s;
        }
        let weight = if self.pending_weights.is_empty() {
            0
        } else {
            self.pending_weights
                .remove(&(gateway.to_string(), tunnel.to_string()))
                .unwrap_or(0)
        };
        let ps = PathState {
            gateway: gateway.to_string(),
            tunnel: tunnel.to_string(),
            health: PathHealth::default(),
            // Adopted orders: in force since an unknown time, so past any dwell.
            in_order_since: (weight > 0).then_some(Time::ZERO),
            weight,
            seen_cycle: 0,
            last_seen: now,
            row: 0,
        };
        let s = match self.free.pop() {
            Some(s) => {
                if let Some(p) = self.paths.get_mut(s as usize) {
                    *p = Some(ps);
                }
                s
            }
            None => {
                self.paths.push(Some(ps));
                (self.paths.len() - 1) as u32
            }
        };
        self.index
            .entry(gateway.to_string())
            .or_default()
            .insert(tunnel.to_string(), s);
        s
    }

    /// Tunnels not reported in `cycle`: their clean stretch ends and they carry no weight;
    /// long gone, forgotten.
    pub fn sweep(&mut self, cycle: u64, now: Time) {
        for slot in 0..self.paths.len() {
            let Some(Some(ps)) = self.paths.get_mut(slot) else {
                continue;
            };
            if ps.seen_cycle == cycle {
                continue;
            }
            ps.health.absent();
            ps.in_order_since = None;
            ps.weight = 0;
            if now.since(ps.last_seen) > FORGET_AFTER {
                let (gw, id) = (ps.gateway.clone(), ps.tunnel.clone());
                if let Some(m) = self.index.get_mut(&gw) {
                    m.remove(&id);
                    if m.is_empty() {
                        self.index.remove(&gw);
                    }
                }
                if let Some(p) = self.paths.get_mut(slot) {
                    *p = None;
                }
                self.free.push(slot as u32);
            }
        }
    }

    /// Records the weights ordered this cycle (`weights`, parallel to `rows`) as the weights
    /// in force and incumbency for the next cycle. In input order: the state slots were
    /// created in that order, so this walks them mostly sequentially.
    pub fn record_weights(&mut self, rows: &[Row<'_>], weights: &[u32], now: Time) {
        for (r, w) in rows.iter().zip(weights) {
            if r.dup {
                continue;
            }
            if let Some(ps) = self.get_mut(r.slot) {
                ps.weight = *w;
                if *w > 0 {
                    ps.in_order_since.get_or_insert(now);
                } else {
                    ps.in_order_since = None;
                }
            }
        }
    }
}
