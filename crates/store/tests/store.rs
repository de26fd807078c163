//! Store tests: a commit writes state, outbox and processed id together or not at all,
//! also when the process is killed with SIGKILL in the middle of committing.

use std::process::{Command, Stdio};
use std::time::Duration;

use store::{Commit, Committed, Error, Store};

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

#[tokio::test]
async fn commit_writes_state_outbox_and_processed_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let outcome = store.commit(&commit_for(1)).unwrap();
    let Committed::Applied { msg_ids } = outcome else {
        panic!("expected applied, got {outcome:?}")
    };
    assert_eq!(msg_ids.len(), 1);
    assert!(msg_ids[0].starts_with(store.instance_id()));
    store.flush().await.unwrap();

    assert_eq!(store.get::<u64>("item/00000001").unwrap(), Some(1));
    assert_eq!(store.get::<u64>("mirror/00000001").unwrap(), Some(2));
    assert!(store.is_processed("msg-1").unwrap());
    let pending = store.outbox_pending(10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].msg_id, msg_ids[0]);
    assert_eq!(pending[0].subject, "muster.live.incident.1.graded");
    assert_eq!(pending[0].payload, b"payload-1");

    store.outbox_remove(&[pending[0].key]).unwrap();
    assert_eq!(store.outbox_len(), 0);
}

#[tokio::test]
async fn a_processed_message_is_never_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.commit(&commit_for(7)).unwrap();
    let mut again = commit_for(7);
    again.put("item/extra", &99u64).unwrap();
    assert_eq!(store.commit(&again).unwrap(), Committed::AlreadyProcessed);
    assert_eq!(
        store.get::<u64>("item/extra").unwrap(),
        None,
        "a redelivered message wrote state"
    );
    assert_eq!(
        store.outbox_len(),
        1,
        "a redelivered message added an outbox event"
    );
}

#[tokio::test]
async fn a_failed_compare_and_swap_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut first = Commit::new();
    first.put("unit/live/HZ-01", &"INC-1").unwrap();
    store.commit(&first).unwrap();

    // A second booking that believed the unit was free must fail as a whole.
    let mut second = Commit::new();
    second.expect_raw("unit/live/HZ-01", None);
    second.put("unit/live/HZ-01", &"INC-2").unwrap();
    second.put("incident/live/INC-2", &"booked").unwrap();
    second.event("muster.live.incident.INC-2.units_assigned", b"x".to_vec());
    second.processed("msg-inc-2");
    let error = store.commit(&second).unwrap_err();
    assert!(
        matches!(error, Error::Conflict { ref key } if key == "unit/live/HZ-01"),
        "{error}"
    );

    assert_eq!(
        store.get::<String>("unit/live/HZ-01").unwrap().as_deref(),
        Some("INC-1")
    );
    assert_eq!(store.get::<String>("incident/live/INC-2").unwrap(), None);
    assert_eq!(store.outbox_len(), 0);
    assert!(!store.is_processed("msg-inc-2").unwrap());

    // With the right expectation it applies.
    let current = store.get_raw("unit/live/HZ-01").unwrap();
    let mut third = Commit::new();
    third.expect_raw("unit/live/HZ-01", current);
    third.put("unit/live/HZ-01", &"INC-3").unwrap();
    assert!(matches!(
        store.commit(&third).unwrap(),
        Committed::Applied { .. }
    ));
}

#[tokio::test]
async fn flushed_commits_survive_reopen_and_message_ids_stay_unique() {
    let dir = tempfile::tempdir().unwrap();
    let first_ids = {
        let store = Store::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..10 {
            if let Committed::Applied { msg_ids } = store.commit(&commit_for(i)).unwrap() {
                ids.extend(msg_ids);
            }
        }
        store.flush().await.unwrap();
        ids
    };
    // Reopened just after the last handle went: sled's threads let go of the lock a moment later.
    let store = Store::open_after_close(dir.path()).unwrap();
    for i in 0..10 {
        assert_eq!(store.get::<u64>(&format!("item/{i:08}")).unwrap(), Some(i));
    }
    let pending: Vec<String> = store
        .outbox_pending(100)
        .unwrap()
        .into_iter()
        .map(|e| e.msg_id)
        .collect();
    assert_eq!(
        pending, first_ids,
        "outbox must keep commit order across a reopen"
    );
    if let Committed::Applied { msg_ids } = store.commit(&commit_for(10)).unwrap() {
        assert!(
            !first_ids.contains(&msg_ids[0]),
            "message id reused after reopen"
        );
    }
}

#[tokio::test]
async fn a_corrupt_value_is_reported_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("state").unwrap();
        let mut bytes = store::encode_value(&42u64).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        tree.insert("item/bad", bytes).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let error = store.get::<u64>("item/bad").unwrap_err();
    assert!(error.to_string().contains("checksum"), "{error}");
}

const CRASH_DIR_ENV: &str = "MUSTER_STORE_CRASH_WRITER_DIR";

/// Helper run in a child process by `commits_are_atomic_under_sigkill`: commits forever.
#[tokio::test]
async fn crash_writer() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let store = Store::open(&dir).unwrap();
    for i in 0.. {
        store.commit(&commit_for(i)).unwrap();
        if i % 16 == 0 {
            store.flush().await.unwrap();
            println!("flushed {i}");
        }
    }
}

#[tokio::test]
async fn commits_are_atomic_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_writer", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let it write for a while, then kill it without warning.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("crash writer exited early: {status}");
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = Store::open(dir.path()).unwrap();
    let items: Vec<(String, u64)> = store.scan_prefix("item/").unwrap();
    let events = store.outbox_pending(usize::MAX).unwrap();
    assert!(
        items.len() > 16,
        "the writer made too little progress to test anything: {}",
        items.len()
    );
    assert_eq!(
        events.len(),
        items.len(),
        "state and outbox disagree after SIGKILL"
    );
    for (key, i) in &items {
        assert_eq!(
            store.get::<u64>(&format!("mirror/{i:08}")).unwrap(),
            Some(i * 2),
            "{key} without its mirror"
        );
        assert!(
            store.is_processed(&format!("msg-{i}")).unwrap(),
            "{key} without its processed id"
        );
    }
    // Commits are applied in order, so what survived is a prefix: 0..n with no holes.
    let numbers: Vec<u64> = items.iter().map(|(_, i)| *i).collect();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
    assert!(
        !store
            .is_processed(&format!("msg-{}", numbers.len()))
            .unwrap()
    );
}

/// Three databases in one process (as under `muster up`), many writers, a flush after every
/// commit: sled 0.34's process-wide lock must not deadlock (it did, before the store's gate).
#[test]
fn concurrent_commits_and_flushes_across_databases_do_not_deadlock() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<_> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let stores: Vec<Store> = paths.iter().map(|p| Store::open(p).unwrap()).collect();
            let mut tasks = Vec::new();
            for writer in 0..24u64 {
                let store = stores[writer as usize % stores.len()].clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..60u64 {
                        let n = writer * 1000 + i;
                        store.commit(&commit_for(n)).unwrap();
                        store.flush().await.unwrap();
                        let _: Option<u64> = store.get(&format!("item/{n:08}")).unwrap();
                        if i % 10 == 0 {
                            let pending = store.outbox_pending(5).unwrap();
                            let keys: Vec<_> = pending.iter().map(|e| e.key).collect();
                            store.outbox_remove(&keys).unwrap();
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("commits and flushes deadlocked (no progress within 120 s)");
    drop(dirs);
}

#[tokio::test]
async fn a_range_scan_reads_only_keys_below_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut commit = Commit::new();
    for due in [5u64, 10, 15, 20] {
        commit
            .put(format!("timer/live/{due:020}/INC-1"), &due)
            .unwrap();
    }
    commit
        .put("timer/other/00000000000000000001/INC-2", &1u64)
        .unwrap();
    store.commit(&commit).unwrap();
    let due: Vec<(String, u64)> = store
        .scan_range("timer/live/", &format!("timer/live/{:020}", 16), 100)
        .unwrap();
    assert_eq!(due.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [5, 10, 15]);
    let limited: Vec<(String, u64)> = store.scan_range("timer/live/", "timer/live/~", 2).unwrap();
    assert_eq!(limited.len(), 2);
}

/// sled 0.34 leaves an empty `snap.<lsn>.generating` when writing a snapshot fails (a full
/// disk), and then takes it for the newest snapshot on every later open: "Read corrupted data".
/// `Store::open` removes such leftovers first (spacejam/sled#1527; found by the fault suite).
#[test]
fn a_snapshot_left_half_written_by_a_full_disk_does_not_brick_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        let mut commit = Commit::new();
        commit.put("keep/live/1", &1u64).unwrap();
        store.commit(&commit).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(store.flush()).unwrap();
    }
    std::fs::write(path.join("snap.7FFFFFFFFFFFFFFF.generating"), b"").unwrap();
    let store = Store::open_after_close(&path).expect("opens despite the leftover");
    assert_eq!(store.get::<u64>("keep/live/1").unwrap(), Some(1));
    assert!(!path.join("snap.7FFFFFFFFFFFFFFF.generating").exists());
}

#[test]
fn a_full_disk_is_told_apart_from_other_storage_errors() {
    let full = store::Error::Sled(sled::Error::Io(std::io::Error::from_raw_os_error(28)));
    assert!(full.is_out_of_space());
    let other = store::Error::Sled(sled::Error::Io(std::io::Error::from_raw_os_error(5)));
    assert!(!other.is_out_of_space());
    assert!(!store::Error::Conflict { key: "k".into() }.is_out_of_space());
}

const GROUP_DIR_ENV: &str = "MUSTER_STORE_GROUP_WRITER_DIR";
/// Set: `group_writer` runs no flushing tasks.
const GROUP_FLUSHERS_ENV: &str = "MUSTER_STORE_GROUP_WRITER_NO_FLUSHERS";

/// Child process of `every_flush_waiter_is_durable_under_sigkill`: 16 tasks committing in a
/// loop, 12 of them flushing after each commit and printing `durable <i>` once the flush for
/// commit i returned, 4 committing without flushing (as timers do); and a relay printing
/// `published <i>` for each outbox event once `flush_committed` returned for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_writer() {
    let Ok(dir) = std::env::var(GROUP_DIR_ENV) else {
        return;
    };
    // Without flushers only the relay's flushes make anything durable.
    let flushers = std::env::var(GROUP_FLUSHERS_ENV).is_err();
    let store = Store::open(&dir).unwrap();
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0.. {
                let i = round * 16 + task;
                store.commit(&commit_for(i)).unwrap();
                if task % 4 == 0 || !flushers {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                store.flush().await.unwrap();
                println!("durable {i}");
            }
        }));
    }
    let relay = store.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let pending = relay.outbox_pending(512).unwrap();
            if pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            relay
                .flush_committed(Duration::from_millis(5))
                .await
                .unwrap();
            for event in &pending {
                let payload = String::from_utf8(event.payload.clone()).unwrap();
                println!("published {}", payload.trim_start_matches("payload-"));
            }
            let keys: Vec<[u8; 8]> = pending.iter().map(|event| event.key).collect();
            relay.outbox_remove(&keys).unwrap();
        }
    }));
    for task in tasks {
        task.await.unwrap();
    }
}

/// Runs `group_writer` in a child process on `dir`, with or without its flushing tasks.
fn spawn_group_writer(dir: &std::path::Path, flushers: bool) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "group_writer", "--nocapture", "--test-threads=1"])
        .env(GROUP_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if !flushers {
        command.env(GROUP_FLUSHERS_ENV, "1");
    }
    command.spawn().unwrap()
}

/// Group commit: a flush returns once a flush that began after it was called is done, and most
/// callers share another's fsync. Every commit whose flush returned must survive a SIGKILL, and
/// so must every commit whose event the relay took as durable (`flush_committed`), including
/// commits nobody else flushed.
#[test]
fn every_flush_waiter_is_durable_under_sigkill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_group_writer(dir.path(), true);
    let stdout = child.stdout.take().unwrap();
    let mut durable = Vec::new();
    let mut published = Vec::new();
    let mut unflushed_published = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(i) = line.strip_prefix("durable ") {
            durable.push(i.parse::<u64>().unwrap());
        }
        if let Some(i) = line.strip_prefix("published ") {
            let i = i.parse::<u64>().unwrap();
            if i % 4 == 0 {
                unflushed_published += 1;
            }
            published.push(i);
        }
        if durable.len() >= 400 && unflushed_published >= 40 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        durable.len() >= 400 && unflushed_published >= 40,
        "the writer stopped early"
    );
    durable.extend(published);
    let store = Store::open(dir.path()).unwrap();
    for i in durable {
        assert_eq!(
            store.get::<u64>(&format!("item/{i:08}")).unwrap(),
            Some(i),
            "commit {i} was answered durable but is gone after SIGKILL"
        );
    }
}

/// The relay's `flush_committed` when nobody else flushes: every event it took as durable must
/// survive a SIGKILL, so it must have run the flush itself once its patience ran out.
#[test]
fn events_the_relay_took_as_durable_survive_sigkill_when_nobody_else_flushes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_group_writer(dir.path(), false);
    let stdout = child.stdout.take().unwrap();
    let mut published = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(i) = line.strip_prefix("published ") {
            published.push(i.parse::<u64>().unwrap());
        }
        if published.len() >= 400 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(published.len() >= 400, "the writer stopped early");
    let store = Store::open(dir.path()).unwrap();
    for i in published {
        assert_eq!(
            store.get::<u64>(&format!("item/{i:08}")).unwrap(),
            Some(i),
            "commit {i}'s event was published but the commit is gone after SIGKILL"
        );
    }
}

#[test]
fn stored_values_visited_in_key_order_tell_whether_their_bytes_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut commit = Commit::new();
    for (key, value) in [
        ("u/b", "two"),
        ("u/a", "one"),
        ("u/c", "three"),
        ("v/a", "other"),
    ] {
        commit.put(key, &value.repeat(20)).unwrap();
    }
    store.commit(&commit).unwrap();
    let visit = || {
        let mut seen = Vec::new();
        store
            .visit_prefix_stored("u/", |key, value| {
                seen.push((key.to_string(), value));
                Ok(())
            })
            .unwrap();
        seen
    };
    let first = visit();
    let keys: Vec<&str> = first.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["u/a", "u/b", "u/c"]);
    let again = visit();
    assert!(
        first
            .iter()
            .zip(&again)
            .all(|((_, a), (_, b))| a.same_bytes(b))
    );

    // One value rewritten with other bytes, one with the same bytes again.
    let mut commit = Commit::new();
    commit.put("u/a", &"changed".repeat(20)).unwrap();
    commit.put("u/b", &"two".repeat(20)).unwrap();
    store.commit(&commit).unwrap();
    let after = visit();
    assert!(!first[0].1.same_bytes(&after[0].1));
    assert!(first[1].1.same_bytes(&after[1].1));
    assert!(first[2].1.same_bytes(&after[2].1));
    assert_eq!(
        after[0].1.as_bytes(),
        store.get_raw("u/a").unwrap().unwrap().as_slice()
    );
    // What was handed out earlier still holds what was stored then.
    let old: String = store::decode_value("u/a", first[0].1.as_bytes()).unwrap();
    assert_eq!(old, "one".repeat(20));
}

#[tokio::test]
async fn census_counts_records_and_bytes_by_tree_and_key_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 1..=3 {
        store.commit(&commit_for(i)).unwrap();
    }
    let rows = store.census().unwrap();
    let row = |tree: &str, prefix: &str| {
        rows.iter()
            .find(|row| row.tree == tree && row.prefix == prefix)
            .unwrap_or_else(|| panic!("no row for {tree} {prefix} in {rows:?}"))
    };
    let items = row("state", "item/");
    assert_eq!(items.records, 3);
    assert_eq!(items.key_bytes, 3 * "item/00000001".len() as u64);
    let encoded = store::encode_value(&1u64).unwrap().len() as u64;
    assert_eq!(items.value_bytes, 3 * encoded);
    assert_eq!(row("state", "mirror/").records, 3);
    // Message ids have no `/`, and the outbox's keys are big-endian numbers: one row each.
    assert_eq!(row("processed", "(other)").records, 3);
    assert_eq!(row("outbox", "(other)").records, 3);
    assert!(
        !rows
            .iter()
            .any(|row| row.tree == "state" && row.prefix == "(other)"),
        "{rows:?}"
    );
}

/// `outbox_len` is a counter kept by the commits and the relay's removals; it equals the number
/// of events in the outbox tree through applied, redelivered and conflicting commits, commits
/// without events, removals, and a reopen.
#[tokio::test]
async fn the_outbox_count_follows_commits_and_removals_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let in_tree = |store: &Store| store.outbox_pending(usize::MAX).unwrap().len();
    let oldest = |store: &Store, limit: usize| -> Vec<[u8; 8]> {
        let pending = store.outbox_pending(limit).unwrap();
        pending.iter().map(|event| event.key).collect()
    };
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox_len(), 0);
        for i in 1..=30 {
            store.commit(&commit_for(i)).unwrap();
        }
        let mut two = Commit::new();
        two.event("muster.live.incident.a.graded", b"a".to_vec())
            .event("muster.live.incident.b.graded", b"b".to_vec());
        store.commit(&two).unwrap();
        // Redelivered: nothing added.
        assert_eq!(
            store.commit(&commit_for(3)).unwrap(),
            Committed::AlreadyProcessed
        );
        // A lost compare-and-swap: nothing added.
        let mut conflicting = Commit::new();
        conflicting
            .expect_raw("item/00000001", Some(b"not what is stored".to_vec()))
            .event("muster.live.incident.c.graded", b"c".to_vec());
        assert!(matches!(
            store.commit(&conflicting),
            Err(store::Error::Conflict { .. })
        ));
        // No events: nothing added.
        let mut state_only = Commit::new();
        state_only.put("item/state-only", &1u64).unwrap();
        store.commit(&state_only).unwrap();
        assert_eq!(store.outbox_len(), 32);
        assert_eq!(store.outbox_len(), in_tree(&store));

        store.outbox_remove(&oldest(&store, 12)).unwrap();
        assert_eq!(store.outbox_len(), 20);
        assert_eq!(store.outbox_len(), in_tree(&store));
        store.flush().await.unwrap();
    }
    let store = Store::open_after_close(dir.path()).unwrap();
    assert_eq!(store.outbox_len(), 20, "counted again at open");
    assert_eq!(store.outbox_len(), in_tree(&store));
    store.outbox_remove(&oldest(&store, usize::MAX)).unwrap();
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(in_tree(&store), 0);
}

#[test]
fn an_absorbed_commit_applies_both_in_order_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.commit(&commit_for(1)).unwrap();
    // Two commits of a run: the second was built on what the first writes to item/00000002.
    let mut run = commit_for(2);
    run.expect_raw("item/00000002", None);
    let mut later = Commit::new();
    later.put("item/00000002", &20u64).unwrap();
    // Met only once the first commit is applied: dropped, the run's first expectation holds.
    later.expect_raw("item/00000002", store::encode_value(&2u64).ok());
    later.event("muster.live.incident.2.closed", b"later".to_vec());
    later.processed("msg-2b");
    run.absorb(later);
    let Committed::Applied { msg_ids } = store.commit(&run).unwrap() else {
        panic!("the run did not apply")
    };
    assert_eq!(msg_ids.len(), 2, "both commits' events, in order");
    assert_eq!(store.get::<u64>("item/00000002").unwrap(), Some(20));
    assert_eq!(store.get::<u64>("mirror/00000002").unwrap(), Some(4));
    assert!(store.is_processed("msg-2").unwrap() && store.is_processed("msg-2b").unwrap());
    let subjects: Vec<String> = store
        .outbox_pending(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|event| event.subject)
        .collect();
    assert_eq!(
        subjects[1..],
        [
            "muster.live.incident.2.graded".to_string(),
            "muster.live.incident.2.closed".to_string()
        ]
    );

    // A run holding a message processed already applies nothing: its messages are handled again.
    let mut run = commit_for(3);
    run.absorb(commit_for(1));
    assert_eq!(store.commit(&run).unwrap(), Committed::AlreadyProcessed);
    assert_eq!(store.get::<u64>("item/00000003").unwrap(), None);
    assert!(!store.is_processed("msg-3").unwrap());
    // An expectation of the later commit on a key the run does not write is kept.
    let mut run = commit_for(4);
    let mut later = commit_for(5);
    later.expect_raw("item/00000001", None);
    run.absorb(later);
    assert!(matches!(store.commit(&run), Err(Error::Conflict { key }) if key == "item/00000001"));
    assert_eq!(store.get::<u64>("item/00000004").unwrap(), None);
}

#[test]
fn a_write_watch_names_every_committed_key_under_its_prefix_or_asks_for_a_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let watch = store.watch_writes("unit/drill.a/");
    assert_eq!(watch.take(), None, "the first take asks for a full read");
    assert_eq!(watch.take(), Some(Default::default()));

    let mut commit = Commit::new();
    commit.put("unit/drill.a/U2", &2u8).unwrap();
    commit.put("unit/drill.a/U1", &1u8).unwrap();
    commit.put("unit/drill.ab/U1", &1u8).unwrap();
    commit.put("incident/drill.a/INC-1", &1u8).unwrap();
    store.commit(&commit).unwrap();
    // Through a clone of the store too (the services share clones).
    let mut commit = Commit::new();
    commit.delete("unit/drill.a/U3");
    store.clone().commit(&commit).unwrap();
    let taken = watch.take().unwrap();
    assert_eq!(
        taken.into_iter().collect::<Vec<_>>(),
        ["unit/drill.a/U1", "unit/drill.a/U2", "unit/drill.a/U3"]
    );

    // A commit that does not apply writes nothing, and names nothing.
    let mut refused = Commit::new();
    refused.put("unit/drill.a/U4", &4u8).unwrap();
    refused.expect_raw("unit/drill.a/U1", None);
    assert!(matches!(
        store.commit(&refused),
        Err(Error::Conflict { .. })
    ));
    let mut processed = Commit::new();
    processed.put("unit/drill.a/U5", &5u8).unwrap();
    processed.processed("msg-1");
    store.commit(&processed).unwrap();
    let mut again = Commit::new();
    again.put("unit/drill.a/U6", &6u8).unwrap();
    again.processed("msg-1");
    assert_eq!(store.commit(&again).unwrap(), Committed::AlreadyProcessed);
    assert_eq!(
        watch.take().unwrap().into_iter().collect::<Vec<_>>(),
        ["unit/drill.a/U5"]
    );

    // Deleting the namespace is one batch the watch does not itemise: read everything again.
    store.delete_drill_namespace("drill.a").unwrap();
    assert_eq!(watch.take(), None);
    assert_eq!(watch.take(), Some(Default::default()));
    // A dropped watch is forgotten.
    drop(watch);
    store.commit(&commit_for(7)).unwrap();
}
