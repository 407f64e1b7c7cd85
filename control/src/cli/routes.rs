//! `gatewan routes [--json]`: sessions, imported and exported routes of a running bgpctl,
//! read from its control endpoint.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::bgp::control::{self, Status};

pub struct Options {
    pub socket: PathBuf,
    pub json: bool,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (text, status) = runtime.block_on(control::query(&opts.socket))?;
    if opts.json {
        let value: serde_json::Value = serde_json::from_str(&text)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h{m}m")
    } else if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Left-aligned columns wide enough for every cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|s| s.to_string()).collect(), &mut out);
    for row in rows {
        line(row.clone(), &mut out);
    }
    out
}

pub fn render(s: &Status) -> String {
    let mut out = format!(
        "bgpctl AS {} router-id {}\n\nSessions\n",
        s.local_as, s.router_id
    );
    let rows: Vec<Vec<String>> = s
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                format!(
                    "{}{}",
                    p.remote_as,
                    if p.ibgp { " (iBGP)" } else { " (eBGP)" }
                ),
                p.state.to_string(),
                p.established_secs
                    .map(duration)
                    .unwrap_or_else(|| "-".into()),
                p.routes_received.to_string(),
                p.routes_imported.to_string(),
                p.routes_sent.to_string(),
                format!(
                    "{}/{}/{}",
                    p.stats.updates_treat_as_withdraw,
                    p.stats.attributes_discarded,
                    p.stats.update_session_resets
                ),
                p.stats.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PEER",
            "AS",
            "STATE",
            "UP",
            "RECEIVED",
            "IMPORTED",
            "SENT",
            "TAW/DISCARD/RESET",
            "LAST ERROR",
        ],
        &rows,
    ));
    out.push_str("\nImported (local prefixes)\n");
    let rows: Vec<Vec<String>> = s
        .imported
        .iter()
        .map(|r| {
            vec![
                r.prefix.to_string(),
                r.vtep.to_string(),
                r.router_mac.to_string(),
                r.vni.to_string(),
                r.rd.to_string(),
                r.peer.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["PREFIX", "VTEP", "ROUTER MAC", "VNI", "RD", "FROM"],
        &rows,
    ));
    out.push_str("\nExported\n");
    let rows: Vec<Vec<String>> = s
        .exported
        .iter()
        .map(|r| {
            vec![
                r.prefix.to_string(),
                r.gateway.clone(),
                r.rd.to_string(),
                r.next_hop.to_string(),
                r.router_mac.to_string(),
                r.vni.to_string(),
                r.route_targets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PREFIX",
            "GATEWAY",
            "RD",
            "NEXT HOP",
            "ROUTER MAC",
            "VNI",
            "RT",
        ],
        &rows,
    ));
    let st = &s.import_stats;
    let _ = writeln!(
        out,
        "\nNot imported: {} no matching RT, {} not VXLAN, {} no router MAC, {} own, {} AS loop, {} other NLRI, {} label 0, {} anchors",
        st.no_matching_route_target, st.not_vxlan, st.no_router_mac, st.own_route, st.as_loop, st.ignored_nlri, st.label_zero, st.anchor
    );
    out
}
