//! Our graphsync node alone, with no data-transfer layer, on a libp2p swarm of its own: to
//! pull from go-graphsync and to serve it.

use std::sync::Arc;
use std::time::Duration;

use datatransfer_graphsync::node::{AcceptAll, GraphSync, GraphSyncConfig};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// A graphsync node on its own swarm (TCP + noise + yamux on 127.0.0.1) that serves every
/// request from its store.
pub struct BareGraphsync {
    /// Its peer id.
    pub peer: PeerId,
    /// The node.
    pub gs: GraphSync,
    /// Its block store.
    pub store: Arc<MemoryBlockstore>,
    /// Where it listens, with `/p2p`.
    pub addr: Multiaddr,
    dial: mpsc::Sender<(Multiaddr, oneshot::Sender<Result<(), String>>)>,
}

impl BareGraphsync {
    /// Starts a node listening on any port of 127.0.0.1.
    pub async fn start() -> Self {
        let mut swarm = datatransfer_test_support::streams_swarm();
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        let (addr_tx, addr_rx) = oneshot::channel();
        let (dial, mut dials) =
            mpsc::channel::<(Multiaddr, oneshot::Sender<Result<(), String>>)>(4);
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut waiting: Vec<(PeerId, oneshot::Sender<Result<(), String>>)> = Vec::new();
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::NewListenAddr { address, .. } => {
                            if let Some(tx) = addr_tx.take() {
                                let _ = tx.send(address);
                            }
                        }
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            for (_, tx) in waiting.extract_if(.., |(p, _)| *p == peer_id) {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        SwarmEvent::OutgoingConnectionError { peer_id: Some(p), error, .. } => {
                            for (_, tx) in waiting.extract_if(.., |(w, _)| *w == p) {
                                let _ = tx.send(Err(error.to_string()));
                            }
                        }
                        _ => {}
                    },
                    Some((addr, tx)) = dials.recv() => {
                        let Some(libp2p::multiaddr::Protocol::P2p(p)) = addr.iter().last() else {
                            let _ = tx.send(Err("no /p2p in the address".into()));
                            continue;
                        };
                        match swarm.dial(addr) {
                            Ok(()) => waiting.push((p, tx)),
                            Err(e) => { let _ = tx.send(Err(e.to_string())); }
                        }
                    }
                }
            }
        });
        let addr = timeout(Duration::from_secs(10), addr_rx)
            .await
            .unwrap()
            .unwrap()
            .with(libp2p::multiaddr::Protocol::P2p(peer));
        let store = Arc::new(MemoryBlockstore::new());
        let gs = GraphSync::start(
            peer,
            control,
            store.clone() as Arc<dyn Blockstore>,
            Arc::new(AcceptAll),
            GraphSyncConfig::default(),
        )
        .unwrap();
        Self {
            peer,
            gs,
            store,
            addr,
            dial,
        }
    }

    /// Connects to a peer (an address with `/p2p`).
    pub async fn connect(&self, addr: Multiaddr) {
        let (tx, rx) = oneshot::channel();
        self.dial.send((addr, tx)).await.unwrap();
        timeout(Duration::from_secs(10), rx)
            .await
            .expect("dial timed out")
            .unwrap()
            .expect("dial failed");
    }
}
