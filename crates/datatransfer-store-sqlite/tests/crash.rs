//! Crash test: a child process (this test binary, re-executed with an environment variable)
//! writes channel updates in a loop, printing each one after `apply` returned, and is killed
//! with SIGKILL after a seeded random number of them. Reopening must always succeed, pass
//! `PRAGMA integrity_check`, hold every update the child reported, and hold no channel whose
//! fields disagree with each other (which is what a half-written update would look like).

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use datatransfer_store_sqlite::SqliteChannelStore;
use datatransfer_types::store::conformance::sample_state;
use datatransfer_types::store::{ChannelFilter, ChannelStore, ChannelUpdate, Durability};
use datatransfer_types::{ChannelState, DagCbor, Event, EventCode, Status, Timestamp, TypedNode};

const CHILD_ENV: &str = "DT_STORE_CRASH_CHILD";
const CHANNELS: u64 = 40;
const STATUSES: [Status; 4] = [
    Status::Requested,
    Status::Ongoing,
    Status::ResponderPaused,
    Status::Ongoing,
];

/// The state channel `c` has after its `k`-th write: every field follows from `(c, k)`.
fn state_at(c: u64, k: u64) -> ChannelState {
    let mut st = sample_state(c, STATUSES[(k % 4) as usize]);
    st.received = k;
    st.sent = k * 2;
    st.queued = k * 3;
    st.message = format!("write {k}");
    st.received_blocks_total = k + 1;
    let extra = (k / 4).min(20);
    for i in 0..extra {
        st.vouchers.push(TypedNode::new(
            "Pay".into(),
            DagCbor::encode(&(c, i)).unwrap(),
        ));
    }
    st
}

/// Recovers `k` from a stored state and checks every field agrees with it.
fn check_consistent(st: &ChannelState) -> Result<u64, String> {
    let c = st.channel_id.id.0;
    let k = st.received;
    let want = state_at(c, k);
    if *st != want {
        return Err(format!(
            "channel {c}: stored state is not the state of write {k}"
        ));
    }
    Ok(k)
}

async fn child(path: &str) {
    let store = SqliteChannelStore::open(path).unwrap();
    let mut out = std::io::stdout().lock();
    let mut writes: HashMap<u64, u64> = HashMap::new();
    for n in 0u64.. {
        let c = n % CHANNELS;
        let k = writes.entry(c).or_insert(0);
        *k += 1;
        let st = state_at(c, *k);
        let ev = Event::new(
            EventCode::DataReceivedProgress,
            format!("write {k}"),
            Timestamp(n),
        );
        let durability = if *k % 4 == 1 {
            Durability::StatusChange
        } else {
            Durability::Progress
        };
        if n % 7 == 0 {
            // A batch: this channel and the next one, atomically.
            let c2 = (c + 1) % CHANNELS;
            let k2 = writes.entry(c2).or_insert(0);
            *k2 += 1;
            let (k2v, kv) = (*k2, writes[&c]);
            let updates = vec![
                ChannelUpdate {
                    state: state_at(c, kv),
                    events: vec![ev.clone()],
                    durability,
                },
                ChannelUpdate {
                    state: state_at(c2, k2v),
                    // Each channel's event names that channel's own write.
                    events: vec![Event::new(
                        EventCode::DataReceivedProgress,
                        format!("write {k2v}"),
                        Timestamp(n),
                    )],
                    durability: Durability::Progress,
                },
            ];
            store.apply_batch(updates).await.unwrap();
            writeln!(out, "COMMIT {c} {kv}").unwrap();
            writeln!(out, "COMMIT {c2} {k2v}").unwrap();
        } else {
            store
                .apply(ChannelUpdate {
                    state: st,
                    events: vec![ev],
                    durability,
                })
                .await
                .unwrap();
            writeln!(out, "COMMIT {c} {k}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn crash_recovery() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(child(&path));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for seed in 0..5u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.sqlite");
        // Kill after a seeded number of reported writes, between 300 and 2,700.
        let kill_after = 300 + (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 2_400;
        let mut proc = Command::new(&exe)
            .args([
                "crash_recovery",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("COMMIT ") {
                    let mut it = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
                    let _ = tx.send((it.next().unwrap(), it.next().unwrap()));
                }
            }
        });
        let mut reported: HashMap<u64, u64> = HashMap::new();
        let mut count = 0;
        while count < kill_after {
            let (c, k) = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("seed {seed}: child stopped writing after {count}"));
            reported.insert(c, k);
            count += 1;
        }
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();
        reader.join().unwrap();
        // Lines already printed were committed too.
        for (c, k) in rx.try_iter() {
            reported.insert(c, k);
        }

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = SqliteChannelStore::open(&path)
                .unwrap_or_else(|e| panic!("seed {seed}: reopening failed: {e}"));
            assert_eq!(store.integrity_check().await.unwrap(), "ok", "seed {seed}");
            let stored = store.list(ChannelFilter::All).await.unwrap();
            let mut found = HashMap::new();
            for st in &stored {
                let k = check_consistent(st).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                found.insert(st.channel_id.id.0, k);
            }
            for (c, k) in &reported {
                let got = found.get(c).copied().unwrap_or(0);
                assert!(
                    got >= *k,
                    "seed {seed}: channel {c} reported write {k} but the store has {got}"
                );
            }
            // Events were committed with their state: one per write, the last one naming the
            // write the stored state is at.
            for st in &stored {
                let k = found[&st.channel_id.id.0];
                let evs = store.events(&st.channel_id).await.unwrap();
                assert_eq!(
                    evs.len() as u64,
                    k.min(1_000),
                    "seed {seed}: events of channel {}",
                    st.channel_id.id
                );
                assert_eq!(
                    evs.last().map(|e| e.message.clone()),
                    Some(format!("write {k}")),
                    "seed {seed}"
                );
            }
        });
        eprintln!(
            "seed {seed}: killed after {count} reported writes; {} channels verified",
            reported.len()
        );
    }
}
