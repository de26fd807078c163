//! Schema migrations: the ordered steps that bring a database written by an older build up to
//! [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
//!
//! A step moves the database from `from` to `from + 1`. [`Store::open`](crate::Store::open) runs
//! every step from the stored version on, each in ONE sled transaction over all four trees that
//! also writes the new `meta/schema_version`: a crash leaves the database at a version it had,
//! never between two. To change the shape of keys or values, bump `SCHEMA_VERSION` and append a
//! step here, with a test in `crates/store/tests` that opens a database of the old shape.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use crate::{Error, SCHEMA_KEY, SCHEMA_VERSION};

/// The trees a migration step may read and write: `(state, outbox, processed, meta)`.
pub type MigrationTrees<'a> = (
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
);

/// One step of the migration path.
pub struct Migration {
    /// The version this step reads; it leaves the database at `from + 1`.
    pub from: u32,
    /// What it changes, for the log and for whoever writes the next one.
    pub description: &'static str,
    /// The change itself; an `Err` aborts the step and names the problem.
    pub apply: fn(MigrationTrees<'_>) -> Result<(), ConflictableTransactionError<String>>,
}

/// The migration path, ordered by `from`; `MIGRATIONS[i].from == i`.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        from: 0,
        description: "databases from before `meta/schema_version` existed: the layout is the same \
                      as version 1, only the key is written (an example of the shape of a step)",
        apply: |_trees| Ok(()),
    },
    Migration {
        from: 1,
        description: "derived indexes (`index.rs`): commits keep them in step with their records, \
                      so a build that does not know them must no longer write here. The records \
                      are unchanged; a version-1 database has no `meta/index/<name>` marker, and \
                      the service that registers an index builds it on its first start (one pass \
                      over the indexed records), not this step",
        apply: |_trees| Ok(()),
    },
];

/// Runs every step from `found` to `SCHEMA_VERSION`.
pub(crate) fn run(
    path: &Path,
    found: u32,
    trees: (&Tree, &Tree, &Tree, &Tree),
) -> Result<(), Error> {
    for version in found..SCHEMA_VERSION {
        let failed = |problem: String| Error::Migration {
            path: path.to_path_buf(),
            from: version,
            to: version + 1,
            problem,
        };
        let step = MIGRATIONS
            .iter()
            .find(|step| step.from == version)
            .ok_or_else(|| failed("this build has no migration step from that version".into()))?;
        let _gate = crate::gate_exclusive();
        trees
            .transaction(|(state, outbox, processed, meta)| {
                (step.apply)((state, outbox, processed, meta))?;
                meta.insert(SCHEMA_KEY, &(version + 1).to_be_bytes())?;
                Ok(())
            })
            .map_err(|error| match error {
                TransactionError::Abort(problem) => failed(problem),
                TransactionError::Storage(error) => failed(error.to_string()),
            })?;
    }
    Ok(())
}
