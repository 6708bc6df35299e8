//! The in-memory network: delivery through the codec, and its injectable faults.

#![allow(clippy::unwrap_used)] // Test helpers may unwrap: a panic is a test failure.

use std::time::Duration;

use datatransfer_network::{
    DataTransferNetwork, MemoryHub, NetworkError, NetworkEvent, RetryConfig,
};
use datatransfer_test_support::peer_id;
use datatransfer_types::TransferId;
use datatransfer_types::message::{Message, TransferRequest, WireVersion};

fn fast_retry() -> RetryConfig {
    RetryConfig {
        attempts: 3,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        factor: 2.0,
    }
}

fn msg(n: u64) -> Message {
    TransferRequest::update(TransferId(n), n.is_multiple_of(2)).into()
}

#[tokio::test]
async fn delivers_drops_delays_and_disconnects() {
    let hub = MemoryHub::new();
    let (a, _) = hub.join(peer_id(1), fast_retry(), 16);
    let (_b, mut b_rx) = hub.join(peer_id(2), fast_retry(), 16);

    a.send_message(peer_id(2), msg(1)).await.unwrap();
    assert_eq!(
        b_rx.recv().await,
        Some(NetworkEvent::Message {
            from: peer_id(1),
            message: msg(1),
            version: WireVersion::V1_2
        })
    );

    // Dropped in flight: the sender cannot tell, the receiver gets the message after it.
    hub.drop_next(peer_id(1), peer_id(2), 1);
    a.send_message(peer_id(2), msg(2)).await.unwrap();
    a.send_message(peer_id(2), msg(3)).await.unwrap();
    assert!(
        matches!(b_rx.recv().await, Some(NetworkEvent::Message { message, .. }) if message == msg(3))
    );

    // Delayed: arrives later, but arrives.
    hub.set_delay(Duration::from_millis(20));
    a.send_message(peer_id(2), msg(4)).await.unwrap();
    assert!(b_rx.try_recv().is_err());
    let got = tokio::time::timeout(Duration::from_secs(5), b_rx.recv())
        .await
        .unwrap();
    assert!(matches!(got, Some(NetworkEvent::Message { message, .. }) if message == msg(4)));
    hub.set_delay(Duration::ZERO);

    // Cut: retried, then a typed error; restored: delivered again.
    hub.disconnect(peer_id(1), peer_id(2));
    let err = a.send_message(peer_id(2), msg(5)).await.unwrap_err();
    assert_eq!(
        err,
        NetworkError::Unreachable {
            peer: peer_id(2),
            attempts: 3,
            last: "link is down".into()
        }
    );
    hub.reconnect(peer_id(1), peer_id(2));
    a.send_message(peer_id(2), msg(6)).await.unwrap();
    assert!(
        matches!(b_rx.recv().await, Some(NetworkEvent::Message { message, .. }) if message == msg(6))
    );

    // Unknown peers are unreachable too.
    assert!(matches!(
        a.send_message(peer_id(9), msg(7)).await,
        Err(NetworkError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn protection_tags_are_counted_per_peer() {
    let hub = MemoryHub::new();
    let (a, _) = hub.join(peer_id(1), fast_retry(), 4);
    a.protect(peer_id(2), "ch-1");
    a.protect(peer_id(2), "ch-2");
    assert!(hub.is_protected(peer_id(1), peer_id(2)));
    assert!(a.unprotect(peer_id(2), "ch-1"), "ch-2 still protects");
    assert!(!a.unprotect(peer_id(2), "ch-2"));
    assert!(!hub.is_protected(peer_id(1), peer_id(2)));
}
