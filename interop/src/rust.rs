//! Our side: Managers with the interop voucher types, a validator that accepts or rejects, a
//! pay-per-bytes revalidator, and a client loop that pays what a provider asks.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datatransfer::{
    ChannelId, ChannelMonitorConfig, ChannelState, Cid, DagCbor, Event, EventCode, Manager,
    ManagerConfig, Multiaddr, PeerId, Registerable, RequestValidator, Revalidator, TypedNode,
    Validation, ValidationError, ValidationOutcome, Voucher,
};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

/// The request (and payment) voucher: which deal, and how much the client has paid so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteropVoucher {
    /// The deal.
    pub deal: u64,
    /// Bytes paid for so far.
    pub paid: u64,
}

impl Registerable for InteropVoucher {
    const TYPE: &'static str = crate::VOUCHER_TYPE;
}

/// A provider's voucher result: bytes owed (a payment request) or a rejection's reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteropResult {
    /// Bytes to pay for before the transfer goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owed: Option<u64>,
    /// Why the request was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

impl Registerable for InteropResult {
    const TYPE: &'static str = crate::RESULT_TYPE;
}

/// An encoded [`InteropVoucher`].
pub fn voucher(deal: u64, paid: u64) -> Voucher {
    TypedNode::encode(&InteropVoucher { deal, paid }).unwrap()
}

/// Accepts or rejects every request, and counts them.
#[derive(Default)]
pub struct InteropValidator {
    /// Reject with this message instead of accepting.
    pub reject: Mutex<Option<String>>,
    /// Pulls validated (restarts included).
    pub pulls: AtomicU64,
    /// Pushes validated (restarts included).
    pub pushes: AtomicU64,
    /// Restarts validated.
    pub restarts: AtomicU64,
}

impl InteropValidator {
    fn answer(&self, is_restart: bool) -> Result<Validation, ValidationError> {
        if is_restart {
            self.restarts.fetch_add(1, Ordering::SeqCst);
        }
        Ok(match self.reject.lock().unwrap().clone() {
            Some(reason) => {
                let mut v = Validation::new(ValidationOutcome::rejected(reason.clone()));
                v.voucher_result = Some(
                    TypedNode::encode(&InteropResult {
                        owed: None,
                        rejected: Some(reason),
                    })
                    .unwrap(),
                );
                v
            }
            None => Validation::accept(),
        })
    }
}

#[async_trait]
impl RequestValidator for InteropValidator {
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
        self.answer(is_restart)
    }
}

/// Pay-as-you-go on the provider side: pauses every `interval` bytes sent and asks for
/// them to be paid; with `finalize`, asks for a last payment once everything is sent.
pub struct PayPerBytes {
    /// Bytes between two payment requests.
    pub interval: u64,
    /// Ask for a final payment before completing.
    pub finalize: bool,
    /// Per channel: bytes sent since the last payment, and whether a payment is awaited.
    state: Mutex<std::collections::HashMap<ChannelId, (u64, bool)>>,
    /// Payment requests sent.
    pub requests: AtomicU64,
    /// Payments taken (vouchers that resumed the transfer).
    pub payments: AtomicU64,
    /// The last `paid` total a voucher carried.
    pub paid: AtomicU64,
    /// Total bytes asked for.
    pub owed: AtomicU64,
}

impl PayPerBytes {
    /// A revalidator asking for payment every `interval` bytes.
    pub fn new(interval: u64, finalize: bool) -> Self {
        Self {
            interval,
            finalize,
            state: Mutex::default(),
            requests: AtomicU64::new(0),
            payments: AtomicU64::new(0),
            paid: AtomicU64::new(0),
            owed: AtomicU64::new(0),
        }
    }

    fn ask(&self, owed: u64) -> Validation {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.owed.fetch_add(owed, Ordering::SeqCst);
        let mut v = Validation::new(ValidationOutcome::Pause);
        v.voucher_result = Some(
            TypedNode::encode(&InteropResult {
                owed: Some(owed),
                rejected: None,
            })
            .unwrap(),
        );
        v
    }
}

#[async_trait]
impl Revalidator for PayPerBytes {
    async fn revalidate(
        &self,
        channel: ChannelId,
        voucher: &Voucher,
    ) -> Result<Validation, ValidationError> {
        let v: InteropVoucher = voucher
            .decode()
            .map_err(|e| ValidationError::Failed(e.to_string()))?;
        self.paid.store(v.paid, Ordering::SeqCst);
        let mut st = self.state.lock().unwrap();
        let entry = st.entry(channel).or_default();
        if !entry.1 {
            return Ok(Validation::new(ValidationOutcome::Accept));
        }
        entry.0 = 0;
        entry.1 = false;
        self.payments.fetch_add(1, Ordering::SeqCst);
        Ok(Validation::new(ValidationOutcome::Resume))
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
            return Ok(Some(self.ask(entry.0)));
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
        Ok(Some(self.ask(entry.0)))
    }
}

/// One of our nodes: a Manager, its block store and its validator.
pub struct RustNode {
    /// The Manager.
    pub manager: Manager,
    /// Its block store.
    pub store: Arc<dyn Blockstore>,
    /// Its validator for [`InteropVoucher`]s.
    pub validator: Arc<InteropValidator>,
}

impl RustNode {
    /// Opens a pull of the whole DAG under `root` from `provider`, with the voucher of `deal`.
    pub async fn pull(&self, provider: PeerId, root: Cid, deal: u64) -> ChannelId {
        self.manager
            .open_pull_channel(
                provider,
                voucher(deal, 0),
                root,
                datatransfer::all_selector(),
            )
            .await
            .unwrap()
    }

    /// Opens a push of the whole DAG under `root` to `receiver`, with the voucher of `deal`.
    pub async fn push(&self, receiver: PeerId, root: Cid, deal: u64) -> ChannelId {
        self.manager
            .open_push_channel(
                receiver,
                voucher(deal, 0),
                root,
                datatransfer::all_selector(),
            )
            .await
            .unwrap()
    }
}

/// How to build a [`RustNode`].
pub struct RustNodeOptions<'a> {
    /// Keep channels in this SQLite file.
    pub sqlite: Option<&'a Path>,
    /// Serve and store blocks here (a new memory store if `None`).
    pub store: Option<Arc<dyn Blockstore>>,
    /// The identity (a new one if `None`).
    pub keypair: Option<datatransfer::identity::Keypair>,
    /// Listen here (any port on 127.0.0.1 if `None`).
    pub listen: Option<Multiaddr>,
    /// A revalidator for [`InteropVoucher`]s.
    pub revalidator: Option<Arc<dyn Revalidator>>,
    /// Peers' addresses to know before start (for channels restarted from the store).
    pub known_peers: Vec<(PeerId, Multiaddr)>,
    /// Settings.
    pub config: ManagerConfig,
}

impl Default for RustNodeOptions<'_> {
    fn default() -> Self {
        Self {
            sqlite: None,
            store: None,
            keypair: None,
            listen: None,
            revalidator: None,
            known_peers: Vec::new(),
            config: fast_config(),
        }
    }
}

/// Manager settings with a quick channel monitor, so restarts happen within a test's time.
pub fn fast_config() -> ManagerConfig {
    let mut config = ManagerConfig::default();
    config.engine.monitor = Some(ChannelMonitorConfig {
        accept_timeout: Duration::from_secs(20),
        queue_timeout: Duration::from_secs(120),
        stall_timeout: Duration::from_secs(20),
        restart_backoff: Duration::from_millis(500),
        max_consecutive_restarts: 10,
        complete_timeout: Duration::from_secs(30),
        ..ChannelMonitorConfig::default()
    });
    config
}

/// Builds and starts a node with the interop voucher types registered.
pub async fn node(opts: RustNodeOptions<'_>) -> RustNode {
    let store = opts
        .store
        .unwrap_or_else(|| Arc::new(MemoryBlockstore::new()));
    let mut b = Manager::builder()
        .blockstore(store.clone())
        .config(opts.config);
    if let Some(p) = opts.sqlite {
        b = b.sqlite_store(p);
    }
    if let Some(k) = opts.keypair {
        b = b.keypair(k);
    }
    if let Some(a) = opts.listen {
        b = b.listen_on(a);
    }
    let manager = b.build().await.unwrap();
    let validator = Arc::new(InteropValidator::default());
    manager
        .register_voucher_type(InteropVoucher::TYPE, validator.clone())
        .await
        .unwrap();
    if let Some(r) = opts.revalidator {
        manager
            .register_revalidator(InteropVoucher::TYPE, r)
            .await
            .unwrap();
    }
    manager
        .register_voucher_result_type(InteropResult::TYPE)
        .await
        .unwrap();
    for (peer, addr) in opts.known_peers {
        manager.add_peer_address(peer, addr).await;
    }
    manager.start().await.unwrap();
    if std::env::var_os("INTEROP_DUMP").is_some() {
        // Debugging aid: every event of this node that is not about data moving.
        let mut sub = manager.subscribe().await.unwrap();
        let me = manager.peer_id();
        tokio::spawn(async move {
            while let Some((ev, st)) = sub.next().await {
                if !is_data(ev.code) {
                    eprintln!(
                        "rust {me}: {:?} {:?} sent={} received={} {}",
                        ev.code, st.status, st.sent, st.received, ev.message
                    );
                }
            }
        });
    }
    RustNode {
        manager,
        store,
        validator,
    }
}

/// A node with default options.
pub async fn default_node() -> RustNode {
    node(RustNodeOptions::default()).await
}

/// Our node's address with `/p2p`, for go-peer's `connect`.
pub async fn multiaddr(manager: &Manager) -> Multiaddr {
    manager.listen_addrs().await[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(manager.peer_id()))
}

/// Reads events until one on `channel` satisfies `done`; returns them. Panics after `secs`.
pub async fn wait_until(
    sub: &mut datatransfer::Subscription,
    channel: ChannelId,
    secs: u64,
    mut done: impl FnMut(&Event, &ChannelState) -> bool,
) -> Vec<(Event, ChannelState)> {
    let mut seen = Vec::new();
    let r = timeout(Duration::from_secs(secs), async {
        while let Some((ev, st)) = sub.next().await {
            if st.channel_id != channel {
                continue;
            }
            if std::env::var_os("INTEROP_DUMP").is_some() && !is_data(ev.code) {
                eprintln!(
                    "ours: {:?} {:?} sent={} received={} {}",
                    ev.code, st.status, st.sent, st.received, ev.message
                );
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
        let codes: Vec<_> = seen
            .iter()
            .filter(|(e, _)| !is_data(e.code))
            .map(|(e, s)| format!("{:?}/{:?} {}", e.code, s.status, e.message))
            .collect();
        panic!("timed out after {secs} s; our events: {codes:?}");
    }
    seen
}

/// Waits for `channel` to end; returns its events.
pub async fn wait_finished(
    sub: &mut datatransfer::Subscription,
    channel: ChannelId,
    secs: u64,
) -> Vec<(Event, ChannelState)> {
    wait_until(sub, channel, secs, |_, st| st.status.is_terminal()).await
}

/// Whether an event only reports data moving.
pub fn is_data(code: EventCode) -> bool {
    matches!(
        code,
        EventCode::DataQueued
            | EventCode::DataQueuedProgress
            | EventCode::DataSent
            | EventCode::DataSentProgress
            | EventCode::DataReceived
            | EventCode::DataReceivedProgress
    )
}

/// Reads `channel`'s events until it ends, paying (a voucher with the running total) every
/// time the provider's last voucher result asks for bytes owed. Returns the events and the
/// payments made.
pub async fn pay_until_done(
    sub: &mut datatransfer::Subscription,
    manager: &Manager,
    channel: ChannelId,
    deal: u64,
    secs: u64,
) -> (Vec<(Event, ChannelState)>, Vec<u64>) {
    pay_on_from(sub, manager, channel, deal, 0, secs).await
}

/// [`pay_until_done`] for a channel already paid `already` in all: the running total starts
/// there.
pub async fn pay_on_from(
    sub: &mut datatransfer::Subscription,
    manager: &Manager,
    channel: ChannelId,
    deal: u64,
    already: u64,
    secs: u64,
) -> (Vec<(Event, ChannelState)>, Vec<u64>) {
    let paid = Arc::new(Mutex::new(Vec::<u64>::new()));
    let total = Arc::new(AtomicU64::new(already));
    let failed = Arc::new(AtomicBool::new(false));
    let events = wait_until(sub, channel, secs, |e, st| {
        if e.code == EventCode::NewVoucherResult
            && let Some(owed) = st
                .last_voucher_result()
                .and_then(|r| r.decode::<InteropResult>().ok())
                .and_then(|r| r.owed)
        {
            let sum = total.fetch_add(owed, Ordering::SeqCst) + owed;
            paid.lock().unwrap().push(owed);
            let m = manager.clone();
            let failed = failed.clone();
            tokio::spawn(async move {
                if m.send_voucher(channel, voucher(deal, sum)).await.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
            });
        }
        st.status.is_terminal()
    })
    .await;
    assert!(
        !failed.load(Ordering::SeqCst),
        "a payment could not be sent"
    );
    let paid = paid.lock().unwrap().clone();
    (events, paid)
}

/// A Go client pulling from our provider, which charges every `interval` bytes, held at the
/// provider's first request for payment: the Go peer pays only when told
/// ([`crate::go::GoPeer::pay`]; [`crate::go::GoPeer::client_pays`] for at once).
pub struct GoClientOwing {
    /// The Go client.
    pub go: crate::go::GoPeer,
    /// Our provider.
    pub rust: RustNode,
    /// Its revalidator.
    pub pay: Arc<PayPerBytes>,
    /// The root of the file pulled.
    pub root: Cid,
    /// The file's bytes.
    pub data: Vec<u8>,
    /// The channel.
    pub ch: ChannelId,
    /// Our provider's events, from before the pull opened.
    pub sub: datatransfer::Subscription,
    /// What the first request for payment asked for.
    pub owed: u64,
}

/// Starts a [`GoClientOwing`]: Go peer `seed` (of `flavor`) in `dir` pulls a file of `size`
/// bytes.
pub async fn go_client_owing(
    dir: &Path,
    seed: u8,
    flavor: crate::go::Flavor,
    interval: u64,
    size: usize,
) -> GoClientOwing {
    let mut opts = crate::go::GoPeerOptions::new(seed, dir);
    opts.flavor = flavor;
    let go = crate::go::GoPeer::start(opts).await;
    go.client_pays(false).await;
    let pay = Arc::new(PayPerBytes::new(interval, false));
    let rust = node(RustNodeOptions {
        revalidator: Some(pay.clone()),
        ..RustNodeOptions::default()
    })
    .await;
    let (root, data) = crate::data::import_random(&*rust.store, size, u64::from(seed));
    go.connect(&multiaddr(&rust.manager).await).await;
    let sub = rust.manager.subscribe().await.unwrap();
    let ch = go.open("pull", rust.manager.peer_id(), &root, 9).await;
    let want = crate::go::chid_json(&ch);
    let asked = go
        .wait(60, |l| {
            l["type"] == "event" && l["chid"] == want && l["code"] == "NewVoucherResult"
        })
        .await;
    let owed = asked["voucher_result"]["value"]["owed"].as_u64().unwrap();
    GoClientOwing {
        go,
        rust,
        pay,
        root,
        data,
        ch,
        sub,
        owed,
    }
}

impl GoClientOwing {
    /// The Go client restarts its pull; once we answered (still paused by us: nothing more
    /// is queued, nothing paid), returns the Go peer's `status` of the channel.
    pub async fn restart(&mut self) -> serde_json::Value {
        let want = crate::go::chid_json(&self.ch);
        self.go
            .ok("restart", serde_json::json!({"chid": want}))
            .await;
        let events = wait_until(&mut self.sub, self.ch, 60, |e, _| {
            e.code == EventCode::Restart
        })
        .await;
        assert_eq!(
            events.last().unwrap().1.status,
            datatransfer::Status::ResponderPaused
        );
        self.go
            .wait(60, |l| {
                l["type"] == "event" && l["chid"] == want && l["code"] == "Restart"
            })
            .await;
        let ours = self
            .rust
            .manager
            .channel_state(self.ch)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ours.status, datatransfer::Status::ResponderPaused);
        assert!(
            ours.queued < 2 * self.pay.interval,
            "{} bytes queued",
            ours.queued
        );
        assert_eq!(self.pay.payments.load(Ordering::SeqCst), 0);
        self.go
            .ok("status", serde_json::json!({"chid": want}))
            .await
    }

    /// The Go client pays what it was first asked and from then on pays when asked; the pull
    /// completes with the file whole in `dir`, and every request for payment was paid.
    pub async fn pay_and_finish(&self, dir: &Path) {
        self.go.client_pays(true).await;
        self.go.pay(&self.ch, 9, self.owed).await;
        let theirs = self.go.wait_finished(&self.ch, 120).await;
        assert_eq!(theirs["status"], "Completed", "{theirs}");
        self.go.assert_file(dir, &self.root, &self.data).await;
        let requests = self.pay.requests.load(Ordering::SeqCst);
        assert!(
            requests * self.pay.interval >= self.data.len() as u64 - self.pay.interval,
            "{requests} payment requests for {} bytes",
            self.data.len()
        );
        assert_eq!(
            self.pay.payments.load(Ordering::SeqCst),
            requests,
            "every payment request was paid"
        );
    }
}
