//! `musterctl mutual-aid INC`: the mutual-aid requests dispatch made for one incident, with their
//! answers and units (DispatchService.ListMutualAid).

use muster_proto::v1 as pb;
use muster_proto::v1::dispatch_service_client::DispatchServiceClient;
use serde::Serialize;

use super::{Context, Out, write_json};
use crate::table::Table;
use crate::{EXIT_OK, Error, MutualAidArgs};

/// One request as musterctl shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MutualAidView {
    pub request_id: String,
    pub from: String,
    pub to: String,
    pub resource_type: String,
    pub quantity: u32,
    pub state: String,
    pub partial: bool,
    pub committed_unit_ids: Vec<String>,
    pub released_unit_ids: Vec<String>,
    pub decline_code: String,
    pub decline_reason: String,
    pub cascade_depth: u32,
    pub requested_at_unix_ms: i64,
}

fn jurisdiction(j: Option<pb::JurisdictionRef>) -> String {
    j.map_or(String::new(), |j| {
        if j.name.is_empty() || j.name == j.code {
            j.code
        } else {
            format!("{} {}", j.code, j.name)
        }
    })
}

impl From<pb::MutualAidRequest> for MutualAidView {
    fn from(request: pb::MutualAidRequest) -> Self {
        MutualAidView {
            request_id: request.request_id,
            from: jurisdiction(request.from),
            to: jurisdiction(request.to),
            resource_type: request.resource_type,
            quantity: request.quantity,
            state: request.state,
            partial: request.partial,
            committed_unit_ids: request.committed_unit_ids,
            released_unit_ids: request.released_unit_ids,
            decline_code: request.decline_code,
            decline_reason: request.decline_reason,
            cascade_depth: request.cascade_depth,
            requested_at_unix_ms: request.requested_at_unix_ms,
        }
    }
}

impl MutualAidView {
    /// `committed (partial)`, `declined: reserve`, ...
    fn state_label(&self) -> String {
        if !self.decline_code.is_empty() {
            format!("{}: {}", self.state, self.decline_code)
        } else if self.partial {
            format!("{} (partial)", self.state)
        } else {
            self.state.clone()
        }
    }

    /// The committed units, a released one marked `(back)` while others are still out.
    fn units_label(&self) -> String {
        if self.committed_unit_ids.is_empty() {
            return "-".into();
        }
        let all_back = self.state == "released";
        self.committed_unit_ids
            .iter()
            .map(|id| {
                if !all_back && self.released_unit_ids.contains(id) {
                    format!("{id} (back)")
                } else {
                    id.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) async fn mutual_aid(
    context: &Context,
    args: MutualAidArgs,
    out: Out<'_>,
) -> Result<i32, Error> {
    let target = &context.dispatch;
    let request = pb::ListMutualAidRequest {
        namespace: context.namespace.clone(),
        incident_id: args.incident_id,
    };
    let mut client = DispatchServiceClient::new(target.connect().await?);
    let response = target
        .call(
            "could not list mutual-aid requests",
            client.list_mutual_aid(request),
        )
        .await?;
    let views: Vec<MutualAidView> = response.requests.into_iter().map(Into::into).collect();
    if context.json {
        write_json(out, &views)?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(["REQUEST", "FROM", "TO", "TYPE", "QTY", "STATE", "UNITS"]);
    for view in &views {
        table.row([
            view.request_id.clone(),
            view.from.clone(),
            view.to.clone(),
            view.resource_type.clone(),
            view.quantity.to_string(),
            view.state_label(),
            view.units_label(),
        ]);
    }
    table.write_to(out)?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        state: &str,
        partial: bool,
        decline: &str,
        committed: &[&str],
        back: &[&str],
    ) -> MutualAidView {
        MutualAidView {
            request_id: "INC-1-MA001".into(),
            from: "390121 青溪县".into(),
            to: "390102 东湖区".into(),
            resource_type: "hazmat".into(),
            quantity: 2,
            state: state.into(),
            partial,
            committed_unit_ids: committed.iter().map(|s| s.to_string()).collect(),
            released_unit_ids: back.iter().map(|s| s.to_string()).collect(),
            decline_code: decline.into(),
            decline_reason: String::new(),
            cascade_depth: 1,
            requested_at_unix_ms: 0,
        }
    }

    #[test]
    fn labels_show_partial_commitments_declines_and_units_back_home() {
        let partial = view("committed", true, "", &["DH-HAZ-1"], &[]);
        assert_eq!(partial.state_label(), "committed (partial)");
        assert_eq!(partial.units_label(), "DH-HAZ-1");
        let declined = view("declined", false, "reserve", &[], &[]);
        assert_eq!(declined.state_label(), "declined: reserve");
        assert_eq!(declined.units_label(), "-");
        let half_back = view("committed", false, "", &["A", "B"], &["A"]);
        assert_eq!(half_back.units_label(), "A (back), B");
        let released = view("released", false, "", &["A", "B"], &["A", "B"]);
        assert_eq!(released.units_label(), "A, B");
        let wire = pb::MutualAidRequest {
            from: Some(pb::JurisdictionRef {
                code: "390121".into(),
                name: "青溪县".into(),
                level: 4,
            }),
            ..Default::default()
        };
        assert_eq!(MutualAidView::from(wire).from, "390121 青溪县");
    }
}
