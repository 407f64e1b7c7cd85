//! Constant-rate UDP flows between two hosts of the test bed, measured at the receiver: per
//! flow, packets sent and received, the longest gap between two arrivals, which is the
//! flow's loss window (plus one interval), and each datagram's one-way latency (sender and
//! receiver share this process's clock: the datagram carries its send time).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Netns, Result};

/// Time between two packets of one flow.
pub const INTERVAL: Duration = Duration::from_millis(5);
/// The resolution of the time series: arrivals and sends are counted per bucket.
pub const BUCKET: Duration = Duration::from_millis(10);
/// Buckets kept at most (10 minutes); later packets are counted but not placed in time.
const MAX_BUCKETS: usize = 60_000;
/// One-way latencies kept at most per flow (10 minutes at one datagram per interval).
const MAX_LATENCIES: usize = 120_000;

pub struct Flows {
    started: Instant,
    stop: Arc<AtomicBool>,
    sender: JoinHandle<(Vec<u64>, Vec<u32>)>,
    receiver: JoinHandle<Vec<FlowRx>>,
}

/// Counts one event at `at` in `buckets` (time since `started`).
fn count_in(buckets: &mut Vec<u32>, started: Instant, at: Instant) {
    let i = (at.saturating_duration_since(started).as_millis() / BUCKET.as_millis()) as usize;
    if i < MAX_BUCKETS {
        if buckets.len() <= i {
            buckets.resize(i + 1, 0);
        }
        buckets[i] += 1;
    }
}

#[derive(Clone, Debug, Default)]
pub struct FlowRx {
    pub received: u64,
    pub last: Option<Instant>,
    pub max_gap: Duration,
    /// When the longest gap ended.
    pub gap_end: Option<Instant>,
    /// Arrivals per [`BUCKET`] since the flows started.
    pub arrivals: Vec<u32>,
    /// One-way latency of each datagram received, µs, in arrival order.
    pub latencies_us: Vec<u32>,
}

#[derive(Debug)]
pub struct FlowStats {
    pub started: Instant,
    pub sent: Vec<u64>,
    /// Datagrams sent, all flows, per [`BUCKET`] since the start.
    pub sent_buckets: Vec<u32>,
    pub rx: Vec<FlowRx>,
}

impl FlowStats {
    /// The longest loss window of any flow, in ms (gap minus one interval).
    pub fn loss_window_ms(&self) -> f64 {
        self.rx
            .iter()
            .map(|r| r.max_gap.saturating_sub(INTERVAL).as_secs_f64() * 1000.0)
            .fold(0.0, f64::max)
    }

    pub fn lost(&self, flow: usize) -> u64 {
        self.sent
            .get(flow)
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.rx.get(flow).map_or(0, |r| r.received))
    }

    /// Flows that lost more than `slack` packets (those in flight at the end).
    pub fn lossy(&self, slack: u64) -> usize {
        (0..self.sent.len())
            .filter(|&f| self.lost(f) > slack)
            .count()
    }

    pub fn total_lost(&self) -> u64 {
        (0..self.sent.len()).map(|f| self.lost(f)).sum()
    }

    /// One-way latency over all flows' datagrams: (median, 99th percentile, maximum), or
    /// None when nothing arrived.
    pub fn latency(&self) -> Option<(Duration, Duration, Duration)> {
        let mut all: Vec<u32> = self
            .rx
            .iter()
            .flat_map(|r| r.latencies_us.iter().copied())
            .collect();
        if all.is_empty() {
            return None;
        }
        all.sort_unstable();
        let at = |q: f64| {
            let i = ((all.len() - 1) as f64 * q).round() as usize;
            Duration::from_micros(u64::from(all[i.min(all.len() - 1)]))
        };
        Some((at(0.5), at(0.99), at(1.0)))
    }

    /// The longest time any flow received nothing within `[from, to)` (times since the
    /// start), to a [`BUCKET`]: the loss window of an event in that span.
    pub fn longest_silence(&self, from: Duration, to: Duration) -> Duration {
        let index = |d: Duration| (d.as_millis() / BUCKET.as_millis()) as usize;
        let (a, b) = (index(from), index(to));
        let mut longest = 0;
        for r in &self.rx {
            let mut run = 0;
            for i in a..b {
                if r.arrivals.get(i).copied().unwrap_or(0) == 0 {
                    run += 1;
                    longest = longest.max(run);
                } else {
                    run = 0;
                }
            }
        }
        BUCKET * longest
    }

    /// (seconds since the start, percent of the datagrams sent in that window not received),
    /// per window of `step` (a multiple of [`BUCKET`]).
    pub fn loss_series(&self, step: Duration) -> Vec<(f64, f64)> {
        self.loss_counts(step)
            .into_iter()
            .map(|(t, pct, _)| (t, pct))
            .collect()
    }

    /// [`FlowStats::loss_series`] with the datagrams sent in each window.
    pub fn loss_counts(&self, step: Duration) -> Vec<(f64, f64, f64)> {
        let per = ((step.as_millis() / BUCKET.as_millis()) as usize).max(1);
        (0..self.sent_buckets.len() / per)
            .map(|w| {
                let (sent, got) = self.counts(w * per..(w + 1) * per);
                let lost = if sent == 0 {
                    0.0
                } else {
                    sent.saturating_sub(got) as f64 * 100.0 / sent as f64
                };
                ((w * per) as f64 * BUCKET.as_secs_f64(), lost, sent as f64)
            })
            .collect()
    }

    /// Datagrams sent within `[from, to)` (times since the start) and not received, to a
    /// [`BUCKET`].
    pub fn lost_between(&self, from: Duration, to: Duration) -> u64 {
        let index = |d: Duration| (d.as_millis() / BUCKET.as_millis()) as usize;
        let (sent, got) = self.counts(index(from)..index(to));
        sent.saturating_sub(got)
    }

    /// Datagrams sent and received, all flows, in a span of buckets.
    fn counts(&self, span: std::ops::Range<usize>) -> (u64, u64) {
        let mut sent = 0u64;
        let mut got = 0u64;
        for i in span {
            sent += u64::from(self.sent_buckets.get(i).copied().unwrap_or(0));
            got += self
                .rx
                .iter()
                .map(|r| u64::from(r.arrivals.get(i).copied().unwrap_or(0)))
                .sum::<u64>();
        }
        (sent, got)
    }
}

/// Starts `flows` flows from `src` (an address of `from`) to `dst`:9000 (of `to`), one
/// packet per flow every [`INTERVAL`], from source ports 20000 + flow.
pub fn start(from: &Netns, src: &str, to: &Netns, dst: &str, flows: u16) -> Result<Flows> {
    let stop = Arc::new(AtomicBool::new(false));
    let dst_addr: SocketAddr = format!("{dst}:9000")
        .parse()
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let rx_socket = to.run(|| UdpSocket::bind(dst_addr))??;
    rx_socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let tx_sockets: Vec<UdpSocket> = from.run(|| {
        (0..flows)
            .map(|f| UdpSocket::bind(format!("{src}:{}", 20000 + f)))
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    let started = Instant::now();
    let stop_rx = Arc::clone(&stop);
    let n = usize::from(flows);
    let receiver = std::thread::spawn(move || {
        let mut rx = vec![FlowRx::default(); n];
        let mut buf = [0u8; 64];
        // Drains for a moment after the stop, for packets in flight.
        let mut stop_at: Option<Instant> = None;
        loop {
            if stop_rx.load(Ordering::Relaxed) {
                let at = *stop_at.get_or_insert_with(Instant::now);
                if at.elapsed() > Duration::from_millis(300) {
                    break;
                }
            }
            let Ok(len) = rx_socket.recv(&mut buf) else {
                continue;
            };
            if len < 18 {
                continue;
            }
            let flow = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            let Some(r) = rx.get_mut(flow) else { continue };
            let now = Instant::now();
            if let Some(last) = r.last {
                let gap = now.saturating_duration_since(last);
                if gap > r.max_gap {
                    r.max_gap = gap;
                    r.gap_end = Some(now);
                }
            }
            r.last = Some(now);
            r.received += 1;
            count_in(&mut r.arrivals, started, now);
            let mut sent_at = [0u8; 8];
            sent_at.copy_from_slice(&buf[10..18]);
            let sent_at = Duration::from_nanos(u64::from_be_bytes(sent_at));
            let latency = now
                .saturating_duration_since(started)
                .saturating_sub(sent_at);
            if r.latencies_us.len() < MAX_LATENCIES {
                r.latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
        }
        rx
    });
    let stop_tx = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        let mut sent = vec![0u64; n];
        let mut buckets = Vec::new();
        let mut next = Instant::now();
        while !stop_tx.load(Ordering::Relaxed) {
            for (f, s) in tx_sockets.iter().enumerate() {
                let mut payload = [0u8; 32];
                payload[..2].copy_from_slice(&(f as u16).to_be_bytes());
                payload[2..10].copy_from_slice(&sent[f].to_be_bytes());
                let at = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                payload[10..18].copy_from_slice(&at.to_be_bytes());
                if s.send_to(&payload, dst_addr).is_ok() {
                    sent[f] += 1;
                    count_in(&mut buckets, started, Instant::now());
                }
            }
            next += INTERVAL;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        (sent, buckets)
    });
    Ok(Flows {
        started,
        stop,
        sender,
        receiver,
    })
}

impl Flows {
    pub fn stop(self) -> FlowStats {
        self.stop.store(true, Ordering::Relaxed);
        // The threads only count; one that panicked counts nothing.
        let (sent, sent_buckets) = self.sender.join().unwrap_or_default();
        let rx = self.receiver.join().unwrap_or_default();
        FlowStats {
            started: self.started,
            sent,
            sent_buckets,
            rx,
        }
    }

    /// When the flows started: the origin of their time series.
    pub fn started(&self) -> Instant {
        self.started
    }
}
