//! The per-channel state machine: go-data-transfer v1.15.1 `channels/channels_fsm.go` as one
//! pure function.
//!
//! [`transition`] applies a [`ChannelEvent`] to a [`ChannelState`]. An event the table does not
//! allow from the current status, or any event once the channel is terminal, is a typed
//! [`FsmError`] and leaves the state untouched. Entering (or staying in) Cancelling, Failing or
//! Completing asks the caller to clean up the transport ([`Transition::cleanup`]) and then to
//! apply [`ChannelEvent::CleanupComplete`], as Go's state-entry functions do.

use datatransfer_types::{
    ChannelState, Event, EventCode, Status, Timestamp, Voucher, VoucherResult,
};

/// Something that happens to a channel, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The channel was created.
    Open,
    /// The responder accepted.
    Accept,
    /// The channel was restarted.
    Restart,
    /// The transport queued the request.
    TransferRequestQueued,
    /// The transport opened its channel.
    Opened,
    /// Either side cancelled.
    Cancel,
    /// A block arrived; `index` is its position in the traversal (repeats counted).
    DataReceived {
        /// Block index.
        index: u64,
    },
    /// A block was sent.
    DataSent {
        /// Block index.
        index: u64,
    },
    /// A block was queued for sending.
    DataQueued {
        /// Block index.
        index: u64,
    },
    /// New bytes arrived.
    DataReceivedProgress {
        /// How many.
        bytes: u64,
    },
    /// New bytes were sent.
    DataSentProgress {
        /// How many.
        bytes: u64,
    },
    /// New bytes were queued.
    DataQueuedProgress {
        /// How many.
        bytes: u64,
    },
    /// The connection to the other peer failed.
    Disconnected {
        /// Why.
        message: String,
    },
    /// The transport failed to send data.
    SendDataError {
        /// Why.
        message: String,
    },
    /// The transport failed to receive data.
    ReceiveDataError {
        /// Why.
        message: String,
    },
    /// The transport cancelled the request.
    RequestCancelled {
        /// Why.
        message: String,
    },
    /// The channel failed.
    Error {
        /// Why.
        message: String,
    },
    /// A voucher was sent or received.
    NewVoucher(Voucher),
    /// A voucher result was sent or received.
    NewVoucherResult(VoucherResult),
    /// The initiator paused.
    PauseInitiator,
    /// The initiator resumed.
    ResumeInitiator,
    /// The responder paused.
    PauseResponder,
    /// The responder resumed.
    ResumeResponder,
    /// This node finished sending or receiving (initiator side).
    FinishTransfer,
    /// The responder says it awaits a final voucher.
    ResponderBeginsFinalization,
    /// The responder says it completed.
    ResponderCompletes,
    /// The responder finished and awaits the initiator's final voucher.
    BeginFinalizing,
    /// Both sides are done.
    Complete,
    /// The transport was cleaned up.
    CleanupComplete,
    /// Finish a cleanup interrupted by a restart of the node.
    CompleteCleanupOnRestart,
}

impl ChannelEvent {
    /// The event code subscribers see.
    pub fn code(&self) -> EventCode {
        match self {
            Self::Open => EventCode::Open,
            Self::Accept => EventCode::Accept,
            Self::Restart => EventCode::Restart,
            Self::TransferRequestQueued => EventCode::TransferRequestQueued,
            Self::Opened => EventCode::Opened,
            Self::Cancel => EventCode::Cancel,
            Self::DataReceived { .. } => EventCode::DataReceived,
            Self::DataSent { .. } => EventCode::DataSent,
            Self::DataQueued { .. } => EventCode::DataQueued,
            Self::DataReceivedProgress { .. } => EventCode::DataReceivedProgress,
            Self::DataSentProgress { .. } => EventCode::DataSentProgress,
            Self::DataQueuedProgress { .. } => EventCode::DataQueuedProgress,
            Self::Disconnected { .. } => EventCode::Disconnected,
            Self::SendDataError { .. } => EventCode::SendDataError,
            Self::ReceiveDataError { .. } => EventCode::ReceiveDataError,
            Self::RequestCancelled { .. } => EventCode::RequestCancelled,
            Self::Error { .. } => EventCode::Error,
            Self::NewVoucher(_) => EventCode::NewVoucher,
            Self::NewVoucherResult(_) => EventCode::NewVoucherResult,
            Self::PauseInitiator => EventCode::PauseInitiator,
            Self::ResumeInitiator => EventCode::ResumeInitiator,
            Self::PauseResponder => EventCode::PauseResponder,
            Self::ResumeResponder => EventCode::ResumeResponder,
            Self::FinishTransfer => EventCode::FinishTransfer,
            Self::ResponderBeginsFinalization => EventCode::ResponderBeginsFinalization,
            Self::ResponderCompletes => EventCode::ResponderCompletes,
            Self::BeginFinalizing => EventCode::BeginFinalizing,
            Self::Complete => EventCode::Complete,
            Self::CleanupComplete => EventCode::CleanupComplete,
            Self::CompleteCleanupOnRestart => EventCode::CompleteCleanupOnRestart,
        }
    }

    /// An `Error` event.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }
}

/// Why an event was refused. The state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsmError {
    /// The channel is Completed, Failed or Cancelled and takes no more events.
    #[error("channel is terminated ({status}); event {event} ignored")]
    Terminated {
        /// The terminal status.
        status: Status,
        /// The refused event.
        event: EventCode,
    },
    /// The table has no transition for this event from this status.
    #[error("invalid transition: event {event} from status {status}")]
    InvalidTransition {
        /// The current status.
        status: Status,
        /// The refused event.
        event: EventCode,
    },
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The event for subscribers (Go sends the channel's message with it).
    pub event: Event,
    /// The status before the event.
    pub from: Status,
    /// The caller must clean up the transport channel, release the peer, then apply
    /// [`ChannelEvent::CleanupComplete`] (Go's state-entry function for the cleanup states).
    pub cleanup: bool,
}

/// Where an event leads from a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    To(Status),
    /// Same status; state-entry functions run (Go's `ToNoChange`).
    NoChange,
    /// Same status; no state-entry function (Go's `ToJustRecord`).
    JustRecord,
}

/// The transition table of `channels_fsm.go`.
fn destination(event: &ChannelEvent, s: Status) -> Option<Dest> {
    use ChannelEvent as E;
    use Dest::*;
    use Status::*;
    let after_transfer = s.is_transferring() || s == TransferFinished;
    Some(match event {
        E::Open => To(Requested),
        E::Accept if s == Requested => To(Ongoing),
        E::Accept => return None,
        E::TransferRequestQueued | E::Restart | E::Opened => JustRecord,
        E::Cancel => To(Cancelling),
        E::DataReceived { .. } => NoChange,
        E::DataReceivedProgress { .. }
        | E::DataSentProgress { .. }
        | E::DataQueuedProgress { .. } => {
            if s.is_transferring() {
                NoChange
            } else {
                return None;
            }
        }
        E::DataSent { .. } | E::DataQueued { .. } => {
            if after_transfer {
                NoChange
            } else {
                return None;
            }
        }
        E::Disconnected { .. }
        | E::SendDataError { .. }
        | E::ReceiveDataError { .. }
        | E::RequestCancelled { .. }
        | E::NewVoucher(_)
        | E::NewVoucherResult(_)
        | E::CompleteCleanupOnRestart => NoChange,
        E::Error { .. } => To(Failing),
        E::PauseInitiator => match s {
            Requested | Ongoing => To(InitiatorPaused),
            ResponderPaused => To(BothPaused),
            _ => JustRecord,
        },
        E::PauseResponder => match s {
            Requested | Ongoing => To(ResponderPaused),
            InitiatorPaused => To(BothPaused),
            _ => JustRecord,
        },
        E::ResumeInitiator => match s {
            InitiatorPaused => To(Ongoing),
            BothPaused => To(ResponderPaused),
            _ => JustRecord,
        },
        E::ResumeResponder => match s {
            ResponderPaused => To(Ongoing),
            BothPaused => To(InitiatorPaused),
            Finalizing => To(Completing),
            _ => JustRecord,
        },
        E::FinishTransfer => match s {
            Failing | Cancelling => JustRecord,
            ResponderCompleted => To(Completing),
            ResponderFinalizing => To(ResponderFinalizingTransferFinished),
            // The other side never answered (or was never contacted): nothing to finalize.
            Requested => To(Completing),
            _ => To(TransferFinished),
        },
        E::ResponderBeginsFinalization => match s {
            // go-data-transfer v2 sends the final voucher result in a second Complete; v1.15
            // fell back to ResponderFinalizing here and lost "all data arrived".
            Failing | Cancelling | ResponderFinalizing | ResponderFinalizingTransferFinished => {
                JustRecord
            }
            TransferFinished => To(ResponderFinalizingTransferFinished),
            _ => To(ResponderFinalizing),
        },
        E::ResponderCompletes => match s {
            Failing | Cancelling => JustRecord,
            ResponderPaused => To(ResponderFinalizing),
            TransferFinished => To(Completing),
            ResponderFinalizing => To(ResponderCompleted),
            ResponderFinalizingTransferFinished => To(Completing),
            _ => To(ResponderCompleted),
        },
        E::BeginFinalizing => To(Finalizing),
        E::Complete => To(Completing),
        E::CleanupComplete => match s {
            Cancelling => To(Cancelled),
            Failing => To(Failed),
            Completing => To(Completed),
            _ => return None,
        },
    })
}

/// Runs the event's action on the state (before the status changes, as Go does, so log lines
/// land in the stage of the status the event arrived in).
fn act(state: &mut ChannelState, event: &ChannelEvent, now: Timestamp) {
    use ChannelEvent as E;
    let log: &str = match event {
        E::TransferRequestQueued | E::Restart | E::Opened => {
            state.message.clear();
            ""
        }
        E::DataReceived { index } => {
            state.received_blocks_total = state.received_blocks_total.max(*index);
            ""
        }
        E::DataSent { index } => {
            state.sent_blocks_total = state.sent_blocks_total.max(*index);
            ""
        }
        E::DataQueued { index } => {
            state.queued_blocks_total = state.queued_blocks_total.max(*index);
            ""
        }
        E::DataReceivedProgress { bytes } => {
            state.received = state.received.saturating_add(*bytes);
            "received data"
        }
        E::DataSentProgress { bytes } => {
            state.sent = state.sent.saturating_add(*bytes);
            "sending data"
        }
        E::DataQueuedProgress { bytes } => {
            state.queued = state.queued.saturating_add(*bytes);
            ""
        }
        E::Disconnected { message }
        | E::SendDataError { message }
        | E::ReceiveDataError { message }
        | E::RequestCancelled { message }
        | E::Error { message } => {
            let prefix = match event {
                E::Disconnected { .. } => "data transfer disconnected",
                E::SendDataError { .. } => "data transfer send error",
                E::ReceiveDataError { .. } => "data transfer receive error",
                E::RequestCancelled { .. } => "data transfer request cancelled",
                _ => "data transfer erred",
            };
            state.message.clone_from(message);
            let line = format!("{prefix}: {message}");
            state.add_log(&line, now);
            return;
        }
        E::NewVoucher(v) => {
            state.vouchers.push(v.clone());
            "got new voucher"
        }
        E::NewVoucherResult(r) => {
            state.voucher_results.push(r.clone());
            "got new voucher result"
        }
        _ => "",
    };
    state.add_log(log, now);
}

/// Applies `event` to `state` at time `now`.
///
/// On success the state is updated and the returned [`Transition`] holds the event for
/// subscribers; on error nothing changed.
pub fn transition(
    state: &mut ChannelState,
    event: &ChannelEvent,
    now: Timestamp,
) -> Result<Transition, FsmError> {
    let from = state.status;
    let code = event.code();
    if from.is_terminal() {
        return Err(FsmError::Terminated {
            status: from,
            event: code,
        });
    }
    let dest = destination(event, from).ok_or(FsmError::InvalidTransition {
        status: from,
        event: code,
    })?;
    act(state, event, now);
    let run_entry = match dest {
        Dest::To(to) => {
            state.status = to;
            true
        }
        Dest::NoChange => true,
        Dest::JustRecord => false,
    };
    Ok(Transition {
        event: Event::new(code, state.message.clone(), now),
        from,
        cleanup: run_entry && state.status.is_cleaning_up(),
    })
}

/// Whether `event` would be accepted from `status`, without applying it.
pub fn is_allowed(event: &ChannelEvent, status: Status) -> bool {
    !status.is_terminal() && destination(event, status).is_some()
}

#[cfg(test)]
mod tests {
    use datatransfer_types::{ChannelId, Cid, DagCbor, PeerId, TransferId, TypedNode};

    use super::*;

    fn peer(n: u8) -> PeerId {
        let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        bytes.extend_from_slice(&[n; 32]);
        PeerId::from_bytes(&bytes).expect("valid peer id")
    }

    fn channel(status: Status) -> ChannelState {
        let (a, b) = (peer(1), peer(2));
        let mut st = ChannelState::new(
            ChannelId::new(a, b, TransferId(1)),
            a,
            Cid::default(),
            DagCbor::null(),
            TypedNode::new("V".into(), DagCbor::null()),
            true,
            0,
        );
        st.status = status;
        st
    }

    #[test]
    fn errors_change_nothing() {
        let mut st = channel(Status::Ongoing);
        let before = st.clone();
        assert_eq!(
            transition(&mut st, &ChannelEvent::CleanupComplete, Timestamp(5)),
            Err(FsmError::InvalidTransition {
                status: Status::Ongoing,
                event: EventCode::CleanupComplete
            })
        );
        assert_eq!(st, before);
        let mut done = channel(Status::Completed);
        let before = done.clone();
        assert!(matches!(
            transition(&mut done, &ChannelEvent::Cancel, Timestamp(5)),
            Err(FsmError::Terminated { .. })
        ));
        assert_eq!(done, before);
    }

    #[test]
    fn cancel_asks_for_cleanup_then_cleanup_complete_terminates() {
        let mut st = channel(Status::Ongoing);
        let t = transition(&mut st, &ChannelEvent::Cancel, Timestamp(1)).unwrap();
        assert!(t.cleanup);
        assert_eq!(st.status, Status::Cancelling);
        let t = transition(&mut st, &ChannelEvent::CleanupComplete, Timestamp(2)).unwrap();
        assert!(!t.cleanup);
        assert_eq!(st.status, Status::Cancelled);
    }

    #[test]
    fn errors_carry_their_message_into_the_event() {
        let mut st = channel(Status::Ongoing);
        let t = transition(&mut st, &ChannelEvent::error("boom"), Timestamp(3)).unwrap();
        assert_eq!(st.status, Status::Failing);
        assert_eq!(st.message, "boom");
        assert_eq!(t.event, Event::new(EventCode::Error, "boom", Timestamp(3)));
        let logs = &st.stages.get("Ongoing").unwrap().logs;
        assert_eq!(logs.last().unwrap().log, "data transfer erred: boom");
    }

    #[test]
    fn progress_adds_and_indexes_keep_the_max() {
        let mut st = channel(Status::Ongoing);
        for (bytes, index) in [(10, 1), (5, 3), (7, 2)] {
            transition(
                &mut st,
                &ChannelEvent::DataReceivedProgress { bytes },
                Timestamp(1),
            )
            .unwrap();
            transition(&mut st, &ChannelEvent::DataReceived { index }, Timestamp(1)).unwrap();
        }
        assert_eq!(st.received, 22);
        assert_eq!(st.received_blocks_total, 3);
    }
}
