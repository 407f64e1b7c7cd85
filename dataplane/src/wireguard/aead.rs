//! The narrow seam between WireGuard and a ChaCha20-Poly1305 implementation.
//!
//! Transport data goes through [`Aead`], whose production implementation is ring's
//! `CHACHA20_POLY1305` (measured fastest here, see docs/wireguard.md). The seam works in
//! place on caller buffers with a detached tag, which is what the data path needs: the
//! plaintext already sits behind the 16-byte header and the tag follows it. A second
//! implementation over RustCrypto's `chacha20poly1305` exists so benchmarks and tests can
//! compare the two on the same calls.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

use super::crypto::TAG_LEN;
use super::Error;

/// Length of a ChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 12;

/// An AEAD key able to seal and open in place with a detached tag.
pub trait Aead: Sized + Send + Sync {
    /// A short name for benchmark output.
    const NAME: &'static str;

    /// Expands a 32-byte key.
    fn new(key: &[u8; 32]) -> Result<Self, Error>;

    /// Encrypts `in_out` in place and returns the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error>;

    /// Checks `tag` and decrypts `in_out` in place. On failure `in_out` holds no plaintext.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error>;
}

/// The nonce of WireGuard (and Noise): 32 zero bits then the 64-bit counter, little endian.
pub fn counter_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// ring's ChaCha20-Poly1305: the transport implementation.
pub struct RingChaCha20Poly1305(LessSafeKey);

impl Aead for RingChaCha20Poly1305 {
    const NAME: &'static str = "ring";

    fn new(key: &[u8; 32]) -> Result<Self, Error> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| Error::Aead)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            .map_err(|_| Error::Aead)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                in_out,
                0..,
            )
            .map(|_| ())
            .map_err(|_| Error::Aead)
    }
}

/// RustCrypto's ChaCha20-Poly1305: a second implementation for comparison and cross-checks.
pub struct RustCryptoChaCha20Poly1305(chacha20poly1305::ChaCha20Poly1305);

impl Aead for RustCryptoChaCha20Poly1305 {
    const NAME: &'static str = "rustcrypto";

    fn new(key: &[u8; 32]) -> Result<Self, Error> {
        Ok(Self(chacha20poly1305::ChaCha20Poly1305::new(key.into())))
    }

    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .0
            .encrypt_in_place_detached(nonce.into(), aad, in_out)
            .map_err(|_| Error::Aead)?;
        Ok(tag.into())
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        self.0
            .decrypt_in_place_detached(nonce.into(), aad, in_out, tag.into())
            .map_err(|_| Error::Aead)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    struct Vector {
        key: Vec<u8>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        plaintext: Vec<u8>,
        ciphertext: Vec<u8>,
        tag: Vec<u8>,
    }

    fn rfc8439_vectors() -> Vec<Vector> {
        vec![
            // Section 2.8.2.
            Vector {
                key: (0x80u8..=0x9f).collect(),
                nonce: unhex("07000000 4041424344454647"),
                aad: unhex("50515253c0c1c2c3c4c5c6c7"),
                plaintext: b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec(),
                ciphertext: unhex(
                    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
                     3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
                     92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
                     3ff4def08e4b7a9de576d26586cec64b6116",
                ),
                tag: unhex("1ae10b594f09e26a7e902ecbd0600691"),
            },
            // Appendix A.5.
            Vector {
                key: unhex("1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0"),
                nonce: unhex("000000000102030405060708"),
                aad: unhex("f33388860000000000004e91"),
                plaintext: "Internet-Drafts are draft documents valid for a maximum of six months and may be updated, replaced, or obsoleted by other documents at any time. It is inappropriate to use Internet-Drafts as reference material or to cite them other than as /\u{201c}work in progress./\u{201d}".as_bytes().to_vec(),
                ciphertext: unhex(
                    "64a0861575861af460f062c79be643bd5e805cfd345cf389f108670ac76c8cb2
                     4c6cfc18755d43eea09ee94e382d26b0bdb7b73c321b0100d4f03b7f355894cf
                     332f830e710b97ce98c8a84abd0b948114ad176e008d33bd60f982b1ff37c855
                     9797a06ef4f0ef61c186324e2b3506383606907b6a7c02b0f9f6157b53c867e4
                     b9166c767b804d46a59b5216cde7a4e99040c5a40433225ee282a1b0a06c523e
                     af4534d7f83fa1155b0047718cbc546a0d072b04b3564eea1b422273f548271a
                     0bb2316053fa76991955ebd63159434ecebb4e466dae5a1073a6727627097a10
                     49e617d91d361094fa68f0ff77987130305beaba2eda04df997b714d6c6f2c29
                     a6ad5cb4022b02709b",
                ),
                tag: unhex("eead9d67890cbb22392336fea1851f38"),
            },
        ]
    }

    fn check<A: Aead>() {
        for v in rfc8439_vectors() {
            let key: [u8; 32] = v.key.clone().try_into().unwrap();
            let nonce: [u8; 12] = v.nonce.clone().try_into().unwrap();
            let aead = A::new(&key).unwrap();

            let mut buf = v.plaintext.clone();
            let tag = aead.seal_in_place(&nonce, &v.aad, &mut buf).unwrap();
            assert_eq!(buf, v.ciphertext, "{} ciphertext", A::NAME);
            assert_eq!(&tag[..], &v.tag[..], "{} tag", A::NAME);

            aead.open_in_place(&nonce, &v.aad, &mut buf, &tag).unwrap();
            assert_eq!(buf, v.plaintext, "{} plaintext", A::NAME);

            // Any flipped bit in ciphertext, tag or aad is refused.
            let mut bad = v.ciphertext.clone();
            bad[3] ^= 0x40;
            assert_eq!(
                aead.open_in_place(&nonce, &v.aad, &mut bad, &tag),
                Err(Error::Aead)
            );
            let mut bad_tag = tag;
            bad_tag[15] ^= 1;
            let mut ct = v.ciphertext.clone();
            assert_eq!(
                aead.open_in_place(&nonce, &v.aad, &mut ct, &bad_tag),
                Err(Error::Aead)
            );
            let mut ct = v.ciphertext.clone();
            assert_eq!(
                aead.open_in_place(&nonce, b"", &mut ct, &tag),
                Err(Error::Aead)
            );
        }
    }

    #[test]
    fn rfc8439_vectors_through_ring() {
        check::<RingChaCha20Poly1305>();
    }

    #[test]
    fn rfc8439_vectors_through_rustcrypto() {
        check::<RustCryptoChaCha20Poly1305>();
    }

    #[test]
    fn implementations_agree_on_counter_nonces() {
        let key = [0x42u8; 32];
        let a = RingChaCha20Poly1305::new(&key).unwrap();
        let b = RustCryptoChaCha20Poly1305::new(&key).unwrap();
        for (counter, len) in [(0u64, 0usize), (1, 1), (7, 64), (u64::MAX - 1, 1420)] {
            let nonce = counter_nonce(counter);
            let mut x: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut y = x.clone();
            let ta = a.seal_in_place(&nonce, &[], &mut x).unwrap();
            let tb = b.seal_in_place(&nonce, &[], &mut y).unwrap();
            assert_eq!((x, ta), (y, tb));
        }
        assert_eq!(
            counter_nonce(0x0102030405060708),
            [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
    }
}
