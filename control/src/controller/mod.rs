//! The controller: from probed metrics, transit usage and a policy to versioned orders for the
//! gateways and bgpctl, deterministically. Sans-IO: [`engine::Controller::step`] takes the
//! time and a [`inputs::Snapshot`] and returns [`orders::Orders`]; delivery is the mesh's job.
//!
//! - [`inputs`]: the typed snapshot (membership, gateways, tunnels with probe windows, transit
//!   usage, demand, prefixes).
//! - [`policy`]: the YAML policy, validated with errors that name the field.
//! - [`gate`] and [`dampening`]: SLA gating, brownout detection, recovery hold, flap dampening.
//! - [`rank`] and [`allocate`]: ranking, capacity fill with transit watermarks, move limits,
//!   weight quantisation.
//! - [`orders`]: orders, versions, epochs, receivers' ack/refuse rules, the election.
//! - [`explain`]: why each tunnel was taken or not.
//! - [`sim`]: a seeded, time-stepped simulator of transits misbehaving, used by the tests and
//!   by `gatewan controller simulate`.
//!
//! See docs/controller.md.

pub mod allocate;
pub mod daemon;
pub mod dampening;
pub mod engine;
pub mod explain;
pub mod gate;
pub mod inputs;
pub mod orders;
pub mod policy;
pub mod rank;
pub mod sim;

pub use engine::{Controller, Cycle};
pub use inputs::{Rate, Snapshot, Time};
pub use orders::Orders;
pub use policy::Policy;
