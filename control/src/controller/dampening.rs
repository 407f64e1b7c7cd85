//! A tunnel's health over time: the latency baseline that brownouts are measured against, the
//! recovery hold (back only after a clean stretch) and flap dampening (too many failures in a
//! window hold the tunnel down).
//!
//! One [`PathHealth`] per (reporting gateway, tunnel), fed one [`Condition`] per cycle.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use super::gate::{Bad, Condition};
use super::inputs::Time;
use super::policy::{Dampening, Health};

/// Buckets of the sliding latency-minimum window: the baseline is the smallest bucket minimum
/// in the window, so memory stays fixed however long the window.
const BASELINE_BUCKETS: usize = 8;

/// The lowest median RTT seen over a sliding window.
#[derive(Clone, Debug, Default)]
pub struct LatencyBaseline {
    /// (bucket number + 1, minimum in that bucket); 0 marks an empty slot.
    slots: [(u32, f32); BASELINE_BUCKETS],
}

impl LatencyBaseline {
    fn bucket(now: Time, window: Duration) -> u32 {
        let width = (window.as_millis() as u64 / BASELINE_BUCKETS as u64).max(1);
        u32::try_from(now.as_millis() / width)
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    /// The baseline at `now`, if any sample lies in the window.
    pub fn get(&self, now: Time, window: Duration) -> Option<f64> {
        let cur = Self::bucket(now, window);
        let oldest = cur.saturating_sub(BASELINE_BUCKETS as u32 - 1);
        self.slots
            .iter()
            .filter(|(b, _)| *b != 0 && *b >= oldest && *b <= cur)
            .map(|(_, v)| f64::from(*v))
            .reduce(f64::min)
    }

    pub fn record(&mut self, now: Time, window: Duration, latency_ms: f64) {
        if !latency_ms.is_finite() || latency_ms <= 0.0 {
            return;
        }
        let cur = Self::bucket(now, window);
        let slot = &mut self.slots[cur as usize % BASELINE_BUCKETS];
        let v = latency_ms as f32;
        if slot.0 == cur {
            slot.1 = slot.1.min(v);
        } else {
            *slot = (cur, v);
        }
    }
}

/// Why a clean-looking tunnel may not carry traffic yet, or that it may.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Eligibility {
    Eligible,
    Bad {
        bad: Bad,
    },
    Unmeasured {
        measurements: u32,
    },
    /// Clean, but not for long enough since it last failed.
    Recovering {
        clean_for_s: f64,
        hold_s: f64,
    },
    /// Flapped too often; held down until then.
    Dampened {
        flaps: u32,
        until: Time,
    },
}

impl Eligibility {
    pub fn is_eligible(&self) -> bool {
        matches!(self, Eligibility::Eligible)
    }

    /// Ineligible because of a failure (down, blackhole, brownout, SLA, dampened) or unknown
    /// state: weight leaves such a tunnel at once, outside the per-cycle move limit.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Eligibility::Eligible)
    }

    pub fn code(&self) -> &'static str {
        match self {
            Eligibility::Eligible => "eligible",
            Eligibility::Bad { bad } => bad.code(),
            Eligibility::Unmeasured { .. } => "unmeasured",
            Eligibility::Recovering { .. } => "recovering",
            Eligibility::Dampened { .. } => "dampened",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Eligibility::Eligible => "eligible".into(),
            Eligibility::Bad { bad } => bad.detail(),
            Eligibility::Unmeasured { measurements } => {
                format!("only {measurements} probes in the window")
            }
            Eligibility::Recovering {
                clean_for_s,
                hold_s,
            } => format!(
                "clean for {clean_for_s:.0} s of the {hold_s:.0} s required after a failure"
            ),
            Eligibility::Dampened { flaps, until } => {
                format!("{flaps} failures in the dampening window; held down until {until}")
            }
        }
    }
}

/// The history of one (reporting gateway, tunnel).
#[derive(Clone, Debug, Default)]
pub struct PathHealth {
    pub baseline: LatencyBaseline,
    /// Clean without a break since then.
    clean_since: Option<Time>,
    /// Bad without a break since then.
    bad_since: Option<Time>,
    /// Has been clean at least once, so a new failure is a flap.
    seen_clean: bool,
    /// Failed since first seen: the recovery hold applies before it returns.
    failed: bool,
    /// Onsets of recent failures, oldest first (allocated only for tunnels that fail).
    onsets: VecDeque<Time>,
    held_until: Option<Time>,
    held_flaps: u32,
}

impl PathHealth {
    /// Feeds one cycle's condition. Latency samples of a working tunnel feed the baseline.
    pub fn observe(
        &mut self,
        now: Time,
        cond: &Condition,
        latency_ms: f64,
        health: &Health,
        damp: &Dampening,
    ) {
        let window = Duration::from_secs_f64(health.latency_baseline_window_s);
        match cond {
            Condition::Clean => {
                self.baseline.record(now, window, latency_ms);
                self.bad_since = None;
                if self.clean_since.is_none() {
                    self.clean_since = Some(now);
                }
                self.seen_clean = true;
            }
            Condition::Unmeasured { .. } => {
                // No verdict: neither clean time nor a failure.
                self.clean_since = None;
            }
            Condition::Bad(bad) => {
                if matches!(
                    bad,
                    Bad::BrownoutLoss { .. } | Bad::BrownoutLatency { .. } | Bad::Sla { .. }
                ) {
                    // A slow tunnel is still a latency sample: after a lasting route change
                    // the window's minimum rises and the change becomes the new normal.
                    self.baseline.record(now, window, latency_ms);
                }
                self.clean_since = None;
                if self.bad_since.is_none() {
                    self.bad_since = Some(now);
                    if self.seen_clean {
                        self.flap(now, damp);
                    }
                }
                self.failed = true;
            }
        }
    }

    fn flap(&mut self, now: Time, damp: &Dampening) {
        let window = Duration::from_secs_f64(damp.window_s);
        while self.onsets.front().is_some_and(|t| now.since(*t) > window) {
            self.onsets.pop_front();
        }
        self.onsets.push_back(now);
        while self.onsets.len() > damp.flaps as usize {
            self.onsets.pop_front();
        }
        if self.onsets.len() >= damp.flaps as usize {
            self.held_until = Some(now + Duration::from_secs_f64(damp.hold_s));
            self.held_flaps = self.onsets.len() as u32;
        }
    }

    /// The tunnel disappeared from the inputs: its clean stretch ends.
    pub fn absent(&mut self) {
        self.clean_since = None;
    }

    /// May the tunnel carry traffic at `now`, given this cycle's condition?
    pub fn eligibility(&self, now: Time, cond: &Condition, health: &Health) -> Eligibility {
        match cond {
            Condition::Bad(bad) => {
                return Eligibility::Bad { bad: bad.clone() };
            }
            Condition::Unmeasured { measurements } => {
                return Eligibility::Unmeasured {
                    measurements: *measurements,
                };
            }
            Condition::Clean => {}
        }
        if let Some(until) = self.held_until.filter(|u| now < *u) {
            return Eligibility::Dampened {
                flaps: self.held_flaps,
                until,
            };
        }
        let hold = Duration::from_secs_f64(health.recovery_hold_s);
        if self.failed {
            let clean_for = self.clean_since.map(|s| now.since(s)).unwrap_or_default();
            if clean_for < hold {
                return Eligibility::Recovering {
                    clean_for_s: clean_for.as_secs_f64(),
                    hold_s: hold.as_secs_f64(),
                };
            }
        }
        Eligibility::Eligible
    }

    /// When this tunnel last went bad, if it is bad now.
    pub fn bad_since(&self) -> Option<Time> {
        self.bad_since
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::controller::inputs::TunnelState;

    fn bad() -> Condition {
        Condition::Bad(Bad::Down {
            state: TunnelState::Down,
        })
    }

    /// Feeds `cond` every 5 s from `from` to `to` (exclusive) and returns the last eligibility.
    fn run(p: &mut PathHealth, from: u64, to: u64, cond: &Condition) -> Eligibility {
        let h = Health::default();
        let d = Dampening::default();
        let mut last = Eligibility::Eligible;
        let mut t = from;
        while t < to {
            p.observe(Time::from_secs(t), cond, 50.0, &h, &d);
            last = p.eligibility(Time::from_secs(t), cond, &h);
            t += 5;
        }
        last
    }

    #[test]
    fn a_new_clean_tunnel_is_eligible_at_once() {
        let mut p = PathHealth::default();
        assert!(run(&mut p, 0, 5, &Condition::Clean).is_eligible());
    }

    #[test]
    fn recovery_needs_the_full_clean_hold() {
        let mut p = PathHealth::default();
        run(&mut p, 0, 100, &Condition::Clean);
        assert!(!run(&mut p, 100, 110, &bad()).is_eligible());
        // Clean from 110: still recovering at 165 (55 s), eligible at 170 (60 s).
        let e = run(&mut p, 110, 170, &Condition::Clean);
        assert!(matches!(e, Eligibility::Recovering { .. }), "{e:?}");
        assert!(run(&mut p, 170, 175, &Condition::Clean).is_eligible());
    }

    #[test]
    fn a_failure_during_recovery_restarts_the_hold() {
        let mut p = PathHealth::default();
        run(&mut p, 0, 100, &Condition::Clean);
        run(&mut p, 100, 105, &bad());
        run(&mut p, 105, 150, &Condition::Clean);
        run(&mut p, 150, 155, &bad());
        let e = run(&mut p, 155, 210, &Condition::Clean);
        assert!(matches!(e, Eligibility::Recovering { .. }), "{e:?}");
        assert!(run(&mut p, 210, 220, &Condition::Clean).is_eligible());
    }

    #[test]
    fn three_flaps_in_five_minutes_hold_for_fifteen() {
        let mut p = PathHealth::default();
        run(&mut p, 0, 100, &Condition::Clean);
        for start in [100, 160, 220] {
            run(&mut p, start, start + 10, &bad());
            run(&mut p, start + 10, start + 60, &Condition::Clean);
        }
        // Third onset at 220: held until 1120 although clean since 230.
        let e = run(&mut p, 280, 1115, &Condition::Clean);
        assert!(
            matches!(e, Eligibility::Dampened { flaps: 3, until } if until == Time::from_secs(1120)),
            "{e:?}"
        );
        assert!(run(&mut p, 1115, 1125, &Condition::Clean).is_eligible());
    }

    #[test]
    fn flaps_spread_over_more_than_the_window_do_not_hold() {
        let mut p = PathHealth::default();
        run(&mut p, 0, 100, &Condition::Clean);
        for start in [100, 300, 500] {
            run(&mut p, start, start + 10, &bad());
            run(&mut p, start + 10, start + 200, &Condition::Clean);
        }
        assert!(run(&mut p, 700, 705, &Condition::Clean).is_eligible());
    }

    #[test]
    fn unmeasured_interrupts_the_clean_stretch_without_counting_a_flap() {
        let mut p = PathHealth::default();
        run(&mut p, 0, 100, &Condition::Clean);
        let u = Condition::Unmeasured { measurements: 1 };
        assert!(matches!(
            run(&mut p, 100, 110, &u),
            Eligibility::Unmeasured { .. }
        ));
        // Never failed: eligible as soon as it is clean again.
        assert!(run(&mut p, 110, 115, &Condition::Clean).is_eligible());
        assert!(p.onsets.is_empty());
    }

    #[test]
    fn baseline_is_the_window_minimum_and_forgets_old_samples() {
        let mut b = LatencyBaseline::default();
        let w = Duration::from_secs(800);
        b.record(Time::from_secs(0), w, 50.0);
        b.record(Time::from_secs(10), w, 40.0);
        b.record(Time::from_secs(200), w, 80.0);
        assert_eq!(b.get(Time::from_secs(300), w), Some(40.0));
        // 100 s buckets, eight of them: bucket 0 leaves the window at 800 s.
        b.record(Time::from_secs(850), w, 90.0);
        assert_eq!(b.get(Time::from_secs(850), w), Some(80.0));
        assert_eq!(b.get(Time::from_secs(5000), w), None);
        b.record(Time::from_secs(5000), w, f64::NAN);
        assert_eq!(b.get(Time::from_secs(5000), w), None);
    }
}
