//! Interop tests against the Go implementations that the world's nodes run.
//!
//! `interop/go-peer` is our own small Go program: a go-data-transfer v2 node (go-graphsync
//! v0.18, go-libp2p with TCP, TLS or noise, and yamux) driven by JSON lines on stdin, reporting events
//! and results as JSON lines on stdout. This crate builds it once per run with `go build`
//! ([`go::binary`]), starts it as a child process on 127.0.0.1 ([`go::GoPeer`]) and puts our
//! own [`datatransfer::Manager`]s ([`rust::RustNode`]) and our bare graphsync node
//! ([`bare::BareGraphsync`]) on the other side of the wire.
//!
//! The tests live in `interop/tests/`; `cargo test -p datatransfer-interop` runs them alone.
//! They need Go 1.26+ on `PATH` and the Go module proxy (the first build downloads
//! go-data-transfer, go-graphsync and go-libp2p); without Go they fail with one line that
//! says how to install it.

#![allow(clippy::unwrap_used)] // Test support: a panic is a test failure.

pub mod bare;
pub mod data;
pub mod go;
pub mod rust;

/// The request voucher type both sides register (Go: `policy`; Rust: [`rust::InteropVoucher`]).
pub const VOUCHER_TYPE: &str = "interop/voucher/1";
/// The voucher-result type both sides use for payment requests and rejections.
pub const RESULT_TYPE: &str = "interop/result/1";
/// One mebibyte.
pub const MIB: usize = 1 << 20;
/// The chunk size of the files the tests import on either side (Go's importer default).
pub const CHUNK: usize = 256 << 10;
