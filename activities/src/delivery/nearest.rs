//! The nearest free rider, found through a spatial index that works the same
//! on SQLite and Postgres: each rider row carries the H3 cell (resolution 8,
//! cells ~0.74 km², from the `h3o` crate) of its last reported position, and a
//! partial index over the free riders' cells. The search reads the shop's
//! cell with its neighbours, then ring after ring around them, ranking what
//! it found by exact great-circle distance; it hands out a rider only once no
//! rider beyond the rings read so far could be nearer. Far from any rider
//! (past `MAX_RING`) it reads every free rider once, so the rules are those of
//! a full scan: available, no delivery, no live offer, not excluded, not stale.

use crate::db::{Db, numbered};
use crate::geo::{EARTH_RADIUS_M, distance_m};
use h3o::{CellIndex, LatLng, Resolution};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

pub const RESOLUTION: Resolution = Resolution::Eight;
/// Rings read one by one before the search gives up on rings and reads the
/// rest at once: 40 rings of resolution 8 cover well over 15 km.
const MAX_RING: u32 = 40;

/// The cell of a position, as stored (`riders.cell`); 0 for a position H3
/// cannot place (not a real latitude/longitude; such riders are only found by
/// the full read).
pub fn cell_of(lat: f64, lon: f64) -> i64 {
    LatLng::new(lat, lon).map_or(0, |p| u64::from(p.to_cell(RESOLUTION)) as i64)
}

/// Every point outside the rings `0..=k` around `origin` is at least this far
/// from the shop at (`lat`, `lon`). Such a point lies in a cell of grid
/// distance k + 1 or more, and neighbouring cells differ by at most one in
/// grid distance, so the great circle from the shop to it enters a cell of
/// ring k + 1 across one of that cell's edges: the nearest edge of ring k + 1
/// is the bound. H3 edges are great-circle arcs; the distance to each is
/// exact on the sphere `distance_m` uses. A metre comes off for rounding.
fn beyond_rings_m(lat: f64, lon: f64, origin: CellIndex, k: u32) -> f64 {
    let mut nearest = f64::INFINITY;
    for cell in ring(origin, k + 1) {
        let boundary = cell.boundary();
        for (i, a) in boundary.iter().enumerate() {
            let b = boundary[(i + 1) % boundary.len()];
            nearest = nearest.min(to_arc_m((lat, lon), (a.lat(), a.lng()), (b.lat(), b.lng())));
        }
    }
    (nearest - 1.0).max(0.0)
}

/// Bounds already worked out, by shop position and ring. A shop stays where
/// it is, so every order from it asks for the same few bounds, and each costs
/// thousands of trigonometric calls (36 (k + 1) edges for ring k): with libm
/// and H3's boundaries, about a tenth of the worker's main thread under the
/// benchmark's load.
static BOUNDS: LazyLock<Mutex<Bounds>> = LazyLock::new(|| Mutex::new(Bounds::new(BOUNDS_KEPT)));
/// Enough for every ring of a few hundred shops; about a megabyte at most.
const BOUNDS_KEPT: usize = 32_768;

/// [`beyond_rings_m`], remembered.
fn beyond_rings_known_m(lat: f64, lon: f64, origin: CellIndex, k: u32) -> f64 {
    let key = (lat.to_bits(), lon.to_bits(), k);
    if let Some(m) = BOUNDS.lock().expect("bounds").get(key) {
        return m;
    }
    let m = beyond_rings_m(lat, lon, origin, k);
    BOUNDS.lock().expect("bounds").put(key, m);
    m
}

/// A map that starts again empty when it is full: the bounds of the shops
/// that are ordering from come back at once, and nothing grows without end.
struct Bounds {
    kept: usize,
    map: HashMap<(u64, u64, u32), f64>,
}

impl Bounds {
    fn new(kept: usize) -> Self {
        Bounds {
            kept,
            map: HashMap::new(),
        }
    }

    fn get(&self, key: (u64, u64, u32)) -> Option<f64> {
        self.map.get(&key).copied()
    }

    fn put(&mut self, key: (u64, u64, u32), m: f64) {
        if self.map.len() >= self.kept {
            self.map.clear();
        }
        self.map.insert(key, m);
    }
}

/// The great-circle distance from `p` to the shorter arc from `a` to `b`
/// (degrees): the cross-track distance when the foot of the perpendicular
/// falls on the arc, else the distance to the nearer end.
fn to_arc_m(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let pa = distance_m(p.0, p.1, a.0, a.1);
    let ends = pa.min(distance_m(p.0, p.1, b.0, b.1));
    let ap = pa / EARTH_RADIUS_M;
    let ab = distance_m(a.0, a.1, b.0, b.1) / EARTH_RADIUS_M;
    let turn = bearing(a, p) - bearing(a, b);
    if turn.cos() <= 0.0 {
        return ends;
    }
    let cross = (ap.sin() * turn.sin()).clamp(-1.0, 1.0).asin();
    let along = (ap.cos() / cross.cos()).clamp(-1.0, 1.0).acos();
    if along > ab {
        return ends;
    }
    (cross.abs() * EARTH_RADIUS_M).min(ends)
}

/// The initial bearing from `a` to `b` (degrees in, radians out).
fn bearing(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let dl = (b.1 - a.1).to_radians();
    (dl.sin() * p2.cos()).atan2(p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos())
}

/// The last ring read in one query when the search goes on from ring `next`:
/// the shop's cell and its neighbours at once (no rider in ring 0 can be
/// handed out before ring 1 has been read), then one ring at a time. Wider
/// bands (2–3, 4–7, ...) were measured: fewer queries, but reading cells
/// past the one that settles the search cost more than the queries saved.
fn band_end(next: u32) -> u32 {
    next.clamp(1, MAX_RING)
}

/// The cells at exactly grid distance `k` from `origin`.
fn ring(origin: CellIndex, k: u32) -> Vec<CellIndex> {
    let fast: Option<Vec<CellIndex>> = origin.grid_ring_fast(k).collect();
    fast.unwrap_or_else(|| {
        // Near a pentagon the fast walk gives up; the safe one does not.
        origin
            .grid_disk_distances_safe(k)
            .filter(|(_, d)| *d == k)
            .map(|(c, _)| c)
            .collect()
    })
}

/// One rider the search may offer the order to.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub id: String,
    pub distance_m: f64,
}

/// What makes a rider free for this order.
pub struct Rules<'a> {
    pub exclude: &'a [String],
    /// Riders who last reported their position before this (ms) are stale.
    pub fresh_after: i64,
    /// Offers that expired before this (ms) no longer hold their rider.
    pub abandoned_before: i64,
}

/// Free riders by distance from one shop, read ring by ring as needed.
pub struct Nearest<'a> {
    lat: f64,
    lon: f64,
    origin: Option<CellIndex>,
    rules: Rules<'a>,
    /// The outermost ring read so far and how far from the shop everything
    /// beyond it is ([`beyond_rings_m`]); `None`: none yet. Past `MAX_RING`,
    /// everything.
    read: Option<(u32, f64)>,
    everything: bool,
    seen: HashSet<String>,
    /// Min-heap by (distance in mm, id): ties go to the smaller id.
    found: BinaryHeap<Reverse<(u64, String)>>,
}

impl<'a> Nearest<'a> {
    pub fn new(lat: f64, lon: f64, rules: Rules<'a>) -> Self {
        Nearest {
            lat,
            lon,
            origin: LatLng::new(lat, lon).ok().map(|p| p.to_cell(RESOLUTION)),
            rules,
            read: None,
            everything: false,
            seen: HashSet::new(),
            found: BinaryHeap::new(),
        }
    }

    /// The nearest free rider not handed out yet, or None when there is none.
    pub async fn next(&mut self, db: &Db) -> anyhow::Result<Option<Found>> {
        loop {
            let nearest_mm = self.found.peek().map(|Reverse((mm, _))| *mm);
            let settled = match (nearest_mm, self.read) {
                (Some(_), _) if self.everything => true,
                (Some(mm), Some((_, beyond_m))) => (mm as f64 / 1000.0) <= beyond_m,
                _ => false,
            };
            if settled {
                let Reverse((mm, id)) = self.found.pop().expect("peeked");
                return Ok(Some(Found {
                    id,
                    distance_m: mm as f64 / 1000.0,
                }));
            }
            if self.everything {
                return Ok(None);
            }
            let next = self.read.map_or(0, |(k, _)| k + 1);
            match self.origin {
                Some(origin) if next <= MAX_RING => {
                    let upto = band_end(next);
                    let cells: Vec<CellIndex> =
                        (next..=upto).flat_map(|k| ring(origin, k)).collect();
                    self.load(db, Some(&cells)).await?;
                    let beyond_m = beyond_rings_known_m(self.lat, self.lon, origin, upto);
                    self.read = Some((upto, beyond_m));
                }
                _ => {
                    self.load(db, None).await?;
                    self.everything = true;
                }
            }
        }
    }

    /// Reads the free riders in `cells` (every free rider when None).
    async fn load(&mut self, db: &Db, cells: Option<&[CellIndex]>) -> anyhow::Result<()> {
        let mut sql = String::from(
            "SELECT id, lat, lon FROM riders
             WHERE available = 1 AND current_order IS NULL AND located_at > $1
               AND id NOT IN (SELECT rider_id FROM offers WHERE expires_at > $2)",
        );
        if let Some(cells) = cells {
            if cells.is_empty() {
                return Ok(());
            }
            sql.push_str(&format!(
                " AND cell IN ({})",
                numbered(3, cells.len(), "?", ", ")
            ));
        }
        let mut q = sqlx::query_as::<_, (String, f64, f64)>(&sql)
            .bind(self.rules.fresh_after)
            .bind(self.rules.abandoned_before);
        for c in cells.unwrap_or_default() {
            q = q.bind(u64::from(*c) as i64);
        }
        for (id, lat, lon) in q.fetch_all(db).await? {
            if self.rules.exclude.contains(&id) || !self.seen.insert(id.clone()) {
                continue;
            }
            let mm = (distance_m(self.lat, self.lon, lat, lon) * 1000.0).round() as u64;
            self.found.push(Reverse((mm, id)));
        }
        Ok(())
    }
}

/// Riders stored before cells existed get theirs (run where the delivery
/// context starts; cheap when there is nothing to do).
pub async fn backfill_cells(db: &Db) -> anyhow::Result<u64> {
    let rows: Vec<(String, f64, f64)> =
        sqlx::query_as("SELECT id, lat, lon FROM riders WHERE cell = 0")
            .fetch_all(db)
            .await?;
    let mut n = 0;
    for (id, lat, lon) in rows {
        let cell = cell_of(lat, lon);
        if cell != 0 {
            n += sqlx::query("UPDATE riders SET cell = $1 WHERE id = $2 AND cell = 0")
                .bind(cell)
                .bind(&id)
                .execute(db)
                .await?
                .rows_affected();
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;

    const NOW: i64 = 1_800_000_000_000;
    const FRESH_AFTER: i64 = NOW - 120_000;
    const ABANDONED_BEFORE: i64 = NOW - 600_000;

    /// A small deterministic generator: the same riders every run.
    struct Lcg(u64);
    impl Lcg {
        fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn around(&mut self, lat: f64, lon: f64, spread_deg: f64) -> (f64, f64) {
            (
                lat + (self.unit() - 0.5) * 2.0 * spread_deg,
                lon + (self.unit() - 0.5) * 2.0 * spread_deg,
            )
        }
    }

    struct Rider {
        id: String,
        lat: f64,
        lon: f64,
        available: bool,
        busy: bool,
        located_at: i64,
        offered: bool,
    }

    impl Rider {
        fn free(&self, exclude: &[String]) -> bool {
            self.available
                && !self.busy
                && self.located_at > FRESH_AFTER
                && !self.offered
                && !exclude.contains(&self.id)
        }
    }

    /// 3,000 riders: most in one city, some across the region, a few far off;
    /// some unavailable, carrying a delivery, silent too long, or holding an offer.
    async fn seeded() -> (Db, Vec<Rider>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::SqliteDir(dir.path().display().to_string());
        let db = crate::db::open(&url, "delivery", &super::super::MIGRATOR)
            .await
            .unwrap();
        let mut g = Lcg(42);
        let mut riders = Vec::new();
        for i in 0..3000 {
            let (lat, lon) = match i % 30 {
                0 => g.around(35.18, 129.07, 0.3),    // another city
                1..=8 => g.around(37.55, 127.0, 0.5), // the region
                _ => g.around(37.50, 127.03, 0.08),   // the city
            };
            let roll = g.unit();
            riders.push(Rider {
                id: format!("r{i:04}"),
                lat,
                lon,
                available: roll > 0.1,
                busy: (0.1..0.2).contains(&roll),
                located_at: if (0.2..0.3).contains(&roll) {
                    FRESH_AFTER - 1
                } else {
                    NOW - 1000
                },
                offered: (0.3..0.35).contains(&roll),
            });
        }
        for r in &riders {
            sqlx::query(
                "INSERT INTO riders (id, lat, lon, available, current_order, updated_at, cell, located_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&r.id)
            .bind(r.lat)
            .bind(r.lon)
            .bind(i64::from(r.available))
            .bind(r.busy.then(|| format!("order-of-{}", r.id)))
            .bind(NOW)
            .bind(cell_of(r.lat, r.lon))
            .bind(r.located_at)
            .execute(&db)
            .await
            .unwrap();
            if r.offered {
                sqlx::query(
                    "INSERT INTO offers (order_id, rider_id, shop, distance_m, expires_at)
                     VALUES ($1, $2, '{}', 0, $3)",
                )
                .bind(format!("offer-to-{}", r.id))
                .bind(&r.id)
                .bind(NOW + 30_000)
                .execute(&db)
                .await
                .unwrap();
            }
        }
        (db, riders, dir)
    }

    fn brute_force(
        riders: &[Rider],
        lat: f64,
        lon: f64,
        exclude: &[String],
        n: usize,
    ) -> Vec<String> {
        let mut all: Vec<(u64, &str)> = riders
            .iter()
            .filter(|r| r.free(exclude))
            .map(|r| {
                let mm = (distance_m(lat, lon, r.lat, r.lon) * 1000.0).round() as u64;
                (mm, r.id.as_str())
            })
            .collect();
        all.sort();
        all.into_iter()
            .take(n)
            .map(|(_, id)| id.to_string())
            .collect()
    }

    async fn searched(db: &Db, lat: f64, lon: f64, exclude: &[String], n: usize) -> Vec<String> {
        let mut search = Nearest::new(
            lat,
            lon,
            Rules {
                exclude,
                fresh_after: FRESH_AFTER,
                abandoned_before: ABANDONED_BEFORE,
            },
        );
        let mut out = Vec::new();
        while out.len() < n {
            match search.next(db).await.unwrap() {
                Some(f) => out.push(f.id),
                None => break,
            }
        }
        out
    }

    /// The remembered bound is the one worked out, for every shop and ring
    /// asked twice; the memory starts again when full instead of growing.
    #[test]
    fn remembered_bounds_are_the_bounds_and_their_number_is_capped() {
        for (lat, lon) in [(37.4979, 127.0276), (37.51, 127.06), (-33.87, 151.21)] {
            let origin = LatLng::new(lat, lon).unwrap().to_cell(RESOLUTION);
            for k in 0..6 {
                let worked_out = beyond_rings_m(lat, lon, origin, k);
                assert_eq!(beyond_rings_known_m(lat, lon, origin, k), worked_out);
                assert_eq!(beyond_rings_known_m(lat, lon, origin, k), worked_out);
            }
        }
        let mut b = Bounds::new(3);
        for k in 0..7 {
            b.put((1, 2, k), f64::from(k));
            assert!(b.map.len() <= 3);
            assert_eq!(b.get((1, 2, k)), Some(f64::from(k)));
        }
        assert_eq!(b.get((1, 2, 0)), None);
    }

    /// The bound holds for every point outside the rings read (20,000
    /// random points up to ~30 km away, around shops in Seoul, far north,
    /// south of the equator and where icosahedron faces meet), and it reaches
    /// well past the old one (the cell's inner diameter at half the mean edge
    /// per ring), so a search settles rings earlier.
    #[test]
    fn nothing_outside_the_rings_read_is_nearer_than_the_bound() {
        let mut g = Lcg(7);
        for (lat, lon) in [
            (37.4979, 127.0276),
            (69.65, 18.96),
            (-33.87, 151.21),
            (0.0, 0.0),
        ] {
            let origin = LatLng::new(lat, lon).unwrap().to_cell(RESOLUTION);
            let points: Vec<(u32, f64)> = (0..20_000)
                .filter_map(|_| {
                    let (plat, plon) = g.around(lat, lon, 0.3);
                    let cell = LatLng::new(plat, plon).unwrap().to_cell(RESOLUTION);
                    let d = origin.grid_distance(cell).ok()?;
                    Some((d as u32, distance_m(lat, lon, plat, plon)))
                })
                .collect();
            assert!(points.len() > 19_000);
            for k in 0..=24 {
                let bound = beyond_rings_m(lat, lon, origin, k);
                for &(d, m) in points.iter().filter(|(d, _)| *d > k) {
                    assert!(
                        m >= bound,
                        "({lat}, {lon}) ring {k}: a point of ring {d} at {m:.0} m, bound {bound:.0} m"
                    );
                }
                let old = f64::from(k) * 3f64.sqrt() * RESOLUTION.edge_length_m() * 0.5;
                if k >= 3 {
                    assert!(
                        bound >= 1.2 * old,
                        "({lat}, {lon}) ring {k}: bound {bound:.0} m, old {old:.0} m"
                    );
                }
            }
        }
    }

    #[test]
    fn the_first_read_takes_ring_0_and_1_and_each_later_one_ring() {
        let mut next = 0;
        let mut bands = Vec::new();
        while next <= MAX_RING {
            let end = band_end(next);
            assert!(end >= next, "band from {next} ends at {end}");
            bands.push((next, end));
            next = end + 1;
        }
        assert_eq!(bands[0], (0, 1));
        assert!(bands[1..].iter().all(|(a, b)| a == b), "{bands:?}");
        assert_eq!(bands.last(), Some(&(MAX_RING, MAX_RING)));
    }

    #[tokio::test]
    async fn the_ring_search_ranks_free_riders_exactly_as_a_full_scan_does() {
        let (db, riders, _dir) = seeded().await;
        let mut g = Lcg(7);
        let mut shops: Vec<(f64, f64)> = (0..40).map(|_| g.around(37.50, 127.03, 0.1)).collect();
        shops.extend((0..10).map(|_| g.around(37.55, 127.0, 0.6)));
        // Far from everyone: Jeju (found only by the full read) and Busan.
        shops.push((33.50, 126.53));
        shops.push((35.18, 129.07));
        for (i, (lat, lon)) in shops.into_iter().enumerate() {
            // Some orders have riders who declined or let an offer lapse.
            let exclude: Vec<String> = brute_force(&riders, lat, lon, &[], 3)
                .into_iter()
                .take(i % 3)
                .collect();
            let want = brute_force(&riders, lat, lon, &exclude, 5);
            assert_eq!(want.len(), 5);
            let got = searched(&db, lat, lon, &exclude, 5).await;
            assert_eq!(got, want, "shop at {lat},{lon} excluding {exclude:?}");
        }
    }

    #[tokio::test]
    async fn every_free_rider_is_found_once_and_no_other() {
        let (db, riders, _dir) = seeded().await;
        let mut got = searched(&db, 37.50, 127.03, &[], usize::MAX).await;
        let want = brute_force(&riders, 37.50, 127.03, &[], usize::MAX);
        assert_eq!(got, want);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), want.len());
    }

    #[tokio::test]
    async fn a_rider_silent_too_long_is_not_offered_even_when_nearest() {
        let (db, _riders, _dir) = seeded().await;
        let (lat, lon) = (37.6001, 127.1001);
        for (id, located_at) in [("silent", FRESH_AFTER - 1), ("heard", NOW)] {
            // The silent rider stands on the shop; the other 100 m away.
            let lat = if id == "silent" { lat } else { lat + 0.0009 };
            sqlx::query(
                "INSERT INTO riders (id, lat, lon, available, current_order, updated_at, cell, located_at)
                 VALUES ($1, $2, $3, 1, NULL, $4, $5, $6)",
            )
            .bind(id)
            .bind(lat)
            .bind(lon)
            .bind(NOW)
            .bind(cell_of(lat, lon))
            .bind(located_at)
            .execute(&db)
            .await
            .unwrap();
        }
        assert_eq!(searched(&db, lat, lon, &[], 1).await, ["heard"]);
    }

    #[tokio::test]
    async fn riders_stored_before_cells_get_theirs() {
        let (db, _riders, _dir) = seeded().await;
        sqlx::query("UPDATE riders SET cell = 0 WHERE id IN ('r0011', 'r0012')")
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(backfill_cells(&db).await.unwrap(), 2);
        assert_eq!(backfill_cells(&db).await.unwrap(), 0);
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM riders WHERE cell = 0")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
