//! Property tests of both graphsync codecs and the framing.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_graphsync::v1::V1Ids;
use datatransfer_graphsync::{
    Block, Extensions, FrameReader, LinkAction, Message, MessageError, RawNode, Request, RequestId,
    Response, ResponseStatus, Version, decode_body, encode_frame, encode_shared_frame_into, v1, v2,
};
use proptest::prelude::*;

/// Feeds `stream` to `fr` as a stream reader does: into the room the reader offers, as much
/// as the stream happens to give each time (`reads`, in turn), handing `frame` each frame.
fn read_in_chunks(
    fr: &mut FrameReader,
    stream: &[u8],
    reads: &[usize],
    mut frame: impl FnMut(datatransfer_graphsync::Bytes) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let (mut at, mut i) = (0, 0);
    loop {
        while let Some(body) = fr.next_frame()? {
            frame(body)?;
        }
        if at == stream.len() {
            return Ok(());
        }
        let room = fr.read_buf();
        let n = room
            .len()
            .min(reads[i % reads.len()])
            .min(stream.len() - at);
        room[..n].copy_from_slice(&stream[at..at + n]);
        fr.advance(n);
        at += n;
        i += 1;
    }
}

fn raw_cid(d: &[u8]) -> cid::Cid {
    datatransfer_ipld::codec::cid_of(datatransfer_ipld::codec::RAW, d)
}

fn node() -> impl Strategy<Value = RawNode> {
    prop_oneof![
        any::<u32>().prop_map(|n| {
            let mut b = Vec::new();
            datatransfer_ipld::cbor::write_header(&mut b, 0, u64::from(n));
            b
        }),
        "[a-z]{0,8}".prop_map(|s| {
            let mut b = Vec::new();
            datatransfer_ipld::cbor::write_text(&mut b, s.as_bytes());
            b
        }),
        Just(vec![0xa1, 0x61, b'a', 0x01]),
        Just(vec![0xf5]),
    ]
    .prop_map(|b| RawNode::new(b).unwrap())
}

fn extensions() -> impl Strategy<Value = Extensions> {
    prop::collection::vec(("[a-z/]{1,12}", node()), 0..4).prop_map(Extensions::from_entries)
}

fn status() -> impl Strategy<Value = ResponseStatus> {
    prop::sample::select(vec![
        10i128, 11, 12, 13, 14, 15, 20, 21, 30, 31, 32, 33, 34, 35,
    ])
    .prop_map(|c| ResponseStatus::try_from(c).unwrap())
}

fn action() -> impl Strategy<Value = LinkAction> {
    prop::sample::select(vec![
        LinkAction::Present,
        LinkAction::DuplicateNotSent,
        LinkAction::Missing,
        LinkAction::DuplicateDagSkipped,
    ])
}

/// Messages both versions can carry: ids in 1.0.0's int32 space, priorities and metadata
/// actions that 1.0.0 keeps (it only knows present/missing).
fn message(v1_safe: bool) -> impl Strategy<Value = Message> {
    let id = any::<i32>().prop_map(V1Ids::from_v1);
    let request = (
        id.clone(),
        0u8..3,
        any::<i32>(),
        any::<[u8; 8]>(),
        extensions(),
    )
        .prop_map(|(id, k, pri, seed, ext)| match k {
            0 => Request::new(
                id,
                raw_cid(&seed),
                RawNode::new(vec![0xa0]).unwrap(),
                pri,
                ext,
            ),
            1 => Request::cancel(id),
            _ => Request::update(id, ext),
        });
    let response = (
        id,
        status(),
        prop::collection::vec((any::<[u8; 4]>(), action()), 0..4),
        extensions(),
    )
        .prop_map(move |(id, status, md, ext)| Response {
            id,
            status,
            metadata: md
                .into_iter()
                .map(|(s, a)| {
                    let a = if v1_safe && a != LinkAction::Present {
                        LinkAction::Missing
                    } else {
                        a
                    };
                    (raw_cid(&s), a)
                })
                .collect(),
            extensions: ext,
        });
    let block = prop::collection::vec(any::<u8>(), 0..64).prop_map(|d| Block {
        cid: raw_cid(&d),
        data: d.into(),
    });
    (
        prop::collection::vec(request, 0..3),
        prop::collection::vec(response, 0..3),
        prop::collection::vec(block, 0..3),
    )
        .prop_map(|(requests, responses, blocks)| Message {
            requests,
            responses,
            blocks,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6752_5f73),
        ..ProptestConfig::default()
    })]

    #[test]
    fn extensions_from_entries_are_entries_set_one_by_one(
        entries in prop::collection::vec(("[ab/]{1,3}", node()), 0..24),
    ) {
        let mut one_by_one = Extensions::new();
        for (k, v) in entries.clone() {
            one_by_one.set(k, v);
        }
        prop_assert_eq!(Extensions::from_entries(entries), one_by_one);
    }

    #[test]
    fn v2_round_trips(msg in message(false)) {
        prop_assert_eq!(v2::decode(&v2::encode(&msg), 256)?, msg);
    }

    #[test]
    fn a_shared_frame_is_the_frame_byte_for_byte(msg in message(true), share_from in 0usize..80) {
        // Blocks of 0..64 bytes: some, all or none are left out of the buffer.
        for version in [Version::V2, Version::V1] {
            let whole = encode_frame(&msg, version, &mut V1Ids::default()).to_vec();
            let shared = encode_shared_frame_into(Vec::new(), &msg, version, &mut V1Ids::default(), share_from);
            prop_assert_eq!(shared.len(), whole.len());
            prop_assert_eq!(shared.parts().concat(), whole);
        }
    }

    #[test]
    fn v1_round_trips(msg in message(true)) {
        let mut ids = V1Ids::default();
        let bytes = v1::encode(&msg, &mut ids);
        prop_assert_eq!(v1::decode(&bytes, &ids)?, msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = v2::decode(&bytes, 64);
        let _ = v1::decode(&bytes, &V1Ids::default());
        let mut fr = FrameReader::new(1024);
        fr.push(&bytes);
        while let Ok(Some(body)) = fr.next_frame() {
            let _ = decode_body(&body, Version::V2, &V1Ids::default());
        }
    }

    #[test]
    fn frames_split_anywhere_reassemble(msgs in prop::collection::vec(message(false), 1..4), cut in any::<prop::sample::Index>()) {
        let mut ids = V1Ids::default();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m, Version::V2, &mut ids).to_vec()).collect();
        let at = cut.index(stream.len() + 1);
        let mut fr = FrameReader::new(datatransfer_graphsync::DEFAULT_MAX_MESSAGE_SIZE);
        let mut got = Vec::new();
        for part in [&stream[..at], &stream[at..]] {
            fr.push(part);
            while let Some(body) = fr.next_frame()? {
                got.push(decode_body(&body, Version::V2, &ids)?);
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(fr.buffered(), 0);
    }

    #[test]
    fn frames_read_in_place_in_any_chunks_reassemble(
        msgs in prop::collection::vec(message(false), 1..4),
        reads in prop::collection::vec(1usize..3000, 1..40),
    ) {
        let mut ids = V1Ids::default();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m, Version::V2, &mut ids).to_vec()).collect();
        let mut fr = FrameReader::new(datatransfer_graphsync::DEFAULT_MAX_MESSAGE_SIZE);
        let mut got = Vec::new();
        read_in_chunks(&mut fr, &stream, &reads, |body| {
            got.push(decode_body(&body, Version::V2, &ids)?);
            Ok(())
        })?;
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(fr.buffered(), 0);
    }
}

#[test]
fn oversized_frames_and_bad_fields_are_typed_errors() {
    let mut fr = FrameReader::new(100);
    fr.push(&[0xe8, 0x07]); // a 1000-byte frame announced
    assert_eq!(
        fr.next_frame(),
        Err(MessageError::TooLarge {
            size: 1000,
            max: 100
        })
    );

    // A response with an unknown status code.
    let msg = Message {
        responses: vec![Response {
            id: RequestId([1; 16]),
            status: ResponseStatus::RequestCompletedFull,
            metadata: vec![],
            extensions: Extensions::new(),
        }],
        ..Message::default()
    };
    let mut bytes = v2::encode(&msg);
    let pos = bytes.windows(4).position(|w| w == b"stat").unwrap() + 4;
    bytes[pos] = 0x18;
    bytes.insert(pos + 1, 99);
    assert!(matches!(
        v2::decode(&bytes, 64),
        Err(MessageError::Status(_))
    ));
    // A request id that is not 16 bytes.
    let mut short = v2::encode(&Message {
        requests: vec![Request::cancel(RequestId([2; 16]))],
        ..Message::default()
    });
    let id_at = short.windows(2).position(|w| w == [0x50, 0x02]).unwrap();
    short[id_at] = 0x4f;
    short.remove(id_at + 1);
    assert!(v2::decode(&short, 64).is_err());
    // A block whose prefix names a hash we cannot compute.
    let mut blk = v2::encode(&Message {
        blocks: vec![Block {
            cid: raw_cid(b"x"),
            data: b"x".to_vec().into(),
        }],
        ..Message::default()
    });
    let p = blk
        .windows(4)
        .position(|w| w == [0x01, 0x55, 0x12, 0x20])
        .unwrap();
    blk[p + 2] = 0x13;
    assert!(matches!(
        v2::decode(&blk, 64),
        Err(MessageError::Invalid(_))
    ));
}

#[test]
fn merging_keeps_one_response_per_request_and_each_block_once() {
    let id = RequestId([3; 16]);
    let a = raw_cid(b"a");
    let part = |status, link, data: &[u8]| Message {
        responses: vec![Response {
            id,
            status,
            metadata: vec![(link, LinkAction::Present)],
            extensions: Extensions::new(),
        }],
        blocks: vec![Block {
            cid: raw_cid(data),
            data: data.to_vec().into(),
        }],
        ..Message::default()
    };
    let mut m = part(ResponseStatus::PartialResponse, a, b"a");
    m.merge(part(
        ResponseStatus::RequestCompletedFull,
        raw_cid(b"b"),
        b"b",
    ));
    m.merge(part(ResponseStatus::RequestCompletedFull, a, b"a"));
    assert_eq!(m.responses.len(), 1);
    assert_eq!(m.responses[0].status, ResponseStatus::RequestCompletedFull);
    assert_eq!(m.responses[0].metadata.len(), 3);
    assert_eq!(m.blocks.len(), 2);
    // Still a valid message both ways.
    assert_eq!(v2::decode(&v2::encode(&m), 64).unwrap(), m);
}

#[test]
fn a_large_frame_is_made_room_for_as_it_arrives_not_when_announced() {
    let mut fr = FrameReader::new(4 << 20);
    fr.push(&[0x80, 0x80, 0x80, 0x02]); // a 4 MiB body announced, nothing of it sent
    assert!(
        fr.read_buf().len() <= 256 << 10,
        "room before the bytes came"
    );
    let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut at = 0;
    while at < body.len() {
        assert!(fr.next_frame().unwrap().is_none());
        let room = fr.read_buf();
        assert!(room.len() <= 256 << 10);
        let n = room.len().min(body.len() - at);
        room[..n].copy_from_slice(&body[at..at + n]);
        fr.advance(n);
        at += n;
    }
    assert!(fr.next_frame().unwrap().unwrap() == body[..]);
    assert_eq!(fr.buffered(), 0);
}

/// `body` with its length prefix.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut len = body.len() as u64;
    while len >= 0x80 {
        frame.push((len as u8) | 0x80);
        len >>= 7;
    }
    frame.push(len as u8);
    frame.extend_from_slice(body);
    frame
}

/// Reads one whole frame of `body` through `read_buf`, as a stream reader does.
fn read_frame(fr: &mut FrameReader, body: &[u8]) -> datatransfer_graphsync::Bytes {
    let mut got = None;
    read_in_chunks(fr, &framed(body), &[usize::MAX], |f| {
        got = Some(f);
        Ok(())
    })
    .unwrap();
    got.unwrap()
}

#[test]
fn a_frame_buffer_is_used_again_once_its_frame_is_dropped_and_never_while_held() {
    let mut fr = FrameReader::new(4 << 20);
    let a: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
    let c: Vec<u8> = (0..1u32 << 20).map(|i| (i % 239) as u8).collect();

    // Held: the next frame gets memory of its own, and the held one keeps its bytes.
    let first = read_frame(&mut fr, &a);
    let second = read_frame(&mut fr, &b);
    let (first_at, second_at) = (first.as_ptr(), second.as_ptr());
    assert!(
        second_at < first_at || second_at >= first_at.wrapping_add(first.len()),
        "a held frame's memory was written"
    );
    assert!(first == a[..] && second == b[..]);

    // Dropped: a later frame lands in the memory of one of them, the reader's own, even
    // when the program allocates buffers of the same size meanwhile (had the reader given
    // the memory back, the allocator would hand those out at the freed addresses).
    drop(first);
    drop(second);
    let meanwhile: Vec<Vec<u8>> = (0..2).map(|i| vec![i; (1 << 20) + 3]).collect();
    let third = read_frame(&mut fr, &c);
    drop(meanwhile);
    assert!(third == c[..]);
    assert!(
        third.as_ptr() == first_at || third.as_ptr() == second_at,
        "a dropped frame's buffer was not used again"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Frames small and large (the large handed out as they were read, their buffers used
    /// again once dropped), read in chunks of any size, several to a read or one across
    /// many: each comes out as sent, and the ones still held at the end still hold what was
    /// sent (no later read wrote into a buffer a held frame lies in).
    #[test]
    fn frames_of_any_size_stay_whole_while_held(
        frames in prop::collection::vec((0usize..40_000, any::<u8>(), any::<bool>()), 1..12),
        reads in prop::collection::vec(1usize..70_000, 1..20),
    ) {
        let bodies: Vec<Vec<u8>> = frames
            .iter()
            .map(|&(len, seed, _)| {
                (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
            })
            .collect();
        let stream: Vec<u8> = bodies.iter().flat_map(|b| framed(b)).collect();
        let mut fr = FrameReader::new(1 << 20);
        let mut held = Vec::new();
        let mut next = 0;
        read_in_chunks(&mut fr, &stream, &reads, |body| {
            prop_assert!(body == bodies[next][..], "frame {} differs", next);
            if frames[next].2 {
                held.push((next, body));
            }
            next += 1;
            Ok(())
        })?;
        prop_assert_eq!(next, bodies.len());
        prop_assert_eq!(fr.buffered(), 0);
        for (k, body) in held {
            prop_assert!(body == bodies[k][..], "held frame {} was written over", k);
        }
    }
}
