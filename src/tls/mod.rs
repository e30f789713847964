//! TLS termination: the certificates of `[[tls.certificate]]`, chosen by
//! SNI, and the rustls server configuration every worker's TLS listeners
//! share ([`TlsAcceptor`]); the stream itself is [`stream::TlsStream`].
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

#![forbid(unsafe_code)]

pub mod stream;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ahash::AHashMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;

use crate::config::{TlsConfig, TlsVersion};
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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

/// The loaded certificates and the names that choose them.
#[derive(Debug)]
struct Certificates {
    keys: Vec<Arc<CertifiedKey>>,
    exact: AHashMap<String, u16>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: AHashMap<String, u16>,
}

impl Certificates {
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

/// Picks the certificate by the ClientHello's SNI.
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = hello.server_name().map_or(0, |n| self.0.index_for(n));
        self.0.keys.get(usize::from(i)).cloned()
    }
}

/// What the TLS listeners of every worker share: the rustls configuration
/// (certificates, session cache, ticket keys) and the name → certificate
/// table.
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<Certificates>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("certificates", &self.certs.keys.len())
            .finish()
    }
}

impl TlsAcceptor {
    /// Loads `[tls]`'s certificates and builds the server configuration.
    pub fn new(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
        let mut keys = Vec::new();
        let mut exact = AHashMap::new();
        let mut wildcard = AHashMap::new();
        for (i, c) in cfg.certificates.iter().enumerate() {
            let key = load_certified_key(&c.chain, &c.key).map_err(|e| e.to_string())?;
            keys.push(Arc::new(key));
            for h in &c.hosts {
                let i = u16::try_from(i).map_err(|_| "too many certificates".to_string())?;
                match h.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_string(), i),
                    None => exact.insert(h.clone(), i),
                };
            }
        }
        let certs = Arc::new(Certificates {
            keys,
            exact,
            wildcard,
        });
        let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(certs.clone())));
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
        // Bound what one connection may make rustls buffer: records to
        // send are written out as they are made.
        config.max_fragment_size = None;
        Ok(TlsAcceptor {
            config: Arc::new(config),
            certs,
        })
    }

    /// A server-side TLS connection over `tcp`, its handshake still to do.
    pub fn stream(&self, tcp: monoio::net::TcpStream) -> std::io::Result<TlsStream> {
        let conn = ServerConnection::new(self.config.clone()).map_err(std::io::Error::other)?;
        Ok(TlsStream::new(tcp, conn))
    }

    /// The certificate a handshake for SNI `name` chose (the default, 0,
    /// for none): what a request's `Host` is compared by.
    pub fn certificate_for(&self, name: Option<&str>) -> u16 {
        name.map_or(0, |n| self.certs.index_for(n))
    }
}
