//! Feed messages from JetStream (`muster.feed.<format>`): the same path as HTTP, acked only after
//! the writer's commit, answered on the `Muster-Reply-To` subject.

use std::time::Duration;

use bus::{FeedHandler, FeedMessage, FeedOutcome};
use feeds::{Format, RejectCode, Rejection};

use super::{Answer, FeedIntake, RETRY_AFTER_SECONDS};

pub struct NatsFeeds {
    intake: FeedIntake,
}

impl NatsFeeds {
    pub fn new(intake: FeedIntake) -> NatsFeeds {
        NatsFeeds { intake }
    }
}

impl FeedHandler for NatsFeeds {
    async fn handle(&mut self, group: Vec<FeedMessage>) -> Vec<FeedOutcome> {
        // Submit the whole group at once so the writer commits it as one batch.
        let answers = futures_util::future::join_all(group.iter().map(|message| async {
            match Format::parse(&message.format) {
                Some(format) => {
                    self.intake
                        .submit(format, message.feed_name.as_deref(), &message.payload)
                        .await
                }
                None => Answer::Rejected(Rejection::new(
                    RejectCode::Unsupported,
                    format!(
                        "subject muster.feed.{}: unknown format (use cap, alertmanager, pagerduty or geojson)",
                        message.format
                    ),
                )),
            }
        }))
        .await;
        answers
            .into_iter()
            .map(|answer| match answer {
                Answer::Unavailable(reason) => {
                    tracing::warn!(%reason, "feed message left for redelivery");
                    FeedOutcome::Later {
                        delay: Duration::from_secs(RETRY_AFTER_SECONDS),
                    }
                }
                answer => FeedOutcome::Done {
                    answer: answer.to_json().into(),
                },
            })
            .collect()
    }
}
