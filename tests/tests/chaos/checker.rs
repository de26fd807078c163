//! The checker: after the system settles, compares the client-side ledger with the final state
//! (intake's incidents, dispatch's units and assignments) and with the event stream itself
//! (every `reported`, `units_assigned`, `escalated` and unit status event JetStream holds), and
//! names every violation precisely.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use muster_proto::v1 as pb;
use prost::Message;

use crate::chaos::client;
use crate::chaos::workload::{Input, Ledger, Targets};

/// What JetStream holds, decoded, in stream order.
#[derive(Default)]
pub struct StreamEvents {
    pub incident_events: Vec<(u64, pb::IncidentEvent)>,
    pub unit_events: Vec<(u64, pb::UnitEvent)>,
    pub messages: u64,
    pub undecodable: Vec<String>,
    pub replicas: usize,
}

/// `nats_url` may list several servers, comma-separated (the cluster run).
async fn jetstream_context(nats_url: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(nats_url.split(',').collect::<Vec<_>>())
        .await
        .unwrap_or_else(|error| panic!("checker cannot connect to {nats_url}: {error}"));
    jetstream::new(client)
}

/// Waits until JetStream answers (a cluster has elected its meta leader), at most `bound`.
pub async fn wait_jetstream(nats_url: &str, bound: Duration) {
    let js = jetstream_context(nats_url).await;
    let started = Instant::now();
    loop {
        match js.query_account().await {
            Ok(_) => return,
            Err(error) if started.elapsed() > bound => {
                panic!("JetStream at {nats_url} not ready within {bound:?}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the pipeline is quiet: the event stream stops growing and every durable consumer
/// on it has nothing pending or unacknowledged, for `quiet` in a row, at most `bound`.
/// Returns how long it took, or `None` when the bound passed first.
pub async fn settle(nats_url: &str, quiet: Duration, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let js = jetstream_context(nats_url).await;
    let mut quiet_since: Option<(Instant, u64)> = None;
    while started.elapsed() < bound {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(mut stream) = js.get_stream(bus::EVENTS_STREAM).await else {
            quiet_since = None;
            continue;
        };
        let Ok(info) = stream.info().await else {
            quiet_since = None;
            continue;
        };
        let last = info.state.last_sequence;
        let mut busy = false;
        let mut consumers = stream.consumers();
        while let Some(consumer) = consumers.next().await {
            match consumer {
                Ok(consumer) => {
                    if consumer.num_pending > 0 || consumer.num_ack_pending > 0 {
                        busy = true;
                    }
                }
                Err(_) => busy = true,
            }
        }
        match quiet_since {
            Some((since, seq)) if !busy && seq == last => {
                if since.elapsed() >= quiet {
                    return Some(started.elapsed());
                }
            }
            _ if !busy => quiet_since = Some((Instant::now(), last)),
            _ => quiet_since = None,
        }
    }
    None
}

/// Reads every message of the event stream, in order.
pub async fn read_stream(nats_url: &str) -> StreamEvents {
    let js = jetstream_context(nats_url).await;
    let mut stream = js
        .get_stream(bus::EVENTS_STREAM)
        .await
        .expect("the event stream exists");
    let info = stream.info().await.expect("stream info");
    let last = info.state.last_sequence;
    let mut events = StreamEvents {
        replicas: info.config.num_replicas,
        ..Default::default()
    };
    if info.state.messages == 0 {
        return events;
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("an ordered consumer on the event stream");
    let mut messages = consumer.messages().await.expect("messages");
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream delivers its messages")
            .expect("the ordered consumer continues")
            .expect("a message");
        let seq = next.info().expect("JetStream metadata").stream_sequence;
        events.messages += 1;
        let subject = next.subject.to_string();
        if bus::subjects::parse_incident_event(&subject).is_some() {
            match pb::IncidentEvent::decode(next.payload.clone()) {
                Ok(event) => events.incident_events.push((seq, event)),
                Err(error) => events.undecodable.push(format!("{subject}: {error}")),
            }
        } else if subject.ends_with(".status")
            && bus::subjects::parse_unit_event(&subject).is_some()
        {
            match pb::UnitEvent::decode(next.payload.clone()) {
                Ok(event) => events.unit_events.push((seq, event)),
                Err(error) => events.undecodable.push(format!("{subject}: {error}")),
            }
        }
        if seq >= last {
            break;
        }
    }
    events
}

/// The findings: violations fail the run; notes are printed.
#[derive(Default)]
pub struct Findings {
    pub violations: Vec<String>,
    pub notes: Vec<String>,
    pub incidents: usize,
    pub report_incidents: usize,
    pub feed_incidents: usize,
    pub escalations: usize,
    pub overdue_escalations: usize,
    pub acknowledgements: usize,
    pub bookings: usize,
    pub releases: usize,
}

fn committed(status: pb::UnitStatus) -> bool {
    matches!(
        status,
        pb::UnitStatus::Dispatched
            | pb::UnitStatus::Enroute
            | pb::UnitStatus::Staging
            | pb::UnitStatus::OnScene
    )
}

async fn get_incident(targets: Targets, incident_id: &str) -> Result<pb::Incident, String> {
    let mut last_error = String::new();
    for _ in 0..5 {
        match client::intake(targets.intake)
            .get_incident(pb::GetIncidentRequest {
                namespace: String::new(),
                incident_id: incident_id.into(),
            })
            .await
        {
            Ok(answer) => {
                return answer
                    .into_inner()
                    .incident
                    .ok_or_else(|| "GetIncident answered without an incident".to_string());
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(format!("GetIncident: NOT_FOUND {}", status.message()));
            }
            Err(status) => last_error = format!("GetIncident: {status}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last_error)
}

/// Every check. `inputs` are the generated inputs, `ledger` what the clients saw. The checks of
/// intake's read model and dispatch's records run only when that service is up.
pub async fn check(
    targets: Targets,
    inputs: &[Input],
    ledger: &Ledger,
    events: &StreamEvents,
    intake_up: bool,
    dispatch_up: bool,
) -> Findings {
    let mut findings = Findings::default();
    let violations = &mut findings.violations;
    for undecodable in &events.undecodable {
        violations.push(format!("undecodable event on the stream: {undecodable}"));
    }

    // 1. The ledger: every key acknowledged with one incident, however often it was sent.
    let mut incident_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut report_key: BTreeMap<&str, bool> = BTreeMap::new();
    for ack in &ledger.acks {
        incident_of
            .entry(&ack.key)
            .or_default()
            .insert(&ack.incident_id);
        report_key.insert(&ack.key, ack.report);
        if ack.incident_id.is_empty() {
            violations.push(format!(
                "input {} was acknowledged without an incident: {}",
                ack.key, ack.outcome
            ));
        }
    }
    for (key, incidents) in &incident_of {
        if incidents.len() > 1 {
            violations.push(format!(
                "input {key} (sent more than once) was acknowledged with different incidents: {incidents:?}"
            ));
        }
    }
    let sent_keys: BTreeSet<&str> = inputs.iter().map(Input::key).collect();
    for index in &ledger.unacknowledged {
        violations.push(format!(
            "input {} was never acknowledged, even after the faults stopped",
            inputs[*index].key()
        ));
    }
    let acknowledged: BTreeMap<&str, &str> = incident_of
        .iter()
        .filter_map(|(key, set)| set.iter().next().map(|incident| (*key, *incident)))
        .collect();

    // 2. The stream's incidents: each reported once, each from an acknowledged input.
    let mut reported: BTreeMap<&str, Vec<&pb::IncidentReport>> = BTreeMap::new();
    let mut reports_by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, event) in &events.incident_events {
        if let Some(pb::incident_event::Body::Reported(report)) = &event.body {
            reported.entry(&event.incident_id).or_default().push(report);
            if let Some(key) = report.summary.strip_prefix("chaos ") {
                reports_by_key
                    .entry(key)
                    .or_default()
                    .push(&event.incident_id);
            }
        }
    }
    findings.incidents = reported.len();
    for (incident, reports) in &reported {
        if reports.len() > 1 {
            violations.push(format!(
                "incident {incident} has {} `reported` events on the stream",
                reports.len()
            ));
        }
    }
    let ledger_incidents: BTreeSet<&str> = acknowledged.values().copied().collect();
    for incident in reported.keys() {
        if !ledger_incidents.contains(incident) {
            violations.push(format!(
                "incident {incident} is on the stream but no acknowledged input maps to it (summary {:?})",
                reported[incident][0].summary
            ));
        }
    }

    // 3. Reports: exactly one incident per request id, the acknowledged one.
    for (key, incident) in acknowledged.iter().filter(|(k, _)| report_key[*k]) {
        let on_stream = reports_by_key.get(key).cloned().unwrap_or_default();
        if on_stream != [*incident] {
            violations.push(format!(
                "report {key} was acknowledged as {incident}; the stream has it in {on_stream:?}"
            ));
        }
    }
    for (key, incidents) in &reports_by_key {
        if !acknowledged.contains_key(key) && sent_keys.contains(key) {
            violations.push(format!(
                "report {key} was never acknowledged but is in incidents {incidents:?}"
            ));
        }
    }

    // 4. Alerts: each in exactly one incident, counted once there.
    let mut alerts_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, incident) in acknowledged.iter().filter(|(k, _)| !report_key[*k]) {
        alerts_of.entry(incident).or_default().insert(key);
    }
    let mut groups_of: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for input in inputs {
        if let Input::Alert { key, group, .. } = input
            && let Some(incident) = acknowledged.get(key.as_str())
        {
            groups_of.entry(*group).or_default().insert(incident);
        }
    }
    for (group, incidents) in &groups_of {
        if incidents.len() > 1 {
            findings.notes.push(format!(
                "alert group {group} (close in space and time) went into {} incidents: {incidents:?}",
                incidents.len()
            ));
        }
    }
    findings.feed_incidents = alerts_of.len();
    findings.report_incidents = ledger_incidents.len() - alerts_of.len();

    // 5. The read model: every acknowledged incident exists, is graded, and holds its inputs.
    for incident_id in &ledger_incidents {
        if incident_id.is_empty() {
            continue;
        }
        if !reported.contains_key(incident_id) {
            violations.push(format!(
                "incident {incident_id} was acknowledged but its `reported` event is not on the stream"
            ));
        }
        if !intake_up {
            continue;
        }
        let incident = match get_incident(targets, incident_id).await {
            Ok(incident) => incident,
            Err(error) => {
                violations.push(format!("incident {incident_id} was acknowledged: {error}"));
                continue;
            }
        };
        if incident.grading.is_none() {
            violations.push(format!(
                "incident {incident_id} was never graded (status {:?}, {} timeline entries)",
                incident.status(),
                incident.timeline.len()
            ));
        }
        if let Some(keys) = alerts_of.get(incident_id) {
            if incident.alert_count != keys.len() as u64 {
                violations.push(format!(
                    "incident {incident_id} counts {} alerts; the ledger acknowledged {} into it: {keys:?}",
                    incident.alert_count,
                    keys.len()
                ));
            }
            for alert in &incident.recent_alerts {
                if !keys.contains(alert.identity.as_str()) {
                    violations.push(format!(
                        "incident {incident_id} lists alert {} ({}), which the ledger has {}",
                        alert.identity,
                        alert.alert_id,
                        acknowledged
                            .get(alert.identity.as_str())
                            .map_or("nowhere".to_string(), |i| format!("in {i}"))
                    ));
                }
            }
        } else if incident.alert_count != 0 {
            violations.push(format!(
                "incident {incident_id} (an officer's report) counts {} alerts",
                incident.alert_count
            ));
        }
    }

    // The read model's list agrees with the stream (while it fits in one ListIncidents page).
    if intake_up && reported.len() < 1000 {
        match client::intake(targets.intake)
            .list_incidents(pb::ListIncidentsRequest {
                namespace: String::new(),
                limit: 1000,
            })
            .await
        {
            Ok(answer) => {
                let listed: BTreeSet<String> = answer
                    .into_inner()
                    .incidents
                    .into_iter()
                    .map(|incident| incident.id)
                    .collect();
                for incident in reported.keys() {
                    if !listed.contains(*incident) {
                        violations.push(format!(
                            "incident {incident} is on the stream but ListIncidents does not list it"
                        ));
                    }
                }
                for incident in &listed {
                    if !reported.contains_key(incident.as_str()) {
                        violations.push(format!(
                            "ListIncidents lists {incident}, which has no `reported` event on the stream"
                        ));
                    }
                }
            }
            Err(status) => violations.push(format!("ListIncidents failed at the end: {status}")),
        }
    }

    // 6. Units on the stream: never committed to two incidents at once.
    let mut holder: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    for (seq, event) in &events.unit_events {
        let Some(pb::unit_event::Body::StatusChanged(change)) = &event.body else {
            continue;
        };
        let to = change.to();
        if committed(to) {
            if let Some((held, since)) = holder.get(event.unit_id.as_str())
                && *held != change.incident_id
            {
                violations.push(format!(
                    "unit {} committed to {} (stream seq {seq}) while still on {held} (since seq {since})",
                    event.unit_id, change.incident_id
                ));
            }
            if to == pb::UnitStatus::Dispatched {
                findings.bookings += 1;
            }
            holder.insert(&event.unit_id, (&change.incident_id, *seq));
        } else {
            if holder.remove(event.unit_id.as_str()).is_some() {
                findings.releases += 1;
            }
        }
    }
    // The same from the incidents' side: `units_assigned` adds units, `released_unit_ids` ends them.
    let mut assigned: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for (seq, event) in &events.incident_events {
        let Some(pb::incident_event::Body::UnitsAssigned(units)) = &event.body else {
            continue;
        };
        for released in &units.released_unit_ids {
            if assigned
                .get(released)
                .is_some_and(|(incident, _)| *incident == event.incident_id)
            {
                assigned.remove(released);
            }
        }
        for assignment in &units.assignments {
            match assigned.get(&assignment.unit_id) {
                Some((incident, since)) if *incident != event.incident_id => {
                    violations.push(format!(
                        "units_assigned for {} (stream seq {seq}) books unit {} still assigned to {incident} (since seq {since})",
                        event.incident_id, assignment.unit_id
                    ));
                }
                _ => {}
            }
            assigned.insert(
                assignment.unit_id.clone(),
                (event.incident_id.clone(), *seq),
            );
        }
    }

    // 7. Final state: dispatch's units and each incident's assignments agree, one incident per unit.
    let mut units_now: BTreeMap<String, pb::Unit> = BTreeMap::new();
    let final_units = if dispatch_up {
        client::dispatch(targets.dispatch)
            .list_units(pb::ListUnitsRequest::default())
            .await
            .map(|answer| answer.into_inner().units)
            .map_err(|status| status.to_string())
    } else {
        Ok(Vec::new())
    };
    match final_units {
        Ok(units) => {
            for unit in units {
                units_now.insert(unit.id.clone(), unit);
            }
        }
        Err(status) => violations.push(format!("ListUnits failed at the end: {status}")),
    }
    let mut now_on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for incident_id in ledger_incidents
        .iter()
        .filter(|i| !i.is_empty() && dispatch_up)
    {
        let answer = client::dispatch(targets.dispatch)
            .get_assignments(pb::GetAssignmentsRequest {
                namespace: String::new(),
                incident_id: incident_id.to_string(),
            })
            .await;
        let answer = match answer {
            Ok(answer) => answer.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => continue,
            Err(status) => {
                violations.push(format!("GetAssignments {incident_id}: {status}"));
                continue;
            }
        };
        for assignment in answer.units.iter().flat_map(|u| &u.assignments) {
            now_on
                .entry(assignment.unit_id.clone())
                .or_default()
                .push(incident_id.to_string());
        }
        let mut timeouts: BTreeMap<&str, usize> = BTreeMap::new();
        for ended in &answer.ended {
            if ended.outcome == "acknowledgement_timed_out" {
                *timeouts.entry(&ended.unit_id).or_default() += 1;
            }
        }
        for (unit, count) in timeouts {
            if count > 1 {
                violations.push(format!(
                    "unit {unit}'s acknowledgement timer on {incident_id} fired {count} times"
                ));
            }
        }
    }
    for (unit, incidents) in &now_on {
        if incidents.len() > 1 {
            violations.push(format!(
                "unit {unit} is assigned to {} incidents at the end: {incidents:?}",
                incidents.len()
            ));
        }
        if let Some(record) = units_now.get(unit)
            && record.incident_id != incidents[0]
            && incidents.len() == 1
        {
            violations.push(format!(
                "unit {unit} is in {}'s assignments but its record says {:?} ({:?})",
                incidents[0],
                record.incident_id,
                record.status()
            ));
        }
    }
    for unit in units_now.values() {
        if committed(unit.status()) && !now_on.contains_key(&unit.id) {
            violations.push(format!(
                "unit {} is {:?} on {:?} but no incident lists it",
                unit.id,
                unit.status(),
                unit.incident_id
            ));
        }
    }

    // 8. Timers: each escalation happens once. A chain escalates from one level to the next at
    // most once per reason (the policy has no repeat loop, the workload never regrades), and an
    // overdue obligation escalates once; so two equal (incident, from, to, reason) are a timer
    // that fired twice.
    // An acknowledgement stops the chain of the level that gave it: a deadline escalation from
    // that level after it is a timer that lost its race and still fired. (Levels only go up, so
    // that level's chain never restarts.)
    let mut acknowledged_at: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut escalations: BTreeMap<(&str, &str, &str, &str), Vec<u64>> = BTreeMap::new();
    for (seq, event) in &events.incident_events {
        if let Some(pb::incident_event::Body::Acknowledged(acknowledged)) = &event.body {
            findings.acknowledgements += 1;
            acknowledged_at
                .entry((&event.incident_id, &acknowledged.jurisdiction_code))
                .or_insert(*seq);
        }
        if let Some(pb::incident_event::Body::Escalated(escalated)) = &event.body {
            if !escalated.manual
                && !escalated.reason.contains("overdue")
                && let Some(ack_seq) = acknowledged_at.get(&(
                    event.incident_id.as_str(),
                    escalated.from_jurisdiction_code.as_str(),
                ))
            {
                violations.push(format!(
                    "incident {} escalated {} → {} for its deadline (stream seq {seq}) after {} acknowledged (seq {ack_seq})",
                    event.incident_id,
                    escalated.from_jurisdiction_code,
                    escalated.to_jurisdiction_code,
                    escalated.from_jurisdiction_code
                ));
            }
            findings.escalations += 1;
            if escalated.reason.contains("overdue") {
                findings.overdue_escalations += 1;
            }
            escalations
                .entry((
                    &event.incident_id,
                    &escalated.from_jurisdiction_code,
                    &escalated.to_jurisdiction_code,
                    &escalated.reason,
                ))
                .or_default()
                .push(*seq);
        }
    }
    for ((incident, from, to, reason), seqs) in &escalations {
        if seqs.len() > 1 {
            violations.push(format!(
                "incident {incident} escalated {from} → {to} ({reason:?}) {} times (stream seqs {seqs:?}): a timer fired more than once",
                seqs.len()
            ));
        }
    }
    findings
}
