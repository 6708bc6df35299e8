//! Pure types of the Filecoin data-transfer protocol, shared by every other crate of the
//! workspace: no I/O, no async runtime, no clock.
//!
//! Two peers open a *channel* to move an IPLD DAG (a root CID plus a selector) from one to
//! the other. This crate names the pieces:
//!
//! - [`ChannelId`] / [`TransferId`]: which channel; [`Status`]: where it is;
//!   [`ChannelState`]: everything known about it.
//! - [`Event`] / [`EventCode`]: what subscribers are told.
//! - [`Voucher`], [`VoucherResult`], [`Registerable`] and the [`Registry`] of accepted types;
//!   [`ValidationOutcome`]: what a validator decides.
//! - [`Fault`]: why something was refused or failed, by whose fault.
//! - [`message`]: the wire messages, byte-identical to go-data-transfer's on
//!   `/fil/datatransfer/1.1.0` and `/fil/datatransfer/1.2.0`.
//!
//! Most users reach these through the `datatransfer` façade; a simulator or another transport
//! uses them directly.
//!
//! Feature flags:
//! - `store-conformance`: `store::conformance`, the checks every `ChannelStore` implementation
//!   must pass (enable it in your store's dev-dependencies).

mod channel;
mod event;
mod fault;
mod ids;
pub mod message;
mod node;
mod status;
pub mod store;
mod validation;
mod voucher;

pub use channel::{
    ChannelStage, ChannelStages, ChannelState, DEFAULT_MAX_LOGS_PER_STAGE, StageLog,
};
pub use event::{Event, EventCode, Timestamp, UnknownEventCode};
pub use fault::Fault;
pub use ids::{BadChannelId, ChannelId, TransferId};
pub use node::{DagCbor, NodeError};
pub use status::{Status, UnknownStatus};
pub use validation::{Validation, ValidationError, ValidationOutcome};
pub use voucher::{
    Registerable, Registry, RegistryError, TypeIdentifier, TypedNode, Voucher, VoucherResult,
};

/// Re-exported so users name the same `Cid` and `PeerId` types (and crate versions) we do.
pub use cid;
pub use cid::Cid;
/// Low-level CBOR reading and writing, shared with the IPLD crate.
pub use datatransfer_ipld::cbor;
pub use libp2p_identity::PeerId;
