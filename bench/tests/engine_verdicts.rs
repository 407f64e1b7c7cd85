//! What the workers' engine decides for each kind of packet, on the two-gateway fixture.

use gatewan_dataplane::drop::DropReason;
use gatewan_dataplane::engine::{ParcelKind, Verdict, WorkerCounter};
use gatewan_dataplane::fixture::{self, BUF};
use gatewan_dataplane::wire::{ipv4, vxlan};

#[test]
fn oversize_packets_get_a_fragmentation_needed_reply_for_the_sender() {
    let mut pair = fixture::pair().expect("pair");
    let mut buf = vec![0u8; BUF];
    let payload = fixture::vxlan_payload(1438);
    let at = fixture::receive(&mut buf, &payload);
    let start = at.start;
    let Verdict::Fabric { to, range } = pair.a.from_fabric(pair.now, &mut buf, at) else {
        panic!("an ICMP error for the sender")
    };
    assert_eq!(to.port(), vxlan::PORT);
    assert_eq!(range.start, start);
    let reply = &buf[range];
    let ip = ipv4::Packet::new_checked(&reply[22..]).expect("IPv4");
    assert_eq!(ip.dst_addr().octets(), [10, 1, 0, 5], "back to the sender");
    let body = &reply[22 + 20..];
    assert_eq!(
        (body[0], body[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(
        u16::from_be_bytes([body[6], body[7]]),
        1420,
        "the tunnel MTU"
    );
    assert_eq!(pair.a.stats.get(WorkerCounter::TooBigSent), 1);
    assert_eq!(pair.a.stats.drops().get(DropReason::TooBig), 1);
}

#[test]
fn wrong_vni_wrong_mac_and_truncated_packets_are_dropped_by_reason() {
    let mut pair = fixture::pair().expect("pair");
    let mut buf = vec![0u8; BUF];
    let good = fixture::vxlan_payload(100);
    type Mangle = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: [(&str, Mangle, DropReason); 4] = [
        ("vni", Box::new(|p| p[6] ^= 1), DropReason::WrongVni),
        ("mac", Box::new(|p| p[8 + 5] ^= 1), DropReason::WrongMac),
        (
            "truncated",
            Box::new(|p| p.truncate(5)),
            DropReason::VxlanTruncated,
        ),
        (
            "prefix",
            Box::new(|p| p[22 + 16] = 99),
            DropReason::UnknownPrefix,
        ),
    ];
    for (name, mangle, reason) in cases {
        let mut p = good.clone();
        mangle(&mut p);
        let at = fixture::receive(&mut buf, &p);
        assert_eq!(
            pair.a.from_fabric(pair.now, &mut buf, at),
            Verdict::Dropped(reason),
            "{name}"
        );
        assert_eq!(pair.a.stats.drops().get(reason), 1, "{name}");
    }
}

#[test]
fn replays_and_forgeries_from_the_transit_are_dropped_by_reason() {
    let mut pair = fixture::pair().expect("pair");
    let mut buf = vec![0u8; BUF];
    let at = fixture::receive(&mut buf, &fixture::vxlan_payload(200));
    let datagram = fixture::fabric_to_transit(&mut pair, &mut buf, at).expect("sealed");
    let sealed = buf[datagram].to_vec();
    let mut deliver = |bytes: &[u8]| {
        let at = fixture::receive(&mut buf, bytes);
        pair.b.from_transit(pair.now, 0, pair.peer, &mut buf, at)
    };
    assert!(matches!(deliver(&sealed), Verdict::Fabric { .. }));
    assert_eq!(deliver(&sealed), Verdict::Dropped(DropReason::Replay));
    let mut forged = sealed.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    forged[8] ^= 0x10; // a fresh counter, so the replay check passes and the tag fails
    assert_eq!(deliver(&forged), Verdict::Dropped(DropReason::BadAuth));
    assert_eq!(
        deliver(&sealed[..20]),
        Verdict::Dropped(DropReason::WgBadLength)
    );
    assert_eq!(
        deliver(&[9, 0, 0, 0, 1, 2]),
        Verdict::Dropped(DropReason::WgUnknownType)
    );
    let mut unknown = sealed.clone();
    unknown[4] ^= 0xff;
    unknown[6] ^= 0xff;
    assert_eq!(
        deliver(&unknown),
        Verdict::Dropped(DropReason::WgUnknownReceiver)
    );
    // Replays and forgeries belong to the tunnel; an unknown receiver to nobody.
    assert_eq!(pair.b.stats.tunnel_drops(0).get(DropReason::Replay), 1);
    assert_eq!(pair.b.stats.tunnel_drops(0).get(DropReason::BadAuth), 1);
    assert_eq!(pair.b.stats.drops().get(DropReason::WgUnknownReceiver), 1);
}

#[test]
fn handshakes_go_to_the_owner() {
    let mut pair = fixture::pair().expect("pair");
    let mut buf = vec![0u8; BUF];
    let mut init = vec![0u8; 148];
    init[0] = 1;
    let at = fixture::receive(&mut buf, &init);
    assert_eq!(
        pair.b.from_transit(pair.now, 0, pair.peer, &mut buf, at),
        Verdict::Consumed
    );
    let parcel = pair.b.engine().handoff().recv().expect("a parcel");
    assert_eq!(
        (parcel.kind, parcel.src, parcel.bytes()),
        (ParcelKind::Handshake, pair.peer, &init[..])
    );
    assert_eq!(pair.b.stats.get(WorkerCounter::HandedToOwner), 1);
}
