//! `serve --metrics ADDR`: Prometheus metrics over HTTP (`GET /metrics`, OpenMetrics text,
//! with `prometheus-client`, the library rust-libp2p's metrics use).
//!
//! Counted from the node's events: channels by status, bytes and blocks sent and received,
//! restarts, every event by code; from the validators: accepted and rejected requests; from
//! the store: how long its writes take; at each scrape, from graphsync: peers, requests and
//! responses in flight (queued, paused), and the node's queue depths (API calls, store writes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use datatransfer::{
    ChannelFilter, ChannelId, ChannelState, ChannelStore, ChannelUpdate, Cid, DagCbor, Event,
    Manager, PeerId, RequestValidator, Revalidator, Status, StoreError, Validation,
    ValidationError, Voucher,
};
use datatransfer_types::store::PurgeFinished;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The node's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    channels: Family<StatusLabel, Gauge>,
    events: Family<EventLabel, Counter>,
    sent: Counter,
    received: Counter,
    blocks_sent: Counter,
    blocks_received: Counter,
    restarts: Counter,
    validations: Family<OutcomeLabel, Counter>,
    store_writes: Histogram,
    gs_peers: Gauge,
    gs_requests: Gauge,
    gs_responses: Gauge,
    gs_responses_queued: Gauge,
    gs_responses_paused: Gauge,
    api_queue: Gauge,
    store_queue: Gauge,
    /// What each running channel had moved at its last event, and its status.
    seen: Mutex<HashMap<ChannelId, Moved>>,
}

/// Scrapes served at once; more wait for their turn.
const MAX_SCRAPES: usize = 16;

/// How long a scraper may take to send its request.
const SCRAPE_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Finished channels are forgotten once this many channels are known.
const MAX_SEEN: usize = 65_536;

/// What a channel had moved, and its status, when last seen.
#[derive(Debug, Clone, Copy)]
struct Moved {
    sent: u64,
    received: u64,
    blocks_sent: u64,
    blocks_received: u64,
    status: Status,
}

impl Moved {
    fn of(s: &ChannelState) -> Self {
        Self {
            sent: s.sent,
            received: s.received,
            blocks_sent: s.sent_blocks_total,
            blocks_received: s.received_blocks_total,
            status: s.status,
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("datatransfer");
        let m = Self {
            channels: Family::default(),
            events: Family::default(),
            sent: Counter::default(),
            received: Counter::default(),
            blocks_sent: Counter::default(),
            blocks_received: Counter::default(),
            restarts: Counter::default(),
            validations: Family::default(),
            store_writes: Histogram::new(exponential_buckets(0.0001, 4.0, 9)),
            gs_peers: Gauge::default(),
            gs_requests: Gauge::default(),
            gs_responses: Gauge::default(),
            gs_responses_queued: Gauge::default(),
            gs_responses_paused: Gauge::default(),
            api_queue: Gauge::default(),
            store_queue: Gauge::default(),
            seen: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "channels",
            "Channels seen since the node started, by their status now",
            m.channels.clone(),
        );
        registry.register("events", "Channel events, by code", m.events.clone());
        registry.register("sent_bytes", "Bytes sent on channels", m.sent.clone());
        registry.register(
            "received_bytes",
            "Bytes received on channels",
            m.received.clone(),
        );
        registry.register("sent_blocks", "Blocks sent", m.blocks_sent.clone());
        registry.register(
            "received_blocks",
            "Blocks received",
            m.blocks_received.clone(),
        );
        registry.register("restarts", "Channel restarts", m.restarts.clone());
        registry.register(
            "validations",
            "Requests validated, by outcome (accepted, rejected, failed)",
            m.validations.clone(),
        );
        registry.register(
            "store_write_seconds",
            "How long a batch of channel updates takes to reach the store",
            m.store_writes.clone(),
        );
        registry.register(
            "graphsync_peers",
            "Peers graphsync holds state for",
            m.gs_peers.clone(),
        );
        registry.register(
            "graphsync_requests",
            "Graphsync requests of ours in flight",
            m.gs_requests.clone(),
        );
        registry.register(
            "graphsync_responses",
            "Graphsync responses being served (queued, running or paused)",
            m.gs_responses.clone(),
        );
        registry.register(
            "graphsync_responses_queued",
            "Graphsync responses waiting in the queue for room",
            m.gs_responses_queued.clone(),
        );
        registry.register(
            "graphsync_responses_paused",
            "Graphsync responses paused",
            m.gs_responses_paused.clone(),
        );
        registry.register(
            "api_queue",
            "Calls waiting for the engine task",
            m.api_queue.clone(),
        );
        registry.register(
            "store_queue",
            "Channel updates waiting to be written to the store",
            m.store_queue.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// Counts one event of a channel.
    fn on_event(&self, event: &Event, state: &ChannelState) {
        self.events
            .get_or_create(&EventLabel {
                event: event.code.name(),
            })
            .inc();
        if event.code == datatransfer::EventCode::Restart {
            self.restarts.inc();
        }
        let now = Moved::of(state);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let before = seen.get(&state.channel_id).copied();
        // A channel first seen mid-life (resumed from the store by a restart, or finished
        // and forgotten since) moved its bytes before this process counted: those are not
        // counted again, nor is it counted again as a channel if it had ended.
        let mid_life = before.is_none()
            && (event.code == datatransfer::EventCode::Restart || state.status.is_terminal());
        if mid_life && state.status.is_terminal() {
            return;
        }
        let was = before.unwrap_or(if mid_life {
            now
        } else {
            Moved {
                sent: 0,
                received: 0,
                blocks_sent: 0,
                blocks_received: 0,
                status: state.status,
            }
        });
        self.sent.inc_by(now.sent.saturating_sub(was.sent));
        self.received
            .inc_by(now.received.saturating_sub(was.received));
        self.blocks_sent
            .inc_by(now.blocks_sent.saturating_sub(was.blocks_sent));
        self.blocks_received
            .inc_by(now.blocks_received.saturating_sub(was.blocks_received));
        let label = |s: Status| StatusLabel {
            status: format!("{s:?}"),
        };
        if before.is_none() {
            self.channels.get_or_create(&label(now.status)).inc();
        } else if was.status != now.status {
            self.channels.get_or_create(&label(was.status)).dec();
            self.channels.get_or_create(&label(now.status)).inc();
        }
        {
            // Counters never go back: a restart that recounts from less keeps the higher
            // mark. Finished channels stay known (events may follow the one that ended them)
            // until there are many.
            if seen.len() >= MAX_SEEN {
                seen.retain(|_, m| !m.status.is_terminal());
            }
            seen.insert(
                state.channel_id,
                Moved {
                    sent: now.sent.max(was.sent),
                    received: now.received.max(was.received),
                    blocks_sent: now.blocks_sent.max(was.blocks_sent),
                    blocks_received: now.blocks_received.max(was.blocks_received),
                    status: now.status,
                },
            );
        }
    }

    fn validated(&self, r: &Result<Validation, ValidationError>) {
        let outcome = match r {
            Ok(v) if v.outcome.is_accepted() => "accepted",
            Ok(_) => "rejected",
            Err(_) => "failed",
        };
        self.validations
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text a scrape gets, with graphsync's gauges read now.
    async fn render(&self, manager: &Manager) -> String {
        if let Some(gs) = manager.transport().graphsync() {
            let stats = gs.stats().await;
            self.gs_peers.set(stats.peers as i64);
            self.gs_requests.set(stats.requests as i64);
            self.gs_responses.set(stats.responses as i64);
            self.gs_responses_queued.set(stats.responses_queued as i64);
            self.gs_responses_paused.set(stats.responses_paused as i64);
        }
        let queues = manager.queue_depths();
        self.api_queue.set(queues.api as i64);
        self.store_queue.set(queues.store as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts `manager`'s events until it stops.
    pub(crate) async fn follow(self: Arc<Self>, manager: &Manager) -> Result<(), String> {
        let mut events = manager.subscribe().await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            while let Some((event, state)) = events.next().await {
                self.on_event(&event, &state);
            }
        });
        Ok(())
    }

    /// Serves `GET /metrics` on `listener` until the process ends: at most
    /// [`MAX_SCRAPES`] connections at once, each given [`SCRAPE_TIME`] to send its request.
    pub(crate) fn serve(self: Arc<Self>, listener: tokio::net::TcpListener, manager: Manager) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut conn = match listener.accept().await {
                    Ok((conn, _)) => conn,
                    Err(e) => {
                        // Out of descriptors, say: wait and go on serving.
                        tracing::warn!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (me, m) = (self.clone(), manager.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    // The request line and headers; a scraper sends no body.
                    let mut head = vec![0u8; 8 << 10];
                    let mut n = 0;
                    let read = async {
                        while n < head.len() && !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut head[n..]).await {
                                Ok(0) | Err(_) => return false,
                                Ok(k) => n += k,
                            }
                        }
                        true
                    };
                    if !matches!(tokio::time::timeout(SCRAPE_TIME, read).await, Ok(true)) {
                        return;
                    }
                    let wanted = head[..n].starts_with(b"GET /metrics ")
                        || head[..n].starts_with(b"GET /metrics?");
                    let (status, kind, body) = if wanted {
                        (
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            me.render(&m).await,
                        )
                    } else {
                        (
                            "404 Not Found",
                            "text/plain",
                            "try GET /metrics\n".to_owned(),
                        )
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
    }
}

/// A validator whose decisions are counted.
pub(crate) struct Counted<V: ?Sized> {
    pub(crate) inner: Arc<V>,
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl<V: ?Sized> Counted<V> {
    fn count(&self, r: Result<Validation, ValidationError>) -> Result<Validation, ValidationError> {
        if let Some(m) = &self.metrics {
            m.validated(&r);
        }
        r
    }
}

#[async_trait]
impl<V: RequestValidator + ?Sized> RequestValidator for Counted<V> {
    async fn validate_push(
        &self,
        restart: bool,
        channel: ChannelId,
        sender: PeerId,
        voucher: &Voucher,
        root: Cid,
        selector: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        let r = self
            .inner
            .validate_push(restart, channel, sender, voucher, root, selector)
            .await;
        self.count(r)
    }

    async fn validate_pull(
        &self,
        restart: bool,
        channel: ChannelId,
        receiver: PeerId,
        voucher: &Voucher,
        root: Cid,
        selector: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        let r = self
            .inner
            .validate_pull(restart, channel, receiver, voucher, root, selector)
            .await;
        self.count(r)
    }
}

#[async_trait]
impl<V: Revalidator + ?Sized> Revalidator for Counted<V> {
    async fn revalidate(
        &self,
        channel: ChannelId,
        voucher: &Voucher,
    ) -> Result<Validation, ValidationError> {
        self.inner.revalidate(channel, voucher).await
    }

    async fn on_complete(&self, channel: ChannelId) -> Result<Option<Validation>, ValidationError> {
        self.inner.on_complete(channel).await
    }
}

/// A channel store whose writes are timed.
pub(crate) struct TimedStore {
    pub(crate) inner: Arc<dyn ChannelStore>,
    pub(crate) metrics: Arc<Metrics>,
}

#[async_trait]
impl ChannelStore for TimedStore {
    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelState>, StoreError> {
        self.inner.get(id).await
    }

    async fn list(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, StoreError> {
        self.inner.list(filter).await
    }

    async fn apply_batch(&self, updates: Vec<ChannelUpdate>) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.apply_batch(updates).await;
        self.metrics
            .store_writes
            .observe(started.elapsed().as_secs_f64());
        r
    }

    async fn events(&self, id: &ChannelId) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id).await
    }

    async fn delete(&self, id: &ChannelId) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }

    async fn purge_finished(&self, purge: PurgeFinished) -> Result<u64, StoreError> {
        self.inner.purge_finished(purge).await
    }

    async fn recently_finished(&self, limit: usize) -> Result<Vec<ChannelState>, StoreError> {
        self.inner.recently_finished(limit).await
    }
}
