//! What `serve`, `pull`, `push` and `status` share: the data dir (blocks, channel store,
//! identity key kept between runs), the token voucher, importing inputs, and following one
//! channel to its end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datatransfer::{
    ChannelId, ChannelState, ChannelStore, Cid, DagCbor, EventCode, Manager, MemoryChannelStore,
    Multiaddr, PeerId, Registerable, RequestValidator, Status, Subscription, Validation,
    ValidationError, ValidationOutcome, Voucher, identity::Keypair,
};
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::car::CarReader;
use datatransfer_ipld::fsstore::FsBlockstore;
use datatransfer_ipld::unixfs::{ImportOptions, import};
use datatransfer_types::store::ChannelFilter;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::progress::Progress;

/// A transfer with no event for this long has stalled.
const STALL: Duration = Duration::from_secs(120);

/// How long after a disconnect a channel is restarted.
const RESTART_BACKOFF: Duration = Duration::from_secs(5);

/// The voucher the CLI sends and `serve` checks: a shared token (empty when the server
/// takes anyone).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TokenVoucher {
    pub(crate) token: String,
}

impl Registerable for TokenVoucher {
    const TYPE: &'static str = "DatatransferCliToken";
}

/// Accepts requests carrying the token (any request if there is none); refuses new ones
/// once `closing` is set, while restarts of running channels still pass.
pub(crate) struct TokenValidator {
    pub(crate) token: Option<String>,
    pub(crate) closing: Arc<AtomicBool>,
}

impl TokenValidator {
    fn check(&self, restart: bool, voucher: &Voucher) -> Validation {
        if !restart && self.closing.load(Ordering::SeqCst) {
            return Validation::new(ValidationOutcome::rejected("the server is shutting down"));
        }
        let Some(want) = &self.token else {
            return Validation::accept();
        };
        let ok = voucher
            .decode::<TokenVoucher>()
            .is_ok_and(|v| &v.token == want);
        if ok {
            Validation::accept()
        } else {
            Validation::new(ValidationOutcome::rejected("wrong token"))
        }
    }
}

#[async_trait]
impl RequestValidator for TokenValidator {
    async fn validate_push(
        &self,
        restart: bool,
        _: ChannelId,
        _: PeerId,
        voucher: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        Ok(self.check(restart, voucher))
    }

    async fn validate_pull(
        &self,
        restart: bool,
        _: ChannelId,
        _: PeerId,
        voucher: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        Ok(self.check(restart, voucher))
    }
}

/// The token voucher to send.
pub(crate) fn voucher(token: Option<String>) -> Result<Voucher, String> {
    datatransfer::TypedNode::encode(&TokenVoucher {
        token: token.unwrap_or_default(),
    })
    .map_err(|e| e.to_string())
}

/// Where the data dir is, without creating it (for commands that only look).
pub(crate) fn data_dir_path(given: Option<PathBuf>) -> Result<PathBuf, String> {
    Ok(match given {
        Some(d) => d,
        None => dirs::data_dir()
            .ok_or("no data directory on this platform; pass --data-dir")?
            .join("datatransfer"),
    })
}

/// The data dir: `--data-dir`, or `datatransfer` under the platform's data directory.
pub(crate) fn data_dir(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = data_dir_path(given)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The node's identity, generated on first use and kept in the data dir.
pub(crate) fn identity(dir: &Path) -> Result<Keypair, String> {
    let path = dir.join("identity.key");
    if let Ok(bytes) = std::fs::read(&path) {
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| format!("{} is not an identity key: {e}", path.display()));
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| format!("cannot encode the identity key: {e}"))?;
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key)
}

/// How a command's node keeps its blocks (flattened into the commands that open a data dir).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub(crate) struct StoreArgs {
    /// Write blocks of 64 KiB or more to disk past the page cache (O_DIRECT, Linux): for
    /// transfers larger than memory, or where filling the page cache is slow (virtual
    /// machines). Blocks read back soon after come from the disk.
    #[arg(long)]
    pub(crate) direct_io: bool,
}

/// Opens the durable block store under the data dir `dir` (fsync on), as `store` says.
pub(crate) fn open_blocks(dir: &Path, store: StoreArgs) -> Result<Arc<FsBlockstore>, String> {
    FsBlockstore::open(dir.join("blocks"), true)
        .map(|s| Arc::new(s.direct_writes(store.direct_io)))
        .map_err(|e| format!("cannot open the block store in {}: {e}", dir.display()))
}

/// A node on the data dir's identity, block store and channel store. A listening node
/// (`serve`) does not restart channels itself on start: its peers initiated them, dialled
/// in, and restart them when they come back (it could not dial them anyway). With
/// `limit_rate`, it reads and writes at most that many bytes per second each way.
pub(crate) async fn manager(
    dir: &Path,
    listen: Option<Multiaddr>,
    limit_rate: Option<u64>,
    store: StoreArgs,
) -> Result<(Manager, Arc<FsBlockstore>), String> {
    manager_with(dir, listen, limit_rate, store, None, None).await
}

/// [`manager`], with a retention policy for finished channels (the library's default if
/// `None`) and metrics that time the store's writes.
pub(crate) async fn manager_with(
    dir: &Path,
    listen: Option<Multiaddr>,
    limit_rate: Option<u64>,
    store: StoreArgs,
    retention: Option<datatransfer::Retention>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> Result<(Manager, Arc<FsBlockstore>), String> {
    let mut config = datatransfer::ManagerConfig {
        restart_on_start: listen.is_none(),
        ..Default::default()
    };
    // Someone is waiting at the terminal: after a disconnect, try again every 5 s rather
    // than Lotus's 20 s, as long in all (15 tries of 20 s, 60 of 5 s).
    if let Some(monitor) = &mut config.engine.monitor {
        monitor.restart_backoff = RESTART_BACKOFF;
        monitor.max_consecutive_restarts = 60;
    }
    // Lotus's limit (MaxTraversalLinks): no request from a peer walks more than 32 Mi blocks.
    config.transport.graphsync.max_links_per_incoming_request = Some(32 << 20);
    config.transport.graphsync.max_inbound_rate = limit_rate;
    config.transport.graphsync.max_outbound_rate = limit_rate;
    let blocks = open_blocks(dir, store)?;
    if let Some(r) = retention {
        config.retention = Some(r);
    }
    let store_path = dir.join("channels.sqlite");
    let store: Arc<dyn datatransfer::ChannelStore> = Arc::new(
        datatransfer_store_sqlite::SqliteChannelStore::open(&store_path)
            .map_err(|e| e.to_string())?,
    );
    let store: Arc<dyn datatransfer::ChannelStore> = match metrics {
        Some(metrics) => Arc::new(crate::metrics::TimedStore {
            inner: store,
            metrics,
        }),
        None => store,
    };
    let mut b = Manager::builder()
        .keypair(identity(dir)?)
        .channel_store(store)
        .blockstore(blocks.clone())
        .config(config);
    if let Some(a) = listen {
        b = b.listen_on(a);
    }
    let m = b.build().await.map_err(|e| e.to_string())?;
    Ok((m, blocks))
}

/// Parses a multiaddr argument.
pub(crate) fn parse_addr(s: &str) -> Result<Multiaddr, String> {
    s.parse()
        .map_err(|e| format!("{s:?} is not a multiaddr ({e})"))
}

/// Parses a peer's multiaddr argument, which must end in `/p2p/<peer id>`.
pub(crate) fn parse_peer_addr(s: &str) -> Result<(Multiaddr, PeerId), String> {
    let addr = parse_addr(s)?;
    let peer = datatransfer::peer_of(&addr)
        .ok_or_else(|| format!("{addr} does not end in /p2p/<peer id>"))?;
    Ok((addr, peer))
}

/// Connects to `addr` (which must end in `/p2p/<peer id>`), giving up after 20 s.
pub(crate) async fn connect(m: &Manager, addr: &Multiaddr) -> Result<PeerId, String> {
    tokio::time::timeout(Duration::from_secs(20), m.connect(addr))
        .await
        .map_err(|_| format!("cannot reach {addr}: timed out"))?
        .map_err(|e| e.to_string())
}

/// One DAG made from an input path.
pub(crate) struct Input {
    /// Where it came from.
    pub(crate) path: PathBuf,
    /// Its root.
    pub(crate) root: Cid,
    /// The file's size, or a CAR's block bytes.
    pub(crate) size: u64,
    /// Whether it came from a CAR (served as it is) rather than a file (imported as UnixFS).
    pub(crate) car: bool,
}

/// Imports `paths` into `store`: a CAR (recognised by its header) as it is, one DAG per
/// root; any other file as UnixFS; a directory's files (recursively, in name order) each
/// on its own. Returns once the imported blocks are durable.
pub(crate) fn import_inputs(
    store: &dyn Blockstore,
    paths: &[PathBuf],
) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for p in paths {
        import_path(store, p, &mut out)?;
    }
    store
        .flush()
        .map_err(|e| format!("cannot store the imported blocks: {e}"))?;
    Ok(out)
}

fn import_path(store: &dyn Blockstore, path: &Path, out: &mut Vec<Input>) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut entries = std::fs::read_dir(path)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.path()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        entries.sort();
        for e in entries {
            import_path(store, &e, out)?;
        }
        return Ok(());
    }
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    if let Ok(mut car) = CarReader::new(open()?)
        && !car.roots().is_empty()
    {
        let roots = car.roots().to_vec();
        let mut size = 0u64;
        while let Some((cid, data)) = car
            .next_block()
            .map_err(|e| format!("{} is a broken CAR: {e}", path.display()))?
        {
            store
                .put(&cid, &data)
                .map_err(|e| format!("cannot store a block of {}: {e}", path.display()))?;
            size += data.len() as u64;
        }
        out.extend(roots.into_iter().map(|root| Input {
            path: path.to_owned(),
            root,
            size,
            car: true,
        }));
        return Ok(());
    }
    let imported = import(store, open()?, &ImportOptions::default())
        .map_err(|e| format!("cannot import {}: {e}", path.display()))?;
    out.push(Input {
        path: path.to_owned(),
        root: imported.root,
        size: imported.size,
        car: false,
    });
    Ok(())
}

/// The channel a previous run left in progress in the store for `root` with `peer` in this
/// direction, initiated by us. Read from the store, so before [`Manager::start`].
pub(crate) async fn left_channel(
    m: &Manager,
    peer: PeerId,
    root: Cid,
    pull: bool,
) -> Result<Option<ChannelState>, String> {
    let me = m.peer_id();
    Ok(m.channel_store()
        .list(ChannelFilter::InProgress)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| {
            c.base_cid == root
                && c.other_peer() == peer
                && c.is_pull() == pull
                && c.channel_id.initiator == me
        }))
}

/// Resumes `left` (see [`left_channel`]), or opens a new channel for `root` with `peer`.
/// Returns the channel and whether it was resumed.
pub(crate) async fn open_or_resume(
    m: &Manager,
    peer: PeerId,
    left: Option<ChannelState>,
    root: Cid,
    pull: bool,
    voucher: Voucher,
    selector: DagCbor,
) -> Result<(ChannelId, bool), String> {
    if let Some(c) = left {
        // A pause of ours (a rate limit) does not outlive the run that made it.
        if matches!(c.status, Status::InitiatorPaused | Status::BothPaused) {
            m.resume_channel(c.channel_id)
                .await
                .map_err(|e| e.to_string())?;
        }
        return Ok((c.channel_id, true));
    }
    let id = if pull {
        m.open_pull_channel(peer, voucher, root, selector).await
    } else {
        m.open_push_channel(peer, voucher, root, selector).await
    };
    Ok((id.map_err(|e| e.to_string())?, false))
}

/// A channel's error, said for a person: without the channel id it repeats, and with a
/// hint for the usual causes.
pub(crate) fn explain(id: ChannelId, error: &str) -> String {
    let error = error.replace(&format!("data transfer channel {id} "), "");
    if error.contains("lacked blocks") {
        format!("the peer does not have all of the DAG ({error})")
    } else if error.starts_with("response rejected") {
        format!("the peer refused the request ({error}; a wrong or missing --token?)")
    } else {
        error
    }
}

/// How a channel ended.
pub(crate) struct Ended {
    /// Its last state.
    pub(crate) state: ChannelState,
    /// The last error an event reported.
    pub(crate) error: String,
}

/// Ctrl-C presses from the moment this is made. A press while the program is busy between
/// two waits is kept for the next wait (a fresh `tokio::signal::ctrl_c()` per wait would
/// miss it, and the process, its default handler replaced, would ignore it).
pub(crate) struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
    #[cfg(windows)]
    signal: tokio::signal::windows::CtrlC,
}

impl Interrupts {
    /// Starts listening for Ctrl-C (SIGINT).
    pub(crate) fn new() -> Result<Self, String> {
        let failed = |e: std::io::Error| format!("cannot listen for Ctrl-C: {e}");
        #[cfg(unix)]
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(failed)?;
        #[cfg(windows)]
        let signal = tokio::signal::windows::ctrl_c().map_err(failed)?;
        Ok(Self { signal })
    }

    /// Waits for the next press (or the one that came since the last wait).
    pub(crate) async fn next(&mut self) {
        if self.signal.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Follows channel `id` to its end, showing the bytes it moves. `total` is asked for the
/// size until it knows it. Ctrl-C ends the wait with an error; the caller stops the node,
/// which persists the channel for the next run.
pub(crate) async fn follow(
    events: &mut Subscription,
    id: ChannelId,
    progress: &mut Progress,
    interrupts: &mut Interrupts,
    mut total: impl FnMut() -> Option<u64>,
) -> Result<Ended, String> {
    let mut error = String::new();
    let mut last_event = Instant::now();
    // While the peer is out of reach: the bytes when the channel last restarted, if it has.
    let mut lost: Option<Option<u64>> = None;
    loop {
        tokio::select! {
            next = events.next() => {
                let Some((event, state)) = next else {
                    return Err("the node stopped".into());
                };
                if state.channel_id != id {
                    continue;
                }
                last_event = Instant::now();
                let bytes = if state.is_sender() { state.sent } else { state.received };
                tracing::info!(
                    event = ?event.code,
                    status = ?state.status,
                    bytes,
                    message = %event.message,
                    "channel event"
                );
                if progress.total().is_none()
                    && let Some(t) = total()
                {
                    progress.set_total(t);
                }
                progress.update(bytes);
                if event.code == EventCode::Error {
                    error = event.message.clone();
                }
                match event.code {
                    EventCode::Disconnected if lost.is_none() => {
                        lost = Some(None);
                        progress.say(format!(
                            "lost the peer ({}); trying again every {} s",
                            event.message,
                            RESTART_BACKOFF.as_secs()
                        ));
                    }
                    EventCode::Restart if lost.is_some() => lost = Some(Some(bytes)),
                    // Data after the restart (blocks in flight at the loss came before it).
                    EventCode::DataReceived | EventCode::DataSent
                        if lost.flatten().is_some_and(|b| bytes > b) =>
                    {
                        lost = None;
                        progress.say("the peer is back; carrying on".into());
                    }
                    _ => {}
                }
                if state.status.is_terminal() {
                    return Ok(Ended { state, error });
                }
            }
            () = interrupts.next() => {
                return Err(
                    "interrupted; the transfer is kept: run the same command again to resume it"
                        .into(),
                );
            }
            () = tokio::time::sleep_until(last_event + STALL) => {
                return Err(format!(
                    "the transfer stalled: nothing happened for {} s",
                    STALL.as_secs()
                ));
            }
        }
    }
}

/// `status`: the channels in the store.
pub(crate) async fn status(dir: PathBuf, all: bool, json: bool) -> Result<(), String> {
    let path = dir.join("channels.sqlite");
    let store: Arc<dyn ChannelStore> = if path.exists() {
        Arc::new(
            datatransfer_store_sqlite::SqliteChannelStore::open(&path)
                .map_err(|e| e.to_string())?,
        )
    } else {
        Arc::new(MemoryChannelStore::new(1))
    };
    let filter = if all {
        ChannelFilter::All
    } else {
        ChannelFilter::InProgress
    };
    let channels = store.list(filter).await.map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now();
    for c in channels {
        let age = c
            .stages
            .stages
            .first()
            .and_then(|s| now.duration_since(s.created.to_system_time()).ok())
            .map_or(0, |d| d.as_secs());
        let bytes = c.received.max(c.sent);
        let kind = if c.is_pull() { "pull" } else { "push" };
        if json {
            println!(
                "{{\"channel\":\"{}\",\"kind\":\"{kind}\",\"root\":\"{}\",\"status\":\"{:?}\",\"bytes\":{bytes},\"peer\":\"{}\",\"age_s\":{age}}}",
                c.channel_id,
                c.base_cid,
                c.status,
                c.other_peer()
            );
        } else {
            println!(
                "{:<20} {kind} {:>12} bytes  {}  peer {}  {}s old  #{}",
                format!("{:?}", c.status),
                bytes,
                c.base_cid,
                c.other_peer(),
                age,
                c.channel_id.id.0
            );
        }
    }
    Ok(())
}
