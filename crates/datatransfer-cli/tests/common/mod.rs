//! Helpers shared by the tests that drive the real `datatransfer` binary.

#![allow(dead_code)] // Each test file uses some of them.

pub(crate) use datatransfer_test_support::random_bytes;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Runs the binary and waits for it.
pub(crate) fn datatransfer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_datatransfer"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the binary, asserts it succeeded, returns its stdout.
pub(crate) fn succeeds(args: &[&str]) -> String {
    let out = datatransfer(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The string value of `"key":"..."` in a JSON line.
pub(crate) fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    line[start..].split('"').next().map(str::to_owned)
}

/// The number value of `"key":123` in a JSON line.
pub(crate) fn number(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A server's data dir holding a file of `size` seeded bytes, and a client's data dir.
pub(crate) struct Dirs {
    pub(crate) server_dir: tempfile::TempDir,
    pub(crate) client_dir: tempfile::TempDir,
    pub(crate) input: std::path::PathBuf,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn dirs_with_file(size: usize, seed: u64) -> Dirs {
    let server_dir = tempfile::tempdir().unwrap();
    let input = server_dir.path().join("input.bin");
    let data = random_bytes(size, seed);
    std::fs::write(&input, &data).unwrap();
    Dirs {
        server_dir,
        client_dir: tempfile::tempdir().unwrap(),
        input,
        data,
    }
}

/// A `datatransfer serve` process.
pub(crate) struct Server {
    pub(crate) child: Killed,
    /// The lines it prints after its address, read by a thread of their own.
    pub(crate) lines: std::sync::mpsc::Receiver<String>,
    pub(crate) addr: String,
    pub(crate) roots: Vec<String>,
    /// Where it serves metrics, if it does (`--metrics`).
    pub(crate) metrics: Option<String>,
}

impl Server {
    /// Starts `serve --json` on an ephemeral port and reads its roots and address.
    pub(crate) fn start(dir: &Path, inputs: &[&Path], extra: &[&str]) -> Self {
        Self::start_on("/ip4/127.0.0.1/tcp/0", dir, inputs, extra)
    }

    /// Starts `serve --json` listening on `listen`.
    pub(crate) fn start_on(listen: &str, dir: &Path, inputs: &[&Path], extra: &[&str]) -> Self {
        let mut child = Killed(
            Command::new(env!("CARGO_BIN_EXE_datatransfer"))
                .arg("serve")
                .args(inputs)
                .args(["--listen", listen, "--json", "--data-dir"])
                .arg(dir)
                .args(extra)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let mut roots = Vec::new();
        let mut metrics = None;
        loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(addr) = field(&line, "listening") {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                });
                return Self {
                    child,
                    lines: rx,
                    addr,
                    roots,
                    metrics,
                };
            }
            if let Some(m) = field(&line, "metrics") {
                metrics = Some(m);
                continue;
            }
            roots.push(field(&line, "root").unwrap());
        }
    }

    /// The next line it prints; a test waiting a minute for one fails rather than hang.
    pub(crate) fn line(&mut self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the server printed nothing more within 60 s")
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

/// A one-line error, a failure exit, no panic.
pub(crate) fn assert_one_line_error(out: &std::process::Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}: succeeded");
    assert!(stderr.starts_with("error: "), "{why}: {stderr}");
    assert!(!stderr.contains("panicked"), "{why}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{why}: {stderr}");
}

/// A child process killed when the test ends, however it ends.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
