//! The engine's limits and the channel monitor's settings, and the errors of API calls.

use super::*;

/// Limits the engine enforces; every quantity a peer can grow is bounded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most channels kept open at once (initiated and received); more requests are refused.
    pub max_channels: usize,
    /// Most vouchers, and most voucher results, recorded per channel.
    pub max_vouchers_per_channel: usize,
    /// Most validator calls in flight at once; requests beyond are refused.
    pub max_pending_validations: usize,
    /// How many recently finished channels are remembered (id and final status), so that a
    /// restart of a channel the peer did not see finish is answered instead of refused.
    pub remembered_finished_channels: usize,
    /// Watch channels this node initiated and restart or fail them when they stall
    /// (go-data-transfer's `channelmonitor`), and end channels we respond to whose initiator
    /// has gone silent; `None` turns the monitor off.
    pub monitor: Option<MonitorConfig>,
}

/// Settings of the channel monitor. Times are in the engine's clock (passed in).
///
/// Every wait the monitor can see has a deadline: an accept (`accept_timeout`), the answer to
/// a restart, also of a paused channel (`accept_timeout`, then restarted again), a time in
/// the responder's queue (`queue_timeout`), progress (`stall_timeout`) and completion
/// (`complete_timeout`). Each ends in a restart or in a failure that says which wait ran out.
///
/// On the responder's side, where only the initiator can restart a channel, a channel with no
/// event at all (no message from the initiator, no data moved, no restart) for
/// `responder_idle_timeout` fails, and the initiator is told so: its initiator went away
/// (killed for good, or it ended the channel and the message was lost). Go keeps such channels
/// open for ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// How long the responder has to accept a channel, or to answer a restart, before the
    /// channel fails (an accept) or is restarted again (a restart). It does not run while
    /// the request waits in the responder's queue.
    pub accept_timeout: Duration,
    /// How long a request may wait in the responder's queue (the responder said it is
    /// queued, or refused it as busy and it is being asked again) before the channel fails.
    pub queue_timeout: Duration,
    /// How long a running channel may make no progress before it is restarted. Progress is
    /// bytes moved, or the walk of the DAG reaching a block further than it ever did (blocks
    /// the receiver already holds count: a resumed pull walks them first).
    pub stall_timeout: Duration,
    /// How long to wait after a disconnect or transport error before restarting.
    pub restart_backoff: Duration,
    /// Restarts in a row without progress in between before the channel fails.
    pub max_consecutive_restarts: u32,
    /// How long, after all data moved, to wait for the responder to complete.
    pub complete_timeout: Duration,
    /// How long a channel we respond to may see nothing at all happen (no message from its
    /// initiator, no data moved) before it fails. Keep it longer than an initiator may
    /// legitimately stay silent: a pause of its own, the time it takes to pay when we ask
    /// for a voucher, a wait in our graphsync queue.
    pub responder_idle_timeout: Duration,
    /// How long, after we sent a voucher to a responder that is finalizing (it paused its
    /// Complete to be settled), to wait for its Complete before sending that voucher again
    /// (at most [`MonitorConfig::FINAL_VOUCHER_RESENDS`] times; `complete_timeout` still
    /// ends the wait). go-data-transfer's responder sends its paused Complete before it
    /// records that it is finalizing; a voucher read in between is taken as an ordinary
    /// payment, and the responder then waits for ever for one more. Payment vouchers are
    /// cumulative, so the copy settles what the first one paid.
    pub final_voucher_resend: Duration,
}

impl MonitorConfig {
    /// How many times a voucher sent to a finalizing responder is sent again.
    pub const FINAL_VOUCHER_RESENDS: u32 = 3;
}

impl Default for MonitorConfig {
    /// Close to the settings Lotus uses with go-data-transfer.
    fn default() -> Self {
        Self {
            accept_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(60),
            restart_backoff: Duration::from_secs(20),
            max_consecutive_restarts: 15,
            complete_timeout: Duration::from_secs(300),
            responder_idle_timeout: Duration::from_secs(30 * 60),
            final_voucher_resend: Duration::from_secs(5),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_channels: 10_000,
            max_vouchers_per_channel: 1_024,
            max_pending_validations: 4_096,
            remembered_finished_channels: 4_096,
            monitor: None,
        }
    }
}

/// Misuse of the API by the local caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// No channel with this id is open here.
    #[error("channel not found: {0}")]
    ChannelNotFound(Box<ChannelId>),
    /// Only the initiator may send vouchers.
    #[error("cannot send a voucher on channel {0}: we did not initiate it")]
    NotInitiator(Box<ChannelId>),
    /// Opening another channel would exceed [`EngineConfig::max_channels`].
    #[error("too many open channels (limit {0})")]
    TooManyChannels(usize),
    /// The channel already holds [`EngineConfig::max_vouchers_per_channel`] vouchers.
    #[error("too many vouchers on the channel (limit {0})")]
    TooManyVouchers(usize),
    /// A voucher type is registered twice, or is empty.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The state machine refused the event.
    #[error(transparent)]
    Fsm(#[from] FsmError),
}
