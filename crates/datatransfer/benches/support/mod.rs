//! What the benches share: a block store that keeps nothing, seeded bytes, and the process's
//! memory and CPU figures from `/proc`. Included by the benches of this crate (`mod support;`)
//! and by the interop crate's `channels_go` bench (`#[path]`).

#![allow(dead_code)] // Each bench uses part of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datatransfer::Cid;
use datatransfer_ipld::blockstore::{Blockstore, BlockstoreError, Bytes};

/// Keeps nothing; counts what it is given (the client still checks every block).
#[derive(Default)]
pub(crate) struct CountingStore {
    bytes: AtomicU64,
}

impl CountingStore {
    /// Bytes put so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Blockstore for CountingStore {
    fn get(&self, _: &Cid) -> Result<Option<Bytes>, BlockstoreError> {
        Ok(None)
    }

    fn put(&self, _: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn has(&self, _: &Cid) -> Result<bool, BlockstoreError> {
        Ok(false)
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`) of process `pid` ("self" for this
/// one), in KiB.
pub(crate) fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The name in a process's or thread's `stat` file and the fields after it, the state
/// (field 3) first; empty if the file cannot be read.
fn stat_fields(path: &str) -> (String, Vec<String>) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let Some((head, rest)) = stat.rsplit_once(')') else {
        return (String::new(), Vec::new());
    };
    let name = head
        .split_once('(')
        .map(|(_, n)| n)
        .unwrap_or("")
        .to_owned();
    (name, rest.split_whitespace().map(str::to_owned).collect())
}

/// The user and system CPU seconds of a process or thread from its `stat` file (fields 14
/// and 15, the name in parentheses may hold spaces; ticks of 1/100 s), and its name.
pub(crate) fn stat_cpu(path: &str) -> (String, f64, f64) {
    let (name, fields) = stat_fields(path);
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(sys)) => (name, user / 100.0, sys / 100.0),
        _ => (name, 0.0, 0.0),
    }
}

/// User and system CPU seconds of process `pid` ("self" for this one).
pub(crate) fn process_cpu(pid: &str) -> (f64, f64) {
    let (_, user, sys) = stat_cpu(&format!("/proc/{pid}/stat"));
    (user, sys)
}

/// The page faults process `pid` ("self" for this one) has taken that needed no disk read
/// (`minflt`, field 10 of its `stat` file): one per page of new memory it touched, among
/// others.
pub(crate) fn minor_faults(pid: &str) -> u64 {
    let (_, fields) = stat_fields(&format!("/proc/{pid}/stat"));
    fields.get(7).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// User plus system CPU seconds of this process's threads whose name starts with `prefix`.
pub(crate) fn threads_cpu(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .map(|t| stat_cpu(&t.path().join("stat").to_string_lossy()))
        .filter(|(name, _, _)| name.starts_with(prefix))
        .map(|(_, user, sys)| user + sys)
        .sum()
}

/// A started provider on `blocks` that accepts every `BenchVoucher`.
pub(crate) async fn provider(
    blocks: Arc<dyn Blockstore>,
    config: datatransfer::ManagerConfig,
) -> datatransfer::Manager {
    let provider = datatransfer::Manager::builder()
        .blockstore(blocks)
        .config(config)
        .build()
        .await
        .expect("provider");
    provider
        .register_voucher_type("BenchVoucher", Arc::new(datatransfer::AcceptAll))
        .await
        .expect("register");
    provider.start().await.expect("start");
    provider
}

/// A started client storing into `blocks`, connected to `provider`; and the provider's id.
pub(crate) async fn client_of(
    blocks: Arc<dyn Blockstore>,
    provider: &datatransfer::Manager,
) -> (datatransfer::Manager, datatransfer::PeerId) {
    let client = datatransfer::Manager::builder()
        .blockstore(blocks)
        .build()
        .await
        .expect("client");
    client.start().await.expect("start");
    let peer = client
        .connect(&provider.multiaddr().expect("addr"))
        .await
        .expect("connect");
    (client, peer)
}

/// Pulls the whole DAG under `root` from `peer` with a `BenchVoucher` and waits for the
/// channel to end; its final status and the bytes it received.
pub(crate) async fn pull_to_end(
    client: &datatransfer::Manager,
    peer: datatransfer::PeerId,
    root: Cid,
) -> (datatransfer::Status, u64) {
    let mut events = client.subscribe().await.expect("subscribe");
    let voucher = datatransfer::TypedNode::new(
        "BenchVoucher".into(),
        datatransfer::DagCbor::from_bytes(vec![0x00]).expect("the integer 0"),
    );
    let id = client
        .open_pull_channel(peer, voucher, root, datatransfer::all_selector())
        .await
        .expect("open");
    while let Some((ev, st)) = events.next().await {
        if st.channel_id == id && ev.code == datatransfer::EventCode::Error {
            eprintln!("error: {}", ev.message);
        }
        if st.channel_id == id && st.status.is_terminal() {
            return (st.status, st.received);
        }
    }
    panic!("the client stopped before the channel ended");
}
