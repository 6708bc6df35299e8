//! What validators and revalidators answer.
//!
//! Go signals these outcomes with sentinel errors (`ErrPause`, `ErrResume`,
//! `ErrRetryValidation`, `ErrRejected`); here they are the variants of [`ValidationOutcome`],
//! and a real failure of the validator is a [`ValidationError`].

use thiserror::Error;

use crate::voucher::VoucherResult;

/// What a validator or revalidator decided about a voucher or about progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationOutcome {
    /// Accept and carry on.
    Accept,
    /// Accept, but pause the channel until a new voucher arrives (Go's `ErrPause`).
    Pause,
    /// Resume a channel paused for revalidation (Go's `ErrResume`).
    Resume,
    /// Do not fail; send the voucher result back and wait for another voucher
    /// (Go's `ErrRetryValidation`).
    RetryValidation,
    /// Refuse the request (Go's `ErrRejected`).
    Rejected {
        /// Why, for the peer and the logs.
        reason: String,
    },
}

impl ValidationOutcome {
    /// A rejection with a reason.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected {
            reason: reason.into(),
        }
    }

    /// Whether the request is accepted (possibly paused).
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accept | Self::Pause | Self::Resume)
    }
}

/// A validator's whole answer: the outcome and, optionally, a voucher result for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The decision.
    pub outcome: ValidationOutcome,
    /// A result to send back with the response, if any.
    pub voucher_result: Option<VoucherResult>,
}

impl Validation {
    /// Accept, with no voucher result.
    pub fn accept() -> Self {
        Self::new(ValidationOutcome::Accept)
    }

    /// An outcome with no voucher result.
    pub fn new(outcome: ValidationOutcome) -> Self {
        Self {
            outcome,
            voucher_result: None,
        }
    }

    /// Attaches a voucher result.
    pub fn with_result(mut self, result: VoucherResult) -> Self {
        self.voucher_result = Some(result);
        self
    }
}

/// A validator failed (as opposed to deciding): the request fails with this message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The validator could not decide (a database was down, say).
    #[error("validation failed: {0}")]
    Failed(String),
    /// No validator or revalidator is registered for the voucher's type.
    #[error("no validator registered for voucher type {0:?}")]
    NoValidator(crate::TypeIdentifier),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_outcomes() {
        assert!(ValidationOutcome::Accept.is_accepted());
        assert!(ValidationOutcome::Pause.is_accepted());
        assert!(!ValidationOutcome::RetryValidation.is_accepted());
        assert!(!ValidationOutcome::rejected("no deal").is_accepted());
        let v = Validation::new(ValidationOutcome::Pause);
        assert_eq!(v.voucher_result, None);
        assert_eq!(Validation::accept().outcome, ValidationOutcome::Accept);
    }
}
