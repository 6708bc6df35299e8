//! The Lotus markets era: go-data-transfer v1.15.2 on go-graphsync v0.13.1
//! (`interop/go-peer-v1`), which speaks graphsync `1.0.0` (protobuf) and `2.0.0`. Each
//! transfer runs once as the two sides negotiate (graphsync 2.0.0) and once with our side
//! limited to graphsync 1.0.0.
//!
//! go-data-transfer v1.15.2 no longer speaks `/fil/datatransfer/1.1.0`, though its message
//! package still converts to it: its network offers `1.2.0` only by default
//! (`network/libp2p_impl.go`, `defaultDataTransferProtocols`) and its stream handler decodes
//! only `1.2.0` messages. A node of ours limited to `1.1.0` cannot talk to it (a Go
//! responder fails to send its completion: "protocol not supported").

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datatransfer::{ManagerConfig, Status};
use datatransfer_graphsync::Version;
use datatransfer_interop::data::{assert_file, import_random};
use datatransfer_interop::go::{Flavor, GoPeer, GoPeerOptions};
use datatransfer_interop::rust::{
    PayPerBytes, RustNode, RustNodeOptions, fast_config, go_client_owing, multiaddr, node,
    pay_until_done, wait_finished,
};
use datatransfer_interop::{MIB, RESULT_TYPE, VOUCHER_TYPE};

const SIZE: usize = 8 * MIB;

/// Our settings: the newest protocols first (as shipped), or graphsync 1.0.0 only.
fn config(old_graphsync: bool) -> ManagerConfig {
    let mut config = fast_config();
    if old_graphsync {
        config.transport.graphsync.versions = vec![Version::V1];
    }
    config
}

async fn pair(seed: u8, old_graphsync: bool, dir: &std::path::Path) -> (GoPeer, RustNode) {
    let mut opts = GoPeerOptions::new(seed, dir);
    opts.flavor = Flavor::V1;
    let go = GoPeer::start(opts).await;
    go.accept_all().await;
    let rust = node(RustNodeOptions {
        config: config(old_graphsync),
        ..RustNodeOptions::default()
    })
    .await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    go.connect(&multiaddr(&rust.manager).await).await;
    (go, rust)
}

/// We pull from the v1 peer and it pulls from us; then each pushes to the other.
async fn both_ways(seed: u8, old_graphsync: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (go, rust) = pair(seed, old_graphsync, dir.path()).await;
    let mut sub = rust.manager.subscribe().await.unwrap();
    let seed = u64::from(seed) * 10;

    let (root, data) = go.import_random(dir.path(), SIZE, seed).await;
    let ch = rust.pull(go.peer_id, root, 1).await;
    let ours = wait_finished(&mut sub, ch, 60).await;
    let ours = &ours.last().unwrap().1;
    assert_eq!(ours.status, Status::Completed, "our pull: {}", ours.message);
    assert_file(&*rust.store, &root, &data);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");

    let (root, data) = import_random(&*rust.store, SIZE, seed + 1);
    let ch = go.open("pull", rust.manager.peer_id(), &root, 2).await;
    let theirs = go.wait_finished(&ch, 60).await;
    assert_eq!(theirs["status"], "Completed", "Go's pull: {theirs}");
    go.assert_file(dir.path(), &root, &data).await;

    let (root, data) = import_random(&*rust.store, SIZE, seed + 2);
    let ch = rust.push(go.peer_id, root, 3).await;
    let ours = wait_finished(&mut sub, ch, 60).await;
    let ours = &ours.last().unwrap().1;
    assert_eq!(ours.status, Status::Completed, "our push: {}", ours.message);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    go.assert_file(dir.path(), &root, &data).await;

    let (root, data) = go.import_random(dir.path(), SIZE, seed + 3).await;
    let ch = go.open("push", rust.manager.peer_id(), &root, 4).await;
    let ours = wait_finished(&mut sub, ch, 60).await;
    let ours = &ours.last().unwrap().1;
    assert_eq!(
        ours.status,
        Status::Completed,
        "Go's push: {}",
        ours.message
    );
    assert_file(&*rust.store, &root, &data);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    go.assert_no_repeats("in");
    go.assert_no_repeats("out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_peer_pulls_and_pushes_with_us_over_the_newest_protocols() {
    both_ways(60, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_peer_pulls_and_pushes_with_us_over_graphsync_1_0() {
    both_ways(61, true).await;
}

/// A v1 provider pays through its Revalidator and puts each payment request under two
/// extension names; we pay each request once, and it takes every payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_pay_a_v1_provider_per_mib_with_finalization() {
    let dir = tempfile::tempdir().unwrap();
    let (go, rust) = pair(62, false, dir.path()).await;
    go.ok(
        "policy",
        serde_json::json!({"voucher_type": VOUCHER_TYPE, "result_type": RESULT_TYPE,
                           "accept": true, "pay_every": MIB, "finalize": true}),
    )
    .await;
    let (root, data) = go.import_random(dir.path(), SIZE, 620).await;
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 1).await;
    let (events, paid) = pay_until_done(&mut sub, &rust.manager, ch, 1, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_file(&*rust.store, &root, &data);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    let asked = go
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "payment_request")
        .count();
    let taken = go.payments_taken().len();
    assert!(asked >= SIZE / MIB, "{asked} payment requests");
    assert_eq!(paid.len(), asked, "we paid every request once");
    assert_eq!(taken, asked, "Go took every payment");
}

/// Our provider charges per MiB; a v1 client pays each request once (we send it under
/// one extension name), and the transfer completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_client_pays_us_per_mib_with_finalization() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GoPeerOptions::new(63, dir.path());
    opts.flavor = Flavor::V1;
    let go = GoPeer::start(opts).await;
    go.ok(
        "policy",
        serde_json::json!({"voucher_type": VOUCHER_TYPE, "result_type": RESULT_TYPE,
                           "accept": true, "auto_pay": true}),
    )
    .await;
    let pay = Arc::new(PayPerBytes::new(MIB as u64, true));
    let rust = node(RustNodeOptions {
        revalidator: Some(pay.clone()),
        ..RustNodeOptions::default()
    })
    .await;
    go.connect(&multiaddr(&rust.manager).await).await;
    let (root, data) = import_random(&*rust.store, SIZE, 630);
    let ch = go.open("pull", rust.manager.peer_id(), &root, 9).await;
    let theirs = go.wait_finished(&ch, 120).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    go.assert_file(dir.path(), &root, &data).await;
    let requests = pay.requests.load(Ordering::SeqCst);
    assert!(
        requests as usize >= SIZE / MIB,
        "{requests} payment requests"
    );
    let paid = go
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "paid")
        .count() as u64;
    assert_eq!(paid, requests, "the v1 client paid every request once");
    assert_eq!(pay.payments.load(Ordering::SeqCst), requests);
    assert_eq!(
        pay.paid.load(Ordering::SeqCst),
        pay.owed.load(Ordering::SeqCst)
    );
}

/// A v1.15 client restarts its pull while it owes our provider a payment: our answer says we
/// are still paused and asks again; the client pays, and every later interval is asked for and
/// paid as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_client_restarting_while_it_owes_us_pays_before_more_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut owing = go_client_owing(dir.path(), 64, Flavor::V1, MIB as u64, SIZE).await;
    // v1.15 keeps the paused status across its restart, and hears ours.
    let status = owing.restart().await;
    assert_eq!(status["status"], "ResponderPaused", "{status}");
    owing.pay_and_finish(dir.path()).await;
}
