//! The state of one channel, as stored and as shown to subscribers.

use cid::Cid;
use libp2p_identity::PeerId;

use crate::event::Timestamp;
use crate::ids::{ChannelId, TransferId};
use crate::node::DagCbor;
use crate::status::Status;
use crate::voucher::{Voucher, VoucherResult};

/// Default cap on log lines kept per stage; older lines are dropped first.
pub const DEFAULT_MAX_LOGS_PER_STAGE: usize = 64;

/// Everything known about one channel: its parameters plus where it is.
///
/// The fields of the seed API's `ChannelState`, plus the v1.x counters (queued bytes and the
/// highest block indexes seen, which restarts use) and the stage log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// Which channel this is.
    pub channel_id: ChannelId,
    /// The peer this copy of the state belongs to.
    pub self_peer: PeerId,
    /// The root of the DAG being transferred.
    pub base_cid: Cid,
    /// The IPLD selector choosing the part of the DAG to transfer.
    pub selector: DagCbor,
    /// The peer sending the data (not necessarily the initiator).
    pub sender: PeerId,
    /// The peer receiving the data.
    pub recipient: PeerId,
    /// Expected amount of data, when known (0 otherwise).
    pub total_size: u64,
    /// Current status.
    pub status: Status,
    /// Bytes read from the store and queued for sending (sender only).
    pub queued: u64,
    /// Bytes sent (sender only).
    pub sent: u64,
    /// Bytes received (recipient only).
    pub received: u64,
    /// More about the status: the last error's text, say.
    pub message: String,
    /// Every voucher sent on the channel, oldest first.
    pub vouchers: Vec<Voucher>,
    /// Every voucher result sent on the channel, oldest first.
    pub voucher_results: Vec<VoucherResult>,
    /// Highest index of a block received (blocks counted with repeats, as Go does).
    pub received_blocks_total: u64,
    /// Highest index of a block queued for sending.
    pub queued_blocks_total: u64,
    /// Highest index of a block sent.
    pub sent_blocks_total: u64,
    /// The timeline of stages the channel went through, for observability.
    pub stages: ChannelStages,
}

impl ChannelState {
    /// A fresh channel in `Requested` with no progress.
    ///
    /// `sender` and `recipient` follow from the direction: in a pull the initiator receives,
    /// in a push it sends.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channel_id: ChannelId,
        self_peer: PeerId,
        base_cid: Cid,
        selector: DagCbor,
        voucher: Voucher,
        is_pull: bool,
        total_size: u64,
    ) -> Self {
        let (sender, recipient) = if is_pull {
            (channel_id.responder, channel_id.initiator)
        } else {
            (channel_id.initiator, channel_id.responder)
        };
        Self {
            channel_id,
            self_peer,
            base_cid,
            selector,
            sender,
            recipient,
            total_size,
            status: Status::Requested,
            queued: 0,
            sent: 0,
            received: 0,
            message: String::new(),
            vouchers: vec![voucher],
            voucher_results: Vec::new(),
            received_blocks_total: 0,
            queued_blocks_total: 0,
            sent_blocks_total: 0,
            stages: ChannelStages::default(),
        }
    }

    /// The initiator's transfer id.
    pub fn transfer_id(&self) -> TransferId {
        self.channel_id.id
    }

    /// Whether the initiator is the one receiving (a pull).
    pub fn is_pull(&self) -> bool {
        self.channel_id.initiator == self.recipient
    }

    /// Whether this copy belongs to the initiator.
    pub fn is_initiator(&self) -> bool {
        self.self_peer == self.channel_id.initiator
    }

    /// Whether this copy belongs to the peer that sends the data.
    pub fn is_sender(&self) -> bool {
        self.self_peer == self.sender
    }

    /// The peer on the other side.
    pub fn other_peer(&self) -> PeerId {
        self.channel_id.other_party(&self.self_peer)
    }

    /// The first voucher (the one the channel was opened with).
    pub fn voucher(&self) -> Option<&Voucher> {
        self.vouchers.first()
    }

    /// The most recent voucher.
    pub fn last_voucher(&self) -> Option<&Voucher> {
        self.vouchers.last()
    }

    /// The most recent voucher result.
    pub fn last_voucher_result(&self) -> Option<&VoucherResult> {
        self.voucher_results.last()
    }

    /// When the channel last changed, as its stage log records it (`Timestamp::ZERO` if it
    /// logged nothing). For a finished channel: when it finished.
    pub fn last_updated(&self) -> Timestamp {
        self.stages
            .stages
            .iter()
            .map(|s| s.updated)
            .max()
            .unwrap_or(Timestamp::ZERO)
    }

    /// Adds a line to the log of the current status's stage.
    pub fn add_log(&mut self, msg: &str, now: Timestamp) {
        self.stages
            .add_log(self.status.name(), msg, now, DEFAULT_MAX_LOGS_PER_STAGE);
    }
}

/// A timeline of the stages a channel went through (Go's `ChannelStages`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelStages {
    /// One entry per stage, in the order first entered.
    pub stages: Vec<ChannelStage>,
}

/// One stage of a channel's life (named after a status) and what happened in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStage {
    /// The stage's name (a status name).
    pub name: String,
    /// A description, if any.
    pub description: String,
    /// When the stage was first entered.
    pub created: Timestamp,
    /// When the stage last saw a log line or was re-entered.
    pub updated: Timestamp,
    /// What happened during the stage.
    pub logs: Vec<StageLog>,
}

/// One line of a stage's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageLog {
    /// The message.
    pub log: String,
    /// When it was logged.
    pub updated: Timestamp,
}

impl ChannelStages {
    /// Adds `msg` to `stage` (creating the stage if new), as Go's `AddLog` does: an empty
    /// message only touches the stage, and a message equal to the last one is not repeated.
    /// At most `max_logs` lines are kept per stage.
    pub fn add_log(&mut self, stage: &str, msg: &str, now: Timestamp, max_logs: usize) {
        let idx = match self.stages.iter().position(|s| s.name == stage) {
            Some(i) => i,
            None => {
                self.stages.push(ChannelStage {
                    name: stage.to_owned(),
                    description: String::new(),
                    created: now,
                    updated: now,
                    logs: Vec::new(),
                });
                self.stages.len() - 1
            }
        };
        let st = &mut self.stages[idx];
        st.updated = now;
        if msg.is_empty() || st.logs.last().is_some_and(|l| l.log == msg) {
            return;
        }
        if max_logs == 0 {
            return;
        }
        if st.logs.len() >= max_logs {
            let excess = st.logs.len() + 1 - max_logs;
            st.logs.drain(..excess);
        }
        st.logs.push(StageLog {
            log: msg.to_owned(),
            updated: now,
        });
    }

    /// The stage with this name, if the channel went through it.
    pub fn get(&self, stage: &str) -> Option<&ChannelStage> {
        self.stages.iter().find(|s| s.name == stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voucher::TypedNode;

    fn peer(n: u8) -> PeerId {
        let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        bytes.extend_from_slice(&[n; 32]);
        PeerId::from_bytes(&bytes).unwrap()
    }

    fn cid() -> Cid {
        let digest = cid::multihash::Multihash::wrap(0x12, &[7; 32]).unwrap();
        Cid::new_v1(0x71, digest)
    }

    #[test]
    fn pull_and_push_set_sender_and_recipient() {
        let (a, b) = (peer(1), peer(2));
        let ch = ChannelId::new(a, b, TransferId(1));
        let v = TypedNode::new("V".into(), DagCbor::null());
        let pull = ChannelState::new(ch, a, cid(), DagCbor::null(), v.clone(), true, 0);
        assert!(pull.is_pull());
        assert_eq!((pull.sender, pull.recipient), (b, a));
        assert!(pull.is_initiator() && !pull.is_sender());
        assert_eq!(pull.other_peer(), b);

        let push = ChannelState::new(ch, b, cid(), DagCbor::null(), v.clone(), false, 0);
        assert!(!push.is_pull());
        assert_eq!((push.sender, push.recipient), (a, b));
        assert!(!push.is_initiator() && !push.is_sender());
        assert_eq!(push.voucher(), Some(&v));
        assert_eq!(push.last_voucher_result(), None);
    }

    #[test]
    fn stage_log_dedups_and_is_bounded() {
        let mut st = ChannelStages::default();
        st.add_log("Ongoing", "", Timestamp(1), 3);
        st.add_log("Ongoing", "a", Timestamp(2), 3);
        st.add_log("Ongoing", "a", Timestamp(3), 3);
        for (i, m) in ["b", "c", "d"].iter().enumerate() {
            st.add_log("Ongoing", m, Timestamp(4 + i as u64), 3);
        }
        st.add_log("Completed", "done", Timestamp(9), 3);
        let ongoing = st.get("Ongoing").unwrap();
        assert_eq!(ongoing.created, Timestamp(1));
        assert_eq!(ongoing.updated, Timestamp(6));
        let logs: Vec<_> = ongoing.logs.iter().map(|l| l.log.as_str()).collect();
        assert_eq!(logs, ["b", "c", "d"]);
        assert_eq!(st.stages.len(), 2);
    }
}
