//! Sans-IO core of the Serf RPC protocol: message framing and the wire types.
//!
//! The agent speaks msgpack over TCP. Every request is a header map `{Command, Seq}`
//! followed, for most commands, by a body map; every response is a header map `{Seq, Error}`
//! followed by a body for the commands that return one. Streams (`stream`, `monitor`, `query`)
//! answer once with a bare header, then send further `header + record` pairs carrying the
//! same `Seq`. Messages are not length-prefixed, so [`Framer`] finds value boundaries by
//! walking the msgpack encoding itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use thiserror::Error;

/// The only IPC version Serf agents speak.
pub const IPC_VERSION: i32 = 1;

/// Refuse single msgpack values larger than this: a members list of thousands of nodes
/// stays far below it, and a corrupt length prefix must not make us buffer without bound.
pub const MAX_VALUE_LEN: usize = 16 << 20;

// Error strings the agent sends that change how the rest of the response is framed: after
// these the agent sends no body even for commands that normally have one.
pub(crate) const AUTH_REQUIRED: &str = "Authentication required";
pub(crate) const HANDSHAKE_REQUIRED: &str = "Handshake required";
pub(crate) const UNSUPPORTED_COMMAND: &str = "Unsupported command";
pub(crate) const INVALID_AUTH_TOKEN: &str = "Invalid authentication token";
pub(crate) const UNSUPPORTED_IPC_VERSION: &str = "Unsupported IPC version";
pub(crate) const DUPLICATE_HANDSHAKE: &str = "Handshake already performed";
pub(crate) const MONITOR_EXISTS: &str = "Monitor already exists";
pub(crate) const INVALID_FILTER: &str = "Invalid event filter";
pub(crate) const STREAM_EXISTS: &str = "Stream with given sequence exists";
pub(crate) const INVALID_QUERY_ID: &str = "No pending queries matching ID";

/// Whether a response header carrying `error` is followed by a body, for a command that
/// normally returns one. Mirrors the agent: these three are sent before the command runs.
pub(crate) fn error_suppresses_body(error: &str) -> bool {
    matches!(
        error,
        AUTH_REQUIRED | HANDSHAKE_REQUIRED | UNSUPPORTED_COMMAND
    )
}

/// A malformed byte stream from the agent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("msgpack marker 0xc1 is never used")]
    ReservedMarker,
    #[error("msgpack value larger than {MAX_VALUE_LEN} bytes")]
    TooLarge,
}

/// Splits a byte stream into whole msgpack values without decoding them.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    start: usize,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        // Compact before growing, so a long-lived stream does not keep consumed bytes.
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete value, if the buffer holds one.
    pub fn next_value(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match value_len(pending)? {
            Some(len) => {
                let begin = self.start;
                self.start += len;
                Ok(self.buf.get(begin..begin + len))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet returned as values.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The encoded length of the first msgpack value in `buf`: `Ok(None)` if `buf` holds only
/// part of it. Iterative (a count of items still to skip), so deep nesting cannot overflow
/// the stack.
pub fn value_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut pos = 0usize;
    let mut items = 1usize;
    while items > 0 {
        items -= 1;
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        // (bytes of fixed header after the marker, length field width, extra items)
        let (skip, extra_items) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
            0x80..=0x8f => (1, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (1, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (1 + usize::from(marker & 0x1f), 0),
            0xc1 => return Err(FrameError::ReservedMarker),
            0xc4 | 0xd9 => match read_len(buf, pos + 1, 1) {
                Some(n) => (2 + n, 0),
                None => return Ok(None),
            },
            0xc5 | 0xda => match read_len(buf, pos + 1, 2) {
                Some(n) => (3 + n, 0),
                None => return Ok(None),
            },
            0xc6 | 0xdb => match read_len(buf, pos + 1, 4) {
                Some(n) => (5 + n, 0),
                None => return Ok(None),
            },
            0xc7 => match read_len(buf, pos + 1, 1) {
                Some(n) => (3 + n, 0),
                None => return Ok(None),
            },
            0xc8 => match read_len(buf, pos + 1, 2) {
                Some(n) => (4 + n, 0),
                None => return Ok(None),
            },
            0xc9 => match read_len(buf, pos + 1, 4) {
                Some(n) => (6 + n, 0),
                None => return Ok(None),
            },
            0xca => (5, 0),
            0xcb => (9, 0),
            0xcc | 0xd0 => (2, 0),
            0xcd | 0xd1 => (3, 0),
            0xce | 0xd2 => (5, 0),
            0xcf | 0xd3 => (9, 0),
            0xd4 => (3, 0),
            0xd5 => (4, 0),
            0xd6 => (6, 0),
            0xd7 => (10, 0),
            0xd8 => (18, 0),
            0xdc => match read_len(buf, pos + 1, 2) {
                Some(n) => (3, n),
                None => return Ok(None),
            },
            0xdd => match read_len(buf, pos + 1, 4) {
                Some(n) => (5, n),
                None => return Ok(None),
            },
            0xde => match read_len(buf, pos + 1, 2) {
                Some(n) => (3, n.saturating_mul(2)),
                None => return Ok(None),
            },
            0xdf => match read_len(buf, pos + 1, 4) {
                Some(n) => (5, n.saturating_mul(2)),
                None => return Ok(None),
            },
        };
        pos = pos.saturating_add(skip);
        items = items.saturating_add(extra_items);
        // Every item takes at least one byte, so this also bounds absurd item counts.
        if pos.saturating_add(items) > MAX_VALUE_LEN {
            return Err(FrameError::TooLarge);
        }
    }
    if pos > buf.len() {
        Ok(None)
    } else {
        Ok(Some(pos))
    }
}

fn read_len(buf: &[u8], at: usize, width: usize) -> Option<usize> {
    let bytes = buf.get(at..at + width)?;
    Some(
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
    )
}

/// Whether a decoded value is a response header (a map with exactly `Seq` and `Error`).
/// No response body of any command has that shape.
pub(crate) fn looks_like_header(raw: &[u8]) -> bool {
    let Ok(value) = rmpv::decode::read_value(&mut &raw[..]) else {
        return false;
    };
    let rmpv::Value::Map(entries) = value else {
        return false;
    };
    entries.len() == 2
        && entries
            .iter()
            .all(|(k, _)| matches!(k.as_str(), Some("Seq") | Some("Error")))
}

// ---------------------------------------------------------------------------------------
// Wire types. Field names are the agent's (Go struct field names), hence PascalCase.

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RequestHeader<'a> {
    pub command: &'a str,
    pub seq: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ResponseHeader {
    pub seq: u64,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HandshakeRequest {
    pub version: i32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AuthRequest<'a> {
    pub auth_key: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EventRequest<'a> {
    pub name: &'a str,
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
    pub coalesce: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JoinRequest<'a> {
    pub existing: &'a [String],
    pub replay: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JoinResponse {
    pub num: i32,
}

/// Filters for `members-filtered`; the agent anchors each as a regular expression (`^...$`).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemberFilter {
    /// Tag name to a regular expression its value must match.
    pub tags: BTreeMap<String, String>,
    /// A regular expression on the status (`alive`, `failed`, ...); empty matches all.
    pub status: String,
    /// A regular expression on the node name; empty matches all.
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MembersResponse {
    #[serde(default)]
    pub members: Option<Vec<WireMember>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireMember {
    pub name: String,
    #[serde(default)]
    pub addr: Option<ByteBuf>,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub protocol_min: u8,
    #[serde(default)]
    pub protocol_max: u8,
    #[serde(default)]
    pub protocol_cur: u8,
    #[serde(default)]
    pub delegate_min: u8,
    #[serde(default)]
    pub delegate_max: u8,
    #[serde(default)]
    pub delegate_cur: u8,
}

/// A node's status as Serf reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Alive,
    Leaving,
    Left,
    Failed,
    /// `none`, or a status this client does not know.
    Other(String),
}

impl MemberStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "alive" => Self::Alive,
            "leaving" => Self::Leaving,
            "left" => Self::Left,
            "failed" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Alive => "alive",
            Self::Leaving => "leaving",
            Self::Left => "left",
            Self::Failed => "failed",
            Self::Other(s) => s,
        }
    }
}

/// One cluster member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub name: String,
    /// The gossip address; unspecified if the agent sent none or a malformed one.
    pub addr: IpAddr,
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    pub status: MemberStatus,
    /// Serf protocol versions: min, max, current.
    pub protocol: [u8; 3],
    /// Delegate (Serf-over-memberlist) protocol versions: min, max, current.
    pub delegate: [u8; 3],
}

impl From<WireMember> for Member {
    fn from(m: WireMember) -> Self {
        Member {
            addr: m
                .addr
                .as_deref()
                .and_then(|b| ip_from_bytes(b))
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            name: m.name,
            port: m.port,
            tags: m.tags.unwrap_or_default(),
            status: MemberStatus::parse(&m.status),
            protocol: [m.protocol_min, m.protocol_max, m.protocol_cur],
            delegate: [m.delegate_min, m.delegate_max, m.delegate_cur],
        }
    }
}

/// Go's `net.IP` travels as 4 or 16 raw bytes; IPv4 usually in its 16-byte mapped form.
fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => {
            let a: [u8; 4] = b.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        16 => {
            let a: [u8; 16] = b.try_into().ok()?;
            let v6 = Ipv6Addr::from(a);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyRequest<'a> {
    pub key: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireKeyResponse {
    #[serde(default)]
    pub messages: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub keys: Option<BTreeMap<String, i64>>,
    #[serde(default)]
    pub num_nodes: i64,
    #[serde(default)]
    pub num_err: i64,
    #[serde(default)]
    pub num_resp: i64,
}

/// The outcome of a keyring operation across the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyResponse {
    /// Per-node error messages.
    pub messages: BTreeMap<String, String>,
    /// For `list-keys`: each key and how many nodes hold it.
    pub keys: BTreeMap<String, i64>,
    pub num_nodes: i64,
    pub num_err: i64,
    pub num_resp: i64,
}

impl From<WireKeyResponse> for KeyResponse {
    fn from(k: WireKeyResponse) -> Self {
        KeyResponse {
            messages: k.messages.unwrap_or_default(),
            keys: k.keys.unwrap_or_default(),
            num_nodes: k.num_nodes,
            num_err: k.num_err,
            num_resp: k.num_resp,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StreamRequest<'a> {
    #[serde(rename = "Type")]
    pub kind: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MonitorRequest<'a> {
    pub log_level: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StopRequest {
    pub stop: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagsRequest<'a> {
    pub tags: &'a BTreeMap<String, String>,
    pub delete_tags: &'a [String],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct QueryRequest<'a> {
    pub filter_nodes: &'a [String],
    pub filter_tags: &'a BTreeMap<String, String>,
    pub request_ack: bool,
    pub relay_factor: u8,
    /// Go's `time.Duration`: nanoseconds; 0 lets the agent pick its default.
    pub timeout: i64,
    pub name: &'a str,
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RespondRequest<'a> {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireQueryRecord {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub payload: Option<ByteBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireLogRecord {
    pub log: String,
}

/// An event stream record: the union of the agent's member, user and query records.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireEventRecord {
    pub event: String,
    #[serde(default)]
    pub members: Option<Vec<WireMember>>,
    #[serde(default, rename = "ID")]
    pub id: Option<u64>,
    #[serde(default, rename = "LTime")]
    pub ltime: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub payload: Option<ByteBuf>,
    #[serde(default)]
    pub coalesce: Option<bool>,
}

/// What kind of membership change a member event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberEventKind {
    Join,
    Leave,
    Failed,
    Update,
    Reap,
}

/// One record of an event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Member {
        kind: MemberEventKind,
        members: Vec<Member>,
    },
    User {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    },
    /// A query addressed to this node; answer it with `RpcClient::respond(id, ..)`.
    Query {
        id: u64,
        ltime: u64,
        name: String,
        payload: Vec<u8>,
    },
}

/// Why an event record could not be understood.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown event type {0:?}")]
pub struct UnknownEvent(pub String);

impl TryFrom<WireEventRecord> for Event {
    type Error = UnknownEvent;

    fn try_from(r: WireEventRecord) -> Result<Self, UnknownEvent> {
        let kind = match r.event.as_str() {
            "member-join" => MemberEventKind::Join,
            "member-leave" => MemberEventKind::Leave,
            "member-failed" => MemberEventKind::Failed,
            "member-update" => MemberEventKind::Update,
            "member-reap" => MemberEventKind::Reap,
            "user" => {
                return Ok(Event::User {
                    ltime: r.ltime.unwrap_or(0),
                    name: r.name.unwrap_or_default(),
                    payload: r.payload.map(ByteBuf::into_vec).unwrap_or_default(),
                    coalesce: r.coalesce.unwrap_or(false),
                })
            }
            "query" => {
                return Ok(Event::Query {
                    id: r.id.unwrap_or(0),
                    ltime: r.ltime.unwrap_or(0),
                    name: r.name.unwrap_or_default(),
                    payload: r.payload.map(ByteBuf::into_vec).unwrap_or_default(),
                })
            }
            _ => return Err(UnknownEvent(r.event)),
        };
        Ok(Event::Member {
            kind,
            members: r
                .members
                .unwrap_or_default()
                .into_iter()
                .map(Member::from)
                .collect(),
        })
    }
}

/// One record of a query's response stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryRecord {
    Ack { from: String },
    Response { from: String, payload: Vec<u8> },
}

/// Encodes a request header plus optional body into one buffer, so a request is written to
/// the socket in one piece and concurrent requests never interleave.
pub(crate) fn encode_request<B: Serialize>(
    command: &str,
    seq: u64,
    body: Option<&B>,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = rmp_serde::to_vec_named(&RequestHeader { command, seq })?;
    if let Some(body) = body {
        rmp_serde::encode::write_named(&mut out, body)?;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn encode<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn value_len_matches_encoder_for_nested_values() {
        let mut tags = BTreeMap::new();
        tags.insert("dc".to_string(), "sg1".to_string());
        tags.insert("long".to_string(), "x".repeat(300));
        let body = encode(&(
            vec![1u64, 300, 70_000, u64::MAX],
            tags,
            ByteBuf::from(vec![7u8; 70_000]),
            -5i64,
            -40_000i64,
            1.5f64,
            None::<u8>,
            true,
        ));
        assert_eq!(value_len(&body).unwrap(), Some(body.len()));
        for cut in [0, 1, 5, body.len() / 2, body.len() - 1] {
            assert_eq!(value_len(&body[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn framer_splits_values_fed_byte_by_byte() {
        let a = encode(&RequestHeader {
            command: "members",
            seq: 7,
        });
        let b = encode(&EventRequest {
            name: "x",
            payload: &[1, 2, 3],
            coalesce: false,
        });
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for byte in &stream {
            framer.push(std::slice::from_ref(byte));
            while let Some(v) = framer.next_value().unwrap() {
                out.push(v.to_vec());
            }
        }
        assert_eq!(out, vec![a, b]);
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn framer_rejects_reserved_marker_and_absurd_lengths() {
        let mut framer = Framer::new();
        framer.push(&[0xc1]);
        assert_eq!(framer.next_value(), Err(FrameError::ReservedMarker));
        // A map32 announcing 2^32-1 entries.
        assert_eq!(
            value_len(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge)
        );
        // A bin32 announcing 4 GiB.
        assert_eq!(
            value_len(&[0xc6, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge)
        );
    }

    #[test]
    fn header_shape_is_recognised() {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct H {
            seq: u64,
            error: String,
        }
        assert!(looks_like_header(&encode(&H {
            seq: 3,
            error: String::new()
        })));
        assert!(!looks_like_header(&encode(&JoinRequest {
            existing: &[],
            replay: false
        })));
        assert!(!looks_like_header(&[0x93, 1, 2, 3]));
    }

    #[test]
    fn member_addresses_decode_from_go_net_ip() {
        assert_eq!(
            ip_from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            ip_from_bytes(&[192, 0, 2, 1]),
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn event_records_decode() {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct U<'a> {
            event: &'a str,
            #[serde(rename = "LTime")]
            ltime: u64,
            name: &'a str,
            #[serde(with = "serde_bytes")]
            payload: &'a [u8],
            coalesce: bool,
        }
        let raw = encode(&U {
            event: "user",
            ltime: 9,
            name: "gw-pl",
            payload: b"abc",
            coalesce: false,
        });
        let rec: WireEventRecord = rmp_serde::from_slice(&raw).unwrap();
        assert_eq!(
            Event::try_from(rec).unwrap(),
            Event::User {
                ltime: 9,
                name: "gw-pl".into(),
                payload: b"abc".to_vec(),
                coalesce: false
            }
        );
        let raw = encode(&U {
            event: "bogus",
            ltime: 0,
            name: "",
            payload: b"",
            coalesce: false,
        });
        let rec: WireEventRecord = rmp_serde::from_slice(&raw).unwrap();
        assert!(Event::try_from(rec).is_err());
    }
}
