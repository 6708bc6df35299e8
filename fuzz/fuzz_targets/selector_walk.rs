//! A peer's selector, walked over a fixed DAG (a UnixFS file and a DAG-CBOR tree of maps,
//! lists, strings, bytes and links) the way a graphsync responder walks it. It may fail,
//! but must not panic, hang or grow without bound.

#![no_main]

use std::sync::OnceLock;

use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::codec::{self, DAG_CBOR};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{MissingBlocks, NoVisitor, TraversalConfig, walk};
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};
use datatransfer_ipld::{Cid, Node};
use libfuzzer_sys::fuzz_target;

fn dag() -> &'static (MemoryBlockstore, Vec<Cid>) {
    static DAG: OnceLock<(MemoryBlockstore, Vec<Cid>)> = OnceLock::new();
    DAG.get_or_init(|| {
        let store = MemoryBlockstore::new();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = ImportOptions {
            chunk_size: 1_000,
            max_links: 4,
            raw_leaves: false,
            ..ImportOptions::default()
        };
        let file = import_bytes(&store, &data, &file).expect("import").root;
        let mut next = file;
        for i in 0..6i128 {
            let node = Node::map([
                ("bytes", Node::Bytes(vec![i as u8; 10])),
                ("file", Node::Link(file)),
                (
                    "list",
                    Node::List(vec![Node::Integer(i), Node::Link(next), Node::Null]),
                ),
                ("name", Node::String(format!("level {i}"))),
            ]);
            next = store
                .put_new(DAG_CBOR, &codec::encode_dag_cbor(&node))
                .expect("put");
        }
        (store, vec![file, next])
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(selector) = Selector::from_dag_cbor(data) else {
        return;
    };
    let (store, roots) = dag();
    let config = TraversalConfig {
        missing: MissingBlocks::Skip,
        ..TraversalConfig::default()
    };
    for root in roots {
        let _ = walk(
            store,
            *root,
            selector.clone(),
            config.clone(),
            &mut NoVisitor,
        );
    }
});
