//! Constant-rate UDP flows between two hosts of the test bed, measured at the receiver: per
//! flow, packets sent and received and the longest gap between two arrivals, which is the
//! flow's loss window (plus one interval).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Netns, Result};

/// Time between two packets of one flow.
pub const INTERVAL: Duration = Duration::from_millis(5);

pub struct Flows {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Vec<u64>>,
    receiver: JoinHandle<Vec<FlowRx>>,
}

#[derive(Clone, Debug, Default)]
pub struct FlowRx {
    pub received: u64,
    pub last: Option<Instant>,
    pub max_gap: Duration,
    /// When the longest gap ended.
    pub gap_end: Option<Instant>,
}

#[derive(Debug)]
pub struct FlowStats {
    pub sent: Vec<u64>,
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
            if len < 2 {
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
        }
        rx
    });
    let stop_tx = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        let mut sent = vec![0u64; n];
        let mut next = Instant::now();
        while !stop_tx.load(Ordering::Relaxed) {
            for (f, s) in tx_sockets.iter().enumerate() {
                let mut payload = [0u8; 32];
                payload[..2].copy_from_slice(&(f as u16).to_be_bytes());
                payload[2..10].copy_from_slice(&sent[f].to_be_bytes());
                if s.send_to(&payload, dst_addr).is_ok() {
                    sent[f] += 1;
                }
            }
            next += INTERVAL;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        sent
    });
    Ok(Flows {
        stop,
        sender,
        receiver,
    })
}

impl Flows {
    pub fn stop(self) -> FlowStats {
        self.stop.store(true, Ordering::Relaxed);
        // The threads only count; one that panicked counts nothing.
        let sent = self.sender.join().unwrap_or_default();
        let rx = self.receiver.join().unwrap_or_default();
        FlowStats { sent, rx }
    }
}
