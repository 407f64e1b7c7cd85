//! `gatewan xdp-watch`: attaches gatewan's XDP program to an interface and prints its counters
//! (per verdict, then redirected VXLAN and WireGuard, steered packets with no socket, malformed
//! headers) until stopped (SIGINT/SIGTERM) or after `--count` reports; detaches on exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gatewan_dataplane::xdp::{AttachMode, AttachedXdp};

pub struct Options {
    pub interface: String,
    pub mode: AttachMode,
    pub interval: Duration,
    pub count: Option<u64>,
    pub json: bool,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let attached = AttachedXdp::attach(&opts.interface, opts.mode)
        .with_context(|| format!("attaching the XDP program to {}", opts.interface))?;
    tracing::info!(interface = attached.interface(), "XDP program attached");
    let mut reports = 0u64;
    let mut next = Instant::now() + opts.interval;
    while !stop.load(Ordering::Relaxed) && opts.count.is_none_or(|n| reports < n) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(20).min(opts.interval));
            continue;
        }
        next += opts.interval;
        reports += 1;
        print_counters(&attached, opts.json)?;
    }
    drop(attached);
    tracing::info!(interface = %opts.interface, "XDP program detached");
    Ok(())
}

fn print_counters(attached: &AttachedXdp, json: bool) -> anyhow::Result<()> {
    let mut fields = Vec::new();
    let mut line = format!("{}:", attached.interface());
    for (counter, count) in attached.counters()?.iter() {
        line.push_str(&format!(
            " {} {} pkts {} B",
            counter.name(),
            count.packets,
            count.bytes
        ));
        fields.push((counter.name(), count));
    }
    if json {
        let obj: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(name, c)| {
                (
                    name.to_owned(),
                    serde_json::json!({ "packets": c.packets, "bytes": c.bytes }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "interface": attached.interface(), "counters": obj })
        );
    } else {
        println!("{line}");
    }
    Ok(())
}
