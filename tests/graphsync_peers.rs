//! A Manager answering a bare graphsync peer that speaks the data-transfer extension by hand,
//! as go-data-transfer v1.15.1's `TestRespondingToPullGraphsyncRequests`,
//! `TestRespondingToPushGraphsyncRequests` and `TestResponseHookWhenExtensionNotFound` do:
//! what a Go peer sends is served when a channel backs it, and refused when none does.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use datatransfer::{ChannelId, Cid, DagCbor, Status, all_selector};
use datatransfer_graphsync::node::{AcceptAll, GraphSync, GraphSyncConfig, GraphSyncError};
use datatransfer_graphsync::requester::VerifyError;
use datatransfer_graphsync::{Extensions, RawNode, ResponseStatus};
use datatransfer_integration_tests::*;
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_types::TransferId;
use datatransfer_types::message::{Message, TransferRequest, TransferResponse, WireVersion};
use futures::{AsyncReadExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The graphsync extension go-data-transfer's messages ride in.
const EXTENSION: &str = "fil/data-transfer/1.1";

/// A graphsync node on its own libp2p swarm, with no data-transfer layer: its requests carry
/// whatever extension the test writes. It also takes data-transfer network streams, so the
/// messages a Manager sends it can be read.
struct BarePeer {
    peer: PeerId,
    gs: GraphSync,
    store: Arc<MemoryBlockstore>,
    dt_messages: mpsc::Receiver<Message>,
}

/// A libp2p swarm of its own (TCP, noise, yamux on 127.0.0.1) connected to `manager`, driven
/// by a task; its stream control.
async fn connected_to(manager: &datatransfer::Manager) -> (PeerId, datatransfer_streams::Control) {
    let mut swarm = datatransfer_test_support::streams_swarm();
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    let to: Multiaddr = manager.listen_addrs().await[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(manager.peer_id()));
    let (connected_tx, mut connected) = mpsc::channel(1);
    swarm.dial(to).unwrap();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                let _ = connected_tx.try_send(());
            }
        }
    });
    timeout(Duration::from_secs(10), connected.recv())
        .await
        .unwrap()
        .unwrap();
    (peer, control)
}

/// The DAG-CBOR items arriving on `protocol`'s streams, decoded by `decode`.
fn items<T: Send + 'static>(
    control: &mut datatransfer_streams::Control,
    protocol: &'static str,
    decode: fn(&[u8]) -> Option<(T, usize)>,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel(64);
    let mut incoming = control.accept(StreamProtocol::new(protocol)).unwrap();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    while let Some((item, n)) = decode(&bytes) {
                        bytes.drain(..n);
                        let _ = tx.send(item).await;
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    rx
}

async fn bare_peer(manager: &datatransfer::Manager) -> BarePeer {
    let (peer, mut control) = connected_to(manager).await;
    let store = Arc::new(MemoryBlockstore::new());
    let gs = GraphSync::start(
        peer,
        control.clone(),
        store.clone(),
        Arc::new(AcceptAll),
        GraphSyncConfig::default(),
    )
    .unwrap();
    // Data-transfer messages from the Manager: one or more DAG-CBOR items per stream.
    let dt_messages = items(&mut control, WireVersion::V1_2.protocol(), |bytes| {
        let n = datatransfer_ipld::cbor::item_len(bytes, 64).ok()??;
        Some((
            Message::from_cbor(WireVersion::V1_2, &bytes[..n]).unwrap(),
            n,
        ))
    });
    BarePeer {
        peer,
        gs,
        store,
        dt_messages,
    }
}

impl BarePeer {
    /// Sends a graphsync request for the whole DAG under `root` to `to`, with `message` (if
    /// any) in the data-transfer extension, and says how it ended.
    async fn request(
        &self,
        to: PeerId,
        root: Cid,
        message: Option<Message>,
    ) -> Result<ResponseStatus, GraphSyncError> {
        self.request_with(to, root, &all_selector(), message).await
    }

    /// [`BarePeer::request`] with another selector.
    async fn request_with(
        &self,
        to: PeerId,
        root: Cid,
        selector: &DagCbor,
        message: Option<Message>,
    ) -> Result<ResponseStatus, GraphSyncError> {
        let mut ext = Extensions::new();
        if let Some(m) = message {
            ext.set(
                EXTENSION,
                RawNode::new(m.to_cbor(WireVersion::V1_2)).unwrap(),
            );
        }
        let selector = RawNode::new(selector.as_bytes().to_vec()).unwrap();
        let req = self.gs.request(to, root, selector, ext).await.unwrap();
        timeout(Duration::from_secs(20), req.finish())
            .await
            .unwrap()
    }
}

fn refused(result: &Result<ResponseStatus, GraphSyncError>) -> bool {
    matches!(result, Err(GraphSyncError::Verify(VerifyError::Failed(s))) if s.is_error())
}

/// `TestRespondingToPullGraphsyncRequests`: a graphsync request carrying a New pull request
/// is validated; accepted, the DAG is served; rejected, the request fails. The graphsync
/// request must ask for what the validated message names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_in_a_graphsync_request_is_validated_then_served() {
    let provider = default_node().await;
    let data = random_bytes(300_000, 31);
    let file = import(&*provider.store, &data, 16 << 10);
    let client = bare_peer(&provider.manager).await;
    let pull = |id: u64| {
        Message::Request(TransferRequest::new_channel(
            TransferId(id),
            true,
            voucher(1),
            file.root,
            all_selector(),
        ))
    };
    let to = provider.manager.peer_id();

    let served = client.request(to, file.root, Some(pull(1))).await;
    assert_eq!(served, Ok(ResponseStatus::RequestCompletedFull));
    assert_file(&*client.store, &file.root, &data);
    assert_eq!(provider.validator.pulls.load(Ordering::SeqCst), 1);

    // The validator approved `file`; a graphsync request for another root under that
    // approval is refused before anything is sent (Go serves it).
    let secret = import(&*provider.store, &random_bytes(50_000, 34), 16 << 10);
    let thief = bare_peer(&provider.manager).await;
    let res = thief.request(to, secret.root, Some(pull(3))).await;
    assert!(refused(&res), "{res:?}");
    assert!(!thief.store.has(&secret.root).unwrap());
    // Nor can a message that opens nothing (an update of the client's own channel).
    let update = Message::Request(TransferRequest::update(TransferId(1), false));
    let res = client.request(to, secret.root, Some(update)).await;
    assert!(refused(&res), "{res:?}");
    assert!(!client.store.has(&secret.root).unwrap());
    assert_eq!(provider.validator.pulls.load(Ordering::SeqCst), 1);

    provider.validator.reject.store(true, Ordering::SeqCst);
    let other = bare_peer(&provider.manager).await;
    let res = other.request(to, file.root, Some(pull(2))).await;
    assert!(refused(&res), "{res:?}");
    assert_eq!(provider.validator.pulls.load(Ordering::SeqCst), 2);
    assert!(!other.store.has(&file.root).unwrap());
}

/// `TestRespondingToPushGraphsyncRequests`: the Manager pushes; the peer, told over the
/// data-transfer network, requests the data back with its acceptance in the extension and
/// gets it. The same acceptance for another root, or for a transfer nobody opened, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_served_to_the_graphsync_request_that_accepts_it() {
    let sender = default_node().await;
    let data = random_bytes(300_000, 32);
    let file = import(&*sender.store, &data, 16 << 10);
    let mut receiver = bare_peer(&sender.manager).await;
    let to = sender.manager.peer_id();
    let mut sub = sender.manager.subscribe().await.unwrap();
    let id = sender
        .manager
        .open_push_channel(receiver.peer, voucher(1), file.root, all_selector())
        .await
        .unwrap();

    let asked = timeout(Duration::from_secs(10), receiver.dt_messages.recv())
        .await
        .unwrap()
        .unwrap();
    let Message::Request(req) = asked else {
        panic!("expected the push request, got {asked:?}");
    };
    assert_eq!(req.transfer_id, id.id);
    assert!(!req.pull);
    assert_eq!(req.base_cid, Some(file.root));

    let accept = |t| Message::Response(TransferResponse::new_channel(t, true, false, None));
    // The acceptance of this push does not open the sender's other DAGs.
    let secret = import(&*sender.store, &random_bytes(50_000, 35), 16 << 10);
    let res = receiver.request(to, secret.root, Some(accept(id.id))).await;
    assert!(refused(&res), "{res:?}");
    assert!(!receiver.store.has(&secret.root).unwrap());
    let served = receiver.request(to, file.root, Some(accept(id.id))).await;
    assert_eq!(served, Ok(ResponseStatus::RequestCompletedFull));
    assert_file(&*receiver.store, &file.root, &data);
    // The sender saw its data go.
    wait_until(&mut sub, Some(id), 10, |_, s| s.sent >= data.len() as u64).await;

    let stranger = bare_peer(&sender.manager).await;
    let res = stranger
        .request(to, file.root, Some(accept(TransferId(id.id.0 + 1))))
        .await;
    assert!(refused(&res), "{res:?}");
    assert!(!stranger.store.has(&file.root).unwrap());
    let state = sender.manager.channel_state(id).await.unwrap().unwrap();
    assert_ne!(state.status, Status::Failed);
}

/// `TestResponseHookWhenExtensionNotFound`, where we depart from Go on purpose: a graphsync
/// request with no data-transfer extension is refused (Go serves it if some other hook
/// validated it; a Manager has no such hook, so serving it would serve anyone anything), and
/// a channel running meanwhile is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graphsync_request_without_the_extension_is_refused() {
    let provider = default_node().await;
    let data = random_bytes(100_000, 33);
    let file = import(&*provider.store, &data, 16 << 10);
    let client = default_node().await;
    introduce(&client, &provider).await;
    let bare = bare_peer(&provider.manager).await;

    let res = bare
        .request(provider.manager.peer_id(), file.root, None)
        .await;
    assert!(refused(&res), "{res:?}");
    assert!(!bare.store.has(&file.root).unwrap());
    assert_eq!(provider.validator.pulls.load(Ordering::SeqCst), 0);

    let mut sub = client.manager.subscribe().await.unwrap();
    let id = pull(&client, &provider, voucher(1), file.root).await;
    let events = wait_finished(&mut sub, id, 30).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    assert_file(&*client.store, &file.root, &data);
}

/// A restart asks for what its channel was validated for and nothing more (Go compares the
/// root and the voucher, not the selector): a completed pull of the root block alone cannot
/// be restarted into a pull of the whole DAG, and is answered when restarted as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_gets_nothing_more_than_its_channel() {
    let provider = default_node().await;
    let data = random_bytes(200_000, 36);
    let file = import(&*provider.store, &data, 16 << 10);
    let client = bare_peer(&provider.manager).await;
    let to = provider.manager.peer_id();
    let mut psub = provider.manager.subscribe().await.unwrap();
    let empty = datatransfer_ipld::Node::map(Vec::<(String, datatransfer_ipld::Node)>::new());
    let root_only = datatransfer_ipld::Node::map([(".", empty)]);
    let root_only =
        DagCbor::from_bytes(datatransfer_ipld::codec::encode_dag_cbor(&root_only)).unwrap();
    let all = all_selector();
    let transfer = TransferId(5);
    let open = |restart: bool, selector: &DagCbor| {
        let make = if restart {
            TransferRequest::restart
        } else {
            TransferRequest::new_channel
        };
        Message::Request(make(
            transfer,
            true,
            voucher(1),
            file.root,
            selector.clone(),
        ))
    };

    let res = client
        .request_with(to, file.root, &root_only, Some(open(false, &root_only)))
        .await;
    assert_eq!(res, Ok(ResponseStatus::RequestCompletedFull));
    let id = ChannelId::new(client.peer, to, transfer);
    let events = wait_finished(&mut psub, id, 20).await;
    assert_eq!(
        last_status(&events),
        Status::Completed,
        "{:?}",
        codes(&events)
    );
    assert_eq!(client.store.len(), 1, "the root block alone");

    let res = client
        .request_with(to, file.root, &all, Some(open(true, &all)))
        .await;
    assert!(refused(&res), "{res:?}");
    assert_eq!(client.store.len(), 1);

    let res = client
        .request_with(to, file.root, &root_only, Some(open(true, &root_only)))
        .await;
    assert_eq!(res, Ok(ResponseStatus::RequestCompletedFull));
}

/// Writes one graphsync 2.0.0 message, as it is, on a stream of its own to `to`.
async fn send_raw(
    control: &mut datatransfer_streams::Control,
    to: PeerId,
    message: &datatransfer_graphsync::Message,
) {
    use datatransfer_graphsync::Version;
    use datatransfer_graphsync::v1::V1Ids;
    use futures::AsyncWriteExt;

    let mut out = control
        .open_stream(to, StreamProtocol::new(Version::V2.protocol()))
        .await
        .unwrap();
    out.write_all(&datatransfer_graphsync::encode_frame(
        message,
        Version::V2,
        &mut V1Ids::default(),
    ))
    .await
    .unwrap();
    out.close().await.unwrap();
}

/// Graphsync frames (a varint length, then a 2.0.0 message), for [`items`].
fn graphsync_frame(bytes: &[u8]) -> Option<(datatransfer_graphsync::Message, usize)> {
    let mut len = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let end = i + 1 + usize::try_from(len).ok()?;
            let body = bytes.get(i + 1..end)?;
            return Some((datatransfer_graphsync::v2::decode(body, 64).unwrap(), end));
        }
    }
    None
}

/// The same request twice in one message, accepting a push nobody opened: while the engine
/// decides on the first, the second is no repeat of an accepted request, so it is decided too
/// (it was served unvalidated when any earlier request with its id counted as a repeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_twice_at_once_is_not_served_unvalidated() {
    use datatransfer_graphsync::{Request, RequestId, Version};

    let provider = default_node().await;
    let file = import(&*provider.store, &random_bytes(100_000, 37), 16 << 10);
    let (_, mut control) = connected_to(&provider.manager).await;
    let mut replies = items(&mut control, Version::V2.protocol(), graphsync_frame);
    let accept = Message::Response(TransferResponse::new_channel(
        TransferId(77),
        true,
        false,
        None,
    ));
    let mut ext = Extensions::new();
    ext.set(
        EXTENSION,
        RawNode::new(accept.to_cbor(WireVersion::V1_2)).unwrap(),
    );
    let all = RawNode::new(all_selector().as_bytes().to_vec()).unwrap();
    let request = Request::new(RequestId([7; 16]), file.root, all, 0, ext);
    let twice = datatransfer_graphsync::Message {
        requests: vec![request.clone(), request],
        ..datatransfer_graphsync::Message::default()
    };
    send_raw(&mut control, provider.manager.peer_id(), &twice).await;

    // Whatever comes back within a second: refusals, and not one block.
    let mut blocks = 0;
    let mut statuses = Vec::new();
    while let Ok(Some(m)) = timeout(Duration::from_secs(1), replies.recv()).await {
        blocks += m.blocks.len();
        statuses.extend(m.responses.iter().map(|r| r.status));
    }
    assert_eq!(blocks, 0, "{statuses:?}");
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| s.is_error()), "{statuses:?}");
}

/// A pull request and its cancel in one message (a requester that paused at once, or our
/// client re-opening a channel and pausing it before the request left): the request is never
/// looked at. Found by the chaos soak: the hook of such a restart ran after the hook of the
/// request that resumed the channel, took the channel over and cancelled the live response,
/// so the client never heard the transfer complete. (A current-thread runtime, so the cancel
/// is read before the request's task can run, as on a loaded node.)
#[tokio::test(flavor = "current_thread")]
async fn a_request_cancelled_in_the_message_that_brought_it_is_never_validated() {
    use datatransfer_graphsync::{Request, RequestId, Version};

    let provider = default_node().await;
    let file = import(&*provider.store, &random_bytes(100_000, 38), 16 << 10);
    let (_, mut control) = connected_to(&provider.manager).await;
    let mut replies = items(&mut control, Version::V2.protocol(), graphsync_frame);
    let pull = Message::Request(TransferRequest::new_channel(
        TransferId(78),
        true,
        voucher(1),
        file.root,
        all_selector(),
    ));
    let mut ext = Extensions::new();
    ext.set(
        EXTENSION,
        RawNode::new(pull.to_cbor(WireVersion::V1_2)).unwrap(),
    );
    let all = RawNode::new(all_selector().as_bytes().to_vec()).unwrap();
    let id = RequestId([8; 16]);
    let message = datatransfer_graphsync::Message {
        requests: vec![
            Request::new(id, file.root, all, 0, ext),
            Request::cancel(id),
        ],
        ..datatransfer_graphsync::Message::default()
    };
    send_raw(&mut control, provider.manager.peer_id(), &message).await;

    let mut blocks = 0;
    while let Ok(Some(m)) = timeout(Duration::from_secs(1), replies.recv()).await {
        blocks += m.blocks.len();
    }
    assert_eq!(blocks, 0);
    assert_eq!(provider.validator.pulls.load(Ordering::SeqCst), 0);
    assert!(
        provider
            .manager
            .in_progress_channels()
            .await
            .unwrap()
            .is_empty()
    );
}
