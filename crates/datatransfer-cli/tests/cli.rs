//! Drives the real `datatransfer` binary.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.

use std::process::Command;

fn datatransfer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_datatransfer"))
        .args(args)
        .output()
        .unwrap()
}

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

/// `serve` in one process, `pull` in another, over 127.0.0.1.
#[test]
fn serve_and_pull_between_two_processes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let input = server_dir.path().join("input.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    std::fs::write(&input, &data).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_datatransfer"))
        .args([
            "serve",
            input.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--token",
            "s3cret",
            "--json",
            "--data-dir",
            server_dir.path().to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let field = |line: &str, key: &str| -> String {
        let start = line.find(&format!("\"{key}\":\"")).unwrap() + key.len() + 4;
        line[start..].split('"').next().unwrap().to_owned()
    };
    let root = field(&lines.next().unwrap().unwrap(), "root");
    let addr = field(&lines.next().unwrap().unwrap(), "listening");
    let output = client_dir.path().join("out.bin");
    let client = client_dir.path().to_str().unwrap();
    let pulled = datatransfer(&[
        "pull",
        &addr,
        &root,
        "-o",
        output.to_str().unwrap(),
        "--token",
        "s3cret",
        "--data-dir",
        client,
    ]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert!(
        std::fs::read(&output).unwrap() == data,
        "the pulled file differs"
    );
    // The channel is in the client's store, completed.
    let status = datatransfer(&["status", "--all", "--json", "--data-dir", client]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"status\":\"Completed\""));

    // Bad input: a wrong token, an unknown CID, a malformed multiaddr, nobody listening.
    let unknown = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let port = addr
        .split("/tcp/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let dead = addr.replace(&format!("/tcp/{port}/"), "/tcp/1/");
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
        (vec!["pull", &dead, &root], "nobody listening"),
    ] {
        let mut args = args;
        args.extend(["--data-dir", client]);
        let out = datatransfer(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{why}: succeeded");
        assert!(stderr.starts_with("error: "), "{why}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{why}: {stderr}");
    }
    server.kill().unwrap();
    let _ = server.wait();
}
