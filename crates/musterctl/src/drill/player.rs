//! Plays a scenario through the real services of a drill namespace: starts `muster up
//! --namespace drill.<id>` on the given NATS (or uses services already running), fires the
//! injects on the compressed clock, watches the incidents and the unit board, and records
//! everything the verdicts and the after-action report need.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_proto::v1 as pb;
use muster_proto::v1::dispatch_service_client::DispatchServiceClient;
use muster_proto::v1::escalation_service_client::EscalationServiceClient;
use muster_proto::v1::intake_service_client::IntakeServiceClient;

use super::feeds;
use super::record::{
    DeadlineLog, DrillRecord, Escalation, EventLog, GradeChange, IncidentHistory, InjectLog,
    LeadChange, NotificationLog, UnitTrack, judge_all, parse_graded, parse_to_code,
};
use super::scenario::{Action, FactsInject, Inject, Scenario, UnitInject, format_offset};
use crate::Error;
use crate::connect::AuthChannel;
use crate::view::{level_name, unit_status_name, warning_level_name};

/// Where the drill's services are.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub intake: String,
    pub escalation: String,
    pub dispatch: String,
    /// `http://host:port` of intake's feed listener.
    pub feeds: String,
}

/// A `muster up` child serving the drill namespace; stopped (SIGTERM, then wait) on drop.
pub struct DrillServices {
    child: Child,
    pub endpoints: Endpoints,
    pub token_file: PathBuf,
}

impl DrillServices {
    /// Starts `muster up` for `namespace` on `nats_url`, its clock compressed by `speed`, with
    /// its data in `dir/services`, and waits for it to print its endpoints.
    pub fn start(
        muster: &Path,
        nats_url: &str,
        namespace: &str,
        speed: f64,
        dir: &Path,
    ) -> Result<Self, Error> {
        let data_dir = dir.join("services");
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::File::create(dir.join("services.log"))?;
        let minute_ms = ((60_000.0 / speed).round() as i64).max(1);
        let mut child = Command::new(muster)
            .arg("up")
            .args(["--namespace", namespace, "--nats-url", nats_url])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--intake-addr", "127.0.0.1:0"])
            .args(["--escalation-addr", "127.0.0.1:0"])
            .args(["--dispatch-addr", "127.0.0.1:0"])
            .args(["--feeds-addr", "127.0.0.1:0"])
            .args(["--escalation-minute-ms", &minute_ms.to_string()])
            // Dispatch's 90-second acknowledgement timer runs on the drill's clock too, but
            // never below 1 real second: the player answers for the simulated crews over gRPC.
            .args([
                "--dispatch-ack-timeout-ms",
                &(((90_000.0 / speed).round() as i64).max(1_000)).to_string(),
            ])
            .env_remove("MUSTER_NOTIFY_WEBHOOK")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| drill_error(format!("cannot start {}: {e}", muster.display())))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut found: HashMap<String, String> = HashMap::new();
        for line in lines.by_ref() {
            let line = line?;
            let mut words = line.split_whitespace();
            if let (Some(name), Some(url)) = (words.next(), words.next())
                && ["intake", "escalation", "dispatch", "feeds"].contains(&name)
            {
                let url = url.split("/v1/").next().unwrap_or(url).to_owned();
                found.insert(name.to_owned(), url);
            }
            if line.starts_with("Stop with") {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let get = |name: &str| {
            found.get(name).cloned().ok_or_else(|| {
                drill_error(format!(
                    "muster up did not print its {name} endpoint (see {})",
                    dir.join("services.log").display()
                ))
            })
        };
        let endpoints = match (
            get("intake"),
            get("escalation"),
            get("dispatch"),
            get("feeds"),
        ) {
            (Ok(intake), Ok(escalation), Ok(dispatch), Ok(feeds)) => Endpoints {
                intake,
                escalation,
                dispatch,
                feeds,
            },
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Self {
            child,
            endpoints,
            token_file: data_dir.join("admin.token"),
        })
    }

    /// SIGTERM and wait for the drain.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for DrillServices {
    fn drop(&mut self) {
        self.terminate();
    }
}

pub fn drill_error(message: String) -> Error {
    Error::Setting {
        origin: "drill".to_owned(),
        problem: message,
    }
}

/// The gRPC clients and the feed endpoint of the drill's services.
#[derive(Clone)]
pub struct Clients {
    pub intake: IntakeServiceClient<AuthChannel>,
    pub escalation: EscalationServiceClient<AuthChannel>,
    pub dispatch: DispatchServiceClient<AuthChannel>,
    pub feeds: String,
    pub token: String,
    pub namespace: String,
}

/// How the run shows progress.
pub struct Options {
    pub speed: f64,
    pub progress: bool,
    pub id: String,
    pub scenario_file: String,
}

/// A GeoJSON surge being sent: (ok, outcomes, the first incident named).
type SurgeTask = tokio::task::JoinHandle<(bool, String, Option<String>)>;

struct Player<'a> {
    scenario: &'a Scenario,
    clients: Clients,
    options: &'a Options,
    start: Instant,
    start_unix_ms: i64,
    /// Label → incident id.
    ids: BTreeMap<String, String>,
    /// Label → CAP references sent so far.
    cap_refs: HashMap<String, Vec<String>>,
    log: Vec<InjectLog>,
    histories: BTreeMap<String, IncidentHistory>,
    /// Unit id → (type, incident label, last status) as last seen.
    unit_seen: HashMap<String, (String, String, String)>,
    /// The latest unit board.
    board: Vec<pb::Unit>,
    sequence: u64,
    /// Units whose simulated crew never acknowledges (dispatch times them out).
    silent: std::collections::HashSet<String>,
    /// (label, unit type or "") → how many of the next dispatched units stay silent.
    silent_quota: HashMap<(String, String), u32>,
    /// Surges still being sent: (index in the log, the task).
    background: Vec<(usize, SurgeTask)>,
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Player<'_> {
    /// Scenario ms now.
    fn now(&self) -> i64 {
        (self.start.elapsed().as_secs_f64() * 1000.0 * self.options.speed) as i64
    }

    fn next_request_id(&mut self) -> String {
        self.sequence += 1;
        format!("drill-{}-{}", self.options.id, self.sequence)
    }

    fn ns(&self) -> String {
        self.clients.namespace.clone()
    }

    async fn fire(&mut self, inject: &Inject) -> (bool, String, String) {
        let label = inject.incident.clone();
        let id = self.ids.get(&label).cloned().unwrap_or_default();
        match &inject.action {
            Action::Report(r) => {
                let request_id = self.next_request_id();
                let request = pb::ReportIncidentRequest {
                    namespace: self.ns(),
                    kind: r.kind.clone(),
                    township_code: r.township.clone(),
                    facts: Some(facts(&FactsInject {
                        deaths: r.deaths,
                        missing: r.missing,
                        serious_injuries: r.serious_injuries,
                        direct_loss_cny: r.direct_loss_cny,
                        magnitude: r.magnitude,
                        ..Default::default()
                    })),
                    summary: r.summary.clone().unwrap_or_else(|| "drill report".into()),
                    reported_by: r.officer.clone().unwrap_or_else(|| "drill officer".into()),
                    request_id,
                    ..Default::default()
                };
                let what = format!("officer report: {} in {}", r.kind, r.township);
                match self.clients.intake.report_incident(request).await {
                    Ok(answer) => {
                        let id = answer.into_inner().incident_id;
                        self.ids.insert(label, id.clone());
                        (true, what, id)
                    }
                    Err(status) => (false, what, status.message().to_owned()),
                }
            }
            Action::Update(f) => {
                let request_id = self.next_request_id();
                let request = pb::UpdateIncidentRequest {
                    namespace: self.ns(),
                    incident_id: id.clone(),
                    facts: Some(facts(f)),
                    summary: f.summary.clone(),
                    updated_by: f.officer.clone().unwrap_or_else(|| "drill officer".into()),
                    request_id,
                };
                let what = format!("fact update: {}", describe_facts(f));
                match self.clients.intake.update_incident(request).await {
                    Ok(_) => (true, what, id),
                    Err(status) => (false, what, status.message().to_owned()),
                }
            }
            Action::Cap(cap) => {
                let n = self.cap_refs.get(&label).map_or(0, Vec::len) + 1;
                let identifier = format!("drill-{}-{label}-{n}", self.options.id);
                let sent = feeds::cap_time(now_unix_ms());
                let refs = self.cap_refs.get(&label).cloned().unwrap_or_default();
                let xml = feeds::cap_xml(cap, &identifier, &sent, &refs);
                let what = format!(
                    "CAP {} (Exercise): {} {}",
                    cap.msg_type, cap.event, cap.severity
                );
                self.cap_refs
                    .entry(label.clone())
                    .or_default()
                    .push(format!("{},{identifier},{sent}", feeds::CAP_SENDER));
                let (ok, detail) = self
                    .post_feed("cap", "application/xml", xml.into_bytes(), &label)
                    .await;
                (ok, what, detail)
            }
            Action::Geojson(g) => {
                let prefix = format!("drill-{}-{label}-{}", self.options.id, self.sequence);
                self.sequence += 1;
                let what = format!("GeoJSON surge: {} × M{}", g.count, g.magnitude);
                let work = surge(
                    self.clients.feeds.clone(),
                    self.clients.token.clone(),
                    g.clone(),
                    prefix,
                );
                if self.ids.contains_key(&label) {
                    // A surge into a known incident runs beside the timeline, as a real one would.
                    self.background.push((self.log.len(), tokio::spawn(work)));
                    return (true, what, "sending in the background".into());
                }
                let (ok, detail, first) = work.await;
                if let Some(id) = first {
                    self.ids.insert(label, id);
                }
                (ok, what, detail)
            }
            Action::Alertmanager(a) => {
                let prefix = format!("drill-{}-{label}-{}", self.options.id, self.sequence);
                self.sequence += 1;
                let body = feeds::alertmanager_body(a, &prefix, &feeds::cap_time(now_unix_ms()));
                let what = format!("Alertmanager {} {} × {}", a.status, a.alertname, a.count);
                let (ok, detail) = self
                    .post_feed("alertmanager", "application/json", body, &label)
                    .await;
                (ok, what, detail)
            }
            Action::Unit(u) if u.event == "no_ack" => {
                let count = u.count.unwrap_or(1);
                let key = (label.clone(), u.unit_type.clone().unwrap_or_default());
                *self.silent_quota.entry(key).or_default() += count;
                let what = format!(
                    "the crews of the next {count} {} unit(s) dispatched will not acknowledge",
                    u.unit_type.as_deref().unwrap_or("any")
                );
                (true, what, String::new())
            }
            Action::Unit(u) => {
                let (done, detail) = self.unit_event(&label, u, u.count).await;
                let wanted = u.count.map_or(String::new(), |c| format!(" (wanted {c})"));
                let what = format!(
                    "units {}: {}{}",
                    u.event,
                    u.unit_type.as_deref().unwrap_or("any type"),
                    wanted
                );
                (done > 0 || u.count.is_none(), what, detail)
            }
            Action::Ack(a) => {
                let request = pb::AcknowledgeRequest {
                    namespace: self.ns(),
                    incident_id: id.clone(),
                    officer: a.officer.clone(),
                };
                let what = format!("acknowledged by {}", a.officer);
                match self.clients.escalation.acknowledge(request).await {
                    Ok(_) => (true, what, id),
                    Err(status) => (false, what, status.message().to_owned()),
                }
            }
            Action::FileReport(_) => {
                let what = "statutory report filed".to_owned();
                let deadlines = self
                    .clients
                    .escalation
                    .list_deadlines(pb::ListDeadlinesRequest {
                        namespace: self.ns(),
                        incident_id: id.clone(),
                    })
                    .await;
                let open = deadlines.ok().and_then(|d| {
                    d.into_inner()
                        .deadlines
                        .into_iter()
                        .filter(|d| d.sent_at_unix_ms == 0)
                        .min_by_key(|d| (d.due_at_unix_ms, d.obligation_id))
                });
                let Some(open) = open else {
                    return (false, what, "no open report obligation".into());
                };
                let request = pb::SubmitReportRequest {
                    namespace: self.ns(),
                    incident_id: id.clone(),
                    obligation_id: open.obligation_id,
                };
                match self.clients.escalation.submit_report(request).await {
                    Ok(_) => (
                        true,
                        format!("{what}: {} to {}", open.kind, open.to_tier),
                        id,
                    ),
                    Err(status) => (false, what, status.message().to_owned()),
                }
            }
        }
    }

    /// Posts one feed body; names the label's incident from the first answer that has one.
    async fn post_feed(
        &mut self,
        format: &str,
        content_type: &str,
        body: Vec<u8>,
        label: &str,
    ) -> (bool, String) {
        match post_feed(
            &self.clients.feeds,
            &self.clients.token,
            format,
            content_type,
            &body,
        )
        .await
        {
            Ok((detail, first_incident)) => {
                if let Some(id) = first_incident
                    && !self.ids.contains_key(label)
                {
                    self.ids.insert(label.to_owned(), id);
                }
                (true, detail)
            }
            Err(error) => (false, error),
        }
    }

    /// Applies a unit event to up to `count` qualifying units on the incident; returns how many
    /// and a description.
    async fn unit_event(
        &mut self,
        label: &str,
        u: &UnitInject,
        count: Option<u32>,
    ) -> (u32, String) {
        // A full sample, not just the board: a unit booked since the last sample must be known
        // to be this incident's before it leaves (out of service), or a later
        // `return_to_service` inject cannot find it (the sampling tick can miss a booking that
        // lasts only a few hundred milliseconds at high `--speed`).
        self.observe().await;
        let incident_id = self.ids.get(label).cloned().unwrap_or_default();
        let incident_id = incident_id.as_str();
        let seen = &self.unit_seen;
        let qualifies = |unit: &pb::Unit| {
            let status = unit_status_name(unit.status).unwrap_or_default();
            if u.event == "return_to_service" {
                // Units that served this incident and broke down.
                return status == "out_of_service"
                    && seen.get(&unit.id).is_some_and(|(_, l, _)| l == label)
                    && u.unit_type.as_ref().is_none_or(|t| &unit.unit_type == t);
            }
            unit.incident_id == incident_id
                && u.unit_type.as_ref().is_none_or(|t| &unit.unit_type == t)
                && match u.event.as_str() {
                    "acknowledge" | "decline" => status == "dispatched",
                    "arrive" => ["dispatched", "enroute", "staging"].contains(&status.as_str()),
                    _ => {
                        ["dispatched", "enroute", "staging", "on_scene"].contains(&status.as_str())
                    }
                }
        };
        let mut units: Vec<pb::Unit> = self
            .board
            .iter()
            .filter(|u| qualifies(u))
            .cloned()
            .collect();
        units.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(count) = count {
            units.truncate(count as usize);
        }
        let reason = u.reason.clone().unwrap_or_else(|| "drill inject".into());
        let mut done = Vec::new();
        for unit in units {
            let status = unit_status_name(unit.status).unwrap_or_default();
            let events: Vec<pb::UnitStatusEvent> = match u.event.as_str() {
                "acknowledge" => vec![pb::UnitStatusEvent::Acknowledge],
                "decline" => vec![pb::UnitStatusEvent::Decline],
                "arrive" if status == "dispatched" => {
                    vec![
                        pb::UnitStatusEvent::Acknowledge,
                        pb::UnitStatusEvent::Arrive,
                    ]
                }
                "arrive" => vec![pb::UnitStatusEvent::Arrive],
                "out_of_service" => vec![pb::UnitStatusEvent::GoOutOfService],
                "return_to_service" => vec![pb::UnitStatusEvent::ReturnToService],
                _ => vec![pb::UnitStatusEvent::Release],
            };
            let mut ok = true;
            for event in events {
                let needs_reason = matches!(
                    event,
                    pb::UnitStatusEvent::Decline | pb::UnitStatusEvent::GoOutOfService
                );
                let request = pb::UpdateUnitStatusRequest {
                    namespace: self.ns(),
                    unit_id: unit.id.clone(),
                    event: event as i32,
                    incident_id: if matches!(
                        event,
                        pb::UnitStatusEvent::GoOutOfService | pb::UnitStatusEvent::ReturnToService
                    ) {
                        String::new()
                    } else {
                        incident_id.to_owned()
                    },
                    reason: if needs_reason {
                        reason.clone()
                    } else {
                        String::new()
                    },
                };
                if self
                    .clients
                    .dispatch
                    .update_unit_status(request)
                    .await
                    .is_err()
                {
                    ok = false;
                    break;
                }
            }
            if ok {
                done.push(unit.id.clone());
            }
        }
        self.observe().await;
        (done.len() as u32, done.join(", "))
    }

    async fn refresh_board(&mut self) {
        if let Ok(answer) = self
            .clients
            .dispatch
            .list_units(pb::ListUnitsRequest {
                namespace: self.ns(),
                unit_type: String::new(),
            })
            .await
        {
            self.board = answer.into_inner().units;
        }
    }

    /// Samples the unit board and the incidents' warning levels.
    async fn observe(&mut self) {
        self.refresh_board().await;
        let now = self.now();
        let by_id: HashMap<String, String> = self
            .ids
            .iter()
            .map(|(label, id)| (id.clone(), label.clone()))
            .collect();
        for unit in &self.board {
            let status = unit_status_name(unit.status).unwrap_or_default();
            let label = by_id.get(&unit.incident_id).cloned();
            let previous = self.unit_seen.get(&unit.id).cloned();
            match (&label, &previous) {
                (Some(label), prev) => {
                    let changed = prev
                        .as_ref()
                        .is_none_or(|(_, l, s)| l != label || *s != status);
                    if changed {
                        let history = self.histories.entry(label.clone()).or_default();
                        push_span(history, unit, &status, now);
                        self.unit_seen.insert(
                            unit.id.clone(),
                            (unit.unit_type.clone(), label.clone(), status),
                        );
                    }
                }
                (None, Some((_, old_label, old_status))) => {
                    // Left the incident (released, out of service, replaced).
                    if old_status != "left" {
                        let history = self.histories.entry(old_label.clone()).or_default();
                        let left = if status == "out_of_service" {
                            "out_of_service"
                        } else {
                            "left"
                        };
                        push_span(history, unit, left, now);
                        self.unit_seen.insert(
                            unit.id.clone(),
                            (unit.unit_type.clone(), old_label.clone(), "left".into()),
                        );
                    }
                }
                (None, None) => {}
            }
        }
        self.crews_acknowledge(&by_id).await;
        let ids: Vec<(String, String)> = self
            .ids
            .iter()
            .map(|(l, i)| (l.clone(), i.clone()))
            .collect();
        for (label, id) in ids {
            let answer = self
                .clients
                .intake
                .get_incident(pb::GetIncidentRequest {
                    namespace: self.ns(),
                    incident_id: id,
                })
                .await;
            if let Some(incident) = answer.ok().and_then(|a| a.into_inner().incident) {
                let warning = incident
                    .report
                    .as_ref()
                    .and_then(|r| warning_level_name(r.warning_level));
                let history = self.histories.entry(label).or_default();
                if let Some(warning) = warning
                    && history.warnings.last().is_none_or(|(_, w)| *w != warning)
                {
                    history.warnings.push((now, warning));
                }
            }
        }
    }

    /// The simulated crews: a unit newly dispatched to a drill incident acknowledges at once,
    /// unless a `no_ack` inject said its crew stays silent.
    async fn crews_acknowledge(&mut self, by_id: &HashMap<String, String>) {
        let dispatched: Vec<(String, String, String, String)> = self
            .board
            .iter()
            .filter(|u| unit_status_name(u.status).as_deref() == Some("dispatched"))
            .filter_map(|u| {
                let label = by_id.get(&u.incident_id)?;
                Some((
                    u.id.clone(),
                    u.unit_type.clone(),
                    u.incident_id.clone(),
                    label.clone(),
                ))
            })
            .collect();
        for (unit_id, unit_type, incident_id, label) in dispatched {
            let key = format!("{unit_id}@{incident_id}");
            if self.silent.contains(&key) {
                continue;
            }
            let quota = [unit_type.clone(), String::new()]
                .into_iter()
                .find_map(|t| {
                    let k = (label.clone(), t);
                    self.silent_quota.get(&k).filter(|n| **n > 0).map(|_| k)
                });
            if let Some(k) = quota {
                if let Some(n) = self.silent_quota.get_mut(&k) {
                    *n -= 1;
                }
                self.silent.insert(key);
                continue;
            }
            let request = pb::UpdateUnitStatusRequest {
                namespace: self.ns(),
                unit_id: unit_id.clone(),
                event: pb::UnitStatusEvent::Acknowledge as i32,
                incident_id,
                reason: String::new(),
            };
            // A failure (a race with a timeout or a release) is retried at the next look.
            let _ = self.clients.dispatch.update_unit_status(request).await;
        }
    }

    fn progress(&self, fired: usize) {
        if !self.options.progress {
            return;
        }
        let now = self.now().min(self.scenario.duration_ms);
        let width = 30usize;
        let filled = (now as f64 / self.scenario.duration_ms as f64 * width as f64) as usize;
        let phase = self
            .scenario
            .phases
            .iter()
            .rev()
            .find(|p| p.at_ms <= now)
            .map_or("-", |p| p.name.as_str());
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] T+{:<8} / {}  phase: {:<20} injects {}/{}",
            "#".repeat(filled.min(width)),
            "-".repeat(width - filled.min(width)),
            format_offset(now - now % 1000),
            format_offset(self.scenario.duration_ms),
            phase,
            fired,
            self.scenario.injects.len()
        );
        let _ = err.flush();
    }
}

/// Posts one feed body, retrying while intake answers 503; returns the outcomes (`created×1,
/// correlated×999`) and the first incident named.
async fn post_feed(
    feeds: &str,
    token: &str,
    format: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(String, Option<String>), String> {
    let path = format!("/v1/feeds/{format}");
    for _attempt in 0..100 {
        let answer = super::http::post(
            feeds,
            &path,
            token,
            content_type,
            body,
            Duration::from_secs(30),
        )
        .await?;
        match answer {
            (503, _) => tokio::time::sleep(Duration::from_millis(100)).await,
            (200, body) => {
                let json: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
                let mut first = None;
                for result in json["results"].as_array().into_iter().flatten() {
                    // Where intake put it: the drill's own namespace, or it is worth seeing.
                    let outcome = format!(
                        "{} in {}",
                        result["outcome"].as_str().unwrap_or("?"),
                        result["namespace"].as_str().unwrap_or("?")
                    );
                    *outcomes.entry(outcome).or_default() += 1;
                    if first.is_none() {
                        first = result["incident_id"].as_str().map(str::to_owned);
                    }
                }
                let detail = outcomes
                    .iter()
                    .map(|(o, n)| format!("{o}×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Ok((detail, first));
            }
            (status, body) => {
                return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
            }
        }
    }
    Err("intake stayed busy (503)".into())
}

/// Sends a GeoJSON surge in batches; sums the outcomes.
async fn surge(
    feeds: String,
    token: String,
    g: super::scenario::GeojsonInject,
    prefix: String,
) -> (bool, String, Option<String>) {
    let mut sent = 0;
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut first = None;
    while sent < g.count {
        let n = g.batch.min(g.count - sent);
        let body = feeds::geojson_batch(&g, &prefix, sent, n, now_unix_ms());
        match post_feed(&feeds, &token, "geojson", "application/json", &body).await {
            Ok((detail, incident)) => {
                first = first.or(incident);
                for part in detail.split(", ") {
                    if let Some((outcome, count)) = part.split_once('×') {
                        *outcomes.entry(outcome.to_owned()).or_default() +=
                            count.parse::<u64>().unwrap_or(0);
                    }
                }
            }
            Err(error) => return (false, format!("after {sent}: {error}"), first),
        }
        sent += n;
    }
    let detail = outcomes
        .iter()
        .map(|(o, n)| format!("{o}×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    (true, detail, first)
}

fn push_span(history: &mut IncidentHistory, unit: &pb::Unit, status: &str, now: i64) {
    match history.units.iter_mut().find(|t| t.unit_id == unit.id) {
        Some(track) => track.spans.push((status.to_owned(), now)),
        None => history.units.push(UnitTrack {
            unit_id: unit.id.clone(),
            unit_type: unit.unit_type.clone(),
            spans: vec![(status.to_owned(), now)],
        }),
    }
}

fn facts(f: &FactsInject) -> pb::Facts {
    pb::Facts {
        deaths: f.deaths,
        missing: f.missing,
        serious_injuries: f.serious_injuries,
        direct_loss_cny: f.direct_loss_cny,
        magnitude: f.magnitude,
        people_affected: f.people_affected,
        people_evacuated: None,
    }
}

fn describe_facts(f: &FactsInject) -> String {
    let mut parts = Vec::new();
    if let Some(n) = f.deaths {
        parts.push(format!("{n} dead"));
    }
    if let Some(n) = f.missing {
        parts.push(format!("{n} missing"));
    }
    if let Some(n) = f.serious_injuries {
        parts.push(format!("{n} seriously injured"));
    }
    if let Some(m) = f.magnitude {
        parts.push(format!("M{m}"));
    }
    if let Some(n) = f.people_affected {
        parts.push(format!("{n} affected"));
    }
    parts.join(", ")
}

/// Plays the scenario and returns the record (verdicts included).
pub async fn play(scenario: &Scenario, clients: Clients, options: &Options) -> DrillRecord {
    let start_unix_ms = now_unix_ms();
    let mut player = Player {
        scenario,
        clients,
        options,
        start: Instant::now(),
        start_unix_ms,
        ids: BTreeMap::new(),
        cap_refs: HashMap::new(),
        log: Vec::new(),
        histories: BTreeMap::new(),
        unit_seen: HashMap::new(),
        board: Vec::new(),
        sequence: 0,
        silent: Default::default(),
        silent_quota: HashMap::new(),
        background: Vec::new(),
    };
    // Arrivals that found fewer units than asked are retried while the drill runs.
    let mut pending_units: Vec<(Inject, u32)> = Vec::new();
    let mut next = 0;
    let tick = Duration::from_millis(50);
    loop {
        let now = player.now();
        while next < scenario.injects.len() && scenario.injects[next].at_ms <= now {
            let inject = scenario.injects[next].clone();
            next += 1;
            let fired_ms = player.now();
            let (ok, what, detail) = player.fire(&inject).await;
            if let Action::Unit(u) = &inject.action
                && u.event != "no_ack"
                && let Some(count) = u.count
            {
                let done = detail.split(", ").filter(|s| !s.is_empty()).count() as u32;
                if done < count {
                    pending_units.push((inject.clone(), count - done));
                }
            }
            player.log.push(InjectLog {
                planned_ms: inject.at_ms,
                fired_ms,
                incident: inject.incident.clone(),
                what,
                ok,
                detail,
                source: inject.source.clone(),
            });
        }
        let mut still = Vec::new();
        for (inject, missing) in std::mem::take(&mut pending_units) {
            let Action::Unit(u) = &inject.action else {
                continue;
            };
            let (done, detail) = player.unit_event(&inject.incident, u, Some(missing)).await;
            if done > 0 {
                let fired_ms = player.now();
                player.log.push(InjectLog {
                    planned_ms: inject.at_ms,
                    fired_ms,
                    incident: inject.incident.clone(),
                    what: format!(
                        "units {} (retried): {}",
                        u.event,
                        u.unit_type.as_deref().unwrap_or("any type")
                    ),
                    ok: true,
                    detail,
                    source: inject.source.clone(),
                });
            }
            if done < missing {
                still.push((inject, missing - done));
            }
        }
        pending_units = still;
        player.observe().await;
        player.progress(next);
        if now >= scenario.duration_ms {
            break;
        }
        tokio::time::sleep(tick).await;
    }
    if options.progress {
        eprintln!();
    }
    for (index, task) in std::mem::take(&mut player.background) {
        let (ok, detail) = match task.await {
            Ok((ok, detail, _)) => (ok, detail),
            Err(error) => (false, error.to_string()),
        };
        if let Some(entry) = player.log.get_mut(index) {
            entry.ok = ok;
            entry.detail = detail;
        }
    }
    collect(&mut player).await;
    let verdicts = judge_all(scenario, &player.histories);
    DrillRecord {
        id: options.id.clone(),
        namespace: player.clients.namespace.clone(),
        scenario_file: options.scenario_file.clone(),
        scenario_name: scenario.name.clone(),
        description: scenario.description.clone(),
        objectives: scenario.objectives.clone(),
        jurisdictions: scenario.jurisdictions.clone(),
        duration_ms: scenario.duration_ms,
        phases: scenario
            .phases
            .iter()
            .map(|p| (p.name.clone(), p.at_ms))
            .collect(),
        speed: options.speed,
        started_at_unix_ms: start_unix_ms,
        finished_at_unix_ms: now_unix_ms(),
        injects: player.log.clone(),
        notifications: collect_notifications(&mut player).await,
        incidents: player.histories.clone(),
        verdicts,
    }
}

/// Reads each incident's timeline and deadlines into its history.
async fn collect(player: &mut Player<'_>) {
    let levels: HashMap<String, String> = player
        .clients
        .escalation
        .list_jurisdictions(pb::ListJurisdictionsRequest { level: 0 })
        .await
        .map(|a| {
            a.into_inner()
                .jurisdictions
                .into_iter()
                .map(|j| (j.code, level_name(j.level).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let level = |code: &str| levels.get(code).cloned().unwrap_or_else(|| "?".into());
    let ids: Vec<(String, String)> = player
        .ids
        .iter()
        .map(|(l, i)| (l.clone(), i.clone()))
        .collect();
    for (label, id) in ids {
        let incident = player
            .clients
            .intake
            .get_incident(pb::GetIncidentRequest {
                namespace: player.ns(),
                incident_id: id.clone(),
            })
            .await
            .ok()
            .and_then(|a| a.into_inner().incident);
        let deadlines = player
            .clients
            .escalation
            .list_deadlines(pb::ListDeadlinesRequest {
                namespace: player.ns(),
                incident_id: id.clone(),
            })
            .await
            .map(|a| a.into_inner().deadlines)
            .unwrap_or_default();
        let (start, speed) = (player.start_unix_ms, player.options.speed);
        let speed_ms = move |unix: i64| ((unix - start) as f64 * speed) as i64;
        let mut history = player.histories.remove(&label).unwrap_or_default();
        history.id = id.clone();
        if let Some(incident) = incident {
            history.reported_ms = Some(speed_ms(incident.reported_at_unix_ms));
            history.alert_count = incident.alert_count;
            if let Some(report) = &incident.report {
                history.kind = report.kind.clone();
                history.township = report.township_code.clone();
            }
            for entry in &incident.timeline {
                let at_ms = speed_ms(entry.at_unix_ms);
                history.events.push(EventLog {
                    at_ms,
                    event_type: entry.event_type.clone(),
                    description: entry.description.clone(),
                });
                match entry.event_type.as_str() {
                    "graded" => {
                        let (grade, response_level, lead) = parse_graded(&entry.description);
                        let grade =
                            grade.filter(|g| ["I", "II", "III", "IV"].contains(&g.as_str()));
                        history.grades.push(GradeChange {
                            at_ms,
                            grade,
                            response_level,
                        });
                        if let Some(code) = lead
                            && history.leads.last().is_none_or(|l| l.code != code)
                        {
                            history.leads.push(LeadChange {
                                at_ms,
                                level: level(&code),
                                code,
                            });
                        }
                    }
                    "lead_changed" => {
                        if let Some(code) = parse_to_code(&entry.description) {
                            history.leads.push(LeadChange {
                                at_ms,
                                level: level(&code),
                                code,
                            });
                        }
                    }
                    "acknowledged" => {
                        let by = entry
                            .description
                            .strip_prefix("acknowledged by ")
                            .and_then(|r| r.split(" for ").next())
                            .unwrap_or("?")
                            .to_owned();
                        history.acks.push((at_ms, by));
                    }
                    "escalated" => {
                        if let Some(code) = parse_to_code(&entry.description) {
                            history.escalations.push(Escalation {
                                at_ms,
                                to_level: level(&code),
                                to_code: code,
                            });
                        }
                    }
                    "mutual_aid_committed" => {
                        history.mutual_aid_committed_ms.get_or_insert(at_ms);
                    }
                    "closed" => {
                        history.closed_ms.get_or_insert(at_ms);
                    }
                    "units_assigned" => {
                        for part in entry.description.split("; short ").skip(1) {
                            history.shortfalls.push(format!("short {part}"));
                        }
                        // Exact booking times for units seen on the board.
                        if let Some(list) = entry.description.split(": ").nth(1) {
                            for unit_id in list.split([',', ';']).map(str::trim) {
                                if let Some(track) =
                                    history.units.iter_mut().find(|t| t.unit_id == unit_id)
                                    && track.spans.first().is_some_and(|(_, at)| *at > at_ms)
                                {
                                    track.spans.insert(0, ("dispatched".into(), at_ms));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for d in deadlines {
            history.deadlines.push(DeadlineLog {
                kind: d.kind.clone(),
                to: if d.to_tier.is_empty() {
                    d.to_jurisdiction_code.clone()
                } else {
                    d.to_tier.clone()
                },
                created_ms: speed_ms(d.created_at_unix_ms),
                due_ms: speed_ms(d.due_at_unix_ms),
                sent_ms: (d.sent_at_unix_ms != 0).then(|| speed_ms(d.sent_at_unix_ms)),
                status: crate::view::deadline_status_name(d.status).unwrap_or_default(),
            });
        }
        player.histories.insert(label, history);
    }
}

async fn collect_notifications(player: &mut Player<'_>) -> Vec<NotificationLog> {
    let mut out = Vec::new();
    let ids: Vec<(String, String)> = player
        .ids
        .iter()
        .map(|(l, i)| (l.clone(), i.clone()))
        .collect();
    for (label, id) in ids {
        let answer = player
            .clients
            .escalation
            .list_notifications(pb::ListNotificationsRequest {
                namespace: player.ns(),
                incident_id: id,
            })
            .await;
        for n in answer
            .map(|a| a.into_inner().notifications)
            .unwrap_or_default()
        {
            let recipient = n
                .request
                .as_ref()
                .map(|r| {
                    format!(
                        "{} ({}){}",
                        r.recipient_name,
                        r.role,
                        if r.drill { ", drill" } else { "" }
                    )
                })
                .unwrap_or_default();
            out.push(NotificationLog {
                incident: label.clone(),
                recipient,
                state: n.state.clone(),
                sink: n.sink.clone(),
            });
        }
    }
    out
}
