//! Operations on one service's store: `muster backup`, `muster restore`, `muster retention`.
//!
//! They work on a STOPPED service's data directory: sled holds an exclusive lock on its files, so
//! a running service's directory cannot be opened by another process (the error says so). A
//! running process takes an online snapshot with `store::Store::snapshot_to`, which holds back
//! commits while it reads, so the file holds whole commits only.

use std::path::Path;

use anyhow::{Context, bail};
use store::{SnapshotSummary, Store};

use crate::cli::{BackupArgs, RestoreArgs, RetentionArgs};

/// Opens an existing store, with a hint when the service still holds it.
fn open_existing(dir: &Path) -> anyhow::Result<Store> {
    if !dir.join("db").is_file() {
        bail!(
            "{} holds no service store (no sled `db` file); give --data-dir the service's own \
             directory, e.g. .muster/intake",
            dir.display()
        );
    }
    Store::open(dir).map_err(|error| {
        let text = error.to_string();
        if text.contains("could not acquire lock") {
            anyhow::anyhow!(
                "the store in {} is in use by another process: stop the service first (sled lets \
                 one process at a time open a store)",
                dir.display()
            )
        } else {
            anyhow::Error::new(error).context(format!("cannot open the store in {}", dir.display()))
        }
    })
}

fn print_trees(summary: &SnapshotSummary) {
    println!("  schema version {}", summary.schema_version);
    for tree in &summary.trees {
        println!(
            "  {:<10} {:>9} entries {:>12} bytes  crc32 {:08x}",
            tree.name, tree.entries, tree.bytes, tree.crc32
        );
    }
}

pub fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let store = open_existing(&args.data_dir)?;
    let summary = store.snapshot_to(&args.out).with_context(|| {
        format!(
            "cannot back up {} to {}",
            args.data_dir.display(),
            args.out.display()
        )
    })?;
    println!(
        "backup of {} written to {}",
        args.data_dir.display(),
        args.out.display()
    );
    print_trees(&summary);
    Ok(())
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let restored = Store::restore(&args.from, &args.data_dir, args.force).map_err(|error| {
        let text = error.to_string();
        if text.contains("could not acquire lock") {
            anyhow::anyhow!(
                "the store in {} is in use by another process: stop the service first",
                args.data_dir.display()
            )
        } else {
            anyhow::Error::new(error).context("restore refused; nothing was written")
        }
    })?;
    println!(
        "restored {} into {} (new instance id {})",
        args.from.display(),
        args.data_dir.display(),
        restored.store.instance_id()
    );
    print_trees(&restored.summary);
    Ok(())
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

pub fn retention(args: &RetentionArgs) -> anyhow::Result<()> {
    let store = open_existing(&args.data_dir)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_millis() as i64;
    let cutoff = now_ms - i64::from(args.drill_older_than) * DAY_MS;
    let namespaces = store
        .drill_namespaces()
        .context("cannot read the drill namespaces")?;
    if namespaces.is_empty() {
        println!("no drill data in {}", args.data_dir.display());
    }
    let mut deleted = 0;
    for ns in namespaces {
        let age = ns.newest_unix_ms.map(|newest| (now_ms - newest) / DAY_MS);
        match ns.newest_unix_ms {
            Some(newest) if newest < cutoff => {
                if args.dry_run {
                    println!(
                        "would delete {}: {} keys, last write {} days ago",
                        ns.namespace,
                        ns.keys,
                        age.unwrap_or_default()
                    );
                } else {
                    let count = store
                        .delete_drill_namespace(&ns.namespace)
                        .with_context(|| format!("cannot delete {}", ns.namespace))?;
                    deleted += count;
                    println!(
                        "deleted {}: {count} keys, last write {} days ago",
                        ns.namespace,
                        age.unwrap_or_default()
                    );
                }
            }
            Some(_) => println!(
                "kept {}: {} keys, last write {} days ago",
                ns.namespace,
                ns.keys,
                age.unwrap_or_default()
            ),
            None => println!(
                "kept {}: {} keys, no record carries a timestamp, so it has no age \
                 and is never deleted by retention",
                ns.namespace, ns.keys
            ),
        }
    }
    if deleted > 0 {
        // Store::flush runs on a blocking thread of a runtime; this command has none yet.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("cannot start the runtime to flush the store")?;
        runtime
            .block_on(store.flush())
            .context("cannot flush the store")?;
    }
    Ok(())
}
