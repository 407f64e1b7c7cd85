//! The outer framing of WireGuard messages (whitepaper §5.4), enough to dispatch by type and
//! steer by receiver index. The cryptography lives in the WireGuard core.
//!
//! Every message starts with a 1-byte type and 3 reserved zero bytes; implementations read the
//! four bytes as one little-endian u32, so non-zero reserved bytes make an unknown type.
//! Handshake messages have fixed sizes; a data message is at least its 16-byte header plus a
//! 16-byte Poly1305 tag. Indices and counters are little-endian.
//!
//! ```text
//! initiation   (148) type|rsv|sender(4)|ephemeral(32)|static(48)|timestamp(28)|mac1(16)|mac2(16)
//! response      (92) type|rsv|sender(4)|receiver(4)|ephemeral(32)|empty(16)|mac1(16)|mac2(16)
//! cookie reply  (64) type|rsv|receiver(4)|nonce(24)|cookie(32)
//! data        (>=32) type|rsv|receiver(4)|counter(8)|encrypted packet + tag(16)
//! ```

use super::field::{set_array, slice, slice_mut, u32_le_at, u64_le_at};
use super::{need, BufferTooSmall};
use crate::drop::DropReason;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
pub const DATA_HEADER_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;
pub const MAC_LEN: usize = 16;

/// WireGuard message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Initiation = 1,
    Response = 2,
    CookieReply = 3,
    Data = 4,
}

impl MessageType {
    /// From the first four bytes read as a little-endian u32.
    pub fn from_word(w: u32) -> Option<Self> {
        match w {
            1 => Some(Self::Initiation),
            2 => Some(Self::Response),
            3 => Some(Self::CookieReply),
            4 => Some(Self::Data),
            _ => None,
        }
    }

    /// Length of a handshake message; `None` for data (variable).
    pub const fn fixed_len(self) -> Option<usize> {
        match self {
            Self::Initiation => Some(INITIATION_LEN),
            Self::Response => Some(RESPONSE_LEN),
            Self::CookieReply => Some(COOKIE_REPLY_LEN),
            Self::Data => None,
        }
    }
}

/// A zero-copy view of one WireGuard message (the UDP payload).
#[derive(Clone, Copy, Debug)]
pub struct Packet<T> {
    buffer: T,
    kind: MessageType,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the type word and the length for that type.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < 4 {
            return Err(DropReason::WgBadLength);
        }
        let kind = MessageType::from_word(u32_le_at(b, 0)).ok_or(DropReason::WgUnknownType)?;
        let ok = match kind.fixed_len() {
            Some(n) => b.len() == n,
            None => b.len() >= DATA_MIN_LEN,
        };
        if !ok {
            return Err(DropReason::WgBadLength);
        }
        Ok(Self { buffer, kind })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn message_type(&self) -> MessageType {
        self.kind
    }

    /// The sender's index (initiation, response).
    pub fn sender_index(&self) -> Option<u32> {
        match self.kind {
            MessageType::Initiation | MessageType::Response => {
                Some(u32_le_at(self.buffer.as_ref(), 4))
            }
            _ => None,
        }
    }

    /// The index this gateway chose for the session (response, cookie reply, data): what a
    /// worker steers by. `None` for an initiation, which names no session yet.
    pub fn receiver_index(&self) -> Option<u32> {
        let b = self.buffer.as_ref();
        match self.kind {
            MessageType::Response => Some(u32_le_at(b, 8)),
            MessageType::CookieReply | MessageType::Data => Some(u32_le_at(b, 4)),
            MessageType::Initiation => None,
        }
    }

    /// The nonce counter of a data message.
    pub fn counter(&self) -> Option<u64> {
        (self.kind == MessageType::Data).then(|| u64_le_at(self.buffer.as_ref(), 8))
    }

    /// The encrypted packet and its tag (data messages; empty otherwise).
    pub fn data_payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        match self.kind {
            MessageType::Data => slice(b, DATA_HEADER_LEN, b.len()),
            _ => &[],
        }
    }

    /// For handshake initiation and response: (bytes covered by mac1, mac1, mac2).
    /// mac2 covers the same bytes plus mac1.
    pub fn macs(&self) -> Option<(&[u8], &[u8], &[u8])> {
        let b = self.buffer.as_ref();
        let len = self
            .kind
            .fixed_len()
            .filter(|_| self.kind != MessageType::CookieReply)?;
        let m1 = len - 2 * MAC_LEN;
        Some((
            slice(b, 0, m1),
            slice(b, m1, m1 + MAC_LEN),
            slice(b, m1 + MAC_LEN, len),
        ))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The encrypted packet and tag of a data message, for in-place decryption.
    pub fn data_payload_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        match self.kind {
            MessageType::Data => slice_mut(b, DATA_HEADER_LEN, len),
            _ => &mut [],
        }
    }
}

/// The header of a transport data message, for building one in front of the ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub receiver: u32,
    pub counter: u64,
}

impl DataHeader {
    pub const LEN: usize = DATA_HEADER_LEN;

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        need(buf.len(), DATA_HEADER_LEN)?;
        set_array(buf, 0, (MessageType::Data as u32).to_le_bytes());
        set_array(buf, 4, self.receiver.to_le_bytes());
        set_array(buf, 8, self.counter.to_le_bytes());
        Ok(DATA_HEADER_LEN)
    }
}

/// Length of a data message carrying `inner_len` plaintext bytes: the plaintext is padded to a
/// multiple of 16 (whitepaper §5.4.6) before the tag. (The WireGuard core may pad less to stay
/// within the tunnel MTU, as the reference implementations do.)
pub const fn data_message_len(inner_len: usize) -> usize {
    DATA_HEADER_LEN + inner_len.next_multiple_of(16) + TAG_LEN
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn data_header_round_trip() {
        let mut buf = [0u8; 16 + 48];
        let h = DataHeader {
            receiver: 0xdead_beef,
            counter: 0x0102_0304_0506_0708,
        };
        assert_eq!(h.emit(&mut buf).unwrap(), 16);
        assert_eq!(&buf[..4], &[4, 0, 0, 0]);
        assert_eq!(&buf[4..8], &[0xef, 0xbe, 0xad, 0xde], "little-endian index");
        assert_eq!(
            &buf[8..16],
            &[8, 7, 6, 5, 4, 3, 2, 1],
            "little-endian counter"
        );
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.message_type(), MessageType::Data);
        assert_eq!(p.receiver_index(), Some(0xdead_beef));
        assert_eq!(p.counter(), Some(0x0102_0304_0506_0708));
        assert_eq!(p.sender_index(), None);
        assert_eq!(p.data_payload().len(), 48);
        assert!(p.macs().is_none());
        p.data_payload_mut()[0] = 9;
        assert_eq!(buf[16], 9);
        assert!(h.emit(&mut [0u8; 15]).is_err());
    }

    #[test]
    fn handshake_indices_and_macs() {
        let mut init = [0u8; INITIATION_LEN];
        init[0] = 1;
        init[4..8].copy_from_slice(&7u32.to_le_bytes());
        init[116] = 0xaa;
        init[132] = 0xbb;
        let p = Packet::new_checked(&init[..]).unwrap();
        assert_eq!(p.message_type(), MessageType::Initiation);
        assert_eq!(p.sender_index(), Some(7));
        assert_eq!(p.receiver_index(), None);
        assert_eq!(p.counter(), None);
        let (covered, m1, m2) = p.macs().unwrap();
        assert_eq!(
            (covered.len(), m1[0], m2[0], m2.len()),
            (116, 0xaa, 0xbb, 16)
        );

        let mut resp = [0u8; RESPONSE_LEN];
        resp[0] = 2;
        resp[4..8].copy_from_slice(&11u32.to_le_bytes());
        resp[8..12].copy_from_slice(&7u32.to_le_bytes());
        let p = Packet::new_checked(&resp[..]).unwrap();
        assert_eq!((p.sender_index(), p.receiver_index()), (Some(11), Some(7)));
        assert_eq!(p.macs().unwrap().0.len(), 60);

        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        cookie[0] = 3;
        cookie[4..8].copy_from_slice(&11u32.to_le_bytes());
        let p = Packet::new_checked(&cookie[..]).unwrap();
        assert_eq!(p.receiver_index(), Some(11));
        assert!(p.macs().is_none());
        assert!(p.data_payload().is_empty());
    }

    #[test]
    fn bad_types_and_lengths() {
        let mut init = [0u8; INITIATION_LEN];
        init[0] = 1;
        assert_eq!(
            Packet::new_checked(&init[..147]).unwrap_err(),
            DropReason::WgBadLength
        );
        let mut longer = init.to_vec();
        longer.push(0);
        assert_eq!(
            Packet::new_checked(&longer[..]).unwrap_err(),
            DropReason::WgBadLength
        );
        init[1] = 1; // reserved byte set
        assert_eq!(
            Packet::new_checked(&init[..]).unwrap_err(),
            DropReason::WgUnknownType
        );
        for t in [0u8, 5, 255] {
            let mut m = [0u8; 64];
            m[0] = t;
            assert_eq!(
                Packet::new_checked(&m[..]).unwrap_err(),
                DropReason::WgUnknownType
            );
        }
        let mut data = [0u8; 31];
        data[0] = 4;
        assert_eq!(
            Packet::new_checked(&data[..]).unwrap_err(),
            DropReason::WgBadLength
        );
        assert_eq!(
            Packet::new_checked(&data[..3]).unwrap_err(),
            DropReason::WgBadLength
        );
    }

    #[test]
    fn data_lengths() {
        assert_eq!(data_message_len(0), 32, "keepalive");
        assert_eq!(data_message_len(1), 48);
        assert_eq!(data_message_len(1420), 16 + 1424 + 16);
    }
}
