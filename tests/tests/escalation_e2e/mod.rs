//! End-to-end durable timers (issue 4 item 7): escalation runs as its own `muster serve` process
//! with a short acknowledgement deadline (`--escalation-policy` + the compressed clock
//! `--escalation-minute-ms`), is SIGKILLed before the deadline and restarted on the same data
//! directory. The deadline's timer must fire exactly once: one `escalated` event on the bus and
//! in intake's timeline, also after a second kill and restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use muster_proto::v1 as pb;
use test_support::eventually;

use crate::system::{CHEMICAL_PARK, Service, ServiceProcess, System, WAIT, report};

/// One policy minute lasts this long in these tests.
const MINUTE_MS: u64 = 100;
/// Grade III acknowledgement deadline, in policy minutes: 10 s on the compressed clock.
const GRADE_III_ACK_MINUTES: u64 = 100;
const ACK_DEADLINE: Duration = Duration::from_millis(MINUTE_MS * GRADE_III_ACK_MINUTES);

/// notify → wait for the deadline → escalate, once (no repeat, no reporting obligations), so any
/// second `escalated` event could only come from a timer firing twice.
fn policy_toml() -> String {
    format!(
        r#"version = 1

[ack_deadline_minutes]
default = {{ I = 5, II = 5, III = {GRADE_III_ACK_MINUTES}, IV = 300, ungraded = 300 }}

[escalation]
num_loops = 0

[[escalation.step]]
action = "notify"

[[escalation.step]]
action = "wait_ack_deadline"

[[escalation.step]]
action = "escalate"
"#
    )
}

/// A system with intake in-process and escalation as a separate process, on a short policy.
struct Crashable {
    system: System,
    policy: PathBuf,
    log: PathBuf,
    escalation: Option<ServiceProcess>,
}

impl Crashable {
    async fn start() -> Crashable {
        let mut system = System::empty().await;
        system.start_service(Service::Intake).await;
        let policy = system.dir.path().join("escalation-policy.toml");
        let text = policy_toml();
        // The file parses, so a failure below is about timers, not about the policy.
        domain::escalation::EscalationPolicy::from_toml("escalation-policy.toml", &text)
            .expect("the test policy is valid");
        std::fs::write(&policy, text).unwrap();
        let log = system.dir.path().join("escalation.log");
        let mut crashable = Crashable {
            system,
            policy,
            log,
            escalation: None,
        };
        crashable.spawn_escalation();
        crashable
    }

    fn spawn_escalation(&mut self) {
        assert!(self.escalation.is_none(), "escalation is already running");
        let minute_ms = MINUTE_MS.to_string();
        self.escalation = Some(ServiceProcess::spawn_with(
            Service::Escalation,
            self.system.nats.url(),
            &self.system.data_dir(Service::Escalation),
            &self.log,
            &[
                "--escalation-policy",
                path_str(&self.policy),
                "--escalation-minute-ms",
                &minute_ms,
            ],
        ));
    }

    /// SIGKILL: no drain, no flush, no ack.
    fn kill_escalation(&mut self) {
        self.escalation
            .take()
            .expect("escalation is running")
            .kill();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reports a grade III accident (5 deaths at the chemical park: led by the city).
    async fn report_grade_iii(&self, request_id: &str) -> String {
        let request = pb::ReportIncidentRequest {
            request_id: request_id.into(),
            ..report(
                "accident.construction",
                CHEMICAL_PARK,
                pb::Facts {
                    deaths: Some(5),
                    ..Default::default()
                },
            )
        };
        self.system
            .intake()
            .await
            .report_incident(request)
            .await
            .unwrap()
            .into_inner()
            .incident_id
    }

    async fn incident(&self, incident_id: &str) -> pb::Incident {
        self.system
            .intake()
            .await
            .get_incident(pb::GetIncidentRequest {
                namespace: String::new(),
                incident_id: incident_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .incident
            .unwrap()
    }

    /// Waits until intake's read model shows the incident graded by the escalation process.
    async fn graded(&self, incident_id: &str) -> pb::Incident {
        let log = self.log.clone();
        self.system
            .incident_when(
                &format!("{incident_id} graded (escalation log: {})", log.display()),
                incident_id,
                |incident| incident.grading.is_some(),
            )
            .await
    }

    /// `escalated` entries in intake's timeline of the incident.
    async fn escalated_in_timeline(&self, incident_id: &str) -> Vec<pb::TimelineEntry> {
        self.incident(incident_id)
            .await
            .timeline
            .into_iter()
            .filter(|entry| entry.event_type == "escalated")
            .collect()
    }

    /// `escalated` messages JetStream holds for the incident (its dedup window drops a republish
    /// of the same outbox id, so this counts escalations, not deliveries).
    async fn escalated_on_the_bus(&self, incident_id: &str) -> u64 {
        let bus = bus::Bus::connect(self.system.nats.url(), "check", Duration::from_secs(5))
            .await
            .unwrap();
        let stream = bus
            .jetstream()
            .get_stream(bus::EVENTS_STREAM)
            .await
            .unwrap();
        let subject = format!("muster.live.incident.*.{incident_id}.escalated");
        let mut info = stream.info_with_subjects(&subject).await.unwrap();
        use futures_util::TryStreamExt;
        let mut total = 0;
        while let Some((_, count)) = info.try_next().await.unwrap() {
            total += count as u64;
        }
        total
    }

    /// Exactly one escalation, in the timeline and on the bus.
    async fn assert_escalated_once(&self, incident_id: &str, when: &str) {
        let entries = self.escalated_in_timeline(incident_id).await;
        assert_eq!(
            entries.len(),
            1,
            "{when}: escalated timeline entries: {entries:#?}\nescalation log:\n{}",
            self.log_text()
        );
        assert_eq!(
            self.escalated_on_the_bus(incident_id).await,
            1,
            "{when}: escalated messages on the bus\nescalation log:\n{}",
            self.log_text()
        );
    }

    /// Waits for the first `escalated` entry, then checks it is city → province on the deadline.
    async fn first_escalation(&self, incident_id: &str) -> pb::TimelineEntry {
        let entry = eventually(
            &format!("{incident_id} escalated after its deadline"),
            WAIT,
            || async {
                self.escalated_in_timeline(incident_id)
                    .await
                    .into_iter()
                    .next()
            },
        )
        .await;
        assert_eq!(entry.source_service, "escalation");
        assert!(
            entry.description.contains("390200") && entry.description.contains("390000"),
            "city → province: {}",
            entry.description
        );
        assert!(
            entry.description.contains("deadline"),
            "{}",
            entry.description
        );
        entry
    }

    /// A kill and restart after the escalation, proven running again by grading a new incident;
    /// then the first incident must still have exactly one escalation.
    async fn kill_restart_and_check(&mut self, incident_id: &str, round: &str) {
        self.kill_escalation();
        self.spawn_escalation();
        let probe = self.report_grade_iii(&format!("probe-{round}")).await;
        self.graded(&probe).await;
        // Give the restarted timer task time to (wrongly) fire anything it still holds.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.assert_escalated_once(incident_id, &format!("after restart {round}"))
            .await;
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Reports a grade III incident, waits until the separate escalation process graded it, SIGKILLs
/// escalation well before the acknowledgement deadline and checks nothing escalated yet. Returns
/// the incident, when it was reported (its deadline passes after `reported + ACK_DEADLINE`) and
/// when escalation was killed (the deadline has passed by `killed + ACK_DEADLINE`).
async fn graded_then_killed(crashable: &mut Crashable) -> (String, Instant, Instant) {
    let reported_at = Instant::now();
    let incident_id = crashable.report_grade_iii("durable-timer").await;
    let incident = crashable.graded(&incident_id).await;
    let grading = incident.grading.expect("graded");
    assert_eq!(grading.grade(), pb::Grade::Iii, "{}", grading.reason);
    assert_eq!(grading.lead_jurisdiction_code, "390200");
    crashable.kill_escalation();
    assert!(
        reported_at.elapsed() < ACK_DEADLINE / 2,
        "escalation must be killed well before the {ACK_DEADLINE:?} deadline; it took {:?}",
        reported_at.elapsed()
    );
    assert!(
        crashable
            .escalated_in_timeline(&incident_id)
            .await
            .is_empty(),
        "escalated before the deadline"
    );
    (incident_id, reported_at, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_timer_survives_sigkill_and_escalates_once_after_the_restart() {
    let mut crashable = Crashable::start().await;
    let (incident_id, reported_at, _) = graded_then_killed(&mut crashable).await;

    // Back up before the deadline, on the same data: the stored timer fires once when due, and
    // not before (the deadline counts from grading, which came after the report).
    crashable.spawn_escalation();
    let entry = crashable.first_escalation(&incident_id).await;
    assert!(
        reported_at.elapsed() >= ACK_DEADLINE,
        "escalated {:?} after the report, before the {ACK_DEADLINE:?} deadline: {}",
        reported_at.elapsed(),
        entry.description
    );
    // Past the deadline by a margin: still one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    crashable
        .assert_escalated_once(&incident_id, "after the deadline")
        .await;

    crashable.kill_restart_and_check(&incident_id, "1").await;
    crashable.kill_restart_and_check(&incident_id, "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_while_escalation_is_down_escalates_once_on_restart() {
    let mut crashable = Crashable::start().await;
    let (incident_id, _, killed_at) = graded_then_killed(&mut crashable).await;

    // Stay down past the deadline; nothing can escalate without the service.
    tokio::time::sleep((killed_at + ACK_DEADLINE + Duration::from_secs(1)) - Instant::now()).await;
    assert!(
        crashable
            .escalated_in_timeline(&incident_id)
            .await
            .is_empty(),
        "escalated while escalation was down"
    );

    // The restart finds the overdue timer and fires it, once.
    crashable.spawn_escalation();
    crashable.first_escalation(&incident_id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    crashable
        .assert_escalated_once(&incident_id, "after the catch-up")
        .await;

    crashable.kill_restart_and_check(&incident_id, "1").await;
}
