//! Data transfer inside an application's own libp2p swarm.
//!
//! Run it with `cargo run -p datatransfer --example embed`.
//!
//! A real node (Forest, a storage provider, a retrieval client) already runs a libp2p `Swarm`
//! with its own identity, transports and behaviours: identify, ping, kad, bitswap... This
//! example builds two such applications in one process, each with identify, ping and kad,
//! and adds data transfer to them the way a node would:
//! 1. `DataTransferBehaviour` goes into the application's `#[derive(NetworkBehaviour)]`;
//! 2. the application builds and drives its swarm as it always does (its keypair, its TCP
//!    transport; QUIC would work the same);
//! 3. `Manager::builder().behaviour(..)` builds a manager on that behaviour: it opens its
//!    streams through it and builds no swarm of its own;
//! 4. the second application dials the first with its own swarm, learns through identify that
//!    the first speaks data transfer and graphsync, and pulls a file from it.

#![allow(clippy::unwrap_used)] // An example: failing loudly is the point.

use std::sync::Arc;
use std::time::Duration;

use datatransfer::{
    AcceptAll, DataTransferBehaviour, EventCode, Manager, Multiaddr, Status, TypedNode,
    all_selector,
};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::unixfs::{ImportOptions, export, import_bytes};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Swarm, identify, kad, noise, ping, tcp, yamux};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The application's behaviour: what it had before, plus data transfer.
#[derive(NetworkBehaviour)]
struct App {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Everything data transfer needs in the swarm (streams of its protocols, connection
    /// protection); it emits no events.
    data_transfer: DataTransferBehaviour,
}

/// The voucher of this example's pulls: any serde type that is `Registerable`.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    note: String,
}

impl datatransfer::Registerable for Request {
    const TYPE: &'static str = "EmbedExampleRequest";
}

/// Builds an application's swarm the way the application would, without data transfer in
/// mind except for one field of its behaviour, and starts listening.
fn app_swarm() -> Result<Swarm<App>, Box<dyn std::error::Error>> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let me = key.public().to_peer_id();
            App {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/embed-example/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                kad: kad::Behaviour::new(me, kad::store::MemoryStore::new(me)),
                data_transfer: DataTransferBehaviour::new(),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    // Kademlia serves the DHT only where told to (it has no public address to go by here).
    swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    Ok(swarm)
}

/// The application's own event loop: it drives the swarm (the manager never does) and
/// passes on what identify learns of other peers.
async fn drive(mut swarm: Swarm<App>, name: &'static str, seen: mpsc::Sender<identify::Info>) {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(AppEvent::Identify(identify::Event::Received {
                info, ..
            })) => {
                println!(
                    "{name}: identify: {} speaks {} protocols",
                    info.public_key.to_peer_id(),
                    info.protocols.len()
                );
                let _ = seen.send(info).await;
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                println!("{name}: connected to {peer_id}");
            }
            _ => {}
        }
    }
}

/// Waits for the swarm's first listen address.
async fn first_listen_addr(swarm: &mut Swarm<App>) -> Multiaddr {
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The provider application, with a 4 MiB file in its block store.
    let mut provider_swarm = app_swarm()?;
    let provider_id = *provider_swarm.local_peer_id();
    let provider_addr = first_listen_addr(&mut provider_swarm).await;
    let provider_blocks = Arc::new(MemoryBlockstore::new());
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = import_bytes(&*provider_blocks, &data, &ImportOptions::default())?;
    // The manager runs on the application's behaviour: no keypair, no listen address here.
    let provider = Manager::builder()
        .behaviour(provider_id, &provider_swarm.behaviour().data_transfer)
        .blockstore(provider_blocks)
        .build()
        .await?;
    provider
        .register_voucher_type(
            <Request as datatransfer::Registerable>::TYPE,
            Arc::new(AcceptAll),
        )
        .await?;
    provider.start().await?;
    let (provider_seen, _) = mpsc::channel(16);
    tokio::spawn(drive(provider_swarm, "provider", provider_seen));
    println!(
        "provider: {provider_id} on {provider_addr} serves {} ({} bytes)",
        file.root,
        data.len()
    );

    // The client application: it meets the provider through its own swarm (kad and a dial).
    let mut client_swarm = app_swarm()?;
    let client_id = *client_swarm.local_peer_id();
    first_listen_addr(&mut client_swarm).await;
    let client_blocks = Arc::new(MemoryBlockstore::new());
    let client = Manager::builder()
        .behaviour(client_id, &client_swarm.behaviour().data_transfer)
        .blockstore(client_blocks.clone())
        .build()
        .await?;
    client.start().await?;
    client_swarm
        .behaviour_mut()
        .kad
        .add_address(&provider_id, provider_addr.clone());
    client_swarm.dial(provider_addr)?;
    let (seen_tx, mut seen) = mpsc::channel(16);
    tokio::spawn(drive(client_swarm, "client", seen_tx));

    // Identify tells the client what the provider speaks: data transfer and graphsync too.
    let info = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await?
        .ok_or("the client's swarm stopped")?;
    let speaks = |p: &str| info.protocols.iter().any(|s| s.as_ref() == p);
    for p in [
        "/fil/datatransfer/1.2.0",
        "/ipfs/graphsync/2.0.0",
        "/ipfs/kad/1.0.0",
    ] {
        println!("client: the provider speaks {p}: {}", speaks(p));
        assert!(speaks(p), "identify did not list {p}");
    }

    // The pull: the manager reaches the provider over the connection the application made.
    let mut events = client.subscribe().await?;
    let voucher = TypedNode::encode(&Request {
        note: "embedded".into(),
    })?;
    let channel = client
        .open_pull_channel(provider_id, voucher, file.root, all_selector())
        .await?;
    println!("client: opened {channel}");
    while let Some((event, state)) = events.next().await {
        if state.channel_id != channel {
            continue;
        }
        if event.code == EventCode::Error {
            println!("client: error: {}", event.message);
        }
        if state.status.is_terminal() {
            println!(
                "client: channel ended {:?} after {} bytes",
                state.status, state.received
            );
            assert_eq!(state.status, Status::Completed);
            break;
        }
    }
    let mut out = Vec::new();
    export(&*client_blocks, &file.root, &mut out)?;
    assert!(out == data, "the file differs");
    println!("client: file verified ({} bytes)", out.len());
    client.stop().await?;
    provider.stop().await?;
    Ok(())
}
