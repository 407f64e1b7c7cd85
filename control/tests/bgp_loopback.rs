//! Two bgpctl speakers in one process over loopback TCP: one exports, the other imports.
//! Exercises the tokio adapter, the control endpoint and collision resolution without root.

mod bgp_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bgp_common::{export, export_set};
use gatewan_control::bgp::config::{Config, ImportConfig, PeerConfig};
use gatewan_control::bgp::control;
use gatewan_control::bgp::rib::{ImportEvent, ImportedRoute};
use gatewan_control::bgp::session::State;
use gatewan_control::bgp::speaker::{self, BgpHandle, Subscription};
use gatewan_control::cli::routes::render;

const WAIT: Duration = Duration::from_secs(30);

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "gatewan-bgp-test-{}-{tag}.sock",
        std::process::id()
    ))
}

fn base(id: u8, tag: &str) -> Config {
    Config {
        local_as: 65000,
        router_id: Ipv4Addr::new(10, 0, 0, id),
        listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
        control_socket: socket_path(tag),
        hold_time: 9,
        connect_retry: 0.1,
        connect_retry_max: 1.0,
        graceful_restart: Default::default(),
        peers: vec![],
        import: ImportConfig::default(),
        export: None,
        sdwan: None,
    }
}

fn peer(port: u16, passive: bool) -> PeerConfig {
    PeerConfig {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        remote_as: 65000,
        passive,
        local_address: None,
        hold_time: None,
        md5_password: None,
    }
}

async fn next_event(sub: &mut Subscription) -> ImportEvent {
    tokio::time::timeout(WAIT, sub.events.recv())
        .await
        .expect("an import event in time")
        .expect("event channel open")
}

/// Waits until the local prefix table holds `n` routes; returns them.
async fn table_of(h: &BgpHandle, n: usize) -> Vec<ImportedRoute> {
    let mut rx = h.local_prefixes();
    let t = tokio::time::timeout(WAIT, rx.wait_for(|t| t.len() == n))
        .await
        .unwrap_or_else(|_| panic!("never {n} local prefixes"))
        .expect("speaker running");
    t.as_ref().clone()
}

async fn until_state(h: &BgpHandle, want: State) {
    tokio::time::timeout(WAIT, async {
        loop {
            let st = h.status().await.expect("status");
            if st.peers.iter().all(|p| p.state == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("peers never reached {want}"));
}

fn added(ev: ImportEvent) -> ImportedRoute {
    match ev {
        ImportEvent::Add(r) => r,
        other => panic!("expected an Add, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_export_import_withdraw_and_session_down() {
    logs();
    // A exports and waits for B's connection; B connects and imports.
    let mut a_cfg = base(1, "a");
    a_cfg.peers = vec![peer(1, true)];
    a_cfg.export = Some(export(&[
        ("10.188.0.0/14", &["gw1", "gw2"]),
        ("fd05::/16", &["gw1"]),
    ]));
    let (a, a_task) = speaker::spawn(a_cfg.clone()).await.expect("speaker A");
    let port = a.listen_addr().expect("A listens").port();

    let mut b_cfg = base(2, "b");
    b_cfg.listen = None;
    b_cfg.peers = vec![peer(port, false)];
    b_cfg.import.route_targets = vec!["65000:2204857".parse().expect("rt")];
    let (b, b_task) = speaker::spawn(b_cfg.clone()).await.expect("speaker B");
    let mut sub = b.subscribe();
    // The session may be up before the subscription: snapshot plus events cover it.
    let mut got = sub.snapshot.clone();
    while got.len() < 3 {
        let r = added(next_event(&mut sub).await);
        if !got.contains(&r) {
            got.push(r);
        }
    }
    got.sort();
    let v4: Vec<_> = got.iter().filter(|r| r.prefix.addr().is_ipv4()).collect();
    assert_eq!(v4.len(), 2);
    assert_eq!(v4[0].vni, 2204857);
    assert_eq!(v4[0].vtep.to_string(), "10.184.84.44");
    assert_eq!(v4[0].router_mac.to_string(), "70:5b:83:6b:72:a9");
    assert_eq!(v4[0].rd.to_string(), "28763:2204857001");
    assert_eq!(v4[1].vtep.to_string(), "10.184.84.45");
    let v6 = got
        .iter()
        .find(|r| r.prefix.addr().is_ipv6())
        .expect("v6 route");
    assert_eq!(v6.prefix.to_string(), "fd05::/16");
    let mut table = table_of(&b, 3).await;
    table.sort();
    assert_eq!(table, got);

    // Status over the control socket, as `gatewan routes` reads it.
    let (_, status) = control::query(&b_cfg.control_socket)
        .await
        .expect("control query");
    assert_eq!(status.peers[0].state, State::Established);
    assert_eq!(status.peers[0].routes_imported, 3);
    let table = render(&status);
    assert!(
        table.contains("10.188.0.0/14") && table.contains("Established"),
        "{table}"
    );
    let (_, a_status) = control::query(&a_cfg.control_socket)
        .await
        .expect("A status");
    // Three routes and the anchors of gw1 (both families) and gw2, which B leaves out.
    assert_eq!(a_status.exported.len(), 6);
    assert_eq!(a_status.peers[0].routes_sent, 6);

    // Only the difference goes out: gw2 stops serving 10.188/14.
    a.set_exports(a_cfg_export(&[
        ("10.188.0.0/14", &["gw1"]),
        ("fd05::/16", &["gw1"]),
    ]))
    .await
    .expect("new exports");
    match next_event(&mut sub).await {
        ImportEvent::Withdraw(r) => assert_eq!(r.vtep.to_string(), "10.184.84.45"),
        other => panic!("{other:?}"),
    }
    table_of(&b, 2).await;
    let (_, a_status) = control::query(&a_cfg.control_socket)
        .await
        .expect("A status");
    assert_eq!(
        a_status.peers[0].stats.updates_out,
        1 + 1 + 1 + 1,
        "v4 + v6 + EoR + one withdrawal"
    );

    // A stops: B's session goes down and its routes are withdrawn.
    a.shutdown(Some("test over".into())).await;
    a_task.await.expect("A stopped");
    let mut withdrawn = 0;
    while withdrawn < 2 {
        if let ImportEvent::Withdraw(_) = next_event(&mut sub).await {
            withdrawn += 1;
        }
    }
    table_of(&b, 0).await;
    let st = b.status().await.expect("status");
    assert_ne!(st.peers[0].state, State::Established);
    let err = st.peers[0].stats.last_error.clone().unwrap_or_default();
    assert!(err.contains("test over") || err.contains("closed"), "{err}");
    b.shutdown(None).await;
    b_task.await.expect("B stopped");
}

fn a_cfg_export(prefixes: &[(&str, &[&str])]) -> gatewan_control::bgp::rib::ExportSet {
    export_set(base(1, "unused"), prefixes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_both_sides_active_resolve_the_collision() {
    logs();
    // Both listen and both connect: RFC 4271 collision resolution must leave one session.
    let mut a_cfg = base(1, "ca");
    a_cfg.control_socket = PathBuf::new();
    let mut b_cfg = base(2, "cb");
    b_cfg.control_socket = PathBuf::new();
    // Bind both listeners first, then give each the other's port.
    let a_l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let b_l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let (pa, pb) = (
        a_l.local_addr().expect("a").port(),
        b_l.local_addr().expect("b").port(),
    );
    drop((a_l, b_l));
    a_cfg.listen = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), pa));
    b_cfg.listen = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), pb));
    a_cfg.peers = vec![peer(pb, false)];
    b_cfg.peers = vec![peer(pa, false)];
    a_cfg.export = Some(export(&[("10.1.0.0/16", &["gw1"])]));
    b_cfg.import.route_targets = vec!["*:2204857".parse().expect("rt")];
    let (a, ta) = speaker::spawn(a_cfg).await.expect("A");
    let (b, tb) = speaker::spawn(b_cfg).await.expect("B");
    let t = table_of(&b, 1).await;
    assert_eq!(t[0].prefix.to_string(), "10.1.0.0/16");
    until_state(&a, State::Established).await;
    until_state(&b, State::Established).await;
    // Two keepalive rounds later (hold 9 s, keepalive every 3 s) there is still exactly
    // one session each way: the losing connection did not come back.
    tokio::time::timeout(WAIT, async {
        loop {
            let ka = |s: &gatewan_control::bgp::control::Status| s.peers[0].stats.keepalives_in;
            if ka(&a.status().await.expect("A")) >= 3 && ka(&b.status().await.expect("B")) >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("keepalives flow");
    let sa = a.status().await.expect("A");
    let sb = b.status().await.expect("B");
    assert_eq!(sa.peers[0].state, State::Established);
    assert_eq!(sb.peers[0].state, State::Established);
    assert_eq!(
        sa.peers[0].stats.established_count, 1,
        "{:?}",
        sa.peers[0].stats
    );
    assert_eq!(
        sb.peers[0].stats.established_count, 1,
        "{:?}",
        sb.peers[0].stats
    );
    a.shutdown(None).await;
    b.shutdown(None).await;
    let _ = (ta.await, tb.await);
}
