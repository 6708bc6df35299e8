//! Graphsync alone, with no data-transfer layer: our graphsync node pulls from go-graphsync
//! v0.18 and go-graphsync pulls from ours, with the all-selector and with depth-limited ones;
//! the blocks arrive in the order both traversals visit them.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use datatransfer::Cid;
use datatransfer_graphsync::node::RequestEvent;
use datatransfer_graphsync::{Extensions, RawNode, ResponseStatus};
use datatransfer_interop::bare::BareGraphsync;
use datatransfer_interop::data::{dag_cbor_dag, random_file, selector_cbor, selector_json};
use datatransfer_interop::go::{GoPeer, GoPeerOptions};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{BlockLog, TraversalConfig, walk};
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};
use serde_json::json;

/// The depth limits tried: none, and a few that cut the DAG at different levels.
const DEPTHS: [Option<u64>; 4] = [None, Some(1), Some(3), Some(5)];

/// What our traversal visits under `root` with the selector, in order.
fn our_walk(store: &dyn Blockstore, root: Cid, depth: Option<u64>) -> Vec<String> {
    let selector = Selector::from_dag_cbor(selector_cbor(depth).as_bytes()).unwrap();
    let mut log = BlockLog::default();
    walk(store, root, selector, TraversalConfig::default(), &mut log).unwrap();
    log.0
        .iter()
        .filter(|v| v.present)
        .map(|v| v.cid.to_string())
        .collect()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// Blocks our node receives for a request, in order, and how the request ended.
async fn our_pull(
    ours: &BareGraphsync,
    go: &GoPeer,
    root: Cid,
    depth: Option<u64>,
    into: &MemoryBlockstore,
) -> (Vec<String>, ResponseStatus) {
    let selector = RawNode::new(selector_cbor(depth).as_bytes().to_vec()).unwrap();
    let store: std::sync::Arc<dyn Blockstore> = std::sync::Arc::new(MemoryBlockstore::new());
    let mut handle = ours
        .gs
        .request_into(go.peer_id, root, selector, Extensions::new(), store.clone())
        .await
        .unwrap();
    let mut blocks = Vec::new();
    let status = loop {
        match handle.next().await {
            Some(RequestEvent::Block { cid, .. }) => {
                let data = store.get(&cid).unwrap().unwrap();
                into.put(&cid, &data).unwrap();
                blocks.push(cid.to_string());
            }
            Some(RequestEvent::Completed(r)) => break r.unwrap(),
            Some(RequestEvent::Response(_)) => {}
            None => panic!("the request's events ended without completion"),
        }
    };
    (blocks, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_graphsync_pulls_from_go_graphsync_in_traversal_order() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(30, dir.path())).await;
    go.ok("gs_policy", json!({"accept_all": true})).await;
    // A UnixFS file of 3 levels (small chunks, so there are many links) and a DAG-CBOR DAG.
    let path = dir.path().join("file.bin");
    random_file(&path, 200 * 4096 + 77, 30);
    let file = go
        .ok(
            "import",
            json!({"path": path, "chunk_size": 4096, "raw_leaves": true, "cid_version": 1}),
        )
        .await;
    let file: Cid = file["root"].as_str().unwrap().parse().unwrap();
    let made = MemoryBlockstore::new();
    let (dag, _) = dag_cbor_dag(&made, 6, 5, 8 << 10, 31);
    let car = dir.path().join("dag.car");
    datatransfer_ipld::car::export_car(
        &made,
        dag,
        Selector::explore_all_recursively(),
        std::fs::File::create(&car).unwrap(),
    )
    .unwrap();
    go.ok("import_car", json!({"path": car})).await;

    let ours = BareGraphsync::start().await;
    ours.connect(go.multiaddr()).await;
    for root in [file, dag] {
        let mut full = 0;
        for depth in DEPTHS {
            let got = MemoryBlockstore::new();
            let (blocks, status) = our_pull(&ours, &go, root, depth, &got).await;
            assert_eq!(
                status,
                ResponseStatus::RequestCompletedFull,
                "{root} {depth:?}"
            );
            let theirs = strings(
                &go.ok(
                    "walk",
                    json!({"root": root.to_string(), "selector": selector_json(depth)}),
                )
                .await["cids"],
            );
            assert_eq!(
                blocks, theirs,
                "{root}, depth {depth:?}: order differs from Go's walk"
            );
            assert_eq!(
                our_walk(&got, root, depth),
                theirs,
                "{root}, depth {depth:?}: our walk of what came differs from Go's"
            );
            match depth {
                None => full = blocks.len(),
                Some(_) => assert!(blocks.len() <= full && !blocks.is_empty()),
            }
        }
        assert!(full > 10, "{full} blocks in the whole DAG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_graphsync_pulls_from_rust_graphsync_in_traversal_order() {
    let dir = tempfile::tempdir().unwrap();
    let go = GoPeer::start(GoPeerOptions::new(31, dir.path())).await;
    let ours = BareGraphsync::start().await;
    let file = import_bytes(
        &*ours.store,
        &datatransfer_interop::data::random_bytes(200 * 4096 + 77, 32),
        &ImportOptions {
            chunk_size: 4096,
            ..ImportOptions::default()
        },
    )
    .unwrap()
    .root;
    let (dag, _) = dag_cbor_dag(&*ours.store, 6, 5, 8 << 10, 33);
    go.ok("connect", json!({"addr": ours.addr.to_string()}))
        .await;
    for root in [file, dag] {
        for depth in DEPTHS {
            go.ok("delete_all", json!({})).await;
            let r = go
                .ok(
                    "gs_pull",
                    json!({"peer": ours.peer.to_string(), "root": root.to_string(),
                           "selector": selector_json(depth)}),
                )
                .await;
            let expected = our_walk(&*ours.store, root, depth);
            assert_eq!(
                strings(&r["cids"]),
                expected,
                "{root}, depth {depth:?}: what Go received differs from our walk"
            );
            let theirs = strings(
                &go.ok(
                    "walk",
                    json!({"root": root.to_string(), "selector": selector_json(depth)}),
                )
                .await["cids"],
            );
            assert_eq!(
                theirs, expected,
                "{root}, depth {depth:?}: Go's walk differs"
            );
        }
    }
}
