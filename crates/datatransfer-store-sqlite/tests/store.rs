//! The SQLite store against the shared conformance suite, real files, bad files and an old
//! schema.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use datatransfer_store_sqlite::{SqliteChannelStore, SqliteStoreConfig, schema};
use datatransfer_types::store::conformance::{self, sample_state};
use datatransfer_types::store::{ChannelFilter, ChannelStore, ChannelUpdate, StoreError};
use datatransfer_types::{Event, EventCode, Status, Timestamp};

#[tokio::test]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicU32::new(0);
    let config = SqliteStoreConfig {
        max_events_per_channel: 40,
        ..SqliteStoreConfig::default()
    };
    conformance::run_all(
        || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = dir.path().join(format!("store-{n}.sqlite"));
            let config = config.clone();
            async move { SqliteChannelStore::open_with(path, config).unwrap() }
        },
        40,
    )
    .await;
}

#[tokio::test]
async fn data_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.sqlite");
    let st = sample_state(5, Status::Ongoing);
    {
        let store = SqliteChannelStore::open(&path).unwrap();
        let ev = Event::new(EventCode::Accept, "", Timestamp(9));
        store
            .apply(ChannelUpdate::new(st.clone(), vec![ev]))
            .await
            .unwrap();
    }
    let store = SqliteChannelStore::open(&path).unwrap();
    assert_eq!(store.get(&st.channel_id).await.unwrap(), Some(st.clone()));
    assert_eq!(
        store.list(ChannelFilter::InProgress).await.unwrap(),
        vec![st.clone()]
    );
    assert_eq!(store.events(&st.channel_id).await.unwrap().len(), 1);
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
}

#[tokio::test]
async fn concurrent_writers_are_all_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteChannelStore::open(dir.path().join("c.sqlite")).unwrap());
    let mut tasks = Vec::new();
    for n in 0..64u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut st = sample_state(n, Status::Ongoing);
            for k in 0..20 {
                st.received = k;
                store
                    .apply(ChannelUpdate::new(st.clone(), vec![]))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.list(ChannelFilter::All).await.unwrap();
    assert_eq!(all.len(), 64);
    assert!(all.iter().all(|s| s.received == 19));
}

/// Opens a file that must be refused, and checks the refusal left it byte for byte as it was
/// (and made no write-ahead log beside it).
fn open_err(path: &std::path::Path) -> StoreError {
    let before = std::fs::read(path).unwrap();
    let err = SqliteChannelStore::open(path).unwrap_err();
    assert!(
        std::fs::read(path).unwrap() == before,
        "{err}: the file was changed"
    );
    let wal = path.with_extension("sqlite-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "{err}: a write-ahead log was written"
    );
    err
}

#[test]
fn a_file_that_is_not_a_database_is_a_typed_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.sqlite");
    std::fs::write(&path, vec![0xa5u8; 8192]).unwrap();
    let err = open_err(&path);
    assert!(
        matches!(&err, StoreError::Open { path: p, .. } if p.contains("garbage.sqlite")),
        "{err}"
    );
    assert!(err.to_string().contains("garbage.sqlite"));
}

#[test]
fn a_truncated_database_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.sqlite");
    drop(SqliteChannelStore::open(&path).unwrap());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..100]).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("cut.sqlite{suffix}")));
    }
    let err = open_err(&path);
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
        .unwrap();
    drop(conn);
    let err = open_err(&path);
    assert!(
        matches!(&err, StoreError::Foreign { path: p, .. } if p.contains("foreign.sqlite")),
        "{err}"
    );
    // And nothing was added to it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.sqlite");
    drop(SqliteChannelStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE dt_schema SET version = 99", [])
        .unwrap();
    drop(conn);
    let err = open_err(&path);
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 99, supported, .. } if supported == schema::CURRENT_VERSION),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupt_record_is_a_typed_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.sqlite");
    let st = sample_state(2, Status::Ongoing);
    {
        let store = SqliteChannelStore::open(&path).unwrap();
        store
            .apply(ChannelUpdate::new(st.clone(), vec![]))
            .await
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE channels SET stages = x'ff00', status = 77", [])
        .unwrap();
    drop(conn);
    let store = SqliteChannelStore::open(&path).unwrap();
    let err = store.get(&st.channel_id).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(store.list(ChannelFilter::All).await.is_err());
}

/// A database as schema version 1 left it (built here from the v1 SQL, with a channel row
/// and a voucher written the way version 1 wrote them) opens under the current version with
/// its data intact.
#[tokio::test]
async fn a_version_1_database_migrates_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sqlite");
    let st = sample_state(3, Status::ResponderPaused);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::V1).unwrap();
        insert_channel(&conn, &st);
        for (kind, list) in [(0, &st.vouchers), (1, &st.voucher_results)] {
            for (idx, v) in list.iter().enumerate() {
                conn.execute(
                    "INSERT INTO vouchers (channel, kind, idx, type_id, node) VALUES (1, ?1, ?2, ?3, ?4)",
                    rusqlite::params![kind, idx as i64, v.type_id.as_str(), v.node.as_bytes()],
                )
                .unwrap();
            }
        }
        let v: i64 = conn
            .query_row("SELECT version FROM dt_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
    }
    let store = SqliteChannelStore::open(&path).unwrap();
    assert_eq!(store.get(&st.channel_id).await.unwrap(), Some(st.clone()));
    // Version 2 features work on the migrated file.
    let ev = Event::new(EventCode::ResumeResponder, "", Timestamp(1));
    let mut next = st.clone();
    next.status = Status::Ongoing;
    store
        .apply(ChannelUpdate::new(next.clone(), vec![ev.clone()]))
        .await
        .unwrap();
    assert_eq!(store.events(&st.channel_id).await.unwrap(), vec![ev]);
    assert_eq!(
        store
            .list(ChannelFilter::Peer(st.other_peer()))
            .await
            .unwrap(),
        vec![next]
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("SELECT version FROM dt_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::CURRENT_VERSION);
}

/// Version 1's encoding of the stage log, written out independently of the store's codec.
fn stages_v1(st: &datatransfer_types::ChannelState) -> Vec<u8> {
    use datatransfer_types::cbor::{MAJOR_ARRAY, MAJOR_UINT, write_header, write_text};
    let mut out = Vec::new();
    write_header(&mut out, MAJOR_ARRAY, st.stages.stages.len() as u64);
    for s in &st.stages.stages {
        write_header(&mut out, MAJOR_ARRAY, 5);
        write_text(&mut out, s.name.as_bytes());
        write_text(&mut out, s.description.as_bytes());
        write_header(&mut out, MAJOR_UINT, s.created.0);
        write_header(&mut out, MAJOR_UINT, s.updated.0);
        write_header(&mut out, MAJOR_ARRAY, s.logs.len() as u64);
        for l in &s.logs {
            write_header(&mut out, MAJOR_ARRAY, 2);
            write_text(&mut out, l.log.as_bytes());
            write_header(&mut out, MAJOR_UINT, l.updated.0);
        }
    }
    out
}

/// The bytes a store takes on disk: the database and its write-ahead log.
fn on_disk(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("sqlite-wal");
    [path.to_owned(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Retention keeps a node's store bounded however many channels finish: 100,000 finished
/// channels (each with vouchers, a result and three events), the newest 1,000 kept, in a
/// file that stays under 8 MiB (the same channels kept would take about 100 times that).
#[tokio::test]
async fn with_retention_the_file_stays_small_across_100_000_finished_channels() {
    use datatransfer_types::store::PurgeFinished;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.sqlite");
    let store = SqliteChannelStore::open(&path).unwrap();
    let keep = PurgeFinished {
        finished_before: None,
        keep_newest: Some(1_000),
    };
    let mut largest = 0;
    for batch in 0..100u64 {
        let updates = (0..1_000u64)
            .map(|i| {
                let n = 1_000 + batch * 1_000 + i;
                let st = sample_state(n, [Status::Completed, Status::Failed][(n % 2) as usize]);
                let events = [EventCode::Open, EventCode::Accept, EventCode::Complete]
                    .map(|c| Event::new(c, "", Timestamp(n)))
                    .to_vec();
                ChannelUpdate::new(st, events)
            })
            .collect();
        store.apply_batch(updates).await.unwrap();
        let removed = store.purge_finished(keep).await.unwrap();
        assert_eq!(removed, if batch == 0 { 0 } else { 1_000 }, "batch {batch}");
        largest = largest.max(on_disk(&path));
    }
    let left = store.list(ChannelFilter::All).await.unwrap();
    assert_eq!(left.len(), 1_000);
    // The newest are the ones kept.
    assert!(
        left.iter().all(|s| s.channel_id.id.0 >= 100_000),
        "oldest kept"
    );
    eprintln!("100,000 finished channels, 1,000 kept: at most {largest} bytes on disk");
    assert!(largest < 8 << 20, "the store took {largest} bytes");
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
}

/// Writes `st` into a database at schema version 2 (V1 then V2), as an older build did.
fn write_v2(path: &std::path::Path, st: &datatransfer_types::ChannelState) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(schema::V1).unwrap();
    conn.execute_batch(schema::V2).unwrap();
    insert_channel(&conn, st);
}

/// Writes `st`'s row as the version 1 and 2 schemas hold it (the same columns), with the
/// version 1 stage log encoding.
fn insert_channel(conn: &rusqlite::Connection, st: &datatransfer_types::ChannelState) {
    let id = st.channel_id;
    conn.execute(
        "INSERT INTO channels (initiator, responder, transfer_id, self_peer, other_peer, status, \
         base_cid, selector, sender, recipient, total_size, queued, sent, received, message, \
         received_blocks, queued_blocks, sent_blocks, stages) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        rusqlite::params![
            id.initiator.to_bytes(),
            id.responder.to_bytes(),
            id.id.0 as i64,
            st.self_peer.to_bytes(),
            st.other_peer().to_bytes(),
            st.status.code() as i64,
            st.base_cid.to_bytes(),
            st.selector.as_bytes(),
            st.sender.to_bytes(),
            st.recipient.to_bytes(),
            st.total_size as i64,
            st.queued as i64,
            st.sent as i64,
            st.received as i64,
            st.message,
            st.received_blocks_total as i64,
            st.queued_blocks_total as i64,
            st.sent_blocks_total as i64,
            // The v1 stage log: [[name, description, created, updated, [[log, time]...]]...]
            stages_v1(st),
        ],
    )
    .unwrap();
}

/// Channels that finished before the upgrade to schema 3 count as finished at the upgrade:
/// a retention of an hour keeps them, rather than treat them as ancient.
#[tokio::test]
async fn channels_finished_before_the_upgrade_are_kept_by_a_time_limit() {
    use datatransfer_types::store::PurgeFinished;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.sqlite");
    // Finished at Timestamp(4): the epoch, long ago.
    let st = sample_state(3, Status::Completed);
    write_v2(&path, &st);
    let store = SqliteChannelStore::open(&path).unwrap();
    let an_hour_ago = Timestamp::from_system_time(
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    let keep_an_hour = PurgeFinished {
        finished_before: Some(an_hour_ago),
        keep_newest: None,
    };
    assert_eq!(store.purge_finished(keep_an_hour).await.unwrap(), 0);
    let kept = store.get(&st.channel_id).await.unwrap().unwrap();
    assert_eq!((kept.status, kept.sent), (Status::Completed, st.sent));
    let keep_none = PurgeFinished {
        finished_before: None,
        keep_newest: Some(0),
    };
    assert_eq!(store.purge_finished(keep_none).await.unwrap(), 1);
    assert_eq!(store.get(&st.channel_id).await.unwrap(), None);
}

/// Several processes (here threads, each with its own connection) opening one old store at
/// the same moment: each migration step runs once, and every open succeeds.
#[test]
fn stores_opened_at_once_migrate_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        write_v2(&path, &sample_state(round, Status::Ongoing));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteChannelStore::open(&path).map(drop))
            })
            .collect();
        for o in opens {
            o.join().unwrap().unwrap();
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("SELECT version FROM dt_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::CURRENT_VERSION);
    }
}
