//! The async shell around the [`Adapter`]: one lock over it, the hooks that wait for its
//! answers, the controls of our requests, and the queue of graphsync work it asks for.

use crate::*;

/// What the transport's clones, its hooks and its work queue share.
pub(super) struct Shared {
    pub(super) me: PeerId,
    adapter: Mutex<Adapter>,
    /// The node; taken at shutdown, so the node (whose hooks hold this) can end.
    pub(super) gs: Mutex<Option<GraphSync>>,
    pub(super) sink: OnceLock<Arc<dyn TransportEventSink>>,
    /// Hooks waiting for the adapter's answer.
    waiters: Mutex<HashMap<HookId, oneshot::Sender<HookAnswer>>>,
    next_hook: AtomicU64,
    /// The controls of our requests graphsync took: channel -> (attempt, control).
    pub(super) controls: Mutex<HashMap<ChannelId, (u64, RequestControl)>>,
    /// graphsync work, carried out in order by [`execute_actions`].
    work: mpsc::UnboundedSender<Action>,
    /// Actions sent to `work` and not yet carried out.
    pub(super) queued: AtomicUsize,
    pub(super) traversal: TraversalConfig,
}

impl Shared {
    pub(super) fn new(
        me: PeerId,
        adapter: Adapter,
        work: mpsc::UnboundedSender<Action>,
        traversal: TraversalConfig,
    ) -> Self {
        Self {
            me,
            adapter: Mutex::new(adapter),
            gs: Mutex::new(None),
            sink: OnceLock::new(),
            waiters: Mutex::new(HashMap::new()),
            next_hook: AtomicU64::new(1),
            controls: Mutex::new(HashMap::new()),
            work,
            queued: AtomicUsize::new(0),
            traversal,
        }
    }

    /// The adapter, locked. A panic while holding the lock cannot leave it half-updated in
    /// a way that matters more than stopping would; carry on with it.
    pub(super) fn adapter(&self) -> MutexGuard<'_, Adapter> {
        self.adapter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the adapter and carries out what it decided, in its order: events at once (under
    /// the lock, so they keep that order), graphsync work on the work queue, and an answer to
    /// a waiting hook at once if no work decided before it is still queued, else behind that
    /// work (a pause of a response, say, must reach graphsync before the hook of its next
    /// block is told to go on).
    pub(super) fn with<R>(&self, input: impl FnOnce(&mut Adapter) -> R) -> R {
        let mut adapter = self.adapter();
        let out = input(&mut adapter);
        while let Some(action) = adapter.poll_action() {
            match action {
                Action::Deliver(event) => {
                    if let Some(sink) = self.sink.get() {
                        sink.deliver(event);
                    }
                }
                Action::Answer { hook, answer } if self.queued.load(Ordering::Acquire) == 0 => {
                    self.answer(hook, answer);
                }
                work => {
                    self.queued.fetch_add(1, Ordering::AcqRel);
                    if self.work.send(work).is_err() {
                        self.queued.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        }
        out
    }

    /// Gives a waiting hook its answer.
    pub(super) fn answer(&self, hook: HookId, answer: HookAnswer) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hook);
        if let Some(tx) = waiter {
            let _ = tx.send(answer);
        }
    }

    /// Feeds the adapter a hook that waits for an answer, and waits for it. After `patience`
    /// without one, the adapter gives up on what the hook waits for (a validation), and the
    /// answer follows.
    pub(super) async fn ask(
        &self,
        patience: Option<Duration>,
        input: impl FnOnce(&mut Adapter, HookId),
    ) -> Option<HookAnswer> {
        let hook = HookId(self.next_hook.fetch_add(1, Ordering::Relaxed));
        let (tx, mut rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hook, tx);
        self.with(|a| input(a, hook));
        let Some(patience) = patience else {
            return rx.await.ok();
        };
        match tokio::time::timeout(patience, &mut rx).await {
            Ok(answer) => answer.ok(),
            Err(_) => {
                self.with(|a| a.give_up(hook));
                rx.await.ok()
            }
        }
    }

    pub(super) fn gs(&self) -> Option<GraphSync> {
        self.gs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The control of the channel's request `attempt`, if graphsync took it; `take` forgets it.
    pub(super) fn control(
        &self,
        channel: ChannelId,
        attempt: u64,
        take: bool,
    ) -> Option<RequestControl> {
        let mut controls = self.controls.lock().unwrap_or_else(|e| e.into_inner());
        if controls.get(&channel)?.0 != attempt {
            return None;
        }
        if take {
            controls.remove(&channel).map(|(_, c)| c)
        } else {
            controls.get(&channel).map(|(_, c)| c.clone())
        }
    }
}
