//! One node of the chaos soak (`tests/soak.rs`) as a process of its own, so the soak can
//! SIGKILL it and start it again on the same files: a Manager with a SQLite channel store
//! and a block store on disk, listening on a fixed port, driven by JSON lines on stdin.
//!
//! ```text
//! soak-node --seed N --dir DIR [--port P] [--rate BYTES_PER_S]
//! ```
//!
//! First line out: `{"peer": ID, "addr": MULTIADDR}`. Then one answer line per command line:
//!
//! | command | answer |
//! |---|---|
//! | `{"cmd":"import","seed":S,"size":N}` | `{"root":CID}`: seeded random bytes, 16 KiB chunks |
//! | `{"cmd":"peer","peer":ID,"addr":MA}` | `{}`: where a peer listens |
//! | `{"cmd":"pull"\|"push","peer":ID,"root":CID}` | `{"chid":CHID}` |
//! | `{"cmd":"pause"\|"resume"\|"cancel","chid":CHID}` | `{}` or `{"error":..}` |
//! | `{"cmd":"disconnect","peer":ID}` | `{}` |
//! | `{"cmd":"channels"}` | `{"channels":[{chid,status,received,sent,root,message,vouchers}]}` |
//! | `{"cmd":"digest","root":CID}` | `{"len":N,"fnv":H}` of the file exported, or `{"error":..}` |
//! | `{"cmd":"store_bytes"}` | `{"bytes":N}`: the SQLite files' size |
//! | `{"cmd":"events","chid":CHID}` | `{"events":["Code message",..]}`: the channel's stored log |
//!
//! A CHID is `{"initiator":ID,"responder":ID,"id":N}`.
//!
//! With `--pay-every BYTES` the node charges as a responder: it pauses a pull it serves, or a
//! push it receives, every `BYTES` bytes until paid (its revalidator keeps what it asked for
//! and whether it waits in files under `DIR/pay`, written before it answers, so a SIGKILL
//! loses nothing it said), and as an initiator it pays whatever its responder asks, at once,
//! from what its channel recorded.

#![allow(clippy::unwrap_used)] // A test program: failing loudly is the point.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datatransfer::identity::Keypair;
use datatransfer::{
    ChannelId, Cid, EventCode, Manager, Multiaddr, PeerId, Registerable, Revalidator, TypedNode,
    Validation, ValidationError, ValidationOutcome, Voucher, all_selector,
};
use datatransfer_integration_tests::{
    NodeOptions, TestResult, TestVoucher, fast_config, fnv, import, node, random_bytes, voucher,
};
use datatransfer_ipld::blockstore::Blockstore;
use datatransfer_ipld::fsstore::FsBlockstore;
use datatransfer_types::TransferId;
use datatransfer_types::store::ChannelFilter;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

fn chid_json(c: &ChannelId) -> Value {
    json!({"initiator": c.initiator.to_string(), "responder": c.responder.to_string(),
           "id": c.id.0})
}

fn chid_of(v: &Value) -> ChannelId {
    ChannelId::new(
        v["initiator"].as_str().unwrap().parse().unwrap(),
        v["responder"].as_str().unwrap().parse().unwrap(),
        TransferId(v["id"].as_u64().unwrap()),
    )
}

fn sqlite_bytes(dir: &Path) -> u64 {
    [
        "channels.sqlite",
        "channels.sqlite-wal",
        "channels.sqlite-shm",
    ]
    .iter()
    .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
    .map(|m| m.len())
    .sum()
}

/// Pay-as-you-go for the soak, kept in files so a SIGKILL loses nothing it told a peer: per
/// channel, the bytes served since the last request for payment, the total asked for so far
/// (a voucher of `deal` N pays N bytes in all), and whether a payment is awaited. Each file
/// is written whole (a new file renamed over the old) before the answer that depends on it.
struct DurablePay {
    dir: PathBuf,
    every: u64,
    lock: std::sync::Mutex<()>,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Owed {
    unpaid: u64,
    asked: u64,
    awaiting: bool,
}

impl DurablePay {
    fn path(&self, ch: &ChannelId) -> PathBuf {
        self.dir
            .join(format!("{}-{}-{}", ch.initiator, ch.responder, ch.id.0))
    }

    /// Reads the channel's record, lets `f` change it, writes it back; under one lock.
    fn update<T>(&self, ch: &ChannelId, f: impl FnOnce(&mut Owed) -> T) -> T {
        let _held = self.lock.lock().unwrap();
        let path = self.path(ch);
        let mut owed: Owed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let out = f(&mut owed);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&owed).unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        out
    }

    fn owed(asked: u64) -> Option<TypedNode> {
        Some(TypedNode::encode(&TestResult { owed: asked }).unwrap())
    }

    /// Counts `bytes` more moved on `channel`; a pause with a request for payment once an
    /// interval is due.
    fn served(&self, channel: ChannelId, bytes: u64) -> Option<Validation> {
        let every = self.every;
        let asked = self.update(&channel, |o| {
            o.unpaid += bytes;
            // Also when the record says it waits already: a whole interval more served means
            // the channel never paused (killed after this record was written and before the
            // pause was stored), so it asks again.
            if o.unpaid >= every {
                o.asked += o.unpaid;
                o.unpaid = 0;
                o.awaiting = true;
                Some(o.asked)
            } else {
                None
            }
        });
        asked.map(|asked| {
            let mut v = Validation::new(ValidationOutcome::Pause);
            v.voucher_result = Self::owed(asked);
            v
        })
    }
}

#[async_trait]
impl Revalidator for DurablePay {
    /// A voucher that pays everything asked so far resumes the channel, also when it was not
    /// waiting as far as this record knows (the record and the channel's own pause are
    /// stored apart, and a kill can fall between them).
    async fn revalidate(
        &self,
        channel: ChannelId,
        voucher: &Voucher,
    ) -> Result<Validation, ValidationError> {
        let paid = voucher
            .decode::<TestVoucher>()
            .map_err(|e| ValidationError::Failed(e.to_string()))?
            .deal;
        let outcome = self.update(&channel, |o| {
            if paid >= o.asked {
                o.awaiting = false;
                ValidationOutcome::Resume
            } else {
                ValidationOutcome::Accept
            }
        });
        Ok(Validation::new(outcome))
    }

    async fn on_pull_data_sent(
        &self,
        channel: ChannelId,
        bytes: u64,
    ) -> Result<Option<Validation>, ValidationError> {
        Ok(self.served(channel, bytes))
    }

    /// A receiver charges for a push the same way (as a sim or a test might; no Filecoin
    /// deal does).
    async fn on_push_data_received(
        &self,
        channel: ChannelId,
        bytes: u64,
    ) -> Result<Option<Validation>, ValidationError> {
        Ok(self.served(channel, bytes))
    }
}

/// As an initiator, pays whatever its responder asks at once: a voucher for the total in the
/// last request (asked again after a restart, so a kill in between loses nothing).
async fn pay_when_asked(manager: Manager) {
    let mut events = manager.subscribe().await.unwrap();
    let me = manager.peer_id();
    while let Some((event, state)) = events.next().await {
        if event.code != EventCode::NewVoucherResult || state.channel_id.initiator != me {
            continue;
        }
        let asked = state
            .last_voucher_result()
            .filter(|r| r.type_id.as_str() == TestResult::TYPE)
            .and_then(|r| r.decode::<TestResult>().ok())
            .map_or(0, |r| r.owed);
        if asked > 0 {
            // Refused when the channel ended meanwhile; nothing to do then.
            let _ = manager.send_voucher(state.channel_id, voucher(asked)).await;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seed, mut dir, mut port, mut rate) = (0u8, PathBuf::new(), 0u16, None);
    let mut pay_every = None;
    while let Some(flag) = args.next() {
        let value = args.next().expect("a flag needs a value");
        match flag.as_str() {
            "--seed" => seed = value.parse().unwrap(),
            "--dir" => dir = value.into(),
            "--port" => port = value.parse().unwrap(),
            "--rate" => rate = Some(value.parse().unwrap()),
            "--pay-every" => pay_every = Some(value.parse::<u64>().unwrap()),
            other => panic!("unknown flag {other}"),
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    let blocks = Arc::new(FsBlockstore::open(dir.join("blocks"), true).unwrap());
    let mut config = fast_config();
    // Sends slowed, so transfers are still running when the soak breaks things.
    config.transport.graphsync.max_outbound_rate = rate;
    if let Some(m) = config.engine.monitor.as_mut() {
        // Peers come back within a second of a kill: restarts keep trying meanwhile.
        m.max_consecutive_restarts = 50;
        // A channel whose initiator is gone (killed while its cancel was on the way) ends
        // within the soak's wait; a queued request here waits a few seconds at most.
        m.responder_idle_timeout = Duration::from_secs(20);
    }
    let key = Keypair::ed25519_from_bytes([seed.wrapping_add(1); 32]).unwrap();
    let sqlite = dir.join("channels.sqlite");
    let n = node(NodeOptions {
        sqlite: Some(&sqlite),
        store: Some(blocks.clone() as Arc<dyn Blockstore>),
        keypair: Some(key),
        listen: Some(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()),
        config,
        ..NodeOptions::default()
    })
    .await;
    if let Some(every) = pay_every {
        let pay_dir = dir.join("pay");
        std::fs::create_dir_all(&pay_dir).unwrap();
        let pay = DurablePay {
            dir: pay_dir,
            every,
            lock: std::sync::Mutex::new(()),
        };
        n.manager
            .register_revalidator(TestVoucher::TYPE, Arc::new(pay))
            .await
            .unwrap();
        tokio::spawn(pay_when_asked(n.manager.clone()));
    }
    let addr = n.manager.listen_addrs().await[0].clone();
    println!(
        "{}",
        json!({"peer": n.manager.peer_id().to_string(), "addr": addr.to_string()})
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let cmd: Value = serde_json::from_str(&line).unwrap();
        let chid = || chid_of(&cmd["chid"]);
        let peer = || cmd["peer"].as_str().unwrap().parse::<PeerId>().unwrap();
        let root = || cmd["root"].as_str().unwrap().parse::<Cid>().unwrap();
        let done = |r: Result<(), datatransfer::ManagerError>| match r {
            Ok(()) => json!({}),
            Err(e) => json!({"error": e.to_string()}),
        };
        let answer = match cmd["cmd"].as_str().unwrap() {
            "import" => {
                let data = random_bytes(
                    cmd["size"].as_u64().unwrap() as usize,
                    cmd["seed"].as_u64().unwrap(),
                );
                let root = import(&*blocks, &data, 16 << 10).root;
                blocks.flush().unwrap();
                json!({"root": root.to_string()})
            }
            "peer" => {
                let addr: Multiaddr = cmd["addr"].as_str().unwrap().parse().unwrap();
                n.manager.add_peer_address(peer(), addr).await;
                json!({})
            }
            kind @ ("pull" | "push") => {
                let opened = if kind == "pull" {
                    n.manager
                        .open_pull_channel(peer(), voucher(1), root(), all_selector())
                        .await
                } else {
                    n.manager
                        .open_push_channel(peer(), voucher(1), root(), all_selector())
                        .await
                };
                match opened {
                    Ok(c) => json!({"chid": chid_json(&c)}),
                    Err(e) => json!({"error": e.to_string()}),
                }
            }
            "pause" => done(n.manager.pause_channel(chid()).await),
            "resume" => done(n.manager.resume_channel(chid()).await),
            "cancel" => done(n.manager.close_channel(chid()).await),
            "disconnect" => {
                n.manager.disconnect(peer()).await;
                json!({})
            }
            "channels" => {
                let all = n
                    .manager
                    .channel_store()
                    .list(ChannelFilter::All)
                    .await
                    .unwrap();
                let list: Vec<Value> = all
                    .iter()
                    .map(|st| {
                        json!({"chid": chid_json(&st.channel_id),
                               "status": format!("{:?}", st.status),
                               "received": st.received, "sent": st.sent,
                               "root": st.base_cid.to_string(), "message": st.message,
                               "vouchers": st.vouchers.len()})
                    })
                    .collect();
                json!({"channels": list})
            }
            "digest" => {
                let mut out = Vec::new();
                match datatransfer_ipld::unixfs::export(&*blocks, &root(), &mut out) {
                    Ok(_) => json!({"len": out.len(), "fnv": fnv(&out)}),
                    Err(e) => json!({"error": e.to_string()}),
                }
            }
            "store_bytes" => json!({"bytes": sqlite_bytes(&dir)}),
            "events" => {
                let evs = n.manager.channel_store().events(&chid()).await.unwrap();
                let list: Vec<String> = evs
                    .iter()
                    .map(|e| format!("{:?} {}", e.code, e.message))
                    .collect();
                json!({"events": list})
            }
            other => json!({"error": format!("unknown command {other}")}),
        };
        println!("{answer}");
    }
    blocks.flush().unwrap();
}
