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
//!   prefix (go-msgio), capped at 4 MiB by default; [`encode_shared_frame_into`] frames a
//!   message without copying its large blocks ([`SharedFrame`], written part by part).
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
use bytes::{Buf, BytesMut};

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
    encode_frame_into(Vec::new(), msg, version, ids)
}

/// Encodes a message with its varint length prefix into `buf`, whose bytes are discarded
/// and whose room is used first: a writer that hands each written frame's buffer back
/// ([`Frame::into_buffer`]) asks the allocator for no new memory per message.
pub fn encode_frame_into(
    buf: Vec<u8>,
    msg: &Message,
    version: Version,
    ids: &mut v1::V1Ids,
) -> Frame {
    let SharedFrame { buf, start, .. } =
        encode_shared_frame_into(buf, msg, version, ids, usize::MAX);
    Frame { buf, start }
}

impl Frame {
    /// The frame's buffer, for the next [`encode_frame_into`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// A framed message whose large blocks are not copied into its buffer: they go on the wire
/// from where they lie (a store's memory, a received message), between the buffer's parts.
/// Written in order, [`SharedFrame::parts`] are the bytes of the [`Frame`] that
/// [`encode_frame_into`] makes of the same message.
#[derive(Debug, Clone)]
pub struct SharedFrame {
    buf: Vec<u8>,
    start: usize,
    /// The blocks left out of `buf`, each with the offset in `buf` where its bytes belong.
    shared: Vec<(usize, Bytes)>,
}

impl SharedFrame {
    /// The frame's length on the wire, prefix included.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start + self.shared.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// Whether the frame has no bytes (never: a frame has at least its prefix).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's bytes, in the order they go on the wire.
    pub fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(2 * self.shared.len() + 1);
        let mut at = self.start;
        for (offset, block) in &self.shared {
            parts.push(&self.buf[at..*offset]);
            parts.push(&block[..]);
            at = *offset;
        }
        parts.push(&self.buf[at..]);
        parts
    }

    /// The frame's buffer, for the next [`encode_shared_frame_into`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// Encodes a message with its varint length prefix into `buf` (as [`encode_frame_into`]),
/// except the bytes of blocks of `share_from` bytes or more, which the frame holds as they
/// are (a handle, not a copy). Version 1 (protobuf) frames share nothing.
pub fn encode_shared_frame_into(
    mut buf: Vec<u8>,
    msg: &Message,
    version: Version,
    ids: &mut v1::V1Ids,
    share_from: usize,
) -> SharedFrame {
    let mut shared = Vec::new();
    let left_out: usize = match version {
        Version::V2 => msg
            .blocks
            .iter()
            .filter(|b| b.data.len() >= share_from)
            .map(|b| b.data.len())
            .sum(),
        Version::V1 => 0,
    };
    buf.clear();
    buf.reserve(PREFIX_ROOM + msg.approx_size().saturating_sub(left_out) + 256);
    buf.resize(PREFIX_ROOM, 0);
    match version {
        Version::V2 => v2::encode_sharing_into(&mut buf, msg, share_from, &mut shared),
        Version::V1 => v1::encode_into(&mut buf, msg, ids),
    }
    let body = buf.len() - PREFIX_ROOM + shared.iter().map(|(_, b)| b.len()).sum::<usize>();
    let mut prefix = Vec::with_capacity(PREFIX_ROOM);
    put_uvarint(&mut prefix, body as u64);
    let start = PREFIX_ROOM - prefix.len();
    buf[start..PREFIX_ROOM].copy_from_slice(&prefix);
    SharedFrame { buf, start, shared }
}

/// Splits a byte stream into framed messages, refusing any larger than the limit before
/// buffering it.
///
/// A reader can hand it bytes ([`FrameReader::push`]) or, to spare a copy, read into it
/// ([`FrameReader::read_buf`] then [`FrameReader::advance`]): once a frame's length is known,
/// the room offered ends where the frame ends, so a large body arrives in place and is handed
/// out as it lies ([`Bytes`], no copy).
///
/// The memory of a frame handed out is used again for a later one once every part of it has
/// been dropped (the reader keeps a handle on the last few buffers): a stream of large
/// messages whose blocks are consumed and dropped does not ask the allocator (and the kernel,
/// which hands out fresh pages one fault at a time) for a new buffer per message.
#[derive(Debug)]
pub struct FrameReader {
    /// The frame being read (its prefix first), and possibly the start of the next ones;
    /// `filled` bytes of it are real, the rest is room for reads.
    buf: BytesMut,
    /// The size of the allocation `buf` is a handle on.
    buf_size: usize,
    filled: usize,
    max: usize,
    /// Empty handles on the buffers of earlier frames, with their sizes, taken again once
    /// unshared.
    spare: Vec<(BytesMut, usize)>,
}

/// Room offered for a read while the next frame's length is not known yet: small frames
/// (data-transfer messages, updates) arrive whole in it, a large one's prefix and start.
const HEAD_READ: usize = 8 << 10;

/// Room made ready ahead of what arrived of a frame whose length is known.
const READ_STEP: usize = 256 << 10;

/// How many earlier buffers a reader keeps a handle on: enough for the frames a consumer
/// still works on while the next arrives.
/// (The small buffers of head reads count too.)
const SPARE_BUFFERS: usize = 6;

/// The most a reader keeps of earlier buffers, all of them together: a peer that sends
/// frames of the largest size allowed does not make each stream hold several of them.
const SPARE_BYTES: usize = 16 << 20;

impl FrameReader {
    /// A reader refusing frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            buf_size: 0,
            filled: 0,
            max,
            spare: Vec::new(),
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.truncate(self.filled);
        self.buf.extend_from_slice(bytes);
        self.filled = self.buf.len();
        // Growing may have moved it to a larger allocation.
        self.buf_size = self.buf_size.max(self.buf.capacity());
    }

    /// Room to read the stream's next bytes into; tell [`FrameReader::advance`] how many the
    /// read gave. Call [`FrameReader::next_frame`] until it has nothing before asking again.
    ///
    /// The frame's whole size is reserved once, so the body never moves, and each read is
    /// offered at most 256 KiB. A new buffer comes zeroed from the allocator (a large one as
    /// pages the kernel backs only when a read writes them) and a reused one is made ready
    /// 256 KiB ahead of what arrived: for a peer that announces a large frame and sends
    /// nothing we write nothing, and freshly mapped pages cost address space only.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let want = match self.head() {
            Some((pos, len)) if len <= self.max => {
                let end = pos.saturating_add(len);
                self.make_room(end);
                end.min(self.filled + READ_STEP)
            }
            _ => {
                self.make_room(self.filled + HEAD_READ);
                self.filled + HEAD_READ
            }
        };
        let want = want.max(self.filled + 1);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.filled..want]
    }

    /// Makes the buffer able to hold `size` bytes without moving: a spare buffer nothing
    /// shares any more, or a new one of exactly that size. What arrived moves along.
    fn make_room(&mut self, size: usize) {
        if self.buf.capacity() >= size {
            return;
        }
        let reused = self
            .spare
            .iter_mut()
            .position(|(b, _)| b.try_reclaim(size))
            .map(|i| self.spare.swap_remove(i));
        let (next, next_size) = match reused {
            Some((mut next, next_size)) => {
                next.extend_from_slice(&self.buf[..self.filled]);
                (next, next_size)
            }
            None => {
                // Zeroed by the allocator: fresh pages come zeroed from the kernel and are
                // not written here (only faulted in by the reads), where `resize` would
                // write every byte a second time.
                let mut next = BytesMut::zeroed(size);
                next[..self.filled].copy_from_slice(&self.buf[..self.filled]);
                (next, size)
            }
        };
        // The old handle, even one with no room left, holds its buffer: once every frame
        // cut from it is dropped, it can take the whole buffer back.
        let mut old = std::mem::replace(&mut self.buf, next);
        let old_size = std::mem::replace(&mut self.buf_size, next_size);
        old.clear();
        self.spare.push((old, old_size));
        // The oldest go first, past the count or the bytes kept.
        while self.spare.len() > SPARE_BUFFERS
            || self.spare.iter().map(|(_, n)| n).sum::<usize>() > SPARE_BYTES
        {
            self.spare.remove(0);
        }
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
            self.buf.truncate(end);
            self.filled = 0;
            return Ok(Some(self.buf.split().freeze().slice(pos..)));
        }
        // More frames follow in what one small read brought: copy this one out, so a small
        // message never holds the buffer of the ones after it.
        let body = Bytes::copy_from_slice(&self.buf[pos..end]);
        self.buf.advance(end);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one frame of `len` bytes through `read_buf`, as a stream reader does.
    fn read_frame(fr: &mut FrameReader, len: usize) -> Bytes {
        let mut frame = Vec::new();
        put_uvarint(&mut frame, len as u64);
        frame.resize(frame.len() + len, 7);
        let mut at = 0;
        loop {
            if let Some(f) = fr.next_frame().expect("a valid frame") {
                return f;
            }
            let room = fr.read_buf();
            let n = room.len().min(frame.len() - at);
            room[..n].copy_from_slice(&frame[at..at + n]);
            fr.advance(n);
            at += n;
        }
    }

    #[test]
    fn the_buffers_kept_for_later_frames_stay_under_their_bound() {
        let max = 8 << 20;
        let mut fr = FrameReader::new(max);
        let held: Vec<Bytes> = (0..8).map(|_| read_frame(&mut fr, max)).collect();
        drop(held);
        let kept: usize = fr.spare.iter().map(|(_, n)| n).sum();
        assert!(kept <= SPARE_BYTES, "{kept} bytes kept");
        assert!(fr.spare.len() <= SPARE_BUFFERS);
        // And what is kept is used: the next frame of that size needs no new buffer.
        let before: Vec<usize> = fr.spare.iter().map(|(_, n)| *n).collect();
        assert!(
            before.contains(&(max + 4)),
            "a whole frame's buffer is kept: {before:?}"
        );
        let next = read_frame(&mut fr, max);
        assert_eq!(next.len(), max);
        assert!(fr.spare.len() <= SPARE_BUFFERS);
    }
}
