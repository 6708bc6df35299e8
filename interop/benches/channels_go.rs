//! 1,000 small pulls and 50 of 20 MiB at once from one provider, side by side in one run:
//! the Go peer (go-data-transfer v2, go-graphsync v0.18, in-memory datastore, its own
//! process) and one of our Managers (in this process, memory block store, SQLite channel
//! store), each pulled by the same kind of client: one of our Managers that checks every
//! block and keeps none.
//!
//! `cargo bench -p datatransfer-interop --bench channels_go` (`DT_CHANNELS=1000` and
//! `DT_BIG=50` to change the counts). Prints, for each provider: wall time until every
//! channel completed, throughput, the CPU seconds of this process (the client, and for ours
//! the provider too) and of the Go process, and the peak RSS of the Go process.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datatransfer::{Cid, ManagerConfig, PeerId, Status};

use datatransfer_interop::go::{GoPeer, GoPeerOptions};
use datatransfer_interop::rust::{RustNode, RustNodeOptions, node};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};
use serde_json::json;

#[path = "../../crates/datatransfer/benches/support/mod.rs"]
mod support;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU seconds of process `pid`.
fn cpu(pid: &str) -> f64 {
    let (user, sys) = support::process_cpu(pid);
    user + sys
}

/// The client: checks every block, keeps none, channels in SQLite.
async fn client(dir: &Path) -> (RustNode, Arc<support::CountingStore>) {
    let counted = Arc::new(support::CountingStore::default());
    let node = node(RustNodeOptions {
        sqlite: Some(&dir.join("client.db")),
        store: Some(counted.clone()),
        config: ManagerConfig::default(),
        ..RustNodeOptions::default()
    })
    .await;
    (node, counted)
}

/// Pulls every root from `provider` at once; returns the seconds until all completed.
async fn pull_all(client: &RustNode, provider: PeerId, roots: &[Cid]) -> f64 {
    let mut events = client.manager.subscribe().await.expect("subscribe");
    let start = Instant::now();
    let mut running = HashSet::new();
    for (i, root) in roots.iter().enumerate() {
        running.insert(client.pull(provider, *root, i as u64 + 1).await);
    }
    while !running.is_empty() {
        let Some((ev, st)) = events.next().await else {
            panic!("events ended");
        };
        if st.status.is_terminal() && running.remove(&st.channel_id) {
            assert_eq!(st.status, Status::Completed, "{}", ev.message);
        }
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let small = count("DT_CHANNELS", 1000);
    let big = count("DT_BIG", 50);
    let moved = ((small << 16) + big * (20 << 20)) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let files: Vec<(Vec<u8>, usize)> = (0..small)
            .map(|i| (datatransfer_test_support::random_bytes(64 << 10, i as u64), 32 << 10))
            .chain((0..big).map(|i| (datatransfer_test_support::random_bytes(20 << 20, 1_000_000 + i as u64), 1 << 20)))
            .collect();
        let me = std::process::id().to_string();

        // The Go provider, the same files imported with the same chunk sizes.
        let go = GoPeer::start(GoPeerOptions::new(7, dir.path())).await;
        let go_pid = go.pid().expect("go pid").to_string();
        let mut go_roots = Vec::new();
        for (i, (data, chunk)) in files.iter().enumerate() {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, data).expect("write");
            let r = go
                .ok(
                    "import",
                    json!({"path": path, "chunk_size": chunk, "raw_leaves": true, "cid_version": 1}),
                )
                .await;
            go_roots.push(r["root"].as_str().expect("root").parse::<Cid>().expect("cid"));
            let _ = std::fs::remove_file(&path);
        }
        let go_rss_before = support::status_kib(&go_pid, "VmHWM:") >> 10;
        std::fs::create_dir_all(dir.path().join("a")).expect("client dir");
        let (c, counted) = client(&dir.path().join("a")).await;
        c.manager.connect(&go.multiaddr()).await.expect("connect");
        let (cpu0, go_cpu0) = (cpu(&me), cpu(&go_pid));
        let secs = pull_all(&c, go.peer_id, &go_roots).await;
        let (client_cpu, go_cpu) = (cpu(&me) - cpu0, cpu(&go_pid) - go_cpu0);
        assert!(counted.bytes() >= moved);
        println!(
            "Go provider: {small} pulls of 64 KiB and {big} of 20 MiB at once, all completed in {secs:.2} s ({:.0} MB/s); CPU: client {client_cpu:.2} s, Go provider {go_cpu:.2} s; Go provider peak RSS {} MiB ({go_rss_before} MiB after the imports)",
            moved as f64 / secs / 1e6,
            (support::status_kib(&go_pid, "VmHWM:") >> 10),
        );
        c.manager.stop().await.expect("stop");
        go.shutdown().await;

        // Ours, in this process.
        let blocks = Arc::new(MemoryBlockstore::new());
        let roots: Vec<Cid> = files
            .iter()
            .map(|(data, chunk)| {
                let options = ImportOptions {
                    chunk_size: *chunk,
                    ..ImportOptions::default()
                };
                import_bytes(&*blocks, data, &options).expect("import").root
            })
            .collect();
        assert_eq!(roots, go_roots, "the same DAGs on both providers");
        let mut config = ManagerConfig::default();
        config.transport.graphsync.max_requests_per_peer = 4096;
        std::fs::create_dir_all(dir.path().join("b")).expect("provider dir");
        let provider = node(RustNodeOptions {
            sqlite: Some(&dir.path().join("b").join("provider.db")),
            store: Some(blocks),
            config,
            ..RustNodeOptions::default()
        })
        .await;
        let (c, counted) = client(&dir.path().join("b")).await;
        c.manager
            .connect(&provider.manager.multiaddr().expect("addr"))
            .await
            .expect("connect");
        let cpu0 = cpu(&me);
        let secs = pull_all(&c, provider.manager.peer_id(), &roots).await;
        let spent = cpu(&me) - cpu0;
        assert!(counted.bytes() >= moved);
        println!(
            "our provider: {small} pulls of 64 KiB and {big} of 20 MiB at once, all completed in {secs:.2} s ({:.0} MB/s); CPU: client and provider together {spent:.2} s",
            moved as f64 / secs / 1e6,
        );
        c.manager.stop().await.expect("stop");
        provider.manager.stop().await.expect("stop");
    });
}
