//! Prints channel-update throughput of the SQLite store on this machine's disk.
//!
//! `cargo bench -p datatransfer-store-sqlite`. Figures are printed, not asserted.

use std::sync::Arc;
use std::time::Instant;

use datatransfer_store_sqlite::SqliteChannelStore;
use datatransfer_types::store::conformance::sample_state;
use datatransfer_types::store::{ChannelStore, ChannelUpdate, Durability};
use datatransfer_types::{ChannelState, Event, EventCode, Status, Timestamp};

fn progress(st: &ChannelState, n: u64) -> ChannelUpdate {
    let mut st = st.clone();
    st.received += 1 << 20;
    st.received_blocks_total += 1;
    ChannelUpdate {
        state: st,
        events: vec![Event::new(
            EventCode::DataReceivedProgress,
            "",
            Timestamp(n),
        )],
        durability: Durability::Progress,
    }
}

fn status_change(st: &ChannelState, n: u64) -> ChannelUpdate {
    let mut st = st.clone();
    st.status = if n.is_multiple_of(2) {
        Status::ResponderPaused
    } else {
        Status::Ongoing
    };
    ChannelUpdate::new(
        st,
        vec![Event::new(EventCode::PauseResponder, "", Timestamp(n))],
    )
}

fn rate(label: &str, n: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!("{label}: {n} in {secs:.2} s = {:.0}/s", n as f64 / secs);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    rt.block_on(async {
        let store = Arc::new(SqliteChannelStore::open(dir.path().join("bench.sqlite"))?);
        let channels: Vec<ChannelState> = (0..1_000)
            .map(|n| sample_state(n, Status::Ongoing))
            .collect();
        store
            .apply_batch(
                channels
                    .iter()
                    .map(|c| ChannelUpdate::new(c.clone(), vec![]))
                    .collect(),
            )
            .await?;

        let start = Instant::now();
        let n = 20_000;
        for i in 0..n {
            store
                .apply(progress(&channels[(i % 1_000) as usize], i))
                .await?;
        }
        rate("single progress updates (one at a time)", n, start);

        let start = Instant::now();
        let rounds = 100;
        for r in 0..rounds {
            let batch = channels.iter().map(|c| progress(c, r)).collect();
            store.apply_batch(batch).await?;
        }
        rate(
            "batched progress updates (1,000 per batch)",
            rounds * 1_000,
            start,
        );

        let start = Instant::now();
        let n = 1_000;
        for i in 0..n {
            store
                .apply(status_change(&channels[(i % 1_000) as usize], i))
                .await?;
        }
        rate(
            "durable status changes (one at a time, synced each)",
            n,
            start,
        );

        let start = Instant::now();
        let tasks = 64;
        let per_task = 100;
        let mut handles = Vec::new();
        for t in 0..tasks {
            let store = store.clone();
            let st = channels[t as usize].clone();
            handles.push(tokio::spawn(async move {
                for i in 0..per_task {
                    store.apply(status_change(&st, i)).await?;
                }
                Ok::<_, datatransfer_types::store::StoreError>(())
            }));
        }
        for h in handles {
            h.await??;
        }
        rate(
            "durable status changes (64 concurrent writers, group commit)",
            tasks * per_task,
            start,
        );
        Ok(())
    })
}
