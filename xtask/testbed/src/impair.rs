//! Transit impairment, changed live: blackhole, random loss, added latency with jitter, and
//! a rate cap on one link between a namespace (a gateway's transit) and the router namespace
//! that plays the internet. These machines have no netem, so:
//!
//! - blackhole and loss are nftables rules in the router namespace on the link's router-side
//!   interface, both directions (`drop`, `numgen random mod 10000 < N drop`);
//! - the rate cap is a `tbf` qdisc on each interface the delay line sends on, so each
//!   direction is shaped (a queue of 50 ms at the rate, then drops);
//! - latency needs something of ours: a [`DelayLine`], a userspace wire in the router
//!   namespace. The link is built as two veth pairs, `gateway -- wire_a ~ wire_b -- edge`, and
//!   two threads copy frames between `wire_a` and `wire_b` (AF_PACKET), holding each for the
//!   latency plus a uniform jitter. Frames keep their order (a frame never leaves before the
//!   one ahead of it), as on a real path.
//!
//! ```text
//!  gateway ns            router ns (the internet)
//!  [transit] ==veth== [wire_a] ~~DelayLine~~ [wire_b] ==veth== [edge: address, routes, nft]
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{Link, Netns, Result, Testbed, TestbedError};

/// What a transit suffers; [`Impairment::default`] is a clean path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Drop everything, both ways.
    pub blackhole: bool,
    /// Random loss, percent of the packets each way (0 to 100).
    pub loss_pct: f64,
    /// Added one-way delay, each way (the round trip grows by twice this).
    pub latency: Duration,
    /// Each frame's delay varies uniformly by up to this much around `latency`.
    pub jitter: Duration,
    /// Rate cap each way, Mbit/s (a token bucket; what its 50 ms queue cannot hold is dropped).
    pub rate_mbit: Option<u32>,
}

impl Impairment {
    /// Parses words as `cargo xtask lab impair` takes them: `clear`, `blackhole`,
    /// `loss=PCT`, `latency=DUR`, `jitter=DUR` (`40ms`, `1s`; a bare number is ms) and
    /// `rate=MBIT`. What is not given is clean.
    pub fn parse(words: &[&str]) -> Result<Impairment> {
        let bad = |w: &str, why: &str| TestbedError::Other(format!("{w:?}: {why}"));
        let duration = |w: &str, v: &str| -> Result<Duration> {
            let (num, scale) = if let Some(ms) = v.strip_suffix("ms") {
                (ms, 1.0)
            } else if let Some(s) = v.strip_suffix('s') {
                (s, 1000.0)
            } else {
                (v, 1.0)
            };
            let ms: f64 = num.parse().map_err(|_| bad(w, "not a duration"))?;
            if !(0.0..=10_000.0).contains(&(ms * scale)) {
                return Err(bad(w, "0 to 10 s"));
            }
            Ok(Duration::from_secs_f64(ms * scale / 1000.0))
        };
        let mut imp = Impairment::default();
        for &w in words {
            match w.split_once('=') {
                None if w == "clear" => imp = Impairment::default(),
                None if w == "blackhole" => imp.blackhole = true,
                Some(("loss", v)) => {
                    let pct: f64 = v.parse().map_err(|_| bad(w, "not a number"))?;
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(bad(w, "0 to 100"));
                    }
                    imp.loss_pct = pct;
                }
                Some(("latency", v)) => imp.latency = duration(w, v)?,
                Some(("jitter", v)) => imp.jitter = duration(w, v)?,
                Some(("rate", v)) => {
                    let mbit: u32 = v.parse().map_err(|_| bad(w, "Mbit/s, a whole number"))?;
                    if mbit == 0 {
                        return Err(bad(w, "at least 1 Mbit/s"));
                    }
                    imp.rate_mbit = Some(mbit);
                }
                _ => {
                    return Err(bad(
                        w,
                        "expected clear, blackhole, loss=PCT, latency=DUR, jitter=DUR or rate=MBIT",
                    ))
                }
            }
        }
        Ok(imp)
    }

    /// A one-line description for logs and the lab's tour.
    pub fn describe(&self) -> String {
        if self.blackhole {
            return "blackholed".into();
        }
        let mut parts = Vec::new();
        if self.loss_pct > 0.0 {
            parts.push(format!("{}% loss", self.loss_pct));
        }
        if !self.latency.is_zero() {
            parts.push(format!(
                "+{} ms ±{} ms",
                self.latency.as_millis(),
                self.jitter.as_millis()
            ));
        }
        if let Some(r) = self.rate_mbit {
            parts.push(format!("capped at {r} Mbit/s"));
        }
        if parts.is_empty() {
            "clean".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One impairable link between a namespace and the router namespace.
pub struct ImpairedLink {
    /// The end in the other namespace (a gateway's transit interface).
    pub inner: Link,
    /// The router's end: give it the address and routes.
    pub edge: Link,
    router: Netns,
    /// The delay line's two interfaces: the rate cap shapes what it sends on each.
    wires: [String; 2],
    table: String,
    delay: DelayLine,
}

impl ImpairedLink {
    /// Builds the link between `inner_ns` and `router` (both ends up, no address yet), clean.
    pub fn build(tb: &mut Testbed, inner_ns: &Netns, router: &Netns) -> Result<Self> {
        let (inner, wire_a) = tb.add_veth(inner_ns, router, 1)?;
        let (wire_b, edge) = tb.add_veth(router, router, 1)?;
        // The wire carries frames only: no addresses and no IPv6 of its own.
        for w in [&wire_a, &wire_b] {
            router.sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", w.name), "1")?;
            router.ip(["link", "set", &w.name, "promisc", "on"])?;
        }
        let delay = DelayLine::start(router, &wire_a.name, &wire_b.name)?;
        let table = format!("imp_{}", edge.name);
        let link = ImpairedLink {
            inner,
            edge,
            router: router.clone(),
            wires: [wire_a.name.clone(), wire_b.name.clone()],
            table,
            delay,
        };
        link.set(&Impairment::default())?;
        Ok(link)
    }

    /// Applies `imp` now, replacing what was set before.
    pub fn set(&self, imp: &Impairment) -> Result<()> {
        self.delay.set(imp.latency, imp.jitter);
        let e = &self.edge.name;
        let script = nft_script(
            &self.table,
            &[format!("iifname \"{e}\""), format!("oifname \"{e}\"")],
            imp,
        );
        for w in &self.wires {
            let _ = self.router.exec("tc", ["qdisc", "del", "dev", w, "root"]);
            if let Some(mbit) = imp.rate_mbit {
                // A frame the delay line sends meets the wire's queue: a token bucket of
                // 20 ms at the rate, holding at most 50 ms of it.
                let burst = (u64::from(mbit) * 1_000_000 / 8 / 50).max(3000);
                self.router.exec(
                    "tc",
                    [
                        "qdisc",
                        "replace",
                        "dev",
                        w,
                        "root",
                        "tbf",
                        "rate",
                        &format!("{mbit}mbit"),
                        "burst",
                        &burst.to_string(),
                        "latency",
                        "50ms",
                    ],
                )?;
            }
        }
        self.router.nft(&script)
    }

    /// `tc -s qdisc` of the delay line's interfaces (the rate cap's counters).
    pub fn qdiscs(&self) -> String {
        self.wires
            .iter()
            .map(|w| {
                self.router
                    .exec("tc", ["-s", "qdisc", "show", "dev", w])
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Frames the delay line carried so far, each way (towards the edge, towards the inner end).
    pub fn carried(&self) -> (u64, u64) {
        (
            self.delay.carried[0].load(Ordering::Relaxed),
            self.delay.carried[1].load(Ordering::Relaxed),
        )
    }
}

/// An nft script that (re)creates `table` with `imp`'s blackhole and loss rules for packets
/// matching each of `matches` (one per direction), in the forward, input and output hooks.
fn nft_script(table: &str, matches: &[String], imp: &Impairment) -> String {
    let mut rules = Vec::new();
    for m in matches {
        if imp.blackhole {
            rules.push(format!("{m} drop"));
        } else if imp.loss_pct > 0.0 {
            let n = (imp.loss_pct.clamp(0.0, 100.0) * 100.0).round() as u32;
            rules.push(format!("{m} numgen random mod 10000 < {n} drop"));
        }
    }
    let t = table;
    let mut script = format!("table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{\n");
    for (chain, hook) in [
        ("c_forward", "forward"),
        ("c_input", "input"),
        ("c_output", "output"),
    ] {
        script.push_str(&format!(
            " chain {chain} {{\n  type filter hook {hook} priority -10;\n"
        ));
        for r in &rules {
            script.push_str(&format!("  {r}\n"));
        }
        script.push_str(" }\n");
    }
    script.push_str("}\n");
    script
}

/// One transit endpoint (an address and UDP port of a gateway) where several transits share
/// one link, as the lab's do: blackhole and loss as nftables rules in the router namespace on
/// the datagrams from and to it. Latency and a rate cap need a link of their own
/// ([`ImpairedLink`]).
pub struct EndpointImpairment {
    router: Netns,
    table: String,
    addr: std::net::IpAddr,
    port: u16,
}

impl EndpointImpairment {
    /// Rules for `addr`:`port` in `router`, clean; `tag` names the nft table (unique per bed).
    pub fn new(router: &Netns, tag: &str, addr: std::net::IpAddr, port: u16) -> Result<Self> {
        let e = EndpointImpairment {
            router: router.clone(),
            table: format!("imp_{tag}"),
            addr,
            port,
        };
        e.set(&Impairment::default())?;
        Ok(e)
    }

    /// Applies `imp`'s blackhole and loss now (refused: latency and a rate cap).
    pub fn set(&self, imp: &Impairment) -> Result<()> {
        if !imp.latency.is_zero() || imp.rate_mbit.is_some() {
            return Err(TestbedError::Other(
                "latency and rate caps need an ImpairedLink of the transit's own".into(),
            ));
        }
        let family = if self.addr.is_ipv6() { "ip6" } else { "ip" };
        let (a, p) = (self.addr, self.port);
        let script = nft_script(
            &self.table,
            &[
                format!("{family} saddr {a} udp sport {p}"),
                format!("{family} daddr {a} udp dport {p}"),
            ],
            imp,
        );
        self.router.nft(&script)
    }
}

impl Netns {
    /// Runs an nft script (`nft -f -`) in this namespace.
    pub fn nft(&self, script: &str) -> Result<()> {
        use std::io::Write;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                command: "nft -f -".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestbedError::Command {
                command: format!("nft -f - <<{script}"),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

/// A userspace wire between two interfaces of one namespace that delays every frame.
pub struct DelayLine {
    latency_us: Arc<AtomicU64>,
    jitter_us: Arc<AtomicU64>,
    carried: [Arc<AtomicU64>; 2],
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The longest frame the wire takes: a GSO frame and its virtio-net header.
const FRAME_MAX: usize = 65_536 + 64;
/// PACKET_VNET_HDR: each frame comes with, and is sent with, its virtio-net header, which
/// carries the checksum and segmentation state of the kernel's buffer. Without it a frame
/// whose checksum was left to the device (veth's offloads) would go on with a partial one.
const PACKET_VNET_HDR: i32 = 15;
/// How often a blocked reader looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

impl DelayLine {
    /// Starts copying frames both ways between `a` and `b` in `netns`, with no delay yet.
    pub fn start(netns: &Netns, a: &str, b: &str) -> Result<Self> {
        let line = DelayLine {
            latency_us: Arc::new(AtomicU64::new(0)),
            jitter_us: Arc::new(AtomicU64::new(0)),
            carried: [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))],
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let (sa, sb) = netns.run(|| -> io::Result<(OwnedFd, OwnedFd)> {
            Ok((packet_socket(a)?, packet_socket(b)?))
        })??;
        let (sa, sb) = (Arc::new(sa), Arc::new(sb));
        let mut line = line;
        for (dir, (from, to)) in [(Arc::clone(&sa), Arc::clone(&sb)), (sb, sa)]
            .into_iter()
            .enumerate()
        {
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let (latency, jitter, stop) = (
                Arc::clone(&line.latency_us),
                Arc::clone(&line.jitter_us),
                Arc::clone(&line.stop),
            );
            let carried = Arc::clone(&line.carried[dir]);
            line.threads.push(thread::spawn(move || {
                read_side(&from, &tx, &latency, &jitter, &stop, dir as u64)
            }));
            let stop = Arc::clone(&line.stop);
            line.threads
                .push(thread::spawn(move || write_side(&to, &rx, &carried, &stop)));
        }
        Ok(line)
    }

    /// Changes the delay of the frames read from now on.
    pub fn set(&self, latency: Duration, jitter: Duration) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.store(us(latency), Ordering::Relaxed);
        self.jitter_us.store(us(jitter), Ordering::Relaxed);
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An AF_PACKET socket taking every frame `ifname` receives (not those it sends), each with
/// its virtio-net header, with a receive timeout so that its reader sees the stop flag.
fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // PACKET_IGNORE_OUTGOING (Linux 4.20): our own sends are not read back.
    setsockopt(&sock, libc::SOL_PACKET, 23, &one)?;
    setsockopt(&sock, libc::SOL_PACKET, PACKET_VNET_HDR, &one)?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: POLL.as_micros() as libc::suseconds_t,
    };
    setsockopt(&sock, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    Ok(sock)
}

fn setsockopt<T>(sock: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: value points to a T of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn read_side(
    sock: &OwnedFd,
    tx: &mpsc::Sender<(Instant, Vec<u8>)>,
    latency_us: &AtomicU64,
    jitter_us: &AtomicU64,
    stop: &AtomicBool,
    seed: u64,
) {
    let mut buf = vec![0u8; FRAME_MAX];
    let mut last_due = Instant::now();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (seed + 1);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let (lat, jit) = (
            latency_us.load(Ordering::Relaxed),
            jitter_us.load(Ordering::Relaxed),
        );
        // xorshift64: uniform enough for jitter.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = if jit == 0 {
            lat
        } else {
            (lat + rng % (2 * jit + 1)).saturating_sub(jit)
        };
        let due = (Instant::now() + Duration::from_micros(delay)).max(last_due);
        last_due = due;
        if tx.send((due, buf[..n as usize].to_vec())).is_err() {
            return;
        }
    }
}

fn write_side(
    sock: &OwnedFd,
    rx: &mpsc::Receiver<(Instant, Vec<u8>)>,
    carried: &AtomicU64,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((due, frame)) = rx.recv_timeout(POLL) else {
            continue;
        };
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            thread::sleep(wait);
        }
        // Never wait for room: a full queue (the rate cap's) drops the frame, as a router
        // would, instead of holding everything behind it.
        // SAFETY: frame is readable for its length; a bound packet socket sends on its
        // interface.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            carried.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impairments_parse_from_words_and_bad_words_are_refused() {
        let imp =
            Impairment::parse(&["latency=40ms", "jitter=5", "loss=2.5", "rate=20"]).expect("valid");
        assert_eq!(imp.latency, Duration::from_millis(40));
        assert_eq!(imp.jitter, Duration::from_millis(5));
        assert_eq!(imp.loss_pct, 2.5);
        assert_eq!(imp.rate_mbit, Some(20));
        assert!(!imp.blackhole);
        assert_eq!(
            Impairment::parse(&["latency=1s"]).expect("valid").latency,
            Duration::from_secs(1)
        );
        assert!(Impairment::parse(&["blackhole"]).expect("valid").blackhole);
        assert_eq!(
            Impairment::parse(&["blackhole", "clear"]).expect("valid"),
            Impairment::default()
        );
        for bad in [
            "loss=101",
            "loss=x",
            "latency=-1ms",
            "latency=11s",
            "rate=0",
            "fast",
        ] {
            assert!(Impairment::parse(&[bad]).is_err(), "{bad} accepted");
        }
    }
}
