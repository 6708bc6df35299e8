//! The engine's vocabulary with the outside world: what the transport reports, what the engine
//! asks of the transport, the network and the validators, and what it tells subscribers.
//!
//! The shell (the façade's tokio task, or a simulator) drains [`Output`]s with
//! `Engine::poll_output` and carries each one out; results come back as calls on the engine.

use datatransfer_types::message::{Message, TransferRequest, TransferResponse};
use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, Event, Fault, PeerId, Validation, ValidationError,
    Voucher,
};

/// Identifies a transport hook that waits for the engine's answer
/// ([`TransportCommand::HookResult`]). Chosen by the transport; opaque to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookToken(pub u64);

/// A transport request for a channel's data, waiting for the engine's leave to serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRequest {
    /// The hook waiting for the answer.
    pub token: HookToken,
    /// The root the request asks for.
    pub root: Cid,
    /// The selector it asks with (DAG-CBOR).
    pub selector: DagCbor,
}

/// Identifies a validator call in flight ([`Output::Validate`]); chosen by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValidationToken(pub u64);

/// What the transport reports (go-data-transfer's `EventsHandler`).
// Requests are larger than the other events; they are built, handed over and dropped, so a
// box per event would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    /// The transport opened its side of a channel we asked it to open.
    ChannelOpened {
        /// The channel.
        channel: ChannelId,
    },
    /// A data-transfer request arrived inside the transport (a pull's New request rides in the
    /// graphsync request). Answer: [`TransportCommand::HookResult`] with `token`.
    RequestReceived {
        /// The hook waiting for the answer.
        token: HookToken,
        /// The peer that sent it (the channel's initiator).
        from: PeerId,
        /// The request.
        request: TransferRequest,
    },
    /// A data-transfer response arrived inside the transport.
    ResponseReceived {
        /// The peer that sent it (the channel's responder).
        from: PeerId,
        /// The response.
        response: TransferResponse,
        /// Set when the response rides in a request for the channel's data (a push's
        /// responder asking for it): the engine answers with
        /// [`TransportCommand::HookResult`], and serves only a push of ours to that peer, for
        /// the channel's own root and selector.
        data_request: Option<DataRequest>,
    },
    /// A block arrived. Answer: [`TransportCommand::HookResult`] with `token` (pause, cancel or
    /// continue).
    DataReceived {
        /// The hook waiting for the answer.
        token: HookToken,
        /// The channel.
        channel: ChannelId,
        /// Block size in bytes.
        size: u64,
        /// Position in the traversal (1-based, repeats counted).
        index: u64,
        /// Whether the block is new to this traversal (not a repeat).
        unique: bool,
    },
    /// A block was queued for sending. Answer: [`TransportCommand::HookResult`], possibly with
    /// a message to send along with the data.
    DataQueued {
        /// The hook waiting for the answer.
        token: HookToken,
        /// The channel.
        channel: ChannelId,
        /// Block size in bytes.
        size: u64,
        /// Position in the traversal.
        index: u64,
        /// Whether the block is new to this traversal.
        unique: bool,
    },
    /// A block went out on the wire.
    DataSent {
        /// The channel.
        channel: ChannelId,
        /// Block size in bytes.
        size: u64,
        /// Position in the traversal.
        index: u64,
        /// Whether the block is new to this traversal.
        unique: bool,
    },
    /// The request waits in a queue: ours (the transport is at its concurrency limit), or
    /// the responder's (it said so, or refused it as busy and the transport asks again).
    /// The monitor's accept and stall timers do not run while it waits; its queue timer does.
    TransferQueued {
        /// The channel.
        channel: ChannelId,
    },
    /// All data was sent (responder) or received (requester), or the transfer failed.
    ChannelCompleted {
        /// The channel.
        channel: ChannelId,
        /// `Err` with the reason if it failed, by whose fault: a
        /// [`Fault::LocalFailure`] (our store, our disk) fails the channel at once and tells
        /// the peer; it is never taken for a lost connection to restart from.
        result: Result<(), Fault>,
    },
    /// The transport cancelled the request.
    RequestCancelled {
        /// The channel.
        channel: ChannelId,
        /// Why.
        error: String,
    },
    /// The connection to the other peer failed.
    Disconnected {
        /// The channel.
        channel: ChannelId,
        /// Why.
        error: String,
    },
    /// Sending data failed at the transport.
    SendDataError {
        /// The channel.
        channel: ChannelId,
        /// Why.
        error: String,
    },
    /// Receiving data failed at the transport.
    ReceiveDataError {
        /// The channel.
        channel: ChannelId,
        /// Why.
        error: String,
    },
    /// A [`TransportCommand::OpenChannel`] could not be carried out.
    OpenFailed {
        /// The channel.
        channel: ChannelId,
        /// Why.
        error: String,
    },
}

/// How a transport hook should proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResult {
    /// Carry on.
    Continue,
    /// Pause the transfer (for revalidation, or because the request was accepted paused).
    Pause,
    /// Resume a paused transfer.
    Resume,
    /// Refuse or cancel, with the reason.
    Fail(Fault),
}

/// What the engine asks of the transport (go-data-transfer's `Transport` and
/// `PauseableTransport`, plus answers to hooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportCommand {
    /// Ask `data_sender` to send us the DAG: called by the receiving side (a pull's initiator,
    /// a push's responder). `message` travels with the request.
    OpenChannel {
        /// The peer that has the data.
        data_sender: PeerId,
        /// The channel.
        channel: ChannelId,
        /// The root of the DAG.
        root: Cid,
        /// The selector.
        selector: DagCbor,
        /// The data-transfer message to carry with the request.
        message: Message,
        /// On a restart, the channel as it stands (received block count, so the sender can
        /// skip what already arrived).
        restart: Option<Box<ChannelState>>,
    },
    /// Stop the transport channel.
    CloseChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// Pause the transport channel.
    PauseChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// Resume the transport channel, sending `message` along if given.
    ResumeChannel {
        /// The channel.
        channel: ChannelId,
        /// A message for the other side.
        message: Option<Message>,
    },
    /// Drop anything the transport keeps for the channel (after a cancel or completion).
    CleanupChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// The answer to a hook that carried `token`.
    HookResult {
        /// The hook.
        token: HookToken,
        /// The channel the hook was about.
        channel: ChannelId,
        /// A message to send with the transport's reply, if any.
        message: Option<Message>,
        /// How to proceed.
        result: HookResult,
    },
}

/// What to do if an [`Output::SendMessage`] cannot be delivered; report it with
/// `Engine::handle_send_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSendFailure {
    /// The channel fails (the opening request of a push).
    Fail,
    /// Record a disconnect on the channel (most messages).
    Disconnect,
    /// Nothing to record.
    Ignore,
}

/// A call the shell must make to a user's validator or revalidators, then answer with
/// `Engine::handle_validation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationCall {
    /// A peer wants to push to us: the voucher's validator's `validate_push`.
    ValidatePush {
        /// Whether this re-validates a restarted channel.
        is_restart: bool,
        /// The channel.
        channel: ChannelId,
        /// The peer that will send.
        sender: PeerId,
        /// The voucher.
        voucher: Voucher,
        /// Root of the DAG.
        base_cid: Cid,
        /// Selector.
        selector: DagCbor,
    },
    /// A peer wants to pull from us: the voucher's validator's `validate_pull`.
    ValidatePull {
        /// Whether this re-validates a restarted channel.
        is_restart: bool,
        /// The channel.
        channel: ChannelId,
        /// The peer that will receive.
        receiver: PeerId,
        /// The voucher.
        voucher: Voucher,
        /// Root of the DAG.
        base_cid: Cid,
        /// Selector.
        selector: DagCbor,
    },
    /// A new voucher on a running channel: the voucher type's revalidator's `revalidate`.
    Revalidate {
        /// The channel.
        channel: ChannelId,
        /// The voucher.
        voucher: Voucher,
    },
    /// Each revalidator's `on_pull_data_sent`, until one handles it.
    OnPullDataSent {
        /// The channel.
        channel: ChannelId,
        /// New bytes queued.
        bytes: u64,
    },
    /// Each revalidator's `on_push_data_received`, until one handles it.
    OnPushDataReceived {
        /// The channel.
        channel: ChannelId,
        /// New bytes received.
        bytes: u64,
    },
    /// Each revalidator's `on_complete`, until one handles it.
    OnComplete {
        /// The channel.
        channel: ChannelId,
    },
}

/// A validator's answer. `Ok(None)` means no revalidator handled the call.
pub type ValidationAnswer = Result<Option<Validation>, ValidationError>;

/// Something the shell must do or tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a message to a peer over the data-transfer network.
    SendMessage {
        /// The peer.
        to: PeerId,
        /// The channel the message is about.
        channel: ChannelId,
        /// The message.
        message: Message,
        /// What a delivery failure means.
        on_failure: OnSendFailure,
    },
    /// A command for the transport.
    Transport(TransportCommand),
    /// Call a validator or the revalidators.
    Validate {
        /// Answer with this token.
        token: ValidationToken,
        /// The call.
        call: ValidationCall,
    },
    /// A channel changed: persist `state` and tell subscribers about `event`.
    Event {
        /// What happened.
        event: Event,
        /// The channel after it happened.
        state: Box<ChannelState>,
    },
    /// Keep the connection to `peer` open while the channel runs.
    Protect {
        /// The peer.
        peer: PeerId,
        /// The channel that needs it.
        channel: ChannelId,
    },
    /// The channel no longer needs the connection to `peer`.
    Unprotect {
        /// The peer.
        peer: PeerId,
        /// The channel.
        channel: ChannelId,
    },
    /// Run the transport configurer registered for the voucher's type, if any.
    ConfigureTransport {
        /// The channel.
        channel: ChannelId,
        /// The channel's voucher.
        voucher: Voucher,
    },
}

/// Where a [`Transport`] delivers what it observes (the façade's engine task, a simulator).
/// Delivery must not block: the sink queues the event.
pub trait TransportEventSink: Send + Sync + 'static {
    /// Hands over one event; events must arrive in the order the transport saw them.
    fn deliver(&self, event: TransportEvent);
}

/// A transport that moves the bytes of channels (go-data-transfer's `Transport`): it carries
/// out the engine's [`TransportCommand`]s and reports [`TransportEvent`]s to its sink.
///
/// Commands must be carried out in the order given; a command may not block (a transport
/// that needs to wait queues the work).
pub trait Transport: Send + Sync + 'static {
    /// Sets where events go. Called once, before the first command.
    fn attach(&self, sink: std::sync::Arc<dyn TransportEventSink>);

    /// Carries out (or queues) one command.
    fn execute(&self, command: TransportCommand);

    /// Stops every transfer and releases resources; later commands are ignored.
    fn shutdown(&self) {}
}
