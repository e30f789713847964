//! Every shipped configuration (the default and config/examples/) must pass
//! `ringgate check`: the README tells people to run them.

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("config/ringgate.toml")];
    for entry in std::fs::read_dir(root.join("config/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    assert!(
        files.len() >= 3,
        "expected the default and at least two examples"
    );
    for mut file in files {
        if file.ends_with("tls.toml") {
            file = with_test_certificate(&file);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} failed `ringgate check`:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(": OK"), "{stdout}");
    }
}

/// `config/examples/tls.toml` wants the certificate its comment tells how
/// to make: a copy of it in a directory of its own, next to a certificate
/// and key for localhost made by rcgen (as the openssl command would).
fn with_test_certificate(example: &Path) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringgate-example-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("localhost.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("localhost.key"), key.serialize_pem()).unwrap();
    let copy = dir.join("tls.toml");
    std::fs::copy(example, &copy).unwrap();
    copy
}

/// The shipped default configuration serves its metrics on the admin
/// socket out of the box, read with curl as the README says.
#[test]
fn default_config_serves_metrics_on_the_admin_socket() {
    mod_support::require_curl();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml = std::fs::read_to_string(root.join("config/ringgate.toml"))
        .unwrap()
        .replace(
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:0\"]",
        )
        .replace("workers = \"auto\"", "workers = 1")
        .replace("pin_workers = true", "pin_workers = false");
    let srv = support::BinaryServer::start(&toml);
    let mut c = srv.client();
    for _ in 0..3 {
        assert_eq!(c.get("/prod/pets/7").status, 200);
    }
    let socket = srv.admin_socket();
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/metrics")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = support::prom::Prom::parse(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        m.value(
            "ringgate_requests_total",
            &[("api", "demo"), ("stage", "prod"), ("status_class", "2xx")]
        ),
        3.0
    );
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/stats")
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["series"][0]["count"], 3, "{stats}");
    // `ringgate admin stats` prints it as a table.
    let out = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["admin", "--socket"])
        .arg(&socket)
        .arg("stats")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("demo/prod "))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..5], ["3", "3", "0", "0"], "{table}");
}

mod mod_support {
    /// curl is installed by .ci/run; a machine without it cannot run this.
    pub fn require_curl() {
        assert!(
            std::process::Command::new("curl")
                .arg("--version")
                .output()
                .is_ok(),
            "curl is needed (apt-get install -y curl)"
        );
    }
}
