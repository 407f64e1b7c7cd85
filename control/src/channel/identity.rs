//! Who a channel peer is: a role and a name, carried in its certificate as the DNS name
//! `<name>.<role>.gatewan` (a subject alternative name). A certificate for
//! `ctl-a.controller.gatewan` makes its holder the controller `ctl-a`, and nothing else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The suffix of every identity's DNS name.
pub const DOMAIN: &str = "gatewan";

/// What a channel peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Gateway,
    Controller,
    Bgpctl,
    /// An operator's tool (`gatewan orders`, scripts): may read, never order.
    Operator,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Gateway => "gateway",
            MemberRole::Controller => "controller",
            MemberRole::Bgpctl => "bgpctl",
            MemberRole::Operator => "operator",
        }
    }
}

impl FromStr for MemberRole {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<MemberRole, IdentityError> {
        match s {
            "gateway" => Ok(MemberRole::Gateway),
            "controller" => Ok(MemberRole::Controller),
            "bgpctl" => Ok(MemberRole::Bgpctl),
            "operator" => Ok(MemberRole::Operator),
            other => Err(IdentityError::Role(other.to_owned())),
        }
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    #[error("{0:?} is not a role: use gateway, controller, bgpctl or operator")]
    Role(String),
    #[error("{0:?} cannot name a channel member: use 1 to 63 letters, digits and '-', not starting or ending with '-'")]
    Name(String),
    #[error("{0:?} is not an identity: write <name>.<role>")]
    Form(String),
}

/// A channel member: its role and its name (a gateway's or controller's `name`, a
/// datacenter's name for bgpctl).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub role: MemberRole,
    pub name: String,
}

/// Whether `name` is a DNS label, so that it can sit in a certificate's DNS name.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::Name(name.to_owned()))
    }
}

impl Identity {
    pub fn new(role: MemberRole, name: &str) -> Result<Identity, IdentityError> {
        check_name(name)?;
        Ok(Identity {
            role,
            name: name.to_owned(),
        })
    }

    /// The DNS name its certificate carries (names compare case-insensitively there, so
    /// they are lowered).
    pub fn dns_name(&self) -> String {
        format!(
            "{}.{}.{DOMAIN}",
            self.name.to_ascii_lowercase(),
            self.role.as_str()
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.role)
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// `<name>.<role>`, as the `x-gatewan-identity` header and `Display` write it.
    fn from_str(s: &str) -> Result<Identity, IdentityError> {
        let (name, role) = s
            .rsplit_once('.')
            .ok_or_else(|| IdentityError::Form(s.to_owned()))?;
        Identity::new(role.parse()?, name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_bad_names_are_refused() {
        let id: Identity = "gw-a1.gateway".parse().unwrap();
        assert_eq!(id.role, MemberRole::Gateway);
        assert_eq!(id.dns_name(), "gw-a1.gateway.gatewan");
        assert_eq!(id.to_string().parse::<Identity>().unwrap(), id);
        for bad in [
            "gw_a1.gateway",
            "-x.gateway",
            "gw.admin",
            "gateway",
            ".controller",
            "a.b.controller",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad}");
        }
        assert!(Identity::new(MemberRole::Controller, &"x".repeat(64)).is_err());
    }
}
