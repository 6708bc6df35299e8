//! Test data: seeded random files, a DAG-CBOR DAG, selectors in both encodings, and files
//! compared byte for byte.

use std::path::Path;

use datatransfer::{Cid, DagCbor};
use datatransfer_ipld::Node;
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::codec::{DAG_CBOR, RAW, encode_dag_cbor};
use serde_json::{Value, json};

pub use datatransfer_integration_tests::random_bytes;

/// Writes seeded random bytes to `path`; returns them.
pub fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let data = random_bytes(len, seed);
    std::fs::write(path, &data).unwrap();
    data
}

/// Imports `size` seeded random bytes into our store as the Go side would cut them (256 KiB
/// chunks, raw leaves, CIDv1); the root and the bytes.
pub fn import_random(store: &dyn Blockstore, size: usize, seed: u64) -> (Cid, Vec<u8>) {
    let data = random_bytes(size, seed);
    let root = datatransfer_integration_tests::import(store, &data, crate::CHUNK).root;
    (root, data)
}

/// Exports the file under `root` from our store and checks it equals `data`.
pub use datatransfer_integration_tests::assert_file;

/// Asserts the file at `path` holds exactly `data`.
pub fn assert_file_eq(path: &Path, data: &[u8]) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len(), data.len(), "size of {}", path.display());
    assert!(got == data, "{} differs from what was sent", path.display());
}

/// A DAG-CBOR DAG: a root map linking `width` DAG-CBOR nodes, each linking `leaves` raw
/// blocks of `leaf_size` random bytes and carrying a few plain fields. Returns the root and
/// every block's CID.
pub fn dag_cbor_dag(
    store: &dyn Blockstore,
    width: usize,
    leaves: usize,
    leaf_size: usize,
    seed: u64,
) -> (Cid, Vec<Cid>) {
    let mut all = Vec::new();
    let mut children = Vec::new();
    for i in 0..width {
        let mut links = Vec::new();
        for j in 0..leaves {
            let bytes = random_bytes(leaf_size, seed * 1_000_003 + (i * leaves + j) as u64);
            let cid = store.put_new(RAW, &bytes).unwrap();
            all.push(cid);
            links.push(Node::Link(cid));
        }
        let node = Node::map([
            ("index", Node::Integer(i as i128)),
            ("name", Node::String(format!("child-{i}"))),
            ("leaves", Node::List(links)),
        ]);
        let cid = store.put_new(DAG_CBOR, &encode_dag_cbor(&node)).unwrap();
        all.push(cid);
        children.push(Node::Link(cid));
    }
    let root = Node::map([
        ("kind", Node::String("interop".into())),
        ("children", Node::List(children)),
    ]);
    let root = store.put_new(DAG_CBOR, &encode_dag_cbor(&root)).unwrap();
    all.push(root);
    (root, all)
}

/// Explore-all recursively, limited to `depth` links (`None`: no limit), as DAG-JSON for
/// go-peer.
pub fn selector_json(depth: Option<u64>) -> Value {
    let limit = match depth {
        Some(d) => json!({"depth": d}),
        None => json!({"none": {}}),
    };
    json!({"R": {"l": limit, ":>": {"a": {">": {"@": {}}}}}})
}

/// The same selector as DAG-CBOR, for our side.
pub fn selector_cbor(depth: Option<u64>) -> DagCbor {
    let limit = match depth {
        Some(d) => Node::map([("depth", Node::Integer(d.into()))]),
        None => Node::map([("none", Node::map(Vec::<(String, Node)>::new()))]),
    };
    let node = Node::map([(
        "R",
        Node::map([
            ("l", limit),
            (
                ":>",
                Node::map([(
                    "a",
                    Node::map([(
                        ">",
                        Node::map([("@", Node::map(Vec::<(String, Node)>::new()))]),
                    )]),
                )]),
            ),
        ]),
    )]);
    DagCbor::from_bytes(encode_dag_cbor(&node)).unwrap()
}

/// The blocks at the start of the whole-DAG walk under `root` that `store` holds, up to the
/// first one it lacks: what `graphsync/do-not-send-first-blocks` lets a sender skip.
pub fn held_prefix(store: &dyn Blockstore, root: Cid) -> Vec<String> {
    let mut log = datatransfer_ipld::traversal::BlockLog::default();
    // The walk stops at the first missing block with an error; what it saw is the prefix.
    let _ = datatransfer_ipld::traversal::walk(
        store,
        root,
        datatransfer_ipld::selector::Selector::explore_all_recursively(),
        datatransfer_ipld::traversal::TraversalConfig::default(),
        &mut log,
    );
    log.0
        .iter()
        .take_while(|v| v.present)
        .map(|v| v.cid.to_string())
        .collect()
}
