//! The client side: a free retrieval from a storage provider, as lassie's graphsync retriever
//! makes it.
//!
//! The client pulls the DAG with a [`DealProposal`] (zero prices) as the voucher, and reads
//! the provider's [`DealResponse`]s as they come: `DealStatusAccepted` and the data, then the
//! provider's completion with `DealStatusCompleted`. A rejection, a demand for payment or an
//! error ends the retrieval with a [`RetrievalError`] that carries the provider's message; so
//! does a provider that goes quiet for longer than the request's timeout.

use std::time::Duration;

use datatransfer::{
    ChannelId, ChannelState, Cid, DagCbor, EventCode, GraphsyncTransport, Manager, ManagerError,
    PeerId, Status, Transport, TypedNode, all_selector,
};
use datatransfer_types::NodeError;

use crate::types::{
    DealId, DealProposal, DealResponse, DealStatus, Params, RESPONSE_TYPES, TokenAmount,
    response_of,
};

/// How long a provider may stay silent by default before a retrieval gives up: lassie's
/// `--provider-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// What to retrieve, from whom.
#[derive(Debug, Clone)]
pub struct RetrievalRequest {
    /// The storage provider.
    pub provider: PeerId,
    /// The root of the DAG.
    pub root: Cid,
    /// The part of the DAG wanted (`None`: all of it).
    pub selector: Option<DagCbor>,
    /// The deal's id (any number the client has not used with this provider).
    pub deal_id: DealId,
    /// How long the provider may stay silent (no response, no block) before the retrieval
    /// fails.
    pub timeout: Duration,
}

impl RetrievalRequest {
    /// The whole DAG under `root` from `provider`, with a deal id taken from the clock and
    /// the default timeout.
    pub fn new(provider: PeerId, root: Cid) -> Self {
        let deal_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            provider,
            root,
            selector: None,
            deal_id,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Only what `selector` chooses.
    pub fn selector(mut self, selector: DagCbor) -> Self {
        self.selector = Some(selector);
        self
    }

    /// This deal id.
    pub fn deal_id(mut self, id: DealId) -> Self {
        self.deal_id = id;
        self
    }

    /// This silence timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The selector the pull sends: the request's, or the whole DAG's.
    pub fn selector_or_all(&self) -> DagCbor {
        self.selector.clone().unwrap_or_else(all_selector)
    }

    /// The proposal this request sends: free, naming the pull's selector (as lassie's
    /// proposals always do).
    pub fn proposal(&self) -> Result<DealProposal, NodeError> {
        Ok(DealProposal {
            id: self.deal_id,
            params: Params::free(Some(&self.selector_or_all()))?,
            payload_cid: self.root,
        })
    }
}

/// A retrieval that finished.
#[derive(Debug, Clone)]
pub struct Retrieved {
    /// The channel it ran on.
    pub channel: ChannelId,
    /// Bytes received.
    pub bytes: u64,
    /// Blocks received.
    pub blocks: u64,
    /// Whether the provider confirmed with `DealStatusCompleted` (Boost does; a plain
    /// data-transfer provider only completes the channel).
    pub confirmed: bool,
}

/// Why a retrieval failed. The provider's refusals, our own limits and our own failures are
/// kept apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// The provider refused the proposal.
    #[error("the provider rejected the retrieval: {message}")]
    Rejected {
        /// The provider's reason.
        message: String,
    },
    /// The provider wants money; only free retrievals are supported.
    #[error(
        "paid retrieval is not supported: the provider asks for payment ({status}, {owed} owed)"
    )]
    PaymentRequired {
        /// The status the provider answered with.
        status: DealStatus,
        /// What it says is owed now.
        owed: TokenAmount,
    },
    /// The provider reported that the deal failed or was cancelled.
    #[error("the provider ended the retrieval with {status}: {message}")]
    Provider {
        /// Its status.
        status: DealStatus,
        /// Its message.
        message: String,
    },
    /// The provider stayed silent for longer than the request's timeout.
    #[error("the provider sent nothing for {} s ({stage}); giving up", .after.as_secs())]
    TimedOut {
        /// The timeout.
        after: Duration,
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The data-transfer channel failed (the network, a block that did not verify, ...).
    #[error("the retrieval's channel ended {status:?}: {message}")]
    Channel {
        /// How it ended.
        status: Status,
        /// The last error reported on it.
        message: String,
    },
    /// Our own node failed (stopped, store error, ...).
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The proposal could not be encoded (a selector that is not valid DAG-CBOR).
    #[error("cannot encode the proposal: {0}")]
    Proposal(NodeError),
}

/// Retrieves from storage providers over a [`Manager`].
#[derive(Debug, Clone)]
pub struct RetrievalClient<T: Transport = GraphsyncTransport> {
    manager: Manager<T>,
}

impl<T: Transport> RetrievalClient<T> {
    /// A client on `manager`; registers the deal-response types as voucher results (once per
    /// manager: a second client on the same manager fails with the registry's error).
    pub async fn new(manager: Manager<T>) -> Result<Self, ManagerError> {
        for ty in RESPONSE_TYPES {
            manager.register_voucher_result_type(ty).await?;
        }
        Ok(Self { manager })
    }

    /// Retrieves as `request` says; the manager must be started and know the provider's
    /// address (`Manager::connect` or `add_peer_address`). `progress` sees the channel's
    /// state after each of its events. The blocks land in the manager's block store,
    /// verified.
    pub async fn retrieve(
        &self,
        request: &RetrievalRequest,
        mut progress: impl FnMut(&ChannelState),
    ) -> Result<Retrieved, RetrievalError> {
        let proposal = request.proposal().map_err(RetrievalError::Proposal)?;
        let voucher = TypedNode::encode(&proposal).map_err(RetrievalError::Proposal)?;
        let selector = request.selector_or_all();
        let mut events = self.manager.subscribe().await?;
        let id = self
            .manager
            .open_pull_channel(request.provider, voucher, request.root, selector)
            .await?;
        let mut follow = Follow::default();
        // Only this channel's events count as the provider speaking (other channels of a
        // busy manager do not keep a silent provider alive).
        let mut deadline = tokio::time::Instant::now() + request.timeout;
        let ended = loop {
            let next = tokio::time::timeout_at(deadline, events.next()).await;
            let Ok(next) = next else {
                break Err(RetrievalError::TimedOut {
                    after: request.timeout,
                    stage: follow.stage(),
                });
            };
            let Some((event, state)) = next else {
                return Err(ManagerError::Stopped.into());
            };
            if state.channel_id != id {
                continue;
            }
            deadline = tokio::time::Instant::now() + request.timeout;
            progress(&state);
            if let Some(ended) = follow.on_event(event.code, &event.message, &state) {
                break ended;
            }
        };
        if ended.is_err() {
            // The provider is told; a channel already over refuses the call, which is fine.
            let _ = self.manager.close_channel(id).await;
        }
        ended
    }
}

/// What a retrieval has seen of its channel so far.
#[derive(Debug, Default)]
struct Follow {
    results_seen: usize,
    accepted: bool,
    confirmed: bool,
    all_received: bool,
    last_error: String,
}

impl Follow {
    fn stage(&self) -> &'static str {
        match (self.accepted, self.all_received) {
            (false, _) => "waiting for it to accept the proposal",
            (true, false) => "waiting for blocks",
            (true, true) => "every block arrived; waiting for it to complete the deal",
        }
    }

    /// Reads one event; `Some` once the retrieval is over.
    fn on_event(
        &mut self,
        code: EventCode,
        message: &str,
        state: &ChannelState,
    ) -> Option<Result<Retrieved, RetrievalError>> {
        if matches!(
            code,
            EventCode::Error
                | EventCode::Cancel
                | EventCode::RequestCancelled
                | EventCode::Disconnected
                | EventCode::RequestTimedOut
                | EventCode::ReceiveDataError
        ) && !message.is_empty()
        {
            self.last_error = message.to_owned();
        }
        if code == EventCode::FinishTransfer {
            self.all_received = true;
        }
        if code == EventCode::Accept {
            self.accepted = true;
        }
        let new = state
            .voucher_results
            .get(self.results_seen..)
            .unwrap_or(&[]);
        self.results_seen = state.voucher_results.len();
        for result in new {
            // Results of other types are the provider's business; lassie skips them too.
            let Ok(response) = response_of(result) else {
                continue;
            };
            if let Some(ended) = self.on_response(response) {
                return Some(ended);
            }
        }
        match state.status {
            Status::Completed => Some(Ok(Retrieved {
                channel: state.channel_id,
                bytes: state.received,
                blocks: state.received_blocks_total,
                confirmed: self.confirmed,
            })),
            Status::Failed | Status::Cancelled => Some(Err(RetrievalError::Channel {
                status: state.status,
                message: if self.last_error.is_empty() {
                    state.message.clone()
                } else {
                    self.last_error.clone()
                },
            })),
            _ => None,
        }
    }

    fn on_response(&mut self, mut r: DealResponse) -> Option<Result<Retrieved, RetrievalError>> {
        // The provider's words reach a terminal: no control characters.
        r.message.retain(|c| !c.is_control());
        match r.status {
            DealStatus::ACCEPTED => self.accepted = true,
            DealStatus::COMPLETED => self.confirmed = true,
            DealStatus::REJECTED => {
                return Some(Err(RetrievalError::Rejected { message: r.message }));
            }
            s if s.asks_for_payment() => {
                return Some(Err(RetrievalError::PaymentRequired {
                    status: s,
                    owed: r.payment_owed,
                }));
            }
            s @ (DealStatus::ERRORED | DealStatus::CANCELLED | DealStatus::DEAL_NOT_FOUND) => {
                return Some(Err(RetrievalError::Provider {
                    status: s,
                    message: r.message,
                }));
            }
            // Unsealing, ongoing, ...: progress notes.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datatransfer_types::ChannelState;

    fn state(results: Vec<DealResponse>, status: Status) -> ChannelState {
        let peer_id = || {
            datatransfer::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id()
        };
        let (peer, other) = (peer_id(), peer_id());
        let root: Cid = "bafkqaaa".parse().expect("cid");
        let proposal = RetrievalRequest::new(other, root)
            .proposal()
            .expect("proposal");
        let voucher = TypedNode::encode(&proposal).expect("voucher");
        let id = ChannelId::new(peer, other, datatransfer_types::TransferId(1));
        let mut s = ChannelState::new(id, peer, root, all_selector(), voucher, true, 0);
        s.status = status;
        s.voucher_results = results
            .iter()
            .map(|r| TypedNode::encode(r).expect("encodes"))
            .collect();
        s
    }

    #[test]
    fn a_rejection_ends_the_retrieval_with_the_providers_message() {
        let mut f = Follow::default();
        let s = state(
            vec![DealResponse::rejected(3, "no such piece")],
            Status::Requested,
        );
        match f.on_event(EventCode::NewVoucherResult, "", &s) {
            Some(Err(RetrievalError::Rejected { message })) => assert_eq!(message, "no such piece"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_demand_for_payment_ends_the_retrieval_with_what_is_owed() {
        let mut f = Follow::default();
        let accepted = DealResponse::new(3, DealStatus::ACCEPTED);
        let mut owed = DealResponse::new(3, DealStatus::FUNDS_NEEDED);
        owed.payment_owed = TokenAmount::from_atto(1000);
        assert!(
            f.on_event(
                EventCode::NewVoucherResult,
                "",
                &state(vec![accepted.clone()], Status::Ongoing)
            )
            .is_none()
        );
        assert!(f.accepted);
        let s = state(vec![accepted, owed], Status::Ongoing);
        match f.on_event(EventCode::NewVoucherResult, "", &s) {
            Some(Err(e @ RetrievalError::PaymentRequired { .. })) => {
                let text = e.to_string();
                assert!(text.contains("paid retrieval is not supported"), "{text}");
                assert!(text.contains("1000 attoFIL"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_completed_channel_ends_the_retrieval_confirmed_or_not() {
        let mut f = Follow::default();
        let done = vec![
            DealResponse::new(3, DealStatus::ACCEPTED),
            DealResponse::new(3, DealStatus::COMPLETED),
        ];
        match f.on_event(EventCode::Complete, "", &state(done, Status::Completed)) {
            Some(Ok(r)) => assert!(r.confirmed),
            other => panic!("{other:?}"),
        }
        // A plain data-transfer provider sends no deal responses at all.
        let mut f = Follow::default();
        match f.on_event(EventCode::Complete, "", &state(vec![], Status::Completed)) {
            Some(Ok(r)) => assert!(!r.confirmed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_channel_reports_the_last_error_and_responses_are_read_once() {
        let mut f = Follow::default();
        let accepted = vec![DealResponse::new(3, DealStatus::ACCEPTED)];
        assert!(
            f.on_event(
                EventCode::NewVoucherResult,
                "",
                &state(accepted.clone(), Status::Ongoing)
            )
            .is_none()
        );
        assert!(
            f.on_event(
                EventCode::Error,
                "block bafy... did not verify",
                &state(accepted.clone(), Status::Failing)
            )
            .is_none()
        );
        match f.on_event(
            EventCode::CleanupComplete,
            "",
            &state(accepted, Status::Failed),
        ) {
            Some(Err(RetrievalError::Channel { status, message })) => {
                assert_eq!(status, Status::Failed);
                assert_eq!(message, "block bafy... did not verify");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.stage(), "waiting for blocks");
    }
}
