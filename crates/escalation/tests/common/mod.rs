//! What the escalation tests share: the incident they report.

use domain::event::IncidentReport;
use domain::geo::GeoPoint;
use domain::grade::Facts;

/// A hazardous-chemicals accident in the sample region's township 390202400 with `deaths`
/// dead (one death grades it IV).
pub fn chemical_leak(deaths: u32, summary: &str) -> IncidentReport {
    IncidentReport {
        kind: "accident.hazardous_chemicals".into(),
        class: domain::class::IncidentClass::Accident,
        township_code: "390202400".into(),
        other_township_codes: vec![],
        location: GeoPoint {
            lat: 30.0,
            lon: 120.0,
        },
        location_reported: false,
        facts: Facts {
            deaths: Some(deaths),
            ..Facts::default()
        },
        summary: summary.into(),
        reported_by: "officer".into(),
        warning: None,
    }
}
