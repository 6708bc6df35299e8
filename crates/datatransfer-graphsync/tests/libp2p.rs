//! Graphsync nodes over real libp2p (TCP + noise + yamux on 127.0.0.1, ephemeral ports).

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datatransfer_graphsync::node::{
    AcceptAll, GraphSync, GraphSyncConfig, GraphSyncError, GraphSyncStats, Hooks, RequestDecision,
    RequestEvent, RequestHandle,
};
use datatransfer_graphsync::requester::VerifyError;
use datatransfer_graphsync::responder::{BlockDecision, OutgoingBlock};
use datatransfer_graphsync::v1::V1Ids;
use datatransfer_graphsync::{
    Block, Extensions, Message, RawNode, Request, RequestId, Response, ResponseStatus, Version,
};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::codec::{self, DAG_CBOR, RAW};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::TraversalError;
use datatransfer_ipld::unixfs::{ImportOptions, export, import_bytes};
use datatransfer_ipld::{Cid, Node};
use datatransfer_test_support::{listening_swarm, random_bytes};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// The whole-DAG selector.
fn all_selector() -> RawNode {
    RawNode::new(Selector::explore_all_recursively().to_dag_cbor()).unwrap()
}

/// Imports `data` as a UnixFS file of `chunk`-byte raw leaves; returns its root.
fn import_chunked(store: &dyn Blockstore, data: &[u8], chunk: usize) -> Cid {
    let opts = ImportOptions {
        chunk_size: chunk,
        max_links: 174,
        raw_leaves: true,
        ..ImportOptions::default()
    };
    import_bytes(store, data, &opts).unwrap().root
}

struct TestNode {
    peer: PeerId,
    addr: Multiaddr,
    gs: GraphSync,
    store: Arc<MemoryBlockstore>,
    dial: mpsc::Sender<(Multiaddr, oneshot::Sender<()>)>,
    control: datatransfer_streams::Control,
}

impl TestNode {
    /// Connects to `other` and waits until the connection is up.
    async fn connect(&self, other: &Self) {
        let (tx, rx) = oneshot::channel();
        self.dial.send((other.addr.clone(), tx)).await.unwrap();
        timeout(Duration::from_secs(10), rx).await.unwrap().unwrap();
    }
}

fn drive(
    mut swarm: Swarm<datatransfer_streams::Behaviour>,
) -> mpsc::Sender<(Multiaddr, oneshot::Sender<()>)> {
    let (tx, mut rx) = mpsc::channel::<(Multiaddr, oneshot::Sender<()>)>(4);
    tokio::spawn(async move {
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => {
                    if let SwarmEvent::ConnectionEstablished { .. } = ev {
                        for w in waiting.drain(..) { let _ = w.send(()); }
                    }
                }
                d = rx.recv() => match d {
                    Some((addr, done)) => { swarm.dial(addr).unwrap(); waiting.push(done); }
                    None => return,
                },
            }
        }
    });
    tx
}

async fn node(hooks: Arc<dyn Hooks>, config: GraphSyncConfig) -> TestNode {
    let (swarm, addr) = listening_swarm().await;
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    let store = Arc::new(MemoryBlockstore::new());
    let gs = GraphSync::start(peer, control.clone(), store.clone(), hooks, config).unwrap();
    let dial = drive(swarm);
    TestNode {
        peer,
        addr,
        gs,
        store,
        dial,
        control,
    }
}

fn only(v: Version) -> GraphSyncConfig {
    GraphSyncConfig {
        versions: vec![v],
        ..GraphSyncConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_and_a_10_mib_dag_cbor_dag_in_both_versions() {
    let server = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    let data = random_bytes(64 << 20, 11);
    let file = import_bytes(&*server.store, &data, &ImportOptions::default())
        .unwrap()
        .root;
    let leaves: Vec<Node> = (0..40u64)
        .map(|i| {
            Node::Link(
                server
                    .store
                    .put_new(RAW, &random_bytes(256 << 10, 2 * i + 1))
                    .unwrap(),
            )
        })
        .collect();
    let dag = server
        .store
        .put_new(
            DAG_CBOR,
            &codec::encode_dag_cbor(&Node::map(vec![("leaves", Node::List(leaves))])),
        )
        .unwrap();

    for version in [Version::V2, Version::V1] {
        let client = node(Arc::new(AcceptAll), only(version)).await;
        client.connect(&server).await;
        let req = client
            .gs
            .request(server.peer, file, all_selector(), Extensions::new())
            .await
            .unwrap();
        assert_eq!(
            timeout(Duration::from_secs(120), req.finish())
                .await
                .unwrap(),
            Ok(ResponseStatus::RequestCompletedFull)
        );
        let mut back = Vec::with_capacity(data.len());
        export(&*client.store, &file, &mut back).unwrap();
        assert!(back == data, "{version:?}: bytes differ");

        let req = client
            .gs
            .request(server.peer, dag, all_selector(), Extensions::new())
            .await
            .unwrap();
        assert_eq!(
            timeout(Duration::from_secs(60), req.finish())
                .await
                .unwrap(),
            Ok(ResponseStatus::RequestCompletedFull)
        );
        assert_eq!(
            client.store.len(),
            65 + 1 + 40,
            "{version:?}: 64 leaves + root, DAG root + 40 leaves"
        );
    }
}

/// Pauses every response after its third block and counts blocks seen.
#[derive(Default)]
struct PauseAtThree {
    seen: AtomicU64,
}

#[async_trait]
impl Hooks for PauseAtThree {
    async fn outgoing_block(
        &self,
        _: PeerId,
        _: RequestId,
        block: &OutgoingBlock,
    ) -> (BlockDecision, Extensions) {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let d = if block.index == 3 {
            BlockDecision::Pause
        } else {
            BlockDecision::Continue
        };
        (d, Extensions::new())
    }
}

/// The server unpauses its response to `req`, which then completes with the file whole.
async fn unpause_and_finish(
    server: &TestNode,
    client: &TestNode,
    req: RequestHandle,
    root: Cid,
    data: &[u8],
) {
    server
        .gs
        .unpause_response(client.peer, req.id, Extensions::new())
        .await;
    assert_eq!(
        timeout(Duration::from_secs(30), req.finish())
            .await
            .unwrap(),
        Ok(ResponseStatus::RequestCompletedFull)
    );
    let mut back = Vec::new();
    export(&*client.store, &root, &mut back).unwrap();
    assert!(back == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responder_pause_and_unpause_requester_pause_and_cancel() {
    let hooks = Arc::new(PauseAtThree::default());
    let server = node(hooks.clone(), GraphSyncConfig::default()).await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    client.connect(&server).await;
    let data = random_bytes(4 << 20, 3);
    let root = import_chunked(&*server.store, &data, 256 << 10);

    // The responder's hook pauses after three blocks; unpausing finishes the transfer.
    let mut req = client
        .gs
        .request(server.peer, root, all_selector(), Extensions::new())
        .await
        .unwrap();
    until_paused(&mut req).await;
    assert_eq!(hooks.seen.load(Ordering::SeqCst), 3);
    unpause_and_finish(&server, &client, req, root, &data).await;

    // A cancelled request ends with Cancelled.
    let other = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    other.connect(&server).await;
    let req = other
        .gs
        .request(server.peer, root, all_selector(), Extensions::new())
        .await
        .unwrap();
    req.cancel().await;
    assert_eq!(
        timeout(Duration::from_secs(10), req.finish())
            .await
            .unwrap(),
        Err(GraphSyncError::Cancelled)
    );
}

/// A response paused for longer than both nodes' idle timeout (a payment that takes its
/// time) finishes when unpaused: the quiet stream stays open while the response waits, and
/// the requester keeps its request. Before, the responder's writer closed its stream when
/// idle, and the requester failed the request at the stream's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_paused_past_the_idle_timeout_finishes_when_unpaused() {
    let config = || GraphSyncConfig {
        peer_idle_timeout: Duration::from_millis(100),
        ..GraphSyncConfig::default()
    };
    let hooks = Arc::new(PauseAtThree::default());
    let server = node(hooks.clone(), config()).await;
    let client = node(Arc::new(AcceptAll), config()).await;
    client.connect(&server).await;
    let data = random_bytes(2 << 20, 8);
    let root = import_chunked(&*server.store, &data, 256 << 10);
    let mut req = client
        .gs
        .request(server.peer, root, all_selector(), Extensions::new())
        .await
        .unwrap();
    until_paused(&mut req).await;
    // Five idle timeouts with nothing sent either way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.gs.stats().await.requests,
        1,
        "the request was dropped"
    );
    unpause_and_finish(&server, &client, req, root, &data).await;
}

/// Pauses every request as it arrives (a paid retrieval waiting for its first payment).
struct PauseAtStart;

#[async_trait]
impl Hooks for PauseAtStart {
    async fn incoming_request(&self, _: PeerId, _: &Request) -> RequestDecision {
        RequestDecision::Pause(Extensions::new())
    }
}

/// Waits for `req`'s `RequestPaused`, panicking if it completes first.
async fn until_paused(req: &mut RequestHandle) {
    loop {
        match timeout(Duration::from_secs(10), req.next())
            .await
            .expect("paused in time")
            .expect("an event")
        {
            RequestEvent::Response(r) if r.status == ResponseStatus::RequestPaused => return,
            RequestEvent::Completed(r) => panic!("completed early: {r:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_responses_give_their_room_to_the_requests_after_them() {
    // Room for one response at a time; every response pauses, at its start or after its third
    // block. Each request is still reached and paused in turn (a paused response holds no
    // room, as in go-graphsync), and each completes once resumed.
    for hooks in [
        Arc::new(PauseAtThree::default()) as Arc<dyn Hooks>,
        Arc::new(PauseAtStart),
    ] {
        let config = GraphSyncConfig {
            max_responses_per_peer: 1,
            max_responses: 1,
            ..GraphSyncConfig::default()
        };
        let server = node(hooks, config).await;
        let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
        client.connect(&server).await;
        let mut files = Vec::new();
        let mut reqs = Vec::new();
        for s in 0..3 {
            let data = random_bytes(1 << 20, 70 + s);
            let root = import_chunked(&*server.store, &data, 64 << 10);
            reqs.push(
                client
                    .gs
                    .request(server.peer, root, all_selector(), Extensions::new())
                    .await
                    .unwrap(),
            );
            files.push((root, data));
        }
        for req in &mut reqs {
            until_paused(req).await;
        }
        let stats = server.gs.stats().await;
        assert_eq!(stats.responses_paused, 3, "{stats:?}");
        assert_eq!(stats.responses_queued, 0, "{stats:?}");
        for req in reqs {
            server
                .gs
                .unpause_response(client.peer, req.id, Extensions::new())
                .await;
            // PauseAtThree pauses again at the third block of what is left; resume until done.
            let mut req = req;
            loop {
                match timeout(Duration::from_secs(30), req.next())
                    .await
                    .unwrap()
                    .unwrap()
                {
                    RequestEvent::Response(r) if r.status == ResponseStatus::RequestPaused => {
                        server
                            .gs
                            .unpause_response(client.peer, req.id, Extensions::new())
                            .await;
                    }
                    RequestEvent::Completed(r) => {
                        assert_eq!(r, Ok(ResponseStatus::RequestCompletedFull));
                        break;
                    }
                    _ => {}
                }
            }
        }
        for (root, data) in files {
            let mut back = Vec::new();
            export(&*client.store, &root, &mut back).unwrap();
            assert!(back == data);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_limit_wait_their_turn() {
    let config = GraphSyncConfig {
        max_responses_per_peer: 1,
        ..GraphSyncConfig::default()
    };
    let server = node(Arc::new(AcceptAll), config).await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    client.connect(&server).await;
    let mut roots = Vec::new();
    for s in 0..3 {
        let data = random_bytes(1 << 20, 50 + s);
        roots.push(import_chunked(&*server.store, &data, 64 << 10));
    }
    let mut reqs = Vec::new();
    for r in &roots {
        reqs.push(
            client
                .gs
                .request(server.peer, *r, all_selector(), Extensions::new())
                .await
                .unwrap(),
        );
    }
    for r in reqs {
        assert_eq!(
            timeout(Duration::from_secs(30), r.finish()).await.unwrap(),
            Ok(ResponseStatus::RequestCompletedFull)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_block_from_a_bogus_responder_fails_the_request() {
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    // A peer that answers every request with a block that is not the one asked for.
    let bogus = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            versions: vec![],
            ..GraphSyncConfig::default()
        },
    )
    .await;
    let mut control = bogus.control.clone();
    let mut incoming = control
        .accept(libp2p::StreamProtocol::new(Version::V2.protocol()))
        .unwrap();
    tokio::spawn(async move {
        while let Some((peer, mut stream)) = incoming.next().await {
            let mut control = control.clone();
            tokio::spawn(async move {
                let mut frames = datatransfer_graphsync::FrameReader::new(1 << 20);
                let mut buf = vec![0u8; 4096];
                let req = loop {
                    if let Ok(Some(body)) = frames.next_frame() {
                        break datatransfer_graphsync::v2::decode(&body, 64)
                            .unwrap()
                            .requests
                            .remove(0);
                    }
                    let n = stream.read(&mut buf).await.unwrap();
                    frames.push(&buf[..n]);
                };
                let root = req.root.unwrap();
                let wrong = b"not the block you asked for".to_vec();
                let wrong_cid = codec::cid_of(RAW, &wrong);
                let msg = Message {
                    responses: vec![Response {
                        id: req.id,
                        status: ResponseStatus::RequestCompletedFull,
                        metadata: vec![(root, datatransfer_graphsync::LinkAction::Present)],
                        extensions: Extensions::new(),
                    }],
                    blocks: vec![Block {
                        cid: wrong_cid,
                        data: wrong.into(),
                    }],
                    ..Message::default()
                };
                let mut out = control
                    .open_stream(peer, libp2p::StreamProtocol::new(Version::V2.protocol()))
                    .await
                    .unwrap();
                out.write_all(&datatransfer_graphsync::encode_frame(
                    &msg,
                    Version::V2,
                    &mut V1Ids::default(),
                ))
                .await
                .unwrap();
                out.close().await.unwrap();
            });
        }
    });
    client.connect(&bogus).await;
    let root: Cid = codec::cid_of(RAW, b"the real block");
    let req = client
        .gs
        .request(bogus.peer, root, all_selector(), Extensions::new())
        .await
        .unwrap();
    let res = timeout(Duration::from_secs(10), req.finish())
        .await
        .unwrap();
    assert!(
        matches!(
            res,
            Err(GraphSyncError::Verify(VerifyError::BlockNotSent(_)))
        ),
        "{res:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_is_refused_beyond_the_limit() {
    let config = GraphSyncConfig {
        max_requests_per_peer: 2,
        max_responses_per_peer: 1,
        ..GraphSyncConfig::default()
    };
    let server = node(Arc::new(AcceptAll), config).await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    client.connect(&server).await;
    let root = import_bytes(
        &*server.store,
        &random_bytes(2 << 20, 77),
        &ImportOptions {
            chunk_size: 64 << 10,
            max_links: 174,
            raw_leaves: true,
            ..ImportOptions::default()
        },
    )
    .unwrap()
    .root;
    let mut reqs = Vec::new();
    for _ in 0..6 {
        reqs.push(
            client
                .gs
                .request(server.peer, root, all_selector(), Extensions::new())
                .await
                .unwrap(),
        );
    }
    let (mut ok, mut busy, mut acknowledged) = (0, 0, 0);
    for mut r in reqs {
        let result = timeout(Duration::from_secs(30), async {
            while let Some(ev) = r.next().await {
                match ev {
                    RequestEvent::Response(resp)
                        if resp.status == ResponseStatus::RequestAcknowledged =>
                    {
                        acknowledged += 1
                    }
                    RequestEvent::Completed(res) => return res,
                    _ => {}
                }
            }
            Err(GraphSyncError::Closed)
        })
        .await
        .unwrap();
        match result {
            Ok(ResponseStatus::RequestCompletedFull) => ok += 1,
            Err(GraphSyncError::Verify(VerifyError::Failed(ResponseStatus::RequestFailedBusy))) => {
                busy += 1
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Every request answered: served, or refused as busy. How many found room depends on
    // when each arrived; one that waited may have been told so (its answer can also merge
    // into its own first data).
    assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
    assert_eq!(ok + busy, 6);
    assert!(acknowledged < ok, "acknowledged {acknowledged}, ok {ok}");
}

/// Pauses our own request once, on the second block it receives (the first leaf).
#[derive(Default)]
struct PauseMyRequest {
    seen: AtomicU64,
}

impl Hooks for PauseMyRequest {
    fn incoming_block(
        &self,
        _: PeerId,
        _: RequestId,
        _: &datatransfer_graphsync::node::IncomingBlock,
    ) -> BlockDecision {
        if self.seen.fetch_add(1, Ordering::SeqCst) == 1 {
            BlockDecision::Pause
        } else {
            BlockDecision::Continue
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_pauses_and_unpauses_without_blocks_sent_twice() {
    // One block per message, so the pause lands while the responder is still sending.
    let one_per_message = GraphSyncConfig {
        message_target: 1,
        ..GraphSyncConfig::default()
    };
    let server = node(Arc::new(AcceptAll), one_per_message).await;
    let client = node(
        Arc::new(PauseMyRequest::default()),
        GraphSyncConfig::default(),
    )
    .await;
    client.connect(&server).await;
    let data = random_bytes(40 * (64 << 10), 1);
    let root = import_chunked(&*server.store, &data, 64 << 10);
    let mut req = client
        .gs
        .request(server.peer, root, all_selector(), Extensions::new())
        .await
        .unwrap();
    let mut blocks = 0;
    // Wait for the first leaf, after which our hook paused the request.
    while blocks < 2 {
        if let RequestEvent::Block { .. } = timeout(Duration::from_secs(10), req.next())
            .await
            .unwrap()
            .unwrap()
        {
            blocks += 1;
        }
    }
    req.unpause(Extensions::new()).await;
    loop {
        match timeout(Duration::from_secs(10), req.next())
            .await
            .unwrap()
            .unwrap()
        {
            RequestEvent::Block { .. } => blocks += 1,
            RequestEvent::Completed(r) => {
                assert_eq!(r, Ok(ResponseStatus::RequestCompletedFull));
                break;
            }
            RequestEvent::Response(_) => {}
        }
    }
    assert_eq!(blocks, 1 + 40, "root and 40 leaves, each once");
    let mut back = Vec::new();
    export(&*client.store, &root, &mut back).unwrap();
    assert!(back == data);
}

/// Serves requests carrying the extension "x/store" from a second store.
struct TwoStores {
    other: Arc<MemoryBlockstore>,
}

impl Hooks for TwoStores {
    fn store_for_request(
        &self,
        _: PeerId,
        request: &datatransfer_graphsync::Request,
    ) -> Option<Arc<dyn Blockstore>> {
        request
            .extensions
            .get("x/store")
            .map(|_| self.other.clone() as Arc<dyn Blockstore>)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_can_have_its_own_store_on_both_sides() {
    let other = Arc::new(MemoryBlockstore::new());
    let server = node(
        Arc::new(TwoStores {
            other: other.clone(),
        }),
        GraphSyncConfig::default(),
    )
    .await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    client.connect(&server).await;
    let data = random_bytes(1 << 20, 99);
    let root = import_chunked(&*other, &data, 128 << 10);
    // Not in the server's own store: the default store finds nothing to send.
    let plain = client
        .gs
        .request(server.peer, root, all_selector(), Extensions::new())
        .await
        .unwrap();
    assert_eq!(
        timeout(Duration::from_secs(10), plain.finish())
            .await
            .unwrap(),
        Ok(ResponseStatus::RequestCompletedPartial)
    );
    // With the extension, the hook picks the other store; the client writes to its own pick.
    let mut ext = Extensions::new();
    ext.set("x/store", RawNode::new(vec![0xf5]).unwrap());
    let mine = Arc::new(MemoryBlockstore::new());
    let req = client
        .gs
        .request_into(server.peer, root, all_selector(), ext, mine.clone())
        .await
        .unwrap();
    assert_eq!(
        timeout(Duration::from_secs(10), req.finish())
            .await
            .unwrap(),
        Ok(ResponseStatus::RequestCompletedFull)
    );
    let mut back = Vec::new();
    export(&*mine, &root, &mut back).unwrap();
    assert!(back == data);
    assert!(
        client.store.is_empty(),
        "nothing went to the client's default store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responder_can_cancel() {
    let hooks = Arc::new(PauseAtThree::default());
    let server = node(hooks, GraphSyncConfig::default()).await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    client.connect(&server).await;
    let root = import_bytes(
        &*server.store,
        &random_bytes(2 << 20, 5),
        &ImportOptions {
            chunk_size: 256 << 10,
            max_links: 174,
            raw_leaves: true,
            ..ImportOptions::default()
        },
    )
    .unwrap()
    .root;
    let mut req = client
        .gs
        .request(server.peer, root, all_selector(), Extensions::new())
        .await
        .unwrap();
    loop {
        if let RequestEvent::Response(r) = timeout(Duration::from_secs(10), req.next())
            .await
            .unwrap()
            .unwrap()
            && r.status == ResponseStatus::RequestPaused
        {
            break;
        }
    }
    server.gs.cancel_response(client.peer, req.id).await;
    let res = timeout(Duration::from_secs(10), req.finish())
        .await
        .unwrap();
    assert_eq!(
        res,
        Err(GraphSyncError::Verify(VerifyError::Failed(
            ResponseStatus::RequestCancelled
        )))
    );
}

/// Records what the hooks see.
#[derive(Default)]
struct Recorder {
    sent_blocks: AtomicU64,
    sent_bytes: AtomicU64,
    queued: AtomicU64,
    tagged: AtomicU64,
    held_once: std::sync::atomic::AtomicBool,
    holding: std::sync::atomic::AtomicBool,
    release: tokio::sync::Notify,
}

#[async_trait]
impl Hooks for Recorder {
    fn outgoing_request(&self, _: PeerId, _: &datatransfer_graphsync::Request) -> Extensions {
        let mut e = Extensions::new();
        e.set("x/tag", RawNode::new(vec![0x01]).unwrap());
        e
    }

    async fn incoming_request(
        &self,
        _: PeerId,
        request: &datatransfer_graphsync::Request,
    ) -> datatransfer_graphsync::node::RequestDecision {
        if request.extensions.get("x/tag").is_some() {
            self.tagged.fetch_add(1, Ordering::SeqCst);
        }
        datatransfer_graphsync::node::RequestDecision::Accept(Extensions::new())
    }

    fn request_queued(&self, _: PeerId, _: &datatransfer_graphsync::Request) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    async fn outgoing_block(
        &self,
        _: PeerId,
        _: RequestId,
        _: &OutgoingBlock,
    ) -> (BlockDecision, Extensions) {
        // The very first block waits to be released, its response holding the only slot.
        if !self.held_once.swap(true, Ordering::SeqCst) {
            self.holding.store(true, Ordering::SeqCst);
            self.release.notified().await;
        }
        (BlockDecision::Continue, Extensions::new())
    }

    fn block_sent(&self, _: PeerId, _: RequestId, _: Cid, size: u64) {
        self.sent_blocks.fetch_add(1, Ordering::SeqCst);
        self.sent_bytes.fetch_add(size, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_outgoing_requests_queued_requests_and_every_block_sent() {
    let server_hooks = Arc::new(Recorder::default());
    let config = GraphSyncConfig {
        max_responses_per_peer: 1,
        ..GraphSyncConfig::default()
    };
    let server = node(server_hooks.clone(), config).await;
    let client = node(Arc::new(Recorder::default()), GraphSyncConfig::default()).await;
    client.connect(&server).await;
    let mut roots = Vec::new();
    let mut total_bytes = 0u64;
    for s in 0..3 {
        let data = random_bytes(512 << 10, 200 + s);
        let imported = import_bytes(
            &*server.store,
            &data,
            &ImportOptions {
                chunk_size: 64 << 10,
                max_links: 174,
                raw_leaves: true,
                ..ImportOptions::default()
            },
        )
        .unwrap();
        total_bytes +=
            server.store.get(&imported.root).unwrap().unwrap().len() as u64 + imported.size;
        roots.push(imported.root);
    }
    let mut reqs = Vec::new();
    for r in &roots {
        reqs.push(
            client
                .gs
                .request(server.peer, *r, all_selector(), Extensions::new())
                .await
                .unwrap(),
        );
    }
    let waits: Vec<_> = reqs
        .into_iter()
        .map(|r| tokio::spawn(async move { timeout(Duration::from_secs(30), r.finish()).await }))
        .collect();
    // The running response holds the only slot, so the others wait in the queue.
    timeout(Duration::from_secs(10), async {
        while !server_hooks.holding.load(Ordering::SeqCst)
            || server_hooks.queued.load(Ordering::SeqCst) < 2
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    server_hooks.release.notify_one();
    for w in waits {
        assert_eq!(
            w.await.unwrap().unwrap(),
            Ok(ResponseStatus::RequestCompletedFull)
        );
    }
    assert_eq!(
        server_hooks.tagged.load(Ordering::SeqCst),
        3,
        "the client's outgoing-request hook tagged every request"
    );
    assert!(
        server_hooks.queued.load(Ordering::SeqCst) >= 2,
        "one response at a time: the others queued"
    );
    assert_eq!(
        server_hooks.sent_blocks.load(Ordering::SeqCst),
        3 * 9,
        "a root and 8 leaves per file"
    );
    assert_eq!(server_hooks.sent_bytes.load(Ordering::SeqCst), total_bytes);
}

/// Counts the bytes of blocks a responder put on the wire.
#[derive(Default)]
struct SentBytes(AtomicU64);

#[async_trait]
impl Hooks for SentBytes {
    fn block_sent(&self, _: PeerId, _: RequestId, _: Cid, size: u64) {
        self.0.fetch_add(size, Ordering::SeqCst);
    }
}

/// A block store that takes 8 ms per block written, like a disk that syncs every block.
struct SlowStore {
    inner: MemoryBlockstore,
    stored: AtomicU64,
}

impl Blockstore for SlowStore {
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
        std::thread::sleep(Duration::from_millis(8));
        self.stored.fetch_add(data.len() as u64, Ordering::SeqCst);
        self.inner.put(cid, data)
    }
}

/// A requester whose store is slower than the network holds a bounded amount of received
/// data: its readers wait for the inbound byte budget, so TCP slows the responder down,
/// instead of messages piling up in a queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_slows_the_responder_instead_of_queueing_everything() {
    let sent = Arc::new(SentBytes::default());
    let server = node(sent.clone(), GraphSyncConfig::default()).await;
    let client = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            max_inbound_bytes: 1 << 20,
            ..GraphSyncConfig::default()
        },
    )
    .await;
    client.connect(&server).await;
    let data = random_bytes(64 << 20, 7);
    let root = import_chunked(&*server.store, &data, 256 << 10);
    let store = Arc::new(SlowStore {
        inner: MemoryBlockstore::new(),
        stored: AtomicU64::new(0),
    });
    let req = client
        .gs
        .request_into(
            server.peer,
            root,
            all_selector(),
            Extensions::new(),
            store.clone(),
        )
        .await
        .unwrap();
    // Sample how far the responder runs ahead of the store while the request runs.
    let (watch_sent, watch_store) = (sent.clone(), store.clone());
    let watcher = tokio::spawn(async move {
        let mut widest = 0u64;
        loop {
            let stored = watch_store.stored.load(Ordering::SeqCst);
            let gap = watch_sent.0.load(Ordering::SeqCst).saturating_sub(stored);
            widest = widest.max(gap);
            if stored >= 64 << 20 {
                return widest;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(
        timeout(Duration::from_secs(60), req.finish())
            .await
            .unwrap(),
        Ok(ResponseStatus::RequestCompletedFull)
    );
    let widest = timeout(Duration::from_secs(10), watcher)
        .await
        .unwrap()
        .unwrap();
    // 1 MiB of budget, plus what the sockets and yamux hold; never most of the 64 MiB.
    assert!(
        widest < 10 << 20,
        "the responder ran {} MiB ahead of the store",
        widest >> 20
    );
    let mut back = Vec::new();
    export(&store.inner, &root, &mut back).unwrap();
    assert!(back == data);
}

/// The request ended because the responder's walk failed (go-graphsync's status for that).
fn assert_failed_unknown(res: &Result<ResponseStatus, GraphSyncError>) {
    assert!(
        matches!(
            res,
            Err(GraphSyncError::Verify(VerifyError::Failed(
                ResponseStatus::RequestFailedUnknown
            )))
        ),
        "{res:?}"
    );
}

/// Selectors a peer could send to make a responder work without end (a union that doubles
/// at every level of a 60-block chain; a range of 2^62 indexes) end at once, and the
/// responder goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_that_would_run_away_end_at_once() {
    let provider = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    client.connect(&provider).await;
    let mut head = provider.store.put_new(RAW, b"end").unwrap();
    for _ in 0..60 {
        let list = Node::List(vec![Node::Integer(7), Node::Link(head)]);
        head = provider
            .store
            .put_new(codec::DAG_CBOR, &codec::encode_dag_cbor(&list))
            .unwrap();
    }
    let selector = |node: Node| RawNode::new(codec::encode_dag_cbor(&node)).unwrap();
    let empty = || Node::map(Vec::<(String, Node)>::new());
    let explore_all_edge = || Node::map([("a", Node::map([(">", Node::map([("@", empty())]))]))]);
    let doubling = selector(Node::map([(
        "R",
        Node::map([
            ("l", Node::map([("none", empty())])),
            (
                ":>",
                Node::map([(
                    "|",
                    Node::List(vec![explore_all_edge(), explore_all_edge()]),
                )]),
            ),
        ]),
    )]));
    let huge_range = selector(Node::map([(
        "r",
        Node::map([
            ("$", Node::Integer(1 << 62)),
            (">", Node::map([(".", empty())])),
            ("^", Node::Integer(0)),
        ]),
    )]));
    let run = |selector: RawNode| {
        let gs = client.gs.clone();
        let peer = provider.peer;
        async move {
            let req = gs
                .request(peer, head, selector, Extensions::new())
                .await
                .unwrap();
            timeout(Duration::from_secs(10), req.finish())
                .await
                .unwrap()
        }
    };
    let res = run(doubling).await;
    // The responder gave up on the walk and said so.
    assert_failed_unknown(&res);
    assert_eq!(
        run(huge_range).await,
        Ok(ResponseStatus::RequestCompletedFull)
    );
    assert_eq!(
        run(all_selector()).await,
        Ok(ResponseStatus::RequestCompletedFull)
    );
}

/// go-graphsync's `MaxLinksPerIncomingRequests` and `MaxLinksPerOutgoingRequests`: a walk past
/// the limit ends the request, on the responder (which says `RequestFailedUnknown`) and on
/// the requester; within it, the same request completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_limits_per_request_end_longer_walks() {
    let strict_provider = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            max_links_per_incoming_request: Some(20),
            ..GraphSyncConfig::default()
        },
    )
    .await;
    let strict_client = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            max_links_per_outgoing_request: Some(20),
            ..GraphSyncConfig::default()
        },
    )
    .await;
    let provider = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    for (c, p) in [
        (&client, &strict_provider),
        (&strict_client, &provider),
        (&client, &provider),
    ] {
        c.connect(p).await;
    }
    let chain = |store: &dyn Blockstore, len: usize| {
        let mut head = store.put_new(RAW, b"end").unwrap();
        for _ in 0..len {
            let list = Node::List(vec![Node::Link(head)]);
            head = store
                .put_new(DAG_CBOR, &codec::encode_dag_cbor(&list))
                .unwrap();
        }
        head
    };
    let (short, long) = (19, 30);
    for p in [&strict_provider, &provider] {
        chain(&*p.store, short);
        chain(&*p.store, long);
    }
    let short = chain(&MemoryBlockstore::new(), short);
    let long = chain(&MemoryBlockstore::new(), long);
    let pull = |c: &TestNode, p: &TestNode, root: Cid| {
        let (gs, peer) = (c.gs.clone(), p.peer);
        async move {
            let req = gs
                .request(peer, root, all_selector(), Extensions::new())
                .await
                .unwrap();
            timeout(Duration::from_secs(10), req.finish())
                .await
                .unwrap()
        }
    };
    // 20 blocks (the root and 19 links) fit; 31 do not.
    assert_eq!(
        pull(&client, &strict_provider, short).await,
        Ok(ResponseStatus::RequestCompletedFull)
    );
    let refused = pull(&client, &strict_provider, long).await;
    assert_failed_unknown(&refused);
    assert_eq!(
        pull(&strict_client, &provider, short).await,
        Ok(ResponseStatus::RequestCompletedFull)
    );
    let stopped = pull(&strict_client, &provider, long).await;
    assert!(
        matches!(
            stopped,
            Err(GraphSyncError::Verify(VerifyError::Traversal(ref e)))
                if **e == TraversalError::TooManyLinks(20)
        ),
        "{stopped:?}"
    );
    assert_eq!(
        pull(&client, &provider, long).await,
        Ok(ResponseStatus::RequestCompletedFull)
    );
}

/// `max_inbound_rate` holds a requester's reading, and `max_outbound_rate` a responder's
/// writing, to the rate: 3 MiB at 4 MiB/s cannot take less than the 0.75 s it is due minus the
/// quarter second allowed at once (a lower bound only: a slow machine only makes it longer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_spread_a_pull_over_time() {
    let limited = |inbound: bool| GraphSyncConfig {
        max_inbound_rate: inbound.then_some(4 << 20),
        max_outbound_rate: (!inbound).then_some(4 << 20),
        ..GraphSyncConfig::default()
    };
    for inbound in [true, false] {
        let (client_config, provider_config) = if inbound {
            (limited(true), GraphSyncConfig::default())
        } else {
            (GraphSyncConfig::default(), limited(false))
        };
        let provider = node(Arc::new(AcceptAll), provider_config).await;
        let client = node(Arc::new(AcceptAll), client_config).await;
        client.connect(&provider).await;
        let data = random_bytes(3 << 20, 41);
        let root = import_chunked(&*provider.store, &data, 64 << 10);
        let started = std::time::Instant::now();
        let req = client
            .gs
            .request(provider.peer, root, all_selector(), Extensions::new())
            .await
            .unwrap();
        let done = timeout(Duration::from_secs(20), req.finish())
            .await
            .unwrap();
        assert_eq!(done, Ok(ResponseStatus::RequestCompletedFull));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "inbound {inbound}: {took:?}"
        );
        let mut out = Vec::new();
        export(&*client.store, &root, &mut out).unwrap();
        assert!(out == data, "the file arrived whole");
    }
}

/// A responder serving from a trusted store (its blocks checked on their way in) does not hash
/// them again, as go-graphsync's does; the requester checks every block all the same. A block
/// damaged behind the store's back (planted here with `put_verified`) is served as it is and
/// refused by the requester, which stores nothing of it; with `trust_local_stores` off, the
/// responder finds the damage itself and sends nothing of the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_store_is_served_unhashed_and_the_requester_still_checks() {
    for trust in [true, false] {
        let config = GraphSyncConfig {
            trust_local_stores: trust,
            ..GraphSyncConfig::default()
        };
        let server = node(Arc::new(AcceptAll), config).await;
        let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
        client.connect(&server).await;
        assert!(server.store.trusted());
        // A good file is served either way.
        let data = random_bytes(1 << 20, 41);
        let root = import_chunked(&*server.store, &data, 64 << 10);
        let req = client
            .gs
            .request(server.peer, root, all_selector(), Extensions::new())
            .await
            .unwrap();
        assert_eq!(req.finish().await, Ok(ResponseStatus::RequestCompletedFull));
        let mut out = Vec::new();
        export(&*client.store, &root, &mut out).unwrap();
        assert!(out == data, "trust {trust}");

        // A raw block whose bytes no longer match its CID.
        let bad = codec::cid_of(RAW, b"the block as it was written");
        server
            .store
            .put_verified(&bad, b"the block as bit rot left it")
            .unwrap();
        let req = client
            .gs
            .request(server.peer, bad, all_selector(), Extensions::new())
            .await
            .unwrap();
        let res = timeout(Duration::from_secs(10), req.finish())
            .await
            .unwrap();
        if trust {
            // Its CID, built from the bytes that came, is not the one the walk awaits.
            assert!(
                matches!(
                    res,
                    Err(GraphSyncError::Verify(VerifyError::BlockNotSent(c))) if c == bad
                ),
                "{res:?}"
            );
        } else {
            // The responder's walk fails on the block: nothing of it is sent.
            assert!(
                matches!(
                    res,
                    Err(GraphSyncError::Verify(VerifyError::Failed(
                        ResponseStatus::RequestFailedUnknown
                    )))
                ),
                "{res:?}"
            );
        }
        assert!(!client.store.has(&bad).unwrap(), "trust {trust}");
    }
}

/// The node never waits for one request's reader: a handle nobody reads, with thousands of
/// events queued, holds up neither its own request nor another peer's (before, the node
/// waited once 256 events were unread, and every request of every peer stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_events_nobody_reads_holds_up_no_other() {
    let slow = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    let other = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    let client = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    client.connect(&slow).await;
    client.connect(&other).await;
    // 2,048 leaves of 1 KiB: more than 2,000 events on the unread handle.
    let opts = ImportOptions {
        chunk_size: 1 << 10,
        raw_leaves: true,
        ..ImportOptions::default()
    };
    let big = import_bytes(&*slow.store, &random_bytes(2 << 20, 31), &opts)
        .unwrap()
        .root;
    let small_data = random_bytes(64 << 10, 32);
    let small = import_bytes(&*other.store, &small_data, &opts)
        .unwrap()
        .root;
    let unread = client
        .gs
        .request(slow.peer, big, all_selector(), Extensions::new())
        .await
        .unwrap();
    // Wait until the unread request has all its blocks, queued events and all.
    timeout(Duration::from_secs(30), async {
        while client.store.get(&big).unwrap().is_none() || client.gs.stats().await.requests > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the unread request completes");
    let read = client
        .gs
        .request(other.peer, small, all_selector(), Extensions::new())
        .await
        .unwrap();
    assert_eq!(
        timeout(Duration::from_secs(30), read.finish())
            .await
            .expect("another peer's request is not held up"),
        Ok(ResponseStatus::RequestCompletedFull)
    );
    let mut back = Vec::new();
    export(&*client.store, &small, &mut back).unwrap();
    assert_eq!(back, small_data);
    // The unread events are all there, in order, ending with the request's completion.
    let mut unread = unread;
    let mut blocks = 0;
    let last = loop {
        match unread.next().await.unwrap() {
            RequestEvent::Block { .. } => blocks += 1,
            RequestEvent::Response(_) => {}
            RequestEvent::Completed(r) => break r,
        }
    };
    assert!(blocks > 2_048, "{blocks} block events");
    assert_eq!(last, Ok(ResponseStatus::RequestCompletedFull));
}

/// A peer that asks `server` for `root` over a raw stream and never reads what comes back:
/// the responses fill the stream's window and the server's writes wait. Returns the peer
/// and the stream it sends on (to send more).
async fn ask_and_never_read(
    server: &TestNode,
    root: Cid,
) -> (TestNode, datatransfer_streams::Stream) {
    let deaf = deaf_node().await;
    deaf.connect(server).await;
    let out = write_on_new_stream(&deaf, server.peer, &ask_frame(root)).await;
    (deaf, out)
}

/// Opens a graphsync 2.0.0 stream from `from` to `to` and writes `bytes` on it, raw.
async fn write_on_new_stream(
    from: &TestNode,
    to: PeerId,
    bytes: &[u8],
) -> datatransfer_streams::Stream {
    let mut out = from
        .control
        .clone()
        .open_stream(to, libp2p::StreamProtocol::new(Version::V2.protocol()))
        .await
        .unwrap();
    out.write_all(bytes).await.unwrap();
    out.flush().await.unwrap();
    out
}

/// A peer that hands each graphsync stream it takes to `read`, with a sender for what it
/// finds.
async fn deaf_node_with<F, Fut>(read: F) -> (TestNode, mpsc::UnboundedReceiver<ResponseStatus>)
where
    F: Fn(datatransfer_streams::Stream, mpsc::UnboundedSender<ResponseStatus>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let peer = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            versions: vec![],
            ..GraphSyncConfig::default()
        },
    )
    .await;
    let mut incoming = peer
        .control
        .clone()
        .accept(libp2p::StreamProtocol::new(Version::V2.protocol()))
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            tokio::spawn(read(stream, tx.clone()));
        }
    });
    (peer, rx)
}

/// A peer that takes graphsync streams and never reads them.
async fn deaf_node() -> TestNode {
    // Each stream is held, never read, for as long as the test runs.
    deaf_node_with(|stream, _| async move {
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await
    .0
}

/// A version 2 frame asking for everything under `root`.
fn ask_frame(root: Cid) -> datatransfer_graphsync::Frame {
    let ask = Message {
        requests: vec![Request::new(
            RequestId([7; 16]),
            root,
            all_selector(),
            0,
            Extensions::new(),
        )],
        ..Message::default()
    };
    datatransfer_graphsync::encode_frame(&ask, Version::V2, &mut V1Ids::default())
}

/// Waits until the server's stats pass `check`.
async fn until_stats(server: &TestNode, check: impl Fn(&GraphSyncStats) -> bool) -> GraphSyncStats {
    timeout(Duration::from_secs(20), async {
        loop {
            let stats = server.gs.stats().await;
            if check(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("stats never got there")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_that_never_reads_loses_its_response_after_the_write_timeout() {
    let server = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            write_timeout: Duration::from_millis(300),
            ..GraphSyncConfig::default()
        },
    )
    .await;
    let root = import_chunked(&*server.store, &random_bytes(8 << 20, 5), 64 << 10);
    let (_deaf, _out) = ask_and_never_read(&server, root).await;
    until_stats(&server, |s| s.responses == 1).await;
    // The writes wait on the full window; after the timeout (and once more on a new stream)
    // the response ends, and its slot is free.
    until_stats(&server, |s| s.responses == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_responses_from_a_peer_that_never_reads_queue_bounded_advice() {
    let server = node(Arc::new(AcceptAll), GraphSyncConfig::default()).await;
    let root = import_chunked(&*server.store, &random_bytes(8 << 20, 6), 64 << 10);
    let (_deaf, mut out) = ask_and_never_read(&server, root).await;
    until_stats(&server, |s| s.responses == 1).await;
    // Time for the response to fill the window the deaf peer never empties.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Responses under ids the server never used: each would be answered with a cancel, and
    // none of them can be written.
    let stale = Message {
        responses: (0..2000u32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                Response {
                    id: RequestId(id),
                    status: ResponseStatus::PartialResponse,
                    metadata: Vec::new(),
                    extensions: Extensions::new(),
                }
            })
            .collect(),
        ..Message::default()
    };
    out.write_all(&datatransfer_graphsync::encode_frame(
        &stale,
        Version::V2,
        &mut V1Ids::default(),
    ))
    .await
    .unwrap();
    out.flush().await.unwrap();
    // The node has read them all once one cancel is queued (it handles a message whole) ...
    let stats = until_stats(&server, |s| s.own_messages_queued > 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats_after = server.gs.stats().await;
    // ... and queued no more than a bounded few cancels for a peer that takes none.
    assert!(
        stats_after.own_messages_queued <= 64,
        "{stats:?} then {stats_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_s_streams_past_the_limit_replace_its_oldest() {
    let server = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            max_inbound_streams_per_peer: 3,
            ..GraphSyncConfig::default()
        },
    )
    .await;
    let peer = deaf_node().await;
    peer.connect(&server).await;
    // Five streams, each with the start of a 1,000-byte frame that never ends.
    let mut streams = Vec::new();
    for _ in 0..5 {
        let s = write_on_new_stream(&peer, server.peer, &[0xe8, 0x07, 0xa1, 0x61]).await;
        streams.push(s);
        // One at a time, so the server sees them in this order.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut buf = [0u8; 16];
    // The two oldest were dropped: reset, or closed, under the peer.
    for (i, s) in streams.iter_mut().enumerate().take(2) {
        let read = timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stream {i} still open"));
        assert!(matches!(read, Ok(0) | Err(_)), "stream {i}: {read:?}");
    }
    // The three newest are still being read: nothing comes back, and the stream stays open.
    for (i, s) in streams.iter_mut().enumerate().skip(2) {
        assert!(
            timeout(Duration::from_millis(200), s.read(&mut buf))
                .await
                .is_err(),
            "stream {i} ended"
        );
    }
    // A new stream of the peer's replaces the oldest left, and is read: its request is served.
    let root = import_chunked(&*server.store, &random_bytes(8 << 20, 8), 64 << 10);
    let _newest = write_on_new_stream(&peer, server.peer, &ask_frame(root)).await;
    until_stats(&server, |s| s.responses == 1).await;
    let read = timeout(Duration::from_secs(5), streams[2].read(&mut buf))
        .await
        .expect("the oldest left still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_requester_that_reads_is_never_cut_off_by_the_write_timeout() {
    let server = node(
        Arc::new(AcceptAll),
        GraphSyncConfig {
            write_timeout: Duration::from_secs(1),
            ..GraphSyncConfig::default()
        },
    )
    .await;
    let root = import_chunked(&*server.store, &random_bytes(1 << 20, 9), 64 << 10);
    // A peer that reads what the server sends 64 KiB at a time, 200 ms apart: a message of
    // the server's (512 KiB of blocks or more) takes it longer than the write timeout, but
    // the server's writes never wait a whole timeout for room (the muxer gives room back
    // each time the peer has read half its window, 128 KiB).
    let slow = deaf_node_with(|mut stream, statuses| async move {
        let mut frames = datatransfer_graphsync::FrameReader::new(8 << 20);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            while let Ok(Some(body)) = frames.next_frame() {
                let msg = datatransfer_graphsync::v2::decode(&body, 64).unwrap();
                for r in msg.responses {
                    let _ = statuses.send(r.status);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => frames.push(&buf[..n]),
            }
        }
    })
    .await;
    let (slow, mut statuses) = slow;
    slow.connect(&server).await;
    let _out = write_on_new_stream(&slow, server.peer, &ask_frame(root)).await;
    let last = timeout(Duration::from_secs(30), async {
        loop {
            let status = statuses.recv().await.expect("the stream ended first");
            if status.is_terminal() {
                return status;
            }
        }
    })
    .await
    .expect("a final status");
    assert_eq!(last, ResponseStatus::RequestCompletedFull);
}
