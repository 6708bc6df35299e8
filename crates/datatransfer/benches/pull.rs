//! Prints the wall time, throughput and peak memory of a pull between two Managers in one
//! process (TCP on 127.0.0.1), 1 GiB by default (`DT_BENCH_MIB` to change it).
//!
//! `cargo bench -p datatransfer`. The provider's file lives in a memory block store; the
//! client writes into a store that counts blocks but keeps none, so the memory figure shows
//! what the transfer itself costs above the provider's data, then into a memory block store,
//! from a provider that trusts its store (the default) and from one that hashes every block
//! it serves: the client checks every block in all three. Compare the throughput with
//! `cargo bench -p datatransfer-graphsync` (graphsync alone) on the same machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datatransfer::{AcceptAll, Cid, DagCbor, Manager, Status, TypedNode, all_selector};
use datatransfer_ipld::blockstore::{Blockstore, BlockstoreError, MemoryBlockstore};
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};

/// Keeps nothing; counts what it is given.
#[derive(Default)]
struct CountingStore {
    bytes: AtomicU64,
}

impl Blockstore for CountingStore {
    fn get(&self, _: &Cid) -> Result<Option<Arc<[u8]>>, BlockstoreError> {
        Ok(None)
    }

    fn put(&self, _: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn has(&self, _: &Cid) -> Result<bool, BlockstoreError> {
        Ok(false)
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mib: usize = std::env::var("DT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let provider_blocks = Arc::new(MemoryBlockstore::new());
        {
            let mut x = 0x9e37_79b9u64;
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let root = import_bytes(&*provider_blocks, &data, &ImportOptions::default())
                .expect("import")
                .root;
            drop(data);
            // Two providers on the same blocks: one trusts its store (the default: blocks
            // checked on their way in are served without hashing them again), one hashes
            // every block it serves; the side-by-side shows what the trust saves.
            let mut providers = Vec::new();
            for trust in [true, false] {
                let mut config = datatransfer::ManagerConfig::default();
                config.transport.graphsync.trust_local_stores = trust;
                let provider = Manager::builder()
                    .blockstore(provider_blocks.clone())
                    .config(config)
                    .build()
                    .await
                    .expect("provider");
                provider
                    .register_voucher_type("BenchVoucher", Arc::new(AcceptAll))
                    .await
                    .expect("register");
                provider.start().await.expect("start");
                providers.push(provider);
            }
            // First into a store that keeps nothing (the memory figure is the transfer's
            // own), then into a memory store like graphsync's benchmark (the throughput to
            // compare with it), from each provider.
            for (keep, trusted) in [(false, true), (true, true), (true, false)] {
                let provider = &providers[usize::from(!trusted)];
                let sink = Arc::new(CountingStore::default());
                let kept = Arc::new(MemoryBlockstore::new());
                let store: Arc<dyn Blockstore> = if keep { kept.clone() } else { sink.clone() };
                let client = Manager::builder()
                    .blockstore(store)
                    .build()
                    .await
                    .expect("client");
                client.start().await.expect("start");
                let peer = client
                    .connect(&provider.multiaddr().expect("addr"))
                    .await
                    .expect("connect");
                let baseline = rss_kib("VmRSS:");
                // Reset the peak (VmHWM) so it covers the pull only.
                let _ = std::fs::write("/proc/self/clear_refs", "5");
                let mut events = client.subscribe().await.expect("subscribe");
                let voucher = TypedNode::new(
                    "BenchVoucher".into(),
                    DagCbor::from_bytes(vec![0x00]).expect("the integer 0"),
                );
                let start = Instant::now();
                let id = client
                    .open_pull_channel(peer, voucher, root, all_selector())
                    .await
                    .expect("open");
                let mut status = Status::Requested;
                while let Some((ev, st)) = events.next().await {
                    if st.channel_id == id && ev.code == datatransfer::EventCode::Error {
                        eprintln!("error: {}", ev.message);
                    }
                    if st.channel_id == id && st.status.is_terminal() {
                        status = st.status;
                        break;
                    }
                }
                let secs = start.elapsed().as_secs_f64();
                assert_eq!(status, Status::Completed);
                let peak = rss_kib("VmHWM:");
                let served = if trusted {
                    "provider trusts its store"
                } else {
                    "provider hashes what it serves"
                };
                if keep {
                    assert!(kept.len() as u64 >= (size as u64) >> 20);
                    println!(
                        "Manager pull of {mib} MiB into a memory block store ({served}): {secs:.2} s wall, {:.0} MB/s",
                        size as f64 / secs / 1e6
                    );
                } else {
                    let got = sink.bytes.load(Ordering::Relaxed);
                    assert!(got >= size as u64, "received {got} of {size} bytes");
                    println!(
                        "Manager pull of {mib} MiB into a store that keeps nothing ({served}): {secs:.2} s wall, {:.0} MB/s; RSS {} MiB before (the provider's file), peak {} MiB during: {} MiB for the transfer",
                        size as f64 / secs / 1e6,
                        baseline >> 10,
                        peak >> 10,
                        peak.saturating_sub(baseline) >> 10
                    );
                }
                client.stop().await.expect("stop");
            }
            for provider in providers {
                provider.stop().await.expect("stop");
            }
        }
    });
}
