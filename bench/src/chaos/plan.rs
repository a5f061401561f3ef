//! The run's mix of order paths, drawn from one seed: the same seed gives the
//! same orders, paths, items, duplicates and fault points (timing is not seeded).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What the driver means to happen to one order. Faults and timers may take it
/// elsewhere; the checks judge what did happen, the mix table compares the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// Owner accepts, marks ready; the first rider offered takes it; pickup, complete.
    Delivered,
    /// The customer cancels before the shop answers.
    CustomerCancel,
    /// The owner rejects with a reason.
    OwnerReject,
    /// Nobody answers: `SHOP_ACCEPT_TIMEOUT` rejects it.
    ShopTimeout,
    /// The first rider offered declines; the next one takes it.
    RiderDecline,
    /// Every rider offered declines: `RIDER_SEARCH_TIMEOUT` cancels it (NO_RIDER).
    NoRider,
    /// Customer cancel and owner accept sent at the same time.
    CancelVsAccept,
    /// Owner reject and owner accept sent at the same time.
    RejectVsAccept,
    /// The offered rider's accept and decline sent at the same time.
    RiderAcceptVsDecline,
    /// Pickup sent twice at once, then complete sent twice at once (distinct keys).
    DoublePickupComplete,
    /// The end-of-run probe: one order per rider, all offered at once.
    Probe,
}

impl Path {
    pub const MIX: [(Path, u32); 10] = [
        (Path::Delivered, 24),
        (Path::CustomerCancel, 10),
        (Path::OwnerReject, 10),
        (Path::ShopTimeout, 8),
        (Path::RiderDecline, 12),
        (Path::NoRider, 6),
        (Path::CancelVsAccept, 8),
        (Path::RejectVsAccept, 8),
        (Path::RiderAcceptVsDecline, 7),
        (Path::DoublePickupComplete, 7),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Path::Delivered => "delivered",
            Path::CustomerCancel => "customer cancel",
            Path::OwnerReject => "owner reject",
            Path::ShopTimeout => "shop timeout",
            Path::RiderDecline => "rider decline, next rider",
            Path::NoRider => "no rider (all decline)",
            Path::CancelVsAccept => "cancel vs accept",
            Path::RejectVsAccept => "reject vs accept",
            Path::RiderAcceptVsDecline => "rider accept vs decline",
            Path::DoublePickupComplete => "pickup/complete twice",
            Path::Probe => "end probe (one per rider)",
        }
    }

    /// The final status the path aims at (the mix table compares).
    pub fn intended(self) -> &'static str {
        match self {
            Path::CustomerCancel | Path::NoRider => "CANCELLED",
            Path::OwnerReject | Path::ShopTimeout => "REJECTED",
            Path::CancelVsAccept | Path::RejectVsAccept => "either",
            _ => "DELIVERED",
        }
    }
}

/// How a request is repeated with the same `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Again once the first answer is in.
    After,
    /// Twice at the same time.
    Together,
}

#[derive(Debug, Clone)]
pub struct OrderPlan {
    /// The order's number in the run (0-based); keys and reasons carry it.
    pub n: usize,
    pub path: Path,
    pub customer: usize,
    pub shop: usize,
    /// (menu id, quantity), distinct menu ids.
    pub items: Vec<(String, u32)>,
    /// Σ price × quantity from the menu as read at the start.
    pub total: i64,
    pub cook_minutes: u32,
    /// The owner marks the food ready right after accepting (else after the rider is assigned).
    pub ready_early: bool,
    /// POST /api/orders sent a second time with the same key.
    pub place_repeat: Option<Repeat>,
    /// Every single (non-conflicting) action sent a second time with the same key.
    pub action_repeat: Option<Repeat>,
}

/// A shop's menu as the run read it: (menu id, price), sorted by id.
pub type Menu = Vec<(String, i64)>;

pub fn draw(seed: u64, orders: usize, customers: usize, menus: &[Menu]) -> Vec<OrderPlan> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Every path at least once, first (a short run still covers all), then by weight.
    let mut paths: Vec<Path> = Path::MIX.iter().map(|(p, _)| *p).collect();
    paths.shuffle(&mut rng);
    let total_weight: u32 = Path::MIX.iter().map(|(_, w)| w).sum();
    while paths.len() < orders {
        let mut pick = rng.gen_range(0..total_weight);
        for (p, w) in Path::MIX {
            if pick < w {
                paths.push(p);
                break;
            }
            pick -= w;
        }
    }
    paths.truncate(orders);
    paths
        .into_iter()
        .enumerate()
        .map(|(n, path)| order(&mut rng, n, path, customers, menus))
        .collect()
}

/// The probe's orders: one per rider, alternating shops, no repeats.
pub fn probe(
    seed: u64,
    first_n: usize,
    count: usize,
    customers: usize,
    menus: &[Menu],
) -> Vec<OrderPlan> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|i| {
            let mut p = order(&mut rng, first_n + i, Path::Probe, customers, menus);
            p.shop = i % menus.len();
            p.items = vec![(menus[p.shop][0].0.clone(), 1)];
            p.total = menus[p.shop][0].1;
            p.place_repeat = None;
            p.action_repeat = None;
            p.ready_early = true;
            p
        })
        .collect()
}

fn order(rng: &mut StdRng, n: usize, path: Path, customers: usize, menus: &[Menu]) -> OrderPlan {
    let customer = rng.gen_range(0..customers);
    let shop = rng.gen_range(0..menus.len());
    let menu = &menus[shop];
    let lines = rng.gen_range(1..=menu.len().min(3));
    let mut picks: Vec<&(String, i64)> = menu.iter().collect();
    picks.shuffle(rng);
    let mut items = Vec::new();
    let mut total = 0;
    for (id, price) in picks.into_iter().take(lines) {
        let q = rng.gen_range(1..=3u32);
        total += price * i64::from(q);
        items.push((id.clone(), q));
    }
    let repeat = |rng: &mut StdRng, p: f64| {
        rng.gen_bool(p).then(|| {
            if rng.gen_bool(0.5) {
                Repeat::After
            } else {
                Repeat::Together
            }
        })
    };
    let place_repeat = repeat(rng, 0.3);
    let action_repeat = repeat(rng, 0.3);
    OrderPlan {
        n,
        path,
        customer,
        shop,
        items,
        total,
        cook_minutes: rng.gen_range(1..=30),
        ready_early: rng.gen_bool(0.5),
        place_repeat,
        action_repeat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menus() -> Vec<Menu> {
        vec![
            vec![("a1".into(), 1000), ("a2".into(), 2500), ("a3".into(), 300)],
            vec![("b1".into(), 7000), ("b2".into(), 1200)],
        ]
    }

    #[test]
    fn the_same_seed_draws_the_same_mix_and_every_path_appears() {
        let a = draw(7, 40, 2, &menus());
        let b = draw(7, 40, 2, &menus());
        assert_eq!(a.len(), 40);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (
                    x.path,
                    x.customer,
                    x.shop,
                    &x.items,
                    x.total,
                    x.place_repeat
                ),
                (
                    y.path,
                    y.customer,
                    y.shop,
                    &y.items,
                    y.total,
                    y.place_repeat
                )
            );
        }
        for (p, _) in Path::MIX {
            assert!(a.iter().any(|o| o.path == p), "{p:?} missing");
        }
        let c = draw(8, 40, 2, &menus());
        assert!(
            a.iter()
                .zip(&c)
                .any(|(x, y)| x.path != y.path || x.items != y.items)
        );
    }

    #[test]
    fn totals_are_the_menu_prices_times_quantities() {
        let m = menus();
        for o in draw(3, 50, 2, &m) {
            let sum: i64 = o
                .items
                .iter()
                .map(|(id, q)| m[o.shop].iter().find(|(i, _)| i == id).unwrap().1 * i64::from(*q))
                .sum();
            assert_eq!(sum, o.total);
            let mut ids: Vec<_> = o.items.iter().map(|(i, _)| i).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), o.items.len());
        }
    }
}
