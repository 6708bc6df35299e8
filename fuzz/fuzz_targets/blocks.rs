//! Blocks and files a peer or a user hands us: DAG-PB, DAG-CBOR and UnixFS nodes, and CAR
//! files. Decoding may fail, but must not panic, hang or allocate without bound.

#![no_main]

use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::car::CarReader;
use datatransfer_ipld::codec::{self, DAG_CBOR, DAG_PB, RAW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let codec = [DAG_PB, DAG_CBOR, RAW][usize::from(which / 3) % 3];
            let cid = codec::cid_of(codec, body);
            let _ = codec::decode(&cid, body, 1024);
            // As the root of a UnixFS file.
            let store = MemoryBlockstore::new();
            if store.put(&cid, body).is_ok() {
                let _ = datatransfer_ipld::unixfs::file_size(&store, &cid);
                let _ = datatransfer_ipld::unixfs::export(&store, &cid, std::io::sink());
            }
        }
        _ => {
            if let Ok(mut car) = CarReader::new(body) {
                while let Ok(Some(_)) = car.next_block() {}
            }
        }
    }
});
