//! How `gatewan gateway` picks its forwarding backend where AF_XDP cannot run (a loopback
//! address here, which needs no privileges): `afxdp` refuses to start and says why; `auto`
//! falls back to the socket backend and reports why in its status.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GATEWAN: &str = env!("CARGO_BIN_EXE_gatewan");
const KEY: &str = "YNqHwpcAmVj0lVzPOkkAAP1hmgYPEtTy0aLaGJD8PW4=";

fn config(dir: &std::path::Path, backend: &str) -> (PathBuf, PathBuf) {
    let socket = dir.join("gw.sock");
    // A free port on loopback, so parallel runs do not collide.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    use gatewan_testbed::config::{self, ToYaml as _};
    let yaml = config::Gateway {
        name: "gw".into(),
        datacenter: "dc".into(),
        private_key: KEY.into(),
        control_socket: socket.clone(),
        transits: vec![config::Transit {
            name: "lo".into(),
            listen: format!("127.0.0.1:{port}"),
            capacity: None,
        }],
        dataplane: Some(config::Dataplane {
            backend: backend.into(),
            workers: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
    .to_yaml();
    let path = dir.join(format!("{backend}.yaml"));
    std::fs::write(&path, yaml).expect("config");
    (path, socket)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatewan-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn afxdp_demanded_where_it_cannot_run_is_a_start_error_that_says_why() {
    let dir = temp_dir("afxdp-refused");
    let (path, _) = config(&dir, "afxdp");
    let out = Command::new(GATEWAN)
        .args(["gateway", "--config"])
        .arg(&path)
        .output()
        .expect("gatewan gateway");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("AF_XDP backend"), "{said}");
    assert!(said.contains("loopback"), "{said}");
}

#[test]
fn auto_falls_back_to_sockets_and_reports_why() {
    let dir = temp_dir("afxdp-auto");
    let (path, socket) = config(&dir, "auto");
    let mut child = Command::new(GATEWAN)
        .args(["gateway", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatewan gateway");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while Instant::now() < deadline {
        let out = Command::new(GATEWAN)
            .args(["status", "--gateway", "--json", "--socket"])
            .arg(&socket)
            .output()
            .expect("gatewan status");
        if out.status.success() {
            status = Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling the gateway this test started, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exit = child.wait().expect("gateway exits");
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.expect("the gateway answered its status");
    assert_eq!(status["dataplane"]["backend"], "socket", "{status:#}");
    assert_eq!(status["dataplane"]["workers"], 1);
    let why = status["dataplane"]["afxdp_unavailable"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("loopback"), "{status:#}");
    assert!(exit.success(), "a clean exit on SIGTERM: {exit:?}");
}
