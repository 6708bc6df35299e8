//! Where channels are kept: the [`ChannelStore`] trait, an in-memory implementation, and a
//! conformance suite every implementation must pass.
//!
//! The engine and the façade depend on the trait only, so a user can keep channels in SQLite
//! (`datatransfer-store-sqlite`), in memory ([`MemoryChannelStore`], for tests and simulators)
//! or anywhere else. A state change and the events that produced it are applied atomically: a
//! reader never sees one without the other, and a crash never leaves half of an update.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use libp2p_identity::PeerId;
use thiserror::Error;

use crate::{ChannelId, ChannelState, Event, Timestamp};

/// How durable an update must be before `apply` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Durability {
    /// Byte counters and block indexes: survives a crash of the process; a power cut may lose
    /// the last moments (they are recounted on restart).
    Progress,
    /// A status change, voucher or result: on stable storage before `apply` returns.
    StatusChange,
}

/// One state change to persist: the channel's new state and the events that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelUpdate {
    /// The channel after the change.
    pub state: ChannelState,
    /// What happened, oldest first (may be empty).
    pub events: Vec<Event>,
    /// How durable the change must be.
    pub durability: Durability,
}

impl ChannelUpdate {
    /// An update with its events; status changes are [`Durability::StatusChange`] unless
    /// every event is a data-progress event.
    pub fn new(state: ChannelState, events: Vec<Event>) -> Self {
        use crate::EventCode as E;
        let progress_only = !events.is_empty()
            && events.iter().all(|e| {
                matches!(
                    e.code,
                    E::DataReceived
                        | E::DataSent
                        | E::DataQueued
                        | E::DataReceivedProgress
                        | E::DataSentProgress
                        | E::DataQueuedProgress
                )
            });
        let durability = if progress_only {
            Durability::Progress
        } else {
            Durability::StatusChange
        };
        Self {
            state,
            events,
            durability,
        }
    }
}

/// Which channels to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFilter {
    /// Every channel.
    All,
    /// Channels that still need work (not Completed, Failed or Cancelled).
    InProgress,
    /// Channels with this peer on the other side.
    Peer(PeerId),
}

impl ChannelFilter {
    /// Whether `state` passes the filter.
    pub fn matches(&self, state: &ChannelState) -> bool {
        match self {
            Self::All => true,
            Self::InProgress => state.status.is_in_progress(),
            Self::Peer(p) => state.other_peer() == *p,
        }
    }
}

/// Which finished channels (Completed, Failed or Cancelled) [`ChannelStore::purge_finished`]
/// removes: those that finished before a time, and those beyond the most recent few. A channel
/// finished when it was last updated ([`ChannelState::last_updated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeFinished {
    /// Remove channels that finished before this time.
    pub finished_before: Option<Timestamp>,
    /// Keep at most this many finished channels: the most recently finished.
    pub keep_newest: Option<usize>,
}

impl PurgeFinished {
    /// Whether a finished channel goes: `rank` is its place among finished channels, most
    /// recently finished first (0 is the newest).
    pub fn removes(&self, rank: usize, finished: Timestamp) -> bool {
        self.keep_newest.is_some_and(|keep| rank >= keep)
            || self.finished_before.is_some_and(|before| finished < before)
    }
}

/// A store failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store file could not be opened or is not a database.
    #[error("cannot open channel store {path}: {reason}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is a database, but not a channel store.
    #[error("{path} is not a data-transfer channel store: {reason}")]
    Foreign {
        /// The file.
        path: String,
        /// What gave it away.
        reason: String,
    },
    /// The store was written by a newer version of this library.
    #[error("channel store {path} has schema version {found}; this build knows up to {supported}")]
    UnsupportedVersion {
        /// The file.
        path: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A stored record does not decode (the file was damaged or edited).
    #[error("corrupt record for channel {channel}: {reason}")]
    Corrupt {
        /// The channel, as stored.
        channel: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend failed to read or write.
    #[error("channel store I/O failed: {0}")]
    Backend(String),
    /// The store was closed.
    #[error("channel store is closed")]
    Closed,
}

/// Persistent channel storage.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// The channel with this id, if stored.
    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelState>, StoreError>;

    /// The channels passing `filter`, in no particular order.
    async fn list(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, StoreError>;

    /// Applies one update atomically (state and events together).
    async fn apply(&self, update: ChannelUpdate) -> Result<(), StoreError> {
        self.apply_batch(vec![update]).await
    }

    /// Applies several updates in one atomic step (the cheap way to record progress).
    async fn apply_batch(&self, updates: Vec<ChannelUpdate>) -> Result<(), StoreError>;

    /// The events stored for a channel, oldest first.
    async fn events(&self, id: &ChannelId) -> Result<Vec<Event>, StoreError>;

    /// Removes a channel and its events; returns whether it existed.
    async fn delete(&self, id: &ChannelId) -> Result<bool, StoreError>;

    /// The `limit` most recently finished channels (Completed, Failed or Cancelled), newest
    /// first: what a node remembers at start to answer late restarts. The default lists every
    /// channel; a store with an index on finish times should do better.
    async fn recently_finished(&self, limit: usize) -> Result<Vec<ChannelState>, StoreError> {
        let mut finished: Vec<ChannelState> = self
            .list(ChannelFilter::All)
            .await?
            .into_iter()
            .filter(|s| s.status.is_terminal())
            .collect();
        finished.sort_unstable_by_key(|s| std::cmp::Reverse(s.last_updated()));
        finished.truncate(limit);
        Ok(finished)
    }

    /// Removes the finished channels `purge` names, with their events; returns how many.
    /// Channels in progress are never removed. The default lists every channel; a store with
    /// an index on finish times should do better.
    async fn purge_finished(&self, purge: PurgeFinished) -> Result<u64, StoreError> {
        let mut finished: Vec<(Timestamp, ChannelId)> = self
            .list(ChannelFilter::All)
            .await?
            .into_iter()
            .filter(|s| s.status.is_terminal())
            .map(|s| (s.last_updated(), s.channel_id))
            .collect();
        finished.sort_unstable_by(|a, b| b.cmp(a));
        let mut removed = 0;
        for (rank, (at, id)) in finished.iter().enumerate() {
            if purge.removes(rank, *at) && self.delete(id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Default cap on events kept per channel by the stores of this workspace; older ones are
/// dropped first.
pub const DEFAULT_MAX_EVENTS_PER_CHANNEL: usize = 1_000;

type MemoryMap = BTreeMap<ChannelId, (ChannelState, Vec<Event>)>;

/// A [`ChannelStore`] in memory, for tests and simulators. Same behaviour as the durable
/// stores, minus the durability.
#[derive(Debug)]
pub struct MemoryChannelStore {
    inner: Mutex<MemoryMap>,
    max_events: usize,
}

impl Default for MemoryChannelStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENTS_PER_CHANNEL)
    }
}

impl MemoryChannelStore {
    /// An empty store keeping at most `max_events` events per channel.
    pub fn new(max_events: usize) -> Self {
        Self {
            inner: Mutex::new(BTreeMap::new()),
            max_events,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryMap>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

#[async_trait]
impl ChannelStore for MemoryChannelStore {
    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelState>, StoreError> {
        Ok(self.lock()?.get(id).map(|(s, _)| s.clone()))
    }

    async fn list(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, StoreError> {
        Ok(self
            .lock()?
            .values()
            .filter(|(s, _)| filter.matches(s))
            .map(|(s, _)| s.clone())
            .collect())
    }

    async fn apply_batch(&self, updates: Vec<ChannelUpdate>) -> Result<(), StoreError> {
        let mut map = self.lock()?;
        for u in updates {
            let entry = map
                .entry(u.state.channel_id)
                .or_insert_with(|| (u.state.clone(), Vec::new()));
            entry.0 = u.state;
            entry.1.extend(u.events);
            if entry.1.len() > self.max_events {
                let excess = entry.1.len() - self.max_events;
                entry.1.drain(..excess);
            }
        }
        Ok(())
    }

    async fn events(&self, id: &ChannelId) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .lock()?
            .get(id)
            .map(|(_, e)| e.clone())
            .unwrap_or_default())
    }

    async fn delete(&self, id: &ChannelId) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove(id).is_some())
    }
}

#[cfg(feature = "store-conformance")]
pub mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls a future that never waits (the memory store's never do) to completion.
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    #[test]
    fn memory_store_passes_the_conformance_suite() {
        block_on(conformance::run_all(
            || async { MemoryChannelStore::new(40) },
            40,
        ));
    }
}
