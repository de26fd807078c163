//! What `muster rebuild` needs from the store: a new database whose ids start above a floor, the
//! message ids of a replayed stream recorded as processed in bulk, and commits stripped of their
//! outbox events (a replayed handler's events are already on the stream).

use std::path::Path;

use crate::{Commit, Error, ID_OFFSET_KEY, Store};

/// Most processed ids written per sled batch.
const PROCESSED_BATCH_LEN_MAX: usize = 10_000;

impl Store {
    /// Creates a new store in `path` (missing or empty) whose ids start above `id_floor`, like a
    /// restored one: the rebuilt records may hold ids an earlier database handed out, and sled's
    /// id generator starts again at 0 in a new directory. It gets a new instance id, so its
    /// `Nats-Msg-Id`s never repeat one the lost database published.
    pub fn create_rebuilt(path: impl AsRef<Path>, id_floor: u64) -> Result<Store, Error> {
        let path = path.as_ref();
        let target_error = |problem: String| Error::RestoreTarget {
            path: path.to_path_buf(),
            problem,
        };
        match std::fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(target_error(
                        "the directory is not empty; a rebuilt store goes into a new directory"
                            .into(),
                    ));
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(target_error(format!("cannot read the directory: {error}"))),
        }
        let db = crate::open_db(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        {
            let meta = db.open_tree("meta")?;
            let _gate = crate::gate_exclusive();
            meta.insert(ID_OFFSET_KEY, &id_floor.to_be_bytes())?;
        }
        // `from_db` adds the instance id and the schema version and flushes.
        Store::from_db(path, db)
    }

    /// Records every id in `msg_ids` as processed, without any state change: the bus messages a
    /// rebuild replayed, so that a redelivery to the service's durable consumers is skipped.
    pub fn mark_processed<'a>(
        &self,
        msg_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<usize, Error> {
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        let mut total = 0usize;
        for msg_id in msg_ids {
            batch.insert(msg_id.as_bytes(), &[]);
            pending += 1;
            total += 1;
            if pending >= PROCESSED_BATCH_LEN_MAX {
                let _gate = crate::gate_exclusive();
                self.processed.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        let _gate = crate::gate_exclusive();
        self.processed.apply_batch(batch)?;
        Ok(total)
    }

    /// The id floor this store's ids start above (`meta/id_offset`; 0 for a store never restored
    /// or rebuilt).
    pub fn id_offset(&self) -> u64 {
        self.id_offset
    }
}

impl Commit {
    /// Drops the outbox events staged so far and says how many there were: a handler replayed by
    /// a rebuild stages the events it once published, and they are on the stream already.
    pub fn drop_events(&mut self) -> usize {
        let dropped = self.events.len();
        self.events.clear();
        dropped
    }
}
