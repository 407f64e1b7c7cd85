//! The forwarding pipeline per core, in each direction that can be timed alone, beside raw
//! ring ChaCha20-Poly1305 measured in the same run:
//!
//! Both run the workers' own code (`gatewan_dataplane::engine::Worker`), in place in one buffer.
//!
//! - `fabric_to_transit`: VXLAN decap, checks, TTL, route lookup, tunnel pick, WireGuard
//!   encrypt in place (one gateway), against `ring_seal`;
//! - `both_gateways`: that, then on the far gateway decrypt, replay check, source check,
//!   local route and VXLAN encap, against `ring_seal_open`.
//!
//! Run: `cargo bench -p gatewan-bench --bench pipeline -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gatewan_bench::ratio::Ledger;
use gatewan_dataplane::fixture::{self, BUF};
use gatewan_dataplane::wireguard::aead::counter_nonce;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

/// Inner IP packet sizes.
const SIZES: [usize; 3] = [64, 512, 1420];

fn key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).expect("key"))
}

fn pipeline(c: &mut Criterion) {
    for size in SIZES {
        let ledger = Ledger::new();
        let mut g = c.benchmark_group(format!("pipeline_{size}"));
        g.throughput(Throughput::Bytes(size as u64));

        let k = key();
        let mut buf = vec![0u8; size + 16];
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::new("ring_seal", size), &size, |b, &size| {
            ledger.iter(b, "ring_seal", || {
                counter += 1;
                let nonce = Nonce::assume_unique_for_key(counter_nonce(counter));
                k.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf[..size])
                    .map(|t| t.as_ref()[0])
            })
        });
        g.bench_with_input(
            BenchmarkId::new("ring_seal_open", size),
            &size,
            |b, &size| {
                ledger.iter(b, "ring_seal_open", || {
                    counter += 1;
                    let n = counter_nonce(counter);
                    let tag = k
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(n),
                            Aad::empty(),
                            &mut buf[..size],
                        )
                        .expect("seal");
                    buf[size..size + 16].copy_from_slice(tag.as_ref());
                    k.open_in_place(
                        Nonce::assume_unique_for_key(n),
                        Aad::empty(),
                        &mut buf[..size + 16],
                    )
                    .map(|p| p.len())
                })
            },
        );

        let mut pair = fixture::pair().expect("pair");
        let template = fixture::vxlan_payload(size);
        let mut buf = vec![0u8; BUF];
        g.bench_with_input(
            BenchmarkId::new("fabric_to_transit", size),
            &size,
            |b, _| {
                ledger.iter(b, "fabric_to_transit", || {
                    // The copy stands for the receive a backend does into its buffer.
                    let payload = fixture::receive(&mut buf, &template);
                    fixture::fabric_to_transit(&mut pair, &mut buf, payload).expect("forward")
                })
            },
        );
        // A fresh pair: the first one's counters ran far ahead of what B has seen.
        let mut pair = fixture::pair().expect("pair");
        g.bench_with_input(BenchmarkId::new("both_gateways", size), &size, |b, _| {
            ledger.iter(b, "both_gateways", || {
                let payload = fixture::receive(&mut buf, &template);
                let datagram =
                    fixture::fabric_to_transit(&mut pair, &mut buf, payload).expect("forward");
                // The datagram crosses to B: received at B's headroom, as a socket would.
                buf.copy_within(datagram.clone(), gatewan_dataplane::engine::HEADROOM);
                let at = gatewan_dataplane::engine::HEADROOM;
                fixture::transit_to_fabric(&mut pair, &mut buf, at..at + datagram.len())
                    .expect("back")
            })
        });
        g.finish();
        ledger.report(
            &format!("pipeline, {size}-byte inner packets"),
            "ring_seal",
            1,
            Some(size as u64),
        );
        if let (Some(both), Some(raw)) = (
            ledger.ns_per_iter("both_gateways"),
            ledger.ns_per_iter("ring_seal_open"),
        ) {
            println!(
                "both_gateways vs ring_seal_open: x{:.2} (the whole path keeps {:.0}% of raw AEAD)",
                raw / both,
                100.0 * raw / both
            );
        }
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
