//! The engine's transport commands carried out: requests opened, paused, resumed,
//! restarted and cancelled, and what each request reports turned into transport events.

use crate::*;

/// Carries out commands in order.
pub(super) async fn execute_commands(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<TransportCommand>,
) {
    while let Some(cmd) = rx.recv().await {
        if shared.lock().shut_down {
            continue;
        }
        let Some(gs) = shared.gs() else { continue };
        match cmd {
            TransportCommand::OpenChannel {
                data_sender,
                channel,
                root,
                selector,
                message,
                restart,
            } => {
                let open = Open {
                    data_sender,
                    channel,
                    root,
                    selector,
                    message,
                    restart,
                };
                open_channel(&shared, &gs, open, 0).await
            }
            TransportCommand::CloseChannel { channel }
            | TransportCommand::CleanupChannel { channel } => {
                let (out, serving) = {
                    let mut st = shared.lock();
                    let out = st.outgoing.remove(&channel);
                    let serving = st.serving_channels.remove(&channel);
                    // The channel's responses, the replaced ones too.
                    st.serving.retain(|_, sv| sv.channel != channel);
                    st.stores.remove(&channel);
                    st.stashed.remove(&channel);
                    (out, serving)
                };
                if let Some(o) = out {
                    o.closed.store(true, Ordering::SeqCst);
                    if let Some(c) = o.control {
                        c.cancel().await;
                    }
                }
                if let Some((peer, id)) = serving {
                    gs.cancel_response(peer, id).await;
                }
            }
            TransportCommand::PauseChannel { channel } => {
                let (control, serving) = {
                    let st = shared.lock();
                    (
                        st.outgoing.get(&channel).and_then(|o| o.control.clone()),
                        st.serving_channels.get(&channel).copied(),
                    )
                };
                if let Some(c) = control {
                    c.pause().await;
                } else if let Some((peer, id)) = serving {
                    gs.pause_response(peer, id).await;
                }
            }
            TransportCommand::ResumeChannel { channel, message } => {
                let ext = message.as_ref().map_or_else(Extensions::new, |m| {
                    extensions_for(m, &[EXTENSION_DATA_TRANSFER])
                });
                let (control, serving) = {
                    let mut st = shared.lock();
                    let control = st.outgoing.get(&channel).and_then(|o| o.control.clone());
                    let serving = st.serving_channels.get(&channel).copied();
                    if control.is_none()
                        && serving.is_none()
                        && let Some(m) = message
                    {
                        st.stashed.entry(channel).or_default().push(m);
                    }
                    (control, serving)
                };
                if let Some(c) = control {
                    c.unpause(ext).await;
                } else if let Some((peer, id)) = serving {
                    gs.unpause_response(peer, id, ext).await;
                }
            }
            TransportCommand::HookResult {
                token,
                message,
                result,
                ..
            } => hook_result(&shared, &gs, token, message, result).await,
        }
    }
}

pub(super) async fn hook_result(
    shared: &Shared,
    gs: &GraphSync,
    token: HookToken,
    message: Option<Message>,
    result: HookResult,
) {
    let Some(pending) = shared.lock().pending.remove(&token) else {
        return;
    };
    match pending {
        Pending::Answer(tx) => {
            let _ = tx.send((message, result));
        }
        Pending::Received(channel) | Pending::InResponse(channel) => {
            let (control, closed) = {
                let st = shared.lock();
                match st.outgoing.get(&channel) {
                    Some(o) => (o.control.clone(), o.closed.clone()),
                    None => return,
                }
            };
            let Some(control) = control else { return };
            if let Some(m) = message {
                control
                    .unpause(extensions_for(&m, &[EXTENSION_DATA_TRANSFER]))
                    .await;
            }
            match result {
                HookResult::Pause => control.pause().await,
                HookResult::Fail(_) => {
                    closed.store(true, Ordering::SeqCst);
                    control.cancel().await;
                }
                HookResult::Continue | HookResult::Resume => {}
            }
        }
        Pending::Updated(peer, id) => {
            if let Some(m) = message {
                gs.send_extensions(peer, id, extensions_for(&m, &[EXTENSION_DATA_TRANSFER]))
                    .await;
            }
            match result {
                HookResult::Pause => gs.pause_response(peer, id).await,
                HookResult::Fail(_) => gs.cancel_response(peer, id).await,
                HookResult::Continue | HookResult::Resume => {}
            }
        }
    }
}

/// What opening (or re-opening) a channel's request needs.
#[derive(Clone)]
pub(super) struct Open {
    pub(super) data_sender: PeerId,
    pub(super) channel: ChannelId,
    pub(super) root: Cid,
    pub(super) selector: DagCbor,
    pub(super) message: Message,
    pub(super) restart: Option<Box<ChannelState>>,
}

/// Sends a channel's graphsync request; `busy` is how many busy refusals came before it.
pub(super) async fn open_channel(shared: &Arc<Shared>, gs: &GraphSync, open: Open, busy: u32) {
    let Open {
        data_sender,
        channel,
        root,
        ref selector,
        ref message,
        ref restart,
    } = open;
    let fail = |error: String| {
        shared.deliver(TransportEvent::OpenFailed { channel, error });
    };
    let (store, old) = {
        let mut st = shared.lock();
        let store = st
            .stores
            .get(&channel)
            .cloned()
            .unwrap_or_else(|| shared.default_store.clone());
        (store, st.outgoing.remove(&channel))
    };
    // A re-open replaces the request in flight.
    if let Some(o) = old {
        o.closed.store(true, Ordering::SeqCst);
        if let Some(c) = o.control {
            c.cancel().await;
        }
    }
    let mut ext = extensions_for(message, &[EXTENSION_DATA_TRANSFER]);
    if ext.get(EXTENSION_DATA_TRANSFER).is_none() {
        return fail("the data-transfer message could not be encoded".into());
    }
    if restart.is_some() || shared.skip_held_on_open {
        // A walk of the blocks at hand: off the async workers (a million blocks take a while).
        let held = {
            let (store, selector, traversal) =
                (store.clone(), selector.clone(), shared.traversal.clone());
            tokio::task::spawn_blocking(move || held_prefix(&*store, root, &selector, &traversal))
                .await
                .unwrap_or(0)
        };
        if held > 0 {
            ext.set(
                DO_NOT_SEND_FIRST_BLOCKS,
                datatransfer_graphsync::responder::encode_skip_count(held),
            );
        }
    }
    let Ok(selector) = RawNode::new(selector.as_bytes().to_vec()) else {
        return fail("the selector is not valid DAG-CBOR".into());
    };
    let closed = Arc::new(AtomicBool::new(false));
    // Registered before the request leaves, so its first blocks find it.
    shared.lock().outgoing.insert(
        channel,
        Outgoing {
            control: None,
            closed: closed.clone(),
        },
    );
    let handle = match gs
        .request_into(data_sender, root, selector, ext, store.clone())
        .await
    {
        Ok(h) => h,
        Err(e) => {
            shared.lock().outgoing.remove(&channel);
            return fail(e.to_string());
        }
    };
    let registered = {
        let mut st = shared.lock();
        match st.outgoing.get_mut(&channel) {
            Some(o) if Arc::ptr_eq(&o.closed, &closed) => {
                o.control = Some(handle.control());
                true
            }
            _ => false,
        }
    };
    if !registered {
        // Closed while the request was being sent.
        handle.control().cancel().await;
        return;
    }
    tokio::spawn(watch_request(
        shared.clone(),
        open,
        busy,
        handle,
        closed,
        store,
    ));
}

/// Opens the channel's request again after `wait`, unless it was closed meanwhile. (A named
/// future type: `open_channel` and `watch_request` would otherwise be one recursive future.)
pub(super) fn reopen_later(
    shared: Arc<Shared>,
    open: Open,
    busy: u32,
    wait: Duration,
    closed: Arc<AtomicBool>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        tokio::time::sleep(wait).await;
        if closed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(gs) = shared.gs() {
            open_channel(&shared, &gs, open, busy).await;
        }
    })
}

/// Follows one of our requests to its end and reports how it ended. A request that got
/// every block completes only once `store` has made them durable.
pub(super) async fn watch_request(
    shared: Arc<Shared>,
    open: Open,
    busy: u32,
    mut handle: RequestHandle,
    closed: Arc<AtomicBool>,
    store: Arc<dyn Blockstore>,
) {
    let channel = open.channel;
    let id = handle.id;
    let mut result = Err(GraphSyncError::Closed);
    while let Some(ev) = handle.next().await {
        if let RequestEvent::Completed(r) = ev {
            result = r;
            break;
        }
    }
    // A busy responder (its queue for us is full) is asked again later; the channel stays
    // registered meanwhile, so closing it stops the retry.
    let retry = matches!(
        result,
        Err(GraphSyncError::Verify(
            datatransfer_graphsync::requester::VerifyError::Failed(
                ResponseStatus::RequestFailedBusy
            )
        ))
    ) && busy < shared.max_busy_retries;
    {
        let mut st = shared.lock();
        st.outgoing_ids.remove(&id);
        if let Some(o) = st.outgoing.get_mut(&channel)
            && Arc::ptr_eq(&o.closed, &closed)
        {
            if retry {
                o.control = None;
            } else {
                st.outgoing.remove(&channel);
            }
        }
    }
    if closed.load(Ordering::SeqCst) {
        return;
    }
    if retry {
        shared.deliver(TransportEvent::TransferQueued { channel });
        let wait = shared.busy_retry_backoff * 2u32.saturating_pow(busy.min(5));
        tokio::spawn(reopen_later(shared, open, busy + 1, wait, closed));
        return;
    }
    let event = match result {
        Ok(ResponseStatus::RequestCompletedFull) => TransportEvent::ChannelCompleted {
            channel,
            result: match tokio::task::spawn_blocking(move || store.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Fault::local(format!(
                    "the received blocks could not be stored: {e}"
                ))),
                Err(e) => Err(Fault::local(format!(
                    "the received blocks could not be stored: {e}"
                ))),
            },
        },
        // Go leaves a responder's cancel to the data-transfer message that comes with it.
        Err(GraphSyncError::Verify(datatransfer_graphsync::requester::VerifyError::Failed(
            ResponseStatus::RequestCancelled,
        ))) => return,
        Ok(status) => TransportEvent::ChannelCompleted {
            channel,
            result: Err(Fault::PeerFailed(format!(
                "graphsync request failed to complete: the responder lacked blocks ({status:?})"
            ))),
        },
        Err(GraphSyncError::Network(e)) => TransportEvent::Disconnected {
            channel,
            error: format!("graphsync request failed: {e}"),
        },
        // go-graphsync sends a block only once to a peer among the responses it is serving
        // that peer: while the response to a request we replaced (a restart, a reconnect)
        // still runs there, the new one says "present" for the blocks the old one sent, which
        // never reached us. A restart after the monitor's backoff asks again, by then alone;
        // the monitor's restart limit bounds a responder that keeps doing it.
        Err(GraphSyncError::Verify(
            datatransfer_graphsync::requester::VerifyError::BlockNotSent(cid),
        )) => TransportEvent::Disconnected {
            channel,
            error: format!(
                "graphsync request failed: the responder did not send block {cid}, which \
                     go-graphsync withholds while an earlier response to us still holds it"
            ),
        },
        Err(e) => TransportEvent::ChannelCompleted {
            channel,
            result: Err(
                fault_of(&e).map_message(|m| format!("graphsync request failed to complete: {m}"))
            ),
        },
    };
    shared.deliver(event);
}

/// Whose fault a failed request of ours is: our store's, one of our limits', or the
/// responder's (its data failed verification, or it failed the request).
pub(super) fn fault_of(e: &GraphSyncError) -> Fault {
    use datatransfer_graphsync::requester::VerifyError as V;
    use datatransfer_ipld::traversal::TraversalError as T;
    let m = e.to_string();
    match e {
        GraphSyncError::LocalStore(_) | GraphSyncError::Closed | GraphSyncError::Cancelled => {
            Fault::LocalFailure(m)
        }
        GraphSyncError::Selector(_) => Fault::LocalLimit(m),
        GraphSyncError::Verify(V::Failed(_)) => Fault::PeerFailed(m),
        GraphSyncError::Verify(V::Traversal(t)) => match **t {
            T::TooDeep(_) | T::TooManyLinks(_) | T::Selector(_) => Fault::LocalLimit(m),
            T::Store(_) => Fault::LocalFailure(m),
            _ => Fault::PeerMisbehaved(m),
        },
        _ => Fault::PeerMisbehaved(m),
    }
}
