//! `transfers`: see and steer the channels of a node. With a node running on the data dir
//! (`serve`, `pull`, `push`), through its control socket; without one, from its store (a
//! cancel is then recorded in the store, so the channel never runs again).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use datatransfer::{
    ChannelFilter, ChannelId, ChannelStore, ChannelUpdate, Event, EventCode, Status,
};
use datatransfer_store_sqlite::SqliteChannelStore;
use datatransfer_types::Timestamp;
use datatransfer_types::store::PurgeFinished;
use serde_json::{Value, json};

use crate::control::{self, summary};
use crate::node;

/// `datatransfer transfers`' subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Transfers {
    /// The node's channels: id, peer, direction, status, bytes, rate, age and message
    /// (running ones unless --completed, --failed or --all; -v adds each stage's log).
    List {
        /// Print again every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Completed channels too.
        #[arg(long)]
        completed: bool,
        /// Failed and cancelled channels too.
        #[arg(long)]
        failed: bool,
        /// Every channel.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Cancel a channel at once and tell its peer, waiting at most --timeout for that; works
    /// whether the peer is there or not, and the channel never runs again.
    Cancel {
        /// The channel, as `list` prints it (initiator-responder-id).
        channel: ChannelId,
        /// How long to wait for the peer to be told.
        #[arg(long, default_value = "5s", value_parser = crate::serve::parse_seconds)]
        timeout: Duration,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Restart a channel on the running node (after a stall, say).
    Restart {
        /// The channel, as `list` prints it.
        channel: ChannelId,
        #[command(flatten)]
        dir: DataDir,
    },
    /// What is in flight with one peer: its channels and the graphsync requests both ways,
    /// with their state.
    Diagnostics {
        /// The peer's id.
        peer: datatransfer::PeerId,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Remove finished channels from the store now (all of them, or those older than
    /// --older-than, or all but the newest --keep).
    Purge {
        /// Only channels finished longer ago than this.
        #[arg(long, value_parser = crate::serve::parse_seconds)]
        older_than: Option<Duration>,
        /// Keep this many of the most recently finished.
        #[arg(long)]
        keep: Option<usize>,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// The node's data dir.
#[derive(Debug, Args)]
pub(crate) struct DataDir {
    /// The node's data dir (the platform's data dir if not given).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// How long to wait for a running node's answer, beyond what the request itself waits.
const ANSWER: Duration = Duration::from_secs(30);

/// Runs a `transfers` subcommand.
pub(crate) async fn run(cmd: Transfers, json: bool, verbose: bool) -> Result<(), String> {
    match cmd {
        Transfers::List {
            watch,
            completed,
            failed,
            all,
            dir,
        } => {
            let dir = node::data_dir_path(dir.data_dir)?;
            let show = |s: &str| {
                all || match s {
                    "Completed" => completed,
                    "Failed" | "Cancelled" => failed,
                    _ => true,
                }
            };
            let mut interrupts = node::Interrupts::new()?;
            loop {
                let channels = list(&dir, verbose).await?;
                let shown: Vec<&Value> = channels
                    .iter()
                    .filter(|c| show(c["status"].as_str().unwrap_or_default()))
                    .collect();
                print_list(&shown, json, verbose);
                if !watch {
                    return Ok(());
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = interrupts.next() => return Ok(()),
                }
                if !json {
                    println!();
                }
            }
        }
        Transfers::Cancel {
            channel,
            timeout,
            dir,
        } => {
            let dir = node::data_dir_path(dir.data_dir)?;
            let req = json!({
                "op": "cancel",
                "channel": channel.to_string(),
                "wait_ms": timeout.as_millis() as u64,
            });
            let answer = match control::ask(&dir, &req, timeout + ANSWER).await? {
                Some(a) => a,
                None => cancel_in_store(&dir, channel).await?,
            };
            if json {
                println!("{answer}");
            } else {
                println!(
                    "{channel}: {} here; {}",
                    answer["status"].as_str().unwrap_or("?"),
                    answer["peer"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        Transfers::Restart { channel, dir } => {
            let dir = node::data_dir_path(dir.data_dir)?;
            let req = json!({ "op": "restart", "channel": channel.to_string() });
            match control::ask(&dir, &req, ANSWER).await? {
                Some(a) if json => println!("{a}"),
                Some(_) => println!("{channel}: restarted"),
                None => return Err(no_node(&dir, "restart a channel")),
            }
            Ok(())
        }
        Transfers::Diagnostics { peer, dir } => {
            let dir = node::data_dir_path(dir.data_dir)?;
            let req = json!({ "op": "diagnostics", "peer": peer.to_string() });
            let Some(a) = control::ask(&dir, &req, ANSWER).await? else {
                return Err(no_node(&dir, "see what is in flight"));
            };
            if json {
                println!("{a}");
                return Ok(());
            }
            println!(
                "peer {peer}: {}",
                if a["connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "not connected"
                }
            );
            let channels = a["channels"].as_array().cloned().unwrap_or_default();
            println!("{} channels in progress", channels.len());
            print_list(&channels.iter().collect::<Vec<_>>(), false, true);
            for (way, label) in [
                ("outgoing", "our requests to it"),
                ("incoming", "its requests to us"),
            ] {
                let list = a["graphsync"][way].as_array().cloned().unwrap_or_default();
                println!("graphsync, {label}: {}", list.len());
                for r in list {
                    println!(
                        "  {}  {:<8} root {}{}",
                        r["request"].as_str().unwrap_or("?"),
                        r["state"].as_str().unwrap_or("?"),
                        r["root"].as_str().unwrap_or("?"),
                        r["traversed"]
                            .as_u64()
                            .map_or(String::new(), |t| format!(", {t} links walked"))
                    );
                }
            }
            Ok(())
        }
        Transfers::Purge {
            older_than,
            keep,
            dir,
        } => {
            let dir = node::data_dir_path(dir.data_dir)?;
            // With neither limit, every finished channel goes.
            let keep = keep.or(older_than.is_none().then_some(0));
            let req = json!({
                "op": "purge",
                "older_than_s": older_than.map(|d| d.as_secs()),
                "keep": keep,
            });
            let removed = match control::ask(&dir, &req, ANSWER).await? {
                Some(a) => a["removed"].as_u64().unwrap_or(0),
                None => {
                    let purge = PurgeFinished {
                        finished_before: older_than.map(ago),
                        keep_newest: keep,
                    };
                    open_store(&dir)?
                        .purge_finished(purge)
                        .await
                        .map_err(|e| e.to_string())?
                }
            };
            if json {
                println!("{{\"removed\":{removed}}}");
            } else {
                println!("{removed} finished channels removed");
            }
            Ok(())
        }
    }
}

fn no_node(dir: &Path, what: &str) -> String {
    format!(
        "no node runs on {}: start it (serve, or re-run the pull or push) to {what}",
        dir.display()
    )
}

/// The time `d` ago.
fn ago(d: Duration) -> Timestamp {
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    Timestamp::from_unix_nanos(
        now.as_unix_nanos()
            .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    )
}

fn open_store(dir: &Path) -> Result<SqliteChannelStore, String> {
    let path = dir.join("channels.sqlite");
    if !path.exists() {
        return Err(format!("no channel store in {}", dir.display()));
    }
    SqliteChannelStore::open(&path).map_err(|e| e.to_string())
}

/// Every channel, from the running node or the store.
async fn list(dir: &Path, stages: bool) -> Result<Vec<Value>, String> {
    let req = json!({ "op": "list", "stages": stages });
    if let Some(a) = control::ask(dir, &req, ANSWER).await? {
        return Ok(a["channels"].as_array().cloned().unwrap_or_default());
    }
    if !dir.join("channels.sqlite").exists() {
        return Ok(Vec::new());
    }
    let channels = open_store(dir)?
        .list(ChannelFilter::All)
        .await
        .map_err(|e| e.to_string())?;
    Ok(channels.iter().map(|c| summary(c, None, stages)).collect())
}

/// A cancel with no node running: recorded in the store (the peer cannot be told).
async fn cancel_in_store(dir: &Path, id: ChannelId) -> Result<Value, String> {
    let store = open_store(dir)?;
    let Some(mut st) = store.get(&id).await.map_err(|e| e.to_string())? else {
        return Err(format!("no channel {id} in {}", dir.display()));
    };
    if st.status.is_terminal() {
        return Err(format!("{id} has already ended ({:?})", st.status));
    }
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let why = "cancelled by the operator while no node was running";
    st.status = Status::Cancelled;
    st.message = why.to_owned();
    st.add_log(why, now);
    store
        .apply(ChannelUpdate::new(
            st,
            vec![Event::new(EventCode::Cancel, why, now)],
        ))
        .await
        .map_err(|e| e.to_string())?;
    Ok(json!({
        "channel": id.to_string(),
        "status": "Cancelled",
        "peer_told": false,
        "peer": format!("the peer was not told: no node runs on {}", dir.display()),
    }))
}

/// Bytes per second, short.
fn rate(r: f64) -> String {
    match r {
        r if r <= 0.0 => "-".into(),
        r if r >= (1 << 20) as f64 => format!("{:.1} MiB/s", r / (1 << 20) as f64),
        r if r >= 1024.0 => format!("{:.1} KiB/s", r / 1024.0),
        r => format!("{r:.0} B/s"),
    }
}

fn print_list(channels: &[&Value], json: bool, stages: bool) {
    if json {
        for c in channels {
            println!("{c}");
        }
        return;
    }
    if channels.is_empty() {
        println!("no channels");
        return;
    }
    println!(
        "{:<22} {:<8} {:<8} {:<24} {:>12} {:>11} {:>7}  PEER / CHANNEL",
        "ID", "DIR", "ROLE", "STATUS", "BYTES", "RATE", "AGE"
    );
    for c in channels {
        let peer = c["peer"].as_str().unwrap_or("?");
        println!(
            "{:<22} {:<8} {:<8} {:<24} {:>12} {:>11} {:>6}s  {}",
            c["id"].as_u64().unwrap_or(0),
            c["direction"].as_str().unwrap_or("?"),
            c["role"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
            c["bytes"].as_u64().unwrap_or(0),
            rate(c["rate"].as_f64().unwrap_or(0.0)),
            c["age_s"].as_u64().unwrap_or(0),
            peer,
        );
        println!("{:<22} {}", "", c["channel"].as_str().unwrap_or("?"));
        if let Some(m) = c["message"].as_str().filter(|m| !m.is_empty()) {
            println!("{:<22} {m}", "");
        }
        if stages {
            for s in c["stages"].as_array().into_iter().flatten() {
                println!("{:<24}{}", "", s["stage"].as_str().unwrap_or("?"));
                for l in s["logs"].as_array().into_iter().flatten() {
                    println!("{:<26}{}", "", l.as_str().unwrap_or("?"));
                }
            }
        }
    }
}
