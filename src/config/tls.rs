//! `[tls]` and `[[tls.certificate]]`: checked at load, certificate files
//! included (read, parsed, key matching the certificate, every listed host
//! covered by it), so a bad file fails at start with the key and line.
//! `[upstream.tls]` likewise: its CA bundle and client certificate are
//! read and its rustls client configuration made at load.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{ConfigError, Source};
use super::raw::{RawCertificate, RawTls, RawUpstreamTls};
use super::ServerConfig;
use crate::tls::client::{CaSource, ClientTls, ClientTlsOptions, ClientTlsPart};

type Result<T> = std::result::Result<T, ConfigError>;

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default, as API Gateway's `TLS_1_2` policy).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `min_version`: `"1.2"` (default) or `"1.3"`.
    pub min_version: TlsVersion,
    /// `session_tickets` (default true): TLS 1.3 and 1.2 resumption by
    /// tickets, encrypted with keys that rotate every 6 hours.
    pub session_tickets: bool,
    /// `session_cache` (default 4096): sessions kept for resumption by id
    /// (TLS 1.2) and by stateful ticket; 0 turns the cache off.
    pub session_cache: usize,
    /// `watch` (default `"5s"`): how often the certificate and key files
    /// are checked for changes, which reload them; `"0s"`: never.
    pub watch: std::time::Duration,
    /// `redirect_hosts`: hosts (lowercase; `*.example.com` for one label
    /// under it, `*` for every host) whose requests on the plain listeners
    /// get 308 to the same URL over HTTPS (the first `listen_tls` port).
    pub redirect_hosts: Vec<String>,
    /// `[[tls.certificate]]` in file order; never empty. The first is the
    /// default: served to clients that send no SNI or a name no
    /// certificate lists.
    pub certificates: Vec<CertificateConfig>,
}

/// `[[tls.certificate]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// `chain`: the PEM file with the certificate, then its intermediates
    /// (resolved against the configuration file's directory).
    pub chain: PathBuf,
    /// `key`: the PEM file with its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `hosts`: the SNI names (lowercase; `*.example.com` for one label
    /// under it) this certificate is chosen for. Each is checked against
    /// the certificate's own names at load.
    pub hosts: Vec<String>,
    /// `client_ca`: a PEM bundle of CA certificates. When set, clients of
    /// these hosts must present a certificate that chains to one of them
    /// and is valid now (mutual TLS); requests without one get 403.
    pub client_ca: Option<PathBuf>,
    /// `client_cert_headers`: with `client_ca`, request headers that carry
    /// the verified client certificate's fields to backends, as (field,
    /// header name): fields `subject`, `issuer`, `serial`, `not_before`,
    /// `not_after`, `cert` (the PEM, percent-encoded as nginx's
    /// `$ssl_client_escaped_cert`). These names are removed from every
    /// forwarded request first, so a client cannot send its own.
    pub client_cert_headers: Vec<(String, String)>,
}

/// The client certificate fields `client_cert_headers` may name.
const CERT_FIELDS: [&str; 6] = [
    "subject",
    "issuer",
    "serial",
    "not_before",
    "not_after",
    "cert",
];

/// A `min_version`: `"1.2"` (the default) or `"1.3"`.
fn min_version(v: Option<&Spanned<String>>, key: &str, src: &Source<'_>) -> Result<TlsVersion> {
    let Some(v) = v else {
        return Ok(TlsVersion::Tls12);
    };
    match v.get_ref().as_str() {
        "1.2" => Ok(TlsVersion::Tls12),
        "1.3" => Ok(TlsVersion::Tls13),
        other => Err(src.error(
            &v.span(),
            key,
            format!("min_version {other:?} is not a TLS version ringgate speaks"),
            "use \"1.2\" (TLS 1.2 and 1.3) or \"1.3\" (TLS 1.3 only)",
        )),
    }
}

/// A path option: not empty, resolved against the configuration file's
/// directory.
fn file_path(v: &Spanned<String>, key: &str, src: &Source<'_>) -> Result<PathBuf> {
    let s = v.get_ref();
    if s.is_empty() {
        return Err(src.error(
            &v.span(),
            key,
            "the path is empty",
            "name a PEM file, absolute or relative to the configuration file's directory",
        ));
    }
    let p = Path::new(s);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(src.file)
            .parent()
            .unwrap_or(Path::new(""))
            .join(p)
    })
}

/// `[upstream.tls]`: how an upstream group's connections are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// `ca`: `"platform"` (the default: the system's CA certificates),
    /// `"webpki"` (Mozilla's, built in) or a PEM bundle's path.
    pub ca: CaSource,
    /// `verify` (default true): check the backend's certificate: chain,
    /// validity and name. False accepts any (logged at start).
    pub verify: bool,
    /// `server_name`: the name sent as SNI and the certificate must be for;
    /// default: each target's host (an IP address is checked against the
    /// certificate's IP addresses, and sends no SNI).
    pub server_name: Option<String>,
    /// `min_version`: `"1.2"` (default) or `"1.3"`.
    pub min_version: TlsVersion,
    /// `client_certificate = { chain, key }`: presented when the backend
    /// asks for a client certificate.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// The rustls client configuration, made at load.
    pub client: ClientTls,
}

/// `[upstream.tls]` of the upstream at `p` (`upstream[i]`).
pub(super) fn upstream_tls(
    raw: &Spanned<RawUpstreamTls>,
    p: &str,
    src: &Source<'_>,
) -> Result<UpstreamTlsConfig> {
    let t = raw.get_ref();
    let ca = match &t.ca {
        None => CaSource::Platform,
        Some(v) => match v.get_ref().as_str() {
            "platform" => CaSource::Platform,
            "webpki" => CaSource::Webpki,
            _ => CaSource::File(file_path(v, &format!("{p}.tls.ca"), src)?),
        },
    };
    let verify = t.verify.as_ref().is_none_or(|v| *v.get_ref());
    let server_name = match &t.server_name {
        None => None,
        Some(v) => {
            let name = v.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() || name.contains('*')
            {
                return Err(src.error(
                    &v.span(),
                    format!("{p}.tls.server_name"),
                    format!("{:?} is not a DNS name or IP address", v.get_ref()),
                    "write the name the backend's certificate is for, e.g. \"pets.internal.example.com\"",
                ));
            }
            Some(name)
        }
    };
    let min_version = min_version(t.min_version.as_ref(), &format!("{p}.tls.min_version"), src)?;
    let client_certificate = match &t.client_certificate {
        None => None,
        Some(c) => Some((
            file_path(&c.chain, &format!("{p}.tls.client_certificate.chain"), src)?,
            file_path(&c.key, &format!("{p}.tls.client_certificate.key"), src)?,
        )),
    };
    let client = ClientTls::build(&ClientTlsOptions {
        ca: &ca,
        verify,
        min_version,
        client_certificate: client_certificate
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
    })
    .map_err(|e| {
        let (span, key) = match (e.part, &t.client_certificate) {
            (ClientTlsPart::ClientChain, Some(c)) => {
                (c.chain.span(), format!("{p}.tls.client_certificate.chain"))
            }
            (ClientTlsPart::ClientKey, Some(c)) => {
                (c.key.span(), format!("{p}.tls.client_certificate.key"))
            }
            _ => (
                t.ca.as_ref().map_or_else(|| raw.span(), |v| v.span()),
                format!("{p}.tls.ca"),
            ),
        };
        src.error(&span, key, e.message, e.fix)
    })?;
    Ok(UpstreamTlsConfig {
        ca,
        verify,
        server_name,
        min_version,
        client_certificate,
        client,
    })
}

/// `[tls]`, against `server.listen_tls`: both or neither.
pub(super) fn tls(
    raw: Option<&RawTls>,
    server: &ServerConfig,
    src: &Source<'_>,
) -> Result<Option<TlsConfig>> {
    let Some(raw) = raw else {
        if !server.listen_tls.is_empty() {
            return Err(src.error(
                &(0..0),
                "server.listen_tls",
                "server.listen_tls is set but there is no [tls] table with a certificate",
                "add [[tls.certificate]] with chain = \"cert.pem\" and key = \"key.pem\"",
            ));
        }
        return Ok(None);
    };
    let min_version = min_version(raw.min_version.as_ref(), "tls.min_version", src)?;
    let session_cache = match raw.session_cache.as_ref() {
        None => 4096,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(n @ 0..=1_000_000) => n,
            _ => {
                return Err(src.error(
                    &n.span(),
                    "tls.session_cache",
                    format!(
                        "session_cache = {} is not 0 to 1000000 sessions",
                        n.get_ref()
                    ),
                    "leave it out (4096), or 0 to keep no sessions",
                ))
            }
        },
    };
    if raw.certificate.is_empty() {
        return Err(src.error(
            &(0..0),
            "tls.certificate",
            "[tls] has no [[tls.certificate]]",
            "add [[tls.certificate]] with chain = \"cert.pem\" and key = \"key.pem\"",
        ));
    }
    let mut certificates: Vec<CertificateConfig> = Vec::new();
    for (i, c) in raw.certificate.iter().enumerate() {
        let cert = certificate(c, &format!("tls.certificate[{i}]"), src)?;
        for h in &cert.hosts {
            if let Some(j) = certificates.iter().position(|o| o.hosts.contains(h)) {
                let span = c.hosts.as_ref().map_or(0..0, |s| s.span());
                return Err(src.error(
                    &span,
                    format!("tls.certificate[{i}].hosts"),
                    format!("host {h:?} is also listed by tls.certificate[{j}]"),
                    "list each name under one certificate",
                ));
            }
        }
        certificates.push(cert);
    }
    if server.listen_tls.is_empty() {
        return Err(src.error(
            &raw.certificate[0].chain.span(),
            "server.listen_tls",
            "[tls] certificates are given but server.listen_tls is not set",
            "add listen_tls = [\"127.0.0.1:8443\"] under [server]",
        ));
    }
    let watch = match raw.watch.as_ref() {
        None => std::time::Duration::from_secs(5),
        Some(w) => super::parse_duration(w.get_ref()).map_err(|why| {
            src.error(
                &w.span(),
                "tls.watch",
                format!("invalid duration {:?}: {why}", w.get_ref()),
                "write how often to check the files, e.g. watch = \"5s\", or \"0s\" for never",
            )
        })?,
    };
    let mut redirect_hosts = Vec::new();
    if let Some(list) = &raw.redirect_hosts {
        for (i, h) in list.get_ref().iter().enumerate() {
            let name = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if name != "*" && !crate::tls::valid_sni_pattern(&name) {
                return Err(src.error(
                    &h.span(),
                    format!("tls.redirect_hosts[{i}]"),
                    format!("{:?} is not a host name (or *.name, or *)", h.get_ref()),
                    "write a DNS name such as \"api.example.com\", \"*.example.com\", or \"*\" for every host",
                ));
            }
            redirect_hosts.push(name);
        }
    }
    Ok(Some(TlsConfig {
        redirect_hosts,
        watch,
        min_version,
        session_tickets: raw.session_tickets.unwrap_or(true),
        session_cache,
        certificates,
    }))
}

fn certificate(c: &RawCertificate, key: &str, src: &Source<'_>) -> Result<CertificateConfig> {
    let path = |v: &Spanned<String>, k: &str| file_path(v, &format!("{key}.{k}"), src);
    let chain = path(&c.chain, "chain")?;
    let key_path = path(&c.key, "key")?;
    let loaded = crate::tls::load_certified_key(&chain, &key_path).map_err(|e| {
        let (span, k) = match e.part {
            crate::tls::PemPart::Chain => (c.chain.span(), "chain"),
            crate::tls::PemPart::Key => (c.key.span(), "key"),
        };
        src.error(&span, format!("{key}.{k}"), e.message, e.fix)
    })?;
    let mut hosts = Vec::new();
    if let Some(list) = &c.hosts {
        for (i, h) in list.get_ref().iter().enumerate() {
            let name = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
            let k = format!("{key}.hosts[{i}]");
            if !crate::tls::valid_sni_pattern(&name) {
                return Err(src.error(
                    &h.span(),
                    k,
                    format!("{:?} is not a host name (or *.name)", h.get_ref()),
                    "write a DNS name such as \"api.example.com\" or \"*.example.com\"",
                ));
            }
            if !crate::tls::covers(&loaded, &name) {
                return Err(src.error(
                    &h.span(),
                    k,
                    format!(
                        "the certificate in {} is not valid for {name:?}",
                        chain.display()
                    ),
                    "list only names in the certificate's subject alternative names, or use a \
                     certificate that has this one",
                ));
            }
            hosts.push(name);
        }
    }
    let client_ca = match &c.client_ca {
        None => None,
        Some(v) => {
            let p = path(v, "client_ca")?;
            crate::tls::load_roots(&p).map_err(|why| {
                src.error(
                    &v.span(),
                    format!("{key}.client_ca"),
                    why,
                    "give a PEM file of the CA certificates client certificates must chain to",
                )
            })?;
            Some(p)
        }
    };
    let mut client_cert_headers = Vec::new();
    if let Some(map) = &c.client_cert_headers {
        for (field, name) in &map.0 {
            let k = format!("{key}.client_cert_headers.{}", field.get_ref());
            if client_ca.is_none() {
                return Err(src.error(
                    &field.span(),
                    k,
                    "client_cert_headers needs client_ca: only a verified client certificate is forwarded",
                    "add client_ca = \"clients-ca.pem\" to this certificate, or remove client_cert_headers",
                ));
            }
            if !CERT_FIELDS.contains(&field.get_ref().as_str()) {
                return Err(src.error(
                    &field.span(),
                    k,
                    format!("{:?} is not a certificate field", field.get_ref()),
                    format!("use one of: {}", CERT_FIELDS.join(", ")),
                ));
            }
            let n = name.get_ref();
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(src.error(
                    &name.span(),
                    k,
                    format!("{n:?} is not a header name"),
                    "write a header name such as \"X-Client-Cert-Subject\"",
                ));
            }
            client_cert_headers.push((field.get_ref().clone(), n.to_ascii_lowercase()));
        }
    }
    Ok(CertificateConfig {
        chain,
        key: key_path,
        hosts,
        client_ca,
        client_cert_headers,
    })
}
