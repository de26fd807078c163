//! The incident record intake keeps: the report plus everything later events added.

use domain::event::{EventBody, Graded, IncidentEvent, IncidentReport, UnitsAssigned};

/// How many linked alerts an incident record keeps inline; the rest are only counted (each
/// alert has its own record under `feed-alert/`).
pub const RECENT_ALERTS_MAX: usize = 20;
use serde::{Deserialize, Serialize};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncidentStatus {
    Reported,
    Graded,
    Responding,
    /// Its source withdrew or cleared it.
    Closed,
}

/// A monitoring-feed alert linked to an incident, as shown with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertLink {
    pub alert_id: String,
    pub format: String,
    pub identity: String,
    pub headline: String,
    /// `open`, `resolved`, `cancelled` or `updated`.
    pub state: String,
    pub received_at_unix_ms: i64,
}

/// One line of the incident's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_unix_ms: i64,
    pub event_type: String,
    pub source_service: String,
    pub description: String,
    pub event_id: String,
}

/// What [`IncidentRecord::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was already in the timeline; nothing to write.
    AlreadyThere,
    /// Bookkeeping only (an event id filled in): write it, but watchers saw this change already.
    Quietly,
    /// A change watchers should hear about.
    Changed,
}

/// The read model of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub id: String,
    pub namespace: String,
    pub report: IncidentReport,
    pub status: IncidentStatus,
    pub grading: Option<Graded>,
    pub units: Option<UnitsAssigned>,
    pub timeline: Vec<TimelineEntry>,
    pub reported_at_unix_ms: i64,
    pub updated_at_unix_ms: i64,
    pub request_id: String,
    /// Feed alerts linked to the incident (0 for an officer's report).
    #[serde(default)]
    pub alert_count: u64,
    /// Of those, the ones still open at their source.
    #[serde(default)]
    pub open_alert_count: u64,
    /// The newest linked alerts, at most [`RECENT_ALERTS_MAX`], oldest first.
    #[serde(default)]
    pub recent_alerts: Vec<AlertLink>,
    /// Set while the incident is on legal hold: its personal data outlives the response.
    #[serde(default)]
    pub legal_hold: Option<LegalHold>,
    /// When the personal data was erased (the response ended without a hold).
    #[serde(default)]
    pub personal_data_erased_at_unix_ms: Option<i64>,
}

/// Who put an incident on legal hold, why, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    pub by: String,
    pub reason: String,
    pub since_unix_ms: i64,
}

/// What an erased field reads afterwards.
pub const ERASED: &str = "[erased: personal data, Art. 85]";

/// Serialises incident numbering between the gRPC front door and the feed writer.
pub type Numbering = std::sync::Arc<std::sync::Mutex<()>>;

/// `sequence/<ns>/incident`: the last incident number handed out.
pub fn sequence_key(namespace: &str) -> String {
    format!("sequence/{namespace}/incident")
}

/// `INC-<yyyymmdd>-<n>`.
pub fn incident_id_for(now_unix_ms: i64, sequence: u64) -> String {
    format!("INC-{}-{sequence:06}", yyyymmdd(now_unix_ms))
}

/// `20261128` for a Unix time in milliseconds (UTC).
pub fn yyyymmdd(unix_ms: i64) -> String {
    let (year, month, day) = domain::time::civil_from_days(unix_ms.div_euclid(86_400_000));
    format!("{year:04}{month:02}{day:02}")
}

/// `incident/<ns>/<id>`.
pub fn incident_key(namespace: &str, incident_id: &str) -> String {
    format!("incident/{namespace}/{incident_id}")
}

/// `incident-open/<ns>/<id>` → the incident's grade label, for every incident not closed: the
/// [`OPEN_INCIDENTS`] index, kept by the store in the commit that writes the record.
pub fn open_incident_key(namespace: &str, incident_id: &str) -> String {
    format!("{OPEN_INDEX_PREFIX}{namespace}/{incident_id}")
}

const RECORD_PREFIX: &str = "incident/";
const OPEN_INDEX_PREFIX: &str = "incident-open/";

/// The open incidents and their grade labels (`muster_open_incidents`), maintained by
/// [`store::Store::commit`] for every write of an incident record, whichever path writes it
/// (reports, updates, the projection, the feed writer). Register it with
/// [`register_open_incidents`] before the store is written.
pub const OPEN_INCIDENTS: store::Index = store::Index {
    name: "open-incidents",
    record_prefix: RECORD_PREFIX,
    index_prefix: OPEN_INDEX_PREFIX,
    derive: derive_open_entry,
};

/// Registers [`OPEN_INCIDENTS`] on intake's store; builds it if the store has none yet (a store
/// written before it existed: one pass over the incident records, logged).
pub fn register_open_incidents(store: &store::Store) -> Result<(), store::Error> {
    let started = std::time::Instant::now();
    if let store::IndexOpened::Built { records, entries } = store.add_index(OPEN_INCIDENTS)? {
        tracing::info!(
            records,
            open = entries,
            seconds = started.elapsed().as_secs_f64(),
            "open-incident index built"
        );
    }
    Ok(())
}

/// The fields of an incident record the open-incident index needs. Decoding only these lets
/// serde skip the report, the timeline and the alerts without building them.
#[derive(Deserialize)]
struct OpenView {
    status: IncidentStatus,
    grading: Option<GradingView>,
}

#[derive(Deserialize)]
struct GradingView {
    grade: Option<domain::grade::Grade>,
}

fn derive_open_entry(
    key: &str,
    value: Option<&[u8]>,
) -> Result<Option<store::IndexWrite>, store::Error> {
    // `incident/<ns>/<id>`; nothing else starts with `incident/`.
    let Some(rest) = key.strip_prefix(RECORD_PREFIX) else {
        return Ok(None);
    };
    let entry_key = format!("{OPEN_INDEX_PREFIX}{rest}");
    let Some(bytes) = value else {
        return Ok(Some((entry_key, None)));
    };
    let view: OpenView = store::decode_value(key, bytes)?;
    if view.status == IncidentStatus::Closed {
        return Ok(Some((entry_key, None)));
    }
    let label = grade_label_of(view.grading.map(|graded| graded.grade));
    let entry = store::encode_value(&label).map_err(|source| store::Error::Encode {
        key: entry_key.clone(),
        source,
    })?;
    Ok(Some((entry_key, Some(entry))))
}

/// Grade labels of `muster_open_incidents`: the four grades, `none` (graded below every
/// threshold, or unclassified) and `pending` (not graded yet).
pub const GRADE_LABELS: [&str; 6] = ["I", "II", "III", "IV", "none", "pending"];

/// The `grade` label of a grading (`None`: not graded yet; `Some(None)`: below every threshold).
pub fn grade_label_of(grading: Option<Option<domain::grade::Grade>>) -> &'static str {
    match grading {
        None => "pending",
        Some(None) => "none",
        Some(Some(domain::grade::Grade::I)) => "I",
        Some(Some(domain::grade::Grade::II)) => "II",
        Some(Some(domain::grade::Grade::III)) => "III",
        Some(Some(domain::grade::Grade::IV)) => "IV",
    }
}

/// The open incidents of `namespace` and their grade labels, from the [`OPEN_INCIDENTS`] index:
/// reads one small entry per open incident, none of the records.
pub fn open_incidents(
    store: &store::Store,
    namespace: &str,
) -> Result<std::collections::HashMap<String, &'static str>, store::Error> {
    let prefix = open_incident_key(namespace, "");
    let mut open = std::collections::HashMap::new();
    for item in store.iter_prefix::<String>(&prefix) {
        let (key, label) = item?;
        let label = GRADE_LABELS
            .iter()
            .find(|known| **known == label)
            .ok_or_else(|| store::Error::Corrupt {
                key: key.clone(),
                problem: format!("unknown grade label {label:?}"),
            })?;
        open.insert(key[prefix.len()..].to_string(), *label);
    }
    Ok(open)
}

/// `incident-event/<ns>/<incident id>/`: the prefix of an incident's history.
pub fn incident_events_prefix(namespace: &str, incident_id: &str) -> String {
    format!("incident-event/{namespace}/{incident_id}/")
}

/// `incident-event/<ns>/<incident id>/<arrival, 20 digits>`: one event of an incident's history,
/// in the order the bus delivered it (the store's id generator is monotonic).
pub fn incident_event_key(namespace: &str, incident_id: &str, arrival: u64) -> String {
    format!(
        "{}{arrival:020}",
        incident_events_prefix(namespace, incident_id)
    )
}

/// `incident-history/<ns>/<incident id>`: a closed incident's history in one record
/// ([`FoldedHistory`]).
pub fn incident_history_key(namespace: &str, incident_id: &str) -> String {
    format!("incident-history/{namespace}/{incident_id}")
}

/// Most events a [`FoldedHistory`] takes. An incident with more (a surge that kept one incident
/// busy for hours) keeps its events one key each, as an open incident does: folding them would
/// rewrite a record of megabytes for every late event.
pub const FOLDED_HISTORY_MAX: usize = 256;

/// A closed incident's history, one record instead of one key per event.
///
/// An open incident's events are appended one key each (`incident-event/`), which is cheap while
/// it changes. Once it is closed, the commit that records its next event (the closing one
/// included) moves them all into this record and deletes their keys. Closed incidents are almost
/// all of a store that has run for a while, and sled keeps an in-memory entry for each page of
/// 9–16 keys, so this takes intake's keys per closed incident from about eight to three and its
/// memory at a million incidents down with them (issue 8, T4). Stores written before keep their
/// closed incidents' event keys until the incident's next event; readers take both
/// ([`history_page`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FoldedHistory {
    /// In arrival order.
    pub events: Vec<HistoryEntry>,
}

/// One event of a [`FoldedHistory`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The number its `incident-event/` key had (the store's id generator: the delivery order).
    pub arrival: u64,
    pub event: IncidentEvent,
}

/// The arrival number of an `incident-event/` key under `prefix`.
fn arrival_of(prefix: &str, key: &str) -> Result<u64, store::Error> {
    key.get(prefix.len()..)
        .and_then(|digits| digits.parse::<u64>().ok())
        .ok_or_else(|| store::Error::Corrupt {
            key: key.to_string(),
            problem: "a history key without its arrival number".into(),
        })
}

/// The incident's `incident-event/` keys from arrival number `first` on, at most `limit`, in
/// arrival order: each key with its event.
fn loose_events(
    store: &store::Store,
    namespace: &str,
    incident_id: &str,
    first: u64,
    limit: usize,
) -> Result<Vec<(String, HistoryEntry)>, store::Error> {
    let prefix = incident_events_prefix(namespace, incident_id);
    // `:` sorts right after the digits, so the range ends with the incident's last event.
    store
        .scan_range::<IncidentEvent>(
            &incident_event_key(namespace, incident_id, first),
            &format!("{prefix}:"),
            limit,
        )?
        .into_iter()
        .map(|(key, event)| {
            let arrival = arrival_of(&prefix, &key)?;
            Ok((key, HistoryEntry { arrival, event }))
        })
        .collect()
}

/// The incident's events from arrival number `first` on, in arrival order, at most `limit`:
/// the folded record's and the loose keys' together.
pub fn history_page(
    store: &store::Store,
    namespace: &str,
    incident_id: &str,
    first: u64,
    limit: usize,
) -> Result<Vec<(u64, IncidentEvent)>, store::Error> {
    // Loose keys first, then the folded record: a fold committed in between moves keys already
    // read into the record (a duplicate, dropped below), never the other way round.
    let mut page: Vec<HistoryEntry> = loose_events(store, namespace, incident_id, first, limit)?
        .into_iter()
        .map(|(_, entry)| entry)
        .collect();
    if let Some(folded) =
        store.get::<FoldedHistory>(&incident_history_key(namespace, incident_id))?
    {
        page.extend(
            folded
                .events
                .into_iter()
                .filter(|entry| entry.arrival >= first),
        );
    }
    page.sort_by_key(|entry| entry.arrival);
    page.dedup_by_key(|entry| entry.arrival);
    page.truncate(limit);
    Ok(page
        .into_iter()
        .map(|entry| (entry.arrival, entry.event))
        .collect())
}

/// Adds `event` (arrival number `arrival`, as [`history_entry`] keeps it) to the history of
/// `record` (the incident after the event), in `commit`. An open incident's event gets a key of
/// its own. A closed incident's goes into its [`FoldedHistory`], together with any loose
/// `incident-event/` keys it still has (which the commit deletes), unless the folded history
/// would grow past [`FOLDED_HISTORY_MAX`] or a stored event does not decode: then it too gets a
/// key of its own.
pub fn append_history(
    store: &store::Store,
    commit: &mut store::Commit,
    record: &IncidentRecord,
    arrival: u64,
    event: &IncidentEvent,
) -> Result<(), store::Error> {
    let (namespace, incident_id) = (record.namespace.as_str(), record.id.as_str());
    let event = history_entry(event);
    let own_key = |commit: &mut store::Commit| -> Result<(), store::Error> {
        commit.put(incident_event_key(namespace, incident_id, arrival), &event)?;
        Ok(())
    };
    if record.status != IncidentStatus::Closed {
        return own_key(commit);
    }
    let key = incident_history_key(namespace, incident_id);
    let read = || -> Result<_, store::Error> {
        let loose = loose_events(store, namespace, incident_id, 0, FOLDED_HISTORY_MAX + 1)?;
        let folded = store.get::<FoldedHistory>(&key)?.unwrap_or_default();
        Ok((loose, folded))
    };
    let (loose, mut folded) = match read() {
        Ok(read) => read,
        // A history that does not decode is left as it is: the projection must not stall on it
        // (ListIncidentEvents names the bad key).
        Err(store::Error::Corrupt { key, problem }) => {
            tracing::warn!(%key, %problem, "history not folded: a stored event does not decode");
            return own_key(commit);
        }
        Err(other) => return Err(other),
    };
    if folded.events.len() + loose.len() + 1 > FOLDED_HISTORY_MAX {
        return own_key(commit);
    }
    for (loose_key, entry) in loose {
        folded.events.push(entry);
        commit.delete(loose_key);
    }
    folded.events.push(HistoryEntry { arrival, event });
    folded.events.sort_by_key(|entry| entry.arrival);
    commit.put(key, &folded)?;
    Ok(())
}

/// The event as the history keeps it: without the reporter's identity, which the history does
/// not need (a replay needs kind, place, facts and times) and which would otherwise outlive the
/// erasure at the end of the response (Art. 85).
pub fn history_entry(event: &domain::event::IncidentEvent) -> domain::event::IncidentEvent {
    use domain::event::EventBody;
    let mut kept = event.clone();
    match &mut kept.body {
        EventBody::Reported(report) => report.reported_by.clear(),
        EventBody::Graded(graded) => graded.report.reported_by.clear(),
        _ => {}
    }
    kept
}

/// `request/<ns>/<request id>`: the idempotency key of a report.
pub fn request_key(namespace: &str, request_id: &str) -> String {
    format!("request/{namespace}/{request_id}")
}

/// `update-request/<ns>/<request id>`: the idempotency key of an update (holds the incident id).
pub fn update_request_key(namespace: &str, request_id: &str) -> String {
    format!("update-request/{namespace}/{request_id}")
}

impl IncidentRecord {
    /// Whether the personal data must go now: the response has ended (closed), there is no
    /// legal hold, and it is still there.
    pub fn personal_data_due_for_erasure(&self) -> bool {
        self.status == IncidentStatus::Closed
            && self.legal_hold.is_none()
            && self.personal_data_erased_at_unix_ms.is_none()
    }

    /// Erases the personal data intake holds about the incident: the reporter's identity in the
    /// report, in the grading's copy of it, and wherever the timeline repeats it. A feed's name
    /// (`feed <name>`) is not personal and stays. The facts, the place and the summary of what
    /// happened stay: they are the public record of the response.
    pub fn erase_personal_data(&mut self, now_unix_ms: i64) {
        let reporter = self.report.reported_by.clone();
        let personal = !reporter.is_empty()
            && reporter != ERASED
            && !reporter.starts_with(crate::feed::writer::FEED_REPORTER_PREFIX);
        if personal {
            self.report.reported_by = ERASED.to_string();
            if let Some(grading) = &mut self.grading
                && grading.report.reported_by == reporter
            {
                grading.report.reported_by = ERASED.to_string();
            }
            for entry in &mut self.timeline {
                if entry.description.contains(&reporter) {
                    entry.description = entry.description.replace(&reporter, ERASED);
                }
            }
        }
        self.personal_data_erased_at_unix_ms = Some(now_unix_ms);
    }

    /// Links a feed alert: counts it and keeps it among the recent ones.
    pub fn link_alert(&mut self, link: AlertLink, open: bool) {
        self.alert_count += 1;
        if open {
            self.open_alert_count += 1;
        }
        self.recent_alerts.push(link);
        if self.recent_alerts.len() > RECENT_ALERTS_MAX {
            let excess = self.recent_alerts.len() - RECENT_ALERTS_MAX;
            self.recent_alerts.drain(..excess);
        }
    }

    /// Marks a linked alert no longer open (resolved or cancelled at its source).
    pub fn settle_alert(&mut self, alert_id: &str, state: &str) {
        self.open_alert_count = self.open_alert_count.saturating_sub(1);
        if let Some(link) = self
            .recent_alerts
            .iter_mut()
            .find(|l| l.alert_id == alert_id)
        {
            link.state = state.to_string();
        }
    }

    /// Folds an event into the record.
    pub fn apply(&mut self, event: &IncidentEvent) -> Applied {
        if self
            .timeline
            .iter()
            .any(|entry| entry.event_id == event.event_id && !event.event_id.is_empty())
        {
            return Applied::AlreadyThere;
        }
        let entry = TimelineEntry {
            at_unix_ms: event.at_unix_ms,
            event_type: event.body.event_type().to_string(),
            source_service: event.source_service.clone(),
            description: event.describe(),
            event_id: event.event_id.clone(),
        };
        match &event.body {
            EventBody::Reported(_) => {
                // Intake wrote the reported entry when it accepted the report, before the outbox
                // gave the event its id; fill the id in instead of adding a second entry.
                if let Some(existing) = self
                    .timeline
                    .iter_mut()
                    .find(|e| e.event_type == "reported" && e.event_id.is_empty())
                {
                    existing.event_id = event.event_id.clone();
                    return Applied::Quietly;
                }
            }
            EventBody::Closed(_) => {
                if let Some(existing) = self
                    .timeline
                    .iter_mut()
                    .find(|e| e.event_type == "closed" && e.event_id.is_empty())
                {
                    existing.event_id = event.event_id.clone();
                    return Applied::Quietly;
                }
                self.status = IncidentStatus::Closed;
            }
            EventBody::Updated(update) => {
                // Intake wrote the entry and the facts with the update; fill the id in, oldest
                // first (the outbox publishes in commit order).
                if let Some(existing) = self
                    .timeline
                    .iter_mut()
                    .find(|e| e.event_type == "updated" && e.event_id.is_empty())
                {
                    existing.event_id = event.event_id.clone();
                    return Applied::Quietly;
                }
                // Updated through another intake instance: the event carries the merged facts.
                self.report.facts = update.facts.clone();
                self.report.warning = update.warning;
            }
            EventBody::Graded(graded) => {
                self.grading = Some(graded.clone());
                if self.status == IncidentStatus::Reported {
                    // (a closed incident stays closed)
                    self.status = IncidentStatus::Graded;
                }
            }
            EventBody::UnitsAssigned(units) => {
                match &mut self.units {
                    Some(existing) => {
                        existing.plan_id = units.plan_id.clone();
                        existing
                            .assignments
                            .retain(|a| !units.released_unit_ids.contains(&a.unit_id));
                        existing
                            .assignments
                            .extend(units.assignments.iter().cloned());
                        existing.shortfalls = units.shortfalls.clone();
                    }
                    None => self.units = Some(units.clone()),
                }
                if self.status != IncidentStatus::Closed {
                    self.status = IncidentStatus::Responding;
                }
            }
            // Acknowledgement and escalation change who is asked to act, not who leads: the
            // timeline records them.
            EventBody::Acknowledged(_) | EventBody::Escalated(_) => {}
            // A skip-level report changes no state; the timeline audits it.
            EventBody::SkipLevelReported(_) => {}
            // Mutual-aid requests and answers are audited on the timeline; the units they bring
            // arrive with `units_assigned`.
            EventBody::MutualAidRequested(_)
            | EventBody::MutualAidCommitted(_)
            | EventBody::MutualAidDeclined(_)
            | EventBody::MutualAidReleased(_) => {}
            // A proposal changes nothing until an officer confirms it (then `graded` follows).
            EventBody::DowngradeProposed(_) => {}
            EventBody::LeadChanged(change) => {
                if let Some(grading) = &mut self.grading {
                    grading.lead_code = change.to.code.clone();
                    grading.lead_name = change.to.name.clone();
                    grading.lead_level = change.to.level;
                }
            }
        }
        self.updated_at_unix_ms = self.updated_at_unix_ms.max(event.at_unix_ms);
        self.timeline.push(entry);
        Applied::Changed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_for_incident_ids() {
        assert_eq!(super::yyyymmdd(0), "19700101");
        assert_eq!(super::yyyymmdd(1_795_847_244_000), "20261128");
        assert_eq!(super::yyyymmdd(951_782_400_000), "20000229");
    }
}

#[cfg(test)]
mod open_index_tests;

/// What the record's and the projection's tests build incidents from.
#[cfg(test)]
pub(crate) mod test_fixtures {
    use domain::class::IncidentClass;
    use domain::event::IncidentReport;
    use domain::geo::GeoPoint;
    use domain::grade::Facts;

    /// A building fire in the sample region, reported by an officer.
    pub fn report() -> IncidentReport {
        IncidentReport {
            kind: "accident.building_fire".into(),
            class: IncidentClass::Accident,
            township_code: "110101001".into(),
            other_township_codes: Vec::new(),
            location: GeoPoint::new(39.9, 116.4),
            location_reported: false,
            facts: Facts::default(),
            summary: "smoke from a roof".into(),
            reported_by: "officer".into(),
            warning: None,
        }
    }
}
