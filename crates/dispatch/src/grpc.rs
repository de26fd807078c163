//! The gRPC face of dispatch: `muster.v1.DispatchService`. Wire types stop here.

use std::collections::HashMap;

use muster_proto::convert;
use muster_proto::v1 as pb;
use store::Store;
use tonic::{Request, Response, Status};

use crate::Config;
use crate::driver::{AssignmentRecord, Booking, assignment_key, booking_key};

pub struct DispatchGrpc {
    config: Config,
    store: Store,
}

impl DispatchGrpc {
    pub fn new(config: Config, store: Store) -> DispatchGrpc {
        DispatchGrpc { config, store }
    }

    fn namespace<'a>(&'a self, requested: &'a str) -> Result<&'a str, Status> {
        let namespace = if requested.is_empty() {
            bus::subjects::LIVE
        } else {
            requested
        };
        if namespace != self.config.namespace {
            return Err(Status::failed_precondition(format!(
                "this dispatch serves namespace {:?}, not {namespace:?}",
                self.config.namespace
            )));
        }
        Ok(namespace)
    }
}

fn storage(error: store::Error) -> Status {
    Status::internal(format!("dispatch storage error: {error}"))
}

#[tonic::async_trait]
impl pb::dispatch_service_server::DispatchService for DispatchGrpc {
    async fn list_units(
        &self,
        request: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        let prefix = booking_key(namespace, "");
        let bookings: HashMap<String, Booking> = self
            .store
            .scan_prefix::<Booking>(&prefix)
            .map_err(storage)?
            .into_iter()
            .map(|(key, booking)| (key[prefix.len()..].to_string(), booking))
            .collect();
        let units = self
            .config
            .region
            .units
            .iter()
            .filter(|unit| request.unit_type.is_empty() || unit.unit_type == request.unit_type)
            .map(|unit| {
                let booking = bookings.get(&unit.id);
                pb::Unit {
                    id: unit.id.clone(),
                    call_sign: unit.call_sign.clone(),
                    unit_type: unit.unit_type.clone(),
                    home_township_code: unit.home_township.clone(),
                    jurisdiction_code: unit.jurisdiction.clone(),
                    position: Some(convert::point_to_wire(unit.position)),
                    status: if booking.is_some() {
                        pb::UnitStatus::Dispatched
                    } else {
                        pb::UnitStatus::Available
                    } as i32,
                    incident_id: booking.map(|b| b.incident_id.clone()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListUnitsResponse { units }))
    }

    async fn get_assignments(
        &self,
        request: Request<pb::GetAssignmentsRequest>,
    ) -> Result<Response<pb::GetAssignmentsResponse>, Status> {
        let request = request.into_inner();
        let namespace = self.namespace(&request.namespace)?;
        if request.incident_id.is_empty() {
            return Err(Status::invalid_argument("incident_id is required"));
        }
        let record: AssignmentRecord = self
            .store
            .get(&assignment_key(namespace, &request.incident_id))
            .map_err(storage)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "dispatch has assigned nothing to {:?} in namespace {namespace}",
                    request.incident_id
                ))
            })?;
        let units = domain::event::UnitsAssigned {
            plan_id: record.plan_id,
            assignments: record.assignments,
            shortfalls: record.shortfalls,
        };
        Ok(Response::new(pb::GetAssignmentsResponse {
            units: Some(convert::units_to_wire(&units)),
        }))
    }
}
