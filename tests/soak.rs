//! The chaos soak: several nodes, each a process of its own (`soak-node`) with its channels
//! in SQLite and its blocks on disk, pull files from each other and push files to each other
//! (one transfer in four a push) while the soak disconnects them, pauses and resumes
//! channels, cancels some, and SIGKILLs nodes and starts them again on the same files. All
//! choices come from one seed.
//!
//! Responders charge for what they serve or take (a payment every 64 KiB, see `PAY_EVERY`),
//! and initiators pay when asked, through the chaos.
//!
//! Invariants checked at the end: every transfer not cancelled completed with its file's
//! bytes intact at its receiver, and paid at least once if its DAG spans two payment
//! intervals; its receiver's byte counter is exact (the DAG's block bytes, each block once)
//! when the receiver was never killed, and never above that when it was; every channel on
//! every node reached a terminal status within the monitor's limits; no process panicked;
//! each node's SQLite files stayed under 32 MiB. A failed soak keeps its nodes' files and
//! prints where.
//!
//! A short soak (120 transfers over 30 s, about 40 s in all) runs in `cargo test`:
//!
//! ```text
//! cargo test -p datatransfer-integration-tests --test soak -- --nocapture
//! ```
//!
//! A long one: `SOAK_SEED`, `SOAK_NODES`, `SOAK_TRANSFERS`, `SOAK_SECS` (the chaos's
//! length) and `SOAK_PUSHES` (the percentage of pushes) change it, for example
//! `SOAK_SEED=7 SOAK_NODES=6 SOAK_TRANSFERS=2000 SOAK_SECS=300`. The seed fixes every
//! choice; the timing of processes still varies.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use datatransfer_integration_tests::{dag_bytes, fnv, import, random_bytes};
use datatransfer_ipld::blockstore::MemoryBlockstore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// Each node sends at most this many bytes a second, so transfers last long enough to be
/// broken.
const RATE: u64 = 256 << 10;

/// Responders pause every this many bytes until their initiator pays (`SOAK_PAY_EVERY`; 0
/// for free transfers): most transfers pay once to a few times, through the kills and
/// disconnects.
const PAY_EVERY: u64 = 64 << 10;

/// A small seeded generator (xorshift64*): the soak's only source of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One soak node's process.
struct Proc {
    seed: u8,
    dir: PathBuf,
    port: u16,
    peer: String,
    addr: String,
    child: Option<(Child, ChildStdin, Lines<BufReader<ChildStdout>>)>,
    kills: u32,
}

impl Proc {
    async fn start(seed: u8, dir: &Path, port: u16) -> Self {
        let mut p = Self {
            seed,
            dir: dir.join(format!("node-{seed}")),
            port,
            peer: String::new(),
            addr: String::new(),
            child: None,
            kills: 0,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_soak-node"))
            .args(["--seed", &self.seed.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--port", &self.port.to_string()])
            .args(["--rate", &RATE.to_string()])
            .args(match env_or("SOAK_PAY_EVERY", PAY_EVERY) {
                0 => vec![],
                every => vec!["--pay-every".to_string(), every.to_string()],
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the node did not start within 30 s")
            .unwrap()
            .expect("the node exited at start");
        let hello: Value = serde_json::from_str(&first).unwrap();
        self.peer = hello["peer"].as_str().unwrap().into();
        self.addr = hello["addr"].as_str().unwrap().into();
        self.port = self.addr.rsplit('/').next().unwrap().parse().unwrap();
        self.child = Some((child, stdin, lines));
    }

    /// Tells the node where the others listen (it forgets when killed).
    async fn learn(&mut self, book: &[(String, String)]) {
        for (peer, addr) in book {
            if *peer != self.peer {
                self.call(json!({"cmd": "peer", "peer": peer, "addr": addr}))
                    .await;
            }
        }
    }

    /// Starts the node again on its files, and tells it where the others listen.
    async fn restart(&mut self, book: &[(String, String)]) {
        self.spawn().await;
        self.learn(book).await;
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    async fn call(&mut self, cmd: Value) -> Value {
        let (_, stdin, lines) = self.child.as_mut().expect("the node is running");
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        let line = timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("node {} did not answer {cmd} within 30 s", self.seed))
            .unwrap()
            .unwrap_or_else(|| panic!("node {} exited on {cmd}", self.seed));
        serde_json::from_str(&line).unwrap()
    }

    async fn kill(&mut self) {
        if let Some((mut child, _, _)) = self.child.take() {
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
            self.kills += 1;
        }
    }

    fn panicked(&self) -> bool {
        std::fs::read_to_string(self.dir.join("stderr.log"))
            .unwrap_or_default()
            .contains("panicked")
    }
}

/// A file one node holds and sends.
struct File {
    provider: usize,
    root: String,
    len: usize,
    fnv: u64,
    dag_bytes: u64,
}

/// A pull or a push the soak opened.
struct Transfer {
    /// The node that opened it (and pauses, resumes or cancels it): the receiver of a pull,
    /// the sender (`file.provider`) of a push.
    initiator: usize,
    /// The node the file goes to.
    receiver: usize,
    push: bool,
    file: File,
    chid: Value,
    cancelled: bool,
    /// The receiver's kill count when the transfer opened.
    kills_at_open: u32,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bytes of every block of a file imported as the soak nodes import it.
fn dag_bytes_of(data: &[u8]) -> u64 {
    let store = MemoryBlockstore::new();
    let root = import(&store, data, 16 << 10).root;
    dag_bytes(&store, root)
}

/// The soak's directory, removed when the soak passes and kept when it fails: each node's
/// `stderr.log`, `channels.sqlite` and blocks, for the failure to be looked into.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("held until dropped").path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!(
                "the soak failed: its nodes' files (stderr.log, channels.sqlite, blocks) are kept in {}",
                dir.keep().display()
            );
        }
    }
}

async fn channels(p: &mut Proc) -> Vec<Value> {
    p.call(json!({"cmd": "channels"})).await["channels"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    let seed = env_or("SOAK_SEED", 1);
    let n_nodes = env_or("SOAK_NODES", 4) as usize;
    let n_transfers = env_or("SOAK_TRANSFERS", 120) as usize;
    let chaos_for = Duration::from_secs(env_or("SOAK_SECS", 30));
    let push_percent = env_or("SOAK_PUSHES", 25);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let dir = KeptOnFailure(Some(tempfile::tempdir().unwrap()));
    let started = Instant::now();

    let mut nodes = Vec::new();
    for i in 0..n_nodes {
        nodes.push(Proc::start(i as u8, dir.path(), 0).await);
    }
    let book: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.peer.clone(), n.addr.clone()))
        .collect();
    for n in &mut nodes {
        n.learn(&book).await;
    }

    // Chaos while the transfers open, a few per tick.
    let mut transfers: Vec<Transfer> = Vec::new();
    let mut paused: Vec<(usize, Instant)> = Vec::new();
    let mut dead: Vec<(usize, Instant)> = Vec::new();
    let mut actions: HashMap<&str, u32> = HashMap::new();
    let ticks = (chaos_for.as_millis() / 50).max(1) as usize;
    let mut tick = 0;
    while started.elapsed() < chaos_for || transfers.len() < n_transfers {
        tick += 1;
        // Transfers spread over the chaos: as many opened by now as its share of the time.
        while transfers.len() < (n_transfers * tick / ticks).min(n_transfers) {
            // A file of its own for each transfer, 16 KiB to 256 KiB, so a receiver never
            // holds a DAG's blocks from another transfer and every counter can be exact.
            let p = rng.below(n_nodes as u64) as usize;
            let client = (p + 1 + rng.below(n_nodes as u64 - 1) as usize) % n_nodes;
            if !nodes[client].alive() || !nodes[p].alive() {
                break;
            }
            let len = (16 << 10) + rng.below(240 << 10) as usize;
            let fseed = seed * 1_000_000 + transfers.len() as u64;
            let data = random_bytes(len, fseed);
            let r = nodes[p]
                .call(json!({"cmd": "import", "seed": fseed, "size": len}))
                .await;
            let file = File {
                provider: p,
                root: r["root"].as_str().unwrap().into(),
                len,
                fnv: fnv(&data),
                dag_bytes: dag_bytes_of(&data),
            };
            let push = rng.chance(push_percent);
            let (initiator, other) = if push { (p, client) } else { (client, p) };
            let peer = nodes[other].peer.clone();
            let cmd = if push { "push" } else { "pull" };
            let r = nodes[initiator]
                .call(json!({"cmd": cmd, "peer": peer, "root": file.root}))
                .await;
            let kills_at_open = nodes[client].kills;
            transfers.push(Transfer {
                initiator,
                receiver: client,
                push,
                file,
                chid: r["chid"].clone(),
                cancelled: false,
                kills_at_open,
            });
        }
        let a = rng.below(n_nodes as u64) as usize;
        let b = (a + 1 + rng.below(n_nodes as u64 - 1) as usize) % n_nodes;
        if rng.chance(5) && nodes[a].alive() {
            let peer = nodes[b].peer.clone();
            nodes[a]
                .call(json!({"cmd": "disconnect", "peer": peer}))
                .await;
            *actions.entry("disconnect").or_default() += 1;
        }
        // Pauses and cancels hit recent transfers, which are likely still running.
        let recent = |rng: &mut Rng, n: usize| n - 1 - rng.below(n.min(20) as u64) as usize;
        if rng.chance(15) && !transfers.is_empty() {
            let t = recent(&mut rng, transfers.len());
            let c = transfers[t].initiator;
            if nodes[c].alive() && !transfers[t].cancelled {
                let chid = transfers[t].chid.clone();
                let r = nodes[c].call(json!({"cmd": "pause", "chid": chid})).await;
                if r.get("error").is_none() {
                    paused.push((
                        t,
                        Instant::now() + Duration::from_millis(300 + rng.below(700)),
                    ));
                    *actions.entry("pause").or_default() += 1;
                } else {
                    *actions.entry("pause refused").or_default() += 1;
                }
            }
        }
        if rng.chance(3) && !transfers.is_empty() {
            let t = recent(&mut rng, transfers.len());
            let c = transfers[t].initiator;
            if nodes[c].alive() && !transfers[t].cancelled {
                let chid = transfers[t].chid.clone();
                let r = nodes[c].call(json!({"cmd": "cancel", "chid": chid})).await;
                if r.get("error").is_none() {
                    transfers[t].cancelled = true;
                    *actions.entry("cancel").or_default() += 1;
                } else {
                    *actions.entry("cancel refused").or_default() += 1;
                }
            }
        }
        if rng.chance(2) && nodes[a].alive() {
            nodes[a].kill().await;
            dead.push((
                a,
                Instant::now() + Duration::from_millis(200 + rng.below(600)),
            ));
            *actions.entry("kill").or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        for (d, at) in dead.clone() {
            if at <= now && !nodes[d].alive() {
                nodes[d].restart(&book).await;
            }
        }
        dead.retain(|(d, _)| !nodes[*d].alive());
        let due: Vec<usize> = paused
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(t, _)| *t)
            .collect();
        paused.retain(|(_, at)| *at > now);
        for t in due {
            let c = transfers[t].initiator;
            if nodes[c].alive() {
                let chid = transfers[t].chid.clone();
                nodes[c].call(json!({"cmd": "resume", "chid": chid})).await;
            } else {
                paused.push((t, now + Duration::from_millis(200)));
            }
        }
    }
    // Calm: every node up, every pause of ours resumed.
    for (d, _) in dead.drain(..) {
        if !nodes[d].alive() {
            nodes[d].restart(&book).await;
        }
    }
    for (t, _) in paused.drain(..) {
        let chid = transfers[t].chid.clone();
        nodes[transfers[t].initiator]
            .call(json!({"cmd": "resume", "chid": chid}))
            .await;
    }
    let chaos_done = started.elapsed();

    // Every channel on every node ends, within the monitor's limits.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut finals: HashMap<(usize, String), Value> = HashMap::new();
    loop {
        let mut open = 0;
        finals.clear();
        for (i, n) in nodes.iter_mut().enumerate() {
            for ch in channels(n).await {
                let status = ch["status"].as_str().unwrap();
                if !["Completed", "Cancelled", "Failed"].contains(&status) {
                    open += 1;
                }
                finals.insert((i, ch["chid"].to_string()), ch);
            }
        }
        if open == 0 {
            break;
        }
        if Instant::now() >= deadline {
            for ((i, key), ch) in &finals {
                let status = ch["status"].as_str().unwrap();
                if !["Completed", "Cancelled", "Failed"].contains(&status) {
                    let chid: Value = serde_json::from_str(key).unwrap();
                    let evs = nodes[*i].call(json!({"cmd": "events", "chid": chid})).await;
                    eprintln!("open on node {i}: {ch}\n  events: {evs}");
                    for ((j, other), och) in &finals {
                        // Its other side, with its log.
                        if j != i && other == key {
                            let evs = nodes[*j].call(json!({"cmd": "events", "chid": chid})).await;
                            eprintln!("  on node {j}: {och}\n  events: {evs}");
                        }
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{open} channels still open 120 s after the chaos ended"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut completed = 0;
    let mut exact = 0;
    let pay_every = env_or("SOAK_PAY_EVERY", PAY_EVERY);
    let mut payments = 0;
    let mut pushes = 0;
    for t in &transfers {
        let key = (t.initiator, t.chid.to_string());
        let st = finals
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} is not in its client's store"));
        let status = st["status"].as_str().unwrap();
        if t.cancelled {
            assert!(
                ["Cancelled", "Completed"].contains(&status),
                "cancelled, then {st}"
            );
            continue;
        }
        let elsewhere: Vec<String> = finals
            .iter()
            .filter(|((i, c), _)| *c == key.1 && *i != t.initiator)
            .map(|((i, _), v)| format!("node {i}: {v}"))
            .collect();
        if status != "Completed" {
            let chid = t.chid.clone();
            let evs = nodes[t.initiator]
                .call(json!({"cmd": "events", "chid": chid.clone()}))
                .await;
            eprintln!("initiator's events (a push: {}): {evs}", t.push);
            let responder = if t.push { t.receiver } else { t.file.provider };
            let evs = nodes[responder]
                .call(json!({"cmd": "events", "chid": chid}))
                .await;
            eprintln!("responder's events: {evs}");
            for n in &nodes {
                let log = std::fs::read_to_string(n.dir.join("stderr.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!("node {} stderr (last lines first): {tail:#?}", n.seed);
            }
        }
        assert_eq!(
            status, "Completed",
            "{st} (a push: {}); sender {} killed {} times; elsewhere: {elsewhere:?}",
            t.push, t.file.provider, nodes[t.file.provider].kills
        );
        completed += 1;
        pushes += usize::from(t.push);
        let d = nodes[t.receiver]
            .call(json!({"cmd": "digest", "root": t.file.root}))
            .await;
        assert_eq!(d["len"].as_u64(), Some(t.file.len as u64), "{d}");
        assert_eq!(d["fnv"].as_u64(), Some(t.file.fnv), "{d}");
        // The opening voucher, then one per payment. A DAG of two intervals or more was
        // asked to pay at least once on the way, and completed only when paid.
        let paid = st["vouchers"].as_u64().unwrap().saturating_sub(1);
        payments += paid;
        if pay_every > 0 && t.file.dag_bytes >= 2 * pay_every {
            assert!(paid >= 1, "{} bytes served unpaid: {st}", t.file.dag_bytes);
        }
        // The receiver's counter (of a push: its own record of the channel).
        let received = if t.push {
            let theirs = finals
                .get(&(t.receiver, key.1.clone()))
                .unwrap_or_else(|| panic!("a completed push not in its receiver's store: {st}"));
            theirs["received"].as_u64().unwrap()
        } else {
            st["received"].as_u64().unwrap()
        };
        if nodes[t.receiver].kills == t.kills_at_open {
            assert_eq!(received, t.file.dag_bytes, "{st}");
            exact += 1;
        } else {
            assert!(received <= t.file.dag_bytes, "{st}");
        }
    }
    let mut store_bytes = Vec::new();
    for n in &mut nodes {
        assert!(
            !n.panicked(),
            "node {} panicked: see its stderr.log",
            n.seed
        );
        let b = n.call(json!({"cmd": "store_bytes"})).await["bytes"]
            .as_u64()
            .unwrap();
        assert!(b < 32 << 20, "node {}: {b} bytes of SQLite", n.seed);
        store_bytes.push(b);
    }
    let cancelled = transfers.iter().filter(|t| t.cancelled).count();
    let kills: u32 = nodes.iter().map(|n| n.kills).sum();
    eprintln!(
        "soak seed {seed}: {} nodes, {} transfers ({completed} completed and verified, {pushes} \
         of them pushes, {exact} with exact counters, {cancelled} cancelled, {payments} \
         payments), actions \
         {actions:?} ({kills} kills), chaos {:.1} s, all ended at {:.1} s, SQLite bytes per \
         node {store_bytes:?}",
        n_nodes,
        transfers.len(),
        chaos_done.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
}
