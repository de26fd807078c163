//! The subject layout. The namespace comes first so that a drill (`drill.<id>`) can never share a
//! subject with live traffic; the partition (the incident's province) comes next, so that a
//! service instance can consume one partition's subjects:
//! `muster.live.incident.390000.<id>.reported`, `muster.drill.x1.incident.390000.<id>.graded`.

use crate::Error;

/// The live namespace.
pub const LIVE: &str = "live";
/// Longest namespace, incident id or event type accepted in a subject.
pub const TOKEN_BYTES_MAX: usize = 64;

/// Incident event types, the last subject token.
pub const REPORTED: &str = "reported";
pub const GRADED: &str = "graded";
pub const UNITS_ASSIGNED: &str = "units_assigned";
pub const UPDATED: &str = "updated";
pub const CLOSED: &str = "closed";

/// Checks a namespace: `live` or `drill.<id>` with `<id>` of `[a-z0-9_-]`.
pub fn validate_namespace(namespace: &str) -> Result<(), Error> {
    let invalid = |reason| Error::Subject {
        token: namespace.to_string(),
        reason,
    };
    if namespace == LIVE {
        return Ok(());
    }
    let Some(drill_id) = namespace.strip_prefix("drill.") else {
        return Err(invalid("a namespace is `live` or `drill.<id>`"));
    };
    validate_token(drill_id).map_err(|_| invalid("a drill id is 1-64 of a-z, 0-9, `-` and `_`"))?;
    if drill_id.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid("a drill id is 1-64 of a-z, 0-9, `-` and `_`"));
    }
    Ok(())
}

/// Checks one subject token: 1-64 bytes of ASCII letters, digits, `-` and `_`.
pub fn validate_token(token: &str) -> Result<(), Error> {
    let ok = !token.is_empty()
        && token.len() <= TOKEN_BYTES_MAX
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Subject {
            token: token.to_string(),
            reason: "use 1-64 of A-Z, a-z, 0-9, `-` and `_`",
        })
    }
}

/// `muster.<ns>.incident.<partition>.<incident_id>.<event_type>`. The partition is the code of
/// the province where the incident happened, or the region root's for one in no province
/// (`domain::jurisdiction::JurisdictionTree::partition_of`); it never changes for an incident,
/// so every event of an incident lands on the same partition's subjects.
pub fn incident_event(
    namespace: &str,
    partition: &str,
    incident_id: &str,
    event_type: &str,
) -> Result<String, Error> {
    validate_namespace(namespace)?;
    validate_token(partition)?;
    validate_token(incident_id)?;
    validate_token(event_type)?;
    Ok(format!(
        "muster.{namespace}.incident.{partition}.{incident_id}.{event_type}"
    ))
}

/// The filter for one event type of every incident of every partition in a namespace.
pub fn incident_event_filter(namespace: &str, event_type: &str) -> String {
    format!("muster.{namespace}.incident.*.*.{event_type}")
}

/// The filters for one event type of the incidents of `partitions` in a namespace: one per
/// partition, or [`incident_event_filter`] (every partition) when `partitions` is empty.
pub fn incident_event_filters(
    namespace: &str,
    partitions: &[String],
    event_type: &str,
) -> Vec<String> {
    if partitions.is_empty() {
        return vec![incident_event_filter(namespace, event_type)];
    }
    partitions
        .iter()
        .map(|partition| format!("muster.{namespace}.incident.{partition}.*.{event_type}"))
        .collect()
}

/// The filter for every incident event in a namespace (every partition; subjects written before
/// partitions existed, `muster.<ns>.incident.<id>.<type>`, match it too).
pub fn all_incident_events_filter(namespace: &str) -> String {
    format!("muster.{namespace}.incident.>")
}

/// The subject filter that finds an incident's `reported` event in any partition, to learn which
/// partition owns it.
pub fn incident_reported_lookup(namespace: &str, incident_id: &str) -> Result<String, Error> {
    validate_namespace(namespace)?;
    validate_token(incident_id)?;
    Ok(format!(
        "muster.{namespace}.incident.*.{incident_id}.{REPORTED}"
    ))
}

/// An incident subject taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentSubject<'a> {
    pub namespace: &'a str,
    /// `None` for a subject written before partitions existed
    /// (`muster.<ns>.incident.<id>.<type>`).
    pub partition: Option<&'a str>,
    pub incident_id: &'a str,
    pub event_type: &'a str,
}

/// Splits an incident subject into namespace, partition, incident id and event type. Accepts the
/// partitioned layout and the older one without a partition, so stored outbox records and old
/// stream messages still parse.
pub fn parse_incident_event(subject: &str) -> Option<IncidentSubject<'_>> {
    let rest = subject.strip_prefix("muster.")?;
    let (namespace, rest) = rest.split_once(".incident.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let (partition, incident_id, event_type) = match tokens.as_slice() {
        [partition, incident_id, event_type] => (Some(*partition), *incident_id, *event_type),
        [incident_id, event_type] => (None, *incident_id, *event_type),
        _ => return None,
    };
    Some(IncidentSubject {
        namespace,
        partition,
        incident_id,
        event_type,
    })
}

/// Unit subjects' last token: every unit event (`UnitEvent`), and position reports (`UnitPosition`).
pub const UNIT_STATUS: &str = "status";
pub const UNIT_POSITION: &str = "position";
/// Lifecycle commands a unit sends to dispatch (`UnitStatusCommand`): acknowledge, decline, ...
/// Distinct from [`UNIT_STATUS`], which carries dispatch's own `UnitEvent`s.
pub const UNIT_COMMAND: &str = "command";

/// `muster.<ns>.unit.<unit_id>.<kind>`, `kind` being [`UNIT_STATUS`], [`UNIT_POSITION`]
/// or [`UNIT_COMMAND`].
pub fn unit_event(namespace: &str, unit_id: &str, kind: &str) -> Result<String, Error> {
    validate_namespace(namespace)?;
    validate_token(unit_id)?;
    validate_token(kind)?;
    Ok(format!("muster.{namespace}.unit.{unit_id}.{kind}"))
}

/// The filter for one kind of unit subject of every unit in a namespace.
pub fn unit_event_filter(namespace: &str, kind: &str) -> String {
    format!("muster.{namespace}.unit.*.{kind}")
}

/// Splits a unit subject into (namespace, unit id, kind).
pub fn parse_unit_event(subject: &str) -> Option<(&str, &str, &str)> {
    let rest = subject.strip_prefix("muster.")?;
    let (namespace, rest) = rest.split_once(".unit.")?;
    let (unit_id, kind) = rest.split_once('.')?;
    if kind.contains('.') {
        return None;
    }
    Some((namespace, unit_id, kind))
}

/// Notification subjects' last token: a roster member is to be told something
/// (`NotificationRequested`), and what became of it (`NotificationDelivered`).
pub const NOTIFICATION_REQUESTED: &str = "requested";
pub const NOTIFICATION_DELIVERED: &str = "delivered";

/// `muster.<ns>.notification.<partition>.<notification_id>.<kind>`, `kind` being
/// [`NOTIFICATION_REQUESTED`] or [`NOTIFICATION_DELIVERED`]. The namespace in the subject routes
/// drill notifications apart from live ones; the partition is the incident's (see
/// [`incident_event`]), so the escalation instance that owns an incident delivers its
/// notifications.
pub fn notification_event(
    namespace: &str,
    partition: &str,
    notification_id: &str,
    kind: &str,
) -> Result<String, Error> {
    validate_namespace(namespace)?;
    validate_token(partition)?;
    validate_token(notification_id)?;
    validate_token(kind)?;
    Ok(format!(
        "muster.{namespace}.notification.{partition}.{notification_id}.{kind}"
    ))
}

/// The filters for one kind of notification subject of `partitions` in a namespace (every
/// partition when `partitions` is empty).
pub fn notification_event_filters(
    namespace: &str,
    partitions: &[String],
    kind: &str,
) -> Vec<String> {
    if partitions.is_empty() {
        return vec![format!("muster.{namespace}.notification.*.*.{kind}")];
    }
    partitions
        .iter()
        .map(|partition| format!("muster.{namespace}.notification.{partition}.*.{kind}"))
        .collect()
}

/// A notification subject taken apart: (namespace, partition, notification id, kind). The
/// partition is `None` for a subject written before partitions existed.
pub fn parse_notification_event(subject: &str) -> Option<(&str, Option<&str>, &str, &str)> {
    let rest = subject.strip_prefix("muster.")?;
    let (namespace, rest) = rest.split_once(".notification.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    match tokens.as_slice() {
        [partition, id, kind] => Some((namespace, Some(*partition), *id, *kind)),
        [id, kind] => Some((namespace, None, *id, *kind)),
        _ => None,
    }
}

/// The filter for every subject of a namespace: its incident, unit and notification events
/// (`muster rebuild` reads them all, in stream order).
pub fn namespace_filter(namespace: &str) -> String {
    format!("muster.{namespace}.>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_the_namespace_first_and_round_trip() {
        let live = incident_event("live", "390000", "INC-1", REPORTED).unwrap();
        assert_eq!(live, "muster.live.incident.390000.INC-1.reported");
        assert_eq!(
            parse_incident_event(&live),
            Some(IncidentSubject {
                namespace: "live",
                partition: Some("390000"),
                incident_id: "INC-1",
                event_type: "reported"
            })
        );
        let drill = incident_event("drill.quake-7", "000000", "INC-1", GRADED).unwrap();
        let parsed = parse_incident_event(&drill).unwrap();
        assert_eq!(
            (parsed.namespace, parsed.partition, parsed.incident_id),
            ("drill.quake-7", Some("000000"), "INC-1")
        );
        // The layout before partitions still parses (stored outbox records, old stream data).
        let legacy = parse_incident_event("muster.live.incident.INC-1.graded").unwrap();
        assert_eq!(
            (legacy.partition, legacy.incident_id, legacy.event_type),
            (None, "INC-1", "graded")
        );
        assert_eq!(parse_incident_event("muster.live.incident.a.b.c.d"), None);
        assert!(incident_event("live", "39.0000", "INC-1", REPORTED).is_err());
    }

    #[test]
    fn partition_filters_match_only_their_partitions() {
        assert_eq!(
            incident_event_filters("live", &[], REPORTED),
            ["muster.live.incident.*.*.reported"]
        );
        assert_eq!(
            incident_event_filters("drill.x1", &["390000".into(), "410000".into()], UPDATED),
            [
                "muster.drill.x1.incident.390000.*.updated",
                "muster.drill.x1.incident.410000.*.updated"
            ]
        );
        assert_eq!(
            notification_event_filters("live", &["390000".into()], NOTIFICATION_REQUESTED),
            ["muster.live.notification.390000.*.requested"]
        );
        assert_eq!(
            incident_reported_lookup("live", "INC-7").unwrap(),
            "muster.live.incident.*.INC-7.reported"
        );
    }

    #[test]
    fn bad_namespaces_and_tokens_are_refused() {
        for namespace in [
            "",
            "LIVE",
            "drill",
            "drill.",
            "drill.a.b",
            "drill.A",
            "other",
            "live.x",
        ] {
            assert!(
                validate_namespace(namespace).is_err(),
                "{namespace:?} accepted"
            );
        }
        for token in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(validate_token(token).is_err(), "{token:?} accepted");
        }
    }

    #[test]
    fn notification_subjects_keep_the_namespace_and_fall_in_the_event_stream() {
        let live = notification_event("live", "390000", "NTF-1", NOTIFICATION_REQUESTED).unwrap();
        assert_eq!(live, "muster.live.notification.390000.NTF-1.requested");
        let drill =
            notification_event("drill.x1", "390000", "NTF-1", NOTIFICATION_DELIVERED).unwrap();
        assert_eq!(
            parse_notification_event(&drill),
            Some(("drill.x1", Some("390000"), "NTF-1", "delivered"))
        );
        // MUSTER_EVENTS captures `muster.live.>` and `muster.drill.>`.
        assert!(live.starts_with("muster.live."));
        assert!(drill.starts_with("muster.drill."));
        assert_eq!(parse_incident_event(&live), None);
        assert!(notification_event("live", "390000", "a.b", NOTIFICATION_REQUESTED).is_err());
    }
}
