//! Graphsync: a libp2p protocol that moves the part of an IPLD DAG a selector matches, with
//! both sides walking the same traversal so every block is checked on arrival.
//!
//! This crate knows nothing of data transfer. So far it holds the wire layer:
//!
//! - [`message`]: requests, responses (with per-link metadata), blocks and extensions,
//!   independent of the wire version.
//! - [`v2`]: `/ipfs/graphsync/2.0.0`, DAG-CBOR `{"gs2": ...}`, byte-identical to go-graphsync.
//! - [`v1`]: `/ipfs/graphsync/1.0.0`, protobuf via prost.
//! - [`Version`], [`encode_frame`] and [`FrameReader`]: messages framed with a varint length
//!   prefix (go-msgio), capped at 4 MiB by default.
//! - [`responder::Responder`] and [`requester::Verifier`]: both ends of one request, sans IO,
//!   on `datatransfer-ipld`'s resumable traversal (go-graphsync's metadata and do-not-send rules).
//! - [`node::GraphSync`]: the node over libp2p (via `datatransfer-streams`), with [`node::Hooks`]
//!   for the protocol on top.

pub mod message;
pub mod node;
pub mod requester;
pub mod responder;
pub mod v1;
pub mod v2;

pub use message::{
    Block, Extensions, LinkAction, Message, MessageError, RawNode, Request, RequestId, RequestType,
    Response, ResponseStatus,
};

use message::{put_uvarint, uvarint};

/// Default cap on one framed message: 4 MiB (libp2p's `network.MessageSizeMax`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;

/// The graphsync protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `/ipfs/graphsync/2.0.0` (DAG-CBOR).
    V2,
    /// `/ipfs/graphsync/1.0.0` (protobuf).
    V1,
}

impl Version {
    /// The libp2p protocol name.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::V2 => "/ipfs/graphsync/2.0.0",
            Self::V1 => "/ipfs/graphsync/1.0.0",
        }
    }
}

/// Encodes a message with its varint length prefix.
pub fn encode_frame(msg: &Message, version: Version, ids: &mut v1::V1Ids) -> Vec<u8> {
    let body = match version {
        Version::V2 => v2::encode(msg),
        Version::V1 => v1::encode(msg, ids),
    };
    let mut out = Vec::with_capacity(body.len() + 5);
    put_uvarint(&mut out, body.len() as u64);
    out.extend(body);
    out
}

/// Splits a byte stream into framed messages, refusing any larger than the limit before
/// buffering it.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    max: usize,
}

impl FrameReader {
    /// A reader refusing frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's body, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, MessageError> {
        let mut pos = 0;
        let Some(len) = uvarint(&self.buf, &mut pos) else {
            if self.buf.len() >= 10 {
                return Err(MessageError::Invalid("frame length varint too long".into()));
            }
            return Ok(None);
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(MessageError::TooLarge {
                size: len,
                max: self.max,
            });
        }
        if self.buf.len() - pos < len {
            return Ok(None);
        }
        let body = self.buf[pos..pos + len].to_vec();
        self.buf.drain(..pos + len);
        Ok(Some(body))
    }

    /// Bytes buffered but not yet handed out (non-zero at the end of a stream means the last
    /// frame was cut).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Decodes one message body of `version`.
pub fn decode_body(
    body: &[u8],
    version: Version,
    ids: &v1::V1Ids,
) -> Result<Message, MessageError> {
    match version {
        Version::V2 => v2::decode(body, 256),
        Version::V1 => v1::decode(body, ids),
    }
}
