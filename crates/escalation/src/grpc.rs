//! The gRPC face of escalation: `muster.v1.EscalationService`. Wire types stop here.

use muster_proto::convert;
use muster_proto::v1 as pb;
use store::Store;
use tonic::{Request, Response, Status};

use crate::Config;
use crate::driver::{GradingRecord, grading_key};

pub struct EscalationGrpc {
    config: Config,
    store: Store,
}

impl EscalationGrpc {
    pub fn new(config: Config, store: Store) -> EscalationGrpc {
        EscalationGrpc { config, store }
    }
}

#[tonic::async_trait]
impl pb::escalation_service_server::EscalationService for EscalationGrpc {
    async fn list_jurisdictions(
        &self,
        request: Request<pb::ListJurisdictionsRequest>,
    ) -> Result<Response<pb::ListJurisdictionsResponse>, Status> {
        let level = convert::level_from_wire(request.into_inner().level());
        let jurisdictions = self
            .config
            .region
            .tree
            .all()
            .filter(|j| level.is_none_or(|level| j.level == level))
            .map(convert::jurisdiction_to_wire)
            .collect();
        Ok(Response::new(pb::ListJurisdictionsResponse {
            jurisdictions,
        }))
    }

    async fn get_grading(
        &self,
        request: Request<pb::GetGradingRequest>,
    ) -> Result<Response<pb::GetGradingResponse>, Status> {
        let request = request.into_inner();
        let namespace = if request.namespace.is_empty() {
            bus::subjects::LIVE
        } else {
            &request.namespace
        };
        if namespace != self.config.namespace {
            return Err(Status::failed_precondition(format!(
                "this escalation serves namespace {:?}, not {namespace:?}",
                self.config.namespace
            )));
        }
        if request.incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let record: GradingRecord = self
            .store
            .get(&grading_key(namespace, &request.incident_id))
            .map_err(|e| Status::internal(format!("escalation storage error: {e}")))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "incident {:?} has not been graded in namespace {namespace}",
                    request.incident_id
                ))
            })?;
        Ok(Response::new(pb::GetGradingResponse {
            grading: Some(convert::graded_to_wire(&record.graded)),
        }))
    }
}
