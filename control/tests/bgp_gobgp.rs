//! bgpctl against a real GoBGP (Debian gobgpd 3.10) route reflector, in network namespaces
//! from the test bed. Test names carry `gobgp_`: they need root, `gobgpd` and `gobgp`.
//!
//! Topology: namespace `rr` runs gobgpd (10.99.0.1/30), namespace `gw` runs bgpctl
//! (10.99.0.2/30) on a tokio runtime whose threads were created inside that namespace.

mod bgp_common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bgp_common::{export, export_set, wait_for};
use gatewan_control::bgp::config::{Config, ImportConfig, PeerConfig};
use gatewan_control::bgp::rib::{is_anchor_prefix, ImportedRoute};
use gatewan_control::bgp::session::State;
use gatewan_control::bgp::speaker::{self, BgpHandle};
use gatewan_testbed::{require, Need, Netns, ProcessId, Testbed};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);
const RR_ADDR: &str = "10.99.0.1";
const GW_ADDR: &str = "10.99.0.2";
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

struct Lab {
    tb: Testbed,
    rr: Netns,
    gw: Netns,
    api_port: String,
    conf: PathBuf,
    gobgpd: ProcessId,
}

fn gobgpd_conf(rr_as: u32, gw_as: u32, passive: bool, md5: Option<&str>, gr: bool) -> String {
    let auth = md5
        .map(|k| format!("    auth-password = \"{k}\"\n"))
        .unwrap_or_default();
    let rr_client = if rr_as == gw_as {
        format!(
            "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{RR_ADDR}\"\n"
        )
    } else {
        String::new()
    };
    format!(
        r#"[global.config]
  as = {rr_as}
  router-id = "{RR_ADDR}"
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{GW_ADDR}"
    peer-as = {gw_as}
{auth}  [neighbors.transport.config]
    passive-mode = {passive}
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
{rr_client}{gr_neighbor}  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l2vpn-evpn"
{gr_family}"#,
        gr_neighbor = if gr {
            "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 30\n"
        } else {
            ""
        },
        gr_family = if gr {
            "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
        } else {
            ""
        },
    )
}

impl Lab {
    /// gobgpd in AS `rr_as`, peering with bgpctl in AS `gw_as`; `passive`: gobgpd waits for
    /// bgpctl to connect.
    fn new(rr_as: u32, gw_as: u32, passive: bool) -> Lab {
        Self::with_md5(rr_as, gw_as, passive, None)
    }

    fn with_md5(rr_as: u32, gw_as: u32, passive: bool, md5: Option<&str>) -> Lab {
        Self::build(rr_as, gw_as, passive, md5, false)
    }

    /// gobgpd as a graceful restart helper for EVPN (RFC 4724).
    fn graceful(rr_as: u32, gw_as: u32) -> Lab {
        Self::build(rr_as, gw_as, true, None, true)
    }

    fn build(rr_as: u32, gw_as: u32, passive: bool, md5: Option<&str>, gr: bool) -> Lab {
        require(&[Need::Root, Need::Tool("gobgpd"), Need::Tool("gobgp")]);
        let mut tb = Testbed::new().expect("test bed");
        let rr = tb.add_netns("rr").expect("netns rr");
        let gw = tb.add_netns("gw").expect("netns gw");
        let (l_rr, l_gw) = tb.add_veth(&rr, &gw, 1).expect("veth");
        l_rr.add_addr(&format!("{RR_ADDR}/30")).expect("addr rr");
        l_gw.add_addr(&format!("{GW_ADDR}/30")).expect("addr gw");
        // The API listens on the namespace's own loopback; still unique per test process.
        let port = 50100
            + (std::process::id() % 5000) as u16 * 2
            + NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let conf = tb.dir().join("gobgpd.toml");
        std::fs::write(&conf, gobgpd_conf(rr_as, gw_as, passive, md5, gr))
            .expect("write gobgpd.toml");
        let mut lab = Lab {
            gobgpd: ProcessId(0),
            tb,
            rr,
            gw,
            api_port: port.to_string(),
            conf,
        };
        lab.start_gobgpd();
        lab
    }

    fn start_gobgpd(&mut self) {
        let conf = self.conf.display().to_string();
        let api = format!("127.0.0.1:{}", self.api_port);
        self.gobgpd = self
            .tb
            .spawn(
                &self.rr,
                "gobgpd",
                ["-p", "-f", &conf, "--api-hosts", &api, "--pprof-disable"],
            )
            .expect("spawn gobgpd");
        wait_for("gobgpd API", WAIT, || self.gobgp(&["global"]).ok());
    }

    fn gobgp(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-p", &self.api_port];
        all.extend_from_slice(args);
        self.rr.exec("gobgp", all).map_err(|e| e.to_string())
    }

    /// `gobgp global rib -a evpn -j`: route key -> paths.
    fn rib(&self) -> serde_json::Map<String, Value> {
        let text = self
            .gobgp(&["global", "rib", "-a", "evpn", "-j"])
            .expect("gobgp global rib");
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            // An empty RIB prints `null` or nothing.
            _ => serde_json::Map::new(),
        }
    }

    /// The paths of the RIB, gateways' anchors left out (their own test checks them).
    fn rib_paths(&self) -> Vec<Value> {
        self.rib()
            .into_iter()
            .filter(|(k, _)| !is_anchor_key(k))
            .filter_map(|(_, v)| v.as_array().and_then(|a| a.first().cloned()))
            .collect()
    }

    fn bgpctl_config(&self, local_as: u32, remote_as: u32, passive: bool) -> Config {
        Config {
            local_as,
            router_id: GW_ADDR.parse().expect("id"),
            listen: passive.then(|| SocketAddr::new(GW_ADDR.parse().expect("addr"), 179)),
            control_socket: self.tb.dir().join("bgpctl.sock"),
            hold_time: 9,
            connect_retry: 0.5,
            connect_retry_max: 2.0,
            graceful_restart: Default::default(),
            peers: vec![PeerConfig {
                address: RR_ADDR.parse().expect("rr"),
                port: 179,
                remote_as,
                passive,
                local_address: None,
                hold_time: None,
                md5_password: None,
            }],
            import: ImportConfig {
                route_targets: vec!["65000:2204857".parse().expect("rt")],
            },
            export: Some(export(&[
                ("10.188.0.0/14", &["gw1", "gw2"]),
                ("fd05::/16", &["gw1"]),
            ])),
            sdwan: None,
        }
    }

    /// Runs `body` with a speaker started inside the `gw` namespace.
    fn with_speaker<F>(&self, config: Config, body: F)
    where
        F: AsyncFnOnce(BgpHandle) + Send,
    {
        self.gw
            .run(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let (h, task) = speaker::spawn(config).await.expect("speaker");
                    body(h.clone()).await;
                    h.shutdown(Some("test done".into())).await;
                    let _ = task.await;
                });
            })
            .expect("run in gw namespace");
    }
}

/// Whether a GoBGP route key (`...[prefix:P]`) is a gateway's anchor.
fn is_anchor_key(key: &str) -> bool {
    key.rsplit_once("[prefix:")
        .and_then(|(_, p)| p.trim_end_matches(']').parse::<ipnet::IpNet>().ok())
        .is_some_and(|p| is_anchor_prefix(&p))
}

/// The least configuration an export set can be computed from.
fn minimal() -> Config {
    Config::parse("local_as: 1\nrouter_id: 10.0.0.1\npeers: []\n").expect("config")
}

async fn wait_async<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn local_prefixes(h: &BgpHandle, n: usize) -> Vec<ImportedRoute> {
    let mut rx = h.local_prefixes();
    let t = match tokio::time::timeout(WAIT, rx.wait_for(|t| t.len() == n)).await {
        Ok(t) => t.expect("speaker running").clone(),
        Err(_) => panic!(
            "never {n} local prefixes: {:?}",
            h.local_prefixes().borrow()
        ),
    };
    let mut v = t.as_ref().clone();
    v.sort();
    v
}

/// The attribute of `type` in a path of gobgp's JSON.
fn attr(path: &Value, ty: u64) -> Option<&Value> {
    path["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(ty))
}

/// Checks one exported route as GoBGP shows it.
fn check_path(path: &Value, prefix: &str, rd_assigned: u64, next_hop: &str, mac: &str, ibgp: bool) {
    let nlri = &path["nlri"]["value"];
    assert_eq!(path["nlri"]["type"], 5, "{path}");
    assert_eq!(nlri["prefix"], prefix, "{path}");
    assert_eq!(nlri["rd"]["type"], 0, "{path}");
    assert_eq!(nlri["rd"]["admin"], 28763, "{path}");
    assert_eq!(nlri["rd"]["assigned"], rd_assigned, "{path}");
    assert_eq!(nlri["label"], 2204857, "{path}");
    assert_eq!(nlri["etag"], 0, "{path}");
    assert_eq!(nlri["esi"], "single-homed", "{path}");
    let mp = attr(path, 14).expect("MP_REACH_NLRI");
    assert_eq!(mp["nexthop"], next_hop, "{path}");
    assert_eq!(
        (mp["afi"].as_u64(), mp["safi"].as_u64()),
        (Some(25), Some(70))
    );
    let ext = attr(path, 16).expect("extended communities")["value"]
        .as_array()
        .expect("list")
        .clone();
    assert!(
        ext.iter()
            .any(|e| e["type"] == 0 && e["subtype"] == 2 && e["value"] == "65000:2204857"),
        "route target: {ext:?}"
    );
    assert!(
        ext.iter()
            .any(|e| e["type"] == 3 && e["subtype"] == 12 && e["tunnel_type"] == 8),
        "VXLAN encapsulation: {ext:?}"
    );
    assert!(
        ext.iter()
            .any(|e| e["type"] == 6 && e["subtype"] == 3 && e["mac"] == mac),
        "router's MAC: {ext:?}"
    );
    if ibgp {
        assert_eq!(
            attr(path, 5).map(|a| a["value"].clone()),
            Some(Value::from(100))
        );
    } else {
        assert!(attr(path, 5).is_none(), "no LOCAL_PREF over eBGP: {path}");
        let as_path = attr(path, 2).expect("AS_PATH").to_string();
        assert!(as_path.contains("65000"), "{as_path}");
    }
}

fn find<'a>(paths: &'a [Value], prefix: &str, rd_assigned: u64) -> Option<&'a Value> {
    paths.iter().find(|p| {
        p["nlri"]["value"]["prefix"] == prefix
            && p["nlri"]["value"]["rd"]["assigned"] == rd_assigned
    })
}

#[test]
fn gobgp_exports_appear_with_rd_label_next_hop_mac_encap_rt_and_withdraws_remove_them() {
    let lab = Lab::new(65000, 65000, true);
    let config = lab.bgpctl_config(65000, 65000, false);
    lab.with_speaker(config, async |h| {
        let paths = wait_async("3 routes in gobgpd", async || {
            let p = lab.rib_paths();
            (p.len() == 3).then_some(p)
        })
        .await;
        check_path(
            find(&paths, "10.188.0.0/14", 2204857001).expect("gw1 v4"),
            "10.188.0.0/14",
            2204857001,
            "10.184.84.44",
            "70:5b:83:6b:72:a9",
            true,
        );
        check_path(
            find(&paths, "10.188.0.0/14", 2204857002).expect("gw2 v4"),
            "10.188.0.0/14",
            2204857002,
            "10.184.84.45",
            "70:5b:83:6b:72:aa",
            true,
        );
        let v6 = find(&paths, "fd05::/16", 2204857001).expect("gw1 v6");
        check_path(
            v6,
            "fd05::/16",
            2204857001,
            "10.184.84.44",
            "70:5b:83:6b:72:a9",
            true,
        );
        assert_eq!(v6["nlri"]["value"]["gateway"], "::");

        // gw2 stops serving 10.188/14: only its route goes away.
        h.set_exports(export_set(
            minimal(),
            &[("10.188.0.0/14", &["gw1"]), ("fd05::/16", &["gw1"])],
        ))
        .await
        .expect("exports");
        let paths = wait_async("gw2's route withdrawn", async || {
            let p = lab.rib_paths();
            (p.len() == 2).then_some(p)
        })
        .await;
        assert!(find(&paths, "10.188.0.0/14", 2204857002).is_none());
        assert!(find(&paths, "10.188.0.0/14", 2204857001).is_some());
        let st = h.status().await.expect("status");
        // With gw1's anchors, one per family; gw2's went with its last route.
        assert_eq!(st.peers[0].routes_sent, 4);
        let anchors = wait_async("gw1's two anchors alone", async || {
            let keys: Vec<String> = lab
                .rib()
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| is_anchor_key(k))
                .collect();
            (keys.len() == 2).then_some(keys)
        })
        .await;
        assert!(
            anchors.iter().any(|k| k.contains("[prefix:100::")),
            "{anchors:?}"
        );

        // Nothing to export: the IPv4 and IPv6 routes are withdrawn.
        h.set_exports(export_set(minimal(), &[]))
            .await
            .expect("exports");
        wait_async("every route withdrawn", async || {
            lab.rib_paths().is_empty().then_some(())
        })
        .await;
        let st = h.status().await.expect("status");
        assert_eq!(st.peers[0].state, State::Established);
        assert_eq!(st.peers[0].stats.established_count, 1);
    });
}

#[test]
fn gobgp_routes_added_in_gobgpd_are_imported_and_withdrawn() {
    let lab = Lab::new(65000, 65000, true);
    let mut config = lab.bgpctl_config(65000, 65000, false);
    config.export = None;
    lab.with_speaker(config, async |h| {
        wait_async("Established", async || {
            let st = h.status().await.ok()?;
            (st.peers[0].state == State::Established).then_some(())
        })
        .await;
        let add = |args: &str| {
            let mut a = vec!["global", "rib", "-a", "evpn"];
            a.extend(args.split_whitespace());
            lab.gobgp(&a).expect("gobgp rib add/del");
        };
        add("add prefix 10.50.0.0/16 etag 0 label 100 rd 10.99.0.1:5 rt 65000:2204857 encap vxlan router-mac 02:00:00:00:00:03 nexthop 10.99.7.3");
        add("add prefix 2001:db8:50::/48 etag 0 label 100 rd 10.99.0.1:6 rt 65000:2204857 encap vxlan router-mac 02:00:00:00:00:03 nexthop 10.99.7.4");
        // Not for us: another route target, and one without VXLAN encapsulation.
        add("add prefix 10.60.0.0/16 etag 0 label 100 rd 10.99.0.1:7 rt 65000:1 encap vxlan router-mac 02:00:00:00:00:03 nexthop 10.99.7.3");
        add("add prefix 10.70.0.0/16 etag 0 label 100 rd 10.99.0.1:8 rt 65000:2204857 router-mac 02:00:00:00:00:03 nexthop 10.99.7.3");
        let routes = local_prefixes(&h, 2).await;
        let v4 = &routes[0];
        assert_eq!(v4.prefix.to_string(), "10.50.0.0/16");
        assert_eq!(v4.vtep, "10.99.7.3".parse::<IpAddr>().expect("ip"));
        assert_eq!(v4.router_mac.to_string(), "02:00:00:00:00:03");
        assert_eq!(v4.vni, 100);
        assert_eq!(v4.rd.to_string(), "10.99.0.1:5");
        let v6 = &routes[1];
        assert_eq!(v6.prefix.to_string(), "2001:db8:50::/48");
        assert_eq!(v6.vtep, "10.99.7.4".parse::<IpAddr>().expect("ip"));
        let st = wait_async("all four received", async || {
            let st = h.status().await.ok()?;
            (st.peers[0].routes_received == 4).then_some(st)
        })
        .await;
        assert!(st.import_stats.no_matching_route_target >= 1, "{:?}", st.import_stats);
        assert!(st.import_stats.not_vxlan >= 1, "{:?}", st.import_stats);
        assert_eq!(st.imported.len(), 2);

        let mut sub = h.subscribe();
        add("del prefix 10.50.0.0/16 etag 0 label 100 rd 10.99.0.1:5");
        let ev = tokio::time::timeout(WAIT, sub.events.recv())
            .await
            .expect("withdraw in time")
            .expect("event");
        match ev {
            gatewan_control::bgp::rib::ImportEvent::Withdraw(r) => {
                assert_eq!(r.prefix.to_string(), "10.50.0.0/16")
            }
            other => panic!("{other:?}"),
        }
        let left = local_prefixes(&h, 1).await;
        assert_eq!(left[0].prefix.to_string(), "2001:db8:50::/48");
    });
}

#[test]
fn gobgp_restart_re_establishes_and_re_sends_everything() {
    let mut lab = Lab::new(65000, 65000, true);
    let config = lab.bgpctl_config(65000, 65000, false);
    let lab_ref = &mut lab;
    let gw = lab_ref.gw.clone();
    // The restart needs `&mut lab` on this thread while the speaker runs in `gw`: run the
    // speaker on a thread of its own and talk to it through its handle.
    let (tx, rx) = std::sync::mpsc::channel::<BgpHandle>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let speaker_thread = std::thread::spawn(move || {
        gw.enter_current_thread().expect("enter gw");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (h, task) = speaker::spawn(config).await.expect("speaker");
            tx.send(h.clone()).expect("hand over");
            let _ = stop_rx.await;
            h.shutdown(None).await;
            let _ = task.await;
        });
    });
    let h = rx.recv().expect("handle");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    wait_for("3 routes in gobgpd", WAIT, || {
        (lab_ref.rib_paths().len() == 3).then_some(())
    });

    // A crash: gobgpd dies without a NOTIFICATION, then comes back empty.
    let old = lab_ref.gobgpd;
    lab_ref.tb.kill(old);
    wait_for("session down", WAIT, || {
        let st = client.block_on(h.status()).ok()?;
        (st.peers[0].state != State::Established).then_some(())
    });
    lab_ref.start_gobgpd();
    let paths = wait_for("3 routes again", WAIT, || {
        let p = lab_ref.rib_paths();
        (p.len() == 3).then_some(p)
    });
    check_path(
        find(&paths, "10.188.0.0/14", 2204857002).expect("gw2"),
        "10.188.0.0/14",
        2204857002,
        "10.184.84.45",
        "70:5b:83:6b:72:aa",
        true,
    );
    let st = client.block_on(h.status()).expect("status");
    assert_eq!(st.peers[0].state, State::Established);
    assert_eq!(st.peers[0].stats.established_count, 2);
    let _ = stop_tx.send(());
    speaker_thread.join().expect("speaker thread");
}

#[test]
fn gobgp_ebgp_peer_connecting_to_a_passive_bgpctl() {
    // gobgpd in AS 65001 connects to bgpctl (AS 65000), which listens and never connects.
    let lab = Lab::new(65001, 65000, false);
    let config = lab.bgpctl_config(65000, 65001, true);
    lab.with_speaker(config, async |h| {
        let paths = wait_async("3 routes over eBGP", async || {
            let p = lab.rib_paths();
            (p.len() == 3).then_some(p)
        })
        .await;
        // eBGP: our AS in the path, no LOCAL_PREF, and the gateway's VTEP as next hop.
        check_path(
            find(&paths, "10.188.0.0/14", 2204857001).expect("gw1"),
            "10.188.0.0/14",
            2204857001,
            "10.184.84.44",
            "70:5b:83:6b:72:a9",
            false,
        );
        let st = h.status().await.expect("status");
        assert!(!st.peers[0].ibgp);
        assert!(st.peers[0].passive);
        assert_eq!(st.peers[0].stats.failed_attempts, 0);
    });
}

#[test]
fn gobgp_tcp_md5_signed_session() {
    let lab = Lab::with_md5(65000, 65000, true, Some("s3cret-key"));
    // Without the key gobgpd's kernel drops our SYNs: attempts fail, nothing is established.
    let mut unsigned = lab.bgpctl_config(65000, 65000, false);
    unsigned.export = None;
    lab.with_speaker(unsigned, async |h| {
        wait_async("two failed attempts", async || {
            let st = h.status().await.ok()?;
            (st.peers[0].stats.failed_attempts >= 2).then_some(())
        })
        .await;
        let st = h.status().await.expect("status");
        assert_eq!(st.peers[0].stats.established_count, 0);
    });
    // With it, the session comes up and routes flow.
    let mut signed = lab.bgpctl_config(65000, 65000, false);
    signed.peers[0].md5_password = Some("s3cret-key".into());
    lab.with_speaker(signed, async |_h| {
        wait_async("3 routes over the signed session", async || {
            (lab.rib_paths().len() == 3).then_some(())
        })
        .await;
    });
}

#[test]
fn gobgp_keeps_the_routes_through_a_graceful_restart_and_drops_them_on_a_clean_stop() {
    let lab = Lab::graceful(65000, 65000);
    let config = lab.bgpctl_config(65000, 65000, false);
    assert!(config.graceful_restart.enabled, "on by default");
    let second = config.clone();
    lab.with_speaker(config, async |h| {
        wait_async("3 routes in gobgpd", async || {
            (lab.rib_paths().len() == 3).then_some(())
        })
        .await;
        let neighbor = lab.gobgp(&["neighbor", GW_ADDR]).expect("gobgp neighbor");
        // Ours as gobgpd read it: restart time 120 s (the default), EVPN.
        assert!(
            neighbor.contains("graceful-restart:\tadvertised and received")
                && neighbor.contains("Remote: restart time 120 sec, restart flag set")
                && neighbor.contains("l2vpn-evpn, forward flag set"),
            "{neighbor}"
        );

        // Closed without a NOTIFICATION, as for a restart (SIGUSR1) or a crash: gobgpd keeps
        // the routes, stale, while nobody speaks for them.
        h.close_for_restart().await;
        let t = Instant::now();
        let mut fewest = usize::MAX;
        while t.elapsed() < Duration::from_secs(2) {
            fewest = fewest.min(lab.rib_paths().len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let neighbor = lab.gobgp(&["neighbor"]).expect("gobgp neighbor");
        assert!(!neighbor.contains("Establ"), "{neighbor}");
        assert_eq!(fewest, 3, "routes withdrawn while bgpctl was away");

        // The next bgpctl no longer has gw2's route: gobgpd keeps every route until its
        // End-of-RIB, then purges that one alone.
        let mut config = second;
        config.export = Some(export(&[
            ("10.188.0.0/14", &["gw1"]),
            ("fd05::/16", &["gw1"]),
        ]));
        let (h2, task) = speaker::spawn(config).await.expect("second speaker");
        let t = Instant::now();
        let mut fewest = usize::MAX;
        loop {
            let n = lab.rib_paths().len();
            fewest = fewest.min(n);
            if n == 2 {
                break;
            }
            assert!(t.elapsed() < WAIT, "stale route never purged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "graceful restart: 3 routes kept while bgpctl was away; the stale one purged {:.1} s \
             after the next bgpctl started",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(
            fewest, 2,
            "a route the next bgpctl keeps was withdrawn meanwhile"
        );
        let paths = lab.rib_paths();
        assert!(find(&paths, "10.188.0.0/14", 2204857002).is_none());

        // A clean stop (Cease): gobgpd withdraws at once.
        h2.shutdown(Some("done".into())).await;
        let _ = task.await;
        let t = Instant::now();
        wait_async("the routes withdrawn after the Cease", async || {
            lab.rib_paths().is_empty().then_some(())
        })
        .await;
        println!(
            "clean stop: routes withdrawn by gobgpd after {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    });
}
