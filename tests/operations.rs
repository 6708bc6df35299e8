//! Operating a node through the Manager: retention removes finished channels from the store
//! past its limits (and never a running one), a cancel reports whether the peer heard, and
//! a close or cancel returns once it is stored.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::sync::Arc;
use std::time::Duration;

use datatransfer::{
    ChannelFilter, ChannelId, ChannelState, ChannelStore, ChannelUpdate, Event, MemoryChannelStore,
    PeerNotice, Retention, Status, StoreError,
};
use datatransfer_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_finished_channels_and_every_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("client.sqlite");
    let mut config = fast_config();
    config.retention = Some(Retention {
        keep_for: None,
        keep_at_most: Some(2),
        sweep_every: Duration::from_millis(50),
    });
    let client = node(NodeOptions {
        sqlite: Some(&db),
        config,
        ..NodeOptions::default()
    })
    .await;
    let provider = default_node().await;
    introduce(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut done = Vec::new();
    for seed in 0..4 {
        let file = import(&*provider.store, &random_bytes(64 << 10, seed), 16 << 10);
        let id = pull(&client, &provider, voucher(1), file.root).await;
        assert_eq!(
            last_status(&wait_finished(&mut sub, id, 20).await),
            Status::Completed
        );
        done.push(id);
        // Finish times are in milliseconds: keep the four apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A channel still running is never removed: the provider takes a minute to validate
    // this one.
    provider
        .validator
        .pull_delay_ms
        .store(60_000, std::sync::atomic::Ordering::SeqCst);
    let file = import(&*provider.store, &random_bytes(64 << 10, 9), 16 << 10);
    let running = pull(&client, &provider, voucher(1), file.root).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let all = client.manager.channels(ChannelFilter::All).await.unwrap();
        if all.len() == 3 {
            break all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} channels kept",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ids: Vec<_> = kept.iter().map(|c| c.channel_id).collect();
    ids.sort();
    let mut want = vec![done[2], done[3], running];
    want.sort();
    assert_eq!(ids, want, "the two newest finished and the running one");
    // A purge now, keeping none, leaves the running channel alone.
    let removed = client
        .manager
        .purge_finished(datatransfer::PurgeFinished {
            finished_before: None,
            keep_newest: Some(0),
        })
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left = client.manager.channels(ChannelFilter::All).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].channel_id, running);

    // Cancelling it sends the provider the cancel, and says so.
    let report = client
        .manager
        .cancel_channel(running, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.peer, PeerNotice::Told);
    assert!(
        matches!(report.status, Status::Cancelled | Status::Cancelling),
        "{report:?}"
    );
    // Once it has ended, a second cancel is refused as a usage error, nothing sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.manager.channel_status(running).await.unwrap() != Some(Status::Cancelled) {
        assert!(tokio::time::Instant::now() < deadline, "never Cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        client
            .manager
            .cancel_channel(running, Duration::from_secs(1))
            .await
            .is_err()
    );
}

/// A channel store whose writes wait while it is held: what a slow disk looks like to the
/// Manager.
struct HeldStore {
    inner: MemoryChannelStore,
    held: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl ChannelStore for HeldStore {
    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelState>, StoreError> {
        self.inner.get(id).await
    }

    async fn list(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, StoreError> {
        self.inner.list(filter).await
    }

    async fn apply_batch(&self, updates: Vec<ChannelUpdate>) -> Result<(), StoreError> {
        let mut held = self.held.subscribe();
        let _ = held.wait_for(|held| !held).await;
        self.inner.apply_batch(updates).await
    }

    async fn events(&self, id: &ChannelId) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id).await
    }

    async fn delete(&self, id: &ChannelId) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_returns_once_the_cancel_is_stored() {
    let store = Arc::new(HeldStore {
        inner: MemoryChannelStore::new(100),
        held: tokio::sync::watch::channel(false).0,
    });
    let client = node(NodeOptions {
        channel_store: Some(store.clone()),
        ..NodeOptions::default()
    })
    .await;
    // The provider takes a minute to validate: the channel is open, not finished, throughout.
    let provider = default_node().await;
    provider
        .validator
        .pull_delay_ms
        .store(60_000, std::sync::atomic::Ordering::SeqCst);
    introduce(&client, &provider).await;
    let file = import(&*provider.store, &random_bytes(64 << 10, 1), 16 << 10);
    let close = |id| {
        let manager = client.manager.clone();
        tokio::spawn(async move { manager.close_channel(id).await })
    };
    let cancel = |id| {
        let manager = client.manager.clone();
        tokio::spawn(async move {
            manager
                .cancel_channel(id, Duration::from_secs(5))
                .await
                .map(|_| ())
        })
    };
    for how in ["close", "cancel"] {
        let id = pull(&client, &provider, voucher(1), file.root).await;
        let stored = || async { store.inner.get(&id).await.unwrap().map(|c| c.status) };
        assert_eq!(stored().await, Some(Status::Requested), "{how}");
        // The disk stalls: the call does not return while the cancel is not stored.
        store.held.send_replace(true);
        let call = if how == "close" {
            close(id)
        } else {
            cancel(id)
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !call.is_finished(),
            "{how} returned before the cancel was stored"
        );
        assert_eq!(stored().await, Some(Status::Requested), "{how}");
        // Once the disk goes on, it returns, and the store holds the cancel.
        store.held.send_replace(false);
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap_or_else(|_| panic!("{how} never returned"))
            .unwrap()
            .unwrap();
        assert!(
            matches!(stored().await, Some(Status::Cancelling | Status::Cancelled)),
            "{how}: {:?}",
            stored().await
        );
    }
}
