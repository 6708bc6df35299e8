//! The control endpoint of a running node: a Unix socket in its data dir (`control.sock`,
//! readable and writable by its owner only) that `datatransfer transfers` talks to. One JSON
//! request per connection, one JSON answer line: list, cancel, restart, diagnostics, purge.
//!
//! Every long-running command (`serve`, `pull`, `push`) claims its data dir first (a lock
//! file, `node.lock`) and then opens the socket; a second node on the same data dir is
//! refused before it touches the store or a port (it would share the identity and the
//! store). Only the user running the node may talk to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use datatransfer::{ChannelFilter, ChannelId, ChannelState, Manager, PeerId, PurgeFinished};
use serde_json::{Value, json};

/// The socket's file name in the data dir.
pub(crate) const SOCKET: &str = "control.sock";

/// Bytes moved per channel at two moments, for a rate.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    bytes: u64,
    rate: f64,
}

type Rates = Arc<Mutex<HashMap<ChannelId, Sample>>>;

/// A data dir claimed by this process: its lock file held (no other node may run on the
/// dir) and its control socket bound, but not yet answering. Claimed before the node is
/// built, so a second node on the dir is refused before it touches the store or a port.
pub(crate) struct Claim {
    path: PathBuf,
    #[cfg(unix)]
    listener: tokio::net::UnixListener,
    /// The user that may talk to the socket: the one that created it.
    #[cfg(unix)]
    owner: u32,
    /// Held for the life of the process; released by the OS however it ends.
    _lock: std::fs::File,
}

/// Claims `dir` for one node.
pub(crate) fn claim(dir: &Path) -> Result<Claim, String> {
    let lock_path = dir.join("node.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(format!(
                "another datatransfer node is running on {} (it holds {})",
                dir.display(),
                lock_path.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", lock_path.display()));
        }
    }
    let path = dir.join(SOCKET);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Ours alone (we hold the lock): whatever is there was left by a node that died.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove the stale {}: {e}", path.display())),
        }
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| format!("cannot open the control socket {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
        let owner = std::fs::metadata(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .uid();
        Ok(Claim {
            path,
            listener,
            owner,
            _lock: lock,
        })
    }
    #[cfg(not(unix))]
    Ok(Claim { path, _lock: lock })
}

/// The endpoint, answering while this lives; dropping it closes it and removes the socket.
pub(crate) struct Control {
    path: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Held (shared) by each answer being written; [`Control::finish`] waits for them.
    busy: Arc<tokio::sync::RwLock<()>>,
    _claim_lock: std::fs::File,
}

impl Control {
    /// Closes the endpoint after the answers being written (a cancel that ended the very
    /// transfer this node was running, say) have gone out, waiting 10 s at most.
    pub(crate) async fn finish(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.busy.write()).await;
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Still ours: the lock keeps any other node off the dir.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a client may take to send its request.
const REQUEST_TIME: Duration = Duration::from_secs(5);

/// What a channel looks like to an operator, as JSON.
pub(crate) fn summary(c: &ChannelState, rate: Option<f64>, stages: bool) -> Value {
    let now = std::time::SystemTime::now();
    let age = c
        .stages
        .stages
        .first()
        .and_then(|s| now.duration_since(s.created.to_system_time()).ok())
        .map_or(0, |d| d.as_secs());
    let mut v = json!({
        "channel": c.channel_id.to_string(),
        "id": c.channel_id.id.0,
        "peer": c.other_peer().to_string(),
        "direction": if c.is_pull() { "pull" } else { "push" },
        "role": if c.is_initiator() { "initiator" } else { "responder" },
        "status": format!("{:?}", c.status),
        "root": c.base_cid.to_string(),
        "bytes": c.sent.max(c.received),
        "blocks": c.sent_blocks_total.max(c.received_blocks_total),
        "rate": rate.unwrap_or(0.0).round(),
        "age_s": age,
        "message": c.message,
    });
    if stages {
        v["stages"] = c
            .stages
            .stages
            .iter()
            .map(|s| {
                json!({
                    "stage": s.name,
                    "logs": s.logs.iter().map(|l| l.log.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    v
}

/// Answers on the claimed socket for `manager`.
#[cfg(unix)]
pub(crate) async fn start(claim: Claim, manager: Manager) -> Result<Control, String> {
    let Claim {
        path,
        listener,
        owner,
        _lock,
    } = claim;
    let rates: Rates = Arc::default();
    let mut events = manager.subscribe().await.map_err(|e| e.to_string())?;
    let sampler = {
        let rates = rates.clone();
        tokio::spawn(async move {
            while let Some((_, state)) = events.next().await {
                let bytes = state.sent.max(state.received);
                let now = Instant::now();
                let mut rates = rates.lock().unwrap_or_else(PoisonError::into_inner);
                if state.status.is_terminal() {
                    rates.remove(&state.channel_id);
                    continue;
                }
                let s = rates.entry(state.channel_id).or_insert(Sample {
                    at: now,
                    bytes,
                    rate: 0.0,
                });
                let dt = now.duration_since(s.at).as_secs_f64();
                if dt >= 1.0 {
                    s.rate = bytes.saturating_sub(s.bytes) as f64 / dt;
                    s.at = now;
                    s.bytes = bytes;
                }
            }
        })
    };
    let busy = Arc::new(tokio::sync::RwLock::new(()));
    let server = {
        let busy = busy.clone();
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, say: wait and go on answering.
                        tracing::warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Only the user who runs the node (the socket's mode says the same; this
                // also covers the moment between its creation and its chmod).
                if !stream.peer_cred().is_ok_and(|c| c.uid() == owner) {
                    continue;
                }
                let (m, rates) = (manager.clone(), rates.clone());
                let held = busy.clone().read_owned().await;
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &m, &rates).await {
                        tracing::debug!(error = %e, "control connection failed");
                    }
                    drop(held);
                });
            }
        })
    };
    Ok(Control {
        path,
        tasks: vec![sampler, server],
        busy,
        _claim_lock: _lock,
    })
}

/// Without Unix sockets there is no control endpoint; `transfers` reads the store.
#[cfg(not(unix))]
pub(crate) async fn start(claim: Claim, _manager: Manager) -> Result<Control, String> {
    Ok(Control {
        path: claim.path,
        tasks: Vec::new(),
        busy: Arc::default(),
        _claim_lock: claim._lock,
    })
}

/// Reads one request, writes one answer line.
#[cfg(unix)]
async fn answer(stream: tokio::net::UnixStream, m: &Manager, rates: &Rates) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // A request is one short line; a client that sends more is cut off.
    let mut read = BufReader::new(read.take(64 << 10));
    tokio::time::timeout(REQUEST_TIME, read.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(req) => handle(&req, m, rates)
            .await
            .unwrap_or_else(|e| json!({ "error": e })),
        Err(e) => json!({ "error": format!("the request is not JSON: {e}") }),
    };
    let mut out = reply.to_string();
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    write.shutdown().await
}

fn channel_arg(req: &Value) -> Result<ChannelId, String> {
    req["channel"]
        .as_str()
        .ok_or("the request names no channel")?
        .parse()
        .map_err(|e: datatransfer_types::BadChannelId| e.to_string())
}

/// Graphsync requests as JSON (ids in hex, as a UUID's bytes).
fn requests(list: &[datatransfer_graphsync::node::RequestInfo]) -> Vec<Value> {
    list.iter()
        .map(|r| {
            json!({
                "request": hex::encode(r.id.0),
                "root": r.root.map(|c| c.to_string()),
                "state": r.state.to_string(),
                "traversed": r.traversed,
            })
        })
        .collect()
}

async fn handle(req: &Value, m: &Manager, rates: &Rates) -> Result<Value, String> {
    let rate_of = |id: &ChannelId| {
        rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .map(|s| s.rate)
    };
    match req["op"].as_str().unwrap_or_default() {
        "list" => {
            let stages = req["stages"].as_bool().unwrap_or(false);
            let channels = m
                .channels(ChannelFilter::All)
                .await
                .map_err(|e| e.to_string())?;
            let list: Vec<Value> = channels
                .iter()
                .map(|c| summary(c, rate_of(&c.channel_id), stages))
                .collect();
            Ok(json!({ "channels": list }))
        }
        "cancel" => {
            let id = channel_arg(req)?;
            let wait = Duration::from_millis(req["wait_ms"].as_u64().unwrap_or(5_000));
            let report = m
                .cancel_channel(id, wait)
                .await
                .map_err(|e| format!("cannot cancel {id}: {e}"))?;
            Ok(json!({
                "channel": id.to_string(),
                "status": format!("{:?}", report.status),
                "peer_told": report.peer == datatransfer::PeerNotice::Told,
                "peer": report.peer.to_string(),
            }))
        }
        "restart" => {
            let id = channel_arg(req)?;
            m.restart_channel(id)
                .await
                .map_err(|e| format!("cannot restart {id}: {e}"))?;
            Ok(json!({ "channel": id.to_string(), "restarted": true }))
        }
        "diagnostics" => {
            let peer: PeerId = req["peer"]
                .as_str()
                .ok_or("the request names no peer")?
                .parse()
                .map_err(|e| format!("not a peer id: {e}"))?;
            let channels = m
                .channels(ChannelFilter::Peer(peer))
                .await
                .map_err(|e| e.to_string())?;
            let channels: Vec<Value> = channels
                .iter()
                .filter(|c| c.status.is_in_progress())
                .map(|c| summary(c, rate_of(&c.channel_id), true))
                .collect();
            let gs = match m.transport().graphsync() {
                Some(gs) => {
                    let r = gs.peer_requests(peer).await;
                    json!({ "outgoing": requests(&r.outgoing), "incoming": requests(&r.incoming) })
                }
                None => Value::Null,
            };
            Ok(json!({
                "peer": peer.to_string(),
                "connected": m.is_connected(peer).await,
                "channels": channels,
                "graphsync": gs,
            }))
        }
        "purge" => {
            let purge = PurgeFinished {
                finished_before: req["older_than_s"].as_u64().map(|s| {
                    let now = datatransfer_types::Timestamp::from_system_time(
                        std::time::SystemTime::now(),
                    );
                    datatransfer_types::Timestamp::from_unix_nanos(
                        now.as_unix_nanos()
                            .saturating_sub(s.saturating_mul(1_000_000_000)),
                    )
                }),
                keep_newest: req["keep"].as_u64().map(|k| k as usize),
            };
            let removed = m.purge_finished(purge).await.map_err(|e| e.to_string())?;
            Ok(json!({ "removed": removed }))
        }
        other => Err(format!("unknown request {other:?}")),
    }
}

/// Sends `request` to the node running on `dir`; `None` when no node runs there.
#[cfg(unix)]
pub(crate) async fn ask(
    dir: &Path,
    request: &Value,
    wait: Duration,
) -> Result<Option<Value>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let path = dir.join(SOCKET);
    let stream = match tokio::net::UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot reach the node on {}: {e}", path.display())),
    };
    let talk = async {
        let (read, mut write) = stream.into_split();
        let mut line = request.to_string();
        line.push('\n');
        write.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(wait, talk)
        .await
        .map_err(|_| {
            format!(
                "the node on {} did not answer within {} s",
                dir.display(),
                wait.as_secs()
            )
        })?
        .map_err(|e| format!("talking to the node on {}: {e}", dir.display()))?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|e| format!("the node's answer is not JSON ({e}): {answer:?}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_owned());
    }
    Ok(Some(v))
}

/// Without Unix sockets no node can be asked.
#[cfg(not(unix))]
pub(crate) async fn ask(_: &Path, _: &Value, _: Duration) -> Result<Option<Value>, String> {
    Ok(None)
}
