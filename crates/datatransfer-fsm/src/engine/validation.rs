//! Validator calls and answers: what a verdict means for the channel and the peer.

use super::*;

/// How handling a request or revalidation ended (Go's nil / `ErrPause` / `ErrResume` / error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Ok,
    Pause,
    Resume,
    Err(Fault),
}

impl Verdict {
    pub(super) fn accepted(&self) -> bool {
        !matches!(self, Self::Err(_))
    }

    pub(super) fn from_outcome(outcome: &ValidationOutcome) -> Self {
        match outcome {
            ValidationOutcome::Accept => Self::Ok,
            // Go's seed API: "send the voucher result back and await another attempt", so the
            // channel stays open and paused until a voucher arrives.
            ValidationOutcome::Pause | ValidationOutcome::RetryValidation => Self::Pause,
            ValidationOutcome::Resume => Self::Resume,
            ValidationOutcome::Rejected { reason } => Self::Err(Fault::rejected(reason.clone())),
        }
    }

    pub(super) fn from_answer(answer: &ValidationAnswer) -> (Self, Option<VoucherResult>) {
        match answer {
            Ok(Some(v)) => (Self::from_outcome(&v.outcome), v.voucher_result.clone()),
            Ok(None) => (Self::Ok, None),
            // The validator itself failed (it could not look the deal up, ...): ours.
            Err(e) => (Self::Err(Fault::local(e.to_string())), None),
        }
    }

    pub(super) fn hook_result(&self) -> HookResult {
        match self {
            Self::Ok => HookResult::Continue,
            Self::Pause => HookResult::Pause,
            Self::Resume => HookResult::Resume,
            Self::Err(e) => HookResult::Fail(e.clone()),
        }
    }
}

/// A validator call in flight and what to do with its answer.
#[derive(Debug, Clone)]
pub(super) enum Pending {
    NewRequest {
        via: Via,
        channel: ChannelId,
        open: Box<OpenRequest>,
    },
    RestartRequest {
        via: Via,
        channel: ChannelId,
        open: Box<OpenRequest>,
    },
    VoucherUpdate {
        via: Via,
        channel: ChannelId,
        voucher: Voucher,
    },
    /// A block queued (sender) or received (receiver) waits for the revalidators.
    Data {
        token: HookToken,
        channel: ChannelId,
        kind: Progress,
    },
    Complete {
        channel: ChannelId,
    },
    RestartAsResponder {
        channel: ChannelId,
    },
}

/// The validator call that re-validates a channel's original voucher.
pub(super) fn validate_call(
    is_restart: bool,
    ch: &ChannelState,
    initiator: PeerId,
) -> ValidationCall {
    let voucher = ch
        .voucher()
        .cloned()
        .unwrap_or_else(|| TypedNode::new(TypeIdentifier::EMPTY, DagCbor::null()));
    if ch.is_pull() {
        ValidationCall::ValidatePull {
            is_restart,
            channel: ch.channel_id,
            receiver: initiator,
            voucher,
            base_cid: ch.base_cid,
            selector: ch.selector.clone(),
        }
    } else {
        ValidationCall::ValidatePush {
            is_restart,
            channel: ch.channel_id,
            sender: initiator,
            voucher,
            base_cid: ch.base_cid,
            selector: ch.selector.clone(),
        }
    }
}

impl Engine {
    // ----- validator answers ---------------------------------------------------------------

    /// The answer to an [`Output::Validate`]. Unknown tokens are ignored.
    pub fn handle_validation(
        &mut self,
        now: Timestamp,
        token: ValidationToken,
        answer: ValidationAnswer,
    ) {
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        match pending {
            Pending::NewRequest { via, channel, open } => {
                self.accept_new(now, via, channel, *open, answer)
            }
            Pending::RestartRequest { via, channel, open } => {
                self.accept_restart(now, via, channel, *open, answer)
            }
            Pending::VoucherUpdate {
                via,
                channel,
                voucher,
            } => {
                let (verdict, result) = Verdict::from_answer(&answer);
                if !self.channels.contains_key(&channel) {
                    return self.finish_request(
                        now,
                        channel,
                        None,
                        via,
                        None,
                        Verdict::Err(Fault::peer("channel not found")),
                    );
                }
                let verdict = match self.record_voucher(channel, voucher, now) {
                    Ok(()) => verdict,
                    Err(e) => Verdict::Err(e),
                };
                let (resp, verdict) = self.revalidation_result(now, channel, result, verdict);
                self.finish_request(now, channel, None, via, Some(resp), verdict);
            }
            Pending::Data {
                token: hook,
                channel,
                kind,
            } => {
                let (verdict, result) = Verdict::from_answer(&answer);
                if !self.channels.contains_key(&channel) {
                    return self.hook(
                        hook,
                        channel,
                        None,
                        HookResult::Fail(Fault::peer("channel not found")),
                    );
                }
                if verdict == Verdict::Ok && result.is_none() {
                    return self.hook(hook, channel, None, HookResult::Continue);
                }
                let (resp, verdict) = self.revalidation_result(now, channel, result, verdict);
                if kind == Progress::Queued {
                    // The sender's answer rides with the block.
                    self.hook(hook, channel, Some(resp.into()), verdict.hook_result());
                } else {
                    // The receiver's answer goes to the initiator over the network.
                    self.send(channel.initiator, channel, resp, OnSendFailure::Disconnect);
                    self.hook(hook, channel, None, verdict.hook_result());
                }
            }
            Pending::Complete { channel } => {
                if self.channels.contains_key(&channel) {
                    self.complete_as_responder(now, channel, answer);
                }
            }
            Pending::RestartAsResponder { channel } => {
                let Some(ch) = self.channels.get(&channel) else {
                    return;
                };
                let other = ch.other_peer();
                let (verdict, _) = Verdict::from_answer(&answer);
                if verdict.accepted() {
                    let req = TransferRequest::restart_existing_channel(channel);
                    self.send(other, channel, req, OnSendFailure::Disconnect);
                }
            }
        }
    }
}
