//! `baedal-bench dispatch`: the delivery context's store alone, on SQLite, with
//! a city's worth of riders: how long finding the nearest free rider takes
//! with 1,000, 10,000 and 100,000 riders (the H3 ring search the offer
//! activity runs, beside the full scan it replaced), and how many location
//! reports per second the store takes. Writes `BENCH_DISPATCH_OUT`
//! (default `target/bench/dispatch.json`).

use crate::stats::Summary;
use baedal_activities::config::DatabaseUrl;
use baedal_activities::db::{self, Db};
use baedal_activities::delivery::{self, nearest};
use baedal_activities::geo::distance_m;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Seoul's built-up area, roughly: riders and shops fall in this box.
const CITY: ((f64, f64), (f64, f64)) = ((37.45, 126.85), (37.65, 127.15));
const SEARCHES: usize = 1000;

fn spot(rng: &mut StdRng) -> (f64, f64) {
    (
        rng.gen_range(CITY.0.0..CITY.1.0),
        rng.gen_range(CITY.0.1..CITY.1.1),
    )
}

async fn seed(db: &Db, riders: usize, rng: &mut StdRng) -> anyhow::Result<()> {
    let now = baedal_activities::time::now_ms();
    let mut tx = db.begin().await?;
    for i in 0..riders {
        let (lat, lon) = spot(rng);
        // One in ten off duty, one in ten carrying a delivery: as in a city.
        let roll: f64 = rng.r#gen();
        sqlx::query(
            "INSERT INTO riders (id, lat, lon, available, current_order, updated_at, cell, located_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $6)",
        )
        .bind(format!("r{i}"))
        .bind(lat)
        .bind(lon)
        .bind(i64::from(roll >= 0.1))
        .bind((0.1..0.2).contains(&roll).then(|| format!("o{i}")))
        .bind(now)
        .bind(nearest::cell_of(lat, lon))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Percentiles in milliseconds.
fn summary(ms: Vec<f64>) -> Value {
    Summary::of(&ms).map_or(Value::Null, Summary::to_json)
}

/// The ring search, as the offer activity runs it: the nearest free rider.
async fn ring_search(db: &Db, shops: &[(f64, f64)]) -> anyhow::Result<Vec<f64>> {
    let now = baedal_activities::time::now_ms();
    let mut out = Vec::with_capacity(shops.len());
    for &(lat, lon) in shops {
        let t = Instant::now();
        let mut search = nearest::Nearest::new(
            lat,
            lon,
            nearest::Rules {
                exclude: &[],
                fresh_after: now - 120_000,
                abandoned_before: now - 600_000,
            },
        );
        let found = search.next(db).await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(found.is_some(), "no rider found at {lat},{lon}");
    }
    Ok(out)
}

/// What the offer did before the index: every free rider read and ranked.
async fn full_scan(db: &Db, shops: &[(f64, f64)]) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(shops.len());
    for &(lat, lon) in shops {
        let t = Instant::now();
        let free: Vec<(String, f64, f64)> = sqlx::query_as(
            "SELECT id, lat, lon FROM riders WHERE available = 1 AND current_order IS NULL
               AND id NOT IN (SELECT rider_id FROM offers WHERE expires_at > $1)",
        )
        .bind(0i64)
        .fetch_all(db)
        .await?;
        let best = free
            .iter()
            .map(|(id, la, lo)| (distance_m(lat, lon, *la, *lo), id))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(best.is_some());
    }
    Ok(out)
}

/// Location reports for `for_how_long`, from `clients` riders' phones at once.
async fn reports(
    db: &Db,
    riders: usize,
    clients: usize,
    for_how_long: Duration,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64);
            let mut n = 0u64;
            while started.elapsed() < for_how_long {
                let (lat, lon) = spot(&mut rng);
                let rider = format!("r{}", rng.gen_range(0..riders));
                delivery::report_location(&db, &rider, lat, lon, true).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

pub async fn run() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("BENCH_DISPATCH_RIDERS")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut rng = StdRng::seed_from_u64(7);
    let shops: Vec<(f64, f64)> = (0..SEARCHES).map(|_| spot(&mut rng)).collect();
    let mut rows = Vec::new();
    for &n in &sizes {
        let dir = std::env::temp_dir().join(format!("baedal-dispatch-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = db::open(
            &DatabaseUrl::SqliteDir(dir.display().to_string()),
            "delivery",
            &delivery::MIGRATOR,
        )
        .await?;
        seed(&db, n, &mut rng).await?;
        let ring = ring_search(&db, &shops).await?;
        let scan = full_scan(&db, &shops[..shops.len().min(200)]).await?;
        let per_s_1 = reports(&db, n, 1, Duration::from_secs(3)).await?;
        let per_s_8 = reports(&db, n, 8, Duration::from_secs(3)).await?;
        let row = json!({
            "riders": n,
            "nearest_ring_search": summary(ring),
            "nearest_full_scan": summary(scan),
            "location_reports_per_s": {"one_client": per_s_1.round(), "eight_clients": per_s_8.round()},
        });
        eprintln!("{row}");
        rows.push(row);
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    let out = json!({
        "store": "sqlite",
        "searches_per_size": SEARCHES,
        "city": "37.45..37.65 N, 126.85..127.15 E; 10 % off duty, 10 % carrying a delivery",
        "rows": rows,
    });
    let path =
        std::env::var("BENCH_DISPATCH_OUT").unwrap_or_else(|_| "target/bench/dispatch.json".into());
    if let Some(parent) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&out)?)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
