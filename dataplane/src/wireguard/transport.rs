//! Transport data messages: sealing and opening in place, with counter nonces and padding.
//!
//! ```text
//! | 4, 0, 0, 0 | receiver u32 LE | counter u64 LE | ChaCha20-Poly1305(inner || zero padding) | tag |
//! ```
//! The inner packet is padded with zeros to a multiple of 16 bytes, never past the MTU; the
//! receiver strips padding using the inner IP header's length. An empty payload is a
//! keepalive. The nonce is the counter (see [`counter_nonce`]); there is no associated data.

use super::aead::{counter_nonce, Aead};
use super::crypto::TAG_LEN;
use super::messages::{self, DataMut, DATA_HEADER_LEN};
use super::Error;

/// Inner packets are padded to a multiple of this.
pub const PADDING_MULTIPLE: usize = 16;

/// Length of the padded plaintext for an inner packet of `len` bytes and tunnel `mtu`.
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let padded = len
        .div_ceil(PADDING_MULTIPLE)
        .saturating_mul(PADDING_MULTIPLE);
    if len >= mtu {
        len
    } else {
        padded.min(mtu)
    }
}

/// Bytes a sealed message of an inner packet of `len` bytes needs in the caller's buffer.
pub fn sealed_len(len: usize, mtu: usize) -> usize {
    DATA_HEADER_LEN + padded_len(len, mtu) + TAG_LEN
}

/// Seals in place. `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]` holds the inner packet;
/// header, padding and tag are written around it. Returns the message length.
pub fn seal<A: Aead>(
    aead: &A,
    receiver: u32,
    counter: u64,
    buf: &mut [u8],
    len: usize,
    mtu: usize,
) -> Result<usize, Error> {
    let padded = padded_len(len, mtu);
    let total = DATA_HEADER_LEN + padded + TAG_LEN;
    let have = buf.len();
    let Some(msg) = buf.get_mut(..total) else {
        return Err(Error::BufferTooSmall { need: total, have });
    };
    let short = Error::BufferTooSmall { need: total, have };
    let (header, rest) = msg
        .split_first_chunk_mut::<DATA_HEADER_LEN>()
        .ok_or(short)?;
    let (body, tag_out) = rest.split_last_chunk_mut::<TAG_LEN>().ok_or(short)?;
    header[..4].copy_from_slice(&messages::header(messages::TYPE_DATA));
    header[4..8].copy_from_slice(&receiver.to_le_bytes());
    header[8..].copy_from_slice(&counter.to_le_bytes());
    if let Some(pad) = body.get_mut(len..) {
        pad.fill(0);
    }
    *tag_out = aead.seal_in_place(&counter_nonce(counter), &[], body)?;
    Ok(total)
}

/// Opens a parsed data message in place; returns the padded plaintext length. The
/// plaintext sits at `DATA_HEADER_LEN` in the datagram.
pub fn open<A: Aead>(aead: &A, msg: &mut DataMut<'_>) -> Result<usize, Error> {
    let tag: [u8; TAG_LEN] = *msg.tag;
    aead.open_in_place(&counter_nonce(msg.counter), &[], msg.ciphertext, &tag)
        .map_err(|_| Error::TransportDecrypt)?;
    Ok(msg.ciphertext.len())
}

/// Length of the IP packet at the start of a decrypted payload (dropping the padding).
pub fn inner_packet_len(plain: &[u8]) -> Result<usize, Error> {
    let version = plain.first().map(|b| b >> 4);
    let len = match version {
        Some(4) => {
            let b = plain.get(2..4).ok_or(Error::InvalidInnerPacket)?;
            let total = usize::from(u16::from_be_bytes([b[0], b[1]]));
            if total < 20 {
                return Err(Error::InvalidInnerPacket);
            }
            total
        }
        Some(6) => {
            let b = plain.get(4..6).ok_or(Error::InvalidInnerPacket)?;
            40 + usize::from(u16::from_be_bytes([b[0], b[1]]))
        }
        _ => return Err(Error::InvalidInnerPacket),
    };
    if len > plain.len() {
        return Err(Error::InvalidInnerPacket);
    }
    Ok(len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wireguard::aead::RingChaCha20Poly1305;

    #[test]
    fn padding() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(16, 1420), 16);
        assert_eq!(padded_len(17, 1420), 32);
        assert_eq!(padded_len(1419, 1420), 1420, "never padded past the MTU");
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(
            padded_len(1500, 1420),
            1500,
            "oversized packets are not truncated"
        );
    }

    fn ipv4(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p
    }

    #[test]
    fn seal_open_round_trip_with_padding() {
        let aead = RingChaCha20Poly1305::new(&[1; 32]).unwrap();
        let inner = ipv4(45);
        let mut buf = vec![0xffu8; 200];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + inner.len()].copy_from_slice(&inner);
        let n = seal(&aead, 0xabcd, 7, &mut buf, inner.len(), 1420).unwrap();
        assert_eq!(n, 16 + 48 + 16);
        assert_eq!(&buf[..4], &[4, 0, 0, 0]);
        assert_eq!(&buf[4..8], &0xabcdu32.to_le_bytes());
        assert_eq!(&buf[8..16], &7u64.to_le_bytes());

        let mut msg = DataMut::parse(&mut buf[..n]).unwrap();
        assert_eq!(open(&aead, &mut msg).unwrap(), 48);
        let plain = &buf[DATA_HEADER_LEN..DATA_HEADER_LEN + 48];
        assert_eq!(&plain[..45], &inner[..]);
        assert_eq!(&plain[45..], &[0, 0, 0], "padding is zeros");
        assert_eq!(inner_packet_len(plain).unwrap(), 45);
    }

    #[test]
    fn wrong_counter_or_tampering_fails() {
        let aead = RingChaCha20Poly1305::new(&[1; 32]).unwrap();
        let mut buf = vec![0u8; 100];
        let n = seal(&aead, 1, 3, &mut buf, 20, 1420).unwrap();
        let mut other = buf[..n].to_vec();
        other[8] = 4;
        assert_eq!(
            open(&aead, &mut DataMut::parse(&mut other).unwrap()),
            Err(Error::TransportDecrypt)
        );
        let mut other = buf[..n].to_vec();
        other[20] ^= 1;
        assert_eq!(
            open(&aead, &mut DataMut::parse(&mut other).unwrap()),
            Err(Error::TransportDecrypt)
        );
    }

    #[test]
    fn keepalive_is_32_bytes() {
        let aead = RingChaCha20Poly1305::new(&[2; 32]).unwrap();
        let mut buf = [0u8; 32];
        assert_eq!(seal(&aead, 1, 0, &mut buf, 0, 1420).unwrap(), 32);
        assert_eq!(
            open(&aead, &mut DataMut::parse(&mut buf).unwrap()).unwrap(),
            0
        );
    }

    #[test]
    fn small_buffer_is_an_error() {
        let aead = RingChaCha20Poly1305::new(&[2; 32]).unwrap();
        let mut buf = [0u8; 40];
        assert_eq!(
            seal(&aead, 1, 0, &mut buf, 20, 1420),
            Err(Error::BufferTooSmall { need: 64, have: 40 })
        );
    }

    #[test]
    fn inner_lengths() {
        assert_eq!(inner_packet_len(&ipv4(20)).unwrap(), 20);
        let mut v6 = vec![0u8; 64];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(inner_packet_len(&v6).unwrap(), 48);
        v6[4..6].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(inner_packet_len(&v6), Err(Error::InvalidInnerPacket));
        assert_eq!(
            inner_packet_len(&[0x45, 0, 0, 10]),
            Err(Error::InvalidInnerPacket)
        );
        assert_eq!(
            inner_packet_len(&[0x10; 40]),
            Err(Error::InvalidInnerPacket)
        );
        assert_eq!(inner_packet_len(&[0x45]), Err(Error::InvalidInnerPacket));
        assert_eq!(inner_packet_len(&[]), Err(Error::InvalidInnerPacket));
    }
}
