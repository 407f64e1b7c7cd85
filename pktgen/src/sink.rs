//! The sink: receives with recvmmsg on one or more REUSEPORT sockets (one thread each),
//! validates every packet, and accounts per flow. Per packet: no allocation, no lock, no
//! system call; one clock read and one recvmmsg per batch, and one relaxed atomic add per
//! batch for the live counter.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::clock::{monotonic_ns, CpuTime, CpuUsage};
use crate::flows::{FlowReport, FlowState};
use crate::validate::{check_plain, check_vxlan, Expect, Invalid};

/// How long a blocked receive waits before looking at the stop flag and the timers.
const POLL: Duration = Duration::from_millis(20);
/// After a stop, how long the threads keep draining what is already queued.
const DRAIN_NS: u64 = 200_000_000;
/// Latencies above this (an hour) are recorded as this.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// What the sink receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SinkMode {
    /// VXLAN datagrams (the sink is the far leaf's VTEP).
    #[default]
    Vxlan,
    /// Bare inner UDP payloads (a kernel VXLAN device in front took the headers off).
    Plain,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SinkConfig {
    pub listen: SocketAddr,
    pub mode: SinkMode,
    pub expect: Expect,
    /// Receiving threads, one REUSEPORT socket each.
    pub threads: usize,
    /// Datagrams per recvmmsg.
    pub batch: usize,
    /// Stop this long after starting.
    pub duration: Option<Duration>,
    /// Stop once no packet has come for this long, after the first one.
    pub idle_timeout: Option<Duration>,
    /// SO_RCVBUF in bytes (forced past rmem_max when privileged); 0 keeps the default.
    pub recv_buffer: usize,
    /// Receive buffer per datagram; larger datagrams count as `truncated`.
    pub max_packet: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], gatewan_dataplane::wire::vxlan::PORT)),
            mode: SinkMode::Vxlan,
            expect: Expect {
                vni: None,
                inner_dst_mac: None,
                flows: 1,
            },
            threads: 1,
            batch: 64,
            duration: None,
            idle_timeout: None,
            recv_buffer: 8 << 20,
            max_packet: 9216,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("binding {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("batch {0} is outside 1..=1024")]
    Batch(usize),
    #[error("at least one flow is needed")]
    NoFlows,
    #[error("starting a receive thread")]
    Thread(#[source] io::Error),
}

/// Latency percentiles over every valid packet, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub min_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// What the sink saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SinkReport {
    pub mode: SinkMode,
    /// Valid packets, duplicates included.
    pub received: u64,
    /// Distinct (flow, sequence) pairs.
    pub unique: u64,
    pub duplicates: u64,
    /// Arrivals below their flow's highest sequence.
    pub reordered: u64,
    /// Loss estimated from sequence gaps (blind to a lost tail).
    pub gap_lost: u64,
    /// Sent by the generator, once [`SinkReport::reconcile`] has been given its report.
    pub sent: Option<u64>,
    /// `sent - unique`, once reconciled.
    pub lost: Option<u64>,
    pub invalid: u64,
    /// Invalid packets by reason (reasons with no packet left out).
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    pub recv_errors: u64,
    /// Inner IP bytes of valid packets (UDP payload bytes in plain mode).
    pub bytes_inner: u64,
    /// Datagram bytes received, valid or not.
    pub bytes_received: u64,
    /// From the first to the last valid packet.
    pub elapsed_s: f64,
    pub pps: f64,
    pub gbps_inner: f64,
    pub latency: LatencySummary,
    /// CPU of the receiving threads.
    pub cpu: CpuUsage,
    pub flows: Vec<FlowReport>,
}

impl SinkReport {
    /// Fills `sent` and `lost` from the generator's per-flow counts (indexed by flow id).
    pub fn reconcile(&mut self, flows_sent: &[u64]) {
        let mut sent_total = 0u64;
        let mut lost_total = 0u64;
        for f in &mut self.flows {
            let sent = flows_sent.get(f.flow as usize).copied().unwrap_or(0);
            let lost = sent.saturating_sub(f.received - f.duplicates);
            f.sent = Some(sent);
            f.lost = Some(lost);
            sent_total += sent;
            lost_total += lost;
        }
        self.sent = Some(sent_total);
        self.lost = Some(lost_total);
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

impl std::fmt::Display for SinkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sink: {} valid ({} invalid", self.received, self.invalid)?;
        for (reason, n) in &self.invalid_by_reason {
            write!(f, ", {reason} {n}")?;
        }
        write!(f, "), ")?;
        match (self.lost, self.sent) {
            (Some(lost), Some(sent)) => write!(f, "lost {lost}/{sent}")?,
            _ => write!(f, "gap-lost {}", self.gap_lost)?,
        }
        let l = &self.latency;
        write!(
            f,
            ", reordered {}, duplicates {}; {:.3} Mpps {:.3} Gbit/s inner; latency p50 {:.1} µs p90 {:.1} p99 {:.1} max {:.1}; cpu {:.0} ns/packet",
            self.reordered,
            self.duplicates,
            self.pps / 1e6,
            self.gbps_inner,
            us(l.p50_ns),
            us(l.p90_ns),
            us(l.p99_ns),
            us(l.max_ns),
            self.cpu.ns_per_packet,
        )
    }
}

struct Shared {
    stop: AtomicBool,
    received: AtomicU64,
    first_rx_ns: AtomicU64,
    last_rx_ns: AtomicU64,
}

struct ThreadStats {
    flows: Vec<FlowState>,
    hist: Histogram<u64>,
    invalid: [u64; Invalid::COUNT],
    recv_errors: u64,
    bytes_inner: u64,
    bytes_received: u64,
    cpu: CpuTime,
}

/// Starts sinks.
pub struct Sink;

/// A running sink.
pub struct SinkHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<ThreadStats>>,
    local_addr: SocketAddr,
    mode: SinkMode,
    flows: u32,
}

impl Sink {
    /// Binds the sockets (in the calling thread's network namespace) and starts receiving.
    pub fn spawn(config: SinkConfig) -> Result<SinkHandle, SinkError> {
        if config.batch == 0 || config.batch > 1024 {
            return Err(SinkError::Batch(config.batch));
        }
        if config.expect.flows == 0 {
            return Err(SinkError::NoFlows);
        }
        let threads = config.threads.max(1);
        let mut addr = config.listen;
        let mut sockets = Vec::with_capacity(threads);
        for _ in 0..threads {
            let s = open(addr, threads > 1, config.recv_buffer)
                .map_err(|source| SinkError::Bind { addr, source })?;
            // Port 0: the first socket's port is where the others join.
            if let Ok(local) = s.local_addr() {
                addr = local;
            }
            sockets.push(s);
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            received: AtomicU64::new(0),
            first_rx_ns: AtomicU64::new(0),
            last_rx_ns: AtomicU64::new(0),
        });
        let start = monotonic_ns();
        let handles = sockets
            .into_iter()
            .enumerate()
            .map(|(i, sock)| {
                let shared = Arc::clone(&shared);
                let config = config.clone();
                std::thread::Builder::new()
                    .name(format!("pktgen-sink{i}"))
                    .spawn(move || rx_loop(&sock, &config, &shared, start))
                    .map_err(SinkError::Thread)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SinkHandle {
            shared,
            threads: handles,
            local_addr: addr,
            mode: config.mode,
            flows: config.expect.flows,
        })
    }
}

fn open(addr: SocketAddr, reuse_port: bool, recv_buffer: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if recv_buffer > 0 {
        // SO_RCVBUFFORCE passes rmem_max when privileged; otherwise the capped SO_RCVBUF.
        let v = libc::c_int::try_from(recv_buffer).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads one c_int through a valid pointer of the given length.
        let forced = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !forced {
            s.set_recv_buffer_size(recv_buffer)?;
        }
    }
    s.bind(&SockAddr::from(addr))?;
    s.set_read_timeout(Some(POLL))?;
    Ok(UdpSocket::from(s))
}

impl SinkHandle {
    /// Where the sink listens (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Valid packets so far.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Waits until `n` valid packets have come or `timeout` has passed; true when they came.
    /// For a caller that knows how many were sent and wants to stop as soon as they are in.
    pub fn wait_received(&self, n: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.received() >= n {
                return true;
            }
            if std::time::Instant::now() >= deadline || self.is_finished() {
                return self.received() >= n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The sink stopped by itself (duration or idle timeout).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops now (after draining what is already queued) and reports.
    pub fn stop(self) -> SinkReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    /// Waits for the sink's own end (duration or idle timeout) and reports. Without either,
    /// only [`SinkHandle::stop`] from elsewhere ends it: use `stop` instead.
    pub fn wait(mut self) -> SinkReport {
        let threads = std::mem::take(&mut self.threads);
        let mut flows = vec![FlowState::default(); self.flows as usize];
        let mut hist = new_histogram();
        let mut invalid = [0u64; Invalid::COUNT];
        let mut r = SinkReport {
            mode: self.mode,
            ..SinkReport::default()
        };
        let mut cpu = CpuTime::default();
        for t in threads {
            let Ok(t) = t.join() else {
                r.recv_errors += 1;
                continue;
            };
            for (a, b) in flows.iter_mut().zip(&t.flows) {
                a.merge(b);
            }
            let _ = hist.add(&t.hist);
            for (a, b) in invalid.iter_mut().zip(t.invalid) {
                *a += b;
            }
            r.recv_errors += t.recv_errors;
            r.bytes_inner += t.bytes_inner;
            r.bytes_received += t.bytes_received;
            cpu = cpu.add(&t.cpu);
        }
        for (reason, n) in Invalid::ALL.iter().zip(invalid) {
            if n > 0 {
                r.invalid_by_reason.insert(reason.name(), n);
                r.invalid += n;
            }
        }
        r.flows = flows
            .iter()
            .enumerate()
            .map(|(i, s)| FlowReport::new(i as u32, s))
            .collect();
        for f in &flows {
            r.received += f.received;
            r.unique += f.unique();
            r.duplicates += f.duplicates;
            r.reordered += f.reordered;
            r.gap_lost += f.gap_lost();
        }
        let first = self.shared.first_rx_ns.load(Ordering::Relaxed);
        let last = self.shared.last_rx_ns.load(Ordering::Relaxed);
        r.elapsed_s = last.saturating_sub(first) as f64 / 1e9;
        if r.elapsed_s > 0.0 {
            r.pps = r.received as f64 / r.elapsed_s;
            r.gbps_inner = r.bytes_inner as f64 * 8.0 / r.elapsed_s / 1e9;
        }
        if !hist.is_empty() {
            r.latency = LatencySummary {
                samples: hist.len(),
                min_ns: hist.min(),
                mean_ns: hist.mean() as u64,
                p50_ns: hist.value_at_quantile(0.50),
                p90_ns: hist.value_at_quantile(0.90),
                p99_ns: hist.value_at_quantile(0.99),
                p999_ns: hist.value_at_quantile(0.999),
                max_ns: hist.max(),
            };
        }
        r.cpu = CpuUsage::new(cpu, r.received + r.invalid);
        r
    }
}

impl Drop for SinkHandle {
    /// A sink dropped unreported (a failed test, say) still stops its threads.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits from 1 ns to an hour: a few hundred KiB, allocated once.
    // The bounds are constants hdrhistogram accepts (1 <= low, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant histogram bounds are valid")
}

fn rx_loop(sock: &UdpSocket, config: &SinkConfig, shared: &Shared, start_ns: u64) -> ThreadStats {
    let cpu0 = CpuTime::thread();
    let batch = config.batch;
    let size = config.max_packet.max(64);
    let mut stats = ThreadStats {
        flows: vec![FlowState::default(); config.expect.flows as usize],
        hist: new_histogram(),
        invalid: [0; Invalid::COUNT],
        recv_errors: 0,
        bytes_inner: 0,
        bytes_received: 0,
        cpu: CpuTime::default(),
    };
    // Buffers, iovecs and headers are set up once; recvmmsg only writes lengths and flags.
    let mut bufs = vec![0u8; batch * size];
    let mut iovs: Vec<libc::iovec> = bufs
        .chunks_exact_mut(size)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: size,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let check = match config.mode {
        SinkMode::Vxlan => check_vxlan,
        SinkMode::Plain => check_plain,
    };
    let end_ns = config
        .duration
        .map(|d| start_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
    let idle_ns = config
        .idle_timeout
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let fd = sock.as_raw_fd();
    let mut drain_until: Option<u64> = None;
    loop {
        if drain_until.is_none() && shared.stop.load(Ordering::Relaxed) {
            drain_until = Some(monotonic_ns().saturating_add(DRAIN_NS));
        }
        let flags = if drain_until.is_some() {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        // SAFETY: `msgs` holds `batch` headers whose iovecs point into `bufs`, both alive
        // and unmoved for the whole loop; a null timeout means none (SO_RCVTIMEO applies).
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                batch as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        let now = monotonic_ns();
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    if drain_until.is_some() {
                        break;
                    }
                }
                io::ErrorKind::Interrupted => {}
                _ => {
                    stats.recv_errors += 1;
                    tracing::warn!(error = %e, "sink receive failed");
                    std::thread::sleep(POLL);
                }
            }
        } else {
            let mut valid = 0u64;
            for (m, buf) in msgs.iter().zip(bufs.chunks_exact(size)).take(r as usize) {
                let len = m.msg_len as usize;
                stats.bytes_received += len as u64;
                if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    count(&mut stats.invalid, Invalid::Truncated);
                    continue;
                }
                match check(buf.get(..len).unwrap_or(&[]), &config.expect) {
                    Ok(v) => {
                        let Some(flow) = stats.flows.get_mut(v.header.flow as usize) else {
                            count(&mut stats.invalid, Invalid::UnknownFlow);
                            continue;
                        };
                        flow.record(v.header.seq);
                        let lat = now.saturating_sub(v.header.timestamp_ns);
                        flow.record_latency(lat);
                        stats.hist.saturating_record(lat.clamp(1, MAX_LATENCY_NS));
                        stats.bytes_inner += v.inner_len as u64;
                        valid += 1;
                    }
                    Err(reason) => count(&mut stats.invalid, reason),
                }
            }
            if valid > 0 {
                shared.received.fetch_add(valid, Ordering::Relaxed);
                let _ = shared.first_rx_ns.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                shared.last_rx_ns.fetch_max(now, Ordering::Relaxed);
            }
        }
        if drain_until.is_some_and(|d| now >= d) {
            break;
        }
        let last = shared.last_rx_ns.load(Ordering::Relaxed);
        let idle = last != 0 && idle_ns.is_some_and(|i| now.saturating_sub(last) >= i);
        if end_ns.is_some_and(|e| now >= e) || idle {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    stats.cpu = CpuTime::thread().since(&cpu0);
    stats
}

fn count(invalid: &mut [u64; Invalid::COUNT], reason: Invalid) {
    if let Some(c) = invalid.get_mut(reason as usize) {
        *c += 1;
    }
}
