//! TLS termination: the certificates of `[[tls.certificate]]`, chosen by
//! SNI, and the rustls server configuration every worker's TLS listeners
//! share ([`TlsAcceptor`]); the stream itself is [`stream::TlsStream`].
//! Toward HTTPS backends, [`client`] makes the client configurations and
//! handshakes. Both ends read and write records through [`io::TlsIo`].
//!
//! - **Choosing a certificate**: an SNI name listed by a certificate's
//!   `hosts` picks it (an exact name first, then `*.` plus the name's parent
//!   for a wildcard); no SNI, or a name nobody lists, gets the first
//!   certificate, the default.
//! - **Host and SNI agree**: on a TLS connection, a request whose `Host`
//!   would have chosen another certificate than the handshake did is
//!   answered 421 Misdirected Request (RFC 9110 §15.5.20): a client
//!   reusing a connection for a name it was not made for is sent to make a
//!   new one. [`TlsAcceptor::certificate_for`] gives the index both sides
//!   are compared by.
//! - **Versions and suites**: TLS 1.2 and 1.3 (`min_version = "1.3"` for
//!   1.3 only), rustls's suites with the *ring* provider: AES-GCM and
//!   ChaCha20-Poly1305 with ECDHE, a subset of API Gateway's `TLS_1_2`
//!   policy (which adds CBC suites rustls does not implement).
//! - **ALPN**: `http/1.1` (a client offering only `h2` fails the handshake
//!   with `no_application_protocol`, as it should: ringgate does not speak
//!   HTTP/2).
//! - **Resumption**: stateless tickets (ring's ticketer, keys rotating
//!   every 6 hours) and a server-side session cache of `session_cache`
//!   entries, shared by the workers.
//! - **Mutual TLS**: an entry with `client_ca` has a configuration of its
//!   own whose handshake asks for a client certificate and checks only
//!   that the client holds its key (`AskClientCert`); after the
//!   handshake, webpki checks the certificate against the truststore
//!   ([`ClientAuth`]), and the gateway answers 403 to every request of a
//!   connection without a trusted one. The entry is chosen from the
//!   ClientHello's SNI before the connection is made (rustls's `Acceptor`).
//! - **Reload**: [`TlsAcceptor::reload`] reads every certificate and key
//!   file again (SIGHUP, `POST /tls/reload`, or the [`Watcher`] seeing a
//!   file change): all load and new handshakes use them, or one fails and
//!   nothing changes. Established connections keep what they negotiated.
//!   The list of certificates and their `hosts` is fixed at start.

#![forbid(unsafe_code)]

pub mod client;
pub mod io;
pub mod stream;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ahash::AHashMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;

use crate::config::{TlsConfig, TlsVersion};
use crate::observe::access_log::{openssl_time, ClientCertFields};
pub use stream::TlsStream;

/// Which of a certificate's files a load error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemPart {
    /// The certificate chain.
    Chain,
    /// The private key.
    Key,
}

/// Why a certificate and key could not be loaded: the file concerned, what
/// is wrong, and how to fix it (for the configuration error).
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The file the problem is in.
    pub part: PemPart,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.fix)
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM chain and key and checks that the key is the certificate's.
pub fn load_certified_key(chain: &Path, key: &Path) -> Result<CertifiedKey, LoadError> {
    let err = |part, message: String, fix: &str| LoadError {
        part,
        message,
        fix: fix.to_string(),
    };
    let chain_bytes = std::fs::read(chain).map_err(|e| {
        err(
            PemPart::Chain,
            format!("cannot read {}: {e}", chain.display()),
            "check the path (relative to the configuration file's directory) and its permissions",
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                PemPart::Chain,
                format!("{} is not a PEM certificate chain: {e}", chain.display()),
                "give the PEM file with the server certificate first, then its intermediates",
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            PemPart::Chain,
            format!("{} holds no CERTIFICATE block", chain.display()),
            "give the PEM file with the server certificate first, then its intermediates",
        ));
    }
    let key_bytes = std::fs::read(key).map_err(|e| {
        err(
            PemPart::Key,
            format!("cannot read {}: {e}", key.display()),
            "check the path (relative to the configuration file's directory) and its permissions",
        )
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        err(
            PemPart::Key,
            format!("{} holds no usable private key: {e}", key.display()),
            "give a PEM private key (PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")",
        )
    })?;
    CertifiedKey::from_der(certs, key_der, &provider()).map_err(|e| {
        err(
            PemPart::Key,
            format!(
                "the key in {} does not go with the certificate in {}: {e}",
                key.display(),
                chain.display()
            ),
            "give the private key that was generated with this certificate",
        )
    })
}

/// Reads a PEM bundle of CA certificates (a `client_ca` truststore).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, refused) = roots.add_parsable_certificates(certs);
    if refused > 0 {
        return Err(format!(
            "{} holds {refused} certificate(s) that are not usable trust anchors",
            path.display()
        ));
    }
    if added == 0 {
        return Err(format!("{} holds no CERTIFICATE block", path.display()));
    }
    Ok(roots)
}

/// How a connection's client certificate stood, on a certificate entry
/// with `client_ca` (mutual TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// The entry has no `client_ca`: no certificate is asked for.
    NotRequired,
    /// A certificate chaining to the truststore, valid now.
    Verified,
    /// None was presented.
    Missing,
    /// One was presented and refused: untrusted, expired, not yet valid,
    /// or not for client authentication.
    Refused,
}

/// Asks for a client certificate and checks only that the client holds
/// its key (the handshake's signature): whether the certificate is
/// trusted is decided after the handshake ([`TlsAcceptor::client_auth`]),
/// so a refused client gets API Gateway's HTTP 403 rather than a bare
/// handshake alert.
#[derive(Debug)]
struct AskClientCert {
    hints: Vec<rustls::DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for AskClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether `name` is a lowercase DNS name, or `*.` and one.
pub fn valid_sni_pattern(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    ServerName::try_from(name).is_ok_and(|n| matches!(n, ServerName::DnsName(_)))
        && name.contains(|c: char| c.is_ascii_alphabetic())
}

/// Whether `key`'s certificate is valid for `name` (`*.x` is checked as a
/// name under `x`).
pub fn covers(key: &CertifiedKey, name: &str) -> bool {
    let probe;
    let name = match name.strip_prefix("*.") {
        Some(parent) => {
            probe = format!("ringgate-probe.{parent}");
            probe.as_str()
        }
        None => name,
    };
    let Ok(end) = key.end_entity_cert() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(end) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// The names that choose a certificate, fixed at start (a reload re-reads
/// the files, not the list): what the Host check reads on every request,
/// without a lock.
#[derive(Debug)]
struct Names {
    exact: AHashMap<String, u16>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: AHashMap<String, u16>,
}

impl Names {
    /// The certificate for SNI name `name` (any case): an exact entry, then
    /// a wildcard over its parent, then the default (0).
    fn index_for(&self, name: &str) -> u16 {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        let name = name.trim_end_matches('.');
        if let Some(&i) = self.exact.get(name) {
            return i;
        }
        match name.split_once('.') {
            Some((_, parent)) => self.wildcard.get(parent).copied().unwrap_or(0),
            None => 0,
        }
    }
}

/// What one certificate is, read from it for the admin status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// `hosts` as configured.
    pub hosts: Vec<String>,
    /// The chain file.
    pub chain: PathBuf,
    /// The leaf's subject, e.g. `CN=shop.example`.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// Valid from, seconds since the Unix epoch.
    pub not_before: i64,
    /// Valid until, seconds since the Unix epoch.
    pub not_after: i64,
}

/// The certificates as last loaded.
#[derive(Debug)]
struct Loaded {
    keys: Vec<Arc<CertifiedKey>>,
    info: Vec<CertInfo>,
}

impl Loaded {
    /// Reads every certificate of `cfg`; all of them or an error.
    fn read(cfg: &TlsConfig) -> Result<Loaded, String> {
        let mut keys = Vec::new();
        let mut info = Vec::new();
        for c in &cfg.certificates {
            let key = load_certified_key(&c.chain, &c.key).map_err(|e| e.to_string())?;
            info.push(describe(&key, c)?);
            keys.push(Arc::new(key));
        }
        Ok(Loaded { keys, info })
    }
}

/// The leaf's names and dates, for [`CertInfo`].
fn describe(key: &CertifiedKey, c: &crate::config::CertificateConfig) -> Result<CertInfo, String> {
    let leaf = key
        .end_entity_cert()
        .map_err(|e| format!("{}: {e}", c.chain.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        format!(
            "{}: not a readable X.509 certificate: {e}",
            c.chain.display()
        )
    })?;
    let validity = cert.validity();
    Ok(CertInfo {
        hosts: c.hosts.clone(),
        chain: c.chain.clone(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// A client certificate's `$context.identity.clientCert.*` fields.
fn client_cert_fields(der: &CertificateDer<'_>) -> Option<ClientCertFields> {
    use base64::Engine as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----");
    let validity = cert.validity();
    Some(ClientCertFields {
        pem,
        subject_dn: cert.subject().to_string(),
        issuer_dn: cert.issuer().to_string(),
        serial_number: cert.raw_serial_as_string(),
        not_before: openssl_time(validity.not_before.timestamp()),
        not_after: openssl_time(validity.not_after.timestamp()),
    })
}

/// The request header lines (`name: value\r\n`) carrying `fields` to
/// backends, for `client_cert_headers`. Values are percent-encoded outside
/// printable ASCII (and `%` itself), so no byte can break the head.
fn backend_headers(headers: &[(String, String)], fields: &ClientCertFields) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, name) in headers {
        let value = match field.as_str() {
            "subject" => &fields.subject_dn,
            "issuer" => &fields.issuer_dn,
            "serial" => &fields.serial_number,
            "not_before" => &fields.not_before,
            "not_after" => &fields.not_after,
            _ => &fields.pem,
        };
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        for &b in value.as_bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                out.push(b);
            } else {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A file's identity and state, to see that it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// Picks the certificate by the ClientHello's SNI.
#[derive(Debug)]
struct Resolver {
    names: Arc<Names>,
    loaded: Arc<RwLock<Arc<Loaded>>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = hello.server_name().map_or(0, |n| self.names.index_for(n));
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        loaded.keys.get(usize::from(i)).cloned()
    }
}

/// What the TLS listeners of every worker share: the rustls configuration
/// (certificates, session cache, ticket keys) and the name → certificate
/// table. The certificates can be read again while serving
/// ([`TlsAcceptor::reload`]): new handshakes use the new ones, established
/// connections keep theirs.
pub struct TlsAcceptor {
    /// Per certificate entry, the configuration its handshakes use (one
    /// shared by the entries without `client_ca`).
    configs: Vec<Arc<rustls::ServerConfig>>,
    /// Per certificate entry with `client_ca`, the strict check of a
    /// presented client certificate.
    client_verifiers: Vec<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>>,
    names: Arc<Names>,
    loaded: Arc<RwLock<Arc<Loaded>>>,
    settings: TlsConfig,
    /// The files' state at the last (re)load, for [`TlsAcceptor::files_changed`].
    stamps: Mutex<Vec<Option<Stamp>>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// The port of the first TLS listener, as bound (for redirects).
    https_port: std::sync::OnceLock<u16>,
    /// Every `client_cert_headers` name (lowercase), removed from every
    /// forwarded request.
    cert_header_names: Box<[Box<str>]>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("certificates", &self.settings.certificates.len())
            .finish()
    }
}

impl TlsAcceptor {
    /// Loads `[tls]`'s certificates and builds the server configuration.
    pub fn new(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
        let mut exact = AHashMap::new();
        let mut wildcard = AHashMap::new();
        for (i, c) in cfg.certificates.iter().enumerate() {
            let i = u16::try_from(i).map_err(|_| "too many certificates".to_string())?;
            for h in &c.hosts {
                match h.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_string(), i),
                    None => exact.insert(h.clone(), i),
                };
            }
        }
        let names = Arc::new(Names { exact, wildcard });
        let stamps = Self::stamps_of(cfg);
        let loaded = Arc::new(RwLock::new(Arc::new(Loaded::read(cfg)?)));
        let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let resolver = Arc::new(Resolver {
            names: names.clone(),
            loaded: loaded.clone(),
        });
        // One server configuration without client authentication, shared;
        // one more per entry with `client_ca`, with its own session cache
        // and ticket keys (a session never resumes across them).
        let build = |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>|
         -> Result<Arc<rustls::ServerConfig>, String> {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .map_err(|e| format!("TLS configuration: {e}"))?;
            let mut config = match verifier {
                Some(v) => builder.with_client_cert_verifier(v),
                None => builder.with_no_client_auth(),
            }
            .with_cert_resolver(resolver.clone());
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config.session_storage = if cfg.session_cache > 0 {
                ServerSessionMemoryCache::new(cfg.session_cache)
            } else {
                Arc::new(rustls::server::NoServerSessionStorage {})
            };
            if cfg.session_tickets {
                config.ticketer = rustls::crypto::ring::Ticketer::new()
                    .map_err(|e| format!("TLS session tickets: {e}"))?;
            }
            Ok(Arc::new(config))
        };
        let plain = build(None)?;
        let mut configs = Vec::new();
        let mut client_verifiers = Vec::new();
        for c in &cfg.certificates {
            match &c.client_ca {
                None => {
                    configs.push(plain.clone());
                    client_verifiers.push(None);
                }
                Some(path) => {
                    let roots = Arc::new(load_roots(path)?);
                    let strict = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        roots.clone(),
                        provider(),
                    )
                    .build()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                    let ask = Arc::new(AskClientCert {
                        hints: roots.subjects(),
                        provider: provider(),
                    });
                    configs.push(build(Some(ask))?);
                    client_verifiers.push(Some(strict));
                }
            }
        }
        Ok(TlsAcceptor {
            configs,
            client_verifiers,
            names,
            loaded,
            settings: cfg.clone(),
            stamps: Mutex::new(stamps),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            https_port: std::sync::OnceLock::new(),
            cert_header_names: {
                let mut names: Vec<Box<str>> = cfg
                    .certificates
                    .iter()
                    .flat_map(|c| c.client_cert_headers.iter().map(|(_, n)| n.as_str().into()))
                    .collect();
                names.sort();
                names.dedup();
                names.into()
            },
        })
    }

    fn stamps_of(cfg: &TlsConfig) -> Vec<Option<Stamp>> {
        cfg.certificates
            .iter()
            .flat_map(|c| [stamp(&c.chain), stamp(&c.key)])
            .collect()
    }

    /// Accepts a TLS connection over `tcp`: reads the ClientHello, picks
    /// the certificate entry by its SNI name (and so whether a client
    /// certificate is asked for), and runs the handshake. Returns the
    /// stream, the entry's index and where its client certificate stands.
    pub async fn accept(
        &self,
        tcp: monoio::net::TcpStream,
    ) -> std::io::Result<(TlsStream, u16, ClientAuth)> {
        let (mut stream, cert) = TlsStream::accept(tcp, |sni| {
            let cert = self.certificate_for(sni);
            (self.configs[usize::from(cert)].clone(), cert)
        })
        .await?;
        stream.handshake().await?;
        let auth = self.client_auth(cert, stream.connection());
        if auth != ClientAuth::NotRequired {
            if let Some(fields) = stream
                .connection()
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| client_cert_fields(c))
            {
                let headers = &self.settings.certificates[usize::from(cert)].client_cert_headers;
                if auth == ClientAuth::Verified && !headers.is_empty() {
                    stream.set_backend_headers(backend_headers(headers, &fields));
                }
                stream.set_client_cert(fields);
            }
        }
        Ok((stream, cert, auth))
    }

    /// Where `conn`'s client certificate stands for certificate entry
    /// `cert`: the strict check (chain to the entry's `client_ca`,
    /// validity now, client-auth usage) of what the handshake received.
    fn client_auth(&self, cert: u16, conn: &ServerConnection) -> ClientAuth {
        let Some(Some(verifier)) = self.client_verifiers.get(usize::from(cert)) else {
            return ClientAuth::NotRequired;
        };
        let Some((end_entity, intermediates)) =
            conn.peer_certificates().and_then(|c| c.split_first())
        else {
            return ClientAuth::Missing;
        };
        match verifier.verify_client_cert(
            end_entity,
            intermediates,
            rustls::pki_types::UnixTime::now(),
        ) {
            Ok(_) => ClientAuth::Verified,
            Err(_) => ClientAuth::Refused,
        }
    }

    /// The certificate a handshake for SNI `name` chose (the default, 0,
    /// for none): what a request's `Host` is compared by.
    pub fn certificate_for(&self, name: Option<&str>) -> u16 {
        name.map_or(0, |n| self.names.index_for(n))
    }

    /// Every `client_cert_headers` name, lowercase: removed from each
    /// forwarded request before a verified certificate's are added.
    pub fn client_cert_header_names(&self) -> &[Box<str>] {
        &self.cert_header_names
    }

    /// Records the port the first TLS listener is bound to (once).
    pub fn set_https_port(&self, port: u16) {
        let _ = self.https_port.set(port);
    }

    /// Where a plain-HTTP request for `host` (a Host value, port included
    /// or not) should go instead: `https://name[:port]`, when `[tls]
    /// redirect_hosts` lists the name.
    pub fn redirect_for(&self, host: &[u8]) -> Option<String> {
        if self.settings.redirect_hosts.is_empty() {
            return None;
        }
        let name = std::str::from_utf8(crate::observe::access_log::domain_name(host))
            .ok()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let listed = self.settings.redirect_hosts.iter().any(|h| {
            h == "*"
                || *h == name
                || h.strip_prefix("*.")
                    .is_some_and(|parent| name.split_once('.').is_some_and(|(_, p)| p == parent))
        });
        if !listed || name.is_empty() {
            return None;
        }
        Some(match self.https_port.get().copied().unwrap_or(443) {
            443 => format!("https://{name}"),
            port => format!("https://{name}:{port}"),
        })
    }

    /// Reads every certificate file again. All of them load, and new
    /// handshakes use them (connections already made keep theirs); or one
    /// fails, and nothing changes. Returns how many certificates are served.
    pub fn reload(&self) -> Result<usize, String> {
        let stamps = Self::stamps_of(&self.settings);
        match Loaded::read(&self.settings) {
            Ok(loaded) => {
                let n = loaded.keys.len();
                *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                // Not retried until a file changes again.
                *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Whether a certificate or key file changed (written, replaced,
    /// removed) since the last load.
    pub fn files_changed(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != Self::stamps_of(&self.settings)
    }

    /// The certificates served now, in `[[tls.certificate]]` order.
    pub fn certificates(&self) -> Vec<CertInfo> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .info
            .clone()
    }

    /// Successful reloads, and failed ones, since the start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        )
    }

    /// `[tls] watch`: how often the files are checked for changes (zero:
    /// never).
    pub fn watch_interval(&self) -> Duration {
        self.settings.watch
    }
}

/// A thread that reloads the certificates when their files change
/// (checked every `[tls] watch`); stopped by [`Watcher::stop`].
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `tls`'s files, unless its interval is zero.
    pub fn start(tls: Arc<TlsAcceptor>) -> std::io::Result<Option<Watcher>> {
        let every = tls.watch_interval();
        if every.is_zero() {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringgate-tls-watch".to_string())
            .spawn(move || {
                let step = every.min(Duration::from_millis(200));
                let mut waited = Duration::ZERO;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < every {
                        continue;
                    }
                    waited = Duration::ZERO;
                    if tls.files_changed() {
                        match tls.reload() {
                            Ok(n) => eprintln!(
                                "ringgate: TLS certificate files changed: {n} certificate(s) reloaded"
                            ),
                            Err(e) => eprintln!(
                                "ringgate: TLS certificate files changed but cannot be loaded; \
                                 the served ones stay: {e}"
                            ),
                        }
                    }
                }
            })?;
        Ok(Some(Watcher {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}
