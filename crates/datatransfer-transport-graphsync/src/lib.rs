//! The graphsync transport of the data-transfer protocol, as go-data-transfer v1.15.1
//! `transport/graphsync` drives go-graphsync.
//!
//! [`GraphsyncTransport`] implements the engine's [`Transport`]: it carries out
//! [`TransportCommand`]s on a [`GraphSync`] node and turns graphsync's hooks into
//! [`TransportEvent`]s. The decisions are the [`adapter::Adapter`]'s, a state machine without
//! I/O (a simulator can drive it over a graphsync of its own); `GraphsyncTransport` is the
//! async shell that feeds it the node's hooks and carries out its actions.
//!
//! - Data-transfer messages ride in graphsync extensions, encoded as `/fil/datatransfer/1.2.0`
//!   messages: `fil/data-transfer/1.1` always, plus `fil/data-transfer/incoming-request/1.1` on
//!   the answer to a request and `fil/data-transfer/outgoing-block/1.1` on a block.
//! - Pull: the initiator's graphsync request carries the New request; the responder's
//!   incoming-request hook asks the engine to validate it (accept, pause or reject).
//! - Push: the responder, once it accepted the push over the data-transfer network, requests
//!   the data back from the initiator, with its acceptance in the request.
//! - The sender's outgoing-block hook reports each block queued (the engine counts bytes and
//!   asks the revalidator, which may pause the response and attach a message); the
//!   block-sent hook reports it sent. The receiver's incoming-block hook reports each block
//!   received (the engine may pause or cancel the request).
//! - Completed responses and finished requests feed the engine; a restart opens a new request
//!   with `graphsync/do-not-send-first-blocks` set to the number of blocks at the start of the
//!   walk the receiver already holds, so they are not sent again (a new channel's request
//!   too, unless [`GraphsyncTransportConfig::skip_held_blocks_on_open`] is off).
//!
//! Requests without a data-transfer extension are refused: this node serves data only to
//! channels the engine validated.

#![deny(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datatransfer_fsm::{
    DataRequest, HookResult, HookToken, Transport, TransportCommand, TransportEvent,
    TransportEventSink,
};
use datatransfer_graphsync::node::{
    GraphSync, GraphSyncConfig, GraphSyncError, Hooks, IncomingBlock, RequestControl,
    RequestDecision, RequestEvent, RequestHandle,
};
use datatransfer_graphsync::requester::VerifyError;
use datatransfer_graphsync::responder::{BlockDecision, DO_NOT_SEND_FIRST_BLOCKS, OutgoingBlock};
use datatransfer_graphsync::{Extensions, RawNode, Request, RequestId, Response, ResponseStatus};
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{NoVisitor, Step, Traversal, TraversalConfig};
use datatransfer_types::message::{DecodeLimits, Message, MessageType, WireVersion};
use datatransfer_types::{ChannelId, Cid, DagCbor, Fault, PeerId};
use tokio::sync::{mpsc, oneshot};

pub mod adapter;
mod commands;
mod config;
mod extensions;
mod hooks;
mod shell;

use adapter::{Action, Adapter, AdapterConfig, HookAnswer, HookId, SendRequest};
use commands::execute_actions;
pub use config::{GraphsyncTransportConfig, TransportError};
pub use extensions::message_in_extensions;
use extensions::{extensions_for, merge_into};
use hooks::{DtHooks, held_prefix};
use shell::Shared;

/// The extension every data-transfer message travels in.
pub const EXTENSION_DATA_TRANSFER: &str = "fil/data-transfer/1.1";
/// The extension of a message answering a graphsync request (the incoming-request hook).
pub const EXTENSION_INCOMING_REQUEST: &str = "fil/data-transfer/incoming-request/1.1";
/// The extension of a message sent along with a block (the outgoing-block hook).
pub const EXTENSION_OUTGOING_BLOCK: &str = "fil/data-transfer/outgoing-block/1.1";

/// The graphsync transport: the [`Adapter`]'s decisions carried out on a [`GraphSync`] node.
/// Cheap to clone; all clones drive the same node.
#[derive(Clone)]
pub struct GraphsyncTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GraphsyncTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphsyncTransport")
            .field("me", &self.shared.me)
            .finish_non_exhaustive()
    }
}

impl GraphsyncTransport {
    /// Starts a graphsync node on `control` serving `store` (the default block store of every
    /// channel) and the transport over it. Must be called inside a tokio runtime.
    pub fn start(
        me: PeerId,
        control: datatransfer_streams::Control,
        store: Arc<dyn Blockstore>,
        config: GraphsyncTransportConfig,
    ) -> Result<Self, TransportError> {
        let (work, rx) = mpsc::unbounded_channel();
        let adapter = Adapter::new(me, store.clone(), AdapterConfig::from(&config));
        let shared = Arc::new(Shared::new(
            me,
            adapter,
            work,
            config.graphsync.traversal.clone(),
        ));
        let hooks = Arc::new(DtHooks(shared.clone()));
        let gs = GraphSync::start(me, control, store, hooks, config.graphsync)
            .map_err(|_| TransportError::AlreadyRegistered)?;
        *shared.gs.lock().unwrap_or_else(|e| e.into_inner()) = Some(gs);
        tokio::spawn(execute_actions(Arc::downgrade(&shared), rx));
        Ok(Self { shared })
    }

    /// The graphsync node underneath (a handle to it); `None` after shutdown.
    pub fn graphsync(&self) -> Option<GraphSync> {
        self.shared.gs()
    }

    /// Has the channel read and write its blocks in `store` instead of the default one
    /// (go-data-transfer's `UseStore`; call it from a transport configurer).
    pub fn use_store(&self, channel: ChannelId, store: Arc<dyn Blockstore>) {
        self.shared.adapter().use_store(channel, store);
    }

    /// How many channels have transport state (requests sent or served); for tests and
    /// diagnostics.
    pub fn open_channels(&self) -> usize {
        self.shared.adapter().open_channels()
    }
}

impl Transport for GraphsyncTransport {
    fn attach(&self, sink: Arc<dyn TransportEventSink>) {
        let _ = self.shared.sink.set(sink);
    }

    fn execute(&self, command: TransportCommand) {
        self.shared.with(|a| a.command(command));
    }

    fn shutdown(&self) {
        self.shared.with(Adapter::shutdown);
        // Our handle to the node goes: the node ends once the swarm's streams are gone.
        self.shared
            .gs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.shared
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
