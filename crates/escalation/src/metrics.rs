//! Escalation's Prometheus series: overdue deadlines, outbox depth and consumer lag.
//!
//! `muster_overdue_deadlines` is computed at scrape time from the stored escalation machines
//! (`command/<ns>/…`), the same scan `ListDeadlines` does: a reporting obligation counts while it
//! is unmet and past its due time (open and overdue, or marked late). Closed incidents' open
//! obligations are waived and do not count. Nothing is kept in memory, so it is right after a
//! restart; the records are decoded one at a time, so a scrape holds one record, not all of them
//! (it still reads every record: seconds at a million incidents, see docs/BENCHMARKS.md).

use domain::escalation::ObligationStatus;
use lifecycle::metrics::{Kind, Registry, Sample};
use store::Store;

use crate::command::{CommandRecord, command_prefix};

/// Reporting obligations late and unmet at `now_unix_ms`, over every incident of `namespace`.
pub fn overdue_deadlines(
    store: &Store,
    namespace: &str,
    now_unix_ms: i64,
) -> Result<u64, store::Error> {
    // One record at a time: a store of a million incidents is never held in memory at once.
    let mut overdue = 0u64;
    for item in store.iter_prefix::<CommandRecord>(&command_prefix(namespace)) {
        let (_, record) = item?;
        overdue += record
            .machine
            .obligations()
            .filter(|obligation| match obligation.status {
                ObligationStatus::Open => obligation.due_at_unix_ms <= now_unix_ms,
                ObligationStatus::Late => true,
                ObligationStatus::Met { .. } | ObligationStatus::Waived { .. } => false,
            })
            .count() as u64;
    }
    Ok(overdue)
}

/// Registers escalation's series in `registry`, read from `runtime` at every scrape.
pub fn register(registry: &Registry, runtime: &bus::Runtime, namespace: &str) {
    let store = runtime.store.clone();
    let probe = runtime.lag_probe();
    lifecycle::metrics::register_pipeline(
        registry,
        crate::SERVICE_NAME,
        move || store.outbox_len(),
        move || {
            let probe = probe.clone();
            async move { probe.lags().await }
        },
    );
    registry.describe(
        "muster_overdue_deadlines",
        "Reporting obligations past their due time and not yet met (computed at scrape).",
        Kind::Gauge,
    );
    let store = runtime.store.clone();
    let namespace = namespace.to_string();
    registry.collect(move || {
        let (store, namespace) = (store.clone(), namespace.clone());
        async move {
            match overdue_deadlines(&store, &namespace, lifecycle::unix_ms_now()) {
                Ok(count) => vec![Sample::new("muster_overdue_deadlines", &[], count as f64)],
                Err(error) => {
                    tracing::warn!(%error, "cannot count overdue deadlines");
                    Vec::new()
                }
            }
        }
    });
}
