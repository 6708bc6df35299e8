//! `serve`, `pull` and `status`: one node with its data dir (blocks, channel store, identity
//! key kept between runs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datatransfer::{
    ChannelId, Cid, DagCbor, EventCode, Manager, Multiaddr, PeerId, Registerable, RequestValidator,
    Status, TypedNode, Validation, ValidationError, ValidationOutcome, Voucher, all_selector,
    identity::Keypair,
};
use datatransfer::{ChannelStore, MemoryChannelStore};
use datatransfer_types::store::ChannelFilter;
use dt_ipld::fsstore::FsBlockstore;
use dt_ipld::unixfs::{ImportOptions, export, import};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// The voucher `serve` checks: a shared token (empty when the server takes anyone).
#[derive(Debug, Serialize, Deserialize)]
struct TokenVoucher {
    token: String,
}

impl Registerable for TokenVoucher {
    const TYPE: &'static str = "DatatransferCliToken";
}

struct TokenValidator(Option<String>);

impl TokenValidator {
    fn check(&self, voucher: &Voucher) -> Result<Validation, ValidationError> {
        let Some(want) = &self.0 else {
            return Ok(Validation::accept());
        };
        let ok = voucher
            .decode::<TokenVoucher>()
            .is_ok_and(|v| &v.token == want);
        Ok(if ok {
            Validation::accept()
        } else {
            Validation::new(ValidationOutcome::rejected("wrong token"))
        })
    }
}

#[async_trait]
impl RequestValidator for TokenValidator {
    async fn validate_push(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        voucher: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        self.check(voucher)
    }

    async fn validate_pull(
        &self,
        _: bool,
        _: ChannelId,
        _: PeerId,
        voucher: &Voucher,
        _: Cid,
        _: &DagCbor,
    ) -> Result<Validation, ValidationError> {
        self.check(voucher)
    }
}

/// The data dir: `--data-dir`, or `datatransfer` under the platform's data directory.
pub(crate) fn data_dir(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(d) => d,
        None => dirs::data_dir()
            .ok_or("no data directory on this platform; pass --data-dir")?
            .join("datatransfer"),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The node's identity, generated on first use and kept in the data dir.
fn identity(dir: &Path) -> Result<Keypair, String> {
    let path = dir.join("identity.key");
    if let Ok(bytes) = std::fs::read(&path) {
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| format!("{} is not an identity key: {e}", path.display()));
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| format!("cannot encode the identity key: {e}"))?;
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key)
}

async fn manager(
    dir: &Path,
    listen: Option<Multiaddr>,
) -> Result<(Manager, Arc<FsBlockstore>), String> {
    let blocks = Arc::new(
        FsBlockstore::open(dir.join("blocks"), true)
            .map_err(|e| format!("cannot open the block store in {}: {e}", dir.display()))?,
    );
    let mut b = Manager::builder()
        .keypair(identity(dir)?)
        .sqlite_store(dir.join("channels.sqlite"))
        .blockstore(blocks.clone());
    if let Some(a) = listen {
        b = b.listen_on(a);
    }
    let m = b.build().await.map_err(|e| e.to_string())?;
    Ok((m, blocks))
}

fn parse_addr(s: &str) -> Result<Multiaddr, String> {
    s.parse()
        .map_err(|e| format!("{s:?} is not a multiaddr ({e})"))
}

/// `serve`: import the files, serve pulls (and accept pushes) until Ctrl-C.
pub(crate) async fn serve(
    files: Vec<PathBuf>,
    listen: String,
    dir: PathBuf,
    token: Option<String>,
    json: bool,
) -> Result<(), String> {
    let (m, blocks) = manager(&dir, Some(parse_addr(&listen)?)).await?;
    m.register_voucher_type(TokenVoucher::TYPE, Arc::new(TokenValidator(token)))
        .await
        .map_err(|e| e.to_string())?;
    m.start().await.map_err(|e| e.to_string())?;
    for f in &files {
        let file =
            std::fs::File::open(f).map_err(|e| format!("cannot open {}: {e}", f.display()))?;
        let imported = import(
            &*blocks,
            std::io::BufReader::new(file),
            &ImportOptions::default(),
        )
        .map_err(|e| format!("cannot import {}: {e}", f.display()))?;
        if json {
            println!(
                "{{\"file\":{:?},\"root\":\"{}\",\"size\":{}}}",
                f.display().to_string(),
                imported.root,
                imported.size
            );
        } else {
            println!(
                "{}  {} ({} bytes)",
                imported.root,
                f.display(),
                imported.size
            );
        }
    }
    let full = m.multiaddr().ok_or("the node listens nowhere")?;
    if json {
        println!("{{\"listening\":\"{full}\"}}");
    } else {
        println!("listening on {full}");
    }
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    m.stop().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// `pull`: fetch a DAG, verify it, write the file. Re-running after an interruption resumes
/// the same channel from the store.
pub(crate) async fn pull(
    addr: String,
    cid: String,
    output: Option<PathBuf>,
    dir: PathBuf,
    token: Option<String>,
    json: bool,
) -> Result<(), String> {
    let addr = parse_addr(&addr)?;
    let root: Cid = cid
        .parse()
        .map_err(|e| format!("{cid:?} is not a CID ({e})"))?;
    let (m, blocks) = manager(&dir, None).await?;
    let mut events = m.subscribe().await.map_err(|e| e.to_string())?;
    let peer = tokio::time::timeout(Duration::from_secs(20), m.connect(&addr))
        .await
        .map_err(|_| format!("cannot reach {addr}: timed out"))?
        .map_err(|e| e.to_string())?;
    m.start().await.map_err(|e| e.to_string())?;
    // A pull of the same DAG from the same peer left in progress is resumed, not repeated.
    let resumed = m
        .in_progress_channels()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.base_cid == root && c.other_peer() == peer && c.is_pull());
    let id = match resumed {
        Some(c) => c.channel_id,
        None => {
            let voucher = TypedNode::encode(&TokenVoucher {
                token: token.unwrap_or_default(),
            })
            .map_err(|e| e.to_string())?;
            m.open_pull_channel(peer, voucher, root, all_selector())
                .await
                .map_err(|e| e.to_string())?
        }
    };
    let pb = if json {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new_spinner();
        if let Ok(s) =
            ProgressStyle::with_template("{spinner} {bytes} received, {binary_bytes_per_sec}")
        {
            pb.set_style(s);
        }
        pb
    };
    let mut last_error = String::new();
    let status = loop {
        let next = tokio::time::timeout(Duration::from_secs(120), events.next()).await;
        let Ok(Some((event, state))) = next else {
            return Err("the pull stalled for 2 minutes".into());
        };
        if state.channel_id != id {
            continue;
        }
        pb.set_position(state.received);
        if event.code == EventCode::Error {
            last_error = event.message.clone();
        }
        if state.status.is_terminal() {
            break state.status;
        }
    };
    pb.finish_and_clear();
    m.stop().await.map_err(|e| e.to_string())?;
    if status != Status::Completed {
        return Err(format!("the pull ended {status:?}: {last_error}"));
    }
    let written = match &output {
        Some(path) => {
            let f = std::fs::File::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut w = std::io::BufWriter::new(f);
            export(&*blocks, &root, &mut w).map_err(|e| format!("cannot export {root}: {e}"))?
        }
        None => 0,
    };
    if json {
        println!("{{\"root\":\"{root}\",\"written\":{written},\"channel\":\"{id}\"}}");
    } else if let Some(p) = output {
        println!("{root}: {written} bytes written to {}", p.display());
    } else {
        println!("{root}: received into {}", dir.join("blocks").display());
    }
    Ok(())
}

/// `status`: the channels in the store.
pub(crate) async fn status(dir: PathBuf, all: bool, json: bool) -> Result<(), String> {
    let path = dir.join("channels.sqlite");
    let store: Arc<dyn ChannelStore> = if path.exists() {
        Arc::new(
            datatransfer_store_sqlite::SqliteChannelStore::open(&path)
                .map_err(|e| e.to_string())?,
        )
    } else {
        Arc::new(MemoryChannelStore::new(1))
    };
    let filter = if all {
        ChannelFilter::All
    } else {
        ChannelFilter::InProgress
    };
    let channels = store.list(filter).await.map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now();
    for c in channels {
        let age = c
            .stages
            .stages
            .first()
            .and_then(|s| now.duration_since(s.created.to_system_time()).ok())
            .map_or(0, |d| d.as_secs());
        let bytes = c.received.max(c.sent);
        if json {
            println!(
                "{{\"channel\":\"{}\",\"status\":\"{:?}\",\"bytes\":{bytes},\"peer\":\"{}\",\"age_s\":{age}}}",
                c.channel_id,
                c.status,
                c.other_peer()
            );
        } else {
            println!(
                "{:<20} {:>12} bytes  peer {}  {}s old  {}",
                format!("{:?}", c.status),
                bytes,
                c.other_peer(),
                age,
                c.channel_id.id.0
            );
        }
    }
    Ok(())
}
