//! A durable [`ChannelStore`] on SQLite, so that transfers survive crashes and restarts.
//!
//! [`SqliteChannelStore::open`] opens (or creates) a database file, upgrades its schema with
//! forward migrations, and hands the connection to a dedicated thread: SQLite's blocking
//! calls never run on the async runtime. Every request travels to that thread and its answer
//! comes back on a oneshot channel, which is how the async [`ChannelStore`] API is served.
//!
//! # Durability
//!
//! The database runs in WAL mode. Each batch of updates is one transaction, so a state change
//! and its events are written together or not at all, whatever instant the process dies.
//! Transactions holding only progress updates commit with `synchronous=NORMAL`: they survive
//! a crash of the process, and a power cut can lose only the last moments of byte counting,
//! which the transport recounts on restart. Transactions holding a status change, a voucher
//! or a result commit with `synchronous=FULL`, synced to disk before `apply` returns.
//!
//! Writes queued while a transaction runs are committed together in the next one (group
//! commit), so many concurrent callers share each sync.
//!
//! # Layout
//!
//! `channels` holds one row per channel (scalars in columns, the stage log as a DAG-CBOR
//! blob); `vouchers` holds each voucher and voucher result as its raw DAG-CBOR bytes;
//! `events` holds the event log, capped per channel. `dt_schema` holds the schema version.

mod codec;
pub mod schema;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use datatransfer_types::store::{
    ChannelFilter, ChannelStore, ChannelUpdate, DEFAULT_MAX_EVENTS_PER_CHANNEL, Durability,
    PurgeFinished, StoreError,
};
use datatransfer_types::{ChannelId, ChannelState, Event, EventCode, Status, Timestamp};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::oneshot;

use crate::codec::{CHANNEL_COLUMNS, encode_stages, from_sql, state_from_row, to_sql};

/// Settings of a [`SqliteChannelStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteStoreConfig {
    /// Events kept per channel; older ones are dropped first.
    pub max_events_per_channel: usize,
    /// Most updates committed in one transaction.
    pub max_batch: usize,
    /// Channels whose row ids and counts the writer keeps in memory.
    pub cache_capacity: usize,
    /// How long to wait for another process holding the database.
    pub busy_timeout: Duration,
}

impl Default for SqliteStoreConfig {
    fn default() -> Self {
        Self {
            max_events_per_channel: DEFAULT_MAX_EVENTS_PER_CHANNEL,
            max_batch: 10_000,
            cache_capacity: 100_000,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Write(Vec<ChannelUpdate>, Reply<()>),
    Get(ChannelId, Reply<Option<ChannelState>>),
    List(ChannelFilter, Reply<Vec<ChannelState>>),
    Events(ChannelId, Reply<Vec<Event>>),
    Delete(ChannelId, Reply<bool>),
    Purge(PurgeFinished, Reply<u64>),
    RecentlyFinished(usize, Reply<Vec<ChannelState>>),
    Integrity(Reply<String>),
}

/// A [`ChannelStore`] in a SQLite file.
#[derive(Debug)]
pub struct SqliteChannelStore {
    tx: Option<mpsc::Sender<Command>>,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteChannelStore {
    /// Opens or creates the store at `path` with default settings.
    ///
    /// This blocks for as long as opening and migrating take (milliseconds); call it at
    /// start-up, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteStoreConfig::default())
    }

    /// Opens or creates the store at `path`.
    ///
    /// A file that is not a database gives [`StoreError::Open`], a database of another
    /// program [`StoreError::Foreign`], one from a newer build
    /// [`StoreError::UnsupportedVersion`]; each names the path.
    pub fn open_with(
        path: impl AsRef<Path>,
        config: SqliteStoreConfig,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(config.busy_timeout).map_err(open_err)?;
        // The first statements read the file, and fail on anything that is not SQLite or
        // not ours, before anything is written to it.
        let version = schema::check(&conn, &shown)?;
        // Switching to WAL takes the file for a moment, and SQLite does not wait for that
        // with the busy timeout: another process opening the same store at the same time
        // makes it fail at once. So it is tried again, within the busy timeout.
        let deadline = std::time::Instant::now() + config.busy_timeout;
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => break r.map_err(open_err)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: shown,
                reason: format!("cannot switch to WAL mode (journal mode is {mode})"),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn, version)?;

        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dt-sqlite-store".into())
            .spawn(move || Worker::new(conn, config).run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the store thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            path,
            thread: Some(thread),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs SQLite's `PRAGMA integrity_check`; `"ok"` when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        self.call(Command::Integrity).await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(make(reply))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for SqliteChannelStore {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued and exit.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[async_trait]
impl ChannelStore for SqliteChannelStore {
    async fn get(&self, id: &ChannelId) -> Result<Option<ChannelState>, StoreError> {
        let id = *id;
        self.call(|r| Command::Get(id, r)).await
    }

    async fn list(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, StoreError> {
        self.call(|r| Command::List(filter, r)).await
    }

    async fn apply_batch(&self, updates: Vec<ChannelUpdate>) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.call(|r| Command::Write(updates, r)).await
    }

    async fn events(&self, id: &ChannelId) -> Result<Vec<Event>, StoreError> {
        let id = *id;
        self.call(|r| Command::Events(id, r)).await
    }

    async fn delete(&self, id: &ChannelId) -> Result<bool, StoreError> {
        let id = *id;
        self.call(|r| Command::Delete(id, r)).await
    }

    async fn purge_finished(&self, purge: PurgeFinished) -> Result<u64, StoreError> {
        self.call(|r| Command::Purge(purge, r)).await
    }

    async fn recently_finished(&self, limit: usize) -> Result<Vec<ChannelState>, StoreError> {
        self.call(|r| Command::RecentlyFinished(limit, r)).await
    }
}

/// What the writer knows of a stored channel, so an update needs no reads.
#[derive(Debug, Clone, Copy)]
struct Meta {
    rowid: i64,
    vouchers: usize,
    results: usize,
    next_seq: i64,
}

/// The thread that owns the connection.
struct Worker {
    conn: Connection,
    config: SqliteStoreConfig,
    cache: HashMap<ChannelId, Meta>,
    durable: bool,
}

const UPSERT: &str = "INSERT INTO channels (initiator, responder, transfer_id, self_peer, other_peer, \
     status, base_cid, selector, sender, recipient, total_size, queued, sent, received, message, \
     received_blocks, queued_blocks, sent_blocks, stages, finished_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) \
     ON CONFLICT (initiator, responder, transfer_id) DO UPDATE SET \
     self_peer = excluded.self_peer, other_peer = excluded.other_peer, status = excluded.status, \
     base_cid = excluded.base_cid, selector = excluded.selector, sender = excluded.sender, \
     recipient = excluded.recipient, total_size = excluded.total_size, queued = excluded.queued, \
     sent = excluded.sent, received = excluded.received, message = excluded.message, \
     received_blocks = excluded.received_blocks, queued_blocks = excluded.queued_blocks, \
     sent_blocks = excluded.sent_blocks, stages = excluded.stages, \
     finished_at = excluded.finished_at \
     RETURNING id";

const FIND: &str =
    "SELECT id FROM channels WHERE initiator = ?1 AND responder = ?2 AND transfer_id = ?3";

fn key(id: &ChannelId) -> (Vec<u8>, Vec<u8>, i64) {
    (
        id.initiator.to_bytes(),
        id.responder.to_bytes(),
        to_sql(id.id.0),
    )
}

impl Worker {
    fn new(conn: Connection, config: SqliteStoreConfig) -> Self {
        conn.set_prepared_statement_cache_capacity(32);
        Self {
            conn,
            config,
            cache: HashMap::new(),
            durable: false,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut queue = vec![first];
            let mut pending_updates = 0;
            while pending_updates < self.config.max_batch {
                match rx.try_recv() {
                    Ok(c) => {
                        if let Command::Write(u, _) = &c {
                            pending_updates += u.len();
                        }
                        queue.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.process(queue);
        }
    }

    /// Handles commands in order; consecutive writes share one transaction.
    fn process(&mut self, queue: Vec<Command>) {
        let mut writes: Vec<(Vec<ChannelUpdate>, Reply<()>)> = Vec::new();
        for cmd in queue {
            match cmd {
                Command::Write(u, r) => writes.push((u, r)),
                other => {
                    self.flush(std::mem::take(&mut writes));
                    self.read(other);
                }
            }
        }
        self.flush(writes);
    }

    fn flush(&mut self, writes: Vec<(Vec<ChannelUpdate>, Reply<()>)>) {
        if writes.is_empty() {
            return;
        }
        let durable = writes
            .iter()
            .flat_map(|(u, _)| u)
            .any(|u| u.durability == Durability::StatusChange);
        let result = self.write_all(writes.iter().flat_map(|(u, _)| u), durable);
        if result.is_err() {
            // The transaction rolled back; what the cache learned from it is wrong.
            self.cache.clear();
        }
        for (_, reply) in writes {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Backend(e.to_string())),
            });
        }
    }

    fn write_all<'a>(
        &mut self,
        updates: impl Iterator<Item = &'a ChannelUpdate>,
        durable: bool,
    ) -> Result<(), rusqlite::Error> {
        if durable != self.durable {
            let mode = if durable { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.durable = durable;
        }
        if self.cache.len() > self.config.cache_capacity {
            self.cache.clear();
        }
        let max_events = self.config.max_events_per_channel as i64;
        let tx = self.conn.transaction()?;
        for u in updates {
            write_one(&tx, &mut self.cache, u, max_events)?;
        }
        tx.commit()
    }

    fn read(&mut self, cmd: Command) {
        match cmd {
            Command::Get(id, r) => {
                let _ = r.send(self.get(&id));
            }
            Command::List(f, r) => {
                let _ = r.send(self.list(f));
            }
            Command::Events(id, r) => {
                let _ = r.send(self.events(&id));
            }
            Command::Delete(id, r) => {
                let _ = r.send(self.delete(&id));
            }
            Command::Purge(p, r) => {
                let _ = r.send(self.purge(p));
            }
            Command::RecentlyFinished(limit, r) => {
                let _ = r.send(self.recently_finished(limit));
            }
            Command::Integrity(r) => {
                let out = self
                    .conn
                    .query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))
                    .map_err(backend);
                let _ = r.send(out);
            }
            Command::Write(..) => {}
        }
    }

    fn rowid(&self, id: &ChannelId) -> Result<Option<i64>, StoreError> {
        let (i, r, t) = key(id);
        self.conn
            .prepare_cached(FIND)
            .and_then(|mut s| s.query_row(params![i, r, t], |row| row.get(0)).optional())
            .map_err(backend)
    }

    fn with_vouchers(&self, rowid: i64, mut st: ChannelState) -> Result<ChannelState, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kind, type_id, node FROM vouchers WHERE channel = ?1 ORDER BY kind, idx",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([rowid], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(backend)?;
        for row in rows {
            let (kind, type_id, node) = row.map_err(backend)?;
            let v =
                codec::voucher_from_parts(type_id, node).map_err(|reason| StoreError::Corrupt {
                    channel: st.channel_id.to_string(),
                    reason: format!("voucher: {reason}"),
                })?;
            if kind == 0 {
                st.vouchers.push(v);
            } else {
                st.voucher_results.push(v);
            }
        }
        Ok(st)
    }

    fn get(&self, id: &ChannelId) -> Result<Option<ChannelState>, StoreError> {
        let (i, r, t) = key(id);
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE initiator = ?1 AND responder = ?2 AND transfer_id = ?3"
        );
        let found = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row(params![i, r, t], state_from_row).optional())
            .map_err(backend)?;
        match found {
            None => Ok(None),
            Some((rowid, st)) => self.with_vouchers(rowid, st?).map(Some),
        }
    }

    fn list(&self, filter: ChannelFilter) -> Result<Vec<ChannelState>, StoreError> {
        let terminal = [
            Status::Completed,
            Status::Failed,
            Status::Cancelled,
            Status::ChannelNotFoundError,
        ]
        .map(|s| to_sql(s.code()));
        let (cond, arg): (&str, Option<rusqlite::types::Value>) = match filter {
            ChannelFilter::All => ("1", None),
            ChannelFilter::InProgress => ("status NOT IN (?1, ?2, ?3, ?4)", None),
            ChannelFilter::Peer(p) => ("other_peer = ?1", Some(p.to_bytes().into())),
        };
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE {cond} ORDER BY id");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(backend)?;
        let rows: Vec<(i64, Result<ChannelState, StoreError>)> = match (filter, arg) {
            (ChannelFilter::InProgress, _) => stmt.query_map(terminal, state_from_row),
            (_, Some(a)) => stmt.query_map([a], state_from_row),
            (_, None) => stmt.query_map([], state_from_row),
        }
        .and_then(|rows| rows.collect())
        .map_err(backend)?;
        rows.into_iter()
            .map(|(rowid, st)| self.with_vouchers(rowid, st?))
            .collect()
    }

    fn events(&self, id: &ChannelId) -> Result<Vec<Event>, StoreError> {
        let Some(rowid) = self.rowid(id)? else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT code, message, timestamp FROM events WHERE channel = ?1 ORDER BY seq",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([rowid], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(backend)?;
        rows.map(|row| {
            let (code, message, ts) = row.map_err(backend)?;
            let code = u32::try_from(code)
                .ok()
                .and_then(|c| EventCode::try_from(c).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    channel: id.to_string(),
                    reason: format!("unknown event code {code}"),
                })?;
            Ok(Event::new(code, message, Timestamp(from_sql(ts))))
        })
        .collect()
    }

    /// The newest finished channels, by the finish index.
    fn recently_finished(&self, limit: usize) -> Result<Vec<ChannelState>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE finished_at IS NOT NULL \
             ORDER BY finished_at DESC, id DESC LIMIT ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(backend)?;
        let rows: Vec<(i64, Result<ChannelState, StoreError>)> = stmt
            .query_map([limit], state_from_row)
            .and_then(|rows| rows.collect())
            .map_err(backend)?;
        rows.into_iter()
            .map(|(rowid, st)| self.with_vouchers(rowid, st?))
            .collect()
    }

    /// Removes the finished channels `p` names, in one transaction, by the finish index.
    fn purge(&mut self, p: PurgeFinished) -> Result<u64, StoreError> {
        let before = p.finished_before.map_or(i64::MIN, |t| to_sql(t.0));
        // LIMIT -1: no limit, so no channel is beyond the newest.
        let keep = p
            .keep_newest
            .map_or(-1, |k| i64::try_from(k).unwrap_or(i64::MAX));
        let tx = self.conn.transaction().map_err(backend)?;
        let ids: Vec<i64> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id FROM channels WHERE finished_at IS NOT NULL AND (finished_at < ?1 \
                     OR id NOT IN (SELECT id FROM channels WHERE finished_at IS NOT NULL \
                     ORDER BY finished_at DESC, id DESC LIMIT ?2))",
                )
                .map_err(backend)?;
            stmt.query_map(params![before, keep], |row| row.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(backend)?
        };
        for sql in [
            "DELETE FROM vouchers WHERE channel = ?1",
            "DELETE FROM events WHERE channel = ?1",
            "DELETE FROM channels WHERE id = ?1",
        ] {
            let mut stmt = tx.prepare_cached(sql).map_err(backend)?;
            for id in &ids {
                stmt.execute([id]).map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)?;
        if !ids.is_empty() {
            self.cache.clear();
        }
        Ok(ids.len() as u64)
    }

    fn delete(&mut self, id: &ChannelId) -> Result<bool, StoreError> {
        self.cache.remove(id);
        let Some(rowid) = self.rowid(id)? else {
            return Ok(false);
        };
        let tx = self.conn.transaction().map_err(backend)?;
        for sql in [
            "DELETE FROM vouchers WHERE channel = ?1",
            "DELETE FROM events WHERE channel = ?1",
            "DELETE FROM channels WHERE id = ?1",
        ] {
            tx.execute(sql, [rowid]).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(true)
    }
}

fn load_meta(tx: &Transaction<'_>, id: &ChannelId) -> Result<Option<Meta>, rusqlite::Error> {
    let (i, r, t) = key(id);
    let Some(rowid) = tx
        .prepare_cached(FIND)?
        .query_row(params![i, r, t], |row| row.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(None);
    };
    let count = |kind: i64| -> Result<usize, rusqlite::Error> {
        tx.prepare_cached(
            "SELECT coalesce(max(idx) + 1, 0) FROM vouchers WHERE channel = ?1 AND kind = ?2",
        )?
        .query_row(params![rowid, kind], |row| row.get::<_, i64>(0))
        .map(|n| n as usize)
    };
    let next_seq = tx
        .prepare_cached("SELECT coalesce(max(seq) + 1, 0) FROM events WHERE channel = ?1")?
        .query_row([rowid], |row| row.get::<_, i64>(0))?;
    Ok(Some(Meta {
        rowid,
        vouchers: count(0)?,
        results: count(1)?,
        next_seq,
    }))
}

fn write_one(
    tx: &Transaction<'_>,
    cache: &mut HashMap<ChannelId, Meta>,
    u: &ChannelUpdate,
    max_events: i64,
) -> Result<(), rusqlite::Error> {
    let st = &u.state;
    let id = st.channel_id;
    let known = match cache.get(&id) {
        Some(m) => Some(*m),
        None => load_meta(tx, &id)?,
    };
    let (i, r, t) = key(&id);
    let rowid: i64 = tx.prepare_cached(UPSERT)?.query_row(
        params![
            i,
            r,
            t,
            st.self_peer.to_bytes(),
            st.other_peer().to_bytes(),
            to_sql(st.status.code()),
            st.base_cid.to_bytes(),
            st.selector.as_bytes(),
            st.sender.to_bytes(),
            st.recipient.to_bytes(),
            to_sql(st.total_size),
            to_sql(st.queued),
            to_sql(st.sent),
            to_sql(st.received),
            st.message,
            to_sql(st.received_blocks_total),
            to_sql(st.queued_blocks_total),
            to_sql(st.sent_blocks_total),
            encode_stages(&st.stages),
            st.status.is_terminal().then(|| to_sql(st.last_updated().0)),
        ],
        |row| row.get(0),
    )?;
    let mut meta = known.unwrap_or(Meta {
        rowid,
        vouchers: 0,
        results: 0,
        next_seq: 0,
    });
    meta.rowid = rowid;
    // Vouchers only ever grow: write the new ones. Should a state ever carry fewer, drop the
    // surplus so the store holds exactly what the state says.
    for (kind, list, stored) in [
        (0i64, &st.vouchers, &mut meta.vouchers),
        (1i64, &st.voucher_results, &mut meta.results),
    ] {
        if list.len() < *stored {
            tx.prepare_cached(
                "DELETE FROM vouchers WHERE channel = ?1 AND kind = ?2 AND idx >= ?3",
            )?
            .execute(params![rowid, kind, list.len() as i64])?;
        }
        for (idx, v) in list.iter().enumerate().skip(*stored) {
            tx.prepare_cached("INSERT INTO vouchers (channel, kind, idx, type_id, node) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![rowid, kind, idx as i64, v.type_id.as_str(), v.node.as_bytes()])?;
        }
        *stored = list.len();
    }
    for e in &u.events {
        tx.prepare_cached("INSERT INTO events (channel, seq, code, message, timestamp) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![rowid, meta.next_seq, i64::from(e.code.code()), e.message, to_sql(e.timestamp.0)])?;
        meta.next_seq += 1;
    }
    if !u.events.is_empty() && meta.next_seq > max_events {
        tx.prepare_cached("DELETE FROM events WHERE channel = ?1 AND seq < ?2")?
            .execute(params![rowid, meta.next_seq - max_events])?;
    }
    cache.insert(id, meta);
    Ok(())
}
