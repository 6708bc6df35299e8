//! Memory flat in the payload: pulls of 1, 8 and 32 GiB between two Managers in one process
//! (TCP on 127.0.0.1, noise, yamux), printing the process's peak RSS above its baseline for
//! each, with the throughput and CPU time.
//!
//! `cargo bench -p datatransfer --bench flat` (`DT_FLAT_GIB=1,8,32` to change the sizes). No
//! disk holds 32 GiB twice here, so the file is generated on the fly: the provider's store
//! keeps only the UnixFS interior nodes and a map from each leaf's CID to its number, and
//! makes a leaf's 1 MiB again when it is asked for it (the leaf's number is in its first
//! bytes, the rest comes from a generator seeded with it). The client checks every block as
//! always, and stores into a store that counts blocks and keeps none. So the RSS is what the
//! transfer itself holds, on both sides, with 32 GiB flowing through.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, RwLock};
use std::time::Instant;

mod support;

use datatransfer::{Cid, Status};
use datatransfer_ipld::blockstore::{Blockstore, BlockstoreError, Bytes};
use datatransfer_ipld::unixfs::{ImportOptions, import};

/// Leaf size: 1 MiB raw leaves, our importer's default.
const LEAF: usize = 1 << 20;
/// The raw codec: leaves.
const RAW: u64 = 0x55;

/// Leaf `n`: its number in the first 8 bytes, then a xorshift stream seeded with it.
fn leaf(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEAF);
    out.extend_from_slice(&n.to_be_bytes());
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < LEAF {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(LEAF);
    out
}

/// The generated file, leaf after leaf, as a reader for the importer.
struct Generated {
    leaves: u64,
    next: u64,
    current: Vec<u8>,
    pos: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.current.len() {
            if self.next == self.leaves {
                return Ok(0);
            }
            self.current = leaf(self.next);
            self.next += 1;
            self.pos = 0;
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The provider's store: interior nodes kept, leaves made again on demand.
#[derive(Default)]
struct GeneratedStore {
    nodes: RwLock<HashMap<Cid, Bytes>>,
    leaves: RwLock<HashMap<Cid, u64>>,
}

impl Blockstore for GeneratedStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        if let Some(n) = self.leaves.read().expect("lock").get(cid) {
            return Ok(Some(Bytes::from(leaf(*n))));
        }
        Ok(self.nodes.read().expect("lock").get(cid).cloned())
    }

    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        if cid.codec() == RAW && data.len() == LEAF {
            let n = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
            self.leaves.write().expect("lock").insert(*cid, n);
        } else {
            self.nodes
                .write()
                .expect("lock")
                .insert(*cid, Bytes::copy_from_slice(data));
        }
        Ok(())
    }

    fn has(&self, cid: &Cid) -> Result<bool, BlockstoreError> {
        Ok(self.leaves.read().expect("lock").contains_key(cid)
            || self.nodes.read().expect("lock").contains_key(cid))
    }

    /// The blocks are the importer's: checked when made.
    fn trusted(&self) -> bool {
        true
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::var("DT_FLAT_GIB")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Arc::new(GeneratedStore::default());
        let provider = support::provider(store.clone(), datatransfer::ManagerConfig::default()).await;
        for gib in sizes {
            let size = gib << 30;
            let generated = Generated {
                leaves: size / LEAF as u64,
                next: 0,
                current: Vec::new(),
                pos: 0,
            };
            let root = import(&*store, generated, &ImportOptions::default())
                .expect("import")
                .root;
            let sink = Arc::new(support::CountingStore::default());
            let (client, peer) = support::client_of(sink.clone(), &provider).await;
            let baseline = support::status_kib("self", "VmRSS:");
            // Reset the peak (VmHWM) so it covers this pull only.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let (user0, sys0) = support::process_cpu("self");
            let start = Instant::now();
            let (status, _) = support::pull_to_end(&client, peer, root).await;
            let secs = start.elapsed().as_secs_f64();
            let (user1, sys1) = support::process_cpu("self");
            let cpu = user1 + sys1 - user0 - sys0;
            assert_eq!(status, Status::Completed);
            let got = sink.bytes();
            assert!(got >= size, "received {got} of {size} bytes");
            let peak = support::status_kib("self", "VmHWM:");
            println!(
                "pull of {gib} GiB (generated, into a store that keeps nothing): {secs:.1} s, {:.0} MB/s, {:.2} cores; RSS {} MiB before, peak {} MiB: {} MiB above (both Managers)",
                size as f64 / secs / 1e6,
                cpu / secs,
                baseline >> 10,
                peak >> 10,
                peak.saturating_sub(baseline) >> 10,
            );
            client.stop().await.expect("stop");
        }
        provider.stop().await.expect("stop");
    });
}
