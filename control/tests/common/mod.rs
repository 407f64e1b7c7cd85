//! Helpers shared by the gateway's namespace tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gatewan_testbed::{Netns, ProcessId, Testbed};

pub const GATEWAN: &str = env!("CARGO_BIN_EXE_gatewan");

/// One tunnel of a test gateway's configuration.
pub struct TunnelSpec<'a> {
    pub name: &'a str,
    pub peer_public_key: &'a str,
    pub peer_endpoint: Option<SocketAddr>,
    pub preshared_key: Option<&'a str>,
    /// (our address with prefix, the peer's address), v4 then v6.
    pub v4: (&'a str, &'a str),
    pub v6: (&'a str, &'a str),
    pub echo_port: u16,
    pub peer_echo_port: Option<u16>,
}

/// Writes a gateway configuration into the test bed's directory, starts `gatewan gateway` in
/// `netns`, and waits for its control socket. Returns the process and the socket path.
pub fn start_gateway(
    tb: &mut Testbed,
    netns: &Netns,
    name: &str,
    private_key: &str,
    listen: SocketAddr,
    probe_interval: &str,
    tunnels: &[TunnelSpec<'_>],
) -> (ProcessId, PathBuf) {
    use gatewan_testbed::config::{self, ToYaml as _};
    let socket = tb.dir().join(format!("{name}.sock"));
    let tunnels = tunnels
        .iter()
        .map(|t| config::Tunnel {
            name: t.name.into(),
            transit: "transit-a".into(),
            peer: format!("peer-of-{name}"),
            peer_datacenter: "lab".into(),
            peer_public_key: t.peer_public_key.into(),
            peer_endpoint: t.peer_endpoint.map(|ep| ep.to_string()),
            preshared_key: t.preshared_key.map(str::to_owned),
            address_v4: Some(t.v4.0.into()),
            peer_address_v4: Some(t.v4.1.into()),
            address_v6: Some(t.v6.0.into()),
            peer_address_v6: Some(t.v6.1.into()),
            echo_port: Some(t.echo_port),
            peer_echo_port: t.peer_echo_port,
            ..Default::default()
        })
        .collect();
    let gateway = config::Gateway {
        name: name.into(),
        datacenter: "lab".into(),
        private_key: private_key.into(),
        control_socket: socket.clone(),
        probe: Some(config::Probe {
            interval: probe_interval.into(),
            window: Some(200),
            timeout: Some("1s".into()),
        }),
        transits: vec![config::Transit {
            name: "transit-a".into(),
            listen: listen.to_string(),
            capacity: None,
        }],
        tunnels,
        ..Default::default()
    };
    let path = tb.dir().join(format!("{name}.yaml"));
    gateway
        .write(&path, "the gateway tests")
        .expect("write the gateway configuration");
    let process = tb
        .spawn(
            netns,
            GATEWAN,
            ["gateway", "--config", path.to_str().expect("utf-8 path")],
        )
        .expect("start gatewan gateway");
    wait_for(tb, process, || socket.exists(), "the control socket");
    (process, socket)
}

/// Polls `ok` until it holds. The deadline only keeps a broken run from hanging; nothing is
/// asserted about how long it took.
pub fn wait_for(tb: &mut Testbed, gateway: ProcessId, mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(
            tb.is_running(gateway),
            "gatewan exited while waiting for {what}:\n{}",
            tb.log(gateway)
        );
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}:\n{}",
            tb.log(gateway)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first tunnel of `gatewan status --json`.
pub fn tunnel_status(socket: &Path) -> serde_json::Value {
    let out = Command::new(GATEWAN)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .expect("gatewan status");
    assert!(
        out.status.success(),
        "gatewan status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tunnels: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    tunnels[0].clone()
}

pub fn counter(tunnel: &serde_json::Value, name: &str) -> u64 {
    tunnel["counters"][name].as_u64().unwrap_or(0)
}

/// Waits until the tunnel is Established with at least `n` probe measurements.
pub fn established(
    tb: &mut Testbed,
    gateway: ProcessId,
    socket: &Path,
    n: u64,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(
        tb,
        gateway,
        || {
            last = tunnel_status(socket);
            last["state"] == "Established"
                && last["probe"]["measurements"].as_u64().unwrap_or(0) >= n
        },
        "an established tunnel with probe measurements",
    );
    last
}

/// `gatewan rekey`, then waits until the tunnel completed one more handshake and `after`
/// more probes went out (so probes sent around the rekey have had time to be answered or
/// time out), and returns the tunnel's status.
pub fn rekey_under_probes(
    tb: &mut Testbed,
    gateway: ProcessId,
    socket: &Path,
    tunnel: &str,
    after: u64,
) -> serde_json::Value {
    let before = tunnel_status(socket);
    let out = Command::new(GATEWAN)
        .args(["rekey", tunnel, "--socket"])
        .arg(socket)
        .output()
        .expect("gatewan rekey");
    assert!(
        out.status.success(),
        "gatewan rekey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut last = serde_json::Value::Null;
    wait_for(
        tb,
        gateway,
        || {
            last = tunnel_status(socket);
            counter(&last, "handshakes_completed") > counter(&before, "handshakes_completed")
                && counter(&last, "probes_sent") >= counter(&before, "probes_sent") + after
        },
        "the forced rekey to complete under probe traffic",
    );
    last
}
