//! The graphsync transport of the data-transfer protocol, as go-data-transfer v1.15.1
//! `transport/graphsync` drives go-graphsync.
//!
//! [`GraphsyncTransport`] implements the engine's [`Transport`]: it carries out
//! [`TransportCommand`]s on a [`GraphSync`] node and turns graphsync's hooks into
//! [`TransportEvent`]s.
//!
//! - Data-transfer messages ride in graphsync extensions, encoded as `/fil/datatransfer/1.2.0`
//!   messages: `fil/data-transfer/1.1` always, plus `fil/data-transfer/incoming-request/1.1` on
//!   the answer to a request and `fil/data-transfer/outgoing-block/1.1` on a block.
//! - Pull: the initiator's graphsync request carries the New request; the responder's
//!   incoming-request hook asks the engine to validate it (accept, pause or reject).
//! - Push: the responder, once it accepted the push over the data-transfer network, requests
//!   the data back from the initiator, with its acceptance in the request.
//! - The sender's outgoing-block hook reports each block queued (the engine counts bytes and
//!   asks the revalidator, which may pause the response and attach a message); the
//!   block-sent hook reports it sent. The receiver's incoming-block hook reports each block
//!   received (the engine may pause or cancel the request).
//! - Completed responses and finished requests feed the engine; a restart opens a new request
//!   with `graphsync/do-not-send-first-blocks` set to the number of blocks at the start of the
//!   walk the receiver already holds, so they are not sent again (a new channel's request
//!   too, unless [`GraphsyncTransportConfig::skip_held_blocks_on_open`] is off).
//!
//! Requests without a data-transfer extension are refused: this node serves data only to
//! channels the engine validated.

#![deny(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use datatransfer_fsm::{
    DataRequest, HookResult, HookToken, Transport, TransportCommand, TransportEvent,
    TransportEventSink,
};
use datatransfer_graphsync::node::{
    GraphSync, GraphSyncConfig, GraphSyncError, Hooks, IncomingBlock, RequestControl,
    RequestDecision, RequestEvent, RequestHandle,
};
use datatransfer_graphsync::responder::{BlockDecision, DO_NOT_SEND_FIRST_BLOCKS, OutgoingBlock};
use datatransfer_graphsync::{Extensions, RawNode, Request, RequestId, Response, ResponseStatus};
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{NoVisitor, Step, Traversal, TraversalConfig};
use datatransfer_types::message::{DecodeLimits, Message, MessageType, WireVersion};
use datatransfer_types::{ChannelId, ChannelState, Cid, DagCbor, Fault, PeerId};
use tokio::sync::{mpsc, oneshot};

/// The extension every data-transfer message travels in.
pub const EXTENSION_DATA_TRANSFER: &str = "fil/data-transfer/1.1";
/// The extension of a message answering a graphsync request (the incoming-request hook).
pub const EXTENSION_INCOMING_REQUEST: &str = "fil/data-transfer/incoming-request/1.1";
/// The extension of a message sent along with a block (the outgoing-block hook).
pub const EXTENSION_OUTGOING_BLOCK: &str = "fil/data-transfer/outgoing-block/1.1";

/// Settings of the transport.
#[derive(Debug, Clone)]
pub struct GraphsyncTransportConfig {
    /// The graphsync node's settings (versions, message sizes, response limits).
    pub graphsync: GraphSyncConfig,
    /// Limits on data-transfer messages read from extensions.
    pub limits: DecodeLimits,
    /// Whether a new channel's request, like a restart's, asks the sender to skip the blocks
    /// at the start of the walk that the receiving store already holds
    /// (`graphsync/do-not-send-first-blocks`). go-data-transfer sets it on restarts only; on
    /// here by default, so a DAG partly at hand (from a channel that failed, or a CAR
    /// imported) is not sent again. Senders that do not know the extension send everything,
    /// which the receiver takes as usual.
    pub skip_held_blocks_on_open: bool,
    /// How long to wait before asking again when a responder refuses a request of ours as
    /// busy (its queue for us is full); the wait doubles with each refusal in a row, up to 32
    /// times this. Meanwhile the channel counts as queued.
    pub busy_retry_backoff: Duration,
    /// Busy refusals in a row after which the channel fails.
    pub max_busy_retries: u32,
}

impl Default for GraphsyncTransportConfig {
    fn default() -> Self {
        Self {
            graphsync: GraphSyncConfig::default(),
            limits: DecodeLimits::default(),
            skip_held_blocks_on_open: true,
            busy_retry_backoff: Duration::from_secs(1),
            max_busy_retries: 30,
        }
    }
}

/// Starting the transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Another behaviour already serves the graphsync protocols on this swarm.
    #[error("the graphsync protocols are already registered on this swarm")]
    AlreadyRegistered,
}

/// The graphsync transport. Cheap to clone; all clones drive the same node.
#[derive(Clone)]
pub struct GraphsyncTransport {
    shared: Arc<Shared>,
    work: mpsc::UnboundedSender<TransportCommand>,
}

impl std::fmt::Debug for GraphsyncTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphsyncTransport")
            .field("me", &self.shared.me)
            .finish_non_exhaustive()
    }
}

/// A hook waiting for the engine's answer.
enum Pending {
    /// An async graphsync hook awaits it.
    Answer(oneshot::Sender<(Option<Message>, HookResult)>),
    /// A block of one of our requests arrived: pause or cancel the request if told to.
    Received(ChannelId),
    /// A message arrived in an update of a request we serve.
    Updated(PeerId, RequestId),
    /// A request message arrived in a response to one of our requests.
    InResponse(ChannelId),
}

/// One of our graphsync requests (we receive the channel's data).
struct Outgoing {
    control: Option<RequestControl>,
    /// Set when we cancel or replace the request, so its end is not reported.
    closed: Arc<AtomicBool>,
}

/// A graphsync request we serve (we send the channel's data).
struct Serving {
    channel: ChannelId,
    /// What the request asked for (the selector by CID): a re-request under the same id must
    /// ask for the same.
    root: Cid,
    selector: Cid,
    /// Whether the engine has let it be served (until then a repeat of it is no repeat).
    accepted: bool,
    /// Blocks queued for sending and their walk positions, for the block-sent hook.
    queued: VecDeque<(Cid, u64)>,
}

#[derive(Default)]
struct State {
    pending: HashMap<HookToken, Pending>,
    outgoing: HashMap<ChannelId, Outgoing>,
    outgoing_ids: HashMap<RequestId, ChannelId>,
    serving: HashMap<(PeerId, RequestId), Serving>,
    serving_channels: HashMap<ChannelId, (PeerId, RequestId)>,
    stores: HashMap<ChannelId, Arc<dyn Blockstore>>,
    /// Messages to attach to the channel's next graphsync response (a resume that came before
    /// the request).
    stashed: HashMap<ChannelId, Vec<Message>>,
    shut_down: bool,
}

struct Shared {
    me: PeerId,
    default_store: Arc<dyn Blockstore>,
    /// The node; taken at shutdown, so the node (whose hooks hold this) can end.
    gs: Mutex<Option<GraphSync>>,
    sink: OnceLock<Arc<dyn TransportEventSink>>,
    state: Mutex<State>,
    next_token: AtomicU64,
    limits: DecodeLimits,
    traversal: TraversalConfig,
    skip_held_on_open: bool,
    busy_retry_backoff: Duration,
    max_busy_retries: u32,
    /// Woken when the engine answers a request we serve (it is validated or refused).
    answered: tokio::sync::Notify,
}

impl GraphsyncTransport {
    /// Starts a graphsync node on `control` serving `store` (the default block store of every
    /// channel) and the transport over it. Must be called inside a tokio runtime.
    pub fn start(
        me: PeerId,
        control: datatransfer_streams::Control,
        store: Arc<dyn Blockstore>,
        config: GraphsyncTransportConfig,
    ) -> Result<Self, TransportError> {
        let shared = Arc::new(Shared {
            me,
            default_store: store.clone(),
            gs: Mutex::new(None),
            sink: OnceLock::new(),
            state: Mutex::new(State::default()),
            next_token: AtomicU64::new(1),
            limits: config.limits,
            traversal: config.graphsync.traversal.clone(),
            skip_held_on_open: config.skip_held_blocks_on_open,
            busy_retry_backoff: config.busy_retry_backoff,
            max_busy_retries: config.max_busy_retries,
            answered: tokio::sync::Notify::new(),
        });
        let hooks = Arc::new(DtHooks(shared.clone()));
        let gs = GraphSync::start(me, control, store, hooks, config.graphsync)
            .map_err(|_| TransportError::AlreadyRegistered)?;
        *shared.gs.lock().unwrap_or_else(|e| e.into_inner()) = Some(gs);
        let (work, rx) = mpsc::unbounded_channel();
        tokio::spawn(execute_commands(shared.clone(), rx));
        Ok(Self { shared, work })
    }

    /// The graphsync node underneath (a handle to it); `None` after shutdown.
    pub fn graphsync(&self) -> Option<GraphSync> {
        self.shared.gs()
    }

    /// Has the channel read and write its blocks in `store` instead of the default one
    /// (go-data-transfer's `UseStore`; call it from a transport configurer).
    pub fn use_store(&self, channel: ChannelId, store: Arc<dyn Blockstore>) {
        self.shared.lock().stores.insert(channel, store);
    }

    /// How many channels have transport state (requests sent or served); for tests and
    /// diagnostics.
    pub fn open_channels(&self) -> usize {
        let st = self.shared.lock();
        st.outgoing.len() + st.serving_channels.len()
    }
}

impl Transport for GraphsyncTransport {
    fn attach(&self, sink: Arc<dyn TransportEventSink>) {
        let _ = self.shared.sink.set(sink);
    }

    fn execute(&self, command: TransportCommand) {
        let _ = self.work.send(command);
    }

    fn shutdown(&self) {
        let mut st = self.shared.lock();
        st.shut_down = true;
        // Dropping the waiting hooks' senders refuses them.
        st.pending.clear();
        for o in st.outgoing.values() {
            o.closed.store(true, Ordering::SeqCst);
        }
        drop(st);
        // Our handle to the node goes: the node ends once the swarm's streams are gone.
        self.shared
            .gs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping would; carry on with the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, event: TransportEvent) {
        if let Some(sink) = self.sink.get() {
            sink.deliver(event);
        }
    }

    fn token(&self) -> HookToken {
        HookToken(self.next_token.fetch_add(1, Ordering::Relaxed))
    }

    fn gs(&self) -> Option<GraphSync> {
        self.gs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first data-transfer message found under `names`, decoded.
    fn message_in(
        &self,
        extensions: &Extensions,
        names: &[&str],
    ) -> Option<Result<Message, String>> {
        message_in_extensions(extensions, names, &self.limits)
    }

    /// The channel a data-transfer message on a request from or to `peer` belongs to: a
    /// request comes from the initiator, a response from the responder.
    fn channel_of(&self, peer: PeerId, message: &Message) -> ChannelId {
        if message.is_request() {
            ChannelId::new(peer, self.me, message.transfer_id())
        } else {
            ChannelId::new(self.me, peer, message.transfer_id())
        }
    }

    /// Asks the engine and waits for its answer; a dropped answer (shutdown) is a refusal.
    async fn ask(
        &self,
        event: impl FnOnce(HookToken) -> TransportEvent,
    ) -> (Option<Message>, HookResult) {
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.lock();
            if st.shut_down {
                return (None, HookResult::Fail(Fault::local("transport shut down")));
            }
            st.pending.insert(token, Pending::Answer(tx));
        }
        self.deliver(event(token));
        rx.await
            .unwrap_or((None, HookResult::Fail(Fault::local("transport shut down"))))
    }
}

/// Decodes the data-transfer message a graphsync message carries, as every hook of the
/// transport reads it: the value of the first of `names` present in `extensions`, as a
/// `/fil/datatransfer/1.2.0` message within `limits`. `None` when none of the names is
/// present; an error (the decoder's message) when the value is not a valid message.
pub fn message_in_extensions(
    extensions: &Extensions,
    names: &[&str],
    limits: &DecodeLimits,
) -> Option<Result<Message, String>> {
    let node = names.iter().find_map(|n| extensions.get(n))?;
    Some(
        Message::from_cbor_with_limits(WireVersion::V1_2, node.as_bytes(), limits)
            .map_err(|e| e.to_string()),
    )
}

/// Encodes a message into the extensions named.
fn extensions_for(message: &Message, names: &[&str]) -> Extensions {
    let mut ext = Extensions::new();
    if let Ok(node) = RawNode::new(message.to_cbor(WireVersion::V1_2)) {
        for n in names {
            ext.set(*n, node.clone());
        }
    }
    ext
}

fn merge_into(ext: &mut Extensions, more: Extensions) {
    for (k, v) in more.iter() {
        ext.set(k, v.clone());
    }
}

/// graphsync's hooks, turned into transport events.
struct DtHooks(Arc<Shared>);

#[async_trait]
impl Hooks for DtHooks {
    fn store_for_request(&self, peer: PeerId, request: &Request) -> Option<Arc<dyn Blockstore>> {
        let s = &self.0;
        let msg = s
            .message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER])?
            .ok()?;
        let channel = s.channel_of(peer, &msg);
        s.lock().stores.get(&channel).cloned()
    }

    fn outgoing_request(&self, peer: PeerId, request: &Request) -> Extensions {
        // Go's outgoing-request hook: the channel is open once its request leaves.
        let s = &self.0;
        if let Some(Ok(msg)) = s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) {
            let channel = if msg.is_request() {
                ChannelId::new(s.me, peer, msg.transfer_id())
            } else {
                ChannelId::new(peer, s.me, msg.transfer_id())
            };
            s.lock().outgoing_ids.insert(request.id, channel);
            s.deliver(TransportEvent::ChannelOpened { channel });
        }
        Extensions::new()
    }

    fn request_queued(&self, peer: PeerId, request: &Request) {
        let s = &self.0;
        let Some(Ok(msg)) = s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) else {
            return;
        };
        if msg.message_type() == MessageType::New {
            let channel = s.channel_of(peer, &msg);
            s.deliver(TransportEvent::TransferQueued { channel });
        }
    }

    async fn incoming_request(&self, peer: PeerId, request: &Request) -> RequestDecision {
        let s = &self.0;
        let msg = match s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) {
            None => {
                return RequestDecision::Reject(ResponseStatus::RequestRejected, Extensions::new());
            }
            Some(Err(_)) => {
                return RequestDecision::Reject(
                    ResponseStatus::RequestFailedUnknown,
                    Extensions::new(),
                );
            }
            Some(Ok(m)) => m,
        };
        let channel = s.channel_of(peer, &msg);
        let key = (peer, request.id);
        let opening = matches!(msg.message_type(), MessageType::New | MessageType::Restart);
        // What the graphsync request asks for. A pull's opening request names it too, and
        // must name the same: the validator approved that root and selector, not another.
        let wanted = request.root.zip(
            request
                .selector
                .as_ref()
                .and_then(|n| DagCbor::from_bytes(n.as_bytes().to_vec()).ok()),
        );
        let Some((root, selector)) = wanted else {
            return RequestDecision::Reject(
                ResponseStatus::RequestFailedUnknown,
                Extensions::new(),
            );
        };
        let same_data = |sv: &Serving| {
            sv.accepted && sv.channel == channel && sv.root == root && sv.selector == selector.cid()
        };
        // The same request again (same id, same root and selector) is a requester resuming
        // after its own pause: its original opening message is not news to the engine.
        let repeat = s.lock().serving.get(&key).is_some_and(same_data);
        // A requester may also resume under a fresh id (ours does, since go-graphsync's
        // responder races a same-id re-request against the end of the cancelled response):
        // a request for the data of a channel we serve, validated already.
        // Whether the channel's request we serve is validated (`Some(true)`), still being
        // validated (`None`), or not ours to continue (`Some(false)`).
        let validated = || {
            let st = s.lock();
            match st
                .serving_channels
                .get(&channel)
                .and_then(|k| st.serving.get(k))
            {
                Some(sv) if !sv.accepted && sv.channel == channel => None,
                Some(sv) => Some(same_data(sv)),
                None => Some(false),
            }
        };
        let mut continuing = repeat || validated() == Some(true);
        if !opening && !continuing {
            // A requester that paused and resumed at once resumes (under a fresh id) while
            // its opening request is still being validated: wait for the answer, not refuse.
            let wait = async {
                loop {
                    let answered = s.answered.notified();
                    match validated() {
                        Some(ok) => return ok,
                        None => answered.await,
                    }
                }
            };
            continuing = tokio::time::timeout(Duration::from_secs(60), wait)
                .await
                .unwrap_or(false);
        }
        if let Message::Request(r) = &msg {
            // Anything but an opening request may only ride in a request already validated.
            let allowed = if opening {
                r.base_cid == Some(root)
                    && r.selector
                        .as_ref()
                        .is_some_and(|sel| sel.same_node(&selector))
            } else {
                continuing
            };
            if !allowed {
                return RequestDecision::Reject(ResponseStatus::RequestRejected, Extensions::new());
            }
        }
        let mut pending = Extensions::new();
        {
            let mut st = s.lock();
            if let Some(old) = st.serving_channels.insert(channel, key)
                && old != key
            {
                // The old response is cancelled but kept until it ends: the blocks it still
                // writes were sent, and count as sent.
                if let Some(gs) = s.gs() {
                    tokio::spawn(async move { gs.cancel_response(old.0, old.1).await });
                }
            }
            st.serving.entry(key).or_insert_with(|| Serving {
                channel,
                root,
                selector: selector.cid(),
                accepted: false,
                queued: VecDeque::new(),
            });
            for m in st.stashed.remove(&channel).unwrap_or_default() {
                merge_into(&mut pending, extensions_for(&m, &[EXTENSION_DATA_TRANSFER]));
            }
        }
        if repeat && opening {
            return RequestDecision::Accept(pending);
        }
        let (reply, result) = match msg {
            // A push's responder asking for the data it accepted.
            Message::Response(response) => {
                s.ask(|token| TransportEvent::ResponseReceived {
                    from: peer,
                    response,
                    data_request: Some(DataRequest {
                        token,
                        root,
                        selector,
                    }),
                })
                .await
            }
            // A pull's initiator opening (or re-opening) its channel.
            Message::Request(request) => {
                s.ask(|token| TransportEvent::RequestReceived {
                    token,
                    from: peer,
                    request,
                })
                .await
            }
        };
        if let Some(m) = reply {
            merge_into(
                &mut pending,
                extensions_for(&m, &[EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER]),
            );
        }
        if !matches!(result, HookResult::Fail(_))
            && let Some(sv) = s.lock().serving.get_mut(&key)
            && sv.channel == channel
        {
            sv.accepted = true;
        }
        let decision = match result {
            HookResult::Continue | HookResult::Resume => RequestDecision::Accept(pending),
            HookResult::Pause => RequestDecision::Pause(pending),
            HookResult::Fail(_) => {
                let mut st = s.lock();
                st.serving.remove(&key);
                if st.serving_channels.get(&channel) == Some(&key) {
                    st.serving_channels.remove(&channel);
                }
                RequestDecision::Reject(ResponseStatus::RequestRejected, pending)
            }
        };
        s.answered.notify_waiters();
        decision
    }

    async fn outgoing_block(
        &self,
        peer: PeerId,
        id: RequestId,
        block: &OutgoingBlock,
    ) -> (BlockDecision, Extensions) {
        let s = &self.0;
        // Blocks the requester already has are not news: Go only reports blocks that go out.
        if !block.sent {
            return (BlockDecision::Continue, Extensions::new());
        }
        let Some(channel) = s.lock().serving.get(&(peer, id)).map(|sv| sv.channel) else {
            return (BlockDecision::Continue, Extensions::new());
        };
        let (reply, result) = s
            .ask(|token| TransportEvent::DataQueued {
                token,
                channel,
                size: block.size,
                index: block.index,
                unique: true,
            })
            .await;
        // Under outgoing-block/1.1 only, though Go's responders also copy it under 1.1: every
        // Go requester that knows 1.1 (v1.15, v2) reads both names as two messages, so a
        // voucher result under both was a payment request taken twice, and a Go client paid
        // twice (found by the interop suite).
        let ext = reply.map_or_else(Extensions::new, |m| {
            extensions_for(&m, &[EXTENSION_OUTGOING_BLOCK])
        });
        if let Some(sv) = s.lock().serving.get_mut(&(peer, id)) {
            sv.queued.push_back((block.cid, block.index));
        }
        match result {
            HookResult::Continue | HookResult::Resume => (BlockDecision::Continue, ext),
            HookResult::Pause => (BlockDecision::Pause, ext),
            HookResult::Fail(_) => {
                if let Some(gs) = s.gs() {
                    tokio::spawn(async move { gs.cancel_response(peer, id).await });
                }
                (BlockDecision::Pause, ext)
            }
        }
    }

    fn block_sent(&self, peer: PeerId, id: RequestId, cid: Cid, size: u64) {
        let s = &self.0;
        let found = {
            let mut st = s.lock();
            st.serving.get_mut(&(peer, id)).and_then(|sv| {
                let at = sv.queued.iter().position(|(c, _)| *c == cid)?;
                let (_, index) = sv.queued.remove(at)?;
                Some((sv.channel, index))
            })
        };
        if let Some((channel, index)) = found {
            s.deliver(TransportEvent::DataSent {
                channel,
                size,
                index,
                unique: true,
            });
        }
    }

    fn incoming_block(&self, _peer: PeerId, id: RequestId, block: &IncomingBlock) -> BlockDecision {
        let s = &self.0;
        if !block.present {
            return BlockDecision::Continue;
        }
        let token = s.token();
        let channel = {
            let mut st = s.lock();
            let Some(channel) = st.outgoing_ids.get(&id).copied() else {
                return BlockDecision::Continue;
            };
            if st.shut_down {
                return BlockDecision::Continue;
            }
            st.pending.insert(token, Pending::Received(channel));
            channel
        };
        s.deliver(TransportEvent::DataReceived {
            token,
            channel,
            size: block.size,
            index: block.index,
            unique: block.on_wire,
        });
        // The engine answers asynchronously; a pause or cancel is applied when it does.
        BlockDecision::Continue
    }

    fn incoming_response(&self, peer: PeerId, response: &Response) {
        let s = &self.0;
        let Some(channel) = s.lock().outgoing_ids.get(&response.id).copied() else {
            return;
        };
        // The responder queued our request behind others: the channel waits, it is not lost.
        if response.status == ResponseStatus::RequestAcknowledged {
            s.deliver(TransportEvent::TransferQueued { channel });
        }
        let first = s.message_in(
            &response.extensions,
            &[EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER],
        );
        let block = s.message_in(&response.extensions, &[EXTENSION_OUTGOING_BLOCK]);
        let mut seen: Option<Message> = None;
        for m in [first, block].into_iter().flatten().flatten() {
            if seen.as_ref() == Some(&m) || s.channel_of(peer, &m) != channel {
                continue;
            }
            seen = Some(m.clone());
            match m {
                Message::Response(response) => s.deliver(TransportEvent::ResponseReceived {
                    from: peer,
                    response,
                    data_request: None,
                }),
                Message::Request(request) => {
                    let token = s.token();
                    s.lock().pending.insert(token, Pending::InResponse(channel));
                    s.deliver(TransportEvent::RequestReceived {
                        token,
                        from: peer,
                        request,
                    });
                }
            }
        }
    }

    fn request_updated(&self, peer: PeerId, request: &Request) {
        let s = &self.0;
        let Some(Ok(msg)) = s.message_in(&request.extensions, &[EXTENSION_DATA_TRANSFER]) else {
            return;
        };
        // An update can overtake the incoming-request hook of its own request (that hook runs
        // on the response's task), so the channel comes from the message when the request is
        // not registered yet; the engine checks the channel exists.
        let channel = s.channel_of(peer, &msg);
        let registered = s
            .lock()
            .serving
            .get(&(peer, request.id))
            .map(|sv| sv.channel);
        if registered.is_some_and(|c| c != channel) {
            return;
        }
        match msg {
            Message::Response(response) => s.deliver(TransportEvent::ResponseReceived {
                from: peer,
                response,
                data_request: None,
            }),
            Message::Request(req) => {
                let token = s.token();
                s.lock()
                    .pending
                    .insert(token, Pending::Updated(peer, request.id));
                s.deliver(TransportEvent::RequestReceived {
                    token,
                    from: peer,
                    request: req,
                });
            }
        }
    }

    fn completed_response(&self, peer: PeerId, id: RequestId, status: ResponseStatus) {
        let s = &self.0;
        let channel = {
            let mut st = s.lock();
            let Some(channel) = st.serving.get(&(peer, id)).map(|sv| sv.channel) else {
                return;
            };
            // A response a newer request of the channel replaced says nothing of the
            // channel (go-data-transfer completes the channel here; we do not).
            if st.serving_channels.get(&channel) != Some(&(peer, id)) {
                st.serving.remove(&(peer, id));
                return;
            }
            // A cancelled response is either a requester's pause or a cancel the engine
            // hears of through the data-transfer network.
            if status == ResponseStatus::RequestCancelled {
                return;
            }
            st.serving.remove(&(peer, id));
            st.serving_channels.remove(&channel);
            channel
        };
        // Our walk of our own DAG stopped short (blocks we lack, a store that failed, a
        // limit): the fault is ours, not the requester's.
        let result = if status == ResponseStatus::RequestCompletedFull {
            Ok(())
        } else {
            Err(Fault::local(format!(
                "graphsync response to peer {peer} did not complete: response status code {status:?}"
            )))
        };
        s.deliver(TransportEvent::ChannelCompleted { channel, result });
    }

    fn requestor_cancelled(&self, peer: PeerId, id: RequestId) {
        // A replaced response the requester cancelled is over; the current one may resume.
        let mut st = self.0.lock();
        if let Some(channel) = st.serving.get(&(peer, id)).map(|sv| sv.channel)
            && st.serving_channels.get(&channel) != Some(&(peer, id))
        {
            st.serving.remove(&(peer, id));
        }
    }

    fn network_error(&self, peer: PeerId, error: &str) {
        let s = &self.0;
        let (sending, receiving): (Vec<ChannelId>, Vec<ChannelId>) = {
            let st = s.lock();
            (
                st.serving_channels
                    .iter()
                    .filter(|(_, (p, _))| *p == peer)
                    .map(|(c, _)| *c)
                    .collect(),
                st.outgoing
                    .keys()
                    .filter(|c| c.initiator == peer || c.responder == peer)
                    .copied()
                    .collect(),
            )
        };
        for channel in sending {
            s.deliver(TransportEvent::SendDataError {
                channel,
                error: error.to_owned(),
            });
        }
        for channel in receiving {
            s.deliver(TransportEvent::ReceiveDataError {
                channel,
                error: error.to_owned(),
            });
        }
    }
}

/// Counts the blocks at the start of the walk that `store` already holds: what a restarted
/// request asks the sender to skip.
fn held_prefix(
    store: &dyn Blockstore,
    root: Cid,
    selector: &DagCbor,
    config: &TraversalConfig,
) -> u64 {
    let Ok(selector) = Selector::from_dag_cbor(selector.as_bytes()) else {
        return 0;
    };
    // Our own store's blocks were checked when they arrived: no need to hash them again.
    let config = TraversalConfig {
        verify: false,
        ..config.clone()
    };
    let mut walk = Traversal::new(root, selector, config);
    let mut held = 0;
    loop {
        match walk.advance(&mut NoVisitor) {
            Ok(Step::NeedBlock(cid)) => match store.get(&cid) {
                Ok(Some(data)) => {
                    if walk.provide(Some(&data), &mut NoVisitor).is_err() {
                        return held;
                    }
                    held += 1;
                }
                _ => return held,
            },
            Ok(Step::Done) | Err(_) => return held,
        }
    }
}

/// Carries out commands in order.
async fn execute_commands(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<TransportCommand>) {
    while let Some(cmd) = rx.recv().await {
        if shared.lock().shut_down {
            continue;
        }
        let Some(gs) = shared.gs() else { continue };
        match cmd {
            TransportCommand::OpenChannel {
                data_sender,
                channel,
                root,
                selector,
                message,
                restart,
            } => {
                let open = Open {
                    data_sender,
                    channel,
                    root,
                    selector,
                    message,
                    restart,
                };
                open_channel(&shared, &gs, open, 0).await
            }
            TransportCommand::CloseChannel { channel }
            | TransportCommand::CleanupChannel { channel } => {
                let (out, serving) = {
                    let mut st = shared.lock();
                    let out = st.outgoing.remove(&channel);
                    let serving = st.serving_channels.remove(&channel);
                    // The channel's responses, the replaced ones too.
                    st.serving.retain(|_, sv| sv.channel != channel);
                    st.stores.remove(&channel);
                    st.stashed.remove(&channel);
                    (out, serving)
                };
                if let Some(o) = out {
                    o.closed.store(true, Ordering::SeqCst);
                    if let Some(c) = o.control {
                        c.cancel().await;
                    }
                }
                if let Some((peer, id)) = serving {
                    gs.cancel_response(peer, id).await;
                }
            }
            TransportCommand::PauseChannel { channel } => {
                let (control, serving) = {
                    let st = shared.lock();
                    (
                        st.outgoing.get(&channel).and_then(|o| o.control.clone()),
                        st.serving_channels.get(&channel).copied(),
                    )
                };
                if let Some(c) = control {
                    c.pause().await;
                } else if let Some((peer, id)) = serving {
                    gs.pause_response(peer, id).await;
                }
            }
            TransportCommand::ResumeChannel { channel, message } => {
                let ext = message.as_ref().map_or_else(Extensions::new, |m| {
                    extensions_for(m, &[EXTENSION_DATA_TRANSFER])
                });
                let (control, serving) = {
                    let mut st = shared.lock();
                    let control = st.outgoing.get(&channel).and_then(|o| o.control.clone());
                    let serving = st.serving_channels.get(&channel).copied();
                    if control.is_none()
                        && serving.is_none()
                        && let Some(m) = message
                    {
                        st.stashed.entry(channel).or_default().push(m);
                    }
                    (control, serving)
                };
                if let Some(c) = control {
                    c.unpause(ext).await;
                } else if let Some((peer, id)) = serving {
                    gs.unpause_response(peer, id, ext).await;
                }
            }
            TransportCommand::HookResult {
                token,
                message,
                result,
                ..
            } => hook_result(&shared, &gs, token, message, result).await,
        }
    }
}

async fn hook_result(
    shared: &Shared,
    gs: &GraphSync,
    token: HookToken,
    message: Option<Message>,
    result: HookResult,
) {
    let Some(pending) = shared.lock().pending.remove(&token) else {
        return;
    };
    match pending {
        Pending::Answer(tx) => {
            let _ = tx.send((message, result));
        }
        Pending::Received(channel) | Pending::InResponse(channel) => {
            let (control, closed) = {
                let st = shared.lock();
                match st.outgoing.get(&channel) {
                    Some(o) => (o.control.clone(), o.closed.clone()),
                    None => return,
                }
            };
            let Some(control) = control else { return };
            if let Some(m) = message {
                control
                    .unpause(extensions_for(&m, &[EXTENSION_DATA_TRANSFER]))
                    .await;
            }
            match result {
                HookResult::Pause => control.pause().await,
                HookResult::Fail(_) => {
                    closed.store(true, Ordering::SeqCst);
                    control.cancel().await;
                }
                HookResult::Continue | HookResult::Resume => {}
            }
        }
        Pending::Updated(peer, id) => {
            if let Some(m) = message {
                gs.send_extensions(peer, id, extensions_for(&m, &[EXTENSION_DATA_TRANSFER]))
                    .await;
            }
            match result {
                HookResult::Pause => gs.pause_response(peer, id).await,
                HookResult::Fail(_) => gs.cancel_response(peer, id).await,
                HookResult::Continue | HookResult::Resume => {}
            }
        }
    }
}

/// What opening (or re-opening) a channel's request needs.
#[derive(Clone)]
struct Open {
    data_sender: PeerId,
    channel: ChannelId,
    root: Cid,
    selector: DagCbor,
    message: Message,
    restart: Option<Box<ChannelState>>,
}

/// Sends a channel's graphsync request; `busy` is how many busy refusals came before it.
async fn open_channel(shared: &Arc<Shared>, gs: &GraphSync, open: Open, busy: u32) {
    let Open {
        data_sender,
        channel,
        root,
        ref selector,
        ref message,
        ref restart,
    } = open;
    let fail = |error: String| {
        shared.deliver(TransportEvent::OpenFailed { channel, error });
    };
    let (store, old) = {
        let mut st = shared.lock();
        let store = st
            .stores
            .get(&channel)
            .cloned()
            .unwrap_or_else(|| shared.default_store.clone());
        (store, st.outgoing.remove(&channel))
    };
    // A re-open replaces the request in flight.
    if let Some(o) = old {
        o.closed.store(true, Ordering::SeqCst);
        if let Some(c) = o.control {
            c.cancel().await;
        }
    }
    let mut ext = extensions_for(message, &[EXTENSION_DATA_TRANSFER]);
    if ext.get(EXTENSION_DATA_TRANSFER).is_none() {
        return fail("the data-transfer message could not be encoded".into());
    }
    if restart.is_some() || shared.skip_held_on_open {
        // A walk of the blocks at hand: off the async workers (a million blocks take a while).
        let held = {
            let (store, selector, traversal) =
                (store.clone(), selector.clone(), shared.traversal.clone());
            tokio::task::spawn_blocking(move || held_prefix(&*store, root, &selector, &traversal))
                .await
                .unwrap_or(0)
        };
        if held > 0 {
            ext.set(
                DO_NOT_SEND_FIRST_BLOCKS,
                datatransfer_graphsync::responder::encode_skip_count(held),
            );
        }
    }
    let Ok(selector) = RawNode::new(selector.as_bytes().to_vec()) else {
        return fail("the selector is not valid DAG-CBOR".into());
    };
    let closed = Arc::new(AtomicBool::new(false));
    // Registered before the request leaves, so its first blocks find it.
    shared.lock().outgoing.insert(
        channel,
        Outgoing {
            control: None,
            closed: closed.clone(),
        },
    );
    let handle = match gs
        .request_into(data_sender, root, selector, ext, store.clone())
        .await
    {
        Ok(h) => h,
        Err(e) => {
            shared.lock().outgoing.remove(&channel);
            return fail(e.to_string());
        }
    };
    let registered = {
        let mut st = shared.lock();
        match st.outgoing.get_mut(&channel) {
            Some(o) if Arc::ptr_eq(&o.closed, &closed) => {
                o.control = Some(handle.control());
                true
            }
            _ => false,
        }
    };
    if !registered {
        // Closed while the request was being sent.
        handle.control().cancel().await;
        return;
    }
    tokio::spawn(watch_request(
        shared.clone(),
        open,
        busy,
        handle,
        closed,
        store,
    ));
}

/// Opens the channel's request again after `wait`, unless it was closed meanwhile. (A named
/// future type: `open_channel` and `watch_request` would otherwise be one recursive future.)
fn reopen_later(
    shared: Arc<Shared>,
    open: Open,
    busy: u32,
    wait: Duration,
    closed: Arc<AtomicBool>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        tokio::time::sleep(wait).await;
        if closed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(gs) = shared.gs() {
            open_channel(&shared, &gs, open, busy).await;
        }
    })
}

/// Follows one of our requests to its end and reports how it ended. A request that got
/// every block completes only once `store` has made them durable.
async fn watch_request(
    shared: Arc<Shared>,
    open: Open,
    busy: u32,
    mut handle: RequestHandle,
    closed: Arc<AtomicBool>,
    store: Arc<dyn Blockstore>,
) {
    let channel = open.channel;
    let id = handle.id;
    let mut result = Err(GraphSyncError::Closed);
    while let Some(ev) = handle.next().await {
        if let RequestEvent::Completed(r) = ev {
            result = r;
            break;
        }
    }
    // A busy responder (its queue for us is full) is asked again later; the channel stays
    // registered meanwhile, so closing it stops the retry.
    let retry = matches!(
        result,
        Err(GraphSyncError::Verify(
            datatransfer_graphsync::requester::VerifyError::Failed(
                ResponseStatus::RequestFailedBusy
            )
        ))
    ) && busy < shared.max_busy_retries;
    {
        let mut st = shared.lock();
        st.outgoing_ids.remove(&id);
        if let Some(o) = st.outgoing.get_mut(&channel)
            && Arc::ptr_eq(&o.closed, &closed)
        {
            if retry {
                o.control = None;
            } else {
                st.outgoing.remove(&channel);
            }
        }
    }
    if closed.load(Ordering::SeqCst) {
        return;
    }
    if retry {
        shared.deliver(TransportEvent::TransferQueued { channel });
        let wait = shared.busy_retry_backoff * 2u32.saturating_pow(busy.min(5));
        tokio::spawn(reopen_later(shared, open, busy + 1, wait, closed));
        return;
    }
    let event = match result {
        Ok(ResponseStatus::RequestCompletedFull) => TransportEvent::ChannelCompleted {
            channel,
            result: match tokio::task::spawn_blocking(move || store.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Fault::local(format!(
                    "the received blocks could not be stored: {e}"
                ))),
                Err(e) => Err(Fault::local(format!(
                    "the received blocks could not be stored: {e}"
                ))),
            },
        },
        // Go leaves a responder's cancel to the data-transfer message that comes with it.
        Err(GraphSyncError::Verify(datatransfer_graphsync::requester::VerifyError::Failed(
            ResponseStatus::RequestCancelled,
        ))) => return,
        Ok(status) => TransportEvent::ChannelCompleted {
            channel,
            result: Err(Fault::PeerFailed(format!(
                "graphsync request failed to complete: the responder lacked blocks ({status:?})"
            ))),
        },
        Err(GraphSyncError::Network(e)) => TransportEvent::Disconnected {
            channel,
            error: format!("graphsync request failed: {e}"),
        },
        // go-graphsync sends a block only once to a peer among the responses it is serving
        // that peer: while the response to a request we replaced (a restart, a reconnect)
        // still runs there, the new one says "present" for the blocks the old one sent, which
        // never reached us. A restart after the monitor's backoff asks again, by then alone;
        // the monitor's restart limit bounds a responder that keeps doing it.
        Err(GraphSyncError::Verify(
            datatransfer_graphsync::requester::VerifyError::BlockNotSent(cid),
        )) => TransportEvent::Disconnected {
            channel,
            error: format!(
                "graphsync request failed: the responder did not send block {cid}, which \
                     go-graphsync withholds while an earlier response to us still holds it"
            ),
        },
        Err(e) => TransportEvent::ChannelCompleted {
            channel,
            result: Err(
                fault_of(&e).map_message(|m| format!("graphsync request failed to complete: {m}"))
            ),
        },
    };
    shared.deliver(event);
}

/// Whose fault a failed request of ours is: our store's, one of our limits', or the
/// responder's (its data failed verification, or it failed the request).
fn fault_of(e: &GraphSyncError) -> Fault {
    use datatransfer_graphsync::requester::VerifyError as V;
    use datatransfer_ipld::traversal::TraversalError as T;
    let m = e.to_string();
    match e {
        GraphSyncError::LocalStore(_) | GraphSyncError::Closed | GraphSyncError::Cancelled => {
            Fault::LocalFailure(m)
        }
        GraphSyncError::Selector(_) => Fault::LocalLimit(m),
        GraphSyncError::Verify(V::Failed(_)) => Fault::PeerFailed(m),
        GraphSyncError::Verify(V::Traversal(t)) => match **t {
            T::TooDeep(_) | T::TooManyLinks(_) | T::Selector(_) => Fault::LocalLimit(m),
            T::Store(_) => Fault::LocalFailure(m),
            _ => Fault::PeerMisbehaved(m),
        },
        GraphSyncError::Verify(V::TooManyBuffered(_)) => Fault::PeerMisbehaved(m),
        _ => Fault::PeerMisbehaved(m),
    }
}
