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

pub use bytes::Bytes;

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

/// A framed message ready for the wire: its varint length prefix, then its body, in one
/// buffer (the body is encoded behind room left for the prefix, so it is never copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    buf: Vec<u8>,
    start: usize,
}

impl std::ops::Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Room for the longest varint length prefix (a `u64`).
const PREFIX_ROOM: usize = 10;

/// Encodes a message with its varint length prefix.
pub fn encode_frame(msg: &Message, version: Version, ids: &mut v1::V1Ids) -> Frame {
    let mut buf = Vec::with_capacity(PREFIX_ROOM + msg.approx_size() + 256);
    buf.resize(PREFIX_ROOM, 0);
    match version {
        Version::V2 => v2::encode_into(&mut buf, msg),
        Version::V1 => v1::encode_into(&mut buf, msg, ids),
    }
    let mut prefix = Vec::with_capacity(PREFIX_ROOM);
    put_uvarint(&mut prefix, (buf.len() - PREFIX_ROOM) as u64);
    let start = PREFIX_ROOM - prefix.len();
    buf[start..PREFIX_ROOM].copy_from_slice(&prefix);
    Frame { buf, start }
}

/// Splits a byte stream into framed messages, refusing any larger than the limit before
/// buffering it.
///
/// A reader can hand it bytes ([`FrameReader::push`]) or, to spare a copy, read into it
/// ([`FrameReader::read_buf`] then [`FrameReader::advance`]): once a frame's length is known,
/// the room offered ends where the frame ends, so a large body arrives in place and is handed
/// out as it lies ([`Bytes`], no copy).
#[derive(Debug)]
pub struct FrameReader {
    /// The frame being read (its prefix first), and possibly the start of the next ones;
    /// `filled` bytes of it are real, the rest is room for reads.
    buf: Vec<u8>,
    filled: usize,
    max: usize,
}

/// Room offered for a read while the next frame's length is not known yet: small frames
/// (data-transfer messages, updates) arrive whole in it, a large one's prefix and start.
const HEAD_READ: usize = 8 << 10;

/// Room made ready ahead of what arrived of a frame whose length is known.
const READ_STEP: usize = 256 << 10;

impl FrameReader {
    /// A reader refusing frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            filled: 0,
            max,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.truncate(self.filled);
        self.buf.extend_from_slice(bytes);
        self.filled = self.buf.len();
    }

    /// Room to read the stream's next bytes into; tell [`FrameReader::advance`] how many the
    /// read gave. Call [`FrameReader::next_frame`] until it has nothing before asking again.
    ///
    /// The frame's whole size is reserved once (address space, so the body never moves), but
    /// room is made ready only 256 KiB ahead of what arrived: a peer that announces a
    /// large frame and sends nothing costs no memory.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let want = match self.head() {
            Some((pos, len)) if len <= self.max => {
                let end = pos.saturating_add(len);
                self.buf.reserve_exact(end.saturating_sub(self.buf.len()));
                end.min(self.filled + READ_STEP)
            }
            _ => self.filled + HEAD_READ,
        };
        let want = want.max(self.filled + 1);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.filled..want]
    }

    /// Counts `n` bytes read into [`FrameReader::read_buf`].
    pub fn advance(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// The next frame's body start and length, once its prefix is in.
    fn head(&self) -> Option<(usize, usize)> {
        let mut pos = 0;
        let len = uvarint(&self.buf[..self.filled], &mut pos)?;
        Some((pos, usize::try_from(len).unwrap_or(usize::MAX)))
    }

    /// The next complete frame's body, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, MessageError> {
        let Some((pos, len)) = self.head() else {
            if self.filled >= 10 {
                return Err(MessageError::Invalid("frame length varint too long".into()));
            }
            return Ok(None);
        };
        if len > self.max {
            return Err(MessageError::TooLarge {
                size: len,
                max: self.max,
            });
        }
        if self.filled - pos < len {
            return Ok(None);
        }
        let end = pos + len;
        if end == self.filled {
            // The buffer holds this frame and nothing more: it becomes the body.
            let mut all = std::mem::take(&mut self.buf);
            all.truncate(end);
            self.filled = 0;
            return Ok(Some(Bytes::from(all).slice(pos..)));
        }
        // More frames follow in what one small read brought: copy this one out.
        let body = Bytes::copy_from_slice(&self.buf[pos..end]);
        self.buf.copy_within(end..self.filled, 0);
        self.filled -= end;
        Ok(Some(body))
    }

    /// Bytes buffered but not yet handed out (non-zero at the end of a stream means the last
    /// frame was cut).
    pub fn buffered(&self) -> usize {
        self.filled
    }
}

/// Decodes one message body of `version`.
///
/// Block bytes are handed out as parts of `body` (version 2) where they can be, not copied.
pub fn decode_body(
    body: &Bytes,
    version: Version,
    ids: &v1::V1Ids,
) -> Result<Message, MessageError> {
    match version {
        Version::V2 => v2::decode_shared(body, 256),
        Version::V1 => v1::decode(body, ids),
    }
}
