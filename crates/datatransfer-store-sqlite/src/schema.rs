//! The schema, its version table and the forward migrations run when a store is opened.
//!
//! Every migration runs in its own transaction together with the version bump, so a crash
//! during an upgrade leaves the file at the previous version, to be upgraded again next time.

use rusqlite::{Connection, OptionalExtension};

use datatransfer_types::store::StoreError;

/// Schema version 1: channels and their vouchers.
pub const V1: &str = "
CREATE TABLE dt_schema (version INTEGER NOT NULL);
CREATE TABLE channels (
    id              INTEGER PRIMARY KEY,
    initiator       BLOB NOT NULL,
    responder       BLOB NOT NULL,
    transfer_id     INTEGER NOT NULL,
    self_peer       BLOB NOT NULL,
    other_peer      BLOB NOT NULL,
    status          INTEGER NOT NULL,
    base_cid        BLOB NOT NULL,
    selector        BLOB NOT NULL,
    sender          BLOB NOT NULL,
    recipient       BLOB NOT NULL,
    total_size      INTEGER NOT NULL,
    queued          INTEGER NOT NULL,
    sent            INTEGER NOT NULL,
    received        INTEGER NOT NULL,
    message         TEXT NOT NULL,
    received_blocks INTEGER NOT NULL,
    queued_blocks   INTEGER NOT NULL,
    sent_blocks     INTEGER NOT NULL,
    stages          BLOB NOT NULL,
    UNIQUE (initiator, responder, transfer_id)
);
CREATE TABLE vouchers (
    channel INTEGER NOT NULL REFERENCES channels(id),
    kind    INTEGER NOT NULL, -- 0 voucher, 1 voucher result
    idx     INTEGER NOT NULL,
    type_id TEXT NOT NULL,
    node    BLOB NOT NULL,    -- raw DAG-CBOR, exactly as received
    PRIMARY KEY (channel, kind, idx)
) WITHOUT ROWID;
INSERT INTO dt_schema (version) VALUES (1);
";

/// Schema version 2: the event log, and indexes for listing by status and by peer.
pub const V2: &str = "
CREATE TABLE events (
    channel   INTEGER NOT NULL REFERENCES channels(id),
    seq       INTEGER NOT NULL,
    code      INTEGER NOT NULL,
    message   TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
CREATE INDEX channels_by_status ON channels (status);
CREATE INDEX channels_by_peer ON channels (other_peer);
UPDATE dt_schema SET version = 2;
";

/// Schema version 3: when each finished channel finished (Unix nanoseconds), indexed, for
/// retention. Channels that finished before the upgrade count as finished at the upgrade:
/// retention then keeps them as long as it keeps anything, rather than remove them all at
/// once as if they were ancient.
const V3: &str = "
ALTER TABLE channels ADD COLUMN finished_at INTEGER;
UPDATE channels SET finished_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000000
    WHERE status IN (6, 8, 10);
CREATE INDEX channels_by_finish ON channels (finished_at) WHERE finished_at IS NOT NULL;
UPDATE dt_schema SET version = 3;
";

/// The migrations, in order; migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The newest schema version this build writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// The database file's path, for messages.
fn conn_path(conn: &Connection) -> String {
    conn.path().unwrap_or("<memory>").to_owned()
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Reads the schema version of the database (0 for an empty one) and checks this build
/// can use it, writing nothing: a file that is refused is left as it was.
pub(crate) fn check(conn: &Connection, path: &str) -> Result<i64, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let has_version_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dt_schema'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(open_err)?
        > 0;
    let version = if has_version_table {
        conn.query_row("SELECT version FROM dt_schema", [], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(open_err)?
            .ok_or_else(|| StoreError::Foreign {
                path: path.to_owned(),
                reason: "its version table is empty".into(),
            })?
    } else {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(open_err)?;
        if tables > 0 {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                reason: format!("it holds {tables} schema objects but no dt_schema table"),
            });
        }
        0
    };
    if !(0..=CURRENT_VERSION).contains(&version) {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: CURRENT_VERSION,
        });
    }
    Ok(version)
}

/// Brings a database at `version` (as [`check`] read it) to [`CURRENT_VERSION`].
///
/// Each step takes the write lock first and reads the version again under it: another
/// process opening the same file at the same moment may have migrated it meanwhile.
pub(crate) fn migrate(conn: &mut Connection, mut version: i64) -> Result<(), StoreError> {
    while version < CURRENT_VERSION {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let now: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dt_schema'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .and_then(|tables| {
                if tables == 0 {
                    return Ok(0);
                }
                tx.query_row("SELECT version FROM dt_schema", [], |r| r.get(0))
                    .optional()
                    .map(|v| v.unwrap_or(0))
            })
            .map_err(backend)?;
        if now > CURRENT_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: conn_path(&tx),
                found: now,
                supported: CURRENT_VERSION,
            });
        }
        if now > version {
            // Someone else got there first.
            version = now;
            continue;
        }
        tx.execute_batch(MIGRATIONS[version as usize])
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        version += 1;
    }
    Ok(())
}
