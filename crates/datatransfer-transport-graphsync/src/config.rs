//! The transport's settings and its own errors.

use crate::*;

/// Settings of the transport.
#[derive(Debug, Clone)]
pub struct GraphsyncTransportConfig {
    /// The graphsync node's settings (versions, message sizes, response limits).
    pub graphsync: GraphSyncConfig,
    /// Limits on data-transfer messages read from extensions.
    pub limits: DecodeLimits,
    /// Whether a new channel's request, like a restart's, asks the sender to skip the blocks
    /// at the start of the walk that the receiving store already holds
    /// (`graphsync/do-not-send-first-blocks`). go-data-transfer sets it on restarts only; on
    /// here by default, so a DAG partly at hand (from a channel that failed, or a CAR
    /// imported) is not sent again. Senders that do not know the extension send everything,
    /// which the receiver takes as usual.
    pub skip_held_blocks_on_open: bool,
    /// How long to wait before asking again when a responder refuses a request of ours as
    /// busy (its queue for us is full); the wait doubles with each refusal in a row, up to 32
    /// times this. Meanwhile the channel counts as queued.
    pub busy_retry_backoff: Duration,
    /// Busy refusals in a row after which the channel fails.
    pub max_busy_retries: u32,
}

impl Default for GraphsyncTransportConfig {
    fn default() -> Self {
        Self {
            graphsync: GraphSyncConfig::default(),
            limits: DecodeLimits::default(),
            skip_held_blocks_on_open: true,
            busy_retry_backoff: Duration::from_secs(1),
            max_busy_retries: 30,
        }
    }
}

/// Starting the transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Another behaviour already serves the graphsync protocols on this swarm.
    #[error("the graphsync protocols are already registered on this swarm")]
    AlreadyRegistered,
}
