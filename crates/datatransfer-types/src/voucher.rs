//! Vouchers, voucher results, and the registry of types a node understands.
//!
//! A voucher is a typed, DAG-CBOR-encoded proof (of a deal, of a payment) that a peer sends
//! with a request; a voucher result is the answer. On the wire each is a type identifier
//! string plus an embedded node. A node registers the voucher types it accepts, each with
//! something attached (a validator, typically); a voucher of a type nobody registered is
//! rejected with [`RegistryError::UnknownType`].

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::node::{DagCbor, NodeError};

/// The name that identifies a voucher or voucher-result type on the wire (`VTyp`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TypeIdentifier(String);

impl TypeIdentifier {
    /// The empty identifier, meaning "no voucher" (Go's `EmptyTypeIdentifier`).
    pub const EMPTY: Self = Self(String::new());

    /// An identifier from a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the empty identifier.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for TypeIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TypeIdentifier {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for TypeIdentifier {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// A Rust type that can travel as a voucher or voucher result (Go's `Registerable`).
///
/// ```
/// use datatransfer_types::Registerable;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct RetrievalVoucher { deal_id: u64 }
/// impl Registerable for RetrievalVoucher {
///     const TYPE: &'static str = "RetrievalVoucher";
/// }
/// ```
pub trait Registerable: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The type identifier written on the wire.
    const TYPE: &'static str;

    /// [`Self::TYPE`] as a [`TypeIdentifier`].
    fn type_identifier() -> TypeIdentifier {
        TypeIdentifier::new(Self::TYPE)
    }
}

/// A typed node as it travels: a type identifier and the raw DAG-CBOR of the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypedNode {
    /// Which registered type the node is.
    pub type_id: TypeIdentifier,
    /// The value, as raw DAG-CBOR.
    pub node: DagCbor,
}

impl TypedNode {
    /// Pairs a type identifier with a node.
    pub fn new(type_id: TypeIdentifier, node: DagCbor) -> Self {
        Self { type_id, node }
    }

    /// Encodes a registerable value.
    pub fn encode<T: Registerable>(value: &T) -> Result<Self, NodeError> {
        Ok(Self::new(T::type_identifier(), DagCbor::encode(value)?))
    }

    /// Decodes the value as `T`, checking the type identifier first.
    pub fn decode<T: Registerable>(&self) -> Result<T, RegistryError> {
        if self.type_id.as_str() != T::TYPE {
            return Err(RegistryError::TypeMismatch {
                expected: T::type_identifier(),
                found: self.type_id.clone(),
            });
        }
        self.node.decode().map_err(|source| RegistryError::Decode {
            type_id: self.type_id.clone(),
            source,
        })
    }
}

/// A voucher: proof that justifies a request (a deal, a payment).
pub type Voucher = TypedNode;

/// A voucher result: a responder's answer to a voucher (acceptance details, a payment due).
pub type VoucherResult = TypedNode;

/// Something wrong with a voucher's type or contents.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No type with this identifier was registered.
    #[error("unknown voucher type {0:?}")]
    UnknownType(TypeIdentifier),
    /// A type with this identifier is already registered.
    #[error("voucher type {0:?} is already registered")]
    AlreadyRegistered(TypeIdentifier),
    /// The identifier is empty, which means "no voucher".
    #[error("a registered type needs a non-empty type identifier")]
    EmptyIdentifier,
    /// The node is not a valid value of its declared type.
    #[error("voucher of type {type_id:?} does not decode: {source}")]
    Decode {
        /// The declared type.
        type_id: TypeIdentifier,
        /// Why it failed.
        #[source]
        source: NodeError,
    },
    /// The node's type identifier is not the one asked for.
    #[error("expected a voucher of type {expected:?}, got {found:?}")]
    TypeMismatch {
        /// The type asked for.
        expected: TypeIdentifier,
        /// The type the node declares.
        found: TypeIdentifier,
    },
}

type CheckFn = fn(&DagCbor) -> Result<(), NodeError>;

fn check_decodes<T: DeserializeOwned>(node: &DagCbor) -> Result<(), NodeError> {
    node.decode::<T>().map(drop)
}

struct Entry<E> {
    check: CheckFn,
    value: E,
}

/// Maps type identifiers to a decoder check and a value of the caller's choosing (for the
/// manager, the validator of that voucher type).
pub struct Registry<E> {
    entries: HashMap<TypeIdentifier, Entry<E>>,
}

impl<E> Default for Registry<E> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<E> fmt::Debug for Registry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}

impl<E> Registry<E> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `T` with `value`. Fails if `T::TYPE` is empty or already registered.
    pub fn register<T: Registerable>(&mut self, value: E) -> Result<(), RegistryError> {
        self.insert(T::type_identifier(), check_decodes::<T>, value)
    }

    /// Registers a type known only by its identifier; any well-formed node is accepted for it.
    /// For types defined outside Rust (a simulator replaying Go traffic, say).
    pub fn register_opaque(
        &mut self,
        type_id: TypeIdentifier,
        value: E,
    ) -> Result<(), RegistryError> {
        self.insert(type_id, |_| Ok(()), value)
    }

    fn insert(
        &mut self,
        type_id: TypeIdentifier,
        check: CheckFn,
        value: E,
    ) -> Result<(), RegistryError> {
        if type_id.is_empty() {
            return Err(RegistryError::EmptyIdentifier);
        }
        if self.entries.contains_key(&type_id) {
            return Err(RegistryError::AlreadyRegistered(type_id));
        }
        self.entries.insert(type_id, Entry { check, value });
        Ok(())
    }

    /// Whether a type is registered.
    pub fn contains(&self, type_id: &TypeIdentifier) -> bool {
        self.entries.contains_key(type_id)
    }

    /// The value registered for a type identifier, without checking any node.
    pub fn get(&self, type_id: &TypeIdentifier) -> Option<&E> {
        self.entries.get(type_id).map(|e| &e.value)
    }

    /// Checks that `node` is of a registered type and decodes as that type, and returns the
    /// value registered for it.
    pub fn lookup(&self, node: &TypedNode) -> Result<&E, RegistryError> {
        let entry = self
            .entries
            .get(&node.type_id)
            .ok_or_else(|| RegistryError::UnknownType(node.type_id.clone()))?;
        (entry.check)(&node.node).map_err(|source| RegistryError::Decode {
            type_id: node.type_id.clone(),
            source,
        })?;
        Ok(&entry.value)
    }

    /// The registered type identifiers.
    pub fn type_ids(&self) -> impl Iterator<Item = &TypeIdentifier> {
        self.entries.keys()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Deal {
        id: u64,
        price: String,
    }
    impl Registerable for Deal {
        const TYPE: &'static str = "DealVoucher";
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Other(u64);
    impl Registerable for Other {
        const TYPE: &'static str = "Other";
    }

    #[test]
    fn registered_vouchers_decode_and_unknown_ones_are_rejected() {
        let mut reg = Registry::new();
        reg.register::<Deal>("deal validator").unwrap();
        assert_eq!(
            reg.register::<Deal>("again"),
            Err(RegistryError::AlreadyRegistered("DealVoucher".into()))
        );

        let v = TypedNode::encode(&Deal {
            id: 9,
            price: "10".into(),
        })
        .unwrap();
        assert_eq!(reg.lookup(&v), Ok(&"deal validator"));
        assert_eq!(
            v.decode::<Deal>().unwrap(),
            Deal {
                id: 9,
                price: "10".into()
            }
        );
        assert!(matches!(
            v.decode::<Other>(),
            Err(RegistryError::TypeMismatch { .. })
        ));

        let unknown = TypedNode::encode(&Other(1)).unwrap();
        assert_eq!(
            reg.lookup(&unknown),
            Err(RegistryError::UnknownType("Other".into()))
        );

        // Right identifier, wrong shape.
        let forged = TypedNode::new("DealVoucher".into(), DagCbor::encode(&5u8).unwrap());
        assert!(matches!(
            reg.lookup(&forged),
            Err(RegistryError::Decode { .. })
        ));
    }

    #[test]
    fn opaque_types_accept_any_node_and_empty_ids_are_refused() {
        let mut reg = Registry::new();
        assert_eq!(
            reg.register_opaque(TypeIdentifier::EMPTY, 1),
            Err(RegistryError::EmptyIdentifier)
        );
        reg.register_opaque("GoType".into(), 2).unwrap();
        let n = TypedNode::new("GoType".into(), DagCbor::null());
        assert_eq!(reg.lookup(&n), Ok(&2));
        assert!(reg.contains(&"GoType".into()));
        assert_eq!(reg.type_ids().count(), 1);
    }
}
