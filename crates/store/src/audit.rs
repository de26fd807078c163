//! The audit trail: one hash-chained log per service, in the store's `audit` tree.
//!
//! Entry `n` is stored under its sequence number (u64, big-endian) and carries `prev_hash`, the
//! hash of entry `n-1` (64 zeros for the first), and `hash` = SHA-256 over `prev_hash`, a zero
//! byte and the entry's canonical encoding (the JSON of [`AuditFields`], fields in declaration
//! order). Changing any field of any entry, or deleting or inserting one, breaks the chain from
//! there on, and [`Store::verify_audit`] names the first entry that no longer verifies. Cutting
//! entries off the end leaves a valid shorter chain: readers who need to detect that write down
//! the head (seq and hash) that verification reports and compare it later.
//!
//! Appends are serialized by a mutex (the chain has one order) and are single sled inserts, not
//! transactions. They are made durable by the store's next flush: [`Store::run_audit_flusher`]
//! flushes within [`AUDIT_FLUSH_DELAY`] of an append, so an entry can be lost only if the machine
//! dies within that window; the command it records was itself flushed before it was answered.

use std::time::Duration;

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::{Error, Store};

/// How long an audit entry may wait for its flush.
pub const AUDIT_FLUSH_DELAY: Duration = Duration::from_millis(50);
/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the caller says about one command; the chain fields are added by [`Store::append_audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFields {
    pub at_unix_ms: i64,
    pub service: String,
    pub officer: String,
    pub role: String,
    pub jurisdiction_code: String,
    pub token_id: String,
    pub peer: String,
    pub action: String,
    pub incident_id: String,
    pub unit_id: String,
    /// `ok`, or the refusal's gRPC code in snake case.
    pub result: String,
    pub detail: String,
    pub namespace: String,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub fields: AuditFields,
    pub prev_hash: String,
    pub hash: String,
}

/// Which entries [`Store::list_audit`] returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub incident_id: Option<String>,
    pub officer: Option<String>,
    pub since_unix_ms: i64,
    pub refused_only: bool,
    /// The newest `limit` matches are returned (oldest first).
    pub limit: usize,
}

impl AuditFilter {
    fn matches(&self, entry: &AuditEntry) -> bool {
        self.incident_id
            .as_deref()
            .is_none_or(|id| entry.fields.incident_id == id)
            && self
                .officer
                .as_deref()
                .is_none_or(|officer| entry.fields.officer == officer)
            && entry.fields.at_unix_ms >= self.since_unix_ms
            && (!self.refused_only || entry.fields.result != "ok")
    }
}

/// The outcome of a full check of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    pub entries: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// The first entry that does not verify, and why.
    pub first_bad: Option<(u64, String)>,
}

/// The chain hash of `fields` after `prev_hash`.
pub fn chain_hash(prev_hash: &str, fields: &AuditFields) -> String {
    let mut input = Vec::with_capacity(512);
    input.extend_from_slice(prev_hash.as_bytes());
    input.push(0);
    serde_json::to_writer(&mut input, fields).expect("audit fields serialize");
    let hash = digest(&SHA256, &input);
    let mut out = String::with_capacity(64);
    for byte in hash.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<AuditEntry, Error> {
    serde_json::from_slice(value).map_err(|error| Error::Corrupt {
        key: format!("audit/{}", seq_of(key)),
        problem: error.to_string(),
    })
}

fn seq_of(key: &[u8]) -> u64 {
    <[u8; 8]>::try_from(key).map_or(0, u64::from_be_bytes)
}

impl Store {
    /// Appends one entry to the chain and returns it. Durable after the next flush (see the
    /// module docs); call [`Store::run_audit_flusher`] once per store.
    pub fn append_audit(&self, fields: AuditFields) -> Result<AuditEntry, Error> {
        let _order = self
            .audit_append
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (seq, prev_hash) = match self.audit.last()? {
            Some((key, value)) => {
                let last = decode_entry(&key, &value)?;
                (last.seq + 1, last.hash)
            }
            None => (1, GENESIS.to_string()),
        };
        let hash = chain_hash(&prev_hash, &fields);
        let entry = AuditEntry {
            seq,
            fields,
            prev_hash,
            hash,
        };
        let value = serde_json::to_vec(&entry).map_err(|source| Error::Encode {
            key: format!("audit/{seq}"),
            source,
        })?;
        self.audit.insert(seq.to_be_bytes(), value)?;
        self.audit_dirty.notify_one();
        Ok(entry)
    }

    /// The newest `filter.limit` entries matching `filter`, oldest first, and whether older
    /// matches were left out.
    pub fn list_audit(&self, filter: &AuditFilter) -> Result<(Vec<AuditEntry>, bool), Error> {
        let mut newest_first = Vec::new();
        let mut truncated = false;
        for item in self.audit.iter().rev() {
            let (key, value) = item?;
            let entry = decode_entry(&key, &value)?;
            if entry.fields.at_unix_ms < filter.since_unix_ms {
                // Entries are appended in time order (one clock, one mutex).
                break;
            }
            if filter.matches(&entry) {
                if newest_first.len() == filter.limit {
                    truncated = true;
                    break;
                }
                newest_first.push(entry);
            }
        }
        newest_first.reverse();
        Ok((newest_first, truncated))
    }

    /// Recomputes every hash and link from the first entry to the last.
    pub fn verify_audit(&self) -> Result<AuditVerification, Error> {
        let mut expected_seq = 1u64;
        let mut prev_hash = GENESIS.to_string();
        let mut entries = 0u64;
        let mut first_bad = None;
        for item in self.audit.iter() {
            let (key, value) = item?;
            entries += 1;
            if first_bad.is_some() {
                continue;
            }
            let key_seq = seq_of(&key);
            let entry = match serde_json::from_slice::<AuditEntry>(&value) {
                Ok(entry) => entry,
                Err(error) => {
                    first_bad = Some((key_seq, format!("entry does not decode: {error}")));
                    continue;
                }
            };
            let problem = if key_seq != expected_seq {
                Some(format!(
                    "seq {expected_seq} missing (next stored is {key_seq})"
                ))
            } else if entry.seq != key_seq {
                Some(format!(
                    "stored under seq {key_seq} but says seq {}",
                    entry.seq
                ))
            } else if entry.prev_hash != prev_hash {
                Some(format!(
                    "prev_hash does not link to seq {}",
                    expected_seq.saturating_sub(1)
                ))
            } else if chain_hash(&entry.prev_hash, &entry.fields) != entry.hash {
                Some("hash mismatch: the entry was changed after it was written".to_string())
            } else {
                None
            };
            match problem {
                Some(problem) => first_bad = Some((key_seq, problem)),
                None => {
                    prev_hash = entry.hash;
                    expected_seq = key_seq + 1;
                }
            }
        }
        let (head_seq, head_hash) = match self.audit.last()? {
            Some((key, value)) => (
                seq_of(&key),
                decode_entry(&key, &value).map_or_else(|_| String::new(), |entry| entry.hash),
            ),
            None => (0, String::new()),
        };
        Ok(AuditVerification {
            entries,
            head_seq,
            head_hash,
            first_bad,
        })
    }

    /// Flushes within [`AUDIT_FLUSH_DELAY`] of every append, until `stop` resolves; then flushes
    /// once more.
    pub async fn run_audit_flusher(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = self.audit_dirty.notified() => {
                    tokio::time::sleep(AUDIT_FLUSH_DELAY).await;
                    if let Err(error) = self.flush().await {
                        eprintln!("audit flush failed: {error}");
                    }
                }
            }
        }
        let _ = self.flush().await;
    }

    /// Test and repair access to the raw audit tree (tamper tests write through it).
    #[doc(hidden)]
    pub fn audit_tree_for_tests(&self) -> &sled::Tree {
        &self.audit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: i64, officer: &str, incident: &str, result: &str) -> AuditFields {
        AuditFields {
            at_unix_ms: n,
            service: "escalation".into(),
            officer: officer.into(),
            role: "officer".into(),
            jurisdiction_code: "390102".into(),
            token_id: "tok-1".into(),
            peer: "127.0.0.1:1".into(),
            action: "/muster.v1.EscalationService/Acknowledge".into(),
            incident_id: incident.into(),
            unit_id: String::new(),
            result: result.into(),
            detail: String::new(),
            namespace: "live".into(),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db")).unwrap();
        (dir, store)
    }

    #[test]
    fn entries_chain_and_verify() {
        let (_dir, store) = store();
        assert_eq!(store.verify_audit().unwrap().entries, 0);
        let first = store.append_audit(fields(1, "Li", "INC-1", "ok")).unwrap();
        let second = store
            .append_audit(fields(2, "Wang", "INC-2", "permission_denied"))
            .unwrap();
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(first.prev_hash, GENESIS);
        assert_eq!(second.prev_hash, first.hash);
        let check = store.verify_audit().unwrap();
        assert_eq!(check.first_bad, None);
        assert_eq!((check.entries, check.head_seq), (2, 2));
        assert_eq!(check.head_hash, second.hash);
    }

    #[test]
    fn any_edit_or_deletion_is_found_at_the_entry_changed() {
        let (_dir, store) = store();
        for n in 1..=5 {
            store
                .append_audit(fields(n, "Li", &format!("INC-{n}"), "ok"))
                .unwrap();
        }
        let tree = store.audit_tree_for_tests();
        // Rewrite entry 3's result, keeping its stored hash.
        let original = tree.get(3u64.to_be_bytes()).unwrap().unwrap();
        let mut entry: AuditEntry = serde_json::from_slice(&original).unwrap();
        entry.fields.result = "ok-edited".into();
        tree.insert(3u64.to_be_bytes(), serde_json::to_vec(&entry).unwrap())
            .unwrap();
        let check = store.verify_audit().unwrap();
        assert_eq!(check.first_bad.as_ref().unwrap().0, 3, "{check:?}");
        assert!(check.first_bad.unwrap().1.contains("hash mismatch"));
        // Recomputing its hash to hide the edit breaks the link from entry 4 instead.
        entry.hash = chain_hash(&entry.prev_hash, &entry.fields);
        tree.insert(3u64.to_be_bytes(), serde_json::to_vec(&entry).unwrap())
            .unwrap();
        let check = store.verify_audit().unwrap();
        assert_eq!(check.first_bad.as_ref().unwrap().0, 4, "{check:?}");
        assert!(check.first_bad.unwrap().1.contains("prev_hash"));
        // Put it back, then delete entry 2.
        tree.insert(3u64.to_be_bytes(), original).unwrap();
        assert_eq!(store.verify_audit().unwrap().first_bad, None);
        tree.remove(2u64.to_be_bytes()).unwrap();
        let check = store.verify_audit().unwrap();
        assert_eq!(check.first_bad.as_ref().unwrap().0, 3, "{check:?}");
        assert!(check.first_bad.unwrap().1.contains("seq 2 missing"));
    }

    #[test]
    fn list_filters_by_incident_officer_time_and_result_and_keeps_the_newest() {
        let (_dir, store) = store();
        for n in 1..=10 {
            let officer = if n % 2 == 0 { "Li" } else { "Wang" };
            let result = if n == 7 { "permission_denied" } else { "ok" };
            store
                .append_audit(fields(n, officer, &format!("INC-{}", n % 3), result))
                .unwrap();
        }
        let list = |filter: AuditFilter| -> (Vec<u64>, bool) {
            let (entries, truncated) = store.list_audit(&filter).unwrap();
            (entries.iter().map(|e| e.seq).collect(), truncated)
        };
        let all = AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        };
        assert_eq!(list(all.clone()).0.len(), 10);
        assert_eq!(
            list(AuditFilter {
                officer: Some("Li".into()),
                ..all.clone()
            }),
            (vec![2, 4, 6, 8, 10], false)
        );
        assert_eq!(
            list(AuditFilter {
                incident_id: Some("INC-1".into()),
                ..all.clone()
            }),
            (vec![1, 4, 7, 10], false)
        );
        assert_eq!(
            list(AuditFilter {
                refused_only: true,
                ..all.clone()
            }),
            (vec![7], false)
        );
        assert_eq!(
            list(AuditFilter {
                since_unix_ms: 8,
                ..all.clone()
            }),
            (vec![8, 9, 10], false)
        );
        assert_eq!(
            list(AuditFilter { limit: 3, ..all }),
            (vec![8, 9, 10], true)
        );
    }

    #[test]
    fn the_chain_survives_reopen_and_snapshot_restore() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let head = {
            let store = Store::open(&path).unwrap();
            store.append_audit(fields(1, "Li", "INC-1", "ok")).unwrap();
            let head = store.append_audit(fields(2, "Li", "INC-1", "ok")).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(store.flush()).unwrap();
            store.snapshot_to(dir.path().join("snap")).unwrap();
            head
        };
        let store = Store::open_after_close(&path).unwrap();
        let third = store.append_audit(fields(3, "Li", "INC-1", "ok")).unwrap();
        assert_eq!(third.prev_hash, head.hash);
        drop(store);
        Store::restore(dir.path().join("snap"), dir.path().join("restored"), false).unwrap();
        let restored = Store::open(dir.path().join("restored")).unwrap();
        let check = restored.verify_audit().unwrap();
        assert_eq!((check.entries, check.first_bad), (2, None));
        assert_eq!(check.head_hash, head.hash);
    }
}
