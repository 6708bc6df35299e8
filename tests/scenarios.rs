//! The go-data-transfer integration scenarios (v1.15.1 `impl/integration_test.go` and
//! `impl/restart_integration_test.go`), between real Managers over libp2p on 127.0.0.1.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use datatransfer::{Status, all_selector};
use datatransfer_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_pull_small_file() {
    let provider = default_node().await;
    let client = default_node().await;
    introduce(&client, &provider).await;
    let data = random_bytes(300_000, 1);
    let file = import(&*provider.store, &data, 64 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let id = client
        .manager
        .open_pull_channel(
            provider.manager.peer_id(),
            voucher(1),
            file.root,
            all_selector(),
        )
        .await
        .unwrap();
    let events = wait_finished(&mut sub, id, 30).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    assert_file(&*client.store, &file.root, &data);
}
