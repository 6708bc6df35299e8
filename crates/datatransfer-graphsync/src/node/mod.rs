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
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
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
use crate::{
    DEFAULT_MAX_MESSAGE_SIZE, FrameReader, SharedFrame, Version, decode_body,
    encode_shared_frame_into,
};

mod actor;
mod config;
mod hooks;
mod rate;
mod serve;
mod wire;

use actor::{Node, Responses};
pub use config::GraphSyncConfig;
pub use hooks::{AcceptAll, Hooks, IncomingBlock, RequestDecision};
use rate::RateLimit;
use serve::ServeCtx;
use wire::{
    BusyAnswers, PeerWriter, Reader, SERVE_TOKENS, SharedDead, answer_busy, peer_writer,
    write_stream,
};

/// The inbound streams being read, by peer, oldest first: a peer gets at most
/// [`GraphSyncConfig::max_inbound_streams_per_peer`], and a new one past that replaces its
/// oldest (honest peers write on one stream at a time and open a new one when it breaks, so
/// the newest is the live one; a peer opening streams by the hundred, each holding part of a
/// message, cannot make us hold them all).
#[derive(Clone)]
struct InboundStreams {
    max: usize,
    next: Arc<AtomicU64>,
    by_peer: Arc<Mutex<HashMap<PeerId, VecDeque<Stopper>>>>,
}

/// An inbound stream's key, and the sender whose drop stops its reader.
type Stopper = (u64, tokio::sync::oneshot::Sender<()>);

/// A reader's place in [`InboundStreams`], given up when the reader ends.
struct InboundSlot {
    streams: InboundStreams,
    peer: PeerId,
    key: u64,
}

impl InboundStreams {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            next: Arc::new(AtomicU64::new(0)),
            by_peer: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Counts a new stream of `peer`'s, stopping the peer's oldest past the limit. Returns its
    /// slot and what resolves when a newer stream replaces it.
    fn add(&self, peer: PeerId) -> (InboundSlot, tokio::sync::oneshot::Receiver<()>) {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let (stop, replaced) = tokio::sync::oneshot::channel();
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        let streams = by_peer.entry(peer).or_default();
        streams.push_back((key, stop));
        while streams.len() > self.max {
            // Dropping its sender stops the oldest reader.
            streams.pop_front();
        }
        let slot = InboundSlot {
            streams: self.clone(),
            peer,
            key,
        };
        (slot, replaced)
    }
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut by_peer = self
            .streams
            .by_peer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(streams) = by_peer.get_mut(&self.peer) {
            streams.retain(|(k, _)| *k != self.key);
            if streams.is_empty() {
                by_peer.remove(&self.peer);
            }
        }
    }
}

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
        events: mpsc::UnboundedSender<RequestEvent>,
        store: Option<Arc<dyn Blockstore>>,
    },
    CancelRequest(RequestId),
    PauseRequest(RequestId),
    UnpauseRequest(RequestId, Extensions),
    Response(PeerId, RequestId, ResponseCmd),
    /// A received message body, holding its share of the inbound byte budget.
    Inbound(PeerId, Version, crate::Bytes, OwnedSemaphorePermit),
    /// A message its stream's decoder task decoded already (version 2), the length of the
    /// body it came in, and its budget.
    Decoded(
        PeerId,
        Result<Message, crate::MessageError>,
        usize,
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
    /// The node's own messages (not responses: cancels and updates of its requests, and
    /// advice to stop stale responses) waiting for peers' writers.
    pub own_messages_queued: usize,
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
///
/// The node never waits for a handle's reader: events queue until read (one per response
/// message and one per block, a few dozen bytes each), so read them as they come, or drop
/// the handle (the request goes on; [`RequestHandle::control`] keeps control of it).
#[derive(Debug)]
pub struct RequestHandle {
    /// The request's id.
    pub id: RequestId,
    events: mpsc::UnboundedReceiver<RequestEvent>,
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
        let inbound = InboundStreams::new(config.max_inbound_streams_per_peer);
        for &version in &config.versions {
            let mut incoming = control.accept(StreamProtocol::new(version.protocol()))?;
            let tx = tx.clone();
            let max = config.max_message_size;
            let budget = budget.clone();
            let rate = rate.clone();
            let inbound = inbound.clone();
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
                    let (slot, replaced) = inbound.add(peer);
                    tokio::spawn(async move {
                        let _slot = slot;
                        tokio::select! {
                            // A newer stream of the peer's took its place: dropped here
                            // (which resets it), quietly, as the peer goes on on the new one.
                            _ = replaced => {}
                            () = reader.run(stream) => {}
                        }
                    });
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
            responses: Responses::default(),
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
        let (events_tx, events) = mpsc::unbounded_channel();
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
