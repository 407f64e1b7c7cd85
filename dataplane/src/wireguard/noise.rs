//! The Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake as WireGuard frames it.
//!
//! Pure functions over explicit state: ephemeral keys, indices and timestamps come in as
//! arguments, so tests can fix them and compare byte for byte with an independent Noise
//! implementation. The [`Tunnel`](super::Tunnel) decides when to call what.
//!
//! ```text
//! C = HASH(CONSTRUCTION); H = HASH(C || IDENTIFIER); H = HASH(H || S_r.pub)
//! initiation  -> e, es, s, ss, {timestamp}
//! response    <- e, ee, se, psk, {}
//! (T_i->r, T_r->i) = KDF2(C, "")
//! ```
//! Every ephemeral is also mixed into C (C = KDF1(C, e.pub)), as Noise does in PSK modes.

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::aead::{Aead, RingChaCha20Poly1305};
use super::crypto::{self, dh, hash, kdf1, kdf2, kdf3, SecretKey, KEY_LEN, TAG_LEN};
use super::messages::{self, Initiation, Response, Writer, INITIATION_LEN, RESPONSE_LEN};
use super::tai64n::{Tai64N, TAI64N_LEN};
use super::Error;

/// The Noise protocol name.
pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's identifier, mixed in as the Noise prologue.
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// A local static key pair.
pub struct StaticIdentity {
    secret: StaticSecret,
    public: [u8; KEY_LEN],
}

impl StaticIdentity {
    /// From a 32-byte private key (clamped by X25519 on use).
    pub fn new(private_key: [u8; KEY_LEN]) -> Self {
        let secret = StaticSecret::from(private_key);
        let public = crypto::public_key(&secret);
        Self { secret, public }
    }

    /// The public key peers configure for us.
    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }
}

/// What the handshake needs to know about one peer.
pub struct PeerKeys {
    public: [u8; KEY_LEN],
    psk: SecretKey,
    /// DH(S_local, S_peer), computed once.
    static_static: SecretKey,
}

impl PeerKeys {
    /// Precomputes the static-static DH; refuses a peer key of low order.
    pub fn new(
        identity: &StaticIdentity,
        peer_public: [u8; KEY_LEN],
        preshared_key: Option<[u8; KEY_LEN]>,
    ) -> Result<Self, Error> {
        Ok(Self {
            public: peer_public,
            psk: Zeroizing::new(preshared_key.unwrap_or([0; KEY_LEN])),
            static_static: dh(&identity.secret, &peer_public)?,
        })
    }

    /// The peer's static public key.
    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }
}

/// The initiator's state between sending an initiation and receiving its response.
pub struct InitiatorState {
    /// The sender index we put in the initiation.
    pub local_index: u32,
    ck: SecretKey,
    h: Zeroizing<[u8; KEY_LEN]>,
    ephemeral: StaticSecret,
}

/// Transport keys and indices produced by a completed handshake.
pub struct SessionKeys {
    pub send: SecretKey,
    pub recv: SecretKey,
    /// Our index: the peer puts it in messages to us.
    pub local_index: u32,
    /// The peer's index: we put it in messages to the peer.
    pub remote_index: u32,
    /// Whether we sent the initiation of this handshake.
    pub initiator: bool,
}

/// An initiation whose static key has been decrypted, before the peer is known.
pub struct InitiationStatic {
    /// The initiator's static public key: which peer this claims to be.
    pub peer_public: [u8; KEY_LEN],
    ck: SecretKey,
    h: Zeroizing<[u8; KEY_LEN]>,
}

/// A fully authenticated initiation, ready to be answered.
pub struct ConsumedInitiation {
    pub timestamp: Tai64N,
    /// The initiator's sender index.
    pub remote_index: u32,
    remote_ephemeral: [u8; KEY_LEN],
    ck: SecretKey,
    h: Zeroizing<[u8; KEY_LEN]>,
}

fn initial_state(responder_public: &[u8; KEY_LEN]) -> (SecretKey, Zeroizing<[u8; KEY_LEN]>) {
    let ck = hash(&[CONSTRUCTION]);
    let h = hash(&[&hash(&[&ck, IDENTIFIER]), responder_public]);
    (Zeroizing::new(ck), Zeroizing::new(h))
}

fn mix_hash(h: &mut [u8; KEY_LEN], data: &[u8]) {
    *h = hash(&[&h[..], data]);
}

/// Handshake AEADs always use counter 0 and the transcript hash as associated data.
fn seal(key: &[u8; KEY_LEN], h: &[u8; KEY_LEN], in_out: &mut [u8]) -> Result<[u8; TAG_LEN], Error> {
    RingChaCha20Poly1305::new(key)?.seal_in_place(&[0; 12], h, in_out)
}

fn open(
    key: &[u8; KEY_LEN],
    h: &[u8; KEY_LEN],
    in_out: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), Error> {
    RingChaCha20Poly1305::new(key)?
        .open_in_place(&[0; 12], h, in_out, tag)
        .map_err(|_| Error::HandshakeDecrypt)
}

fn split_ct<const N: usize, const M: usize>(ct: &[u8; M]) -> ([u8; N], [u8; TAG_LEN]) {
    let mut body = [0u8; N];
    let mut tag = [0u8; TAG_LEN];
    body.copy_from_slice(&ct[..N]);
    tag.copy_from_slice(&ct[N..]);
    (body, tag)
}

/// Writes an initiation (everything but mac1/mac2, which are zeroed) into `out`.
pub fn create_initiation(
    identity: &StaticIdentity,
    peer: &PeerKeys,
    ephemeral: StaticSecret,
    local_index: u32,
    timestamp: Tai64N,
    out: &mut [u8; INITIATION_LEN],
) -> Result<InitiatorState, Error> {
    let (ck, mut h) = initial_state(&peer.public);
    let e_pub = crypto::public_key(&ephemeral);
    let es = dh(&ephemeral, &peer.public)?;

    let mut w = Writer::new(&mut out[..]);
    let short = Error::BufferTooSmall {
        need: INITIATION_LEN,
        have: 0,
    };
    *w.take::<4>().ok_or(short)? = messages::header(messages::TYPE_INITIATION);
    *w.take::<4>().ok_or(short)? = local_index.to_le_bytes();
    let f_ephemeral = w.take::<KEY_LEN>().ok_or(short)?;
    let f_static = w.take::<{ KEY_LEN + TAG_LEN }>().ok_or(short)?;
    let f_timestamp = w.take::<{ TAI64N_LEN + TAG_LEN }>().ok_or(short)?;
    let f_macs = w.take::<32>().ok_or(short)?;

    // e
    *f_ephemeral = e_pub;
    mix_hash(&mut h, &e_pub);
    let ck = kdf1(&ck, &e_pub);
    // es
    let (ck, key) = kdf2(&ck, &es[..]);
    // s
    f_static[..KEY_LEN].copy_from_slice(&identity.public);
    let tag = seal(&key, &h, &mut f_static[..KEY_LEN])?;
    f_static[KEY_LEN..].copy_from_slice(&tag);
    mix_hash(&mut h, &f_static[..]);
    // ss
    let (ck, key) = kdf2(&ck, &peer.static_static[..]);
    // {timestamp}
    f_timestamp[..TAI64N_LEN].copy_from_slice(timestamp.as_bytes());
    let tag = seal(&key, &h, &mut f_timestamp[..TAI64N_LEN])?;
    f_timestamp[TAI64N_LEN..].copy_from_slice(&tag);
    mix_hash(&mut h, &f_timestamp[..]);

    *f_macs = [0; 32];
    Ok(InitiatorState {
        local_index,
        ck,
        h,
        ephemeral,
    })
}

/// First half of consuming an initiation: e, es, s. One DH; tells which peer it claims to be.
pub fn open_initiation_static(
    identity: &StaticIdentity,
    msg: &Initiation<'_>,
) -> Result<InitiationStatic, Error> {
    let (ck, mut h) = initial_state(&identity.public);
    // e
    mix_hash(&mut h, msg.ephemeral);
    let ck = kdf1(&ck, msg.ephemeral);
    // es
    let es = dh(&identity.secret, msg.ephemeral)?;
    let (ck, key) = kdf2(&ck, &es[..]);
    // s
    let (mut peer_public, tag) = split_ct::<KEY_LEN, { KEY_LEN + TAG_LEN }>(msg.encrypted_static);
    open(&key, &h, &mut peer_public, &tag)?;
    mix_hash(&mut h, msg.encrypted_static);
    Ok(InitiationStatic { peer_public, ck, h })
}

/// Second half: ss and the timestamp, with the peer the static key named.
pub fn open_initiation_timestamp(
    partial: InitiationStatic,
    peer: &PeerKeys,
    msg: &Initiation<'_>,
) -> Result<ConsumedInitiation, Error> {
    if partial.peer_public != peer.public {
        return Err(Error::UnknownPeer);
    }
    let InitiationStatic { ck, mut h, .. } = partial;
    // ss
    let (ck, key) = kdf2(&ck, &peer.static_static[..]);
    // {timestamp}
    let (mut ts, tag) = split_ct::<TAI64N_LEN, { TAI64N_LEN + TAG_LEN }>(msg.encrypted_timestamp);
    open(&key, &h, &mut ts, &tag)?;
    mix_hash(&mut h, msg.encrypted_timestamp);
    Ok(ConsumedInitiation {
        timestamp: Tai64N(ts),
        remote_index: msg.sender,
        remote_ephemeral: *msg.ephemeral,
        ck,
        h,
    })
}

/// Writes the response to a consumed initiation (macs zeroed) and derives the session.
pub fn create_response(
    consumed: ConsumedInitiation,
    peer: &PeerKeys,
    ephemeral: StaticSecret,
    local_index: u32,
    out: &mut [u8; RESPONSE_LEN],
) -> Result<SessionKeys, Error> {
    let ConsumedInitiation {
        remote_index,
        remote_ephemeral,
        ck,
        mut h,
        ..
    } = consumed;
    let e_pub = crypto::public_key(&ephemeral);
    let ee = dh(&ephemeral, &remote_ephemeral)?;
    let se = dh(&ephemeral, &peer.public)?;

    let mut w = Writer::new(&mut out[..]);
    let short = Error::BufferTooSmall {
        need: RESPONSE_LEN,
        have: 0,
    };
    *w.take::<4>().ok_or(short)? = messages::header(messages::TYPE_RESPONSE);
    *w.take::<4>().ok_or(short)? = local_index.to_le_bytes();
    *w.take::<4>().ok_or(short)? = remote_index.to_le_bytes();
    let f_ephemeral = w.take::<KEY_LEN>().ok_or(short)?;
    let f_empty = w.take::<TAG_LEN>().ok_or(short)?;
    let f_macs = w.take::<32>().ok_or(short)?;

    // e
    *f_ephemeral = e_pub;
    mix_hash(&mut h, &e_pub);
    let ck = kdf1(&ck, &e_pub);
    // ee, se
    let ck = kdf1(&ck, &ee[..]);
    let ck = kdf1(&ck, &se[..]);
    // psk
    let (ck, tau, key) = kdf3(&ck, &peer.psk[..]);
    mix_hash(&mut h, &tau[..]);
    // {}
    *f_empty = seal(&key, &h, &mut [])?;
    *f_macs = [0; 32];

    let (recv, send) = kdf2(&ck, &[]);
    Ok(SessionKeys {
        send,
        recv,
        local_index,
        remote_index,
        initiator: false,
    })
}

/// Consumes the response to our initiation and derives the session.
pub fn consume_response(
    state: &InitiatorState,
    identity: &StaticIdentity,
    peer: &PeerKeys,
    msg: &Response<'_>,
) -> Result<SessionKeys, Error> {
    if msg.receiver != state.local_index {
        return Err(Error::UnexpectedHandshake);
    }
    let ck = state.ck.clone();
    let mut h = state.h.clone();
    // e
    mix_hash(&mut h, msg.ephemeral);
    let ck = kdf1(&ck, msg.ephemeral);
    // ee, se
    let ee = dh(&state.ephemeral, msg.ephemeral)?;
    let ck = kdf1(&ck, &ee[..]);
    let se = dh(&identity.secret, msg.ephemeral)?;
    let ck = kdf1(&ck, &se[..]);
    // psk
    let (ck, tau, key) = kdf3(&ck, &peer.psk[..]);
    mix_hash(&mut h, &tau[..]);
    // {}
    open(&key, &h, &mut [], msg.encrypted_nothing)?;

    let (send, recv) = kdf2(&ck, &[]);
    Ok(SessionKeys {
        send,
        recv,
        local_index: state.local_index,
        remote_index: msg.sender,
        initiator: true,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wireguard::time::Instant;

    fn keys(seed: u8) -> StaticIdentity {
        StaticIdentity::new([seed; 32])
    }

    fn eph(seed: u8) -> StaticSecret {
        StaticSecret::from([seed; 32])
    }

    struct Pair {
        alice: StaticIdentity,
        bob: StaticIdentity,
        alice_sees_bob: PeerKeys,
        bob_sees_alice: PeerKeys,
    }

    fn pair(psk: Option<[u8; 32]>) -> Pair {
        let alice = keys(1);
        let bob = keys(2);
        let alice_sees_bob = PeerKeys::new(&alice, *bob.public_key(), psk).unwrap();
        let bob_sees_alice = PeerKeys::new(&bob, *alice.public_key(), psk).unwrap();
        Pair {
            alice,
            bob,
            alice_sees_bob,
            bob_sees_alice,
        }
    }

    fn run(p: &Pair) -> (SessionKeys, SessionKeys, Tai64N) {
        let ts = Tai64N::from_instant(Instant::from_secs(1_700_000_000));
        let mut init = [0u8; INITIATION_LEN];
        let st = create_initiation(&p.alice, &p.alice_sees_bob, eph(3), 11, ts, &mut init).unwrap();
        let msg = Initiation::parse(&init).unwrap();
        let partial = open_initiation_static(&p.bob, &msg).unwrap();
        assert_eq!(&partial.peer_public, p.alice.public_key());
        let consumed = open_initiation_timestamp(partial, &p.bob_sees_alice, &msg).unwrap();
        assert_eq!(consumed.remote_index, 11);
        let mut resp = [0u8; RESPONSE_LEN];
        let bob_keys = create_response(consumed, &p.bob_sees_alice, eph(4), 22, &mut resp).unwrap();
        let msg = Response::parse(&resp).unwrap();
        let alice_keys = consume_response(&st, &p.alice, &p.alice_sees_bob, &msg).unwrap();
        (alice_keys, bob_keys, ts)
    }

    #[test]
    fn both_sides_derive_mirrored_keys() {
        for psk in [None, Some([9u8; 32])] {
            let p = pair(psk);
            let (a, b, _) = run(&p);
            assert_eq!(*a.send, *b.recv);
            assert_eq!(*a.recv, *b.send);
            assert_ne!(*a.send, *a.recv);
            assert_eq!((a.local_index, a.remote_index, a.initiator), (11, 22, true));
            assert_eq!(
                (b.local_index, b.remote_index, b.initiator),
                (22, 11, false)
            );
        }
    }

    #[test]
    fn psk_mismatch_fails_at_the_response() {
        let alice = keys(1);
        let bob = keys(2);
        let a_b = PeerKeys::new(&alice, *bob.public_key(), Some([1; 32])).unwrap();
        let b_a = PeerKeys::new(&bob, *alice.public_key(), Some([2; 32])).unwrap();
        let ts = Tai64N::from_instant(Instant::from_secs(5));
        let mut init = [0u8; INITIATION_LEN];
        let st = create_initiation(&alice, &a_b, eph(3), 1, ts, &mut init).unwrap();
        let msg = Initiation::parse(&init).unwrap();
        let consumed =
            open_initiation_timestamp(open_initiation_static(&bob, &msg).unwrap(), &b_a, &msg)
                .unwrap();
        let mut resp = [0u8; RESPONSE_LEN];
        create_response(consumed, &b_a, eph(4), 2, &mut resp).unwrap();
        let msg = Response::parse(&resp).unwrap();
        assert_eq!(
            consume_response(&st, &alice, &a_b, &msg).err(),
            Some(Error::HandshakeDecrypt)
        );
    }

    #[test]
    fn initiation_for_someone_else_or_tampered_is_refused() {
        let p = pair(None);
        let carol = keys(5);
        let ts = Tai64N::from_instant(Instant::from_secs(5));
        let mut init = [0u8; INITIATION_LEN];
        create_initiation(&p.alice, &p.alice_sees_bob, eph(3), 1, ts, &mut init).unwrap();
        // Carol cannot open what was sealed to Bob.
        let msg = Initiation::parse(&init).unwrap();
        assert_eq!(
            open_initiation_static(&carol, &msg).err(),
            Some(Error::HandshakeDecrypt)
        );
        // Bob refuses a static key that is not the configured peer's.
        let carol_for_bob = PeerKeys::new(&p.bob, *carol.public_key(), None).unwrap();
        let partial = open_initiation_static(&p.bob, &msg).unwrap();
        assert_eq!(
            open_initiation_timestamp(partial, &carol_for_bob, &msg).err(),
            Some(Error::UnknownPeer)
        );
        // A flipped timestamp byte fails authentication.
        init[90] ^= 1;
        let msg = Initiation::parse(&init).unwrap();
        let partial = open_initiation_static(&p.bob, &msg).unwrap();
        assert_eq!(
            open_initiation_timestamp(partial, &p.bob_sees_alice, &msg).err(),
            Some(Error::HandshakeDecrypt)
        );
        // A low-order ephemeral is refused before any decryption.
        init[8..40].copy_from_slice(&[0; 32]);
        let msg = Initiation::parse(&init).unwrap();
        assert_eq!(
            open_initiation_static(&p.bob, &msg).err(),
            Some(Error::WeakKey)
        );
    }

    #[test]
    fn response_to_another_index_is_refused() {
        let p = pair(None);
        let ts = Tai64N::from_instant(Instant::from_secs(5));
        let mut init = [0u8; INITIATION_LEN];
        let st = create_initiation(&p.alice, &p.alice_sees_bob, eph(3), 1, ts, &mut init).unwrap();
        let msg = Initiation::parse(&init).unwrap();
        let consumed = open_initiation_timestamp(
            open_initiation_static(&p.bob, &msg).unwrap(),
            &p.bob_sees_alice,
            &msg,
        )
        .unwrap();
        let mut resp = [0u8; RESPONSE_LEN];
        create_response(consumed, &p.bob_sees_alice, eph(4), 2, &mut resp).unwrap();
        resp[8] ^= 1;
        let msg = Response::parse(&resp).unwrap();
        assert_eq!(
            consume_response(&st, &p.alice, &p.alice_sees_bob, &msg).err(),
            Some(Error::UnexpectedHandshake)
        );
    }

    #[test]
    fn low_order_peer_key_is_refused_at_configuration() {
        let me = keys(1);
        assert_eq!(
            PeerKeys::new(&me, [0; 32], None).err(),
            Some(Error::WeakKey)
        );
    }

    /// Differential test against `snow`, an independent Noise implementation, with fixed
    /// ephemerals: same bytes on the wire both ways, and the same transport keys.
    mod snow_differential {
        use super::*;
        use crate::wireguard::aead::counter_nonce;

        const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";

        fn snow_builder<'a>(
            local: &'a [u8; 32],
            psk: &'a [u8; 32],
            eph: &'a [u8; 32],
        ) -> snow::Builder<'a> {
            snow::Builder::new(PATTERN.parse().unwrap())
                .local_private_key(local)
                .psk(2, psk)
                .prologue(IDENTIFIER)
                .fixed_ephemeral_key_for_testing_only(eph)
        }

        fn check_transport(ours: &SessionKeys, theirs: &mut snow::StatelessTransportState) {
            // Our sealing with counter n is what snow opens at nonce n, and back.
            for n in [0u64, 1, 5] {
                let plain = b"inner packet";
                let mut buf = plain.to_vec();
                let a = RingChaCha20Poly1305::new(&ours.send).unwrap();
                let tag = a.seal_in_place(&counter_nonce(n), &[], &mut buf).unwrap();
                buf.extend_from_slice(&tag);
                let mut out = [0u8; 64];
                let len = theirs.read_message(n, &buf, &mut out).unwrap();
                assert_eq!(&out[..len], plain);

                let mut wire = [0u8; 64];
                let len = theirs.write_message(n, plain, &mut wire).unwrap();
                let (body, tag) = wire[..len].split_at_mut(len - 16);
                let tag: [u8; 16] = (&*tag).try_into().unwrap();
                let b = RingChaCha20Poly1305::new(&ours.recv).unwrap();
                b.open_in_place(&counter_nonce(n), &[], body, &tag).unwrap();
                assert_eq!(body, plain);
            }
        }

        #[test]
        fn snow_initiator_against_our_responder() {
            for psk in [[0u8; 32], [0x5au8; 32]] {
                let alice_priv = [0x11u8; 32];
                let bob = StaticIdentity::new([0x22; 32]);
                let alice_pub = crypto::public_key(&StaticSecret::from(alice_priv));
                let alice_eph = [0x33u8; 32];
                let ts = Tai64N::from_instant(Instant::from_secs(1_234_567_890));

                let mut hs = snow_builder(&alice_priv, &psk, &alice_eph)
                    .remote_public_key(bob.public_key())
                    .build_initiator()
                    .unwrap();
                let mut noise_msg1 = [0u8; 200];
                let n1 = hs.write_message(ts.as_bytes(), &mut noise_msg1).unwrap();
                assert_eq!(n1, 32 + 48 + 28);

                // Frame it as a WireGuard initiation (index 0x01020304, macs left zero).
                let mut wg = [0u8; INITIATION_LEN];
                wg[0] = 1;
                wg[4..8].copy_from_slice(&0x0102_0304u32.to_le_bytes());
                wg[8..116].copy_from_slice(&noise_msg1[..n1]);

                // Our own initiator produces the very same bytes with the same inputs.
                let alice = StaticIdentity::new(alice_priv);
                let alice_sees_bob = PeerKeys::new(&alice, *bob.public_key(), Some(psk)).unwrap();
                let mut ours = [0u8; INITIATION_LEN];
                create_initiation(
                    &alice,
                    &alice_sees_bob,
                    StaticSecret::from(alice_eph),
                    0x0102_0304,
                    ts,
                    &mut ours,
                )
                .unwrap();
                assert_eq!(ours, wg, "initiation bytes differ from snow's");

                let msg = Initiation::parse(&wg).unwrap();
                let bob_sees_alice = PeerKeys::new(&bob, alice_pub, Some(psk)).unwrap();
                let consumed = open_initiation_timestamp(
                    open_initiation_static(&bob, &msg).unwrap(),
                    &bob_sees_alice,
                    &msg,
                )
                .unwrap();
                assert_eq!(consumed.timestamp, ts);

                let bob_eph = [0x44u8; 32];
                let mut resp = [0u8; RESPONSE_LEN];
                let bob_keys = create_response(
                    consumed,
                    &bob_sees_alice,
                    StaticSecret::from(bob_eph),
                    0x0a0b_0c0d,
                    &mut resp,
                )
                .unwrap();
                // snow reads the Noise part of our response.
                let mut payload = [0u8; 16];
                let n = hs.read_message(&resp[12..60], &mut payload).unwrap();
                assert_eq!(n, 0);
                let mut t = hs.into_stateless_transport_mode().unwrap();
                check_transport(&bob_keys, &mut t);
            }
        }

        #[test]
        fn our_initiator_against_snow_responder() {
            for psk in [[0u8; 32], [0xa5u8; 32]] {
                let alice = StaticIdentity::new([0x55; 32]);
                let bob_priv = [0x66u8; 32];
                let bob_pub = crypto::public_key(&StaticSecret::from(bob_priv));
                let alice_eph = [0x77u8; 32];
                let bob_eph = [0x88u8; 32];
                let ts = Tai64N::from_instant(Instant::from_secs(1_600_000_000));

                let alice_sees_bob = PeerKeys::new(&alice, bob_pub, Some(psk)).unwrap();
                let mut init = [0u8; INITIATION_LEN];
                let st = create_initiation(
                    &alice,
                    &alice_sees_bob,
                    StaticSecret::from(alice_eph),
                    7,
                    ts,
                    &mut init,
                )
                .unwrap();

                let mut hs = snow_builder(&bob_priv, &psk, &bob_eph)
                    .build_responder()
                    .unwrap();
                let mut payload = [0u8; 64];
                let n = hs.read_message(&init[8..116], &mut payload).unwrap();
                assert_eq!(&payload[..n], ts.as_bytes());
                assert_eq!(hs.get_remote_static().unwrap(), alice.public_key());

                let mut noise_msg2 = [0u8; 64];
                let n2 = hs.write_message(&[], &mut noise_msg2).unwrap();
                assert_eq!(n2, 48);
                let mut wg = [0u8; RESPONSE_LEN];
                wg[0] = 2;
                wg[4..8].copy_from_slice(&99u32.to_le_bytes());
                wg[8..12].copy_from_slice(&7u32.to_le_bytes());
                wg[12..60].copy_from_slice(&noise_msg2[..n2]);

                let msg = Response::parse(&wg).unwrap();
                let keys = consume_response(&st, &alice, &alice_sees_bob, &msg).unwrap();
                assert_eq!(keys.remote_index, 99);
                let mut t = hs.into_stateless_transport_mode().unwrap();
                check_transport(&keys, &mut t);
            }
        }
    }
}
