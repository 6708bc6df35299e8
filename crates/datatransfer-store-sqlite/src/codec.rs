//! Conversions between [`ChannelState`] and the rows that hold it.
//!
//! Scalars get their own columns (so they can be indexed and read by other tools); the stage
//! log, which is only ever read whole, is one DAG-CBOR blob.

use datatransfer_types::cbor::{self, MAJOR_ARRAY, MAJOR_UINT, Reader};
use datatransfer_types::store::StoreError;
use datatransfer_types::{
    ChannelId, ChannelStage, ChannelStages, ChannelState, Cid, DagCbor, PeerId, StageLog, Status,
    Timestamp, TransferId, TypedNode,
};
use rusqlite::Row;

/// SQLite integers are signed 64-bit; counters and ids are `u64` stored bit for bit.
pub(crate) fn to_sql(n: u64) -> i64 {
    n as i64
}

/// The inverse of [`to_sql`].
pub(crate) fn from_sql(n: i64) -> u64 {
    n as u64
}

/// Encodes the stage log.
pub(crate) fn encode_stages(stages: &ChannelStages) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    cbor::write_header(&mut out, MAJOR_ARRAY, stages.stages.len() as u64);
    for st in &stages.stages {
        cbor::write_header(&mut out, MAJOR_ARRAY, 5);
        cbor::write_text(&mut out, st.name.as_bytes());
        cbor::write_text(&mut out, st.description.as_bytes());
        cbor::write_header(&mut out, MAJOR_UINT, st.created.0);
        cbor::write_header(&mut out, MAJOR_UINT, st.updated.0);
        cbor::write_header(&mut out, MAJOR_ARRAY, st.logs.len() as u64);
        for l in &st.logs {
            cbor::write_header(&mut out, MAJOR_ARRAY, 2);
            cbor::write_text(&mut out, l.log.as_bytes());
            cbor::write_header(&mut out, MAJOR_UINT, l.updated.0);
        }
    }
    out
}

fn text(r: &mut Reader<'_>) -> Result<String, String> {
    let raw = r.read_text().map_err(|e| e.to_string())?;
    String::from_utf8(raw.to_vec()).map_err(|e| e.to_string())
}

fn array(r: &mut Reader<'_>, want: Option<u64>) -> Result<u64, String> {
    let n = r.read_array_len().map_err(|e| e.to_string())?;
    match want {
        Some(w) if w != n => Err(format!("expected {w} fields, found {n}")),
        _ => Ok(n),
    }
}

/// Decodes the stage log.
pub(crate) fn decode_stages(bytes: &[u8]) -> Result<ChannelStages, String> {
    let mut r = Reader::new(bytes);
    let n = array(&mut r, None)?;
    let mut stages = Vec::new();
    for _ in 0..n {
        array(&mut r, Some(5))?;
        let name = text(&mut r)?;
        let description = text(&mut r)?;
        let created = Timestamp(r.read_uint().map_err(|e| e.to_string())?);
        let updated = Timestamp(r.read_uint().map_err(|e| e.to_string())?);
        let nlogs = array(&mut r, None)?;
        let mut logs = Vec::new();
        for _ in 0..nlogs {
            array(&mut r, Some(2))?;
            let log = text(&mut r)?;
            let updated = Timestamp(r.read_uint().map_err(|e| e.to_string())?);
            logs.push(StageLog { log, updated });
        }
        stages.push(ChannelStage {
            name,
            description,
            created,
            updated,
            logs,
        });
    }
    r.finish().map_err(|e| e.to_string())?;
    Ok(ChannelStages { stages })
}

/// The columns of `channels` that [`state_from_row`] reads, in order.
pub(crate) const CHANNEL_COLUMNS: &str = "id, initiator, responder, transfer_id, self_peer, status, \
     base_cid, selector, sender, recipient, total_size, queued, sent, received, message, \
     received_blocks, queued_blocks, sent_blocks, stages";

/// A channel row, before its vouchers are attached.
pub(crate) fn state_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<(i64, Result<ChannelState, StoreError>)> {
    let rowid: i64 = row.get(0)?;
    let initiator: Vec<u8> = row.get(1)?;
    let responder: Vec<u8> = row.get(2)?;
    let transfer_id: i64 = row.get(3)?;
    let label = format!("#{rowid} (transfer {})", from_sql(transfer_id));
    let corrupt = |reason: String| StoreError::Corrupt {
        channel: label.clone(),
        reason,
    };
    let peer = |b: Vec<u8>, what: &str| {
        PeerId::from_bytes(&b).map_err(|e| corrupt(format!("{what}: {e}")))
    };
    let parsed = (|| {
        let status_code: i64 = row.get(5).map_err(|e| corrupt(e.to_string()))?;
        let cid_bytes: Vec<u8> = row.get(6).map_err(|e| corrupt(e.to_string()))?;
        let selector: Vec<u8> = row.get(7).map_err(|e| corrupt(e.to_string()))?;
        let stages: Vec<u8> = row.get(18).map_err(|e| corrupt(e.to_string()))?;
        let get = |i: usize| {
            row.get::<_, i64>(i)
                .map(from_sql)
                .map_err(|e| corrupt(e.to_string()))
        };
        Ok(ChannelState {
            channel_id: ChannelId::new(
                peer(initiator, "initiator")?,
                peer(responder, "responder")?,
                TransferId(from_sql(transfer_id)),
            ),
            self_peer: peer(row.get(4).map_err(|e| corrupt(e.to_string()))?, "self peer")?,
            base_cid: Cid::try_from(cid_bytes.as_slice())
                .map_err(|e| corrupt(format!("base CID: {e}")))?,
            selector: DagCbor::from_bytes(selector)
                .map_err(|e| corrupt(format!("selector: {e}")))?,
            sender: peer(row.get(8).map_err(|e| corrupt(e.to_string()))?, "sender")?,
            recipient: peer(row.get(9).map_err(|e| corrupt(e.to_string()))?, "recipient")?,
            total_size: get(10)?,
            status: Status::try_from(from_sql(status_code)).map_err(|e| corrupt(e.to_string()))?,
            queued: get(11)?,
            sent: get(12)?,
            received: get(13)?,
            message: row.get(14).map_err(|e| corrupt(e.to_string()))?,
            vouchers: Vec::new(),
            voucher_results: Vec::new(),
            received_blocks_total: get(15)?,
            queued_blocks_total: get(16)?,
            sent_blocks_total: get(17)?,
            stages: decode_stages(&stages).map_err(|e| corrupt(format!("stage log: {e}")))?,
        })
    })();
    Ok((rowid, parsed))
}

/// A voucher row.
pub(crate) fn voucher_from_parts(type_id: String, node: Vec<u8>) -> Result<TypedNode, String> {
    Ok(TypedNode::new(
        type_id.into(),
        DagCbor::from_bytes(node).map_err(|e| e.to_string())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_round_trip_and_garbage_is_an_error() {
        let mut st = ChannelStages::default();
        st.add_log("Ongoing", "a", Timestamp(1), 10);
        st.add_log("Ongoing", "b ✓", Timestamp(2), 10);
        st.add_log("Completed", "", Timestamp(3), 10);
        let bytes = encode_stages(&st);
        assert_eq!(decode_stages(&bytes), Ok(st));
        assert!(decode_stages(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_stages(&[0xff]).is_err());
        assert_eq!(from_sql(to_sql(u64::MAX)), u64::MAX);
    }
}
