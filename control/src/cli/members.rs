//! `gatewan members`: the mesh as gatewan sees it, read from a local Serf agent.
//!
//! It talks to the agent's RPC directly (the same agent a gateway supervises, or any other
//! member's), reads `members`, parses every member's tags, and pulls each gateway's prefix
//! list with queries (as a gateway repairs a missing list), verifying it against the digest
//! its tags announce. It then prints the same typed view the gateway's controller uses:
//! a table, or the whole snapshot as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::IpNet;
use tokio::sync::{mpsc, Semaphore};

use crate::mesh::prefixes::{pull_request, SyncConfig, EVENT_NAME};
use crate::mesh::rpc::{QueryParams, QueryRecord, RpcClient, RpcOptions};
use crate::mesh::view::{GatewayEntry, MeshSnapshot, MeshView};

pub struct Options {
    pub rpc_addr: SocketAddr,
    pub rpc_auth: Option<String>,
    pub json: bool,
    /// Skip fetching prefix lists (members and tags only).
    pub no_prefixes: bool,
    /// How long to spend fetching prefix lists.
    pub timeout: Duration,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snapshot = rt.block_on(collect(&opts))?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", table(&snapshot));
    }
    Ok(())
}

/// The agent to ask: the flags, else the gateway.yaml's `mesh:` section, else the default.
pub fn agent_of(
    config: Option<&std::path::Path>,
    rpc_addr: Option<SocketAddr>,
    rpc_auth: Option<&str>,
) -> anyhow::Result<(SocketAddr, Option<String>)> {
    let mesh = match config {
        Some(path) => {
            let cfg = crate::gateway::config::GatewayConfig::load(path)?;
            Some(cfg.mesh.with_context(|| {
                format!(
                    "{}: no mesh: section (the gateway is not a mesh member)",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    let addr = rpc_addr
        .or(mesh.as_ref().map(|m| m.rpc_addr))
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7373)));
    let auth = rpc_auth.map(str::to_owned).or(mesh.map(|m| m.rpc_auth));
    Ok((addr, auth))
}

/// Reads the mesh through the agent at `opts.rpc_addr`.
pub async fn collect(opts: &Options) -> anyhow::Result<MeshSnapshot> {
    let rpc = RpcClient::connect(
        opts.rpc_addr,
        RpcOptions {
            auth_key: opts.rpc_auth.clone(),
            timeout: opts.timeout.max(Duration::from_secs(5)),
            ..RpcOptions::default()
        },
    )
    .await
    .with_context(|| format!("Serf agent at {}", opts.rpc_addr))?;
    let local = rpc
        .stats()
        .await?
        .get("agent")
        .and_then(|a| a.get("name"))
        .cloned()
        .unwrap_or_default();
    // Nobody's list is "ours" here: every one is fetched and verified.
    let mut sync = SyncConfig::new("");
    sync.repair_after = Duration::ZERO;
    sync.repair_deadline = Duration::ZERO;
    sync.pull_interval = Duration::from_secs(1);
    let mut view = MeshView::new(sync);
    let members = rpc.members().await?;
    view.reconcile(&members, Instant::now());
    if !opts.no_prefixes {
        fetch_lists(&rpc, &mut view, opts.timeout).await;
    }
    let mut snapshot = view.snapshot();
    snapshot.local = local;
    Ok(snapshot)
}

fn complete(view: &MeshView) -> bool {
    view.snapshot()
        .members
        .values()
        .filter(|e| e.status == crate::mesh::view::GatewayStatus::Alive)
        .all(GatewayEntry::prefixes_current)
}

async fn fetch_lists(rpc: &RpcClient, view: &mut MeshView, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(1024);
    let permits = Arc::new(Semaphore::new(8));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !complete(view) {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            Some((from, payload)) = rx.recv() => {
                let _ = view.chunk(&payload, Some(&from), Instant::now());
            }
            _ = tick.tick() => {
                for pull in view.poll(Instant::now()) {
                    let params = QueryParams {
                        name: EVENT_NAME.into(),
                        payload: pull_request(pull.index).to_vec(),
                        filter_nodes: pull.nodes,
                        timeout: Some(Duration::from_secs(2)),
                        ..QueryParams::default()
                    };
                    let (rpc, tx, permits) = (rpc.clone(), tx.clone(), permits.clone());
                    tokio::spawn(async move {
                        let Ok(_permit) = permits.acquire_owned().await else { return };
                        let Ok(mut answers) = rpc.query(&params).await else { return };
                        let mut waiting = params.filter_nodes.clone();
                        while let Ok(Some(rec)) = answers.next().await {
                            if let QueryRecord::Response { from, payload } = rec {
                                waiting.retain(|n| *n != from);
                                let _ = tx.send((from, payload)).await;
                                if waiting.is_empty() {
                                    break;
                                }
                            }
                        }
                    });
                }
            }
        }
    }
}

fn prefixes_cell(e: &GatewayEntry) -> String {
    let announced = e.meta.as_ref().and_then(|m| m.prefix_list);
    match (&e.prefixes, announced) {
        (Some(list), _) => {
            let v4 = list
                .prefixes
                .iter()
                .filter(|p| matches!(p, IpNet::V4(_)))
                .count();
            let v6 = list.prefixes.len() - v4;
            let stale = if e.prefixes_current() {
                ""
            } else {
                " (outdated)"
            };
            format!(
                "{} (v4 {v4}, v6 {v6}) v{}{stale}",
                list.prefixes.len(),
                list.version
            )
        }
        (None, Some(tag)) => format!("not fetched (v{})", tag.version),
        (None, None) => "-".into(),
    }
}

/// The table `gatewan members` prints.
pub fn table(s: &MeshSnapshot) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "NAME".into(),
        "DC".into(),
        "ROLE".into(),
        "STATUS".into(),
        "ADDRESS".into(),
        "TRANSITS".into(),
        "PREFIXES".into(),
    ]];
    for e in s.members.values() {
        let (dc, role, transits) = match &e.meta {
            Some(m) => (
                m.datacenter.clone(),
                m.role.as_str().to_owned(),
                m.transits
                    .iter()
                    .map(|t| format!("{}({})", t.name, t.endpoints.len()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            None => (
                "-".into(),
                e.tags.get("role").cloned().unwrap_or_else(|| "-".into()),
                format!("bad tags: {}", e.meta_error.as_deref().unwrap_or("")),
            ),
        };
        let name = if e.name == s.local {
            format!("{} *", e.name)
        } else {
            e.name.clone()
        };
        rows.push([
            name,
            dc,
            role,
            e.status.as_str().into(),
            e.addr.to_string(),
            transits,
            prefixes_cell(e),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let c = &s.counters;
    let rejected: BTreeMap<String, u64> = c
        .list
        .rejected
        .iter()
        .filter(|(k, _)| !k.is_benign())
        .map(|(k, v)| (format!("{k:?}"), *v))
        .collect();
    if !rejected.is_empty() || c.bad_tags > 0 {
        out.push_str(&format!(
            "rejected payloads: {rejected:?}; members with bad tags: {}\n",
            c.bad_tags
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mesh::prefixes::{encode, PrefixList};
    use crate::mesh::rpc::{Member, MemberStatus};
    use crate::mesh::tags::{GatewayMeta, Role, TransitMeta};

    #[test]
    fn table_shows_members_their_metadata_and_lists() {
        let list = PrefixList::new(["10.1.0.0/16".parse().unwrap(), "fd01::/48".parse().unwrap()]);
        let enc = encode(&list, "gw2-fr1", 42, 448).unwrap();
        let meta = GatewayMeta {
            role: Role::Gateway,
            datacenter: "fr1".into(),
            transits: vec![TransitMeta {
                name: "lumen".into(),
                public_key: [3; 32],
                endpoints: vec!["203.0.113.2:6152".parse().unwrap()],
            }],
            echo_port: Some(7002),
            prefix_list: Some(enc.tag()),
            id: None,
            api: None,
            lead: None,
        };
        let member = |name: &str, tags| Member {
            name: name.into(),
            addr: "10.77.0.2".parse().unwrap(),
            port: 7946,
            tags,
            status: MemberStatus::Alive,
            protocol: [2, 5, 5],
            delegate: [2, 5, 5],
        };
        let mut view = MeshView::new(SyncConfig::new(""));
        let mut odd = BTreeMap::new();
        odd.insert("role".to_string(), "other".to_string());
        view.reconcile(
            &[
                member("gw2-fr1", meta.to_tags().unwrap()),
                member("odd", odd),
            ],
            Instant::now(),
        );
        let t = table(&view.snapshot());
        assert!(t.contains("not fetched (v42)"), "{t}");
        let (r, _) = view.chunk(&enc.chunks[0], Some("gw2-fr1"), Instant::now());
        assert!(r.is_ok());
        let t = table(&view.snapshot());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains("gw2-fr1") && lines[1].contains("fr1"));
        assert!(lines[1].contains("lumen(1)"));
        assert!(lines[1].contains("2 (v4 1, v6 1) v42"), "{t}");
        assert!(lines[2].contains("bad tags"));
    }
}
