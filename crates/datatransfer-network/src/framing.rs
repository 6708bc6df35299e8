//! Reading data-transfer messages from a stream.
//!
//! Go writes messages back to back with no length prefix: each is one CBOR item, so the
//! reader finds each end itself ([`datatransfer_types::cbor::ItemScanner`], which reads each
//! byte once however the message is cut into pieces) and refuses to buffer more than the size
//! limit.

use datatransfer_types::PeerId;
use datatransfer_types::cbor::ItemScanner;
use datatransfer_types::message::{DecodeLimits, Message, WireVersion};
use futures::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::{InboundError, NetworkEvent};

/// Reads messages from `stream` until it ends, sending each to `events`.
///
/// Each message, and the end after the last, must come within `receive_timeout` of the start
/// or of the message before (time spent waiting for room in `events` does not count).
/// Returns the first error (garbage, an oversized or truncated message, a read failure, a
/// stream too slow);
/// the caller then drops (resets) the stream. Returns `Ok` at a clean end of stream, or when
/// `events` is closed.
pub async fn read_messages<S: AsyncRead + Unpin>(
    mut stream: S,
    from: PeerId,
    version: WireVersion,
    limits: &DecodeLimits,
    receive_timeout: Duration,
    events: &mpsc::Sender<NetworkEvent>,
) -> Result<(), InboundError> {
    let mut deadline = Instant::now() + receive_timeout;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut scanner = ItemScanner::new(limits.max_depth);
    loop {
        // Hand out every complete message already buffered, then drop their bytes at once
        // (not one message at a time: many small ones would move the rest again each time).
        let mut taken = 0;
        while let Some(n) = scanner
            .scan(&buf[taken..])
            .map_err(|e| InboundError::Invalid(e.into()))?
        {
            if n > limits.max_message_size {
                return Err(InboundError::TooLarge {
                    max: limits.max_message_size,
                });
            }
            let message = Message::from_cbor_with_limits(version, &buf[taken..taken + n], limits)?;
            taken += n;
            scanner.reset();
            let event = NetworkEvent::Message {
                from,
                message,
                version,
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
            deadline = Instant::now() + receive_timeout;
        }
        buf.drain(..taken);
        if buf.len() > limits.max_message_size {
            return Err(InboundError::TooLarge {
                max: limits.max_message_size,
            });
        }
        let want = chunk.len().min(limits.max_message_size + 1 - buf.len());
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk[..want]))
            .await
            .map_err(|_| InboundError::TimedOut {
                after: receive_timeout,
            })?
            .map_err(|e| InboundError::Io(e.to_string()))?;
        if n == 0 {
            return match buf.len() {
                0 => Ok(()),
                buffered => Err(InboundError::Truncated { buffered }),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use datatransfer_types::TransferId;
    use datatransfer_types::message::{TransferRequest, TransferResponse};

    use super::*;

    fn peer() -> PeerId {
        PeerId::from_bytes(&[&[0x12u8, 0x20][..], &[1; 32]].concat()).expect("peer id")
    }

    async fn read_all(
        bytes: Vec<u8>,
        limits: DecodeLimits,
    ) -> (Vec<Message>, Result<(), InboundError>) {
        read_from(futures::io::Cursor::new(bytes), limits).await
    }

    /// Reads `stream` to its end, as a stream's reader does; returns the messages it handed
    /// out and how it ended.
    async fn read_from(
        stream: impl AsyncRead + Unpin,
        limits: DecodeLimits,
    ) -> (Vec<Message>, Result<(), InboundError>) {
        let (tx, mut rx) = mpsc::channel(64);
        let res = read_messages(
            stream,
            peer(),
            WireVersion::V1_2,
            &limits,
            Duration::from_secs(10),
            &tx,
        )
        .await;
        drop(tx);
        let mut out = Vec::new();
        while let Some(NetworkEvent::Message { message, .. }) = rx.recv().await {
            out.push(message);
        }
        (out, res)
    }

    #[tokio::test]
    async fn back_to_back_messages_are_split_and_truncation_is_reported() {
        let a: Message = TransferRequest::update(TransferId(1), true).into();
        let b: Message = TransferResponse::cancel(TransferId(2)).into();
        let mut bytes = a.to_cbor(WireVersion::V1_2);
        bytes.extend(b.to_cbor(WireVersion::V1_2));
        let (msgs, res) = read_all(bytes.clone(), DecodeLimits::default()).await;
        assert_eq!(msgs, vec![a.clone(), b]);
        assert_eq!(res, Ok(()));

        bytes.truncate(bytes.len() - 3);
        let (msgs, res) = read_all(bytes, DecodeLimits::default()).await;
        assert_eq!(msgs, vec![a]);
        assert!(matches!(res, Err(InboundError::Truncated { .. })));
    }

    /// A stream that hands out at most `step` bytes a read, as a peer writing a few bytes at
    /// a time looks.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = self.step.min(out.len()).min(self.bytes.len() - self.at);
            out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[tokio::test]
    async fn messages_arriving_a_few_bytes_at_a_time_are_read_whole() {
        let msgs: Vec<Message> = (0..20u64)
            .map(|i| match i % 3 {
                0 => TransferRequest::update(TransferId(i), i % 2 == 0).into(),
                1 => TransferResponse::cancel(TransferId(i)).into(),
                _ => TransferRequest::cancel(TransferId(i)).into(),
            })
            .collect();
        let bytes: Vec<u8> = msgs
            .iter()
            .flat_map(|m| m.to_cbor(WireVersion::V1_2))
            .collect();
        for step in [1, 2, 3, 7, 64] {
            let stream = Trickle {
                bytes: bytes.clone(),
                at: 0,
                step,
            };
            let (got, res) = read_from(stream, DecodeLimits::default()).await;
            assert_eq!(res, Ok(()), "{step} bytes a read");
            assert_eq!(got, msgs, "{step} bytes a read");
        }
    }

    #[tokio::test]
    async fn oversized_and_garbage_input_are_errors() {
        let a: Message = TransferRequest::update(TransferId(1), true).into();
        let bytes = a.to_cbor(WireVersion::V1_2);
        let small = DecodeLimits {
            max_message_size: bytes.len() - 1,
            ..DecodeLimits::default()
        };
        let (msgs, res) = read_all(bytes, small).await;
        assert!(msgs.is_empty());
        assert_eq!(
            res,
            Err(InboundError::TooLarge {
                max: small.max_message_size
            })
        );

        // A never-ending byte string header claims 2^32 bytes: refused once over the cap.
        let mut huge = vec![0x5a, 0xff, 0xff, 0xff, 0xff];
        huge.extend(vec![0u8; 5000]);
        let limits = DecodeLimits {
            max_message_size: 4096,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            read_all(huge, limits).await.1,
            Err(InboundError::TooLarge { .. })
        ));

        // Well-formed CBOR that is not a message.
        let (_, res) = read_all(vec![0x01], DecodeLimits::default()).await;
        assert!(matches!(res, Err(InboundError::Invalid(_))));
        // Not CBOR at all (a reserved header).
        let (_, res) = read_all(vec![0x1c, 0, 0], DecodeLimits::default()).await;
        assert!(matches!(res, Err(InboundError::Invalid(_))));
    }
}
