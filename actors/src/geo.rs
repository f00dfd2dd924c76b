//! Where people are, for face-to-face groups: geohash cells to find candidates cheaply, and
//! the great-circle distance to decide.
//!
//! A geohash names a rectangle of the earth by interleaving the bits of longitude and
//! latitude, five bits per base-32 character; neighbouring points share long prefixes, except
//! across a cell border, which is why a lookup always takes a cell *and its eight
//! neighbours*: two people 10 m apart on either side of a border are still found.

/// The geohash alphabet (no a, i, l, o).
const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// Mean earth radius in metres (the IUGG value), for distances.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A position in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

impl Point {
    /// A point, or None if the coordinates are out of range or not numbers.
    pub fn new(lat: f64, lon: f64) -> Option<Point> {
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some(Point { lat, lon })
    }

    /// The great-circle distance to `other` in metres (haversine; within 0.5% of the
    /// ellipsoid at the scales that matter here).
    pub fn distance_m(&self, other: &Point) -> f64 {
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }
}

/// The geohash of `point` with `precision` characters (1-12).
pub fn encode(point: Point, precision: usize) -> String {
    let (mut lat, mut lon) = ((-90.0f64, 90.0f64), (-180.0f64, 180.0f64));
    let mut out = String::with_capacity(precision);
    let (mut bits, mut value, mut even) = (0, 0usize, true);
    while out.len() < precision.clamp(1, 12) {
        let (range, coordinate) = if even { (&mut lon, point.lon) } else { (&mut lat, point.lat) };
        let mid = (range.0 + range.1) / 2.0;
        value <<= 1;
        if coordinate >= mid {
            value |= 1;
            range.0 = mid;
        } else {
            range.1 = mid;
        }
        even = !even;
        bits += 1;
        if bits == 5 {
            out.push(BASE32[value] as char);
            (bits, value) = (0, 0);
        }
    }
    out
}

/// The cell's bounds: ((lat_min, lat_max), (lon_min, lon_max)); None for a bad hash.
fn bounds(hash: &str) -> Option<((f64, f64), (f64, f64))> {
    let (mut lat, mut lon) = ((-90.0f64, 90.0f64), (-180.0f64, 180.0f64));
    let mut even = true;
    for c in hash.bytes() {
        let value = BASE32.iter().position(|b| *b == c)?;
        for shift in (0..5).rev() {
            let range = if even { &mut lon } else { &mut lat };
            let mid = (range.0 + range.1) / 2.0;
            if (value >> shift) & 1 == 1 {
                range.0 = mid;
            } else {
                range.1 = mid;
            }
            even = !even;
        }
    }
    Some((lat, lon))
}

/// The cell itself and its (up to) eight neighbours, each once. Near the poles some
/// neighbours do not exist; across the antimeridian longitude wraps.
pub fn cell_and_neighbours(hash: &str) -> Vec<String> {
    let Some(((lat_min, lat_max), (lon_min, lon_max))) = bounds(hash) else { return Vec::new() };
    let (height, width) = (lat_max - lat_min, lon_max - lon_min);
    let (lat, lon) = ((lat_min + lat_max) / 2.0, (lon_min + lon_max) / 2.0);
    let mut out = Vec::with_capacity(9);
    for dlat in [-1.0, 0.0, 1.0] {
        for dlon in [-1.0, 0.0, 1.0] {
            let (nlat, mut nlon) = (lat + dlat * height, lon + dlon * width);
            if !(-90.0..=90.0).contains(&nlat) {
                continue;
            }
            if nlon > 180.0 {
                nlon -= 360.0;
            } else if nlon < -180.0 {
                nlon += 360.0;
            }
            let cell = encode(Point { lat: nlat, lon: nlon }, hash.len());
            if !out.contains(&cell) {
                out.push(cell);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point `north_m` metres north and `east_m` metres east of `from`.
    fn offset(from: Point, north_m: f64, east_m: f64) -> Point {
        let dlat = north_m / EARTH_RADIUS_M;
        let dlon = east_m / (EARTH_RADIUS_M * from.lat.to_radians().cos());
        Point { lat: from.lat + dlat.to_degrees(), lon: from.lon + dlon.to_degrees() }
    }

    #[test]
    fn encodes_like_the_reference() {
        // The example from the geohash paper and its implementations.
        let p = Point::new(57.64911, 10.40744).unwrap();
        assert_eq!(encode(p, 11), "u4pruydqqvj");
        assert_eq!(encode(Point::new(-25.382708, -49.265506).unwrap(), 7), "6gkzwgj");
        let ((lat0, lat1), (lon0, lon1)) = bounds("u4pruydqqvj").unwrap();
        assert!((lat0..=lat1).contains(&p.lat) && (lon0..=lon1).contains(&p.lon));
        assert!(bounds("u4pa").is_none(), "a is not in the alphabet");
    }

    #[test]
    fn distances_are_metres() {
        let here = Point::new(31.2304, 121.4737).unwrap();
        for metres in [30.0, 50.0, 80.0, 1000.0] {
            let d = here.distance_m(&offset(here, metres * 0.6, metres * 0.8));
            assert!((d - metres).abs() < metres * 0.005, "{metres} m came out as {d}");
        }
        assert_eq!(here.distance_m(&here), 0.0);
        assert!(Point::new(90.5, 0.0).is_none() && Point::new(0.0, -181.0).is_none());
        assert!(Point::new(f64::NAN, 0.0).is_none());
    }

    #[test]
    fn a_cell_border_never_keeps_neighbours_apart() {
        // Walk across many borders: whenever two points 40 m apart fall in different cells,
        // each one's cell-and-neighbours still holds the other's cell.
        let mut crossed = 0;
        for i in 0..2000 {
            let a = Point::new(30.0 + i as f64 * 0.00037, 120.0 + i as f64 * 0.00053).unwrap();
            let b = offset(a, 25.0, -30.0);
            for precision in [6, 7] {
                let (ca, cb) = (encode(a, precision), encode(b, precision));
                if ca != cb {
                    crossed += 1;
                    assert!(cell_and_neighbours(&ca).contains(&cb), "{ca} does not reach {cb}");
                    assert!(cell_and_neighbours(&cb).contains(&ca), "{cb} does not reach {ca}");
                }
            }
        }
        assert!(crossed > 50, "the walk crossed only {crossed} borders");
    }

    #[test]
    fn neighbours_wrap_the_antimeridian_and_stop_at_the_poles() {
        let east_edge = encode(Point::new(0.0, 179.9999).unwrap(), 5);
        let west_edge = encode(Point::new(0.0, -179.9999).unwrap(), 5);
        assert!(cell_and_neighbours(&east_edge).contains(&west_edge));
        let pole = encode(Point::new(89.9999, 0.0).unwrap(), 5);
        assert_eq!(cell_and_neighbours(&pole).len(), 6, "no cells north of the pole");
        assert_eq!(cell_and_neighbours(&encode(Point::new(10.0, 10.0).unwrap(), 6)).len(), 9);
        assert!(cell_and_neighbours("not a hash!").is_empty());
    }
}
