//! Great-circle distance, used to find the nearest rider.

pub const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// Haversine distance in metres between two WGS84 points.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seoul_station_to_gangnam_is_about_eight_km() {
        let d = distance_m(37.5547, 126.9707, 37.4979, 127.0276);
        assert!((7_500.0..8_500.0).contains(&d), "{d}");
    }

    #[test]
    fn same_point_is_zero() {
        assert_eq!(distance_m(37.5, 127.0, 37.5, 127.0), 0.0);
    }
}
