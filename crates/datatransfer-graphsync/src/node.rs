//! A graphsync node over libp2p: the async API ([`GraphSync::request`] and the responder
//! controls) on top of the sans-IO [`Responder`] and [`Verifier`].
//!
//! Streams go through `datatransfer-streams`' [`Control`], so the node shares its `Swarm` with any
//! other behaviour (data transfer's). Tasks: one node task that owns all request state and
//! decodes inbound messages; one writer task per peer (a long-lived outbound stream, its
//! version negotiated on open: 2.0.0 preferred, 1.0.0 as fallback); one reader task per
//! inbound stream (length-prefixed frames, capped); and one task per response being served,
//! which awaits the hooks block by block. Concurrent responses are limited per peer and in
//! total; requests beyond wait for a slot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cid::Cid;
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{TraversalConfig, TraversalError};
use datatransfer_streams::{Control, OpenStreamError};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::message::{
    Block, Extensions, Message, RawNode, Request, RequestId, RequestType, Response, ResponseStatus,
};
use crate::requester::{Progress, Verifier, VerifyError};
use crate::responder::{BlockDecision, OutgoingBlock, Responder, StepItem};
use crate::v1::V1Ids;
use crate::{DEFAULT_MAX_MESSAGE_SIZE, FrameReader, Version, decode_body, encode_frame};

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
    /// Events buffered per request before the node waits for the consumer.
    pub event_buffer: usize,
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
    /// How long a peer's writer may have nothing to send before it closes its stream to the
    /// peer; the node then forgets the peer (its writer task, stream and id map) unless a
    /// request or response of the peer's is still in flight. A peer that comes back starts
    /// afresh. Keeps the node's memory to the peers it works with, not all it ever met.
    pub peer_idle_timeout: Duration,
    /// Serve blocks from a store that says it is trusted ([`Blockstore::trusted`]: its blocks
    /// were checked on their way in) without hashing them again, as go-graphsync's responder
    /// trusts its store. The requester always checks every block, so a block damaged on disk
    /// fails the transfer there. On by default; off, every served block is hashed.
    pub trust_local_stores: bool,
}

impl GraphSyncConfig {
    /// The walk settings for one request, with the tighter of the two link limits.
    fn traversal_with(&self, max_links: Option<u64>) -> TraversalConfig {
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
            event_buffer: 256,
            max_inbound_bytes: 16 << 20,
            max_links_per_incoming_request: None,
            max_links_per_outgoing_request: None,
            max_inbound_rate: None,
            max_outbound_rate: None,
            peer_idle_timeout: Duration::from_secs(60),
            trust_local_stores: true,
        }
    }
}

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

/// A request of ours failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GraphSyncError {
    /// The responder's data failed verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The network to the peer failed.
    #[error("network error: {0}")]
    Network(String),
    /// Our own block store failed to store a received block or to read one (a full disk, a
    /// broken file): the request is cancelled; asking again would fail the same way.
    #[error("local store failed: {0}")]
    LocalStore(String),
    /// The request was cancelled locally.
    #[error("request cancelled")]
    Cancelled,
    /// The selector does not parse.
    #[error("invalid selector: {0}")]
    Selector(String),
    /// The node is shut down.
    #[error("graphsync node is shut down")]
    Closed,
}

/// What a request of ours reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// A response arrived (status and extensions).
    Response(Response),
    /// A block was received and checked (and stored), in walk order.
    Block {
        /// Its CID.
        cid: Cid,
        /// Its size.
        size: u64,
    },
    /// The request ended.
    Completed(Result<ResponseStatus, GraphSyncError>),
}

enum Cmd {
    Request {
        peer: PeerId,
        request: Request,
        selector: Selector,
        events: mpsc::Sender<RequestEvent>,
        store: Option<Arc<dyn Blockstore>>,
    },
    CancelRequest(RequestId),
    PauseRequest(RequestId),
    UnpauseRequest(RequestId, Extensions),
    Response(PeerId, RequestId, ResponseCmd),
    /// A received message body, holding its share of the inbound byte budget.
    Inbound(PeerId, Version, crate::Bytes, OwnedSemaphorePermit),
    /// A message its stream's reader decoded already (version 2), and its budget.
    Decoded(
        PeerId,
        Result<Message, crate::MessageError>,
        OwnedSemaphorePermit,
    ),
    WriteFailed(PeerId, String),
    /// A peer's stream to us ended: what it was sending on it may be lost.
    InboundClosed(PeerId),
    /// Our stream to a peer broke; these responses (id and serve token) lost messages on it.
    StreamBroken(PeerId, String, Vec<(RequestId, u64)>),
    /// A response task ended (id and serve token: a later response may reuse the id).
    ResponseDone(PeerId, RequestId, u64),
    /// A peer's writer had nothing to send for the idle timeout and closed its stream.
    PeerIdle(PeerId),
    /// What the node holds, for diagnostics.
    Stats(tokio::sync::oneshot::Sender<GraphSyncStats>),
    PeerRequests(PeerId, tokio::sync::oneshot::Sender<PeerRequests>),
}

/// What a graphsync node holds at one moment: for diagnostics, and for tests that check
/// nothing is left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphSyncStats {
    /// Peers with a writer task (and maybe an open stream).
    pub peers: usize,
    /// Requests of ours in flight.
    pub requests: usize,
    /// Responses being served (queued, running or paused).
    pub responses: usize,
    /// Of those, waiting in the queue for room.
    pub responses_queued: usize,
    /// Of those, paused.
    pub responses_paused: usize,
}

/// Where one request stands, as [`GraphSync::peer_requests`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Waiting in the responder's queue for room (per peer, then in total).
    Queued,
    /// Blocks are moving (or the walk is running).
    Running,
    /// Paused (by either side), waiting to be resumed.
    Paused,
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
        })
    }
}

/// One graphsync request in flight with a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// Its id on the wire.
    pub id: RequestId,
    /// The root it asks for.
    pub root: Option<Cid>,
    /// Where it stands.
    pub state: RequestState,
    /// Links walked so far (ours only: a response's walk is the responder's business).
    pub traversed: Option<u64>,
}

/// The graphsync requests in flight with one peer: ours to it, and its to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerRequests {
    /// Requests we sent to the peer.
    pub outgoing: Vec<RequestInfo>,
    /// Requests of the peer we are answering (queued, running or paused).
    pub incoming: Vec<RequestInfo>,
}

const SERVED_QUEUED: u8 = 0;
const SERVED_RUNNING: u8 = 1;
const SERVED_PAUSED: u8 = 2;

enum ResponseCmd {
    Pause,
    Unpause(Extensions),
    /// We end the response: the requester gets `RequestCancelled`.
    Cancel,
    /// The requester cancelled it, or the stream it was written on broke: stop without a
    /// word, as go-graphsync does. A go-graphsync requester takes `RequestCancelled` as the
    /// responder cancelling, and forgets a request it only meant to pause.
    Drop,
    Extensions(Extensions),
}

/// A sender of commands to the node that does not keep it alive. The node runs while a
/// [`GraphSync`] handle exists or a peer's stream is being read; once they are gone it ends,
/// and with it every task it started (writers, responses), which hold only these.
#[derive(Clone)]
struct NodeRef(mpsc::WeakSender<Cmd>);

impl std::fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeRef")
    }
}

impl NodeRef {
    /// Sends a command; an error if the node has ended.
    async fn send(&self, cmd: Cmd) -> Result<(), ()> {
        match self.0.upgrade() {
            Some(tx) => tx.send(cmd).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Sends a command if there is room now.
    fn try_send(&self, cmd: Cmd) {
        if let Some(tx) = self.0.upgrade() {
            let _ = tx.try_send(cmd);
        }
    }
}

/// A graphsync node.
///
/// The node runs while one of these handles exists (clones share it) or a peer's stream is
/// being read; dropping the last handle after the swarm stops ends it, its requests (their
/// handles see the end of their events) and its responses.
#[derive(Debug, Clone)]
pub struct GraphSync {
    me: PeerId,
    tx: mpsc::Sender<Cmd>,
    ids: IdGen,
}

/// Request ids of one node: a per-node nonce and a counter, unique among its requests.
#[derive(Debug, Clone)]
struct IdGen {
    nonce: u64,
    counter: Arc<AtomicU64>,
}

impl IdGen {
    fn next(&self) -> RequestId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.nonce.to_be_bytes());
        id[8..].copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        RequestId(id)
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

/// Control over one of our requests, apart from its events (clone it to pause, resume or
/// cancel from another task while one task reads the events).
#[derive(Debug, Clone)]
pub struct RequestControl {
    /// The request's id.
    pub id: RequestId,
    tx: NodeRef,
}

impl RequestControl {
    /// Cancels the request.
    pub async fn cancel(&self) {
        let _ = self.tx.send(Cmd::CancelRequest(self.id)).await;
    }

    /// Pauses the request (the responder is told to stop; unpausing resumes where it was).
    pub async fn pause(&self) {
        let _ = self.tx.send(Cmd::PauseRequest(self.id)).await;
    }

    /// Resumes a paused request, sending `extensions` with it; on a running request, sends
    /// the extensions as an update.
    pub async fn unpause(&self, extensions: Extensions) {
        let _ = self.tx.send(Cmd::UnpauseRequest(self.id, extensions)).await;
    }
}

/// One of our requests in progress: its events, and control over it.
#[derive(Debug)]
pub struct RequestHandle {
    /// The request's id.
    pub id: RequestId,
    events: mpsc::Receiver<RequestEvent>,
    tx: NodeRef,
}

impl RequestHandle {
    /// The next event; `None` after `Completed`.
    pub async fn next(&mut self) -> Option<RequestEvent> {
        self.events.recv().await
    }

    /// Cancels the request.
    pub async fn cancel(&self) {
        self.control().cancel().await;
    }

    /// Pauses the request (the responder is told to stop; unpausing resumes where it was).
    pub async fn pause(&self) {
        self.control().pause().await;
    }

    /// Resumes a paused request, sending `extensions` with it.
    pub async fn unpause(&self, extensions: Extensions) {
        self.control().unpause(extensions).await;
    }

    /// A control over the request that can be used from another task.
    pub fn control(&self) -> RequestControl {
        RequestControl {
            id: self.id,
            tx: self.tx.clone(),
        }
    }

    /// Waits for the end; returns the final status.
    pub async fn finish(mut self) -> Result<ResponseStatus, GraphSyncError> {
        while let Some(ev) = self.next().await {
            if let RequestEvent::Completed(r) = ev {
                return r;
            }
        }
        Err(GraphSyncError::Closed)
    }
}

/// A request of ours: running, or paused the way go-graphsync pauses (cancel the response,
/// then re-request it skipping the blocks already traversed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    Running,
    /// Cancel sent. Blocks of the cancelled response still on their way are taken as usual
    /// (the re-request skips them too).
    Paused,
}

struct Outgoing {
    peer: PeerId,
    /// The id on the wire: the handle's id, until an unpause re-requests under a fresh one.
    /// go-graphsync pauses a requester by re-sending the same id, but its responder races a
    /// re-request against the end of the cancelled response of that id (the new one can be
    /// dropped, or mixed with the old one's last blocks); a fresh id has no such race, and
    /// messages of the old one are simply stale.
    wire: RequestId,
    store: Arc<dyn Blockstore>,
    request: Request,
    verifier: Verifier,
    events: mpsc::Sender<RequestEvent>,
    /// Links the walk has passed (sent, skipped or missing): what a restart skips.
    traversed: u64,
    pause: Pause,
}

/// The way to a peer's writer task. Each response being served tags its messages with a
/// token of its own (0 for the node's own messages): when a stream breaks, the responses that
/// had written on it lost messages, so the writer drops their later messages instead of
/// sending them with a gap before them on the next stream (and the node cancels them).
#[derive(Clone)]
struct PeerWriter {
    tx: mpsc::Sender<(u64, Message)>,
}

/// Serve tokens whose messages the writer drops: responses that broke with a stream, or
/// that the requester cancelled while their messages still waited for the writer (a
/// go-graphsync requester that pauses, then resumes under the same id, must not get blocks of
/// the cancelled response after the new one starts). Bounded: a cancelled response stops
/// queuing soon after.
#[derive(Default)]
struct DeadTokens {
    set: HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl DeadTokens {
    fn insert(&mut self, token: u64) {
        if self.set.insert(token) {
            self.order.push_back(token);
        }
        while self.order.len() > 4096 {
            if let Some(t) = self.order.pop_front() {
                self.set.remove(&t);
            }
        }
    }

    fn contains(&self, token: u64) -> bool {
        self.set.contains(&token)
    }
}

type SharedDead = Arc<std::sync::Mutex<DeadTokens>>;

/// Whether `token`'s messages are to be dropped.
fn is_dead(dead: &SharedDead, token: u64) -> bool {
    dead.lock().map(|d| d.contains(token)).unwrap_or(false)
}

/// A response being served: its command channel and the token its messages carry.
struct Served {
    ctl: mpsc::Sender<ResponseCmd>,
    token: u64,
    root: Option<Cid>,
    /// `SERVED_QUEUED`, `SERVED_RUNNING` or `SERVED_PAUSED`, kept by the response's task.
    state: Arc<AtomicU8>,
}

/// How many unknown responses [`Node::stopped`] remembers.
const MAX_STOPPED: usize = 4096;

/// Busy refusals waiting to be sent to one peer.
#[derive(Default)]
struct BusyAnswers {
    ids: Vec<RequestId>,
    /// A task is sending them.
    flushing: bool,
}

/// Refusals held for one peer at most; a peer that keeps sending requests past its queue
/// faster than it reads our answers loses the answers past this many.
const MAX_BUSY_ANSWERS: usize = 65_536;

/// Refusals per message.
const BUSY_PER_MESSAGE: usize = 1_024;

impl BusyAnswers {
    /// Adds a refusal; whether a task must be started to send it.
    fn push(&mut self, id: RequestId) -> bool {
        if self.ids.len() < MAX_BUSY_ANSWERS {
            self.ids.push(id);
        }
        !std::mem::replace(&mut self.flushing, true)
    }
}

/// Sends the peer's pending busy refusals, in batches, until none is left.
async fn answer_busy(writer: PeerWriter, busy: Arc<std::sync::Mutex<BusyAnswers>>) {
    loop {
        let batch: Vec<RequestId> = match busy.lock() {
            Ok(mut b) if b.ids.is_empty() => {
                b.flushing = false;
                return;
            }
            Ok(mut b) => {
                let n = b.ids.len().min(BUSY_PER_MESSAGE);
                b.ids.drain(..n).collect()
            }
            Err(_) => return,
        };
        let responses = batch
            .into_iter()
            .map(|id| Response {
                id,
                status: ResponseStatus::RequestFailedBusy,
                metadata: Vec::new(),
                extensions: Extensions::new(),
            })
            .collect();
        if !writer
            .send(Message {
                responses,
                ..Message::default()
            })
            .await
        {
            return;
        }
    }
}

/// Tokens of responses being served; 0 is the node's own messages.
static SERVE_TOKENS: AtomicU64 = AtomicU64::new(1);

impl PeerWriter {
    async fn send(&self, msg: Message) -> bool {
        self.send_as(0, msg).await
    }

    async fn send_as(&self, token: u64, msg: Message) -> bool {
        self.tx.send((token, msg)).await.is_ok()
    }
}

struct Peer {
    writer: PeerWriter,
    /// Tokens whose queued messages the writer drops.
    dead: SharedDead,
    ids: Arc<Mutex<V1Ids>>,
    responses: Arc<Semaphore>,
    /// "Busy" refusals on their way out, sent in batches by one task at a time.
    busy: Arc<std::sync::Mutex<BusyAnswers>>,
}

struct Node {
    control: Control,
    store: Arc<dyn Blockstore>,
    hooks: Arc<dyn Hooks>,
    config: Arc<GraphSyncConfig>,
    tx: NodeRef,
    peers: HashMap<PeerId, Peer>,
    outgoing: HashMap<RequestId, Outgoing>,
    /// The wire id of each request of ours in `outgoing` to its handle's id.
    wire_ids: HashMap<RequestId, RequestId>,
    /// Makes the fresh ids of re-requests.
    ids: IdGen,
    /// Responses to requests we do not know (any more) that we asked the peer to stop; a
    /// bounded memory, so a cancel goes out once per such response.
    stopped: HashSet<(PeerId, RequestId)>,
    responses: HashMap<(PeerId, RequestId), Served>,
    all_responses: Arc<Semaphore>,
    /// The outbound rate limit shared by all peer writers, if any.
    outbound_rate: Option<Arc<RateLimit>>,
}

impl GraphSync {
    /// Starts a node serving `store` through `control`. Must be called in a tokio runtime.
    pub fn start(
        me: PeerId,
        mut control: Control,
        store: Arc<dyn Blockstore>,
        hooks: Arc<dyn Hooks>,
        config: GraphSyncConfig,
    ) -> Result<Self, datatransfer_streams::AlreadyRegistered> {
        let (tx, rx) = mpsc::channel(1024);
        let ids = IdGen {
            nonce: std::collections::hash_map::RandomState::new().hash_one(me.to_bytes()),
            counter: Arc::new(AtomicU64::new(1)),
        };
        let config = Arc::new(config);
        let budget_total = config
            .max_inbound_bytes
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let budget = Arc::new(Semaphore::new(budget_total));
        let rate = config.max_inbound_rate.map(|r| Arc::new(RateLimit::new(r)));
        for &version in &config.versions {
            let mut incoming = control.accept(StreamProtocol::new(version.protocol()))?;
            let tx = tx.clone();
            let max = config.max_message_size;
            let budget = budget.clone();
            let rate = rate.clone();
            tokio::spawn(async move {
                while let Some((peer, stream)) = incoming.next().await {
                    let reader = Reader {
                        peer,
                        version,
                        max,
                        budget: budget.clone(),
                        budget_total,
                        rate: rate.clone(),
                        tx: tx.clone(),
                    };
                    tokio::spawn(reader.run(stream));
                }
            });
        }
        let node = Node {
            control,
            store,
            hooks,
            all_responses: Arc::new(Semaphore::new(config.max_responses.max(1))),
            outbound_rate: config
                .max_outbound_rate
                .map(|r| Arc::new(RateLimit::new(r))),
            config,
            tx: NodeRef(tx.downgrade()),
            peers: HashMap::new(),
            outgoing: HashMap::new(),
            wire_ids: HashMap::new(),
            ids: ids.clone(),
            stopped: HashSet::new(),
            responses: HashMap::new(),
        };
        tokio::spawn(node.run(rx));
        Ok(Self { me, tx, ids })
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// Asks `peer` for the DAG under `root` chosen by `selector`; received blocks are checked
    /// and written to the node's store.
    pub async fn request(
        &self,
        peer: PeerId,
        root: Cid,
        selector: RawNode,
        extensions: Extensions,
    ) -> Result<RequestHandle, GraphSyncError> {
        self.request_to(peer, root, selector, extensions, None)
            .await
    }

    /// As [`GraphSync::request`], writing received blocks to `store` instead of the node's.
    pub async fn request_into(
        &self,
        peer: PeerId,
        root: Cid,
        selector: RawNode,
        extensions: Extensions,
        store: Arc<dyn Blockstore>,
    ) -> Result<RequestHandle, GraphSyncError> {
        self.request_to(peer, root, selector, extensions, Some(store))
            .await
    }

    async fn request_to(
        &self,
        peer: PeerId,
        root: Cid,
        selector: RawNode,
        extensions: Extensions,
        store: Option<Arc<dyn Blockstore>>,
    ) -> Result<RequestHandle, GraphSyncError> {
        let parsed = Selector::from_dag_cbor(selector.as_bytes())
            .map_err(|e| GraphSyncError::Selector(e.to_string()))?;
        let id = self.ids.next();
        let (events_tx, events) = mpsc::channel(256);
        let request = Request::new(id, root, selector, 0, extensions);
        self.tx
            .send(Cmd::Request {
                peer,
                request,
                selector: parsed,
                events: events_tx,
                store,
            })
            .await
            .map_err(|_| GraphSyncError::Closed)?;
        Ok(RequestHandle {
            id,
            events,
            tx: NodeRef(self.tx.downgrade()),
        })
    }

    async fn response_cmd(&self, peer: PeerId, id: RequestId, cmd: ResponseCmd) {
        let _ = self.tx.send(Cmd::Response(peer, id, cmd)).await;
    }

    /// Resumes a response we paused (by hook or by [`GraphSync::pause_response`]).
    pub async fn unpause_response(&self, peer: PeerId, id: RequestId, extensions: Extensions) {
        self.response_cmd(peer, id, ResponseCmd::Unpause(extensions))
            .await;
    }

    /// Pauses a response we are serving.
    pub async fn pause_response(&self, peer: PeerId, id: RequestId) {
        self.response_cmd(peer, id, ResponseCmd::Pause).await;
    }

    /// Stops serving a response (the requester gets `RequestCancelled`).
    pub async fn cancel_response(&self, peer: PeerId, id: RequestId) {
        self.response_cmd(peer, id, ResponseCmd::Cancel).await;
    }

    /// Sends extensions with the next response of a request we serve.
    pub async fn send_extensions(&self, peer: PeerId, id: RequestId, extensions: Extensions) {
        self.response_cmd(peer, id, ResponseCmd::Extensions(extensions))
            .await;
    }

    /// The requests in flight with `peer`, both ways, and where each stands (empty after
    /// the node stopped).
    pub async fn peer_requests(&self, peer: PeerId) -> PeerRequests {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Cmd::PeerRequests(peer, reply)).await.is_err() {
            return PeerRequests::default();
        }
        rx.await.unwrap_or_default()
    }

    /// What the node holds now (peers, requests, responses); all zero after it stopped.
    pub async fn stats(&self) -> GraphSyncStats {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Cmd::Stats(reply)).await.is_err() {
            return GraphSyncStats::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// Reads one inbound stream's messages and hands them to the node.
struct Reader {
    peer: PeerId,
    version: Version,
    /// Largest message accepted.
    max: usize,
    /// The inbound byte budget shared by all readers, and its size.
    budget: Arc<Semaphore>,
    budget_total: usize,
    /// The inbound rate limit shared by all readers, if any.
    rate: Option<Arc<RateLimit>>,
    tx: mpsc::Sender<Cmd>,
}

/// A rate shared by several stream readers (or writers): each read of `n` bytes is due
/// `n / rate` seconds after the previous one's due time (or now, if that has passed); a reader
/// waits while its due time is more than the allowed burst ahead of the clock.
#[derive(Debug)]
struct RateLimit {
    bytes_per_second: f64,
    burst: Duration,
    due: Mutex<tokio::time::Instant>,
}

impl RateLimit {
    fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1) as f64,
            burst: Duration::from_millis(250),
            due: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Accounts for `n` bytes just read; returns when reading more keeps to the rate.
    async fn take(&self, n: usize) {
        let now = tokio::time::Instant::now();
        let wake = {
            let Ok(mut due) = self.due.lock() else {
                return;
            };
            *due = (*due).max(now) + Duration::from_secs_f64(n as f64 / self.bytes_per_second);
            due.checked_sub(self.burst)
        };
        if let Some(wake) = wake.filter(|w| *w > now) {
            tokio::time::sleep_until(wake).await;
        }
    }
}

impl Reader {
    async fn run(self, mut stream: datatransfer_streams::Stream) {
        let Self {
            peer,
            version,
            max,
            budget,
            budget_total,
            rate,
            tx,
        } = self;
        let mut frames = FrameReader::new(max);
        loop {
            loop {
                match frames.next_frame() {
                    Ok(Some(body)) => {
                        // Wait for room in the budget (a body larger than it takes all of it).
                        let want = body.len().clamp(1, budget_total) as u32;
                        let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                            return;
                        };
                        // Version 2 needs nothing of the node to decode: it is decoded
                        // here, so that hashing each block to build its CID runs beside
                        // the node's task, not on it.
                        let cmd = match version {
                            Version::V2 => {
                                Cmd::Decoded(peer, crate::v2::decode_shared(&body, 256), permit)
                            }
                            Version::V1 => Cmd::Inbound(peer, version, body, permit),
                        };
                        if tx.send(cmd).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Dropping the stream resets it; the peer's other streams go on.
                        let _ = tx
                            .send(Cmd::WriteFailed(peer, format!("bad inbound frame: {e}")))
                            .await;
                        return;
                    }
                }
            }
            // Read straight into the frame: a large body lands where it is handed out from.
            match stream.read(frames.read_buf()).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Cmd::InboundClosed(peer)).await;
                    return;
                }
                Ok(n) => {
                    frames.advance(n);
                    if let Some(rate) = &rate {
                        rate.take(n).await;
                    }
                }
            }
        }
    }
}

/// Sends a peer's messages on one stream, coalescing what is queued into messages up to the
/// size target (go-graphsync's message queue), and reports each block sent.
#[allow(clippy::too_many_arguments)] // The writer task's whole context, passed once at spawn.
async fn write_stream(
    peer: PeerId,
    mut control: Control,
    config: Arc<GraphSyncConfig>,
    ids: Arc<Mutex<V1Ids>>,
    hooks: Arc<dyn Hooks>,
    mut rx: mpsc::Receiver<(u64, Message)>,
    tx: NodeRef,
    rate: Option<Arc<RateLimit>>,
    dead: SharedDead,
) {
    let versions = config.versions.clone();
    let mut open: Option<(datatransfer_streams::Stream, Version)> = None;
    let mut carry: Option<(u64, Message)> = None;
    // Serve tokens with messages on the current stream.
    let mut written: HashMap<u64, RequestId> = HashMap::new();
    loop {
        let (first_token, first) = match carry.take() {
            Some(m) => m,
            None => match tokio::time::timeout(config.peer_idle_timeout, rx.recv()).await {
                Err(_) => {
                    // Idle: close the stream, and let the node forget us if it can (it
                    // drops our queue's sender, which ends this task). Never waits on the
                    // node, which may be waiting on our queue.
                    open = None;
                    written.clear();
                    tx.try_send(Cmd::PeerIdle(peer));
                    continue;
                }
                Ok(Some((t, _))) if is_dead(&dead, t) => continue,
                Ok(Some(m)) => m,
                Ok(None) => break,
            },
        };
        let mut msg = first;
        // Which token each response in the merged message came with.
        let mut tokens: HashMap<RequestId, u64> =
            msg.responses.iter().map(|r| (r.id, first_token)).collect();
        let mut size = msg.approx_size();
        while size < config.message_target {
            let Ok((t, next)) = rx.try_recv() else { break };
            if is_dead(&dead, t) {
                continue;
            }
            let more = next.approx_size();
            if size + more > config.max_message_size / 2 {
                carry = Some((t, next));
                break;
            }
            size += more;
            for r in &next.responses {
                tokens.insert(r.id, t);
            }
            msg.merge(next);
        }
        // Responses cancelled while this message was being put together are left out.
        if msg
            .responses
            .iter()
            .any(|r| tokens.get(&r.id).is_some_and(|t| is_dead(&dead, *t)))
        {
            msg.responses
                .retain(|r| !tokens.get(&r.id).is_some_and(|t| is_dead(&dead, *t)));
            let wanted: HashSet<Cid> = msg
                .responses
                .iter()
                .flat_map(|r| r.metadata.iter().map(|(c, _)| *c))
                .collect();
            msg.blocks.retain(|b| wanted.contains(&b.cid));
            if msg.responses.is_empty() && msg.requests.is_empty() {
                continue;
            }
        }
        // At most two attempts: a stream found broken on write (the connection behind it
        // closed) is replaced once. Responses that already wrote on the broken stream lost
        // messages and are cancelled; the rest of this message goes out on the new stream.
        let mut sent = false;
        for attempt in 0..2 {
            let mut why = String::from("the peer speaks no graphsync version of ours");
            if open.is_none() {
                written.clear();
                for &v in &versions {
                    match control
                        .open_stream(peer, StreamProtocol::new(v.protocol()))
                        .await
                    {
                        Ok(s) => {
                            open = Some((s, v));
                            break;
                        }
                        Err(OpenStreamError::UnsupportedProtocol(_)) => continue,
                        Err(e) => {
                            why = e.to_string();
                            break;
                        }
                    }
                }
            }
            let Some((stream, version)) = open.as_mut() else {
                let _ = tx
                    .send(Cmd::WriteFailed(
                        peer,
                        format!("cannot open a graphsync stream to the peer: {why}"),
                    ))
                    .await;
                break;
            };
            let frame = match ids.lock() {
                Ok(mut ids) => encode_frame(&msg, *version, &mut ids),
                Err(_) => return,
            };
            match stream.write_all(&frame).await {
                Ok(()) => {
                    if let Some(rate) = &rate {
                        rate.take(frame.len()).await;
                    }
                    sent = true;
                    break;
                }
                Err(e) => {
                    open = None;
                    if attempt == 1 {
                        let _ = tx.send(Cmd::WriteFailed(peer, e.to_string())).await;
                        break;
                    }
                    written.remove(&0);
                    let mut broken = Vec::new();
                    if let Ok(mut d) = dead.lock() {
                        for (t, id) in written.drain() {
                            broken.push((id, t));
                            d.insert(t);
                        }
                    }
                    msg.responses
                        .retain(|r| !tokens.get(&r.id).is_some_and(|t| is_dead(&dead, *t)));
                    let wanted: std::collections::HashSet<Cid> = msg
                        .responses
                        .iter()
                        .flat_map(|r| r.metadata.iter().map(|(c, _)| *c))
                        .collect();
                    msg.blocks.retain(|b| wanted.contains(&b.cid));
                    let _ = tx
                        .send(Cmd::StreamBroken(peer, e.to_string(), broken))
                        .await;
                    if msg.responses.is_empty() && msg.requests.is_empty() {
                        break;
                    }
                }
            }
        }
        if !sent {
            continue;
        }
        for r in &msg.responses {
            if let Some(t) = tokens.get(&r.id) {
                written.insert(*t, r.id);
            }
        }
        if !msg.blocks.is_empty() {
            let sizes: HashMap<Cid, u64> = msg
                .blocks
                .iter()
                .map(|b| (b.cid, b.data.len() as u64))
                .collect();
            for r in &msg.responses {
                for (cid, _) in &r.metadata {
                    if let Some(size) = sizes.get(cid) {
                        hooks.block_sent(peer, r.id, *cid, *size);
                    }
                }
            }
        }
        // A response is complete once its last message is on the wire (go-graphsync's
        // completed-response listeners fire after the send, too).
        for r in &msg.responses {
            if r.status.is_terminal() {
                hooks.completed_response(peer, r.id, r.status);
            }
        }
    }
    if let Some((mut s, _)) = open {
        let _ = s.close().await;
    }
}

impl Node {
    fn peer(&mut self, peer: PeerId) -> &Peer {
        let per_peer = self.config.max_responses_per_peer.max(1);
        let control = self.control.clone();
        let config = self.config.clone();
        let hooks = self.hooks.clone();
        let tx = self.tx.clone();
        let rate = self.outbound_rate.clone();
        self.peers.entry(peer).or_insert_with(|| {
            let (tx_msgs, rx) = mpsc::channel(8);
            let writer = PeerWriter { tx: tx_msgs };
            let ids = Arc::new(Mutex::new(V1Ids::default()));
            let dead = SharedDead::default();
            tokio::spawn(write_stream(
                peer,
                control,
                config,
                ids.clone(),
                hooks,
                rx,
                tx,
                rate,
                dead.clone(),
            ));
            Peer {
                writer,
                dead,
                ids,
                responses: Arc::new(Semaphore::new(per_peer)),
                busy: Arc::default(),
            }
        })
    }

    async fn send(&mut self, peer: PeerId, msg: Message) {
        let writer = self.peer(peer).writer.clone();
        writer.send(msg).await;
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Request {
                    peer,
                    request,
                    selector,
                    events,
                    store,
                } => {
                    let mut request = request;
                    for (k, v) in self.hooks.outgoing_request(peer, &request).iter() {
                        request.extensions.set(k, v.clone());
                    }
                    let root = request.root.unwrap_or_default();
                    // Our decoders build every received block's CID from its bytes.
                    let verifier = Verifier::new(
                        root,
                        selector,
                        self.config
                            .traversal_with(self.config.max_links_per_outgoing_request),
                        self.config.max_buffered_blocks,
                    )
                    .with_cids_from_bytes();
                    let id = request.id;
                    self.wire_ids.insert(id, id);
                    self.outgoing.insert(
                        id,
                        Outgoing {
                            peer,
                            wire: id,
                            store: store.unwrap_or_else(|| self.store.clone()),
                            request: request.clone(),
                            verifier,
                            events,
                            traversed: 0,
                            pause: Pause::Running,
                        },
                    );
                    self.send(
                        peer,
                        Message {
                            requests: vec![request],
                            ..Message::default()
                        },
                    )
                    .await;
                }
                Cmd::CancelRequest(id) => {
                    if let Some(o) = self.remove_outgoing(id) {
                        self.send(
                            o.peer,
                            Message {
                                requests: vec![Request::cancel(o.wire)],
                                ..Message::default()
                            },
                        )
                        .await;
                        let _ = o
                            .events
                            .send(RequestEvent::Completed(Err(GraphSyncError::Cancelled)))
                            .await;
                    }
                }
                Cmd::PauseRequest(id) => self.pause_request(id).await,
                Cmd::UnpauseRequest(id, ext) => self.unpause_request(id, ext).await,
                Cmd::Response(peer, id, cmd) => {
                    if let Some(served) = self.responses.get(&(peer, id)) {
                        let _ = served.ctl.send(cmd).await;
                    }
                }
                Cmd::ResponseDone(peer, id, token) => {
                    if self
                        .responses
                        .get(&(peer, id))
                        .is_some_and(|s| s.token == token)
                    {
                        self.responses.remove(&(peer, id));
                    }
                }
                Cmd::WriteFailed(peer, error) => {
                    self.hooks.network_error(peer, &error);
                    // Messages to the peer were lost: the responses they belonged to have
                    // gaps the requester cannot get past, so they end here.
                    let broken: Vec<(PeerId, RequestId)> = self
                        .responses
                        .keys()
                        .filter(|(p, _)| *p == peer)
                        .copied()
                        .collect();
                    for key in broken {
                        if let Some(served) = self.responses.remove(&key) {
                            let _ = served.ctl.send(ResponseCmd::Drop).await;
                        }
                    }
                    self.fail_requests_to(peer, &error).await;
                }
                Cmd::StreamBroken(peer, error, broken) => {
                    self.hooks.network_error(peer, &error);
                    for (id, token) in broken {
                        // Only the response that wrote on the broken stream: a later one
                        // may have the same id (a requester resuming after its pause).
                        if self
                            .responses
                            .get(&(peer, id))
                            .is_some_and(|s| s.token == token)
                            && let Some(served) = self.responses.remove(&(peer, id))
                        {
                            let _ = served.ctl.send(ResponseCmd::Drop).await;
                        }
                    }
                }
                Cmd::InboundClosed(peer) => {
                    let error = format!("the stream from {peer} closed");
                    self.fail_requests_to(peer, &error).await;
                }
                Cmd::PeerIdle(peer) => self.forget_idle_peer(peer),
                Cmd::PeerRequests(peer, reply) => {
                    let outgoing = self
                        .outgoing
                        .values()
                        .filter(|o| o.peer == peer)
                        .map(|o| RequestInfo {
                            id: o.wire,
                            root: o.request.root,
                            state: match o.pause {
                                Pause::Running => RequestState::Running,
                                Pause::Paused => RequestState::Paused,
                            },
                            traversed: Some(o.traversed),
                        })
                        .collect();
                    let incoming = self
                        .responses
                        .iter()
                        .filter(|((p, _), _)| *p == peer)
                        .map(|((_, id), served)| RequestInfo {
                            id: *id,
                            root: served.root,
                            state: match served.state.load(Ordering::Relaxed) {
                                SERVED_QUEUED => RequestState::Queued,
                                SERVED_PAUSED => RequestState::Paused,
                                _ => RequestState::Running,
                            },
                            traversed: None,
                        })
                        .collect();
                    let _ = reply.send(PeerRequests { outgoing, incoming });
                }
                Cmd::Stats(reply) => {
                    let state = |want: u8| {
                        self.responses
                            .values()
                            .filter(|s| s.state.load(Ordering::Relaxed) == want)
                            .count()
                    };
                    let _ = reply.send(GraphSyncStats {
                        peers: self.peers.len(),
                        requests: self.outgoing.len(),
                        responses: self.responses.len(),
                        responses_queued: state(SERVED_QUEUED),
                        responses_paused: state(SERVED_PAUSED),
                    });
                }
                // The permit is held until the message is handled (its blocks stored).
                Cmd::Inbound(peer, version, body, _permit) => {
                    let ids = self.peer(peer).ids.clone();
                    let decoded = match ids.lock() {
                        Ok(ids) => decode_body(&body, version, &ids),
                        Err(_) => continue,
                    };
                    match decoded {
                        Ok(msg) => self.on_message(peer, msg).await,
                        Err(e) => self.hooks.network_error(peer, &format!("bad message: {e}")),
                    }
                }
                Cmd::Decoded(peer, decoded, _permit) => match decoded {
                    Ok(msg) => self.on_message(peer, msg).await,
                    Err(e) => self.hooks.network_error(peer, &format!("bad message: {e}")),
                },
            }
        }
    }

    /// Forgets a peer whose writer went idle, if nothing of the peer's is in flight: no
    /// request to it, no response to it (running or waiting for its turn), no busy refusal
    /// on its way and nothing queued for its writer.
    fn forget_idle_peer(&mut self, peer: PeerId) {
        if self.outgoing.values().any(|o| o.peer == peer)
            || self.responses.keys().any(|(p, _)| *p == peer)
        {
            return;
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let quiet_busy = p
            .busy
            .lock()
            .map(|b| b.ids.is_empty() && !b.flushing)
            .unwrap_or(false);
        if quiet_busy
            && Arc::strong_count(&p.responses) == 1
            && p.writer.tx.capacity() == p.writer.tx.max_capacity()
        {
            self.peers.remove(&peer);
        }
    }

    /// Ends our requests to `peer` with a network error; later responses to them are ignored.
    async fn fail_requests_to(&mut self, peer: PeerId, error: &str) {
        let failed: Vec<RequestId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some(o) = self.remove_outgoing(id) {
                let _ = o
                    .events
                    .send(RequestEvent::Completed(Err(GraphSyncError::Network(
                        error.to_owned(),
                    ))))
                    .await;
            }
        }
    }

    /// Drops the messages of a response that wait for the peer's writer.
    fn forget(&mut self, peer: PeerId, token: u64) {
        if let Some(p) = self.peers.get(&peer)
            && let Ok(mut d) = p.dead.lock()
        {
            d.insert(token);
        }
    }

    /// Forgets a request of ours, and its wire id.
    fn remove_outgoing(&mut self, id: RequestId) -> Option<Outgoing> {
        let o = self.outgoing.remove(&id)?;
        self.wire_ids.remove(&o.wire);
        Some(o)
    }

    async fn pause_request(&mut self, id: RequestId) {
        if let Some(o) = self.outgoing.get_mut(&id)
            && o.pause == Pause::Running
        {
            o.pause = Pause::Paused;
            let (peer, wire) = (o.peer, o.wire);
            self.send(
                peer,
                Message {
                    requests: vec![Request::cancel(wire)],
                    ..Message::default()
                },
            )
            .await;
        }
    }

    async fn unpause_request(&mut self, id: RequestId, ext: Extensions) {
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        match o.pause {
            Pause::Running => {
                let (peer, wire) = (o.peer, o.wire);
                self.send(
                    peer,
                    Message {
                        requests: vec![Request::update(wire, ext)],
                        ..Message::default()
                    },
                )
                .await;
            }
            Pause::Paused => self.rerequest(id, ext).await,
        }
    }

    async fn rerequest(&mut self, id: RequestId, ext: Extensions) {
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        o.pause = Pause::Running;
        o.verifier.restart(o.traversed);
        let wire = self.ids.next();
        self.wire_ids.remove(&o.wire);
        self.wire_ids.insert(wire, id);
        o.wire = wire;
        let mut again = o.request.clone();
        again.id = wire;
        for (k, v) in ext.iter() {
            again.extensions.set(k, v.clone());
        }
        again.extensions.set(
            crate::responder::DO_NOT_SEND_FIRST_BLOCKS,
            crate::responder::encode_skip_count(o.traversed),
        );
        let peer = o.peer;
        self.send(
            peer,
            Message {
                requests: vec![again],
                ..Message::default()
            },
        )
        .await;
    }

    async fn on_message(&mut self, peer: PeerId, msg: Message) {
        for req in msg.requests {
            match req.kind {
                RequestType::New => self.serve(peer, req),
                RequestType::Cancel => {
                    if let Some(served) = self.responses.remove(&(peer, req.id)) {
                        self.forget(peer, served.token);
                        let _ = served.ctl.send(ResponseCmd::Drop).await;
                        self.hooks.requestor_cancelled(peer, req.id);
                    }
                }
                RequestType::Update => self.hooks.request_updated(peer, &req),
            }
        }
        let mut blocks: HashMap<Cid, crate::Bytes> =
            msg.blocks.into_iter().map(|b| (b.cid, b.data)).collect();
        for resp in msg.responses {
            let mine: Vec<Block> = resp
                .metadata
                .iter()
                .filter_map(|(cid, _)| blocks.remove(cid).map(|data| Block { cid: *cid, data }))
                .collect();
            self.on_response(peer, resp, mine).await;
        }
    }

    async fn on_response(&mut self, peer: PeerId, mut resp: Response, blocks: Vec<Block>) {
        // Responses under an id we no longer use (before a re-request, or of a process of
        // ours that was restarted) are stale. The peer is told to stop sending them: a
        // go-graphsync responder withholds from our new requests every block such a response
        // is still sending us, and go-data-transfer completes the channel when it ends.
        let Some(&id) = self.wire_ids.get(&resp.id) else {
            if !resp.status.is_terminal() {
                if self.stopped.len() >= MAX_STOPPED {
                    self.stopped.clear();
                }
                if self.stopped.insert((peer, resp.id)) {
                    self.send(
                        peer,
                        Message {
                            requests: vec![Request::cancel(resp.id)],
                            ..Message::default()
                        },
                    )
                    .await;
                }
            }
            return;
        };
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        if o.peer != peer {
            return;
        }
        if o.pause == Pause::Paused && resp.status == ResponseStatus::RequestCancelled {
            // The cancelled response is over; the request stays paused.
            return;
        }
        // Our hooks and the request's events know the request by its handle's id.
        resp.id = id;
        self.hooks.incoming_response(peer, &resp);
        let _ = o.events.send(RequestEvent::Response(resp.clone())).await;
        let store = o.store.clone();
        let hooks = self.hooks.clone();
        let mut got: Vec<(Cid, u64)> = Vec::new();
        let mut pause = false;
        let mut store_err = None;
        let mut traversed = 0u64;
        let before = o.traversed;
        let result = o
            .verifier
            .on_response(&resp, blocks, &*store, &mut |visit, data| {
                // The walk checked `d` against its CID (a verifier always does): the store
                // need not hash it again.
                if let Some(d) = data
                    && let Err(e) = store.put_verified(&visit.cid, d)
                {
                    store_err = Some(e.to_string());
                }
                traversed += 1;
                if visit.present {
                    got.push((visit.cid, visit.size as u64));
                }
                let block = IncomingBlock {
                    cid: visit.cid,
                    size: visit.size as u64,
                    present: visit.present,
                    on_wire: data.is_some(),
                    index: before + traversed,
                };
                if hooks.incoming_block(peer, id, &block) == BlockDecision::Pause {
                    pause = true;
                }
            });
        o.traversed += traversed;
        for (cid, size) in got {
            let _ = o.events.send(RequestEvent::Block { cid, size }).await;
        }
        let done = match (result, store_err) {
            (_, Some(e)) => Some(Err(GraphSyncError::LocalStore(e))),
            (Ok(Progress::Complete), None) => Some(Ok(resp.status)),
            (Ok(Progress::InProgress), None) => None,
            (Err(VerifyError::Traversal(t)), None) if matches!(*t, TraversalError::Store(_)) => {
                Some(Err(GraphSyncError::LocalStore(t.to_string())))
            }
            (Err(e), None) => Some(Err(e.into())),
        };
        if let Some(r) = done {
            let failed = r.is_err();
            if let Some(o) = self.remove_outgoing(id) {
                if failed && !resp.status.is_terminal() {
                    self.send(
                        peer,
                        Message {
                            requests: vec![Request::cancel(o.wire)],
                            ..Message::default()
                        },
                    )
                    .await;
                }
                let _ = o.events.send(RequestEvent::Completed(r)).await;
            }
        } else if pause {
            self.pause_request(id).await;
        }
    }

    fn serve(&mut self, peer: PeerId, request: Request) {
        let held = self.responses.keys().filter(|(p, _)| *p == peer).count();
        if held >= self.config.max_requests_per_peer
            && !self.responses.contains_key(&(peer, request.id))
        {
            let p = self.peer(peer);
            let (writer, busy) = (p.writer.clone(), p.busy.clone());
            // Answered from a task, so the node never waits on this peer; refusals that pile
            // up meanwhile go out together.
            let flush = match busy.lock() {
                Ok(mut b) => b.push(request.id),
                Err(_) => false,
            };
            if flush {
                tokio::spawn(answer_busy(writer, busy));
            }
            return;
        }
        let (ctl_tx, ctl) = mpsc::channel(16);
        let token = SERVE_TOKENS.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(AtomicU8::new(SERVED_QUEUED));
        let served = Served {
            ctl: ctl_tx,
            token,
            root: request.root,
            state: state.clone(),
        };
        // A repeated request (an unpause after a requester-side pause) replaces the old one.
        if let Some(old) = self.responses.insert((peer, request.id), served) {
            self.forget(peer, old.token);
            let _ = old.ctl.try_send(ResponseCmd::Drop);
        }
        let per_peer = self.peer(peer).responses.clone();
        let writer = self.peer(peer).writer.clone();
        let store = self
            .hooks
            .store_for_request(peer, &request)
            .unwrap_or_else(|| self.store.clone());
        let ctx = ServeCtx {
            peer,
            store,
            hooks: self.hooks.clone(),
            config: self.config.clone(),
            writer,
            token,
            done: self.tx.clone(),
            all: self.all_responses.clone(),
            per_peer,
            state,
        };
        tokio::spawn(ctx.serve(request, ctl));
    }
}

/// Room to serve one response: a permit of the peer's and one of the node's.
type Slot = (OwnedSemaphorePermit, OwnedSemaphorePermit);

struct ServeCtx {
    peer: PeerId,
    store: Arc<dyn Blockstore>,
    hooks: Arc<dyn Hooks>,
    config: Arc<GraphSyncConfig>,
    writer: PeerWriter,
    /// Tags this response's messages (see [`PeerWriter`]).
    token: u64,
    done: NodeRef,
    all: Arc<Semaphore>,
    per_peer: Arc<Semaphore>,
    /// Where the response stands, for [`GraphSync::peer_requests`].
    state: Arc<AtomicU8>,
}

impl ServeCtx {
    fn set_paused(&self, paused: bool) {
        let state = if paused {
            SERVED_PAUSED
        } else {
            SERVED_RUNNING
        };
        self.state.store(state, Ordering::Relaxed);
    }

    async fn respond(&self, response: Response, blocks: Vec<Block>) -> bool {
        let msg = Message {
            responses: vec![response],
            blocks,
            ..Message::default()
        };
        self.writer.send_as(self.token, msg).await
    }

    async fn serve(self, request: Request, mut ctl: mpsc::Receiver<ResponseCmd>) {
        let id = request.id;
        // Commands that came while the request waited, for `run`.
        let mut early = VecDeque::new();
        let slot = match self.try_slot() {
            Some(slot) => Some(slot),
            None => {
                self.hooks.request_queued(self.peer, &request);
                // The requester learns it waits in our queue (so its wait for an answer can
                // wait too); go-graphsync requesters take the status as a plain update.
                let queued = Response {
                    id,
                    status: ResponseStatus::RequestAcknowledged,
                    metadata: Vec::new(),
                    extensions: Extensions::new(),
                };
                self.respond(queued, Vec::new()).await;
                self.wait_for_slot(id, &mut ctl, &mut early).await
            }
        };
        if let Some(slot) = slot {
            self.set_paused(false);
            // The writer reports completion once the final response is written.
            let _ = self.run(request, &mut ctl, early, slot).await;
        }
        let _ = self
            .done
            .send(Cmd::ResponseDone(self.peer, id, self.token))
            .await;
    }

    /// Room to serve now (per peer, then in total), if there is some.
    fn try_slot(&self) -> Option<Slot> {
        match (
            self.per_peer.clone().try_acquire_owned(),
            self.all.clone().try_acquire_owned(),
        ) {
            (Ok(p), Ok(a)) => Some((p, a)),
            _ => None,
        }
    }

    /// Waits in the queue for room to serve, keeping the commands that come meanwhile in
    /// `early`; `None` if the request was cancelled (the requester is told) or dropped.
    async fn wait_for_slot(
        &self,
        id: RequestId,
        ctl: &mut mpsc::Receiver<ResponseCmd>,
        early: &mut VecDeque<ResponseCmd>,
    ) -> Option<Slot> {
        self.state.store(SERVED_QUEUED, Ordering::Relaxed);
        let (per_peer, all) = (self.per_peer.clone(), self.all.clone());
        let acquire = async { (per_peer.acquire_owned().await, all.acquire_owned().await) };
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                (p, a) = &mut acquire => return p.ok().zip(a.ok()),
                cmd = ctl.recv() => match cmd {
                    // Cancelled while waiting: it never starts (again).
                    Some(ResponseCmd::Cancel) => {
                        let cancelled = Response {
                            id,
                            status: ResponseStatus::RequestCancelled,
                            metadata: Vec::new(),
                            extensions: Extensions::new(),
                        };
                        self.respond(cancelled, Vec::new()).await;
                        return None;
                    }
                    Some(ResponseCmd::Drop) | None => return None,
                    Some(other) => early.push_back(other),
                },
            }
        }
    }

    /// Serves the request; returns the final status sent, or `None` if cancelled.
    ///
    /// A paused response gives its room back (`slot`), as go-graphsync's does (a paused
    /// response is no task in its queue): requests that wait for a payment or for their
    /// requester never keep others from being served. Resumed, it waits in the queue again.
    async fn run(
        &self,
        request: Request,
        ctl: &mut mpsc::Receiver<ResponseCmd>,
        mut early: VecDeque<ResponseCmd>,
        slot: Slot,
    ) -> Option<ResponseStatus> {
        let mut slot = Some(slot);
        let id = request.id;
        let reply = |status, extensions| Response {
            id,
            status,
            metadata: Vec::new(),
            extensions,
        };
        // A request its requester cancelled before we looked at it (a pause right after
        // the request, in the same message, say) is not looked at: its hook could otherwise
        // run after the hook of a later request that supersedes it, and undo that one.
        loop {
            match ctl.try_recv() {
                Ok(ResponseCmd::Drop) | Err(mpsc::error::TryRecvError::Disconnected) => {
                    return None;
                }
                Ok(other) => early.push_back(other),
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        let (mut paused, mut pending) = match self.hooks.incoming_request(self.peer, &request).await
        {
            RequestDecision::Accept(e) => (false, e),
            RequestDecision::Pause(e) => (true, e),
            RequestDecision::Reject(status, e) => {
                self.respond(reply(status, e), Vec::new()).await;
                return Some(status);
            }
        };
        let mut traversal = self
            .config
            .traversal_with(self.config.max_links_per_incoming_request);
        // A store whose blocks were checked on their way in is not hashed again here (as
        // go-graphsync's responder trusts its store); the requester checks every block.
        if self.config.trust_local_stores && self.store.trusted() {
            traversal.verify = false;
        }
        let mut responder = match Responder::new(&request, traversal, self.config.message_target) {
            Ok(r) => r,
            Err(_) => {
                let status = ResponseStatus::RequestFailedUnknown;
                self.respond(reply(status, pending), Vec::new()).await;
                return Some(status);
            }
        };
        if paused {
            self.set_paused(true);
            slot = None;
            self.respond(
                reply(ResponseStatus::RequestPaused, std::mem::take(&mut pending)),
                Vec::new(),
            )
            .await;
        }
        loop {
            // Commands first; while paused, wait for one.
            loop {
                let cmd = if let Some(cmd) = early.pop_front() {
                    Some(cmd)
                } else if paused {
                    ctl.recv().await
                } else {
                    match ctl.try_recv() {
                        Ok(cmd) => Some(cmd),
                        Err(mpsc::error::TryRecvError::Empty) => None,
                        // Replaced by a newer response under the same id, or the node is gone.
                        Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    }
                };
                match cmd {
                    None if paused => return None,
                    None => break,
                    Some(ResponseCmd::Cancel) => {
                        self.respond(
                            reply(ResponseStatus::RequestCancelled, Extensions::new()),
                            Vec::new(),
                        )
                        .await;
                        return None;
                    }
                    Some(ResponseCmd::Drop) => return None,
                    Some(ResponseCmd::Pause) => {
                        paused = true;
                        self.set_paused(true);
                        slot = None;
                        self.respond(
                            reply(ResponseStatus::RequestPaused, std::mem::take(&mut pending)),
                            Vec::new(),
                        )
                        .await;
                    }
                    Some(ResponseCmd::Unpause(e)) => {
                        paused = false;
                        self.set_paused(false);
                        merge(&mut pending, e);
                    }
                    Some(ResponseCmd::Extensions(e)) => merge(&mut pending, e),
                }
                if !paused {
                    break;
                }
            }
            if slot.is_none() {
                // Resumed: room again, in turn. Commands meanwhile are handled first after.
                slot = Some(self.wait_for_slot(id, ctl, &mut early).await?);
                self.set_paused(false);
                if !early.is_empty() {
                    continue;
                }
            }
            let mut metadata = Vec::new();
            let mut blocks = Vec::new();
            let mut bytes = 0;
            let mut status = ResponseStatus::PartialResponse;
            let mut finished = false;
            while bytes < self.config.message_target {
                match responder.step(&*self.store) {
                    Err(_) => {
                        status = ResponseStatus::RequestFailedUnknown;
                        finished = true;
                        break;
                    }
                    Ok(StepItem::Finished(s)) => {
                        status = s;
                        finished = true;
                        break;
                    }
                    Ok(StepItem::Link {
                        event,
                        action,
                        block,
                    }) => {
                        metadata.push((event.cid, action));
                        // Metadata counts: a walk past many skipped blocks sends no block
                        // bytes, but its entries must not make one huge message.
                        bytes += crate::responder::METADATA_ENTRY_BYTES;
                        if let Some(b) = block {
                            bytes += b.data.len();
                            blocks.push(b);
                        }
                        let (decision, ext) =
                            self.hooks.outgoing_block(self.peer, id, &event).await;
                        merge(&mut pending, ext);
                        if decision == BlockDecision::Pause {
                            paused = true;
                            self.set_paused(true);
                            slot = None;
                            status = ResponseStatus::RequestPaused;
                            break;
                        }
                    }
                }
            }
            let response = Response {
                id,
                status,
                metadata,
                extensions: std::mem::take(&mut pending),
            };
            if !self.respond(response, blocks).await || finished {
                return finished.then_some(status);
            }
        }
    }
}

fn merge(into: &mut Extensions, from: Extensions) {
    for (k, v) in from.iter() {
        into.set(k, v.clone());
    }
}
