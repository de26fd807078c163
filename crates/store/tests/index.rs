//! Derived indexes and checkpoints on real sled directories.

use std::path::Path;

use store::{Commit, Error, Index, IndexOpened, IndexWrite, Store};

/// Records `thing/<id>` → `"open"` or `"done"`; the index `open-thing/<id>` holds the open ones.
fn derive(key: &str, value: Option<&[u8]>) -> Result<Option<IndexWrite>, Error> {
    let id = key.strip_prefix("thing/").expect("only things are indexed");
    let entry = format!("open-thing/{id}");
    Ok(Some(match value {
        Some(bytes) if store::decode_value::<String>(key, bytes)? == "open" => {
            (entry, Some(store::encode_value(&true).unwrap()))
        }
        _ => (entry, None),
    }))
}

const OPEN_THINGS: Index = Index {
    name: "open-things",
    record_prefix: "thing/",
    index_prefix: "open-thing/",
    derive,
};

fn open_things(store: &Store) -> Vec<String> {
    store
        .iter_prefix::<bool>("open-thing/")
        .map(|item| item.unwrap().0)
        .collect()
}

fn reopen(dir: &Path) -> Store {
    Store::open_after_close(dir).unwrap()
}

#[tokio::test]
async fn a_commit_keeps_the_index_with_its_records_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.add_index(OPEN_THINGS).unwrap();

    let mut commit = Commit::new();
    commit.put("thing/a", &"open").unwrap();
    commit.put("thing/b", &"open").unwrap();
    commit.put("other/c", &"open").unwrap();
    store.commit(&commit).unwrap();
    assert_eq!(open_things(&store), ["open-thing/a", "open-thing/b"]);

    // A later write in the same commit wins, as for the records themselves.
    let mut commit = Commit::new();
    commit.put("thing/a", &"done").unwrap();
    commit.put("thing/c", &"done").unwrap();
    commit.put("thing/c", &"open").unwrap();
    commit.delete("thing/b");
    store.commit(&commit).unwrap();
    assert_eq!(open_things(&store), ["open-thing/c"]);

    // A commit that fails its compare-and-swap writes no index entry either.
    let mut commit = Commit::new();
    commit.expect_raw("thing/c", None);
    commit.put("thing/d", &"open").unwrap();
    assert!(matches!(store.commit(&commit), Err(Error::Conflict { .. })));
    assert_eq!(open_things(&store), ["open-thing/c"]);
}

#[tokio::test]
async fn an_index_is_built_once_for_existing_records_and_entries_left_over_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut commit = Commit::new();
    for i in 0..2_345 {
        let state = if i % 3 == 0 { "open" } else { "done" };
        commit.put(format!("thing/{i:05}"), &state).unwrap();
    }
    // An entry with no open record behind it (an unfinished build, say).
    commit.put("open-thing/99999", &true).unwrap();
    store.commit(&commit).unwrap();
    assert_eq!(
        store.add_index(OPEN_THINGS).unwrap(),
        IndexOpened::Built {
            records: 2_345,
            entries: 782
        }
    );
    assert_eq!(open_things(&store).len(), 782);
    assert!(!open_things(&store).contains(&"open-thing/99999".to_string()));
    store.flush().await.unwrap();
    drop(store);

    let store = reopen(dir.path());
    assert_eq!(store.add_index(OPEN_THINGS).unwrap(), IndexOpened::Present);
    assert_eq!(open_things(&store).len(), 782);
}

/// The newest snapshot sled has written in `dir` (`snap.<lsn, hex>`), if any.
fn newest_snapshot(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap.") && !name.ends_with(".generating"))
        .max()
}

#[tokio::test]
async fn a_checkpoint_writes_a_snapshot_past_everything_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for chunk in 0..20 {
        let mut commit = Commit::new();
        for i in 0..500 {
            commit
                .put(format!("item/{chunk:02}/{i:04}"), &"x".repeat(200))
                .unwrap();
        }
        store.commit(&commit).unwrap();
    }
    store.flush().await.unwrap();
    let before = newest_snapshot(dir.path());
    drop(store);

    store::checkpoint(dir.path()).unwrap();
    let after = newest_snapshot(dir.path());
    assert!(after.is_some() && after > before, "{before:?} → {after:?}");

    let store = reopen(dir.path());
    assert_eq!(
        store.get::<String>("item/19/0499").unwrap(),
        Some("x".repeat(200))
    );
    // While the database is open, nobody else can checkpoint it (sled's lock); it says so.
    let held = std::thread::spawn({
        let dir = dir.path().to_path_buf();
        move || store::checkpoint(&dir)
    });
    let error = held.join().unwrap().unwrap_err();
    assert!(error.to_string().contains("lock"), "{error}");
    drop(store);
}
