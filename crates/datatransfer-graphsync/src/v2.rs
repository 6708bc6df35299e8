//! `/ipfs/graphsync/2.0.0`: messages as DAG-CBOR, `{"gs2": {...}}`, exactly as go-graphsync
//! v0.13.1 writes them (`message/ipldbind/schema.ipldsch` through go-ipld-prime's dag-cbor
//! encoder: keys in canonical order, absent optional fields omitted).

use bytes::Bytes;
use cid::Cid;
use datatransfer_ipld::cbor::{
    self, CborError, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_UINT, Reader,
};

use crate::message::{
    Block, Extensions, LinkAction, Message, MessageError, RawNode, Request, RequestId, RequestType,
    Response, ResponseStatus, cid_from_prefix, cid_prefix,
};

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    cbor::write_header(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

fn key(out: &mut Vec<u8>, k: &str) {
    cbor::write_text(out, k.as_bytes());
}

fn int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        cbor::write_header(out, MAJOR_UINT, v as u64);
    } else {
        cbor::write_header(out, cbor::MAJOR_NEGINT, (-1 - v) as u64);
    }
}

fn write_extensions(out: &mut Vec<u8>, ext: &Extensions) {
    // Extensions are kept in canonical order already.
    cbor::write_header(out, MAJOR_MAP, ext.len() as u64);
    for (k, v) in ext.iter() {
        key(out, k);
        out.extend_from_slice(v.as_bytes());
    }
}

fn write_request(out: &mut Vec<u8>, r: &Request) {
    // Canonical key order: id, ext, pri, sel, root, type.
    let n = 2
        + usize::from(!r.extensions.is_empty())
        + usize::from(r.priority != 0)
        + usize::from(r.selector.is_some())
        + usize::from(r.root.is_some());
    cbor::write_header(out, MAJOR_MAP, n as u64);
    key(out, "id");
    bytes(out, &r.id.0);
    if !r.extensions.is_empty() {
        key(out, "ext");
        write_extensions(out, &r.extensions);
    }
    if r.priority != 0 {
        key(out, "pri");
        int(out, i64::from(r.priority));
    }
    if let Some(s) = &r.selector {
        key(out, "sel");
        out.extend_from_slice(s.as_bytes());
    }
    if let Some(root) = &r.root {
        key(out, "root");
        cbor::write_cid(out, root);
    }
    key(out, "type");
    cbor::write_text(
        out,
        match r.kind {
            RequestType::New => b"n",
            RequestType::Cancel => b"c",
            RequestType::Update => b"u",
        },
    );
}

fn write_response(out: &mut Vec<u8>, r: &Response) {
    // Canonical key order: ext, meta, stat, reqid.
    let n = 2 + usize::from(!r.extensions.is_empty()) + usize::from(!r.metadata.is_empty());
    cbor::write_header(out, MAJOR_MAP, n as u64);
    if !r.extensions.is_empty() {
        key(out, "ext");
        write_extensions(out, &r.extensions);
    }
    if !r.metadata.is_empty() {
        key(out, "meta");
        cbor::write_header(out, MAJOR_ARRAY, r.metadata.len() as u64);
        for (link, action) in &r.metadata {
            cbor::write_header(out, MAJOR_ARRAY, 2);
            cbor::write_cid(out, link);
            cbor::write_text(out, action.code().as_bytes());
        }
    }
    key(out, "stat");
    int(out, i64::from(r.status.code()));
    key(out, "reqid");
    bytes(out, &r.id.0);
}

/// Encodes a message body (no length prefix).
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.approx_size() + 256);
    encode_into(&mut out, msg);
    out
}

/// Appends a message body (no length prefix) to `out`.
pub fn encode_into(out: &mut Vec<u8>, msg: &Message) {
    encode_sharing_into(out, msg, usize::MAX, &mut Vec::new());
}

/// Appends a message body (no length prefix) to `out` without the bytes of its blocks of
/// `share_from` bytes or more: each such block is pushed on `shared` with the offset in `out`
/// where its bytes belong (its CBOR header is in `out`, before that offset). The body is
/// `out` with each shared block's bytes put in at its offset; written out in that order, it
/// is byte for byte what [`encode_into`] gives, without copying the large blocks.
pub fn encode_sharing_into(
    out: &mut Vec<u8>,
    msg: &Message,
    share_from: usize,
    shared: &mut Vec<(usize, Bytes)>,
) {
    cbor::write_header(out, MAJOR_MAP, 1);
    key(out, "gs2");
    let n = usize::from(!msg.blocks.is_empty())
        + usize::from(!msg.requests.is_empty())
        + usize::from(!msg.responses.is_empty());
    cbor::write_header(out, MAJOR_MAP, n as u64);
    // Canonical key order: blk, req, rsp.
    if !msg.blocks.is_empty() {
        key(out, "blk");
        cbor::write_header(out, MAJOR_ARRAY, msg.blocks.len() as u64);
        for b in &msg.blocks {
            cbor::write_header(out, MAJOR_ARRAY, 2);
            bytes(out, &cid_prefix(&b.cid));
            if b.data.len() >= share_from {
                cbor::write_header(out, MAJOR_BYTES, b.data.len() as u64);
                shared.push((out.len(), b.data.clone()));
            } else {
                bytes(out, &b.data);
            }
        }
    }
    if !msg.requests.is_empty() {
        key(out, "req");
        cbor::write_header(out, MAJOR_ARRAY, msg.requests.len() as u64);
        msg.requests.iter().for_each(|r| write_request(out, r));
    }
    if !msg.responses.is_empty() {
        key(out, "rsp");
        cbor::write_header(out, MAJOR_ARRAY, msg.responses.len() as u64);
        msg.responses.iter().for_each(|r| write_response(out, r));
    }
}

fn invalid(what: impl Into<String>) -> MessageError {
    MessageError::Invalid(what.into())
}

fn read_bytes<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], CborError> {
    let h = r.header()?;
    if h.major != MAJOR_BYTES {
        return Err(CborError::UnexpectedType {
            expected: "bytes",
            found: h.major,
            offset: h.offset,
        });
    }
    r.take_bytes(h.value)
}

fn read_int(r: &mut Reader<'_>) -> Result<i128, CborError> {
    let h = r.header()?;
    match h.major {
        MAJOR_UINT => Ok(i128::from(h.value)),
        cbor::MAJOR_NEGINT => Ok(-1 - i128::from(h.value)),
        found => Err(CborError::UnexpectedType {
            expected: "an integer",
            found,
            offset: h.offset,
        }),
    }
}

/// Reads a map of known keys; each key at most once, unknown keys refused (as go-ipld-prime's
/// bindnode does).
fn read_map<'a>(
    r: &mut Reader<'a>,
    what: &str,
    names: &[&str],
    mut f: impl FnMut(usize, &mut Reader<'a>) -> Result<(), MessageError>,
) -> Result<(), MessageError> {
    let n = r.read_map_len()?;
    let mut seen = 0u32;
    for _ in 0..n {
        let k = r.read_text()?;
        let i = names
            .iter()
            .position(|n| n.as_bytes() == k)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown {what} field {:?}",
                    String::from_utf8_lossy(k)
                ))
            })?;
        if seen & (1 << i) != 0 {
            return Err(invalid(format!("duplicate {what} field {}", names[i])));
        }
        seen |= 1 << i;
        f(i, r)?;
    }
    Ok(())
}

fn read_id(r: &mut Reader<'_>) -> Result<RequestId, MessageError> {
    let b = read_bytes(r)?;
    let arr: [u8; 16] = b
        .try_into()
        .map_err(|_| invalid(format!("request id of {} bytes, not 16", b.len())))?;
    Ok(RequestId(arr))
}

fn read_extensions(r: &mut Reader<'_>) -> Result<Extensions, MessageError> {
    let n = r.read_map_len()?;
    // Collected, then sorted once: a peer's map of many names in any order costs n log n.
    let mut entries = Vec::new();
    for _ in 0..n {
        let k = r.read_text()?;
        let name =
            String::from_utf8(k.to_vec()).map_err(|_| invalid("extension name is not UTF-8"))?;
        let v = r.skip_item()?;
        entries.push((name, RawNode::checked(v)));
    }
    Extensions::from_unique_entries(entries)
        .map_err(|name| invalid(format!("duplicate extension {name}")))
}

fn read_request(r: &mut Reader<'_>) -> Result<Request, MessageError> {
    let (mut id, mut kind, mut priority, mut root, mut selector, mut ext) =
        (None, None, 0, None, None, Extensions::new());
    read_map(
        r,
        "request",
        &["id", "type", "pri", "root", "sel", "ext"],
        |i, r| {
            match i {
                0 => id = Some(read_id(r)?),
                1 => {
                    kind = Some(match r.read_text()? {
                        b"n" => RequestType::New,
                        b"c" => RequestType::Cancel,
                        b"u" => RequestType::Update,
                        other => {
                            return Err(invalid(format!(
                                "unknown request type {:?}",
                                String::from_utf8_lossy(other)
                            )));
                        }
                    })
                }
                2 => {
                    priority =
                        i32::try_from(read_int(r)?).map_err(|_| invalid("priority out of range"))?
                }
                3 => root = Some(r.read_cid()?),
                4 => selector = Some(RawNode::checked(r.skip_item()?)),
                _ => ext = read_extensions(r)?,
            }
            Ok(())
        },
    )?;
    Ok(Request {
        id: id.ok_or_else(|| invalid("request without id"))?,
        kind: kind.ok_or_else(|| invalid("request without type"))?,
        priority,
        root,
        selector,
        extensions: ext,
    })
}

fn read_metadata(r: &mut Reader<'_>) -> Result<Vec<(Cid, LinkAction)>, MessageError> {
    let n = r.read_array_len()?;
    let mut out = Vec::new();
    for _ in 0..n {
        if r.read_array_len()? != 2 {
            return Err(invalid("a metadatum is a [link, action] pair"));
        }
        let link = r.read_cid()?;
        let code = r.read_text()?;
        let action = LinkAction::from_code(code).ok_or_else(|| {
            invalid(format!(
                "unknown link action {:?}",
                String::from_utf8_lossy(code)
            ))
        })?;
        out.push((link, action));
    }
    Ok(out)
}

fn read_response(r: &mut Reader<'_>) -> Result<Response, MessageError> {
    let (mut id, mut status, mut metadata, mut ext) = (None, None, Vec::new(), Extensions::new());
    read_map(r, "response", &["reqid", "stat", "meta", "ext"], |i, r| {
        match i {
            0 => id = Some(read_id(r)?),
            1 => status = Some(ResponseStatus::try_from(read_int(r)?)?),
            2 => metadata = read_metadata(r)?,
            _ => ext = read_extensions(r)?,
        }
        Ok(())
    })?;
    Ok(Response {
        id: id.ok_or_else(|| invalid("response without reqid"))?,
        status: status.ok_or_else(|| invalid("response without stat"))?,
        metadata,
        extensions: ext,
    })
}

/// Decodes a message body (no length prefix). Blocks' CIDs are rebuilt from their prefixes
/// and the hash of their data.
pub fn decode(buf: &[u8], max_depth: usize) -> Result<Message, MessageError> {
    decode_with(buf, max_depth, Bytes::copy_from_slice)
}

/// Decodes a message body (no length prefix) whose blocks' bytes are handed out as parts of
/// `buf`, not copied.
pub fn decode_shared(buf: &Bytes, max_depth: usize) -> Result<Message, MessageError> {
    decode_with(buf, max_depth, |data| buf.slice_ref(data))
}

fn decode_with(
    buf: &[u8],
    max_depth: usize,
    block_bytes: impl Fn(&[u8]) -> Bytes,
) -> Result<Message, MessageError> {
    let mut r = Reader::with_max_depth(buf, max_depth);
    let mut msg = Message::default();
    let mut found = false;
    read_map(&mut r, "message root", &["gs2"], |_, r| {
        found = true;
        read_map(r, "message", &["req", "rsp", "blk"], |i, r| {
            let n = r.read_array_len()?;
            for _ in 0..n {
                match i {
                    0 => msg.requests.push(read_request(r)?),
                    1 => msg.responses.push(read_response(r)?),
                    _ => {
                        if r.read_array_len()? != 2 {
                            return Err(invalid("a block is a [prefix, data] pair"));
                        }
                        let prefix = read_bytes(r)?;
                        let data = read_bytes(r)?;
                        msg.blocks.push(Block {
                            cid: cid_from_prefix(prefix, data)?,
                            data: block_bytes(data),
                        });
                    }
                }
            }
            Ok(())
        })
    })?;
    r.finish()?;
    if !found {
        return Err(invalid("no gs2 message in the root"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

    use super::*;

    /// A map of `names` to `null`, in the order given.
    fn map_of(names: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        cbor::write_header(&mut out, MAJOR_MAP, names.len() as u64);
        for n in names {
            cbor::write_text(&mut out, n.as_bytes());
            out.push(cbor::NULL);
        }
        out
    }

    #[test]
    fn a_peer_s_extensions_in_any_order_come_out_canonical_and_whole() {
        // Many names, the longest first, each length from its largest: the order in which
        // inserting each into a sorted list moves every one before it.
        let mut names: Vec<String> = (0..60_000u32).map(|i| format!("x{i}")).collect();
        names.sort_by(|a, b| (b.len(), b.as_bytes()).cmp(&(a.len(), a.as_bytes())));
        let buf = map_of(&names);
        let ext = read_extensions(&mut Reader::new(&buf)).unwrap();
        assert_eq!(ext.len(), names.len());
        let got: Vec<&str> = ext.iter().map(|(k, _)| k).collect();
        let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
        want.reverse();
        assert_eq!(got, want);
        assert!(ext.get("x59999").is_some() && ext.get("x60000").is_none());
    }

    #[test]
    fn a_name_given_twice_is_refused_by_name() {
        let names: Vec<String> = ["b", "aa", "c", "aa"].map(String::from).to_vec();
        let err = read_extensions(&mut Reader::new(&map_of(&names))).unwrap_err();
        assert!(err.to_string().contains("duplicate extension aa"), "{err}");
    }
}
