//! The responder's side of one request, sans IO: walk the selector over a block store and
//! cut the walk into responses (link metadata plus blocks) under a size target.
//!
//! As go-graphsync v0.13.1's response assembler does: every link the walk reaches gets a
//! metadata entry, `Present` if the block exists here and `Missing` if not; a block is sent
//! only if it exists, comes after the first `graphsync/do-not-send-first-blocks` blocks, was
//! not sent earlier in this request and is not in `graphsync/do-not-send-cids`. The last
//! response says `RequestCompletedFull`, or `RequestCompletedPartial` if a block was missing.
//! A per-block hook sees every block (for byte accounting) and may pause the response.

use std::collections::HashSet;

use cid::Cid;
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::cbor::{self, Reader};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{
    MissingBlocks, NoVisitor, Step, Traversal, TraversalConfig, TraversalError,
};
use thiserror::Error;

use crate::message::{
    Block, Extensions, LinkAction, RawNode, Request, RequestId, Response, ResponseStatus,
};

/// The extension listing CIDs the requester already has.
pub const DO_NOT_SEND_CIDS: &str = "graphsync/do-not-send-cids";
/// The extension giving how many of the walk's first blocks the requester already has.
pub const DO_NOT_SEND_FIRST_BLOCKS: &str = "graphsync/do-not-send-first-blocks";

/// What one link's metadata entry counts for against the message target: a CID of a
/// SHA-256 multihash and its action, in DAG-CBOR, rounded up.
pub(crate) const METADATA_ENTRY_BYTES: usize = 48;

/// Default target for block (and link metadata) bytes per message: 512 KiB, as
/// go-graphsync's message queue.
pub const DEFAULT_MESSAGE_TARGET: usize = 512 << 10;

/// A request the responder cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ResponderError {
    /// The request has no root or selector, or its selector does not parse.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A do-not-send extension does not decode.
    #[error("bad extension {name}: {reason}")]
    BadExtension {
        /// The extension.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The walk failed (a corrupt block in the store, a DAG too deep).
    #[error(transparent)]
    Traversal(#[from] Box<TraversalError>),
}

/// What the per-block hook decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockDecision {
    /// Carry on.
    Continue,
    /// Send this block, then pause the response until [`Responder::unpause`].
    Pause,
}

/// A block the walk reached, as the per-block hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingBlock {
    /// Its CID.
    pub cid: Cid,
    /// Its size (0 if missing).
    pub size: u64,
    /// Whether it is sent in this response (not missing, skipped or a duplicate).
    pub sent: bool,
    /// Its position in the walk, from 1.
    pub index: u64,
}

/// One step of the walk.
// A link step is a few hundred bytes (two CIDs inline); steps are handed out one at a time
// and consumed at once, so boxing would only add an allocation per block.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepItem {
    /// A link was reached.
    Link {
        /// The block as the per-block hook sees it.
        event: OutgoingBlock,
        /// Its metadata action.
        action: LinkAction,
        /// The block, if it is to be sent.
        block: Option<Block>,
    },
    /// The walk is over; the final status.
    Finished(ResponseStatus),
}

/// One response to send: the response entry and the blocks that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePart {
    /// The response (status, metadata, extensions).
    pub response: Response,
    /// The blocks.
    pub blocks: Vec<Block>,
}

/// Serves one request.
#[derive(Debug)]
pub struct Responder {
    id: RequestId,
    traversal: Traversal,
    ignore: HashSet<Cid>,
    sent: HashSet<Cid>,
    skip_first: u64,
    index: u64,
    any_missing: bool,
    paused: bool,
    finished: bool,
    target: usize,
    pending_extensions: Extensions,
}

/// Decodes `graphsync/do-not-send-cids`: a DAG-CBOR list of links.
pub fn decode_cid_set(node: &RawNode) -> Result<Vec<Cid>, String> {
    let mut r = Reader::new(node.as_bytes());
    let n = r.read_array_len().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(r.read_cid().map_err(|e| e.to_string())?);
    }
    r.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Encodes `graphsync/do-not-send-cids`.
pub fn encode_cid_set(cids: &[Cid]) -> RawNode {
    let mut out = Vec::new();
    cbor::write_header(&mut out, cbor::MAJOR_ARRAY, cids.len() as u64);
    cids.iter().for_each(|c| cbor::write_cid(&mut out, c));
    RawNode::checked(&out)
}

/// Encodes `graphsync/do-not-send-first-blocks`.
pub fn encode_skip_count(n: u64) -> RawNode {
    let mut out = Vec::new();
    cbor::write_header(&mut out, cbor::MAJOR_UINT, n);
    RawNode::checked(&out)
}

impl Responder {
    /// Prepares to serve `request` (a New request). `target` is the block bytes per message
    /// (a link's metadata entry counts for 48).
    pub fn new(
        request: &Request,
        config: TraversalConfig,
        target: usize,
    ) -> Result<Self, ResponderError> {
        let root = request
            .root
            .ok_or_else(|| ResponderError::BadRequest("no root".into()))?;
        let sel = request
            .selector
            .as_ref()
            .ok_or_else(|| ResponderError::BadRequest("no selector".into()))?;
        let selector = Selector::from_dag_cbor(sel.as_bytes())
            .map_err(|e| ResponderError::BadRequest(e.to_string()))?;
        let ignore = match request.extensions.get(DO_NOT_SEND_CIDS) {
            Some(n) => decode_cid_set(n).map_err(|reason| ResponderError::BadExtension {
                name: DO_NOT_SEND_CIDS,
                reason,
            })?,
            None => Vec::new(),
        };
        let skip_first =
            match request.extensions.get(DO_NOT_SEND_FIRST_BLOCKS) {
                Some(n) => Reader::new(n.as_bytes()).read_uint().map_err(|e| {
                    ResponderError::BadExtension {
                        name: DO_NOT_SEND_FIRST_BLOCKS,
                        reason: e.to_string(),
                    }
                })?,
                None => 0,
            };
        let config = TraversalConfig {
            missing: MissingBlocks::Skip,
            ..config
        };
        Ok(Self {
            id: request.id,
            traversal: Traversal::new(root, selector, config),
            ignore: ignore.into_iter().collect(),
            sent: HashSet::new(),
            skip_first,
            index: 0,
            any_missing: false,
            paused: false,
            finished: false,
            target: target.max(1),
            pending_extensions: Extensions::new(),
        })
    }

    /// Whether the last response was produced.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the response is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Resumes a paused response.
    pub fn unpause(&mut self) {
        self.paused = false;
    }

    /// Adds an extension to the next response (the data-transfer adapter sends its messages
    /// this way).
    pub fn add_extension(&mut self, name: impl Into<String>, value: RawNode) {
        self.pending_extensions.set(name, value);
    }

    /// Advances the walk by one link: the block reached (with its bytes when it is to be
    /// sent) and its metadata entry, or the final status once the walk is over.
    pub fn step(&mut self, store: &dyn Blockstore) -> Result<StepItem, ResponderError> {
        match self.traversal.advance(&mut NoVisitor).map_err(Box::new)? {
            Step::Done => {
                self.finished = true;
                Ok(StepItem::Finished(if self.any_missing {
                    ResponseStatus::RequestCompletedPartial
                } else {
                    ResponseStatus::RequestCompletedFull
                }))
            }
            Step::NeedBlock(cid) => {
                let data = store
                    .get(&cid)
                    .map_err(|e| Box::new(TraversalError::Store(e)))?;
                self.index += 1;
                let present = data.is_some();
                let send = present
                    && self.index > self.skip_first
                    && !self.ignore.contains(&cid)
                    && self.sent.insert(cid);
                self.any_missing |= !present;
                let event = OutgoingBlock {
                    cid,
                    size: data.as_ref().map_or(0, |d| d.len() as u64),
                    sent: send,
                    index: self.index,
                };
                self.traversal
                    .provide(data.as_deref(), &mut NoVisitor)
                    .map_err(Box::new)?;
                let action = if present {
                    LinkAction::Present
                } else {
                    LinkAction::Missing
                };
                let block = if send {
                    // The store's own buffer goes out, not a copy of it.
                    data.map(|data| Block { cid, data })
                } else {
                    None
                };
                Ok(StepItem::Link {
                    event,
                    action,
                    block,
                })
            }
        }
    }

    /// Takes the extensions queued for the next response.
    pub fn take_extensions(&mut self) -> Extensions {
        std::mem::take(&mut self.pending_extensions)
    }

    /// The request this responder serves.
    pub fn request_id(&self) -> RequestId {
        self.id
    }

    /// The next response, or `None` when paused (and nothing is pending) or finished.
    ///
    /// `hook` sees every block the walk reaches, in order, and may pause after it.
    pub fn next_part(
        &mut self,
        store: &dyn Blockstore,
        hook: &mut dyn FnMut(&OutgoingBlock) -> BlockDecision,
    ) -> Result<Option<ResponsePart>, ResponderError> {
        if self.finished || (self.paused && self.pending_extensions.is_empty()) {
            return Ok(None);
        }
        let mut metadata = Vec::new();
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        let mut status = ResponseStatus::PartialResponse;
        while !self.paused && bytes < self.target {
            match self.step(store)? {
                StepItem::Finished(s) => {
                    status = s;
                    break;
                }
                StepItem::Link {
                    event,
                    action,
                    block,
                } => {
                    metadata.push((event.cid, action));
                    // A link's metadata entry counts too: a walk past a million skipped or
                    // missing blocks sends no block bytes, but must not put a million
                    // entries in one message.
                    bytes += METADATA_ENTRY_BYTES;
                    if let Some(b) = block {
                        bytes += b.data.len();
                        blocks.push(b);
                    }
                    if hook(&event) == BlockDecision::Pause {
                        self.paused = true;
                        status = ResponseStatus::RequestPaused;
                    }
                }
            }
        }
        Ok(Some(ResponsePart {
            response: Response {
                id: self.id,
                status,
                metadata,
                extensions: std::mem::take(&mut self.pending_extensions),
            },
            blocks,
        }))
    }

    /// A final response that cancels or fails the request with `status`.
    pub fn finish_with(&mut self, status: ResponseStatus) -> ResponsePart {
        self.finished = true;
        ResponsePart {
            response: Response {
                id: self.id,
                status,
                metadata: Vec::new(),
                extensions: std::mem::take(&mut self.pending_extensions),
            },
            blocks: Vec::new(),
        }
    }
}
