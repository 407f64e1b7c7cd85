//! What the controller is fed each cycle: a typed, serde snapshot of membership, gateways,
//! tunnels with their probe windows, transit usage, demand and remote prefixes.
//!
//! Records arrive from the network (gateways publish them over the mesh), so nothing here
//! trusts them: [`Snapshot::check`] lists every record the engine will ignore and why, and the
//! engine never panics on a bad record.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point on the controller's monotonic clock, in milliseconds from an arbitrary origin.
/// Passed in by the caller (real or simulated); the engine never reads a clock itself.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1000))
    }

    pub fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Time elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;

    /// Saturating: a time never wraps.
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A bit rate in bits per second. YAML/JSON accept a number (bps) or a string with a decimal
/// suffix: `"10G"`, `"500M"`, `"1.5 Gbps"`, `"64k"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Rate(f64);

impl Rate {
    pub const ZERO: Rate = Rate(0.0);

    /// A rate from bits per second; anything negative or not finite becomes zero, so a rate is
    /// always usable in arithmetic.
    pub fn bps(v: f64) -> Rate {
        if v.is_finite() && v > 0.0 {
            Rate(v)
        } else {
            Rate(0.0)
        }
    }

    pub fn gbps(v: f64) -> Rate {
        Rate::bps(v * 1e9)
    }

    pub fn mbps(v: f64) -> Rate {
        Rate::bps(v * 1e6)
    }

    pub fn as_bps(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let (div, unit) = if v >= 1e12 {
            (1e12, "Tbps")
        } else if v >= 1e9 {
            (1e9, "Gbps")
        } else if v >= 1e6 {
            (1e6, "Mbps")
        } else if v >= 1e3 {
            (1e3, "kbps")
        } else {
            (1.0, "bps")
        };
        let x = v / div;
        // Three significant-ish decimals, without trailing zeros: 1.5 Gbps, 339 kbps.
        let s = format!("{x:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        write!(f, "{s} {unit}")
    }
}

/// Why a rate string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a rate: use bits per second or a number with k, M, G or T (e.g. \"10G\")")]
pub struct RateParseError(pub String);

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(s: &str) -> Result<Rate, RateParseError> {
        let err = || RateParseError(s.to_string());
        let t = s.trim();
        let t = t
            .strip_suffix("bps")
            .or_else(|| t.strip_suffix("bit/s"))
            .unwrap_or(t)
            .trim_end();
        let (num, mult) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1e3),
            Some((i, 'M')) => (&t[..i], 1e6),
            Some((i, 'G')) => (&t[..i], 1e9),
            Some((i, 'T')) => (&t[..i], 1e12),
            _ => (t, 1.0),
        };
        let v: f64 = num.trim().parse().map_err(|_| err())?;
        if !v.is_finite() || v < 0.0 {
            return Err(err());
        }
        Ok(Rate(v * mult))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole bits per second: rates are measured, fractions of a bit carry no meaning and
        // integers serialise identically everywhere.
        s.serialize_u64(self.0.round() as u64)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(v) if v.is_finite() && v >= 0.0 => Ok(Rate(v)),
            Raw::Num(v) => Err(serde::de::Error::custom(format!(
                "{v} is not a rate: must be a non-negative number of bits per second"
            ))),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// An Ethernet MAC address, written `70:5b:83:6b:72:a9`: the dataplane's type.
pub use gatewan_dataplane::wire::ethernet::{MacAddr, ParseMacError as MacParseError};

/// Everything the controller knows at the start of a cycle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The controllers in the mesh, for the election (empty: this controller runs alone).
    #[serde(default)]
    pub membership: Membership,
    #[serde(default)]
    pub datacenters: Vec<Datacenter>,
    #[serde(default)]
    pub gateways: Vec<Gateway>,
    /// Tunnels as each gateway reports them: one record per (reporting gateway, tunnel), so a
    /// WireGuard session normally appears twice, once from each side.
    #[serde(default)]
    pub tunnels: Vec<TunnelReport>,
    #[serde(default)]
    pub transit_usage: Vec<TransitUsage>,
    /// Traffic per datacenter pair, measured at the source.
    #[serde(default)]
    pub demand: Vec<Demand>,
    /// Each datacenter's prefixes (from bgpctl), which other datacenters' gateways attract.
    #[serde(default)]
    pub prefixes: Vec<DatacenterPrefixes>,
}

/// The controllers of the mesh as Serf shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// The mesh's membership Lamport clock for this view; it moves forward on every join,
    /// leave and failure, so a newer view always has a larger clock.
    #[serde(default)]
    pub clock: u64,
    #[serde(default)]
    pub controllers: Vec<ControllerMember>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerMember {
    pub id: String,
    pub live: bool,
    /// The term this controller says it leads with (its `lead` tag), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leading: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datacenter {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub id: String,
    pub datacenter: String,
    /// The fabric-facing VXLAN tunnel endpoint.
    pub vtep: IpAddr,
    pub router_mac: MacAddr,
    /// False when the mesh reports the gateway failed or left: it gets no orders.
    #[serde(default = "yes")]
    pub live: bool,
    pub transits: Vec<GatewayTransit>,
}

fn yes() -> bool {
    true
}

/// One transit-facing side of a gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayTransit {
    /// The provider's name (`lumen`), which keys the policy's transit settings.
    pub name: String,
    /// Port capacity, per direction.
    pub capacity: Rate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelState {
    Established,
    Handshaking,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub gateway: String,
    pub transit: String,
}

/// One gateway's view of one tunnel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelReport {
    /// The session's id, the same from both sides.
    pub id: String,
    /// The reporting gateway and its transit.
    pub local: Endpoint,
    pub remote: Endpoint,
    pub state: TunnelState,
    #[serde(default)]
    pub probe: ProbeWindow,
}

/// Probe results over the gateway's sliding window (STAMP through the tunnel).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeWindow {
    /// Probes sent in the window.
    pub measurements: u32,
    pub loss_pct: f64,
    /// Median round-trip time.
    pub latency_ms: f64,
    pub latency_p95_ms: f64,
    pub jitter_ms: f64,
    pub reorder_pct: f64,
    /// Probes lost in a row up to now: a blackhole shows here before it fills the window.
    pub lost_in_a_row: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitUsage {
    pub gateway: String,
    pub transit: String,
    /// Interface totals.
    pub rx: Rate,
    pub tx: Rate,
    /// The part of the totals carried by gatewan's own tunnels; the rest is background load
    /// the controller cannot move.
    #[serde(default)]
    pub sdwan_rx: Rate,
    #[serde(default)]
    pub sdwan_tx: Rate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demand {
    pub from: String,
    pub to: String,
    pub rate: Rate,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacenterPrefixes {
    pub datacenter: String,
    pub prefixes: Vec<IpNet>,
}

/// The version of [`GatewayReport`] this build speaks; a report of another is refused.
pub const REPORT_VERSION: u32 = 1;

/// What a gateway reports over the orders channel (`GET /v1/report`): itself, its view of
/// each tunnel, its transits' usage, the demand it forwards towards each remote datacenter,
/// its datacenter's prefixes and the order it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayReport {
    pub version: u32,
    pub gateway: Gateway,
    #[serde(default)]
    pub tunnels: Vec<TunnelReport>,
    #[serde(default)]
    pub transit_usage: Vec<TransitUsage>,
    #[serde(default)]
    pub demand: Vec<Demand>,
    #[serde(default)]
    pub prefixes: Vec<IpNet>,
    /// The order in force: its epoch and version.
    #[serde(default)]
    pub order: Option<(super::orders::Epoch, u64)>,
}

/// A record the engine ignores, and why. Named by content, never by position, so the list is
/// the same whatever order the records came in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InputIssue {
    /// `gateway`, `tunnel`, `transit_usage`, `demand`, `prefixes`, `datacenter`.
    pub kind: String,
    pub id: String,
    pub problem: String,
}

impl InputIssue {
    pub fn new(kind: &str, id: impl Into<String>, problem: impl Into<String>) -> InputIssue {
        InputIssue {
            kind: kind.to_string(),
            id: id.into(),
            problem: problem.into(),
        }
    }
}

impl ProbeWindow {
    /// The problem with these numbers, if any (negative, not finite, loss above 100%).
    pub fn problem(&self) -> Option<String> {
        let fields = [
            ("loss_pct", self.loss_pct, Some(100.0)),
            ("latency_ms", self.latency_ms, None),
            ("latency_p95_ms", self.latency_p95_ms, None),
            ("jitter_ms", self.jitter_ms, None),
            ("reorder_pct", self.reorder_pct, Some(100.0)),
        ];
        for (name, v, max) in fields {
            if !v.is_finite() || v < 0.0 || max.is_some_and(|m| v > m) {
                return Some(format!("probe.{name} = {v} is out of range"));
            }
        }
        None
    }
}

impl Snapshot {
    pub fn from_json(text: &str) -> Result<Snapshot, SnapshotError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| SnapshotError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Canonical JSON: records sorted, so two snapshots with the same content compare equal.
    pub fn to_canonical_json(&self) -> Result<String, serde_json::Error> {
        let mut s = self.clone();
        s.sort();
        serde_json::to_string_pretty(&s)
    }

    /// Sorts every list by its key (used for canonical output and examples only; the engine
    /// does not need sorted input).
    pub fn sort(&mut self) {
        self.membership.controllers.sort_by(|a, b| a.id.cmp(&b.id));
        self.datacenters.sort_by(|a, b| a.name.cmp(&b.name));
        self.gateways.sort_by(|a, b| a.id.cmp(&b.id));
        self.tunnels
            .sort_by(|a, b| (&a.local.gateway, &a.id).cmp(&(&b.local.gateway, &b.id)));
        self.transit_usage
            .sort_by(|a, b| (&a.gateway, &a.transit).cmp(&(&b.gateway, &b.transit)));
        self.demand
            .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        self.prefixes
            .sort_by(|a, b| a.datacenter.cmp(&b.datacenter));
    }
}

/// A snapshot that could not be read, with the path of the offending field.
#[derive(Debug, thiserror::Error)]
#[error("snapshot: {path}: {message}")]
pub struct SnapshotError {
    pub path: String,
    pub message: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!("10G".parse::<Rate>().unwrap(), Rate::gbps(10.0));
        assert_eq!("1.5 Gbps".parse::<Rate>().unwrap(), Rate::gbps(1.5));
        assert_eq!("500M".parse::<Rate>().unwrap(), Rate::mbps(500.0));
        assert_eq!("64k".parse::<Rate>().unwrap(), Rate::bps(64_000.0));
        assert_eq!("1200".parse::<Rate>().unwrap(), Rate::bps(1200.0));
        assert!("ten".parse::<Rate>().is_err());
        assert!("-1G".parse::<Rate>().is_err());
        assert!("G".parse::<Rate>().is_err());
        assert_eq!(Rate::gbps(1.5).to_string(), "1.5 Gbps");
        assert_eq!(Rate::bps(339_000.0).to_string(), "339 kbps");
    }

    #[test]
    fn rate_deserialises_from_number_or_string_and_rejects_negative() {
        let r: Rate = serde_json::from_str("\"2G\"").unwrap();
        assert_eq!(r, Rate::gbps(2.0));
        let r: Rate = serde_json::from_str("1000").unwrap();
        assert_eq!(r, Rate::bps(1000.0));
        assert!(serde_json::from_str::<Rate>("-5").is_err());
    }

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: MacAddr = "70:5b:83:6b:72:a9".parse().unwrap();
        assert_eq!(m.to_string(), "70:5b:83:6b:72:a9");
        for bad in [
            "70:5b:83:6b:72",
            "70:5b:83:6b:72:a9:00",
            "zz:5b:83:6b:72:a9",
            "705b836b72a9",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshot_errors_name_the_field() {
        let err = Snapshot::from_json(
            r#"{"gateways":[{"id":"g","datacenter":"d","vtep":"10.0.0.1","router_mac":"nope","transits":[]}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.path, "gateways[0].router_mac", "{err}");
    }

    #[test]
    fn probe_problems_are_found() {
        let mut p = ProbeWindow::default();
        assert!(p.problem().is_none());
        p.loss_pct = f64::NAN;
        assert!(p.problem().unwrap().contains("loss_pct"));
        p.loss_pct = 101.0;
        assert!(p.problem().is_some());
        p.loss_pct = 1.0;
        p.latency_ms = -3.0;
        assert!(p.problem().unwrap().contains("latency_ms"));
    }
}
