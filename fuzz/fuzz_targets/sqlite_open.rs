//! A channel store file corrupted on disk: a real store's database (three channels and their
//! events) with bytes overwritten and maybe cut short, or arbitrary bytes. Opening it must
//! give a typed error and leave the file as it was, or open and answer every read with
//! data or a typed error; never a panic or a hang.

#![no_main]

use std::sync::OnceLock;

use datatransfer_store_sqlite::SqliteChannelStore;
use datatransfer_types::store::conformance::sample_state;
use datatransfer_types::store::{ChannelFilter, ChannelStore, ChannelUpdate};
use datatransfer_types::{Event, EventCode, Status, Timestamp};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

/// The bytes of a store holding three channels, closed cleanly (no WAL left).
fn template() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("template.sqlite");
        {
            let store = SqliteChannelStore::open(&path).expect("open");
            for (n, status) in [
                (1, Status::Ongoing),
                (2, Status::Completed),
                (3, Status::ResponderPaused),
            ] {
                let st = sample_state(n, status);
                let event = Event::new(EventCode::Open, "opened", Timestamp(n));
                block_on(store.apply(ChannelUpdate::new(st, vec![event]))).expect("apply");
            }
        }
        std::fs::read(&path).expect("read")
    })
}

fuzz_target!(|input: (bool, Vec<(u32, u8)>, u32, Vec<u8>)| {
    let (raw, patches, cut, bytes) = input;
    let file = if raw {
        bytes
    } else {
        let mut file = template().to_vec();
        let len = file.len();
        for (at, b) in patches {
            file[at as usize % len] = b;
        }
        if cut > 0 {
            file.truncate(cut as usize % len);
        }
        file
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite");
    std::fs::write(&path, &file).expect("write");
    match SqliteChannelStore::open(&path) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let after = std::fs::read(&path).expect("read back");
            assert!(after == file, "a refused file was changed: {e}");
        }
        Ok(store) => {
            if let Ok(channels) = block_on(store.list(ChannelFilter::All)) {
                for st in channels {
                    let _ = block_on(store.get(&st.channel_id));
                    let _ = block_on(store.events(&st.channel_id));
                }
            }
            let _ = block_on(store.integrity_check());
        }
    }
});
