//! Every decoder a peer's bytes reach: data-transfer messages (1.1.0 and 1.2.0), graphsync
//! messages (2.0.0 DAG-CBOR, 1.0.0 protobuf) and the length-prefixed framing around them,
//! and the scanner that finds where a data-transfer message ends on a stream (fed in pieces,
//! it must agree with a reader on every prefix). None may panic, hang or allocate without
//! bound.

#![no_main]

use datatransfer_types::cbor::{CborError, ItemScanner, Reader};
use datatransfer_types::message::{Message, WireVersion};
use datatransfer_graphsync::v1::V1Ids;
use datatransfer_graphsync::{FrameReader, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => drop(Message::from_cbor(WireVersion::V1_1, body)),
        1 => drop(Message::from_cbor(WireVersion::V1_2, body)),
        2 => drop(datatransfer_graphsync::v2::decode(body, 64)),
        3 => drop(datatransfer_graphsync::v1::decode(body, &V1Ids::default())),
        4 => {
            // Pieces of 1 to 8 bytes, as a peer may write them.
            let step = usize::from(which / 6 % 8) + 1;
            let mut scanner = ItemScanner::new(16);
            let mut end = 0;
            while end < body.len() {
                end = (end + step).min(body.len());
                let prefix = &body[..end];
                let want = match Reader::with_max_depth(prefix, 16).skip_item() {
                    Ok(raw) => Ok(Some(raw.len())),
                    Err(CborError::Truncated { .. }) => Ok(None),
                    Err(e) => Err(e),
                };
                let got = scanner.scan(prefix);
                assert_eq!(got, want, "prefix of {end} bytes");
                if got != Ok(None) {
                    break;
                }
            }
        }
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
