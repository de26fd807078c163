//! Drill retention: a drill namespace is found with its last write and deleted whole; live keys
//! and other namespaces are never touched.

use std::collections::BTreeMap;

use store::{Commit, DrillNamespace, Error, Store};

type Record = BTreeMap<String, Vec<BTreeMap<String, i64>>>;

fn record(at_unix_ms: i64) -> Record {
    BTreeMap::from([(
        "timeline".to_string(),
        vec![BTreeMap::from([("at_unix_ms".to_string(), at_unix_ms)])],
    )])
}

#[test]
fn drill_namespaces_are_aged_by_their_newest_record_and_deleted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut commit = Commit::new();
    commit
        .put("incident/drill.a/INC-1", &record(1_000))
        .unwrap();
    commit
        .put("timer/drill.a/0001/INC-1/ack", &record(5_000))
        .unwrap();
    commit
        .put("incident/drill.b/INC-2", &"no timestamp")
        .unwrap();
    commit.put("incident/live/INC-3", &record(1)).unwrap();
    commit.put("incident/drill.ab/INC-4", &record(9)).unwrap();
    store.commit(&commit).unwrap();

    let found = store.drill_namespaces().unwrap();
    let ns = |namespace: &str, keys, newest_unix_ms| DrillNamespace {
        namespace: namespace.into(),
        keys,
        newest_unix_ms,
    };
    assert_eq!(
        found,
        [
            ns("drill.a", 2, Some(5_000)),
            ns("drill.ab", 1, Some(9)),
            ns("drill.b", 1, None)
        ]
    );

    assert_eq!(store.delete_drill_namespace("drill.a").unwrap(), 2);
    let left: Vec<String> = store
        .scan_prefix::<serde_json::Value>("")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        left,
        [
            "incident/drill.ab/INC-4",
            "incident/drill.b/INC-2",
            "incident/live/INC-3"
        ]
    );

    for refused in ["live", "drill.a/x", "incident"] {
        let error = store.delete_drill_namespace(refused).err().unwrap();
        assert!(
            matches!(error, Error::NotADrill { .. }),
            "{refused}: {error}"
        );
    }
}
