//! Helpers the workspace's tests and benches share: seeded random bytes, deterministic peer
//! ids, and libp2p swarms on 127.0.0.1 with ephemeral ports.
//!
//! Unpublished; nothing here is meant for production code.

#![deny(missing_docs)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};

/// `len` bytes of a seeded xorshift stream: the same bytes for the same seed on every machine,
/// different bytes for different seeds (so two files never share blocks by accident).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A deterministic peer id for test peer `n`: an identity multihash over a made-up ed25519
/// key, so no key is generated and the id is the same in every run.
pub fn peer_id(n: u64) -> PeerId {
    // Protobuf of a public key (type 1 = ed25519, 32 bytes) in an identity multihash.
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&n.to_be_bytes());
    key[31] = 0xa5;
    bytes.extend_from_slice(&key);
    PeerId::from_bytes(&bytes).expect("a well-formed identity peer id")
}

/// A swarm of the stream behaviour over TCP, noise and yamux with a new identity, asked to
/// listen on an ephemeral port of 127.0.0.1 (its address comes as a `NewListenAddr` event).
/// Must be called inside a tokio runtime.
pub fn streams_swarm() -> Swarm<datatransfer_streams::Behaviour> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("TCP with noise and yamux")
        .with_behaviour(|_| datatransfer_streams::Behaviour::new())
        .expect("the stream behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("a valid address"))
        .expect("listening on 127.0.0.1");
    swarm
}

/// [`streams_swarm`], once it listens: the swarm and its address.
pub async fn listening_swarm() -> (Swarm<datatransfer_streams::Behaviour>, Multiaddr) {
    let mut swarm = streams_swarm();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    (swarm, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_seeded() {
        assert_eq!(random_bytes(64, 7), random_bytes(64, 7));
        assert_ne!(random_bytes(64, 7), random_bytes(64, 8));
        assert_eq!(random_bytes(1000, 1).len(), 1000);
    }

    #[test]
    fn peer_ids_are_distinct_and_stable() {
        assert_eq!(peer_id(3), peer_id(3));
        assert_ne!(peer_id(3), peer_id(4));
    }
}
