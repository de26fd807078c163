//! The subject layout. The namespace comes first so that a drill (`drill.<id>`) can never share a
//! subject with live traffic: `muster.live.incident.<id>.reported`, `muster.drill.x1.incident.<id>.graded`.

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

/// `muster.<ns>.incident.<incident_id>.<event_type>`.
pub fn incident_event(
    namespace: &str,
    incident_id: &str,
    event_type: &str,
) -> Result<String, Error> {
    validate_namespace(namespace)?;
    validate_token(incident_id)?;
    validate_token(event_type)?;
    Ok(format!(
        "muster.{namespace}.incident.{incident_id}.{event_type}"
    ))
}

/// The filter for one event type of every incident in a namespace.
pub fn incident_event_filter(namespace: &str, event_type: &str) -> String {
    format!("muster.{namespace}.incident.*.{event_type}")
}

/// The filter for every incident event in a namespace.
pub fn all_incident_events_filter(namespace: &str) -> String {
    format!("muster.{namespace}.incident.>")
}

/// Splits an incident subject into (namespace, incident id, event type).
pub fn parse_incident_event(subject: &str) -> Option<(&str, &str, &str)> {
    let rest = subject.strip_prefix("muster.")?;
    let (namespace, rest) = rest.split_once(".incident.")?;
    let (incident_id, event_type) = rest.split_once('.')?;
    if event_type.contains('.') {
        return None;
    }
    Some((namespace, incident_id, event_type))
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

/// `muster.<ns>.notification.<notification_id>.<kind>`, `kind` being
/// [`NOTIFICATION_REQUESTED`] or [`NOTIFICATION_DELIVERED`]. The namespace in the subject routes
/// drill notifications apart from live ones.
pub fn notification_event(
    namespace: &str,
    notification_id: &str,
    kind: &str,
) -> Result<String, Error> {
    validate_namespace(namespace)?;
    validate_token(notification_id)?;
    validate_token(kind)?;
    Ok(format!(
        "muster.{namespace}.notification.{notification_id}.{kind}"
    ))
}

/// The filter for one kind of notification subject of every notification in a namespace.
pub fn notification_event_filter(namespace: &str, kind: &str) -> String {
    format!("muster.{namespace}.notification.*.{kind}")
}

/// Splits a notification subject into (namespace, notification id, kind).
pub fn parse_notification_event(subject: &str) -> Option<(&str, &str, &str)> {
    let rest = subject.strip_prefix("muster.")?;
    let (namespace, rest) = rest.split_once(".notification.")?;
    let (notification_id, kind) = rest.split_once('.')?;
    if kind.contains('.') {
        return None;
    }
    Some((namespace, notification_id, kind))
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
        let live = incident_event("live", "INC-1", REPORTED).unwrap();
        assert_eq!(live, "muster.live.incident.INC-1.reported");
        assert_eq!(
            parse_incident_event(&live),
            Some(("live", "INC-1", "reported"))
        );
        let drill = incident_event("drill.quake-7", "INC-1", GRADED).unwrap();
        assert_eq!(
            parse_incident_event(&drill),
            Some(("drill.quake-7", "INC-1", "graded"))
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
        let live = notification_event("live", "NTF-1", NOTIFICATION_REQUESTED).unwrap();
        assert_eq!(live, "muster.live.notification.NTF-1.requested");
        let drill = notification_event("drill.x1", "NTF-1", NOTIFICATION_DELIVERED).unwrap();
        assert_eq!(
            parse_notification_event(&drill),
            Some(("drill.x1", "NTF-1", "delivered"))
        );
        // MUSTER_EVENTS captures `muster.live.>` and `muster.drill.>`.
        assert!(live.starts_with("muster.live."));
        assert!(drill.starts_with("muster.drill."));
        assert_eq!(parse_incident_event(&live), None);
        assert!(notification_event("live", "a.b", NOTIFICATION_REQUESTED).is_err());
    }
}
