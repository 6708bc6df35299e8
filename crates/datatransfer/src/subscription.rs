//! Subscriptions to a Manager's events: one bounded queue per subscriber, so a subscriber
//! that reads slowly (or never) neither grows the process's memory nor holds up the engine.
//!
//! A reader that keeps up sees every event. Once half the queue waits unread, a progress
//! event (`DataReceived`, `DataReceivedProgress`, and the same for queued and sent data) that
//! follows a not yet read one of the same kind on the same channel, with nothing else of that
//! channel in between, replaces it: the subscriber reads the latest figures once. When the
//! queue is full all the same, the oldest event that is not a channel's last (terminal) one
//! is dropped, and the subscriber is told how many it missed ([`SubscriptionItem::Lagged`],
//! or [`Subscription::missed`] for readers of [`Subscription::next`]); it can read the
//! channels' states to catch up.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use datatransfer_types::{ChannelId, ChannelState, Event, EventCode};

/// What a [`Subscription`] hands out.
// Nearly every item is an event; boxing its state would cost an allocation per event read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionItem {
    /// An event, with the channel's state after it.
    Event(Event, ChannelState),
    /// This many events were dropped here because the queue was full: the subscriber read
    /// too slowly. The events after it are in order again.
    Lagged(u64),
}

/// One subscriber's queue, shared by the Manager (which pushes) and the [`Subscription`].
#[derive(Debug)]
struct Queue {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Queued events; `None` where one was dropped from the middle (a gap is skipped).
    slots: VecDeque<Option<Entry>>,
    /// The sequence number of `slots[0]`.
    head: u64,
    /// Events in `slots` (gaps not counted).
    live: usize,
    capacity: usize,
    /// Per channel: its trailing run of queued progress events (code, sequence number),
    /// with no other event of the channel after them.
    runs: HashMap<ChannelId, Vec<(EventCode, u64)>>,
    /// Events dropped since the subscriber last heard of it.
    lagged: u64,
    /// Events dropped in all.
    missed: u64,
    closed: bool,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Entry {
    event: Event,
    state: ChannelState,
}

/// Events that only report data moving: they merge while unread.
fn is_progress(code: EventCode) -> bool {
    matches!(
        code,
        EventCode::DataQueued
            | EventCode::DataSent
            | EventCode::DataReceived
            | EventCode::DataQueuedProgress
            | EventCode::DataSentProgress
            | EventCode::DataReceivedProgress
            | EventCode::Progress
    )
}

impl Inner {
    fn slot_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let i = usize::try_from(seq.checked_sub(self.head)?).ok()?;
        self.slots.get_mut(i)?.as_mut()
    }

    /// Merges a progress event into the channel's queued run: the entry of the same code
    /// takes the event, and every entry of the run the newest state (so the channel's
    /// states still only move forward). False if the run has no such entry.
    fn merge(&mut self, event: &Event, state: &ChannelState) -> bool {
        let head = self.head;
        let Some(run) = self.runs.remove(&state.channel_id) else {
            return false;
        };
        let target = run
            .iter()
            .find(|(c, s)| *c == event.code && *s >= head)
            .map(|&(_, seq)| seq)
            .filter(|seq| self.slot_mut(*seq).is_some());
        if let Some(seq) = target {
            for (_, s) in &run {
                if let Some(e) = self.slot_mut(*s) {
                    e.state = state.clone();
                }
            }
            if let Some(e) = self.slot_mut(seq) {
                e.event = event.clone();
            }
        }
        self.runs.insert(state.channel_id, run);
        target.is_some()
    }

    /// Drops one event to make room: the oldest that is not a channel's last (a terminal
    /// status), or the oldest if every one is.
    fn evict(&mut self) {
        let idx = self
            .slots
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| !e.state.status.is_terminal()))
            .or_else(|| self.slots.iter().position(Option::is_some));
        if let Some(i) = idx {
            self.slots[i] = None;
            self.live -= 1;
            self.lagged += 1;
            self.missed += 1;
        }
        self.trim();
        if self.slots.len() > 2 * self.capacity + 16 {
            // Many gaps: close them up. The runs' sequence numbers no longer hold; the next
            // progress events queue anew.
            self.slots.retain(Option::is_some);
            self.runs.clear();
        }
    }

    /// Drops gaps at the front.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.head += 1;
        }
    }
}

impl Queue {
    /// A queue that holds up to `capacity` events (at least 1).
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                slots: VecDeque::new(),
                head: 0,
                live: 0,
                capacity: capacity.max(1),
                runs: HashMap::new(),
                lagged: 0,
                missed: 0,
                closed: false,
                waker: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock is held leaves plain data behind: carry on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event (see the module docs for what is merged or dropped); false if the
    /// subscription is gone. Never blocks.
    fn push(&self, event: &Event, state: &ChannelState) -> bool {
        let mut q = self.lock();
        let q = &mut *q;
        if q.closed {
            return false;
        }
        let id = state.channel_id;
        let progress = is_progress(event.code);
        if progress {
            // A reader that keeps up sees every event; merging starts once half the queue
            // waits unread.
            if q.live >= q.capacity / 2 && q.merge(event, state) {
                return true;
            }
        } else {
            q.runs.remove(&id);
        }
        if q.live >= q.capacity {
            q.evict();
        }
        let seq = q.head + q.slots.len() as u64;
        q.slots.push_back(Some(Entry {
            event: event.clone(),
            state: state.clone(),
        }));
        q.live += 1;
        if progress {
            let head = q.head;
            let run = q.runs.entry(id).or_default();
            run.retain(|(_, s)| *s >= head);
            run.push((event.code, seq));
        }
        if q.runs.len() > 2 * q.capacity {
            // Forget the runs of channels whose events were all read.
            let head = q.head;
            q.runs.retain(|_, r| r.iter().any(|(_, s)| *s >= head));
        }
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        true
    }

    /// No more events will come (the Manager stopped or dropped this subscriber).
    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    fn poll_item(&self, cx: &mut Context<'_>) -> Poll<Option<SubscriptionItem>> {
        let mut q = self.lock();
        if q.lagged > 0 {
            let n = std::mem::take(&mut q.lagged);
            return Poll::Ready(Some(SubscriptionItem::Lagged(n)));
        }
        while let Some(slot) = q.slots.pop_front() {
            q.head += 1;
            if let Some(e) = slot {
                q.live -= 1;
                return Poll::Ready(Some(SubscriptionItem::Event(e.event, e.state)));
            }
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Events of a [`crate::Manager`], in the order they happened on each channel (a
/// [`futures::Stream`]). The queue behind it is bounded
/// ([`crate::ManagerConfig::subscriber_queue`]): see [`SubscriptionItem::Lagged`].
/// Dropping the subscription unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    queue: Arc<Queue>,
}

impl Subscription {
    fn new(queue: Arc<Queue>) -> Self {
        Self { queue }
    }

    /// The next event; `None` once the manager stopped. Events dropped because this
    /// subscriber fell behind are skipped (and counted in [`Subscription::missed`]); use
    /// [`Subscription::next_item`] to hear of them where they happened.
    pub async fn next(&mut self) -> Option<(Event, ChannelState)> {
        loop {
            match self.next_item().await? {
                SubscriptionItem::Event(e, s) => return Some((e, s)),
                SubscriptionItem::Lagged(_) => {}
            }
        }
    }

    /// The next event or lag notice; `None` once the manager stopped.
    pub async fn next_item(&mut self) -> Option<SubscriptionItem> {
        std::future::poll_fn(|cx| self.queue.poll_item(cx)).await
    }

    /// How many events were dropped in all because this subscriber read too slowly.
    pub fn missed(&self) -> u64 {
        self.queue.lock().missed
    }

    /// How many events wait to be read.
    pub fn len(&self) -> usize {
        self.queue.lock().live
    }

    /// Whether no event waits to be read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The Manager sees it closed and forgets this queue at its next event.
        self.queue.close();
    }
}

/// The Manager's end of a subscription: pushes events; dropped (the Manager stopped), it
/// closes the queue, so the subscriber reads what is left and then `None`.
#[derive(Debug)]
pub(crate) struct Subscriber(Arc<Queue>);

impl Subscriber {
    /// A subscriber queue of `capacity` and the subscription that reads it.
    pub(crate) fn new(capacity: usize) -> (Self, Subscription) {
        let q = Queue::new(capacity);
        (Self(q.clone()), Subscription::new(q))
    }

    /// Queues an event; false once the subscription was dropped.
    pub(crate) fn push(&self, event: &Event, state: &ChannelState) -> bool {
        self.0.push(event, state)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl futures::Stream for Subscription {
    type Item = (Event, ChannelState);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.queue.poll_item(cx) {
                Poll::Ready(Some(SubscriptionItem::Lagged(_))) => continue,
                Poll::Ready(Some(SubscriptionItem::Event(e, s))) => {
                    return Poll::Ready(Some((e, s)));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.
pub(crate) mod tests {
    use super::*;
    use datatransfer_types::{
        Cid, DagCbor, PeerId, Timestamp, TransferId, TypeIdentifier, Voucher,
    };

    /// A channel state for queue tests: channel `channel` between one fixed peer and itself,
    /// `received` bytes in.
    pub(crate) fn state(channel: u64, received: u64) -> ChannelState {
        // An identity multihash: the same peer on every call, so channel ids repeat.
        let me = PeerId::from_bytes(&[0, 2, 8, 1]).unwrap();
        let id = ChannelId {
            initiator: me,
            responder: me,
            id: TransferId(channel),
        };
        let voucher = Voucher::new(TypeIdentifier::new("T"), DagCbor::null());
        let mut s = ChannelState::new(id, me, Cid::default(), DagCbor::null(), voucher, true, 0);
        s.received = received;
        s
    }

    fn event(code: EventCode) -> Event {
        Event::new(code, "", Timestamp::ZERO)
    }

    fn drain(q: &Arc<Queue>) -> Vec<SubscriptionItem> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        std::iter::from_fn(|| match q.poll_item(&mut cx) {
            Poll::Ready(Some(i)) => Some(i),
            _ => None,
        })
        .collect()
    }

    /// (code, channel, received) of each event read, `None` for a lag notice.
    fn seen(items: &[SubscriptionItem]) -> Vec<Option<(EventCode, u64, u64)>> {
        items
            .iter()
            .map(|i| match i {
                SubscriptionItem::Event(e, s) => Some((e.code, s.channel_id.id.0, s.received)),
                SubscriptionItem::Lagged(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_reader_that_keeps_up_sees_every_event() {
        let q = Queue::new(100);
        for n in 0..49 {
            q.push(&event(EventCode::DataReceivedProgress), &state(1, n));
        }
        assert_eq!(drain(&q).len(), 49);
    }

    #[test]
    fn progress_of_a_channel_with_nothing_else_between_is_merged_into_the_latest() {
        let q = Queue::new(10);
        for channel in 1..=5 {
            q.push(&event(EventCode::Open), &state(channel, 0));
        }
        for n in 1..=1_000 {
            q.push(&event(EventCode::DataReceivedProgress), &state(1, n));
            q.push(&event(EventCode::DataReceived), &state(1, n));
            q.push(&event(EventCode::DataReceivedProgress), &state(2, n));
        }
        q.push(&event(EventCode::PauseResponder), &state(1, 1_000));
        q.push(&event(EventCode::DataReceivedProgress), &state(1, 1_001));
        let got = seen(&drain(&q));
        assert_eq!(
            got,
            vec![
                Some((EventCode::Open, 1, 0)),
                Some((EventCode::Open, 2, 0)),
                Some((EventCode::Open, 3, 0)),
                Some((EventCode::Open, 4, 0)),
                Some((EventCode::Open, 5, 0)),
                // Both kinds kept once, each with the newest state.
                Some((EventCode::DataReceivedProgress, 1, 1_000)),
                Some((EventCode::DataReceived, 1, 1_000)),
                Some((EventCode::DataReceivedProgress, 2, 1_000)),
                // Not merged across the pause: each channel's events stay in order.
                Some((EventCode::PauseResponder, 1, 1_000)),
                Some((EventCode::DataReceivedProgress, 1, 1_001)),
            ]
        );
    }

    #[test]
    fn a_channels_last_event_is_kept_over_older_news_of_others() {
        let q = Queue::new(3);
        let mut done = state(1, 5);
        done.status = datatransfer_types::Status::Completed;
        q.push(&event(EventCode::Complete), &done);
        for channel in 2..6 {
            q.push(&event(EventCode::Open), &state(channel, 0));
        }
        let items = drain(&q);
        assert_eq!(items[0], SubscriptionItem::Lagged(2));
        let got: Vec<_> = seen(&items[1..])
            .into_iter()
            .map(|g| g.unwrap().1)
            .collect();
        assert_eq!(
            got,
            vec![1, 4, 5],
            "the completion stays, the oldest opens go"
        );
    }

    #[test]
    fn a_full_queue_drops_its_oldest_events_and_says_how_many() {
        let q = Queue::new(4);
        for channel in 0..10 {
            q.push(&event(EventCode::Open), &state(channel, 0));
        }
        let items = drain(&q);
        assert_eq!(items[0], SubscriptionItem::Lagged(6));
        let got = seen(&items[1..]);
        let channels: Vec<u64> = got.iter().map(|g| g.unwrap().1).collect();
        assert_eq!(channels, vec![6, 7, 8, 9], "the newest are kept, in order");
        // Told once; the count stays.
        q.push(&event(EventCode::Open), &state(10, 0));
        assert_eq!(seen(&drain(&q)), vec![Some((EventCode::Open, 10, 0))]);
        assert_eq!(q.lock().missed, 6);
        assert_eq!(q.lock().live, 0);
    }

    #[test]
    fn a_closed_queue_ends_after_what_it_holds() {
        let q = Queue::new(4);
        q.push(&event(EventCode::Open), &state(1, 0));
        q.close();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            q.poll_item(&mut cx),
            Poll::Ready(Some(SubscriptionItem::Event(..)))
        ));
        assert!(matches!(q.poll_item(&mut cx), Poll::Ready(None)));
    }
}
