//! Dispatch's Prometheus series: units by type and status, outbox depth and consumer lag.
//!
//! `muster_units{type,status}` is computed at scrape time from the unit records
//! (`unit/<ns>/…`); retired units count as status `retired`. Every type present reports its
//! `available` count, 0 included, so "no unit of this type is free" is a visible series.

use std::collections::BTreeMap;

use lifecycle::metrics::{Kind, Registry, Sample};
use store::Store;

use crate::registry::{UnitRecord, unit_key};

/// `(unit type, status) → count` over the namespace's unit records.
pub fn unit_counts(
    store: &Store,
    namespace: &str,
) -> Result<BTreeMap<(String, &'static str), u64>, store::Error> {
    let mut counts = BTreeMap::new();
    for (_, record) in store.scan_prefix::<UnitRecord>(&unit_key(namespace, ""))? {
        let unit_type = record.unit.unit_type.clone();
        counts.entry((unit_type.clone(), "available")).or_insert(0);
        let status = if record.retired.is_some() {
            "retired"
        } else {
            record.state.status.as_str()
        };
        *counts.entry((unit_type, status)).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Registers dispatch's series in `registry`, read from `runtime` at every scrape.
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
        "muster_units",
        "Responder units by type and status (available, dispatched, enroute, on_scene, staging, returning, out_of_service, retired).",
        Kind::Gauge,
    );
    let store = runtime.store.clone();
    let namespace = namespace.to_string();
    registry.collect(move || {
        let (store, namespace) = (store.clone(), namespace.clone());
        async move {
            match unit_counts(&store, &namespace) {
                Ok(counts) => counts
                    .into_iter()
                    .map(|((unit_type, status), count)| {
                        Sample::new(
                            "muster_units",
                            &[("type", &unit_type), ("status", status)],
                            count as f64,
                        )
                    })
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "cannot count units");
                    Vec::new()
                }
            }
        }
    });
}
