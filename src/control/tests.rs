use super::*;

const FILE: &str = r#"
[[upstream]]
name = "back"
targets = ["127.0.0.1:9"]

[[api]]
name = "a"
  [[api.stage]]
  name = "pinned"
  auto_deploy = false
  variables = { v = "1" }
  [[api.stage]]
  name = "auto"
  variables = { v = "2" }
  [[api.route]]
  route = "GET /m"
  mock = { body = "m ${stageVariables.v}" }
  [[api.route]]
  route = "GET /p"
  http_proxy = { uri = "http://back/p" }
"#;

fn start(text: &str) -> Control {
    let cfg = config::parse(text, "t.toml").unwrap();
    let (store, state) = Store::in_memory().unwrap();
    Control::start(cfg, None, store, state).unwrap().0
}

#[test]
fn a_pinned_stage_is_seeded_once_from_the_file() {
    let c = start(FILE);
    c.read(|_, state, snap| {
        let r = state.stage("a", "pinned").expect("seeded");
        assert_eq!(r.deployment, 1);
        assert_eq!(r.variables["v"], "1");
        assert!(state.stage("a", "auto").is_none());
        let served: Vec<_> = snap.apis().next().unwrap().served().collect();
        assert_eq!(served[0].deployment, Some(1));
        assert_eq!(served[1].deployment, None);
    });
    // A reload with other variables for the pinned stage keeps the stored ones.
    let report = c
        .apply_config(config::parse(&FILE.replace("v = \"1\"", "v = \"9\""), "t.toml").unwrap())
        .unwrap();
    assert_eq!(report.pinned_differences.len(), 1);
    c.read(|_, state, _| {
        assert_eq!(state.stage("a", "pinned").unwrap().variables["v"], "1");
        assert_eq!(state.deployments("a").count(), 1);
    });
}

#[test]
fn a_deployment_whose_upstream_is_gone_answers_500_and_is_reported() {
    let c = start(FILE);
    // The file now proxies to a host:port and has no [[upstream]] "back":
    // the auto stage follows, the pinned stage's deployment still names it.
    let new = FILE
        .replace(
            "[[upstream]]\nname = \"back\"\ntargets = [\"127.0.0.1:9\"]\n",
            "",
        )
        .replace("http://back/p", "http://127.0.0.1:9/p");
    let report = c
        .apply_config(config::parse(&new, "t.toml").unwrap())
        .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("GET /p") && w.contains("back")),
        "{report:?}"
    );
    c.read(|_, _, snap| {
        let problems: Vec<_> = snap.problems().collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
    });
}

#[test]
fn refused_changes_leave_state_and_snapshot_alone() {
    let c = start(FILE);
    let before = c.read(|_, s, snap| (format!("{s:?}"), Arc::as_ptr(snap)));
    let patch = StagePatch {
        deployment: Some(7),
        ..StagePatch::default()
    };
    assert_eq!(
        c.update_stage("a", "pinned", &patch).unwrap_err().status,
        404
    );
    assert_eq!(
        c.update_stage("a", "auto", &StagePatch::default())
            .unwrap_err()
            .status,
        409
    );
    let bad_var = StagePatch {
        variables: [("v".to_string(), Some("a b".to_string()))].into(),
        ..StagePatch::default()
    };
    assert_eq!(
        c.update_stage("a", "pinned", &bad_var).unwrap_err().status,
        400
    );
    let after = c.read(|_, s, snap| (format!("{s:?}"), Arc::as_ptr(snap)));
    assert_eq!(before, after);
}
