//! Side by side, in one run: a pull of one file (1 GiB by default) between real processes,
//! each on its own durable store, for the four pairings of our `datatransfer` CLI and the Go
//! peer (go-data-transfer v2 on go-graphsync v0.18, leveldb store: `interop/go-peer
//! --persist`), next to raw TCP on loopback. Prints the wall time, MB/s and each process's
//! peak RSS (VmHWM) and CPU seconds per pairing. One more row: Rust -> Rust with the client
//! writing its blocks past the page cache (`pull --direct-io`).
//!
//! `cargo bench -p datatransfer-cli --bench side_by_side` (`SIDE_MIB=256` for a quicker run;
//! `SIDE_ONLY=rust` for Rust -> Rust alone, to see memory against larger files;
//! `SIDE_ALTERNATE=N` for N more rounds of Go -> Go and Rust -> Go in turn, whose times it
//! compares: the two pairings that wait on the Go client).
//! Needs Go (the Go peer is built as for the interop tests).
//!
//! What is timed: for a Rust client, the `datatransfer pull` process from spawn to exit (its
//! start, dial, transfer and the store's final flush); for a Go client, from its `pull`
//! command to its `Completed` event (it is already running and connected). The providers
//! imported the file before: both stores hold the same blocks (1 MiB raw leaves, CIDv1,
//! kubo's balanced layout; the roots are checked equal). A last row runs Go -> Go with both
//! Go peers on memory stores, to show Go's transfer without its leveldb writes.

#![allow(clippy::unwrap_used)] // A bench: a failure should stop it loudly.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, Server};
use datatransfer_interop::go::{self, GoPeer, GoPeerOptions};
use serde_json::json;

fn mib() -> u64 {
    std::env::var("SIDE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// A process's peak resident memory so far (VmHWM), in bytes.
fn peak(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time a process has used so far, all its threads, user and system (`/proc/PID/stat`,
/// in the kernel's fixed 100 ticks a second).
fn cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// A process's share of one pull: its peak RSS, and the CPU seconds it spent.
#[derive(Clone, Copy, Default)]
struct Usage {
    peak: Option<u64>,
    cpu: Option<f64>,
}

impl Usage {
    /// `pid`'s peak so far, and its CPU time since `cpu_before`.
    fn of(pid: u32, cpu_before: Option<f64>) -> Self {
        Self {
            peak: peak(pid),
            cpu: cpu(pid).zip(cpu_before).map(|(a, b)| a - b),
        }
    }
}

fn fmt_cpu(cpu: Option<f64>) -> String {
    cpu.map_or("-".into(), |c| format!("{c:.1} s"))
}

/// Starts a new peak for `pid` (its current RSS).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{} MiB", b >> 20))
}

/// Seeded bytes written in 1 MiB pieces (no 1 GiB buffer).
fn write_input(path: &Path, mib: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

/// 1 MiB writes through one loopback TCP connection: the ceiling on this machine.
fn raw_tcp(bytes: u64) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while s.read(&mut buf).unwrap() > 0 {}
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    for _ in 0..(bytes >> 20) {
        s.write_all(&chunk).unwrap();
    }
    drop(s);
    reader.join().unwrap();
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

struct Row {
    name: &'static str,
    secs: f64,
    bytes: u64,
    provider: Usage,
    client: Usage,
}

impl Row {
    /// A pairing's row from what its pull returned.
    fn new(name: &'static str, (secs, bytes, provider, client): (f64, u64, Usage, Usage)) -> Self {
        Self {
            name,
            secs,
            bytes,
            provider,
            client,
        }
    }
}

/// `datatransfer pull` of `root` from `addr` into the fresh data dir `dir` (removed after),
/// with `extra` arguments; times it and follows both processes' peaks and CPU.
fn rust_pull(
    addr: &str,
    root: &str,
    dir: &Path,
    provider_pid: u32,
    extra: &[&str],
) -> (f64, u64, Usage, Usage) {
    reset_peak(provider_pid);
    let provider_cpu = cpu(provider_pid);
    let start = Instant::now();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_datatransfer"))
            .args(["pull", addr, root, "--json", "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut out = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    // The client's figures as last seen before it exits (CPU: all but its last 20 ms).
    let mut client = Usage::default();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        let now = Usage::of(pid, Some(0.0));
        client.peak = client.peak.max(now.peak);
        client.cpu = now.cpu.or(client.cpu);
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let printed = reader.join().unwrap();
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "pull failed: {err}\n{printed}");
    let last = printed.lines().last().unwrap_or_default();
    let received: u64 = field_number(last, "received");
    let _ = std::fs::remove_dir_all(dir);
    (
        secs,
        received,
        Usage::of(provider_pid, provider_cpu),
        client,
    )
}

fn field_number(line: &str, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v[key].as_u64().unwrap()
}

/// A Go peer on a leveldb store in `dir`.
async fn go_peer(seed: u8, dir: &Path) -> GoPeer {
    GoPeer::start(GoPeerOptions {
        persist: true,
        trace_blocks: false,
        ..GoPeerOptions::new(seed, dir)
    })
    .await
}

/// The Go peer `client` pulls `root` from the provider at `addr` with `voucher`.
async fn go_pull(
    client: &GoPeer,
    provider: datatransfer::PeerId,
    addr: &datatransfer::Multiaddr,
    root: &str,
    voucher: serde_json::Value,
    provider_pid: u32,
) -> (f64, u64, Usage, Usage) {
    client.connect(addr).await;
    reset_peak(provider_pid);
    let client_pid = client.pid().unwrap();
    let (provider_cpu, client_cpu) = (cpu(provider_pid), cpu(client_pid));
    let start = Instant::now();
    let opened = client
        .ok(
            "pull",
            json!({ "peer": provider.to_string(), "root": root, "voucher": voucher }),
        )
        .await;
    let chid = go::chid_from_json(&opened["chid"]);
    let done = client.wait_finished(&chid, 1800).await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done["status"], "Completed", "{done}");
    let received = done["received"].as_u64().unwrap_or(0);
    (
        secs,
        received,
        Usage::of(provider_pid, provider_cpu),
        Usage::of(client_pid, client_cpu),
    )
}

/// A fresh Go client on a leveldb store in `dir` (removed after) pulls `root` with
/// `voucher` from the provider `peer` at `addr`, whose process is `provider_pid`.
#[allow(clippy::too_many_arguments)] // One pull's whole description, spelled out at each call.
fn go_client_pull(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    seed: u8,
    peer: datatransfer::PeerId,
    addr: &datatransfer::Multiaddr,
    provider_pid: u32,
    root: &str,
    voucher: serde_json::Value,
) -> (f64, u64, Usage, Usage) {
    std::fs::create_dir_all(dir).unwrap();
    let r = rt.block_on(async {
        let client = go_peer(seed, dir).await;
        let r = go_pull(&client, peer, addr, root, voucher, provider_pid).await;
        client.shutdown().await;
        r
    });
    let _ = std::fs::remove_dir_all(dir);
    r
}

/// `s`'s mean, least and greatest.
fn spread(s: &[f64]) -> (f64, f64, f64) {
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    let min = s.iter().copied().fold(f64::INFINITY, f64::min);
    let max = s.iter().copied().fold(0.0, f64::max);
    (mean, min, max)
}

/// `SIDE_ONLY=rust`: Rust -> Rust alone (no Go, half the disk), for sizes where memory
/// use is the question: each process's peak RSS against the file's size.
fn rust_only(work: &Path, input: &Path, mib: u64) {
    let serve_dir = work.join("serve");
    std::fs::create_dir_all(&serve_dir).unwrap();
    let started = Instant::now();
    let server = Server::start(&serve_dir, &[input], &[]);
    let import = started.elapsed().as_secs_f64();
    let pid = server.child.0.id();
    let import_peak = peak(pid);
    let dir = work.join("rust-client");
    let (secs, got, p, c) = rust_pull(&server.addr, &server.roots[0], &dir, pid, &[]);
    println!(
        "\nRust -> Rust alone, one {mib} MiB file: import {import:.1} s (serve peak {}), pull {secs:.2} s, {:.0} MB/s, {got} bytes; peak RSS provider {}, client {}",
        mb(import_peak),
        (mib << 20) as f64 / secs / 1e6,
        mb(p.peak),
        mb(c.peak)
    );
}

fn main() {
    let mib = mib();
    let bytes = mib << 20;
    let work = tempfile::Builder::new()
        .prefix("side-")
        .tempdir_in("/tmp")
        .unwrap();
    let input = work.path().join("input.bin");
    write_input(&input, mib);
    if std::env::var("SIDE_ONLY").as_deref() == Ok("rust") {
        rust_only(work.path(), &input, mib);
        return;
    }
    go::binary();
    let tcp = raw_tcp(bytes);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();

    // The providers, each with the file imported in its own store.
    let serve_dir = work.path().join("serve");
    std::fs::create_dir_all(&serve_dir).unwrap();
    let server = Server::start(&serve_dir, &[&input], &[]);
    let root = server.roots[0].clone();
    let serve_pid = server.child.0.id();
    let serve_import_peak = peak(serve_pid);
    let go_dir = work.path().join("go-provider");
    std::fs::create_dir_all(&go_dir).unwrap();
    let (go_provider, go_import_peak) = rt.block_on(async {
        let p = go_peer(11, &go_dir).await;
        let imported = p
            .ok(
                "import",
                json!({ "path": input, "chunk_size": 1 << 20, "cid_version": 1, "raw_leaves": true }),
            )
            .await;
        assert_eq!(imported["root"], root.as_str(), "both importers make one root");
        // Our CLI's pulls carry its token voucher type.
        p.ok("policy", json!({ "voucher_type": "DatatransferCliToken", "accept": true }))
            .await;
        let peak = peak(p.pid().unwrap());
        (p, peak)
    });
    let go_pid = go_provider.pid().unwrap();

    // Go -> Go.
    let go_to_go = |dir: &Path, seed| {
        go_client_pull(
            &rt,
            dir,
            seed,
            go_provider.peer_id,
            &go_provider.multiaddr(),
            go_pid,
            &root,
            go::voucher_json(1, 0),
        )
    };
    rows.push(Row::new(
        "Go -> Go",
        go_to_go(&work.path().join("go-client-1"), 12),
    ));

    // Rust -> Rust.
    let dir = work.path().join("rust-client-1");
    rows.push(Row::new(
        "Rust -> Rust",
        rust_pull(&server.addr, &root, &dir, serve_pid, &[]),
    ));

    // Rust -> Rust, the client writing its blocks past the page cache (`--direct-io`).
    let dir = work.path().join("rust-client-direct");
    rows.push(Row::new(
        "Rust -> Rust direct",
        rust_pull(&server.addr, &root, &dir, serve_pid, &["--direct-io"]),
    ));

    // Go provider -> Rust client.
    let go_addr = go_provider.multiaddr().to_string();
    let dir = work.path().join("rust-client-2");
    rows.push(Row::new(
        "Go -> Rust",
        rust_pull(&go_addr, &root, &dir, go_pid, &[]),
    ));

    // Rust provider -> Go client.
    let serve_addr: datatransfer::Multiaddr = server.addr.parse().unwrap();
    let serve_peer = datatransfer::peer_of(&serve_addr).unwrap();
    let rust_to_go = |dir: &Path, seed| {
        let token = json!({ "type": "DatatransferCliToken", "value": { "token": "" } });
        go_client_pull(
            &rt,
            dir,
            seed,
            serve_peer,
            &serve_addr,
            serve_pid,
            &root,
            token,
        )
    };
    rows.push(Row::new(
        "Rust -> Go",
        rust_to_go(&work.path().join("go-client-2"), 13),
    ));

    // `SIDE_ALTERNATE=N`: N more rounds of Go -> Go and Rust -> Go in turn, each with a new
    // client, so that neither gains from its place in the run (the disk's state, what ran
    // just before): both wait on the Go client's leveldb, and this says whether our
    // provider makes it slower.
    let rounds: u8 = std::env::var("SIDE_ALTERNATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Each pairing's times and its Go client's CPU seconds.
    let (mut go_runs, mut rust_runs) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..rounds {
        let seed = 20u8.wrapping_add(round.wrapping_mul(2));
        for (runs, (secs, _, _, client)) in [
            (
                &mut go_runs,
                go_to_go(&work.path().join("go-client-alt"), seed),
            ),
            (
                &mut rust_runs,
                rust_to_go(&work.path().join("go-client-alt"), seed.wrapping_add(1)),
            ),
        ] {
            runs[0].push(secs);
            runs[1].extend(client.cpu);
        }
    }
    rt.block_on(go_provider.shutdown());
    drop(server);

    // Go -> Go again with both stores in memory: how fast Go moves bytes when its leveldb
    // (a synced write per received block) is out of the way. An upper bound, not a node.
    let dir = work.path().join("go-memory");
    std::fs::create_dir_all(&dir).unwrap();
    let (secs, got, p, c) = rt.block_on(async {
        let memory = |seed| GoPeer::start(GoPeerOptions {
            trace_blocks: false,
            ..GoPeerOptions::new(seed, &dir)
        });
        let provider = memory(14).await;
        let imported = provider
            .ok(
                "import",
                json!({ "path": input, "chunk_size": 1 << 20, "cid_version": 1, "raw_leaves": true }),
            )
            .await;
        assert_eq!(imported["root"], root.as_str());
        let client = memory(15).await;
        let pid = provider.pid().unwrap();
        let r = go_pull(&client, provider.peer_id, &provider.multiaddr(), &root, go::voucher_json(1, 0), pid).await;
        client.shutdown().await;
        provider.shutdown().await;
        r
    });
    rows.push(Row::new("Go -> Go (mem)", (secs, got, p, c)));

    println!(
        "\nside by side: one {mib} MiB file (1 MiB raw leaves), provider -> client, each process on a durable store"
    );
    println!("raw TCP loopback (one connection, 1 MiB writes): {tcp:.0} MB/s");
    println!(
        "import peaks: Rust serve {}, Go peer {}",
        mb(serve_import_peak),
        mb(go_import_peak)
    );
    println!(
        "{:<20} {:>8} {:>10} {:>14} {:>20} {:>18} {:>13} {:>11}",
        "pairing",
        "s",
        "MB/s",
        "bytes",
        "provider peak RSS",
        "client peak RSS",
        "provider CPU",
        "client CPU"
    );
    for r in &rows {
        println!(
            "{:<20} {:>8.2} {:>10.0} {:>14} {:>20} {:>18} {:>13} {:>11}",
            r.name,
            r.secs,
            bytes as f64 / r.secs / 1e6,
            r.bytes,
            mb(r.provider.peak),
            mb(r.client.peak),
            fmt_cpu(r.provider.cpu),
            fmt_cpu(r.client.cpu)
        );
    }
    let rust = rows[1].secs;
    let go = rows[0].secs;
    println!("Rust -> Rust is {:.2}x Go -> Go", go / rust);
    if rounds > 0 {
        let ((g, g_min, g_max), (r, r_min, r_max)) = (spread(&go_runs[0]), spread(&rust_runs[0]));
        let (g_cpu, r_cpu) = (spread(&go_runs[1]).0, spread(&rust_runs[1]).0);
        println!(
            "alternated, {rounds} rounds: Go -> Go {g:.2} s ({g_min:.2}-{g_max:.2}, Go client CPU {g_cpu:.1} s), Rust -> Go {r:.2} s ({r_min:.2}-{r_max:.2}, Go client CPU {r_cpu:.1} s): Rust -> Go takes {:.2}x the time",
            r / g
        );
    }
    println!(
        "(CPU: seconds each process spent on the pull, all threads, user and system; a pairing whose client used far more than its provider waited on the client)"
    );
    println!(
        "(Go -> Go (mem): both Go peers on memory stores, the provider holding the whole file; an upper bound for Go's transfer alone)"
    );
}
