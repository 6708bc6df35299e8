//! The libp2p side of a manager: [`DataTransferBehaviour`], which an application nests in its
//! own `Swarm`, and the swarm a manager builds and drives itself when it is not given one
//! (TCP, TLS or noise, yamux on tokio).

use std::convert::Infallible;
use std::time::Duration;

use datatransfer_network::{ProtectBehaviour, ProtectHandle};
use datatransfer_streams::Control;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identity, noise, tcp, yamux};
use tokio::sync::mpsc;

use crate::{ManagerError, tls};

/// The secure channels a manager's own swarm offers, in the order it proposes them when it
/// dials (a listener takes either). Both are what go-libp2p offers by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecureChannels {
    /// TLS 1.3 first ([`crate::tls`]: AES-GCM on CPUs with AES instructions when we dial,
    /// or when a Go peer or one of ours dials us), noise second (the default). On such a CPU
    /// a bulk transfer costs about a quarter less CPU than over noise, whose only cipher is
    /// ChaCha20-Poly1305.
    #[default]
    TlsThenNoise,
    /// Noise first, TLS second (Lotus's default order).
    NoiseThenTls,
    /// Noise only, for peers or policies that want nothing else.
    NoiseOnly,
}

/// Everything data transfer needs in a libp2p `Swarm`: the streams of the data-transfer and
/// graphsync protocols, and the protection of connections that carry channels (with an
/// address book, dials and disconnects for the manager).
///
/// Nest it in your own `#[derive(NetworkBehaviour)]` beside identify, kad or bitswap, build
/// your swarm with your keypair and transports (QUIC included), and hand it to
/// [`crate::ManagerBuilder::behaviour`]. Your program keeps driving the swarm; the manager
/// works through handles to this behaviour. It emits no events of its own.
///
/// ```no_run
/// use libp2p::swarm::NetworkBehaviour;
///
/// #[derive(NetworkBehaviour)]
/// struct App {
///     ping: libp2p::ping::Behaviour,
///     data_transfer: datatransfer::DataTransferBehaviour,
/// }
/// ```
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Infallible", prelude = "libp2p::swarm::derive_prelude")]
pub struct DataTransferBehaviour {
    stream: datatransfer_streams::Behaviour,
    protect: ProtectBehaviour,
}

impl Default for DataTransferBehaviour {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DataTransferBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataTransferBehaviour")
            .finish_non_exhaustive()
    }
}

impl DataTransferBehaviour {
    /// A behaviour with the default limits: 1,024 queued inbound streams per protocol
    /// ([`datatransfer_streams::DEFAULT_MAX_QUEUED_INBOUND`]), the addresses of 10,000 peers remembered
    /// ([`datatransfer_network::DEFAULT_ADDRESS_BOOK_PEERS`]).
    pub fn new() -> Self {
        Self {
            stream: datatransfer_streams::Behaviour::new(),
            protect: ProtectBehaviour::new(),
        }
    }

    pub(crate) fn control(&self) -> Control {
        self.stream.new_control()
    }

    pub(crate) fn peers(&self) -> ProtectHandle {
        self.protect.handle()
    }
}

/// Builds a swarm of its own and starts listening on every address in `listen`; returns it
/// with the addresses it listens on.
pub(crate) async fn build(
    keypair: identity::Keypair,
    listen: &[Multiaddr],
    idle_timeout: Duration,
    security: SecureChannels,
) -> Result<Swarm<DataTransferBehaviour>, ManagerError> {
    let swarm_error = |e: &dyn std::fmt::Display| ManagerError::Swarm(e.to_string());
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
    // Each order is a different type of upgrade: one builder chain, written once.
    macro_rules! over_tcp_with {
        ($security:expr) => {
            builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    $security,
                    yamux::Config::default,
                )
                .map_err(|e| swarm_error(&e))?
                .with_behaviour(|_| DataTransferBehaviour::new())
                .map_err(|e| swarm_error(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
                .build()
        };
    }
    let mut swarm = match security {
        SecureChannels::TlsThenNoise => over_tcp_with!((tls::Config::new, noise::Config::new)),
        SecureChannels::NoiseThenTls => over_tcp_with!((noise::Config::new, tls::Config::new)),
        SecureChannels::NoiseOnly => over_tcp_with!(noise::Config::new),
    };
    for addr in listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| ManagerError::Listen(addr.clone(), e.to_string()))?;
        // Wait for the listener to report its address (the real port for /tcp/0).
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { .. } => break,
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
    Ok(swarm)
}

/// Drives a manager's own swarm until told to stop or until every manager handle is gone.
pub(crate) async fn run(mut swarm: Swarm<DataTransferBehaviour>, mut stop: mpsc::Receiver<()>) {
    loop {
        tokio::select! {
            _ = swarm.select_next_some() => {}
            _ = stop.recv() => return,
        }
    }
}
