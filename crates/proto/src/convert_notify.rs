//! Wire ⇄ domain conversions for notifications: `NotificationRequested`, `NotificationDelivered`
//! and the `Notification` state that `ListNotifications` answers with.

use domain::notification::{
    DeliveryState, NotificationDelivered, NotificationReason, NotificationRequest,
    NotificationStatus,
};
use domain::roster::{Channel, Role};
use prost::Message;

use crate::v1 as pb;

pub fn requested_to_wire(request: &NotificationRequest) -> pb::NotificationRequested {
    pb::NotificationRequested {
        notification_id: request.notification_id.clone(),
        namespace: request.namespace.clone(),
        incident_id: request.incident_id.clone(),
        jurisdiction_code: request.jurisdiction_code.clone(),
        recipient_name: request.recipient_name.clone(),
        role: request.role.as_str().to_string(),
        channel: request.channel.as_str().to_string(),
        address: request.address.clone(),
        message: request.message.clone(),
        reason: request.reason.as_str().to_string(),
        drill: request.drill,
        requested_at_unix_ms: request.requested_at_unix_ms,
        source_event_id: request.source_event_id.clone(),
    }
}

pub fn requested_from_wire(wire: pb::NotificationRequested) -> Result<NotificationRequest, String> {
    let role = Role::parse(&wire.role).ok_or_else(|| format!("unknown role {:?}", wire.role))?;
    let channel = Channel::parse(&wire.channel)
        .ok_or_else(|| format!("unknown channel {:?}", wire.channel))?;
    let reason = NotificationReason::parse(&wire.reason)
        .ok_or_else(|| format!("unknown reason {:?}", wire.reason))?;
    if wire.notification_id.is_empty() {
        return Err("notification without an id".into());
    }
    Ok(NotificationRequest {
        notification_id: wire.notification_id,
        namespace: wire.namespace,
        incident_id: wire.incident_id,
        jurisdiction_code: wire.jurisdiction_code,
        recipient_name: wire.recipient_name,
        role,
        channel,
        address: wire.address,
        message: wire.message,
        reason,
        drill: wire.drill,
        source_event_id: wire.source_event_id,
        requested_at_unix_ms: wire.requested_at_unix_ms,
    })
}

pub fn encode_requested(request: &NotificationRequest) -> Vec<u8> {
    requested_to_wire(request).encode_to_vec()
}

pub fn decode_requested(bytes: &[u8]) -> Result<NotificationRequest, String> {
    let wire = pb::NotificationRequested::decode(bytes)
        .map_err(|e| format!("not a muster.v1.NotificationRequested: {e}"))?;
    requested_from_wire(wire)
}

pub fn encode_delivered(delivered: &NotificationDelivered) -> Vec<u8> {
    pb::NotificationDelivered {
        notification_id: delivered.notification_id.clone(),
        attempt: delivered.attempt,
        ok: delivered.ok,
        status_code: u32::from(delivered.status_code),
        error: delivered.error.clone(),
        at_unix_ms: delivered.at_unix_ms,
        namespace: delivered.namespace.clone(),
        incident_id: delivered.incident_id.clone(),
        sink: delivered.sink.clone(),
    }
    .encode_to_vec()
}

pub fn decode_delivered(bytes: &[u8]) -> Result<NotificationDelivered, String> {
    let wire = pb::NotificationDelivered::decode(bytes)
        .map_err(|e| format!("not a muster.v1.NotificationDelivered: {e}"))?;
    Ok(NotificationDelivered {
        notification_id: wire.notification_id,
        namespace: wire.namespace,
        incident_id: wire.incident_id,
        attempt: wire.attempt,
        ok: wire.ok,
        status_code: u16::try_from(wire.status_code).unwrap_or(0),
        error: wire.error,
        sink: wire.sink,
        at_unix_ms: wire.at_unix_ms,
    })
}

pub fn status_to_wire(status: &NotificationStatus) -> pb::Notification {
    pb::Notification {
        request: Some(requested_to_wire(&status.request)),
        state: status.state.as_str().to_string(),
        attempts: status.attempts,
        last_status_code: u32::from(status.last_status_code),
        last_error: status.last_error.clone(),
        finished_at_unix_ms: status.finished_at_unix_ms.unwrap_or(0),
        sink: status.sink.clone(),
    }
}

/// The state name a `Notification` carries, parsed back (for clients).
pub fn state_from_wire(state: &str) -> Option<DeliveryState> {
    match state {
        "pending" => Some(DeliveryState::Pending),
        "delivered" => Some(DeliveryState::Delivered),
        "failed" => Some(DeliveryState::Failed),
        _ => None,
    }
}
