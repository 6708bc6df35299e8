//! A free retrieval between two Managers over real libp2p on 127.0.0.1: the provider's
//! acceptance and completion, its refusals with their reasons, and a client that gives up on
//! a provider that never completes.

#![allow(clippy::unwrap_used)] // Tests: a panic is a failure.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datatransfer::{
    ChannelId, Cid, DagCbor, Manager, PeerId, Registerable, RequestValidator, Revalidator, Status,
    TypedNode, Validation, ValidationError, ValidationOutcome, Voucher, all_selector,
};
use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::unixfs::{ImportOptions, export, import_bytes};
use datatransfer_retrieval::{
    DealProposal, DealResponse, DealStatus, FreeRetrievalProvider, Params, RetrievalClient,
    RetrievalError, RetrievalRequest, TokenAmount, response_of,
};
use datatransfer_test_support::random_bytes;

struct Pair {
    provider: Manager,
    provider_blocks: Arc<MemoryBlockstore>,
    client: Manager,
    client_blocks: Arc<MemoryBlockstore>,
}

async fn pair() -> Pair {
    let provider_blocks = Arc::new(MemoryBlockstore::new());
    let provider = Manager::builder()
        .blockstore(provider_blocks.clone())
        .build()
        .await
        .unwrap();
    let client_blocks = Arc::new(MemoryBlockstore::new());
    let client = Manager::builder()
        .blockstore(client_blocks.clone())
        .build()
        .await
        .unwrap();
    Pair {
        provider,
        provider_blocks,
        client,
        client_blocks,
    }
}

impl Pair {
    async fn start(&self) -> PeerId {
        self.provider.start().await.unwrap();
        self.client.start().await.unwrap();
        let addr = self.provider.listen_addrs().await[0].clone();
        let addr = addr.with_p2p(self.provider.peer_id()).unwrap();
        self.client.connect(&addr).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_retrieval_is_accepted_sent_and_confirmed_completed() {
    let p = pair().await;
    let data = random_bytes(3 << 20, 7);
    let file = import_bytes(&*p.provider_blocks, &data, &ImportOptions::default()).unwrap();
    let provider = FreeRetrievalProvider::new(p.provider_blocks.clone());
    provider.register(&p.provider).await.unwrap();
    let peer = p.start().await;

    let client = RetrievalClient::new(p.client.clone()).await.unwrap();
    let mut results = Vec::new();
    let got = client
        .retrieve(&RetrievalRequest::new(peer, file.root).deal_id(11), |s| {
            results = s.voucher_results.clone();
        })
        .await
        .unwrap();
    assert!(got.confirmed, "the provider confirmed the deal");
    assert!(got.bytes >= data.len() as u64, "{} bytes", got.bytes);
    let statuses: Vec<(u64, DealStatus)> = results
        .iter()
        .map(|r| response_of(r).unwrap())
        .map(|r| (r.id, r.status))
        .collect();
    assert_eq!(
        statuses,
        [(11, DealStatus::ACCEPTED), (11, DealStatus::COMPLETED)]
    );
    let mut out = Vec::new();
    export(&*p.client_blocks, &file.root, &mut out).unwrap();
    assert_eq!(out, data);
    assert_eq!(provider.open_deals(), 0, "a completed deal is forgotten");
    p.client.stop().await.unwrap();
    p.provider.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrieval_of_missing_content_is_rejected_with_the_providers_reason() {
    let p = pair().await;
    let provider = FreeRetrievalProvider::new(p.provider_blocks.clone());
    provider.register(&p.provider).await.unwrap();
    let peer = p.start().await;
    let missing: Cid = "bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzako47346wosmu"
        .parse()
        .unwrap();
    let client = RetrievalClient::new(p.client.clone()).await.unwrap();
    let err = client
        .retrieve(&RetrievalRequest::new(peer, missing), |_| {})
        .await
        .unwrap_err();
    match &err {
        RetrievalError::Rejected { message } => {
            assert_eq!(message, &format!("no content found for {missing}"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(provider.open_deals(), 0);
    p.client.stop().await.unwrap();
    p.provider.stop().await.unwrap();
}

/// Opens a pull with `proposal` as it is and returns the provider's deal responses once the
/// channel has ended.
async fn raw_pull(
    p: &Pair,
    peer: PeerId,
    proposal: &DealProposal,
    selector: DagCbor,
) -> (Status, Vec<DealResponse>) {
    let mut events = p.client.subscribe().await.unwrap();
    let id = p
        .client
        .open_pull_channel(
            peer,
            TypedNode::encode(proposal).unwrap(),
            proposal.payload_cid,
            selector,
        )
        .await
        .unwrap();
    loop {
        let (_, state) = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap();
        if state.channel_id == id && state.status.is_terminal() {
            let responses = state
                .voucher_results
                .iter()
                .map(|r| response_of(r).unwrap())
                .collect();
            return (state.status, responses);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_for_another_root_another_selector_or_a_price_are_rejected() {
    let p = pair().await;
    let file = import_bytes(
        &*p.provider_blocks,
        &random_bytes(300 << 10, 3),
        &ImportOptions::default(),
    )
    .unwrap();
    let other = import_bytes(
        &*p.provider_blocks,
        &random_bytes(1000, 4),
        &ImportOptions::default(),
    )
    .unwrap();
    let provider = FreeRetrievalProvider::new(p.provider_blocks.clone());
    provider.register(&p.provider).await.unwrap();
    let peer = p.start().await;
    RetrievalClient::new(p.client.clone()).await.unwrap();
    let free = |root: Cid| DealProposal {
        id: 1,
        params: Params::free(None).unwrap(),
        payload_cid: root,
    };

    // A proposal for one root on a request for another.
    let mut wrong_root = free(other.root);
    wrong_root.id = 2;
    let mut events = p.client.subscribe().await.unwrap();
    let id = p
        .client
        .open_pull_channel(
            peer,
            TypedNode::encode(&wrong_root).unwrap(),
            file.root,
            all_selector(),
        )
        .await
        .unwrap();
    let responses = loop {
        let (_, s) = events.next().await.unwrap();
        if s.channel_id == id && s.status.is_terminal() {
            assert_eq!(s.status, Status::Failed);
            break s
                .voucher_results
                .iter()
                .map(|r| response_of(r).unwrap())
                .collect::<Vec<_>>();
        }
    };
    assert_eq!(responses.len(), 1);
    assert_eq!(
        (responses[0].id, responses[0].status),
        (2, DealStatus::REJECTED)
    );
    assert!(
        responses[0]
            .message
            .contains(&format!("the proposal is for {}", other.root)),
        "{}",
        responses[0].message
    );

    // The whole DAG proposed, only the root requested.
    let matcher = DagCbor::from_bytes(vec![0xa1, 0x61, 0x2e, 0xa0]).unwrap(); // {".": {}}
    let (status, responses) = raw_pull(&p, peer, &free(file.root), matcher).await;
    assert_eq!(status, Status::Failed);
    assert_eq!(responses[0].status, DealStatus::REJECTED);
    assert_eq!(
        responses[0].message,
        "the request's selector is not the one in the proposal"
    );

    // A proposal that offers to pay.
    let mut paid = free(file.root);
    paid.params.price_per_byte = TokenAmount::from_atto(2);
    let (status, responses) = raw_pull(&p, peer, &paid, all_selector()).await;
    assert_eq!(status, Status::Failed);
    assert!(
        responses[0]
            .message
            .starts_with("this provider serves free retrievals only"),
        "{}",
        responses[0].message
    );
    assert_eq!(provider.open_deals(), 0);
    p.client.stop().await.unwrap();
    p.provider.stop().await.unwrap();
}

/// A provider that accepts and sends everything but never completes the deal: it asks for a
/// last voucher (finalization) that a free client never sends.
struct NeverCompletes(Arc<FreeRetrievalProvider>);

#[async_trait]
impl RequestValidator for NeverCompletes {
    async fn validate_push(
        &self,
        r: bool,
        c: ChannelId,
        s: PeerId,
        v: &Voucher,
        b: Cid,
        sel: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        self.0.validate_push(r, c, s, v, b, sel).await
    }

    async fn validate_pull(
        &self,
        r: bool,
        c: ChannelId,
        s: PeerId,
        v: &Voucher,
        b: Cid,
        sel: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        self.0.validate_pull(r, c, s, v, b, sel).await
    }
}

#[async_trait]
impl Revalidator for NeverCompletes {
    async fn revalidate(&self, c: ChannelId, v: &Voucher) -> Result<Validation, ValidationError> {
        self.0.revalidate(c, v).await
    }

    async fn on_complete(&self, _: ChannelId) -> Result<Option<Validation>, ValidationError> {
        Ok(Some(Validation::new(ValidationOutcome::Pause)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gives_up_on_a_provider_that_never_completes_after_its_timeout() {
    let p = pair().await;
    let file = import_bytes(
        &*p.provider_blocks,
        &random_bytes(600 << 10, 5),
        &ImportOptions::default(),
    )
    .unwrap();
    let never = Arc::new(NeverCompletes(FreeRetrievalProvider::new(
        p.provider_blocks.clone(),
    )));
    p.provider
        .register_voucher_type(DealProposal::TYPE, never.clone())
        .await
        .unwrap();
    p.provider
        .register_revalidator(DealProposal::TYPE, never)
        .await
        .unwrap();
    let peer = p.start().await;
    let client = RetrievalClient::new(p.client.clone()).await.unwrap();
    let started = std::time::Instant::now();
    let request = RetrievalRequest::new(peer, file.root).timeout(Duration::from_secs(5));
    let err = client.retrieve(&request, |_| {}).await.unwrap_err();
    match &err {
        RetrievalError::TimedOut { after, stage } => {
            assert_eq!(*after, Duration::from_secs(5));
            assert_eq!(
                *stage,
                "every block arrived; waiting for it to complete the deal"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded: {:?}",
        started.elapsed()
    );
    // Every block arrived before the client gave up; the channel was closed.
    let mut out = Vec::new();
    export(&*p.client_blocks, &file.root, &mut out).unwrap();
    assert_eq!(out.len(), 600 << 10);
    assert!(p.client_blocks.has(&file.root).unwrap());
    p.client.stop().await.unwrap();
    p.provider.stop().await.unwrap();
}
