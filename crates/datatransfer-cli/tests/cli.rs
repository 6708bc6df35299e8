//! Drives the real `datatransfer` binary.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use common::*;

#[test]
fn demo_pulls_pays_pushes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = datatransfer(&[
        "demo",
        "--size",
        "4MiB",
        "--pay-every",
        "1MiB",
        "--json",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"verified\":true"), "{stdout}");
    assert!(stdout.contains("\"size\":4194304"), "{stdout}");
    // 4 MiB at 1 MiB per payment.
    assert!(
        stdout.contains("\"payments\":4") || stdout.contains("\"payments\":3"),
        "{stdout}"
    );
    // The nodes kept their stores in the data dir.
    assert!(dir.path().join("client.sqlite").exists());
    assert!(dir.path().join("provider").join("blocks").is_dir());
}

#[test]
fn inspect_decodes_a_message_and_refuses_garbage_in_one_line() {
    // A data-transfer 1.2.0 request, encoded by the types crate.
    use datatransfer_types::TransferId;
    use datatransfer_types::message::{Message, TransferRequest, WireVersion};
    let msg = Message::Request(TransferRequest::update(TransferId(7), true));
    let hex = hex::encode(msg.to_cbor(WireVersion::V1_2));
    let out = datatransfer(&["inspect", &hex]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("data-transfer message"), "{stdout}");
    assert!(stdout.contains("message_type: Update"), "{stdout}");
    assert!(stdout.contains("TransferId(\n            7,"), "{stdout}");

    for bad in [
        &["inspect", "zz-not-hex"][..],
        &["inspect", "00ff"][..],
        &["demo", "--size", "5 parsecs"][..],
    ] {
        let out = datatransfer(bad);
        assert!(!out.status.success(), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("error"), "{stderr}");
    }
}

/// `serve` in one process, `pull` and `push` in others, over 127.0.0.1.
#[test]
fn serve_pull_and_push_between_processes() {
    let Dirs {
        server_dir,
        client_dir,
        input,
        data,
    } = dirs_with_file(3_000_000, 1);
    // Both nodes write their blocks past the page cache: the bytes come out the same.
    let mut server = Server::start(
        server_dir.path(),
        &[&input],
        &["--token", "s3cret", "--direct-io"],
    );
    let (addr, root) = (server.addr.clone(), server.roots[0].clone());
    let output = client_dir.path().join("out.bin");
    let car = client_dir.path().join("out.car");
    let client = client_dir.path().to_str().unwrap();
    succeeds(&[
        "pull",
        &addr,
        &root,
        "-o",
        output.to_str().unwrap(),
        "--car",
        car.to_str().unwrap(),
        "--token",
        "s3cret",
        "--direct-io",
        "--data-dir",
        client,
    ]);
    assert!(
        std::fs::read(&output).unwrap() == data,
        "the pulled file differs"
    );
    // The server saw it go.
    let sent = server.line();
    assert_eq!(field(&sent, "event").as_deref(), Some("sent"), "{sent}");
    assert_eq!(field(&sent, "root"), Some(root.clone()), "{sent}");
    // The channel is in the client's store, completed.
    let status = datatransfer(&["status", "--all", "--json", "--data-dir", client]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"status\":\"Completed\""));

    // Other clients' data dirs sit inside this test's temp dir, so they go with it.
    let other_client = |name: &str| client_dir.path().join(name).to_str().unwrap().to_owned();
    // A selector that stops below the root: the CAR holds the root alone.
    let shallow = client_dir.path().join("root-only.car");
    let stdout = succeeds(&[
        "pull",
        &addr,
        &root,
        "--car",
        shallow.to_str().unwrap(),
        "--selector",
        r#"{"R":{"l":{"depth":0},":>":{"a":{">":{"@":{}}}}}}"#,
        "--token",
        "s3cret",
        "--json",
        "--data-dir",
        &other_client("shallow-node"),
    ]);
    assert!(stdout.contains("\"car_blocks\":1"), "{stdout}");
    assert!(std::fs::metadata(&shallow).unwrap().len() < 4096);
    let sent = server.line();
    assert!(
        number(&sent, "bytes").unwrap() < 1024,
        "only the root went: {sent}"
    );

    // The whole-DAG CAR pushed back as it is, then a new file pushed and pulled again.
    let stdout = succeeds(&[
        "push",
        &addr,
        car.to_str().unwrap(),
        "--token",
        "s3cret",
        "--json",
        "--data-dir",
        client,
    ]);
    assert!(stdout.contains(&format!("\"root\":\"{root}\"")), "{stdout}");
    let received = server.line();
    assert_eq!(
        field(&received, "event").as_deref(),
        Some("received"),
        "{received}"
    );
    let fresh = client_dir.path().join("fresh.bin");
    let fresh_data = random_bytes(1_500_000, 2);
    std::fs::write(&fresh, &fresh_data).unwrap();
    let stdout = succeeds(&[
        "push",
        &addr,
        fresh.to_str().unwrap(),
        "--token",
        "s3cret",
        "--json",
        "--data-dir",
        client,
    ]);
    let fresh_root = stdout
        .lines()
        .find_map(|l| l.contains("\"pushed\"").then(|| field(l, "root")).flatten())
        .unwrap();
    let back = client_dir.path().join("back.bin");
    succeeds(&[
        "pull",
        &addr,
        &fresh_root,
        "-o",
        back.to_str().unwrap(),
        "--token",
        "s3cret",
        "--data-dir",
        &other_client("back-node"),
    ]);
    assert!(
        std::fs::read(&back).unwrap() == fresh_data,
        "the pushed file differs"
    );

    // Bad input: a wrong token, an unknown CID, a malformed multiaddr or selector, nobody
    // listening, an output directory that cannot be written.
    let unknown = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let port = addr
        .split("/tcp/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let dead = addr.replace(&format!("/tcp/{port}/"), "/tcp/1/");
    let read_only = tempfile::tempdir().unwrap();
    let mut perms = std::fs::metadata(read_only.path()).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(read_only.path(), perms).unwrap();
    // Root writes anywhere; /sys refuses even root.
    let unwritable = if std::fs::write(read_only.path().join("probe"), b"").is_ok() {
        std::path::PathBuf::from("/sys")
    } else {
        read_only.path().to_owned()
    };
    let unwritable_out = unwritable.join("out.bin");
    let unwritable_out = unwritable_out.to_str().unwrap();
    let fresh_client = other_client("bad-node");
    for (args, why) in [
        (
            vec!["pull", &addr, &root, "--token", "wrong"],
            "wrong token",
        ),
        (
            vec!["pull", &addr, unknown, "--token", "s3cret"],
            "unknown CID",
        ),
        (
            vec!["pull", "not-a-multiaddr", &root],
            "malformed multiaddr",
        ),
        (
            vec!["pull", &addr, &root, "--selector", "{\"R\":"],
            "malformed selector",
        ),
        (
            vec!["pull", &addr, &root, "--selector", "{\"Q\":{}}"],
            "not a selector",
        ),
        (vec!["pull", &dead, &root], "nobody listening"),
        (
            vec!["push", &addr, fresh.to_str().unwrap(), "--token", "no"],
            "push, wrong token",
        ),
        (vec!["push", &addr, "/no/such/file"], "push, missing file"),
        (
            vec![
                "pull",
                &addr,
                &root,
                "--token",
                "s3cret",
                "-o",
                unwritable_out,
            ],
            "read-only output dir",
        ),
    ] {
        let mut args = args;
        args.extend(["--data-dir", &fresh_client]);
        assert_one_line_error(&datatransfer(&args), why);
    }
    // The unwritable output was refused before anything was pulled.
    let status = datatransfer(&["status", "--all", "--json", "--data-dir", &fresh_client]);
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(!listed.contains("Completed"), "{listed}");
}

/// `serve` of a directory and a CAR: every file and every root is served; `--limit-rate`
/// holds the serving to its rate.
#[test]
fn serve_a_directory_and_a_car() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let tree = server_dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(tree.join("sub").join("b.bin"), random_bytes(2_500_000, 3)).unwrap();
    // A CAR of `sub/b.bin`, pulled out of a first server.
    let first = Server::start(server_dir.path(), &[&tree], &[]);
    assert_eq!(first.roots.len(), 2, "one root per file");
    let car = server_dir.path().join("b.car");
    let client = client_dir.path().to_str().unwrap();
    succeeds(&[
        "pull",
        &first.addr,
        &first.roots[1],
        "--car",
        car.to_str().unwrap(),
        "--data-dir",
        client,
    ]);
    drop(first);

    // Served from the CAR, at most 1 MiB/s: 2.5 MB cannot come in less than about 2 s (a
    // lower bound only).
    let other_dir = tempfile::tempdir().unwrap();
    let second = Server::start(other_dir.path(), &[&car], &["--limit-rate", "1MiB"]);
    assert_eq!(second.roots, vec![datatransfer_roots(&car)]);
    let output = client_dir.path().join("b.bin");
    let started = std::time::Instant::now();
    succeeds(&[
        "pull",
        &second.addr,
        &second.roots[0],
        "-o",
        output.to_str().unwrap(),
        "--data-dir",
        &format!("{client}-2"),
    ]);
    assert!(std::fs::read(&output).unwrap() == random_bytes(2_500_000, 3));
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(1500), "{took:?}");
}

/// The root named in a CAR's header.
fn datatransfer_roots(car: &Path) -> String {
    let reader = datatransfer_ipld::car::CarReader::new(std::fs::File::open(car).unwrap()).unwrap();
    reader.roots()[0].to_string()
}

/// Reads a pull's JSON lines until one reports bytes beyond the root.
fn wait_for_progress(lines: &mut Lines<BufReader<ChildStdout>>) -> u64 {
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"progress\"") {
            let n = number(&line, "bytes").unwrap();
            if n > 4096 {
                return n;
            }
        }
    }
    panic!("the pull ended before moving any data");
}

fn spawn_pull(addr: &str, root: &str, output: &Path, dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_datatransfer"))
        .args(["pull", addr, root, "--json", "-o"])
        .arg(output)
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The one in-progress channel in a data dir: its id and bytes.
fn in_progress(dir: &Path) -> (String, u64) {
    let out = datatransfer(&["status", "--json", "--data-dir", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    (
        field(lines[0], "channel").unwrap(),
        number(lines[0], "bytes").unwrap(),
    )
}

/// Re-runs a pull and checks it resumed `channel` and wrote `data`.
fn resume_pull(addr: &str, root: &str, output: &Path, dir: &Path, channel: &str, data: &[u8]) {
    let out = spawn_pull(addr, root, output, dir, &[])
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let first = stdout.lines().next().unwrap();
    assert!(first.contains("\"resumed\":true"), "{stdout}");
    assert_eq!(field(first, "channel").as_deref(), Some(channel));
    assert!(
        std::fs::read(output).unwrap() == data,
        "the resumed file differs"
    );
}

/// A puller killed mid-way resumes the same channel when run again, and completes.
#[cfg(unix)]
#[test]
fn an_interrupted_pull_resumes_and_completes() {
    let Dirs {
        server_dir,
        client_dir,
        input,
        data,
    } = dirs_with_file(32 << 20, 4);
    let server = Server::start(server_dir.path(), &[&input], &[]);
    let output = client_dir.path().join("big.bin");
    // Slowed down, so it is still running when killed.
    let mut puller = Killed(spawn_pull(
        &server.addr,
        &server.roots[0],
        &output,
        client_dir.path(),
        &["--limit-rate", "1MiB"],
    ));
    let mut lines = BufReader::new(puller.0.stdout.take().unwrap()).lines();
    wait_for_progress(&mut lines);
    // SIGKILL while blocks flow.
    drop(puller);
    assert_eq!(leftovers(client_dir.path()), Vec::<String>::new());
    assert!(!output.exists(), "a killed pull left a file behind");
    let (channel, bytes) = in_progress(client_dir.path());
    assert!(bytes > 0 && bytes < data.len() as u64, "{bytes}");

    resume_pull(
        &server.addr,
        &server.roots[0],
        &output,
        client_dir.path(),
        &channel,
        &data,
    );
    assert_eq!(leftovers(client_dir.path()), Vec::<String>::new());

    // Every block is here now: the same pull needs no server (a run killed after its
    // channel completed, before it wrote the file, is re-run this way).
    let (addr, root) = (server.addr.clone(), server.roots[0].clone());
    drop(server);
    let again = client_dir.path().join("again.bin");
    let stdout = succeeds(&[
        "pull",
        &addr,
        &root,
        "-o",
        again.to_str().unwrap(),
        "--json",
        "--data-dir",
        client_dir.path().to_str().unwrap(),
    ]);
    assert!(stdout.contains("\"local\":true"), "{stdout}");
    assert!(
        std::fs::read(&again).unwrap() == data,
        "the local copy differs"
    );
}

/// Files a pull left half-written in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("datatransfer-") || n.ends_with(".partial"))
        .collect()
}

/// A server killed outright (SIGKILL) mid-pull and started again on its port: the running
/// pull reconnects, restarts its channel and completes, the bytes whole.
#[cfg(unix)]
#[test]
fn a_pull_outlives_its_server_being_killed_and_restarted() {
    let Dirs {
        server_dir,
        client_dir,
        input,
        data,
    } = dirs_with_file(16 << 20, 7);
    let server = Server::start(server_dir.path(), &[&input], &[]);
    let (addr, root) = (server.addr.clone(), server.roots[0].clone());
    let output = client_dir.path().join("big.bin");
    let mut puller = Killed(spawn_pull(
        &addr,
        &root,
        &output,
        client_dir.path(),
        &["--limit-rate", "8MiB"],
    ));
    let mut lines = BufReader::new(puller.0.stdout.take().unwrap()).lines();
    let before = wait_for_progress(&mut lines);
    drop(server);
    // Its address again: the identity is in its data dir, the port in the address.
    let listen = addr.split("/p2p/").next().unwrap();
    let mut server = Server::start_on(listen, server_dir.path(), &[&input], &[]);
    assert_eq!(server.addr, addr);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(puller.0.wait().unwrap().success(), "{rest:?}");
    let done = rest.last().unwrap();
    assert_eq!(number(done, "written"), Some(data.len() as u64), "{done}");
    assert!(
        number(done, "received").unwrap() > before,
        "nothing came after the restart: {done}"
    );
    assert!(std::fs::read(&output).unwrap() == data, "the file differs");
    // The second server finished what the first began.
    let sent = server.line();
    assert_eq!(field(&sent, "event").as_deref(), Some("sent"), "{sent}");
    assert_eq!(field(&sent, "channel"), field(done, "channel"), "{sent}");
}

/// Ctrl-C on `serve` refuses new work, gives running transfers the grace period, keeps the
/// unfinished one in its store, and a restarted server lets the client resume it.
#[cfg(unix)]
#[test]
fn serve_stops_gracefully_and_its_transfers_resume_after_a_restart() {
    let Dirs {
        server_dir,
        client_dir,
        input,
        data,
    } = dirs_with_file(32 << 20, 5);
    let mut server = Server::start(server_dir.path(), &[&input], &["--grace", "1s"]);
    let root = server.roots[0].clone();
    let output = client_dir.path().join("big.bin");
    // Slowed down, then frozen: the transfer cannot finish within the grace period.
    let mut puller = Killed(spawn_pull(
        &server.addr,
        &root,
        &output,
        client_dir.path(),
        &["--limit-rate", "1MiB"],
    ));
    let mut lines = BufReader::new(puller.0.stdout.take().unwrap()).lines();
    wait_for_progress(&mut lines);
    let ok = Command::new("kill")
        .args(["-STOP", &puller.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    server.signal("-INT");
    let stopped = server.line();
    assert!(stopped.contains("\"stopped\":true"), "{stopped}");
    assert_eq!(number(&stopped, "kept"), Some(1), "{stopped}");
    assert!(server.child.0.wait().unwrap().success());
    drop(puller);
    let (channel, _) = in_progress(client_dir.path());

    let server = Server::start(server_dir.path(), &[&input], &[]);
    resume_pull(
        &server.addr,
        &root,
        &output,
        client_dir.path(),
        &channel,
        &data,
    );
}

/// Ctrl-C on a pull stops it with a one-line message saying how to resume, and resuming works.
#[cfg(unix)]
#[test]
fn a_pull_stopped_with_ctrl_c_says_how_to_resume() {
    let Dirs {
        server_dir,
        client_dir,
        input,
        data,
    } = dirs_with_file(32 << 20, 6);
    let server = Server::start(server_dir.path(), &[&input], &[]);
    let output = client_dir.path().join("big.bin");
    let mut puller = Killed(
        Command::new(env!("CARGO_BIN_EXE_datatransfer"))
            .args(["pull", &server.addr, &server.roots[0], "--json", "-o"])
            .arg(&output)
            .arg("--data-dir")
            .arg(client_dir.path())
            .args(["--limit-rate", "1MiB"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(puller.0.stdout.take().unwrap()).lines();
    wait_for_progress(&mut lines);
    let ok = Command::new("kill")
        .args(["-INT", &puller.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut puller.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!puller.0.wait().unwrap().success());
    assert!(stderr.starts_with("error: interrupted"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!output.exists());
    let (channel, _) = in_progress(client_dir.path());
    resume_pull(
        &server.addr,
        &server.roots[0],
        &output,
        client_dir.path(),
        &channel,
        &data,
    );
}
