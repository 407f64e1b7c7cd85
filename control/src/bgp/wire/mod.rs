//! BGP-4 wire formats (RFC 4271) with the multiprotocol (RFC 4760), 4-octet AS (RFC 6793),
//! extended community (RFC 4360) and EVPN Route Type 5 (RFC 9136, RFC 8365) pieces that
//! bgpctl needs.
//!
//! Parsing works on borrowed bytes: [`MessageView`] frames one message out of a stream buffer,
//! [`update::UpdateView`] and [`update::AttrIter`] walk an UPDATE without copying, and
//! [`evpn::EvpnNlriIter`] walks EVPN NLRI. The owned types ([`open::Open`], [`update::Update`],
//! [`evpn::IpPrefixRoute`]...) are built from those views once a message is known to matter,
//! and every owned type encodes itself back (builders). Every accessor is checked: malformed
//! input yields a typed error, never a panic.

pub mod evpn;
pub mod extcomm;
pub mod notification;
pub mod open;
pub mod update;

#[cfg(test)]
pub(crate) mod vectors;

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

pub use notification::Notification;

/// Length of the fixed message header: 16-octet marker, 2-octet length, 1-octet type.
pub const HEADER_LEN: usize = 19;
/// Largest message without the Extended Message capability (RFC 8654), which bgpctl does not
/// advertise.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// AFI for L2VPN (IANA) and SAFI for EVPN (RFC 7432).
pub const AFI_L2VPN: u16 = 25;
pub const SAFI_EVPN: u8 = 70;
/// AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS number.
pub const AS_TRANS: u16 = 23456;

/// BGP message types (RFC 4271, RFC 2918).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Open,
            2 => Self::Update,
            3 => Self::Notification,
            4 => Self::Keepalive,
            5 => Self::RouteRefresh,
            _ => return None,
        })
    }

    /// Smallest valid total length of this message type (RFC 4271 section 6.1).
    fn min_len(self) -> usize {
        match self {
            Self::Open => 29,
            Self::Update => 23,
            Self::Notification => 21,
            Self::Keepalive => 19,
            Self::RouteRefresh => 23,
        }
    }
}

/// A message header error (RFC 4271 section 6.1): the session must be reset with the
/// NOTIFICATION given by [`HeaderError::notification`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("marker is not all ones")]
    NotSynchronized,
    #[error("bad message length {0}")]
    BadLength(u16),
    #[error("bad message type {0}")]
    BadType(u8),
}

impl HeaderError {
    pub fn notification(&self) -> Notification {
        use notification::{code, header_subcode as sub};
        match self {
            Self::NotSynchronized => Notification::new(code::MESSAGE_HEADER, sub::NOT_SYNCHRONIZED),
            Self::BadLength(len) => Notification::with_data(
                code::MESSAGE_HEADER,
                sub::BAD_LENGTH,
                len.to_be_bytes().to_vec(),
            ),
            Self::BadType(t) => {
                Notification::with_data(code::MESSAGE_HEADER, sub::BAD_TYPE, vec![*t])
            }
        }
    }
}

/// One framed message borrowed from a receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub kind: MessageType,
    /// The bytes after the 19-octet header.
    pub body: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// Frames the first message of `buf`. `Ok(None)` when `buf` does not hold a whole message
    /// yet; otherwise the message and the number of bytes it used.
    pub fn parse(buf: &'a [u8]) -> Result<Option<(Self, usize)>, HeaderError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            // Check the marker as far as it has arrived, so garbage is refused early.
            if buf.iter().take(16).any(|&b| b != 0xff) {
                return Err(HeaderError::NotSynchronized);
            }
            return Ok(None);
        };
        let mut r = Reader::new(header);
        let marker = r.take(16).unwrap_or_default();
        if marker.iter().any(|&b| b != 0xff) {
            return Err(HeaderError::NotSynchronized);
        }
        let len = r.u16().unwrap_or_default();
        let type_code = r.u8().unwrap_or_default();
        if usize::from(len) < HEADER_LEN || usize::from(len) > MAX_MESSAGE_LEN {
            return Err(HeaderError::BadLength(len));
        }
        let kind = MessageType::from_u8(type_code).ok_or(HeaderError::BadType(type_code))?;
        let len_usize = usize::from(len);
        if len_usize < kind.min_len() || (kind == MessageType::Keepalive && len_usize != HEADER_LEN)
        {
            return Err(HeaderError::BadLength(len));
        }
        let Some(body) = buf.get(HEADER_LEN..len_usize) else {
            return Ok(None);
        };
        Ok(Some((MessageView { kind, body }, len_usize)))
    }
}

/// Writes a whole message: header then `body`. The caller keeps bodies within
/// [`MAX_MESSAGE_LEN`]; a longer one is a bug in a builder and is refused.
pub fn encode_message(kind: MessageType, body: &[u8], out: &mut Vec<u8>) -> Result<(), TooLong> {
    let total = HEADER_LEN + body.len();
    let len = u16::try_from(total)
        .ok()
        .filter(|&l| usize::from(l) <= MAX_MESSAGE_LEN)
        .ok_or(TooLong(total))?;
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(body);
    Ok(())
}

/// A builder was asked for a message over [`MAX_MESSAGE_LEN`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("message of {0} bytes exceeds the 4096-byte BGP limit")]
pub struct TooLong(pub usize);

/// The 19-byte KEEPALIVE message.
pub fn keepalive() -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    // An empty body always fits.
    let _ = encode_message(MessageType::Keepalive, &[], &mut out);
    out
}

/// ROUTE-REFRESH (RFC 2918): asks the peer to send its routes of one AFI/SAFI again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    /// RFC 7313 reuses this octet as a subtype; 0 is a plain refresh.
    pub subtype: u8,
    pub safi: u8,
}

impl RouteRefresh {
    pub fn decode(body: &[u8]) -> Result<Self, Notification> {
        let mut r = Reader::new(body);
        match (r.u16(), r.u8(), r.u8(), r.is_empty()) {
            (Some(afi), Some(subtype), Some(safi), true) => Ok(Self { afi, subtype, safi }),
            _ => Err(Notification::with_data(
                notification::code::ROUTE_REFRESH,
                1, // Invalid Message Length (RFC 7313)
                body.to_vec(),
            )),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4);
        body.extend_from_slice(&self.afi.to_be_bytes());
        body.push(self.subtype);
        body.push(self.safi);
        let mut out = Vec::with_capacity(HEADER_LEN + 4);
        let _ = encode_message(MessageType::RouteRefresh, &body, &mut out);
        out
    }
}

/// A checked big-endian cursor over a byte slice: every read returns `None` past the end.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub fn u24(&mut self) -> Option<u32> {
        self.array::<3>()
            .map(|[a, b, c]| u32::from_be_bytes([0, a, b, c]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.array::<4>().map(Ipv4Addr::from)
    }

    pub fn ipv6(&mut self) -> Option<Ipv6Addr> {
        self.array::<16>().map(Ipv6Addr::from)
    }
}

/// A 48-bit MAC address (EVPN Router's MAC, gateways' router MACs): the dataplane's type.
pub use gatewan_dataplane::wire::ethernet::{MacAddr, ParseMacError as BadMac};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_keepalive_and_waits_for_partial_messages() {
        let ka = keepalive();
        assert_eq!(ka.len(), 19);
        let (view, used) = MessageView::parse(&ka).unwrap().unwrap();
        assert_eq!(view.kind, MessageType::Keepalive);
        assert!(view.body.is_empty());
        assert_eq!(used, 19);
        for cut in 0..ka.len() {
            assert_eq!(MessageView::parse(&ka[..cut]).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn header_errors_carry_the_rfc_4271_notification() {
        let mut bad = keepalive();
        bad[3] = 0;
        assert_eq!(MessageView::parse(&bad), Err(HeaderError::NotSynchronized));
        // A partial marker that is already wrong is refused at once.
        assert_eq!(
            MessageView::parse(&bad[..5]),
            Err(HeaderError::NotSynchronized)
        );
        let mut long = keepalive();
        long[16..18].copy_from_slice(&4097u16.to_be_bytes());
        let err = MessageView::parse(&long).unwrap_err();
        assert_eq!(err, HeaderError::BadLength(4097));
        let n = err.notification();
        assert_eq!(
            (n.code, n.subcode, n.data.as_slice()),
            (1, 2, &[0x10, 0x01][..])
        );
        let mut ty = keepalive();
        ty[18] = 9;
        assert_eq!(
            MessageView::parse(&ty).unwrap_err().notification().data,
            vec![9]
        );
        // A KEEPALIVE must be exactly 19 bytes; an OPEN at least 29.
        let mut ka20 = keepalive();
        ka20[17] = 20;
        ka20.push(0);
        assert_eq!(MessageView::parse(&ka20), Err(HeaderError::BadLength(20)));
        let mut open = keepalive();
        open[18] = 1;
        assert_eq!(MessageView::parse(&open), Err(HeaderError::BadLength(19)));
    }

    #[test]
    fn route_refresh_round_trips_and_rejects_bad_lengths() {
        let rr = RouteRefresh {
            afi: AFI_L2VPN,
            subtype: 0,
            safi: SAFI_EVPN,
        };
        let bytes = rr.encode();
        let (view, _) = MessageView::parse(&bytes).unwrap().unwrap();
        assert_eq!(view.kind, MessageType::RouteRefresh);
        assert_eq!(RouteRefresh::decode(view.body).unwrap(), rr);
        assert!(RouteRefresh::decode(&view.body[..3]).is_err());
    }

    #[test]
    fn mac_parses_and_prints() {
        let mac: MacAddr = "70:5b:83:6b:72:A9".parse().unwrap();
        assert_eq!(mac.0, [0x70, 0x5b, 0x83, 0x6b, 0x72, 0xa9]);
        assert_eq!(mac.to_string(), "70:5b:83:6b:72:a9");
        assert!("70:5b:83:6b:72".parse::<MacAddr>().is_err());
        assert!("70:5b:83:6b:72:a9:00".parse::<MacAddr>().is_err());
        assert!("70:5b:83:6b:72:zz".parse::<MacAddr>().is_err());
    }
}
