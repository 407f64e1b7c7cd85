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

// ---------------------------------------------------------------------------------------
// Gateways: a MeshNode supervising its own agent inside a namespace.

use gatewan_control::mesh::agent::{AgentConfig, Profile, SupervisorOptions};
use gatewan_control::mesh::node::{MeshConfig, MeshNode};
use gatewan_control::mesh::prefixes::PrefixList;
use gatewan_control::mesh::tags::{GatewayMeta, Role, TransitMeta};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub const RPC_AUTH: &str = "gatewan-test-rpc";

/// `n` distinct prefixes for gateway `seed`: half IPv4 /24, half IPv6 /48../64.
pub fn prefixes(seed: u16, n: u32, salt: u32) -> PrefixList {
    PrefixList::new((0..n).map(|i| {
        let j = i / 2 + salt;
        if i % 2 == 0 {
            let idx = u32::from(seed) * 4096 + (j % 4096);
            IpNet::V4(Ipv4Net::new(std::net::Ipv4Addr::from((10 << 24) | (idx << 8)), 24).unwrap())
        } else {
            IpNet::V6(
                Ipv6Net::new(
                    std::net::Ipv6Addr::new(0xfd00, seed, j as u16, 0, 0, 0, 0, 0),
                    48 + (j % 17) as u8,
                )
                .unwrap()
                .trunc(),
            )
        }
    }))
}

pub fn meta(dc: &str, idx: u8) -> GatewayMeta {
    GatewayMeta {
        role: Role::Gateway,
        datacenter: dc.into(),
        transits: vec![
            TransitMeta {
                name: "lumen".into(),
                public_key: [idx; 32],
                endpoints: vec![
                    format!("203.0.113.{idx}:6152").parse().unwrap(),
                    format!("[2620:100:a006::{idx}]:6152").parse().unwrap(),
                ],
            },
            TransitMeta {
                name: "telstra".into(),
                public_key: [idx.wrapping_add(100); 32],
                endpoints: vec![format!("198.51.100.{idx}:6215").parse().unwrap()],
            },
        ],
        echo_port: Some(7000 + u16::from(idx)),
        prefix_list: None,
        id: None,
        api: None,
        lead: None,
    }
}

/// Serf's timing profile for test meshes: `local` (fastest failure detection) unless
/// `GATEWAN_TEST_SERF_PROFILE` says `lan` or `wan` (to measure those).
pub fn test_profile() -> Profile {
    match std::env::var("GATEWAN_TEST_SERF_PROFILE").as_deref() {
        Ok("lan") => Profile::Lan,
        Ok("wan") => Profile::Wan,
        _ => Profile::Local,
    }
}

/// Everything needed to (re)start one gateway.
#[derive(Clone)]
pub struct GwSpec {
    pub name: String,
    pub netns: Netns,
    pub addr: std::net::Ipv4Addr,
    pub rpc_port: u16,
    pub dir: PathBuf,
    pub meta: GatewayMeta,
    pub keys: Vec<String>,
    pub seeds: Vec<String>,
}

impl GwSpec {
    pub fn bind(&self) -> SocketAddr {
        SocketAddr::new(self.addr.into(), 7946)
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.rpc_port).parse().unwrap()
    }

    pub fn connector(&self) -> NetnsConnect {
        NetnsConnect {
            netns: self.netns.clone(),
            addr: self.rpc_addr(),
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    pub fn start(&self, list: PrefixList) -> MeshNode {
        std::fs::create_dir_all(&self.dir).unwrap();
        let mut cfg = MeshConfig::new(self.name.clone(), self.meta.clone(), list);
        cfg.rpc = RpcOptions {
            auth_key: Some(RPC_AUTH.into()),
            timeout: Duration::from_secs(20),
            ..RpcOptions::default()
        };
        cfg.tick = Duration::from_millis(250);
        cfg.reconcile_interval = Duration::from_secs(5);
        cfg.repair_after = Duration::from_secs(1);
        cfg.repair_deadline = Duration::from_secs(3);
        cfg.pull_interval = Duration::from_secs(3);
        cfg.query_timeout = Duration::from_secs(2);
        let agent = AgentConfig {
            node_name: self.name.clone(),
            bind: self.bind(),
            advertise: None,
            rpc_addr: self.rpc_addr(),
            rpc_auth: RPC_AUTH.into(),
            keyring_file: self.dir.join("keyring.json"),
            initial_keys: self.keys.clone(),
            snapshot_file: self.dir.join("snapshot"),
            profile: test_profile(),
            retry_join: self.seeds.clone(),
            retry_interval: Duration::from_secs(1),
            tags: Default::default(),
            log_level: "debug".into(),
            config_file: self.dir.join("agent.json"),
        };
        let options = SupervisorOptions {
            launcher: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                self.netns.name().to_owned(),
            ],
            log_file: Some(self.log()),
            ..SupervisorOptions::default()
        };
        MeshNode::start(cfg, self.connector(), Some((agent, options))).unwrap()
    }
}

/// Prints the tail of each agent log if the test is failing.
pub struct LogsOnFailure(pub Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if let Some(keep) = std::env::var_os("GATEWAN_TEST_KEEP_LOGS") {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            for path in &self.0 {
                if let Some(parent) = path.parent().and_then(|p| p.file_name()) {
                    let _ =
                        std::fs::copy(path, keep.join(format!("{}.log", parent.to_string_lossy())));
                }
            }
        }
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!("--- {} ---", path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Specs for gateways `names` (with datacenters), bridged, joined through the first.
pub fn gateway_specs(tb: &mut Testbed, gws: &[(&str, &str)], keys: &[&str]) -> Vec<GwSpec> {
    let roles: Vec<&str> = gws.iter().map(|(n, _)| *n).collect();
    let nets = bridged(tb, &roles);
    let seed = format!("{}:7946", nets[0].1);
    let other = format!("{}:7946", nets[1 % nets.len()].1);
    gws.iter()
        .zip(nets)
        .enumerate()
        .map(|(i, ((name, dc), (netns, addr)))| GwSpec {
            name: format!("{name}-{dc}"),
            netns,
            addr,
            rpc_port: 7500 + u16::try_from(i).unwrap(),
            dir: tb.dir().join(name),
            meta: meta(dc, u8::try_from(i + 1).unwrap()),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            seeds: vec![if i == 0 { other.clone() } else { seed.clone() }],
        })
        .collect()
}
