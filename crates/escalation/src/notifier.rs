//! The webhook notifier: a durable consumer of `notification.requested` that POSTs each
//! notification as JSON to the configured webhook, retries failures with backoff (a nak with a
//! delay) up to a bounded number of attempts, and records the outcome: the stored record
//! `notification/<ns>/<incident>/<id>` (attempts, last status, when finished) and, once final, a
//! `notification.delivered` event, in the same commit as the processed id.
//!
//! Drill namespaces never reach the live webhook: their notifications go to the drill webhook if
//! one is configured, and otherwise are recorded as delivered to the drill sink with no network
//! call. Every channel (webhook, sms, phone, email) leaves through the webhook, a gateway that
//! reads `channel` and `address` from the body.

use std::time::Duration;

use bus::subjects;
use bus::{Delivery, HandlerError, WorkHandler, WorkOutcome};
use domain::notification::{
    DeliveryState, NotificationDelivered, NotificationRequest, NotificationStatus,
};
use muster_proto::convert_notify;
use serde::Serialize;
use store::{Commit, Store};

use crate::notify::notification_key;
use crate::webhook::{HttpUrl, post_json};

/// How the notifier delivers.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Where live notifications go; `None`: they are recorded failed ("no webhook configured").
    pub webhook_url: Option<String>,
    /// Where drill notifications go; `None`: the drill sink (recorded, no network call).
    pub drill_webhook_url: Option<String>,
    /// Per attempt: connect, send and status line.
    pub timeout: Duration,
    /// Attempts before a notification is recorded failed.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; doubled after each further one.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for NotifierOptions {
    fn default() -> NotifierOptions {
        NotifierOptions {
            webhook_url: None,
            drill_webhook_url: None,
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl NotifierOptions {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// The JSON body the webhook receives.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub notification_id: &'a str,
    pub namespace: &'a str,
    pub incident_id: &'a str,
    pub jurisdiction: &'a str,
    pub recipient: &'a str,
    pub role: &'a str,
    pub channel: &'a str,
    pub address: &'a str,
    pub message: &'a str,
    pub reason: &'a str,
    pub drill: bool,
}

impl<'a> WebhookBody<'a> {
    pub fn of(request: &'a NotificationRequest) -> WebhookBody<'a> {
        WebhookBody {
            notification_id: &request.notification_id,
            namespace: &request.namespace,
            incident_id: &request.incident_id,
            jurisdiction: &request.jurisdiction_code,
            recipient: &request.recipient_name,
            role: request.role.as_str(),
            channel: request.channel.as_str(),
            address: &request.address,
            message: &request.message,
            reason: request.reason.as_str(),
            drill: request.drill,
        }
    }
}

/// Where one notification goes.
enum Target {
    Webhook(HttpUrl),
    DrillWebhook(HttpUrl),
    DrillSink,
    Nowhere,
}

impl Target {
    fn sink(&self) -> &'static str {
        match self {
            Target::Webhook(_) | Target::Nowhere => "webhook",
            Target::DrillWebhook(_) => "drill_webhook",
            Target::DrillSink => "drill_sink",
        }
    }
}

/// The consumer's handler.
pub struct Notifier {
    store: Store,
    namespace: String,
    options: NotifierOptions,
    webhook: Option<HttpUrl>,
    drill_webhook: Option<HttpUrl>,
}

impl Notifier {
    /// Checks the URLs (plain `http://` only).
    pub fn new(
        store: Store,
        namespace: String,
        options: NotifierOptions,
    ) -> Result<Notifier, String> {
        let parse = |url: &Option<String>| url.as_deref().map(HttpUrl::parse).transpose();
        Ok(Notifier {
            webhook: parse(&options.webhook_url)?,
            drill_webhook: parse(&options.drill_webhook_url)?,
            store,
            namespace,
            options,
        })
    }

    /// The consumer's filters: every requested notification of `partitions` (all when empty)
    /// in the namespace.
    pub fn filters(namespace: &str, partitions: &[String]) -> Vec<String> {
        subjects::notification_event_filters(
            namespace,
            partitions,
            subjects::NOTIFICATION_REQUESTED,
        )
    }

    fn target(&self, request: &NotificationRequest) -> Target {
        // The namespace in the subject decides, not the flag alone: a drill never goes live.
        if request.drill || domain::notification::is_drill(&request.namespace) {
            match &self.drill_webhook {
                Some(url) => Target::DrillWebhook(url.clone()),
                None => Target::DrillSink,
            }
        } else {
            match &self.webhook {
                Some(url) => Target::Webhook(url.clone()),
                None => Target::Nowhere,
            }
        }
    }

    async fn attempt(
        &self,
        target: &Target,
        request: &NotificationRequest,
    ) -> Result<u16, (u16, String)> {
        let url = match target {
            Target::Webhook(url) | Target::DrillWebhook(url) => url,
            Target::DrillSink => return Ok(0),
            Target::Nowhere => return Err((0, "no notify webhook is configured".into())),
        };
        let body = serde_json::to_vec(&WebhookBody::of(request))
            .map_err(|error| (0, format!("cannot encode the body: {error}")))?;
        match post_json(url, &body, self.options.timeout).await {
            Ok(status) if (200..300).contains(&status) => Ok(status),
            Ok(status) => Err((status, format!("the webhook answered {status}"))),
            Err(error) => Err((0, error)),
        }
    }
}

impl WorkHandler for Notifier {
    async fn handle(&mut self, delivery: &Delivery) -> Result<WorkOutcome, HandlerError> {
        let request =
            convert_notify::decode_requested(&delivery.payload).map_err(HandlerError::Poison)?;
        let parsed = subjects::parse_notification_event(&delivery.subject);
        let subject_namespace = parsed.map(|(namespace, _, _, _)| namespace);
        if subject_namespace != Some(self.namespace.as_str()) || request.namespace != self.namespace
        {
            return Err(HandlerError::Poison(format!(
                "notification of namespace {:?} ({}) on a notifier of {:?}",
                request.namespace, delivery.subject, self.namespace
            )));
        }
        // The outcome goes out on the request's partition (the filters name partitions).
        let partition = parsed
            .and_then(|(_, partition, _, _)| partition)
            .ok_or_else(|| {
                HandlerError::Poison(format!(
                    "{}: not a partitioned notification subject",
                    delivery.subject
                ))
            })?;
        let key = notification_key(
            &request.namespace,
            &request.incident_id,
            &request.notification_id,
        );
        let mut status = self
            .store
            .get::<NotificationStatus>(&key)
            .map_err(|error| HandlerError::Retry(error.to_string()))?
            .unwrap_or_else(|| NotificationStatus::pending(request.clone()));
        if status.state != DeliveryState::Pending {
            // Finished before (a redelivery under another message id): nothing to do.
            return Ok(WorkOutcome::Done(Commit::new()));
        }
        let target = self.target(&request);
        let attempt = status.attempts + 1;
        let result = self.attempt(&target, &request).await;
        let now = lifecycle::unix_ms_now();
        status.attempts = attempt;
        status.sink = target.sink().to_string();
        let (ok, status_code, error) = match result {
            Ok(code) => (true, code, String::new()),
            Err((code, error)) => (false, code, error),
        };
        status.last_status_code = status_code;
        status.last_error = error.clone();
        let retry =
            !ok && attempt < self.options.max_attempts && !matches!(target, Target::Nowhere);
        let mut commit = Commit::new();
        if retry {
            tracing::warn!(notification = %request.notification_id, attempt, %error, "notification not delivered; will retry");
            commit
                .put(key, &status)
                .map_err(|error| HandlerError::Retry(error.to_string()))?;
            return Ok(WorkOutcome::Later {
                commit,
                delay: self.options.backoff(attempt),
            });
        }
        status.state = if ok {
            DeliveryState::Delivered
        } else {
            tracing::error!(notification = %request.notification_id, attempt, %error, "notification failed for good");
            DeliveryState::Failed
        };
        status.finished_at_unix_ms = Some(now);
        let delivered = NotificationDelivered {
            notification_id: request.notification_id.clone(),
            namespace: request.namespace.clone(),
            incident_id: request.incident_id.clone(),
            attempt,
            ok,
            status_code,
            error,
            sink: status.sink.clone(),
            at_unix_ms: now,
        };
        let subject = subjects::notification_event(
            &request.namespace,
            partition,
            &request.notification_id,
            subjects::NOTIFICATION_DELIVERED,
        )
        .map_err(|error| HandlerError::Poison(error.to_string()))?;
        commit
            .put(key, &status)
            .map_err(|error| HandlerError::Retry(error.to_string()))?;
        commit.event(subject, convert_notify::encode_delivered(&delivered));
        Ok(WorkOutcome::Done(commit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = NotifierOptions {
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(10),
            ..NotifierOptions::default()
        };
        assert_eq!(options.backoff(1), Duration::from_secs(2));
        assert_eq!(options.backoff(2), Duration::from_secs(4));
        assert_eq!(options.backoff(3), Duration::from_secs(8));
        assert_eq!(options.backoff(4), Duration::from_secs(10));
        assert_eq!(options.backoff(40), Duration::from_secs(10));
    }
}
