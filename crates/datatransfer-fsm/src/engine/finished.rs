//! The memory of recently finished channels: a late restart of a completed channel is
//! completed again, one of a cancelled or failed channel is refused.

use super::*;

impl Engine {
    pub(super) fn remember_finished(&mut self, id: ChannelId, ch: &ChannelState) {
        if self.config.remembered_finished_channels == 0 {
            return;
        }
        let finished = Finished {
            status: ch.status,
            base_cid: ch.base_cid,
            selector: ch.selector.cid(),
            // Only a completed channel's voucher is ever compared, and only an accepted
            // channel's type is a registered one (short); a refused one's is the peer's.
            voucher: ch
                .voucher()
                .filter(|_| ch.status == Status::Completed)
                .map(voucher_print),
        };
        if self.finished.insert(id, finished).is_none() {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > self.config.remembered_finished_channels {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Remembers a channel that finished before this engine started (read from the store),
    /// so that a late restart of it is answered as for one that finished here: completed
    /// again, or refused if it was cancelled or failed. Channels not finished are ignored.
    pub fn load_finished(&mut self, state: &ChannelState) {
        if state.status.is_terminal() && !self.channels.contains_key(&state.channel_id) {
            self.remember_finished(state.channel_id, state);
        }
    }

    /// The final status of a channel that finished recently, if remembered.
    pub fn finished_status(&self, id: &ChannelId) -> Option<Status> {
        self.finished.get(id).map(|f| f.status)
    }

    /// Whether the channel is one we completed and still remember.
    pub(super) fn completed_earlier(&self, id: &ChannelId) -> Option<&Finished> {
        self.finished
            .get(id)
            .filter(|f| f.status == Status::Completed)
    }
}
