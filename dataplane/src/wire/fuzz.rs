//! Random bytes through every parser and every accessor: errors are fine, panics are not.
//! Also round-trips of parsed headers through their builders.

use proptest::prelude::*;

use super::*;
use crate::drop::DropReason;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..200)
}

/// Bytes that start with a plausible header, so the fuzzing gets past the first checks.
fn with_prefix(prefix: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    bytes().prop_map(move |mut v| {
        let n = prefix.len().min(v.len());
        v[..n].copy_from_slice(&prefix[..n]);
        v
    })
}

fn exercise_ethernet(b: &mut [u8]) {
    if let Ok(mut f) = ethernet::Frame::new_checked(&mut *b) {
        let _ = (
            f.dst(),
            f.src(),
            f.ethertype(),
            f.vlan_id(),
            f.outer_vlan_id(),
            f.vlan_tags(),
        );
        assert!(f.header_len() <= f.payload().len() + f.header_len());
        let _ = ethernet::Repr::parse(&f);
        f.set_dst(ethernet::MacAddr::BROADCAST);
        f.set_ethertype(0x0800);
        let _ = f.payload_mut().len();
    }
}

fn exercise_ipv4(b: &mut [u8]) {
    if let Ok(mut p) = ipv4::Packet::new_checked(&mut *b) {
        let _ = (
            p.header_len(),
            p.dscp(),
            p.ecn(),
            p.total_len(),
            p.ident(),
            p.dont_frag(),
        );
        let _ = (
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
            p.ttl(),
            p.protocol(),
        );
        let _ = (
            p.src_addr(),
            p.dst_addr(),
            p.options(),
            p.verify_checksum(),
            p.pseudo_header(),
        );
        assert!(p.header_len() + p.payload().len() == p.total_len());
        let _ = icmp::v4_error_allowed(&p);
        let had_ttl = p.ttl();
        let was_ok = p.verify_checksum();
        if p.decrement_ttl().is_ok() {
            assert_eq!(p.ttl(), had_ttl - 1);
            assert_eq!(p.verify_checksum(), was_ok);
        }
        p.fill_checksum();
        assert!(p.verify_checksum());
        let _ = p.payload_mut().len();
    }
}

fn exercise_ipv6(b: &mut [u8]) {
    if let Ok(mut p) = ipv6::Packet::new_checked(&mut *b) {
        let _ = (
            p.traffic_class(),
            p.flow_label(),
            p.next_header(),
            p.hop_limit(),
        );
        let _ = (p.src_addr(), p.dst_addr(), p.payload().len());
        if let Ok(u) = p.upper_layer() {
            assert!(u.offset <= p.total_len());
        }
        let _ = icmp::v6_error_allowed(&p, true);
        let _ = p.decrement_hop_limit();
        let _ = p.payload_mut().len();
    }
}

fn exercise_l4(b: &mut [u8]) {
    if let Ok(mut u) = udp::Packet::new_checked(&mut *b) {
        let _ = (
            u.src_port(),
            u.dst_port(),
            u.len(),
            u.checksum(),
            u.payload().len(),
        );
        let _ = u.verify_checksum_v4(std::net::Ipv4Addr::LOCALHOST, std::net::Ipv4Addr::LOCALHOST);
        let _ = u.verify_checksum_v6(
            &std::net::Ipv6Addr::LOCALHOST,
            &std::net::Ipv6Addr::LOCALHOST,
        );
        let src = std::net::Ipv4Addr::new(10, 0, 0, 1);
        u.fill_checksum(udp::ChecksumMode::V4 { src, dst: src });
        assert!(u.verify_checksum_v4(src, src));
    }
    if let Ok(mut v) = vxlan::Packet::new_checked(&mut *b) {
        let _ = (v.flags(), v.vni(), v.payload().len());
        v.set_vni(0x123456);
        assert_eq!(v.vni(), 0x123456);
    }
    if let Ok(i) = icmp::Packet::new_checked(&*b) {
        let _ = (
            i.msg_type(),
            i.code(),
            i.checksum(),
            i.echo_ident(),
            i.echo_seq(),
        );
        let _ = (
            i.next_hop_mtu_v4(),
            i.mtu_v6(),
            i.payload().len(),
            i.verify_checksum_v4(),
        );
    }
    if let Ok(w) = wireguard::Packet::new_checked(&*b) {
        let _ = (
            w.message_type(),
            w.sender_index(),
            w.receiver_index(),
            w.counter(),
        );
        let _ = (w.data_payload().len(), w.macs());
    }
}

fn exercise_builders(b: &[u8]) {
    let mut out = [0u8; 1600];
    let _ = icmp::frag_needed_v4(&mut out, b, std::net::Ipv4Addr::new(10, 0, 0, 1), 1400);
    let _ = icmp::time_exceeded_v4(&mut out[..100], b, std::net::Ipv4Addr::new(10, 0, 0, 1));
    let _ = icmp::packet_too_big_v6(&mut out, b, std::net::Ipv6Addr::LOCALHOST, 1280);
    let _ = icmp::time_exceeded_v6(&mut out[..90], b, std::net::Ipv6Addr::LOCALHOST);
    let _ = crate::route::flow::FlowHasher::new(1).hash_ip(b);
}

fn exercise_all(mut b: Vec<u8>) {
    exercise_builders(&b);
    exercise_ethernet(&mut b.clone());
    exercise_ipv4(&mut b.clone());
    exercise_ipv6(&mut b.clone());
    exercise_l4(&mut b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(b in bytes()) {
        exercise_all(b);
    }

    #[test]
    fn random_ipv4_like_never_panics(b in with_prefix(&[0x45, 0, 0, 40, 0, 0, 0x20, 0, 64, 17])) {
        exercise_all(b);
    }

    #[test]
    fn random_ipv6_like_never_panics(b in with_prefix(&[0x60, 0, 0, 0, 0, 40, 0, 64])) {
        exercise_all(b);
    }

    #[test]
    fn random_ethernet_vlan_like_never_panics(b in with_prefix(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0, 0, 1, 0x88, 0xa8])) {
        exercise_all(b);
    }

    #[test]
    fn random_wireguard_like_never_panics(t in 0u8..6, len in 0usize..200, fill in any::<u8>()) {
        let mut b = vec![fill; len];
        if let Some(x) = b.first_mut() { *x = t; }
        for x in b.iter_mut().skip(1).take(3) { *x = 0; }
        exercise_all(b.clone());
        let r = wireguard::Packet::new_checked(&b[..]);
        let expect_ok = match t {
            1 => len == 148, 2 => len == 92, 3 => len == 64, 4 => len >= 32, _ => false,
        };
        prop_assert_eq!(r.is_ok(), expect_ok);
        if !expect_ok && (1..=4).contains(&t) {
            prop_assert_eq!(r.err(), Some(DropReason::WgBadLength));
        }
    }

    #[test]
    fn ipv4_header_round_trips(
        src in any::<u32>(), dst in any::<u32>(), proto in any::<u8>(), ttl in any::<u8>(),
        tos in any::<u8>(), ident in any::<u16>(), df in any::<bool>(), plen in 0usize..100,
    ) {
        let r = ipv4::Repr {
            src: src.into(), dst: dst.into(), protocol: proto, payload_len: plen, ttl, tos, ident,
            dont_frag: df,
        };
        let mut buf = vec![0u8; 20 + plen];
        r.emit(&mut buf).expect("fits");
        let p = ipv4::Packet::new_checked(&buf[..]).expect("valid");
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(ipv4::Repr {
            src: p.src_addr(), dst: p.dst_addr(), protocol: p.protocol(), payload_len: p.payload().len(),
            ttl: p.ttl(), tos: p.tos(), ident: p.ident(), dont_frag: p.dont_frag(),
        }, r);
    }

    #[test]
    fn udp_checksums_verify_and_catch_flips(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        flip in any::<usize>(),
        v6 in any::<bool>(),
    ) {
        let src4 = std::net::Ipv4Addr::new(192, 0, 2, 1);
        let dst4 = std::net::Ipv4Addr::new(198, 51, 100, 7);
        let src6: std::net::Ipv6Addr = "2001:db8::1".parse().expect("addr");
        let dst6: std::net::Ipv6Addr = "2001:db8::2".parse().expect("addr");
        let mut buf = vec![0u8; 8 + payload.len()];
        buf[8..].copy_from_slice(&payload);
        let mode = if v6 { udp::ChecksumMode::V6 { src: src6, dst: dst6 } } else { udp::ChecksumMode::V4 { src: src4, dst: dst4 } };
        udp::Repr { src_port: 4789, dst_port: 4789, payload_len: payload.len() }.emit(&mut buf, mode).expect("fits");
        let ok = |b: &[u8]| {
            let u = udp::Packet::new_checked(b).expect("valid");
            if v6 { u.verify_checksum_v6(&src6, &dst6) } else { u.verify_checksum_v4(src4, dst4) }
        };
        prop_assert!(ok(&buf));
        prop_assert_ne!(udp::Packet::new_checked(&buf[..]).expect("valid").checksum(), 0);
        // Flip one payload bit: the checksum catches every single-bit error.
        if !payload.is_empty() {
            let i = 8 + flip % payload.len();
            buf[i] ^= 1 << (flip % 8);
            prop_assert!(!ok(&buf));
        }
    }
}
