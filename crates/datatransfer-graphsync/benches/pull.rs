//! Prints graphsync pull throughput for a 256 MiB (or `GS_BENCH_MIB`) UnixFS file between two nodes over TCP on
//! 127.0.0.1, next to raw TCP loopback throughput measured in the same run.
//!
//! `cargo bench -p datatransfer-graphsync`. Figures are printed, not asserted.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datatransfer_graphsync::node::{AcceptAll, GraphSync, GraphSyncConfig};
use datatransfer_graphsync::{Extensions, RawNode, ResponseStatus, Version};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::unixfs::{ImportOptions, import_bytes};
use datatransfer_test_support::{listening_swarm, random_bytes};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use tokio::sync::mpsc;

/// The file size: 256 MiB, or `GS_BENCH_MIB` MiB.
fn size() -> usize {
    std::env::var("GS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(256)
        << 20
}

fn raw_tcp() -> f64 {
    let size = size();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        while total < size {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n;
        }
    });
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    for _ in 0..(size >> 20) {
        s.write_all(&chunk).expect("write");
    }
    drop(s);
    reader.join().expect("reader");
    size as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    println!("raw TCP loopback: {:.0} MB/s", raw_tcp());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (server_swarm, server_addr) = listening_swarm().await;
        let server_store = Arc::new(MemoryBlockstore::new());
        let data = random_bytes(size(), 1);
        let root = import_bytes(&*server_store, &data, &ImportOptions::default())
            .expect("import")
            .root;
        drop(data);
        let server_peer = *server_swarm.local_peer_id();
        let mut server_control = server_swarm.behaviour().new_control();
        let _server = GraphSync::start(
            server_peer,
            server_swarm.behaviour().new_control(),
            server_store,
            Arc::new(AcceptAll),
            GraphSyncConfig::default(),
        )
        .expect("start");
        let mut server_swarm = server_swarm;
        tokio::spawn(async move {
            loop {
                server_swarm.select_next_some().await;
            }
        });
        let selector =
            RawNode::new(Selector::explore_all_recursively().to_dag_cbor()).expect("selector");
        // The ceiling libp2p sets: the same bytes through one stream (noise, yamux), no
        // graphsync.
        {
            let (mut client_swarm, _) = listening_swarm().await;
            let mut control = client_swarm.behaviour().new_control();
            let protocol = libp2p::StreamProtocol::new("/bench/stream");
            let mut incoming = server_control.accept(protocol.clone()).expect("accept");
            let reader = tokio::spawn(async move {
                use futures::AsyncReadExt;
                let (_, mut stream) = incoming.next().await.expect("a stream");
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                total
            });
            client_swarm.dial(server_addr.clone()).expect("dial");
            tokio::spawn(async move {
                loop {
                    client_swarm.select_next_some().await;
                }
            });
            let mut stream = loop {
                match control.open_stream(server_peer, protocol.clone()).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            };
            use futures::AsyncWriteExt;
            let chunk = vec![7u8; 1 << 20];
            let start = Instant::now();
            for _ in 0..(size() >> 20) {
                stream.write_all(&chunk).await.expect("write");
            }
            stream.close().await.expect("close");
            let total = reader.await.expect("reader");
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(total, size());
            println!(
                "one libp2p stream (noise, yamux), no graphsync: {:.0} MB/s",
                size() as f64 / secs / 1e6
            );
        }
        for version in [Version::V2, Version::V1] {
            // A fresh client node (own swarm and peer id) per protocol version.
            let (mut client_swarm, _) = listening_swarm().await;
            let client_peer = *client_swarm.local_peer_id();
            let control = client_swarm.behaviour().new_control();
            let (up_tx, mut up) = mpsc::channel(1);
            client_swarm.dial(server_addr.clone()).expect("dial");
            tokio::spawn(async move {
                loop {
                    if let SwarmEvent::ConnectionEstablished { .. } =
                        client_swarm.select_next_some().await
                    {
                        let _ = up_tx.try_send(());
                    }
                }
            });
            up.recv().await;
            let store = Arc::new(MemoryBlockstore::new());
            let config = GraphSyncConfig {
                versions: vec![version],
                ..GraphSyncConfig::default()
            };
            let client = GraphSync::start(client_peer, control, store, Arc::new(AcceptAll), config)
                .expect("start");
            let start = Instant::now();
            let req = client
                .request(server_peer, root, selector.clone(), Extensions::new())
                .await
                .expect("request");
            assert_eq!(req.finish().await, Ok(ResponseStatus::RequestCompletedFull));
            let secs = start.elapsed().as_secs_f64();
            println!(
                "graphsync {} pull of {} MiB: {:.0} MB/s",
                version.protocol(),
                size() >> 20,
                size() as f64 / secs / 1e6
            );
        }
    });
}
