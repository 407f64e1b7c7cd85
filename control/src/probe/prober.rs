//! The per-tunnel prober: when to send the next probe, matching replies to probes, and the
//! figures over a sliding window of the last N probes. Every time is a monotonic `Instant`
//! passed in by the caller; nothing here reads a clock, so tests drive it with simulated time
//! and a wall-clock step can never distort a round-trip time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a tunnel is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Time between probes (default 100 ms: 10 probes per second).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Number of probes the figures are computed over (default 100, ten seconds).
    pub window: usize,
    /// A reply later than this counts as lost (default 1 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Intervals without any reply after which the tunnel is seen dead (default 3: 300 ms).
    pub dead_after: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_millis(100),
            window: 100,
            timeout: Duration::from_secs(1),
            dead_after: 3,
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProbeConfigError {
    #[error("probe.interval must be between 1ms and 1h, not {0:?}")]
    Interval(Duration),
    #[error("probe.window must be between 1 and 65535 probes, not {0}")]
    Window(usize),
    #[error("probe.timeout must be between 1ms and 1h, not {0:?}")]
    Timeout(Duration),
    #[error("probe.dead_after must be between 1 and 1000 intervals, not {0}")]
    DeadAfter(u32),
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<(), ProbeConfigError> {
        let sane = Duration::from_millis(1)..=Duration::from_secs(3600);
        if !sane.contains(&self.interval) {
            return Err(ProbeConfigError::Interval(self.interval));
        }
        // Up to 65535 so that 16-bit ICMP sequence numbers still name one probe in the window.
        if !(1..=65535).contains(&self.window) {
            return Err(ProbeConfigError::Window(self.window));
        }
        if !sane.contains(&self.timeout) {
            return Err(ProbeConfigError::Timeout(self.timeout));
        }
        if !(1..=1000).contains(&self.dead_after) {
            return Err(ProbeConfigError::DeadAfter(self.dead_after));
        }
        Ok(())
    }
}

/// Octets a STAMP probe occupies on the transit link at the IP layer, one direction: the
/// 44-octet test packet in UDP and inner IP, padded to 16 by WireGuard, in a transport data
/// message (16-octet header, 16-octet tag), in outer UDP and IP.
pub fn probe_wire_octets(inner_ipv6: bool, outer_ipv6: bool) -> usize {
    let ip = |v6: bool| if v6 { 40 } else { 20 };
    let inner = ip(inner_ipv6) + 8 + super::stamp::PACKET_LEN;
    let padded = inner.div_ceil(16) * 16;
    padded + 16 + 16 + 8 + ip(outer_ipv6)
}

/// Probe traffic in bit/s per tunnel and direction at `config`'s rate.
pub fn probe_bitrate(config: &ProbeConfig, inner_ipv6: bool, outer_ipv6: bool) -> f64 {
    (probe_wire_octets(inner_ipv6, outer_ipv6) * 8) as f64 / config.interval.as_secs_f64()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pending,
    Answered(Duration),
    /// Answered after the timeout: counted lost.
    Late,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u32,
    sent_at: Instant,
    fate: Fate,
    reordered: bool,
}

/// What a reply turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// A first reply in time: the round-trip time it measured.
    Measured(Duration),
    /// A second reply to a probe already answered (counted, otherwise ignored).
    Duplicate,
    /// A reply after the timeout (the probe stays lost).
    Late,
    /// No probe in the window has that sequence number (too old, or never sent).
    Unknown,
}

/// The figures over the window, as `gatewan status` and the controller read them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProbeStats {
    /// Probes in the window whose fate is known (answered, or lost past the timeout).
    pub measurements: usize,
    pub received: usize,
    pub lost: usize,
    /// lost / measurements, 0.0 to 1.0.
    pub loss: f64,
    pub latency_median: Option<Duration>,
    pub latency_p95: Option<Duration>,
    /// Mean absolute difference of consecutive round-trip times (in probe order).
    pub jitter: Option<Duration>,
    /// RFC 3550's interarrival jitter estimator, fed with round-trip times in arrival order.
    pub jitter_rfc3550: Duration,
    /// Share of received probes that arrived after a later-sent one (RFC 4737), 0.0 to 1.0.
    pub reorder: f64,
    /// Whether a reply arrived within the last `dead_after` intervals.
    pub alive: bool,
    /// The newest probes lost in a row (a blackhole shows here before it fills the window).
    pub lost_in_a_row: u32,
    /// Since the prober started.
    pub sent_total: u64,
    /// Probes lost since the prober started (those that left the window unanswered, plus the
    /// window's).
    pub lost_total: u64,
    pub duplicates_total: u64,
    pub late_total: u64,
    pub unknown_total: u64,
}

/// Sender-side state of one tunnel's probe session.
pub struct Prober {
    config: ProbeConfig,
    next_seq: u32,
    next_send: Instant,
    slots: VecDeque<Slot>,
    highest_received: Option<u32>,
    last_reply: Option<Instant>,
    last_rtt: Option<Duration>,
    jitter_rfc3550: f64,
    sent_total: u64,
    /// Probes that left the window unanswered.
    evicted_lost: u64,
    duplicates_total: u64,
    late_total: u64,
    unknown_total: u64,
}

impl Prober {
    /// A prober whose first probe is due at `now`. The window is allocated once, here.
    pub fn new(config: ProbeConfig, now: Instant) -> Result<Self, ProbeConfigError> {
        config.validate()?;
        Ok(Prober {
            config,
            next_seq: 0,
            next_send: now,
            slots: VecDeque::with_capacity(config.window),
            highest_received: None,
            last_reply: None,
            last_rtt: None,
            jitter_rfc3550: 0.0,
            sent_total: 0,
            evicted_lost: 0,
            duplicates_total: 0,
            late_total: 0,
            unknown_total: 0,
        })
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// When the next probe is due.
    pub fn next_wakeup(&self) -> Instant {
        self.next_send
    }

    /// If a probe is due at `now`, records it as sent and returns its sequence number.
    pub fn poll_probe(&mut self, now: Instant) -> Option<u32> {
        if now < self.next_send {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        if self.slots.len() == self.config.window {
            if let Some(old) = self.slots.pop_front() {
                // The window is far longer than the timeout in any sane configuration; a
                // probe still pending when it leaves counts as lost too.
                if !matches!(old.fate, Fate::Answered(_)) {
                    self.evicted_lost += 1;
                }
            }
        }
        self.slots.push_back(Slot {
            seq,
            sent_at: now,
            fate: Fate::Pending,
            reordered: false,
        });
        self.sent_total += 1;
        // Keep the cadence; after a stall (the caller was late), restart it rather than burst.
        let next = self.next_send + self.config.interval;
        self.next_send = if next <= now {
            now + self.config.interval
        } else {
            next
        };
        Some(seq)
    }

    /// A reply to probe `seq` arrived at `now`; `residence` is how long the reflector held it
    /// (from its own timestamps; `None` when unknown, e.g. ICMP echo).
    pub fn on_reply(
        &mut self,
        now: Instant,
        seq: u32,
        residence: Option<Duration>,
    ) -> ReplyOutcome {
        let Some(front) = self.slots.front().map(|s| s.seq) else {
            self.unknown_total += 1;
            return ReplyOutcome::Unknown;
        };
        let index = seq.wrapping_sub(front) as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            self.unknown_total += 1;
            return ReplyOutcome::Unknown;
        };
        match slot.fate {
            Fate::Answered(_) => {
                self.duplicates_total += 1;
                return ReplyOutcome::Duplicate;
            }
            Fate::Late => {
                self.duplicates_total += 1;
                return ReplyOutcome::Duplicate;
            }
            Fate::Pending => {}
        }
        let raw = now.saturating_duration_since(slot.sent_at);
        if raw > self.config.timeout {
            slot.fate = Fate::Late;
            self.late_total += 1;
            return ReplyOutcome::Late;
        }
        // A residence longer than the whole round trip is a reflector clock step: ignore it.
        let rtt = match residence {
            Some(held) if held <= raw => raw - held,
            _ => raw,
        };
        slot.fate = Fate::Answered(rtt);
        // RFC 4737: reordered if it arrives after a packet sent later than itself.
        match self.highest_received {
            Some(highest) if (seq.wrapping_sub(highest) as i32) < 0 => slot.reordered = true,
            _ => self.highest_received = Some(seq),
        }
        if let Some(previous) = self.last_rtt {
            let d = (rtt.as_secs_f64() - previous.as_secs_f64()).abs();
            self.jitter_rfc3550 += (d - self.jitter_rfc3550) / 16.0;
        }
        self.last_rtt = Some(rtt);
        self.last_reply = Some(now);
        ReplyOutcome::Measured(rtt)
    }

    /// Like [`Prober::on_reply`] for replies that carry only 16 bits of sequence number (ICMP
    /// echo): the most recent probe with those low bits is meant.
    pub fn on_reply_seq16(
        &mut self,
        now: Instant,
        seq16: u16,
        residence: Option<Duration>,
    ) -> ReplyOutcome {
        let seq = self
            .slots
            .iter()
            .rev()
            .find(|s| s.seq as u16 == seq16)
            .map(|s| s.seq);
        match seq {
            Some(seq) => self.on_reply(now, seq, residence),
            None => {
                self.unknown_total += 1;
                ReplyOutcome::Unknown
            }
        }
    }

    /// Whether the tunnel answered within the last `dead_after` intervals.
    pub fn alive(&self, now: Instant) -> bool {
        let silence = self.config.interval * self.config.dead_after;
        self.last_reply
            .is_some_and(|t| now.saturating_duration_since(t) <= silence)
    }

    /// The figures over the window at `now`.
    pub fn stats(&self, now: Instant) -> ProbeStats {
        let mut rtts: Vec<Duration> = Vec::with_capacity(self.slots.len());
        let (mut lost, mut reordered) = (0usize, 0usize);
        let (mut diff_sum, mut diffs, mut previous) = (Duration::ZERO, 0u32, None::<Duration>);
        for slot in &self.slots {
            match slot.fate {
                Fate::Answered(rtt) => {
                    rtts.push(rtt);
                    reordered += usize::from(slot.reordered);
                    if let Some(p) = previous {
                        diff_sum += rtt.abs_diff(p);
                        diffs += 1;
                    }
                    previous = Some(rtt);
                }
                Fate::Late => lost += 1,
                Fate::Pending
                    if now.saturating_duration_since(slot.sent_at) > self.config.timeout =>
                {
                    lost += 1
                }
                Fate::Pending => {}
            }
        }
        let received = rtts.len();
        let measurements = received + lost;
        let lost_in_a_row = self
            .slots
            .iter()
            .rev()
            .skip_while(|s| {
                matches!(s.fate, Fate::Pending)
                    && now.saturating_duration_since(s.sent_at) <= self.config.timeout
            })
            .take_while(|s| !matches!(s.fate, Fate::Answered(_)))
            .count();
        rtts.sort_unstable();
        let percentile = |p: usize| -> Option<Duration> {
            // Nearest-rank percentile.
            let rank = (p * received).div_ceil(100).max(1);
            rtts.get(rank - 1).copied()
        };
        ProbeStats {
            measurements,
            received,
            lost,
            loss: if measurements == 0 {
                0.0
            } else {
                lost as f64 / measurements as f64
            },
            latency_median: percentile(50),
            latency_p95: percentile(95),
            jitter: (diffs > 0).then(|| diff_sum / diffs),
            jitter_rfc3550: Duration::from_secs_f64(self.jitter_rfc3550),
            reorder: if received == 0 {
                0.0
            } else {
                reordered as f64 / received as f64
            },
            alive: self.alive(now),
            lost_in_a_row: u32::try_from(lost_in_a_row).unwrap_or(u32::MAX),
            sent_total: self.sent_total,
            lost_total: self.evicted_lost + lost as u64,
            duplicates_total: self.duplicates_total,
            late_total: self.late_total,
            unknown_total: self.unknown_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drives a prober with simulated time: `reply(seq) -> Some(rtt)` or None (lost).
    fn run(
        prober: &mut Prober,
        start: Instant,
        probes: u32,
        reply: impl Fn(u32) -> Option<Duration>,
    ) -> Instant {
        let mut now = start;
        let mut pending: Vec<(Instant, u32)> = Vec::new();
        for _ in 0..probes {
            let seq = prober.poll_probe(now).expect("due");
            if let Some(rtt) = reply(seq) {
                pending.push((now + rtt, seq));
            }
            now = prober.next_wakeup();
            pending.sort();
            pending.retain(|&(at, seq)| {
                if at <= now {
                    prober.on_reply(at, seq, None);
                    false
                } else {
                    true
                }
            });
        }
        for (at, seq) in pending {
            prober.on_reply(at, seq, None);
        }
        now
    }

    #[test]
    fn default_rate_is_ten_per_second_under_15_kbits() {
        let config = ProbeConfig::default();
        assert_eq!(config.interval, 100 * MS);
        for (inner6, outer6) in [(false, false), (false, true), (true, false), (true, true)] {
            let bps = probe_bitrate(&config, inner6, outer6);
            assert!(
                bps < 15_000.0,
                "inner v6 {inner6}, outer v6 {outer6}: {bps} bit/s"
            );
        }
        // 20 + 8 + 44 = 72, padded to 80, + 32 WireGuard + 8 UDP + 20 IPv4.
        assert_eq!(probe_wire_octets(false, false), 140);
    }

    #[test]
    fn clean_path_measures_latency_without_loss() {
        let start = Instant::now();
        let mut prober = Prober::new(ProbeConfig::default(), start).expect("valid");
        let now = run(&mut prober, start, 100, |_| Some(20 * MS));
        let stats = prober.stats(now);
        assert_eq!(
            (stats.measurements, stats.lost, stats.received),
            (100, 0, 100)
        );
        assert_eq!(stats.loss, 0.0);
        assert_eq!(stats.latency_median, Some(20 * MS));
        assert_eq!(stats.latency_p95, Some(20 * MS));
        assert_eq!(stats.jitter, Some(Duration::ZERO));
        assert_eq!(stats.reorder, 0.0);
        assert!(stats.alive);
    }

    #[test]
    fn loss_counts_only_after_the_timeout() {
        let start = Instant::now();
        let mut prober = Prober::new(ProbeConfig::default(), start).expect("valid");
        // Every 10th probe is lost.
        let now = run(&mut prober, start, 100, |seq| {
            (seq % 10 != 0).then_some(30 * MS)
        });
        // Probe 90 was sent 1 s ago: not past the timeout yet, so not lost yet.
        let stats = prober.stats(now);
        assert_eq!((stats.lost, stats.measurements), (9, 99));
        let stats = prober.stats(now + 1100 * MS);
        assert_eq!((stats.lost, stats.measurements), (10, 100));
        assert_eq!(stats.loss, 0.1);
        // The window slides: the next probe pushes probe 0 (lost) out.
        assert_eq!(prober.poll_probe(now), Some(100));
        let stats = prober.stats(now + 500 * MS);
        assert_eq!(
            (stats.lost, stats.measurements),
            (9, 99),
            "probe 0 left the window, probe 100 pending"
        );
    }

    #[test]
    fn percentiles_and_jitter() {
        let start = Instant::now();
        let config = ProbeConfig {
            window: 20,
            ..ProbeConfig::default()
        };
        let mut prober = Prober::new(config, start).expect("valid");
        // RTTs alternate 10 ms and 30 ms, except one 90 ms spike.
        let now = run(&mut prober, start, 20, |seq| {
            Some(if seq == 7 {
                90 * MS
            } else if seq % 2 == 0 {
                10 * MS
            } else {
                30 * MS
            })
        });
        let stats = prober.stats(now);
        assert_eq!(stats.latency_median, Some(10 * MS));
        assert_eq!(stats.latency_p95, Some(30 * MS));
        // Consecutive differences: 20 ms everywhere, except around the spike: |90-10| = 80 twice.
        // (19 differences: 17 x 20 + 2 x 80 = 500 ms, mean 26.3 ms.)
        let jitter = stats.jitter.expect("jitter");
        assert_eq!(jitter, 500 * MS / 19);
        assert!(
            stats.jitter_rfc3550 > 10 * MS && stats.jitter_rfc3550 < 30 * MS,
            "{:?}",
            stats.jitter_rfc3550
        );
    }

    #[test]
    fn reorder_duplicates_late_and_unknown_replies() {
        let start = Instant::now();
        let mut prober = Prober::new(ProbeConfig::default(), start).expect("valid");
        let mut now = start;
        for _ in 0..4 {
            prober.poll_probe(now).expect("due");
            now += 100 * MS;
        }
        // Replies arrive 0, 2, 1, 3: probe 1 is reordered (it arrives after 2).
        for seq in [0, 2, 1, 3] {
            assert!(matches!(
                prober.on_reply(now, seq, None),
                ReplyOutcome::Measured(_)
            ));
        }
        assert_eq!(prober.on_reply(now, 2, None), ReplyOutcome::Duplicate);
        assert_eq!(prober.on_reply(now, 999, None), ReplyOutcome::Unknown);
        let late_seq = prober.poll_probe(now).expect("due");
        assert_eq!(
            prober.on_reply(now + 1500 * MS, late_seq, None),
            ReplyOutcome::Late
        );
        assert_eq!(
            prober.on_reply(now + 1600 * MS, late_seq, None),
            ReplyOutcome::Duplicate
        );
        let stats = prober.stats(now + 2 * Duration::from_secs(1));
        assert_eq!(stats.reorder, 0.25);
        assert_eq!((stats.received, stats.lost), (4, 1));
        assert_eq!(
            (
                stats.duplicates_total,
                stats.late_total,
                stats.unknown_total
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_dead_tunnel_is_seen_within_300_ms() {
        let start = Instant::now();
        let mut prober = Prober::new(ProbeConfig::default(), start).expect("valid");
        let mut now = start;
        let mut last_reply = start;
        // 2 s healthy, with 40 ms RTT.
        for _ in 0..20 {
            let seq = prober.poll_probe(now).expect("due");
            last_reply = now + 40 * MS;
            prober.on_reply(last_reply, seq, None);
            now += 100 * MS;
        }
        assert!(prober.alive(now));
        // Then nothing comes back.
        let mut seen_dead = None;
        while now < last_reply + Duration::from_secs(1) {
            if prober.poll_probe(now).is_some() && !prober.alive(now) && seen_dead.is_none() {
                seen_dead = Some(now);
            }
            now += 10 * MS;
            if !prober.alive(now) && seen_dead.is_none() {
                seen_dead = Some(now);
            }
        }
        let detected = seen_dead.expect("seen dead") - last_reply;
        assert!(detected <= 310 * MS, "took {detected:?}");
        assert!(detected >= 300 * MS, "too eager: {detected:?}");
    }

    #[test]
    fn residence_time_is_taken_out_and_bogus_residence_ignored() {
        let start = Instant::now();
        let mut prober = Prober::new(ProbeConfig::default(), start).expect("valid");
        let a = prober.poll_probe(start).expect("due");
        assert_eq!(
            prober.on_reply(start + 50 * MS, a, Some(5 * MS)),
            ReplyOutcome::Measured(45 * MS)
        );
        let b = prober.poll_probe(prober.next_wakeup()).expect("due");
        let sent = prober.next_wakeup() - 100 * MS;
        // A reflector whose clock stepped claims it held the packet for an hour.
        assert_eq!(
            prober.on_reply(sent + 50 * MS, b, Some(Duration::from_secs(3600))),
            ReplyOutcome::Measured(50 * MS)
        );
    }

    #[test]
    fn icmp_sequence_numbers_map_to_the_latest_probe() {
        let start = Instant::now();
        let config = ProbeConfig {
            window: 10,
            ..ProbeConfig::default()
        };
        let mut prober = Prober::new(config, start).expect("valid");
        prober.next_seq = 65_530; // about to wrap the 16-bit space
        let mut now = start;
        let mut seqs = Vec::new();
        for _ in 0..10 {
            seqs.push(prober.poll_probe(now).expect("due"));
            now += 100 * MS;
        }
        let last = *seqs.last().expect("sent");
        assert_eq!(last, 65_539);
        assert_eq!(
            prober.on_reply_seq16(now, last as u16, None),
            ReplyOutcome::Measured(100 * MS)
        );
        assert_eq!(
            prober.on_reply_seq16(now, 60_000, None),
            ReplyOutcome::Unknown
        );
    }

    #[test]
    fn a_stalled_caller_does_not_cause_a_burst() {
        let start = Instant::now();
        let mut prober = Prober::new(ProbeConfig::default(), start).expect("valid");
        assert!(prober.poll_probe(start).is_some());
        let late = start + Duration::from_secs(5);
        assert!(prober.poll_probe(late).is_some());
        assert!(prober.poll_probe(late).is_none(), "one probe, not fifty");
        assert_eq!(prober.next_wakeup(), late + 100 * MS);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let start = Instant::now();
        let mut prober = Prober::new(
            ProbeConfig {
                window: 4,
                ..ProbeConfig::default()
            },
            start,
        )
        .expect("valid");
        prober.next_seq = u32::MAX - 1;
        let mut now = start;
        let seqs: Vec<u32> = (0..4)
            .map(|_| {
                let s = prober.poll_probe(now).expect("due");
                now += 100 * MS;
                s
            })
            .collect();
        assert_eq!(seqs, vec![u32::MAX - 1, u32::MAX, 0, 1]);
        for seq in [0, u32::MAX] {
            assert!(matches!(
                prober.on_reply(now, seq, None),
                ReplyOutcome::Measured(_)
            ));
        }
        assert_eq!(
            prober.stats(now).reorder,
            0.5,
            "u32::MAX arrived after 0, which was sent later"
        );
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let bad = ProbeConfig {
            window: 0,
            ..ProbeConfig::default()
        };
        assert_eq!(
            Prober::new(bad, Instant::now()).err(),
            Some(ProbeConfigError::Window(0))
        );
        let bad = ProbeConfig {
            interval: Duration::ZERO,
            ..ProbeConfig::default()
        };
        assert!(bad
            .validate()
            .expect_err("zero interval")
            .to_string()
            .contains("probe.interval"));
        let parsed: Result<ProbeConfig, _> =
            serde_yaml_ng::from_str("interval: 50ms\nwindow: 20\nbogus: 1\n");
        assert!(parsed
            .expect_err("unknown field")
            .to_string()
            .contains("bogus"));
        let parsed: ProbeConfig =
            serde_yaml_ng::from_str("interval: 50ms\nwindow: 20\n").expect("valid");
        assert_eq!(
            (parsed.interval, parsed.window, parsed.dead_after),
            (50 * MS, 20, 3)
        );
    }
}
