//! A seeded, time-stepped simulator of a gatewan deployment around one [`Controller`]:
//! datacenters with gateways and transits, tunnels probed every second through a sliding
//! window, demand that moves traffic over the orders the gateways hold, and transits that
//! blackhole, go down, brown out (loss, latency steps), recover, flap, and fill up with
//! background traffic as demand grows.
//!
//! Same scenario and seed, same run: every random draw comes from one ChaCha stream consumed
//! in a fixed order. The named scenarios ([`scenario`]) back the controller's tests and
//! `gatewan controller simulate NAME`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::engine::Controller;
use super::explain::Explanation;
use super::inputs::{
    Datacenter, DatacenterPrefixes, Demand, Endpoint, Gateway, GatewayTransit, MacAddr,
    ProbeWindow, Rate, Snapshot, Time, TransitUsage, TunnelReport, TunnelState,
};
use super::orders::{BgpctlOrder, GatewayOrder, Orders, Receiver};
use super::policy::{Cost, Policy, PolicyFile, TransitOverride};

/// Probes per second per tunnel, and the window the gateways report over.
const PROBES_PER_S: u32 = 50;
const WINDOW_S: usize = 10;
/// Gateways drop a tunnel from their own forwarding once this many probes die in a row (fast
/// local repair, before any controller cycle).
const LOCAL_REPAIR_LOST: u32 = 5;

#[derive(Clone, Debug, PartialEq)]
pub struct TransitSpec {
    pub name: String,
    pub capacity: Rate,
    /// RTT this provider adds at each end it is used on.
    pub latency_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DcSpec {
    pub name: String,
    pub gateways: u32,
    pub transits: Vec<TransitSpec>,
    pub prefixes: Vec<IpNet>,
}

/// Where a fault applies.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// One gateway's port to one provider.
    Port { gateway: String, transit: String },
    /// A provider in a datacenter: every gateway's port to it.
    Transit { datacenter: String, transit: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Packets vanish; WireGuard still looks established.
    Blackhole,
    /// The port is down: tunnels over it are not established.
    Down,
    /// Extra random loss, in percent.
    LossPct(f64),
    /// RTT multiplied by this.
    LatencyFactor(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub from_s: u64,
    /// None: for the rest of the run.
    pub until_s: Option<u64>,
    pub target: Target,
    pub kind: FaultKind,
}

/// A rate that changes over time: linear between points, flat outside them.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile(pub Vec<(u64, Rate)>);

impl Profile {
    pub fn flat(r: Rate) -> Profile {
        Profile(vec![(0, r)])
    }

    pub fn at(&self, t: f64) -> f64 {
        let pts = &self.0;
        let Some(first) = pts.first() else {
            return 0.0;
        };
        if t <= first.0 as f64 {
            return first.1.as_bps();
        }
        for w in pts.windows(2) {
            let ((t0, r0), (t1, r1)) = (w[0], w[1]);
            if t <= t1 as f64 {
                let span = (t1 - t0).max(1) as f64;
                let x = (t - t0 as f64) / span;
                return r0.as_bps() + (r1.as_bps() - r0.as_bps()) * x;
            }
        }
        pts.last().map_or(0.0, |p| p.1.as_bps())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DemandSpec {
    pub from: String,
    pub to: String,
    pub rate: Profile,
}

/// Non-gatewan traffic on a port, both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct BackgroundSpec {
    pub gateway: String,
    pub transit: String,
    pub rate: Profile,
}

/// Measurement noise.
#[derive(Clone, Debug, PartialEq)]
pub struct Noise {
    /// Per-second RTT samples vary by up to this, +-, in percent.
    pub latency_pct: f64,
    /// Every probe is lost with this probability, in percent.
    pub loss_pct: f64,
    /// Measured demand and background vary by up to this, +-, in percent.
    pub rate_pct: f64,
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            latency_pct: 5.0,
            loss_pct: 0.01,
            rate_pct: 2.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub duration_s: u64,
    pub datacenters: Vec<DcSpec>,
    /// Base RTT between datacenters (either order); 40 ms when not given.
    pub rtt_ms: Vec<(String, String, f64)>,
    pub policy: Policy,
    pub faults: Vec<Fault>,
    pub demand: Vec<DemandSpec>,
    pub background: Vec<BackgroundSpec>,
    pub noise: Noise,
}

/// One controller cycle as the simulator saw it.
#[derive(Clone, Debug, Serialize)]
pub struct CycleRecord {
    pub at: Time,
    pub orders: Orders,
    #[serde(skip)]
    pub explanation: Option<Explanation>,
    #[serde(skip)]
    pub snapshot: Option<Snapshot>,
    /// Port usage at that moment, `gateway/transit` -> (tx, rx) in bps.
    pub usage: BTreeMap<String, (f64, f64)>,
    /// Demand no gateway could carry at that moment (no attracting gateway or no live tunnel).
    pub undelivered_bps: f64,
}

struct SimPort {
    gateway: String,
    dc: String,
    transit: String,
    latency_ms: f64,
    tx: f64,
    rx: f64,
    sdwan_tx: f64,
    sdwan_rx: f64,
}

struct SimTunnel {
    id: String,
    local: usize,
    remote: usize,
    local_gw: String,
    base_rtt_ms: f64,
    /// Per second: (sent, lost, median RTT of the received).
    window: VecDeque<(u32, u32, f64)>,
    lost_in_a_row: u32,
    state: TunnelState,
}

/// The simulator.
pub struct Sim {
    sc: Scenario,
    rng: ChaCha8Rng,
    controller: Controller,
    gateways: Vec<Gateway>,
    ports: Vec<SimPort>,
    tunnels: Vec<SimTunnel>,
    by_gw_tunnel: HashMap<(String, String), usize>,
    gw_receivers: BTreeMap<String, Receiver<GatewayOrder>>,
    bgp_receivers: BTreeMap<String, Receiver<BgpctlOrder>>,
    now_s: u64,
    undelivered: f64,
    record_snapshots: bool,
    pub trace: Vec<CycleRecord>,
}

fn gateway_name(dc: &str, i: u32) -> String {
    format!("{dc}-gw{i}")
}

impl Sim {
    pub fn new(sc: Scenario) -> Sim {
        let rng = ChaCha8Rng::seed_from_u64(sc.seed);
        let mut controller = Controller::new("sim-controller", sc.policy.clone());
        controller.set_explain(true);
        let mut gateways = Vec::new();
        let mut ports = Vec::new();
        for (di, dc) in sc.datacenters.iter().enumerate() {
            for i in 1..=dc.gateways {
                let id = gateway_name(&dc.name, i);
                gateways.push(Gateway {
                    id: id.clone(),
                    datacenter: dc.name.clone(),
                    vtep: IpAddr::V4(Ipv4Addr::new(10, di as u8, 0, i as u8)),
                    router_mac: MacAddr([0x02, 0, 0, di as u8, 0, i as u8]),
                    live: true,
                    transits: dc
                        .transits
                        .iter()
                        .map(|t| GatewayTransit {
                            name: t.name.clone(),
                            capacity: t.capacity,
                        })
                        .collect(),
                });
                for t in &dc.transits {
                    ports.push(SimPort {
                        gateway: id.clone(),
                        dc: dc.name.clone(),
                        transit: t.name.clone(),
                        latency_ms: t.latency_ms,
                        tx: 0.0,
                        rx: 0.0,
                        sdwan_tx: 0.0,
                        sdwan_rx: 0.0,
                    });
                }
            }
        }
        let rtt = |a: &str, b: &str| {
            sc.rtt_ms
                .iter()
                .find(|(x, y, _)| (x == a && y == b) || (x == b && y == a))
                .map_or(40.0, |r| r.2)
        };
        let mut tunnels = Vec::new();
        for (li, lp) in ports.iter().enumerate() {
            for (ri, rp) in ports.iter().enumerate() {
                if lp.dc == rp.dc {
                    continue;
                }
                let a = format!("{}.{}", lp.gateway, lp.transit);
                let b = format!("{}.{}", rp.gateway, rp.transit);
                let id = if a < b {
                    format!("{a}~{b}")
                } else {
                    format!("{b}~{a}")
                };
                tunnels.push(SimTunnel {
                    id,
                    local: li,
                    remote: ri,
                    local_gw: lp.gateway.clone(),
                    base_rtt_ms: rtt(&lp.dc, &rp.dc) + lp.latency_ms + rp.latency_ms,
                    window: VecDeque::with_capacity(WINDOW_S + 1),
                    lost_in_a_row: 0,
                    state: TunnelState::Established,
                });
            }
        }
        let by_gw_tunnel = tunnels
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.local_gw.clone(), t.id.clone()), i))
            .collect();
        let gw_receivers = gateways
            .iter()
            .map(|g| (g.id.clone(), Receiver::new(g.id.clone())))
            .collect();
        let bgp_receivers = sc
            .datacenters
            .iter()
            .map(|d| (d.name.clone(), Receiver::new(d.name.clone())))
            .collect();
        Sim {
            sc,
            rng,
            controller,
            gateways,
            ports,
            tunnels,
            by_gw_tunnel,
            gw_receivers,
            bgp_receivers,
            now_s: 0,
            undelivered: 0.0,
            record_snapshots: false,
            trace: Vec::new(),
        }
    }

    /// Keep each cycle's input snapshot in the trace (for determinism tests and examples).
    pub fn record_snapshots(&mut self, on: bool) {
        self.record_snapshots = on;
    }

    pub fn scenario(&self) -> &Scenario {
        &self.sc
    }

    pub fn now(&self) -> Time {
        Time::from_secs(self.now_s)
    }

    /// Tunnel ids whose either end is `gateway`'s port to `transit`.
    pub fn tunnels_via(&self, gateway: &str, transit: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .tunnels
            .iter()
            .filter(|t| {
                [t.local, t.remote].iter().any(|&p| {
                    self.ports
                        .get(p)
                        .is_some_and(|p| p.gateway == gateway && p.transit == transit)
                })
            })
            .map(|t| t.id.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A draw in [-1, 1].
    fn signed(&mut self) -> f64 {
        self.uniform() * 2.0 - 1.0
    }

    /// Lost probes out of `n` with loss probability `p`, from one uniform draw (inverse CDF).
    fn binomial(&mut self, n: u32, p: f64) -> u32 {
        if p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        let u = self.uniform();
        let q = 1.0 - p;
        let mut pmf = q.powi(n as i32);
        let mut cdf = pmf;
        let mut k = 0;
        while u > cdf && k < n {
            pmf *= (f64::from(n - k) / f64::from(k + 1)) * (p / q);
            k += 1;
            cdf += pmf;
        }
        k
    }

    fn faults_on(&self, port: usize, t: u64) -> Vec<FaultKind> {
        let Some(p) = self.ports.get(port) else {
            return Vec::new();
        };
        self.sc
            .faults
            .iter()
            .filter(|f| t >= f.from_s && f.until_s.is_none_or(|u| t < u))
            .filter(|f| match &f.target {
                Target::Port { gateway, transit } => *gateway == p.gateway && *transit == p.transit,
                Target::Transit {
                    datacenter,
                    transit,
                } => *datacenter == p.dc && *transit == p.transit,
            })
            .map(|f| f.kind.clone())
            .collect()
    }

    /// Advances one second: probes, then traffic; a controller cycle when one is due.
    pub fn tick(&mut self) {
        self.now_s += 1;
        let t = self.now_s;
        // Probes.
        let noise = self.sc.noise.clone();
        for i in 0..self.tunnels.len() {
            let (local, remote, base) = {
                let tn = &self.tunnels[i];
                (tn.local, tn.remote, tn.base_rtt_ms)
            };
            let mut faults = self.faults_on(local, t);
            faults.extend(self.faults_on(remote, t));
            let mut down = false;
            let mut keep = 1.0 - noise.loss_pct / 100.0;
            let mut rtt = base;
            for f in &faults {
                match f {
                    FaultKind::Blackhole => keep = 0.0,
                    FaultKind::Down => down = true,
                    FaultKind::LossPct(l) => keep *= 1.0 - l / 100.0,
                    FaultKind::LatencyFactor(x) => rtt *= x,
                }
            }
            let lost = self.binomial(PROBES_PER_S, 1.0 - keep);
            let sample = rtt * (1.0 + noise.latency_pct / 100.0 * self.signed());
            let tn = &mut self.tunnels[i];
            if down {
                tn.state = TunnelState::Down;
                tn.window.clear();
                tn.lost_in_a_row = 0;
                continue;
            }
            tn.state = TunnelState::Established;
            tn.window.push_back((
                PROBES_PER_S,
                lost,
                if lost < PROBES_PER_S {
                    sample
                } else {
                    f64::NAN
                },
            ));
            while tn.window.len() > WINDOW_S {
                tn.window.pop_front();
            }
            tn.lost_in_a_row = if lost == PROBES_PER_S {
                tn.lost_in_a_row.saturating_add(lost)
            } else {
                0
            };
        }
        self.move_traffic();
        let period = self.sc.policy.cycle_period().as_secs().max(1);
        if t.is_multiple_of(period) {
            self.cycle();
        }
    }

    /// Spreads demand over the orders the gateways hold, and adds background traffic.
    fn move_traffic(&mut self) {
        let t = self.now_s as f64;
        let noise = self.sc.noise.rate_pct / 100.0;
        for p in self.ports.iter_mut() {
            p.sdwan_tx = 0.0;
            p.sdwan_rx = 0.0;
        }
        let mut undelivered = 0.0;
        let demands = self.sc.demand.clone();
        for d in &demands {
            let rate = d.rate.at(t);
            if rate <= 0.0 {
                continue;
            }
            let attracting: Vec<String> = self
                .bgp_receivers
                .get(&d.from)
                .and_then(|r| r.current())
                .and_then(|o| o.routes.iter().find(|r| r.datacenter == d.to))
                .map(|r| r.gateways.iter().map(|g| g.gateway.clone()).collect())
                .unwrap_or_default();
            if attracting.is_empty() {
                undelivered += rate;
                continue;
            }
            let per_gw = rate / attracting.len() as f64;
            for gw in &attracting {
                let order: Vec<(usize, f64)> = self
                    .gw_receivers
                    .get(gw)
                    .and_then(|r| r.current())
                    .and_then(|o| o.remotes.get(&d.to))
                    .map(|ts| {
                        ts.iter()
                            .filter_map(|tw| {
                                let i = *self.by_gw_tunnel.get(&(gw.clone(), tw.tunnel.clone()))?;
                                let tn = self.tunnels.get(i)?;
                                // Fast local repair: the gateway skips dead tunnels itself.
                                let alive = tn.state == TunnelState::Established
                                    && tn.lost_in_a_row < LOCAL_REPAIR_LOST;
                                alive.then_some((i, f64::from(tw.weight)))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let total: f64 = order.iter().map(|(_, w)| w).sum();
                if total <= 0.0 {
                    undelivered += per_gw;
                    continue;
                }
                for (i, w) in order {
                    let r = per_gw * w / total;
                    let (l, rm) = (self.tunnels[i].local, self.tunnels[i].remote);
                    if let Some(p) = self.ports.get_mut(l) {
                        p.sdwan_tx += r;
                    }
                    if let Some(p) = self.ports.get_mut(rm) {
                        p.sdwan_rx += r;
                    }
                }
            }
        }
        self.undelivered = undelivered;
        let bgs = self.sc.background.clone();
        for i in 0..self.ports.len() {
            let (gw, tr) = (self.ports[i].gateway.clone(), self.ports[i].transit.clone());
            let bg: f64 = bgs
                .iter()
                .filter(|b| b.gateway == gw && b.transit == tr)
                .map(|b| b.rate.at(t))
                .sum();
            let jitter_tx = 1.0 + noise * self.signed();
            let jitter_rx = 1.0 + noise * self.signed();
            let p = &mut self.ports[i];
            p.tx = p.sdwan_tx + bg * jitter_tx;
            p.rx = p.sdwan_rx + bg * jitter_rx;
        }
    }

    /// The controller's inputs now.
    pub fn snapshot(&mut self) -> Snapshot {
        let t = self.now_s as f64;
        let noise = self.sc.noise.rate_pct / 100.0;
        let tunnels = self
            .tunnels
            .iter()
            .map(|tn| {
                let ports = &self.ports;
                let port = |i: usize| {
                    ports.get(i).map_or(
                        Endpoint {
                            gateway: String::new(),
                            transit: String::new(),
                        },
                        |p| Endpoint {
                            gateway: p.gateway.clone(),
                            transit: p.transit.clone(),
                        },
                    )
                };
                TunnelReport {
                    id: tn.id.clone(),
                    local: port(tn.local),
                    remote: port(tn.remote),
                    state: tn.state,
                    probe: window_stats(&tn.window, tn.lost_in_a_row),
                }
            })
            .collect();
        let transit_usage = self
            .ports
            .iter()
            .map(|p| TransitUsage {
                gateway: p.gateway.clone(),
                transit: p.transit.clone(),
                rx: Rate::bps(p.rx),
                tx: Rate::bps(p.tx),
                sdwan_rx: Rate::bps(p.sdwan_rx),
                sdwan_tx: Rate::bps(p.sdwan_tx),
            })
            .collect();
        let demand_specs = self.sc.demand.clone();
        let mut demand = Vec::new();
        for d in &demand_specs {
            let r = d.rate.at(t) * (1.0 + noise * self.signed());
            demand.push(Demand {
                from: d.from.clone(),
                to: d.to.clone(),
                rate: Rate::bps(r),
            });
        }
        Snapshot {
            membership: Default::default(),
            datacenters: self
                .sc
                .datacenters
                .iter()
                .map(|d| Datacenter {
                    name: d.name.clone(),
                })
                .collect(),
            gateways: self.gateways.clone(),
            tunnels,
            transit_usage,
            demand,
            prefixes: self
                .sc
                .datacenters
                .iter()
                .map(|d| DatacenterPrefixes {
                    datacenter: d.name.clone(),
                    prefixes: d.prefixes.clone(),
                })
                .collect(),
        }
    }

    fn cycle(&mut self) {
        let snap = self.snapshot();
        let now = self.now();
        let cycle = self.controller.step(now, &snap);
        if cycle.orders.authoritative {
            for (gw, o) in &cycle.orders.gateways {
                if let Some(r) = self.gw_receivers.get_mut(gw) {
                    let reply = r.offer(o.clone(), |_| Ok(()));
                    self.controller.on_reply(gw, &reply);
                }
            }
            for (dc, o) in &cycle.orders.bgpctl {
                if let Some(r) = self.bgp_receivers.get_mut(dc) {
                    let reply = r.offer(o.clone(), |_| Ok(()));
                    self.controller.on_reply(dc, &reply);
                }
            }
        }
        let usage = self
            .ports
            .iter()
            .map(|p| (format!("{}/{}", p.gateway, p.transit), (p.tx, p.rx)))
            .collect();
        self.trace.push(CycleRecord {
            at: now,
            orders: cycle.orders,
            explanation: cycle.explanation,
            snapshot: self.record_snapshots.then_some(snap),
            usage,
            undelivered_bps: self.undelivered,
        });
    }

    /// Runs until `t` seconds (inclusive).
    pub fn run_until(&mut self, t: u64) {
        while self.now_s < t {
            self.tick();
        }
    }

    /// Runs the whole scenario.
    pub fn run(&mut self) {
        self.run_until(self.sc.duration_s);
    }

    /// The order a gateway holds now.
    pub fn held(&self, gateway: &str) -> Option<&GatewayOrder> {
        self.gw_receivers.get(gateway).and_then(|r| r.current())
    }
}

/// The probe window a gateway would report.
fn window_stats(w: &VecDeque<(u32, u32, f64)>, lost_in_a_row: u32) -> ProbeWindow {
    let sent: u32 = w.iter().map(|s| s.0).sum();
    let lost: u32 = w.iter().map(|s| s.1).sum();
    let mut rtts: Vec<f64> = w.iter().map(|s| s.2).filter(|r| r.is_finite()).collect();
    let jitter = if rtts.len() > 1 {
        rtts.windows(2).map(|p| (p[1] - p[0]).abs()).sum::<f64>() / (rtts.len() - 1) as f64
    } else {
        0.0
    };
    rtts.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if rtts.is_empty() {
            return 0.0;
        }
        let i = ((rtts.len() - 1) as f64 * q).round() as usize;
        rtts.get(i).copied().unwrap_or(0.0)
    };
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    ProbeWindow {
        measurements: sent,
        loss_pct: if sent > 0 {
            round(f64::from(lost) * 100.0 / f64::from(sent))
        } else {
            0.0
        },
        latency_ms: round(pick(0.5)),
        latency_p95_ms: round(pick(0.95)),
        jitter_ms: round(jitter),
        reorder_pct: 0.0,
        lost_in_a_row,
    }
}

/// The scenarios [`scenario`] knows, with a line each.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "steady",
        "two datacenters, quiet transits: the baseline orders",
    ),
    (
        "blackhole",
        "sg1-gw1's lumen port blackholes at 120 s for good",
    ),
    ("brownout-loss", "sg1-gw1's lumen port loses 5% from 120 s"),
    ("brownout-latency", "sg1's lumen RTT x1.6 from 120 s"),
    (
        "recovery",
        "sg1-gw1's lumen port loses 5% from 120 s to 300 s, then is clean",
    ),
    (
        "flap",
        "sg1-gw1's lumen port blackholes for 10 s at 100, 160 and 220 s",
    ),
    ("flap-twice", "as flap, but only twice: no hold-down"),
    (
        "demand-growth",
        "sg1 -> hk1 demand grows from 1 to 20 Gbps over 20 minutes",
    ),
    (
        "watermark",
        "sg1-gw1's lumen port fills with 8.5 Gbps of other traffic from 200 s to 600 s",
    ),
    (
        "shortfall",
        "sg1 -> hk1 demand of 40 Gbps, more than the transits can carry",
    ),
    (
        "noisy",
        "one hour of noisy but within-SLA metrics, demand and background",
    ),
];

fn dc(name: &str, n: u32, net: &str) -> DcSpec {
    DcSpec {
        name: name.into(),
        gateways: n,
        transits: vec![
            TransitSpec {
                name: "lumen".into(),
                capacity: Rate::gbps(10.0),
                latency_ms: 0.0,
            },
            TransitSpec {
                name: "telstra".into(),
                capacity: Rate::gbps(10.0),
                latency_ms: 5.0,
            },
        ],
        prefixes: net.parse().map(|n| vec![n]).unwrap_or_default(),
    }
}

/// The policy the scenarios use: defaults, with lumen preferred over telstra.
pub fn scenario_policy() -> Policy {
    let mut f = PolicyFile::default();
    f.transits.by_name.insert(
        "lumen".into(),
        TransitOverride {
            preference: Some(0),
            cost: Some(Cost::PerGb(0.002)),
            ..TransitOverride::default()
        },
    );
    f.transits.by_name.insert(
        "telstra".into(),
        TransitOverride {
            preference: Some(1),
            cost: Some(Cost::PerGb(0.002)),
            ..TransitOverride::default()
        },
    );
    // The default file validates; scenarios are code, not input.
    Policy::from_file(f).unwrap_or_default()
}

fn port(gw: &str, t: &str) -> Target {
    Target::Port {
        gateway: gw.into(),
        transit: t.into(),
    }
}

fn demand(from: &str, to: &str, rate: Profile) -> DemandSpec {
    DemandSpec {
        from: from.into(),
        to: to.into(),
        rate,
    }
}

/// A named scenario (see [`SCENARIOS`]), with seed 1.
pub fn scenario(name: &str) -> Option<Scenario> {
    let mut sc = Scenario {
        name: name.into(),
        description: SCENARIOS.iter().find(|s| s.0 == name)?.1.into(),
        seed: 1,
        duration_s: 600,
        datacenters: vec![dc("hk1", 2, "10.20.0.0/16"), dc("sg1", 2, "10.10.0.0/16")],
        rtt_ms: vec![("sg1".into(), "hk1".into(), 40.0)],
        policy: scenario_policy(),
        faults: Vec::new(),
        demand: vec![
            demand("sg1", "hk1", Profile::flat(Rate::gbps(4.0))),
            demand("hk1", "sg1", Profile::flat(Rate::gbps(2.0))),
        ],
        background: Vec::new(),
        noise: Noise::default(),
    };
    let fault = |from_s, until_s, target, kind| Fault {
        from_s,
        until_s,
        target,
        kind,
    };
    match name {
        "steady" => {}
        "blackhole" => sc.faults.push(fault(
            120,
            None,
            port("sg1-gw1", "lumen"),
            FaultKind::Blackhole,
        )),
        "brownout-loss" => sc.faults.push(fault(
            120,
            None,
            port("sg1-gw1", "lumen"),
            FaultKind::LossPct(5.0),
        )),
        "brownout-latency" => sc.faults.push(fault(
            120,
            None,
            Target::Transit {
                datacenter: "sg1".into(),
                transit: "lumen".into(),
            },
            FaultKind::LatencyFactor(1.6),
        )),
        "recovery" => sc.faults.push(fault(
            120,
            Some(300),
            port("sg1-gw1", "lumen"),
            FaultKind::LossPct(5.0),
        )),
        "flap" | "flap-twice" => {
            let starts: &[u64] = if name == "flap" {
                &[100, 160, 220]
            } else {
                &[100, 160]
            };
            for &s in starts {
                sc.faults.push(fault(
                    s,
                    Some(s + 10),
                    port("sg1-gw1", "lumen"),
                    FaultKind::Blackhole,
                ));
            }
            sc.duration_s = 1300;
        }
        "demand-growth" => {
            sc.demand[0].rate = Profile(vec![(0, Rate::gbps(1.0)), (1200, Rate::gbps(20.0))]);
            sc.duration_s = 1300;
        }
        "watermark" => {
            sc.background.push(BackgroundSpec {
                gateway: "sg1-gw1".into(),
                transit: "lumen".into(),
                rate: Profile(vec![
                    (0, Rate::ZERO),
                    (200, Rate::ZERO),
                    (201, Rate::gbps(8.5)),
                    (600, Rate::gbps(8.5)),
                    (601, Rate::gbps(3.0)),
                ]),
            });
            sc.duration_s = 900;
        }
        "shortfall" => {
            sc.demand[0].rate = Profile::flat(Rate::gbps(40.0));
            sc.duration_s = 300;
        }
        "noisy" => {
            sc.noise = Noise {
                latency_pct: 20.0,
                loss_pct: 0.05,
                rate_pct: 10.0,
            };
            for gw in ["sg1-gw1", "sg1-gw2", "hk1-gw1", "hk1-gw2"] {
                for t in ["lumen", "telstra"] {
                    sc.background.push(BackgroundSpec {
                        gateway: gw.into(),
                        transit: t.into(),
                        rate: Profile::flat(Rate::gbps(2.0)),
                    });
                }
            }
            sc.duration_s = 3600;
        }
        _ => return None,
    }
    Some(sc)
}

/// A large synthetic snapshot for benchmarks and scale tests: `dcs` datacenters of
/// `gateways` gateways with `transits` providers each (10 Gbps ports), every tunnel of the
/// full mesh reported from both sides, demand on every pair, some background load, and a few
/// tunnels down, lossy or slow. Deterministic for a seed.
pub fn synthetic(dcs: usize, gateways: usize, transits: usize, seed: u64) -> Snapshot {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    let dc_name = |d: usize| format!("dc{d:02}");
    let transit_name = |t: usize| format!("isp{t}");
    let mut snap = Snapshot::default();
    for d in 0..dcs {
        snap.datacenters.push(Datacenter { name: dc_name(d) });
        snap.prefixes.push(DatacenterPrefixes {
            datacenter: dc_name(d),
            prefixes: IpNet::new(IpAddr::V4(Ipv4Addr::new(10, (d % 256) as u8, 0, 0)), 16)
                .ok()
                .into_iter()
                .collect(),
        });
        for g in 0..gateways {
            let id = format!("{}-gw{g}", dc_name(d));
            snap.gateways.push(Gateway {
                id: id.clone(),
                datacenter: dc_name(d),
                vtep: IpAddr::V4(Ipv4Addr::new(172, 16, (d % 256) as u8, (g % 256) as u8)),
                router_mac: MacAddr([2, 0, 0, 0, (d % 256) as u8, (g % 256) as u8]),
                live: true,
                transits: (0..transits)
                    .map(|t| GatewayTransit {
                        name: transit_name(t),
                        capacity: Rate::gbps(10.0),
                    })
                    .collect(),
            });
            for t in 0..transits {
                let bg = uniform() * 4e9;
                snap.transit_usage.push(TransitUsage {
                    gateway: id.clone(),
                    transit: transit_name(t),
                    rx: Rate::bps(bg),
                    tx: Rate::bps(bg * 0.9),
                    sdwan_rx: Rate::ZERO,
                    sdwan_tx: Rate::ZERO,
                });
            }
        }
        for e in 0..dcs {
            if e != d {
                snap.demand.push(Demand {
                    from: dc_name(d),
                    to: dc_name(e),
                    rate: Rate::bps(1e9 + uniform() * 4e9),
                });
            }
        }
    }
    for a in 0..dcs * gateways {
        for b in 0..dcs * gateways {
            let (da, ga, db, gb) = (a / gateways, a % gateways, b / gateways, b % gateways);
            if da == db {
                continue;
            }
            let base = 10.0 + 3.0 * (da as f64 - db as f64).abs();
            for ta in 0..transits {
                for tb in 0..transits {
                    let l = format!("{}-gw{ga}.{}", dc_name(da), transit_name(ta));
                    let r = format!("{}-gw{gb}.{}", dc_name(db), transit_name(tb));
                    let id = if l < r {
                        format!("{l}~{r}")
                    } else {
                        format!("{r}~{l}")
                    };
                    let roll = uniform();
                    let state = if roll < 0.01 {
                        TunnelState::Down
                    } else {
                        TunnelState::Established
                    };
                    let loss_pct = if roll < 0.03 { 3.0 } else { 0.0 };
                    let latency_ms = base + 2.0 * (ta + tb) as f64 + uniform() * 2.0;
                    snap.tunnels.push(TunnelReport {
                        id,
                        local: Endpoint {
                            gateway: format!("{}-gw{ga}", dc_name(da)),
                            transit: transit_name(ta),
                        },
                        remote: Endpoint {
                            gateway: format!("{}-gw{gb}", dc_name(db)),
                            transit: transit_name(tb),
                        },
                        state,
                        probe: ProbeWindow {
                            measurements: 100,
                            loss_pct,
                            latency_ms,
                            latency_p95_ms: latency_ms * 1.1,
                            jitter_ms: 0.5,
                            reorder_pct: 0.0,
                            lost_in_a_row: 0,
                        },
                    });
                }
            }
        }
    }
    snap
}
