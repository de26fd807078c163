//! Monitoring feeds: the HTTP listener (`POST /v1/feeds/<format>`), the NATS feed consumer
//! (`muster.feed.<format>`), and the writer both hand their alerts to.
//!
//! Every message gets an answer: accepted (with what became of each alert), rejected (with a
//! reason a person can act on), or unavailable (retry later: intake is saturated or its storage
//! failed). Nothing is acknowledged before it is durable.

pub mod http;
pub mod nats;
pub mod writer;

use std::sync::Arc;

use feeds::mapping::Mapping;
use feeds::{Format, Limits, RejectCode, Rejection};
use serde_json::json;
use store::Store;
use tokio::sync::{mpsc, oneshot};

pub use writer::{AlertResult, FeedWriter, Outcome, Submission, WriterConfig};

/// Submissions waiting for the writer before new ones are refused with 503.
pub const QUEUE_LEN: usize = 1024;
/// Outbox events waiting for the bus before feeds are refused with 503.
pub const OUTBOX_LEN_MAX: usize = 50_000;
/// Longest alert identity / dedup key accepted (CAP `sender,identifier,sent`, fingerprints, ...).
pub const IDENTITY_BYTES_MAX: usize = 1024;
/// What a refused submitter is told to wait, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The answer to one feed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Accepted(Vec<AlertResult>),
    Rejected(Rejection),
    /// Not taken: retry after a while. Nothing of it was stored.
    Unavailable(String),
}

impl Answer {
    /// The HTTP status for this answer.
    pub fn http_status(&self) -> u16 {
        match self {
            Answer::Accepted(_) => 200,
            Answer::Rejected(rejection) if rejection.code == RejectCode::TooLarge => 413,
            Answer::Rejected(_) => 400,
            Answer::Unavailable(_) => 503,
        }
    }

    /// The JSON body: a CAP-style Ack or Error.
    pub fn to_json(&self) -> Vec<u8> {
        let value = match self {
            Answer::Accepted(results) => json!({
                "status": "accepted",
                "cap_msg_type": "Ack",
                "results": results,
            }),
            Answer::Rejected(rejection) => json!({
                "status": "rejected",
                "cap_msg_type": "Error",
                "code": rejection.code.as_str(),
                "reason": rejection.reason,
            }),
            Answer::Unavailable(reason) => json!({
                "status": "unavailable",
                "cap_msg_type": "Error",
                "reason": reason,
                "retry_after_seconds": RETRY_AFTER_SECONDS,
            }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// The front half of feed intake, shared by the HTTP handlers and the NATS consumer: parses,
/// checks backpressure, queues for the writer, waits for the durable answer.
#[derive(Clone)]
pub struct FeedIntake {
    queue: mpsc::Sender<Submission>,
    store: Store,
    mapping: Arc<Mapping>,
    limits: Limits,
    outbox_len_max: usize,
    metrics: Option<crate::metrics::IntakeMetrics>,
}

impl FeedIntake {
    pub fn new(
        queue: mpsc::Sender<Submission>,
        store: Store,
        mapping: Arc<Mapping>,
        limits: Limits,
    ) -> FeedIntake {
        FeedIntake {
            queue,
            store,
            mapping,
            limits,
            outbox_len_max: OUTBOX_LEN_MAX,
            metrics: None,
        }
    }

    /// Counts every answer in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<crate::metrics::IntakeMetrics>) -> FeedIntake {
        self.metrics = metrics;
        self
    }

    /// Refuse feeds while more than `max` outbox events wait for the bus (default
    /// [`OUTBOX_LEN_MAX`]).
    pub fn with_outbox_len_max(mut self, max: usize) -> FeedIntake {
        self.outbox_len_max = max;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses `body` as `format` and, if it holds anything, waits for the writer's durable answer.
    /// `feed` names a configured feed (from `?feed=` or the `Muster-Feed` header).
    pub async fn submit(&self, format: Format, feed: Option<&str>, body: &[u8]) -> Answer {
        let mut resolved = None;
        let answer = self.submit_inner(format, feed, body, &mut resolved).await;
        if let Some(metrics) = &self.metrics {
            metrics.feed_answer(format, resolved.as_deref().or(feed), &answer);
        }
        answer
    }

    /// [`FeedIntake::submit`]; `resolved` is set to the feed the alerts are attributed to.
    async fn submit_inner(
        &self,
        format: Format,
        feed: Option<&str>,
        body: &[u8],
        resolved: &mut Option<String>,
    ) -> Answer {
        if let Some(name) = feed
            && !self.mapping.feeds().iter().any(|spec| spec.name == name)
        {
            let known: Vec<&str> = self
                .mapping
                .feeds()
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            return Answer::Rejected(Rejection::new(
                RejectCode::InvalidValue,
                format!(
                    "feed: {name:?} is not a configured feed (configured: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        let alerts = match feeds::parse(format, body, &self.limits) {
            Ok(alerts) => alerts,
            Err(rejection) => return Answer::Rejected(rejection),
        };
        if alerts.is_empty() {
            return Answer::Accepted(Vec::new());
        }
        // Identities become parts of storage keys: keep them to a sane size.
        if let Some((index, alert)) = alerts.iter().enumerate().find(|(_, a)| {
            a.identity.len() > IDENTITY_BYTES_MAX || a.dedup_key.len() > IDENTITY_BYTES_MAX
        }) {
            return Answer::Rejected(Rejection::new(
                RejectCode::InvalidValue,
                format!(
                    "alert {index}: its identity ({} bytes) is longer than {IDENTITY_BYTES_MAX} bytes",
                    alert.identity.len().max(alert.dedup_key.len())
                ),
            ));
        }
        let waiting = self.store.outbox_len();
        if waiting > self.outbox_len_max {
            return Answer::Unavailable(format!(
                "the bus is behind: {waiting} events are waiting to be published; retry in {RETRY_AFTER_SECONDS} s"
            ));
        }
        let feed = feed.map(str::to_string).or_else(|| {
            alerts
                .first()
                .and_then(|alert| self.mapping.feed_for(alert))
                .map(|spec| spec.name.clone())
        });
        resolved.clone_from(&feed);
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            feed,
            alerts: alerts.into_iter().map(Arc::new).collect(),
            reply,
        };
        match self.queue.try_send(submission) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Answer::Unavailable(format!(
                    "intake is saturated ({QUEUE_LEN} submissions queued); retry in {RETRY_AFTER_SECONDS} s"
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Answer::Unavailable("intake is shutting down; retry shortly".into());
            }
        }
        match answer.await {
            Ok(Ok(results)) => Answer::Accepted(results),
            Ok(Err(reason)) => Answer::Unavailable(format!(
                "{reason}; not acknowledged, retry (an alert kept after all is answered as a \
                 duplicate)"
            )),
            Err(_) => Answer::Unavailable("intake is shutting down; retry shortly".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: &str = r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>T-1</identifier><sender>test@example.org</sender>
  <sent>2026-11-28T10:00:00+08:00</sent><status>Actual</status><msgType>Alert</msgType>
  <scope>Public</scope>
  <info><category>Geo</category><event>Earthquake</event><urgency>Immediate</urgency>
  <severity>Severe</severity><certainty>Observed</certainty></info>
</alert>"#;

    fn intake(queue_len: usize) -> (FeedIntake, mpsc::Receiver<Submission>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (queue, queued) = mpsc::channel(queue_len);
        let intake = FeedIntake::new(
            queue,
            store,
            Arc::new(Mapping::embedded_default()),
            Limits::default(),
        );
        (intake, queued, dir)
    }

    #[tokio::test]
    async fn a_full_queue_answers_unavailable_with_nothing_stored() {
        let (intake, mut queued, _dir) = intake(1);
        // The first submission fills the queue and waits for a writer that is not running.
        let first = tokio::spawn({
            let intake = intake.clone();
            async move { intake.submit(Format::Cap, None, CAP.as_bytes()).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while intake.queue.capacity() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let answer = intake.submit(Format::Cap, None, CAP.as_bytes()).await;
        let Answer::Unavailable(reason) = &answer else {
            panic!("expected unavailable, got {answer:?}");
        };
        assert!(reason.contains("saturated"), "{reason}");
        assert_eq!(answer.http_status(), 503);
        let json: serde_json::Value = serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(json["status"], "unavailable");
        assert_eq!(json["retry_after_seconds"], RETRY_AFTER_SECONDS);
        // The queued one is answered once a writer takes it; here the writer refuses it.
        let submission = queued.recv().await.unwrap();
        submission.reply.send(Err("storage failed".into())).unwrap();
        assert!(matches!(first.await.unwrap(), Answer::Unavailable(_)));
    }

    #[tokio::test]
    async fn a_backed_up_outbox_answers_unavailable() {
        let (intake, mut queued, _dir) = intake(8);
        let mut commit = store::Commit::new();
        for n in 0..3 {
            commit.event(
                format!("muster.live.incident.390000.INC-{n}.reported"),
                vec![1],
            );
        }
        intake.store.commit(&commit).unwrap();
        let intake = intake.with_outbox_len_max(2);
        let answer = intake.submit(Format::Cap, None, CAP.as_bytes()).await;
        let Answer::Unavailable(reason) = &answer else {
            panic!("expected unavailable, got {answer:?}");
        };
        assert!(reason.contains("3 events are waiting"), "{reason}");
        assert!(queued.try_recv().is_err(), "nothing was queued");
    }

    #[tokio::test]
    async fn rejections_and_unknown_feeds_answer_400_without_queueing() {
        let (intake, mut queued, _dir) = intake(8);
        let answer = intake.submit(Format::Cap, None, b"<!DOCTYPE x><x/>").await;
        assert_eq!(answer.http_status(), 400);
        let answer = intake
            .submit(Format::Cap, Some("no-such-feed"), CAP.as_bytes())
            .await;
        let Answer::Rejected(rejection) = &answer else {
            panic!("{answer:?}");
        };
        assert!(
            rejection.reason.contains("usgs-quakes"),
            "{}",
            rejection.reason
        );
        let long_id = CAP.replace("T-1", &"x".repeat(2000));
        let answer = intake.submit(Format::Cap, None, long_id.as_bytes()).await;
        let Answer::Rejected(rejection) = &answer else {
            panic!("{answer:?}");
        };
        assert!(
            rejection.reason.contains("longer than 1024"),
            "{}",
            rejection.reason
        );
        let huge = vec![b' '; Limits::default().body_bytes_max + 1];
        assert_eq!(
            intake.submit(Format::Cap, None, &huge).await.http_status(),
            413
        );
        assert!(queued.try_recv().is_err());
    }
}
