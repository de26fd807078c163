//! Geographic points and great-circle distance, used to rank units by how far they are from an incident.

use serde::{Deserialize, Serialize};

/// Mean earth radius (IUGG), in kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A WGS 84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    pub fn new(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint { lat, lon }
    }

    /// Why the point is not a valid position, if it is not: latitude must lie in [-90, 90] and
    /// longitude in [-180, 180] (both finite).
    pub fn range_problem(&self) -> Option<String> {
        if !(self.lat.is_finite() && (-90.0..=90.0).contains(&self.lat)) {
            return Some(format!("latitude {} is outside [-90, 90]", self.lat));
        }
        if !(self.lon.is_finite() && (-180.0..=180.0).contains(&self.lon)) {
            return Some(format!("longitude {} is outside [-180, 180]", self.lon));
        }
        None
    }
}

/// Great-circle distance by the haversine formula on a sphere of radius [`EARTH_RADIUS_KM`].
pub fn great_circle_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let lat_a = a.lat.to_radians();
    let lat_b = b.lat.to_radians();
    let half_dlat = (b.lat - a.lat).to_radians() / 2.0;
    let half_dlon = (b.lon - a.lon).to_radians() / 2.0;
    let h = half_dlat.sin().powi(2) + lat_a.cos() * lat_b.cos() * half_dlon.sin().powi(2);
    // Clamp guards against h drifting just above 1 through rounding for antipodal points.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Whether `point` lies inside `ring` (a polygon's outer ring, first point repeated or not), by
/// ray casting on the lat/lon plane (fine at township scale, away from the poles and the
/// antimeridian). Points exactly on an edge may fall either way. Fewer than three distinct
/// vertices enclose nothing.
pub fn point_in_polygon(point: GeoPoint, ring: &[GeoPoint]) -> bool {
    if ring.len() < 3 {
        return false;
    }
    let mut inside = false;
    let mut previous = ring[ring.len() - 1];
    for &current in ring {
        let crosses = (current.lat > point.lat) != (previous.lat > point.lat);
        if crosses {
            let lon_at = previous.lon
                + (point.lat - previous.lat) * (current.lon - previous.lon)
                    / (current.lat - previous.lat);
            if point.lon < lon_at {
                inside = !inside;
            }
        }
        previous = current;
    }
    inside
}

/// The mean of a ring's vertices (the closing repeat of the first point not counted twice): a
/// representative point for an area, good enough to find the nearest township.
pub fn ring_center(ring: &[GeoPoint]) -> Option<GeoPoint> {
    let points = match ring {
        [] => return None,
        [first, .., last] if first == last && ring.len() > 1 => &ring[..ring.len() - 1],
        _ => ring,
    };
    let count = points.len() as f64;
    let lat = points.iter().map(|p| p.lat).sum::<f64>() / count;
    let lon = points.iter().map(|p| p.lon).sum::<f64>() / count;
    Some(GeoPoint::new(lat, lon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_point_is_zero_km() {
        let p = GeoPoint::new(30.25, 120.16);
        assert_eq!(great_circle_km(p, p), 0.0);
    }

    #[test]
    fn one_degree_of_latitude_is_about_111_km() {
        let d = great_circle_km(GeoPoint::new(30.0, 120.0), GeoPoint::new(31.0, 120.0));
        assert!((d - 111.195).abs() < 0.01, "{d}");
    }

    #[test]
    fn distance_is_symmetric() {
        let a = GeoPoint::new(30.25, 120.16);
        let b = GeoPoint::new(29.45, 121.42);
        assert!((great_circle_km(a, b) - great_circle_km(b, a)).abs() < 1e-9);
    }

    #[test]
    fn point_in_polygon_by_ray_casting() {
        let square = [
            GeoPoint::new(30.0, 120.0),
            GeoPoint::new(30.0, 121.0),
            GeoPoint::new(31.0, 121.0),
            GeoPoint::new(31.0, 120.0),
            GeoPoint::new(30.0, 120.0),
        ];
        assert!(point_in_polygon(GeoPoint::new(30.5, 120.5), &square));
        assert!(!point_in_polygon(GeoPoint::new(31.5, 120.5), &square));
        assert!(!point_in_polygon(GeoPoint::new(30.5, 119.5), &square));
        assert!(!point_in_polygon(GeoPoint::new(30.5, 120.5), &square[..2]));
        let center = ring_center(&square).unwrap();
        assert!((center.lat - 30.5).abs() < 1e-9 && (center.lon - 120.5).abs() < 1e-9);
        assert_eq!(ring_center(&[]), None);
    }

    #[test]
    fn range_problem_flags_out_of_range() {
        assert!(GeoPoint::new(91.0, 0.0).range_problem().is_some());
        assert!(GeoPoint::new(0.0, -180.5).range_problem().is_some());
        assert!(GeoPoint::new(f64::NAN, 0.0).range_problem().is_some());
        assert!(GeoPoint::new(-90.0, 180.0).range_problem().is_none());
    }
}
