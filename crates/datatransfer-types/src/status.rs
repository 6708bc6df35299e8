//! Channel statuses, with Go's numeric codes and names.

use std::fmt;

use thiserror::Error;

/// Where a channel is in its life. The numeric codes (0..=16) and names are Go's
/// (`statuses.go`), so stored and logged values mean the same thing on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u64)]
pub enum Status {
    /// Requested but not yet accepted.
    Requested = 0,
    /// Data is moving.
    Ongoing = 1,
    /// The initiator has sent or received all data and awaits the responder's confirmation.
    TransferFinished = 2,
    /// The initiator was told the responder is done.
    ResponderCompleted = 3,
    /// The responder awaits a final message from the initiator.
    Finalizing = 4,
    /// Cleaning up a completed channel.
    Completing = 5,
    /// Done successfully (terminal).
    Completed = 6,
    /// Cleaning up a failed channel.
    Failing = 7,
    /// Ended with an error (terminal).
    Failed = 8,
    /// Cleaning up a cancelled channel.
    Cancelling = 9,
    /// Ended early by either side (terminal).
    Cancelled = 10,
    /// Paused by the initiator; only it can resume.
    InitiatorPaused = 11,
    /// Paused by the responder; only it can resume.
    ResponderPaused = 12,
    /// Paused by both sides; both must resume.
    BothPaused = 13,
    /// The responder awaits a final voucher.
    ResponderFinalizing = 14,
    /// The responder awaits a final voucher and all data has arrived.
    ResponderFinalizingTransferFinished = 15,
    /// Returned for a channel that does not exist.
    ChannelNotFoundError = 16,
}

/// A numeric status code outside 0..=16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown channel status code {0}")]
pub struct UnknownStatus(pub u64);

impl Status {
    /// Every status, in code order.
    pub const ALL: [Self; 17] = [
        Self::Requested,
        Self::Ongoing,
        Self::TransferFinished,
        Self::ResponderCompleted,
        Self::Finalizing,
        Self::Completing,
        Self::Completed,
        Self::Failing,
        Self::Failed,
        Self::Cancelling,
        Self::Cancelled,
        Self::InitiatorPaused,
        Self::ResponderPaused,
        Self::BothPaused,
        Self::ResponderFinalizing,
        Self::ResponderFinalizingTransferFinished,
        Self::ChannelNotFoundError,
    ];

    /// The numeric code Go uses.
    pub fn code(self) -> u64 {
        self as u64
    }

    /// Go's name for the status.
    pub fn name(self) -> &'static str {
        match self {
            Self::Requested => "Requested",
            Self::Ongoing => "Ongoing",
            Self::TransferFinished => "TransferFinished",
            Self::ResponderCompleted => "ResponderCompleted",
            Self::Finalizing => "Finalizing",
            Self::Completing => "Completing",
            Self::Completed => "Completed",
            Self::Failing => "Failing",
            Self::Failed => "Failed",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::InitiatorPaused => "InitiatorPaused",
            Self::ResponderPaused => "ResponderPaused",
            Self::BothPaused => "BothPaused",
            Self::ResponderFinalizing => "ResponderFinalizing",
            Self::ResponderFinalizingTransferFinished => "ResponderFinalizingTransferFinished",
            Self::ChannelNotFoundError => "ChannelNotFoundError",
        }
    }

    /// Completed, Failed or Cancelled: the channel will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Completing, Failing or Cancelling: the transport is being cleaned up.
    pub fn is_cleaning_up(self) -> bool {
        matches!(self, Self::Completing | Self::Failing | Self::Cancelling)
    }

    /// Paused by either side or both.
    pub fn is_paused(self) -> bool {
        matches!(
            self,
            Self::InitiatorPaused | Self::ResponderPaused | Self::BothPaused
        )
    }

    /// Go's `transferringStates`: the statuses in which data progress is counted.
    pub fn is_transferring(self) -> bool {
        matches!(
            self,
            Self::Requested
                | Self::Ongoing
                | Self::InitiatorPaused
                | Self::ResponderPaused
                | Self::BothPaused
                | Self::ResponderCompleted
                | Self::ResponderFinalizing
        )
    }

    /// Whether the channel still needs work: neither terminal nor the not-found marker.
    pub fn is_in_progress(self) -> bool {
        !self.is_terminal() && self != Self::ChannelNotFoundError
    }
}

impl TryFrom<u64> for Status {
    type Error = UnknownStatus;

    fn try_from(code: u64) -> Result<Self, Self::Error> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or(UnknownStatus(code))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_match_go() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.code(), i as u64);
            assert_eq!(Status::try_from(i as u64), Ok(*s));
        }
        assert_eq!(Status::try_from(17), Err(UnknownStatus(17)));
        assert_eq!(Status::try_from(u64::MAX), Err(UnknownStatus(u64::MAX)));
        assert_eq!(Status::Requested.to_string(), "Requested");
        assert_eq!(
            Status::ResponderFinalizingTransferFinished.to_string(),
            "ResponderFinalizingTransferFinished"
        );
        assert_eq!(Status::ChannelNotFoundError.code(), 16);
    }

    #[test]
    fn helper_sets() {
        let terminal: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [Status::Completed, Status::Failed, Status::Cancelled]
        );
        let cleaning: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_cleaning_up())
            .collect();
        assert_eq!(
            cleaning,
            [Status::Completing, Status::Failing, Status::Cancelling]
        );
        let paused: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_paused()).collect();
        assert_eq!(
            paused,
            [
                Status::InitiatorPaused,
                Status::ResponderPaused,
                Status::BothPaused
            ]
        );
        assert_eq!(
            Status::ALL
                .into_iter()
                .filter(|s| s.is_transferring())
                .count(),
            7
        );
    }
}
