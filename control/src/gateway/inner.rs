//! The gateway's own inner addresses: what it answers inside a tunnel and the probes it sends.
//! Sans-IO: decrypted inner packets in, packets to encrypt out.
//!
//! - ICMP and ICMPv6 echo requests to our inner addresses are answered;
//! - UDP to our echo port is STAMP (RFC 8762), answered by the tunnel's stateful reflector;
//! - STAMP replies from the peer's echo port to [`PROBE_PORT`], and ICMP echo replies carrying
//!   our identifier, are answers to our probes.
//!
//! Anything else is not for the gateway itself (forwarding is the pipeline's job) and is
//! counted as such.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use gatewan_dataplane::wire::{icmp, ip_proto, ipv4, ipv6, udp};

use crate::probe::ntp::NtpTimestamp;
use crate::probe::stamp::{self, ReflectorPacket, SenderPacket};
use crate::probe::Reflector;

/// The UDP port our STAMP probes leave from (on the tunnel's inner address); replies come back
/// to it. Distinct from the echo port, so a test packet and a reply are never confused.
pub const PROBE_PORT: u16 = 49862;

/// TTL and hop limit of what the gateway sends inside a tunnel.
const TTL: u8 = 64;

/// ICMP echo data sent with ICMP probes (the size of a default `ping`).
const ICMP_PROBE_DATA: usize = 56;

/// One tunnel's inner addressing, as the gateway sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub peer_v4: Option<Ipv4Addr>,
    pub peer_v6: Option<Ipv6Addr>,
    pub echo_port: u16,
    pub peer_echo_port: Option<u16>,
    /// Our ICMP echo identifier for probes on this tunnel.
    pub icmp_ident: u16,
}

/// What an inner packet turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    /// A reply to send back through the tunnel: `out[..len]`.
    Reply(usize),
    /// A STAMP reply to our probe `seq`, held `residence` by the reflector.
    ProbeReply {
        seq: u32,
        residence: Option<Duration>,
    },
    /// An ICMP echo reply to our probe with this 16-bit sequence number.
    IcmpProbeReply { seq16: u16 },
    /// A packet that is not for the gateway itself.
    NotForUs,
}

/// Why an inner packet was dropped; names are the counters' names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InnerDrop {
    #[error("inner_malformed")]
    Malformed,
    #[error("inner_fragment")]
    Fragment,
    #[error("inner_bad_checksum")]
    BadChecksum,
    #[error("inner_stamp_malformed")]
    StampMalformed,
    #[error("inner_buffer_too_small")]
    BufferTooSmall,
}

impl InnerDrop {
    pub fn name(self) -> &'static str {
        match self {
            InnerDrop::Malformed => "inner_malformed",
            InnerDrop::Fragment => "inner_fragment",
            InnerDrop::BadChecksum => "inner_bad_checksum",
            InnerDrop::StampMalformed => "inner_stamp_malformed",
            InnerDrop::BufferTooSmall => "inner_buffer_too_small",
        }
    }
}

impl From<gatewan_dataplane::wire::BufferTooSmall> for InnerDrop {
    fn from(_: gatewan_dataplane::wire::BufferTooSmall) -> Self {
        InnerDrop::BufferTooSmall
    }
}

/// The addresses of one IP header: where a reply goes back.
#[derive(Clone, Copy)]
enum Pair {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Pair {
    fn header_len(self) -> usize {
        match self {
            Pair::V4(..) => ipv4::Repr::HEADER_LEN,
            Pair::V6(..) => ipv6::Repr::HEADER_LEN,
        }
    }

    fn swapped(self) -> Pair {
        match self {
            Pair::V4(s, d) => Pair::V4(d, s),
            Pair::V6(s, d) => Pair::V6(d, s),
        }
    }

    /// Writes the IP header for `payload_len` bytes of `protocol` at the start of `out`.
    fn emit(self, protocol: u8, payload_len: usize, out: &mut [u8]) -> Result<usize, InnerDrop> {
        Ok(match self {
            Pair::V4(src, dst) => ipv4::Repr {
                src,
                dst,
                protocol,
                payload_len,
                ttl: TTL,
                tos: 0,
                ident: 0,
                dont_frag: true,
            }
            .emit(out)?,
            Pair::V6(src, dst) => ipv6::Repr {
                src,
                dst,
                next_header: protocol,
                payload_len,
                hop_limit: TTL,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(out)?,
        })
    }

    fn udp_mode(self) -> udp::ChecksumMode {
        match self {
            Pair::V4(src, dst) => udp::ChecksumMode::V4 { src, dst },
            Pair::V6(src, dst) => udp::ChecksumMode::V6 { src, dst },
        }
    }

    fn src(self) -> IpAddr {
        match self {
            Pair::V4(s, _) => IpAddr::V4(s),
            Pair::V6(s, _) => IpAddr::V6(s),
        }
    }
}

/// Handles one decrypted inner packet. `now` is the wall-clock time for STAMP timestamps.
pub fn handle(
    addrs: &InnerAddrs,
    reflector: &mut Reflector<IpAddr>,
    packet: &[u8],
    now: NtpTimestamp,
    out: &mut [u8],
) -> Result<Inner, InnerDrop> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = ipv4::Packet::new_checked(packet).map_err(|_| InnerDrop::Malformed)?;
            if addrs.v4 != Some(ip.dst_addr()) {
                return Ok(Inner::NotForUs);
            }
            if ip.is_fragment() {
                return Err(InnerDrop::Fragment);
            }
            let pair = Pair::V4(ip.src_addr(), ip.dst_addr());
            match ip.protocol() {
                ip_proto::ICMP => icmp_in(addrs, pair, ip.payload(), out),
                ip_proto::UDP => udp_in(addrs, reflector, pair, ip.ttl(), ip.payload(), now, out),
                _ => Ok(Inner::NotForUs),
            }
        }
        Some(6) => {
            let ip = ipv6::Packet::new_checked(packet).map_err(|_| InnerDrop::Malformed)?;
            if addrs.v6 != Some(ip.dst_addr()) {
                return Ok(Inner::NotForUs);
            }
            let pair = Pair::V6(ip.src_addr(), ip.dst_addr());
            // Only plain headers: a gateway's own traffic carries no extension headers.
            match ip.next_header() {
                ip_proto::ICMPV6 => icmp_in(addrs, pair, ip.payload(), out),
                ip_proto::UDP => udp_in(
                    addrs,
                    reflector,
                    pair,
                    ip.hop_limit(),
                    ip.payload(),
                    now,
                    out,
                ),
                _ => Ok(Inner::NotForUs),
            }
        }
        _ => Err(InnerDrop::Malformed),
    }
}

fn icmp_in(
    addrs: &InnerAddrs,
    pair: Pair,
    message: &[u8],
    out: &mut [u8],
) -> Result<Inner, InnerDrop> {
    let msg = icmp::Packet::new_checked(message).map_err(|_| InnerDrop::Malformed)?;
    let valid = match pair {
        Pair::V4(..) => msg.verify_checksum_v4(),
        Pair::V6(src, dst) => msg.verify_checksum_v6(&src, &dst),
    };
    if !valid {
        return Err(InnerDrop::BadChecksum);
    }
    let (request, reply) = match pair {
        Pair::V4(..) => (icmp::v4::ECHO_REQUEST, icmp::v4::ECHO_REPLY),
        Pair::V6(..) => (icmp::v6::ECHO_REQUEST, icmp::v6::ECHO_REPLY),
    };
    if msg.msg_type() == reply && msg.echo_ident() == addrs.icmp_ident {
        return Ok(Inner::IcmpProbeReply {
            seq16: msg.echo_seq(),
        });
    }
    if msg.msg_type() != request || msg.code() != 0 {
        return Ok(Inner::NotForUs);
    }
    let back = pair.swapped();
    let hdr = back.header_len();
    let data = msg.payload();
    let start = hdr + icmp::HEADER_LEN;
    out.get_mut(start..start + data.len())
        .ok_or(InnerDrop::BufferTooSmall)?
        .copy_from_slice(data);
    let echo = icmp::EchoRepr {
        reply: true,
        ident: msg.echo_ident(),
        seq: msg.echo_seq(),
        data_len: data.len(),
    };
    let body = out.get_mut(hdr..).ok_or(InnerDrop::BufferTooSmall)?;
    let len = match back {
        Pair::V4(..) => echo.emit_v4(body)?,
        Pair::V6(src, dst) => echo.emit_v6(body, &src, &dst)?,
    };
    let proto = if matches!(back, Pair::V4(..)) {
        ip_proto::ICMP
    } else {
        ip_proto::ICMPV6
    };
    back.emit(proto, len, out)?;
    Ok(Inner::Reply(hdr + len))
}

fn udp_in(
    addrs: &InnerAddrs,
    reflector: &mut Reflector<IpAddr>,
    pair: Pair,
    ttl: u8,
    datagram: &[u8],
    now: NtpTimestamp,
    out: &mut [u8],
) -> Result<Inner, InnerDrop> {
    let dgram = udp::Packet::new_checked(datagram).map_err(|_| InnerDrop::Malformed)?;
    let valid = match pair {
        // A zero checksum means "none" over IPv4.
        Pair::V4(src, dst) => dgram.checksum() == 0 || dgram.verify_checksum_v4(src, dst),
        Pair::V6(src, dst) => dgram.verify_checksum_v6(&src, &dst),
    };
    if !valid {
        return Err(InnerDrop::BadChecksum);
    }
    if dgram.dst_port() == PROBE_PORT && Some(dgram.src_port()) == addrs.peer_echo_port {
        let reply =
            ReflectorPacket::new_checked(dgram.payload()).map_err(|_| InnerDrop::StampMalformed)?;
        return Ok(Inner::ProbeReply {
            seq: reply.sender_sequence(),
            residence: reply.residence(),
        });
    }
    if dgram.dst_port() != addrs.echo_port {
        return Ok(Inner::NotForUs);
    }
    let back = pair.swapped();
    let start = back.header_len() + udp::HEADER_LEN;
    let body = out.get_mut(start..).ok_or(InnerDrop::BufferTooSmall)?;
    let len = reflector
        .reflect(
            pair.src(),
            dgram.payload(),
            now,
            NtpTimestamp::now().max(now),
            ttl,
            body,
        )
        .map_err(|e| match e {
            stamp::StampError::Truncated(_) => InnerDrop::StampMalformed,
            stamp::StampError::BufferTooSmall { .. } => InnerDrop::BufferTooSmall,
        })?;
    let udp_out = out
        .get_mut(back.header_len()..)
        .ok_or(InnerDrop::BufferTooSmall)?;
    udp::Repr {
        src_port: addrs.echo_port,
        dst_port: dgram.src_port(),
        payload_len: len,
    }
    .emit(udp_out, back.udp_mode())?;
    back.emit(ip_proto::UDP, udp::HEADER_LEN + len, out)?;
    Ok(Inner::Reply(start + len))
}

/// How a tunnel is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMethod {
    Stamp,
    Icmp,
}

impl InnerAddrs {
    pub fn probe_method(&self) -> ProbeMethod {
        if self.peer_echo_port.is_some() {
            ProbeMethod::Stamp
        } else {
            ProbeMethod::Icmp
        }
    }

    /// Source and target of probes: over IPv4 when both sides have an IPv4 inner address.
    fn probe_pair(&self) -> Option<Pair> {
        match (self.v4, self.peer_v4, self.v6, self.peer_v6) {
            (Some(s), Some(d), _, _) => Some(Pair::V4(s, d)),
            (_, _, Some(s), Some(d)) => Some(Pair::V6(s, d)),
            _ => None,
        }
    }

    /// `source_addr` and `target_endpoint` as `gatewan status` shows them.
    pub fn probe_endpoints(&self) -> (String, String) {
        match self.probe_pair() {
            None => ("-".into(), "-".into()),
            Some(pair) => {
                let (src, dst) = match pair {
                    Pair::V4(s, d) => (IpAddr::V4(s), IpAddr::V4(d)),
                    Pair::V6(s, d) => (IpAddr::V6(s), IpAddr::V6(d)),
                };
                let target = match self.peer_echo_port {
                    Some(port) => std::net::SocketAddr::new(dst, port).to_string(),
                    None => format!("{dst} (icmp)"),
                };
                (src.to_string(), target)
            }
        }
    }
}

/// Writes probe `seq` (an inner IP packet) into `out`; `None` when the tunnel has no peer
/// inner address to probe.
pub fn build_probe(
    addrs: &InnerAddrs,
    seq: u32,
    now: NtpTimestamp,
    out: &mut [u8],
) -> Result<Option<usize>, InnerDrop> {
    let Some(pair) = addrs.probe_pair() else {
        return Ok(None);
    };
    let hdr = pair.header_len();
    match addrs.peer_echo_port {
        Some(port) => {
            let start = hdr + udp::HEADER_LEN;
            let len = SenderPacket::build(
                out.get_mut(start..).ok_or(InnerDrop::BufferTooSmall)?,
                seq,
                now,
            )
            .map_err(|_| InnerDrop::BufferTooSmall)?;
            let udp_out = out.get_mut(hdr..).ok_or(InnerDrop::BufferTooSmall)?;
            udp::Repr {
                src_port: PROBE_PORT,
                dst_port: port,
                payload_len: len,
            }
            .emit(udp_out, pair.udp_mode())?;
            pair.emit(ip_proto::UDP, udp::HEADER_LEN + len, out)?;
            Ok(Some(start + len))
        }
        None => {
            let start = hdr + icmp::HEADER_LEN;
            let data = out
                .get_mut(start..start + ICMP_PROBE_DATA)
                .ok_or(InnerDrop::BufferTooSmall)?;
            // The probe's full sequence number, for debugging captures.
            for (i, b) in data.iter_mut().enumerate() {
                *b = seq.to_be_bytes()[i % 4];
            }
            let echo = icmp::EchoRepr {
                reply: false,
                ident: addrs.icmp_ident,
                seq: seq as u16,
                data_len: ICMP_PROBE_DATA,
            };
            let body = out.get_mut(hdr..).ok_or(InnerDrop::BufferTooSmall)?;
            let (len, proto) = match pair {
                Pair::V4(..) => (echo.emit_v4(body)?, ip_proto::ICMP),
                Pair::V6(src, dst) => (echo.emit_v6(body, &src, &dst)?, ip_proto::ICMPV6),
            };
            pair.emit(proto, len, out)?;
            Ok(Some(hdr + len))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides(stamp: bool, v6: bool) -> (InnerAddrs, InnerAddrs) {
        let (a4, b4) = ("10.13.76.135".parse().ok(), "10.13.76.134".parse().ok());
        let (a6, b6) = ("fd05::87".parse().ok(), "fd05::86".parse().ok());
        let (a4, b4) = if v6 { (None, None) } else { (a4, b4) };
        let a = InnerAddrs {
            v4: a4,
            v6: a6,
            peer_v4: b4,
            peer_v6: b6,
            echo_port: 7054,
            peer_echo_port: stamp.then_some(7117),
            icmp_ident: 0x4711,
        };
        let b = InnerAddrs {
            v4: b4,
            v6: b6,
            peer_v4: a4,
            peer_v6: a6,
            echo_port: 7117,
            peer_echo_port: Some(7054),
            icmp_ident: 0x0815,
        };
        (a, b)
    }

    /// A probes B, B answers, A recognises the answer: both families, both methods.
    #[test]
    fn probes_are_answered_and_recognised() {
        for (stamp, v6) in [(true, false), (true, true), (false, false), (false, true)] {
            let (a, b) = sides(stamp, v6);
            let mut reflector_a = Reflector::new(8);
            let mut reflector_b = Reflector::new(8);
            let now = NtpTimestamp::now();
            let mut probe = [0u8; 256];
            let len = build_probe(&a, 70_000, now, &mut probe)
                .expect("build")
                .expect("probeable");
            let mut reply = [0u8; 256];
            let outcome =
                handle(&b, &mut reflector_b, &probe[..len], now, &mut reply).expect("b handles");
            let Inner::Reply(reply_len) = outcome else {
                panic!("stamp {stamp} v6 {v6}: {outcome:?}")
            };
            let mut scratch = [0u8; 256];
            let back = handle(&a, &mut reflector_a, &reply[..reply_len], now, &mut scratch)
                .expect("a handles");
            if stamp {
                assert!(
                    matches!(back, Inner::ProbeReply { seq: 70_000, .. }),
                    "{back:?}"
                );
                assert_eq!(reflector_b.reflected, 1);
            } else {
                assert_eq!(
                    back,
                    Inner::IcmpProbeReply {
                        seq16: 70_000u32 as u16
                    }
                );
            }
        }
    }

    #[test]
    fn the_reply_is_a_well_formed_packet_to_the_sender() {
        let (a, b) = sides(true, false);
        let mut probe = [0u8; 256];
        let len = build_probe(&a, 1, NtpTimestamp::now(), &mut probe)
            .expect("build")
            .expect("probeable");
        let mut reply = [0u8; 256];
        let Ok(Inner::Reply(n)) = handle(
            &b,
            &mut Reflector::new(8),
            &probe[..len],
            NtpTimestamp::now(),
            &mut reply,
        ) else {
            panic!("no reply")
        };
        let ip = ipv4::Packet::new_checked(&reply[..n]).expect("ipv4");
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (b.v4.expect("v4"), a.v4.expect("v4"))
        );
        let dgram = udp::Packet::new_checked(ip.payload()).expect("udp");
        assert!(dgram.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
        assert_eq!((dgram.src_port(), dgram.dst_port()), (7117, PROBE_PORT));
        assert_eq!(dgram.payload().len(), stamp::PACKET_LEN);
    }

    #[test]
    fn other_traffic_is_not_for_us_and_garbage_is_dropped() {
        let (a, b) = sides(true, false);
        let mut probe = [0u8; 256];
        let len = build_probe(&a, 1, NtpTimestamp::now(), &mut probe)
            .expect("build")
            .expect("probeable");
        let mut out = [0u8; 256];
        let mut reflector = Reflector::new(8);
        // Addressed to the prober itself (A), not to B: B leaves it alone.
        let (_, c) = sides(true, false);
        let other = InnerAddrs {
            v4: "10.9.9.9".parse().ok(),
            ..c
        };
        assert_eq!(
            handle(
                &other,
                &mut reflector,
                &probe[..len],
                NtpTimestamp::now(),
                &mut out
            ),
            Ok(Inner::NotForUs)
        );
        // A corrupted UDP checksum.
        let mut bad = probe;
        bad[len - 1] ^= 0xff;
        assert_eq!(
            handle(
                &b,
                &mut reflector,
                &bad[..len],
                NtpTimestamp::now(),
                &mut out
            ),
            Err(InnerDrop::BadChecksum)
        );
        assert_eq!(
            handle(
                &b,
                &mut reflector,
                &[0x45, 0, 0],
                NtpTimestamp::now(),
                &mut out
            ),
            Err(InnerDrop::Malformed)
        );
        assert_eq!(
            handle(&b, &mut reflector, &[], NtpTimestamp::now(), &mut out),
            Err(InnerDrop::Malformed)
        );
        // Random bytes never panic.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for n in 0..300 {
            let mut junk = vec![0u8; n % 120];
            for byte in junk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = seed as u8;
            }
            if let Some(first) = junk.first_mut() {
                *first = if n % 2 == 0 { 0x45 } else { 0x60 };
            }
            let _ = handle(&b, &mut reflector, &junk, NtpTimestamp::now(), &mut out);
        }
        // A reply buffer too small is an error, not a panic.
        assert_eq!(
            handle(
                &b,
                &mut reflector,
                &probe[..len],
                NtpTimestamp::now(),
                &mut [0u8; 30]
            ),
            Err(InnerDrop::BufferTooSmall)
        );
    }
}
