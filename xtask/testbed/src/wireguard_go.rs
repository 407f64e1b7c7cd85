//! A Debian `wireguard-go` peer inside a test bed namespace, configured with `wg`: the
//! independent WireGuard implementation gatewan's tunnels are tested against.
//!
//! wireguard-go's control socket is `/var/run/wireguard/<ifname>.sock`, shared by every
//! namespace, so each instance gets an interface name unique to the test run.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{run_checked, Netns, ProcessId, Result, Testbed, TestbedError};

/// A WireGuard key pair in base64, as `wg` prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgKeys {
    pub private: String,
    pub public: String,
}

impl WgKeys {
    /// A fresh key pair from `wg genkey` / `wg pubkey`.
    pub fn generate() -> Result<Self> {
        let private = run_checked(Command::new("wg").arg("genkey"))?
            .trim()
            .to_owned();
        let public = pubkey(&private)?;
        Ok(WgKeys { private, public })
    }
}

/// The public key of a base64 private key, computed by `wg pubkey`.
pub fn pubkey(private: &str) -> Result<String> {
    let spawn_err = |source| TestbedError::Spawn {
        command: "wg pubkey".into(),
        source,
    };
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(private.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            command: "wg pubkey".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A running wireguard-go interface.
pub struct WireguardGo {
    pub netns: Netns,
    pub ifname: String,
    pub keys: WgKeys,
    pub listen_port: u16,
    pub process: ProcessId,
    key_dir: std::path::PathBuf,
}

impl Testbed {
    /// Starts wireguard-go in `netns` with a fresh key, listening on `listen_port`, with the
    /// inner addresses `addrs` (e.g. `10.77.0.2/31`, `fd77::2/127`), interface up.
    pub fn add_wireguard_go(
        &mut self,
        netns: &Netns,
        listen_port: u16,
        addrs: &[&str],
    ) -> Result<WireguardGo> {
        self.add_wireguard_go_env(netns, listen_port, addrs, &[])
    }

    /// Like [`Testbed::add_wireguard_go`], with extra environment variables for the process
    /// (e.g. `GOMAXPROCS`, to give it as many cores as the gateway it is compared with).
    pub fn add_wireguard_go_env(
        &mut self,
        netns: &Netns,
        listen_port: u16,
        addrs: &[&str],
        env: &[(&str, &str)],
    ) -> Result<WireguardGo> {
        let ifname = self.unique_ifname('w');
        let keys = WgKeys::generate()?;
        let process = if env.is_empty() {
            self.spawn(netns, "wireguard-go", ["-f", ifname.as_str()])?
        } else {
            // `env` execs wireguard-go in place, so the process id is wireguard-go's own.
            let mut args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            args.extend(["wireguard-go".into(), "-f".into(), ifname.clone()]);
            self.spawn(netns, "env", args)?
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while netns.ip(["link", "show", &ifname]).is_err() {
            if Instant::now() > deadline || !self.is_running(process) {
                return Err(TestbedError::Command {
                    command: format!("wireguard-go -f {ifname}"),
                    status: "interface never appeared".into(),
                    stderr: self.log(process),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let key_dir = self.dir().join(&ifname);
        std::fs::create_dir_all(&key_dir)?;
        let key_file = key_dir.join("private.key");
        std::fs::write(&key_file, &keys.private)?;
        netns.exec(
            "wg",
            [
                "set",
                &ifname,
                "private-key",
                key_file.to_str().unwrap_or_default(),
                "listen-port",
                &listen_port.to_string(),
            ],
        )?;
        for addr in addrs {
            let mut args = vec!["addr", "add", addr, "dev", &ifname];
            if addr.contains(':') {
                args.push("nodad");
            }
            netns.ip(args)?;
        }
        netns.ip(["link", "set", &ifname, "up"])?;
        Ok(WireguardGo {
            netns: netns.clone(),
            ifname,
            keys,
            listen_port,
            process,
            key_dir,
        })
    }
}

/// A peer as `wg set ... peer` takes it.
#[derive(Clone, Debug, Default)]
pub struct WgPeer<'a> {
    pub public_key: &'a str,
    pub preshared_key: Option<&'a str>,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: &'a [&'a str],
    pub persistent_keepalive: Option<u16>,
}

impl WireguardGo {
    /// Adds or updates a peer.
    pub fn set_peer(&self, peer: &WgPeer<'_>) -> Result<()> {
        let mut args: Vec<String> = vec![
            "set".into(),
            self.ifname.clone(),
            "peer".into(),
            peer.public_key.into(),
        ];
        if let Some(psk) = peer.preshared_key {
            let file = self.key_dir.join("psk.key");
            std::fs::write(&file, psk)?;
            args.extend(["preshared-key".into(), file.display().to_string()]);
        }
        if let Some(endpoint) = peer.endpoint {
            args.extend(["endpoint".into(), endpoint.to_string()]);
        }
        if !peer.allowed_ips.is_empty() {
            args.extend(["allowed-ips".into(), peer.allowed_ips.join(",")]);
        }
        if let Some(ka) = peer.persistent_keepalive {
            args.extend(["persistent-keepalive".into(), ka.to_string()]);
        }
        self.netns.exec("wg", args).map(drop)
    }

    /// `wg show <if> dump`: one line for the interface, then one per peer (tab-separated:
    /// public key, psk, endpoint, allowed ips, latest handshake, rx bytes, tx bytes, keepalive).
    pub fn dump(&self) -> Result<String> {
        self.netns.exec("wg", ["show", &self.ifname, "dump"])
    }

    /// Seconds since the epoch of the latest handshake with `public_key` (0 = never).
    pub fn latest_handshake(&self, public_key: &str) -> Result<u64> {
        let dump = self.dump()?;
        Ok(dump
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&public_key))
            .and_then(|f| f.get(4).and_then(|s| s.parse().ok()))
            .unwrap_or(0))
    }
}
