//! The `gatewan bgpctl` daemon as a process: configuration file, SIGHUP reload of the export
//! set, `gatewan routes` (table and JSON) over the control socket, SIGTERM with a Cease.
//! A speaker in the test process peers with it over loopback; no root needed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatewan_control::bgp::config::{Config, ImportConfig, PeerConfig};
use gatewan_control::bgp::rib::{is_anchor_prefix, ImportedRoute};
use gatewan_control::bgp::session::State;
use gatewan_control::bgp::speaker;

const WAIT: Duration = Duration::from_secs(30);
const GATEWAN: &str = env!("CARGO_BIN_EXE_gatewan");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon_config(port: u16, socket: &Path, gateways: &[&str]) -> String {
    use gatewan_testbed::config::{self, ToYaml as _};
    let gw = |vtep: &str, mac: &str| config::ExportGateway {
        vtep: vtep.into(),
        router_mac: mac.into(),
    };
    config::Bgpctl {
        local_as: 65000,
        router_id: "10.0.0.1".into(),
        listen: Some(format!("127.0.0.1:{port}")),
        control_socket: socket.to_path_buf(),
        hold_time: Some(9),
        peers: vec![config::Peer {
            address: "127.0.0.1".into(),
            remote_as: 65000,
            passive: true,
        }],
        import: Some(config::Import {
            route_targets: vec!["65000:1".into()],
        }),
        export: Some(config::Export {
            vni: 2_204_857,
            route_targets: vec!["65000:2204857".into()],
            gateways: [
                ("gw1".to_owned(), gw("10.184.84.44", "70:5b:83:6b:72:a9")),
                ("gw2".to_owned(), gw("10.184.84.45", "70:5b:83:6b:72:aa")),
            ]
            .into(),
            prefixes: vec![config::ExportPrefix {
                prefix: "10.188.0.0/14".into(),
                gateways: gateways.iter().map(|g| (*g).to_owned()).collect(),
            }],
        }),
        ..Default::default()
    }
    .to_yaml()
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn routes(socket: &Path, json: bool) -> String {
    let mut cmd = Command::new(GATEWAN);
    cmd.args(["routes", "--socket"]).arg(socket);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("gatewan routes");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn table(
    rx: &mut tokio::sync::watch::Receiver<std::sync::Arc<Vec<ImportedRoute>>>,
    n: usize,
) {
    tokio::time::timeout(WAIT, rx.wait_for(|t| t.len() == n))
        .await
        .unwrap_or_else(|_| panic!("never {n} routes"))
        .expect("speaker running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reloads_on_sighup_answers_routes_and_ceases_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("gatewan-bgpd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let socket: PathBuf = dir.join("bgpctl.sock");
    let conf = dir.join("bgpctl.yaml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::fs::write(&conf, daemon_config(port, &socket, &["gw1", "gw2"])).expect("config");
    let daemon = Daemon(
        Command::new(GATEWAN)
            .args(["--log", "info", "bgpctl", "--config"])
            .arg(&conf)
            .stdin(Stdio::null())
            .spawn()
            .expect("start gatewan bgpctl"),
    );

    // Our side: connect to the daemon and import what it exports.
    let mut cfg = Config::parse("local_as: 65000\nrouter_id: 10.0.0.2\npeers: []\n").expect("cfg");
    cfg.control_socket = PathBuf::new();
    cfg.connect_retry = 0.1;
    cfg.connect_retry_max = 0.5;
    cfg.peers = vec![PeerConfig {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        remote_as: 65000,
        passive: false,
        local_address: None,
        hold_time: None,
        md5_password: None,
    }];
    cfg.import = ImportConfig {
        route_targets: vec!["65000:2204857".parse().expect("rt")],
    };
    let (h, task) = speaker::spawn(cfg).await.expect("speaker");
    let mut rx = h.local_prefixes();
    table(&mut rx, 2).await;

    let text = routes(&socket, false);
    assert!(text.contains("Established"), "{text}");
    assert!(text.contains("28763:2204857002"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&routes(&socket, true)).expect("json");
    let exported = |json: &serde_json::Value| {
        json["exported"].as_array().map(|a| {
            a.iter()
                .filter(|r| {
                    r["prefix"]
                        .as_str()
                        .and_then(|p| p.parse().ok())
                        .is_some_and(|p| !is_anchor_prefix(&p))
                })
                .count()
        })
    };
    assert_eq!(exported(&json), Some(2), "{json}");
    assert_eq!(json["peers"][0]["state"], "Established");

    // Edit the file and SIGHUP: only gw1 remains, the daemon withdraws gw2's route.
    std::fs::write(&conf, daemon_config(port, &socket, &["gw1"])).expect("config");
    signal(&daemon.0, libc::SIGHUP);
    table(&mut rx, 1).await;
    assert_eq!(rx.borrow()[0].vtep.to_string(), "10.184.84.44");
    // A broken file is refused (the daemon keeps running what it had), and a good one
    // after it is taken.
    std::fs::write(&conf, "local_as: [").expect("config");
    signal(&daemon.0, libc::SIGHUP);
    let json: serde_json::Value = serde_json::from_str(&routes(&socket, true)).expect("json");
    assert_eq!(exported(&json), Some(1), "{json}");
    std::fs::write(&conf, daemon_config(port, &socket, &["gw1", "gw2"])).expect("config");
    signal(&daemon.0, libc::SIGHUP);
    table(&mut rx, 2).await;

    // SIGTERM: a Cease with the shutdown message, and the daemon exits cleanly.
    let mut daemon = daemon;
    signal(&daemon.0, libc::SIGTERM);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = daemon.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    table(&mut rx, 0).await;
    let st = h.status().await.expect("status");
    assert_ne!(st.peers[0].state, State::Established);
    let err = st.peers[0].stats.last_error.clone().unwrap_or_default();
    assert!(err.contains("gatewan bgpctl stopping"), "{err}");
    assert!(!socket.exists(), "control socket removed on exit");
    h.shutdown(None).await;
    let _ = task.await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn routes_with_the_daemon_down_says_why_once() {
    let dir = std::env::temp_dir().join(format!("gatewan-routes-down-{}", std::process::id()));
    let out = Command::new(GATEWAN)
        .args(["routes", "--socket"])
        .arg(dir.join("bgpctl.sock"))
        .output()
        .expect("gatewan routes");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `gatewan bgpctl` running"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
