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
