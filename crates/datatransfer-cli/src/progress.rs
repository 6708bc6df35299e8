//! Progress of one transfer: an indicatif bar (bytes, rate, ETA) on a terminal, a spinner
//! while the size is unknown, or JSON lines for scripts.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often `--json` prints a progress line.
const JSON_EVERY: Duration = Duration::from_millis(250);

/// The progress of one transfer.
pub(crate) struct Progress {
    pb: ProgressBar,
    label: String,
    json: bool,
    total: Option<u64>,
    last_json: Option<Instant>,
}

impl Progress {
    /// A bar labelled `label`; `total` bytes if known.
    pub(crate) fn new(label: &str, total: Option<u64>, json: bool) -> Self {
        let pb = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        let mut p = Self {
            pb,
            label: label.to_owned(),
            json,
            total: None,
            last_json: None,
        };
        p.pb.set_message(label.to_owned());
        if let Ok(s) = ProgressStyle::with_template(
            "{spinner} {msg:>5} {bytes} {binary_bytes_per_sec} {elapsed}",
        ) {
            p.pb.set_style(s);
        }
        p.pb.enable_steady_tick(Duration::from_millis(120));
        if let Some(t) = total {
            p.set_total(t);
        }
        p
    }

    /// The total, if known.
    pub(crate) fn total(&self) -> Option<u64> {
        self.total
    }

    /// The total became known: the spinner becomes a bar with an ETA.
    pub(crate) fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        self.pb.set_length(total);
        if let Ok(s) = ProgressStyle::with_template(
            "{msg:>5} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ) {
            self.pb.set_style(s.progress_chars("=> "));
        }
    }

    /// `bytes` have moved so far.
    pub(crate) fn update(&mut self, bytes: u64) {
        let shown = self.total.map_or(bytes, |t| bytes.min(t));
        self.pb.set_position(shown);
        if self.json && bytes > 0 && self.last_json.is_none_or(|t| t.elapsed() >= JSON_EVERY) {
            self.last_json = Some(Instant::now());
            match self.total {
                Some(t) => println!(
                    "{{\"progress\":{:?},\"bytes\":{bytes},\"total\":{t}}}",
                    self.label
                ),
                None => println!("{{\"progress\":{:?},\"bytes\":{bytes}}}", self.label),
            }
        }
    }

    /// A line above the bar (nothing with `--json`).
    pub(crate) fn say(&self, line: String) {
        if self.json {
            return;
        }
        if self.pb.is_hidden() {
            println!("{line}");
        } else {
            self.pb.println(line);
        }
    }

    /// The transfer ended: the bar stays drawn at its last position.
    pub(crate) fn finish(&self) {
        self.pb.finish();
    }
}
