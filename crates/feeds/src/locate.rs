//! Where an alert happened, in the region's terms: the township (乡镇/街道) its [`Area`] points at.
//!
//! Incidents are located by township, because grading (population density), leading (属地管理)
//! and dispatch all hang off the township. [`locate`] tries, in order:
//!
//! 1. **Geocode**: a geocode whose `valueName` is one of [`LocateOptions::geocode_names`] and whose
//!    value is a jurisdiction code of the region. A township code is taken as is; a county, city or
//!    province code stands for its township nearest to the jurisdiction's centroid. Twelve-digit
//!    statistical codes (`390202400000`) are accepted by dropping the trailing zero groups.
//! 2. **Point in polygon**: the townships whose centroid lies inside one of the polygons or circles.
//!    The one nearest to the area's centre (the first polygon's [`ring_center`], else the first
//!    circle's centre) is the township; the others are listed, nearest first.
//! 3. **Nearest centroid**: the township whose centroid is nearest to the area's representative point
//!    (the first point, else the first polygon's centre, else the first circle's centre), if it lies
//!    within [`LocateOptions::max_km`] (plus the radius when the point is a circle's centre).
//! 4. **Unknown**: nothing above applies; the reason says why.
//!
//! The region has a handful of townships, so every step is a linear scan; nothing is allocated per
//! township except the result.

use domain::geo::{GeoPoint, great_circle_km, point_in_polygon, ring_center};
use domain::jurisdiction::{Jurisdiction, JurisdictionTree, Level};
use domain::region::Region;
use domain::source::grouped;
use serde::{Deserialize, Serialize};

use crate::Area;

/// How [`locate`] found the township.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocateMethod {
    /// A geocode named a jurisdiction of the region.
    Geocode,
    /// A township centroid lies inside a polygon or circle of the alert.
    PointInPolygon,
    /// The township centroid nearest to the alert's point, within the distance limit.
    NearestCentroid,
    /// No township could be determined.
    Unknown,
}

impl LocateMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            LocateMethod::Geocode => "geocode",
            LocateMethod::PointInPolygon => "point_in_polygon",
            LocateMethod::NearestCentroid => "nearest_centroid",
            LocateMethod::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for LocateMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tuning of [`locate`]; loaded from the `[locate]` table of the mapping file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocateOptions {
    /// Farthest a point may lie from the nearest township centroid and still be located there (km).
    pub max_km: f64,
    /// Geocode `valueName`s whose values are GB/T 2260 jurisdiction codes (compared ignoring ASCII
    /// case).
    pub geocode_names: Vec<String>,
    /// Most townships listed in [`Located::other_township_codes`].
    pub other_townships_max: usize,
}

impl Default for LocateOptions {
    fn default() -> LocateOptions {
        LocateOptions {
            max_km: 30.0,
            geocode_names: vec!["GB2260".into(), "ADCODE".into(), "admin_code".into()],
            other_townships_max: 20,
        }
    }
}

/// The outcome of [`locate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Located {
    /// The township the alert is placed in; `None` when [`LocateMethod::Unknown`].
    pub township_code: Option<String>,
    /// Further townships inside the alert's polygons or circles, nearest to the centre first.
    pub other_township_codes: Vec<String>,
    /// The position to record for the incident: the alert's point, the area's centre, or (for a
    /// geocode without a point) the township's centroid.
    pub point: Option<GeoPoint>,
    pub method: LocateMethod,
    /// One line explaining the decision, e.g. "point 29.98,121.55 is 2.1 km from 港城街道
    /// (390202001) centroid".
    pub reason: String,
}

/// Maps `area` onto a township of `region`; see the module documentation for the order of methods.
pub fn locate(region: &Region, area: &Area, options: &LocateOptions) -> Located {
    let tree = &region.tree;
    let mut geocode_note = None;
    match by_geocode(tree, area, options) {
        GeocodeOutcome::Found(located) => return located,
        GeocodeOutcome::NotInRegion(note) => geocode_note = Some(note),
        GeocodeOutcome::None => {}
    }
    if let Some(located) = by_shapes(tree, area, options) {
        return located;
    }
    let mut located = by_nearest(tree, area, options);
    if let Some(note) = geocode_note {
        located.reason = format!("{note}; {}", located.reason);
    }
    located
}

enum GeocodeOutcome {
    Found(Located),
    /// Geocodes of a known name were present, but none names a jurisdiction of the region.
    NotInRegion(String),
    None,
}

fn townships(tree: &JurisdictionTree) -> impl Iterator<Item = (&Jurisdiction, GeoPoint)> {
    tree.all()
        .filter(|item| item.level == Level::Township)
        .filter_map(|item| item.centroid.map(|centroid| (item, centroid)))
}

/// The first valid point of the area, for the record.
fn first_point(area: &Area) -> Option<GeoPoint> {
    area.points
        .iter()
        .copied()
        .find(|point| point.range_problem().is_none())
}

/// The centre of the first polygon, else of the first circle; with a label for reasons and the
/// radius to add to the distance limit.
fn shape_center(area: &Area) -> Option<(GeoPoint, &'static str, f64)> {
    let polygon = area
        .polygons
        .iter()
        .filter_map(|ring| ring_center(ring))
        .find(|center| center.range_problem().is_none())
        .map(|center| (center, "polygon centre", 0.0));
    polygon.or_else(|| {
        area.circles
            .iter()
            .find(|circle| circle.center.range_problem().is_none() && circle.radius_km.is_finite())
            .map(|circle| (circle.center, "circle centre", circle.radius_km.max(0.0)))
    })
}

/// Whether `item` is `ancestor_code` or lies below it.
fn is_within(tree: &JurisdictionTree, item: &Jurisdiction, ancestor_code: &str) -> bool {
    let mut current = Some(item);
    // The tree is validated (no cycles), and levels strictly descend, so this ends quickly.
    while let Some(node) = current {
        if node.code == ancestor_code {
            return true;
        }
        current = node.parent.as_deref().and_then(|parent| tree.get(parent));
    }
    false
}

/// The jurisdiction a geocode value names: exact, or a 12-digit statistical code whose trailing
/// zero groups are dropped (`390202400000` → `390202400`, `390202000000` → `390202`).
fn jurisdiction_for_code<'t>(tree: &'t JurisdictionTree, value: &str) -> Option<&'t Jurisdiction> {
    let value = value.trim();
    if let Some(found) = tree.get(value) {
        return Some(found);
    }
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        let nine = &value[..9];
        if value[9..] == *"000" {
            if let Some(found) = tree.get(nine) {
                return Some(found);
            }
            if nine[6..] == *"000" {
                return tree.get(&value[..6]);
            }
        }
    }
    None
}

fn by_geocode(tree: &JurisdictionTree, area: &Area, options: &LocateOptions) -> GeocodeOutcome {
    let mut unknown: Option<(&str, &str)> = None;
    for (name, value) in &area.geocodes {
        let wanted = options
            .geocode_names
            .iter()
            .any(|known| known.trim().eq_ignore_ascii_case(name.trim()));
        if !wanted {
            continue;
        }
        let Some(jurisdiction) = jurisdiction_for_code(tree, value) else {
            unknown.get_or_insert((name.as_str(), value.as_str()));
            continue;
        };
        let alert_point = first_point(area);
        if jurisdiction.level == Level::Township {
            let Some(centroid) = jurisdiction.centroid else {
                continue;
            };
            return GeocodeOutcome::Found(Located {
                township_code: Some(jurisdiction.code.clone()),
                other_township_codes: Vec::new(),
                point: Some(alert_point.unwrap_or(centroid)),
                method: LocateMethod::Geocode,
                reason: format!(
                    "geocode {}={} is township {} ({})",
                    name.trim(),
                    value.trim(),
                    jurisdiction.name,
                    jurisdiction.code
                ),
            });
        }
        // A county, city or province: its township nearest to its centroid (or, without one, to
        // the alert's point; failing both, the first by code).
        let anchor = jurisdiction.centroid.or(alert_point);
        let mut best: Option<(&Jurisdiction, GeoPoint, f64)> = None;
        for (township, centroid) in townships(tree) {
            if !is_within(tree, township, &jurisdiction.code) {
                continue;
            }
            let distance = anchor.map_or(0.0, |anchor| great_circle_km(anchor, centroid));
            if best.is_none_or(|(_, _, best_distance)| distance < best_distance) {
                best = Some((township, centroid, distance));
            }
        }
        let Some((township, centroid, distance)) = best else {
            unknown.get_or_insert((name.as_str(), value.as_str()));
            continue;
        };
        let how = match (jurisdiction.centroid, alert_point) {
            (Some(_), _) => format!("nearest its centroid ({})", km(distance)),
            (None, Some(_)) => format!("nearest the alert's point ({})", km(distance)),
            (None, None) => "the first by code (it has no centroid)".to_string(),
        };
        return GeocodeOutcome::Found(Located {
            township_code: Some(township.code.clone()),
            other_township_codes: Vec::new(),
            point: Some(alert_point.unwrap_or(centroid)),
            method: LocateMethod::Geocode,
            reason: format!(
                "geocode {}={} is {} {} ({}); its township {} ({}) is {how}",
                name.trim(),
                value.trim(),
                jurisdiction.level.as_str(),
                jurisdiction.name,
                jurisdiction.code,
                township.name,
                township.code,
            ),
        });
    }
    match unknown {
        Some((name, value)) => GeocodeOutcome::NotInRegion(format!(
            "geocode {}={} names no jurisdiction of the region",
            name.trim(),
            value.trim()
        )),
        None => GeocodeOutcome::None,
    }
}

fn by_shapes(tree: &JurisdictionTree, area: &Area, options: &LocateOptions) -> Option<Located> {
    if area.polygons.is_empty() && area.circles.is_empty() {
        return None;
    }
    let (center, center_label, _) = shape_center(area)?;
    let mut inside: Vec<(f64, &Jurisdiction)> = Vec::new();
    for (township, centroid) in townships(tree) {
        let in_polygon = area
            .polygons
            .iter()
            .any(|ring| point_in_polygon(centroid, ring));
        let in_circle = || {
            area.circles
                .iter()
                .any(|circle| great_circle_km(centroid, circle.center) <= circle.radius_km)
        };
        if in_polygon || in_circle() {
            inside.push((great_circle_km(center, centroid), township));
        }
    }
    if inside.is_empty() {
        return None;
    }
    inside.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.code.cmp(&b.1.code)));
    let (distance, primary) = inside[0];
    let shapes = match (area.polygons.is_empty(), area.circles.is_empty()) {
        (false, true) => "the polygon",
        (true, false) => "the circle",
        _ => "the area",
    };
    let count = inside.len();
    let others: Vec<String> = inside
        .iter()
        .skip(1)
        .take(options.other_townships_max)
        .map(|(_, township)| township.code.clone())
        .collect();
    let listed = if count - 1 > others.len() {
        format!(" ({} others listed)", others.len())
    } else {
        String::new()
    };
    let reason = if count == 1 {
        format!(
            "{shapes} contains the centroid of {} ({}), {} from its {center_label} {}",
            primary.name,
            primary.code,
            km(distance),
            coordinates(center)
        )
    } else {
        format!(
            "{shapes} contains {count} township centroids{listed}; {} ({}) is nearest its \
             {center_label} {} ({})",
            primary.name,
            primary.code,
            coordinates(center),
            km(distance)
        )
    };
    Some(Located {
        township_code: Some(primary.code.clone()),
        other_township_codes: others,
        point: Some(center),
        method: LocateMethod::PointInPolygon,
        reason,
    })
}

fn by_nearest(tree: &JurisdictionTree, area: &Area, options: &LocateOptions) -> Located {
    let representative = first_point(area)
        .map(|point| (point, "point", 0.0))
        .or_else(|| shape_center(area));
    let Some((point, label, radius_km)) = representative else {
        let reason = if area.description.trim().is_empty() {
            "the alert names no location".to_string()
        } else {
            format!(
                "the alert names no location it can be placed by (only the description {:?})",
                shorten(area.description.trim(), 60)
            )
        };
        return unknown(None, reason);
    };
    let mut nearest: Option<(&Jurisdiction, f64)> = None;
    for (township, centroid) in townships(tree) {
        let distance = great_circle_km(point, centroid);
        if nearest.is_none_or(|(_, best)| distance < best) {
            nearest = Some((township, distance));
        }
    }
    let Some((township, distance)) = nearest else {
        return unknown(Some(point), "the region has no townships".to_string());
    };
    let limit = options.max_km + radius_km;
    let limit_text = if radius_km > 0.0 {
        format!("{} + the circle's {}", km(options.max_km), km(radius_km))
    } else {
        km(options.max_km)
    };
    if distance <= limit {
        Located {
            township_code: Some(township.code.clone()),
            other_township_codes: Vec::new(),
            point: Some(point),
            method: LocateMethod::NearestCentroid,
            reason: format!(
                "{label} {} is {} from {} ({}) centroid",
                coordinates(point),
                km(distance),
                township.name,
                township.code
            ),
        }
    } else {
        unknown(
            Some(point),
            format!(
                "{label} {}: nearest township {} is {} away, beyond {limit_text}",
                coordinates(point),
                township.code,
                km(distance)
            ),
        )
    }
}

fn unknown(point: Option<GeoPoint>, reason: String) -> Located {
    Located {
        township_code: None,
        other_township_codes: Vec::new(),
        point,
        method: LocateMethod::Unknown,
        reason,
    }
}

/// "2.1 km" below 100 km, "8,123 km" above.
fn km(distance: f64) -> String {
    if !distance.is_finite() {
        return format!("{distance} km");
    }
    if distance < 100.0 {
        let text = format!("{distance:.1}");
        let text = text.strip_suffix(".0").unwrap_or(&text);
        format!("{text} km")
    } else {
        format!("{} km", grouped(distance.round() as u64))
    }
}

/// "29.98,121.55": up to four decimals, trailing zeros dropped.
fn coordinates(point: GeoPoint) -> String {
    fn trim(value: f64) -> String {
        let text = format!("{value:.4}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text == "-0" {
            "0".to_string()
        } else {
            text.to_string()
        }
    }
    format!("{},{}", trim(point.lat), trim(point.lon))
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Circle;

    fn region() -> Region {
        Region::embedded_default()
    }

    fn options() -> LocateOptions {
        LocateOptions::default()
    }

    fn square(lat: f64, lon: f64, half: f64) -> Vec<GeoPoint> {
        vec![
            GeoPoint::new(lat - half, lon - half),
            GeoPoint::new(lat - half, lon + half),
            GeoPoint::new(lat + half, lon + half),
            GeoPoint::new(lat + half, lon - half),
            GeoPoint::new(lat - half, lon - half),
        ]
    }

    #[test]
    fn method_names() {
        assert_eq!(LocateMethod::Geocode.as_str(), "geocode");
        assert_eq!(LocateMethod::PointInPolygon.as_str(), "point_in_polygon");
        assert_eq!(LocateMethod::NearestCentroid.as_str(), "nearest_centroid");
        assert_eq!(LocateMethod::Unknown.as_str(), "unknown");
        assert_eq!(
            serde_json::to_string(&LocateMethod::PointInPolygon).unwrap(),
            "\"point_in_polygon\""
        );
    }

    #[test]
    fn geocode_of_a_township_is_that_township() {
        let area = Area {
            geocodes: vec![
                ("SAME".into(), "006109".into()),
                ("gb2260".into(), " 390202400 ".into()),
            ],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::Geocode);
        assert_eq!(located.township_code.as_deref(), Some("390202400"));
        assert_eq!(located.point, Some(GeoPoint::new(30.05, 121.75)));
        assert!(located.reason.contains("GB2260") || located.reason.contains("gb2260"));
        assert!(located.reason.contains("390202400"), "{}", located.reason);
    }

    #[test]
    fn geocode_of_a_county_is_its_township_nearest_its_centroid() {
        // 港北区 centroid 30.01,121.64; 滨海街道 30.03,121.66 is nearest.
        let area = Area {
            points: vec![GeoPoint::new(30.0, 121.7)],
            geocodes: vec![("ADCODE".into(), "390202".into())],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::Geocode);
        assert_eq!(located.township_code.as_deref(), Some("390202002"));
        // The alert's own point is kept.
        assert_eq!(located.point, Some(GeoPoint::new(30.0, 121.7)));
        assert!(located.reason.contains("county"), "{}", located.reason);
    }

    #[test]
    fn geocode_of_a_province_and_a_statistical_code() {
        let area = Area {
            geocodes: vec![("GB2260".into(), "390000".into())],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::Geocode);
        let code = located.township_code.unwrap();
        assert!(code.starts_with("39"), "{code}");

        let area = Area {
            geocodes: vec![("GB2260".into(), "390121201000".into())],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.township_code.as_deref(), Some("390121201"));
    }

    #[test]
    fn unknown_geocode_falls_through_and_is_mentioned() {
        let area = Area {
            geocodes: vec![("GB2260".into(), "110101".into())],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::Unknown);
        assert!(located.reason.contains("110101"), "{}", located.reason);
        assert!(located.reason.contains("no location"), "{}", located.reason);
    }

    #[test]
    fn polygon_containing_several_centroids() {
        // Covers 港城街道 (29.99,121.58), 滨海街道 (30.03,121.66) and the park (30.05,121.75);
        // centre 30.02,121.67 is nearest 滨海街道.
        let area = Area {
            polygons: vec![square(30.02, 121.67, 0.1)],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::PointInPolygon);
        assert_eq!(located.township_code.as_deref(), Some("390202002"));
        assert_eq!(
            located.other_township_codes,
            vec!["390202400".to_string(), "390202001".to_string()]
        );
        assert!(
            located.reason.contains("3 township centroids"),
            "{}",
            located.reason
        );
        let point = located.point.unwrap();
        assert!((point.lat - 30.02).abs() < 1e-9 && (point.lon - 121.67).abs() < 1e-9);

        let capped = LocateOptions {
            other_townships_max: 1,
            ..options()
        };
        let located = locate(&region(), &area, &capped);
        assert_eq!(located.other_township_codes, vec!["390202400".to_string()]);
    }

    #[test]
    fn circle_containing_a_centroid() {
        let area = Area {
            circles: vec![Circle {
                center: GeoPoint::new(29.45, 121.40),
                radius_km: 5.0,
            }],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::PointInPolygon);
        assert_eq!(located.township_code.as_deref(), Some("390223100"));
        assert!(located.other_township_codes.is_empty());
    }

    #[test]
    fn nearest_centroid_within_the_limit() {
        let area = Area {
            points: vec![GeoPoint::new(30.04, 121.74)],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::NearestCentroid);
        assert_eq!(located.township_code.as_deref(), Some("390202400"));
        assert_eq!(located.point, Some(GeoPoint::new(30.04, 121.74)));
        assert!(
            located
                .reason
                .starts_with("point 30.04,121.74 is 1.5 km from 澜港化工园区 (390202400)"),
            "{}",
            located.reason
        );
    }

    #[test]
    fn polygon_without_centroids_uses_its_centre() {
        // A small polygon between townships: no centroid inside, centre 10 km from the park.
        let area = Area {
            polygons: vec![square(30.05, 121.85, 0.01)],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::NearestCentroid);
        assert_eq!(located.township_code.as_deref(), Some("390202400"));
        assert!(
            located.reason.starts_with("polygon centre"),
            "{}",
            located.reason
        );
    }

    #[test]
    fn circle_radius_extends_the_limit() {
        // Centre ~39 km east of the park: beyond 30 km, but within 30 + 15.
        let center = GeoPoint::new(30.05, 122.155);
        let near = Area {
            circles: vec![Circle {
                center,
                radius_km: 15.0,
            }],
            ..Area::default()
        };
        let located = locate(&region(), &near, &options());
        assert_eq!(located.method, LocateMethod::NearestCentroid);
        assert_eq!(located.township_code.as_deref(), Some("390202400"));
        let small = Area {
            circles: vec![Circle {
                center,
                radius_km: 1.0,
            }],
            ..Area::default()
        };
        let located = locate(&region(), &small, &options());
        assert_eq!(located.method, LocateMethod::Unknown);
        assert!(
            located.reason.contains("beyond 30 km + the circle's 1 km"),
            "{}",
            located.reason
        );
    }

    #[test]
    fn far_away_point_is_unknown() {
        let area = Area {
            points: vec![GeoPoint::new(35.77, -117.6)],
            ..Area::default()
        };
        let located = locate(&region(), &area, &options());
        assert_eq!(located.method, LocateMethod::Unknown);
        assert_eq!(located.township_code, None);
        assert_eq!(located.point, Some(GeoPoint::new(35.77, -117.6)));
        assert!(
            located.reason.contains(" km away, beyond 30 km"),
            "{}",
            located.reason
        );
        assert!(located.reason.contains(','), "{}", located.reason);
    }

    #[test]
    fn no_location_is_unknown() {
        let located = locate(&region(), &Area::default(), &options());
        assert_eq!(located.method, LocateMethod::Unknown);
        assert_eq!(located.point, None);
        assert_eq!(located.reason, "the alert names no location");
        let described = Area {
            description: "Coastal waters".into(),
            ..Area::default()
        };
        let located = locate(&region(), &described, &options());
        assert!(
            located.reason.contains("Coastal waters"),
            "{}",
            located.reason
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(km(2.14), "2.1 km");
        assert_eq!(km(30.0), "30 km");
        assert_eq!(km(8123.4), "8,123 km");
        assert_eq!(coordinates(GeoPoint::new(29.98, 121.55)), "29.98,121.55");
        assert_eq!(coordinates(GeoPoint::new(-0.00001, 120.0)), "0,120");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
