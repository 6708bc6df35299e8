//! Every decoder a peer's bytes reach: data-transfer messages (1.1.0 and 1.2.0), graphsync
//! messages (2.0.0 DAG-CBOR, 1.0.0 protobuf) and the length-prefixed framing around them.
//! None may panic, hang or allocate without bound.

#![no_main]

use datatransfer_types::message::{Message, WireVersion};
use datatransfer_graphsync::v1::V1Ids;
use datatransfer_graphsync::{FrameReader, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => drop(Message::from_cbor(WireVersion::V1_1, body)),
        1 => drop(Message::from_cbor(WireVersion::V1_2, body)),
        2 => drop(datatransfer_graphsync::v2::decode(body, 64)),
        3 => drop(datatransfer_graphsync::v1::decode(body, &V1Ids::default())),
        _ => {
            let mut frames = FrameReader::new(1 << 20);
            frames.push(body);
            while let Ok(Some(frame)) = frames.next_frame() {
                let _ = datatransfer_graphsync::decode_body(&frame, Version::V2, &V1Ids::default());
                let _ = datatransfer_graphsync::decode_body(&frame, Version::V1, &V1Ids::default());
            }
        }
    }
});
