//! The adapter driven by hand, as graphsync and the engine would: what each input makes it
//! do.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use super::*;
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_test_support::peer_id;
use datatransfer_types::TransferId;
use datatransfer_types::message::{TransferRequest, TransferResponse};
use datatransfer_types::{TypeIdentifier, TypedNode};

fn root() -> Cid {
    DagCbor::encode(&"the root").unwrap().cid()
}

fn selector() -> DagCbor {
    DagCbor::from_bytes(Selector::explore_all_recursively().to_dag_cbor()).unwrap()
}

fn voucher() -> TypedNode {
    TypedNode::new(TypeIdentifier::new("V"), DagCbor::encode(&1u64).unwrap())
}

const ID: TransferId = TransferId(9);

fn adapter(me: PeerId) -> Adapter {
    Adapter::new(
        me,
        Arc::new(MemoryBlockstore::new()),
        AdapterConfig::default(),
    )
}

fn actions(a: &mut Adapter) -> Vec<Action> {
    std::iter::from_fn(|| a.poll_action()).collect()
}

fn rid(n: u8) -> RequestId {
    RequestId([n; 16])
}

/// A graphsync request for the root under the selector, carrying `message`.
fn gs_request(id: RequestId, message: &Message) -> Request {
    let ext = extensions_for(message, &[EXTENSION_DATA_TRANSFER]);
    let sel = RawNode::new(selector().as_bytes().to_vec()).unwrap();
    Request::new(id, root(), sel, 0, ext)
}

fn pull() -> Message {
    Message::Request(TransferRequest::new_channel(
        ID,
        true,
        voucher(),
        root(),
        selector(),
    ))
}

/// The token of the one engine hook in `actions`.
fn token_of(actions: &[Action]) -> HookToken {
    let tokens: Vec<HookToken> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(TransportEvent::RequestReceived { token, .. })
            | Action::Deliver(TransportEvent::DataQueued { token, .. })
            | Action::Deliver(TransportEvent::DataReceived { token, .. }) => Some(*token),
            Action::Deliver(TransportEvent::ResponseReceived {
                data_request: Some(d),
                ..
            }) => Some(d.token),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 1, "{actions:?}");
    tokens[0]
}

fn answer(hook: HookId, actions: &[Action]) -> Option<&HookAnswer> {
    actions.iter().find_map(|a| match a {
        Action::Answer { hook: h, answer } if *h == hook => Some(answer),
        _ => None,
    })
}

fn reply(
    token: HookToken,
    channel: ChannelId,
    message: Option<Message>,
    result: HookResult,
) -> TransportCommand {
    TransportCommand::HookResult {
        token,
        channel,
        message,
        result,
    }
}

/// The responder's adapter with the pull from peer 1 admitted under request `rid(1)`.
fn serving() -> (Adapter, ChannelId) {
    let (me, them) = (peer_id(0), peer_id(1));
    let channel = ChannelId::new(them, me, ID);
    let mut a = adapter(me);
    a.incoming_request(HookId(1), them, &gs_request(rid(1), &pull()));
    let token = token_of(&actions(&mut a));
    a.command(reply(token, channel, None, HookResult::Continue));
    let out = actions(&mut a);
    assert!(matches!(
        answer(HookId(1), &out),
        Some(HookAnswer::Request(RequestDecision::Accept(_)))
    ));
    (a, channel)
}

/// A block of 100 bytes going out (index 1).
fn block_out() -> OutgoingBlock {
    OutgoingBlock {
        cid: root(),
        size: 100,
        sent: true,
        index: 1,
    }
}

/// Peer 1 restarts the channel with request `id` (hook `hook`), which the engine accepts;
/// returns what the request's arrival made the adapter do.
fn restarted_by(a: &mut Adapter, hook: HookId, id: RequestId, channel: ChannelId) -> Vec<Action> {
    let restart = Message::Request(TransferRequest::restart(
        ID,
        true,
        voucher(),
        root(),
        selector(),
    ));
    a.incoming_request(hook, peer_id(1), &gs_request(id, &restart));
    let out = actions(a);
    a.command(reply(token_of(&out), channel, None, HookResult::Continue));
    actions(a);
    out
}

#[test]
fn a_pull_is_put_to_the_engine_and_its_blocks_counted_on_their_way_out() {
    let (me, them) = (peer_id(0), peer_id(1));
    let channel = ChannelId::new(them, me, ID);
    let mut a = adapter(me);
    a.incoming_request(HookId(1), them, &gs_request(rid(1), &pull()));
    let out = actions(&mut a);
    assert!(
        answer(HookId(1), &out).is_none(),
        "the hook waits for the engine"
    );
    let token = token_of(&out);
    let accept = Message::Response(TransferResponse::new_channel(ID, true, false, None));
    a.command(reply(
        token,
        channel,
        Some(accept.clone()),
        HookResult::Continue,
    ));
    let out = actions(&mut a);
    let Some(HookAnswer::Request(RequestDecision::Accept(ext))) = answer(HookId(1), &out) else {
        panic!("{out:?}")
    };
    // The engine's reply rides under both names, as Go's responders send it.
    for name in [EXTENSION_INCOMING_REQUEST, EXTENSION_DATA_TRANSFER] {
        let m = message_in_extensions(ext, &[name], &DecodeLimits::default());
        assert_eq!(m, Some(Ok(accept.clone())), "{name}");
    }

    // A block going out is the engine's to count (and pause, with a message).
    let block = block_out();
    a.outgoing_block(HookId(2), them, rid(1), &block);
    let out = actions(&mut a);
    assert!(answer(HookId(2), &out).is_none());
    let token = token_of(&out);
    let ask = Message::Response(TransferResponse::voucher_result(ID, true, true, None));
    a.command(reply(token, channel, Some(ask.clone()), HookResult::Pause));
    let out = actions(&mut a);
    let Some(HookAnswer::Block(BlockDecision::Pause, ext)) = answer(HookId(2), &out) else {
        panic!("{out:?}")
    };
    assert!(
        ext.get(EXTENSION_DATA_TRANSFER).is_none(),
        "outgoing-block name only"
    );
    let m = message_in_extensions(ext, &[EXTENSION_OUTGOING_BLOCK], &DecodeLimits::default());
    assert_eq!(m, Some(Ok(ask)));

    // A block the requester has already is not news: answered at once, nothing delivered.
    let held = OutgoingBlock {
        sent: false,
        ..block.clone()
    };
    a.outgoing_block(HookId(3), them, rid(1), &held);
    let out = actions(&mut a);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(
        answer(HookId(3), &out),
        Some(HookAnswer::Block(BlockDecision::Continue, _))
    ));

    a.block_sent(them, rid(1), root(), 100);
    let out = actions(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Action::Deliver(TransportEvent::DataSent {
                index: 1,
                size: 100,
                ..
            })]
        ),
        "{out:?}"
    );
    a.completed_response(them, rid(1), ResponseStatus::RequestCompletedFull);
    let out = actions(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Action::Deliver(TransportEvent::ChannelCompleted {
                result: Ok(()),
                ..
            })]
        ),
        "{out:?}"
    );
    assert_eq!(a.open_channels(), 0);
}

#[test]
fn requests_that_do_not_open_or_continue_a_validated_channel_are_refused_unheard() {
    let them = peer_id(1);
    let rejected = |a: &mut Adapter, request: &Request| {
        a.incoming_request(HookId(1), them, request);
        let out = actions(a);
        assert_eq!(out.len(), 1, "nothing for the engine: {out:?}");
        match answer(HookId(1), &out) {
            Some(HookAnswer::Request(RequestDecision::Reject(status, _))) => *status,
            other => panic!("{other:?}"),
        }
    };
    let mut a = adapter(peer_id(0));
    // No data-transfer message at all.
    let mut bare = gs_request(rid(1), &pull());
    bare.extensions = Extensions::new();
    assert_eq!(rejected(&mut a, &bare), ResponseStatus::RequestRejected);
    // A message that does not decode.
    let mut bad = gs_request(rid(2), &pull());
    bad.extensions
        .set(EXTENSION_DATA_TRANSFER, RawNode::new(vec![0x01]).unwrap());
    assert_eq!(rejected(&mut a, &bad), ResponseStatus::RequestFailedUnknown);
    // An opening request for another root than the graphsync request asks for.
    let other = Message::Request(TransferRequest::new_channel(
        ID,
        true,
        voucher(),
        DagCbor::encode(&"another root").unwrap().cid(),
        selector(),
    ));
    assert_eq!(
        rejected(&mut a, &gs_request(rid(3), &other)),
        ResponseStatus::RequestRejected
    );
    // An update for a channel nobody opened.
    let update = Message::Request(TransferRequest::update(ID, false));
    assert_eq!(
        rejected(&mut a, &gs_request(rid(4), &update)),
        ResponseStatus::RequestRejected
    );
    assert_eq!(a.open_channels(), 0);
}

#[test]
fn a_resume_under_a_fresh_id_waits_for_the_validation_then_replaces_the_old_response() {
    let (me, them) = (peer_id(0), peer_id(1));
    let channel = ChannelId::new(them, me, ID);
    let mut a = adapter(me);
    a.incoming_request(HookId(1), them, &gs_request(rid(1), &pull()));
    let opening = token_of(&actions(&mut a));
    // The requester paused and resumed at once: its resume comes under a fresh id before
    // the opening request is validated.
    let resume = Message::Request(TransferRequest::update(ID, false));
    a.incoming_request(HookId(2), them, &gs_request(rid(2), &resume));
    assert!(actions(&mut a).is_empty(), "it waits");
    a.command(reply(opening, channel, None, HookResult::Continue));
    let out = actions(&mut a);
    assert!(matches!(
        answer(HookId(1), &out),
        Some(HookAnswer::Request(RequestDecision::Accept(_)))
    ));
    assert!(
        out.iter()
            .any(|x| matches!(x, Action::CancelResponse { id, .. } if *id == rid(1))),
        "the old response is cancelled: {out:?}"
    );
    // The resume goes to the engine now, and is answered by it.
    let token = token_of(&out);
    a.command(reply(token, channel, None, HookResult::Resume));
    let out = actions(&mut a);
    assert!(matches!(
        answer(HookId(2), &out),
        Some(HookAnswer::Request(RequestDecision::Accept(_)))
    ));

    // Without a validation, the wait ends when the shell gives up: refused.
    let mut a = adapter(me);
    a.incoming_request(HookId(1), them, &gs_request(rid(1), &pull()));
    actions(&mut a);
    a.incoming_request(HookId(2), them, &gs_request(rid(2), &resume));
    a.give_up(HookId(1)); // not waiting: nothing
    assert!(actions(&mut a).is_empty());
    a.give_up(HookId(2));
    let out = actions(&mut a);
    assert!(matches!(
        answer(HookId(2), &out),
        Some(HookAnswer::Request(RequestDecision::Reject(
            ResponseStatus::RequestRejected,
            _
        )))
    ));
}

#[test]
fn a_resume_before_the_request_is_sent_with_its_first_response() {
    let (me, them) = (peer_id(0), peer_id(1));
    let channel = ChannelId::new(them, me, ID);
    let mut a = adapter(me);
    let result = Message::Response(TransferResponse::voucher_result(ID, true, false, None));
    a.command(TransportCommand::ResumeChannel {
        channel,
        message: Some(result.clone()),
    });
    assert!(actions(&mut a).is_empty(), "nothing to resume yet");
    a.incoming_request(HookId(1), them, &gs_request(rid(1), &pull()));
    let token = token_of(&actions(&mut a));
    a.command(reply(token, channel, None, HookResult::Pause));
    let out = actions(&mut a);
    let Some(HookAnswer::Request(RequestDecision::Pause(ext))) = answer(HookId(1), &out) else {
        panic!("{out:?}")
    };
    let m = message_in_extensions(ext, &[EXTENSION_DATA_TRANSFER], &DecodeLimits::default());
    assert_eq!(m, Some(Ok(result)));
}

#[test]
fn the_blocks_of_a_response_a_restart_replaced_are_not_the_channels() {
    let (mut a, channel) = serving();
    let them = peer_id(1);
    let out = restarted_by(&mut a, HookId(2), rid(2), channel);
    assert!(
        out.iter()
            .any(|x| matches!(x, Action::CancelResponse { id, .. } if *id == rid(1))),
        "the old response is cancelled: {out:?}"
    );
    let block = block_out();
    // A block the old one still writes goes out unheard by the engine: its pause would
    // stop the old response, not the current one.
    a.outgoing_block(HookId(3), them, rid(1), &block);
    let out = actions(&mut a);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(
        answer(HookId(3), &out),
        Some(HookAnswer::Block(BlockDecision::Continue, _))
    ));
    // The current response's blocks are the engine's, as ever.
    a.outgoing_block(HookId(4), them, rid(2), &block);
    let out = actions(&mut a);
    assert!(answer(HookId(4), &out).is_none(), "{out:?}");
    token_of(&out);
}

#[test]
fn a_pause_decided_for_a_response_replaced_meanwhile_pauses_the_current_one() {
    let (mut a, channel) = serving();
    let them = peer_id(1);
    // A block of the first response goes to the engine...
    a.outgoing_block(HookId(2), them, rid(1), &block_out());
    let block_token = token_of(&actions(&mut a));
    // ...and a restart replaces that response before the engine answers.
    restarted_by(&mut a, HookId(3), rid(2), channel);
    // The engine pauses the channel on that block, asking for payment.
    let ask = Message::Response(TransferResponse::voucher_result(ID, true, true, None));
    a.command(reply(
        block_token,
        channel,
        Some(ask.clone()),
        HookResult::Pause,
    ));
    let out = actions(&mut a);
    assert!(matches!(
        answer(HookId(2), &out),
        Some(HookAnswer::Block(BlockDecision::Pause, _))
    ));
    let sent = out.iter().find_map(|x| match x {
        Action::SendExtensions { id, extensions, .. } if *id == rid(2) => Some(extensions),
        _ => None,
    });
    let m = sent
        .map(|e| message_in_extensions(e, &[EXTENSION_DATA_TRANSFER], &DecodeLimits::default()));
    assert_eq!(m, Some(Some(Ok(ask))), "{out:?}");
    let paused = out
        .iter()
        .position(|x| matches!(x, Action::PauseResponse { id, .. } if *id == rid(2)));
    let told = out
        .iter()
        .position(|x| matches!(x, Action::SendExtensions { .. }));
    assert!(
        told < paused && paused.is_some(),
        "told, then paused: {out:?}"
    );
}

#[test]
fn a_response_that_ends_short_is_our_failure_and_a_replaced_one_says_nothing() {
    let (mut a, channel) = serving();
    a.completed_response(peer_id(1), rid(1), ResponseStatus::RequestCompletedPartial);
    let out = actions(&mut a);
    let [
        Action::Deliver(TransportEvent::ChannelCompleted {
            channel: c,
            result: Err(f),
        }),
    ] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(*c, channel);
    assert!(matches!(f, Fault::LocalFailure(_)), "{f:?}");

    // A cancelled response is a pause or a cancel the engine hears of otherwise.
    let (mut a, _) = serving();
    a.completed_response(peer_id(1), rid(1), ResponseStatus::RequestCancelled);
    assert!(actions(&mut a).is_empty());
    assert_eq!(a.open_channels(), 1);
}

#[test]
fn the_engine_pauses_steers_and_closes_the_responses_it_serves() {
    let (mut a, channel) = serving();
    let them = peer_id(1);
    a.command(TransportCommand::PauseChannel { channel });
    let out = actions(&mut a);
    assert!(matches!(out.as_slice(), [Action::PauseResponse { id, .. }] if *id == rid(1)));
    // An update with a voucher goes to the engine, whose answer goes back on the response.
    let v = Message::Request(TransferRequest::voucher(ID, voucher()));
    let mut update = gs_request(rid(1), &v);
    update.root = None;
    a.request_updated(them, &update);
    let token = token_of(&actions(&mut a));
    let result = Message::Response(TransferResponse::voucher_result(ID, true, false, None));
    a.command(reply(token, channel, Some(result), HookResult::Continue));
    let out = actions(&mut a);
    assert!(
        matches!(out.as_slice(), [Action::SendExtensions { id, extensions, .. }] if *id == rid(1) && extensions.get(EXTENSION_DATA_TRANSFER).is_some()),
        "{out:?}"
    );
    a.command(TransportCommand::CloseChannel { channel });
    let out = actions(&mut a);
    assert!(matches!(out.as_slice(), [Action::CancelResponse { id, .. }] if *id == rid(1)));
    assert_eq!(a.open_channels(), 0);
}

/// The initiator's adapter with a pull of `data_sender` opened (request `attempt` 1 sent and
/// taken by graphsync as `rid(7)`).
fn pulling(config: AdapterConfig) -> (Adapter, ChannelId) {
    let (me, them) = (peer_id(0), peer_id(1));
    let channel = ChannelId::new(me, them, ID);
    let mut a = Adapter::new(me, Arc::new(MemoryBlockstore::new()), config);
    a.command(TransportCommand::OpenChannel {
        data_sender: them,
        channel,
        root: root(),
        selector: selector(),
        message: pull(),
        restart: None,
    });
    let out = actions(&mut a);
    let [Action::SendRequest(r)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((r.attempt, r.to, r.root), (1, them, root()));
    assert!(
        r.skip_held,
        "a new channel skips the blocks at hand by default"
    );
    assert!(a.request_started(channel, 1, rid(7)));
    a.outgoing_request(them, &gs_request(rid(7), &pull()));
    let out = actions(&mut a);
    assert!(matches!(
        out.as_slice(),
        [Action::Deliver(TransportEvent::ChannelOpened { .. })]
    ));
    (a, channel)
}

fn busy() -> Result<ResponseStatus, GraphSyncError> {
    Err(GraphSyncError::Verify(VerifyError::Failed(
        ResponseStatus::RequestFailedBusy,
    )))
}

#[test]
fn a_busy_responder_is_asked_again_later_until_the_channel_closes() {
    let config = AdapterConfig {
        busy_retry_backoff: Duration::from_millis(100),
        ..AdapterConfig::default()
    };
    let (mut a, channel) = pulling(config);
    a.request_finished(channel, 1, rid(7), busy());
    let out = actions(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [
                Action::Deliver(TransportEvent::TransferQueued { .. }),
                Action::ReopenAfter { attempt: 1, wait, .. }
            ] if *wait == Duration::from_millis(100)
        ),
        "{out:?}"
    );
    a.reopen(channel, 1);
    let out = actions(&mut a);
    assert!(
        matches!(out.as_slice(), [Action::SendRequest(r)] if r.attempt == 2),
        "{out:?}"
    );
    assert!(a.request_started(channel, 2, rid(8)));
    a.request_finished(channel, 2, rid(8), busy());
    let out = actions(&mut a);
    assert!(
        out.iter().any(|x| matches!(x, Action::ReopenAfter { attempt: 2, wait, .. } if *wait == Duration::from_millis(200))),
        "the wait doubles: {out:?}"
    );
    // Closed while waiting: the retry does nothing.
    a.command(TransportCommand::CloseChannel { channel });
    actions(&mut a);
    a.reopen(channel, 2);
    assert!(actions(&mut a).is_empty());
    assert_eq!(a.open_channels(), 0);
}

#[test]
fn a_responder_busy_too_often_fails_the_channel() {
    let config = AdapterConfig {
        max_busy_retries: 0,
        ..AdapterConfig::default()
    };
    let (mut a, channel) = pulling(config);
    a.request_finished(channel, 1, rid(7), busy());
    assert_fails_for_the_peer(actions(&mut a));
}

/// The only thing done: the channel reported failed, by the peer's fault.
fn assert_fails_for_the_peer(out: Vec<Action>) {
    assert!(
        matches!(
            out.as_slice(),
            [Action::Deliver(TransportEvent::ChannelCompleted {
                result: Err(Fault::PeerFailed(_)),
                ..
            })]
        ),
        "{out:?}"
    );
}

fn rejected() -> Result<ResponseStatus, GraphSyncError> {
    Err(GraphSyncError::Verify(VerifyError::Failed(
        ResponseStatus::RequestRejected,
    )))
}

#[test]
fn a_refused_request_fails_the_channel_unless_it_was_a_resume() {
    // The opening request refused: the responder's verdict on the channel.
    let (mut a, channel) = pulling(AdapterConfig::default());
    a.request_finished(channel, 1, rid(7), rejected());
    assert_fails_for_the_peer(actions(&mut a));
    // Paused and resumed (graphsync asks again under a fresh id), then refused: the
    // responder no longer serves the channel's request; a restart asks anew.
    let (mut a, channel) = pulling(AdapterConfig::default());
    a.command(TransportCommand::PauseChannel { channel });
    a.command(TransportCommand::ResumeChannel {
        channel,
        message: None,
    });
    let out = actions(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Action::PauseRequest { .. }, Action::UnpauseRequest { .. }]
        ),
        "{out:?}"
    );
    a.request_finished(channel, 1, rid(7), rejected());
    let out = actions(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Action::Deliver(TransportEvent::Disconnected { error, .. })]
                if error.contains("resuming")
        ),
        "{out:?}"
    );
}

#[test]
fn a_complete_request_completes_the_channel_once_its_blocks_are_flushed() {
    let (mut a, channel) = pulling(AdapterConfig::default());
    a.request_finished(channel, 1, rid(7), Ok(ResponseStatus::RequestCompletedFull));
    let out = actions(&mut a);
    assert!(matches!(out.as_slice(), [Action::Flush { .. }]), "{out:?}");
    a.flushed(channel, Err("no space left on device".into()));
    let out = actions(&mut a);
    let [Action::Deliver(TransportEvent::ChannelCompleted { result: Err(f), .. })] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert!(
        f.is_local() && f.to_string().contains("no space left"),
        "{f}"
    );
}

#[test]
fn a_block_the_engine_refuses_cancels_our_request_whose_end_goes_unreported() {
    let (mut a, channel) = pulling(AdapterConfig::default());
    let block = IncomingBlock {
        cid: root(),
        size: 10,
        present: true,
        on_wire: true,
        index: 1,
    };
    a.incoming_block(rid(7), &block);
    let token = token_of(&actions(&mut a));
    a.command(reply(
        token,
        channel,
        None,
        HookResult::Fail(Fault::rejected("no")),
    ));
    let out = actions(&mut a);
    assert!(
        matches!(out.as_slice(), [Action::CancelRequest { attempt: 1, .. }]),
        "{out:?}"
    );
    a.request_finished(channel, 1, rid(7), Err(GraphSyncError::Cancelled));
    assert!(actions(&mut a).is_empty());
}

#[test]
fn a_restart_replaces_the_request_in_flight_and_its_end_goes_unreported() {
    let (mut a, channel) = pulling(AdapterConfig::default());
    a.command(TransportCommand::OpenChannel {
        data_sender: peer_id(1),
        channel,
        root: root(),
        selector: selector(),
        message: pull(),
        restart: None,
    });
    let out = actions(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Action::CancelRequest { attempt: 1, .. }, Action::SendRequest(r)] if r.attempt == 2
        ),
        "{out:?}"
    );
    assert!(
        !a.request_started(channel, 1, rid(7)),
        "the old request is not wanted"
    );
    a.request_finished(channel, 1, rid(7), Err(GraphSyncError::Cancelled));
    assert!(actions(&mut a).is_empty());
    a.request_failed(channel, 2, "peer unreachable".into());
    let out = actions(&mut a);
    assert!(
        matches!(out.as_slice(), [Action::Deliver(TransportEvent::OpenFailed { error, .. })] if error == "peer unreachable"),
        "{out:?}"
    );
}

#[test]
fn a_network_error_reaches_the_channels_with_that_peer_only() {
    let (mut a, receiving) = pulling(AdapterConfig::default());
    a.incoming_request(HookId(1), peer_id(1), &gs_request(rid(1), &pull()));
    let token = token_of(&actions(&mut a));
    let sending = ChannelId::new(peer_id(1), peer_id(0), ID);
    a.command(reply(token, sending, None, HookResult::Continue));
    actions(&mut a);
    a.network_error(peer_id(2), "reset");
    assert!(actions(&mut a).is_empty());
    a.network_error(peer_id(1), "reset");
    let out = actions(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [
                Action::Deliver(TransportEvent::SendDataError { channel: s, .. }),
                Action::Deliver(TransportEvent::ReceiveDataError { channel: r, .. })
            ] if *s == sending && *r == receiving
        ),
        "{out:?}"
    );
}

#[test]
fn shutdown_answers_every_hook_that_waits_and_ignores_what_follows() {
    let (mut a, channel) = serving();
    let block = OutgoingBlock {
        cid: root(),
        size: 1,
        sent: true,
        index: 1,
    };
    a.outgoing_block(HookId(5), peer_id(1), rid(1), &block);
    actions(&mut a);
    a.incoming_request(HookId(6), peer_id(2), &gs_request(rid(2), &pull()));
    actions(&mut a);
    a.shutdown();
    let out = actions(&mut a);
    assert!(matches!(
        answer(HookId(5), &out),
        Some(HookAnswer::Block(BlockDecision::Pause, _))
    ));
    assert!(matches!(
        answer(HookId(6), &out),
        Some(HookAnswer::Request(RequestDecision::Reject(..)))
    ));
    assert!(
        out.iter().all(|x| !matches!(x, Action::Deliver(_))),
        "{out:?}"
    );
    a.command(TransportCommand::PauseChannel { channel });
    assert!(actions(&mut a).is_empty());
    a.incoming_request(HookId(7), peer_id(2), &gs_request(rid(3), &pull()));
    let out = actions(&mut a);
    assert!(matches!(
        answer(HookId(7), &out),
        Some(HookAnswer::Request(RequestDecision::Reject(..)))
    ));
}

#[test]
fn a_pause_and_a_resume_before_graphsync_takes_the_request_follow_it() {
    let (me, them) = (peer_id(0), peer_id(1));
    let channel = ChannelId::new(me, them, ID);
    let mut a = adapter(me);
    a.command(TransportCommand::OpenChannel {
        data_sender: them,
        channel,
        root: root(),
        selector: selector(),
        message: pull(),
        restart: None,
    });
    actions(&mut a);
    // An accepted push's paused start, say: the pause comes before the request is taken.
    a.command(TransportCommand::PauseChannel { channel });
    let result = Message::Response(TransferResponse::voucher_result(ID, true, false, None));
    a.command(TransportCommand::ResumeChannel {
        channel,
        message: Some(result.clone()),
    });
    assert!(actions(&mut a).is_empty(), "nothing to pause yet");
    assert!(a.request_started(channel, 1, rid(7)));
    let out = actions(&mut a);
    let [
        Action::PauseRequest { attempt: 1, .. },
        Action::UnpauseRequest {
            attempt: 1,
            extensions,
            ..
        },
    ] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    let m = message_in_extensions(
        extensions,
        &[EXTENSION_DATA_TRANSFER],
        &DecodeLimits::default(),
    );
    assert_eq!(
        m,
        Some(Ok(result)),
        "the resume's message goes with it, not to a stash"
    );
}

#[test]
fn shutdown_refuses_a_resume_that_its_refused_validation_released() {
    let (me, them) = (peer_id(0), peer_id(1));
    let mut a = adapter(me);
    // A push's responder asks for the data; while that is validated, it resumes under a
    // fresh request id.
    let accepted = Message::Response(TransferResponse::new_channel(ID, true, false, None));
    a.incoming_request(HookId(1), them, &gs_request(rid(1), &accepted));
    token_of(&actions(&mut a));
    let resume = Message::Response(TransferResponse::update(ID, false));
    a.incoming_request(HookId(2), them, &gs_request(rid(2), &resume));
    assert!(actions(&mut a).is_empty(), "it waits");
    a.shutdown();
    let out = actions(&mut a);
    for hook in [HookId(1), HookId(2)] {
        assert!(
            matches!(
                answer(hook, &out),
                Some(HookAnswer::Request(RequestDecision::Reject(..)))
            ),
            "{hook:?}: {out:?}"
        );
    }
    assert!(
        out.iter().all(|x| matches!(x, Action::Answer { .. })),
        "{out:?}"
    );
}
