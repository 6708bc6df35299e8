//! The outbound rate limit shared by a node's peer writers.

use super::*;

/// A rate shared by several stream readers (or writers): each read of `n` bytes is due
/// `n / rate` seconds after the previous one's due time (or now, if that has passed); a reader
/// waits while its due time is more than the allowed burst ahead of the clock.
#[derive(Debug)]
pub(super) struct RateLimit {
    pub(super) bytes_per_second: f64,
    pub(super) burst: Duration,
    pub(super) due: Mutex<tokio::time::Instant>,
}

impl RateLimit {
    pub(super) fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1) as f64,
            burst: Duration::from_millis(250),
            due: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Accounts for `n` bytes just read; returns when reading more keeps to the rate.
    pub(super) async fn take(&self, n: usize) {
        let now = tokio::time::Instant::now();
        let wake = {
            let Ok(mut due) = self.due.lock() else {
                return;
            };
            *due = (*due).max(now) + Duration::from_secs_f64(n as f64 / self.bytes_per_second);
            due.checked_sub(self.burst)
        };
        if let Some(wake) = wake.filter(|w| *w > now) {
            tokio::time::sleep_until(wake).await;
        }
    }
}
