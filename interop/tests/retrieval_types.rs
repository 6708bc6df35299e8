//! The retrieval-market vouchers against go-retrieval-types v1.2.0: the golden vectors in
//! `interop/vectors/retrieval-vectors.jsonl` are what `interop/go-retrieval vectors` prints
//! (Go still prints them); our types read every one with the fields Go reports and write it
//! back byte for byte; and Go reads what our constructors write.

#![allow(clippy::unwrap_used)] // Tests: a panic is a failure.

use std::path::PathBuf;

use datatransfer::{Cid, PeerId, TypedNode};
use datatransfer_interop::go;
use datatransfer_retrieval::{
    DealPayment, DealProposal, DealResponse, DealStatus, Params, RetrievalRequest, TokenAmount,
};
use datatransfer_types::DagCbor;
use ipld_core::ipld::Ipld;
use serde_json::Value;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors/retrieval-vectors.jsonl")
}

fn vectors() -> Vec<Value> {
    std::fs::read_to_string(vectors_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A selector (maps, lists, strings, integers) as JSON, to compare with Go's DAG-JSON.
fn json_of(node: &Ipld) -> Value {
    match node {
        Ipld::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), json_of(v))).collect()),
        Ipld::List(l) => Value::Array(l.iter().map(json_of).collect()),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Integer(i) => Value::from(*i as i64),
        other => panic!("not in a selector: {other:?}"),
    }
}

fn amount(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

/// Checks a proposal against Go's `fields`.
fn check_proposal(p: &DealProposal, f: &Value, name: &str) {
    assert_eq!(p.id, f["ID"].as_u64().unwrap(), "{name}");
    assert_eq!(
        p.payload_cid.to_string(),
        f["PayloadCID"].as_str().unwrap(),
        "{name}"
    );
    let params = &f["Params"];
    assert_eq!(
        p.params.piece_cid.map(|c| c.to_string()),
        params["PieceCID"].as_str().map(str::to_owned),
        "{name}"
    );
    assert_eq!(
        p.params.price_per_byte.atto().to_string(),
        amount(&params["PricePerByte"]),
        "{name}"
    );
    assert_eq!(
        p.params.unseal_price.atto().to_string(),
        amount(&params["UnsealPrice"]),
        "{name}"
    );
    assert_eq!(
        p.params.payment_interval,
        params["PaymentInterval"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        p.params.payment_interval_increase,
        params["PaymentIntervalIncrease"].as_u64().unwrap(),
        "{name}"
    );
    match (&p.params.selector, params["Selector"].as_str()) {
        (None, None) => {}
        (Some(ours), Some(go)) => {
            let go: Value = serde_json::from_str(go).unwrap();
            assert_eq!(json_of(ours), go, "{name}");
        }
        (ours, go) => panic!("{name}: selector {ours:?} vs Go's {go:?}"),
    }
}

fn check_response(r: &DealResponse, f: &Value, name: &str) {
    assert_eq!(r.id, f["ID"].as_u64().unwrap(), "{name}");
    assert_eq!(r.status.0, f["Status"].as_u64().unwrap(), "{name}");
    assert_eq!(r.message, f["Message"].as_str().unwrap(), "{name}");
    assert_eq!(
        r.payment_owed.atto().to_string(),
        amount(&f["PaymentOwed"]),
        "{name}"
    );
}

#[test]
fn go_still_prints_the_checked_in_retrieval_vectors() {
    let out = std::process::Command::new(go::go_retrieval())
        .arg("vectors")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let kept = std::fs::read_to_string(vectors_path()).unwrap();
    assert!(
        printed == kept,
        "go-retrieval prints other vectors than {}: regenerate them (see interop/vectors/README.md)",
        vectors_path().display()
    );
}

#[test]
fn every_go_vector_decodes_to_gos_fields_and_encodes_back_byte_for_byte() {
    let vectors = vectors();
    assert!(vectors.len() >= 20, "{} vectors", vectors.len());
    let mut kinds = [0; 3];
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let ty = v["type"].as_str().unwrap();
        let bytes = hex::decode(v["hex"].as_str().unwrap()).unwrap();
        let node = DagCbor::from_bytes(bytes.clone()).unwrap();
        let fields = &v["fields"];
        let again = match ty {
            "RetrievalDealProposal/1" => {
                kinds[0] += 1;
                let p: DealProposal = node.decode().unwrap();
                check_proposal(&p, fields, name);
                DagCbor::encode(&p).unwrap()
            }
            "RetrievalDealResponse/1" => {
                kinds[1] += 1;
                let r: DealResponse = node.decode().unwrap();
                check_response(&r, fields, name);
                DagCbor::encode(&r).unwrap()
            }
            "RetrievalDealPayment/1" => {
                kinds[2] += 1;
                let p: DealPayment = node.decode().unwrap();
                assert_eq!(p.id, fields["ID"].as_u64().unwrap(), "{name}");
                assert_eq!(
                    hex::encode(&p.payment_channel.0),
                    fields["PaymentChannelBytes"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(
                    p.payment_voucher.is_none(),
                    fields["PaymentVoucher"].is_null(),
                    "{name}"
                );
                DagCbor::encode(&p).unwrap()
            }
            other => panic!("{name}: unknown type {other}"),
        };
        assert_eq!(
            hex::encode(again.as_bytes()),
            hex::encode(&bytes),
            "{name} re-encodes"
        );
    }
    assert!(
        kinds.iter().all(|n| *n > 0),
        "every type covered: {kinds:?}"
    );
}

/// `go-retrieval decode TYPE HEX`: Go's fields of what we wrote.
fn go_decodes(node: &TypedNode) -> Value {
    let out = std::process::Command::new(go::go_retrieval())
        .args([
            "decode",
            node.type_id.as_str(),
            &hex::encode(node.node.as_bytes()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Go refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn go_reads_the_proposals_and_responses_we_write() {
    let peer: PeerId = go::keypair([9; 32]).public().to_peer_id();
    let root: Cid = "bafybeigio2f5eshtxhfarobwhqxtcaypdanbjlqjivbniaafmk45y32i6u"
        .parse()
        .unwrap();
    // What `datatransfer retrieve` proposes, for the whole DAG and for the root block.
    let whole = RetrievalRequest::new(peer, root)
        .deal_id(u64::MAX)
        .proposal()
        .unwrap();
    let matcher = DagCbor::from_bytes(vec![0xa1, 0x61, 0x2e, 0xa0]).unwrap();
    let block = RetrievalRequest::new(peer, root)
        .selector(matcher)
        .deal_id(7)
        .proposal()
        .unwrap();
    let mut paid = whole.clone();
    paid.params = Params {
        piece_cid: Some(root),
        price_per_byte: TokenAmount::from_atto(1000),
        unseal_price: TokenAmount::from_atto(123_456_789_012_345_678_901_234_567_890),
        payment_interval: 1 << 20,
        payment_interval_increase: 1 << 18,
        ..paid.params
    };
    for (name, p) in [("whole", &whole), ("block", &block), ("paid", &paid)] {
        let fields = go_decodes(&TypedNode::encode(p).unwrap());
        check_proposal(p, &fields, name);
    }
    let mut owed = DealResponse::new(3, DealStatus::FUNDS_NEEDED);
    owed.payment_owed = TokenAmount::from_atto(-(1 << 70));
    for (name, r) in [
        ("accepted", DealResponse::new(1, DealStatus::ACCEPTED)),
        (
            "rejected",
            DealResponse::rejected(2, "no content found for bafy…"),
        ),
        ("owed", owed),
        (
            "completed",
            DealResponse::new(u64::MAX, DealStatus::COMPLETED),
        ),
    ] {
        let fields = go_decodes(&TypedNode::encode(&r).unwrap());
        check_response(&r, &fields, name);
    }
}
