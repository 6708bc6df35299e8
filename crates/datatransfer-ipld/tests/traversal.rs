//! Walks over multi-block DAGs: order, missing blocks, wrong blocks, depth limits.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::codec::{self, BlockError, DAG_CBOR, DAG_PB, PbLink, PbNode, RAW};
use datatransfer_ipld::selector::{RecursionLimit, Selector, SelectorError};
use datatransfer_ipld::traversal::{
    BlockLog, BlockVisit, MissingBlocks, Step, Traversal, TraversalConfig, TraversalError, walk,
};
use datatransfer_ipld::{Cid, Node};

/// A 3-level DAG-PB tree: root -> 3 intermediate nodes -> 4 raw leaves each. Returns the
/// root and every CID in depth-first, link order.
fn three_levels(store: &MemoryBlockstore) -> (Cid, Vec<Cid>) {
    let mut order = Vec::new();
    let mut mids = Vec::new();
    let mut mid_blocks = Vec::new();
    for m in 0..3u8 {
        let mut leaves = Vec::new();
        for l in 0..4u8 {
            let data = vec![m * 16 + l; 100 + usize::from(l)];
            leaves.push(store.put_new(RAW, &data).unwrap());
        }
        let node = PbNode {
            links: leaves
                .iter()
                .map(|c| PbLink {
                    hash: *c,
                    name: Some(String::new()),
                    tsize: Some(100),
                })
                .collect(),
            data: Some(vec![0x08, 0x02]),
        };
        let cid = store.put_new(DAG_PB, &node.encode()).unwrap();
        mids.push(cid);
        mid_blocks.push((cid, leaves));
    }
    let root = PbNode {
        links: mids
            .iter()
            .map(|c| PbLink {
                hash: *c,
                name: Some(String::new()),
                tsize: Some(400),
            })
            .collect(),
        data: Some(vec![0x08, 0x02]),
    };
    let root_cid = store.put_new(DAG_PB, &root.encode()).unwrap();
    order.push(root_cid);
    for (mid, leaves) in mid_blocks {
        order.push(mid);
        order.extend(leaves);
    }
    (root_cid, order)
}

#[test]
fn the_all_selector_walks_a_dag_pb_tree_depth_first_in_link_order() {
    let store = MemoryBlockstore::new();
    let (root, want) = three_levels(&store);
    let mut log = BlockLog::default();
    walk(
        &store,
        root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        &mut log,
    )
    .unwrap();
    let got: Vec<Cid> = log.0.iter().map(|b| b.cid).collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 1 + 3 + 12);
    assert!(log.0.iter().all(|b| b.present));
    assert_eq!(log.0[2].size, 100, "the first leaf's size");
}

#[test]
fn dag_cbor_links_are_followed_in_encoded_map_order() {
    let store = MemoryBlockstore::new();
    let a = store.put_new(RAW, b"a").unwrap();
    let b = store.put_new(RAW, b"b").unwrap();
    // Canonical order is length first: "zz" < "aaa" although "aaa" sorts first bytewise.
    let root = Node::map(vec![("zz", Node::Link(a)), ("aaa", Node::Link(b))]);
    let bytes = codec::encode_dag_cbor(&root);
    let root_cid = store.put_new(DAG_CBOR, &bytes).unwrap();
    let mut log = BlockLog::default();
    walk(
        &store,
        root_cid,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        &mut log,
    )
    .unwrap();
    assert_eq!(
        log.0.iter().map(|b| b.cid).collect::<Vec<_>>(),
        vec![root_cid, a, b]
    );
}

#[test]
fn missing_blocks_fail_or_are_skipped_and_reported() {
    let store = MemoryBlockstore::new();
    let (root, order) = three_levels(&store);
    // Rebuild the store without the second intermediate node.
    let partial = MemoryBlockstore::new();
    let missing = order[6];
    for cid in &order {
        if *cid != missing {
            partial.put(cid, &store.get(cid).unwrap().unwrap()).unwrap();
        }
    }
    let mut log = BlockLog::default();
    let err = walk(
        &partial,
        root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        &mut log,
    );
    assert_eq!(err, Err(TraversalError::Missing(missing)));

    let skip = TraversalConfig {
        missing: MissingBlocks::Skip,
        ..TraversalConfig::default()
    };
    let mut log = BlockLog::default();
    walk(
        &partial,
        root,
        Selector::explore_all_recursively(),
        skip,
        &mut log,
    )
    .unwrap();
    assert_eq!(
        log.0.len(),
        16 - 4,
        "the missing node's leaves are not reached"
    );
    assert_eq!(
        log.0[6],
        BlockVisit {
            cid: missing,
            size: 0,
            present: false
        }
    );
}

/// Records blocks and nodes (so the walk decodes every block, raw ones too).
#[derive(Default)]
struct BlocksAndNodes {
    blocks: Vec<BlockVisit>,
    raw_nodes: Vec<usize>,
}

impl datatransfer_ipld::traversal::Visitor for BlocksAndNodes {
    fn block(&mut self, visit: &BlockVisit) {
        self.blocks.push(visit.clone());
    }

    fn node(&mut self, _: &datatransfer_ipld::Path, node: &Node, _: bool) {
        // The leaves' bytes (the DAG-PB nodes' 2-byte Data fields are bytes too).
        if let Node::Bytes(b) = node
            && b.len() >= 100
        {
            self.raw_nodes.push(b.len());
        }
    }
}

#[test]
fn a_visitor_of_blocks_only_reaches_the_same_blocks_and_raw_blocks_are_still_checked() {
    let store = MemoryBlockstore::new();
    let (root, want) = three_levels(&store);
    let all = Selector::explore_all_recursively;
    let mut blocks_only = BlockLog::default();
    walk(
        &store,
        root,
        all(),
        TraversalConfig::default(),
        &mut blocks_only,
    )
    .unwrap();
    let mut with_nodes = BlocksAndNodes::default();
    walk(
        &store,
        root,
        all(),
        TraversalConfig::default(),
        &mut with_nodes,
    )
    .unwrap();
    assert_eq!(blocks_only.0, with_nodes.blocks);
    assert_eq!(cids(&blocks_only), want);
    // The visitor that asks for nodes sees the leaves as bytes.
    assert_eq!(with_nodes.raw_nodes.len(), 12);
    assert_eq!(with_nodes.raw_nodes[..4], [100, 101, 102, 103]);

    // A raw leaf that is not the block its CID names is refused either way.
    let mut t = Traversal::new(root, all(), TraversalConfig::default());
    let mut log = BlockLog::default();
    for cid in &want[..2] {
        assert_eq!(t.advance(&mut log).unwrap(), Step::NeedBlock(*cid));
        t.provide(Some(&store.get(cid).unwrap().unwrap()), &mut log)
            .unwrap();
    }
    assert_eq!(t.advance(&mut log).unwrap(), Step::NeedBlock(want[2]));
    let other_leaf = store.get(&want[3]).unwrap().unwrap();
    assert!(matches!(
        t.provide(Some(&other_leaf), &mut log),
        Err(TraversalError::Block {
            source: BlockError::HashMismatch(_),
            ..
        })
    ));
}

#[test]
fn a_requester_detects_a_wrong_or_corrupt_block() {
    let store = MemoryBlockstore::new();
    let (root, order) = three_levels(&store);
    let mut t = Traversal::new(
        root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
    );
    let mut log = BlockLog::default();
    // The right first block, then a block that is not the one the walk expects.
    assert_eq!(t.advance(&mut log).unwrap(), Step::NeedBlock(root));
    t.provide(Some(&store.get(&root).unwrap().unwrap()), &mut log)
        .unwrap();
    assert_eq!(t.advance(&mut log).unwrap(), Step::NeedBlock(order[1]));
    let wrong = store.get(&order[2]).unwrap().unwrap();
    assert!(matches!(
        t.provide(Some(&wrong), &mut log),
        Err(TraversalError::Block {
            source: BlockError::HashMismatch(_),
            ..
        })
    ));
    // A block that matches its CID but is not valid DAG-PB.
    let garbage = b"\xff\xff\xff";
    let bad = store.put_new(DAG_PB, garbage).unwrap();
    let mut t = Traversal::new(
        bad,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
    );
    assert_eq!(t.advance(&mut log).unwrap(), Step::NeedBlock(bad));
    assert!(matches!(
        t.provide(Some(garbage), &mut log),
        Err(TraversalError::Block {
            source: BlockError::DagPb(_),
            ..
        })
    ));
    assert_eq!(t.provide(None, &mut log), Err(TraversalError::NotWaiting));
}

#[test]
fn a_depth_limited_recursion_stops_where_go_ipld_prime_does() {
    let store = MemoryBlockstore::new();
    let (root, order) = three_levels(&store);
    let sequence = std::sync::Arc::new(Selector::ExploreAll {
        next: std::sync::Arc::new(Selector::ExploreRecursiveEdge),
    });
    // The limit counts recursion edges, and DAG-PB spends three per block (Links, the link
    // map, Hash): depth 3 stays in the root, 4 reaches the intermediate nodes, 8 everything.
    for (depth, blocks) in [(3u64, 1usize), (4, 4), (8, 16)] {
        let sel = Selector::ExploreRecursive {
            sequence: sequence.clone(),
            current: sequence.clone(),
            limit: RecursionLimit::Depth(depth),
        };
        let mut log = BlockLog::default();
        walk(&store, root, sel, TraversalConfig::default(), &mut log).unwrap();
        assert_eq!(log.0.len(), blocks, "depth {depth}");
        assert_eq!(log.0[0].cid, order[0]);
    }
    // A DAG nested deeper than the configured limit is refused, not overflowed.
    let mut cid = store.put_new(RAW, b"end").unwrap();
    for _ in 0..50 {
        cid = store
            .put_new(
                DAG_CBOR,
                &codec::encode_dag_cbor(&Node::List(vec![Node::Link(cid)])),
            )
            .unwrap();
    }
    let tight = TraversalConfig {
        max_depth: 20,
        ..TraversalConfig::default()
    };
    let err = walk(
        &store,
        cid,
        Selector::explore_all_recursively(),
        tight,
        &mut BlockLog::default(),
    );
    assert_eq!(err, Err(TraversalError::TooDeep(20)));
}

/// A chain of `len` DAG-CBOR blocks, each a list holding a link to the next, ending in a
/// raw block. Returns its head.
fn chain(store: &MemoryBlockstore, len: usize) -> Cid {
    let mut cid = store.put_new(RAW, b"end").unwrap();
    for _ in 0..len {
        let list = Node::List(vec![Node::Integer(7), Node::Link(cid)]);
        cid = store
            .put_new(DAG_CBOR, &codec::encode_dag_cbor(&list))
            .unwrap();
    }
    cid
}

fn cids(log: &BlockLog) -> Vec<Cid> {
    log.0.iter().map(|b| b.cid).collect()
}

/// A peer's range of 2^62 indexes over a two-element list: the walk looks at the two
/// elements and is done (it used to enumerate the range, and ran out of memory).
#[test]
fn a_huge_range_costs_only_the_list_it_meets() {
    let store = MemoryBlockstore::new();
    let head = chain(&store, 1);
    let huge = Selector::ExploreRange {
        start: 0,
        end: 1 << 62,
        next: std::sync::Arc::new(Selector::Matcher { subset: None }),
    };
    let mut matched = Vec::new();
    struct Matches<'a>(&'a mut Vec<String>);
    impl datatransfer_ipld::traversal::Visitor for Matches<'_> {
        fn node(&mut self, path: &datatransfer_ipld::Path, _: &Node, matched: bool) {
            if matched {
                self.0.push(path.to_string());
            }
        }
    }
    walk(
        &store,
        head,
        huge,
        TraversalConfig::default(),
        &mut Matches(&mut matched),
    )
    .unwrap();
    assert_eq!(matched, ["0", "1"]);
}

/// `ExploreRecursive` over a union of two `ExploreAll`s doubles the selector at every
/// level. On a short chain it walks what the "all" selector walks; on a long one the walk
/// fails with a typed error after a bounded amount of work (it used to take 5 s at 20
/// blocks, doubling with each more).
#[test]
fn a_union_that_multiplies_at_every_level_fails_instead_of_running_away() {
    let edge = std::sync::Arc::new(Selector::ExploreRecursiveEdge);
    let all = Selector::ExploreAll { next: edge };
    let doubling = std::sync::Arc::new(Selector::ExploreUnion(std::sync::Arc::new(vec![
        all.clone(),
        all,
    ])));
    let selector = Selector::ExploreRecursive {
        sequence: doubling.clone(),
        current: doubling,
        limit: RecursionLimit::None,
    };
    let store = MemoryBlockstore::new();

    let short = chain(&store, 4);
    let (mut got, mut want) = (BlockLog::default(), BlockLog::default());
    walk(
        &store,
        short,
        selector.clone(),
        TraversalConfig::default(),
        &mut got,
    )
    .unwrap();
    let all = Selector::explore_all_recursively();
    walk(&store, short, all, TraversalConfig::default(), &mut want).unwrap();
    assert_eq!(cids(&got), cids(&want));
    assert_eq!(got.0.len(), 5);

    let long = chain(&store, 60);
    let config = TraversalConfig::default();
    let err = walk(&store, long, selector, config.clone(), &mut got).unwrap_err();
    assert_eq!(
        err,
        TraversalError::Selector(SelectorError::TooExpensive(config.max_explore_steps))
    );
}

/// A link budget (go-graphsync's max links per request) stops the walk at the link past it;
/// the root counts.
#[test]
fn a_link_budget_stops_the_walk_at_the_link_past_it() {
    let store = MemoryBlockstore::new();
    let head = chain(&store, 4);
    let with = |max| TraversalConfig {
        max_links: Some(max),
        ..TraversalConfig::default()
    };
    let all = Selector::explore_all_recursively;
    let mut log = BlockLog::default();
    walk(&store, head, all(), with(5), &mut log).unwrap();
    assert_eq!(log.0.len(), 5);
    for max in [0, 1, 4] {
        let mut log = BlockLog::default();
        let err = walk(&store, head, all(), with(max), &mut log).unwrap_err();
        assert_eq!(err, TraversalError::TooManyLinks(max));
        assert_eq!(
            log.0.len() as u64,
            max,
            "blocks walked with a budget of {max}"
        );
    }
}
