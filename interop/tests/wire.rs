//! Wire truth: the bytes go-data-transfer v2 and go-graphsync v0.18 encode for every
//! data-transfer message type and every graphsync message shape, kept as golden vectors in
//! `interop/vectors/go-vectors.jsonl`. Go still prints them; our decoders read each one and
//! our encoders write it back identically; our own constructors build the same bytes from
//! the same parameters.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::path::PathBuf;

use datatransfer::{ChannelId, Cid, TypedNode, all_selector};
use datatransfer_graphsync::message::{
    Block, LinkAction, Request, RequestId, Response, ResponseStatus,
};
use datatransfer_graphsync::responder::{DO_NOT_SEND_FIRST_BLOCKS, encode_skip_count};
use datatransfer_graphsync::{Extensions, RawNode, Version};
use datatransfer_interop::go::{binary, keypair};
use datatransfer_interop::rust::{InteropResult, InteropVoucher};
use datatransfer_ipld::codec::RAW;
use datatransfer_types::TransferId;
use datatransfer_types::message::{Message, TransferRequest, TransferResponse, WireVersion};
use serde_json::Value;

const DT: &str = "fil/data-transfer/1.1";
const DT_INCOMING: &str = "fil/data-transfer/incoming-request/1.1";
const DT_OUTGOING: &str = "fil/data-transfer/outgoing-block/1.1";

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors/go-vectors.jsonl")
}

/// A golden vector: name, bytes, body bytes (graphsync only), parameters.
type Vector = (String, Vec<u8>, Option<Vec<u8>>, Value);

/// The golden vectors.
fn golden() -> Vec<Vector> {
    std::fs::read_to_string(golden_path())
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["name"].as_str().unwrap().to_string(),
                hex::decode(v["hex"].as_str().unwrap()).unwrap(),
                v["hex_body"].as_str().map(|h| hex::decode(h).unwrap()),
                v["params"].clone(),
            )
        })
        .collect()
}

fn vector(name: &str) -> Vec<u8> {
    golden()
        .into_iter()
        .find(|(n, ..)| n == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
        .1
}

#[test]
fn go_still_encodes_the_golden_vectors() {
    let out = std::process::Command::new(binary())
        .arg("vectors")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let kept = std::fs::read_to_string(golden_path()).unwrap();
    let (printed, kept): (Vec<&str>, Vec<&str>) =
        (printed.lines().collect(), kept.lines().collect());
    assert_eq!(printed.len(), kept.len(), "number of vectors");
    for (p, k) in printed.iter().zip(&kept) {
        assert_eq!(p, k, "go-peer vectors no longer prints the golden line");
    }
}

#[test]
fn every_go_message_decodes_and_encodes_back_to_the_same_bytes() {
    let vectors = golden();
    assert!(
        vectors
            .iter()
            .filter(|(n, ..)| n.starts_with("dt/"))
            .count()
            >= 29
    );
    assert!(
        vectors
            .iter()
            .filter(|(n, ..)| n.starts_with("gs/"))
            .count()
            >= 12
    );
    for (name, bytes, body, _) in vectors {
        if name.starts_with("dt/") {
            let msg = Message::from_cbor(WireVersion::V1_2, &bytes)
                .unwrap_or_else(|e| panic!("{name}: our decoder refuses Go's bytes: {e}"));
            assert_eq!(
                hex::encode(msg.to_cbor(WireVersion::V1_2)),
                hex::encode(&bytes),
                "{name}: re-encoded bytes differ"
            );
            let expect_request = name.starts_with("dt/request/");
            assert_eq!(msg.is_request(), expect_request, "{name}");
        } else {
            let body = body.unwrap();
            let msg = datatransfer_graphsync::v2::decode(&body, 64)
                .unwrap_or_else(|e| panic!("{name}: our decoder refuses Go's bytes: {e:?}"));
            assert_eq!(
                hex::encode(datatransfer_graphsync::v2::encode(&msg)),
                hex::encode(&body),
                "{name}: re-encoded body differs"
            );
            let framed =
                datatransfer_graphsync::encode_frame(&msg, Version::V2, &mut Default::default());
            assert_eq!(
                hex::encode(framed),
                hex::encode(&bytes),
                "{name}: frame differs"
            );
        }
    }
}

/// The fixed parameters every vector uses.
struct Params {
    id: TransferId,
    root: Cid,
    voucher: TypedNode,
    result: TypedNode,
}

fn params() -> Params {
    Params {
        id: TransferId(1_234_567_890_123_456_789),
        root: datatransfer_ipld::codec::cid_of(RAW, b"interop"),
        voucher: TypedNode::encode(&InteropVoucher { deal: 42, paid: 0 }).unwrap(),
        result: TypedNode::encode(&InteropResult {
            owed: Some(1 << 20),
            rejected: None,
        })
        .unwrap(),
    }
}

/// Our message for each data-transfer vector, built with our constructors.
fn ours(name: &str, p: &Params) -> Message {
    let r = || Some(p.result.clone());
    let req = |m: TransferRequest| Message::from(m);
    let resp = |m: TransferResponse| Message::from(m);
    match name.trim_start_matches("dt/") {
        "request/new_pull" => req(TransferRequest::new_channel(
            p.id,
            true,
            p.voucher.clone(),
            p.root,
            all_selector(),
        )),
        "request/new_push" => req(TransferRequest::new_channel(
            p.id,
            false,
            p.voucher.clone(),
            p.root,
            all_selector(),
        )),
        "request/restart_pull" => req(TransferRequest::restart(
            p.id,
            true,
            p.voucher.clone(),
            p.root,
            all_selector(),
        )),
        "request/restart_push" => req(TransferRequest::restart(
            p.id,
            false,
            p.voucher.clone(),
            p.root,
            all_selector(),
        )),
        "request/restart_existing_channel" => {
            let initiator = keypair([1; 32]).public().to_peer_id();
            let responder = keypair([2; 32]).public().to_peer_id();
            req(TransferRequest::restart_existing_channel(ChannelId::new(
                initiator, responder, p.id,
            )))
        }
        "request/update_paused" => req(TransferRequest::update(p.id, true)),
        "request/update_unpaused" => req(TransferRequest::update(p.id, false)),
        "request/voucher" => req(TransferRequest::voucher(p.id, p.voucher.clone())),
        "request/cancel" => req(TransferRequest::cancel(p.id)),
        "response/new_accepted" => resp(TransferResponse::new_channel(p.id, true, false, None)),
        "response/new_accepted_paused" => {
            resp(TransferResponse::new_channel(p.id, true, true, None))
        }
        "response/new_accepted_with_result" => {
            resp(TransferResponse::new_channel(p.id, true, false, r()))
        }
        "response/new_rejected" => resp(TransferResponse::new_channel(p.id, false, false, None)),
        "response/new_rejected_with_result" => {
            resp(TransferResponse::new_channel(p.id, false, false, r()))
        }
        "response/restart_accepted" => resp(TransferResponse::restart(p.id, true, false, None)),
        "response/restart_rejected" => resp(TransferResponse::restart(p.id, false, false, None)),
        "response/update_paused" => resp(TransferResponse::update(p.id, true)),
        "response/update_unpaused" => resp(TransferResponse::update(p.id, false)),
        "response/cancel" => resp(TransferResponse::cancel(p.id)),
        "response/complete" => resp(TransferResponse::complete(p.id, true, false, None)),
        "response/complete_finalizing" => resp(TransferResponse::complete(p.id, true, true, None)),
        "response/complete_finalizing_with_result" => {
            resp(TransferResponse::complete(p.id, true, true, r()))
        }
        "response/complete_rejected" => resp(TransferResponse::complete(p.id, false, false, None)),
        "response/voucher_result_paused" => {
            resp(TransferResponse::voucher_result(p.id, true, true, r()))
        }
        "response/voucher_result_unpaused" => {
            resp(TransferResponse::voucher_result(p.id, true, false, r()))
        }
        "response/validation_result_accepted" => {
            resp(TransferResponse::voucher_result(p.id, true, false, None))
        }
        "response/validation_result_with_result_paused" => {
            resp(TransferResponse::voucher_result(p.id, true, true, r()))
        }
        "response/validation_result_complete" => {
            resp(TransferResponse::complete(p.id, true, false, None))
        }
        "response/validation_result_rejected" => {
            resp(TransferResponse::voucher_result(p.id, false, false, r()))
        }
        other => panic!("no constructor for dt/{other}: add one"),
    }
}

#[test]
fn our_data_transfer_messages_are_byte_identical_to_go_s() {
    let p = params();
    for (name, bytes, _, _) in golden().into_iter().filter(|(n, ..)| n.starts_with("dt/")) {
        assert_eq!(
            hex::encode(ours(&name, &p).to_cbor(WireVersion::V1_2)),
            hex::encode(&bytes),
            "{name}: our bytes differ from Go's"
        );
    }
}

/// The graphsync request id of the vectors: UUID 00112233-4455-6677-8899-aabbccddeeff.
fn request_id() -> RequestId {
    let mut id = [0u8; 16];
    hex::decode_to_slice("00112233445566778899aabbccddeeff", &mut id).unwrap();
    RequestId(id)
}

fn ext(entries: &[(&str, RawNode)]) -> Extensions {
    Extensions::from_entries(entries.iter().map(|(k, v)| (k.to_string(), v.clone())))
}

fn dt_node(name: &str) -> RawNode {
    RawNode::new(vector(name)).unwrap()
}

#[test]
fn our_graphsync_messages_are_byte_identical_to_go_s() {
    let id = request_id();
    let p = params();
    let selector = RawNode::new(all_selector().as_bytes().to_vec()).unwrap();
    let leaf = datatransfer_ipld::codec::cid_of(RAW, b"interop leaf");
    let skip = encode_skip_count(5);
    let response = |status, metadata: Vec<(Cid, LinkAction)>, extensions| Response {
        id,
        status,
        metadata,
        extensions,
    };
    let only_requests = |r: Request| datatransfer_graphsync::message::Message {
        requests: vec![r],
        ..Default::default()
    };
    let cases: Vec<(&str, datatransfer_graphsync::message::Message)> = vec![
        (
            "gs/request/new_with_dt_extension",
            only_requests(Request::new(
                id,
                p.root,
                selector.clone(),
                7,
                ext(&[(DT, dt_node("dt/request/new_pull"))]),
            )),
        ),
        (
            "gs/request/new_plain",
            only_requests(Request::new(
                id,
                p.root,
                selector.clone(),
                0,
                Extensions::new(),
            )),
        ),
        (
            "gs/request/new_do_not_send_first_blocks",
            only_requests(Request::new(
                id,
                p.root,
                selector.clone(),
                0,
                ext(&[(DO_NOT_SEND_FIRST_BLOCKS, skip.clone())]),
            )),
        ),
        (
            "gs/request/restart_with_dt_and_do_not_send_first_blocks",
            only_requests(Request::new(
                id,
                p.root,
                selector.clone(),
                0,
                ext(&[
                    (DT, dt_node("dt/request/restart_pull")),
                    (DO_NOT_SEND_FIRST_BLOCKS, skip.clone()),
                ]),
            )),
        ),
        (
            "gs/request/update_with_extension",
            only_requests(Request::update(
                id,
                ext(&[(DT, dt_node("dt/request/update_unpaused"))]),
            )),
        ),
        ("gs/request/cancel", only_requests(Request::cancel(id))),
        (
            "gs/response/partial_with_metadata_extensions_blocks",
            datatransfer_graphsync::message::Message {
                responses: vec![response(
                    ResponseStatus::PartialResponse,
                    vec![(p.root, LinkAction::Present), (leaf, LinkAction::Present)],
                    ext(&[
                        (DT, dt_node("dt/response/new_accepted")),
                        (DT_INCOMING, dt_node("dt/response/new_accepted")),
                    ]),
                )],
                blocks: vec![
                    Block {
                        cid: p.root,
                        data: b"interop".to_vec().into(),
                    },
                    Block {
                        cid: leaf,
                        data: b"interop leaf".to_vec().into(),
                    },
                ],
                ..Default::default()
            },
        ),
        (
            "gs/response/paused",
            datatransfer_graphsync::message::Message {
                responses: vec![response(
                    ResponseStatus::RequestPaused,
                    vec![(leaf, LinkAction::Present)],
                    ext(&[
                        (DT, dt_node("dt/response/update_paused")),
                        (DT_OUTGOING, dt_node("dt/response/update_paused")),
                    ]),
                )],
                blocks: vec![Block {
                    cid: leaf,
                    data: b"interop leaf".to_vec().into(),
                }],
                ..Default::default()
            },
        ),
        (
            "gs/response/unpaused_with_validation_result",
            datatransfer_graphsync::message::Message {
                responses: vec![response(
                    ResponseStatus::PartialResponse,
                    Vec::new(),
                    ext(&[(DT, dt_node("dt/response/validation_result_accepted"))]),
                )],
                ..Default::default()
            },
        ),
        (
            "gs/response/completed_full",
            datatransfer_graphsync::message::Message {
                responses: vec![response(
                    ResponseStatus::RequestCompletedFull,
                    Vec::new(),
                    Extensions::new(),
                )],
                ..Default::default()
            },
        ),
        (
            "gs/response/rejected",
            datatransfer_graphsync::message::Message {
                responses: vec![response(
                    ResponseStatus::RequestRejected,
                    Vec::new(),
                    Extensions::new(),
                )],
                ..Default::default()
            },
        ),
        (
            "gs/response/dt_rejected",
            datatransfer_graphsync::message::Message {
                responses: vec![response(
                    ResponseStatus::RequestFailedUnknown,
                    Vec::new(),
                    ext(&[
                        (DT, dt_node("dt/response/new_rejected_with_result")),
                        (DT_INCOMING, dt_node("dt/response/new_rejected_with_result")),
                    ]),
                )],
                ..Default::default()
            },
        ),
    ];
    let golden_gs = golden()
        .into_iter()
        .filter(|(n, ..)| n.starts_with("gs/"))
        .count();
    assert_eq!(
        cases.len(),
        golden_gs,
        "a graphsync vector has no case here"
    );
    for (name, msg) in cases {
        let framed =
            datatransfer_graphsync::encode_frame(&msg, Version::V2, &mut Default::default());
        assert_eq!(
            hex::encode(framed),
            hex::encode(vector(name)),
            "{name}: our bytes differ from Go's"
        );
    }
}
