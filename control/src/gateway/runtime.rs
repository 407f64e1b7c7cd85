//! The gateway: forwarding workers on every core, the owner's task, the mesh, and the
//! control endpoint, started and stopped together.
//!
//! The workers ([`gatewan_dataplane::socket::SocketWorker`] or the AF_XDP ones, one per core
//! or queue, pinned) forward packets between the fabric's VXLAN and the transits' WireGuard
//! through the forwarding engine, sharing only published tables. The owner
//! ([`super::owner::Owner`], sans-IO) keeps everything with a single writer; this module is
//! its thin tokio adapter: it feeds it the workers' parcels, the commands of the control
//! endpoint and the mesh, the kernel's next-hop answers and the time, sends the datagrams it
//! queues, and stores the status snapshot it makes each second for the control endpoint.

use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gatewan_dataplane::engine::{Clock, Doorbell, Egress, Engine, Handoff};
use gatewan_dataplane::pipeline;
use gatewan_dataplane::route::{FlowHasher, RouteHandle, RouteTables};
use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_dataplane::wireguard as wg;
use gatewan_dataplane::{ifname, neigh};
use tokio::sync::{mpsc, watch};

use super::backend;
use super::config::{Backend, GatewayConfig};
use super::control::{self, DataplaneStatus, Request, Response};
pub use super::error::GatewayError;
pub use super::owner::{Command, Origin, TunnelOrder};
use super::owner::{Owner, OwnerParts, Snapshot};

/// How often the owner refreshes its tunnels' status (and their rates).
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// How long a stopping gateway waits for its graceful leave of the mesh.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(8);
/// Parcels in flight from the workers to the owner.
const HANDOFF_CAPACITY: usize = 1024;

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(config: GatewayConfig) -> Result<(), GatewayError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(GatewayError::Signals)?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(GatewayError::Signals)?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
            _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = stop_tx.send(true);
    };
    run_until(config, stop_rx, stop).await
}

/// Runs the gateway until `stop` completes (it must also flip `stopped` to true).
pub async fn run_until(
    config: GatewayConfig,
    stopped: watch::Receiver<bool>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let clock = Clock::new();
    let fabric = config.fabric.as_ref().map(|f| {
        tracing::info!(vtep = %f.vtep, vni = f.vni, local_routes = f.local_routes.len(), "fabric up");
        (
            pipeline::Fabric {
                vni: f.vni,
                router_mac: f.router_mac,
                tunnel_mtu: wg::tunnel::DEFAULT_MTU,
            },
            f.vtep,
        )
    });
    // The owner builds the tables with the static tunnels before anything is forwarded;
    // until then the workers know no tunnel.
    let routes = RouteHandle::new(RouteTables::empty());
    let capacity = config.tunnels.len() + config.mesh.as_ref().map_or(0, |m| m.max_tunnels);
    let engine = Arc::new(Engine::with_capacity(
        fabric,
        Vec::new(),
        capacity,
        config.transits.len(),
        FlowHasher::new(0x6761_7465_7761_6e21),
        Arc::new(Handoff::new(HANDOFF_CAPACITY)),
    ));

    // The forwarding workers, one per core (or queue), on the chosen backend.
    let stop_workers = Arc::new(AtomicBool::new(false));
    let start = backend::Start {
        config: &config,
        engine: &engine,
        routes: &routes,
        clock,
        stop: &stop_workers,
    };
    let mut afxdp_unavailable = None;
    let forwarding = match config.dataplane.backend {
        Backend::Socket => backend::start_sockets(&start)?,
        Backend::Afxdp => backend::start_afxdp(&start).map_err(GatewayError::Afxdp)?,
        Backend::Auto => match backend::start_afxdp(&start) {
            Ok(f) => f,
            Err(why) => {
                tracing::warn!("AF_XDP unavailable ({why}); using the socket backend");
                afxdp_unavailable = Some(why);
                backend::start_sockets(&start)?
            }
        },
    };
    let dataplane = DataplaneStatus {
        backend: forwarding.backend.to_owned(),
        workers: forwarding.threads.len(),
        afxdp_unavailable,
        worker_rx_packets: Vec::new(),
        mesh: None,
    };
    tracing::info!(
        backend = forwarding.backend,
        workers = forwarding.threads.len(),
        batch = config.dataplane.batch(),
        "forwarding workers started"
    );
    for t in &config.transits {
        tracing::info!(transit = %t.name, listen = %t.listen, "transit up");
    }
    let backend::Forwarding {
        threads,
        stats: published,
        transit_sockets,
        fabric_socket,
        xdp,
        doorbells,
        ..
    } = forwarding;

    let (command_tx, commands) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(Snapshot::default()));
    let owner = Owner::new(OwnerParts {
        config: &config,
        engine: Arc::clone(&engine),
        routes,
        workers: published,
        clock,
        via_workers: !doorbells.is_empty(),
        now: Instant::now(),
        wall: SystemTime::now(),
        restored_order: config
            .api
            .as_ref()
            .and_then(|a| super::api::load_order(&a.order_file)),
    })?;
    let (prefixes_tx, prefixes_rx) = watch::channel(None);
    let io = OwnerIo {
        prefixes: prefixes_tx,
        engine,
        transit_sockets,
        fabric_socket,
        doorbells,
        status: Arc::clone(&status),
        commands,
    };
    // The owner stops after the mesh is left: peers move their traffic away while this
    // gateway still forwards.
    let (owner_stop, owner_stopped) = watch::channel(false);
    let task = tokio::spawn(drive(owner, io, owner_stopped));
    let mesh = match &config.mesh {
        Some(_) => Some(
            super::mesh::start(&config, command_tx.clone(), prefixes_rx, stopped)
                .map_err(|e| GatewayError::Mesh(format!("{e:#}")))?,
        ),
        None => None,
    };
    let mesh_status = mesh.as_ref().map(super::mesh::MeshHandle::status);
    let api = match &config.api {
        Some(api) => Some(start_api(&config, api, Arc::clone(&status), command_tx.clone()).await?),
        None => None,
    };

    let (name, datacenter) = (config.name.clone(), config.datacenter.clone());
    let socket_path = config.control_socket.clone();
    let control = tokio::spawn(async move {
        let answer = move |request| {
            // A poisoned lock only means the owner panicked mid-copy; its last snapshot is
            // still the best answer.
            let guard = status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if request == Request::Orders {
                return Response::Orders {
                    orders: guard.orders.clone(),
                    local_routes: guard.local_routes.clone(),
                };
            }
            if let Request::Rekey { tunnel } = request {
                if !guard.tunnels.iter().any(|t| t.interface == tunnel) {
                    return Response::Error {
                        message: format!("no tunnel named {tunnel:?}"),
                    };
                }
                return match command_tx.send(Command::Rekey(tunnel.clone())) {
                    Ok(()) => Response::Done,
                    Err(_) => Response::Error {
                        message: format!("tunnel {tunnel} is stopping"),
                    },
                };
            }
            Response::Status {
                gateway: name.clone(),
                datacenter: datacenter.clone(),
                tunnels: guard.tunnels.clone(),
                drops: guard.drops.clone(),
                dataplane: DataplaneStatus {
                    worker_rx_packets: guard.worker_rx_packets.clone(),
                    mesh: mesh_status.as_ref().map(|m| Box::new(m.borrow().clone())),
                    ..dataplane.clone()
                },
            }
        };
        control::serve(&socket_path, move |request| {
            std::future::ready(answer(request))
        })
        .await
    });
    tracing::info!(gateway = %config.name, socket = %config.control_socket.display(), "gateway running");
    stop.await;
    if let Some(mesh) = mesh {
        if tokio::time::timeout(LEAVE_TIMEOUT, mesh.leave())
            .await
            .is_err()
        {
            tracing::warn!("leaving the mesh took over {LEAVE_TIMEOUT:?}; stopping anyway");
        }
    }
    let _ = owner_stop.send(true);
    let _ = task.await;
    stop_workers.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    // Detach the XDP programs only once no worker uses their sockets.
    drop(xdp);
    control.abort();
    if let Some(api) = api {
        api.abort();
    }
    let _ = std::fs::remove_file(&config.control_socket);
    Ok(())
}

/// Serves the orders channel (reports, orders) on `api.listen`.
async fn start_api(
    config: &GatewayConfig,
    api: &super::api_config::Api,
    status: Arc<Mutex<Snapshot>>,
    commands: mpsc::UnboundedSender<Command>,
) -> Result<tokio::task::JoinHandle<()>, GatewayError> {
    use crate::channel::{Identity, MemberRole, TlsSetup};
    let identity = Identity::new(MemberRole::Gateway, &config.name)
        .map_err(|e| GatewayError::Api(e.to_string()))?;
    let tls = TlsSetup::load(&api.tls, identity).map_err(|e| GatewayError::Api(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(api.listen)
        .await
        .map_err(|e| GatewayError::Api(format!("binding {}: {e}", api.listen)))?;
    tracing::info!(listen = %api.listen, advertise = %api.advertise, "orders channel up");
    let handler = super::api::handler(Arc::new(config.clone()), status, commands);
    Ok(tokio::spawn(async move {
        crate::channel::http::serve(listener, &tls, handler).await
    }))
}

/// The owner's I/O: the handoff queue, the kernel sockets, the workers' doorbells, the
/// control endpoint's status slot and commands.
struct OwnerIo {
    engine: Arc<Engine>,
    /// Kernel sockets the owner sends on (handshakes, keepalives, probes, and datagrams
    /// whose next hop an AF_XDP worker has not learned); the workers receive.
    transit_sockets: Vec<UdpSocket>,
    fabric_socket: Option<UdpSocket>,
    /// The AF_XDP workers' doorbells (none on the socket backend).
    doorbells: Vec<Arc<Doorbell>>,
    status: Arc<Mutex<Snapshot>>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The local prefixes for the mesh, each time bgpctl's routes change them.
    prefixes: watch::Sender<Option<Vec<ipnet::IpNet>>>,
}

impl OwnerIo {
    fn socket(&self, egress: Egress) -> Option<&UdpSocket> {
        match egress {
            Egress::Transit(t) => self.transit_sockets.get(t),
            Egress::Fabric => self.fabric_socket.as_ref(),
        }
    }

    /// Sends what the owner queued: through the workers when it says so and they have room,
    /// else through the kernel.
    fn flush(&self, owner: &mut Owner) {
        while let Some(t) = owner.poll_transmit() {
            let handoff = self.engine.handoff();
            if t.via_workers && handoff.send_back(t.egress, t.to, &t.bytes) {
                for bell in &self.doorbells {
                    bell.ring();
                }
            } else if let Some(socket) = self.socket(t.egress) {
                if let Err(e) = socket.send_to(&t.bytes, t.to) {
                    tracing::debug!(egress = ?t.egress, to = %t.to, error = %e, "send");
                }
            }
            owner.recycle(t);
        }
    }

    /// Asks the kernel's tables: each side sends from its socket's address, out of the
    /// interface that holds it.
    fn resolve(&self, wanted: &[(Egress, IpAddr)]) -> Vec<(Egress, IpAddr, MacAddr)> {
        let asked: Vec<(Egress, IpAddr, String, IpAddr)> = wanted
            .iter()
            .filter_map(|&(egress, dst)| {
                let src = self.socket(egress)?.local_addr().ok()?.ip();
                Some((egress, dst, ifname::by_address(src)?, src))
            })
            .collect();
        let questions: Vec<neigh::Question<'_>> = asked
            .iter()
            .map(|(_, dst, interface, src)| neigh::Question {
                interface,
                src: Some(*src),
                dst: *dst,
            })
            .collect();
        neigh::resolve(&questions)
            .into_iter()
            .filter_map(|(i, mac)| {
                let (egress, dst, ..) = asked.get(i)?;
                Some((*egress, *dst, mac))
            })
            .collect()
    }
}

/// The owner's task: feeds it the workers' parcels, commands and the time, sends what it
/// queues, and publishes its status each second.
async fn drive(mut owner: Owner, mut io: OwnerIo, mut stopped: watch::Receiver<bool>) {
    let mut next_status = Instant::now();
    let engine = Arc::clone(&io.engine);
    loop {
        let (now, wall) = (Instant::now(), SystemTime::now());
        // At most a queue's worth per round: workers that keep the queue full must not
        // starve the timers (probes, rekeys, next-hop resolution that ends the parcels).
        for _ in 0..HANDOFF_CAPACITY {
            let Some(mut parcel) = engine.handoff().recv() else {
                break;
            };
            owner.handle_parcel(now, wall, &mut parcel);
            engine.handoff().recycle(parcel);
            io.flush(&mut owner);
        }
        owner.handle_timeout(now, wall);
        if let Some(wanted) = owner.poll_next_hop_questions(now) {
            let answers = io.resolve(&wanted);
            owner.handle_next_hops(now, answers);
        }
        io.flush(&mut owner);
        if now >= next_status {
            let snapshot = owner.status(now);
            *io.status.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
            next_status = now + STATUS_PERIOD;
        }
        let wake = owner.poll_timeout(now).min(next_status);
        let handoff = engine.handoff();
        tokio::select! {
            _ = stopped.changed() => break,
            _ = std::future::poll_fn(|cx| handoff.poll_ready(cx)) => {}
            Some(command) = io.commands.recv() => {
                owner.handle_command(Instant::now(), SystemTime::now(), command);
                if let Some(p) = owner.poll_local_prefixes() {
                    let _ = io.prefixes.send(Some(p));
                }
                io.flush(&mut owner);
            }
            _ = tokio::time::sleep_until(wake.max(now).into()) => {}
        }
    }
    tracing::info!("owner stopped");
}
