//! `retrieve`: a free retrieval from a Filecoin storage provider (Boost) or any node that
//! serves retrieval proposals (`serve --retrieval`), as lassie's graphsync retriever makes
//! it: a deal proposal as the pull's voucher, verified blocks, then the file or a CAR.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use datatransfer::{Cid, Manager};
use datatransfer_ipld::car::export_car;
use datatransfer_ipld::unixfs::{UnixfsError, export, file_size};
use datatransfer_retrieval::{RetrievalClient, RetrievalRequest};

use crate::node;
use crate::progress::Progress;
use crate::selector;
use crate::transfer::Output;

/// `datatransfer retrieve`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct RetrieveArgs {
    /// The storage provider's multiaddr, ending in /p2p/PEER_ID.
    addr: String,
    /// The payload's root CID.
    cid: String,
    /// Write the file here (UnixFS export of the whole DAG).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write the blocks as a CARv1 file, in traversal order, each block once (as lassie
    /// writes them).
    #[arg(long)]
    car: Option<PathBuf>,
    /// Retrieve only what this selector chooses, written in DAG-JSON (`all`, the default, is
    /// the whole DAG).
    #[arg(long, default_value = "all")]
    selector: String,
    /// Give up when the provider stays silent this long (no answer, no block).
    #[arg(long, default_value = "20s", value_parser = crate::serve::parse_seconds)]
    timeout: Duration,
    /// Keep the blocks (and this node's identity) in this directory; without it they go to
    /// a temporary directory removed at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    store: node::StoreArgs,
}

/// Runs `retrieve`.
pub(crate) async fn retrieve(args: RetrieveArgs, json: bool) -> Result<(), String> {
    let (addr, peer) = node::parse_peer_addr(&args.addr)?;
    let root: Cid = args
        .cid
        .parse()
        .map_err(|e| format!("{:?} is not a CID ({e})", args.cid))?;
    let sel = selector::parse(&args.selector)?;
    if args.output.is_some() && !sel.whole {
        return Err("-o writes a whole file; with a --selector, write a --car".into());
    }
    if args.output.is_none() && args.car.is_none() && args.data_dir.is_none() {
        return Err("nowhere to put the data: give -o FILE, --car FILE or --data-dir DIR".into());
    }
    let output = args.output.as_deref().map(Output::create).transpose()?;
    let car = args.car.as_deref().map(Output::create).transpose()?;
    let temp;
    let mut _claim = None;
    let dir = match args.data_dir {
        Some(d) => {
            let dir = node::data_dir(Some(d))?;
            // The dir's identity and blocks are this node's alone while it runs.
            _claim = Some(crate::control::claim(&dir)?);
            dir
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("datatransfer-retrieve-")
                .tempdir()
                .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
            temp.path().to_owned()
        }
    };
    let blocks = node::open_blocks(&dir, args.store)?;
    // A retrieval is not resumed from a store (lassie's are not either): channels in memory.
    let m = Manager::builder()
        .keypair(node::identity(&dir)?)
        .blockstore(blocks.clone())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let client = RetrievalClient::new(m.clone())
        .await
        .map_err(|e| e.to_string())?;
    m.start().await.map_err(|e| e.to_string())?;
    node::connect(&m, &addr).await?;

    let mut request = RetrievalRequest::new(peer, root).timeout(args.timeout);
    if !sel.whole {
        request = request.selector(sel.cbor.clone());
    }
    let mut progress = Progress::new("retrieve", None, json);
    let mut size_known = !sel.whole;
    let result = client
        .retrieve(&request, |state| {
            if !size_known {
                match file_size(&*blocks, &root) {
                    Ok(n) => {
                        size_known = true;
                        progress.set_total(n);
                    }
                    Err(UnixfsError::Missing(_)) => {}
                    Err(_) => size_known = true,
                }
            }
            progress.update(state.received);
        })
        .await;
    progress.finish();
    m.stop().await.map_err(|e| e.to_string())?;
    let done = result.map_err(|e| e.to_string())?;

    let mut written = None;
    if let Some(out) = output {
        written = Some(out.write(|w| {
            export(&*blocks, &root, w).map_err(|e| match e {
                UnixfsError::Io(e) => format!("cannot write the file: {e}"),
                e => format!("{root} is not a UnixFS file ({e}); write a --car instead"),
            })
        })?);
    }
    let mut car_blocks = None;
    if let Some(out) = car {
        car_blocks = Some(out.write(|w| {
            export_car(&*blocks, root, sel.selector, w)
                .map_err(|e| format!("cannot write the CAR: {e}"))
        })?);
    }
    if json {
        println!(
            "{{\"root\":\"{root}\",\"provider\":\"{peer}\",\"deal\":{},\"received\":{},\"blocks\":{},\"confirmed\":{},\"written\":{},\"car_blocks\":{}}}",
            request.deal_id,
            done.bytes,
            done.blocks,
            done.confirmed,
            written.map_or("null".into(), |n: u64| n.to_string()),
            car_blocks.map_or("null".into(), |n: u64| n.to_string())
        );
        return Ok(());
    }
    println!(
        "{root}: retrieved {} bytes in {} blocks from {peer}",
        done.bytes, done.blocks
    );
    if let (Some(n), Some(p)) = (written, &args.output) {
        println!("  {n} bytes written to {}", p.display());
    }
    if let (Some(n), Some(p)) = (car_blocks, &args.car) {
        println!("  {n} blocks written to {}", p.display());
    }
    Ok(())
}
