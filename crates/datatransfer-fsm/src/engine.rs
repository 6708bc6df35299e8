//! The protocol engine: the whole behaviour of a go-data-transfer node over many channels, as
//! a sans-IO state machine (go-data-transfer v1.15.1 `impl/`).
//!
//! Inputs are method calls: API calls (`open_pull`, `pause`, ...), messages from the network
//! ([`Engine::handle_message`]), transport events ([`Engine::handle_transport_event`]),
//! validator answers ([`Engine::handle_validation`]) and delivery failures. Outputs queue up and
//! are drained with [`Engine::poll_output`]. Time is always an argument; nothing here blocks,
//! sleeps or does I/O, so a simulator can drive thousands of engines deterministically.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use datatransfer_types::message::{Message, MessageType, TransferRequest, TransferResponse};
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

/// Limits the engine enforces; every quantity a peer can grow is bounded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most channels kept open at once (initiated and received); more requests are refused.
    pub max_channels: usize,
    /// Most vouchers, and most voucher results, recorded per channel.
    pub max_vouchers_per_channel: usize,
    /// Most validator calls in flight at once; requests beyond are refused.
    pub max_pending_validations: usize,
    /// How many recently finished channels are remembered (id and final status), so that a
    /// restart of a channel the peer did not see finish is answered instead of refused.
    pub remembered_finished_channels: usize,
    /// Watch channels this node initiated and restart or fail them when they stall
    /// (go-data-transfer's `channelmonitor`), and end channels we respond to whose initiator
    /// has gone silent; `None` turns the monitor off.
    pub monitor: Option<MonitorConfig>,
}

/// Settings of the channel monitor. Times are in the engine's clock (passed in).
///
/// Every wait the monitor can see has a deadline: an accept (`accept_timeout`), the answer to
/// a restart, also of a paused channel (`accept_timeout`, then restarted again), a time in
/// the responder's queue (`queue_timeout`), progress (`stall_timeout`) and completion
/// (`complete_timeout`). Each ends in a restart or in a failure that says which wait ran out.
///
/// On the responder's side, where only the initiator can restart a channel, a channel with no
/// event at all (no message from the initiator, no data moved, no restart) for
/// `responder_idle_timeout` fails, and the initiator is told so: its initiator went away
/// (killed for good, or it ended the channel and the message was lost). Go keeps such channels
/// open for ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// How long the responder has to accept a channel, or to answer a restart, before the
    /// channel fails (an accept) or is restarted again (a restart). It does not run while
    /// the request waits in the responder's queue.
    pub accept_timeout: Duration,
    /// How long a request may wait in the responder's queue (the responder said it is
    /// queued, or refused it as busy and it is being asked again) before the channel fails.
    pub queue_timeout: Duration,
    /// How long a running channel may make no progress before it is restarted.
    pub stall_timeout: Duration,
    /// How long to wait after a disconnect or transport error before restarting.
    pub restart_backoff: Duration,
    /// Restarts in a row without progress in between before the channel fails.
    pub max_consecutive_restarts: u32,
    /// How long, after all data moved, to wait for the responder to complete.
    pub complete_timeout: Duration,
    /// How long a channel we respond to may see nothing at all happen (no message from its
    /// initiator, no data moved) before it fails. Keep it longer than an initiator may
    /// legitimately stay silent: a pause of its own, the time it takes to pay when we ask
    /// for a voucher, a wait in our graphsync queue.
    pub responder_idle_timeout: Duration,
    /// How long, after we sent a voucher to a responder that is finalizing (it paused its
    /// Complete to be settled), to wait for its Complete before sending that voucher again
    /// (at most [`MonitorConfig::FINAL_VOUCHER_RESENDS`] times; `complete_timeout` still
    /// ends the wait). go-data-transfer's responder sends its paused Complete before it
    /// records that it is finalizing; a voucher read in between is taken as an ordinary
    /// payment, and the responder then waits for ever for one more. Payment vouchers are
    /// cumulative, so the copy settles what the first one paid.
    pub final_voucher_resend: Duration,
}

impl MonitorConfig {
    /// How many times a voucher sent to a finalizing responder is sent again.
    pub const FINAL_VOUCHER_RESENDS: u32 = 3;
}

impl Default for MonitorConfig {
    /// Close to the settings Lotus uses with go-data-transfer.
    fn default() -> Self {
        Self {
            accept_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(60),
            restart_backoff: Duration::from_secs(20),
            max_consecutive_restarts: 15,
            complete_timeout: Duration::from_secs(300),
            responder_idle_timeout: Duration::from_secs(30 * 60),
            final_voucher_resend: Duration::from_secs(5),
        }
    }
}

/// What the monitor knows of one channel.
#[derive(Debug, Clone)]
struct Watch {
    status: Status,
    /// When the status last changed.
    changed: Timestamp,
    /// When data last moved (or the channel was last restarted).
    progressed: Timestamp,
    /// Restarts since data last moved.
    restarts: u32,
    /// Restart at this time (after a disconnect or transport error).
    backoff_until: Option<Timestamp>,
    /// Since when the request waits in the responder's queue.
    queued_since: Option<Timestamp>,
    /// When we restarted the channel, until the responder answers.
    restart_sent: Option<Timestamp>,
    /// We respond to the channel: only its idle deadline runs, from `progressed`.
    responder: bool,
    /// When we last sent a voucher to the finalizing responder, and how often we sent it
    /// again since.
    final_voucher: Option<(Timestamp, u32)>,
}

impl Watch {
    fn new(status: Status, now: Timestamp) -> Self {
        Self {
            status,
            changed: now,
            progressed: now,
            restarts: 0,
            backoff_until: None,
            queued_since: None,
            restart_sent: None,
            responder: false,
            final_voucher: None,
        }
    }

    fn responder(status: Status, now: Timestamp) -> Self {
        Self {
            responder: true,
            ..Self::new(status, now)
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_channels: 10_000,
            max_vouchers_per_channel: 1_024,
            max_pending_validations: 4_096,
            remembered_finished_channels: 4_096,
            monitor: None,
        }
    }
}

/// Misuse of the API by the local caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// No channel with this id is open here.
    #[error("channel not found: {0}")]
    ChannelNotFound(Box<ChannelId>),
    /// Only the initiator may send vouchers.
    #[error("cannot send a voucher on channel {0}: we did not initiate it")]
    NotInitiator(Box<ChannelId>),
    /// Opening another channel would exceed [`EngineConfig::max_channels`].
    #[error("too many open channels (limit {0})")]
    TooManyChannels(usize),
    /// The channel already holds [`EngineConfig::max_vouchers_per_channel`] vouchers.
    #[error("too many vouchers on the channel (limit {0})")]
    TooManyVouchers(usize),
    /// A voucher type is registered twice, or is empty.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The state machine refused the event.
    #[error(transparent)]
    Fsm(#[from] FsmError),
}

/// Where a request came from, and so where its answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Network,
    Transport(HookToken),
}

/// How handling a request or revalidation ended (Go's nil / `ErrPause` / `ErrResume` / error).
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ok,
    Pause,
    Resume,
    Err(Fault),
}

impl Verdict {
    fn accepted(&self) -> bool {
        !matches!(self, Self::Err(_))
    }

    fn from_outcome(outcome: &ValidationOutcome) -> Self {
        match outcome {
            ValidationOutcome::Accept => Self::Ok,
            // Go's seed API: "send the voucher result back and await another attempt", so the
            // channel stays open and paused until a voucher arrives.
            ValidationOutcome::Pause | ValidationOutcome::RetryValidation => Self::Pause,
            ValidationOutcome::Resume => Self::Resume,
            ValidationOutcome::Rejected { reason } => Self::Err(Fault::rejected(reason.clone())),
        }
    }

    fn from_answer(answer: &ValidationAnswer) -> (Self, Option<VoucherResult>) {
        match answer {
            Ok(Some(v)) => (Self::from_outcome(&v.outcome), v.voucher_result.clone()),
            Ok(None) => (Self::Ok, None),
            // The validator itself failed (it could not look the deal up, ...): ours.
            Err(e) => (Self::Err(Fault::local(e.to_string())), None),
        }
    }

    fn hook_result(&self) -> HookResult {
        match self {
            Self::Ok => HookResult::Continue,
            Self::Pause => HookResult::Pause,
            Self::Resume => HookResult::Resume,
            Self::Err(e) => HookResult::Fail(e.clone()),
        }
    }
}

/// A validator call in flight and what to do with its answer.
#[derive(Debug, Clone)]
enum Pending {
    NewRequest {
        via: Via,
        channel: ChannelId,
        request: Box<TransferRequest>,
        voucher: Voucher,
    },
    RestartRequest {
        via: Via,
        channel: ChannelId,
        request: Box<TransferRequest>,
    },
    VoucherUpdate {
        via: Via,
        channel: ChannelId,
        voucher: Voucher,
    },
    /// A block queued (sender) or received (receiver) waits for the revalidators.
    Data {
        token: HookToken,
        channel: ChannelId,
        kind: Progress,
    },
    Complete {
        channel: ChannelId,
    },
    RestartAsResponder {
        channel: ChannelId,
    },
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
    /// Channels re-opened by a restart whose transport has not confirmed the open yet.
    reopening: std::collections::HashSet<ChannelId>,
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
            reopening: std::collections::HashSet::new(),
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
            self.watches.insert(id, Watch::responder(state.status, now));
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
            self.remember_finished(id, &done);
        }
        Ok(())
    }

    /// Updates the monitor's view of a channel after an event.
    fn observe(&mut self, id: ChannelId, event: &ChannelEvent, status: Status, now: Timestamp) {
        let Some(cfg) = &self.config.monitor else {
            return;
        };
        if status.is_terminal() {
            self.watches.remove(&id);
            return;
        }
        if id.initiator != self.me {
            // Anything that happens to the channel shows its initiator is still there.
            let w = self
                .watches
                .entry(id)
                .or_insert_with(|| Watch::responder(status, now));
            w.status = status;
            w.progressed = now;
            return;
        }
        let backoff = cfg.restart_backoff;
        let w = self
            .watches
            .entry(id)
            .or_insert_with(|| Watch::new(status, now));
        if w.status != status {
            w.status = status;
            w.changed = now;
            if !awaits_settlement(status) {
                w.final_voucher = None;
            }
        }
        match event {
            ChannelEvent::DataReceivedProgress { .. }
            | ChannelEvent::DataSentProgress { .. }
            | ChannelEvent::DataQueuedProgress { .. } => {
                w.progressed = now;
                w.restarts = 0;
                w.queued_since = None;
                w.restart_sent = None;
            }
            ChannelEvent::TransferRequestQueued => {
                w.queued_since.get_or_insert(now);
            }
            ChannelEvent::Disconnected { .. }
            | ChannelEvent::SendDataError { .. }
            | ChannelEvent::ReceiveDataError { .. } => {
                w.backoff_until = Some(now.saturating_add(backoff));
            }
            _ => {}
        }
    }

    /// When the monitor next needs [`Engine::handle_timeout`] called, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.watches.values().filter_map(|w| self.deadline(w)).min()
    }

    fn deadline(&self, w: &Watch) -> Option<Timestamp> {
        let cfg = self.config.monitor.as_ref()?;
        if w.responder {
            return Some(w.progressed.saturating_add(cfg.responder_idle_timeout));
        }
        if let Some(t) = w.backoff_until {
            return Some(t);
        }
        // In the responder's queue, only the queue's own limit runs.
        if let Some(q) = w.queued_since {
            return Some(q.saturating_add(cfg.queue_timeout));
        }
        let by_status = match w.status {
            // A reopened request waits for its own answer (below), not the first one's.
            Status::Requested if w.restart_sent.is_some() => None,
            Status::Requested => Some(w.changed.saturating_add(cfg.accept_timeout)),
            // From the last restart, if later: a restarted responder completes anew.
            Status::TransferFinished
            | Status::ResponderFinalizingTransferFinished
            | Status::Finalizing => Some(
                w.changed
                    .max(w.progressed)
                    .saturating_add(cfg.complete_timeout),
            ),
            s if s.is_paused() || s.is_cleaning_up() => None,
            _ => Some(
                w.progressed
                    .max(w.changed)
                    .saturating_add(cfg.stall_timeout),
            ),
        };
        // A restart waits for its answer whatever the status, a paused channel's too.
        let answer = w
            .restart_sent
            .filter(|_| !w.status.is_cleaning_up())
            .map(|t| t.saturating_add(cfg.accept_timeout));
        let resend = w
            .final_voucher
            .filter(|(_, n)| *n < MonitorConfig::FINAL_VOUCHER_RESENDS)
            .map(|(t, _)| t.saturating_add(cfg.final_voucher_resend));
        [by_status, answer, resend].into_iter().flatten().min()
    }

    /// Acts on every monitor deadline that has passed: restarts stalled channels, and fails
    /// those not accepted in time, not completed in time, or restarted too often.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let Some(cfg) = self.config.monitor.clone() else {
            return;
        };
        let due: Vec<ChannelId> = self
            .watches
            .iter()
            .filter(|(_, w)| self.deadline(w).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            if w.responder {
                let message = format!(
                    "nothing heard from the initiator {} for {:?}: it went away",
                    id.initiator, cfg.responder_idle_timeout
                );
                self.fail(now, id, message);
                continue;
            }
            if let Some((sent, n)) = w.final_voucher
                && n < MonitorConfig::FINAL_VOUCHER_RESENDS
                && w.backoff_until.is_none()
                && sent.saturating_add(cfg.final_voucher_resend) <= now
            {
                w.final_voucher = Some((now, n + 1));
                self.resend_last_voucher(id);
                if self
                    .watches
                    .get(&id)
                    .and_then(|w| self.deadline(w))
                    .is_none_or(|d| d > now)
                {
                    continue;
                }
            }
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            let unanswered = w
                .restart_sent
                .is_some_and(|t| t.saturating_add(cfg.accept_timeout) <= now);
            let failure = match w.status {
                _ if w.backoff_until.is_none() && w.queued_since.is_some() => Some(format!(
                    "data transfer channel waited {:?} in the responder's queue",
                    cfg.queue_timeout
                )),
                _ if unanswered && w.restarts >= cfg.max_consecutive_restarts => Some(format!(
                    "the responder answered none of {} restarts in a row, each within {:?}",
                    w.restarts, cfg.accept_timeout
                )),
                Status::Requested if w.backoff_until.is_none() && w.restart_sent.is_none() => {
                    Some(format!(
                        "data transfer channel was not accepted within {:?}",
                        cfg.accept_timeout
                    ))
                }
                Status::TransferFinished
                | Status::ResponderFinalizingTransferFinished
                | Status::Finalizing
                    if w.backoff_until.is_none() && !unanswered =>
                {
                    Some(format!(
                        "timed out after {:?} waiting for the responder to complete",
                        cfg.complete_timeout
                    ))
                }
                _ if w.restarts >= cfg.max_consecutive_restarts => Some(format!(
                    "data transfer channel stalled: no progress after {} consecutive restarts",
                    w.restarts
                )),
                _ => None,
            };
            match failure {
                Some(message) => self.fail(now, id, message),
                None => {
                    w.restarts += 1;
                    w.backoff_until = None;
                    w.progressed = now;
                    let _ = self.restart(now, id);
                }
            }
        }
    }

    /// Sends the channel's last voucher to its responder again (see
    /// [`MonitorConfig::final_voucher_resend`]). The voucher is already in the channel's
    /// state; no event fires.
    fn resend_last_voucher(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        let Some(voucher) = ch.last_voucher().cloned() else {
            return;
        };
        let other = ch.other_peer();
        self.send(
            other,
            id,
            TransferRequest::voucher(id.id, voucher),
            OnSendFailure::Disconnect,
        );
    }

    /// Closes a channel with an error: stops the transport, tells the peer, fails it.
    fn fail(&mut self, now: Timestamp, id: ChannelId, message: String) {
        let other = id.other_party(&self.me);
        self.transport(TransportCommand::CloseChannel { channel: id });
        let msg = self.cancel_message(id);
        self.send(other, id, msg, OnSendFailure::Ignore);
        self.fire_quiet(id, ChannelEvent::error(message), now);
        self.watches.remove(&id);
    }

    fn remember_finished(&mut self, id: ChannelId, ch: &ChannelState) {
        if self.config.remembered_finished_channels == 0 {
            return;
        }
        let finished = Finished {
            status: ch.status,
            base_cid: ch.base_cid,
            selector: ch.selector.cid(),
            // Only a completed channel's voucher is ever compared, and only an accepted
            // channel's type is a registered one (short); a refused one's is the peer's.
            voucher: ch
                .voucher()
                .filter(|_| ch.status == Status::Completed)
                .map(voucher_print),
        };
        if self.finished.insert(id, finished).is_none() {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > self.config.remembered_finished_channels {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Remembers a channel that finished before this engine started (read from the store),
    /// so that a late restart of it is answered as for one that finished here: completed
    /// again, or refused if it was cancelled or failed. Channels not finished are ignored.
    pub fn load_finished(&mut self, state: &ChannelState) {
        if state.status.is_terminal() && !self.channels.contains_key(&state.channel_id) {
            self.remember_finished(state.channel_id, state);
        }
    }

    /// The final status of a channel that finished recently, if remembered.
    pub fn finished_status(&self, id: &ChannelId) -> Option<Status> {
        self.finished.get(id).map(|f| f.status)
    }

    /// Whether the channel is one we completed and still remember.
    fn completed_earlier(&self, id: &ChannelId) -> Option<&Finished> {
        self.finished
            .get(id)
            .filter(|f| f.status == Status::Completed)
    }

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

    // ----- API calls -----------------------------------------------------------------------

    fn open(
        &mut self,
        now: Timestamp,
        to: PeerId,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
        pull: bool,
    ) -> Result<ChannelId, UsageError> {
        if self.channels.len() >= self.config.max_channels {
            return Err(UsageError::TooManyChannels(self.config.max_channels));
        }
        let mut id = ChannelId::new(self.me, to, TransferId(self.next_transfer_id));
        while self.channels.contains_key(&id) {
            id.id.0 = (id.id.0 + 1) & (u64::MAX >> 1);
        }
        self.next_transfer_id = (id.id.0 + 1) & (u64::MAX >> 1);
        let state = ChannelState::new(
            id,
            self.me,
            base_cid,
            selector.clone(),
            voucher.clone(),
            pull,
            0,
        );
        self.channels.insert(id, state);
        self.fire(id, ChannelEvent::Open, now)?;
        self.emit(Output::ConfigureTransport {
            channel: id,
            voucher: voucher.clone(),
        });
        self.emit(Output::Protect {
            peer: to,
            channel: id,
        });
        let request =
            TransferRequest::new_channel(id.id, pull, voucher, base_cid, selector.clone());
        if pull {
            self.transport(TransportCommand::OpenChannel {
                data_sender: to,
                channel: id,
                root: base_cid,
                selector,
                message: request.into(),
                restart: None,
            });
        } else {
            self.send(to, id, request, OnSendFailure::Fail);
        }
        Ok(id)
    }

    /// Opens a channel that pushes the DAG under `base_cid` chosen by `selector` to `to`.
    pub fn open_push(
        &mut self,
        now: Timestamp,
        to: PeerId,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
    ) -> Result<ChannelId, UsageError> {
        self.open(now, to, voucher, base_cid, selector, false)
    }

    /// Opens a channel that pulls the DAG under `base_cid` chosen by `selector` from `to`.
    pub fn open_pull(
        &mut self,
        now: Timestamp,
        to: PeerId,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
    ) -> Result<ChannelId, UsageError> {
        self.open(now, to, voucher, base_cid, selector, true)
    }

    /// Sends a new voucher on a channel we initiated (to answer a revalidation request).
    pub fn send_voucher(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        voucher: Voucher,
    ) -> Result<(), UsageError> {
        let other = self.existing(&id)?.other_peer();
        if id.initiator != self.me {
            return Err(UsageError::NotInitiator(Box::new(id)));
        }
        if self.voucher_count(&id) >= self.config.max_vouchers_per_channel {
            return Err(UsageError::TooManyVouchers(
                self.config.max_vouchers_per_channel,
            ));
        }
        self.send(
            other,
            id,
            TransferRequest::voucher(id.id, voucher.clone()),
            OnSendFailure::Disconnect,
        );
        self.fire(id, ChannelEvent::NewVoucher(voucher), now)?;
        // A voucher for a finalizing responder is sent again if its Complete does not come.
        if let Some(w) = self.watches.get_mut(&id)
            && awaits_settlement(w.status)
        {
            w.final_voucher = Some((now, 0));
        }
        Ok(())
    }

    /// Closes (cancels) a channel: stops the transport, tells the other side, and cancels.
    pub fn close(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        let other = self.existing(&id)?.other_peer();
        self.transport(TransportCommand::CloseChannel { channel: id });
        let msg = self.cancel_message(id);
        self.send(other, id, msg, OnSendFailure::Disconnect);
        match self.fire(id, ChannelEvent::Cancel, now) {
            Ok(()) | Err(FsmError::Terminated { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Pauses our side of a channel.
    pub fn pause(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        let ch = self.existing(&id)?;
        let other = ch.other_peer();
        // Re-opened on an earlier resume, a pull stays in the set until accepted.
        if ch.status == Status::Requested && ch.is_pull() && id.initiator == self.me {
            self.paused_unaccepted.insert(id);
        }
        self.transport(TransportCommand::PauseChannel { channel: id });
        let msg = self.update_message(id, true);
        self.send(other, id, msg, OnSendFailure::Disconnect);
        self.set_paused(id, true, true, now);
        Ok(())
    }

    /// Resumes our side of a channel.
    pub fn resume(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        self.existing(&id)?;
        if self.paused_unaccepted.contains(&id)
            && let Some(ch) = self.channels.get(&id)
            && ch.status == Status::InitiatorPaused
        {
            // Paused before the responder accepted: the pause may have cancelled the opening
            // graphsync request before it left, so the responder may never have seen the
            // channel. Re-open it as a restart, which a responder that did see it takes as
            // one, and one that did not validates as new. Paused again before the responder
            // accepts, it is re-opened again.
            let ch = ch.clone();
            self.set_paused(id, true, false, now);
            self.reopen_as_initiator(ch);
            return Ok(());
        }
        let msg = self.update_message(id, false);
        self.transport(TransportCommand::ResumeChannel {
            channel: id,
            message: Some(msg),
        });
        self.set_paused(id, true, false, now);
        Ok(())
    }

    /// Restarts a channel after a disconnect or a restart of this node, as Go's
    /// `RestartDataTransferChannel`: the initiator re-opens it; the responder re-validates the
    /// voucher and asks the initiator to re-open it.
    pub fn restart(&mut self, now: Timestamp, id: ChannelId) -> Result<(), UsageError> {
        let ch = self.existing(&id)?;
        if self.config.monitor.is_some() && id.initiator == self.me && !ch.status.is_cleaning_up() {
            // Channels loaded from a store start being watched when they are restarted; the
            // responder's answer is awaited from now on.
            let status = ch.status;
            let w = self
                .watches
                .entry(id)
                .or_insert_with(|| Watch::new(status, now));
            w.restart_sent = Some(now);
            w.queued_since = None;
        }
        let ch = self.existing(&id)?;
        if ch.status.is_cleaning_up() {
            return Ok(self.fire(id, ChannelEvent::CompleteCleanupOnRestart, now)?);
        }
        match self.role(ch) {
            Role::CreatePull | Role::CreatePush => {
                let ch = ch.clone();
                self.reopen_as_initiator(ch);
            }
            Role::ReceivePull | Role::ReceivePush => {
                let call = validate_call(true, &ch.clone(), ch.other_peer());
                self.ask(call, Pending::RestartAsResponder { channel: id });
            }
        }
        Ok(())
    }

    fn reopen_as_initiator(&mut self, ch: ChannelState) {
        let id = ch.channel_id;
        let voucher = ch
            .voucher()
            .cloned()
            .unwrap_or_else(|| TypedNode::new(TypeIdentifier::EMPTY, DagCbor::null()));
        let other = ch.other_peer();
        let request = TransferRequest::restart(
            id.id,
            ch.is_pull(),
            voucher.clone(),
            ch.base_cid,
            ch.selector.clone(),
        );
        self.emit(Output::ConfigureTransport {
            channel: id,
            voucher,
        });
        self.emit(Output::Protect {
            peer: other,
            channel: id,
        });
        if ch.is_pull() {
            self.reopening.insert(id);
            self.transport(TransportCommand::OpenChannel {
                data_sender: other,
                channel: id,
                root: ch.base_cid,
                selector: ch.selector.clone(),
                message: request.into(),
                restart: Some(Box::new(ch)),
            });
        } else {
            self.send(other, id, request, OnSendFailure::Disconnect);
        }
    }

    // ----- network input -------------------------------------------------------------------

    /// A message arrived from `from` over the data-transfer network.
    pub fn handle_message(&mut self, now: Timestamp, from: PeerId, message: Message) {
        match message {
            Message::Request(r) if r.message_type == MessageType::RestartExistingChannelRequest => {
                self.on_restart_existing(from, &r)
            }
            Message::Request(r) => self.on_request(now, from, r, Via::Network),
            Message::Response(r) => self.on_response(now, from, r, None),
        }
    }

    /// A message the shell could not deliver.
    pub fn handle_send_failure(
        &mut self,
        now: Timestamp,
        channel: ChannelId,
        on_failure: OnSendFailure,
        error: &str,
    ) {
        match on_failure {
            OnSendFailure::Fail => self.fire_quiet(
                channel,
                ChannelEvent::error(format!("Unable to send request: {error}")),
                now,
            ),
            OnSendFailure::Disconnect => self.fire_quiet(
                channel,
                ChannelEvent::Disconnected {
                    message: format!("Unable to send message: {error}"),
                },
                now,
            ),
            OnSendFailure::Ignore => {}
        }
    }

    /// Go's `ReceiveRestartExistingChannelRequest`: the responder asks us, the initiator, to
    /// re-open a channel.
    ///
    /// Go ignores the request for a channel it no longer has. We answer with a cancel instead,
    /// so a responder that missed the end of the channel (a cancel lost in a disconnect) does
    /// not keep it open forever; a Go responder cancels on it as well.
    fn on_restart_existing(&mut self, from: PeerId, r: &TransferRequest) {
        let Some(id) = r.restart_channel else { return };
        let Some(ch) = self.channels.get(&id) else {
            let completed = self.completed_earlier(&id).is_some();
            if id.initiator == self.me && id.responder == from && !completed {
                self.send(
                    from,
                    id,
                    TransferRequest::cancel(id.id),
                    OnSendFailure::Ignore,
                );
            }
            return;
        };
        if id.initiator != self.me || ch.other_peer() != from {
            return;
        }
        match self.role(ch) {
            Role::CreatePull | Role::CreatePush => {
                let ch = ch.clone();
                self.reopen_as_initiator(ch);
            }
            Role::ReceivePull | Role::ReceivePush => {}
        }
    }

    fn on_request(&mut self, now: Timestamp, from: PeerId, req: TransferRequest, via: Via) {
        let id = ChannelId::new(from, self.me, req.transfer_id);
        match req.message_type {
            MessageType::Restart => self.on_restart_request(now, id, req, via),
            MessageType::New => self.on_new_request(now, id, req, via),
            MessageType::Cancel => {
                self.transport(TransportCommand::CleanupChannel { channel: id });
                self.fire_quiet(id, ChannelEvent::Cancel, now);
                self.finish_request(now, id, &req, via, None, Verdict::Ok);
            }
            MessageType::Voucher => self.on_voucher_update(now, id, req, via),
            _ => {
                // Everything else is an update: the initiator paused or resumed.
                if !self.channels.contains_key(&id) {
                    let err = Verdict::Err(Fault::peer(format!("channel not found: {id}")));
                    return self.finish_request(now, id, &req, via, None, err);
                }
                let verdict = if req.pause {
                    self.set_paused(id, false, true, now);
                    Verdict::Ok
                } else {
                    self.set_paused(id, false, false, now);
                    match self.channels.get(&id).map(|c| c.status) {
                        Some(Status::ResponderPaused | Status::ResponderFinalizing) => {
                            Verdict::Pause
                        }
                        _ => Verdict::Ok,
                    }
                };
                self.finish_request(now, id, &req, via, None, verdict);
            }
        }
    }

    fn reject(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        req: &TransferRequest,
        via: Via,
        why: Fault,
    ) {
        let response = match req.message_type {
            MessageType::Restart => TransferResponse::restart(id.id, false, false, None),
            MessageType::New => TransferResponse::new_channel(id.id, false, false, None),
            _ => TransferResponse::voucher_result(id.id, false, false, None),
        };
        self.finish_request(now, id, req, via, Some(response), Verdict::Err(why));
    }

    fn on_new_request(&mut self, now: Timestamp, id: ChannelId, req: TransferRequest, via: Via) {
        let checked = (|| {
            if self.channels.contains_key(&id) {
                return Err(Fault::peer(format!("channel {id} already exists")));
            }
            if self.channels.len() >= self.config.max_channels {
                return Err(Fault::limit(format!(
                    "too many open channels (limit {})",
                    self.config.max_channels
                )));
            }
            if self.validations_full() {
                return Err(Fault::limit("too many requests awaiting validation"));
            }
            let voucher = req
                .typed_voucher()
                .ok_or(Fault::peer("request carries no voucher"))?;
            self.validated
                .lookup(&voucher)
                .map_err(|e| Fault::peer(e.to_string()))?;
            let base_cid = req
                .base_cid
                .ok_or(Fault::peer("request carries no base CID"))?;
            let selector = req
                .selector
                .clone()
                .ok_or(Fault::peer("request carries no selector"))?;
            Ok((voucher, base_cid, selector))
        })();
        let (voucher, base_cid, selector) = match checked {
            Ok(v) => v,
            Err(why) => {
                // An existing channel is left alone (Go would close its transport).
                return self.reject(now, id, &req, via, why);
            }
        };
        let is_restart = req.message_type == MessageType::Restart;
        let call = if req.pull {
            ValidationCall::ValidatePull {
                is_restart,
                channel: id,
                receiver: id.initiator,
                voucher: voucher.clone(),
                base_cid,
                selector,
            }
        } else {
            ValidationCall::ValidatePush {
                is_restart,
                channel: id,
                sender: id.initiator,
                voucher: voucher.clone(),
                base_cid,
                selector,
            }
        };
        self.ask(
            call,
            Pending::NewRequest {
                via,
                channel: id,
                request: Box::new(req),
                voucher,
            },
        );
    }

    fn accept_new(
        &mut self,
        now: Timestamp,
        via: Via,
        id: ChannelId,
        req: TransferRequest,
        voucher: Voucher,
        answer: ValidationAnswer,
    ) {
        let (verdict, result) = Verdict::from_answer(&answer);
        // A restart of a channel we did not know is answered as a restart.
        let restart = req.message_type == MessageType::Restart;
        let response = |accepted: bool, paused: bool| {
            if restart {
                TransferResponse::restart(id.id, accepted, paused, result.clone())
            } else {
                TransferResponse::new_channel(id.id, accepted, paused, result.clone())
            }
        };
        // A restart of a channel we did not know, sent again while we validated it (a
        // monitor's restart after a transport's): the first copy made the channel, and
        // this one restarts it.
        if restart && self.channels.contains_key(&id) {
            return self.accept_restart(now, via, id, req, answer);
        }
        // Re-check: another request for the same id may have been accepted meanwhile.
        let limit_hit = self.channels.len() >= self.config.max_channels;
        if let Verdict::Err(_) = verdict {
            return self.finish_request(now, id, &req, via, Some(response(false, false)), verdict);
        }
        if self.channels.contains_key(&id) || limit_hit {
            let why = Verdict::Err(Fault::limit(format!("channel {id} cannot be created")));
            return self.finish_request(now, id, &req, via, Some(response(false, false)), why);
        }
        let (Some(base_cid), Some(selector)) = (req.base_cid, req.selector.clone()) else {
            return;
        };
        let state = ChannelState::new(
            id,
            self.me,
            base_cid,
            selector,
            voucher.clone(),
            req.pull,
            0,
        );
        self.channels.insert(id, state);
        self.fire_quiet(id, ChannelEvent::Open, now);
        if let Some(r) = result.clone() {
            self.record_result(id, r, now);
        }
        self.fire_quiet(id, ChannelEvent::Accept, now);
        self.emit(Output::ConfigureTransport {
            channel: id,
            voucher,
        });
        self.emit(Output::Protect {
            peer: id.initiator,
            channel: id,
        });
        let paused = verdict == Verdict::Pause;
        if paused {
            self.fire_quiet(id, ChannelEvent::PauseResponder, now);
        }
        self.finish_request(now, id, &req, via, Some(response(true, paused)), verdict);
    }

    fn on_restart_request(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        req: TransferRequest,
        via: Via,
    ) {
        if !self.channels.contains_key(&id)
            && let Some(f) = self.completed_earlier(&id)
        {
            // We completed but the initiator did not hear it (the message was lost): tell it
            // again, and let the transport re-send whatever it is still missing; only what
            // the channel was for.
            let same = req.base_cid == Some(f.base_cid)
                && req.selector.as_ref().map(DagCbor::cid) == Some(f.selector)
                && req.typed_voucher().as_ref().map(voucher_print) == f.voucher;
            if !same {
                let why = Fault::peer(format!(
                    "restart request for channel {id} failed validation: it does not match \
                     the channel's root, selector and voucher"
                ));
                return self.reject(now, id, &req, via, why);
            }
            let done = TransferResponse::complete(id.id, true, false, None);
            return self.finish_request(now, id, &req, via, Some(done), Verdict::Ok);
        }
        if !self.channels.contains_key(&id)
            && let Some(ended) = self
                .finished
                .get(&id)
                .map(|f| f.status)
                .filter(|s| matches!(s, Status::Cancelled | Status::Failed))
        {
            // It ended here, cancelled (by our operator, say, while the initiator was out of
            // reach) or failed: it does not come back as a new channel.
            let why = Fault::peer(format!(
                "channel {id} has ended ({ended:?}) and cannot be restarted"
            ));
            return self.reject(now, id, &req, via, why);
        }
        if !self.channels.contains_key(&id) && self.me != id.initiator {
            // We do not know the channel: we crashed before it was stored (or lost our
            // store). The request carries all a new one does (root, selector, voucher), so
            // it is validated as one, told it is a restart, rather than leave the
            // initiator's transfer stranded; go-data-transfer refuses it ("channel not
            // found"), and its initiator retries until it gives up.
            return self.on_new_request(now, id, req, via);
        }
        let checked = (|| {
            if self.me == id.initiator {
                return Err(Fault::peer(
                    "initiator cannot be manager peer for a restart request",
                ));
            }
            let ch = self
                .channels
                .get(&id)
                .ok_or_else(|| Fault::peer(format!("channel not found: {id}")))?;
            if req.base_cid != Some(ch.base_cid) {
                return Err(Fault::peer("base cid does not match"));
            }
            // Go does not compare selectors; a restart could then ask for more than the
            // channel was validated for.
            if !req
                .selector
                .as_ref()
                .is_some_and(|s| s.same_node(&ch.selector))
            {
                return Err(Fault::peer("selector does not match"));
            }
            let voucher = req
                .typed_voucher()
                .ok_or(Fault::peer("request carries no voucher"))?;
            self.validated
                .lookup(&voucher)
                .map_err(|e| Fault::peer(e.to_string()))?;
            if ch.voucher() != Some(&voucher) {
                return Err(Fault::peer("channel and request vouchers do not match"));
            }
            if self.validations_full() {
                return Err(Fault::limit("too many requests awaiting validation"));
            }
            Ok(validate_call(true, ch, id.initiator))
        })();
        match checked {
            Ok(call) => {
                self.ask(
                    call,
                    Pending::RestartRequest {
                        via,
                        channel: id,
                        request: Box::new(req),
                    },
                );
            }
            Err(why) => self.reject(
                now,
                id,
                &req,
                via,
                why.map_message(|m| {
                    format!("restart request for channel {id} failed validation: {m}")
                }),
            ),
        }
    }

    fn accept_restart(
        &mut self,
        now: Timestamp,
        via: Via,
        id: ChannelId,
        req: TransferRequest,
        answer: ValidationAnswer,
    ) {
        let (verdict, result) = Verdict::from_answer(&answer);
        let paused = verdict == Verdict::Pause;
        let response = TransferResponse::restart(id.id, verdict.accepted(), paused, result.clone());
        if verdict.accepted() && self.channels.contains_key(&id) {
            if let Some(r) = result {
                self.record_result(id, r, now);
            }
            self.fire_quiet(id, ChannelEvent::Restart, now);
            if let Some(v) = self.channels.get(&id).and_then(|c| c.voucher().cloned()) {
                self.emit(Output::ConfigureTransport {
                    channel: id,
                    voucher: v,
                });
            }
            self.emit(Output::Protect {
                peer: id.initiator,
                channel: id,
            });
            if paused {
                self.fire_quiet(id, ChannelEvent::PauseResponder, now);
            }
        }
        self.finish_request(now, id, &req, via, Some(response), verdict);
    }

    fn on_voucher_update(&mut self, now: Timestamp, id: ChannelId, req: TransferRequest, via: Via) {
        let checked = (|| {
            if !self.channels.contains_key(&id) {
                return Err(Fault::peer(format!("channel not found: {id}")));
            }
            let voucher = req
                .typed_voucher()
                .ok_or(Fault::peer("request carries no voucher"))?;
            self.revalidators
                .lookup(&voucher)
                .map_err(|e| Fault::peer(e.to_string()))?;
            if self.validations_full() {
                return Err(Fault::limit("too many requests awaiting validation"));
            }
            Ok(voucher)
        })();
        match checked {
            Ok(voucher) => {
                self.ask(
                    ValidationCall::Revalidate {
                        channel: id,
                        voucher: voucher.clone(),
                    },
                    Pending::VoucherUpdate {
                        via,
                        channel: id,
                        voucher,
                    },
                );
            }
            Err(why) => {
                if self.channels.contains_key(&id) {
                    let (resp, verdict) =
                        self.revalidation_result(now, id, None, Verdict::Err(why));
                    self.finish_request(now, id, &req, via, Some(resp), verdict);
                } else {
                    self.finish_request(now, id, &req, via, None, Verdict::Err(why));
                }
            }
        }
    }

    /// Go's `processRevalidationResult`: the response to send, after recording the result and
    /// pausing or resuming as the verdict says.
    fn revalidation_result(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        result: Option<VoucherResult>,
        verdict: Verdict,
    ) -> (TransferResponse, Verdict) {
        let finalizing = self
            .channels
            .get(&id)
            .is_some_and(|c| c.status == Status::Finalizing);
        let accepted = verdict.accepted();
        let paused = verdict == Verdict::Pause;
        let response = if finalizing {
            TransferResponse::complete(id.id, accepted, paused, result.clone())
        } else {
            TransferResponse::voucher_result(id.id, accepted, paused, result.clone())
        };
        if let Some(r) = result {
            self.record_result(id, r, now);
        }
        match verdict {
            Verdict::Pause => self.set_paused(id, true, true, now),
            Verdict::Resume => self.set_paused(id, true, false, now),
            _ => {}
        }
        (response, verdict)
    }

    /// Go's `receiver.receiveRequest` (network) or the transport hook's reply.
    fn finish_request(
        &mut self,
        _now: Timestamp,
        id: ChannelId,
        req: &TransferRequest,
        via: Via,
        response: Option<TransferResponse>,
        mut verdict: Verdict,
    ) {
        if let Via::Transport(token) = via {
            let message = response.map(Message::Response);
            return self.hook(token, id, message, verdict.hook_result());
        }
        if verdict == Verdict::Resume {
            let status = self.channels.get(&id).map(|c| c.status);
            if matches!(
                status,
                Some(Status::Requested | Status::Ongoing | Status::InitiatorPaused)
            ) {
                return self.transport(TransportCommand::ResumeChannel {
                    channel: id,
                    message: response.map(Message::Response),
                });
            }
            verdict = Verdict::Ok;
        }
        if let Some(response) = response {
            let opens = matches!(
                response.message_type,
                MessageType::New | MessageType::Restart
            ) && response.accepted
                && !req.pull;
            match (opens, req.base_cid, req.selector.clone()) {
                (true, Some(root), Some(selector)) => {
                    let restart = (response.message_type == MessageType::Restart)
                        .then(|| self.channels.get(&id).cloned().map(Box::new))
                        .flatten();
                    self.transport(TransportCommand::OpenChannel {
                        data_sender: id.initiator,
                        channel: id,
                        root,
                        selector,
                        message: response.into(),
                        restart,
                    });
                }
                _ => self.send(id.initiator, id, response, OnSendFailure::Ignore),
            }
        }
        match verdict {
            Verdict::Pause => self.transport(TransportCommand::PauseChannel { channel: id }),
            Verdict::Err(_) => self.transport(TransportCommand::CloseChannel { channel: id }),
            _ => {}
        }
    }

    /// Go's `OnResponseReceived` plus `receiver.receiveResponse`. A response riding in a
    /// request for data (`data_request`) is answered: served only for a push of ours to that
    /// peer, for the channel's own root and selector (Go checks neither; we do, so a peer
    /// cannot take more than the channel it accepted).
    fn on_response(
        &mut self,
        now: Timestamp,
        from: PeerId,
        resp: TransferResponse,
        data_request: Option<DataRequest>,
    ) {
        let id = ChannelId::new(self.me, from, resp.transfer_id);
        let refusal = match (self.channels.get(&id), &data_request) {
            (None, _) => Some("no such channel"),
            (Some(ch), Some(_)) if ch.is_pull() => Some("the channel is a pull, not a push"),
            (Some(ch), Some(r)) if ch.base_cid != r.root || !ch.selector.same_node(&r.selector) => {
                Some("the request is not for the channel's root and selector")
            }
            _ => None,
        };
        if let Some(why) = refusal {
            if let Some(r) = data_request {
                self.hook(r.token, id, None, HookResult::Fail(Fault::peer(why)));
            }
            return;
        }
        let verdict = self.response_verdict(now, id, &resp);
        match (data_request, verdict) {
            // The request waiting for the answer is the transfer itself: answering it pauses
            // or refuses it.
            (Some(r), verdict) => {
                let answer = match verdict {
                    Verdict::Pause => HookResult::Pause,
                    Verdict::Resume => HookResult::Resume,
                    Verdict::Err(e) => HookResult::Fail(e),
                    Verdict::Ok => HookResult::Continue,
                };
                self.hook(r.token, id, None, answer);
            }
            (None, Verdict::Pause) => {
                self.transport(TransportCommand::PauseChannel { channel: id })
            }
            (None, Verdict::Err(_)) => {
                self.transport(TransportCommand::CloseChannel { channel: id })
            }
            (None, _) => {}
        }
    }

    fn response_verdict(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        resp: &TransferResponse,
    ) -> Verdict {
        use MessageType as T;
        // The responder answers: a restart's wait, or a wait in its queue, is over.
        if let Some(w) = self.watches.get_mut(&id) {
            w.restart_sent = None;
            w.queued_since = None;
        }
        if resp.message_type == T::Cancel {
            self.fire_quiet(id, ChannelEvent::Cancel, now);
            return Verdict::Ok;
        }
        if matches!(
            resp.message_type,
            T::VoucherResult | T::New | T::Complete | T::Restart
        ) {
            if let Some(result) = resp
                .typed_voucher_result()
                .filter(|r| !r.type_id.is_empty())
            {
                if let Err(e) = self.results.lookup(&result) {
                    return Verdict::Err(Fault::peer(e.to_string()));
                }
                self.record_result(id, result, now);
            }
            if !resp.accepted {
                self.fire_quiet(id, ChannelEvent::error("response rejected"), now);
                return Verdict::Err(Fault::rejected(""));
            }
            if matches!(resp.message_type, T::New | T::Restart) {
                self.paused_unaccepted.remove(&id);
            }
            if resp.message_type == T::New {
                self.fire_quiet(id, ChannelEvent::Accept, now);
            }
            if resp.message_type == T::Restart {
                self.fire_quiet(id, ChannelEvent::Restart, now);
            }
        }
        if resp.message_type == T::Complete && resp.accepted {
            if !resp.paused {
                // Departure from Go: a responder that completes without pausing is not
                // paused. Its last resume (sent with the data, on the transport) can arrive
                // after this message (sent on the data-transfer network); Go then moves
                // ResponderPaused -> ResponderFinalizing and waits for a finalization that
                // never comes. Take the resume as given first.
                if matches!(
                    self.channels.get(&id).map(|c| c.status),
                    Some(Status::ResponderPaused | Status::BothPaused)
                ) {
                    self.set_paused(id, false, false, now);
                }
                self.fire_quiet(id, ChannelEvent::ResponderCompletes, now);
                return Verdict::Ok;
            }
            // Departure from Go: go-data-transfer v2 sends the paused Complete (all data
            // sent, finalize now) and, once finalized, the final one on two streams of their
            // own, and they can be read in either order. A paused Complete after the final
            // one is the older of the two; Go goes back to ResponderFinalizing and waits for
            // a finalization that already came. It is only recorded.
            if matches!(
                self.channels.get(&id).map(|c| c.status),
                Some(Status::ResponderCompleted | Status::Completing)
            ) {
                return Verdict::Ok;
            }
            self.fire_quiet(id, ChannelEvent::ResponderBeginsFinalization, now);
        }
        if resp.paused {
            self.set_paused(id, false, true, now);
        } else {
            self.set_paused(id, false, false, now);
        }
        Verdict::Ok
    }

    // ----- transport input -----------------------------------------------------------------

    /// Something happened in the transport.
    pub fn handle_transport_event(&mut self, now: Timestamp, event: TransportEvent) {
        use TransportEvent as T;
        match event {
            T::ChannelOpened { channel } => {
                self.reopening.remove(&channel);
                self.fire_quiet(channel, ChannelEvent::Opened, now)
            }
            T::RequestReceived {
                token,
                from,
                request,
            } => {
                if request.message_type == MessageType::RestartExistingChannelRequest {
                    let id = ChannelId::new(from, self.me, request.transfer_id);
                    self.on_restart_existing(from, &request);
                    return self.hook(token, id, None, HookResult::Continue);
                }
                self.on_request(now, from, request, Via::Transport(token))
            }
            T::ResponseReceived {
                from,
                response,
                data_request,
            } => self.on_response(now, from, response, data_request),
            T::DataReceived {
                token,
                channel,
                size,
                index,
                unique,
            } => {
                let block = (size, index, unique);
                self.on_data_hook(now, token, channel, Progress::Received, block)
            }
            T::DataQueued {
                token,
                channel,
                size,
                index,
                unique,
            } => {
                let block = (size, index, unique);
                self.on_data_hook(now, token, channel, Progress::Queued, block)
            }
            T::DataSent {
                channel,
                size,
                index,
                unique,
            } => {
                self.progress(now, channel, Progress::Sent, size, index, unique);
            }
            T::TransferQueued { channel } => {
                self.fire_quiet(channel, ChannelEvent::TransferRequestQueued, now)
            }
            T::ChannelCompleted { channel, result } => self.on_completed(now, channel, result),
            T::RequestCancelled { channel, error } => self.fire_quiet(
                channel,
                ChannelEvent::RequestCancelled { message: error },
                now,
            ),
            T::Disconnected { channel, error } => {
                self.fire_quiet(channel, ChannelEvent::Disconnected { message: error }, now)
            }
            T::SendDataError { channel, error } => {
                self.fire_quiet(channel, ChannelEvent::SendDataError { message: error }, now)
            }
            T::ReceiveDataError { channel, error } => self.fire_quiet(
                channel,
                ChannelEvent::ReceiveDataError { message: error },
                now,
            ),
            T::OpenFailed { channel, error } => {
                // A failed first open fails the channel (Go's OpenPullDataChannel); a failed
                // re-open is a disconnect, for the monitor (or the user) to retry.
                let message = format!("Unable to send request: {error}");
                if self.reopening.remove(&channel) {
                    self.fire_quiet(channel, ChannelEvent::Disconnected { message }, now)
                } else {
                    self.fire_quiet(channel, ChannelEvent::error(message), now)
                }
            }
        }
    }

    /// A block was queued or received: count it, and ask the revalidators about new bytes on
    /// channels the other peer initiated.
    fn on_data_hook(
        &mut self,
        now: Timestamp,
        token: HookToken,
        channel: ChannelId,
        kind: Progress,
        (size, index, unique): (u64, u64, bool),
    ) {
        let is_new = self.progress(now, channel, kind, size, index, unique);
        if is_new && channel.initiator != self.me && self.has_revalidators() {
            let call = match kind {
                Progress::Received => ValidationCall::OnPushDataReceived {
                    channel,
                    bytes: size,
                },
                Progress::Queued | Progress::Sent => ValidationCall::OnPullDataSent {
                    channel,
                    bytes: size,
                },
            };
            self.ask(
                call,
                Pending::Data {
                    token,
                    channel,
                    kind,
                },
            );
        } else {
            let result = self.hook_result_for(&channel);
            self.hook(token, channel, None, result);
        }
    }

    /// A hook about an unknown channel is refused; a known one (or one we completed, being
    /// re-sent after a restart) carries on.
    fn hook_result_for(&self, id: &ChannelId) -> HookResult {
        if self.channels.contains_key(id) || self.completed_earlier(id).is_some() {
            HookResult::Continue
        } else {
            HookResult::Fail(Fault::peer(format!("channel not found: {id}")))
        }
    }

    /// Go's `fireProgressEvent`: the progress event only for a unique block past the highest
    /// index seen (so a restart does not count blocks twice), then the index event. Returns
    /// whether the block was new.
    fn progress(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        kind: Progress,
        size: u64,
        index: u64,
        unique: bool,
    ) -> bool {
        let Some(ch) = self.channels.get(&id) else {
            return false;
        };
        let seen = match kind {
            Progress::Received => ch.received_blocks_total,
            Progress::Queued => ch.queued_blocks_total,
            Progress::Sent => ch.sent_blocks_total,
        };
        let is_new = unique && index > seen;
        if is_new {
            let ev = match kind {
                Progress::Received => ChannelEvent::DataReceivedProgress { bytes: size },
                Progress::Queued => ChannelEvent::DataQueuedProgress { bytes: size },
                Progress::Sent => ChannelEvent::DataSentProgress { bytes: size },
            };
            self.fire_quiet(id, ev, now);
        }
        let ev = match kind {
            Progress::Received => ChannelEvent::DataReceived { index },
            Progress::Queued => ChannelEvent::DataQueued { index },
            Progress::Sent => ChannelEvent::DataSent { index },
        };
        self.fire_quiet(id, ev, now);
        is_new
    }

    fn on_completed(&mut self, now: Timestamp, id: ChannelId, result: Result<(), Fault>) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        match result {
            Ok(()) if id.initiator != self.me => {
                if self.has_revalidators() {
                    self.ask(
                        ValidationCall::OnComplete { channel: id },
                        Pending::Complete { channel: id },
                    );
                } else {
                    self.complete_as_responder(now, id, Ok(None));
                }
            }
            Ok(()) => self.fire_quiet(id, ChannelEvent::FinishTransfer, now),
            Err(_) if matches!(ch.status, Status::Failing | Status::Failed) => {}
            // Our own store or disk failed: asking the peer again would not help. The channel
            // fails once, the transport stops and the peer is told (no restart follows).
            Err(e @ Fault::LocalFailure(_)) if !ch.status.is_cleaning_up() => {
                let msg = format!("data transfer channel {id} failed to transfer data: {e}");
                self.fail(now, id, msg);
            }
            Err(e) => {
                let msg = format!("data transfer channel {id} failed to transfer data: {e}");
                self.fire_quiet(id, ChannelEvent::error(msg), now);
            }
        }
    }

    fn complete_as_responder(&mut self, now: Timestamp, id: ChannelId, answer: ValidationAnswer) {
        let (verdict, result) = Verdict::from_answer(&answer);
        if let Some(r) = result.clone() {
            self.record_result(id, r, now);
        }
        let accepted = verdict.accepted();
        let paused = verdict == Verdict::Pause;
        let msg = TransferResponse::complete(id.id, accepted, paused, result);
        self.send(id.initiator, id, msg, OnSendFailure::Disconnect);
        let ev = match (&verdict, paused) {
            (Verdict::Err(e), _) => ChannelEvent::error(e.to_string()),
            (_, true) => ChannelEvent::BeginFinalizing,
            (_, false) => ChannelEvent::Complete,
        };
        self.fire_quiet(id, ev, now);
    }

    // ----- validator answers ---------------------------------------------------------------

    /// The answer to an [`Output::Validate`]. Unknown tokens are ignored.
    pub fn handle_validation(
        &mut self,
        now: Timestamp,
        token: ValidationToken,
        answer: ValidationAnswer,
    ) {
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        match pending {
            Pending::NewRequest {
                via,
                channel,
                request,
                voucher,
            } => self.accept_new(now, via, channel, *request, voucher, answer),
            Pending::RestartRequest {
                via,
                channel,
                request,
            } => self.accept_restart(now, via, channel, *request, answer),
            Pending::VoucherUpdate {
                via,
                channel,
                voucher,
            } => {
                let (verdict, result) = Verdict::from_answer(&answer);
                let req = TransferRequest::voucher(channel.id, voucher.clone());
                if !self.channels.contains_key(&channel) {
                    return self.finish_request(
                        now,
                        channel,
                        &req,
                        via,
                        None,
                        Verdict::Err(Fault::peer("channel not found")),
                    );
                }
                let verdict = match self.record_voucher(channel, voucher, now) {
                    Ok(()) => verdict,
                    Err(e) => Verdict::Err(e),
                };
                let (resp, verdict) = self.revalidation_result(now, channel, result, verdict);
                self.finish_request(now, channel, &req, via, Some(resp), verdict);
            }
            Pending::Data {
                token: hook,
                channel,
                kind,
            } => {
                let (verdict, result) = Verdict::from_answer(&answer);
                if !self.channels.contains_key(&channel) {
                    return self.hook(
                        hook,
                        channel,
                        None,
                        HookResult::Fail(Fault::peer("channel not found")),
                    );
                }
                if verdict == Verdict::Ok && result.is_none() {
                    return self.hook(hook, channel, None, HookResult::Continue);
                }
                let (resp, verdict) = self.revalidation_result(now, channel, result, verdict);
                if kind == Progress::Queued {
                    // The sender's answer rides with the block.
                    self.hook(hook, channel, Some(resp.into()), verdict.hook_result());
                } else {
                    // The receiver's answer goes to the initiator over the network.
                    self.send(channel.initiator, channel, resp, OnSendFailure::Disconnect);
                    self.hook(hook, channel, None, verdict.hook_result());
                }
            }
            Pending::Complete { channel } => {
                if self.channels.contains_key(&channel) {
                    self.complete_as_responder(now, channel, answer);
                }
            }
            Pending::RestartAsResponder { channel } => {
                let Some(ch) = self.channels.get(&channel) else {
                    return;
                };
                let other = ch.other_peer();
                let (verdict, _) = Verdict::from_answer(&answer);
                if verdict.accepted() {
                    let req = TransferRequest::restart_existing_channel(channel);
                    self.send(other, channel, req, OnSendFailure::Disconnect);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Received,
    Queued,
    Sent,
}

/// The validator call that re-validates a channel's original voucher.
fn validate_call(is_restart: bool, ch: &ChannelState, initiator: PeerId) -> ValidationCall {
    let voucher = ch
        .voucher()
        .cloned()
        .unwrap_or_else(|| TypedNode::new(TypeIdentifier::EMPTY, DagCbor::null()));
    if ch.is_pull() {
        ValidationCall::ValidatePull {
            is_restart,
            channel: ch.channel_id,
            receiver: initiator,
            voucher,
            base_cid: ch.base_cid,
            selector: ch.selector.clone(),
        }
    } else {
        ValidationCall::ValidatePush {
            is_restart,
            channel: ch.channel_id,
            sender: initiator,
            voucher,
            base_cid: ch.base_cid,
            selector: ch.selector.clone(),
        }
    }
}

/// Convenience for shells: a validation that simply accepts.
pub fn accept() -> ValidationAnswer {
    Ok(Some(Validation::accept()))
}

/// The responder paused its Complete to be settled, and waits for a voucher.
fn awaits_settlement(status: Status) -> bool {
    matches!(
        status,
        Status::ResponderFinalizing | Status::ResponderFinalizingTransferFinished
    )
}
