//! A sans-IO WireGuard implementation: no sockets, no clock, no threads inside.
//!
//! [`Tunnel`] is one peer's state machine; [`Device`] dispatches datagrams among tunnels that
//! share a static key. Everything is fed bytes, an [`Instant`] and randomness, and answers
//! with bytes to send and packets to deliver. Data messages are sealed and opened in place
//! in the caller's buffers. See docs/wireguard.md for the module map and the choices.

pub mod aead;
pub mod cookie;
pub mod crypto;
pub mod device;
mod error;
pub mod messages;
pub mod noise;
pub mod replay;
pub mod session;
pub mod sessions;
pub mod tai64n;
pub mod time;
pub mod timers;
pub mod transport;
pub mod tunnel;

pub use aead::{Aead, RingChaCha20Poly1305, RustCryptoChaCha20Poly1305};
pub use device::{Device, TunnelId};
pub use error::{DropReason, Error};
pub use messages::{DATA_HEADER_LEN, DATA_MIN_LEN, INITIATION_LEN, RESPONSE_LEN};
pub use noise::StaticIdentity;
pub use session::Limits;
pub use sessions::{Opened, SessionTable};
pub use time::Instant;
pub use tunnel::{Action, Encapsulated, PeerConfig, Tunnel, TunnelState, TunnelStats};

/// Derives the public key of a private key (for configuration tools and tests).
pub fn public_key(private_key: &[u8; 32]) -> [u8; 32] {
    *StaticIdentity::new(*private_key).public_key()
}

#[cfg(test)]
mod tests;
