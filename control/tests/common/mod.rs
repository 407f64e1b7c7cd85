//! Shared pieces of the Serf tests: reaching agents inside test-bed namespaces, starting bare
//! agents, polling with a deadline.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use gatewan_control::mesh::rpc::{Connect, RpcClient, RpcError, RpcOptions};
use gatewan_testbed::{Netns, ProcessId, Testbed};
use tokio::net::TcpStream;

/// Dials a TCP address from inside a network namespace (agents listen on the loopback of
/// their own namespace).
#[derive(Clone)]
pub struct NetnsConnect {
    pub netns: Netns,
    pub addr: SocketAddr,
}

impl Connect for NetnsConnect {
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + '_>> {
        let netns = self.netns.clone();
        let addr = self.addr;
        Box::pin(async move {
            // Netns::run uses a fresh thread, so no pooled thread is left in the namespace.
            let std = tokio::task::spawn_blocking(move || {
                netns.run(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
            })
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)??;
            std.set_nonblocking(true)?;
            TcpStream::from_std(std)
        })
    }
}

/// Polls `f` every 100 ms until it yields a value; panics with `what` after `deadline`.
/// The deadline only keeps a broken run from hanging; nothing asserts on timing.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bare `serf agent` started by the test itself (no gatewan supervision).
pub struct RawAgent {
    pub name: String,
    pub netns: Netns,
    pub bind: SocketAddr,
    pub rpc: SocketAddr,
    pub auth: Option<String>,
    pub config: PathBuf,
    pub pid: ProcessId,
}

pub struct RawAgentSpec<'a> {
    pub name: &'a str,
    pub bind: SocketAddr,
    pub rpc_port: u16,
    pub auth: Option<&'a str>,
    pub keys: &'a [&'a str],
    pub tags: &'a [(&'a str, &'a str)],
}

pub fn start_raw_agent(tb: &mut Testbed, netns: &Netns, spec: &RawAgentSpec<'_>) -> RawAgent {
    let dir = tb.dir().join(spec.name);
    std::fs::create_dir_all(&dir).unwrap();
    let rpc: SocketAddr = format!("127.0.0.1:{}", spec.rpc_port).parse().unwrap();
    let mut config = serde_json::json!({
        "node_name": spec.name,
        "bind": spec.bind.to_string(),
        "rpc_addr": rpc.to_string(),
        "profile": "local",
        "log_level": "debug",
        "tags": spec.tags.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(auth) = spec.auth {
        config["rpc_auth"] = auth.into();
    }
    if !spec.keys.is_empty() {
        let keyring = dir.join("keyring.json");
        std::fs::write(&keyring, serde_json::to_vec(&spec.keys).unwrap()).unwrap();
        config["keyring_file"] = keyring.display().to_string().into();
    }
    let path = dir.join("agent.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let pid = spawn_agent(tb, netns, &path);
    RawAgent {
        name: spec.name.to_owned(),
        netns: netns.clone(),
        bind: spec.bind,
        rpc,
        auth: spec.auth.map(str::to_owned),
        config: path,
        pid,
    }
}

pub fn spawn_agent(tb: &mut Testbed, netns: &Netns, config: &Path) -> ProcessId {
    tb.spawn(
        netns,
        "serf",
        ["agent", &format!("-config-file={}", config.display())],
    )
    .unwrap()
}

impl RawAgent {
    pub fn connector(&self) -> NetnsConnect {
        NetnsConnect {
            netns: self.netns.clone(),
            addr: self.rpc,
        }
    }

    pub fn options(&self) -> RpcOptions {
        RpcOptions {
            auth_key: self.auth.clone(),
            timeout: Duration::from_secs(20),
            ..RpcOptions::default()
        }
    }

    /// A client, once the agent's RPC listener is up.
    pub async fn client(&self) -> RpcClient {
        eventually(
            &format!("RPC of {}", self.name),
            Duration::from_secs(20),
            || async {
                RpcClient::connect(self.connector(), self.options())
                    .await
                    .ok()
            },
        )
        .await
    }

    pub async fn try_client(&self, auth: Option<&str>) -> Result<RpcClient, RpcError> {
        let mut options = self.options();
        options.auth_key = auth.map(str::to_owned);
        RpcClient::connect(self.connector(), options).await
    }
}

/// `n` namespaces on one bridge (in its own namespace), addresses 10.77.0.<i+1>/24.
pub fn bridged(tb: &mut Testbed, roles: &[&str]) -> Vec<(Netns, std::net::Ipv4Addr)> {
    let br = tb.add_netns("br").unwrap();
    br.ip(["link", "add", "br0", "type", "bridge"]).unwrap();
    br.ip(["link", "set", "br0", "up"]).unwrap();
    let mut out = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let ns = tb.add_netns(role).unwrap();
        let (inner, outer) = tb.add_veth(&ns, &br, 1).unwrap();
        br.ip(["link", "set", &outer.name, "master", "br0"])
            .unwrap();
        let addr = std::net::Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).unwrap());
        inner.add_addr(&format!("{addr}/24")).unwrap();
        out.push((ns, addr));
    }
    out
}
