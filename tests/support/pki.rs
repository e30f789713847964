//! A test PKI for the TLS tests: a CA made by rcgen and the leaf, client
//! and CA certificates it signs, written as PEM files in a temporary
//! directory (no key is ever committed).

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A test CA and leaf certificates it signs, written as PEM files.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: rcgen::Certificate,
    pub ca_key: KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = super::temp_path("tls").with_extension("d");
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringgate test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// Writes `<stem>.pem` (the leaf, then the CA) and `<stem>.key` for
    /// `names`; returns their paths.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf_named(stem, stem, names)
    }

    /// [`Pki::leaf`] with common name `cn` (to tell a replacement apart).
    pub fn leaf_named(&self, stem: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let chain = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&chain, format!("{}{}", cert.pem(), self.ca.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (chain, key_path)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// A client certificate for `cn` signed by `ca` (its own key pair), valid
/// from `not_before` to `not_after` days from now; the chain and key as
/// rustls takes them.
pub fn client_cert(
    ca: &(rcgen::Certificate, KeyPair),
    cn: &str,
    days: (i64, i64),
) -> (
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days.0);
    params.not_after = now + time::Duration::days(days.1);
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    (
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
}

/// A CA for client certificates, written to `<dir>/<name>.pem`.
pub fn client_ca(pki: &Pki, name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(pki.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    (cert, key)
}

/// [`client_cert`] for `cn`, valid from yesterday for 30 days, written as
/// `<dir>/<cn>-client.pem` and `.key`; returns their paths.
pub fn client_cert_files(
    pki: &Pki,
    ca: &(rcgen::Certificate, KeyPair),
    cn: &str,
) -> (PathBuf, PathBuf) {
    let (chain, key) = client_cert(ca, cn, (-1, 30));
    let pem = |label: &str, der: &[u8]| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let chain_path = pki.dir.join(format!("{cn}-client.pem"));
    let key_path = pki.dir.join(format!("{cn}-client.key"));
    std::fs::write(&chain_path, pem("CERTIFICATE", &chain[0])).unwrap();
    std::fs::write(&key_path, pem("PRIVATE KEY", key.secret_der())).unwrap();
    (chain_path, key_path)
}
