//! The go-data-transfer integration scenarios (v1.15.1 `impl/integration_test.go` and
//! `impl/restart_integration_test.go`), between real Managers over libp2p on 127.0.0.1.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use datatransfer::{
    ChannelId, Cid, EventCode, GraphsyncTransport, Registerable, Status, TransportConfigurer,
    TypedNode, Voucher, all_selector,
};
use datatransfer_integration_tests::*;
use datatransfer_ipld::blockstore::{Blockstore, BlockstoreError, MemoryBlockstore};

/// One channel between two fresh nodes: `pull` or push, a file of `size` bytes in chunks
/// of `chunk`, raw or dag-pb leaves. Both sides complete and the bytes arrive intact.
async fn round_trip(pull: bool, size: usize, chunk: usize, raw_leaves: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sender = node(NodeOptions {
        sqlite: Some(&dir.path().join("sender.sqlite")),
        ..NodeOptions::default()
    })
    .await;
    let receiver = node(NodeOptions {
        sqlite: Some(&dir.path().join("receiver.sqlite")),
        ..NodeOptions::default()
    })
    .await;
    introduce(&sender, &receiver).await;
    let data = random_bytes(size, size as u64);
    let file = import_with(&*sender.store, &data, chunk, raw_leaves);
    let (initiator, responder) = if pull {
        (&receiver, &sender)
    } else {
        (&sender, &receiver)
    };
    let mut isub = initiator.manager.subscribe().await.unwrap();
    let mut rsub = responder.manager.subscribe().await.unwrap();
    let to = responder.manager.peer_id();
    let id = if pull {
        initiator
            .manager
            .open_pull_channel(to, voucher(1), file.root, all_selector())
            .await
    } else {
        initiator
            .manager
            .open_push_channel(to, voucher(1), file.root, all_selector())
            .await
    }
    .unwrap();
    let ievents = wait_finished(&mut isub, id, 60).await;
    let msgs: Vec<_> = ievents
        .iter()
        .map(|(e, s)| format!("{:?}/{:?}: {}", e.code, s.status, e.message))
        .collect();
    assert_eq!(last_status(&ievents), Status::Completed, "{msgs:#?}");
    let revents = wait_finished(&mut rsub, id, 60).await;
    assert_eq!(
        last_status(&ievents),
        Status::Completed,
        "{:?}",
        codes(&ievents)
    );
    assert_eq!(
        last_status(&revents),
        Status::Completed,
        "{:?}",
        codes(&revents)
    );
    assert_file(&*receiver.store, &file.root, &data);
    // The store has the final state too.
    let stored = initiator.manager.channel_state(id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Completed);
    let moved = if pull { stored.received } else { stored.sent };
    assert!(
        moved >= size as u64,
        "{moved} bytes moved for a {size}-byte file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_pull_small_file_raw_leaves() {
    round_trip(true, 100_000, 16 << 10, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_push_small_file_raw_leaves() {
    round_trip(false, 100_000, 16 << 10, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_pull_small_file_dag_pb_leaves() {
    round_trip(true, 100_000, 16 << 10, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_push_small_file_dag_pb_leaves() {
    round_trip(false, 100_000, 16 << 10, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_pull_20_mib_raw_leaves() {
    round_trip(true, 20 << 20, 256 << 10, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_push_20_mib_dag_pb_leaves() {
    round_trip(false, 20 << 20, 256 << 10, false).await;
}

/// Go's TestMultipleRoundTripMultipleStores: each channel reads and writes its own block
/// store, chosen by a transport configurer from the voucher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_round_trips_with_a_store_per_channel() {
    struct PerDeal(std::sync::Mutex<std::collections::HashMap<u64, Arc<dyn Blockstore>>>);
    impl TransportConfigurer for PerDeal {
        fn configure(&self, channel: ChannelId, voucher: &Voucher, transport: &GraphsyncTransport) {
            let deal = voucher.decode::<TestVoucher>().unwrap().deal;
            let store = self.0.lock().unwrap().get(&deal).cloned().unwrap();
            transport.use_store(channel, store);
        }
    }
    let provider = default_node().await;
    let client = default_node().await;
    introduce(&client, &provider).await;
    let mut stores: Vec<Arc<MemoryBlockstore>> = Vec::new();
    let mut map = std::collections::HashMap::new();
    for deal in 0..3u64 {
        let s = Arc::new(MemoryBlockstore::new());
        map.insert(deal, s.clone() as Arc<dyn Blockstore>);
        stores.push(s);
    }
    client
        .manager
        .register_transport_configurer(TestVoucher::TYPE, Arc::new(PerDeal(map.into())))
        .await
        .unwrap();
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut psub = provider.manager.subscribe().await.unwrap();
    let mut files = Vec::new();
    for deal in 0..3u64 {
        let data = random_bytes(200_000, 100 + deal);
        let file = import(&*provider.store, &data, 32 << 10);
        let id = pull(&client, &provider, voucher(deal), file.root).await;
        files.push((id, file.root, data));
    }
    let mut left: std::collections::HashSet<ChannelId> = files.iter().map(|f| f.0).collect();
    let mut failed = None;
    let seen = wait_until(&mut sub, None, 30, |_, st| {
        if matches!(st.status, Status::Failed | Status::Cancelled) {
            failed = Some(st.channel_id);
            return true;
        }
        if st.status == Status::Completed {
            left.remove(&st.channel_id);
        }
        left.is_empty()
    })
    .await;
    if let Some(f) = failed {
        let mine: Vec<_> = seen
            .iter()
            .filter(|(e, st)| {
                st.channel_id == f
                    && !matches!(
                        e.code,
                        EventCode::DataReceived | EventCode::DataReceivedProgress
                    )
            })
            .map(|(e, st)| (e.code, st.status))
            .collect();
        panic!("PROVIDER {:?}\nCLIENT {mine:?}", dump(&mut psub, f).await);
    }
    for (deal, (_, root, data)) in files.iter().enumerate() {
        assert_file(&*stores[deal], root, data);
        assert!(
            !client.store.has(root).unwrap(),
            "the default store stays empty"
        );
        for other in (0..3).filter(|o| *o != deal) {
            assert!(
                !stores[other].has(root).unwrap(),
                "deal {deal} only in its own store"
            );
        }
    }
}

/// Go's TestManyReceiversAtOnce: one provider serves the same file to many clients at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_receivers_at_once() {
    let provider = default_node().await;
    let data = random_bytes(1 << 20, 7);
    let file = import(&*provider.store, &data, 64 << 10);
    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = default_node().await;
        introduce(&c, &provider).await;
        clients.push(c);
    }
    let mut waits = Vec::new();
    for c in &clients {
        let mut sub = c.manager.subscribe().await.unwrap();
        let id = pull(c, &provider, voucher(1), file.root).await;
        waits.push(tokio::spawn(async move {
            last_status(&wait_finished(&mut sub, id, 60).await)
        }));
    }
    for w in waits {
        assert_eq!(w.await.unwrap(), Status::Completed);
    }
    for c in &clients {
        assert_file(&*c.store, &file.root, &data);
    }
    assert_eq!(provider.validator.pulls.load(Ordering::SeqCst), 6);
}

/// Go's TestMultipleParallelTransfers: one client pulls several files from one provider at
/// the same time, more than the provider serves at once (the rest queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_parallel_transfers() {
    let provider = default_node().await;
    let client = default_node().await;
    introduce(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut psub = provider.manager.subscribe().await.unwrap();
    let mut files = Vec::new();
    for i in 0..10u64 {
        let data = random_bytes(300_000 + i as usize * 10_000, 50 + i);
        let file = import(&*provider.store, &data, 32 << 10);
        let id = pull(&client, &provider, voucher(i), file.root).await;
        files.push((id, file.root, data));
    }
    let mut left: std::collections::HashSet<ChannelId> = files.iter().map(|f| f.0).collect();
    let mut failed = None;
    wait_until(&mut sub, None, 60, |_, st| {
        if st.status == Status::Completed {
            left.remove(&st.channel_id);
        }
        if matches!(st.status, Status::Failed | Status::Cancelled) {
            failed = Some(st.channel_id);
            return true;
        }
        left.is_empty()
    })
    .await;
    if let Some(f) = failed {
        let mut seen = Vec::new();
        while let Ok(Some((e, st))) =
            tokio::time::timeout(std::time::Duration::from_millis(200), psub.next()).await
        {
            if st.channel_id == f
                && !matches!(
                    e.code,
                    EventCode::DataQueued
                        | EventCode::DataQueuedProgress
                        | EventCode::DataSent
                        | EventCode::DataSentProgress
                )
            {
                seen.push((e.code, e.message, st.status));
            }
        }
        panic!("PROVIDER {seen:?}");
    }
    for (_, root, data) in &files {
        assert_file(&*client.store, root, data);
    }
}

/// Go's TestUnrecognizedVoucherRoundTrip: a voucher of a type the responder does not know is
/// rejected, and the initiator's channel fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecognized_voucher_is_rejected() {
    for pull in [true, false] {
        let provider = default_node().await;
        let client = default_node().await;
        introduce(&client, &provider).await;
        let data = random_bytes(50_000, 3);
        let file = import(&*provider.store, &data, 16 << 10);
        let strange = TypedNode::encode(&StrangeVoucher { what: "?".into() }).unwrap();
        let mut sub = client.manager.subscribe().await.unwrap();
        let to = provider.manager.peer_id();
        let id = if pull {
            client
                .manager
                .open_pull_channel(to, strange, file.root, all_selector())
                .await
        } else {
            // Push the file the client holds to the provider.
            import(&*client.store, &data, 16 << 10);
            client
                .manager
                .open_push_channel(to, strange, file.root, all_selector())
                .await
        }
        .unwrap();
        let events = wait_finished(&mut sub, id, 30).await;
        assert_eq!(last_status(&events), Status::Failed, "{:?}", codes(&events));
        assert!(codes(&events).contains(&EventCode::Error));
        assert_eq!(provider.validator.pulls.load(Ordering::SeqCst), 0);
        assert_eq!(provider.validator.pushes.load(Ordering::SeqCst), 0);
    }
}

/// A validator that says no: the request is rejected and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_pull_fails_the_channel() {
    let provider = default_node().await;
    provider.validator.reject.store(true, Ordering::SeqCst);
    let client = default_node().await;
    introduce(&client, &provider).await;
    let file = import(&*provider.store, &random_bytes(50_000, 4), 16 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(1), file.root).await;
    let events = wait_finished(&mut sub, id, 30).await;
    assert_eq!(last_status(&events), Status::Failed, "{:?}", codes(&events));
    assert!(!client.store.has(&file.root).unwrap());
}

/// A block store that says when it was asked to make its blocks durable, or refuses to.
#[derive(Default)]
struct FlushRecorder {
    blocks: MemoryBlockstore,
    puts: std::sync::atomic::AtomicU64,
    durable: std::sync::atomic::AtomicU64,
    refuse: std::sync::atomic::AtomicBool,
}

impl Blockstore for FlushRecorder {
    fn get(
        &self,
        cid: &Cid,
    ) -> Result<Option<datatransfer_ipld::blockstore::Bytes>, BlockstoreError> {
        self.blocks.get(cid)
    }

    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), BlockstoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.blocks.put(cid, data)
    }

    fn flush(&self) -> Result<(), BlockstoreError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(BlockstoreError::Backend("disk on fire".into()));
        }
        self.durable
            .store(self.puts.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(())
    }
}

/// The receiving side, of a pull and of a push, completes only once its block store has made
/// every received block durable; a store that cannot fails the channel instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_completes_only_once_its_blocks_are_durable() {
    let sender = default_node().await;
    let file = import(&*sender.store, &random_bytes(300_000, 9), 16 << 10);
    for (pulled, refuse) in [(true, false), (false, false), (true, true), (false, true)] {
        let recorder = Arc::new(FlushRecorder::default());
        recorder.refuse.store(refuse, Ordering::SeqCst);
        let receiver = node(NodeOptions {
            store: Some(recorder.clone()),
            ..NodeOptions::default()
        })
        .await;
        introduce(&receiver, &sender).await;
        let mut sub = receiver.manager.subscribe().await.unwrap();
        let id = if pulled {
            pull(&receiver, &sender, voucher(1), file.root).await
        } else {
            push(&sender, &receiver, voucher(1), file.root).await
        };
        let events = wait_finished(&mut sub, id, 30).await;
        let puts = recorder.puts.load(Ordering::SeqCst);
        assert!(puts > 10, "{puts} blocks stored");
        if refuse {
            assert_ne!(
                last_status(&events),
                Status::Completed,
                "{:?}",
                codes(&events)
            );
            let said = events
                .iter()
                .any(|(e, _)| e.message.contains("disk on fire"));
            assert!(said, "{:?}", codes(&events));
        } else {
            assert_eq!(
                last_status(&events),
                Status::Completed,
                "{:?}",
                codes(&events)
            );
            assert_eq!(recorder.durable.load(Ordering::SeqCst), puts);
        }
    }
}

/// A provider that asks for a payment every `interval` bytes (and a final one if
/// `finalize`), and a client that knows it; both with `config`.
async fn charging(
    interval: u64,
    finalize: bool,
    config: impl Fn() -> datatransfer::ManagerConfig,
) -> (Node, Node, Arc<PayPerBytes>) {
    let provider = node(NodeOptions {
        config: config(),
        ..NodeOptions::default()
    })
    .await;
    let pay = Arc::new(PayPerBytes::new(interval, finalize));
    provider
        .manager
        .register_revalidator(TestVoucher::TYPE, pay.clone())
        .await
        .unwrap();
    let client = node(NodeOptions {
        config: config(),
        ..NodeOptions::default()
    })
    .await;
    introduce(&client, &provider).await;
    (provider, client, pay)
}

/// Go's TestRoundTripCancelledRequest: the initiator cancels a transfer paused by the
/// responder; both sides end Cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_request() {
    let (provider, client, _) = charging(256 << 10, false, fast_config).await;
    let file = import(&*provider.store, &random_bytes(2 << 20, 5), 64 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut psub = provider.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(1), file.root).await;
    // The provider pauses for payment; the client cancels instead of paying.
    wait_until(&mut sub, Some(id), 30, |e, _| {
        e.code == EventCode::NewVoucherResult
    })
    .await;
    client.manager.close_channel(id).await.unwrap();
    let events = wait_finished(&mut sub, id, 30).await;
    let pevents = wait_finished(&mut psub, id, 30).await;
    assert_eq!(last_status(&events), Status::Cancelled);
    assert_eq!(
        last_status(&pevents),
        Status::Cancelled,
        "{:?}",
        codes(&pevents)
    );
}

/// Go's TestPauseAndResume: the initiator pauses and resumes, then the responder does, in
/// the middle of a pull; the file still arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_from_each_side() {
    for initiator_pauses in [true, false] {
        let provider = default_node().await;
        let client = default_node().await;
        introduce(&client, &provider).await;
        let data = random_bytes(32 << 20, 11);
        let file = import(&*provider.store, &data, 16 << 10);
        let mut sub = client.manager.subscribe().await.unwrap();
        let mut psub = provider.manager.subscribe().await.unwrap();
        let id = pull(&client, &provider, voucher(1), file.root).await;
        wait_until(&mut sub, Some(id), 30, |e, _| {
            e.code == EventCode::DataReceived
        })
        .await;
        let (pauser, pauser_sub, other_sub) = if initiator_pauses {
            (&client, &mut sub, &mut psub)
        } else {
            (&provider, &mut psub, &mut sub)
        };
        pauser.manager.pause_channel(id).await.unwrap();
        let paused = if initiator_pauses {
            Status::InitiatorPaused
        } else {
            Status::ResponderPaused
        };
        // 32 MiB in 16 KiB blocks: the pause lands long before the end. A channel that
        // finished first would fail here with its events listed.
        let ended = |st: &datatransfer::ChannelState| {
            assert!(
                !st.status.is_terminal(),
                "finished before the pause: {st:?}"
            );
        };
        wait_until(pauser_sub, Some(id), 30, |_, st| {
            ended(st);
            st.status == paused
        })
        .await;
        wait_until(other_sub, Some(id), 30, |_, st| {
            ended(st);
            st.status == paused
        })
        .await;
        let received = client
            .manager
            .channel_state(id)
            .await
            .unwrap()
            .unwrap()
            .received;
        assert!(received < data.len() as u64, "paused mid-way");
        pauser.manager.resume_channel(id).await.unwrap();
        let events = wait_finished(&mut sub, id, 60).await;
        assert_eq!(
            last_status(&events),
            Status::Completed,
            "{:?}",
            codes(&events)
        );
        assert_file(&*client.store, &file.root, &data);
    }
}

/// Go's TestSimulatedRetrievalFlow: the provider pauses every 1 MiB until the client pays
/// with a new voucher, and asks for a final payment before completing (finalization).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_retrieval_flow() {
    let (provider, client, pay) = charging(1 << 20, true, fast_config).await;
    let data = random_bytes(5 << 20, 12);
    let file = import(&*provider.store, &data, 128 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut psub = provider.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(0), file.root).await;
    // The client pays whenever the provider asks (a result with something owed).
    let (events, paid) = pay_until_done(&mut sub, &client.manager, id, 0, 60).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    let pevents = wait_finished(&mut psub, id, 30).await;
    assert_eq!(last_status(&pevents), Status::Completed);
    assert_file(&*client.store, &file.root, &data);
    // 5 MiB in 1 MiB steps: 4 or 5 pauses while sending, plus the final one.
    let pauses = pay.pauses.load(Ordering::SeqCst);
    assert!((5..=6).contains(&pauses), "{pauses} pauses");
    assert_eq!(pay.vouchers.load(Ordering::SeqCst), pauses);
    assert_eq!(paid, pauses);
    let pcodes = codes(&pevents);
    assert!(pcodes.contains(&EventCode::BeginFinalizing), "{pcodes:?}");
}

/// A client slow to pay: each payment comes after both nodes' graphsync writers went idle
/// and closed their streams (the provider has nothing to send while it waits). The paused
/// request must outlive its quiet stream, as in go-graphsync, whose requests are not tied to
/// streams: the channel completes without being restarted or disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_slower_than_the_idle_streams_does_not_restart_the_channel() {
    let config = || {
        let mut c = fast_config();
        c.transport.graphsync.peer_idle_timeout = Duration::from_millis(200);
        c
    };
    let (provider, client, _) = charging(1 << 20, false, config).await;
    let data = random_bytes(3 << 20, 14);
    let file = import(&*provider.store, &data, 128 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut psub = provider.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(0), file.root).await;
    // Each payment four idle timeouts late: both writers idle meanwhile.
    let late = Duration::from_millis(800);
    let (events, paid) = pay_late_until_done(&mut sub, &client.manager, id, 0, 60, late).await;
    let got = codes(&events);
    let pgot = codes(&wait_finished(&mut psub, id, 30).await);
    assert_eq!(last_status(&events), Status::Completed, "{got:?}");
    assert!(paid >= 2, "{paid} payments: {got:?}, provider {pgot:?}");
    for unwanted in [
        EventCode::Disconnected,
        EventCode::Restart,
        EventCode::Error,
    ] {
        assert!(!got.contains(&unwanted), "{unwanted:?} in {got:?}");
    }
    assert!(!pgot.contains(&EventCode::Restart), "{pgot:?}");
    assert_file(&*client.store, &file.root, &data);
}

/// A client restarts a pull while it owes its provider a payment: the provider stays paused
/// (the restart's answer says so) and the rest of the file comes only as it is paid for.
/// Before, the validator's plain accept of the restart resumed the transfer, and the client
/// got everything after its first payment request unpaid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_a_payment_is_owed_stays_paused_until_paid() {
    let (provider, client, pay) = charging(1 << 20, false, fast_config).await;
    let data = random_bytes(4 << 20, 15);
    let file = import(&*provider.store, &data, 128 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(0), file.root).await;
    wait_until(&mut sub, Some(id), 30, |e, _| {
        e.code == EventCode::NewVoucherResult
    })
    .await;
    client.manager.restart_channel(id).await.unwrap();
    // The restart's answer: accepted, and still paused.
    let events = wait_until(&mut sub, Some(id), 30, |e, _| e.code == EventCode::Restart).await;
    let next = wait_until(&mut sub, Some(id), 30, |e, _| {
        matches!(
            e.code,
            EventCode::PauseResponder | EventCode::ResumeResponder
        )
    })
    .await;
    let (last, st) = next.last().unwrap();
    let got = codes(&events);
    assert_eq!(
        last.code,
        EventCode::PauseResponder,
        "{got:?} {:?}",
        codes(&next)
    );
    assert_eq!(st.status, Status::ResponderPaused);
    assert!(
        st.received < 2 << 20,
        "{} bytes for one payment",
        st.received
    );
    // Paid now, and whenever asked after.
    client.manager.send_voucher(id, voucher(1)).await.unwrap();
    let (events, paid) = pay_until_done(&mut sub, &client.manager, id, 1, 60).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    // Every interval asked for, every request paid (the one before the restart too).
    let pauses = pay.pauses.load(Ordering::SeqCst);
    assert!(
        pauses >= 3,
        "{pauses} payment requests for 4 MiB at 1 MiB each"
    );
    assert_eq!(1 + paid, pauses);
    assert_file(&*client.store, &file.root, &data);
}

/// Go's TestMultipleMessagesInExtension: payments due every few blocks, so the acceptance,
/// several requests for payment and the answers to them share graphsync messages (each under
/// its own extension name). Every payment is asked for, made and taken, and the file arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_every_few_blocks_share_graphsync_messages() {
    let (provider, client, pay) = charging(16_000, true, fast_config).await;
    // 256 000 bytes in 1000-byte blocks: hundreds of blocks to a 512 KiB message.
    let data = random_bytes(256_000, 13);
    let file = import(&*provider.store, &data, 1000);
    let mut sub = client.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(0), file.root).await;
    let (events, paid) = pay_until_done(&mut sub, &client.manager, id, 0, 60).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    assert_file(&*client.store, &file.root, &data);
    // A payment each 16 000 bytes (the last interval may end with the file), then the final.
    let pauses = pay.pauses.load(Ordering::SeqCst);
    let intervals = data.len() as u64 / 16_000;
    assert!(
        (intervals..=intervals + 2).contains(&pauses),
        "{pauses} pauses for {intervals} intervals"
    );
    assert_eq!(paid, pauses);
    assert_eq!(pay.vouchers.load(Ordering::SeqCst), pauses);
}

/// Go's TestDataTransferSubscribing, against the order Go's manager fires events for a pull
/// (impl/events.go, impl/initiating_test.go): Open, Opened (the graphsync request left),
/// Accept and ResumeResponder (the accepting response), a DataReceivedProgress and a
/// DataReceived per block, then FinishTransfer (graphsync finished) and ResponderCompletes
/// (the responder's Complete message) in either order (they travel on different streams),
/// then CleanupComplete.
///
/// The file spans several graphsync messages, so the accept (in the first one) is taken in
/// long before the responder can have sent its Complete; with a one-message DAG the Complete
/// can overtake the accept, and then, as in Go, the Accept event is refused by the state
/// machine (the channel still completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_the_events_of_a_pull_in_go_order() {
    use EventCode::*;
    let provider = default_node().await;
    let client = default_node().await;
    introduce(&client, &provider).await;
    let data = random_bytes(4 << 20, 21);
    let file = import(&*provider.store, &data, 128 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(1), file.root).await;
    let events = wait_finished(&mut sub, id, 30).await;
    let got = codes(&events);
    let blocks = file.blocks as usize;
    let mut expected = vec![Open, Opened, Accept, ResumeResponder];
    for _ in 0..blocks {
        expected.extend([DataReceivedProgress, DataReceived]);
    }
    expected.extend([FinishTransfer, CleanupComplete]);
    // The Complete message comes on the data-transfer stream, the blocks on graphsync's:
    // Go's state machine takes it at any point after the accept, and so do we.
    let at = got.iter().position(|c| *c == ResponderCompletes);
    let at = at.unwrap_or_else(|| panic!("no ResponderCompletes: {got:?}"));
    assert!(at >= 4, "{got:?}");
    let mut rest = got.clone();
    rest.remove(at);
    assert_eq!(rest, expected, "{got:?}");
    // Dropping the subscription unsubscribes; the manager carries on.
    drop(sub);
    let id2 = pull(&client, &provider, voucher(2), file.root).await;
    let mut sub2 = client.manager.subscribe().await.unwrap();
    wait_finished(&mut sub2, id2, 30).await;
}

/// The same for a push, from the initiator (the sender): Open, Accept and ResumeResponder
/// (the responder's acceptance over the network), a DataQueuedProgress + DataQueued per
/// block and a DataSentProgress + DataSent per block (queued before sent), FinishTransfer,
/// ResponderCompletes, CleanupComplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_the_events_of_a_push_in_go_order() {
    use EventCode::*;
    let receiver = default_node().await;
    let sender = default_node().await;
    introduce(&sender, &receiver).await;
    let data = random_bytes(200_000, 22);
    let file = import(&*sender.store, &data, 16 << 10);
    let mut sub = sender.manager.subscribe().await.unwrap();
    let id = push(&sender, &receiver, voucher(1), file.root).await;
    let events = wait_finished(&mut sub, id, 30).await;
    let got = codes(&events);
    let blocks = file.blocks as usize;
    // The responder's Complete message may overtake our last block-sent reports (it comes
    // on another stream); everything else is in a fixed order.
    let at = got.iter().position(|c| *c == ResponderCompletes);
    let at = at.unwrap_or_else(|| panic!("no ResponderCompletes: {got:?}"));
    let mut got = got.clone();
    got.remove(at);
    assert_eq!(got[..3], [Open, Accept, ResumeResponder], "{got:?}");
    assert_eq!(
        got[got.len() - 2..],
        [FinishTransfer, CleanupComplete],
        "{got:?}"
    );
    let middle = &got[3..got.len() - 2];
    assert_eq!(middle.len(), blocks * 4, "{got:?}");
    let (mut queued, mut sent) = (0, 0);
    for pair in middle.chunks(2) {
        match pair {
            [DataQueuedProgress, DataQueued] => queued += 1,
            [DataSentProgress, DataSent] => {
                sent += 1;
                assert!(
                    sent <= queued,
                    "a block is sent after it is queued: {got:?}"
                );
            }
            other => panic!("unexpected {other:?} in {got:?}"),
        }
    }
    assert_eq!((queued, sent), (blocks, blocks));
}

/// Go's TestAutoRestart: the connection drops in the middle of a pull; the channel monitor
/// restarts the channel and it completes, skipping the blocks already received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_restart_after_a_disconnect() {
    let provider = default_node().await;
    // The provider holds the transfer after 2 MiB until paid, so the connection drops while
    // the channel is still running, however fast the machine.
    provider
        .manager
        .register_revalidator(
            TestVoucher::TYPE,
            Arc::new(PayPerBytes::new(2 << 20, false)),
        )
        .await
        .unwrap();
    let client = default_node().await;
    introduce(&client, &provider).await;
    let data = random_bytes(8 << 20, 31);
    let file = import(&*provider.store, &data, 16 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let mut psub = provider.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(1), file.root).await;
    wait_until(&mut sub, Some(id), 30, |_, st| {
        st.status == Status::ResponderPaused
    })
    .await;
    assert!(client.manager.disconnect(provider.manager.peer_id()).await);
    // Pay for the first 2 MiB, then whenever asked, until the end.
    client.manager.send_voucher(id, voucher(2)).await.unwrap();
    let (events, _) = pay_until_done(&mut sub, &client.manager, id, 2, 60).await;
    let got = codes(&events);
    assert_eq!(last_status(&events), Status::Completed, "{got:?}");
    assert!(got.contains(&EventCode::Disconnected), "{got:?}");
    let opened = got.iter().filter(|c| **c == EventCode::Opened).count();
    assert!(opened >= 1, "the channel was opened again: {got:?}");
    let pevents = wait_finished(&mut psub, id, 30).await;
    let pgot = codes(&pevents);
    assert!(pgot.contains(&EventCode::Restart), "{pgot:?}");
    assert_eq!(last_status(&pevents), Status::Completed);
    assert_file(&*client.store, &file.root, &data);
    assert!(provider.validator.restarts.load(Ordering::SeqCst) >= 1);
}

/// Go's restart test "restart by the initiator after its process restarts": the client
/// pauses a pull half way, its process stops, and a new Manager on the same SQLite file,
/// identity and block store restarts the channel. No block is sent twice, and the DAG
/// arrives complete and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_the_initiator_process_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("client.sqlite");
    let provider = default_node().await;
    // The provider holds the transfer after 2 MiB until paid, so the client's pause lands
    // while the channel is still running, however fast the machine.
    provider
        .manager
        .register_revalidator(
            TestVoucher::TYPE,
            Arc::new(PayPerBytes::new(2 << 20, false)),
        )
        .await
        .unwrap();
    let key = datatransfer::identity::Keypair::generate_ed25519();
    let client_blocks: Arc<dyn Blockstore> = Arc::new(MemoryBlockstore::new());
    let client = node(NodeOptions {
        sqlite: Some(&db),
        store: Some(client_blocks.clone()),
        keypair: Some(key.clone()),
        ..NodeOptions::default()
    })
    .await;
    introduce(&client, &provider).await;
    let data = random_bytes(6 << 20, 41);
    let file = import(&*provider.store, &data, 16 << 10);
    let mut psub = provider.manager.subscribe().await.unwrap();
    let mut sub = client.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(1), file.root).await;
    wait_until(&mut sub, Some(id), 30, |_, st| {
        st.status == Status::ResponderPaused
    })
    .await;
    client.manager.pause_channel(id).await.unwrap();
    // Wait until everything the provider sent has arrived: nothing is in flight.
    let mut last = None;
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let c = client.manager.channel_state(id).await.unwrap().unwrap();
            let p = provider.manager.channel_state(id).await.unwrap().unwrap();
            if p.status == Status::BothPaused && c.received == p.sent && p.sent > 0 {
                return c.received;
            }
            last = Some((
                c.status,
                c.received,
                c.received_blocks_total,
                p.status,
                p.sent,
                p.sent_blocks_total,
            ));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not quiet: {last:?}"));
    assert!(quiet < data.len() as u64);
    client.manager.stop().await.unwrap();
    drop(sub);
    drop(client);

    // The same client, a new process: same identity, channel store and block store.
    let client = node(NodeOptions {
        sqlite: Some(&db),
        store: Some(client_blocks.clone()),
        keypair: Some(key),
        start: false,
        ..NodeOptions::default()
    })
    .await;
    introduce(&client, &provider).await;
    let mut sub = client.manager.subscribe().await.unwrap();
    assert_eq!(
        client.manager.start().await.unwrap(),
        1,
        "one channel to restart"
    );
    // Resume our side and pay for the rest.
    client.manager.resume_channel(id).await.unwrap();
    client.manager.send_voucher(id, voucher(2)).await.unwrap();
    // Pay whenever the provider asks again.
    let (events, _) = pay_until_done(&mut sub, &client.manager, id, 2, 60).await;
    let errors: Vec<_> = events
        .iter()
        .filter(|(e, _)| e.code == EventCode::Error)
        .map(|(e, _)| e.message.clone())
        .collect();
    if last_status(&events) != Status::Completed {
        panic!("{errors:?}; provider: {:?}", dump(&mut psub, id).await);
    }
    assert_file(&*client_blocks, &file.root, &data);
    let pevents = wait_finished(&mut psub, id, 30).await;
    assert_eq!(last_status(&pevents), Status::Completed);
    // Count the blocks the provider put on the wire: each exactly once.
    let sent = pevents
        .iter()
        .filter(|(e, _)| e.code == EventCode::DataSent)
        .count() as u64;
    let progress = pevents
        .iter()
        .filter(|(e, _)| e.code == EventCode::DataSentProgress)
        .count() as u64;
    assert_eq!(sent, file.blocks, "every block sent once, none twice");
    assert_eq!(progress, file.blocks);
}

/// A new pull of a DAG whose first blocks the client holds already (a channel that failed
/// half-way left them) asks the provider to skip them, and gets only the rest; with
/// `skip_held_blocks_on_open` off, as in go-data-transfer, the provider sends them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pull_of_a_dag_partly_at_hand_moves_only_the_rest() {
    for skip in [true, false] {
        let provider = default_node().await;
        let mut config = fast_config();
        config.transport.skip_held_blocks_on_open = skip;
        let client = node(NodeOptions {
            config,
            ..NodeOptions::default()
        })
        .await;
        introduce(&client, &provider).await;
        let data = random_bytes(2 << 20, 43);
        let file = import(&*provider.store, &data, 16 << 10);
        // The root and the first 40 blocks of the walk, as an earlier channel left them.
        let mut walked = datatransfer_ipld::traversal::BlockLog::default();
        datatransfer_ipld::traversal::walk(
            &*provider.store,
            file.root,
            datatransfer_ipld::selector::Selector::explore_all_recursively(),
            datatransfer_ipld::traversal::TraversalConfig::default(),
            &mut walked,
        )
        .unwrap();
        assert_eq!(walked.0.len() as u64, file.blocks);
        let held = 41;
        for b in &walked.0[..held] {
            let bytes = provider.store.get(&b.cid).unwrap().unwrap();
            client.store.put(&b.cid, &bytes).unwrap();
        }
        let mut psub = provider.manager.subscribe().await.unwrap();
        let mut sub = client.manager.subscribe().await.unwrap();
        let id = pull(&client, &provider, voucher(1), file.root).await;
        let events = wait_finished(&mut sub, id, 30).await;
        assert_eq!(last_status(&events), Status::Completed, "skip {skip}");
        assert_file(&*client.store, &file.root, &data);
        let pevents = wait_finished(&mut psub, id, 30).await;
        let sent = pevents
            .iter()
            .filter(|(e, _)| e.code == EventCode::DataSent)
            .count() as u64;
        let expected = if skip {
            file.blocks - held as u64
        } else {
            file.blocks
        };
        assert_eq!(sent, expected, "blocks sent, skip {skip}");
    }
}

/// Go's restart test "restart by the responder after its process restarts": the provider's
/// process stops mid-pull; a new Manager on its SQLite file asks the client to restart the
/// channel, and the pull completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_the_responder_process_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("provider.sqlite");
    let key = datatransfer::identity::Keypair::generate_ed25519();
    let provider_blocks: Arc<dyn Blockstore> = Arc::new(MemoryBlockstore::new());
    let provider = node(NodeOptions {
        sqlite: Some(&db),
        store: Some(provider_blocks.clone()),
        keypair: Some(key.clone()),
        ..NodeOptions::default()
    })
    .await;
    // The provider holds the transfer after 2 MiB until paid, so it is still in progress
    // when its process stops, however fast the machine.
    provider
        .manager
        .register_revalidator(
            TestVoucher::TYPE,
            Arc::new(PayPerBytes::new(2 << 20, false)),
        )
        .await
        .unwrap();
    let client = default_node().await;
    introduce(&client, &provider).await;
    let data = random_bytes(6 << 20, 42);
    let file = import(&*provider_blocks, &data, 16 << 10);
    let mut sub = client.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(1), file.root).await;
    wait_until(&mut sub, Some(id), 30, |_, st| {
        st.status == Status::ResponderPaused
    })
    .await;
    provider.manager.stop().await.unwrap();
    drop(provider);

    let provider = node(NodeOptions {
        sqlite: Some(&db),
        store: Some(provider_blocks.clone()),
        keypair: Some(key),
        start: false,
        ..NodeOptions::default()
    })
    .await;
    // The new process takes any voucher as payment.
    provider
        .manager
        .register_revalidator(TestVoucher::TYPE, Arc::new(ResumeOnVoucher))
        .await
        .unwrap();
    introduce(&client, &provider).await;
    assert_eq!(provider.manager.start().await.unwrap(), 1);
    client.manager.send_voucher(id, voucher(2)).await.unwrap();
    let events = wait_finished(&mut sub, id, 60).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    assert_file(&*client.store, &file.root, &data);
    assert!(provider.validator.restarts.load(Ordering::SeqCst) >= 1);
}

/// A push broken by a disconnect midway (either side dropping the connection) completes on
/// both sides, the file whole at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_broken_by_a_disconnect_completes_on_both_sides() {
    for receiver_drops in [false, true] {
        let mut config = fast_config();
        config.transport.graphsync.max_outbound_rate = Some(256 << 10);
        let sender = node(NodeOptions {
            config,
            ..NodeOptions::default()
        })
        .await;
        let receiver = default_node().await;
        introduce(&sender, &receiver).await;
        introduce(&receiver, &sender).await;
        let data = random_bytes(200 << 10, 41);
        let file = import(&*sender.store, &data, 16 << 10);
        let mut ssub = sender.manager.subscribe().await.unwrap();
        let mut rsub = receiver.manager.subscribe().await.unwrap();
        let id = sender
            .manager
            .open_push_channel(
                receiver.manager.peer_id(),
                voucher(1),
                file.root,
                all_selector(),
            )
            .await
            .unwrap();
        wait_until(&mut ssub, Some(id), 30, |_, st| st.sent >= 48 << 10).await;
        if receiver_drops {
            receiver.manager.disconnect(sender.manager.peer_id()).await;
        } else {
            sender.manager.disconnect(receiver.manager.peer_id()).await;
        }
        let revents = wait_finished(&mut rsub, id, 30).await;
        let sevents = wait_finished(&mut ssub, id, 30).await;
        let what = format!(
            "receiver drops {receiver_drops}: sender {:?}, receiver {:?}",
            codes(&sevents),
            codes(&revents)
        );
        assert_eq!(last_status(&revents), Status::Completed, "{what}");
        assert_eq!(last_status(&sevents), Status::Completed, "{what}");
        assert_file(&*receiver.store, &file.root, &data);
    }
}
