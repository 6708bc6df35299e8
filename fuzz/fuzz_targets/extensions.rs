//! What the graphsync transport reads from a peer's graphsync extensions: the data-transfer
//! message under each extension name the hooks look at (decoded by the transport's own
//! `message_in_extensions`), and a request's `graphsync/do-not-send-cids` and
//! `graphsync/do-not-send-first-blocks` as the responder takes them, served over a fixed
//! DAG and checked by a requester's verifier told to expect the same skip.
//!
//! None may panic, hang or allocate without bound; a message that decodes must encode back
//! to a message equal to it.

#![no_main]

use std::sync::OnceLock;

use datatransfer_transport_graphsync::{
    EXTENSION_DATA_TRANSFER, EXTENSION_INCOMING_REQUEST, EXTENSION_OUTGOING_BLOCK,
    message_in_extensions,
};
use datatransfer_types::message::{DecodeLimits, Message, WireVersion};
use datatransfer_ipld::Cid;
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::cbor::Reader;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::TraversalConfig;
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};
use datatransfer_graphsync::requester::Verifier;
use datatransfer_graphsync::responder::{BlockDecision, DO_NOT_SEND_CIDS, DO_NOT_SEND_FIRST_BLOCKS, Responder};
use datatransfer_graphsync::{Extensions, RawNode, Request, RequestId};
use libfuzzer_sys::fuzz_target;

/// A UnixFS file of 40 blocks and the explore-all selector.
fn dag() -> &'static (MemoryBlockstore, Cid, RawNode) {
    static DAG: OnceLock<(MemoryBlockstore, Cid, RawNode)> = OnceLock::new();
    DAG.get_or_init(|| {
        let store = MemoryBlockstore::new();
        let data: Vec<u8> = (0..30_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let options = ImportOptions {
            chunk_size: 1_000,
            max_links: 4,
            ..ImportOptions::default()
        };
        let root = import_bytes(&store, &data, &options).expect("import").root;
        // ExploreRecursive { limit: none, sequence: ExploreAll { next: Edge } }.
        let all = vec![
            0xa1, 0x61, b'R', 0xa2, 0x61, b'l', 0xa1, 0x64, b'n', b'o', b'n', b'e', 0xa0, 0x62,
            b':', b'>', 0xa1, 0x61, b'a', 0xa1, 0x61, b'>', 0xa1, 0x61, b'@', 0xa0,
        ];
        (store, root, RawNode::new(all).expect("selector"))
    })
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>, Vec<u8>, u8)| {
    let (dt, cids, first, which) = input;
    let limits = DecodeLimits::default();

    // The data-transfer message, under each set of names a hook reads.
    if let Ok(node) = RawNode::new(dt) {
        let name = [
            EXTENSION_DATA_TRANSFER,
            EXTENSION_INCOMING_REQUEST,
            EXTENSION_OUTGOING_BLOCK,
        ][usize::from(which % 3)];
        let mut ext = Extensions::new();
        ext.set(name, node);
        let found = message_in_extensions(
            &ext,
            &[EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER],
            &limits,
        )
        .or_else(|| message_in_extensions(&ext, &[EXTENSION_OUTGOING_BLOCK], &limits));
        if let Some(Ok(msg)) = found {
            let again = Message::from_cbor(WireVersion::V1_2, &msg.to_cbor(WireVersion::V1_2))
                .expect("a message we encode decodes");
            assert_eq!(again, msg);
        }
    }

    // The responder's do-not-send extensions, served over the fixed DAG.
    let (store, root, selector) = dag();
    let mut ext = Extensions::new();
    if let Ok(node) = RawNode::new(cids) {
        ext.set(DO_NOT_SEND_CIDS, node);
    }
    let mut skip = 0;
    if let Ok(node) = RawNode::new(first) {
        skip = Reader::new(node.as_bytes()).read_uint().unwrap_or(0);
        ext.set(DO_NOT_SEND_FIRST_BLOCKS, node);
    }
    let request = Request::new(RequestId([7; 16]), *root, selector.clone(), 0, ext);
    let Ok(mut responder) = Responder::new(&request, TraversalConfig::default(), 8 << 10) else {
        return;
    };
    let mut verifier = Verifier::new(
        *root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        64,
    );
    verifier.restart(skip);
    let mut parts = 0;
    while let Ok(Some(part)) = responder.next_part(store, &mut |_| BlockDecision::Continue) {
        parts += 1;
        assert!(parts < 1_000, "the responder never finishes");
        if verifier
            .on_response(&part.response, part.blocks, store, &mut |_, _| {})
            .is_err()
        {
            break;
        }
    }
});
