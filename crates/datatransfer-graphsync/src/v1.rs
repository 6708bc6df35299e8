//! `/ipfs/graphsync/1.0.0`: protobuf messages (go-graphsync v0.13.1 `message/pb/message.proto`).
//!
//! The prost types are written by hand (`#[derive(prost::Message)]` on structs mirroring the
//! .proto), so building needs no `protoc`. Differences from 2.0.0 that this module bridges:
//! request ids are `int32` (mapped to [`RequestId`]s per peer by [`V1Ids`]); link metadata
//! rides in the `graphsync/response-metadata` extension as a DAG-CBOR list of
//! `{link, blockPresent}`; extension values are DAG-CBOR bytes, empty for null.

use std::collections::{BTreeMap, HashMap};

use cid::Cid;
use datatransfer_ipld::cbor::{self, MAJOR_ARRAY, MAJOR_MAP, Reader};
use prost::Message as _;

use crate::message::{
    Block, Extensions, LinkAction, Message, MessageError, RawNode, Request, RequestId, RequestType,
    Response, ResponseStatus, cid_from_prefix, cid_prefix,
};

/// Per-link metadata: each link the responder's traversal reached and what it did with it.
type Metadata = Vec<(Cid, LinkAction)>;

/// The extension that carries link metadata in 1.0.0.
pub const METADATA_EXTENSION: &str = "graphsync/response-metadata";

/// `Message` of message.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbMessage {
    /// `completeRequestList = 1`.
    #[prost(bool, tag = "1")]
    pub complete_request_list: bool,
    /// `requests = 2`.
    #[prost(message, repeated, tag = "2")]
    pub requests: Vec<PbRequest>,
    /// `responses = 3`.
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<PbResponse>,
    /// `data = 4` (blocks).
    #[prost(message, repeated, tag = "4")]
    pub data: Vec<PbBlock>,
}

/// `Message.Request` of message.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbRequest {
    /// `id = 1`.
    #[prost(int32, tag = "1")]
    pub id: i32,
    /// `root = 2` (CID bytes).
    #[prost(bytes = "vec", tag = "2")]
    pub root: Vec<u8>,
    /// `selector = 3` (DAG-CBOR).
    #[prost(bytes = "vec", tag = "3")]
    pub selector: Vec<u8>,
    /// `extensions = 4`.
    #[prost(btree_map = "string, bytes", tag = "4")]
    pub extensions: BTreeMap<String, Vec<u8>>,
    /// `priority = 5`.
    #[prost(int32, tag = "5")]
    pub priority: i32,
    /// `cancel = 6`.
    #[prost(bool, tag = "6")]
    pub cancel: bool,
    /// `update = 7`.
    #[prost(bool, tag = "7")]
    pub update: bool,
}

/// `Message.Response` of message.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbResponse {
    /// `id = 1`.
    #[prost(int32, tag = "1")]
    pub id: i32,
    /// `status = 2`.
    #[prost(int32, tag = "2")]
    pub status: i32,
    /// `extensions = 3`.
    #[prost(btree_map = "string, bytes", tag = "3")]
    pub extensions: BTreeMap<String, Vec<u8>>,
}

/// `Message.Block` of message.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbBlock {
    /// `prefix = 1`.
    #[prost(bytes = "vec", tag = "1")]
    pub prefix: Vec<u8>,
    /// `data = 2`.
    #[prost(bytes = "bytes", tag = "2")]
    pub data: bytes::Bytes,
}

/// Maps 1.0.0's `int32` request ids to [`RequestId`]s for one peer, both ways.
///
/// An id received from the peer maps to a fixed `RequestId` (its 4 bytes after 12 bytes of
/// 0xff), so the same int always names the same request; our own ids get the next free int.
#[derive(Debug, Default, Clone)]
pub struct V1Ids {
    ours: HashMap<RequestId, i32>,
    by_int: HashMap<i32, RequestId>,
    next: i32,
}

impl V1Ids {
    /// The `RequestId` a peer's `int32` id stands for.
    pub fn from_v1(id: i32) -> RequestId {
        let mut b = [0xffu8; 16];
        b[12..].copy_from_slice(&id.to_be_bytes());
        RequestId(b)
    }

    /// The `int32` to send for `id`, allocating one for a new id of ours.
    pub fn to_v1(&mut self, id: RequestId) -> i32 {
        if id.0[..12] == [0xff; 12] {
            let mut b = [0u8; 4];
            b.copy_from_slice(&id.0[12..]);
            return i32::from_be_bytes(b);
        }
        if let Some(i) = self.ours.get(&id) {
            return *i;
        }
        let i = self.next;
        self.next = self.next.wrapping_add(1);
        self.ours.insert(id, i);
        self.by_int.insert(i, id);
        i
    }

    /// Forgets one of our ids once its request is over (keeps the map bounded).
    pub fn forget(&mut self, id: &RequestId) {
        if let Some(i) = self.ours.remove(id) {
            self.by_int.remove(&i);
        }
    }

    /// The `RequestId` of ours that `int32` `id` was allocated to, if any (for responses
    /// to our requests).
    pub fn ours_for(&self, id: i32) -> Option<RequestId> {
        self.by_int.get(&id).copied()
    }
}

fn ext_to_v1(ext: &Extensions) -> BTreeMap<String, Vec<u8>> {
    ext.iter()
        .map(|(k, v)| {
            // Go writes a null extension as empty bytes.
            let bytes = if v.as_bytes() == [cbor::NULL] {
                Vec::new()
            } else {
                v.as_bytes().to_vec()
            };
            (k.to_owned(), bytes)
        })
        .collect()
}

fn encode_metadata(md: &[(Cid, LinkAction)]) -> Vec<u8> {
    let mut out = Vec::new();
    cbor::write_header(&mut out, MAJOR_ARRAY, md.len() as u64);
    for (link, action) in md {
        // {link, blockPresent}, canonical order: "link" before "blockPresent".
        cbor::write_header(&mut out, MAJOR_MAP, 2);
        cbor::write_text(&mut out, b"link");
        cbor::write_cid(&mut out, link);
        cbor::write_text(&mut out, b"blockPresent");
        cbor::write_bool(&mut out, *action == LinkAction::Present);
    }
    out
}

fn decode_metadata(bytes: &[u8]) -> Result<Metadata, MessageError> {
    let bad = |w: &str| MessageError::Invalid(format!("response metadata: {w}"));
    let mut r = Reader::new(bytes);
    let n = r.read_array_len()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let fields = r.read_map_len()?;
        let (mut link, mut present) = (None, None);
        for _ in 0..fields {
            match r.read_text()? {
                b"link" => link = Some(r.read_cid()?),
                b"blockPresent" => present = Some(r.read_bool()?),
                _ => return Err(bad("unknown field")),
            }
        }
        let link = link.ok_or_else(|| bad("item without link"))?;
        let action = if present.ok_or_else(|| bad("item without blockPresent"))? {
            LinkAction::Present
        } else {
            LinkAction::Missing
        };
        out.push((link, action));
    }
    r.finish()?;
    Ok(out)
}

fn ext_from_v1(
    map: BTreeMap<String, Vec<u8>>,
) -> Result<(Extensions, Option<Metadata>), MessageError> {
    // Collected, then sorted once into canonical order (the map's is bytewise).
    let mut ext = Vec::with_capacity(map.len());
    let mut md = None;
    for (name, bytes) in map {
        if name == METADATA_EXTENSION {
            md = Some(decode_metadata(&bytes)?);
            continue;
        }
        let node = if bytes.is_empty() {
            vec![cbor::NULL]
        } else {
            bytes
        };
        let node = RawNode::new(node)
            .map_err(|e| MessageError::Invalid(format!("extension {name}: {e}")))?;
        ext.push((name, node));
    }
    Ok((Extensions::from_entries(ext), md))
}

/// Encodes a message body (no length prefix); `ids` maps request ids for this peer.
pub fn encode(msg: &Message, ids: &mut V1Ids) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, msg, ids);
    out
}

/// Appends a message body (no length prefix) to `out`; `ids` maps request ids for this peer.
pub fn encode_into(out: &mut Vec<u8>, msg: &Message, ids: &mut V1Ids) {
    let pb = PbMessage {
        complete_request_list: false,
        requests: msg
            .requests
            .iter()
            .map(|r| PbRequest {
                id: ids.to_v1(r.id),
                root: r.root.map(|c| c.to_bytes()).unwrap_or_default(),
                selector: r
                    .selector
                    .as_ref()
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default(),
                extensions: ext_to_v1(&r.extensions),
                priority: r.priority,
                cancel: r.kind == RequestType::Cancel,
                update: r.kind == RequestType::Update,
            })
            .collect(),
        responses: msg
            .responses
            .iter()
            .map(|r| {
                let mut extensions = ext_to_v1(&r.extensions);
                extensions.insert(METADATA_EXTENSION.to_owned(), encode_metadata(&r.metadata));
                PbResponse {
                    id: ids.to_v1(r.id),
                    status: r.status.code(),
                    extensions,
                }
            })
            .collect(),
        data: msg
            .blocks
            .iter()
            .map(|b| PbBlock {
                prefix: cid_prefix(&b.cid),
                data: b.data.clone(),
            })
            .collect(),
    };
    // A Vec grows as needed: this cannot fail.
    let _ = pb.encode(out);
}

/// Decodes a message body (no length prefix). Request ids in requests map through
/// [`V1Ids::from_v1`]; ids in responses map to our own requests when `ids` allocated them.
pub fn decode(buf: &[u8], ids: &V1Ids) -> Result<Message, MessageError> {
    let pb = PbMessage::decode(buf).map_err(|e| MessageError::Protobuf(e.to_string()))?;
    let mut msg = Message::default();
    for r in pb.requests {
        let id = V1Ids::from_v1(r.id);
        let (extensions, md) = ext_from_v1(r.extensions)?;
        if md.is_some() {
            return Err(MessageError::Invalid("metadata in a request".into()));
        }
        let kind = match (r.cancel, r.update) {
            (true, _) => RequestType::Cancel,
            (false, true) => RequestType::Update,
            (false, false) => RequestType::New,
        };
        let (root, selector) = if kind == RequestType::New {
            let root = Cid::try_from(r.root.as_slice())
                .map_err(|e| MessageError::Invalid(format!("request root: {e}")))?;
            let sel = RawNode::new(r.selector)
                .map_err(|e| MessageError::Invalid(format!("request selector: {e}")))?;
            (Some(root), Some(sel))
        } else {
            (None, None)
        };
        msg.requests.push(Request {
            id,
            kind,
            priority: r.priority,
            root,
            selector,
            extensions,
        });
    }
    for r in pb.responses {
        let id = ids.ours_for(r.id).unwrap_or_else(|| V1Ids::from_v1(r.id));
        let (extensions, md) = ext_from_v1(r.extensions)?;
        msg.responses.push(Response {
            id,
            status: ResponseStatus::try_from(i128::from(r.status))?,
            metadata: md.unwrap_or_default(),
            extensions,
        });
    }
    for b in pb.data {
        let cid = cid_from_prefix(&b.prefix, &b.data)?;
        msg.blocks.push(Block { cid, data: b.data });
    }
    Ok(msg)
}
