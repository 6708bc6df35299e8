//! Prints traversal throughput over an in-memory store: a 256 MiB UnixFS DAG (1 MiB raw
//! leaves) walked with the "all" selector, blocks verified, as a graphsync responder walks.
//!
//! `cargo bench -p datatransfer-ipld`. Figures are printed, not asserted.

use std::time::Instant;

use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{BlockLog, TraversalConfig, walk};
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};

fn main() {
    let size = 256usize << 20;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let store = MemoryBlockstore::new();
    let start = Instant::now();
    let out = import_bytes(&store, &data, &ImportOptions::default()).expect("import");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "UnixFS import of 256 MiB (1 MiB chunks): {:.0} MB/s",
        size as f64 / secs / 1e6
    );
    drop(data);

    for verify in [true, false] {
        let config = TraversalConfig {
            verify,
            ..TraversalConfig::default()
        };
        let start = Instant::now();
        let mut log = BlockLog::default();
        walk(
            &store,
            out.root,
            Selector::explore_all_recursively(),
            config,
            &mut log,
        )
        .expect("walk");
        let secs = start.elapsed().as_secs_f64();
        let bytes: usize = log.0.iter().map(|b| b.size).sum();
        println!(
            "traversal of a 256 MiB DAG ({} blocks, verify={verify}): {:.0} MB/s",
            log.0.len(),
            bytes as f64 / secs / 1e6
        );
    }
}
