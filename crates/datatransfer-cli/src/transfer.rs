//! `pull` and `push`: one node on the data dir, one channel per DAG, followed to its end
//! with a progress bar. Both resume a channel a previous run left in the store.

use std::path::{Path, PathBuf};

use clap::Args;
use datatransfer::{Cid, Status};
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::car::export_car;
use datatransfer_ipld::selector::Selector;
use datatransfer_ipld::traversal::{NoVisitor, TraversalConfig, walk};
use datatransfer_ipld::unixfs::{UnixfsError, export, file_size};

use crate::node::{self, Ended};
use crate::progress::Progress;
use crate::selector;

/// `datatransfer pull`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The serving node's multiaddr, ending in /p2p/PEER_ID.
    addr: String,
    /// The root CID to pull.
    cid: String,
    /// Write the file here (UnixFS export of the whole DAG).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write the blocks the selector chose here, as a CARv1 file.
    #[arg(long)]
    car: Option<PathBuf>,
    /// Pull only what this selector chooses, written in DAG-JSON (`all`, the default, is the
    /// whole DAG).
    #[arg(long, default_value = "all")]
    selector: String,
    /// Receive at most about this many bytes per second (B, KiB, MiB, GiB): the node reads
    /// from the network at that rate, so TCP slows the sender down.
    #[arg(long, value_parser = crate::parse_size)]
    limit_rate: Option<u64>,
    /// The token the server asks for.
    #[arg(long)]
    token: Option<String>,
    /// Where blocks, channels and the identity key live (the platform's data dir if not
    /// given).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    store: node::StoreArgs,
}

/// `datatransfer push`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The receiving node's multiaddr, ending in /p2p/PEER_ID.
    addr: String,
    /// A file (imported as UnixFS), a CAR file (sent as it is, one channel per root) or a
    /// directory (each file in it).
    input: PathBuf,
    /// Send at most about this many bytes per second (B, KiB, MiB, GiB).
    #[arg(long, value_parser = crate::parse_size)]
    limit_rate: Option<u64>,
    /// The token the receiver asks for.
    #[arg(long)]
    token: Option<String>,
    /// Where blocks, channels and the identity key live (the platform's data dir if not
    /// given).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    store: node::StoreArgs,
}

/// A file that appears at `path` only when complete. [`Output::create`] checks before the
/// transfer that the directory takes a new file (and leaves nothing behind); [`Output::write`]
/// writes it next to `path` under a name of its own (`.NAME.datatransfer-partial`), then moves
/// it into place. A run killed while writing leaves that one file, which the next run of the
/// same command reuses; two runs writing the same output at once are refused by a lock.
pub(crate) struct Output {
    path: PathBuf,
    partial: PathBuf,
}

impl Output {
    pub(crate) fn create(path: &Path) -> Result<Self, String> {
        if path.is_dir() {
            return Err(format!("{} is a directory", path.display()));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| format!("{} names no file", path.display()))?;
        // A probe, deleted at once: a transfer that is killed leaves no file.
        tempfile::Builder::new()
            .prefix(".datatransfer-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        let mut partial = std::ffi::OsString::from(".");
        partial.push(name);
        partial.push(".datatransfer-partial");
        Ok(Self {
            path: path.to_owned(),
            partial: dir.join(partial),
        })
    }

    /// Writes with `fill`, then moves the file into place.
    pub(crate) fn write(
        self,
        fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<u64, String>,
    ) -> Result<u64, String> {
        let failed = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.partial)
            .map_err(failed)?;
        // Truncated only once it is ours: another run may be writing it.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another datatransfer is writing {} right now",
                    self.path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
        }
        file.set_len(0).map_err(failed)?;
        let written = (|| {
            let mut w = std::io::BufWriter::new(&file);
            let n = fill(&mut w)?;
            std::io::Write::flush(&mut w)
                .and_then(|()| file.sync_all())
                .map_err(failed)?;
            Ok(n)
        })();
        // Moved into place while still locked, so no other run truncates it meanwhile.
        let result = written.and_then(|n| {
            std::fs::rename(&self.partial, &self.path)
                .map(|()| n)
                .map_err(failed)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&self.partial);
        }
        result
    }
}

/// Runs `pull`.
pub(crate) async fn pull(args: PullArgs, json: bool) -> Result<(), String> {
    let (addr, peer) = node::parse_peer_addr(&args.addr)?;
    let root: Cid = args
        .cid
        .parse()
        .map_err(|e| format!("{:?} is not a CID ({e})", args.cid))?;
    let sel = selector::parse(&args.selector)?;
    if args.output.is_some() && !sel.whole {
        return Err("-o writes a whole file; with a --selector, write a --car".into());
    }
    // Fail now, not after the transfer, if the outputs cannot be written.
    let output = args.output.as_deref().map(Output::create).transpose()?;
    let car = args.car.as_deref().map(Output::create).transpose()?;
    let dir = node::data_dir(args.data_dir)?;
    let claim = crate::control::claim(&dir)?;

    let (m, blocks) = node::manager(&dir, None, args.limit_rate, args.store).await?;
    let left = node::left_channel(&m, peer, root, true).await?;
    // Nothing to fetch: an earlier run got every block (it may have been stopped after the
    // channel completed, before the file was written).
    let (id, received) = if left.is_none() && have_all(&*blocks, root, &sel.selector) {
        m.stop().await.map_err(|e| e.to_string())?;
        if json {
            println!("{{\"root\":\"{root}\",\"local\":true}}");
        } else {
            println!(
                "{root}: every block is already in {}",
                dir.join("blocks").display()
            );
        }
        (None, 0)
    } else {
        let voucher = node::voucher(args.token)?;
        let (id, received) =
            fetch(&m, &addr, left, root, voucher, &sel, json, &*blocks, claim).await?;
        (Some(id), received)
    };

    let mut written = None;
    if let Some(out) = output {
        let n = out.write(|w| {
            export(&*blocks, &root, w).map_err(|e| match e {
                UnixfsError::Io(e) => format!("cannot write the file: {e}"),
                e => format!("{root} is not a UnixFS file ({e}); write a --car instead"),
            })
        })?;
        written = Some(n);
    }
    let mut car_blocks = None;
    if let Some(out) = car {
        let n = out.write(|w| {
            export_car(&*blocks, root, sel.selector, w)
                .map_err(|e| format!("cannot write the CAR: {e}"))
        })?;
        car_blocks = Some(n);
    }
    if json {
        let channel = id.map_or(String::new(), |id| format!("\"channel\":\"{id}\","));
        println!(
            "{{\"root\":\"{root}\",{channel}\"received\":{received},\"written\":{},\"car_blocks\":{}}}",
            written.map_or("null".into(), |n| n.to_string()),
            car_blocks.map_or("null".into(), |n| n.to_string())
        );
        return Ok(());
    }
    if id.is_some() {
        println!("{root}: {received} bytes received");
    }
    if let (Some(n), Some(p)) = (written, &args.output) {
        println!("  {n} bytes written to {}", p.display());
    }
    if let (Some(n), Some(p)) = (car_blocks, &args.car) {
        println!("  {n} blocks written to {}", p.display());
    }
    if written.is_none() && car_blocks.is_none() {
        println!("  kept in {}", dir.join("blocks").display());
    }
    Ok(())
}

/// Pulls over the network: resumes `left` or opens a channel with the peer at `addr`, and
/// follows it to its end with a progress bar. Returns the channel and the bytes it received.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    m: &datatransfer::Manager,
    addr: &datatransfer::Multiaddr,
    left: Option<datatransfer::ChannelState>,
    root: Cid,
    voucher: datatransfer::Voucher,
    sel: &selector::Parsed,
    json: bool,
    blocks: &dyn Blockstore,
    claim: crate::control::Claim,
) -> Result<(datatransfer::ChannelId, u64), String> {
    let mut interrupts = node::Interrupts::new()?;
    let mut events = m.subscribe().await.map_err(|e| e.to_string())?;
    let control = crate::control::start(claim, m.clone()).await?;
    let peer = node::connect(m, addr).await?;
    m.start().await.map_err(|e| e.to_string())?;
    let (id, resumed) =
        node::open_or_resume(m, peer, left, root, true, voucher, sel.cbor.clone()).await?;
    let mut progress = Progress::new("pull", None, json);
    if resumed {
        progress.say(format!(
            "resuming the pull of {root} left by an earlier run"
        ));
    }
    if json {
        println!("{{\"channel\":\"{id}\",\"resumed\":{resumed}}}");
    }
    // The size, once the root has arrived, if the DAG is a whole UnixFS file.
    let mut size_known = !sel.whole;
    let total = || {
        if size_known {
            return None;
        }
        match file_size(blocks, &root) {
            Ok(n) => {
                size_known = true;
                Some(n)
            }
            Err(UnixfsError::Missing(_)) => None,
            Err(_) => {
                size_known = true;
                None
            }
        }
    };
    let ended = node::follow(&mut events, id, &mut progress, &mut interrupts, total).await;
    progress.finish();
    control.finish().await;
    m.stop().await.map_err(|e| e.to_string())?;
    let Ended { state, error } = ended?;
    if state.status != Status::Completed {
        return Err(format!(
            "the pull of {root} ended {:?}: {}",
            state.status,
            node::explain(id, &error)
        ));
    }
    Ok((id, state.received))
}

/// Whether `store` holds every block `selector` reaches from `root` (blocks there were
/// verified when they arrived, so they are not hashed again).
fn have_all(store: &dyn Blockstore, root: Cid, selector: &Selector) -> bool {
    let config = TraversalConfig {
        verify: false,
        ..TraversalConfig::default()
    };
    walk(store, root, selector.clone(), config, &mut NoVisitor).is_ok()
}

/// Runs `push`.
pub(crate) async fn push(args: PushArgs, json: bool) -> Result<(), String> {
    let (addr, peer) = node::parse_peer_addr(&args.addr)?;
    let dir = node::data_dir(args.data_dir)?;
    let claim = crate::control::claim(&dir)?;
    let (m, blocks) = node::manager(&dir, None, args.limit_rate, args.store).await?;
    let inputs = node::import_inputs(&*blocks, std::slice::from_ref(&args.input))?;
    if inputs.is_empty() {
        return Err(format!("nothing to push in {}", args.input.display()));
    }
    let mut lefts = Vec::with_capacity(inputs.len());
    for input in &inputs {
        lefts.push(node::left_channel(&m, peer, input.root, false).await?);
    }
    let mut events = m.subscribe().await.map_err(|e| e.to_string())?;
    let control = crate::control::start(claim, m.clone()).await?;
    node::connect(&m, &addr).await?;
    m.start().await.map_err(|e| e.to_string())?;
    let voucher = node::voucher(args.token)?;
    let mut interrupts = node::Interrupts::new()?;
    let mut result = Ok(());
    for (input, left) in inputs.into_iter().zip(lefts) {
        let (id, resumed) = node::open_or_resume(
            &m,
            peer,
            left,
            input.root,
            false,
            voucher.clone(),
            datatransfer::all_selector(),
        )
        .await?;
        let mut progress = Progress::new("push", Some(input.size), json);
        if resumed {
            progress.say(format!(
                "resuming the push of {} left by an earlier run",
                input.root
            ));
        }
        let ended = node::follow(&mut events, id, &mut progress, &mut interrupts, || None).await;
        progress.finish();
        let Ended { state, error } = match ended {
            Ok(e) => e,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if state.status != Status::Completed {
            result = Err(format!(
                "the push of {} ended {:?}: {}",
                input.path.display(),
                state.status,
                node::explain(id, &error)
            ));
            break;
        }
        if json {
            println!(
                "{{\"pushed\":{:?},\"root\":\"{}\",\"channel\":\"{id}\",\"sent\":{}}}",
                input.path.display().to_string(),
                input.root,
                state.sent
            );
        } else {
            println!(
                "{}: {} pushed ({} bytes)",
                input.root,
                input.path.display(),
                state.sent
            );
        }
    }
    control.finish().await;
    m.stop().await.map_err(|e| e.to_string())?;
    result
}

#[cfg(test)]
mod tests {
    use super::Output;

    fn fill(
        bytes: &'static [u8],
    ) -> impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<u64, String> {
        move |w| {
            std::io::Write::write_all(w, bytes).map_err(|e| e.to_string())?;
            Ok(bytes.len() as u64)
        }
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_output_leaves_nothing_until_written_and_replaces_a_killed_runs_partial() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.bin");
        let out = Output::create(&path).expect("writable");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        // What a run killed while writing would have left: longer than the real file.
        std::fs::write(&out.partial, vec![7u8; 4096]).expect("stale partial");
        assert_eq!(out.write(fill(b"hello")), Ok(5));
        assert_eq!(std::fs::read(&path).expect("written"), b"hello");
        assert_eq!(names(dir.path()), ["out.bin"]);
    }

    #[test]
    fn two_runs_writing_one_output_at_once_are_refused_and_a_failed_write_cleans_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.bin");
        let first = Output::create(&path).expect("writable");
        let second = Output::create(&path).expect("writable");
        let held = std::fs::File::create(&first.partial).expect("partial");
        held.lock().expect("locked");
        let refused = second
            .write(fill(b"late"))
            .expect_err("refused while locked");
        assert!(
            refused.contains("another datatransfer is writing"),
            "{refused}"
        );
        assert!(!path.exists());
        drop(held);
        let failed = first.write(|_| Err("the export failed".to_owned()));
        assert_eq!(failed, Err("the export failed".to_owned()));
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
}
