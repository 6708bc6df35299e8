//! Why a request, a block or a channel was refused or failed, kept apart by whose fault it
//! is: the peer's, one of our limits', a validator's, or our own machinery's.
//!
//! The engine, the transport hooks and the transports use [`Fault`] instead of bare strings,
//! so a shell can tell "the peer sent a restart for another selector" from "we hit
//! `max_pending_validations`", and a full disk is never mistaken for a lost connection (which
//! the channel monitor would answer with a restart, again and again). [`Fault`]'s `Display`
//! is the plain message, the same text go-data-transfer logs, so events stay readable next to
//! Go's.

/// Why something was refused or failed, by whose fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// The peer broke the protocol: a request that contradicts its channel, a message for a
    /// channel that does not exist, data that fails verification or was never asked for.
    #[error("{0}")]
    PeerMisbehaved(String),
    /// The peer could not do what was asked, within the protocol: it lacks blocks, it failed
    /// or refused the request at its transport.
    #[error("{0}")]
    PeerFailed(String),
    /// One of our own configured limits (channels, vouchers, validations in flight, DAG
    /// depth): the peer may be fine; we said no.
    #[error("{0}")]
    LocalLimit(String),
    /// A validator (ours or the peer's) refused the voucher or the request.
    #[error("{}", rejected(reason))]
    Rejected {
        /// The validator's reason, if it gave one.
        reason: String,
    },
    /// Our own machinery failed: the block store, the disk, the transport shutting down.
    /// Asking the peer again does not help; the channel fails (or waits for an operator).
    #[error("{0}")]
    LocalFailure(String),
}

fn rejected(reason: &str) -> String {
    if reason.is_empty() {
        "response rejected".to_owned()
    } else {
        format!("response rejected: {reason}")
    }
}

impl Fault {
    /// The peer misbehaved.
    pub fn peer(message: impl Into<String>) -> Self {
        Self::PeerMisbehaved(message.into())
    }

    /// One of our limits.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::LocalLimit(message.into())
    }

    /// A validator refused, with its reason (empty if none).
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected {
            reason: reason.into(),
        }
    }

    /// Our own machinery failed.
    pub fn local(message: impl Into<String>) -> Self {
        Self::LocalFailure(message.into())
    }

    /// The same fault with its message rewritten by `f` (for a [`Fault::Rejected`], its
    /// reason): context added, the kind kept.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Self::PeerMisbehaved(m) => Self::PeerMisbehaved(f(m)),
            Self::PeerFailed(m) => Self::PeerFailed(f(m)),
            Self::LocalLimit(m) => Self::LocalLimit(f(m)),
            Self::Rejected { reason } => Self::Rejected { reason: f(reason) },
            Self::LocalFailure(m) => Self::LocalFailure(f(m)),
        }
    }

    /// Whether the fault is ours (a limit or a failure of our own), not the peer's or a
    /// validator's.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::LocalLimit(_) | Self::LocalFailure(_))
    }

    /// A short name of the kind, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PeerMisbehaved(_) => "peer_misbehaved",
            Self::PeerFailed(_) => "peer_failed",
            Self::LocalLimit(_) => "local_limit",
            Self::Rejected { .. } => "rejected",
            Self::LocalFailure(_) => "local_failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_the_plain_text_go_logs() {
        assert_eq!(
            Fault::peer("base cid does not match").to_string(),
            "base cid does not match"
        );
        assert_eq!(Fault::rejected("").to_string(), "response rejected");
        assert_eq!(
            Fault::rejected("no deal").to_string(),
            "response rejected: no deal"
        );
        assert!(Fault::local("disk full").is_local());
        assert!(!Fault::peer("x").is_local());
        assert_eq!(Fault::limit("x").kind(), "local_limit");
        assert_eq!(
            Fault::limit("x").map_message(|m| format!("restart: {m}")),
            Fault::limit("restart: x")
        );
    }
}
