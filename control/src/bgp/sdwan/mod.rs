//! bgpctl in the SD-WAN loop, the I/O side: joins the mesh as its datacenter's bgpctl
//! (role `bgpctl`, its orders-channel address in the `api` tag), takes the controller's
//! orders (`PUT /v1/order`, fenced by [`intake::OrderIntake`]) and exports them as RT-5
//! routes, and sends the fabric's routes it imports to every gateway of its datacenter
//! (`PUT /v1/local-routes`): on every change, to every gateway that joins, and every
//! `refresh`. See docs/bgp.md, "In the loop".

pub mod intake;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hyper::{Method, StatusCode};
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use self::intake::{ExportBase, IntakeStatus, OrderIntake};
use super::config::{Config, SdwanFile};
use super::rib::ImportedRoute;
use super::speaker::BgpHandle;
use crate::channel::http::{Answer, BoxAnswer, Call, Client, Handler};
use crate::channel::{Identity, MemberRole, TlsSetup};
use crate::controller::daemon::config::MemberMesh;
use crate::controller::orders::{BgpctlOrder, Reply};
use crate::gateway::local_routes::{FabricRoute, LocalRoutes};
use crate::mesh::tags::{GatewayMeta, Role};
use crate::mesh::view::{GatewayStatus, MeshSnapshot};

/// `sdwan:` checked, with paths resolved.
#[derive(Clone, Debug)]
pub struct Sdwan {
    pub name: String,
    pub datacenter: String,
    pub mesh: MemberMesh,
    pub api: crate::gateway::api_config::Api,
    pub refresh: Duration,
}

impl Sdwan {
    /// `base` resolves relative paths (the configuration's directory).
    pub fn check(file: &SdwanFile, base: &std::path::Path) -> anyhow::Result<Sdwan> {
        let mesh = file.mesh.check(base).context("sdwan.mesh")?;
        let api = file
            .api
            .check(&file.name, base, &mesh.state_dir)
            .context("sdwan.api")?;
        Ok(Sdwan {
            name: file.name.clone(),
            datacenter: file.datacenter.clone(),
            mesh,
            api,
            refresh: file.refresh,
        })
    }
}

/// How long a session with the fabric must have been up before its routes count as
/// complete.
pub const SYNC_GRACE: Duration = Duration::from_secs(3);

/// An order from the channel, for the loop.
struct OrderCall {
    order: BgpctlOrder,
    from: Identity,
    reply: oneshot::Sender<Reply>,
}

/// Runs until `stop` completes; leaves the mesh on the way out.
pub async fn run(
    sdwan: Sdwan,
    config: &Config,
    handle: BgpHandle,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let identity = Identity::new(MemberRole::Bgpctl, &sdwan.name)?;
    let tls = TlsSetup::load(&sdwan.api.tls, identity)?;
    let meta = GatewayMeta {
        role: Role::Bgpctl,
        datacenter: sdwan.datacenter.clone(),
        transits: Vec::new(),
        echo_port: None,
        prefix_list: None,
        id: None,
        api: Some(sdwan.api.advertise),
        lead: None,
    };
    let node = crate::controller::daemon::join_mesh(&sdwan.name, &sdwan.mesh, &meta)?;
    let listener = tokio::net::TcpListener::bind(sdwan.api.listen)
        .await
        .with_context(|| format!("binding {}", sdwan.api.listen))?;
    let status = Arc::new(Mutex::new(IntakeStatus::default()));
    let (orders_tx, mut orders) = mpsc::channel(64);
    let server = {
        let (tls, handler) = (tls.clone(), handler(orders_tx, Arc::clone(&status)));
        tokio::spawn(async move { crate::channel::http::serve(listener, &tls, handler).await })
    };
    tracing::info!(bgpctl = %sdwan.name, datacenter = %sdwan.datacenter, listen = %sdwan.api.listen, "bgpctl in the mesh");
    let mut state = Loop {
        intake: OrderIntake::new(&sdwan.datacenter),
        base: export_base(config),
        client: Client::new(tls, Duration::from_secs(3)),
        generation: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        version: 0,
        local: Vec::new(),
        status,
        handle,
        order_file: sdwan.api.order_file.clone(),
        sdwan,
    };
    if let Some((order, _)) = crate::gateway::api::load_order::<BgpctlOrder>(&state.order_file) {
        if state.intake.restore(order) {
            tracing::info!("order restored from disk: exporting it until a controller speaks");
            state.export().await;
        }
    }
    let mut view = node.view();
    let mut local = state.handle.local_prefixes();
    let mut refresh = tokio::time::interval(state.sdwan.refresh);
    let mut known: BTreeSet<String> = BTreeSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(call) = orders.recv() => state.order(call).await,
            r = view.changed() => {
                if r.is_err() { break }
                let snap = Arc::clone(&view.borrow_and_update());
                if let Ok(clock) = node.rpc().member_clock().await {
                    state.intake.handle_controllers(crate::gateway::mesh::controller_view(&snap, clock));
                }
                if state.intake.handle_gateways(gateways_of(&snap, &state.sdwan.datacenter)) {
                    state.export().await;
                }
                // Gateways that joined get the fabric's routes at once.
                let now: BTreeSet<String> = targets(&snap, &state.sdwan.datacenter).into_iter().map(|t| t.0).collect();
                if now.difference(&known).next().is_some() {
                    state.push_local(&snap).await;
                }
                known = now;
            }
            r = local.changed() => {
                if r.is_err() { break }
                let routes = Arc::clone(&local.borrow_and_update());
                state.local_changed(&routes);
                state.export().await;
                let snap = Arc::clone(&view.borrow());
                state.push_local(&snap).await;
            }
            _ = refresh.tick() => {
                let snap = Arc::clone(&view.borrow());
                state.push_local(&snap).await;
            }
        }
    }
    server.abort();
    if tokio::time::timeout(Duration::from_secs(8), node.leave())
        .await
        .is_err()
    {
        tracing::warn!("leaving the mesh took over 8s");
    }
    Ok(())
}

/// The export set of the order persisted by the last run, for the speaker to start with.
pub fn restored_exports(sdwan: &Sdwan, config: &Config) -> Option<crate::bgp::rib::ExportSet> {
    let (order, _) = crate::gateway::api::load_order::<BgpctlOrder>(&sdwan.api.order_file)?;
    let mut intake = OrderIntake::new(&sdwan.datacenter);
    intake
        .restore(order)
        .then(|| intake.export_set(&export_base(config), &[]))
}

fn export_base(config: &Config) -> ExportBase {
    config
        .export
        .as_ref()
        .map(|e| ExportBase {
            vni: e.vni,
            route_targets: e.route_targets.clone(),
            gateways: e.gateways.clone(),
        })
        .unwrap_or_default()
}

/// Our datacenter's gateways in the view, whatever their status (the orders' business).
fn gateways_of(snap: &MeshSnapshot, datacenter: &str) -> BTreeSet<String> {
    snap.gateways()
        .filter(|g| g.meta.as_ref().is_some_and(|m| m.datacenter == datacenter))
        .map(|g| g.name.clone())
        .collect()
}

/// Our datacenter's live gateways with an orders-channel address.
fn targets(snap: &MeshSnapshot, datacenter: &str) -> Vec<(String, SocketAddr)> {
    snap.gateways()
        .filter(|g| g.status == GatewayStatus::Alive)
        .filter_map(|g| {
            let m = g.meta.as_ref()?;
            (m.datacenter == datacenter).then_some((g.name.clone(), m.api?))
        })
        .collect()
}

struct Loop {
    sdwan: Sdwan,
    intake: OrderIntake,
    base: ExportBase,
    client: Client,
    /// With `version`, numbers the sets of fabric routes sent to gateways.
    generation: u64,
    version: u64,
    local: Vec<FabricRoute>,
    status: Arc<Mutex<IntakeStatus>>,
    handle: BgpHandle,
    order_file: PathBuf,
}

impl Loop {
    async fn order(&mut self, call: OrderCall) {
        let (reply, changed) = self.intake.offer(call.order, &call.from, SystemTime::now());
        if changed {
            if let Some(o) = self.intake.current() {
                tracing::info!(version = o.version, term = o.epoch.term, controller = %o.epoch.controller, routes = o.routes.len(), "order applied");
                if let Err(e) = crate::gateway::api::save_order(&self.order_file, o) {
                    tracing::warn!(path = %self.order_file.display(), error = %e, "order not saved");
                }
            }
            self.export().await;
        }
        self.publish_status();
        let _ = call.reply.send(reply);
    }

    fn local_prefixes(&self) -> Vec<IpNet> {
        self.local.iter().map(|r| r.prefix).collect()
    }

    /// The export set of the order in force to the speaker (it sends peers the differences).
    async fn export(&mut self) {
        let set = self.intake.export_set(&self.base, &self.local_prefixes());
        if let Err(e) = self.handle.set_exports(set).await {
            tracing::error!(error = %e, "orders not exported");
        }
        self.publish_status();
    }

    fn publish_status(&self) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = self.intake.status();
    }

    /// The speaker's local prefixes changed: one route per prefix (several leaves may
    /// announce one; the speaker already picked one per route key, and the first by prefix
    /// is kept).
    fn local_changed(&mut self, routes: &[ImportedRoute]) {
        let mut by_prefix = std::collections::BTreeMap::new();
        for r in routes {
            by_prefix.entry(r.prefix).or_insert(FabricRoute {
                prefix: r.prefix,
                vtep: r.vtep,
                router_mac: r.router_mac,
                vni: r.vni,
            });
        }
        let local: Vec<FabricRoute> = by_prefix.into_values().collect();
        if local != self.local {
            self.version += 1;
            tracing::info!(
                routes = local.len(),
                version = self.version,
                "fabric routes changed"
            );
            self.local = local;
        }
    }

    /// Whether the fabric's routes are complete: a session with the fabric has been up for
    /// [`SYNC_GRACE`] (its routes come within it). Until then, and while every session is
    /// down, nothing is sent: the gateways keep the last set (fail-static) instead of losing
    /// their datacenter's prefixes to a bgpctl restart or a flapping session.
    async fn fabric_synced(&self) -> bool {
        self.handle.status().await.is_ok_and(|st| {
            st.peers.iter().any(|p| {
                p.state == super::session::State::Established
                    && p.established_secs
                        .is_some_and(|s| s >= SYNC_GRACE.as_secs())
            })
        })
    }

    /// Sends the fabric's routes to every live gateway of our datacenter, in parallel.
    async fn push_local(&self, snap: &MeshSnapshot) {
        if !self.fabric_synced().await {
            return;
        }
        let set = LocalRoutes {
            bgpctl: self.sdwan.name.clone(),
            datacenter: self.sdwan.datacenter.clone(),
            generation: self.generation,
            version: self.version,
            routes: self.local.clone(),
        };
        let Ok(body) = serde_json::to_vec(&set) else {
            return;
        };
        let mut calls = JoinSet::new();
        for (gw, api) in targets(snap, &self.sdwan.datacenter) {
            let (client, body) = (self.client.clone(), body.clone());
            calls.spawn(async move {
                let result = match Identity::new(MemberRole::Gateway, &gw) {
                    Ok(id) => client
                        .call(api, &id, Method::PUT, "/v1/local-routes", body)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (gw, result)
            });
        }
        while let Some(done) = calls.join_next().await {
            if let Ok((gw, Err(e))) = done {
                tracing::warn!(gateway = %gw, error = %e, "fabric routes not delivered");
            }
        }
    }
}

/// The channel's handler: orders from controllers, the order in force to readers.
fn handler(orders: mpsc::Sender<OrderCall>, status: Arc<Mutex<IntakeStatus>>) -> Handler {
    Arc::new(move |call: Call| -> BoxAnswer {
        let (orders, status) = (orders.clone(), Arc::clone(&status));
        Box::pin(async move {
            match (&call.method, call.path.as_str()) {
                (&Method::PUT, "/v1/order") if call.peer.role == MemberRole::Controller => {
                    let order: BgpctlOrder = match serde_json::from_slice(&call.body) {
                        Ok(o) => o,
                        Err(e) => {
                            return Answer::error(StatusCode::BAD_REQUEST, &format!("order: {e}"))
                        }
                    };
                    let (reply, answer) = oneshot::channel();
                    let from = call.peer.clone();
                    if orders.send(OrderCall { order, from, reply }).await.is_err() {
                        return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "stopping");
                    }
                    match tokio::time::timeout(Duration::from_secs(5), answer).await {
                        Ok(Ok(reply)) => Answer::json(StatusCode::OK, &reply),
                        _ => Answer::error(StatusCode::SERVICE_UNAVAILABLE, "no answer"),
                    }
                }
                (&Method::GET, "/v1/order")
                    if matches!(
                        call.peer.role,
                        MemberRole::Controller | MemberRole::Operator
                    ) =>
                {
                    let st = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    Answer::json(StatusCode::OK, &st)
                }
                (_, "/v1/order") => Answer::error(
                    StatusCode::FORBIDDEN,
                    &format!("{} may not {} {}", call.peer, call.method, call.path),
                ),
                _ => Answer::error(StatusCode::NOT_FOUND, "no such resource"),
            }
        })
    })
}
