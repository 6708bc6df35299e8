//! Both ends of a request exchanging real messages in memory (through either wire format):
//! the requester checks every block against its own walk.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_graphsync::requester::{Progress, Verifier, VerifyError};
use datatransfer_graphsync::responder::{
    BlockDecision, DEFAULT_MESSAGE_TARGET, DO_NOT_SEND_CIDS, DO_NOT_SEND_FIRST_BLOCKS, Responder,
    encode_cid_set, encode_skip_count,
};
use datatransfer_graphsync::v1::V1Ids;
use datatransfer_graphsync::{
    Extensions, FrameReader, Message, RawNode, Request, RequestId, ResponseStatus, Version,
    decode_body, encode_frame,
};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::codec::{self, DAG_CBOR, RAW};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{TraversalConfig, TraversalError};
use datatransfer_ipld::unixfs::{ImportOptions, export, import_bytes};
use datatransfer_ipld::{Cid, Node};
use datatransfer_test_support::random_bytes;

/// The whole-DAG selector.
fn all_selector() -> RawNode {
    RawNode::new(Selector::explore_all_recursively().to_dag_cbor()).unwrap()
}

struct Outcome {
    sent_blocks: usize,
    result: Result<Progress, VerifyError>,
}

/// Runs a request to the end through the wire format `version`.
fn exchange(
    server: &MemoryBlockstore,
    client: &MemoryBlockstore,
    request: Request,
    version: Version,
) -> Outcome {
    let mut responder =
        Responder::new(&request, TraversalConfig::default(), DEFAULT_MESSAGE_TARGET).unwrap();
    let selector = Selector::from_dag_cbor(request.selector.as_ref().unwrap().as_bytes()).unwrap();
    let mut verifier = Verifier::new(
        request.root.unwrap(),
        selector,
        TraversalConfig::default(),
        64,
    );
    let mut ids = V1Ids::default();
    let mut frames = FrameReader::new(datatransfer_graphsync::DEFAULT_MAX_MESSAGE_SIZE);
    let mut sent_blocks = 0;
    while let Some(part) = responder
        .next_part(server, &mut |_| BlockDecision::Continue)
        .unwrap()
    {
        sent_blocks += part.blocks.len();
        let msg = Message {
            responses: vec![part.response],
            blocks: part.blocks,
            ..Message::default()
        };
        frames.push(&encode_frame(&msg, version, &mut ids));
        let body = frames.next_frame().unwrap().unwrap();
        let mut got = decode_body(&body, version, &ids).unwrap();
        let response = got.responses.remove(0);
        let result = verifier.on_response(&response, got.blocks, client, &mut |visit, data| {
            if let Some(d) = data {
                client.put(&visit.cid, d).unwrap();
            }
        });
        match result {
            Ok(Progress::InProgress) => continue,
            other => {
                return Outcome {
                    sent_blocks,
                    result: other,
                };
            }
        }
    }
    Outcome {
        sent_blocks,
        result: Ok(Progress::InProgress),
    }
}

fn new_request(root: Cid, ext: Extensions) -> Request {
    Request::new(RequestId([7; 16]), root, all_selector(), 0, ext)
}

#[test]
fn a_unixfs_file_and_a_dag_cbor_dag_transfer_in_both_versions() {
    let server = MemoryBlockstore::new();
    let data = random_bytes(8 << 20, 5);
    let file = import_bytes(&server, &data, &ImportOptions::default())
        .unwrap()
        .root;
    // A DAG-CBOR DAG: a list of 40 maps, each linking a 64 KiB raw block.
    let leaves: Vec<Node> = (0..40u64)
        .map(|i| {
            let leaf = server
                .put_new(RAW, &random_bytes(64 << 10, 2 * i + 101))
                .unwrap();
            Node::map(vec![
                ("n", Node::Integer(i.into())),
                ("data", Node::Link(leaf)),
            ])
        })
        .collect();
    let cbor_root = server
        .put_new(DAG_CBOR, &codec::encode_dag_cbor(&Node::List(leaves)))
        .unwrap();

    for version in [Version::V2, Version::V1] {
        let client = MemoryBlockstore::new();
        let out = exchange(
            &server,
            &client,
            new_request(file, Extensions::new()),
            version,
        );
        assert_eq!(out.result, Ok(Progress::Complete), "{version:?}");
        let mut back = Vec::new();
        export(&client, &file, &mut back).unwrap();
        assert!(back == data, "{version:?}: file bytes differ");

        let client = MemoryBlockstore::new();
        let out = exchange(
            &server,
            &client,
            new_request(cbor_root, Extensions::new()),
            version,
        );
        assert_eq!(out.result, Ok(Progress::Complete), "{version:?}");
        assert_eq!(client.len(), 41);
    }
}

#[test]
fn a_restart_skips_the_blocks_the_requester_has() {
    let server = MemoryBlockstore::new();
    let root = import_bytes(
        &server,
        &random_bytes(6 << 20, 9),
        &ImportOptions {
            chunk_size: 256 << 10,
            max_links: 174,
            raw_leaves: true,
            ..ImportOptions::default()
        },
    )
    .unwrap()
    .root;
    let total = server.len();
    // The requester already has the first 10 blocks of the walk (root and 9 leaves).
    let client = MemoryBlockstore::new();
    let mut walk = datatransfer_ipld::traversal::BlockLog::default();
    datatransfer_ipld::traversal::walk(
        &server,
        root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        &mut walk,
    )
    .unwrap();
    for b in &walk.0[..10] {
        client
            .put(&b.cid, &server.get(&b.cid).unwrap().unwrap())
            .unwrap();
    }
    let mut ext = Extensions::new();
    ext.set(DO_NOT_SEND_FIRST_BLOCKS, encode_skip_count(10));
    let out = exchange(&server, &client, new_request(root, ext), Version::V2);
    assert_eq!(out.result, Ok(Progress::Complete));
    assert_eq!(out.sent_blocks, total - 10, "no block sent twice");
    assert_eq!(client.len(), total);

    // do-not-send-cids: the same with an explicit list.
    let client = MemoryBlockstore::new();
    let have: Vec<Cid> = walk.0[..5].iter().map(|b| b.cid).collect();
    for c in &have {
        client.put(c, &server.get(c).unwrap().unwrap()).unwrap();
    }
    let mut ext = Extensions::new();
    ext.set(DO_NOT_SEND_CIDS, encode_cid_set(&have));
    let out = exchange(&server, &client, new_request(root, ext), Version::V1);
    assert_eq!(out.result, Ok(Progress::Complete));
    assert_eq!(out.sent_blocks, total - 5);
}

#[test]
fn missing_blocks_complete_partially_and_are_skipped() {
    let server = MemoryBlockstore::new();
    let a = server.put_new(RAW, b"a").unwrap();
    let gone = codec::cid_of(RAW, b"not here");
    let root = server
        .put_new(
            DAG_CBOR,
            &codec::encode_dag_cbor(&Node::List(vec![Node::Link(a), Node::Link(gone)])),
        )
        .unwrap();
    let mut responder = Responder::new(
        &new_request(root, Extensions::new()),
        TraversalConfig::default(),
        1 << 20,
    )
    .unwrap();
    let part = responder
        .next_part(&server, &mut |_| BlockDecision::Continue)
        .unwrap()
        .unwrap();
    assert_eq!(
        part.response.status,
        ResponseStatus::RequestCompletedPartial
    );
    assert_eq!(part.response.metadata.len(), 3);
    assert_eq!(part.blocks.len(), 2);
    let client = MemoryBlockstore::new();
    assert_eq!(
        exchange(
            &server,
            &client,
            new_request(root, Extensions::new()),
            Version::V2
        )
        .result,
        Ok(Progress::Complete)
    );
    assert_eq!(client.len(), 2);
}

#[test]
fn wrong_unexpected_and_unrequested_blocks_fail_the_request() {
    let server = MemoryBlockstore::new();
    let root = import_bytes(
        &server,
        &random_bytes(3 << 20, 2),
        &ImportOptions {
            chunk_size: 1 << 20,
            max_links: 174,
            raw_leaves: true,
            ..ImportOptions::default()
        },
    )
    .unwrap()
    .root;
    let request = new_request(root, Extensions::new());
    let selector = || Selector::explore_all_recursively();
    let part = Responder::new(&request, TraversalConfig::default(), 64 << 20)
        .unwrap()
        .next_part(&server, &mut |_| BlockDecision::Continue)
        .unwrap()
        .unwrap();
    let client = MemoryBlockstore::new();
    let mut ignore = |_: &datatransfer_ipld::traversal::BlockVisit,
                      _: Option<&datatransfer_graphsync::Bytes>| {};

    // A block swapped for another: the link is marked present but its block never came.
    let mut blocks = part.blocks.clone();
    let other = b"some other block".to_vec();
    blocks[2] = datatransfer_graphsync::Block {
        cid: codec::cid_of(RAW, &other),
        data: other.into(),
    };
    let mut v = Verifier::new(root, selector(), TraversalConfig::default(), 64);
    assert!(matches!(
        v.on_response(&part.response, blocks, &client, &mut ignore),
        Err(VerifyError::BlockNotSent(_))
    ));

    // A block under the CID the walk awaits but with other bytes (blocks not from our
    // decoders, which build every CID from its bytes): the verifier hashes it and refuses it.
    let mut blocks = part.blocks.clone();
    blocks[2].data = b"not the block its CID names".to_vec().into();
    let mut v = Verifier::new(root, selector(), TraversalConfig::default(), 64);
    let res = v.on_response(&part.response, blocks, &client, &mut ignore);
    assert!(
        matches!(
            &res,
            Err(VerifyError::Traversal(e)) if matches!(**e, TraversalError::Block { .. })
        ),
        "{res:?}"
    );

    // Links in the wrong order.
    let mut resp = part.response.clone();
    resp.metadata.swap(1, 2);
    let mut v = Verifier::new(root, selector(), TraversalConfig::default(), 64);
    assert!(matches!(
        v.on_response(&resp, part.blocks.clone(), &client, &mut ignore),
        Err(VerifyError::WrongLink { .. })
    ));

    // A block nobody asked for.
    let mut blocks = part.blocks.clone();
    let extra = b"unasked".to_vec();
    blocks.push(datatransfer_graphsync::Block {
        cid: codec::cid_of(RAW, &extra),
        data: extra.into(),
    });
    let mut v = Verifier::new(root, selector(), TraversalConfig::default(), 64);
    assert_eq!(
        v.on_response(&part.response, blocks, &client, &mut ignore),
        Err(VerifyError::Unrequested(1))
    );

    // A block whose bytes do not match the CID it is filed under.
    let mut blocks = part.blocks.clone();
    let mut damaged = blocks[1].data.to_vec();
    damaged[0] ^= 1;
    blocks[1].data = damaged.into();
    let mut v = Verifier::new(root, selector(), TraversalConfig::default(), 64);
    assert!(matches!(
        v.on_response(&part.response, blocks, &client, &mut ignore),
        Err(VerifyError::Traversal(_))
    ));

    // Links past the end of the walk, before the final status: refused at once, not kept
    // until a final status that may never come.
    let mut all_then_more = part.response.clone();
    all_then_more.status = datatransfer_graphsync::ResponseStatus::PartialResponse;
    let mut v = Verifier::new(root, selector(), TraversalConfig::default(), 64);
    assert_eq!(
        v.on_response(&all_then_more, part.blocks.clone(), &client, &mut ignore),
        Ok(datatransfer_graphsync::requester::Progress::InProgress)
    );
    let mut more = all_then_more.clone();
    more.metadata.truncate(3);
    assert_eq!(
        v.on_response(&more, Vec::new(), &client, &mut ignore),
        Err(VerifyError::UnexpectedLinks(3))
    );

    // A flood of blocks ahead of any link that would take them is refused.
    let flood: Vec<_> = (0..100u32)
        .map(|i| {
            let d = i.to_be_bytes().to_vec();
            datatransfer_graphsync::Block {
                cid: codec::cid_of(RAW, &d),
                data: d.into(),
            }
        })
        .collect();
    let mut ahead = part.response.clone();
    ahead.metadata.clear();
    ahead.status = datatransfer_graphsync::ResponseStatus::PartialResponse;
    let mut v = Verifier::new(root, selector(), TraversalConfig::default(), 64);
    assert_eq!(
        v.on_response(&ahead, flood, &client, &mut ignore),
        Err(VerifyError::TooManyBuffered(64))
    );
}

/// One message may carry far more small blocks than the verifier buffers, as go-graphsync
/// packs 512 KiB of them: those its walk takes at once are not "buffered".
#[test]
fn a_message_of_many_small_blocks_in_walk_order_is_taken() {
    let server = MemoryBlockstore::new();
    let root = import_bytes(
        &server,
        &random_bytes(100_000, 9),
        &ImportOptions {
            chunk_size: 100,
            max_links: 1_000,
            raw_leaves: true,
            ..ImportOptions::default()
        },
    )
    .unwrap()
    .root;
    let request = new_request(root, Extensions::new());
    let part = Responder::new(&request, TraversalConfig::default(), 64 << 20)
        .unwrap()
        .next_part(&server, &mut |_| BlockDecision::Continue)
        .unwrap()
        .unwrap();
    assert!(part.blocks.len() > 1_000, "{} blocks", part.blocks.len());
    let mut v = Verifier::new(
        root,
        Selector::explore_all_recursively(),
        TraversalConfig::default(),
        64,
    );
    let client = MemoryBlockstore::new();
    let mut taken = 0;
    let r = v.on_response(&part.response, part.blocks, &client, &mut |_, data| {
        taken += usize::from(data.is_some());
    });
    assert_eq!(r, Ok(Progress::Complete));
    assert!(taken > 1_000);
}

#[test]
fn the_block_hook_sees_every_block_and_can_pause() {
    let server = MemoryBlockstore::new();
    let root = import_bytes(
        &server,
        &random_bytes(2 << 20, 4),
        &ImportOptions {
            chunk_size: 256 << 10,
            max_links: 174,
            raw_leaves: true,
            ..ImportOptions::default()
        },
    )
    .unwrap()
    .root;
    let mut responder = Responder::new(
        &new_request(root, Extensions::new()),
        TraversalConfig::default(),
        64 << 20,
    )
    .unwrap();
    let mut seen = Vec::new();
    let part = responder
        .next_part(&server, &mut |b| {
            seen.push(b.size);
            if b.index == 3 {
                BlockDecision::Pause
            } else {
                BlockDecision::Continue
            }
        })
        .unwrap()
        .unwrap();
    assert_eq!(part.response.status, ResponseStatus::RequestPaused);
    assert_eq!(part.blocks.len(), 3);
    assert!(
        responder
            .next_part(&server, &mut |_| BlockDecision::Continue)
            .unwrap()
            .is_none()
    );
    responder.unpause();
    let rest = responder
        .next_part(&server, &mut |b| {
            seen.push(b.size);
            BlockDecision::Continue
        })
        .unwrap()
        .unwrap();
    assert_eq!(rest.response.status, ResponseStatus::RequestCompletedFull);
    assert_eq!(seen.len(), 9, "root and 8 leaves");
    assert_eq!(seen[1..].iter().sum::<u64>(), 2 << 20);
}
