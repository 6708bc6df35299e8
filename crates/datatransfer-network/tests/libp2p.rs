//! Real libp2p nodes (TCP + noise + yamux on 127.0.0.1, ephemeral ports) exchanging
//! data-transfer messages.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::time::Duration;

use datatransfer_network::{
    DataTransferNetwork, InboundError, Libp2pNetwork, NetworkConfig, NetworkError, NetworkEvent,
    ProtectBehaviour, RetryConfig,
};
use datatransfer_types::message::{
    DecodeLimits, Message, TransferRequest, TransferResponse, WireVersion,
};
use datatransfer_types::{ChannelId, Cid, DagCbor, TransferId, TypedNode};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

#[derive(NetworkBehaviour)]
struct Behaviour {
    stream: datatransfer_streams::Behaviour,
    protect: ProtectBehaviour,
}

enum Cmd {
    AddAddress(PeerId, Multiaddr, oneshot::Sender<()>),
    IsConnected(PeerId, oneshot::Sender<bool>),
}

struct Node {
    peer: PeerId,
    addr: Multiaddr,
    net: Libp2pNetwork,
    events: mpsc::Receiver<NetworkEvent>,
    cmd: mpsc::Sender<Cmd>,
    closed: mpsc::UnboundedReceiver<PeerId>,
    control: datatransfer_streams::Control,
}

impl Node {
    async fn knows(&self, other: &Self) {
        self.learn(other.peer, other.addr.clone()).await;
    }

    async fn learn(&self, peer: PeerId, addr: Multiaddr) {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::AddAddress(peer, addr, tx))
            .await
            .unwrap();
        rx.await.unwrap();
    }

    async fn connected_to(&self, peer: PeerId) -> bool {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::IsConnected(peer, tx)).await.unwrap();
        rx.await.unwrap()
    }

    async fn next_event(&mut self) -> NetworkEvent {
        timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event in time")
            .unwrap()
    }
}

async fn node(config: NetworkConfig, idle: Duration) -> Node {
    let mut swarm: Swarm<Behaviour> = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| Behaviour {
            stream: datatransfer_streams::Behaviour::new(),
            protect: ProtectBehaviour::new(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().stream.new_control();
    let (net, events) = Libp2pNetwork::new(
        peer,
        control.clone(),
        swarm.behaviour().protect.handle(),
        config,
    )
    .unwrap();
    let (cmd, mut cmds) = mpsc::channel(16);
    let (closed_tx, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => {
                    if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } = ev {
                        let _ = closed_tx.send(peer_id);
                    }
                }
                c = cmds.recv() => match c {
                    Some(Cmd::AddAddress(p, a, done)) => { swarm.add_peer_address(p, a); let _ = done.send(()); }
                    Some(Cmd::IsConnected(p, tx)) => { let _ = tx.send(swarm.is_connected(&p)); }
                    None => return,
                },
            }
        }
    });
    Node {
        peer,
        addr,
        net,
        events,
        cmd,
        closed,
        control,
    }
}

fn only(version: WireVersion) -> NetworkConfig {
    NetworkConfig {
        versions: vec![version],
        ..NetworkConfig::default()
    }
}

fn every_message() -> Vec<Message> {
    let peer = |n: u8| {
        libp2p::identity::PeerId::from_bytes(&[&[0x12u8, 0x20][..], &[n; 32]].concat()).unwrap()
    };
    let v = TypedNode::new("V".into(), DagCbor::encode(&(1u8, "x")).unwrap());
    let cid = Cid::default();
    let sel = DagCbor::encode(&"sel").unwrap();
    let id = TransferId(77);
    vec![
        TransferRequest::new_channel(id, true, v.clone(), cid, sel.clone()).into(),
        TransferRequest::restart(id, false, v.clone(), cid, sel).into(),
        TransferRequest::update(id, true).into(),
        TransferRequest::cancel(id).into(),
        TransferRequest::voucher(id, v.clone()).into(),
        TransferRequest::restart_existing_channel(ChannelId::new(peer(1), peer(2), id)).into(),
        TransferResponse::new_channel(id, true, false, Some(v.clone())).into(),
        TransferResponse::restart(id, true, true, None).into(),
        TransferResponse::update(id, false).into(),
        TransferResponse::cancel(id).into(),
        TransferResponse::complete(id, true, false, Some(v.clone())).into(),
        TransferResponse::voucher_result(id, false, true, Some(v)).into(),
    ]
}

async fn expect_messages(node: &mut Node, from: PeerId, want: &[Message], version: WireVersion) {
    for m in want {
        match node.next_event().await {
            NetworkEvent::Message {
                from: f,
                message,
                version: v,
            } => {
                assert_eq!((f, &message, v), (from, m, version));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn every_message_type_in_both_versions_and_old_peers_get_1_1() {
    let a = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    let mut b = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    let mut old = node(only(WireVersion::V1_1), Duration::from_secs(30)).await;
    a.knows(&b).await;
    a.knows(&old).await;
    old.knows(&a).await;
    let msgs = every_message();

    // Modern peers speak 1.2.0.
    for m in &msgs {
        a.net.send_message(b.peer, m.clone()).await.unwrap();
        expect_messages(&mut b, a.peer, std::slice::from_ref(m), WireVersion::V1_2).await;
    }
    assert_eq!(a.net.version_of(&b.peer), Some(WireVersion::V1_2));

    // A peer that speaks only 1.1.0 is served in 1.1.0, and remembered as such.
    for m in &msgs {
        a.net.send_message(old.peer, m.clone()).await.unwrap();
        expect_messages(&mut old, a.peer, std::slice::from_ref(m), WireVersion::V1_1).await;
    }
    assert_eq!(a.net.version_of(&old.peer), Some(WireVersion::V1_1));

    // And it can talk to us: we still accept 1.1.0.
    let mut a = a;
    old.net.send_message(a.peer, msgs[0].clone()).await.unwrap();
    expect_messages(&mut a, old.peer, &msgs[..1], WireVersion::V1_1).await;
}

#[tokio::test]
async fn a_peer_that_is_down_is_retried_with_backoff_then_a_typed_error() {
    let retry = RetryConfig {
        attempts: 3,
        min_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_millis(60),
        factor: 2.0,
    };
    assert_eq!(retry.backoff(1), Duration::from_millis(40));
    assert_eq!(
        retry.backoff(2),
        Duration::from_millis(60),
        "capped at max_backoff"
    );
    let a = node(
        NetworkConfig {
            retry,
            send_timeout: Duration::from_secs(2),
            ..NetworkConfig::default()
        },
        Duration::from_secs(30),
    )
    .await;
    // A peer whose address is a port nobody listens on.
    let gone_peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = listener.local_addr().unwrap().port();
    drop(listener);
    a.learn(
        gone_peer,
        format!("/ip4/127.0.0.1/tcp/{dead_port}").parse().unwrap(),
    )
    .await;
    let start = std::time::Instant::now();
    let err = a
        .net
        .send_message(gone_peer, TransferRequest::cancel(TransferId(1)).into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::Unreachable { attempts: 3, .. }),
        "{err}"
    );
    // Two waits happened between the three attempts.
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
}

/// A send backing off after a failed attempt retries as soon as the peer connects, not at
/// the end of its (here 60 s) backoff: a responder that restarts cannot reach a client,
/// and its messages must go the moment the client dials back.
#[tokio::test]
async fn a_backing_off_send_goes_as_soon_as_the_peer_connects() {
    let config = NetworkConfig {
        retry: RetryConfig {
            attempts: 2,
            min_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            factor: 1.0,
        },
        send_timeout: Duration::from_secs(2),
        ..NetworkConfig::default()
    };
    let a = node(config, Duration::from_secs(30)).await;
    let mut b = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    // `a` has no address for `b`: the first attempt fails at once.
    let msg: Message = TransferRequest::cancel(TransferId(9)).into();
    let net = a.net.clone();
    let (b_peer, sent) = (b.peer, msg.clone());
    let pending = tokio::spawn(async move { net.send_message(b_peer, sent).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the send waits out its backoff");
    // `b` dials `a` (by sending it something).
    b.knows(&a).await;
    b.net
        .send_message(a.peer, TransferRequest::cancel(TransferId(1)).into())
        .await
        .unwrap();
    timeout(Duration::from_secs(10), pending)
        .await
        .expect("sent well before the 60 s backoff ends")
        .unwrap()
        .unwrap();
    match b.next_event().await {
        NetworkEvent::Message { from, message, .. } => {
            assert_eq!(from, a.peer);
            assert_eq!(message, msg);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_oversized_and_cut_streams_are_reset_and_others_still_served() {
    let config = NetworkConfig {
        limits: DecodeLimits {
            max_message_size: 1024,
            ..DecodeLimits::default()
        },
        ..NetworkConfig::default()
    };
    let mut b = node(config, Duration::from_secs(30)).await;
    let x = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    let good = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    x.knows(&b).await;
    good.knows(&b).await;
    let proto = StreamProtocol::new(WireVersion::V1_2.protocol());

    let (xc, to) = (x.control.clone(), b.peer);
    let raw = |bytes: Vec<u8>| {
        let mut control = xc.clone();
        let proto = proto.clone();
        async move {
            let mut s = control.open_stream(to, proto).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            let _ = s.close().await;
        }
    };
    // Garbage.
    raw(vec![0xff, 0x00, 0x13, 0x37]).await;
    match b.next_event().await {
        NetworkEvent::Error {
            from,
            error: InboundError::Invalid(_),
        } => assert_eq!(from, x.peer),
        other => panic!("{other:?}"),
    }
    // Oversized: a byte string claiming 2^20 bytes, followed by plenty of them.
    let mut big = vec![0x5a, 0x00, 0x10, 0x00, 0x00];
    big.extend(vec![7u8; 4096]);
    raw(big).await;
    assert!(matches!(
        b.next_event().await,
        NetworkEvent::Error {
            error: InboundError::TooLarge { max: 1024 },
            ..
        }
    ));
    // Closed mid-message.
    let msg: Message = TransferRequest::update(TransferId(3), true).into();
    let bytes = msg.to_cbor(WireVersion::V1_2);
    raw(bytes[..bytes.len() / 2].to_vec()).await;
    assert!(matches!(
        b.next_event().await,
        NetworkEvent::Error {
            error: InboundError::Truncated { .. },
            ..
        }
    ));
    // Two messages back to back on one stream, then another peer: all served.
    let mut two = bytes.clone();
    two.extend(&bytes);
    raw(two).await;
    expect_messages(
        &mut b,
        x.peer,
        &[msg.clone(), msg.clone()],
        WireVersion::V1_2,
    )
    .await;
    good.net.send_message(b.peer, msg.clone()).await.unwrap();
    expect_messages(&mut b, good.peer, &[msg], WireVersion::V1_2).await;
}

#[tokio::test]
async fn protected_peers_stay_connected_past_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let mut a = node(NetworkConfig::default(), idle).await;
    let mut b = node(NetworkConfig::default(), idle).await;
    a.knows(&b).await;
    // Both ends of a channel protect the connection, as go-data-transfer's peers do; either
    // end alone would close an idle connection.
    a.net.protect(b.peer, "channel-1");
    b.net.protect(a.peer, "channel-1");
    a.net
        .send_message(b.peer, TransferRequest::cancel(TransferId(1)).into())
        .await
        .unwrap();
    b.next_event().await;
    assert!(a.connected_to(b.peer).await);
    // Well past the idle timeout, the protected connection is still there.
    let closed = timeout(idle * 4, a.closed.recv()).await;
    assert!(closed.is_err(), "connection closed while protected");
    assert!(a.connected_to(b.peer).await);
    // Released: the idle connection goes away.
    assert!(!a.net.unprotect(b.peer, "channel-1"));
    assert!(!b.net.unprotect(a.peer, "channel-1"));
    let peer = timeout(Duration::from_secs(10), a.closed.recv())
        .await
        .expect("closed in time");
    assert_eq!(peer, Some(b.peer));
}

/// Opens a data-transfer stream from `from` to `to` and writes `bytes` on it, leaving it open.
async fn open_and_write(
    from: &Node,
    to: PeerId,
    bytes: &[u8],
) -> std::io::Result<datatransfer_streams::Stream> {
    let proto = StreamProtocol::new(WireVersion::V1_2.protocol());
    let mut s = from
        .control
        .clone()
        .open_stream(to, proto)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    s.write_all(bytes).await?;
    s.flush().await?;
    Ok(s)
}

#[tokio::test]
async fn idle_streams_time_out_and_one_peer_cannot_take_every_reader() {
    let receive_timeout = Duration::from_millis(500);
    let config = NetworkConfig {
        max_inbound_streams: 4,
        max_inbound_streams_per_peer: 2,
        max_waiting_inbound_streams_per_peer: 1,
        receive_timeout,
        ..NetworkConfig::default()
    };
    let mut b = node(config, Duration::from_secs(30)).await;
    let x = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    let y = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    let good = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    for n in [&x, &y, &good] {
        n.knows(&b).await;
    }
    let msg: Message = TransferRequest::update(TransferId(9), true).into();
    let first_byte = msg.to_cbor(WireVersion::V1_2)[..1].to_vec();
    // Streams that start a message and never finish it, kept open: x's first two are read,
    // its third waits its turn, its fourth is one too many and is reset unread, at once.
    let mut held = Vec::new();
    for i in 0..4 {
        let opened = open_and_write(&x, b.peer, &first_byte).await;
        if i == 3 {
            match b.next_event().await {
                NetworkEvent::Error {
                    from,
                    error: InboundError::TooManyStreams { max: 3 },
                } => assert_eq!(from, x.peer),
                other => panic!("{other:?}"),
            }
        } else {
            held.push(opened.unwrap());
        }
    }
    for _ in 0..2 {
        held.push(open_and_write(&y, b.peer, &first_byte).await.unwrap());
    }
    // Every reader is taken now (x's two, y's two); a message from another peer waits for
    // the idle streams' time to run out, then is served.
    let sent = tokio::spawn({
        let msg = msg.clone();
        async move { good.net.send_message(b.peer, msg).await.map(|()| good) }
    });
    let mut timed_out = Vec::new();
    let mut served_after = None;
    // x's waiting stream is read once x has a turn free, and times out in its turn.
    while served_after.is_none() || timed_out.len() < 5 {
        match b.next_event().await {
            NetworkEvent::Error {
                from,
                error: InboundError::TimedOut { after },
            } => {
                assert_eq!(after, receive_timeout);
                timed_out.push(from);
            }
            NetworkEvent::Message { from, message, .. } => {
                assert_eq!(message, msg);
                assert_ne!(from, x.peer);
                assert_ne!(from, y.peer);
                served_after = Some(timed_out.len());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        served_after >= Some(1),
        "served while every reader was taken"
    );
    timed_out.sort();
    let mut want = vec![x.peer, x.peer, x.peer, y.peer, y.peer];
    want.sort();
    assert_eq!(timed_out, want, "each idle stream timed out once");
    timeout(Duration::from_secs(10), sent)
        .await
        .expect("sent")
        .unwrap()
        .unwrap();
    drop(held);
}

#[tokio::test]
async fn a_burst_of_streams_from_one_peer_waits_its_turn_and_is_read_whole() {
    // go-data-transfer sends from many goroutines at once, a stream per message, and takes a
    // message for sent once written: a burst past the readers a peer gets must wait, not be
    // reset.
    let config = NetworkConfig {
        max_inbound_streams_per_peer: 2,
        ..NetworkConfig::default()
    };
    let mut b = node(config, Duration::from_secs(30)).await;
    let x = node(NetworkConfig::default(), Duration::from_secs(30)).await;
    x.knows(&b).await;
    let msgs: Vec<Message> = (0..20)
        .map(|i| TransferRequest::update(TransferId(i), true).into())
        .collect();
    // All twenty open at once, each with its message begun; then each finished.
    let mut streams = Vec::new();
    for m in &msgs {
        let bytes = m.to_cbor(WireVersion::V1_2);
        let s = open_and_write(&x, b.peer, &bytes[..1]).await.unwrap();
        streams.push((s, bytes));
    }
    for (s, bytes) in &mut streams {
        s.write_all(&bytes[1..]).await.unwrap();
        s.close().await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < msgs.len() {
        match b.next_event().await {
            NetworkEvent::Message { from, message, .. } => {
                assert_eq!(from, x.peer);
                got.push(message);
            }
            other => panic!("{other:?}"),
        }
    }
    let id = |m: &Message| match m {
        Message::Request(r) => r.transfer_id,
        Message::Response(r) => r.transfer_id,
    };
    got.sort_by_key(id);
    assert_eq!(got, msgs);
}
