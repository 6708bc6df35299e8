//! CAR files: round trips, CARv2, a real CARv2 fixture, and bad files.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::collections::HashSet;

use datatransfer_ipld::blockstore::{Blockstore, MemoryBlockstore};
use datatransfer_ipld::car::{CarBlockstore, CarError, CarReader, CarWriter, export_car, load_car};
use datatransfer_ipld::codec::{self, BlockError, RAW};
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::unixfs::{ImportOptions, export, import_bytes};

fn sample(store: &MemoryBlockstore) -> datatransfer_ipld::Cid {
    let data: Vec<u8> = (0..(5u32 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let opts = ImportOptions {
        chunk_size: 64 << 10,
        max_links: 16,
        raw_leaves: true,
        ..ImportOptions::default()
    };
    import_bytes(store, &data, &opts).unwrap().root
}

#[test]
fn a_car_round_trip_keeps_every_block() {
    let store = MemoryBlockstore::new();
    let root = sample(&store);
    let mut car = Vec::new();
    let written = export_car(&store, root, Selector::explore_all_recursively(), &mut car).unwrap();
    assert_eq!(written as usize, store.len(), "every block once");

    let fresh = MemoryBlockstore::new();
    assert_eq!(load_car(&fresh, &car[..]).unwrap(), vec![root]);
    let a: HashSet<_> = store.cids().into_iter().collect();
    let b: HashSet<_> = fresh.cids().into_iter().collect();
    assert_eq!(a, b);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    export(&store, &root, &mut x).unwrap();
    export(&fresh, &root, &mut y).unwrap();
    assert!(x == y);

    // The same file as a read-only block store.
    let dir = std::env::temp_dir().join(format!("datatransfer-ipld-car-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.car");
    std::fs::write(&path, &car).unwrap();
    let cs = CarBlockstore::open(&path).unwrap();
    assert_eq!(cs.roots(), &[root]);
    assert_eq!(cs.len(), store.len());
    for cid in store.cids() {
        assert_eq!(cs.get(&cid).unwrap(), store.get(&cid).unwrap());
    }
    assert!(cs.put(&root, b"x").is_err());
    let mut z = Vec::new();
    export(&cs, &root, &mut z).unwrap();
    assert!(z == x);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Wraps a CARv1 payload in a CARv2 envelope (pragma, 40-byte header, some padding).
fn to_v2(v1: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02,
    ];
    let offset = 11u64 + 40 + 5;
    out.extend([0u8; 16]);
    out.extend(offset.to_le_bytes());
    out.extend((v1.len() as u64).to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend([0u8; 5]);
    out.extend(v1);
    out.extend(b"index bytes after the payload are not blocks");
    out
}

#[test]
fn carv2_payloads_are_read() {
    let store = MemoryBlockstore::new();
    let root = sample(&store);
    let mut v1 = Vec::new();
    export_car(&store, root, Selector::explore_all_recursively(), &mut v1).unwrap();
    let fresh = MemoryBlockstore::new();
    assert_eq!(load_car(&fresh, &to_v2(&v1)[..]).unwrap(), vec![root]);
    assert_eq!(fresh.len(), store.len());
}

#[test]
fn the_specs_carv2_fixture_is_read() {
    let bytes = include_bytes!("fixtures/selector-fixtures-adl.car");
    let mut car = CarReader::new(&bytes[..]).unwrap();
    assert_eq!(car.roots().len(), 1);
    let mut n = 0;
    while let Some((cid, data)) = car.next_block().unwrap() {
        assert!(codec::verify(&cid, &data).is_ok());
        n += 1;
    }
    assert_eq!(n, 5, "a root and four leaves");
}

#[test]
fn bad_car_files_are_typed_errors() {
    let leaf = codec::cid_of(RAW, b"leaf");
    let mut car = Vec::new();
    let mut w = CarWriter::new(&mut car, &[leaf]).unwrap();
    w.write_block(&leaf, b"leaf").unwrap();
    w.finish().unwrap();

    // Every cut inside the header or the section is an error, never a panic.
    let header_len = usize::from(car[0]) + 1;
    for cut in 0..car.len() {
        let res = CarReader::new(&car[..cut]).and_then(|mut r| r.next_block());
        match cut {
            c if c == header_len => assert!(matches!(res, Ok(None))),
            _ => assert!(res.is_err(), "cut at {cut}"),
        }
    }
    // A block that does not match its CID.
    let mut bad = car.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let err = CarReader::new(&bad[..]).unwrap().next_block().unwrap_err();
    assert!(
        matches!(err, CarError::Block(BlockError::HashMismatch(_))),
        "{err}"
    );
    // Not a CAR header; a future version; an absurd section length.
    assert!(matches!(
        CarReader::new(&[0x02, 0xa0, 0xa0][..]),
        Err(CarError::InvalidHeader(_))
    ));
    let body = [
        0xa2, 0x65, b'r', b'o', b'o', b't', b's', 0x80, 0x67, b'v', b'e', b'r', b's', b'i', b'o',
        b'n', 0x03,
    ];
    let v3 = [&[body.len() as u8][..], &body].concat();
    assert!(matches!(
        CarReader::new(&v3[..]),
        Err(CarError::UnsupportedVersion(3))
    ));
    let mut huge = car[..header_len].to_vec();
    huge.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        CarReader::new(&huge[..]).unwrap().next_block(),
        Err(CarError::TooLarge { .. })
    ));
}
