//! Which face-to-face session a 4-digit code and a position name: the pure part of the
//! code's actor.
//!
//! All sessions that share a code live in one [`CodeTable`], owned by the code's actor,
//! which is placed by the code alone, so people on both sides of a geohash border reach the
//! same table. The same code far away is another session. Lookups go through geohash cells and
//! their neighbours, then an exact distance:
//! * a new session's code must not be used by another live session within
//!   [`UNIQUE_RADIUS_M`]: cells of [`UNIQUE_PRECISION`] characters are at least 3 km wide up
//!   to latitude 85°, so a cell and its neighbours hold every start within 1 km;
//! * a joiner must be within [`JOIN_RADIUS_M`] of the start: cells of [`JOIN_PRECISION`]
//!   characters are at least 100 m wide up to latitude 85°.

use crate::geo::{self, Point};

/// No two live sessions within this distance share a code.
pub const UNIQUE_RADIUS_M: f64 = 1000.0;
/// A joiner must be this close to where the session started.
pub const JOIN_RADIUS_M: f64 = 50.0;
/// Geohash length for the uniqueness check (about 39 x 19.5 km at the equator).
pub const UNIQUE_PRECISION: usize = 4;
/// Geohash length for joining (about 1.2 x 0.6 km at the equator).
pub const JOIN_PRECISION: usize = 6;

/// Whether `code` is a face-to-face code: exactly four ASCII digits.
pub fn valid_code(code: &str) -> bool {
    code.len() == 4 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The sessions that share one code: the live ones, and for a while the expired ones, so
/// a late joiner hears `expired` rather than `not_found`.
#[derive(Debug, Default)]
pub struct CodeTable {
    sessions: Vec<Entry>,
}

/// What a joiner's code and position lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The live session within [`JOIN_RADIUS_M`].
    Found(u64),
    /// The session within [`JOIN_RADIUS_M`] has expired, and no live one is there.
    Expired,
    /// A live session with this code started within [`UNIQUE_RADIUS_M`], but farther than
    /// [`JOIN_RADIUS_M`].
    TooFar,
    /// No session with this code near here.
    Nothing,
}

#[derive(Debug)]
struct Entry {
    session: u64,
    start: Point,
    wide_cell: String,
    near_cell: String,
    expires_at_ms: u64,
}

/// Why a session could not take a code here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("another live session within 1 km uses this code")]
pub struct CodeTaken;

impl CodeTable {
    /// Live sessions now.
    pub fn live(&self, now_ms: u64) -> usize {
        self.sessions.iter().filter(|e| e.expires_at_ms > now_ms).count()
    }

    /// Forgets sessions that expired before `forget_before_ms`; how many entries remain,
    /// live or recently expired.
    pub fn forget_expired(&mut self, forget_before_ms: u64) -> usize {
        self.sessions.retain(|e| e.expires_at_ms > forget_before_ms);
        self.sessions.len()
    }

    /// Opens `session` at `start` until `expires_at_ms`, unless a live session within
    /// [`UNIQUE_RADIUS_M`] has this code.
    pub fn open(&mut self, session: u64, start: Point, now_ms: u64, expires_at_ms: u64) -> Result<(), CodeTaken> {
        let cells = geo::cell_and_neighbours(&geo::encode(start, UNIQUE_PRECISION));
        let taken = self.sessions.iter().any(|e| {
            e.expires_at_ms > now_ms && cells.contains(&e.wide_cell) && e.start.distance_m(&start) <= UNIQUE_RADIUS_M
        });
        if taken {
            return Err(CodeTaken);
        }
        self.sessions.push(Entry {
            session,
            start,
            wide_cell: geo::encode(start, UNIQUE_PRECISION),
            near_cell: geo::encode(start, JOIN_PRECISION),
            expires_at_ms,
        });
        Ok(())
    }

    /// The live session whose start is within [`JOIN_RADIUS_M`] of `at` (the nearest, should
    /// there be two), or None.
    pub fn find(&self, at: Point, now_ms: u64) -> Option<u64> {
        match self.lookup(at, now_ms) {
            Lookup::Found(session) => Some(session),
            _ => None,
        }
    }

    /// What a joiner at `at` finds: the nearest live session within [`JOIN_RADIUS_M`], else
    /// why not.
    pub fn lookup(&self, at: Point, now_ms: u64) -> Lookup {
        let near = geo::cell_and_neighbours(&geo::encode(at, JOIN_PRECISION));
        let nearest = |live: bool| {
            self.sessions
                .iter()
                .filter(|e| (e.expires_at_ms > now_ms) == live && near.contains(&e.near_cell))
                .map(|e| (e.start.distance_m(&at), e.session))
                .filter(|(d, _)| *d <= JOIN_RADIUS_M)
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, session)| session)
        };
        if let Some(session) = nearest(true) {
            return Lookup::Found(session);
        }
        if nearest(false).is_some() {
            return Lookup::Expired;
        }
        let wide = geo::cell_and_neighbours(&geo::encode(at, UNIQUE_PRECISION));
        let nearby = self.sessions.iter().any(|e| {
            e.expires_at_ms > now_ms && wide.contains(&e.wide_cell) && e.start.distance_m(&at) <= UNIQUE_RADIUS_M
        });
        if nearby { Lookup::TooFar } else { Lookup::Nothing }
    }

    /// Whether `session` is here and live.
    pub fn is_live(&self, session: u64, now_ms: u64) -> Option<bool> {
        self.sessions.iter().find(|e| e.session == session).map(|e| e.expires_at_ms > now_ms)
    }

    /// Forgets a session (it ended early).
    pub fn close(&mut self, session: u64) {
        self.sessions.retain(|e| e.session != session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(from: Point, north_m: f64, east_m: f64) -> Point {
        let r = 6_371_008.8f64;
        let dlat = (north_m / r).to_degrees();
        let dlon = (east_m / (r * from.lat.to_radians().cos())).to_degrees();
        Point::new(from.lat + dlat, from.lon + dlon).unwrap()
    }

    const TTL: u64 = 180_000;

    #[test]
    fn codes_are_four_digits() {
        assert!(valid_code("0427"));
        for bad in ["427", "04271", "04a7", "", "٠١٢٣", "-123"] {
            assert!(!valid_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn thirty_metres_meet_eighty_do_not() {
        let start = Point::new(31.2304, 121.4737).unwrap();
        let mut table = CodeTable::default();
        table.open(1, start, 0, TTL).unwrap();
        assert_eq!(table.find(offset(start, 18.0, 24.0), 10), Some(1), "30 m away");
        assert_eq!(table.find(offset(start, 48.0, 64.0), 10), None, "80 m away");
        assert_eq!(table.lookup(offset(start, 48.0, 64.0), 10), Lookup::TooFar);
        assert_eq!(table.lookup(offset(start, 4000.0, 0.0), 10), Lookup::Nothing, "4 km away");
    }

    #[test]
    fn a_cell_border_does_not_keep_people_apart() {
        let mut met = 0;
        for i in 0..400 {
            let start = Point::new(48.0 + i as f64 * 0.00211, 2.0 + i as f64 * 0.00307).unwrap();
            let joiner = offset(start, 20.0, -25.0);
            if geo::encode(start, JOIN_PRECISION) == geo::encode(joiner, JOIN_PRECISION) {
                continue;
            }
            let mut table = CodeTable::default();
            table.open(7, start, 0, TTL).unwrap();
            assert_eq!(table.find(joiner, 1), Some(7), "across a border at {start:?}");
            met += 1;
        }
        assert!(met > 10, "only {met} walks crossed a border");
    }

    #[test]
    fn a_code_is_unique_within_a_kilometre_and_reusable_elsewhere_and_later() {
        let start = Point::new(-33.8688, 151.2093).unwrap();
        let mut table = CodeTable::default();
        table.open(1, start, 0, TTL).unwrap();
        assert_eq!(table.open(2, offset(start, 600.0, 600.0), 5, 5 + TTL), Err(CodeTaken), "850 m away");
        table.open(3, offset(start, 1500.0, 0.0), 5, 5 + TTL).expect("1.5 km away is another place");
        assert_eq!(table.find(offset(start, 1500.0, 10.0), 6), Some(3), "the same code far away is another session");
        assert_eq!(table.find(offset(start, 0.0, 10.0), 6), Some(1));
        // After the TTL the code is free again here.
        assert_eq!(table.find(start, TTL), None, "expired");
        assert_eq!(table.lookup(start, TTL), Lookup::Expired);
        table.open(4, start, TTL, 2 * TTL).expect("reusable after expiry");
        assert_eq!(table.live(TTL), 2);
        assert_eq!(table.lookup(start, TTL), Lookup::Found(4), "the live one wins over the expired one");
        table.close(4);
        assert_eq!(table.find(start, TTL + 1), None);
        assert_eq!(table.forget_expired(TTL + 1), 1, "session 1 forgotten, 3 still live");
        assert_eq!(table.lookup(start, TTL + 1), Lookup::Nothing, "1 is forgotten and 3 is 1.5 km away");
    }
}
