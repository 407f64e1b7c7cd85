//! WireGuard core benchmarks, one core:
//! * transport seal and open at 64, 512 and 1420 bytes through a `Tunnel` (ring and RustCrypto
//!   behind the AEAD seam), beside raw ring ChaCha20-Poly1305 on the same buffers, with the
//!   framing cost printed as a ratio to raw ring (goal: at most 5% at 1420 B);
//! * handshake responder rate: plain, under load with a valid cookie, and under load answering
//!   cookie replies (the flood path, which must do no Diffie-Hellman).
//!
//! Run briefly on shared machines:
//! `cargo bench -p gatewan-bench --bench wireguard -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use gatewan_dataplane::wireguard::aead::counter_nonce;
use gatewan_dataplane::wireguard::{
    public_key, Action, Aead, Encapsulated, Instant, PeerConfig, RingChaCha20Poly1305,
    RustCryptoChaCha20Poly1305, Tunnel, DATA_HEADER_LEN,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use std::cell::RefCell;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const SIZES: [usize; 3] = [64, 512, 1420];
const T0: u64 = 1_700_000_000;
const A_KEY: [u8; 32] = [0x0a; 32];
const B_KEY: [u8; 32] = [0x0b; 32];
const BUF: usize = 2048;

fn src() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 51820))
}

fn tunnel<A: Aead>(mine: [u8; 32], theirs: [u8; 32], slot: u16, seed: u64) -> Tunnel<A> {
    Tunnel::new(
        mine,
        PeerConfig::new(public_key(&theirs)),
        slot,
        Box::new(ChaCha20Rng::seed_from_u64(seed)),
    )
    .expect("tunnel")
}

/// A and B with a confirmed session both ways.
fn established<A: Aead>() -> (Tunnel<A>, Tunnel<A>, Instant) {
    let mut a = tunnel::<A>(A_KEY, B_KEY, 1, 1);
    let mut b = tunnel::<A>(B_KEY, A_KEY, 2, 2);
    let now = Instant::from_secs(T0);
    let mut out = vec![0u8; BUF];
    let mut scratch = vec![0u8; BUF];
    a.initiate_handshake(now);
    let n = a.tick(now, &mut out).expect("tick").expect("initiation");
    let mut init = out[..n].to_vec();
    let Ok(Action::SendResponse(n)) = b.handle_datagram(now, src(), &mut init, &mut out) else {
        panic!("no response");
    };
    let mut resp = out[..n].to_vec();
    a.handle_datagram(now, src(), &mut resp, &mut scratch)
        .expect("response");
    let n = a.tick(now, &mut out).expect("tick").expect("keepalive");
    let mut ka = out[..n].to_vec();
    b.handle_datagram(now, src(), &mut ka, &mut scratch)
        .expect("keepalive");
    (a, b, now)
}

/// An IPv4 packet of `len` bytes placed behind the data header of a buffer.
fn packet_buffer(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; BUF];
    buf[DATA_HEADER_LEN] = 0x45;
    buf[DATA_HEADER_LEN + 2..DATA_HEADER_LEN + 4].copy_from_slice(&(len as u16).to_be_bytes());
    buf
}

fn ring_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).expect("key"))
}

fn seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("wg_seal");
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));

        let key = ring_key();
        let mut buf = packet_buffer(size);
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::new("ring_raw", size), &size, |bch, &size| {
            bch.iter(|| {
                let nonce = Nonce::assume_unique_for_key(counter_nonce(counter));
                counter += 1;
                let body = &mut buf[DATA_HEADER_LEN..DATA_HEADER_LEN + size];
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::empty(), body)
                    .expect("seal");
                buf[DATA_HEADER_LEN + size..DATA_HEADER_LEN + size + 16]
                    .copy_from_slice(tag.as_ref());
                black_box(&buf);
            })
        });

        let (mut a, _b, now) = established::<RingChaCha20Poly1305>();
        let mut buf = packet_buffer(size);
        g.bench_with_input(
            BenchmarkId::new("tunnel_ring", size),
            &size,
            |bch, &size| {
                bch.iter(|| {
                    let r = a.encapsulate(now, black_box(&mut buf), size).expect("seal");
                    black_box(r)
                })
            },
        );

        let (mut a, _b, now) = established::<RustCryptoChaCha20Poly1305>();
        let mut buf = packet_buffer(size);
        g.bench_with_input(
            BenchmarkId::new("tunnel_rustcrypto", size),
            &size,
            |bch, &size| {
                bch.iter(|| {
                    let r = a.encapsulate(now, black_box(&mut buf), size).expect("seal");
                    black_box(r)
                })
            },
        );
    }
    g.finish();
}

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("wg_open");
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));

        // Raw ring: open a copy of one sealed buffer each time (the copy is made in setup,
        // outside the measurement, exactly as for the tunnel below).
        let key = ring_key();
        let mut sealed = packet_buffer(size);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(counter_nonce(0)),
                Aad::empty(),
                &mut sealed[DATA_HEADER_LEN..DATA_HEADER_LEN + size],
            )
            .expect("seal");
        let tag_bytes: [u8; 16] = tag.as_ref().try_into().expect("tag");
        sealed.truncate(DATA_HEADER_LEN + size);
        g.bench_with_input(BenchmarkId::new("ring_raw", size), &size, |bch, _| {
            bch.iter_batched(
                || sealed.clone(),
                |mut m| {
                    let plain = key
                        .open_in_place_separate_tag(
                            Nonce::assume_unique_for_key(counter_nonce(0)),
                            Aad::empty(),
                            Tag::from(tag_bytes),
                            &mut m[DATA_HEADER_LEN..],
                            0..,
                        )
                        .expect("open");
                    black_box(plain.len());
                    m
                },
                BatchSize::SmallInput,
            )
        });

        open_through_tunnel::<RingChaCha20Poly1305>(&mut g, "tunnel_ring", size);
        open_through_tunnel::<RustCryptoChaCha20Poly1305>(&mut g, "tunnel_rustcrypto", size);
    }
    g.finish();
}

fn open_through_tunnel<A: Aead>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    size: usize,
) {
    // Every message needs a fresh counter (the replay window refuses repeats), so the sender
    // seals one per iteration in setup, outside the measurement.
    let (mut a, mut b, now) = established::<A>();
    let mut out = vec![0u8; BUF];
    let template = packet_buffer(size);
    g.bench_with_input(BenchmarkId::new(name, size), &size, |bch, &size| {
        bch.iter_batched(
            || {
                let mut m = template.clone();
                match a.encapsulate(now, &mut m, size).expect("seal") {
                    Encapsulated::Ready(n) => m.truncate(n),
                    Encapsulated::Staged => panic!("no session"),
                }
                m
            },
            |mut m| {
                let r = b
                    .handle_datagram(now, src(), &mut m, &mut out)
                    .expect("open");
                black_box(r);
                m
            },
            BatchSize::SmallInput,
        )
    });
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("wg_handshake");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);

    // Each initiation comes from A at a later time (A sends at most one per 5 s, and the
    // responder wants a newer timestamp each time); it is produced in setup.
    fn initiation(a: &mut Tunnel, t: Instant, out: &mut [u8]) -> Vec<u8> {
        a.initiate_handshake(t);
        let n = a.tick(t, out).expect("tick").expect("initiation");
        out[..n].to_vec()
    }

    {
        let mut a: Tunnel = tunnel(A_KEY, B_KEY, 1, 11);
        let mut b: Tunnel = tunnel(B_KEY, A_KEY, 2, 12);
        let mut out = vec![0u8; BUF];
        let mut resp = vec![0u8; BUF];
        let mut t = Instant::from_secs(T0);
        g.bench_function("responder", |bch| {
            bch.iter_batched(
                || {
                    t = t + Duration::from_secs(6);
                    (initiation(&mut a, t, &mut out), t)
                },
                |(mut m, t)| {
                    let r = b
                        .handle_datagram(t, src(), &mut m, &mut resp)
                        .expect("respond");
                    assert!(matches!(r, Action::SendResponse(_)));
                    m
                },
                BatchSize::SmallInput,
            )
        });
    }

    {
        // Under load, initiations that carry a valid mac2 (the initiator holds a cookie).
        let a = RefCell::new(tunnel::<RingChaCha20Poly1305>(A_KEY, B_KEY, 1, 21));
        let b = RefCell::new(tunnel::<RingChaCha20Poly1305>(B_KEY, A_KEY, 2, 22));
        let mut out = vec![0u8; BUF];
        let mut scratch = vec![0u8; BUF];
        let mut resp = vec![0u8; BUF];
        let mut t = Instant::from_secs(T0);
        // Timed one at a time: the responder's cookie secret moves with the clock, so a batch
        // of initiations prepared ahead would carry cookies of a secret already replaced.
        g.bench_function("responder_under_load_with_cookie", |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    t = t + Duration::from_secs(6);
                    let mut a = a.borrow_mut();
                    let mut b = b.borrow_mut();
                    b.set_under_load(t);
                    if !a.has_cookie(t) {
                        let mut m = initiation(&mut a, t, &mut out);
                        let Ok(Action::SendCookieReply(n)) =
                            b.handle_datagram(t, src(), &mut m, &mut out)
                        else {
                            panic!("expected a cookie reply");
                        };
                        let mut reply = out[..n].to_vec();
                        a.handle_datagram(t, src(), &mut reply, &mut scratch)
                            .expect("cookie");
                        t = t + Duration::from_secs(6);
                        b.set_under_load(t);
                    }
                    let mut m = initiation(&mut a, t, &mut out);
                    let start = std::time::Instant::now();
                    let r = b
                        .handle_datagram(t, src(), &mut m, &mut resp)
                        .expect("respond");
                    total += start.elapsed();
                    assert!(matches!(r, Action::SendResponse(_)));
                }
                total
            })
        });
    }

    {
        // Under load, initiations without a cookie: answered with a cookie reply, no DH.
        let mut a: Tunnel = tunnel(A_KEY, B_KEY, 1, 31);
        let b: RefCell<Tunnel> = RefCell::new(tunnel(B_KEY, A_KEY, 2, 32));
        let mut out = vec![0u8; BUF];
        let mut resp = vec![0u8; BUF];
        let mut t = Instant::from_secs(T0);
        g.bench_function("responder_under_load_cookie_reply", |bch| {
            bch.iter_batched(
                || {
                    t = t + Duration::from_secs(6);
                    b.borrow_mut().set_under_load(t);
                    (initiation(&mut a, t, &mut out), t)
                },
                |(mut m, t)| {
                    let r = b
                        .borrow_mut()
                        .handle_datagram(t, src(), &mut m, &mut resp)
                        .expect("cookie");
                    assert!(matches!(r, Action::SendCookieReply(_)));
                    m
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Where criterion writes its estimates (the same rule criterion follows).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
}

/// Mean time (ns) criterion measured for `group/function/param` in this run.
fn mean_ns(group: &str, function: &str, param: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join(param)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Median over many short rounds of (tunnel time / raw ring time), for seal and for open,
/// the two measured back to back in each round (in alternating order, on working sets that
/// stay in cache) so machine noise and cache effects hit both alike.
fn interleaved_ratios(size: usize) -> (f64, f64) {
    let key = ring_key();
    let (mut a, mut b, now) = established::<RingChaCha20Poly1305>();
    let mut raw_buf = packet_buffer(size);
    let mut wg_buf = packet_buffer(size);
    let mut out = vec![0u8; BUF];
    let mut counter = 0u64;
    let iters = (128 * 1024 / (size + 32)).max(64);
    let (mut seal, mut open) = (Vec::new(), Vec::new());
    for round in 0..201 {
        let mut raw_seal = || {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                let nonce = Nonce::assume_unique_for_key(counter_nonce(counter));
                counter += 1;
                let body = &mut raw_buf[DATA_HEADER_LEN..DATA_HEADER_LEN + size];
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::empty(), body)
                    .expect("seal");
                raw_buf[DATA_HEADER_LEN + size..DATA_HEADER_LEN + size + 16]
                    .copy_from_slice(tag.as_ref());
                black_box(&raw_buf);
            }
            start.elapsed()
        };
        let mut wg_seal = || {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                black_box(
                    a.encapsulate(now, black_box(&mut wg_buf), size)
                        .expect("seal"),
                );
            }
            start.elapsed()
        };
        let (raw, wg) = if round % 2 == 0 {
            let r = raw_seal();
            (r, wg_seal())
        } else {
            let w = wg_seal();
            (raw_seal(), w)
        };
        seal.push(wg.as_secs_f64() / raw.as_secs_f64());

        // Open: fresh tunnel messages (the replay window wants new counters) and copies of
        // one raw message, prepared outside the timed loops.
        let mut msgs: Vec<Vec<u8>> = (0..iters)
            .map(|_| {
                let mut m = packet_buffer(size);
                match a.encapsulate(now, &mut m, size).expect("seal") {
                    Encapsulated::Ready(n) => m.truncate(n),
                    Encapsulated::Staged => panic!("no session"),
                }
                m.shrink_to_fit();
                m
            })
            .collect();
        // Raw ring does not care that every copy uses the same nonce.
        let nonce = counter_nonce(0);
        let mut sealed = packet_buffer(size);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed[DATA_HEADER_LEN..DATA_HEADER_LEN + size],
            )
            .expect("seal");
        let tag: [u8; 16] = tag.as_ref().try_into().expect("tag");
        sealed.truncate(DATA_HEADER_LEN + size + 16);
        let mut copies: Vec<Vec<u8>> = (0..iters).map(|_| sealed.clone()).collect();
        let mut raw_open = || {
            let start = std::time::Instant::now();
            for m in &mut copies {
                let plain = key
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        Tag::from(tag),
                        &mut m[DATA_HEADER_LEN..DATA_HEADER_LEN + size],
                        0..,
                    )
                    .expect("open");
                black_box(plain.len());
            }
            start.elapsed()
        };
        let mut wg_open = || {
            let start = std::time::Instant::now();
            for m in &mut msgs {
                black_box(b.handle_datagram(now, src(), m, &mut out).expect("open"));
            }
            start.elapsed()
        };
        let (raw, wg) = if round % 2 == 0 {
            let r = raw_open();
            (r, wg_open())
        } else {
            let w = wg_open();
            (raw_open(), w)
        };
        open.push(wg.as_secs_f64() / raw.as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(seal), median(open))
}

fn report(c: &mut Criterion) {
    // Runs last: prints ratios of this run's measurements.
    let _ = c;
    println!();
    println!("WireGuard framing cost vs raw ring ChaCha20-Poly1305 (same run, one core).");
    println!(
        "ratio: criterion means (tunnel / raw); interleaved: median of 201 alternating rounds."
    );
    println!(
        "{:>6}  {:>12} {:>12} {:>7}  {:>12} {:>12} {:>7}  {:>17}",
        "bytes",
        "seal raw",
        "seal wg",
        "ratio",
        "open raw",
        "open wg",
        "ratio",
        "interleaved s / o"
    );
    for size in SIZES {
        let p = size.to_string();
        let sr = mean_ns("wg_seal", "ring_raw", &p);
        let sw = mean_ns("wg_seal", "tunnel_ring", &p);
        let or = mean_ns("wg_open", "ring_raw", &p);
        let ow = mean_ns("wg_open", "tunnel_ring", &p);
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |ns| format!("{ns:.1} ns"));
        let ratio = |w: Option<f64>, r: Option<f64>| match (w, r) {
            (Some(w), Some(r)) => format!("{:.3}", w / r),
            _ => "-".to_string(),
        };
        let gbps = |v: Option<f64>| {
            v.map_or(String::new(), |ns| {
                format!(" ({:.1} Gbit/s)", size as f64 * 8.0 / ns)
            })
        };
        let (is, io) = interleaved_ratios(size);
        println!(
            "{:>6}  {:>12} {:>12} {:>7}  {:>12} {:>12} {:>7}  {:>8.3} / {:<6.3}  wg seal{} open{}",
            size,
            fmt(sr),
            fmt(sw),
            ratio(sw, sr),
            fmt(or),
            fmt(ow),
            ratio(ow, or),
            is,
            io,
            gbps(sw),
            gbps(ow),
        );
    }
    let rc = mean_ns("wg_seal", "tunnel_rustcrypto", "1420");
    let rr = mean_ns("wg_seal", "tunnel_ring", "1420");
    if let (Some(rc), Some(rr)) = (rc, rr) {
        println!(
            "seal 1420 B through the seam: RustCrypto / ring = {:.2}",
            rc / rr
        );
    }
    for name in [
        "responder",
        "responder_under_load_with_cookie",
        "responder_under_load_cookie_reply",
    ] {
        let path = criterion_dir()
            .join("wg_handshake")
            .join(name)
            .join("new/estimates.json");
        let mean = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["mean"]["point_estimate"].as_f64());
        if let Some(ns) = mean {
            println!(
                "handshake {name}: {:.1} us, {:.0} per second per core",
                ns / 1000.0,
                1e9 / ns
            );
        }
    }
}

criterion_group!(benches, seal, open, handshake, report);
criterion_main!(benches);
