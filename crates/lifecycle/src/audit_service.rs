//! `muster.v1.AuditService` over a service's own audit trail (see `store::audit`).

use std::sync::Arc;

use domain::jurisdiction::JurisdictionTree;
use muster_proto::v1 as pb;
use store::Store;
use store::audit::{AuditEntry, AuditFilter};
use tonic::{Request, Response, Status};

use crate::access;

/// The most entries one `ListAudit` answer carries.
pub const LIST_LIMIT_MAX: u32 = 1000;

pub struct AuditServer {
    service: &'static str,
    store: Store,
    tree: Arc<JurisdictionTree>,
}

impl AuditServer {
    pub fn new(service: &'static str, store: Store, tree: Arc<JurisdictionTree>) -> AuditServer {
        AuditServer {
            service,
            store,
            tree,
        }
    }

    pub fn into_service(self) -> pb::audit_service_server::AuditServiceServer<AuditServer> {
        pb::audit_service_server::AuditServiceServer::new(self)
    }
}

fn to_proto(entry: AuditEntry) -> pb::AuditEntry {
    let fields = entry.fields;
    pb::AuditEntry {
        seq: entry.seq,
        at_unix_ms: fields.at_unix_ms,
        service: fields.service,
        officer: fields.officer,
        role: fields.role,
        jurisdiction_code: fields.jurisdiction_code,
        token_id: fields.token_id,
        peer: fields.peer,
        action: fields.action,
        incident_id: fields.incident_id,
        unit_id: fields.unit_id,
        result: fields.result,
        detail: fields.detail,
        namespace: fields.namespace,
        prev_hash: entry.prev_hash,
        hash: entry.hash,
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditServer {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let principal = access::principal(&request)?.clone();
        let body = request.into_inner();
        if body.limit > LIST_LIMIT_MAX {
            return Err(Status::invalid_argument(format!(
                "limit: at most {LIST_LIMIT_MAX} entries per call, got {}",
                body.limit
            )));
        }
        let limit = if body.limit == 0 { 100 } else { body.limit } as usize;
        let non_empty = |text: String| (!text.trim().is_empty()).then(|| text.trim().to_string());
        let filter = AuditFilter {
            incident_id: non_empty(body.incident_id),
            officer: non_empty(body.officer),
            since_unix_ms: body.since_unix_ms,
            refused_only: body.refused_only,
            limit,
        };
        let store = self.store.clone();
        let tree = self.tree.clone();
        // A scoped reader sees what was done by tokens at or below its own jurisdiction, and its
        // own entries; a national token sees everything.
        let (entries, truncated) = tokio::task::spawn_blocking(move || {
            let mut wider = filter.clone();
            wider.limit = usize::MAX;
            let (entries, _) = store.list_audit(&wider)?;
            let visible: Vec<AuditEntry> = entries
                .into_iter()
                .filter(|entry| {
                    entry.fields.officer == principal.officer()
                        && entry.fields.jurisdiction_code == principal.jurisdiction()
                        || (!entry.fields.jurisdiction_code.is_empty()
                            && principal.covers(&tree, &entry.fields.jurisdiction_code))
                        || principal.jurisdiction() == tree.root().code
                })
                .collect();
            let skip = visible.len().saturating_sub(filter.limit);
            Ok::<_, store::Error>((visible.into_iter().skip(skip).collect::<Vec<_>>(), skip > 0))
        })
        .await
        .map_err(|error| Status::internal(format!("audit read failed: {error}")))?
        .map_err(|error| Status::internal(format!("audit read failed: {error}")))?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(to_proto).collect(),
            truncated,
        }))
    }

    async fn verify_audit(
        &self,
        _request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let store = self.store.clone();
        let check = tokio::task::spawn_blocking(move || store.verify_audit())
            .await
            .map_err(|error| Status::internal(format!("audit verification failed: {error}")))?
            .map_err(|error| Status::internal(format!("audit verification failed: {error}")))?;
        let (first_bad_seq, problem) = check.first_bad.unwrap_or((0, String::new()));
        Ok(Response::new(pb::VerifyAuditResponse {
            service: self.service.to_string(),
            ok: first_bad_seq == 0 && problem.is_empty(),
            entries: check.entries,
            head_seq: check.head_seq,
            head_hash: check.head_hash,
            first_bad_seq,
            problem,
        }))
    }
}
