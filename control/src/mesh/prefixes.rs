//! A gateway's prefix list on the wire: a sans-IO codec (chunking) and assembler.
//!
//! A list of 2,000 prefixes is about 11 KB; a Serf user event carries at most 512 bytes
//! (name + payload, and the encoded message too) and every broadcast must fit one UDP
//! packet. So a list travels as numbered chunks, each a self-describing user event payload:
//!
//! ```text
//! offset  size  field
//! 0       1     format (1)
//! 1       1     n: length of the origin node name (1..=64)
//! 2       n     origin node name (UTF-8): user events do not say who sent them
//! 2+n     8     list version (big endian; the publisher's clock in ms, strictly increasing)
//! 10+n    2     chunk index
//! 12+n    2     chunk count (1..=MAX_CHUNKS)
//! 14+n    32    SHA-256 of the whole list body (every chunk's body, in index order)
//! 46+n    ...   body: whole prefix entries
//! ```
//!
//! A prefix entry is one byte `b` (IPv4 /b for b <= 32, IPv6 /(b-33) for 33 <= b <= 161)
//! followed by the prefix's significant bytes (ceil(len/8)); host bits must be zero and the
//! whole list is sorted and free of duplicates, so one set of prefixes has exactly one
//! encoding and one digest.
//!
//! A small change travels as one delta message instead (format 2): the versions it goes
//! from and to, the new list's SHA-256, and the entries removed and added. A receiver holding
//! exactly the base version applies it and checks the result against the digest; anyone else
//! falls back to pulling the new version's chunks.
//!
//! ```text
//! 0       1     format (2)
//! 1       1     n: length of the origin node name
//! 2       n     origin node name
//! 2+n     8     new version
//! 10+n    8     base version
//! 18+n    32    SHA-256 of the new list body
//! 50+n    2     r: number of removed entries
//! 52+n    ...   r removed entries, then the added entries (each sorted)
//! ```
//!
//! [`PrefixSync`] reassembles lists: it never applies a partial list (all chunks, digest
//! verified) or a stale one (older than what the origin's tags announce, or than what it has
//! applied), and counts every rejected payload by reason. It also says which chunks to pull
//! by query when pushed chunks went missing.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::tags::ListTag;

pub const CHUNK_FORMAT: u8 = 1;
pub const DELTA_FORMAT: u8 = 2;
/// Longest origin name a chunk can carry.
pub const MAX_ORIGIN_LEN: usize = 64;
/// Most chunks one list may have: 1024 chunks of ~400 bytes, some 60,000 prefixes.
pub const MAX_CHUNKS: u16 = 1024;
/// Largest chunk gatewan sends or accepts. Serf's user event limit (512 bytes) applies to
/// name + payload and to the encoded message: 1 type byte + msgpack map of LTime (up to
/// 9 bytes), Name, Payload (3-byte header), CC, whose keys and headers take 42 bytes
/// besides name and payload. With the 5-byte event name that leaves 465; 448 keeps a margin.
pub const MAX_CHUNK_LEN: usize = 448;
/// The user event name chunks travel under, and the query name used to pull them.
pub const EVENT_NAME: &str = "gw-pl";
/// Length of a chunk header before the origin name and after it.
const FIXED_HEADER: usize = 2 + 8 + 2 + 2 + 32;

/// A canonical set of prefixes: host bits cleared, sorted, no duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PrefixList {
    prefixes: Vec<IpNet>,
}

impl PrefixList {
    pub fn new(prefixes: impl IntoIterator<Item = IpNet>) -> Self {
        let mut prefixes: Vec<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        PrefixList { prefixes }
    }

    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &IpNet> {
        self.prefixes.iter()
    }

    pub fn as_slice(&self) -> &[IpNet] {
        &self.prefixes
    }
}

/// Why a chunk (or an assembled list) was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    #[error("shorter than its header")]
    Truncated,
    #[error("longer than {MAX_CHUNK_LEN} bytes")]
    Oversized,
    #[error("unknown chunk format")]
    UnknownFormat,
    #[error("bad origin name")]
    BadOrigin,
    #[error("bad chunk index or count")]
    BadIndex,
    #[error("malformed prefix entries")]
    MalformedBody,
    #[error("query answer from a node other than the chunk's origin")]
    OriginMismatch,
    #[error("our own list")]
    Own,
    #[error("older than the version already applied or announced")]
    Stale,
    #[error("chunk already held")]
    Duplicate,
    #[error("same version, different digest or chunk count")]
    Conflict,
    #[error("assembled list does not match its digest")]
    DigestMismatch,
    #[error("assembled list does not match the digest the origin's tags announce")]
    TagMismatch,
    #[error("too many lists in flight from nodes not (yet) members")]
    UnknownOrigin,
    #[error("delta against a version not held")]
    DeltaBase,
    #[error("delta does not apply cleanly or yields another digest")]
    DeltaMismatch,
}

impl Reject {
    /// Whether this is ordinary gossip redundancy (copies, our own list, old versions, a
    /// delta we cannot use) rather than a malformed or inconsistent payload.
    pub fn is_benign(self) -> bool {
        matches!(
            self,
            Reject::Duplicate | Reject::Own | Reject::Stale | Reject::DeltaBase
        )
    }
}

/// A parsed chunk: a view over the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub origin: &'a str,
    pub version: u64,
    pub index: u16,
    pub count: u16,
    pub digest: [u8; 32],
    pub body: &'a [u8],
}

/// The start every mesh prefix message shares: size limit, format byte, origin gateway name.
/// Returns the origin and what follows it.
fn message_header(bytes: &[u8], format: u8) -> Result<(&str, &[u8]), Reject> {
    if bytes.len() > MAX_CHUNK_LEN {
        return Err(Reject::Oversized);
    }
    let (&found, rest) = bytes.split_first().ok_or(Reject::Truncated)?;
    if found != format {
        return Err(Reject::UnknownFormat);
    }
    let (&n, rest) = rest.split_first().ok_or(Reject::Truncated)?;
    let n = usize::from(n);
    if n == 0 || n > MAX_ORIGIN_LEN {
        return Err(Reject::BadOrigin);
    }
    let origin = rest.get(..n).ok_or(Reject::Truncated)?;
    let origin = std::str::from_utf8(origin).map_err(|_| Reject::BadOrigin)?;
    let rest = rest.get(n..).ok_or(Reject::Truncated)?;
    Ok((origin, rest))
}

impl<'a> Chunk<'a> {
    /// Parses and checks a chunk, including that its body holds whole, canonical entries.
    pub fn parse(bytes: &'a [u8]) -> Result<Chunk<'a>, Reject> {
        let (origin, rest) = message_header(bytes, CHUNK_FORMAT)?;
        let fixed = rest.get(..FIXED_HEADER - 2).ok_or(Reject::Truncated)?;
        let body = rest.get(FIXED_HEADER - 2..).ok_or(Reject::Truncated)?;
        let version = u64::from_be_bytes(array(fixed, 0)?);
        let index = u16::from_be_bytes(array(fixed, 8)?);
        let count = u16::from_be_bytes(array(fixed, 10)?);
        let digest: [u8; 32] = array(fixed, 12)?;
        if count == 0 || count > MAX_CHUNKS || index >= count {
            return Err(Reject::BadIndex);
        }
        let mut at = 0;
        while at < body.len() {
            let (_, used) = decode_entry(body.get(at..).unwrap_or_default())?;
            at += used;
        }
        Ok(Chunk {
            origin,
            version,
            index,
            count,
            digest,
            body,
        })
    }
}

fn array<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], Reject> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(Reject::Truncated)
}

fn encode_entry(p: &IpNet, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    let nbytes = usize::from(len).div_ceil(8);
    match p {
        IpNet::V4(n) => {
            out.push(len);
            out.extend_from_slice(n.network().octets().get(..nbytes).unwrap_or_default());
        }
        IpNet::V6(n) => {
            out.push(33 + len);
            out.extend_from_slice(n.network().octets().get(..nbytes).unwrap_or_default());
        }
    }
}

fn decode_entry(b: &[u8]) -> Result<(IpNet, usize), Reject> {
    let (&code, rest) = b.split_first().ok_or(Reject::MalformedBody)?;
    let (v6, len) = match code {
        0..=32 => (false, code),
        33..=161 => (true, code - 33),
        _ => return Err(Reject::MalformedBody),
    };
    let nbytes = usize::from(len).div_ceil(8);
    let sig = rest.get(..nbytes).ok_or(Reject::MalformedBody)?;
    // Host bits in the last byte must be clear: one encoding per prefix.
    if let Some(&last) = sig.last() {
        let used = len % 8;
        if used != 0 && last & (0xffu8 >> used) != 0 {
            return Err(Reject::MalformedBody);
        }
    }
    let net = if v6 {
        let mut o = [0u8; 16];
        o.get_mut(..nbytes)
            .ok_or(Reject::MalformedBody)?
            .copy_from_slice(sig);
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(o), len).map_err(|_| Reject::MalformedBody)?)
    } else {
        let mut o = [0u8; 4];
        o.get_mut(..nbytes)
            .ok_or(Reject::MalformedBody)?
            .copy_from_slice(sig);
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(o), len).map_err(|_| Reject::MalformedBody)?)
    };
    Ok((net, 1 + nbytes))
}

/// Decodes a whole list body; entries must be strictly ascending.
fn decode_list(body: &[u8]) -> Result<PrefixList, Reject> {
    let mut prefixes = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let (p, used) = decode_entry(body.get(at..).unwrap_or_default())?;
        if prefixes.last().is_some_and(|last| *last >= p) {
            return Err(Reject::MalformedBody);
        }
        prefixes.push(p);
        at += used;
    }
    Ok(PrefixList { prefixes })
}

/// The SHA-256 of a list's encoding (what chunk headers and deltas carry).
pub fn digest(list: &PrefixList) -> [u8; 32] {
    let mut body = Vec::with_capacity(list.len() * 8);
    for p in list.iter() {
        encode_entry(p, &mut body);
    }
    Sha256::digest(&body).into()
}

/// Encodes the change from `old` (at `base`) to `new` (at `version`, with `new_digest`) as
/// one delta message, if it fits in [`MAX_CHUNK_LEN`].
pub fn encode_delta(
    old: &PrefixList,
    new: &PrefixList,
    origin: &str,
    base: u64,
    version: u64,
    new_digest: &[u8; 32],
) -> Option<Vec<u8>> {
    let origin_len = u8::try_from(origin.len())
        .ok()
        .filter(|n| *n > 0 && usize::from(*n) <= MAX_ORIGIN_LEN)?;
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (
        old.as_slice().iter().peekable(),
        new.as_slice().iter().peekable(),
    );
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x == y => {
                a.next();
                b.next();
            }
            (Some(x), Some(y)) if x < y => {
                removed.push(**x);
                a.next();
            }
            (Some(_), Some(y)) => {
                added.push(**y);
                b.next();
            }
            (Some(x), None) => {
                removed.push(**x);
                a.next();
            }
            (None, Some(y)) => {
                added.push(**y);
                b.next();
            }
            (None, None) => break,
        }
    }
    let r = u16::try_from(removed.len()).ok()?;
    let mut out = vec![DELTA_FORMAT, origin_len];
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&base.to_be_bytes());
    out.extend_from_slice(new_digest);
    out.extend_from_slice(&r.to_be_bytes());
    for p in removed.iter().chain(added.iter()) {
        encode_entry(p, &mut out);
        if out.len() > MAX_CHUNK_LEN {
            return None;
        }
    }
    Some(out)
}

/// A parsed delta message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta<'a> {
    pub origin: &'a str,
    pub version: u64,
    pub base: u64,
    pub digest: [u8; 32],
    pub removed: Vec<IpNet>,
    pub added: Vec<IpNet>,
}

impl<'a> Delta<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Delta<'a>, Reject> {
        let (origin, rest) = message_header(bytes, DELTA_FORMAT)?;
        let version = u64::from_be_bytes(array(rest, 0)?);
        let base = u64::from_be_bytes(array(rest, 8)?);
        let digest: [u8; 32] = array(rest, 16)?;
        let r = usize::from(u16::from_be_bytes(array(rest, 48)?));
        let body = rest.get(50..).ok_or(Reject::Truncated)?;
        if version <= base {
            return Err(Reject::DeltaMismatch);
        }
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < body.len() {
            let (p, used) = decode_entry(body.get(at..).unwrap_or_default())?;
            let list = if removed.len() < r {
                &mut removed
            } else {
                &mut added
            };
            if list.last().is_some_and(|last| *last >= p) {
                return Err(Reject::MalformedBody);
            }
            list.push(p);
            at += used;
        }
        if removed.len() != r {
            return Err(Reject::MalformedBody);
        }
        Ok(Delta {
            origin,
            version,
            base,
            digest,
            removed,
            added,
        })
    }
}

/// A list cut into chunks, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedList {
    pub version: u64,
    pub digest: [u8; 32],
    pub chunks: Vec<Vec<u8>>,
}

impl EncodedList {
    /// What the origin's `pl` tag announces for this list.
    pub fn tag(&self) -> ListTag {
        let mut d = [0u8; 8];
        d.copy_from_slice(self.digest.get(..8).unwrap_or(&[0; 8]));
        ListTag {
            version: self.version,
            chunks: u16::try_from(self.chunks.len()).unwrap_or(u16::MAX),
            digest: d,
        }
    }
}

/// Why a list cannot be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error("origin name must be 1 to {MAX_ORIGIN_LEN} bytes")]
    BadOrigin,
    #[error("list needs {0} chunks; at most {MAX_CHUNKS} are allowed")]
    TooManyChunks(usize),
    #[error("chunk size {0} leaves no room for a prefix")]
    ChunkTooSmall(usize),
}

/// Cuts `list` into chunks of at most `max_len` bytes (<= [`MAX_CHUNK_LEN`]).
pub fn encode(
    list: &PrefixList,
    origin: &str,
    version: u64,
    max_len: usize,
) -> Result<EncodedList, EncodeError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN_LEN {
        return Err(EncodeError::BadOrigin);
    }
    let max_len = max_len.min(MAX_CHUNK_LEN);
    let header = 2 + origin.len() + FIXED_HEADER;
    // The longest entry is an IPv6 /128: 17 bytes.
    let room = max_len
        .checked_sub(header)
        .filter(|r| *r >= 17)
        .ok_or(EncodeError::ChunkTooSmall(max_len))?;
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
    let mut entry = Vec::with_capacity(17);
    for p in list.iter() {
        entry.clear();
        encode_entry(p, &mut entry);
        let fits = bodies.last().is_some_and(|b| b.len() + entry.len() <= room);
        if !fits {
            bodies.push(Vec::new());
        }
        if let Some(b) = bodies.last_mut() {
            b.extend_from_slice(&entry);
        }
    }
    if bodies.len() > usize::from(MAX_CHUNKS) {
        return Err(EncodeError::TooManyChunks(bodies.len()));
    }
    let mut hasher = Sha256::new();
    for b in &bodies {
        hasher.update(b);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let count =
        u16::try_from(bodies.len()).map_err(|_| EncodeError::TooManyChunks(bodies.len()))?;
    let origin_len = u8::try_from(origin.len()).map_err(|_| EncodeError::BadOrigin)?;
    let chunks = bodies
        .iter()
        .zip(0u16..)
        .map(|(body, index)| {
            let mut c = Vec::with_capacity(header + body.len());
            c.push(CHUNK_FORMAT);
            c.push(origin_len);
            c.extend_from_slice(origin.as_bytes());
            c.extend_from_slice(&version.to_be_bytes());
            c.extend_from_slice(&index.to_be_bytes());
            c.extend_from_slice(&count.to_be_bytes());
            c.extend_from_slice(&digest);
            c.extend_from_slice(body);
            c
        })
        .collect();
    Ok(EncodedList {
        version,
        digest,
        chunks,
    })
}

/// The payload of a pull query: which chunk index to send back.
pub fn pull_request(index: u16) -> [u8; 3] {
    let i = index.to_be_bytes();
    [CHUNK_FORMAT, i[0], i[1]]
}

/// Parses a pull query payload.
pub fn parse_pull_request(payload: &[u8]) -> Option<u16> {
    match payload {
        [CHUNK_FORMAT, hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// A list that passed every check and replaced the origin's previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppliedList {
    pub origin: String,
    pub version: u64,
    #[serde(serialize_with = "ser_hex32")]
    pub digest: [u8; 32],
    pub prefixes: Arc<PrefixList>,
}

fn ser_hex32<S: serde::Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

/// What a chunk did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Kept; the list is not complete yet.
    Stored,
    /// It completed a list, now applied.
    Applied(AppliedList),
}

/// A request to pull chunk `index` from each of `nodes` (one Serf query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pull {
    pub index: u16,
    pub nodes: Vec<String>,
}

/// Timing of the assembler's repairs.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// This node's name: chunks of our own list are ignored.
    pub local: String,
    /// How long a list may receive no chunk (or stay unseen after its announcement in
    /// tags) before its missing chunks are pulled.
    pub repair_after: Duration,
    /// How long after its first chunk a list may stay incomplete, however slowly pushed
    /// chunks keep trickling in (gossip bandwidth bounds the push rate), before pulling.
    pub repair_deadline: Duration,
    /// Least time between two pulls from the same origin.
    pub pull_interval: Duration,
    /// Lists in flight from origins that are not known members (yet): bounded, since anyone
    /// holding the mesh key can name any origin.
    pub max_unknown_origins: usize,
}

impl SyncConfig {
    pub fn new(local: impl Into<String>) -> Self {
        SyncConfig {
            local: local.into(),
            repair_after: Duration::from_secs(2),
            repair_deadline: Duration::from_secs(10),
            pull_interval: Duration::from_secs(10),
            max_unknown_origins: 16,
        }
    }
}

/// Payloads seen and refused, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncCounters {
    pub chunks_accepted: u64,
    pub lists_applied: u64,
    pub rejected: BTreeMap<Reject, u64>,
    pub pulls: u64,
}

impl SyncCounters {
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Payloads refused as malformed or inconsistent (not mere redundancy).
    pub fn bad_total(&self) -> u64 {
        self.rejected
            .iter()
            .filter(|(r, _)| !r.is_benign())
            .map(|(_, n)| n)
            .sum()
    }
}

struct Partial {
    version: u64,
    digest: [u8; 32],
    bodies: Vec<Option<Vec<u8>>>,
    have: usize,
    started: Instant,
    last_progress: Instant,
}

impl Partial {
    fn missing(&self) -> impl Iterator<Item = u16> + '_ {
        self.bodies
            .iter()
            .zip(0u16..)
            .filter(|(b, _)| b.is_none())
            .map(|(_, i)| i)
    }
}

struct Peer {
    /// A member the mesh view knows (as opposed to a name seen only in chunks).
    known: bool,
    alive: bool,
    advertised: Option<ListTag>,
    advertised_at: Option<Instant>,
    applied: Option<AppliedList>,
    partial: Option<Partial>,
    last_pull: Option<Instant>,
}

impl Peer {
    fn new(known: bool) -> Self {
        Peer {
            known,
            alive: known,
            advertised: None,
            advertised_at: None,
            applied: None,
            partial: None,
            last_pull: None,
        }
    }

    /// Lowest version worth collecting: what the tags announce, else above what we hold.
    fn accepts(&self, version: u64) -> bool {
        match (&self.advertised, &self.applied) {
            (Some(tag), _) => version >= tag.version,
            (None, Some(applied)) => version > applied.version,
            (None, None) => true,
        }
    }
}

/// Reassembles prefix lists from chunks (pushed as events or pulled by queries).
pub struct PrefixSync {
    cfg: SyncConfig,
    peers: HashMap<String, Peer>,
    counters: SyncCounters,
}

impl PrefixSync {
    pub fn new(cfg: SyncConfig) -> Self {
        PrefixSync {
            cfg,
            peers: HashMap::new(),
            counters: SyncCounters::default(),
        }
    }

    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    pub fn applied(&self, node: &str) -> Option<&AppliedList> {
        self.peers.get(node).and_then(|p| p.applied.as_ref())
    }

    fn reject(&mut self, reason: Reject) -> Reject {
        *self.counters.rejected.entry(reason).or_insert(0) += 1;
        reason
    }

    /// What a member's tags announce (from `members` or a member event).
    pub fn on_member(&mut self, node: &str, alive: bool, tag: Option<ListTag>, now: Instant) {
        if node == self.cfg.local {
            return;
        }
        let peer = self
            .peers
            .entry(node.to_owned())
            .or_insert_with(|| Peer::new(true));
        peer.known = true;
        peer.alive = alive;
        if peer.advertised != tag {
            peer.advertised = tag;
            peer.advertised_at = Some(now);
        }
        // A partial list older than the announced version can never be applied.
        if let (Some(tag), Some(partial)) = (&peer.advertised, &peer.partial) {
            if partial.version < tag.version {
                peer.partial = None;
            }
        }
    }

    /// Drops everything about a node that left or was reaped.
    pub fn forget(&mut self, node: &str) {
        self.peers.remove(node);
    }

    /// Feeds one chunk or delta. `from` is the answering node for pulled chunks (queries
    /// say who answered), `None` for user events (which do not).
    pub fn on_chunk(
        &mut self,
        bytes: &[u8],
        from: Option<&str>,
        now: Instant,
    ) -> Result<ChunkOutcome, Reject> {
        if bytes.first() == Some(&DELTA_FORMAT) {
            return self.on_delta(bytes, from);
        }
        let chunk = match Chunk::parse(bytes) {
            Ok(c) => c,
            Err(r) => return Err(self.reject(r)),
        };
        if from.is_some_and(|f| f != chunk.origin) {
            return Err(self.reject(Reject::OriginMismatch));
        }
        if chunk.origin == self.cfg.local {
            return Err(self.reject(Reject::Own));
        }
        if !self.peers.contains_key(chunk.origin) {
            let unknown = self.peers.values().filter(|p| !p.known).count();
            if unknown >= self.cfg.max_unknown_origins {
                return Err(self.reject(Reject::UnknownOrigin));
            }
            self.peers.insert(chunk.origin.to_owned(), Peer::new(false));
        }
        let Some(peer) = self.peers.get_mut(chunk.origin) else {
            return Err(self.reject(Reject::UnknownOrigin));
        };
        if peer
            .applied
            .as_ref()
            .is_some_and(|a| a.version == chunk.version)
        {
            return Err(self.reject(Reject::Duplicate));
        }
        if !peer.accepts(chunk.version) {
            return Err(self.reject(Reject::Stale));
        }
        let count = usize::from(chunk.count);
        let announced = peer.advertised.is_some_and(|t| t.version == chunk.version);
        match &peer.partial {
            Some(p) if p.version == chunk.version => {
                if p.digest != chunk.digest || p.bodies.len() != count {
                    // Two different lists under one version: trust neither.
                    peer.partial = None;
                    return Err(self.reject(Reject::Conflict));
                }
            }
            // A newer partial list wins, unless this chunk is of the version the origin's
            // tags announce: a bogus "newer" partial must not block the real one.
            Some(p) if p.version > chunk.version && !announced => {
                return Err(self.reject(Reject::Stale))
            }
            _ => {
                peer.partial = Some(Partial {
                    version: chunk.version,
                    digest: chunk.digest,
                    bodies: vec![None; count],
                    have: 0,
                    started: now,
                    last_progress: now,
                });
            }
        }
        let Some(partial) = peer.partial.as_mut() else {
            return Err(self.reject(Reject::Conflict));
        };
        let Some(slot) = partial.bodies.get_mut(usize::from(chunk.index)) else {
            return Err(self.reject(Reject::BadIndex));
        };
        if slot.is_some() {
            return Err(self.reject(Reject::Duplicate));
        }
        *slot = Some(chunk.body.to_vec());
        partial.have += 1;
        partial.last_progress = now;
        self.counters.chunks_accepted += 1;
        if partial.have < partial.bodies.len() {
            return Ok(ChunkOutcome::Stored);
        }

        // Complete: verify before applying.
        let Some(partial) = peer.partial.take() else {
            return Err(self.reject(Reject::Conflict));
        };
        let mut hasher = Sha256::new();
        let mut body = Vec::new();
        for b in partial.bodies.iter().flatten() {
            hasher.update(b);
            body.extend_from_slice(b);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != partial.digest {
            return Err(self.reject(Reject::DigestMismatch));
        }
        if let Some(tag) = &peer.advertised {
            if tag.version == partial.version && digest.get(..8) != Some(&tag.digest[..]) {
                return Err(self.reject(Reject::TagMismatch));
            }
        }
        let list = match decode_list(&body) {
            Ok(l) => l,
            Err(r) => return Err(self.reject(r)),
        };
        let applied = AppliedList {
            origin: chunk.origin.to_owned(),
            version: partial.version,
            digest,
            prefixes: Arc::new(list),
        };
        peer.applied = Some(applied.clone());
        peer.last_pull = None;
        self.counters.lists_applied += 1;
        Ok(ChunkOutcome::Applied(applied))
    }

    fn on_delta(&mut self, bytes: &[u8], from: Option<&str>) -> Result<ChunkOutcome, Reject> {
        let delta = match Delta::parse(bytes) {
            Ok(d) => d,
            Err(r) => return Err(self.reject(r)),
        };
        if from.is_some_and(|f| f != delta.origin) {
            return Err(self.reject(Reject::OriginMismatch));
        }
        if delta.origin == self.cfg.local {
            return Err(self.reject(Reject::Own));
        }
        let Some(peer) = self.peers.get_mut(delta.origin) else {
            return Err(self.reject(Reject::DeltaBase));
        };
        let Some(applied) = &peer.applied else {
            return Err(self.reject(Reject::DeltaBase));
        };
        if applied.version == delta.version {
            return Err(self.reject(Reject::Duplicate));
        }
        if applied.version > delta.version || !peer.accepts(delta.version) {
            return Err(self.reject(Reject::Stale));
        }
        if applied.version != delta.base {
            return Err(self.reject(Reject::DeltaBase));
        }
        let mut set: std::collections::BTreeSet<IpNet> = applied.prefixes.iter().copied().collect();
        let clean = delta.removed.iter().all(|p| set.remove(p))
            && delta.added.iter().all(|p| set.insert(*p));
        let list = PrefixList {
            prefixes: set.into_iter().collect(),
        };
        if !clean || digest(&list) != delta.digest {
            return Err(self.reject(Reject::DeltaMismatch));
        }
        if let Some(tag) = &peer.advertised {
            if tag.version == delta.version && delta.digest.get(..8) != Some(&tag.digest[..]) {
                return Err(self.reject(Reject::TagMismatch));
            }
        }
        let applied = AppliedList {
            origin: delta.origin.to_owned(),
            version: delta.version,
            digest: delta.digest,
            prefixes: Arc::new(list),
        };
        peer.applied = Some(applied.clone());
        if peer
            .partial
            .as_ref()
            .is_some_and(|p| p.version <= delta.version)
        {
            peer.partial = None;
        }
        peer.last_pull = None;
        self.counters.lists_applied += 1;
        Ok(ChunkOutcome::Applied(applied))
    }

    /// Which chunks to pull now: from alive members whose list (announced, or partly
    /// received) we lack `repair_after` after it first showed up.
    pub fn poll(&mut self, now: Instant) -> Vec<Pull> {
        let mut by_index: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (name, peer) in &mut self.peers {
            if !peer.known || !peer.alive {
                continue;
            }
            // The newest version worth having: the one the tags announce, or a newer one
            // we have started to receive (tags travel slower than list chunks: Serf
            // coalesces member updates).
            let partial = peer
                .partial
                .as_ref()
                .filter(|p| peer.advertised.is_none_or(|t| p.version >= t.version));
            let target = match (partial, peer.advertised) {
                (Some(p), _) => p.version,
                (None, Some(t)) => t.version,
                (None, None) => continue,
            };
            if peer.applied.as_ref().is_some_and(|a| a.version >= target) {
                continue;
            }
            // Pull once pushed chunks stopped coming, or when they come too slowly: pull
            // queries compete with pushed chunks for gossip bandwidth, so pulling while a
            // push is under way would slow both.
            let due = match partial {
                Some(p) => {
                    now.saturating_duration_since(p.last_progress) >= self.cfg.repair_after
                        || now.saturating_duration_since(p.started) >= self.cfg.repair_deadline
                }
                None => {
                    now.saturating_duration_since(peer.advertised_at.unwrap_or(now))
                        >= self.cfg.repair_after
                }
            };
            if !due {
                continue;
            }
            if peer
                .last_pull
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.pull_interval)
            {
                continue;
            }
            peer.last_pull = Some(now);
            let missing: Vec<u16> = match (partial, peer.advertised) {
                (Some(p), _) => p.missing().collect(),
                (None, Some(t)) => (0..t.chunks).collect(),
                (None, None) => Vec::new(),
            };
            for index in missing {
                by_index.entry(index).or_default().push(name.clone());
            }
        }
        let pulls: Vec<Pull> = by_index
            .into_iter()
            .map(|(index, mut nodes)| {
                nodes.sort();
                Pull { index, nodes }
            })
            .collect();
        self.counters.pulls += pulls.len() as u64;
        pulls
    }

    /// Names with an applied list.
    pub fn origins(&self) -> impl Iterator<Item = (&str, &AppliedList)> {
        self.peers
            .iter()
            .filter_map(|(n, p)| p.applied.as_ref().map(|a| (n.as_str(), a)))
    }
}

/// Picks the next version for a publisher: its clock in ms, but always above the last one.
pub fn next_version(last: Option<u64>, now_unix_ms: u64) -> u64 {
    match last {
        Some(l) if l >= now_unix_ms => l.saturating_add(1),
        _ => now_unix_ms,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// 1,000 IPv4 /24s and 1,000 IPv6 /48s, different per `seed`.
    fn sample(seed: u8, n: usize) -> PrefixList {
        PrefixList::new((0..n).map(|i| {
            let i = u32::try_from(i).unwrap();
            if i % 2 == 0 {
                // 10.x.y.0/24, x.y = seed * 1024 + i/2: distinct per seed and index.
                let idx = u32::from(seed) * 1024 + i / 2;
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from((10 << 24) | (idx << 8)), 24).unwrap())
            } else {
                IpNet::V6(
                    Ipv6Net::new(
                        Ipv6Addr::new(
                            0xfd00 | u16::from(seed),
                            (i >> 4) as u16,
                            i as u16,
                            0,
                            0,
                            0,
                            0,
                            0,
                        ),
                        48 + (i % 17) as u8,
                    )
                    .unwrap(),
                )
            }
        }))
    }

    fn sync() -> PrefixSync {
        PrefixSync::new(SyncConfig::new("me"))
    }

    fn feed_all(s: &mut PrefixSync, enc: &EncodedList, now: Instant) -> Option<AppliedList> {
        let mut applied = None;
        for c in &enc.chunks {
            if let Ok(ChunkOutcome::Applied(a)) = s.on_chunk(c, None, now) {
                applied = Some(a);
            }
        }
        applied
    }

    #[test]
    fn two_thousand_prefixes_round_trip_in_small_chunks() {
        let list = sample(1, 2000);
        assert_eq!(list.len(), 2000);
        let enc = encode(&list, "gw1-sg1", 100, MAX_CHUNK_LEN).unwrap();
        assert!(enc.chunks.iter().all(|c| c.len() <= MAX_CHUNK_LEN));
        assert!(enc.chunks.len() < 60, "{} chunks", enc.chunks.len());
        // Every chunk fits Serf's 512-byte user event with its name and encoding overhead.
        assert!(enc
            .chunks
            .iter()
            .all(|c| 42 + EVENT_NAME.len() + c.len() <= 512));
        let mut s = sync();
        let applied = feed_all(&mut s, &enc, Instant::now()).unwrap();
        assert_eq!(*applied.prefixes, list);
        assert_eq!(applied.version, 100);
        assert_eq!(s.counters().lists_applied, 1);
        assert_eq!(s.counters().rejected_total(), 0);
    }

    #[test]
    fn canonical_encoding_ignores_order_and_host_bits() {
        let a = PrefixList::new([
            "10.1.2.3/24".parse().unwrap(),
            "fd00::1/64".parse().unwrap(),
        ]);
        let b = PrefixList::new([
            "fd00::/64".parse().unwrap(),
            "10.1.2.0/24".parse().unwrap(),
            "10.1.2.0/24".parse().unwrap(),
        ]);
        assert_eq!(a, b);
        assert_eq!(
            encode(&a, "x", 1, 448).unwrap().digest,
            encode(&b, "x", 1, 448).unwrap().digest
        );
        // Edge lengths survive.
        let edge = PrefixList::new([
            "0.0.0.0/0".parse().unwrap(),
            "255.255.255.255/32".parse().unwrap(),
            "::/0".parse().unwrap(),
            "ffff::1/128".parse().unwrap(),
        ]);
        let mut s = sync();
        let applied = feed_all(&mut s, &encode(&edge, "x", 1, 448).unwrap(), Instant::now());
        assert_eq!(*applied.unwrap().prefixes, edge);
    }

    #[test]
    fn partial_list_is_never_applied_and_lost_chunks_are_pulled() {
        let enc = encode(&sample(2, 2000), "gw2", 7, MAX_CHUNK_LEN).unwrap();
        let mut s = sync();
        let t0 = Instant::now();
        s.on_member("gw2", true, Some(enc.tag()), t0);
        let lost = [3usize, 9, enc.chunks.len() - 1];
        for (i, c) in enc.chunks.iter().enumerate() {
            if !lost.contains(&i) {
                assert_eq!(s.on_chunk(c, None, t0).unwrap(), ChunkOutcome::Stored);
            }
        }
        assert!(s.applied("gw2").is_none());
        // Too early to pull: pushed chunks may still be on their way.
        assert!(s.poll(t0 + Duration::from_secs(1)).is_empty());
        let pulls = s.poll(t0 + Duration::from_secs(3));
        let want: Vec<u16> = lost.iter().map(|&i| u16::try_from(i).unwrap()).collect();
        assert_eq!(pulls.iter().map(|p| p.index).collect::<Vec<_>>(), want);
        assert!(pulls.iter().all(|p| p.nodes == vec!["gw2".to_string()]));
        // Not again before pull_interval.
        assert!(s.poll(t0 + Duration::from_secs(4)).is_empty());
        // The answers (queries say who answered) complete the list.
        let t1 = t0 + Duration::from_secs(5);
        for &i in &lost[..2] {
            assert_eq!(
                s.on_chunk(&enc.chunks[i], Some("gw2"), t1).unwrap(),
                ChunkOutcome::Stored
            );
        }
        let out = s.on_chunk(&enc.chunks[lost[2]], Some("gw2"), t1).unwrap();
        assert!(matches!(out, ChunkOutcome::Applied(a) if a.version == 7));
        assert!(s.poll(t1 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn missing_chunks_of_a_list_newer_than_the_tags_are_pulled() {
        let old = encode(&sample(20, 300), "gw13", 1, 200).unwrap();
        let new = encode(&sample(21, 300), "gw13", 2, 200).unwrap();
        let mut s = sync();
        let t0 = Instant::now();
        s.on_member("gw13", true, Some(old.tag()), t0);
        feed_all(&mut s, &old, t0).unwrap();
        // Version 2 arrives by push, one chunk short, before the tags say so.
        for c in &new.chunks[1..] {
            s.on_chunk(c, None, t0).unwrap();
        }
        let pulls = s.poll(t0 + Duration::from_secs(3));
        assert_eq!(
            pulls,
            vec![Pull {
                index: 0,
                nodes: vec!["gw13".into()]
            }]
        );
    }

    #[test]
    fn unseen_list_announced_in_tags_is_pulled_whole() {
        let enc = encode(&sample(3, 50), "gw3", 9, 200).unwrap();
        let mut s = sync();
        let t0 = Instant::now();
        s.on_member("gw3", true, Some(enc.tag()), t0);
        s.on_member("gw4", false, Some(enc.tag()), t0); // failed: not asked
        let pulls = s.poll(t0 + Duration::from_secs(3));
        assert_eq!(pulls.len(), enc.chunks.len());
        assert!(pulls.iter().all(|p| p.nodes == vec!["gw3".to_string()]));
        assert_eq!(s.counters().pulls, enc.chunks.len() as u64);
    }

    #[test]
    fn reordered_and_duplicated_chunks_apply_once() {
        let enc = encode(&sample(4, 2000), "gw4", 5, MAX_CHUNK_LEN).unwrap();
        let mut s = sync();
        let now = Instant::now();
        let mut applied = 0;
        for c in enc.chunks.iter().rev().chain(enc.chunks.iter()) {
            if let Ok(ChunkOutcome::Applied(_)) = s.on_chunk(c, None, now) {
                applied += 1;
            }
        }
        assert_eq!(applied, 1);
        // Before completion, second copies are duplicates; after, every chunk of the
        // applied version is.
        assert_eq!(
            s.counters().rejected(Reject::Duplicate),
            enc.chunks.len() as u64
        );
    }

    #[test]
    fn stale_versions_are_refused() {
        let old = encode(&sample(5, 300), "gw5", 10, 300).unwrap();
        let new = encode(&sample(6, 300), "gw5", 11, 300).unwrap();
        let mut s = sync();
        let now = Instant::now();
        assert!(feed_all(&mut s, &new, now).is_some());
        // Older than applied.
        assert_eq!(s.on_chunk(&old.chunks[0], None, now), Err(Reject::Stale));
        // Tags announce 11; a half-received 12 that never completes does not block 11's
        // successors, and chunks of 10 stay stale.
        s.on_member("gw5", true, Some(new.tag()), now);
        assert_eq!(s.on_chunk(&old.chunks[1], None, now), Err(Reject::Stale));
        // A partial list is superseded by a newer version and its late chunks are stale.
        let v12 = encode(&sample(7, 300), "gw5", 12, 300).unwrap();
        let v13 = encode(&sample(8, 300), "gw5", 13, 300).unwrap();
        s.on_chunk(&v12.chunks[0], None, now).unwrap();
        s.on_chunk(&v13.chunks[0], None, now).unwrap();
        assert_eq!(s.on_chunk(&v12.chunks[1], None, now), Err(Reject::Stale));
        assert_eq!(s.applied("gw5").unwrap().version, 11);
        for c in &v13.chunks[1..] {
            s.on_chunk(c, None, now).unwrap();
        }
        assert_eq!(s.applied("gw5").unwrap().version, 13);
    }

    #[test]
    fn a_restarted_origin_with_a_lower_version_is_followed_by_its_tags() {
        let high = encode(&sample(9, 100), "gw6", 500, 300).unwrap();
        let low = encode(&sample(10, 100), "gw6", 40, 300).unwrap();
        let mut s = sync();
        let now = Instant::now();
        s.on_member("gw6", true, Some(high.tag()), now);
        feed_all(&mut s, &high, now).unwrap();
        // Its clock went back: tags now announce 40, which is then accepted.
        s.on_member("gw6", true, Some(low.tag()), now);
        let applied = feed_all(&mut s, &low, now).unwrap();
        assert_eq!(applied.version, 40);
    }

    #[test]
    fn corrupted_chunks_are_rejected_and_counted() {
        let enc = encode(&sample(11, 400), "gw7", 3, 300).unwrap();
        let mut s = sync();
        let now = Instant::now();
        // A body byte flipped (still well-formed entries): detected by the digest once
        // the list is complete; nothing applied.
        let mut bad = enc.chunks.clone();
        let last = bad[0].len() - 1;
        bad[0][last] ^= 0x01;
        let mut results = Vec::new();
        for c in &bad {
            results.push(s.on_chunk(c, None, now));
        }
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(Reject::DigestMismatch) | Err(Reject::MalformedBody))));
        assert!(s.applied("gw7").is_none());
        // The genuine chunks still assemble afterwards.
        assert!(feed_all(&mut s, &enc, now).is_some());

        // A chunk claiming the same version with a different digest: conflict.
        let other = encode(&sample(12, 400), "gw8", 3, 300).unwrap();
        let mut forged = other.chunks[1].clone();
        forged[2 + 3 + 8 + 2 + 2] ^= 0xff; // first digest byte
        s.on_chunk(&other.chunks[0], None, now).unwrap();
        assert_eq!(s.on_chunk(&forged, None, now), Err(Reject::Conflict));
        assert!(s.counters().rejected(Reject::Conflict) >= 1);
    }

    #[test]
    fn a_bogus_newer_partial_list_does_not_block_the_announced_one() {
        let real = encode(&sample(18, 300), "gw12", 20, 200).unwrap();
        let bogus = encode(&sample(19, 300), "gw12", u64::MAX, 200).unwrap();
        let mut s = sync();
        let t0 = Instant::now();
        s.on_member("gw12", true, Some(real.tag()), t0);
        // One chunk of an unfinished "newer" list arrives first.
        assert_eq!(
            s.on_chunk(&bogus.chunks[0], None, t0),
            Ok(ChunkOutcome::Stored)
        );
        // Pulls ask the origin for the missing indices; it answers with its real
        // (announced) chunks, which replace the bogus partial list...
        let t1 = t0 + Duration::from_secs(3);
        let pulls = s.poll(t1);
        assert!(!pulls.is_empty());
        for p in &pulls {
            if let Some(c) = real.chunks.get(usize::from(p.index)) {
                s.on_chunk(c, Some("gw12"), t1).unwrap();
            }
        }
        // ...and the next round completes the announced list.
        let t2 = t1 + Duration::from_secs(11);
        let mut applied = None;
        for p in s.poll(t2) {
            if let Ok(ChunkOutcome::Applied(a)) =
                s.on_chunk(&real.chunks[usize::from(p.index)], Some("gw12"), t2)
            {
                applied = Some(a);
            }
        }
        assert_eq!(applied.unwrap().version, 20);
    }

    #[test]
    fn list_that_contradicts_the_tag_digest_is_refused() {
        let enc = encode(&sample(13, 100), "gw9", 8, 300).unwrap();
        let mut tag = enc.tag();
        tag.digest[0] ^= 1;
        let mut s = sync();
        let now = Instant::now();
        s.on_member("gw9", true, Some(tag), now);
        assert!(feed_all(&mut s, &enc, now).is_none());
        assert_eq!(s.counters().rejected(Reject::TagMismatch), 1);
    }

    #[test]
    fn garbage_oversized_and_misattributed_payloads_are_counted() {
        let mut s = sync();
        let now = Instant::now();
        let enc = encode(&sample(14, 100), "gw10", 1, 300).unwrap();
        let cases: Vec<(Vec<u8>, Reject)> = vec![
            (vec![], Reject::Truncated),
            (vec![1], Reject::Truncated),
            (vec![3, 1, b'x'], Reject::UnknownFormat),
            (vec![1, 0], Reject::BadOrigin),
            (vec![1, 65], Reject::BadOrigin),
            (
                vec![1, 2, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
                Reject::BadOrigin,
            ),
            (vec![0u8; MAX_CHUNK_LEN + 1], Reject::Oversized),
            (
                {
                    let mut c = enc.chunks[0].clone();
                    c.truncate(20);
                    c
                },
                Reject::Truncated,
            ),
            (
                {
                    // index >= count
                    let mut c = enc.chunks[0].clone();
                    let at = 2 + 4 + 8;
                    c[at..at + 2].copy_from_slice(&500u16.to_be_bytes());
                    c
                },
                Reject::BadIndex,
            ),
            (
                {
                    // a prefix length code above 161
                    let mut c = enc.chunks[0].clone();
                    c.push(200);
                    c
                },
                Reject::MalformedBody,
            ),
            (
                {
                    // IPv4 /24 whose host bits are not zero... /20 with a set host bit
                    let mut c = enc.chunks[0].clone();
                    c.extend_from_slice(&[20, 10, 0, 0x0f]);
                    c
                },
                Reject::MalformedBody,
            ),
            (
                {
                    // an entry cut short
                    let mut c = enc.chunks[0].clone();
                    c.extend_from_slice(&[24, 10]);
                    c
                },
                Reject::MalformedBody,
            ),
        ];
        for (bytes, reason) in &cases {
            assert_eq!(s.on_chunk(bytes, None, now), Err(*reason), "{bytes:?}");
        }
        assert_eq!(s.counters().rejected_total(), cases.len() as u64);
        // A pulled chunk answered by someone else than its origin.
        assert_eq!(
            s.on_chunk(&enc.chunks[0], Some("gw11"), now),
            Err(Reject::OriginMismatch)
        );
        // Our own list echoed back.
        let own = encode(&sample(15, 10), "me", 1, 300).unwrap();
        assert_eq!(s.on_chunk(&own.chunks[0], None, now), Err(Reject::Own));
        assert!(s.origins().next().is_none());
    }

    #[test]
    fn unknown_origins_are_bounded() {
        let mut cfg = SyncConfig::new("me");
        cfg.max_unknown_origins = 2;
        let mut s = PrefixSync::new(cfg);
        let now = Instant::now();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let enc = encode(&sample(16, 100), name, 1, 300).unwrap();
            let r = s.on_chunk(&enc.chunks[0], None, now);
            if i < 2 {
                assert_eq!(r, Ok(ChunkOutcome::Stored));
            } else {
                assert_eq!(r, Err(Reject::UnknownOrigin));
            }
        }
        // Once a member, it is accepted.
        s.on_member("c", true, None, now);
        let enc = encode(&sample(16, 100), "c", 1, 300).unwrap();
        assert_eq!(
            s.on_chunk(&enc.chunks[0], None, now),
            Ok(ChunkOutcome::Stored)
        );
    }

    #[test]
    fn encode_refuses_what_cannot_fit() {
        let list = sample(17, 10);
        assert_eq!(encode(&list, "", 1, 448), Err(EncodeError::BadOrigin));
        assert_eq!(
            encode(&list, "x", 1, 40),
            Err(EncodeError::ChunkTooSmall(40))
        );
        let huge =
            PrefixList::new((0..70_000u32).map(|i| {
                IpNet::V6(Ipv6Net::new(Ipv6Addr::from(u128::from(i) << 64), 128).unwrap())
            }));
        assert!(matches!(
            encode(&huge, "x", 1, 448),
            Err(EncodeError::TooManyChunks(_))
        ));
    }

    #[test]
    fn a_small_change_travels_as_one_verified_delta() {
        let old = sample(22, 2000);
        let mut changed: Vec<IpNet> = old.as_slice()[10..].to_vec();
        changed.extend(sample(23, 10).iter().copied());
        let new = PrefixList::new(changed);
        let enc_old = encode(&old, "gw14", 1, MAX_CHUNK_LEN).unwrap();
        let enc_new = encode(&new, "gw14", 2, MAX_CHUNK_LEN).unwrap();
        let delta = encode_delta(&old, &new, "gw14", 1, 2, &enc_new.digest).unwrap();
        assert!(delta.len() < 250, "{}", delta.len());
        assert_eq!(digest(&new), enc_new.digest);

        let mut s = sync();
        let now = Instant::now();
        // Without the base version: refused (the receiver will pull instead).
        assert_eq!(s.on_chunk(&delta, None, now), Err(Reject::DeltaBase));
        feed_all(&mut s, &enc_old, now).unwrap();
        match s.on_chunk(&delta, None, now).unwrap() {
            ChunkOutcome::Applied(a) => {
                assert_eq!(a.version, 2);
                assert_eq!(*a.prefixes, new);
                assert_eq!(a.digest, enc_new.digest);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.on_chunk(&delta, None, now), Err(Reject::Duplicate));
        // Chunks of the same version pushed as well are duplicates now.
        assert_eq!(
            s.on_chunk(&enc_new.chunks[0], None, now),
            Err(Reject::Duplicate)
        );
    }

    #[test]
    fn deltas_that_do_not_apply_are_refused() {
        let old = sample(24, 100);
        let new = PrefixList::new(old.as_slice()[5..].iter().copied());
        let enc_old = encode(&old, "gw15", 1, 300).unwrap();
        let d = digest(&new);
        let mut s = sync();
        let now = Instant::now();
        feed_all(&mut s, &enc_old, now).unwrap();
        // Wrong digest.
        let mut bad = d;
        bad[0] ^= 1;
        let m = encode_delta(&old, &new, "gw15", 1, 2, &bad).unwrap();
        assert_eq!(s.on_chunk(&m, None, now), Err(Reject::DeltaMismatch));
        // Removes something the base does not hold.
        let stranger: IpNet = "192.0.2.0/24".parse().unwrap();
        let fake_base = PrefixList::new(new.iter().copied().chain([stranger]));
        let m = encode_delta(&fake_base, &new, "gw15", 1, 2, &d).unwrap();
        assert_eq!(s.on_chunk(&m, None, now), Err(Reject::DeltaMismatch));
        // Against another base version.
        let m = encode_delta(&old, &new, "gw15", 7, 8, &d).unwrap();
        assert_eq!(s.on_chunk(&m, None, now), Err(Reject::DeltaBase));
        // Going backwards, or not forwards.
        let m = encode_delta(&old, &new, "gw15", 1, 1, &d).unwrap();
        assert_eq!(s.on_chunk(&m, None, now), Err(Reject::DeltaMismatch));
        // Garbage after a delta header.
        let mut m = encode_delta(&old, &new, "gw15", 1, 2, &d).unwrap();
        m.push(250);
        assert_eq!(s.on_chunk(&m, None, now), Err(Reject::MalformedBody));
        let m = encode_delta(&old, &new, "gw15", 1, 2, &d).unwrap();
        assert_eq!(
            s.on_chunk(&m[..m.len() - 1], None, now),
            Err(Reject::MalformedBody)
        );
        assert_eq!(s.on_chunk(&m[..20], None, now), Err(Reject::Truncated));
        // Large changes do not fit one message.
        assert!(encode_delta(&old, &sample(26, 2000), "gw15", 1, 2, &d).is_none());
        // And the list is untouched.
        assert_eq!(*s.applied("gw15").unwrap().prefixes, old);
        // The genuine delta still applies.
        let m = encode_delta(&old, &new, "gw15", 1, 2, &d).unwrap();
        assert!(matches!(
            s.on_chunk(&m, None, now),
            Ok(ChunkOutcome::Applied(_))
        ));
    }

    #[test]
    fn pull_requests_round_trip_and_reject_garbage() {
        assert_eq!(parse_pull_request(&pull_request(513)), Some(513));
        assert_eq!(parse_pull_request(&[1, 2]), None);
        assert_eq!(parse_pull_request(&[9, 0, 1]), None);
    }

    #[test]
    fn versions_increase_even_when_the_clock_does_not() {
        assert_eq!(next_version(None, 1000), 1000);
        assert_eq!(next_version(Some(999), 1000), 1000);
        assert_eq!(next_version(Some(1000), 1000), 1001);
        assert_eq!(next_version(Some(5000), 1000), 5001);
    }
}
