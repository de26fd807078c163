//! Retention of drill data: the state keys of a drill namespace (`<kind>/drill.<id>/...`) are
//! deleted together once the drill's newest record is old enough.
//!
//! A drill's age is the newest `*_unix_ms` field anywhere in any of its state records (incident
//! `updated_at_unix_ms`, event `at_unix_ms`, timers' due times, ...): its last write, as far as
//! the records tell. A namespace whose records carry no such field has no age and is never
//! deleted by age. Only the `state` tree is touched: processed message ids are not namespaced
//! (and are harmless), and pending outbox events are left for the relay.

use std::collections::BTreeMap;

use crate::{Error, Store};

/// One drill namespace found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillNamespace {
    /// `drill.<id>`.
    pub namespace: String,
    /// How many state keys it holds.
    pub keys: usize,
    /// The newest `*_unix_ms` value in its records, if any record has one.
    pub newest_unix_ms: Option<i64>,
}

/// The namespace of a state key: its second segment, when that is a drill namespace.
fn drill_namespace(key: &[u8]) -> Option<&str> {
    let key = std::str::from_utf8(key).ok()?;
    let namespace = key.split('/').nth(1)?;
    namespace.starts_with("drill.").then_some(namespace)
}

/// The largest integer under a field named `*_unix_ms`, at any depth.
fn newest_timestamp(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .filter_map(|(name, value)| {
                let own = name.ends_with("_unix_ms").then(|| value.as_i64()).flatten();
                own.max(newest_timestamp(value))
            })
            .max(),
        serde_json::Value::Array(items) => items.iter().filter_map(newest_timestamp).max(),
        _ => None,
    }
}

impl Store {
    /// Every drill namespace with state keys, with its key count and last write.
    pub fn drill_namespaces(&self) -> Result<Vec<DrillNamespace>, Error> {
        let mut found: BTreeMap<String, DrillNamespace> = BTreeMap::new();
        for item in self.state.iter() {
            let (key, value) = item?;
            let Some(namespace) = drill_namespace(&key) else {
                continue;
            };
            let entry = found
                .entry(namespace.to_string())
                .or_insert_with(|| DrillNamespace {
                    namespace: namespace.to_string(),
                    keys: 0,
                    newest_unix_ms: None,
                });
            entry.keys += 1;
            let key = String::from_utf8_lossy(&key);
            let value: serde_json::Value = crate::decode_value(&key, &value)?;
            entry.newest_unix_ms = entry.newest_unix_ms.max(newest_timestamp(&value));
        }
        Ok(found.into_values().collect())
    }

    /// Deletes every state key of the drill namespace `namespace` (`drill.<id>`) in one batch;
    /// returns how many. Refuses any other namespace.
    pub fn delete_drill_namespace(&self, namespace: &str) -> Result<usize, Error> {
        if !namespace.starts_with("drill.") || namespace.contains('/') {
            return Err(Error::NotADrill {
                namespace: namespace.to_string(),
            });
        }
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in self.state.iter().keys() {
            let key = item?;
            if drill_namespace(&key) == Some(namespace) {
                batch.remove(key);
                count += 1;
            }
        }
        let _gate = crate::gate_exclusive();
        let result = self.state.apply_batch(batch);
        self.note_writes(None);
        result?;
        Ok(count)
    }
}
