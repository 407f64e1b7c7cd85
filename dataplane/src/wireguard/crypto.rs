//! The handshake's primitives, as the WireGuard paper names them: HASH (BLAKE2s-256), MAC
//! (keyed BLAKE2s with a 16-byte output), HMAC (HMAC-BLAKE2s), KDF1..3 (HKDF over that HMAC)
//! and DH (X25519, refusing all-zero results like the reference implementations).
//! Intermediate secrets live in `Zeroizing` buffers so they are wiped when dropped.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac as _, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use hmac::SimpleHmac;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::Error;

/// Length of keys, hashes and chaining keys.
pub const KEY_LEN: usize = 32;
/// Length of a MAC1/MAC2 field and of a cookie.
pub const MAC_LEN: usize = 16;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// A 32-byte secret that is wiped on drop.
pub type SecretKey = Zeroizing<[u8; KEY_LEN]>;

/// HASH(parts[0] || parts[1] || ...): BLAKE2s-256.
pub fn hash(parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// MAC(key, parts...): keyed BLAKE2s with a 16-byte digest (the digest length is part of the
/// BLAKE2 parameter block, so this is not a truncated 32-byte MAC). Keys are 32 bytes (mac1,
/// cookie derivation) or 16 bytes (a cookie keying mac2); the key length is hashed too, so a
/// 16-byte key must not be padded.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // Keys of 1..=32 bytes are accepted; every caller passes 16 or 32, so the error arm
    // cannot be taken. It yields an all-zero MAC, which verifiers never treat as special.
    let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) else {
        return [0; MAC_LEN];
    };
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// Constant-time comparison of two MACs.
pub fn mac_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.ct_eq(b).into()
}

/// HMAC-BLAKE2s(key, parts...).
pub fn hmac(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> SecretKey {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // HMAC takes keys of any length: the error arm cannot be taken.
    let Ok(mut m) = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key) else {
        return out;
    };
    for p in parts {
        Update::update(&mut m, p);
    }
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// KDF1(key, input): the first HKDF output.
pub fn kdf1(key: &[u8; KEY_LEN], input: &[u8]) -> SecretKey {
    let t0 = hmac(key, &[input]);
    hmac(&t0, &[&[1]])
}

/// KDF2(key, input): the first two HKDF outputs.
pub fn kdf2(key: &[u8; KEY_LEN], input: &[u8]) -> (SecretKey, SecretKey) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    let t2 = hmac(&t0, &[&t1[..], &[2]]);
    (t1, t2)
}

/// KDF3(key, input): the first three HKDF outputs.
pub fn kdf3(key: &[u8; KEY_LEN], input: &[u8]) -> (SecretKey, SecretKey, SecretKey) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    let t2 = hmac(&t0, &[&t1[..], &[2]]);
    let t3 = hmac(&t0, &[&t2[..], &[3]]);
    (t1, t2, t3)
}

/// DH(private, public): X25519, refusing a non-contributory (all-zero) result.
pub fn dh(private: &StaticSecret, public: &[u8; KEY_LEN]) -> Result<SecretKey, Error> {
    let shared = private.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(Error::WeakKey);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// DH-PUBKEY(private).
pub fn public_key(private: &StaticSecret) -> [u8; KEY_LEN] {
    PublicKey::from(private).to_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // RFC 7693 appendix B.
    #[test]
    fn blake2s_rfc7693_abc() {
        assert_eq!(
            hash(&[b"abc"]),
            h("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
        );
        // Split input gives the same digest.
        assert_eq!(hash(&[b"a", b"", b"bc"]), hash(&[b"abc"]));
    }

    // The BLAKE2 reference KAT (blake2s-kat.txt): key 00..1f, inputs "" and 00.
    #[test]
    fn keyed_blake2s_reference_kat() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let mut m =
            <Blake2sMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(&key).unwrap();
        Update::update(&mut m, b"");
        let out: [u8; 32] = m.finalize_fixed().into();
        assert_eq!(
            out,
            h("48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49")
        );
        let mut m =
            <Blake2sMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(&key).unwrap();
        Update::update(&mut m, &[0u8]);
        let out: [u8; 32] = m.finalize_fixed().into();
        assert_eq!(
            out,
            h("40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1")
        );
    }

    // A 16-byte-output keyed BLAKE2s differs from the truncated 32-byte one: the output
    // length is hashed into the parameter block, which is what WireGuard's MAC relies on.
    #[test]
    fn mac_is_a_16_byte_blake2s_not_a_truncation() {
        let key = [7u8; 32];
        let m16 = mac(&key, &[b"hello"]);
        let mut m =
            <Blake2sMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(&key).unwrap();
        Update::update(&mut m, b"hello");
        let m32: [u8; 32] = m.finalize_fixed().into();
        assert_ne!(&m16[..], &m32[..16]);
        assert_eq!(mac(&key, &[b"hel", b"lo"]), m16);
        assert!(mac_eq(&m16, &m16));
        assert!(!mac_eq(&m16, &[0; 16]));
    }

    // The protocol's initial chaining key and hash, as published with the reference
    // implementations: HASH(CONSTRUCTION) and HASH(C || IDENTIFIER).
    #[test]
    fn initial_chaining_key_and_hash() {
        let ck = hash(&[b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"]);
        assert_eq!(
            ck,
            h("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
        );
        let hh = hash(&[&ck, b"WireGuard v1 zx2c4 Jason@zx2c4.com"]);
        assert_eq!(
            hh,
            h("2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3")
        );
    }

    // HKDF known answers published with a reference implementation (computed by another,
    // independent one): key = "" / deadbeef, input = "".
    #[test]
    fn kdf_known_answers() {
        let cases: [(&str, [&str; 3]); 2] = [
            (
                "",
                [
                    "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
                    "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
                    "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
                ],
            ),
            (
                "deadbeef",
                [
                    "55329dc80e690fd86bd9661f0851c9b3686df2b1fda0347bc3d27958254b32c6",
                    "8dfc6d33a8118ffe408b31ddac25f72aee9115a45b69ba176ad012b243834fee",
                    "d69e852a2896569ea54a67969aa1800287921dac53ce6db4b4e12192f263c4c4",
                ],
            ),
        ];
        for (key_hex, outs) in cases {
            // The HMAC key is the raw key bytes; HMAC pads short keys with zeros, so a short
            // key and its zero-padded 32-byte form are the same HMAC key.
            let mut key = [0u8; 32];
            let raw = hex::decode(key_hex).unwrap();
            key[..raw.len()].copy_from_slice(&raw);
            let want: Vec<[u8; 32]> = outs.iter().map(|s| h(s)).collect();
            assert_eq!(*kdf1(&key, b""), want[0]);
            let (a, b) = kdf2(&key, b"");
            assert_eq!((*a, *b), (want[0], want[1]));
            let (a, b, c) = kdf3(&key, b"");
            assert_eq!((*a, *b, *c), (want[0], want[1], want[2]));
        }
    }

    // RFC 7748 section 5.2 (scalar multiplication) and 6.1 (Diffie-Hellman).
    #[test]
    fn x25519_rfc7748_vectors() {
        let k = h::<32>("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = h::<32>("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        assert_eq!(
            x25519_dalek::x25519(k, u),
            h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
        );
        let k = h::<32>("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d");
        let u = h::<32>("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493");
        assert_eq!(
            x25519_dalek::x25519(k, u),
            h("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
        );

        let alice = StaticSecret::from(h::<32>(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let bob = StaticSecret::from(h::<32>(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        let alice_pub = public_key(&alice);
        let bob_pub = public_key(&bob);
        assert_eq!(
            alice_pub,
            h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            bob_pub,
            h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = h::<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(*dh(&alice, &bob_pub).unwrap(), shared);
        assert_eq!(*dh(&bob, &alice_pub).unwrap(), shared);
    }

    // RFC 7748 section 5.2: 1 and 1,000 iterations of k = X25519(k, u), u = old k.
    #[test]
    fn x25519_rfc7748_iterations() {
        let mut k = [0u8; 32];
        k[0] = 9;
        let mut u = k;
        for i in 1..=1000 {
            let next = x25519_dalek::x25519(k, u);
            u = k;
            k = next;
            if i == 1 {
                assert_eq!(
                    k,
                    h("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
                );
            }
        }
        assert_eq!(
            k,
            h("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
        );
    }

    #[test]
    fn dh_refuses_low_order_points() {
        let me = StaticSecret::from([42u8; 32]);
        assert_eq!(dh(&me, &[0u8; 32]).unwrap_err(), Error::WeakKey);
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(dh(&me, &one).unwrap_err(), Error::WeakKey);
    }
}
