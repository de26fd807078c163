//! The sled adapter every service reaches storage through.
//!
//! A service owns one [`Store`]: a sled database with three trees.
//! - `state`: the service's own records under string keys (`incident/live/<id>`, ...);
//! - `outbox`: events waiting for the relay to publish them to JetStream;
//! - `processed`: the ids of bus messages whose effect has been committed;
//!
//! and `meta` for the database itself: instance id, schema version (checked and migrated by
//! [`Store::open`], see `migrate.rs`), id offset (set by a restore), the markers of the derived
//! indexes that are built (`index/<name>`, see `index.rs`: entries in `state` that every commit
//! keeps in step with a kind of record, such as intake's open incidents). [`Store::snapshot_to`] and
//! [`Store::restore`] copy all four as one checksummed file (`snapshot.rs`).
//!
//! [`Store::commit`] applies a [`Commit`] — state writes, compare-and-swap checks, outbox events
//! and the processed message id — in one sled transaction: all of it or none of it. A commit is
//! durable only after [`Store::flush`]; callers commit a group, flush once, then acknowledge the
//! group (group commit), because one fsync costs about as much as a thousand commits.
//!
//! sled 0.34 guards every tree of every database in the process with ONE global reader-writer lock
//! once any transaction or batch has run. A flush holds it for reading while it waits for sled's
//! I/O threads; a transaction waiting to write then blocks new readers, among them further flushes
//! that occupy sled's small I/O pool, and the process deadlocks (seen with 24 concurrent reports
//! in one process). So this module keeps writers and flushes apart with its own process-wide
//! gate: transactions and batches take it exclusively, a flush takes it shared, only one flush
//! runs at a time, and it runs on a blocking thread rather than on sled's I/O pool.
//!
//! Values carry a format version and a CRC32 so that a torn or foreign value is reported as
//! corruption instead of being silently misread (sled 0.34 is beta software).

pub mod audit;
mod codec;
mod index;
mod migrate;
mod rebuild;
mod retention;
mod snapshot;
pub mod trace;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

pub use codec::{decode_value, encode_value};
pub use index::{DeriveFn, Index, IndexOpened, IndexWrite};
pub use migrate::{MIGRATIONS, Migration, MigrationTrees};
pub use retention::DrillNamespace;
pub use snapshot::{Restored, SNAPSHOT_FORMAT_VERSION, SnapshotSummary, TreeSummary};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sled database at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value under {key:?} is corrupt: {problem}")]
    Corrupt { key: String, problem: String },
    #[error("cannot encode value for {key:?}: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    #[error("compare-and-swap failed on {key:?}: the stored value changed")]
    Conflict { key: String },
    #[error(
        "the database at {path} has schema version {found}, but this build of muster reads \
         version {supported} at most: it was written by a newer muster; run that version, or \
         restore a backup taken by this one"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "migrating the database at {path} from schema version {from} to {to} failed ({problem}); \
         nothing of this step was written, the database is still at version {from}"
    )]
    Migration {
        path: PathBuf,
        from: u32,
        to: u32,
        problem: String,
    },
    #[error("snapshot {path}: {problem}")]
    Snapshot { path: PathBuf, problem: String },
    #[error(
        "the store could not write ({reason}); sled refuses every write until the database is \
         reopened, so the service stops for its supervisor to start it again (sled then recovers \
         what reached the disk)"
    )]
    Failed { reason: String },
    #[error(
        "{namespace:?} is not a drill namespace (`drill.<id>`); retention never deletes live data"
    )]
    NotADrill { namespace: String },
    #[error("restore target {path}: {problem}")]
    RestoreTarget { path: PathBuf, problem: String },
}

impl Error {
    /// Whether the disk under the store is full (ENOSPC): the write did not happen and can be
    /// retried once space is freed.
    pub fn is_out_of_space(&self) -> bool {
        let io = match self {
            Error::Sled(sled::Error::Io(io))
            | Error::Open {
                source: sled::Error::Io(io),
                ..
            } => io,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28)
    }
}

/// A stored value as [`Store::visit_prefix_stored`] hands it out: shared with the store's page
/// cache, not copied. Immutable while held.
#[derive(Clone)]
pub struct StoredValue(sled::IVec);

impl StoredValue {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when both hold the same bytes. A value the store has not rewritten since `self` was
    /// read is the same allocation, which answers without comparing the bytes; otherwise they
    /// are compared (`self` is kept alive, so its allocation cannot have been reused).
    pub fn same_bytes(&self, other: &StoredValue) -> bool {
        let (a, b) = (self.as_bytes(), other.as_bytes());
        (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
    }
}

impl std::fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredValue({} bytes)", self.0.len())
    }
}

/// A pending event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The sled key of the entry; removal after publishing uses it.
    pub key: [u8; 8],
    /// `Nats-Msg-Id`: `<store instance>-<sequence>`, stable across republishing.
    pub msg_id: String,
    pub subject: String,
    pub payload: Vec<u8>,
    /// W3C trace context of the handler that committed it, published as `traceparent`.
    pub traceparent: Option<String>,
}

/// What one commit writes. Build it with the methods, then hand it to [`Store::commit`].
#[derive(Debug, Default, Clone)]
pub struct Commit {
    writes: Vec<(String, Option<Vec<u8>>)>,
    expectations: Vec<(String, Option<Vec<u8>>)>,
    /// Subject, payload, and the `traceparent` of the trace the commit was built in.
    events: Vec<(String, Vec<u8>, Option<String>)>,
    /// One id for a message's commit; several for a run's ([`Commit::absorb`]).
    processed_msg_ids: Vec<String>,
}

impl Commit {
    pub fn new() -> Commit {
        Commit::default()
    }

    /// Writes `value` under `key` in the state tree.
    pub fn put<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<&mut Self, Error> {
        let key = key.into();
        let bytes = encode_value(value).map_err(|source| Error::Encode {
            key: key.clone(),
            source,
        })?;
        self.writes.push((key, Some(bytes)));
        Ok(self)
    }

    /// Writes `bytes`, already encoded with [`encode_value`], under `key`: for a caller that
    /// keeps the encoded form (to compare with [`Store::get_raw`] later) without encoding twice.
    pub fn put_encoded(&mut self, key: impl Into<String>, bytes: Vec<u8>) -> &mut Self {
        self.writes.push((key.into(), Some(bytes)));
        self
    }

    /// Removes `key` from the state tree.
    pub fn delete(&mut self, key: impl Into<String>) -> &mut Self {
        self.writes.push((key.into(), None));
        self
    }

    /// The commit applies only if `key` currently holds exactly `current` (raw stored bytes, as
    /// returned by [`Store::get_raw`]), `None` meaning absent. This is the compare-and-swap that
    /// keeps a unit from being booked twice even with several writers.
    pub fn expect_raw(&mut self, key: impl Into<String>, current: Option<Vec<u8>>) -> &mut Self {
        self.expectations.push((key.into(), current));
        self
    }

    /// Adds an event to the outbox, to be published on `subject`, with the current trace (see
    /// [`trace`]) as its `traceparent`.
    pub fn event(&mut self, subject: impl Into<String>, payload: Vec<u8>) -> &mut Self {
        let traceparent = trace::current().map(|context| context.traceparent());
        self.events.push((subject.into(), payload, traceparent));
        self
    }

    /// Records that the bus message `msg_id` has been handled. If it already was, the whole commit
    /// is skipped and [`Committed::AlreadyProcessed`] is returned: redelivery is harmless.
    pub fn processed(&mut self, msg_id: impl Into<String>) -> &mut Self {
        self.processed_msg_ids.push(msg_id.into());
        self
    }

    /// Appends `later`, built after this commit on the state this commit leaves, so that applying
    /// the result applies both in order, in one transaction: writes and events in order (a later
    /// write of a key wins), and both commits' processed ids (if any of them is processed
    /// already, nothing applies). `later`'s expectation on a key this commit writes is dropped:
    /// it was met by construction, provided `later` was built from what this commit writes
    /// there, not from the store (see `bus::Handler::begin_run`). Its other expectations are
    /// kept, unless this commit expects the same key already.
    ///
    /// sled 0.34 writes and syncs two log buffers of its own for every transaction, so a
    /// consumer that applies a run of messages as one commit saves two writes per message.
    pub fn absorb(&mut self, later: Commit) {
        let Commit {
            writes,
            expectations,
            events,
            processed_msg_ids,
        } = later;
        if !expectations.is_empty() {
            let seen: std::collections::HashSet<&str> = self
                .writes
                .iter()
                .map(|(key, _)| key.as_str())
                .chain(self.expectations.iter().map(|(key, _)| key.as_str()))
                .collect();
            let kept: Vec<_> = expectations
                .into_iter()
                .filter(|(key, _)| !seen.contains(key.as_str()))
                .collect();
            self.expectations.extend(kept);
        }
        self.writes.extend(writes);
        self.events.extend(events);
        self.processed_msg_ids.extend(processed_msg_ids);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty() && self.processed_msg_ids.is_empty()
    }
}

/// The outcome of a commit that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Applied; these are the `Nats-Msg-Id`s of the outbox events it added, in order.
    Applied { msg_ids: Vec<String> },
    /// The processed message id was already recorded; nothing was written.
    AlreadyProcessed,
}

/// sled's page cache per store, in bytes, unless `MUSTER_SLED_CACHE_MB` says otherwise. sled's
/// own default is 1 GiB per database, so a service reading through a store of a million
/// incidents grew towards a gigabyte (three in `muster up`'s one process); the hot set (open
/// incidents, recent records, units, timers) fits in far less, and older records are read from
/// the OS page cache when asked for.
pub const SLED_CACHE_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;

/// The page cache size in effect: `MUSTER_SLED_CACHE_MB` (megabytes, at least 8) or the default.
pub fn sled_cache_bytes() -> u64 {
    std::env::var("MUSTER_SLED_CACHE_MB")
        .ok()
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(SLED_CACHE_BYTES_DEFAULT, |mb| mb.max(8) * 1024 * 1024)
}

/// Opens the sled database itself, with the configuration every store uses.
fn open_db(path: &Path) -> sled::Result<sled::Db> {
    remove_unfinished_snapshots(path);
    sled::Config::new()
        .path(path)
        .cache_capacity(sled_cache_bytes())
        // Durability comes from explicit flushes after each group commit, not from a timer.
        .flush_every_ms(None)
        .open()
}

/// Whether a service checkpoints its sled database when it stops (see [`checkpoint`]):
/// `MUSTER_SLED_CHECKPOINT_ON_EXIT` = `0`, `false`, `no` or `off` turns it off; on otherwise.
pub fn checkpoint_on_exit() -> bool {
    std::env::var("MUSTER_SLED_CHECKPOINT_ON_EXIT").map_or(true, |value| {
        !matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        )
    })
}

/// Opens the database in `path` once more and closes it, for the snapshot sled writes on open;
/// returns how long that took. Call it after every handle on the database is gone (a service
/// that has drained): sled locks the directory, and an open while a handle lives fails.
///
/// sled 0.34 writes the snapshot of its page table only while opening a database (its
/// `snapshot_after_ops` setting does nothing since 0.31), after replaying the log written since
/// the previous snapshot. So the first start after a long run replays all of that run's writes
/// (gigabytes after a million incidents: 6–13 s) unless the run ended with this: the replay then
/// happens while stopping, from a warm OS page cache, and the next start reads a fresh snapshot.
/// A process that dies without stopping (SIGKILL, power loss) still leaves the replay to the
/// next start.
pub fn checkpoint(path: &Path) -> Result<std::time::Duration, Error> {
    let started = std::time::Instant::now();
    let db = while_locked(|| open_db(path)).map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    drop(db);
    Ok(started.elapsed())
}

/// Runs `open` again while it fails on sled's directory lock, for at most 5 s: sled's threads
/// let go of the lock a moment after the last handle on a database is dropped.
fn while_locked<T>(mut open: impl FnMut() -> sled::Result<T>) -> sled::Result<T> {
    let mut attempts = 0;
    loop {
        match open() {
            Err(sled::Error::Io(io))
                if attempts < 100 && io.to_string().contains("could not acquire lock") =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Deletes `snap.<lsn>.generating` files: sled 0.34 writes a snapshot there and renames it when
/// complete, but a failed write (a full disk) leaves the file behind, empty or torn, and every
/// later open takes it for the newest snapshot and fails with "Read corrupted data"
/// (spacejam/sled#1527). The finished snapshots and the log are untouched, so nothing is lost.
fn remove_unfinished_snapshots(path: &Path) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => eprintln!(
                    "store: removed the unfinished sled snapshot {} (left by a failed write)",
                    entry.path().display()
                ),
                Err(error) => eprintln!(
                    "store: cannot remove the unfinished sled snapshot {}: {error}",
                    entry.path().display()
                ),
            }
        }
    }
}

/// Keeps sled writers (transactions, batches) and flushes apart, process-wide: see the module docs.
static SLED_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());
/// One flush at a time, process-wide; a flush makes every earlier commit of its database durable,
/// so callers queued behind one find little left to write.
static FLUSH_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn gate_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    SLED_GATE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn gate_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SLED_GATE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const INSTANCE_KEY: &[u8] = b"instance_id";
const SCHEMA_KEY: &[u8] = b"schema_version";
/// Added to sled's id generator: a restored database starts its ids above every id the snapshot
/// holds (sled's own generator starts again at 0 in a new directory).
const ID_OFFSET_KEY: &[u8] = b"id_offset";
/// The trees a snapshot holds, in file order.
const TREES: [&str; 5] = ["meta", "state", "outbox", "processed", "audit"];
/// The layout version of the trees; bumped with a migration when keys or values change shape.
pub const SCHEMA_VERSION: u32 = 2;

/// A run of commits with the writer gate held ([`Store::session`]).
pub struct CommitSession<'a> {
    store: &'a Store,
    _gate: std::sync::RwLockWriteGuard<'static, ()>,
}

impl CommitSession<'_> {
    /// [`Store::commit`] inside the session.
    pub fn commit(&self, commit: &Commit) -> Result<Committed, Error> {
        let derived = self.store.derived_writes(&commit.writes, true)?;
        self.store.commit_in_gate(commit, derived)
    }

    pub fn store(&self) -> &Store {
        self.store
    }
}

/// One service's database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    state: sled::Tree,
    outbox: sled::Tree,
    processed: sled::Tree,
    meta: sled::Tree,
    /// The hash-chained audit trail (`audit.rs`), appended outside commits.
    audit: sled::Tree,
    audit_append: Arc<std::sync::Mutex<()>>,
    audit_dirty: Arc<tokio::sync::Notify>,
    instance_id: Arc<str>,
    id_offset: u64,
    outbox_signal: Arc<tokio::sync::Notify>,
    /// Events in the outbox: counted once at open, then kept by the commits that add events and
    /// the relay's removals (the only writers of the outbox), so [`Store::outbox_len`] does not
    /// walk the tree (36 ms at 50,000 events, on every request that checks backpressure).
    outbox_count: Arc<std::sync::atomic::AtomicUsize>,
    flushes: Arc<FlushCounters>,
    /// Derived indexes every commit keeps in step (`index.rs`).
    indexes: Arc<std::sync::RwLock<Vec<Index>>>,
    /// Indexes built in this database but not registered here: name and record prefix.
    unregistered_indexes: Arc<std::sync::RwLock<Vec<(String, String)>>>,
    /// The first write error (see [`Store::failed`]); `None` while the store is healthy.
    failure: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// The live [`WriteWatch`]es: every write path to the state tree tells them what it wrote.
    watches: Arc<std::sync::Mutex<Vec<std::sync::Weak<std::sync::Mutex<WatchState>>>>>,
}

/// The keys written under a prefix of the state tree since they were last taken
/// ([`Store::watch_writes`]): for a reader that keeps decoded records between calls and needs to
/// know which of them changed without walking them all (dispatch's unit board).
///
/// Every write path of the state tree feeds it: each commit (under the writer gate, so a reader
/// holding a [`CommitSession`] sees every commit applied before it), and the batch writers that
/// do not itemise their keys (drill-namespace retention, index builds), which mark it as
/// "read everything again". So does a commit that failed in sled (it may be applied in memory).
pub struct WriteWatch {
    prefix: Arc<str>,
    state: Arc<std::sync::Mutex<WatchState>>,
}

struct WatchState {
    prefix: Arc<str>,
    keys: std::collections::BTreeSet<String>,
    /// Something under the prefix may have changed without being itemised (and at the start).
    everything: bool,
}

impl WriteWatch {
    /// The keys written under the prefix since the last call, in key order, or `None` when the
    /// reader must read everything under the prefix again (the first call, and after a write
    /// that was not itemised).
    pub fn take(&self) -> Option<std::collections::BTreeSet<String>> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys = std::mem::take(&mut state.keys);
        if std::mem::replace(&mut state.everything, false) {
            None
        } else {
            Some(keys)
        }
    }

    /// The prefix watched.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Numbers of this database's flushes begun and completed, for group commit ([`Store::flush`]).
#[derive(Default)]
struct FlushCounters {
    started: std::sync::atomic::AtomicU64,
    completed: std::sync::atomic::AtomicU64,
    /// The number of the first flush that covers every commit applied so far: set inside the
    /// gate by each commit, so it is current for anyone who has seen the commit's effects
    /// (see [`Store::flush_committed`]).
    covering: std::sync::atomic::AtomicU64,
    /// Woken after every flush.
    done: tokio::sync::Notify,
}

impl Store {
    /// Opens (or creates) the database in `path`.
    ///
    /// The schema version in `meta/schema_version` is checked: a database written by a newer
    /// build is refused ([`Error::SchemaTooNew`]), an older one is brought up to
    /// [`SCHEMA_VERSION`] by the steps in [`MIGRATIONS`], each in one transaction.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, Error> {
        let path = path.as_ref();
        let open_error = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let db = open_db(path).map_err(open_error)?;
        Store::from_db(path, db)
    }

    /// [`Store::open`] of a database another handle in this process has just closed: waits (at
    /// most 5 s) for sled's threads to release the directory's lock.
    pub fn open_after_close(path: impl AsRef<Path>) -> Result<Store, Error> {
        let path = path.as_ref();
        let db = while_locked(|| open_db(path)).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::from_db(path, db)
    }

    /// The checks and migrations of [`Store::open`] on a database already open.
    fn from_db(path: &Path, db: sled::Db) -> Result<Store, Error> {
        let open_error = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let state = db.open_tree("state").map_err(open_error)?;
        let outbox = db.open_tree("outbox").map_err(open_error)?;
        let processed = db.open_tree("processed").map_err(open_error)?;
        let meta = db.open_tree("meta").map_err(open_error)?;
        let audit = db.open_tree("audit").map_err(open_error)?;
        let had_instance = meta.contains_key(INSTANCE_KEY)?;
        let mut dirty = false;
        let found = match meta.get(SCHEMA_KEY)? {
            Some(bytes) => <[u8; 4]>::try_from(bytes.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| Error::Corrupt {
                    key: "meta/schema_version".into(),
                    problem: format!("{} bytes, expected 4", bytes.len()),
                })?,
            // A database from before the key existed holds data; a new one holds nothing.
            None if had_instance
                || !state.is_empty()
                || !outbox.is_empty()
                || !processed.is_empty() =>
            {
                0
            }
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                dirty = true;
                SCHEMA_VERSION
            }
        };
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            migrate::run(path, found, (&state, &outbox, &processed, &meta))?;
            dirty = true;
        }
        let instance_id: Arc<str> = match meta.get(INSTANCE_KEY)? {
            Some(bytes) => String::from_utf8_lossy(&bytes).into(),
            None => {
                let id = codec::random_hex_id();
                meta.insert(INSTANCE_KEY, id.as_bytes())?;
                dirty = true;
                id.into()
            }
        };
        let id_offset = match meta.get(ID_OFFSET_KEY)? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt {
                    key: "meta/id_offset".into(),
                    problem: format!("{} bytes, expected 8", bytes.len()),
                })?,
            None => 0,
        };
        if dirty {
            let _gate = gate_shared();
            db.flush()?;
        }
        let unregistered_indexes = index::built_indexes(&meta)?;
        let outbox_len = outbox.len();
        Ok(Store {
            db,
            state,
            outbox,
            processed,
            meta,
            audit,
            audit_append: Arc::new(std::sync::Mutex::new(())),
            audit_dirty: Arc::new(tokio::sync::Notify::new()),
            instance_id,
            id_offset,
            outbox_signal: Arc::new(tokio::sync::Notify::new()),
            outbox_count: Arc::new(std::sync::atomic::AtomicUsize::new(outbox_len)),
            flushes: Arc::default(),
            indexes: Arc::default(),
            unregistered_indexes: Arc::new(std::sync::RwLock::new(unregistered_indexes)),
            failure: Arc::new(tokio::sync::watch::Sender::new(None)),
            watches: Arc::default(),
        })
    }

    /// The random id of this database, the prefix of every `Nats-Msg-Id` it produces, so that a
    /// rebuilt database never reuses a message id that JetStream would drop as a duplicate.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// A new number, unique and increasing for the life of this database (sled's id generator).
    pub fn generate_id(&self) -> Result<u64, Error> {
        Ok(self.id_offset + self.db.generate_id()?)
    }

    /// Reads and decodes a state value.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.state.get(key.as_bytes())? {
            Some(bytes) => decode_value(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a state value is stored under `key`, copying nothing.
    pub fn contains_key(&self, key: &str) -> Result<bool, Error> {
        Ok(self.state.contains_key(key.as_bytes())?)
    }

    /// Reads the raw stored bytes of a state value, for [`Commit::expect_raw`].
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.state.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Decodes every value whose key starts with `prefix`, in key order.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, Error> {
        self.scan(prefix, usize::MAX, false)
    }

    /// Decodes the values whose key starts with `prefix` one at a time, in key order, holding none
    /// of the others: a count or a filter over every record of a kind (a million incidents) in
    /// constant memory. `T` may be a view that names only the fields it needs; serde skips the
    /// rest without building them.
    pub fn iter_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> impl Iterator<Item = Result<(String, T), Error>> + use<T> {
        self.state.scan_prefix(prefix.as_bytes()).map(|item| {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let value = decode_value(&key, &value)?;
            Ok((key, value))
        })
    }

    /// Hands `visit` the key and the stored value of every key that starts with `prefix`, in key
    /// order, decoding and copying nothing: for a reader that keeps decoded records between
    /// calls and decodes only the values that changed (dispatch's unit board; see
    /// [`StoredValue::same_bytes`]).
    pub fn visit_prefix_stored(
        &self,
        prefix: &str,
        mut visit: impl FnMut(&str, StoredValue) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for item in self.state.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            visit(&String::from_utf8_lossy(&key), StoredValue(value))?;
        }
        Ok(())
    }

    /// The stored value of `key`, shared with the store's page cache ([`StoredValue`]).
    pub fn get_stored(&self, key: &str) -> Result<Option<StoredValue>, Error> {
        Ok(self.state.get(key.as_bytes())?.map(StoredValue))
    }

    /// Starts telling which keys under `prefix` of the state tree are written ([`WriteWatch`]).
    /// Its first [`WriteWatch::take`] says "read everything".
    pub fn watch_writes(&self, prefix: &str) -> WriteWatch {
        let prefix: Arc<str> = prefix.into();
        let state = Arc::new(std::sync::Mutex::new(WatchState {
            prefix: prefix.clone(),
            keys: Default::default(),
            everything: true,
        }));
        let mut watches = self
            .watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        watches.retain(|watch| watch.strong_count() > 0);
        watches.push(Arc::downgrade(&state));
        WriteWatch { prefix, state }
    }

    /// Tells the live watches about written keys; `None`: anything may have changed.
    pub(crate) fn note_writes(&self, keys: Option<&mut dyn Iterator<Item = &str>>) {
        let watches = self
            .watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if watches.is_empty() {
            return;
        }
        let live: Vec<_> = watches
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        drop(watches);
        match keys {
            None => {
                for watch in &live {
                    watch
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .everything = true;
                }
            }
            Some(keys) => {
                let keys: Vec<&str> = keys.collect();
                for watch in &live {
                    let mut watch = watch
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    for key in &keys {
                        if key.starts_with(&*watch.prefix) {
                            watch.keys.insert(key.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Decodes the values with keys in `[from, until)`, in key order, at most `limit`: for keys that
    /// sort by time (`timer/<ns>/<due ms, zero-padded>/...`) this reads only what is due.
    pub fn scan_range<T: DeserializeOwned>(
        &self,
        from: &str,
        until: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        let mut out = Vec::new();
        for item in self
            .state
            .range(from.as_bytes()..until.as_bytes())
            .take(limit)
        {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let value = decode_value(&key, &value)?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Like [`Store::scan_prefix`], last key first, at most `limit` values.
    pub fn scan_prefix_rev<T: DeserializeOwned>(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.scan(prefix, limit, true)
    }

    fn scan<T: DeserializeOwned>(
        &self,
        prefix: &str,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(String, T)>, Error> {
        let iter = self.state.scan_prefix(prefix.as_bytes());
        let mut out = Vec::new();
        let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, Error> {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let value = decode_value(&key, &value)?;
            out.push((key, value));
            Ok(out.len() < limit)
        };
        if reverse {
            for item in iter.rev() {
                if !push(item)? {
                    break;
                }
            }
        } else {
            for item in iter {
                if !push(item)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// True when the bus message `msg_id` has been handled (its effect is committed).
    pub fn is_processed(&self, msg_id: &str) -> Result<bool, Error> {
        Ok(self.processed.contains_key(msg_id.as_bytes())?)
    }

    /// Applies `commit` atomically. Not yet durable: call [`Store::flush`] before acknowledging.
    pub fn commit(&self, commit: &Commit) -> Result<Committed, Error> {
        // Decoded before the gate: other writers need not wait for it.
        let derived = self.derived_writes(&commit.writes, false)?;
        let _gate = gate_exclusive();
        self.commit_in_gate(commit, derived)
    }

    /// Holds the process-wide writer gate for a run of commits ([`CommitSession::commit`]), so
    /// that no flush lands between them. A consumer group commits each message in its own
    /// transaction, and sled's transactions wait for any flush in progress: with reports and
    /// relays flushing all the time, each commit of a group used to wait out an fsync. Hold a
    /// session for a few milliseconds at most (every other writer and flush in the process waits
    /// for it), never across an `.await`, and do not commit through the [`Store`] itself while
    /// holding one (the gate is not reentrant).
    pub fn session(&self) -> CommitSession<'_> {
        CommitSession {
            store: self,
            _gate: gate_exclusive(),
        }
    }

    /// The body of [`Store::commit`], with the gate held by the caller.
    fn commit_in_gate(
        &self,
        commit: &Commit,
        derived: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<Committed, Error> {
        let instance_id = &*self.instance_id;
        let id_offset = self.id_offset;
        // Any flush numbered above those begun so far starts after this commit (it needs the
        // gate, which this commit holds until it is applied).
        self.flushes.covering.fetch_max(
            self.flushes
                .started
                .load(std::sync::atomic::Ordering::SeqCst)
                + 1,
            std::sync::atomic::Ordering::SeqCst,
        );
        let result = (&self.state, &self.outbox, &self.processed).transaction(
            |(state, outbox, processed)| {
                for msg_id in &commit.processed_msg_ids {
                    if processed.get(msg_id.as_bytes())?.is_some() {
                        return Ok(Committed::AlreadyProcessed);
                    }
                }
                for (key, expected) in &commit.expectations {
                    let current = state.get(key.as_bytes())?;
                    if current.as_deref() != expected.as_deref() {
                        return Err(ConflictableTransactionError::Abort(key.clone()));
                    }
                }
                // Blind writes (patched sled): `insert` and `remove` would read each old value.
                state.reserve(commit.writes.len() + derived.len());
                for (key, value) in commit.writes.iter().chain(&derived) {
                    match value {
                        Some(bytes) => state.set(key.as_bytes(), bytes.as_slice()),
                        None => state.unset(key.as_bytes()),
                    }
                }
                let mut msg_ids = Vec::with_capacity(commit.events.len());
                for (subject, payload, traceparent) in &commit.events {
                    let sequence = id_offset + outbox.generate_id()?;
                    let msg_id = format!("{instance_id}-{sequence}");
                    let record =
                        codec::encode_outbox(&msg_id, subject, traceparent.as_deref(), payload);
                    outbox.set(&sequence.to_be_bytes(), record);
                    msg_ids.push(msg_id);
                }
                for msg_id in &commit.processed_msg_ids {
                    processed.set(msg_id.as_bytes(), &[]);
                }
                Ok(Committed::Applied { msg_ids })
            },
        );
        match &result {
            Ok(Committed::Applied { .. }) => self.note_writes(Some(
                &mut commit
                    .writes
                    .iter()
                    .chain(&derived)
                    .map(|(key, _)| key.as_str()),
            )),
            // sled may have applied a refused commit in memory.
            Err(TransactionError::Storage(_)) => self.note_writes(None),
            _ => {}
        }
        match result {
            Ok(committed) => {
                if let Committed::Applied { msg_ids } = &committed
                    && !msg_ids.is_empty()
                {
                    self.outbox_count
                        .fetch_add(msg_ids.len(), std::sync::atomic::Ordering::SeqCst);
                    self.outbox_signal.notify_one();
                }
                Ok(committed)
            }
            Err(TransactionError::Abort(key)) => Err(Error::Conflict { key }),
            Err(TransactionError::Storage(error)) => Err(self.note_write_error(Error::Sled(error))),
        }
    }

    /// Records a write that failed with an I/O error (a full disk, a failing device) as the
    /// store's failure, and returns the error. sled keeps such an error and refuses every later
    /// write until the database is reopened, and a commit it refused may still be applied in
    /// memory: nothing written from here on can be made durable in this process.
    fn note_write_error(&self, error: Error) -> Error {
        if let Error::Sled(sled::Error::Io(_)) = &error {
            let reason = error.to_string();
            // The first failure is kept (the service logs it when it stops).
            self.failure.send_if_modified(|slot| {
                if slot.is_some() {
                    return false;
                }
                *slot = Some(reason);
                true
            });
        }
        error
    }

    /// The store's failure, if a write has failed with an I/O error (see [`Store::failed`]).
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Waits until a write fails with an I/O error and returns it as [`Error::Failed`]. A
    /// service stops then: in this process the store can never again make a write durable, while
    /// a restart reopens it (and, once the disk has room, serves again).
    pub async fn failed(&self) -> Error {
        let mut watch = self.failure.subscribe();
        let reason = match watch.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as this store.
            Err(_) => String::new(),
        };
        Error::Failed { reason }
    }

    /// Makes every commit so far durable (one fsync for the whole group).
    ///
    /// Group commit: what a caller needs is a flush that *began* after it called, since that one
    /// covers every write it made before. Flushes run one at a time; the callers that arrive
    /// while one runs queue for the next, the first of them runs it, and the others find it done
    /// and return without another fsync. So concurrent reports, consumer groups, the relay and
    /// the feed writer share one sled flush per round instead of one each.
    pub async fn flush(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering::SeqCst;
        // Any flush numbered above those begun so far begins after this point.
        let needed = self.flushes.started.load(SeqCst) + 1;
        self.flush_to(needed).await
    }

    /// Makes every commit applied so far durable, preferring to wait up to `patience` for a
    /// flush someone else runs anyway over running one: the outbox relay uses it, because the
    /// consumers, requests and the feed writer that committed its events flush right after
    /// committing, and a flush of the relay's own would stall their next commits for its fsync
    /// (sled's transactions wait for a flush in progress). Commits nobody flushes (timers) are
    /// flushed here once `patience` has passed.
    pub async fn flush_committed(&self, patience: std::time::Duration) -> Result<(), Error> {
        use std::sync::atomic::Ordering::SeqCst;
        let needed = {
            // A commit whose effects the caller has seen set its mark before leaving the gate.
            let _gate = gate_shared();
            self.flushes.covering.load(SeqCst)
        };
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let done = self.flushes.done.notified();
            if self.flushes.completed.load(SeqCst) >= needed {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                break;
            }
        }
        self.flush_to(needed).await
    }

    /// Waits for flush number `needed` to complete, running it if nobody has begun it.
    async fn flush_to(&self, needed: u64) -> Result<(), Error> {
        use std::sync::atomic::Ordering::SeqCst;
        let _turn = FLUSH_TURN.lock().await;
        if self.flushes.completed.load(SeqCst) >= needed {
            return Ok(());
        }
        let number = self.flushes.started.fetch_add(1, SeqCst) + 1;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let _gate = gate_shared();
            db.flush()
        })
        .await
        .map_err(|join| {
            Error::Sled(sled::Error::ReportableBug(format!(
                "flush thread failed: {join}"
            )))
        })?
        .map_err(|error| self.note_write_error(Error::Sled(error)))?;
        // Flushes complete in order (one at a time), so this only moves forward.
        self.flushes.completed.store(number, SeqCst);
        self.flushes.done.notify_waiters();
        Ok(())
    }

    /// Up to `limit` outbox events, oldest first.
    pub fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEvent>, Error> {
        let mut out = Vec::new();
        for item in self.outbox.iter().take(limit) {
            let (key, value) = item?;
            let key: [u8; 8] = key.as_ref().try_into().map_err(|_| Error::Corrupt {
                key: format!("outbox/{key:?}"),
                problem: "outbox key is not 8 bytes".into(),
            })?;
            let (msg_id, subject, traceparent, payload) =
                codec::decode_outbox(&value).map_err(|problem| Error::Corrupt {
                    key: format!("outbox/{}", u64::from_be_bytes(key)),
                    problem,
                })?;
            out.push(OutboxEvent {
                key,
                msg_id,
                subject,
                payload,
                traceparent,
            });
        }
        Ok(out)
    }

    /// Number of events waiting in the outbox (a counter: no walk of the tree).
    pub fn outbox_len(&self) -> usize {
        self.outbox_count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Removes published events from the outbox: keys returned by [`Store::outbox_pending`] of
    /// this store, each once (the relay is the only remover).
    ///
    /// One `remove` per key, not a `sled::Batch`: sled 0.34 writes two log buffers of its own for
    /// every batch or transaction (it seals the buffer before and after the batch's marker, each
    /// written and synced on its own), while plain removes ride in the next buffer written. The
    /// removals need no atomicity: an event whose removal a crash loses is published again with
    /// its `Nats-Msg-Id`, which JetStream's duplicate window and the consumers' processed ids
    /// absorb, as for a crash between a publish and its removal.
    pub fn outbox_remove(&self, keys: &[[u8; 8]]) -> Result<(), Error> {
        let _gate = gate_exclusive();
        let mut removed = 0;
        let mut result = Ok(());
        for key in keys {
            match self.outbox.remove(key) {
                Ok(Some(_)) => removed += 1,
                Ok(None) => {}
                Err(error) => {
                    result = Err(self.note_write_error(Error::Sled(error)));
                    break;
                }
            }
        }
        // Saturating: the count is only ever decremented by what was there.
        let _ = self.outbox_count.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |count| Some(count.saturating_sub(removed)),
        );
        result
    }

    /// Woken after every commit that added outbox events; the relay waits on it.
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }
}

/// One row of [`Store::census`]: the records of one tree whose keys share a first segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CensusRow {
    pub tree: String,
    /// The key up to and including its first `/`; `(other)` for a key without one (processed
    /// message ids, meta entries) or that is not printable ASCII (the outbox and audit trees'
    /// sequence numbers).
    pub prefix: String,
    pub records: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

impl Store {
    /// Counts the records and bytes of every tree by key prefix, reading every record once: where
    /// a store's bytes go (`muster-bench census`). Sled's own overhead and garbage are not
    /// included; compare the total with the directory's size for that.
    pub fn census(&self) -> Result<Vec<CensusRow>, Error> {
        // (tree, prefix) -> records, key bytes, value bytes.
        let mut counts: std::collections::BTreeMap<(String, String), [u64; 3]> =
            std::collections::BTreeMap::new();
        for name in self.db.tree_names() {
            let tree = String::from_utf8_lossy(&name).into_owned();
            for item in self.db.open_tree(&name)?.iter() {
                let (key, value) = item?;
                let prefix = match key.iter().position(|&b| b == b'/') {
                    Some(at) if key.iter().all(u8::is_ascii_graphic) => {
                        String::from_utf8_lossy(&key[..=at]).into_owned()
                    }
                    _ => "(other)".to_string(),
                };
                let count = counts.entry((tree.clone(), prefix)).or_default();
                count[0] += 1;
                count[1] += key.len() as u64;
                count[2] += value.len() as u64;
            }
        }
        Ok(counts
            .into_iter()
            .map(
                |((tree, prefix), [records, key_bytes, value_bytes])| CensusRow {
                    tree,
                    prefix,
                    records,
                    key_bytes,
                    value_bytes,
                },
            )
            .collect())
    }
}
