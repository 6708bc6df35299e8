//! Events: what happened to a channel, as subscribers see it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// A wall-clock instant, in nanoseconds since the Unix epoch.
///
/// The types and state-machine crates never read a clock; whoever drives them passes time in
/// as a `Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The epoch itself; handy in tests and simulators.
    pub const ZERO: Self = Self(0);

    /// From nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub fn as_unix_nanos(self) -> u64 {
        self.0
    }

    /// Converts a `SystemTime`; times before the epoch become the epoch, times past
    /// the year 2554 saturate.
    pub fn from_system_time(t: SystemTime) -> Self {
        let nanos = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// This instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    /// This instant plus `d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this instant is (zero if it is not after).
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// What kind of thing happened to a channel.
///
/// The union of the seed API's codes and go-data-transfer v1.15's. Numeric codes follow
/// v1.15 (`events.go`); `Progress`, which v1.x split into the `Data*` codes, keeps a code
/// after them. `Display` gives Go's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum EventCode {
    /// A channel was opened locally or by a peer's request.
    Open = 0,
    /// The responder accepted the request.
    Accept = 1,
    /// The channel was restarted.
    Restart = 2,
    /// A block was received (carries the block index).
    DataReceived = 3,
    /// A block was sent (carries the block index).
    DataSent = 4,
    /// One side cancelled.
    Cancel = 5,
    /// An error occurred.
    Error = 6,
    /// The transport finished cleaning up.
    CleanupComplete = 7,
    /// A new voucher arrived or was sent.
    NewVoucher = 8,
    /// A new voucher result arrived or was sent.
    NewVoucherResult = 9,
    /// The initiator paused.
    PauseInitiator = 10,
    /// The initiator resumed.
    ResumeInitiator = 11,
    /// The responder paused.
    PauseResponder = 12,
    /// The responder resumed.
    ResumeResponder = 13,
    /// The initiator finished sending or receiving.
    FinishTransfer = 14,
    /// The responder says it completed.
    ResponderCompletes = 15,
    /// The responder says it is finalizing (awaiting a final voucher).
    ResponderBeginsFinalization = 16,
    /// The responder finished its part and awaits the initiator.
    BeginFinalizing = 17,
    /// The connection to the other peer dropped.
    Disconnected = 18,
    /// The channel completed.
    Complete = 19,
    /// Cleanup completed as part of a restart.
    CompleteCleanupOnRestart = 20,
    /// A block was queued for sending.
    DataQueued = 21,
    /// Bytes were queued for sending.
    DataQueuedProgress = 22,
    /// Bytes were sent.
    DataSentProgress = 23,
    /// Bytes were received.
    DataReceivedProgress = 24,
    /// A request timed out.
    RequestTimedOut = 25,
    /// Sending data failed.
    SendDataError = 26,
    /// Receiving data failed.
    ReceiveDataError = 27,
    /// The transport queued the request.
    TransferRequestQueued = 28,
    /// The request was cancelled by the transport.
    RequestCancelled = 29,
    /// The transport channel was opened.
    Opened = 30,
    /// The seed API's single progress event (v0.5), kept for completeness.
    Progress = 31,
}

/// A numeric event code with no meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown event code {0}")]
pub struct UnknownEventCode(pub u32);

impl EventCode {
    /// Every code, in numeric order.
    pub const ALL: [Self; 32] = [
        Self::Open,
        Self::Accept,
        Self::Restart,
        Self::DataReceived,
        Self::DataSent,
        Self::Cancel,
        Self::Error,
        Self::CleanupComplete,
        Self::NewVoucher,
        Self::NewVoucherResult,
        Self::PauseInitiator,
        Self::ResumeInitiator,
        Self::PauseResponder,
        Self::ResumeResponder,
        Self::FinishTransfer,
        Self::ResponderCompletes,
        Self::ResponderBeginsFinalization,
        Self::BeginFinalizing,
        Self::Disconnected,
        Self::Complete,
        Self::CompleteCleanupOnRestart,
        Self::DataQueued,
        Self::DataQueuedProgress,
        Self::DataSentProgress,
        Self::DataReceivedProgress,
        Self::RequestTimedOut,
        Self::SendDataError,
        Self::ReceiveDataError,
        Self::TransferRequestQueued,
        Self::RequestCancelled,
        Self::Opened,
        Self::Progress,
    ];

    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Go's name for the event.
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "Open",
            Self::Accept => "Accept",
            Self::Restart => "Restart",
            Self::DataReceived => "DataReceived",
            Self::DataSent => "DataSent",
            Self::Cancel => "Cancel",
            Self::Error => "Error",
            Self::CleanupComplete => "CleanupComplete",
            Self::NewVoucher => "NewVoucher",
            Self::NewVoucherResult => "NewVoucherResult",
            Self::PauseInitiator => "PauseInitiator",
            Self::ResumeInitiator => "ResumeInitiator",
            Self::PauseResponder => "PauseResponder",
            Self::ResumeResponder => "ResumeResponder",
            Self::FinishTransfer => "FinishTransfer",
            Self::ResponderCompletes => "ResponderCompletes",
            Self::ResponderBeginsFinalization => "ResponderBeginsFinalization",
            Self::BeginFinalizing => "BeginFinalizing",
            Self::Disconnected => "Disconnected",
            Self::Complete => "Complete",
            Self::CompleteCleanupOnRestart => "CompleteCleanupOnRestart",
            Self::DataQueued => "DataQueued",
            Self::DataQueuedProgress => "DataQueuedProgress",
            Self::DataSentProgress => "DataSentProgress",
            Self::DataReceivedProgress => "DataReceivedProgress",
            Self::RequestTimedOut => "RequestTimedOut",
            Self::SendDataError => "SendDataError",
            Self::ReceiveDataError => "ReceiveDataError",
            Self::TransferRequestQueued => "TransferRequestQueued",
            Self::RequestCancelled => "RequestCancelled",
            Self::Opened => "Opened",
            Self::Progress => "Progress",
        }
    }
}

impl TryFrom<u32> for EventCode {
    type Error = UnknownEventCode;

    fn try_from(code: u32) -> Result<Self, UnknownEventCode> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or(UnknownEventCode(code))
    }
}

impl fmt::Display for EventCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that happened to a channel, with a clarifying message and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What kind of event it is.
    pub code: EventCode,
    /// Any clarifying information (an error's text, say); often empty.
    pub message: String,
    /// When it happened.
    pub timestamp: Timestamp,
}

impl Event {
    /// An event with a message.
    pub fn new(code: EventCode, message: impl Into<String>, timestamp: Timestamp) -> Self {
        Self {
            code,
            message: message.into(),
            timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_go_v1_15() {
        for (i, c) in EventCode::ALL.iter().enumerate() {
            assert_eq!(c.code(), i as u32);
            assert_eq!(EventCode::try_from(i as u32), Ok(*c));
        }
        assert_eq!(EventCode::DataReceived.code(), 3);
        assert_eq!(EventCode::Opened.code(), 30);
        assert_eq!(EventCode::try_from(32), Err(UnknownEventCode(32)));
        assert_eq!(
            EventCode::ResponderBeginsFinalization.to_string(),
            "ResponderBeginsFinalization"
        );
    }

    #[test]
    fn timestamps_convert_and_saturate() {
        let t = Timestamp::from_unix_nanos(1_500_000_000);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)).as_unix_nanos(),
            2_500_000_000
        );
        assert_eq!(Timestamp(5).saturating_since(Timestamp(9)), Duration::ZERO);
        assert_eq!(
            Timestamp(u64::MAX).saturating_add(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
    }
}
