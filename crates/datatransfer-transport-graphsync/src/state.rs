//! What the transport knows of its channels: graphsync requests of ours and responses it
//! serves, by channel, and the way to the engine.

use crate::*;

/// A hook waiting for the engine's answer.
pub(super) enum Pending {
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
pub(super) struct Outgoing {
    pub(super) control: Option<RequestControl>,
    /// Set when we cancel or replace the request, so its end is not reported.
    pub(super) closed: Arc<AtomicBool>,
}

/// A graphsync request we serve (we send the channel's data).
pub(super) struct Serving {
    pub(super) channel: ChannelId,
    /// What the request asked for (the selector by CID): a re-request under the same id must
    /// ask for the same.
    pub(super) root: Cid,
    pub(super) selector: Cid,
    /// Whether the engine has let it be served (until then a repeat of it is no repeat).
    pub(super) accepted: bool,
    /// Blocks queued for sending and their walk positions, for the block-sent hook.
    pub(super) queued: VecDeque<(Cid, u64)>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) pending: HashMap<HookToken, Pending>,
    pub(super) outgoing: HashMap<ChannelId, Outgoing>,
    pub(super) outgoing_ids: HashMap<RequestId, ChannelId>,
    pub(super) serving: HashMap<(PeerId, RequestId), Serving>,
    pub(super) serving_channels: HashMap<ChannelId, (PeerId, RequestId)>,
    pub(super) stores: HashMap<ChannelId, Arc<dyn Blockstore>>,
    /// Messages to attach to the channel's next graphsync response (a resume that came before
    /// the request).
    pub(super) stashed: HashMap<ChannelId, Vec<Message>>,
    pub(super) shut_down: bool,
}

pub(super) struct Shared {
    pub(super) me: PeerId,
    pub(super) default_store: Arc<dyn Blockstore>,
    /// The node; taken at shutdown, so the node (whose hooks hold this) can end.
    pub(super) gs: Mutex<Option<GraphSync>>,
    pub(super) sink: OnceLock<Arc<dyn TransportEventSink>>,
    pub(super) state: Mutex<State>,
    pub(super) next_token: AtomicU64,
    pub(super) limits: DecodeLimits,
    pub(super) traversal: TraversalConfig,
    pub(super) skip_held_on_open: bool,
    pub(super) busy_retry_backoff: Duration,
    pub(super) max_busy_retries: u32,
    /// Woken when the engine answers a request we serve (it is validated or refused).
    pub(super) answered: tokio::sync::Notify,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping would; carry on with the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn deliver(&self, event: TransportEvent) {
        if let Some(sink) = self.sink.get() {
            sink.deliver(event);
        }
    }

    pub(super) fn token(&self) -> HookToken {
        HookToken(self.next_token.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn gs(&self) -> Option<GraphSync> {
        self.gs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first data-transfer message found under `names`, decoded.
    pub(super) fn message_in(
        &self,
        extensions: &Extensions,
        names: &[&str],
    ) -> Option<Result<Message, String>> {
        message_in_extensions(extensions, names, &self.limits)
    }

    /// The channel a data-transfer message on a request from or to `peer` belongs to: a
    /// request comes from the initiator, a response from the responder.
    pub(super) fn channel_of(&self, peer: PeerId, message: &Message) -> ChannelId {
        if message.is_request() {
            ChannelId::new(peer, self.me, message.transfer_id())
        } else {
            ChannelId::new(self.me, peer, message.transfer_id())
        }
    }

    /// Asks the engine and waits for its answer; a dropped answer (shutdown) is a refusal.
    pub(super) async fn ask(
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
