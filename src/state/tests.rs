use super::*;
use crate::config::{ApiDefinition, UnmatchedRoute};

fn temp_dir(stem: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "ringgate-state-{}-{}-{stem}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

fn deployment(api: &str, id: u64) -> Arc<Deployment> {
    let cfg = crate::config::parse(
        r#"
[[api]]
name = "shop"
[[api.stage]]
name = "prod"
[[api.route]]
route = "GET /ping"
mock = { body = "pong" }
"#,
        "t.toml",
    )
    .unwrap();
    Arc::new(Deployment {
        id,
        api: api.to_string(),
        description: format!("deployment {id}"),
        created_at: 1,
        definition: cfg.apis[0].definition(),
    })
}

fn record(deployment: u64) -> StageRecord {
    StageRecord {
        deployment,
        variables: BTreeMap::from([("v".to_string(), "1".to_string())]),
        cache: None,
        throttle: None,
        route_throttle: BTreeMap::new(),
        canary: Some(Canary {
            deployment,
            percent: 12.5,
            variable_overrides: BTreeMap::new(),
            use_stage_cache: true,
        }),
        updated_at: 2,
    }
}

#[test]
fn writes_survive_reopening() {
    let dir = temp_dir("reopen");
    {
        let (store, mut state) = Store::open(&dir).unwrap();
        assert_eq!(state.next_deployment_id(), 1);
        store
            .apply(
                &mut state,
                vec![
                    Write::Deployment(deployment("shop", 1)),
                    Write::Deployment(deployment("shop", 2)),
                    Write::Stage {
                        api: "shop".into(),
                        stage: "prod".into(),
                        record: Some(Box::new(record(2))),
                    },
                ],
            )
            .unwrap();
        assert_eq!(state.next_deployment_id(), 3);
    }
    let (_store, state) = Store::open(&dir).unwrap();
    assert_eq!(state.next_deployment_id(), 3);
    let ids: Vec<u64> = state.deployments("shop").map(|d| d.id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(
        **state.deployment("shop", 2).unwrap(),
        *deployment("shop", 2)
    );
    assert_eq!(state.stage("shop", "prod"), Some(&record(2)));
    assert_eq!(state.deployments("other").count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("mode").join("nested");
    let _ = Store::open(&dir).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn a_failed_transaction_changes_nothing() {
    let (store, mut state) = Store::in_memory().unwrap();
    store
        .apply(&mut state, vec![Write::Deployment(deployment("shop", 1))])
        .unwrap();
    let before = format!("{state:?}");
    // The second write repeats an id: the whole transaction is refused,
    // including the stage record that came first.
    let e = store
        .apply(
            &mut state,
            vec![
                Write::Stage {
                    api: "shop".into(),
                    stage: "prod".into(),
                    record: Some(Box::new(record(1))),
                },
                Write::Deployment(deployment("shop", 1)),
            ],
        )
        .unwrap_err();
    assert!(e.0.contains("exists already"), "{e}");
    assert_eq!(format!("{state:?}"), before);
    assert_eq!(store.read().unwrap().stage("shop", "prod"), None);
}

#[test]
fn removing_a_stage_record() {
    let (store, mut state) = Store::in_memory().unwrap();
    let set = |r| Write::Stage {
        api: "shop".into(),
        stage: "prod".into(),
        record: r,
    };
    store
        .apply(&mut state, vec![set(Some(Box::new(record(1))))])
        .unwrap();
    store.apply(&mut state, vec![set(None)]).unwrap();
    assert_eq!(state.stage("shop", "prod"), None);
    assert_eq!(store.read().unwrap().stage("shop", "prod"), None);
}

#[test]
fn a_second_process_on_the_same_directory_is_refused() {
    let dir = temp_dir("locked");
    let (_first, _) = Store::open(&dir).unwrap();
    let e = Store::open(&dir).unwrap_err();
    assert!(e.0.contains("in use"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = temp_dir("newer");
    drop(Store::open_with(&dir, SCHEMA_VERSION + 1, &[]).unwrap());
    let e = Store::open(&dir).unwrap_err();
    assert!(e.0.contains("newer ringgate"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A made-up version 2 that renames every deployment's description: the
/// migration runs once, from the stored version, and records the new one.
#[test]
fn migrations_run_from_the_stored_version() {
    fn v1_to_v2(tx: &WriteTransaction) -> Result<(), StateError> {
        let mut t = tx.open_table(DEPLOYMENTS).map_err(db_err("t"))?;
        let rows: Vec<((String, u64), Vec<u8>)> = t
            .iter()
            .map_err(db_err("t"))?
            .map(|r| {
                let (k, v) = r.unwrap();
                let (a, i) = k.value();
                ((a.to_string(), i), v.value().to_vec())
            })
            .collect();
        for ((api, id), json) in rows {
            let mut d: Deployment = serde_json::from_slice(&json).unwrap();
            d.description = format!("migrated: {}", d.description);
            let json = serde_json::to_vec(&d).unwrap();
            t.insert((api.as_str(), id), json.as_slice())
                .map_err(db_err("t"))?;
        }
        Ok(())
    }
    let dir = temp_dir("migrate");
    {
        let (store, mut state) = Store::open(&dir).unwrap();
        store
            .apply(&mut state, vec![Write::Deployment(deployment("shop", 1))])
            .unwrap();
    }
    let (store, state) = Store::open_with(&dir, 2, &[v1_to_v2]).unwrap();
    assert_eq!(
        state.deployment("shop", 1).unwrap().description,
        "migrated: deployment 1"
    );
    drop(store);
    // Opening again at version 2 runs nothing more.
    let (_store, state) = Store::open_with(&dir, 2, &[v1_to_v2]).unwrap();
    assert_eq!(
        state.deployment("shop", 1).unwrap().description,
        "migrated: deployment 1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_record_fields_are_ignored_and_missing_ones_default() {
    let r: StageRecord = serde_json::from_str(r#"{"deployment": 4, "future": true}"#).unwrap();
    assert_eq!(r.deployment, 4);
    assert!(r.variables.is_empty() && r.canary.is_none() && r.cache.is_none());
    let d = ApiDefinition {
        unmatched_route: UnmatchedRoute::NotFound,
        routes: vec![],
    };
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(serde_json::from_str::<ApiDefinition>(&json).unwrap(), d);
}
