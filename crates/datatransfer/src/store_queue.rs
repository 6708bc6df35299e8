//! The queue between the engine and the channel store's writer: changes wait here, in order,
//! while the writer persists the previous batch.
//!
//! A progress-only change of a channel (new byte counts, nothing else) whose previous change
//! still waits and was progress-only too replaces it: the store gets the latest figures once.
//! So the queue holds at most one progress change per channel on top of its status changes,
//! however slow the store: it does not grow with the data moved.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use datatransfer_types::ChannelId;
use datatransfer_types::store::ChannelStore;
use datatransfer_types::store::{ChannelUpdate, Durability};
use tokio::sync::{Notify, oneshot};

/// Work for the store writer.
// Updates are moved once into the queue; boxing each would add an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum StoreWork {
    /// Persist a change.
    Update(ChannelUpdate),
    /// Answer once everything queued before it is persisted.
    Flush(oneshot::Sender<()>),
}

/// A queue of [`StoreWork`], shared by the engine task (which pushes) and the writer.
#[derive(Debug)]
pub(crate) struct StoreQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    /// How many items wait (merged progress counts once): `Manager::queue_depths`.
    depth: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<StoreWork>,
    /// The sequence number of `items[0]`.
    head: u64,
    /// Per channel: the sequence number of its newest queued change.
    newest: HashMap<ChannelId, u64>,
    closed: bool,
}

fn progress_only(w: &StoreWork) -> bool {
    matches!(w, StoreWork::Update(u) if u.durability == Durability::Progress)
}

impl StoreQueue {
    /// An empty queue that reports its depth in `depth`.
    pub(crate) fn new(depth: Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            depth,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock is held leaves plain data behind: carry on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a change, merging it into the channel's waiting progress change if both are
    /// progress-only.
    pub(crate) fn update(&self, update: ChannelUpdate) {
        {
            let mut q = self.lock();
            if !Self::queue(&mut q, update) {
                return;
            }
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Merges or queues `update`; true if it was queued.
    fn queue(q: &mut Inner, update: ChannelUpdate) -> bool {
        let id = update.state.channel_id;
        if update.durability == Durability::Progress
            && let Some(&seq) = q.newest.get(&id)
            && let Some(last) = seq
                .checked_sub(q.head)
                .and_then(|i| q.items.get_mut(i as usize))
            && progress_only(last)
        {
            *last = StoreWork::Update(update);
            return false;
        }
        let seq = q.head + q.items.len() as u64;
        q.items.push_back(StoreWork::Update(update));
        q.newest.insert(id, seq);
        true
    }

    /// Queues a flush: `done` hears once everything before it is persisted.
    pub(crate) fn flush(&self, done: oneshot::Sender<()>) {
        let mut q = self.lock();
        q.items.push_back(StoreWork::Flush(done));
        self.depth.fetch_add(1, Ordering::Relaxed);
        drop(q);
        self.ready.notify_one();
    }

    /// No more work will come: the writer ends once the queue is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Up to `max` items, oldest first, waiting for one if none is there; `None` once the
    /// queue is closed and empty.
    pub(crate) async fn take(&self, max: usize) -> Option<Vec<StoreWork>> {
        loop {
            {
                let mut q = self.lock();
                if !q.items.is_empty() {
                    let n = q.items.len().min(max.max(1));
                    let batch: Vec<StoreWork> = q.items.drain(..n).collect();
                    q.head += n as u64;
                    let head = q.head;
                    if q.newest.len() > 1024 && q.newest.len() > 2 * q.items.len() {
                        q.newest.retain(|_, s| *s >= head);
                    }
                    return Some(batch);
                }
                if q.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Counts `n` items as done (after the writer persisted them).
    pub(crate) fn done(&self, n: usize) {
        self.depth.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Writes channel updates in order, in batches of up to 512.
pub(crate) async fn store_writer(store: Arc<dyn ChannelStore>, queue: Arc<StoreQueue>) {
    while let Some(work) = queue.take(512).await {
        let n = work.len();
        let mut batch = Vec::with_capacity(n);
        let mut flushes = Vec::new();
        for w in work {
            match w {
                StoreWork::Update(u) => batch.push(u),
                StoreWork::Flush(tx) => flushes.push(tx),
            }
        }
        if !batch.is_empty()
            && let Err(e) = store.apply_batch(batch).await
        {
            tracing::error!(error = %e, "persisting channel state failed");
        }
        queue.done(n);
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// The engine task's end of the store queue: dropped, it lets the writer finish and end.
pub(crate) struct StoreSender(pub(crate) Arc<StoreQueue>);

impl Drop for StoreSender {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.
mod tests {
    use super::*;
    use datatransfer_types::{Event, EventCode, Timestamp};

    fn update(channel: u64, received: u64, code: EventCode) -> ChannelUpdate {
        let s = crate::subscription::tests::state(channel, received);
        ChannelUpdate::new(s, vec![Event::new(code, "", Timestamp::ZERO)])
    }

    fn seen(batch: &[StoreWork]) -> Vec<(u64, u64)> {
        batch
            .iter()
            .filter_map(|w| match w {
                StoreWork::Update(u) => Some((u.state.channel_id.id.0, u.state.received)),
                StoreWork::Flush(_) => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn waiting_progress_of_a_channel_is_replaced_by_its_latest() {
        let depth = Arc::new(AtomicUsize::new(0));
        let q = StoreQueue::new(depth.clone());
        q.update(update(1, 0, EventCode::Accept));
        for n in 1..=10_000 {
            q.update(update(1, n, EventCode::DataReceivedProgress));
            q.update(update(2, n, EventCode::DataReceivedProgress));
        }
        q.update(update(1, 10_000, EventCode::Complete));
        q.update(update(1, 10_001, EventCode::DataReceivedProgress));
        assert_eq!(depth.load(Ordering::Relaxed), 5);
        let batch = q.take(512).await.unwrap();
        assert_eq!(
            seen(&batch),
            vec![(1, 0), (1, 10_000), (2, 10_000), (1, 10_000), (1, 10_001)]
        );
        q.done(batch.len());
        assert_eq!(depth.load(Ordering::Relaxed), 0);
        // Taken progress is not merged into: the next change queues anew.
        q.update(update(1, 10_002, EventCode::DataReceivedProgress));
        q.close();
        assert_eq!(seen(&q.take(512).await.unwrap()), vec![(1, 10_002)]);
        assert!(q.take(512).await.is_none());
    }

    #[tokio::test]
    async fn a_flush_keeps_its_place() {
        let q = StoreQueue::new(Arc::new(AtomicUsize::new(0)));
        q.update(update(1, 1, EventCode::DataReceivedProgress));
        let (tx, _rx) = oneshot::channel();
        q.flush(tx);
        q.update(update(1, 2, EventCode::DataReceivedProgress));
        let batch = q.take(512).await.unwrap();
        // Merged ahead of the flush: the flush still answers after the latest figures.
        assert_eq!(batch.len(), 2);
        assert!(matches!(batch[1], StoreWork::Flush(_)));
        assert_eq!(seen(&batch), vec![(1, 2)]);
    }
}
