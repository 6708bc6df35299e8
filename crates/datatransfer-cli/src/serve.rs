//! `serve`: import files, directories and CARs, then serve pulls and accept pushes until
//! Ctrl-C; on Ctrl-C, refuse new requests, let running transfers finish for a grace period,
//! and persist what is left so the peers can resume it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use datatransfer::{ChannelState, Event, EventCode, Registerable, Status};

use datatransfer_ipld::unixfs::file_size;
use datatransfer_retrieval::FreeRetrievalProvider;

use crate::control;
use crate::metrics::{Counted, Metrics};
use crate::node::{self, Input, TokenValidator, TokenVoucher};
use crate::progress::Bars;

/// `datatransfer serve`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Files (imported as UnixFS), CAR files (served as they are) or directories (each file
    /// in them).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/4010")]
    listen: String,
    /// Accept only requests carrying this token (anyone if not given).
    #[arg(long)]
    token: Option<String>,
    /// Also serve free Filecoin retrievals (lassie, `datatransfer retrieve`): pulls whose
    /// voucher is a retrieval deal proposal with zero prices for a root this node holds.
    #[arg(long)]
    retrieval: bool,
    /// On Ctrl-C, how long running transfers may take to finish before the node stops
    /// (their state is kept; the peers resume them later).
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    grace: Duration,
    /// Move at most about this many bytes per second each way, all peers together (B, KiB,
    /// MiB, GiB).
    #[arg(long, value_parser = crate::parse_size)]
    limit_rate: Option<u64>,
    /// Serve Prometheus metrics on this address (`GET /metrics`; e.g. 127.0.0.1:9100).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Keep finished channels in the store this long (then they are removed).
    #[arg(long, default_value = "7d", value_parser = parse_retention)]
    keep_finished: Duration,
    /// Keep at most this many finished channels in the store (the newest).
    #[arg(long, default_value_t = 10_000)]
    keep_finished_count: usize,
    /// Where blocks, channels and the identity key live (the platform's data dir if not
    /// given).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    store: node::StoreArgs,
}

/// Parses a retention time: `30s`, `10m`, `12h`, `7d`.
fn parse_retention(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) =
        crate::number_and_unit(s).ok_or_else(|| format!("{s:?} is not a duration (try 7d)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// Parses `10s`, `2m`, `500ms` or `10` (seconds).
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) =
        crate::number_and_unit(s).ok_or_else(|| format!("{s:?} is not a duration (try 10s)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        other => Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    }
}

fn print_input(i: &Input, json: bool) {
    let kind = if i.car { "car" } else { "file" };
    if json {
        println!(
            "{{\"{kind}\":{:?},\"root\":\"{}\",\"size\":{}}}",
            i.path.display().to_string(),
            i.root,
            i.size
        );
    } else {
        println!("{}  {} ({} bytes)", i.root, i.path.display(), i.size);
    }
}

/// The message of an event that explains a failure.
fn failure_of(event: &Event) -> Option<String> {
    matches!(
        event.code,
        EventCode::Error
            | EventCode::Cancel
            | EventCode::RequestCancelled
            | EventCode::Disconnected
    )
    .then(|| event.message.clone())
}

/// The line for a channel that ended.
fn end_line(state: &ChannelState, why: &str, json: bool) -> String {
    let (verb, bytes) = if state.is_pull() {
        ("sent", state.sent)
    } else {
        ("received", state.received)
    };
    let peer = state.other_peer();
    let root = state.base_cid;
    let outcome = match state.status {
        Status::Completed => verb,
        Status::Cancelled => "cancelled",
        _ => "failed",
    };
    if json {
        format!(
            "{{\"event\":\"{outcome}\",\"root\":\"{root}\",\"peer\":\"{peer}\",\"bytes\":{bytes},\"channel\":\"{}\",\"message\":{why:?}}}",
            state.channel_id
        )
    } else if state.status == Status::Completed {
        format!(
            "{outcome} {root} ({bytes} bytes) {} {peer}",
            if state.is_pull() { "to" } else { "from" }
        )
    } else {
        format!("{outcome}: {root} with {peer} after {bytes} bytes: {why}")
    }
}

/// Runs `serve`.
pub(crate) async fn serve(args: ServeArgs, json: bool) -> Result<(), String> {
    let dir = node::data_dir(args.data_dir)?;
    let claim = control::claim(&dir)?;
    let metrics = args.metrics.map(|_| Metrics::new());
    let retention = datatransfer::Retention {
        keep_for: Some(args.keep_finished),
        keep_at_most: Some(args.keep_finished_count),
        ..datatransfer::Retention::default()
    };
    let (m, blocks) = node::manager_with(
        &dir,
        Some(node::parse_addr(&args.listen)?),
        args.limit_rate,
        args.store,
        Some(retention),
        metrics.clone(),
    )
    .await?;
    let _control = control::start(claim, m.clone()).await?;
    let closing = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(TokenValidator {
        token: args.token,
        closing: closing.clone(),
    });
    m.register_voucher_type(
        TokenVoucher::TYPE,
        Arc::new(Counted {
            inner: tokens,
            metrics: metrics.clone(),
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let retrieval = if args.retrieval {
        let provider = FreeRetrievalProvider::new(blocks.clone());
        let counted = Arc::new(Counted {
            inner: provider.clone(),
            metrics: metrics.clone(),
        });
        for ty in datatransfer_retrieval::PROPOSAL_TYPES {
            m.register_voucher_type(ty, counted.clone())
                .await
                .map_err(|e| e.to_string())?;
            m.register_revalidator(ty, counted.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        Some(provider)
    } else {
        None
    };
    let metrics_addr = match (&metrics, args.metrics) {
        (Some(metrics), Some(addr)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            metrics.clone().follow(&m).await?;
            metrics.clone().serve(listener, m.clone());
            Some(bound)
        }
        _ => None,
    };
    let mut events = m.subscribe().await.map_err(|e| e.to_string())?;
    let left = m.start().await.map_err(|e| e.to_string())?;
    for input in node::import_inputs(&*blocks, &args.inputs)? {
        print_input(&input, json);
    }
    let full = m.multiaddr().ok_or("the node listens nowhere")?;
    if let Some(addr) = metrics_addr {
        if json {
            println!("{{\"metrics\":\"http://{addr}/metrics\"}}");
        } else {
            println!("metrics on http://{addr}/metrics");
        }
    }
    if json {
        println!("{{\"listening\":\"{full}\",\"resumable\":{left}}}");
    } else {
        println!("listening on {full}");
        if left > 0 {
            println!("{left} transfers from an earlier run can resume when their peers come back");
        }
    }

    // Channels already reported, and why channels failed (the error event comes before
    // the one that ends the channel).
    let mut ended = HashSet::new();
    let mut reasons = HashMap::new();
    let mut bars = Bars::new(json);
    let mut interrupted = false;
    let mut deadline = None;
    let mut interrupts = node::Interrupts::new()?;
    loop {
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((event, state)) = events.next() => {
                if let Some(e) = &failure_of(&event) {
                    reasons.insert(state.channel_id, e.clone());
                }
                let id = state.channel_id;
                if state.status.is_terminal() {
                    if let Some(r) = &retrieval {
                        r.forget(&id);
                    }
                    if ended.insert(id) {
                        bars.end(&id);
                        let why = reasons.remove(&id).unwrap_or_default();
                        bars.say(end_line(&state, &node::explain(id, &why), json));
                    }
                } else if state.sent > 0 || state.received > 0 {
                    let bytes = state.sent.max(state.received);
                    bars.update(id, bytes, || {
                        let peer = state.other_peer().to_string();
                        let short = &peer[peer.len().saturating_sub(6)..];
                        if state.is_pull() {
                            let size = file_size(&*blocks, &state.base_cid).ok();
                            (format!("to …{short}"), size)
                        } else {
                            (format!("from …{short}"), None)
                        }
                    });
                }
                if deadline.is_some() && running(&m).await? == 0 {
                    break;
                }
            }
            () = interrupts.next() => {
                if interrupted {
                    break;
                }
                interrupted = true;
                closing.store(true, Ordering::SeqCst);
                if let Some(r) = &retrieval {
                    r.refuse_new();
                }
                let n = running(&m).await?;
                if n == 0 {
                    break;
                }
                if !json {
                    bars.say(format!(
                        "stopping: {n} transfers may finish within {} s (Ctrl-C again to stop now)",
                        args.grace.as_secs_f64()
                    ));
                }
                deadline = Some(tokio::time::Instant::now() + args.grace);
            }
            () = wait => break,
        }
    }
    let left = running(&m).await?;
    m.stop().await.map_err(|e| e.to_string())?;
    if json {
        println!("{{\"stopped\":true,\"kept\":{left}}}");
    } else if left > 0 {
        println!(
            "stopped; {left} unfinished transfers kept in {}",
            dir.display()
        );
    } else {
        println!("stopped");
    }
    Ok(())
}

/// How many channels are still moving.
async fn running(m: &datatransfer::Manager) -> Result<usize, String> {
    Ok(m.in_progress_channels()
        .await
        .map_err(|e| e.to_string())?
        .len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_seconds("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_seconds("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("3h").is_err());
    }

    #[test]
    fn retention_times_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_retention("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_retention("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_retention("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_retention("7").is_err());
        assert!(parse_retention("soon").is_err());
        assert!(parse_retention("2w").is_err());
    }
}
