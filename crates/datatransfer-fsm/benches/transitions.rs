//! Prints how many channel-state transitions per second the pure state machine applies on
//! one core, and how fast the whole engine runs a simulated transfer.
//!
//! `cargo bench -p datatransfer-fsm` (or `cargo run --release -p datatransfer-fsm --bench
//! transitions`). The figures are printed, not asserted.

use std::hint::black_box;
use std::time::Instant;

use datatransfer_fsm::{ChannelEvent, Engine, EngineConfig, MonitorConfig, transition};
use datatransfer_sim::{Sim, SimConfig, all_selector, dag_cid, peer_id, voucher};
use datatransfer_types::{
    ChannelId, ChannelState, Cid, DagCbor, PeerId, Timestamp, TransferId, TypedNode,
};

fn channel() -> ChannelState {
    let peer = |n: u8| {
        let mut b = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        b.extend_from_slice(&[n; 32]);
        PeerId::from_bytes(&b).expect("valid peer id")
    };
    let (a, b) = (peer(1), peer(2));
    ChannelState::new(
        ChannelId::new(a, b, TransferId(1)),
        a,
        Cid::default(),
        DagCbor::null(),
        TypedNode::new("V".into(), DagCbor::null()),
        true,
        0,
    )
}

/// One channel's life: open, accept, `blocks` blocks received with a pause and resume in the
/// middle, then completion. Returns how many transitions it applied.
fn life(blocks: u64, now: &mut u64) -> u64 {
    let mut st = channel();
    let mut n = 0;
    let mut apply = |st: &mut ChannelState, ev: &ChannelEvent| {
        *now += 1;
        let t = transition(st, ev, Timestamp(*now)).expect("allowed transition");
        black_box(&t);
        n += 1;
    };
    apply(&mut st, &ChannelEvent::Open);
    apply(&mut st, &ChannelEvent::Accept);
    for i in 1..=blocks {
        apply(
            &mut st,
            &ChannelEvent::DataReceivedProgress { bytes: 1 << 20 },
        );
        apply(&mut st, &ChannelEvent::DataReceived { index: i });
        if i == blocks / 2 {
            apply(&mut st, &ChannelEvent::PauseResponder);
            apply(&mut st, &ChannelEvent::ResumeResponder);
        }
    }
    apply(&mut st, &ChannelEvent::FinishTransfer);
    apply(&mut st, &ChannelEvent::ResponderCompletes);
    apply(&mut st, &ChannelEvent::CleanupComplete);
    n
}

fn main() {
    // Pure transitions.
    let mut now = 0;
    life(100, &mut now); // warm up
    let start = Instant::now();
    let mut total = 0;
    while start.elapsed().as_secs_f64() < 2.0 {
        for _ in 0..100 {
            total += life(1_000, &mut now);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "channel transitions: {total} in {secs:.2} s = {:.2} million/s (one core)",
        total as f64 / secs / 1e6
    );

    // Whole engines: a simulated pull of 10,000 blocks between two nodes, five times (a run
    // takes a tenth of a second, short enough for the machine's noise to show): the median.
    let mut runs: Vec<(f64, usize)> = (0..5).map(|_| simulated_pull()).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (secs, events) = runs[runs.len() / 2];
    println!(
        "simulated pull of 10,000 blocks (median of 5): {events} channel events in {secs:.3} s = {:.2} million events/s (both engines, their transport adapters, simulated graphsync and network included)",
        events as f64 / secs / 1e6
    );

    // The monitor's next deadline among 10,000 watched channels, asked once per loop turn
    // of a Manager's task.
    let mut engine = Engine::new(
        peer_id(0),
        EngineConfig {
            monitor: Some(MonitorConfig::default()),
            ..EngineConfig::default()
        },
        1,
    );
    for i in 0..10_000u64 {
        let now = Timestamp(i);
        engine
            .open_pull(now, peer_id(1), voucher(i), dag_cid(i), all_selector())
            .expect("open");
    }
    while engine.poll_output().is_some() {}
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < 0.5 {
        for _ in 0..1_000 {
            black_box(engine.poll_timeout());
        }
        calls += 1_000;
    }
    println!(
        "next monitor deadline among 10,000 channels: {:.0} ns a call",
        start.elapsed().as_nanos() as f64 / calls as f64
    );
}

/// One simulated pull of 10,000 blocks of 1 MiB: its time and the channel events both nodes
/// emitted.
fn simulated_pull() -> (f64, usize) {
    let mut sim = Sim::new(SimConfig::default());
    sim.add_dag(dag_cid(1), 10_000, 1 << 20);
    let start = Instant::now();
    let ch = sim.open_pull(0, 1, dag_cid(1), voucher(0));
    assert!(sim.run(10_000_000));
    let secs = start.elapsed().as_secs_f64();
    assert!(
        sim.state(0, &ch)
            .is_some_and(|s| s.received == 10_000 << 20)
    );
    (secs, sim.nodes.iter().map(|n| n.events.len()).sum())
}
