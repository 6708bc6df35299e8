//! Golden vectors for both graphsync wire formats, derived from go-graphsync v0.13.1's schema
//! and .proto by `golden/derive.py` (see its docstring), independently of this crate.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::collections::BTreeMap;

use cid::Cid;
use datatransfer_graphsync::v1::V1Ids;
use datatransfer_graphsync::{
    Block, Extensions, LinkAction, Message, RawNode, Request, RequestId, Response, ResponseStatus,
    v1, v2,
};

const VECTORS: &str = include_str!("golden/messages.txt");

fn inputs() -> BTreeMap<&'static str, Vec<u8>> {
    VECTORS
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| hex::decode(v).ok().map(|b| (k, b)))
        .collect()
}

fn raw_cid(data: &[u8]) -> Cid {
    datatransfer_ipld::codec::cid_of(datatransfer_ipld::codec::RAW, data)
}

fn expected(name: &str, v1: bool) -> Message {
    let i = inputs();
    let node = |b: &[u8]| RawNode::new(b.to_vec()).unwrap();
    let (id1, id2) = if v1 {
        (V1Ids::from_v1(3), V1Ids::from_v1(4))
    } else {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        for k in 0..16 {
            a[k] = k as u8;
            b[k] = 16 + k as u8;
        }
        (RequestId(a), RequestId(b))
    };
    let root = Cid::try_from(i["root"].as_slice()).unwrap();
    let cid = |k: &str| Cid::try_from(i[k].as_slice()).unwrap();
    let mut msg = Message::default();
    match name {
        "request_new" => {
            let ext = Extensions::from_entries([
                ("x/ext".into(), node(&i["ext_map"])),
                ("graphsync/do-not-send-first-blocks".into(), node(&[0x05])),
            ]);
            msg.requests
                .push(Request::new(id1, root, node(&i["selector"]), 7, ext));
        }
        "request_cancel" => msg.requests.push(Request::cancel(id1)),
        "request_update" => msg.requests.push(Request::update(
            id2,
            Extensions::from_entries([("x/ext".into(), node(&[0xf5]))]),
        )),
        "response_partial" => msg.responses.push(Response {
            id: id1,
            status: ResponseStatus::PartialResponse,
            metadata: vec![
                (cid("cid_a"), LinkAction::Present),
                (cid("cid_b"), LinkAction::Missing),
            ],
            extensions: Extensions::from_entries([("x/ext".into(), node(&[0x62, b'h', b'i']))]),
        }),
        "response_completed" => msg.responses.push(Response {
            id: id2,
            status: ResponseStatus::RequestCompletedFull,
            metadata: vec![],
            extensions: Extensions::new(),
        }),
        "blocks" => {
            for d in [&b"hello"[..], b"world"] {
                msg.blocks.push(Block {
                    cid: raw_cid(d),
                    data: d.to_vec().into(),
                });
            }
            let empty_pb = Cid::new_v0(
                cid::multihash::Multihash::wrap(0x12, raw_cid(b"").hash().digest()).unwrap(),
            )
            .unwrap();
            msg.blocks.push(Block {
                cid: empty_pb,
                data: Vec::new().into(),
            });
        }
        "everything" => {
            msg.requests.push(Request::cancel(id2));
            msg.responses.push(Response {
                id: id1,
                status: ResponseStatus::RequestFailedContentNotFound,
                metadata: vec![],
                extensions: Extensions::new(),
            });
            msg.blocks.push(Block {
                cid: raw_cid(b"hello"),
                data: b"hello".to_vec().into(),
            });
        }
        other => panic!("no expectation for {other}"),
    }
    msg
}

#[test]
fn every_vector_encodes_to_gos_bytes_and_decodes_back() {
    let mut count = 0;
    for line in VECTORS.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (name, version, hexed) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let bytes = hex::decode(hexed).unwrap();
        let is_v1 = version == "1.0.0";
        let msg = expected(name, is_v1);
        if is_v1 {
            let mut ids = V1Ids::default();
            assert_eq!(
                hex::encode(v1::encode(&msg, &mut ids)),
                hexed,
                "{name} {version}"
            );
            assert_eq!(v1::decode(&bytes, &ids).unwrap(), msg, "{name} {version}");
        } else {
            assert_eq!(hex::encode(v2::encode(&msg)), hexed, "{name} {version}");
            assert_eq!(v2::decode(&bytes, 256).unwrap(), msg, "{name} {version}");
        }
        count += 1;
    }
    assert_eq!(count, 13);
}
