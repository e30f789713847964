//! `ringgate check` and `ringgate serve` on good and bad configuration
//! files: every error names the file, line and key and says how to fix it.

mod support;

use support::{manifest_path, run_binary, temp_path};

/// `# expect: line=N key=KEY` → (N, KEY).
fn expectation(text: &str) -> Option<(usize, String)> {
    let first = text.lines().next()?.strip_prefix("# expect: ")?;
    let mut line = None;
    let mut key = None;
    for part in first.split_whitespace() {
        if let Some(v) = part.strip_prefix("line=") {
            line = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("key=") {
            key = Some(v.to_string());
        }
    }
    Some((line?, key?))
}

#[test]
fn check_reports_every_bad_fixture_with_line_key_and_fix() {
    let dir = manifest_path("tests/data/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();

    let mut failures = Vec::new();
    let mut ran = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let (line, key) = expectation(&text).unwrap_or_else(|| {
            panic!(
                "{}: first line is not `# expect: line=N key=KEY`",
                file.display()
            )
        });
        let path = file.to_str().unwrap();
        let (status, stdout, stderr) = run_binary(&["check", "--config", path]);
        ran += 1;
        let mut problems = Vec::new();
        if status.code() != Some(1) {
            problems.push(format!("exit {status} (want 1)"));
        }
        if !stderr.contains(&format!(":{line}:")) {
            problems.push(format!("no `:{line}:`"));
        }
        if !stderr.starts_with(&format!("{path}:{line}:")) {
            problems.push(format!("does not start with `{path}:{line}:`"));
        }
        if !stderr.contains(&key) {
            problems.push(format!("no key `{key}`"));
        }
        if !stderr
            .lines()
            .any(|l| l.starts_with("  fix: ") && l.len() > "  fix: ".len())
        {
            problems.push("no `  fix:` line".to_string());
        }
        if stdout.contains(": OK") {
            problems.push(format!("stdout claims OK: {stdout}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n--- stderr ---\n{stderr}",
                file.display(),
                problems.join("; ")
            ));
        }
    }
    assert!(ran >= 6, "only {ran} fixture(s) in {}", dir.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_accepts_the_default_config_and_prints_its_routes() {
    let path = manifest_path("config/ringgate.toml");
    let (status, stdout, stderr) = run_binary(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains(": OK"), "{stdout}");
    assert!(stdout.contains("api demo (any host)"), "{stdout}");
    assert!(stdout.contains("stages: prod, dev"), "{stdout}");
    for route in [
        "GET /health",
        "GET /pets",
        "GET /pets/{id}",
        "POST /pets",
        "ANY /static/{path+}",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == route),
            "route {route} not listed:\n{stdout}"
        );
    }
}

#[test]
fn check_of_a_missing_file_fails() {
    let path = temp_path("missing");
    let (status, _, stderr) = run_binary(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_file_with_the_message() {
    let file = manifest_path("tests/data/bad/unknown_server_key.toml");
    let path = file.to_str().unwrap();
    let (status, stdout, stderr) = run_binary(&["serve", "--config", path]);
    assert!(!status.success(), "serve exited {status}");
    assert!(status.code().is_some(), "killed by a signal: {status}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(stderr.starts_with(&format!("{path}:5:")), "{stderr}");
    assert!(stderr.contains("server.worker_count"), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("  fix: ")), "{stderr}");
}

#[test]
fn check_of_a_valid_temp_config_lists_domains() {
    let path = temp_path("good");
    std::fs::write(
        &path,
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[[api]]
name = "shop"
hosts = ["shop.internal"]
  [[api.stage]]
  name = "live"
  [[api.route]]
  route = "ANY /{proxy+}"
  [api.route.mock]
  body = "{proxy}"

[[domain]]
host = "shop.example.com"
  [[domain.mapping]]
  base_path = "v1"
  api = "shop"
  stage = "live"
"#,
    )
    .unwrap();
    let (status, stdout, stderr) = run_binary(&["check", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains("workers: 2"), "{stdout}");
    assert!(stdout.contains("api shop (shop.internal)"), "{stdout}");
    assert!(stdout.contains("domain shop.example.com"), "{stdout}");
    assert!(stdout.contains("/v1 -> shop stage live"), "{stdout}");
}
