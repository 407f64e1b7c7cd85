//! Starting the forwarding workers on the chosen backend.
//!
//! * AF_XDP: the steering program is attached to every interface that holds a configured
//!   address (the fabric VTEP, each transit's listen address) and told which (address, port)
//!   pairs to steer; worker `q` owns queue `q` of every such interface (one shared UMEM per
//!   worker) and is pinned to a core. Dropping the [`Forwarding`] detaches the programs.
//! * Sockets: worker `w` owns its own `SO_REUSEPORT` socket on every address.
//!
//! Either way the owner gets plain kernel sockets on the same addresses to send what it
//! originates (handshakes, keepalives, probes, and with AF_XDP the datagrams whose next hop a
//! worker has not learned yet).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use gatewan_dataplane::afxdp::{self, PortRole, Role, XdpForwarder, XskConfig, XskWorker};
use gatewan_dataplane::engine::{self, Clock, Doorbell, Engine, PublishedStats};
use gatewan_dataplane::ifname;
use gatewan_dataplane::route::RouteHandle;
use gatewan_dataplane::socket::{self, SocketWorker, WorkerConfig};
use gatewan_dataplane::wire::ethernet::MacAddr;
use gatewan_dataplane::wire::vxlan;
use gatewan_dataplane::xdp::{AttachMode, AttachedXdp, SteerKind};

use super::config::GatewayConfig;
use super::error::GatewayError;

/// Running workers and what the owner needs of them.
pub struct Forwarding {
    pub backend: &'static str,
    pub threads: Vec<JoinHandle<()>>,
    pub stats: Vec<Arc<PublishedStats>>,
    /// The owner's sending sockets, per transit.
    pub transit_sockets: Vec<UdpSocket>,
    pub fabric_socket: Option<UdpSocket>,
    /// The attached XDP programs (AF_XDP only): detached when dropped.
    pub xdp: Vec<AttachedXdp>,
    /// The AF_XDP workers' doorbells: the owner rings them after `Handoff::send_back`, and
    /// sends through its sockets instead when there are none (the socket backend).
    pub doorbells: Vec<Arc<Doorbell>>,
}

/// What both backends need to start workers.
pub struct Start<'a> {
    pub config: &'a GatewayConfig,
    pub engine: &'a Arc<Engine>,
    pub routes: &'a RouteHandle,
    pub clock: Clock,
    pub stop: &'a Arc<AtomicBool>,
}

fn fabric_addr(config: &GatewayConfig) -> Option<SocketAddr> {
    config
        .fabric
        .as_ref()
        .map(|f| SocketAddr::new(f.vtep, vxlan::PORT))
}

fn bind_error(what: String, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> GatewayError {
    move |source| GatewayError::Bind { what, addr, source }
}

/// The socket backend: `dataplane.workers` workers, each with its own sockets.
pub fn start_sockets(s: &Start<'_>) -> Result<Forwarding, GatewayError> {
    socket_workers(s, s.config.dataplane.workers(), true)
}

/// `workers` socket workers, pinned one per core or not at all.
fn socket_workers(s: &Start<'_>, workers: usize, pin: bool) -> Result<Forwarding, GatewayError> {
    let config = s.config;
    let fabric = fabric_addr(config);
    // Bind every worker's sockets before starting any, so a bad address fails the start.
    let mut sets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut set = socket::SocketSet {
            transits: Vec::with_capacity(config.transits.len()),
            fabric: None,
        };
        for t in &config.transits {
            set.transits.push(
                socket::bind_reuseport(t.listen)
                    .map_err(bind_error(format!("transit {}", t.name), t.listen))?,
            );
        }
        if let Some(addr) = fabric {
            set.fabric = Some(
                socket::bind_reuseport(addr).map_err(bind_error("fabric VXLAN".into(), addr))?,
            );
        }
        sets.push(set);
    }
    // The owner sends through a handle on the first worker's sockets (same socket, so the
    // same source port and no reuse-port share of the incoming traffic).
    let first = sets.first();
    let mut transit_sockets = Vec::new();
    for (i, t) in config.transits.iter().enumerate() {
        let socket = first
            .and_then(|set| set.transits.get(i))
            .map(UdpSocket::try_clone)
            .transpose()
            .map_err(bind_error(format!("transit {}", t.name), t.listen))?
            .ok_or_else(|| GatewayError::Routes("no forwarding workers".into()))?;
        transit_sockets.push(socket);
    }
    let fabric_socket = match (first.and_then(|set| set.fabric.as_ref()), fabric) {
        (Some(socket), Some(addr)) => Some(
            socket
                .try_clone()
                .map_err(bind_error("fabric VXLAN".into(), addr))?,
        ),
        _ => None,
    };
    let cores = engine::usable_cores();
    let mut stats = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for (index, sockets) in sets.into_iter().enumerate() {
        let published = Arc::new(PublishedStats::new(s.engine.tunnel_capacity()));
        stats.push(Arc::clone(&published));
        let worker = SocketWorker::new(
            engine::Worker::new(Arc::clone(s.engine), s.routes.reader()),
            sockets,
            s.clock,
            published,
            WorkerConfig {
                batch: config.dataplane.batch(),
                core: cores.get(index % cores.len()).copied().filter(|_| pin),
                gso: config.dataplane.gso(),
            },
        );
        let stop = Arc::clone(s.stop);
        threads.push(
            std::thread::Builder::new()
                .name(format!("gatewan-fwd-{index}"))
                .spawn(move || worker.run(&stop))
                .map_err(|source| GatewayError::Spawn { index, source })?,
        );
    }
    Ok(Forwarding {
        backend: "socket",
        threads,
        stats,
        transit_sockets,
        fabric_socket,
        xdp: Vec::new(),
        doorbells: Vec::new(),
    })
}

/// An interface the AF_XDP backend serves, and the roles it plays.
struct Interface {
    name: String,
    mac: MacAddr,
    roles: Vec<(Role, SocketAddr, SteerKind)>,
}

/// The AF_XDP backend, or why it cannot run here (for the one log line, or the error when
/// the configuration demands it).
pub fn start_afxdp(s: &Start<'_>) -> Result<Forwarding, String> {
    let config = s.config;
    // Which interface holds each address.
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut wanted: Vec<(IpAddr, Role, SocketAddr, SteerKind)> = Vec::new();
    if let Some(f) = &config.fabric {
        let addr = SocketAddr::new(f.vtep, vxlan::PORT);
        wanted.push((
            f.vtep,
            Role::Fabric { vtep: f.vtep },
            addr,
            SteerKind::Vxlan,
        ));
    }
    for (index, t) in config.transits.iter().enumerate() {
        let role = Role::Transit {
            index,
            listen: t.listen,
        };
        wanted.push((t.listen.ip(), role, t.listen, SteerKind::Wireguard));
    }
    for (ip, role, addr, kind) in wanted {
        if ip.is_unspecified() {
            return Err(format!(
                "{addr} is a wildcard address: AF_XDP needs the interface, so listen on a concrete address"
            ));
        }
        let name = ifname::by_address(ip)
            .ok_or_else(|| format!("no interface in this namespace holds {ip}"))?;
        if name == "lo" {
            return Err(format!("{ip} is on the loopback interface"));
        }
        match interfaces.iter_mut().find(|i| i.name == name) {
            Some(i) => i.roles.push((role, addr, kind)),
            None => {
                let mac = ifname::mac(&name).map_err(|e| format!("{name}: {e}"))?;
                interfaces.push(Interface {
                    name,
                    mac: MacAddr(mac),
                    roles: vec![(role, addr, kind)],
                });
            }
        }
    }
    let mut xdp = Vec::with_capacity(interfaces.len());
    for i in &interfaces {
        let mut attached = AttachedXdp::attach(&i.name, AttachMode::Auto)
            .map_err(|e| format!("attaching XDP to {}: {}", i.name, error_chain(&e)))?;
        for (_, addr, kind) in &i.roles {
            attached
                .add_endpoint(*addr, *kind)
                .map_err(|e| format!("steering {addr} on {}: {}", i.name, error_chain(&e)))?;
        }
        xdp.push(attached);
    }
    let cores = engine::usable_cores();
    let wanted_workers = config.dataplane.workers();
    let xsk_config = {
        let ports = interfaces.len() as u32;
        // Rings deep enough to ride out a worker being descheduled for a while (2048 frames
        // is 200 ms at 10 kpps per queue).
        let base = XskConfig {
            ring_size: 2048,
            ..XskConfig::default()
        };
        XskConfig {
            busy_poll: config.dataplane.busy_poll().then(afxdp::BusyPoll::default),
            // Every port's fill ring full, plus as much again in flight on the TX rings.
            frames: (base.ring_size * 2 * ports).max(base.frames),
            batch: config.dataplane.batch().min(base.ring_size as usize) as u32,
            ..base
        }
    };
    let mut stats = Vec::new();
    let mut forwarders = Vec::new();
    let mut doorbells = Vec::new();
    for queue in 0..wanted_workers as u32 {
        let mut xsk = XskWorker::new(xsk_config.clone()).map_err(|e| error_chain(&e))?;
        let mut ports = Vec::with_capacity(interfaces.len());
        let mut missing = None;
        for i in &interfaces {
            match xsk.add_port(&i.name, queue) {
                Ok(port) => {
                    // One port per interface, playing every role configured on it.
                    for (role, ..) in &i.roles {
                        ports.push(PortRole {
                            port,
                            mac: i.mac,
                            role: *role,
                        });
                    }
                }
                Err(e) => {
                    missing = Some(format!("{} queue {queue}: {}", i.name, error_chain(&e)));
                    break;
                }
            }
        }
        if let Some(why) = missing {
            if queue == 0 {
                return Err(why);
            }
            // Fewer queues than workers asked for: one worker per queue.
            tracing::info!(workers = queue, reason = %why, "AF_XDP: fewer queues than workers");
            break;
        }
        for (i, attached) in interfaces.iter().zip(xdp.iter_mut()) {
            let Some(port) = ports.iter().find(|p| p.mac == i.mac && roles_match(p, i)) else {
                continue;
            };
            let fd = xsk.fd(port.port).map_err(|e| error_chain(&e))?;
            attached.register_xsk(queue, &fd).map_err(|e| {
                format!(
                    "registering queue {queue} on {}: {}",
                    i.name,
                    error_chain(&e)
                )
            })?;
        }
        let published = Arc::new(PublishedStats::new(s.engine.tunnel_capacity()));
        stats.push(Arc::clone(&published));
        let index = queue as usize;
        let doorbell = Arc::new(Doorbell::new().map_err(|e| format!("eventfd: {e}"))?);
        doorbells.push(Arc::clone(&doorbell));
        forwarders.push(
            XdpForwarder::new(
                xsk,
                engine::Worker::new(Arc::clone(s.engine), s.routes.reader()),
                ports,
                s.clock,
                published,
                cores.get(index % cores.len()).copied(),
            )
            .with_doorbell(doorbell),
        );
    }
    // What still reaches the kernel's sockets (traffic from this host itself, or steered
    // while a queue has no socket yet) is forwarded by one unpinned socket worker; the owner
    // sends through the AF_XDP workers, or through its sockets when they cannot take it (no
    // next hop known yet). Started last: nothing below can fail but a thread spawn.
    let mut slow = socket_workers(s, 1, false).map_err(|e| error_chain(&e))?;
    for (index, forwarder) in forwarders.into_iter().enumerate() {
        let stop = Arc::clone(s.stop);
        slow.threads.push(
            std::thread::Builder::new()
                .name(format!("gatewan-xsk-{index}"))
                .spawn(move || forwarder.run(&stop))
                .map_err(|e| format!("starting worker {index}: {e}"))?,
        );
    }
    // Queue order first, the socket worker last.
    let mut all = stats;
    all.append(&mut slow.stats);
    slow.stats = all;
    slow.backend = "afxdp";
    slow.xdp = xdp;
    slow.doorbells = doorbells;
    Ok(slow)
}

fn roles_match(port: &PortRole, i: &Interface) -> bool {
    i.roles.iter().any(|(r, ..)| *r == port.role)
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
