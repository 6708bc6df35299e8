//! One codec for every message: each struct is a list of fields, written in Go's order for the
//! chosen version and read in any order.

use libp2p_identity::PeerId;

use super::{Message, MessageError, MessageType, TransferRequest, TransferResponse, WireVersion};
use crate::cbor::{self, CborError, Reader};
use crate::ids::{ChannelId, TransferId};
use crate::node::DagCbor;
use crate::voucher::TypeIdentifier;

/// A field value as it goes on the wire.
enum Value<'a> {
    Bool(bool),
    Uint(u64),
    Text(&'a [u8]),
    /// An embedded node, or null.
    Node(Option<&'a [u8]>),
    /// A link, or null.
    Cid(Option<&'a cid::Cid>),
    /// A channel-id tuple; `None` is Go's zero value `["", "", 0]`.
    Channel(Option<&'a ChannelId>),
    /// A nested struct already encoded, or null.
    Encoded(Option<&'a [u8]>),
}

fn write_value(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Bool(b) => cbor::write_bool(out, *b),
        Value::Uint(n) => cbor::write_header(out, cbor::MAJOR_UINT, *n),
        Value::Text(t) => cbor::write_text(out, t),
        Value::Node(Some(raw)) | Value::Encoded(Some(raw)) => out.extend_from_slice(raw),
        Value::Node(None) | Value::Encoded(None) | Value::Cid(None) => out.push(cbor::NULL),
        Value::Cid(Some(c)) => cbor::write_cid(out, c),
        Value::Channel(ch) => {
            cbor::write_header(out, cbor::MAJOR_ARRAY, 3);
            match ch {
                Some(ch) => {
                    cbor::write_text(out, &ch.initiator.to_bytes());
                    cbor::write_text(out, &ch.responder.to_bytes());
                    cbor::write_header(out, cbor::MAJOR_UINT, ch.id.0);
                }
                None => out.extend_from_slice(&[0x60, 0x60, 0x00]),
            }
        }
    }
}

/// Writes a struct as a map. `fields` is in Go's declaration order, which is what cbor-gen
/// (1.1.0) writes; go-ipld-prime (1.2.0) sorts keys by length, then bytewise.
fn write_map(out: &mut Vec<u8>, version: WireVersion, fields: &mut [(&'static str, Value<'_>)]) {
    if version == WireVersion::V1_2 {
        fields.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
    }
    cbor::write_header(out, cbor::MAJOR_MAP, fields.len() as u64);
    for (key, value) in fields.iter() {
        cbor::write_text(out, key.as_bytes());
        write_value(out, value);
    }
}

fn encode_request(r: &TransferRequest, version: WireVersion, out: &mut Vec<u8>) {
    write_map(
        out,
        version,
        &mut [
            ("BCid", Value::Cid(r.base_cid.as_ref())),
            ("Type", Value::Uint(r.message_type.code())),
            ("Paus", Value::Bool(r.pause)),
            ("Part", Value::Bool(r.partial)),
            ("Pull", Value::Bool(r.pull)),
            (
                "Stor",
                Value::Node(r.selector.as_ref().map(DagCbor::as_bytes)),
            ),
            (
                "Vouch",
                Value::Node(r.voucher.as_ref().map(DagCbor::as_bytes)),
            ),
            ("VTyp", Value::Text(r.voucher_type.as_str().as_bytes())),
            ("XferID", Value::Uint(r.transfer_id.0)),
            ("RestartChannel", Value::Channel(r.restart_channel.as_ref())),
        ],
    );
}

fn encode_response(r: &TransferResponse, version: WireVersion, out: &mut Vec<u8>) {
    write_map(
        out,
        version,
        &mut [
            ("Type", Value::Uint(r.message_type.code())),
            ("Acpt", Value::Bool(r.accepted)),
            ("Paus", Value::Bool(r.paused)),
            ("XferID", Value::Uint(r.transfer_id.0)),
            (
                "VRes",
                Value::Node(r.voucher_result.as_ref().map(DagCbor::as_bytes)),
            ),
            (
                "VTyp",
                Value::Text(r.voucher_result_type.as_str().as_bytes()),
            ),
        ],
    );
}

pub(super) fn encode(msg: &Message, version: WireVersion, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(96);
    let (is_request, request, response) = match msg {
        Message::Request(r) => {
            encode_request(r, version, &mut body);
            (true, Some(body.as_slice()), None)
        }
        Message::Response(r) => {
            encode_response(r, version, &mut body);
            (false, None, Some(body.as_slice()))
        }
    };
    write_map(
        out,
        version,
        &mut [
            ("IsRq", Value::Bool(is_request)),
            ("Request", Value::Encoded(request)),
            ("Response", Value::Encoded(response)),
        ],
    );
}

/// Reads a map whose known keys are `names`, calling `field(index, reader)` for each known key
/// (at most once each) and skipping unknown keys, as both Go decoders tolerate extra fields.
fn read_struct<'a>(
    r: &mut Reader<'a>,
    names: &[&'static str],
    mut field: impl FnMut(usize, &mut Reader<'a>) -> Result<(), MessageError>,
) -> Result<(), MessageError> {
    let len = r.read_map_len()?;
    let mut seen = 0u32;
    for _ in 0..len {
        let key = r.read_text()?;
        match names.iter().position(|n| n.as_bytes() == key) {
            Some(i) => {
                if seen & (1 << i) != 0 {
                    return Err(MessageError::DuplicateField(names[i]));
                }
                seen |= 1 << i;
                field(i, r)?;
            }
            None => {
                r.skip_item()?;
            }
        }
    }
    Ok(())
}

fn in_field<T>(field: &'static str, res: Result<T, CborError>) -> Result<T, MessageError> {
    res.map_err(|source| MessageError::Field { field, source })
}

fn read_node(r: &mut Reader<'_>, field: &'static str) -> Result<Option<DagCbor>, MessageError> {
    if r.read_null() {
        return Ok(None);
    }
    in_field(field, r.skip_item()).map(|raw| Some(DagCbor::from_checked(raw)))
}

fn read_type_id(r: &mut Reader<'_>) -> Result<TypeIdentifier, MessageError> {
    let raw = in_field("VTyp", r.read_text())?;
    let s = std::str::from_utf8(raw).map_err(|_| MessageError::InvalidTypeIdentifier)?;
    Ok(TypeIdentifier::new(s))
}

fn read_peer(raw: &[u8]) -> Result<PeerId, MessageError> {
    let peer = PeerId::from_bytes(raw).map_err(|e| MessageError::InvalidPeerId(e.to_string()))?;
    // Only canonical bytes are accepted, so that re-encoding gives back the same bytes.
    if peer.to_bytes() != raw {
        return Err(MessageError::InvalidPeerId(
            "peer id bytes are not in canonical form".into(),
        ));
    }
    Ok(peer)
}

fn read_channel(r: &mut Reader<'_>) -> Result<Option<ChannelId>, MessageError> {
    const F: &str = "RestartChannel";
    let len = in_field(F, r.read_array_len())?;
    if len != 3 {
        return Err(MessageError::Field {
            field: F,
            source: CborError::UnexpectedType {
                expected: "a 3-element array",
                found: cbor::MAJOR_ARRAY,
                offset: r.position(),
            },
        });
    }
    let initiator = in_field(F, r.read_text())?;
    let responder = in_field(F, r.read_text())?;
    let id = in_field(F, r.read_uint())?;
    if initiator.is_empty() && responder.is_empty() && id == 0 {
        return Ok(None);
    }
    Ok(Some(ChannelId::new(
        read_peer(initiator)?,
        read_peer(responder)?,
        TransferId(id),
    )))
}

fn decode_request(r: &mut Reader<'_>) -> Result<TransferRequest, MessageError> {
    const NAMES: [&str; 10] = [
        "BCid",
        "Type",
        "Paus",
        "Part",
        "Pull",
        "Stor",
        "Vouch",
        "VTyp",
        "XferID",
        "RestartChannel",
    ];
    let mut req = TransferRequest::base(MessageType::New, TransferId(0));
    read_struct(r, &NAMES, |i, r| {
        match i {
            0 => {
                req.base_cid = if r.read_null() {
                    None
                } else {
                    Some(in_field(NAMES[i], r.read_cid())?)
                }
            }
            1 => req.message_type = MessageType::try_from(in_field(NAMES[i], r.read_uint())?)?,
            2 => req.pause = in_field(NAMES[i], r.read_bool())?,
            3 => req.partial = in_field(NAMES[i], r.read_bool())?,
            4 => req.pull = in_field(NAMES[i], r.read_bool())?,
            5 => req.selector = read_node(r, NAMES[i])?,
            6 => req.voucher = read_node(r, NAMES[i])?,
            7 => req.voucher_type = read_type_id(r)?,
            8 => req.transfer_id = TransferId(in_field(NAMES[i], r.read_uint())?),
            _ => req.restart_channel = read_channel(r)?,
        }
        Ok(())
    })?;
    Ok(req)
}

fn decode_response(r: &mut Reader<'_>) -> Result<TransferResponse, MessageError> {
    const NAMES: [&str; 6] = ["Type", "Acpt", "Paus", "XferID", "VRes", "VTyp"];
    let mut resp =
        TransferResponse::with_result(MessageType::New, TransferId(0), false, false, None);
    read_struct(r, &NAMES, |i, r| {
        match i {
            0 => resp.message_type = MessageType::try_from(in_field(NAMES[i], r.read_uint())?)?,
            1 => resp.accepted = in_field(NAMES[i], r.read_bool())?,
            2 => resp.paused = in_field(NAMES[i], r.read_bool())?,
            3 => resp.transfer_id = TransferId(in_field(NAMES[i], r.read_uint())?),
            4 => resp.voucher_result = read_node(r, NAMES[i])?,
            _ => resp.voucher_result_type = read_type_id(r)?,
        }
        Ok(())
    })?;
    Ok(resp)
}

pub(super) fn decode(bytes: &[u8], max_depth: usize) -> Result<Message, MessageError> {
    const NAMES: [&str; 3] = ["IsRq", "Request", "Response"];
    let mut r = Reader::with_max_depth(bytes, max_depth);
    let mut is_request = None;
    let mut request = None;
    let mut response = None;
    read_struct(&mut r, &NAMES, |i, r| {
        match i {
            0 => is_request = Some(in_field(NAMES[i], r.read_bool())?),
            1 if !r.read_null() => request = Some(decode_request(r)?),
            2 if !r.read_null() => response = Some(decode_response(r)?),
            _ => {}
        }
        Ok(())
    })?;
    r.finish()?;
    // Go decides by IsRq alone and ignores the other body.
    match is_request.unwrap_or(false) {
        true => request
            .map(Message::Request)
            .ok_or(MessageError::MissingBody { is_request: true }),
        false => response
            .map(Message::Response)
            .ok_or(MessageError::MissingBody { is_request: false }),
    }
}
