//! `musterctl notifications INC`: the duty-roster notifications requested for one incident and
//! where their delivery stands (EscalationService.ListNotifications).

use muster_proto::v1 as pb;
use muster_proto::v1::escalation_service_client::EscalationServiceClient;
use serde::Serialize;

use super::{Context, Out, write_json};
use crate::table::Table;
use crate::time::format_time_of_day_ms;
use crate::{EXIT_OK, Error, NotificationsArgs};

/// One notification as musterctl shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    pub notification_id: String,
    pub jurisdiction_code: String,
    pub recipient: String,
    pub role: String,
    pub channel: String,
    pub address: String,
    pub reason: String,
    pub drill: bool,
    pub message: String,
    pub requested_at_unix_ms: i64,
    pub state: String,
    pub attempts: u32,
    pub last_status_code: u32,
    pub last_error: String,
    pub sink: String,
    pub finished_at_unix_ms: Option<i64>,
}

impl From<pb::Notification> for NotificationView {
    fn from(notification: pb::Notification) -> Self {
        let request = notification.request.unwrap_or_default();
        NotificationView {
            notification_id: request.notification_id,
            jurisdiction_code: request.jurisdiction_code,
            recipient: request.recipient_name,
            role: request.role,
            channel: request.channel,
            address: request.address,
            reason: request.reason,
            drill: request.drill,
            message: request.message,
            requested_at_unix_ms: request.requested_at_unix_ms,
            state: notification.state,
            attempts: notification.attempts,
            last_status_code: notification.last_status_code,
            last_error: notification.last_error,
            sink: notification.sink,
            finished_at_unix_ms: (notification.finished_at_unix_ms != 0)
                .then_some(notification.finished_at_unix_ms),
        }
    }
}

impl NotificationView {
    fn outcome_label(&self) -> String {
        match (self.last_status_code, self.last_error.is_empty()) {
            (0, true) => self.sink.clone(),
            (code, true) => format!("{} {code}", self.sink),
            (_, false) => self.last_error.clone(),
        }
    }
}

pub(super) async fn notifications(
    context: &Context,
    args: NotificationsArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.escalation;
    let request = pb::ListNotificationsRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
    };
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call(
            "could not list notifications",
            client.list_notifications(request),
        )
        .await?;
    let views: Vec<NotificationView> = response.notifications.into_iter().map(Into::into).collect();
    if context.json {
        write_json(out, &views)?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new([
        "REQUESTED",
        "REASON",
        "JURISDICTION",
        "RECIPIENT",
        "ROLE",
        "CHANNEL",
        "STATE",
        "ATTEMPTS",
        "OUTCOME",
    ]);
    for view in &views {
        table.row([
            format_time_of_day_ms(view.requested_at_unix_ms),
            if view.drill {
                format!("{} (drill)", view.reason)
            } else {
                view.reason.clone()
            },
            view.jurisdiction_code.clone(),
            view.recipient.clone(),
            view.role.clone(),
            format!("{} {}", view.channel, view.address),
            view.state.clone(),
            view.attempts.to_string(),
            view.outcome_label(),
        ]);
    }
    table.write_to(out)?;
    Ok(EXIT_OK)
}
