//! Embedded IPLD nodes (vouchers, voucher results, selectors) kept as raw DAG-CBOR bytes.
//!
//! The wire messages carry these as "Any" nodes. Keeping the exact bytes, rather than a parsed
//! tree, means a voucher re-encodes byte for byte however it was written, and costs nothing
//! until somebody actually wants to look inside.

use std::fmt;

use ipld_core::ipld::Ipld;
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::cbor::{self, CborError, Reader};

/// Failure to turn a value into DAG-CBOR or back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The bytes are not one well-formed CBOR item.
    #[error("malformed CBOR node: {0}")]
    Malformed(#[from] CborError),
    /// Serializing a value to DAG-CBOR failed.
    #[error("cannot encode value as DAG-CBOR: {0}")]
    Encode(String),
    /// The node does not decode into the requested type.
    #[error("cannot decode DAG-CBOR node as {type_name}: {reason}")]
    Decode {
        /// The Rust type asked for.
        type_name: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// One IPLD node as raw DAG-CBOR bytes: always exactly one well-formed CBOR item.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DagCbor(Vec<u8>);

impl DagCbor {
    /// Wraps bytes after checking they hold exactly one CBOR item.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, NodeError> {
        let mut r = Reader::new(&bytes);
        r.skip_item()?;
        r.finish()?;
        Ok(Self(bytes))
    }

    /// Wraps bytes the caller has already checked (a slice the codec skipped over).
    pub(crate) fn from_checked(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The node `null`.
    pub fn null() -> Self {
        Self(vec![cbor::NULL])
    }

    /// Whether the node is `null`.
    pub fn is_null(&self) -> bool {
        self.0 == [cbor::NULL]
    }

    /// Serializes a value with `serde_ipld_dagcbor` (canonical DAG-CBOR).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, NodeError> {
        serde_ipld_dagcbor::to_vec(value)
            .map(Self)
            .map_err(|e| NodeError::Encode(e.to_string()))
    }

    /// Deserializes the node into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, NodeError> {
        serde_ipld_dagcbor::from_slice(&self.0).map_err(|e| NodeError::Decode {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }

    /// The node from an IPLD data-model value.
    pub fn from_ipld(node: &Ipld) -> Result<Self, NodeError> {
        Self::encode(node)
    }

    /// The node as an IPLD data-model value (fails on non-UTF-8 strings, which IPLD forbids).
    pub fn to_ipld(&self) -> Result<Ipld, NodeError> {
        self.decode()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The CID this node has as a DAG-CBOR block (SHA2-256): a fixed-size fingerprint of its
    /// bytes, for remembering a node without keeping it.
    pub fn cid(&self) -> crate::Cid {
        datatransfer_ipld::codec::cid_of(datatransfer_ipld::codec::DAG_CBOR, &self.0)
    }

    /// Whether both hold the same IPLD node: the same bytes, or bytes that decode to equal
    /// nodes (one of them written non-canonically).
    pub fn same_node(&self, other: &Self) -> bool {
        if self.0 == other.0 {
            return true;
        }
        let decode = |b: &[u8]| datatransfer_ipld::codec::decode_dag_cbor(b, 256).ok();
        match (decode(&self.0), decode(&other.0)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for DagCbor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DagCbor(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for DagCbor {
    /// The node in IPLD's data model when it decodes as such, else its bytes in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_ipld() {
            Ok(node) => write!(f, "{node:?}"),
            Err(_) => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl AsRef<[u8]> for DagCbor {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn accepts_one_item_only() {
        assert!(DagCbor::from_bytes(vec![0x01]).is_ok());
        assert!(matches!(
            DagCbor::from_bytes(vec![0x01, 0x02]),
            Err(NodeError::Malformed(CborError::TrailingBytes { extra: 1 }))
        ));
        assert!(matches!(
            DagCbor::from_bytes(vec![]),
            Err(NodeError::Malformed(CborError::Truncated { .. }))
        ));
    }

    #[test]
    fn serde_round_trip_is_canonical() {
        let mut m = BTreeMap::new();
        m.insert("bb".to_string(), 1u64);
        m.insert("a".to_string(), 2u64);
        let node = DagCbor::encode(&m).unwrap();
        // DAG-CBOR orders keys by length first: "a" before "bb".
        assert_eq!(
            node.as_bytes(),
            [0xa2, 0x61, b'a', 0x02, 0x62, b'b', b'b', 0x01]
        );
        let back: BTreeMap<String, u64> = node.decode().unwrap();
        assert_eq!(back, m);
        assert!(matches!(
            node.decode::<String>(),
            Err(NodeError::Decode { .. })
        ));
        assert!(DagCbor::null().is_null());
    }
}
