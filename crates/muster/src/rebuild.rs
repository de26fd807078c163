//! `muster rebuild <service>`: a stopped service's store rebuilt from the JetStream stream
//! MUSTER_EVENTS, for a lost or corrupt disk with no backup.
//!
//! The order protects what is there: the data directory is checked first (non-empty needs
//! `--force`; a store a running service holds is refused), then NATS and the stream; the new store
//! is written into a sibling directory `DIR.rebuilding-<time>`, and only when every event folded
//! is the old directory moved aside (`DIR.before-rebuild-<time>`, never deleted) and the new one
//! renamed into place. The events are folded by the service's own code (`<service>::rebuild`);
//! their message ids are recorded as processed, the outbox stays empty, and the ids start above
//! the stream's last sequence.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bus::replay::{Rebuild, RebuildReport, ReplayError};
use store::Store;

use crate::cli::RebuildArgs;
use crate::service::Service;

/// How long the command tries to reach NATS before it says it cannot.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

pub fn run(args: &RebuildArgs) -> anyhow::Result<()> {
    lifecycle::telemetry::init(lifecycle::telemetry::LogFormat::Text, "warn");
    bus::subjects::validate_namespace(&args.namespace).context("--namespace")?;
    check_target(args)?;
    let region = crate::region::load(args.region_dir.as_deref())?;
    // Checked before anything is read or written.
    let partitions = crate::service::partitions(args.service, &args.partitions, &region)?;
    let policy = crate::service::load_escalation_policy(
        args.escalation_policy.as_deref(),
        args.escalation_minute_ms,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let stamp = timestamp(lifecycle::unix_ms_now());
    let building = sibling(&args.data_dir, &format!("rebuilding-{stamp}"));
    let result = runtime.block_on(rebuild_into(args, &building, region, &partitions, policy));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            // Only the directory this run created goes; the data directory is untouched.
            if building.exists() {
                let _ = std::fs::remove_dir_all(&building);
            }
            return Err(error);
        }
    };
    let moved_aside = put_in_place(&args.data_dir, &building, &stamp)?;
    print_summary(args, &outcome, moved_aside.as_deref());
    Ok(())
}

/// What one rebuild read and wrote.
struct Outcome {
    report: RebuildReport,
    events_read: u64,
    first_sequence: u64,
    last_sequence: u64,
    instance_id: String,
    id_floor: u64,
    floors: bus::replay::ConsumerFloors,
}

/// Refuses a non-empty data directory without `--force`, and with it one a running service holds.
fn check_target(args: &RebuildArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let non_empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => bail!("cannot read the data directory {}: {error}", dir.display()),
    };
    if !non_empty {
        return Ok(());
    }
    if !args.force {
        bail!(
            "{} is not empty: rebuild refused, nothing was written. Rebuild into a new directory, \
             or pass --force to rebuild and move what it holds aside to {}.before-rebuild-<time> \
             (never deleted); stop the service first",
            dir.display(),
            dir.display()
        );
    }
    if in_use(&dir.join("db")) {
        bail!(
            "the store in {} is in use by another process: stop the service first (sled lets \
             one process at a time open a store); nothing was written",
            dir.display()
        );
    }
    Ok(())
}

/// Whether another process holds sled's lock on the store file `db`. Asked with the same kind of
/// lock (`flock`, exclusive, not waiting) and released at once, without opening the store: a
/// store opened by sled is written to, and this one is about to be moved aside untouched.
fn in_use(db: &Path) -> bool {
    let Ok(file) = std::fs::File::open(db) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

async fn rebuild_into(
    args: &RebuildArgs,
    building: &Path,
    region: Arc<domain::region::Region>,
    partitions: &[String],
    policy: Option<Arc<domain::escalation::EscalationPolicy>>,
) -> anyhow::Result<Outcome> {
    let url = bus::redact_password(&args.nats_url);
    let bus = bus::Bus::connect(&args.nats_url, "muster-rebuild", CONNECT_PATIENCE)
        .await
        .with_context(|| {
            format!(
                "NATS at {url} is unreachable: start it, or give --nats-url the server (or \
                 cluster) the services use; nothing was written"
            )
        })?;
    let mut reader = bus.read_namespace(&args.namespace).await.with_context(|| {
        format!(
            "cannot read the stream {} on {url}: is this the server the services use, and did \
             they ever run there (they create the stream)? Nothing was written",
            bus::EVENTS_STREAM
        )
    })?;
    let extent = reader.extent().clone();
    if extent.first_sequence > 1 && extent.last_sequence >= extent.first_sequence {
        bail!(
            "the stream {} starts at sequence {}: the events before it were purged or removed, \
             so a rebuild would be incomplete; nothing was written",
            bus::EVENTS_STREAM,
            extent.first_sequence
        );
    }
    // Above every id the lost store can have handed out: each of its outbox events is one stream
    // message at most.
    let id_floor = extent.last_sequence + 1;
    let store = Store::create_rebuilt(building, id_floor)
        .with_context(|| format!("cannot create the new store in {}", building.display()))?;
    let purposes = match args.service {
        Service::Intake => intake::rebuild::CONSUMERS,
        Service::Escalation => escalation::rebuild::CONSUMERS,
        Service::Dispatch => dispatch::rebuild::CONSUMERS,
    };
    // A partitioned escalation's consumers carry its partitions in their names.
    let named: Vec<String> = purposes
        .iter()
        .map(|purpose| escalation::consumer_purpose(purpose, partitions))
        .collect();
    let named_refs: Vec<&str> = named.iter().map(String::as_str).collect();
    let mut floors = bus
        .consumer_floors(args.service.name(), &args.namespace, &named_refs)
        .await
        .context("cannot read where the service's durable consumers stand")?;
    for (purpose, name) in purposes.iter().zip(&named) {
        floors.rename(name, purpose);
    }
    let mut rebuild = rebuilder(
        args,
        store.clone(),
        region,
        partitions,
        policy,
        floors.clone(),
    )?;
    let mut events_read = 0u64;
    let mut skipped = Vec::new();
    loop {
        let event = reader.next().await.with_context(|| {
            format!(
                "reading the stream stopped after sequence {}; nothing was written to {}",
                reader.last_seen(),
                args.data_dir.display()
            )
        })?;
        let Some(event) = event else { break };
        events_read += 1;
        match rebuild.apply(&event) {
            Ok(()) => {}
            Err(ReplayError::BadEvent {
                stream_sequence,
                subject,
                problem,
            }) if args.skip_bad_events => {
                store.mark_processed([event.delivery.msg_id.as_str()])?;
                skipped.push(format!("sequence {stream_sequence} ({subject}): {problem}"));
            }
            Err(error @ ReplayError::BadEvent { .. }) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "rebuild of {} stopped at a bad event; nothing was written to {}. Look at it \
                     with `nats stream get {} <sequence>`; --skip-bad-events skips such events \
                     (as the service's consumer did) and lists them",
                    args.service.name(),
                    args.data_dir.display(),
                    bus::EVENTS_STREAM
                )));
            }
            Err(error) => return Err(error.into()),
        }
    }
    reader.close().await;
    let mut report = rebuild.finish()?;
    report.skipped.extend(skipped);
    store.flush().await.context("cannot flush the new store")?;
    let outcome = Outcome {
        report,
        events_read,
        first_sequence: extent.first_sequence,
        last_sequence: extent.last_sequence,
        instance_id: store.instance_id().to_string(),
        id_floor: store.id_offset(),
        floors,
    };
    // Closed before its directory is renamed.
    drop(store);
    Ok(outcome)
}

/// The service's own rebuild over `store`.
fn rebuilder(
    args: &RebuildArgs,
    store: Store,
    region: Arc<domain::region::Region>,
    partitions: &[String],
    policy: Option<Arc<domain::escalation::EscalationPolicy>>,
    floors: bus::replay::ConsumerFloors,
) -> anyhow::Result<Box<dyn Rebuild>> {
    Ok(match args.service {
        Service::Intake => Box::new(intake::rebuild::IntakeRebuild::new(store, &args.namespace)),
        Service::Dispatch => Box::new(dispatch::rebuild::DispatchRebuild::new(
            store,
            region,
            &args.namespace,
            args.dispatch_ack_timeout_ms
                .unwrap_or(dispatch::assignment::ASSIGNMENT_ACK_TIMEOUT_MS_DEFAULT),
            floors,
            lifecycle::unix_ms_now(),
        )),
        Service::Escalation => Box::new(
            escalation::rebuild::EscalationRebuild::new(
                store,
                region,
                policy.unwrap_or_else(|| {
                    Arc::new(domain::escalation::EscalationPolicy::embedded_default())
                }),
                &args.namespace,
                floors,
            )
            .for_partitions(partitions.to_vec()),
        ),
    })
}

/// Moves an existing data directory aside and the new store into its place; returns where the
/// old one went.
fn put_in_place(dir: &Path, building: &Path, stamp: &str) -> anyhow::Result<Option<PathBuf>> {
    if in_use(&dir.join("db")) {
        bail!(
            "the service was started on {} during the rebuild: stop it, then move the rebuilt \
             store from {} into place (or run the rebuild again with --force)",
            dir.display(),
            building.display()
        );
    }
    let mut moved_aside = None;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                let aside = sibling(dir, &format!("before-rebuild-{stamp}"));
                std::fs::rename(dir, &aside).with_context(|| {
                    format!(
                        "cannot move {} aside to {}; the rebuilt store is in {}",
                        dir.display(),
                        aside.display(),
                        building.display()
                    )
                })?;
                moved_aside = Some(aside);
            } else {
                std::fs::remove_dir(dir)
                    .with_context(|| format!("cannot replace the empty {}", dir.display()))?;
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => bail!("cannot read {}: {error}", dir.display()),
    }
    std::fs::rename(building, dir).with_context(|| {
        format!(
            "cannot move the rebuilt store from {} to {}",
            building.display(),
            dir.display()
        )
    })?;
    Ok(moved_aside)
}

fn print_summary(args: &RebuildArgs, outcome: &Outcome, moved_aside: Option<&Path>) {
    let report = &outcome.report;
    println!(
        "rebuilt {} ({}) in {} from {} on {}",
        args.service.name(),
        args.namespace,
        args.data_dir.display(),
        bus::EVENTS_STREAM,
        bus::redact_password(&args.nats_url)
    );
    println!(
        "  events read {:>9}  (namespace {}, stream sequences {}..={})",
        outcome.events_read, args.namespace, outcome.first_sequence, outcome.last_sequence
    );
    for (what, count) in &report.counts {
        println!("  {what:<28} {count:>9}");
    }
    println!(
        "  {:<28} {:>9}",
        "message ids marked processed", report.processed_ids
    );
    println!("  outbox                               0  (the events are on the stream already)");
    for (purpose, floor) in &outcome.floors.floors {
        match floor {
            Some(floor) if *floor < outcome.last_sequence => println!(
                "  consumer {purpose}: acknowledged up to sequence {floor}; what it has not \
                 handled after that is left to the service"
            ),
            Some(floor) => println!("  consumer {purpose}: acknowledged up to sequence {floor}"),
            None => println!(
                "  consumer {purpose}: not on the server; it starts over when the service starts, \
                 and every input the stream holds counts as handled"
            ),
        }
    }
    println!(
        "  new instance id {}, ids start above {}",
        outcome.instance_id, outcome.id_floor
    );
    if let Some(aside) = moved_aside {
        println!("  the old directory was moved aside to {}", aside.display());
    }
    if !report.skipped.is_empty() {
        println!("bad events skipped: {}", report.skipped.len());
        for line in &report.skipped {
            println!("  {line}");
        }
    }
    println!("not rebuilt (the stream does not hold it):");
    for line in &report.not_rebuilt {
        println!("  - {line}");
    }
    println!(
        "start the service now: its durable consumers resume after sequence {} and skip what \
         the rebuild folded",
        outcome.last_sequence
    );
}

/// `DIR.<suffix>` beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

/// `20261128T143800Z` for a Unix time in milliseconds (UTC).
fn timestamp(unix_ms: i64) -> String {
    let seconds = unix_ms.div_euclid(1000);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = domain::time::civil_from_days(seconds.div_euclid(86_400));
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_name_the_moved_directory() {
        assert_eq!(super::timestamp(0), "19700101T000000Z");
        assert_eq!(super::timestamp(1_795_847_244_000), "20261128T062724Z");
    }
}
