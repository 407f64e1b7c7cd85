//! The controller's policy: YAML, read with serde and validated so that every error names the
//! field it is about (`pairs.overrides[0].sla: unknown SLA class "platinum"`).
//!
//! See docs/controller.md for the reference with a commented example.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::inputs::Rate;

/// The policy file as written; [`Policy::from_yaml`] validates it into a [`Policy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    pub cycle_period_s: f64,
    /// Best first: a tunnel's SLA tier is the first class it meets.
    pub sla_classes: Vec<SlaClass>,
    pub pairs: Pairs,
    pub transits: Transits,
    pub health: Health,
    pub anti_flap: AntiFlap,
    pub ranking: Ranking,
    pub weights: Weights,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaClass {
    pub name: String,
    pub max_loss_pct: f64,
    pub max_latency_ms: f64,
    pub max_jitter_ms: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pairs {
    pub default: PairSettings,
    /// Settings for one direction of one datacenter pair; unset fields come from `default`.
    pub overrides: Vec<PairOverride>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairSettings {
    /// The SLA class tunnels must meet to carry this pair's traffic.
    pub sla: String,
    pub capacity: Capacity,
    /// Tunnels per gateway even when fewer would do: the gateway needs a spare to fail over to
    /// on its own when a tunnel dies between cycles.
    pub min_tunnels: u32,
    /// Pairs with a higher priority are served first when transits are scarce.
    pub priority: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairOverride {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub sla: Option<String>,
    #[serde(default)]
    pub capacity: Option<Capacity>,
    #[serde(default)]
    pub min_tunnels: Option<u32>,
    #[serde(default)]
    pub priority: Option<i32>,
}

/// Required capacity of a pair. Written as a map with one key: `{ fixed: 10G }` or
/// `{ demand: { margin_pct: 50, min: 1G } }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CapacityForm", into = "CapacityForm")]
pub enum Capacity {
    /// A fixed rate, whatever the demand.
    Fixed(Rate),
    /// Measured demand x (1 + margin), at least `min`.
    Demand {
        margin_pct: f64,
        #[serde(default)]
        min: Rate,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transits {
    pub default: TransitSettings,
    /// Per provider name (`lumen`), or per datacenter and provider (`sg1/lumen`), which wins.
    /// Unset fields come from `default`.
    pub by_name: BTreeMap<String, TransitOverride>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransitSettings {
    /// Lower is preferred; ranks before cost.
    pub preference: u32,
    pub cost: Cost,
    pub high_watermark_pct: f64,
    pub low_watermark_pct: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitOverride {
    #[serde(default)]
    pub preference: Option<u32>,
    #[serde(default)]
    pub cost: Option<Cost>,
    #[serde(default)]
    pub high_watermark_pct: Option<f64>,
    #[serde(default)]
    pub low_watermark_pct: Option<f64>,
}

/// How a transit is billed. Written as a map with one key: `{ per_gb: 0.002 }` or
/// `{ commit: { rate: 5G, over_per_gb: 0.01 } }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CostForm", into = "CostForm")]
pub enum Cost {
    /// Pay per gigabyte moved.
    PerGb(f64),
    /// 95th-percentile billing: traffic below the commit (summed over the datacenter's
    /// gateways on this provider) is already paid for; above it each GB costs `over_per_gb`.
    Commit { rate: Rate, over_per_gb: f64 },
}

/// The YAML shape of [`Capacity`]: exactly one key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityForm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<DemandForm>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandForm {
    pub margin_pct: f64,
    #[serde(default)]
    pub min: Rate,
}

impl TryFrom<CapacityForm> for Capacity {
    type Error = String;

    fn try_from(f: CapacityForm) -> Result<Capacity, String> {
        match (f.fixed, f.demand) {
            (Some(r), None) => Ok(Capacity::Fixed(r)),
            (None, Some(d)) => Ok(Capacity::Demand {
                margin_pct: d.margin_pct,
                min: d.min,
            }),
            _ => Err("give exactly one of `fixed` or `demand`".into()),
        }
    }
}

impl From<Capacity> for CapacityForm {
    fn from(c: Capacity) -> CapacityForm {
        match c {
            Capacity::Fixed(r) => CapacityForm {
                fixed: Some(r),
                demand: None,
            },
            Capacity::Demand { margin_pct, min } => CapacityForm {
                fixed: None,
                demand: Some(DemandForm { margin_pct, min }),
            },
        }
    }
}

/// The YAML shape of [`Cost`]: exactly one key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostForm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitForm>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitForm {
    pub rate: Rate,
    pub over_per_gb: f64,
}

impl TryFrom<CostForm> for Cost {
    type Error = String;

    fn try_from(f: CostForm) -> Result<Cost, String> {
        match (f.per_gb, f.commit) {
            (Some(p), None) => Ok(Cost::PerGb(p)),
            (None, Some(c)) => Ok(Cost::Commit {
                rate: c.rate,
                over_per_gb: c.over_per_gb,
            }),
            _ => Err("give exactly one of `per_gb` or `commit`".into()),
        }
    }
}

impl From<Cost> for CostForm {
    fn from(c: Cost) -> CostForm {
        match c {
            Cost::PerGb(p) => CostForm {
                per_gb: Some(p),
                commit: None,
            },
            Cost::Commit { rate, over_per_gb } => CostForm {
                per_gb: None,
                commit: Some(CommitForm { rate, over_per_gb }),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Probe results count only with at least this many measurements in the window.
    pub min_measurements: u32,
    /// This many probes lost in a row mark the tunnel blackholed at once.
    pub blackhole_lost_in_a_row: u32,
    pub brownout_loss_pct: f64,
    /// Median RTT this far above the tunnel's own baseline is a brownout...
    pub brownout_latency_increase_pct: f64,
    /// ...when it is also at least this many ms above it: on a sub-millisecond path a busy
    /// host's scheduling alone doubles the RTT, which is no brownout.
    pub brownout_latency_min_increase_ms: f64,
    /// The baseline is the lowest median RTT seen over this window, so a lasting route change
    /// becomes the new normal after it.
    pub latency_baseline_window_s: f64,
    /// A tunnel that failed comes back only after this long clean.
    pub recovery_hold_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiFlap {
    /// An incumbent tunnel's numbers are judged this much more leniently when ranking, so a
    /// challenger must be clearly better to replace it.
    pub challenger_margin_pct: f64,
    /// A tunnel added to an order stays at least this long unless it fails.
    pub min_dwell_s: f64,
    /// Share of a gateway's weight for one remote datacenter that may move in one cycle;
    /// weight leaving failed tunnels does not count.
    pub max_move_pct: f64,
    /// Weight changes smaller than this (same tunnels, nothing failed) are not sent.
    pub weight_deadband_pct: f64,
    /// Incumbents are kept while the chosen tunnels offer less than required x (1 + this).
    pub keep_margin_pct: f64,
    pub dampening: Dampening,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dampening {
    /// This many failures within `window_s` hold the tunnel down for `hold_s`.
    pub flaps: u32,
    pub window_s: f64,
    pub hold_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ranking {
    /// Tunnels whose median RTT falls in the same bucket rank as equals on latency.
    pub latency_bucket_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// The weights of one gateway's tunnels to one remote datacenter sum to this.
    pub scale: u32,
}

impl Default for PolicyFile {
    fn default() -> Self {
        PolicyFile {
            cycle_period_s: 5.0,
            sla_classes: vec![SlaClass {
                name: "default".into(),
                max_loss_pct: 1.0,
                max_latency_ms: 1000.0,
                max_jitter_ms: 100.0,
            }],
            pairs: Pairs::default(),
            transits: Transits::default(),
            health: Health::default(),
            anti_flap: AntiFlap::default(),
            ranking: Ranking::default(),
            weights: Weights::default(),
        }
    }
}

impl Default for PairSettings {
    fn default() -> Self {
        PairSettings {
            sla: String::new(),
            capacity: Capacity::Demand {
                margin_pct: 50.0,
                min: Rate::ZERO,
            },
            min_tunnels: 2,
            priority: 0,
        }
    }
}

impl Default for TransitSettings {
    fn default() -> Self {
        TransitSettings {
            preference: 0,
            cost: Cost::PerGb(0.0),
            high_watermark_pct: 80.0,
            low_watermark_pct: 60.0,
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            min_measurements: 10,
            blackhole_lost_in_a_row: 5,
            brownout_loss_pct: 2.0,
            brownout_latency_increase_pct: 50.0,
            brownout_latency_min_increase_ms: 5.0,
            latency_baseline_window_s: 900.0,
            recovery_hold_s: 60.0,
        }
    }
}

impl Default for AntiFlap {
    fn default() -> Self {
        AntiFlap {
            challenger_margin_pct: 20.0,
            min_dwell_s: 60.0,
            max_move_pct: 25.0,
            weight_deadband_pct: 5.0,
            keep_margin_pct: 20.0,
            dampening: Dampening::default(),
        }
    }
}

impl Default for Dampening {
    fn default() -> Self {
        Dampening {
            flaps: 3,
            window_s: 300.0,
            hold_s: 900.0,
        }
    }
}

impl Default for Ranking {
    fn default() -> Self {
        Ranking {
            latency_bucket_ms: 10.0,
        }
    }
}

impl Default for Weights {
    fn default() -> Self {
        Weights { scale: 1000 }
    }
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the top of the file: `anti_flap.max_move_pct`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not YAML, or a field of the wrong type, or an unknown field.
    #[error("policy: {field}: {message}")]
    Parse { field: String, message: String },
    /// Every invalid field, not just the first.
    #[error("policy: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
}

impl PolicyError {
    /// The fields this error is about.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            PolicyError::Parse { field, .. } => vec![field.as_str()],
            PolicyError::Invalid(errs) => errs.iter().map(|e| e.field.as_str()).collect(),
        }
    }
}

/// Settings of one transit endpoint after defaults and overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct TransitPolicy {
    pub preference: u32,
    pub cost: Cost,
    pub high_watermark: f64,
    pub low_watermark: f64,
}

/// Settings of one directed pair after defaults and overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct PairPolicy {
    /// Index into [`Policy::sla_classes`].
    pub sla: usize,
    pub capacity: Capacity,
    pub min_tunnels: u32,
    pub priority: i32,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    file: PolicyFile,
    default_sla: usize,
    overrides: BTreeMap<(String, String), PairPolicy>,
}

impl Default for Policy {
    fn default() -> Self {
        // The default file validates; see the test below.
        match Policy::from_file(PolicyFile::default()) {
            Ok(p) => p,
            Err(_) => Policy {
                file: PolicyFile::default(),
                default_sla: 0,
                overrides: BTreeMap::new(),
            },
        }
    }
}

impl Policy {
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let file: PolicyFile = match serde_path_to_error::deserialize(de) {
            Ok(f) => f,
            Err(e) => {
                let field = e.path().to_string();
                let field = if field == "." { "(top)".into() } else { field };
                return Err(PolicyError::Parse {
                    field,
                    message: e.into_inner().to_string(),
                });
            }
        };
        Policy::from_file(file)
    }

    pub fn from_file(file: PolicyFile) -> Result<Policy, PolicyError> {
        let mut errs = Vec::new();
        let mut bad = |field: String, reason: String| errs.push(FieldError { field, reason });
        let pct = |v: f64, lo_open: bool| {
            v.is_finite() && v <= 100.0 && (v > 0.0 || (!lo_open && v == 0.0))
        };
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;

        if !(file.cycle_period_s.is_finite()
            && file.cycle_period_s >= 0.1
            && file.cycle_period_s <= 3600.0)
        {
            bad(
                "cycle_period_s".into(),
                format!(
                    "must be between 0.1 and 3600 seconds (got {})",
                    file.cycle_period_s
                ),
            );
        }
        if file.sla_classes.is_empty() {
            bad(
                "sla_classes".into(),
                "at least one SLA class is needed".into(),
            );
        }
        for (i, c) in file.sla_classes.iter().enumerate() {
            let f = |n: &str| format!("sla_classes[{i}].{n}");
            if c.name.is_empty() {
                bad(f("name"), "must not be empty".into());
            }
            if file.sla_classes[..i].iter().any(|o| o.name == c.name) {
                bad(f("name"), format!("{:?} is defined twice", c.name));
            }
            if !pct(c.max_loss_pct, false) {
                bad(
                    f("max_loss_pct"),
                    format!("must be between 0 and 100 (got {})", c.max_loss_pct),
                );
            }
            if !(nonneg(c.max_latency_ms) && c.max_latency_ms > 0.0) {
                bad(
                    f("max_latency_ms"),
                    format!(
                        "must be a positive number of milliseconds (got {})",
                        c.max_latency_ms
                    ),
                );
            }
            if !nonneg(c.max_jitter_ms) {
                bad(
                    f("max_jitter_ms"),
                    format!(
                        "must be a non-negative number of milliseconds (got {})",
                        c.max_jitter_ms
                    ),
                );
            }
        }
        let class = |name: &str| file.sla_classes.iter().position(|c| c.name == name);
        let check_pair = |prefix: &str,
                          sla: Option<&str>,
                          cap: Option<&Capacity>,
                          min_tunnels: Option<u32>,
                          bad: &mut dyn FnMut(String, String)| {
            if let Some(s) = sla {
                if class(s).is_none() {
                    let known: Vec<&str> =
                        file.sla_classes.iter().map(|c| c.name.as_str()).collect();
                    bad(
                        format!("{prefix}.sla"),
                        format!("unknown SLA class {s:?} (known: {})", known.join(", ")),
                    );
                }
            }
            if let Some(Capacity::Demand { margin_pct, .. }) = cap {
                if !(nonneg(*margin_pct) && *margin_pct <= 1000.0) {
                    bad(
                        format!("{prefix}.capacity.demand.margin_pct"),
                        format!("must be between 0 and 1000 (got {margin_pct})"),
                    );
                }
            }
            if let Some(n) = min_tunnels {
                if !(1..=64).contains(&n) {
                    bad(
                        format!("{prefix}.min_tunnels"),
                        format!("must be between 1 and 64 (got {n})"),
                    );
                }
            }
        };
        let d = &file.pairs.default;
        let default_sla_name = if d.sla.is_empty() {
            None
        } else {
            Some(d.sla.as_str())
        };
        check_pair(
            "pairs.default",
            default_sla_name,
            Some(&d.capacity),
            Some(d.min_tunnels),
            &mut bad,
        );
        for (i, o) in file.pairs.overrides.iter().enumerate() {
            let prefix = format!("pairs.overrides[{i}]");
            if o.from.is_empty() {
                bad(format!("{prefix}.from"), "must name a datacenter".into());
            }
            if o.to.is_empty() {
                bad(format!("{prefix}.to"), "must name a datacenter".into());
            }
            if !o.from.is_empty() && o.from == o.to {
                bad(format!("{prefix}.to"), "must differ from `from`".into());
            }
            if file.pairs.overrides[..i]
                .iter()
                .any(|p| p.from == o.from && p.to == o.to)
            {
                bad(
                    prefix.clone(),
                    format!("{} -> {} is overridden twice", o.from, o.to),
                );
            }
            check_pair(
                &prefix,
                o.sla.as_deref(),
                o.capacity.as_ref(),
                o.min_tunnels,
                &mut bad,
            );
        }
        let check_transit = |prefix: &str,
                             cost: Option<&Cost>,
                             high: Option<f64>,
                             low: Option<f64>,
                             base: &TransitSettings,
                             bad: &mut dyn FnMut(String, String)| {
            if let Some(c) = cost {
                match c {
                    Cost::PerGb(p) if !nonneg(*p) => bad(
                        format!("{prefix}.cost.per_gb"),
                        format!("must be a non-negative price (got {p})"),
                    ),
                    Cost::Commit { over_per_gb, .. } if !nonneg(*over_per_gb) => bad(
                        format!("{prefix}.cost.commit.over_per_gb"),
                        format!("must be a non-negative price (got {over_per_gb})"),
                    ),
                    _ => {}
                }
            }
            if let Some(h) = high {
                if !pct(h, true) {
                    bad(
                        format!("{prefix}.high_watermark_pct"),
                        format!("must be in (0, 100] (got {h})"),
                    );
                }
            }
            if let Some(l) = low {
                if !pct(l, false) {
                    bad(
                        format!("{prefix}.low_watermark_pct"),
                        format!("must be in [0, 100] (got {l})"),
                    );
                }
            }
            let h = high.unwrap_or(base.high_watermark_pct);
            let l = low.unwrap_or(base.low_watermark_pct);
            if (high.is_some() || low.is_some()) && l > h {
                bad(
                    format!("{prefix}.low_watermark_pct"),
                    format!("must not exceed the high watermark ({l} > {h})"),
                );
            }
        };
        let td = &file.transits.default;
        check_transit(
            "transits.default",
            Some(&td.cost),
            Some(td.high_watermark_pct),
            Some(td.low_watermark_pct),
            td,
            &mut bad,
        );
        for (name, o) in &file.transits.by_name {
            let prefix = format!("transits.by_name.{name}");
            let parts: Vec<&str> = name.split('/').collect();
            if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
                bad(
                    prefix.clone(),
                    "key must be `provider` or `datacenter/provider`".into(),
                );
            }
            check_transit(
                &prefix,
                o.cost.as_ref(),
                o.high_watermark_pct,
                o.low_watermark_pct,
                td,
                &mut bad,
            );
        }
        let h = &file.health;
        if h.min_measurements == 0 {
            bad(
                "health.min_measurements".into(),
                "must be at least 1".into(),
            );
        }
        if h.blackhole_lost_in_a_row == 0 {
            bad(
                "health.blackhole_lost_in_a_row".into(),
                "must be at least 1".into(),
            );
        }
        if !pct(h.brownout_loss_pct, true) {
            bad(
                "health.brownout_loss_pct".into(),
                format!("must be in (0, 100] (got {})", h.brownout_loss_pct),
            );
        }
        if !(nonneg(h.brownout_latency_increase_pct) && h.brownout_latency_increase_pct > 0.0) {
            bad(
                "health.brownout_latency_increase_pct".into(),
                format!("must be positive (got {})", h.brownout_latency_increase_pct),
            );
        }
        if !(nonneg(h.brownout_latency_min_increase_ms)
            && h.brownout_latency_min_increase_ms <= 10_000.0)
        {
            bad(
                "health.brownout_latency_min_increase_ms".into(),
                format!(
                    "must be between 0 and 10000 ms (got {})",
                    h.brownout_latency_min_increase_ms
                ),
            );
        }
        for (n, v) in [
            ("latency_baseline_window_s", h.latency_baseline_window_s),
            ("recovery_hold_s", h.recovery_hold_s),
        ] {
            if !(nonneg(v) && v <= 86_400.0) {
                bad(
                    format!("health.{n}"),
                    format!("must be between 0 and 86400 seconds (got {v})"),
                );
            }
        }
        if h.latency_baseline_window_s < 15.0 {
            bad(
                "health.latency_baseline_window_s".into(),
                "must be at least 15 seconds".into(),
            );
        }
        let a = &file.anti_flap;
        for (n, v) in [
            ("challenger_margin_pct", a.challenger_margin_pct),
            ("weight_deadband_pct", a.weight_deadband_pct),
            ("keep_margin_pct", a.keep_margin_pct),
        ] {
            if !(nonneg(v) && v <= 100.0) {
                bad(
                    format!("anti_flap.{n}"),
                    format!("must be between 0 and 100 (got {v})"),
                );
            }
        }
        if !pct(a.max_move_pct, true) {
            bad(
                "anti_flap.max_move_pct".into(),
                format!("must be in (0, 100] (got {})", a.max_move_pct),
            );
        }
        if !(nonneg(a.min_dwell_s) && a.min_dwell_s <= 86_400.0) {
            bad(
                "anti_flap.min_dwell_s".into(),
                format!(
                    "must be between 0 and 86400 seconds (got {})",
                    a.min_dwell_s
                ),
            );
        }
        if !(1..=64).contains(&a.dampening.flaps) {
            bad(
                "anti_flap.dampening.flaps".into(),
                format!("must be between 1 and 64 (got {})", a.dampening.flaps),
            );
        }
        for (n, v) in [
            ("window_s", a.dampening.window_s),
            ("hold_s", a.dampening.hold_s),
        ] {
            if !(nonneg(v) && v <= 86_400.0) {
                bad(
                    format!("anti_flap.dampening.{n}"),
                    format!("must be between 0 and 86400 seconds (got {v})"),
                );
            }
        }
        if !(file.ranking.latency_bucket_ms.is_finite() && file.ranking.latency_bucket_ms > 0.0) {
            bad(
                "ranking.latency_bucket_ms".into(),
                format!(
                    "must be a positive number of milliseconds (got {})",
                    file.ranking.latency_bucket_ms
                ),
            );
        }
        if !(10..=1_000_000).contains(&file.weights.scale) {
            bad(
                "weights.scale".into(),
                format!(
                    "must be between 10 and 1000000 (got {})",
                    file.weights.scale
                ),
            );
        }
        if !errs.is_empty() {
            return Err(PolicyError::Invalid(errs));
        }

        let default_sla = default_sla_name
            .and_then(class)
            .unwrap_or(file.sla_classes.len() - 1);
        let mut overrides = BTreeMap::new();
        for o in &file.pairs.overrides {
            let p = PairPolicy {
                sla: o.sla.as_deref().and_then(class).unwrap_or(default_sla),
                capacity: o.capacity.clone().unwrap_or_else(|| d.capacity.clone()),
                min_tunnels: o.min_tunnels.unwrap_or(d.min_tunnels),
                priority: o.priority.unwrap_or(d.priority),
            };
            overrides.insert((o.from.clone(), o.to.clone()), p);
        }
        Ok(Policy {
            file,
            default_sla,
            overrides,
        })
    }

    pub fn file(&self) -> &PolicyFile {
        &self.file
    }

    pub fn sla_classes(&self) -> &[SlaClass] {
        &self.file.sla_classes
    }

    pub fn health(&self) -> &Health {
        &self.file.health
    }

    pub fn anti_flap(&self) -> &AntiFlap {
        &self.file.anti_flap
    }

    pub fn cycle_period(&self) -> Duration {
        Duration::from_secs_f64(self.file.cycle_period_s)
    }

    pub fn latency_bucket_ms(&self) -> f64 {
        self.file.ranking.latency_bucket_ms
    }

    pub fn weight_scale(&self) -> u32 {
        self.file.weights.scale
    }

    /// The settings of traffic from `from` to `to`.
    pub fn pair(&self, from: &str, to: &str) -> PairPolicy {
        if let Some(p) = self.overrides.get(&(from.to_string(), to.to_string())) {
            return p.clone();
        }
        let d = &self.file.pairs.default;
        PairPolicy {
            sla: self.default_sla,
            capacity: d.capacity.clone(),
            min_tunnels: d.min_tunnels,
            priority: d.priority,
        }
    }

    /// The settings of provider `transit` in datacenter `dc`.
    pub fn transit(&self, dc: &str, transit: &str) -> TransitPolicy {
        let d = &self.file.transits.default;
        let by_dc = self.file.transits.by_name.get(&format!("{dc}/{transit}"));
        let by_name = self.file.transits.by_name.get(transit);
        let pick = |f: &dyn Fn(&TransitOverride) -> bool| {
            by_dc.filter(|o| f(o)).or(by_name.filter(|o| f(o)))
        };
        let preference = pick(&|o| o.preference.is_some())
            .and_then(|o| o.preference)
            .unwrap_or(d.preference);
        let cost = pick(&|o| o.cost.is_some())
            .and_then(|o| o.cost.clone())
            .unwrap_or_else(|| d.cost.clone());
        let high = pick(&|o| o.high_watermark_pct.is_some())
            .and_then(|o| o.high_watermark_pct)
            .unwrap_or(d.high_watermark_pct);
        let low = pick(&|o| o.low_watermark_pct.is_some())
            .and_then(|o| o.low_watermark_pct)
            .unwrap_or(d.low_watermark_pct);
        TransitPolicy {
            preference,
            cost,
            high_watermark: high / 100.0,
            // A per-name high below the default low would invert them; keep low <= high.
            low_watermark: low.min(high) / 100.0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid() {
        Policy::from_file(PolicyFile::default()).unwrap();
        let p = Policy::from_yaml("{}").unwrap();
        assert_eq!(p.file(), &PolicyFile::default());
    }

    #[test]
    fn the_example_policy_is_valid() {
        let text = include_str!("../../../docs/examples/policy.yaml");
        let p = Policy::from_yaml(text).unwrap();
        assert!(p.sla_classes().len() >= 2);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = Policy::from_yaml("anti_flap:\n  max_move_pct: lots\n").unwrap_err();
        assert_eq!(e.fields(), vec!["anti_flap.max_move_pct"], "{e}");
        let e = Policy::from_yaml("health:\n  brownout_los_pct: 2\n").unwrap_err();
        assert_eq!(e.fields(), vec!["health.brownout_los_pct"], "{e}");
        assert!(e.to_string().contains("brownout_los_pct"), "{e}");
        let e = Policy::from_yaml(
            "pairs:\n  overrides:\n    - from: a\n      to: b\n      capacity: { fixed: ten }\n",
        )
        .unwrap_err();
        assert_eq!(e.fields(), vec!["pairs.overrides[0].capacity.fixed"], "{e}");
    }

    #[test]
    fn validation_errors_name_every_bad_field() {
        let yaml = r#"
sla_classes:
  - { name: gold, max_loss_pct: 150, max_latency_ms: 100, max_jitter_ms: 5 }
  - { name: gold, max_loss_pct: 1, max_latency_ms: 0, max_jitter_ms: 5 }
pairs:
  default: { sla: platinum }
  overrides:
    - { from: sg1, to: sg1, min_tunnels: 0 }
transits:
  default: { high_watermark_pct: 50, low_watermark_pct: 70 }
  by_name:
    "a/b/c": { preference: 1 }
    lumen: { cost: { per_gb: -1 } }
anti_flap: { max_move_pct: 0 }
weights: { scale: 1 }
"#;
        let e = Policy::from_yaml(yaml).unwrap_err();
        let fields = e.fields();
        for f in [
            "sla_classes[0].max_loss_pct",
            "sla_classes[1].name",
            "sla_classes[1].max_latency_ms",
            "pairs.default.sla",
            "pairs.overrides[0].to",
            "pairs.overrides[0].min_tunnels",
            "transits.default.low_watermark_pct",
            "transits.by_name.a/b/c",
            "transits.by_name.lumen.cost.per_gb",
            "anti_flap.max_move_pct",
            "weights.scale",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(
            e.to_string().contains("unknown SLA class \"platinum\""),
            "{e}"
        );
    }

    #[test]
    fn overrides_and_transit_settings_resolve() {
        let yaml = r#"
sla_classes:
  - { name: gold, max_loss_pct: 0.5, max_latency_ms: 100, max_jitter_ms: 5 }
  - { name: bulk, max_loss_pct: 1, max_latency_ms: 300, max_jitter_ms: 50 }
pairs:
  default: { sla: bulk, min_tunnels: 3 }
  overrides:
    - { from: sg1, to: hk1, sla: gold, capacity: { fixed: 10G } }
transits:
  by_name:
    lumen: { preference: 2, cost: { per_gb: 0.01 } }
    sg1/lumen: { high_watermark_pct: 90 }
"#;
        let p = Policy::from_yaml(yaml).unwrap();
        let sh = p.pair("sg1", "hk1");
        assert_eq!(sh.sla, 0);
        assert_eq!(sh.capacity, Capacity::Fixed(Rate::gbps(10.0)));
        assert_eq!(sh.min_tunnels, 3);
        let hs = p.pair("hk1", "sg1");
        assert_eq!(hs.sla, 1);
        let t = p.transit("sg1", "lumen");
        assert_eq!(t.preference, 2);
        assert_eq!(t.cost, Cost::PerGb(0.01));
        assert!((t.high_watermark - 0.9).abs() < 1e-9);
        let t = p.transit("hk1", "lumen");
        assert!((t.high_watermark - 0.8).abs() < 1e-9);
        let t = p.transit("hk1", "telstra");
        assert_eq!(t.preference, 0);
    }
}
