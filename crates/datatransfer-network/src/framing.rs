//! Reading data-transfer messages from a stream.
//!
//! Go writes messages back to back with no length prefix: each is one CBOR item, so the
//! reader finds each end itself ([`datatransfer_types::cbor::item_len`]) and refuses to
//! buffer more than the size limit.

use datatransfer_types::PeerId;
use datatransfer_types::cbor::item_len;
use datatransfer_types::message::{DecodeLimits, Message, WireVersion};
use futures::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::{InboundError, NetworkEvent};

/// Reads messages from `stream` until it ends, sending each to `events`.
///
/// Returns the first error (garbage, an oversized or truncated message, a read failure);
/// the caller then drops (resets) the stream. Returns `Ok` at a clean end of stream, or when
/// `events` is closed.
pub async fn read_messages<S: AsyncRead + Unpin>(
    mut stream: S,
    from: PeerId,
    version: WireVersion,
    limits: &DecodeLimits,
    events: &mpsc::Sender<NetworkEvent>,
) -> Result<(), InboundError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        // Hand out every complete message already buffered.
        while let Some(n) =
            item_len(&buf, limits.max_depth).map_err(|e| InboundError::Invalid(e.into()))?
        {
            if n > limits.max_message_size {
                return Err(InboundError::TooLarge {
                    max: limits.max_message_size,
                });
            }
            let message = Message::from_cbor_with_limits(version, &buf[..n], limits)?;
            buf.drain(..n);
            let event = NetworkEvent::Message {
                from,
                message,
                version,
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }
        if buf.len() > limits.max_message_size {
            return Err(InboundError::TooLarge {
                max: limits.max_message_size,
            });
        }
        let want = chunk.len().min(limits.max_message_size + 1 - buf.len());
        let n = stream
            .read(&mut chunk[..want])
            .await
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
        let (tx, mut rx) = mpsc::channel(64);
        let res = read_messages(
            futures::io::Cursor::new(bytes),
            peer(),
            WireVersion::V1_2,
            &limits,
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
