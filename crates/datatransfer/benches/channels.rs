//! Many channels at once between two Managers in one process (TCP on 127.0.0.1, noise, yamux,
//! each with its SQLite channel store in a temporary directory):
//!
//! 1. 1,000 pulls the provider accepts paused (its validator answers `Pause`, as a paid
//!    retrieval waiting for its first payment does): the RSS each open, idle channel costs
//!    (both ends together), then all cancelled.
//! 2. 1,000 pulls of small DAGs (64 KiB in two leaves) and 50 pulls of 20 MiB, all opened at
//!    once: wall time until every one completed, the process's CPU time, the share of it the
//!    two engine tasks spent (`Manager::engine_busy`) and the two SQLite store threads spent,
//!    and the peak RSS above the baseline. The client checks every block and keeps none (a
//!    store that counts them), so the RSS is the channels' own.
//!
//! `cargo bench -p datatransfer --bench channels` (`DT_CHANNELS=1000` and `DT_BIG=50` to
//! change the counts).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use async_trait::async_trait;
use datatransfer::{
    AcceptAll, ChannelId, Cid, DagCbor, EventCode, Manager, ManagerConfig, PeerId,
    RequestValidator, Status, TypedNode, Validation, ValidationError, ValidationOutcome, Voucher,
    all_selector,
};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};
use datatransfer_test_support::random_bytes;

/// Accepts every pull paused.
struct AcceptPaused;

#[async_trait]
impl RequestValidator for AcceptPaused {
    async fn validate_push(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        _: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        Ok(Validation::new(ValidationOutcome::rejected("no pushes")))
    }

    async fn validate_pull(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        _: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        Ok(Validation::new(ValidationOutcome::Pause))
    }
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn voucher(kind: &str) -> Voucher {
    TypedNode::new(
        kind.into(),
        DagCbor::from_bytes(vec![0x00]).expect("the integer 0"),
    )
}

fn config() -> ManagerConfig {
    let mut config = ManagerConfig::default();
    // Room for every channel of the bench on one peer (the default is 1,024).
    config.transport.graphsync.max_requests_per_peer = 4096;
    config
}

fn main() {
    let small = count("DT_CHANNELS", 1000);
    let big = count("DT_BIG", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let blocks = Arc::new(MemoryBlockstore::new());
        let small_opts = ImportOptions {
            chunk_size: 32 << 10,
            ..ImportOptions::default()
        };
        let small_roots: Vec<Cid> = (0..small)
            .map(|i| {
                import_bytes(&*blocks, &random_bytes(64 << 10, i as u64), &small_opts)
                    .expect("import")
                    .root
            })
            .collect();
        let big_roots: Vec<Cid> = (0..big)
            .map(|i| {
                let data = random_bytes(20 << 20, 1_000_000 + i as u64);
                import_bytes(&*blocks, &data, &ImportOptions::default())
                    .expect("import")
                    .root
            })
            .collect();
        let provider = Manager::builder()
            .blockstore(blocks)
            .sqlite_store(dir.path().join("provider.db"))
            .config(config())
            .build()
            .await
            .expect("provider");
        provider
            .register_voucher_type("Go", Arc::new(AcceptAll))
            .await
            .expect("register");
        provider
            .register_voucher_type("Idle", Arc::new(AcceptPaused))
            .await
            .expect("register");
        provider.start().await.expect("start");
        // The client keeps no blocks (it checks each, and counts them): the RSS is the
        // channels' own, not the 1 GiB they move.
        let received = Arc::new(support::CountingStore::default());
        let client = Manager::builder()
            .blockstore(received.clone())
            .sqlite_store(dir.path().join("client.db"))
            .config(config())
            .build()
            .await
            .expect("client");
        client.start().await.expect("start");
        let peer = client
            .connect(&provider.multiaddr().expect("addr"))
            .await
            .expect("connect");
        let mut events = client.subscribe().await.expect("subscribe");

        // 1. Open and idle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let baseline = support::status_kib("self", "VmRSS:");
        let mut idle = HashSet::new();
        for root in small_roots.iter() {
            let id = client
                .open_pull_channel(peer, voucher("Idle"), *root, all_selector())
                .await
                .expect("open");
            idle.insert(id);
        }
        // Every channel answered: accepted paused, or told to wait in the provider's queue.
        let mut answered = HashSet::new();
        while answered.len() < idle.len() {
            let Some((ev, st)) = events.next().await else {
                panic!("events ended");
            };
            if idle.contains(&st.channel_id)
                && matches!(
                    ev.code,
                    EventCode::Accept | EventCode::PauseResponder | EventCode::TransferRequestQueued
                )
            {
                answered.insert(st.channel_id);
            }
            assert!(!st.status.is_terminal(), "{:?}: {}", st.status, ev.message);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let open = support::status_kib("self", "VmRSS:");
        let states = client
            .channels(datatransfer::ChannelFilter::InProgress)
            .await
            .expect("channels");
        let paused = states
            .iter()
            .filter(|s| s.status == Status::ResponderPaused)
            .count();
        println!(
            "{} channels open and idle ({paused} accepted paused, {} queued at the provider): RSS {} MiB above the {} MiB before, {:.1} KiB a channel (both ends)",
            idle.len(),
            idle.len() - paused,
            open.saturating_sub(baseline) >> 10,
            baseline >> 10,
            open.saturating_sub(baseline) as f64 / idle.len() as f64,
        );
        for id in &idle {
            client.close_channel(*id).await.expect("close");
        }
        let mut closed = 0;
        while closed < idle.len() {
            let Some((_, st)) = events.next().await else {
                panic!("events ended");
            };
            if idle.contains(&st.channel_id) && st.status.is_terminal() {
                closed += 1;
            }
        }

        // 2. Everything at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = support::status_kib("self", "VmRSS:");
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let (cpu0, store0) = (support::threads_cpu(""), support::threads_cpu("dt-sqlite-store"));
        let engine0 = client.engine_busy() + provider.engine_busy();
        let start = Instant::now();
        let mut running = HashSet::new();
        for root in big_roots.iter().chain(&small_roots) {
            let id = client
                .open_pull_channel(peer, voucher("Go"), *root, all_selector())
                .await
                .expect("open");
            running.insert(id);
        }
        let total = running.len();
        let mut failed = 0;
        while !running.is_empty() {
            let Some((ev, st)) = events.next().await else {
                panic!("events ended");
            };
            if st.status.is_terminal()
                && running.remove(&st.channel_id)
                && st.status != Status::Completed
            {
                failed += 1;
                eprintln!("{}: {:?} {}", st.channel_id, st.status, ev.message);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = support::threads_cpu("") - cpu0;
        let store = support::threads_cpu("dt-sqlite-store") - store0;
        let engine = (client.engine_busy() + provider.engine_busy() - engine0).as_secs_f64();
        let peak = support::status_kib("self", "VmHWM:");
        assert_eq!(failed, 0, "channels that did not complete");
        let moved = ((small << 16) + (big << 20) * 20) as u64;
        let got = received.bytes();
        assert!(got >= moved, "received {got} of {moved} bytes");
        println!(
            "{small} pulls of 64 KiB and {big} of 20 MiB at once: all {total} completed in {secs:.2} s ({:.0} MB/s); CPU {cpu:.2} s ({:.2} cores), of it the engines {:.0} % and the SQLite stores {:.0} %; RSS peak {} MiB above the {} MiB before",
            moved as f64 / secs / 1e6,
            cpu / secs,
            100.0 * engine / cpu,
            100.0 * store / cpu,
            peak.saturating_sub(baseline) >> 10,
            baseline >> 10,
        );
        client.stop().await.expect("stop");
        provider.stop().await.expect("stop");
    });
}
