//! Many transfers to one peer: requests beyond the responder's in-progress limits wait in its
//! queue and are served in turn (go-graphsync queues them too), the requester knows they are
//! queued so its accept timer waits, and a request refused because the queue is full is asked
//! again later instead of failing its channel.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datatransfer::{ChannelId, ChannelUpdate, Cid, EventCode, Registerable, Status, all_selector};
use datatransfer_integration_tests::*;
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use tokio::time::timeout;

/// Opens a pull of every root from `provider` at once; waits until each channel ended, and
/// returns how each ended and which channels were told they were queued.
async fn pull_all(
    client: &Node,
    provider: &Node,
    roots: &[Cid],
    secs: u64,
) -> (HashMap<ChannelId, Status>, HashSet<ChannelId>) {
    // The events are read once every pull is open: the client's subscriber queue must hold
    // them all (see `reading_late`).
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut open = HashSet::new();
    for root in roots {
        open.insert(pull(client, provider, voucher(1), *root).await);
    }
    let mut ended = HashMap::new();
    let mut queued = HashSet::new();
    let r = timeout(Duration::from_secs(secs), async {
        while ended.len() < open.len() {
            let (ev, st) = sub.next().await.unwrap();
            if !open.contains(&st.channel_id) {
                continue;
            }
            if ev.code == EventCode::TransferRequestQueued {
                queued.insert(st.channel_id);
            }
            if st.status.is_terminal() {
                ended.insert(st.channel_id, st.status);
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "{} of {} channels ended within {secs} s",
        ended.len(),
        open.len()
    );
    assert_eq!(sub.missed(), 0, "the subscriber queue was too small");
    (ended, queued)
}

/// A client that reads its events only after opening many pulls: a subscriber queue that
/// holds every event of this test.
fn reading_late() -> NodeOptions<'static> {
    let mut config = fast_config();
    config.subscriber_queue = 1 << 20;
    NodeOptions {
        config,
        ..NodeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pulls_opened_at_once_to_one_peer_all_complete() {
    // Two served at a time (Go serves 6): how many of the pulls find the queue full depends
    // on how fast the provider serves the first ones, and ours answers a validation without
    // a hop through a queue of transport work; with room for two, nearly all wait.
    let mut config = fast_config();
    config.transport.graphsync.max_responses_per_peer = 2;
    let provider = node(NodeOptions {
        config,
        ..NodeOptions::default()
    })
    .await;
    let client = node(reading_late()).await;
    introduce(&client, &provider).await;
    let files = small_files(&*provider.store, 1_000);
    let roots: Vec<Cid> = files.iter().map(|(r, _)| *r).collect();
    let (ended, queued) = pull_all(&client, &provider, &roots, 120).await;
    let failed: Vec<_> = ended
        .values()
        .filter(|s| **s != Status::Completed)
        .collect();
    assert!(
        failed.is_empty(),
        "{} channels did not complete",
        failed.len()
    );
    // The responder serves 2 at a time: all but the first few waited in its queue, and knew
    // it (998 of 1,000 in our runs).
    assert!(
        queued.len() > 990,
        "only {} channels were told they were queued",
        queued.len()
    );
    for (root, data) in &files {
        assert_file(&*client.store, root, data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_responders_queue_are_refused_as_busy_and_asked_again() {
    // A queue of 4 requests per peer, one served at a time.
    let mut config = fast_config();
    config.transport.graphsync.max_requests_per_peer = 4;
    config.transport.graphsync.max_responses_per_peer = 1;
    let provider = node(NodeOptions {
        config,
        ..NodeOptions::default()
    })
    .await;
    let mut client = reading_late();
    client.config.transport.busy_retry_backoff = Duration::from_millis(50);
    let client = node(client).await;
    introduce(&client, &provider).await;
    let files = small_files(&*provider.store, 40);
    let roots: Vec<Cid> = files.iter().map(|(r, _)| *r).collect();
    let (ended, queued) = pull_all(&client, &provider, &roots, 60).await;
    assert!(ended.values().all(|s| *s == Status::Completed), "{ended:?}");
    // 4 fit in the queue at a time; most of the rest arrived while it was full, were
    // refused as busy and asked again until served (before, a busy refusal failed the
    // channel). How many exactly depends on how fast the first ones were served.
    assert!(queued.len() >= 20, "{} channels waited", queued.len());
    for (root, data) in &files {
        assert_file(&*client.store, root, data);
    }
}

/// A provider whose sends are slowed to 2 MiB/s, so a transfer is still running when a test
/// breaks it; and a 4 MiB file on it.
/// Quick monitor, and sends held to 2 MiB/s: a few MiB take long enough to be broken.
fn slow_config() -> datatransfer::ManagerConfig {
    let mut config = fast_config();
    config.transport.graphsync.max_outbound_rate = Some(2 << 20);
    config
}

async fn slow_provider() -> (Node, Cid, Vec<u8>) {
    let provider = node(NodeOptions {
        config: slow_config(),
        ..NodeOptions::default()
    })
    .await;
    let data = random_bytes(4 << 20, 7);
    let root = import(&*provider.store, &data, 256 << 10).root;
    (provider, root, data)
}

/// A client with a SQLite store pulling from a slow provider, data already flowing.
struct Pulling {
    db: std::path::PathBuf,
    key: datatransfer::identity::Keypair,
    provider: Node,
    client: Node,
    sub: datatransfer::Subscription,
    ch: ChannelId,
}

async fn pulling(dir: &std::path::Path) -> Pulling {
    let db = dir.join("client.sqlite");
    let key = datatransfer::identity::Keypair::generate_ed25519();
    let (provider, root, _) = slow_provider().await;
    let client = node(NodeOptions {
        sqlite: Some(&db),
        keypair: Some(key.clone()),
        ..NodeOptions::default()
    })
    .await;
    introduce(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), root).await;
    wait_until(&mut sub, Some(ch), 30, |_, st| st.received > 0).await;
    Pulling {
        db,
        key,
        provider,
        client,
        sub,
        ch,
    }
}

/// lotus#8377: a channel whose peer is gone is cancelled locally at once, and it does not
/// come back when the node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_peer_is_gone_is_cancelled_at_once_and_stays_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let Pulling {
        db,
        key,
        provider,
        client,
        mut sub,
        ch,
    } = pulling(dir.path()).await;
    provider.manager.stop().await.unwrap();

    let started = std::time::Instant::now();
    client.manager.close_channel(ch).await.unwrap();
    let events = wait_finished(&mut sub, ch, 10).await;
    assert_eq!(last_status(&events), Status::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelling waited {:?} for a peer that is gone",
        started.elapsed()
    );
    client.manager.stop().await.unwrap();

    let again = node(NodeOptions {
        sqlite: Some(&db),
        keypair: Some(key),
        ..NodeOptions::default()
    })
    .await;
    assert!(
        again
            .manager
            .in_progress_channels()
            .await
            .unwrap()
            .iter()
            .all(|c| c.channel_id != ch),
        "the cancelled channel came back"
    );
    let st = again.manager.channel_state(ch).await.unwrap();
    assert!(
        st.as_ref().is_none_or(|s| s.status == Status::Cancelled),
        "{st:?}"
    );
}

/// go-data-transfer#268: channels loaded from the store at start are watched by the monitor
/// like any other; one whose peer never comes back fails within the monitor's limits instead
/// of staying in progress for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_loaded_at_start_are_monitored() {
    let dir = tempfile::tempdir().unwrap();
    let Pulling {
        db,
        key,
        provider,
        client,
        sub: _,
        ch,
    } = pulling(dir.path()).await;
    client.manager.stop().await.unwrap();
    provider.manager.stop().await.unwrap();

    // The client comes back; the provider does not.
    let mut config = fast_config();
    if let Some(m) = config.engine.monitor.as_mut() {
        m.restart_backoff = Duration::from_millis(100);
        m.max_consecutive_restarts = 2;
        m.accept_timeout = Duration::from_secs(1);
        m.stall_timeout = Duration::from_secs(1);
    }
    let again = node(NodeOptions {
        sqlite: Some(&db),
        keypair: Some(key),
        config,
        start: false,
        ..NodeOptions::default()
    })
    .await;
    let mut sub = again.manager.subscribe().await.unwrap();
    again.manager.start().await.unwrap();
    let events = wait_finished(&mut sub, ch, 30).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Failed, "{}", last.message);
    assert!(
        codes(&events).contains(&EventCode::Restart) || last.message.contains("restart"),
        "{:?}: {}",
        codes(&events),
        last.message
    );
}

/// lotus#5225: a pull broken three times mid-transfer (the connection dropped, the monitor
/// restarting it each time) completes with its byte counters exact: every block counted
/// once on the receiving side, the file whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_restarted_three_times_keeps_exact_byte_counters() {
    let (provider, root, data) = slow_provider().await;
    let client = default_node().await;
    introduce(&client, &provider).await;
    let total: u64 = {
        let mut log = datatransfer_ipld::traversal::BlockLog::default();
        datatransfer_ipld::traversal::walk(
            &*provider.store,
            root,
            datatransfer_ipld::selector::Selector::explore_all_recursively(),
            datatransfer_ipld::traversal::TraversalConfig::default(),
            &mut log,
        )
        .unwrap();
        log.0.iter().map(|v| v.size as u64).sum()
    };
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), root).await;
    let mut events = Vec::new();
    for part in 1..=3u64 {
        let mark = part * total / 4;
        events.extend(wait_until(&mut sub, Some(ch), 30, |_, st| st.received >= mark).await);
        assert!(client.manager.disconnect(provider.manager.peer_id()).await);
    }
    events.extend(wait_finished(&mut sub, ch, 60).await);
    let last = &events.last().unwrap().1;
    assert_eq!(last.status, Status::Completed, "{}", last.message);
    let restarts = codes(&events)
        .iter()
        .filter(|c| **c == EventCode::Restart)
        .count();
    assert!(restarts >= 3, "{restarts} restarts");
    assert_eq!(last.received, total, "bytes received, each block once");
    assert_file(&*client.store, &root, &data);
    let theirs = provider.manager.channel_state(ch).await.unwrap().unwrap();
    assert_eq!(theirs.status, Status::Completed);
    assert!(
        theirs.sent >= total,
        "the provider counted {} of {total} (queued {}, blocks sent {}, queued {})",
        theirs.sent,
        theirs.queued,
        theirs.sent_blocks_total,
        theirs.queued_blocks_total
    );
}

/// Pauses every pull once, after `at` bytes, until a voucher comes.
struct PauseOnce {
    at: u64,
    sent: std::sync::Mutex<HashMap<ChannelId, u64>>,
    paused: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl datatransfer::Revalidator for PauseOnce {
    async fn revalidate(
        &self,
        _: ChannelId,
        _: &datatransfer::Voucher,
    ) -> Result<datatransfer::Validation, datatransfer::ValidationError> {
        Ok(datatransfer::Validation::new(
            datatransfer::ValidationOutcome::Resume,
        ))
    }

    async fn on_pull_data_sent(
        &self,
        channel: ChannelId,
        bytes: u64,
    ) -> Result<Option<datatransfer::Validation>, datatransfer::ValidationError> {
        let mut sent = self.sent.lock().unwrap();
        let total = sent.entry(channel).or_default();
        let before = *total;
        *total += bytes;
        if before < self.at && *total >= self.at {
            self.paused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Ok(Some(datatransfer::Validation::new(
                datatransfer::ValidationOutcome::Pause,
            )));
        }
        Ok(None)
    }
}

/// go-graphsync#175: 64 channels paused by their responder and resumed at once (64
/// vouchers sent together) all complete; no unpause is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_channels_paused_and_resumed_at_once_all_complete() {
    let mut config = fast_config();
    config.transport.graphsync.max_responses_per_peer = 64;
    config.transport.graphsync.max_responses = 64;
    let provider = node(NodeOptions {
        config,
        start: false,
        ..NodeOptions::default()
    })
    .await;
    let pause = std::sync::Arc::new(PauseOnce {
        at: 64 << 10,
        sent: std::sync::Mutex::default(),
        paused: std::sync::atomic::AtomicU64::new(0),
    });
    provider
        .manager
        .register_revalidator(TestVoucher::TYPE, pause.clone())
        .await
        .unwrap();
    provider.manager.start().await.unwrap();
    let client = default_node().await;
    introduce(&client, &provider).await;
    let files: Vec<(Cid, Vec<u8>)> = (0..64)
        .map(|i| {
            let data = random_bytes(256 << 10, 5_000 + i);
            (import(&*provider.store, &data, 16 << 10).root, data)
        })
        .collect();
    let roots: Vec<Cid> = files.iter().map(|(r, _)| *r).collect();
    let mut channels = Vec::new();
    for root in &roots {
        channels.push(pull(&client, &provider, voucher(1), *root).await);
    }
    // All 64 paused by their responder.
    timeout(Duration::from_secs(30), async {
        while pause.paused.load(std::sync::atomic::Ordering::SeqCst) < 64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("not every channel paused");
    let mut sub = client.manager.subscribe().await.unwrap();
    let vouchers = channels
        .iter()
        .map(|ch| client.manager.send_voucher(*ch, voucher(2)));
    for r in futures::future::join_all(vouchers).await {
        r.unwrap();
    }
    let open: HashSet<ChannelId> = channels.iter().copied().collect();
    let mut done = HashSet::new();
    let r = timeout(Duration::from_secs(60), async {
        while done.len() < open.len() {
            let (_, st) = sub.next().await.unwrap();
            if open.contains(&st.channel_id) && st.status.is_terminal() {
                assert_eq!(st.status, Status::Completed, "{}", st.message);
                done.insert(st.channel_id);
            }
        }
    })
    .await;
    assert!(r.is_ok(), "{} of 64 channels completed", done.len());
    for (root, data) in &files {
        assert_file(&*client.store, root, data);
    }
}

/// A TCP proxy in front of `to` that counts the bytes it carries each way, and can reset
/// every connection it carries at once (RST, not FIN: lingering off), as a broken NAT or a
/// crashing peer's kernel does.
struct Proxy {
    addr: std::net::SocketAddr,
    reset: std::sync::Arc<tokio::sync::Notify>,
    /// Bytes from the dialing side to `to`, and back.
    up: std::sync::Arc<std::sync::atomic::AtomicU64>,
    down: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Copies `from` into `to`, counting; ends at the end of `from` or an error.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                count.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reset = std::sync::Arc::new(tokio::sync::Notify::new());
        let up = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let down = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (r, u, d) = (reset.clone(), up.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (r, u, d) = (r.clone(), u.clone(), d.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    // Kept to reset them; the pumps use clones.
                    let (a, b) = (inbound.into_std().unwrap(), outbound.into_std().unwrap());
                    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
                    let (ar, aw) = tokio::net::TcpStream::from_std(a2).unwrap().into_split();
                    let (br, bw) = tokio::net::TcpStream::from_std(b2).unwrap().into_split();
                    tokio::select! {
                        _ = async { tokio::join!(pump(ar, bw, u), pump(br, aw, d)) } => {}
                        _ = r.notified() => {
                            // Lingering off on one descriptor is off for the socket: the
                            // last close (the pumps' halves are dropped here) sends RST.
                            for s in [a, b] {
                                if let Ok(s) = tokio::net::TcpStream::from_std(s) {
                                    let _ = s.set_zero_linger();
                                }
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            reset,
            up,
            down,
        }
    }

    /// A proxy in front of `provider`, through which alone `client` knows it (the provider
    /// cannot dial the client back).
    async fn between(client: &Node, provider: &Node) -> Self {
        let proxy = Self::start(tcp_addr_of(provider).await).await;
        client
            .manager
            .add_peer_address(provider.manager.peer_id(), proxy.multiaddr())
            .await;
        proxy
    }

    /// Resets the connections open now; later ones are carried as usual.
    fn reset_all(&self) {
        self.reset.notify_waiters();
    }

    /// Bytes carried from the dialing side, and to it.
    fn carried(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.up.load(SeqCst), self.down.load(SeqCst))
    }

    /// The address to dial the proxy at.
    fn multiaddr(&self) -> datatransfer::Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{}", self.addr.port())
            .parse()
            .unwrap()
    }
}

/// The TCP address a node listens on.
async fn tcp_addr_of(n: &Node) -> std::net::SocketAddr {
    use libp2p::multiaddr::Protocol;
    let addr = n.manager.listen_addrs().await[0].clone();
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    std::net::SocketAddr::new(ip.unwrap(), port.unwrap())
}

/// go-legs#99: the connection under a running pull is reset (every stream on it dies at
/// once, mid-message). The pull never hangs: the client restarts it over a new connection and
/// it completes with every byte verified and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_transfer_never_hangs_the_pull() {
    let (provider, root, data) = slow_provider().await;
    let client = default_node().await;
    let proxy = Proxy::between(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), root).await;
    wait_until(&mut sub, Some(ch), 30, |_, st| st.received > 1 << 20).await;
    proxy.reset_all();
    let mut restarted = false;
    let end = timeout(Duration::from_secs(60), async {
        loop {
            let (ev, st) = sub.next().await.unwrap();
            if st.channel_id != ch {
                continue;
            }
            restarted |= ev.code == EventCode::Restart;
            if st.status.is_terminal() {
                return st;
            }
        }
    })
    .await
    .expect("the pull hung after its connection was reset");
    assert_eq!(end.status, Status::Completed, "{}", end.message);
    assert!(restarted, "the pull was not restarted after the reset");
    assert_file(&*client.store, &root, &data);
    // Every block once: the restart asked only for what had not arrived.
    let total = dag_bytes(&*provider.store, root);
    assert_eq!(end.received, total);
}

/// Managers stopped or simply dropped, after a pull and with a second one paused midway,
/// leave no task of theirs running: the swarm, the engine, the network's and graphsync's
/// acceptors and readers, graphsync's node, writers and responses all end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_managers_leave_no_task_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    {
        let (provider, root, data) = slow_provider().await;
        let client = default_node().await;
        introduce(&client, &provider).await;
        let small = import(&*provider.store, &random_bytes(10_000, 3), 1024).root;
        let mut sub = client.manager.subscribe().await.unwrap();
        let done = pull(&client, &provider, voucher(1), small).await;
        wait_until(&mut sub, Some(done), 20, |_, st| {
            st.status == Status::Completed
        })
        .await;
        let running = pull(&client, &provider, voucher(2), root).await;
        wait_until(&mut sub, Some(running), 20, |_, st| st.received > 0).await;
        client.manager.pause_channel(running).await.unwrap();
        let _ = data;
        client.manager.stop().await.unwrap();
        drop(client);
        drop(provider);
    }
    let settled = timeout(Duration::from_secs(10), async {
        while metrics.num_alive_tasks() > before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "{} tasks left running (before: {before})",
        metrics.num_alive_tasks() - before
    );
}

/// lotus#4856: resuming a transfer of over a million blocks sends resume state of constant
/// size. The client holds all but the last 500 of a DAG of 1,002,002 blocks (as after a
/// crash near the end); its request asks the provider to skip the blocks it holds by count
/// (`graphsync/do-not-send-first-blocks`), not by listing them (36 MB of CIDs here), and
/// gets only the missing ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_million_block_transfer_sends_constant_size_state() {
    use datatransfer_ipld::Node as Ipld;
    use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
    use datatransfer_ipld::codec::{self, DAG_CBOR, RAW};
    let provider_store = std::sync::Arc::new(MemoryBlockstore::new());
    let client_store = std::sync::Arc::new(MemoryBlockstore::new());
    let (mids, leaves) = (1_001u64, 1_000u64);
    let mut mid_links = Vec::new();
    let mut missing = Vec::new();
    for m in 0..mids {
        let mut links = Vec::new();
        for l in 0..leaves {
            let data = (m * leaves + l).to_le_bytes();
            let cid = provider_store.put_new(RAW, &data).unwrap();
            if m == mids - 1 && l >= leaves - 500 {
                missing.push(cid);
            } else {
                client_store.put(&cid, &data).unwrap();
            }
            links.push(Ipld::Link(cid));
        }
        let bytes = codec::encode_dag_cbor(&Ipld::List(links));
        let cid = provider_store.put_new(DAG_CBOR, &bytes).unwrap();
        client_store.put(&cid, &bytes).unwrap();
        mid_links.push(Ipld::Link(cid));
    }
    let bytes = codec::encode_dag_cbor(&Ipld::List(mid_links));
    let root = provider_store.put_new(DAG_CBOR, &bytes).unwrap();
    client_store.put(&root, &bytes).unwrap();

    let provider = node(NodeOptions {
        store: Some(provider_store.clone()),
        ..NodeOptions::default()
    })
    .await;
    let client = node(NodeOptions {
        store: Some(client_store.clone()),
        ..NodeOptions::default()
    })
    .await;
    let proxy = Proxy::between(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), root).await;
    let end = timeout(Duration::from_secs(120), async {
        loop {
            let (_, st) = sub.next().await.unwrap();
            if st.channel_id == ch && st.status.is_terminal() {
                return st;
            }
        }
    })
    .await
    .expect("the resumed pull did not end within 120 s");
    assert_eq!(end.status, Status::Completed, "{}", end.message);
    for cid in &missing {
        assert!(client_store.has(cid).unwrap(), "{cid} did not arrive");
    }
    // Only the missing blocks were sent: 500 of 8 bytes.
    assert_eq!(end.received, 500 * 8);
    let (up, down) = proxy.carried();
    eprintln!("resuming 1,002,002 blocks: {up} bytes sent, {down} received");
    assert!(
        up < 64 << 10,
        "the client sent {up} bytes to resume a million-block transfer"
    );
}

/// A client that pauses and resumes a pull at once, while the provider still validates it,
/// resumes under a fresh graphsync request before the opening one is answered: the provider
/// waits for its answer instead of refusing the resumed request (found by the chaos soak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_paused_and_resumed_before_it_is_accepted_completes() {
    let provider = default_node().await;
    provider
        .validator
        .pull_delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let client = default_node().await;
    introduce(&client, &provider).await;
    let data = random_bytes(200_000, 11);
    let root = import(&*provider.store, &data, 16 << 10).root;
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), root).await;
    client.manager.pause_channel(ch).await.unwrap();
    client.manager.resume_channel(ch).await.unwrap();
    let events = wait_finished(&mut sub, ch, 30).await;
    let end = &events.last().unwrap().1;
    assert_eq!(end.status, Status::Completed, "{}", end.message);
    assert_file(&*client.store, &root, &data);
}

/// A channel is in the store by the time `open_pull_channel` returns: a crash right after
/// cannot lose it (found by the chaos soak, which SIGKILLs clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_channel_is_stored_when_the_call_returns() {
    let dir = tempfile::tempdir().unwrap();
    let client = node(NodeOptions {
        sqlite: Some(&dir.path().join("client.sqlite")),
        ..NodeOptions::default()
    })
    .await;
    let nobody = datatransfer::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    for n in 0..20u64 {
        let root = import(&*client.store, &random_bytes(100, n), 1024).root;
        let ch = client
            .manager
            .open_pull_channel(nobody, voucher(n), root, datatransfer::all_selector())
            .await
            .unwrap();
        assert!(
            client
                .manager
                .channel_store()
                .get(&ch)
                .await
                .unwrap()
                .is_some(),
            "channel {n} was not stored when its open returned"
        );
    }
}

/// A block store that takes `ok` blocks and then fails every write, as a full disk does.
struct FullDisk {
    inner: datatransfer_ipld::blockstore::MemoryBlockstore,
    ok: usize,
    puts: std::sync::atomic::AtomicUsize,
}

impl FullDisk {
    fn refused(&self) -> usize {
        self.puts
            .load(std::sync::atomic::Ordering::SeqCst)
            .saturating_sub(self.ok)
    }
}

impl datatransfer_ipld::blockstore::Blockstore for FullDisk {
    fn get(
        &self,
        cid: &Cid,
    ) -> Result<
        Option<datatransfer_ipld::blockstore::Bytes>,
        datatransfer_ipld::blockstore::BlockstoreError,
    > {
        self.inner.get(cid)
    }

    fn put(
        &self,
        cid: &Cid,
        data: &[u8],
    ) -> Result<(), datatransfer_ipld::blockstore::BlockstoreError> {
        let n = self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n >= self.ok {
            return Err(datatransfer_ipld::blockstore::BlockstoreError::Backend(
                "no space left on device".into(),
            ));
        }
        self.inner.put(cid, data)
    }
}

/// A local store failure is ours, not the network's: the pull fails once with a reason that
/// says so, the provider is told, and no restart follows (it used to be reported as a network
/// error, so the monitor restarted the channel against the same full disk until its limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_store_that_fails_ends_the_pull_once_with_a_local_failure() {
    let provider = default_node().await;
    let data = random_bytes(4 << 20, 41);
    let file = import(&*provider.store, &data, 256 << 10);
    let disk = std::sync::Arc::new(FullDisk {
        inner: datatransfer_ipld::blockstore::MemoryBlockstore::new(),
        ok: 3,
        puts: Default::default(),
    });
    let client = node(NodeOptions {
        store: Some(disk.clone()),
        ..NodeOptions::default()
    })
    .await;
    introduce(&client, &provider).await;
    let mut theirs = provider.manager.subscribe().await.unwrap();
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), file.root).await;

    let events = wait_finished(&mut sub, ch, 20).await;
    assert_eq!(last_status(&events), Status::Failed);
    let message = &events.last().unwrap().1.message;
    assert!(
        message.contains("local store failed: block store failed: no space left on device"),
        "{message}"
    );
    assert!(
        !codes(&events).contains(&EventCode::Restart),
        "restarted against a full disk: {:?}",
        codes(&events)
    );
    // The provider hears of it and ends its side; it never sees a restart.
    let provider_events = wait_finished(&mut theirs, ch, 10).await;
    assert!(
        !codes(&provider_events).contains(&EventCode::Restart),
        "{:?}",
        codes(&provider_events)
    );
    // No attempt after the first: well past the monitor's restart backoff (200 ms), the
    // store sees no more writes.
    let refused = disk.refused();
    assert!(refused >= 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(disk.refused(), refused, "the store was written to again");
    let st = client.manager.channel_state(ch).await.unwrap().unwrap();
    assert_eq!(st.status, Status::Failed);
}

/// A subscriber that never reads costs a bounded queue, not memory that grows with the
/// events, and does not hold anything up: a pull of over 10,000 blocks (one progress event
/// each) and 300 small pulls beside it all complete. Its unread progress events merge; past
/// its bound the oldest events go, and it is told how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_stays_bounded_and_holds_nothing_up() {
    let mut config = fast_config();
    config.subscriber_queue = 256;
    let provider = default_node().await;
    let client = node(NodeOptions {
        config,
        ..NodeOptions::default()
    })
    .await;
    introduce(&client, &provider).await;
    let big = import(&*provider.store, &random_bytes(10_500 << 10, 43), 1 << 10);
    assert!(big.blocks > 10_000, "{} blocks", big.blocks);
    let small: Vec<Cid> = (0..300)
        .map(|i| import(&*provider.store, &random_bytes(2 << 10, 500 + i), 1 << 10).root)
        .collect();

    let mut idle = client.manager.subscribe().await.unwrap();
    let big_ch = pull(&client, &provider, voucher(1), big.root).await;
    let mut channels = vec![big_ch];
    for root in &small {
        channels.push(pull(&client, &provider, voucher(1), *root).await);
    }
    // Every channel completes, as the store records it (nobody reads a subscription here).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for ch in &channels {
        loop {
            let st = client.manager.channel_state(*ch).await.unwrap();
            if st.as_ref().is_some_and(|s| s.status.is_terminal()) {
                assert_eq!(st.unwrap().status, Status::Completed);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{ch} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let held = idle.len();
    let missed = idle.missed();
    assert!(held <= 256, "{held} events held");
    assert!(missed > 0, "300 channels' events fit in 256?");
    // Reading now: first the notice of what was dropped, then what the queue holds.
    let first = idle.next_item().await.unwrap();
    assert_eq!(first, datatransfer::SubscriptionItem::Lagged(missed));
    let mut rest = Vec::new();
    while let Ok(Some(item)) = timeout(Duration::from_millis(200), idle.next_item()).await {
        rest.push(item);
    }
    assert_eq!(rest.len(), held);
}

/// A pull that completed on both sides, after which both nodes stopped and the client's
/// channel went back, in its store, to what it held when the first blocks were in: a kill
/// before its completion was stored.
struct KilledBeforeCompletion {
    /// The provider, started again on its stores.
    provider: Node,
    /// The client on its files, not started: starting it restarts the channel.
    client: Node,
    ch: ChannelId,
    root: Cid,
    data: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// Runs the pull of [`KilledBeforeCompletion`] and starts its provider again with
/// `provider_config`; the client comes back on `client_blocks` (its own blocks if `None`).
async fn killed_before_completion(
    provider_config: datatransfer::ManagerConfig,
    client_blocks: Option<Arc<dyn Blockstore>>,
) -> KilledBeforeCompletion {
    let dir = tempfile::tempdir().unwrap();
    let (client_db, provider_db) = (dir.path().join("c.sqlite"), dir.path().join("p.sqlite"));
    let (client_key, provider_key) = (
        datatransfer::identity::Keypair::generate_ed25519(),
        datatransfer::identity::Keypair::generate_ed25519(),
    );
    let (first_blocks, provider_blocks): (Arc<dyn Blockstore>, Arc<dyn Blockstore>) = (
        Arc::new(MemoryBlockstore::new()),
        Arc::new(MemoryBlockstore::new()),
    );
    let data = random_bytes(4 << 20, 13);
    let root = import(&*provider_blocks, &data, 256 << 10).root;
    let provider = durable_node(&provider_db, &provider_key, &provider_blocks, fast_config()).await;
    let client = durable_node(&client_db, &client_key, &first_blocks, fast_config()).await;
    introduce(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), root).await;
    // What the client had stored when the first blocks were in.
    let (_, early) = wait_until(&mut sub, Some(ch), 30, |_, st| st.received > 0)
        .await
        .pop()
        .unwrap();
    let events = wait_finished(&mut sub, ch, 30).await;
    assert_eq!(last_status(&events), Status::Completed);
    wait_for_status(&provider, ch, Status::Completed).await;
    client.manager.stop().await.unwrap();
    provider.manager.stop().await.unwrap();

    let provider = stopped_node(
        &provider_db,
        &provider_key,
        &provider_blocks,
        provider_config,
    )
    .await;
    provider.manager.start().await.unwrap();
    let blocks = client_blocks.unwrap_or(first_blocks);
    let client = stopped_node(&client_db, &client_key, &blocks, fast_config()).await;
    // The kill: the client's store goes back to what it held mid-transfer.
    assert!(early.status.is_in_progress(), "{:?}", early.status);
    client
        .manager
        .channel_store()
        .apply(ChannelUpdate::new(early, Vec::new()))
        .await
        .unwrap();
    introduce(&client, &provider).await;
    KilledBeforeCompletion {
        provider,
        client,
        ch,
        root,
        data,
        _dir: dir,
    }
}

/// The client received every block, but was killed before its channel's completion reached
/// its store; the provider completed, and was restarted on its stores too. When the client
/// comes back it restarts the channel from what it stored, and the provider, which knows the
/// channel only as one it completed (read back from SQLite at start), completes it again:
/// the pull ends Completed on both sides with the file whole, where go-data-transfer's
/// responder refuses to restart a completed channel (`impl/restart.go`,
/// `validateRestartRequest`) and the client's channel fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_before_storing_its_completion_completes_against_a_restarted_provider() {
    let KilledBeforeCompletion {
        provider,
        client,
        ch,
        root,
        data,
        _dir,
    } = killed_before_completion(fast_config(), None).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    assert_eq!(
        client.manager.start().await.unwrap(),
        1,
        "channels in progress"
    );
    let events = wait_finished(&mut sub, ch, 30).await;
    let end = &events.last().unwrap().1;
    assert_eq!(end.status, Status::Completed, "{}", end.message);
    // Opened again, and completed by the provider's answer.
    let seen = codes(&events);
    assert!(
        seen.contains(&EventCode::Opened) && seen.contains(&EventCode::ResponderCompletes),
        "{seen:?}"
    );
    assert_file(&*client.store, &root, &data);
    let theirs = provider.manager.channel_state(ch).await.unwrap().unwrap();
    assert_eq!(theirs.status, Status::Completed);
}

/// As above, with the client's blocks lost with it and the client pausing and resuming the
/// pull as soon as the provider has answered that it completed, while the blocks are still on
/// their way (the chaos soak's failure in stop 34's CI). The provider serves the restart's
/// request, but not the one the resume sends (it serves nothing validated for a channel that
/// ended there) and refuses it; the client restarts the channel instead of failing it, and
/// the pull completes with the file whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_paused_and_resumed_while_its_provider_completes_it_again_completes() {
    let KilledBeforeCompletion {
        provider: _provider,
        client,
        ch,
        root,
        data,
        _dir,
    } = killed_before_completion(slow_config(), Some(Arc::new(MemoryBlockstore::new()))).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    client.manager.start().await.unwrap();
    wait_until(&mut sub, Some(ch), 30, |e, _| {
        e.code == EventCode::ResponderCompletes
    })
    .await;
    client.manager.pause_channel(ch).await.unwrap();
    client.manager.resume_channel(ch).await.unwrap();
    completes_whole(&mut sub, &client, ch, &root, &data).await;
}

/// Waits for `ch` to end on `client`, which must be Completed with the file under `root`
/// whole in its store.
async fn completes_whole(
    sub: &mut datatransfer::Subscription,
    client: &Node,
    ch: ChannelId,
    root: &Cid,
    data: &[u8],
) {
    let events = wait_finished(sub, ch, 30).await;
    let end = &events.last().unwrap().1;
    assert_eq!(
        end.status,
        Status::Completed,
        "{}: {:?}",
        end.message,
        codes(&events)
    );
    assert_file(&*client.store, root, data);
}

/// A node on these stores and with this identity (as a process started again on its files
/// would be), not started yet.
async fn stopped_node(
    db: &std::path::Path,
    key: &datatransfer::identity::Keypair,
    blocks: &Arc<dyn Blockstore>,
    config: datatransfer::ManagerConfig,
) -> Node {
    node(NodeOptions {
        sqlite: Some(db),
        keypair: Some(key.clone()),
        store: Some(Arc::clone(blocks)),
        config,
        start: false,
        ..NodeOptions::default()
    })
    .await
}

/// [`stopped_node`], started.
async fn durable_node(
    db: &std::path::Path,
    key: &datatransfer::identity::Keypair,
    blocks: &Arc<dyn Blockstore>,
    config: datatransfer::ManagerConfig,
) -> Node {
    let node = stopped_node(db, key, blocks, config).await;
    node.manager.start().await.unwrap();
    node
}

/// Waits up to 10 s for `node`'s side of `ch` to reach `status`.
async fn wait_for_status(node: &Node, ch: ChannelId, status: Status) {
    let r = timeout(Duration::from_secs(10), async {
        loop {
            let st = node.manager.channel_state(ch).await.unwrap();
            if st.as_ref().is_some_and(|s| s.status == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "{ch} did not reach {status:?}");
}

/// A client pauses a pull (its graphsync request is cancelled), the provider is restarted on
/// its stores meanwhile, then the client resumes: the provider no longer serves that request
/// and refuses the resuming one (it continues nothing validated), and the client restarts the
/// channel instead of failing it; the pull completes with the file whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_paused_while_its_provider_restarts_completes_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let provider_db = dir.path().join("p.sqlite");
    let provider_key = datatransfer::identity::Keypair::generate_ed25519();
    let provider_blocks: Arc<dyn Blockstore> = Arc::new(MemoryBlockstore::new());
    let data = random_bytes(4 << 20, 17);
    let root = import(&*provider_blocks, &data, 256 << 10).root;
    let provider = durable_node(&provider_db, &provider_key, &provider_blocks, slow_config()).await;
    let client = default_node().await;
    introduce(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    let ch = pull(&client, &provider, voucher(1), root).await;
    wait_until(&mut sub, Some(ch), 30, |_, st| st.received > 0).await;
    client.manager.pause_channel(ch).await.unwrap();
    provider.manager.stop().await.unwrap();
    drop(provider);

    let provider = durable_node(&provider_db, &provider_key, &provider_blocks, slow_config()).await;
    introduce(&client, &provider).await;
    client.manager.resume_channel(ch).await.unwrap();
    completes_whole(&mut sub, &client, ch, &root, &data).await;
}

/// A pusher (a storage client sending a deal's data) whose receiver took every block and
/// completed, killed before its own completion reached its store: it comes back with the
/// channel as stored mid-push (`as_stored`: Ongoing, or ResponderCompleted when the
/// receiver's Complete was stored and the end of its own sending was not), restarts it, and
/// the receiver answers that it completed. Its transport has nothing left to send for the
/// channel (the response died with the process), so the push completes on that answer;
/// before, it waited for the end of a response that no longer existed, restarted over and
/// over and at last failed as stalled (found by the chaos soak once it pushed).
async fn pusher_killed_before_storing_its_completion(as_stored: Status) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sender.sqlite");
    let key = datatransfer::identity::Keypair::generate_ed25519();
    let blocks: Arc<dyn Blockstore> = Arc::new(MemoryBlockstore::new());
    let data = random_bytes(1 << 20, 17);
    let root = import(&*blocks, &data, 64 << 10).root;
    let sender = durable_node(&db, &key, &blocks, fast_config()).await;
    let receiver = default_node().await;
    introduce(&sender, &receiver).await;
    let mut sub = sender.manager.subscribe().await.unwrap();
    let ch = sender
        .manager
        .open_push_channel(receiver.manager.peer_id(), voucher(1), root, all_selector())
        .await
        .unwrap();
    let (_, mut early) = wait_until(&mut sub, Some(ch), 30, |_, st| st.sent > 0)
        .await
        .pop()
        .unwrap();
    assert_eq!(
        last_status(&wait_finished(&mut sub, ch, 30).await),
        Status::Completed
    );
    wait_for_status(&receiver, ch, Status::Completed).await;
    sender.manager.stop().await.unwrap();

    // The kill: the sender's store goes back to what it held mid-push.
    let sender = stopped_node(&db, &key, &blocks, fast_config()).await;
    assert_eq!(early.status, Status::Ongoing);
    early.status = as_stored;
    sender
        .manager
        .channel_store()
        .apply(ChannelUpdate::new(early, Vec::new()))
        .await
        .unwrap();
    introduce(&sender, &receiver).await;
    let mut sub = sender.manager.subscribe().await.unwrap();
    assert_eq!(
        sender.manager.start().await.unwrap(),
        1,
        "channels in progress"
    );
    let events = wait_finished(&mut sub, ch, 30).await;
    let end = &events.last().unwrap().1;
    assert_eq!(
        end.status,
        Status::Completed,
        "{}: {:?}",
        end.message,
        codes(&events)
    );
    assert!(codes(&events).contains(&EventCode::ResponderCompletes));
    let theirs = receiver.manager.channel_state(ch).await.unwrap().unwrap();
    assert_eq!(theirs.status, Status::Completed);
    assert_file(&*receiver.store, &root, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_killed_mid_push_after_its_receiver_completed_completes() {
    pusher_killed_before_storing_its_completion(Status::Ongoing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_killed_after_its_receiver_completed_but_before_its_own_end_completes() {
    pusher_killed_before_storing_its_completion(Status::ResponderCompleted).await;
}

/// What a peer sends a node built but not started yet waits for its start, as
/// go-data-transfer hears nothing before its `Start`: the node's channels are not loaded
/// from its store before it, and a message about one of them (a restart, an answer, a
/// request to re-open) would be taken as about an unknown channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_arrives_before_start_waits_for_it() {
    let sender = default_node().await;
    let receiver = node(NodeOptions {
        start: false,
        ..NodeOptions::default()
    })
    .await;
    introduce(&sender, &receiver).await;
    let data = random_bytes(256 << 10, 19);
    let root = import(&*sender.store, &data, 64 << 10).root;
    let mut sub = sender.manager.subscribe().await.unwrap();
    let ch = sender
        .manager
        .open_push_channel(receiver.manager.peer_id(), voucher(1), root, all_selector())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.manager.channel_state(ch).await.unwrap(),
        None,
        "the receiver took the request before it started"
    );
    receiver.manager.start().await.unwrap();
    let events = wait_finished(&mut sub, ch, 30).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    assert_file(&*receiver.store, &root, &data);
}
