//! The generator: threads, each owning a transmit port and a disjoint share of the flows,
//! sending batches paced by a token bucket against CLOCK_MONOTONIC.
//!
//! Per packet the loop only restamps a prebuilt buffer (sequence, timestamp, checksums):
//! no allocation, no lock, no system call. One clock read and one `send` per batch.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::clock::{monotonic_ns, CpuTime, CpuUsage};
use crate::packet::{BuildError, FlowPacket, PacketBuilder};
use crate::rate::TokenBucket;
use crate::spec::{InnerProto, TrafficSpec};
use crate::tx::{TxPort, UdpTx, MAX_BATCH};

/// Prebuilt packet memory above this is refused (flows × copies × packet size).
pub const MAX_PACKET_MEMORY: usize = 1 << 30;
/// A thread gives up after this many failed sends in a row.
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;

/// Everything the socket-based generator needs.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    pub traffic: TrafficSpec,
    /// The gateway's VTEP address and VXLAN port.
    pub dst: SocketAddr,
    /// Outer source address; a non-zero port is the first of consecutive source ports.
    pub bind: Option<SocketAddr>,
    /// Sockets (outer source ports) per thread that flows spread over.
    pub sockets: usize,
    pub threads: usize,
    pub limits: Limits,
    /// SO_SNDBUF in bytes; 0 keeps the system default.
    pub send_buffer: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            traffic: TrafficSpec::default(),
            dst: SocketAddr::from(([127, 0, 0, 1], gatewan_dataplane::wire::vxlan::PORT)),
            bind: None,
            sockets: 8,
            threads: 1,
            limits: Limits::default(),
            send_buffer: 0,
        }
    }
}

/// How much and how fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Packets per second over all threads; 0 = as fast as possible.
    pub rate_pps: u64,
    /// Stop after this many packets in all (split over threads).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Packets per send call.
    pub batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_pps: 0,
            count: None,
            duration: Some(Duration::from_secs(1)),
            batch: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("opening sockets to {dst}")]
    Socket {
        dst: SocketAddr,
        source: std::io::Error,
    },
    #[error("no transmit port")]
    NoPorts,
    #[error("transmit ports disagree on the encapsulation")]
    MixedEncap,
    #[error("neither a packet count nor a duration: the run would never end")]
    Unbounded,
    #[error("batch {0} is outside 1..={MAX_BATCH}")]
    Batch(usize),
    #[error("a rate of {rate} pps cannot be shared by {threads} threads (each needs at least 1 pps; 0 means unlimited)")]
    RateBelowThreads { rate: u64, threads: usize },
    #[error("prebuilt packets would take {0} bytes, above {MAX_PACKET_MEMORY}; use fewer flows or a smaller size")]
    Memory(usize),
}

/// What a generator run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GenReport {
    pub packets: u64,
    /// Inner IP bytes.
    pub bytes_inner: u64,
    /// Outer Ethernet frame bytes (FCS, preamble and gap excluded).
    pub bytes_wire: u64,
    pub elapsed_s: f64,
    pub pps: f64,
    pub gbps_inner: f64,
    pub gbps_wire: f64,
    /// Failed send calls (each may have carried a batch).
    pub send_errors: u64,
    pub last_error: Option<String>,
    pub threads: usize,
    pub flows: u32,
    pub size: usize,
    pub proto: InnerProto,
    pub inner_ipv6: bool,
    pub rate_pps: u64,
    /// CPU of the sending threads.
    pub cpu: CpuUsage,
    /// Packets sent per flow, indexed by flow id.
    pub flows_sent: Vec<u64>,
}

impl std::fmt::Display for GenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gen: {} packets in {:.3} s: {:.3} Mpps, {:.3} Gbit/s inner, {:.3} Gbit/s wire; {} flows, {} B {} over IPv{}; {} send errors; cpu {:.0} ns/packet",
            self.packets,
            self.elapsed_s,
            self.pps / 1e6,
            self.gbps_inner,
            self.gbps_wire,
            self.flows,
            self.size,
            self.proto,
            if self.inner_ipv6 { 6 } else { 4 },
            self.send_errors,
            self.cpu.ns_per_packet,
        )
    }
}

/// A generator ready to run: packets built, ports open.
pub struct Generator<P: TxPort = UdpTx> {
    builder: PacketBuilder,
    ports: Vec<P>,
    limits: Limits,
}

impl Generator<UdpTx> {
    /// Opens the sockets (in the calling thread's network namespace) and builds the packets.
    pub fn new(config: &GenConfig) -> Result<Self, GenError> {
        let ports = (0..config.threads.max(1))
            .map(|t| {
                let bind = config.bind.map(|mut b| {
                    if b.port() != 0 {
                        // Threads take consecutive ranges of source ports.
                        let off = t * config.sockets.max(1);
                        b.set_port(b.port().saturating_add(off as u16));
                    }
                    b
                });
                UdpTx::open(config.dst, bind, config.sockets, config.send_buffer)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| GenError::Socket {
                dst: config.dst,
                source,
            })?;
        Self::with_ports(config.traffic.clone(), ports, config.limits)
    }
}

impl<P: TxPort> Generator<P> {
    /// A generator over any transmit ports (one thread each), such as AF_XDP queues.
    pub fn with_ports(
        traffic: TrafficSpec,
        ports: Vec<P>,
        limits: Limits,
    ) -> Result<Self, GenError> {
        let encap = ports.first().ok_or(GenError::NoPorts)?.encap();
        if ports.iter().any(|p| p.encap() != encap) {
            return Err(GenError::MixedEncap);
        }
        if limits.count.is_none() && limits.duration.is_none() {
            return Err(GenError::Unbounded);
        }
        if limits.batch == 0 || limits.batch > MAX_BATCH {
            return Err(GenError::Batch(limits.batch));
        }
        let mut ports = ports;
        // A thread without flows would sit out its share of the count.
        ports.truncate(traffic.flows.max(1) as usize);
        if limits.rate_pps > 0 && limits.rate_pps < ports.len() as u64 {
            return Err(GenError::RateBelowThreads {
                rate: limits.rate_pps,
                threads: ports.len(),
            });
        }
        let builder = PacketBuilder::new(traffic, encap)?;
        // Worst case: every flow alone on its lane needs a whole batch of copies.
        let flows = builder.spec().flows as usize;
        let per_thread_flows = flows.div_ceil(ports.len());
        let copies = limits.batch.div_ceil(per_thread_flows.max(1));
        let mem = flows
            .saturating_mul(copies)
            .saturating_mul(builder.layout().len);
        if mem > MAX_PACKET_MEMORY {
            return Err(GenError::Memory(mem));
        }
        Ok(Self {
            builder,
            ports,
            limits,
        })
    }

    pub fn builder(&self) -> &PacketBuilder {
        &self.builder
    }

    /// Runs to the count or duration.
    pub fn run(self) -> GenReport {
        self.run_until(&AtomicBool::new(false))
    }

    /// Runs to the count or duration, or until `stop` is set.
    pub fn run_until(self, stop: &AtomicBool) -> GenReport {
        let Self {
            builder,
            ports,
            limits,
        } = self;
        let threads = ports.len();
        let spec = builder.spec().clone();
        let duration_ns = limits
            .duration
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // Threads build their packets first, then start the clock together.
        let barrier = std::sync::Barrier::new(threads);
        let results: Vec<ThreadResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = ports
                .into_iter()
                .enumerate()
                .map(|(t, port)| {
                    let (builder, barrier) = (&builder, &barrier);
                    let share = |total: u64| {
                        total / threads as u64 + u64::from((t as u64) < total % threads as u64)
                    };
                    let plan = ThreadPlan {
                        flows: (0..spec.flows)
                            .filter(|f| *f as usize % threads == t)
                            .collect(),
                        rate_pps: share(limits.rate_pps),
                        count: limits.count.map(share),
                        duration_ns,
                        batch: limits.batch,
                    };
                    scope.spawn(move || send_loop(port, builder, plan, barrier, stop))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let start = results.iter().map(|t| t.start_ns).min().unwrap_or(0);
        let end = results.iter().map(|t| t.end_ns).max().unwrap_or(0);
        let elapsed_s = end.saturating_sub(start) as f64 / 1e9;

        let mut r = GenReport {
            threads,
            flows: spec.flows,
            size: spec.size,
            proto: spec.proto,
            inner_ipv6: spec.is_ipv6(),
            rate_pps: limits.rate_pps,
            elapsed_s,
            flows_sent: vec![0; spec.flows as usize],
            ..GenReport::default()
        };
        let mut cpu = CpuTime::default();
        for t in results {
            r.packets += t.packets;
            r.bytes_inner += t.bytes_inner;
            r.bytes_wire += t.bytes_wire;
            r.send_errors += t.send_errors;
            if t.last_error.is_some() {
                r.last_error = t.last_error;
            }
            cpu = cpu.add(&t.cpu);
            for (flow, sent) in t.flows_sent {
                if let Some(s) = r.flows_sent.get_mut(flow as usize) {
                    *s = sent;
                }
            }
        }
        if elapsed_s > 0.0 {
            r.pps = r.packets as f64 / elapsed_s;
            r.gbps_inner = r.bytes_inner as f64 * 8.0 / elapsed_s / 1e9;
            r.gbps_wire = r.bytes_wire as f64 * 8.0 / elapsed_s / 1e9;
        }
        r.cpu = CpuUsage::new(cpu, r.packets);
        r
    }
}

struct ThreadPlan {
    flows: Vec<u32>,
    rate_pps: u64,
    count: Option<u64>,
    duration_ns: Option<u64>,
    batch: usize,
}

#[derive(Default)]
struct ThreadResult {
    packets: u64,
    bytes_inner: u64,
    bytes_wire: u64,
    send_errors: u64,
    last_error: Option<String>,
    cpu: CpuTime,
    flows_sent: Vec<(u32, u64)>,
    start_ns: u64,
    end_ns: u64,
}

/// One flow's sending state: its next sequence and enough copies of its packet for one batch
/// (a lane with fewer flows than the batch sends each flow several times per batch).
struct FlowTx {
    id: u32,
    next_seq: u64,
    copies: Vec<FlowPacket>,
}

struct Lane {
    index: usize,
    flows: Vec<FlowTx>,
    cursor: usize,
}

fn send_loop<P: TxPort>(
    mut port: P,
    builder: &PacketBuilder,
    plan: ThreadPlan,
    barrier: &std::sync::Barrier,
    stop: &AtomicBool,
) -> ThreadResult {
    let spec = builder.spec();
    let lanes_n = port.lanes().max(1);
    let mut lanes: Vec<Lane> = (0..lanes_n)
        .map(|index| Lane {
            index,
            flows: Vec::new(),
            cursor: 0,
        })
        .collect();
    for f in &plan.flows {
        let lane = spec.flow(*f).hash() as usize % lanes_n;
        if let Some(l) = lanes.get_mut(lane) {
            l.flows.push(FlowTx {
                id: *f,
                next_seq: 0,
                copies: Vec::new(),
            });
        }
    }
    lanes.retain(|l| !l.flows.is_empty());
    for l in &mut lanes {
        let copies = plan.batch.div_ceil(l.flows.len());
        for f in &mut l.flows {
            f.copies = (0..copies).map(|_| builder.build(f.id)).collect();
        }
    }
    let len = builder.layout().len;
    let (inner, wire) = (spec.size as u64, port.wire_len(len) as u64);

    barrier.wait();
    let cpu0 = CpuTime::thread();
    let mut out = ThreadResult {
        start_ns: monotonic_ns(),
        ..ThreadResult::default()
    };
    let deadline = plan.duration_ns.map(|d| out.start_ns.saturating_add(d));
    let mut remaining = plan.count;
    let mut bucket = TokenBucket::new(plan.rate_pps, plan.batch as u64, out.start_ns);
    let mut consecutive_errors = 0u32;
    let mut next_lane = 0usize;
    while !lanes.is_empty() {
        let now = monotonic_ns();
        if stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| now >= d)
            || remaining == Some(0)
        {
            break;
        }
        let want = remaining.map_or(plan.batch as u64, |r| r.min(plan.batch as u64));
        let n = bucket.grant(now, want) as usize;
        if n == 0 {
            // Sleep until a whole batch is due, but not past the next single packet's turn
            // when that is more than a millisecond away (slow rates), nor past the deadline.
            let one = bucket.wait_ns(now, 1);
            let mut ns = bucket.wait_ns(now, want).min(one.max(1_000_000));
            if let Some(d) = deadline {
                ns = ns.min(d.saturating_sub(now));
            }
            std::thread::sleep(Duration::from_nanos(ns.max(1)));
            continue;
        }
        next_lane = (next_lane + 1) % lanes.len();
        let Some(lane) = lanes.get_mut(next_lane) else {
            break;
        };
        let nf = lane.flows.len();
        let cursor = lane.cursor;
        for k in 0..n {
            if let Some(f) = lane.flows.get_mut((cursor + k) % nf) {
                let visit = k / nf;
                let seq = f.next_seq + visit as u64;
                if let Some(p) = f.copies.get_mut(visit) {
                    p.stamp(seq, now);
                }
            }
        }
        let mut refs: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        for (k, r) in refs.iter_mut().enumerate().take(n) {
            *r = lane
                .flows
                .get((cursor + k) % nf)
                .and_then(|f| f.copies.get(k / nf))
                .map_or(&[], |p| p.bytes());
        }
        let sent = match port.send(lane.index, refs.get(..n).unwrap_or(&[])) {
            Ok(m) => {
                consecutive_errors = 0;
                m.min(n)
            }
            Err(e) => {
                out.send_errors += 1;
                out.last_error = Some(e.to_string());
                consecutive_errors += 1;
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    tracing::warn!(error = %e, "giving up after {MAX_CONSECUTIVE_ERRORS} failed sends in a row");
                    break;
                }
                0
            }
        };
        // Only sent packets consume sequences, so the sink sees no gap for a failed send.
        for k in 0..sent {
            if let Some(f) = lane.flows.get_mut((cursor + k) % nf) {
                f.next_seq += 1;
            }
        }
        lane.cursor = (cursor + sent) % nf;
        out.packets += sent as u64;
        if let Some(r) = remaining.as_mut() {
            *r -= sent as u64;
        }
    }
    out.bytes_inner = out.packets * inner;
    out.bytes_wire = out.packets * wire;
    out.flows_sent = lanes
        .iter()
        .flat_map(|l| l.flows.iter().map(|f| (f.id, f.next_seq)))
        .collect();
    out.cpu = CpuTime::thread().since(&cpu0);
    out.end_ns = monotonic_ns();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::packet::Encap;
    use crate::payload::PayloadHeader;
    use crate::validate::{check_vxlan, Expect};
    use std::io;

    /// A port that keeps what it is sent, fails every `fail_every`-th call, and sends only
    /// `partial` packets of a batch when set.
    struct Capture {
        lanes: usize,
        got: Vec<(usize, Vec<u8>)>,
        calls: u64,
        fail_every: u64,
        partial: Option<usize>,
    }

    impl TxPort for Capture {
        fn encap(&self) -> Encap {
            Encap::Vxlan
        }
        fn lanes(&self) -> usize {
            self.lanes
        }
        fn send(&mut self, lane: usize, pkts: &[&[u8]]) -> io::Result<usize> {
            self.calls += 1;
            if self.fail_every > 0 && self.calls.is_multiple_of(self.fail_every) {
                return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
            }
            let n = self.partial.map_or(pkts.len(), |p| p.min(pkts.len()));
            for p in &pkts[..n] {
                self.got.push((lane, p.to_vec()));
            }
            Ok(n)
        }
        fn wire_len(&self, len: usize) -> usize {
            len + 42
        }
    }

    fn capture(lanes: usize, fail_every: u64, partial: Option<usize>) -> Capture {
        Capture {
            lanes,
            got: Vec::new(),
            calls: 0,
            fail_every,
            partial,
        }
    }

    fn spec(flows: u32) -> TrafficSpec {
        TrafficSpec {
            flows,
            size: 100,
            ..TrafficSpec::default()
        }
    }

    /// Runs a generator over one capture port and returns the captured packets decoded.
    fn run(flows: u32, count: u64, port: Capture) -> (GenReport, Vec<(usize, PayloadHeader)>) {
        let limits = Limits {
            rate_pps: 0,
            count: Some(count),
            duration: None,
            batch: 16,
        };
        // Keep the captured packets: run on this thread's port through a shared cell.
        let cell = std::sync::Mutex::new(None);
        struct Shim<'a>(Capture, &'a std::sync::Mutex<Option<Capture>>);
        impl Drop for Shim<'_> {
            fn drop(&mut self) {
                let c = std::mem::replace(&mut self.0, capture(0, 0, None));
                *self.1.lock().unwrap() = Some(c);
            }
        }
        impl TxPort for Shim<'_> {
            fn encap(&self) -> Encap {
                self.0.encap()
            }
            fn lanes(&self) -> usize {
                self.0.lanes()
            }
            fn send(&mut self, lane: usize, pkts: &[&[u8]]) -> io::Result<usize> {
                self.0.send(lane, pkts)
            }
            fn wire_len(&self, len: usize) -> usize {
                self.0.wire_len(len)
            }
        }
        let g = Generator::with_ports(spec(flows), vec![Shim(port, &cell)], limits).unwrap();
        let report = g.run();
        let got = cell.lock().unwrap().take().unwrap().got;
        let expect = Expect {
            vni: Some(100),
            inner_dst_mac: None,
            flows,
        };
        let decoded = got
            .iter()
            .map(|(lane, p)| (*lane, check_vxlan(p, &expect).unwrap().header))
            .collect();
        (report, decoded)
    }

    #[test]
    fn every_flow_gets_gapless_sequences_on_one_lane() {
        for (flows, lanes) in [(1, 1), (3, 2), (40, 4)] {
            let (r, got) = run(flows, 1000, capture(lanes, 0, None));
            assert_eq!(r.packets, 1000);
            assert_eq!(got.len(), 1000);
            assert_eq!(r.flows_sent.iter().sum::<u64>(), 1000);
            assert_eq!(r.bytes_inner, 100_000);
            assert_eq!(r.bytes_wire, 1000 * (100 + 14 + 8 + 42) as u64);
            for f in 0..flows {
                let mine: Vec<_> = got.iter().filter(|(_, h)| h.flow == f).collect();
                let seqs: Vec<u64> = mine.iter().map(|(_, h)| h.seq).collect();
                assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "flow {f}");
                assert_eq!(seqs.len() as u64, r.flows_sent[f as usize]);
                assert!(
                    mine.iter().all(|(l, _)| *l == mine[0].0),
                    "flow {f} changed lanes"
                );
                // Round robin keeps flows within one packet per batch of each other.
                assert!(seqs.len() as u64 >= 1000 / u64::from(flows) - 16);
            }
        }
    }

    #[test]
    fn failed_and_partial_sends_leave_no_gaps() {
        let (r, got) = run(5, 500, capture(1, 3, Some(7)));
        assert_eq!(r.packets, 500);
        assert!(r.send_errors > 0);
        assert!(r.last_error.is_some());
        for f in 0..5 {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|(_, h)| h.flow == f)
                .map(|(_, h)| h.seq)
                .collect();
            assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn config_errors() {
        let l = Limits::default();
        assert!(matches!(
            Generator::<Capture>::with_ports(spec(1), vec![], l),
            Err(GenError::NoPorts)
        ));
        let unbounded = Limits {
            count: None,
            duration: None,
            ..l
        };
        assert!(matches!(
            Generator::with_ports(spec(1), vec![capture(1, 0, None)], unbounded),
            Err(GenError::Unbounded)
        ));
        let batch = Limits { batch: 0, ..l };
        assert!(matches!(
            Generator::with_ports(spec(1), vec![capture(1, 0, None)], batch),
            Err(GenError::Batch(0))
        ));
        let slow = Limits { rate_pps: 1, ..l };
        let two = vec![capture(1, 0, None), capture(1, 0, None)];
        assert!(matches!(
            Generator::with_ports(spec(2), two, slow),
            Err(GenError::RateBelowThreads {
                rate: 1,
                threads: 2
            })
        ));
        let huge = TrafficSpec {
            flows: 1_000_000,
            size: 9000,
            src_addrs: 1000,
            ..TrafficSpec::default()
        };
        assert!(matches!(
            Generator::with_ports(huge, vec![capture(1, 0, None)], l),
            Err(GenError::Memory(_))
        ));
    }

    #[test]
    fn more_threads_than_flows_still_send_the_whole_count() {
        let limits = Limits {
            rate_pps: 0,
            count: Some(101),
            duration: None,
            batch: 8,
        };
        let ports = (0..4).map(|_| capture(1, 0, None)).collect();
        let g = Generator::with_ports(spec(2), ports, limits).unwrap();
        let r = g.run();
        assert_eq!(r.threads, 2);
        assert_eq!(r.packets, 101);
        assert_eq!(r.flows_sent.iter().sum::<u64>(), 101);
        assert!(r.elapsed_s > 0.0);
    }

    #[test]
    fn stop_flag_ends_a_long_run() {
        let limits = Limits {
            rate_pps: 0,
            count: None,
            duration: Some(Duration::from_secs(3600)),
            batch: 8,
        };
        let g = Generator::with_ports(spec(2), vec![capture(1, 0, None)], limits).unwrap();
        let stop = AtomicBool::new(true);
        let r = g.run_until(&stop);
        assert_eq!(r.packets, 0);
    }
}
