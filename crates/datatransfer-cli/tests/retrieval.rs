//! Filecoin retrieval against the Go implementations the world runs, through the real
//! binaries: lassie v0.25.0 fetches from our `serve --retrieval`, and our `retrieve` fetches
//! from a Go provider on go-data-transfer v2 and go-retrieval-types that validates as Boost's
//! unpaid path does (`interop/go-retrieval`). Both are built from the Go module proxy on
//! first use (see `datatransfer_interop::go`).

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use datatransfer_interop::go;

/// A CID no node in these tests holds.
const MISSING: &str = "bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzako47346wosmu";

/// `lassie fetch` from `addr` into `car`; its output.
fn lassie(addr: &str, root: &str, car: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(go::lassie())
        .args(["fetch", "--providers", addr, "--protocols", "graphsync"])
        .args(["--global-timeout", "60s", "-o"])
        .arg(car)
        .args(extra)
        .arg(root)
        .output()
        .unwrap()
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lassie_fetches_a_file_and_a_root_block_from_serve_retrieval_as_our_retrieve_does() {
    let dirs = dirs_with_file(20 << 20, 41);
    let mut server = Server::start(dirs.server_dir.path(), &[&dirs.input], &["--retrieval"]);
    let root = server.roots[0].clone();
    let out = dirs.client_dir.path();

    // The whole file: lassie's CAR and ours hold the same blocks in the same order.
    let theirs = out.join("lassie.car");
    assert_ok(&lassie(&server.addr, &root, &theirs, &[]), "lassie fetch");
    let ours = out.join("ours.car");
    let file = out.join("file.bin");
    let printed = succeeds(&[
        "retrieve",
        &server.addr,
        &root,
        "--car",
        ours.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
        "--json",
    ]);
    let last = printed.lines().last().unwrap();
    assert!(last.contains("\"confirmed\":true"), "{last}");
    assert_eq!(std::fs::read(&file).unwrap(), dirs.data);
    let (theirs, ours) = (
        std::fs::read(&theirs).unwrap(),
        std::fs::read(&ours).unwrap(),
    );
    assert!(theirs.len() > 20 << 20);
    assert!(theirs == ours, "lassie's CAR differs from ours");

    // Only the root block (lassie's --dag-scope block, our matcher selector).
    let theirs = out.join("lassie-block.car");
    assert_ok(
        &lassie(&server.addr, &root, &theirs, &["--dag-scope", "block"]),
        "lassie fetch --dag-scope block",
    );
    let ours = out.join("ours-block.car");
    succeeds(&[
        "retrieve",
        &server.addr,
        &root,
        "--car",
        ours.to_str().unwrap(),
        "--selector",
        r#"{".":{}}"#,
    ]);
    let theirs = std::fs::read(&theirs).unwrap();
    assert!(theirs.len() < 4096, "one block: {} bytes", theirs.len());
    assert!(
        theirs == std::fs::read(&ours).unwrap(),
        "root-block CARs differ"
    );

    // Every retrieval (two each) completed on the server's side (`line` waits a minute at
    // most).
    let mut sent = 0;
    while sent < 4 {
        let line = server.line();
        assert!(!line.contains("\"event\":\"failed\""), "{line}");
        sent += usize::from(line.contains("\"event\":\"sent\""));
    }
}

#[test]
fn lassie_shows_the_reason_serve_retrieval_refuses() {
    let dirs = dirs_with_file(1 << 20, 42);
    let server = Server::start(dirs.server_dir.path(), &[&dirs.input], &["--retrieval"]);
    let car = dirs.client_dir.path().join("none.car");
    let out = lassie(&server.addr, MISSING, &car, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("deal rejected: no content found for {MISSING}")),
        "{stderr}"
    );
    // A plain `serve` (no --retrieval) does not know the voucher type at all.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Server::start(plain_dir.path(), &[&dirs.input], &[]);
    let out = lassie(&plain.addr, &server.roots[0], &car, &[]);
    assert!(!out.status.success(), "served without --retrieval");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("response rejected"), "{stderr}");
}

/// A `go-retrieval provide` process serving a file.
struct GoProvider {
    _child: Killed,
    addr: String,
    root: String,
}

impl GoProvider {
    fn start(file: &Path, extra: &[&str]) -> Self {
        let mut child = Killed(
            Command::new(go::go_retrieval())
                .args(["provide", "--key", &"07".repeat(32), "--file"])
                .arg(file)
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        // Its later lines (events) are read so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            _child: child,
            addr: field(&first, "listening").unwrap(),
            root: field(&first, "root").unwrap(),
        }
    }
}

#[test]
fn retrieve_fetches_a_file_and_a_root_block_from_the_go_provider() {
    let dirs = dirs_with_file(20 << 20, 43);
    let go = GoProvider::start(&dirs.input, &[]);
    let file = dirs.client_dir.path().join("file.bin");
    let car = dirs.client_dir.path().join("file.car");
    let printed = succeeds(&[
        "retrieve",
        &go.addr,
        &go.root,
        "-o",
        file.to_str().unwrap(),
        "--car",
        car.to_str().unwrap(),
        "--json",
    ]);
    let last = printed.lines().last().unwrap();
    // Go's provider confirms with DealStatusCompleted, as Boost does.
    assert!(last.contains("\"confirmed\":true"), "{last}");
    assert_eq!(number(last, "written"), Some(20 << 20));
    assert_eq!(std::fs::read(&file).unwrap(), dirs.data);
    // Lassie writes the same CAR from the same provider.
    let theirs = dirs.client_dir.path().join("lassie.car");
    assert_ok(&lassie(&go.addr, &go.root, &theirs, &[]), "lassie from Go");
    assert!(std::fs::read(&theirs).unwrap() == std::fs::read(&car).unwrap());

    let block = dirs.client_dir.path().join("block.car");
    succeeds(&[
        "retrieve",
        &go.addr,
        &go.root,
        "--car",
        block.to_str().unwrap(),
        "--selector",
        r#"{".":{}}"#,
    ]);
    let bytes = std::fs::read(&block).unwrap();
    assert!(bytes.len() < 16 << 10, "one block: {}", bytes.len());
}

#[test]
fn retrieve_shows_the_go_providers_rejection_demand_for_payment_and_silence() {
    let dirs = dirs_with_file(2 << 20, 44);
    let car = dirs.client_dir.path().join("x.car");
    let car = car.to_str().unwrap();

    let missing = GoProvider::start(&dirs.input, &[]);
    let out = datatransfer(&["retrieve", &missing.addr, MISSING, "--car", car]);
    assert_one_line_error(&out, "missing content");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the provider rejected the retrieval: there is no unsealed piece"),
        "{stderr}"
    );

    let refusing = GoProvider::start(&dirs.input, &["--reject", "no thanks"]);
    let out = datatransfer(&["retrieve", &refusing.addr, &refusing.root, "--car", car]);
    assert_one_line_error(&out, "rejection");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the provider rejected the retrieval: no thanks"),
        "{stderr}"
    );

    let paid = GoProvider::start(&dirs.input, &["--funds-needed", "1000"]);
    let out = datatransfer(&["retrieve", &paid.addr, &paid.root, "--car", car]);
    assert_one_line_error(&out, "payment");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("paid retrieval is not supported")
            && stderr.contains("DealStatusFundsNeeded")
            && stderr.contains("1000 attoFIL"),
        "{stderr}"
    );

    let silent = GoProvider::start(&dirs.input, &["--no-complete"]);
    let started = Instant::now();
    let out = datatransfer(&[
        "retrieve",
        &silent.addr,
        &silent.root,
        "--car",
        car,
        "--timeout",
        "5s",
    ]);
    assert_one_line_error(&out, "never completes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the provider sent nothing for 5 s (every block arrived; waiting for it to complete the deal)"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(!Path::new(car).exists(), "no CAR from a failed retrieval");
}
