//! Backup and restore: a consistent snapshot of one service's database in a single file.
//!
//! File layout (integers big-endian):
//!
//! ```text
//! magic            8 bytes  "MUSTRSNP"
//! format version   u32      SNAPSHOT_FORMAT_VERSION
//! schema version   u32      the store's SCHEMA_VERSION when the snapshot was taken
//! id floor         u64      above every id the database had handed out
//! tree count       u32
//! per tree         u16 name length, name, u64 entries, u64 body bytes, u32 CRC32 of the body
//! header CRC32     u32      of every header byte before it
//! bodies           per tree, in header order: entries as u32 key length, key, u32 value
//!                  length, value
//! ```
//!
//! [`Store::snapshot_to`] takes the process-wide gate exclusively, so no transaction or batch is in
//! flight while it reads: the file holds exactly the commits that finished before it started.
//! [`Store::restore`] reads the whole file and checks the header and every tree's count, length
//! and CRC before it writes anything.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, ID_OFFSET_KEY, INSTANCE_KEY, SCHEMA_KEY, SCHEMA_VERSION, Store, TREES};

const MAGIC: &[u8; 8] = b"MUSTRSNP";
/// The layout of the snapshot file itself (not of the trees: that is the schema version).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// Version 1 snapshots (before the audit tree) are still read: they hold the first four trees.
const SNAPSHOT_FORMAT_VERSION_V1: u32 = 1;

/// One tree of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSummary {
    pub name: String,
    pub entries: u64,
    pub bytes: u64,
    pub crc32: u32,
}

/// What a snapshot file holds, from its (verified) header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub format_version: u32,
    pub schema_version: u32,
    pub id_floor: u64,
    pub trees: Vec<TreeSummary>,
}

/// The outcome of [`Store::restore`]: the snapshot's summary and the restored store, open.
pub struct Restored {
    pub summary: SnapshotSummary,
    pub store: Store,
}

fn snapshot_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::Snapshot {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn io_error(path: &Path, doing: &str, error: std::io::Error) -> Error {
    snapshot_error(path, format!("{doing}: {error}"))
}

fn header_len(trees: &[&str]) -> usize {
    8 + 4 + 4 + 8 + 4 + trees.iter().map(|t| 2 + t.len() + 8 + 8 + 4).sum::<usize>() + 4
}

fn encode_header(summary: &SnapshotSummary) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&summary.format_version.to_be_bytes());
    out.extend_from_slice(&summary.schema_version.to_be_bytes());
    out.extend_from_slice(&summary.id_floor.to_be_bytes());
    out.extend_from_slice(&(summary.trees.len() as u32).to_be_bytes());
    for tree in &summary.trees {
        out.extend_from_slice(&(tree.name.len() as u16).to_be_bytes());
        out.extend_from_slice(tree.name.as_bytes());
        out.extend_from_slice(&tree.entries.to_be_bytes());
        out.extend_from_slice(&tree.bytes.to_be_bytes());
        out.extend_from_slice(&tree.crc32.to_be_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Reads exactly `buf.len()` bytes, or says what was cut short.
fn read_exact(
    reader: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<(), Error> {
    reader.read_exact(buf).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            snapshot_error(
                path,
                format!("the file ends inside {what}: it is truncated (an interrupted copy?)"),
            )
        } else {
            io_error(path, &format!("cannot read {what}"), error)
        }
    })
}

fn read_u16(r: &mut impl Read, path: &Path, what: &str) -> Result<u16, Error> {
    let mut b = [0; 2];
    read_exact(r, &mut b, path, what)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read, path: &Path, what: &str) -> Result<u32, Error> {
    let mut b = [0; 4];
    read_exact(r, &mut b, path, what)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read, path: &Path, what: &str) -> Result<u64, Error> {
    let mut b = [0; 8];
    read_exact(r, &mut b, path, what)?;
    Ok(u64::from_be_bytes(b))
}

/// Reads and checks the header; leaves `reader` at the first body.
fn read_header(reader: &mut impl Read, path: &Path) -> Result<SnapshotSummary, Error> {
    let mut magic = [0; 8];
    read_exact(reader, &mut magic, path, "the header")?;
    if &magic != MAGIC {
        return Err(snapshot_error(
            path,
            "not a muster snapshot (wrong magic bytes); give the file `muster backup` wrote",
        ));
    }
    let format_version = read_u32(reader, path, "the header")?;
    if format_version != SNAPSHOT_FORMAT_VERSION && format_version != SNAPSHOT_FORMAT_VERSION_V1 {
        return Err(snapshot_error(
            path,
            format!(
                "snapshot format version {format_version}, this build reads version \
                 {SNAPSHOT_FORMAT_VERSION}; restore it with the muster version that wrote it"
            ),
        ));
    }
    let schema_version = read_u32(reader, path, "the header")?;
    let id_floor = read_u64(reader, path, "the header")?;
    let count = read_u32(reader, path, "the header")?;
    let expected: &[&str] = if format_version == SNAPSHOT_FORMAT_VERSION_V1 {
        &TREES[..4]
    } else {
        &TREES
    };
    if count as usize != expected.len() {
        return Err(snapshot_error(
            path,
            format!(
                "the header lists {count} trees, expected {}: corrupt",
                expected.len()
            ),
        ));
    }
    let mut trees = Vec::new();
    for _ in 0..count {
        let len = read_u16(reader, path, "the header")?;
        let mut name = vec![0; len as usize];
        read_exact(reader, &mut name, path, "the header")?;
        let name = String::from_utf8(name)
            .map_err(|_| snapshot_error(path, "a tree name in the header is not UTF-8: corrupt"))?;
        trees.push(TreeSummary {
            name,
            entries: read_u64(reader, path, "the header")?,
            bytes: read_u64(reader, path, "the header")?,
            crc32: read_u32(reader, path, "the header")?,
        });
    }
    let crc = read_u32(reader, path, "the header")?;
    let summary = SnapshotSummary {
        format_version,
        schema_version,
        id_floor,
        trees,
    };
    let encoded = encode_header(&summary);
    if crc32fast::hash(&encoded[..encoded.len() - 4]) != crc {
        return Err(snapshot_error(
            path,
            "the header's checksum does not match: the file is corrupt",
        ));
    }
    let names: Vec<&str> = summary.trees.iter().map(|t| t.name.as_str()).collect();
    if names != expected {
        return Err(snapshot_error(
            path,
            format!("the header lists trees {names:?}, expected {expected:?}: corrupt"),
        ));
    }
    Ok(summary)
}

/// Streams the entries of one tree body, checking count, length and CRC against `tree`.
fn read_body(
    reader: &mut impl Read,
    path: &Path,
    tree: &TreeSummary,
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), Error>,
) -> Result<(), Error> {
    let what = format!("tree {:?}", tree.name);
    let mut hasher = crc32fast::Hasher::new();
    let mut bytes = 0u64;
    for _ in 0..tree.entries {
        let mut field = |hasher: &mut crc32fast::Hasher| -> Result<Vec<u8>, Error> {
            let len = read_u32(reader, path, &what)?;
            if u64::from(len) > tree.bytes - bytes.min(tree.bytes) {
                return Err(snapshot_error(
                    path,
                    format!("{what}: an entry is longer than the tree's body: corrupt"),
                ));
            }
            let mut data = vec![0; len as usize];
            read_exact(reader, &mut data, path, &what)?;
            hasher.update(&len.to_be_bytes());
            hasher.update(&data);
            bytes += 4 + u64::from(len);
            Ok(data)
        };
        let key = field(&mut hasher)?;
        let value = field(&mut hasher)?;
        each(key, value)?;
    }
    if bytes != tree.bytes || hasher.finalize() != tree.crc32 {
        return Err(snapshot_error(
            path,
            format!("{what}: checksum or length does not match the header: the file is corrupt"),
        ));
    }
    Ok(())
}

impl Store {
    /// Writes a consistent snapshot of every tree to `path` (through `<path>.partial`, renamed
    /// when complete and synced). Blocks commits while it reads; call it from a blocking thread
    /// in async code.
    pub fn snapshot_to(&self, path: impl AsRef<Path>) -> Result<SnapshotSummary, Error> {
        let path = path.as_ref();
        let partial = partial_path(path);
        let file = File::create(&partial)
            .map_err(|e| io_error(&partial, "cannot create the snapshot file", e))?;
        let mut out = BufWriter::new(file);
        let trees = [
            &self.meta,
            &self.state,
            &self.outbox,
            &self.processed,
            &self.audit,
        ];
        let result = (|| -> Result<SnapshotSummary, Error> {
            out.write_all(&vec![0; header_len(&TREES)])
                .map_err(|e| io_error(&partial, "cannot write", e))?;
            // No transaction in flight from here on: the trees hold whole commits only.
            let _gate = crate::gate_exclusive();
            self.db.flush()?;
            let id_floor = self.generate_id()? + 1;
            let mut summaries = Vec::new();
            for (name, tree) in TREES.iter().zip(trees) {
                let mut hasher = crc32fast::Hasher::new();
                let (mut entries, mut bytes) = (0u64, 0u64);
                for item in tree.iter() {
                    let (key, value) = item?;
                    for field in [&key[..], &value[..]] {
                        let len = u32::try_from(field.len()).map_err(|_| {
                            snapshot_error(path, format!("an entry of tree {name} exceeds 4 GiB"))
                        })?;
                        out.write_all(&len.to_be_bytes())
                            .and_then(|()| out.write_all(field))
                            .map_err(|e| io_error(&partial, "cannot write", e))?;
                        hasher.update(&len.to_be_bytes());
                        hasher.update(field);
                        bytes += 4 + u64::from(len);
                    }
                    entries += 1;
                }
                summaries.push(TreeSummary {
                    name: name.to_string(),
                    entries,
                    bytes,
                    crc32: hasher.finalize(),
                });
            }
            drop(_gate);
            let summary = SnapshotSummary {
                format_version: SNAPSHOT_FORMAT_VERSION,
                schema_version: SCHEMA_VERSION,
                id_floor,
                trees: summaries,
            };
            let header = encode_header(&summary);
            out.seek(SeekFrom::Start(0))
                .and_then(|_| out.write_all(&header))
                .and_then(|()| out.flush())
                .and_then(|()| out.get_ref().sync_all())
                .map_err(|e| io_error(&partial, "cannot write", e))?;
            Ok(summary)
        })();
        match result {
            Ok(summary) => {
                std::fs::rename(&partial, path)
                    .map_err(|e| io_error(path, "cannot move the finished snapshot in place", e))?;
                Ok(summary)
            }
            Err(error) => {
                let _ = std::fs::remove_file(&partial);
                Err(error)
            }
        }
    }

    /// Reads and verifies a snapshot file without writing anything: the header and every tree's
    /// entry count, length and CRC32.
    pub fn verify_snapshot(from: impl AsRef<Path>) -> Result<SnapshotSummary, Error> {
        let from = from.as_ref();
        let mut reader = open_snapshot(from)?;
        let summary = read_header(&mut reader, from)?;
        for tree in &summary.trees {
            read_body(&mut reader, from, tree, |_, _| Ok(()))?;
        }
        let mut rest = [0; 1];
        if reader
            .read(&mut rest)
            .map_err(|e| io_error(from, "cannot read", e))?
            != 0
        {
            return Err(snapshot_error(
                from,
                "bytes after the last tree: the file is corrupt",
            ));
        }
        if summary.schema_version > SCHEMA_VERSION {
            return Err(snapshot_error(
                from,
                format!(
                    "the snapshot has schema version {}, but this build of muster reads version \
                     {SCHEMA_VERSION} at most; restore it with the newer muster that wrote it",
                    summary.schema_version
                ),
            ));
        }
        Ok(summary)
    }

    /// Restores the snapshot `from` into the directory `into`, which must be missing or empty
    /// unless `force`: then, once the snapshot has been verified, the store it holds is emptied
    /// (refused while another process has it open) or, if it holds no store, its files deleted.
    /// Should writing fail after verification (a full disk), the directory holds a partial store:
    /// restore again with `force`.
    ///
    /// The restored database gets a new instance id (so its `Nats-Msg-Id`s never collide with
    /// ones the original published after the snapshot) and ids above every id in the snapshot;
    /// pending outbox events keep their message ids, so republishing them is harmless. An older
    /// schema is migrated by [`Store::open`].
    pub fn restore(
        from: impl AsRef<Path>,
        into: impl AsRef<Path>,
        force: bool,
    ) -> Result<Restored, Error> {
        let (from, into) = (from.as_ref(), into.as_ref());
        let target_error = |problem: String| Error::RestoreTarget {
            path: into.to_path_buf(),
            problem,
        };
        let non_empty = match std::fs::read_dir(into) {
            Ok(mut entries) => entries.next().is_some(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => return Err(target_error(format!("cannot read the directory: {error}"))),
        };
        if non_empty && !force {
            return Err(target_error(
                "the directory is not empty; restore into a new directory, or pass --force to \
                 replace what it holds (stop the service first)"
                    .into(),
            ));
        }
        let summary = Store::verify_snapshot(from)?;
        let open = || {
            crate::open_db(into).map_err(|source| Error::Open {
                path: into.to_path_buf(),
                source,
            })
        };
        let db = if non_empty && into.join("db").is_file() {
            // A store: open it first, so that one a running service holds is refused (sled's
            // lock) before anything is deleted, then empty every tree.
            let db = open()?;
            let _gate = crate::gate_exclusive();
            for name in db.tree_names() {
                if name != b"__sled__default" {
                    db.drop_tree(&name)?;
                }
            }
            db.clear()?;
            db
        } else {
            if non_empty {
                std::fs::remove_dir_all(into)
                    .map_err(|e| target_error(format!("cannot clear the directory: {e}")))?;
            }
            open()?
        };
        let mut reader = open_snapshot(from)?;
        read_header(&mut reader, from)?;
        for tree in &summary.trees {
            let target = db.open_tree(&tree.name)?;
            let mut batch = sled::Batch::default();
            let mut pending = 0usize;
            read_body(&mut reader, from, tree, |key, value| {
                let skip = tree.name == "meta"
                    && (key == INSTANCE_KEY || key == ID_OFFSET_KEY || key == SCHEMA_KEY);
                if !skip {
                    batch.insert(key, value);
                    pending += 1;
                }
                if pending >= 10_000 {
                    let _gate = crate::gate_exclusive();
                    target.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
                Ok(())
            })?;
            let _gate = crate::gate_exclusive();
            target.apply_batch(batch)?;
        }
        let meta = db.open_tree("meta")?;
        let _gate = crate::gate_exclusive();
        meta.insert(SCHEMA_KEY, &summary.schema_version.to_be_bytes())?;
        meta.insert(ID_OFFSET_KEY, &summary.id_floor.to_be_bytes())?;
        drop(_gate);
        let _gate = crate::gate_shared();
        db.flush()?;
        drop(_gate);
        // The database stays open: a reopen in this process can race sled's deferred release of
        // its file lock.
        let store = Store::from_db(into, db)?;
        Ok(Restored { summary, store })
    }
}

fn open_snapshot(path: &Path) -> Result<BufReader<File>, Error> {
    let file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
    Ok(BufReader::new(file))
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}
