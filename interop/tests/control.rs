//! Pause, resume and cancel mid-transfer, from each side, between our Manager and a
//! go-data-transfer v2 node. The sender is slowed at its source (our graphsync rate limit, or
//! go-peer's `throttle`), so each transfer runs for a few seconds with little in flight, and
//! "mid-transfer" is a byte count, not a guess about timing.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::time::Duration;

use datatransfer::{ChannelId, Cid, Status};
use datatransfer_interop::MIB;
use datatransfer_interop::data::{assert_file, import_random};
use datatransfer_interop::go::{GoPeer, GoPeerOptions, chid_json};
use datatransfer_interop::rust::{
    RustNode, RustNodeOptions, fast_config, multiaddr, node, wait_finished, wait_until,
};
use serde_json::{Value, json};

const SIZE: usize = 12 * MIB;
/// Our side's graphsync send rate when we provide: the transfer takes about 3 s.
const RATE: u64 = 4 * MIB as u64;

/// What a test needs: a Go peer, our node with its rate limit, a file on the provider.
struct Pair {
    go: GoPeer,
    rust: RustNode,
    root: Cid,
    data: Vec<u8>,
    // Last: dropped after the Go peer, whose log it holds.
    dir: tempfile::TempDir,
}

/// `go_provides`: the file is on the Go side (we pull it), else on ours.
async fn pair(seed: u8, go_provides: bool) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(seed, dir.path())).await;
    go.accept_all().await;
    let mut config = fast_config();
    config.transport.graphsync.max_outbound_rate = Some(RATE);
    let rust = node(RustNodeOptions {
        config,
        ..RustNodeOptions::default()
    })
    .await;
    let (root, data) = if go_provides {
        // 256 KiB every 60 ms: about 4 MiB/s.
        go.throttle(60).await;
        go.import_random(dir.path(), SIZE, u64::from(seed)).await
    } else {
        import_random(&*rust.store, SIZE, u64::from(seed))
    };
    rust.manager.connect(&go.multiaddr()).await.unwrap();
    go.connect(&multiaddr(&rust.manager).await).await;
    Pair {
        dir,
        go,
        rust,
        root,
        data,
    }
}

impl Pair {
    /// We open a pull of the file from Go.
    async fn rust_pulls(&self) -> ChannelId {
        self.rust.pull(self.go.peer_id, self.root, 1).await
    }

    /// Go opens a pull of the file from us.
    async fn go_pulls(&self) -> ChannelId {
        self.go
            .open("pull", self.rust.manager.peer_id(), &self.root, 1)
            .await
    }

    /// Waits until Go's side of `chid` has received (or sent) at least `bytes`.
    async fn go_progress(&self, chid: &ChannelId, field: &str, bytes: u64) {
        let want = chid_json(chid);
        self.go
            .wait(60, |l| {
                l["type"] == "event"
                    && l["chid"] == want
                    && l[field].as_u64().is_some_and(|n| n >= bytes)
            })
            .await;
    }

    /// Waits until Go's side of `chid` has its pause flag `flag` set (v2 keeps a channel
    /// `Ongoing` and records pauses as `initiator_paused` / `responder_paused`).
    async fn go_paused(&self, chid: &ChannelId, flag: &str) -> Value {
        let want = chid_json(chid);
        self.go
            .wait(30, |l| {
                l["type"] == "event" && l["chid"] == want && l[flag] == true
            })
            .await
    }

    /// Our file, exported and compared.
    fn assert_rust_has_file(&self) {
        assert_file(&*self.rust.store, &self.root, &self.data);
    }

    /// Go's copy, exported and compared.
    async fn assert_go_has_file(&self) {
        self.go
            .assert_file(self.dir.path(), &self.root, &self.data)
            .await;
    }
}

/// How many bytes `chid` has moved on our side, after it stopped moving for a second.
async fn settled_bytes(rust: &RustNode, chid: ChannelId, received: bool) -> u64 {
    let bytes = || async {
        let st = rust.manager.channel_state(chid).await.unwrap().unwrap();
        if received { st.received } else { st.sent }
    };
    let mut last = bytes().await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = bytes().await;
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_pause_and_resume_a_pull_from_go() {
    let p = pair(40, true).await;
    let mut sub = p.rust.manager.subscribe().await.unwrap();
    let ch = p.rust_pulls().await;
    wait_until(&mut sub, ch, 60, |_, st| st.received >= 3 * MIB as u64).await;
    p.rust.manager.pause_channel(ch).await.unwrap();
    p.go_paused(&ch, "initiator_paused").await;
    let held = settled_bytes(&p.rust, ch, true).await;
    assert!(held < SIZE as u64, "paused at {held} bytes");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        p.rust
            .manager
            .channel_state(ch)
            .await
            .unwrap()
            .unwrap()
            .received,
        held,
        "data moved while paused"
    );
    p.rust.manager.resume_channel(ch).await.unwrap();
    let events = wait_finished(&mut sub, ch, 60).await;
    assert_eq!(events.last().unwrap().1.status, Status::Completed);
    p.assert_rust_has_file();
    assert_eq!(p.go.wait_finished(&ch, 30).await["status"], "Completed");
    p.go.assert_no_repeats("out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_pauses_and_resumes_its_pull_from_us() {
    let p = pair(41, false).await;
    let ch = p.go_pulls().await;
    p.go_progress(&ch, "received", 3 * MIB as u64).await;
    p.go.ok("pause", json!({"chid": chid_json(&ch)})).await;
    let sent = settled_bytes(&p.rust, ch, false).await;
    assert!(sent < SIZE as u64, "paused at {sent} bytes");
    assert_eq!(
        p.rust.manager.channel_status(ch).await.unwrap(),
        Some(Status::InitiatorPaused)
    );
    p.go.ok("resume", json!({"chid": chid_json(&ch)})).await;
    assert_eq!(p.go.wait_finished(&ch, 60).await["status"], "Completed");
    p.assert_go_has_file().await;
    p.go.assert_no_repeats("in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_as_provider_pauses_and_resumes() {
    let p = pair(42, true).await;
    let mut sub = p.rust.manager.subscribe().await.unwrap();
    let ch = p.rust_pulls().await;
    wait_until(&mut sub, ch, 60, |_, st| st.received >= 3 * MIB as u64).await;
    p.go.ok("pause", json!({"chid": chid_json(&ch)})).await;
    wait_until(&mut sub, ch, 30, |_, st| {
        st.status == Status::ResponderPaused
    })
    .await;
    let held = settled_bytes(&p.rust, ch, true).await;
    assert!(held < SIZE as u64, "paused at {held} bytes");
    p.go.ok("resume", json!({"chid": chid_json(&ch)})).await;
    let events = wait_finished(&mut sub, ch, 60).await;
    assert_eq!(events.last().unwrap().1.status, Status::Completed);
    p.assert_rust_has_file();
    assert_eq!(p.go.wait_finished(&ch, 30).await["status"], "Completed");
    p.go.assert_no_repeats("out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_as_provider_pause_and_resume() {
    let p = pair(43, false).await;
    let ch = p.go_pulls().await;
    p.go_progress(&ch, "received", 3 * MIB as u64).await;
    p.rust.manager.pause_channel(ch).await.unwrap();
    p.go_paused(&ch, "responder_paused").await;
    let sent = settled_bytes(&p.rust, ch, false).await;
    assert!(sent < SIZE as u64, "paused at {sent} bytes");
    p.rust.manager.resume_channel(ch).await.unwrap();
    assert_eq!(p.go.wait_finished(&ch, 60).await["status"], "Completed");
    p.assert_go_has_file().await;
    p.go.assert_no_repeats("in");
    assert_eq!(
        p.rust.manager.channel_status(ch).await.unwrap(),
        Some(Status::Completed)
    );
}

/// One side cancels mid-transfer; both end Cancelled, and no more data moves.
async fn cancel(seed: u8, go_provides: bool, go_cancels: bool) {
    let p = pair(seed, go_provides).await;
    let mut sub = p.rust.manager.subscribe().await.unwrap();
    let ch = if go_provides {
        p.rust_pulls().await
    } else {
        p.go_pulls().await
    };
    if go_provides {
        wait_until(&mut sub, ch, 60, |_, st| st.received >= 3 * MIB as u64).await;
    } else {
        p.go_progress(&ch, "received", 3 * MIB as u64).await;
    }
    if go_cancels {
        p.go.ok("close", json!({"chid": chid_json(&ch)})).await;
    } else {
        p.rust.manager.close_channel(ch).await.unwrap();
    }
    let ours = wait_finished(&mut sub, ch, 30).await;
    let ours = &ours.last().unwrap().1;
    let theirs = p.go.wait_finished(&ch, 30).await;
    assert_eq!(ours.status, Status::Cancelled, "ours: {}", ours.message);
    assert_eq!(theirs["status"], "Cancelled", "{theirs}");
    let moved = if go_provides {
        ours.received
    } else {
        ours.sent
    };
    assert!(moved < SIZE as u64, "cancelled after the end: {moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_cancel_a_pull_from_go() {
    cancel(44, true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_cancels_its_pull_from_us() {
    cancel(45, false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_as_provider_cancels() {
    cancel(46, true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_as_provider_cancel() {
    cancel(47, false, false).await;
}
