//! A selector walk over a DAG, resumable one block at a time, in go-ipld-prime's order.
//!
//! [`Traversal::advance`] walks as far as it can and stops when it needs a block
//! ([`Step::NeedBlock`]); the caller fetches it however it likes and hands it over with
//! [`Traversal::provide`]. A graphsync responder feeds it from its store; a requester feeds
//! it the blocks the responder sent, so both sides walk the same blocks in the same order and
//! the requester notices any block out of place. [`walk`] drives it over a [`Blockstore`].
//!
//! Order: depth first; a node is visited before its children; children in the selector's
//! order of interest (explore fields, index, range) or else in the node's own order (map
//! entries as encoded, list elements by index). Links are followed when the selector
//! explores into them, the linked block's root node taking the link's place.

use cid::Cid;
use thiserror::Error;

use crate::blockstore::{Blockstore, BlockstoreError};
use crate::codec::{self, BlockError};
use crate::node::{Node, Path, PathSegment};
use crate::selector::{DEFAULT_MAX_EXPLORE_STEPS, Selector, SelectorError};

/// What to do when a block is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingBlocks {
    /// Stop with [`TraversalError::Missing`] (go-ipld-prime's default).
    Fail,
    /// Record the block as missing and go on without it (what a graphsync responder does).
    Skip,
}

/// Bounds and policies of a traversal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraversalConfig {
    /// Deepest nesting of nodes (within and across blocks) the walk follows.
    pub max_depth: usize,
    /// Largest block accepted.
    pub max_block_size: usize,
    /// Check every block against its CID (turn off only for trusted local stores).
    pub verify: bool,
    /// What a missing block does.
    pub missing: MissingBlocks,
    /// Most steps the selector may take to explore one child (see
    /// [`Selector::explore_bounded`]); past it the walk fails with
    /// [`TraversalError::Selector`].
    pub max_explore_steps: usize,
    /// Most links the walk follows, the root included (go-ipld-prime's link budget, which
    /// go-graphsync's `MaxLinksPer{Incoming,Outgoing}Requests` set); `None` for no limit. Past
    /// it the walk fails with [`TraversalError::TooManyLinks`].
    pub max_links: Option<u64>,
}

impl Default for TraversalConfig {
    fn default() -> Self {
        Self {
            max_depth: 4_096,
            max_block_size: 4 << 20,
            verify: true,
            missing: MissingBlocks::Fail,
            max_explore_steps: DEFAULT_MAX_EXPLORE_STEPS,
            max_links: None,
        }
    }
}

/// A walk failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TraversalError {
    /// A block did not decode or did not match its CID.
    #[error("block {cid}: {source}")]
    Block {
        /// The block.
        cid: Cid,
        /// Why.
        #[source]
        source: BlockError,
    },
    /// A block the walk needs is not available.
    #[error("missing block {0}")]
    Missing(Cid),
    /// The DAG is nested deeper than the limit.
    #[error("DAG nested deeper than {0} levels")]
    TooDeep(usize),
    /// The walk would follow more links than [`TraversalConfig::max_links`].
    #[error("the walk would follow more than {0} links")]
    TooManyLinks(u64),
    /// The selector could not be evaluated within its bounds.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// `provide` was called while no block was awaited.
    #[error("no block is awaited")]
    NotWaiting,
    /// The block store failed.
    #[error(transparent)]
    Store(#[from] BlockstoreError),
}

/// A block the walk reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockVisit {
    /// Its CID.
    pub cid: Cid,
    /// Its size in bytes (0 if missing).
    pub size: usize,
    /// Whether it was available.
    pub present: bool,
}

/// What a walk reports as it goes.
pub trait Visitor {
    /// A block was reached (present or not), in traversal order.
    fn block(&mut self, _visit: &BlockVisit) {}

    /// A node was reached; `matched` says whether the selector matched it. For a subset
    /// matcher, `node` is the matched slice.
    fn node(&mut self, _path: &Path, _node: &Node, _matched: bool) {}

    /// Whether [`Visitor::node`] is wanted at all. A visitor of blocks only says no, and
    /// spares the walk a copy of every raw block's bytes: a raw block has no links, so its
    /// node matters to nothing but `node` (its bytes are still checked against its CID).
    fn wants_nodes(&self) -> bool {
        true
    }
}

/// A visitor that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVisitor;

impl Visitor for NoVisitor {
    fn wants_nodes(&self) -> bool {
        false
    }
}

/// Where a walk stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Hand over this block with [`Traversal::provide`].
    NeedBlock(Cid),
    /// The walk is finished.
    Done,
}

#[derive(Debug)]
enum Children {
    /// Exactly these segments, in order.
    Listed(Vec<PathSegment>, usize),
    /// Every child, in node order.
    All(usize),
}

#[derive(Debug)]
struct Frame {
    node: Node,
    selector: Selector,
    path: Path,
    children: Children,
}

#[derive(Debug)]
struct Awaited {
    cid: Cid,
    selector: Selector,
    path: Path,
}

/// A selector walk in progress.
#[derive(Debug)]
pub struct Traversal {
    stack: Vec<Frame>,
    awaited: Option<Awaited>,
    config: TraversalConfig,
    /// Links followed so far (the root included).
    links: u64,
}

fn child<'a>(node: &'a Node, seg: &PathSegment) -> Option<&'a Node> {
    match (node, seg) {
        (Node::Map(_), PathSegment::Key(k)) => node.get(k),
        (Node::List(items), PathSegment::Index(i)) => items.get(*i),
        (Node::List(items), PathSegment::Key(k)) => {
            k.parse::<usize>().ok().and_then(|i| items.get(i))
        }
        _ => None,
    }
}

impl Traversal {
    /// A walk of the DAG under `root` chosen by `selector`.
    pub fn new(root: Cid, selector: Selector, config: TraversalConfig) -> Self {
        Self {
            stack: Vec::new(),
            awaited: Some(Awaited {
                cid: root,
                selector,
                path: Path::default(),
            }),
            config,
            links: 1,
        }
    }

    /// A walk that starts at an in-memory node instead of a block (links under it are still
    /// loaded block by block).
    pub fn over_node(
        node: Node,
        selector: Selector,
        config: TraversalConfig,
        visitor: &mut impl Visitor,
    ) -> Result<Self, TraversalError> {
        let mut t = Self {
            stack: Vec::new(),
            awaited: None,
            config,
            links: 0,
        };
        t.enter(node, selector, Path::default(), visitor)?;
        Ok(t)
    }

    /// The block the walk waits for, if any.
    pub fn awaited(&self) -> Option<&Cid> {
        self.awaited.as_ref().map(|a| &a.cid)
    }

    /// Walks until a block is needed or the walk is over.
    pub fn advance(&mut self, visitor: &mut impl Visitor) -> Result<Step, TraversalError> {
        loop {
            if let Some(a) = &self.awaited {
                if let Some(max) = self.config.max_links
                    && self.links > max
                {
                    return Err(TraversalError::TooManyLinks(max));
                }
                return Ok(Step::NeedBlock(a.cid));
            }
            let Some(frame) = self.stack.last_mut() else {
                return Ok(Step::Done);
            };
            let seg = match &mut frame.children {
                Children::Listed(segs, i) => {
                    let s = segs.get(*i).cloned();
                    *i += 1;
                    s
                }
                Children::All(i) => {
                    let s = match &frame.node {
                        Node::Map(e) => e.get(*i).map(|(k, _)| PathSegment::Key(k.clone())),
                        Node::List(items) => (*i < items.len()).then_some(PathSegment::Index(*i)),
                        _ => None,
                    };
                    *i += 1;
                    s
                }
            };
            let Some(seg) = seg else {
                self.stack.pop();
                continue;
            };
            let Some(value) = child(&frame.node, &seg) else {
                continue;
            };
            let explored =
                frame
                    .selector
                    .explore_bounded(&frame.node, &seg, self.config.max_explore_steps)?;
            let Some(next) = explored else {
                continue;
            };
            let mut path = frame.path.clone();
            path.0.push(seg);
            match value {
                Node::Link(cid) => {
                    self.links += 1;
                    self.awaited = Some(Awaited {
                        cid: *cid,
                        selector: next,
                        path,
                    });
                }
                other => {
                    let other = other.clone();
                    self.enter(other, next, path, visitor)?;
                }
            }
        }
    }

    fn enter(
        &mut self,
        node: Node,
        selector: Selector,
        path: Path,
        visitor: &mut impl Visitor,
    ) -> Result<(), TraversalError> {
        let matched = selector.decide(&node);
        // Only a subset matcher makes a new node (a slice); anything else reports the node
        // itself, uncopied (it can be a whole block).
        let slice = match &selector {
            Selector::Matcher { subset: Some(_) } if matched => selector.matched_node(&node),
            _ => None,
        };
        match slice {
            Some(slice) => visitor.node(&path, &slice, true),
            None => visitor.node(&path, &node, matched),
        }
        if matches!(node, Node::Map(_) | Node::List(_)) {
            if self.stack.len() >= self.config.max_depth {
                return Err(TraversalError::TooDeep(self.config.max_depth));
            }
            let children = match selector.interests(&node) {
                Some(segs) => Children::Listed(segs, 0),
                None => Children::All(0),
            };
            self.stack.push(Frame {
                node,
                selector,
                path,
                children,
            });
        }
        Ok(())
    }

    /// Hands over the awaited block (`None` if it is not available). The block is verified
    /// against its CID unless the configuration says otherwise.
    pub fn provide(
        &mut self,
        data: Option<&[u8]>,
        visitor: &mut impl Visitor,
    ) -> Result<(), TraversalError> {
        let verify = self.config.verify;
        self.provide_inner(data, verify, visitor)
    }

    /// Hands over the awaited block, whose bytes the caller has already hashed into the very
    /// CID the walk awaits (a graphsync requester builds each received block's CID from its
    /// bytes, and the walk finds it by that CID): it is not hashed again. Everything else
    /// (size, decoding, the selector) is checked as by [`Traversal::provide`].
    pub fn provide_hashed(
        &mut self,
        data: &[u8],
        visitor: &mut impl Visitor,
    ) -> Result<(), TraversalError> {
        self.provide_inner(Some(data), false, visitor)
    }

    fn provide_inner(
        &mut self,
        data: Option<&[u8]>,
        verify: bool,
        visitor: &mut impl Visitor,
    ) -> Result<(), TraversalError> {
        let a = self.awaited.take().ok_or(TraversalError::NotWaiting)?;
        let Some(data) = data else {
            visitor.block(&BlockVisit {
                cid: a.cid,
                size: 0,
                present: false,
            });
            return match self.config.missing {
                MissingBlocks::Fail => Err(TraversalError::Missing(a.cid)),
                MissingBlocks::Skip => Ok(()),
            };
        };
        let block_err = |source| TraversalError::Block { cid: a.cid, source };
        if data.len() > self.config.max_block_size {
            return Err(block_err(BlockError::TooLarge {
                size: data.len(),
                max: self.config.max_block_size,
            }));
        }
        if verify {
            codec::verify(&a.cid, data).map_err(block_err)?;
        }
        if a.cid.codec() == codec::RAW && !visitor.wants_nodes() {
            // Raw bytes: no links to follow, and no one to show the node to.
            visitor.block(&BlockVisit {
                cid: a.cid,
                size: data.len(),
                present: true,
            });
            return Ok(());
        }
        let node =
            codec::decode(&a.cid, data, self.config.max_depth.min(1024)).map_err(block_err)?;
        visitor.block(&BlockVisit {
            cid: a.cid,
            size: data.len(),
            present: true,
        });
        self.enter(node, a.selector, a.path, visitor)
    }
}

/// Walks the DAG under `root` over a block store, reporting to `visitor`.
pub fn walk(
    store: &dyn Blockstore,
    root: Cid,
    selector: Selector,
    config: TraversalConfig,
    visitor: &mut impl Visitor,
) -> Result<(), TraversalError> {
    let mut t = Traversal::new(root, selector, config);
    while let Step::NeedBlock(cid) = t.advance(visitor)? {
        let data = store.get(&cid)?;
        t.provide(data.as_deref(), visitor)?;
    }
    Ok(())
}

/// The blocks a walk reaches, in order (a convenience visitor).
#[derive(Debug, Default, Clone)]
pub struct BlockLog(pub Vec<BlockVisit>);

impl Visitor for BlockLog {
    fn block(&mut self, visit: &BlockVisit) {
        self.0.push(visit.clone());
    }

    fn wants_nodes(&self) -> bool {
        false
    }
}
