//! The channel monitor: deadlines per channel that restart stalled channels and fail those
//! that cannot be saved (go-data-transfer's `channelmonitor`).

use super::*;

/// What the monitor knows of one channel.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    pub(super) status: Status,
    /// When the status last changed.
    pub(super) changed: Timestamp,
    /// When data last moved (or the channel was last restarted).
    pub(super) progressed: Timestamp,
    /// The furthest block of the walk reached so far (received, queued or sent; taken from
    /// the local store or moved): a walk that goes past it is progress too.
    pub(super) walked: u64,
    /// Restarts since data last moved.
    pub(super) restarts: u32,
    /// Restart at this time (after a disconnect or transport error).
    pub(super) backoff_until: Option<Timestamp>,
    /// Since when the request waits in the responder's queue.
    pub(super) queued_since: Option<Timestamp>,
    /// When we restarted the channel, until the responder answers.
    pub(super) restart_sent: Option<Timestamp>,
    /// We respond to the channel: only its idle deadline runs, from `progressed`.
    pub(super) responder: bool,
    /// The deadline filed in [`Engine`]'s deadline index (see [`Engine::reindex`]).
    pub(super) due: Option<Timestamp>,
    /// When we last sent a voucher to the finalizing responder, and how often we sent it
    /// again since.
    pub(super) final_voucher: Option<(Timestamp, u32)>,
}

impl Watch {
    pub(super) fn new(status: Status, now: Timestamp) -> Self {
        Self {
            status,
            changed: now,
            progressed: now,
            walked: 0,
            restarts: 0,
            backoff_until: None,
            queued_since: None,
            restart_sent: None,
            responder: false,
            final_voucher: None,
            due: None,
        }
    }

    /// The transfer moved on: the stall deadline starts again, the restarts in a row are
    /// over, and the request is out of the responder's queue and answered.
    fn moved(&mut self, now: Timestamp) {
        self.progressed = now;
        self.restarts = 0;
        self.queued_since = None;
        self.restart_sent = None;
    }

    pub(super) fn responder(status: Status, now: Timestamp) -> Self {
        Self {
            responder: true,
            ..Self::new(status, now)
        }
    }
}

/// The responder paused its Complete to be settled, and waits for a voucher.
pub(super) fn awaits_settlement(status: Status) -> bool {
    matches!(
        status,
        Status::ResponderFinalizing | Status::ResponderFinalizingTransferFinished
    )
}

impl Engine {
    /// Updates the monitor's view of a channel after an event.
    pub(super) fn observe(
        &mut self,
        id: ChannelId,
        event: &ChannelEvent,
        status: Status,
        now: Timestamp,
    ) {
        let Some(cfg) = &self.config.monitor else {
            return;
        };
        if status.is_terminal() {
            self.unwatch(id);
            return;
        }
        if id.initiator != self.me {
            // Anything that happens to the channel shows its initiator is still there.
            let w = self
                .watches
                .entry(id)
                .or_insert_with(|| Watch::responder(status, now));
            w.status = status;
            w.progressed = now;
            return self.reindex(id);
        }
        let backoff = cfg.restart_backoff;
        let w = self
            .watches
            .entry(id)
            .or_insert_with(|| Watch::new(status, now));
        if w.status != status {
            w.status = status;
            w.changed = now;
            if !awaits_settlement(status) {
                w.final_voucher = None;
            }
        }
        match event {
            ChannelEvent::DataReceivedProgress { .. }
            | ChannelEvent::DataSentProgress { .. }
            | ChannelEvent::DataQueuedProgress { .. } => w.moved(now),
            // A block further along the walk than any before, even one the receiver held
            // already (a resumed pull of a large DAG walks its held blocks first, and no
            // byte moves meanwhile): the transfer goes on. A walk started again after a
            // restart counts only once it passes where the last one got.
            ChannelEvent::DataReceived { index }
            | ChannelEvent::DataSent { index }
            | ChannelEvent::DataQueued { index }
                if *index > w.walked =>
            {
                w.walked = *index;
                w.moved(now);
            }
            ChannelEvent::TransferRequestQueued => {
                w.queued_since.get_or_insert(now);
            }
            ChannelEvent::Disconnected { .. }
            | ChannelEvent::SendDataError { .. }
            | ChannelEvent::ReceiveDataError { .. } => {
                w.backoff_until = Some(now.saturating_add(backoff));
            }
            _ => {}
        }
        self.reindex(id);
    }

    /// Files the channel's monitor deadline anew after its watch changed: every change to a
    /// watch is followed by this, so the index always holds each watch's deadline.
    pub(super) fn reindex(&mut self, id: ChannelId) {
        let new = self.watches.get(&id).and_then(|w| self.deadline(w));
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut w.due, new);
        if old != new {
            if let Some(t) = old {
                self.deadlines.remove(&(t, id));
            }
            if let Some(t) = new {
                self.deadlines.insert((t, id));
            }
        }
    }

    /// Stops watching a channel.
    pub(super) fn unwatch(&mut self, id: ChannelId) {
        if let Some(w) = self.watches.remove(&id)
            && let Some(t) = w.due
        {
            self.deadlines.remove(&(t, id));
        }
    }

    /// When the monitor next needs [`Engine::handle_timeout`] called, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let next = self.deadlines.first().map(|(t, _)| *t);
        // Every test run checks the index against a scan of every watch (what this was).
        debug_assert_eq!(
            next,
            self.watches.values().filter_map(|w| self.deadline(w)).min(),
            "the deadline index disagrees with the watches"
        );
        next
    }

    pub(super) fn deadline(&self, w: &Watch) -> Option<Timestamp> {
        let cfg = self.config.monitor.as_ref()?;
        if w.responder {
            return Some(w.progressed.saturating_add(cfg.responder_idle_timeout));
        }
        if let Some(t) = w.backoff_until {
            return Some(t);
        }
        // In the responder's queue, only the queue's own limit runs.
        if let Some(q) = w.queued_since {
            return Some(q.saturating_add(cfg.queue_timeout));
        }
        let by_status = match w.status {
            // A reopened request waits for its own answer (below), not the first one's.
            Status::Requested if w.restart_sent.is_some() => None,
            Status::Requested => Some(w.changed.saturating_add(cfg.accept_timeout)),
            // From the last restart, if later: a restarted responder completes anew.
            Status::TransferFinished
            | Status::ResponderFinalizingTransferFinished
            | Status::Finalizing => Some(
                w.changed
                    .max(w.progressed)
                    .saturating_add(cfg.complete_timeout),
            ),
            s if s.is_paused() || s.is_cleaning_up() => None,
            _ => Some(
                w.progressed
                    .max(w.changed)
                    .saturating_add(cfg.stall_timeout),
            ),
        };
        // A restart waits for its answer whatever the status, a paused channel's too.
        let answer = w
            .restart_sent
            .filter(|_| !w.status.is_cleaning_up())
            .map(|t| t.saturating_add(cfg.accept_timeout));
        let resend = w
            .final_voucher
            .filter(|(_, n)| *n < MonitorConfig::FINAL_VOUCHER_RESENDS)
            .map(|(t, _)| t.saturating_add(cfg.final_voucher_resend));
        [by_status, answer, resend].into_iter().flatten().min()
    }

    /// Acts on every monitor deadline that has passed: restarts stalled channels, and fails
    /// those not accepted in time, not completed in time, or restarted too often.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let Some(cfg) = self.config.monitor.clone() else {
            return;
        };
        let due: Vec<(Timestamp, ChannelId)> = self
            .deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        for (t, id) in due {
            // Taken out of the index, then filed anew: an entry that did not match its watch
            // any more could only cost a wake-up, never an action before its time.
            self.deadlines.remove(&(t, id));
            if let Some(w) = self.watches.get_mut(&id)
                && w.due == Some(t)
            {
                w.due = None;
            }
            let passed = self.watches.get(&id).and_then(|w| self.deadline(w));
            if passed.is_some_and(|d| d <= now) {
                self.on_deadline(now, &cfg, id);
            }
            self.reindex(id);
        }
    }

    /// Acts on the passed deadline of one channel.
    fn on_deadline(&mut self, now: Timestamp, cfg: &MonitorConfig, id: ChannelId) {
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        if w.responder {
            let message = format!(
                "nothing heard from the initiator {} for {:?}: it went away",
                id.initiator, cfg.responder_idle_timeout
            );
            self.fail(now, id, message);
            return;
        }
        if let Some((sent, n)) = w.final_voucher
            && n < MonitorConfig::FINAL_VOUCHER_RESENDS
            && w.backoff_until.is_none()
            && sent.saturating_add(cfg.final_voucher_resend) <= now
        {
            w.final_voucher = Some((now, n + 1));
            self.resend_last_voucher(id);
            if self
                .watches
                .get(&id)
                .and_then(|w| self.deadline(w))
                .is_none_or(|d| d > now)
            {
                return;
            }
        }
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        let unanswered = w
            .restart_sent
            .is_some_and(|t| t.saturating_add(cfg.accept_timeout) <= now);
        let failure = match w.status {
            _ if w.backoff_until.is_none() && w.queued_since.is_some() => Some(format!(
                "data transfer channel waited {:?} in the responder's queue",
                cfg.queue_timeout
            )),
            _ if unanswered && w.restarts >= cfg.max_consecutive_restarts => Some(format!(
                "the responder answered none of {} restarts in a row, each within {:?}",
                w.restarts, cfg.accept_timeout
            )),
            Status::Requested if w.backoff_until.is_none() && w.restart_sent.is_none() => {
                Some(format!(
                    "data transfer channel was not accepted within {:?}",
                    cfg.accept_timeout
                ))
            }
            Status::TransferFinished
            | Status::ResponderFinalizingTransferFinished
            | Status::Finalizing
                if w.backoff_until.is_none() && !unanswered =>
            {
                Some(format!(
                    "timed out after {:?} waiting for the responder to complete",
                    cfg.complete_timeout
                ))
            }
            _ if w.restarts >= cfg.max_consecutive_restarts => Some(format!(
                "data transfer channel stalled: no progress after {} consecutive restarts",
                w.restarts
            )),
            _ => None,
        };
        match failure {
            Some(message) => self.fail(now, id, message),
            None => {
                w.restarts += 1;
                w.backoff_until = None;
                w.progressed = now;
                let _ = self.restart(now, id);
            }
        }
    }

    /// Sends the channel's last voucher to its responder again (see
    /// [`MonitorConfig::final_voucher_resend`]). The voucher is already in the channel's
    /// state; no event fires.
    pub(super) fn resend_last_voucher(&mut self, id: ChannelId) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        let Some(voucher) = ch.last_voucher().cloned() else {
            return;
        };
        let other = ch.other_peer();
        self.send(
            other,
            id,
            TransferRequest::voucher(id.id, voucher),
            OnSendFailure::Disconnect,
        );
    }

    /// Closes a channel with an error: stops the transport, tells the peer, fails it.
    pub(super) fn fail(&mut self, now: Timestamp, id: ChannelId, message: String) {
        let other = id.other_party(&self.me);
        self.transport(TransportCommand::CloseChannel { channel: id });
        let msg = self.cancel_message(id);
        self.send(other, id, msg, OnSendFailure::Ignore);
        self.fire_quiet(id, ChannelEvent::error(message), now);
        self.unwatch(id);
    }
}
