//! Operating a node through the Manager: retention removes finished channels from the store
//! past its limits (and never a running one), and a cancel reports whether the peer heard.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::time::Duration;

use datatransfer::{ChannelFilter, PeerNotice, Retention, Status};
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
