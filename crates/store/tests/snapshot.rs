//! Backup, restore and schema versions: a snapshot restores every tree as it was, a damaged
//! snapshot or a non-empty target is refused with the reason, a newer schema is refused and an
//! older one migrated.

use std::path::Path;

use store::{Commit, Committed, Error, SCHEMA_VERSION, Store};

fn commit_for(i: u64) -> Commit {
    let mut commit = Commit::new();
    commit.put(format!("item/{i:08}"), &i).unwrap();
    commit.put(format!("mirror/{i:08}"), &(i * 2)).unwrap();
    commit.event(
        format!("muster.live.incident.{i}.graded"),
        format!("payload-{i}").into_bytes(),
    );
    commit.processed(format!("msg-{i}"));
    commit
}

/// Opens again what this process just closed. sled 0.34 releases its file lock when deferred
/// (epoch-based) cleanup runs, which other threads using sled can hold back for a moment.
fn reopen<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    for _ in 0..100 {
        match open() {
            Ok(opened) => return opened,
            Err(error) if error.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(error) => panic!("{error}"),
        }
    }
    panic!("the database stayed locked for 5 s")
}

fn sled_open(dir: &Path) -> sled::Db {
    reopen(|| sled::open(dir))
}

/// Every entry of a tree, read with sled directly.
fn tree_entries(dir: &Path, tree: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = sled_open(dir);
    let tree = db.open_tree(tree).unwrap();
    tree.iter()
        .map(|item| {
            let (k, v) = item.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

fn set_schema_version(dir: &Path, version: Option<u32>) {
    let db = sled_open(dir);
    let meta = db.open_tree("meta").unwrap();
    match version {
        Some(version) => meta
            .insert("schema_version", &version.to_be_bytes())
            .unwrap(),
        None => meta.remove("schema_version").unwrap(),
    };
    db.flush().unwrap();
}

fn schema_version(dir: &Path) -> Option<u32> {
    let db = sled_open(dir);
    let meta = db.open_tree("meta").unwrap();
    meta.get("schema_version")
        .unwrap()
        .map(|b| u32::from_be_bytes(b.as_ref().try_into().unwrap()))
}

/// CRC-32 (IEEE), bit by bit: enough to re-seal a header the test edited.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A store with 40 commits, of which the first 10 outbox events have been published.
async fn populated(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    for i in 0..40 {
        store.commit(&commit_for(i)).unwrap();
    }
    let published: Vec<_> = store
        .outbox_pending(10)
        .unwrap()
        .iter()
        .map(|e| e.key)
        .collect();
    store.outbox_remove(&published).unwrap();
    let mut delete = Commit::new();
    delete.delete("mirror/00000003");
    store.commit(&delete).unwrap();
    store.flush().await.unwrap();
    store
}

#[tokio::test]
async fn a_snapshot_restores_every_tree() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("backup.snap");
    let store = populated(source.path()).await;
    let source_pending = store.outbox_pending(100).unwrap();
    let source_id = store.generate_id().unwrap();
    let source_instance = store.instance_id().to_string();

    let summary = store.snapshot_to(&file).unwrap();
    assert_eq!(summary.schema_version, SCHEMA_VERSION);
    let counts: Vec<_> = summary
        .trees
        .iter()
        .map(|t| (t.name.as_str(), t.entries))
        .collect();
    assert_eq!(
        counts,
        [
            ("meta", 2),
            ("state", 79),
            ("outbox", 30),
            ("processed", 40),
            ("audit", 0)
        ]
    );
    assert!(!file.with_extension("snap.partial").exists());

    let restored_dir = target.path().join("intake");
    let restored = Store::restore(&file, &restored_dir, false).unwrap();
    assert_eq!(restored.summary, summary);
    let restored = restored.store;

    // What the services read is the same.
    assert_eq!(restored.get::<u64>("item/00000039").unwrap(), Some(39));
    assert_eq!(restored.get::<u64>("mirror/00000003").unwrap(), None);
    assert!(restored.is_processed("msg-0").unwrap());
    assert_eq!(restored.outbox_pending(100).unwrap(), source_pending);
    // A new identity and ids above everything the original handed out, so nothing collides.
    assert_ne!(restored.instance_id(), source_instance);
    assert!(restored.generate_id().unwrap() > source_id);
    let Committed::Applied { msg_ids } = restored.commit(&commit_for(100)).unwrap() else {
        panic!("a new commit on the restored store was not applied")
    };
    let pending = restored.outbox_pending(100).unwrap();
    assert_eq!(pending.len(), 31, "a new event overwrote a restored one");
    assert_eq!(pending.last().unwrap().msg_id, msg_ids[0]);
    restored.flush().await.unwrap();
    drop(restored);
    drop(store);

    // Byte for byte, bar the outbox event committed above.
    let restored_dir_after = restored_dir.clone();
    for tree in ["state", "processed", "outbox"] {
        let mut want = tree_entries(source.path(), tree);
        let got = tree_entries(&restored_dir_after, tree);
        if tree != "outbox" {
            let mut extra = got.clone();
            extra.retain(|(k, _)| {
                !k.starts_with(b"item/00000100")
                    && !k.starts_with(b"mirror/00000100")
                    && k != b"msg-100"
            });
            assert_eq!(extra, want, "tree {tree} differs after restore");
        } else {
            want.push(got.last().unwrap().clone());
            assert_eq!(got, want, "tree outbox differs after restore");
        }
    }
}

#[tokio::test]
async fn a_snapshot_taken_under_load_holds_whole_commits() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("backup.snap");
    let store = Store::open(source.path()).unwrap();
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    store.commit(&commit_for(w * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.snapshot_to(&file).unwrap();
    for writer in writers {
        writer.join().unwrap();
    }
    let restored = Store::restore(&file, target.path().join("r"), false)
        .unwrap()
        .store;
    let items = restored.scan_prefix::<u64>("item/").unwrap();
    let mirrors = restored.scan_prefix::<u64>("mirror/").unwrap();
    assert_eq!(items.len(), mirrors.len(), "a commit was cut in half");
    assert_eq!(restored.outbox_len(), items.len());
    for (item, _) in &items {
        let msg = format!("msg-{}", item["item/".len()..].parse::<u64>().unwrap());
        assert!(restored.is_processed(&msg).unwrap(), "{msg} missing");
    }
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_before_anything_is_written() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("backup.snap");
    populated(source.path()).await.snapshot_to(&file).unwrap();
    let good = std::fs::read(&file).unwrap();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "flipped body byte",
            {
                let mut b = good.clone();
                let at = b.len() - 20;
                b[at] ^= 0x40;
                b
            },
            "checksum",
        ),
        (
            "flipped header byte",
            {
                let mut b = good.clone();
                b[30] ^= 0x01;
                b
            },
            "corrupt",
        ),
        ("truncated", good[..good.len() - 7].to_vec(), "truncated"),
        (
            "not a snapshot",
            b"hello, world, not a snapshot".to_vec(),
            "not a muster snapshot",
        ),
    ];
    for (case, bytes, reason) in cases {
        let damaged = target.path().join("damaged.snap");
        std::fs::write(&damaged, &bytes).unwrap();
        let into = target.path().join(case.replace(' ', "-"));
        let error = match Store::restore(&damaged, &into, false) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("{case}: a damaged snapshot was restored"),
        };
        assert!(error.contains(reason), "{case}: {error}");
        assert!(!into.exists(), "{case}: the target was written to");
    }
}

#[tokio::test]
async fn a_non_empty_target_is_refused_unless_forced() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("backup.snap");
    populated(source.path()).await.snapshot_to(&file).unwrap();
    std::fs::write(target.path().join("keep.txt"), "precious").unwrap();

    let error = Store::restore(&file, target.path(), false).err().unwrap();
    assert!(matches!(error, Error::RestoreTarget { .. }), "{error}");
    assert!(error.to_string().contains("--force"), "{error}");
    assert!(target.path().join("keep.txt").exists());

    let restored = Store::restore(&file, target.path(), true).unwrap().store;
    assert_eq!(restored.get::<u64>("item/00000001").unwrap(), Some(1));
    assert!(!target.path().join("keep.txt").exists());
}

#[tokio::test]
async fn a_forced_restore_over_a_store_in_use_deletes_nothing() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("backup.snap");
    populated(source.path()).await.snapshot_to(&file).unwrap();
    let held = Store::open(target.path()).unwrap();
    let mut commit = Commit::new();
    commit.put("keep/live/1", &1u64).unwrap();
    held.commit(&commit).unwrap();
    held.flush().await.unwrap();

    let error = Store::restore(&file, target.path(), true).err().unwrap();
    assert!(error.to_string().contains("lock"), "{error}");
    assert_eq!(held.get::<u64>("keep/live/1").unwrap(), Some(1));
}

#[tokio::test]
async fn a_snapshot_of_a_newer_schema_is_refused() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("backup.snap");
    populated(source.path()).await.snapshot_to(&file).unwrap();
    // Schema version at offset 12; the header CRC covers the 167 bytes before it
    // (5 trees: meta, state, outbox, processed, audit).
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[12..16].copy_from_slice(&(SCHEMA_VERSION + 1).to_be_bytes());
    let crc = crc32(&bytes[..167]);
    bytes[167..171].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&file, bytes).unwrap();

    let into = target.path().join("r");
    let error = Store::restore(&file, &into, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && error.contains(&format!("version {SCHEMA_VERSION} at most")),
        "{error}"
    );
    assert!(!into.exists());
}

#[tokio::test]
async fn a_store_written_by_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(populated(dir.path()).await);
    set_schema_version(dir.path(), Some(SCHEMA_VERSION + 7));

    let error = reopen(|| match Store::open(dir.path()) {
        Ok(_) => Ok(None),
        Err(Error::Open { source, .. }) => Err(source),
        Err(error) => Ok(Some(error)),
    })
    .expect("a newer schema was opened");
    let Error::SchemaTooNew {
        found, supported, ..
    } = &error
    else {
        panic!("expected SchemaTooNew, got {error}")
    };
    assert_eq!((*found, *supported), (SCHEMA_VERSION + 7, SCHEMA_VERSION));
    let message = error.to_string();
    assert!(
        message.contains(&format!("schema version {}", SCHEMA_VERSION + 7))
            && message.contains(&format!("reads version {SCHEMA_VERSION}")),
        "{message}"
    );
    // Refusing changed nothing.
    assert_eq!(schema_version(dir.path()), Some(SCHEMA_VERSION + 7));
}

#[tokio::test]
async fn an_older_store_is_migrated_on_open() {
    for older in [None, Some(0)] {
        let dir = tempfile::tempdir().unwrap();
        drop(populated(dir.path()).await);
        set_schema_version(dir.path(), older);

        let store = reopen(|| Store::open(dir.path()));
        assert_eq!(store.get::<u64>("item/00000039").unwrap(), Some(39));
        assert_eq!(store.outbox_len(), 30);
        drop(store);
        assert_eq!(
            schema_version(dir.path()),
            Some(SCHEMA_VERSION),
            "{older:?}"
        );
    }
    assert!(
        store::MIGRATIONS
            .iter()
            .enumerate()
            .all(|(i, step)| step.from == i as u32),
        "MIGRATIONS must be ordered, one step per version"
    );
    assert_eq!(store::MIGRATIONS.len(), SCHEMA_VERSION as usize);
}

#[tokio::test]
async fn a_new_store_starts_at_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    assert_eq!(schema_version(dir.path()), Some(SCHEMA_VERSION));
}
