//! IPLD for data transfer, with no networking: reusable on its own.
//!
//! - [`cbor`]: low-level CBOR that keeps raw bytes and non-UTF-8 strings (Go's wire formats).
//! - [`Node`]: the IPLD data model, map entries in encoded order (traversal order depends on it).
//! - [`codec`]: DAG-CBOR, DAG-PB and raw blocks, and verification of blocks against CIDs.
//! - [`selector`]: IPLD selectors, parsed from their DAG-CBOR form with bounds.
//! - [`traversal`]: a resumable selector walk that asks for blocks one at a time, so a
//!   responder can feed it from a store and a requester from the network, each checking the
//!   same order.
//! - [`blockstore`]: the `Blockstore` trait and an in-memory store; [`fsstore`]: a durable
//!   store of one file per block.
//! - [`car`]: CARv1/CARv2 reading, CARv1 writing, and a CAR file as a read-only block store.
//! - [`unixfs`]: import files as UnixFS DAGs (the same CIDs as `ipfs add --raw-leaves
//!   --cid-version=1`) and export them back.

// Errors carry the CID they are about (80 bytes inline); they are rare and cold, so they are
// returned by value rather than boxed.
#![allow(clippy::result_large_err)]

pub mod blockstore;
pub mod car;
pub mod cbor;
pub mod codec;
pub mod fsstore;
mod node;
pub mod selector;
pub mod traversal;
pub mod unixfs;

pub use cid::Cid;
pub use node::{Kind, Node, Path, PathSegment};
