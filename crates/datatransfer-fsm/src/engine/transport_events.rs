//! Transport events: data moving, hooks waiting for an answer, completion, disconnects.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    Received,
    Queued,
    Sent,
}

impl Engine {
    // ----- transport input -----------------------------------------------------------------

    /// Something happened in the transport.
    pub fn handle_transport_event(&mut self, now: Timestamp, event: TransportEvent) {
        use TransportEvent as T;
        match event {
            T::ChannelOpened { channel } => {
                self.reopening.remove(&channel);
                self.fire_quiet(channel, ChannelEvent::Opened, now)
            }
            T::RequestReceived {
                token,
                from,
                request,
            } => {
                if request.message_type == MessageType::RestartExistingChannelRequest {
                    let id = ChannelId::new(from, self.me, request.transfer_id);
                    if let Some(channel) = request.restart_channel {
                        self.on_restart_existing(from, channel);
                    }
                    return self.hook(token, id, None, HookResult::Continue);
                }
                self.on_request(now, from, request, Via::Transport(token))
            }
            T::ResponseReceived {
                from,
                response,
                data_request,
            } => self.on_response(now, from, response, data_request),
            T::DataReceived {
                token,
                channel,
                size,
                index,
                unique,
            } => {
                let block = (size, index, unique);
                self.on_data_hook(now, token, channel, Progress::Received, block)
            }
            T::DataQueued {
                token,
                channel,
                size,
                index,
                unique,
            } => {
                let block = (size, index, unique);
                self.on_data_hook(now, token, channel, Progress::Queued, block)
            }
            T::DataSent {
                channel,
                size,
                index,
                unique,
            } => {
                self.progress(now, channel, Progress::Sent, size, index, unique);
            }
            T::TransferQueued { channel } => {
                self.fire_quiet(channel, ChannelEvent::TransferRequestQueued, now)
            }
            T::ChannelCompleted { channel, result } => self.on_completed(now, channel, result),
            T::RequestCancelled { channel, error } => self.fire_quiet(
                channel,
                ChannelEvent::RequestCancelled { message: error },
                now,
            ),
            T::Disconnected { channel, error } => {
                self.fire_quiet(channel, ChannelEvent::Disconnected { message: error }, now)
            }
            T::SendDataError { channel, error } => {
                self.fire_quiet(channel, ChannelEvent::SendDataError { message: error }, now)
            }
            T::ReceiveDataError { channel, error } => self.fire_quiet(
                channel,
                ChannelEvent::ReceiveDataError { message: error },
                now,
            ),
            T::OpenFailed { channel, error } => {
                // A failed first open fails the channel (Go's OpenPullDataChannel); a failed
                // re-open is a disconnect, for the monitor (or the user) to retry.
                let message = format!("Unable to send request: {error}");
                if self.reopening.remove(&channel) {
                    self.fire_quiet(channel, ChannelEvent::Disconnected { message }, now)
                } else {
                    self.fire_quiet(channel, ChannelEvent::error(message), now)
                }
            }
        }
    }

    /// A block was queued or received: count it, and ask the revalidators about new bytes on
    /// channels the other peer initiated.
    pub(super) fn on_data_hook(
        &mut self,
        now: Timestamp,
        token: HookToken,
        channel: ChannelId,
        kind: Progress,
        (size, index, unique): (u64, u64, bool),
    ) {
        let is_new = self.progress(now, channel, kind, size, index, unique);
        if is_new && channel.initiator != self.me && self.has_revalidators() {
            let call = match kind {
                Progress::Received => ValidationCall::OnPushDataReceived {
                    channel,
                    bytes: size,
                },
                Progress::Queued | Progress::Sent => ValidationCall::OnPullDataSent {
                    channel,
                    bytes: size,
                },
            };
            self.ask(
                call,
                Pending::Data {
                    token,
                    channel,
                    kind,
                },
            );
        } else {
            let result = self.hook_result_for(&channel);
            self.hook(token, channel, None, result);
        }
    }

    /// A hook about an unknown channel is refused; a known one (or one we completed, being
    /// re-sent after a restart) carries on.
    pub(super) fn hook_result_for(&self, id: &ChannelId) -> HookResult {
        if self.channels.contains_key(id) || self.completed_earlier(id).is_some() {
            HookResult::Continue
        } else {
            HookResult::Fail(Fault::peer(format!("channel not found: {id}")))
        }
    }

    /// Go's `fireProgressEvent`: the progress event only for a unique block past the highest
    /// index seen (so a restart does not count blocks twice), then the index event. Returns
    /// whether the block was new.
    pub(super) fn progress(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        kind: Progress,
        size: u64,
        index: u64,
        unique: bool,
    ) -> bool {
        let Some(ch) = self.channels.get(&id) else {
            return false;
        };
        let seen = match kind {
            Progress::Received => ch.received_blocks_total,
            Progress::Queued => ch.queued_blocks_total,
            Progress::Sent => ch.sent_blocks_total,
        };
        let is_new = unique && index > seen;
        if is_new {
            let ev = match kind {
                Progress::Received => ChannelEvent::DataReceivedProgress { bytes: size },
                Progress::Queued => ChannelEvent::DataQueuedProgress { bytes: size },
                Progress::Sent => ChannelEvent::DataSentProgress { bytes: size },
            };
            self.fire_quiet(id, ev, now);
        }
        let ev = match kind {
            Progress::Received => ChannelEvent::DataReceived { index },
            Progress::Queued => ChannelEvent::DataQueued { index },
            Progress::Sent => ChannelEvent::DataSent { index },
        };
        self.fire_quiet(id, ev, now);
        is_new
    }

    pub(super) fn on_completed(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        result: Result<(), Fault>,
    ) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        match result {
            Ok(()) if id.initiator != self.me => {
                if self.has_revalidators() {
                    self.ask(
                        ValidationCall::OnComplete { channel: id },
                        Pending::Complete { channel: id },
                    );
                } else {
                    self.complete_as_responder(now, id, Ok(None));
                }
            }
            Ok(()) => self.fire_quiet(id, ChannelEvent::FinishTransfer, now),
            Err(_) if matches!(ch.status, Status::Failing | Status::Failed) => {}
            // Our own store or disk failed: asking the peer again would not help. The channel
            // fails once, the transport stops and the peer is told (no restart follows).
            Err(e @ Fault::LocalFailure(_)) if !ch.status.is_cleaning_up() => {
                let msg = format!("data transfer channel {id} failed to transfer data: {e}");
                self.fail(now, id, msg);
            }
            Err(e) => {
                let msg = format!("data transfer channel {id} failed to transfer data: {e}");
                self.fire_quiet(id, ChannelEvent::error(msg), now);
            }
        }
    }

    pub(super) fn complete_as_responder(
        &mut self,
        now: Timestamp,
        id: ChannelId,
        answer: ValidationAnswer,
    ) {
        let (verdict, result) = Verdict::from_answer(&answer);
        if let Some(r) = result.clone() {
            self.record_result(id, r, now);
        }
        let accepted = verdict.accepted();
        let paused = verdict == Verdict::Pause;
        let msg = TransferResponse::complete(id.id, accepted, paused, result);
        self.send(id.initiator, id, msg, OnSendFailure::Disconnect);
        let ev = match (&verdict, paused) {
            (Verdict::Err(e), _) => ChannelEvent::error(e.to_string()),
            (_, true) => ChannelEvent::BeginFinalizing,
            (_, false) => ChannelEvent::Complete,
        };
        self.fire_quiet(id, ev, now);
    }
}
