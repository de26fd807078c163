//! The feed writer: the one task that turns parsed feed alerts into incidents.
//!
//! HTTP handlers and the NATS feed consumer hand it [`Submission`]s over a bounded queue. It takes
//! whatever is queued (up to [`BATCH_ALERTS_MAX`] alerts), decides every alert against the stored
//! state plus what the batch itself already staged (dedup, correlation, references, heartbeats),
//! writes the whole batch in one sled transaction with its outbox events, flushes once, and only
//! then answers every submitter. Being the only writer of feed state keeps correlation consistent
//! without locks; the compare-and-swap on incident records keeps it consistent with the gRPC
//! front door and the projection, which write those records too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bus::subjects;
use domain::class::{IncidentClass, SubType};
use domain::event::{EventBody, IncidentClosed, IncidentEvent, IncidentReport, IncidentUpdated};
use domain::geo::{GeoPoint, great_circle_km};
use domain::grade::{Facts, WarningLevel};
use domain::region::Region;
use feeds::mapping::Mapping;
use feeds::{Action, Alert, Status};
use serde::{Deserialize, Serialize};
use store::{Commit, Store};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::driver::Change;
use crate::record::{
    AlertLink, IncidentRecord, IncidentStatus, Numbering, TimelineEntry, incident_id_for,
    incident_key, sequence_key, yyyymmdd,
};

/// Most alerts decided and committed together.
pub const BATCH_ALERTS_MAX: usize = 2048;
/// Incident records the writer keeps decoded between batches (see [`CachedIncident`]).
const INCIDENT_CACHE_MAX: usize = 512;
/// Committed batches that may wait for their flush while the writer decides the next ones.
const FLUSH_QUEUE_LEN: usize = 4;
/// How many times a batch is redone after losing a compare-and-swap race.
const BATCH_ATTEMPTS_MAX: usize = 8;
/// Feed-created incidents record who reported them with this prefix.
pub const FEED_REPORTER_PREFIX: &str = "feed ";

/// One request's alerts, waiting for the writer.
pub struct Submission {
    /// The configured feed the request came from, when known.
    pub feed: Option<String>,
    /// Shared with the alert records the writer stages for them: no copy of each alert (the
    /// copies were ~2 % of a correlated feed run's samples, in the one writer).
    pub alerts: Vec<Arc<Alert>>,
    pub reply: oneshot::Sender<Result<Vec<AlertResult>, String>>,
}

/// What became of one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new incident was opened for it.
    Created,
    /// Linked to an existing incident about the same event.
    Correlated,
    /// The same message was accepted before; the answer repeats the first one.
    Duplicate,
    /// An update, cancel, resolve or acknowledgement applied to the alert(s) it names.
    Applied,
    /// It refers to an alert not (yet) known: kept, applied when that alert arrives, or
    /// surfaced for triage.
    Parked,
    /// Acknowledged without creating anything (CAP status Test, Draft or System; a resolve of
    /// an unknown alert). `note` says why.
    Ignored,
}

/// The answer for one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertResult {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    pub namespace: String,
    /// The sub-type the incident has (for created and correlated alerts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Source identity of the alert.
    pub identity: String,
    pub note: String,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert_id: String,
    pub namespace: String,
    pub feed: Option<String>,
    pub received_at_unix_ms: i64,
    /// Stored as the alert itself (serde's `rc`: an `Arc` is written as what it holds).
    pub alert: Arc<Alert>,
    /// The incident it belongs to (none while parked or ignored).
    pub incident_id: Option<String>,
    /// `open`, `resolved`, `cancelled`, `updated` (an update applied), `parked`.
    pub state: String,
    /// How the mapping decided (rule, location), for explanations.
    pub note: String,
}

/// A parked update or cancel, waiting for the alert it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Parked {
    alert_id: String,
    parked_at_unix_ms: i64,
}

/// An open feed incident alerts may correlate with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CorrEntry {
    incident_id: String,
    namespace: String,
    kind: String,
    point: GeoPoint,
    /// Latest alert time seen (source time when given, else arrival): the correlation window is
    /// measured against it.
    last_at_unix_ms: i64,
    /// When an alert last joined (arrival time): the entry expires a while after this, so that
    /// alerts whose source times lie hours back (a replayed backlog) still correlate.
    #[serde(default)]
    touched_at_unix_ms: i64,
    window_ms: i64,
    distance_km: f64,
    /// `touched_at_unix_ms` as last written to the store (not stored itself). A correlated
    /// alert rewrites the entry only when its `last_at` moved or its `touched_at` is more than
    /// [`corr_touch_slack`] ahead of what the store holds: the stored one lags by at most that
    /// (so after a restart the entry expires at most that much early, out of a grace of twice
    /// its window), and a burst into one incident does not rewrite it every batch.
    #[serde(skip)]
    stored_touched_at_unix_ms: i64,
    /// `last_at_unix_ms` as last written to the store (not stored itself).
    #[serde(skip)]
    stored_last_at_unix_ms: i64,
}

/// How far a correlation entry's stored `touched_at` may lag the writer's: an eighth of its
/// window.
fn corr_touch_slack(entry: &CorrEntry) -> i64 {
    entry.window_ms / 8
}

/// What the writer needs.
pub struct WriterConfig {
    /// The namespace intake serves (`live` in production).
    pub namespace: String,
    pub region: Arc<Region>,
    pub mapping: Arc<Mapping>,
    /// A parked update older than this is surfaced for triage.
    pub park_timeout_ms: i64,
    /// How often heartbeats and parked updates are checked.
    pub tick: Duration,
}

pub struct FeedWriter {
    store: Store,
    config: WriterConfig,
    numbering: Numbering,
    changes: broadcast::Sender<Change>,
    /// Open correlation candidates per `(namespace, kind)`.
    corr: HashMap<(String, String), Vec<CorrEntry>>,
    /// Last time each configured feed was heard from.
    last_seen: HashMap<String, i64>,
    /// Open `feed_silent` incidents per feed.
    silent: HashMap<String, String>,
    /// Incident records this writer wrote last, by key.
    incident_cache: HashMap<String, CachedIncident>,
    /// The stored parked updates' keys, by their prefix (`feed-parked/<ns>/<format>/<identity>/`).
    /// This writer is the only one that writes them, so a new alert whose prefix is not here has
    /// nothing parked for it and needs no scan of the store.
    parked: HashMap<String, HashSet<String>>,
    /// Batches committed so far (the age of cache entries).
    batches: u64,
}

/// An incident record as this writer last wrote it: the stored bytes and the decoded value.
/// A batch that finds exactly these bytes in the store uses the value instead of decoding the
/// record again (decoding ~20 incident records per batch was 11 % of intake's CPU in a correlated
/// feed run); any other writer's change (the projection, the gRPC front door) changes the bytes,
/// and then the record is decoded from the store as before.
struct CachedIncident {
    raw: Vec<u8>,
    record: IncidentRecord,
    batch: u64,
}

fn dedup_key(ns: &str, format: &str, key: &str) -> String {
    format!("feed-dedup/{ns}/{format}/{key}")
}
fn identity_key(ns: &str, format: &str, identity: &str) -> String {
    format!("feed-identity/{ns}/{format}/{identity}")
}
pub fn alert_key(ns: &str, alert_id: &str) -> String {
    format!("feed-alert/{ns}/{alert_id}")
}
fn parked_prefix(ns: &str, format: &str, identity: &str) -> String {
    format!("feed-parked/{ns}/{format}/{identity}/")
}
/// The prefix of a `feed-parked/` key: everything up to its last `/` (alert ids have none).
fn parked_prefix_of(key: &str) -> &str {
    key.rfind('/').map_or(key, |at| &key[..=at])
}
fn corr_key(ns: &str, incident_id: &str) -> String {
    format!("feed-corr/{ns}/{incident_id}")
}
fn seen_key(feed: &str) -> String {
    format!("feed-seen/{feed}")
}
fn silent_key(feed: &str) -> String {
    format!("feed-silent/{feed}")
}
fn alert_sequence_key(ns: &str) -> String {
    format!("sequence/{ns}/alert")
}

impl FeedWriter {
    /// Loads the correlation index, heartbeat state and open silent-feed incidents.
    pub fn open(
        store: Store,
        config: WriterConfig,
        numbering: Numbering,
        changes: broadcast::Sender<Change>,
        now: i64,
    ) -> Result<FeedWriter, store::Error> {
        let mut corr: HashMap<(String, String), Vec<CorrEntry>> = HashMap::new();
        for (_, mut entry) in store.scan_prefix::<CorrEntry>("feed-corr/")? {
            entry.stored_touched_at_unix_ms = entry.touched_at_unix_ms;
            entry.stored_last_at_unix_ms = entry.last_at_unix_ms;
            corr.entry((entry.namespace.clone(), entry.kind.clone()))
                .or_default()
                .push(entry);
        }
        let mut parked: HashMap<String, HashSet<String>> = HashMap::new();
        for (key, _) in store.scan_prefix::<Parked>("feed-parked/")? {
            parked
                .entry(parked_prefix_of(&key).to_string())
                .or_default()
                .insert(key);
        }
        let mut last_seen = HashMap::new();
        let mut silent = HashMap::new();
        for spec in config.mapping.feeds() {
            // A feed never heard from gets a full interval of grace from start-up.
            let seen = store.get::<i64>(&seen_key(&spec.name))?.unwrap_or(now);
            last_seen.insert(spec.name.clone(), seen);
            if let Some(incident) = store.get::<String>(&silent_key(&spec.name))? {
                silent.insert(spec.name.clone(), incident);
            }
        }
        Ok(FeedWriter {
            store,
            config,
            numbering,
            changes,
            corr,
            last_seen,
            silent,
            incident_cache: HashMap::new(),
            parked,
            batches: 0,
        })
    }

    /// Runs until every sender is gone: decides queued submissions in batches, and on every tick
    /// checks heartbeats and parked updates.
    ///
    /// Deciding and flushing overlap: a committed batch goes to the flusher task, which waits for
    /// one sled flush covering everything committed so far and only then answers; meanwhile this
    /// loop decides and commits the next batch. Answers still leave only after a flush that began
    /// after their commit, in commit order.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Submission>) {
        let (durable, pending) = mpsc::channel(FLUSH_QUEUE_LEN);
        let flusher = tokio::spawn(flush_and_answer(
            self.store.clone(),
            self.changes.clone(),
            pending,
        ));
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                submission = queue.recv() => match submission {
                    Some(submission) => submission,
                    None => break,
                },
                _ = tick.tick() => {
                    self.on_tick(&durable).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            let mut alerts = batch[0].alerts.len();
            while alerts < BATCH_ALERTS_MAX {
                match queue.try_recv() {
                    Ok(submission) => {
                        alerts += submission.alerts.len();
                        batch.push(submission);
                    }
                    Err(_) => break,
                }
            }
            self.write_batch(batch, &durable).await;
        }
        drop(durable);
        if let Err(error) = flusher.await {
            tracing::error!(%error, "feed flusher failed");
        }
        tracing::info!("feed writer stopped");
    }

    async fn write_batch(&mut self, batch: Vec<Submission>, durable: &mpsc::Sender<Committed>) {
        let now = lifecycle::unix_ms_now();
        let alerts = batch.iter().map(|submission| submission.alerts.len()).sum();
        let decided = blocking(|| {
            self.decide_and_commit(now, alerts, |tx| {
                batch
                    .iter()
                    .map(|submission| {
                        submission
                            .alerts
                            .iter()
                            .map(|alert| tx.apply(submission.feed.as_deref(), alert))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
        });
        match decided {
            Ok((answers, changes)) => {
                let replies = batch
                    .into_iter()
                    .zip(answers)
                    .map(|(submission, answer)| (submission.reply, answer))
                    .collect();
                hand_to_flusher(durable, Committed { replies, changes }).await;
            }
            Err(reason) => {
                // Nothing was committed: no flush to wait for.
                tracing::error!(%reason, "feed batch not committed");
                for submission in batch {
                    let _ = submission.reply.send(Err(reason.clone()));
                }
            }
        }
    }

    /// Stages with `decide`, commits, and on success adopts the staged in-memory state. Redone
    /// from scratch when a compare-and-swap is lost. `alerts` is how many alerts the batch holds
    /// (the room its maps are made with).
    fn decide_and_commit<T>(
        &mut self,
        now: i64,
        alerts: usize,
        decide: impl Fn(&mut Tx<'_>) -> Result<T, String>,
    ) -> Result<(T, Vec<Change>), String> {
        let mut cache = std::mem::take(&mut self.incident_cache);
        let result = self.decide_and_commit_with(now, alerts, &mut cache, decide);
        self.incident_cache = cache;
        result
    }

    fn decide_and_commit_with<T>(
        &mut self,
        now: i64,
        alerts: usize,
        cache: &mut HashMap<String, CachedIncident>,
        decide: impl Fn(&mut Tx<'_>) -> Result<T, String>,
    ) -> Result<(T, Vec<Change>), String> {
        for _attempt in 0..BATCH_ATTEMPTS_MAX {
            let mut tx = Tx::new(self, cache, now, alerts);
            let value = decide(&mut tx)?;
            let staged = tx.finish()?;
            let result = {
                let _numbering = self
                    .numbering
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                // Incident numbers are read under the lock and checked by the commit.
                self.store.commit(&staged.commit)
            };
            match result {
                Ok(_) => {
                    self.batches += 1;
                    let batch = self.batches;
                    for (key, raw, record) in staged.written {
                        cache.insert(key, CachedIncident { raw, record, batch });
                    }
                    if cache.len() > INCIDENT_CACHE_MAX {
                        // Keep what the last few batches touched: a correlating burst's incidents.
                        cache.retain(|_, cached| batch - cached.batch < 4);
                        if cache.len() > INCIDENT_CACHE_MAX {
                            cache.retain(|_, cached| cached.batch == batch);
                        }
                    }
                    self.corr = staged.corr;
                    // Parked and applied in the same batch: the delete came last.
                    for key in staged.parked_new {
                        self.parked
                            .entry(parked_prefix_of(&key).to_string())
                            .or_default()
                            .insert(key);
                    }
                    for key in staged.parked_done {
                        let prefix = parked_prefix_of(&key);
                        if let Some(keys) = self.parked.get_mut(prefix) {
                            keys.remove(&key);
                            if keys.is_empty() {
                                self.parked.remove(prefix);
                            }
                        }
                    }
                    self.last_seen.extend(staged.seen);
                    for feed in staged.silent_cleared {
                        self.silent.remove(&feed);
                    }
                    self.silent.extend(staged.silent_opened);
                    return Ok((value, staged.changes));
                }
                Err(store::Error::Conflict { key }) => {
                    tracing::debug!(%key, "feed batch lost a compare-and-swap; redoing it");
                }
                Err(error) => return Err(format!("storage error: {error}")),
            }
        }
        Err("too much contention on incident records; retry".into())
    }

    async fn on_tick(&mut self, durable: &mpsc::Sender<Committed>) {
        let now = lifecycle::unix_ms_now();
        let silent_feeds: Vec<(String, String, i64, i64)> = self
            .config
            .mapping
            .feeds()
            .iter()
            .filter_map(|spec| {
                let every = spec.expect_every_ms?;
                let seen = *self.last_seen.get(&spec.name)?;
                (now - seen > every && !self.silent.contains_key(&spec.name))
                    .then(|| (spec.name.clone(), spec.owner_code.clone(), seen, every))
            })
            .collect();
        // `parked` follows every parked key this writer wrote or deleted: with none, no scan.
        let scanned = if self.parked.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.scan_prefix::<Parked>("feed-parked/")
        };
        let parked = match scanned {
            Ok(parked) => parked
                .into_iter()
                .filter(|(_, p)| now - p.parked_at_unix_ms > self.config.park_timeout_ms)
                .collect::<Vec<_>>(),
            Err(error) => {
                tracing::error!(%error, "cannot scan parked updates");
                Vec::new()
            }
        };
        if silent_feeds.is_empty() && parked.is_empty() {
            return;
        }
        let result = blocking(|| {
            self.decide_and_commit(now, 0, |tx| {
                for (feed, owner, seen, every) in &silent_feeds {
                    tx.open_silent(feed, owner, *seen, *every)?;
                }
                for (key, entry) in &parked {
                    tx.surface_parked(key, entry)?;
                }
                Ok(())
            })
        });
        match result {
            Ok(((), changes)) => {
                let committed = Committed {
                    replies: Vec::new(),
                    changes,
                };
                hand_to_flusher(durable, committed).await;
            }
            Err(reason) => tracing::error!(%reason, "heartbeat / parked check not committed"),
        }
    }
}

/// Runs `work` (deciding and committing a batch) without holding up the runtime's other tasks: a
/// commit waits for the process-wide sled gate while any store in the process flushes (see the
/// `store` crate), and on a multi-threaded runtime that wait must not park a worker thread the
/// HTTP handlers need.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A committed batch waiting for the flush that makes it durable: its answers and the changes
/// to announce once it is.
struct Committed {
    replies: Vec<(Reply, Vec<AlertResult>)>,
    changes: Vec<Change>,
}

type Reply = oneshot::Sender<Result<Vec<AlertResult>, String>>;

async fn hand_to_flusher(durable: &mpsc::Sender<Committed>, committed: Committed) {
    if let Err(mpsc::error::SendError(committed)) = durable.send(committed).await {
        // The flusher only stops once the writer has; answer rather than drop the replies.
        for (reply, _) in committed.replies {
            let _ = reply.send(Err("intake is shutting down".into()));
        }
    }
}

/// The flusher: takes every committed batch waiting, flushes once for all of them (a flush
/// covers every commit made before it began, and each batch was committed before it was sent
/// here), then announces their changes and answers their submitters, in commit order.
async fn flush_and_answer(
    store: Store,
    changes: broadcast::Sender<Change>,
    mut pending: mpsc::Receiver<Committed>,
) {
    while let Some(first) = pending.recv().await {
        let mut group = vec![first];
        while let Ok(more) = pending.try_recv() {
            group.push(more);
        }
        match store.flush().await {
            Ok(()) => {
                for committed in group {
                    for change in committed.changes {
                        let _ = changes.send(change);
                    }
                    for (reply, answer) in committed.replies {
                        let _ = reply.send(Ok(answer));
                    }
                }
            }
            Err(error) => {
                let reason = format!("storage flush failed: {error}");
                tracing::error!(%reason, "feed batch not made durable");
                for committed in group {
                    for (reply, _) in committed.replies {
                        let _ = reply.send(Err(reason.clone()));
                    }
                }
            }
        }
    }
}

/// What a batch staged, ready to commit.
struct Staged {
    commit: Commit,
    corr: HashMap<(String, String), Vec<CorrEntry>>,
    seen: HashMap<String, i64>,
    silent_opened: HashMap<String, String>,
    silent_cleared: Vec<String>,
    changes: Vec<Change>,
    /// Parked-update keys written and deleted (for the writer's index of them).
    parked_new: Vec<String>,
    parked_done: Vec<String>,
    /// Incident records written: key, stored bytes, value (for the writer's cache).
    written: Vec<(String, Vec<u8>, IncidentRecord)>,
}

/// One batch being decided: reads go through the staged state first, then the store.
struct Tx<'w> {
    store: &'w Store,
    cache: &'w mut HashMap<String, CachedIncident>,
    config: &'w WriterConfig,
    silent: &'w HashMap<String, String>,
    parked: &'w HashMap<String, HashSet<String>>,
    now: i64,
    corr: HashMap<(String, String), Vec<CorrEntry>>,
    corr_dirty: Vec<(String, String)>,
    /// Incident records touched: original bytes (for the compare-and-swap) and current value.
    incidents: BTreeMap<String, (Option<Vec<u8>>, IncidentRecord, IncidentChange)>,
    alerts: BTreeMap<String, AlertRecord>,
    dedup: HashMap<String, AlertResult>,
    identities: HashMap<String, String>,
    parked_new: Vec<(String, Parked)>,
    parked_done: Vec<String>,
    incident_sequences: HashMap<String, (Option<Vec<u8>>, u64)>,
    alert_sequences: HashMap<String, (Option<Vec<u8>>, u64)>,
    seen: HashMap<String, i64>,
    silent_opened: HashMap<String, String>,
    silent_cleared: Vec<String>,
    /// Writes staged so far (incident records and sequences are added by `finish`).
    commit: Commit,
}

/// What happened to an incident in this batch, for its events.
#[derive(Default)]
struct IncidentChange {
    created: bool,
    facts_changed: bool,
    closed: Option<IncidentClosed>,
    updated_by: String,
    summaries: Vec<String>,
}

impl<'w> Tx<'w> {
    /// `alerts`: how many alerts the batch holds. Its per-alert maps are made with room for
    /// them (growing them was ~2 % of a correlated feed run's samples, rehashing).
    fn new(
        writer: &'w FeedWriter,
        cache: &'w mut HashMap<String, CachedIncident>,
        now: i64,
        alerts: usize,
    ) -> Tx<'w> {
        Tx {
            store: &writer.store,
            cache,
            config: &writer.config,
            silent: &writer.silent,
            parked: &writer.parked,
            now,
            corr: writer.corr.clone(),
            corr_dirty: Vec::new(),
            incidents: BTreeMap::new(),
            alerts: BTreeMap::new(),
            dedup: HashMap::with_capacity(alerts),
            identities: HashMap::with_capacity(alerts),
            parked_new: Vec::new(),
            parked_done: Vec::new(),
            incident_sequences: HashMap::new(),
            alert_sequences: HashMap::new(),
            seen: HashMap::new(),
            silent_opened: HashMap::new(),
            silent_cleared: Vec::new(),
            commit: Commit::new(),
        }
    }

    // ---- reads through the staged state -----------------------------------------------------

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        self.store.get::<T>(key).map_err(|e| e.to_string())
    }

    fn incident(
        &mut self,
        ns: &str,
        incident_id: &str,
    ) -> Result<Option<&mut IncidentRecord>, String> {
        let key = incident_key(ns, incident_id);
        if !self.incidents.contains_key(&key) {
            let raw = self.store.get_raw(&key).map_err(|e| e.to_string())?;
            let Some(raw) = raw else { return Ok(None) };
            let record = match self.cache.remove(&key) {
                Some(cached) if cached.raw == raw => cached.record,
                _ => store::decode_value(&key, &raw).map_err(|e| e.to_string())?,
            };
            self.incidents
                .insert(key.clone(), (Some(raw), record, IncidentChange::default()));
        }
        Ok(self.incidents.get_mut(&key).map(|(_, record, _)| record))
    }

    fn change(&mut self, ns: &str, incident_id: &str) -> &mut IncidentChange {
        let key = incident_key(ns, incident_id);
        &mut self
            .incidents
            .get_mut(&key)
            .expect("the incident was loaded before it changed")
            .2
    }

    fn alert(&mut self, ns: &str, alert_id: &str) -> Result<Option<&mut AlertRecord>, String> {
        let key = alert_key(ns, alert_id);
        if !self.alerts.contains_key(&key) {
            let Some(record) = self.get::<AlertRecord>(&key)? else {
                return Ok(None);
            };
            self.alerts.insert(key.clone(), record);
        }
        Ok(self.alerts.get_mut(&key))
    }

    fn alert_by_identity(
        &mut self,
        ns: &str,
        format: &str,
        identity: &str,
    ) -> Result<Option<String>, String> {
        let key = identity_key(ns, format, identity);
        if let Some(alert_id) = self.identities.get(&key) {
            return Ok(Some(alert_id.clone()));
        }
        self.get::<String>(&key)
    }

    fn next_sequence(&mut self, key: String, incidents: bool) -> Result<u64, String> {
        let map = if incidents {
            &mut self.incident_sequences
        } else {
            &mut self.alert_sequences
        };
        if !map.contains_key(&key) {
            let raw = self.store.get_raw(&key).map_err(|e| e.to_string())?;
            let current = match &raw {
                Some(bytes) => {
                    store::decode_value::<u64>(&key, bytes).map_err(|e| e.to_string())?
                }
                None => 0,
            };
            map.insert(key.clone(), (raw, current));
        }
        let entry = map.get_mut(&key).expect("inserted above");
        entry.1 += 1;
        Ok(entry.1)
    }

    fn put<T: Serialize>(&mut self, key: String, value: &T) -> Result<(), String> {
        self.commit.put(key, value).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn delete(&mut self, key: String) {
        self.commit.delete(key);
    }

    // ---- deciding one alert -------------------------------------------------------------------

    fn apply(&mut self, feed: Option<&str>, alert: &Arc<Alert>) -> Result<AlertResult, String> {
        if let Some(feed) = feed {
            self.heard_from(feed)?;
        }
        let format = alert.format.as_str();
        let ignored = |ns: &str, note: String| AlertResult {
            outcome: Outcome::Ignored,
            alert_id: None,
            incident_id: None,
            namespace: ns.to_string(),
            kind: None,
            identity: alert.identity.clone(),
            note,
        };
        let ns = match alert.status {
            Status::Actual => self.config.namespace.clone(),
            // A drill's own intake keeps its exercises; a live one sends them to the mapping's
            // exercise namespace, never to live.
            Status::Exercise if self.config.namespace.starts_with("drill.") => {
                self.config.namespace.clone()
            }
            Status::Exercise => self.config.mapping.exercise_namespace().to_string(),
            Status::Test | Status::Draft | Status::System => {
                return Ok(ignored(
                    &self.config.namespace,
                    format!(
                        "status {:?}: acknowledged; a {:?} message creates no incident",
                        alert.status, alert.status
                    ),
                ));
            }
        };
        if is_heartbeat(alert) {
            return Ok(ignored(
                &ns,
                "a dead-man-switch heartbeat: it keeps the feed alive and creates no incident"
                    .into(),
            ));
        }
        let dedup = dedup_key(&ns, format, &alert.dedup_key);
        if let Some(first) = self.dedup.get(&dedup) {
            return Ok(duplicate_of(first));
        }
        if let Some(first) = self.get::<AlertResult>(&dedup)? {
            return Ok(duplicate_of(&first));
        }
        let references: Vec<&str> = alert
            .references
            .iter()
            .map(String::as_str)
            .filter(|r| *r != alert.identity)
            .collect();
        let result = match alert.action {
            Action::Raise => self.raise(&ns, feed, alert, None)?,
            Action::Update if references.is_empty() => self.raise(&ns, feed, alert, None)?,
            Action::Cancel if references.is_empty() => ignored(
                &ns,
                "a Cancel that names no earlier message: nothing to cancel".into(),
            ),
            Action::Update | Action::Cancel => self.refer(&ns, feed, alert, &references)?,
            Action::Resolve | Action::Acknowledge | Action::Receipt => {
                let named: Vec<&str> = if references.is_empty() {
                    vec![alert.identity.as_str()]
                } else {
                    references
                };
                self.settle(&ns, feed, alert, &named)?
            }
        };
        self.dedup.insert(dedup.clone(), result.clone());
        self.put(dedup, &result)?;
        Ok(result)
    }

    fn heard_from(&mut self, feed: &str) -> Result<(), String> {
        // Written once per batch, by `finish`.
        self.seen.insert(feed.to_string(), self.now);
        let open = self
            .silent
            .get(feed)
            .or_else(|| self.silent_opened.get(feed))
            .cloned();
        if let Some(incident_id) = open {
            if self.silent_cleared.iter().any(|f| f == feed) {
                return Ok(());
            }
            self.silent_cleared.push(feed.to_string());
            self.delete(silent_key(feed));
            let ns = self.config.namespace.clone();
            let now = self.now;
            if let Some(record) = self.incident(&ns, &incident_id)? {
                let since = record.reported_at_unix_ms;
                let reason = format!(
                    "feed {feed} resumed after {} of silence",
                    minutes_text(now - since)
                );
                self.close(
                    &ns,
                    &incident_id,
                    &format!("{FEED_REPORTER_PREFIX}{feed}"),
                    reason,
                )?;
            }
        }
        Ok(())
    }

    fn new_alert_id(&mut self, ns: &str) -> Result<String, String> {
        let sequence = self.next_sequence(alert_sequence_key(ns), false)?;
        Ok(format!("ALR-{}-{sequence:06}", yyyymmdd(self.now)))
    }

    /// A new alert: correlate it with an open incident about the same event, or open one.
    fn raise(
        &mut self,
        ns: &str,
        feed: Option<&str>,
        alert: &Arc<Alert>,
        surfaced_note: Option<String>,
    ) -> Result<AlertResult, String> {
        let region = self.config.region.clone();
        let mapped = self.config.mapping.map(alert, &region);
        let located = &mapped.located;
        let unmapped = mapped.sub_type.class == IncidentClass::Unclassified;
        let triage_reason = if let Some(note) = &surfaced_note {
            Some(note.clone())
        } else if unmapped {
            Some(format!("not recognised: {}", mapped.reason))
        } else if located.township_code.is_none() {
            Some(format!(
                "it looks like {} but its location is not in the region ({})",
                mapped.sub_type.code, located.reason
            ))
        } else {
            None
        };
        let sub_type: &'static SubType = if triage_reason.is_some() {
            domain::class::sub_type("unclassified.unmapped").expect("catalogue entry")
        } else {
            mapped.sub_type
        };
        let alert_id = self.new_alert_id(ns)?;
        let alert_time = alert.sent_unix_ms.unwrap_or(self.now);
        let link = AlertLink {
            alert_id: alert_id.clone(),
            format: alert.format.as_str().to_string(),
            identity: alert.identity.clone(),
            headline: alert.headline.clone(),
            state: "open".into(),
            received_at_unix_ms: self.now,
        };
        let note = format!("{}; location: {}", mapped.reason, located.reason);

        // Correlation: the nearest open incident of the same kind inside its distance and time
        // window. Only located alerts correlate (two unlocated alerts may be anywhere).
        let candidate = located
            .point
            .filter(|_| triage_reason.is_none())
            .and_then(|point| {
                self.corr
                    .get(&(ns.to_string(), sub_type.code.to_string()))
                    .and_then(|entries| {
                        entries
                            .iter()
                            .filter(|e| (alert_time - e.last_at_unix_ms).abs() <= e.window_ms)
                            .map(|e| (great_circle_km(point, e.point), e))
                            .filter(|(distance, e)| *distance <= e.distance_km)
                            .min_by(|a, b| a.0.total_cmp(&b.0))
                            .map(|(distance, e)| (e.incident_id.clone(), distance))
                    })
            });
        let (incident_id, outcome, result_note) = match candidate {
            Some((incident_id, distance)) => {
                let Some(record) = self.incident(ns, &incident_id)? else {
                    return Err(format!("correlated incident {incident_id} is missing"));
                };
                if record.status == IncidentStatus::Closed {
                    // Closed since it was indexed: forget it and open a new one.
                    self.forget_corr(ns, &incident_id);
                    return self.raise(ns, feed, alert, surfaced_note);
                }
                record.link_alert(link, true);
                let changed = merge_max(&mut record.report.facts, &mapped.facts)
                    | raise_warning(&mut record.report.warning, mapped.warning);
                let count = record.alert_count;
                if changed {
                    let change = self.change(ns, &incident_id);
                    change.facts_changed = true;
                    change.updated_by = reporter(feed, alert);
                    change
                        .summaries
                        .push(format!("alert {} raised the facts", alert.identity));
                }
                self.touch_corr(ns, &incident_id, sub_type.code, alert_time);
                (
                    incident_id,
                    Outcome::Correlated,
                    format!(
                        "same event as an open incident {distance:.1} km away; {count} alerts linked"
                    ),
                )
            }
            None => {
                let incident_id = self.open_incident(
                    ns,
                    sub_type,
                    &mapped.facts,
                    mapped.warning,
                    located,
                    headline_with(alert, triage_reason.as_deref()),
                    reporter(feed, alert),
                )?;
                let record = self.incident(ns, &incident_id)?.expect("opened above");
                record.link_alert(link, true);
                if let Some(point) = located.point.filter(|_| triage_reason.is_none()) {
                    let window = self.config.mapping.correlation_for(sub_type.code);
                    let entry = CorrEntry {
                        incident_id: incident_id.clone(),
                        namespace: ns.to_string(),
                        kind: sub_type.code.to_string(),
                        point,
                        last_at_unix_ms: alert_time,
                        touched_at_unix_ms: self.now,
                        window_ms: window.window_ms,
                        distance_km: window.distance_km,
                        // Written by this batch (it is dirty).
                        stored_touched_at_unix_ms: self.now,
                        stored_last_at_unix_ms: alert_time,
                    };
                    self.corr
                        .entry((ns.to_string(), sub_type.code.to_string()))
                        .or_default()
                        .push(entry);
                    self.corr_dirty.push((ns.to_string(), incident_id.clone()));
                }
                let note = match &triage_reason {
                    Some(reason) => format!("opened for triage: {reason}"),
                    None => format!("opened as {}", sub_type.code),
                };
                (incident_id, Outcome::Created, note)
            }
        };
        self.store_alert(ns, feed, alert, &alert_id, Some(&incident_id), "open", note)?;
        // Updates and cancels that arrived before this alert apply now.
        self.apply_parked(ns, feed, alert, &incident_id, &alert_id)?;
        Ok(AlertResult {
            outcome,
            alert_id: Some(alert_id),
            incident_id: Some(incident_id),
            namespace: ns.to_string(),
            kind: Some(sub_type.code.to_string()),
            identity: alert.identity.clone(),
            note: result_note,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn open_incident(
        &mut self,
        ns: &str,
        sub_type: &'static SubType,
        facts: &Facts,
        warning: Option<WarningLevel>,
        located: &feeds::locate::Located,
        summary: String,
        reported_by: String,
    ) -> Result<String, String> {
        let region = &self.config.region;
        // Unknown location: the province leads (territorial management falls back to it).
        let province = region
            .tree
            .all()
            .find(|j| j.level == domain::jurisdiction::Level::Province)
            .ok_or("the region has no province")?;
        let (township_code, location, location_reported) = match &located.township_code {
            Some(code) => {
                let centroid = region
                    .township_centroid(code)
                    .or_else(|| region.tree.get(code).and_then(|j| j.centroid))
                    .or(province.centroid)
                    .unwrap_or(GeoPoint::new(0.0, 0.0));
                match located.point {
                    Some(point) => (code.clone(), point, true),
                    None => (code.clone(), centroid, false),
                }
            }
            None => (
                province.code.clone(),
                province.centroid.unwrap_or(GeoPoint::new(0.0, 0.0)),
                false,
            ),
        };
        let report = IncidentReport {
            kind: sub_type.code.to_string(),
            class: sub_type.class,
            township_code,
            other_township_codes: if located.township_code.is_some() {
                located.other_township_codes.clone()
            } else {
                Vec::new()
            },
            location,
            location_reported,
            facts: facts.clone(),
            summary,
            reported_by,
            warning,
        };
        self.create_incident(ns, report)
    }

    fn create_incident(&mut self, ns: &str, report: IncidentReport) -> Result<String, String> {
        let sequence = self.next_sequence(sequence_key(ns), true)?;
        let incident_id = incident_id_for(self.now, sequence);
        let event = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.clone(),
            namespace: ns.to_string(),
            at_unix_ms: self.now,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::Reported(report.clone()),
        };
        let record = IncidentRecord {
            id: incident_id.clone(),
            namespace: ns.to_string(),
            report,
            status: IncidentStatus::Reported,
            grading: None,
            units: None,
            timeline: vec![TimelineEntry {
                at_unix_ms: self.now,
                event_type: subjects::REPORTED.into(),
                source_service: crate::SERVICE_NAME.into(),
                description: event.describe(),
                event_id: String::new(),
            }],
            reported_at_unix_ms: self.now,
            updated_at_unix_ms: self.now,
            request_id: String::new(),
            alert_count: 0,
            open_alert_count: 0,
            recent_alerts: Vec::new(),
            legal_hold: None,
            personal_data_erased_at_unix_ms: None,
        };
        let change = IncidentChange {
            created: true,
            ..IncidentChange::default()
        };
        self.incidents
            .insert(incident_key(ns, &incident_id), (None, record, change));
        Ok(incident_id)
    }

    #[allow(clippy::too_many_arguments)]
    fn store_alert(
        &mut self,
        ns: &str,
        feed: Option<&str>,
        alert: &Arc<Alert>,
        alert_id: &str,
        incident_id: Option<&str>,
        state: &str,
        note: String,
    ) -> Result<(), String> {
        let record = AlertRecord {
            alert_id: alert_id.to_string(),
            namespace: ns.to_string(),
            feed: feed.map(str::to_string),
            received_at_unix_ms: self.now,
            alert: alert.clone(),
            incident_id: incident_id.map(str::to_string),
            state: state.to_string(),
            note,
        };
        self.alerts.insert(alert_key(ns, alert_id), record);
        let identity = identity_key(ns, alert.format.as_str(), &alert.identity);
        if alert.action == Action::Raise || alert.action == Action::Update {
            self.identities
                .insert(identity.clone(), alert_id.to_string());
            self.put(identity, &alert_id.to_string())?;
        }
        // No `incident-alert/` index key any more: nothing read it, and the alert record names
        // its incident (one sled insert per alert less; stores written before keep theirs).
        Ok(())
    }

    /// An Update or Cancel naming earlier alerts: applied to their incidents, or parked.
    fn refer(
        &mut self,
        ns: &str,
        feed: Option<&str>,
        alert: &Arc<Alert>,
        references: &[&str],
    ) -> Result<AlertResult, String> {
        let format = alert.format.as_str();
        let mut targets: Vec<(String, String)> = Vec::new(); // (referenced alert id, incident id)
        let mut unknown: Vec<&str> = Vec::new();
        for reference in references {
            match self.alert_by_identity(ns, format, reference)? {
                Some(alert_id) => {
                    let incident = self
                        .alert(ns, &alert_id)?
                        .and_then(|record| record.incident_id.clone());
                    match incident {
                        Some(incident_id) => targets.push((alert_id, incident_id)),
                        None => unknown.push(reference),
                    }
                }
                None => unknown.push(reference),
            }
        }
        let alert_id = self.new_alert_id(ns)?;
        if targets.is_empty() {
            // Nothing it names is known yet: park it under every reference.
            for reference in &unknown {
                let key = format!("{}{alert_id}", parked_prefix(ns, format, reference));
                let parked = Parked {
                    alert_id: alert_id.clone(),
                    parked_at_unix_ms: self.now,
                };
                self.parked_new.push((key.clone(), parked.clone()));
                self.put(key, &parked)?;
            }
            self.store_alert(ns, feed, alert, &alert_id, None, "parked", String::new())?;
            return Ok(AlertResult {
                outcome: Outcome::Parked,
                alert_id: Some(alert_id),
                incident_id: None,
                namespace: ns.to_string(),
                kind: None,
                identity: alert.identity.clone(),
                note: format!(
                    "it refers to {} not known yet; kept until it arrives (surfaced for triage after {})",
                    unknown.join(" "),
                    minutes_text(self.config.park_timeout_ms)
                ),
            });
        }
        let mut incidents: Vec<String> = targets.iter().map(|(_, i)| i.clone()).collect();
        incidents.dedup();
        for (referenced, incident_id) in &targets {
            self.apply_reference(ns, feed, alert, &alert_id, referenced, incident_id)?;
        }
        let first = incidents[0].clone();
        self.store_alert(
            ns,
            feed,
            alert,
            &alert_id,
            Some(&first),
            state_after(alert.action),
            String::new(),
        )?;
        let verb = if alert.action == Action::Cancel {
            "cancelled"
        } else {
            "updated"
        };
        Ok(AlertResult {
            outcome: Outcome::Applied,
            alert_id: Some(alert_id),
            incident_id: Some(first),
            namespace: ns.to_string(),
            kind: None,
            identity: alert.identity.clone(),
            note: format!(
                "{verb} {} earlier alert(s) on {}{}",
                targets.len(),
                incidents.join(", "),
                if unknown.is_empty() {
                    String::new()
                } else {
                    format!("; unknown references ignored: {}", unknown.join(" "))
                }
            ),
        })
    }

    /// Applies an Update or Cancel (`alert`, stored as `alert_id`) to the earlier alert
    /// `referenced` on `incident_id`.
    fn apply_reference(
        &mut self,
        ns: &str,
        feed: Option<&str>,
        alert: &Alert,
        alert_id: &str,
        referenced: &str,
        incident_id: &str,
    ) -> Result<(), String> {
        let region = self.config.region.clone();
        let now = self.now;
        let by = reporter(feed, alert);
        match alert.action {
            Action::Cancel => {
                let was_open = match self.alert(ns, referenced)? {
                    Some(record) if record.state == "open" || record.state == "updated" => {
                        record.state = "cancelled".into();
                        true
                    }
                    _ => false,
                };
                let Some(record) = self.incident(ns, incident_id)? else {
                    return Ok(());
                };
                if was_open {
                    record.settle_alert(referenced, "cancelled");
                }
                record.link_alert(link_for(alert, alert_id, "cancel", now), false);
                push_local(
                    record,
                    now,
                    "alert_cancelled",
                    format!(
                        "alert {referenced} cancelled by its sender {}",
                        alert.sender
                    ),
                );
                let open = record.open_alert_count;
                let from_feeds = record.report.reported_by.starts_with(FEED_REPORTER_PREFIX);
                let closed = record.status == IncidentStatus::Closed;
                if open == 0 && from_feeds && !closed {
                    self.close(
                        ns,
                        incident_id,
                        &by,
                        "every alert behind it was cancelled by its sender".into(),
                    )?;
                }
            }
            _ => {
                // An update carries the sender's current view: its facts replace the earlier
                // ones where given, and its severity sets the warning level.
                let mapped = self.config.mapping.map(alert, &region);
                let Some(record) = self.incident(ns, incident_id)? else {
                    return Ok(());
                };
                record.link_alert(link_for(alert, alert_id, "update", now), false);
                let mut changed = merge_replace(&mut record.report.facts, &mapped.facts);
                if mapped.warning.is_some() && mapped.warning != record.report.warning {
                    record.report.warning = mapped.warning;
                    changed = true;
                }
                push_local(
                    record,
                    now,
                    "alert_updated",
                    format!(
                        "alert {referenced} updated by {}: {}",
                        alert.sender, alert.headline
                    ),
                );
                if changed {
                    let change = self.change(ns, incident_id);
                    change.facts_changed = true;
                    change.updated_by = by;
                    change
                        .summaries
                        .push(format!("CAP update {}", alert.identity));
                }
                if let Some(record) = self.alert(ns, referenced)?
                    && record.state == "open"
                {
                    record.state = "updated".into();
                }
            }
        }
        Ok(())
    }

    /// Updates and cancels parked for `alert`'s identity now apply to its incident.
    fn apply_parked(
        &mut self,
        ns: &str,
        feed: Option<&str>,
        alert: &Alert,
        incident_id: &str,
        referenced_alert_id: &str,
    ) -> Result<(), String> {
        let prefix = parked_prefix(ns, alert.format.as_str(), &alert.identity);
        let mut parked: Vec<(String, Parked)> = if self.parked.contains_key(&prefix) {
            self.store
                .scan_prefix::<Parked>(&prefix)
                .map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        parked.extend(
            self.parked_new
                .iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .cloned(),
        );
        for (key, entry) in parked {
            if self.parked_done.contains(&key) {
                continue;
            }
            self.parked_done.push(key.clone());
            self.delete(key);
            let Some(record) = self.alert(ns, &entry.alert_id)?.cloned() else {
                continue;
            };
            self.apply_reference(
                ns,
                feed,
                &record.alert,
                &entry.alert_id,
                referenced_alert_id,
                incident_id,
            )?;
            if let Some(stored) = self.alert(ns, &entry.alert_id)? {
                stored.incident_id = Some(incident_id.to_string());
                stored.state = state_after(record.alert.action).into();
            }
        }
        Ok(())
    }

    /// A resolve, acknowledgement or receipt for alerts named by identity.
    fn settle(
        &mut self,
        ns: &str,
        feed: Option<&str>,
        alert: &Arc<Alert>,
        named: &[&str],
    ) -> Result<AlertResult, String> {
        let format = alert.format.as_str();
        let now = self.now;
        let mut touched = Vec::new();
        for identity in named {
            let Some(target) = self.alert_by_identity(ns, format, identity)? else {
                continue;
            };
            let Some(stored) = self.alert(ns, &target)? else {
                continue;
            };
            let Some(incident_id) = stored.incident_id.clone() else {
                continue;
            };
            let resolving = alert.action == Action::Resolve;
            let was_open = stored.state == "open" || stored.state == "updated";
            if resolving && was_open {
                stored.state = "resolved".into();
            }
            let Some(record) = self.incident(ns, &incident_id)? else {
                continue;
            };
            let (event_type, text) = match alert.action {
                Action::Resolve => {
                    if was_open {
                        record.settle_alert(&target, "resolved");
                    }
                    (
                        "alert_resolved",
                        format!(
                            "alert {identity} resolved at its source ({}); {} of {} alerts still open",
                            alert.sender, record.open_alert_count, record.alert_count
                        ),
                    )
                }
                Action::Acknowledge => (
                    "alert_acknowledged",
                    format!(
                        "alert {identity} acknowledged at its source ({})",
                        alert.sender
                    ),
                ),
                _ => (
                    "alert_receipt",
                    format!(
                        "{} receipt for {identity}: {}",
                        alert.sender, alert.headline
                    ),
                ),
            };
            push_local(record, now, event_type, text);
            touched.push(incident_id);
        }
        let alert_id = self.new_alert_id(ns)?;
        let first = touched.first().cloned();
        self.store_alert(
            ns,
            feed,
            alert,
            &alert_id,
            first.as_deref(),
            state_after(alert.action),
            String::new(),
        )?;
        Ok(match first {
            Some(incident_id) => AlertResult {
                outcome: Outcome::Applied,
                alert_id: Some(alert_id),
                incident_id: Some(incident_id),
                namespace: ns.to_string(),
                kind: None,
                identity: alert.identity.clone(),
                note: match alert.action {
                    Action::Resolve => {
                        "the alert is closed; the incident stays open until officers close it"
                            .into()
                    }
                    _ => "recorded on the incident's timeline".into(),
                },
            },
            None => AlertResult {
                outcome: Outcome::Ignored,
                alert_id: Some(alert_id),
                incident_id: None,
                namespace: ns.to_string(),
                kind: None,
                identity: alert.identity.clone(),
                note: format!(
                    "no alert {} is known here; recorded, nothing to apply",
                    named.join(" ")
                ),
            },
        })
    }

    fn close(
        &mut self,
        ns: &str,
        incident_id: &str,
        by: &str,
        reason: String,
    ) -> Result<(), String> {
        let now = self.now;
        let Some(record) = self.incident(ns, incident_id)? else {
            return Ok(());
        };
        if record.status == IncidentStatus::Closed {
            return Ok(());
        }
        let closed = IncidentClosed {
            by: by.to_string(),
            reason,
        };
        record.status = IncidentStatus::Closed;
        record.updated_at_unix_ms = record.updated_at_unix_ms.max(now);
        let description = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.to_string(),
            namespace: ns.to_string(),
            at_unix_ms: now,
            source_service: crate::SERVICE_NAME.into(),
            body: EventBody::Closed(closed.clone()),
        }
        .describe();
        record.timeline.push(TimelineEntry {
            at_unix_ms: now,
            event_type: "closed".into(),
            source_service: crate::SERVICE_NAME.into(),
            description,
            event_id: String::new(),
        });
        self.change(ns, incident_id).closed = Some(closed);
        self.forget_corr(ns, incident_id);
        Ok(())
    }

    fn touch_corr(&mut self, ns: &str, incident_id: &str, kind: &str, at: i64) {
        let now = self.now;
        if let Some(entries) = self.corr.get_mut(&(ns.to_string(), kind.to_string()))
            && let Some(entry) = entries.iter_mut().find(|e| e.incident_id == incident_id)
        {
            entry.last_at_unix_ms = entry.last_at_unix_ms.max(at);
            entry.touched_at_unix_ms = entry.touched_at_unix_ms.max(now);
            let stale = entry.last_at_unix_ms != entry.stored_last_at_unix_ms
                || entry.touched_at_unix_ms - entry.stored_touched_at_unix_ms
                    > corr_touch_slack(entry);
            if stale {
                self.corr_dirty
                    .push((ns.to_string(), incident_id.to_string()));
            }
        }
    }

    fn forget_corr(&mut self, ns: &str, incident_id: &str) {
        for ((entry_ns, _), entries) in self.corr.iter_mut() {
            if entry_ns == ns {
                entries.retain(|e| e.incident_id != incident_id);
            }
        }
        self.corr_dirty
            .push((ns.to_string(), incident_id.to_string()));
    }

    // ---- heartbeats and parked updates --------------------------------------------------------

    fn open_silent(
        &mut self,
        feed: &str,
        owner: &str,
        seen: i64,
        every: i64,
    ) -> Result<(), String> {
        let region = self.config.region.clone();
        let owner_j = region
            .tree
            .get(owner)
            .ok_or_else(|| format!("feed {feed}: owner {owner} is not in the region"))?;
        let location = owner_j
            .centroid
            .or_else(|| {
                region
                    .tree
                    .all()
                    .find(|j| j.level == domain::jurisdiction::Level::Province)
                    .and_then(|p| p.centroid)
            })
            .unwrap_or(GeoPoint::new(0.0, 0.0));
        let sub_type =
            domain::class::sub_type("unclassified.feed_silent").expect("catalogue entry");
        let report = IncidentReport {
            kind: sub_type.code.into(),
            class: IncidentClass::Unclassified,
            township_code: owner.to_string(),
            other_township_codes: Vec::new(),
            location,
            location_reported: false,
            facts: Facts::default(),
            summary: format!(
                "monitoring feed {feed} silent for {} (expected at least every {}); its alerts may be going unseen",
                minutes_text(self.now - seen),
                minutes_text(every)
            ),
            reported_by: format!("{FEED_REPORTER_PREFIX}watchdog"),
            warning: None,
        };
        let ns = self.config.namespace.clone();
        let incident_id = self.create_incident(&ns, report)?;
        tracing::warn!(feed, %incident_id, "monitoring feed silent");
        self.silent_opened
            .insert(feed.to_string(), incident_id.clone());
        self.put(silent_key(feed), &incident_id)?;
        Ok(())
    }

    fn surface_parked(&mut self, key: &str, entry: &Parked) -> Result<(), String> {
        if self.parked_done.iter().any(|k| k == key) {
            return Ok(());
        }
        self.parked_done.push(key.to_string());
        self.delete(key.to_string());
        // feed-parked/<ns>/<format>/<identity>/<alert id>; the namespace may contain dots only.
        let ns = key
            .strip_prefix("feed-parked/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or(&self.config.namespace)
            .to_string();
        let Some(stored) = self.alert(&ns, &entry.alert_id)?.cloned() else {
            return Ok(());
        };
        if stored.state != "parked" {
            return Ok(());
        }
        let note = format!(
            "an {:?} for {} that never arrived, surfaced for triage after {}",
            stored.alert.action,
            stored.alert.references.join(" "),
            minutes_text(self.now - entry.parked_at_unix_ms)
        );
        let mut alert = (*stored.alert).clone();
        alert.action = Action::Raise;
        let result = self.raise(&ns, stored.feed.as_deref(), &Arc::new(alert), Some(note))?;
        // The surfaced incident owns the parked alert record; drop the copy `raise` made.
        if let Some(new_id) = &result.alert_id {
            self.alerts.remove(&alert_key(&ns, new_id));
        }
        if let Some(record) = self.alert(&ns, &entry.alert_id)? {
            record.incident_id = result.incident_id.clone();
            record.state = "open".into();
        }
        Ok(())
    }

    // ---- commit -------------------------------------------------------------------------------

    fn finish(mut self) -> Result<Staged, String> {
        let mut commit = std::mem::take(&mut self.commit);
        let mut changes = Vec::new();
        let mut written = Vec::new();
        for (key, (raw, current)) in self.incident_sequences.drain() {
            commit.expect_raw(key.clone(), raw);
            commit.put(key, &current).map_err(|e| e.to_string())?;
        }
        for (key, (_, current)) in self.alert_sequences.drain() {
            commit.put(key, &current).map_err(|e| e.to_string())?;
        }
        for (key, (raw, mut record, change)) in std::mem::take(&mut self.incidents) {
            let ns = record.namespace.clone();
            let id = record.id.clone();
            let partition = self
                .config
                .region
                .tree
                .partition_of(&record.report.township_code)
                .to_string();
            let mut event_type = None;
            if change.created {
                let event = self.event(&ns, &id, EventBody::Reported(record.report.clone()));
                // Parked updates may have changed the report after it was written: the
                // timeline says what the event says.
                if let Some(entry) = record
                    .timeline
                    .iter_mut()
                    .find(|e| e.event_type == subjects::REPORTED && e.event_id.is_empty())
                {
                    entry.description = event.describe();
                }
                commit.event(
                    subject(&partition, &ns, &id, subjects::REPORTED)?,
                    muster_proto::convert::encode_event(&event),
                );
                event_type = Some(subjects::REPORTED);
            } else if change.facts_changed {
                let body = EventBody::Updated(IncidentUpdated {
                    facts: record.report.facts.clone(),
                    updated_by: change.updated_by.clone(),
                    summary: change.summaries.join("; "),
                    warning: record.report.warning,
                });
                let event = self.event(&ns, &id, body);
                record.timeline.push(TimelineEntry {
                    at_unix_ms: self.now,
                    event_type: subjects::UPDATED.into(),
                    source_service: crate::SERVICE_NAME.into(),
                    description: event.describe(),
                    event_id: String::new(),
                });
                commit.event(
                    subject(&partition, &ns, &id, subjects::UPDATED)?,
                    muster_proto::convert::encode_event(&event),
                );
                event_type = Some(subjects::UPDATED);
            }
            if let Some(closed) = &change.closed {
                let event = self.event(&ns, &id, EventBody::Closed(closed.clone()));
                commit.event(
                    subject(&partition, &ns, &id, "closed")?,
                    muster_proto::convert::encode_event(&event),
                );
                event_type = Some("closed");
            }
            record.updated_at_unix_ms = record.updated_at_unix_ms.max(self.now);
            commit.expect_raw(key.clone(), raw);
            let bytes = store::encode_value(&record).map_err(|e| format!("{key}: {e}"))?;
            commit.put_encoded(key.clone(), bytes.clone());
            written.push((key, bytes, record.clone()));
            changes.push((record, event_type.unwrap_or("alert").to_string()));
        }
        for (feed, at) in &self.seen {
            commit.put(seen_key(feed), at).map_err(|e| e.to_string())?;
        }
        for (key, record) in std::mem::take(&mut self.alerts) {
            commit.put(key, &record).map_err(|e| e.to_string())?;
        }
        // One pass over the index for every entry this batch dirtied (a new incident's, a moved
        // one's), rather than a search of the whole index for each of them.
        let dirty_ids = std::mem::take(&mut self.corr_dirty);
        let mut dirty: HashSet<(&str, &str)> = dirty_ids
            .iter()
            .map(|(ns, incident_id)| (ns.as_str(), incident_id.as_str()))
            .collect();
        for entry in self.corr.values_mut().flatten() {
            if dirty.remove(&(entry.namespace.as_str(), entry.incident_id.as_str())) {
                commit
                    .put(corr_key(&entry.namespace, &entry.incident_id), &*entry)
                    .map_err(|e| e.to_string())?;
                // Adopted with the rest of `corr` only if the commit succeeds.
                entry.stored_touched_at_unix_ms = entry.touched_at_unix_ms;
                entry.stored_last_at_unix_ms = entry.last_at_unix_ms;
            }
        }
        // Dirtied and no longer in the index: forgotten (closed) this batch.
        for (ns, incident_id) in dirty {
            commit.delete(corr_key(ns, incident_id));
        }
        // Expired correlation candidates leave the index (and the store) with this batch.
        let now = self.now;
        for entries in self.corr.values_mut() {
            entries.retain(|e| {
                let recent = e.last_at_unix_ms.max(e.touched_at_unix_ms);
                let keep = now - recent <= e.window_ms.saturating_mul(2);
                if !keep {
                    commit.delete(corr_key(&e.namespace, &e.incident_id));
                }
                keep
            });
        }
        self.corr.retain(|_, entries| !entries.is_empty());
        Ok(Staged {
            commit,
            parked_new: self.parked_new.into_iter().map(|(key, _)| key).collect(),
            parked_done: self.parked_done,
            corr: self.corr,
            seen: self.seen,
            silent_opened: self.silent_opened,
            silent_cleared: self.silent_cleared,
            changes,
            written,
        })
    }

    fn event(&self, ns: &str, incident_id: &str, body: EventBody) -> IncidentEvent {
        IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.to_string(),
            namespace: ns.to_string(),
            at_unix_ms: self.now,
            source_service: crate::SERVICE_NAME.into(),
            body,
        }
    }
}

/// The event's subject, in the partition of the incident's township.
fn subject(
    partition: &str,
    ns: &str,
    incident_id: &str,
    event_type: &str,
) -> Result<String, String> {
    subjects::incident_event(ns, partition, incident_id, event_type).map_err(|e| e.to_string())
}

fn duplicate_of(first: &AlertResult) -> AlertResult {
    AlertResult {
        outcome: Outcome::Duplicate,
        note: format!(
            "already received ({}): {}",
            serde_json::to_value(first.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            first.note
        ),
        ..first.clone()
    }
}

/// Alertmanager's always-firing Watchdog / DeadMansSwitch alerts prove the pipeline is alive.
fn is_heartbeat(alert: &Alert) -> bool {
    alert.field_values("label.alertname").any(|name| {
        name.eq_ignore_ascii_case("watchdog") || name.eq_ignore_ascii_case("deadmansswitch")
    })
}

fn reporter(feed: Option<&str>, alert: &Alert) -> String {
    match feed {
        Some(feed) => format!("{FEED_REPORTER_PREFIX}{feed} ({})", alert.sender),
        None => format!(
            "{FEED_REPORTER_PREFIX}{} ({})",
            alert.format.as_str(),
            alert.sender
        ),
    }
}

fn headline_with(alert: &Alert, triage: Option<&str>) -> String {
    let headline = if alert.headline.is_empty() {
        alert.identity.clone()
    } else {
        alert.headline.clone()
    };
    match triage {
        Some(reason) => format!("[triage] {headline} — {reason}"),
        None => headline,
    }
}

fn link_for(alert: &Alert, alert_id: &str, state: &str, now: i64) -> AlertLink {
    AlertLink {
        alert_id: alert_id.to_string(),
        format: alert.format.as_str().to_string(),
        identity: alert.identity.clone(),
        headline: alert.headline.clone(),
        state: state.to_string(),
        received_at_unix_ms: now,
    }
}

fn state_after(action: Action) -> &'static str {
    match action {
        Action::Cancel => "cancel",
        Action::Update => "update",
        Action::Resolve => "resolve",
        Action::Acknowledge => "acknowledge",
        Action::Receipt => "receipt",
        Action::Raise => "open",
    }
}

fn push_local(record: &mut IncidentRecord, now: i64, event_type: &str, description: String) {
    record.updated_at_unix_ms = record.updated_at_unix_ms.max(now);
    record.timeline.push(TimelineEntry {
        at_unix_ms: now,
        event_type: event_type.to_string(),
        source_service: crate::SERVICE_NAME.into(),
        description,
        // Recorded by intake alone; no bus event carries it.
        event_id: format!("local-{event_type}-{now}-{}", record.timeline.len()),
    });
}

/// Correlated alerts only ever raise what is known (casualties rise; a later, larger magnitude
/// wins). Returns whether anything changed.
fn merge_max(facts: &mut Facts, new: &Facts) -> bool {
    fn max_opt<T: PartialOrd + Copy>(slot: &mut Option<T>, new: Option<T>) -> bool {
        match (new, *slot) {
            (Some(n), Some(old)) if n > old => {
                *slot = Some(n);
                true
            }
            (Some(n), None) => {
                *slot = Some(n);
                true
            }
            _ => false,
        }
    }
    max_opt(&mut facts.deaths, new.deaths)
        | max_opt(&mut facts.missing, new.missing)
        | max_opt(&mut facts.serious_injuries, new.serious_injuries)
        | max_opt(&mut facts.direct_loss_cny, new.direct_loss_cny)
        | max_opt(&mut facts.magnitude, new.magnitude)
}

/// An update from the same sender replaces what it gives.
fn merge_replace(facts: &mut Facts, new: &Facts) -> bool {
    let before = facts.clone();
    if new.deaths.is_some() {
        facts.deaths = new.deaths;
    }
    if new.missing.is_some() {
        facts.missing = new.missing;
    }
    if new.serious_injuries.is_some() {
        facts.serious_injuries = new.serious_injuries;
    }
    if new.direct_loss_cny.is_some() {
        facts.direct_loss_cny = new.direct_loss_cny;
    }
    if new.magnitude.is_some() {
        facts.magnitude = new.magnitude;
    }
    *facts != before
}

/// A correlated alert can raise the warning level (red is highest), never lower it.
fn raise_warning(slot: &mut Option<WarningLevel>, new: Option<WarningLevel>) -> bool {
    match (new, *slot) {
        (Some(n), Some(old)) if n.number() < old.number() => {
            *slot = Some(n);
            true
        }
        (Some(n), None) => {
            *slot = Some(n);
            true
        }
        _ => false,
    }
}

fn minutes_text(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    if seconds < 120 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Answer, FeedIntake};
    use feeds::{Format, Limits};

    fn quake(id: &str, lat: f64, lon: f64, mag: f64) -> serde_json::Value {
        serde_json::json!({
            "type": "Feature",
            "id": id,
            "properties": {
                "mag": mag, "place": "near Langang", "time": lifecycle::unix_ms_now(),
                "type": "earthquake", "status": "reviewed", "net": "test",
                "title": format!("M {mag:.2} - near Langang"),
            },
            "geometry": {"type": "Point", "coordinates": [lon, lat, 10.0]},
        })
    }

    fn body(features: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"type": "FeatureCollection", "features": features}))
            .unwrap()
    }

    fn results(answer: Answer) -> Vec<AlertResult> {
        match answer {
            Answer::Accepted(results) => results,
            other => panic!("not accepted: {other:?}"),
        }
    }

    /// A running writer over a real sled store, with the intake front half feeding it.
    fn start(store: &Store) -> (FeedIntake, tokio::task::JoinHandle<()>) {
        let mapping = Arc::new(Mapping::embedded_default());
        let (changes, _) = broadcast::channel(64);
        let writer = FeedWriter::open(
            store.clone(),
            WriterConfig {
                namespace: "live".into(),
                region: Arc::new(Region::embedded_default()),
                mapping: mapping.clone(),
                park_timeout_ms: 600_000,
                tick: Duration::from_secs(60),
            },
            Numbering::default(),
            changes,
            lifecycle::unix_ms_now(),
        )
        .unwrap();
        let (queue, queued) = mpsc::channel(crate::feed::QUEUE_LEN);
        let running = tokio::spawn(writer.run(queued));
        let intake = FeedIntake::new(queue, store.clone(), mapping, Limits::default());
        (intake, running)
    }

    fn stored(store: &Store, incident_id: &str) -> IncidentRecord {
        store
            .get(&incident_key("live", incident_id))
            .unwrap()
            .unwrap()
    }

    /// The writer keeps the incident records it wrote decoded between batches; a change another
    /// writer makes to the record in between (here: the projection closing it off with a
    /// timeline entry) must be read from the store, not lost under the cached copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_correlated_alert_keeps_what_another_writer_changed_on_its_incident() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (intake, running) = start(&store);

        let first = results(
            intake
                .submit(
                    Format::Geojson,
                    None,
                    &body(vec![quake("q1", 30.05, 121.75, 4.1)]),
                )
                .await,
        );
        assert_eq!(first[0].outcome, Outcome::Created, "{first:?}");
        let incident_id = first[0].incident_id.clone().unwrap();

        // Same batch path twice more: served from the writer's cache.
        let second = results(
            intake
                .submit(
                    Format::Geojson,
                    None,
                    &body(vec![quake("q2", 30.051, 121.751, 4.2)]),
                )
                .await,
        );
        assert_eq!(second[0].outcome, Outcome::Correlated, "{second:?}");
        assert_eq!(second[0].incident_id.as_deref(), Some(incident_id.as_str()));
        assert_eq!(stored(&store, &incident_id).alert_count, 2);

        // Another writer changes the record behind the feed writer's back.
        let key = incident_key("live", &incident_id);
        let raw = store.get_raw(&key).unwrap();
        let mut changed = stored(&store, &incident_id);
        changed.timeline.push(TimelineEntry {
            at_unix_ms: lifecycle::unix_ms_now(),
            event_type: "note".into(),
            source_service: "test".into(),
            description: "written by someone else".into(),
            event_id: "other-1".into(),
        });
        let mut commit = store::Commit::new();
        commit.expect_raw(key.clone(), raw);
        commit.put(key.clone(), &changed).unwrap();
        store.commit(&commit).unwrap();

        let third = results(
            intake
                .submit(
                    Format::Geojson,
                    None,
                    &body(vec![quake("q3", 30.052, 121.752, 4.3)]),
                )
                .await,
        );
        assert_eq!(third[0].outcome, Outcome::Correlated, "{third:?}");
        let record = stored(&store, &incident_id);
        assert_eq!(record.alert_count, 3);
        assert!(
            record.timeline.iter().any(|e| e.event_id == "other-1"),
            "the other writer's entry was lost: {:?}",
            record.timeline
        );
        assert_eq!(
            record
                .recent_alerts
                .iter()
                .map(|l| l.identity.as_str())
                .collect::<Vec<_>>(),
            ["q1", "q2", "q3"]
        );

        // And once more from the cache, which now holds the merged record.
        let fourth = results(
            intake
                .submit(
                    Format::Geojson,
                    None,
                    &body(vec![quake("q4", 30.05, 121.75, 4.0)]),
                )
                .await,
        );
        assert_eq!(fourth[0].outcome, Outcome::Correlated, "{fourth:?}");
        let record = stored(&store, &incident_id);
        assert_eq!(record.alert_count, 4);
        assert!(record.timeline.iter().any(|e| e.event_id == "other-1"));

        drop(intake);
        running.await.unwrap();
    }

    /// Many requests at once: the writer decides the next batches while the flusher makes the
    /// earlier ones durable. Every alert is answered once, a resend of any of them is a
    /// duplicate, and everything answered is in the store after the writer stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_each_answered_once_and_dedup_holds_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (intake, running) = start(&store);
        let requests = 40;
        let per_request = 5;
        let bodies: Vec<Vec<u8>> = (0..requests)
            .map(|r| {
                body(
                    (0..per_request)
                        .map(|a| {
                            let i = r * per_request + a;
                            let jitter = (i % 10) as f64 / 10_000.0;
                            quake(&format!("c{i:03}"), 30.05 + jitter, 121.75, 4.0)
                        })
                        .collect(),
                )
            })
            .collect();
        let answers = futures_util::future::join_all(
            bodies
                .iter()
                .map(|b| intake.submit(Format::Geojson, None, b)),
        )
        .await;
        let mut alert_ids = std::collections::HashSet::new();
        let mut incidents = std::collections::HashSet::new();
        for answer in answers {
            for result in results(answer) {
                assert!(
                    matches!(result.outcome, Outcome::Created | Outcome::Correlated),
                    "{result:?}"
                );
                assert!(alert_ids.insert(result.alert_id.clone().unwrap()));
                incidents.insert(result.incident_id.clone().unwrap());
            }
        }
        assert_eq!(alert_ids.len(), requests * per_request);
        assert_eq!(incidents.len(), 1, "one epicentre, one incident");
        let incident_id = incidents.into_iter().next().unwrap();

        // Resending every request: all duplicates, nothing new linked.
        let again = futures_util::future::join_all(
            bodies
                .iter()
                .map(|b| intake.submit(Format::Geojson, None, b)),
        )
        .await;
        for answer in again {
            for result in results(answer) {
                assert_eq!(result.outcome, Outcome::Duplicate, "{result:?}");
            }
        }
        drop(intake);
        running.await.unwrap();
        let record = stored(&store, &incident_id);
        assert_eq!(record.alert_count, (requests * per_request) as u64);
        // Every alert has its record, naming its incident; no index keys are written.
        let alerts = store
            .scan_prefix::<AlertRecord>("feed-alert/live/")
            .unwrap();
        let linked = alerts
            .iter()
            .filter(|(_, a)| a.incident_id.as_deref() == Some(incident_id.as_str()))
            .count();
        assert_eq!(linked, requests * per_request);
        assert!(
            store
                .scan_prefix::<()>("incident-alert/")
                .unwrap()
                .is_empty(),
            "no incident-alert index keys"
        );
    }

    fn cap(identifier: &str, msg_type: &str, references: Option<&str>) -> Vec<u8> {
        let references = references
            .map(|r| format!("<references>{r}</references>"))
            .unwrap_or_default();
        format!(
            r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier><sender>test@example.org</sender>
  <sent>2026-11-28T10:00:00+08:00</sent><status>Actual</status><msgType>{msg_type}</msgType>
  <scope>Public</scope>{references}
  <info><category>Geo</category><event>Earthquake</event><urgency>Immediate</urgency>
  <severity>Severe</severity><certainty>Observed</certainty><headline>{identifier}</headline></info>
</alert>"#
        )
        .into_bytes()
    }

    /// The writer knows which identities have parked updates without scanning the store for
    /// every new alert; that index is rebuilt from the store when the writer opens, so an update
    /// parked before a restart still applies when its alert arrives after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_parked_before_a_restart_applies_when_its_alert_arrives_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let identity = "test@example.org,Q-1,2026-11-28T10:00:00+08:00";
        let (intake, running) = start(&store);
        let parked = results(
            intake
                .submit(Format::Cap, None, &cap("Q-1-U1", "Update", Some(identity)))
                .await,
        );
        assert_eq!(parked[0].outcome, Outcome::Parked, "{parked:?}");
        // Another alert in between: nothing is parked for it.
        let other = results(
            intake
                .submit(Format::Cap, None, &cap("Q-9", "Alert", None))
                .await,
        );
        assert_eq!(other[0].outcome, Outcome::Created, "{other:?}");
        drop(intake);
        running.await.unwrap();
        assert_eq!(
            store.scan_prefix::<Parked>("feed-parked/").unwrap().len(),
            1
        );

        let (intake, running) = start(&store);
        let raised = results(
            intake
                .submit(Format::Cap, None, &cap("Q-1", "Alert", None))
                .await,
        );
        assert_eq!(raised[0].outcome, Outcome::Created, "{raised:?}");
        let incident_id = raised[0].incident_id.clone().unwrap();
        // Parked while this writer runs, then its alert: the index learnt of it from the commit.
        let q2 = "test@example.org,Q-2,2026-11-28T10:00:00+08:00";
        let parked2 = results(
            intake
                .submit(Format::Cap, None, &cap("Q-2-U1", "Update", Some(q2)))
                .await,
        );
        assert_eq!(parked2[0].outcome, Outcome::Parked, "{parked2:?}");
        let raised2 = results(
            intake
                .submit(Format::Cap, None, &cap("Q-2", "Alert", None))
                .await,
        );
        let record2 = stored(&store, raised2[0].incident_id.as_deref().unwrap());
        assert_eq!(record2.alert_count, 2, "{record2:?}");
        drop(intake);
        running.await.unwrap();

        let record = stored(&store, &incident_id);
        assert_eq!(
            record.alert_count, 2,
            "the alert and its update: {record:?}"
        );
        assert!(
            record
                .timeline
                .iter()
                .any(|e| e.event_type == "alert_updated"),
            "{:?}",
            record.timeline
        );
        assert!(
            store
                .scan_prefix::<Parked>("feed-parked/")
                .unwrap()
                .is_empty()
        );
        let update = store
            .get::<AlertRecord>(&alert_key("live", parked[0].alert_id.as_deref().unwrap()))
            .unwrap()
            .unwrap();
        assert_eq!(update.incident_id.as_deref(), Some(incident_id.as_str()));
        assert_eq!(update.state, "update");
    }

    /// A correlated alert that only touches its incident's correlation entry (same source time)
    /// does not rewrite the stored entry until the touch is more than an eighth of the window
    /// ahead of it; the entry still correlates after a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn correlation_entries_are_rewritten_only_when_they_moved_enough() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = lifecycle::unix_ms_now();
        let fixed = |id: &str| {
            let mut feature = quake(id, 30.05, 121.75, 4.1);
            feature["properties"]["time"] = serde_json::json!(at);
            feature
        };
        let (intake, running) = start(&store);
        let first = results(
            intake
                .submit(Format::Geojson, None, &body(vec![fixed("c1")]))
                .await,
        );
        assert_eq!(first[0].outcome, Outcome::Created, "{first:?}");
        let incident_id = first[0].incident_id.clone().unwrap();
        let key = corr_key("live", &incident_id);
        let written = store.get::<CorrEntry>(&key).unwrap().expect("indexed");
        assert!(written.window_ms / 8 > 1_000, "{written:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = results(
            intake
                .submit(Format::Geojson, None, &body(vec![fixed("c2")]))
                .await,
        );
        assert_eq!(second[0].outcome, Outcome::Correlated, "{second:?}");
        assert_eq!(
            store.get::<CorrEntry>(&key).unwrap().unwrap(),
            written,
            "not rewritten for a touch 20 ms later"
        );
        // A later source time moves the window: written.
        let mut later = quake("c3", 30.05, 121.75, 4.1);
        later["properties"]["time"] = serde_json::json!(at + 60_000);
        let third = results(
            intake
                .submit(Format::Geojson, None, &body(vec![later]))
                .await,
        );
        assert_eq!(third[0].outcome, Outcome::Correlated, "{third:?}");
        let moved = store.get::<CorrEntry>(&key).unwrap().unwrap();
        assert_eq!(moved.last_at_unix_ms, at + 60_000);
        assert!(moved.touched_at_unix_ms > written.touched_at_unix_ms);
        drop(intake);
        running.await.unwrap();

        let (intake, running) = start(&store);
        let fourth = results(
            intake
                .submit(Format::Geojson, None, &body(vec![fixed("c4")]))
                .await,
        );
        assert_eq!(fourth[0].outcome, Outcome::Correlated, "{fourth:?}");
        assert_eq!(fourth[0].incident_id.as_deref(), Some(incident_id.as_str()));
        drop(intake);
        running.await.unwrap();
        assert_eq!(stored(&store, &incident_id).alert_count, 4);
    }
}
