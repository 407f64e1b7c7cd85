//! Zero-copy views of the four WireGuard messages.
//!
//! Every message starts with a little-endian u32 whose low byte is the type and whose three
//! other bytes are zero. Layouts (offsets in bytes), from the protocol description:
//!
//! | message | layout | size |
//! |---|---|---|
//! | 1 initiation | type 0, sender 4, ephemeral 8, static 40 (32+16), timestamp 88 (12+16), mac1 116, mac2 132 | 148 |
//! | 2 response | type 0, sender 4, receiver 8, ephemeral 12, empty 44 (0+16), mac1 60, mac2 76 | 92 |
//! | 3 cookie reply | type 0, receiver 4, nonce 8 (24), cookie 32 (16+16) | 64 |
//! | 4 data | type 0, receiver 4, counter 8 (u64 LE), payload 16 (n+16) | 32 + n |
//!
//! Read views are built once with every length checked, then hand out fixed-size array
//! references, so no accessor can panic on hostile input.

use super::crypto::{KEY_LEN, MAC_LEN, TAG_LEN};
use super::tai64n::TAI64N_LEN;
use super::Error;

/// Message type of a handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Message type of a handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Message type of a cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Message type of transport data.
pub const TYPE_DATA: u8 = 4;

/// Size of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Size of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Size of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Size of the transport data header (type, receiver, counter).
pub const DATA_HEADER_LEN: usize = 16;
/// Size of an empty transport data message (a keepalive).
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;
/// Length of the XChaCha20 nonce in a cookie reply.
pub const COOKIE_NONCE_LEN: usize = 24;

/// Offset of mac1 in a handshake message of `len` bytes (mac1 and mac2 end every one).
pub const fn mac1_offset(len: usize) -> usize {
    len - 2 * MAC_LEN
}

/// The four message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Initiation,
    Response,
    CookieReply,
    Data,
}

/// Reads the message type of a datagram, checking the three reserved bytes.
pub fn message_type(datagram: &[u8]) -> Result<MessageType, Error> {
    let Some(head) = datagram.first_chunk::<4>() else {
        return Err(Error::BadLength {
            kind: 0,
            len: datagram.len(),
        });
    };
    if head[1..] != [0, 0, 0] {
        return Err(Error::UnknownType(head[0]));
    }
    match head[0] {
        TYPE_INITIATION => Ok(MessageType::Initiation),
        TYPE_RESPONSE => Ok(MessageType::Response),
        TYPE_COOKIE_REPLY => Ok(MessageType::CookieReply),
        TYPE_DATA => Ok(MessageType::Data),
        other => Err(Error::UnknownType(other)),
    }
}

/// The receiver index of a response, cookie reply or data message: the index a peer routes
/// on. `None` for initiations (which carry only a sender index) and malformed datagrams.
pub fn receiver_index(datagram: &[u8]) -> Option<u32> {
    let off = match message_type(datagram).ok()? {
        MessageType::Initiation => return None,
        MessageType::Response => 8,
        MessageType::CookieReply | MessageType::Data => 4,
    };
    let bytes = datagram.get(off..)?.first_chunk::<4>()?;
    Some(u32::from_le_bytes(*bytes))
}

/// Splits fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(head)
    }
}

/// Splits fixed-size mutable fields off the front of a byte slice.
pub(crate) struct Writer<'a>(&'a mut [u8]);

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer(buf)
    }

    pub(crate) fn take<const N: usize>(&mut self) -> Option<&'a mut [u8; N]> {
        let buf = core::mem::take(&mut self.0);
        let (head, rest) = buf.split_first_chunk_mut::<N>()?;
        self.0 = rest;
        Some(head)
    }
}

fn exact<const N: usize>(buf: &[u8], kind: u8) -> Result<&[u8; N], Error> {
    <&[u8; N]>::try_from(buf).map_err(|_| Error::BadLength {
        kind,
        len: buf.len(),
    })
}

/// A handshake initiation (type 1).
#[derive(Debug, Clone, Copy)]
pub struct Initiation<'a> {
    /// Bytes covered by mac1: everything before it.
    pub mac1_input: &'a [u8; 116],
    pub sender: u32,
    pub ephemeral: &'a [u8; KEY_LEN],
    pub encrypted_static: &'a [u8; KEY_LEN + TAG_LEN],
    pub encrypted_timestamp: &'a [u8; TAI64N_LEN + TAG_LEN],
    pub mac1: &'a [u8; MAC_LEN],
    pub mac2: &'a [u8; MAC_LEN],
}

impl<'a> Initiation<'a> {
    /// Checks type and exact length, then splits the fields.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let all = exact::<INITIATION_LEN>(buf, TYPE_INITIATION)?;
        if message_type(all)? != MessageType::Initiation {
            return Err(Error::UnknownType(all[0]));
        }
        let bad = || Error::BadLength {
            kind: TYPE_INITIATION,
            len: buf.len(),
        };
        let mut r = Reader(all);
        let mac1_input: &[u8; 116] = r.take().ok_or_else(bad)?;
        let mac1 = r.take().ok_or_else(bad)?;
        let mac2 = r.take().ok_or_else(bad)?;
        let mut h = Reader(mac1_input);
        let _type: &[u8; 4] = h.take().ok_or_else(bad)?;
        let sender = u32::from_le_bytes(*h.take().ok_or_else(bad)?);
        Ok(Self {
            mac1_input,
            sender,
            ephemeral: h.take().ok_or_else(bad)?,
            encrypted_static: h.take().ok_or_else(bad)?,
            encrypted_timestamp: h.take().ok_or_else(bad)?,
            mac1,
            mac2,
        })
    }
}

/// A handshake response (type 2).
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// Bytes covered by mac1: everything before it.
    pub mac1_input: &'a [u8; 60],
    pub sender: u32,
    pub receiver: u32,
    pub ephemeral: &'a [u8; KEY_LEN],
    pub encrypted_nothing: &'a [u8; TAG_LEN],
    pub mac1: &'a [u8; MAC_LEN],
    pub mac2: &'a [u8; MAC_LEN],
}

impl<'a> Response<'a> {
    /// Checks type and exact length, then splits the fields.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let all = exact::<RESPONSE_LEN>(buf, TYPE_RESPONSE)?;
        if message_type(all)? != MessageType::Response {
            return Err(Error::UnknownType(all[0]));
        }
        let bad = || Error::BadLength {
            kind: TYPE_RESPONSE,
            len: buf.len(),
        };
        let mut r = Reader(all);
        let mac1_input: &[u8; 60] = r.take().ok_or_else(bad)?;
        let mac1 = r.take().ok_or_else(bad)?;
        let mac2 = r.take().ok_or_else(bad)?;
        let mut h = Reader(mac1_input);
        let _type: &[u8; 4] = h.take().ok_or_else(bad)?;
        let sender = u32::from_le_bytes(*h.take().ok_or_else(bad)?);
        let receiver = u32::from_le_bytes(*h.take().ok_or_else(bad)?);
        Ok(Self {
            mac1_input,
            sender,
            receiver,
            ephemeral: h.take().ok_or_else(bad)?,
            encrypted_nothing: h.take().ok_or_else(bad)?,
            mac1,
            mac2,
        })
    }
}

/// A cookie reply (type 3).
#[derive(Debug, Clone, Copy)]
pub struct CookieReply<'a> {
    pub receiver: u32,
    pub nonce: &'a [u8; COOKIE_NONCE_LEN],
    pub encrypted_cookie: &'a [u8; MAC_LEN + TAG_LEN],
}

impl<'a> CookieReply<'a> {
    /// Checks type and exact length, then splits the fields.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let all = exact::<COOKIE_REPLY_LEN>(buf, TYPE_COOKIE_REPLY)?;
        if message_type(all)? != MessageType::CookieReply {
            return Err(Error::UnknownType(all[0]));
        }
        let bad = || Error::BadLength {
            kind: TYPE_COOKIE_REPLY,
            len: buf.len(),
        };
        let mut r = Reader(all);
        let _type: &[u8; 4] = r.take().ok_or_else(bad)?;
        let receiver = u32::from_le_bytes(*r.take().ok_or_else(bad)?);
        Ok(Self {
            receiver,
            nonce: r.take().ok_or_else(bad)?,
            encrypted_cookie: r.take().ok_or_else(bad)?,
        })
    }
}

/// A transport data message (type 4), viewed in place for decryption.
#[derive(Debug)]
pub struct DataMut<'a> {
    pub receiver: u32,
    pub counter: u64,
    /// The encrypted, padded inner packet.
    pub ciphertext: &'a mut [u8],
    pub tag: &'a [u8; TAG_LEN],
}

impl<'a> DataMut<'a> {
    /// Checks type and minimum length, then splits header, ciphertext and tag.
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, Error> {
        let len = buf.len();
        if len < DATA_MIN_LEN {
            return Err(Error::BadLength {
                kind: TYPE_DATA,
                len,
            });
        }
        if message_type(buf)? != MessageType::Data {
            return Err(Error::UnknownType(buf.first().copied().unwrap_or(0)));
        }
        let bad = Error::BadLength {
            kind: TYPE_DATA,
            len,
        };
        let (header, rest) = buf.split_first_chunk_mut::<DATA_HEADER_LEN>().ok_or(bad)?;
        let (ciphertext, tag) = rest.split_last_chunk_mut::<TAG_LEN>().ok_or(bad)?;
        let mut h = Reader(&header[..]);
        let _type: &[u8; 4] = h.take().ok_or(bad)?;
        let receiver = u32::from_le_bytes(*h.take().ok_or(bad)?);
        let counter = u64::from_le_bytes(*h.take().ok_or(bad)?);
        Ok(Self {
            receiver,
            counter,
            ciphertext,
            tag,
        })
    }
}

/// The 4-byte header of a message of `kind`.
pub(crate) fn header(kind: u8) -> [u8; 4] {
    [kind, 0, 0, 0]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_protocol() {
        assert_eq!(INITIATION_LEN, 4 + 4 + 32 + 48 + 28 + 16 + 16);
        assert_eq!(RESPONSE_LEN, 4 + 4 + 4 + 32 + 16 + 16 + 16);
        assert_eq!(COOKIE_REPLY_LEN, 4 + 4 + 24 + 32);
        assert_eq!(DATA_MIN_LEN, 32);
        assert_eq!(mac1_offset(INITIATION_LEN), 116);
        assert_eq!(mac1_offset(RESPONSE_LEN), 60);
    }

    #[test]
    fn types_and_reserved_bytes() {
        assert_eq!(message_type(&[1, 0, 0, 0]), Ok(MessageType::Initiation));
        assert_eq!(message_type(&[4, 0, 0, 0, 9]), Ok(MessageType::Data));
        assert_eq!(message_type(&[5, 0, 0, 0]), Err(Error::UnknownType(5)));
        assert_eq!(message_type(&[1, 0, 1, 0]), Err(Error::UnknownType(1)));
        assert!(matches!(
            message_type(&[1, 0, 0]),
            Err(Error::BadLength { .. })
        ));
    }

    #[test]
    fn initiation_fields() {
        let mut m = [0u8; INITIATION_LEN];
        m[0] = 1;
        m[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        m[8] = 0xe1;
        m[40] = 0x51;
        m[88] = 0x7a;
        m[116] = 0x11;
        m[132] = 0x22;
        let v = Initiation::parse(&m).unwrap();
        assert_eq!(v.sender, 0xdead_beef);
        assert_eq!(
            (
                v.ephemeral[0],
                v.encrypted_static[0],
                v.encrypted_timestamp[0]
            ),
            (0xe1, 0x51, 0x7a)
        );
        assert_eq!((v.mac1[0], v.mac2[0]), (0x11, 0x22));
        assert!(Initiation::parse(&m[..147]).is_err());
        let mut long = m.to_vec();
        long.push(0);
        assert!(Initiation::parse(&long).is_err());
        m[0] = 2;
        assert!(Initiation::parse(&m).is_err());
    }

    #[test]
    fn response_cookie_and_data_fields() {
        let mut r = [0u8; RESPONSE_LEN];
        r[0] = 2;
        r[4..8].copy_from_slice(&7u32.to_le_bytes());
        r[8..12].copy_from_slice(&9u32.to_le_bytes());
        r[12] = 0xee;
        r[44] = 0x44;
        let v = Response::parse(&r).unwrap();
        assert_eq!(
            (v.sender, v.receiver, v.ephemeral[0], v.encrypted_nothing[0]),
            (7, 9, 0xee, 0x44)
        );
        assert_eq!(receiver_index(&r), Some(9));

        let mut c = [0u8; COOKIE_REPLY_LEN];
        c[0] = 3;
        c[4..8].copy_from_slice(&5u32.to_le_bytes());
        c[8] = 0xaa;
        c[32] = 0xbb;
        let v = CookieReply::parse(&c).unwrap();
        assert_eq!(
            (v.receiver, v.nonce[0], v.encrypted_cookie[0]),
            (5, 0xaa, 0xbb)
        );

        let mut d = [0u8; 40];
        d[0] = 4;
        d[4..8].copy_from_slice(&3u32.to_le_bytes());
        d[8..16].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        d[24] = 0x77;
        let v = DataMut::parse(&mut d).unwrap();
        assert_eq!(
            (v.receiver, v.counter, v.ciphertext.len()),
            (3, 0x0102_0304_0506_0708, 8)
        );
        assert_eq!(v.tag[0], 0x77);
        assert!(DataMut::parse(&mut [4u8, 0, 0, 0][..]).is_err());
        assert_eq!(receiver_index(&d), Some(3));
        let mut init = [0u8; INITIATION_LEN];
        init[0] = 1;
        assert_eq!(receiver_index(&init), None);
    }
}
