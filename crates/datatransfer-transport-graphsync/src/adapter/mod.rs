//! The transport's decisions, sans IO: which graphsync request belongs to which channel,
//! what the engine hears of each hook and how its answers steer requests and responses.
//!
//! [`Adapter`] owns everything the transport knows of its channels. Its inputs are
//! graphsync's hooks ([`Adapter::incoming_request`], [`Adapter::outgoing_block`], ...), the
//! engine's [`TransportCommand`]s ([`Adapter::command`]) and how the requests it asked for
//! went ([`Adapter::request_started`], [`Adapter::request_finished`], ...). Its outputs are
//! [`Action`]s, taken with [`Adapter::poll_action`]: events for the engine, answers to the
//! hooks that wait, and work for graphsync (send, pause, resume or cancel a request or a
//! response). It reads no clock, touches no store and spawns nothing, so a simulator can drive
//! it exactly as the async shell ([`crate::GraphsyncTransport`]) does over a real node.

use crate::*;

mod receive;
mod serve;

/// Identifies a graphsync hook that waits for the adapter's [`Action::Answer`]; chosen by the
/// caller, unique among the hooks it has waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookId(pub u64);

/// The answer to a graphsync hook that waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAnswer {
    /// The incoming-request hook's decision.
    Request(RequestDecision),
    /// The outgoing-block hook's decision and the extensions to send with the block.
    Block(BlockDecision, Extensions),
}

/// One of the channel's graphsync requests to send (we receive the channel's data).
#[derive(Clone)]
pub struct SendRequest {
    /// The channel.
    pub channel: ChannelId,
    /// Which of the channel's requests this is; the same number names it in later actions
    /// and in [`Adapter::request_started`] and [`Adapter::request_finished`].
    pub attempt: u64,
    /// The peer that has the data.
    pub to: PeerId,
    /// The root of the DAG.
    pub root: Cid,
    /// The selector.
    pub selector: DagCbor,
    /// The extensions to send (the data-transfer message among them).
    pub extensions: Extensions,
    /// The store the blocks go into.
    pub store: Arc<dyn Blockstore>,
    /// Whether to count the blocks at the start of the walk that `store` already holds and
    /// ask the sender to skip them (`graphsync/do-not-send-first-blocks`).
    pub skip_held: bool,
}

impl std::fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRequest")
            .field("channel", &self.channel)
            .field("attempt", &self.attempt)
            .field("to", &self.to)
            .field("root", &self.root)
            .field("skip_held", &self.skip_held)
            .finish_non_exhaustive()
    }
}

/// What the adapter asks of its driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Hand this to the engine.
    Deliver(TransportEvent),
    /// Answer the graphsync hook waiting under `hook`.
    Answer {
        /// The hook.
        hook: HookId,
        /// Its answer.
        answer: HookAnswer,
    },
    /// Send a graphsync request; report how it went with [`Adapter::request_started`] or
    /// [`Adapter::request_failed`], and its end with [`Adapter::request_finished`].
    SendRequest(SendRequest),
    /// Cancel one of our requests.
    CancelRequest {
        /// Its channel.
        channel: ChannelId,
        /// Which of the channel's requests.
        attempt: u64,
    },
    /// Pause one of our requests.
    PauseRequest {
        /// Its channel.
        channel: ChannelId,
        /// Which of the channel's requests.
        attempt: u64,
    },
    /// Resume one of our requests, sending `extensions` with the update.
    UnpauseRequest {
        /// Its channel.
        channel: ChannelId,
        /// Which of the channel's requests.
        attempt: u64,
        /// The extensions.
        extensions: Extensions,
    },
    /// Pause a response we serve.
    PauseResponse {
        /// The requester.
        peer: PeerId,
        /// Its request.
        id: RequestId,
    },
    /// Resume a response we serve, sending `extensions` with it.
    UnpauseResponse {
        /// The requester.
        peer: PeerId,
        /// Its request.
        id: RequestId,
        /// The extensions.
        extensions: Extensions,
    },
    /// Cancel a response we serve.
    CancelResponse {
        /// The requester.
        peer: PeerId,
        /// Its request.
        id: RequestId,
    },
    /// Send extensions on a response we serve.
    SendExtensions {
        /// The requester.
        peer: PeerId,
        /// Its request.
        id: RequestId,
        /// The extensions.
        extensions: Extensions,
    },
    /// Call [`Adapter::reopen`] with these after `wait` (a busy responder is asked again).
    ReopenAfter {
        /// The channel.
        channel: ChannelId,
        /// The request that was refused.
        attempt: u64,
        /// How long to wait.
        wait: Duration,
    },
    /// Make the blocks of the channel's completed request durable in `store`, then call
    /// [`Adapter::flushed`].
    Flush {
        /// The channel.
        channel: ChannelId,
        /// Its store.
        store: StoreRef,
    },
}

/// A channel's block store, as an [`Action`] names it.
#[derive(Clone)]
pub struct StoreRef(pub Arc<dyn Blockstore>);

impl std::fmt::Debug for StoreRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreRef(..)")
    }
}

/// The adapter's settings (the transport's, less the graphsync node's).
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// Limits on data-transfer messages read from extensions.
    pub limits: DecodeLimits,
    /// See [`GraphsyncTransportConfig::skip_held_blocks_on_open`].
    pub skip_held_blocks_on_open: bool,
    /// See [`GraphsyncTransportConfig::busy_retry_backoff`].
    pub busy_retry_backoff: Duration,
    /// See [`GraphsyncTransportConfig::max_busy_retries`].
    pub max_busy_retries: u32,
}

impl From<&GraphsyncTransportConfig> for AdapterConfig {
    fn from(c: &GraphsyncTransportConfig) -> Self {
        Self {
            limits: c.limits,
            skip_held_blocks_on_open: c.skip_held_blocks_on_open,
            busy_retry_backoff: c.busy_retry_backoff,
            max_busy_retries: c.max_busy_retries,
        }
    }
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self::from(&GraphsyncTransportConfig::default())
    }
}

/// An engine hook token waiting for its [`TransportCommand::HookResult`].
enum Pending {
    /// The incoming-request hook `hook` waits: the engine validates the request `key`
    /// asks for the channel; `extensions` go with the answer.
    Admit {
        hook: HookId,
        key: (PeerId, RequestId),
        channel: ChannelId,
        extensions: Extensions,
    },
    /// The outgoing-block hook `hook` waits to send block `cid` of response `key`.
    Block {
        hook: HookId,
        key: (PeerId, RequestId),
        cid: Cid,
        index: u64,
    },
    /// A block of one of our requests arrived: pause or cancel the request if told to.
    Received(ChannelId),
    /// A message arrived in an update of a request we serve.
    Updated(PeerId, RequestId),
    /// A request message arrived in a response to one of our requests.
    InResponse(ChannelId),
}

/// One of our graphsync requests (we receive the channel's data).
struct Outgoing {
    attempt: u64,
    /// Whether graphsync took the request (it can be paused, resumed, cancelled).
    started: bool,
    /// Set when we cancel the request, so its end is not reported.
    closed: bool,
    /// Busy refusals in a row before this request.
    busy: u32,
    open: Open,
    store: Arc<dyn Blockstore>,
    /// Pauses and resumes the engine asked for before graphsync took the request, in order:
    /// carried out once it does.
    deferred: Vec<Deferred>,
    /// Whether the request was resumed after a pause: graphsync asks again under a fresh id,
    /// which a responder that no longer serves the channel refuses.
    resumed: bool,
}

/// A pause or resume of a request graphsync has not taken yet.
enum Deferred {
    Pause,
    Resume(Extensions),
}

/// What opening (or re-opening) a channel's request needs.
#[derive(Clone)]
struct Open {
    data_sender: PeerId,
    channel: ChannelId,
    root: Cid,
    selector: DagCbor,
    message: Message,
    restart: bool,
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

/// The transport's state machine. See the [module docs](self).
pub struct Adapter {
    me: PeerId,
    config: AdapterConfig,
    default_store: Arc<dyn Blockstore>,
    next_token: u64,
    next_attempt: u64,
    pending: HashMap<HookToken, Pending>,
    /// Incoming-request hooks of requests resuming a channel whose opening request is still
    /// being validated.
    waiting: Vec<serve::Admission>,
    outgoing: HashMap<ChannelId, Outgoing>,
    outgoing_ids: HashMap<RequestId, ChannelId>,
    serving: HashMap<(PeerId, RequestId), Serving>,
    serving_channels: HashMap<ChannelId, (PeerId, RequestId)>,
    stores: HashMap<ChannelId, Arc<dyn Blockstore>>,
    /// Messages to attach to the channel's next graphsync response (a resume that came before
    /// the request).
    stashed: HashMap<ChannelId, Vec<Message>>,
    shut_down: bool,
    actions: VecDeque<Action>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("me", &self.me)
            .field("outgoing", &self.outgoing.len())
            .field("serving", &self.serving.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Adapter {
    /// The adapter of the node `me`, whose channels use `default_store` unless
    /// [`Adapter::use_store`] names another.
    pub fn new(me: PeerId, default_store: Arc<dyn Blockstore>, config: AdapterConfig) -> Self {
        Self {
            me,
            config,
            default_store,
            next_token: 1,
            next_attempt: 1,
            pending: HashMap::new(),
            waiting: Vec::new(),
            outgoing: HashMap::new(),
            outgoing_ids: HashMap::new(),
            serving: HashMap::new(),
            serving_channels: HashMap::new(),
            stores: HashMap::new(),
            stashed: HashMap::new(),
            shut_down: false,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, in the order decided.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Has the channel read and write its blocks in `store` instead of the default one.
    pub fn use_store(&mut self, channel: ChannelId, store: Arc<dyn Blockstore>) {
        self.stores.insert(channel, store);
    }

    /// How many channels have requests sent or responses served.
    pub fn open_channels(&self) -> usize {
        self.outgoing.len() + self.serving_channels.len()
    }

    /// The channel whose data the response to `peer`'s request `id` carries, if we serve it.
    pub fn serving_channel(&self, peer: PeerId, id: RequestId) -> Option<ChannelId> {
        self.serving.get(&(peer, id)).map(|sv| sv.channel)
    }

    /// Carries out one of the engine's commands.
    pub fn command(&mut self, command: TransportCommand) {
        if self.shut_down {
            return;
        }
        match command {
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
                    restart: restart.is_some(),
                };
                self.open(open, 0);
            }
            TransportCommand::CloseChannel { channel }
            | TransportCommand::CleanupChannel { channel } => self.close(channel),
            TransportCommand::PauseChannel { channel } => {
                if let Some(o) = self.outgoing.get_mut(&channel) {
                    let attempt = o.attempt;
                    if o.started {
                        self.push(Action::PauseRequest { channel, attempt });
                    } else {
                        o.deferred.push(Deferred::Pause);
                    }
                } else if let Some(&(peer, id)) = self.serving_channels.get(&channel) {
                    self.push(Action::PauseResponse { peer, id });
                }
            }
            TransportCommand::ResumeChannel { channel, message } => {
                let extensions = message.as_ref().map_or_else(Extensions::new, |m| {
                    extensions_for(m, &[EXTENSION_DATA_TRANSFER])
                });
                if let Some(o) = self.outgoing.get_mut(&channel) {
                    let attempt = o.attempt;
                    o.resumed = true;
                    if o.started {
                        self.push(Action::UnpauseRequest {
                            channel,
                            attempt,
                            extensions,
                        });
                    } else {
                        o.deferred.push(Deferred::Resume(extensions));
                    }
                } else if let Some(&(peer, id)) = self.serving_channels.get(&channel) {
                    self.push(Action::UnpauseResponse {
                        peer,
                        id,
                        extensions,
                    });
                } else if let Some(m) = message {
                    self.stashed.entry(channel).or_default().push(m);
                }
            }
            TransportCommand::HookResult {
                token,
                message,
                result,
                ..
            } => self.hook_result(token, message, result),
        }
    }

    /// Stops: hooks waiting for the engine are refused, requests in flight are closed (their
    /// ends are not reported), and later inputs are ignored.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        // First, so refusing a hook starts no new work (a resume released by a refused
        // validation is refused too) and only answers go out.
        self.shut_down = true;
        let refusal = HookResult::Fail(Fault::local("transport shut down"));
        while !self.pending.is_empty() {
            let mut tokens: Vec<HookToken> = self.pending.keys().copied().collect();
            tokens.sort();
            for token in tokens {
                self.hook_result(token, None, refusal.clone());
            }
        }
        for a in std::mem::take(&mut self.waiting) {
            self.refuse(a.hook, ResponseStatus::RequestRejected);
        }
        for o in self.outgoing.values_mut() {
            o.closed = true;
        }
    }

    fn hook_result(&mut self, token: HookToken, message: Option<Message>, result: HookResult) {
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        match pending {
            Pending::Admit {
                hook,
                key,
                channel,
                extensions,
            } => self.admitted(hook, key, channel, extensions, message, result),
            Pending::Block {
                hook,
                key,
                cid,
                index,
            } => self.block_decided(hook, key, cid, index, message, result),
            Pending::Received(channel) | Pending::InResponse(channel) => {
                self.steer_request(channel, message, result)
            }
            Pending::Updated(peer, id) => {
                if let Some(m) = message {
                    let extensions = extensions_for(&m, &[EXTENSION_DATA_TRANSFER]);
                    self.push(Action::SendExtensions {
                        peer,
                        id,
                        extensions,
                    });
                }
                match result {
                    HookResult::Pause => self.push(Action::PauseResponse { peer, id }),
                    HookResult::Fail(_) => self.push(Action::CancelResponse { peer, id }),
                    HookResult::Continue | HookResult::Resume => {}
                }
            }
        }
    }

    /// Closes the channel's request and response (a replaced response too) and forgets it.
    fn close(&mut self, channel: ChannelId) {
        if let Some(o) = self.outgoing.remove(&channel) {
            self.push(Action::CancelRequest {
                channel,
                attempt: o.attempt,
            });
        }
        if let Some((peer, id)) = self.serving_channels.remove(&channel) {
            self.push(Action::CancelResponse { peer, id });
        }
        self.serving.retain(|_, sv| sv.channel != channel);
        self.stores.remove(&channel);
        self.stashed.remove(&channel);
    }

    fn push(&mut self, action: Action) {
        // Once shut down, hooks that wait are answered (refused), and nothing else is done.
        if self.shut_down && !matches!(action, Action::Answer { .. }) {
            return;
        }
        self.actions.push_back(action);
    }

    fn deliver(&mut self, event: TransportEvent) {
        self.push(Action::Deliver(event));
    }

    fn token(&mut self) -> HookToken {
        let t = HookToken(self.next_token);
        self.next_token += 1;
        t
    }

    /// The first data-transfer message found under `names`, decoded.
    fn message_in(
        &self,
        extensions: &Extensions,
        names: &[&str],
    ) -> Option<Result<Message, String>> {
        message_in_extensions(extensions, names, &self.config.limits)
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
}

#[cfg(test)]
mod tests;
