//! The controller daemon, `gatewan controller --config controller.yaml`: joins the mesh as a
//! controller, and each cycle pulls every live gateway's report over the orders channel in
//! parallel with a deadline, builds the engine's snapshot, runs the engine, and, when the
//! election makes it authoritative, pushes each gateway its order and records the acks and
//! refusals. It publishes its claim to lead in its `lead` tag, serves its state on a local
//! control socket (`gatewan controller status`, `explain`), and can save each cycle's inputs
//! and orders for `plan`. See docs/controller.md.

pub mod config;
pub mod inputs;
pub mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use hyper::Method;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use self::config::{ControllerConfig, MemberMesh};
use self::inputs::Pulled;
use self::status::{ControllerStatus, RecipientStatus, Request, Response};
use crate::channel::http::Client;
use crate::channel::{Identity, MemberRole, TlsSetup};
use crate::controller::explain::Explanation;
use crate::controller::inputs::{ControllerMember, Membership, Snapshot, Time};
use crate::controller::orders::Reply;
use crate::controller::{Controller, Orders, Policy};
use crate::mesh::agent::{AgentConfig, SupervisorOptions};
use crate::mesh::node::{MeshConfig, MeshNode};
use crate::mesh::prefixes::PrefixList;
use crate::mesh::rpc::RpcOptions;
use crate::mesh::tags::{GatewayMeta, Role};
use crate::mesh::view::{GatewayStatus, MeshSnapshot};

/// A gateway to reach this cycle.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub datacenter: String,
    pub api: SocketAddr,
    /// The order it says it holds (from its report).
    pub holds: Option<(crate::controller::orders::Epoch, u64)>,
}

/// An `explain` waiting for the next cycle: it runs with the explanation on, so the answer
/// is the live engine's, with its history (recovery holds, dampening, dwell, the orders in
/// force).
struct ExplainAsk {
    from: String,
    to: String,
    reply: oneshot::Sender<Response>,
}

/// At most this many `explain`s wait for a cycle; more are refused.
const EXPLAINS_WAITING: usize = 16;

/// The running daemon's state between cycles.
struct Daemon {
    config: ControllerConfig,
    engine: Controller,
    client: Client,
    node: MeshNode,
    meta: GatewayMeta,
    origin: Instant,
    status: Arc<Mutex<ControllerStatus>>,
    /// `explain`s waiting for the next cycle.
    asks: mpsc::Receiver<ExplainAsk>,
    recipients: BTreeMap<String, RecipientStatus>,
}

/// Runs the daemon until `stop` completes; leaves the mesh on the way out.
pub async fn run(
    config: ControllerConfig,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let policy_text = std::fs::read_to_string(&config.policy)
        .with_context(|| format!("reading {}", config.policy.display()))?;
    let policy = Policy::from_yaml(&policy_text)?;
    let period = config.cycle.unwrap_or_else(|| policy.cycle_period());
    let identity = Identity::new(MemberRole::Controller, &config.name)?;
    let tls = TlsSetup::load(&config.tls, identity)?;
    let meta = GatewayMeta {
        role: Role::Controller,
        datacenter: config.datacenter.clone(),
        transits: Vec::new(),
        echo_port: None,
        prefix_list: None,
        id: None,
        api: None,
        lead: None,
    };
    let node = join_mesh(&config.name, &config.mesh, &meta)?;
    let status = Arc::new(Mutex::new(ControllerStatus {
        name: config.name.clone(),
        ..ControllerStatus::default()
    }));
    let (ask_tx, asks) = mpsc::channel(EXPLAINS_WAITING);
    // A cycle is due within a period; it pulls within the deadline and pushes within another.
    let explain_wait = period + 2 * config.deadline + Duration::from_secs(10);
    let control = tokio::spawn(serve_control(
        config.control_socket.clone(),
        Arc::clone(&status),
        ask_tx,
        explain_wait,
    ));
    let mut daemon = Daemon {
        client: Client::new(tls, config.deadline),
        engine: Controller::new(config.name.clone(), policy),
        config,
        node,
        meta,
        origin: Instant::now(),
        status,
        asks,
        recipients: BTreeMap::new(),
    };
    tracing::info!(controller = %daemon.config.name, cycle = ?period, "controller running");
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => daemon.cycle().await,
        }
    }
    control.abort();
    let _ = std::fs::remove_file(&daemon.config.control_socket);
    if tokio::time::timeout(Duration::from_secs(8), daemon.node.leave())
        .await
        .is_err()
    {
        tracing::warn!("leaving the mesh took over 8s");
    }
    Ok(())
}

/// Starts the supervised agent and the mesh node of a member that carries no traffic (a
/// controller, or bgpctl), publishing `meta`.
pub fn join_mesh(name: &str, m: &MemberMesh, meta: &GatewayMeta) -> anyhow::Result<MeshNode> {
    std::fs::create_dir_all(&m.state_dir)
        .with_context(|| format!("creating {}", m.state_dir.display()))?;
    let agent = AgentConfig {
        node_name: name.to_owned(),
        bind: m.bind,
        advertise: m.advertise,
        rpc_addr: m.rpc_addr,
        rpc_auth: m.rpc_auth.clone(),
        keyring_file: m.state_dir.join("serf.keyring"),
        initial_keys: m.keys.clone(),
        snapshot_file: m.state_dir.join("serf.snapshot"),
        profile: m.profile,
        retry_join: m.seeds.clone(),
        retry_interval: Duration::from_secs(2),
        tags: Default::default(),
        log_level: "warn".into(),
        config_file: m.state_dir.join("serf.json"),
    };
    let options = SupervisorOptions {
        program: m.serf.clone(),
        launcher: m.launcher.clone(),
        log_file: Some(m.state_dir.join("serf.log")),
        ..SupervisorOptions::default()
    };
    let mut node_cfg = MeshConfig::new(name.to_owned(), meta.clone(), PrefixList::new([]));
    node_cfg.rpc = RpcOptions {
        auth_key: Some(m.rpc_auth.clone()),
        ..RpcOptions::default()
    };
    node_cfg.join = m.seeds.clone();
    MeshNode::start(node_cfg, m.rpc_addr, Some((agent, options))).context("starting the mesh agent")
}

/// The controllers of a view, as the election reads them.
pub fn membership(view: &MeshSnapshot, clock: u64) -> Membership {
    Membership {
        clock,
        controllers: view
            .controllers()
            .map(|c| ControllerMember {
                id: c.name.clone(),
                live: c.status == GatewayStatus::Alive,
                leading: c.meta.as_ref().and_then(|m| m.lead),
            })
            .collect(),
    }
}

fn targets<'a>(members: impl Iterator<Item = &'a crate::mesh::view::GatewayEntry>) -> Vec<Target> {
    members
        .filter(|g| g.status == GatewayStatus::Alive)
        .filter_map(|g| {
            let meta = g.meta.as_ref()?;
            Some(Target {
                name: g.name.clone(),
                datacenter: meta.datacenter.clone(),
                api: meta.api?,
                holds: None,
            })
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Daemon {
    async fn cycle(&mut self) {
        let started = Instant::now();
        let view = Arc::clone(&self.node.view().borrow());
        if !view.agent_connected || !view.members.contains_key(&self.config.name) {
            tracing::debug!("not in the mesh yet: no cycle");
            return;
        }
        let clock = match self.node.rpc().member_clock().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "membership clock unavailable: no cycle");
                return;
            }
        };
        let membership = membership(&view, clock);
        let bgpctls = targets(view.bgpctls());
        let mut targets = targets(view.gateways());
        let gateways_in_mesh = view.gateways().count();
        let pulled = pull(&self.client, &mut targets).await;
        let pull_ms = ms(started.elapsed());
        let reached = pulled.iter().filter(|p| p.report.is_ok()).count();
        let (snapshot, mut issues) = inputs::build(membership, pulled);
        let now =
            Time::from_millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX));
        let mut asks = Vec::new();
        while let Ok(ask) = self.asks.try_recv() {
            asks.push(ask);
        }
        self.engine.set_explain(!asks.is_empty());
        let mut cycle = self.engine.step(now, &snapshot);
        self.engine.set_explain(false);
        answer_explains(asks, cycle.explanation.take());
        issues.extend(cycle.input_issues.iter().cloned());
        issues.sort();
        issues.dedup();
        let push_started = Instant::now();
        if cycle.authority.authoritative {
            push(
                &self.client,
                &mut self.engine,
                &cycle.orders,
                &targets,
                &bgpctls,
                &mut self.recipients,
            )
            .await;
        } else {
            for (gw, order) in &cycle.orders.gateways {
                let r = self.recipients.entry(gw.clone()).or_default();
                r.version = order.version;
                r.result = "not sent (standby)".into();
            }
            for b in &bgpctls {
                if let Some(order) = cycle.orders.bgpctl.get(&b.datacenter) {
                    let r = self
                        .recipients
                        .entry(bgpctl_recipient(&b.name))
                        .or_default();
                    r.version = order.version;
                    r.result = "not sent (standby)".into();
                }
            }
        }
        let push_ms = ms(push_started.elapsed());
        self.publish_claim(
            cycle
                .authority
                .authoritative
                .then_some(cycle.authority.epoch.term),
        )
        .await;
        let saved = self.save(&snapshot, &cycle.orders);
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        *st = ControllerStatus {
            name: self.config.name.clone(),
            authoritative: cycle.authority.authoritative,
            leader: cycle.authority.leader.clone(),
            epoch: cycle.authority.epoch.clone(),
            cycles: st.cycles + 1,
            last_cycle_at: crate::gateway::status::format_time(SystemTime::now()),
            last_cycle_ms: ms(started.elapsed()),
            pull_ms,
            push_ms,
            gateways_reached: reached,
            gateways_in_mesh,
            membership_clock: clock,
            input_issues: issues,
            recipients: self.recipients.clone(),
            shortfalls: cycle.orders.shortfalls.clone(),
            saved,
        };
    }

    /// Publishes (or withdraws) our claim to lead in the `lead` tag.
    async fn publish_claim(&mut self, term: Option<u64>) {
        if self.meta.lead == term {
            return;
        }
        let mut meta = self.meta.clone();
        meta.lead = term;
        match self.node.set_meta(meta.clone()).await {
            Ok(()) => {
                tracing::info!(?term, "leadership claim published");
                self.meta = meta;
            }
            Err(e) => tracing::warn!(error = %e, "lead tag not published"),
        }
    }

    /// Writes the cycle's inputs and orders to `snapshot_dir` (and prunes old cycles).
    fn save(&self, snapshot: &Snapshot, orders: &Orders) -> Option<String> {
        let dir = self.config.snapshot_dir.as_ref()?;
        let cycle = self.status.lock().map_or(0, |s| s.cycles + 1);
        let result = (|| -> anyhow::Result<String> {
            std::fs::create_dir_all(dir)?;
            let snap = dir.join(format!("cycle-{cycle:08}.snapshot.json"));
            std::fs::write(&snap, snapshot.to_canonical_json()?)?;
            std::fs::write(
                dir.join(format!("cycle-{cycle:08}.orders.json")),
                serde_json::to_string_pretty(orders)?,
            )?;
            prune(dir, self.config.keep_snapshots)?;
            Ok(snap.display().to_string())
        })();
        result
            .map_err(|e| tracing::warn!(error = %e, "cycle not saved"))
            .ok()
    }
}

/// Every target's report, in parallel, each within the deadline.
pub async fn pull(client: &Client, targets: &mut [Target]) -> Vec<Pulled> {
    let mut set = JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let client = client.clone();
        let (name, api) = (t.name.clone(), t.api);
        set.spawn(async move {
            let result = match Identity::new(MemberRole::Gateway, &name) {
                Ok(id) => client
                    .call(api, &id, Method::GET, "/v1/report", Vec::new())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|b| inputs::parse_report(&b)),
                Err(e) => Err(e.to_string()),
            };
            (i, result)
        });
    }
    let mut out = Vec::with_capacity(targets.len());
    while let Some(joined) = set.join_next().await {
        let Ok((i, parsed)) = joined else { continue };
        let Some(t) = targets.get_mut(i) else {
            continue;
        };
        let (report, issues) = match parsed {
            Ok((r, issues)) => {
                t.holds = r.order.clone();
                (Ok(r), issues)
            }
            Err(e) => (Err(e), Vec::new()),
        };
        out.push(Pulled {
            member: t.name.clone(),
            datacenter: t.datacenter.clone(),
            report,
            issues,
        });
    }
    out.sort_by(|a, b| a.member.cmp(&b.member));
    out
}

/// How a datacenter's bgpctl is named among the recipients (`gatewan controller status`).
pub fn bgpctl_recipient(name: &str) -> String {
    format!("bgpctl/{name}")
}

/// An order's body, or why it could not be made (noted on the recipient).
fn body_of<T: serde::Serialize>(r: &mut RecipientStatus, order: &T) -> Option<Vec<u8>> {
    match serde_json::to_vec(order) {
        Ok(b) => Some(b),
        Err(e) => {
            r.result = format!("not sent: {e}");
            None
        }
    }
}

/// One order to deliver.
struct Delivery {
    recipient: String,
    identity: Identity,
    api: SocketAddr,
    body: Vec<u8>,
}

/// Sends each reachable gateway its order unless it already holds it, and each bgpctl its
/// datacenter's order, and feeds the replies to the engine.
pub async fn push(
    client: &Client,
    engine: &mut Controller,
    orders: &Orders,
    targets: &[Target],
    bgpctls: &[Target],
    recipients: &mut BTreeMap<String, RecipientStatus>,
) {
    let mut deliveries = Vec::new();
    for (gw, order) in &orders.gateways {
        let r = recipients.entry(gw.clone()).or_default();
        r.version = order.version;
        r.acked = engine.acked(gw);
        let Some(t) = targets.iter().find(|t| &t.name == gw) else {
            r.result = "unreachable: not in the mesh or no api address".into();
            continue;
        };
        if t.holds.as_ref() == Some(&(order.epoch.clone(), order.version)) {
            r.result = "held".into();
            continue;
        }
        let (Some(body), Ok(identity)) =
            (body_of(r, order), Identity::new(MemberRole::Gateway, gw))
        else {
            continue;
        };
        deliveries.push(Delivery {
            recipient: gw.clone(),
            identity,
            api: t.api,
            body,
        });
    }
    // bgpctl is sent its order every cycle (it acks a version it holds at once): a bgpctl
    // that restarted without its order file gets it back within a cycle.
    for b in bgpctls {
        let Some(order) = orders.bgpctl.get(&b.datacenter) else {
            continue;
        };
        let recipient = bgpctl_recipient(&b.name);
        let r = recipients.entry(recipient.clone()).or_default();
        r.version = order.version;
        r.acked = engine.acked(&recipient);
        let (Some(body), Ok(identity)) = (
            body_of(r, order),
            Identity::new(MemberRole::Bgpctl, &b.name),
        ) else {
            continue;
        };
        deliveries.push(Delivery {
            recipient,
            identity,
            api: b.api,
            body,
        });
    }
    let mut set = JoinSet::new();
    for d in deliveries {
        let client = client.clone();
        set.spawn(async move {
            let result = client
                .call(d.api, &d.identity, Method::PUT, "/v1/order", d.body)
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<Reply>(&b).map_err(|e| format!("reply: {e}"))
                });
            (d.recipient, result)
        });
    }
    while let Some(joined) = set.join_next().await {
        let Ok((gw, result)) = joined else { continue };
        let text = match &result {
            Ok(Reply::Ack { .. }) => "acked".to_string(),
            Ok(Reply::Refuse {
                reason,
                current_epoch,
                ..
            }) => {
                tracing::warn!(recipient = %gw, ?reason, held = ?current_epoch, "order refused");
                format!(
                    "refused: {reason:?} (holds term {} of {})",
                    current_epoch.term, current_epoch.controller
                )
            }
            Err(e) => format!("unreachable: {e}"),
        };
        if let Ok(reply) = &result {
            engine.on_reply(&gw, reply);
        }
        let r = recipients.entry(gw.clone()).or_default();
        r.acked = engine.acked(&gw);
        r.result = text;
    }
}

/// Keeps the newest `keep` cycles' files.
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut snaps: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cycle-") && n.ends_with(".snapshot.json"))
        })
        .collect();
    snaps.sort();
    let excess = snaps.len().saturating_sub(keep);
    for p in snaps.into_iter().take(excess) {
        let orders = p
            .to_string_lossy()
            .replace(".snapshot.json", ".orders.json");
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(orders);
    }
    Ok(())
}

/// Answers `status` at once, and `explain` after the next cycle (or an error after `wait`).
async fn serve_control(
    path: std::path::PathBuf,
    status: Arc<Mutex<ControllerStatus>>,
    asks: mpsc::Sender<ExplainAsk>,
    wait: Duration,
) {
    let result = crate::gateway::control::serve(&path, move |request: Request| {
        let status = Arc::clone(&status);
        let asks = asks.clone();
        async move {
            match request {
                Request::Status => Response::Status(Box::new(
                    status.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                )),
                Request::Explain { from, to } => {
                    let (reply, answer) = oneshot::channel();
                    if asks.try_send(ExplainAsk { from, to, reply }).is_err() {
                        return Response::Error {
                            message: format!(
                                "{EXPLAINS_WAITING} explanations already wait for the next cycle"
                            ),
                        };
                    }
                    match tokio::time::timeout(wait, answer).await {
                        Ok(Ok(response)) => response,
                        _ => Response::Error {
                            message: format!("no cycle ran within {wait:?} (in the mesh?)"),
                        },
                    }
                }
            }
        }
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "controller control socket");
    }
}

/// Answers each waiting `explain` from the cycle's explanation.
fn answer_explains(asks: Vec<ExplainAsk>, explanation: Option<Explanation>) {
    for ask in asks {
        let pair = explanation.as_ref().and_then(|e| {
            e.pairs
                .iter()
                .find(|p| p.from == ask.from && p.to == ask.to)
        });
        let response = match pair.map(serde_json::to_value) {
            Some(Ok(v)) => Response::Explain(v),
            Some(Err(e)) => Response::Error {
                message: e.to_string(),
            },
            None => Response::Error {
                message: format!(
                    "no pair {} -> {} in this cycle (both need live gateways)",
                    ask.from, ask.to
                ),
            },
        };
        // The asker may have given up.
        let _ = ask.reply.send(response);
    }
}
