//! bgpctl: an embedded BGP EVPN speaker. It learns the local datacenter's prefixes from the
//! fabric's EVPN Route Type 5 routes and exports, for each remote prefix, one RT-5 per chosen
//! gateway. See docs/bgp.md for the module map and the choices made.

pub mod config;
pub mod control;
pub mod md5;
pub mod rib;
pub mod sdwan;
pub mod session;
pub mod speaker;
pub mod wire;
