//! `musterctl watch`: follow incident changes live, filtered by grade, class, jurisdiction,
//! status, incident and event type.

use std::future::Future;

use muster_proto::v1 as pb;
use muster_proto::v1::escalation_service_client::EscalationServiceClient;
use muster_proto::v1::intake_service_client::IntakeServiceClient;

use super::{Context, Out};
use crate::view::{JurisdictionView, WatchEventView, or_dash};
use crate::watch_filter::WatchFilter;
use crate::{EXIT_OK, Error, WatchArgs};

/// The jurisdiction tree from escalation, for `--jurisdiction`.
pub(super) async fn jurisdiction_tree(context: &Context) -> Result<Vec<JurisdictionView>, Error> {
    let target = &context.escalation;
    let mut client = EscalationServiceClient::new(target.connect().await?);
    let response = target
        .call(
            "could not list jurisdictions",
            client.list_jurisdictions(pb::ListJurisdictionsRequest::default()),
        )
        .await?;
    Ok(response.jurisdictions.into_iter().map(Into::into).collect())
}

pub(super) async fn watch(
    context: &Context,
    args: WatchArgs,
    out: Out<'_>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<i32, Error> {
    let tree = if WatchFilter::needs_jurisdictions(&args) {
        jurisdiction_tree(context).await?
    } else {
        Vec::new()
    };
    let filter = WatchFilter::new(&args, &tree);
    let target = &context.intake;
    let mut client = IntakeServiceClient::new(target.connect().await?);
    let request = pb::WatchIncidentsRequest {
        namespace: context.namespace.clone(),
    };
    // The timeout bounds opening the stream only; the stream itself runs until stopped.
    let mut stream = target
        .call("refused the watch", client.watch_incidents(request))
        .await?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut printed: u64 = 0;
    loop {
        if args.max_events.is_some_and(|max| printed >= max) {
            return Ok(EXIT_OK);
        }
        let next = tokio::select! {
            () = &mut shutdown => return Ok(EXIT_OK),
            next = stream.message() => next,
        };
        let message = match next {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(EXIT_OK),
            Err(status) => {
                return Err(Error::from_status(
                    target.service,
                    "watch stream failed",
                    &status,
                ));
            }
        };
        let view = WatchEventView::from(message);
        if !filter.matches(&view) {
            continue;
        }
        printed += 1;
        if context.json {
            serde_json::to_writer(&mut *out, &view)?;
            writeln!(out)?;
        } else {
            let incident = &view.incident;
            writeln!(
                out,
                "{} {} {} grade={} lead={} status={}",
                incident.updated_at,
                or_dash(Some(&incident.id)),
                or_dash(Some(&view.event_type)),
                incident.grade_label(),
                incident.lead_code(),
                incident.status_label(),
            )?;
        }
        // Each line is flushed so that a pipe or a test sees it as it happens.
        out.flush()?;
    }
}
