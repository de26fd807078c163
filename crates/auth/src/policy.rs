//! The per-method policy: which permission each gRPC method needs, and whether a call is a
//! command (changes state, so every call is audited) or a read (audited only when refused).
//!
//! The table is the single place a new RPC gets its rule; a method missing from it is refused
//! for everyone, and a test checks that every method in the proto descriptor set has a rule.

/// What a role may do; methods need exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// See incidents, deadlines, units, assignments, notifications.
    Read,
    /// Report incidents, update their facts, file statutory and skip-level reports.
    Report,
    /// Acknowledge an incident.
    Acknowledge,
    /// Escalate, take command, confirm a downgrade.
    Command,
    /// Recommend and assign units, answer for them, release them.
    Dispatch,
    /// Register, change and retire units.
    ManageUnits,
    /// Read and verify the audit trail.
    Audit,
    /// Post alerts to the feed endpoints.
    Feed,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::Read,
        Permission::Report,
        Permission::Acknowledge,
        Permission::Command,
        Permission::Dispatch,
        Permission::ManageUnits,
        Permission::Audit,
        Permission::Feed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Report => "report",
            Permission::Acknowledge => "acknowledge",
            Permission::Command => "command",
            Permission::Dispatch => "dispatch",
            Permission::ManageUnits => "manage units",
            Permission::Audit => "audit",
            Permission::Feed => "feed",
        }
    }
}

/// A method's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub permission: Permission,
    /// Changes state: every call is written to the audit trail, not only refused ones.
    pub command: bool,
}

const fn read() -> Rule {
    Rule {
        permission: Permission::Read,
        command: false,
    }
}

const fn command(permission: Permission) -> Rule {
    Rule {
        permission,
        command: true,
    }
}

/// Every gRPC method of `muster.v1` with its rule, by full path.
pub const METHODS: &[(&str, Rule)] = &[
    // Intake
    (
        "/muster.v1.IntakeService/ReportIncident",
        command(Permission::Report),
    ),
    (
        "/muster.v1.IntakeService/UpdateIncident",
        command(Permission::Report),
    ),
    ("/muster.v1.IntakeService/GetIncident", read()),
    ("/muster.v1.IntakeService/ListIncidents", read()),
    ("/muster.v1.IntakeService/WatchIncidents", read()),
    ("/muster.v1.IntakeService/ListIncidentEvents", read()),
    (
        "/muster.v1.IntakeService/CloseIncident",
        command(Permission::Command),
    ),
    (
        "/muster.v1.IntakeService/SetLegalHold",
        command(Permission::Command),
    ),
    // Escalation
    ("/muster.v1.EscalationService/ListJurisdictions", read()),
    ("/muster.v1.EscalationService/GetGrading", read()),
    (
        "/muster.v1.EscalationService/Acknowledge",
        command(Permission::Acknowledge),
    ),
    (
        "/muster.v1.EscalationService/Escalate",
        command(Permission::Command),
    ),
    ("/muster.v1.EscalationService/ListDeadlines", read()),
    (
        "/muster.v1.EscalationService/SubmitReport",
        command(Permission::Report),
    ),
    (
        "/muster.v1.EscalationService/ConfirmDowngrade",
        command(Permission::Command),
    ),
    (
        "/muster.v1.EscalationService/TakeCommand",
        command(Permission::Command),
    ),
    ("/muster.v1.EscalationService/GetCommand", read()),
    (
        "/muster.v1.EscalationService/SkipLevelReport",
        command(Permission::Report),
    ),
    ("/muster.v1.EscalationService/ListNotifications", read()),
    // Dispatch
    ("/muster.v1.DispatchService/ListUnits", read()),
    ("/muster.v1.DispatchService/GetAssignments", read()),
    (
        "/muster.v1.DispatchService/RegisterUnit",
        command(Permission::ManageUnits),
    ),
    (
        "/muster.v1.DispatchService/UpdateUnit",
        command(Permission::ManageUnits),
    ),
    (
        "/muster.v1.DispatchService/RetireUnit",
        command(Permission::ManageUnits),
    ),
    (
        "/muster.v1.DispatchService/UpdateUnitStatus",
        command(Permission::Dispatch),
    ),
    (
        "/muster.v1.DispatchService/ReportPosition",
        command(Permission::Dispatch),
    ),
    // A dry run, but it names units for an incident: dispatchers and commanders only.
    (
        "/muster.v1.DispatchService/Recommend",
        Rule {
            permission: Permission::Dispatch,
            command: false,
        },
    ),
    // Replays past recommendations: units and positions, like a dry run.
    (
        "/muster.v1.DispatchService/ReplayRecommendations",
        Rule {
            permission: Permission::Dispatch,
            command: false,
        },
    ),
    (
        "/muster.v1.DispatchService/Assign",
        command(Permission::Dispatch),
    ),
    (
        "/muster.v1.DispatchService/AcknowledgeAssignment",
        command(Permission::Dispatch),
    ),
    (
        "/muster.v1.DispatchService/DeclineAssignment",
        command(Permission::Dispatch),
    ),
    (
        "/muster.v1.DispatchService/ReleaseUnit",
        command(Permission::Dispatch),
    ),
    ("/muster.v1.DispatchService/ListMutualAid", read()),
    // Audit (every service)
    (
        "/muster.v1.AuditService/ListAudit",
        Rule {
            permission: Permission::Audit,
            command: false,
        },
    ),
    (
        "/muster.v1.AuditService/VerifyAudit",
        Rule {
            permission: Permission::Audit,
            command: false,
        },
    ),
];

/// Paths served without a token: health (load balancers, readiness probes) and reflection
/// (which only describes the public API).
pub fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// The rule for a full method path; `None` for a method the table does not know (refused).
pub fn rule_for(path: &str) -> Option<Rule> {
    METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, rule)| *rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_method_in_the_public_api_has_exactly_one_rule() {
        let set =
            prost_types::FileDescriptorSet::decode(muster_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(methods.len() >= 30, "{methods:?}");
        for method in &methods {
            assert!(rule_for(method).is_some(), "no policy rule for {method}");
        }
        for (method, _) in METHODS {
            assert!(methods.contains(&method.to_string()), "stale rule {method}");
            assert_eq!(
                METHODS.iter().filter(|(m, _)| m == method).count(),
                1,
                "{method} listed twice"
            );
        }
    }

    #[test]
    fn health_and_reflection_are_public_nothing_else() {
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_public("/muster.v1.IntakeService/ReportIncident"));
        assert!(rule_for("/muster.v1.IntakeService/DropTables").is_none());
    }
}
