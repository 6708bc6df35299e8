//! The libp2p TLS handshake (`/tls/1.0.0`, the libp2p TLS spec) with the cipher a CPU runs
//! fastest: AES-GCM where the processor has AES instructions, ChaCha20-Poly1305 elsewhere.
//!
//! `libp2p::tls::Config` always puts ChaCha20-Poly1305 first, and so does noise, the only
//! cipher it has. On a CPU with AES instructions AES-128-GCM seals and opens about four
//! times as fast (11 GB/s against 2.6 GB/s a core on our bench machine); a bulk transfer
//! spends a third of its CPU in the cipher with ChaCha20. Go's TLS makes the same choice:
//! with AES hardware it prefers AES-GCM, and its server follows a client that asks for it.
//!
//! The handshake is the spec's, checked by libp2p's own certificate code
//! (`libp2p::tls::certificate`): one self-signed certificate whose extension carries the
//! host key's signature, TLS 1.3 only, ALPN `libp2p`, no server name. What differs from
//! `libp2p::tls::Config`: the order of the cipher suites; no session resumption (as in
//! go-libp2p: every connection checks the peer's certificate); no key log (`SSLKEYLOGFILE`
//! has no effect); a peer's bad certificate is an error, never a panic. A server follows
//! the client's order, so the cipher is AES-GCM when we dial, or when a Go peer or one of
//! ours dials us, on CPUs with AES instructions. A manager's own swarm offers this first
//! and noise second ([`crate::SecureChannels`]).
//!
//! The secured stream gathers writes until it is flushed ([`WRITE_BUFFER`]): yamux writes
//! each frame's 12-byte header and its body as two writes and flushes after the frame, and
//! rustls seals and sends every write at once, so each frame cost two TLS writes and two
//! system calls (noise gathers writes the same way). Measured on the 1 GiB pull bench: a
//! tenth to a fifth less CPU.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::io::BufWriter;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::tls::certificate;
use libp2p::{PeerId, identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CommonState, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// How many bytes a secured stream gathers before it writes them without waiting for a
/// flush: a yamux frame (16 KiB of data at most) and its header fit.
pub const WRITE_BUFFER: usize = 32 << 10;

/// What can go wrong while securing a connection with TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Our own certificate could not be made (a local failure).
    #[error("cannot make our TLS certificate: {0}")]
    Certificate(#[from] certificate::GenError),
    /// Our TLS configuration was refused by rustls (a local failure).
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    /// The handshake failed: the connection broke, or the peer spoke TLS badly or presented
    /// a certificate that is not a valid libp2p one.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// The peer's certificate passed the handshake but does not name a peer.
    #[error("the peer's TLS certificate: {0}")]
    PeerCertificate(String),
}

/// A libp2p TLS security upgrade that prefers the cipher this CPU runs fastest. Use it
/// where `libp2p::tls::Config::new` goes: `SwarmBuilder::with_tcp(tcp, tls::Config::new, yamux)`
/// or, with noise as the fallback, `(tls::Config::new, noise::Config::new)`.
#[derive(Clone)]
pub struct Config {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Config")
            .field("cipher_suites", &cipher_suites())
            .finish_non_exhaustive()
    }
}

/// TLS 1.3 only, as the libp2p TLS spec requires.
static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The ALPN protocol of libp2p TLS.
const ALPN: &[u8] = b"libp2p";

/// Whether this CPU has the instructions that make AES-GCM fast (AES and carry-less
/// multiplication); Go's TLS asks the same question to order its suites.
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The TLS 1.3 suites in the order we ask for them: AES-GCM first on AES hardware,
/// ChaCha20-Poly1305 first elsewhere. Every suite stays on offer, so any libp2p peer agrees
/// on one.
pub fn cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    if aes_in_hardware() {
        vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ]
    } else {
        vec![
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ]
    }
}

impl Config {
    /// A configuration for `keypair`'s host: a fresh certificate signed by it, and the
    /// cipher suites of [`cipher_suites`].
    pub fn new(keypair: &identity::Keypair) -> Result<Self, TlsError> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = cipher_suites();

        // rustls's own `with_single_cert` would check the certificate with webpki, which
        // refuses the libp2p extension (critical and unknown to it); the key is loaded and
        // paired with the certificate directly instead.
        let (cert, key) = certificate::generate(keypair)?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .map_err(TlsError::Config)?;
        let ours = Arc::new(SingleCertAndKey::from(CertifiedKey::new(vec![cert], key)));
        let provider = Arc::new(provider);
        let verifier = Arc::new(PeerCertificateVerifier);

        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(ours.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        // Tickets would be filed under one server name (no SNI) for every peer, and a
        // resumed session checks no certificate: none, as in go-libp2p.
        client.resumption = rustls::client::Resumption::disabled();

        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(ours);
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});

        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/tls/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, BufWriter<futures_rustls::TlsStream<C>>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let stream = futures_rustls::TlsAcceptor::from(self.server)
                .accept(socket)
                .await
                .map_err(TlsError::Handshake)?;
            let peer = peer_of(stream.get_ref().1)?;
            Ok((peer, BufWriter::with_capacity(WRITE_BUFFER, stream.into())))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, BufWriter<futures_rustls::TlsStream<C>>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            // The spec: a client MUST NOT send a server name. rustls sends none for an IP.
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            let stream = futures_rustls::TlsConnector::from(self.client)
                .connect(name, socket)
                .await
                .map_err(TlsError::Handshake)?;
            let peer = peer_of(stream.get_ref().1)?;
            Ok((peer, BufWriter::with_capacity(WRITE_BUFFER, stream.into())))
        }
        .boxed()
    }
}

/// The peer a finished handshake authenticated: its one certificate names it.
fn peer_of(state: &CommonState) -> Result<PeerId, TlsError> {
    let Some([cert]) = state.peer_certificates() else {
        return Err(TlsError::PeerCertificate(
            "not exactly one certificate".into(),
        ));
    };
    certificate::parse(cert)
        .map(|c| c.peer_id())
        .map_err(|e| TlsError::PeerCertificate(e.to_string()))
}

/// Checks a peer's certificate chain as the libp2p TLS spec says: exactly one certificate,
/// self-signed, with a valid libp2p extension (all checked by `certificate::parse`), and the
/// handshake signed by its key. Which peer it names is the swarm's business (it compares
/// it with the peer it dialed).
#[derive(Debug)]
struct PeerCertificateVerifier;

fn check_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "libp2p TLS takes exactly one certificate".into(),
        ));
    }
    certificate::parse(end_entity).map_err(bad_certificate)?;
    Ok(())
}

/// Why a certificate is not a valid libp2p one (expired, a bad extension signature, ...),
/// kept in the error.
fn bad_certificate(e: certificate::ParseError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

fn check_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    certificate::parse(cert)
        .map_err(bad_certificate)?
        .verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

/// TLS 1.2 is never negotiated (the configurations allow 1.3 only); refuse it all the same.
fn no_tls12() -> rustls::Error {
    rustls::Error::General("libp2p TLS is TLS 1.3 only".into())
}

/// The schemes a libp2p certificate may sign with, elliptic curves first (the spec).
fn schemes() -> Vec<SignatureScheme> {
    vec![
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA512,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA512,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ]
}

impl ServerCertVerifier for PeerCertificateVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_chain(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

impl ClientCertVerifier for PeerCertificateVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_chain(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::tcp::tokio::TcpStream;

    /// A connected pair of TCP sockets on 127.0.0.1.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (dialed, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (
            TcpStream(dialed.expect("connect")),
            TcpStream(accepted.expect("accept").0),
        )
    }

    /// The suite a finished handshake agreed on.
    fn suite<C>(stream: &futures_rustls::TlsStream<C>) -> Option<rustls::CipherSuite> {
        let state: &CommonState = match stream {
            futures_rustls::TlsStream::Client(s) => s.get_ref().1,
            futures_rustls::TlsStream::Server(s) => s.get_ref().1,
        };
        state.negotiated_cipher_suite().map(|s| s.suite())
    }

    #[tokio::test]
    async fn both_ends_learn_each_other_and_agree_on_the_suite_we_prefer() {
        let (client_key, server_key) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        let (a, b) = socket_pair().await;
        let client = Config::new(&client_key).expect("client config");
        let server = Config::new(&server_key).expect("server config");
        let (dialed, accepted) = tokio::join!(
            client.upgrade_outbound(a, "/tls/1.0.0"),
            server.upgrade_inbound(b, "/tls/1.0.0")
        );
        let (server_seen, mut to_server) = dialed.expect("client handshake");
        let (client_seen, mut to_client) = accepted.expect("server handshake");
        assert_eq!(server_seen, server_key.public().to_peer_id());
        assert_eq!(client_seen, client_key.public().to_peer_id());

        let ours = cipher_suites()[0].suite();
        assert_eq!(suite(to_server.get_ref()), Some(ours));
        assert_eq!(suite(to_client.get_ref()), Some(ours));
        if aes_in_hardware() {
            assert_eq!(ours, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        }

        // Bytes cross both ways, more than one TLS record of them.
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (sent, got) = tokio::join!(
            async {
                to_server.write_all(&data).await?;
                to_server.flush().await
            },
            async {
                let mut buf = vec![0; data.len()];
                to_client.read_exact(&mut buf).await.map(|()| buf)
            }
        );
        sent.expect("write");
        assert_eq!(got.expect("read"), data);
    }

    /// Writes wait for a flush (up to [`WRITE_BUFFER`]) and then leave together: a yamux
    /// frame's header and body make one TLS write, not two.
    #[tokio::test]
    async fn writes_wait_for_a_flush_and_then_leave_together() {
        let client = Config::new(&identity::Keypair::generate_ed25519()).expect("client");
        let server = Config::new(&identity::Keypair::generate_ed25519()).expect("server");
        let (a, b) = socket_pair().await;
        let (dialed, accepted) = tokio::join!(
            client.upgrade_outbound(a, "/tls/1.0.0"),
            server.upgrade_inbound(b, "/tls/1.0.0")
        );
        let (_, mut to_server) = dialed.expect("client handshake");
        let (_, mut to_client) = accepted.expect("server handshake");
        let header = [7u8; 12];
        let body = vec![9u8; 16 << 10];
        to_server.write_all(&header).await.expect("write");
        to_server.write_all(&body).await.expect("write");
        let mut buf = vec![0u8; header.len() + body.len()];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            to_client.read(&mut buf),
        )
        .await;
        assert!(early.is_err(), "bytes arrived before the flush: {early:?}");
        to_server.flush().await.expect("flush");
        to_client.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf[..12], &header);
        assert_eq!(&buf[12..], &body[..]);
    }

    /// A second connection between the same two configurations checks the certificates
    /// again: no session is resumed (every session would be filed under one server name).
    #[tokio::test]
    async fn a_second_connection_is_a_full_handshake_not_a_resumed_one() {
        let client = Config::new(&identity::Keypair::generate_ed25519()).expect("client");
        let server = Config::new(&identity::Keypair::generate_ed25519()).expect("server");
        for _ in 0..2 {
            let (a, b) = socket_pair().await;
            let (dialed, accepted) = tokio::join!(
                client.clone().upgrade_outbound(a, "/tls/1.0.0"),
                server.clone().upgrade_inbound(b, "/tls/1.0.0")
            );
            let (_, mut to_server) = dialed.expect("client handshake");
            let (_, mut to_client) = accepted.expect("server handshake");
            // A byte from the server, so the client has read any ticket sent before it.
            let (w, r) = tokio::join!(
                async {
                    to_client.write_all(b"x").await?;
                    to_client.flush().await
                },
                async {
                    let mut one = [0u8; 1];
                    to_server.read_exact(&mut one).await
                }
            );
            w.expect("write");
            r.expect("read");
            let kind = match to_server.get_ref() {
                futures_rustls::TlsStream::Client(s) => s.get_ref().1.handshake_kind(),
                futures_rustls::TlsStream::Server(s) => s.get_ref().1.handshake_kind(),
            };
            assert_eq!(kind, Some(rustls::HandshakeKind::Full));
        }
    }

    /// libp2p's own TLS (ChaCha20 first) and ours agree on a suite either way round, and each
    /// names the other: we still speak the spec's handshake with every libp2p peer.
    #[tokio::test]
    async fn libp2p_tls_and_ours_connect_either_way() {
        for we_dial in [true, false] {
            let (our_key, their_key) = (
                identity::Keypair::generate_ed25519(),
                identity::Keypair::generate_ed25519(),
            );
            let ours = Config::new(&our_key).expect("our config");
            let theirs = libp2p::tls::Config::new(&their_key).expect("their config");
            let (a, b) = socket_pair().await;
            let (we_saw, they_saw) = if we_dial {
                let (us, them) = tokio::join!(
                    ours.upgrade_outbound(a, "/tls/1.0.0"),
                    theirs.upgrade_inbound(b, "/tls/1.0.0")
                );
                (
                    us.expect("our handshake").0,
                    them.expect("their handshake").0,
                )
            } else {
                let (us, them) = tokio::join!(
                    ours.upgrade_inbound(a, "/tls/1.0.0"),
                    theirs.upgrade_outbound(b, "/tls/1.0.0")
                );
                (
                    us.expect("our handshake").0,
                    them.expect("their handshake").0,
                )
            };
            assert_eq!(
                we_saw,
                their_key.public().to_peer_id(),
                "we dial: {we_dial}"
            );
            assert_eq!(
                they_saw,
                our_key.public().to_peer_id(),
                "we dial: {we_dial}"
            );
        }
    }

    /// A peer that is not TLS at all fails the upgrade with a handshake error, promptly.
    #[tokio::test]
    async fn a_peer_that_speaks_no_tls_fails_the_handshake() {
        let (a, mut b) = socket_pair().await;
        let ours = Config::new(&identity::Keypair::generate_ed25519()).expect("config");
        let (result, _) = tokio::join!(ours.upgrade_inbound(a, "/tls/1.0.0"), async {
            b.write_all(b"GET / HTTP/1.1\r\n\r\nnot a client hello at all")
                .await
                .expect("write");
            b.close().await.expect("close");
        });
        match result {
            Err(TlsError::Handshake(_)) => {}
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a handshake with no TLS peer succeeded"),
        }
    }
}
