//! Responses that arrive out of the order the responder sent them.
//!
//! go-data-transfer v2 sends each message on a stream of its own, so a requester can read two
//! of them in either order. A pull whose responder asks for finalization ends with two
//! Completes: the paused one (all data sent, settle now), then, once settled, the final one
//! with the last voucher result. Read the other way round, Go's requester goes back from
//! ResponderCompleted to ResponderFinalizing and waits for a finalization that already came.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_fsm::{Engine, EngineConfig, Output, TransportEvent};
use datatransfer_sim::{all_selector, dag_cid, peer_id, voucher};
use datatransfer_types::message::{Message, MessageType, TransferResponse};
use datatransfer_types::{ChannelId, Status, Timestamp, TypeIdentifier};

fn response(id: &ChannelId, message_type: MessageType, paused: bool) -> Message {
    Message::Response(TransferResponse {
        message_type,
        transfer_id: id.id,
        accepted: true,
        paused,
        voucher_result: None,
        voucher_result_type: TypeIdentifier::EMPTY,
    })
}

/// The requester's statuses after a pull is accepted and then sees `completes` (the `paused`
/// flag of each Complete, in the order read) and the end of its data.
fn pull_ending_with(completes: &[bool]) -> Vec<Status> {
    let mut e = Engine::new(peer_id(0), EngineConfig::default(), 1);
    let mut now = Timestamp::from_unix_nanos(1_000_000_000);
    let id = e
        .open_pull(now, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    e.handle_message(now, peer_id(1), response(&id, MessageType::New, false));
    for &paused in completes {
        now = now.saturating_add(std::time::Duration::from_millis(1));
        e.handle_message(
            now,
            peer_id(1),
            response(&id, MessageType::Complete, paused),
        );
    }
    e.handle_transport_event(
        now,
        TransportEvent::ChannelCompleted {
            channel: id,
            result: Ok(()),
        },
    );
    std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::Event { state, .. } if state.channel_id == id => Some(state.status),
            _ => None,
        })
        .collect()
}

#[test]
fn finalization_then_completion_in_the_order_sent_completes() {
    let statuses = pull_ending_with(&[true, false]);
    assert_eq!(statuses.last(), Some(&Status::Completed), "{statuses:?}");
}

#[test]
fn a_completion_read_before_the_older_finalization_still_completes() {
    let statuses = pull_ending_with(&[false, true]);
    assert_eq!(statuses.last(), Some(&Status::Completed), "{statuses:?}");
    assert!(
        !statuses.contains(&Status::ResponderFinalizing),
        "the stale finalization took the channel back: {statuses:?}"
    );
}
