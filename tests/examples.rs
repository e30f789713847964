//! Every shipped configuration (the default and config/examples/) must pass
//! `ringgate check`: the README tells people to run them.

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
    for file in files {
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
