//! Decodes a data-transfer message and prints it readably.
//!
//! ```text
//! cargo run -p datatransfer-types --example inspect               # a built-in sample
//! cargo run -p datatransfer-types --example inspect -- <HEX>      # your own bytes
//! ```

use datatransfer_types::message::{Message, TransferRequest, WireVersion};
use datatransfer_types::{Cid, DagCbor, TransferId, TypedNode};

fn sample() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    // A pull request as Go's /fil/datatransfer/1.2.0 would send it.
    let root: Cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".parse()?;
    // The "all" selector: {"R": {"l": {"none": {}}, ":>": {"a": {">": {"@": {}}}}}}.
    let all = DagCbor::from_bytes(vec![
        0xa1, 0x61, b'R', 0xa2, 0x61, b'l', 0xa1, 0x64, b'n', b'o', b'n', b'e', 0xa0, 0x62, b':',
        b'>', 0xa1, 0x61, b'a', 0xa1, 0x61, b'>', 0xa1, 0x61, b'@', 0xa0,
    ])?;
    let voucher = TypedNode::new(
        "RetrievalVoucher".into(),
        DagCbor::encode(&("deal", 42u64))?,
    );
    let msg = TransferRequest::new_channel(TransferId(1), true, voucher, root, all);
    Ok(Message::Request(msg).to_cbor(WireVersion::V1_2))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = match std::env::args().nth(1) {
        Some(hex) => decode_hex(hex.trim())?,
        None => sample()?,
    };
    println!("{} bytes: {}", bytes.len(), encode_hex(&bytes));
    // Both wire versions decode the same way; 1.2.0 is what today's peers speak.
    let msg = Message::from_cbor(WireVersion::V1_2, &bytes)?;
    print!("{msg}");
    Ok(())
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("hex input has an odd number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex at {i}: {e}")))
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
