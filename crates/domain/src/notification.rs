//! Notifications: which incident events call for whom, derived purely from the event and the duty
//! rosters (`now` is a parameter).
//!
//! A `graded` event notifies the lead's on-duty roster; `escalated` the roster of the level now
//! asked to acknowledge; `lead_changed` the roster of the new lead. Nothing else notifies, so a
//! notification can only follow an event the escalation machine emitted, and the machine emits no
//! escalation once an acknowledgement has committed: no notification follows an ack.
//!
//! Notification ids are derived from the source event id and the recipient, so a redelivered
//! event requests the same notifications again and every consumer can drop the duplicates.

use serde::{Deserialize, Serialize};

use crate::event::{EventBody, IncidentEvent};
use crate::roster::{Channel, Role, Rosters};

/// The live namespace; every other is a drill.
pub const LIVE_NAMESPACE: &str = "live";

/// Why a notification was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationReason {
    /// The incident was graded (or regraded): its lead must act.
    Graded,
    /// An acknowledgement deadline passed (or an officer escalated): the next level must act.
    Escalated,
    /// Command moved to another jurisdiction.
    LeadChanged,
    /// A statutory report is overdue.
    OverdueReport,
}

impl NotificationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationReason::Graded => "graded",
            NotificationReason::Escalated => "escalated",
            NotificationReason::LeadChanged => "lead_changed",
            NotificationReason::OverdueReport => "overdue_report",
        }
    }

    pub fn parse(text: &str) -> Option<NotificationReason> {
        match text {
            "graded" => Some(NotificationReason::Graded),
            "escalated" => Some(NotificationReason::Escalated),
            "lead_changed" => Some(NotificationReason::LeadChanged),
            "overdue_report" => Some(NotificationReason::OverdueReport),
            _ => None,
        }
    }
}

/// One person to tell one thing (`notification.requested`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequest {
    /// `NTF-<32 hex>`, derived from the source event id, jurisdiction and recipient address.
    pub notification_id: String,
    pub namespace: String,
    pub incident_id: String,
    /// The jurisdiction whose roster the recipient is on.
    pub jurisdiction_code: String,
    pub recipient_name: String,
    pub role: Role,
    pub channel: Channel,
    pub address: String,
    pub message: String,
    pub reason: NotificationReason,
    /// True outside the live namespace: the notifier sends it to the drill sink only.
    pub drill: bool,
    /// The event that called for it.
    pub source_event_id: String,
    pub requested_at_unix_ms: i64,
}

/// What became of one delivery attempt (`notification.delivered`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationDelivered {
    pub notification_id: String,
    pub namespace: String,
    pub incident_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub ok: bool,
    /// The webhook's HTTP status; 0 when there was no answer (or no network call: drill sink).
    pub status_code: u16,
    /// Why it failed; empty when `ok`.
    pub error: String,
    /// Where it went: `webhook`, `drill_webhook` or `drill_sink`.
    pub sink: String,
    pub at_unix_ms: i64,
}

/// Where a notification's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// A requested notification and its delivery so far (the notifier's stored record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationStatus {
    pub request: NotificationRequest,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status_code: u16,
    pub last_error: String,
    /// When it was delivered or finally failed; `None` while pending.
    pub finished_at_unix_ms: Option<i64>,
    /// `webhook`, `drill_webhook` or `drill_sink`; empty before the first attempt.
    pub sink: String,
}

impl NotificationStatus {
    pub fn pending(request: NotificationRequest) -> NotificationStatus {
        NotificationStatus {
            request,
            state: DeliveryState::Pending,
            attempts: 0,
            last_status_code: 0,
            last_error: String::new(),
            finished_at_unix_ms: None,
            sink: String::new(),
        }
    }
}

/// Whether `namespace` is a drill's.
pub fn is_drill(namespace: &str) -> bool {
    namespace != LIVE_NAMESPACE
}

/// The id of the notification of `source_event_id` to `address` of `jurisdiction_code`: the same
/// inputs give the same id, and it is a valid subject token.
pub fn notification_id(source_event_id: &str, jurisdiction_code: &str, address: &str) -> String {
    let key = format!("{source_event_id}\u{1f}{jurisdiction_code}\u{1f}{address}");
    let high = fnv1a64(0xcbf2_9ce4_8422_2325, key.as_bytes());
    let low = fnv1a64(0x8422_2325_cbf2_9ce4, key.as_bytes());
    format!("NTF-{high:016x}{low:016x}")
}

fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The notifications `event` calls for: one per on-duty person of the jurisdiction that must act.
/// Events that call for none (reports, acks, assignments, ...) give an empty list.
pub fn notifications_for(
    event: &IncidentEvent,
    rosters: &Rosters,
    now_unix_ms: i64,
) -> Vec<NotificationRequest> {
    let (reason, code, message) = match &event.body {
        EventBody::Graded(graded) => {
            let grade = graded
                .grade
                .map_or_else(|| "ungraded".to_string(), |g| format!("grade {g:?}"));
            (
                NotificationReason::Graded,
                graded.lead_code.clone(),
                format!(
                    "{incident}: {kind}, {grade}; {lead} leads. {summary}",
                    incident = event.incident_id,
                    kind = graded.report.kind,
                    lead = graded.lead_name,
                    summary = graded.report.summary,
                ),
            )
        }
        EventBody::Escalated(escalated) => {
            let reason = if escalated.reason.contains("report") {
                NotificationReason::OverdueReport
            } else {
                NotificationReason::Escalated
            };
            (
                reason,
                escalated.to.code.clone(),
                format!(
                    "{incident} escalated from {from} to {to}: {why}. Please acknowledge.",
                    incident = event.incident_id,
                    from = escalated.from.name,
                    to = escalated.to.name,
                    why = escalated.reason,
                ),
            )
        }
        EventBody::LeadChanged(change) => (
            NotificationReason::LeadChanged,
            change.to.code.clone(),
            format!(
                "{incident}: command passes from {from} to {to} ({why}).",
                incident = event.incident_id,
                from = change.from.name,
                to = change.to.name,
                why = change.reason,
            ),
        ),
        _ => return Vec::new(),
    };
    let drill = is_drill(&event.namespace);
    let message = if drill {
        format!("[DRILL 演练] {message}")
    } else {
        message
    };
    rosters
        .on_duty(&code, now_unix_ms)
        .into_iter()
        .map(|entry| NotificationRequest {
            notification_id: notification_id(&event.event_id, &code, &entry.address),
            namespace: event.namespace.clone(),
            incident_id: event.incident_id.clone(),
            jurisdiction_code: code.clone(),
            recipient_name: entry.name.clone(),
            role: entry.role,
            channel: entry.channel,
            address: entry.address.clone(),
            message: message.clone(),
            reason,
            drill,
            source_event_id: event.event_id.clone(),
            requested_at_unix_ms: now_unix_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Escalated, JurisdictionRef};
    use crate::jurisdiction::Level;
    use crate::region::Region;

    fn escalated(namespace: &str) -> IncidentEvent {
        let j = |code: &str, name: &str, level| JurisdictionRef {
            code: code.into(),
            name: name.into(),
            level,
        };
        IncidentEvent {
            event_id: "abc-17".into(),
            incident_id: "INC-1".into(),
            namespace: namespace.into(),
            at_unix_ms: 0,
            source_service: "escalation".into(),
            body: EventBody::Escalated(Escalated {
                from: j("390102", "东湖区", Level::County),
                to: j("390100", "澄州市", Level::City),
                reason: "acknowledgement deadline passed".into(),
                manual: false,
            }),
        }
    }

    #[test]
    fn an_escalation_notifies_the_on_duty_roster_of_the_level_above() {
        let region = Region::embedded_default();
        let rosters = Rosters::embedded_default(&region.tree).unwrap();
        // 10:00 in +08:00.
        let now = 1_767_225_600_000 + 2 * 3_600_000;
        let requests = notifications_for(&escalated("live"), &rosters, now);
        assert_eq!(requests.len(), rosters.on_duty("390100", now).len());
        assert!(requests.iter().all(|r| r.jurisdiction_code == "390100"));
        assert!(
            requests
                .iter()
                .all(|r| r.reason == NotificationReason::Escalated)
        );
        assert!(requests.iter().all(|r| !r.drill));
        // Deterministic ids, distinct per recipient, valid subject tokens.
        let again = notifications_for(&escalated("live"), &rosters, now + 1);
        assert_eq!(
            requests
                .iter()
                .map(|r| &r.notification_id)
                .collect::<Vec<_>>(),
            again.iter().map(|r| &r.notification_id).collect::<Vec<_>>()
        );
        assert_ne!(requests[0].notification_id, requests[1].notification_id);
        assert!(requests[0].notification_id.len() <= 64);

        let drill = notifications_for(&escalated("drill.x1"), &rosters, now);
        assert!(
            drill
                .iter()
                .all(|r| r.drill && r.message.starts_with("[DRILL"))
        );
    }

    #[test]
    fn reason_names_round_trip() {
        for reason in [
            NotificationReason::Graded,
            NotificationReason::Escalated,
            NotificationReason::LeadChanged,
            NotificationReason::OverdueReport,
        ] {
            assert_eq!(NotificationReason::parse(reason.as_str()), Some(reason));
        }
    }
}
