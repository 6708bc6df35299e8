//! The data-transfer network on rust-libp2p, through `datatransfer-streams`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datatransfer_streams::{Control, OpenStreamError};
use datatransfer_types::PeerId;
use datatransfer_types::message::{Message, WireVersion};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::StreamProtocol;
use tokio::sync::{Semaphore, mpsc};

use crate::framing::read_messages;
use crate::protect::ProtectHandle;
use crate::{DataTransferNetwork, InboundError, NetworkConfig, NetworkError, NetworkEvent};

fn protocol(v: WireVersion) -> StreamProtocol {
    StreamProtocol::new(v.protocol())
}

/// The data-transfer protocols over a libp2p `Swarm` that holds a `datatransfer_streams::Behaviour`
/// (for the streams) and a [`crate::ProtectBehaviour`] (for connection protection).
///
/// The swarm is driven by its owner; this type only opens and accepts streams through the
/// stream behaviour's [`Control`], so graphsync and anything else can share the swarm.
#[derive(Clone)]
pub struct Libp2pNetwork {
    me: PeerId,
    control: Control,
    protect: ProtectHandle,
    config: Arc<NetworkConfig>,
    /// The version each peer speaks, once known.
    versions: Arc<Mutex<HashMap<PeerId, WireVersion>>>,
}

impl std::fmt::Debug for Libp2pNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libp2pNetwork")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// A peer's inbound streams: its turns to be read (at most
/// [`NetworkConfig::max_inbound_streams_per_peer`] at once) and how many it holds, read or
/// waiting for a turn.
struct PeerStreams {
    turns: Arc<Semaphore>,
    held: usize,
}

type Peers = Arc<Mutex<HashMap<PeerId, PeerStreams>>>;

/// One of a peer's inbound streams, counted while held.
struct PeerSlot {
    peers: Peers,
    peer: PeerId,
}

impl PeerSlot {
    /// A slot for `peer` and the peer's turns, unless it holds `max_held` streams already.
    fn take(
        peers: &Peers,
        peer: PeerId,
        turns: usize,
        max_held: usize,
    ) -> Option<(Self, Arc<Semaphore>)> {
        let mut map = peers.lock().unwrap_or_else(|e| e.into_inner());
        let streams = map.entry(peer).or_insert_with(|| PeerStreams {
            turns: Arc::new(Semaphore::new(turns)),
            held: 0,
        });
        if streams.held >= max_held {
            return None;
        }
        streams.held += 1;
        let turns = streams.turns.clone();
        let slot = Self {
            peers: peers.clone(),
            peer,
        };
        Some((slot, turns))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(streams) = map.get_mut(&self.peer) {
            streams.held -= 1;
            if streams.held == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

impl Libp2pNetwork {
    /// Starts serving the configured protocol versions through `control` and returns the
    /// network and the receiver of what peers send. Must be called inside a tokio runtime
    /// (it spawns the tasks that read inbound streams).
    pub fn new(
        me: PeerId,
        mut control: Control,
        protect: ProtectHandle,
        config: NetworkConfig,
    ) -> Result<(Self, mpsc::Receiver<NetworkEvent>), datatransfer_streams::AlreadyRegistered> {
        let (tx, rx) = mpsc::channel(config.event_buffer.max(1));
        let config = Arc::new(config);
        let permits = Arc::new(Semaphore::new(config.max_inbound_streams.max(1)));
        let peers: Peers = Arc::new(Mutex::new(HashMap::new()));
        for &version in &config.versions {
            let mut incoming = control.accept(protocol(version))?;
            let tx = tx.clone();
            let config = config.clone();
            let permits = permits.clone();
            let peers = peers.clone();
            tokio::spawn(async move {
                while let Some((from, mut stream)) = incoming.next().await {
                    let turns = config.max_inbound_streams_per_peer.max(1);
                    let max_held = turns + config.max_waiting_inbound_streams_per_peer;
                    let Some((slot, turns)) = PeerSlot::take(&peers, from, turns, max_held) else {
                        // Dropping the stream resets it.
                        drop(stream);
                        let error = InboundError::TooManyStreams { max: max_held };
                        let _ = tx.try_send(NetworkEvent::Error { from, error });
                        continue;
                    };
                    let tx = tx.clone();
                    let config = config.clone();
                    let permits = permits.clone();
                    // Waits for the peer's turn, then for a reader, off the accept loop: a
                    // peer's streams wait behind its own, not other peers'.
                    tokio::spawn(async move {
                        let Ok(turn) = turns.acquire_owned().await else {
                            return;
                        };
                        let Ok(permit) = permits.acquire_owned().await else {
                            return;
                        };
                        let res = read_messages(
                            &mut stream,
                            from,
                            version,
                            &config.limits,
                            config.receive_timeout,
                            &tx,
                        )
                        .await;
                        match res {
                            // Read to the end: close our side, which tells the sender its
                            // messages were taken.
                            Ok(()) => {
                                let _ = stream.close().await;
                            }
                            // On error the stream is dropped here, which resets it.
                            Err(error) => {
                                let _ = tx.send(NetworkEvent::Error { from, error }).await;
                            }
                        }
                        drop(permit);
                        drop(turn);
                        drop(slot);
                    });
                }
            });
        }
        let net = Self {
            me,
            control,
            protect,
            config,
            versions: Arc::new(Mutex::new(HashMap::new())),
        };
        Ok((net, rx))
    }

    /// The protocol version `peer` is known to speak, if it was contacted already.
    pub fn version_of(&self, peer: &PeerId) -> Option<WireVersion> {
        self.versions.lock().ok().and_then(|v| v.get(peer).copied())
    }

    /// Opens a stream in the best version the peer speaks, writes the message, closes.
    async fn try_send(&self, to: PeerId, message: &Message) -> Result<(), Attempt> {
        let known = self.version_of(&to);
        let candidates: Vec<WireVersion> = match known {
            Some(v) => vec![v],
            None => self.config.versions.clone(),
        };
        let mut control = self.control.clone();
        for version in candidates {
            match control.open_stream(to, protocol(version)).await {
                Ok(mut stream) => {
                    if let Ok(mut v) = self.versions.lock() {
                        v.insert(to, version);
                    }
                    let bytes = message.to_cbor(version);
                    stream
                        .write_all(&bytes)
                        .await
                        .map_err(|e| Attempt::Failed(e.to_string()))?;
                    stream
                        .close()
                        .await
                        .map_err(|e| Attempt::Failed(e.to_string()))?;
                    // Wait for the reader to close its side. A reader that took the stream
                    // reads to the end and closes (we see the end); a stream dropped unread
                    // (a reader that failed, or an acceptor gone) is
                    // reset, and the message must go again.
                    let mut probe = [0u8; 1];
                    return match stream.read(&mut probe).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(Attempt::Failed(format!("the peer dropped the stream: {e}"))),
                    };
                }
                Err(OpenStreamError::UnsupportedProtocol(_)) => continue,
                Err(OpenStreamError::Stopped) => return Err(Attempt::Stopped),
                Err(e) => return Err(Attempt::Failed(e.to_string())),
            }
        }
        if let Ok(mut v) = self.versions.lock() {
            v.remove(&to);
        }
        Err(Attempt::Unsupported)
    }
}

enum Attempt {
    Failed(String),
    Unsupported,
    /// Our swarm stopped: no later attempt can do better.
    Stopped,
}

#[async_trait]
impl DataTransferNetwork for Libp2pNetwork {
    fn peer_id(&self) -> PeerId {
        self.me
    }

    async fn send_message(&self, to: PeerId, message: Message) -> Result<(), NetworkError> {
        let retry = &self.config.retry;
        let attempts = retry.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match tokio::time::timeout(self.config.send_timeout, self.try_send(to, &message)).await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(Attempt::Unsupported)) => {
                    return Err(NetworkError::UnsupportedProtocol { peer: to });
                }
                Ok(Err(Attempt::Failed(e))) => last = e,
                Ok(Err(Attempt::Stopped)) => {
                    return Err(NetworkError::Unreachable {
                        peer: to,
                        attempts: attempt,
                        last: "our swarm stopped".into(),
                    });
                }
                Err(_) => last = format!("timed out after {:?}", self.config.send_timeout),
            }
            if attempt < attempts {
                // A peer that connects (dials back, say) ends the wait early.
                self.protect
                    .wait_for_connection(to, retry.backoff(attempt))
                    .await;
            }
        }
        Err(NetworkError::Unreachable {
            peer: to,
            attempts,
            last,
        })
    }

    fn protect(&self, peer: PeerId, tag: &str) {
        self.protect.protect(peer, tag);
    }

    fn unprotect(&self, peer: PeerId, tag: &str) -> bool {
        self.protect.unprotect(peer, tag)
    }
}
