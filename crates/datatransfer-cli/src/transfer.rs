//! `pull` and `push`: one node on the data dir, one channel per DAG, followed to its end
//! with a progress bar. Both resume a channel a previous run left in the store.

use std::path::{Path, PathBuf};

use clap::Args;
use datatransfer::{Cid, Status};
use dt_ipld::car::export_car;
use dt_ipld::unixfs::{UnixfsError, export, file_size};
use tempfile::NamedTempFile;

use crate::node::{self, Ended};
use crate::progress::Progress;
use crate::selector;

/// `datatransfer pull`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The serving node's multiaddr, ending in /p2p/<peer id>.
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
}

/// `datatransfer push`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The receiving node's multiaddr, ending in /p2p/<peer id>.
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
}

/// A file that appears at `path` only when complete: written next to it under a temporary
/// name, so the directory's permissions and space are known to work before the transfer,
/// and an interrupted run leaves nothing half-written behind.
struct Output {
    path: PathBuf,
    temp: NamedTempFile,
}

impl Output {
    fn create(path: &Path) -> Result<Self, String> {
        if path.is_dir() {
            return Err(format!("{} is a directory", path.display()));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".datatransfer-").suffix(".partial");
        // An ordinary file's mode (less the umask), not a temporary file's 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder
            .tempfile_in(dir)
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        Ok(Self {
            path: path.to_owned(),
            temp,
        })
    }

    /// Writes with `fill`, then moves the file into place.
    fn write(
        self,
        fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<u64, String>,
    ) -> Result<u64, String> {
        let mut w = std::io::BufWriter::new(self.temp.as_file());
        let n = fill(&mut w)?;
        std::io::Write::flush(&mut w)
            .and_then(|()| self.temp.as_file().sync_all())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        drop(w);
        self.temp
            .persist(&self.path)
            .map_err(|e| format!("cannot write {}: {}", self.path.display(), e.error))?;
        Ok(n)
    }
}

/// Runs `pull`.
pub(crate) async fn pull(args: PullArgs, json: bool) -> Result<(), String> {
    let addr = node::parse_addr(&args.addr)?;
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

    let (m, blocks) = node::manager(&dir, None, args.limit_rate).await?;
    let mut events = m.subscribe().await.map_err(|e| e.to_string())?;
    let peer = node::connect(&m, &addr).await?;
    m.start().await.map_err(|e| e.to_string())?;
    let (id, resumed) = node::open_or_resume(
        &m,
        peer,
        root,
        true,
        node::voucher(args.token)?,
        sel.cbor.clone(),
    )
    .await?;
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
        match file_size(&*blocks, &root) {
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
    let ended = node::follow(&mut events, id, &mut progress, total).await;
    progress.finish();
    m.stop().await.map_err(|e| e.to_string())?;
    let Ended { state, error } = ended?;
    if state.status != Status::Completed {
        return Err(format!(
            "the pull of {root} ended {:?}: {}",
            state.status,
            node::explain(id, &error)
        ));
    }

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
    let bytes = state.received;
    if json {
        println!(
            "{{\"root\":\"{root}\",\"channel\":\"{id}\",\"received\":{bytes},\"written\":{},\"car_blocks\":{}}}",
            written.map_or("null".into(), |n| n.to_string()),
            car_blocks.map_or("null".into(), |n| n.to_string())
        );
        return Ok(());
    }
    println!("{root}: {bytes} bytes received");
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

/// Runs `push`.
pub(crate) async fn push(args: PushArgs, json: bool) -> Result<(), String> {
    let addr = node::parse_addr(&args.addr)?;
    let dir = node::data_dir(args.data_dir)?;
    let (m, blocks) = node::manager(&dir, None, args.limit_rate).await?;
    let inputs = node::import_inputs(&*blocks, std::slice::from_ref(&args.input))?;
    if inputs.is_empty() {
        return Err(format!("nothing to push in {}", args.input.display()));
    }
    let mut events = m.subscribe().await.map_err(|e| e.to_string())?;
    let peer = node::connect(&m, &addr).await?;
    m.start().await.map_err(|e| e.to_string())?;
    let voucher = node::voucher(args.token)?;
    let mut result = Ok(());
    for input in inputs {
        let (id, resumed) = node::open_or_resume(
            &m,
            peer,
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
        let ended = node::follow(&mut events, id, &mut progress, || None).await;
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
    m.stop().await.map_err(|e| e.to_string())?;
    result
}
