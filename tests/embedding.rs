//! Managers built from parts: on an application's swarm (here with QUIC instead of TCP), and
//! with a transport and a network of the caller's own, whose transport configurers get the
//! transport's own type.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datatransfer::{
    DataTransferBehaviour, Manager, ManagerError, Multiaddr, Status, Transport, TransportCommand,
    TransportConfigurer, TransportEventSink, Voucher, all_selector,
};
use datatransfer_integration_tests::*;
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_types::ChannelId;
use futures::StreamExt;
use libp2p::Swarm;
use libp2p::swarm::SwarmEvent;
use tokio::sync::oneshot;

/// An application's swarm on QUIC only, holding just the data-transfer behaviour; driven by
/// a task of the application's until `stop` fires.
async fn quic_app() -> (Swarm<DataTransferBehaviour>, Multiaddr) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| DataTransferBehaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    (swarm, addr)
}

fn drive(mut swarm: Swarm<DataTransferBehaviour>) -> oneshot::Sender<()> {
    let (tx, mut rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                _ = &mut rx => return,
            }
        }
    });
    tx
}

async fn embedded(swarm: &Swarm<DataTransferBehaviour>, blocks: Arc<MemoryBlockstore>) -> Manager {
    let m = Manager::builder()
        .behaviour(*swarm.local_peer_id(), swarm.behaviour())
        .blockstore(blocks)
        .config(fast_config())
        .build()
        .await
        .unwrap();
    m.register_voucher_type(
        <TestVoucher as datatransfer::Registerable>::TYPE,
        Arc::new(TestValidator::default()),
    )
    .await
    .unwrap();
    m.start().await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_on_application_swarms_over_quic_pull_and_push() {
    let provider_blocks = Arc::new(MemoryBlockstore::new());
    let data = random_bytes(3 << 20, 31);
    let file = import(&*provider_blocks, &data, 256 << 10);
    let (provider_swarm, provider_addr) = quic_app().await;
    let provider = embedded(&provider_swarm, provider_blocks.clone()).await;
    let _provider_stop = drive(provider_swarm);
    let client_blocks = Arc::new(MemoryBlockstore::new());
    let (client_swarm, _) = quic_app().await;
    let client = embedded(&client_swarm, client_blocks.clone()).await;
    let _client_stop = drive(client_swarm);

    // The managers see their application's listen addresses, on QUIC.
    let addr = provider.multiaddr().unwrap();
    assert!(addr.to_string().contains("/quic-v1/p2p/"), "{addr}");
    assert_eq!(provider.listen_addrs().await, vec![provider_addr]);

    // The client's manager dials through the behaviour, over the application's transport.
    let provider_id = client.connect(&addr).await.unwrap();
    assert_eq!(provider_id, provider.peer_id());
    assert!(client.is_connected(provider_id).await);

    let mut events = client.subscribe().await.unwrap();
    let ch = client
        .open_pull_channel(provider_id, voucher(1), file.root, all_selector())
        .await
        .unwrap();
    let seen = wait_finished(&mut events, ch, 30).await;
    assert_eq!(last_status(&seen), Status::Completed, "{:?}", codes(&seen));
    assert_file(&*client_blocks, &file.root, &data);

    // And back: a push of a new file from the client to the provider.
    let back = random_bytes(1 << 20, 32);
    let file2 = import(&*client_blocks, &back, 64 << 10);
    let mut events = client.subscribe().await.unwrap();
    let ch = client
        .open_push_channel(provider_id, voucher(2), file2.root, all_selector())
        .await
        .unwrap();
    let seen = wait_finished(&mut events, ch, 30).await;
    assert_eq!(last_status(&seen), Status::Completed, "{:?}", codes(&seen));
    assert_file(&*provider_blocks, &file2.root, &back);

    // The peer methods work through the behaviour too.
    assert!(client.disconnect(provider_id).await);
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.is_connected(provider_id).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("still connected 10 s after disconnect");
    assert!(
        !client.disconnect(provider_id).await,
        "nothing left to close"
    );
    client.stop().await.unwrap();
    provider.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_cannot_succeed_fails_with_its_reason() {
    let (swarm, _) = quic_app().await;
    let m = embedded(&swarm, Arc::new(MemoryBlockstore::new())).await;
    let _stop = drive(swarm);
    let no_peer: Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap();
    match m.connect(&no_peer).await {
        Err(ManagerError::Dial(a, why)) => {
            assert_eq!(a, no_peer);
            assert!(why.contains("/p2p/"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A closed port: nobody answers on it.
    let nobody: Multiaddr = format!(
        "/ip4/127.0.0.1/udp/{}/quic-v1/p2p/{}",
        free_udp_port(),
        libp2p::PeerId::random()
    )
    .parse()
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), m.connect(&nobody)).await {
        Ok(Err(ManagerError::Dial(a, _))) => assert_eq!(a, nobody),
        other => panic!("{other:?}"),
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_owns_identity_and_addresses() {
    let (swarm, _) = quic_app().await;
    let err = Manager::builder()
        .behaviour(*swarm.local_peer_id(), swarm.behaviour())
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Config(_)), "{err}");
}

/// A transport of the caller's own: it records the commands it gets; its configurers mark
/// the channels they saw on it (they get it typed: no downcast).
#[derive(Default)]
struct RecordingTransport {
    commands: Mutex<Vec<String>>,
    configured: Mutex<Vec<ChannelId>>,
}

impl Transport for RecordingTransport {
    fn attach(&self, _: Arc<dyn TransportEventSink>) {}

    fn execute(&self, command: TransportCommand) {
        let name = match command {
            TransportCommand::OpenChannel { .. } => "open",
            TransportCommand::CloseChannel { .. } => "close",
            _ => "other",
        };
        self.commands.lock().unwrap().push(name.into());
    }
}

struct MarkChannel;

impl TransportConfigurer<RecordingTransport> for MarkChannel {
    fn configure(&self, channel: ChannelId, _: &Voucher, transport: &RecordingTransport) {
        transport.configured.lock().unwrap().push(channel);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_on_its_callers_transport_and_network() {
    let hub = datatransfer_network::MemoryHub::new();
    let (me, them) = (libp2p::PeerId::random(), libp2p::PeerId::random());
    let (net, incoming) = hub.join(me, Default::default(), 64);
    let (_their_net, mut theirs) = hub.join(them, Default::default(), 64);
    let transport = Arc::new(RecordingTransport::default());
    let m = Manager::builder()
        .network(Arc::new(net), incoming)
        .transport(transport.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(m.peer_id(), me, "the network's peer id");
    m.register_transport_configurer(
        <TestVoucher as datatransfer::Registerable>::TYPE,
        Arc::new(MarkChannel),
    )
    .await
    .unwrap();
    m.start().await.unwrap();
    let ch = m
        .open_pull_channel(them, voucher(3), dag_root(), all_selector())
        .await
        .unwrap();
    // The pull went to our transport, configured first, and nothing needed a swarm.
    assert_eq!(*transport.configured.lock().unwrap(), vec![ch]);
    assert_eq!(
        *transport.commands.lock().unwrap(),
        vec!["open".to_string()]
    );
    assert!(m.multiaddr().is_none());
    let err = m.connect(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()).await;
    assert!(matches!(err, Err(ManagerError::NoSwarm)), "{err:?}");
    // Messages went over the caller's network: a close reaches the other node there.
    m.close_channel(ch).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), theirs.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(got, datatransfer::NetworkEvent::Message { from, .. } if from == me),
        "{got:?}"
    );
    m.stop().await.unwrap();
}

/// Some CID (nothing is fetched: the transport only records).
fn dag_root() -> datatransfer::Cid {
    let store = MemoryBlockstore::new();
    import(&store, b"a few bytes", 1024).root
}

/// A manager that proposes TLS first and one that speaks only noise connect on noise (the
/// listener refuses TLS, the dialer offers noise next) and move a DAG, whichever dials;
/// two TLS-first managers use TLS. Each pull's file arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_with_different_secure_channels_find_one_they_share() {
    use datatransfer::SecureChannels::{NoiseOnly, NoiseThenTls, TlsThenNoise};
    for (client_side, provider_side) in [
        (TlsThenNoise, NoiseOnly),
        (NoiseOnly, TlsThenNoise),
        (TlsThenNoise, TlsThenNoise),
        (NoiseThenTls, TlsThenNoise),
    ] {
        let with = |secure_channels| {
            let mut config = fast_config();
            config.secure_channels = secure_channels;
            NodeOptions {
                config,
                ..NodeOptions::default()
            }
        };
        let client = node(with(client_side)).await;
        let provider = node(with(provider_side)).await;
        introduce(&client, &provider).await;
        let data = random_bytes(300_000, 7);
        let file = import(&*provider.store, &data, 64 << 10);
        let mut sub = client.manager.subscribe().await.unwrap();
        let id = pull(&client, &provider, voucher(1), file.root).await;
        let seen = wait_finished(&mut sub, id, 30).await;
        assert_eq!(
            last_status(&seen),
            Status::Completed,
            "{client_side:?} pulling from {provider_side:?}: {:?}",
            codes(&seen)
        );
        assert_file(&*client.store, &file.root, &data);
    }
}
