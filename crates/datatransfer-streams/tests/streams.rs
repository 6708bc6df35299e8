//! Two real libp2p nodes (TCP + noise + yamux on 127.0.0.1): a burst of streams reaches a
//! slow acceptor without loss, an unsupported protocol and an unreachable peer are typed
//! errors.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::time::Duration;

use datatransfer_streams::{Behaviour, Control, OpenStreamError};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use tokio::sync::mpsc;

const PROTO: StreamProtocol = StreamProtocol::new("/test/echo/1");

type Dial = (Multiaddr, tokio::sync::oneshot::Sender<()>);

/// A node; dialing through the returned sender answers once connected.
async fn node() -> (PeerId, Multiaddr, Control, mpsc::Sender<Dial>) {
    node_with(Behaviour::new()).await
}

async fn node_with(behaviour: Behaviour) -> (PeerId, Multiaddr, Control, mpsc::Sender<Dial>) {
    let mut swarm: Swarm<Behaviour> = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
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
    let control = swarm.behaviour().new_control();
    let (tx, mut rx) = mpsc::channel::<Dial>(8);
    tokio::spawn(async move {
        let mut waiting = Vec::new();
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => {
                    if let SwarmEvent::ConnectionEstablished { .. } = ev {
                        for w in waiting.drain(..) {
                            let _: Result<(), ()> = tokio::sync::oneshot::Sender::send(w, ());
                        }
                    }
                }
                Some((a, done)) = rx.recv() => {
                    swarm.dial(a).unwrap();
                    waiting.push(done);
                }
            }
        }
    });
    (peer, addr, control, tx)
}

async fn connect(cmd: &mpsc::Sender<Dial>, addr: Multiaddr) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    cmd.send((addr, tx)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_streams_reaches_a_slow_acceptor() {
    let (a_peer, a_addr, mut a, _a_cmd) = node().await;
    let (_, _, b, b_cmd) = node().await;
    connect(&b_cmd, a_addr).await;
    let mut incoming = a.accept(PROTO).unwrap();
    let n = 200u32;
    let mut senders = Vec::new();
    for i in 0..n {
        let mut b = b.clone();
        senders.push(tokio::spawn(async move {
            let mut s = b.open_stream(a_peer, PROTO).await.unwrap();
            s.write_all(&i.to_be_bytes()).await.unwrap();
            s.close().await.unwrap();
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    // Only now does the acceptor start taking streams: none was dropped meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        let (_, mut s) = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        seen[u32::from_be_bytes(buf) as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
    assert!(a.accept(PROTO).is_err(), "one acceptor per protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocols_and_unreachable_peers_are_errors() {
    let (a_peer, a_addr, _a, _a_cmd) = node().await;
    let (_, _, mut b, b_cmd) = node().await;
    connect(&b_cmd, a_addr).await;
    let r = b
        .open_stream(a_peer, StreamProtocol::new("/test/nobody/1"))
        .await;
    assert!(
        matches!(r, Err(OpenStreamError::UnsupportedProtocol(_))),
        "{r:?}"
    );
    let stranger = PeerId::random();
    let r = tokio::time::timeout(Duration::from_secs(10), b.open_stream(stranger, PROTO))
        .await
        .unwrap();
    assert!(matches!(r, Err(OpenStreamError::Io(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_streams_beyond_the_bound_are_reset() {
    let (a_peer, a_addr, mut a, _a_cmd) = node_with(Behaviour::with_max_queued_inbound(5)).await;
    let (_, _, b, b_cmd) = node().await;
    connect(&b_cmd, a_addr).await;
    let mut incoming = a.accept(PROTO).unwrap();
    let mut opened = Vec::new();
    for _ in 0..20 {
        let mut b = b.clone();
        opened.push(tokio::spawn(
            async move { b.open_stream(a_peer, PROTO).await },
        ));
    }
    for o in opened {
        let _ = o.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut taken = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await
    {
        taken += 1;
    }
    assert_eq!(taken, 5, "only the bound's worth of streams waited");
}
