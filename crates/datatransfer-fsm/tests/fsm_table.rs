//! Every event from every status against go-data-transfer v1.15.1 `channels/channels_fsm.go`,
//! with v2.0.0's fixes where the two differ (each marked).
//!
//! The rules below are transcribed from Go's builder calls (`From(...).To(...)`, `FromAny()`,
//! `ToNoChange()`, `ToJustRecord()`), independently of `channel_fsm.rs`, and expanded the way
//! go-statemachine does: a rule for the exact source status wins over `FromAny`, terminal
//! statuses take no events, and state-entry cleanup runs unless the rule is `ToJustRecord`.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use Status::*;
use datatransfer_fsm::{ChannelEvent, FsmError, transition};
use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, EventCode, PeerId, Status, Timestamp, TransferId,
    TypedNode,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum To {
    S(Status),
    NoChange,
    JustRecord,
}

/// `None` as the source set means `FromAny()`.
type Rule = (Option<&'static [Status]>, To);

const TRANSFERRING: &[Status] = &[
    Requested,
    Ongoing,
    InitiatorPaused,
    ResponderPaused,
    BothPaused,
    ResponderCompleted,
    ResponderFinalizing,
];
const TRANSFERRING_AND_FINISHED: &[Status] = &[
    Requested,
    Ongoing,
    InitiatorPaused,
    ResponderPaused,
    BothPaused,
    ResponderCompleted,
    ResponderFinalizing,
    TransferFinished,
];

fn rules(event: EventCode) -> Vec<Rule> {
    use EventCode as E;
    use To::*;
    match event {
        E::Open => vec![(None, S(Requested))],
        E::Accept => vec![(Some(&[Requested]), S(Ongoing))],
        E::TransferRequestQueued | E::Restart | E::Opened => vec![(None, JustRecord)],
        E::Cancel => vec![(None, S(Cancelling))],
        E::DataReceived => vec![(None, NoChange)],
        E::DataReceivedProgress | E::DataSentProgress | E::DataQueuedProgress => {
            vec![(Some(TRANSFERRING), NoChange)]
        }
        E::DataSent | E::DataQueued => vec![(Some(TRANSFERRING_AND_FINISHED), NoChange)],
        E::Disconnected | E::SendDataError | E::ReceiveDataError | E::RequestCancelled => {
            vec![(None, NoChange)]
        }
        E::Error => vec![(None, S(Failing))],
        E::NewVoucher | E::NewVoucherResult => vec![(None, NoChange)],
        E::PauseInitiator => vec![
            (Some(&[Requested, Ongoing]), S(InitiatorPaused)),
            (Some(&[ResponderPaused]), S(BothPaused)),
            (None, JustRecord),
        ],
        E::PauseResponder => vec![
            (Some(&[Requested, Ongoing]), S(ResponderPaused)),
            (Some(&[InitiatorPaused]), S(BothPaused)),
            (None, JustRecord),
        ],
        E::ResumeInitiator => vec![
            (Some(&[InitiatorPaused]), S(Ongoing)),
            (Some(&[BothPaused]), S(ResponderPaused)),
            (None, JustRecord),
        ],
        E::ResumeResponder => vec![
            (Some(&[ResponderPaused]), S(Ongoing)),
            (Some(&[BothPaused]), S(InitiatorPaused)),
            (Some(&[Finalizing]), S(Completing)),
            (None, JustRecord),
        ],
        E::FinishTransfer => vec![
            (None, S(TransferFinished)),
            (Some(&[Failing, Cancelling]), JustRecord),
            (Some(&[ResponderCompleted]), S(Completing)),
            (
                Some(&[ResponderFinalizing]),
                S(ResponderFinalizingTransferFinished),
            ),
            (Some(&[Requested]), S(Completing)),
        ],
        E::ResponderBeginsFinalization => vec![
            (None, S(ResponderFinalizing)),
            (Some(&[Failing, Cancelling]), JustRecord),
            (
                Some(&[TransferFinished]),
                S(ResponderFinalizingTransferFinished),
            ),
            // go-data-transfer v2: a second finalization message (the final voucher result
            // rides a Complete) keeps the status; v1.15 fell back to ResponderFinalizing
            // and so forgot that all data had arrived (found by the interop suite).
            (
                Some(&[ResponderFinalizing, ResponderFinalizingTransferFinished]),
                JustRecord,
            ),
        ],
        E::ResponderCompletes => vec![
            (None, S(ResponderCompleted)),
            (Some(&[Failing, Cancelling]), JustRecord),
            (Some(&[ResponderPaused]), S(ResponderFinalizing)),
            (Some(&[TransferFinished]), S(Completing)),
            (Some(&[ResponderFinalizing]), S(ResponderCompleted)),
            (Some(&[ResponderFinalizingTransferFinished]), S(Completing)),
        ],
        E::BeginFinalizing => vec![(None, S(Finalizing))],
        E::Complete => vec![(None, S(Completing))],
        E::CleanupComplete => vec![
            (Some(&[Cancelling]), S(Cancelled)),
            (Some(&[Failing]), S(Failed)),
            (Some(&[Completing]), S(Completed)),
        ],
        E::CompleteCleanupOnRestart => vec![(None, NoChange)],
        E::Progress | E::RequestTimedOut => vec![],
    }
}

/// go-statemachine's lookup: the exact source first, then `FromAny`.
fn expected(event: EventCode, from: Status) -> Option<To> {
    let rules = rules(event);
    rules
        .iter()
        .find(|(src, _)| src.is_some_and(|s| s.contains(&from)))
        .or_else(|| rules.iter().find(|(src, _)| src.is_none()))
        .map(|(_, to)| *to)
}

fn sample_event(code: EventCode) -> Option<ChannelEvent> {
    use ChannelEvent as C;
    use EventCode as E;
    let v = || TypedNode::new("V".into(), DagCbor::null());
    Some(match code {
        E::Open => C::Open,
        E::Accept => C::Accept,
        E::Restart => C::Restart,
        E::DataReceived => C::DataReceived { index: 3 },
        E::DataSent => C::DataSent { index: 3 },
        E::Cancel => C::Cancel,
        E::Error => C::error("boom"),
        E::CleanupComplete => C::CleanupComplete,
        E::NewVoucher => C::NewVoucher(v()),
        E::NewVoucherResult => C::NewVoucherResult(v()),
        E::PauseInitiator => C::PauseInitiator,
        E::ResumeInitiator => C::ResumeInitiator,
        E::PauseResponder => C::PauseResponder,
        E::ResumeResponder => C::ResumeResponder,
        E::FinishTransfer => C::FinishTransfer,
        E::ResponderCompletes => C::ResponderCompletes,
        E::ResponderBeginsFinalization => C::ResponderBeginsFinalization,
        E::BeginFinalizing => C::BeginFinalizing,
        E::Disconnected => C::Disconnected {
            message: "gone".into(),
        },
        E::Complete => C::Complete,
        E::CompleteCleanupOnRestart => C::CompleteCleanupOnRestart,
        E::DataQueued => C::DataQueued { index: 3 },
        E::DataQueuedProgress => C::DataQueuedProgress { bytes: 10 },
        E::DataSentProgress => C::DataSentProgress { bytes: 10 },
        E::DataReceivedProgress => C::DataReceivedProgress { bytes: 10 },
        E::RequestTimedOut => return None, // never fired by Go's FSM
        E::SendDataError => C::SendDataError {
            message: "x".into(),
        },
        E::ReceiveDataError => C::ReceiveDataError {
            message: "x".into(),
        },
        E::TransferRequestQueued => C::TransferRequestQueued,
        E::RequestCancelled => C::RequestCancelled {
            message: "x".into(),
        },
        E::Opened => C::Opened,
        E::Progress => return None, // the seed's event, not part of v1.15's FSM
    })
}

fn channel(status: Status) -> ChannelState {
    let peer = |n: u8| {
        let mut b = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        b.extend_from_slice(&[n; 32]);
        PeerId::from_bytes(&b).unwrap()
    };
    let mut st = ChannelState::new(
        ChannelId::new(peer(1), peer(2), TransferId(9)),
        peer(1),
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
fn every_event_from_every_status_matches_go() {
    let mut checked = 0;
    for code in EventCode::ALL {
        let Some(event) = sample_event(code) else {
            continue;
        };
        assert_eq!(event.code(), code);
        for from in Status::ALL {
            let mut st = channel(from);
            let before = st.clone();
            let got = transition(&mut st, &event, Timestamp(42));
            checked += 1;
            if from.is_terminal() {
                assert_eq!(
                    got,
                    Err(FsmError::Terminated {
                        status: from,
                        event: code
                    })
                );
                assert_eq!(st, before, "{code} from {from} changed a terminal channel");
                continue;
            }
            match expected(code, from) {
                None => {
                    assert_eq!(
                        got,
                        Err(FsmError::InvalidTransition {
                            status: from,
                            event: code
                        }),
                        "{code} from {from} should be refused"
                    );
                    assert_eq!(st, before, "{code} from {from}: refused but changed");
                }
                Some(to) => {
                    let t = got.unwrap_or_else(|e| panic!("{code} from {from}: {e}"));
                    let want = match to {
                        To::S(s) => s,
                        To::NoChange | To::JustRecord => from,
                    };
                    assert_eq!(st.status, want, "{code} from {from}");
                    assert_eq!(t.from, from);
                    assert_eq!(t.event.code, code);
                    assert_eq!(t.event.timestamp, Timestamp(42));
                    let cleanup = to != To::JustRecord && want.is_cleaning_up();
                    assert_eq!(t.cleanup, cleanup, "{code} from {from}: cleanup");
                }
            }
        }
    }
    assert_eq!(checked, 30 * 17);
}

#[test]
fn actions_update_the_state_as_go_does() {
    let mut st = channel(Ongoing);
    transition(
        &mut st,
        &ChannelEvent::DataSentProgress { bytes: 5 },
        Timestamp(1),
    )
    .unwrap();
    transition(
        &mut st,
        &ChannelEvent::DataQueuedProgress { bytes: 6 },
        Timestamp(1),
    )
    .unwrap();
    transition(&mut st, &ChannelEvent::DataSent { index: 4 }, Timestamp(1)).unwrap();
    transition(&mut st, &ChannelEvent::DataSent { index: 2 }, Timestamp(1)).unwrap();
    transition(
        &mut st,
        &ChannelEvent::DataQueued { index: 7 },
        Timestamp(1),
    )
    .unwrap();
    assert_eq!(
        (
            st.sent,
            st.queued,
            st.sent_blocks_total,
            st.queued_blocks_total
        ),
        (5, 6, 4, 7)
    );

    let v = TypedNode::new("V2".into(), DagCbor::null());
    transition(&mut st, &ChannelEvent::NewVoucher(v.clone()), Timestamp(2)).unwrap();
    transition(
        &mut st,
        &ChannelEvent::NewVoucherResult(v.clone()),
        Timestamp(2),
    )
    .unwrap();
    assert_eq!(st.last_voucher(), Some(&v));
    assert_eq!(st.last_voucher_result(), Some(&v));

    transition(
        &mut st,
        &ChannelEvent::Disconnected {
            message: "net down".into(),
        },
        Timestamp(3),
    )
    .unwrap();
    assert_eq!(st.message, "net down");
    // Opened (and Restart, TransferRequestQueued) clear the message.
    transition(&mut st, &ChannelEvent::Opened, Timestamp(4)).unwrap();
    assert_eq!(st.message, "");
    let logs: Vec<_> = st
        .stages
        .get("Ongoing")
        .unwrap()
        .logs
        .iter()
        .map(|l| l.log.as_str())
        .collect();
    assert_eq!(
        logs,
        [
            "sending data",
            "got new voucher",
            "got new voucher result",
            "data transfer disconnected: net down"
        ]
    );
}

#[test]
fn cleanup_runs_again_for_no_change_events_in_cleanup_states() {
    // Go re-runs the state-entry function for ToNoChange events, but not for ToJustRecord.
    let mut st = channel(Completing);
    let t = transition(
        &mut st,
        &ChannelEvent::CompleteCleanupOnRestart,
        Timestamp(1),
    )
    .unwrap();
    assert!(t.cleanup);
    let t = transition(&mut st, &ChannelEvent::Restart, Timestamp(1)).unwrap();
    assert!(!t.cleanup);
}
