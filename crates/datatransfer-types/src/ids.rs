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
