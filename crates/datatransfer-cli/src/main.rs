//! `datatransfer`: the data-transfer protocol from the command line.
//!
//! - `datatransfer demo`: two nodes on this machine; a paid pull of a generated file, then a
//!   push back, with progress bars and a verified result.
//! - `datatransfer serve`, `pull`, `push`: one node on a data dir (identity key, block store,
//!   SQLite channel store) serving, fetching or sending DAGs; interrupted pulls and pushes
//!   resume from the store.
//! - `datatransfer retrieve`: a free retrieval from a Filecoin storage provider (Boost) or a
//!   `serve --retrieval` node, as lassie makes it.
//! - `datatransfer status`: the channels in a data dir.
//! - `datatransfer transfers`: list, cancel, restart and diagnose a running node's transfers
//!   (its control socket), purge finished ones.
//! - `datatransfer inspect`: decode a data-transfer or graphsync message.
//!
//! Errors are one line on stderr and a non-zero exit; `-v` adds logs.

mod control;
mod demo;
mod metrics;
mod node;
mod progress;
mod retrieve;
mod selector;
mod serve;
mod transfer;
mod transfers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

/// Move IPLD DAGs between libp2p peers with the Filecoin data-transfer protocol.
#[derive(Debug, Parser)]
#[command(
    name = "datatransfer",
    version,
    after_help = "Examples:\n  datatransfer demo\n  datatransfer serve ./movie.mp4 --data-dir ./provider\n  datatransfer pull /ip4/127.0.0.1/tcp/4010/p2p/12D3KooW... bafybei... -o movie.mp4\n  datatransfer status --all\n  datatransfer inspect a36449735271f4..."
)]
struct Cli {
    /// More logs: -v for info, -vv for debug (RUST_LOG overrides).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Print results as JSON lines, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start two nodes on 127.0.0.1, pull a generated file with pay-as-you-go vouchers, push
    /// it back, and verify the bytes.
    #[command(
        after_help = "Examples:\n  datatransfer demo\n  datatransfer demo --size 8MiB\n  datatransfer demo --size 1GiB --pay-every 128MiB --data-dir ./demo-data"
    )]
    Demo {
        /// Size of the generated file (B, KiB, MiB, GiB).
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        size: u64,
        /// The provider pauses after this many bytes until it is paid with a new voucher.
        #[arg(long, default_value = "64MiB", value_parser = parse_size)]
        pay_every: u64,
        /// Where the nodes keep their blocks and channel stores (a temporary directory if
        /// not given).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Import files (as UnixFS), CARs (as they are) and directories, print their root CIDs
    /// and this node's address, serve pulls and accept pushes until Ctrl-C.
    #[command(after_help = "Examples:
  datatransfer serve ./movie.mp4
  datatransfer serve ./photos/ ./archive.car --listen /ip4/0.0.0.0/tcp/4010 --token s3cret
  datatransfer serve ./movie.mp4 --grace 30s --data-dir ./provider
  datatransfer serve ./movie.mp4 --retrieval   # free Filecoin retrievals too (lassie)

On Ctrl-C new requests are refused and running transfers get --grace to finish; what is
left stays in the data dir and resumes when the peer pulls or pushes again.")]
    Serve(serve::ServeArgs),
    /// Pull a DAG from a peer, verify it, and write the file or a CAR; re-running after an
    /// interruption resumes the same channel.
    #[command(after_help = r#"Examples:
  datatransfer pull /ip4/127.0.0.1/tcp/4010/p2p/12D3KooW... bafybei... -o movie.mp4
  datatransfer pull /ip4/127.0.0.1/tcp/4010/p2p/12D3KooW... bafybei... --car movie.car
  datatransfer pull ADDR CID --car first-level.car --selector '{"R":{"l":{"depth":1},":>":{"a":{">":{"@":{}}}}}}'
  datatransfer pull ADDR CID -o movie.mp4 --limit-rate 10MiB --token s3cret"#)]
    Pull(transfer::PullArgs),
    /// Push a file, a CAR or a directory's files to a peer (which checks the voucher, e.g.
    /// `serve --token`).
    #[command(after_help = "Examples:
  datatransfer push /ip4/127.0.0.1/tcp/4010/p2p/12D3KooW... ./report.pdf
  datatransfer push /ip4/127.0.0.1/tcp/4010/p2p/12D3KooW... ./archive.car --token s3cret")]
    Push(transfer::PushArgs),
    /// Retrieve a DAG from a Filecoin storage provider (Boost) or a `serve --retrieval` node
    /// for free, as lassie does: a retrieval deal proposal with zero prices, verified blocks,
    /// then the file or a CAR.
    #[command(after_help = r#"Examples:
  datatransfer retrieve /ip4/1.2.3.4/tcp/24001/p2p/12D3KooW... bafybei... -o movie.mp4
  datatransfer retrieve ADDR CID --car movie.car
  datatransfer retrieve ADDR CID --car root-only.car --selector '{".":{}}'

A provider that rejects the proposal, asks for payment (paid retrieval is not supported) or
stays silent for --timeout ends the command with its reason."#)]
    Retrieve(retrieve::RetrieveArgs),
    /// See and steer a node's transfers: list (--watch), cancel, restart, diagnostics of a
    /// peer, purge finished ones; through the running node's control socket, or from its
    /// store when none runs.
    #[command(
        subcommand,
        after_help = "Examples:
  datatransfer transfers list --data-dir ./provider
  datatransfer transfers list --watch --all -v
  datatransfer transfers cancel 12D3KooWA...-12D3KooWB...-1796208119761475315 --timeout 5s
  datatransfer transfers restart 12D3KooWA...-12D3KooWB...-1796208119761475315
  datatransfer transfers diagnostics 12D3KooWB...
  datatransfer transfers purge --older-than 1d"
    )]
    Transfers(transfers::Transfers),
    /// List the channels in the store with status, bytes, peer and age.
    #[command(after_help = "Examples:\n  datatransfer status\n  datatransfer status --all --json")]
    Status {
        /// Finished channels too.
        #[arg(long)]
        all: bool,
        /// Where the channel store lives.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Decode a data-transfer message (1.2.0 or 1.1.0) or a graphsync message (2.0.0 or
    /// 1.0.0) given as hex or as a file, and print it.
    #[command(
        after_help = "Examples:\n  datatransfer inspect a36449735271f4...\n  datatransfer inspect message.bin"
    )]
    Inspect {
        /// Hex bytes, or the path of a file holding the raw bytes.
        input: String,
    },
}

/// Splits `"64MiB"` into `(64, "MiB")`; `None` without leading digits.
pub(crate) fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    Some((digits.parse().ok()?, unit.trim()))
}

/// Parses `256MiB`, `8MiB`, `1GiB`, `64KiB`, `1000` (bytes).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s).ok_or_else(|| format!("{s:?} is not a size (try 8MiB)"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn inspect(input: &str, json: bool) -> Result<(), String> {
    let bytes = if std::path::Path::new(input).is_file() {
        std::fs::read(input).map_err(|e| format!("cannot read {input}: {e}"))?
    } else {
        hex::decode(input.trim())
            .map_err(|e| format!("{input:?} is neither a file nor hex ({e})"))?
    };
    use datatransfer_types::message::{Message, WireVersion};
    let found = if let Ok(m) = Message::from_cbor(WireVersion::V1_2, &bytes) {
        ("data-transfer message", format!("{m:#?}"))
    } else if let Ok(m) = datatransfer_graphsync::v2::decode(&bytes, 64) {
        ("graphsync 2.0.0 message", format!("{m:#?}"))
    } else if let Ok(m) =
        datatransfer_graphsync::v1::decode(&bytes, &datatransfer_graphsync::v1::V1Ids::default())
    {
        ("graphsync 1.0.0 message", format!("{m:#?}"))
    } else {
        return Err(format!(
            "{} bytes that are neither a data-transfer nor a graphsync message",
            bytes.len()
        ));
    };
    if json {
        println!(
            "{{\"kind\":{:?},\"bytes\":{},\"debug\":{:?}}}",
            found.0,
            bytes.len(),
            found.1
        );
    } else {
        println!("{} ({} bytes):\n{}", found.0, bytes.len(), found.1);
    }
    Ok(())
}

/// Runs one command.
fn run(command: Command, json: bool, verbose: bool) -> Result<(), String> {
    if let Command::Inspect { input } = &command {
        return inspect(input, json);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    match command {
        Command::Inspect { .. } => Ok(()),
        Command::Serve(args) => rt.block_on(serve::serve(args, json)),
        Command::Pull(args) => rt.block_on(transfer::pull(args, json)),
        Command::Push(args) => rt.block_on(transfer::push(args, json)),
        Command::Retrieve(args) => rt.block_on(retrieve::retrieve(args, json)),
        Command::Transfers(cmd) => rt.block_on(transfers::run(cmd, json, verbose)),
        Command::Status { all, data_dir } => {
            let dir = node::data_dir(data_dir)?;
            rt.block_on(node::status(dir, all, json))
        }
        Command::Demo {
            size,
            pay_every,
            data_dir,
        } => rt.block_on(demo::run(demo::Options {
            size,
            pay_every,
            data_dir,
            json,
        })),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.verbose);
    match run(cli.command, cli.json, cli.verbose > 0) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
