//! The data-transfer messages on their way out: one task per peer sends that peer's messages
//! in order, and ends after a while with nothing to send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datatransfer_fsm::OnSendFailure;
use datatransfer_network::DataTransferNetwork;
use datatransfer_types::message::Message;
use datatransfer_types::{ChannelId, PeerId};
use tokio::sync::{mpsc, oneshot};

/// Told whether a message went out (the cancel of [`crate::Manager::cancel_channel`]).
pub(crate) type SendDone = oneshot::Sender<Result<(), String>>;

/// A message for a peer: its channel, what a failure means, and who waits to hear.
pub(crate) type Outgoing = (ChannelId, Message, OnSendFailure, Option<SendDone>);

/// How long a peer's sender task waits for another message before it ends (the next
/// message to that peer starts a new one).
pub(crate) const PEER_SENDER_IDLE: Duration = Duration::from_secs(60);

/// Sends one peer's messages in order; ends when the engine forgets the peer or after
/// `idle` with nothing to send.
async fn peer_sender(
    net: Arc<dyn DataTransferNetwork>,
    to: PeerId,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    failures: mpsc::UnboundedSender<(ChannelId, OnSendFailure, String)>,
    idle: Duration,
) {
    loop {
        let next = match tokio::time::timeout(idle, rx.recv()).await {
            Ok(next) => next,
            Err(_) => {
                // Idle: take no more; what slipped in meanwhile is still sent, below.
                rx.close();
                rx.recv().await
            }
        };
        let Some((channel, message, on_failure, done)) = next else {
            return;
        };
        let sent = net.send_message(to, message).await;
        if let Err(e) = &sent {
            tracing::debug!(%to, %channel, error = %e, "sending a data-transfer message failed");
            let _ = failures.send((channel, on_failure, e.to_string()));
        }
        if let Some(done) = done {
            let _ = done.send(sent.map_err(|e| e.to_string()));
        }
    }
}

/// One sender task per peer with something to send, each sending that peer's messages in
/// order. A task ends after a while idle; the map keeps no entry for it after.
pub(crate) struct PeerSenders {
    net: Arc<dyn DataTransferNetwork>,
    failures: mpsc::UnboundedSender<(ChannelId, OnSendFailure, String)>,
    idle: Duration,
    senders: HashMap<PeerId, mpsc::UnboundedSender<Outgoing>>,
}

impl PeerSenders {
    pub(crate) fn new(
        net: Arc<dyn DataTransferNetwork>,
        failures: mpsc::UnboundedSender<(ChannelId, OnSendFailure, String)>,
        idle: Duration,
    ) -> Self {
        Self {
            net,
            failures,
            idle,
            senders: HashMap::new(),
        }
    }

    /// Queues a message for `to`, starting its sender task if it has none (or it ended).
    pub(crate) fn send(&mut self, to: PeerId, item: Outgoing) {
        let item = match self.senders.get(&to) {
            Some(tx) => match tx.send(item) {
                Ok(()) => return,
                // Its task ended while idle.
                Err(mpsc::error::SendError(item)) => item,
            },
            None => item,
        };
        self.start(to, item);
    }

    fn start(&mut self, to: PeerId, item: Outgoing) {
        // Forget every task that ended idle, not only this peer's.
        self.senders.retain(|_, tx| !tx.is_closed());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(peer_sender(
            self.net.clone(),
            to,
            rx,
            self.failures.clone(),
            self.idle,
        ));
        let _ = tx.send(item);
        self.senders.insert(to, tx);
    }

    /// The peer's task ends once it has tried what is queued.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.senders.remove(peer);
    }

    /// How many sender tasks may still be running.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.senders.values().filter(|tx| !tx.is_closed()).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.
mod tests {
    use std::sync::Mutex;

    use datatransfer_network::NetworkError;
    use datatransfer_types::TransferId;
    use datatransfer_types::message::TransferRequest;

    use super::*;

    /// A network that records what it is asked to send.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<PeerId>>);

    #[async_trait::async_trait]
    impl DataTransferNetwork for Recorder {
        fn peer_id(&self) -> PeerId {
            PeerId::random()
        }
        async fn send_message(&self, to: PeerId, _message: Message) -> Result<(), NetworkError> {
            self.0.lock().unwrap().push(to);
            Ok(())
        }
        fn protect(&self, _peer: PeerId, _tag: &str) {}
        fn unprotect(&self, _peer: PeerId, _tag: &str) -> bool {
            false
        }
    }

    fn item() -> Outgoing {
        let me = PeerId::random();
        let channel = ChannelId {
            initiator: me,
            responder: me,
            id: TransferId(1),
        };
        (
            channel,
            Message::Request(TransferRequest::cancel(TransferId(1))),
            OnSendFailure::Ignore,
            None,
        )
    }

    #[tokio::test]
    async fn a_peers_sender_task_ends_when_idle_and_comes_back_for_the_next_message() {
        let net = Arc::new(Recorder::default());
        let (failures, _rx) = mpsc::unbounded_channel();
        let mut senders = PeerSenders::new(net.clone(), failures, Duration::from_millis(50));
        let peers: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
        for p in &peers {
            senders.send(*p, item());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(senders.running(), 100);
        assert_eq!(net.0.lock().unwrap().len(), 100);
        // Idle for longer than their limit: every task ended.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(senders.running(), 0);
        // The next message to one of them starts a task again, and the ended ones are
        // forgotten.
        senders.send(peers[7], item());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(net.0.lock().unwrap().len(), 101);
        assert_eq!(net.0.lock().unwrap()[100], peers[7]);
        assert_eq!(senders.senders.len(), 1);
        assert_eq!(senders.running(), 1);
    }
}
