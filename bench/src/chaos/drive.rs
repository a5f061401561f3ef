//! Drives each planned order through the HTTP API as its three roles would,
//! including the conflicting and repeated calls of its path, and books every
//! answer for the checks.

use crate::client::{Client, Reply};
use crate::plan::{OrderPlan, Path, Repeat};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const FINAL: [&str; 3] = ["DELIVERED", "REJECTED", "CANCELLED"];

pub fn is_final(status: &str) -> bool {
    FINAL.contains(&status)
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub id: String,
    pub token: String,
}

pub struct Users {
    pub customers: Vec<User>,
    /// Owner `i` owns `shops[i]`.
    pub owners: Vec<User>,
    pub shops: Vec<String>,
    pub riders: Vec<User>,
}

impl Users {
    pub fn rider_index(&self, id: &str) -> Option<usize> {
        self.riders.iter().position(|r| r.id == id)
    }
}

/// Which call an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cancel,
    Accept,
    Reject,
    Ready,
    RiderAccept,
    RiderDecline,
    Pickup,
    Complete,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cancel => "cancel",
            Kind::Accept => "accept",
            Kind::Reject => "reject",
            Kind::Ready => "ready",
            Kind::RiderAccept => "offer accept",
            Kind::RiderDecline => "offer decline",
            Kind::Pickup => "pickup",
            Kind::Complete => "complete",
        }
    }
}

/// One action call and its final answer.
#[derive(Debug, Clone)]
pub struct Action {
    pub order_id: String,
    pub kind: Kind,
    /// The rider who sent it (rider actions).
    pub rider: Option<usize>,
    pub reply: Reply,
}

/// Two different actions sent at the same time on one order.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub order_id: String,
    pub kinds: (Kind, Kind),
    /// Indexes into [`Book::actions`].
    pub calls: (usize, usize),
}

/// The same request sent twice with one `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct RepeatPair {
    pub what: String,
    pub mode: Repeat,
    pub first: Reply,
    pub second: Reply,
}

/// An order the API established (201).
#[derive(Debug, Clone)]
pub struct Established {
    pub plan: OrderPlan,
    pub order_id: String,
    /// `total` of the 201 answer.
    pub total: i64,
    pub reject_reason: String,
}

#[derive(Default)]
pub struct Book {
    pub orders: Vec<Established>,
    /// Planned orders that were not established, with why.
    pub not_established: Vec<String>,
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    pub repeats: Vec<RepeatPair>,
    /// Where a lane stopped driving its order early, and why (not a check: the
    /// order's outcome is judged by the checks either way).
    pub notes: Vec<String>,
}

/// Offers seen by the riders' poller, handed to the lane that drives the order.
#[derive(Default)]
pub struct OfferDesk {
    inner: Mutex<DeskInner>,
}

#[derive(Default)]
struct DeskInner {
    waiting: HashMap<String, mpsc::UnboundedSender<usize>>,
    /// (order, rider, expiresAt) already handed over.
    seen: HashSet<(String, usize, String)>,
}

impl OfferDesk {
    fn register(&self, order_id: &str) -> mpsc::UnboundedReceiver<usize> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .lock()
            .unwrap()
            .waiting
            .insert(order_id.to_string(), tx);
        rx
    }

    fn unregister(&self, order_id: &str) {
        self.inner.lock().unwrap().waiting.remove(order_id);
    }

    /// Polls every rider's offers while some lane waits for one, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        client: Arc<Client>,
        users: Arc<Users>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if self.inner.lock().unwrap().waiting.is_empty() {
                continue;
            }
            let looks = users.riders.iter().enumerate().map(|(i, r)| {
                let client = &client;
                async move {
                    (
                        i,
                        client
                            .once("rider_offers", "/api/rider/offers", &r.token)
                            .await,
                    )
                }
            });
            for (rider, a) in futures::future::join_all(looks).await {
                let Some(offers) = a.body.as_array() else {
                    continue;
                };
                let mut d = self.inner.lock().unwrap();
                for o in offers {
                    let (Some(order), expires) =
                        (o["orderId"].as_str(), o["expiresAt"].to_string())
                    else {
                        continue;
                    };
                    let Some(tx) = d.waiting.get(order).cloned() else {
                        continue;
                    };
                    if d.seen.insert((order.to_string(), rider, expires)) {
                        let _ = tx.send(rider);
                    }
                }
            }
        }
    }
}

/// Gates the probe: its orders are accepted together (so all are dispatched at
/// once), and each holds its first offer until every probe order has one (or a
/// few seconds pass), so every free rider is offered one at the same time.
pub struct ProbeGate {
    pub expected: usize,
    pub arrived: AtomicUsize,
    pub first_offers: AtomicUsize,
    /// Riders offered a probe order.
    pub offered: Mutex<HashSet<usize>>,
    /// The accept barrier gives up after this.
    pub accept_by: Instant,
}

impl ProbeGate {
    pub fn new(expected: usize) -> Self {
        ProbeGate {
            expected,
            arrived: AtomicUsize::new(0),
            first_offers: AtomicUsize::new(0),
            offered: Mutex::new(HashSet::new()),
            accept_by: Instant::now() + Duration::from_secs(90),
        }
    }

    async fn all_arrived(&self, arrived: &std::sync::atomic::AtomicBool) {
        arrived.store(true, Ordering::SeqCst);
        self.arrived.fetch_add(1, Ordering::SeqCst);
        while self.arrived.load(Ordering::SeqCst) < self.expected && Instant::now() < self.accept_by
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub struct World {
    pub client: Arc<Client>,
    pub users: Arc<Users>,
    pub desk: Arc<OfferDesk>,
    pub book: Mutex<Book>,
    pub seed: u64,
    /// Orders whose lane has started (the fault schedule follows it).
    pub started: AtomicUsize,
    /// POST /api/orders calls in flight (a worker kill aims at a charge under way).
    pub placing: AtomicUsize,
    /// How long a lane may drive one order.
    pub order_budget: Duration,
    pub probe: Mutex<Option<Arc<ProbeGate>>>,
}

const ADDRESS: (&str, f64, f64) = ("서울 강남구 테헤란로 1 (chaos)", 37.5012, 127.0396);

impl World {
    /// Drives `plans` on `concurrency` lanes until each is done or out of time.
    pub async fn run_lanes(self: &Arc<Self>, plans: Vec<OrderPlan>, concurrency: usize) {
        let queue = Arc::new(Mutex::new(plans.into_iter()));
        let lanes: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (w, q) = (self.clone(), queue.clone());
                tokio::spawn(async move {
                    loop {
                        let next = q.lock().unwrap().next();
                        let Some(plan) = next else { return };
                        w.started.fetch_add(1, Ordering::SeqCst);
                        w.drive(plan).await;
                    }
                })
            })
            .collect();
        for l in lanes {
            if let Err(e) = l.await {
                self.note(format!("a lane panicked: {e}"));
            }
        }
    }

    fn note(&self, s: String) {
        self.book.lock().unwrap().notes.push(s);
    }

    async fn drive(&self, plan: OrderPlan) {
        let deadline = Instant::now() + self.order_budget;
        let n = plan.n;
        let arrived = std::sync::atomic::AtomicBool::new(false);
        if let Some(order) = self.place(&plan).await {
            let lane = Lane {
                w: self,
                plan: &plan,
                order: &order,
                deadline,
                owner: &self.users.owners[plan.shop],
                customer: &self.users.customers[plan.customer],
                seq: AtomicUsize::new(0),
                arrived: &arrived,
            };
            if let Err(why) = lane.drive().await {
                self.note(format!(
                    "#{n} {} ({}): {why}",
                    order.order_id,
                    plan.path.name()
                ));
            }
        }
        // A probe order that stopped before the accept barrier must not hold the others.
        let gate = self.probe.lock().unwrap().clone();
        if let Some(g) = gate
            && plan.path == Path::Probe
            && !arrived.load(Ordering::SeqCst)
        {
            g.arrived.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// POST /api/orders with the order's key (twice when the plan repeats it).
    async fn place(&self, plan: &OrderPlan) -> Option<Established> {
        let body = json!({
            "shopId": self.users.shops[plan.shop],
            "items": plan.items.iter().map(|(id, q)| json!({"menuId": id, "quantity": q})).collect::<Vec<_>>(),
            "address": {"text": ADDRESS.0, "lat": ADDRESS.1, "lon": ADDRESS.2},
            "phone": "010-1234-5678",
            "paymentToken": "tok_ok",
        });
        let key = format!("chaos-{}-{}-place", self.seed, plan.n);
        let token = &self.users.customers[plan.customer].token;
        let send = || async {
            self.placing.fetch_add(1, Ordering::SeqCst);
            let r = self
                .client
                .post("place", "/api/orders", token, Some(&body), Some(&key))
                .await;
            self.placing.fetch_sub(1, Ordering::SeqCst);
            r
        };
        let first = match plan.place_repeat {
            None => send().await,
            Some(mode) => {
                let (a, b) = match mode {
                    Repeat::After => {
                        let a = send().await;
                        (a, send().await)
                    }
                    Repeat::Together => tokio::join!(send(), send()),
                };
                self.book.lock().unwrap().repeats.push(RepeatPair {
                    what: format!("#{} POST /api/orders", plan.n),
                    mode,
                    first: a.clone(),
                    second: b.clone(),
                });
                // Either answer establishes the order; the repeat check compares them.
                if a.status == 201 { a } else { b }
            }
        };
        let id = first.body["orderId"].as_str();
        match (first.status, id, first.body["total"].as_i64()) {
            (201, Some(id), Some(total)) => {
                let e = Established {
                    plan: plan.clone(),
                    order_id: id.to_string(),
                    total,
                    reject_reason: format!("chaos #{}: sold out", plan.n),
                };
                self.book.lock().unwrap().orders.push(e.clone());
                Some(e)
            }
            _ => {
                self.book.lock().unwrap().not_established.push(format!(
                    "#{} ({}): {} {}",
                    plan.n,
                    plan.path.name(),
                    first.status,
                    first.body
                ));
                None
            }
        }
    }
}

struct Lane<'a> {
    w: &'a World,
    plan: &'a OrderPlan,
    order: &'a Established,
    deadline: Instant,
    owner: &'a User,
    customer: &'a User,
    seq: AtomicUsize,
    arrived: &'a std::sync::atomic::AtomicBool,
}

/// Who sends an action, and where.
struct Call {
    kind: Kind,
    path: String,
    token: String,
    body: Option<Value>,
    rider: Option<usize>,
}

impl Lane<'_> {
    fn id(&self) -> &str {
        &self.order.order_id
    }

    async fn drive(&self) -> Result<(), String> {
        let p = self.plan.path;
        if p == Path::ShopTimeout {
            return Ok(());
        }
        if !self.shop_sees_it().await? {
            return Err("the order left PAID before the owner saw it".into());
        }
        match p {
            Path::CustomerCancel => {
                self.single(self.cancel()).await;
                return Ok(());
            }
            Path::OwnerReject => {
                self.single(self.reject()).await;
                return Ok(());
            }
            Path::CancelVsAccept => {
                let (_, accept) = self.conflict(self.cancel(), self.accept()).await;
                if !accept.ok() {
                    return Ok(());
                }
            }
            Path::RejectVsAccept => {
                let (_, accept) = self.conflict(self.reject(), self.accept()).await;
                if !accept.ok() {
                    return Ok(());
                }
            }
            _ => {
                if p == Path::Probe {
                    let gate = self.w.probe.lock().unwrap().clone();
                    if let Some(g) = gate {
                        g.all_arrived(self.arrived).await;
                    }
                }
                let a = self.single(self.accept()).await;
                if !a.ok() {
                    return Err(format!("accept answered {} {}", a.status, a.body));
                }
            }
        }
        // Accepted: the food is marked ready (cookMinutes is at least a minute),
        // before or after a rider is assigned, and a rider is sought.
        if self.plan.ready_early {
            self.single(self.ready()).await;
        }
        let Some(rider) = self.ride().await? else {
            return Ok(());
        };
        if !self.plan.ready_early {
            self.single(self.ready()).await;
        }
        self.wait_status(&["DELIVERY_STARTED"], Duration::from_secs(60))
            .await?;
        let twice = p == Path::DoublePickupComplete;
        for kind in [Kind::Pickup, Kind::Complete] {
            let call = || self.rider_call(kind, rider);
            let ok = if twice {
                let (a, b) = self.conflict(call(), call()).await;
                a.ok() || b.ok()
            } else {
                self.single(call()).await.ok()
            };
            if !ok {
                return Err(format!(
                    "{} by {} was not accepted",
                    kind.name(),
                    self.rider_name(rider)
                ));
            }
        }
        Ok(())
    }

    fn rider_name(&self, r: usize) -> &str {
        &self.w.users.riders[r].name
    }

    fn key(&self, kind: Kind) -> String {
        let k = self.seq.fetch_add(1, Ordering::Relaxed);
        format!(
            "chaos-{}-{}-{}-{k}",
            self.w.seed,
            self.plan.n,
            kind.name().replace(' ', "-")
        )
    }

    fn cancel(&self) -> Call {
        Call {
            kind: Kind::Cancel,
            path: format!("/api/orders/{}/cancel", self.id()),
            token: self.customer.token.clone(),
            body: None,
            rider: None,
        }
    }

    fn accept(&self) -> Call {
        Call {
            kind: Kind::Accept,
            path: format!("/api/shop/orders/{}/accept", self.id()),
            token: self.owner.token.clone(),
            body: Some(json!({"cookMinutes": self.plan.cook_minutes})),
            rider: None,
        }
    }

    fn reject(&self) -> Call {
        Call {
            kind: Kind::Reject,
            path: format!("/api/shop/orders/{}/reject", self.id()),
            token: self.owner.token.clone(),
            body: Some(json!({"reason": self.order.reject_reason})),
            rider: None,
        }
    }

    fn ready(&self) -> Call {
        Call {
            kind: Kind::Ready,
            path: format!("/api/shop/orders/{}/ready", self.id()),
            token: self.owner.token.clone(),
            body: None,
            rider: None,
        }
    }

    fn rider_call(&self, kind: Kind, rider: usize) -> Call {
        let path = match kind {
            Kind::RiderAccept => format!("/api/rider/offers/{}/accept", self.id()),
            Kind::RiderDecline => format!("/api/rider/offers/{}/decline", self.id()),
            Kind::Pickup => format!("/api/rider/deliveries/{}/pickup", self.id()),
            _ => format!("/api/rider/deliveries/{}/complete", self.id()),
        };
        Call {
            kind,
            path,
            token: self.w.users.riders[rider].token.clone(),
            body: None,
            rider: Some(rider),
        }
    }

    /// Sends one action with a fresh key, and books it.
    async fn send(&self, c: &Call, key: &str) -> (usize, Reply) {
        let reply = self
            .w
            .client
            .post(c.kind.name(), &c.path, &c.token, c.body.as_ref(), Some(key))
            .await;
        let mut b = self.w.book.lock().unwrap();
        b.actions.push(Action {
            order_id: self.id().to_string(),
            kind: c.kind,
            rider: c.rider,
            reply: reply.clone(),
        });
        (b.actions.len() - 1, reply)
    }

    /// One action; repeated with the same key when the plan says so. Returns the first answer.
    async fn single(&self, c: Call) -> Reply {
        let key = self.key(c.kind);
        match self.plan.action_repeat {
            None => self.send(&c, &key).await.1,
            Some(mode) => {
                let ((_, a), (_, b)) = match mode {
                    Repeat::After => {
                        let a = self.send(&c, &key).await;
                        (a, self.send(&c, &key).await)
                    }
                    Repeat::Together => tokio::join!(self.send(&c, &key), self.send(&c, &key)),
                };
                self.w.book.lock().unwrap().repeats.push(RepeatPair {
                    what: format!("#{} {} {}", self.plan.n, c.kind.name(), self.id()),
                    mode,
                    first: a.clone(),
                    second: b,
                });
                a
            }
        }
    }

    /// Two different actions at the same time, each with its own key.
    async fn conflict(&self, a: Call, b: Call) -> (Reply, Reply) {
        let (ka, kb) = (self.key(a.kind), self.key(b.kind));
        let ((ia, ra), (ib, rb)) = tokio::join!(self.send(&a, &ka), self.send(&b, &kb));
        self.w.book.lock().unwrap().conflicts.push(Conflict {
            order_id: self.id().to_string(),
            kinds: (a.kind, b.kind),
            calls: (ia, ib),
        });
        (ra, rb)
    }

    /// The customer's view of the order (its status), or None if unreadable.
    async fn status(&self) -> Option<String> {
        let r = self
            .w
            .client
            .get(
                "order",
                &format!("/api/orders/{}", self.id()),
                &self.customer.token,
            )
            .await;
        r.body["status"].as_str().map(str::to_string)
    }

    async fn wait_status(&self, wanted: &[&str], within: Duration) -> Result<String, String> {
        let until = (Instant::now() + within).min(self.deadline);
        loop {
            let s = self.status().await.unwrap_or_default();
            if wanted.contains(&s.as_str()) {
                return Ok(s);
            }
            if is_final(&s) {
                return Err(format!("ended {s} while waiting for {wanted:?}"));
            }
            if Instant::now() > until {
                return Err(format!(
                    "still {s} after {within:?}, waiting for {wanted:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the owner's list shows the order PAID (the shop holds it).
    /// False when the order left PAID first (e.g. SHOP_TIMEOUT during an outage).
    async fn shop_sees_it(&self) -> Result<bool, String> {
        let path = "/api/shop/orders?status=PAID&limit=200";
        for round in 0u32.. {
            if Instant::now() > self.deadline {
                return Err("the owner never saw the order".into());
            }
            let r = self
                .w
                .client
                .get("shop_orders", path, &self.owner.token)
                .await;
            let seen = r
                .body
                .as_array()
                .is_some_and(|l| l.iter().any(|o| o["orderId"].as_str() == Some(self.id())));
            if seen {
                return Ok(true);
            }
            if round % 4 == 3 && self.status().await.is_some_and(|s| s != "PAID") {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unreachable!()
    }

    /// Answers the order's offers as the path says until a rider is assigned
    /// (Some) or the order ends without one (None).
    async fn ride(&self) -> Result<Option<usize>, String> {
        let mut offers = self.w.desk.register(self.id());
        let r = self.ride_with(&mut offers).await;
        self.w.desk.unregister(self.id());
        r
    }

    async fn ride_with(
        &self,
        offers: &mut mpsc::UnboundedReceiver<usize>,
    ) -> Result<Option<usize>, String> {
        let p = self.plan.path;
        let mut declined_once = false;
        let mut clashed = false;
        let mut held = false;
        loop {
            if Instant::now() > self.deadline {
                return Err("no rider assigned before the lane's deadline".into());
            }
            let offer = tokio::select! {
                o = offers.recv() => o,
                _ = tokio::time::sleep(Duration::from_secs(2)) => None,
            };
            let Some(rider) = offer else {
                // No offer for a while: has the order ended (NO_RIDER) meanwhile?
                if let Some(s) = self.status().await
                    && is_final(&s)
                {
                    return Ok(None);
                }
                continue;
            };
            if p == Path::Probe {
                self.probe_hold(rider, !held).await;
                held = true;
            }
            match p {
                Path::NoRider => {
                    self.single(self.rider_call(Kind::RiderDecline, rider))
                        .await;
                }
                Path::RiderDecline if !declined_once => {
                    declined_once = true;
                    self.single(self.rider_call(Kind::RiderDecline, rider))
                        .await;
                }
                Path::RiderAcceptVsDecline if !clashed => {
                    clashed = true;
                    let (a, _) = self
                        .conflict(
                            self.rider_call(Kind::RiderAccept, rider),
                            self.rider_call(Kind::RiderDecline, rider),
                        )
                        .await;
                    if a.ok() {
                        return Ok(Some(rider));
                    }
                }
                _ => {
                    if self
                        .single(self.rider_call(Kind::RiderAccept, rider))
                        .await
                        .ok()
                    {
                        return Ok(Some(rider));
                    }
                }
            }
        }
    }

    /// Books a probe offer; the order's first one waits (under the offer
    /// timeout) until every probe order has one.
    async fn probe_hold(&self, rider: usize, first: bool) {
        let Some(gate) = self.w.probe.lock().unwrap().clone() else {
            return;
        };
        gate.offered.lock().unwrap().insert(rider);
        if !first {
            return;
        }
        gate.first_offers.fetch_add(1, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_millis(3500);
        while gate.first_offers.load(Ordering::SeqCst) < gate.expected && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keeps every rider reported available at their place (riders silent too long get no offers).
pub async fn heartbeat(
    client: Arc<Client>,
    users: Arc<Users>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        report_riders(&client, &users).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Riders in a line north of the shops, ~300 m apart (as the demo seeds them), available.
pub async fn report_riders(client: &Client, users: &Users) {
    for (i, r) in users.riders.iter().enumerate() {
        let body =
            json!({"lat": 37.4979 + 0.0027 * (i + 1) as f64, "lon": 127.0276, "available": true});
        client
            .call(
                "rider_location",
                reqwest::Method::PUT,
                "/api/rider/location",
                Some(&r.token),
                Some(&body),
                None,
            )
            .await;
    }
}
