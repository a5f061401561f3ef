//! Full order lifecycles through the HTTP API only, as the three roles would
//! drive them: the customer places, the owner accepts and marks the food
//! ready, a rider takes the offer, picks up and completes.

use crate::client::{Client, Reply};
use crate::drive::{self, Kind};
use crate::http::Api;
use crate::plan::{OrderPlan, Path};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub struct Settings {
    pub orders: usize,
    pub concurrency: usize,
    /// How often the riders next in line look at their offers.
    pub offer_poll: Duration,
    /// An order not delivered within this is given up on (and counted lost).
    pub order_timeout: Duration,
    /// No new order starts after this; the phase always ends.
    pub phase_deadline: Duration,
    /// Orders started so far (the scaled topology's kill waits on it).
    pub started: Arc<AtomicUsize>,
    /// The scaled topology: see [`Careful`].
    pub careful: Option<Arc<Careful>>,
}

/// How the scaled topology calls, as a client behind a load balancer must:
/// every place and action carries an `Idempotency-Key` and goes through the
/// client that sends a call again, with the same key, when it was refused
/// (503, 429) or never answered (its API process died): the repeat joins the
/// first. Every order and action is booked for the chaos run's checks.
/// Order `n` is placed through API `n % APIs` first, so orders alternate
/// between the APIs; the calls after it go round robin.
pub struct Careful {
    pub client: Client,
    /// One client per API, sending to it first.
    pub placing: Vec<Client>,
    pub book: Mutex<drive::Book>,
    /// The total of each customer's basket, from the shops' menus.
    pub totals: [i64; 2],
    /// Keys of this run differ from an earlier run's.
    pub tag: String,
}

impl Careful {
    pub fn new(api: &Api, totals: [i64; 2], tag: &str) -> Self {
        // How long one call may keep being sent again (the chaos run's budget).
        let budget = Duration::from_secs(150);
        Careful {
            client: Client::new(api.clone(), budget),
            placing: (0..api.bases().len())
                .map(|i| Client::new(api.via(i), budget))
                .collect(),
            book: Mutex::new(drive::Book::default()),
            totals,
            tag: tag.to_string(),
        }
    }

    /// What every call of the clients came to, so far.
    pub fn calls(&self) -> crate::client::CallBook {
        let mut all = self.client.take_book();
        for c in &self.placing {
            let b = c.take_book();
            all.calls += b.calls;
            all.retried += b.retried;
            all.unanswered.extend(b.unanswered);
            all.server_errors.extend(b.server_errors);
        }
        all
    }
}

/// Logged-in demo users.
pub struct Users {
    pub customers: Vec<String>,
    pub owners: Vec<String>,
    pub riders: Vec<String>,
    /// Each login's name and answer (id, token, the owner's shopId), in the
    /// order customers, owners, riders.
    pub logins: Vec<(String, Value)>,
}

impl Users {
    /// The same users as the chaos run's checks know them.
    pub fn for_checks(&self) -> drive::Users {
        let user = |(name, a): &(String, Value)| drive::User {
            name: name.clone(),
            id: a["id"].as_str().unwrap_or(name).to_string(),
            token: a["token"].as_str().unwrap_or("").to_string(),
        };
        let (c, o) = (self.customers.len(), self.owners.len());
        drive::Users {
            customers: self.logins[..c].iter().map(user).collect(),
            owners: self.logins[c..c + o].iter().map(user).collect(),
            shops: self.logins[c..c + o]
                .iter()
                .enumerate()
                .map(|(i, (_, a))| {
                    a["shopId"]
                        .as_str()
                        .map_or_else(|| format!("shop{}", i + 1), str::to_string)
                })
                .collect(),
            riders: self.logins[c + o..].iter().map(user).collect(),
        }
    }
}

/// One order the run placed (or tried to).
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: String,
    pub customer: usize,
    pub total: i64,
}

pub struct Outcome {
    pub placed: Vec<Placed>,
    /// Orders that did not reach DELIVERED through the API, with why (place failures included).
    pub failures: Vec<String>,
    /// place → DELIVERED of every delivered order, in milliseconds.
    pub place_to_delivered_ms: Vec<f64>,
    pub delivered: usize,
    pub elapsed: Duration,
    /// Owner accepts answered 404 because the shop's read model had not caught up yet.
    pub accept_retries: u64,
    /// Offers that were gone by the time the rider accepted.
    pub offer_retries: u64,
}

pub async fn login_all(api: &Api, riders: usize) -> anyhow::Result<Users> {
    let names: Vec<String> = ["customer1", "customer2", "owner1", "owner2"]
        .into_iter()
        .map(str::to_string)
        .chain((1..=riders).map(|i| format!("rider{i}")))
        .collect();
    // A login hashes a password on purpose slowly: a few at a time is enough.
    let answers: Vec<anyhow::Result<Value>> =
        futures::StreamExt::collect(futures::StreamExt::buffered(
            futures::stream::iter(names.iter().map(|n| api.login_answer(n))),
            4,
        ))
        .await;
    let answers = answers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let mut tokens = names
        .iter()
        .zip(&answers)
        .map(|(n, a)| {
            a["token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("login {n}: no token in {a}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let riders = tokens.split_off(4);
    let owners = tokens.split_off(2);
    Ok(Users {
        customers: tokens,
        owners,
        riders,
        logins: names.into_iter().zip(answers).collect(),
    })
}

/// Lines the riders up south of both shops, one every ~110 m, all available.
/// Distance to either shop then grows with the rider's number, so the dispatcher
/// offers each order to the lowest-numbered free rider; the driver watches those.
pub async fn place_riders(api: &Api, users: &Users) -> anyhow::Result<()> {
    for (i, token) in users.riders.iter().enumerate() {
        let body = json!({"lat": 37.49 - 0.001 * i as f64, "lon": 127.0276, "available": true});
        let a = api
            .call(
                "rider_location",
                reqwest::Method::PUT,
                "/api/rider/location",
                Some(token),
                Some(&body),
            )
            .await;
        if !a.ok() {
            anyhow::bail!("rider{} location: {} {}", i + 1, a.status, a.body);
        }
    }
    Ok(())
}

/// Riders free to take an offer, and orders waiting for one.
#[derive(Default)]
struct Dispatch {
    idle: BTreeSet<usize>,
    waiting: HashMap<String, oneshot::Sender<usize>>,
    /// Accepted orders whose offer has not been found yet: each holds (or is
    /// about to hold) an offer on one of the first free riders.
    seeking: usize,
}

pub async fn run(api: &Api, users: Arc<Users>, s: &Settings) -> Outcome {
    let dispatch = Arc::new(Mutex::new(Dispatch {
        idle: (0..users.riders.len()).collect(),
        waiting: HashMap::new(),
        seeking: 0,
    }));
    let next = s.started.clone();
    let results = Arc::new(Mutex::new(Lanes::default()));
    let started = Instant::now();
    let phase_end = started + s.phase_deadline;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_offers(
        api.clone(),
        users.clone(),
        dispatch.clone(),
        s.offer_poll,
        stop_rx,
    ));
    let lanes: Vec<_> = (0..s.concurrency)
        .map(|_| {
            let (api, users, dispatch, next, results, careful) = (
                api.clone(),
                users.clone(),
                dispatch.clone(),
                next.clone(),
                results.clone(),
                s.careful.clone(),
            );
            let (orders, timeout) = (s.orders, s.order_timeout);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= orders || Instant::now() >= phase_end {
                        return;
                    }
                    let mut lane = Lane {
                        api: &api,
                        users: &users,
                        dispatch: &dispatch,
                        deadline: Instant::now() + timeout,
                        accept_retries: 0,
                        offer_retries: 0,
                        careful: careful.as_deref(),
                        n,
                        calls: 0,
                    };
                    let r = lane.order(n).await;
                    let mut res = results.lock().unwrap();
                    res.accept_retries += lane.accept_retries;
                    res.offer_retries += lane.offer_retries;
                    match r {
                        Ok((placed, took)) => {
                            res.placed.push(placed);
                            res.took.push(took.as_secs_f64() * 1000.0);
                        }
                        Err((placed, why)) => {
                            res.placed.extend(placed);
                            res.failures.push(format!("order #{n}: {why}"));
                        }
                    }
                }
            })
        })
        .collect();
    for l in lanes {
        let _ = l.await;
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    let res = std::mem::take(&mut *results.lock().unwrap());
    let mut failures = res.failures;
    let skipped = s.orders.saturating_sub(res.placed.len() + failures.len());
    if skipped > 0 {
        failures.push(format!(
            "{skipped} orders never started: the phase deadline of {:?} passed",
            s.phase_deadline
        ));
    }
    Outcome {
        delivered: res.took.len(),
        placed: res.placed,
        failures,
        place_to_delivered_ms: res.took,
        elapsed,
        accept_retries: res.accept_retries,
        offer_retries: res.offer_retries,
    }
}

#[derive(Default)]
struct Lanes {
    placed: Vec<Placed>,
    took: Vec<f64>,
    failures: Vec<String>,
    accept_retries: u64,
    offer_retries: u64,
}

struct Lane<'a> {
    api: &'a Api,
    users: &'a Users,
    dispatch: &'a Mutex<Dispatch>,
    deadline: Instant,
    accept_retries: u64,
    offer_retries: u64,
    careful: Option<&'a Careful>,
    /// The order's number in the run.
    n: usize,
    /// Calls made for this order (each careful one gets a key of its own).
    calls: usize,
}

type LaneError = (Option<Placed>, String);

impl Lane<'_> {
    async fn order(&mut self, n: usize) -> Result<(Placed, Duration), LaneError> {
        // Customer k orders from shop k, owned by owner k.
        let who = n % 2;
        let started = Instant::now();
        let placed = match self.careful {
            None => place(self.api, self.users, "place", who).await,
            Some(c) => place_carefully(c, self.users, n, who).await,
        }
        .map_err(|why| (None, format!("place: {why}")))?;
        let id = placed.order_id.clone();
        match self.fulfil(who, &id).await {
            Ok(()) => Ok((placed, started.elapsed())),
            Err(why) => Err((Some(placed), format!("order {id}: {why}"))),
        }
    }

    /// POSTs one action. Careful: with a key of its own, through the retrying
    /// client; booked as `book` (with the rider acting) unless that is None.
    async fn post(
        &mut self,
        kind: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
        book: Option<(Kind, Option<usize>)>,
        id: &str,
    ) -> Reply {
        let Some(c) = self.careful else {
            let a = self.api.post(kind, path, token, body).await;
            return Reply {
                status: a.status,
                body: a.body,
                hung: a.timed_out,
                gave_up: false,
            };
        };
        self.calls += 1;
        let key = format!("bench-{}-{}-{kind}-{}", c.tag, self.n, self.calls);
        let reply = c.client.post(kind, path, token, body, Some(&key)).await;
        if let Some((kind, rider)) = book {
            c.book.lock().unwrap().actions.push(drive::Action {
                order_id: id.to_string(),
                kind,
                rider,
                reply: reply.clone(),
            });
        }
        reply
    }

    async fn fulfil(&mut self, who: usize, id: &str) -> Result<(), String> {
        let owner = &self.users.owners[who];
        let accept = json!({"cookMinutes": 10});
        let path = format!("/api/shop/orders/{id}/accept");
        loop {
            let a = self
                .post("owner_accept", &path, owner, Some(&accept), None, id)
                .await;
            match a.status {
                // The owner's read model gets the order a moment after the customer's.
                404 => {
                    self.accept_retries += 1;
                    self.pause(Duration::from_millis(20), "the shop to see the order")
                        .await?;
                }
                s => {
                    self.book(id, Kind::Accept, None, &a);
                    if s == 200 {
                        break;
                    }
                    return Err(format!("accept: {s} {}", a.body));
                }
            }
        }
        self.dispatch.lock().unwrap().seeking += 1;
        let rider = self.ready_and_ride(owner, id).await?;
        let token = &self.users.riders[rider];
        let result = async {
            let a = self
                .post(
                    "rider_pickup",
                    &format!("/api/rider/deliveries/{id}/pickup"),
                    token,
                    None,
                    Some((Kind::Pickup, Some(rider))),
                    id,
                )
                .await;
            if !a.ok() {
                return Err(format!("pickup: {} {}", a.status, a.body));
            }
            let a = self
                .post(
                    "rider_complete",
                    &format!("/api/rider/deliveries/{id}/complete"),
                    token,
                    None,
                    Some((Kind::Complete, Some(rider))),
                    id,
                )
                .await;
            if !a.ok() || a.body["status"] != "DELIVERED" {
                return Err(format!("complete: {} {}", a.status, a.body));
            }
            Ok(())
        }
        .await;
        // A rider whose delivery failed half-way may still be bound to it: retire them.
        if result.is_ok() {
            self.dispatch.lock().unwrap().idle.insert(rider);
        }
        result
    }

    /// Books an answer the lane got outside [`Lane::post`]'s own booking.
    fn book(&self, id: &str, kind: Kind, rider: Option<usize>, reply: &Reply) {
        if let Some(c) = self.careful {
            c.book.lock().unwrap().actions.push(drive::Action {
                order_id: id.to_string(),
                kind,
                rider,
                reply: reply.clone(),
            });
        }
    }

    /// The owner marks the food ready and a rider takes the offer; returns the rider.
    async fn ready_and_ride(&mut self, owner: &str, id: &str) -> Result<usize, String> {
        let a = self
            .post(
                "owner_ready",
                &format!("/api/shop/orders/{id}/ready"),
                owner,
                None,
                Some((Kind::Ready, None)),
                id,
            )
            .await;
        if !a.ok() {
            self.dispatch.lock().unwrap().seeking -= 1;
            return Err(format!("ready: {} {}", a.status, a.body));
        }

        loop {
            let rider = self.await_offer(id).await?;
            let token = &self.users.riders[rider];
            let a = self
                .post(
                    "rider_accept",
                    &format!("/api/rider/offers/{id}/accept"),
                    token,
                    None,
                    Some((Kind::RiderAccept, Some(rider))),
                    id,
                )
                .await;
            if a.ok() {
                return Ok(rider);
            }
            // Expired or taken between the look and the accept: the order is offered again.
            let mut d = self.dispatch.lock().unwrap();
            d.idle.insert(rider);
            if a.status != 409 {
                return Err(format!("rider accept: {} {}", a.status, a.body));
            }
            d.seeking += 1;
            drop(d);
            self.offer_retries += 1;
        }
    }

    /// Waits until the offer watcher finds which rider was offered this order.
    async fn await_offer(&self, id: &str) -> Result<usize, String> {
        let (tx, rx) = oneshot::channel();
        self.dispatch
            .lock()
            .unwrap()
            .waiting
            .insert(id.to_string(), tx);
        match tokio::time::timeout_at(self.deadline.into(), rx).await {
            Ok(Ok(rider)) => Ok(rider),
            _ => {
                let mut d = self.dispatch.lock().unwrap();
                // Whoever takes the order off the waiting list settles `seeking`.
                if d.waiting.remove(id).is_some() {
                    d.seeking -= 1;
                }
                Err("no rider offer seen before the order's deadline".into())
            }
        }
    }

    async fn pause(&self, d: Duration, what: &str) -> Result<(), String> {
        if Instant::now() + d > self.deadline {
            return Err(format!("gave up waiting for {what}"));
        }
        tokio::time::sleep(d).await;
        Ok(())
    }
}

/// What customer `who` orders from shop `who`: (menu id, quantity).
fn basket(who: usize) -> [(&'static str, u32); 2] {
    if who == 0 {
        [("shop1-fried", 2), ("shop1-cola", 1)]
    } else {
        [("shop2-tteokbokki", 2), ("shop2-twigim", 1)]
    }
}

fn place_body(who: usize) -> Value {
    let items: Vec<Value> = basket(who)
        .iter()
        .map(|(id, q)| json!({"menuId": id, "quantity": q}))
        .collect();
    json!({
        "shopId": format!("shop{}", who + 1),
        "items": items,
        "address": {"text": "서울 강남구 테헤란로 1", "lat": 37.5012, "lon": 127.0396},
        "phone": "010-1234-5678",
        "paymentToken": "tok_ok",
    })
}

/// Each customer's basket total by the shops' menus (`GET /api/shops/{id}/menu`).
pub async fn basket_totals(api: &Api) -> anyhow::Result<[i64; 2]> {
    let mut totals = [0; 2];
    for (who, total) in totals.iter_mut().enumerate() {
        let url = api.url(&format!("/api/shops/shop{}/menu", who + 1));
        let (status, menu) = api.fetch_json(&url, None).await?;
        anyhow::ensure!(status == 200, "GET {url} answered {status}");
        for (id, q) in basket(who) {
            let price = menu
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["id"] == id)
                .and_then(|m| m["price"].as_i64())
                .ok_or_else(|| anyhow::anyhow!("{id} is not on the menu {menu}"))?;
            *total += price * i64::from(q);
        }
    }
    Ok(totals)
}

/// Customer `who` orders two items from shop `who` and pays with the approving token.
pub async fn place(api: &Api, users: &Users, kind: &str, who: usize) -> Result<Placed, String> {
    let a = api
        .post(
            kind,
            "/api/orders",
            &users.customers[who],
            Some(&place_body(who)),
        )
        .await;
    placed(who, a.status, &a.body)
}

fn placed(who: usize, status: u16, body: &Value) -> Result<Placed, String> {
    if status != 201 {
        return Err(format!("{status} {body}"));
    }
    match (body["orderId"].as_str(), body["total"].as_i64()) {
        (Some(id), Some(total)) => Ok(Placed {
            order_id: id.to_string(),
            customer: who,
            total,
        }),
        _ => Err(format!("201 without orderId/total: {body}")),
    }
}

/// [`place`] with the order's own `Idempotency-Key`, through the retrying
/// client; books the order (or why it was not established) for the checks.
async fn place_carefully(
    c: &Careful,
    users: &Users,
    n: usize,
    who: usize,
) -> Result<Placed, String> {
    let key = format!("bench-{}-{n}-place", c.tag);
    let r = c.placing[n % c.placing.len()]
        .post(
            "place",
            "/api/orders",
            &users.customers[who],
            Some(&place_body(who)),
            Some(&key),
        )
        .await;
    let p = placed(who, r.status, &r.body);
    let mut book = c.book.lock().unwrap();
    match &p {
        Ok(p) => book.orders.push(drive::Established {
            plan: OrderPlan {
                n,
                path: Path::Delivered,
                customer: who,
                shop: who,
                items: basket(who)
                    .iter()
                    .map(|(id, q)| (id.to_string(), *q))
                    .collect(),
                total: c.totals[who],
                cook_minutes: 10,
                ready_early: true,
                place_repeat: None,
                action_repeat: None,
            },
            order_id: p.order_id.clone(),
            total: p.total,
            reject_reason: String::new(),
        }),
        Err(why) => book
            .not_established
            .push(format!("#{n} ({}): {why}", Path::Delivered.name())),
    }
    p
}

/// Looks at the offers of the free riders next in line while orders wait for a
/// rider. The product pushes nothing to riders, so they poll; watching only the
/// riders an offer can go to keeps that polling to a few calls per order. Every
/// 5 s every free rider is looked at, so an offer that went elsewhere is found
/// too, well before it would lapse (RIDER_OFFER_TIMEOUT).
async fn watch_offers(
    api: Api,
    users: Arc<Users>,
    dispatch: Arc<Mutex<Dispatch>>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let sweep_every = (Duration::from_secs(5).as_millis() / every.as_millis().max(1)).max(1);
    let mut tick: u128 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        tick += 1;
        let candidates: Vec<usize> = {
            let d = dispatch.lock().unwrap();
            if d.waiting.is_empty() {
                continue;
            }
            let take = if tick.is_multiple_of(sweep_every) {
                d.idle.len()
            } else {
                d.seeking + 1
            };
            d.idle.iter().copied().take(take).collect()
        };
        let looks = candidates.iter().map(|&r| {
            let api = &api;
            let token = &users.riders[r];
            async move { (r, api.get("rider_offers", "/api/rider/offers", token).await) }
        });
        for (rider, a) in futures::future::join_all(looks).await {
            let Some(offers) = a.body.as_array() else {
                continue;
            };
            let mut d = dispatch.lock().unwrap();
            for offer in offers {
                let Some(order_id) = offer["orderId"].as_str() else {
                    continue;
                };
                if !d.idle.contains(&rider) {
                    break;
                }
                if let Some(tx) = d.waiting.remove(order_id) {
                    d.seeking -= 1;
                    d.idle.remove(&rider);
                    if tx.send(rider).is_err() {
                        d.idle.insert(rider);
                    }
                }
            }
        }
    }
}

/// Checks every placed order against the customer's read model and the payment
/// gateway: DELIVERED, no refund, exactly one charge of the order's total.
pub struct Verdict {
    pub lost: Vec<String>,
    pub double_charges: usize,
    /// Orders that passed every check.
    pub delivered: Vec<String>,
}

pub async fn verify(
    api: &Api,
    users: &Users,
    placed: &[Placed],
    paysim: &str,
) -> anyhow::Result<Verdict> {
    let charges = charges_by_order(api, paysim).await?;
    let reads = placed.iter().map(|p| async move {
        let url = api.url(&format!("/api/orders/{}", p.order_id));
        (
            p,
            api.fetch_json(&url, Some(&users.customers[p.customer]))
                .await,
        )
    });
    let reads: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(reads),
        8,
    ))
    .await;
    let mut lost = Vec::new();
    let mut delivered = Vec::new();
    let mut double_charges = 0;
    for (p, read) in reads {
        let id = &p.order_id;
        let paid: &[Value] = charges.get(id).map_or(&[], Vec::as_slice);
        if paid.len() > 1 {
            double_charges += 1;
        }
        let problem = match read {
            Err(e) => Some(format!("reading it failed: {e}")),
            Ok((s, _)) if s != 200 => Some(format!("GET /api/orders/{id} answered {s}")),
            Ok((_, doc)) if doc["status"] != "DELIVERED" => {
                Some(format!("status {}", doc["status"]))
            }
            Ok((_, doc)) if !doc["refund"].is_null() => Some(format!("refund {}", doc["refund"])),
            Ok(_) if paid.len() != 1 => Some(format!("{} charges", paid.len())),
            Ok(_) if paid[0]["amount"].as_i64() != Some(p.total) => Some(format!(
                "charged {} for a total of {}",
                paid[0]["amount"], p.total
            )),
            Ok(_) if paid[0]["refunded"].as_i64().unwrap_or(0) != 0 => {
                Some(format!("refunded {} at the gateway", paid[0]["refunded"]))
            }
            Ok(_) => None,
        };
        match problem {
            Some(why) => lost.push(format!("order {id}: {why}")),
            None => delivered.push(id.clone()),
        }
    }
    Ok(Verdict {
        lost,
        double_charges,
        delivered,
    })
}

/// Places orders alone (nothing else running) to time POST /api/orders against
/// a bare update-with-start, then cancels them, untimed, so each is refunded.
/// Returns what went wrong, if anything: every probe must be placed, cancelled
/// and refunded in full by exactly one charge.
pub async fn place_probe(
    api: &Api,
    users: &Users,
    count: usize,
    concurrency: usize,
    paysim: &str,
) -> anyhow::Result<(Vec<String>, usize)> {
    use futures::StreamExt;
    let placed: Vec<Result<Placed, String>> =
        futures::stream::iter((0..count).map(|n| place(api, users, "place_alone", n % 2)))
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let mut problems = Vec::new();
    let mut ok = Vec::new();
    for p in placed {
        match p {
            Ok(p) => ok.push(p),
            Err(why) => problems.push(format!("probe place: {why}")),
        }
    }
    let cancels: Vec<(String, crate::http::Answer)> =
        futures::stream::iter(ok.iter().map(|p| async move {
            let path = format!("/api/orders/{}/cancel", p.order_id);
            (
                p.order_id.clone(),
                api.post("cancel", &path, &users.customers[p.customer], None)
                    .await,
            )
        }))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for (id, a) in cancels {
        if !a.ok() || a.body["status"] != "CANCELLED" {
            problems.push(format!("probe {id} cancel: {} {}", a.status, a.body));
        }
    }
    let charges = charges_by_order(api, paysim).await?;
    let mut double_charges = 0;
    for p in &ok {
        let paid: &[Value] = charges.get(&p.order_id).map_or(&[], Vec::as_slice);
        if paid.len() > 1 {
            double_charges += 1;
        }
        let refunded = paid.first().and_then(|c| c["refunded"].as_i64());
        if paid.len() != 1 || refunded != Some(p.total) {
            problems.push(format!(
                "probe {}: {} charges, refunded {:?} of {}",
                p.order_id,
                paid.len(),
                refunded,
                p.total
            ));
        }
    }
    Ok((problems, double_charges))
}

/// The payment gateway's charges, by order.
async fn charges_by_order(api: &Api, paysim: &str) -> anyhow::Result<HashMap<String, Vec<Value>>> {
    let (status, payments) = api
        .fetch_json(
            &format!("{}/v1/payments", paysim.trim_end_matches('/')),
            None,
        )
        .await?;
    if status != 200 {
        anyhow::bail!("GET {paysim}/v1/payments answered {status}");
    }
    let mut charges: HashMap<String, Vec<Value>> = HashMap::new();
    for p in payments.as_array().into_iter().flatten() {
        if let Some(order) = p["orderId"].as_str() {
            charges
                .entry(order.to_string())
                .or_default()
                .push(p.clone());
        }
    }
    Ok(charges)
}
