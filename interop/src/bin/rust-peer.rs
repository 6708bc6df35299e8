//! Our side as a process of its own, so a test can kill it with SIGKILL mid-transfer and
//! start it again: a Manager with a SQLite channel store and a block store on disk, pulling
//! one DAG from a provider, or pushing one to a receiver (a storage deal's direction).
//! Started again with the same arguments, it resumes the channel it finds in its store
//! instead of opening a new one.
//!
//! ```text
//! rust-peer --key HEX --data-dir DIR --from MULTIADDR --root CID [--deal N] [--rate BYTES]
//! rust-peer --key HEX --data-dir DIR --to MULTIADDR --size BYTES --seed N [--deal N] [--rate BYTES]
//! ```
//!
//! A push sends the seeded random file `datatransfer_interop::data::import_random` makes
//! (imported into its store on every start: the same blocks each time). `--rate` limits the
//! bytes received (pull) or sent (push) per second.
//!
//! Prints JSON lines: `{"type":"channel","chid":{..},"root":CID,"resumed":bool}`, then
//! `{"type":"progress","received":N,"sent":N}` about every MiB moved, then
//! `{"type":"done","status":"Completed","received":N,"sent":N,"message":".."}`; exits 0 once
//! the channel has ended and the blocks are flushed, 1 on a usage error.

#![allow(clippy::unwrap_used)] // A test program: failing loudly is the point.

use std::sync::Arc;

use datatransfer::{Cid, Multiaddr, PeerId, all_selector};
use datatransfer_interop::data::import_random;
use datatransfer_interop::go::{chid_json, keypair};
use datatransfer_interop::rust::{RustNodeOptions, fast_config, node, voucher};
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::fsstore::FsBlockstore;
use serde_json::json;

/// What the process moves, and with whom.
enum Transfer {
    /// Pull `root` from the peer at `from`.
    Pull { from: Multiaddr, root: Cid },
    /// Push `size` seeded random bytes to the peer at `to`.
    Push {
        to: Multiaddr,
        size: usize,
        seed: u64,
    },
}

struct Args {
    key: [u8; 32],
    data_dir: std::path::PathBuf,
    transfer: Transfer,
    deal: u64,
    rate: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut key, mut dir, mut from, mut root, mut deal, mut rate) =
        (None, None, None, None, 1, None);
    let (mut to, mut size, mut seed) = (None, None, None);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--key" => {
                let bytes = hex::decode(&value).map_err(|e| format!("--key: {e}"))?;
                key = Some(<[u8; 32]>::try_from(bytes).map_err(|_| "--key: 32 bytes")?);
            }
            "--data-dir" => dir = Some(value.into()),
            "--from" => from = Some(value.parse().map_err(|e| format!("--from: {e}"))?),
            "--root" => root = Some(value.parse().map_err(|e| format!("--root: {e}"))?),
            "--deal" => deal = value.parse().map_err(|e| format!("--deal: {e}"))?,
            "--rate" => rate = Some(value.parse().map_err(|e| format!("--rate: {e}"))?),
            "--to" => to = Some(value.parse().map_err(|e| format!("--to: {e}"))?),
            "--size" => size = Some(value.parse().map_err(|e| format!("--size: {e}"))?),
            "--seed" => seed = Some(value.parse().map_err(|e| format!("--seed: {e}"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let transfer = match (from, root, to, size, seed) {
        (Some(from), Some(root), None, None, None) => Transfer::Pull { from, root },
        (None, None, Some(to), Some(size), Some(seed)) => Transfer::Push { to, size, seed },
        _ => return Err("either --from and --root, or --to, --size and --seed".into()),
    };
    Ok(Args {
        key: key.ok_or("--key is required")?,
        data_dir: dir.ok_or("--data-dir is required")?,
        transfer,
        deal,
        rate,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let addr = match &args.transfer {
        Transfer::Pull { from, .. } => from,
        Transfer::Push { to, .. } => to,
    };
    let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
        eprintln!("error: the peer's address needs a /p2p/ part");
        std::process::exit(1);
    };
    let peer: PeerId = peer;
    std::fs::create_dir_all(&args.data_dir).unwrap();
    let blocks = Arc::new(FsBlockstore::open(args.data_dir.join("blocks"), true).unwrap());
    let root = match &args.transfer {
        Transfer::Pull { root, .. } => *root,
        Transfer::Push { size, seed, .. } => import_random(&*blocks, *size, *seed).0,
    };
    let mut config = fast_config();
    match &args.transfer {
        Transfer::Pull { .. } => config.transport.graphsync.max_inbound_rate = args.rate,
        Transfer::Push { .. } => config.transport.graphsync.max_outbound_rate = args.rate,
    }
    let sqlite = args.data_dir.join("channels.sqlite");
    let rust = node(RustNodeOptions {
        sqlite: Some(&sqlite),
        store: Some(blocks.clone() as Arc<dyn Blockstore>),
        keypair: Some(keypair(args.key)),
        known_peers: vec![(peer, addr.clone())],
        config,
        ..RustNodeOptions::default()
    })
    .await;
    let mut sub = rust.manager.subscribe().await.unwrap();
    let resumed = rust
        .manager
        .in_progress_channels()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.base_cid == root)
        .map(|c| c.channel_id);
    let chid = match resumed {
        Some(c) => c,
        None => {
            rust.manager.connect(addr).await.unwrap();
            let voucher = voucher(args.deal, 0);
            match &args.transfer {
                Transfer::Pull { .. } => rust
                    .manager
                    .open_pull_channel(peer, voucher, root, all_selector())
                    .await
                    .unwrap(),
                Transfer::Push { .. } => rust
                    .manager
                    .open_push_channel(peer, voucher, root, all_selector())
                    .await
                    .unwrap(),
            }
        }
    };
    println!(
        "{}",
        json!({"type": "channel", "chid": chid_json(&chid), "root": root.to_string(),
               "resumed": resumed.is_some()})
    );
    let mut reported = 0u64;
    // A channel restarted by `start` may have ended before we subscribed.
    let already = rust
        .manager
        .channel_state(chid)
        .await
        .unwrap()
        .filter(|st| st.status.is_terminal());
    let last = loop {
        if let Some(st) = already {
            break st;
        }
        let Some((_, st)) = sub.next().await else {
            panic!("the manager stopped");
        };
        if st.channel_id != chid {
            continue;
        }
        let moved = st.received + st.sent;
        if moved >= reported + (1 << 20) {
            reported = moved;
            println!(
                "{}",
                json!({"type": "progress", "received": st.received, "sent": st.sent})
            );
        }
        if st.status.is_terminal() {
            break st;
        }
    };
    blocks.flush().unwrap();
    println!(
        "{}",
        json!({"type": "done", "status": format!("{:?}", last.status),
               "received": last.received, "sent": last.sent, "message": last.message})
    );
    rust.manager.stop().await.unwrap();
}
