//! The data-transfer protocol's brain, with no I/O: a per-channel state machine and a protocol
//! engine for a whole node, driven by method calls and drained as a queue of outputs.
//!
//! Modelled on `quinn-proto`: nothing here opens sockets, spawns tasks, reads a clock or
//! touches a disk. Time is passed in. The same inputs in the same order always give the same
//! outputs, so the engine runs unchanged under the tokio façade and in deterministic
//! simulations of thousands of peers.
//!
//! - [`channel_fsm::transition`]: go-data-transfer's channel state machine as a pure function.
//! - [`Engine`]: one node's protocol engine; feed it API calls, peer messages, transport
//!   events and validator answers, then drain [`Output`]s with [`Engine::poll_output`].
//!
//! A deterministic multi-node simulator (in-memory network, the graphsync transport's adapter over a simulated graphsync) that drives this
//! engine lives in the workspace's unpublished `datatransfer-sim` crate.

pub mod channel_fsm;
mod engine;
pub mod io;

pub use channel_fsm::{ChannelEvent, FsmError, Transition, transition};
pub use engine::{Engine, EngineConfig, MonitorConfig, UsageError, accept};
pub use io::{
    DataRequest, HookResult, HookToken, OnSendFailure, Output, Transport, TransportCommand,
    TransportEvent, TransportEventSink, ValidationAnswer, ValidationCall, ValidationToken,
};
