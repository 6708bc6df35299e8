//! Requests parsed once into what they ask for: a request typed as only a response may be
//! (Complete, VoucherResult) is refused, not taken for a pause or a resume.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_fsm::{Engine, EngineConfig, Output, accept};
use datatransfer_sim::{VOUCHER_TYPE, all_selector, dag_cid, peer_id, voucher};
use datatransfer_types::message::{Message, MessageType, TransferRequest, TransferResponse};
use datatransfer_types::{EventCode, Timestamp, TransferId};

fn outputs(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

/// An engine asked by peer 1 to open channel 7 (a pull if `pull`, else a push), the
/// request waiting for its validation under the token returned.
fn asked(pull: bool) -> (Engine, datatransfer_fsm::ValidationToken) {
    let mut e = Engine::new(peer_id(0), EngineConfig::default(), 1);
    e.register_voucher_type(VOUCHER_TYPE.into()).unwrap();
    let now = Timestamp::from_unix_nanos(1_000_000_000);
    let open =
        TransferRequest::new_channel(TransferId(7), pull, voucher(1), dag_cid(1), all_selector());
    e.handle_message(now, peer_id(1), Message::Request(open));
    let token = outputs(&mut e)
        .into_iter()
        .find_map(|o| match o {
            Output::Validate { token, .. } => Some(token),
            _ => None,
        })
        .unwrap();
    (e, token)
}

/// An engine that responds to a push from peer 1, accepted.
fn responder() -> Engine {
    let (mut e, token) = asked(false);
    let now = Timestamp::from_unix_nanos(1_000_000_000);
    e.handle_validation(now, token, accept());
    outputs(&mut e);
    e
}

fn responses(outs: &[Output]) -> Vec<TransferResponse> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendMessage {
                message: Message::Response(r),
                ..
            } => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_typed_as_a_response_is_refused_not_taken_for_a_pause() {
    for odd in [MessageType::Complete, MessageType::VoucherResult] {
        let mut e = responder();
        let mut req = TransferRequest::update(TransferId(7), true);
        req.message_type = odd;
        let now = Timestamp::from_unix_nanos(2_000_000_000);
        e.handle_message(now, peer_id(1), Message::Request(req));
        let outs = outputs(&mut e);
        let paused = outs.iter().any(
            |o| matches!(o, Output::Event { event, .. } if event.code == EventCode::PauseInitiator),
        );
        assert!(!paused, "{odd:?} taken for a pause");
        let refused = responses(&outs);
        assert_eq!(refused.len(), 1, "{odd:?}: {outs:?}");
        assert!(!refused[0].accepted);
    }
    // An Update still pauses.
    let mut e = responder();
    let now = Timestamp::from_unix_nanos(2_000_000_000);
    e.handle_message(
        now,
        peer_id(1),
        Message::Request(TransferRequest::update(TransferId(7), true)),
    );
    assert!(outputs(&mut e).iter().any(|o| {
        matches!(o, Output::Event { event, .. } if event.code == EventCode::PauseInitiator)
    }));
}

#[test]
fn a_pause_that_overtakes_the_validation_of_its_opening_request_closes_nothing() {
    // Found by the chaos soak: a client paused a pull right after opening it; its pause
    // reached the provider while the opening request was validated, was refused as about an
    // unknown channel, and the refusal closed the channel's transport under the validation.
    let (mut e, token) = asked(true);
    let now = Timestamp::from_unix_nanos(1_000_000_000);
    e.handle_message(
        now,
        peer_id(1),
        Message::Request(TransferRequest::update(TransferId(7), true)),
    );
    let outs = outputs(&mut e);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Transport(_))),
        "{outs:?}"
    );
    assert!(responses(&outs).is_empty(), "{outs:?}");
    // The validation's accept opens the channel as usual.
    e.handle_validation(now, token, accept());
    let outs = outputs(&mut e);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Event { event, .. } if event.code == EventCode::Accept)),
        "{outs:?}"
    );
    // An update about a channel no one opened is still refused.
    e.handle_message(
        now,
        peer_id(1),
        Message::Request(TransferRequest::update(TransferId(8), true)),
    );
    let outs = outputs(&mut e);
    assert!(
        outs.iter().any(|o| matches!(
            o,
            Output::Transport(datatransfer_fsm::TransportCommand::CloseChannel { .. })
        )),
        "{outs:?}"
    );
}
