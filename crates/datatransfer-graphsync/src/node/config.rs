//! A graphsync node's settings: limits, message sizes, timeouts.

use super::*;

/// Settings of a graphsync node.
#[derive(Debug, Clone)]
pub struct GraphSyncConfig {
    /// Protocol versions, most preferred first.
    pub versions: Vec<Version>,
    /// Largest message accepted or sent.
    pub max_message_size: usize,
    /// Block bytes per message.
    pub message_target: usize,
    /// Responses served at once to one peer.
    pub max_responses_per_peer: usize,
    /// Responses served at once in total.
    pub max_responses: usize,
    /// Requests from one peer held at once: those being served (at most
    /// `max_responses_per_peer`) and those waiting in the peer's queue, served in the order
    /// they came (go-graphsync queues the same way). A request that has to wait is answered
    /// at once with `RequestAcknowledged`, so the requester knows it is queued. Past this
    /// bound a request is refused with `RequestFailedBusy`, always answered; a requester may
    /// retry it later.
    pub max_requests_per_peer: usize,
    /// Received blocks that may wait for their turn in a request's walk.
    pub max_buffered_blocks: usize,
    /// Bounds of every walk.
    pub traversal: TraversalConfig,
    /// Bytes of received messages waiting for the node, all peers together. Beyond it the
    /// stream readers wait, so TCP slows the senders down: a slow block store bounds memory
    /// instead of growing a queue. A single message larger than this still passes, alone.
    pub max_inbound_bytes: usize,
    /// Most links a walk for a peer's request may follow (go-graphsync's
    /// `MaxLinksPerIncomingRequests`; Lotus sets 32 Mi); past it the response ends with
    /// `RequestFailedUnknown`. `None`: only `traversal.max_links` applies.
    pub max_links_per_incoming_request: Option<u64>,
    /// Most links the walk of one of our requests may follow (go-graphsync's
    /// `MaxLinksPerOutgoingRequests`); past it the request fails. `None`: only
    /// `traversal.max_links` applies.
    pub max_links_per_outgoing_request: Option<u64>,
    /// Most bytes per second read from all peers together; `None` for no limit. The stream
    /// readers wait, so TCP slows the senders: a steady rate rather than bursts and pauses
    /// (a quarter second's worth may come at once).
    pub max_inbound_rate: Option<u64>,
    /// Most bytes per second written to all peers together; `None` for no limit (a provider's
    /// bandwidth cap). The writers wait after each message, a quarter second's worth at once.
    pub max_outbound_rate: Option<u64>,
    /// How long a peer's writer may have nothing to send before the node forgets the peer
    /// (its writer task, stream and id map), if no request or response of the peer's is in
    /// flight; otherwise the stream stays open (a paused response keeps it, as in
    /// go-graphsync) and the node looks again after another such wait. A peer that comes
    /// back starts afresh. Keeps the node's memory to the peers it works with, not all it
    /// ever met.
    pub peer_idle_timeout: Duration,
    /// Serve blocks from a store that says it is trusted ([`Blockstore::trusted`]: its blocks
    /// were checked on their way in) without hashing them again, as go-graphsync's responder
    /// trusts its store. The requester always checks every block, so a block damaged on disk
    /// fails the transfer there. On by default; off, every served block is hashed.
    pub trust_local_stores: bool,
    /// Longest a peer's stream may take no byte of ours. A peer that stops reading fills
    /// the stream's window and our writes wait; past this the stream is dropped and the
    /// peer's requests and responses fail, as when its connection is lost (what we wrote
    /// before and it never read is lost with the stream). A deadline on progress, not on a
    /// whole message: a slow peer that reads is never cut off. Without it, a peer that never
    /// reads would hold its response slots (and the memory queued for it) for ever.
    /// go-graphsync sets a deadline of 10 minutes on each whole message; the default here, a
    /// minute without progress, is the data-transfer channel monitor's default stall timeout.
    pub write_timeout: Duration,
    /// Most inbound streams read at once from one peer. A peer writes its messages on one
    /// stream at a time (go-graphsync's message queue, our writer) and opens a new one when
    /// it breaks, so past this a new stream replaces the peer's oldest, which is dropped
    /// unread. Bounds what a peer opening many streams, each with part of a message, makes
    /// us hold.
    pub max_inbound_streams_per_peer: usize,
}

impl GraphSyncConfig {
    /// The walk settings for one request, with the tighter of the two link limits.
    pub(super) fn traversal_with(&self, max_links: Option<u64>) -> TraversalConfig {
        let max_links = match (self.traversal.max_links, max_links) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        TraversalConfig {
            max_links,
            ..self.traversal.clone()
        }
    }
}

impl Default for GraphSyncConfig {
    fn default() -> Self {
        Self {
            versions: vec![Version::V2, Version::V1],
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            message_target: crate::responder::DEFAULT_MESSAGE_TARGET,
            max_responses_per_peer: 6,
            max_responses: 32,
            max_requests_per_peer: 1024,
            max_buffered_blocks: 256,
            traversal: TraversalConfig::default(),
            max_inbound_bytes: 16 << 20,
            max_links_per_incoming_request: None,
            max_links_per_outgoing_request: None,
            max_inbound_rate: None,
            max_outbound_rate: None,
            peer_idle_timeout: Duration::from_secs(60),
            trust_local_stores: true,
            write_timeout: Duration::from_secs(60),
            max_inbound_streams_per_peer: 8,
        }
    }
}
