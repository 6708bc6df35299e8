//! UnixFS import and export.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_ipld::Cid;
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::codec::{self, DAG_PB, PbNode, RAW};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{BlockLog, TraversalConfig, walk};
use datatransfer_ipld::unixfs::{CidVersion, ImportOptions, export, import_bytes};
use datatransfer_test_support::random_bytes;

fn opts(chunk_size: usize, max_links: usize) -> ImportOptions {
    ImportOptions {
        chunk_size,
        max_links,
        raw_leaves: true,
        ..ImportOptions::default()
    }
}

#[test]
fn an_empty_file_is_the_empty_raw_block() {
    let store = MemoryBlockstore::new();
    let out = import_bytes(&store, b"", &ImportOptions::default()).unwrap();
    // The well-known CIDv1 of the empty raw block (SHA2-256 of nothing).
    assert_eq!(
        out.root.to_string(),
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    );
    assert_eq!(out.size, 0);
}

#[test]
fn a_file_of_one_chunk_is_its_raw_leaf() {
    let store = MemoryBlockstore::new();
    let out = import_bytes(&store, b"hello world\n", &ImportOptions::default()).unwrap();
    assert_eq!(out.root, codec::cid_of(RAW, b"hello world\n"));
    assert_eq!(out.blocks, 1);
}

/// A three-chunk file built by hand from the DAG-PB and UnixFS specs, byte by byte: the
/// importer must produce exactly this root.
#[test]
fn a_small_multi_chunk_file_matches_the_spec_built_root() {
    let store = MemoryBlockstore::new();
    let out = import_bytes(&store, b"abcdefghij", &opts(4, 174)).unwrap();

    let leaves = [&b"abcd"[..], b"efgh", b"ij"].map(|c| codec::cid_of(RAW, c));
    let mut want = Vec::new();
    for (leaf, size) in leaves.iter().zip([4u8, 4, 2]) {
        let cid = leaf.to_bytes();
        assert_eq!(cid.len(), 36);
        // PBLink { Hash (1): cid, Name (2): "", Tsize (3): size }, as field 2 of PBNode.
        let link: Vec<u8> = [&[0x0a, 36][..], &cid, &[0x12, 0x00, 0x18, size]].concat();
        want.push(0x12);
        want.push(link.len() as u8);
        want.extend(link);
    }
    // Data (1): UnixFS { Type: File (2), filesize: 10, blocksizes: 4, 4, 2 }.
    let unixfs = [0x08, 0x02, 0x18, 10, 0x20, 4, 0x20, 4, 0x20, 2];
    want.push(0x0a);
    want.push(unixfs.len() as u8);
    want.extend(unixfs);
    assert_eq!(out.root, codec::cid_of(DAG_PB, &want));
    assert_eq!(store.get(&out.root).unwrap().as_deref(), Some(&want[..]));
    assert_eq!((out.size, out.blocks), (10, 4));
}

#[test]
fn full_nodes_grow_a_new_level_as_go_unixfs_does() {
    let store = MemoryBlockstore::new();
    // 7 chunks, 3 links per node: root -> [node(3 leaves), node(3 leaves), node(1 leaf)].
    let data = random_bytes(7 * 4, 1);
    let out = import_bytes(&store, &data, &opts(4, 3)).unwrap();
    let root = PbNode::decode(&store.get(&out.root).unwrap().unwrap()).unwrap();
    let fanout: Vec<usize> = root
        .links
        .iter()
        .map(|l| {
            PbNode::decode(&store.get(&l.hash).unwrap().unwrap())
                .unwrap()
                .links
                .len()
        })
        .collect();
    assert_eq!(fanout, [3, 3, 1]);
    // Tsize of an interior child is its encoded size plus its children's Tsizes.
    let first = &root.links[0];
    let first_bytes = store.get(&first.hash).unwrap().unwrap();
    assert_eq!(first.tsize, Some(first_bytes.len() as u64 + 12));
    let mut back = Vec::new();
    export(&store, &out.root, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn twenty_mib_round_trips() {
    let store = MemoryBlockstore::new();
    let data = random_bytes(20 << 20, 7);
    let out = import_bytes(&store, &data, &ImportOptions::default()).unwrap();
    assert_eq!(out.size, 20 << 20);
    assert_eq!(out.blocks, 21, "20 raw leaves and one root");
    let mut back = Vec::with_capacity(data.len());
    assert_eq!(export(&store, &out.root, &mut back).unwrap(), 20 << 20);
    assert!(back == data, "exported bytes differ");
}

#[test]
fn the_all_selector_walks_a_three_level_unixfs_dag_in_go_order() {
    let store = MemoryBlockstore::new();
    // 200 chunks of 1 KiB with 174 links per node: root -> 2 interior nodes -> leaves.
    let data = random_bytes(200 * 1024, 3);
    let out = import_bytes(&store, &data, &opts(1024, 174)).unwrap();
    let mut want: Vec<Cid> = vec![out.root];
    let root = PbNode::decode(&store.get(&out.root).unwrap().unwrap()).unwrap();
    assert_eq!(root.links.len(), 2);
    for mid in &root.links {
        want.push(mid.hash);
        let node = PbNode::decode(&store.get(&mid.hash).unwrap().unwrap()).unwrap();
        want.extend(node.links.iter().map(|l| l.hash));
    }
    assert_eq!(want.len(), 1 + 2 + 200);
    let mut log = BlockLog::default();
    walk(
        &store,
        out.root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        &mut log,
    )
    .unwrap();
    assert_eq!(log.0.iter().map(|b| b.cid).collect::<Vec<_>>(), want);
}

#[test]
fn export_refuses_what_is_not_a_file() {
    let store = MemoryBlockstore::new();
    let cbor = store.put_new(codec::DAG_CBOR, &[0xa0]).unwrap();
    assert!(export(&store, &cbor, Vec::new()).is_err());
    let dir_like = PbNode {
        links: vec![],
        data: Some(vec![0x08, 0x01]),
    };
    let dir = store.put_new(DAG_PB, &dir_like.encode()).unwrap();
    assert!(matches!(
        export(&store, &dir, Vec::new()),
        Err(datatransfer_ipld::unixfs::UnixfsError::NotAFile { .. })
    ));
    let missing = codec::cid_of(RAW, b"nowhere");
    assert!(matches!(
        export(&store, &missing, Vec::new()),
        Err(datatransfer_ipld::unixfs::UnixfsError::Missing(_))
    ));
    assert!(import_bytes(&store, b"x", &opts(0, 174)).is_err());
}

#[test]
fn dag_pb_leaves_round_trip_and_differ_from_raw_leaves() {
    let data = random_bytes(1_000_000, 9);
    let raw = MemoryBlockstore::new();
    let pb = MemoryBlockstore::new();
    let a = import_bytes(&raw, &data, &opts(100_000, 4)).unwrap();
    let b = import_bytes(
        &pb,
        &data,
        &ImportOptions {
            raw_leaves: false,
            ..opts(100_000, 4)
        },
    )
    .unwrap();
    assert_ne!(a.root, b.root);
    assert_eq!(b.size, 1_000_000);
    // Every block is dag-pb, and the file comes back byte for byte.
    assert!(pb.cids().iter().all(|c| c.codec() == DAG_PB));
    let mut out = Vec::new();
    export(&pb, &b.root, &mut out).unwrap();
    assert!(out == data);
}

#[test]
fn file_size_reads_only_the_root() {
    let data = random_bytes(10_000, 3);
    for (chunk, raw_leaves) in [(1 << 20, true), (1000, true), (1000, false), (64, true)] {
        let store = MemoryBlockstore::new();
        let o = ImportOptions {
            chunk_size: chunk,
            max_links: 4,
            raw_leaves,
            ..ImportOptions::default()
        };
        let out = import_bytes(&store, &data, &o).unwrap();
        // Only the root in the store: the size still reads.
        let root_only = MemoryBlockstore::new();
        root_only
            .put(&out.root, &store.get(&out.root).unwrap().unwrap())
            .unwrap();
        assert_eq!(
            datatransfer_ipld::unixfs::file_size(&root_only, &out.root).unwrap(),
            10_000,
            "chunk {chunk}, raw leaves {raw_leaves}"
        );
    }
    let empty = MemoryBlockstore::new();
    let root = codec::cid_of(RAW, b"x");
    assert!(matches!(
        datatransfer_ipld::unixfs::file_size(&empty, &root),
        Err(datatransfer_ipld::unixfs::UnixfsError::Missing(_))
    ));
}

#[test]
fn cid_version_0_names_dag_pb_nodes_with_cidv0_and_keeps_raw_leaves_v1() {
    let data = random_bytes(1_000_000, 11);
    for raw_leaves in [true, false] {
        let store = MemoryBlockstore::new();
        let o = ImportOptions {
            cid_version: CidVersion::V0,
            raw_leaves,
            ..opts(100_000, 4)
        };
        let v0 = import_bytes(&store, &data, &o).unwrap();
        assert_eq!(u64::from(v0.root.version()), 0);
        for cid in store.cids() {
            match cid.codec() {
                DAG_PB => assert_eq!(u64::from(cid.version()), 0, "{cid}"),
                RAW => assert_eq!(u64::from(cid.version()), 1, "{cid}"),
                other => panic!("unexpected codec {other:#x}"),
            }
        }
        let mut out = Vec::new();
        export(&store, &v0.root, &mut out).unwrap();
        assert!(out == data);
    }
}
