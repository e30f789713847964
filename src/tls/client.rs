//! TLS toward backends: the rustls client configuration of an HTTPS
//! upstream group ([`ClientTls`]) and the handshake of a new backend
//! connection ([`connect`]).
//!
//! - **Trust**: the system's CA certificates by default (`ca = "platform"`,
//!   read once per process with rustls-native-certs: the distribution's
//!   bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), Mozilla's set
//!   compiled in (`ca = "webpki"`, from webpki-roots), or a PEM bundle of
//!   the operator's.
//! - **Verification**: the backend's chain, validity and name (the
//!   target's host, or the group's `server_name`, which is also the SNI
//!   name; an IP address is checked against the certificate's IP
//!   addresses) are checked by webpki. `verify = false` accepts any
//!   certificate (the handshake's signatures are still checked, so the
//!   backend must hold the key of the certificate it sends); the gateway
//!   says so loudly at start.
//! - **Client certificate** (API Gateway's client certificate toward
//!   backends): a chain and key the backend may ask for.
//! - **Versions**: TLS 1.2 and 1.3, or 1.3 only; ALPN `http/1.1`.
//! - **Resumption**: rustls's in-memory store of 256 sessions per
//!   configuration, shared by the workers, so a new connection to a
//!   backend seen before resumes (TLS 1.3 tickets, TLS 1.2 ids or tickets).
//!
//! Connections are pooled and reused like plain ones
//! ([`crate::upstream::pool`]).

#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use monoio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::io::TlsIo;
use crate::config::TlsVersion;

/// A handshaken TLS connection to a backend.
pub type BackendTls = TlsIo<ClientConnection>;

/// Where a group's trusted CA certificates come from (`ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `"platform"` (the default): the system's bundle.
    Platform,
    /// `"webpki"`: Mozilla's CA set, built into the binary.
    Webpki,
    /// A PEM bundle (resolved against the configuration file's directory).
    File(std::path::PathBuf),
}

/// What a group's client configuration is made from.
#[derive(Debug, Clone, Copy)]
pub struct ClientTlsOptions<'a> {
    /// Trusted CAs.
    pub ca: &'a CaSource,
    /// Whether the backend's certificate is verified.
    pub verify: bool,
    /// The oldest version offered.
    pub min_version: TlsVersion,
    /// A certificate chain and key to present when the backend asks.
    pub client_certificate: Option<(&'a Path, &'a Path)>,
}

/// Which option an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsPart {
    /// `ca`.
    Ca,
    /// `client_certificate.chain`.
    ClientChain,
    /// `client_certificate.key`.
    ClientKey,
}

/// Why a client configuration could not be made.
#[derive(Debug, Clone)]
pub struct ClientTlsError {
    /// The option concerned.
    pub part: ClientTlsPart,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// A group's rustls client configuration, with the bytes of the files it
/// was made from: two are equal when those bytes and the options are, so a
/// reload that changes neither keeps the group's targets (and their pooled
/// connections).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The options and file contents, as compared.
    identity: Arc<(String, Vec<Vec<u8>>)>,
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Eq for ClientTls {}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("options", &self.identity.0)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds a configuration, reading the files it names.
    pub fn build(o: &ClientTlsOptions<'_>) -> Result<ClientTls, ClientTlsError> {
        let mut files = Vec::new();
        let roots = match o.ca {
            CaSource::Platform => platform_roots().map_err(|message| ClientTlsError {
                part: ClientTlsPart::Ca,
                message,
                fix: "install the system's CA certificates (ca-certificates), or write \
                      ca = \"webpki\" (Mozilla's set, built in) or ca = \"bundle.pem\""
                    .into(),
            })?,
            CaSource::Webpki => webpki_roots(),
            CaSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| ClientTlsError {
                    part: ClientTlsPart::Ca,
                    message: format!("cannot read {}: {e}", path.display()),
                    fix: "check the path (relative to the configuration file's directory) and \
                          its permissions"
                        .into(),
                })?;
                let roots = super::load_roots(path).map_err(|message| ClientTlsError {
                    part: ClientTlsPart::Ca,
                    message,
                    fix: "give a PEM file of the CA certificates the backends' certificates \
                          chain to"
                        .into(),
                })?;
                files.push(bytes);
                Arc::new(roots)
            }
        };
        let provider = super::provider();
        let versions: &[&rustls::SupportedProtocolVersion] = match o.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| ClientTlsError {
                part: ClientTlsPart::Ca,
                message: format!("no usable TLS version: {e}"),
                fix: "leave min_version out".into(),
            })?;
        let builder = if o.verify {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| ClientTlsError {
                    part: ClientTlsPart::Ca,
                    message: format!("the CA certificates cannot be used: {e}"),
                    fix: "give a PEM file of CA certificates".into(),
                })?;
            builder.with_webpki_verifier(verifier)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        let mut config = match o.client_certificate {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let loaded = super::load_certified_key(chain, key).map_err(|e| ClientTlsError {
                    part: match e.part {
                        super::PemPart::Chain => ClientTlsPart::ClientChain,
                        super::PemPart::Key => ClientTlsPart::ClientKey,
                    },
                    message: e.message,
                    fix: e.fix,
                })?;
                for p in [chain, key] {
                    files.push(std::fs::read(p).unwrap_or_default());
                }
                builder.with_client_cert_resolver(Arc::new(FixedClientCert(Arc::new(loaded))))
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let options = format!(
            "ca={:?} verify={} min={:?} cert={:?}",
            o.ca, o.verify, o.min_version, o.client_certificate
        );
        Ok(ClientTls {
            config: Arc::new(config),
            identity: Arc::new((options, files)),
        })
    }

    /// The configuration of an `https://host:port` uri that names no
    /// `[[upstream]]`: the system's CAs, verification on, no client
    /// certificate. Made once per process.
    pub fn system_default() -> Result<ClientTls, String> {
        static DEFAULT: OnceLock<Result<ClientTls, String>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                ClientTls::build(&ClientTlsOptions {
                    ca: &CaSource::Platform,
                    verify: true,
                    min_version: TlsVersion::Tls12,
                    client_certificate: None,
                })
                .map_err(|e| format!("{} ({})", e.message, e.fix))
            })
            .clone()
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

/// The system's CA certificates, read once per process.
fn platform_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none were found".to_string(), ToString::to_string);
                return Err(format!(
                    "ca = \"platform\": this system has no usable CA certificates ({why})"
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// Mozilla's CA set, built in.
fn webpki_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

/// The one client certificate a group presents, when the backend asks and
/// its key can make a signature the backend accepts.
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0
            .key
            .choose_scheme(sigschemes)
            .is_some()
            .then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify = false`: any certificate is accepted, but the handshake's
/// signatures are checked against it, so the backend must hold its key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a backend handshake failed, for the target's failure counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The backend's certificate was refused: untrusted, expired, or not
    /// for the name.
    Certificate,
    /// Anything else TLS refused: an alert, no common version or suite,
    /// bytes that are not TLS (a plain-HTTP backend).
    Protocol,
    /// The connection ended or broke mid-handshake.
    Io,
}

impl HandshakeFailure {
    /// What kind of failure `e`, from [`connect`], is.
    pub fn of(e: &io::Error) -> HandshakeFailure {
        match super::io::rustls_error(e) {
            Some(rustls::Error::InvalidCertificate(_)) => HandshakeFailure::Certificate,
            Some(_) => HandshakeFailure::Protocol,
            None => HandshakeFailure::Io,
        }
    }
}

/// Makes a TLS connection over `tcp` to `name` (the SNI name and the name
/// the certificate must be for) and runs its handshake. Errors: see
/// [`HandshakeFailure::of`].
pub async fn connect(
    tcp: TcpStream,
    tls: &ClientTls,
    name: ServerName<'static>,
) -> io::Result<BackendTls> {
    let conn = ClientConnection::new(tls.config.clone(), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut io = TlsIo::new(tcp, conn);
    io.handshake().await?;
    Ok(io)
}
