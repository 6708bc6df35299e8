//! Property tests for the message codec: round trips for arbitrary messages in both wire
//! versions, and no panic (only typed errors) on arbitrary or mutated input.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_types::cbor::{
    self, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGINT, MAJOR_TEXT, MAJOR_UINT,
};
use datatransfer_types::message::{
    DecodeLimits, Message, MessageError, MessageType, TransferRequest, TransferResponse,
    WireVersion,
};
use datatransfer_types::{ChannelId, Cid, DagCbor, PeerId, TransferId, TypeIdentifier};
use proptest::prelude::*;

/// Arbitrary CBOR items (any shape an "Any" node may take), encoded.
fn any_item() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(|n| enc(MAJOR_UINT, n, &[])),
        any::<u64>().prop_map(|n| enc(MAJOR_NEGINT, n, &[])),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| enc(
            MAJOR_BYTES,
            b.len() as u64,
            &b
        )),
        // Text strings need not be UTF-8 on the wire.
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| enc(MAJOR_TEXT, b.len() as u64, &b)),
        Just(vec![cbor::TRUE]),
        Just(vec![cbor::FALSE]),
        Just(vec![cbor::NULL]),
        any::<f64>().prop_map(|f| {
            let mut v = vec![0xfb];
            v.extend_from_slice(&f.to_be_bytes());
            v
        }),
        any_cid().prop_map(|c| {
            let mut v = Vec::new();
            cbor::write_cid(&mut v, &c);
            v
        }),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                let mut v = enc(MAJOR_ARRAY, items.len() as u64, &[]);
                items.iter().for_each(|i| v.extend_from_slice(i));
                v
            }),
            prop::collection::vec((prop::collection::vec(any::<u8>(), 0..8), inner), 0..6)
                .prop_map(|entries| {
                    let mut v = enc(MAJOR_MAP, entries.len() as u64, &[]);
                    for (k, val) in &entries {
                        cbor::write_text(&mut v, k);
                        v.extend_from_slice(val);
                    }
                    v
                }),
        ]
    })
}

fn enc(major: u8, n: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    cbor::write_header(&mut v, major, n);
    v.extend_from_slice(body);
    v
}

/// A node as a message field holds it: never bare null (null means "absent").
fn any_node() -> impl Strategy<Value = DagCbor> {
    any_item()
        .prop_filter("null means absent", |b| b != &[cbor::NULL])
        .prop_map(|b| DagCbor::from_bytes(b).expect("generated items are well formed"))
}

fn any_cid() -> impl Strategy<Value = Cid> {
    (
        any::<[u8; 32]>(),
        prop::sample::select(vec![0x55u64, 0x70, 0x71, 0x0129]),
        any::<bool>(),
    )
        .prop_map(|(digest, codec, v0)| {
            let mh = cid::multihash::Multihash::wrap(0x12, &digest).expect("32-byte digest");
            if v0 {
                Cid::new_v0(mh).expect("sha2-256")
            } else {
                Cid::new_v1(codec, mh)
            }
        })
}

fn any_peer() -> impl Strategy<Value = PeerId> {
    (any::<[u8; 32]>(), any::<bool>()).prop_map(|(key, identity)| {
        let bytes = if identity {
            [&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20][..], &key].concat()
        } else {
            [&[0x12, 0x20][..], &key].concat()
        };
        PeerId::from_bytes(&bytes).expect("valid peer id bytes")
    })
}

fn any_type() -> impl Strategy<Value = MessageType> {
    (0u64..8).prop_map(|c| MessageType::try_from(c).expect("0..8 are valid"))
}

fn any_request() -> impl Strategy<Value = TransferRequest> {
    (
        (
            any_type(),
            any::<u64>(),
            prop::option::of(any_cid()),
            prop::option::of(any_node()),
        ),
        (prop::option::of(any_node()), ".{0,12}", any::<[bool; 3]>()),
        prop::option::of((any_peer(), any_peer(), any::<u64>())),
    )
        .prop_map(
            |((ty, id, cid, sel), (vouch, vtyp, [paus, part, pull]), restart)| TransferRequest {
                message_type: ty,
                transfer_id: TransferId(id),
                base_cid: cid,
                selector: sel,
                voucher: vouch,
                voucher_type: TypeIdentifier::new(vtyp),
                pause: paus,
                partial: part,
                pull,
                restart_channel: restart.map(|(a, b, n)| ChannelId::new(a, b, TransferId(n))),
            },
        )
}

fn any_response() -> impl Strategy<Value = TransferResponse> {
    (
        any_type(),
        any::<u64>(),
        any::<[bool; 2]>(),
        prop::option::of(any_node()),
        ".{0,12}",
    )
        .prop_map(|(ty, id, [acpt, paus], vres, vtyp)| TransferResponse {
            message_type: ty,
            transfer_id: TransferId(id),
            accepted: acpt,
            paused: paus,
            voucher_result: vres,
            voucher_result_type: TypeIdentifier::new(vtyp),
        })
}

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any_request().prop_map(Message::Request),
        any_response().prop_map(Message::Response)
    ]
}

fn any_version() -> impl Strategy<Value = WireVersion> {
    prop_oneof![Just(WireVersion::V1_1), Just(WireVersion::V1_2)]
}

proptest! {
    // A fixed seed keeps CI deterministic; PROPTEST_CASES raises the count for deeper runs.
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xc0de_c0de),
        ..ProptestConfig::default()
    })]

    #[test]
    fn round_trip(msg in any_message(), version in any_version()) {
        let bytes = msg.to_cbor(version);
        prop_assert_eq!(Message::from_cbor(version, &bytes)?, msg.clone());
        // Exactly one CBOR item, so a stream reader finds its end.
        prop_assert_eq!(cbor::item_len(&bytes, 128)?, Some(bytes.len()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), version in any_version()) {
        let _ = Message::from_cbor(version, &bytes);
        let _ = cbor::item_len(&bytes, 16);
    }

    #[test]
    fn mutated_messages_never_panic(msg in any_message(), version in any_version(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = msg.to_cbor(version);
        for (idx, b) in flips {
            let i = idx.index(bytes.len());
            bytes[i] = b;
        }
        let _ = Message::from_cbor(version, &bytes);
    }

    #[test]
    fn a_scanner_fed_in_pieces_agrees_with_a_reader_on_every_prefix(
        msg in any_message(),
        version in any_version(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        max_depth in 2usize..12,
    ) {
        // A message, perhaps damaged, then a second item that must not count.
        let mut bytes = msg.to_cbor(version);
        for (idx, b) in flips {
            let i = idx.index(bytes.len());
            bytes[i] = b;
        }
        bytes.push(0x01);
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        let mut scanner = cbor::ItemScanner::new(max_depth);
        for end in ends {
            let prefix = &bytes[..end];
            let want = match cbor::Reader::with_max_depth(prefix, max_depth).skip_item() {
                Ok(raw) => Ok(Some(raw.len())),
                Err(cbor::CborError::Truncated { .. }) => Ok(None),
                Err(e) => Err(e),
            };
            let got = scanner.scan(prefix);
            prop_assert_eq!(&got, &want, "prefix of {} bytes", end);
            if !matches!(got, Ok(None)) {
                break;
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error(msg in any_message(), version in any_version()) {
        let bytes = msg.to_cbor(version);
        for cut in 0..bytes.len() {
            prop_assert!(Message::from_cbor(version, &bytes[..cut]).is_err());
            prop_assert_eq!(cbor::item_len(&bytes[..cut], 128)?, None);
        }
    }
}

fn sample() -> Message {
    Message::Request(TransferRequest::update(TransferId(1), false))
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = sample().to_cbor(WireVersion::V1_2);
    bytes.push(0x00);
    assert!(matches!(
        Message::from_cbor(WireVersion::V1_2, &bytes),
        Err(MessageError::Cbor(cbor::CborError::TrailingBytes {
            extra: 1
        }))
    ));
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let bytes = sample().to_cbor(WireVersion::V1_1);
    let limits = DecodeLimits {
        max_message_size: bytes.len() - 1,
        ..DecodeLimits::default()
    };
    assert_eq!(
        Message::from_cbor_with_limits(WireVersion::V1_1, &bytes, &limits),
        Err(MessageError::TooLarge {
            size: bytes.len(),
            max: bytes.len() - 1
        })
    );
    let big = vec![0u8; (4 << 20) + 1];
    assert!(matches!(
        Message::from_cbor(WireVersion::V1_2, &big),
        Err(MessageError::TooLarge { .. })
    ));
}

#[test]
fn unknown_message_type_is_rejected() {
    let mut msg = TransferResponse::cancel(TransferId(3));
    msg.message_type = MessageType::Cancel;
    let bytes = Message::Response(msg).to_cbor(WireVersion::V1_1);
    // In 1.1.0 order the response map starts with "Type": 0x64 'T' 'y' 'p' 'e' <uint>.
    let pos = bytes.windows(4).position(|w| w == b"Type").unwrap() + 4;
    let mut bad = bytes.clone();
    bad[pos] = 0x08;
    assert_eq!(
        Message::from_cbor(WireVersion::V1_1, &bad),
        Err(MessageError::UnknownMessageType(8))
    );
}

#[test]
fn missing_body_and_duplicate_fields_are_rejected() {
    // {"IsRq": true, "Request": null, "Response": null}
    let mut b = Vec::new();
    cbor::write_header(&mut b, MAJOR_MAP, 3);
    cbor::write_text(&mut b, b"IsRq");
    cbor::write_bool(&mut b, true);
    cbor::write_text(&mut b, b"Request");
    b.push(cbor::NULL);
    cbor::write_text(&mut b, b"Response");
    b.push(cbor::NULL);
    assert_eq!(
        Message::from_cbor(WireVersion::V1_2, &b),
        Err(MessageError::MissingBody { is_request: true })
    );

    // {"IsRq": true, "IsRq": false}
    let mut d = Vec::new();
    cbor::write_header(&mut d, MAJOR_MAP, 2);
    for v in [true, false] {
        cbor::write_text(&mut d, b"IsRq");
        cbor::write_bool(&mut d, v);
    }
    assert_eq!(
        Message::from_cbor(WireVersion::V1_2, &d),
        Err(MessageError::DuplicateField("IsRq"))
    );
}

#[test]
fn unknown_keys_are_skipped_like_go_does() {
    let msg = Message::Response(TransferResponse::update(TransferId(2), true));
    let bytes = msg.to_cbor(WireVersion::V1_1);
    // Rewrite the outer map header from 3 to 4 entries and add {"Extra": [1, 2]} at the end.
    let mut b = bytes.clone();
    assert_eq!(b[0], 0xa3);
    b[0] = 0xa4;
    cbor::write_text(&mut b, b"Extra");
    b.extend_from_slice(&[0x82, 0x01, 0x02]);
    assert_eq!(Message::from_cbor(WireVersion::V1_1, &b).unwrap(), msg);
}

#[test]
fn invalid_peer_ids_in_restart_channel_are_typed_errors() {
    let a = PeerId::from_bytes(&[&[0x12u8, 0x20][..], &[9; 32]].concat()).unwrap();
    let msg = Message::Request(TransferRequest::restart_existing_channel(ChannelId::new(
        a,
        a,
        TransferId(1),
    )));
    let mut bytes = msg.to_cbor(WireVersion::V1_2);
    // Corrupt the multihash code of the first peer id (0x12 -> 0x7f, an unknown hash).
    let pos = bytes
        .windows(4)
        .position(|w| w == [0x12, 0x20, 9, 9])
        .unwrap();
    bytes[pos] = 0x7f;
    assert!(matches!(
        Message::from_cbor(WireVersion::V1_2, &bytes),
        Err(MessageError::InvalidPeerId(_))
    ));
}

#[test]
fn too_deep_vouchers_are_rejected() {
    let mut deep = vec![0x81u8; 200];
    deep.push(0x01);
    let node = DagCbor::from_bytes(deep.clone());
    // The node itself is refused at the default depth when wrapped directly...
    assert!(node.is_err());
    // ...and a peer's message carrying it is refused too.
    let mut req = TransferRequest::cancel(TransferId(1));
    req.voucher = Some(DagCbor::from_bytes(vec![0x01]).unwrap());
    let bytes = Message::Request(req).to_cbor(WireVersion::V1_1);
    let vouch_at = bytes.windows(5).position(|w| w == b"Vouch").unwrap() + 5;
    let mut bad = bytes[..vouch_at].to_vec();
    bad.extend_from_slice(&deep);
    bad.extend_from_slice(&bytes[vouch_at + 1..]);
    assert!(matches!(
        Message::from_cbor(WireVersion::V1_1, &bad),
        Err(MessageError::Field {
            field: "Vouch",
            source: cbor::CborError::TooDeep { max: 128 }
        })
    ));
}
