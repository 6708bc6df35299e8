//! Simulator scenarios: whole protocol runs between engines over an in-memory network, each
//! engine with the graphsync transport's adapter over a simulated graphsync, each for many
//! seeds. `SIM_SEEDS=n` runs more seeds than the default.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_sim::{Policy, Sim, SimConfig, dag_cid, unknown_voucher, voucher};
use datatransfer_types::message::TransferRequest;
use datatransfer_types::{ChannelId, EventCode, Status};

fn seeds(default: u64) -> std::ops::Range<u64> {
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    0..n
}

fn sim(seed: u64, nodes: usize) -> Sim {
    let mut s = Sim::new(SimConfig {
        seed,
        nodes,
        ..SimConfig::default()
    });
    s.add_dag(dag_cid(1), 20, 1 << 20);
    s
}

/// Runs to quiescence and checks the settled invariants, naming the seed on failure.
fn settle(s: &mut Sim, seed: u64) {
    assert!(s.run(1_000_000), "seed {seed}: did not go quiet");
    if let Err(e) = s.check_settled() {
        panic!("seed {seed}: {e}");
    }
}

#[test]
fn pull_round_trip() {
    for seed in seeds(200) {
        let mut s = sim(seed, 2);
        let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
        settle(&mut s, seed);
        assert_eq!(s.status(0, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.status(1, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.state(0, &ch).unwrap().received, 20 << 20);
        assert_eq!(s.state(1, &ch).unwrap().sent, 20 << 20);
        assert_eq!(s.state(1, &ch).unwrap().queued, 20 << 20);
        assert_eq!(s.state(0, &ch).unwrap().received_blocks_total, 20);
    }
}

#[test]
fn push_round_trip() {
    for seed in seeds(200) {
        let mut s = sim(seed, 2);
        let ch = s.open_push(0, 1, dag_cid(1), voucher(0));
        settle(&mut s, seed);
        assert_eq!(s.status(0, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.status(1, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.state(1, &ch).unwrap().received, 20 << 20);
        assert_eq!(s.state(0, &ch).unwrap().sent, 20 << 20);
    }
}

#[test]
fn pull_events_on_the_initiator_start_and_end_as_go_does() {
    let mut s = sim(7, 2);
    let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
    settle(&mut s, 7);
    let codes = s.codes(0, &ch);
    assert_eq!(
        &codes[..3],
        &[EventCode::Open, EventCode::Opened, EventCode::Accept]
    );
    assert_eq!(codes.last(), Some(&EventCode::CleanupComplete));
    let received = codes
        .iter()
        .filter(|c| **c == EventCode::DataReceivedProgress)
        .count();
    assert_eq!(received, 20);
    assert!(codes.contains(&EventCode::FinishTransfer));
    assert!(codes.contains(&EventCode::ResponderCompletes));
}

#[test]
fn unrecognized_voucher_is_rejected() {
    for seed in seeds(50) {
        let mut s = sim(seed, 2);
        let pull = s.open_pull(0, 1, dag_cid(1), unknown_voucher());
        let push = s.open_push(0, 1, dag_cid(1), unknown_voucher());
        settle(&mut s, seed);
        for ch in [pull, push] {
            assert_eq!(s.status(0, &ch), Status::Failed, "seed {seed}");
            assert_eq!(
                s.status(1, &ch),
                Status::ChannelNotFoundError,
                "seed {seed}"
            );
            assert_eq!(s.state(0, &ch).unwrap().message, "response rejected");
        }
    }
}

#[test]
fn validator_rejection_fails_the_initiator() {
    for seed in seeds(50) {
        let mut s = sim(seed, 2);
        s.nodes[1].policy.reject_all = true;
        let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
        settle(&mut s, seed);
        assert_eq!(s.status(0, &ch), Status::Failed, "seed {seed}");
    }
}

#[test]
fn pay_per_byte_retrieval_with_ten_revalidations_and_finalization() {
    for seed in seeds(200) {
        let mut s = sim(seed, 2);
        s.nodes[1].policy = Policy {
            pay_interval: Some(2 << 20),
            finalize: true,
            ..Policy::default()
        };
        let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
        settle(&mut s, seed);
        assert_eq!(s.status(0, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.status(1, &ch), Status::Completed, "seed {seed}");
        // 20 MiB at 2 MiB per payment: 10 payment requests, plus the final one.
        assert_eq!(s.nodes[1].revalidations, 11, "seed {seed}");
        let client = s.state(0, &ch).unwrap();
        assert_eq!(
            client.vouchers.len(),
            12,
            "seed {seed}: first voucher + 11 payments"
        );
        assert_eq!(client.received, 20 << 20);
        let codes = s.codes(0, &ch);
        assert!(
            codes.contains(&EventCode::ResponderBeginsFinalization),
            "seed {seed}"
        );
        let provider = s.codes(1, &ch);
        assert!(
            provider.contains(&EventCode::BeginFinalizing),
            "seed {seed}"
        );
    }
}

#[test]
fn push_with_revalidation_by_the_receiver() {
    for seed in seeds(100) {
        let mut s = sim(seed, 2);
        s.nodes[1].policy = Policy {
            pay_interval: Some(4 << 20),
            ..Policy::default()
        };
        let ch = s.open_push(0, 1, dag_cid(1), voucher(0));
        settle(&mut s, seed);
        assert_eq!(s.status(0, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.status(1, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.nodes[1].revalidations, 5, "seed {seed}");
    }
}

#[test]
fn three_pauses_and_resumes_from_both_sides() {
    for seed in seeds(200) {
        for pull in [true, false] {
            let mut s = sim(seed, 2);
            let ch = if pull {
                s.open_pull(0, 1, dag_cid(1), voucher(0))
            } else {
                s.open_push(0, 1, dag_cid(1), voucher(0))
            };
            for round in 0..3u64 {
                let side = ((seed + round) % 2) as usize;
                // Let some data flow, then pause from one side and resume later.
                s.run_until(1_000_000, |s| {
                    s.state(1 - side, &ch)
                        .is_some_and(|st| st.status == Status::Ongoing)
                        && s.state(0, &ch)
                            .is_some_and(|st| st.received + st.sent >= (round + 1) * (4 << 20))
                });
                if s.state(side, &ch).is_none_or(|st| st.status.is_terminal()) {
                    break;
                }
                s.with_engine(side, |e, now| e.pause(now, ch).unwrap());
                s.run_until(200, |_| false);
                let paused = s.status(side, &ch);
                assert!(
                    paused.is_paused() || !paused.is_in_progress(),
                    "seed {seed} pull {pull}: {paused}"
                );
                s.with_engine(side, |e, now| e.resume(now, ch).unwrap());
            }
            settle(&mut s, seed);
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
            let codes: Vec<_> = s.codes(0, &ch);
            assert!(
                codes
                    .iter()
                    .filter(|c| matches!(c, EventCode::PauseInitiator | EventCode::PauseResponder))
                    .count()
                    >= 1,
                "seed {seed}"
            );
        }
    }
}

#[test]
fn cancel_from_either_side_mid_transfer() {
    for seed in seeds(200) {
        for canceller in [0usize, 1] {
            let mut s = sim(seed, 2);
            let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
            s.run_until(1_000_000, |s| {
                s.state(0, &ch).is_some_and(|st| st.received >= 5 << 20)
            });
            s.close(canceller, ch);
            settle(&mut s, seed);
            assert_eq!(
                s.status(0, &ch),
                Status::Cancelled,
                "seed {seed} by {canceller}"
            );
            assert_eq!(
                s.status(1, &ch),
                Status::Cancelled,
                "seed {seed} by {canceller}"
            );
            assert!(s.state(0, &ch).unwrap().received < 20 << 20);
        }
    }
}

#[test]
fn restart_after_a_disconnect() {
    for seed in seeds(200) {
        for pull in [true, false] {
            let mut s = sim(seed, 2);
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
            s.run(1_000_000);
            assert!(
                s.status(0, &ch).is_in_progress(),
                "seed {seed}: {}",
                s.status(0, &ch)
            );
            s.reconnect(0, 1);
            s.with_engine(0, |e, now| e.restart(now, ch).unwrap());
            settle(&mut s, seed);
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
            let st = s.state(receiver, &ch).unwrap();
            assert_eq!(
                st.received,
                20 << 20,
                "seed {seed} pull {pull}: every byte counted once"
            );
            // As go-data-transfer reports a broken graphsync connection: a request of ours
            // that failed is a disconnect, a response we were sending a send-data error.
            let codes = s.codes(0, &ch);
            let broken = if pull {
                EventCode::Disconnected
            } else {
                EventCode::SendDataError
            };
            assert!(
                codes.contains(&broken) && codes.contains(&EventCode::Restart),
                "seed {seed} pull {pull}: {codes:?}"
            );
        }
    }
}

#[test]
fn restart_requested_by_the_responder() {
    for seed in seeds(100) {
        let mut s = sim(seed, 2);
        let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
        s.run_until(1_000_000, |s| {
            s.state(0, &ch).is_some_and(|st| st.received >= 8 << 20)
        });
        s.disconnect(0, 1);
        s.run(1_000_000);
        s.reconnect(0, 1);
        // The responder asks the initiator to restart (RestartExistingChannelRequest).
        s.with_engine(1, |e, now| e.restart(now, ch).unwrap());
        settle(&mut s, seed);
        assert_eq!(s.status(0, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.status(1, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.state(0, &ch).unwrap().received, 20 << 20);
    }
}

#[test]
fn thousand_concurrent_channels_between_ten_nodes() {
    for seed in seeds(3) {
        let mut s = Sim::new(SimConfig {
            seed,
            nodes: 10,
            reorder: true,
            ..SimConfig::default()
        });
        s.add_dag(dag_cid(1), 4, 256 << 10);
        let mut channels = Vec::new();
        for k in 0..1000u64 {
            let a = s.rng().range(0, 9) as usize;
            let b = (a + 1 + s.rng().range(0, 8) as usize) % 10;
            let ch = if k % 2 == 0 {
                s.open_pull(a, b, dag_cid(1), voucher(0))
            } else {
                s.open_push(a, b, dag_cid(1), voucher(0))
            };
            channels.push((a, b, ch));
        }
        settle(&mut s, seed);
        for (a, b, ch) in channels {
            assert_eq!(s.status(a, &ch), Status::Completed, "seed {seed}");
            assert_eq!(s.status(b, &ch), Status::Completed, "seed {seed}");
        }
    }
}

/// A restart must ask for the channel's own selector (Go compares only the root and the
/// voucher): with another one the responder refuses it without asking its validator; with
/// the channel's own it asks.
#[test]
fn a_restart_with_another_selector_is_refused() {
    use datatransfer_fsm::Output;
    use datatransfer_types::DagCbor;
    use datatransfer_types::message::{Message, TransferRequest};

    let mut s = sim(1, 2);
    let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
    s.run_until(1_000_000, |s| {
        s.state(0, &ch).is_some_and(|st| st.received >= 8 << 20)
    });
    let st = s.state(1, &ch).unwrap().clone();
    assert!(!st.status.is_terminal(), "{:?}", st.status);
    let client = s.peer(0);
    // The matcher alone: a selector, but not the channel's.
    let other = DagCbor::from_bytes(vec![0xa1, 0x61, b'.', 0xa0]).unwrap();
    let mut restart_with = |selector: DagCbor| {
        let restart = TransferRequest::restart(
            ch.id,
            true,
            st.voucher().unwrap().clone(),
            st.base_cid,
            selector,
        );
        s.with_engine(1, |e, now| {
            while e.poll_output().is_some() {}
            e.handle_message(now, client, Message::Request(restart));
            std::iter::from_fn(|| e.poll_output()).collect::<Vec<_>>()
        })
    };
    let refused = restart_with(other);
    let asked = |out: &[Output]| out.iter().any(|o| matches!(o, Output::Validate { .. }));
    assert!(!asked(&refused), "{refused:?}");
    assert!(
        refused.iter().any(|o| matches!(
            o,
            Output::SendMessage { message: Message::Response(r), .. } if !r.accepted
        )),
        "{refused:?}"
    );
    let same = restart_with(st.selector.clone());
    assert!(asked(&same), "{same:?}");
}

/// An operator cancels a pull on the responder while its initiator is out of reach (the
/// cancel never arrives). When the initiator comes back and restarts the channel, the
/// responder refuses it: a cancelled channel does not come back as a new one.
#[test]
fn a_channel_the_responder_cancelled_while_cut_off_is_not_restarted() {
    for seed in seeds(50) {
        let mut s = sim(seed, 2);
        let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
        s.run_until(1_000_000, |s| {
            s.state(0, &ch).is_some_and(|st| st.received >= 5 << 20)
        });
        s.disconnect(0, 1);
        s.close(1, ch);
        s.run(1_000_000);
        assert_eq!(s.status(1, &ch), Status::Cancelled, "seed {seed}");
        assert!(s.status(0, &ch).is_in_progress(), "seed {seed}");
        s.reconnect(0, 1);
        s.with_engine(0, |e, now| e.restart(now, ch).unwrap());
        settle(&mut s, seed);
        assert_eq!(s.status(1, &ch), Status::Cancelled, "seed {seed}");
        assert!(
            matches!(s.status(0, &ch), Status::Failed | Status::Cancelled),
            "seed {seed}: {}",
            s.status(0, &ch)
        );
        assert!(s.state(0, &ch).unwrap().received < 20 << 20, "seed {seed}");
    }
}

/// The same after the responder restarted: it learns its finished channels from the store
/// (`Engine::load_finished`), refuses a restart of the cancelled one without asking its
/// validator, and completes a restart of the completed one again.
#[test]
fn finished_channels_loaded_from_the_store_answer_restarts_as_before() {
    use datatransfer_fsm::{Engine, EngineConfig, Output};
    use datatransfer_types::message::{Message, MessageType, TransferRequest};
    use datatransfer_types::{ChannelId, ChannelState, Timestamp, TransferId};

    let s = sim(3, 2);
    let (client, provider) = (s.peer(0), s.peer(1));
    let mut engine = Engine::new(provider, EngineConfig::default(), 1);
    engine
        .register_voucher_type(voucher(0).type_id.clone())
        .unwrap();
    let state = |n: u64, status: Status| {
        let mut st = ChannelState::new(
            ChannelId::new(client, provider, TransferId(n)),
            provider,
            dag_cid(1),
            datatransfer_types::DagCbor::null(),
            voucher(0),
            true,
            0,
        );
        st.status = status;
        st.add_log("ended", Timestamp(n));
        st
    };
    let cancelled = state(7, Status::Cancelled);
    let completed = state(8, Status::Completed);
    engine.load_finished(&cancelled);
    engine.load_finished(&completed);
    let mut restart = |st: &ChannelState| {
        let req = TransferRequest::restart(
            st.channel_id.id,
            true,
            st.voucher().unwrap().clone(),
            st.base_cid,
            st.selector.clone(),
        );
        engine.handle_message(Timestamp(100), client, Message::Request(req));
        std::iter::from_fn(|| engine.poll_output()).collect::<Vec<_>>()
    };
    let refused = restart(&cancelled);
    assert!(
        !refused.iter().any(|o| matches!(o, Output::Validate { .. })),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|o| matches!(
            o,
            Output::SendMessage { message: Message::Response(r), .. } if !r.accepted
        )),
        "{refused:?}"
    );
    let completed_again = restart(&completed);
    assert!(
        completed_again.iter().any(|o| matches!(
            o,
            Output::SendMessage { message: Message::Response(r), .. }
                if r.accepted && r.message_type == MessageType::Complete
        )),
        "{completed_again:?}"
    );
}

/// The requester's pause is graphsync's: its request is cancelled on the wire, and the resume
/// asks again under a fresh request id, skipping the blocks that arrived. The responder's
/// adapter takes the fresh request as the same channel's, validated already.
#[test]
fn a_requester_pause_cancels_its_request_and_the_resume_asks_again_for_the_rest_only() {
    for seed in seeds(50) {
        let mut s = sim(seed, 2);
        let ch = s.open_pull(0, 1, dag_cid(1), voucher(0));
        s.run_until(1_000_000, |s| {
            s.state(0, &ch).is_some_and(|st| st.received >= 8 << 20)
        });
        s.with_engine(0, |e, now| e.pause(now, ch).unwrap());
        assert!(s.run(1_000_000), "seed {seed}");
        let before = s.nodes[1].sent_blocks[&ch].len();
        assert!(
            (8..20).contains(&before),
            "seed {seed}: {before} blocks sent"
        );
        s.with_engine(0, |e, now| e.resume(now, ch).unwrap());
        settle(&mut s, seed);
        assert_eq!(s.status(0, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.status(1, &ch), Status::Completed, "seed {seed}");
        assert_eq!(s.state(0, &ch).unwrap().received, 20 << 20, "seed {seed}");
        let sent = &s.nodes[1].sent_blocks[&ch];
        assert_eq!(
            *sent,
            (1..=20).collect::<Vec<u64>>(),
            "seed {seed}: each block once"
        );
    }
}

/// Node 0 opens a pull from node 1 (or a push to it), which asks for a payment every 4 MiB;
/// node 0 pays when asked if `auto_pay`.
fn charged(seed: u64, pull: bool, auto_pay: bool) -> (Sim, datatransfer_types::ChannelId) {
    let mut s = sim(seed, 2);
    s.nodes[0].policy.auto_pay = auto_pay;
    s.nodes[1].policy = Policy {
        pay_interval: Some(4 << 20),
        ..Policy::default()
    };
    let ch = if pull {
        s.open_pull(0, 1, dag_cid(1), voucher(0))
    } else {
        s.open_push(0, 1, dag_cid(1), voucher(0))
    };
    (s, ch)
}

/// Cuts the connection between the two nodes (what is in flight is lost), restores it, and
/// has node 0 restart `ch`.
fn cut_and_restart(s: &mut Sim, ch: datatransfer_types::ChannelId) {
    s.disconnect(0, 1);
    s.run(1_000_000);
    s.reconnect(0, 1);
    s.with_engine(0, |e, now| e.restart(now, ch).unwrap());
}

/// Both nodes ended `ch` Completed, the receiver holds all 20 MiB, and the responder asked
/// for a payment every 4 MiB, none skipped.
fn completed_and_paid(s: &Sim, ch: &datatransfer_types::ChannelId, receiver: usize, what: &str) {
    for node in [0, 1] {
        assert_eq!(s.status(node, ch), Status::Completed, "{what} node {node}");
    }
    assert_eq!(s.state(receiver, ch).unwrap().received, 20 << 20, "{what}");
    assert_eq!(s.nodes[1].revalidations, 5, "{what}");
}

/// An initiator restarts a transfer while the responder waits for a payment (their
/// connection dropped, say): nothing more moves until it pays. The restart leaves the
/// responder's pause in place; before, the validator's plain accept of the restart resumed
/// the transfer and the rest of the data moved unpaid.
#[test]
fn a_restart_while_a_payment_is_owed_stays_paused_until_paid() {
    for seed in seeds(100) {
        for pull in [true, false] {
            let (mut s, ch) = charged(seed, pull, false);
            let receiver = if pull { 0 } else { 1 };
            s.run_until(1_000_000, |s| {
                s.status(0, &ch) == Status::ResponderPaused
                    && s.status(1, &ch) == Status::ResponderPaused
            });
            cut_and_restart(&mut s, ch);
            assert!(
                s.run(1_000_000),
                "seed {seed} pull {pull}: did not go quiet"
            );
            let codes = s.codes(1, &ch);
            assert!(
                codes.contains(&EventCode::Restart),
                "seed {seed} pull {pull}: {codes:?}"
            );
            for node in [0, 1] {
                assert_eq!(
                    s.status(node, &ch),
                    Status::ResponderPaused,
                    "seed {seed} pull {pull} node {node}"
                );
            }
            let received = s.state(receiver, &ch).unwrap().received;
            assert!(
                received < 8 << 20,
                "seed {seed} pull {pull}: {received} bytes received for one 4 MiB interval"
            );
            // The initiator pays, and from then on pays when asked.
            s.nodes[0].policy.auto_pay = true;
            s.with_engine(0, |e, now| e.send_voucher(now, ch, voucher(1)).unwrap());
            settle(&mut s, seed);
            completed_and_paid(&s, &ch, receiver, &format!("seed {seed} pull {pull}"));
        }
    }
}

/// The responder's validator settles what is owed on a restart (it answers Resume): the
/// restart resumes the transfer in both directions. In a push the responder is the receiver,
/// whose transport request died with the connection, so the resumed restart must open a new
/// one rather than resume the dead one.
#[test]
fn a_restart_the_validator_resumes_goes_on_in_both_directions() {
    for seed in seeds(100) {
        for pull in [true, false] {
            let (mut s, ch) = charged(seed, pull, false);
            s.nodes[1].policy.restart_settles = true;
            let receiver = if pull { 0 } else { 1 };
            s.run_until(1_000_000, |s| {
                s.status(0, &ch) == Status::ResponderPaused
                    && s.status(1, &ch) == Status::ResponderPaused
            });
            cut_and_restart(&mut s, ch);
            s.nodes[0].policy.auto_pay = true;
            settle(&mut s, seed);
            let what = format!("seed {seed} pull {pull}");
            for node in [0, 1] {
                assert_eq!(s.status(node, &ch), Status::Completed, "{what} node {node}");
            }
            assert_eq!(s.state(receiver, &ch).unwrap().received, 20 << 20, "{what}");
        }
    }
}

/// The network sends a push's opening request again (its connection failed under it after it
/// arrived): the receiver, which took it already, lets the copy be, and the push completes on
/// both sides. Before, the copy was refused as a channel that exists, and the refusal failed
/// the pusher's channel while the receiver's went on.
#[test]
fn a_push_request_delivered_twice_opens_one_channel_and_completes() {
    for seed in seeds(50) {
        push_given_copies(seed, |s, ch| received(s, ch) >= 4 << 20, 1);
    }
}

/// Node 0 pushes to node 1, which, once `when` holds, is handed `copies` copies of the
/// push's opening request at once; the push must complete on both sides, and stay so.
fn push_given_copies(seed: u64, when: impl Fn(&Sim, &ChannelId) -> bool, copies: usize) {
    let mut s = sim(seed, 2);
    let ch = s.open_push(0, 1, dag_cid(1), voucher(0));
    s.run_until(1_000_000, |s| when(s, &ch));
    let copy = TransferRequest::new_channel(
        ch.id,
        false,
        voucher(0),
        dag_cid(1),
        datatransfer_sim::all_selector(),
    );
    let pusher = s.peer(0);
    s.with_engine(1, |e, now| {
        for _ in 0..copies {
            e.handle_message(now, pusher, copy.clone().into());
        }
    });
    settle(&mut s, seed);
    for node in [0, 1] {
        assert_eq!(
            s.status(node, &ch),
            Status::Completed,
            "seed {seed} node {node}"
        );
    }
    assert_eq!(s.state(1, &ch).unwrap().received, 20 << 20, "seed {seed}");
}

/// A copy of a push's opening request comes after the push completed (held up in a
/// connection that failed): the receiver, which remembers the channel ended, does not open it
/// again as a new channel that no one would ever send to.
#[test]
fn a_push_request_delivered_after_the_push_completed_opens_nothing() {
    for seed in seeds(20) {
        push_given_copies(
            seed,
            |s, ch| [0, 1].iter().all(|&n| s.status(n, ch) == Status::Completed),
            1,
        );
    }
}

/// What node 1 received of `ch`.
fn received(s: &Sim, ch: &ChannelId) -> u64 {
    s.state(1, ch).map_or(0, |st| st.received)
}

/// Copies of a push's opening request reach the receiver while it validates the first (the
/// network resent it, or a restart of the pusher overtook it): the copy whose validation ends
/// after the channel was made lets it be, instead of refusing it and failing the pusher's
/// channel (found by the long chaos soak).
#[test]
fn copies_of_a_push_request_validated_at_once_open_one_channel_and_complete() {
    for seed in seeds(50) {
        push_given_copies(seed, |_, _| true, 2);
    }
}

/// The responder's request for payment is lost with the connection before the initiator
/// hears it (a pull, or a push whose receiver charges); the initiator restarts. The
/// restart's answer (still paused) carries that request again, so the initiator pays and the
/// transfer completes instead of waiting, paused, for a request it never got.
#[test]
fn a_payment_request_lost_with_the_connection_comes_again_with_the_restart() {
    for seed in seeds(100) {
        for pull in [true, false] {
            let (mut s, ch) = charged(seed, pull, true);
            let receiver = if pull { 0 } else { 1 };
            s.run_until(1_000_000, |s| s.status(1, &ch) == Status::ResponderPaused);
            assert_ne!(
                s.status(0, &ch),
                Status::ResponderPaused,
                "seed {seed} pull {pull}"
            );
            cut_and_restart(&mut s, ch);
            settle(&mut s, seed);
            completed_and_paid(&s, &ch, receiver, &format!("seed {seed} pull {pull}"));
        }
    }
}

/// The initiator pauses while the responder's request for payment is on its way, and resumes:
/// the answer to the resume (still paused by the responder) carries that request again, so the
/// initiator pays even if its pause dropped the response that asked first.
#[test]
fn a_resume_answered_still_paused_says_what_is_owed() {
    for seed in seeds(100) {
        let (mut s, ch) = charged(seed, true, false);
        s.run_until(1_000_000, |s| s.status(1, &ch) == Status::ResponderPaused);
        s.with_engine(0, |e, now| e.pause(now, ch).unwrap());
        s.run(1_000_000);
        let asked_before = s
            .codes(0, &ch)
            .iter()
            .filter(|c| **c == EventCode::NewVoucherResult)
            .count();
        s.nodes[0].policy.auto_pay = true;
        s.with_engine(0, |e, now| e.resume(now, ch).unwrap());
        settle(&mut s, seed);
        let asked = s
            .codes(0, &ch)
            .iter()
            .filter(|c| **c == EventCode::NewVoucherResult)
            .count();
        assert!(
            asked > asked_before,
            "seed {seed}: the resume's answer said nothing owed"
        );
        for node in [0, 1] {
            assert_eq!(
                s.status(node, &ch),
                Status::Completed,
                "seed {seed} node {node}"
            );
        }
        assert_eq!(s.nodes[1].revalidations, 5, "seed {seed}");
    }
}
