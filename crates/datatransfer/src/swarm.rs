//! The libp2p swarm a manager owns: TCP + noise + yamux on tokio, with the stream behaviour
//! (data-transfer and graphsync streams) and the protect behaviour (keep-alive of peers with
//! open channels, address book). One task drives it; the manager talks to it by commands.

use std::time::Duration;

use datatransfer_network::ProtectBehaviour;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identity, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

use crate::ManagerError;

/// The behaviours of the manager's swarm.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) stream: dt_streams::Behaviour,
    pub(crate) protect: ProtectBehaviour,
}

pub(crate) enum SwarmCmd {
    AddAddress(PeerId, Multiaddr),
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    IsConnected(PeerId, oneshot::Sender<bool>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Shutdown,
}

/// Builds the swarm and starts listening on every address in `listen`; returns it with the
/// addresses it listens on.
pub(crate) async fn build(
    keypair: identity::Keypair,
    listen: &[Multiaddr],
    idle_timeout: Duration,
) -> Result<(Swarm<Behaviour>, Vec<Multiaddr>), ManagerError> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| ManagerError::Swarm(e.to_string()))?
        .with_behaviour(|_| Behaviour {
            stream: dt_streams::Behaviour::new(),
            protect: ProtectBehaviour::new(),
        })
        .map_err(|e| ManagerError::Swarm(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build();
    let mut addrs = Vec::new();
    for addr in listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| ManagerError::Listen(addr.clone(), e.to_string()))?;
        // Wait for the listener to report its address (the real port for /tcp/0).
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    addrs.push(address);
                    break;
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(ManagerError::Listen(addr.clone(), error.to_string()));
                }
                SwarmEvent::ListenerClosed { reason, .. } => {
                    let why = reason.err().map_or("closed".into(), |e| e.to_string());
                    return Err(ManagerError::Listen(addr.clone(), why));
                }
                _ => {}
            }
        }
    }
    Ok((swarm, addrs))
}

/// Drives the swarm until the command channel closes. Peers whose last connection closed are
/// reported on `disconnected`.
pub(crate) async fn run(
    mut swarm: Swarm<Behaviour>,
    mut cmds: mpsc::Receiver<SwarmCmd>,
    disconnected: mpsc::UnboundedSender<PeerId>,
) {
    let mut dials: Vec<(PeerId, oneshot::Sender<Result<(), String>>)> = Vec::new();
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    let (done, rest): (Vec<_>, Vec<_>) =
                        dials.drain(..).partition(|(p, _)| *p == peer_id);
                    dials = rest;
                    for (_, tx) in done {
                        let _ = tx.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer_id), error, .. }
                    if !swarm.is_connected(&peer_id) =>
                {
                    let (failed, rest): (Vec<_>, Vec<_>) =
                        dials.drain(..).partition(|(p, _)| *p == peer_id);
                    dials = rest;
                    for (_, tx) in failed {
                        let _ = tx.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    let _ = disconnected.send(peer_id);
                }
                _ => {}
            },
            cmd = cmds.recv() => match cmd {
                None | Some(SwarmCmd::Shutdown) => return,
                Some(SwarmCmd::AddAddress(peer, addr)) => {
                    swarm.add_peer_address(peer, addr);
                }
                Some(SwarmCmd::Dial(addr, tx)) => {
                    let Some(peer) = peer_of(&addr) else {
                        let _ = tx.send(Err(format!("{addr} does not end in /p2p/<peer id>")));
                        continue;
                    };
                    if swarm.is_connected(&peer) {
                        let _ = tx.send(Ok(()));
                        continue;
                    }
                    swarm.add_peer_address(peer, addr.clone());
                    match swarm.dial(addr) {
                        Ok(()) => dials.push((peer, tx)),
                        Err(e) => { let _ = tx.send(Err(e.to_string())); }
                    }
                }
                Some(SwarmCmd::ListenAddrs(tx)) => {
                    let _ = tx.send(swarm.listeners().cloned().collect());
                }
                Some(SwarmCmd::IsConnected(peer, tx)) => {
                    let _ = tx.send(swarm.is_connected(&peer));
                }
                Some(SwarmCmd::Disconnect(peer, tx)) => {
                    let _ = tx.send(swarm.disconnect_peer_id(peer).is_ok());
                }
            },
        }
    }
}

/// The peer id at the end of a multiaddr (`.../p2p/<id>`).
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
