//! Helpers shared by bgpctl's tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use gatewan_control::bgp::config::{Config, ExportConfig, GatewayConfig, PrefixConfig};
use gatewan_control::bgp::rib::ExportSet;

/// The export section the tests use: two gateways, VNI 2204857, one route target, and
/// `prefixes` with the gateways each should be attracted to.
pub fn export(prefixes: &[(&str, &[&str])]) -> ExportConfig {
    let gw = |vtep: &str, mac: &str| GatewayConfig {
        vtep: vtep.parse().expect("vtep"),
        router_mac: mac.parse().expect("mac"),
        rd: None,
    };
    ExportConfig {
        vni: 2204857,
        route_targets: vec!["65000:2204857".parse().expect("rt")],
        gateways: [
            ("gw1".to_owned(), gw("10.184.84.44", "70:5b:83:6b:72:a9")),
            ("gw2".to_owned(), gw("10.184.84.45", "70:5b:83:6b:72:aa")),
        ]
        .into(),
        prefixes: prefixes
            .iter()
            .map(|(p, g)| PrefixConfig {
                prefix: p.parse().expect("prefix"),
                gateways: g.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
    }
}

/// The routes `config` would export with [`export`]`(prefixes)`.
pub fn export_set(mut config: Config, prefixes: &[(&str, &[&str])]) -> ExportSet {
    config.export = Some(export(prefixes));
    config.export_set()
}

/// Polls `probe` until it returns something (a condition wait; `within` is only a safety net
/// against a hang, nothing is asserted about how long it took).
pub fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
