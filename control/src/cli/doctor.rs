//! `gatewan doctor`: what this machine and this build support.

use gatewan_dataplane::support;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub af_xdp: bool,
    /// Why AF_XDP is unavailable (empty when it is available).
    pub af_xdp_missing: Vec<String>,
    pub backend: &'static str,
}

pub fn report() -> Report {
    let af_xdp = support::af_xdp();
    Report {
        version: env!("CARGO_PKG_VERSION"),
        af_xdp: af_xdp.available(),
        backend: if af_xdp.available() {
            "af_xdp"
        } else {
            "udp-socket"
        },
        af_xdp_missing: af_xdp.missing,
    }
}

pub fn run(json: bool) -> anyhow::Result<()> {
    let report = report();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("gatewan {}", report.version);
    if report.af_xdp {
        println!("AF_XDP: available; the gateway will use the AF_XDP backend");
    } else {
        println!(
            "AF_XDP: unavailable; the gateway will use the portable UDP-socket backend because:"
        );
        for reason in &report.af_xdp_missing {
            println!("  - {reason}");
        }
    }
    Ok(())
}
