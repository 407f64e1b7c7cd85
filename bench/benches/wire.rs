//! Internet checksum throughput and header parsing cost.
//!
//! `cargo bench -p gatewan-bench --bench wire -- --warm-up-time 1 --measurement-time 3`
//!
//! Checksum: gatewan's `checksum::sum` against the textbook RFC 1071 loop
//! (`checksum::sum_reference`) on 64 B and 1420 B buffers. Parsing: the fabric-side header
//! stack of one VXLAN packet (Ethernet, IPv4 + checksum, UDP, VXLAN, inner Ethernet, inner
//! IPv4), against a plain copy of the same bytes.

use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewan_bench::ratio::Ledger;
use gatewan_dataplane::wire::{checksum, ethernet, ip_proto, ipv4, udp, vxlan};

fn checksums(c: &mut Criterion) {
    for size in [64usize, 1420] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        assert_eq!(checksum::sum(&data), checksum::sum_reference(&data));
        let ledger = Ledger::new();
        let mut g = c.benchmark_group(format!("checksum_{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function("rfc1071_reference", |b| {
            ledger.iter(b, "reference loop", || {
                checksum::sum_reference(std::hint::black_box(&data))
            })
        });
        g.bench_function("gatewan", |b| {
            ledger.iter(b, "gatewan sum", || {
                checksum::sum(std::hint::black_box(&data))
            })
        });
        g.finish();
        ledger.report(
            &format!("Internet checksum, {size} B"),
            "reference loop",
            1,
            Some(size as u64),
        );
    }
}

/// A VXLAN packet as a leaf sends it: outer Ethernet/IPv4/UDP/VXLAN, inner Ethernet/IPv4/UDP.
fn vxlan_packet(inner_payload: usize) -> Vec<u8> {
    let inner_ip_len = 20 + 8 + inner_payload;
    let inner_len = 14 + inner_ip_len;
    let total = 14 + 20 + 8 + 8 + inner_len;
    let mut b = vec![0u8; total];
    let mac = ethernet::MacAddr([0x70, 0x5b, 0x83, 0x6b, 0x72, 0xa9]);
    let mut o = ethernet::Repr {
        dst: mac,
        src: mac,
        vlan: None,
        ethertype: ethernet::ethertype::IPV4,
    }
    .emit(&mut b)
    .expect("fits");
    ipv4::Repr {
        src: Ipv4Addr::new(10, 184, 84, 1),
        dst: Ipv4Addr::new(10, 184, 84, 44),
        protocol: ip_proto::UDP,
        payload_len: 8 + 8 + inner_len,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
    }
    .emit(&mut b[o..])
    .expect("fits");
    o += 20;
    let udp_at = o;
    o += 8;
    o += vxlan::Repr { vni: 5000 }.emit(&mut b[o..]).expect("fits");
    o += ethernet::Repr {
        dst: mac,
        src: mac,
        vlan: None,
        ethertype: ethernet::ethertype::IPV4,
    }
    .emit(&mut b[o..])
    .expect("fits");
    ipv4::Repr {
        src: Ipv4Addr::new(10, 1, 11, 5),
        dst: Ipv4Addr::new(10, 188, 4, 9),
        protocol: ip_proto::UDP,
        payload_len: 8 + inner_payload,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
    }
    .emit(&mut b[o..])
    .expect("fits");
    let udp_len = total - udp_at - 8;
    udp::Repr {
        src_port: 49152,
        dst_port: vxlan::PORT,
        payload_len: udp_len,
    }
    .emit(&mut b[udp_at..], udp::ChecksumMode::None)
    .expect("fits");
    b
}

fn parse(pkt: &[u8]) -> Option<(u32, Ipv4Addr)> {
    let eth = ethernet::Frame::new_checked(pkt).ok()?;
    let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
    if !ip.verify_checksum() || ip.protocol() != ip_proto::UDP {
        return None;
    }
    let u = udp::Packet::new_checked(ip.payload()).ok()?;
    let v = vxlan::Packet::new_checked(u.payload()).ok()?;
    let inner = ethernet::Frame::new_checked(v.payload()).ok()?;
    let iip = ipv4::Packet::new_checked(inner.payload()).ok()?;
    Some((v.vni(), iip.dst_addr()))
}

fn parsing(c: &mut Criterion) {
    let pkt = vxlan_packet(64);
    assert_eq!(parse(&pkt), Some((5000, Ipv4Addr::new(10, 188, 4, 9))));
    let ledger = Ledger::new();
    let mut g = c.benchmark_group("parse_vxlan_stack");
    let mut copy = pkt.clone();
    g.bench_function("copy_packet", |b| {
        ledger.iter(b, "copy of the packet", || {
            copy.copy_from_slice(std::hint::black_box(&pkt));
            copy[0]
        })
    });
    g.bench_function("gatewan_parse", |b| {
        ledger.iter(b, "parse 6 headers", || parse(std::hint::black_box(&pkt)))
    });
    g.finish();
    ledger.report(
        "VXLAN header stack (64 B inner payload)",
        "copy of the packet",
        1,
        None,
    );
}

criterion_group!(benches, checksums, parsing);
criterion_main!(benches);
