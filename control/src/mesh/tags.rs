//! What a gateway says about itself in its Serf tags, and the 512-byte budget they must fit.
//!
//! Layout (all values text, so `serf members` stays readable):
//!
//! | key         | value                                             | example |
//! |-------------|---------------------------------------------------|---------|
//! | `role`      | `gateway`, `controller`, `bgpctl`                 | `gateway` |
//! | `dc`        | datacenter name                                   | `sg1` |
//! | `echo`      | STAMP echo port                                   | `7054` |
//! | `id`        | the gateway's mesh id (tunnel numbering, `gateway::planner`) | `12` |
//! | `pl`        | prefix list `version.chunks.digest` (digest: first 8 bytes of its SHA-256, hex) | `1716282000123.31.9f2c...` |
//! | `api`       | the orders channel's address (HTTPS, docs/controller.md) | `203.0.113.5:7443` |
//! | `lead`      | a controller's claim to lead: the term it took over with | `1187` |
//! | `t.<name>`  | per transit: WireGuard public key (base64), then its public endpoints | `kT3...=,203.0.113.5:6152,[2001:db8::5]:6152` |
//!
//! Serf encodes tags as one magic byte plus a msgpack map in the old msgpack spec (strings
//! of 32..=65535 bytes take a 3-byte header), and refuses an encoding above 512 bytes.
//! [`encoded_len`] computes the same size so gatewan refuses oversized tags itself, with a
//! clear error, before the agent sees them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Serialize;
use thiserror::Error;

/// Serf's (memberlist's) limit on a node's encoded metadata.
pub const TAGS_LIMIT: usize = 512;

pub const TAG_ROLE: &str = "role";
pub const TAG_DC: &str = "dc";
pub const TAG_ECHO: &str = "echo";
pub const TAG_ID: &str = "id";
pub const TAG_PREFIX_LIST: &str = "pl";
pub const TAG_TRANSIT_PREFIX: &str = "t.";
pub const TAG_API: &str = "api";
pub const TAG_LEAD: &str = "lead";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TagError {
    #[error("tags encode to {size} bytes; Serf allows at most {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("tag {0:?} is missing")]
    Missing(&'static str),
    #[error("tag {key:?} is invalid: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> TagError {
    TagError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// What a mesh member does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Gateway,
    Controller,
    Bgpctl,
    Other(String),
}

impl Role {
    pub fn as_str(&self) -> &str {
        match self {
            Role::Gateway => "gateway",
            Role::Controller => "controller",
            Role::Bgpctl => "bgpctl",
            Role::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Role {
        match s {
            "gateway" => Role::Gateway,
            "controller" => Role::Controller,
            "bgpctl" => Role::Bgpctl,
            other => Role::Other(other.to_owned()),
        }
    }
}

/// A transit as advertised: its WireGuard public key and public endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransitMeta {
    pub name: String,
    #[serde(serialize_with = "ser_key")]
    pub public_key: [u8; 32],
    pub endpoints: Vec<SocketAddr>,
}

fn ser_key<S: serde::Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(key))
}

/// The version of a gateway's prefix list as its tags announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ListTag {
    pub version: u64,
    pub chunks: u16,
    /// The first 8 bytes of the list's SHA-256.
    #[serde(serialize_with = "ser_hex8")]
    pub digest: [u8; 8],
}

fn ser_hex8<S: serde::Serializer>(d: &[u8; 8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

impl fmt::Display for ListTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.version,
            self.chunks,
            hex::encode(self.digest)
        )
    }
}

impl FromStr for ListTag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split('.');
        let (Some(v), Some(c), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected version.chunks.digest".into());
        };
        let version = v.parse().map_err(|_| "bad version")?;
        let chunks: u16 = c.parse().map_err(|_| "bad chunk count")?;
        if chunks == 0 {
            return Err("zero chunks".into());
        }
        if d.len() != 16 {
            return Err("digest must be 16 hex digits".into());
        }
        let mut digest = [0u8; 8];
        for (i, out) in digest.iter_mut().enumerate() {
            let pair = d.get(2 * i..2 * i + 2).ok_or("bad digest")?;
            *out = u8::from_str_radix(pair, 16).map_err(|_| "bad digest")?;
        }
        Ok(ListTag {
            version,
            chunks,
            digest,
        })
    }
}

/// Everything a member publishes in its tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayMeta {
    pub role: Role,
    pub datacenter: String,
    pub transits: Vec<TransitMeta>,
    pub echo_port: Option<u16>,
    pub prefix_list: Option<ListTag>,
    /// The gateway's mesh id (1..=65535): it numbers the tunnels and their inner addresses.
    pub id: Option<u32>,
    /// Where the member serves the orders channel.
    pub api: Option<SocketAddr>,
    /// A controller leading since this term.
    pub lead: Option<u64>,
}

/// Names used inside tag keys and values: short and free of the separators.
fn check_name(key: &str, name: &str) -> Result<(), TagError> {
    if name.is_empty() || name.len() > 32 {
        return Err(invalid(key, "name must be 1 to 32 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            key,
            "name may only hold letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

impl GatewayMeta {
    /// The tags, checked against Serf's limit.
    pub fn to_tags(&self) -> Result<BTreeMap<String, String>, TagError> {
        let mut tags = BTreeMap::new();
        tags.insert(TAG_ROLE.to_owned(), self.role.as_str().to_owned());
        check_name(TAG_DC, &self.datacenter)?;
        tags.insert(TAG_DC.to_owned(), self.datacenter.clone());
        if let Some(port) = self.echo_port {
            tags.insert(TAG_ECHO.to_owned(), port.to_string());
        }
        if let Some(id) = self.id {
            tags.insert(TAG_ID.to_owned(), id.to_string());
        }
        if let Some(pl) = &self.prefix_list {
            tags.insert(TAG_PREFIX_LIST.to_owned(), pl.to_string());
        }
        if let Some(api) = self.api {
            tags.insert(TAG_API.to_owned(), api.to_string());
        }
        if let Some(term) = self.lead {
            tags.insert(TAG_LEAD.to_owned(), term.to_string());
        }
        for t in &self.transits {
            let key = format!("{TAG_TRANSIT_PREFIX}{}", t.name);
            check_name(&key, &t.name)?;
            let mut value = B64.encode(t.public_key);
            for ep in &t.endpoints {
                value.push(',');
                value.push_str(&ep.to_string());
            }
            if tags.insert(key.clone(), value).is_some() {
                return Err(invalid(&key, "transit listed twice"));
            }
        }
        check_size(&tags)?;
        Ok(tags)
    }

    /// Parses a member's tags. Unknown tags are ignored, so newer gatewan versions can add
    /// some without breaking older ones.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Result<GatewayMeta, TagError> {
        let role = Role::parse(tags.get(TAG_ROLE).ok_or(TagError::Missing(TAG_ROLE))?);
        let datacenter = tags.get(TAG_DC).ok_or(TagError::Missing(TAG_DC))?.clone();
        check_name(TAG_DC, &datacenter)?;
        let echo_port = tags
            .get(TAG_ECHO)
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| invalid(TAG_ECHO, "not a port"))
            })
            .transpose()?;
        let id = tags
            .get(TAG_ID)
            .map(|v| match v.parse::<u32>() {
                Ok(id) if (1..=65535).contains(&id) => Ok(id),
                _ => Err(invalid(TAG_ID, "not a mesh id (1 to 65535)")),
            })
            .transpose()?;
        let prefix_list = tags
            .get(TAG_PREFIX_LIST)
            .map(|v| {
                v.parse::<ListTag>()
                    .map_err(|e| invalid(TAG_PREFIX_LIST, e))
            })
            .transpose()?;
        let api = tags
            .get(TAG_API)
            .map(|v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| invalid(TAG_API, "not an address:port"))
            })
            .transpose()?;
        let lead = tags
            .get(TAG_LEAD)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| invalid(TAG_LEAD, "not a term"))
            })
            .transpose()?;
        let mut transits = Vec::new();
        for (key, value) in tags {
            let Some(name) = key.strip_prefix(TAG_TRANSIT_PREFIX) else {
                continue;
            };
            check_name(key, name)?;
            let mut fields = value.split(',');
            let key_b64 = fields.next().unwrap_or_default();
            let raw = B64
                .decode(key_b64)
                .map_err(|_| invalid(key, "public key is not base64"))?;
            let public_key: [u8; 32] = raw
                .try_into()
                .map_err(|_| invalid(key, "public key is not 32 bytes"))?;
            let endpoints = fields
                .map(|f| f.parse::<SocketAddr>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| invalid(key, "bad endpoint"))?;
            transits.push(TransitMeta {
                name: name.to_owned(),
                public_key,
                endpoints,
            });
        }
        Ok(GatewayMeta {
            role,
            datacenter,
            transits,
            echo_port,
            prefix_list,
            id,
            api,
            lead,
        })
    }
}

/// Errors if `tags` would not fit in Serf's metadata.
pub fn check_size(tags: &BTreeMap<String, String>) -> Result<usize, TagError> {
    let size = encoded_len(tags);
    if size > TAGS_LIMIT {
        Err(TagError::TooLarge {
            size,
            limit: TAGS_LIMIT,
        })
    } else {
        Ok(size)
    }
}

/// The size of Serf's encoding of `tags`: magic byte + msgpack map (old spec).
pub fn encoded_len(tags: &BTreeMap<String, String>) -> usize {
    let map_header = match tags.len() {
        0..=15 => 1,
        16..=65535 => 3,
        _ => 5,
    };
    1 + map_header
        + tags
            .iter()
            .map(|(k, v)| raw_len(k.len()) + raw_len(v.len()))
            .sum::<usize>()
}

fn raw_len(n: usize) -> usize {
    n + match n {
        0..=31 => 1,
        32..=65535 => 3,
        _ => 5,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn meta() -> GatewayMeta {
        GatewayMeta {
            role: Role::Gateway,
            datacenter: "sg1".into(),
            transits: vec![
                TransitMeta {
                    name: "lumen".into(),
                    public_key: [7; 32],
                    endpoints: vec![
                        "203.0.113.5:6152".parse().unwrap(),
                        "[2620:100:a006::c]:6152".parse().unwrap(),
                    ],
                },
                TransitMeta {
                    name: "telstra".into(),
                    public_key: [9; 32],
                    endpoints: vec!["[2406:2600:a::1]:6215".parse().unwrap()],
                },
            ],
            echo_port: Some(7054),
            prefix_list: Some(ListTag {
                version: 1_716_282_000_123,
                chunks: 31,
                digest: [0x9f, 0x2c, 1, 2, 3, 4, 5, 6],
            }),
            id: Some(12),
            api: None,
            lead: None,
        }
    }

    #[test]
    fn tags_round_trip() {
        let m = meta();
        let tags = m.to_tags().unwrap();
        assert_eq!(tags["pl"], "1716282000123.31.9f2c010203040506");
        assert!(tags["t.lumen"].ends_with(",203.0.113.5:6152,[2620:100:a006::c]:6152"));
        assert_eq!(GatewayMeta::from_tags(&tags).unwrap(), m);
    }

    #[test]
    fn encoded_len_counts_like_serf() {
        // magic + fixmap + fixstr("dc") + fixstr("sg1")
        let mut tags = BTreeMap::new();
        tags.insert("dc".to_string(), "sg1".to_string());
        assert_eq!(encoded_len(&tags), 1 + 1 + 3 + 4);
        // A 32-byte value takes the 3-byte raw16 header in the old spec.
        tags.insert("k".to_string(), "x".repeat(32));
        assert_eq!(encoded_len(&tags), 1 + 1 + 3 + 4 + 2 + 35);
    }

    #[test]
    fn three_worst_case_dual_stack_transits_fit_the_budget() {
        let mut m = meta();
        m.transits = (0..3)
            .map(|i| TransitMeta {
                name: format!("transit{i}"),
                public_key: [i; 32],
                endpoints: vec![
                    "203.0.113.255:65535".parse().unwrap(),
                    "[2001:db8:ffff:ffff::ffff]:65535".parse().unwrap(),
                ],
            })
            .collect();
        let size = encoded_len(&m.to_tags().unwrap());
        assert!(size <= TAGS_LIMIT, "{size}");
    }

    #[test]
    fn four_typical_dual_stack_transits_fit_the_budget() {
        let mut m = meta();
        m.transits = ["lumen", "telstra", "ntt", "cogent"]
            .iter()
            .zip(1u8..)
            .map(|(name, i)| TransitMeta {
                name: (*name).into(),
                public_key: [i; 32],
                endpoints: vec![
                    format!("203.0.113.{i}:6152").parse().unwrap(),
                    format!("[2620:100:a006::{i}]:6152").parse().unwrap(),
                ],
            })
            .collect();
        let size = encoded_len(&m.to_tags().unwrap());
        assert!(size <= TAGS_LIMIT, "{size}");
    }

    #[test]
    fn oversized_tags_are_refused_before_sending() {
        let mut m = meta();
        m.transits = (0..6)
            .map(|i| TransitMeta {
                name: format!("transit{i}"),
                public_key: [i; 32],
                endpoints: vec![
                    "203.0.113.255:65535".parse().unwrap(),
                    "[2001:db8:ffff:ffff::ffff]:65535".parse().unwrap(),
                ],
            })
            .collect();
        assert!(matches!(
            m.to_tags(),
            Err(TagError::TooLarge { limit: 512, .. })
        ));
    }

    #[test]
    fn bad_tags_are_typed_errors() {
        let good = meta().to_tags().unwrap();
        let mut t = good.clone();
        t.remove("dc");
        assert_eq!(GatewayMeta::from_tags(&t), Err(TagError::Missing("dc")));
        for (k, v) in [
            ("echo", "70000"),
            ("pl", "1.2"),
            ("pl", "1.0.0000000000000000"),
            ("pl", "x.1.0000000000000000"),
            ("pl", "1.1.zz00000000000000"),
            ("t.lumen", "notbase64!"),
            ("t.lumen", "AAAA"),
            (
                "t.lumen",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=,nonsense",
            ),
            ("t.bad name", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
        ] {
            let mut t = good.clone();
            t.insert(k.into(), v.into());
            assert!(
                matches!(GatewayMeta::from_tags(&t), Err(TagError::Invalid { .. })),
                "{k}={v}"
            );
        }
        let mut m = meta();
        m.datacenter = "a,b".into();
        assert!(m.to_tags().is_err());
    }
}
