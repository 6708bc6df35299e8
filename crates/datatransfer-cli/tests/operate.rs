//! Operating a node through the real binaries: `transfers list`, `cancel`, `restart`,
//! `diagnostics` and `purge` on running nodes (their control sockets) and on stopped ones
//! (their stores), and `serve --metrics` scraped over HTTP while a transfer flows.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A pull of `root` into `output`, held to 1 MiB/s so that it is still flowing while the
/// test looks at it.
fn slow_pull(addr: &str, root: &str, output: &Path, dir: &Path) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_datatransfer"))
            .args(["pull", addr, root, "--json", "--limit-rate", "1MiB", "-o"])
            .arg(output)
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// `transfers list --all --json` on `dir`: one JSON object per channel.
fn list(dir: &Path) -> Vec<Value> {
    let out = succeeds(&[
        "transfers",
        "list",
        "--all",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `dir`'s node lists one channel moving data; returns it.
fn flowing(dir: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = list(dir)
            .into_iter()
            .find(|c| c["status"] == "Ongoing" && c["bytes"].as_u64().unwrap_or(0) > 0)
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no transfer flowing on {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `dir`'s node has `channel` finished; returns it.
fn finished(dir: &Path, channel: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = list(dir).into_iter().find(|c| {
            c["channel"] == channel
                && matches!(
                    c["status"].as_str(),
                    Some("Completed" | "Failed" | "Cancelled")
                )
        }) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} never finished on {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a child to exit; its status and stderr.
fn ended(child: &mut Killed, within: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                e.read_to_string(&mut err).unwrap();
            }
            return (status, err);
        }
        assert!(Instant::now() < deadline, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics` over plain HTTP; the body.
fn scrape(url: &str) -> String {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    reply.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

/// The value of one sample, `name{labels} value`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn list_and_metrics_while_a_transfer_flows_with_counters_matching_the_bytes_moved() {
    let dirs = dirs_with_file(6 << 20, 51);
    // Both sides held to 1 MiB/s: the server's graphsync response stays in flight.
    let server = Server::start(
        dirs.server_dir.path(),
        &[&dirs.input],
        &["--metrics", "127.0.0.1:0", "--limit-rate", "1MiB"],
    );
    let url = server
        .metrics
        .clone()
        .expect("serve prints its metrics address");
    let out = dirs.client_dir.path().join("copy.bin");
    let mut pull = slow_pull(&server.addr, &server.roots[0], &out, dirs.client_dir.path());

    let c = flowing(dirs.server_dir.path());
    assert_eq!(
        (c["direction"].as_str(), c["role"].as_str()),
        (Some("pull"), Some("responder"))
    );
    assert_eq!(c["root"], server.roots[0].as_str());
    // The client's own node lists it too, as the initiator.
    let mine = flowing(dirs.client_dir.path());
    assert_eq!(mine["channel"], c["channel"]);
    assert_eq!(mine["role"], "initiator");

    let during = scrape(&url);
    assert_eq!(
        sample(&during, r#"datatransfer_channels{status="Ongoing"}"#),
        Some(1.0),
        "{during}"
    );
    let sent = sample(&during, "datatransfer_sent_bytes_total").unwrap();
    assert!(
        sent > 0.0 && sent < (6 << 20) as f64,
        "mid-transfer: {sent}"
    );
    assert_eq!(
        sample(
            &during,
            r#"datatransfer_validations_total{outcome="accepted"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&during, "datatransfer_graphsync_peers"),
        Some(1.0),
        "{during}"
    );

    let (status, err) = ended(&mut pull, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), dirs.data);
    // Once it is over, the counters hold exactly what the channel moved.
    let ch = finished(dirs.server_dir.path(), c["channel"].as_str().unwrap());
    assert_eq!(ch["status"], "Completed");
    let after = scrape(&url);
    assert_eq!(
        sample(&after, "datatransfer_sent_bytes_total"),
        ch["bytes"].as_f64(),
        "{after}"
    );
    assert_eq!(
        sample(&after, "datatransfer_sent_blocks_total"),
        ch["blocks"].as_f64()
    );
    assert_eq!(
        sample(&after, r#"datatransfer_channels{status="Completed"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, r#"datatransfer_channels{status="Ongoing"}"#),
        Some(0.0)
    );
    assert!(sample(&after, "datatransfer_store_write_seconds_count").unwrap() > 0.0);
    // Queue depths and graphsync's responses by state are there, and empty once all is done.
    for name in [
        "datatransfer_store_queue",
        "datatransfer_api_queue",
        "datatransfer_graphsync_responses_queued",
        "datatransfer_graphsync_responses_paused",
    ] {
        assert!(
            sample(&after, name).is_some_and(|v| v < 2.0),
            "{name}: {after}"
        );
    }
}

#[test]
fn cancel_of_a_running_transfer_tells_the_peer_and_diagnostics_show_it_before() {
    // Twice graphsync's per-peer queue (8 messages of up to 1 MiB), sent at 1 MiB/s: the
    // server's response is still walking the DAG for 8 s after it starts sending.
    let dirs = dirs_with_file(16 << 20, 52);
    let server = Server::start(
        dirs.server_dir.path(),
        &[&dirs.input],
        &["--limit-rate", "1MiB"],
    );
    let out = dirs.client_dir.path().join("copy.bin");
    let mut pull = slow_pull(&server.addr, &server.roots[0], &out, dirs.client_dir.path());
    let c = flowing(dirs.server_dir.path());
    let channel = c["channel"].as_str().unwrap().to_owned();
    let client = c["peer"].as_str().unwrap().to_owned();
    let server_dir = dirs.server_dir.path().to_str().unwrap();

    // What the server has in flight with the client: the channel, and its graphsync response.
    let diag: Value = serde_json::from_str(&succeeds(&[
        "transfers",
        "diagnostics",
        &client,
        "--json",
        "--data-dir",
        server_dir,
    ]))
    .unwrap();
    assert_eq!(diag["connected"], true);
    assert_eq!(diag["channels"][0]["channel"], channel.as_str());
    let incoming = diag["graphsync"]["incoming"].as_array().unwrap();
    assert_eq!(incoming.len(), 1, "{diag}");
    assert_eq!(incoming[0]["root"], server.roots[0].as_str());
    assert_eq!(incoming[0]["state"], "running");
    // And the client, the other way.
    let server_peer = server.addr.rsplit('/').next().unwrap();
    let theirs: Value = serde_json::from_str(&succeeds(&[
        "transfers",
        "diagnostics",
        server_peer,
        "--json",
        "--data-dir",
        dirs.client_dir.path().to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(
        theirs["graphsync"]["outgoing"].as_array().unwrap().len(),
        1,
        "{theirs}"
    );

    let answer: Value = serde_json::from_str(&succeeds(&[
        "transfers",
        "cancel",
        &channel,
        "--json",
        "--data-dir",
        server_dir,
    ]))
    .unwrap();
    assert_eq!(answer["peer_told"], true, "{answer}");
    assert!(
        matches!(answer["status"].as_str(), Some("Cancelled" | "Cancelling")),
        "{answer}"
    );
    let (status, err) = ended(&mut pull, Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        err.contains("ended Cancelled") || err.contains("ended Failed"),
        "{err}"
    );
    assert_eq!(
        finished(dirs.server_dir.path(), &channel)["status"],
        "Cancelled"
    );
    assert!(!out.exists());
}

#[test]
fn cancel_with_the_peer_killed_returns_in_time_and_the_channel_never_comes_back() {
    let dirs = dirs_with_file(6 << 20, 53);
    let mut server = Server::start(dirs.server_dir.path(), &[&dirs.input], &[]);
    let out = dirs.client_dir.path().join("copy.bin");
    let client_dir = dirs.client_dir.path().to_str().unwrap().to_owned();
    let mut pull = slow_pull(&server.addr, &server.roots[0], &out, dirs.client_dir.path());
    let c = flowing(dirs.client_dir.path());
    let channel = c["channel"].as_str().unwrap().to_owned();
    server.child.0.kill().unwrap();
    server.child.0.wait().unwrap();

    let started = Instant::now();
    let answer: Value = serde_json::from_str(&succeeds(&[
        "transfers",
        "cancel",
        &channel,
        "--timeout",
        "2s",
        "--json",
        "--data-dir",
        &client_dir,
    ]))
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer["peer_told"], false, "{answer}");
    let (status, err) = ended(&mut pull, Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("ended Cancelled"), "{err}");
    // With no node running, the store says the same.
    let stored = list(dirs.client_dir.path());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "Cancelled");

    // The server comes back on its port; the same pull runs a new channel, and the cancelled
    // one stays cancelled.
    let port = server.addr.split('/').nth(4).unwrap().to_owned();
    let server = Server::start_on(
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        dirs.server_dir.path(),
        &[&dirs.input],
        &[],
    );
    let printed = succeeds(&[
        "pull",
        &server.addr,
        &server.roots[0],
        "--json",
        "-o",
        out.to_str().unwrap(),
        "--data-dir",
        &client_dir,
    ]);
    let new = printed.lines().find_map(|l| field(l, "channel")).unwrap();
    assert_ne!(new, channel);
    assert!(printed.contains("\"resumed\":false"), "{printed}");
    assert_eq!(std::fs::read(&out).unwrap(), dirs.data);
    let stored = list(dirs.client_dir.path());
    let old = stored
        .iter()
        .find(|x| x["channel"] == channel.as_str())
        .unwrap();
    assert_eq!(old["status"], "Cancelled");
}

#[test]
fn restart_through_the_control_socket_and_purge_of_finished_channels() {
    let dirs = dirs_with_file(4 << 20, 54);
    let server = Server::start(dirs.server_dir.path(), &[&dirs.input], &[]);
    let out = dirs.client_dir.path().join("copy.bin");
    let client_dir = dirs.client_dir.path().to_str().unwrap().to_owned();
    let mut pull = slow_pull(&server.addr, &server.roots[0], &out, dirs.client_dir.path());
    let c = flowing(dirs.client_dir.path());
    let channel = c["channel"].as_str().unwrap();
    let said = succeeds(&["transfers", "restart", channel, "--data-dir", &client_dir]);
    assert_eq!(said.trim(), format!("{channel}: restarted"));
    let (status, err) = ended(&mut pull, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), dirs.data);

    // A restart with no node running says so, in one line.
    let bad = datatransfer(&["transfers", "restart", channel, "--data-dir", &client_dir]);
    assert_one_line_error(&bad, "no node");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no node runs on"));
    // Nor is a made-up id taken.
    let bad = datatransfer(&[
        "transfers",
        "cancel",
        "not-a-channel",
        "--data-dir",
        &client_dir,
    ]);
    assert!(!bad.status.success());

    // The finished channel is purged from the stopped client's store.
    assert_eq!(list(dirs.client_dir.path()).len(), 1);
    let removed = succeeds(&["transfers", "purge", "--json", "--data-dir", &client_dir]);
    assert_eq!(removed.trim(), r#"{"removed":1}"#);
    assert!(list(dirs.client_dir.path()).is_empty());
    // And from the running server's, through its socket, keeping none (once its side of
    // the channel has finished too).
    finished(dirs.server_dir.path(), channel);
    let removed = succeeds(&[
        "transfers",
        "purge",
        "--keep",
        "0",
        "--json",
        "--data-dir",
        dirs.server_dir.path().to_str().unwrap(),
    ]);
    assert_eq!(removed.trim(), r#"{"removed":1}"#);
    drop(server);
}

#[test]
fn a_second_node_on_a_data_dir_is_refused() {
    let dirs = dirs_with_file(1 << 10, 55);
    let _server = Server::start(dirs.server_dir.path(), &[&dirs.input], &[]);
    let out = datatransfer(&[
        "serve",
        dirs.input.to_str().unwrap(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--data-dir",
        dirs.server_dir.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "second node");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another datatransfer node is running"));
}
