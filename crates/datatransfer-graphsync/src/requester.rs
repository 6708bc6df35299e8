//! The requester's side of one request, sans IO: re-run the same walk locally and check
//! every block the responder sends against it.
//!
//! Each response's metadata says, link by link, what the responder's walk did; the
//! requester's walk must reach the same links in the same order. A `Present` link's block
//! comes from the received blocks (or from the local store, when the responder skipped it
//! because we have it); a `Missing` link is skipped. A block out of order, a block that does
//! not match its CID, a link the walk did not expect, or a block nobody asked for is a
//! [`VerifyError`], and the request should be cancelled.

use std::collections::{HashMap, VecDeque};

use cid::Cid;
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{
    BlockVisit, MissingBlocks, Step, Traversal, TraversalConfig, TraversalError, Visitor,
};
use thiserror::Error;

use crate::Bytes;
use crate::message::{Block, LinkAction, Response, ResponseStatus};

/// Why a response cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The responder's metadata names a different link than the walk reached.
    #[error("responder sent link {got} where the walk expected {expected}")]
    WrongLink {
        /// What the walk needed.
        expected: Box<Cid>,
        /// What the metadata named.
        got: Box<Cid>,
    },
    /// A link marked present has no block in the response or the local store.
    #[error("block {0} is marked present but was not sent")]
    BlockNotSent(Cid),
    /// The response ended before the walk did.
    #[error("response ended with status {status:?} but the walk was not finished")]
    Incomplete {
        /// The final status.
        status: ResponseStatus,
    },
    /// Blocks were sent that the walk never asked for.
    #[error("{0} blocks were sent that the walk did not ask for")]
    Unrequested(usize),
    /// The metadata names links after the walk ended.
    #[error("{0} links were reported after the walk ended")]
    UnexpectedLinks(usize),
    /// More blocks are buffered than allowed (a responder flooding us).
    #[error("more than {0} unconsumed blocks buffered")]
    TooManyBuffered(usize),
    /// A block failed verification or decoding, or the DAG is too deep.
    #[error(transparent)]
    Traversal(#[from] Box<TraversalError>),
    /// The responder failed the request.
    #[error("responder failed the request: {0:?}")]
    Failed(ResponseStatus),
}

/// What happened with a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More responses are expected.
    InProgress,
    /// The request is complete and every block was checked.
    Complete,
}

/// Checks one request's responses.
#[derive(Debug)]
pub struct Verifier {
    traversal: Traversal,
    metadata: VecDeque<(Cid, LinkAction)>,
    received: HashMap<Cid, Bytes>,
    max_buffered: usize,
    done: bool,
    /// Metadata entries still to drop: a restarted responder reports the links it skipped.
    discard: u64,
    /// The CIDs of the blocks handed in were built from their bytes: not hashed again.
    cids_from_bytes: bool,
}

struct Collect<'a, 'b> {
    on_block: &'a mut dyn FnMut(&BlockVisit, Option<&Bytes>),
    data: Option<&'b Bytes>,
}

impl Visitor for Collect<'_, '_> {
    fn block(&mut self, visit: &BlockVisit) {
        (self.on_block)(visit, self.data);
    }

    fn wants_nodes(&self) -> bool {
        false
    }
}

impl Verifier {
    /// A verifier for the walk of `selector` from `root`. At most `max_buffered` blocks may
    /// wait for their turn in the walk.
    pub fn new(
        root: Cid,
        selector: Selector,
        config: TraversalConfig,
        max_buffered: usize,
    ) -> Self {
        let config = TraversalConfig {
            missing: MissingBlocks::Skip,
            verify: true,
            ..config
        };
        Self {
            traversal: Traversal::new(root, selector, config),
            metadata: VecDeque::new(),
            received: HashMap::new(),
            max_buffered,
            done: false,
            discard: 0,
            cids_from_bytes: false,
        }
    }

    /// Tells the verifier that the blocks it will be handed have CIDs built from their own
    /// bytes, as this crate's decoders ([`crate::v1`], [`crate::v2`]) build them: a block the
    /// walk finds under the CID it awaits then matches it, and is not hashed a second time.
    /// Do not use it for blocks whose CIDs come from anywhere else.
    pub fn with_cids_from_bytes(mut self) -> Self {
        self.cids_from_bytes = true;
        self
    }

    /// Prepares for a restarted responder that skips the first `skipped` blocks of the walk
    /// (`graphsync/do-not-send-first-blocks`) but still reports their links.
    pub fn restart(&mut self, skipped: u64) {
        self.metadata.clear();
        self.received.clear();
        self.discard = skipped;
    }

    /// Takes in one response and its blocks. Every block the walk accepts is reported to
    /// `on_block` (with its bytes when received, `None` when missing or taken from `local`),
    /// in walk order.
    pub fn on_response(
        &mut self,
        response: &Response,
        blocks: Vec<Block>,
        local: &dyn Blockstore,
        on_block: &mut dyn FnMut(&BlockVisit, Option<&Bytes>),
    ) -> Result<Progress, VerifyError> {
        if response.status.is_error() {
            return Err(VerifyError::Failed(response.status));
        }
        let arrived: Vec<Cid> = blocks.iter().map(|b| b.cid).collect();
        for b in blocks {
            self.received.insert(b.cid, b.data);
        }
        for entry in &response.metadata {
            if self.discard > 0 {
                self.discard -= 1;
            } else {
                self.metadata.push_back(*entry);
            }
        }
        loop {
            let step = self
                .traversal
                .advance(&mut Collect {
                    on_block,
                    data: None,
                })
                .map_err(Box::new)?;
            let Step::NeedBlock(expected) = step else {
                self.done = true;
                break;
            };
            let Some((got, action)) = self.metadata.pop_front() else {
                break;
            };
            if got != expected {
                return Err(VerifyError::WrongLink {
                    expected: Box::new(expected),
                    got: Box::new(got),
                });
            }
            match action {
                LinkAction::Missing | LinkAction::DuplicateDagSkipped => {
                    let mut c = Collect {
                        on_block,
                        data: None,
                    };
                    self.traversal.provide(None, &mut c).map_err(Box::new)?;
                }
                LinkAction::Present | LinkAction::DuplicateNotSent => {
                    if let Some(d) = self.received.remove(&got) {
                        let mut c = Collect {
                            on_block,
                            data: Some(&d),
                        };
                        if self.cids_from_bytes {
                            // Its CID was built from its bytes' hash when the message was
                            // decoded, and it is the CID the walk awaits: that is the check.
                            self.traversal
                                .provide_hashed(&d, &mut c)
                                .map_err(Box::new)?;
                        } else {
                            self.traversal.provide(Some(&d), &mut c).map_err(Box::new)?;
                        }
                    } else {
                        let d = local
                            .get(&got)
                            .map_err(|e| Box::new(TraversalError::Store(e)))?
                            .ok_or(VerifyError::BlockNotSent(got))?;
                        let mut c = Collect {
                            on_block,
                            data: None,
                        };
                        self.traversal.provide(Some(&d), &mut c).map_err(Box::new)?;
                    }
                }
            }
        }
        // Blocks the walk has not reached yet wait here; a message may hold any number of
        // small blocks (Go packs 512 KiB of them), but those left over after its walk are
        // blocks sent ahead of their turn, and they are bounded.
        if self.received.len() > self.max_buffered {
            return Err(VerifyError::TooManyBuffered(self.max_buffered));
        }
        // Links the walk never takes: only once it has ended does metadata wait here, and no
        // later message can make it right (the final status would fail it), so it fails now
        // rather than keep whatever more a responder sends before its final status.
        if self.done && !self.metadata.is_empty() {
            return Err(VerifyError::UnexpectedLinks(self.metadata.len()));
        }
        // A received block is a slice of its whole message: one that waits keeps only its own
        // bytes, not a message of up to the size cap around a small block.
        for cid in &arrived {
            if let Some(data) = self.received.get_mut(cid) {
                *data = Bytes::copy_from_slice(data);
            }
        }
        if response.status.is_terminal() {
            if !self.done {
                return Err(VerifyError::Incomplete {
                    status: response.status,
                });
            }
            if !self.received.is_empty() {
                return Err(VerifyError::Unrequested(self.received.len()));
            }
            if !self.metadata.is_empty() {
                return Err(VerifyError::UnexpectedLinks(self.metadata.len()));
            }
            return Ok(Progress::Complete);
        }
        Ok(Progress::InProgress)
    }
}
