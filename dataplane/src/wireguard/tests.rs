//! Tunnel-level tests: two of our peers over a simulated network with a simulated clock.
//! Deterministic: fixed seeds, no sleeps, time moves only when a test says so.

#![allow(clippy::unwrap_used)]

use core::net::SocketAddr;
use core::time::Duration;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::CryptoRngCore;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::messages::{self, DATA_HEADER_LEN, INITIATION_LEN, RESPONSE_LEN};
use super::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX, ZERO_KEYS_AFTER,
};
use super::*;

const T0: u64 = 1_700_000_000;

fn rng(seed: u64) -> Box<dyn CryptoRngCore + Send> {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const A_KEY: [u8; 32] = [0x0a; 32];
const B_KEY: [u8; 32] = [0x0b; 32];

fn tunnel_pair(psk: Option<[u8; 32]>, tweak: impl Fn(&mut PeerConfig)) -> (Tunnel, Tunnel) {
    let mut ca = PeerConfig::new(public_key(&B_KEY));
    ca.preshared_key = psk;
    tweak(&mut ca);
    let mut cb = PeerConfig::new(public_key(&A_KEY));
    cb.preshared_key = psk;
    tweak(&mut cb);
    (
        Tunnel::new(A_KEY, ca, 1, rng(1)).unwrap(),
        Tunnel::new(B_KEY, cb, 2, rng(2)).unwrap(),
    )
}

/// An IPv4 packet of `len` bytes carrying `seq` at offset 20.
fn ip_packet(seq: u32, len: usize) -> Vec<u8> {
    let len = len.max(24);
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[20..24].try_into().unwrap())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    fn i(self) -> usize {
        self as usize
    }
}

/// A datagram on the wire: arrival time, sequence (FIFO tie-break), receiver, bytes.
type InFlight = (Instant, u64, Side, Vec<u8>);

/// Two tunnels joined by a network with a fixed one-way latency (FIFO per direction).
struct Sim {
    now: Instant,
    t: [Tunnel; 2],
    addrs: [SocketAddr; 2],
    latency: Duration,
    wire: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Inner packets delivered to each side.
    delivered: [Vec<Vec<u8>>; 2],
    /// Datagrams sent by each side, by message type (1..=4).
    sent: [[u64; 5]; 2],
    /// Drop everything sent towards a side.
    blackhole: [bool; 2],
    /// Errors returned by handle_datagram on each side.
    errors: [Vec<Error>; 2],
}

impl Sim {
    fn new(a: Tunnel, b: Tunnel) -> Self {
        Self {
            now: Instant::from_secs(T0),
            t: [a, b],
            addrs: [addr("192.0.2.1:51820"), addr("198.51.100.2:51820")],
            latency: Duration::from_millis(20),
            wire: BinaryHeap::new(),
            seq: 0,
            delivered: [Vec::new(), Vec::new()],
            sent: [[0; 5]; 2],
            blackhole: [false; 2],
            errors: [Vec::new(), Vec::new()],
        }
    }

    fn tunnel(&mut self, s: Side) -> &mut Tunnel {
        &mut self.t[s.i()]
    }

    fn transmit(&mut self, from: Side, bytes: &[u8]) {
        let kind = usize::from(bytes[0]).min(4);
        self.sent[from.i()][kind] += 1;
        self.seq += 1;
        let to = from.other();
        if !self.blackhole[to.i()] {
            self.wire.push(Reverse((
                self.now + self.latency,
                self.seq,
                to,
                bytes.to_vec(),
            )));
        }
    }

    /// Sends whatever `tick` has for side `s`.
    fn flush(&mut self, s: Side) {
        let mut out = vec![0u8; 2048];
        for _ in 0..1000 {
            let now = self.now;
            match self.tunnel(s).tick(now, &mut out).unwrap() {
                Some(n) => {
                    let d = out[..n].to_vec();
                    self.transmit(s, &d);
                }
                None => return,
            }
        }
        panic!("tick never ran dry");
    }

    /// The application on side `s` sends an inner packet.
    fn app_send(&mut self, s: Side, packet: &[u8]) {
        let mut buf = vec![0u8; packet.len() + 64];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + packet.len()].copy_from_slice(packet);
        let now = self.now;
        match self
            .tunnel(s)
            .encapsulate(now, &mut buf, packet.len())
            .unwrap()
        {
            Encapsulated::Ready(n) => self.transmit(s, &buf[..n]),
            Encapsulated::Staged => {}
        }
        self.flush(s);
    }

    /// Hands a datagram to side `to` as if it came from the other side.
    fn receive(&mut self, to: Side, mut datagram: Vec<u8>) -> Result<Action, Error> {
        let mut out = vec![0u8; 256];
        let now = self.now;
        let src = self.addrs[to.other().i()];
        let r = self
            .tunnel(to)
            .handle_datagram(now, src, &mut datagram, &mut out);
        match r {
            Ok(Action::SendResponse(n) | Action::SendCookieReply(n)) => {
                self.transmit(to, &out[..n]);
            }
            Ok(Action::Deliver { offset, len }) => {
                self.delivered[to.i()].push(datagram[offset..offset + len].to_vec());
            }
            Ok(_) => {}
            Err(e) => self.errors[to.i()].push(e),
        }
        self.flush(to);
        r
    }

    fn next_event(&self) -> Option<Instant> {
        let wire = self.wire.peek().map(|Reverse((t, ..))| *t);
        [wire, self.t[0].next_deadline(), self.t[1].next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the network and both tunnels' timers up to `until`.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            match self.next_event() {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    while let Some(Reverse((t, ..))) = self.wire.peek() {
                        if *t > self.now {
                            break;
                        }
                        let Reverse((_, _, to, d)) = self.wire.pop().unwrap();
                        let _ = self.receive(to, d);
                    }
                    self.flush(Side::A);
                    self.flush(Side::B);
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
        panic!("simulation did not settle");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn initiations(&self, s: Side) -> u64 {
        self.sent[s.i()][1]
    }

    fn keepalives_sent(&self, s: Side) -> u64 {
        self.t[s.i()].stats().keepalives_sent
    }
}

fn established_sim() -> Sim {
    let (a, b) = tunnel_pair(None, |_| {});
    let mut sim = Sim::new(a, b);
    sim.app_send(Side::A, &ip_packet(0, 60));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.delivered[1].len(), 1);
    sim
}

// ----- handshake and data -----

#[test]
fn full_handshake_and_data_both_ways() {
    for psk in [None, Some([0x77u8; 32])] {
        let (a, b) = tunnel_pair(psk, |_| {});
        let mut sim = Sim::new(a, b);
        assert_eq!(sim.t[0].state(sim.now), TunnelState::Idle);

        // No session: the packet waits and an initiation goes out.
        sim.app_send(Side::A, &ip_packet(1, 100));
        assert_eq!(sim.initiations(Side::A), 1);
        assert_eq!(sim.t[0].state(sim.now), TunnelState::Connecting);

        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.t[0].state(sim.now), TunnelState::Established);
        assert_eq!(sim.sent[1][2], 1, "one response");
        assert_eq!(sim.delivered[1].len(), 1, "the staged packet arrived");
        assert_eq!(seq_of(&sim.delivered[1][0]), 1);
        assert_eq!(sim.delivered[1][0].len(), 100, "padding stripped");
        // The staged packet confirmed the session: no extra keepalive was needed.
        assert_eq!(sim.keepalives_sent(Side::A), 0);
        // B's session was confirmed by it and B can send at once.
        assert_eq!(sim.t[1].state(sim.now), TunnelState::Established);
        sim.app_send(Side::B, &ip_packet(2, 1420));
        sim.app_send(Side::A, &ip_packet(3, 1));
        sim.run_for(Duration::from_millis(100));
        assert_eq!(seq_of(&sim.delivered[0][0]), 2);
        assert_eq!(sim.delivered[0][0].len(), 1420);
        assert_eq!(seq_of(&sim.delivered[1][1]), 3);
        assert!(sim.errors.iter().all(Vec::is_empty), "{:?}", sim.errors);
        assert_eq!(sim.t[0].stats().handshakes_completed, 1);
        assert_eq!(sim.t[1].stats().handshakes_completed, 1);
        assert_eq!(sim.t[0].stats().tx_packets, 2);
        assert_eq!(sim.t[1].stats().rx_packets, 2);
    }
}

#[test]
fn handshake_without_staged_data_confirms_with_a_keepalive() {
    let (a, b) = tunnel_pair(None, |_| {});
    let mut sim = Sim::new(a, b);
    let now = sim.now;
    sim.tunnel(Side::A).initiate_handshake(now);
    sim.flush(Side::A);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.keepalives_sent(Side::A), 1);
    assert_eq!(sim.t[1].stats().keepalives_received, 1);
    // The keepalive moved B's session from next to current.
    let [_, current, next, _] = sim.t[1].session_indices();
    assert!(current.is_some() && next.is_none());
}

#[test]
fn psk_mismatch_never_establishes() {
    let mut ca = PeerConfig::new(public_key(&B_KEY));
    ca.preshared_key = Some([1; 32]);
    let mut cb = PeerConfig::new(public_key(&A_KEY));
    cb.preshared_key = Some([2; 32]);
    let a = Tunnel::new(A_KEY, ca, 1, rng(1)).unwrap();
    let b = Tunnel::new(B_KEY, cb, 2, rng(2)).unwrap();
    let mut sim = Sim::new(a, b);
    sim.app_send(Side::A, &ip_packet(1, 60));
    sim.run_for(Duration::from_secs(2));
    assert_ne!(sim.t[0].state(sim.now), TunnelState::Established);
    assert!(sim.errors[0].contains(&Error::HandshakeDecrypt));
    assert_eq!(sim.t[0].stats().drops(DropReason::HandshakeDecrypt), 1);
}

#[test]
fn simultaneous_initiations_both_establish() {
    let (a, b) = tunnel_pair(None, |_| {});
    let mut sim = Sim::new(a, b);
    sim.app_send(Side::A, &ip_packet(1, 60));
    sim.app_send(Side::B, &ip_packet(2, 60));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.delivered[0].len(), 1);
    assert_eq!(sim.delivered[1].len(), 1);
    assert!(sim.errors.iter().all(Vec::is_empty), "{:?}", sim.errors);
    for i in 0..50u32 {
        sim.app_send(Side::A, &ip_packet(10 + i, 60));
        sim.app_send(Side::B, &ip_packet(10 + i, 60));
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!((sim.delivered[0].len(), sim.delivered[1].len()), (51, 51));
}

// ----- replay and authentication -----

/// A's initiation bytes, produced at `at`.
fn initiation_from(a: &mut Tunnel, at: Instant) -> Vec<u8> {
    a.initiate_handshake(at);
    let mut out = [0u8; 256];
    let n = a.tick(at, &mut out).unwrap().unwrap();
    assert_eq!(n, INITIATION_LEN);
    out[..n].to_vec()
}

#[test]
fn replayed_initiation_is_refused_by_its_timestamp() {
    let (mut a, mut b) = tunnel_pair(None, |_| {});
    let src = addr("192.0.2.1:1");
    let t1 = Instant::from_secs(T0);
    let first = initiation_from(&mut a, t1);
    let second = initiation_from(&mut a, t1 + Duration::from_secs(6));
    let mut out = [0u8; 256];

    // The newer one first, then the older: refused (timestamp not newer).
    let t = t1 + Duration::from_secs(7);
    assert!(matches!(
        b.handle_datagram(t, src, &mut second.clone(), &mut out),
        Ok(Action::SendResponse(RESPONSE_LEN))
    ));
    let t = t + Duration::from_secs(1);
    assert_eq!(
        b.handle_datagram(t, src, &mut first.clone(), &mut out),
        Err(Error::ReplayedInitiation)
    );
    // The same one again: refused too, however late.
    let t = t + Duration::from_secs(100);
    assert_eq!(
        b.handle_datagram(t, src, &mut second.clone(), &mut out),
        Err(Error::ReplayedInitiation)
    );
    assert_eq!(b.stats().drops(DropReason::ReplayedInitiation), 2);
    assert_eq!(b.stats().responses_sent, 1);
}

#[test]
fn initiation_flood_is_refused() {
    // Two initiators with A's key (A restarted): timestamps one granule apart.
    let (mut a1, mut b) = tunnel_pair(None, |_| {});
    let (mut a2, _) = tunnel_pair(None, |_| {});
    let src = addr("192.0.2.1:1");
    let t = Instant::from_secs(T0);
    let i1 = initiation_from(&mut a1, t);
    let i2 = initiation_from(&mut a2, t + Duration::from_millis(17));
    let mut out = [0u8; 256];
    assert!(b.handle_datagram(t, src, &mut i1.clone(), &mut out).is_ok());
    assert_eq!(
        b.handle_datagram(
            t + Duration::from_millis(19),
            src,
            &mut i2.clone(),
            &mut out
        ),
        Err(Error::InitiationFlood)
    );
    // The refused one did not consume its timestamp: it is accepted once the gap is over.
    assert!(b
        .handle_datagram(
            t + Duration::from_millis(20),
            src,
            &mut i2.clone(),
            &mut out
        )
        .is_ok());
}

#[test]
fn wrong_keys_are_refused_and_counted() {
    let (mut a, mut b) = tunnel_pair(None, |_| {});
    let src = addr("192.0.2.1:1");
    let t = Instant::from_secs(T0);
    let mut out = [0u8; 256];

    // C knows B's public key but is not B's peer.
    let mut c = Tunnel::new([0x0c; 32], PeerConfig::new(public_key(&B_KEY)), 3, rng(3)).unwrap();
    let mut init = initiation_from(&mut c, t);
    assert_eq!(
        b.handle_datagram(t, src, &mut init, &mut out),
        Err(Error::UnknownPeer)
    );

    // An initiation for someone else fails mac1 before any Diffie-Hellman.
    let mut d = Tunnel::new(
        [0x0d; 32],
        PeerConfig::new(public_key(&[0x0e; 32])),
        4,
        rng(4),
    )
    .unwrap();
    let mut init = initiation_from(&mut d, t);
    let dh_before = b.stats().handshake_dh;
    assert_eq!(
        b.handle_datagram(t, src, &mut init, &mut out),
        Err(Error::InvalidMac1)
    );
    assert_eq!(b.stats().handshake_dh, dh_before);

    // A data message under a session B does not have.
    let mut init = initiation_from(&mut a, t);
    let Ok(Action::SendResponse(n)) = b.handle_datagram(t, src, &mut init, &mut out) else {
        panic!("no response");
    };
    let mut resp = out[..n].to_vec();
    assert_eq!(
        a.handle_datagram(t, src, &mut resp, &mut out),
        Ok(Action::Accepted)
    );
    let n = a.tick(t, &mut out).unwrap().unwrap();
    let mut keepalive = out[..n].to_vec();
    keepalive[4] ^= 0x80; // another receiver index
    assert!(matches!(
        b.handle_datagram(t, src, &mut keepalive, &mut out),
        Err(Error::UnknownIndex(_))
    ));
    keepalive[4] ^= 0x80;
    keepalive[20] ^= 1; // tampered ciphertext
    assert_eq!(
        b.handle_datagram(t, src, &mut keepalive, &mut out),
        Err(Error::TransportDecrypt)
    );
    assert_eq!(b.stats().drops(DropReason::UnknownPeer), 1);
    assert_eq!(b.stats().drops(DropReason::InvalidMac1), 1);
    assert_eq!(b.stats().drops(DropReason::UnknownIndex), 1);
    assert_eq!(b.stats().drops(DropReason::TransportDecrypt), 1);
}

#[test]
fn replayed_data_is_refused() {
    let mut sim = established_sim();
    // Capture a data message by sealing directly.
    let p = ip_packet(9, 80);
    let mut buf = vec![0u8; 200];
    buf[16..16 + p.len()].copy_from_slice(&p);
    let now = sim.now;
    let Encapsulated::Ready(n) = sim
        .tunnel(Side::A)
        .encapsulate(now, &mut buf, p.len())
        .unwrap()
    else {
        panic!()
    };
    let msg = buf[..n].to_vec();
    assert!(matches!(
        sim.receive(Side::B, msg.clone()),
        Ok(Action::Deliver { .. })
    ));
    assert_eq!(sim.receive(Side::B, msg.clone()), Err(Error::Replay(1)));
    assert_eq!(sim.t[1].stats().drops(DropReason::Replay), 1);
}

#[test]
fn malformed_datagrams_get_typed_errors() {
    let mut sim = established_sim();
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::BadLength),
        (vec![1, 0, 0], DropReason::BadLength),
        (vec![9, 0, 0, 0, 1, 2, 3], DropReason::UnknownType),
        (vec![1, 1, 0, 0], DropReason::UnknownType),
        (vec![1, 0, 0, 0], DropReason::BadLength),
        (vec![1; INITIATION_LEN - 1], DropReason::UnknownType),
        (
            [&[1u8, 0, 0, 0][..], &[0u8; INITIATION_LEN - 4]].concat(),
            DropReason::InvalidMac1,
        ),
        (
            [&[1u8, 0, 0, 0][..], &[0u8; INITIATION_LEN + 1 - 4]].concat(),
            DropReason::BadLength,
        ),
        (
            [&[2u8, 0, 0, 0][..], &[0u8; RESPONSE_LEN - 5]].concat(),
            DropReason::BadLength,
        ),
        (
            [&[2u8, 0, 0, 0][..], &[0u8; RESPONSE_LEN - 4]].concat(),
            DropReason::UnexpectedHandshake,
        ),
        (
            [&[3u8, 0, 0, 0][..], &[0u8; 59]].concat(),
            DropReason::BadLength,
        ),
        (
            [&[3u8, 0, 0, 0][..], &[0u8; 60]].concat(),
            DropReason::UnexpectedHandshake,
        ),
        (
            [&[4u8, 0, 0, 0][..], &[0u8; 27]].concat(),
            DropReason::BadLength,
        ),
        (
            [&[4u8, 0, 0, 0][..], &[0u8; 28]].concat(),
            DropReason::UnknownIndex,
        ),
    ];
    for (bytes, reason) in cases {
        let before = sim.t[1].stats().drops(reason);
        let r = sim.receive(Side::B, bytes.clone());
        let e = r.expect_err(&format!("{bytes:?} accepted"));
        assert_eq!(e.reason(), reason, "{bytes:?}: {e}");
        assert_eq!(sim.t[1].stats().drops(reason), before + 1);
    }
    // A data message with a valid session but a non-IP payload.
    let now = sim.now;
    let mut buf = vec![0u8; 100];
    buf[16..20].copy_from_slice(&[0x10, 0, 0, 0]);
    let Encapsulated::Ready(n) = sim.tunnel(Side::A).encapsulate(now, &mut buf, 4).unwrap() else {
        panic!()
    };
    assert_eq!(
        sim.receive(Side::B, buf[..n].to_vec()),
        Err(Error::InvalidInnerPacket)
    );
}

// ----- cookies and load -----

#[test]
fn under_load_no_dh_before_a_valid_mac2() {
    let (mut a, mut b) = tunnel_pair(None, |_| {});
    let src = addr("203.0.113.9:4444");
    let mut t = Instant::from_secs(T0);
    let mut out = [0u8; 256];
    b.set_under_load(t);

    // Garbage behind a valid mac1: under load it gets a cookie reply, not a decryption
    // attempt, so no Diffie-Hellman was spent on it.
    let mut forged = initiation_from(&mut a, t);
    forged[8..40].copy_from_slice(&[0x42; 32]);
    let mut maker = cookie::CookieMaker::new(&public_key(&B_KEY));
    maker.stamp(t, &mut forged).unwrap();
    assert!(matches!(
        b.handle_datagram(t, src, &mut forged, &mut out),
        Ok(Action::SendCookieReply(64))
    ));
    assert_eq!(b.stats().handshake_dh, 0);

    // A real initiation without a cookie: the same.
    t = t + Duration::from_secs(6);
    b.set_under_load(t);
    let mut init = initiation_from(&mut a, t);
    let Ok(Action::SendCookieReply(n)) = b.handle_datagram(t, src, &mut init, &mut out) else {
        panic!("expected a cookie reply");
    };
    assert_eq!(b.stats().handshake_dh, 0);
    assert_eq!(b.stats().cookie_replies_sent, 2);

    // A takes the cookie; its retry carries mac2 and is answered.
    let mut reply = out[..n].to_vec();
    assert_eq!(
        a.handle_datagram(t, src, &mut reply, &mut out),
        Ok(Action::CookieStored)
    );
    assert!(a.has_cookie(t));
    let deadline = a.next_deadline().unwrap();
    assert!(
        deadline >= t + REKEY_TIMEOUT && deadline < t + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX
    );
    t = deadline;
    let n = a.tick(t, &mut out).unwrap().unwrap();
    assert_eq!(n, INITIATION_LEN);
    assert_ne!(&out[132..148], &[0u8; 16], "mac2 present");
    let mut retry = out[..n].to_vec();
    b.set_under_load(t);
    assert!(matches!(
        b.handle_datagram(t, src, &mut retry, &mut out),
        Ok(Action::SendResponse(_))
    ));
    assert_eq!(b.stats().handshake_dh, 1);

    // With a valid mac2 but a corrupt body, the DH is done and fails: the cookie only buys
    // the right to be processed.
    let mut bad = retry.clone();
    bad[50] ^= 1;
    a.maker_for_tests().stamp(t, &mut bad).unwrap();
    let t = t + Duration::from_secs(1);
    b.set_under_load(t);
    assert_eq!(
        b.handle_datagram(t, src, &mut bad, &mut out),
        Err(Error::HandshakeDecrypt)
    );
    assert_eq!(b.stats().handshake_dh, 2);
}

#[test]
fn load_switches_on_by_itself_and_off_after_a_second() {
    let (_, mut b) = tunnel_pair(None, |c| c.under_load_threshold = 4);
    let src = addr("203.0.113.9:4444");
    let t = Instant::from_secs(T0);
    let mut out = [0u8; 256];
    // A stream of initiations from different (restarted) initiators with A's key.
    let mut answers = Vec::new();
    for i in 0..8u64 {
        let (mut a, _) = tunnel_pair(None, |_| {});
        let at = t + Duration::from_millis(30 * i);
        let mut init = initiation_from(&mut a, at);
        answers.push(b.handle_datagram(at, src, &mut init, &mut out));
    }
    let cookies = answers
        .iter()
        .filter(|r| matches!(r, Ok(Action::SendCookieReply(_))))
        .count();
    assert!(cookies >= 3, "{answers:?}");
    assert!(matches!(answers[0], Ok(Action::SendResponse(_))));
    assert!(b.is_under_load(t + Duration::from_millis(300)));
    assert!(!b.is_under_load(t + Duration::from_secs(2)));
}

// ----- timers -----

#[test]
fn handshake_retries_with_jitter_then_gives_up_after_rekey_attempt_time() {
    let (a, b) = tunnel_pair(None, |_| {});
    let mut sim = Sim::new(a, b);
    sim.blackhole[1] = true; // B never hears A
    let start = sim.now;
    sim.app_send(Side::A, &ip_packet(1, 60));
    let mut sent_at = vec![start];
    let mut last = sim.initiations(Side::A);
    let horizon = start + Duration::from_secs(200);
    while let Some(next) = sim.t[0].next_deadline().filter(|t| *t <= horizon) {
        sim.run_until(next);
        if sim.initiations(Side::A) > last {
            last = sim.initiations(Side::A);
            sent_at.push(sim.now);
        }
    }
    let gaps: Vec<Duration> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(!gaps.is_empty());
    for g in &gaps {
        assert!(
            *g >= REKEY_TIMEOUT && *g < REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX,
            "{g:?}"
        );
    }
    assert!(gaps.iter().any(|g| *g != gaps[0]), "jitter varies");
    let last_sent = *sent_at.last().unwrap();
    assert!(
        last_sent - start < REKEY_ATTEMPT_TIME,
        "no attempt after 90 s"
    );
    assert!(last_sent - start >= REKEY_ATTEMPT_TIME - REKEY_TIMEOUT - REKEY_TIMEOUT_JITTER_MAX);
    assert_eq!(sent_at.len(), 18, "{gaps:?}");
    assert_eq!(sim.t[0].state(sim.now), TunnelState::Expired);
    assert_eq!(
        sim.t[0].stats().drops(DropReason::StagedOverflow),
        1,
        "the staged packet"
    );
    // After giving up, only the key-wiping timer is left.
    let z = sim.t[0].timers().zero_key_material.unwrap();
    assert!(z >= start + REKEY_ATTEMPT_TIME + ZERO_KEYS_AFTER - Duration::from_secs(6));
    assert!(sim.t[0].has_key_material());
    sim.run_until(z);
    assert!(!sim.t[0].has_key_material(), "keys zeroed");
    assert_eq!(sim.t[0].next_deadline(), None);
}

#[test]
fn keepalive_after_receiving_data_with_nothing_to_send_back() {
    let mut sim = established_sim();
    let base = sim.keepalives_sent(Side::B);
    // B received data at ~T0 and sent nothing back: a keepalive 10 s later, not before.
    let ka = sim.t[1].timers().send_keepalive.unwrap();
    sim.run_until(ka - Duration::from_millis(1));
    assert_eq!(sim.keepalives_sent(Side::B), base);
    sim.run_until(ka);
    assert_eq!(sim.keepalives_sent(Side::B), base + 1);
    assert_eq!(sim.t[1].timers().send_keepalive, None);

    // If B answers with data within 10 s, no keepalive.
    sim.app_send(Side::A, &ip_packet(5, 60));
    sim.run_for(Duration::from_secs(1));
    sim.app_send(Side::B, &ip_packet(6, 60));
    sim.run_for(KEEPALIVE_TIMEOUT * 2);
    assert_eq!(sim.keepalives_sent(Side::B), base + 1);
}

#[test]
fn another_keepalive_when_data_kept_coming() {
    let mut sim = established_sim();
    let base = sim.keepalives_sent(Side::B);
    // Data at 0 s arms the keepalive; data at 5 s asks for another one after it.
    sim.run_for(Duration::from_secs(5));
    sim.app_send(Side::A, &ip_packet(7, 60));
    sim.run_for(Duration::from_secs(6));
    assert_eq!(sim.keepalives_sent(Side::B), base + 1);
    sim.run_for(KEEPALIVE_TIMEOUT);
    assert_eq!(sim.keepalives_sent(Side::B), base + 2);
    sim.run_for(KEEPALIVE_TIMEOUT * 3);
    assert_eq!(sim.keepalives_sent(Side::B), base + 2);
}

#[test]
fn new_handshake_when_sent_data_gets_no_answer() {
    let mut sim = established_sim();
    sim.run_for(Duration::from_secs(20)); // let keepalives settle
    let before = sim.initiations(Side::A);
    sim.blackhole[0] = true; // A stops hearing B
    let sent = sim.now;
    sim.app_send(Side::A, &ip_packet(8, 60));
    let deadline = sim.t[0].timers().new_handshake.unwrap();
    assert!(deadline >= sent + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    assert!(deadline < sent + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
    sim.run_until(deadline - Duration::from_millis(1));
    assert_eq!(sim.initiations(Side::A), before);
    sim.run_until(deadline);
    assert_eq!(sim.initiations(Side::A), before + 1);
}

#[test]
fn rekey_after_time_is_the_initiators_on_send() {
    let mut sim = established_sim();
    let before_a = sim.initiations(Side::A);
    // Keep the session alive with traffic from B only (B is the responder: it never rekeys
    // on time, however old its session).
    sim.run_for(REKEY_AFTER_TIME - Duration::from_secs(2));
    sim.app_send(Side::B, &ip_packet(1, 60));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.initiations(Side::B), 0);
    assert_eq!(sim.initiations(Side::A), before_a);
    // A's session passes 120 s: its next data triggers a handshake.
    sim.run_for(Duration::from_secs(2));
    sim.app_send(Side::A, &ip_packet(2, 60));
    assert_eq!(sim.initiations(Side::A), before_a + 1);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.t[0].stats().handshakes_completed, 2);
    assert_eq!(sim.initiations(Side::B), 0);
}

#[test]
fn last_minute_rekey_on_receive_and_reject_after_time() {
    let (a, b) = tunnel_pair(None, |_| {});
    let mut sim = Sim::new(a, b);
    sim.app_send(Side::A, &ip_packet(0, 60));
    sim.run_for(Duration::from_millis(100));
    let created = sim.t[0].last_handshake().unwrap();
    let before = sim.initiations(Side::A);

    // Only B sends: A (initiator) gets nothing to send until 165 s, then rekeys on receive.
    sim.run_until(created + Duration::from_secs(164));
    sim.app_send(Side::B, &ip_packet(1, 60));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.initiations(Side::A), before);
    // Block the handshake so the session keeps aging.
    sim.blackhole[1] = true;
    sim.run_until(created + Duration::from_secs(166));
    sim.app_send(Side::B, &ip_packet(2, 60));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        sim.initiations(Side::A),
        before + 1,
        "last-minute handshake"
    );
    sim.app_send(Side::B, &ip_packet(3, 60));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.initiations(Side::A), before + 1, "only once");

    // Past 180 s the session is refused both ways.
    // (B derived its session one latency before A.)
    sim.run_until(created + REJECT_AFTER_TIME - Duration::from_millis(50));
    let now = sim.now;
    let mut buf = vec![0u8; 200];
    buf[16..76].copy_from_slice(&ip_packet(4, 60));
    let Encapsulated::Ready(n) = sim.tunnel(Side::B).encapsulate(now, &mut buf, 60).unwrap() else {
        panic!("B can still send at 179.97 s");
    };
    sim.now = created + REJECT_AFTER_TIME;
    assert_eq!(
        sim.receive(Side::A, buf[..n].to_vec()),
        Err(Error::SessionExpired)
    );
    assert_ne!(sim.t[0].state(sim.now), TunnelState::Established);
    let now = sim.now;
    assert_eq!(
        sim.tunnel(Side::A).encapsulate(now, &mut buf, 60).unwrap(),
        Encapsulated::Staged
    );
}

#[test]
fn message_limits_trigger_rekey_then_refuse() {
    let limits = Limits {
        rekey_after_messages: 5,
        reject_after_messages: 10,
    };
    let (a, b) = tunnel_pair(None, |c| c.limits = limits);
    let mut sim = Sim::new(a, b);
    sim.app_send(Side::A, &ip_packet(0, 60));
    // Past REKEY_TIMEOUT, so a rekey is not rate-limited by the first handshake.
    sim.run_for(REKEY_TIMEOUT + Duration::from_secs(1));
    // Block responses so the rekey cannot complete and the old session keeps counting.
    sim.blackhole[0] = true;
    let before = sim.initiations(Side::A);
    let now = sim.now;
    let mut results = Vec::new();
    for i in 1..12u32 {
        let mut buf = vec![0u8; 200];
        buf[16..76].copy_from_slice(&ip_packet(i, 60));
        results.push(sim.tunnel(Side::A).encapsulate(now, &mut buf, 60).unwrap());
        if i == 5 {
            assert_eq!(sim.t[0].current_session().unwrap().1, 6);
        }
    }
    // Counters 1..=9 were sealed (10 is the reject limit); the rest waited.
    let ready = results
        .iter()
        .filter(|r| matches!(r, Encapsulated::Ready(_)))
        .count();
    assert_eq!(ready, 9);
    assert_eq!(results[9], Encapsulated::Staged);
    sim.flush(Side::A);
    assert_eq!(
        sim.initiations(Side::A),
        before + 1,
        "rekey after 5 messages"
    );
}

#[test]
fn persistent_keepalive_brings_the_tunnel_up_and_keeps_it_warm() {
    let every = Duration::from_secs(25);
    let (a, b) = tunnel_pair(None, |c| c.persistent_keepalive = Some(every));
    let mut sim = Sim::new(a, b);
    // The first tick starts a handshake on both sides by itself.
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.t[0].state(sim.now), TunnelState::Established);
    assert_eq!(sim.t[1].state(sim.now), TunnelState::Established);
    let (ka, kb) = (sim.keepalives_sent(Side::A), sim.keepalives_sent(Side::B));
    sim.run_for(every * 4 + Duration::from_secs(1));
    // One keepalive per interval each way (nothing else is sent, no rekey within 101 s).
    assert_eq!(sim.keepalives_sent(Side::A) - ka, 4);
    assert_eq!(sim.keepalives_sent(Side::B) - kb, 4);
    // Data resets the interval.
    let deadline = sim.t[0].timers().persistent_keepalive.unwrap();
    sim.app_send(Side::A, &ip_packet(1, 60));
    assert_eq!(
        sim.t[0].timers().persistent_keepalive,
        Some(sim.now + every)
    );
    assert!(sim.now + every > deadline);
}

#[test]
fn keys_are_zeroed_after_three_reject_after_times_without_a_new_session() {
    let mut sim = established_sim();
    let derived = sim.t[0].last_handshake().unwrap();
    assert!(sim.t[0].has_key_material() && sim.t[1].has_key_material());
    sim.run_until(derived + ZERO_KEYS_AFTER - Duration::from_secs(1));
    assert!(sim.t[0].has_key_material());
    sim.run_until(derived + ZERO_KEYS_AFTER + Duration::from_secs(1));
    assert!(!sim.t[0].has_key_material());
    assert!(!sim.t[1].has_key_material());
    assert_eq!(sim.t[0].state(sim.now), TunnelState::Expired);
    assert_eq!(sim.t[0].session_indices(), [None; 4]);
}

// ----- rekey under load: zero loss -----

fn continuous_traffic(simultaneous_start: bool, latency: Duration) {
    let (a, b) = tunnel_pair(None, |_| {});
    let mut sim = Sim::new(a, b);
    sim.latency = latency;
    let start = sim.now;
    let interval = Duration::from_millis(50);
    let total = 12_000u32; // 10 minutes at 20 packets per second each way
    let first_b = if simultaneous_start { 0 } else { 1 };
    let mut next_b = first_b;
    if !simultaneous_start {
        sim.app_send(Side::A, &ip_packet(0, 100));
        sim.run_for(Duration::from_secs(1));
    }
    let first_a = if simultaneous_start { 0 } else { 1 };
    for i in first_a..total {
        let at = start + interval * i;
        sim.run_until(at);
        sim.app_send(Side::A, &ip_packet(i, 100 + (i as usize % 1300)));
        if next_b <= i {
            sim.app_send(Side::B, &ip_packet(next_b, 100));
            next_b += 1;
        }
    }
    sim.run_for(Duration::from_secs(2));

    for (side, got) in sim.delivered.iter().enumerate() {
        let mut seqs: Vec<u32> = got.iter().map(|p| seq_of(p)).collect();
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "side {side}: duplicates");
        let expected = if side == 1 { 0..total } else { first_b..next_b };
        let missing: Vec<u32> = expected
            .filter(|s| seqs.binary_search(s).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "side {side} lost {} packets: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
    }
    assert!(sim.errors.iter().all(Vec::is_empty), "{:?}", sim.errors);
    // 600 s of traffic with REKEY_AFTER_TIME 120 s: at least four rekeys happened.
    let completed = sim.t[0].stats().handshakes_completed + sim.t[1].stats().handshakes_completed;
    assert!(completed >= 2 * 4, "handshakes completed: {completed}");
}

#[test]
fn rekey_under_continuous_traffic_loses_nothing() {
    continuous_traffic(false, Duration::from_millis(20));
}

#[test]
fn rekey_under_continuous_traffic_loses_nothing_with_long_latency() {
    // Latency longer than the send interval: many packets in flight during each rekey.
    continuous_traffic(false, Duration::from_millis(240));
}

#[test]
fn rekey_after_simultaneous_start_loses_nothing() {
    continuous_traffic(true, Duration::from_millis(120));
}

// ----- device dispatch -----

#[test]
fn device_dispatches_by_index_and_by_endpoint() {
    // B's device has two tunnels to A's key over two transits (two A endpoints).
    let mut dev: Device = Device::new(B_KEY, rng(10));
    let ep1 = addr("192.0.2.1:1000");
    let ep2 = addr("192.0.2.2:2000");
    let t1 = dev
        .add_tunnel(PeerConfig::new(public_key(&A_KEY)), Some(ep1), rng(11))
        .unwrap();
    // The second at an id the caller chose (sparse: slots in between stay free).
    let t2 = dev
        .add_tunnel_at(
            TunnelId(40),
            PeerConfig::new(public_key(&A_KEY)),
            Some(ep2),
            rng(12),
        )
        .unwrap();
    assert_eq!(t2, TunnelId(40));
    assert_ne!(t1, t2);
    // A taken id is refused.
    assert!(dev
        .add_tunnel_at(t1, PeerConfig::new(public_key(&A_KEY)), None, rng(15))
        .is_err());
    let mut a1 = Tunnel::new(A_KEY, PeerConfig::new(public_key(&B_KEY)), 5, rng(13)).unwrap();
    let mut a2 = Tunnel::new(A_KEY, PeerConfig::new(public_key(&B_KEY)), 6, rng(14)).unwrap();
    let now = Instant::from_secs(T0);
    let mut out = [0u8; 256];

    for (a, ep, want) in [(&mut a1, ep1, t1), (&mut a2, ep2, t2)] {
        let mut init = initiation_from(a, now);
        let (id, r) = dev.handle_datagram(now, ep, &mut init, &mut out);
        assert_eq!(id, Some(want));
        let Ok(Action::SendResponse(n)) = r else {
            panic!("{r:?}")
        };
        let mut resp = out[..n].to_vec();
        assert_eq!(
            a.handle_datagram(now, ep, &mut resp, &mut out),
            Ok(Action::Accepted)
        );
        // A's keepalive finds its tunnel by receiver index.
        let n = a.tick(now, &mut out).unwrap().unwrap();
        let mut ka = out[..n].to_vec();
        assert_eq!(
            TunnelId::of_index(messages::receiver_index(&ka).unwrap()),
            want
        );
        let (id, r) = dev.handle_datagram(now, ep, &mut ka, &mut out);
        assert_eq!((id, r), (Some(want), Ok(Action::Accepted)));
    }
    assert_eq!(dev.tunnel(t1).unwrap().state(now), TunnelState::Established);
    assert_eq!(dev.tunnel(t2).unwrap().state(now), TunnelState::Established);

    // Data for a removed tunnel is an unknown index, counted by the device.
    let p = ip_packet(1, 60);
    let mut buf = vec![0u8; 200];
    buf[16..76].copy_from_slice(&p);
    let Encapsulated::Ready(n) = a2.encapsulate(now, &mut buf, 60).unwrap() else {
        panic!()
    };
    dev.remove_tunnel(t2);
    let (id, r) = dev.handle_datagram(now, ep2, &mut buf[..n], &mut out);
    assert_eq!(id, None);
    assert!(matches!(r, Err(Error::UnknownIndex(_))));
    assert_eq!(dev.drops(DropReason::UnknownIndex), 1);
    assert_eq!(dev.ids().collect::<Vec<_>>(), vec![t1]);
}

// ----- sessions shared with workers -----

/// B's device with one tunnel to A, handshake done (A initiated), B's session unconfirmed.
fn device_and_peer(now: Instant) -> (Device, TunnelId, Tunnel, SocketAddr) {
    let mut dev: Device = Device::new(B_KEY, rng(20));
    let ep = addr("192.0.2.1:1000");
    let id = dev
        .add_tunnel(PeerConfig::new(public_key(&A_KEY)), Some(ep), rng(21))
        .unwrap();
    let mut a = Tunnel::new(A_KEY, PeerConfig::new(public_key(&B_KEY)), 5, rng(22)).unwrap();
    let mut out = [0u8; 256];
    let mut init = initiation_from(&mut a, now);
    let (_, r) = dev.handle_datagram(now, ep, &mut init, &mut out);
    let Ok(Action::SendResponse(n)) = r else {
        panic!("{r:?}")
    };
    let mut resp = out[..n].to_vec();
    assert_eq!(
        a.handle_datagram(now, ep, &mut resp, &mut out),
        Ok(Action::Accepted)
    );
    (dev, id, a, ep)
}

/// A worker opens the peer's first data message (which confirms the responder's session) and
/// the device absorbs it: the session table workers then use.
fn confirmed_by_first_data(
    dev: &mut Device,
    a: &mut Tunnel,
    now: Instant,
    seq: u32,
) -> crate::wireguard::SessionTable {
    let mut first = sealed_by(a, now, seq);
    dev.session_table().open(now, &mut first).unwrap();
    dev.absorb(now);
    dev.session_table()
}

fn sealed_by(a: &mut Tunnel, now: Instant, seq: u32) -> Vec<u8> {
    let p = ip_packet(seq, 60);
    let mut buf = vec![0u8; 200];
    buf[DATA_HEADER_LEN..DATA_HEADER_LEN + 60].copy_from_slice(&p);
    let Encapsulated::Ready(n) = a.encapsulate(now, &mut buf, 60).unwrap() else {
        panic!("A has a session")
    };
    buf.truncate(n);
    buf
}

#[test]
fn worker_tables_open_and_seal_on_the_devices_sessions() {
    let now = Instant::from_secs(T0);
    let (mut dev, id, mut a, ep) = device_and_peer(now);
    let mut buf = vec![0u8; 200];
    // Nothing confirmed yet: B may not send, so a worker hands the packet to the owner.
    let table = dev.session_table();
    assert_eq!(
        table.seal(now, id, &mut buf, 60).map(|_| ()),
        Err(Error::NoSession)
    );
    // A worker opens A's first data message on B's unconfirmed session, once.
    let mut d = sealed_by(&mut a, now, 7);
    let replay = d.clone();
    assert_eq!(
        table.open(now, &mut d),
        Ok(Opened {
            tunnel: id,
            len: 60
        })
    );
    assert_eq!(seq_of(&d[DATA_HEADER_LEN..]), 7);
    let mut replay2 = replay.clone();
    assert_eq!(table.open(now, &mut replay2), Err(Error::Replay(0)));
    // The owner learns of it, confirms the session, and the next table can send.
    let before = dev.sessions_fingerprint();
    dev.absorb(now);
    assert_ne!(dev.sessions_fingerprint(), before);
    assert_eq!(dev.tunnel(id).unwrap().state(now), TunnelState::Established);
    let table = dev.session_table();
    buf[DATA_HEADER_LEN..DATA_HEADER_LEN + 60].copy_from_slice(&ip_packet(9, 60));
    let (n, to) = table.seal(now, id, &mut buf, 60).unwrap();
    assert_eq!(to, ep);
    let mut out = [0u8; 256];
    let r = a.handle_datagram(now, ep, &mut buf[..n], &mut out);
    assert_eq!(
        r,
        Ok(Action::Deliver {
            offset: DATA_HEADER_LEN,
            len: 60
        })
    );
    assert_eq!(seq_of(&buf[DATA_HEADER_LEN..]), 9);
    // Unknown indices and tunnels are typed errors.
    let mut junk = replay.clone();
    junk[4..8].copy_from_slice(&0xdead_0077u32.to_le_bytes());
    assert!(matches!(
        table.open(now, &mut junk),
        Err(Error::UnknownIndex(_))
    ));
    assert_eq!(
        table.seal(now, TunnelId(9), &mut buf, 60).map(|_| ()),
        Err(Error::UnknownTunnel)
    );
}

#[test]
fn worker_activity_drives_the_owners_timers() {
    let t0 = Instant::from_secs(T0);
    let (mut dev, id, mut a, _) = device_and_peer(t0);
    // A worker received data at t0 and nothing went back: a keepalive is owed 10 s later.
    let table = confirmed_by_first_data(&mut dev, &mut a, t0, 1);
    let ka = dev.tunnel(id).unwrap().timers().send_keepalive;
    assert_eq!(ka, Some(t0 + KEEPALIVE_TIMEOUT));
    let mut out = [0u8; 256];
    let almost = t0 + KEEPALIVE_TIMEOUT - Duration::from_millis(1);
    assert_eq!(dev.tick(almost, &mut out), Ok(None));
    assert_eq!(
        dev.tick(t0 + KEEPALIVE_TIMEOUT, &mut out),
        Ok(Some((id, 32)))
    );
    assert_eq!(dev.tick(t0 + KEEPALIVE_TIMEOUT, &mut out), Ok(None));
    // A worker sends data at t2 and hears nothing back: a new handshake after 15 s + jitter.
    let t2 = t0 + Duration::from_secs(20);
    let mut buf = vec![0u8; 200];
    buf[DATA_HEADER_LEN..DATA_HEADER_LEN + 60].copy_from_slice(&ip_packet(3, 60));
    table.seal(t2, id, &mut buf, 60).unwrap();
    dev.absorb(t2);
    let deadline = dev.tunnel(id).unwrap().timers().new_handshake.unwrap();
    assert!(deadline >= t2 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    assert!(deadline < t2 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
    assert_eq!(
        dev.tick(deadline - Duration::from_millis(1), &mut out),
        Ok(None)
    );
    let sent = dev.tick(deadline, &mut out).unwrap();
    assert_eq!(sent, Some((id, INITIATION_LEN)));
    assert_eq!(out[0], 1, "a handshake initiation");
}

#[test]
fn workers_sealing_at_once_never_reuse_a_counter() {
    let now = Instant::from_secs(T0);
    let (mut dev, id, mut a, ep) = device_and_peer(now);
    let table = confirmed_by_first_data(&mut dev, &mut a, now, 0);
    let sealed: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2u32)
            .map(|w| {
                let table = &table;
                scope.spawn(move || {
                    (0..1000u32)
                        .map(|i| {
                            let mut buf = vec![0u8; 200];
                            buf[DATA_HEADER_LEN..DATA_HEADER_LEN + 60]
                                .copy_from_slice(&ip_packet(w * 1000 + i, 60));
                            let (n, _) = table.seal(now, id, &mut buf, 60).unwrap();
                            buf.truncate(n);
                            buf
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut out = [0u8; 256];
    let mut seqs: Vec<u32> = sealed
        .into_iter()
        .map(|mut d| {
            let r = a.handle_datagram(now, ep, &mut d, &mut out);
            assert_eq!(
                r,
                Ok(Action::Deliver {
                    offset: DATA_HEADER_LEN,
                    len: 60
                })
            );
            seq_of(&d[DATA_HEADER_LEN..])
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..2000).collect::<Vec<_>>());
}

// ----- hostile input -----

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn established_pair() -> (Tunnel, Tunnel, Vec<Vec<u8>>) {
        let sim = {
            let mut sim = established_sim();
            sim.app_send(Side::B, &ip_packet(3, 200));
            sim.run_for(Duration::from_millis(100));
            sim
        };
        let [a, b] = sim.t;
        // Valid messages of every type to mutate.
        let mut samples = Vec::new();
        let (mut a2, _) = tunnel_pair(None, |_| {});
        samples.push(initiation_from(&mut a2, Instant::from_secs(T0 + 3)));
        let mut resp = vec![2u8, 0, 0, 0];
        resp.extend_from_slice(&[0x55; RESPONSE_LEN - 4]);
        samples.push(resp);
        let mut cookie = vec![3u8, 0, 0, 0];
        cookie.extend_from_slice(&[0x66; 60]);
        samples.push(cookie);
        (a, b, samples)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), kind in 0u8..6) {
            let (_, mut b, _) = established_pair();
            let mut d = bytes;
            // Steer part of the cases to valid-looking headers.
            if kind > 0 && !d.is_empty() {
                d[0] = kind;
                for x in d.iter_mut().skip(1).take(3) { *x = 0; }
            }
            let mut out = [0u8; 256];
            let now = Instant::from_secs(T0 + 5);
            let before = b.stats().total_drops();
            match b.handle_datagram(now, addr("192.0.2.7:7"), &mut d, &mut out) {
                Ok(_) => {}
                Err(_) => prop_assert_eq!(b.stats().total_drops(), before + 1),
            }
            let _ = b.tick(now, &mut out);
        }

        #[test]
        fn mutated_valid_messages_never_panic(which in 0usize..3, flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..6), cut in 0usize..200) {
            let (_, mut b, samples) = established_pair();
            let mut d = samples[which].clone();
            for (pos, x) in flips {
                let l = d.len();
                if l > 0 { d[pos % l] ^= x; }
            }
            if cut < d.len() && cut % 3 == 0 { d.truncate(cut); }
            let mut out = [0u8; 256];
            let _ = b.handle_datagram(Instant::from_secs(T0 + 5), addr("192.0.2.7:7"), &mut d, &mut out);
        }
    }
}
