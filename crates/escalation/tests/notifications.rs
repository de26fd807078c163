//! Duty-roster notifications over a real nats-server and a tiny in-test webhook: a `graded`
//! event notifies the lead's on-duty roster and the webhook gets the JSON body; a webhook that
//! answers 500 is retried with backoff and then recorded failed; a drill namespace's
//! notifications go to the drill sink (or drill webhook) and never to the live webhook.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::event::{EventBody, IncidentEvent, IncidentReport};
use domain::notification::{DeliveryState, NotificationStatus};
use domain::region::Region;
use domain::roster::{Channel, Role, RosterEntry, Rosters, Shift};
use escalation::notifier::NotifierOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const INCIDENT: &str = "INC-20260101-7";
const WAIT: Duration = Duration::from_secs(20);

/// A webhook that answers every POST with `status` and keeps the bodies.
struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn webhook(status: u16) -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/muster", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buffer = [0u8; 4096];
                let body = loop {
                    let read = socket.read(&mut buffer).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    data.extend_from_slice(&buffer[..read]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                    assert!(head.starts_with("post /hooks/muster http/1.1"), "{head}");
                    assert!(head.contains("content-type: application/json"));
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map(|value| value.trim().parse().unwrap())
                        .unwrap();
                    if data.len() >= end + 4 + length {
                        break data[end + 4..end + 4 + length].to_vec();
                    }
                };
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    Webhook { url, bodies }
}

fn report() -> IncidentReport {
    common::chemical_leak(1, "chlorine leak at the park")
}

/// The lead's county 390202 has two people on duty and one whose shift never covers now.
fn rosters() -> Rosters {
    let entry = |name: &str, role, channel, address: &str, shift| RosterEntry {
        name: name.into(),
        role,
        channel,
        address: address.into(),
        shift,
    };
    let now_minute = ((lifecycle::unix_ms_now() / 60_000) % 1440) as u16;
    // A one-minute window twelve hours away: off duty for the whole test.
    let off = Shift {
        from_minute: (now_minute + 720) % 1440,
        to_minute: (now_minute + 721) % 1440,
        utc_offset_minutes: 0,
    };
    Rosters::from_entries(BTreeMap::from([(
        "390202".to_string(),
        vec![
            entry(
                "周值班",
                Role::DutyOfficer,
                Channel::Webhook,
                "duty-390202",
                None,
            ),
            entry(
                "吴带班",
                Role::LeaderOnDuty,
                Channel::Sms,
                "+86-139-0000-0001",
                None,
            ),
            entry(
                "郑休息",
                Role::DutyOfficer,
                Channel::Phone,
                "+86-139-0000-0002",
                Some(off),
            ),
        ],
    )]))
}

struct Harness {
    _nats: test_support::TestNats,
    _dir: Box<dyn std::any::Any + Send>,
    runtime: bus::Runtime,
    namespace: String,
}

async fn start(namespace: &str, options: NotifierOptions) -> Harness {
    let nats = test_support::TestNats::start().await;
    let dir = test_support::temp_dir("escalation-notify-");
    let runtime = bus::Runtime::start("escalation", nats.url(), dir.path())
        .await
        .unwrap();
    escalation::start_notifications(&runtime, namespace, &[], Arc::new(rosters()), options)
        .await
        .unwrap();
    Harness {
        _nats: nats,
        _dir: Box::new(dir),
        runtime,
        namespace: namespace.to_string(),
    }
}

impl Harness {
    /// Publishes the `graded` event escalation's grader would.
    async fn publish_graded(&self) {
        let region = Region::embedded_default();
        let graded = escalation::grade_incident(&region, &report()).unwrap();
        assert_eq!(graded.lead_code, "390202");
        let event = IncidentEvent {
            event_id: "grader-1".into(),
            incident_id: INCIDENT.into(),
            namespace: self.namespace.clone(),
            at_unix_ms: lifecycle::unix_ms_now(),
            source_service: "escalation".into(),
            body: EventBody::Graded(graded),
        };
        let subject = bus::subjects::incident_event(
            &self.namespace,
            "390000",
            INCIDENT,
            bus::subjects::GRADED,
        )
        .unwrap();
        let payload = muster_proto::convert::encode_event(&event);
        self.runtime
            .bus
            .publish_dedup(subject, "grader-1", payload.into(), None)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Waits until every notification of the incident is finished.
    async fn finished(&self, count: usize) -> Vec<NotificationStatus> {
        let store = self.runtime.store.clone();
        let namespace = self.namespace.clone();
        test_support::eventually("every notification finished", WAIT, || {
            let statuses =
                escalation::notify::list_notifications(&store, &namespace, INCIDENT).unwrap();
            let done = statuses.len() == count
                && statuses.iter().all(|s| s.state != DeliveryState::Pending);
            async move { done.then_some(statuses) }
        })
        .await
    }
}

#[tokio::test]
async fn graded_notifies_the_leads_on_duty_roster_through_the_webhook() {
    let hook = webhook(204).await;
    let harness = start(
        "live",
        NotifierOptions {
            webhook_url: Some(hook.url.clone()),
            ..NotifierOptions::default()
        },
    )
    .await;
    harness.publish_graded().await;
    let statuses = harness.finished(2).await;
    for status in &statuses {
        assert_eq!(status.state, DeliveryState::Delivered, "{status:?}");
        assert_eq!(status.attempts, 1);
        assert_eq!(status.last_status_code, 204);
        assert_eq!(status.sink, "webhook");
        assert!(status.finished_at_unix_ms.is_some());
    }
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let officer = bodies
        .iter()
        .find(|b| b["recipient"] == "周值班")
        .expect("the duty officer is told");
    assert_eq!(officer["incident_id"], INCIDENT);
    assert_eq!(officer["jurisdiction"], "390202");
    assert_eq!(officer["role"], "duty_officer");
    assert_eq!(officer["channel"], "webhook");
    assert_eq!(officer["address"], "duty-390202");
    assert_eq!(officer["reason"], "graded");
    assert_eq!(officer["drill"], false);
    assert!(
        officer["message"]
            .as_str()
            .unwrap()
            .contains("chlorine leak")
    );
    assert!(
        officer["notification_id"]
            .as_str()
            .unwrap()
            .starts_with("NTF-")
    );
    assert!(
        bodies
            .iter()
            .any(|b| b["recipient"] == "吴带班" && b["channel"] == "sms")
    );
    assert!(
        !bodies.iter().any(|b| b["recipient"] == "郑休息"),
        "off shift"
    );

    // A redelivered graded event (same message id) requests nothing twice.
    harness.publish_graded().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(harness.finished(2).await.len(), 2);
    assert_eq!(hook.bodies.lock().unwrap().len(), 2);
    harness.runtime.drain().await.unwrap();
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_backoff_then_recorded_failed() {
    let hook = webhook(500).await;
    let harness = start(
        "live",
        NotifierOptions {
            webhook_url: Some(hook.url.clone()),
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
            ..NotifierOptions::default()
        },
    )
    .await;
    harness.publish_graded().await;
    let statuses = harness.finished(2).await;
    for status in &statuses {
        assert_eq!(status.state, DeliveryState::Failed, "{status:?}");
        assert_eq!(status.attempts, 3);
        assert_eq!(status.last_status_code, 500);
        assert!(status.last_error.contains("500"), "{}", status.last_error);
    }
    // Three attempts per notification, then no more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.bodies.lock().unwrap().len(), 6);
    harness.runtime.drain().await.unwrap();
}

#[tokio::test]
async fn drill_notifications_go_to_the_drill_sink_and_never_to_the_live_webhook() {
    let live = webhook(204).await;
    let harness = start(
        "drill.quake-7",
        NotifierOptions {
            webhook_url: Some(live.url.clone()),
            ..NotifierOptions::default()
        },
    )
    .await;
    harness.publish_graded().await;
    let statuses = harness.finished(2).await;
    for status in &statuses {
        assert_eq!(status.state, DeliveryState::Delivered);
        assert_eq!(status.sink, "drill_sink");
        assert!(status.request.drill);
        assert!(status.request.message.starts_with("[DRILL"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        live.bodies.lock().unwrap().is_empty(),
        "the live webhook was called"
    );
    harness.runtime.drain().await.unwrap();

    // With a drill webhook configured, drill notifications go there, still never live.
    let drill = webhook(200).await;
    let harness = start(
        "drill.quake-8",
        NotifierOptions {
            webhook_url: Some(live.url.clone()),
            drill_webhook_url: Some(drill.url.clone()),
            ..NotifierOptions::default()
        },
    )
    .await;
    harness.publish_graded().await;
    let statuses = harness.finished(2).await;
    assert!(
        statuses
            .iter()
            .all(|s| s.sink == "drill_webhook" && s.state == DeliveryState::Delivered)
    );
    let bodies = drill.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert!(bodies.iter().all(|b| b["drill"] == true));
    assert!(live.bodies.lock().unwrap().is_empty());
    harness.runtime.drain().await.unwrap();
}
