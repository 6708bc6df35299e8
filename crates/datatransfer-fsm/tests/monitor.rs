//! The channel monitor: engine timers that restart stalled channels and fail those that
//! cannot be saved (go-data-transfer's `channelmonitor`).

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::time::Duration;

use datatransfer_fsm::{
    Engine, EngineConfig, HookToken, MonitorConfig, Output, TransportCommand, TransportEvent,
};
use datatransfer_sim::{Sim, SimConfig, all_selector, dag_cid, peer_id, voucher};
use datatransfer_types::message::{Message, MessageType, TransferResponse};
use datatransfer_types::{EventCode, Status, Timestamp};

fn monitor() -> MonitorConfig {
    MonitorConfig {
        accept_timeout: Duration::from_millis(50),
        queue_timeout: Duration::from_secs(120),
        stall_timeout: Duration::from_millis(20),
        restart_backoff: Duration::from_millis(5),
        max_consecutive_restarts: 3,
        complete_timeout: Duration::from_millis(200),
        responder_idle_timeout: Duration::from_secs(5),
        final_voucher_resend: Duration::from_millis(30),
    }
}

fn sim(seed: u64) -> Sim {
    let mut s = Sim::new(SimConfig {
        seed,
        nodes: 2,
        engine: EngineConfig {
            monitor: Some(monitor()),
            ..EngineConfig::default()
        },
        ..SimConfig::default()
    });
    s.add_dag(dag_cid(1), 20, 1 << 20);
    s
}

#[test]
fn a_channel_not_accepted_in_time_fails() {
    let mut e = Engine::new(
        peer_id(0),
        EngineConfig {
            monitor: Some(monitor()),
            ..EngineConfig::default()
        },
        1,
    );
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ch = e
        .open_pull(t0, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    while e.poll_output().is_some() {}
    let deadline = e.poll_timeout().unwrap();
    assert_eq!(deadline, t0.saturating_add(Duration::from_millis(50)));
    e.handle_timeout(deadline);
    let outputs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(outputs.iter().any(|o| matches!(o, Output::Transport(TransportCommand::CloseChannel { channel }) if *channel == ch)));
    let failed = outputs.iter().find_map(|o| match o {
        Output::Event { event, state } if state.status == Status::Failed => {
            Some(event.message.clone())
        }
        _ => None,
    });
    assert_eq!(
        failed.as_deref(),
        Some("data transfer channel was not accepted within 50ms")
    );
    assert_eq!(e.poll_timeout(), None, "nothing left to watch");
}

#[test]
fn a_disconnected_transfer_restarts_by_itself() {
    for seed in 0..50 {
        for pull in [true, false] {
            let mut s = sim(seed);
            let ch = if pull {
                s.open_pull(0, 1, dag_cid(1), voucher(0))
            } else {
                s.open_push(0, 1, dag_cid(1), voucher(0))
            };
            let receiver = if pull { 0 } else { 1 };
            s.run_until(1_000_000, |s| {
                s.state(receiver, &ch)
                    .is_some_and(|st| st.received >= 8 << 20)
            });
            s.disconnect(0, 1);
            s.reconnect(0, 1);
            // Nobody calls restart: the initiator's monitor does, after its backoff.
            assert!(s.run(1_000_000), "seed {seed}");
            assert_eq!(
                s.status(0, &ch),
                Status::Completed,
                "seed {seed} pull {pull}"
            );
            assert_eq!(
                s.status(1, &ch),
                Status::Completed,
                "seed {seed} pull {pull}"
            );
            assert_eq!(s.state(receiver, &ch).unwrap().received, 20 << 20);
            assert!(s.codes(0, &ch).contains(&EventCode::Restart), "seed {seed}");
            s.check_settled()
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
}

#[test]
fn a_peer_that_never_comes_back_fails_the_channel_after_the_restart_limit() {
    let mut s = sim(3);
    let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
    s.run_until(1_000_000, |s| {
        s.state(0, &ch).is_some_and(|st| st.received >= 4 << 20)
    });
    s.disconnect(0, 1);
    assert!(s.run(1_000_000));
    let st = s.state(0, &ch).unwrap();
    assert_eq!(st.status, Status::Failed);
    assert_eq!(
        st.message,
        "data transfer channel stalled: no progress after 3 consecutive restarts"
    );
}

#[test]
fn a_responder_whose_initiator_went_away_fails_the_channel_after_its_idle_timeout() {
    for pull in [true, false] {
        let mut s = sim(4);
        let ch = if pull {
            s.open_pull(0, 1, dag_cid(1), voucher(0))
        } else {
            s.open_push(0, 1, dag_cid(1), voucher(0))
        };
        s.run_until(1_000_000, |s| {
            s.state(0, &ch)
                .is_some_and(|st| st.received + st.sent >= 4 << 20)
        });
        // The initiator is gone for good: its cancel is lost with the connection.
        let gone_at = s.now();
        s.disconnect(0, 1);
        assert!(s.run(1_000_000));
        let st = s.state(1, &ch).unwrap();
        assert_eq!(st.status, Status::Failed, "pull {pull}");
        assert_eq!(
            st.message,
            format!(
                "nothing heard from the initiator {} for 5s: it went away",
                s.peer(0)
            )
        );
        let waited = Duration::from_nanos(s.now().0 - gone_at.0);
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
            "pull {pull}: ended {waited:?} after the initiator went away"
        );
        assert_eq!(s.status(0, &ch), Status::Failed);
    }
}

#[test]
fn a_responder_channel_loaded_from_the_store_is_watched_from_its_load() {
    let mut s = sim(5);
    let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
    s.run_until(1_000_000, |s| {
        s.state(1, &ch).is_some_and(|st| st.sent >= 1 << 20)
    });
    let stored = s.state(1, &ch).unwrap().clone();
    // The responder's node starts again on its store; nothing comes from the initiator.
    let mut e = Engine::new(
        peer_id(1),
        EngineConfig {
            monitor: Some(monitor()),
            ..EngineConfig::default()
        },
        2,
    );
    let t0 = Timestamp::from_unix_nanos(9_000_000_000);
    e.load_channel(t0, stored);
    assert_eq!(
        e.poll_timeout(),
        Some(t0.saturating_add(Duration::from_secs(5)))
    );
    e.handle_timeout(t0.saturating_add(Duration::from_secs(4)));
    assert_eq!(failure(&outputs(&mut e)), None, "not before its time");
    e.handle_timeout(t0.saturating_add(Duration::from_secs(5)));
    let outs = outputs(&mut e);
    assert_eq!(
        failure(&outs).as_deref(),
        Some(
            format!(
                "nothing heard from the initiator {} for 5s: it went away",
                peer_id(0)
            )
            .as_str()
        )
    );
    assert!(
        responses(&outs).contains(&(datatransfer_types::message::MessageType::Cancel, false)),
        "the initiator is told: {:?}",
        responses(&outs)
    );
    assert_eq!(e.poll_timeout(), None);
}

/// Found by the long chaos soak: a client that had every block waited for its responder's
/// completion while the responder was killed and started again; the restarts went through,
/// but the wait still counted from when the data finished, so it failed although the
/// restarted responder had had no time to complete.
#[test]
fn the_wait_for_completion_starts_again_after_a_restart() {
    let mut e = engine();
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let ch = e
        .open_pull(t0, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    let accept = TransportEvent::ResponseReceived {
        from: peer_id(1),
        response: TransferResponse::new_channel(ch.id, true, false, None),
        data_request: None,
    };
    e.handle_transport_event(t0, accept.clone());
    e.handle_transport_event(
        ms(10),
        TransportEvent::ChannelCompleted {
            channel: ch,
            result: Ok(()),
        },
    );
    outputs(&mut e);
    assert_eq!(e.channel(&ch).unwrap().status, Status::TransferFinished);
    assert_eq!(
        e.poll_timeout(),
        Some(ms(210)),
        "complete_timeout from the finish"
    );
    // The connection drops 150 ms later; the channel is restarted and the restart answered.
    e.handle_transport_event(
        ms(160),
        TransportEvent::Disconnected {
            channel: ch,
            error: "gone".into(),
        },
    );
    assert_eq!(e.poll_timeout(), Some(ms(165)), "restart_backoff");
    e.handle_timeout(ms(165));
    assert!(
        outputs(&mut e)
            .iter()
            .any(|o| matches!(o, Output::Transport(TransportCommand::OpenChannel { .. }))),
        "restarted"
    );
    e.handle_transport_event(ms(170), accept);
    outputs(&mut e);
    // The restarted responder gets the whole complete_timeout.
    assert_eq!(e.poll_timeout(), Some(ms(365)));
    e.handle_timeout(ms(364));
    assert_eq!(failure(&outputs(&mut e)), None);
    e.handle_timeout(ms(365));
    assert_eq!(
        failure(&outputs(&mut e)).as_deref(),
        Some("timed out after 200ms waiting for the responder to complete")
    );
}

/// The failure message of `ch` among `outputs`, if it failed.
fn failure(outputs: &[Output]) -> Option<String> {
    outputs.iter().find_map(|o| match o {
        Output::Event { event, state } if state.status == Status::Failed => {
            Some(event.message.clone())
        }
        _ => None,
    })
}

fn engine() -> Engine {
    Engine::new(
        peer_id(0),
        EngineConfig {
            monitor: Some(monitor()),
            ..EngineConfig::default()
        },
        1,
    )
}

#[test]
fn a_request_waiting_in_the_responders_queue_is_not_failed_for_its_accept() {
    let mut e = engine();
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ch = e
        .open_pull(t0, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    while e.poll_output().is_some() {}
    // The responder says the request waits in its queue (go-data-transfer#211: the accept
    // timer must not run meanwhile).
    let t1 = t0.saturating_add(Duration::from_millis(10));
    e.handle_transport_event(t1, TransportEvent::TransferQueued { channel: ch });
    let outputs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(outputs.iter().any(|o| matches!(o, Output::Event { event, .. } if event.code == EventCode::TransferRequestQueued)));
    let deadline = e.poll_timeout().unwrap();
    assert_eq!(deadline, t1.saturating_add(Duration::from_secs(120)));
    // Long past the accept timeout (50 ms): still waiting.
    e.handle_timeout(t0.saturating_add(Duration::from_secs(60)));
    let outputs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert_eq!(failure(&outputs), None);
    // The queue's own limit ends it, with a message that says so.
    e.handle_timeout(deadline);
    let outputs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert_eq!(
        failure(&outputs).as_deref(),
        Some("data transfer channel waited 120s in the responder's queue")
    );
}

/// A pull its responder accepted, and paused at once if `paused` (it wants a payment first).
fn accepted_pull(t0: Timestamp, paused: bool) -> (Engine, datatransfer_types::ChannelId) {
    let mut e = engine();
    let ch = e
        .open_pull(t0, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    e.handle_transport_event(
        t0,
        TransportEvent::ResponseReceived {
            from: peer_id(1),
            response: TransferResponse::new_channel(ch.id, true, paused, None),
            data_request: None,
        },
    );
    (e, ch)
}

fn paused_pull(t0: Timestamp) -> (Engine, datatransfer_types::ChannelId) {
    accepted_pull(t0, true)
}

#[test]
fn an_unanswered_restart_of_a_paused_channel_is_restarted_then_fails() {
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let (mut e, ch) = paused_pull(t0);
    while e.poll_output().is_some() {}
    assert_eq!(e.channel(&ch).unwrap().status, Status::ResponderPaused);
    assert_eq!(
        e.poll_timeout(),
        None,
        "a paused channel waits for its responder"
    );
    // The client restarts it (a process restart, say); the responder never answers.
    let mut now = t0.saturating_add(Duration::from_secs(1));
    e.restart(now, ch).unwrap();
    let mut reopened = 0;
    let message = loop {
        let outputs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
        reopened += outputs
            .iter()
            .filter(|o| matches!(o, Output::Transport(TransportCommand::OpenChannel { .. })))
            .count();
        if let Some(m) = failure(&outputs) {
            break m;
        }
        let deadline = e.poll_timeout().expect("a restart waits for its answer");
        assert_eq!(deadline, now.saturating_add(Duration::from_millis(50)));
        now = deadline;
        e.handle_timeout(now);
    };
    assert_eq!(reopened, 4, "the first restart and 3 more");
    assert_eq!(
        message,
        "the responder answered none of 3 restarts in a row, each within 50ms"
    );
}

#[test]
fn an_answered_restart_of_a_paused_channel_waits_for_its_responder_again() {
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let (mut e, ch) = paused_pull(t0);
    let t1 = t0.saturating_add(Duration::from_secs(1));
    e.restart(t1, ch).unwrap();
    assert!(e.poll_timeout().is_some());
    // The responder accepts the restart, still paused.
    e.handle_transport_event(
        t1,
        TransportEvent::ResponseReceived {
            from: peer_id(1),
            response: TransferResponse::restart(ch.id, true, true, None),
            data_request: None,
        },
    );
    while e.poll_output().is_some() {}
    assert_eq!(e.channel(&ch).unwrap().status, Status::ResponderPaused);
    assert_eq!(e.poll_timeout(), None);
}

/// Drains the engine's outputs.
fn outputs(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

/// The validation calls among `outs`, with their tokens.
fn validations(
    outs: &[Output],
) -> Vec<(
    datatransfer_fsm::ValidationToken,
    datatransfer_fsm::ValidationCall,
)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Validate { token, call } => Some((*token, call.clone())),
            _ => None,
        })
        .collect()
}

/// The responses sent among `outs`: their type and whether they accept.
fn responses(outs: &[Output]) -> Vec<(datatransfer_types::message::MessageType, bool)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendMessage {
                message: datatransfer_types::message::Message::Response(r),
                ..
            } => Some((r.message_type, r.accepted)),
            _ => None,
        })
        .collect()
}

/// A responder that crashed before it stored a channel gets the initiator's restart of it: it
/// validates the restart as a new request (told it is a restart) and takes the channel up,
/// rather than leave the transfer stranded; a copy of the restart that arrives while the
/// first is validated restarts the channel the first made.
#[test]
fn a_restart_of_a_channel_the_responder_forgot_is_validated_as_new() {
    use datatransfer_fsm::ValidationCall;
    use datatransfer_types::message::{Message, MessageType, TransferRequest};
    use datatransfer_types::{ChannelId, TransferId};
    let mut e = Engine::new(peer_id(1), EngineConfig::default(), 1);
    e.register_voucher_type(voucher(0).type_id.clone()).unwrap();
    let t = Timestamp::from_unix_nanos(1_000_000_000);
    let restart =
        || TransferRequest::restart(TransferId(7), true, voucher(0), dag_cid(1), all_selector());
    e.handle_message(t, peer_id(0), Message::Request(restart()));
    e.handle_message(t, peer_id(0), Message::Request(restart()));
    let calls = validations(&outputs(&mut e));
    assert_eq!(calls.len(), 2);
    for (_, call) in &calls {
        assert!(
            matches!(
                call,
                ValidationCall::ValidatePull {
                    is_restart: true,
                    ..
                }
            ),
            "{call:?}"
        );
    }
    let ch = ChannelId::new(peer_id(0), peer_id(1), TransferId(7));
    e.handle_validation(
        t,
        calls[0].0,
        Ok(Some(datatransfer_types::Validation::accept())),
    );
    let first = outputs(&mut e);
    assert_eq!(responses(&first), vec![(MessageType::Restart, true)]);
    assert!(e.channel(&ch).is_some());
    e.handle_validation(
        t,
        calls[1].0,
        Ok(Some(datatransfer_types::Validation::accept())),
    );
    assert_eq!(
        responses(&outputs(&mut e)),
        vec![(MessageType::Restart, true)]
    );
    assert!(e.channel(&ch).unwrap().status.is_in_progress());
}

/// Found by the chaos soak: a pull paused before its responder accepted it is re-opened on
/// resume (the pause may have cancelled the opening request before the responder looked at
/// it); paused again before the re-opened request was accepted, its next resume must re-open
/// it again. It sent an update instead, for a channel the responder never saw, which refused
/// it, and the pull failed.
#[test]
fn a_pull_paused_again_before_its_reopening_was_accepted_is_reopened_again() {
    let mut e = engine();
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ch = e
        .open_pull(t0, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    outputs(&mut e);
    let opens = |outs: &[Output]| {
        outs.iter()
            .filter(|o| matches!(o, Output::Transport(TransportCommand::OpenChannel { .. })))
            .count()
    };
    let resumes = |outs: &[Output]| {
        outs.iter()
            .filter(|o| matches!(o, Output::Transport(TransportCommand::ResumeChannel { .. })))
            .count()
    };
    for round in 0..3 {
        e.pause(t0, ch).unwrap();
        outputs(&mut e);
        e.resume(t0, ch).unwrap();
        let outs = outputs(&mut e);
        assert_eq!((opens(&outs), resumes(&outs)), (1, 0), "round {round}");
    }
    // Once the responder accepts (the re-opening, here), a pause and resume is an update.
    e.handle_transport_event(
        t0,
        TransportEvent::ResponseReceived {
            from: peer_id(1),
            response: TransferResponse::restart(ch.id, true, false, None),
            data_request: None,
        },
    );
    outputs(&mut e);
    e.pause(t0, ch).unwrap();
    outputs(&mut e);
    e.resume(t0, ch).unwrap();
    let outs = outputs(&mut e);
    assert_eq!((opens(&outs), resumes(&outs)), (0, 1));
}

#[test]
fn a_pull_cut_off_before_its_accept_is_reopened_until_the_restart_limit() {
    // The provider goes away after it accepted, before its accept reached us (the chaos soak
    // kills it there): the pull is reopened, and its original accept deadline does not fail
    // the reopened request; each reopening gets its own accept_timeout.
    let mut e = engine();
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let ch = e
        .open_pull(t0, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    outputs(&mut e);
    e.handle_transport_event(
        ms(40),
        TransportEvent::Disconnected {
            channel: ch,
            error: "gone".into(),
        },
    );
    assert_eq!(e.poll_timeout(), Some(ms(45)), "restart_backoff");
    e.handle_timeout(ms(45));
    let reopened = |outs: &[Output]| {
        outs.iter()
            .filter(|o| matches!(o, Output::Transport(TransportCommand::OpenChannel { .. })))
            .count()
    };
    assert_eq!(reopened(&outputs(&mut e)), 1);
    assert_eq!(
        e.poll_timeout(),
        Some(ms(95)),
        "the reopening's accept_timeout"
    );
    e.handle_timeout(ms(50));
    e.handle_timeout(ms(94));
    let outs = outputs(&mut e);
    assert_eq!(
        failure(&outs),
        None,
        "failed on the first request's deadline"
    );
    assert_eq!(e.channel(&ch).unwrap().status, Status::Requested);
    // Unanswered: reopened again, twice more, then failed at the restart limit.
    e.handle_timeout(ms(95));
    assert_eq!(reopened(&outputs(&mut e)), 1);
    e.handle_timeout(ms(145));
    assert_eq!(reopened(&outputs(&mut e)), 1);
    e.handle_timeout(ms(195));
    let outs = outputs(&mut e);
    assert_eq!(reopened(&outs), 0);
    assert_eq!(
        failure(&outs).as_deref(),
        Some("the responder answered none of 3 restarts in a row, each within 50ms")
    );
}

#[test]
fn a_reopened_pull_accepted_in_time_goes_on() {
    let mut e = engine();
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let ch = e
        .open_pull(t0, peer_id(1), voucher(0), dag_cid(1), all_selector())
        .unwrap();
    e.handle_transport_event(
        ms(40),
        TransportEvent::Disconnected {
            channel: ch,
            error: "gone".into(),
        },
    );
    e.handle_timeout(ms(45));
    e.handle_timeout(ms(60));
    e.handle_transport_event(
        ms(70),
        TransportEvent::ResponseReceived {
            from: peer_id(1),
            response: TransferResponse::new_channel(ch.id, true, false, None),
            data_request: None,
        },
    );
    let outs = outputs(&mut e);
    assert_eq!(failure(&outs), None);
    assert_eq!(e.channel(&ch).unwrap().status, Status::Ongoing);
}

/// A pull whose data all arrived and whose responder then paused its Complete to be paid;
/// the client pays at `ms(20)` with `voucher(7)`.
fn paying_the_finalizing_responder(t0: Timestamp) -> (Engine, datatransfer_types::ChannelId) {
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let (mut e, ch) = accepted_pull(t0, false);
    e.handle_transport_event(
        ms(10),
        TransportEvent::ChannelCompleted {
            channel: ch,
            result: Ok(()),
        },
    );
    e.handle_message(
        ms(15),
        peer_id(1),
        Message::Response(TransferResponse::complete(ch.id, true, true, None)),
    );
    assert_eq!(
        e.channel(&ch).unwrap().status,
        Status::ResponderFinalizingTransferFinished
    );
    e.send_voucher(ms(20), ch, voucher(7)).unwrap();
    assert_eq!(vouchers_sent(&outputs(&mut e)), vec![voucher(7)]);
    (e, ch)
}

/// The vouchers among `outputs`' messages.
fn vouchers_sent(outputs: &[Output]) -> Vec<datatransfer_types::Voucher> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::SendMessage {
                message: Message::Request(r),
                ..
            } => r
                .typed_voucher()
                .filter(|_| r.message_type == MessageType::Voucher),
            _ => None,
        })
        .collect()
}

/// go-data-transfer's responder sends its paused Complete before it records that it is
/// finalizing. A payment read in between is answered as an ordinary one (a voucher result,
/// not the final Complete) and the responder then waits for a payment that already came:
/// the flake of interop `we_pay_a_v1_provider_per_mib_with_finalization` (our client timed
/// out waiting for the Complete). The client sends its last voucher again until it comes.
#[test]
fn a_voucher_the_finalizing_responder_took_too_early_is_sent_again() {
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let (mut e, ch) = paying_the_finalizing_responder(t0);
    // Go's race: the payment answered as an ordinary one.
    e.handle_message(
        ms(22),
        peer_id(1),
        Message::Response(TransferResponse::voucher_result(ch.id, true, false, None)),
    );
    outputs(&mut e);
    assert_eq!(e.poll_timeout(), Some(ms(50)), "final_voucher_resend");
    e.handle_timeout(ms(49));
    assert!(vouchers_sent(&outputs(&mut e)).is_empty());
    e.handle_timeout(ms(50));
    assert_eq!(
        vouchers_sent(&outputs(&mut e)),
        vec![voucher(7)],
        "the same voucher again"
    );
    assert_eq!(
        e.channel(&ch).unwrap().vouchers.len(),
        2,
        "not recorded twice"
    );
    // Now finalizing, the responder answers with its Complete.
    e.handle_message(
        ms(55),
        peer_id(1),
        Message::Response(TransferResponse::complete(ch.id, true, false, None)),
    );
    assert_eq!(last_status(&outputs(&mut e)), Some(Status::Completed));
    assert_eq!(e.poll_timeout(), None, "nothing left to watch");
}

/// A responder that never completes gets the voucher three more times, then the channel
/// fails at its complete_timeout as before.
#[test]
fn a_finalizing_responder_that_never_completes_gets_three_copies_then_the_channel_fails() {
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let (mut e, ch) = paying_the_finalizing_responder(t0);
    let mut copies = Vec::new();
    while let Some(at) = e.poll_timeout() {
        e.handle_timeout(at);
        let outs = outputs(&mut e);
        if !vouchers_sent(&outs).is_empty() {
            copies.push(at);
        }
        if let Some(message) = failure(&outs) {
            assert_eq!(
                message,
                "timed out after 200ms waiting for the responder to complete"
            );
            // From the Complete that asked for payment (ms(15)), not from the voucher.
            assert_eq!(at, ms(215));
            break;
        }
    }
    assert_eq!(copies, vec![ms(50), ms(80), ms(110)]);
    assert!(e.channel(&ch).is_none(), "failed and forgotten");
}

/// A responder that completes in time gets no copy.
#[test]
fn a_finalizing_responder_that_completes_in_time_gets_no_copy() {
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let (mut e, ch) = paying_the_finalizing_responder(t0);
    e.handle_message(
        ms(25),
        peer_id(1),
        Message::Response(TransferResponse::complete(ch.id, true, false, None)),
    );
    let outs = outputs(&mut e);
    assert!(vouchers_sent(&outs).is_empty());
    assert_eq!(last_status(&outs), Some(Status::Completed));
    assert!(e.channel(&ch).is_none());
    assert_eq!(e.poll_timeout(), None);
}

/// The status of the last event among `outputs`.
fn last_status(outputs: &[Output]) -> Option<Status> {
    outputs.iter().rev().find_map(|o| match o {
        Output::Event { state, .. } => Some(state.status),
        _ => None,
    })
}

/// The traversal's block `index` reached the receiver; `unique` when its bytes came on the
/// wire, not from the receiver's own store.
fn block_received(
    e: &mut Engine,
    at: Timestamp,
    ch: datatransfer_types::ChannelId,
    index: u64,
    unique: bool,
) {
    e.handle_transport_event(
        at,
        TransportEvent::DataReceived {
            token: HookToken(index),
            channel: ch,
            size: 8,
            index,
            unique,
        },
    );
}

/// Whether the engine restarted the channel: it opens the transport's channel again.
fn restarted(outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::Transport(TransportCommand::OpenChannel { .. })))
}

/// lotus#4856's resumed pull: the client walks the blocks it holds (no byte on the wire) for
/// longer than the stall timeout before the missing ones come. Under load, the walk of a
/// million held blocks outlasted it, the channel was restarted five times (each restart
/// walking from the start again) and failed.
#[test]
fn walking_held_blocks_is_progress_but_walking_them_again_after_a_restart_is_not() {
    let t0 = Timestamp::from_unix_nanos(1_000_000_000);
    let ms = |n: u64| t0.saturating_add(Duration::from_millis(n));
    let (mut e, ch) = accepted_pull(t0, false);
    outputs(&mut e);
    assert_eq!(e.channel(&ch).unwrap().status, Status::Ongoing);
    // 30 held blocks, one each 10 ms: 300 ms, fifteen stall timeouts (20 ms), no restart.
    for i in 1..=30 {
        block_received(&mut e, ms(10 * i), ch, i, false);
        e.handle_timeout(ms(10 * i + 5));
        assert!(!restarted(&outputs(&mut e)), "restarted at block {i}");
    }
    // The walk stops: restarted once the stall timeout passes.
    let deadline = e.poll_timeout().unwrap();
    assert_eq!(deadline, ms(320));
    e.handle_timeout(deadline);
    assert!(restarted(&outputs(&mut e)));
    // The restarted request walks from the start again: blocks before where the first walk
    // got are no progress, and the restart limit runs on until the channel fails.
    let mut restarts = 1;
    let mut failed = None;
    for index in 1..=30 {
        let at = ms(320 + 10 * index);
        block_received(&mut e, at, ch, index, false);
        e.handle_timeout(at);
        let outs = outputs(&mut e);
        restarts += usize::from(restarted(&outs));
        failed = failure(&outs);
        if failed.is_some() {
            break;
        }
    }
    assert_eq!(restarts, 3);
    assert_eq!(
        failed.as_deref(),
        Some("data transfer channel stalled: no progress after 3 consecutive restarts")
    );
}
