//! Transfers between our Manager and a go-data-transfer v2 node, both ways: pulls and pushes
//! of a 20 MiB UnixFS file and of a DAG-CBOR DAG, rejected vouchers, and pay-per-MiB
//! retrieval with finalization.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datatransfer::{ChannelState, Cid, EventCode, Status};
use datatransfer_interop::data::{assert_file, dag_cbor_dag, import_random};
use datatransfer_interop::go::{Flavor, GoPeer, GoPeerOptions, chid_json};
use datatransfer_interop::rust::{
    InteropResult, PayPerBytes, RustNode, RustNodeOptions, default_node, go_client_owing,
    multiaddr, node, pay_on_from, pay_until_done, voucher, wait_finished, wait_until,
};
use datatransfer_interop::{MIB, RESULT_TYPE, VOUCHER_TYPE};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{BlockLog, TraversalConfig, walk};
use serde_json::{Value, json};

const SIZE: usize = 20 * MIB;

/// A Go peer that accepts every voucher of the interop type.
async fn go_peer(seed: u8, dir: &std::path::Path) -> GoPeer {
    let go = GoPeer::start(GoPeerOptions::new(seed, dir)).await;
    go.accept_all().await;
    go
}

/// The CIDs a walk of the whole DAG under `root` loads from `store`, in order.
fn walk_order(store: &dyn Blockstore, root: Cid) -> Vec<String> {
    let mut log = BlockLog::default();
    walk(
        store,
        root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        &mut log,
    )
    .unwrap();
    log.0.iter().map(|v| v.cid.to_string()).collect()
}

/// The CIDs Go's traversal loads under `root`, in order.
async fn go_walk(go: &GoPeer, root: &Cid) -> Vec<String> {
    go.ok("walk", json!({"root": root.to_string()})).await["cids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_pulls_a_unixfs_file_from_go() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(1, dir.path()).await;
    let (root, data) = go.import_random(dir.path(), SIZE, 1).await;
    let rust = default_node().await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 1).await;
    let events = wait_finished(&mut sub, ch, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_file(&*rust.store, &root, &data);
    let theirs = go.wait_finished(&ch, 30).await;
    assert_eq!(theirs["status"], "Completed");
    assert_eq!(theirs["sent"].as_u64().unwrap(), last.received);
    go.assert_no_repeats("out");
}

/// Our TLS (AES-GCM first) and go-libp2p's agree, and so does our noise: a Manager that
/// offers TLS first meets the Go peer (TLS, then noise, Go's default) on TLS, one that
/// speaks only noise meets it on noise, whichever side dials; the file moves whole over each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_go_meet_on_tls_or_noise_whoever_dials() {
    use datatransfer::SecureChannels;
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(1, dir.path()).await;
    let (root, data) = go.import_random(dir.path(), MIB, 3).await;
    for (ours, expected) in [
        (SecureChannels::TlsThenNoise, "/tls/1.0.0"),
        (SecureChannels::NoiseOnly, "/noise"),
    ] {
        for rust_dials in [true, false] {
            let mut opts = RustNodeOptions::default();
            opts.config.secure_channels = ours;
            let rust = node(opts).await;
            if rust_dials {
                rust.manager.connect(&go.multiaddr()).await.unwrap();
            } else {
                go.connect(&multiaddr(&rust.manager).await).await;
            }
            let mut sub = rust.manager.subscribe().await.unwrap();
            let ch = rust.pull(go.peer_id, root, 1).await;
            let events = wait_finished(&mut sub, ch, 60).await;
            let last = &events.last().unwrap().1;
            assert_eq!(last.status, Status::Completed, "{}", last.message);
            assert_file(&*rust.store, &root, &data);
            // Asked once the channel is done (a dial returns before the other side has
            // filed the connection): the connection that carried it.
            let seen = go
                .ok(
                    "security",
                    json!({"peer": rust.manager.peer_id().to_string()}),
                )
                .await;
            assert_eq!(
                seen["security"],
                json!([expected]),
                "{ours:?}, rust dials: {rust_dials}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_pulls_a_unixfs_file_from_rust() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(2, dir.path()).await;
    let rust = default_node().await;
    let (root, data) = import_random(&*rust.store, SIZE, 2);
    go.connect(&multiaddr(&rust.manager).await).await;
    let ch = go.open("pull", rust.manager.peer_id(), &root, 2).await;
    let theirs = go.wait_finished(&ch, 120).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    go.assert_file(dir.path(), &root, &data).await;
    go.assert_no_repeats("in");
    let ours = rust.manager.channel_state(ch).await.unwrap().unwrap();
    assert_eq!(ours.status, Status::Completed);
    assert_eq!(ours.sent, theirs["received"].as_u64().unwrap());
    assert_eq!(rust.validator.pulls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_pushes_a_unixfs_file_to_go() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(3, dir.path()).await;
    let rust = default_node().await;
    let (root, data) = import_random(&*rust.store, SIZE, 3);
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.push(go.peer_id, root, 3).await;
    let events = wait_finished(&mut sub, ch, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    let theirs = go.wait_finished(&ch, 30).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    go.assert_file(dir.path(), &root, &data).await;
    go.assert_no_repeats("in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_pushes_a_unixfs_file_to_rust() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(4, dir.path()).await;
    let (root, data) = go.import_random(dir.path(), SIZE, 4).await;
    let rust = default_node().await;
    let mut sub = rust.manager.subscribe().await.unwrap();
    go.connect(&multiaddr(&rust.manager).await).await;
    let ch = go.open("push", rust.manager.peer_id(), &root, 4).await;
    let events = wait_finished(&mut sub, ch, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_file(&*rust.store, &root, &data);
    let theirs = go.wait_finished(&ch, 30).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    go.assert_no_repeats("out");
    assert_eq!(rust.validator.pushes.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_cbor_dag_moves_both_ways_in_go_traversal_order() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(5, dir.path()).await;
    let rust = default_node().await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();

    // Go pulls a DAG of ours.
    let (root, all) = dag_cbor_dag(&*rust.store, 8, 6, 64 << 10, 5);
    let ch = go.open("pull", rust.manager.peer_id(), &root, 5).await;
    let theirs = go.wait_finished(&ch, 60).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    let order = walk_order(&*rust.store, root);
    assert_eq!(order.len(), all.len());
    assert_eq!(
        go_walk(&go, &root).await,
        order,
        "Go walks our DAG as we do"
    );
    assert_eq!(go.blocks("in"), order, "blocks arrive in traversal order");

    // We pull one of Go's (made here, imported there from a CAR).
    let theirs_store = MemoryBlockstore::new();
    let (root2, _) = dag_cbor_dag(&theirs_store, 5, 4, 32 << 10, 6);
    let car = dir.path().join("dag.car");
    datatransfer_ipld::car::export_car(
        &theirs_store,
        root2,
        Selector::explore_all_recursively(),
        std::fs::File::create(&car).unwrap(),
    )
    .unwrap();
    go.ok("import_car", json!({"path": car})).await;
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root2, 6).await;
    let events = wait_finished(&mut sub, ch, 60).await;
    assert_eq!(events.last().unwrap().1.status, Status::Completed);
    let ours = walk_order(&*rust.store, root2);
    assert_eq!(ours, go_walk(&go, &root2).await);
    let sent: Vec<String> = go
        .blocks("out")
        .into_iter()
        .filter(|c| ours.contains(c))
        .collect();
    assert_eq!(sent, ours, "Go sends blocks in traversal order, each once");
}

/// A rejection from Go reaches us with Go's reason; one from us reaches Go with ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_voucher_ends_the_channel_on_both_sides_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(6, dir.path())).await;
    go.ok(
        "policy",
        json!({"voucher_type": VOUCHER_TYPE, "result_type": RESULT_TYPE, "accept": false,
               "reject_message": "no such deal"}),
    )
    .await;
    let (root, _) = go.import_random(dir.path(), SIZE, 6).await;
    let rust = default_node().await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();

    // We pull; Go refuses.
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 6).await;
    let events = wait_finished(&mut sub, ch, 30).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Failed);
    assert!(
        events
            .iter()
            .any(|(e, _)| e.code == EventCode::Error && e.message.contains("rejected")),
        "no rejection event: {:?}",
        events.iter().map(|(e, _)| &e.message).collect::<Vec<_>>()
    );
    let reason = last
        .last_voucher_result()
        .and_then(|r| r.decode::<InteropResult>().ok())
        .and_then(|r| r.rejected);
    assert_eq!(reason.as_deref(), Some("no such deal"));
    assert!(rust.store.get(&root).unwrap().is_none(), "no block came");

    // Go pulls; we refuse.
    let (root, _) = import_random(&*rust.store, SIZE, 7);
    *rust.validator.reject.lock().unwrap() = Some("not for you".into());
    go.connect(&multiaddr(&rust.manager).await).await;
    let ch = go.open("pull", rust.manager.peer_id(), &root, 7).await;
    let theirs = go.wait_finished(&ch, 30).await;
    assert_eq!(theirs["status"], "Failed", "{theirs}");
    assert_eq!(
        theirs["voucher_result"]["value"]["rejected"], "not for you",
        "Go sees our reason: {theirs}"
    );
    assert!(go.blocks("in").is_empty(), "no block went to Go");
    let ours = rust.manager.channel_state(ch).await.unwrap();
    assert!(
        ours.as_ref()
            .is_none_or(|s| s.status.is_terminal() && s.status != Status::Completed),
        "{ours:?}"
    );
}

/// Go's v2 provider charges per MiB (DataLimit, SendVoucherResult, UpdateValidationStatus)
/// and asks for a final payment; we pay every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_pays_a_go_provider_per_mib_with_finalization() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(7, dir.path())).await;
    go.ok(
        "policy",
        json!({"voucher_type": VOUCHER_TYPE, "result_type": RESULT_TYPE, "accept": true,
               "pay_every": MIB, "finalize": true}),
    )
    .await;
    let (root, data) = go.import_random(dir.path(), SIZE, 8).await;
    let rust = default_node().await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 8).await;
    let (events, paid) = pay_until_done(&mut sub, &rust.manager, ch, 8, 180).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_file(&*rust.store, &root, &data);
    let theirs = go.wait_finished(&ch, 30).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    // Every payment asked was made and taken.
    let asked: Vec<Value> = go
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "payment_request")
        .collect();
    let taken = go.payments_taken();
    assert!(
        asked.len() >= SIZE / MIB,
        "{} payment requests",
        asked.len()
    );
    assert_eq!(paid.len(), asked.len(), "we paid every request");
    assert_eq!(taken.len(), asked.len(), "Go took every payment");
    let owed: u64 = asked.iter().map(|l| l["owed"].as_u64().unwrap()).sum();
    assert_eq!(paid.iter().sum::<u64>(), owed);
    go.assert_no_repeats("out");
}

/// Our provider charges per MiB and asks for a final payment; Go's client pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_pays_a_rust_provider_per_mib_with_finalization() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(8, dir.path())).await;
    go.ok(
        "policy",
        json!({"voucher_type": VOUCHER_TYPE, "result_type": RESULT_TYPE, "accept": true,
               "auto_pay": true}),
    )
    .await;
    let pay = Arc::new(PayPerBytes::new(MIB as u64, true));
    let rust: RustNode = node(RustNodeOptions {
        revalidator: Some(pay.clone()),
        ..RustNodeOptions::default()
    })
    .await;
    let (root, data) = import_random(&*rust.store, SIZE, 9);
    go.connect(&multiaddr(&rust.manager).await).await;
    let ch = go.open("pull", rust.manager.peer_id(), &root, 9).await;
    let theirs = go.wait_finished(&ch, 180).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    go.assert_file(dir.path(), &root, &data).await;
    let requests = pay.requests.load(Ordering::SeqCst);
    assert!(
        requests as usize >= SIZE / MIB,
        "{requests} payment requests"
    );
    let paid: Vec<Value> = go
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "paid" && l["chid"] == chid_json(&ch))
        .collect();
    assert_eq!(paid.len() as u64, requests, "Go paid every request");
    assert_eq!(
        pay.payments.load(Ordering::SeqCst),
        requests,
        "we took every payment"
    );
    assert_eq!(
        pay.paid.load(Ordering::SeqCst),
        pay.owed.load(Ordering::SeqCst),
        "paid in full"
    );
    go.assert_no_repeats("in");
    let ours = rust.manager.channel_state(ch).await.unwrap().unwrap();
    assert_eq!(ours.status, Status::Completed);
}

/// Go's client restarts its pull while it owes our provider a payment: our answer to the
/// restart says we are still paused, Go takes it so, and nothing more is sent until Go pays;
/// then every later interval is asked for and paid as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_restarting_its_pull_while_it_owes_us_gets_nothing_more_until_it_pays() {
    let dir = tempfile::tempdir().unwrap();
    let mut owing = go_client_owing(dir.path(), 10, Flavor::V2, MIB as u64, SIZE).await;
    // Go hears the restart's answer: still paused by us (go-data-transfer v2 keeps the
    // status Ongoing and says who paused in flags).
    let status = owing.restart().await;
    assert_eq!(status["responder_paused"], true, "{status}");
    owing.pay_and_finish(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_cbor_dag_is_pushed_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(9, dir.path()).await;
    let rust = default_node().await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    go.connect(&multiaddr(&rust.manager).await).await;

    // We push one of ours to Go.
    let (root, _) = dag_cbor_dag(&*rust.store, 6, 5, 48 << 10, 10);
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.push(go.peer_id, root, 10).await;
    let events = wait_finished(&mut sub, ch, 60).await;
    assert_eq!(events.last().unwrap().1.status, Status::Completed);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    let order = walk_order(&*rust.store, root);
    assert_eq!(go_walk(&go, &root).await, order, "Go holds the whole DAG");
    assert_eq!(
        go.blocks("in"),
        order,
        "blocks arrive in traversal order, each once"
    );

    // Go pushes one of its own (made here, imported there from a CAR) to us.
    let made = MemoryBlockstore::new();
    let (root2, _) = dag_cbor_dag(&made, 4, 7, 40 << 10, 11);
    let car = dir.path().join("push.car");
    datatransfer_ipld::car::export_car(
        &made,
        root2,
        Selector::explore_all_recursively(),
        std::fs::File::create(&car).unwrap(),
    )
    .unwrap();
    go.ok("import_car", json!({"path": car})).await;
    let ch = go.open("push", rust.manager.peer_id(), &root2, 11).await;
    let events = wait_finished(&mut sub, ch, 60).await;
    assert_eq!(events.last().unwrap().1.status, Status::Completed);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    assert_eq!(walk_order(&*rust.store, root2), walk_order(&made, root2));
}

/// Go opens many pulls at once; our responder serves two at a time and tells the rest they
/// are queued (`RequestAcknowledged`), which go-graphsync takes as a plain update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_pulls_many_files_at_once_and_waits_in_our_queue() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(10, dir.path()).await;
    let mut config = datatransfer_interop::rust::fast_config();
    config.transport.graphsync.max_responses_per_peer = 2;
    let rust = datatransfer_interop::rust::node(datatransfer_interop::rust::RustNodeOptions {
        config,
        ..Default::default()
    })
    .await;
    go.connect(&multiaddr(&rust.manager).await).await;
    let files: Vec<(Cid, Vec<u8>)> = (0..30)
        .map(|i| import_random(&*rust.store, 300_000, 1_000 + i))
        .collect();
    let opens = files
        .iter()
        .map(|(root, _)| go.open("pull", rust.manager.peer_id(), root, 10));
    let channels = futures::future::join_all(opens).await;
    for (ch, (root, data)) in channels.iter().zip(&files) {
        let theirs = go.wait_finished(ch, 60).await;
        assert_eq!(theirs["status"], "Completed", "{theirs}");
        go.assert_file(dir.path(), root, data).await;
    }
}

/// A DAG of over 2,000 blocks of 1 KiB from Go (many blocks to each graphsync message) is
/// pulled in one go: no block refused, no request restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_pulls_a_dag_of_small_blocks_packed_by_go() {
    let dir = tempfile::tempdir().unwrap();
    let go = go_peer(1, dir.path()).await;
    let path = dir.path().join("small-blocks.bin");
    let data = datatransfer_interop::data::random_file(&path, 2 * MIB, 5);
    let r = go
        .ok(
            "import",
            json!({"path": path, "chunk_size": 1024, "raw_leaves": true, "cid_version": 1}),
        )
        .await;
    let root: Cid = r["root"].as_str().unwrap().parse().unwrap();
    let rust = default_node().await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 1).await;
    let events = wait_finished(&mut sub, ch, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert!(
        last.received_blocks_total > 2_048,
        "{}",
        last.received_blocks_total
    );
    // In one go: no failed request restarted.
    let codes: Vec<EventCode> = events.iter().map(|(e, _)| e.code).collect();
    assert!(!codes.contains(&EventCode::Restart), "{codes:?}");
    assert_file(&*rust.store, &root, &data);
}

/// We restart our pull from a Go provider while we owe it a payment: Go's answer leaves the
/// transfer paused by Go (its data limit stays where it was, `ValidateRestart` keeping it),
/// asks again for what we owe, and sends at most the block it held back at the limit until we
/// pay; then every later interval is asked for and paid, and the file is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_our_pull_from_go_while_we_owe_it_gets_nothing_more_until_we_pay() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(12, dir.path())).await;
    go.ok(
        "policy",
        json!({"voucher_type": VOUCHER_TYPE, "result_type": RESULT_TYPE, "accept": true,
               "pay_every": MIB}),
    )
    .await;
    let (root, data) = go.import_random(dir.path(), 4 * MIB, 12).await;
    let rust = default_node().await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 12).await;
    let owed = |st: &ChannelState| {
        st.last_voucher_result()
            .and_then(|r| r.decode::<InteropResult>().ok())
            .and_then(|r| r.owed)
    };
    wait_until(&mut sub, ch, 60, |e, st| {
        e.code == EventCode::NewVoucherResult && owed(st).is_some()
    })
    .await;
    rust.manager.restart_channel(ch).await.unwrap();
    // Go answers the restart, and asks again (its request, which may come first, covers
    // what we owed before).
    let (mut restarted, mut asked) = (false, None);
    let events = wait_until(&mut sub, ch, 60, |e, st| {
        restarted |= e.code == EventCode::Restart;
        if e.code == EventCode::NewVoucherResult {
            asked = owed(st).or(asked);
        }
        restarted && asked.is_some()
    })
    .await;
    let codes: Vec<EventCode> = events.iter().map(|(e, _)| e.code).collect();
    let st = &events.last().unwrap().1;
    assert_eq!(st.status, Status::ResponderPaused, "{codes:?}");
    let due = asked.unwrap();
    // Whatever was in flight lands, then nothing until we pay: one interval and the block
    // Go's limit let through.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let st = rust.manager.channel_state(ch).await.unwrap().unwrap();
    assert_eq!(st.status, Status::ResponderPaused);
    assert!(
        st.received < 2 * MIB as u64,
        "{} bytes received unpaid",
        st.received
    );
    rust.manager
        .send_voucher(ch, voucher(12, due))
        .await
        .unwrap();
    let (events, paid) = pay_on_from(&mut sub, &rust.manager, ch, 12, due, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_file(&*rust.store, &root, &data);
    let theirs = go.wait_finished(&ch, 30).await;
    assert_eq!(theirs["status"], "Completed", "{theirs}");
    assert!(
        !paid.is_empty(),
        "no interval after the restart was asked for"
    );
    assert_eq!(
        go.payments_taken().len(),
        1 + paid.len(),
        "Go took every payment"
    );
}
