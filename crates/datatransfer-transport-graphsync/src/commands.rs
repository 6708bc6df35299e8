//! The graphsync work the adapter asks for, carried out in order on one task: requests
//! sent, paused, resumed and cancelled, responses steered, and each request followed to its
//! end.

use crate::*;

/// Carries out the adapter's graphsync work in order (and the answers queued behind it),
/// until the transport is gone.
pub(super) async fn execute_actions(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Action>) {
    while let Some(action) = rx.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match action {
            Action::Answer { hook, answer } => shared.answer(hook, answer),
            // After shutdown the node is gone, and so is the work.
            work => {
                if let Some(gs) = shared.gs() {
                    carry_out(&shared, &gs, work).await;
                }
            }
        }
        shared.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Carries out one piece of graphsync work.
async fn carry_out(shared: &Arc<Shared>, gs: &GraphSync, action: Action) {
    match action {
        Action::SendRequest(request) => send_request(shared, gs, request).await,
        Action::CancelRequest { channel, attempt } => {
            if let Some(c) = shared.control(channel, attempt, true) {
                c.cancel().await;
            }
        }
        Action::PauseRequest { channel, attempt } => {
            if let Some(c) = shared.control(channel, attempt, false) {
                c.pause().await;
            }
        }
        Action::UnpauseRequest {
            channel,
            attempt,
            extensions,
        } => {
            if let Some(c) = shared.control(channel, attempt, false) {
                c.unpause(extensions).await;
            }
        }
        Action::PauseResponse { peer, id } => gs.pause_response(peer, id).await,
        Action::UnpauseResponse {
            peer,
            id,
            extensions,
        } => gs.unpause_response(peer, id, extensions).await,
        Action::CancelResponse { peer, id } => gs.cancel_response(peer, id).await,
        Action::SendExtensions {
            peer,
            id,
            extensions,
        } => gs.send_extensions(peer, id, extensions).await,
        Action::ReopenAfter {
            channel,
            attempt,
            wait,
        } => {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                shared.with(|a| a.reopen(channel, attempt));
            });
        }
        Action::Flush { channel, store } => {
            let shared = shared.clone();
            tokio::spawn(async move {
                let result = match tokio::task::spawn_blocking(move || store.0.flush()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                shared.with(|a| a.flushed(channel, result));
            });
        }
        // Events are the shell's, never queued; answers are handled by the caller.
        Action::Deliver(_) | Action::Answer { .. } => {}
    }
}

/// Sends one of the channel's requests, first counting the blocks at hand if asked to.
async fn send_request(shared: &Arc<Shared>, gs: &GraphSync, request: SendRequest) {
    let SendRequest {
        channel,
        attempt,
        to,
        root,
        selector,
        mut extensions,
        store,
        skip_held,
    } = request;
    if skip_held {
        // A walk of the blocks at hand: off the async workers (a million blocks take a while).
        let held = {
            let (store, selector, traversal) =
                (store.clone(), selector.clone(), shared.traversal.clone());
            tokio::task::spawn_blocking(move || held_prefix(&*store, root, &selector, &traversal))
                .await
                .unwrap_or(0)
        };
        if held > 0 {
            extensions.set(
                DO_NOT_SEND_FIRST_BLOCKS,
                datatransfer_graphsync::responder::encode_skip_count(held),
            );
        }
    }
    let Ok(selector) = RawNode::new(selector.as_bytes().to_vec()) else {
        let error = "the selector is not valid DAG-CBOR".to_owned();
        return shared.with(|a| a.request_failed(channel, attempt, error));
    };
    let handle = match gs.request_into(to, root, selector, extensions, store).await {
        Ok(h) => h,
        Err(e) => return shared.with(|a| a.request_failed(channel, attempt, e.to_string())),
    };
    let control = handle.control();
    if !shared.with(|a| a.request_started(channel, attempt, handle.id)) {
        // Closed or replaced while the request was being sent.
        return control.cancel().await;
    }
    shared
        .controls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(channel, (attempt, control));
    // A shutdown since (it takes the node, then clears the controls) must not leave this one
    // holding the node.
    if shared.gs().is_none() {
        if let Some(c) = shared.control(channel, attempt, true) {
            c.cancel().await;
        }
        return;
    }
    tokio::spawn(watch_request(shared.clone(), channel, attempt, handle));
}

/// Follows one of our requests to its end and tells the adapter how it ended.
async fn watch_request(
    shared: Arc<Shared>,
    channel: ChannelId,
    attempt: u64,
    mut handle: RequestHandle,
) {
    let id = handle.id;
    let mut result = Err(GraphSyncError::Closed);
    while let Some(ev) = handle.next().await {
        if let RequestEvent::Completed(r) = ev {
            result = r;
            break;
        }
    }
    drop(shared.control(channel, attempt, true));
    shared.with(|a| a.request_finished(channel, attempt, id, result));
}
