//! Why a datagram or a call was refused. Every variant is a counted drop in
//! [`TunnelStats`](super::TunnelStats), never a panic.

/// Errors of the WireGuard core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the smallest message, or not the exact size of its type.
    #[error("message of type {kind} has a bad length {len}")]
    BadLength { kind: u8, len: usize },
    /// The first byte is not one of the four message types, or the reserved bytes are not zero.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// MAC1 does not match our public key: not for us, or forged.
    #[error("invalid mac1")]
    InvalidMac1,
    /// A handshake AEAD (static key, timestamp, empty payload, cookie) did not authenticate.
    #[error("handshake decryption failed")]
    HandshakeDecrypt,
    /// A Diffie-Hellman result was all zeros (low-order point).
    #[error("non-contributory Diffie-Hellman")]
    WeakKey,
    /// The initiation carries a static key that is not this tunnel's peer.
    #[error("unknown peer static key")]
    UnknownPeer,
    /// The initiation's TAI64N timestamp is not newer than the last accepted one.
    #[error("replayed handshake initiation")]
    ReplayedInitiation,
    /// Initiations from this peer arrive faster than the protocol allows.
    #[error("handshake initiation flood")]
    InitiationFlood,
    /// A response or cookie reply that matches no handshake in progress.
    #[error("unexpected handshake message")]
    UnexpectedHandshake,
    /// A data message whose receiver index names no live session.
    #[error("unknown receiver index {0:#010x}")]
    UnknownIndex(u32),
    /// A data message for a session past REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES.
    #[error("session expired")]
    SessionExpired,
    /// A data message counter already seen or behind the replay window.
    #[error("replayed or too old counter {0}")]
    Replay(u64),
    /// A data message that did not authenticate.
    #[error("transport decryption failed")]
    TransportDecrypt,
    /// A decrypted payload that is not an IPv4/IPv6 packet of consistent length.
    #[error("invalid inner packet")]
    InvalidInnerPacket,
    /// The caller's buffer cannot hold the result.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// The sending key cannot encrypt more messages.
    #[error("sending counter exhausted")]
    CounterExhausted,
    /// A tunnel id that names no tunnel.
    #[error("unknown tunnel")]
    UnknownTunnel,
    /// A worker has no usable session for the tunnel; the owner stages the packet.
    #[error("no session to send on")]
    NoSession,
    /// The AEAD implementation refused the operation (input too long).
    #[error("aead failure")]
    Aead,
}

/// The reason of a drop, as a small index for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    BadLength,
    UnknownType,
    InvalidMac1,
    HandshakeDecrypt,
    WeakKey,
    UnknownPeer,
    ReplayedInitiation,
    InitiationFlood,
    UnexpectedHandshake,
    UnknownIndex,
    SessionExpired,
    Replay,
    TransportDecrypt,
    InvalidInnerPacket,
    BufferTooSmall,
    CounterExhausted,
    UnknownTunnel,
    NoSession,
    Aead,
    /// A staged packet pushed out by a newer one, or purged when a handshake gave up.
    StagedOverflow,
}

impl DropReason {
    /// Number of reasons (size of a counter array).
    pub const COUNT: usize = 20;

    /// All reasons, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::BadLength,
        DropReason::UnknownType,
        DropReason::InvalidMac1,
        DropReason::HandshakeDecrypt,
        DropReason::WeakKey,
        DropReason::UnknownPeer,
        DropReason::ReplayedInitiation,
        DropReason::InitiationFlood,
        DropReason::UnexpectedHandshake,
        DropReason::UnknownIndex,
        DropReason::SessionExpired,
        DropReason::Replay,
        DropReason::TransportDecrypt,
        DropReason::InvalidInnerPacket,
        DropReason::BufferTooSmall,
        DropReason::CounterExhausted,
        DropReason::UnknownTunnel,
        DropReason::NoSession,
        DropReason::Aead,
        DropReason::StagedOverflow,
    ];

    /// A stable snake_case name for logs and status output.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::BadLength => "bad_length",
            DropReason::UnknownType => "unknown_type",
            DropReason::InvalidMac1 => "invalid_mac1",
            DropReason::HandshakeDecrypt => "handshake_decrypt",
            DropReason::WeakKey => "weak_key",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::ReplayedInitiation => "replayed_initiation",
            DropReason::InitiationFlood => "initiation_flood",
            DropReason::UnexpectedHandshake => "unexpected_handshake",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::SessionExpired => "session_expired",
            DropReason::Replay => "replay",
            DropReason::TransportDecrypt => "transport_decrypt",
            DropReason::InvalidInnerPacket => "invalid_inner_packet",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::CounterExhausted => "counter_exhausted",
            DropReason::UnknownTunnel => "unknown_tunnel",
            DropReason::NoSession => "no_session",
            DropReason::Aead => "aead",
            DropReason::StagedOverflow => "staged_overflow",
        }
    }
}

impl Error {
    /// The drop counter this error feeds.
    pub const fn reason(&self) -> DropReason {
        match self {
            Error::BadLength { .. } => DropReason::BadLength,
            Error::UnknownType(_) => DropReason::UnknownType,
            Error::InvalidMac1 => DropReason::InvalidMac1,
            Error::HandshakeDecrypt => DropReason::HandshakeDecrypt,
            Error::WeakKey => DropReason::WeakKey,
            Error::UnknownPeer => DropReason::UnknownPeer,
            Error::ReplayedInitiation => DropReason::ReplayedInitiation,
            Error::InitiationFlood => DropReason::InitiationFlood,
            Error::UnexpectedHandshake => DropReason::UnexpectedHandshake,
            Error::UnknownIndex(_) => DropReason::UnknownIndex,
            Error::SessionExpired => DropReason::SessionExpired,
            Error::Replay(_) => DropReason::Replay,
            Error::TransportDecrypt => DropReason::TransportDecrypt,
            Error::InvalidInnerPacket => DropReason::InvalidInnerPacket,
            Error::BufferTooSmall { .. } => DropReason::BufferTooSmall,
            Error::CounterExhausted => DropReason::CounterExhausted,
            Error::UnknownTunnel => DropReason::UnknownTunnel,
            Error::NoSession => DropReason::NoSession,
            Error::Aead => DropReason::Aead,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }
}
