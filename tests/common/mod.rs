//! Helpers shared by the integration scenarios: Managers on 127.0.0.1 with SQLite channel
//! stores in temp dirs, a test voucher type, recording validators and revalidators, UnixFS
//! imports of seeded random files, and event waiting with timeouts.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datatransfer::{
    ChannelId, ChannelMonitorConfig, ChannelState, ChannelStore, Cid, DagCbor, Event, EventCode,
    Manager, ManagerConfig, PeerId, Registerable, RequestValidator, Revalidator, Status, TypedNode,
    Validation, ValidationError, ValidationOutcome, Voucher,
};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::unixfs::{ImportOptions, Imported, import_bytes};
pub use datatransfer_test_support::random_bytes;
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

/// The voucher every scenario uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestVoucher {
    pub deal: u64,
}

impl Registerable for TestVoucher {
    const TYPE: &'static str = "TestVoucher";
}

/// A voucher type nobody registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrangeVoucher {
    pub what: String,
}

impl Registerable for StrangeVoucher {
    const TYPE: &'static str = "StrangeVoucher";
}

/// A responder's voucher result: the bytes it wants paid for (0 = accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    pub owed: u64,
}

impl Registerable for TestResult {
    const TYPE: &'static str = "TestResult";
}

pub fn voucher(deal: u64) -> Voucher {
    TypedNode::encode(&TestVoucher { deal }).unwrap()
}

/// Accepts (or rejects) every request and counts them.
#[derive(Default)]
pub struct TestValidator {
    pub reject: AtomicBool,
    pub pulls: AtomicU64,
    pub pushes: AtomicU64,
    pub restarts: AtomicU64,
    /// Milliseconds each pull's validation takes.
    pub pull_delay_ms: AtomicU64,
}

impl TestValidator {
    fn answer(&self, is_restart: bool) -> Result<Validation, ValidationError> {
        if is_restart {
            self.restarts.fetch_add(1, Ordering::SeqCst);
        }
        if self.reject.load(Ordering::SeqCst) {
            Ok(Validation::new(ValidationOutcome::rejected("not today")))
        } else {
            Ok(Validation::accept())
        }
    }
}

#[async_trait]
impl RequestValidator for TestValidator {
    async fn validate_push(
        &self,
        is_restart: bool,
        _: ChannelId,
        _: PeerId,
        _: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.answer(is_restart)
    }

    async fn validate_pull(
        &self,
        is_restart: bool,
        _: ChannelId,
        _: PeerId,
        _: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        let delay = self.pull_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.answer(is_restart)
    }
}

/// Pay-as-you-go: pauses every `interval` bytes sent until a voucher arrives, and asks for a
/// final voucher at the end if `finalize`.
pub struct PayPerBytes {
    pub interval: u64,
    pub finalize: bool,
    state: Mutex<HashMap<ChannelId, (u64, bool)>>,
    pub pauses: AtomicU64,
    pub vouchers: AtomicU64,
}

impl PayPerBytes {
    pub fn new(interval: u64, finalize: bool) -> Self {
        Self {
            interval,
            finalize,
            state: Mutex::new(HashMap::new()),
            pauses: AtomicU64::new(0),
            vouchers: AtomicU64::new(0),
        }
    }

    fn owed(owed: u64) -> Option<TypedNode> {
        Some(TypedNode::encode(&TestResult { owed }).unwrap())
    }
}

#[async_trait]
impl Revalidator for PayPerBytes {
    async fn revalidate(
        &self,
        channel: ChannelId,
        _: &Voucher,
    ) -> Result<Validation, ValidationError> {
        self.vouchers.fetch_add(1, Ordering::SeqCst);
        let mut st = self.state.lock().unwrap();
        let entry = st.entry(channel).or_default();
        let outcome = if entry.1 {
            entry.0 = 0;
            entry.1 = false;
            ValidationOutcome::Resume
        } else {
            ValidationOutcome::Accept
        };
        let mut v = Validation::new(outcome);
        v.voucher_result = Self::owed(0);
        Ok(v)
    }

    async fn on_pull_data_sent(
        &self,
        channel: ChannelId,
        bytes: u64,
    ) -> Result<Option<Validation>, ValidationError> {
        let mut st = self.state.lock().unwrap();
        let entry = st.entry(channel).or_default();
        entry.0 += bytes;
        if entry.0 >= self.interval && !entry.1 {
            entry.1 = true;
            self.pauses.fetch_add(1, Ordering::SeqCst);
            let mut v = Validation::new(ValidationOutcome::Pause);
            v.voucher_result = Self::owed(entry.0);
            return Ok(Some(v));
        }
        Ok(None)
    }

    async fn on_complete(&self, channel: ChannelId) -> Result<Option<Validation>, ValidationError> {
        if !self.finalize {
            return Ok(None);
        }
        let mut st = self.state.lock().unwrap();
        let entry = st.entry(channel).or_default();
        entry.1 = true;
        self.pauses.fetch_add(1, Ordering::SeqCst);
        let mut v = Validation::new(ValidationOutcome::Pause);
        // The final payment is due even when the last interval ended exactly at the end.
        v.voucher_result = Self::owed(entry.0.max(1));
        Ok(Some(v))
    }
}

/// Resumes on any voucher; never pauses.
pub struct ResumeOnVoucher;

#[async_trait]
impl Revalidator for ResumeOnVoucher {
    async fn revalidate(&self, _: ChannelId, _: &Voucher) -> Result<Validation, ValidationError> {
        Ok(Validation::new(ValidationOutcome::Resume))
    }
}

/// A test node: a Manager, its block store and its validator.
pub struct Node {
    pub manager: Manager,
    pub store: Arc<dyn Blockstore>,
    pub validator: Arc<TestValidator>,
}

/// Settings for [`node`].
pub struct NodeOptions<'a> {
    pub sqlite: Option<&'a Path>,
    /// A channel store of the test's own (instead of `sqlite`, or memory).
    pub channel_store: Option<Arc<dyn ChannelStore>>,
    pub store: Option<Arc<dyn Blockstore>>,
    pub keypair: Option<datatransfer::identity::Keypair>,
    pub config: ManagerConfig,
    pub start: bool,
    /// Where to listen (an ephemeral port on 127.0.0.1 if not set).
    pub listen: Option<datatransfer::Multiaddr>,
}

impl Default for NodeOptions<'_> {
    fn default() -> Self {
        Self {
            sqlite: None,
            channel_store: None,
            store: None,
            keypair: None,
            config: fast_config(),
            start: true,
            listen: None,
        }
    }
}

/// Manager settings with a quick channel monitor, so restarts happen within a test's time.
pub fn fast_config() -> ManagerConfig {
    let mut config = ManagerConfig::default();
    config.engine.monitor = Some(ChannelMonitorConfig {
        accept_timeout: Duration::from_secs(10),
        queue_timeout: Duration::from_secs(120),
        stall_timeout: Duration::from_secs(10),
        restart_backoff: Duration::from_millis(200),
        max_consecutive_restarts: 5,
        complete_timeout: Duration::from_secs(10),
        ..ChannelMonitorConfig::default()
    });
    config
}

pub async fn node(opts: NodeOptions<'_>) -> Node {
    let store = opts
        .store
        .unwrap_or_else(|| Arc::new(MemoryBlockstore::new()));
    let mut b = Manager::builder()
        .blockstore(store.clone())
        .config(opts.config);
    if let Some(p) = opts.sqlite {
        b = b.sqlite_store(p);
    }
    if let Some(s) = opts.channel_store {
        b = b.channel_store(s);
    }
    if let Some(k) = opts.keypair {
        b = b.keypair(k);
    }
    if let Some(a) = opts.listen {
        b = b.listen_on(a);
    }
    let manager = b.build().await.unwrap();
    let validator = Arc::new(TestValidator::default());
    manager
        .register_voucher_type(TestVoucher::TYPE, validator.clone())
        .await
        .unwrap();
    manager
        .register_voucher_result_type(TestResult::TYPE)
        .await
        .unwrap();
    if opts.start {
        manager.start().await.unwrap();
    }
    Node {
        manager,
        store,
        validator,
    }
}

pub async fn default_node() -> Node {
    node(NodeOptions::default()).await
}

/// Makes `a` know where `b` listens.
pub async fn introduce(a: &Node, b: &Node) {
    a.manager
        .add_peer_address(
            b.manager.peer_id(),
            b.manager.listen_addrs().await[0].clone(),
        )
        .await;
    b.manager
        .add_peer_address(
            a.manager.peer_id(),
            a.manager.listen_addrs().await[0].clone(),
        )
        .await;
}

/// Imports `data` as UnixFS (raw leaves) into `store`.
pub fn import(store: &dyn Blockstore, data: &[u8], chunk_size: usize) -> Imported {
    import_with(store, data, chunk_size, true)
}

/// Imports `data` as UnixFS into `store`, with raw or dag-pb leaves.
pub fn import_with(
    store: &dyn Blockstore,
    data: &[u8],
    chunk_size: usize,
    raw_leaves: bool,
) -> Imported {
    import_bytes(
        store,
        data,
        &ImportOptions {
            chunk_size,
            raw_leaves,
            ..ImportOptions::default()
        },
    )
    .unwrap()
}

/// Exports the file under `root` from `store` and checks it equals `data`.
pub fn assert_file(store: &dyn Blockstore, root: &Cid, data: &[u8]) {
    let mut out = Vec::new();
    datatransfer_ipld::unixfs::export(store, root, &mut out).unwrap();
    assert_eq!(out.len(), data.len(), "file size");
    assert!(out == data, "file bytes differ");
}

/// Reads events until one on `channel` satisfies `done`; returns the codes seen on the
/// channel. Fails after `secs` seconds.
pub async fn wait_until(
    sub: &mut datatransfer::Subscription,
    channel: Option<ChannelId>,
    secs: u64,
    mut done: impl FnMut(&Event, &ChannelState) -> bool,
) -> Vec<(Event, ChannelState)> {
    let mut seen = Vec::new();
    let mut others = 0usize;
    let r = timeout(Duration::from_secs(secs), async {
        while let Some((ev, st)) = sub.next().await {
            if channel.is_some_and(|c| c != st.channel_id) {
                others += 1;
                continue;
            }
            let stop = done(&ev, &st);
            seen.push((ev, st));
            if stop {
                return;
            }
        }
    })
    .await;
    if r.is_err() {
        let codes: Vec<_> = seen.iter().map(|(e, s)| (e.code, s.status)).collect();
        panic!("timed out; saw {codes:?} ({others} events of other channels)");
    }
    seen
}

/// Waits for `channel` to reach a final status on this subscription; returns its events.
pub async fn wait_finished(
    sub: &mut datatransfer::Subscription,
    channel: ChannelId,
    secs: u64,
) -> Vec<(Event, ChannelState)> {
    wait_until(sub, Some(channel), secs, |_, st| st.status.is_terminal()).await
}

pub fn codes(events: &[(Event, ChannelState)]) -> Vec<EventCode> {
    events.iter().map(|(e, _)| e.code).collect()
}

pub fn last_status(events: &[(Event, ChannelState)]) -> Status {
    events.last().map(|(_, s)| s.status).unwrap()
}

/// Everything but data events that `sub` has for `channel` within 300 ms: for failure reports.
pub async fn dump(
    sub: &mut datatransfer::Subscription,
    channel: ChannelId,
) -> Vec<(EventCode, String, Status)> {
    let mut seen = Vec::new();
    while let Ok(Some((e, st))) = timeout(Duration::from_millis(300), sub.next()).await {
        let data = matches!(
            e.code,
            EventCode::DataQueued
                | EventCode::DataQueuedProgress
                | EventCode::DataSent
                | EventCode::DataSentProgress
                | EventCode::DataReceived
                | EventCode::DataReceivedProgress
        );
        if st.channel_id == channel && !data {
            seen.push((e.code, e.message, st.status));
        }
    }
    seen
}

/// `client` opens a pull of the DAG under `root` (the whole DAG) from `provider`.
pub async fn pull(client: &Node, provider: &Node, voucher: Voucher, root: Cid) -> ChannelId {
    client
        .manager
        .open_pull_channel(
            provider.manager.peer_id(),
            voucher,
            root,
            datatransfer::all_selector(),
        )
        .await
        .unwrap()
}

/// Opens a push of the whole DAG under `root` from `sender` to `receiver`.
pub async fn push(sender: &Node, receiver: &Node, voucher: Voucher, root: Cid) -> ChannelId {
    sender
        .manager
        .open_push_channel(
            receiver.manager.peer_id(),
            voucher,
            root,
            datatransfer::all_selector(),
        )
        .await
        .unwrap()
}

/// Reads `channel`'s events until it ends, paying with a new voucher whenever the provider
/// asks for something owed (vouchers numbered from `after + 1`); returns the events and how
/// many vouchers were sent.
pub async fn pay_until_done(
    sub: &mut datatransfer::Subscription,
    manager: &Manager,
    channel: ChannelId,
    after: u64,
    secs: u64,
) -> (Vec<(Event, ChannelState)>, u64) {
    pay_late_until_done(sub, manager, channel, after, secs, Duration::ZERO).await
}

/// [`pay_until_done`], each payment sent `late` after it was asked for.
pub async fn pay_late_until_done(
    sub: &mut datatransfer::Subscription,
    manager: &Manager,
    channel: ChannelId,
    after: u64,
    secs: u64,
    late: Duration,
) -> (Vec<(Event, ChannelState)>, u64) {
    let mut paid = after;
    let events = wait_until(sub, Some(channel), secs, |e, st| {
        let owed = st
            .last_voucher_result()
            .and_then(|r| r.decode::<TestResult>().ok())
            .map_or(0, |r| r.owed);
        if e.code == EventCode::NewVoucherResult && owed > 0 {
            paid += 1;
            let m = manager.clone();
            let n = paid;
            tokio::spawn(async move {
                tokio::time::sleep(late).await;
                m.send_voucher(channel, voucher(n)).await.unwrap()
            });
        }
        st.status.is_terminal()
    })
    .await;
    (events, paid - after)
}

/// `n` small files (3,000 bytes in 1 KiB chunks: four blocks each) in `store`.
pub fn small_files(
    store: &dyn datatransfer_ipld::blockstore::Blockstore,
    n: u64,
) -> Vec<(Cid, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let data = random_bytes(3_000, 1_000 + i);
            (import(store, &data, 1024).root, data)
        })
        .collect()
}

/// FNV-1a over `data`: a cheap digest to compare a file's bytes across processes.
pub fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The bytes of every block of the DAG under `root`.
pub fn dag_bytes(store: &dyn datatransfer_ipld::blockstore::Blockstore, root: Cid) -> u64 {
    use datatransfer_ipld::traversal::{BlockVisit, TraversalConfig, Visitor, walk};
    struct Sum(u64);
    impl Visitor for Sum {
        fn block(&mut self, visit: &BlockVisit) {
            self.0 += visit.size as u64;
        }
    }
    let mut sum = Sum(0);
    walk(
        store,
        root,
        datatransfer_ipld::selector::Selector::explore_all_recursively(),
        TraversalConfig::default(),
        &mut sum,
    )
    .unwrap();
    sum.0
}
