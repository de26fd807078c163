//! Who is told: a durable consumer of `graded`, `escalated` and `lead_changed` that looks up the
//! on-duty roster of the jurisdiction that must act and commits one `notification.requested`
//! event per person, with the notification's pending record, in the consumer's commit.
//!
//! The requests derive only from events the escalation machine emitted, and the machine emits no
//! escalation after an acknowledgement has committed (the ack deletes the step's timers in the
//! same transaction, and a raced timer finds the machine acknowledged). So no notification can
//! follow an ack that won its race. Notification ids derive from the source event id and the
//! recipient, so a redelivered event, already recorded as processed, requests nothing twice.

use std::sync::Arc;

use bus::subjects;
use bus::{Delivery, Handler, HandlerError};
use domain::event::IncidentEvent;
use domain::notification::{NotificationRequest, NotificationStatus, notifications_for};
use domain::roster::Rosters;
use muster_proto::convert;
use muster_proto::convert_notify;
use store::Commit;

/// The incident events that call for notifications.
pub const NOTIFYING_EVENTS: [&str; 3] = ["graded", "escalated", "lead_changed"];

/// `notification/<ns>/<incident>/<notification>`: the request and its delivery state.
pub fn notification_key(namespace: &str, incident_id: &str, notification_id: &str) -> String {
    format!("notification/{namespace}/{incident_id}/{notification_id}")
}

/// Every notification record of one incident.
pub fn incident_notifications_prefix(namespace: &str, incident_id: &str) -> String {
    format!("notification/{namespace}/{incident_id}/")
}

/// Stages the notifications `event` calls for into `commit`: a `notification.requested` outbox
/// event and a pending record each. Returns what was staged.
/// The notifications go out on `partition`'s subjects: the incident's, so the instance that
/// owns the incident delivers them.
pub fn stage_notifications(
    commit: &mut Commit,
    event: &IncidentEvent,
    partition: &str,
    rosters: &Rosters,
    now_unix_ms: i64,
) -> Result<Vec<NotificationRequest>, String> {
    let requests = notifications_for(event, rosters, now_unix_ms);
    for request in &requests {
        let subject = subjects::notification_event(
            &request.namespace,
            partition,
            &request.notification_id,
            subjects::NOTIFICATION_REQUESTED,
        )
        .map_err(|error| error.to_string())?;
        commit.event(subject, convert_notify::encode_requested(request));
        commit
            .put(
                notification_key(
                    &request.namespace,
                    &request.incident_id,
                    &request.notification_id,
                ),
                &NotificationStatus::pending(request.clone()),
            )
            .map_err(|error| error.to_string())?;
    }
    Ok(requests)
}

/// The consumer's handler.
pub struct NotifyRequester {
    namespace: String,
    rosters: Arc<Rosters>,
}

impl NotifyRequester {
    pub fn new(namespace: String, rosters: Arc<Rosters>) -> NotifyRequester {
        NotifyRequester { namespace, rosters }
    }

    /// The consumer's filters: every notifying event of `partitions` (all when empty) in the
    /// namespace.
    pub fn filters(namespace: &str, partitions: &[String]) -> Vec<String> {
        NOTIFYING_EVENTS
            .iter()
            .flat_map(|event_type| {
                subjects::incident_event_filters(namespace, partitions, event_type)
            })
            .collect()
    }
}

impl Handler for NotifyRequester {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        let event = convert::decode_event(&delivery.payload, &delivery.msg_id)
            .map_err(HandlerError::Poison)?;
        if event.namespace != self.namespace {
            return Err(HandlerError::Poison(format!(
                "event of namespace {:?} on a consumer of {:?}",
                event.namespace, self.namespace
            )));
        }
        // The consumer's filters name partitions, so every subject it sees carries one.
        let partition = subjects::parse_incident_event(&delivery.subject)
            .and_then(|parsed| parsed.partition)
            .ok_or_else(|| {
                HandlerError::Poison(format!(
                    "{}: not a partitioned incident subject",
                    delivery.subject
                ))
            })?;
        let mut commit = Commit::new();
        let requests = stage_notifications(
            &mut commit,
            &event,
            partition,
            &self.rosters,
            lifecycle::unix_ms_now(),
        )
        .map_err(HandlerError::Retry)?;
        if requests.is_empty() {
            tracing::debug!(incident = %event.incident_id, event = event.body.event_type(), "nobody on duty to notify");
        }
        Ok(commit)
    }

    /// Runs are safe as they are: the requester reads nothing from the store (each request is a
    /// new record of its own), so no commit of a run depends on another's.
    fn begin_run(&mut self) -> bool {
        true
    }
}

/// Every notification of one incident with its delivery state, in the order they were requested.
pub fn list_notifications(
    store: &store::Store,
    namespace: &str,
    incident_id: &str,
) -> Result<Vec<NotificationStatus>, store::Error> {
    let mut statuses: Vec<NotificationStatus> = store
        .scan_prefix(&incident_notifications_prefix(namespace, incident_id))?
        .into_iter()
        .map(|(_, status)| status)
        .collect();
    statuses.sort_by(|a, b| {
        (a.request.requested_at_unix_ms, &a.request.notification_id)
            .cmp(&(b.request.requested_at_unix_ms, &b.request.notification_id))
    });
    Ok(statuses)
}
