//! The behaviour every [`ChannelStore`] must have, as a suite of async checks that panic on
//! failure. Run it from an implementation's tests with a fresh store per check:
//!
//! ```
//! # async fn check() {
//! use datatransfer_types::store::{MemoryChannelStore, conformance};
//! // Your store instead of the in-memory one; 100 is its cap on events per channel.
//! conformance::run_all(|| async { MemoryChannelStore::new(100) }, 100).await;
//! # }
//! ```

use std::future::Future;

use crate::store::{ChannelFilter, ChannelStore, ChannelUpdate, Durability, PurgeFinished};
use crate::{
    ChannelId, ChannelState, Cid, DagCbor, Event, EventCode, PeerId, Status, Timestamp, TransferId,
    TypedNode,
};

/// A peer id for test number `n`.
pub fn peer(n: u8) -> PeerId {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend_from_slice(&[n; 32]);
    // Mix in bytes that are not UTF-8, as real peer ids have.
    bytes[6] = 0xff;
    PeerId::from_bytes(&bytes).expect("well-formed identity peer id")
}

/// A channel state with every field set to something distinctive for `n`.
pub fn sample_state(n: u64, status: Status) -> ChannelState {
    let digest = [n as u8; 32];
    let mh = cid::multihash::Multihash::wrap(0x12, &digest).expect("32-byte digest");
    let id = ChannelId::new(peer(1), peer(2 + (n % 3) as u8), TransferId(n));
    let voucher = TypedNode::new(
        "Voucher".into(),
        DagCbor::encode(&(n, "deal")).expect("encodes"),
    );
    let mut st = ChannelState::new(
        id,
        peer(1),
        Cid::new_v1(0x70, mh),
        DagCbor::encode(&vec![n; 3]).expect("encodes"),
        voucher,
        n.is_multiple_of(2),
        n * 1000,
    );
    st.status = status;
    st.queued = n * 7;
    st.sent = n * 5;
    st.received = n * 3;
    st.message = format!("message {n} ✓");
    st.received_blocks_total = n + 1;
    st.queued_blocks_total = n + 2;
    st.sent_blocks_total = n + 3;
    st.voucher_results
        .push(TypedNode::new("Result".into(), DagCbor::null()));
    st.add_log("first", Timestamp(n));
    st.add_log("second", Timestamp(n + 1));
    st
}

fn event(code: EventCode, t: u64) -> Event {
    Event::new(code, format!("e{t}"), Timestamp(t))
}

async fn round_trip<S: ChannelStore>(store: S) {
    let st = sample_state(4, Status::Ongoing);
    assert_eq!(store.get(&st.channel_id).await.expect("get"), None);
    store
        .apply(ChannelUpdate::new(
            st.clone(),
            vec![event(EventCode::Open, 1)],
        ))
        .await
        .expect("apply");
    assert_eq!(
        store.get(&st.channel_id).await.expect("get"),
        Some(st.clone())
    );
    assert_eq!(
        store.events(&st.channel_id).await.expect("events"),
        vec![event(EventCode::Open, 1)]
    );
}

async fn updates_replace_state_and_append_events<S: ChannelStore>(store: S) {
    let mut st = sample_state(7, Status::Requested);
    store
        .apply(ChannelUpdate::new(
            st.clone(),
            vec![event(EventCode::Open, 1)],
        ))
        .await
        .expect("apply");
    st.status = Status::Ongoing;
    st.received += 100;
    st.vouchers.push(TypedNode::new(
        "Voucher".into(),
        DagCbor::encode(&99u8).expect("encodes"),
    ));
    st.voucher_results.push(TypedNode::new(
        "Result".into(),
        DagCbor::encode(&"paid").expect("encodes"),
    ));
    st.add_log("third", Timestamp(50));
    let evs = vec![event(EventCode::Accept, 2), event(EventCode::NewVoucher, 3)];
    store
        .apply(ChannelUpdate::new(st.clone(), evs))
        .await
        .expect("apply");
    assert_eq!(
        store.get(&st.channel_id).await.expect("get"),
        Some(st.clone())
    );
    let codes: Vec<_> = store
        .events(&st.channel_id)
        .await
        .expect("events")
        .iter()
        .map(|e| e.code)
        .collect();
    assert_eq!(
        codes,
        [EventCode::Open, EventCode::Accept, EventCode::NewVoucher]
    );
}

async fn batches_apply_every_update<S: ChannelStore>(store: S) {
    let mut updates = Vec::new();
    for n in 0..50 {
        let mut st = sample_state(n, Status::Ongoing);
        st.received = n;
        updates.push(ChannelUpdate {
            state: st,
            events: vec![event(EventCode::DataReceivedProgress, n)],
            durability: Durability::Progress,
        });
    }
    // The same channel twice in one batch: the later update wins.
    let mut last = sample_state(3, Status::Ongoing);
    last.received = 12_345;
    updates.push(ChannelUpdate::new(last.clone(), vec![]));
    store.apply_batch(updates).await.expect("batch");
    let all = store.list(ChannelFilter::All).await.expect("list");
    assert_eq!(all.len(), 50);
    assert_eq!(store.get(&last.channel_id).await.expect("get"), Some(last));
}

async fn list_filters<S: ChannelStore>(store: S) {
    let statuses = [
        Status::Requested,
        Status::Ongoing,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
        Status::ResponderPaused,
    ];
    for (n, s) in statuses.iter().enumerate() {
        store
            .apply(ChannelUpdate::new(sample_state(n as u64, *s), vec![]))
            .await
            .expect("apply");
    }
    let ids = |v: Vec<ChannelState>| {
        let mut ids: Vec<u64> = v.iter().map(|s| s.channel_id.id.0).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(store.list(ChannelFilter::All).await.expect("list")),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(
        ids(store.list(ChannelFilter::InProgress).await.expect("list")),
        [0, 1, 5]
    );
    // sample_state(n) talks to peer(2 + n % 3).
    assert_eq!(
        ids(store
            .list(ChannelFilter::Peer(peer(3)))
            .await
            .expect("list")),
        [1, 4]
    );
    assert_eq!(
        ids(store
            .list(ChannelFilter::Peer(peer(9)))
            .await
            .expect("list")),
        Vec::<u64>::new()
    );
}

async fn delete_removes_state_and_events<S: ChannelStore>(store: S) {
    let st = sample_state(9, Status::Completed);
    store
        .apply(ChannelUpdate::new(
            st.clone(),
            vec![event(EventCode::Complete, 1)],
        ))
        .await
        .expect("apply");
    assert!(store.delete(&st.channel_id).await.expect("delete"));
    assert!(!store.delete(&st.channel_id).await.expect("delete"));
    assert_eq!(store.get(&st.channel_id).await.expect("get"), None);
    assert!(
        store
            .events(&st.channel_id)
            .await
            .expect("events")
            .is_empty()
    );
    // A new channel with the same id starts clean.
    store
        .apply(ChannelUpdate::new(st.clone(), vec![]))
        .await
        .expect("apply");
    assert!(
        store
            .events(&st.channel_id)
            .await
            .expect("events")
            .is_empty()
    );
}

async fn events_are_bounded<S: ChannelStore>(store: S, max_events: usize) {
    let st = sample_state(11, Status::Ongoing);
    for t in 0..(max_events as u64 + 25) {
        store
            .apply(ChannelUpdate::new(
                st.clone(),
                vec![event(EventCode::DataReceived, t)],
            ))
            .await
            .expect("apply");
    }
    let evs = store.events(&st.channel_id).await.expect("events");
    assert_eq!(evs.len(), max_events);
    assert_eq!(
        evs.first().map(|e| e.timestamp),
        Some(Timestamp(25)),
        "oldest dropped first"
    );
}

/// Runs every check, each on a fresh store from `make`. `max_events` is the store's cap on
/// events per channel.
pub async fn run_all<S, F, Fut>(make: F, max_events: usize)
where
    S: ChannelStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    round_trip(make().await).await;
    updates_replace_state_and_append_events(make().await).await;
    batches_apply_every_update(make().await).await;
    list_filters(make().await).await;
    delete_removes_state_and_events(make().await).await;
    events_are_bounded(make().await, max_events).await;
    purge_removes_old_and_excess_finished_channels_only(make().await).await;
}

/// The transfer ids of the channels in `store`, sorted.
async fn ids<S: ChannelStore>(store: &S) -> Vec<u64> {
    let mut ids: Vec<u64> = store
        .list(ChannelFilter::All)
        .await
        .expect("list")
        .iter()
        .map(|s| s.channel_id.id.0)
        .collect();
    ids.sort_unstable();
    ids
}

async fn purge_removes_old_and_excess_finished_channels_only<S: ChannelStore>(store: S) {
    // Channel n finished at n + 1 (its last log line); 1 and 2 are still running.
    let ended = [Status::Completed, Status::Failed, Status::Cancelled];
    let mut updates: Vec<ChannelUpdate> = (10..20u64)
        .map(|n| sample_state(n, ended[n as usize % 3]))
        .chain([
            sample_state(1, Status::Ongoing),
            sample_state(2, Status::Requested),
        ])
        .map(|st| ChannelUpdate::new(st, vec![event(EventCode::Open, 1)]))
        .collect();
    updates.reverse();
    store.apply_batch(updates).await.expect("apply");
    let purge = |finished_before: Option<u64>, keep_newest: Option<usize>| PurgeFinished {
        finished_before: finished_before.map(Timestamp),
        keep_newest,
    };
    let newest: Vec<u64> = store
        .recently_finished(3)
        .await
        .expect("recently finished")
        .iter()
        .map(|s| s.channel_id.id.0)
        .collect();
    assert_eq!(newest, [19, 18, 17], "newest first, running ones left out");
    assert_eq!(
        store
            .purge_finished(purge(None, None))
            .await
            .expect("purge"),
        0
    );
    assert_eq!(ids(&store).await.len(), 12);
    // Finished before 14: channels 10, 11 and 12.
    assert_eq!(
        store
            .purge_finished(purge(Some(14), None))
            .await
            .expect("purge"),
        3
    );
    assert_eq!(ids(&store).await, [1, 2, 13, 14, 15, 16, 17, 18, 19]);
    assert!(
        store
            .events(&sample_state(10, Status::Completed).channel_id)
            .await
            .expect("events")
            .is_empty()
    );
    // The newest four finished stay.
    assert_eq!(
        store
            .purge_finished(purge(None, Some(4)))
            .await
            .expect("purge"),
        3
    );
    assert_eq!(ids(&store).await, [1, 2, 16, 17, 18, 19]);
    // Both limits at once, then none kept: channels in progress always stay.
    assert_eq!(
        store
            .purge_finished(purge(Some(19), Some(3)))
            .await
            .expect("purge"),
        2
    );
    assert_eq!(ids(&store).await, [1, 2, 18, 19]);
    assert_eq!(
        store
            .purge_finished(purge(None, Some(0)))
            .await
            .expect("purge"),
        2
    );
    assert_eq!(ids(&store).await, [1, 2]);
    assert_eq!(
        store
            .events(&sample_state(1, Status::Ongoing).channel_id)
            .await
            .expect("events")
            .len(),
        1
    );
}
