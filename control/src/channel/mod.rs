//! The orders channel: HTTP/2 over mutually authenticated TLS between the controllers, the
//! gateways and bgpctl, for what is too large for Serf (reports and orders of 100 KB and
//! more). Members find each other's address in their Serf tags (`api`); who they are comes
//! from their certificate, never from the mesh.
//!
//! - [`identity`]: a member's name and role, and the certificate name that carries them.
//! - [`pki`]: the deployment's certificate authority and the certificates it issues
//!   (`gatewan pki`).
//! - [`tls`]: rustls configurations from those files, and checking a peer's identity.
//! - [`http`]: the HTTP/2 server and client, with body limits and deadlines.
//!
//! See docs/controller.md ("The channel").

pub mod http;
pub mod identity;
pub mod pki;
pub mod tls;

pub use identity::{Identity, IdentityError, MemberRole};
pub use tls::{TlsError, TlsFiles, TlsSetup};
