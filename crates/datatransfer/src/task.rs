//! The one task that owns the engine: API calls, network messages, transport events,
//! validator answers, disconnects and timers come in on channels; the engine's outputs go out
//! to the network (one ordered sender per peer), the transport, the validators (each call on
//! its own task), the store (one ordered writer that batches) and the subscribers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use datatransfer_fsm::{
    Engine, OnSendFailure, Output, Transport, TransportEvent, TransportEventSink, UsageError,
    ValidationAnswer, ValidationCall, ValidationToken,
};
use datatransfer_network::{DataTransferNetwork, NetworkEvent};
use datatransfer_types::message::MessageType;
use datatransfer_types::store::{ChannelFilter, ChannelStore, ChannelUpdate, PurgeFinished};
use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, Event, PeerId, Status, Timestamp, TypeIdentifier,
    ValidationError, Voucher,
};
use tokio::sync::{mpsc, oneshot};

use crate::senders::{PEER_SENDER_IDLE, PeerSenders, SendDone};
use crate::store_queue::{StoreQueue, StoreSender, store_writer};
use crate::subscription::Subscriber;
use crate::validation::{RequestValidator, Revalidator};
use crate::{ManagerError, Retention, Subscription};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ManagerError>>;

/// A transport configurer with its transport: configures one channel.
pub(crate) type Configure = Arc<dyn Fn(ChannelId, &Voucher) + Send + Sync>;

/// A call on the manager.
pub(crate) enum Api {
    RegisterVoucherType(TypeIdentifier, Arc<dyn RequestValidator>, Reply<()>),
    RegisterRevalidator(TypeIdentifier, Arc<dyn Revalidator>, Reply<()>),
    RegisterResultType(TypeIdentifier, Reply<()>),
    RegisterConfigurer(TypeIdentifier, Configure, Reply<()>),
    Open {
        pull: bool,
        to: PeerId,
        voucher: Voucher,
        root: Cid,
        selector: DagCbor,
        reply: Reply<ChannelId>,
    },
    SendVoucher(ChannelId, Voucher, Reply<()>),
    Close(ChannelId, Reply<()>),
    /// Close, and hear whether the cancel message went out.
    Cancel(
        ChannelId,
        Reply<(Status, oneshot::Receiver<Result<(), String>>)>,
    ),
    Purge(PurgeFinished, Reply<u64>),
    Channels(ChannelFilter, Reply<Vec<ChannelState>>),
    Pause(ChannelId, Reply<()>),
    Resume(ChannelId, Reply<()>),
    Restart(ChannelId, Reply<()>),
    State(ChannelId, Reply<Option<ChannelState>>),
    InProgress(Reply<Vec<ChannelState>>),
    Subscribe(oneshot::Sender<Subscription>),
    Start(Reply<usize>),
    Stop(oneshot::Sender<()>),
}

/// Delivers transport events into the task.
pub(crate) struct Sink(pub(crate) mpsc::UnboundedSender<TransportEvent>);

impl TransportEventSink for Sink {
    fn deliver(&self, event: TransportEvent) {
        let _ = self.0.send(event);
    }
}

/// The engine's clock: the wall-clock time of its first reading in this process, advanced by
/// the monotonic clock since. Event times read as dates, and the monitor's deadlines never
/// jump with the system clock (an NTP step, a manual change): a clock set back an hour does
/// not hold every timer an hour longer, nor one set forward fail every channel at once.
fn now() -> Timestamp {
    static ANCHOR: OnceLock<(SystemTime, Instant)> = OnceLock::new();
    let (wall, mono) = ANCHOR.get_or_init(|| (SystemTime::now(), Instant::now()));
    Timestamp::from_system_time(*wall + mono.elapsed())
}

pub(crate) struct Inputs {
    pub(crate) api: mpsc::Receiver<Api>,
    pub(crate) network: mpsc::Receiver<NetworkEvent>,
    pub(crate) transport: mpsc::UnboundedReceiver<TransportEvent>,
    pub(crate) disconnected: mpsc::UnboundedReceiver<PeerId>,
}

pub(crate) struct EngineTask {
    pub(crate) engine: Engine,
    pub(crate) net: Arc<dyn DataTransferNetwork>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn ChannelStore>,
    pub(crate) restart_on_start: bool,
    /// Whether [`Manager::start`](crate::Manager::start) ran. Until then messages from peers
    /// and the transport's events wait in their queues, as go-data-transfer hears nothing
    /// before its `Start`: the channels in the store are not loaded yet, nor the voucher
    /// types registered, and a peer's message about a channel of before a restart would be
    /// taken as about an unknown one (a restart request answered with a cancel, say).
    started: bool,
    validators: HashMap<TypeIdentifier, Arc<dyn RequestValidator>>,
    revalidators: HashMap<TypeIdentifier, Arc<dyn Revalidator>>,
    configurers: HashMap<TypeIdentifier, Configure>,
    subscribers: Vec<Subscriber>,
    /// How many events each subscriber's queue holds.
    subscriber_queue: usize,
    senders: PeerSenders,
    store_tx: StoreSender,
    validations_tx: mpsc::UnboundedSender<(ValidationToken, ValidationAnswer)>,
    validations_rx: mpsc::UnboundedReceiver<(ValidationToken, ValidationAnswer)>,
    failures_rx: mpsc::UnboundedReceiver<(ChannelId, OnSendFailure, String)>,
    /// Cancels whose caller waits to hear whether the message went out.
    cancel_waiters: HashMap<ChannelId, SendDone>,
    /// One tracing span per running channel, closed when it ends.
    spans: HashMap<ChannelId, tracing::Span>,
    retention: Option<Retention>,
    /// Channel updates handed to the store writer and not yet written.
    pub(crate) store_queue: Arc<AtomicUsize>,
    /// A retention sweep is running.
    sweeping: Arc<AtomicBool>,
}

/// The store's channels with the engine's live state of those still open, except that a
/// record the store has as finished wins (the live copy may be a moment older).
fn merge(stored: Vec<ChannelState>, live: Vec<ChannelState>) -> Vec<ChannelState> {
    let mut all = stored;
    let index: HashMap<ChannelId, usize> = all
        .iter()
        .enumerate()
        .map(|(i, c)| (c.channel_id, i))
        .collect();
    for c in live {
        match index.get(&c.channel_id) {
            Some(&i) if all[i].status.is_terminal() => {}
            Some(&i) => all[i] = c,
            None => all.push(c),
        }
    }
    all
}

impl EngineTask {
    pub(crate) fn new(
        engine: Engine,
        net: Arc<dyn DataTransferNetwork>,
        transport: Arc<dyn Transport>,
        store: Arc<dyn ChannelStore>,
        restart_on_start: bool,
        retention: Option<Retention>,
        subscriber_queue: usize,
    ) -> Self {
        let store_queue = Arc::new(AtomicUsize::new(0));
        let queue = StoreQueue::new(store_queue.clone());
        tokio::spawn(store_writer(store.clone(), queue.clone()));
        let store_tx = StoreSender(queue);
        let (validations_tx, validations_rx) = mpsc::unbounded_channel();
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        let senders = PeerSenders::new(net.clone(), failures_tx, PEER_SENDER_IDLE);
        Self {
            engine,
            net,
            transport,
            store,
            restart_on_start,
            started: false,
            validators: HashMap::new(),
            revalidators: HashMap::new(),
            configurers: HashMap::new(),
            subscribers: Vec::new(),
            subscriber_queue,
            senders,
            store_tx,
            validations_tx,
            validations_rx,
            failures_rx,
            cancel_waiters: HashMap::new(),
            spans: HashMap::new(),
            retention,
            store_queue,
            sweeping: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) async fn run(mut self, mut inputs: Inputs) {
        let mut sweeps = self.retention.map(|r| {
            let mut every = tokio::time::interval(r.sweep_every.max(Duration::from_millis(10)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        loop {
            let sleep = self.engine.poll_timeout().map(|at| {
                let wait =
                    Duration::from_nanos(at.as_unix_nanos().saturating_sub(now().as_unix_nanos()));
                tokio::time::Instant::now() + wait
            });
            tokio::select! {
                api = inputs.api.recv() => match api {
                    Some(Api::Stop(done)) => {
                        self.stop().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(api) => self.on_api(api).await,
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                Some(ev) = inputs.network.recv(), if self.started => match ev {
                    NetworkEvent::Message { from, message, .. } => {
                        self.engine.handle_message(now(), from, message);
                    }
                    NetworkEvent::Error { from, error } => {
                        tracing::debug!(%from, %error, "unreadable data-transfer message");
                    }
                },
                Some(ev) = inputs.transport.recv(), if self.started => {
                    self.engine.handle_transport_event(now(), ev);
                }
                Some((token, answer)) = self.validations_rx.recv() => {
                    self.engine.handle_validation(now(), token, answer);
                }
                Some((channel, on_failure, error)) = self.failures_rx.recv() => {
                    self.engine.handle_send_failure(now(), channel, on_failure, &error);
                }
                Some(peer) = inputs.disconnected.recv() => self.on_disconnected(peer),
                () = sleep_until(sleep) => self.engine.handle_timeout(now()),
                _ = async {
                    match &mut sweeps {
                        Some(every) => every.tick().await,
                        None => std::future::pending().await,
                    }
                } => self.sweep(),
            }
            self.drain();
        }
    }

    /// Every channel with `peer` that is still running hears of the lost connection (Go
    /// learns it from graphsync's network errors); the monitor restarts the ones we initiated.
    fn on_disconnected(&mut self, peer: PeerId) {
        // The peer's sender task ends once it has tried what is queued; the next message
        // to the peer starts a new one.
        self.senders.forget(&peer);
        let channels: Vec<ChannelId> = self
            .engine
            .channels()
            .filter(|c| c.other_peer() == peer && c.status.is_in_progress())
            .map(|c| c.channel_id)
            .collect();
        for channel in channels {
            self.engine.handle_transport_event(
                now(),
                TransportEvent::Disconnected {
                    channel,
                    error: format!("connection to {peer} closed"),
                },
            );
        }
    }

    /// Removes finished channels past the retention limits, on a task of its own.
    fn sweep(&self) {
        let Some(r) = self.retention else {
            return;
        };
        let purge = PurgeFinished {
            finished_before: r.keep_for.map(|d| {
                Timestamp::from_unix_nanos(
                    now()
                        .as_unix_nanos()
                        .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                )
            }),
            keep_newest: r.keep_at_most,
        };
        // One sweep at a time: a slow store is not asked again while it is still at it.
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, sweeping) = (self.store.clone(), self.sweeping.clone());
        tokio::spawn(async move {
            match store.purge_finished(purge).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "retention removed finished channels"),
                Err(e) => tracing::warn!(error = %e, "retention could not purge the store"),
            }
            sweeping.store(false, Ordering::Release);
        });
    }

    async fn stop(&mut self) {
        self.drain();
        self.transport.shutdown();
        let (tx, rx) = oneshot::channel();
        self.store_tx.0.flush(tx);
        let _ = rx.await;
    }

    async fn on_api(&mut self, api: Api) {
        let t = now();
        match api {
            Api::RegisterVoucherType(ty, v, reply) => {
                let r = self.engine.register_voucher_type(ty.clone());
                if r.is_ok() {
                    self.validators.insert(ty, v);
                }
                let _ = reply.send(r.map_err(ManagerError::from));
            }
            Api::RegisterRevalidator(ty, v, reply) => {
                let r = self.engine.register_revalidator(ty.clone());
                if r.is_ok() {
                    self.revalidators.insert(ty, v);
                }
                let _ = reply.send(r.map_err(ManagerError::from));
            }
            Api::RegisterResultType(ty, reply) => {
                let r = self.engine.register_voucher_result_type(ty);
                let _ = reply.send(r.map_err(ManagerError::from));
            }
            Api::RegisterConfigurer(ty, c, reply) => {
                self.configurers.insert(ty, c);
                let _ = reply.send(Ok(()));
            }
            Api::Open {
                pull,
                to,
                voucher,
                root,
                selector,
                reply,
            } => {
                let r = if pull {
                    self.engine.open_pull(t, to, voucher, root, selector)
                } else {
                    self.engine.open_push(t, to, voucher, root, selector)
                };
                // The caller hears of the channel once its first state is stored: a crash
                // after the call returns cannot lose it. The engine goes on meanwhile.
                self.drain();
                self.reply_once_stored(reply, r.map_err(ManagerError::from));
            }
            Api::SendVoucher(id, v, reply) => {
                let r = self.engine.send_voucher(t, id, v);
                let _ = reply.send(r.map_err(ManagerError::from));
            }
            Api::Close(id, reply) => {
                // As for a cancel: the caller hears of it once the cancel is stored.
                let r = self.engine.close(t, id).map_err(ManagerError::from);
                self.drain();
                self.reply_once_stored(reply, r);
            }
            Api::Cancel(id, reply) => {
                let (done, told) = oneshot::channel();
                self.cancel_waiters.insert(id, done);
                let r = self.engine.close(t, id);
                // The cancel message, if the engine sent one, takes the waiter with it.
                self.drain();
                self.cancel_waiters.remove(&id);
                let status = self
                    .engine
                    .channel(&id)
                    .map(|c| c.status)
                    .or_else(|| self.engine.finished_status(&id))
                    .unwrap_or(Status::Cancelled);
                // The caller hears of it once the cancel is stored: a crash after the call
                // returns does not bring the channel back.
                self.reply_once_stored(
                    reply,
                    r.map(|()| (status, told)).map_err(ManagerError::from),
                );
            }
            Api::Purge(purge, reply) => {
                // Earlier writes land first, so a channel finished just now is seen finished;
                // the purge runs off this task.
                let (flushed_tx, flushed) = oneshot::channel();
                self.store_tx.0.flush(flushed_tx);
                let store = self.store.clone();
                tokio::spawn(async move {
                    let _ = flushed.await;
                    let r = store.purge_finished(purge).await;
                    let _ = reply.send(r.map_err(ManagerError::from));
                });
            }
            Api::Pause(id, reply) => {
                let _ = reply.send(self.engine.pause(t, id).map_err(ManagerError::from));
            }
            Api::Resume(id, reply) => {
                let _ = reply.send(self.engine.resume(t, id).map_err(ManagerError::from));
            }
            Api::Restart(id, reply) => {
                let _ = reply.send(self.engine.restart(t, id).map_err(ManagerError::from));
            }
            Api::State(id, reply) => {
                let r = match self.engine.channel(&id) {
                    Some(c) => Ok(Some(c.clone())),
                    None => {
                        // Finished channels live on in the store; let earlier writes land.
                        self.flush().await;
                        self.store.get(&id).await.map_err(ManagerError::from)
                    }
                };
                let _ = reply.send(r);
            }
            Api::Channels(filter, reply) => {
                let live: Vec<ChannelState> = self
                    .engine
                    .channels()
                    .filter(|c| filter.matches(c))
                    .cloned()
                    .collect();
                // The store is read once the writes queued so far have landed, off this task.
                let (flushed_tx, flushed) = oneshot::channel();
                self.store_tx.0.flush(flushed_tx);
                let store = self.store.clone();
                tokio::spawn(async move {
                    let _ = flushed.await;
                    let r = store.list(filter).await.map(|stored| merge(stored, live));
                    let _ = reply.send(r.map_err(ManagerError::from));
                });
            }
            Api::InProgress(reply) => {
                let list = self
                    .engine
                    .channels()
                    .filter(|c| c.status.is_in_progress())
                    .cloned()
                    .collect();
                let _ = reply.send(Ok(list));
            }
            Api::Subscribe(reply) => {
                let (subscriber, subscription) = Subscriber::new(self.subscriber_queue);
                self.subscribers.push(subscriber);
                let _ = reply.send(subscription);
            }
            Api::Start(reply) => {
                let _ = reply.send(self.start().await);
            }
            Api::Stop(_) => {}
        }
    }

    /// Answers a caller with `value` once every store write queued so far has landed, off
    /// this task (the engine goes on meanwhile): what the call changed is stored before the
    /// caller hears of it, so a crash after the call returns cannot undo it.
    fn reply_once_stored<T: Send + 'static>(&self, reply: oneshot::Sender<T>, value: T) {
        let (stored, flushed) = oneshot::channel();
        self.store_tx.0.flush(stored);
        tokio::spawn(async move {
            let _ = flushed.await;
            let _ = reply.send(value);
        });
    }

    async fn flush(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.store_tx.0.flush(tx);
        let _ = rx.await;
    }

    /// Loads the channels left in progress and, if configured, restarts them.
    async fn start(&mut self) -> Result<usize, ManagerError> {
        // The most recently finished channels, so that a late restart of one is answered as
        // before the node restarted (completed again; refused if cancelled or failed).
        let keep = self.engine.config().remembered_finished_channels;
        if keep > 0 {
            // Oldest first, so that the engine's memory keeps the newest.
            for c in self.store.recently_finished(keep).await?.iter().rev() {
                self.engine.load_finished(c);
            }
        }
        let channels = self.store.list(ChannelFilter::InProgress).await?;
        let n = channels.len();
        let ids: Vec<ChannelId> = channels.iter().map(|c| c.channel_id).collect();
        let t = now();
        for c in channels {
            self.engine.load_channel(t, c);
        }
        // What peers sent meanwhile is handled from now on, after the restarts below.
        self.started = true;
        if self.restart_on_start {
            for id in ids {
                if let Err(e) = self.engine.restart(now(), id) {
                    tracing::warn!(%id, error = %e, "restarting a channel from the store failed");
                }
            }
        }
        Ok(n)
    }

    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            self.carry_out(out);
        }
    }

    fn carry_out(&mut self, out: Output) {
        match out {
            Output::SendMessage {
                to,
                channel,
                message,
                on_failure,
            } => {
                let done = if message.message_type() == MessageType::Cancel {
                    self.cancel_waiters.remove(&channel)
                } else {
                    None
                };
                self.senders.send(to, (channel, message, on_failure, done));
            }
            Output::Transport(cmd) => self.transport.execute(cmd),
            Output::Validate { token, call } => self.validate(token, call),
            Output::Event { event, state } => {
                self.trace(&event, &state);
                self.store_tx
                    .0
                    .update(ChannelUpdate::new((*state).clone(), vec![event.clone()]));
                self.subscribers.retain(|s| s.push(&event, &state));
            }
            Output::Protect { peer, channel } => self.net.protect(peer, &channel.to_string()),
            Output::Unprotect { peer, channel } => {
                self.net.unprotect(peer, &channel.to_string());
            }
            Output::ConfigureTransport { channel, voucher } => {
                if let Some(c) = self.configurers.get(&voucher.type_id) {
                    c(channel, &voucher);
                }
            }
        }
    }

    /// Logs an event in its channel's span: lifecycle events at info, data progress at trace.
    fn trace(&mut self, event: &Event, state: &ChannelState) {
        use datatransfer_types::EventCode as E;
        let id = state.channel_id;
        let span = self.spans.entry(id).or_insert_with(|| {
            tracing::info_span!(
                "channel",
                id = %id,
                peer = %state.other_peer(),
                root = %state.base_cid,
                direction = if state.is_pull() { "pull" } else { "push" },
                initiator = state.is_initiator(),
            )
        });
        span.in_scope(|| match event.code {
            E::DataReceived
            | E::DataSent
            | E::DataQueued
            | E::DataReceivedProgress
            | E::DataSentProgress
            | E::DataQueuedProgress
            | E::Progress => tracing::trace!(
                event = ?event.code,
                bytes = state.sent.max(state.received),
                "progress"
            ),
            code => tracing::info!(
                event = ?code,
                status = ?state.status,
                bytes = state.sent.max(state.received),
                message = %event.message,
                "channel event"
            ),
        });
        if state.status.is_terminal() {
            self.spans.remove(&id);
        }
    }

    /// Runs a validator call on its own task; the answer comes back on a channel.
    fn validate(&self, token: ValidationToken, call: ValidationCall) {
        let tx = self.validations_tx.clone();
        let validators = self.validators.clone();
        let revalidators: Vec<Arc<dyn Revalidator>> = self.revalidators.values().cloned().collect();
        let by_type = self.revalidators.clone();
        tokio::spawn(async move {
            let answer = run_validation(call, &validators, &by_type, &revalidators).await;
            let _ = tx.send((token, answer));
        });
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run_validation(
    call: ValidationCall,
    validators: &HashMap<TypeIdentifier, Arc<dyn RequestValidator>>,
    by_type: &HashMap<TypeIdentifier, Arc<dyn Revalidator>>,
    revalidators: &[Arc<dyn Revalidator>],
) -> ValidationAnswer {
    let validator = |v: &Voucher| {
        validators
            .get(&v.type_id)
            .cloned()
            .ok_or_else(|| ValidationError::NoValidator(v.type_id.clone()))
    };
    match call {
        ValidationCall::ValidatePush {
            is_restart,
            channel,
            sender,
            voucher,
            base_cid,
            selector,
        } => validator(&voucher)?
            .validate_push(is_restart, channel, sender, &voucher, base_cid, &selector)
            .await
            .map(Some),
        ValidationCall::ValidatePull {
            is_restart,
            channel,
            receiver,
            voucher,
            base_cid,
            selector,
        } => validator(&voucher)?
            .validate_pull(is_restart, channel, receiver, &voucher, base_cid, &selector)
            .await
            .map(Some),
        ValidationCall::Revalidate { channel, voucher } => match by_type.get(&voucher.type_id) {
            Some(r) => r.revalidate(channel, &voucher).await.map(Some),
            None => Err(ValidationError::NoValidator(voucher.type_id.clone())),
        },
        ValidationCall::OnPullDataSent { channel, bytes } => {
            for r in revalidators {
                if let Some(v) = r.on_pull_data_sent(channel, bytes).await? {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        }
        ValidationCall::OnPushDataReceived { channel, bytes } => {
            for r in revalidators {
                if let Some(v) = r.on_push_data_received(channel, bytes).await? {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        }
        ValidationCall::OnComplete { channel } => {
            for r in revalidators {
                if let Some(v) = r.on_complete(channel).await? {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        }
    }
}

impl From<UsageError> for ManagerError {
    fn from(e: UsageError) -> Self {
        Self::Usage(e)
    }
}

/// A future that adds the time each of its polls takes to a counter: the time the task it is
/// spent working (about its CPU time, give or take the operating system's preemption).
pub(crate) struct Timed<F> {
    inner: Pin<Box<F>>,
    busy: Arc<AtomicU64>,
}

impl<F: Future> Timed<F> {
    /// Times `inner`, adding to `busy` (nanoseconds).
    pub(crate) fn new(inner: F, busy: Arc<AtomicU64>) -> Self {
        Self {
            inner: Box::pin(inner),
            busy,
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = std::time::Instant::now();
        let out = self.inner.as_mut().poll(cx);
        let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy.fetch_add(spent, Ordering::Relaxed);
        out
    }
}
