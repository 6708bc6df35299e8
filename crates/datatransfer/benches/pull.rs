//! Prints the wall time, throughput, CPU time and peak memory of pulls between two Managers in
//! one process (TCP on 127.0.0.1, noise, yamux), 1 GiB each by default (`DT_BENCH_MIB` to
//! change it).
//!
//! `cargo bench -p datatransfer`. The file is imported twice into the provider's memory block
//! store, once with 1 MiB raw leaves (our importer's default) and once with 256 KiB leaves (what
//! Go's importer makes), and each is pulled into a store that counts blocks but keeps none (the
//! memory figure is what the transfer itself costs), into a memory block store and into the
//! filesystem block store (a temporary directory, no fsync), through the page cache and past
//! it (`FsBlockstore::direct_writes`). One more pull comes from a
//! provider that hashes every block it serves instead of trusting its store. The client
//! checks every block in all of them. `DT_BENCH_CASES=1MiB/nothing,256KiB/fs` runs only the
//! cases named. CPU is the whole process's (both Managers) over the pull, from
//! `/proc/self/stat`: user and system seconds, the cores kept busy on average, and the minor
//! page faults (one per 4 KiB page of new memory touched: how much of the system time is the
//! kernel handing out fresh pages, the cost that varies most on these VMs). A full run
//! ends with the kernel's own cost of what the memory and filesystem cases ask of it
//! (touching new memory, writing new files), floors under those figures on this machine.
//!
//! The filesystem cases' directories are removed only when the run ends: on ext4 without a
//! journal (as on the VMs these benches run on) every new file's inode is sought past the
//! inodes of its group deleted in the last minute (six minutes while their inode table
//! block waits to be written), one lookup each, so removing a case's thousands of files
//! would charge the next case seconds of the kernel's time (a profile of the writer thread
//! in such a run: 84 % in `openat`, in ext4's `recently_deleted`). For the same reason, runs
//! of the filesystem cases a few minutes apart compare best. The other cost these cases pay
//! to the kernel is the page cache's fresh pages: on these VMs copying a block into the page
//! cache faults in memory the host backs on first touch, up to half the process's CPU.
//!
//! The runtime is tokio's default (two workers). Built with `RUSTFLAGS="--cfg tokio_unstable"`,
//! `DT_BENCH_NO_LIFO=1` turns off the workers' LIFO slot: a task woken by another runs next on
//! the same worker, where the other worker cannot steal it, so the stages of a pull (the
//! connections' tasks, the stream's reader and decoder) often queue on one core while the
//! other idles. Three alternated full runs: without the slot 1.75-1.96 cores busy in the
//! memory-store cases but one (1.54), 1.40-1.88 with it; the filesystem cases gain nothing.
//! An application built with tokio_unstable can make its runtime this way.

use std::sync::Arc;
use std::time::Instant;

mod support;

use datatransfer::Status;
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::fsstore::FsBlockstore;
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};

/// The blocks a client stores into.
#[derive(Clone, Copy, PartialEq)]
enum Sink {
    Nothing,
    Memory,
    Files,
    /// The filesystem store writing its blocks past the page cache.
    FilesDirect,
}

impl Sink {
    fn name(self) -> &'static str {
        match self {
            Self::Nothing => "nothing",
            Self::Memory => "memory",
            Self::Files => "fs",
            Self::FilesDirect => "fs-direct",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Nothing => "a store that keeps nothing",
            Self::Memory => "a memory block store",
            Self::Files => "the filesystem block store",
            Self::FilesDirect => "the filesystem block store, direct writes",
        }
    }
}

fn main() {
    let mib: usize = std::env::var("DT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let only: Option<Vec<String>> = std::env::var("DT_BENCH_CASES")
        .ok()
        .map(|v| v.split(',').map(|c| c.trim().to_owned()).collect());
    let size = mib << 20;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(2).enable_all();
    #[cfg(tokio_unstable)]
    if std::env::var_os("DT_BENCH_NO_LIFO").is_some() {
        runtime.disable_lifo_slot();
    }
    let rt = runtime.build().expect("runtime");
    rt.block_on(async {
        let provider_blocks = Arc::new(MemoryBlockstore::new());
        let mut roots = Vec::new();
        {
            let data = datatransfer_test_support::random_bytes(size, 1);
            for (leaves, chunk_size) in [("1MiB", 1 << 20), ("256KiB", 256 << 10)] {
                let options = ImportOptions {
                    chunk_size,
                    ..ImportOptions::default()
                };
                let root = import_bytes(&*provider_blocks, &data, &options)
                    .expect("import")
                    .root;
                roots.push((leaves, root));
            }
        }
        // Two providers on the same blocks: one trusts its store (the default: blocks checked
        // on their way in are served without hashing them again), one hashes every block it
        // serves; the side-by-side shows what the trust saves.
        let mut providers = Vec::new();
        for trust in [true, false] {
            let mut config = datatransfer::ManagerConfig::default();
            config.transport.graphsync.trust_local_stores = trust;
            let provider = support::provider(provider_blocks.clone(), config).await;
            providers.push(provider);
        }
        let mut cases = Vec::new();
        // The filesystem cases' directories, removed at the end (see the module's docs).
        let mut dirs = Vec::new();
        // The pulls that keep nothing first: their memory figure is the transfer's own, not
        // blocks a previous case stored and the allocator kept.
        for sink in [Sink::Nothing, Sink::Memory, Sink::Files, Sink::FilesDirect] {
            for &(leaves, root) in &roots {
                cases.push((leaves, root, sink, true));
            }
        }
        cases.push((roots[0].0, roots[0].1, Sink::Memory, false));
        for (leaves, root, sink, trusted) in cases {
            let name = format!("{leaves}/{}", sink.name());
            let wanted = only
                .as_ref()
                .is_none_or(|o| o.contains(&name) && trusted);
            if !wanted {
                continue;
            }
            let provider = &providers[usize::from(!trusted)];
            let counted = Arc::new(support::CountingStore::default());
            let mut files = None;
            let store: Arc<dyn Blockstore> = match sink {
                Sink::Nothing => counted.clone(),
                Sink::Memory => Arc::new(MemoryBlockstore::new()),
                Sink::Files | Sink::FilesDirect => {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = FsBlockstore::open(dir.path(), false)
                        .expect("fs store")
                        .direct_writes(sink == Sink::FilesDirect);
                    dirs.push(dir);
                    let store = Arc::new(store);
                    files = Some(store.clone());
                    store
                }
            };
            let (client, peer) = support::client_of(store.clone(), provider).await;
            let baseline = support::status_kib("self", "VmRSS:");
            // Reset the peak (VmHWM) so it covers the pull only.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            // On stderr, for a profiler to attach at the start of a pull.
            eprintln!("pulling {name}");
            let (user0, sys0) = support::process_cpu("self");
            let faults0 = support::minor_faults("self");
            let start = Instant::now();
            let (status, received) = support::pull_to_end(&client, peer, root).await;
            let secs = start.elapsed().as_secs_f64();
            let (user1, sys1) = support::process_cpu("self");
            let faults = support::minor_faults("self") - faults0;
            assert_eq!(status, Status::Completed);
            assert!(received >= size as u64, "received {received} of {size} bytes");
            if sink == Sink::Nothing {
                let got = counted.bytes();
                assert!(got >= size as u64, "stored {got} of {size} bytes");
            } else {
                assert!(store.has(&root).expect("has"), "the root was stored");
            }
            if sink == Sink::FilesDirect {
                // Not a buffered run under the direct label: the filesystem took them.
                let direct = files.as_ref().map_or(0, |f| f.direct_written());
                assert!(direct > 0, "the temp dir's filesystem refused direct writes");
            }
            let peak = support::status_kib("self", "VmHWM:");
            let served = if trusted {
                "provider trusts its store"
            } else {
                "provider hashes what it serves"
            };
            let (user, sys) = (user1 - user0, sys1 - sys0);
            println!(
                "Manager pull of {mib} MiB, {leaves} leaves, into {} ({served}): {secs:.2} s wall, {:.0} MB/s; CPU {user:.2} s user + {sys:.2} s system ({:.2} cores), {faults} page faults; RSS peak {} MiB above the {} MiB before",
                sink.describe(),
                size as f64 / secs / 1e6,
                (user + sys) / secs,
                support::status_kib("self", "VmHWM:").max(peak).saturating_sub(baseline) >> 10,
                baseline >> 10,
            );
            client.stop().await.expect("stop");
        }
        for provider in providers {
            provider.stop().await.expect("stop");
        }
        if only.is_none() {
            kernel_floor(mib);
        }
        drop(dirs);
    });
}

/// What the kernel alone charges for what a store that keeps the data asks of it, measured
/// after the pulls (so it warms nothing for them): the CPU time to touch as much new memory
/// as the pull moved (a memory block store keeps every byte), and to write it as files the
/// way the filesystem block store does (1 MiB each into a temporary file, renamed into one
/// of 256 directories). Both are floors under those cases' figures on this machine; on a
/// virtual machine whose memory the host backs on first touch they are large.
fn kernel_floor(mib: usize) {
    let size = mib << 20;
    let (user0, sys0) = support::process_cpu("self");
    let mut memory: Vec<u8> = Vec::with_capacity(size);
    memory.resize(size, 1);
    let (user1, sys1) = support::process_cpu("self");
    drop(memory);
    println!(
        "kernel floor: touching {mib} MiB of new memory costs {:.2} s of CPU",
        (user1 - user0) + (sys1 - sys0)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let block = vec![7u8; 1 << 20];
    let tmp = dir.path().join(".tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let (user0, sys0) = support::process_cpu("self");
    for i in 0..mib {
        let shard = dir.path().join(format!("{:02x}", i % 256));
        let from = tmp.join(i.to_string());
        std::fs::write(&from, &block).expect("write");
        std::fs::create_dir_all(&shard).expect("mkdir");
        std::fs::rename(&from, shard.join(i.to_string())).expect("rename");
    }
    let (user1, sys1) = support::process_cpu("self");
    println!(
        "kernel floor: writing {mib} MiB as {mib} new files of 1 MiB costs {:.2} s of CPU",
        (user1 - user0) + (sys1 - sys0)
    );
}
