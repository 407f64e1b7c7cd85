//! What `gatewan status` shows for each tunnel, in the layout of the design brief, and the
//! human formats it uses (bitrates, percentages, durations).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The handshake state of a tunnel as operators read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelState {
    /// No session yet: handshakes are being sent or awaited.
    Connecting,
    /// A current session exists and the probes are answered.
    Established,
    /// A session exists but the probes go unanswered (the path is dead).
    Unreachable,
    /// The last session expired (reject-after-time) and no new one came up.
    Expired,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunnelStatus {
    pub id: String,
    /// `static` (gateway.yaml) or `mesh` (built from the mesh view).
    #[serde(default)]
    pub origin: String,
    pub networks: String,
    pub meta: Meta,
    pub usage: String,
    pub probe: ProbeStatus,
    pub peer: String,
    pub state: TunnelState,
    pub target_datacenter: String,
    pub interface: String,
    pub started_at: String,
    pub local_info: EndpointInfo,
    pub peer_info: EndpointInfo,
    pub counters: Counters,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub datacenter: String,
    pub sdwan_local_transit: String,
    pub sdwan_peer_transit: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub source_addr: String,
    pub target_endpoint: String,
    /// `stamp` or `icmp`.
    pub method: String,
    pub measurements: usize,
    pub loss: String,
    pub latency: String,
    pub latency_p95: String,
    pub jitter: String,
    pub reorder: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub public_endpoint: String,
    pub local_address_v4: String,
    pub local_address_v6: String,
    pub public_key: String,
    pub echo_port: String,
}

/// Raw counters, for scripts (the human-readable figures above are derived from them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bps: u64,
    pub tx_bps: u64,
    pub handshakes_sent: u64,
    pub handshakes_completed: u64,
    pub probes_sent: u64,
    pub probes_lost: u64,
    /// Age of the current session's handshake (`wg show`'s "latest handshake").
    pub seconds_since_handshake: Option<u64>,
    /// Inner packets from this tunnel sent on to the fabric.
    pub forwarded_to_fabric: u64,
    /// Packets dropped on this tunnel, per reason.
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// `1.6 Mbps`, `339 kbps`, `1.0 Gbps`: three significant figures at most, SI units.
pub fn format_bitrate(bps: u64) -> String {
    let bps = bps as f64;
    let (value, unit) = if bps >= 1e12 {
        (bps / 1e12, "Tbps")
    } else if bps >= 1e9 {
        (bps / 1e9, "Gbps")
    } else if bps >= 1e6 {
        (bps / 1e6, "Mbps")
    } else if bps >= 1e3 {
        (bps / 1e3, "kbps")
    } else {
        return format!("{} bps", bps as u64);
    };
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// `0.0%` from a 0..1 ratio.
pub fn format_ratio(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// `224.36043ms`, `186.54µs`, or `-` when there is no figure yet.
pub fn format_duration(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{d:?}"))
}

/// `Mon, 01 Jan 0001 00:00:00 UTC` style (RFC 1123 with the zone spelled UTC).
pub fn format_time(t: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = t.into();
    t.format("%a, %d %b %Y %H:%M:%S UTC").to_string()
}

/// `capacity: 1.0 Gbps rx_bps: 1.6 Mbps tx_bps: 339 kbps`.
pub fn format_usage(capacity_bps: Option<u64>, rx_bps: u64, tx_bps: u64) -> String {
    let capacity = capacity_bps.map_or_else(|| "unknown".to_owned(), format_bitrate);
    format!(
        "capacity: {capacity} rx_bps: {} tx_bps: {}",
        format_bitrate(rx_bps),
        format_bitrate(tx_bps)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_design_brief() {
        assert_eq!(format_bitrate(1_600_000), "1.6 Mbps");
        assert_eq!(format_bitrate(339_000), "339 kbps");
        assert_eq!(format_bitrate(1_000_000_000), "1.0 Gbps");
        assert_eq!(format_bitrate(512), "512 bps");
        assert_eq!(
            format_usage(Some(1_000_000_000), 1_600_000, 339_000),
            "capacity: 1.0 Gbps rx_bps: 1.6 Mbps tx_bps: 339 kbps"
        );
        assert_eq!(format_ratio(0.0), "0.0%");
        assert_eq!(format_ratio(0.025), "2.5%");
        assert_eq!(
            format_duration(Some(Duration::from_nanos(224_360_430))),
            "224.36043ms"
        );
        assert_eq!(
            format_duration(Some(Duration::from_nanos(186_540))),
            "186.54µs"
        );
        assert_eq!(format_duration(None), "-");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        assert_eq!(format_time(t), "Mon, 24 Nov 2025 16:00:00 UTC");
    }
}
