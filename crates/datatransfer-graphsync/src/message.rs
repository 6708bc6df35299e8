//! Graphsync messages, independent of wire version.
//!
//! A message carries requests, responses and blocks together. Requests are identified by a
//! 16-byte id (a UUID in 2.0.0; 1.0.0's 32-bit ids are mapped to these by the 1.0.0 codec).
//! Extension values and selectors are kept as raw DAG-CBOR, so they pass through unchanged.

use bytes::Bytes;
use cid::Cid;
use thiserror::Error;

use datatransfer_ipld::cbor::{CborError, Reader};

/// A request's id: 16 bytes (a UUID in 2.0.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; 16]);

/// One DAG-CBOR item, kept as its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawNode(Vec<u8>);

impl RawNode {
    /// Wraps bytes after checking they are exactly one CBOR item.
    pub fn new(bytes: Vec<u8>) -> Result<Self, CborError> {
        let mut r = Reader::new(&bytes);
        r.skip_item()?;
        r.finish()?;
        Ok(Self(bytes))
    }

    /// Wraps bytes the caller has already checked.
    pub(crate) fn checked(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Named side-channel data on a request or response: a map from names to DAG-CBOR values,
/// kept in canonical order (shorter names first, then bytewise) so equal maps compare equal
/// however they arrived.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extensions(Vec<(String, RawNode)>);

fn canonical(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes()))
}

impl Extensions {
    /// No extensions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Extensions from entries (a later entry with the same name replaces an earlier one).
    ///
    /// Sorts once, so many entries in any order cost `n log n`, never `n²`.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, RawNode)>) -> Self {
        let mut sorted: Vec<(String, RawNode)> = entries.into_iter().collect();
        // Stable: entries with the same name stay in their order, the last one wins.
        sorted.sort_by(|a, b| canonical(&a.0, &b.0));
        let mut out: Vec<(String, RawNode)> = Vec::with_capacity(sorted.len());
        for (k, v) in sorted {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Self(out)
    }

    /// Extensions from a peer's map: as [`Extensions::from_entries`], but a name given twice
    /// is an error (naming it).
    pub(crate) fn from_unique_entries(mut entries: Vec<(String, RawNode)>) -> Result<Self, String> {
        entries.sort_by(|a, b| canonical(&a.0, &b.0));
        match entries.windows(2).find(|w| w[0].0 == w[1].0) {
            Some(w) => Err(w[0].0.clone()),
            None => Ok(Self(entries)),
        }
    }

    /// The value of the extension `name`, if present.
    pub fn get(&self, name: &str) -> Option<&RawNode> {
        self.0
            .binary_search_by(|(n, _)| canonical(n, name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets (or replaces) an extension.
    pub fn set(&mut self, name: impl Into<String>, value: RawNode) {
        let name = name.into();
        match self.0.binary_search_by(|(n, _)| canonical(n, &name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    /// The entries, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawNode)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// A new request.
    New,
    /// Cancel the request with this id.
    Cancel,
    /// Extensions update the request (unpause, for example).
    Update,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its id.
    pub id: RequestId,
    /// What it asks.
    pub kind: RequestType,
    /// Priority (0 is not written).
    pub priority: i32,
    /// The root of the DAG (New only).
    pub root: Option<Cid>,
    /// The selector (New only).
    pub selector: Option<RawNode>,
    /// Extensions.
    pub extensions: Extensions,
}

impl Request {
    /// A new request for the DAG under `root` chosen by `selector`.
    pub fn new(
        id: RequestId,
        root: Cid,
        selector: RawNode,
        priority: i32,
        extensions: Extensions,
    ) -> Self {
        Self {
            id,
            kind: RequestType::New,
            priority,
            root: Some(root),
            selector: Some(selector),
            extensions,
        }
    }

    /// Cancels request `id`.
    pub fn cancel(id: RequestId) -> Self {
        Self {
            id,
            kind: RequestType::Cancel,
            priority: 0,
            root: None,
            selector: None,
            extensions: Extensions::new(),
        }
    }

    /// Updates request `id` with extensions.
    pub fn update(id: RequestId, extensions: Extensions) -> Self {
        Self {
            id,
            kind: RequestType::Update,
            priority: 0,
            root: None,
            selector: None,
            extensions,
        }
    }
}

/// A response status (go-graphsync's `ResponseStatusCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ResponseStatus {
    /// Informational: the request was received.
    RequestAcknowledged = 10,
    /// Informational: other peers may have the data.
    AdditionalPeers = 11,
    /// Informational: not enough gas.
    NotEnoughGas = 12,
    /// Informational: use another protocol.
    OtherProtocol = 13,
    /// Informational: a partial response; more follows.
    PartialResponse = 14,
    /// Informational: the responder paused.
    RequestPaused = 15,
    /// Done: everything was sent.
    RequestCompletedFull = 20,
    /// Done: some blocks were missing.
    RequestCompletedPartial = 21,
    /// Error: rejected.
    RequestRejected = 30,
    /// Error: the responder is busy.
    RequestFailedBusy = 31,
    /// Error: unknown failure.
    RequestFailedUnknown = 32,
    /// Error: legal reasons.
    RequestFailedLegal = 33,
    /// Error: the root was not found.
    RequestFailedContentNotFound = 34,
    /// Error: cancelled by the responder.
    RequestCancelled = 35,
}

/// A status code outside the known set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown graphsync response status {0}")]
pub struct UnknownStatus(pub i128);

impl ResponseStatus {
    /// The numeric code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Whether the request is over (success or error).
    pub fn is_terminal(self) -> bool {
        self.code() >= 20
    }

    /// Whether the request failed.
    pub fn is_error(self) -> bool {
        self.code() >= 30
    }
}

impl TryFrom<i128> for ResponseStatus {
    type Error = UnknownStatus;

    fn try_from(code: i128) -> Result<Self, UnknownStatus> {
        use ResponseStatus::*;
        Ok(match code {
            10 => RequestAcknowledged,
            11 => AdditionalPeers,
            12 => NotEnoughGas,
            13 => OtherProtocol,
            14 => PartialResponse,
            15 => RequestPaused,
            20 => RequestCompletedFull,
            21 => RequestCompletedPartial,
            30 => RequestRejected,
            31 => RequestFailedBusy,
            32 => RequestFailedUnknown,
            33 => RequestFailedLegal,
            34 => RequestFailedContentNotFound,
            35 => RequestCancelled,
            other => return Err(UnknownStatus(other)),
        })
    }
}

/// What happened to one link of the traversal (2.0.0 metadata actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkAction {
    /// The block is in this message (`p`).
    Present,
    /// The block exists but is not sent, as a duplicate (`d`).
    DuplicateNotSent,
    /// The responder does not have the block (`m`).
    Missing,
    /// The DAG under the link was already sent in this request (`s`).
    DuplicateDagSkipped,
}

impl LinkAction {
    /// The one-letter code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Self::Present => "p",
            Self::DuplicateNotSent => "d",
            Self::Missing => "m",
            Self::DuplicateDagSkipped => "s",
        }
    }

    /// The action for a wire code.
    pub fn from_code(code: &[u8]) -> Option<Self> {
        Some(match code {
            b"p" => Self::Present,
            b"d" => Self::DuplicateNotSent,
            b"m" => Self::Missing,
            b"s" => Self::DuplicateDagSkipped,
            _ => return None,
        })
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request it answers.
    pub id: RequestId,
    /// Its status.
    pub status: ResponseStatus,
    /// One entry per link the responder's traversal reached, in order.
    pub metadata: Vec<(Cid, LinkAction)>,
    /// Extensions.
    pub extensions: Extensions,
}

/// A block, named by its CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block's CID (rebuilt on decoding from the prefix and the data's hash).
    pub cid: Cid,
    /// The block's bytes (shared, not copied, between a received message and its blocks,
    /// and between a store's block and the message that sends it).
    pub data: Bytes,
}

/// One graphsync message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Requests.
    pub requests: Vec<Request>,
    /// Responses.
    pub responses: Vec<Response>,
    /// Blocks.
    pub blocks: Vec<Block>,
}

impl Message {
    /// Whether the message carries nothing.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.responses.is_empty() && self.blocks.is_empty()
    }

    /// A rough size of the encoded message (block bytes plus a little per entry), for
    /// deciding how much to coalesce.
    pub fn approx_size(&self) -> usize {
        let blocks: usize = self.blocks.iter().map(|b| b.data.len() + 48).sum();
        let responses: usize = self
            .responses
            .iter()
            .map(|r| 64 + 48 * r.metadata.len() + ext_size(&r.extensions))
            .sum();
        let requests: usize = self
            .requests
            .iter()
            .map(|r| 128 + ext_size(&r.extensions))
            .sum();
        blocks + responses + requests
    }

    /// Appends `other` to this message. Responses to the same request are merged into one
    /// (metadata concatenated, extensions combined, the later status kept), because peers
    /// (go-graphsync among them) keep one response per request id per message. Blocks
    /// already present are not repeated.
    pub fn merge(&mut self, other: Self) {
        self.requests.extend(other.requests);
        for r in other.responses {
            match self.responses.iter_mut().find(|x| x.id == r.id) {
                Some(x) => {
                    x.status = r.status;
                    x.metadata.extend(r.metadata);
                    for (k, v) in r.extensions.iter() {
                        x.extensions.set(k, v.clone());
                    }
                }
                None => self.responses.push(r),
            }
        }
        for b in other.blocks {
            if !self.blocks.iter().any(|x| x.cid == b.cid) {
                self.blocks.push(b);
            }
        }
    }
}

fn ext_size(e: &Extensions) -> usize {
    e.iter()
        .map(|(k, v)| k.len() + v.as_bytes().len() + 4)
        .sum()
}

/// Why bytes are not a graphsync message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Malformed CBOR.
    #[error("malformed graphsync message: {0}")]
    Cbor(#[from] CborError),
    /// Malformed protobuf.
    #[error("malformed graphsync 1.0.0 message: {0}")]
    Protobuf(String),
    /// A field has the wrong shape.
    #[error("invalid graphsync message: {0}")]
    Invalid(String),
    /// A status code outside the known set.
    #[error(transparent)]
    Status(#[from] UnknownStatus),
    /// The message is larger than the limit.
    #[error("graphsync message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// The prefix of a CID as graphsync sends it: version, codec, hash code and digest length,
/// each a varint (go-cid's `Prefix.Bytes`).
pub fn cid_prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    let version = match cid.version() {
        cid::Version::V0 => 0,
        cid::Version::V1 => 1,
    };
    for v in [
        version,
        cid.codec(),
        cid.hash().code(),
        u64::from(cid.hash().size()),
    ] {
        put_uvarint(&mut out, v);
    }
    out
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Rebuilds a block's CID from a graphsync prefix and the block's bytes (SHA2-256 or
/// identity hashes only).
pub fn cid_from_prefix(prefix: &[u8], data: &[u8]) -> Result<Cid, MessageError> {
    let bad = |why: &str| MessageError::Invalid(format!("block prefix: {why}"));
    let mut pos = 0;
    let mut next = || uvarint(prefix, &mut pos).ok_or_else(|| bad("truncated"));
    let (version, codec, code, len) = (next()?, next()?, next()?, next()?);
    if pos != prefix.len() {
        return Err(bad("trailing bytes"));
    }
    let digest: Vec<u8> = match code {
        datatransfer_ipld::codec::SHA2_256 => {
            let full = datatransfer_ipld::codec::cid_of(datatransfer_ipld::codec::RAW, data);
            full.hash().digest().to_vec()
        }
        datatransfer_ipld::codec::IDENTITY => data.to_vec(),
        other => return Err(bad(&format!("unsupported hash 0x{other:x}"))),
    };
    if digest.len() as u64 != len {
        return Err(bad("digest length does not match the hash"));
    }
    let mh = cid::multihash::Multihash::wrap(code, &digest).map_err(|e| bad(&e.to_string()))?;
    match version {
        0 if codec == datatransfer_ipld::codec::DAG_PB => {
            Cid::new_v0(mh).map_err(|e| bad(&e.to_string()))
        }
        1 => Ok(Cid::new_v1(codec, mh)),
        v => Err(bad(&format!("unsupported CID version {v}"))),
    }
}
