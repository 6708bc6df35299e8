//! Block codecs (DAG-CBOR, DAG-PB, raw) and block verification against CIDs.

use cid::Cid;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cbor::{self, CborError, Reader};
use crate::node::Node;

/// The multicodec code of raw blocks.
pub const RAW: u64 = 0x55;
/// The multicodec code of DAG-PB.
pub const DAG_PB: u64 = 0x70;
/// The multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// The multihash code of SHA2-256.
pub const SHA2_256: u64 = 0x12;
/// The multihash code of the identity hash (data inlined in the CID).
pub const IDENTITY: u64 = 0x00;

/// A block that cannot be decoded or does not match its CID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Malformed DAG-CBOR.
    #[error("malformed DAG-CBOR: {0}")]
    Cbor(#[from] CborError),
    /// Malformed DAG-PB.
    #[error("malformed DAG-PB: {0}")]
    DagPb(String),
    /// A string that is not UTF-8, or a map key that is not a string.
    #[error("invalid IPLD data: {0}")]
    Invalid(String),
    /// A codec this crate does not decode.
    #[error("unsupported codec 0x{0:x}")]
    UnsupportedCodec(u64),
    /// A hash function this crate cannot verify.
    #[error("unsupported hash function 0x{0:x}")]
    UnsupportedHash(u64),
    /// The block's bytes do not hash to its CID.
    #[error("block does not match its CID {0}")]
    HashMismatch(Cid),
    /// The block is larger than allowed.
    #[error("block of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The block's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks that `data` is what `cid` names.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    let mh = cid.hash();
    let ok = match mh.code() {
        SHA2_256 => Sha256::digest(data).as_slice() == mh.digest(),
        IDENTITY => mh.digest() == data,
        other => return Err(BlockError::UnsupportedHash(other)),
    };
    if ok {
        Ok(())
    } else {
        Err(BlockError::HashMismatch(*cid))
    }
}

/// The CIDv1 of `data` under `codec`, hashed with SHA2-256.
pub fn cid_of(codec: u64, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    let mh = cid::multihash::Multihash::wrap(SHA2_256, &digest).unwrap_or_default();
    Cid::new_v1(codec, mh)
}

/// Decodes a block according to its CID's codec.
pub fn decode(cid: &Cid, data: &[u8], max_depth: usize) -> Result<Node, BlockError> {
    match cid.codec() {
        RAW => Ok(Node::Bytes(data.to_vec())),
        DAG_CBOR => decode_dag_cbor(data, max_depth),
        DAG_PB => decode_dag_pb(data),
        other => Err(BlockError::UnsupportedCodec(other)),
    }
}

/// Decodes one DAG-CBOR item filling `data`, keeping map order.
pub fn decode_dag_cbor(data: &[u8], max_depth: usize) -> Result<Node, BlockError> {
    let mut r = Reader::with_max_depth(data, max_depth);
    let node = read_node(&mut r, 0, max_depth)?;
    r.finish()?;
    Ok(node)
}

fn utf8(bytes: &[u8]) -> Result<String, BlockError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| BlockError::Invalid("string is not UTF-8".into()))
}

fn read_node(r: &mut Reader<'_>, depth: usize, max_depth: usize) -> Result<Node, BlockError> {
    if depth >= max_depth {
        return Err(CborError::TooDeep { max: max_depth }.into());
    }
    let start = r.position();
    if let Some(b) = r.peek() {
        match b {
            cbor::NULL => {
                r.read_null();
                return Ok(Node::Null);
            }
            cbor::TRUE | cbor::FALSE => return Ok(Node::Bool(r.read_bool()?)),
            _ => {}
        }
    }
    let h = r.header()?;
    Ok(match h.major {
        cbor::MAJOR_UINT => Node::Integer(i128::from(h.value)),
        cbor::MAJOR_NEGINT => Node::Integer(-1 - i128::from(h.value)),
        cbor::MAJOR_BYTES => Node::Bytes(r.take_bytes(h.value)?.to_vec()),
        cbor::MAJOR_TEXT => Node::String(utf8(r.take_bytes(h.value)?)?),
        cbor::MAJOR_ARRAY => {
            let mut items = Vec::new();
            for _ in 0..h.value {
                items.push(read_node(r, depth + 1, max_depth)?);
            }
            Node::List(items)
        }
        cbor::MAJOR_MAP => {
            let mut entries = Vec::new();
            for _ in 0..h.value {
                let k = r
                    .read_text()
                    .map_err(|_| BlockError::Invalid("map key is not a string".into()))?;
                let k = utf8(k)?;
                if entries.iter().any(|(e, _): &(String, Node)| *e == k) {
                    return Err(BlockError::Invalid(format!("duplicate map key {k:?}")));
                }
                entries.push((k, read_node(r, depth + 1, max_depth)?));
            }
            Node::Map(entries)
        }
        cbor::MAJOR_TAG => {
            if h.value != cbor::CID_TAG {
                return Err(BlockError::Invalid(format!(
                    "tag {} is not allowed in DAG-CBOR",
                    h.value
                )));
            }
            // Re-read from the tag so the CID reader checks it whole.
            let mut again = r.clone();
            again.rewind_to(start);
            let cid = again.read_cid()?;
            *r = again;
            Node::Link(cid)
        }
        _ => match h.info {
            25 => Node::Float(f64::from(half_to_f32(h.value as u16))),
            26 => Node::Float(f64::from(f32::from_bits(h.value as u32))),
            27 => Node::Float(f64::from_bits(h.value)),
            _ => {
                return Err(CborError::UnsupportedSimple {
                    value: h.value,
                    offset: h.offset,
                }
                .into());
            }
        },
    })
}

fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Encodes a node as canonical DAG-CBOR (map keys sorted length-first, shortest headers,
/// floats as 64-bit, as go-ipld-prime writes them).
pub fn encode_dag_cbor(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    write_node(node, &mut out);
    out
}

fn write_node(node: &Node, out: &mut Vec<u8>) {
    match node {
        Node::Null => out.push(cbor::NULL),
        Node::Bool(b) => cbor::write_bool(out, *b),
        Node::Integer(i) if *i >= 0 => cbor::write_header(out, cbor::MAJOR_UINT, *i as u64),
        Node::Integer(i) => cbor::write_header(out, cbor::MAJOR_NEGINT, (-1 - *i) as u64),
        Node::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Node::String(s) => cbor::write_text(out, s.as_bytes()),
        Node::Bytes(b) => {
            cbor::write_header(out, cbor::MAJOR_BYTES, b.len() as u64);
            out.extend_from_slice(b);
        }
        Node::List(items) => {
            cbor::write_header(out, cbor::MAJOR_ARRAY, items.len() as u64);
            items.iter().for_each(|i| write_node(i, out));
        }
        Node::Map(entries) => {
            let mut sorted: Vec<&(String, Node)> = entries.iter().collect();
            sorted.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            cbor::write_header(out, cbor::MAJOR_MAP, sorted.len() as u64);
            for (k, v) in sorted {
                cbor::write_text(out, k.as_bytes());
                write_node(v, out);
            }
        }
        Node::Link(c) => cbor::write_cid(out, c),
    }
}

// ----- DAG-PB -----------------------------------------------------------------------------

/// One link of a DAG-PB node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The linked block.
    pub hash: Cid,
    /// The link's name, if any.
    pub name: Option<String>,
    /// The cumulative size of the linked DAG, if recorded.
    pub tsize: Option<u64>,
}

/// A DAG-PB node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// The links, in order.
    pub links: Vec<PbLink>,
    /// The data, if any.
    pub data: Option<Vec<u8>>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, BlockError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| BlockError::DagPb("truncated varint".into()))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(BlockError::DagPb("varint too long".into()))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A protobuf field: number, wire type, body (length-delimited) or value (varint).
type RawField<'a> = (u64, u64, Option<&'a [u8]>, u64);

fn field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<RawField<'a>, BlockError> {
    let key = varint(buf, pos)?;
    let (num, wire) = (key >> 3, key & 7);
    match wire {
        0 => Ok((num, wire, None, varint(buf, pos)?)),
        2 => {
            let len = varint(buf, pos)?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| pos.checked_add(l))
                .filter(|e| *e <= buf.len())
                .ok_or_else(|| BlockError::DagPb("length past the end of the block".into()))?;
            let bytes = &buf[*pos..end];
            *pos = end;
            Ok((num, wire, Some(bytes), 0))
        }
        w => Err(BlockError::DagPb(format!("unexpected wire type {w}"))),
    }
}

impl PbNode {
    /// Decodes a DAG-PB block (strictly: only the PBNode and PBLink fields).
    pub fn decode(data: &[u8]) -> Result<Self, BlockError> {
        let mut node = Self::default();
        let mut pos = 0;
        while pos < data.len() {
            match field(data, &mut pos)? {
                (2, 2, Some(bytes), _) => node.links.push(PbLink::decode(bytes)?),
                (1, 2, Some(bytes), _) if node.data.is_none() => node.data = Some(bytes.to_vec()),
                (n, w, ..) => {
                    return Err(BlockError::DagPb(format!(
                        "unexpected field {n} (wire type {w})"
                    )));
                }
            }
        }
        Ok(node)
    }

    /// Encodes the node (links first, then data, as the spec's canonical form).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.links {
            let link = l.encode();
            out.push(0x12);
            put_varint(&mut out, link.len() as u64);
            out.extend_from_slice(&link);
        }
        if let Some(d) = &self.data {
            out.push(0x0a);
            put_varint(&mut out, d.len() as u64);
            out.extend_from_slice(d);
        }
        out
    }

    /// The node in the IPLD data model: `{Links: [...], Data: bytes}` (go-codec-dagpb's order).
    pub fn to_node(&self) -> Node {
        let links = self.links.iter().map(PbLink::to_node).collect();
        let mut entries = vec![("Links".to_owned(), Node::List(links))];
        if let Some(d) = &self.data {
            entries.push(("Data".to_owned(), Node::Bytes(d.clone())));
        }
        Node::Map(entries)
    }
}

impl PbLink {
    fn decode(data: &[u8]) -> Result<Self, BlockError> {
        let (mut hash, mut name, mut tsize) = (None, None, None);
        let mut pos = 0;
        while pos < data.len() {
            match field(data, &mut pos)? {
                (1, 2, Some(b), _) if hash.is_none() => {
                    hash = Some(
                        Cid::try_from(b)
                            .map_err(|e| BlockError::DagPb(format!("link hash: {e}")))?,
                    )
                }
                (2, 2, Some(b), _) if name.is_none() => name = Some(utf8(b)?),
                (3, 0, None, v) if tsize.is_none() => tsize = Some(v),
                (n, w, ..) => {
                    return Err(BlockError::DagPb(format!(
                        "unexpected link field {n} (wire type {w})"
                    )));
                }
            }
        }
        Ok(Self {
            hash: hash.ok_or_else(|| BlockError::DagPb("link without a hash".into()))?,
            name,
            tsize,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let hash = self.hash.to_bytes();
        out.push(0x0a);
        put_varint(&mut out, hash.len() as u64);
        out.extend_from_slice(&hash);
        if let Some(n) = &self.name {
            out.push(0x12);
            put_varint(&mut out, n.len() as u64);
            out.extend_from_slice(n.as_bytes());
        }
        if let Some(t) = self.tsize {
            out.push(0x18);
            put_varint(&mut out, t);
        }
        out
    }

    fn to_node(&self) -> Node {
        let mut entries = vec![("Hash".to_owned(), Node::Link(self.hash))];
        if let Some(n) = &self.name {
            entries.push(("Name".to_owned(), Node::String(n.clone())));
        }
        if let Some(t) = self.tsize {
            entries.push(("Tsize".to_owned(), Node::Integer(i128::from(t))));
        }
        Node::Map(entries)
    }
}

/// Decodes a DAG-PB block into the data model.
pub fn decode_dag_pb(data: &[u8]) -> Result<Node, BlockError> {
    PbNode::decode(data).map(|n| n.to_node())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dag_cbor_keeps_map_order_and_round_trips_canonical_input() {
        // {"b": 1, "aa": [true, null, -2, "x"]} in canonical (length-first) order.
        let bytes = [
            0xa2, 0x61, b'b', 0x01, 0x62, b'a', b'a', 0x84, 0xf5, 0xf6, 0x21, 0x61, b'x',
        ];
        let node = decode_dag_cbor(&bytes, 64).unwrap();
        let Node::Map(entries) = &node else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0, "b");
        assert_eq!(entries[1].1.index(2), Some(&Node::Integer(-2)));
        assert_eq!(encode_dag_cbor(&node), bytes);
        // Garbage is an error, not a panic.
        assert!(decode_dag_cbor(&[0xa1, 0x01, 0x01], 64).is_err());
        assert!(decode_dag_cbor(&[0xc1, 0x01], 64).is_err());
        assert!(decode_dag_cbor(&[0x62, 0xff, 0xfe], 64).is_err());
    }

    #[test]
    fn dag_pb_round_trips_and_verifies() {
        let leaf = cid_of(RAW, b"hello");
        let node = PbNode {
            links: vec![PbLink {
                hash: leaf,
                name: Some(String::new()),
                tsize: Some(5),
            }],
            data: Some(vec![0x08, 0x02]),
        };
        let bytes = node.encode();
        assert_eq!(PbNode::decode(&bytes).unwrap(), node);
        let cid = cid_of(DAG_PB, &bytes);
        assert!(verify(&cid, &bytes).is_ok());
        assert_eq!(verify(&cid, b"other"), Err(BlockError::HashMismatch(cid)));
        assert!(PbNode::decode(&[0x12, 0x05, 0x0a]).is_err());
        let decoded = decode(&cid, &bytes, 64).unwrap();
        assert_eq!(
            decoded
                .get("Links")
                .and_then(|l| l.index(0))
                .and_then(|l| l.get("Hash")),
            Some(&Node::Link(leaf))
        );
    }
}
