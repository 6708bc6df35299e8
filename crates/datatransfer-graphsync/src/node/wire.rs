//! Streams: one writer task per peer (its outbound stream, the tokens of responses whose
//! messages it drops) and one reader task per inbound stream.

use super::*;

/// A writer keeps the last frame's buffer for the next one only up to this size: one
/// oversized message does not stay allocated for as long as the peer talks.
const KEEP_BUFFER_UP_TO: usize = 4 << 20;

/// Blocks of this size or more go on the stream from the store's memory, not copied into the
/// frame's buffer first (the muxer copies what it is given into its own frames anyway).
const SHARE_BLOCKS_FROM: usize = 16 << 10;

/// Writes go to the stream in runs of whole multiples of this size: yamux cuts what it is
/// given into frames of at most 16 KiB (its `split_send_size`) and sends each at once, so a
/// block's last few bytes or a few header bytes written alone would go out as a small frame
/// (an encrypted record and a system call of their own). What does not fill a run is gathered
/// with the next parts (a copy of under 16 KiB at each block's ends). (Yamux also cuts at the
/// edge of the peer's window, which no writer can foresee.)
const WRITE_RUN: usize = 16 << 10;

/// Writes a frame's parts in order: whole runs of [`WRITE_RUN`] straight from each part, the
/// bytes between them gathered in `scratch` until they make a run. `scratch` holds at most a
/// run, and is cleared first (a failed write may leave bytes in it). Fails with
/// [`std::io::ErrorKind::TimedOut`] if the stream takes no byte for `stalled` (the peer
/// stopped reading).
async fn write_frame(
    stream: &mut (impl futures::AsyncWrite + Unpin),
    frame: &SharedFrame,
    scratch: &mut Vec<u8>,
    stalled: Duration,
) -> std::io::Result<()> {
    scratch.clear();
    scratch.reserve_exact(WRITE_RUN);
    for part in frame.parts() {
        let mut part = part;
        if !scratch.is_empty() {
            let take = (WRITE_RUN - scratch.len()).min(part.len());
            scratch.extend_from_slice(&part[..take]);
            part = &part[take..];
            if scratch.len() < WRITE_RUN {
                continue;
            }
            write_all(stream, scratch, stalled).await?;
            scratch.clear();
        }
        let whole = part.len() - part.len() % WRITE_RUN;
        if whole > 0 {
            write_all(stream, &part[..whole], stalled).await?;
        }
        scratch.extend_from_slice(&part[whole..]);
    }
    if !scratch.is_empty() {
        write_all(stream, scratch, stalled).await?;
        scratch.clear();
    }
    Ok(())
}

/// Writes all of `buf`, failing with [`std::io::ErrorKind::TimedOut`] if the stream takes no
/// byte for `stalled`: a deadline on progress, not on the whole (a large frame to a slow but
/// reading peer takes as long as it takes).
async fn write_all(
    stream: &mut (impl futures::AsyncWrite + Unpin),
    mut buf: &[u8],
    stalled: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match tokio::time::timeout(stalled, stream.write(buf)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the peer took nothing for {stalled:?} (it stopped reading)"),
                ));
            }
        }
    }
    Ok(())
}

/// The way to a peer's writer task. Each response being served tags its messages with a
/// token of its own (0 for the node's own messages): when a stream breaks, the responses that
/// had written on it lost messages, so the writer drops their later messages instead of
/// sending them with a gap before them on the next stream (and the node cancels them).
///
/// Responses wait for room in a small queue (a slow peer slows its own responses down); the
/// node's own messages (requests, cancels, updates: small, and as many as the application
/// asks for) go in a queue of their own that never makes the node wait, so one slow peer
/// holds up no other.
#[derive(Clone)]
pub(super) struct PeerWriter {
    pub(super) tx: mpsc::Sender<(u64, Message)>,
    pub(super) own: mpsc::UnboundedSender<Message>,
    /// How many of the node's own messages wait for the writer.
    pub(super) own_queued: Arc<AtomicUsize>,
}

/// The receiving ends of a [`PeerWriter`], for its writer task.
pub(super) struct WriterQueues {
    pub(super) rx: mpsc::Receiver<(u64, Message)>,
    pub(super) own: mpsc::UnboundedReceiver<Message>,
    pub(super) own_queued: Arc<AtomicUsize>,
}

impl WriterQueues {
    /// The next message to write: the node's own first; `None` once both queues are closed
    /// and empty.
    async fn next(&mut self) -> Option<(u64, Message)> {
        tokio::select! {
            biased;
            Some(m) = self.own.recv() => {
                self.own_queued.fetch_sub(1, Ordering::Relaxed);
                Some((0, m))
            }
            Some(m) = self.rx.recv() => Some(m),
            else => None,
        }
    }

    /// A message that is waiting already, if any (the node's own first).
    fn try_next(&mut self) -> Option<(u64, Message)> {
        if let Ok(m) = self.own.try_recv() {
            self.own_queued.fetch_sub(1, Ordering::Relaxed);
            return Some((0, m));
        }
        self.rx.try_recv().ok()
    }
}

/// A peer's writer and the queues its task reads.
pub(super) fn peer_writer() -> (PeerWriter, WriterQueues) {
    let (tx, rx) = mpsc::channel(8);
    let (own_tx, own) = mpsc::unbounded_channel();
    let own_queued = Arc::new(AtomicUsize::new(0));
    let writer = PeerWriter {
        tx,
        own: own_tx,
        own_queued: own_queued.clone(),
    };
    (
        writer,
        WriterQueues {
            rx,
            own,
            own_queued,
        },
    )
}

/// Serve tokens whose messages the writer drops: responses that broke with a stream, or
/// that the requester cancelled while their messages still waited for the writer (a
/// go-graphsync requester that pauses, then resumes under the same id, must not get blocks of
/// the cancelled response after the new one starts). Bounded: a cancelled response stops
/// queuing soon after.
#[derive(Default)]
pub(super) struct DeadTokens {
    pub(super) set: HashSet<u64>,
    pub(super) order: std::collections::VecDeque<u64>,
}

impl DeadTokens {
    pub(super) fn insert(&mut self, token: u64) {
        if self.set.insert(token) {
            self.order.push_back(token);
        }
        while self.order.len() > 4096 {
            if let Some(t) = self.order.pop_front() {
                self.set.remove(&t);
            }
        }
    }

    pub(super) fn contains(&self, token: u64) -> bool {
        self.set.contains(&token)
    }
}

pub(super) type SharedDead = Arc<std::sync::Mutex<DeadTokens>>;

/// Whether `token`'s messages are to be dropped.
pub(super) fn is_dead(dead: &SharedDead, token: u64) -> bool {
    dead.lock().map(|d| d.contains(token)).unwrap_or(false)
}

/// Busy refusals waiting to be sent to one peer.
#[derive(Default)]
pub(super) struct BusyAnswers {
    pub(super) ids: Vec<RequestId>,
    /// A task is sending them.
    pub(super) flushing: bool,
}

/// Refusals held for one peer at most; a peer that keeps sending requests past its queue
/// faster than it reads our answers loses the answers past this many.
pub(super) const MAX_BUSY_ANSWERS: usize = 65_536;

/// Refusals per message.
pub(super) const BUSY_PER_MESSAGE: usize = 1_024;

impl BusyAnswers {
    /// Adds a refusal; whether a task must be started to send it.
    pub(super) fn push(&mut self, id: RequestId) -> bool {
        if self.ids.len() < MAX_BUSY_ANSWERS {
            self.ids.push(id);
        }
        !std::mem::replace(&mut self.flushing, true)
    }
}

/// Sends the peer's pending busy refusals, in batches, until none is left.
pub(super) async fn answer_busy(writer: PeerWriter, busy: Arc<std::sync::Mutex<BusyAnswers>>) {
    loop {
        let batch: Vec<RequestId> = match busy.lock() {
            Ok(mut b) if b.ids.is_empty() => {
                b.flushing = false;
                return;
            }
            Ok(mut b) => {
                let n = b.ids.len().min(BUSY_PER_MESSAGE);
                b.ids.drain(..n).collect()
            }
            Err(_) => return,
        };
        let responses = batch
            .into_iter()
            .map(|id| Response {
                id,
                status: ResponseStatus::RequestFailedBusy,
                metadata: Vec::new(),
                extensions: Extensions::new(),
            })
            .collect();
        if !writer
            .send(Message {
                responses,
                ..Message::default()
            })
            .await
        {
            return;
        }
    }
}

/// Tokens of responses being served; 0 is the node's own messages.
pub(super) static SERVE_TOKENS: AtomicU64 = AtomicU64::new(1);

impl PeerWriter {
    /// Queues one of the node's own messages; never waits.
    pub(super) fn send_own(&self, msg: Message) {
        self.own_queued.fetch_add(1, Ordering::Relaxed);
        if self.own.send(msg).is_err() {
            self.own_queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many of the node's own messages wait for the writer.
    pub(super) fn own_backlog(&self) -> usize {
        self.own_queued.load(Ordering::Relaxed)
    }

    pub(super) async fn send(&self, msg: Message) -> bool {
        self.send_as(0, msg).await
    }

    pub(super) async fn send_as(&self, token: u64, msg: Message) -> bool {
        self.tx.send((token, msg)).await.is_ok()
    }
}

/// Whether a stream's write failed because its connection closed: libp2p drops the
/// connection's handler (which marks its streams) a moment after the muxer fails them, so a
/// stream that failed alone is given that moment before it is taken as only reset.
async fn connection_closed(watch: datatransfer_streams::ConnectionWatch) -> bool {
    for _ in 0..10 {
        if watch.is_closed() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watch.is_closed()
}

/// Reads one inbound stream's messages and hands them to the node.
pub(super) struct Reader {
    pub(super) peer: PeerId,
    pub(super) version: Version,
    /// Largest message accepted.
    pub(super) max: usize,
    /// The inbound byte budget shared by all readers, and its size.
    pub(super) budget: Arc<Semaphore>,
    pub(super) budget_total: usize,
    /// The inbound rate limit shared by all readers, if any.
    pub(super) rate: Option<Arc<RateLimit>>,
    pub(super) tx: mpsc::Sender<Cmd>,
}

impl Reader {
    pub(super) async fn run(self, mut stream: datatransfer_streams::Stream) {
        let Self {
            peer,
            version,
            max,
            budget,
            budget_total,
            rate,
            tx,
        } = self;
        let mut frames = FrameReader::new(max);
        // Everything read goes to the node through the decoder, in order.
        let (decoder, rx) = mpsc::channel::<Cmd>(1);
        tokio::spawn(decode(rx, tx));
        let tx = decoder;
        loop {
            loop {
                match frames.next_frame() {
                    Ok(Some(body)) => {
                        // Wait for room in the budget (a body larger than it takes all of it).
                        let want = body.len().clamp(1, budget_total) as u32;
                        let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                            return;
                        };
                        let cmd = Cmd::Inbound(peer, version, body, permit);
                        if tx.send(cmd).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Dropping the stream resets it; the peer's other streams go on.
                        let _ = tx
                            .send(Cmd::WriteFailed(peer, format!("bad inbound frame: {e}")))
                            .await;
                        return;
                    }
                }
            }
            // Read straight into the frame: a large body lands where it is handed out from.
            match stream.read(frames.read_buf()).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Cmd::InboundClosed(peer)).await;
                    return;
                }
                Ok(n) => {
                    frames.advance(n);
                    if let Some(rate) = &rate {
                        rate.take(n).await;
                    }
                }
            }
        }
    }
}

/// Decodes a stream's version 2 messages for the node, passing on the reader's other
/// commands in order. Version 2 needs nothing of the node to decode, so hashing each block
/// to build its CID runs here: beside the node's task, and beside the reader's, which reads
/// the next frame meanwhile (one task for both kept a core idle while it hashed: 1.50-1.55
/// cores busy in the 1 GiB pull into a memory store, 1.61-1.75 with this task).
async fn decode(mut rx: mpsc::Receiver<Cmd>, tx: mpsc::Sender<Cmd>) {
    while let Some(cmd) = rx.recv().await {
        let cmd = match cmd {
            Cmd::Inbound(peer, Version::V2, body, permit) => Cmd::Decoded(
                peer,
                crate::v2::decode_shared(&body, 256),
                body.len(),
                permit,
            ),
            other => other,
        };
        if tx.send(cmd).await.is_err() {
            return;
        }
    }
}

/// Sends a peer's messages on one stream, coalescing what is queued into messages up to the
/// size target (go-graphsync's message queue), and reports each block sent.
#[allow(clippy::too_many_arguments)] // The writer task's whole context, passed once at spawn.
pub(super) async fn write_stream(
    peer: PeerId,
    mut control: Control,
    config: Arc<GraphSyncConfig>,
    ids: Arc<Mutex<V1Ids>>,
    hooks: Arc<dyn Hooks>,
    mut queues: WriterQueues,
    tx: NodeRef,
    rate: Option<Arc<RateLimit>>,
    dead: SharedDead,
) {
    let versions = config.versions.clone();
    let mut open: Option<(datatransfer_streams::Stream, Version)> = None;
    let mut carry: Option<(u64, Message)> = None;
    // Serve tokens with messages on the current stream.
    let mut written: HashMap<u64, RequestId> = HashMap::new();
    // The last frame's buffer, for the next one (dropped when the peer goes idle).
    let mut spare: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let (first_token, first) = match carry.take() {
            Some(m) => m,
            None => match tokio::time::timeout(config.peer_idle_timeout, queues.next()).await {
                Err(_) => {
                    // Idle: let the node forget us if it can (it drops our queue's sender,
                    // which ends this task and closes the stream). The stream stays open
                    // while it cannot: a response of ours waiting (for a payment, say) or a
                    // request of ours in flight. The peer takes the stream's end as the loss
                    // of what was on it and fails its requests to us, which would restart a
                    // channel that is only paused (go-graphsync keeps its stream to a peer
                    // until the connection goes, too). Never waits on the node, which may be
                    // waiting on our queue.
                    spare = Vec::new();
                    scratch = Vec::new();
                    tx.try_send(Cmd::PeerIdle(peer));
                    continue;
                }
                Ok(Some((t, _))) if is_dead(&dead, t) => continue,
                Ok(Some(m)) => m,
                Ok(None) => break,
            },
        };
        let mut msg = first;
        // Which token each response in the merged message came with.
        let mut tokens: HashMap<RequestId, u64> =
            msg.responses.iter().map(|r| (r.id, first_token)).collect();
        let mut size = msg.approx_size();
        while size < config.message_target {
            let Some((t, next)) = queues.try_next() else {
                break;
            };
            if is_dead(&dead, t) {
                continue;
            }
            let more = next.approx_size();
            if size + more > config.max_message_size / 2 {
                carry = Some((t, next));
                break;
            }
            size += more;
            for r in &next.responses {
                tokens.insert(r.id, t);
            }
            msg.merge(next);
        }
        // Responses cancelled while this message was being put together are left out.
        if msg
            .responses
            .iter()
            .any(|r| tokens.get(&r.id).is_some_and(|t| is_dead(&dead, *t)))
        {
            msg.responses
                .retain(|r| !tokens.get(&r.id).is_some_and(|t| is_dead(&dead, *t)));
            let wanted: HashSet<Cid> = msg
                .responses
                .iter()
                .flat_map(|r| r.metadata.iter().map(|(c, _)| *c))
                .collect();
            msg.blocks.retain(|b| wanted.contains(&b.cid));
            if msg.responses.is_empty() && msg.requests.is_empty() {
                continue;
            }
        }
        // At most two attempts: a stream found broken on write is replaced once, and the
        // message goes out on the new one. If the connection behind it closed, the responses
        // that wrote on the broken stream lost messages and are cancelled (the requester
        // fails its requests with the connection, and restarts anew); the rest of this
        // message goes on. If only the stream broke, its connection up, they go on too, as
        // go-graphsync's message queue does: the usual cause is a go-libp2p peer resetting a
        // stream it read nothing from for 10 s (a response paused for a payment) after it
        // read all of it, and its requests live on.
        let mut sent = false;
        for attempt in 0..2 {
            let mut why = String::from("the peer speaks no graphsync version of ours");
            if open.is_none() {
                written.clear();
                for &v in &versions {
                    match control
                        .open_stream(peer, StreamProtocol::new(v.protocol()))
                        .await
                    {
                        Ok(s) => {
                            open = Some((s, v));
                            break;
                        }
                        Err(OpenStreamError::UnsupportedProtocol(_)) => continue,
                        Err(e) => {
                            why = e.to_string();
                            break;
                        }
                    }
                }
            }
            let Some((stream, version)) = open.as_mut() else {
                let _ = tx
                    .send(Cmd::WriteFailed(
                        peer,
                        format!("cannot open a graphsync stream to the peer: {why}"),
                    ))
                    .await;
                break;
            };
            let frame = match ids.lock() {
                Ok(mut ids) => encode_shared_frame_into(
                    std::mem::take(&mut spare),
                    &msg,
                    *version,
                    &mut ids,
                    SHARE_BLOCKS_FROM,
                ),
                Err(_) => return,
            };
            let written_ok = write_frame(stream, &frame, &mut scratch, config.write_timeout).await;
            let len = frame.len();
            let buffer = frame.into_buffer();
            if buffer.capacity() <= KEEP_BUFFER_UP_TO {
                spare = buffer;
            }
            match written_ok {
                Ok(()) => {
                    if let Some(rate) = &rate {
                        rate.take(len).await;
                    }
                    sent = true;
                    break;
                }
                Err(e) => {
                    let watch = stream.connection();
                    open = None;
                    // A peer that took nothing for the write timeout has not read what we
                    // wrote before either: the messages on the dropped stream are lost, so the
                    // peer's requests and responses end, as when its connection is lost.
                    if attempt == 1 || e.kind() == std::io::ErrorKind::TimedOut {
                        // The node ends every response and request of the peer's. None of
                        // their messages (on the dropped stream, in this one, waiting) may go
                        // out on a later stream with a gap before it: their tokens are dead
                        // before the writer takes another message.
                        let mut ended: Vec<u64> = written.drain().map(|(t, _)| t).collect();
                        ended.extend(tokens.values().copied());
                        ended.extend(carry.take().map(|(t, _)| t));
                        while let Some((t, _)) = queues.try_next() {
                            ended.push(t);
                        }
                        if let Ok(mut d) = dead.lock() {
                            for t in ended.into_iter().filter(|t| *t != 0) {
                                d.insert(t);
                            }
                        }
                        let _ = tx.send(Cmd::WriteFailed(peer, e.to_string())).await;
                        break;
                    }
                    let connection_closed = e.kind() == std::io::ErrorKind::ConnectionAborted
                        || connection_closed(watch).await;
                    if !connection_closed {
                        let _ = tx
                            .send(Cmd::StreamBroken(peer, e.to_string(), Vec::new()))
                            .await;
                        continue;
                    }
                    written.remove(&0);
                    let mut broken = Vec::new();
                    if let Ok(mut d) = dead.lock() {
                        for (t, id) in written.drain() {
                            broken.push((id, t));
                            d.insert(t);
                        }
                    }
                    msg.responses
                        .retain(|r| !tokens.get(&r.id).is_some_and(|t| is_dead(&dead, *t)));
                    let wanted: std::collections::HashSet<Cid> = msg
                        .responses
                        .iter()
                        .flat_map(|r| r.metadata.iter().map(|(c, _)| *c))
                        .collect();
                    msg.blocks.retain(|b| wanted.contains(&b.cid));
                    let _ = tx
                        .send(Cmd::StreamBroken(peer, e.to_string(), broken))
                        .await;
                    if msg.responses.is_empty() && msg.requests.is_empty() {
                        break;
                    }
                }
            }
        }
        if !sent {
            continue;
        }
        for r in &msg.responses {
            if let Some(t) = tokens.get(&r.id) {
                written.insert(*t, r.id);
            }
        }
        if !msg.blocks.is_empty() {
            let sizes: HashMap<Cid, u64> = msg
                .blocks
                .iter()
                .map(|b| (b.cid, b.data.len() as u64))
                .collect();
            for r in &msg.responses {
                for (cid, _) in &r.metadata {
                    if let Some(size) = sizes.get(cid) {
                        hooks.block_sent(peer, r.id, *cid, *size);
                    }
                }
            }
        }
        // A response is complete once its last message is on the wire (go-graphsync's
        // completed-response listeners fire after the send, too).
        for r in &msg.responses {
            if r.status.is_terminal() {
                hooks.completed_response(peer, r.id, r.status);
            }
        }
    }
    if let Some((mut s, _)) = open {
        let _ = s.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that keeps what each write call gave it, and where the bytes were; with a
    /// cap, it takes at most that many bytes a call (as yamux at the edge of its window).
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>, Vec<*const u8>, Option<usize>);

    impl futures::AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = self.2.map_or(buf.len(), |cap| cap.min(buf.len()));
            self.0.push(buf[..n].to_vec());
            self.1.push(buf.as_ptr());
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A version 2 message framed whole (the bytes) and shared as the writer does.
    fn both_ways(msg: &Message) -> (Vec<u8>, SharedFrame) {
        let whole = crate::encode_frame(msg, Version::V2, &mut V1Ids::default()).to_vec();
        let shared = encode_shared_frame_into(
            Vec::new(),
            msg,
            Version::V2,
            &mut V1Ids::default(),
            SHARE_BLOCKS_FROM,
        );
        (whole, shared)
    }

    /// Whether every write but the last is whole runs, and the last is not empty.
    fn whole_runs(writes: &[Vec<u8>]) -> bool {
        writes.split_last().is_some_and(|(last, runs)| {
            !last.is_empty()
                && runs
                    .iter()
                    .all(|w| !w.is_empty() && w.len().is_multiple_of(WRITE_RUN))
        })
    }

    fn block(len: usize, seed: u8) -> Block {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        Block {
            cid: datatransfer_ipld::codec::cid_of(datatransfer_ipld::codec::RAW, &data),
            data: data.into(),
        }
    }

    #[tokio::test]
    async fn a_frame_goes_out_in_whole_runs_with_its_large_blocks_not_copied() {
        // Blocks of every kind of length: a few bytes, just under and over a run, several
        // runs and a bit, exactly two runs.
        let blocks = vec![
            block(100, 1),
            block(WRITE_RUN - 3, 2),
            block(WRITE_RUN + 5, 3),
            block(3 * WRITE_RUN + 777, 4),
            block(2 * WRITE_RUN, 5),
            block(10, 6),
        ];
        let msg = Message {
            blocks: blocks.clone(),
            ..Message::default()
        };
        let (whole, frame) = both_ways(&msg);
        // The three blocks of a run or more are handed out as they lie, not copied.
        assert_eq!(frame.len(), whole.len());
        let parts: Vec<*const u8> = frame.parts().iter().map(|p| p.as_ptr()).collect();
        for b in &blocks[2..5] {
            assert!(
                parts.contains(&b.data.as_ptr()),
                "block of {} bytes",
                b.data.len()
            );
        }
        let large: usize = blocks[2..5].iter().map(|b| b.data.len()).sum();
        assert!(frame.clone().into_buffer().len() <= whole.len() - large + crate::PREFIX_ROOM);
        let mut out = Writes::default();
        let mut scratch = Vec::new();
        write_frame(&mut out, &frame, &mut scratch, Duration::from_secs(10))
            .await
            .expect("writes to memory");
        assert_eq!(out.0.concat(), whole, "the bytes of the frame, in order");
        assert!(
            whole_runs(&out.0),
            "writes of {:?} bytes",
            out.0.iter().map(Vec::len).collect::<Vec<_>>()
        );
        // A block of two runs or more has runs written from its own memory, whatever the
        // bytes gathered before it.
        for b in &blocks[3..5] {
            let within = b.data.as_ptr_range();
            assert!(
                out.1.iter().any(|p| within.contains(p)),
                "no write from the block of {} bytes",
                b.data.len()
            );
        }
        assert!(scratch.is_empty() && scratch.capacity() <= WRITE_RUN);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7772_6974),
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn any_frame_goes_out_whole_in_order(
            sizes in proptest::collection::vec(0usize..3 * WRITE_RUN, 0..6),
            cap in proptest::option::of(1usize..2 * WRITE_RUN),
        ) {
            let msg = Message {
                blocks: sizes.iter().enumerate().map(|(i, &n)| block(n, i as u8)).collect(),
                ..Message::default()
            };
            let (whole, frame) = both_ways(&msg);
            let mut out = Writes(Vec::new(), Vec::new(), cap);
            let mut scratch = Vec::new();
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
                .block_on(write_frame(
                    &mut out,
                    &frame,
                    &mut scratch,
                    Duration::from_secs(10),
                ))
                .expect("writes to memory");
            proptest::prop_assert_eq!(out.0.concat(), whole);
            proptest::prop_assert!(scratch.is_empty());
            if cap.is_none() {
                // Taken whole, every write but the last is whole runs.
                proptest::prop_assert!(whole_runs(&out.0));
            }
        }
    }
}
