//! What `gatewan controller status` and `explain` ask the running controller, over its
//! local control socket (one JSON line each way, as the gateway's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::controller::inputs::InputIssue;
use crate::controller::orders::{Epoch, Shortfall};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Why the pair FROM -> TO is served as it is: answered by the next cycle, which runs
    /// with the explanation on (the live engine, with its holds and the orders in force).
    Explain {
        from: String,
        to: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Box<ControllerStatus>),
    Explain(serde_json::Value),
    Error { message: String },
}

crate::gateway::control::control_answer!(Response);

/// One recipient of orders, as the last push left it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecipientStatus {
    /// The version of the order in force for it, and the highest it acknowledged.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    /// `acked`, `refused: <reason>`, `unreachable: <error>`, `held` (it already holds it),
    /// or `not sent` (standby).
    pub result: String,
}

/// The live state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerStatus {
    pub name: String,
    pub authoritative: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    pub epoch: Epoch,
    pub cycles: u64,
    /// RFC 3339.
    pub last_cycle_at: String,
    /// The last cycle end to end, and its pull and push phases.
    pub last_cycle_ms: f64,
    pub pull_ms: f64,
    pub push_ms: f64,
    pub gateways_reached: usize,
    pub gateways_in_mesh: usize,
    pub membership_clock: u64,
    pub input_issues: Vec<InputIssue>,
    pub recipients: BTreeMap<String, RecipientStatus>,
    pub shortfalls: Vec<Shortfall>,
    /// Where this cycle's snapshot and orders were saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<String>,
}
