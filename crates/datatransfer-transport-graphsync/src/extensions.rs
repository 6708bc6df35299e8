//! Data-transfer messages carried in graphsync extensions, under Go's three names.

use crate::*;

/// Decodes the data-transfer message a graphsync message carries, as every hook of the
/// transport reads it: the value of the first of `names` present in `extensions`, as a
/// `/fil/datatransfer/1.2.0` message within `limits`. `None` when none of the names is
/// present; an error (the decoder's message) when the value is not a valid message.
pub fn message_in_extensions(
    extensions: &Extensions,
    names: &[&str],
    limits: &DecodeLimits,
) -> Option<Result<Message, String>> {
    let node = names.iter().find_map(|n| extensions.get(n))?;
    Some(
        Message::from_cbor_with_limits(WireVersion::V1_2, node.as_bytes(), limits)
            .map_err(|e| e.to_string()),
    )
}

/// Encodes a message into the extensions named.
pub(super) fn extensions_for(message: &Message, names: &[&str]) -> Extensions {
    let mut ext = Extensions::new();
    if let Ok(node) = RawNode::new(message.to_cbor(WireVersion::V1_2)) {
        for n in names {
            ext.set(*n, node.clone());
        }
    }
    ext
}

pub(super) fn merge_into(ext: &mut Extensions, more: Extensions) {
    for (k, v) in more.iter() {
        ext.set(k, v.clone());
    }
}
