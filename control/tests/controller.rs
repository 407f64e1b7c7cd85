//! The controller's "done when" list, each checked on the seeded simulator in simulated time
//! (no sleeps, no wall clock): blackhole, brownout, recovery, flap dampening, capacity growth,
//! watermark shedding, shortfall, stability under noise, determinism, fencing.

#![allow(clippy::unwrap_used)]

use gatewan_control::controller::explain::Decision;
use gatewan_control::controller::inputs::{ControllerMember, Membership, Snapshot, Time};
use gatewan_control::controller::orders::{Receiver, RefuseReason, Reply};
use gatewan_control::controller::sim::{
    self, scenario, CycleRecord, Fault, FaultKind, Sim, Target,
};
use gatewan_control::controller::{Controller, Orders};
use proptest::prelude::*;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PORT: (&str, &str) = ("sg1-gw1", "lumen");

fn run(name: &str) -> Sim {
    let mut s = Sim::new(scenario(name).unwrap());
    s.run();
    s
}

/// Total weight, over every gateway and remote datacenter, on `tunnels`.
fn weight_on(orders: &Orders, tunnels: &[String]) -> u32 {
    orders
        .gateways
        .values()
        .flat_map(|g| g.remotes.values())
        .flatten()
        .filter(|t| tunnels.contains(&t.tunnel))
        .map(|t| t.weight)
        .sum()
}

fn at(r: &CycleRecord) -> u64 {
    r.at.as_millis() / 1000
}

/// Every live gateway has tunnels towards every other datacenter.
fn assert_no_empty_order(r: &CycleRecord) {
    for (gw, o) in &r.orders.gateways {
        let remote = if gw.starts_with("sg1") { "hk1" } else { "sg1" };
        let ts = o.remotes.get(remote);
        assert!(
            ts.is_some_and(|ts| !ts.is_empty() && ts.iter().map(|t| t.weight).sum::<u32>() == 1000),
            "t={} {gw} has no order for {remote}: {o:?}",
            at(r)
        );
    }
}

/// No gateway's weights towards a datacenter move by more than `max` (share of the total)
/// from one cycle to the next.
fn assert_moves_within(s: &Sim, max: f64) {
    for w in s.trace.windows(2) {
        for (gw, o) in &w[1].orders.gateways {
            for (dc, ts) in &o.remotes {
                let Some(old) = w[0].orders.gateways.get(gw).and_then(|p| p.remotes.get(dc)) else {
                    continue;
                };
                let weight = |v: &[gatewan_control::controller::orders::TunnelWeight], id: &str| {
                    v.iter()
                        .find(|t| t.tunnel == id)
                        .map_or(0.0, |t| f64::from(t.weight) / 1000.0)
                };
                let mut ids: Vec<&str> = ts.iter().chain(old).map(|t| t.tunnel.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                let moved: f64 = ids
                    .iter()
                    .map(|id| (weight(ts, id) - weight(old, id)).abs())
                    .sum::<f64>()
                    / 2.0;
                assert!(
                    moved <= max + 0.002,
                    "t={} {gw}->{dc} moved {moved}",
                    at(&w[1])
                );
            }
        }
    }
}

/// The first cycle at or after `from` where `pred` holds.
fn first_after(s: &Sim, from: u64, pred: impl Fn(&CycleRecord) -> bool) -> Option<u64> {
    s.trace
        .iter()
        .filter(|r| at(r) >= from)
        .find(|r| pred(r))
        .map(at)
}

#[test]
fn blackhole_weight_is_gone_from_the_next_orders_and_capacity_is_still_met() {
    let s = run("blackhole");
    let via = s.tunnels_via(PORT.0, PORT.1);
    // Before: sg1-gw1 sends over its lumen port (preferred).
    let before = s.trace.iter().find(|r| at(r) == 115).unwrap();
    assert!(weight_on(&before.orders, &via) > 0);
    // The blackhole starts at 120 s; the cycle at 120 s already sees probes dying in a row.
    for r in s.trace.iter().filter(|r| at(r) >= 120) {
        assert_eq!(weight_on(&r.orders, &via), 0, "t={}", at(r));
        assert_no_empty_order(r);
        assert!(
            r.orders.shortfalls.is_empty(),
            "t={} {:?}",
            at(r),
            r.orders.shortfalls
        );
        let e = r.explanation.as_ref().unwrap();
        for p in &e.pairs {
            assert!(p.met.as_bps() >= p.required.as_bps() * 0.999, "{p:?}");
        }
    }
    // The gateways hold what was sent, and the traffic found its way.
    let last = s.trace.last().unwrap();
    assert_eq!(last.undelivered_bps, 0.0);
    assert_eq!(s.held("sg1-gw1").unwrap(), &last.orders.gateways["sg1-gw1"]);
}

#[test]
fn brownout_by_loss_is_acted_on_within_15_s() {
    let s = run("brownout-loss");
    let via = s.tunnels_via(PORT.0, PORT.1);
    assert!(weight_on(&s.trace.iter().find(|r| at(r) == 115).unwrap().orders, &via) > 0);
    let acted = first_after(&s, 120, |r| weight_on(&r.orders, &via) == 0).unwrap();
    assert!(acted <= 120 + 15, "acted on at {acted} s");
    // And it stays out while the loss lasts.
    assert!(s
        .trace
        .iter()
        .filter(|r| at(r) >= acted)
        .all(|r| weight_on(&r.orders, &via) == 0));
    assert!(s
        .trace
        .iter()
        .all(|r| at(r) < 10 || r.orders.shortfalls.is_empty()));
}

#[test]
fn brownout_by_latency_is_acted_on_within_15_s() {
    let s = run("brownout-latency");
    let mut via = s.tunnels_via("sg1-gw1", "lumen");
    via.extend(s.tunnels_via("sg1-gw2", "lumen"));
    assert!(weight_on(&s.trace.iter().find(|r| at(r) == 115).unwrap().orders, &via) > 0);
    let acted = first_after(&s, 120, |r| weight_on(&r.orders, &via) == 0).unwrap();
    assert!(acted <= 120 + 15, "acted on at {acted} s");
    let r = s.trace.iter().find(|r| at(r) == acted).unwrap();
    let e = r.explanation.as_ref().unwrap();
    let reasons: Vec<&str> = e
        .pairs
        .iter()
        .flat_map(|p| &p.gateways)
        .flat_map(|g| &g.tunnels)
        .filter(|t| via.contains(&t.tunnel))
        .map(|t| t.reason.as_str())
        .collect();
    assert!(reasons.contains(&"brownout_latency"), "{reasons:?}");
}

#[test]
fn a_recovered_path_returns_only_after_60_s_clean() {
    // 5% loss from 120 s to 300 s; the probe window (10 s) is clean again from about 310 s.
    let s = run("recovery");
    let via = s.tunnels_via(PORT.0, PORT.1);
    let out = first_after(&s, 120, |r| weight_on(&r.orders, &via) == 0).unwrap();
    assert!(out <= 135);
    let back = first_after(&s, out, |r| weight_on(&r.orders, &via) > 0).unwrap();
    assert!(
        back >= 300 + 60,
        "returned at {back} s, less than 60 s after the loss ended"
    );
    assert!(back <= 300 + 10 + 60 + 5, "returned only at {back} s");
    // In between, the explanation says it is recovering.
    let r = s.trace.iter().find(|r| at(r) == 340).unwrap();
    let t = r
        .explanation
        .as_ref()
        .unwrap()
        .pairs
        .iter()
        .flat_map(|p| &p.gateways)
        .flat_map(|g| &g.tunnels)
        .find(|t| via.contains(&t.tunnel))
        .unwrap();
    assert_eq!(
        (t.decision, t.reason.as_str()),
        (Decision::Skipped, "recovering"),
        "{t:?}"
    );
}

#[test]
fn three_flaps_in_five_minutes_hold_the_path_down_for_fifteen_minutes() {
    // Blackholes of 10 s at 100, 160 and 220 s: the third failure starts the hold until 1120 s.
    let s = run("flap");
    let via = s.tunnels_via(PORT.0, PORT.1);
    for r in s.trace.iter().filter(|r| (100..1120).contains(&at(r))) {
        assert_eq!(weight_on(&r.orders, &via), 0, "t={}", at(r));
        assert_no_empty_order(r);
    }
    let back = first_after(&s, 1120, |r| weight_on(&r.orders, &via) > 0).unwrap();
    assert!(back <= 1125, "returned only at {back} s");
    let r = s.trace.iter().find(|r| at(r) == 600).unwrap();
    let reasons: Vec<&str> = r
        .explanation
        .as_ref()
        .unwrap()
        .pairs
        .iter()
        .flat_map(|p| &p.gateways)
        .flat_map(|g| &g.tunnels)
        .filter(|t| via.contains(&t.tunnel))
        .map(|t| t.reason.as_str())
        .collect();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| *r == "dampened"),
        "{reasons:?}"
    );
}

#[test]
fn two_flaps_are_not_held_down() {
    let s = run("flap-twice");
    let via = s.tunnels_via(PORT.0, PORT.1);
    // Second failure 160-170 s, clean window from about 180 s, back 60 s later.
    let back = first_after(&s, 170, |r| weight_on(&r.orders, &via) > 0).unwrap();
    assert!((230..=260).contains(&back), "returned at {back} s");
}

#[test]
fn rising_demand_adds_tunnels_until_the_requirement_is_met() {
    // sg1 -> hk1 grows from 1 to 20 Gbps (required: 1.5 to 30 Gbps; sg1 has 32 Gbps below
    // the high watermarks).
    let s = run("demand-growth");
    let count = |r: &CycleRecord| -> usize {
        ["sg1-gw1", "sg1-gw2"]
            .iter()
            .map(|g| {
                r.orders.gateways[*g]
                    .remotes
                    .get("hk1")
                    .map_or(0, |v| v.len())
            })
            .sum()
    };
    let first = s.trace.first().unwrap();
    let last = s.trace.last().unwrap();
    assert_eq!(count(first), 4);
    assert!(count(last) >= 6, "only {} tunnels at 20 Gbps", count(last));
    for r in &s.trace {
        assert!(
            r.orders.shortfalls.is_empty(),
            "t={} {:?}",
            at(r),
            r.orders.shortfalls
        );
        assert_no_empty_order(r);
        // Measured port load stays below the 80% high watermark.
        for (port, (tx, rx)) in &r.usage {
            assert!(
                tx.max(*rx) <= 8.0e9 * 1.02,
                "t={} {port} at {tx} / {rx}",
                at(r)
            );
        }
    }
    let e = last.explanation.as_ref().unwrap();
    let p = e.pairs.iter().find(|p| p.from == "sg1").unwrap();
    assert!(
        p.required.as_bps() > 25e9 && p.met.as_bps() >= p.required.as_bps() * 0.999,
        "{p:?}"
    );
}

#[test]
fn a_transit_past_its_high_watermark_sheds_load_to_others_and_gets_it_back_below_the_low_one() {
    // 8.5 Gbps of other traffic on sg1-gw1/lumen (85%) from 200 s to 600 s, 3 Gbps after.
    let s = run("watermark");
    let via = s.tunnels_via(PORT.0, PORT.1);
    assert!(weight_on(&s.trace.iter().find(|r| at(r) == 200).unwrap().orders, &via) > 0);
    // The move limit spreads the shift over a few cycles; failures aside, 25% per cycle.
    // Not a failure: the weight moves under the per-cycle limit, a quarter at a time.
    let w200 = weight_on(&s.trace.iter().find(|r| at(r) == 200).unwrap().orders, &via);
    let w205 = weight_on(&s.trace.iter().find(|r| at(r) == 205).unwrap().orders, &via);
    assert!(w205 > 0 && w205 < w200, "{w200} -> {w205}");
    assert_moves_within(&s, 0.25);
    let shed = first_after(&s, 200, |r| weight_on(&r.orders, &via) == 0).unwrap();
    assert!(shed <= 230, "shed only at {shed} s");
    let r = s.trace.iter().find(|r| at(r) == 300).unwrap();
    assert_eq!(weight_on(&r.orders, &via), 0);
    assert_no_empty_order(r);
    let e = r.explanation.as_ref().unwrap();
    let t = e
        .transits
        .iter()
        .find(|t| (t.gateway.as_str(), t.transit.as_str()) == PORT)
        .unwrap();
    assert!(t.shedding, "{t:?}");
    let skipped: Vec<_> = e
        .pairs
        .iter()
        .flat_map(|p| &p.gateways)
        .flat_map(|g| &g.tunnels)
        .filter(|t| via.contains(&t.tunnel) && t.decision == Decision::Skipped)
        .collect();
    assert!(
        !skipped.is_empty() && skipped.iter().all(|t| t.reason == "watermark"),
        "{skipped:?}"
    );
    // Between the watermarks nothing comes back; below the low one (30%) it does.
    assert!(s
        .trace
        .iter()
        .filter(|r| (shed..600).contains(&at(r)))
        .all(|r| weight_on(&r.orders, &via) == 0));
    let back = first_after(&s, 600, |r| weight_on(&r.orders, &via) > 0).unwrap();
    assert!(back <= 610, "back only at {back} s");
}

#[test]
fn when_nothing_can_meet_the_requirement_the_best_is_made_and_the_shortfall_reported() {
    // 40 Gbps of demand (60 Gbps required) against 32 Gbps below the high watermarks. Once
    // the traffic pushes the ports past it they shed to the low watermark (24 Gbps).
    let s = run("shortfall");
    for r in &s.trace {
        assert_no_empty_order(r);
        let sf = r
            .orders
            .shortfalls
            .iter()
            .find(|f| f.from == "sg1" && f.to == "hk1")
            .unwrap();
        assert_eq!(sf.cause, "capacity");
        assert!(sf.met.as_bps() >= 24e9 - 1.0, "t={} {sf:?}", at(r));
        // The best possible: every sg1 port carries its part.
        if at(r) > 5 {
            for (port, (tx, _)) in r.usage.iter().filter(|(p, _)| p.starts_with("sg1")) {
                assert!(*tx > 5e9, "t={} {port} carries only {tx}", at(r));
            }
        }
        assert!((sf.missing.as_bps() - (sf.required.as_bps() - sf.met.as_bps())).abs() < 1.0);
        // The other direction is fine.
        assert!(!r.orders.shortfalls.iter().any(|f| f.from == "hk1"));
    }
}

#[test]
fn when_no_tunnel_meets_the_sla_the_least_bad_carry_the_traffic() {
    // 1.5% loss on both of sg1's transits: above the SLA's 1%, below the 2% brownout.
    let mut sc = scenario("steady").unwrap();
    for t in ["lumen", "telstra"] {
        sc.faults.push(Fault {
            from_s: 100,
            until_s: None,
            target: Target::Transit {
                datacenter: "sg1".into(),
                transit: t.into(),
            },
            kind: FaultKind::LossPct(1.5),
        });
    }
    sc.duration_s = 200;
    let mut s = Sim::new(sc);
    s.run();
    for r in s.trace.iter().filter(|r| at(r) >= 120) {
        assert_no_empty_order(r);
        let causes: Vec<&str> = r
            .orders
            .shortfalls
            .iter()
            .map(|f| f.cause.as_str())
            .collect();
        assert_eq!(causes, ["degraded", "degraded"], "t={}", at(r));
        let e = r.explanation.as_ref().unwrap();
        assert!(e
            .pairs
            .iter()
            .flat_map(|p| &p.gateways)
            .flat_map(|g| &g.tunnels)
            .any(|t| t.decision == Decision::LastResort));
    }
}

#[test]
fn a_datacenter_cut_off_is_reported_unreachable_and_its_routes_withdrawn() {
    let mut sc = scenario("steady").unwrap();
    for t in ["lumen", "telstra"] {
        sc.faults.push(Fault {
            from_s: 100,
            until_s: None,
            target: Target::Transit {
                datacenter: "sg1".into(),
                transit: t.into(),
            },
            kind: FaultKind::Down,
        });
    }
    sc.duration_s = 150;
    let mut s = Sim::new(sc);
    s.run();
    let r = s.trace.last().unwrap();
    let causes: Vec<&str> = r
        .orders
        .shortfalls
        .iter()
        .map(|f| f.cause.as_str())
        .collect();
    assert_eq!(causes, ["unreachable", "unreachable"]);
    assert!(r.orders.bgpctl["sg1"].routes.is_empty());
    assert!(r.orders.bgpctl["hk1"].routes.is_empty());
    let before = s.trace.iter().find(|r| at(r) == 95).unwrap();
    assert_eq!(before.orders.bgpctl["hk1"].routes.len(), 1);
    assert_eq!(before.orders.bgpctl["hk1"].routes[0].gateways.len(), 2);
}

#[test]
fn cost_ranks_before_latency_and_a_commit_is_free_until_other_traffic_fills_it() {
    use gatewan_control::controller::policy::{Cost, PolicyFile, TransitOverride};
    use gatewan_control::controller::{Policy, Rate};
    let mut f = PolicyFile::default();
    f.transits.by_name.insert(
        "lumen".into(),
        TransitOverride {
            cost: Some(Cost::PerGb(0.01)),
            ..TransitOverride::default()
        },
    );
    // telstra is 5 ms slower per end but billed on a 5 Gbps commit.
    f.transits.by_name.insert(
        "telstra".into(),
        TransitOverride {
            cost: Some(Cost::Commit {
                rate: Rate::gbps(5.0),
                over_per_gb: 0.02,
            }),
            ..TransitOverride::default()
        },
    );
    let mut sc = scenario("steady").unwrap();
    sc.policy = Policy::from_file(f).unwrap();
    // From 100 s, 3 Gbps of other traffic on each sg1 telstra port: 6 Gbps, over the commit.
    for gw in ["sg1-gw1", "sg1-gw2"] {
        sc.background.push(sim::BackgroundSpec {
            gateway: gw.into(),
            transit: "telstra".into(),
            rate: sim::Profile(vec![
                (0, Rate::ZERO),
                (99, Rate::ZERO),
                (100, Rate::gbps(3.0)),
            ]),
        });
    }
    sc.duration_s = 200;
    let mut s = Sim::new(sc);
    s.run();
    let tunnels = |r: &CycleRecord, gw: &str| -> Vec<String> {
        r.orders.gateways[gw]
            .remotes
            .values()
            .flatten()
            .map(|t| t.tunnel.clone())
            .collect()
    };
    // Under the commit telstra is free: telstra at both ends, despite the extra 10 ms.
    let r = s.trace.iter().find(|r| at(r) == 95).unwrap();
    for gw in ["sg1-gw1", "hk1-gw2"] {
        assert!(
            tunnels(r, gw)
                .iter()
                .all(|t| t.matches("telstra").count() == 2),
            "{:?}",
            tunnels(r, gw)
        );
    }
    // Over it, sg1's end costs 0.02/GB on telstra: sg1 sends and receives over lumen (0.01),
    // hk1's end stays on its free telstra.
    let r = s.trace.last().unwrap();
    for gw in ["sg1-gw1", "hk1-gw2"] {
        for t in tunnels(r, gw) {
            // Ids read `hk1 end~sg1 end`.
            let (hk1, sg1) = t.split_once('~').unwrap();
            assert!(
                hk1.ends_with(".telstra") && sg1.ends_with(".lumen"),
                "{gw}: {t}"
            );
        }
    }
}

#[test]
fn noisy_but_within_sla_metrics_never_change_the_orders() {
    // One hour: RTT samples +-20%, 0.05% random loss, demand and background +-10%.
    let s = run("noisy");
    let first = &s.trace.first().unwrap().orders;
    assert!(s.trace.len() >= 700);
    for r in &s.trace {
        assert_eq!(r.orders.gateways, first.gateways, "t={}", at(r));
        assert_eq!(r.orders.bgpctl, first.bgpctl, "t={}", at(r));
    }
    assert!(first.gateways.values().all(|g| g.version == 1));
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_a_different_one() {
    let runs: Vec<String> = [1, 1, 2]
        .iter()
        .map(|&seed| {
            let mut sc = scenario("demand-growth").unwrap();
            sc.seed = seed;
            sc.duration_s = 700;
            let mut s = Sim::new(sc);
            s.run();
            serde_json::to_string(&s.trace).unwrap()
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_ne!(runs[0], runs[2]);
}

/// The blackhole scenario's inputs, cycle by cycle up to 200 s.
fn recorded_snapshots() -> Vec<(Time, Snapshot)> {
    let mut s = Sim::new(scenario("blackhole").unwrap());
    s.record_snapshots(true);
    s.run_until(200);
    s.trace
        .iter()
        .map(|r| (r.at, r.snapshot.clone().unwrap()))
        .collect()
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn shuffled(s: &Snapshot, rng: &mut ChaCha8Rng) -> Snapshot {
    let mut s = s.clone();
    shuffle(&mut s.datacenters, rng);
    shuffle(&mut s.gateways, rng);
    for g in &mut s.gateways {
        shuffle(&mut g.transits, rng);
    }
    shuffle(&mut s.tunnels, rng);
    shuffle(&mut s.transit_usage, rng);
    shuffle(&mut s.demand, rng);
    shuffle(&mut s.prefixes, rng);
    shuffle(&mut s.membership.controllers, rng);
    s
}

fn orders_json(snaps: &[(Time, Snapshot)], rng: Option<&mut ChaCha8Rng>) -> Vec<String> {
    let mut c = Controller::new("c", sim::scenario_policy());
    c.set_explain(true);
    let mut rng = rng;
    snaps
        .iter()
        .map(|(t, s)| {
            let input = match rng.as_deref_mut() {
                Some(r) => shuffled(s, r),
                None => s.clone(),
            };
            let cycle = c.step(*t, &input);
            let mut out = serde_json::to_string(&cycle.orders).unwrap();
            out.push_str(&serde_json::to_string(&cycle.explanation).unwrap());
            out
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Same inputs in any order, through a whole blackhole and its aftermath: byte-identical
    /// orders and explanations at every cycle.
    #[test]
    fn shuffled_inputs_give_byte_identical_orders(seed in any::<u64>()) {
        let snaps = recorded_snapshots();
        let want = orders_json(&snaps, None);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let got = orders_json(&snaps, Some(&mut rng));
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            prop_assert_eq!(w, g, "cycle {}", i);
        }
    }
}

#[test]
fn a_stale_controller_is_fenced_by_the_gateways_and_stands_down() {
    let snaps = recorded_snapshots();
    let (t0, base) = &snaps[10];
    let view = |clock: u64, a_live: bool| Membership {
        clock,
        controllers: vec![
            ControllerMember {
                id: "ctl-a".into(),
                live: a_live,
                leading: None,
            },
            ControllerMember {
                id: "ctl-b".into(),
                live: true,
                leading: None,
            },
        ],
    };
    let with = |m: Membership| {
        let mut s = base.clone();
        s.membership = m;
        s
    };
    let policy = sim::scenario_policy();
    let mut a = Controller::new("ctl-a", policy.clone());
    let mut b = Controller::new("ctl-b", policy);
    let mut gw = Receiver::new("sg1-gw1");
    // Both see both: ctl-a (lowest id) leads; ctl-b computes the same orders but may not send.
    let ca = a.step(*t0, &with(view(10, true)));
    let cb = b.step(*t0, &with(view(10, true)));
    assert!(ca.orders.authoritative && !cb.orders.authoritative);
    assert_eq!(
        ca.orders.gateways["sg1-gw1"].remotes,
        cb.orders.gateways["sg1-gw1"].remotes
    );
    let reply = gw.offer(ca.orders.gateways["sg1-gw1"].clone(), |_| Ok(()));
    a.on_reply("sg1-gw1", &reply);
    assert_eq!(a.acked("sg1-gw1"), Some(1));
    // A partition: the mesh declares ctl-a failed (clock 20); ctl-b takes over.
    let t1 = *t0 + std::time::Duration::from_secs(5);
    let cb = b.step(t1, &with(view(20, false)));
    assert!(cb.orders.authoritative);
    assert_eq!(cb.orders.epoch.term, 20);
    assert!(matches!(
        gw.offer(cb.orders.gateways["sg1-gw1"].clone(), |_| Ok(())),
        Reply::Ack { .. }
    ));
    // ctl-a, cut off with its old view, still believes it leads: refused, told the new epoch.
    let ca = a.step(t1, &with(view(10, true)));
    assert!(ca.orders.authoritative);
    let reply = gw.offer(ca.orders.gateways["sg1-gw1"].clone(), |_| Ok(()));
    assert!(
        matches!(&reply, Reply::Refuse { reason: RefuseReason::StaleEpoch, current_epoch, .. } if current_epoch.controller == "ctl-b")
    );
    a.on_reply("sg1-gw1", &reply);
    let t2 = t1 + std::time::Duration::from_secs(5);
    assert!(!a.step(t2, &with(view(10, true))).orders.authoritative);
    // The gateway kept ctl-b's order throughout (fail-static, fenced).
    assert_eq!(gw.current().unwrap().epoch.controller, "ctl-b");
    // Healed: ctl-a rejoins (clock 25) and leads again, above ctl-b's term.
    let ca = a.step(t2, &with(view(25, true)));
    let cb = b.step(t2, &with(view(25, true)));
    assert!(ca.orders.authoritative && !cb.orders.authoritative);
    assert!(matches!(
        gw.offer(ca.orders.gateways["sg1-gw1"].clone(), |_| Ok(())),
        Reply::Ack { .. }
    ));
}

#[test]
fn bad_records_are_reported_and_ignored_never_fatal() {
    let snaps = recorded_snapshots();
    let (t, base) = &snaps[5];
    let mut s = base.clone();
    let dup = s.tunnels[0].clone();
    s.tunnels.push(dup.clone());
    let mut nan = s.tunnels[1].clone();
    nan.probe.loss_pct = f64::NAN;
    s.tunnels[1] = nan.clone();
    let mut ghost = s.tunnels[2].clone();
    ghost.remote.gateway = "nowhere-gw9".into();
    s.tunnels.push(ghost);
    s.demand.push(s.demand[0].clone());
    let mut c = Controller::new("c", sim::scenario_policy());
    let cycle = c.step(*t, &s);
    let probs: Vec<String> = cycle
        .input_issues
        .iter()
        .map(|i| format!("{} {}: {}", i.kind, i.id, i.problem))
        .collect();
    let has = |needle: &str| probs.iter().any(|p| p.contains(needle));
    assert!(
        has(&format!(
            "{}@{}: reported more than once",
            dup.id, dup.local.gateway
        )),
        "{probs:?}"
    );
    assert!(has("loss_pct"), "{probs:?}");
    assert!(has("unknown gateway"), "{probs:?}");
    assert!(
        has("demand sg1->hk1: reported more than once")
            || has("demand hk1->sg1: reported more than once"),
        "{probs:?}"
    );
    // Orders are still made for everyone, without the bad records.
    assert_eq!(cycle.orders.gateways.len(), 4);
    let gw = &cycle.orders.gateways[&dup.local.gateway];
    assert!(gw.remotes.values().flatten().all(|t| t.tunnel != dup.id));
}

#[test]
fn an_oversized_snapshot_is_cut_to_the_limits_not_fatal() {
    use gatewan_control::controller::engine::{MAX_DATACENTERS, MAX_GATEWAYS};
    use gatewan_control::controller::inputs::Datacenter;
    let (t, base) = recorded_snapshots().swap_remove(5);
    let mut s = base;
    // Declared datacenters sorting before the real ones push sg1 past the limit.
    for i in 0..MAX_DATACENTERS {
        s.datacenters.push(Datacenter {
            name: format!("aa{i:04}"),
        });
    }
    let mut c = Controller::new("c", sim::scenario_policy());
    let cycle = c.step(t, &s);
    assert!(cycle
        .input_issues
        .iter()
        .any(|i| i.id == "sg1" && i.kind == "datacenter"));
    assert!(cycle.orders.gateways.keys().all(|g| !g.starts_with("sg1")));
    let mut s = recorded_snapshots().swap_remove(5).1;
    let g = s.gateways[0].clone();
    for i in 0..MAX_GATEWAYS {
        let mut x = g.clone();
        x.id = format!("aa-gw{i:05}");
        s.gateways.push(x);
    }
    let cycle = c.step(t, &s);
    assert_eq!(cycle.orders.gateways.len(), MAX_GATEWAYS);
    assert!(
        cycle
            .input_issues
            .iter()
            .filter(|i| i.kind == "gateway")
            .count()
            >= 4
    );
}

#[test]
fn a_transit_listed_twice_is_refused_whatever_the_order_of_its_copies() {
    let snaps = recorded_snapshots();
    let (t, base) = &snaps[5];
    let run = |flip: bool| {
        let mut s = base.clone();
        let g = &mut s.gateways[0];
        let mut copy = g.transits[0].clone();
        copy.capacity = gatewan_control::controller::Rate::bps(1.0);
        if flip {
            g.transits.insert(0, copy);
        } else {
            g.transits.push(copy);
        }
        let mut c = Controller::new("c", sim::scenario_policy());
        let cycle = c.step(*t, &s);
        (cycle.orders.to_json().unwrap(), cycle.input_issues)
    };
    let (a, issues) = run(false);
    let (b, _) = run(true);
    assert_eq!(a, b, "the orders depend on which copy came first");
    assert!(
        issues
            .iter()
            .any(|i| i.kind == "gateway" && i.problem.contains("listed twice")),
        "{issues:?}"
    );
}

#[test]
fn unknown_transit_usage_fails_closed_and_is_listed() {
    let snaps = recorded_snapshots();
    let (t, base) = &snaps[5];
    let mut s = base.clone();
    let gone = s.transit_usage.remove(0);
    let mut c = Controller::new("c", sim::scenario_policy());
    let cycle = c.step(*t, &s);
    let id = format!("{}/{}", gone.gateway, gone.transit);
    assert!(
        cycle
            .input_issues
            .iter()
            .any(|i| i.kind == "transit_usage" && i.id == id && i.problem.contains("no new load")),
        "{:?}",
        cycle.input_issues
    );
    // A fresh controller puts nothing new on the port it knows nothing about.
    let order = &cycle.orders.gateways[&gone.gateway];
    let on_port = order
        .remotes
        .values()
        .flatten()
        .filter(|w| {
            s.tunnels.iter().any(|r| {
                r.id == w.tunnel
                    && r.local.gateway == gone.gateway
                    && r.local.transit == gone.transit
            })
        })
        .count();
    assert_eq!(on_port, 0, "{order:?}");
}
