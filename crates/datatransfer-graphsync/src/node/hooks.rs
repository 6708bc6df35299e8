//! The hooks through which an application steers a node: decide on requests, watch
//! blocks go in and out, pause and cancel.

use super::*;

/// What the incoming-request hook decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// Serve it, sending these extensions with the first response.
    Accept(Extensions),
    /// Accept it but start paused (resume with [`GraphSync::unpause_response`]).
    Pause(Extensions),
    /// Refuse it with this status (an error status) and extensions.
    Reject(ResponseStatus, Extensions),
}

/// The seam a protocol on top of graphsync (data transfer) uses; every method has a default
/// that accepts and carries on.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// The store to serve this request from; `None` means the node's own store.
    fn store_for_request(&self, _peer: PeerId, _request: &Request) -> Option<Arc<dyn Blockstore>> {
        None
    }

    /// We are about to send a request; returns extensions to add to it.
    fn outgoing_request(&self, _peer: PeerId, _request: &Request) -> Extensions {
        Extensions::new()
    }

    /// A request from a peer waits for a free slot (the response limits are reached).
    fn request_queued(&self, _peer: PeerId, _request: &Request) {}

    /// A block went out on the wire, as part of the response to `id`.
    fn block_sent(&self, _peer: PeerId, _id: RequestId, _cid: Cid, _size: u64) {}

    /// A peer asks for data.
    async fn incoming_request(&self, _peer: PeerId, _request: &Request) -> RequestDecision {
        RequestDecision::Accept(Extensions::new())
    }

    /// A block is about to go out (or is skipped); returns whether to pause after it and
    /// extensions to send with it.
    async fn outgoing_block(
        &self,
        _peer: PeerId,
        _id: RequestId,
        _block: &OutgoingBlock,
    ) -> (BlockDecision, Extensions) {
        (BlockDecision::Continue, Extensions::new())
    }

    /// A checked block arrived for one of our requests (or was taken from the local store);
    /// returns whether to pause the request.
    fn incoming_block(
        &self,
        _peer: PeerId,
        _id: RequestId,
        _block: &IncomingBlock,
    ) -> BlockDecision {
        BlockDecision::Continue
    }

    /// A response to one of our requests arrived (its extensions carry protocol messages).
    fn incoming_response(&self, _peer: PeerId, _response: &Response) {}

    /// A peer updated one of its requests with extensions.
    fn request_updated(&self, _peer: PeerId, _request: &Request) {}

    /// We finished serving a request: its final response (any terminal status, a refusal
    /// included) went out on the wire.
    fn completed_response(&self, _peer: PeerId, _id: RequestId, _status: ResponseStatus) {}

    /// A peer cancelled a request we were serving.
    fn requestor_cancelled(&self, _peer: PeerId, _id: RequestId) {}

    /// Talking to a peer failed.
    fn network_error(&self, _peer: PeerId, _error: &str) {}
}

/// A block one of our requests reached, as the incoming-block hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingBlock {
    /// Its CID.
    pub cid: Cid,
    /// Its size in bytes (0 if the responder does not have it).
    pub size: u64,
    /// Whether the block is available (received, or already in the local store).
    pub present: bool,
    /// Whether its bytes came over the wire in this request (not from the local store, as
    /// blocks skipped by `do-not-send-first-blocks` are).
    pub on_wire: bool,
    /// Its position in the request's walk, from 1 (pauses do not restart the count).
    pub index: u64,
}

/// Hooks that accept everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptAll;

impl Hooks for AcceptAll {}
