//! The channel monitor: engine timers that restart stalled channels and fail those that
//! cannot be saved (go-data-transfer's `channelmonitor`).

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::time::Duration;

use datatransfer_fsm::sim::{Sim, SimConfig, all_selector, dag_cid, peer_id, voucher};
use datatransfer_fsm::{Engine, EngineConfig, MonitorConfig, Output, TransportCommand};
use datatransfer_types::{EventCode, Status, Timestamp};

fn monitor() -> MonitorConfig {
    MonitorConfig {
        accept_timeout: Duration::from_millis(50),
        stall_timeout: Duration::from_millis(20),
        restart_backoff: Duration::from_millis(5),
        max_consecutive_restarts: 3,
        complete_timeout: Duration::from_millis(200),
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
