//! Filecoin retrieval over the data-transfer protocol: what lassie and Boost speak.
//!
//! A retrieval client pulls a DAG from a storage provider over data-transfer and graphsync,
//! with a retrieval deal proposal as the pull's voucher; the provider answers with deal
//! responses as voucher results. This crate has:
//! - [`types`]: the vouchers, byte for byte as go-retrieval-types v1.2 encodes them
//!   ([`DealProposal`] `RetrievalDealProposal/1`, [`DealResponse`] `RetrievalDealResponse/1`,
//!   [`DealPayment`] `RetrievalDealPayment/1`, Filecoin [`TokenAmount`]s, [`DealStatus`]).
//!   Pure types, no I/O.
//! - [`FreeRetrievalProvider`] (feature `manager`): validates proposals the way Boost's
//!   free ("unpaid") retrieval does and confirms each finished deal with
//!   `DealStatusCompleted`, so lassie retrieves from a [`datatransfer::Manager`].
//! - [`RetrievalClient`] (feature `manager`): a free retrieval as lassie's graphsync
//!   retriever makes it, with typed errors for a rejection, a demand for payment and a
//!   silent provider.
//!
//! Paid retrieval (payment channels, vouchers signed with a wallet) is not implemented: a
//! provider that asks for money ends a retrieval with [`RetrievalError::PaymentRequired`].
//!
//! Feature flags:
//! - `manager` (default): the provider and the client, on the `datatransfer` crate. Without
//!   it, only [`types`] (no async runtime, no libp2p).
//!
//! ```
//! use datatransfer_retrieval::{DealProposal, Params};
//! use datatransfer_types::{Cid, TypedNode};
//! let root: Cid = "bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzako47346wosmu".parse().unwrap();
//! let proposal = DealProposal { id: 7, params: Params::free(None).unwrap(), payload_cid: root };
//! let voucher = TypedNode::encode(&proposal).unwrap();
//! assert_eq!(voucher.type_id.as_str(), "RetrievalDealProposal/1");
//! ```

#![deny(missing_docs)]

pub mod types;

#[cfg(feature = "manager")]
mod client;
#[cfg(feature = "manager")]
mod provider;

#[cfg(feature = "manager")]
pub use client::{DEFAULT_TIMEOUT, RetrievalClient, RetrievalError, RetrievalRequest, Retrieved};
#[cfg(feature = "manager")]
pub use provider::FreeRetrievalProvider;
pub use types::{
    Address, DealId, DealPayment, DealProposal, DealResponse, DealStatus, LegacyDealProposal,
    LegacyDealResponse, PROPOSAL_TYPES, Params, RESPONSE_TYPES, TokenAmount, TokenAmountError,
    VoucherError, proposal_of, response_of,
};
