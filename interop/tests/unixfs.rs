//! Both sides import the same file with the same parameters and get the same root CID:
//! our importer and boxo's (kubo's `ipfs add`) cut and link a file alike.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use datatransfer_interop::MIB;
use datatransfer_interop::data::random_file;
use datatransfer_interop::go::{GoPeer, GoPeerOptions};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::unixfs::{CidVersion, ImportOptions, import_bytes};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_and_rust_imports_give_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(20, dir.path())).await;
    // Sizes around the edges: one chunk, a partial last chunk, more than 174 leaves (a
    // second level), and 20 MiB.
    let sizes = [
        1000,
        256 << 10,
        (256 << 10) + 1,
        175 * (256 << 10) + 12_345,
        20 * MIB,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let path = dir.path().join(format!("file-{i}.bin"));
        let data = random_file(&path, size, 100 + i as u64);
        for (cid_version, version) in [(0, CidVersion::V0), (1, CidVersion::V1)] {
            for raw_leaves in [true, false] {
                let theirs = go
                    .ok(
                        "import",
                        json!({"path": path, "chunk_size": 256 << 10,
                               "raw_leaves": raw_leaves, "cid_version": cid_version}),
                    )
                    .await;
                let ours = import_bytes(
                    &MemoryBlockstore::new(),
                    &data,
                    &ImportOptions {
                        chunk_size: 256 << 10,
                        raw_leaves,
                        cid_version: version,
                        ..ImportOptions::default()
                    },
                )
                .unwrap();
                assert_eq!(
                    ours.root.to_string(),
                    theirs["root"].as_str().unwrap(),
                    "{size} bytes, CIDv{cid_version}, raw leaves {raw_leaves}"
                );
                assert_eq!(ours.size, theirs["size"].as_u64().unwrap());
            }
        }
    }
}
