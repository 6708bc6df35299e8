//! Golden vectors: our encoder must write exactly the bytes Go writes, and our decoder must
//! read them back to the same message. The vectors in `golden/messages.txt` were derived
//! from the Go encoders by `golden/derive.py` (its docstring says how), independently of
//! this crate's code.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::collections::BTreeMap;

use datatransfer_types::message::{
    Message, MessageType, TransferRequest, TransferResponse, WireVersion,
};
use datatransfer_types::{ChannelId, Cid, DagCbor, PeerId, TransferId, TypedNode};
use libp2p_identity::Keypair;

const VECTORS: &str = include_str!("golden/messages.txt");

struct Inputs {
    base_cid: Cid,
    selector: DagCbor,
    voucher: TypedNode,
    result: TypedNode,
    peer_a: PeerId,
    peer_b: PeerId,
}

fn shared_inputs() -> Inputs {
    let header: BTreeMap<&str, Vec<u8>> = VECTORS
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| hex::decode(v).ok().map(|b| (k, b)))
        .collect();
    let node = |k: &str| DagCbor::from_bytes(header[k].clone()).unwrap();

    // Peer A is a real Ed25519 peer id: derive it here from the same seed derive.py used.
    let key = Keypair::ed25519_from_bytes([1u8; 32]).unwrap();
    let peer_a = key.public().to_peer_id();
    assert_eq!(peer_a.to_bytes(), header["peer_a"], "peer A derivation");
    assert!(std::str::from_utf8(&header["peer_a"]).is_err(), "not UTF-8");

    Inputs {
        base_cid: Cid::try_from(header["base_cid"].as_slice()).unwrap(),
        selector: node("selector"),
        voucher: TypedNode::new("FakeDTType".into(), node("voucher")),
        result: TypedNode::new("FakeDTResult".into(), node("result")),
        peer_a,
        peer_b: PeerId::from_bytes(&header["peer_b"]).unwrap(),
    }
}

/// The message each named vector holds, built with our constructors.
fn expected(name: &str, i: &Inputs) -> Message {
    let v = || i.voucher.clone();
    let r = || Some(i.result.clone());
    let sel = || i.selector.clone();
    match name {
        "new_pull_request" => {
            TransferRequest::new_channel(TransferId(1), true, v(), i.base_cid, sel()).into()
        }
        "new_push_request" => {
            TransferRequest::new_channel(TransferId(2), false, v(), i.base_cid, sel()).into()
        }
        "restart_request" => {
            TransferRequest::restart(TransferId(3), true, v(), i.base_cid, sel()).into()
        }
        "update_request_pause" => TransferRequest::update(TransferId(4), true).into(),
        "cancel_request" => TransferRequest::cancel(TransferId(5)).into(),
        "voucher_request" => TransferRequest::voucher(TransferId(6), v()).into(),
        "restart_existing_channel_request" => TransferRequest::restart_existing_channel(
            ChannelId::new(i.peer_a, i.peer_b, TransferId(1_234_567)),
        )
        .into(),
        "new_response_accepted" => {
            TransferResponse::new_channel(TransferId(1), true, false, r()).into()
        }
        "new_response_rejected_no_result" => {
            TransferResponse::new_channel(TransferId(1), false, false, None).into()
        }
        "update_response_paused" => TransferResponse::update(TransferId(7), true).into(),
        "cancel_response" => TransferResponse::cancel(TransferId(8)).into(),
        "complete_response_finalizing" => {
            TransferResponse::complete(TransferId(9), true, true, r()).into()
        }
        "voucher_result_response" => {
            TransferResponse::voucher_result(TransferId(300), true, false, r()).into()
        }
        "restart_response" => {
            TransferResponse::restart(TransferId(70_000), true, false, r()).into()
        }
        other => panic!("vector {other} has no expected message"),
    }
}

fn vectors() -> Vec<(String, WireVersion, Vec<u8>)> {
    VECTORS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap().to_owned();
            let version = match parts.next().unwrap() {
                "1.1.0" => WireVersion::V1_1,
                "1.2.0" => WireVersion::V1_2,
                v => panic!("unknown version {v}"),
            };
            (name, version, hex::decode(parts.next().unwrap()).unwrap())
        })
        .collect()
}

#[test]
fn every_vector_encodes_and_decodes_exactly() {
    let inputs = shared_inputs();
    let all = vectors();
    assert_eq!(all.len(), 28, "14 messages in two versions");
    for (name, version, bytes) in &all {
        let msg = expected(name, &inputs);
        assert_eq!(
            hex::encode(msg.to_cbor(*version)),
            hex::encode(bytes),
            "{name} {version:?}: encoding differs from Go's"
        );
        assert_eq!(
            Message::from_cbor(*version, bytes).unwrap(),
            msg,
            "{name} {version:?}: decoding"
        );
        // Go reads either version's bytes on either protocol: keys may come in any order.
        let other = match version {
            WireVersion::V1_1 => WireVersion::V1_2,
            WireVersion::V1_2 => WireVersion::V1_1,
        };
        assert_eq!(
            Message::from_cbor(other, bytes).unwrap(),
            msg,
            "{name} cross"
        );
    }
}

#[test]
fn vectors_cover_all_eight_message_types_both_ways() {
    let inputs = shared_inputs();
    let mut request_types = std::collections::BTreeSet::new();
    let mut response_types = std::collections::BTreeSet::new();
    for (name, _, _) in vectors() {
        match expected(&name, &inputs) {
            Message::Request(r) => request_types.insert(r.message_type),
            Message::Response(r) => response_types.insert(r.message_type),
        };
    }
    let all: std::collections::BTreeSet<_> =
        request_types.union(&response_types).copied().collect();
    assert_eq!(all.len(), 8);
    assert!(request_types.contains(&MessageType::RestartExistingChannelRequest));
    assert!(response_types.contains(&MessageType::VoucherResult));
}

#[test]
fn restart_request_with_real_non_utf8_peer_ids_reencodes_to_the_same_bytes() {
    for (name, version, bytes) in vectors() {
        if name != "restart_existing_channel_request" {
            continue;
        }
        let msg = Message::from_cbor(version, &bytes).unwrap();
        let Message::Request(req) = &msg else {
            panic!("not a request")
        };
        let ch = req.restart_channel.expect("restart channel");
        assert_eq!(ch.id, TransferId(1_234_567));
        // Both peer ids are text strings on the wire whose bytes are not UTF-8.
        assert!(std::str::from_utf8(&ch.initiator.to_bytes()).is_err());
        assert!(std::str::from_utf8(&ch.responder.to_bytes()).is_err());
        assert_eq!(msg.to_cbor(version), bytes);
    }
}

#[test]
fn v1_2_writes_keys_in_canonical_order() {
    let inputs = shared_inputs();
    let msg = expected("new_pull_request", &inputs);
    let bytes = msg.to_cbor(WireVersion::V1_2);
    let keys = [
        "IsRq",
        "Request",
        "BCid",
        "Part",
        "Paus",
        "Pull",
        "Stor",
        "Type",
        "VTyp",
        "Vouch",
        "XferID",
        "RestartChannel",
        "Response",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            bytes
                .windows(k.len())
                .position(|w| w == k.as_bytes())
                .unwrap_or_else(|| panic!("{k} missing"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}
