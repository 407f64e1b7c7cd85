//! The gateway's end of the orders channel: it serves its report (`GET /v1/report`) and the
//! order in force (`GET /v1/order`) to controllers and operators, and takes orders
//! (`PUT /v1/order`) from controllers only, through the owner. An accepted order is kept
//! on disk, so a restarted gateway forwards on it before any controller speaks. Its
//! datacenter's bgpctl sends the fabric's routes (`PUT /v1/local-routes`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use hyper::{Method, StatusCode};
use tokio::sync::{mpsc, oneshot};

use super::config::GatewayConfig;
use super::local_routes::LocalRoutes;
use super::owner::{Command, Snapshot};
use crate::channel::http::{Answer, BoxAnswer, Call, Handler};
use crate::channel::MemberRole;
use crate::controller::inputs::{
    Demand, Endpoint, Gateway, GatewayReport, GatewayTransit, Rate, TransitUsage, TunnelReport,
    REPORT_VERSION,
};
use crate::controller::orders::GatewayOrder;

/// The order file: the order and when it was saved.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved<T> {
    saved_at_unix_ms: u64,
    order: T,
}

/// The order kept on disk (a gateway's or bgpctl's), if there is a readable one.
pub fn load_order<T: serde::de::DeserializeOwned>(path: &Path) -> Option<(T, SystemTime)> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Saved<T>>(&text) {
        Ok(s) => Some((
            s.order,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(s.saved_at_unix_ms),
        )),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "order file unreadable: ignored");
            None
        }
    }
}

/// Writes the order atomically (a new file renamed over the old).
pub fn save_order<T: serde::Serialize>(path: &Path, order: &T) -> std::io::Result<()> {
    let saved = Saved {
        saved_at_unix_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        order,
    };
    let body = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.new");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

/// Byte counters of the interface holding each transit's address, turned into rates.
#[derive(Default)]
struct TransitMeter {
    last: BTreeMap<String, (Instant, u64, u64)>,
    rates: BTreeMap<String, (u64, u64)>,
}

fn interface_bytes(interface: &str) -> Option<(u64, u64)> {
    let read = |what: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/class/net/{interface}/statistics/{what}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("rx_bytes")?, read("tx_bytes")?))
}

impl TransitMeter {
    /// The rates of each transit's interface (bit/s), measured since the previous call at
    /// least half a second ago.
    fn sample(&mut self, config: &GatewayConfig, now: Instant) -> BTreeMap<String, (u64, u64)> {
        for t in &config.transits {
            let ip = if t.listen.ip().is_unspecified() {
                t.public_endpoint.ip()
            } else {
                t.listen.ip()
            };
            let Some(bytes) =
                gatewan_dataplane::ifname::by_address(ip).and_then(|i| interface_bytes(&i))
            else {
                continue;
            };
            match self.last.get(&t.name) {
                Some(&(at, rx, tx)) => {
                    let dt = now.saturating_duration_since(at).as_secs_f64();
                    if dt < 0.5 {
                        continue;
                    }
                    let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 * 8.0 / dt) as u64;
                    self.rates
                        .insert(t.name.clone(), (rate(bytes.0, rx), rate(bytes.1, tx)));
                }
                None => {
                    self.rates.insert(t.name.clone(), (0, 0));
                }
            }
            self.last.insert(t.name.clone(), (now, bytes.0, bytes.1));
        }
        self.rates.clone()
    }
}

/// The report from the owner's last status and the transits' interfaces.
fn report(
    config: &GatewayConfig,
    status: &Snapshot,
    usage: &BTreeMap<String, (u64, u64)>,
) -> GatewayReport {
    let fabric = config.fabric.as_ref();
    let gateway = Gateway {
        id: config.name.clone(),
        datacenter: config.datacenter.clone(),
        vtep: fabric.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |f| f.vtep),
        router_mac: fabric.map_or_else(Default::default, |f| f.router_mac),
        live: true,
        transits: config
            .transits
            .iter()
            .map(|t| GatewayTransit {
                name: t.name.clone(),
                capacity: Rate::bps(t.capacity_bps.unwrap_or(0) as f64),
            })
            .collect(),
    };
    let mut sdwan: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut demand: BTreeMap<&str, u64> = BTreeMap::new();
    let tunnels = status
        .report
        .iter()
        .map(|t| {
            let s = sdwan.entry(t.transit.as_str()).or_default();
            s.0 = s.0.saturating_add(t.rx_bps);
            s.1 = s.1.saturating_add(t.tx_bps);
            // What we send into the tunnels towards a datacenter is what its fabric asks.
            *demand.entry(t.datacenter.as_str()).or_default() += t.tx_bps;
            TunnelReport {
                id: t.id.clone(),
                local: Endpoint {
                    gateway: config.name.clone(),
                    transit: t.transit.clone(),
                },
                remote: Endpoint {
                    gateway: t.peer.clone(),
                    transit: t.peer_transit.clone(),
                },
                state: t.state,
                probe: t.probe.clone(),
            }
        })
        .collect();
    let transit_usage = config
        .transits
        .iter()
        .filter_map(|t| {
            let (rx, tx) = *usage.get(&t.name)?;
            let (srx, stx) = sdwan.get(t.name.as_str()).copied().unwrap_or_default();
            Some(TransitUsage {
                gateway: config.name.clone(),
                transit: t.name.clone(),
                rx: Rate::bps(rx.max(srx) as f64),
                tx: Rate::bps(tx.max(stx) as f64),
                sdwan_rx: Rate::bps(srx as f64),
                sdwan_tx: Rate::bps(stx as f64),
            })
        })
        .collect();
    GatewayReport {
        version: REPORT_VERSION,
        gateway,
        tunnels,
        transit_usage,
        demand: demand
            .into_iter()
            .map(|(to, bps)| Demand {
                from: config.datacenter.clone(),
                to: to.to_owned(),
                rate: Rate::bps(bps as f64),
            })
            .collect(),
        prefixes: status.local_prefixes.clone(),
        order: status
            .orders
            .order
            .as_ref()
            .map(|o| (o.epoch.clone(), o.version)),
    }
}

/// The channel's handler for a gateway.
pub fn handler(
    config: Arc<GatewayConfig>,
    status: Arc<Mutex<Snapshot>>,
    commands: mpsc::UnboundedSender<Command>,
) -> Handler {
    let meter = Arc::new(Mutex::new(TransitMeter::default()));
    Arc::new(move |call: Call| -> BoxAnswer {
        let (config, status, commands, meter) = (
            Arc::clone(&config),
            Arc::clone(&status),
            commands.clone(),
            Arc::clone(&meter),
        );
        Box::pin(async move { answer(call, &config, &status, &commands, &meter).await })
    })
}

async fn answer(
    call: Call,
    config: &GatewayConfig,
    status: &Mutex<Snapshot>,
    commands: &mpsc::UnboundedSender<Command>,
    meter: &Mutex<TransitMeter>,
) -> Answer {
    let reader = matches!(
        call.peer.role,
        MemberRole::Controller | MemberRole::Operator
    );
    let snapshot = || status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match (&call.method, call.path.as_str()) {
        (&Method::GET, "/v1/report") if reader => {
            let usage = meter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample(config, Instant::now());
            Answer::json(StatusCode::OK, &report(config, &snapshot(), &usage))
        }
        (&Method::GET, "/v1/order") if reader => Answer::json(StatusCode::OK, &snapshot().orders),
        (&Method::PUT, "/v1/order") if call.peer.role == MemberRole::Controller => {
            let order: GatewayOrder = match serde_json::from_slice(&call.body) {
                Ok(o) => o,
                Err(e) => return Answer::error(StatusCode::BAD_REQUEST, &format!("order: {e}")),
            };
            let (tx, rx) = oneshot::channel();
            let sent = commands.send(Command::Order {
                order: Box::new(order),
                from: call.peer.clone(),
                reply: tx,
            });
            let Ok(Ok((reply, keep))) = (match sent {
                Ok(()) => tokio::time::timeout(std::time::Duration::from_secs(5), rx).await,
                Err(_) => return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            }) else {
                return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "the owner did not answer");
            };
            if let (Some(order), Some(api)) = (keep, &config.api) {
                if let Err(e) = save_order(&api.order_file, &order) {
                    tracing::warn!(path = %api.order_file.display(), error = %e, "order not saved");
                }
            }
            Answer::json(StatusCode::OK, &reply)
        }
        (&Method::PUT, "/v1/local-routes") if call.peer.role == MemberRole::Bgpctl => {
            let routes: LocalRoutes = match serde_json::from_slice(&call.body) {
                Ok(r) => r,
                Err(e) => {
                    return Answer::error(StatusCode::BAD_REQUEST, &format!("local routes: {e}"))
                }
            };
            let (tx, rx) = oneshot::channel();
            let sent = commands.send(Command::LocalRoutes {
                routes: Box::new(routes),
                from: call.peer.clone(),
                reply: tx,
            });
            let answer = match sent {
                Ok(()) => tokio::time::timeout(std::time::Duration::from_secs(5), rx).await,
                Err(_) => return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            };
            match answer {
                Ok(Ok(Ok(()))) => Answer::json(StatusCode::OK, &snapshot().local_routes),
                Ok(Ok(Err(problem))) => Answer::error(StatusCode::UNPROCESSABLE_ENTITY, &problem),
                _ => Answer::error(StatusCode::SERVICE_UNAVAILABLE, "the owner did not answer"),
            }
        }
        (&Method::GET, "/v1/local-routes") if reader => {
            Answer::json(StatusCode::OK, &snapshot().local_routes)
        }
        (_, "/v1/report" | "/v1/order" | "/v1/local-routes") => Answer::error(
            StatusCode::FORBIDDEN,
            &format!("{} may not {} {}", call.peer, call.method, call.path),
        ),
        _ => Answer::error(StatusCode::NOT_FOUND, "no such resource"),
    }
}
