//! The go-data-transfer integration scenarios (v1.15.1 `impl/integration_test.go` and
//! `impl/restart_integration_test.go`), between real Managers over libp2p on 127.0.0.1.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use datatransfer::{Status, all_selector};
use datatransfer_integration_tests::*;

/// One channel between two fresh nodes: `pull` or push, a file of `size` bytes in chunks
/// of `chunk`, raw or dag-pb leaves. Both sides complete and the bytes arrive intact.
async fn round_trip(pull: bool, size: usize, chunk: usize, raw_leaves: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sender = node(NodeOptions {
        sqlite: Some(&dir.path().join("sender.sqlite")),
        ..NodeOptions::default()
    })
    .await;
    let receiver = node(NodeOptions {
        sqlite: Some(&dir.path().join("receiver.sqlite")),
        ..NodeOptions::default()
    })
    .await;
    introduce(&sender, &receiver).await;
    let data = random_bytes(size, size as u64);
    let file = import_with(&*sender.store, &data, chunk, raw_leaves);
    let (initiator, responder) = if pull {
        (&receiver, &sender)
    } else {
        (&sender, &receiver)
    };
    let mut isub = initiator.manager.subscribe().await.unwrap();
    let mut rsub = responder.manager.subscribe().await.unwrap();
    let to = responder.manager.peer_id();
    let id = if pull {
        initiator
            .manager
            .open_pull_channel(to, voucher(1), file.root, all_selector())
            .await
    } else {
        initiator
            .manager
            .open_push_channel(to, voucher(1), file.root, all_selector())
            .await
    }
    .unwrap();
    let ievents = wait_finished(&mut isub, id, 60).await;
    let revents = wait_finished(&mut rsub, id, 60).await;
    assert_eq!(
        last_status(&ievents),
        Status::Completed,
        "{:?}",
        codes(&ievents)
    );
    assert_eq!(
        last_status(&revents),
        Status::Completed,
        "{:?}",
        codes(&revents)
    );
    assert_file(&*receiver.store, &file.root, &data);
    // The store has the final state too.
    let stored = initiator.manager.channel_state(id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Completed);
    let moved = if pull { stored.received } else { stored.sent };
    assert!(
        moved >= size as u64,
        "{moved} bytes moved for a {size}-byte file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_pull_small_file_raw_leaves() {
    round_trip(true, 100_000, 16 << 10, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_push_small_file_raw_leaves() {
    round_trip(false, 100_000, 16 << 10, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_pull_small_file_dag_pb_leaves() {
    round_trip(true, 100_000, 16 << 10, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_push_small_file_dag_pb_leaves() {
    round_trip(false, 100_000, 16 << 10, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_pull_20_mib_raw_leaves() {
    round_trip(true, 20 << 20, 256 << 10, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_push_20_mib_dag_pb_leaves() {
    round_trip(false, 20 << 20, 256 << 10, false).await;
}
