//! Identifiers: the transfer id an initiator picks and the channel id both peers share.

use std::fmt;

use libp2p_identity::PeerId;

/// The identifier an initiator gives a transfer; unique among the initiator's channels.
///
/// Go peers decode it as a signed 64-bit IPLD integer on `/fil/datatransfer/1.2.0`, so
/// ids a node generates should stay below 2^63.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TransferId(pub u64);

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for TransferId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

/// Names one channel on both peers: who opened it, who answered, and the initiator's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId {
    /// The peer that opened the channel (sent the first request).
    pub initiator: PeerId,
    /// The peer the request was sent to.
    pub responder: PeerId,
    /// The initiator's transfer id.
    pub id: TransferId,
}

impl ChannelId {
    /// A channel id from its three parts.
    pub fn new(initiator: PeerId, responder: PeerId, id: TransferId) -> Self {
        Self {
            initiator,
            responder,
            id,
        }
    }

    /// The peer on the other side of the channel from `me`: the responder if `me` is the
    /// initiator, otherwise the initiator (as Go's `OtherParty`).
    pub fn other_party(&self, me: &PeerId) -> PeerId {
        if *me == self.initiator {
            self.responder
        } else {
            self.initiator
        }
    }

    /// Whether `me` opened this channel.
    pub fn is_initiator(&self, me: &PeerId) -> bool {
        *me == self.initiator
    }
}

impl fmt::Display for ChannelId {
    /// `initiator-responder-id`, as Go prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.initiator, self.responder, self.id)
    }
}

/// A string that is not `initiator-responder-id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a channel id (initiator-responder-id, as printed)")]
pub struct BadChannelId(pub String);

impl std::str::FromStr for ChannelId {
    type Err = BadChannelId;

    /// Reads what [`fmt::Display`] writes: `initiator-responder-id`.
    fn from_str(s: &str) -> Result<Self, BadChannelId> {
        let bad = || BadChannelId(s.to_owned());
        let mut parts = s.trim().split('-');
        let (Some(i), Some(r), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self::new(
            i.parse().map_err(|_| bad())?,
            r.parse().map_err(|_| bad())?,
            TransferId(id.parse().map_err(|_| bad())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        // An identity-multihash peer id over a made-up 32-byte key.
        let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        bytes.extend_from_slice(&[n; 32]);
        PeerId::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn a_channel_id_reads_back_what_it_prints_and_refuses_anything_else() {
        let id = ChannelId::new(peer(1), peer(2), TransferId(u64::MAX));
        assert_eq!(id.to_string().parse::<ChannelId>(), Ok(id));
        for bad in [
            "",
            "a-b",
            "x-y-1",
            &format!("{}-{}-1-2", peer(1), peer(2)),
            &format!("{}-{}-x", peer(1), peer(2)),
        ] {
            assert_eq!(
                bad.parse::<ChannelId>(),
                Err(BadChannelId(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_party_is_the_peer_that_is_not_me() {
        let (a, b) = (peer(1), peer(2));
        let ch = ChannelId::new(a, b, TransferId(7));
        assert_eq!(ch.other_party(&a), b);
        assert_eq!(ch.other_party(&b), a);
        assert!(ch.is_initiator(&a));
        assert!(!ch.is_initiator(&b));
        assert_eq!(ch.to_string(), format!("{a}-{b}-7"));
    }
}
