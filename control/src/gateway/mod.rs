//! The gateway agent: its configuration, its tunnels' status, and its local control endpoint.

pub mod api;
pub mod api_config;
pub mod backend;
pub mod config;
pub mod control;
pub mod error;
pub mod inner;
pub mod local_routes;
pub mod mesh;
pub mod mesh_config;
pub mod mesh_tunnels;
pub mod next_hops;
pub mod orders;
pub mod owner;
pub mod planner;
pub mod runtime;
pub mod status;
