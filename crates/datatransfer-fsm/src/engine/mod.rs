//! The protocol engine: the whole behaviour of a go-data-transfer node over many channels, as
//! a sans-IO state machine (go-data-transfer v1.15.1 `impl/`).
//!
//! Inputs are method calls: API calls (`open_pull`, `pause`, ...), messages from the network
//! ([`Engine::handle_message`]), transport events ([`Engine::handle_transport_event`]),
//! validator answers ([`Engine::handle_validation`]) and delivery failures. Outputs queue up and
//! are drained with [`Engine::poll_output`]. Time is always an argument; nothing here blocks,
//! sleeps or does I/O, so a simulator can drive thousands of engines deterministically.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use datatransfer_types::message::{
    Message, MessageType, OpenRequest, RequestKind, TransferRequest, TransferResponse,
};
use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, Fault, PeerId, Registry, RegistryError, Status,
    Timestamp, TransferId, TypeIdentifier, TypedNode, Validation, ValidationOutcome, Voucher,
    VoucherResult,
};

use crate::channel_fsm::{ChannelEvent, FsmError, transition};
use crate::io::{
    DataRequest, HookResult, HookToken, OnSendFailure, Output, TransportCommand, TransportEvent,
    ValidationAnswer, ValidationCall, ValidationToken,
};

mod api;
mod config;
mod finished;
mod monitor;
mod requests;
mod responses;
mod transport_events;
mod validation;

pub use config::{EngineConfig, MonitorConfig, UsageError};
use monitor::{Watch, awaits_settlement};
use transport_events::Progress;
use validation::{Pending, Verdict, validate_call};

/// Where a request came from, and so where its answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Network,
    Transport(HookToken),
}

/// What is remembered of a finished channel: its end, and what it was for (the selector and
/// voucher by CID, so thousands of them cost little whatever their size), so a late restart
/// of a completed channel is answered for that and nothing else.
#[derive(Debug, Clone)]
struct Finished {
    status: Status,
    base_cid: Cid,
    selector: Cid,
    voucher: Option<(TypeIdentifier, Cid)>,
}

/// A voucher's type and fingerprint.
fn voucher_print(v: &Voucher) -> (TypeIdentifier, Cid) {
    (v.type_id.clone(), v.node.cid())
}

/// One node's data-transfer protocol engine.
#[derive(Debug)]
pub struct Engine {
    me: PeerId,
    config: EngineConfig,
    channels: HashMap<ChannelId, ChannelState>,
    next_transfer_id: u64,
    validated: Registry<()>,
    revalidators: Registry<()>,
    results: Registry<()>,
    pending: HashMap<ValidationToken, Pending>,
    next_token: u64,
    out: VecDeque<Output>,
    finished: HashMap<ChannelId, Finished>,
    finished_order: VecDeque<ChannelId>,
    /// Pulls of ours paused before their responder accepted them, until it does (see
    /// [`Engine::resume`]).
    paused_unaccepted: std::collections::HashSet<ChannelId>,
    watches: HashMap<ChannelId, Watch>,
    /// Every watched channel's next monitor deadline, soonest first.
    deadlines: BTreeSet<(Timestamp, ChannelId)>,
    /// Channels re-opened by a restart whose transport has not confirmed the open yet.
    reopening: std::collections::HashSet<ChannelId>,
    /// Pushes of ours restarted whose receiver has not answered yet. Our transport sends
    /// nothing for them until the receiver asks again, so an answer that it completed means
    /// the push is over here too.
    restarted_pushes: std::collections::HashSet<ChannelId>,
}

/// Which of the four roles this node plays on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    CreatePull,
    CreatePush,
    ReceivePull,
    ReceivePush,
}

impl Engine {
    /// An engine for the node `me`. Transfer ids start at `first_transfer_id` (Go seeds them
    /// from the clock; a simulator passes a fixed value), kept below 2^63 so Go peers can
    /// decode them.
    pub fn new(me: PeerId, config: EngineConfig, first_transfer_id: u64) -> Self {
        Self {
            me,
            config,
            channels: HashMap::new(),
            next_transfer_id: first_transfer_id & (u64::MAX >> 1),
            validated: Registry::new(),
            revalidators: Registry::new(),
            results: Registry::new(),
            pending: HashMap::new(),
            next_token: 0,
            out: VecDeque::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            paused_unaccepted: std::collections::HashSet::new(),
            watches: HashMap::new(),
            deadlines: BTreeSet::new(),
            reopening: std::collections::HashSet::new(),
            restarted_pushes: std::collections::HashSet::new(),
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Accept vouchers of this type in requests (a validator for it exists in the shell).
    pub fn register_voucher_type(&mut self, type_id: TypeIdentifier) -> Result<(), UsageError> {
        Ok(self.validated.register_opaque(type_id, ())?)
    }

    /// Accept vouchers of this type on running channels (a revalidator exists in the shell).
    pub fn register_revalidator(&mut self, type_id: TypeIdentifier) -> Result<(), UsageError> {
        Ok(self.revalidators.register_opaque(type_id, ())?)
    }

    /// Accept voucher results of this type in responses.
    pub fn register_voucher_result_type(
        &mut self,
        type_id: TypeIdentifier,
    ) -> Result<(), UsageError> {
        Ok(self.results.register_opaque(type_id, ())?)
    }

    /// Takes over a channel loaded from a store (after a restart of the node) at `now`.
    /// Terminal channels are ignored. Call [`Engine::restart`] to resume it. A channel we
    /// respond to is watched from `now` on (see [`MonitorConfig::responder_idle_timeout`]);
    /// one we initiated, from its restart.
    pub fn load_channel(&mut self, now: Timestamp, state: ChannelState) {
        if state.status.is_terminal() {
            return;
        }
        let id = state.channel_id;
        if id.initiator == self.me {
            self.next_transfer_id = self.next_transfer_id.max(id.id.0.saturating_add(1));
        } else if self.config.monitor.is_some() && !state.status.is_cleaning_up() {
            self.unwatch(id);
            self.watches.insert(id, Watch::responder(state.status, now));
            self.reindex(id);
        }
        self.channels.insert(id, state);
    }

    /// The state of an open channel.
    pub fn channel(&self, id: &ChannelId) -> Option<&ChannelState> {
        self.channels.get(id)
    }

    /// Every open (non-terminal) channel.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelState> {
        self.channels.values()
    }

    /// How many validator calls await an answer.
    pub fn pending_validations(&self) -> usize {
        self.pending.len()
    }

    /// The next thing for the shell to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether outputs are waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    // ----- helpers -------------------------------------------------------------------------

    fn emit(&mut self, o: Output) {
        self.out.push_back(o);
    }

    fn send(
        &mut self,
        to: PeerId,
        channel: ChannelId,
        message: impl Into<Message>,
        on_failure: OnSendFailure,
    ) {
        self.emit(Output::SendMessage {
            to,
            channel,
            message: message.into(),
            on_failure,
        });
    }

    fn transport(&mut self, c: TransportCommand) {
        self.emit(Output::Transport(c));
    }

    fn hook(
        &mut self,
        token: HookToken,
        channel: ChannelId,
        message: Option<Message>,
        result: HookResult,
    ) {
        self.transport(TransportCommand::HookResult {
            token,
            channel,
            message,
            result,
        });
    }

    fn ask(&mut self, call: ValidationCall, then: Pending) -> ValidationToken {
        let token = ValidationToken(self.next_token);
        self.next_token += 1;
        self.pending.insert(token, then);
        self.emit(Output::Validate { token, call });
        token
    }

    fn has_revalidators(&self) -> bool {
        self.revalidators.type_ids().next().is_some()
    }

    fn validations_full(&self) -> bool {
        self.pending.len() >= self.config.max_pending_validations
    }

    fn role(&self, ch: &ChannelState) -> Role {
        match (ch.is_pull(), ch.channel_id.initiator == self.me) {
            (true, true) => Role::CreatePull,
            (true, false) => Role::ReceivePull,
            (false, true) => Role::CreatePush,
            (false, false) => Role::ReceivePush,
        }
    }

    /// Applies an event to a channel and carries out what follows: the event output, the
    /// cleanup of the cleanup states, and eviction once terminal.
    fn fire(&mut self, id: ChannelId, event: ChannelEvent, now: Timestamp) -> Result<(), FsmError> {
        let Some(state) = self.channels.get_mut(&id) else {
            return Ok(());
        };
        let t = transition(state, &event, now)?;
        let snapshot = Box::new(state.clone());
        let status = state.status;
        self.observe(id, &event, status, now);
        let other = id.other_party(&self.me);
        self.emit(Output::Event {
            event: t.event,
            state: snapshot,
        });
        if t.cleanup {
            self.transport(TransportCommand::CleanupChannel { channel: id });
            self.emit(Output::Unprotect {
                peer: other,
                channel: id,
            });
            // Cleanup is always allowed from a cleanup state.
            self.fire(id, ChannelEvent::CleanupComplete, now)?;
        }
        if self
            .channels
            .get(&id)
            .is_some_and(|c| c.status.is_terminal())
            && let Some(done) = self.channels.remove(&id)
        {
            self.paused_unaccepted.remove(&id);
            self.reopening.remove(&id);
            self.restarted_pushes.remove(&id);
            self.remember_finished(id, &done);
        }
        Ok(())
    }
}

impl Engine {
    /// Fires an event whose refusal Go only logs.
    fn fire_quiet(&mut self, id: ChannelId, event: ChannelEvent, now: Timestamp) {
        let _ = self.fire(id, event, now);
    }

    fn voucher_count(&self, id: &ChannelId) -> usize {
        self.channels.get(id).map_or(0, |c| c.vouchers.len())
    }

    fn record_voucher(
        &mut self,
        id: ChannelId,
        voucher: Voucher,
        now: Timestamp,
    ) -> Result<(), Fault> {
        if self.voucher_count(&id) >= self.config.max_vouchers_per_channel {
            return Err(Fault::limit(format!(
                "too many vouchers on channel (limit {})",
                self.config.max_vouchers_per_channel
            )));
        }
        // A voucher the channel's state cannot take (it ended, ...): the peer sent it.
        self.fire(id, ChannelEvent::NewVoucher(voucher), now)
            .map_err(|e| Fault::peer(e.to_string()))
    }

    fn record_result(&mut self, id: ChannelId, result: VoucherResult, now: Timestamp) {
        let full = self
            .channels
            .get(&id)
            .is_some_and(|c| c.voucher_results.len() >= self.config.max_vouchers_per_channel);
        if !full {
            self.fire_quiet(id, ChannelEvent::NewVoucherResult(result), now);
        }
    }

    /// Pauses or resumes one side of a channel: ours (`mine`) or the other peer's.
    fn set_paused(&mut self, id: ChannelId, mine: bool, paused: bool, now: Timestamp) {
        let initiator_side = (id.initiator == self.me) == mine;
        let ev = match (initiator_side, paused) {
            (true, true) => ChannelEvent::PauseInitiator,
            (true, false) => ChannelEvent::ResumeInitiator,
            (false, true) => ChannelEvent::PauseResponder,
            (false, false) => ChannelEvent::ResumeResponder,
        };
        self.fire_quiet(id, ev, now);
    }

    fn update_message(&self, id: ChannelId, paused: bool) -> Message {
        if id.initiator == self.me {
            TransferRequest::update(id.id, paused).into()
        } else {
            TransferResponse::update(id.id, paused).into()
        }
    }

    fn cancel_message(&self, id: ChannelId) -> Message {
        if id.initiator == self.me {
            TransferRequest::cancel(id.id).into()
        } else {
            TransferResponse::cancel(id.id).into()
        }
    }

    fn existing(&self, id: &ChannelId) -> Result<&ChannelState, UsageError> {
        self.channels
            .get(id)
            .ok_or_else(|| UsageError::ChannelNotFound(Box::new(*id)))
    }
}

/// Convenience for shells: a validation that simply accepts.
pub fn accept() -> ValidationAnswer {
    Ok(Some(Validation::accept()))
}
