//! The side channel on which data-transfer peers exchange requests and responses outside the
//! transport: push requests, restarts, vouchers, pauses, cancels and completions.
//!
//! - [`DataTransferNetwork`]: what the engine's shell needs (send a message, protect a
//!   connection, know its own peer id); inbound traffic arrives as [`NetworkEvent`]s on the
//!   receiver handed out at construction.
//! - [`Libp2pNetwork`]: `/fil/datatransfer/1.2.0` and `/fil/datatransfer/1.1.0` over rust-libp2p,
//!   as go-data-transfer's `network/libp2p_impl.go` does it: one stream per message, the
//!   protocol chosen per peer (1.2.0 preferred, remembered once a peer turns out to speak only
//!   1.1.0), stream opening retried with exponential backoff, a send timeout, and inbound
//!   streams read message after message (each one self-delimiting CBOR item, no length
//!   prefix) up to a size cap.
//! - [`ProtectBehaviour`]: keeps connections to peers with open channels alive, and remembers
//!   peers' addresses so they can be reached by id.
//! - [`MemoryNetwork`]: the same API in memory, with injectable drops, delays and
//!   disconnects, for fast tests.

mod framing;
mod libp2p_impl;
mod memory;
mod protect;

use std::time::Duration;

use async_trait::async_trait;
use datatransfer_types::PeerId;
use datatransfer_types::message::{DecodeLimits, Message, MessageError, WireVersion};

pub use framing::read_messages;
pub use libp2p_impl::Libp2pNetwork;
pub use memory::{MemoryHub, MemoryNetwork};
pub use protect::{
    DEFAULT_ADDRESS_BOOK_PEERS, DialError, ProtectBehaviour, ProtectHandle, peer_of,
};

/// Something the network received.
// A message is a few hundred bytes; events are moved once, so boxing would not pay.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkEvent {
    /// A message from a peer.
    Message {
        /// The sender.
        from: PeerId,
        /// The message.
        message: Message,
        /// The protocol version it came on.
        version: WireVersion,
    },
    /// A peer sent something unreadable; its stream was reset. Other streams are unaffected.
    Error {
        /// The sender.
        from: PeerId,
        /// What was wrong.
        error: InboundError,
    },
}

/// What was wrong with an inbound stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// The bytes are not a valid message.
    #[error("invalid message: {0}")]
    Invalid(#[from] MessageError),
    /// A message grew past the size limit before it ended.
    #[error("message exceeds the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of a message.
    #[error("stream closed after {buffered} bytes of an unfinished message")]
    Truncated {
        /// How many bytes of the unfinished message had arrived.
        buffered: usize,
    },
    /// Reading the stream failed.
    #[error("stream read failed: {0}")]
    Io(String),
    /// No whole message (nor the stream's end) came within the time allowed
    /// ([`NetworkConfig::receive_timeout`]): the peer holds the stream open and idle, or
    /// sends too slowly.
    #[error("no whole message within {after:?}")]
    TimedOut {
        /// The time allowed.
        after: Duration,
    },
    /// The peer already held as many streams as we allow one peer, read or waiting their
    /// turn ([`NetworkConfig::max_inbound_streams_per_peer`] plus
    /// [`NetworkConfig::max_waiting_inbound_streams_per_peer`]); this one was reset unread.
    #[error("the peer already holds {max} inbound streams")]
    TooManyStreams {
        /// The limit.
        max: usize,
    },
}

/// Sending a message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// Every attempt to reach the peer failed.
    #[error("could not send to {peer} after {attempts} attempts: {last}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// The peer speaks none of our protocol versions.
    #[error("{peer} supports none of our data-transfer protocols")]
    UnsupportedProtocol {
        /// The peer.
        peer: PeerId,
    },
    /// The network was shut down.
    #[error("the network is shut down")]
    Closed,
}

/// Stream-opening retries, as go-data-transfer's `libp2p_impl.go` does them.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in total (at least 1).
    pub attempts: u32,
    /// Wait after the first failure.
    pub min_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Each wait is the previous one times this.
    pub factor: f64,
}

impl Default for RetryConfig {
    /// Go's defaults: 5 attempts, 1 s first wait, factor 5, at most 5 minutes.
    fn default() -> Self {
        Self {
            attempts: 5,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            factor: 5.0,
        }
    }
}

impl RetryConfig {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1) as i32);
        let secs = self.min_backoff.as_secs_f64() * exp;
        Duration::from_secs_f64(secs.min(self.max_backoff.as_secs_f64()))
    }
}

/// Settings of a data-transfer network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// Protocol versions to speak, most preferred first.
    pub versions: Vec<WireVersion>,
    /// Retries of opening a stream. A wait between attempts ends early when a connection to
    /// the peer is established (it dialled us back, say).
    pub retry: RetryConfig,
    /// Longest time one attempt (open, write, close) may take.
    pub send_timeout: Duration,
    /// Limits on inbound messages (size, nesting).
    pub limits: DecodeLimits,
    /// Most inbound streams read at once; more wait.
    pub max_inbound_streams: usize,
    /// Most inbound streams read at once from one peer; more from it wait their turn (not
    /// holding up other peers' streams), so one peer cannot take every reader. A peer opens
    /// one stream per message (go-data-transfer sends from many goroutines at once), so a
    /// burst waits rather than fails: go-data-transfer takes a message for sent once it is
    /// written, and would not retry one we reset.
    pub max_inbound_streams_per_peer: usize,
    /// Most inbound streams of one peer's waiting for their turn; past it a new one is reset
    /// unread ([`InboundError::TooManyStreams`]).
    pub max_waiting_inbound_streams_per_peer: usize,
    /// How long an inbound stream may take to bring its next whole message, or its end, from
    /// when it is read first and after each message; past it the stream is reset. As
    /// go-data-transfer v2's read deadline on its streams (its send timeout, 10 s; v1.x sets
    /// none, and writes one message a stream and closes it, as v2 does).
    pub receive_timeout: Duration,
    /// Capacity of the event queue; a full queue slows the readers down.
    pub event_buffer: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            versions: vec![WireVersion::V1_2, WireVersion::V1_1],
            retry: RetryConfig::default(),
            send_timeout: Duration::from_secs(10),
            limits: DecodeLimits::default(),
            max_inbound_streams: 256,
            max_inbound_streams_per_peer: 32,
            max_waiting_inbound_streams_per_peer: 1024,
            receive_timeout: Duration::from_secs(10),
            event_buffer: 1024,
        }
    }
}

/// The data-transfer network as the engine's shell sees it.
#[async_trait]
pub trait DataTransferNetwork: Send + Sync {
    /// Our own peer id.
    fn peer_id(&self) -> PeerId;

    /// Sends one message, retrying as configured.
    async fn send_message(&self, to: PeerId, message: Message) -> Result<(), NetworkError>;

    /// Keeps the connection to `peer` open while `tag` (a channel) needs it.
    fn protect(&self, peer: PeerId, tag: &str);

    /// Releases one tag; returns whether the peer is still protected by other tags.
    fn unprotect(&self, peer: PeerId, tag: &str) -> bool;
}
