//! Gating: what one probe window says about one tunnel, right now.
//!
//! [`classify`] turns a report into a [`Condition`] (clean, unmeasured, or bad and why); the
//! history that decides whether a clean tunnel may carry traffic again lives in
//! [`super::dampening`]. SLA tiers for ranking come from [`sla_tier`].

use serde::Serialize;

use super::inputs::{ProbeWindow, TunnelReport, TunnelState};
use super::policy::{Health, SlaClass};

/// Why a tunnel is bad.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Bad {
    /// WireGuard is not established.
    Down {
        state: TunnelState,
    },
    /// Probes die: `lost_in_a_row` at or above the policy's limit, or the whole window lost.
    Blackhole {
        lost_in_a_row: u32,
        loss_pct: f64,
    },
    BrownoutLoss {
        loss_pct: f64,
        limit_pct: f64,
    },
    BrownoutLatency {
        latency_ms: f64,
        baseline_ms: f64,
        limit_ms: f64,
    },
    /// Misses the pair's SLA class.
    Sla {
        miss: SlaMiss,
    },
}

/// The first threshold of an SLA class a probe window misses.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlaMiss {
    /// `loss`, `latency` or `jitter`.
    pub metric: &'static str,
    pub value: f64,
    pub limit: f64,
}

impl std::fmt::Display for SlaMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.metric {
            "loss" => write!(f, "loss {:.2}% > {}%", self.value, self.limit),
            "latency" => write!(f, "RTT {:.1} ms > {} ms", self.value, self.limit),
            _ => write!(f, "jitter {:.2} ms > {} ms", self.value, self.limit),
        }
    }
}

impl Bad {
    pub fn code(&self) -> &'static str {
        match self {
            Bad::Down { .. } => "down",
            Bad::Blackhole { .. } => "blackhole",
            Bad::BrownoutLoss { .. } => "brownout_loss",
            Bad::BrownoutLatency { .. } => "brownout_latency",
            Bad::Sla { .. } => "sla",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Bad::Down { state } => format!("tunnel is {state:?}"),
            Bad::Blackhole {
                lost_in_a_row,
                loss_pct,
            } => format!("{lost_in_a_row} probes lost in a row, {loss_pct:.1}% loss in the window"),
            Bad::BrownoutLoss {
                loss_pct,
                limit_pct,
            } => format!("loss {loss_pct:.2}% >= {limit_pct}%"),
            Bad::BrownoutLatency {
                latency_ms,
                baseline_ms,
                limit_ms,
            } => {
                format!("RTT {latency_ms:.1} ms >= {limit_ms:.1} ms (baseline {baseline_ms:.1} ms)")
            }
            Bad::Sla { miss } => format!("misses the pair's SLA class: {miss}"),
        }
    }
}

/// A tunnel's state in one window.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Clean,
    /// Established but too few probes to judge.
    Unmeasured {
        measurements: u32,
    },
    Bad(Bad),
}

/// Judges one report. `baseline_ms` is the tunnel's latency baseline before this window (none
/// for a tunnel never measured), `sla` the class its pair requires.
pub fn classify(
    report: &TunnelReport,
    health: &Health,
    baseline_ms: Option<f64>,
    sla: &SlaClass,
) -> Condition {
    let p = &report.probe;
    if report.state != TunnelState::Established {
        return Condition::Bad(Bad::Down {
            state: report.state,
        });
    }
    if p.lost_in_a_row >= health.blackhole_lost_in_a_row
        || (p.measurements >= health.min_measurements && p.loss_pct >= 100.0)
    {
        return Condition::Bad(Bad::Blackhole {
            lost_in_a_row: p.lost_in_a_row,
            loss_pct: p.loss_pct,
        });
    }
    if p.measurements < health.min_measurements {
        return Condition::Unmeasured {
            measurements: p.measurements,
        };
    }
    if p.loss_pct >= health.brownout_loss_pct {
        return Condition::Bad(Bad::BrownoutLoss {
            loss_pct: p.loss_pct,
            limit_pct: health.brownout_loss_pct,
        });
    }
    if let Some(base) = baseline_ms.filter(|b| *b > 0.0) {
        let limit = (base * (1.0 + health.brownout_latency_increase_pct / 100.0))
            .max(base + health.brownout_latency_min_increase_ms);
        if p.latency_ms >= limit {
            return Condition::Bad(Bad::BrownoutLatency {
                latency_ms: p.latency_ms,
                baseline_ms: base,
                limit_ms: limit,
            });
        }
    }
    if let Some(miss) = sla_miss(p, sla, 1.0) {
        return Condition::Bad(Bad::Sla { miss });
    }
    Condition::Clean
}

/// What `p` misses of `class`, with thresholds scaled by `leniency` (1.0: as written).
pub fn sla_miss(p: &ProbeWindow, class: &SlaClass, leniency: f64) -> Option<SlaMiss> {
    let checks = [
        ("loss", p.loss_pct, class.max_loss_pct),
        ("latency", p.latency_ms, class.max_latency_ms),
        ("jitter", p.jitter_ms, class.max_jitter_ms),
    ];
    checks
        .into_iter()
        .find(|(_, v, limit)| *v > limit * leniency)
        .map(|(metric, value, limit)| SlaMiss {
            metric,
            value,
            limit,
        })
}

/// The best (lowest) class index `p` meets, looking no further than `floor` (the pair's class,
/// which a gated tunnel meets). Incumbents are judged with `leniency` > 1 so a tunnel does not
/// drop a tier, and lose its place, on noise at a threshold.
pub fn sla_tier(p: &ProbeWindow, classes: &[SlaClass], floor: usize, leniency: f64) -> usize {
    classes
        .iter()
        .take(floor)
        .position(|c| sla_miss(p, c, leniency).is_none())
        .unwrap_or(floor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::controller::inputs::Endpoint;

    fn report(state: TunnelState, probe: ProbeWindow) -> TunnelReport {
        TunnelReport {
            id: "t".into(),
            local: Endpoint {
                gateway: "a".into(),
                transit: "x".into(),
            },
            remote: Endpoint {
                gateway: "b".into(),
                transit: "y".into(),
            },
            state,
            probe,
        }
    }

    fn good() -> ProbeWindow {
        ProbeWindow {
            measurements: 100,
            loss_pct: 0.0,
            latency_ms: 50.0,
            latency_p95_ms: 55.0,
            jitter_ms: 1.0,
            reorder_pct: 0.0,
            lost_in_a_row: 0,
        }
    }

    fn class(name: &str, loss: f64, lat: f64) -> SlaClass {
        SlaClass {
            name: name.into(),
            max_loss_pct: loss,
            max_latency_ms: lat,
            max_jitter_ms: 10.0,
        }
    }

    #[test]
    fn classification_follows_the_rules_in_order() {
        let h = Health::default();
        let bulk = class("bulk", 1.0, 300.0);
        assert_eq!(
            classify(
                &report(TunnelState::Established, good()),
                &h,
                Some(50.0),
                &bulk
            ),
            Condition::Clean
        );
        let c = classify(&report(TunnelState::Handshaking, good()), &h, None, &bulk);
        assert!(matches!(c, Condition::Bad(Bad::Down { .. })));
        let mut p = good();
        p.lost_in_a_row = 5;
        assert!(matches!(
            classify(&report(TunnelState::Established, p), &h, None, &bulk),
            Condition::Bad(Bad::Blackhole { .. })
        ));
        let mut p = good();
        p.measurements = 3;
        assert!(matches!(
            classify(&report(TunnelState::Established, p), &h, None, &bulk),
            Condition::Unmeasured { measurements: 3 }
        ));
        let mut p = good();
        p.loss_pct = 2.0;
        assert!(matches!(
            classify(&report(TunnelState::Established, p), &h, None, &bulk),
            Condition::Bad(Bad::BrownoutLoss { .. })
        ));
        let mut p = good();
        p.latency_ms = 75.0;
        assert!(matches!(
            classify(
                &report(TunnelState::Established, p.clone()),
                &h,
                Some(50.0),
                &bulk
            ),
            Condition::Bad(Bad::BrownoutLatency { .. })
        ));
        // +48%: not yet a brownout.
        p.latency_ms = 74.0;
        assert_eq!(
            classify(
                &report(TunnelState::Established, p.clone()),
                &h,
                Some(50.0),
                &bulk
            ),
            Condition::Clean
        );
        // A sub-millisecond path whose RTT doubles (a busy host) is no brownout: the rise
        // must also reach brownout_latency_min_increase_ms (5 ms); 0.5 -> 5.6 ms is one.
        p.latency_ms = 0.9;
        assert_eq!(
            classify(
                &report(TunnelState::Established, p.clone()),
                &h,
                Some(0.5),
                &bulk
            ),
            Condition::Clean
        );
        p.latency_ms = 5.6;
        assert!(matches!(
            classify(&report(TunnelState::Established, p), &h, Some(0.5), &bulk),
            Condition::Bad(Bad::BrownoutLatency { limit_ms, .. }) if (limit_ms - 5.5).abs() < 1e-9
        ));
        let mut p = good();
        p.loss_pct = 1.5;
        let c = classify(&report(TunnelState::Established, p), &h, None, &bulk);
        assert!(
            matches!(&c, Condition::Bad(Bad::Sla { miss }) if miss.metric == "loss"),
            "{c:?}"
        );
    }

    #[test]
    fn tiers_pick_the_best_class_met_with_leniency_for_incumbents() {
        let classes = [class("gold", 0.5, 100.0), class("bulk", 1.0, 300.0)];
        let mut p = good();
        assert_eq!(sla_tier(&p, &classes, 1, 1.0), 0);
        p.latency_ms = 110.0;
        assert_eq!(sla_tier(&p, &classes, 1, 1.0), 1);
        assert_eq!(sla_tier(&p, &classes, 1, 1.2), 0);
        // The floor caps the search: a bulk pair never looks below bulk.
        p.latency_ms = 900.0;
        assert_eq!(sla_tier(&p, &classes, 1, 1.0), 1);
    }
}
