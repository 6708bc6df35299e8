//! Progress of transfers: an indicatif bar (bytes, rate, ETA) on a terminal, a spinner while
//! the size is unknown, or JSON lines for scripts; [`Bars`] keeps one bar per channel for a
//! node serving many.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use datatransfer::ChannelId;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner with bytes and rate, for a transfer of unknown size.
fn spinner_style() -> Option<ProgressStyle> {
    ProgressStyle::with_template("{spinner} {msg:>5} {bytes} {binary_bytes_per_sec} {elapsed}").ok()
}

/// A bar with bytes, total, rate and ETA.
fn bar_style() -> Option<ProgressStyle> {
    ProgressStyle::with_template(
        "{msg:>5} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .ok()
    .map(|s| s.progress_chars("=> "))
}

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
        if let Some(s) = spinner_style() {
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
        if let Some(s) = bar_style() {
            self.pb.set_style(s);
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

/// One bar per running channel (none with `--json`), and lines printed above them.
pub(crate) struct Bars {
    multi: MultiProgress,
    bars: HashMap<ChannelId, ProgressBar>,
}

impl Bars {
    /// Bars drawn on a terminal; none if `json`.
    pub(crate) fn new(json: bool) -> Self {
        let multi = if json {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        Self {
            multi,
            bars: HashMap::new(),
        }
    }

    /// Channel `id` has moved `bytes`; `describe` gives a new bar its label and total.
    pub(crate) fn update(
        &mut self,
        id: ChannelId,
        bytes: u64,
        describe: impl FnOnce() -> (String, Option<u64>),
    ) {
        let multi = &self.multi;
        let pb = self.bars.entry(id).or_insert_with(|| {
            let (label, total) = describe();
            let pb = multi.add(ProgressBar::new(total.unwrap_or(0)));
            if let Some(s) = if total.is_some() {
                bar_style()
            } else {
                spinner_style()
            } {
                pb.set_style(s);
            }
            pb.set_message(label);
            pb
        });
        pb.set_position(
            pb.length()
                .filter(|l| *l > 0)
                .map_or(bytes, |l| bytes.min(l)),
        );
    }

    /// Channel `id` ended: its bar goes.
    pub(crate) fn end(&mut self, id: &ChannelId) {
        if let Some(pb) = self.bars.remove(id) {
            pb.finish_and_clear();
            self.multi.remove(&pb);
        }
    }

    /// A line above the bars (on stdout as it is when there are none).
    pub(crate) fn say(&self, line: String) {
        if self.multi.is_hidden() {
            println!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}
