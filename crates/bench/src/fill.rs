//! `muster-bench fill`: puts N incidents into the three stores of a stopped `muster up` data
//! directory, in the services' real formats, fast enough to reach 1,000,000 (issue 8, T4/T5).
//!
//! Nothing here writes a record itself. The fill is an in-process bus: every event a service
//! commits to its outbox is taken out and handed to the same handlers the services run on their
//! durable consumers (intake's projection, escalation's grader and notify requester, dispatch's
//! assigner and unit-command handler), each of whose commits is applied with its processed
//! message id, as `bus::consumer` does. So after a fill every store holds what it would hold had
//! the incidents come through a running system: intake's incident records (built by its
//! projection, as for an incident reported at another intake instance) with request and sequence
//! keys, escalation's gradings, command records and notification requests, dispatch's
//! assignment records and unit bookings, and every processed id.
//!
//! Each incident is reported, graded and booked; its units acknowledge; then, except for the last
//! `--open` incidents, it is closed, its units are released and cleared back to available (so
//! every incident books real units rather than meeting an empty roster).
//!
//! Through the handlers a 2-core machine does about 90 incidents/s (some 48 deliveries and 20
//! sled transactions each), so a million would take three hours. So only the first `--templates`
//! closed incidents and the last `--open` ones go through them; every other (closed) incident is
//! a copy of a template's final records — each key that names the template's id, in all three
//! stores, with the id replaced (ids are fixed-width, so sizes are kept) — plus its request key,
//! written 250 incidents to a commit. Left out for the copies: processed message ids (written for
//! the handled incidents only). Left out for all: the webhook notifier's delivery records (it
//! would wait for retries) and the JetStream streams (the stores are filled, the stream is not).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bus::subjects;
use bus::{Delivery, Handler, HandlerError};
use domain::event::{EventBody, IncidentClosed, IncidentEvent};
use muster_proto::convert;
use muster_proto::v1 as pb;
use store::{Commit, Committed, Store};

use crate::generate;

/// Incidents between two flushes of the three stores.
const FLUSH_EVERY: u64 = 2_000;
/// Copied incidents per commit (one sled transaction per store).
const REPLICATE_BATCH: u64 = 250;

/// What `fill` was asked for.
pub struct FillOptions {
    pub data_dir: PathBuf,
    pub count: u64,
    pub open: u64,
    /// Closed incidents that go through the handlers first; the rest of the closed ones are
    /// copies of their records.
    pub templates: u64,
    pub namespace: String,
}

/// What a fill did, printed as JSON.
#[derive(Debug, serde::Serialize)]
pub struct FillReport {
    pub incidents: u64,
    pub closed: u64,
    /// Of the incidents, those written as copies of a template's records.
    pub replicated: u64,
    pub first_incident_id: String,
    pub last_incident_id: String,
    pub seconds: f64,
    pub incidents_per_second: f64,
    pub deliveries: u64,
    pub units_booked: u64,
    pub store_bytes: [(String, u64); 3],
    /// Seconds each store took to checkpoint at the end (sled replays the fill's log and writes
    /// a snapshot, as a service does when it stops; `MUSTER_SLED_CHECKPOINT_ON_EXIT=0`: none).
    pub checkpoint_seconds: [(String, f64); 3],
}

const INTAKE: usize = 0;
const ESCALATION: usize = 1;
const DISPATCH: usize = 2;
const SERVICE_NAMES: [&str; 3] = ["intake", "escalation", "dispatch"];

/// One durable consumer of one service, as the service's `Runtime` starts it.
struct Consumer {
    service: usize,
    filters: Vec<String>,
    handler: Box<dyn Handler>,
}

/// The in-process bus: the three stores and their consumers.
struct Fill {
    stores: [Store; 3],
    consumers: Vec<Consumer>,
    queue: VecDeque<Delivery>,
    namespace: String,
    deliveries: u64,
    /// Units booked by the `units_assigned` events seen since this was last drained.
    booked: Vec<(String, String)>,
    /// Units released by them.
    released: Vec<String>,
    commands: u64,
}

/// Fills the stores; the sled work runs inline (this is the tool's only task).
pub async fn run(options: &FillOptions) -> Result<FillReport> {
    let region = Arc::new(domain::region::Region::embedded_default());
    let policy = Arc::new(domain::escalation::EscalationPolicy::embedded_default());
    let rosters = Arc::new(
        domain::roster::Rosters::embedded_default(&region.tree)
            .map_err(|e| anyhow!("the shipped rosters: {e}"))?,
    );
    let namespace = options.namespace.clone();
    let open = |service: &str| -> Result<Store> {
        let dir = options.data_dir.join(service);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Store::open(&dir).with_context(|| {
            format!(
                "open {} (is a muster using this data directory still running?)",
                dir.display()
            )
        })
    };
    let stores = [open("intake")?, open("escalation")?, open("dispatch")?];
    // As intake does when it starts: its commits keep the open-incident index.
    intake::register_open_incidents(&stores[INTAKE])
        .map_err(|e| anyhow!("intake's open-incident index: {e}"))?;
    let now = now_ms();
    let seeded = dispatch::registry::seed(&stores[DISPATCH], &region, &namespace, now)
        .map_err(|e| anyhow!("seed units: {e}"))?;
    eprintln!("fill: {seeded} units seeded");
    let (changes, _) = tokio::sync::broadcast::channel(1);
    let desk = dispatch::AssignmentDesk::new(
        region.clone(),
        dispatch::assignment::ASSIGNMENT_ACK_TIMEOUT_MS_DEFAULT,
    );
    let consumers = vec![
        Consumer {
            service: INTAKE,
            filters: vec![subjects::all_incident_events_filter(&namespace)],
            handler: Box::new(intake::Projection::new(stores[INTAKE].clone(), changes)),
        },
        Consumer {
            service: ESCALATION,
            filters: [subjects::REPORTED, subjects::UPDATED, subjects::CLOSED]
                .iter()
                .map(|kind| subjects::incident_event_filter(&namespace, kind))
                .collect(),
            handler: Box::new(escalation::Grader::new(
                stores[ESCALATION].clone(),
                region.clone(),
                policy,
            )),
        },
        Consumer {
            service: ESCALATION,
            filters: escalation::notify::NotifyRequester::filters(&namespace, &[]),
            handler: Box::new(escalation::notify::NotifyRequester::new(
                namespace.clone(),
                rosters,
            )),
        },
        Consumer {
            service: DISPATCH,
            filters: [subjects::GRADED, subjects::CLOSED]
                .iter()
                .map(|kind| subjects::incident_event_filter(&namespace, kind))
                .collect(),
            handler: Box::new(dispatch::Assigner::new(
                stores[DISPATCH].clone(),
                region.clone(),
            )),
        },
        Consumer {
            service: DISPATCH,
            filters: vec![subjects::unit_event_filter(
                &namespace,
                subjects::UNIT_COMMAND,
            )],
            handler: Box::new(dispatch::UnitCommandHandler::new(
                stores[DISPATCH].clone(),
                desk,
                namespace.clone(),
            )),
        },
    ];
    let mut fill = Fill {
        stores,
        consumers,
        queue: VecDeque::new(),
        namespace: namespace.clone(),
        deliveries: 0,
        booked: Vec::new(),
        released: Vec::new(),
        commands: 0,
    };
    let towns = generate::townships()?;
    let sequence_key = intake::sequence_key(&namespace);
    let first_sequence: u64 = fill.stores[INTAKE].get::<u64>(&sequence_key)?.unwrap_or(0) + 1;
    let run_tag = format!("fill{now}");
    let started = Instant::now();
    let mut report = FillReport {
        incidents: 0,
        closed: 0,
        replicated: 0,
        first_incident_id: String::new(),
        last_incident_id: String::new(),
        seconds: 0.0,
        incidents_per_second: 0.0,
        deliveries: 0,
        units_booked: 0,
        store_bytes: Default::default(),
        checkpoint_seconds: Default::default(),
    };
    let templates_len = options
        .templates
        .min(options.count.saturating_sub(options.open));
    let mut templates: Vec<Template> = Vec::new();
    let mut replicated = Replicated::default();
    for i in 0..options.count {
        let sequence = first_sequence + i;
        let now = now_ms();
        if i >= templates_len && i + options.open < options.count {
            // The middle of the fill: copies of the closed template incidents' final records.
            if templates.is_empty() {
                fill.flush().await?;
                templates = collect_templates(&fill.stores, first_sequence, templates_len)?;
                eprintln!("fill: {} template incidents collected", templates.len());
            }
            let template = &templates[((i - templates_len) % templates.len() as u64) as usize];
            let incident_id = intake::incident_id_for(now, sequence);
            replicated.add(template, &incident_id, &namespace, &run_tag, i, sequence)?;
            if replicated.incidents >= REPLICATE_BATCH {
                replicated.commit(&fill.stores, &sequence_key)?;
            }
            if report.first_incident_id.is_empty() {
                report.first_incident_id = incident_id.clone();
            }
            report.last_incident_id = incident_id;
            report.incidents += 1;
            report.closed += 1;
            report.replicated += 1;
            if report.incidents.is_multiple_of(FLUSH_EVERY * 25) {
                replicated.commit(&fill.stores, &sequence_key)?;
                fill.flush().await?;
                progress(&report, started);
            }
            continue;
        }
        replicated.commit(&fill.stores, &sequence_key)?;
        let request = generate::report(i, &run_tag, &namespace, &towns);
        let valid = intake::validate_report(&request, &region)
            .map_err(|problems| anyhow!("generated report {i} is invalid: {problems:?}"))?;
        let incident_id = intake::incident_id_for(now, sequence);
        let partition = region
            .tree
            .partition_of(&valid.report.township_code)
            .to_string();
        // Intake's half of ReportIncident: the request and sequence keys and the `reported`
        // event in one commit; the projection below writes the record from the event.
        let reported = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.clone(),
            namespace: namespace.clone(),
            at_unix_ms: now,
            source_service: intake::SERVICE_NAME.into(),
            body: EventBody::Reported(valid.report),
        };
        let mut commit = Commit::new();
        commit.put(sequence_key.clone(), &sequence)?;
        commit.put(
            intake::request_key(&namespace, &valid.request_id),
            &incident_id,
        )?;
        commit.event(
            subjects::incident_event(&namespace, &partition, &incident_id, subjects::REPORTED)?,
            convert::encode_event(&reported),
        );
        fill.stores[INTAKE].commit(&commit)?;
        fill.pump()?;
        // The booked units acknowledge (Dispatched → Enroute), as their terminals would.
        let booked = std::mem::take(&mut fill.booked);
        report.units_booked += booked.len() as u64;
        for (unit_id, incident) in &booked {
            fill.unit_command(
                unit_id,
                pb::UnitStatusEvent::Acknowledge,
                incident,
                now_ms(),
            )?;
        }
        fill.pump()?;
        if i + options.open < options.count {
            fill.close(&partition, &incident_id, now_ms())?;
            fill.pump()?;
            // Released units are back in quarters: Returning → Available.
            for unit_id in std::mem::take(&mut fill.released) {
                fill.unit_command(&unit_id, pb::UnitStatusEvent::Clear, "", now_ms())?;
            }
            fill.pump()?;
            report.closed += 1;
        }
        fill.released.clear();
        fill.booked.clear();
        if report.first_incident_id.is_empty() {
            report.first_incident_id = incident_id.clone();
        }
        report.last_incident_id = incident_id;
        report.incidents += 1;
        if report.incidents.is_multiple_of(FLUSH_EVERY) {
            fill.flush().await?;
            progress(&report, started);
        }
    }
    replicated.commit(&fill.stores, &sequence_key)?;
    fill.flush().await?;
    report.seconds = started.elapsed().as_secs_f64();
    report.incidents_per_second = report.incidents as f64 / report.seconds.max(1e-9);
    report.deliveries = fill.deliveries;
    drop(fill);
    for (index, name) in SERVICE_NAMES.iter().enumerate() {
        let dir = options.data_dir.join(name);
        if store::checkpoint_on_exit() {
            let took = store::checkpoint(&dir)
                .with_context(|| format!("checkpointing {}", dir.display()))?;
            report.checkpoint_seconds[index] = (name.to_string(), took.as_secs_f64());
        }
        report.store_bytes[index] = (name.to_string(), dir_bytes(&dir));
    }
    Ok(report)
}

fn progress(report: &FillReport, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "fill: {} incidents in {seconds:.0} s ({:.0}/s)",
        report.incidents,
        report.incidents as f64 / seconds
    );
}

/// The final state records of one closed incident that went through the handlers, per store:
/// every key naming its id, with the value as the service wrote it.
struct Template {
    incident_id: String,
    records: [Vec<(String, String)>; 3],
}

/// The incident id a key names (`incident/<ns>/INC-…`, `command/<ns>/INC-…/…`), if any.
fn incident_id_in(key: &str) -> Option<&str> {
    let start = key.find("INC-")?;
    let rest = &key[start..];
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Reads back the records of the template incidents (sequences `first..first + len`).
fn collect_templates(stores: &[Store; 3], first_sequence: u64, len: u64) -> Result<Vec<Template>> {
    let mut by_id: std::collections::BTreeMap<String, Template> = Default::default();
    for (index, store) in stores.iter().enumerate() {
        for item in store.iter_prefix::<serde_json::Value>("") {
            let (key, value) = item?;
            let Some(id) = incident_id_in(&key) else {
                continue;
            };
            let Some(sequence) = id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if sequence < first_sequence || sequence >= first_sequence + len {
                continue;
            }
            let template = by_id.entry(id.to_string()).or_insert_with(|| Template {
                incident_id: id.to_string(),
                records: Default::default(),
            });
            template.records[index].push((key.clone(), serde_json::to_string(&value)?));
        }
    }
    anyhow::ensure!(!by_id.is_empty(), "no template incidents to copy");
    Ok(by_id.into_values().collect())
}

/// Copies staged for one commit per store.
#[derive(Default)]
struct Replicated {
    commits: [Commit; 3],
    incidents: u64,
    last_sequence: u64,
}

impl Replicated {
    /// Stages a copy of `template` as `incident_id`: its records with the id replaced (ids are
    /// fixed-width, so every record keeps its size), and the report's request key.
    fn add(
        &mut self,
        template: &Template,
        incident_id: &str,
        namespace: &str,
        run_tag: &str,
        i: u64,
        sequence: u64,
    ) -> Result<()> {
        for (index, records) in template.records.iter().enumerate() {
            for (key, value) in records {
                let key = key.replace(&template.incident_id, incident_id);
                let value: serde_json::Value =
                    serde_json::from_str(&value.replace(&template.incident_id, incident_id))?;
                self.commits[index].put(key, &value)?;
            }
        }
        self.commits[INTAKE].put(
            intake::request_key(namespace, &format!("bench-{run_tag}-r{i}")),
            &incident_id,
        )?;
        self.incidents += 1;
        self.last_sequence = sequence;
        Ok(())
    }

    fn commit(&mut self, stores: &[Store; 3], sequence_key: &str) -> Result<()> {
        if self.incidents == 0 {
            return Ok(());
        }
        self.commits[INTAKE].put(sequence_key.to_string(), &self.last_sequence)?;
        for (store, commit) in stores.iter().zip(&self.commits) {
            store.commit(commit)?;
        }
        self.commits = Default::default();
        self.incidents = 0;
        Ok(())
    }
}

impl Fill {
    /// Takes a store's outbox events (as the relay would publish them) onto the queue.
    fn publish_from(&mut self, service: usize) -> Result<()> {
        let store = &self.stores[service];
        let pending = store.outbox_pending(usize::MAX)?;
        if pending.is_empty() {
            return Ok(());
        }
        let keys: Vec<[u8; 8]> = pending.iter().map(|event| event.key).collect();
        for event in pending {
            self.queue.push_back(Delivery {
                subject: event.subject,
                msg_id: event.msg_id,
                payload: event.payload.into(),
                delivered: 1,
            });
        }
        store.outbox_remove(&keys)?;
        Ok(())
    }

    /// Delivers everything published, and everything that publishes, until nothing is left.
    fn pump(&mut self) -> Result<()> {
        for service in [INTAKE, ESCALATION, DISPATCH] {
            self.publish_from(service)?;
        }
        while let Some(delivery) = self.queue.pop_front() {
            self.deliveries += 1;
            self.observe(&delivery);
            for index in 0..self.consumers.len() {
                if !self.consumers[index]
                    .filters
                    .iter()
                    .any(|filter| subject_matches(filter, &delivery.subject))
                {
                    continue;
                }
                let service = self.consumers[index].service;
                self.consume(index, &delivery)?;
                self.publish_from(service)?;
            }
        }
        Ok(())
    }

    /// Notes the units a `units_assigned` booked or released.
    fn observe(&mut self, delivery: &Delivery) {
        let Some(subjects::IncidentSubject {
            incident_id,
            event_type,
            ..
        }) = subjects::parse_incident_event(&delivery.subject)
        else {
            return;
        };
        if event_type != subjects::UNITS_ASSIGNED {
            return;
        }
        let Ok(event) = convert::decode_event(&delivery.payload, &delivery.msg_id) else {
            return;
        };
        if let EventBody::UnitsAssigned(units) = event.body {
            for assignment in units.assignments {
                self.booked
                    .push((assignment.unit_id, incident_id.to_string()));
            }
            self.released.extend(units.released_unit_ids);
        }
    }

    /// One message through one consumer, as `bus::consumer::commit_one` does it.
    fn consume(&mut self, index: usize, delivery: &Delivery) -> Result<()> {
        let consumer = &mut self.consumers[index];
        let store = &self.stores[consumer.service];
        if store.is_processed(&delivery.msg_id)? {
            return Ok(());
        }
        for _attempt in 0..3 {
            let mut commit = match consumer.handler.handle(delivery) {
                Ok(commit) => commit,
                Err(HandlerError::Poison(reason)) => {
                    bail!(
                        "{} refused {} as poison: {reason}",
                        SERVICE_NAMES[consumer.service],
                        delivery.subject
                    )
                }
                Err(HandlerError::Retry(reason)) => {
                    bail!(
                        "{} asked to retry {}: {reason}",
                        SERVICE_NAMES[consumer.service],
                        delivery.subject
                    )
                }
            };
            commit.processed(delivery.msg_id.clone());
            match store.commit(&commit) {
                Ok(Committed::Applied { .. }) => {
                    consumer.handler.committed(delivery);
                    return Ok(());
                }
                Ok(Committed::AlreadyProcessed) => return Ok(()),
                Err(store::Error::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        bail!("{} kept conflicting", delivery.subject)
    }

    /// A unit's terminal sends a lifecycle command.
    fn unit_command(
        &mut self,
        unit_id: &str,
        event: pb::UnitStatusEvent,
        incident_id: &str,
        now: i64,
    ) -> Result<()> {
        self.commands += 1;
        self.queue.push_back(Delivery {
            subject: subjects::unit_event(&self.namespace, unit_id, subjects::UNIT_COMMAND)?,
            msg_id: format!("fill-command-{now}-{}", self.commands),
            payload: convert_unit_command(event, incident_id, now).into(),
            delivered: 1,
        });
        Ok(())
    }

    /// Intake closes the incident (`CloseIncident`): the `closed` event, whose projection marks
    /// the record closed and erases the reporter's personal data.
    fn close(&mut self, partition: &str, incident_id: &str, now: i64) -> Result<()> {
        let closed = IncidentEvent {
            event_id: String::new(),
            incident_id: incident_id.to_string(),
            namespace: self.namespace.clone(),
            at_unix_ms: now,
            source_service: intake::SERVICE_NAME.into(),
            body: EventBody::Closed(IncidentClosed {
                by: "muster-bench fill".into(),
                reason: "response ended".into(),
            }),
        };
        let mut commit = Commit::new();
        commit.event(
            subjects::incident_event(&self.namespace, partition, incident_id, subjects::CLOSED)?,
            convert::encode_event(&closed),
        );
        self.stores[INTAKE].commit(&commit)?;
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        for store in &self.stores {
            store.flush().await?;
        }
        Ok(())
    }
}

fn convert_unit_command(event: pb::UnitStatusEvent, incident_id: &str, now: i64) -> Vec<u8> {
    muster_proto::convert_unit::encode_unit_command(event, incident_id, "", now)
}

/// NATS subject matching: `*` is one token, `>` the rest.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut filter_tokens = filter.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (filter_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(f), Some(s)) if f == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches(
            "muster.live.incident.>",
            "muster.live.incident.INC-1.graded"
        ));
        assert!(subject_matches(
            "muster.live.incident.*.graded",
            "muster.live.incident.INC-1.graded"
        ));
        assert!(!subject_matches(
            "muster.live.incident.*.graded",
            "muster.live.incident.INC-1.closed"
        ));
        assert!(!subject_matches(
            "muster.live.incident.>",
            "muster.live.incident"
        ));
        assert!(!subject_matches(
            "muster.live.unit.*.command",
            "muster.live.unit.U1.status"
        ));
    }
}
