//! The Go peer as a child process: building it, starting it, calling its commands and
//! waiting for the events it prints.
//!
//! The program and its JSON-lines protocol are described in `interop/go-peer/README.md`.
//! Every process started here is killed when its [`GoPeer`] is dropped, so a failing test
//! leaves none behind; the Go program also exits when its stdin closes, which covers a test
//! process that is itself killed.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use datatransfer::{ChannelId, Cid, Multiaddr, PeerId};
use datatransfer_types::TransferId;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, oneshot};
use tokio::time::timeout;

/// The line printed when Go is missing.
const NO_GO: &str = "interop tests need Go 1.26 or newer on PATH to build interop/go-peer: \
install it from https://go.dev/dl/ (and let it reach the Go module proxy, https://proxy.golang.org)";

/// Which Go implementation a peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `interop/go-peer`: go-data-transfer v2.0.0, go-graphsync v0.18.1 (today's nodes).
    V2,
    /// `interop/go-peer-v1`: go-data-transfer v1.15.2, go-graphsync v0.13.1 (the Lotus
    /// markets era; graphsync 1.0.0 too, data transfer `1.2.0` only).
    V1,
}

impl Flavor {
    /// The program's folder under `interop/`, and its binary's name.
    fn name(self) -> &'static str {
        match self {
            Self::V2 => "go-peer",
            Self::V1 => "go-peer-v1",
        }
    }
}

/// Where the binary goes: `<target>/interop/go-peer`, beside the test binaries.
fn out_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("interop");
    }
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("interop"))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop"))
}

/// Builds the v2 go-peer; see [`binary_of`].
pub fn binary() -> PathBuf {
    binary_of(Flavor::V2)
}

/// Builds a Go peer (once per test process; `go build`'s cache makes later builds a relink
/// check) and returns its path. Test processes building at once take turns on a file lock.
pub fn binary_of(flavor: Flavor) -> PathBuf {
    static BUILT: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    BUILT[flavor as usize]
        .get_or_init(|| go_build(flavor.name(), ".", flavor.name()))
        .clone()
}

/// Builds `interop/go-retrieval` (a free-retrieval provider on go-data-transfer v2 and
/// go-retrieval-types, validating as Boost's unpaid path does; and the retrieval types'
/// golden vectors) and returns its path.
pub fn go_retrieval() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| go_build("go-retrieval", ".", "go-retrieval"))
        .clone()
}

/// Builds lassie's command line at the version `interop/go-retrieval/go.mod` pins (its
/// `tool` line) and returns its path.
pub fn lassie() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            go_build(
                "go-retrieval",
                "github.com/filecoin-project/lassie/cmd/lassie",
                "lassie",
            )
        })
        .clone()
}

/// `go build -o <target>/interop/<out> <package>` in `interop/<folder>`, under a file lock
/// that test processes building at once take turns on.
pub fn go_build(folder: &str, package: &str, out: &str) -> PathBuf {
    if std::process::Command::new("go")
        .arg("version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        panic!("{NO_GO}");
    }
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.join(format!("{out}.lock"))).unwrap();
    lock.lock().unwrap();
    let path = dir.join(out);
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&path)
        .arg(package)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(folder))
        .output()
        .unwrap_or_else(|e| panic!("{NO_GO} ({e})"));
    lock.unlock().unwrap();
    assert!(
        built.status.success(),
        "go build of {package} in interop/{folder} failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    path
}

/// How to start a [`GoPeer`].
#[derive(Debug, Clone)]
pub struct GoPeerOptions {
    /// The 32-byte Ed25519 seed of its identity.
    pub key: [u8; 32],
    /// Where it listens (`/ip4/127.0.0.1/tcp/0` for any port).
    pub listen: String,
    /// Its data directory (datastore with `persist`, logs).
    pub data_dir: PathBuf,
    /// Keep blocks and channels in a datastore on disk, so a restarted process has them.
    pub persist: bool,
    /// Turn go-data-transfer's channel monitor on (restarts after disconnects).
    pub restart_config: bool,
    /// Print every block graphsync sends or receives.
    pub trace_blocks: bool,
    /// Which Go implementation.
    pub flavor: Flavor,
}

impl GoPeerOptions {
    /// A peer with the identity from `seed` (every byte `seed`) in `dir`, on any port.
    pub fn new(seed: u8, dir: &Path) -> Self {
        Self {
            key: [seed; 32],
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            data_dir: dir.to_path_buf(),
            persist: false,
            restart_config: false,
            trace_blocks: true,
            flavor: Flavor::V2,
        }
    }

    /// The peer id this identity has (the same on both sides: Ed25519 from the seed).
    pub fn peer_id(&self) -> PeerId {
        keypair(self.key).public().to_peer_id()
    }
}

/// The Ed25519 keypair from a 32-byte seed, as go-peer derives it.
pub fn keypair(seed: [u8; 32]) -> datatransfer::identity::Keypair {
    let mut seed = seed;
    datatransfer::identity::Keypair::ed25519_from_bytes(&mut seed).unwrap()
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Everything the Go peer printed that is not a command result, in order.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<Value>>,
    changed: Notify,
}

/// A running go-peer process.
pub struct GoPeer {
    /// Its options (start it again with the same ones after a kill).
    pub options: GoPeerOptions,
    /// Its peer id.
    pub peer_id: PeerId,
    /// The addresses it listens on (without `/p2p`).
    pub addrs: Vec<Multiaddr>,
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    next_id: AtomicU64,
    pending: Pending,
    log: Arc<Log>,
    stderr: PathBuf,
}

impl GoPeer {
    /// Starts go-peer and waits until it is ready.
    pub async fn start(options: GoPeerOptions) -> Self {
        let flavor = options.flavor;
        let bin = match tokio::task::spawn_blocking(move || binary_of(flavor)).await {
            Ok(bin) => bin,
            // The build's own message (no Go, say) is the test's failure.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        std::fs::create_dir_all(&options.data_dir).unwrap();
        let stderr = options.data_dir.join("go-peer.stderr");
        let err_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--key")
            .arg(hex::encode(options.key))
            .arg("--listen")
            .arg(&options.listen)
            .arg("--data-dir")
            .arg(&options.data_dir);
        if options.persist {
            cmd.arg("--persist");
        }
        if options.restart_config {
            cmd.arg("--restart-config");
        }
        if options.trace_blocks {
            cmd.arg("--trace-blocks");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let pending: Pending = Arc::default();
        let log = Arc::new(Log::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(read_lines(stdout, pending.clone(), log.clone(), ready_tx));
        let ready = match timeout(Duration::from_secs(60), ready_rx).await {
            Ok(Ok(ready)) => ready,
            _ => panic!(
                "go-peer did not get ready; its stderr:\n{}",
                tail(&stderr, 40)
            ),
        };
        let peer_id: PeerId = ready["peer_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            peer_id,
            options.peer_id(),
            "go-peer's identity from its seed"
        );
        let addrs = ready["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().parse().unwrap())
            .collect();
        Self {
            options,
            peer_id,
            addrs,
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            next_id: AtomicU64::new(1),
            pending,
            log,
            stderr,
        }
    }

    /// Its first address with `/p2p/<peer id>`.
    pub fn multiaddr(&self) -> Multiaddr {
        self.addrs[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
    }

    /// Its process id, while it runs (to read its memory use in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.addrs[0]
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap()
    }

    /// Runs a command; its result fields, or the error go-peer reported.
    pub async fn call(&self, cmd: &str, args: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut line = match args {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => panic!("command arguments must be an object, not {other}"),
        };
        line.insert("id".into(), json!(id));
        line.insert("cmd".into(), json!(cmd));
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut text = serde_json::to_string(&line).unwrap();
        text.push('\n');
        {
            let mut stdin = self.stdin.lock().await;
            if let Err(e) = stdin.write_all(text.as_bytes()).await {
                return Err(format!("go-peer's stdin: {e}"));
            }
            let _ = stdin.flush().await;
        }
        match timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(result)) => {
                if result["ok"].as_bool() == Some(true) {
                    Ok(result)
                } else {
                    Err(result["error"].as_str().unwrap_or("no error text").into())
                }
            }
            Ok(Err(_)) => Err(format!("go-peer exited during {cmd}")),
            Err(_) => panic!("go-peer did not answer {cmd} within 120 s"),
        }
    }

    /// Runs a command that must succeed.
    pub async fn ok(&self, cmd: &str, args: Value) -> Value {
        match self.call(cmd, args).await {
            Ok(v) => v,
            Err(e) => panic!("go-peer {cmd}: {e}"),
        }
    }

    /// Everything printed so far that was not a command result.
    pub fn lines(&self) -> Vec<Value> {
        self.log.lines.lock().unwrap().clone()
    }

    /// The payments the Go responder took (its `payment` lines). A final payment our client
    /// sent again, because go-data-transfer answered it before it recorded that it was
    /// finalizing (see `MonitorConfig::final_voucher_resend`), is one payment: a line that
    /// repeats the cumulative amount of the final one before it is left out.
    pub fn payments_taken(&self) -> Vec<Value> {
        let mut taken: Vec<Value> = Vec::new();
        for line in self.lines().into_iter().filter(|l| l["type"] == "payment") {
            let repeat = taken.last().is_some_and(|prev| {
                prev["final"] == true && line["final"] == true && prev["paid"] == line["paid"]
            });
            if !repeat {
                taken.push(line);
            }
        }
        taken
    }

    /// The number of lines printed so far: a mark for [`GoPeer::wait_from`].
    pub fn mark(&self) -> usize {
        self.log.lines.lock().unwrap().len()
    }

    /// Waits for a line (from the first one printed) that `pred` accepts.
    pub async fn wait(&self, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_from(0, secs, pred).await
    }

    /// Waits for a line at or after `from` that `pred` accepts; panics after `secs` seconds
    /// with the events seen.
    pub async fn wait_from(&self, from: usize, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut next = from;
        loop {
            let changed = self.log.changed.notified();
            {
                let lines = self.log.lines.lock().unwrap();
                while next < lines.len() {
                    if pred(&lines[next]) {
                        return lines[next].clone();
                    }
                    next += 1;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "go-peer: no awaited line within {secs} s; its events: {}",
                    summary(&self.lines()[from.min(self.mark())..])
                );
            }
        }
    }

    /// Waits until `chid` reaches a final status on this side; returns that event.
    pub async fn wait_finished(&self, chid: &ChannelId, secs: u64) -> Value {
        let want = chid_json(chid);
        self.wait(secs, |l| {
            l["type"] == "event"
                && l["chid"] == want
                && matches!(
                    l["status"].as_str(),
                    Some("Completed" | "Failed" | "Cancelled")
                )
        })
        .await
    }

    /// The events of `chid` seen so far.
    pub fn events_of(&self, chid: &ChannelId) -> Vec<Value> {
        let want = chid_json(chid);
        self.lines()
            .into_iter()
            .filter(|l| l["type"] == "event" && l["chid"] == want)
            .collect()
    }

    /// CIDs of the blocks graphsync sent (`"out"`) or received (`"in"`), in order.
    pub fn blocks(&self, dir: &str) -> Vec<String> {
        self.block_cids(dir, |_| true)
    }

    /// The CID of every block that crossed the wire `dir`, in order: [`GoPeer::blocks`]
    /// without the blocks a traversal loaded from the local store (a requester's walk of
    /// the blocks it asked the responder to skip).
    pub fn blocks_on_wire(&self, dir: &str) -> Vec<String> {
        self.block_cids(dir, |l| l["on_wire"].as_u64() > Some(0))
    }

    /// The CIDs of the `gs_block` lines of `dir` that pass `keep`, in order.
    fn block_cids(&self, dir: &str, keep: impl Fn(&Value) -> bool) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l["type"] == "gs_block" && l["dir"] == dir && keep(l))
            .map(|l| l["cid"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The graphsync request and CID of every block that went `dir`, in order.
    pub fn blocks_by_request(&self, dir: &str) -> Vec<(String, String)> {
        self.lines()
            .into_iter()
            .filter(|l| l["type"] == "gs_block" && l["dir"] == dir)
            .map(|l| {
                let field = |k: &str| l[k].as_str().unwrap_or_default().to_string();
                (field("request"), field("cid"))
            })
            .collect()
    }

    /// Asserts that no block went `dir` (`"in"` or `"out"`) twice on this peer.
    pub fn assert_no_repeats(&self, dir: &str) {
        let mut seen = std::collections::HashSet::new();
        for b in self.blocks(dir) {
            assert!(
                seen.insert(b.clone()),
                "block {b} went {dir} twice on the Go side"
            );
        }
    }

    /// Kills the process (SIGKILL) and waits for it to go.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Asks the process to shut down and waits for it to exit.
    pub async fn shutdown(mut self) {
        let _ = self.call("shutdown", json!({})).await;
        if timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }
}

impl Drop for GoPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let dump = std::env::var_os("INTEROP_DUMP").is_some();
        if std::thread::panicking() || dump {
            let lines = self.lines();
            let from = if dump {
                0
            } else {
                lines.len().saturating_sub(40)
            };
            eprintln!(
                "--- go-peer {}: last events\n{}\n--- its stderr (tail)\n{}",
                self.peer_id,
                summary(&lines[from..]),
                tail(&self.stderr, if dump { usize::MAX } else { 40 })
            );
        }
    }
}

/// Reads go-peer's stdout: results go to their callers, the rest to the log.
async fn read_lines(
    stdout: tokio::process::ChildStdout,
    pending: Pending,
    log: Arc<Log>,
    ready: oneshot::Sender<Value>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            eprintln!("go-peer printed a line that is not JSON: {line}");
            continue;
        };
        match value["type"].as_str() {
            Some("result") => {
                let id = value["id"].as_u64().unwrap_or(0);
                if let Some(tx) = pending.lock().unwrap().remove(&id) {
                    let _ = tx.send(value);
                }
            }
            Some("ready") => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(value);
                }
            }
            _ => {
                log.lines.lock().unwrap().push(value);
                log.changed.notify_waiters();
            }
        }
    }
    // The process is gone: callers waiting for results learn it now.
    pending.lock().unwrap().clear();
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A short, one-line-per-event form of go-peer lines, without block traces.
fn summary(lines: &[Value]) -> String {
    lines
        .iter()
        .filter(|l| l["type"] != "gs_block")
        .map(|l| {
            if l["type"] == "event" {
                format!(
                    "  {} {} sent={} received={} {}",
                    l["code"].as_str().unwrap_or("?"),
                    l["status"].as_str().unwrap_or("?"),
                    l["sent"],
                    l["received"],
                    l["message"].as_str().unwrap_or("")
                )
            } else {
                format!("  {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A channel id as go-peer writes it.
pub fn chid_json(chid: &ChannelId) -> Value {
    json!({
        "initiator": chid.initiator.to_string(),
        "responder": chid.responder.to_string(),
        "id": chid.id.0.to_string(),
    })
}

/// A channel id from go-peer's JSON.
pub fn chid_from_json(v: &Value) -> ChannelId {
    ChannelId::new(
        v["initiator"].as_str().unwrap().parse().unwrap(),
        v["responder"].as_str().unwrap().parse().unwrap(),
        TransferId(v["id"].as_str().unwrap().parse().unwrap()),
    )
}

impl GoPeer {
    /// Accepts every voucher of the interop type, asking no payment.
    pub async fn accept_all(&self) {
        self.ok(
            "policy",
            json!({"voucher_type": crate::VOUCHER_TYPE, "result_type": crate::RESULT_TYPE,
                   "accept": true}),
        )
        .await;
    }

    /// Accepts every voucher of the interop type, as a client paying whenever it is asked
    /// (`auto_pay`) or only when told ([`GoPeer::pay`]).
    pub async fn client_pays(&self, auto_pay: bool) {
        self.ok(
            "policy",
            json!({"voucher_type": crate::VOUCHER_TYPE, "result_type": crate::RESULT_TYPE,
                   "accept": true, "auto_pay": auto_pay}),
        )
        .await;
    }

    /// Sends a payment voucher of `deal` on `chid`: `paid` bytes in all so far.
    pub async fn pay(&self, chid: &ChannelId, deal: u64, paid: u64) {
        self.ok(
            "send_voucher",
            json!({"chid": chid_json(chid), "voucher": {"type": crate::VOUCHER_TYPE,
                   "value": {"deal": deal, "paid": paid}}}),
        )
        .await;
    }

    /// Slows the peer's graphsync sends at their source: `ms` before each block, so a test
    /// can act mid-transfer with little in flight.
    pub async fn throttle(&self, ms: u64) {
        self.ok("throttle", json!({"block_delay_ms": ms})).await;
    }

    /// Connects to a peer (an address with `/p2p`).
    pub async fn connect(&self, addr: &Multiaddr) {
        self.ok("connect", json!({"addr": addr.to_string()})).await;
    }

    /// Writes `size` seeded random bytes to a file in `dir` and imports it as UnixFS the way
    /// the interop tests cut files (256 KiB chunks, raw leaves, CIDv1); its root and bytes.
    pub async fn import_random(&self, dir: &Path, size: usize, seed: u64) -> (Cid, Vec<u8>) {
        let path = dir.join(format!("source-{seed}.bin"));
        let data = crate::data::random_file(&path, size, seed);
        let r = self
            .ok(
                "import",
                json!({"path": path, "chunk_size": crate::CHUNK, "raw_leaves": true,
                       "cid_version": 1}),
            )
            .await;
        (r["root"].as_str().unwrap().parse().unwrap(), data)
    }

    /// Has the peer write the file under `root` to a file in `dir`, and compares it.
    pub async fn assert_file(&self, dir: &Path, root: &Cid, data: &[u8]) {
        let out = dir.join(format!("exported-{root}.bin"));
        self.ok("export", json!({"root": root.to_string(), "path": out}))
            .await;
        crate::data::assert_file_eq(&out, data);
    }

    /// Opens a `"pull"` or `"push"` of the whole DAG under `root` with `peer`, with the voucher
    /// of `deal`; the channel's id.
    pub async fn open(&self, kind: &str, peer: PeerId, root: &Cid, deal: u64) -> ChannelId {
        let r = self
            .ok(
                kind,
                json!({"peer": peer.to_string(), "root": root.to_string(),
                       "voucher": voucher_json(deal, 0)}),
            )
            .await;
        chid_from_json(&r["chid"])
    }
}

/// A voucher as go-peer takes it: `{"type", "value"}` with the value as DAG-JSON.
pub fn voucher_json(deal: u64, paid: u64) -> Value {
    json!({"type": crate::VOUCHER_TYPE, "value": {"deal": deal, "paid": paid}})
}
