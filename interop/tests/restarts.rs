//! Restarts across implementations: the Go process killed mid-transfer and started again
//! with the same key, port and datastore; our process killed and started again on its
//! store (pulling, and pushing as a storage client does); a plain disconnect, of pulls and
//! of pushes both ways (against go-data-transfer v2 and v1.15); and pauses longer than
//! go-libp2p's 10 s idle stream reset.
//!
//! "No block sent twice where the protocol allows it": a restart tells the sender how many
//! blocks at the start of the walk the receiver holds (`do-not-send-first-blocks`), so none
//! of the blocks in that prefix, taken when the transfer broke, may come again. Blocks that
//! were on the wire when it broke may; their number is printed.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use datatransfer::{ChannelId, Cid, EventCode, Status};
use datatransfer_interop::data::{assert_file, held_prefix, import_random};
use datatransfer_interop::go::{Flavor, GoPeer, GoPeerOptions, chid_from_json, chid_json};
use datatransfer_interop::rust::{
    InteropResult, RustNode, RustNodeOptions, fast_config, go_client_owing, multiaddr, node,
    voucher, wait_finished, wait_until,
};
use datatransfer_interop::{MIB, RESULT_TYPE, VOUCHER_TYPE};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::fsstore::FsBlockstore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const SIZE: usize = 20 * MIB;
/// Our side's graphsync send rate when we provide, so a transfer is still running when it
/// is broken.
const RATE: u64 = 5 * MIB as u64;

/// Checks that none of the `held` blocks is among `sent` after the break; returns how many
/// blocks were sent twice in all (the ones on the wire when it broke).
fn assert_held_not_resent(held: &[String], before: &[String], after: &[String]) -> usize {
    let held: HashSet<&String> = held.iter().collect();
    for b in after {
        assert!(
            !held.contains(b),
            "block {b} was held by the receiver when the transfer broke, and was sent again"
        );
    }
    let before: HashSet<&String> = before.iter().collect();
    let twice = after.iter().filter(|b| before.contains(b)).count();
    eprintln!(
        "{} blocks held at the break, {} sent after it, {twice} of them sent twice",
        held.len(),
        after.len()
    );
    twice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_provider_killed_mid_pull_comes_back_and_the_pull_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GoPeerOptions::new(50, dir.path());
    opts.persist = true;
    let mut go = GoPeer::start(opts.clone()).await;
    go.accept_all().await;
    // About 4 MiB/s at the source: still running when broken, little in flight.
    go.throttle(60).await;
    let (root, data) = go.import_random(dir.path(), SIZE, 50).await;
    let rust = node(RustNodeOptions::default()).await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 1).await;
    wait_until(&mut sub, ch, 60, |_, st| st.received >= 5 * MIB as u64).await;

    go.kill().await;
    wait_until(&mut sub, ch, 30, |e, _| e.code == EventCode::Disconnected).await;
    let held = held_prefix(&*rust.store, root);
    let before = go.blocks("out");
    // The same key, port and datastore.
    opts.listen = format!("/ip4/127.0.0.1/tcp/{}", go.port());
    let go2 = GoPeer::start(opts).await;
    go2.accept_all().await;

    let events = wait_finished(&mut sub, ch, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_file(&*rust.store, &root, &data);
    assert_eq!(go2.wait_finished(&ch, 30).await["status"], "Completed");
    assert_held_not_resent(&held, &before, &go2.blocks("out"));
}

/// A go-data-transfer v2 receiver (a storage provider taking a deal's data) is killed
/// mid-push and comes back with the same key, port and datastore: our monitor restarts the
/// push, and Go, resuming from what its datastore holds, gets the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_receiver_killed_mid_push_comes_back_and_the_push_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GoPeerOptions::new(62, dir.path());
    opts.persist = true;
    let mut go = GoPeer::start(opts.clone()).await;
    go.accept_all().await;
    let Pushing {
        rust,
        root,
        data,
        mut sub,
        ch,
    } = Pushing::to(&go, 62).await;

    go.kill().await;
    wait_until(&mut sub, ch, 30, |e, _| e.code == EventCode::Disconnected).await;
    opts.listen = format!("/ip4/127.0.0.1/tcp/{}", go.port());
    let go2 = GoPeer::start(opts).await;
    go2.accept_all().await;

    let events = wait_finished(&mut sub, ch, 120).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_eq!(go2.wait_finished(&ch, 30).await["status"], "Completed");
    go2.assert_file(dir.path(), &root, &data).await;
    // The new process asked only for what its datastore lacked: the blocks after the ones
    // it counted at the restart, each once.
    let restart = go2
        .events_of(&ch)
        .into_iter()
        .find(|l| l["code"] == "Restart")
        .expect("Go saw the restart");
    let held = restart["received_cids"].as_u64().unwrap() as usize;
    let all = held_prefix(&*rust.store, root);
    let got = go2.blocks_on_wire("in");
    assert!(held > 0, "Go's datastore kept nothing");
    assert_eq!(got, all[held..], "{held} blocks held of {}", all.len());
}

/// Our side as a process: killed with SIGKILL mid-transfer, started again on its store.
struct RustPeer(tokio::process::Child);

impl RustPeer {
    /// Starts the process, waits until its new channel moved 5 MiB (its `counter`, `sent` or
    /// `received`), and kills it; the channel's id.
    async fn killed_at(args: &[String], counter: &str) -> ChannelId {
        let (mut first, mut lines) = Self::start(args);
        let opened = next_line(&mut lines, |v| v["type"] == "channel").await;
        assert_eq!(opened["resumed"], false);
        next_line(&mut lines, |v| {
            v["type"] == "progress" && v[counter].as_u64().unwrap() >= 5 * MIB as u64
        })
        .await;
        first.0.start_kill().unwrap();
        first.0.wait().await.unwrap();
        chid_from_json(&opened["chid"])
    }

    /// Starts the process again on its files: it must resume `ch` from its store and
    /// complete it. The process (alive till dropped) and its `channel` line.
    async fn resumes(args: &[String], ch: ChannelId) -> (Self, Value) {
        let (again, mut lines) = Self::start(args);
        let resumed = next_line(&mut lines, |v| v["type"] == "channel").await;
        assert_eq!(
            resumed["resumed"], true,
            "the channel was not found in the store"
        );
        assert_eq!(chid_from_json(&resumed["chid"]), ch);
        let done = next_line(&mut lines, |v| v["type"] == "done").await;
        assert_eq!(done["status"], "Completed", "{done}");
        (again, resumed)
    }

    fn start(
        args: &[String],
    ) -> (
        Self,
        tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rust-peer"))
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (Self(child), lines)
    }
}

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("rust-peer exited");
            let v: Value = serde_json::from_str(&line).unwrap();
            if pred(&v) {
                return v;
            }
        }
    })
    .await
    .expect("rust-peer: no awaited line within 120 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_process_killed_mid_pull_resumes_from_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(51, dir.path())).await;
    go.accept_all().await;
    // About 4 MiB/s at the source: still running when broken, little in flight.
    go.throttle(60).await;
    let (root, data) = go.import_random(dir.path(), SIZE, 51).await;
    let ours = dir.path().join("rust-peer");
    let args: Vec<String> = vec![
        "--key".into(),
        "ab".repeat(32), // not the Go peer's seed (51 = 0x33)
        "--data-dir".into(),
        ours.to_str().unwrap().into(),
        "--from".into(),
        go.multiaddr().to_string(),
        "--root".into(),
        root.to_string(),
    ];
    let ch = RustPeer::killed_at(&args, "received").await;

    // What survived the kill on disk is what the next process holds.
    let held = {
        let store = FsBlockstore::open(ours.join("blocks"), false).unwrap();
        held_prefix(&store, root)
    };
    assert!(!held.is_empty(), "nothing survived the kill");
    let before = go.blocks("out");
    let mark = before.len();
    let _resumed = RustPeer::resumes(&args, ch).await;
    let store = FsBlockstore::open(ours.join("blocks"), false).unwrap();
    assert_file(&store, &root, &data);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    let after = go.blocks("out")[mark..].to_vec();
    assert_held_not_resent(&held, &before, &after);
}

/// Our process pushing to go-data-transfer (a storage client sending a deal's data) is
/// killed mid-push and started again on its store: it restarts the push from its channel
/// store, Go's request after the restart skips what Go holds, and Go gets the whole file.
async fn our_process_killed_mid_push_resumes(seed: u8, flavor: Flavor) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GoPeerOptions::new(seed, dir.path());
    opts.flavor = flavor;
    let go = GoPeer::start(opts).await;
    go.accept_all().await;
    let ours = dir.path().join("rust-peer");
    let args: Vec<String> = vec![
        "--key".into(),
        "ab".repeat(32),
        "--data-dir".into(),
        ours.to_str().unwrap().into(),
        "--to".into(),
        go.multiaddr().to_string(),
        "--size".into(),
        SIZE.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--rate".into(),
        RATE.to_string(),
    ];
    let ch = RustPeer::killed_at(&args, "sent").await;

    let (_peer, resumed) = RustPeer::resumes(&args, ch).await;
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    let (root, data) = import_random(&MemoryBlockstore::new(), SIZE, seed.into());
    assert_eq!(resumed["root"], root.to_string());
    go.assert_file(dir.path(), &root, &data).await;
    assert_restart_skipped_what_go_held(&go, &ch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_process_killed_mid_push_to_go_resumes_from_its_store() {
    our_process_killed_mid_push_resumes(60, Flavor::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_process_killed_mid_push_to_go_v1_resumes_from_its_store() {
    our_process_killed_mid_push_resumes(61, Flavor::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_from_go_restarts_after_a_plain_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(52, dir.path())).await;
    go.accept_all().await;
    // About 4 MiB/s at the source: still running when broken, little in flight.
    go.throttle(60).await;
    let (root, data) = go.import_random(dir.path(), SIZE, 52).await;
    let rust = node(RustNodeOptions {
        known_peers: vec![(go.peer_id, go.addrs[0].clone())],
        ..RustNodeOptions::default()
    })
    .await;
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = rust.pull(go.peer_id, root, 1).await;
    broken_and_restarted(&go, &rust, &mut sub, ch, root, &data).await;
}

/// Drops the connection while `ch` brings Go's file `data` (under `root`) to `rust` (5 MiB
/// in), then checks that the channel was restarted and completed on both sides with the file
/// whole, and that no block we held at the break came again.
async fn broken_and_restarted(
    go: &GoPeer,
    rust: &RustNode,
    sub: &mut datatransfer::Subscription,
    ch: ChannelId,
    root: Cid,
    data: &[u8],
) {
    wait_until(sub, ch, 60, |_, st| st.received >= 5 * MIB as u64).await;
    assert!(rust.manager.disconnect(go.peer_id).await);
    // What we hold now, before the restart asks for the rest: a subset of what it skips.
    let held = held_prefix(&*rust.store, root);
    let events = wait_finished(sub, ch, 120).await;
    assert!(
        events.iter().any(|(e, _)| e.code == EventCode::Restart),
        "the channel was not restarted"
    );
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_file(&*rust.store, &root, data);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    // Split by graphsync request: the first one's blocks (some still on the wire at the
    // break) and those of the requests that resumed it. (A split by a count taken before
    // the disconnect counted blocks the first request sent meanwhile as resent.)
    let all = go.blocks_by_request("out");
    let first = all.first().map(|(r, _)| r.clone()).unwrap_or_default();
    let (before, after): (Vec<_>, Vec<_>) = all.into_iter().partition(|(r, _)| *r == first);
    let cids = |v: Vec<(String, String)>| v.into_iter().map(|(_, c)| c).collect::<Vec<_>>();
    assert!(!after.is_empty(), "no block came in a later request");
    assert_held_not_resent(&held, &cids(before), &cids(after));
}

/// A push of ours to a Go peer, 5 MiB in: our node (sending at `RATE`, so the push is still
/// running when broken), the file and its root, our subscription and the channel.
struct Pushing {
    rust: RustNode,
    root: Cid,
    data: Vec<u8>,
    sub: datatransfer::Subscription,
    ch: ChannelId,
}

impl Pushing {
    /// Pushes the seeded random file to `go`, and waits until 5 MiB of it went out.
    async fn to(go: &GoPeer, seed: u64) -> Self {
        let mut config = fast_config();
        config.transport.graphsync.max_outbound_rate = Some(RATE);
        let rust = node(RustNodeOptions {
            config,
            known_peers: vec![(go.peer_id, go.addrs[0].clone())],
            ..RustNodeOptions::default()
        })
        .await;
        let (root, data) = import_random(&*rust.store, SIZE, seed);
        rust.manager.connect(&go.multiaddr()).await.unwrap();
        let mut sub = rust.manager.subscribe().await.unwrap();
        let ch = rust.push(go.peer_id, root, 1).await;
        wait_until(&mut sub, ch, 60, |_, st| st.sent >= 5 * MIB as u64).await;
        Self {
            rust,
            root,
            data,
            sub,
            ch,
        }
    }
}

/// How many of `blocks` came more than once.
fn repeats(blocks: &[String]) -> usize {
    blocks.len() - blocks.iter().collect::<HashSet<_>>().len()
}

/// A push of ours to go-data-transfer (a storage deal's direction) loses its connection
/// midway: our monitor restarts it, Go's graphsync request after the restart skips what Go
/// holds, and the file arrives whole.
async fn a_push_to_go_restarts(seed: u8, flavor: Flavor) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GoPeerOptions::new(seed, dir.path());
    opts.flavor = flavor;
    let go = GoPeer::start(opts).await;
    go.accept_all().await;
    let Pushing {
        rust,
        root,
        data,
        mut sub,
        ch,
    } = Pushing::to(&go, seed.into()).await;
    assert!(rust.manager.disconnect(go.peer_id).await);
    let events = wait_finished(&mut sub, ch, 120).await;
    assert!(
        events.iter().any(|(e, _)| e.code == EventCode::Restart),
        "the channel was not restarted"
    );
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
    go.assert_file(dir.path(), &root, &data).await;
    assert_restart_skipped_what_go_held(&go, &ch);
}

/// Go, receiving a push, held some blocks when the pusher restarted it: none of them came
/// again, nor any other block.
fn assert_restart_skipped_what_go_held(go: &GoPeer, ch: &ChannelId) {
    // What Go held when it took the restart (its count then).
    let restart = go
        .events_of(ch)
        .into_iter()
        .find(|l| l["code"] == "Restart")
        .expect("Go saw the restart");
    let held = restart["received_cids"].as_u64().unwrap() as usize;
    let got = go.blocks_on_wire("in");
    assert!(
        held > 0 && held < got.len(),
        "{held} of {} blocks",
        got.len()
    );
    assert_held_not_resent(&got[..held], &got[..held], &got[held..]);
    assert_eq!(repeats(&got), 0, "a block came twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_go_restarts_after_a_plain_disconnect() {
    a_push_to_go_restarts(56, Flavor::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_go_v1_restarts_after_a_plain_disconnect() {
    a_push_to_go_restarts(58, Flavor::V1).await;
}

/// go-data-transfer pushes to us with its channel monitor on, and we drop the connection
/// midway: Go restarts the push, we take the restart as the same channel, and our graphsync
/// request after it asks only for what we lack.
async fn a_push_from_go_restarts(seed: u8, flavor: Flavor) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GoPeerOptions::new(seed, dir.path());
    opts.restart_config = true;
    opts.flavor = flavor;
    let go = GoPeer::start(opts).await;
    go.accept_all().await;
    // About 4 MiB/s at the source: still running when broken, little in flight.
    go.throttle(60).await;
    let (root, data) = go.import_random(dir.path(), SIZE, seed.into()).await;
    let rust = node(RustNodeOptions::default()).await;
    go.connect(&multiaddr(&rust.manager).await).await;
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch = go.open("push", rust.manager.peer_id(), &root, 1).await;
    broken_and_restarted(&go, &rust, &mut sub, ch, root, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_go_restarts_after_a_plain_disconnect() {
    a_push_from_go_restarts(57, Flavor::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_go_v1_restarts_after_a_plain_disconnect() {
    a_push_from_go_restarts(59, Flavor::V1).await;
}

/// go-libp2p resets a stream it reads from after 10 s without a message; a pause longer
/// than that must not break the transfer (our writer opens a new stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_pausing_its_pull_past_the_idle_stream_reset_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(53, dir.path())).await;
    go.accept_all().await;
    let mut config = fast_config();
    config.transport.graphsync.max_outbound_rate = Some(RATE);
    let rust = node(RustNodeOptions {
        config,
        ..RustNodeOptions::default()
    })
    .await;
    let (root, data) = import_random(&*rust.store, SIZE, 53);
    go.connect(&multiaddr(&rust.manager).await).await;
    let ch = go.open("pull", rust.manager.peer_id(), &root, 1).await;
    let want = chid_json(&ch);
    go.wait(60, |l| {
        l["type"] == "event" && l["chid"] == want && l["received"].as_u64() >= Some(4 * MIB as u64)
    })
    .await;
    go.ok("pause", json!({"chid": want})).await;
    // The pause itself is the scenario: longer than the 10 s idle reset.
    tokio::time::sleep(Duration::from_secs(12)).await;
    go.ok("resume", json!({"chid": want})).await;
    assert_eq!(go.wait_finished(&ch, 90).await["status"], "Completed");
    go.assert_file(dir.path(), &root, &data).await;
    assert_eq!(
        rust.manager.channel_status(ch).await.unwrap(),
        Some(Status::Completed)
    );
}

/// We take 12 s to pay a Go provider that paused for payment: both sides' streams sit idle
/// past the reset, and the transfer still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_a_go_provider_after_the_idle_stream_reset_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(54, dir.path())).await;
    go.ok(
        "policy",
        json!({"voucher_type": VOUCHER_TYPE, "result_type": RESULT_TYPE, "accept": true,
               "pay_every": 8 * MIB}),
    )
    .await;
    let (root, data) = go.import_random(dir.path(), SIZE, 54).await;
    let rust = Arc::new(node(RustNodeOptions::default()).await);
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    let mut sub = rust.manager.subscribe().await.unwrap();
    let ch: ChannelId = rust.pull(go.peer_id, root, 9).await;
    let mut paid = 0u64;
    let mut payments = 0;
    loop {
        let events = wait_until(&mut sub, ch, 120, |e, st| {
            st.status.is_terminal() || e.code == EventCode::NewVoucherResult
        })
        .await;
        let st = &events.last().unwrap().1;
        if st.status.is_terminal() {
            assert_eq!(st.status, Status::Completed, "{}", st.message);
            break;
        }
        let owed = st
            .last_voucher_result()
            .and_then(|r| r.decode::<InteropResult>().ok())
            .and_then(|r| r.owed)
            .unwrap_or(0);
        if owed == 0 {
            continue;
        }
        if payments == 0 {
            tokio::time::sleep(Duration::from_secs(12)).await;
        }
        paid += owed;
        payments += 1;
        rust.manager
            .send_voucher(ch, voucher(9, paid))
            .await
            .unwrap();
    }
    assert!(payments >= 2, "{payments} payments");
    assert_file(&*rust.store, &root, &data);
    assert_eq!(go.wait_finished(&ch, 30).await["status"], "Completed");
}

/// A Go client takes 12 s to pay our provider, which paused for payment: both sides' streams
/// sit idle past go-libp2p's reset, and the transfer still completes, every interval paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_client_paying_us_after_the_idle_stream_reset_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut owing = go_client_owing(dir.path(), 55, Flavor::V2, 8 * MIB as u64, SIZE).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    owing.pay_and_finish(dir.path()).await;
    // Go reset the quiet stream, which our writer found when it resumed.
    let ours = wait_finished(&mut owing.sub, owing.ch, 30).await;
    let codes: Vec<EventCode> = ours.iter().map(|(e, _)| e.code).collect();
    assert!(codes.contains(&EventCode::SendDataError), "{codes:?}");
    assert_eq!(ours.last().unwrap().1.status, Status::Completed);
}
