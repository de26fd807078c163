//! Derived indexes: small state entries kept in step with a kind of record by [`Store::commit`]
//! itself, in the same sled transaction as the record, so they can never drift from it.
//!
//! A service registers an [`Index`] on its store ([`Store::add_index`]) before anything writes.
//! From then on every commit that writes or removes a key under the index's `record_prefix` also
//! applies the entry [`Index::derive`] returns for it (added, replaced or removed). The first
//! registration on a database that has no index of that name yet (a new one, one written by a
//! build without it, one restored from an older snapshot) builds it: one pass over the records
//! under the prefix, in batches, after which `meta/index/<name>` marks it built and later opens
//! skip the pass.
//!
//! intake's open-incident index (`incident-open/<ns>/<id>` → grade label) is the one user: the
//! `muster_open_incidents` gauge reads it at startup, O(open incidents) instead of a pass over
//! every incident record.
//!
//! Only commits made through a store with the index registered maintain it. So the marker holds
//! the record prefix, and a store that has the marker but not the index registered (a tool, or
//! a service built without it) removes the marker before its first commit that writes such a
//! record: the next registration rebuilds the index rather than trusting it. Drill retention
//! deletes index entries with their namespace (the namespace is the key's second segment). A
//! build from before the index existed must not write to a database that has one: schema version
//! 2 keeps it out ([`Error::SchemaTooNew`]).

use crate::{Error, Store, gate_exclusive, gate_shared};

/// Records between two batches of a build.
const BUILD_BATCH_LEN: usize = 1_000;

/// A write the index makes for one record write: the index key and its new encoded value
/// (`None`: remove the entry).
pub type IndexWrite = (String, Option<Vec<u8>>);

/// [`Index::derive`]: a record's key and new stored value (`None`: removed) → its index write.
pub type DeriveFn = fn(key: &str, value: Option<&[u8]>) -> Result<Option<IndexWrite>, Error>;

/// A secondary index over the records whose keys start with `record_prefix`.
#[derive(Clone, Copy)]
pub struct Index {
    /// Names the index in `meta/index/<name>` and in errors.
    pub name: &'static str,
    /// The records it follows: every state key starting with this.
    pub record_prefix: &'static str,
    /// Every index entry starts with this (and no other key does): a build clears it first.
    pub index_prefix: &'static str,
    /// The index write for a record write: the record's key and its new stored value (`None`:
    /// removed). `Ok(None)` when the key is not one of the index's records after all.
    pub derive: DeriveFn,
}

/// What [`Store::add_index`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOpened {
    /// The database already had the index.
    Present,
    /// It was built now: `records` records read, `entries` index entries written.
    Built { records: u64, entries: u64 },
}

fn marker_key(name: &str) -> String {
    format!("{MARKER_PREFIX}{name}")
}

/// `meta/index/<name>` → the index's record prefix: the index is built.
const MARKER_PREFIX: &str = "index/";

/// The built indexes of a database just opened: name and record prefix, from the markers.
pub(crate) fn built_indexes(meta: &sled::Tree) -> Result<Vec<(String, String)>, Error> {
    let mut built = Vec::new();
    for item in meta.scan_prefix(MARKER_PREFIX.as_bytes()) {
        let (key, value) = item?;
        let name = String::from_utf8_lossy(&key[MARKER_PREFIX.len()..]).into_owned();
        built.push((name, String::from_utf8_lossy(&value).into_owned()));
    }
    Ok(built)
}

impl Store {
    /// Registers `index` on this store (every clone shares it) and builds it if the database
    /// does not have it yet. Call it before anything commits: a commit running during the build
    /// could have its entry overwritten by the build's older reading of the same record.
    ///
    /// The build reads every record under the prefix once (at 1,000,000 incident records,
    /// seconds, and sled pages each one in); it runs once per database.
    pub fn add_index(&self, index: Index) -> Result<IndexOpened, Error> {
        {
            let mut indexes = self
                .indexes
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !indexes.iter().any(|known| known.name == index.name) {
                indexes.push(index);
            }
        }
        self.unregistered_indexes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|(name, _)| name != index.name);
        let marker = marker_key(index.name);
        if self.meta.contains_key(marker.as_bytes())? {
            return Ok(IndexOpened::Present);
        }
        // Entries left by an unfinished build (or by nothing): start from none.
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for item in self.state.scan_prefix(index.index_prefix.as_bytes()).keys() {
            batch.remove(item?);
            pending += 1;
            if pending == BUILD_BATCH_LEN {
                self.apply_state_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.apply_state_batch(batch)?;
        let (mut records, mut entries) = (0, 0);
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for item in self.state.scan_prefix(index.record_prefix.as_bytes()) {
            let (key, value) = item?;
            records += 1;
            let key = String::from_utf8_lossy(&key);
            if let Some((index_key, Some(entry))) = (index.derive)(&key, Some(&value))? {
                batch.insert(index_key.as_bytes(), entry);
                entries += 1;
                pending += 1;
            }
            if pending == BUILD_BATCH_LEN {
                self.apply_state_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.apply_state_batch(batch)?;
        // The marker only after the entries: a crash before it rebuilds from scratch.
        {
            let _gate = gate_shared();
            self.db.flush()?;
        }
        {
            let _gate = gate_exclusive();
            self.meta
                .insert(marker.as_bytes(), index.record_prefix.as_bytes())?;
        }
        {
            let _gate = gate_shared();
            self.db.flush()?;
        }
        Ok(IndexOpened::Built { records, entries })
    }

    /// Whether the database has `name` built (its `meta/index/<name>` marker).
    pub fn has_index(&self, name: &str) -> Result<bool, Error> {
        Ok(self.meta.contains_key(marker_key(name).as_bytes())?)
    }

    fn apply_state_batch(&self, batch: sled::Batch) -> Result<(), Error> {
        let _gate = gate_exclusive();
        let result = self.state.apply_batch(batch);
        self.note_writes(None);
        result?;
        Ok(())
    }

    /// Removes the marker of every built index this store does not maintain whose records
    /// `writes` touches (see the module docs).
    fn forget_unmaintained(
        &self,
        writes: &[(String, Option<Vec<u8>>)],
        gate_held: bool,
    ) -> Result<(), Error> {
        let mut unregistered = self
            .unregistered_indexes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut failed = Ok(());
        unregistered.retain(|(name, prefix)| {
            if failed.is_err()
                || !writes
                    .iter()
                    .any(|(key, _)| key.starts_with(prefix.as_str()))
            {
                return true;
            }
            // Inside a commit session the caller holds the gate already (it is not reentrant).
            let _gate = (!gate_held).then(gate_exclusive);
            match self.meta.remove(marker_key(name).as_bytes()) {
                Ok(_) => {
                    eprintln!(
                        "store: index {name} is not maintained by this process; it will be rebuilt \
                         by the next one that maintains it"
                    );
                    false
                }
                Err(error) => {
                    failed = Err(error.into());
                    true
                }
            }
        });
        failed
    }

    /// The index writes of `writes`, in order, for the registered indexes. `gate_held`: called
    /// inside a [`crate::CommitSession`].
    pub(crate) fn derived_writes(
        &self,
        writes: &[(String, Option<Vec<u8>>)],
        gate_held: bool,
    ) -> Result<Vec<IndexWrite>, Error> {
        if !self
            .unregistered_indexes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
        {
            self.forget_unmaintained(writes, gate_held)?;
        }
        let indexes = self
            .indexes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut derived = Vec::new();
        if indexes.is_empty() {
            return Ok(derived);
        }
        for (key, value) in writes {
            for index in indexes.iter() {
                if key.starts_with(index.record_prefix)
                    && let Some(write) = (index.derive)(key, value.as_deref())?
                {
                    derived.push(write);
                }
            }
        }
        Ok(derived)
    }
}
